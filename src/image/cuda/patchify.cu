/* patchify.cu - rescale + normalize + temporal duplication + patchify (spec §1.5-1.7) into bf16 pixel rows, the
 * vision tower's input. The value of a level is the host's table (img_norm_lut: the HF PIL backend's f32
 * operations), so each element is bf16(the CPU path's f32 value), rounded to nearest even. One thread per output
 * element, in row order (coalesced writes). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "image/cuda/img_cuda.h"
#include "qvl.h"

/* Row n = ((bh*(gw/m) + bw)*m + ih)*m + iw, column k = ((c*T + tau)*P + py)*P + px (img_patchify). */
__global__ void patchify_kernel(__nv_bfloat16 *rows, const uint8_t *rgb, const float *lut, int w, int gw, int P, int T,
                                int m, int64_t total) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= total) return;
  int k_len = 3 * T * P * P, k = (int)(i % k_len);
  int64_t n = i / k_len;
  int px = k % P, py = k / P % P, c = k / (P * P * T);
  int iw = (int)(n % m), ih = (int)(n / m % m), bw = (int)(n / (m * m) % (gw / m)), bh = (int)(n / (m * m) / (gw / m));
  int y = (bh * m + ih) * P + py, x = (bw * m + iw) * P + px;
  rows[i] = __float2bfloat16_rn(lut[c * 256 + rgb[((int64_t)y * w + x) * 3 + c]]);
}

extern "C" int img_cuda_patchify(uint16_t *rows, const uint8_t *rgb, const float *lut, int w, int h, int patch,
                                 int temporal, int merge, img_stream s) {
  int64_t total = (int64_t)(h / patch) * (w / patch) * 3 * temporal * patch * patch;
  if (total <= 0) return QVL_OK;
  patchify_kernel<<<(unsigned)((total + 255) / 256), 256, 0, (cudaStream_t)s>>>(
      (__nv_bfloat16 *)rows, rgb, lut, w, w / patch, patch, temporal, merge, total);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
