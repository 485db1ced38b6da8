/* device.cu - device discovery for the CUDA backend. */
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"

extern "C" int qvl_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); /* clear the sticky "no driver" error */
    return 0;
  }
  return n;
}
