/* rope.cu - 2-D rotary on q and k in place (vision towers, spec §2.3/§3.4): NeoX rotate_half pairs (d, d+h),
 * computed in f32 from bf16 q/k and f32 cos/sin tables, rounded once to bf16 (spec §6 item 2). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "qvl.h"

/* One thread per (row, q|k, head, d < head_dim/2): it owns both elements of its pair. */
__global__ void rope_qk_kernel(__nv_bfloat16 *qkv, const float *cos, const float *sin, int64_t rows, int heads,
                               int head_dim) {
  int half = head_dim / 2;
  int64_t per_row = 2 * (int64_t)heads * half, n = rows * per_row;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / per_row;
    int rem = (int)(i % per_row), hh = rem / half, d = rem % half; /* hh in [0, 2*heads): q heads then k heads */
    __nv_bfloat16 *x = qkv + r * 3 * heads * head_dim + (int64_t)hh * head_dim;
    const float *c = cos + r * head_dim, *s = sin + r * head_dim;
    float a = __bfloat162float(x[d]), b = __bfloat162float(x[d + half]);
    x[d] = __float2bfloat16(a * c[d] - b * s[d]);
    x[d + half] = __float2bfloat16(b * c[d + half] + a * s[d + half]);
  }
}

extern "C" int cuda_rope_qk(uint16_t *qkv, const float *cos, const float *sin, int64_t rows, int heads, int head_dim,
                            qvl_stream s) {
  int64_t n = rows * heads * head_dim; /* = rows * 2 * heads * half */
  if (n == 0) return QVL_OK;
  int64_t blocks = (n + 255) / 256;
  rope_qk_kernel<<<(unsigned)(blocks > 262140 ? 262140 : blocks), 256, 0, s>>>((__nv_bfloat16 *)qkv, cos, sin, rows,
                                                                              heads, head_dim);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

/* One thread per (row, j < head_dim/2); writes j and j + head_dim/2. f32 angle = pos * inv_freq, as the
 * reference builds it; accurate cosf/sinf (not the fast intrinsics: angles reach hundreds of radians). */
__global__ void rope_tables_kernel(float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows,
                                   int head_dim, float theta) {
  int half = head_dim / 2, nf = half / 2;
  int64_t n = rows * half;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / half;
    int j = (int)(i % half);
    const int32_t *p = pos + 2 * (order ? (int64_t)order[r] : r);
    float inv_freq = 1.0f / powf(theta, (float)(2 * (j % nf)) / (float)half);
    float a = (float)(j < nf ? p[0] : p[1]) * inv_freq, c = cosf(a), s = sinf(a);
    cos[r * head_dim + j] = cos[r * head_dim + j + half] = c;
    sin[r * head_dim + j] = sin[r * head_dim + j + half] = s;
  }
}

extern "C" int cuda_rope_tables(float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows,
                                int head_dim, float theta, qvl_stream s) {
  int64_t n = rows * (head_dim / 2);
  if (n == 0) return QVL_OK;
  int64_t blocks = (n + 255) / 256;
  rope_tables_kernel<<<(unsigned)(blocks > 262140 ? 262140 : blocks), 256, 0, s>>>(cos, sin, pos, order, rows,
                                                                                   head_dim, theta);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
