#include "server/text/hf_tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace adapterd::text {
namespace {

class HfDecodeStream : public TokenStream {
 public:
  HfDecodeStream(const HfTokenizer& tokenizer, bool skip_special)
      : tokenizer_(tokenizer), stream_(tokenizer.decoder()), skip_special_(skip_special) {}
  void Push(int32_t id, std::string* out) override {
    const std::string* token = tokenizer_.TokenString(id);
    if (token == nullptr || (skip_special_ && tokenizer_.IsSpecial(id))) return;
    stream_.Push(*token, out);
  }
  void Finish(std::string* out) override { stream_.Finish(out); }

 private:
  const HfTokenizer& tokenizer_;
  Decoder::Stream stream_;
  bool skip_special_;
};

absl::StatusOr<Json> ParseJson(std::string_view text) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("is not valid JSON: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(std::string_view text) {
  absl::StatusOr<Json> parsed = ParseJson(text);
  if (!parsed.ok()) return parsed.status();
  const Json& j = *parsed;
  if (!j.is_object()) return absl::InvalidArgumentError("is not a JSON object");
  auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  static const Json kNull;
  auto member = [&](const char* key) -> const Json& {
    const Json* m = JsonMember(j, key);
    return m == nullptr ? kNull : *m;
  };
  // `truncation` and `padding` are ignored, as transformers resets both on
  // every call that does not ask for them.
  absl::StatusOr<std::unique_ptr<Normalizer>> normalizer = Normalizer::FromJson(member("normalizer"), "normalizer");
  if (!normalizer.ok()) return normalizer.status();
  t->normalizer_ = *std::move(normalizer);
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre = PreTokenizer::FromJson(member("pre_tokenizer"), "pre_tokenizer");
  if (!pre.ok()) return pre.status();
  t->pre_tokenizer_ = *std::move(pre);
  const Json& model = member("model");
  if (model.is_null()) return JsonError("model", "is missing");
  if (!model.is_object()) return JsonError("model", "must be an object");
  absl::StatusOr<std::optional<std::string>> type = OptionalString(model, "type", "model");
  if (!type.ok()) return type.status();
  if (type->has_value() ? **type != "BPE" : JsonMember(model, "merges") == nullptr) {
    return Unsupported("model", type->value_or("(untyped, without merges)"));
  }
  absl::StatusOr<std::unique_ptr<BpeModel>> bpe = BpeModel::FromJson(model, "model");
  if (!bpe.ok()) return bpe.status();
  t->model_ = *std::move(bpe);
  absl::StatusOr<std::unique_ptr<PostProcessor>> post = PostProcessor::FromJson(member("post_processor"), "post_processor");
  if (!post.ok()) return post.status();
  t->post_processor_ = *std::move(post);
  absl::StatusOr<std::unique_ptr<Decoder>> decoder = Decoder::FromJson(member("decoder"), "decoder");
  if (!decoder.ok()) return decoder.status();
  t->decoder_ = *std::move(decoder);
  const Json* added_json = JsonMember(j, "added_tokens");
  absl::StatusOr<std::unique_ptr<AddedVocabulary>> added =
      AddedVocabulary::FromJson(added_json, "added_tokens", *t->normalizer_);
  if (!added.ok()) return added.status();
  t->added_ = *std::move(added);
  return t;
}

absl::Status HfTokenizer::EncodePiece(std::string text, bool at_start, std::vector<int32_t>* ids) const {
  std::vector<Piece> pieces;
  pieces.push_back({std::move(text), at_start});
  if (absl::Status s = pre_tokenizer_->Apply(&pieces); !s.ok()) return s;
  for (const Piece& p : pieces) {
    if (absl::Status s = model_->Tokenize(p.text, ids); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  std::vector<AddedVocabulary::Segment> raw, normalized;
  added_->Split(text, /*normalized=*/false, &raw);
  for (const AddedVocabulary::Segment& seg : raw) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    if (seg.end == seg.begin) continue;
    std::string piece(text.substr(seg.begin, seg.end - seg.begin));
    if (absl::Status s = normalizer_->Apply(&piece); !s.ok()) return s;
    if (piece.empty()) continue;
    normalized.clear();
    added_->Split(piece, /*normalized=*/true, &normalized);
    for (const AddedVocabulary::Segment& sub : normalized) {
      if (sub.id >= 0) {
        ids.push_back(sub.id);
      } else if (sub.end > sub.begin) {
        absl::Status s = EncodePiece(piece.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0, &ids);
        if (!s.ok()) return s;
      }
    }
  }
  if (add_special_tokens) ids = post_processor_->Apply(std::move(ids));
  return ids;
}

std::unique_ptr<TokenStream> HfTokenizer::NewDecodeStream(bool skip_special_tokens) const {
  return std::make_unique<HfDecodeStream>(*this, skip_special_tokens);
}

int64_t HfTokenizer::vocab_size() const {
  int64_t n = model_->size();
  for (const AddedToken& t : added_->tokens()) n = std::max<int64_t>(n, t.id + 1);
  return n;
}

bool HfTokenizer::IsSpecial(int32_t id) const {
  const AddedToken* t = added_->ById(id);
  return t != nullptr && t->special;
}

std::optional<int32_t> HfTokenizer::TokenToId(std::string_view token) const {
  if (std::optional<int32_t> id = added_->IdOf(token)) return id;
  return model_->TokenToId(token);
}

const std::string* HfTokenizer::TokenString(int32_t id) const {
  if (const AddedToken* t = added_->ById(id)) return &t->content;
  return model_->IdToToken(id);
}

std::optional<std::string> HfTokenizer::IdToToken(int32_t id) const {
  const std::string* s = TokenString(id);
  if (s == nullptr) return std::nullopt;
  return *s;
}

}  // namespace adapterd::text
