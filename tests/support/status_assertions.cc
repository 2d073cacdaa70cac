#include "tests/support/status_assertions.h"

namespace adapterd::testing {

::testing::AssertionResult IsError(const absl::Status& s, absl::StatusCode code,
                                   std::initializer_list<std::string> substrings) {
  if (s.code() != code) {
    return ::testing::AssertionFailure() << "code " << absl::StatusCodeToString(s.code()) << ", want "
                                         << absl::StatusCodeToString(code) << " (" << s << ")";
  }
  const std::string message(s.message());
  for (const std::string& sub : substrings) {
    if (message.find(sub) == std::string::npos) {
      return ::testing::AssertionFailure() << "message '" << message << "' lacks '" << sub << "'";
    }
  }
  return ::testing::AssertionSuccess() << s;
}

}  // namespace adapterd::testing
