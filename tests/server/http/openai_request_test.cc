// OpenAI request bodies -> core requests, and statuses -> HTTP errors: pure
// functions, no server.
#include "server/http/openai_request.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/http/http_error.h"

namespace adapterd::http {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

OpenAiLimits Limits() { return OpenAiLimits{}; }

// The param of an INVALID_ARGUMENT from parsing `body` as a completion.
std::string CompletionError(const std::string& body) {
  absl::StatusOr<OpenAiRequest> r = ParseCompletionRequest(body, Limits());
  EXPECT_FALSE(r.ok()) << body;
  if (r.ok()) return "<ok>";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
  return ParamOf(r.status()).value_or("<none>");
}

std::string ChatError(const std::string& body) {
  absl::StatusOr<OpenAiRequest> r = ParseChatRequest(body, Limits());
  EXPECT_FALSE(r.ok()) << body;
  if (r.ok()) return "<ok>";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
  return ParamOf(r.status()).value_or("<none>");
}

TEST(ParseCompletionRequestTest, DefaultsAndSampling) {
  absl::StatusOr<OpenAiRequest> r = ParseCompletionRequest(R"({"model": "m", "prompt": "hi"})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, ApiKind::kCompletion);
  EXPECT_EQ(r->model, "m");
  ASSERT_EQ(r->prompts.size(), 1u);
  const core::GenerateRequest& g = r->prompts[0];
  EXPECT_EQ(g.prompt_text, "hi");
  EXPECT_EQ(g.engine.sampling.max_new_tokens, 16);
  EXPECT_EQ(g.engine.sampling.temperature, 1.0);  // OpenAI's default
  EXPECT_EQ(g.engine.sampling.top_p, 1.0);
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(r->n, 1);

  r = ParseCompletionRequest(
      R"({"prompt": [1, 2, 3], "max_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 42, "stop": ["a", "b"],
          "logprobs": 0, "n": 2, "stream": true, "stream_options": {"include_usage": true}, "top_k": -1,
          "ignore_eos": true, "stop_token_ids": [5], "return_token_ids": true, "user": "x", "unknown": {"a": 1}})",
      Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  const core::GenerateRequest& h = r->prompts[0];
  EXPECT_THAT(h.engine.prompt, ElementsAre(1, 2, 3));
  EXPECT_EQ(h.engine.sampling.max_new_tokens, 7);
  EXPECT_EQ(h.engine.sampling.temperature, 0.0);
  EXPECT_EQ(h.engine.sampling.top_p, 0.5);
  EXPECT_EQ(h.engine.sampling.seed, 42u);
  EXPECT_EQ(h.engine.sampling.top_k, 0);
  EXPECT_TRUE(h.engine.sampling.ignore_eos);
  EXPECT_TRUE(h.engine.sampling.return_logprobs);
  EXPECT_THAT(h.engine.sampling.stop_token_ids, ElementsAre(5));
  EXPECT_THAT(h.stop, ElementsAre("a", "b"));
  EXPECT_TRUE(r->logprobs && r->stream && r->include_usage && r->return_token_ids);
  EXPECT_EQ(r->n, 2);
}

TEST(ParseCompletionRequestTest, PromptShapes) {
  absl::StatusOr<OpenAiRequest> r = ParseCompletionRequest(R"({"prompt": ["a", "b", "c"], "n": 2})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 3u);
  EXPECT_EQ(r->prompts[2].prompt_text, "c");
  r = ParseCompletionRequest(R"({"prompt": [[1, 2], [3]]})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 2u);
  EXPECT_THAT(r->prompts[1].engine.prompt, ElementsAre(3));

  EXPECT_EQ(CompletionError(R"({"prompt": []})"), "prompt");
  EXPECT_EQ(CompletionError(R"({})"), "prompt");
  EXPECT_EQ(CompletionError(R"({"prompt": 5})"), "prompt");
  EXPECT_EQ(CompletionError(R"({"prompt": ["a", [1]]})"), "prompt[1]");
  EXPECT_EQ(CompletionError(R"({"prompt": [1, -2]})"), "prompt");
  EXPECT_EQ(CompletionError(R"({"prompt": [1, 2.5]})"), "prompt");
  EXPECT_EQ(CompletionError(R"({"prompt": [[]]})"), "prompt[0]");
  EXPECT_EQ(CompletionError(R"({"prompt": [1, 99999999999999]})"), "prompt");
}

TEST(ParseCompletionRequestTest, BadFieldsNameTheField) {
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "max_tokens": -1})"), "max_tokens");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "max_tokens": 0})"), "max_tokens");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "max_tokens": "16"})"), "max_tokens");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "max_tokens": 1.5})"), "max_tokens");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "temperature": -0.1})"), "temperature");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "temperature": "hot"})"), "temperature");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "top_p": 1.5})"), "top_p");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "n": 0})"), "n");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "n": 1000})"), "n");
  EXPECT_EQ(CompletionError(R"({"prompt": ["a", "b"], "n": 40})"), "prompt");  // 80 choices > 64
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stop": 3})"), "stop");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stop": ["a", 3]})"), "stop");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stream": "yes"})"), "stream");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stream_options": {"include_usage": true}})"), "stream_options");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "model": 3})"), "model");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "seed": "s"})"), "seed");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stop_token_ids": [-1]})"), "stop_token_ids");
}

TEST(ParseCompletionRequestTest, UnsupportedFeaturesAreRefusedClearly) {
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "echo": true})"), "echo");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "logprobs": 2})"), "logprobs");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "logprobs": true})"), "logprobs");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "best_of": 3})"), "best_of");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "presence_penalty": 0.5})"), "presence_penalty");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "logit_bias": {"1": 5}})"), "logit_bias");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "suffix": "y"})"), "suffix");
  // Their neutral values are accepted.
  EXPECT_TRUE(ParseCompletionRequest(R"({"prompt": "x", "echo": false, "best_of": 1, "frequency_penalty": 0,
                                          "logit_bias": {}, "suffix": null})",
                                     Limits())
                  .ok());
}

TEST(ParseCompletionRequestTest, BodiesThatAreNotObjects) {
  for (const char* body : {"", "{", "[1, 2]", "\"text\"", "null", "{\"prompt\": \"x\",}"}) {
    absl::StatusOr<OpenAiRequest> r = ParseCompletionRequest(body, Limits());
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_FALSE(ParamOf(r.status()).has_value());
  }
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  absl::StatusOr<OpenAiRequest> r = ParseCompletionRequest(R"({"prompt": )" + deep + "}", Limits());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("nests deeper"));
  // Brackets inside strings do not count.
  EXPECT_TRUE(ParseCompletionRequest(R"({"prompt": ")" + deep + R"("})", Limits()).ok());
}

TEST(ParseCompletionRequestTest, AdaptersComposeIntoEveryCoreRequest) {
  absl::StatusOr<OpenAiRequest> r = ParseCompletionRequest(
      R"({"prompt": ["a", "b"], "adapters": [{"id": "x", "weight": 0.5}, {"id": "y", "weight": -2}, {"id": "x"}]})",
      Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 2u);
  for (const core::GenerateRequest& p : r->prompts) {
    ASSERT_EQ(p.adapters.size(), 3u);
    EXPECT_EQ(p.adapters[0].id, "x");
    EXPECT_EQ(p.adapters[0].weight, 0.5);
    EXPECT_EQ(p.adapters[1].weight, -2.0);
    EXPECT_EQ(p.adapters[2].weight, 1.0);  // absent: 1
  }
  absl::StatusOr<OpenAiRequest> chat = ParseChatRequest(
      R"({"messages": [{"role": "user", "content": "hi"}], "adapters": [{"id": "x", "weight": 0.25}]})", Limits());
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_EQ(chat->prompts[0].adapters.size(), 1u);
  EXPECT_EQ(chat->prompts[0].adapters[0].weight, 0.25);
  EXPECT_TRUE(ParseCompletionRequest(R"({"prompt": "x", "adapters": null})", Limits())->prompts[0].adapters.empty());
  for (const char* bad : {R"("x")", "[]", R"(["x"])", R"([{"weight": 1}])", R"([{"id": 3}])",
                          R"([{"id": "x", "weight": "1"}])", R"({"id": "x"})"}) {
    EXPECT_EQ(CompletionError(absl::StrCat(R"({"prompt": "x", "adapters": )", bad, "}")), "adapters") << bad;
    EXPECT_EQ(ChatError(absl::StrCat(R"({"messages": [{"role": "user", "content": "hi"}], "adapters": )", bad, "}")),
              "adapters")
        << bad;
  }
}

TEST(ParseChatRequestTest, MessagesAndLimits) {
  absl::StatusOr<OpenAiRequest> r = ParseChatRequest(
      R"({"model": "a", "messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
          {"role": "assistant", "content": null}], "max_completion_tokens": 9, "max_tokens": 3, "logprobs": true,
          "top_logprobs": 0, "response_format": {"type": "text"}, "tools": []})",
      Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, ApiKind::kChat);
  ASSERT_EQ(r->prompts.size(), 1u);
  const core::GenerateRequest& g = r->prompts[0];
  ASSERT_TRUE(g.chat.has_value());
  ASSERT_EQ(g.chat->messages.size(), 3u);
  EXPECT_EQ(g.chat->messages[1].content, "one\ntwo");
  EXPECT_EQ(g.chat->messages[2].content, "");
  EXPECT_TRUE(g.chat->add_generation_prompt);
  EXPECT_EQ(g.engine.sampling.max_new_tokens, 9);  // max_completion_tokens wins
  EXPECT_FALSE(g.max_new_tokens_to_context);
  EXPECT_TRUE(r->logprobs);

  r = ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}]})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->prompts[0].max_new_tokens_to_context);  // no limit given: the rest of the context
  EXPECT_EQ(r->prompts[0].engine.sampling.max_new_tokens, 16);
}

TEST(ParseChatRequestTest, BadMessagesNameTheField) {
  EXPECT_EQ(ChatError(R"({"messages": []})"), "messages");
  EXPECT_EQ(ChatError(R"({"messages": "hi"})"), "messages");
  EXPECT_EQ(ChatError(R"({"messages": [3]})"), "messages[0]");
  EXPECT_EQ(ChatError(R"({"messages": [{"content": "x"}]})"), "messages[0].role");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": 5}]})"), "messages[0].content");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})"),
            "messages[0].content[0]");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2, "logprobs": true})"),
            "top_logprobs");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})"),
            "tools");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})"),
            "response_format");
  // A "type" that is not a string (found by openai_request_fuzz: it threw).
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": [{"type": {"url": "x"}}]}]})"),
            "messages[0].content[0]");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": 1}})"),
            "response_format");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": -5})"), "max_tokens");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})"), "logprobs");
}

TEST(ParseLoraRequestTest, NamesAndPaths) {
  absl::StatusOr<LoraLoadRequest> load = ParseLoadLoraRequest(R"({"lora_name": "a", "lora_path": "/p", "x": 1})");
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(load->name, "a");
  EXPECT_EQ(load->path, "/p");
  EXPECT_EQ(ParseLoadLoraRequest(R"({"lora_name": "a"})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParamOf(ParseLoadLoraRequest(R"({"lora_path": "/p"})").status()), "lora_name");
  EXPECT_EQ(ParamOf(ParseLoadLoraRequest(R"({"lora_name": 1, "lora_path": "/p"})").status()), "lora_name");
  absl::StatusOr<std::string> unload = ParseUnloadLoraRequest(R"({"lora_name": "a", "lora_int_id": null})");
  ASSERT_TRUE(unload.ok());
  EXPECT_EQ(*unload, "a");
  EXPECT_EQ(ParamOf(ParseUnloadLoraRequest("{}").status()), "lora_name");
}

// The param of an INVALID_ARGUMENT from parsing `body` as a classification.
std::string ClassifyError(const std::string& body) {
  absl::StatusOr<ClassifyApiRequest> r = ParseClassifyRequest(body, Limits());
  EXPECT_FALSE(r.ok()) << body;
  if (r.ok()) return "<ok>";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
  return ParamOf(r.status()).value_or("<none>");
}

TEST(ParseClassifyRequestTest, InputShapesAreOneCoreRequestEach) {
  absl::StatusOr<ClassifyApiRequest> r = ParseClassifyRequest(R"({"model": "cls", "input": "a b"})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "cls");
  ASSERT_EQ(r->inputs.size(), 1u);
  EXPECT_EQ(r->inputs[0].prompt_text, "a b");
  EXPECT_TRUE(r->inputs[0].prompt_token_ids.empty());
  EXPECT_TRUE(r->inputs[0].add_special_tokens);
  r = ParseClassifyRequest(R"({"input": [[1, 2], [3]], "add_special_tokens": false, "user": "u"})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "");
  ASSERT_EQ(r->inputs.size(), 2u);
  EXPECT_THAT(r->inputs[0].prompt_token_ids, ElementsAre(1, 2));
  EXPECT_THAT(r->inputs[1].prompt_token_ids, ElementsAre(3));
  EXPECT_FALSE(r->inputs[1].prompt_text.has_value());
  EXPECT_FALSE(r->inputs[1].add_special_tokens);
  r = ParseClassifyRequest(R"({"input": ["x", "y", "z"]})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->inputs.size(), 3u);
  EXPECT_EQ(r->inputs[2].prompt_text, "z");
  r = ParseClassifyRequest(R"({"input": [4, 5, 6]})", Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->inputs.size(), 1u);
  EXPECT_THAT(r->inputs[0].prompt_token_ids, ElementsAre(4, 5, 6));

  EXPECT_EQ(ClassifyError(R"({"model": "cls"})"), "input");
  EXPECT_EQ(ClassifyError(R"({"input": []})"), "input");
  EXPECT_EQ(ClassifyError(R"({"input": {"a": 1}})"), "input");
  EXPECT_EQ(ClassifyError(R"({"input": ["a", [1]]})"), "input[1]");
  EXPECT_EQ(ClassifyError(R"({"input": [1, -2]})"), "input");
  EXPECT_EQ(ClassifyError(R"({"input": [[1], []]})"), "input[1]");
  EXPECT_EQ(ClassifyError(R"({"input": [1], "model": 3})"), "model");
  EXPECT_EQ(ClassifyError(R"({"input": [1], "add_special_tokens": 1})"), "add_special_tokens");
  EXPECT_EQ(ClassifyError(R"({"input": [1], "truncate_prompt_tokens": 3})"), "truncate_prompt_tokens");
  EXPECT_EQ(ClassifyError("[1]"), "<none>");
  std::string many = R"({"input": [[1])";
  for (int i = 0; i < 64; ++i) many += ", [1]";
  EXPECT_EQ(ClassifyError(many + "]}"), "input");  // 65 > max_choices
  absl::StatusOr<ClassifyApiRequest> bad = ParseClassifyRequest(R"({"input": 7})", Limits());
  EXPECT_THAT(bad.status().message(), HasSubstr("input must be a string"));
}

TEST(HttpErrorTest, StatusesMapToHttpAndOpenAiBodies) {
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);

  HttpResponse r = ErrorResponse(WithParam(absl::NotFoundError("no such model"), "model"));
  EXPECT_EQ(r.status, 404);
  nlohmann::json body = nlohmann::json::parse(r.body);
  EXPECT_EQ(body["error"]["message"], "no such model");
  EXPECT_EQ(body["error"]["param"], "model");
  EXPECT_EQ(body["error"]["type"], "not_found_error");
  EXPECT_EQ(body["error"]["code"], 404);

  r = ErrorResponse(absl::UnauthenticatedError("token"));
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(nlohmann::json::parse(r.body)["error"]["param"].is_null());
  EXPECT_THAT(r.headers, ::testing::Contains(std::make_pair(std::string("WWW-Authenticate"), std::string("Bearer"))));
}

}  // namespace
}  // namespace adapterd::http
