/* img_cuda.h - C-callable launchers of the GPU image kernels (the .cu files of src/image/cuda). Each returns QVL_OK or
 * QVL_ERR_DEVICE and never synchronises; every pointer is device memory unless said otherwise. Argument order:
 * outputs, inputs, sizes, scalars, stream. The arithmetic is the CPU path's, so the outputs are the same bits:
 * ycc.h for the colour conversion, img_coeffs (computed on the host by resize.c) for the resample, the host's
 * normalization table for the rows. */
#ifndef QVL_IMAGE_CUDA_IMG_CUDA_H
#define QVL_IMAGE_CUDA_IMG_CUDA_H

#include <stdint.h>

#include "image/ycc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *img_stream; /* = cudaStream_t */

/* ycc.cu: rgb [h][w][3] from the planes of im (device pointers), as img_ycc_to_rgb. */
int img_cuda_ycc(uint8_t *rgb, const img_planes *im, img_stream s);

/* resample.cu, Pillow's two passes (resize.c):
 * horizontal: dst [rows][dw][3] from rows y0 .. y0 + rows of src [.][sw][3];
 * vertical:   dst [dh][w][3] from src [.][w][3] whose row 0 is source row `shift`.
 * bounds [out][2] (first source index, count) and k [out][ksize] are img_coeffs uploaded as they are. */
int img_cuda_resample_h(uint8_t *dst, const uint8_t *src, const int32_t *bounds, const int32_t *k, int dw, int sw,
                        int y0, int rows, int ksize, img_stream s);
int img_cuda_resample_v(uint8_t *dst, const uint8_t *src, const int32_t *bounds, const int32_t *k, int dh, int w,
                        int shift, int ksize, img_stream s);

/* patchify.cu: bf16 rows [(h/P)*(w/P)][3*T*P*P] of rgb [h][w][3] in the order of spec §1.7 (img_patchify), each
 * value lut[c][level] (f32 [3][256], img_norm_lut) rounded to bf16 (nearest even). */
int img_cuda_patchify(uint16_t *rows, const uint8_t *rgb, const float *lut, int w, int h, int patch, int temporal,
                      int merge, img_stream s);

#ifdef __cplusplus
}
#endif

#endif
