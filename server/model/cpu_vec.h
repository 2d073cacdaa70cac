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
  typedef int32_t I __attribute__((vector_size(64)));
  typedef _Float16 H __attribute__((vector_size(32)));
};
using V16 = Vec<16>::F;
using U16 = Vec<16>::U;
using I16 = Vec<16>::I;

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
// N consecutive elements at p, into lanes 0..N-1). Round() is fp32 to the
// type, to the nearest with ties to even. Load32() reads 32 consecutive
// elements into two 16-lane vectors in an order of the type's own (see
// BF16), Element(half, lane) says which of the 32 lane `lane` of `a` (half
// 0) or `b` (half 1) holds, and Store32() writes two vectors back in that
// order: elementwise loops, and dot products whose two sides are read the
// same way, need no shuffles.
struct F32 {
  using T = float;
  static ADAPTERD_INLINE float Load(const T* p) { return *p; }
  static ADAPTERD_INLINE T Round(float v) { return v; }
  template <int N>
  static ADAPTERD_INLINE typename Vec<N>::F LoadN(const T* p) {
    return LoadBytes<typename Vec<N>::F>(p);
  }
  static ADAPTERD_INLINE void Load32(const T* p, V16& a, V16& b) {
    a = LoadN<16>(p);
    b = LoadN<16>(p + 16);
  }
  static ADAPTERD_INLINE void Store32(T* p, V16 a, V16 b) {
    StoreBytes(p, a);
    StoreBytes(p + 16, b);
  }
  static constexpr int Element(int half, int lane) { return half * 16 + lane; }
  // v rounded to the type and widened back: what an ATen op on tensors of
  // the type hands the next op.
  static ADAPTERD_INLINE float Narrow(float v) { return v; }
  static ADAPTERD_INLINE V16 NarrowN(V16 v) { return v; }
};
struct F16 {
  using T = _Float16;
  static ADAPTERD_INLINE float Load(const T* p) { return static_cast<float>(*p); }
  static ADAPTERD_INLINE T Round(float v) { return static_cast<_Float16>(v); }
  template <int N>
  static ADAPTERD_INLINE typename Vec<N>::F LoadN(const T* p) {
    return __builtin_convertvector(LoadBytes<typename Vec<N>::H>(p), typename Vec<N>::F);
  }
  static ADAPTERD_INLINE void Load32(const T* p, V16& a, V16& b) {
    a = LoadN<16>(p);
    b = LoadN<16>(p + 16);
  }
  static ADAPTERD_INLINE void Store32(T* p, V16 a, V16 b) {
    StoreBytes(p, __builtin_convertvector(a, Vec<16>::H));
    StoreBytes(p + 16, __builtin_convertvector(b, Vec<16>::H));
  }
  static constexpr int Element(int half, int lane) { return half * 16 + lane; }
  static ADAPTERD_INLINE float Narrow(float v) { return static_cast<float>(static_cast<_Float16>(v)); }
  static ADAPTERD_INLINE V16 NarrowN(V16 v) {
    return __builtin_convertvector(__builtin_convertvector(v, Vec<16>::H), V16);
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
  // Round() on 16 lanes, each result in the low half of its word.
  static ADAPTERD_INLINE U16 RoundN(V16 v) {
    const U16 u = reinterpret_cast<U16>(v);
    const U16 rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? U16{} + 0x7FC0u : rounded;
  }
  static ADAPTERD_INLINE void Load32(const T* p, V16& a, V16& b) { LoadPairs<16>(p, a, b); }
  static ADAPTERD_INLINE void Store32(T* p, V16 a, V16 b) { StoreBytes(p, RoundN(a) | (RoundN(b) << 16)); }
  static constexpr int Element(int half, int lane) { return 2 * lane + half; }
  static ADAPTERD_INLINE float Narrow(float v) { return std::bit_cast<float>(static_cast<uint32_t>(Round(v)) << 16); }
  static ADAPTERD_INLINE V16 NarrowN(V16 v) { return reinterpret_cast<V16>(RoundN(v) << 16); }
};

// e^x on 16 lanes, within a few ulp of expf over [-87, 88]: 2^n times a
// degree-6 polynomial of the remainder (the Cephes expf scheme). Inputs are
// clamped to [-87.3, 88.7], so the result is never 0 or infinite.
ADAPTERD_INLINE V16 Exp(V16 x) {
  x = x < -87.3f ? V16{} - 87.3f : x;
  x = x > 88.7f ? V16{} + 88.7f : x;
  // n = round(x / ln 2), by the 1.5 * 2^23 trick (exact for |n| < 2^22).
  const V16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const V16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  V16 y = V16{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const I16 e = (__builtin_convertvector(n, I16) + 127) << 23;
  return y * reinterpret_cast<V16>(e);
}

}  // namespace adapterd::model::cpu

#endif  // ADAPTERD_SERVER_MODEL_CPU_VEC_H_
