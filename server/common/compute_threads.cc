#include "server/common/compute_threads.h"

#include <dlfcn.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/const_init.h"
#include "absl/synchronization/mutex.h"
#include "server/common/parallel.h"

namespace adapterd {
namespace {

using SetThreads = void (*)(int);
using GetThreads = int (*)();
// OpenBLAS (0.3.27 and later) runs a call's parallel jobs through a
// function the process may supply: job i is job(i, data + i * size, arg).
using BlasJob = void (*)(int job, void* data, int arg);
using BlasJobRunner = void (*)(int sync, BlasJob job, int jobs, size_t size, void* data, int arg);
using SetBlasJobRunner = void (*)(BlasJobRunner);

// OpenBLAS's thread controls, when the process has OpenBLAS loaded; looked
// up once (ScopedSerialBlas runs on every long prompt chunk's attention).
SetThreads BlasSetter() {
  static const SetThreads set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return set;
}
GetThreads BlasGetter() {
  static const GetThreads get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get;
}
SetBlasJobRunner BlasJobRunnerSetter() {
  return reinterpret_cast<SetBlasJobRunner>(dlsym(RTLD_DEFAULT, "openblas_set_threads_callback_function"));
}

std::atomic<bool> blas_on_aten_pool{false};
// OpenBLAS gives every call's job i the same work buffer, so calls run
// through the runner one at a time. A leaf lock: jobs take no lock.
absl::Mutex blas_jobs_mu(absl::kConstInit);
std::atomic<int64_t> blas_parallel_calls{0};
std::atomic<int64_t> blas_calls_in_parallel_regions{0};

// Runs one OpenBLAS call's jobs on ATen's pool. The jobs of a level-3 call
// wait on each other, so they must all run at once: one job per pool
// thread. Where the pool cannot give that (a call from inside a parallel
// region, or more jobs than threads), the other jobs get threads of their
// own for the call. Calls from several threads take turns.
void RunBlasJobs(int /*sync*/, BlasJob job, int jobs, size_t size, void* data, int arg) {
  const auto run = [&](int64_t i) { job(static_cast<int>(i), static_cast<char*>(data) + i * size, arg); };
  if (jobs <= 1) {
    if (jobs == 1) run(0);
    return;
  }
  absl::MutexLock lock(&blas_jobs_mu);
  blas_parallel_calls.fetch_add(1, std::memory_order_relaxed);
  if (!at::in_parallel_region() && jobs <= at::get_num_threads()) {
    at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) run(i);
    });
    return;
  }
  blas_calls_in_parallel_regions.fetch_add(1, std::memory_order_relaxed);
  std::vector<std::thread> others;
  others.reserve(static_cast<size_t>(jobs - 1));
  for (int64_t i = 1; i < jobs; ++i) others.emplace_back(run, i);
  run(0);
  for (std::thread& t : others) t.join();
}

}  // namespace

void SetComputeThreads(int threads) {
#ifndef ADAPTERD_SERIAL_KERNELS
  // One pool: OpenBLAS's workers would otherwise spin on the cores while
  // ATen's pool runs our kernels, and the other way round. OpenBLAS takes
  // the runner before its other calls.
  if (SetBlasJobRunner set = BlasJobRunnerSetter(); set != nullptr && !blas_on_aten_pool.exchange(true)) {
    set(&RunBlasJobs);
  }
#endif
  at::set_num_threads(threads);
  if (SetThreads set = BlasSetter(); set != nullptr) set(threads);
}

bool BlasRunsOnAtenPool() { return blas_on_aten_pool.load(); }

int64_t BlasParallelCalls() { return blas_parallel_calls.load(std::memory_order_relaxed); }

int64_t BlasCallsInParallelRegions() { return blas_calls_in_parallel_regions.load(std::memory_order_relaxed); }

ScopedSerialBlas::ScopedSerialBlas() {
  SetThreads set = BlasSetter();
  GetThreads get = BlasGetter();
  if (set == nullptr || get == nullptr) return;
  before_ = get();
  if (before_ > 1) set(1);
}

ScopedSerialBlas::~ScopedSerialBlas() {
  if (before_ > 1) BlasSetter()(before_);
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
