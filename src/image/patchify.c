/* patchify.c - rescale + normalize (spec §1.5) and the pixel-row layout (§1.6, §1.7).
 *
 * The HF PIL backend computes, per element: x1 = float32(float64(u8) * rescale_factor), then
 * (x1 - float32(mean_c)) / float32(std_c) in float32. The result depends only on the uint8 level and the
 * channel, so a 3x256 table built with exactly those operations gives the same bits for every pixel. */
#include <string.h>

#include "image/image.h"

void img_norm_lut(float lut[3][256], const qvl_preproc_config *pc) {
  for (int c = 0; c < 3; c++) {
    for (int v = 0; v < 256; v++) {
      float x = pc->do_rescale ? (float)((double)v * pc->rescale) : (float)v;
      lut[c][v] = pc->do_normalize ? (x - pc->mean[c]) / pc->std[c] : x;
    }
  }
}

/* Row n = ((bh*(gw/m) + bw)*m + ih)*m + iw holds the patch at y = (bh*m + ih)*P, x = (bw*m + iw)*P;
 * column k = ((c*T + tau)*P + py)*P + px. Every tau repeats the single frame. */
void img_patchify(float *rows, const uint8_t *rgb, int w, int h, const float lut[3][256], int patch, int temporal,
                  int merge) {
  int gh = h / patch, gw = w / patch, P = patch, T = temporal, m = merge;
  int64_t k_len = 3LL * T * P * P;
#pragma omp parallel for schedule(static) num_threads(img_threads()) if ((int64_t)gh * gw * k_len > (1 << 18))
  for (int n = 0; n < gh * gw; n++) {
    int iw = n % m, ih = n / m % m, bw = n / (m * m) % (gw / m), bh = n / (m * m) / (gw / m);
    int y0 = (bh * m + ih) * P, x0 = (bw * m + iw) * P;
    float *row = rows + (int64_t)n * k_len;
    for (int c = 0; c < 3; c++) {
      float *dst = row + (int64_t)c * T * P * P;
      for (int py = 0; py < P; py++) {
        const uint8_t *src = rgb + ((size_t)(y0 + py) * w + x0) * 3 + c;
        for (int px = 0; px < P; px++) dst[py * P + px] = lut[c][src[3 * px]];
      }
      for (int tau = 1; tau < T; tau++) memcpy(dst + tau * P * P, dst, sizeof(float) * P * P);
    }
  }
}
