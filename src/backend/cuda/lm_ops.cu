/* lm_ops.cu - the language model's first CUDA ops: rotary over [rows][heads][hd] with the text model's numerics
 * (cos/sin rounded to bf16, products and sum rounded to bf16: spec §4.4), row scatter (vision rows and DeepStack
 * into the sequence), and a straightforward causal GQA attention over the KV cache: one block per (query,
 * head), one warp per key for the scores (lanes across head_dim), scores in shared memory, f32 softmax. Correct for any length the shared memory holds (about 56k keys);
 * the fast paths (cuDNN prefill, flash-decoding over a paged cache) replace it in issue 6. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "qvl.h"

__global__ void rope_heads_kernel(__nv_bfloat16 *x, const float *cos, const float *sin, int64_t rows, int heads,
                                  int hd, int64_t stride) {
  int half = hd / 2;
  int64_t n = rows * heads * half;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / (heads * half);
    int h = (int)(i / half % heads), d = (int)(i % half);
    __nv_bfloat16 *p = x + r * stride + (int64_t)h * hd;
    __nv_bfloat16 c0 = __float2bfloat16(cos[r * hd + d]), s0 = __float2bfloat16(sin[r * hd + d]);
    __nv_bfloat16 c1 = __float2bfloat16(cos[r * hd + d + half]), s1 = __float2bfloat16(sin[r * hd + d + half]);
    __nv_bfloat16 a = p[d], b = p[d + half];
    p[d] = __hsub(__hmul(a, c0), __hmul(b, s0));
    p[d + half] = __hadd(__hmul(b, c1), __hmul(a, s1));
  }
}

__global__ void scatter_rows_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const int32_t *idx, int64_t n,
                                    int64_t cols, int accumulate) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * cols; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / cols, c = i % cols;
    __nv_bfloat16 *dst = y + (int64_t)idx[r] * cols + c;
    *dst = accumulate ? __hadd(*dst, x[i]) : x[i];
  }
}

static __device__ float block_reduce(float v, float *red, bool is_max) {
  for (int o = 16; o; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, w) : v + w;
  }
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  v = red[0];
  for (int i = 1; i < (int)blockDim.x / 32; i++) v = is_max ? fmaxf(v, red[i]) : v + red[i];
  __syncthreads();
  return v;
}

/* grid (q_rows, heads), 128 threads. Query i sits at position first + i and sees keys 0 .. first + i. */
__global__ void attention_causal_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                        const __nv_bfloat16 *v, int64_t first, int heads, int kv_heads, int hd,
                                        float scale) {
  extern __shared__ float sh[]; /* [hd] query, [keys] scores */
  __shared__ float red[32];
  int64_t i = blockIdx.x, keys = first + i + 1;
  int h = blockIdx.y, g = h / (heads / kv_heads);
  float *qs = sh, *s = sh + hd;
  const __nv_bfloat16 *qr = q + (i * heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = __bfloat162float(qr[d]);
  __syncthreads();
  /* scores: one warp per key, lanes across head_dim (coalesced 2-byte loads of the key row) */
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  float mx = -INFINITY;
  for (int64_t j = warp; j < keys; j += n_warps) {
    const __nv_bfloat16 *kr = k + (j * kv_heads + g) * hd;
    float acc = 0.f;
    for (int d = lane; d < hd; d += 32) acc += qs[d] * __bfloat162float(kr[d]);
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) s[j] = acc * scale;
    mx = fmaxf(mx, acc * scale);
  }
  mx = block_reduce(mx, red, true);
  __syncthreads(); /* every score written before the exponentials read them */
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < keys; j += blockDim.x) sum += s[j] = __expf(s[j] - mx);
  sum = block_reduce(sum, red, false);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.f;
    for (int64_t j = 0; j < keys; j++) acc += s[j] * __bfloat162float(v[(j * kv_heads + g) * hd + d]);
    out[(i * heads + h) * hd + d] = __float2bfloat16(acc / sum);
  }
}

static unsigned grid_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b > 262140 ? 262140 : b < 1 ? 1 : b);
}

extern "C" int cuda_rope_heads(uint16_t *x, const float *cos, const float *sin, int64_t rows, int heads, int head_dim,
                               int64_t row_stride, qvl_stream s) {
  if (rows) rope_heads_kernel<<<grid_for(rows * heads * head_dim / 2), 256, 0, s>>>((__nv_bfloat16 *)x, cos, sin, rows,
                                                                                     heads, head_dim, row_stride);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

extern "C" int cuda_scatter_rows(uint16_t *y, const uint16_t *x, const int32_t *idx, int64_t n, int64_t row_elems,
                                 int accumulate, qvl_stream s) {
  if (n) scatter_rows_kernel<<<grid_for(n * row_elems), 256, 0, s>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x,
                                                                      idx, n, row_elems, accumulate);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

extern "C" int cuda_attention_causal(uint16_t *out, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                     int64_t q_rows, int64_t kv_rows, int heads, int kv_heads, int head_dim,
                                     float scale, qvl_stream s) {
  size_t shm = (size_t)(head_dim + kv_rows) * sizeof(float);
  if (shm > 227 * 1024 || q_rows > 2147483647) return QVL_ERR_LIMIT;
  if (shm > 48 * 1024 &&
      cudaFuncSetAttribute(attention_causal_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm) != cudaSuccess)
    return QVL_ERR_DEVICE;
  if (q_rows)
    attention_causal_kernel<<<dim3((unsigned)q_rows, (unsigned)heads), 128, shm, s>>>(
        (__nv_bfloat16 *)out, (const __nv_bfloat16 *)q, (const __nv_bfloat16 *)k, (const __nv_bfloat16 *)v,
        kv_rows - q_rows, heads, kv_heads, head_dim, scale);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
