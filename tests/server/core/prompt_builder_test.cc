// PromptBuilder: text and chats into token ids with a checkpoint's own
// tokenizer and template, and a clear error for every prompt it cannot
// build. The tokenizer here is a character-level BPE built in code; the live
// comparison with transformers is tests/conformance/text_conformance_test.cc.
#include "server/core/prompt_builder.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fakes/fake_tokenizer.h"
#include "tests/server/text/text_test_util.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"

namespace adapterd::core {
namespace {

using ::testing::ElementsAre;
using testing::IsError;
namespace tt = text::testing;

constexpr const char* kTemplate = testing::kFakeChatTemplate;

// A model directory holding only a tokenizer (and a template, if given).
std::string TokenizerDir(const std::string& name, const std::string& chat_template) {
  const std::string dir = testing::MakeTempDir(name);
  testing::WriteFakeTokenizer(dir, chat_template);
  return dir;
}

std::unique_ptr<PromptBuilder> Load(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<PromptBuilder>> b = PromptBuilder::Load(dir);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

ChatPrompt Chat(std::vector<ChatMessage> messages, bool cue = true) { return ChatPrompt{std::move(messages), cue}; }

TEST(PromptBuilderTest, TextAndChatsBecomeTokenIds) {
  auto b = Load(TokenizerDir("pb-ok", kTemplate));
  ASSERT_NE(b, nullptr);
  GenerateRequest text;
  text.prompt_text = "hi";
  ASSERT_TRUE(b->Build(text).ok());
  EXPECT_THAT(text.engine.prompt, ElementsAre(8, 9));  // ' '=0, a=1, ... h=8, i=9
  absl::StatusOr<std::string> rendered = b->RenderChat(Chat({{"system", "be short"}, {"user", " hi "}}));
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_EQ(*rendered, "system: be short\nuser: hi\nassistant:");
  GenerateRequest chat;
  chat.chat = Chat({{"user", "hi"}});
  ASSERT_TRUE(b->Build(chat).ok());
  EXPECT_EQ(chat.engine.prompt.size(), std::string("user: hi\nassistant:").size());
  absl::StatusOr<std::string> back = b->Detokenize({8, 9}, true);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, "hi");
}

TEST(PromptBuilderTest, EveryBadPromptIsNamed) {
  auto b = Load(TokenizerDir("pb-bad", kTemplate));
  ASSERT_NE(b, nullptr);
  GenerateRequest both;
  both.prompt_text = "hi";
  both.engine.prompt = {1};
  EXPECT_TRUE(IsError(b->Build(both), absl::StatusCode::kInvalidArgument,
                      {"exactly one of prompt_token_ids, prompt_text and chat"}));
  GenerateRequest none;
  EXPECT_TRUE(IsError(b->Build(none), absl::StatusCode::kInvalidArgument, {"exactly one"}));
  GenerateRequest bad_utf8;
  bad_utf8.prompt_text = std::string("abc\xff", 4);
  EXPECT_TRUE(IsError(b->Build(bad_utf8), absl::StatusCode::kInvalidArgument,
                      {"prompt_text", "not valid UTF-8", "byte offset 3"}));
  GenerateRequest role;
  role.chat = Chat({{"narrator", "once"}});
  EXPECT_TRUE(IsError(b->Build(role), absl::StatusCode::kInvalidArgument, {"unknown role: narrator"}));
  GenerateRequest empty;
  empty.chat = Chat({});
  EXPECT_TRUE(IsError(b->Build(empty), absl::StatusCode::kInvalidArgument, {"chat.messages"}));
  EXPECT_TRUE(IsError(b->Detokenize({99999}, true).status(), absl::StatusCode::kInvalidArgument, {"token_ids[0]"}));
}

TEST(PromptBuilderTest, WhatTheCheckpointLacksIsAFailedPrecondition) {
  auto no_template = Load(TokenizerDir("pb-no-template", ""));
  ASSERT_NE(no_template, nullptr);
  GenerateRequest chat;
  chat.chat = Chat({{"user", "hi"}});
  EXPECT_TRUE(IsError(no_template->Build(chat), absl::StatusCode::kFailedPrecondition, {"no chat template"}));

  // A template outside the supported subset loads, and chats are refused
  // naming the construct and its line.
  auto unsupported = Load(TokenizerDir("pb-unsupported", "{{ messages | frobnicate }}"));
  ASSERT_NE(unsupported, nullptr);
  EXPECT_TRUE(IsError(unsupported->Build(chat), absl::StatusCode::kFailedPrecondition,
                      {"chat template", "frobnicate", "line 1"}));

  auto no_tokenizer = Load(testing::MakeTempDir("pb-none"));
  ASSERT_NE(no_tokenizer, nullptr);
  GenerateRequest text;
  text.prompt_text = "hi";
  EXPECT_TRUE(IsError(no_tokenizer->Build(text), absl::StatusCode::kFailedPrecondition, {"prompt_text", "no"}));
  GenerateRequest ids;
  ids.engine.prompt = {1, 2};
  EXPECT_TRUE(no_tokenizer->Build(ids).ok()) << "token ids need no tokenizer";
}

TEST(PromptBuilderTest, AMalformedTokenizerFailsLoadingNamingTheField) {
  const std::string dir = testing::MakeTempDir("pb-malformed");
  nlohmann::json j = tt::TokenizerJson(tt::BpeModel(tt::CharVocab(testing::kFakeTokenizerChars)));
  j["pre_tokenizer"] = {{"type", "Frobnicator"}};
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  EXPECT_TRUE(IsError(PromptBuilder::Load(dir).status(), absl::StatusCode::kInvalidArgument,
                      {"tokenizer.json", "pre_tokenizer", "Frobnicator"}));
}

}  // namespace
}  // namespace adapterd::core
