// CUDA kernels for per-row adapter work in mixed batches: low-rank shrink
// (x A^T, optionally + bias and a nonlinearity, for bottleneck down
// projections) and expand (+= t B^T, optionally + bias, for LoRA B and
// bottleneck up projections), with every row using its own adapter slot and
// rank. Nothing is padded to the largest rank; `ld_tmp` is only a stride.
//
// Two shapes of each kernel, chosen by ChooseSgmv():
//  - BGMV (per row): one block per row and output tile; best for decode,
//    where rows rarely share an adapter.
//  - SGMV (per segment): rows sorted so that each adapter's rows are
//    contiguous; the adapter's weights are read once per tile of rows.
// Fused projections (q/k/v, gate/up) use one shrink over the adapters'
// concatenated A (rank = sum of ranks) and one expand launch over up to
// kMaxSlices output slices.
//
// A slot whose rank is 0 in a table leaves its rows alone (no module there).
//
// The declarations need no CUDA header, so that host code (the launchers of
// lora_launcher.h) compiles without the toolkit; only lora_kernels.cu needs
// nvcc. A `Stream` is a cudaStream_t (null: the legacy default stream, which
// is LibTorch's default current stream), and each function returns a
// int as an int (0 = success). All functions enqueue on `stream`
// and return without synchronising; the pointer tables live in device
// memory and must outlive the launch.
#ifndef ADAPTERD_SERVER_GPU_LORA_KERNELS_H_
#define ADAPTERD_SERVER_GPU_LORA_KERNELS_H_

#include <cstdint>

namespace adapterd::gpu {

enum class DType { kF32, kBF16 };
enum class Act { kIdentity, kRelu, kGelu, kGeluTanh, kSilu, kTanh, kSigmoid };

inline constexpr int kMaxSlices = 3;
inline constexpr int kMaxRank = 256;

using Stream = void*;

// Rows of one adapter: [start, start + rows) of the batch, using `slot`.
struct Segment {
  int start;
  int rows;
  int slot;
};

struct ShrinkArgs {
  DType dtype = DType::kF32;
  const void* x = nullptr;  // [rows, in], row stride ldx elements
  int64_t ldx = 0;
  int in = 0;
  const void* const* a_t = nullptr;   // per slot: [in, rank] row-major
  const void* const* bias = nullptr;  // per slot: [rank] or null table/entry
  const int* rank = nullptr;          // per slot
  const float* scale = nullptr;       // per slot (null = 1)
  Act act = Act::kIdentity;
  float* tmp = nullptr;  // [rows, ld_tmp] float; columns >= rank untouched
  int ld_tmp = 0;
};

struct ExpandSlice {
  const void* const* b_t = nullptr;   // per slot: [rank_s, out] row-major
  const void* const* bias = nullptr;  // per slot: [out] or null
  const int* rank = nullptr;          // per slot: rank of this slice
  const int* offset = nullptr;        // per slot: first tmp column of this slice
  void* y = nullptr;                  // [rows, out], row stride ldy; y += t B^T (+ bias)
  int64_t ldy = 0;
  int out = 0;
};

struct ExpandArgs {
  DType dtype = DType::kF32;
  const float* tmp = nullptr;  // [rows, ld_tmp]
  int ld_tmp = 0;
  int num_slices = 1;
  ExpandSlice slices[kMaxSlices];
};

// Per-row launches: `row_slot[r]` is the slot of row r, or -1 for none.
int BgmvShrink(const ShrinkArgs& a, const int* row_slot, int rows, Stream stream);
int BgmvExpand(const ExpandArgs& a, const int* row_slot, int rows, Stream stream);
// Per-segment launches over `segments` (device array) of which the largest
// has `max_rows` rows.
int SgmvShrink(const ShrinkArgs& a, const Segment* segments, int num_segments, int max_rows,
                       Stream stream);
int SgmvExpand(const ExpandArgs& a, const Segment* segments, int num_segments, int max_rows,
                       Stream stream);

// The CUDA runtime's text for an error these functions returned.
const char* ErrorString(int error);

// Segments longer than a few rows amortise their weight reads: use SGMV.
inline bool ChooseSgmv(int max_segment_rows) { return max_segment_rows > 4; }

}  // namespace adapterd::gpu

#endif  // ADAPTERD_SERVER_GPU_LORA_KERNELS_H_
