// The variables a render sees: frames for the template body, each loop
// iteration and each macro call, chained to their parents, over the render's
// context. `set` writes to the innermost frame, so assignments inside a loop
// body last for one iteration, as in jinja2. One per render; not thread-safe.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_SCOPE_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_SCOPE_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/template/template_value.h"

namespace adapterd::tmpl {

class Scope {
 public:
  // `context` (a dict) must outlive the scope.
  explicit Scope(const Value& context) : context_(context) { frames_.push_back(Frame{{}, -1}); }

  // The innermost binding of `name`, then the context's; null when unbound.
  const Value* Find(std::string_view name) const;
  // Binds `name` in the innermost frame.
  void Set(std::string_view name, Value value);
  // Opens a frame whose lookups continue in frame `parent`; returns its index.
  int Push(int parent);
  int Push() { return Push(top()); }
  void Pop() { frames_.pop_back(); }
  int top() const { return static_cast<int>(frames_.size()) - 1; }

 private:
  struct Frame {
    std::vector<std::pair<std::string, Value>> vars;
    int parent;
  };
  std::vector<Frame> frames_;
  const Value& context_;
};

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_SCOPE_H_
