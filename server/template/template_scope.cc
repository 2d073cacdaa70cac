#include "server/template/template_scope.h"

#include <algorithm>

namespace adapterd::tmpl {

const Value* Scope::Find(std::string_view name) const {
  for (int i = top(); i >= 0; i = frames_[i].parent) {
    for (const auto& [k, v] : frames_[i].vars) {
      if (k == name) return &v;
    }
  }
  if (context_.is_dict()) return context_.AsDict().FindString(name);
  return nullptr;
}

void Scope::Set(std::string_view name, Value value) {
  auto& vars = frames_.back().vars;
  for (auto& [k, v] : vars) {
    if (k == name) {
      v = std::move(value);
      return;
    }
  }
  vars.emplace_back(std::string(name), std::move(value));
}

int Scope::Push(int parent) {
  frames_.push_back(Frame{{}, std::clamp(parent, -1, top())});
  return top();
}

}  // namespace adapterd::tmpl
