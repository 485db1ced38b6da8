/* rope.cu - 2-D rotary on q and k in place (vision towers, spec §2.3/§3.4): NeoX rotate_half pairs (d, d+h),
 * computed in f32 from bf16 q/k and f32 cos/sin tables, rounded once to bf16 (spec §6 item 2). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/rope.cuh"
#include "qvl.h"

/* One thread per (row, head slot, group of V pairs (d, d + half) with d < half): V = 4 or 2 consecutive pairs
 * when half allows (8- or 4-byte accesses), else 1. Head slot hh < n_hh of a row: qkv points at its first rotated
 * head (q's heads, then k's). */
template <int V>
__global__ void rope_qk_kernel(__nv_bfloat16 *qkv, const float *cos, const float *sin, int64_t rows, int heads,
                               int n_hh, int head_dim) {
  int half = head_dim / 2, groups = half / V;
  int64_t per_row = (int64_t)n_hh * groups, n = rows * per_row;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / per_row;
    int rem = (int)(i % per_row), hh = rem / groups, d0 = (rem % groups) * V; /* hh: q heads, then k heads */
    __nv_bfloat16 *x = qkv + r * 3 * heads * head_dim + (int64_t)hh * head_dim;
    const float *c = cos + r * head_dim, *s = sin + r * head_dim;
    __nv_bfloat16 lo[V], hi[V];
#pragma unroll
    for (int k = 0; k < V; k++) lo[k] = x[d0 + k], hi[k] = x[d0 + half + k];
#pragma unroll
    for (int k = 0; k < V; k++) {
      int d = d0 + k;
      float a = __bfloat162float(lo[k]), b = __bfloat162float(hi[k]);
      x[d] = rope_lo(a, b, c[d], s[d]);
      x[d + half] = rope_hi(a, b, c[d + half], s[d + half]);
    }
  }
}

/* The V = 4 case with 8-byte loads and stores of q/k and 16-byte loads of the tables (every offset a multiple of
 * 4 elements: head_dim % 8 == 0 and aligned buffers, checked by the launcher); rope.cuh's arithmetic, which is the
 * same as above. */
__global__ void rope_qk4v_kernel(__nv_bfloat16 *qkv, const float *cos, const float *sin, int64_t rows, int heads,
                                 int n_hh, int head_dim) {
  int half = head_dim / 2, groups = half / 4;
  int64_t per_row = (int64_t)n_hh * groups, n = rows * per_row;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / per_row;
    int rem = (int)(i % per_row), hh = rem / groups, d0 = (rem % groups) * 4;
    __nv_bfloat16 *x = qkv + r * 3 * heads * head_dim + (int64_t)hh * head_dim + d0;
    const float *c = cos + r * head_dim + d0, *s = sin + r * head_dim + d0;
    uint2 lo = *(const uint2 *)x, hi = *(const uint2 *)(x + half);
    rope4(lo, hi, *(const float4 *)c, *(const float4 *)(c + half), *(const float4 *)s, *(const float4 *)(s + half));
    *(uint2 *)x = lo;
    *(uint2 *)(x + half) = hi;
  }
}

extern "C" int cuda_rope_qk(uint16_t *qkv, const float *cos, const float *sin, int64_t rows, int heads, int head_dim,
                            int parts, qvl_stream s) {
  int half = head_dim / 2, v = half % 4 == 0 ? 4 : half % 2 == 0 ? 2 : 1;
  if (parts < 1 || parts > 3) return QVL_ERR_INVALID_ARG;
  /* the rotated head slots of a row: q's and k's heads, or one of the two */
  const int n_hh = parts == 3 ? 2 * heads : heads;
  int64_t n = rows * n_hh * (half / v);
  if (n == 0) return QVL_OK;
  unsigned blocks = (unsigned)((n + 255) / 256 > 262140 ? 262140 : (n + 255) / 256);
  __nv_bfloat16 *q = (__nv_bfloat16 *)qkv + (parts == CUDA_ROPE_K ? (int64_t)heads * head_dim : 0);
  int aligned = head_dim % 8 == 0 && !((uintptr_t)qkv % 8) && !((uintptr_t)cos % 16) && !((uintptr_t)sin % 16);
  if (v == 4 && aligned) rope_qk4v_kernel<<<blocks, 256, 0, s>>>(q, cos, sin, rows, heads, n_hh, head_dim);
  else if (v == 4) rope_qk_kernel<4><<<blocks, 256, 0, s>>>(q, cos, sin, rows, heads, n_hh, head_dim);
  else if (v == 2) rope_qk_kernel<2><<<blocks, 256, 0, s>>>(q, cos, sin, rows, heads, n_hh, head_dim);
  else rope_qk_kernel<1><<<blocks, 256, 0, s>>>(q, cos, sin, rows, heads, n_hh, head_dim);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

/* One thread per (row, j < head_dim/2); writes j and j + head_dim/2. f32 angle = pos * inv_freq, as the
 * reference builds it; accurate cosf/sinf (not the fast intrinsics: angles reach hundreds of radians). */
__global__ void rope_tables_kernel(float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows,
                                   int head_dim, float theta) {
  int half = head_dim / 2, nf = half / 2;
  int64_t n = rows * half;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / half;
    int j = (int)(i % half);
    const int32_t *p = pos + 2 * (order ? (int64_t)order[r] : r);
    float inv_freq = 1.0f / powf(theta, (float)(2 * (j % nf)) / (float)half);
    float a = (float)(j < nf ? p[0] : p[1]) * inv_freq, c = cosf(a), s = sinf(a);
    cos[r * head_dim + j] = cos[r * head_dim + j + half] = c;
    sin[r * head_dim + j] = sin[r * head_dim + j + half] = s;
  }
}

extern "C" int cuda_rope_tables(float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows,
                                int head_dim, float theta, qvl_stream s) {
  int64_t n = rows * (head_dim / 2);
  if (n == 0) return QVL_OK;
  int64_t blocks = (n + 255) / 256;
  rope_tables_kernel<<<(unsigned)(blocks > 262140 ? 262140 : blocks), 256, 0, s>>>(cos, sin, pos, order, rows,
                                                                                   head_dim, theta);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
