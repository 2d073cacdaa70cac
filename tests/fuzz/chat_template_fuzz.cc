// libFuzzer target: chat template source. Any bytes are parsed as a template;
// a template that parses is rendered with a fixed conversation (system, user,
// assistant with tool calls, tool result) and tools, under tight limits. Both
// must accept or reject with a status, never crash, hang, overflow the stack
// or leak (namespace cycles included).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "nlohmann/json.hpp"
#include "server/template/chat_template.h"

namespace {

const nlohmann::ordered_json& Context() {
  static const nlohmann::ordered_json* context = new nlohmann::ordered_json(nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Weather in Zürich? {{ not a tag }}"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2, "ratio": 0.5}}}]},
      {"role": "tool", "name": "get_weather", "content": "21.5 °C"},
      {"role": "user", "content": [{"type": "text", "text": "Thanks"}, {"type": "image"}]}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "documents": null,
    "add_generation_prompt": true,
    "bos_token": "<s>",
    "eos_token": "</s>"
  })"));
  return *context;
}

adapterd::tmpl::TemplateLimits Limits() {
  adapterd::tmpl::TemplateLimits limits;
  limits.max_output_bytes = 1 << 16;
  limits.max_loop_iterations = 20000;
  limits.max_value_nodes = 100000;
  limits.max_work = 1 << 24;
  return limits;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  static const adapterd::tmpl::TemplateLimits limits = Limits();
  auto parsed = adapterd::tmpl::ChatTemplate::Parse(source, limits);
  if (parsed.ok()) (void)parsed->Render(Context());
  return 0;
}
