/* gemv.cu - y[m,n] = x[m,k] w[n,k]^T (+ bias[n]) for a few rows of x (m <= 16: decode steps), bf16 in and out,
 * f32 accumulation, epilogue GELU (tanh form) or += res. A decode step reads every weight once per token, so this
 * runs at the HBM limit only if each weight byte is read exactly once for all m rows and enough bytes are in flight.
 *   CTA = 8 warps on 16 weight rows (one contiguous 16 x k block); warp w takes the 32-column chunks w, w + 8, ...
 *   of k. Per chunk, lane (g = lane / 4, t = lane % 4) loads 16 bytes of weight rows g and g + 8 (columns 8t ..
 *   8t + 7) and 16 bytes of x row g, which feed two mma.m16n8k16 (the weight tile is A, x^T is B: tensor cores do
 *   the m products, so the issue cost hardly grows with m). Inside a chunk the k order is permuted the same way
 *   in A and B (16-byte load element 2i, 2i + 1 -> fragment register i), so the loads feed the fragments directly.
 *   8 chunks per warp (4 for m > 8, whose x fragments take twice the registers) are loaded before the first mma:
 *   64 KB of weights in flight per CTA, 2 CTAs per SM, so the 224 CTAs of a 3584-row layer keep ~14 MB in flight.
 *   The 8 warps' partial sums meet in shared memory and are added in warp order: every output is deterministic and
 *   depends only on its own row of x (the same bits for any m).
 * Used by cuda_linear (gemm.c) for the shapes where its first-call timing finds it faster than cuBLASLt. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/vec.cuh"
#include "qvl.h"

enum { WARPS = 8, ROWS = 16 }; /* a chunk is 32 columns = 4 16-byte columns */

/* 16 bytes at p when on, else zeros. Weights are read once per token: .nc (read-only path), L1::no_allocate (L1
 * keeps x), L2::256B (the neighbouring chunks, which the CTA's other warps read next). */
static __device__ __forceinline__ uint4 load_w(const uint4 *p, bool on) {
  uint4 v;
  asm("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %5, 0;\n\t"
      "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
      "@p ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "r"((int)on));
  return v;
}

/* 16 bytes of x at p when on, else zeros; x is read by every CTA, so it stays cached in L1. */
static __device__ __forceinline__ uint4 load_x(const uint4 *p, bool on) {
  uint4 v;
  asm("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %5, 0;\n\t"
      "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
      "@p ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "r"((int)on));
  return v;
}

/* d += A B, PTX mma.m16n8k16 .bf16 fragments: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1], a2 = A[g][2t+8..2t+9],
 * a3 = A[g+8][2t+8..2t+9]; b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; d = D[g][2t], D[g][2t+1], D[g+8][2t],
 * D[g+8][2t+1] (lower k in the lower 16 bits). */
static __device__ __forceinline__ void mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                           uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* MT tiles of 8 x rows: m <= 8 * MT; U chunks per warp loaded before the first mma. k % 8 == 0, x and w 16-byte
 * aligned. */
template <int MT, int U> /* 2 CTAs per SM: up to 128 registers, so ptxas keeps every load of an iteration in flight */
__global__ void __launch_bounds__(WARPS * 32, 2)
    gemv_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const __nv_bfloat16 *w, const __nv_bfloat16 *bias,
                const __nv_bfloat16 *res, int m, int n, int k, int gelu) {
  __shared__ float part[WARPS][MT * 4][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * ROWS, k16 = k / 8; /* 16-byte columns per row */
  /* rows past n read row n - 1 (their sums are dropped), so the loop has no row test */
  const uint4 *w0 = (const uint4 *)(w + (int64_t)min(n0 + g, n - 1) * k) + t;
  const uint4 *w1 = (const uint4 *)(w + (int64_t)min(n0 + g + 8, n - 1) * k) + t;
  const uint4 *xr[MT];
  bool xon[MT];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    xon[mt] = mt * 8 + g < m; /* B columns past m stay zero and their sums are dropped */
    xr[mt] = (const uint4 *)(x + (int64_t)(xon[mt] ? mt * 8 + g : 0) * k) + t;
  }
  float acc[MT][4] = {};
  /* c: the 16-byte column where this warp's next chunk starts; chunk u of an iteration starts at c + 32 u */
  for (int c = warp * 4; c < k16; c += WARPS * U * 4) {
    uint4 a0[U], a1[U], b[U][MT];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = c + u * WARPS * 4;
      const bool on = j + t < k16; /* k % 8 == 0: a lane's 8 columns are all in k or all past it */
      a0[u] = load_w(w0 + j, on), a1[u] = load_w(w1 + j, on);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) b[u][mt] = load_x(xr[mt] + j, on && xon[mt]);
    }
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        mma(acc[mt], a0[u].x, a1[u].x, a0[u].y, a1[u].y, b[u][mt].x, b[u][mt].y); /* columns 8t .. 8t+3 */
        mma(acc[mt], a0[u].z, a1[u].z, a0[u].w, a1[u].w, b[u][mt].z, b[u][mt].w); /* columns 8t+4 .. 8t+7 */
      }
  }
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < 4; i++) part[warp][mt * 4 + i][lane] = acc[mt][i];
  __syncthreads();
  /* output e: register q = 4 mt + i of lane l, weight row n0 + l/4 (+ 8 for i >= 2), x row 8 mt + 2 (l%4) + i%2 */
  for (int e = threadIdx.x; e < MT * 4 * 32; e += WARPS * 32) {
    const int q = e / 32, l = e % 32;
    const int row = n0 + l / 4 + (q % 4 >= 2 ? 8 : 0), col = q / 4 * 8 + l % 4 * 2 + q % 2;
    if (row >= n || col >= m) continue;
    float v = 0;
    for (int s = 0; s < WARPS; s++) v += part[s][q][l];
    const int64_t o = (int64_t)col * n + row;
    if (bias) v += __bfloat162float(bias[row]);
    if (res) v += __bfloat162float(res[o]);
    if (gelu) v = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    y[o] = __float2bfloat16(v);
  }
}

extern "C" int cuda_gemv(uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *bias, const uint16_t *res,
                         int m, int n, int k, int gelu, qvl_stream s) {
  if (m < 1 || m > CUDA_GEMV_MAX_ROWS || n < 1 || k < 8 || !vec8_ok(k, x, w)) return QVL_ERR_UNSUPPORTED;
  const unsigned grid = (unsigned)((n + ROWS - 1) / ROWS);
  __nv_bfloat16 *Y = (__nv_bfloat16 *)y;
  const __nv_bfloat16 *X = (const __nv_bfloat16 *)x, *W = (const __nv_bfloat16 *)w;
  const __nv_bfloat16 *B = (const __nv_bfloat16 *)bias, *R = (const __nv_bfloat16 *)res;
  if (m <= 8)
    gemv_kernel<1, 8><<<grid, WARPS * 32, 0, s>>>(Y, X, W, B, R, m, n, k, gelu);
  else
    gemv_kernel<2, 4><<<grid, WARPS * 32, 0, s>>>(Y, X, W, B, R, m, n, k, gelu);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
