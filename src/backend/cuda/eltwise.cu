/* eltwise.cu - residual add, SwiGLU product, GELU (erf and tanh forms) and dtype conversions, bf16.
 * Grid-stride loops; each output is rounded to bf16 exactly where PyTorch's bf16 ops round. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/vec.cuh"
#include "qvl.h"

#define GRID_STRIDE(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

static unsigned grid_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b > 65535 * 4 ? 65535 * 4 : b < 1 ? 1 : b);
}

static int launched(void) { return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE; }

__global__ void add_kernel(__nv_bfloat16 *h, const __nv_bfloat16 *x, int64_t n) {
  GRID_STRIDE(i, n) h[i] = __float2bfloat16(__bfloat162float(h[i]) + __bfloat162float(x[i]));
}

/* The reference computes act_fn(gate) as a bf16 tensor, then multiplies by up in bf16: two roundings. */
__global__ void silu_mul_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *g, const __nv_bfloat16 *u, int64_t n) {
  GRID_STRIDE(i, n) {
    float v = __bfloat162float(g[i]);
    __nv_bfloat16 a = __float2bfloat16(v / (1.0f + expf(-v)));
    y[i] = __float2bfloat16(__bfloat162float(a) * __bfloat162float(u[i]));
  }
}

__global__ void gelu_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, int64_t n, int tanh_approx) {
  GRID_STRIDE(i, n) {
    float v = __bfloat162float(x[i]), r;
    if (tanh_approx) r = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    else r = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    y[i] = __float2bfloat16(r);
  }
}

/* 16-byte variants over n8 = n / 8 vectors. */
__global__ void add8_kernel(__nv_bfloat16 *h, const __nv_bfloat16 *x, int64_t n8) {
  GRID_STRIDE(i, n8) {
    bf16x8 a = load8(h + 8 * i), b = load8(x + 8 * i);
    for (int k = 0; k < 8; k++) a.set(k, a.get(k) + b.get(k));
    store8(h + 8 * i, a);
  }
}

__global__ void silu_mul8_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *g, const __nv_bfloat16 *u, int64_t n8) {
  GRID_STRIDE(i, n8) {
    bf16x8 a = load8(g + 8 * i), b = load8(u + 8 * i), o;
    for (int k = 0; k < 8; k++) {
      float v = a.get(k);
      o.set(k, __bfloat162float(__float2bfloat16(v / (1.0f + expf(-v)))) * b.get(k));
    }
    store8(y + 8 * i, o);
  }
}

__global__ void gelu8_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, int64_t n8, int tanh_approx) {
  GRID_STRIDE(i, n8) {
    bf16x8 a = load8(x + 8 * i), o;
    for (int k = 0; k < 8; k++) {
      float v = a.get(k);
      o.set(k, tanh_approx ? 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)))
                           : 0.5f * v * (1.0f + erff(v * 0.7071067811865476f)));
    }
    store8(y + 8 * i, o);
  }
}

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *y, const float *x, int64_t n) { GRID_STRIDE(i, n) y[i] = __float2bfloat16(x[i]); }
__global__ void bf16_to_f32_kernel(float *y, const __nv_bfloat16 *x, int64_t n) { GRID_STRIDE(i, n) y[i] = __bfloat162float(x[i]); }

extern "C" int cuda_add(uint16_t *h, const uint16_t *x, int64_t n, qvl_stream s) {
  if (n && vec8_ok(n, h, x)) add8_kernel<<<grid_for(n / 8), 256, 0, s>>>((__nv_bfloat16 *)h, (const __nv_bfloat16 *)x, n / 8);
  else if (n) add_kernel<<<grid_for(n), 256, 0, s>>>((__nv_bfloat16 *)h, (const __nv_bfloat16 *)x, n);
  return launched();
}

extern "C" int cuda_silu_mul(uint16_t *y, const uint16_t *g, const uint16_t *u, int64_t n, qvl_stream s) {
  if (n && vec8_ok(n, y, g, u))
    silu_mul8_kernel<<<grid_for(n / 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)g,
                                                      (const __nv_bfloat16 *)u, n / 8);
  else if (n)
    silu_mul_kernel<<<grid_for(n), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)g, (const __nv_bfloat16 *)u,
                                                n);
  return launched();
}

extern "C" int cuda_gelu(uint16_t *y, const uint16_t *x, int64_t n, int tanh_approx, qvl_stream s) {
  if (n && vec8_ok(n, y, x))
    gelu8_kernel<<<grid_for(n / 8), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x, n / 8, tanh_approx);
  else if (n)
    gelu_kernel<<<grid_for(n), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x, n, tanh_approx);
  return launched();
}

extern "C" int cuda_f32_to_bf16(uint16_t *y, const float *x, int64_t n, qvl_stream s) {
  if (n) f32_to_bf16_kernel<<<grid_for(n), 256, 0, s>>>((__nv_bfloat16 *)y, x, n);
  return launched();
}

extern "C" int cuda_bf16_to_f32(float *y, const uint16_t *x, int64_t n, qvl_stream s) {
  if (n) bf16_to_f32_kernel<<<grid_for(n), 256, 0, s>>>(y, (const __nv_bfloat16 *)x, n);
  return launched();
}
