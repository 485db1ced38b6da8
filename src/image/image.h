/* image.h - image decoding and the CPU preprocessing pipeline (spec §1): bytes -> RGB8 -> smart_resize ->
 * Pillow-exact bicubic -> rescale + normalize -> temporal duplication + patchify -> f32 pixel rows.
 *
 * Decoders reproduce what Pillow hands the HF image processor after `Image.open(f).convert("RGB")`
 * (spec §1.3), format by format; each says which Pillow behaviour it copies. Every decoder reads the
 * header first and refuses images over the pixel limit before allocating anything for the pixels. */
#ifndef QVL_IMAGE_IMAGE_H
#define QVL_IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "io/config.h"

typedef enum img_format { IMG_UNKNOWN = 0, IMG_JPEG, IMG_PNG, IMG_WEBP } img_format;

typedef struct img_header {
  img_format format;
  int w, h;
  int rgba; /* Pillow opens it in mode "RGBA": qwen-vl-utils composites exactly these on white */
} img_header;

/* Interleaved RGB8, w*h*3 bytes, row-major, malloc'd (free px). */
typedef struct img_rgb {
  int w, h;
  uint8_t *px;
} img_rgb;

/* Pillow's DecompressionBombError threshold (2 * Image.MAX_IMAGE_PIXELS): the default decode limit. */
#define IMG_DEFAULT_MAX_INPUT_PIXELS 178956970ll

const char *img_format_name(img_format f);

/* Identifies the format by its signature and reads width and height from the header only. */
int img_probe(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err);

/* Decodes to RGB8. white_alpha: composite Pillow-"RGBA" images on white as qwen-vl-utils does (§1.3);
 * otherwise alpha is dropped as HF does. max_pixels (> 0) is checked against the header before decoding. */
int img_decode(img_rgb *out, const uint8_t *data, size_t len, int white_alpha, int64_t max_pixels, const char *what,
               qvl_err *err);

/* Per-format decoders (decode_jpeg.c, decode_png.c, decode_webp.c): header first, then the checked limit. */
int img_jpeg_header(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err);
int img_jpeg_decode(img_rgb *out, const uint8_t *data, size_t len, int64_t max_pixels, const char *what,
                    qvl_err *err);
int img_png_header(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err);
int img_png_decode(img_rgb *out, const uint8_t *data, size_t len, int white_alpha, int64_t max_pixels,
                   const char *what, qvl_err *err);
int img_webp_header(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err);
int img_webp_decode(img_rgb *out, const uint8_t *data, size_t len, int white_alpha, int64_t max_pixels,
                    const char *what, qvl_err *err);

/* TurboJPEG's subsampling kind (TJSAMP_*) as JPEG sampling factors of Y, Cb, Cr (chroma 1x1); n: components.
 * -1 for kinds it cannot name. */
int img_jpeg_sampling(int tj_subsamp, int hs[3], int vs[3], int *n);

/* Shared by the decoders: zero size and the pixel limit, one message each. */
int img_check_size(int64_t w, int64_t h, int64_t max_pixels, const char *fmt, const char *what, qvl_err *err);
/* Pillow's RGBA -> RGB paste on white with the alpha as mask: DIV255(255*(255-a) + c*a), per channel. */
static inline uint8_t img_over_white(uint8_t c, uint8_t a) {
  unsigned t = 255u * (255u - a) + (unsigned)c * a + 128u;
  return (uint8_t)(((t >> 8) + t) >> 8);
}

/* Threads the resample and patchify loops of the calling thread may use (0 = OpenMP's default). Thread-local:
 * the pipeline gives each image task its share, so --threads 1 really is one thread. */
void img_set_threads(int n);
int img_threads(void);

/* ---- geometry (resize.c) ---- */

/* smart_resize (spec §1.2) in Python's float64 with round-half-even. qwen_vl_utils selects that variant
 * (lower clamp to F before the pixel checks, no clamp after flooring). Errors: aspect ratio > 200 (the
 * reference's own error), a zero side, a result of zero. */
int img_smart_resize(int *out_h, int *out_w, int h, int w, int factor, int64_t min_pixels, int64_t max_pixels,
                     int qwen_vl_utils, const char *what, qvl_err *err);

/* Pillow's BICUBIC coefficients for one axis, in -> out, as Resample.c computes them (double, then 22-bit
 * fixed point): output i reads bounds[2i+1] source samples from bounds[2i] with weights k[i*ksize + j]; the
 * sum starts at 2^21 and the result is clip(sum >> 22). Shared with the GPU resample kernel: computed on the
 * host, only integer sums remain on the device, so both paths give the same bits. */
typedef struct img_coeffs {
  int ksize;
  int *bounds; /* [out][2]: first source index, count */
  int32_t *k;  /* [out][ksize] */
} img_coeffs;

int img_coeffs_make(img_coeffs *c, int in_size, int out_size); /* QVL_OK or QVL_ERR_NOMEM */
void img_coeffs_free(img_coeffs *c);

/* Pillow's Image.resize((dw, dh), BICUBIC) on RGB8, bit for bit (libImaging/Resample.c). dst: dw*dh*3. */
int img_resample_bicubic(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh, qvl_err *err);

/* ---- rows (patchify.c) ---- */

/* The normalized value of each uint8 level per channel, as the HF PIL backend computes it (spec §1.5). */
void img_norm_lut(float lut[3][256], const qvl_preproc_config *pc);
/* Writes the (h/P)*(w/P) rows of 3*T*P*P floats of one image in the order of spec §1.7, each frame the
 * same picture (temporal duplication, §1.6). h and w are multiples of P*merge. */
void img_patchify(float *rows, const uint8_t *rgb, int w, int h, const float lut[3][256], int patch, int temporal,
                  int merge);

/* ---- the pipeline (preprocess.c) ---- */

struct qvl_image_batch {
  qvl_pixels px;     /* n_images, grid_thw = grid, rows or dev_rows */
  int32_t *grid;     /* [n][3] */
  float *rows;       /* [n_rows][row_len], the CPU path's; NULL when the rows are on the device */
  void *dev_rows;    /* bf16 [n_rows][row_len] on be, the GPU path's (gpu.h) */
  uint8_t *dev_rgb;  /* the GPU path's resized RGB8 of every image on be (image i at rgb_at[i]), for the hash */
  int64_t *rgb_at;
  struct qvl_backend *be;
  struct img_gpu *g; /* the GPU path's pipeline: dev_rows and dev_rgb are from its pool (gpu.h img_gpu_alloc) */
  int64_t n_rows, row_len;
  int patch;
  uint8_t (*hash)[QVL_IMAGE_HASH_BYTES];
  uint8_t *hashed;   /* GPU path: hash[i] is computed (on its first request) */
};

/* One image's plan (phase 1, no pixel decoded): its encoded bytes and the sizes, shared by both pipelines. */
typedef struct img_job {
  const uint8_t *bytes; /* encoded image: the caller's, or owned (from a data: URL); NULL for raw rgb */
  size_t len;
  uint8_t *owned;
  img_format format;
  int w, h, rw, rh;     /* source and resized size */
  int64_t row0;         /* first row of this image */
  int64_t rgb0;         /* GPU path: byte offset of its resized RGB in the batch's dev_rgb */
  char what[32];
  qvl_err err;
} img_job;

/* The decode limit of p (max_input_pixels or the default). */
int64_t img_input_limit(const qvl_image_params *p);

/* The whole CPU path for n images under preprocessor config pc. On failure *out is NULL and err names the
 * first failing image. */
int img_preprocess(qvl_image_batch **out, const qvl_preproc_config *pc, const qvl_image *imgs, int n,
                   const qvl_image_params *p, qvl_err *err);

/* Phase 1 alone for one image, nothing decoded: the checks preprocessing starts with (arguments, base64, header,
 * pixel limit, smart_resize) with its messages ("<what>: ..."), and the grid it will give the image. p NULL: the
 * defaults. err is the caller's, so any thread may plan while another runs the engine (qvl serve's connections). */
int img_grid(int32_t grid_thw[3], const qvl_preproc_config *pc, const qvl_image *image, const qvl_image_params *p,
             const char *what, qvl_err *err);

#endif
