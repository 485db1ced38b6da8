/* kv_cache.cu - qkv_to_cache: the language model's attention input in one pass over the QKV GEMM output row.
 * Per head: RMSNorm of q and k when the norm weights are given (Qwen3, spec §4.2: f32 statistics, the normalised
 * value rounded to bf16 before the bf16 weight multiply), NeoX rotary with the text model's numerics (cos/sin
 * rounded to bf16, each product and the sum rounded to bf16: spec §4.4, as rope_heads), q to its rows, k and v
 * to their slots of the paged cache. Bandwidth-bound: a group of G lanes per head, 16-byte loads and stores. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/vec.cuh"
#include "qvl.h"

typedef __nv_bfloat16 bf16;

/* V consecutive pairs (d, d + half) per step: 8 (16-byte accesses, half % 8 == 0) or 1. */
template <int V>
static __device__ __forceinline__ void load_half(bf16 *lo, bf16 *hi, const bf16 *x, int d, int half) {
  if (V == 8) {
    bf16x8 a = load8(x + d), b = load8(x + half + d);
#pragma unroll
    for (int i = 0; i < 8; i++) lo[i] = a.h(i), hi[i] = b.h(i);
  } else {
    lo[0] = x[d], hi[0] = x[half + d];
  }
}

template <int V>
static __device__ __forceinline__ void store_half(bf16 *y, const bf16 *lo, const bf16 *hi, int d, int half) {
  if (V == 8) {
    bf16x8 a, b;
#pragma unroll
    for (int i = 0; i < 8; i++) a.seth(i, lo[i]), b.seth(i, hi[i]);
    store8(y + d, a), store8(y + half + d, b);
  } else {
    y[d] = lo[0], y[half + d] = hi[0];
  }
}

/* One group of G lanes (a power of two <= 32) per (row, head) over the heads + 2 kv_heads heads of a row. Every
 * lane runs the group reduction (shuffles need the whole warp), live or not. */
template <int V>
__global__ void qkv_to_cache_kernel(bf16 *q, bf16 *kc, bf16 *vc, const bf16 *qkv, const bf16 *q_norm,
                                    const bf16 *k_norm, const float *cos, const float *sin, const int32_t *slot,
                                    int64_t rows, int heads, int kv_heads, int hd, int G, float eps) {
  int nh = heads + 2 * kv_heads, half = hd / 2, lane = threadIdx.x % G;
  int64_t item = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / G;
  bool live = item < rows * nh;
  int64_t r = live ? item / nh : 0;
  int hh = live ? (int)(item % nh) : 0;
  const bf16 *x = qkv + item * hd;
  bool is_q = hh < heads, rot = live && hh < heads + kv_heads;
  const bf16 *w = is_q ? q_norm : k_norm;
  float ss = 0.f;
  if (rot && w)
    for (int d = lane * V; d < half; d += G * V) {
      bf16 lo[V], hi[V];
      load_half<V>(lo, hi, x, d, half);
#pragma unroll
      for (int i = 0; i < V; i++) {
        float a = __bfloat162float(lo[i]), b = __bfloat162float(hi[i]);
        ss += a * a + b * b;
      }
    }
  for (int o = G / 2; o; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (!live) return;
  int64_t s = hh >= heads ? slot[r] : 0;
  if (!rot) { /* v head: a copy into its slot */
    bf16 *y = vc + (s * kv_heads + (hh - heads - kv_heads)) * hd;
    for (int d = lane * V; d < half; d += G * V) {
      bf16 lo[V], hi[V];
      load_half<V>(lo, hi, x, d, half);
      store_half<V>(y, lo, hi, d, half);
    }
    return;
  }
  bf16 *y = is_q ? q + (r * heads + hh) * hd : kc + (s * kv_heads + (hh - heads)) * hd;
  float inv = rsqrtf(ss / (float)hd + eps);
  const float *cr = cos + r * hd, *sr = sin + r * hd;
  for (int d = lane * V; d < half; d += G * V) {
    bf16 lo[V], hi[V];
    load_half<V>(lo, hi, x, d, half);
#pragma unroll
    for (int i = 0; i < V; i++) {
      bf16 a = lo[i], b = hi[i];
      if (w) {
        a = __hmul(__float2bfloat16(__bfloat162float(a) * inv), w[d + i]);
        b = __hmul(__float2bfloat16(__bfloat162float(b) * inv), w[half + d + i]);
      }
      bf16 c0 = __float2bfloat16(cr[d + i]), s0 = __float2bfloat16(sr[d + i]);
      bf16 c1 = __float2bfloat16(cr[half + d + i]), s1 = __float2bfloat16(sr[half + d + i]);
      lo[i] = __hsub(__hmul(a, c0), __hmul(b, s0));
      hi[i] = __hadd(__hmul(b, c1), __hmul(a, s1));
    }
    store_half<V>(y, lo, hi, d, half);
  }
}

extern "C" int cuda_qkv_to_cache(uint16_t *q, uint16_t *kc, uint16_t *vc, const uint16_t *qkv, const uint16_t *q_norm,
                                 const uint16_t *k_norm, const float *cos, const float *sin, const int32_t *slot,
                                 int64_t rows, int heads, int kv_heads, int head_dim, float eps, qvl_stream s) {
  if (head_dim < 2 || head_dim % 2 || kv_heads < 1 || heads < 1) return QVL_ERR_UNSUPPORTED;
  int half = head_dim / 2, v = half % 8 == 0 && vec8_ok(8, q, kc, vc) && vec8_ok(8, qkv) ? 8 : 1;
  int groups = half / v, G = 1;
  while (G < groups && G < 32) G *= 2;
  int64_t threads = rows * (heads + 2 * kv_heads) * G;
  if (threads == 0) return QVL_OK;
  int64_t blocks = (threads + 255) / 256;
  if (blocks > 2147483647) return QVL_ERR_LIMIT;
  const bf16 *qn = (const bf16 *)q_norm, *kn = (const bf16 *)k_norm;
  if (v == 8)
    qkv_to_cache_kernel<8><<<(unsigned)blocks, 256, 0, s>>>((bf16 *)q, (bf16 *)kc, (bf16 *)vc, (const bf16 *)qkv, qn,
                                                            kn, cos, sin, slot, rows, heads, kv_heads, head_dim, G,
                                                            eps);
  else
    qkv_to_cache_kernel<1><<<(unsigned)blocks, 256, 0, s>>>((bf16 *)q, (bf16 *)kc, (bf16 *)vc, (const bf16 *)qkv, qn,
                                                            kn, cos, sin, slot, rows, heads, kv_heads, head_dim, G,
                                                            eps);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
