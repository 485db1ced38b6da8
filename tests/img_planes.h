/* img_planes.h - a JPEG's component planes through TurboJPEG (tjDecompressToYUVPlanes: the IDCT output before
 * upsampling and colour conversion), laid out as image/ycc.h describes them. Header-only; free with planes_free. */
#ifndef QVL_IMG_PLANES_H
#define QVL_IMG_PLANES_H

#include <stdint.h>
#include <stdlib.h>
#include <turbojpeg.h>

#include "image/image.h"
#include "image/ycc.h"

typedef struct tj_planes {
  img_planes im;
  uint8_t *buf[3];
  int subsamp;
} tj_planes;

static inline void planes_free(tj_planes *t) {
  for (int i = 0; i < 3; i++) free(t->buf[i]), t->buf[i] = NULL;
}

/* 0 on success; -1 when TurboJPEG cannot give planes (CMYK, odd sampling). */
static inline int planes_decode(tj_planes *t, const uint8_t *jpg, size_t len) {
  tjhandle tj = tjInitDecompress();
  int w, h, subsamp, cs, hs[3], vs[3], n, rc = -1;
  *t = (tj_planes){0};
  if (tjDecompressHeader3(tj, jpg, (unsigned long)len, &w, &h, &subsamp, &cs) || cs == TJCS_CMYK || cs == TJCS_YCCK ||
      img_jpeg_sampling(subsamp, hs, vs, &n))
    goto out;
  int strides[3];
  for (int i = 0; i < n; i++) {
    strides[i] = tjPlaneWidth(i, w, subsamp);
    t->buf[i] = malloc((size_t)strides[i] * tjPlaneHeight(i, h, subsamp));
    if (!t->buf[i]) goto out;
  }
  if (tjDecompressToYUVPlanes(tj, jpg, (unsigned long)len, t->buf, w, strides, h, 0)) goto out;
  if (img_planes_layout(&t->im, w, h, n, hs, vs)) goto out;
  for (int i = 0; i < n; i++) t->im.c[i].p = t->buf[i], t->im.c[i].stride = strides[i];
  t->subsamp = subsamp;
  rc = 0;
out:
  tjDestroy(tj);
  if (rc) planes_free(t);
  return rc;
}

#endif
