#include "server/common/torch_call.h"

#include <c10/util/Exception.h>

#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace adapterd {

absl::Status StatusFromCurrentException(std::string_view context) {
  try {
    throw;
  } catch (const c10::Error& e) {
    // what_without_backtrace() keeps messages short enough to return to users.
    return absl::InternalError(absl::StrCat(std::string(context), ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(std::string(context), ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(std::string(context), ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(std::string(context), ": unknown exception"));
  }
}

}  // namespace adapterd
