// The C entry table of libadapterd_sentencepiece.so, the shim through which
// the text layer reaches libsentencepiece (see sentencepiece_model.h for
// why). Uses only standard types, so that it can be included on both sides.
#ifndef ADAPTERD_SERVER_TEXT_SENTENCEPIECE_API_H_
#define ADAPTERD_SERVER_TEXT_SENTENCEPIECE_API_H_

#include <cstddef>
#include <string>
#include <vector>

extern "C" {

struct AdapterdSentencePieceApi {
  int version;  // kAdapterdSentencePieceApiVersion
  void* (*create)();
  void (*destroy)(void* model);
  bool (*load)(void* model, const char* data, size_t size, std::string* error);
  bool (*encode)(const void* model, const char* text, size_t size, std::vector<int>* ids, std::string* error);
  void (*decode)(const void* model, const std::vector<int>* ids, std::string* out);
  int (*size)(const void* model);
  void (*piece)(const void* model, int id, std::string* out);
  int (*piece_to_id)(const void* model, const char* piece, size_t size);
  // Bit 0: control; bit 1: unknown; bit 2: byte.
  int (*kind)(const void* model, int id);
  // 0: unk, 1: bos, 2: eos; -1 when the model has none.
  int (*special_id)(const void* model, int which);
};

// The shim's one exported symbol.
typedef const AdapterdSentencePieceApi* (*AdapterdSentencePieceApiFn)();
}

inline constexpr int kAdapterdSentencePieceApiVersion = 1;
inline constexpr char kAdapterdSentencePieceApiSymbol[] = "adapterd_sentencepiece_api";

#endif  // ADAPTERD_SERVER_TEXT_SENTENCEPIECE_API_H_
