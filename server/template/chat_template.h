// Hugging Face chat templates: the subset of jinja2 they use, rendered the way
// transformers' apply_chat_template renders them (jinja2's
// ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop
// controls; transformers' tojson, raise_exception and strftime_now).
//
// ChatTemplate::Parse reads a template once; constructs outside the subset
// are INVALID_ARGUMENT naming the construct, its line and column. Render
// fills it with a JSON context. A ChatTemplate is immutable after Parse and
// cheap to copy (copies share the parsed tree); Render is thread-safe.
//
// Errors from Render are INVALID_ARGUMENT. A template's own
// raise_exception(message) yields exactly `message`; every other error reads
// "chat template line N: ..." and names the construct (a filter, a method,
// an operator, an undefined name) or the limit that was exceeded.
#ifndef ADAPTERD_SERVER_TEMPLATE_CHAT_TEMPLATE_H_
#define ADAPTERD_SERVER_TEMPLATE_CHAT_TEMPLATE_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/template/render_state.h"
#include "server/template/template_ast.h"

namespace adapterd::tmpl {

class ChatTemplate {
 public:
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source, const TemplateLimits& limits = {});

  // `context` must be a JSON object; its keys become template variables
  // (messages, add_generation_prompt, bos_token, ...). Object key order is
  // kept, as `tojson` and `items` expose it (a nlohmann::json converts, with
  // its keys sorted).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;

  const TemplateLimits& limits() const { return limits_; }

 private:
  ChatTemplate(std::shared_ptr<const Body> body, const TemplateLimits& limits)
      : body_(std::move(body)), limits_(limits) {}

  std::shared_ptr<const Body> body_;
  TemplateLimits limits_;
};

// Renders a conversation as transformers' apply_chat_template(messages,
// tools=tools, tokenize=False, add_generation_prompt=...) does for a tokenizer
// whose special tokens are `bos_token` and `eos_token`: the template sees
// messages, tools (none when not given), documents (none),
// add_generation_prompt, bos_token and eos_token.
//
// `messages` must be an array of objects, each with a string "role";
// anything else is INVALID_ARGUMENT naming the message. A template that
// rejects a conversation (an unknown role, roles out of order) through
// raise_exception yields INVALID_ARGUMENT with exactly its message.
absl::StatusOr<std::string> RenderChat(const ChatTemplate& t, const nlohmann::ordered_json& messages,
                                       bool add_generation_prompt, const std::string& bos_token,
                                       const std::string& eos_token,
                                       const nlohmann::ordered_json* tools = nullptr);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_CHAT_TEMPLATE_H_
