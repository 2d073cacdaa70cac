#include "server/text/sentencepiece_model.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "server/text/sentencepiece_api.h"

#ifndef ADAPTERD_SENTENCEPIECE_LIB
#define ADAPTERD_SENTENCEPIECE_LIB ""
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ADAPTERD_NO_DEEPBIND 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ADAPTERD_NO_DEEPBIND 1
#endif
#endif

namespace adapterd::text {
namespace {

constexpr char kShimName[] = "libadapterd_sentencepiece.so";

struct Shim {
  const AdapterdSentencePieceApi* api = nullptr;
  std::string error;
};

const Shim& LoadShim() {
  static const Shim* shim = [] {
    auto* s = new Shim();
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("ADAPTERD_SENTENCEPIECE_LIB"); env != nullptr && *env) candidates.push_back(env);
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      candidates.push_back((exe.parent_path() / kShimName).string());
      candidates.push_back((exe.parent_path() / "../lib/adapterd" / kShimName).string());
    }
    if (*ADAPTERD_SENTENCEPIECE_LIB) candidates.push_back(ADAPTERD_SENTENCEPIECE_LIB);
    int flags = RTLD_NOW | RTLD_LOCAL;
#ifndef ADAPTERD_NO_DEEPBIND
    flags |= RTLD_DEEPBIND;
#endif
    std::string tried;
    for (const std::string& path : candidates) {
      if (!std::filesystem::exists(path, ec)) {
        tried += " " + path;
        continue;
      }
      void* handle = dlopen(path.c_str(), flags);
      if (handle == nullptr) {
        s->error = std::string("could not open ") + path + ": " + dlerror();
        return s;
      }
      auto fn = reinterpret_cast<AdapterdSentencePieceApiFn>(dlsym(handle, kAdapterdSentencePieceApiSymbol));
      if (fn == nullptr || fn()->version != kAdapterdSentencePieceApiVersion) {
        s->error = path + " is not a compatible SentencePiece shim";
        return s;
      }
      s->api = fn();
      return s;
    }
    s->error = std::string(kShimName) + " (SentencePiece support) not found; looked at" + tried;
    return s;
  }();
  return *shim;
}

}  // namespace

bool SentencePieceModel::Supported() {
#ifdef ADAPTERD_NO_DEEPBIND
  return false;
#else
  return true;
#endif
}

SentencePieceModel::~SentencePieceModel() {
  if (model_ != nullptr) api_->destroy(model_);
}

bool SentencePieceModel::Load(std::string_view serialized, std::string* error) {
  if (!Supported()) {
    *error = "SentencePiece is not available in sanitizer builds (its library needs RTLD_DEEPBIND)";
    return false;
  }
  const Shim& shim = LoadShim();
  if (shim.api == nullptr) {
    *error = shim.error;
    return false;
  }
  api_ = shim.api;
  if (model_ == nullptr) model_ = api_->create();
  return api_->load(model_, serialized.data(), serialized.size(), error);
}

bool SentencePieceModel::Encode(std::string_view text, std::vector<int>* ids, std::string* error) const {
  return api_->encode(model_, text.data(), text.size(), ids, error);
}

std::string SentencePieceModel::Decode(const std::vector<int>& ids) const {
  std::string out;
  api_->decode(model_, &ids, &out);
  return out;
}

int SentencePieceModel::size() const { return api_->size(model_); }

std::string SentencePieceModel::Piece(int id) const {
  std::string out;
  api_->piece(model_, id, &out);
  return out;
}

int SentencePieceModel::PieceToId(std::string_view piece) const {
  return api_->piece_to_id(model_, piece.data(), piece.size());
}

bool SentencePieceModel::IsControl(int id) const { return (api_->kind(model_, id) & 1) != 0; }
bool SentencePieceModel::IsUnknown(int id) const { return (api_->kind(model_, id) & 2) != 0; }
bool SentencePieceModel::IsByte(int id) const { return (api_->kind(model_, id) & 4) != 0; }
int SentencePieceModel::unk_id() const { return api_->special_id(model_, 0); }
int SentencePieceModel::bos_id() const { return api_->special_id(model_, 1); }
int SentencePieceModel::eos_id() const { return api_->special_id(model_, 2); }

}  // namespace adapterd::text
