// ServerCore on the demo model: the one call that runs a request (lookup,
// lease, submit, accounting), the admin operations, and the drain.
#include "server/core/server_core.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/fakes/collecting_generate_sink.h"
#include "tests/fakes/fake_tokenizer.h"
#include "server/model/demo_checkpoint.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::core {
namespace {

using ::testing::HasSubstr;
using testing::IsError;

// A LoRA strong enough to change the demo model's greedy tokens.
testing::FakeAdapter Strong() {
  return testing::DemoLora({.r = 4, .seed = 50, .a_amplitude = 0.3f, .b_amplitude = 0.3f});
}

class ServerCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerCoreOptions o;
    o.cache_dir = testing::MakeTempDir("core-cache");
    o.demo_adapters = false;
    o.demo_trained = false;
    roots_ = testing::MakeTempDir("core-roots");
    o.adapter_roots = {roots_};
    absl::StatusOr<std::unique_ptr<ServerCore>> c = ServerCore::Create(o, prom_);
    ASSERT_TRUE(c.ok()) << c.status();
    core_ = *std::move(c);
  }

  absl::StatusOr<adapters::AdapterInfo> Wait(const std::function<void(LoadDone)>& start) {
    auto done = std::make_shared<absl::Notification>();
    auto result = std::make_shared<absl::StatusOr<adapters::AdapterInfo>>(absl::UnknownError("not called"));
    start([done, result](absl::StatusOr<adapters::AdapterInfo> r) {
      *result = std::move(r);
      done->Notify();
    });
    if (!testing::Await(*done, "a load to finish")) return absl::DeadlineExceededError("timed out");
    return *result;
  }
  // Greedy generation through `adapter`; the finish.
  std::shared_ptr<testing::CollectingGenerateSink> Run(const std::string& adapter, int64_t tokens = 4) {
    GenerateRequest r;
    r.engine.prompt = {5, 6, 7};
    r.engine.sampling.max_new_tokens = tokens;
    r.engine.sampling.ignore_eos = true;
    auto sink = std::make_shared<testing::CollectingGenerateSink>();
    absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h = core_->Generate(adapter, r, sink);
    EXPECT_TRUE(h.ok()) << h.status();
    if (h.ok()) {
      EXPECT_TRUE(testing::Await(sink->done, "request through '" + adapter + "' to finish"));
    }
    return sink;
  }
  double Metric(const std::string& name) {
    absl::StatusOr<double> v = testing::MetricSum(prometheus::TextSerializer().Serialize(prom_.Collect()), name);
    return v.ok() ? *v : -1;
  }

  prometheus::Registry prom_;
  std::string roots_;
  std::unique_ptr<ServerCore> core_;
};

TEST_F(ServerCoreTest, GenerateLooksUpLeasesSubmitsAndAccounts) {
  ASSERT_TRUE(Wait([&](LoadDone d) { core_->UploadAdapter("qv", {Strong().Files()}, false, false, d); })
                  .ok());
  auto base = Run("");
  auto lora = Run("qv");
  EXPECT_TRUE(lora->finish.finish.status.ok()) << lora->finish.finish.status;
  EXPECT_EQ(lora->tokens.size(), 4u);
  EXPECT_NE(base->tokens, lora->tokens) << "the adapter changed nothing, so this proves nothing";
  absl::StatusOr<adapters::AdapterInfo> info = core_->GetAdapter("qv");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->requests_served, 1);
  EXPECT_EQ(info->tokens_generated, 4);
  EXPECT_EQ(Metric("adapterd_adapter_requests_total"), 2);  // base and qv
  EXPECT_EQ(Metric("adapterd_adapters_loaded"), 1);
}

TEST_F(ServerCoreTest, AnUnknownAdapterIsNotFoundAndNothingIsSubmitted) {
  auto sink = std::make_shared<testing::CollectingGenerateSink>();
  GenerateRequest r;
  r.engine.prompt = {1, 2};
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h = core_->Generate("nope", r, sink);
  EXPECT_TRUE(IsError(h.status(), absl::StatusCode::kNotFound, {"nope"}));
  EXPECT_FALSE(sink->done.HasBeenNotified());
  EXPECT_EQ(core_->engine().GetStats().waiting, 0);
}

TEST_F(ServerCoreTest, PathLoadsAreConfinedAndFailuresCounted) {
  const std::string outside = testing::QvLora(2).Write("outside");
  absl::StatusOr<adapters::AdapterInfo> r =
      Wait([&](LoadDone d) { core_->LoadAdapter("x", outside, false, false, d); });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_EQ(Metric("adapterd_adapter_load_failures_total"), 1);
  ASSERT_TRUE(testing::QvLora(2).WriteTo(roots_ + "/inside").ok());
  r = Wait([&](LoadDone d) { core_->LoadAdapter("x", roots_ + "/inside", false, false, d); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(core_->ListAdapters(), ::testing::SizeIs(1));
  EXPECT_TRUE(core_->UnloadAdapter("x", false).ok());
  EXPECT_TRUE(IsError(core_->GetAdapter("x").status(), absl::StatusCode::kNotFound, {"x"}));
  EXPECT_EQ(Metric("adapterd_adapters_loaded"), 0);
}

TEST_F(ServerCoreTest, TheDrainRefusesNewRequestsWithUnavailable) {
  EXPECT_TRUE(core_->serving());
  core_->BeginShutdown(absl::Seconds(5));
  EXPECT_FALSE(core_->serving());
  GenerateRequest r;
  r.engine.prompt = {1, 2};
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h =
      core_->Generate("", r, std::make_shared<testing::CollectingGenerateSink>());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kUnavailable) << h.status();
  EXPECT_TRUE(core_->AwaitStopped(absl::Now() + absl::Seconds(30)));
}

// The demo checkpoint with a character-level tokenizer and a chat template
// beside it, served with a prompt limit of 6 tokens.
TEST(ServerCoreTextTest, TextAndChatsRunAndLimitsNameTheTokenizedPrompt) {
  absl::StatusOr<std::string> demo = model::EnsureDemoCheckpoint(testing::MakeTempDir("core-text"));
  ASSERT_TRUE(demo.ok()) << demo.status();
  testing::WriteFakeTokenizer(*demo, testing::kFakeChatTemplate);
  ServerCoreOptions o;
  o.model_dir = *demo;
  o.engine.max_prompt_tokens = 6;
  prometheus::Registry prom;
  absl::StatusOr<std::unique_ptr<ServerCore>> core = ServerCore::Create(o, prom);
  ASSERT_TRUE(core.ok()) << core.status();
  ASSERT_NE((*core)->prompts().tokenizer(), nullptr);

  GenerateRequest r;
  r.prompt_text = "abc";
  r.engine.sampling.max_new_tokens = 5;
  r.engine.sampling.ignore_eos = true;
  auto sink = std::make_shared<testing::CollectingGenerateSink>();
  ASSERT_TRUE((*core)->Generate("", r, sink).ok());
  ASSERT_TRUE(testing::Await(sink->done, "the text request to finish"));
  EXPECT_TRUE(sink->finish.finish.status.ok()) << sink->finish.finish.status;
  EXPECT_EQ(sink->finish.finish.prompt_tokens, 3);
  EXPECT_EQ(sink->tokens.size(), 5u);
  // The text is the decode of the ids (ids past the character vocabulary name no token).
  std::vector<int32_t> ids(sink->tokens.begin(), sink->tokens.end());
  EXPECT_EQ(sink->text, (*core)->prompts().tokenizer()->Decode(ids, true));

  GenerateRequest long_text;
  long_text.prompt_text = "abcdefgh";
  long_text.engine.sampling.max_new_tokens = 1;
  EXPECT_TRUE(IsError((*core)->Generate("", long_text, std::make_shared<testing::CollectingGenerateSink>()).status(),
                      absl::StatusCode::kInvalidArgument,
                      {"prompt_text is 8 tokens after tokenization", "--max_prompt_tokens", "6"}));
  GenerateRequest long_chat;
  long_chat.chat = ChatPrompt{{{"user", "hi"}}, true};
  long_chat.engine.sampling.max_new_tokens = 1;
  EXPECT_TRUE(IsError((*core)->Generate("", long_chat, std::make_shared<testing::CollectingGenerateSink>()).status(),
                      absl::StatusCode::kInvalidArgument, {"chat is", "tokens after tokenization"}));
}

// Keeps one Classify result.
class ClassifyCollector : public ClassifySink {
 public:
  void OnResult(absl::StatusOr<ClassifyResult> r) override {
    result = std::move(r);
    done.Notify();
  }
  absl::StatusOr<ClassifyResult> result = absl::UnknownError("no result");
  absl::Notification done;
};

// A SEQ_CLS adapter for the demo model: a q/v LoRA and a 3-label head, with
// the fine-tuned model's config.json (label names, pad token 9) beside it.
std::map<std::string, std::string> ClassifierFiles() {
  testing::FakeAdapter a = Strong();
  a.config["task_type"] = "SEQ_CLS";
  a.config["modules_to_save"] = {"classifier", "score"};
  a.Add("base_model.model.score.weight", {3, 256}, 77, 0.5f);
  std::map<std::string, std::string> files = a.Files();
  files["config.json"] = R"({"id2label": {"0": "neg", "1": "neu", "2": "pos"}, "pad_token_id": 9})";
  return files;
}

TEST(ServerCoreClassifyTest, TextAndIdsPoolTheLastTokenThatIsNotPadding) {
  absl::StatusOr<std::string> demo = model::EnsureDemoCheckpoint(testing::MakeTempDir("core-cls"));
  ASSERT_TRUE(demo.ok()) << demo.status();
  testing::WriteFakeTokenizer(*demo, testing::kFakeChatTemplate);
  ServerCoreOptions o;
  o.model_dir = *demo;
  prometheus::Registry prom;
  absl::StatusOr<std::unique_ptr<ServerCore>> core = ServerCore::Create(o, prom);
  ASSERT_TRUE(core.ok()) << core.status();
  auto load = [&](const std::string& id, std::map<std::string, std::string> files) {
    absl::Notification done;
    absl::Status status;
    (*core)->UploadAdapter(id, {std::move(files)}, false, false, [&](absl::StatusOr<adapters::AdapterInfo> r) {
      status = r.status();
      done.Notify();
    });
    EXPECT_TRUE(testing::Await(done, "the load of " + id));
    return status;
  };
  ASSERT_TRUE(load("cls", ClassifierFiles()).ok());
  ASSERT_TRUE(load("qv", Strong().Files()).ok());
  absl::StatusOr<adapters::AdapterInfo> info = (*core)->GetAdapter("cls");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->summary.task_type, "SEQ_CLS");
  EXPECT_THAT(info->summary.labels, ::testing::ElementsAre("neg", "neu", "pos"));
  EXPECT_THAT(info->summary.modules_to_save, ::testing::ElementsAre("score"));

  auto classify = [&](const std::string& id, ClassifyRequest r) -> absl::StatusOr<ClassifyResult> {
    auto sink = std::make_shared<ClassifyCollector>();
    absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h = (*core)->Classify(id, std::move(r), sink);
    if (!h.ok()) return h.status();
    EXPECT_TRUE(testing::Await(sink->done, "the classification"));
    return sink->result;
  };
  auto ids = [](std::vector<int64_t> p) {
    ClassifyRequest r;
    r.prompt_token_ids = std::move(p);
    return r;
  };
  absl::StatusOr<ClassifyResult> plain = classify("cls", ids({5, 6, 7}));
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_EQ(plain->scores.size(), 3u);
  double sum = 0;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(plain->scores[i].label, std::vector<std::string>({"neg", "neu", "pos"})[i]);
    sum += plain->scores[i].probability;
  }
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_EQ(plain->pooled_index, 2);
  // Trailing pad tokens are skipped: the same token is pooled.
  absl::StatusOr<ClassifyResult> padded = classify("cls", ids({5, 6, 7, 9, 9}));
  ASSERT_TRUE(padded.ok()) << padded.status();
  EXPECT_EQ(padded->prompt_tokens, 5);
  EXPECT_EQ(padded->pooled_index, 2);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(padded->scores[i].logit, plain->scores[i].logit);
  // Text is tokenized as Generate tokenizes it.
  ClassifyRequest text;
  text.prompt_text = "abc";
  absl::StatusOr<ClassifyResult> by_text = classify("cls", text);
  ASSERT_TRUE(by_text.ok()) << by_text.status();
  absl::StatusOr<std::vector<int32_t>> tokens = (*core)->Tokenize(std::string("abc"), std::nullopt, true);
  ASSERT_TRUE(tokens.ok());
  absl::StatusOr<ClassifyResult> by_ids = classify("cls", ids({tokens->begin(), tokens->end()}));
  ASSERT_TRUE(by_ids.ok());
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(by_text->scores[i].logit, by_ids->scores[i].logit);
  EXPECT_EQ((*core)->GetAdapter("cls")->requests_served, 4);

  // Each call refuses the other's adapters, and malformed prompts, by name.
  EXPECT_TRUE(IsError(classify("qv", ids({1, 2})).status(), absl::StatusCode::kFailedPrecondition,
                      {"'qv' is a causal-LM adapter", "SEQ_CLS"}));
  EXPECT_TRUE(IsError(classify("", ids({1, 2})).status(), absl::StatusCode::kFailedPrecondition, {"base model"}));
  EXPECT_TRUE(IsError(classify("nope", ids({1, 2})).status(), absl::StatusCode::kNotFound, {"nope"}));
  ClassifyRequest both = ids({1});
  both.prompt_text = "a";
  EXPECT_TRUE(IsError(classify("cls", both).status(), absl::StatusCode::kInvalidArgument, {"exactly one"}));
  EXPECT_TRUE(IsError(classify("cls", ids({1, 5000})).status(), absl::StatusCode::kInvalidArgument,
                      {"prompt_token_ids[1]"}));
  GenerateRequest g;
  g.engine.prompt = {1, 2};
  g.engine.sampling.max_new_tokens = 2;
  EXPECT_TRUE(IsError((*core)->Generate("cls", g, std::make_shared<testing::CollectingGenerateSink>()).status(),
                      absl::StatusCode::kFailedPrecondition, {"'cls' is a sequence-classification adapter", "Classify"}));
}

}  // namespace
}  // namespace adapterd::core
