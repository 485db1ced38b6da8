/* resample.cu - Pillow's BICUBIC horizontal pass (libImaging/Resample.c, as resize.c reproduces it), bit for bit, for
 * every image of a launch: the host computes the 22-bit fixed-point coefficients (img_coeffs_make); each output byte
 * is clip8((2^21 + sum src * k) >> 22) in int32, exactly the CPU's integer sum. One block per output row of the
 * launch, its threads across the row (3 channels each). The vertical pass is fused with the rows (rows.cu). */
#include <cuda_runtime.h>

#include "image/cuda/img_find.cuh"
#include "qvl.h"

#define PRECISION_BITS 22

__device__ static uint8_t clip8(int32_t ss) {
  int32_t v = ss >> PRECISION_BITS;
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

__global__ void resample_h_kernel(uint8_t *work, const img_desc *d, int n, const int32_t *coef) {
  int64_t r = blockIdx.x;
  IMG_BLOCK_DESC(im, d, n, r, IMG_BY_TMP);
  int y = (int)(r - im.tmp_row0);
  const uint8_t *src = work + im.src + (int64_t)(im.first + y) * im.w * 3;
  uint8_t *dst = work + im.tmp + (int64_t)y * im.rw * 3;
  const int32_t *bounds = coef + im.hb, *k = coef + im.hw;
  for (int xx = threadIdx.x; xx < im.rw; xx += blockDim.x) {
    const uint8_t *s = src + bounds[2 * xx] * 3;
    const int32_t *kk = k + (int64_t)xx * im.hk;
    int cnt = bounds[2 * xx + 1];
    int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
    for (int x = 0; x < cnt; x++) {
      int32_t w = kk[x];
      s0 += s[3 * x] * w, s1 += s[3 * x + 1] * w, s2 += s[3 * x + 2] * w;
    }
    dst[3 * xx] = clip8(s0), dst[3 * xx + 1] = clip8(s1), dst[3 * xx + 2] = clip8(s2);
  }
}

extern "C" int img_cuda_resample_h(uint8_t *work, const img_desc *d, int n, const int32_t *coef, int64_t tmp_rows,
                                   img_stream s) {
  if (n <= 0 || tmp_rows <= 0) return QVL_OK;
  resample_h_kernel<<<(unsigned)tmp_rows, 256, 0, (cudaStream_t)s>>>(work, d, n, coef);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
