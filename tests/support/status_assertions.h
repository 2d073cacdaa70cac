// gtest assertions on absl::Status values.
#ifndef ADAPTERD_TESTS_SUPPORT_STATUS_ASSERTIONS_H_
#define ADAPTERD_TESTS_SUPPORT_STATUS_ASSERTIONS_H_

#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace adapterd::testing {

// Success when the status is `code` and its message holds every substring;
// use as EXPECT_TRUE(IsError(s, absl::StatusCode::kNotFound, {"name"})).
::testing::AssertionResult IsError(const absl::Status& s, absl::StatusCode code,
                                   std::initializer_list<std::string> substrings);

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_STATUS_ASSERTIONS_H_
