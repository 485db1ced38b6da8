/* ycc.c - the C reference of the GPU colour conversion (ycc.h): libjpeg-turbo's default upsampling and YCbCr -> RGB
 * over a JPEG's component planes. tests/test_image_ycc.c checks it against tjDecompress2 bit for bit. */
#include "image/ycc.h"

int img_planes_layout(img_planes *im, int w, int h, int n, const int *hs, const int *vs) {
  int hmax = 1, vmax = 1;
  for (int i = 0; i < n; i++) {
    if (hs[i] < 1 || hs[i] > 4 || vs[i] < 1 || vs[i] > 4) return -1;
    hmax = hs[i] > hmax ? hs[i] : hmax, vmax = vs[i] > vmax ? vs[i] : vmax;
  }
  im->w = w, im->h = h, im->n = n;
  for (int i = 0; i < n; i++) {
    img_plane *c = &im->c[i];
    if (hmax % hs[i] || vmax % vs[i]) return -1;
    c->hr = hmax / hs[i], c->vr = vmax / vs[i];
    c->w = (w + c->hr - 1) / c->hr, c->h = (h + c->vr - 1) / c->vr; /* jdinput.c: jdiv_round_up(w * hs, hmax) */
  }
  return 0;
}

void img_ycc_to_rgb(uint8_t *rgb, const img_planes *im) {
  for (int y = 0; y < im->h; y++)
    for (int x = 0; x < im->w; x++) img_ycc_pixel(rgb + ((int64_t)y * im->w + x) * 3, im, x, y);
}
