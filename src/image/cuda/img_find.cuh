/* img_find.cuh - device helpers shared by the image kernels: which image of a launch owns a grid row. */
#ifndef QVL_IMAGE_CUDA_IMG_FIND_CUH
#define QVL_IMAGE_CUDA_IMG_FIND_CUH

#include "image/cuda/img_cuda.h"

enum { IMG_BY_SRC = 0, IMG_BY_TMP = 1, IMG_BY_ROW = 2 };

__device__ static inline int64_t img_start(const img_desc *d, int which) {
  return which == IMG_BY_SRC ? d->src_row0 : which == IMG_BY_TMP ? d->tmp_row0 : d->row0;
}

/* The last image whose first row (of the kind `which`) is <= r: the owner of row r, images without rows of that kind
 * (equal starts) skipped. Run by one thread; the block shares the answer. */
__device__ static inline int img_find(const img_desc *d, int n, int64_t r, int which) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (img_start(&d[mid], which) <= r) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* The descriptor of the image owning row r, copied to shared memory for the block. */
#define IMG_BLOCK_DESC(sh, d, n, r, which)                    \
  __shared__ img_desc sh;                                     \
  if (threadIdx.x == 0) sh = (d)[img_find((d), (n), (r), (which))]; \
  __syncthreads()

#endif
