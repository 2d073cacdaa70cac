// Pins the process's compute threads for a while.
#ifndef ADAPTERD_SERVER_COMMON_COMPUTE_THREADS_H_
#define ADAPTERD_SERVER_COMMON_COMPUTE_THREADS_H_

namespace adapterd {

// Sets the threads LibTorch computes with, for the rest of the process:
// ATen's intra-op threads (which also run adapterd's own kernels, through
// at::parallel_for) and OpenBLAS's, which ATen's setting does not reach.
// Call once at start-up, before anything computes.
void SetComputeThreads(int threads);

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
