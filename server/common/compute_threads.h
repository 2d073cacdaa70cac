// Pins the process's compute threads for a while.
#ifndef ADAPTERD_SERVER_COMMON_COMPUTE_THREADS_H_
#define ADAPTERD_SERVER_COMMON_COMPUTE_THREADS_H_

#include <cstdint>

namespace adapterd {

// Sets the threads LibTorch computes with, for the rest of the process:
// ATen's intra-op threads (which also run adapterd's own kernels, through
// at::parallel_for) and OpenBLAS's, which ATen's setting does not reach.
// Where OpenBLAS can hand its parallel jobs to the caller (0.3.27 and
// later), they run on ATen's pool from then on, so the process computes on
// one pool of `threads` threads. Call once at start-up, before anything
// computes.
void SetComputeThreads(int threads);

// Whether SetComputeThreads put OpenBLAS's jobs on ATen's pool.
bool BlasRunsOnAtenPool();

// OpenBLAS calls so far whose jobs (more than one) ran there.
int64_t BlasParallelCalls();

// Of those, the calls made from inside a parallel region, where the pool
// is busy: their jobs got threads of their own and took turns with other
// such calls (correct, and slow). A serving step makes none (see
// ScopedSerialBlas).
int64_t BlasCallsInParallelRegions();

// While one lives, OpenBLAS computes every call on its calling thread.
// Wrap code that reaches BLAS from inside ATen's parallel regions (SDPA's
// blocked attention kernel issues its GEMMs there): one thread per call is
// all those regions can give. The setting is process-wide, like
// SetComputeThreads: construct one only on the thread that owns the model,
// never two at once. Not thread-safe.
class ScopedSerialBlas {
 public:
  ScopedSerialBlas();
  ~ScopedSerialBlas();
  ScopedSerialBlas(const ScopedSerialBlas&) = delete;
  ScopedSerialBlas& operator=(const ScopedSerialBlas&) = delete;

 private:
  int before_ = 0;  // OpenBLAS's threads before; 0: not OpenBLAS
};

// ScopedComputeThreads sets the threads LibTorch computes with, for its
// lifetime: ATen's intra-op threads and, when the BLAS that LibTorch calls
// is OpenBLAS (Debian's), OpenBLAS's own threads, which ATen's setting does
// not reach. The destructor restores both.
//
// Both settings are process-wide: construct one only where nothing else
// computes (start-up), and never two at once. Not thread-safe.
class ScopedComputeThreads {
 public:
  explicit ScopedComputeThreads(int threads);
  ~ScopedComputeThreads();
  ScopedComputeThreads(const ScopedComputeThreads&) = delete;
  ScopedComputeThreads& operator=(const ScopedComputeThreads&) = delete;

 private:
  int aten_before_ = 0;
  int blas_before_ = 0;  // 0: not OpenBLAS
};

}  // namespace adapterd

#endif  // ADAPTERD_SERVER_COMMON_COMPUTE_THREADS_H_
