#include "server/template/render_state.h"

#include "absl/strings/str_cat.h"

namespace adapterd::tmpl {

absl::Status RenderState::CheckSize(size_t bytes) const {
  if (bytes > static_cast<uint64_t>(limits_.max_output_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("a string exceeds the output limit of ",
                                                   limits_.max_output_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status RenderState::CheckString(size_t bytes) {
  if (absl::Status s = CheckSize(bytes); !s.ok()) return s;
  return Charge(static_cast<int64_t>(bytes));
}

absl::Status RenderState::CheckItems(size_t items) {
  if (items > static_cast<uint64_t>(limits_.max_value_nodes)) {
    return absl::InvalidArgumentError(absl::StrCat("a value of ", items,
                                                   " elements exceeds the limit of ",
                                                   limits_.max_value_nodes, " elements"));
  }
  return Charge(static_cast<int64_t>(items));
}

absl::Status RenderState::CheckValue(const Value& v) {
  if (v.Depth() > limits_.max_value_depth) {
    return absl::InvalidArgumentError(absl::StrCat("a value nested more than ",
                                                   limits_.max_value_depth, " levels deep"));
  }
  if (v.Weight() > limits_.max_value_nodes) {
    return absl::InvalidArgumentError(absl::StrCat("a value of more than ", limits_.max_value_nodes,
                                                   " elements (counting nested ones)"));
  }
  return absl::OkStatus();
}

absl::Status RenderState::Charge(int64_t units) {
  work_ += units;
  if (work_ > limits_.max_work) {
    return absl::InvalidArgumentError(
        absl::StrCat("the render exceeds its work limit of ", limits_.max_work,
                     " bytes and elements processed"));
  }
  return absl::OkStatus();
}

absl::Status RenderState::CountIteration() {
  if (++iterations_ > limits_.max_loop_iterations) {
    return absl::InvalidArgumentError(absl::StrCat("loops exceed the limit of ",
                                                   limits_.max_loop_iterations, " iterations"));
  }
  return Charge(1);
}

absl::Status RenderState::RecursionError() const {
  return absl::InvalidArgumentError(
      absl::StrCat("evaluation nested more than ", limits_.max_recursion_depth,
                   " levels deep (macro recursion?)"));
}

}  // namespace adapterd::tmpl
