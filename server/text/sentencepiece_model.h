// libsentencepiece, reached through a shim library loaded at first use.
//
// Debian's libsentencepiece carries its own copy of protobuf-lite and
// exports it. Linked into a process that also has libprotobuf (gRPC, LibTorch
// do), one copy's symbols replace the other's and the process crashes at
// start-up. So the library is only linked into libadapterd_sentencepiece.so,
// which is opened with RTLD_LOCAL (its symbols stay out of the process's
// namespace) and RTLD_DEEPBIND (it binds to its own protobuf first). Its
// header is not included here either: it declares absl::string_view itself,
// which clashes with Debian's Abseil. Sanitizer runtimes refuse
// RTLD_DEEPBIND, and without it the library's protobuf binds to the
// process's and aborts, so sanitizer builds have no SentencePiece support.
#ifndef ADAPTERD_SERVER_TEXT_SENTENCEPIECE_MODEL_H_
#define ADAPTERD_SERVER_TEXT_SENTENCEPIECE_MODEL_H_

#include <string>
#include <string_view>
#include <vector>

struct AdapterdSentencePieceApi;

namespace adapterd::text {

// A loaded SentencePiece model. Immutable once loaded; its const methods are
// thread-safe. The shim is searched for in $ADAPTERD_SENTENCEPIECE_LIB, beside
// the executable, in ../lib/adapterd/ from it, and where the build put it.
class SentencePieceModel {
 public:
  SentencePieceModel() = default;
  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  // False in sanitizer builds, where the shim cannot be opened safely.
  static bool Supported();

  // Loads a serialized ModelProto; on failure (including a missing shim or
  // an unsupported build) returns false and sets `error`.
  bool Load(std::string_view serialized, std::string* error);
  // On failure returns false and sets `error`.
  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const;
  std::string Decode(const std::vector<int>& ids) const;

  int size() const;
  std::string Piece(int id) const;
  int PieceToId(std::string_view piece) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  int unk_id() const;
  int bos_id() const;
  int eos_id() const;

 private:
  const AdapterdSentencePieceApi* api_ = nullptr;
  void* model_ = nullptr;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_SENTENCEPIECE_MODEL_H_
