// The `decoder` of tokenizer.json (ByteLevel, ByteFallback, Fuse, Strip,
// Replace, Metaspace, Sequence), run as a stream of tokens.
#ifndef ADAPTERD_SERVER_TEXT_DECODER_H_
#define ADAPTERD_SERVER_TEXT_DECODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/json_fields.h"
#include "server/text/split_pattern.h"

namespace adapterd::text {

// Turns token strings into text with tokenizers' decoder semantics (the
// tokens joined by " " when there is no decoder). Every step is run as a
// stream: a step that needs a whole token, or a run of byte tokens, holds
// only that back, so the text of a prefix of the tokens is available as soon
// as no later token can change it. A Decoder is immutable once built and
// thread-safe; each Stream belongs to one caller.
class Decoder {
 public:
  // Parses the decoder at `path`; a JSON null joins the tokens with spaces.
  static absl::StatusOr<std::unique_ptr<Decoder>> FromJson(const Json& j, const std::string& path);
  ~Decoder();

  class Stream {
   public:
    explicit Stream(const Decoder& decoder);
    // Appends to `out` the text that `token` makes final.
    void Push(std::string_view token, std::string* out);
    // Appends the rest of the text; the stream is then spent.
    void Finish(std::string* out);

   private:
    // Per step: what the step holds back.
    struct State {
      std::string buffer;        // an unfinished token, for whole-token steps
      bool open = false;
      std::string bytes;         // ByteFallback: the current run; ByteLevel: the undecoded tail
      bool emitted = false;      // Fuse, ByteLevel: the single output token has begun
      int64_t token_index = -1;  // Metaspace
      int64_t lead_left = 0;     // Strip: leading characters still to remove
      int64_t held = 0;          // Strip: trailing characters held back
    };
    void Feed(size_t step, std::string_view text, bool begin, bool end, std::string* out);
    void WholeToken(size_t step, std::string_view token, std::string* out);
    void FlushBytes(size_t step, std::string* out);
    void StreamStrip(size_t step, std::string_view text, bool begin, bool end, std::string* out);
    void StreamByteLevel(size_t step, bool final, std::string* out);
    void FinishStep(size_t step, std::string* out);

    const Decoder& decoder_;
    std::vector<State> states_;
    int64_t sink_tokens_ = 0;
  };

  // The decoded text of `tokens` (Push of each, then Finish).
  std::string Decode(const std::vector<std::string_view>& tokens) const;

 private:
  enum class Kind { kByteLevel, kByteFallback, kFuse, kStrip, kReplace, kMetaspace };
  struct Step {
    Kind kind;
    std::unique_ptr<SplitPattern> pattern;  // Replace
    std::string text;                       // Replace: content; Strip, Metaspace: the character
    int64_t start = 0, stop = 0;            // Strip
    bool strip_first = true;                // Metaspace: prepend_scheme other than "never"
    bool whole_tokens() const {
      return kind == Kind::kByteLevel || kind == Kind::kByteFallback || kind == Kind::kReplace;
    }
  };
  Decoder() = default;
  static absl::Status Parse(const Json& j, const std::string& path, std::vector<Step>* steps);

  std::vector<Step> steps_;
  bool join_with_spaces_ = false;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_DECODER_H_
