// AdapterStore: entries written atomically and read back intact, replaced
// and removed; leftovers of interrupted writes removed at Open; corrupt
// entries reported and skipped. And the registry with a store: acknowledged
// loads are recorded, failed and non-persisting ones are not, unloads delete.
#include "adapters/adapter_store.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "adapters/adapter_registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

UploadSource Upload(std::string weights) {
  return UploadSource{{{"adapter_config.json", R"({"peft_type": "LORA"})"},
                       {"adapter_model.safetensors", std::move(weights)}}};
}

// The files of a scanned upload entry, read back from its directory.
std::map<std::string, std::string> FilesOf(const StoredAdapter& a) {
  EXPECT_TRUE(a.upload) << a.id;
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(a.source.dir)) {
    if (e.path().filename() == "manifest.json") continue;
    std::ifstream in(e.path(), std::ios::binary);
    out[e.path().filename().string()] = std::string(std::istreambuf_iterator<char>(in), {});
  }
  return out;
}

void WriteRaw(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

TEST(AdapterStoreTest, PutThenScanReturnsTheSameSources) {
  const std::string dir = testing::MakeTempDir("store") + "/s";
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put("b-upload", Upload("weights-b")).ok());
  ASSERT_TRUE((*store)->Put("a-path", PathSource{"/some/dir"}).ok());
  StoreScan scan = (*store)->Scan();
  EXPECT_THAT(scan.skipped, IsEmpty());
  ASSERT_THAT(scan.adapters, SizeIs(2));
  EXPECT_EQ(scan.adapters[0].id, "a-path");
  EXPECT_EQ(scan.adapters[0].source.dir, "/some/dir");
  EXPECT_FALSE(scan.adapters[0].upload);
  EXPECT_EQ(scan.adapters[1].id, "b-upload");
  EXPECT_EQ(scan.adapters[1].source.dir, (*store)->EntryDir("b-upload"));
  EXPECT_EQ(FilesOf(scan.adapters[1]), Upload("weights-b").files);
  // No temporaries are left behind by a completed write.
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_NE(e.path().filename().string()[0], '.');
}

TEST(AdapterStoreTest, PutReplacesAndRemoveDeletes) {
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Put("x", Upload("v1")).ok());
  ASSERT_TRUE((*store)->Put("x", Upload("version-2")).ok());
  StoreScan scan = (*store)->Scan();
  ASSERT_THAT(scan.adapters, SizeIs(1));
  EXPECT_EQ(FilesOf(scan.adapters[0]).at("adapter_model.safetensors"), "version-2");
  ASSERT_TRUE((*store)->Remove("x").ok());
  EXPECT_TRUE((*store)->Remove("x").ok());  // absent is fine
  EXPECT_THAT((*store)->Scan().adapters, IsEmpty());
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(AdapterStoreTest, OpenRemovesInterruptedWrites) {
  const std::string dir = testing::MakeTempDir("store");
  fs::create_directory(dir + "/.tmp-x-1-1");
  WriteRaw(dir + "/.tmp-x-1-1/adapter_model.safetensors", "half");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(AdapterStoreTest, CorruptEntriesAreSkippedAndNamed) {
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  for (const char* id : {"good", "flipped", "short", "missing", "badjson", "wrongid"}) {
    ASSERT_TRUE((*store)->Put(id, Upload("0123456789")).ok());
  }
  WriteRaw(dir + "/flipped/adapter_model.safetensors", "0123456780");  // same size, other CRC
  WriteRaw(dir + "/short/adapter_model.safetensors", "01234");
  fs::remove(dir + "/missing/adapter_model.safetensors");
  WriteRaw(dir + "/badjson/manifest.json", "{not json");
  fs::rename(dir + "/wrongid", dir + "/renamed");
  fs::create_directory(dir + "/nomanifest");
  WriteRaw(dir + "/stray-file", "x");
  StoreScan scan = (*store)->Scan();
  ASSERT_THAT(scan.adapters, SizeIs(1));
  EXPECT_EQ(scan.adapters[0].id, "good");
  ASSERT_THAT(scan.skipped, SizeIs(7));
  std::string all;
  for (const absl::Status& s : scan.skipped) {
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    absl::StrAppend(&all, s.message(), "\n");
  }
  for (const char* name : {"flipped", "short", "missing", "badjson", "renamed", "nomanifest", "stray-file"}) {
    EXPECT_THAT(all, HasSubstr(name));
  }
  EXPECT_THAT(all, HasSubstr("does not match its size or CRC32C"));
}

TEST(AdapterStoreTest, RejectsUnsafeFileNamesAndUnwritableDirectories) {
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  for (const char* name : {"../escape", "manifest.json", ".hidden", "a/b"}) {
    absl::Status st = (*store)->Put("x", UploadSource{{{name, "data"}}});
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(st.message(), HasSubstr(name));
  }
  EXPECT_TRUE(fs::is_empty(dir));
  WriteRaw(dir + "/file", "x");
  EXPECT_EQ(AdapterStore::Open(dir + "/file").status().code(), absl::StatusCode::kFailedPrecondition);
}

absl::StatusOr<AdapterInfo> LoadAndWait(AdapterRegistry& r, const std::string& id, AdapterSource source,
                                        bool persist = true) {
  auto done = std::make_shared<absl::Notification>();
  auto result = std::make_shared<absl::StatusOr<AdapterInfo>>(absl::UnknownError("not called"));
  absl::Status st = r.StartLoad(
      id, std::move(source), /*replace=*/false,
      [done, result](absl::StatusOr<AdapterInfo> res) {
        *result = std::move(res);
        done->Notify();
      },
      persist);
  if (!st.ok()) return st;
  done->WaitForNotification();
  return *result;
}

TEST(AdapterStoreTest, RegistryRecordsAcknowledgedLoadsOnly) {
  auto base = testing::LoadDemoModel();
  ASSERT_TRUE(base.ok()) << base.status();
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::string qv = testing::QvLora().Write("qv");
  {
    AdapterRegistry reg(base->get(), store->get());
    ASSERT_TRUE(LoadAndWait(reg, "by-path", PathSource{qv}).ok());
    ASSERT_TRUE(LoadAndWait(reg, "by-upload", UploadSource{testing::QvLora(7).Files()}).ok());
    ASSERT_TRUE(LoadAndWait(reg, "transient", PathSource{qv}, /*persist=*/false).ok());
    auto broken = testing::QvLora().Files();
    broken["adapter_model.safetensors"] = "garbage";
    EXPECT_FALSE(LoadAndWait(reg, "broken", UploadSource{broken}).ok());
    ASSERT_TRUE(LoadAndWait(reg, "dropped", PathSource{qv}).ok());
    ASSERT_TRUE(reg.Unload("dropped").ok());
  }
  StoreScan scan = (*store)->Scan();
  EXPECT_THAT(scan.skipped, IsEmpty());
  ASSERT_THAT(scan.adapters, SizeIs(2));
  EXPECT_EQ(scan.adapters[0].id, "by-path");
  EXPECT_EQ(scan.adapters[1].id, "by-upload");
  // What was recorded loads again into a fresh registry.
  AdapterRegistry again(base->get(), store->get());
  for (auto& e : scan.adapters) {
    auto info = LoadAndWait(again, e.id, e.source, /*persist=*/false);
    EXPECT_TRUE(info.ok()) << e.id << ": " << info.status();
  }
}

}  // namespace
}  // namespace adapterd::adapters
