/* scatter.cu - y[idx[i]] = x[i] (or +=) over rows: the vision rows written over the <|image_pad|> embeddings
 * and the DeepStack additions (backend.h scatter_rows). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "qvl.h"

__global__ void scatter_rows_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const int32_t *idx, int64_t n,
                                    int64_t cols, int accumulate) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * cols; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / cols, c = i % cols;
    __nv_bfloat16 *dst = y + (int64_t)idx[r] * cols + c;
    *dst = accumulate ? __hadd(*dst, x[i]) : x[i];
  }
}

static unsigned grid_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b > 262140 ? 262140 : b < 1 ? 1 : b);
}

extern "C" int cuda_scatter_rows(uint16_t *y, const uint16_t *x, const int32_t *idx, int64_t n, int64_t row_elems,
                                 int accumulate, qvl_stream s) {
  if (n) scatter_rows_kernel<<<grid_for(n * row_elems), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                                      idx, n, row_elems, accumulate);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
