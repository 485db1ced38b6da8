/* device.cu - device discovery for the CUDA backend, and the L2 flush that GEMM tuning runs before a timed run. */
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "qvl.h"

extern "C" int qvl_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); /* clear the sticky "no driver" error */
    return 0;
  }
  return n;
}

/* Reads every 16 bytes of buf (zeros, so the guarded store never happens; it keeps the loads). */
__global__ void l2_flush_kernel(uint4 *buf, int64_t n) {
  unsigned v = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint4 e = buf[i];
    v |= e.x | e.y | e.z | e.w;
  }
  if (v) buf[0].x = 0;
}

extern "C" int cuda_l2_flush(void *buf, size_t bytes, qvl_stream s) {
  l2_flush_kernel<<<1024, 256, 0, s>>>((uint4 *)buf, (int64_t)(bytes / 16));
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
