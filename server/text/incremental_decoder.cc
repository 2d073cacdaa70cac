#include "server/text/incremental_decoder.h"

namespace adapterd::text {

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : stream_(tokenizer.NewDecodeStream(skip_special_tokens)) {}

std::string IncrementalDecoder::Push(int32_t id) {
  std::string delta;
  if (!finished_) stream_->Push(id, &delta);
  return delta;
}

std::string IncrementalDecoder::Finish() {
  std::string rest;
  if (!finished_) stream_->Finish(&rest);
  finished_ = true;
  return rest;
}

}  // namespace adapterd::text
