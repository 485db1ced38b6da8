/* fuzz_image.h - the body shared by the decoder fuzz targets: probe, decode (with a pixel limit small
 * enough that a run stays fast), and on success resize the result to a few patches and patchify it, so
 * the whole CPU path sees whatever the decoder lets through. */
#ifndef QVL_FUZZ_IMAGE_H
#define QVL_FUZZ_IMAGE_H

#include <stdint.h>
#include <stdlib.h>

#include "image/image.h"

#define FUZZ_MAX_PIXELS (4ll << 20)

static void fuzz_resize(const img_rgb *im) {
  int rh, rw;
  if (img_smart_resize(&rh, &rw, im->h, im->w, 28, 3136, 28 * 28 * 64, im->w & 1, "fuzz", NULL)) return;
  uint8_t *dst = malloc((size_t)rw * rh * 3);
  float *rows = malloc(sizeof(float) * (size_t)rw * rh * 6);
  static float lut[3][256];
  if (dst && rows && !img_resample_bicubic(dst, rw, rh, im->px, im->w, im->h, NULL))
    img_patchify(rows, dst, rw, rh, (const float(*)[256])lut, 14, 2, 2);
  free(dst), free(rows);
}

static int fuzz_decode(const uint8_t *data, size_t size) {
  img_header hd;
  img_rgb im;
  qvl_err err = {0};
  if (img_probe(&hd, data, size, "fuzz", &err)) return 0;
  qvl_err_clear(&err);
  if (!img_decode(&im, data, size, (int)(size & 1), FUZZ_MAX_PIXELS, "fuzz", &err)) {
    if (im.w != hd.w || im.h != hd.h) abort(); /* the header and the pixels must agree */
    fuzz_resize(&im);
    free(im.px);
  } else if (!err.msg[0]) {
    abort(); /* every failure explains itself */
  }
  return 0;
}

#endif
