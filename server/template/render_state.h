// Per-render bookkeeping shared by the evaluator, filters and methods: the
// limits that keep a hostile template from exhausting memory, time or stack,
// the counters measured against them, and the namespace() objects the render
// creates (owned here, so Values can refer to them without cycles).
//
// One RenderState per ChatTemplate::Render call; not thread-safe.
#ifndef ADAPTERD_SERVER_TEMPLATE_RENDER_STATE_H_
#define ADAPTERD_SERVER_TEMPLATE_RENDER_STATE_H_

#include <cstdint>
#include <deque>
#include <string>

#include "absl/status/status.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// Bounds on one render. Exceeding any is INVALID_ARGUMENT naming the limit.
struct TemplateLimits {
  // Template source, checked by ChatTemplate::Parse.
  int64_t max_source_bytes = 4 << 20;
  // Rendered text, and any single string a template builds.
  int64_t max_output_bytes = 16 << 20;
  // for-loop iterations, summed over the whole render.
  int64_t max_loop_iterations = 1'000'000;
  // Nested evaluation: expressions, statements and macro calls together.
  int max_recursion_depth = 256;
  // Elements in any one value, counting nested ones (shared ones each time).
  int64_t max_value_nodes = 1'000'000;
  // Nesting of lists and dicts in any one value (the context included).
  int max_value_depth = 128;
  // Bytes and elements copied, searched or compared, summed over the render.
  int64_t max_work = int64_t{4} << 30;
};

class RenderState {
 public:
  explicit RenderState(const TemplateLimits& limits) : limits_(limits) {}
  RenderState(const RenderState&) = delete;
  RenderState& operator=(const RenderState&) = delete;

  const TemplateLimits& limits() const { return limits_; }

  // A string of `bytes` is about to be built: checks max_output_bytes and
  // charges the work.
  absl::Status CheckString(size_t bytes);
  // Only the size check of CheckString, for strings built piece by piece.
  absl::Status CheckSize(size_t bytes) const;
  // A container is about to be built: checks its nodes and depth.
  absl::Status CheckValue(const Value& v);
  absl::Status CheckItems(size_t items);
  // Charges `units` of work against max_work.
  absl::Status Charge(int64_t units);
  absl::Status CountIteration();

  // Enters one level of evaluation; false past max_recursion_depth.
  bool Enter() { return ++depth_ <= limits_.max_recursion_depth; }
  void Leave() { --depth_; }
  absl::Status RecursionError() const;

  // A new, empty namespace that lives as long as this state.
  NamespaceData* NewNamespace() { return &namespaces_.emplace_back(); }

 private:
  TemplateLimits limits_;
  int64_t iterations_ = 0;
  int64_t work_ = 0;
  int depth_ = 0;
  std::deque<NamespaceData> namespaces_;
};

// Leaves a level entered with RenderState::Enter when it goes out of scope.
class DepthGuard {
 public:
  explicit DepthGuard(RenderState* state) : state_(state), ok_(state->Enter()) {}
  ~DepthGuard() { state_->Leave(); }
  bool ok() const { return ok_; }

 private:
  RenderState* state_;
  bool ok_;
};

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_RENDER_STATE_H_
