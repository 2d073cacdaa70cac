// ReadFileToString: whole files of any size, and errors that name the path.
#include "server/common/file_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace adapterd {
namespace {

namespace fs = std::filesystem;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("file_util_test." + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  fs::path dir_;
};

TEST_F(FileUtilTest, ReadsEveryByte) {
  std::string bytes;
  for (int i = 0; i < 3 * 1024 * 1024 + 17; ++i) bytes.push_back(static_cast<char>((i * 131) % 256));
  absl::StatusOr<std::string> got = ReadFileToString(Write("big", bytes));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->size(), bytes.size());
  EXPECT_TRUE(*got == bytes);
  got = ReadFileToString(Write("empty", ""));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->empty());
}

TEST_F(FileUtilTest, ReadsFilesWhoseSizeStatDoesNotReport) {
  // /proc files report size 0 and still have contents.
  absl::StatusOr<std::string> got = ReadFileToString("/proc/self/status");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_NE(got->find("Pid:"), std::string::npos);
}

TEST_F(FileUtilTest, ErrorsNameThePath) {
  const std::string missing = (dir_ / "missing").string();
  absl::StatusOr<std::string> got = ReadFileToString(missing);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(got.status().message().find(missing), std::string::npos) << got.status();
  got = ReadFileToString(dir_.string());  // a directory opens, and reading it fails
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find(dir_.string()), std::string::npos) << got.status();
}

}  // namespace
}  // namespace adapterd
