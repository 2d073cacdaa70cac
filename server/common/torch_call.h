// The one place where LibTorch exceptions become absl::Status.
#ifndef ADAPTERD_SERVER_COMMON_TORCH_CALL_H_
#define ADAPTERD_SERVER_COMMON_TORCH_CALL_H_

#include <exception>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace adapterd {

// Converts the exception currently being handled into a status whose message
// starts with `context`. Must be called from inside a catch block.
absl::Status StatusFromCurrentException(std::string_view context);

// Runs `fn` and turns any exception it throws (c10::Error, std::exception)
// into an INTERNAL status prefixed with `context`. `fn` may return void,
// absl::Status, absl::StatusOr<T> or a plain value T (wrapped in StatusOr<T>).
template <typename Fn>
auto TorchCall(std::string_view context, Fn&& fn) {
  using R = std::invoke_result_t<Fn>;
  if constexpr (std::is_void_v<R>) {
    try {
      std::forward<Fn>(fn)();
      return absl::OkStatus();
    } catch (...) {
      return StatusFromCurrentException(context);
    }
  } else if constexpr (std::is_same_v<R, absl::Status>) {
    try {
      return std::forward<Fn>(fn)();
    } catch (...) {
      return StatusFromCurrentException(context);
    }
  } else {
    using Out = std::conditional_t<std::is_convertible_v<absl::Status, R>, R,
                                   absl::StatusOr<R>>;
    try {
      return Out(std::forward<Fn>(fn)());
    } catch (...) {
      return Out(StatusFromCurrentException(context));
    }
  }
}

}  // namespace adapterd

#endif  // ADAPTERD_SERVER_COMMON_TORCH_CALL_H_
