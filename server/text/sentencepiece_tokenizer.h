// A tokenizer stored as a SentencePiece model (tokenizer.model), BPE or
// unigram, run by Debian's libsentencepiece.
#ifndef ADAPTERD_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_
#define ADAPTERD_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/tokenizer_backend.h"

namespace adapterd::text {

class SentencePieceModel;

// Encodes with `SentencePieceProcessor::Encode`, then adds BOS / EOS as
// asked; decodes exactly as `SentencePieceProcessor::Decode` does (control
// pieces vanish, the unknown piece shows its surface, byte pieces are joined
// into characters, the leading space of the text is dropped), but as a
// stream. Special ids are the control and unknown pieces. Immutable once
// loaded and thread-safe.
class SentencePieceTokenizer : public TokenizerBackend {
 public:
  // `model` is the serialized ModelProto; errors name `label`.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> FromModel(std::string_view model,
                                                                            const std::string& label,
                                                                            bool add_bos, bool add_eos);
  ~SentencePieceTokenizer() override;

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const override;
  std::unique_ptr<TokenStream> NewDecodeStream(bool skip_special_tokens) const override;
  int64_t vocab_size() const override;
  bool IsSpecial(int32_t id) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string> IdToToken(int32_t id) const override;

  // How the decoder treats one id.
  enum class PieceKind { kNormal, kControl, kUnknown, kByte };
  struct PieceInfo {
    PieceKind kind;
    int byte;           // kByte: the byte value
    std::string piece;  // kNormal: the piece
  };
  const PieceInfo* Info(int32_t id) const;
  const std::string& unk_surface() const { return unk_surface_; }
  bool strip_leading_space() const { return strip_leading_space_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }

 private:
  SentencePieceTokenizer();
  std::unique_ptr<SentencePieceModel> sp_;
  std::vector<PieceInfo> pieces_;
  std::string unk_surface_;
  bool strip_leading_space_ = true;
  bool add_bos_ = true, add_eos_ = false;
  int32_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_
