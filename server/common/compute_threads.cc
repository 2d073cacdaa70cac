#include "server/common/compute_threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

namespace adapterd {
namespace {

using SetThreads = void (*)(int);
using GetThreads = int (*)();

// OpenBLAS's thread controls, when the process has OpenBLAS loaded.
SetThreads BlasSetter() { return reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")); }
GetThreads BlasGetter() { return reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads")); }

}  // namespace

void SetComputeThreads(int threads) {
  at::set_num_threads(threads);
  if (SetThreads set = BlasSetter(); set != nullptr) set(threads);
}

ScopedComputeThreads::ScopedComputeThreads(int threads) {
  aten_before_ = at::get_num_threads();
  at::set_num_threads(threads);
  if (SetThreads set = BlasSetter(); set != nullptr) {
    if (GetThreads get = BlasGetter(); get != nullptr) blas_before_ = get();
    set(threads);
  }
}

ScopedComputeThreads::~ScopedComputeThreads() {
  at::set_num_threads(aten_before_);
  if (SetThreads set = BlasSetter(); set != nullptr && blas_before_ > 0) set(blas_before_);
}

}  // namespace adapterd
