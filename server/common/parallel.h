// at::parallel_for, for every file of ours that calls it.
#ifndef ADAPTERD_SERVER_COMMON_PARALLEL_H_
#define ADAPTERD_SERVER_COMMON_PARALLEL_H_

#include <ATen/Parallel.h>

// at::parallel_for is a template compiled into the caller: in a file built
// without OpenMP it runs its whole range on the calling thread, silently.
// Libraries whose files include this header link OpenMP::OpenMP_CXX (GCC's
// libgomp, the runtime LibTorch's pool is). The clang builds (sanitizers,
// fuzzing, the thread-safety check) define ADAPTERD_SERIAL_KERNELS instead
// and run these loops on one thread.
#if AT_PARALLEL_OPENMP && !defined(_OPENMP) && !defined(ADAPTERD_SERIAL_KERNELS)
#error "at::parallel_for needs this file built with OpenMP (OpenMP::OpenMP_CXX in server/CMakeLists.txt)"
#endif

#endif  // ADAPTERD_SERVER_COMMON_PARALLEL_H_
