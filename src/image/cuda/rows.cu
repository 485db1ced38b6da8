/* rows.cu - Pillow's BICUBIC vertical pass fused with rescale + normalize + temporal duplication + patchify (spec
 * §1.5-1.7) into the bf16 pixel rows the vision tower reads, for every image of a launch; the resized RGB8 goes out
 * too (the image hash is over it). Each resized byte is clip8((2^21 + sum tmp * k) >> 22) as in resize.c, each row
 * value lut[c][byte] (the host's img_norm_lut: the HF PIL backend's f32 operations) rounded to bf16 (nearest even),
 * so the rows are bf16(the CPU path's f32 rows). One block per row (patch); thread j of 3*P*P computes channel c,
 * pixel (py, px) once and writes its T temporal copies: runs of P consecutive elements. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "image/cuda/img_find.cuh"
#include "qvl.h"

#define PRECISION_BITS 22

__global__ void rows_kernel(__nv_bfloat16 *rows, uint8_t *rgb, const uint8_t *work, const img_desc *d, int n,
                            const int32_t *coef, const float *lut, int64_t row_a, int P, int T, int m) {
  int64_t r = row_a + blockIdx.x;
  IMG_BLOCK_DESC(im, d, n, r, IMG_BY_ROW);
  int pp = P * P, k_len = 3 * T * pp, gw = im.rw / P, q = (int)(r - im.row0);
  int iw = q % m, ih = q / m % m, bw = q / (m * m) % (gw / m), bh = q / (m * m) / (gw / m);
  int y0 = (bh * m + ih) * P, x0 = (bw * m + iw) * P;
  int64_t stride = (int64_t)im.rw * 3;
  const uint8_t *tmp = work + im.tmp;
  __nv_bfloat16 *out = rows + r * k_len;
  for (int j = threadIdx.x; j < 3 * pp; j += blockDim.x) {
    int c = j / pp, py = j % pp / P, px = j % P, y = y0 + py, x = x0 + px;
    int v;
    if (im.vk) {
      const int32_t *b = coef + im.vb + 2 * y, *kk = coef + im.vw + (int64_t)y * im.vk;
      const uint8_t *s = tmp + (int64_t)(b[0] - im.first) * stride + 3 * x + c;
      int32_t ss = 1 << (PRECISION_BITS - 1);
      for (int t = 0; t < b[1]; t++) ss += s[t * stride] * kk[t];
      ss >>= PRECISION_BITS;
      v = ss < 0 ? 0 : ss > 255 ? 255 : ss;
    } else {
      v = tmp[(int64_t)y * stride + 3 * x + c];
    }
    rgb[im.rgb0 + (int64_t)y * stride + 3 * x + c] = (uint8_t)v;
    __nv_bfloat16 val = __float2bfloat16_rn(lut[c * 256 + v]);
    for (int tau = 0; tau < T; tau++) out[(c * T + tau) * pp + py * P + px] = val;
  }
}

extern "C" int img_cuda_rows(uint16_t *rows, uint8_t *rgb, const uint8_t *work, const img_desc *d, int n,
                             const int32_t *coef, const float *lut, int64_t row_a, int64_t n_rows, int patch,
                             int temporal, int merge, img_stream s) {
  if (n <= 0 || n_rows <= 0) return QVL_OK;
  rows_kernel<<<(unsigned)n_rows, 256, 0, (cudaStream_t)s>>>((__nv_bfloat16 *)rows, rgb, work, d, n, coef, lut, row_a,
                                                            patch, temporal, merge);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
