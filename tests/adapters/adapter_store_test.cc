// AdapterStore: entries written atomically and read back intact, replaced
// and removed; leftovers of interrupted writes removed at Open; corrupt
// entries reported and skipped. And the registry with a store: acknowledged
// loads are recorded, failed and non-persisting ones are not, unloads delete.
#include "adapters/adapter_store.h"

#include <filesystem>
#include <functional>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>

#include "absl/crc/crc32c.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "absl/synchronization/notification.h"
#include "adapters/adapter_registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

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
    if (e.path().filename() == "manifest.json" || e.is_directory()) continue;
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
  absl::StatusOr<DiskCopy> b = (*store)->Put("b-upload", Upload("weights-b"));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->dir, dir + "/b-upload/v1");
  EXPECT_NE(b->hold, nullptr);
  absl::StatusOr<DiskCopy> a = (*store)->Put("a-path", PathSource{"/some/dir"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dir, "/some/dir");
  StoreScan scan = (*store)->Scan();
  EXPECT_THAT(scan.skipped, IsEmpty());
  ASSERT_THAT(scan.adapters, SizeIs(2));
  EXPECT_EQ(scan.adapters[0].id, "a-path");
  EXPECT_EQ(scan.adapters[0].source.dir, "/some/dir");
  EXPECT_FALSE(scan.adapters[0].upload);
  EXPECT_EQ(scan.adapters[1].id, "b-upload");
  EXPECT_EQ(scan.adapters[1].source.dir, b->dir);
  EXPECT_EQ(scan.adapters[1].version, 1);
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
  EXPECT_EQ(scan.adapters[0].version, 2);
  // Nothing held the first version, so only the second is left.
  EXPECT_FALSE(fs::exists(dir + "/x/v1"));
  ASSERT_TRUE((*store)->Remove("x").ok());
  EXPECT_TRUE((*store)->Remove("x").ok());  // absent is fine
  EXPECT_THAT((*store)->Scan().adapters, IsEmpty());
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(AdapterStoreTest, AHeldVersionSurvivesItsReplacementUntilLetGo) {
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  absl::StatusOr<DiskCopy> v1 = (*store)->Put("x", Upload("one"));
  ASSERT_TRUE(v1.ok()) << v1.status();
  absl::StatusOr<DiskCopy> v2 = (*store)->Put("x", Upload("two"));
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_NE(v1->dir, v2->dir);
  // v1 is still held, so a reader of the old version still finds its files.
  std::ifstream in(v1->dir + "/adapter_model.safetensors", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "one");
  v1->hold.reset();
  EXPECT_FALSE(fs::exists(v1->dir)) << "the superseded version is deleted when its last hold goes";
  EXPECT_TRUE(fs::exists(v2->dir + "/adapter_model.safetensors"));
}

TEST(AdapterStoreTest, ReadsEntriesOfTheFirstFormat) {
  const std::string dir = testing::MakeTempDir("store");
  fs::create_directories(dir + "/old");
  const std::string data = "weights";
  WriteRaw(dir + "/old/adapter_model.safetensors", data);
  nlohmann::json manifest = {{"format", "adapterd-store/1"}, {"id", "old"}, {"source", "upload"},
                             {"files", {{{"name", "adapter_model.safetensors"}, {"bytes", data.size()},
                                         {"crc32c", static_cast<uint32_t>(absl::ComputeCrc32c(data))}}}}};
  WriteRaw(dir + "/old/manifest.json", manifest.dump());
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  StoreScan scan = (*store)->Scan();
  ASSERT_THAT(scan.adapters, SizeIs(1)) << (scan.skipped.empty() ? "" : scan.skipped[0].ToString());
  EXPECT_EQ(scan.adapters[0].source.dir, dir + "/old");
  // A new version replaces it in the current format.
  ASSERT_TRUE((*store)->Put("old", Upload("new")).ok());
  scan = (*store)->Scan();
  ASSERT_THAT(scan.adapters, SizeIs(1));
  EXPECT_EQ(FilesOf(scan.adapters[0]).at("adapter_model.safetensors"), "new");
  EXPECT_FALSE(fs::exists(dir + "/old/adapter_model.safetensors"));
}

TEST(AdapterStoreTest, OpenRemovesInterruptedWrites) {
  const std::string dir = testing::MakeTempDir("store");
  fs::create_directory(dir + "/.tmp-x-1-1");
  WriteRaw(dir + "/.tmp-x-1-1/adapter_model.safetensors", "half");
  // Inside an entry: a version written but never made current, and a
  // half-written one.
  auto writer = AdapterStore::Open(dir);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Put("y", Upload("current")).ok());
  fs::create_directory(dir + "/y/v7");
  fs::create_directory(dir + "/y/.tmp-v8-3");
  writer->reset();
  fs::remove_all(dir + "/.tmp-x-1-1");
  fs::create_directory(dir + "/.tmp-x-1-1");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  EXPECT_FALSE(fs::exists(dir + "/.tmp-x-1-1"));
  EXPECT_FALSE(fs::exists(dir + "/y/v7"));
  EXPECT_FALSE(fs::exists(dir + "/y/.tmp-v8-3"));
  ASSERT_THAT((*store)->Scan().adapters, SizeIs(1));
}

TEST(AdapterStoreTest, CorruptEntriesAreSkippedAndNamed) {
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  for (const char* id : {"good", "flipped", "short", "missing", "badjson", "wrongid"}) {
    ASSERT_TRUE((*store)->Put(id, Upload("0123456789")).ok());
  }
  WriteRaw(dir + "/flipped/v1/adapter_model.safetensors", "0123456780");  // same size, other CRC
  WriteRaw(dir + "/short/v1/adapter_model.safetensors", "01234");
  fs::remove(dir + "/missing/v1/adapter_model.safetensors");
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

TEST(AdapterStoreTest, ManifestsWithFieldsMissingOrOfTheWrongKindAreSkipped) {
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  // Each entry's manifest as written, changed in one field.
  const std::map<std::string, std::function<void(nlohmann::json&)>> changes = {
      {"format-number", [](nlohmann::json& m) { m["format"] = 7; }},
      {"no-id", [](nlohmann::json& m) { m.erase("id"); }},
      {"source-object", [](nlohmann::json& m) { m["source"] = {{"x", 1}}; }},
      {"no-source", [](nlohmann::json& m) { m.erase("source"); }},
      {"no-files", [](nlohmann::json& m) { m.erase("files"); }},
      {"file-no-bytes", [](nlohmann::json& m) { m["files"][0].erase("bytes"); }},
      {"file-no-name", [](nlohmann::json& m) { m["files"][0].erase("name"); }},
  };
  ASSERT_TRUE((*store)->Put("good", Upload("0123456789")).ok());
  for (const auto& [id, change] : changes) {
    ASSERT_TRUE((*store)->Put(id, Upload("0123456789")).ok());
    std::ifstream in(dir + "/" + id + "/manifest.json");
    nlohmann::json m = nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(in), {}));
    change(m);
    WriteRaw(dir + "/" + id + "/manifest.json", m.dump());
  }
  StoreScan scan = (*store)->Scan();
  ASSERT_THAT(scan.adapters, SizeIs(1));
  EXPECT_EQ(scan.adapters[0].id, "good");
  ASSERT_THAT(scan.skipped, SizeIs(changes.size()));
  std::string all;
  for (const absl::Status& st : scan.skipped) {
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
    absl::StrAppend(&all, st.message(), "\n");
  }
  for (const auto& [id, change] : changes) EXPECT_THAT(all, HasSubstr(id));
}

TEST(AdapterStoreTest, RejectsUnsafeFileNamesAndUnwritableDirectories) {
  const std::string dir = testing::MakeTempDir("store");
  auto store = AdapterStore::Open(dir);
  ASSERT_TRUE(store.ok());
  for (const char* name : {"../escape", "manifest.json", ".hidden", "a/b"}) {
    absl::Status st = (*store)->Put("x", UploadSource{{{name, "data"}}}).status();
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
  if (!testing::Await(*done, "the load of " + id)) return absl::DeadlineExceededError("load timed out");
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
