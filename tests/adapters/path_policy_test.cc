#include "adapters/path_policy.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_env.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class PathPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::canonical(testing::MakeTempDir("paths")).string();
    fs::create_directories(dir_ + "/root/a");
    fs::create_directories(dir_ + "/rootling/b");  // shares a prefix with root
    fs::create_directories(dir_ + "/outside");
    std::ofstream(dir_ + "/outside/adapter_config.json") << "{}";
  }
  std::string dir_;
};

TEST_F(PathPolicyTest, AcceptsDirectoriesUnderARoot) {
  auto p = PathPolicy::Create({dir_ + "/root/"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p->Confine(dir_ + "/root/a"), dir_ + "/root/a");
  EXPECT_EQ(*p->Confine(dir_ + "/root/./a/"), dir_ + "/root/a");
  EXPECT_TRUE(p->Confine(dir_ + "/root").ok());
}

TEST_F(PathPolicyTest, RejectsEscapes) {
  auto p = PathPolicy::Create({dir_ + "/root"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->Confine(dir_ + "/root/../outside").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->Confine(dir_ + "/root/a/..").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->Confine(dir_ + "/outside").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->Confine(dir_ + "/rootling/b").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->Confine("root/a").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->Confine(dir_ + "/root/missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(p->Confine(std::string("/tmp\0/x", 7)).status().code(), absl::StatusCode::kInvalidArgument);

  fs::create_directory_symlink(dir_ + "/outside", dir_ + "/root/escape");
  const absl::Status st = p->Confine(dir_ + "/root/escape").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(st.message(), HasSubstr("--adapter_roots"));

  fs::create_directories(dir_ + "/root/c");
  fs::create_symlink(dir_ + "/outside/adapter_config.json", dir_ + "/root/c/adapter_config.json");
  EXPECT_THAT(p->Confine(dir_ + "/root/c").status().message(), HasSubstr("adapter_config.json is a link"));
  // A link that stays inside the roots is fine.
  fs::create_directories(dir_ + "/root/d");
  std::ofstream(dir_ + "/root/a/adapter_config.json") << "{}";
  fs::create_symlink(dir_ + "/root/a/adapter_config.json", dir_ + "/root/d/adapter_config.json");
  EXPECT_TRUE(p->Confine(dir_ + "/root/d").ok());
}

TEST_F(PathPolicyTest, NoRootsMeansNoPathLoads) {
  auto p = PathPolicy::Create({});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->Confine(dir_ + "/root/a").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(PathPolicyTest, RootsMustExist) {
  auto p = PathPolicy::Create({dir_ + "/nope"});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr(dir_ + "/nope"));
}

}  // namespace
}  // namespace adapterd::adapters
