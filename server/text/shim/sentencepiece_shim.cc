// libadapterd_sentencepiece.so: libsentencepiece behind a C entry table.
// Loaded with dlopen (see server/text/sentencepiece_model.h); no Abseil
// header may be included here.
#include <sentencepiece_processor.h>

#include "server/text/sentencepiece_api.h"

namespace {

using Processor = sentencepiece::SentencePieceProcessor;
const Processor* P(const void* m) { return static_cast<const Processor*>(m); }

const AdapterdSentencePieceApi kApi = {
    kAdapterdSentencePieceApiVersion,
    []() -> void* { return new Processor(); },
    [](void* m) { delete static_cast<Processor*>(m); },
    [](void* m, const char* data, size_t size, std::string* error) {
      const auto s = static_cast<Processor*>(m)->LoadFromSerializedProto(std::string_view(data, size));
      if (!s.ok()) *error = s.ToString();
      return s.ok();
    },
    [](const void* m, const char* text, size_t size, std::vector<int>* ids, std::string* error) {
      const auto s = P(m)->Encode(std::string_view(text, size), ids);
      if (!s.ok()) *error = s.ToString();
      return s.ok();
    },
    [](const void* m, const std::vector<int>* ids, std::string* out) { *out = P(m)->DecodeIds(*ids); },
    [](const void* m) { return P(m)->GetPieceSize(); },
    [](const void* m, int id, std::string* out) { *out = P(m)->IdToPiece(id); },
    [](const void* m, const char* piece, size_t size) { return P(m)->PieceToId(std::string_view(piece, size)); },
    [](const void* m, int id) {
      return (P(m)->IsControl(id) ? 1 : 0) | (P(m)->IsUnknown(id) ? 2 : 0) | (P(m)->IsByte(id) ? 4 : 0);
    },
    [](const void* m, int which) {
      return which == 0 ? P(m)->unk_id() : which == 1 ? P(m)->bos_id() : P(m)->eos_id();
    },
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const AdapterdSentencePieceApi* adapterd_sentencepiece_api() {
  return &kApi;
}
