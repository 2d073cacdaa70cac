#include "server/text/sentencepiece_tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/text/sentencepiece_model.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

int HexByte(std::string_view piece) {  // "<0xXX>"
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int v = 0;
  for (char c : piece.substr(3, 2)) {
    v *= 16;
    if (c >= '0' && c <= '9') v += c - '0';
    else if (c >= 'A' && c <= 'F') v += c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') v += c - 'a' + 10;
    else return -1;
  }
  return v;
}

// SentencePiece's decoder (as of sentencepiece 0.2.1) as a stream: the first
// piece that is not a control piece loses a leading space symbol. A run of
// byte pieces is decoded one
// character at a time, each ill-formed byte as U+FFFD; only a tail that a
// later byte could complete is held back.
class SentencePieceDecodeStream : public TokenStream {
 public:
  SentencePieceDecodeStream(const SentencePieceTokenizer& t, bool skip_special) : t_(t), skip_(skip_special) {}

  void Push(int32_t id, std::string* out) override {
    const SentencePieceTokenizer::PieceInfo* info = t_.Info(id);
    if (info == nullptr || (skip_ && t_.IsSpecial(id))) return;
    // Only the first piece that is not a control piece loses its space.
    const bool first = !seen_piece_ && info->kind != SentencePieceTokenizer::PieceKind::kControl;
    if (info->kind != SentencePieceTokenizer::PieceKind::kControl) seen_piece_ = true;
    if (info->kind == SentencePieceTokenizer::PieceKind::kByte) {
      bytes_.push_back(static_cast<char>(info->byte));
      DecodeBytes(/*final=*/false, out);
      return;
    }
    DecodeBytes(/*final=*/true, out);
    switch (info->kind) {
      case SentencePieceTokenizer::PieceKind::kControl:
        return;
      case SentencePieceTokenizer::PieceKind::kUnknown:
        return Emit(t_.unk_surface(), out);
      default:
        break;
    }
    std::string_view piece = info->piece;
    if (first && t_.strip_leading_space() && piece.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
      piece.remove_prefix(kSpaceSymbol.size());
    }
    std::string text;
    for (size_t pos = 0; pos < piece.size();) {
      if (piece.substr(pos, kSpaceSymbol.size()) == kSpaceSymbol) {
        text.push_back(' ');
        pos += kSpaceSymbol.size();
      } else {
        text.push_back(piece[pos++]);
      }
    }
    Emit(text, out);
  }

  void Finish(std::string* out) override { DecodeBytes(/*final=*/true, out); }

 private:
  void Emit(std::string_view s, std::string* out) { out->append(s); }
  void DecodeBytes(bool final, std::string* out) {
    const size_t keep = final ? 0 : IncompleteUtf8Suffix(bytes_);
    const std::string_view b(bytes_.data(), bytes_.size() - keep);
    std::string text;
    size_t pos = 0;
    while (pos < b.size()) {
      const std::optional<size_t> bad = FindInvalidUtf8(b.substr(pos, std::min<size_t>(4, b.size() - pos)));
      const size_t len = Utf8SequenceLength(static_cast<unsigned char>(b[pos]));
      if (bad.has_value() && *bad < len) {  // the character at pos is ill-formed
        text.append(kReplacementChar);
        ++pos;
      } else {
        text.append(b.substr(pos, len));
        pos += len;
      }
    }
    bytes_.erase(0, b.size());
    Emit(text, out);
  }

  const SentencePieceTokenizer& t_;
  bool skip_;
  bool seen_piece_ = false;
  std::string bytes_;
};

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer() : sp_(std::make_unique<SentencePieceModel>()) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::FromModel(
    std::string_view model, const std::string& label, bool add_bos, bool add_eos) {
  auto t = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
  std::string error;
  if (!SentencePieceModel::Supported()) {
    return absl::FailedPreconditionError(absl::StrCat(label, ": SentencePiece is not available in sanitizer builds"));
  }
  if (!t->sp_->Load(model, &error)) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a SentencePiece model: ", error));
  }
  const int n = t->sp_->size();
  t->pieces_.resize(n);
  int32_t probe = -1;  // a normal piece that starts with the space symbol
  for (int id = 0; id < n; ++id) {
    PieceInfo& info = t->pieces_[id];
    info.piece = t->sp_->Piece(id);
    info.byte = -1;
    if (t->sp_->IsControl(id)) {
      info.kind = PieceKind::kControl;
    } else if (t->sp_->IsUnknown(id)) {
      info.kind = PieceKind::kUnknown;
    } else if (t->sp_->IsByte(id) && HexByte(info.piece) >= 0) {
      info.kind = PieceKind::kByte;
      info.byte = HexByte(info.piece);
    } else {
      info.kind = PieceKind::kNormal;
      if (probe < 0 && info.piece.size() > kSpaceSymbol.size() && info.piece.rfind(kSpaceSymbol, 0) == 0) probe = id;
    }
  }
  // Whether the first piece loses its space depends on the normalizer spec;
  // the library's own decoder says which.
  if (probe >= 0) t->strip_leading_space_ = t->sp_->Decode({probe}).rfind(' ', 0) != 0;
  if (t->sp_->unk_id() >= 0) t->unk_surface_ = t->sp_->Decode({t->sp_->unk_id()});
  t->bos_id_ = t->sp_->bos_id();
  t->eos_id_ = t->sp_->eos_id();
  t->add_bos_ = add_bos;
  t->add_eos_ = add_eos;
  return t;
}

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(std::string_view text,
                                                                    bool add_special_tokens) const {
  std::vector<int> ids;
  std::string error;
  if (!sp_->Encode(text, &ids, &error)) return absl::InternalError(absl::StrCat("SentencePiece encode failed: ", error));
  std::vector<int32_t> out;
  out.reserve(ids.size() + 2);
  if (add_special_tokens && add_bos_ && bos_id_ >= 0) out.push_back(bos_id_);
  out.insert(out.end(), ids.begin(), ids.end());
  if (add_special_tokens && add_eos_ && eos_id_ >= 0) out.push_back(eos_id_);
  return out;
}

std::unique_ptr<TokenStream> SentencePieceTokenizer::NewDecodeStream(bool skip_special_tokens) const {
  return std::make_unique<SentencePieceDecodeStream>(*this, skip_special_tokens);
}

int64_t SentencePieceTokenizer::vocab_size() const { return static_cast<int64_t>(pieces_.size()); }

const SentencePieceTokenizer::PieceInfo* SentencePieceTokenizer::Info(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) return nullptr;
  return &pieces_[id];
}

bool SentencePieceTokenizer::IsSpecial(int32_t id) const {
  const PieceInfo* info = Info(id);
  return info != nullptr && (info->kind == PieceKind::kControl || info->kind == PieceKind::kUnknown);
}

std::optional<int32_t> SentencePieceTokenizer::TokenToId(std::string_view token) const {
  const int id = sp_->PieceToId(token);
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size() || pieces_[id].piece != token) return std::nullopt;
  return id;
}

std::optional<std::string> SentencePieceTokenizer::IdToToken(int32_t id) const {
  const PieceInfo* info = Info(id);
  if (info == nullptr) return std::nullopt;
  return info->piece;
}

}  // namespace adapterd::text
