/* resample.cu - Pillow's BICUBIC resample (libImaging/Resample.c, as resize.c reproduces it), bit for bit: the
 * host computes the 22-bit fixed-point coefficients (img_coeffs_make) and uploads them; each output byte is
 * clip8((2^21 + sum src * k) >> 22) in int32, exactly the CPU's integer sum. Horizontal pass into a uint8
 * intermediate over the rows the vertical pass reads, then the vertical pass. One thread per output pixel
 * (horizontal: 3 channels) or output byte (vertical). */
#include <cuda_runtime.h>

#include "image/cuda/img_cuda.h"
#include "qvl.h"

#define PRECISION_BITS 22

__device__ static uint8_t clip8(int32_t ss) {
  int32_t v = ss >> PRECISION_BITS;
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

__global__ void resample_h_kernel(uint8_t *dst, const uint8_t *src, const int32_t *bounds, const int32_t *k, int dw,
                                  int sw, int y0, int rows, int ksize) {
  int xx = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (xx >= dw || y >= rows) return;
  const uint8_t *s = src + ((int64_t)(y0 + y) * sw + bounds[2 * xx]) * 3;
  const int32_t *kk = k + (int64_t)xx * ksize;
  int n = bounds[2 * xx + 1];
  int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
  for (int x = 0; x < n; x++) {
    int32_t w = kk[x];
    s0 += s[3 * x] * w, s1 += s[3 * x + 1] * w, s2 += s[3 * x + 2] * w;
  }
  uint8_t *d = dst + ((int64_t)y * dw + xx) * 3;
  d[0] = clip8(s0), d[1] = clip8(s1), d[2] = clip8(s2);
}

__global__ void resample_v_kernel(uint8_t *dst, const uint8_t *src, const int32_t *bounds, const int32_t *k, int dh,
                                  int w, int shift, int ksize) {
  int64_t row = (int64_t)w * 3;
  int xx = blockIdx.x * blockDim.x + threadIdx.x, yy = blockIdx.y;
  if (xx >= row || yy >= dh) return;
  const uint8_t *s = src + (int64_t)(bounds[2 * yy] - shift) * row + xx;
  const int32_t *kk = k + (int64_t)yy * ksize;
  int n = bounds[2 * yy + 1];
  int32_t ss = 1 << (PRECISION_BITS - 1);
  for (int y = 0; y < n; y++) ss += s[y * row] * kk[y];
  dst[yy * row + xx] = clip8(ss);
}

static int launched(void) { return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE; }

extern "C" int img_cuda_resample_h(uint8_t *dst, const uint8_t *src, const int32_t *bounds, const int32_t *k, int dw,
                                   int sw, int y0, int rows, int ksize, img_stream s) {
  if (dw <= 0 || rows <= 0) return QVL_OK;
  dim3 block(64, 4), grid((unsigned)((dw + 63) / 64), (unsigned)((rows + 3) / 4));
  resample_h_kernel<<<grid, block, 0, (cudaStream_t)s>>>(dst, src, bounds, k, dw, sw, y0, rows, ksize);
  return launched();
}

extern "C" int img_cuda_resample_v(uint8_t *dst, const uint8_t *src, const int32_t *bounds, const int32_t *k, int dh,
                                   int w, int shift, int ksize, img_stream s) {
  if (dh <= 0 || w <= 0) return QVL_OK;
  dim3 block(256), grid((unsigned)((3LL * w + 255) / 256), (unsigned)dh);
  resample_v_kernel<<<grid, block, 0, (cudaStream_t)s>>>(dst, src, bounds, k, dh, w, shift, ksize);
  return launched();
}
