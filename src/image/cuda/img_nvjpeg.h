/* img_nvjpeg.h - nvJPEG decoding to planar YCbCr at the JPEG's own chroma sampling (nvjpeg_decode.c; built when the
 * toolkit has nvJPEG, QVL_HAVE_NVJPEG). Our kernel (ycc.cu) then upsamples and converts exactly as libjpeg-turbo, so
 * the IDCT is the only difference from the CPU path. */
#ifndef QVL_IMAGE_CUDA_IMG_NVJPEG_H
#define QVL_IMAGE_CUDA_IMG_NVJPEG_H

#include <stddef.h>
#include <stdint.h>

#include "image/cuda/img_cuda.h"

typedef struct img_nvjpeg img_nvjpeg;

/* Which decoder takes a stream. */
enum { IMG_NVJ_NONE = 0, IMG_NVJ_HYBRID = 1, IMG_NVJ_HARDWARE = 2 };
/* Hardware batches that may be in flight at once (one decoder state each). */
enum { IMG_NVJ_SLOTS = 4 };

/* The hardware backend (the NVJPG engines) when the GPU has one, and the GPU-hybrid backend. QVL_OK, or
 * QVL_ERR_DEVICE with a message in msg when neither starts. */
int img_nvjpeg_open(img_nvjpeg **out, char *msg, size_t cap);
void img_nvjpeg_close(img_nvjpeg *j); /* NULL is a no-op */
/* Hardware decode engines, 0 when there are none. */
int img_nvjpeg_engines(const img_nvjpeg *j);

/* Parses the stream: IMG_NVJ_HARDWARE when the hardware backend takes it (baseline, single scan, not 4:1:x),
 * IMG_NVJ_HYBRID when the hybrid backend does (progressive, or no hardware), IMG_NVJ_NONE otherwise (CMYK, odd
 * sampling, unparsable). *css: nvJPEG's nvjpegChromaSubsampling_t, *ncomp: components. */
int img_nvjpeg_route(img_nvjpeg *j, const uint8_t *data, size_t len, int *css, int *ncomp);

/* Decodes n streams with the hardware backend in one batch into dst[i]'s planes (device buffers; c[k].p, .stride
 * and .h set; 3 planes also for grayscale, whose chroma planes nvJPEG may fill). Asynchronous on s. slot (0 ..
 * IMG_NVJ_SLOTS - 1) picks the decoder state: batches in flight at the same time, or submitted from different
 * threads, use different slots; a slot's state is set up again only when its batch size changes.
 * QVL_OK, or QVL_ERR_DEVICE / QVL_ERR_FORMAT with a message: the whole batch failed. */
int img_nvjpeg_decode_hw(img_nvjpeg *j, int slot, const uint8_t *const *data, const size_t *len, int n,
                         const img_planes *dst, img_stream s, char *msg, size_t cap);
/* One stream with the hybrid backend, likewise. */
int img_nvjpeg_decode_hybrid(img_nvjpeg *j, const uint8_t *data, size_t len, const img_planes *dst, img_stream s,
                             char *msg, size_t cap);

#endif
