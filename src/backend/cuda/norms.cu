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

/* The same two kernels with 16-byte accesses (dim % 8 == 0); the row is read twice, the second time from L1/L2. */
__global__ void rmsnorm8_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const __nv_bfloat16 *w, int64_t rows,
                                int dim, float eps) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const __nv_bfloat16 *xr = x + row * dim;
  float ss = 0.f;
  for (int j = lane * 8; j < dim; j += 256) {
    bf16x8 v = load8(xr + j);
    for (int i = 0; i < 8; i++) ss += v.get(i) * v.get(i);
  }
  float inv = rsqrtf(warp_sum(ss) / (float)dim + eps);
  for (int j = lane * 8; j < dim; j += 256) {
    bf16x8 v = load8(xr + j), ww = load8(w + j), o;
    for (int i = 0; i < 8; i++) o.seth(i, __hmul(__float2bfloat16(v.get(i) * inv), ww.h(i)));
    store8(y + row * dim + j, o);
  }
}

__global__ void layernorm8_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const __nv_bfloat16 *w,
                                  const __nv_bfloat16 *b, int64_t rows, int dim, float eps) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const __nv_bfloat16 *xr = x + row * dim;
  float s = 0.f, ss = 0.f;
  for (int j = lane * 8; j < dim; j += 256) {
    bf16x8 v = load8(xr + j);
    for (int i = 0; i < 8; i++) s += v.get(i);
  }
  float mean = warp_sum(s) / (float)dim;
  for (int j = lane * 8; j < dim; j += 256) {
    bf16x8 v = load8(xr + j);
    for (int i = 0; i < 8; i++) ss += (v.get(i) - mean) * (v.get(i) - mean);
  }
  float rstd = rsqrtf(warp_sum(ss) / (float)dim + eps);
  for (int j = lane * 8; j < dim; j += 256) {
    bf16x8 v = load8(xr + j), ww = load8(w + j), bb = load8(b + j), o;
    for (int i = 0; i < 8; i++) o.set(i, (v.get(i) - mean) * rstd * ww.get(i) + bb.get(i));
    store8(y + row * dim + j, o);
  }
}

static unsigned blocks_for(int64_t rows, int warps) { return (unsigned)((rows + warps - 1) / warps); }

extern "C" int cuda_rmsnorm(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t rows, int dim, float eps,
                            qvl_stream s) {
  if (rows == 0) return QVL_OK;
  if (vec8_ok(dim, x, y, w))
    rmsnorm8_kernel<<<blocks_for(rows, 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                        (const __nv_bfloat16 *)w, rows, dim, eps);
  else
    rmsnorm_kernel<<<blocks_for(rows, 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                       (const __nv_bfloat16 *)w, rows, dim, eps);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

extern "C" int cuda_layernorm(uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b, int64_t rows,
                              int dim, float eps, qvl_stream s) {
  if (rows == 0) return QVL_OK;
  if (vec8_ok(dim, x, y, w) && vec8_ok(dim, b))
    layernorm8_kernel<<<blocks_for(rows, 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                          (const __nv_bfloat16 *)w, (const __nv_bfloat16 *)b, rows,
                                                          dim, eps);
  else
    layernorm_kernel<<<blocks_for(rows, 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                         (const __nv_bfloat16 *)w, (const __nv_bfloat16 *)b, rows,
                                                         dim, eps);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
