/* resize.c - smart_resize (spec §1.2) and Pillow's BICUBIC resample (spec §1.4), bit for bit.
 *
 * The resample follows Pillow's libImaging/Resample.c step by step, because every detail shows in the
 * output: coefficients in double (center = (i + 0.5) * scale, window rounded with (int)(x + 0.5), weights
 * normalized by their sum), then converted to 22-bit fixed point rounding away from zero; each output
 * starts at 2^21 and is clipped after >> 22; horizontal pass first, over only the source rows the vertical
 * pass reads, into a uint8 image, then the vertical pass. A pass whose size does not change is skipped. */
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "image/image.h"

static _Thread_local int thread_budget;

void img_set_threads(int n) { thread_budget = n; }

int img_threads(void) {
#ifdef _OPENMP
  return thread_budget > 0 ? thread_budget : omp_get_max_threads();
#else
  return 1; /* the fuzz build has no OpenMP */
#endif
}

/* Python's round() on a double: half to even (nearbyint in the default rounding mode). */
static double round_even(double x) { return nearbyint(x); }

int img_smart_resize(int *out_h, int *out_w, int h, int w, int factor, int64_t min_pixels, int64_t max_pixels,
                     int qwen_vl_utils, const char *what, qvl_err *err) {
  *out_h = *out_w = 0;
  if (h <= 0 || w <= 0) return qvl_fail(err, QVL_ERR_FORMAT, "%s: image has zero size (%dx%d)", what, w, h);
  int lo = h < w ? h : w, hi = h < w ? w : h;
  if ((int64_t)hi > 200 * (int64_t)lo) /* max/min > 200 in float64 is exact for these integers */
    return qvl_fail(err, QVL_ERR_LIMIT, "%s: absolute aspect ratio must be smaller than 200, got %.6g (%dx%d)", what,
                    (double)hi / lo, w, h);
  double F = factor, H = h, W = w, hb = round_even(H / F) * F, wb = round_even(W / F) * F;
  if (qwen_vl_utils) hb = fmax(F, hb), wb = fmax(F, wb);
  if (hb * wb > (double)max_pixels) {
    double beta = sqrt(H * W / (double)max_pixels);
    hb = floor(H / beta / F) * F, wb = floor(W / beta / F) * F;
    if (!qwen_vl_utils) hb = fmax(F, hb), wb = fmax(F, wb);
  } else if (hb * wb < (double)min_pixels) {
    double beta = sqrt((double)min_pixels / (H * W));
    hb = ceil(H * beta / F) * F, wb = ceil(W * beta / F) * F;
  }
  if (hb < F || wb < F)
    return qvl_fail(err, QVL_ERR_LIMIT, "%s: %dx%d resizes to %.0fx%.0f, which has no patches", what, w, h, wb, hb);
  if (hb * wb > 2147483647.0) /* only a caller's min_pixels can ask for this; int indexing stops here */
    return qvl_fail(err, QVL_ERR_LIMIT, "%s: %dx%d resizes to %.0fx%.0f, over 2^31 pixels", what, w, h, wb, hb);
  *out_h = (int)hb, *out_w = (int)wb;
  return QVL_OK;
}

/* ---- Pillow's resample ------------------------------------------------------------------------------ */

#define PRECISION_BITS 22 /* 32 - 8 - 2: Pillow's headroom for filters with negative lobes */

static double bicubic(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

void img_coeffs_free(img_coeffs *c) {
  free(c->bounds), free(c->k);
  c->bounds = NULL, c->k = NULL;
}

/* precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size), support 2. */
int img_coeffs_make(img_coeffs *c, int in_size, int out_size) {
  float in0 = 0.0f, in1 = (float)in_size; /* Pillow's box is float */
  double scale = (double)(in1 - in0) / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
  double support = 2.0 * filterscale, ss = 1.0 / filterscale;
  c->ksize = (int)ceil(support) * 2 + 1;
  c->bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
  c->k = malloc(sizeof(int32_t) * (size_t)c->ksize * (size_t)out_size);
  double *w = malloc(sizeof(double) * (size_t)c->ksize);
  if (!c->bounds || !c->k || !w) return free(w), QVL_ERR_NOMEM;
  for (int xx = 0; xx < out_size; xx++) {
    double center = in0 + (xx + 0.5) * scale, ww = 0.0;
    int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) ww += w[x] = bicubic((x + xmin - center + 0.5) * ss);
    int32_t *k = c->k + (size_t)xx * c->ksize;
    for (int x = 0; x < c->ksize; x++) {
      double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
      k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
    }
    c->bounds[2 * xx] = xmin, c->bounds[2 * xx + 1] = xmax;
  }
  free(w);
  return QVL_OK;
}

static uint8_t clip8(int32_t ss) {
  int32_t v = ss >> PRECISION_BITS;
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Rows [y0, y0 + rows) of src (sw wide) -> dst (dw wide, rows tall). */
static void pass_horizontal(uint8_t *dst, int dw, const uint8_t *src, int sw, int y0, int rows,
                            const img_coeffs *c) {
#pragma omp parallel for schedule(static) num_threads(img_threads()) if ((int64_t)dw * rows > (1 << 16))
  for (int y = 0; y < rows; y++) {
    const uint8_t *s = src + (size_t)(y0 + y) * sw * 3;
    uint8_t *d = dst + (size_t)y * dw * 3;
    for (int xx = 0; xx < dw; xx++) {
      const int32_t *k = c->k + (size_t)xx * c->ksize;
      int xmin = c->bounds[2 * xx], n = c->bounds[2 * xx + 1];
      int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < n; x++) {
        const uint8_t *p = s + (size_t)(x + xmin) * 3;
        s0 += p[0] * k[x], s1 += p[1] * k[x], s2 += p[2] * k[x];
      }
      d[3 * xx] = clip8(s0), d[3 * xx + 1] = clip8(s1), d[3 * xx + 2] = clip8(s2);
    }
  }
}

/* src rows are indexed from the first row any output needs (bounds already shifted by the caller). Each
 * output row accumulates whole source rows into a row of int32 sums: the same integer sums as Pillow's
 * per-pixel loop (integer addition is exact in any order), read with unit stride so the loop vectorizes. */
static void pass_vertical(uint8_t *dst, int dh, const uint8_t *src, int w, const img_coeffs *c, int shift) {
  size_t row = (size_t)w * 3;
#pragma omp parallel num_threads(img_threads()) if ((int64_t)w * dh > (1 << 16))
  {
    int32_t *acc = malloc(sizeof(int32_t) * row);
#pragma omp for schedule(static)
    for (int yy = 0; yy < dh; yy++) {
      const int32_t *k = c->k + (size_t)yy * c->ksize;
      int ymin = c->bounds[2 * yy] - shift, n = c->bounds[2 * yy + 1];
      uint8_t *d = dst + (size_t)yy * row;
      if (!acc) { /* out of memory for one row: Pillow's loop, no scratch */
        for (size_t xx = 0; xx < row; xx++) {
          int32_t ss = 1 << (PRECISION_BITS - 1);
          for (int y = 0; y < n; y++) ss += src[(size_t)(y + ymin) * row + xx] * k[y];
          d[xx] = clip8(ss);
        }
        continue;
      }
      for (size_t xx = 0; xx < row; xx++) acc[xx] = 1 << (PRECISION_BITS - 1);
      for (int y = 0; y < n; y++) {
        const uint8_t *s = src + (size_t)(y + ymin) * row;
        int32_t ky = k[y];
#pragma omp simd
        for (size_t xx = 0; xx < row; xx++) acc[xx] += s[xx] * ky;
      }
#pragma omp simd
      for (size_t xx = 0; xx < row; xx++) d[xx] = clip8(acc[xx]);
    }
    free(acc);
  }
}

int img_resample_bicubic(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh, qvl_err *err) {
  img_coeffs cv = {0}, ch = {0};
  uint8_t *tmp = NULL;
  int need_h = dw != sw, need_v = dh != sh;
  int rc = img_coeffs_make(&cv, sh, dh);
  int first = rc ? 0 : cv.bounds[0], last = rc ? 0 : cv.bounds[2 * dh - 2] + cv.bounds[2 * dh - 1];
  if (!rc && need_h) rc = img_coeffs_make(&ch, sw, dw);
  if (!rc && need_h && need_v) rc = (tmp = malloc((size_t)dw * (size_t)(last - first) * 3)) ? QVL_OK : QVL_ERR_NOMEM;
  if (rc) {
    img_coeffs_free(&cv), img_coeffs_free(&ch);
    return qvl_fail(err, rc, "resample %dx%d -> %dx%d: out of memory", sw, sh, dw, dh);
  }
  if (need_h && need_v) {
    pass_horizontal(tmp, dw, src, sw, first, last - first, &ch);
    pass_vertical(dst, dh, tmp, dw, &cv, first);
  } else if (need_h) {
    pass_horizontal(dst, dw, src, sw, 0, sh, &ch);
  } else if (need_v) {
    pass_vertical(dst, dh, src, sw, &cv, 0);
  } else {
    for (size_t i = 0; i < (size_t)sw * sh * 3; i++) dst[i] = src[i];
  }
  free(tmp);
  img_coeffs_free(&cv), img_coeffs_free(&ch);
  return QVL_OK;
}
