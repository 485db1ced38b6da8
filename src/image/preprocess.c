/* preprocess.c - the CPU image pipeline (spec §1) over a batch, one OpenMP task per image.
 *   phase 1: base64 (data: URLs), header, pixel limit, smart_resize -> every grid, so the rows are
 *            allocated once with each image's offset known;
 *   phase 2: decode -> RGB -> resample -> normalize + patchify straight into the image's rows, and hash.
 * Errors are collected per image; a failing phase reports its lowest failing index, so the message does not
 * depend on thread timing, and a bad header is found before any image is decoded. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base64.h"
#include "core/hash.h"
#include "image/gpu.h"
#include "image/image.h"
#include "qvl_internal.h"

qvl_image_params qvl_image_default_params(void) {
  qvl_image_params p = {0};
  p.semantics = QVL_IMAGE_HF;
  return p;
}

static int is_data_url(const qvl_image *im) { return im->size >= 5 && !strncasecmp(im->data, "data:", 5); }

int64_t img_input_limit(const qvl_image_params *p) {
  return p->max_input_pixels ? p->max_input_pixels : IMG_DEFAULT_MAX_INPUT_PIXELS;
}

/* Source size and resized size of one image; no pixel is decoded. */
static int plan(img_job *j, const qvl_image *im, const qvl_preproc_config *pc, const qvl_image_params *p) {
  int rc, utils = p->semantics == QVL_IMAGE_QWEN_VL_UTILS, F = pc->patch * pc->merge;
  if (im->data && is_data_url(im)) {
    char mime[64];
    rc = qvl_data_url_decode(&j->owned, &j->len, mime, sizeof mime, im->data, im->size, j->what, &j->err);
    if (rc) return rc;
    j->bytes = j->owned;
  } else if (im->data) {
    j->bytes = im->data, j->len = im->size;
  } else if (!im->rgb) {
    return qvl_fail(&j->err, QVL_ERR_INVALID_ARG, "%s: neither data nor rgb is set", j->what);
  }
  img_header hd = {IMG_UNKNOWN, im->width, im->height, 0};
  if (j->bytes && (rc = img_probe(&hd, j->bytes, j->len, j->what, &j->err))) return rc;
  j->w = hd.w, j->h = hd.h, j->format = j->bytes ? hd.format : IMG_UNKNOWN;
  rc = img_check_size(j->w, j->h, img_input_limit(p), j->bytes ? img_format_name(hd.format) : "RGB", j->what, &j->err);
  if (rc) return rc;
  if (!pc->do_resize) {
    if (j->w % F || j->h % F)
      return qvl_fail(&j->err, QVL_ERR_FORMAT, "%s: do_resize is off but %dx%d is not a multiple of %d", j->what,
                      j->w, j->h, F);
    j->rw = j->w, j->rh = j->h;
    return QVL_OK;
  }
  int64_t lo = p->min_pixels ? p->min_pixels : utils ? 4LL * F * F : pc->min_pixels;
  int64_t hi = p->max_pixels ? p->max_pixels : utils ? 16384LL * F * F : pc->max_pixels;
  return img_smart_resize(&j->rh, &j->rw, j->h, j->w, F, lo, hi, utils, j->what, &j->err);
}

static void hash_image(uint8_t *out, const uint8_t *rgb, int w, int h, const int32_t grid[3]) {
  qvl_blake2b s;
  uint8_t head[32] = "qvl-image-v1";
  uint32_t v[5] = {(uint32_t)grid[0], (uint32_t)grid[1], (uint32_t)grid[2], (uint32_t)w, (uint32_t)h};
  for (int i = 0; i < 5; i++)
    for (int b = 0; b < 4; b++) head[12 + 4 * i + b] = (uint8_t)(v[i] >> (8 * b)); /* little endian */
  qvl_blake2b_init(&s, QVL_IMAGE_HASH_BYTES);
  qvl_blake2b_update(&s, head, sizeof head);
  qvl_blake2b_update(&s, rgb, (size_t)w * h * 3);
  qvl_blake2b_final(&s, out);
}

/* Decode, resample, patchify and hash one image into its rows. */
static int run(img_job *j, const qvl_image *im, qvl_image_batch *b, int i, const qvl_preproc_config *pc,
               const float lut[3][256], const qvl_image_params *p) {
  img_rgb src = {j->w, j->h, (uint8_t *)im->rgb};
  int rc = QVL_OK;
  if (j->bytes) {
    rc = img_decode(&src, j->bytes, j->len, p->semantics == QVL_IMAGE_QWEN_VL_UTILS, img_input_limit(p), j->what,
                    &j->err);
    if (!rc && (src.w != j->w || src.h != j->h))
      rc = qvl_fail(&j->err, QVL_ERR_FORMAT, "%s: decoded %dx%d but the header said %dx%d", j->what, src.w, src.h,
                    j->w, j->h);
  }
  img_rgb dst = src;
  if (!rc && (j->rw != j->w || j->rh != j->h)) {
    dst = (img_rgb){j->rw, j->rh, malloc((size_t)j->rw * j->rh * 3)};
    rc = dst.px ? img_resample_bicubic(dst.px, dst.w, dst.h, src.px, src.w, src.h, &j->err)
                : qvl_fail(&j->err, QVL_ERR_NOMEM, "%s: out of memory resizing to %dx%d", j->what, j->rw, j->rh);
  }
  if (!rc) {
    img_patchify(b->rows + j->row0 * b->row_len, dst.px, dst.w, dst.h, lut, pc->patch, pc->temporal_patch,
                 pc->merge);
    hash_image(b->hash[i], dst.px, dst.w, dst.h, b->grid + 3 * i);
  }
  if (dst.px != src.px) free(dst.px);
  if (src.px != im->rgb) free(src.px);
  return rc;
}

static int first_error(img_job *jobs, int n, qvl_err *err) {
  for (int i = 0; i < n; i++)
    if (jobs[i].err.code) return qvl_fail(err, jobs[i].err.code, "%s", jobs[i].err.msg);
  return QVL_OK;
}

static int check_args(const qvl_preproc_config *pc, const qvl_image *imgs, int n, const qvl_image_params *p,
                      qvl_err *err) {
  if (!imgs || n < 1) return qvl_fail(err, QVL_ERR_INVALID_ARG, "preprocess: no images");
  if (p->semantics != QVL_IMAGE_HF && p->semantics != QVL_IMAGE_QWEN_VL_UTILS)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "preprocess: semantics %d is not a qvl_image_semantics", p->semantics);
  if (p->min_pixels < 0 || p->max_pixels < 0 || (p->max_pixels && p->max_pixels < p->min_pixels))
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "preprocess: min_pixels %lld / max_pixels %lld are not a range",
                    (long long)p->min_pixels, (long long)p->max_pixels);
  if (pc->do_resize && pc->resample != 3)
    return qvl_fail(err, QVL_ERR_UNSUPPORTED, "preprocess: resample %d; only BICUBIC (3) is implemented",
                    pc->resample);
  return QVL_OK;
}

/* Grids and row offsets, then the rows: host f32 for the CPU path, device bf16 on g's backend for the GPU path. */
static int alloc_batch(qvl_image_batch **out, img_job *jobs, int n, const qvl_preproc_config *pc, img_gpu *g,
                       qvl_err *err) {
  qvl_image_batch *b = *out = calloc(1, sizeof *b);
  int P = pc->patch;
  if (!b) return qvl_fail(err, QVL_ERR_NOMEM, "preprocess: out of memory");
  b->row_len = 3LL * pc->temporal_patch * P * P, b->patch = P;
  b->grid = malloc(sizeof(int32_t) * 3 * (size_t)n);
  b->hash = calloc((size_t)n, sizeof *b->hash);
  for (int i = 0; b->grid && i < n; i++) {
    b->grid[3 * i] = 1, b->grid[3 * i + 1] = jobs[i].rh / P, b->grid[3 * i + 2] = jobs[i].rw / P;
    jobs[i].row0 = b->n_rows;
    b->n_rows += (int64_t)(jobs[i].rh / P) * (jobs[i].rw / P);
  }
  int fits = b->grid && b->hash && (uint64_t)b->n_rows <= SIZE_MAX / sizeof(float) / (uint64_t)b->row_len;
  size_t elems = fits ? (size_t)(b->n_rows * b->row_len) : 0;
#ifdef QVL_HAVE_CUDA
  if (g && fits) {
    int64_t rgb = 0;
    b->be = img_gpu_backend(g), b->g = g;
    b->rgb_at = malloc(sizeof(int64_t) * (size_t)n);
    b->hashed = calloc((size_t)n, 1);
    if (!b->rgb_at || !b->hashed) return qvl_fail(err, QVL_ERR_NOMEM, "preprocess: out of memory");
    for (int i = 0; i < n; i++) jobs[i].rgb0 = b->rgb_at[i] = rgb, rgb += (int64_t)jobs[i].rw * jobs[i].rh * 3;
    if (img_gpu_alloc(g, &b->dev_rows, elems * 2)) b->dev_rows = NULL;
    if (b->dev_rows && img_gpu_alloc(g, (void **)&b->dev_rgb, (size_t)rgb)) b->dev_rgb = NULL;
    if (!b->dev_rows || !b->dev_rgb)
      return qvl_fail(err, QVL_ERR_NOMEM, "preprocess: out of device memory for %lld pixel rows", (long long)b->n_rows);
    b->px = (qvl_pixels){n, b->grid, NULL, b->dev_rows};
    return QVL_OK;
  }
#endif
  b->rows = fits && !g ? malloc(elems * sizeof(float)) : NULL;
  if (!b->rows)
    return qvl_fail(err, QVL_ERR_NOMEM, "preprocess: out of memory for %lld pixel rows", (long long)b->n_rows);
  b->px = (qvl_pixels){n, b->grid, b->rows, NULL};
  return QVL_OK;
}

/* The CPU path: one OpenMP task per image, each decoding, resampling and patchifying into its rows. */
static int run_cpu(qvl_image_batch *b, img_job *jobs, const qvl_image *imgs, int n, const qvl_preproc_config *pc,
                   const qvl_image_params *p, int threads, qvl_err *err) {
  float lut[3][256];
  img_norm_lut(lut, pc);
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (n > 1)
  for (int i = 0; i < n; i++) {
    img_set_threads(n > 1 ? 1 : threads); /* several images: one thread each; one image: all of them */
    run(&jobs[i], &imgs[i], b, i, pc, (const float(*)[256])lut, p);
  }
  return first_error(jobs, n, err);
}

int img_preprocess_on(qvl_image_batch **out, img_gpu *g, const qvl_preproc_config *pc, const qvl_image *imgs, int n,
                      const qvl_image_params *p, qvl_err *err) {
  qvl_image_params defaults = qvl_image_default_params();
#ifdef QVL_HAVE_CUDA
  double t0 = omp_get_wtime();
#endif
  *out = NULL;
  if (!p) p = &defaults;
  int rc = check_args(pc, imgs, n, p, err);
  img_job *jobs = rc ? NULL : calloc((size_t)n, sizeof *jobs);
  if (!rc && !jobs) rc = qvl_fail(err, QVL_ERR_NOMEM, "preprocess: out of memory for %d images", n);
  int threads = p->n_threads > 0 ? p->n_threads : omp_get_max_threads();
  /* Planning probes headers (microseconds each) unless data: URLs need base64 decoding: only then is a thread team
   * worth waking, whose join waits for the slowest thread to leave its idle state (up to a millisecond). */
  size_t url_bytes = 0;
  for (int i = 0; !rc && i < n; i++) url_bytes += imgs[i].data && is_data_url(&imgs[i]) ? imgs[i].size : 0;
  int team = n > 256 || url_bytes > ((size_t)4 << 20);
  if (!rc) {
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (team)
    for (int i = 0; i < n; i++) {
      snprintf(jobs[i].what, sizeof jobs[i].what, "image %d", i);
      plan(&jobs[i], &imgs[i], pc, p);
    }
    rc = first_error(jobs, n, err);
  }
  if (!rc) rc = alloc_batch(out, jobs, n, pc, g, err);
#ifdef QVL_HAVE_CUDA
  if (!rc && g) {
    double plan_ms = (omp_get_wtime() - t0) * 1e3;
    rc = img_gpu_run(g, (*out)->dev_rows, (*out)->dev_rgb, jobs, imgs, n, pc, p, threads, err);
    img_gpu_note_plan(g, plan_ms);
  } else
#endif
  if (!rc) {
    rc = run_cpu(*out, jobs, imgs, n, pc, p, threads, err);
  }
  for (int i = 0; jobs && i < n; i++) free(jobs[i].owned);
  free(jobs);
  if (rc) {
    qvl_image_batch_free(*out);
    *out = NULL;
  }
  return rc;
}

int img_preprocess(qvl_image_batch **out, const qvl_preproc_config *pc, const qvl_image *imgs, int n,
                   const qvl_image_params *p, qvl_err *err) {
  return img_preprocess_on(out, NULL, pc, imgs, n, p, err);
}

/* ---- public API ------------------------------------------------------------------------------------ */

int qvl_preprocess_images(qvl_engine *e, const qvl_image *images, int n, const qvl_image_params *p,
                          qvl_image_batch **out) {
  if (!out) return QVL_ERR_INVALID_ARG;
  *out = NULL;
  if (!e) return QVL_ERR_INVALID_ARG;
  qvl_err *err = qvl_engine_err(e);
  qvl_err_clear(err);
  const qvl_preproc_config *pc = qvl_engine_preproc(e);
  const qvl_vision_config *v = &qvl_engine_config(e)->vision;
  if (pc->patch != v->patch || pc->temporal_patch != v->temporal_patch || pc->merge != v->merge)
    return qvl_fail(
        err, QVL_ERR_FORMAT,
        "preprocessor_config.json (patch %d, temporal %d, merge %d) disagrees with config.json (%d, %d, %d)", pc->patch,
        pc->temporal_patch, pc->merge, v->patch, v->temporal_patch, v->merge);
  img_gpu *g = NULL;
#ifdef QVL_HAVE_CUDA
  qvl_backend *be = qvl_engine_backend(e);
  if (be && !strcmp(be->name, "cuda") && !(p && p->host_rows) && !(g = qvl_engine_img_gpu(e))) return err->code;
#endif
  return img_preprocess_on(out, g, pc, images, n, p, err);
}

int img_grid(int32_t grid_thw[3], const qvl_preproc_config *pc, const qvl_image *image, const qvl_image_params *p,
             const char *what, qvl_err *err) {
  qvl_image_params defaults = qvl_image_default_params();
  if (!p) p = &defaults;
  int rc = check_args(pc, image, 1, p, err);
  if (rc) return rc;
  img_job j = {0};
  snprintf(j.what, sizeof j.what, "%s", what);
  rc = plan(&j, image, pc, p);
  free(j.owned);
  if (rc) return qvl_fail(err, rc, "%s", j.err.msg);
  grid_thw[0] = 1, grid_thw[1] = j.rh / pc->patch, grid_thw[2] = j.rw / pc->patch;
  return QVL_OK;
}

int qvl_image_grid(qvl_engine *e, const qvl_image *image, const qvl_image_params *p, int32_t grid_thw[3]) {
  if (!e || !image || !grid_thw) return QVL_ERR_INVALID_ARG;
  qvl_err *err = qvl_engine_err(e);
  qvl_err_clear(err);
  return img_grid(grid_thw, qvl_engine_preproc(e), image, p, "image", err);
}

const qvl_pixels *qvl_image_batch_pixels(const qvl_image_batch *b) { return b ? &b->px : NULL; }

int64_t qvl_image_batch_rows(const qvl_image_batch *b, int64_t *row_len) {
  if (row_len) *row_len = b ? b->row_len : 0;
  return b ? b->n_rows : 0;
}

/* The GPU path's digests: every image not hashed yet, from one download of the batch's resized RGB, hashed in
 * parallel as the CPU path hashes each image. The download goes to ordinary memory: a pinned buffer per batch
 * would cost a cudaHostAlloc (pinning pages: host time while a server's device waits for its vision pass) and a
 * cudaFreeHost, which waits for the device. */
static int hash_device(qvl_image_batch *b) {
#ifndef QVL_HAVE_CUDA
  (void)b;
  return QVL_ERR_INVALID_ARG; /* b->hashed is set only on the GPU path */
#else
  int n = b->px.n_images;
  int64_t lo = -1, hi = 0;
  for (int i = 0; i < n; i++) {
    if (b->hashed[i]) continue;
    const int32_t *g = b->grid + 3 * i;
    int64_t end = b->rgb_at[i] + (int64_t)g[1] * b->patch * g[2] * b->patch * 3;
    if (lo < 0 || b->rgb_at[i] < lo) lo = b->rgb_at[i];
    if (end > hi) hi = end;
  }
  if (lo < 0) return QVL_OK;
  uint8_t *rgb = malloc((size_t)(hi - lo));
  qvl_err err = {0};
  int rc = rgb ? img_gpu_download(b->g, rgb, b->dev_rgb + lo, (size_t)(hi - lo), &err) : QVL_ERR_NOMEM;
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int i = 0; i < n; i++) {
    if (rc || b->hashed[i]) continue;
    const int32_t *g = b->grid + 3 * i;
    hash_image(b->hash[i], rgb + (b->rgb_at[i] - lo), g[2] * b->patch, g[1] * b->patch, g), b->hashed[i] = 1;
  }
  free(rgb);
  return rc;
#endif
}

const uint8_t *qvl_image_batch_hash(const qvl_image_batch *b, int i) {
  if (!b || i < 0 || i >= b->px.n_images) return NULL;
  if (b->hashed && !b->hashed[i] && hash_device((qvl_image_batch *)b)) return NULL;
  return b->hash[i];
}

void qvl_image_batch_free(qvl_image_batch *b) {
  if (!b) return;
#ifdef QVL_HAVE_CUDA
  if (b->g) img_gpu_free(b->be, b->dev_rows), img_gpu_free(b->be, b->dev_rgb);
#endif
  free(b->grid), free(b->rows), free(b->hash), free(b->rgb_at), free(b->hashed);
  free(b);
}
