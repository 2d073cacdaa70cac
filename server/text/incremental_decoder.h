// Streaming detokenization for one request.
#ifndef ADAPTERD_SERVER_TEXT_INCREMENTAL_DECODER_H_
#define ADAPTERD_SERVER_TEXT_INCREMENTAL_DECODER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "server/text/tokenizer.h"

namespace adapterd::text {

// Turns generated ids into text deltas. Push(id) returns the text that `id`
// makes final; Finish() returns the rest. The concatenation of every delta
// and Finish() always equals tokenizer.Decode(all pushed ids,
// skip_special_tokens), and no delta ends inside a UTF-8 sequence: byte
// tokens are held until their character is complete (or can no longer be),
// SentencePiece's leading space is dropped only at the start, and a tail
// that a later token could still change (an unfinished run of byte tokens,
// a space that clean-up may remove) is held back. Each Push costs time in
// the length of its own token, not of the text so far.
//
// The Tokenizer must outlive the decoder. An IncrementalDecoder belongs to
// one request and is not thread-safe; after Finish() it returns nothing.
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens);

  std::string Push(int32_t id);
  std::string Finish();

 private:
  std::unique_ptr<TokenStream> stream_;
  bool finished_ = false;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_INCREMENTAL_DECODER_H_
