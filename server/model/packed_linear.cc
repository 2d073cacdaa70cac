#include "server/model/packed_linear.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace adapterd::model {
namespace {

using dnnl::memory;

// The row count oneDNN chooses the packed layout for: a decode step of many
// streams, where the GEMM's cost is (as LibTorch's _reorder_linear_weight
// is told with its batch-size hint).
constexpr int64_t kPackedForRows = 64;

const dnnl::engine& CpuEngine() {
  static const dnnl::engine* const engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// A CPU stream executes on its calling thread (and oneDNN's OpenMP team).
dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(CpuEngine());
  return stream;
}

memory::data_type DnnlType(at::ScalarType t) {
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16, "packed inner product: no oneDNN type for ", t);
  return t == at::kFloat ? memory::data_type::f32 : memory::data_type::bf16;
}

// One product's primitive: on the packed layout, or on w's plain one.
struct Primitive {
  dnnl::inner_product_forward prim;
  memory::desc src, weights, bias, dst;
  size_t scratchpad_bytes = 0;
  bool reads_packed = true;
};

// (m, in, out, dtype, bias); m = 0 keys the packed layout of (in, out, dtype).
using Key = std::tuple<int64_t, int64_t, int64_t, int, bool>;
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = std::hash<int64_t>()(std::get<0>(k));
    h = h * 1000003u ^ std::hash<int64_t>()(std::get<1>(k));
    h = h * 1000003u ^ std::hash<int64_t>()(std::get<2>(k));
    return h * 31u + static_cast<size_t>(std::get<3>(k)) * 2u + (std::get<4>(k) ? 1u : 0u);
  }
};

// The process's primitives. Lock order: a leaf; nothing is called into
// oneDNN with mu held except primitive creation, which takes no lock of ours.
class PrimitiveCache {
 public:
  static PrimitiveCache& Get() {
    static PrimitiveCache* const cache = new PrimitiveCache();
    return *cache;
  }

  std::shared_ptr<const Primitive> Find(const Key& key) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second;
  }

  void Put(const Key& key, std::shared_ptr<const Primitive> p) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (map_.size() >= kMaxCachedPrimitives) map_.clear();
    map_[key] = std::move(p);
  }

  size_t Size() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return map_.size();
  }

 private:
  absl::Mutex mu_;
  std::unordered_map<Key, std::shared_ptr<const Primitive>, KeyHash> map_ ABSL_GUARDED_BY(mu_);
};

// The primitive for m rows on `weights`' layout; null where oneDNN has only
// its reference implementation (slow) for it and `reference_ok` is false.
std::shared_ptr<Primitive> Make(int64_t m, int64_t k, int64_t n, memory::data_type dt, bool bias,
                                const memory::desc& weights, bool reference_ok) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto p = std::make_shared<Primitive>();
  p->src = memory::desc({m, k}, dt, memory::format_tag::ab);
  p->dst = memory::desc({m, n}, dt, memory::format_tag::ab);
  if (bias) p->bias = memory::desc({n}, dt, memory::format_tag::a);
  const auto prop = dnnl::prop_kind::forward_inference;
  dnnl::inner_product_forward::primitive_desc pd =
      bias ? dnnl::inner_product_forward::primitive_desc(CpuEngine(), prop, p->src, weights, p->bias, p->dst, attr)
           : dnnl::inner_product_forward::primitive_desc(CpuEngine(), prop, p->src, weights, p->dst, attr);
  if (!reference_ok && std::string(pd.impl_info_str()).rfind("ref", 0) == 0) return nullptr;
  p->weights = pd.weights_desc();
  p->scratchpad_bytes = pd.scratchpad_desc().get_size();
  p->prim = dnnl::inner_product_forward(pd);
  return p;
}

// The blocked layout PackForInnerProduct writes for [n, k] of dt.
memory::desc PackedLayout(int64_t k, int64_t n, memory::data_type dt) {
  const Key key{0, k, n, static_cast<int>(dt), false};
  PrimitiveCache& cache = PrimitiveCache::Get();
  std::shared_ptr<const Primitive> p = cache.Find(key);
  if (p == nullptr) {
    p = Make(kPackedForRows, k, n, dt, false, memory::desc({n, k}, dt, memory::format_tag::any), true);
    cache.Put(key, p);
  }
  return p->weights;
}

// The primitive for m rows: on the packed layout where oneDNN has a
// non-reference one for it, else on w's plain layout.
std::shared_ptr<const Primitive> ForRows(int64_t m, int64_t k, int64_t n, memory::data_type dt, bool bias) {
  const Key key{m, k, n, static_cast<int>(dt), bias};
  PrimitiveCache& cache = PrimitiveCache::Get();
  if (std::shared_ptr<const Primitive> p = cache.Find(key)) return p;
  std::shared_ptr<Primitive> p;
  try {
    p = Make(m, k, n, dt, bias, PackedLayout(k, n, dt), false);
  } catch (const dnnl::error&) {
    // No primitive reads this layout at m rows: p stays null.
  }
  if (p == nullptr) {
    p = Make(m, k, n, dt, bias, memory::desc({n, k}, dt, memory::format_tag::ab), true);
    p->reads_packed = false;
  }
  cache.Put(key, p);
  return p;
}

std::string Shape(int64_t m, int64_t k, int64_t n) {
  return std::to_string(m) + "x" + std::to_string(k) + " by " + std::to_string(n) + "x" + std::to_string(k);
}

}  // namespace

at::Tensor PackForInnerProduct(const at::Tensor& w) {
  TORCH_CHECK(w.device().is_cpu() && w.dim() == 2 && w.numel() > 0, "packed inner product: w must be a CPU matrix");
  const int64_t n = w.size(0), k = w.size(1);
  const memory::data_type dt = DnnlType(w.scalar_type());
  const at::Tensor plain = w.contiguous();
  at::Tensor packed;
  try {
    const memory::desc layout = PackedLayout(k, n, dt);
    const int64_t elems = static_cast<int64_t>((layout.get_size() + w.element_size() - 1) / w.element_size());
    packed = at::empty({elems}, w.options());
    memory src(memory::desc({n, k}, dt, memory::format_tag::ab), CpuEngine(), plain.data_ptr());
    memory dst(layout, CpuEngine(), packed.data_ptr());
    dnnl::reorder(src, dst).execute(ThreadStream(), src, dst);
    ThreadStream().wait();
  } catch (const dnnl::error& e) {
    TORCH_CHECK(false, "packed inner product: packing the ", n, "x", k, " weight: ", e.what());
  }
  return packed;
}

at::Tensor PackedInnerProduct(const at::Tensor& x, const at::Tensor& w, const at::Tensor& packed,
                              const at::Tensor& b) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "packed inner product: x is ", x.sizes(),
              ", w is ", w.sizes());
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  const memory::data_type dt = DnnlType(x.scalar_type());
  TORCH_CHECK(w.scalar_type() == x.scalar_type() && packed.scalar_type() == x.scalar_type() &&
                  packed.nbytes() >= static_cast<size_t>(n * k) * w.element_size(),
              "packed inner product ", Shape(m, k, n), ": packed is not PackForInnerProduct(w) for x's dtype");
  TORCH_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == n && b.scalar_type() == x.scalar_type()),
              "packed inner product ", Shape(m, k, n), ": the bias is ", b.sizes(), " of ", b.scalar_type(),
              ", not [", n, "] of x's dtype");
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({m, n}, x.options());
  try {
    const std::shared_ptr<const Primitive> p = ForRows(m, k, n, dt, b.defined());
    const at::Tensor wc = p->reads_packed ? packed : w.contiguous();
    const at::Tensor bc = b.defined() ? b.contiguous() : b;
    thread_local std::vector<uint8_t> scratch;
    if (scratch.size() < p->scratchpad_bytes) scratch.resize(p->scratchpad_bytes);
    const dnnl::engine& eng = CpuEngine();
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(p->src, eng, xc.data_ptr())},
                                         {DNNL_ARG_WEIGHTS, memory(p->weights, eng, wc.data_ptr())},
                                         {DNNL_ARG_DST, memory(p->dst, eng, y.data_ptr())}};
    if (p->scratchpad_bytes > 0) {
      const memory::desc pad({static_cast<int64_t>(p->scratchpad_bytes)}, memory::data_type::u8, memory::format_tag::a);
      args.emplace(DNNL_ARG_SCRATCHPAD, memory(pad, eng, scratch.data()));
    }
    if (bc.defined()) args.emplace(DNNL_ARG_BIAS, memory(p->bias, eng, bc.data_ptr()));
    p->prim.execute(ThreadStream(), args);
    ThreadStream().wait();
  } catch (const dnnl::error& e) {
    TORCH_CHECK(false, "packed inner product ", Shape(m, k, n), ": ", e.what());
  }
  return y;
}

size_t CachedInnerProducts() { return PrimitiveCache::Get().Size(); }

}  // namespace adapterd::model
