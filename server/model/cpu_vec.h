// Vector types and element loads for the hand-written CPU kernels.
#ifndef ADAPTERD_SERVER_MODEL_CPU_VEC_H_
#define ADAPTERD_SERVER_MODEL_CPU_VEC_H_

#include <bit>
#include <cstdint>
#include <cstring>

#include "server/model/cpu_clones.h"

namespace adapterd::model::cpu {

// Vectors of N fp32 lanes (and of N 32-bit or 16-bit words), lowered by
// each clone to the registers it has: a 16-lane vector is one AVX-512
// register, two AVX2 ones or four SSE ones. Files that use them are built
// with -Wno-psabi: the helpers are inlined, never called across the ABI
// boundary GCC warns about.
template <int N>
struct Vec;
template <>
struct Vec<4> {
  typedef float F __attribute__((vector_size(16)));
  typedef uint32_t U __attribute__((vector_size(16)));
};
template <>
struct Vec<8> {
  typedef float F __attribute__((vector_size(32)));
  typedef uint32_t U __attribute__((vector_size(32)));
  typedef _Float16 H __attribute__((vector_size(16)));
};
template <>
struct Vec<16> {
  typedef float F __attribute__((vector_size(64)));
  typedef uint32_t U __attribute__((vector_size(64)));
  typedef _Float16 H __attribute__((vector_size(32)));
};
using V16 = Vec<16>::F;
using U16 = Vec<16>::U;

template <class V>
ADAPTERD_INLINE V LoadBytes(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class V>
ADAPTERD_INLINE void StoreBytes(void* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}

// A stored element type: one element to fp32, exactly, and N of them (the
// N consecutive elements at p, into lanes 0..N-1).
struct F32 {
  using T = float;
  static ADAPTERD_INLINE float Load(const T* p) { return *p; }
  template <int N>
  static ADAPTERD_INLINE typename Vec<N>::F LoadN(const T* p) {
    return LoadBytes<typename Vec<N>::F>(p);
  }
};
struct F16 {
  using T = _Float16;
  static ADAPTERD_INLINE float Load(const T* p) { return static_cast<float>(*p); }
  template <int N>
  static ADAPTERD_INLINE typename Vec<N>::F LoadN(const T* p) {
    return __builtin_convertvector(LoadBytes<typename Vec<N>::H>(p), typename Vec<N>::F);
  }
};
// bfloat16 is read in pairs, without a shuffle: the 2N elements at p as N
// 32-bit words, element 2j (the low half of word j) into lane j of `even`
// and element 2j + 1 into lane j of `odd`.
static_assert(std::endian::native == std::endian::little, "BF16::LoadPairs reads element 2j as the low half");
struct BF16 {
  using T = uint16_t;
  static ADAPTERD_INLINE float Load(const T* p) { return std::bit_cast<float>(static_cast<uint32_t>(*p) << 16); }
  template <int N>
  static ADAPTERD_INLINE void LoadPairs(const T* p, typename Vec<N>::F& even, typename Vec<N>::F& odd) {
    const auto w = LoadBytes<typename Vec<N>::U>(p);
    even = reinterpret_cast<typename Vec<N>::F>(w << 16);
    odd = reinterpret_cast<typename Vec<N>::F>(w & 0xFFFF0000u);
  }
  // fp32 to bfloat16, to the nearest with ties to even, as c10::BFloat16
  // rounds (a NaN becomes the quiet NaN 0x7FC0).
  static ADAPTERD_INLINE T Round(float v) {
    const uint32_t u = std::bit_cast<uint32_t>(v);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return static_cast<T>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
  }
};

}  // namespace adapterd::model::cpu

#endif  // ADAPTERD_SERVER_MODEL_CPU_VEC_H_
