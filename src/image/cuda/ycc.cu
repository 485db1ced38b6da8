/* ycc.cu - a JPEG's decoded planes (nvJPEG's planar YUV) -> RGB8: libjpeg-turbo's fancy upsampling and YCbCr -> RGB,
 * the same inline code as the C reference (image/ycc.h). One thread per output pixel. */
#include <cuda_runtime.h>

#include "image/cuda/img_cuda.h"
#include "qvl.h"

__global__ void ycc_kernel(uint8_t *rgb, img_planes im) {
  int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= im.w || y >= im.h) return;
  uint8_t px[3];
  img_ycc_pixel(px, &im, x, y);
  uint8_t *d = rgb + ((int64_t)y * im.w + x) * 3;
  d[0] = px[0], d[1] = px[1], d[2] = px[2];
}

extern "C" int img_cuda_ycc(uint8_t *rgb, const img_planes *im, img_stream s) {
  if (im->w <= 0 || im->h <= 0) return QVL_OK;
  dim3 block(32, 8), grid((unsigned)((im->w + 31) / 32), (unsigned)((im->h + 7) / 8));
  ycc_kernel<<<grid, block, 0, (cudaStream_t)s>>>(rgb, *im);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
