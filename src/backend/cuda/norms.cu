/* norms.cu - RMSNorm (Qwen2.5-VL vision blocks and merger, every LM layer) and LayerNorm (Qwen3-VL vision),
 * bf16 in and out, f32 statistics, one warp per row. The RMSNorm rounds the normalised value to bf16
 * before the bf16 weight multiply, as the reference does (spec §6 item 4); LayerNorm rounds once at the end
 * like PyTorch's kernel. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/vec.cuh"
#include "qvl.h"

static __device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void rmsnorm_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const __nv_bfloat16 *w, int64_t rows,
                               int dim, float eps) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const __nv_bfloat16 *xr = x + row * dim;
  float ss = 0.f;
  for (int j = lane; j < dim; j += 32) {
    float v = __bfloat162float(xr[j]);
    ss += v * v;
  }
  float inv = rsqrtf(warp_sum(ss) / (float)dim + eps);
  for (int j = lane; j < dim; j += 32) {
    __nv_bfloat16 n = __float2bfloat16(__bfloat162float(xr[j]) * inv);
    y[row * dim + j] = __hmul(n, w[j]);
  }
}

__global__ void layernorm_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const __nv_bfloat16 *w,
                                 const __nv_bfloat16 *b, int64_t rows, int dim, float eps) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const __nv_bfloat16 *xr = x + row * dim;
  float s = 0.f;
  for (int j = lane; j < dim; j += 32) s += __bfloat162float(xr[j]);
  float mean = warp_sum(s) / (float)dim, ss = 0.f;
  for (int j = lane; j < dim; j += 32) {
    float d = __bfloat162float(xr[j]) - mean;
    ss += d * d;
  }
  float rstd = rsqrtf(warp_sum(ss) / (float)dim + eps);
  for (int j = lane; j < dim; j += 32)
    y[row * dim + j] = __float2bfloat16((__bfloat162float(xr[j]) - mean) * rstd * __bfloat162float(w[j]) +
                                        __bfloat162float(b[j]));
}

/* The same two kernels with 16-byte accesses (dim % 8 == 0) and the row held in registers: each lane keeps its CH
 * chunks of 8 (elements lane * 8 + c * 256), so the row is read from memory once; the sums run in the same order as
 * above, chunk after chunk. CH = ceil(dim / 256) <= MAX_CH (2,048 .. 4,096-wide rows). */
enum { MAX_CH = 16 };

template <int CH>
__global__ void rmsnorm8_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const __nv_bfloat16 *w, int64_t rows,
                                int dim, float eps) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const __nv_bfloat16 *xr = x + row * dim;
  bf16x8 v[CH];
  float ss = 0.f;
#pragma unroll
  for (int c = 0; c < CH; c++) {
    int j = lane * 8 + c * 256;
    if (j < dim) {
      v[c] = load8(xr + j);
      for (int i = 0; i < 8; i++) ss += v[c].get(i) * v[c].get(i);
    }
  }
  float inv = rsqrtf(warp_sum(ss) / (float)dim + eps);
#pragma unroll
  for (int c = 0; c < CH; c++) {
    int j = lane * 8 + c * 256;
    if (j < dim) {
      bf16x8 ww = load8(w + j), o;
      for (int i = 0; i < 8; i++) o.seth(i, __hmul(__float2bfloat16(v[c].get(i) * inv), ww.h(i)));
      store8(y + row * dim + j, o);
    }
  }
}

template <int CH>
__global__ void layernorm8_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const __nv_bfloat16 *w,
                                  const __nv_bfloat16 *b, int64_t rows, int dim, float eps) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const __nv_bfloat16 *xr = x + row * dim;
  bf16x8 v[CH];
  float s = 0.f, ss = 0.f;
#pragma unroll
  for (int c = 0; c < CH; c++) {
    int j = lane * 8 + c * 256;
    if (j < dim) {
      v[c] = load8(xr + j);
      for (int i = 0; i < 8; i++) s += v[c].get(i);
    }
  }
  float mean = warp_sum(s) / (float)dim;
#pragma unroll
  for (int c = 0; c < CH; c++)
    if (lane * 8 + c * 256 < dim)
      for (int i = 0; i < 8; i++) ss += (v[c].get(i) - mean) * (v[c].get(i) - mean);
  float rstd = rsqrtf(warp_sum(ss) / (float)dim + eps);
#pragma unroll
  for (int c = 0; c < CH; c++) {
    int j = lane * 8 + c * 256;
    if (j < dim) {
      bf16x8 ww = load8(w + j), bb = load8(b + j), o;
      for (int i = 0; i < 8; i++) o.set(i, (v[c].get(i) - mean) * rstd * ww.get(i) + bb.get(i));
      store8(y + row * dim + j, o);
    }
  }
}

/* Launches the instance for ch = ceil(dim / 256) chunks (1 <= ch <= CH) on blocks of 8 rows. */
template <int CH>
static void launch_rms(int ch, unsigned grid, cudaStream_t s, __nv_bfloat16 *y, const __nv_bfloat16 *x,
                       const __nv_bfloat16 *w, int64_t rows, int dim, float eps) {
  if (ch == CH) rmsnorm8_kernel<CH><<<grid, 256, 0, s>>>(y, x, w, rows, dim, eps);
  else if constexpr (CH > 1) launch_rms<CH - 1>(ch, grid, s, y, x, w, rows, dim, eps);
}

template <int CH>
static void launch_ln(int ch, unsigned grid, cudaStream_t s, __nv_bfloat16 *y, const __nv_bfloat16 *x,
                      const __nv_bfloat16 *w, const __nv_bfloat16 *b, int64_t rows, int dim, float eps) {
  if (ch == CH) layernorm8_kernel<CH><<<grid, 256, 0, s>>>(y, x, w, b, rows, dim, eps);
  else if constexpr (CH > 1) launch_ln<CH - 1>(ch, grid, s, y, x, w, b, rows, dim, eps);
}

static unsigned blocks_for(int64_t rows, int warps) { return (unsigned)((rows + warps - 1) / warps); }

extern "C" int cuda_rmsnorm(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t rows, int dim, float eps,
                            qvl_stream s) {
  if (rows == 0) return QVL_OK;
  int ch = (dim + 255) / 256;
  if (ch <= MAX_CH && vec8_ok(dim, x, y, w))
    launch_rms<MAX_CH>(ch, blocks_for(rows, 8), s, (__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                       (const __nv_bfloat16 *)w, rows, dim, eps);
  else
    rmsnorm_kernel<<<blocks_for(rows, 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                       (const __nv_bfloat16 *)w, rows, dim, eps);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

extern "C" int cuda_layernorm(uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b, int64_t rows,
                              int dim, float eps, qvl_stream s) {
  if (rows == 0) return QVL_OK;
  int ch = (dim + 255) / 256;
  if (ch <= MAX_CH && vec8_ok(dim, x, y, w) && vec8_ok(dim, b))
    launch_ln<MAX_CH>(ch, blocks_for(rows, 8), s, (__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                      (const __nv_bfloat16 *)w, (const __nv_bfloat16 *)b, rows, dim, eps);
  else
    layernorm_kernel<<<blocks_for(rows, 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                         (const __nv_bfloat16 *)w, (const __nv_bfloat16 *)b, rows,
                                                         dim, eps);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
