/* gpu.h - the GPU image pipeline (gpu_preprocess.c, CUDA builds): encoded bytes in host memory -> bf16 pixel rows in
 * device memory, with no pixel coming back to the host.
 *
 *   JPEG (YCbCr 4:4:4/4:2:2/4:2:0/4:4:0, grayscale; baseline) ─► nvJPEG hardware batch ─┐
 *   JPEG (progressive, 4:1:1, or no NVJPG engine)            ─► nvJPEG GPU-hybrid ─────┼─► planes ─► ycc.cu ─┐
 *   JPEG nvJPEG cannot take (CMYK, RGB, truncated), PNG, WebP ─► CPU decode, upload ───────────────────────────┼─► RGB
 *   RGB ─► resample.cu (Pillow BICUBIC horizontal pass, host coefficients)
 *       ─► rows.cu (vertical pass + host f32 table -> bf16 rows, and the resized RGB for the hash) ─► rows
 * Each kernel is one launch over a chunk of images (a descriptor table, img_cuda.h).
 *
 * Bit-exact with the CPU path given the same RGB; nvJPEG's IDCT is the only difference (docs/IMAGES.md). */
#ifndef QVL_IMAGE_GPU_H
#define QVL_IMAGE_GPU_H

#include "image/image.h"

typedef struct img_gpu img_gpu;

/* Both pipelines: g == NULL runs the CPU path (host f32 rows), otherwise the GPU path into device bf16 rows on g's
 * backend. */
int img_preprocess_on(qvl_image_batch **out, img_gpu *g, const qvl_preproc_config *pc, const qvl_image *imgs, int n,
                      const qvl_image_params *p, qvl_err *err);

#ifdef QVL_HAVE_CUDA
struct qvl_backend;

/* The last img_gpu_run: which decoder took each image, and where the time went. Host wall clock: the caller's
 * planning before the run (img_preprocess_on: header probes, sizes, row buffers), routing (header parses), CPU decodes, setup (coefficients and their upload, made while the first chunk decodes), submitting the
 * chunks (nvJPEG calls, uploads, launches), the final wait, the whole run. Device time (CUDA events, summed over
 * chunks; only with img_gpu_set_timing on): chunk start to its last hardware batch decoded, from there to the chunk's
 * end (kernels the decode did not hide), the whole chunk. */
typedef struct img_gpu_stats {
  int hardware, hybrid, cpu, chunks;
  double plan_ms, route_ms, cpu_decode_ms, setup_ms, submit_ms, wait_ms, total_ms;
  double decode_ms, tail_ms, device_ms;
} img_gpu_stats;

/* A pipeline on backend b (a CUDA backend: its device; the pipeline has its own stream). nvJPEG is optional:
 * without it (or without a usable GPU decoder) every image is decoded on the CPU and uploaded once. */
int img_gpu_open(img_gpu **out, struct qvl_backend *b, qvl_err *err);
void img_gpu_close(img_gpu *g); /* NULL is a no-op */
struct qvl_backend *img_gpu_backend(const img_gpu *g);
/* A batch's device memory (rows, resized RGB), from the pipeline's pool in order on its own stream; img_gpu_free
 * returns it in order on b's stream (the backend's: after the work queued there that reads it). */
int img_gpu_alloc(img_gpu *g, void **p, size_t bytes);
void img_gpu_free(struct qvl_backend *b, void *p);
/* bytes from the device to host memory, on the pipeline's stream (not waiting for the backend's). */
int img_gpu_download(img_gpu *g, void *dst, const void *src, size_t bytes, qvl_err *err);
/* nvJPEG hardware engines in use (0: none, or no nvJPEG in this build). */
int img_gpu_engines(const img_gpu *g);
const img_gpu_stats *img_gpu_last(const img_gpu *g);
/* Device phase times in img_gpu_last (benchmarks; off by default). */
void img_gpu_set_timing(img_gpu *g, int on);
/* Records the caller's planning time of the last run in img_gpu_last. */
void img_gpu_note_plan(img_gpu *g, double plan_ms);

/* Rows of n planned jobs (img_job: sizes, bytes, row0, rgb0) into rows (device bf16 [sum][row_len]) and each
 * image's resized RGB8 into rgb + rgb0 (device; what the hash is over); threads decode the CPU-path images. Returns
 * after the rows are written. */
int img_gpu_run(img_gpu *g, void *rows, uint8_t *rgb, img_job *jobs, const qvl_image *imgs, int n,
                const qvl_preproc_config *pc, const qvl_image_params *p, int threads, qvl_err *err);

/* One encoded image decoded the way img_gpu_run decodes it, brought back as RGB8 (out->px malloc'd): for measuring
 * nvJPEG against libjpeg-turbo. *path: 2 hardware, 1 hybrid, 0 CPU. */
int img_gpu_decode(img_gpu *g, img_rgb *out, int *path, const uint8_t *data, size_t len, int white_alpha,
                   qvl_err *err);
#endif

#endif
