/* argmax.cu - argmax_rows: the index of each row's largest element (the lowest index among equals), for greedy
 * decoding on the device (one int32 per sequence comes back instead of a row of logits). One block per row,
 * 16-byte loads when the rows allow; a NaN counts as +inf so the answer is always an index of the row. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/vec.cuh"
#include "qvl.h"

enum { ARGMAX_THREADS = 1024 };

static __device__ __forceinline__ void better(float &v, int &i, float v2, int i2) {
  if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

static __device__ __forceinline__ float key(float v) {
  return v != v ? INFINITY : v;
}

template <bool VEC>
__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_rows_kernel(int32_t *out, const __nv_bfloat16 *x, int n) {
  const __nv_bfloat16 *row = x + (int64_t)blockIdx.x * n;
  float v = -INFINITY;
  int i = 0x7fffffff;
  if (VEC) {
#pragma unroll 4 /* several 16-byte loads in flight per thread: one CTA streams a 300 KB row at batch 1 */
    for (int j = threadIdx.x * 8; j < n; j += ARGMAX_THREADS * 8) {
      bf16x8 e = load8(row + j);
#pragma unroll
      for (int k = 0; k < 8; k++) better(v, i, key(e.get(k)), j + k);
    }
  } else {
    for (int j = threadIdx.x; j < n; j += ARGMAX_THREADS) better(v, i, key(__bfloat162float(row[j])), j);
  }
  for (int o = 16; o; o >>= 1) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  __shared__ float sv[32];
  __shared__ int si[32];
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = v, si[warp] = i;
  __syncthreads();
  if (warp) return;
  v = sv[lane], i = si[lane];
  for (int o = 16; o; o >>= 1) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  if (lane == 0) out[blockIdx.x] = i < n ? i : 0;
}

extern "C" int cuda_argmax_rows(int32_t *out, const uint16_t *x, int64_t rows, int n, qvl_stream s) {
  if (rows == 0) return QVL_OK;
  if (n < 1 || rows > 2147483647) return QVL_ERR_LIMIT;
  if (vec8_ok(n, x))
    argmax_rows_kernel<true><<<(unsigned)rows, ARGMAX_THREADS, 0, s>>>(out, (const __nv_bfloat16 *)x, n);
  else
    argmax_rows_kernel<false><<<(unsigned)rows, ARGMAX_THREADS, 0, s>>>(out, (const __nv_bfloat16 *)x, n);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
