// EnsureTrainedDemo on short schedules: the files, their determinism, the
// cache, concurrent callers and the shipped chat template. The default
// schedule is covered by tests/server/trained_demo_integration_test.cc.
#include "server/core/trained_demo.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/demo_tokenizer.h"
#include "server/core/prompt_builder.h"
#include "tests/support/test_env.h"

namespace adapterd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

model::DemoSchedule Short(uint64_t seed = 21) {
  model::DemoSchedule s;
  s.seed = seed;
  s.bigram_steps = 2;
  s.base_steps = 2;
  s.lora_steps = 2;
  return s;
}

// Every file under `dir`, by relative path, with its bytes.
std::map<std::string, std::string> Files(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    out[fs::relative(e.path(), dir).string()] = bytes.str();
  }
  return out;
}

std::vector<std::string> Names(const std::map<std::string, std::string>& files) {
  std::vector<std::string> out;
  for (const auto& [name, bytes] : files) out.push_back(name);
  return out;
}

TEST(TrainedDemoTest, TheSameSeedTrainsTheSameFiles) {
  absl::StatusOr<TrainedDemo> a = EnsureTrainedDemo(testing::MakeTempDir("trained-a"), Short());
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<TrainedDemo> b = EnsureTrainedDemo(testing::MakeTempDir("trained-b"), Short());
  ASSERT_TRUE(b.ok()) << b.status();
  const fs::path root_a = fs::path(a->model_dir).parent_path(), root_b = fs::path(b->model_dir).parent_path();
  EXPECT_EQ(root_a.filename(), root_b.filename());
  EXPECT_EQ(fs::path(a->model_dir).filename(), kTrainedDemoName);
  const std::map<std::string, std::string> files_a = Files(root_a);
  EXPECT_THAT(Names(files_a),
              ::testing::ElementsAre("adapterd-demo/config.json", "adapterd-demo/generation_config.json",
                                     "adapterd-demo/model.safetensors", "adapterd-demo/tokenizer.json",
                                     "adapterd-demo/tokenizer_config.json",
                                     "adapters/demo-all-r8/adapter_config.json",
                                     "adapters/demo-all-r8/adapter_model.safetensors",
                                     "adapters/demo-qv-r4/adapter_config.json",
                                     "adapters/demo-qv-r4/adapter_model.safetensors"));
  const std::map<std::string, std::string> files_b = Files(root_b);
  for (const auto& [name, bytes] : files_a) {
    ASSERT_TRUE(files_b.contains(name)) << name;
    EXPECT_TRUE(files_b.at(name) == bytes) << name << " differs between two trainings with the same seed";
  }
  ASSERT_EQ(a->adapters.size(), 2u);
  EXPECT_EQ(a->adapters[0].first, "demo-qv-r4");
  EXPECT_EQ(a->adapters[1].first, "demo-all-r8");
  EXPECT_EQ(a->adapters[1].second, (root_a / "adapters" / "demo-all-r8").string());

  // Another seed: the same tokenizer (it depends on the text only), other
  // weights, and a directory of its own beside the first.
  const std::string shared = root_a.parent_path().string();
  absl::StatusOr<TrainedDemo> c = EnsureTrainedDemo(shared, Short(22));
  ASSERT_TRUE(c.ok()) << c.status();
  const fs::path root_c = fs::path(c->model_dir).parent_path();
  EXPECT_NE(root_c, root_a);
  const std::map<std::string, std::string> files_c = Files(root_c);
  EXPECT_TRUE(files_c.at("adapterd-demo/tokenizer.json") == files_a.at("adapterd-demo/tokenizer.json"));
  EXPECT_FALSE(files_c.at("adapterd-demo/model.safetensors") == files_a.at("adapterd-demo/model.safetensors"));
  EXPECT_FALSE(files_c.at("adapters/demo-qv-r4/adapter_model.safetensors") ==
               files_a.at("adapters/demo-qv-r4/adapter_model.safetensors"));
}

TEST(TrainedDemoTest, ALaterCallReusesTheCache) {
  const std::string cache = testing::MakeTempDir("trained-cache");
  absl::StatusOr<TrainedDemo> first = EnsureTrainedDemo(cache, Short());
  ASSERT_TRUE(first.ok()) << first.status();
  const fs::path weights = fs::path(first->model_dir) / "model.safetensors";
  const fs::file_time_type written = fs::last_write_time(weights);
  absl::StatusOr<TrainedDemo> again = EnsureTrainedDemo(cache, Short());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->model_dir, first->model_dir);
  EXPECT_EQ(again->adapters, first->adapters);
  EXPECT_EQ(fs::last_write_time(weights), written);
}

TEST(TrainedDemoTest, ConcurrentCallersShareOneTraining) {
  const std::string cache = testing::MakeTempDir("trained-concurrent");
  std::vector<absl::StatusOr<TrainedDemo>> results(3, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = EnsureTrainedDemo(cache, Short()); });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->model_dir, results[0]->model_dir);
  }
  // The demo's directory and its lock file; no temporary directory is left.
  std::vector<std::string> entries;
  for (const fs::directory_entry& e : fs::directory_iterator(cache)) entries.push_back(e.path().filename().string());
  std::sort(entries.begin(), entries.end());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ("." + entries[1] + ".lock", entries[0]);
}

TEST(TrainedDemoTest, TheCheckpointShipsItsTokenizerAndChatTemplate) {
  absl::StatusOr<TrainedDemo> demo = EnsureTrainedDemo(testing::MakeTempDir("trained-chat"), Short());
  ASSERT_TRUE(demo.ok()) << demo.status();
  absl::StatusOr<std::unique_ptr<PromptBuilder>> prompts = PromptBuilder::Load(demo->model_dir);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_TRUE((*prompts)->has_chat_template());

  ChatPrompt chat{{{"system", "Be brief."}, {"user", "  Threat model "}}, true};
  absl::StatusOr<std::string> text = (*prompts)->RenderChat(chat);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|begin_of_text|><|start_turn|>system\nBe brief.<|end_turn|>\n<|start_turn|>user\nThreat "
            "model<|end_turn|>\n<|start_turn|>assistant\n");
  absl::StatusOr<std::vector<int32_t>> ids = (*prompts)->Tokenize(std::nullopt, chat, false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->front(), kDemoBosId);
  absl::StatusOr<std::string> back = (*prompts)->Detokenize(*ids, false);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *text);

  ChatPrompt tool{{{"tool", "42"}}, true};
  absl::StatusOr<std::vector<int32_t>> refused = (*prompts)->Tokenize(std::nullopt, tool, false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("system, user and assistant, not tool"));

  // Text gets BOS; the documentation's words are single tokens.
  absl::StatusOr<std::vector<int32_t>> words = (*prompts)->Tokenize("The adapter", std::nullopt, true);
  ASSERT_TRUE(words.ok()) << words.status();
  EXPECT_EQ(words->size(), 3u);
  EXPECT_EQ(words->front(), kDemoBosId);
}

TEST(TrainedDemoTest, AnUnusableCacheDirectoryIsNamed) {
  const std::string file = testing::MakeTempDir("trained-bad") + "/not-a-dir";
  std::ofstream(file) << "x";
  absl::StatusOr<TrainedDemo> demo = EnsureTrainedDemo(file + "/cache", Short());
  ASSERT_FALSE(demo.ok());
  EXPECT_THAT(std::string(demo.status().message()), HasSubstr(file));
}

}  // namespace
}  // namespace adapterd::core
