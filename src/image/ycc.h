/* ycc.h - a JPEG's component planes -> RGB8 exactly as libjpeg-turbo's decoder does it by default: chroma
 * upsampling (jdsample.c) then YCbCr -> RGB (jdcolor.c). Shared by the C reference (ycc.c) and the CUDA kernel
 * (cuda/ycc.cu), so both run the same integer arithmetic; only the IDCT before this differs between a CPU decode and
 * nvJPEG.
 *
 * Upsampling per component, by the ratio (hr, vr) = (max sampling / its sampling), as jinit_upsampler picks it with
 * do_fancy_upsampling on (the default):
 *   (1,1)          copy
 *   (2,1)          h2v1 "fancy" (triangle filter, 3/4 near + 1/4 far, biases +1/+2) when the plane is > 2 samples wide
 *   (1,2)          h1v2 fancy (biases +1 above, +2 below), any width
 *   (2,2)          h2v2 fancy (9/16, 3/16, 3/16, 1/16; biases +8/+7) when the plane is > 2 samples wide
 *   anything else  box (each sample replicated hr x vr): also (2,1) and (2,2) planes of <= 2 samples
 * Edges replicate the outermost real sample: the row above the first is the first (jdmainct's context rows), the
 * row below the last real row is the last real row (set_bottom_pointers), and the first/last columns take their
 * special cases, which equal a filter over a replicated column. Planes may carry MCU padding beyond their real size
 * (libjpeg's downsampled_width/height = ceil(image size / ratio)); it is never read. */
#ifndef QVL_IMAGE_YCC_H
#define QVL_IMAGE_YCC_H

#include <stdint.h>

#ifdef __CUDACC__
#define IMG_HD __host__ __device__ static inline
#else
#define IMG_HD static inline
#endif

typedef struct img_plane {
  const uint8_t *p;
  int stride;  /* bytes between rows */
  int w, h;    /* real samples: ceil(image w / hr), ceil(image h / vr) */
  int hr, vr;  /* upsampling ratios */
} img_plane;

typedef struct img_planes {
  int w, h; /* image size */
  int n;    /* 1: grayscale (Y only), 3: YCbCr */
  img_plane c[3];
} img_planes;

/* jdcolor.c's constants: FIX(x) = (int)(x * 2^16 + 0.5), ONE_HALF = 2^15. */
#define IMG_FIX_1_40200 91881
#define IMG_FIX_1_77200 116130
#define IMG_FIX_0_71414 46802
#define IMG_FIX_0_34414 22554

IMG_HD int img_clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

IMG_HD int img_at(const img_plane *c, int x, int y) { return c->p[(int64_t)y * c->stride + x]; }

/* The row next to row j in the direction of output row y (above for even y, below for odd), replicated at edges. */
IMG_HD int img_other_row(const img_plane *c, int y) { return img_clampi((y & 1) ? (y >> 1) + 1 : (y >> 1) - 1, 0, c->h - 1); }

/* Component c at output pixel (x, y). */
IMG_HD int img_upsample(const img_plane *c, int x, int y) {
  if (c->hr == 1 && c->vr == 1) return img_at(c, x, y);
  if (c->hr == 1 && c->vr == 2) { /* h1v2_fancy_upsample */
    int j = y >> 1;
    return (img_at(c, x, j) * 3 + img_at(c, x, img_other_row(c, y)) + ((y & 1) ? 2 : 1)) >> 2;
  }
  if (c->hr == 2 && c->vr == 1 && c->w > 2) { /* h2v1_fancy_upsample */
    int i = x >> 1, v = img_at(c, i, y);
    if (!(x & 1)) return i == 0 ? v : (v * 3 + img_at(c, i - 1, y) + 1) >> 2;
    return i == c->w - 1 ? v : (v * 3 + img_at(c, i + 1, y) + 2) >> 2;
  }
  if (c->hr == 2 && c->vr == 2 && c->w > 2) { /* h2v2_fancy_upsample: column sums 3 * nearer row + further row */
    int i = x >> 1, j = y >> 1, o = img_other_row(c, y);
    int here = img_at(c, i, j) * 3 + img_at(c, i, o);
    if (!(x & 1)) {
      if (i == 0) return (here * 4 + 8) >> 4;
      return (here * 3 + img_at(c, i - 1, j) * 3 + img_at(c, i - 1, o) + 8) >> 4;
    }
    if (i == c->w - 1) return (here * 4 + 7) >> 4;
    return (here * 3 + img_at(c, i + 1, j) * 3 + img_at(c, i + 1, o) + 7) >> 4;
  }
  return img_at(c, x / c->hr, y / c->vr); /* int_upsample, h2v1_upsample, h2v2_upsample */
}

/* ycc_rgb_convert: R = y + Cr_r_tab[cr], G = y + ((Cb_g_tab[cb] + Cr_g_tab[cr]) >> 16), B = y + Cb_b_tab[cb], each
 * clamped to 0..255 (range_limit). Grayscale: R = G = B = Y. */
IMG_HD void img_ycc_pixel(uint8_t *rgb, const img_planes *im, int x, int y) {
  int Y = img_upsample(&im->c[0], x, y);
  if (im->n == 1) {
    rgb[0] = rgb[1] = rgb[2] = (uint8_t)Y;
    return;
  }
  int cb = img_upsample(&im->c[1], x, y) - 128, cr = img_upsample(&im->c[2], x, y) - 128;
  int r = Y + ((IMG_FIX_1_40200 * cr + (1 << 15)) >> 16);
  int g = Y + ((-IMG_FIX_0_34414 * cb + (1 << 15) - IMG_FIX_0_71414 * cr) >> 16);
  int b = Y + ((IMG_FIX_1_77200 * cb + (1 << 15)) >> 16);
  rgb[0] = (uint8_t)img_clampi(r, 0, 255), rgb[1] = (uint8_t)img_clampi(g, 0, 255);
  rgb[2] = (uint8_t)img_clampi(b, 0, 255);
}

/* Fills c->w, c->h, c->hr, c->vr of every component from the JPEG sampling factors hs[i], vs[i] (1..4) and the image
 * size; 0, or -1 when a ratio is not an integer (libjpeg refuses those too). */
int img_planes_layout(img_planes *im, int w, int h, int n, const int *hs, const int *vs);
/* RGB8, w*h*3 bytes, from the planes: the C reference of cuda/ycc.cu. */
void img_ycc_to_rgb(uint8_t *rgb, const img_planes *im);

#endif
