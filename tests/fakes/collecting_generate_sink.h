// A core::GenerateSink that keeps everything it is given, for tests that
// call the core directly.
#ifndef ADAPTERD_TESTS_FAKES_COLLECTING_GENERATE_SINK_H_
#define ADAPTERD_TESTS_FAKES_COLLECTING_GENERATE_SINK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "server/core/generate_request.h"

namespace adapterd::testing {

// Written on the engine thread; read after `done` is notified.
class CollectingGenerateSink : public core::GenerateSink {
 public:
  void OnChunk(const core::GenerateChunk& c) override {
    tokens.insert(tokens.end(), c.tokens.begin(), c.tokens.end());
    text.append(c.text);
    if (!c.text.empty()) deltas.emplace_back(c.text);
  }
  void OnFinish(const core::GenerateFinish& f) override {
    finish = f;
    done.Notify();
  }

  std::vector<int64_t> tokens;
  std::string text;
  std::vector<std::string> deltas;
  core::GenerateFinish finish;
  absl::Notification done;
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_FAKES_COLLECTING_GENERATE_SINK_H_
