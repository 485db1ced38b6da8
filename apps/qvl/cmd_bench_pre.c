/* qvl bench pre: image preprocessing from JPEG bytes in host memory to pixel rows, one JSON line per case.
 * Each case NxHxW builds N deterministic photo-like images (smooth gradients, a texture, noise), encodes them as
 * quality-90 4:2:0 JPEGs with TurboJPEG in memory, then times
 *   - the GPU path (CUDA builds): bytes -> bf16 rows in device memory (nvJPEG + qvl's kernels), CUDA events on the
 *     pipeline's stream and the wall clock around the whole call, median over --iters after --warmup;
 *     then one more run with CUDA events between the phases ("gpu_phases": host routing, CPU decodes, setup,
 *     submission, the final wait; device time to the last hardware batch decoded, after it, and in all;
 *     "outside_run_ms": the call around the pipeline, of which "plan_ms" before it: probes, sizes, row buffers);
 *   - the CPU path: bytes -> f32 rows in host memory, on 1 thread and on --threads (default: all), median over
 *     fewer runs (it is slow).
 * The model directory supplies config.json and preprocessor_config.json (no weights are read). --write-jpegs DIR
 * writes each case's files to DIR/NxHxW/NNN.jpg for bench/hf_preprocess.py to time transformers on the same bytes. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#ifdef QVL_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "apps.h"
#include "backend/backend.h"
#ifdef QVL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "image/gpu.h"
#include "io/config.h"

typedef struct pre_case {
  int n, h, w;
} pre_case;

/* A photo-like picture: smooth colour gradients, a coarse diagonal texture whose frequency varies over the image, a
 * fine one whose strength varies, and hashed noise of a few levels. Deterministic for (w, h, seed). */
static void synth(uint8_t *px, int w, int h, uint32_t seed) {
  float fx = 0.02f + (float)(seed % 7) * 0.01f, fy = 0.015f + (float)(seed % 5) * 0.008f;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      float u = (float)x / (float)w, v = (float)y / (float)h;
      float tex = 18.0f * sinf(fx * (float)x * (1.0f + u) + fy * (float)y * (1.5f - v) + (float)seed) +
                  14.0f * sinf(0.7f * (float)x + 0.45f * (float)y * (1.0f + v)) *
                      (0.5f + 0.5f * sinf(0.011f * (float)x + 0.017f * (float)y + (float)seed));
      for (int c = 0; c < 3; c++) {
        uint32_t z = (uint32_t)(y * 7919 + x * 104729 + c * 1299709) ^ (seed * 2654435761u);
        z = (z ^ (z >> 15)) * 0x2c1b3c6dU, z ^= z >> 12;
        float base = 40.0f + 170.0f * (c == 0 ? u : c == 1 ? v : 1.0f - 0.5f * (u + v));
        int val = (int)lrintf(base + tex * (c == 1 ? -1.0f : 1.0f)) + (int)(z % 13) - 6;
        px[((size_t)y * w + x) * 3 + c] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : val);
      }
    }
}

typedef struct jpegs {
  int n;
  unsigned char **data;
  unsigned long *len;
  qvl_image *im;
  double mean_kb;
} jpegs;

static int make_jpegs(jpegs *j, const pre_case *pc) {
  j->n = pc->n;
  j->data = calloc((size_t)pc->n, sizeof *j->data), j->len = calloc((size_t)pc->n, sizeof *j->len);
  j->im = calloc((size_t)pc->n, sizeof *j->im);
  if (!j->data || !j->len || !j->im) return 1;
  int bad = 0;
  double kb = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : bad, kb)
  for (int i = 0; i < pc->n; i++) {
    uint8_t *px = malloc((size_t)pc->w * pc->h * 3);
    tjhandle tj = tjInitCompress();
    if (px) synth(px, pc->w, pc->h, (uint32_t)i * 31 + 7);
    if (!px || !tj || tjCompress2(tj, px, pc->w, 0, pc->h, TJPF_RGB, &j->data[i], &j->len[i], TJSAMP_420, 90, 0))
      bad++;
    else kb += j->len[i] / 1024.0;
    j->im[i] = (qvl_image){.data = j->data[i], .size = j->len[i]};
    if (tj) tjDestroy(tj);
    free(px);
  }
  j->mean_kb = kb / pc->n;
  return bad;
}

static void free_jpegs(jpegs *j) {
  for (int i = 0; j->data && i < j->n; i++) tjFree(j->data[i]);
  free(j->data), free(j->len), free(j->im);
}

static int write_jpegs(const char *dir, const pre_case *pc, const jpegs *j) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%dx%dx%d", dir, pc->n, pc->h, pc->w);
  if ((mkdir(dir, 0755) && errno != EEXIST) || (mkdir(path, 0755) && errno != EEXIST))
    return fprintf(stderr, "qvl bench pre: cannot create %s\n", path), 1;
  for (int i = 0; i < j->n; i++) {
    snprintf(path, sizeof path, "%s/%dx%dx%d/%03d.jpg", dir, pc->n, pc->h, pc->w, i);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(j->data[i], 1, j->len[i], f) != j->len[i]) return fprintf(stderr, "cannot write %s\n", path), 1;
    fclose(f);
  }
  return 0;
}

/* Median ms of the CPU path over runs with `threads` threads. */
static double time_cpu(const qvl_preproc_config *pc, const jpegs *j, int threads, int runs, qvl_err *err) {
  double *ms = calloc((size_t)runs, sizeof *ms), med = -1;
  qvl_image_params p = qvl_image_default_params();
  p.n_threads = threads;
  for (int r = 0; ms && r < runs; r++) {
    qvl_image_batch *b = NULL;
    double t0 = app_now_ms();
    if (img_preprocess_on(&b, NULL, pc, j->im, j->n, &p, err)) goto out;
    ms[r] = app_now_ms() - t0;
    qvl_image_batch_free(b);
  }
  if (ms) med = app_median(ms, runs);
out:
  free(ms);
  return med;
}

#ifdef QVL_HAVE_CUDA
/* GPU path: medians of event and wall time; then one run with phase events (img_gpu_last: decoders and phases). */
static int time_gpu(img_gpu *g, const qvl_preproc_config *pc, const jpegs *j, int iters, int warmup, double *ev_ms,
                    double *wall_ms, double *phase_wall, qvl_err *err) {
  double *ev = calloc((size_t)iters, sizeof *ev), *wall = calloc((size_t)iters, sizeof *wall);
  cudaEvent_t a, z;
  cudaEventCreate(&a), cudaEventCreate(&z);
  cudaStream_t s = ((cuda_ctx *)img_gpu_backend(g)->ctx)->stream; /* the pipeline's */
  int rc = ev && wall ? QVL_OK : QVL_ERR_NOMEM;
  for (int r = -warmup; !rc && r < iters; r++) {
    qvl_image_batch *b = NULL;
    double t0 = app_now_ms();
    cudaEventRecord(a, s);
    rc = img_preprocess_on(&b, g, pc, j->im, j->n, NULL, err);
    cudaEventRecord(z, s);
    cudaEventSynchronize(z);
    double t1 = app_now_ms();
    float e = 0;
    cudaEventElapsedTime(&e, a, z);
    if (r >= 0) ev[r] = e, wall[r] = t1 - t0;
    qvl_image_batch_free(b);
  }
  if (!rc) *ev_ms = app_median(ev, iters), *wall_ms = app_median(wall, iters);
  if (!rc) { /* one more run with events between the phases (kept out of the medians) */
    qvl_image_batch *b = NULL;
    img_gpu_set_timing(g, 1);
    double t0 = app_now_ms();
    rc = img_preprocess_on(&b, g, pc, j->im, j->n, NULL, err);
    *phase_wall = app_now_ms() - t0;
    img_gpu_set_timing(g, 0);
    qvl_image_batch_free(b);
  }
  cudaEventDestroy(a), cudaEventDestroy(z);
  free(ev), free(wall);
  return rc;
}
#endif

static int usage(void) {
  fprintf(stderr, "usage: qvl bench pre --model DIR [--images NxHxW ...] [--iters N] [--warmup N] [--cpu-iters N]\n"
                  "                     [--threads N] [--write-jpegs DIR]\n"
                  "  default cases 20x960x1280 and 256x448x448; quality-90 4:2:0 JPEGs made in memory\n");
  return 2;
}

int cmd_bench_pre(int argc, char **argv) {
  const char *model = NULL, *jpeg_dir = NULL;
  pre_case cases[16];
  int n_cases = 0, iters = 20, warmup = 3, cpu_iters = 3, threads = omp_get_max_threads();
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    char tail;
    if (!strcmp(argv[i], "--model") && v) model = argv[++i];
    else if (!strcmp(argv[i], "--images") && v && n_cases < 16) {
      pre_case *c = &cases[n_cases++];
      if (sscanf(argv[++i], "%dx%dx%d%c", &c->n, &c->h, &c->w, &tail) != 3 || c->n < 1 || c->h < 1 || c->w < 1)
        return usage();
    } else if (!strcmp(argv[i], "--iters") && v) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && v) warmup = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--cpu-iters") && v) cpu_iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && v) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--write-jpegs") && v) jpeg_dir = argv[++i];
    else return usage();
  }
  if (!model || iters < 1 || warmup < 0 || cpu_iters < 0 || threads < 1) return usage();
  if (!n_cases) cases[n_cases++] = (pre_case){20, 960, 1280}, cases[n_cases++] = (pre_case){256, 448, 448};
  char path[4096];
  qvl_config cfg;
  qvl_preproc_config pc;
  qvl_err err = {0};
  snprintf(path, sizeof path, "%s/config.json", model);
  int rc = qvl_config_load(&cfg, path, &err);
  snprintf(path, sizeof path, "%s/preprocessor_config.json", model);
  if (!rc) rc = qvl_preproc_load(&pc, cfg.arch, path, &err);
  if (rc) return fprintf(stderr, "qvl bench pre: %s\n", err.msg), 1;
  char device[96] = "cpu";
#ifdef QVL_HAVE_CUDA
  qvl_backend *b = NULL;
  img_gpu *g = NULL;
  if (qvl_backend_cuda_create(&b, 0, &err) || img_gpu_open(&g, b, &err))
    fprintf(stderr, "qvl bench pre: no GPU path (%s); timing the CPU path only\n", err.msg);
  if (b) b->err = &err;
  if (g) snprintf(device, sizeof device, "%s", b->device);
#endif
  for (int c = 0; !rc && c < n_cases; c++) {
    jpegs j = {0};
    if (make_jpegs(&j, &cases[c])) rc = 1, fprintf(stderr, "qvl bench pre: JPEG encoding failed\n");
    if (!rc && jpeg_dir) rc = write_jpegs(jpeg_dir, &cases[c], &j);
    double ev = -1, wall = -1, cpu1 = -1, cpun = -1;
    int hw = 0, hy = 0, cp = 0, engines = 0;
    char phases[640] = "{}";
#ifdef QVL_HAVE_CUDA
    double phase_wall = 0;
    if (!rc && g && (rc = time_gpu(g, &pc, &j, iters, warmup, &ev, &wall, &phase_wall, &err)))
      fprintf(stderr, "qvl bench pre: GPU: %s\n", err.msg);
    if (g) {
      const img_gpu_stats *st = img_gpu_last(g);
      hw = st->hardware, hy = st->hybrid, cp = st->cpu;
      snprintf(phases, sizeof phases,
               "{\"wall_ms\": %.3f, \"outside_run_ms\": %.3f, \"plan_ms\": %.3f, \"route_ms\": %.3f, \"cpu_decode_ms\": %.3f, "
               "\"setup_ms\": %.3f, \"submit_ms\": %.3f, \"wait_ms\": %.3f, \"run_ms\": %.3f, \"chunks\": %d, "
               "\"dev_decode_ms\": %.3f, \"dev_after_decode_ms\": %.3f, \"dev_ms\": %.3f}",
               phase_wall, phase_wall - st->total_ms, st->plan_ms, st->route_ms, st->cpu_decode_ms, st->setup_ms, st->submit_ms,
               st->wait_ms, st->total_ms, st->chunks, st->decode_ms, st->tail_ms, st->device_ms);
    }
    engines = g ? img_gpu_engines(g) : 0;
#endif
    if (!rc && cpu_iters) {
      cpu1 = time_cpu(&pc, &j, 1, cpu_iters, &err);
      cpun = threads > 1 ? time_cpu(&pc, &j, threads, cpu_iters, &err) : cpu1;
      if (cpu1 < 0 || cpun < 0) rc = 1, fprintf(stderr, "qvl bench pre: CPU: %s\n", err.msg);
    }
    if (!rc) {
      const pre_case *k = &cases[c];
      printf("{\"bench\": \"pre\", \"arch\": \"%s\", \"device\": \"%s\", \"images\": \"%dx%dx%d\", \"jpeg_kb_mean\": %.1f, "
             "\"gpu_ms\": %.3f, \"gpu_wall_ms\": %.3f, \"gpu_img_per_s\": %.1f, \"decoders\": {\"hardware\": %d, "
             "\"hybrid\": %d, \"cpu\": %d}, \"nvjpg_engines\": %d, \"cpu_1t_ms\": %.2f, \"cpu_1t_img_per_s\": %.2f, "
             "\"cpu_threads\": %d, \"cpu_ms\": %.2f, \"cpu_img_per_s\": %.2f, \"iters\": %d, \"cpu_iters\": %d, "
             "\"gpu_phases\": %s}\n",
             cfg.arch_name, device, k->n, k->h, k->w, j.mean_kb, ev, wall, ev > 0 ? k->n * 1000.0 / ev : 0.0, hw, hy,
             cp, engines, cpu1, cpu1 > 0 ? k->n * 1000.0 / cpu1 : 0.0, threads, cpun,
             cpun > 0 ? k->n * 1000.0 / cpun : 0.0, iters, cpu_iters, phases);
      fflush(stdout);
    }
    free_jpegs(&j);
  }
#ifdef QVL_HAVE_CUDA
  img_gpu_close(g);
  if (b) b->destroy(b);
#endif
  return rc ? 1 : 0;
}
