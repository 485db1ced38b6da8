/* The GPU image path (image/gpu.h) against the CPU path, on fresh random inputs each run (QVL_TEST_SEED to replay):
 *   - the colour kernel == img_ycc_to_rgb on random planes of every sampling, odd and tiny sizes, padded strides;
 *   - resample + patchify: device rows == bf16(the CPU path's f32 rows) exactly, from the same RGB, for both models'
 *     processor settings and every resample case (both passes, one, none);
 *   - the fixtures through the whole pipeline: JPEGs by nvJPEG (mean and max |delta| vs libjpeg-turbo printed and
 *     bounded), everything else by the CPU decoder, whose rows must then be exact;
 *   - tiny and odd sizes (1xN, Nx1, 1x1, 2x2) decoded on the CPU: exact bytes from the decode path and exact rows,
 *     alone and in one run with larger images;
 *   - fallbacks: progressive, CMYK, PNG, WebP decode; corrupt and truncated bytes give a clear error;
 *   - the engine: qvl_preprocess_images on CUDA gives device rows and the CPU path's hashes, which the tower and
 *     qvl_generate_ids read as they read host rows.
 * Skips, saying why, without a GPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "image/cuda/img_cuda.h"
#include "image/gpu.h"
#include "image/image.h"
#include "img_encode.h"
#include "io/config.h"
#include "testutil.h"

typedef struct env {
  qvl_backend *b;
  img_gpu *g;
  qvl_preproc_config pc[2]; /* Qwen2.5-VL, Qwen3-VL */
  uint64_t rng;
  qvl_err berr; /* the backend's */
} env;

static env E;

static uint32_t rnd(void) {
  E.rng = E.rng * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(E.rng >> 33);
}

static void fill(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd();
}

static void *to_dev(const void *h, size_t n) {
  void *d = NULL;
  assert_int_equal(cudaMalloc(&d, n ? n : 1), cudaSuccess);
  if (n) assert_int_equal(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

/* ---- colour kernel ---- */

static void ycc_case(int w, int h, int n, const int *hs, const int *vs) {
  img_planes im, dim;
  if (img_planes_layout(&im, w, h, n, hs, vs)) fail_msg("layout");
  dim = im;
  uint8_t *buf[3] = {0};
  void *dbuf[3] = {0};
  for (int c = 0; c < n; c++) {
    int stride = im.c[c].w + (int)(rnd() % 9), rows = im.c[c].h + (int)(rnd() % 3);
    size_t bytes = (size_t)stride * rows;
    buf[c] = malloc(bytes);
    fill(buf[c], bytes); /* the padding too: it must never be read */
    im.c[c].p = buf[c], im.c[c].stride = stride;
    dbuf[c] = to_dev(buf[c], bytes);
    dim.c[c].p = dbuf[c], dim.c[c].stride = stride;
  }
  size_t bytes = (size_t)w * h * 3;
  uint8_t *ref = malloc(bytes), *got = malloc(bytes), *d = NULL;
  img_ycc_to_rgb(ref, &im);
  assert_int_equal(cudaMalloc((void **)&d, bytes), cudaSuccess);
  assert_int_equal(cudaMemset(d, 0xa5, bytes), cudaSuccess); /* poison */
  img_desc desc = {.lay = dim, .w = w, .h = h, .rw = w, .rh = h}, *ddesc = to_dev(&desc, sizeof desc);
  assert_int_equal(img_cuda_colour(d, ddesc, 1, h, NULL), QVL_OK);
  cudaFree(ddesc);
  assert_int_equal(cudaMemcpy(got, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < bytes; i++)
    if (got[i] != ref[i])
      fail_msg("ycc %dx%d, Y sampling %dx%d, comps %d: byte %zu is %d, the C reference says %d", w, h, hs[0], vs[0], n,
               i, got[i], ref[i]);
  for (int c = 0; c < n; c++) free(buf[c]), cudaFree(dbuf[c]);
  free(ref), free(got), cudaFree(d);
}

static void test_ycc_kernel(void **state) {
  (void)state;
  /* Y sampling (chroma 1x1): 4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, 4:1:0; then chroma sampled apart from each other */
  static const int samp[][6] = {{1, 1, 1, 1, 1, 1}, {2, 1, 1, 1, 1, 1}, {2, 2, 1, 1, 1, 1}, {1, 2, 1, 1, 1, 1},
                                {4, 1, 1, 1, 1, 1}, {4, 2, 1, 1, 1, 1}, {2, 2, 1, 2, 1, 2}, {2, 2, 2, 1, 1, 1}};
  static const int sizes[][2] = {{1, 1}, {2, 2}, {3, 5}, {5, 3}, {4, 4}, {7, 9}, {16, 16}, {33, 17}};
  int cases = 0;
  for (size_t s = 0; s < sizeof samp / sizeof *samp; s++)
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes + 4; k++) {
      int w = k < 8 ? sizes[k][0] : 1 + (int)(rnd() % 700), h = k < 8 ? sizes[k][1] : 1 + (int)(rnd() % 500);
      int hs[3] = {samp[s][0], samp[s][2], samp[s][4]}, vs[3] = {samp[s][1], samp[s][3], samp[s][5]};
      ycc_case(w, h, 3, hs, vs);
      if (s == 0) ycc_case(w, h, 1, hs, vs);
      cases += 1 + (s == 0);
    }
  printf("ycc kernel: %d random plane sets equal to the C reference\n", cases);
}

/* ---- rows: GPU pipeline vs CPU pipeline ---- */

typedef struct cmp {
  int64_t n, bad;
  int max_level; /* JPEG: largest |delta| of the decoded RGB */
} cmp;

/* bf16 rows of images on the GPU vs bf16(CPU f32 rows); returns differing elements. */
static int64_t compare_rows(const qvl_preproc_config *pc, const qvl_image *im, int n, const char *what) {
  qvl_err err = {0};
  qvl_image_batch *cpu = NULL, *gpu = NULL;
  if (img_preprocess_on(&cpu, NULL, pc, im, n, NULL, &err)) fail_msg("%s: CPU: %s", what, err.msg);
  if (img_preprocess_on(&gpu, E.g, pc, im, n, NULL, &err)) fail_msg("%s: GPU: %s", what, err.msg);
  assert_int_equal(cpu->n_rows, gpu->n_rows);
  assert_memory_equal(cpu->grid, gpu->grid, sizeof(int32_t) * 3 * n);
  size_t elems = (size_t)(cpu->n_rows * cpu->row_len);
  uint16_t *got = malloc(elems * 2);
  assert_int_equal(cudaMemcpy(got, gpu->dev_rows, elems * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  int64_t bad = 0;
  for (size_t i = 0; i < elems; i++)
    if (got[i] != qvl_f32_to_bf16(cpu->rows[i]) && !bad++)
      printf("  %s: first difference at element %zu (row %zu): %#06x, bf16(CPU) %#06x\n", what, i,
             i / (size_t)cpu->row_len, got[i], qvl_f32_to_bf16(cpu->rows[i]));
  free(got);
  for (int i = 0; i < n; i++) /* the GPU path's digest is over its resized RGB: equal to the CPU path's here */
    if (!bad && memcmp(qvl_image_batch_hash(cpu, i), qvl_image_batch_hash(gpu, i), QVL_IMAGE_HASH_BYTES))
      fail_msg("%s: image %d: equal rows but the hashes differ", what, i);
  qvl_image_batch_free(cpu), qvl_image_batch_free(gpu);
  return bad;
}

/* Raw RGB in: the same pixels reach both resamplers. Sizes pick every resample case for both models. */
static void test_rows_exact(void **state) {
  (void)state;
  static const int sizes[][2] = {{640, 480}, {650, 480}, {640, 490}, {1280, 960}, {37, 23}, {448, 448}, {3000, 40}};
  for (int m = 0; m < 2; m++) {
    int64_t bad = 0;
    qvl_image im[9];
    uint8_t *px[9];
    int n = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes + 2; k++, n++) {
      int w = k < 7 ? sizes[k][0] : 20 + (int)(rnd() % 1500), h = k < 7 ? sizes[k][1] : 20 + (int)(rnd() % 1500);
      px[n] = malloc((size_t)w * h * 3);
      if (k % 2) fill(px[n], (size_t)w * h * 3);
      else enc_synth(px[n], w, h, 3, rnd());
      im[n] = (qvl_image){.rgb = px[n], .width = w, .height = h};
      char what[64];
      snprintf(what, sizeof what, "%s %dx%d", m ? "qwen3_vl" : "qwen2_5_vl", w, h);
      bad += compare_rows(&E.pc[m], &im[n], 1, what);
    }
    bad += compare_rows(&E.pc[m], im, n, "the batch"); /* several images: offsets and buffer reuse */
    for (int i = 0; i < n; i++) free(px[i]);
    printf("rows %s: %d images, %lld elements differ from bf16(CPU)\n", m ? "qwen3_vl" : "qwen2_5_vl", n,
           (long long)bad);
    assert_int_equal(bad, 0);
  }
}

static char *slurp(const char *file, size_t *len) {
  char rel[160], *data = NULL;
  qvl_err err = {0};
  snprintf(rel, sizeof rel, "tests/data/images/%s", file);
  if (qvl_read_file(tu_path(rel), &data, len, 64 << 20, &err)) fail_msg("%s", err.msg);
  return data;
}

/* Every fixture through the GPU pipeline: JPEGs nvJPEG decodes are compared with libjpeg-turbo (mean and max
 * |delta|), images decoded on the CPU must give exact rows. */
static void test_fixtures(void **state) {
  (void)state;
  static const char *files[] = {"jpeg_1920x1080.jpg", "jpeg_20x20.jpg", "jpeg_420_640x480.jpg", "jpeg_422_333x777.jpg",
                                "jpeg_444_1000x750.jpg", "jpeg_cmyk_300x200.jpg", "jpeg_gray_500x400.jpg",
                                "jpeg_progressive_1024x768.jpg", "jpeg_wide_4000x20.jpg", "jpeg_4000x3000.jpg",
                                "png_rgba_400x300.png", "png_palette_trns_256x192.png", "png_rgb16_200x150.png",
                                "webp_lossy_800x600.webp", "png_tall_1x150.png"};
  static const char *path_name[] = {"cpu", "hybrid", "hardware"};
  printf("nvJPEG decode vs libjpeg-turbo (|delta| in levels; engines: %d):\n", img_gpu_engines(E.g));
  double worst_mean = 0;
  int worst_max = 0;
  for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
    size_t len;
    char *data = slurp(files[f], &len);
    qvl_err err = {0};
    img_rgb ref, got;
    int path = -1;
    if (img_decode(&ref, (const uint8_t *)data, len, 0, 0, files[f], &err)) fail_msg("%s", err.msg);
    if (img_gpu_decode(E.g, &got, &path, (const uint8_t *)data, len, 0, &err)) fail_msg("%s: %s", files[f], err.msg);
    assert_int_equal(got.w, ref.w);
    assert_int_equal(got.h, ref.h);
    double sum = 0;
    int mx = 0;
    size_t nb = (size_t)ref.w * ref.h * 3;
    for (size_t i = 0; i < nb; i++) {
      int d = abs((int)got.px[i] - ref.px[i]);
      sum += d, mx = d > mx ? d : mx;
    }
    printf("  %-32s %-8s mean %.4f max %d\n", files[f], path_name[path], sum / nb, mx);
    if (path == 0 && mx) fail_msg("%s: decoded on the CPU but differs from the CPU decode", files[f]);
    worst_mean = fmax(worst_mean, sum / nb), worst_max = mx > worst_max ? mx : worst_max;
    /* a wrong colour conversion or upsampling shows as a mean of several levels; nvJPEG's IDCT stays well under 1 */
    if (sum / nb > 1.0 || mx > 12) fail_msg("%s: mean %.3f / max %d levels from libjpeg-turbo", files[f], sum / nb, mx);
    qvl_image im = {.data = data, .size = len};
    for (int m = 0; path == 0 && m < 2; m++) assert_int_equal(compare_rows(&E.pc[m], &im, 1, files[f]), 0);
    if (path) { /* same decoded RGB in, same rows out */
      qvl_image raw = {.rgb = got.px, .width = got.w, .height = got.h};
      assert_int_equal(compare_rows(&E.pc[0], &raw, 1, files[f]), 0);
    }
    free(ref.px), free(got.px), free(data);
  }
  printf("nvJPEG vs libjpeg-turbo over the fixtures: worst mean %.4f, worst max %d (targets 0.5 and 4)\n", worst_mean,
         worst_max);
  /* all of them in one run (one hardware batch, one launch per kernel) == each alone */
  enum { NF = sizeof files / sizeof *files };
  qvl_image all[NF];
  char *bytes[NF];
  for (int f = 0; f < NF; f++) {
    size_t len;
    bytes[f] = slurp(files[f], &len);
    all[f] = (qvl_image){.data = bytes[f], .size = len};
  }
  qvl_err err = {0};
  qvl_image_batch *b = NULL;
  if (img_preprocess_on(&b, E.g, &E.pc[1], all, NF, NULL, &err)) fail_msg("batch: %s", err.msg);
  size_t elems = (size_t)(b->n_rows * b->row_len);
  uint16_t *whole = malloc(elems * 2);
  assert_int_equal(cudaMemcpy(whole, b->dev_rows, elems * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int f = 0, row = 0; f < NF; f++) {
    qvl_image_batch *one = NULL;
    if (img_preprocess_on(&one, E.g, &E.pc[1], &all[f], 1, NULL, &err)) fail_msg("%s: %s", files[f], err.msg);
    size_t ne = (size_t)(one->n_rows * one->row_len);
    uint16_t *got = malloc(ne * 2);
    assert_int_equal(cudaMemcpy(got, one->dev_rows, ne * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    if (memcmp(got, whole + (size_t)row * b->row_len, ne * 2)) fail_msg("%s: rows in a batch differ from alone", files[f]);
    assert_memory_equal(qvl_image_batch_hash(one, 0), qvl_image_batch_hash(b, f), QVL_IMAGE_HASH_BYTES);
    row += (int)one->n_rows;
    free(got), qvl_image_batch_free(one), free(bytes[f]);
  }
  printf("the %d fixtures in one run: rows and hashes equal to each alone\n", NF);
  free(whole), qvl_image_batch_free(b);
  const img_gpu_stats *st = img_gpu_last(E.g);
  printf("last batch: %d hardware, %d hybrid, %d cpu\n", st->hardware, st->hybrid, st->cpu);
}

/* CPU path refuses (smart_resize's aspect limit, too small): the GPU path must refuse too; returns 1 when refused. */
static int both_refuse(const qvl_preproc_config *pc, const qvl_image *im, int n, const char *what) {
  qvl_err cerr = {0}, gerr = {0};
  qvl_image_batch *cb = NULL, *gb = NULL;
  int crc = img_preprocess_on(&cb, NULL, pc, im, n, NULL, &cerr), grc = img_preprocess_on(&gb, E.g, pc, im, n, NULL, &gerr);
  qvl_image_batch_free(cb), qvl_image_batch_free(gb);
  if (crc && !grc) fail_msg("%s: the CPU path refuses (%s) but the GPU path accepts", what, cerr.msg);
  if (!crc && grc) fail_msg("%s: the GPU path refuses: %s", what, gerr.msg);
  return crc != 0;
}

/* Tiny and odd sizes (1xN, Nx1, 1x1, 2x2, odd widths) decoded on the CPU: img_gpu_decode right after a larger image
 * left other bytes in the work buffer must give the CPU decode exactly (a 1x150 PNG once came back as the previous
 * image's bytes: its upload was not ordered before the read-back), and the rows, alone, as raw RGB and all in one run
 * with larger images between them, must equal the CPU path's. */
static void test_tiny_sizes(void **state) {
  (void)state;
  static const int sizes[][2] = {{1, 150}, {150, 1}, {1, 1}, {2, 2}, {1, 2}, {3, 1}, {3, 5}, {5, 3}, {7, 1},
                                 {1, 7},   {17, 9}, {31, 2}, {2, 31}, {199, 1}, {1, 199}, {13, 13}};
  enum { NS = sizeof sizes / sizeof *sizes, BW = 301, BH = 203 };
  uint8_t *big = malloc((size_t)BW * BH * 3);
  size_t big_len;
  fill(big, (size_t)BW * BH * 3);
  uint8_t *big_png = enc_png(big, BW, BH, PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, &big_len);
  assert_non_null(big_png);
  qvl_image all[2 * NS];
  uint8_t *px[NS], *png[NS];
  int n_all = 0, cases = 0;
  for (int k = 0; k < NS; k++) {
    int w = sizes[k][0], h = sizes[k][1];
    size_t len, nb = (size_t)w * h * 3;
    px[k] = malloc(nb);
    if (k % 2) fill(px[k], nb);
    else enc_synth(px[k], w, h, 3, rnd());
    png[k] = enc_png(px[k], w, h, PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, &len);
    assert_non_null(png[k]);
    char what[64];
    snprintf(what, sizeof what, "tiny PNG %dx%d", w, h);
    /* the decode path, the work buffer holding a larger image's bytes first */
    qvl_err err = {0};
    img_rgb ref, got, prev;
    int path = -1;
    if (img_gpu_decode(E.g, &prev, &path, big_png, big_len, 0, &err)) fail_msg("%s: %s", what, err.msg);
    free(prev.px);
    if (img_decode(&ref, png[k], len, 0, 0, what, &err)) fail_msg("%s: %s", what, err.msg);
    if (img_gpu_decode(E.g, &got, &path, png[k], len, 0, &err)) fail_msg("%s: %s", what, err.msg);
    assert_int_equal(path, 0);
    assert_int_equal(got.w, w);
    assert_int_equal(got.h, h);
    if (memcmp(got.px, ref.px, nb) || memcmp(got.px, px[k], nb))
      fail_msg("%s: decoded on the CPU but the GPU path's bytes differ from the CPU decode", what);
    free(ref.px), free(got.px);
    /* the rows: encoded (CPU decode in the batched pipeline) and raw */
    qvl_image enc = {.data = png[k], .size = len}, raw = {.rgb = px[k], .width = w, .height = h};
    for (int m = 0; m < 2; m++) {
      if (both_refuse(&E.pc[m], &enc, 1, what)) continue;
      assert_int_equal(compare_rows(&E.pc[m], &enc, 1, what), 0);
      assert_int_equal(compare_rows(&E.pc[m], &raw, 1, what), 0);
      cases++;
    }
    if (!both_refuse(&E.pc[1], &enc, 1, what)) { /* the run below: accepted ones, a larger image after each */
      all[n_all++] = enc;
      all[n_all++] = (qvl_image){.data = big_png, .size = big_len};
    }
  }
  for (int m = 0; m < 2 && n_all; m++) assert_int_equal(compare_rows(&E.pc[m], all, n_all, "tiny sizes in one run"), 0);
  printf("tiny sizes: %d of %d images decoded exactly; %d image x model cases and one run of %d images give the CPU "
         "path's rows\n", NS, NS, cases, n_all);
  for (int k = 0; k < NS; k++) free(px[k]), free(png[k]);
  free(big), free(big_png);
}

/* Bad bytes: a clear error from the pipeline, no crash, and the pipeline still works afterwards. */
static void test_bad_input(void **state) {
  (void)state;
  size_t len;
  char *data = slurp("jpeg_420_640x480.jpg", &len);
  uint8_t *bad = malloc(len);
  struct {
    size_t len;
    const char *needle;
  } cases[] = {{len / 2, "truncated"}, {len, "JPEG"}, {40, "JPEG"}};
  for (int k = 0; k < 3; k++) {
    memcpy(bad, data, len);
    if (k == 1)
      for (size_t i = len / 3; i < len - 2; i += 7) bad[i] = (uint8_t)rnd(); /* scan data garbled, EOI kept */
    qvl_image im = {.data = bad, .size = cases[k].len};
    qvl_image_batch *b = NULL;
    qvl_err err = {0};
    int rc = img_preprocess_on(&b, E.g, &E.pc[0], &im, 1, NULL, &err);
    printf("  corrupt case %d: rc %d %s\n", k, rc, rc ? err.msg : "(decoded)");
    qvl_image_batch_free(b);
    if (k != 1) {
      assert_int_not_equal(rc, QVL_OK);
      tu_assert_msg_has(err.msg, "image 0", cases[k].needle);
    } else { /* a garbled scan: refused exactly when the CPU path (libjpeg-turbo) refuses it */
      qvl_err cerr = {0};
      int crc = img_preprocess_on(&b, NULL, &E.pc[0], &im, 1, NULL, &cerr);
      qvl_image_batch_free(b);
      printf("  corrupt case 1 on the CPU path: rc %d %s\n", crc, crc ? cerr.msg : "(decoded)");
      assert_int_equal(rc == QVL_OK, crc == QVL_OK);
    }
  }
  qvl_image good = {.data = data, .size = len};
  qvl_image_batch *b = NULL;
  qvl_err err = {0};
  if (img_preprocess_on(&b, E.g, &E.pc[1], &good, 1, NULL, &err)) fail_msg("after bad input: %s", err.msg);
  qvl_image_batch_free(b);
  free(bad), free(data);
}

/* qvl_preprocess_images on a CUDA engine: device rows (and no host rows) equal to the CPU path's (host_rows) rounded,
 * equal hashes where the rows are equal; the tower and a greedy generation read the device rows as the host ones. */
/* Rows of a batch of one image, device bf16 copied back (malloc'd), *n_elems set. */
static uint16_t *gpu_rows(const qvl_preproc_config *pc, const qvl_image *im, int n, size_t *n_elems) {
  qvl_err err = {0};
  qvl_image_batch *b = NULL;
  if (img_preprocess_on(&b, E.g, pc, im, n, NULL, &err)) fail_msg("GPU: %s", err.msg);
  *n_elems = (size_t)(b->n_rows * b->row_len);
  uint16_t *got = malloc(*n_elems * 2);
  assert_int_equal(cudaMemcpy(got, b->dev_rows, *n_elems * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  qvl_image_batch_free(b);
  return got;
}

/* A batch of many encoded images of mixed kinds (baseline JPEGs of several samplings for the hardware decoder, so
 * several hardware batches are in flight; progressive JPEGs for the hybrid decoder; PNGs for the CPU): the batch's
 * rows equal each image's rows made alone, bit for bit (the grouping, decode streams and pipelined kernels change
 * nothing), twice in a row (buffers reused). */
static void test_mixed_batch(void **state) {
  (void)state;
  enum { N = 30 };
  qvl_image im[N];
  uint8_t *enc[N];
  for (int i = 0; i < N; i++) {
    int w = 16 + (int)(rnd() % 1400), h = 16 + (int)(rnd() % 1100), ch = i % 9 == 4 ? 1 : 3;
    uint8_t *px = malloc((size_t)w * h * ch);
    enc_synth(px, w, h, ch, rnd());
    size_t len = 0;
    if (i % 11 == 7) enc[i] = enc_png(px, w, h, PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, &len);
    else if (i % 13 == 5) enc[i] = enc_jpeg(px, w, h, TJPF_RGB, TJSAMP_420, 85, 1, &len);
    else enc[i] = enc_jpeg(px, w, h, ch == 1 ? TJPF_GRAY : TJPF_RGB,
                           ch == 1 ? TJSAMP_GRAY : i % 3 ? TJSAMP_420 : TJSAMP_444, 90, 0, &len);
    assert_non_null(enc[i]);
    im[i] = (qvl_image){.data = enc[i], .size = len};
    free(px);
  }
  for (int m = 0; m < 2; m++) {
    int64_t bad = 0;
    size_t n_all = 0, at = 0;
    uint16_t *all = gpu_rows(&E.pc[m], im, N, &n_all);
    const img_gpu_stats *st = img_gpu_last(E.g);
    printf("mixed batch %s: %d hardware, %d hybrid, %d CPU decodes\n", m ? "qwen3_vl" : "qwen2_5_vl", st->hardware,
           st->hybrid, st->cpu);
    if (img_gpu_engines(E.g)) assert_true(st->hardware >= 20);
    for (int rep = 0; rep < 2; rep++, at = 0) {
      for (int i = 0; i < N; i++) {
        size_t n1 = 0;
        uint16_t *one = gpu_rows(&E.pc[m], &im[i], 1, &n1);
        assert_true(at + n1 <= n_all);
        for (size_t k = 0; k < n1; k++) bad += one[k] != all[at + k];
        at += n1;
        free(one);
      }
      assert_int_equal(at, n_all);
      if (!rep) { /* once more: the batch again over the arenas the single images left */
        free(all);
        all = gpu_rows(&E.pc[m], im, N, &n_all);
      }
    }
    printf("mixed batch %s: %zu elements, %lld differ from the images made alone\n", m ? "qwen3_vl" : "qwen2_5_vl",
           n_all, (long long)bad);
    assert_int_equal(bad, 0);
    free(all);
  }
  for (int i = 0; i < N; i++) free(enc[i]);
}

static void test_engine_rows(void **state) {
  (void)state;
  qvl_engine_params ep = qvl_engine_default_params();
  ep.model_dir = tu_path("tests/data/tiny-qwen2_5_vl"), ep.dummy = 1, ep.backend = QVL_BACKEND_CUDA;
  ep.load = QVL_LOAD_ALL;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &ep)) fail_msg("%s", qvl_errmsg(e));
  size_t n_png, n_jpg;
  char *png = slurp("png_rgb16_200x150.png", &n_png), *jpg = slurp("jpeg_420_640x480.jpg", &n_jpg);
  qvl_image im[2] = {{.data = png, .size = n_png}, {.data = jpg, .size = n_jpg}};
  qvl_image_params hp = qvl_image_default_params();
  hp.host_rows = 1;
  qvl_image_batch *gb = NULL, *hb = NULL;
  if (qvl_preprocess_images(e, im, 2, NULL, &gb) || qvl_preprocess_images(e, im, 2, &hp, &hb))
    fail_msg("%s", qvl_errmsg(e));
  const qvl_pixels *gp = qvl_image_batch_pixels(gb), *hx = qvl_image_batch_pixels(hb);
  assert_non_null(gp->dev_rows), assert_null(gp->rows);
  assert_non_null(hx->rows), assert_null(hx->dev_rows);
  assert_memory_equal(gp->grid_thw, hx->grid_thw, 6 * sizeof(int32_t));
  int64_t len, rows = qvl_image_batch_rows(gb, &len), first = (int64_t)gp->grid_thw[1] * gp->grid_thw[2];
  uint16_t *got = malloc((size_t)(rows * len) * 2);
  assert_int_equal(cudaMemcpy(got, gp->dev_rows, (size_t)(rows * len) * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  int64_t bad[2] = {0, 0};
  for (int64_t i = 0; i < rows * len; i++) bad[i >= first * len] += got[i] != qvl_f32_to_bf16(hx->rows[i]);
  int same_hash[2];
  for (int i = 0; i < 2; i++)
    same_hash[i] = !memcmp(qvl_image_batch_hash(gb, i), qvl_image_batch_hash(hb, i), QVL_IMAGE_HASH_BYTES);
  printf("engine: PNG %lld elements differ, hash %s; JPEG (nvJPEG) %lld differ, hash %s\n", (long long)bad[0],
         same_hash[0] ? "equal" : "DIFFERENT", (long long)bad[1], same_hash[1] ? "equal" : "different");
  assert_int_equal(bad[0], 0);
  assert_true(same_hash[0]);
  assert_int_equal(same_hash[1], bad[1] == 0);
  /* the tower on the PNG's rows both ways */
  qvl_pixels one_g = {1, gp->grid_thw, NULL, gp->dev_rows}, one_h = {1, hx->grid_thw, hx->rows, NULL};
  qvl_features *fg = NULL, *fh = NULL;
  if (qvl_encode_pixels(e, &one_g, &fg) || qvl_encode_pixels(e, &one_h, &fh)) fail_msg("%s", qvl_errmsg(e));
  int64_t fr, fc;
  const float *a = qvl_features_data(fg, 0, &fr, &fc), *b = qvl_features_data(fh, 0, NULL, NULL);
  double num = 0, den = 0;
  for (int64_t i = 0; i < fr * fc; i++) num += (a[i] - b[i]) * (double)(a[i] - b[i]), den += (double)b[i] * b[i];
  printf("engine: features from device rows vs host rows: rel_l2 %.3g\n", sqrt(num / (den > 0 ? den : 1)));
  assert_true(sqrt(num / (den > 0 ? den : 1)) < 1e-3);
  qvl_features_free(fg), qvl_features_free(fh);
  /* a greedy generation over the PNG */
  int32_t ids[600], n = 0, pads = gp->grid_thw[1] * gp->grid_thw[2] / 4;
  assert_true(pads + 8 <= 600);
  ids[n++] = 5, ids[n++] = 6, ids[n++] = 1010;
  for (int i = 0; i < pads; i++) ids[n++] = 1012;
  ids[n++] = 1011, ids[n++] = 7, ids[n++] = 8;
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = 8;
  tu_tokens tg = {0}, th = {0};
  if (qvl_generate_ids(e, ids, n, &one_g, &s, tu_collect, &tg) || qvl_generate_ids(e, ids, n, &one_h, &s, tu_collect, &th))
    fail_msg("%s", qvl_errmsg(e));
  assert_int_equal(tg.n, th.n);
  assert_memory_equal(tg.ids, th.ids, sizeof(int32_t) * (size_t)tg.n);
  free(got), free(png), free(jpg);
  qvl_image_batch_free(gb), qvl_image_batch_free(hb);
  qvl_engine_close(e);
}

static int setup(void **state) {
  (void)state;
  qvl_err err = {0};
  E.rng = tu_seed();
  if (qvl_backend_cuda_create(&E.b, 0, &err)) fail_msg("%s", err.msg);
  E.b->err = &E.berr;
  if (img_gpu_open(&E.g, E.b, &err)) fail_msg("%s", err.msg);
  if (qvl_preproc_load(&E.pc[0], QVL_ARCH_QWEN2_5_VL, tu_path("tests/data/tiny-qwen2_5_vl/preprocessor_config.json"),
                       &err) ||
      qvl_preproc_load(&E.pc[1], QVL_ARCH_QWEN3_VL, tu_path("tests/data/tiny-qwen3_vl/preprocessor_config.json"), &err))
    fail_msg("%s", err.msg);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  img_gpu_close(E.g);
  E.b->destroy(E.b);
  return 0;
}

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_image: no CUDA device here; skipped\n");
    return 0;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ycc_kernel),
      cmocka_unit_test(test_rows_exact),
      cmocka_unit_test(test_fixtures),
      cmocka_unit_test(test_tiny_sizes),
      cmocka_unit_test(test_mixed_batch),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_engine_rows),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
