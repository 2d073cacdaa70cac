// Checks server/gpu/lora_kernels.cu against a float64 host reference on fresh
// random inputs of several shapes: mixed ranks, rows without an adapter,
// fused slices (q/k/v-like) where some adapters lack some slices (rank 0), bias + nonlinearity (bottleneck-like), in fp32
// and bf16, through both the per-row (BGMV) and per-segment (SGMV) kernels.
// Prints one line per case and exits 1 on any mismatch.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "server/gpu/lora_kernels.h"

using namespace adapterd::gpu;

#define CHECK(x)                                                                     \
  do {                                                                               \
    cudaError_t e_ = static_cast<cudaError_t>(x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(2);                                                                  \
    }                                                                                \
  } while (0)

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* d = nullptr;
  CHECK(cudaMalloc(&d, std::max<size_t>(1, v.size()) * sizeof(T)));
  CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

double ActD(Act a, double v) {
  switch (a) {
    case Act::kRelu: return v > 0 ? v : 0;
    case Act::kGelu: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    case Act::kGeluTanh: return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    case Act::kSilu: return v / (1 + std::exp(-v));
    case Act::kTanh: return std::tanh(v);
    case Act::kSigmoid: return 1 / (1 + std::exp(-v));
    default: return v;
  }
}

struct Case {
  const char* name;
  int rows, in, slots;
  std::vector<int> outs;  // one per slice
  bool bias;
  Act act;
};

// Values are rounded to the kernel dtype before the reference sees them.
float Round(float v, DType d) { return d == DType::kBF16 ? __bfloat162float(__float2bfloat16(v)) : v; }

template <typename T>
std::vector<T> Convert(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = T(v[i]);
  return out;
}

template <typename T>
bool Run(const Case& c, DType dtype, bool sgmv, std::mt19937& rng) {
  std::normal_distribution<float> n01(0.f, 1.f);
  std::uniform_int_distribution<int> rank_d(1, 64);
  const int S = static_cast<int>(c.outs.size());
  std::vector<int> rank(c.slots * S), offset(c.slots * S), total(c.slots, 0);
  for (int a = 0; a < c.slots; ++a) {
    for (int s = 0; s < S; ++s) {
      // Fused slices: some adapters have no module at some projections (rank 0).
      rank[a * S + s] = S > 1 && rng() % 4 == 0 ? 0 : rank_d(rng);
      offset[a * S + s] = total[a];
      total[a] += rank[a * S + s];
    }
  }
  // Rows sorted by slot (what the engine does), some without an adapter.
  std::vector<int> row_slot(c.rows);
  for (int r = 0; r < c.rows; ++r) row_slot[r] = static_cast<int>(rng() % (c.slots + 1)) - 1;
  std::sort(row_slot.begin(), row_slot.end());
  std::vector<Segment> segs;
  int max_rows = 0;
  for (int r = 0; r < c.rows;) {
    int e = r;
    while (e < c.rows && row_slot[e] == row_slot[r]) ++e;
    segs.push_back({r, e - r, row_slot[r]});
    max_rows = std::max(max_rows, e - r);
    r = e;
  }
  auto rand_vec = [&](size_t n, float s) {
    std::vector<float> v(n);
    for (float& x : v) x = Round(n01(rng) * s, dtype);
    return v;
  };
  const int ld_tmp = *std::max_element(total.begin(), total.end());
  std::vector<float> x = rand_vec(static_cast<size_t>(c.rows) * c.in, 1.f), scale(c.slots);
  for (float& s : scale) s = 0.5f + (rng() % 100) / 100.f;
  std::vector<std::vector<float>> A(c.slots), Ab(c.slots), B(c.slots * S), Bb(c.slots * S);
  std::vector<const void*> a_ptr(c.slots), ab_ptr(c.slots), b_ptr(c.slots * S), bb_ptr(c.slots * S);
  std::vector<std::vector<float>> y(S);
  for (int a = 0; a < c.slots; ++a) {
    A[a] = rand_vec(static_cast<size_t>(c.in) * total[a], 1.f / std::sqrt(float(c.in)));
    Ab[a] = rand_vec(total[a], 0.1f);
    a_ptr[a] = Upload(Convert<T>(A[a]));
    ab_ptr[a] = Upload(Convert<T>(Ab[a]));
    for (int s = 0; s < S; ++s) {
      B[a * S + s] = rand_vec(static_cast<size_t>(rank[a * S + s]) * c.outs[s], 1.f / std::sqrt(float(rank[a * S + s])));
      Bb[a * S + s] = rand_vec(c.outs[s], 0.1f);
      b_ptr[a * S + s] = Upload(Convert<T>(B[a * S + s]));
      bb_ptr[a * S + s] = Upload(Convert<T>(Bb[a * S + s]));
    }
  }
  for (int s = 0; s < S; ++s) y[s] = rand_vec(static_cast<size_t>(c.rows) * c.outs[s], 1.f);

  ShrinkArgs sh;
  sh.dtype = dtype;
  sh.x = Upload(Convert<T>(x));
  sh.ldx = c.in;
  sh.in = c.in;
  sh.a_t = Upload(a_ptr);
  sh.bias = c.bias ? Upload(ab_ptr) : nullptr;
  sh.rank = Upload(total);
  sh.scale = Upload(scale);
  sh.act = c.act;
  sh.ld_tmp = ld_tmp;
  CHECK(cudaMalloc(&sh.tmp, sizeof(float) * c.rows * ld_tmp));
  ExpandArgs ex;
  ex.dtype = dtype;
  ex.tmp = sh.tmp;
  ex.ld_tmp = ld_tmp;
  ex.num_slices = S;
  std::vector<T*> y_dev(S);
  for (int s = 0; s < S; ++s) {
    std::vector<const void*> bs(c.slots), bbs(c.slots);
    std::vector<int> rs(c.slots), os(c.slots);
    for (int a = 0; a < c.slots; ++a) {
      bs[a] = b_ptr[a * S + s];
      bbs[a] = bb_ptr[a * S + s];
      rs[a] = rank[a * S + s];
      os[a] = offset[a * S + s];
    }
    y_dev[s] = Upload(Convert<T>(y[s]));
    ex.slices[s] = {Upload(bs), c.bias ? Upload(bbs) : nullptr, Upload(rs), Upload(os), y_dev[s], c.outs[s], c.outs[s]};
  }
  int* slots_dev = Upload(row_slot);
  Segment* segs_dev = Upload(segs);
  if (sgmv) {
    CHECK(SgmvShrink(sh, segs_dev, static_cast<int>(segs.size()), max_rows, nullptr));
    CHECK(SgmvExpand(ex, segs_dev, static_cast<int>(segs.size()), max_rows, nullptr));
  } else {
    CHECK(BgmvShrink(sh, slots_dev, c.rows, nullptr));
    CHECK(BgmvExpand(ex, slots_dev, c.rows, nullptr));
  }
  CHECK(cudaDeviceSynchronize());

  double worst = 0;
  for (int s = 0; s < S; ++s) {
    std::vector<T> got(y[s].size());
    CHECK(cudaMemcpy(got.data(), y_dev[s], got.size() * sizeof(T), cudaMemcpyDeviceToHost));
    for (int r = 0; r < c.rows; ++r) {
      const int a = row_slot[r];
      std::vector<double> t(total[std::max(a, 0)], 0.0);
      if (a >= 0) {
        for (int k = 0; k < total[a]; ++k) {
          double acc = 0;
          for (int i = 0; i < c.in; ++i) acc += double(x[size_t(r) * c.in + i]) * A[a][size_t(i) * total[a] + k];
          acc *= scale[a];
          if (c.bias) acc += Ab[a][k];
          t[k] = ActD(c.act, acc);
        }
      }
      for (int o = 0; o < c.outs[s]; ++o) {
        double want = y[s][size_t(r) * c.outs[s] + o];
        if (a >= 0 && rank[a * S + s] > 0) {  // rank 0: the row is left alone
          const int rs = rank[a * S + s], off = offset[a * S + s];
          for (int k = 0; k < rs; ++k) want += t[off + k] * B[a * S + s][size_t(k) * c.outs[s] + o];
          if (c.bias) want += Bb[a * S + s][o];
        }
        const double g = float(got[size_t(r) * c.outs[s] + o]);
        worst = std::max(worst, std::abs(g - want) / (1.0 + std::abs(want)));
      }
    }
  }
  const double tol = dtype == DType::kF32 ? 1e-4 : 2e-2;
  std::printf("%-28s %-5s %-4s rows=%-4d segments=%-3zu max_rel_err=%.2e %s\n", c.name,
              dtype == DType::kF32 ? "fp32" : "bf16", sgmv ? "sgmv" : "bgmv", c.rows, segs.size(), worst,
              worst <= tol ? "ok" : "FAIL");
  return worst <= tol;
}

int main() {
  std::mt19937 rng(20261123);
  const std::vector<Case> cases = {
      {"decode lora 1 slice", 32, 768, 16, {768}, false, Act::kIdentity},
      {"prefill lora 1 slice", 300, 1024, 4, {2048}, false, Act::kIdentity},
      {"fused qkv (3 slices)", 64, 2048, 8, {2048, 256, 256}, false, Act::kIdentity},
      {"fused gate/up (2 slices)", 48, 512, 5, {1376, 1376}, false, Act::kIdentity},
      {"bottleneck relu + bias", 40, 768, 6, {768}, true, Act::kRelu},
      {"bottleneck swish + bias", 17, 4096, 3, {4096}, true, Act::kSilu},
      {"bottleneck gelu + bias", 9, 333, 2, {333}, true, Act::kGelu},
      {"one row", 1, 128, 1, {64}, false, Act::kIdentity},
  };
  bool ok = true;
  for (const Case& c : cases) {
    for (bool sgmv : {false, true}) {
      ok &= Run<float>(c, DType::kF32, sgmv, rng);
      ok &= Run<__nv_bfloat16>(c, DType::kBF16, sgmv, rng);
    }
  }
  std::printf("%s\n", ok ? "all kernel checks passed" : "KERNEL CHECKS FAILED");
  return ok ? 0 : 1;
}
