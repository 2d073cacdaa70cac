#include "server/text/tokenizer.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"
#include "server/text/hf_tokenizer.h"
#include "server/text/sentencepiece_tokenizer.h"
#include "server/text/space_cleanup.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {
namespace {

class CleanupStream : public TokenStream {
 public:
  explicit CleanupStream(std::unique_ptr<TokenStream> inner) : inner_(std::move(inner)) {}
  void Push(int32_t id, std::string* out) override {
    text_.clear();
    inner_->Push(id, &text_);
    if (!text_.empty()) cleanup_.Push(text_, out);
  }
  void Finish(std::string* out) override {
    text_.clear();
    inner_->Finish(&text_);
    cleanup_.Push(text_, out);
    cleanup_.Finish(out);
  }

 private:
  std::unique_ptr<TokenStream> inner_;
  SpaceCleanup cleanup_;
  std::string text_;
};

// The file's bytes, or an empty string when it does not exist.
absl::StatusOr<std::string> ReadOptional(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::string();
  return ReadFileToString(path.string());
}

absl::Status Prefixed(const std::string& label, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(label, ": ", s.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  absl::StatusOr<std::string> config = ReadOptional(root / "tokenizer_config.json");
  if (!config.ok()) return config.status();
  absl::StatusOr<std::string> jinja = ReadOptional(root / "chat_template.jinja");
  if (!jinja.ok()) return jinja.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> t;
  std::error_code ec;
  if (fs::exists(root / "tokenizer.json", ec)) {
    absl::StatusOr<std::string> json = ReadFileToString((root / "tokenizer.json").string());
    if (!json.ok()) return json.status();
    t = FromJson(*json, *config, (root / "tokenizer.json").string());
  } else if (fs::exists(root / "tokenizer.model", ec)) {
    absl::StatusOr<std::string> model = ReadFileToString((root / "tokenizer.model").string());
    if (!model.ok()) return model.status();
    t = FromSentencePiece(*model, *config, (root / "tokenizer.model").string());
  } else {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, ": has neither tokenizer.json nor tokenizer.model"));
  }
  if (!t.ok()) return t.status();
  if (fs::exists(root / "chat_template.jinja", ec)) (*t)->config_.chat_template = *std::move(jinja);
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                               std::string_view tokenizer_config_json,
                                                               std::string label) {
  absl::StatusOr<TokenizerConfig> config =
      TokenizerConfig::FromJson(tokenizer_config_json, label + " (tokenizer_config.json)");
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<HfTokenizer>> hf = HfTokenizer::FromJson(tokenizer_json);
  if (!hf.ok()) return Prefixed(label, hf.status());
  auto t = std::unique_ptr<Tokenizer>(new Tokenizer());
  t->config_ = *std::move(config);
  t->label_ = std::move(label);
  HfTokenizer* backend = hf->get();
  t->backend_ = *std::move(hf);
  t->ResolveTokenIds();
  if (t->config_.RebuildsTemplate()) {
    // transformers' LlamaTokenizerFast.update_post_processor.
    const bool add_bos = t->config_.add_bos_token.value_or(true);
    const bool add_eos = t->config_.add_eos_token.value_or(false);
    std::vector<int32_t> prefix, suffix;
    for (auto [add, name, token, id, out] :
         {std::tuple{add_bos, "bos_token", &t->config_.bos_token, &t->config_.bos_token_id, &prefix},
          std::tuple{add_eos, "eos_token", &t->config_.eos_token, &t->config_.eos_token_id, &suffix}}) {
      if (!add) continue;
      if (!token->has_value() || !id->has_value()) {
        return absl::InvalidArgumentError(absl::StrCat(
            t->label_, " (tokenizer_config.json): add_", name, " is true but ", name,
            token->has_value() ? absl::StrCat(" \"", **token, "\" is not in the vocabulary") : " is not set"));
      }
      out->push_back(**id);
    }
    backend->SetPostProcessor(PostProcessor::Wrap(std::move(prefix), std::move(suffix)));
  }
  t->clean_up_spaces_ = t->config_.clean_up_tokenization_spaces.value_or(false);
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSentencePiece(std::string_view model,
                                                                        std::string_view tokenizer_config_json,
                                                                        std::string label) {
  absl::StatusOr<TokenizerConfig> config =
      TokenizerConfig::FromJson(tokenizer_config_json, label + " (tokenizer_config.json)");
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> sp = SentencePieceTokenizer::FromModel(
      model, label, config->add_bos_token.value_or(true), config->add_eos_token.value_or(false));
  if (!sp.ok()) return sp.status();
  auto t = std::unique_ptr<Tokenizer>(new Tokenizer());
  t->config_ = *std::move(config);
  t->label_ = std::move(label);
  const SentencePieceTokenizer* backend = sp->get();
  t->backend_ = *std::move(sp);
  t->ResolveTokenIds();
  if (!t->config_.bos_token_id && backend->bos_id() >= 0) t->config_.bos_token_id = backend->bos_id();
  if (!t->config_.eos_token_id && backend->eos_id() >= 0) t->config_.eos_token_id = backend->eos_id();
  t->clean_up_spaces_ = t->config_.clean_up_tokenization_spaces.value_or(false);
  return t;
}

void Tokenizer::ResolveTokenIds() {
  for (auto [token, id] : {std::pair{&config_.bos_token, &config_.bos_token_id},
                           std::pair{&config_.eos_token, &config_.eos_token_id},
                           std::pair{&config_.pad_token, &config_.pad_token_id},
                           std::pair{&config_.unk_token, &config_.unk_token_id}}) {
    if (token->has_value()) *id = backend_->TokenToId(**token);
  }
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  if (std::optional<size_t> bad = FindInvalidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8: ill-formed sequence at byte offset ",
                                                   *bad, " of ", text.size()));
  }
  absl::StatusOr<std::vector<int32_t>> ids = backend_->Encode(text, add_special_tokens);
  if (!ids.ok()) return Prefixed(label_, ids.status());
  return ids;
}

std::unique_ptr<TokenStream> Tokenizer::NewDecodeStream(bool skip_special_tokens) const {
  std::unique_ptr<TokenStream> s = backend_->NewDecodeStream(skip_special_tokens);
  if (!clean_up_spaces_) return s;
  return std::make_unique<CleanupStream>(std::move(s));
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::unique_ptr<TokenStream> s = NewDecodeStream(skip_special_tokens);
  std::string out;
  for (int32_t id : ids) s->Push(id, &out);
  s->Finish(&out);
  return out;
}

}  // namespace adapterd::text
