/* cuda_ops.h - C-callable launchers of the CUDA backend's kernels. bf16 buffers are uint16_t here so
 * plain C can hold them; the .cu files treat them as __nv_bfloat16. Each launcher returns QVL_OK or
 * QVL_ERR_DEVICE and never synchronises. Argument order: outputs, inputs, sizes, scalars, stream. */
#ifndef QVL_BACKEND_CUDA_OPS_H
#define QVL_BACKEND_CUDA_OPS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *qvl_stream; /* = cudaStream_t */

/* Number of usable CUDA devices; 0 when there is no driver or no device (never fails). */
int qvl_cuda_device_count(void);

/* y = x / sqrt(mean(x^2) + eps) * w per row; statistics in f32, the normalised value rounded to bf16 before
 * the bf16 weight multiply (spec §6 item 4). One warp per row. */
int cuda_rmsnorm(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t rows, int dim, float eps, qvl_stream s);

#ifdef __cplusplus
}
#endif

#endif
