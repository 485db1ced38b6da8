/* qvl preprocess: image files -> the pixel rows the vision tower consumes, written as safetensors with
 * "pixel_values" f32 [N, 3*T*P*P], "image_grid_thw" i64 [n, 3] (what the HF image processor returns and
 * what `qvl encode --pixels` reads) and "image_hash" u8 [n, 16] (BLAKE2b-128 of each resized image).
 * Only config.json and preprocessor_config.json are read: no weights are needed.
 * --repeat N times the whole batch N times from bytes in memory (after one warm-up) and prints one JSON
 * line: the median, the images/s and the thread count; -o is then optional. */
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "io/config.h"
#include "io/safetensors.h"

#define MAX_IMAGES 4096
#define MAX_FILE_BYTES (256u << 20)

typedef struct pre_opts {
  int n, repeat;
  const char *paths[MAX_IMAGES];
  qvl_image_params params;
} pre_opts;

/* Takes the image paths and this command's options out of argv; the rest goes to app_parse. */
static int split_args(pre_opts *p, int *argc, char **argv) {
  int k = 1;
  p->params = qvl_image_default_params();
  for (int i = 1; i < *argc; i++) {
    const char *a = argv[i], *v = i + 1 < *argc ? argv[i + 1] : NULL;
    int64_t *num = !strcmp(a, "--min-pixels") ? &p->params.min_pixels
                   : !strcmp(a, "--max-pixels") ? &p->params.max_pixels
                   : !strcmp(a, "--max-input-pixels") ? &p->params.max_input_pixels : NULL;
    if ((num || !strcmp(a, "--repeat")) && !v) return fprintf(stderr, "qvl preprocess: %s needs a value\n", a), 1;
    if (num) *num = strtoll(argv[++i], NULL, 10);
    else if (!strcmp(a, "--repeat")) p->repeat = atoi(argv[++i]);
    else if (!strcmp(a, "--qwen-vl-utils")) p->params.semantics = QVL_IMAGE_QWEN_VL_UTILS;
    else if (a[0] != '-' && (k < 2 || (strcmp(argv[k - 1], "--model") && strcmp(argv[k - 1], "-o") &&
                                       strcmp(argv[k - 1], "--threads")))) {
      if (p->n == MAX_IMAGES) return fprintf(stderr, "qvl preprocess: at most %d images\n", MAX_IMAGES), 1;
      p->paths[p->n++] = a;
    } else argv[k++] = argv[i];
  }
  *argc = k;
  return 0;
}

static int read_images(qvl_image *imgs, char **bufs, const pre_opts *p) {
  for (int i = 0; i < p->n; i++) {
    qvl_err err = {0};
    size_t len;
    if (qvl_read_file(p->paths[i], &bufs[i], &len, MAX_FILE_BYTES, &err)) {
      fprintf(stderr, "qvl preprocess: %s\n", err.msg);
      return 1;
    }
    imgs[i] = (qvl_image){.data = bufs[i], .size = len};
  }
  return 0;
}

static int write_batch(const char *path, const qvl_image_batch *b) {
  int64_t k, rows = qvl_image_batch_rows(b, &k);
  const qvl_pixels *px = qvl_image_batch_pixels(b);
  int n = px->n_images, rc = 1;
  int64_t *grid = malloc(sizeof(int64_t) * 3 * (size_t)n);
  uint8_t *hash = malloc(QVL_IMAGE_HASH_BYTES * (size_t)n);
  if (grid && hash) {
    for (int i = 0; i < 3 * n; i++) grid[i] = px->grid_thw[i];
    for (int i = 0; i < n; i++)
      memcpy(hash + QVL_IMAGE_HASH_BYTES * i, qvl_image_batch_hash(b, i), QVL_IMAGE_HASH_BYTES);
    st_entry e[3] = {{"pixel_values", ST_F32, 2, {rows, k}, px->rows},
                     {"image_grid_thw", ST_I64, 2, {n, 3}, grid},
                     {"image_hash", ST_U8, 2, {n, QVL_IMAGE_HASH_BYTES}, hash}};
    qvl_err err = {0};
    rc = st_write(path, e, 3, NULL, NULL, &err);
    if (rc) fprintf(stderr, "qvl preprocess: %s (%s)\n", err.msg, qvl_status_name(rc));
  }
  free(grid), free(hash);
  return rc;
}

/* One warm-up, then p->repeat timed runs of the whole batch; prints the median as a JSON line. */
static int bench(qvl_engine *e, const qvl_image *imgs, const pre_opts *p, int threads) {
  double *ms = malloc(sizeof(double) * (size_t)p->repeat);
  int rc = ms ? 0 : 1;
  for (int r = -1; !rc && r < p->repeat; r++) {
    qvl_image_batch *b = NULL;
    double t0 = app_now_ms();
    rc = qvl_preprocess_images(e, imgs, p->n, &p->params, &b);
    if (r >= 0) ms[r] = app_now_ms() - t0;
    qvl_image_batch_free(b);
  }
  if (rc) fprintf(stderr, "qvl preprocess: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  if (!rc) {
    double med = app_median(ms, p->repeat); /* sorts: ms[0] is then the fastest */
    printf("{\"bench\": \"preprocess_cpu\", \"images\": %d, \"threads\": %d, \"repeat\": %d, \"median_ms\": %.2f, "
           "\"min_ms\": %.2f, \"images_per_s\": %.1f}\n",
           p->n, threads, p->repeat, med, ms[0], p->n * 1e3 / med);
  }
  free(ms);
  return rc;
}

int cmd_preprocess(int argc, char **argv) {
  static pre_opts p;
  app_opts o;
  if (split_args(&p, &argc, argv) || app_parse(&o, argc, argv)) return 2;
  if ((!o.out && p.repeat < 1) || !p.n) {
    fprintf(stderr, "qvl preprocess: needs --model DIR, image files and -o OUT.safetensors (or --repeat N)\n");
    return 2;
  }
  o.engine.dummy = 1, o.engine.load = QVL_LOAD_NONE; /* the configs are all it needs */
  p.params.n_threads = o.engine.n_threads;
  qvl_image *imgs = calloc((size_t)p.n, sizeof *imgs);
  char **bufs = calloc((size_t)p.n, sizeof *bufs);
  qvl_engine *e = imgs && bufs ? app_open(&o) : NULL;
  qvl_image_batch *b = NULL;
  int rc = !e || read_images(imgs, bufs, &p);
  if (!rc && p.repeat > 0)
    rc = bench(e, imgs, &p, p.params.n_threads > 0 ? p.params.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
  if (!rc && o.out && (rc = qvl_preprocess_images(e, imgs, p.n, &p.params, &b)))
    fprintf(stderr, "qvl preprocess: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  if (!rc && o.out && !(rc = write_batch(o.out, b))) {
    int64_t k, rows = qvl_image_batch_rows(b, &k);
    for (int i = 0; i < p.n; i++) {
      const int32_t *g = qvl_image_batch_pixels(b)->grid_thw + 3 * i;
      fprintf(stderr, "  %s: grid %dx%dx%d (%d tokens)\n", p.paths[i], g[0], g[1], g[2], g[0] * g[1] * g[2] / 4);
    }
    fprintf(stderr, "qvl preprocess: %d image(s) -> %lld x %lld pixel rows -> %s\n", p.n, (long long)rows,
            (long long)k, o.out);
  }
  for (int i = 0; bufs && i < p.n; i++) free(bufs[i]);
  free(bufs), free(imgs);
  qvl_image_batch_free(b);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
