// Function qualifiers for code shared by the CPU (C++) and CUDA (nvcc) kernels.
#pragma once

#if defined(__CUDACC__)
// Compiled by nvcc: callable from host and device code, always inlined.
#define TGRA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TGRA_HOST_DEVICE inline
#endif

#if defined(__GNUC__) || defined(__clang__)
// Forced inlining (an out-of-line call inside an OpenMP simd loop stops its vectorisation).
#define TGRA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define TGRA_ALWAYS_INLINE inline
#endif
