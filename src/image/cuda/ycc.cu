/* ycc.cu - decoded planes (nvJPEG's planar YUV) -> source RGB8 of every image of a launch: libjpeg-turbo's fancy
 * upsampling and YCbCr -> RGB, the same inline code as the C reference (image/ycc.h). One block per source row of the
 * launch, its threads across the row. */
#include <cuda_runtime.h>

#include "image/cuda/img_find.cuh"
#include "qvl.h"

__global__ void colour_kernel(uint8_t *work, const img_desc *d, int n) {
  int64_t r = blockIdx.x;
  IMG_BLOCK_DESC(im, d, n, r, IMG_BY_SRC);
  if (!im.lay.n) return; /* decoded on the CPU: its RGB is already there */
  int y = (int)(r - im.src_row0);
  uint8_t *row = work + im.src + (int64_t)y * im.w * 3;
  for (int x = threadIdx.x; x < im.w; x += blockDim.x) {
    uint8_t px[3];
    img_ycc_pixel(px, &im.lay, x, y);
    row[3 * x] = px[0], row[3 * x + 1] = px[1], row[3 * x + 2] = px[2];
  }
}

extern "C" int img_cuda_colour(uint8_t *work, const img_desc *d, int n, int64_t src_rows, img_stream s) {
  if (n <= 0 || src_rows <= 0) return QVL_OK;
  colour_kernel<<<(unsigned)src_rows, 256, 0, (cudaStream_t)s>>>(work, d, n);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}
