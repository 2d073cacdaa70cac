// libFuzzer target: arbitrary bytes as tokenizer.json (and, from the same
// bytes, tokenizer_config.json). Loading must accept or reject with a
// status, never crash, hang or read out of bounds; a tokenizer that loads
// must encode and decode a few fixed texts safely.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "server/text/incremental_decoder.h"
#include "server/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto t = adapterd::text::Tokenizer::FromJson(text, "", "fuzz/tokenizer.json");
  (void)adapterd::text::Tokenizer::FromJson(
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})", text, "fuzz/tokenizer.json");
  if (!t.ok()) return 0;
  for (const char* s : {"", "Hello world", "  a\tb\n\n<s></s>", "\xE2\x82\xAC\xF0\x9F\x98\x80 12345 don't"}) {
    auto ids = (*t)->Encode(s, true);
    if (!ids.ok()) continue;
    for (bool skip : {false, true}) {
      const std::string whole = (*t)->Decode(*ids, skip);
      adapterd::text::IncrementalDecoder dec(**t, skip);
      std::string streamed;
      for (int32_t id : *ids) streamed += dec.Push(id);
      streamed += dec.Finish();
      if (streamed != whole) __builtin_trap();
    }
  }
  const int64_t n = (*t)->vocab_size();
  std::vector<int32_t> ids = {-1, 0, 1, static_cast<int32_t>(n - 1), static_cast<int32_t>(n), 1 << 30};
  (void)(*t)->Decode(ids, false);
  return 0;
}
