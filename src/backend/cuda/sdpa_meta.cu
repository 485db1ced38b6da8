/* sdpa_meta.cu - the device metadata of one prepared attention (sdpa.c), derived on the device from the
 * sequence boundaries the model uploaded, so that preparing it needs no upload of its own. */
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "qvl.h"

__global__ void sdpa_meta_kernel(int32_t *lens, int64_t *off_qkv, int64_t *off_o, const int32_t *cu, int n_seq, int nb,
                                 int64_t qkv_row, int64_t o_row) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= nb; i += gridDim.x * blockDim.x) {
    int j = i < n_seq ? i : n_seq;
    if (i < nb) lens[i] = i < n_seq ? cu[i + 1] - cu[i] : 0;
    off_qkv[i] = (int64_t)cu[j] * qkv_row;
    off_o[i] = (int64_t)cu[j] * o_row;
  }
}

extern "C" int cuda_sdpa_meta(int32_t *lens, int64_t *off_qkv, int64_t *off_o, const int32_t *cu, int n_seq, int nb,
                              int64_t qkv_row, int64_t o_row, qvl_stream s) {
  int blocks = (nb + 1 + 255) / 256;
  sdpa_meta_kernel<<<blocks < 1024 ? blocks : 1024, 256, 0, s>>>(lens, off_qkv, off_o, cu, n_seq, nb, qkv_row, o_row);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
