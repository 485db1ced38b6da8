/* gpu_preprocess.c - the GPU image pipeline (gpu.h): route each image to a decoder, decode, then colour, resample
 * and write the rows on the pipeline's stream, every step one launch over a group of images.
 *
 * A run: the host routes every image (TurboJPEG + nvJPEG header parse) and decodes the CPU-path ones on its threads;
 * then per chunk (up to CHUNK_IMAGES images and CHUNK_BYTES of planes + work memory), cut into up to GROUPS groups:
 * each group's hardware batch decode is submitted on its own decode stream (from parallel host threads: nvJPEG
 * parses the bitstreams on the host); while the first chunk decodes, the host makes every image's resample
 * coefficients into pinned staging and uploads them once; then hybrid decodes one by one, CPU-decoded RGB uploaded,
 * the chunk's descriptor table uploaded, and per group, as soon as its batch is decoded, three kernels over its
 * images: colour (planes -> source RGB), the horizontal pass (source -> tmp), the vertical pass fused with the rows
 * (tmp -> rows and resized RGB). So the kernels of one group run while the engines decode the next. One
 * synchronisation at the end: every run ends with the streams drained.
 *
 * The pipeline's kernels and copies run on its own stream, beside the backend's: a server queues its language-model
 * step on the backend's stream before it preprocesses the next images, and a run on that stream would wait for the
 * step at its final drain, the tower then queued only after the step (and the host's hashing) with the device
 * idle in between. The rows and resized RGB of a batch come from the pipeline's memory pool in stream order
 * (img_gpu_alloc) and go back to it on the backend's stream (img_gpu_free), after the tower read them there: a block
 * the backend's cache handed out could still be read by work queued on the backend's stream.
 *
 * Buffers are the pipeline's own, grown to the largest chunk seen and kept: planes, work (source RGB + tmp of a
 * chunk), coefficients + descriptors (device and pinned host), the normalization table. nvJPEG's state and its
 * batch setup are kept in img_nvjpeg (set up again only when the batch size changes). */
#ifdef QVL_HAVE_CUDA
#include <cuda_runtime.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "image/cuda/img_cuda.h"
#include "image/gpu.h"
#ifdef QVL_HAVE_NVJPEG
#include "image/cuda/img_nvjpeg.h"
#endif

enum { D_CPU = 0, D_HYBRID = 1, D_HW = 2 };
#define CHUNK_IMAGES 128             /* images per chunk */
#define CHUNK_BYTES ((size_t)512 << 20) /* planes + work memory per chunk (a larger image is a chunk alone) */
enum { GROUPS = 4 };                 /* groups per chunk: hardware batches in flight, one decode stream each */
#ifdef QVL_HAVE_NVJPEG
_Static_assert((int)GROUPS <= (int)IMG_NVJ_SLOTS, "one nvJPEG decoder state per group");
#endif
enum { EV_START, EV_END, EV_DEC0, EV_PER_CHUNK = EV_DEC0 + GROUPS }; /* events of a chunk: on g->s, per group */

typedef struct dbuf {
  void *p;
  size_t bytes;
} dbuf;

struct img_gpu {
  qvl_backend *b;
  cudaStream_t s;        /* the pipeline's own */
  cudaMemPool_t pool;    /* batches' rows and RGB (img_gpu_alloc) */
#ifdef QVL_HAVE_NVJPEG
  img_nvjpeg *nvj;
  cudaStream_t ds[GROUPS];       /* decode streams */
#endif
  tjhandle tj;
  dbuf planes, work, table, lut; /* table: coefficients (int32) then descriptors, as staged */
  uint8_t *stage;                /* pinned staging of the table */
  size_t stage_bytes;
  float lut_host[3][256];
  int lut_set, timing;
  cudaEvent_t *ev;               /* EV_PER_CHUNK per chunk */
  int n_ev;
  img_gpu_stats last;
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

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
  g->b = b;
  struct cudaMemPoolProps pp = {.allocType = cudaMemAllocationTypePinned,
                                .location = {.type = cudaMemLocationTypeDevice, .id = ((cuda_ctx *)b->ctx)->dev}};
  uint64_t keep = UINT64_MAX; /* the pool keeps what it has: batches of one size then never map memory again */
  if (cudaStreamCreateWithFlags(&g->s, cudaStreamNonBlocking) || cudaMemPoolCreate(&g->pool, &pp) ||
      cudaMemPoolSetAttribute(g->pool, cudaMemPoolAttrReleaseThreshold, &keep)) {
    (void)cudaGetLastError();
    img_gpu_close(g);
    return qvl_fail(err, QVL_ERR_DEVICE, "GPU preprocessing: cannot create its stream and memory pool");
  }
#ifdef QVL_HAVE_NVJPEG
  char msg[160] = "";
  if (img_nvjpeg_open(&g->nvj, msg, sizeof msg)) { /* no nvJPEG decoder: every image goes through the CPU */
    fprintf(stderr, "qvl: %s; JPEGs are decoded on the CPU\n", msg);
    img_nvjpeg_close(g->nvj);
    g->nvj = NULL;
  }
  for (int k = 0; g->nvj && k < GROUPS; k++)
    if (cudaStreamCreateWithFlags(&g->ds[k], cudaStreamNonBlocking)) {
      img_gpu_close(g);
      return qvl_fail(err, QVL_ERR_DEVICE, "GPU preprocessing: cannot create a decode stream");
    }
#endif
  *out = g;
  return QVL_OK;
}

void img_gpu_close(img_gpu *g) {
  if (!g) return;
  if (g->s) cudaStreamSynchronize(g->s);
  dbuf *bufs[] = {&g->planes, &g->work, &g->table, &g->lut};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) cudaFree(bufs[i]->p);
  cudaFreeHost(g->stage);
  for (int i = 0; i < g->n_ev; i++) cudaEventDestroy(g->ev[i]);
  free(g->ev);
#ifdef QVL_HAVE_NVJPEG
  for (int k = 0; k < GROUPS; k++)
    if (g->ds[k]) cudaStreamSynchronize(g->ds[k]), cudaStreamDestroy(g->ds[k]);
  img_nvjpeg_close(g->nvj);
#endif
  if (g->s) cudaStreamDestroy(g->s);
  if (g->pool) cudaMemPoolDestroy(g->pool); /* released once the last batch's memory is freed */
  tjDestroy(g->tj);
  free(g);
}

qvl_backend *img_gpu_backend(const img_gpu *g) { return g->b; }

int img_gpu_alloc(img_gpu *g, void **p, size_t bytes) {
  *p = NULL;
  if (cudaMallocFromPoolAsync(p, bytes ? bytes : 1, g->pool, g->s) == cudaSuccess) return QVL_OK;
  (void)cudaGetLastError();
  *p = NULL;
  return QVL_ERR_NOMEM;
}

void img_gpu_free(qvl_backend *b, void *p) {
  if (p) cudaFreeAsync(p, ((cuda_ctx *)b->ctx)->stream);
}

int img_gpu_download(img_gpu *g, void *dst, const void *src, size_t bytes, qvl_err *err) {
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g->s);
  if (!e) e = cudaStreamSynchronize(g->s);
  return e ? cuda_fail(err, e, "download") : QVL_OK;
}

const img_gpu_stats *img_gpu_last(const img_gpu *g) { return &g->last; }

void img_gpu_set_timing(img_gpu *g, int on) { g->timing = on; }

void img_gpu_note_plan(img_gpu *g, double plan_ms) { g->last.plan_ms = plan_ms; }

int img_gpu_engines(const img_gpu *g) {
#ifdef QVL_HAVE_NVJPEG
  return img_nvjpeg_engines(g->nvj);
#else
  (void)g;
  return 0;
#endif
}

/* ---- routing --------------------------------------------------------------------------------------- */

/* What follows a JPEG's first scan header, for routing (before any decoder sees the bytes):
 *   SCAN_TRUNCATED  no EOI after it: libjpeg refuses a stream that ends early, nvJPEG may not;
 *   SCAN_SINGLE     the entropy-coded data runs to the EOI with only restart markers inside;
 *   SCAN_MORE       another marker comes first: a progressive or multi-scan file, or a garbled scan (a stray FF
 *                   followed by neither 00 nor a restart code). nvJPEG decodes some garbled scans that libjpeg
 *                   refuses ("premature end of data segment"), so baseline files of this shape go to the CPU
 *                   decoder, which decides as the CPU path does.
 * Inside entropy-coded data FF is always followed by 00, a restart code or a fill FF, so the first other FF xx is a
 * real marker (or garbage). One memchr pass over the bytes. */
enum { SCAN_TRUNCATED = 0, SCAN_SINGLE = 1, SCAN_MORE = 2, SCAN_UNCHECKED = 3 };

static int scan_shape(const uint8_t *d, size_t n) {
  size_t i = 2, k = 0;
  while (i + 4 <= n && !k) {
    if (d[i] != 0xff) return SCAN_TRUNCATED;
    if (d[i + 1] == 0xff) { /* fill byte */
      i++;
      continue;
    }
    size_t len = (size_t)d[i + 2] << 8 | d[i + 3];
    if (d[i + 1] == 0xda) k = i + 2 + len; /* the scan's data starts after its header */
    i += 2 + len;
  }
  if (!k) return SCAN_TRUNCATED;
  while (k + 1 < n) {
    const uint8_t *p = memchr(d + k, 0xff, n - k - 1);
    if (!p) break;
    k = (size_t)(p - d);
    uint8_t m = d[k + 1];
    if (m == 0xd9) return SCAN_SINGLE;
    if (m == 0xff) k += 1;
    else if (m == 0x00 || (m >= 0xd0 && m <= 0xd7)) k += 2;
    else break;
  }
  for (size_t e = n - 1; e > k; e--) /* not a single scan: still an EOI somewhere after it? */
    if (d[e] == 0xd9 && d[e - 1] == 0xff) return SCAN_MORE;
  return SCAN_TRUNCATED;
}

/* The decoder for one image and, for the GPU decoders, its plane layout; shape: scan_shape of its bytes, or
 * SCAN_UNCHECKED (a run checks the scans of its GPU-routed images later, in parallel: recheck). */
static int route(img_gpu *g, const img_job *j, int shape, img_planes *lay) {
#ifdef QVL_HAVE_NVJPEG
  int w, h, sub, cs, hs[3], vs[3], n, css, nc;
  if (!g->nvj || !j->bytes || j->format != IMG_JPEG || shape == SCAN_TRUNCATED) return D_CPU;
  if (tjDecompressHeader3(g->tj, j->bytes, (unsigned long)j->len, &w, &h, &sub, &cs) || w != j->w || h != j->h ||
      (cs != TJCS_YCbCr && cs != TJCS_GRAY) || img_jpeg_sampling(sub, hs, vs, &n))
    return D_CPU; /* CMYK/YCCK, RGB-coded or odd sampling: TurboJPEG's conversion on the CPU */
  static const int css_of_tj[] = {[TJSAMP_444] = 0, [TJSAMP_422] = 1, [TJSAMP_420] = 2, [TJSAMP_GRAY] = 6,
                                  [TJSAMP_440] = 3, [TJSAMP_411] = 4};
  int d = img_nvjpeg_route(g->nvj, j->bytes, j->len, &css, &nc);
  if (d == IMG_NVJ_NONE || nc != n || css != css_of_tj[sub] || img_planes_layout(lay, w, h, n, hs, vs)) return D_CPU;
  if (d == IMG_NVJ_HARDWARE) /* baseline with more after its scan: the CPU decoder */
    return shape == SCAN_SINGLE || shape == SCAN_UNCHECKED ? D_HW : D_CPU;
  return D_HYBRID;
#else
  (void)g, (void)j, (void)shape, (void)lay;
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

static int cpu_decode(img_rgb *out, img_job *j, const qvl_image_params *p) {
  int rc = img_decode(out, j->bytes, j->len, p->semantics == QVL_IMAGE_QWEN_VL_UTILS, img_input_limit(p), j->what,
                      &j->err);
  if (!rc && (out->w != j->w || out->h != j->h))
    rc = qvl_fail(&j->err, QVL_ERR_FORMAT, "%s: decoded %dx%d but the header said %dx%d", j->what, out->w, out->h,
                  j->w, j->h);
  return rc;
}

/* ---- the run --------------------------------------------------------------------------------------- */

/* One image's place in a run. */
typedef struct slot {
  int kind;
  img_planes lay;     /* GPU decoders: plane layout, placed in the planes arena */
  img_rgb host;       /* CPU decoders: the decoded RGB (raw input: px borrowed from the image) */
  int need_h, need_v, first, last, hk, vk;
  int64_t hb, hw, vb, vw; /* int32 offsets in the table */
  size_t plane_bytes, work_bytes, src, tmp; /* arena sizes; offsets in the work arena */
} slot;

typedef struct run_state {
  img_gpu *g;
  img_job *jobs;
  const qvl_image *imgs;
  const qvl_image_params *p;
  const qvl_preproc_config *pc;
  slot *sl;
  uint16_t *rows;
  uint8_t *rgb;
  size_t coef_words;  /* int32 words of coefficients at the table's start; the descriptors follow (aligned) */
  int chunks, *ends;  /* ends[c]: first image after chunk c */
} run_state;

static size_t align16(size_t n) { return (n + 15) / 16 * 16; }

/* Work arena needs of image i: its source RGB, then room for the horizontal pass's rows (all h source rows: the
 * vertical pass reads fewer, first .. last, known once the coefficients are made). Offsets relative to the image. */
static void size_work(run_state *r, int i) {
  const img_job *j = &r->jobs[i];
  slot *s = &r->sl[i];
  s->need_h = j->rw != j->w, s->need_v = j->rh != j->h;
  size_t src = (size_t)j->w * j->h * 3, tmp = s->need_h ? (size_t)j->rw * j->h * 3 : 0;
  s->src = 0, s->tmp = align16(src), s->work_bytes = align16(src) + align16(tmp);
}

/* Group k of a chunk of n images: [*a, *b) relative to the chunk. A chunk is cut into up to GROUPS groups of
 * consecutive images, none smaller than a round of the decode engines, so the kernels of a group run while the
 * hardware decodes the next ones. Returns the number of groups. */
static int group(int n, int engines, int k, int *a, int *b) {
  int size = (n + GROUPS - 1) / GROUPS;
  if (size < engines) size = engines;
  if (size < 1) size = 1;
  *a = k * size < n ? k * size : n, *b = (k + 1) * size < n ? (k + 1) * size : n;
  return (n + size - 1) / size;
}

/* One resample direction's coefficients for in -> out samples, as placed in the table: they depend on the two
 * sizes only, so images of the same size (and a width equal to another image's height) share them. */
typedef struct coef_set {
  int in, out, ksize, first, last; /* first, last: the input samples the pass reads */
  int64_t b, w;                    /* int32 offsets of the bounds [out][2] and weights [out][ksize] */
  img_coeffs c;                    /* made on first use, until copied into the staging */
} coef_set;

/* The set for in -> out in sets[0 .. *n) (capacity 2 per image), made when new; NULL when out of memory. */
static coef_set *coef_find(coef_set *sets, int *n, int in, int out, size_t *words) {
  for (int i = 0; i < *n; i++)
    if (sets[i].in == in && sets[i].out == out) return &sets[i];
  coef_set *c = &sets[*n];
  if (img_coeffs_make(&c->c, in, out)) return img_coeffs_free(&c->c), NULL;
  c->in = in, c->out = out, c->ksize = c->c.ksize;
  c->first = c->c.bounds[0], c->last = c->c.bounds[2 * out - 2] + c->c.bounds[2 * out - 1];
  c->b = (int64_t)*words, *words += 2 * (size_t)out;
  c->w = (int64_t)*words, *words += (size_t)c->ksize * out;
  ++*n;
  return c;
}

/* Coefficients of every image (each distinct size pair once) into the pinned staging and one upload. The staging is
 * free: every run ends with the pipeline's streams drained. */
static int stage_coeffs(run_state *r, int n, qvl_err *err) {
  img_gpu *g = r->g;
  coef_set *sets = calloc(2 * (size_t)n, sizeof *sets);
  int n_sets = 0, rc = sets ? QVL_OK : QVL_ERR_NOMEM;
  size_t words = 0;
  for (int i = 0; !rc && i < n; i++) {
    const img_job *j = &r->jobs[i];
    slot *s = &r->sl[i];
    const coef_set *h = s->need_h ? coef_find(sets, &n_sets, j->w, j->rw, &words) : NULL;
    const coef_set *v = s->need_v ? coef_find(sets, &n_sets, j->h, j->rh, &words) : NULL;
    if ((s->need_h && !h) || (s->need_v && !v)) {
      rc = QVL_ERR_NOMEM;
      break;
    }
    s->first = v ? v->first : 0, s->last = v ? v->last : j->h;
    s->hk = h ? h->ksize : 0, s->vk = v ? v->ksize : 0;
    s->hb = h ? h->b : 0, s->hw = h ? h->w : 0, s->vb = v ? v->b : 0, s->vw = v ? v->w : 0;
  }
  size_t bytes = align16(words * sizeof(int32_t)) + (size_t)n * sizeof(img_desc);
  if (!rc && bytes > g->stage_bytes) {
    cudaFreeHost(g->stage);
    g->stage = NULL, g->stage_bytes = 0;
    if (cudaMallocHost((void **)&g->stage, bytes)) rc = QVL_ERR_NOMEM;
    else g->stage_bytes = bytes;
  }
  if (!rc) rc = grow(g, &g->table, bytes, err);
  int32_t *w = (int32_t *)g->stage;
  for (int i = 0; !rc && i < n_sets; i++) {
    const coef_set *c = &sets[i];
    for (int k = 0; k < 2 * c->out; k++) w[c->b + k] = c->c.bounds[k];
    memcpy(w + c->w, c->c.k, sizeof(int32_t) * (size_t)c->ksize * c->out);
  }
  for (int i = 0; sets && i < n_sets; i++) img_coeffs_free(&sets[i].c);
  free(sets);
  if (rc == QVL_ERR_NOMEM) return qvl_fail(err, rc, "GPU preprocessing: out of memory for the resample coefficients");
  if (rc) return rc;
  r->coef_words = align16(words * sizeof(int32_t)) / sizeof(int32_t);
  cudaError_t e = !words ? cudaSuccess
                         : cudaMemcpyAsync(g->table.p, g->stage, words * sizeof(int32_t), cudaMemcpyHostToDevice, g->s);
  return e ? cuda_fail(err, e, "coefficient upload") : QVL_OK;
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

/* Image i from the CPU: decode now unless already decoded (a GPU decoder gave up on it). */
static int host_rgb(run_state *r, int i, qvl_err *err) {
  img_job *j = &r->jobs[i];
  slot *s = &r->sl[i];
  if (!j->bytes) {
    s->host.px = (uint8_t *)r->imgs[i].rgb;
    return QVL_OK;
  }
  if (!s->host.px && cpu_decode(&s->host, j, r->p)) return qvl_fail(err, j->err.code, "%s", j->err.msg);
  return QVL_OK;
}

static cudaEvent_t event(img_gpu *g, int chunk, int at) { return g->ev[chunk * EV_PER_CHUNK + at]; }

/* Chunk c = images [i0, i1): arena places, then each group's hardware batch on its own decode stream after the
 * chunk's start event (the previous chunk's kernels are done with the arenas), each group's end event recorded.
 * The groups run on parallel threads (nvJPEG parses the streams on the host), each first checking its images'
 * scans (scan_shape): a JPEG the GPU decoders must not take goes to the CPU decoder (finish_chunk decodes it). A
 * batch that fails goes to the hybrid decoder image by image. */
static int decode_chunk(run_state *r, int c, int i0, int i1, qvl_err *err) {
  img_gpu *g = r->g;
  size_t plane_at = 0, work_at = 0;
  for (int i = i0; i < i1; i++) {
    slot *s = &r->sl[i];
    s->src += work_at, s->tmp += work_at, work_at += s->work_bytes;
#ifdef QVL_HAVE_NVJPEG
    if (s->kind != D_CPU) place_planes(&s->lay, (uint8_t *)g->planes.p + plane_at), plane_at += s->plane_bytes;
#endif
  }
  (void)plane_at;
  if (cudaEventRecord(event(g, c, EV_START), g->s)) return qvl_fail(err, QVL_ERR_DEVICE, "GPU preprocessing: event");
  int a, b, n = i1 - i0, groups = group(n, img_gpu_engines(g), 0, &a, &b), bad = 0;
#ifdef QVL_HAVE_NVJPEG
  if (!g->nvj) {
    for (int k = 0; k < groups; k++) bad += cudaEventRecord(event(g, c, EV_DEC0 + k), g->s) != cudaSuccess;
    return bad ? qvl_fail(err, QVL_ERR_DEVICE, "GPU preprocessing: events") : QVL_OK;
  }
#pragma omp parallel for schedule(static, 1) num_threads(groups) if (groups > 1) reduction(+ : bad)
  for (int k = 0; k < groups; k++) {
    int ka, kb, nb = 0;
    group(n, img_gpu_engines(g), k, &ka, &kb);
    const uint8_t *data[CHUNK_IMAGES];
    size_t len[CHUNK_IMAGES];
    img_planes dst[CHUNK_IMAGES];
    for (int i = i0 + ka; i < i0 + kb; i++) {
      slot *s = &r->sl[i];
      int shape = s->kind == D_CPU ? SCAN_SINGLE : scan_shape(r->jobs[i].bytes, r->jobs[i].len);
      if (shape == SCAN_TRUNCATED || (s->kind == D_HW && shape != SCAN_SINGLE)) s->kind = D_CPU;
    }
    for (int i = i0 + ka; i < i0 + kb; i++)
      if (r->sl[i].kind == D_HW) data[nb] = r->jobs[i].bytes, len[nb] = r->jobs[i].len, dst[nb++] = r->sl[i].lay;
    char msg[160];
    bad += cudaStreamWaitEvent(g->ds[k], event(g, c, EV_START), 0) != cudaSuccess;
    if (!bad && nb && img_nvjpeg_decode_hw(g->nvj, k, data, len, nb, dst, (img_stream)g->ds[k], msg, sizeof msg)) {
      fprintf(stderr, "qvl: %s; %d images go to the hybrid decoder\n", msg, nb);
      for (int i = i0 + ka; i < i0 + kb; i++) r->sl[i].kind = r->sl[i].kind == D_HW ? D_HYBRID : r->sl[i].kind;
    }
    bad += cudaEventRecord(event(g, c, EV_DEC0 + k), g->ds[k]) != cudaSuccess;
  }
#else
  for (int k = 0; k < groups; k++) bad += cudaEventRecord(event(g, c, EV_DEC0 + k), g->s) != cudaSuccess;
#endif
  return bad ? qvl_fail(err, QVL_ERR_DEVICE, "GPU preprocessing: decode stream events") : QVL_OK;
}

/* Chunk c, after decode_chunk: hybrid decodes and CPU-decoded uploads, the chunk's descriptor table (source and tmp
 * rows numbered per group), then per group, once its hardware batch is done, the three kernels over its images:
 * colour (planes -> source RGB), the horizontal pass (source -> tmp), the vertical pass fused with the rows. */
static int finish_chunk(run_state *r, int c, int i0, int i1, qvl_err *err) {
  img_gpu *g = r->g;
  int rc = QVL_OK, n = i1 - i0;
  int a, b, groups = group(n, img_gpu_engines(g), 0, &a, &b);
#ifdef QVL_HAVE_NVJPEG
  char msg[160];
  for (int i = i0, waited = 0; !rc && i < i1; i++) {
    img_job *j = &r->jobs[i];
    if (r->sl[i].kind != D_HYBRID) continue;
    for (int k = 0; !waited && k < groups; k++) /* a failed hardware batch may have been writing these planes */
      if (cudaStreamWaitEvent(g->s, event(g, c, EV_DEC0 + k), 0)) rc = QVL_ERR_DEVICE;
    waited = 1;
    if (!rc && img_nvjpeg_decode_hybrid(g->nvj, j->bytes, j->len, &r->sl[i].lay, (img_stream)g->s, msg, sizeof msg))
      r->sl[i].kind = D_CPU; /* the CPU decoder decodes it or says what is wrong with it */
  }
#endif
  int64_t src_rows[GROUPS] = {0}, tmp_rows[GROUPS] = {0}, n_rows[GROUPS] = {0};
  img_desc *d = (img_desc *)(g->stage + r->coef_words * sizeof(int32_t)) + i0;
  for (int k = 0; !rc && k < groups; k++) {
    group(n, img_gpu_engines(g), k, &a, &b);
    for (int i = i0 + a; !rc && i < i0 + b; i++) {
      img_job *j = &r->jobs[i];
      slot *s = &r->sl[i];
      if (s->kind == D_CPU && !(rc = host_rgb(r, i, err))) {
        cudaError_t e = cudaMemcpyAsync((uint8_t *)g->work.p + s->src, s->host.px, (size_t)j->w * j->h * 3,
                                        cudaMemcpyHostToDevice, g->s);
        if (e) rc = cuda_fail(err, e, "upload");
      }
      img_desc *o = &d[i - i0];
      memset(o, 0, sizeof *o);
      if (s->kind != D_CPU) o->lay = s->lay;
      o->src = (int64_t)s->src, o->tmp = s->need_h ? (int64_t)s->tmp : (int64_t)s->src + (int64_t)s->first * j->w * 3;
      o->row0 = j->row0, o->rgb0 = j->rgb0, o->src_row0 = src_rows[k], o->tmp_row0 = tmp_rows[k];
      o->hb = s->hb, o->hw = s->hw, o->vb = s->vb, o->vw = s->vw;
      o->w = j->w, o->h = j->h, o->rw = j->rw, o->rh = j->rh, o->first = s->first, o->hk = s->hk, o->vk = s->vk;
      src_rows[k] += j->h, tmp_rows[k] += s->need_h ? s->last - s->first : 0;
      n_rows[k] += (int64_t)(j->rh / r->pc->patch) * (j->rw / r->pc->patch);
    }
  }
  const int32_t *coef = g->table.p;
  const img_desc *dd = (const img_desc *)(coef + r->coef_words) + i0;
  cudaError_t e = rc ? cudaSuccess
                     : cudaMemcpyAsync((void *)dd, d, sizeof *d * (size_t)n, cudaMemcpyHostToDevice, g->s);
  if (!rc && e) rc = cuda_fail(err, e, "descriptor upload");
  const qvl_preproc_config *pc = r->pc;
  img_stream s = (img_stream)g->s;
  for (int k = 0; !rc && k < groups; k++) {
    group(n, img_gpu_engines(g), k, &a, &b);
    if (cudaStreamWaitEvent(g->s, event(g, c, EV_DEC0 + k), 0)) rc = QVL_ERR_DEVICE;
    if (!rc) rc = img_cuda_colour(g->work.p, dd + a, b - a, src_rows[k], s);
    if (!rc) rc = img_cuda_resample_h(g->work.p, dd + a, b - a, coef, tmp_rows[k], s);
    if (!rc)
      rc = img_cuda_rows(r->rows, r->rgb, g->work.p, dd + a, b - a, coef, g->lut.p, r->jobs[i0 + a].row0, n_rows[k],
                         pc->patch, pc->temporal_patch, pc->merge, s);
  }
  if (!rc && cudaEventRecord(event(g, c, EV_END), g->s)) rc = QVL_ERR_DEVICE;
  return rc == QVL_ERR_DEVICE ? qvl_fail(err, rc, "GPU preprocessing: kernel launch failed") : rc;
}

/* Chunk boundaries: ends[k] = first image after chunk k; grows the arenas to the largest chunk. */
static int plan_chunks(run_state *r, int n, int *ends, qvl_err *err) {
  size_t max_planes = 0, max_work = 0;
  int k = 0;
  for (int i0 = 0, i1; i0 < n; i0 = i1) {
    size_t planes = 0, work = 0;
    for (i1 = i0; i1 < n && i1 - i0 < CHUNK_IMAGES; i1++) {
      const slot *s = &r->sl[i1];
      if (i1 > i0 && planes + work + s->plane_bytes + s->work_bytes > CHUNK_BYTES) break;
      planes += s->plane_bytes, work += s->work_bytes;
    }
    ends[k++] = i1;
    max_planes = planes > max_planes ? planes : max_planes, max_work = work > max_work ? work : max_work;
  }
  r->chunks = k;
  int rc = grow(r->g, &r->g->planes, max_planes, err);
  return rc ? rc : grow(r->g, &r->g->work, max_work, err);
}

/* EV_PER_CHUNK events per chunk, made once and kept. */
static int events(img_gpu *g, int chunks, qvl_err *err) {
  int want = chunks * EV_PER_CHUNK;
  if (want <= g->n_ev) return QVL_OK;
  cudaEvent_t *ev = realloc(g->ev, sizeof *ev * (size_t)want);
  if (!ev) return qvl_fail(err, QVL_ERR_NOMEM, "GPU preprocessing: out of memory");
  g->ev = ev;
  for (; g->n_ev < want; g->n_ev++)
    if (cudaEventCreate(&g->ev[g->n_ev])) return qvl_fail(err, QVL_ERR_DEVICE, "GPU preprocessing: cudaEventCreate");
  return QVL_OK;
}

/* Route, CPU decodes, arenas; then chunk by chunk: submit the hardware decodes, and while the first chunk's decode
 * runs, make and upload the coefficients; then the kernels. */
static int run_all(run_state *r, int n, int threads, qvl_err *err) {
  img_gpu *g = r->g;
  img_gpu_stats *st = &g->last;
  double t = now_ms();
  int n_cpu = 0;
  for (int i = 0; i < n; i++) { /* headers only: the scans of the GPU-routed JPEGs are checked by decode_chunk */
    slot *s = &r->sl[i];
    s->kind = route(g, &r->jobs[i], SCAN_UNCHECKED, &s->lay);
#ifdef QVL_HAVE_NVJPEG
    s->plane_bytes = s->kind == D_CPU ? 0 : planes_total(&s->lay);
#endif
    size_work(r, i);
    n_cpu += s->kind == D_CPU && r->jobs[i].bytes;
  }
  st->route_ms = now_ms() - t, t = now_ms();
  /* CPU images first, in parallel: their decode is the slow part */
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (n_cpu > 1)
  for (int i = 0; i < n; i++)
    if (r->sl[i].kind == D_CPU && r->jobs[i].bytes) {
      img_set_threads(1);
      cpu_decode(&r->sl[i].host, &r->jobs[i], r->p);
    }
  for (int i = 0; i < n; i++)
    if (r->jobs[i].err.code) return qvl_fail(err, r->jobs[i].err.code, "%s", r->jobs[i].err.msg);
  st->cpu_decode_ms = now_ms() - t, t = now_ms();
  int *ends = r->ends = malloc(sizeof(int) * (size_t)n);
  int rc = ends ? plan_chunks(r, n, ends, err) : qvl_fail(err, QVL_ERR_NOMEM, "GPU preprocessing: out of memory");
  if (!rc) rc = events(g, r->chunks, err);
  for (int c = 0, i0 = 0; !rc && c < r->chunks; i0 = ends[c++]) {
    rc = decode_chunk(r, c, i0, ends[c], err);
    if (!rc && !c) {
      st->submit_ms += now_ms() - t, t = now_ms();
      if (!(rc = upload_lut(g, r->pc, err))) rc = stage_coeffs(r, n, err);
      st->setup_ms = now_ms() - t, t = now_ms();
    }
    if (!rc) rc = finish_chunk(r, c, i0, ends[c], err);
  }
  st->submit_ms += now_ms() - t;
  for (int i = 0; i < n; i++) {
    st->hardware += r->sl[i].kind == D_HW;
    st->hybrid += r->sl[i].kind == D_HYBRID;
    st->cpu += r->sl[i].kind == D_CPU;
  }
  st->chunks = r->chunks;
  return rc;
}

/* Device times of the last run from its events (after the final sync), summed over chunks: chunk start to its last
 * hardware batch done, that to the chunk's end (the kernels the decode did not hide), start to end. */
static void phase_times(img_gpu *g, const run_state *r) {
  img_gpu_stats *st = &g->last;
  for (int c = 0; g->timing && c < r->chunks; c++) {
    float all = 0, dec = 0, e;
    int a, b, groups = group(r->ends[c] - (c ? r->ends[c - 1] : 0), img_gpu_engines(g), 0, &a, &b);
    if (cudaEventElapsedTime(&all, event(g, c, EV_START), event(g, c, EV_END))) continue;
    for (int k = 0; k < groups; k++)
      if (!cudaEventElapsedTime(&e, event(g, c, EV_START), event(g, c, EV_DEC0 + k)) && e > dec) dec = e;
    st->decode_ms += dec, st->tail_ms += all - dec, st->device_ms += all;
  }
}

/* Waits for the pipeline's streams: its own and the decode streams. */
static cudaError_t drain(img_gpu *g) {
  cudaError_t e = cudaStreamSynchronize(g->s);
#ifdef QVL_HAVE_NVJPEG
  for (int k = 0; k < GROUPS && g->nvj; k++) {
    cudaError_t f = cudaStreamSynchronize(g->ds[k]);
    if (!e) e = f;
  }
#endif
  return e;
}

int img_gpu_run(img_gpu *g, void *rows, uint8_t *rgb, img_job *jobs, const qvl_image *imgs, int n,
                const qvl_preproc_config *pc, const qvl_image_params *p, int threads, qvl_err *err) {
  double t0 = now_ms();
  run_state r = {g, jobs, imgs, p, pc, calloc((size_t)n, sizeof(slot)), rows, rgb, 0, 0, NULL};
  memset(&g->last, 0, sizeof g->last);
  int rc = r.sl ? run_all(&r, n, threads, err) : qvl_fail(err, QVL_ERR_NOMEM, "GPU preprocessing: out of memory");
  double t1 = now_ms();
  cudaError_t e = drain(g);
  if (!rc && e) rc = cuda_fail(err, e, "kernels");
  g->last.wait_ms = now_ms() - t1, g->last.total_ms = now_ms() - t0;
  if (!rc) phase_times(g, &r);
  for (int i = 0; r.sl && i < n; i++)
    if (jobs[i].bytes) free(r.sl[i].host.px);
  free(r.sl), free(r.ends);
  return rc;
}
/* Every copy here is on g->s: the stream is non-blocking, so a cudaMemcpy (legacy default stream) is not ordered
 * before the kernels or the read-back on it, and a pageable host-to-device cudaMemcpy may return before its DMA has
 * landed (a 1x150 PNG's 450 bytes were read back as the previous image's). */
int img_gpu_decode(img_gpu *g, img_rgb *out, int *path, const uint8_t *data, size_t len, int white_alpha,
                   qvl_err *err) {
  img_job j = {.bytes = data, .len = len, .what = "image"};
  img_header hd;
  memset(out, 0, sizeof *out);
  int rc = img_probe(&hd, data, len, j.what, err);
  if (rc) return rc;
  j.format = hd.format, j.w = j.rw = hd.w, j.h = j.rh = hd.h;
  img_planes lay;
#ifdef QVL_HAVE_NVJPEG
  img_desc d; /* the JPEG path's descriptor: lives until the stream has read it (the final sync) */
#endif
  int kind = route(g, &j, hd.format == IMG_JPEG ? scan_shape(data, len) : SCAN_TRUNCATED, &lay);
  size_t n = (size_t)j.w * j.h * 3;
  *path = kind;
  rc = grow(g, &g->work, n, err);
  if (!rc) rc = grow(g, &g->table, sizeof(img_desc), err);
#ifdef QVL_HAVE_NVJPEG
  if (!rc && kind != D_CPU) {
    char msg[160];
    rc = grow(g, &g->planes, planes_total(&lay), err);
    if (!rc) place_planes(&lay, g->planes.p);
    if (!rc && kind == D_HW && img_nvjpeg_decode_hw(g->nvj, 0, &data, &len, 1, &lay, (img_stream)g->s, msg, sizeof msg))
      rc = qvl_fail(err, QVL_ERR_DEVICE, "%s", msg);
    if (!rc && kind == D_HYBRID && img_nvjpeg_decode_hybrid(g->nvj, data, len, &lay, (img_stream)g->s, msg, sizeof msg))
      rc = qvl_fail(err, QVL_ERR_DEVICE, "%s", msg);
    d = (img_desc){.lay = lay, .w = j.w, .h = j.h, .rw = j.w, .rh = j.h};
    cudaError_t e = rc ? cudaSuccess : cudaMemcpyAsync(g->table.p, &d, sizeof d, cudaMemcpyHostToDevice, g->s);
    if (!rc && e) rc = cuda_fail(err, e, "descriptor upload");
    if (!rc && img_cuda_colour(g->work.p, g->table.p, 1, j.h, (img_stream)g->s))
      rc = qvl_fail(err, QVL_ERR_DEVICE, "colour kernel failed");
  }
#endif
  if (!rc && kind == D_CPU) {
    img_rgb host = {0};
    rc = img_decode(&host, data, len, white_alpha, 0, j.what, err);
    cudaError_t e = rc ? cudaSuccess : cudaMemcpyAsync(g->work.p, host.px, n, cudaMemcpyHostToDevice, g->s);
    if (!e && !rc) e = cudaStreamSynchronize(g->s); /* host.px is freed next */
    if (!rc && e) rc = cuda_fail(err, e, "upload");
    free(host.px);
  }
  out->px = rc ? NULL : malloc(n);
  if (!rc && !out->px) rc = qvl_fail(err, QVL_ERR_NOMEM, "out of memory");
  cudaError_t e = rc ? cudaSuccess : cudaMemcpyAsync(out->px, g->work.p, n, cudaMemcpyDeviceToHost, g->s);
  if (!e) e = cudaStreamSynchronize(g->s);
  if (!rc && e) rc = cuda_fail(err, e, "decode");
  if (rc) free(out->px), out->px = NULL;
  else out->w = j.w, out->h = j.h;
  return rc;
}
#endif
