/* swiglu.cu - the SwiGLU product of a fused gate|up GEMM output: y[r][j] = silu(gu[r][j]) * gu[r][f + j],
 * bf16, rounded as the reference rounds (act_fn(gate) to bf16, then the product to bf16). One thread per 8
 * outputs with 16-byte loads of both halves when f % 8 == 0; a scalar loop otherwise. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/swiglu.cuh"
#include "backend/cuda/vec.cuh"
#include "qvl.h"

static unsigned grid_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b > 65535 * 4 ? 65535 * 4 : b < 1 ? 1 : b);
}

__global__ void swiglu8_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *gu, int64_t rows, int f8) {
  int64_t n = rows * f8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / f8, j = i - r * f8;
    const __nv_bfloat16 *g = gu + r * 16 * f8 + 8 * j;
    bf16x8 a = load8(g), b = load8(g + 8 * f8), o;
    for (int k = 0; k < 8; k++) o.set(k, silu_bf16(a.get(k)) * b.get(k));
    store8(y + r * 8 * f8 + 8 * j, o);
  }
}

__global__ void swiglu_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *gu, int64_t rows, int f) {
  int64_t n = rows * f;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / f, j = i - r * f;
    float g = __bfloat162float(gu[r * 2 * f + j]), u = __bfloat162float(gu[r * 2 * f + f + j]);
    y[i] = __float2bfloat16(silu_bf16(g) * u);
  }
}

extern "C" int cuda_swiglu(uint16_t *y, const uint16_t *gu, int64_t rows, int f, qvl_stream s) {
  if (rows && f % 8 == 0 && vec8_ok(8, y, gu))
    swiglu8_kernel<<<grid_for(rows * (f / 8)), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)gu, rows, f / 8);
  else if (rows && f)
    swiglu_kernel<<<grid_for(rows * f), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)gu, rows, f);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
