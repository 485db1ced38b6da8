/* qvl bench e2e: time to first token from JPEG bytes in host memory. Each run preprocesses the image(s)
 * (decode, resize, normalize, patchify: on the GPU when the engine runs there and the GPU path takes them) and
 * runs qvl_generate_ids for one token on the prompt
 *   <|im_start|>user\n<|vision_start|><|image_pad|>...<|vision_end|>[--question N ids]<|im_end|>\n<|im_start|>assistant\n
 * (the ids of ../shared/anchors/hf_e2e_baseline.py), so the time covers every stage a chat request pays before
 * its first token. Medians over --runs after one warm-up, wall clock; one JSON line.
 *   qvl bench e2e --model DIR [--dummy] [--image FILE | --synthetic HxW] [--question N] [--runs N]
 *                 [--write-jpeg FILE]
 * --synthetic builds a deterministic q90 4:2:0 JPEG (gradients + noise, as the HF anchor does); --write-jpeg
 * saves the bytes used, so bench/hf_e2e.py times transformers on the same file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "apps.h"
#include "qvl_internal.h"

/* Gradients in three channels plus uniform noise of +-32 levels (a fixed LCG): texture for the codec, not flat. */
static unsigned char *synthetic_jpeg(int h, int w, unsigned long *size) {
  unsigned char *rgb = malloc((size_t)h * w * 3), *jpeg = NULL;
  if (!rgb) return NULL;
  uint32_t s = 12345u;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int base[3] = {x % 256, (y * 3) % 256, ((x + y) / 3) % 256};
      for (int c = 0; c < 3; c++) {
        s = s * 1664525u + 1013904223u;
        int v = base[c] + (int)(s >> 26) - 32;
        rgb[((size_t)y * w + x) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  tjhandle tj = tjInitCompress();
  if (!tj || tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpeg, size, TJSAMP_420, 90, 0)) jpeg = NULL;
  if (tj) tjDestroy(tj);
  free(rgb);
  return jpeg;
}

static unsigned char *read_file(const char *path, unsigned long *size) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL;
  if (f && fseek(f, 0, SEEK_END) == 0) {
    long n = ftell(f);
    if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = tjAlloc((int)n)) && fread(buf, 1, (size_t)n, f) != (size_t)n)
      tjFree(buf), buf = NULL;
    *size = n > 0 ? (unsigned long)n : 0;
  }
  if (f) fclose(f);
  return buf;
}

static int first_token(void *ud, int32_t id) {
  (void)id;
  *(double *)ud = app_now_ms();
  return 1;
}

/* A text id for the model: taken modulo its vocabulary (the tiny test models have 1,024 ids), never one of the
 * vision ids. */
static int32_t text_id(const qvl_config *c, int32_t id) {
  id %= c->text.vocab;
  int vision = id == c->image_token_id || id == c->video_token_id || id == c->vision_start_token_id ||
               id == c->vision_end_token_id;
  return vision ? 100 : id;
}

/* The chat prompt around one image of grid g with a question of nq ids. */
static int32_t *prompt_ids(const qvl_config *c, const int32_t g[3], int nq, int *n) {
  int pads = g[0] * g[1] * g[2] / (c->vision.merge * c->vision.merge);
  int32_t *ids = malloc((size_t)(pads + nq + 10) * sizeof *ids);
  if (!ids) return NULL;
  int k = 0;
  ids[k++] = text_id(c, 151644), ids[k++] = text_id(c, 872), ids[k++] = text_id(c, 198);
  ids[k++] = c->vision_start_token_id;
  for (int i = 0; i < pads; i++) ids[k++] = c->image_token_id;
  ids[k++] = c->vision_end_token_id;
  for (int i = 0; i < nq; i++) ids[k++] = text_id(c, 1000 + i);
  static const int32_t tail[] = {151645, 198, 151644, 77091, 198};
  for (int i = 0; i < 5; i++) ids[k++] = text_id(c, tail[i]);
  *n = k;
  return ids;
}

static int bench(qvl_engine *e, const unsigned char *jpeg, unsigned long size, int nq, int runs) {
  const qvl_config *c = qvl_engine_config(e);
  qvl_image img = {.data = jpeg, .size = size};
  int32_t g[3];
  int n = 0, rc = qvl_image_grid(e, &img, NULL, g);
  int32_t *ids = rc ? NULL : prompt_ids(c, g, nq, &n);
  double *pre = calloc((size_t)runs, sizeof *pre), *ttft = calloc((size_t)runs, sizeof *ttft);
  if (!rc && (!ids || !pre || !ttft)) rc = QVL_ERR_NOMEM;
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = 1;
  for (int r = -1; r < runs && !rc; r++) { /* run -1 warms up (plans, allocations) */
    qvl_image_batch *batch = NULL;
    double t0 = app_now_ms(), t_first = 0;
    if ((rc = qvl_preprocess_images(e, &img, 1, NULL, &batch))) break;
    double t_pre = app_now_ms();
    rc = qvl_generate_ids(e, ids, n, qvl_image_batch_pixels(batch), &s, first_token, &t_first);
    qvl_image_batch_free(batch);
    if (!rc && r >= 0) pre[r] = t_pre - t0, ttft[r] = t_first - t0;
  }
  if (rc) {
    fprintf(stderr, "qvl bench e2e: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  } else {
    qvl_backend *b = qvl_engine_backend(e);
    printf("{\"bench\": \"e2e\", \"arch\": \"%s\", \"device\": \"%s\", \"jpeg_bytes\": %lu, \"grid\": [%d, %d, %d], "
           "\"prompt_tokens\": %d, \"preprocess_ms\": %.3f, \"ttft_ms\": %.3f, \"peak_mem_gib\": %.2f, \"runs\": %d}\n",
           c->arch_name, b->device, size, g[0], g[1], g[2], n, app_median(pre, runs), app_median(ttft, runs),
           b->mem_peak / (double)(1 << 30), runs);
    fflush(stdout);
  }
  free(ids), free(pre), free(ttft);
  return rc;
}

int cmd_bench_e2e(int argc, char **argv) {
  const char *image = NULL, *write_jpeg = NULL;
  int h = 960, w = 1280, nq = 20, runs = 10;
  char *rest[64];
  int n_rest = 0;
  rest[n_rest++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--image") && has) image = argv[++i];
    else if (!strcmp(a, "--synthetic") && has) {
      if (sscanf(argv[++i], "%dx%d", &h, &w) != 2) h = 0;
    } else if (!strcmp(a, "--question") && has) nq = atoi(argv[++i]);
    else if (!strcmp(a, "--runs") && has) runs = atoi(argv[++i]);
    else if (!strcmp(a, "--write-jpeg") && has) write_jpeg = argv[++i];
    else if (n_rest < 63) rest[n_rest++] = argv[i];
  }
  app_opts o;
  if (app_parse(&o, n_rest, rest)) return 2;
  if (h < 1 || w < 1 || h > 16384 || w > 16384 || nq < 0 || nq > 4096 || runs < 1)
    return fprintf(stderr, "usage: qvl bench e2e --model DIR [--dummy] [--image FILE | --synthetic HxW] "
                           "[--question N] [--runs N] [--write-jpeg FILE]\n"),
           2;
  unsigned long size = 0;
  unsigned char *jpeg = image ? read_file(image, &size) : synthetic_jpeg(h, w, &size);
  if (!jpeg) return fprintf(stderr, "qvl bench e2e: %s\n", image ? "cannot read the image" : "cannot encode"), 1;
  if (write_jpeg) {
    FILE *f = fopen(write_jpeg, "wb");
    int ok = f && fwrite(jpeg, 1, size, f) == size;
    if (f) ok &= fclose(f) == 0;
    if (!ok) return tjFree(jpeg), fprintf(stderr, "qvl bench e2e: cannot write %s\n", write_jpeg), 1;
  }
  o.engine.load = QVL_LOAD_ALL;
  qvl_engine *e = app_open(&o);
  int rc = e ? bench(e, jpeg, size, nq, runs) : 1;
  qvl_engine_close(e);
  tjFree(jpeg);
  return rc ? 1 : 0;
}
