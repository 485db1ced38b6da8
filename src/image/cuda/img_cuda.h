/* img_cuda.h - C-callable launchers of the GPU image kernels (the .cu files of src/image/cuda). Each launch covers
 * every image of a chunk at once through a table of image descriptors in device memory; each returns QVL_OK or
 * QVL_ERR_DEVICE and never synchronises. Argument order: outputs, inputs, sizes, scalars, stream. The arithmetic is
 * the CPU path's, so the outputs are the same bits: ycc.h for the colour conversion, img_coeffs (computed on the host
 * by resize.c) for the resample, the host's normalization table for the rows. */
#ifndef QVL_IMAGE_CUDA_IMG_CUDA_H
#define QVL_IMAGE_CUDA_IMG_CUDA_H

#include <stdint.h>

#include "image/ycc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *img_stream; /* = cudaStream_t */

/* One image of a launch. Offsets are bytes into the launch's work buffer (source RGB [h][w][3] at src; the
 * horizontal pass's output [last - first][rw][3] at tmp, which is src + first*w*3 when there is no horizontal pass),
 * int32 elements into the coefficient buffer (img_coeffs as they are: bounds [out][2], weights [out][ksize]), rows
 * into the output rows, bytes into the resized-RGB output. src_row0 / tmp_row0 number the source / tmp rows of all
 * the launch's images consecutively (the colour and horizontal grids); rows of the rows kernel are global. */
typedef struct img_desc {
  img_planes lay;      /* decoded planes (device pointers); lay.n == 0: the source RGB is already at src */
  int64_t src, tmp, row0, rgb0, src_row0, tmp_row0;
  int64_t hb, hw, vb, vw; /* coefficients of the horizontal and vertical passes */
  int w, h, rw, rh;
  int first;           /* first source row the vertical pass reads */
  int hk, vk;          /* kernel sizes; 0: no horizontal / vertical pass */
  int pad;
} img_desc;

/* ycc.cu: source RGB of every image with planes (lay.n > 0) from its planes, as img_ycc_to_rgb; src_rows = the
 * launch's source rows (sum of h). */
int img_cuda_colour(uint8_t *work, const img_desc *d, int n, int64_t src_rows, img_stream s);

/* resample.cu: Pillow's horizontal pass (resize.c) of every image with hk > 0 over its source rows first ..
 * first + tmp rows; tmp_rows = the launch's (sum over images with hk > 0). */
int img_cuda_resample_h(uint8_t *work, const img_desc *d, int n, const int32_t *coef, int64_t tmp_rows,
                        img_stream s);

/* rows.cu: Pillow's vertical pass (vk > 0; else the tmp rows as they are), then rescale + normalize + temporal
 * duplication + patchify (spec §1.5-1.7, img_patchify's order) into bf16 rows [.][3*T*P*P], each value lut[c][level]
 * (f32 [3][256], img_norm_lut) rounded to nearest even; the resized RGB8 of each image also goes to rgb + rgb0.
 * Rows row_a .. row_a + n_rows (global row numbers) of the images d[0 .. n). */
int img_cuda_rows(uint16_t *rows, uint8_t *rgb, const uint8_t *work, const img_desc *d, int n, const int32_t *coef,
                  const float *lut, int64_t row_a, int64_t n_rows, int patch, int temporal, int merge, img_stream s);

#ifdef __cplusplus
}
#endif

#endif
