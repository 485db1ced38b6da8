/* gpu_preprocess.c - the GPU image pipeline (gpu.h): route each image to a decoder, decode, then resample and
 * patchify on the backend's stream into the rows the vision tower reads.
 *
 * Buffers are the pipeline's own, grown on demand and kept: the planes of a chunk of hardware-decoded images, one
 * source RGB, one horizontal-pass intermediate and one resized RGB (every step is ordered on one stream, so images
 * take turns in them), the resample coefficients of every image (computed on the host by resize.c, uploaded once
 * per call) and the normalization table. */
#ifdef QVL_HAVE_CUDA
#include <cuda_runtime.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "image/cuda/img_cuda.h"
#include "image/gpu.h"
#ifdef QVL_HAVE_NVJPEG
#include "image/cuda/img_nvjpeg.h"
#endif

enum { D_CPU = 0, D_HYBRID = 1, D_HW = 2 };
#define CHUNK_IMAGES 128           /* images per hardware batch */
#define CHUNK_PLANE_BYTES (256 << 20) /* plane memory per hardware batch */

typedef struct dbuf {
  void *p;
  size_t bytes;
} dbuf;

/* Where one image's resample coefficients sit in the coefficient buffer (int32 offsets). */
typedef struct coef_at {
  int need_h, need_v, first, last, hk, vk; /* passes, source rows the vertical pass reads, kernel sizes */
  size_t hb, hw, vb, vw;                   /* offsets of the bounds and weights */
} coef_at;

struct img_gpu {
  qvl_backend *b;
  cudaStream_t s;
#ifdef QVL_HAVE_NVJPEG
  img_nvjpeg *nvj;
#endif
  tjhandle tj;
  dbuf planes, src, tmp, dst, coef, lut;
  int32_t *host_coef; /* pinned staging for the coefficient upload */
  size_t host_coef_bytes;
  float lut_host[3][256];
  int lut_set;
  img_gpu_stats last;
};

static int cuda_fail(qvl_err *err, cudaError_t e, const char *what) {
  return qvl_fail(err, QVL_ERR_DEVICE, "GPU preprocessing: %s: %s", what, cudaGetErrorString(e));
}

/* Grows b to at least bytes; in-flight work may still read the old buffer, so the stream drains first. */
static int grow(img_gpu *g, dbuf *b, size_t bytes, qvl_err *err) {
  if (bytes <= b->bytes) return QVL_OK;
  cudaError_t e = cudaStreamSynchronize(g->s);
  if (e) return cuda_fail(err, e, "synchronize");
  cudaFree(b->p);
  b->p = NULL, b->bytes = 0;
  bytes += bytes / 4;
  if ((e = cudaMalloc(&b->p, bytes))) return cuda_fail(err, e, "out of device memory");
  b->bytes = bytes;
  return QVL_OK;
}

int img_gpu_open(img_gpu **out, qvl_backend *b, qvl_err *err) {
  *out = NULL;
  if (!b || strcmp(b->name, "cuda"))
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "GPU preprocessing needs the CUDA backend");
  img_gpu *g = calloc(1, sizeof *g);
  if (!g || !(g->tj = tjInitDecompress())) {
    free(g);
    return qvl_fail(err, QVL_ERR_NOMEM, "GPU preprocessing: out of memory");
  }
  g->b = b, g->s = ((cuda_ctx *)b->ctx)->stream;
#ifdef QVL_HAVE_NVJPEG
  char msg[160] = "";
  if (img_nvjpeg_open(&g->nvj, msg, sizeof msg)) { /* no nvJPEG decoder: every image goes through the CPU */
    fprintf(stderr, "qvl: %s; JPEGs are decoded on the CPU\n", msg);
    img_nvjpeg_close(g->nvj);
    g->nvj = NULL;
  }
#endif
  *out = g;
  return QVL_OK;
}

void img_gpu_close(img_gpu *g) {
  if (!g) return;
  cudaStreamSynchronize(g->s);
  dbuf *bufs[] = {&g->planes, &g->src, &g->tmp, &g->dst, &g->coef, &g->lut};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) cudaFree(bufs[i]->p);
  cudaFreeHost(g->host_coef);
#ifdef QVL_HAVE_NVJPEG
  img_nvjpeg_close(g->nvj);
#endif
  tjDestroy(g->tj);
  free(g);
}

qvl_backend *img_gpu_backend(const img_gpu *g) { return g->b; }

const img_gpu_stats *img_gpu_last(const img_gpu *g) { return &g->last; }

int img_gpu_engines(const img_gpu *g) {
#ifdef QVL_HAVE_NVJPEG
  return img_nvjpeg_engines(g->nvj);
#else
  (void)g;
  return 0;
#endif
}

/* ---- routing --------------------------------------------------------------------------------------- */

/* libjpeg refuses a stream that ends before its EOI ("premature end of data"), nvJPEG may not: such files go to the
 * CPU decoder, which reports them. True when an FF D9 follows the first SOS (inside entropy-coded data FF is always
 * followed by 00 or a restart marker, so that FF D9 is the EOI). */
static int ends_after_scan(const uint8_t *d, size_t n) {
  size_t i = 2, sos = 0;
  while (i + 4 <= n && !sos) {
    if (d[i] != 0xff) return 0;
    if (d[i + 1] == 0xff) { /* fill byte */
      i++;
      continue;
    }
    if (d[i + 1] == 0xda) sos = i;
    else i += 2 + ((size_t)d[i + 2] << 8 | d[i + 3]);
  }
  if (!sos) return 0;
  for (size_t k = n - 1; k > sos + 1; k--)
    if (d[k] == 0xd9 && d[k - 1] == 0xff) return 1;
  return 0;
}

/* The decoder for one image and, for the GPU decoders, its plane layout. */
static int route(img_gpu *g, const img_job *j, img_planes *lay) {
#ifdef QVL_HAVE_NVJPEG
  int w, h, sub, cs, hs[3], vs[3], n, css, nc;
  if (!g->nvj || !j->bytes || j->format != IMG_JPEG || !ends_after_scan(j->bytes, j->len)) return D_CPU;
  if (tjDecompressHeader3(g->tj, j->bytes, (unsigned long)j->len, &w, &h, &sub, &cs) || w != j->w || h != j->h ||
      (cs != TJCS_YCbCr && cs != TJCS_GRAY) || img_jpeg_sampling(sub, hs, vs, &n))
    return D_CPU; /* CMYK/YCCK, RGB-coded or odd sampling: TurboJPEG's conversion on the CPU */
  static const int css_of_tj[] = {[TJSAMP_444] = 0, [TJSAMP_422] = 1, [TJSAMP_420] = 2, [TJSAMP_GRAY] = 6,
                                  [TJSAMP_440] = 3, [TJSAMP_411] = 4};
  int d = img_nvjpeg_route(g->nvj, j->bytes, j->len, &css, &nc);
  if (d == IMG_NVJ_NONE || nc != n || css != css_of_tj[sub] || img_planes_layout(lay, w, h, n, hs, vs)) return D_CPU;
  return d == IMG_NVJ_HARDWARE ? D_HW : D_HYBRID;
#else
  (void)g, (void)j, (void)lay;
  return D_CPU;
#endif
}

#ifdef QVL_HAVE_NVJPEG
/* Plane strides and rows with room for nvJPEG's MCU padding; grayscale gets chroma planes too (NVJPEG_OUTPUT_YUV may
 * write them). Returns the bytes. */
static size_t plane_bytes(img_planes *lay, int k, size_t *off) {
  const img_plane *c = &lay->c[lay->n == 1 ? 0 : k];
  size_t stride = ((size_t)c->w + 16 + 63) / 64 * 64, rows = (size_t)c->h + 16;
  if (off) *off = stride;
  return stride * rows;
}

/* Points lay's planes into the arena at base. */
static void place_planes(img_planes *lay, uint8_t *base) {
  size_t at = 0;
  for (int k = 0; k < 3; k++) {
    size_t stride, bytes = plane_bytes(lay, k, &stride);
    if (lay->n == 1 && k) lay->c[k] = lay->c[0];
    lay->c[k].p = base + at, lay->c[k].stride = (int)stride;
    at += bytes;
  }
}

static size_t planes_total(img_planes *lay) {
  size_t t = 0;
  for (int k = 0; k < 3; k++) t += plane_bytes(lay, k, NULL);
  return t;
}
#endif

/* ---- steps ----------------------------------------------------------------------------------------- */

/* CPU decode of job j (or its raw RGB) and upload into g->src. */
static int upload_cpu(img_gpu *g, img_job *j, const qvl_image *im, const img_rgb *decoded, qvl_err *err) {
  const uint8_t *px = decoded && decoded->px ? decoded->px : im->rgb;
  size_t n = (size_t)j->w * j->h * 3;
  int rc = grow(g, &g->src, n, err);
  cudaError_t e = rc ? cudaSuccess : cudaMemcpyAsync(g->src.p, px, n, cudaMemcpyHostToDevice, g->s);
  return rc ? rc : e ? cuda_fail(err, e, "upload") : QVL_OK;
}

static int cpu_decode(img_rgb *out, img_job *j, const qvl_image_params *p) {
  int rc = img_decode(out, j->bytes, j->len, p->semantics == QVL_IMAGE_QWEN_VL_UTILS, img_input_limit(p), j->what,
                      &j->err);
  if (!rc && (out->w != j->w || out->h != j->h))
    rc = qvl_fail(&j->err, QVL_ERR_FORMAT, "%s: decoded %dx%d but the header said %dx%d", j->what, out->w, out->h,
                  j->w, j->h);
  return rc;
}

/* Every image's coefficients into the pinned staging buffer, one upload. */
static int upload_coeffs(img_gpu *g, coef_at *at, const img_job *jobs, int n, qvl_err *err) {
  img_coeffs *cv = calloc((size_t)n, sizeof *cv), *ch = calloc((size_t)n, sizeof *ch);
  size_t total = 0;
  int rc = cv && ch ? QVL_OK : qvl_fail(err, QVL_ERR_NOMEM, "GPU preprocessing: out of memory");
  for (int i = 0; !rc && i < n; i++) {
    const img_job *j = &jobs[i];
    coef_at *a = &at[i];
    memset(a, 0, sizeof *a);
    a->need_h = j->rw != j->w, a->need_v = j->rh != j->h;
    if (a->need_h && img_coeffs_make(&ch[i], j->w, j->rw)) rc = QVL_ERR_NOMEM;
    if (!rc && a->need_v && img_coeffs_make(&cv[i], j->h, j->rh)) rc = QVL_ERR_NOMEM;
    if (rc) break;
    a->first = a->need_v ? cv[i].bounds[0] : 0;
    a->last = a->need_v ? cv[i].bounds[2 * j->rh - 2] + cv[i].bounds[2 * j->rh - 1] : j->h;
    a->hk = ch[i].ksize, a->vk = cv[i].ksize;
    a->hb = total, total += a->need_h ? 2 * (size_t)j->rw : 0;
    a->hw = total, total += a->need_h ? (size_t)a->hk * j->rw : 0;
    a->vb = total, total += a->need_v ? 2 * (size_t)j->rh : 0;
    a->vw = total, total += a->need_v ? (size_t)a->vk * j->rh : 0;
  }
  if (rc == QVL_ERR_NOMEM && !err->code) qvl_fail(err, rc, "GPU preprocessing: out of memory for coefficients");
  size_t bytes = total * sizeof(int32_t) + 4;
  if (!rc && bytes > g->host_coef_bytes) {
    cudaStreamSynchronize(g->s); /* the previous call's upload may still read it */
    cudaFreeHost(g->host_coef);
    g->host_coef = NULL, g->host_coef_bytes = 0;
    cudaError_t e = cudaMallocHost((void **)&g->host_coef, bytes);
    if (e) rc = cuda_fail(err, e, "out of pinned memory");
    else g->host_coef_bytes = bytes;
  }
  if (!rc) rc = grow(g, &g->coef, bytes, err);
  if (!rc) cudaStreamSynchronize(g->s); /* staging is rewritten below */
  for (int i = 0; !rc && i < n; i++) {
    const img_job *j = &jobs[i];
    const coef_at *a = &at[i];
    for (int k = 0; a->need_h && k < 2 * j->rw; k++) g->host_coef[a->hb + k] = ch[i].bounds[k];
    if (a->need_h) memcpy(g->host_coef + a->hw, ch[i].k, sizeof(int32_t) * a->hk * j->rw);
    for (int k = 0; a->need_v && k < 2 * j->rh; k++) g->host_coef[a->vb + k] = cv[i].bounds[k];
    if (a->need_v) memcpy(g->host_coef + a->vw, cv[i].k, sizeof(int32_t) * a->vk * j->rh);
  }
  for (int i = 0; cv && ch && i < n; i++) img_coeffs_free(&cv[i]), img_coeffs_free(&ch[i]);
  free(cv), free(ch);
  cudaError_t e = rc || !total ? cudaSuccess
                               : cudaMemcpyAsync(g->coef.p, g->host_coef, total * sizeof(int32_t),
                                                 cudaMemcpyHostToDevice, g->s);
  return rc ? rc : e ? cuda_fail(err, e, "coefficient upload") : QVL_OK;
}

static int upload_lut(img_gpu *g, const qvl_preproc_config *pc, qvl_err *err) {
  float lut[3][256];
  img_norm_lut(lut, pc);
  if (g->lut_set && !memcmp(lut, g->lut_host, sizeof lut)) return QVL_OK;
  int rc = grow(g, &g->lut, sizeof lut, err);
  if (rc) return rc;
  memcpy(g->lut_host, lut, sizeof lut);
  cudaError_t e = cudaMemcpyAsync(g->lut.p, g->lut_host, sizeof lut, cudaMemcpyHostToDevice, g->s);
  if (e) return cuda_fail(err, e, "table upload");
  g->lut_set = 1;
  return QVL_OK;
}

/* g->src (j->w x j->h RGB) -> resample -> bf16 rows of image j, and its resized RGB into rgb (for the hash). */
static int finish(img_gpu *g, uint16_t *rows, uint8_t *rgb, int64_t row_len, const img_job *j, const coef_at *a,
                  const qvl_preproc_config *pc, qvl_err *err) {
  const int32_t *cb = g->coef.p;
  const uint8_t *src = g->src.p, *out = src;
  int rc = QVL_OK;
  if (a->need_h || a->need_v) rc = grow(g, &g->dst, (size_t)j->rw * j->rh * 3, err);
  if (!rc && a->need_h && a->need_v) rc = grow(g, &g->tmp, (size_t)j->rw * (a->last - a->first) * 3, err);
  src = g->src.p, cb = g->coef.p;
  if (!rc && a->need_h && a->need_v) {
    rc = img_cuda_resample_h(g->tmp.p, src, cb + a->hb, cb + a->hw, j->rw, j->w, a->first, a->last - a->first, a->hk,
                             g->s);
    if (!rc) rc = img_cuda_resample_v(g->dst.p, g->tmp.p, cb + a->vb, cb + a->vw, j->rh, j->rw, a->first, a->vk, g->s);
    out = g->dst.p;
  } else if (!rc && a->need_h) {
    rc = img_cuda_resample_h(g->dst.p, src, cb + a->hb, cb + a->hw, j->rw, j->w, 0, j->h, a->hk, g->s);
    out = g->dst.p;
  } else if (!rc && a->need_v) {
    rc = img_cuda_resample_v(g->dst.p, src, cb + a->vb, cb + a->vw, j->rh, j->w, 0, a->vk, g->s);
    out = g->dst.p;
  }
  if (!rc) rc = img_cuda_patchify(rows + j->row0 * row_len, out, g->lut.p, j->rw, j->rh, pc->patch, pc->temporal_patch,
                                  pc->merge, g->s);
  if (!rc && cudaMemcpyAsync(rgb + j->rgb0, out, (size_t)j->rw * j->rh * 3, cudaMemcpyDeviceToDevice, g->s))
    rc = QVL_ERR_DEVICE;
  return rc == QVL_ERR_DEVICE ? qvl_fail(err, rc, "%s: GPU resample/patchify launch failed", j->what) : rc;
}

#ifdef QVL_HAVE_NVJPEG
/* Planes already decoded -> g->src. */
static int planes_to_src(img_gpu *g, const img_job *j, const img_planes *lay, qvl_err *err) {
  int rc = grow(g, &g->src, (size_t)j->w * j->h * 3, err);
  if (!rc && img_cuda_ycc(g->src.p, lay, g->s)) rc = qvl_fail(err, QVL_ERR_DEVICE, "%s: colour kernel failed", j->what);
  return rc;
}
#endif

/* ---- the run --------------------------------------------------------------------------------------- */

typedef struct run_state {
  img_gpu *g;
  img_job *jobs;
  const qvl_image *imgs;
  const qvl_image_params *p;
  int *kind;
  img_planes *lay;
  img_rgb *host;  /* CPU-decoded images */
  coef_at *at;
  uint16_t *rows;
  uint8_t *rgb;
  int64_t row_len;
  const qvl_preproc_config *pc;
} run_state;

/* Image i from the CPU: decode now unless already decoded, upload, finish. */
static int via_cpu(run_state *r, int i, qvl_err *err) {
  img_job *j = &r->jobs[i];
  if (j->bytes && !r->host[i].px && cpu_decode(&r->host[i], j, r->p))
    return qvl_fail(err, j->err.code, "%s", j->err.msg);
  int rc = upload_cpu(r->g, j, &r->imgs[i], &r->host[i], err);
  if (!rc) rc = finish(r->g, r->rows, r->rgb, r->row_len, j, &r->at[i], r->pc, err);
  return rc;
}

#ifdef QVL_HAVE_NVJPEG
/* Images [i0, i1): the hardware ones in one batch into the plane arena, then each in order. */
static int chunk(run_state *r, int i0, int i1, qvl_err *err) {
  img_gpu *g = r->g;
  size_t total = 0;
  for (int i = i0; i < i1; i++)
    if (r->kind[i] != D_CPU) total += planes_total(&r->lay[i]);
  int rc = grow(g, &g->planes, total, err), nb = 0;
  const uint8_t **data = malloc(sizeof *data * (size_t)(i1 - i0));
  size_t *len = malloc(sizeof *len * (size_t)(i1 - i0));
  img_planes *dst = malloc(sizeof *dst * (size_t)(i1 - i0));
  if (!rc && (!data || !len || !dst)) rc = qvl_fail(err, QVL_ERR_NOMEM, "GPU preprocessing: out of memory");
  size_t at = 0;
  for (int i = i0; !rc && i < i1; i++) {
    if (r->kind[i] == D_CPU) continue;
    place_planes(&r->lay[i], (uint8_t *)g->planes.p + at);
    at += planes_total(&r->lay[i]);
    if (r->kind[i] == D_HW) data[nb] = r->jobs[i].bytes, len[nb] = r->jobs[i].len, dst[nb++] = r->lay[i];
  }
  char msg[160];
  if (!rc && nb && img_nvjpeg_decode_hw(g->nvj, data, len, nb, dst, (img_stream)g->s, msg, sizeof msg)) {
    fprintf(stderr, "qvl: %s; %d images go to the hybrid decoder\n", msg, nb);
    for (int i = i0; i < i1; i++) r->kind[i] = r->kind[i] == D_HW ? D_HYBRID : r->kind[i];
  }
  free(data), free(len), free(dst);
  for (int i = i0; !rc && i < i1; i++) {
    img_job *j = &r->jobs[i];
    if (r->kind[i] == D_HYBRID &&
        img_nvjpeg_decode_hybrid(g->nvj, j->bytes, j->len, &r->lay[i], (img_stream)g->s, msg, sizeof msg))
      r->kind[i] = D_CPU; /* the CPU decoder decodes it or says what is wrong with it */
    if (r->kind[i] == D_CPU) rc = via_cpu(r, i, err);
    else if (!(rc = planes_to_src(g, j, &r->lay[i], err))) rc = finish(g, r->rows, r->rgb, r->row_len, j, &r->at[i], r->pc, err);
  }
  return rc;
}
#endif

static int run_all(run_state *r, int n, int threads, qvl_err *err) {
  img_gpu *g = r->g;
  for (int i = 0; i < n; i++) r->kind[i] = route(g, &r->jobs[i], &r->lay[i]);
  /* CPU images first, in parallel: their decode is the slow part */
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (n > 1)
  for (int i = 0; i < n; i++)
    if (r->kind[i] == D_CPU && r->jobs[i].bytes) {
      img_set_threads(1);
      cpu_decode(&r->host[i], &r->jobs[i], r->p);
    }
  for (int i = 0; i < n; i++)
    if (r->jobs[i].err.code) return qvl_fail(err, r->jobs[i].err.code, "%s", r->jobs[i].err.msg);
  int rc = upload_lut(g, r->pc, err);
  if (!rc) rc = upload_coeffs(g, r->at, r->jobs, n, err);
#ifdef QVL_HAVE_NVJPEG
  for (int i0 = 0, i1; !rc && i0 < n; i0 = i1) {
    size_t bytes = 0;
    for (i1 = i0; i1 < n && i1 - i0 < CHUNK_IMAGES; i1++) {
      size_t b = r->kind[i1] == D_CPU ? 0 : planes_total(&r->lay[i1]);
      if (i1 > i0 && bytes + b > CHUNK_PLANE_BYTES) break;
      bytes += b;
    }
    rc = chunk(r, i0, i1, err);
  }
#else
  for (int i = 0; !rc && i < n; i++) rc = via_cpu(r, i, err);
#endif
  for (int i = 0; i < n; i++) {
    g->last.hardware += r->kind[i] == D_HW;
    g->last.hybrid += r->kind[i] == D_HYBRID;
    g->last.cpu += r->kind[i] == D_CPU;
  }
  return rc;
}

int img_gpu_run(img_gpu *g, void *rows, uint8_t *rgb, img_job *jobs, const qvl_image *imgs, int n,
                const qvl_preproc_config *pc, const qvl_image_params *p, int threads, qvl_err *err) {
  run_state r = {g, jobs, imgs, p, calloc((size_t)n, sizeof(int)), calloc((size_t)n, sizeof(img_planes)),
                 calloc((size_t)n, sizeof(img_rgb)), calloc((size_t)n, sizeof(coef_at)), rows, rgb,
                 3LL * pc->temporal_patch * pc->patch * pc->patch, pc};
  memset(&g->last, 0, sizeof g->last);
  int rc = r.kind && r.lay && r.host && r.at ? run_all(&r, n, threads, err)
                                             : qvl_fail(err, QVL_ERR_NOMEM, "GPU preprocessing: out of memory");
  cudaError_t e = cudaStreamSynchronize(g->s);
  if (!rc && e) rc = cuda_fail(err, e, "kernels");
  for (int i = 0; r.host && i < n; i++) free(r.host[i].px);
  free(r.kind), free(r.lay), free(r.host), free(r.at);
  return rc;
}

int img_gpu_decode(img_gpu *g, img_rgb *out, int *path, const uint8_t *data, size_t len, int white_alpha,
                   qvl_err *err) {
  img_job j = {.bytes = data, .len = len, .what = "image"};
  img_header hd;
  memset(out, 0, sizeof *out);
  int rc = img_probe(&hd, data, len, j.what, err);
  if (rc) return rc;
  j.format = hd.format, j.w = j.rw = hd.w, j.h = j.rh = hd.h;
  img_planes lay;
  int kind = route(g, &j, &lay);
  *path = kind;
#ifdef QVL_HAVE_NVJPEG
  if (kind != D_CPU) {
    char msg[160];
    rc = grow(g, &g->planes, planes_total(&lay), err);
    if (!rc) place_planes(&lay, g->planes.p);
    if (!rc && kind == D_HW && img_nvjpeg_decode_hw(g->nvj, &data, &len, 1, &lay, (img_stream)g->s, msg, sizeof msg))
      rc = qvl_fail(err, QVL_ERR_DEVICE, "%s", msg);
    if (!rc && kind == D_HYBRID && img_nvjpeg_decode_hybrid(g->nvj, data, len, &lay, (img_stream)g->s, msg, sizeof msg))
      rc = qvl_fail(err, QVL_ERR_DEVICE, "%s", msg);
    if (!rc) rc = planes_to_src(g, &j, &lay, err);
  }
#endif
  if (!rc && kind == D_CPU) {
    img_rgb host;
    rc = img_decode(&host, data, len, white_alpha, 0, j.what, err);
    if (!rc) rc = upload_cpu(g, &j, NULL, &host, err);
    free(host.px);
  }
  size_t n = (size_t)j.w * j.h * 3;
  out->px = rc ? NULL : malloc(n);
  if (!rc && !out->px) rc = qvl_fail(err, QVL_ERR_NOMEM, "out of memory");
  cudaError_t e = rc ? cudaSuccess : cudaMemcpyAsync(out->px, g->src.p, n, cudaMemcpyDeviceToHost, g->s);
  if (!e) e = cudaStreamSynchronize(g->s);
  if (!rc && e) rc = cuda_fail(err, e, "decode");
  if (rc) free(out->px), out->px = NULL;
  else out->w = j.w, out->h = j.h;
  return rc;
}
#endif
