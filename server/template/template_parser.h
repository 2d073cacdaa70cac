// Parses chat template source into a syntax tree (template_ast.h): text,
// {{ expressions }} and the statements of the supported subset (if/elif/else,
// for/else with loop controls, set, block set, macro, generation). Anything
// else, and nesting beyond kMaxBlockNesting, is INVALID_ARGUMENT naming the
// construct, its line and column. Stateless; Parse is thread-safe.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_PARSER_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_PARSER_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/template/template_ast.h"

namespace adapterd::tmpl {

class TemplateParser {
 public:
  // How deeply statements may nest inside one another.
  static constexpr int kMaxBlockNesting = 64;

  static absl::StatusOr<std::unique_ptr<Body>> Parse(std::string_view source);
};

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_PARSER_H_
