// Function multiversioning for the hand-written CPU loops.
#ifndef ADAPTERD_SERVER_MODEL_CPU_CLONES_H_
#define ADAPTERD_SERVER_MODEL_CPU_CLONES_H_

// ADAPTERD_CLONES compiles a function for AVX-512 (x86-64-v4), AVX2 + FMA +
// F16C (x86-64-v3) and the baseline, and picks one when the binary loads, so
// the build still runs on any x86-64. Put it on the function that holds the
// loop, not on a caller: a lambda or a function it calls through a pointer
// is not cloned. ADAPTERD_INLINE pulls helpers into each clone, and
// ADAPTERD_INLINE_LAMBDA a lambda that such a helper calls.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ADAPTERD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ADAPTERD_CLONES
#endif
#define ADAPTERD_INLINE inline __attribute__((always_inline))
// The same for a lambda passed to an ADAPTERD_INLINE helper, placed after its
// parameter list: the lambda is then pulled into the clone as well.
#define ADAPTERD_INLINE_LAMBDA __attribute__((always_inline))

#endif  // ADAPTERD_SERVER_MODEL_CPU_CLONES_H_
