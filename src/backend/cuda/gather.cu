/* gather.cu - row gathers (Qwen2.5-VL window reorder and its inverse), strided row copies, and the Qwen3-VL
 * bilinear position-embedding add (f32 weights and sum, one bf16 rounding, then the bf16 residual add:
 * transformers 5.17 numerics, spec §3.3). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/vec.cuh"
#include "qvl.h"

static unsigned grid_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b > 262140 ? 262140 : b < 1 ? 1 : b);
}

__global__ void copy_rows_kernel(__nv_bfloat16 *y, int64_t ys, const __nv_bfloat16 *x, int64_t xs, const int32_t *idx,
                                 int64_t rows, int64_t row_elems) {
  int64_t n = rows * row_elems;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / row_elems, c = i % row_elems, src = idx ? idx[r] : r;
    y[r * ys + c] = x[src * xs + c];
  }
}

/* Row copies 16 bytes at a time (row_elems, strides and pointers multiples of 8 elements). */
__global__ void copy_rows8_kernel(uint4 *y, int64_t ys8, const uint4 *x, int64_t xs8, const int32_t *idx, int64_t rows,
                                  int64_t row8) {
  int64_t n = rows * row8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / row8, c = i % row8, src = idx ? idx[r] : r;
    y[r * ys8 + c] = x[src * xs8 + c];
  }
}

__global__ void add_bilinear_kernel(__nv_bfloat16 *h, const __nv_bfloat16 *table, const int32_t *idx, const float *w,
                                    int64_t rows, int dim) {
  int64_t n = rows * dim;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / dim;
    int c = (int)(i % dim);
    const int32_t *ix = idx + 4 * r;
    const float *wr = w + 4 * r;
    float p = 0.f; /* products and sums rounded separately (no FMA), as the reference's tensor ops do */
    for (int k = 0; k < 4; k++) p = __fadd_rn(p, __fmul_rn(__bfloat162float(table[(int64_t)ix[k] * dim + c]), wr[k]));
    float pos = __bfloat162float(__float2bfloat16(p));
    h[i] = __float2bfloat16(__bfloat162float(h[i]) + pos);
  }
}

static void copy_rows(uint16_t *y, int64_t ys, const uint16_t *x, int64_t xs, const int32_t *idx, int64_t rows,
                      int64_t row_elems, qvl_stream s) {
  if (vec8_ok(row_elems, x, y) && ys % 8 == 0 && xs % 8 == 0)
    copy_rows8_kernel<<<grid_for(rows * row_elems / 8), 256, 0, s>>>((uint4 *)y, ys / 8, (const uint4 *)x, xs / 8, idx,
                                                                      rows, row_elems / 8);
  else
    copy_rows_kernel<<<grid_for(rows * row_elems), 256, 0, s>>>((__nv_bfloat16 *)y, ys, (const __nv_bfloat16 *)x, xs,
                                                                 idx, rows, row_elems);
}

extern "C" int cuda_gather_rows(uint16_t *y, const uint16_t *x, const int32_t *idx, int64_t n, int64_t row_elems,
                                qvl_stream s) {
  if (n) copy_rows(y, row_elems, x, row_elems, idx, n, row_elems, s);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

extern "C" int cuda_copy_rows(uint16_t *y, int64_t y_stride, const uint16_t *x, int64_t x_stride, int64_t rows,
                              int64_t row_elems, qvl_stream s) {
  if (rows) copy_rows(y, y_stride, x, x_stride, NULL, rows, row_elems, s);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

extern "C" int cuda_add_bilinear(uint16_t *h, const uint16_t *table, const int32_t *idx, const float *w, int64_t rows,
                                 int dim, qvl_stream s) {
  if (rows) add_bilinear_kernel<<<grid_for(rows * dim), 256, 0, s>>>((__nv_bfloat16 *)h,
                                                                      (const __nv_bfloat16 *)table, idx, w, rows, dim);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
