/* rmsnorm.cu - y = x / sqrt(mean(x^2) + eps) * w, bf16 in and out, f32 statistics, one warp per row.
 * Used by the Qwen2.5-VL vision blocks and merger and by every LM layer. 16-byte loads where dim allows. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "qvl.h"

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
  for (int o = 16; o; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  float inv = rsqrtf(ss / (float)dim + eps);
  for (int j = lane; j < dim; j += 32) {
    /* the reference rounds the normalised value to bf16, then multiplies by the bf16 weight */
    __nv_bfloat16 n = __float2bfloat16(__bfloat162float(xr[j]) * inv);
    y[row * dim + j] = __hmul(n, w[j]);
  }
}

extern "C" int cuda_rmsnorm(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t rows, int dim, float eps,
                            qvl_stream s) {
  if (rows == 0) return QVL_OK;
  const int warps = 8;
  unsigned blocks = (unsigned)((rows + warps - 1) / warps);
  rmsnorm_kernel<<<blocks, warps * 32, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                               (const __nv_bfloat16 *)w, rows, dim, eps);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
