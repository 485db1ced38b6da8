/* device.cu - device discovery for the CUDA backend, the L2 flush that GEMM tuning runs before a timed run, and the
 * driver's tensor-map encoder for the TMA kernels. */
#include <cuda_runtime.h>
#include <pthread.h>

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

/* cuTensorMapEncodeTiled (driver API, CUDA 12.0 ABI) through the runtime: no link dependency on libcuda. Looked up
 * once per process. */
static void *g_encoder;
static pthread_once_t g_encoder_once = PTHREAD_ONCE_INIT;

static void encoder_lookup(void) {
  void *fn = NULL;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    (void)cudaGetLastError();
    fn = NULL;
  }
  g_encoder = fn;
}

extern "C" void *cuda_tensor_map_encoder(void) {
  pthread_once(&g_encoder_once, encoder_lookup);
  return g_encoder;
}
