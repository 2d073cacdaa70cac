#include "server/gpu/lora_kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace adapterd::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kTileRows = 8;  // rows sharing one read of the weights (SGMV)

template <typename T> __device__ __forceinline__ float Load(const T* p, int64_t i);
template <> __device__ __forceinline__ float Load<float>(const float* p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float Load<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
template <typename T> __device__ __forceinline__ void AddTo(T* p, int64_t i, float v);
template <> __device__ __forceinline__ void AddTo<float>(float* p, int64_t i, float v) { p[i] += v; }
template <> __device__ __forceinline__ void AddTo<__nv_bfloat16>(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(__bfloat162float(p[i]) + v);
}

__device__ __forceinline__ float Apply(Act act, float v) {
  switch (act) {
    case Act::kRelu: return v > 0.f ? v : 0.f;
    case Act::kGelu: return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    case Act::kGeluTanh: return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case Act::kSilu: return v / (1.f + expf(-v));
    case Act::kTanh: return tanhf(v);
    case Act::kSigmoid: return 1.f / (1.f + expf(-v));
    case Act::kIdentity: break;
  }
  return v;
}

// Shrink for `nrows` consecutive rows starting at `row0`, all using `slot`.
// Thread (k, c) sums x[r, i] * A[i, k] over i = c, c + chunks, ...; the
// partial sums are reduced over c in shared memory. Consecutive threads read
// consecutive k of one row of A: coalesced.
template <typename T, int ROWS>
__device__ void ShrinkRows(const ShrinkArgs& a, int row0, int nrows, int slot) {
  __shared__ float red[ROWS][kThreads];
  const int r = a.rank[slot];
  if (r <= 0) return;  // the whole block: no module for this slot
  const int chunks = kThreads / r;
  const int k = threadIdx.x % r, c = threadIdx.x / r;
  const T* x = static_cast<const T*>(a.x);
  const T* at = static_cast<const T*>(a.a_t[slot]);
  float acc[ROWS] = {};
  if (c < chunks) {
    for (int i = c; i < a.in; i += chunks) {
      const float w = Load(at, static_cast<int64_t>(i) * r + k);
#pragma unroll
      for (int j = 0; j < ROWS; ++j) {
        if (j < nrows) acc[j] += Load(x, static_cast<int64_t>(row0 + j) * a.ldx + i) * w;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < ROWS; ++j) red[j][threadIdx.x] = c < chunks ? acc[j] : 0.f;
  __syncthreads();
  if (threadIdx.x < r) {
    const float scale = a.scale != nullptr ? a.scale[slot] : 1.f;
    const T* bias = a.bias != nullptr ? static_cast<const T*>(a.bias[slot]) : nullptr;
    for (int j = 0; j < nrows; ++j) {
      float s = 0.f;
      for (int cc = 0; cc < chunks; ++cc) s += red[j][cc * r + k];
      s *= scale;
      if (bias != nullptr) s += Load(bias, k);
      a.tmp[static_cast<int64_t>(row0 + j) * a.ld_tmp + k] = Apply(a.act, s);
    }
  }
}

template <typename T>
__global__ void BgmvShrinkKernel(ShrinkArgs a, const int* row_slot) {
  const int row = blockIdx.x, slot = row_slot[row];
  if (slot >= 0) ShrinkRows<T, 1>(a, row, 1, slot);
}

template <typename T>
__global__ void SgmvShrinkKernel(ShrinkArgs a, const Segment* segs) {
  const Segment s = segs[blockIdx.x];
  const int row0 = s.start + blockIdx.y * kTileRows;
  if (s.slot < 0 || row0 >= s.start + s.rows) return;
  ShrinkRows<T, kTileRows>(a, row0, min(kTileRows, s.start + s.rows - row0), s.slot);
}

// Expand for `nrows` rows from `row0` using `slot`: thread o of the block's
// output tile computes y[r, o] += sum_k tmp[r, off + k] * B[k, o] (+ bias),
// reading each B[k, o] once for all rows; tmp rows are staged in shared memory.
template <typename T, int ROWS>
__device__ void ExpandRows(const ExpandArgs& a, int row0, int nrows, int slot, int tile) {
  __shared__ float t[ROWS][kMaxRank];
  int base = 0;
  for (int s = 0; s < a.num_slices; ++s) {
    const ExpandSlice& sl = a.slices[s];
    const int tiles = (sl.out + kThreads - 1) / kThreads;
    if (tile >= base + tiles) {
      base += tiles;
      continue;
    }
    const int r = sl.rank[slot], off = sl.offset[slot];
    if (r <= 0) return;  // the whole block: no module for this slot here
    for (int i = threadIdx.x; i < ROWS * r; i += kThreads) {
      const int j = i / r, k = i % r;
      t[j][k] = j < nrows ? a.tmp[static_cast<int64_t>(row0 + j) * a.ld_tmp + off + k] : 0.f;
    }
    __syncthreads();
    const int o = (tile - base) * kThreads + threadIdx.x;
    if (o < sl.out) {
      const T* bt = static_cast<const T*>(sl.b_t[slot]);
      const T* bias = sl.bias != nullptr ? static_cast<const T*>(sl.bias[slot]) : nullptr;
      float acc[ROWS] = {};
      for (int k = 0; k < r; ++k) {
        const float w = Load(bt, static_cast<int64_t>(k) * sl.out + o);
#pragma unroll
        for (int j = 0; j < ROWS; ++j) acc[j] += t[j][k] * w;
      }
      const float b = bias != nullptr ? Load(bias, o) : 0.f;
      T* y = static_cast<T*>(sl.y);
      for (int j = 0; j < nrows; ++j) AddTo(y, static_cast<int64_t>(row0 + j) * sl.ldy + o, acc[j] + b);
    }
    return;
  }
}

template <typename T>
__global__ void BgmvExpandKernel(ExpandArgs a, const int* row_slot) {
  const int row = blockIdx.x, slot = row_slot[row];
  if (slot >= 0) ExpandRows<T, 1>(a, row, 1, slot, blockIdx.y);
}

template <typename T>
__global__ void SgmvExpandKernel(ExpandArgs a, const Segment* segs) {
  const Segment s = segs[blockIdx.x];
  const int row0 = s.start + blockIdx.z * kTileRows;
  if (s.slot < 0 || row0 >= s.start + s.rows) return;
  ExpandRows<T, kTileRows>(a, row0, min(kTileRows, s.start + s.rows - row0), s.slot, blockIdx.y);
}

int TotalTiles(const ExpandArgs& a) {
  int tiles = 0;
  for (int s = 0; s < a.num_slices; ++s) tiles += (a.slices[s].out + kThreads - 1) / kThreads;
  return tiles;
}

}  // namespace

int BgmvShrink(const ShrinkArgs& a, const int* row_slot, int rows, Stream stream_handle) {
  if (rows == 0) return cudaSuccess;
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  if (a.dtype == DType::kF32) {
    BgmvShrinkKernel<float><<<rows, kThreads, 0, stream>>>(a, row_slot);
  } else {
    BgmvShrinkKernel<__nv_bfloat16><<<rows, kThreads, 0, stream>>>(a, row_slot);
  }
  return cudaGetLastError();
}

int SgmvShrink(const ShrinkArgs& a, const Segment* segs, int n, int max_rows, Stream stream_handle) {
  if (n == 0) return cudaSuccess;
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  const dim3 grid(n, (max_rows + kTileRows - 1) / kTileRows);
  if (a.dtype == DType::kF32) {
    SgmvShrinkKernel<float><<<grid, kThreads, 0, stream>>>(a, segs);
  } else {
    SgmvShrinkKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(a, segs);
  }
  return cudaGetLastError();
}

int BgmvExpand(const ExpandArgs& a, const int* row_slot, int rows, Stream stream_handle) {
  if (rows == 0) return cudaSuccess;
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  const dim3 grid(rows, TotalTiles(a));
  if (a.dtype == DType::kF32) {
    BgmvExpandKernel<float><<<grid, kThreads, 0, stream>>>(a, row_slot);
  } else {
    BgmvExpandKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(a, row_slot);
  }
  return cudaGetLastError();
}

int SgmvExpand(const ExpandArgs& a, const Segment* segs, int n, int max_rows, Stream stream_handle) {
  if (n == 0) return cudaSuccess;
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  const dim3 grid(n, TotalTiles(a), (max_rows + kTileRows - 1) / kTileRows);
  if (a.dtype == DType::kF32) {
    SgmvExpandKernel<float><<<grid, kThreads, 0, stream>>>(a, segs);
  } else {
    SgmvExpandKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(a, segs);
  }
  return cudaGetLastError();
}

const char* ErrorString(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace adapterd::gpu
