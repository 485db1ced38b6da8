/* vec.cuh - 16-byte vectors of 8 bf16 for the bandwidth-bound kernels: one load or store moves 8 elements. */
#pragma once
#include <cuda_bf16.h>

struct bf16x8 {
  uint4 raw;
  __device__ __forceinline__ float get(int i) const { return __bfloat162float(((const __nv_bfloat16 *)&raw)[i]); }
  __device__ __forceinline__ void set(int i, float v) { ((__nv_bfloat16 *)&raw)[i] = __float2bfloat16(v); }
  __device__ __forceinline__ __nv_bfloat16 h(int i) const { return ((const __nv_bfloat16 *)&raw)[i]; }
  __device__ __forceinline__ void seth(int i, __nv_bfloat16 v) { ((__nv_bfloat16 *)&raw)[i] = v; }
};

__device__ __forceinline__ bf16x8 load8(const __nv_bfloat16 *p) { return bf16x8{*(const uint4 *)p}; }
__device__ __forceinline__ void store8(__nv_bfloat16 *p, bf16x8 v) { *(uint4 *)p = v.raw; }

/* 16-byte vector paths need n % 8 == 0 and 16-byte aligned pointers (every backend buffer is). */
static inline bool vec8_ok(long long n, const void *a, const void *b = nullptr, const void *c = nullptr) {
  return n % 8 == 0 && !((unsigned long long)a % 16) && !((unsigned long long)b % 16) && !((unsigned long long)c % 16);
}
