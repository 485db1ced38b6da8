/* nvjpeg_decode.c - nvJPEG to planar YCbCr at native chroma sampling (img_nvjpeg.h).
 *
 * Output format NVJPEG_OUTPUT_YUV: planar luma and chroma, each plane at its own size (nvjpegGetImageInfo's
 * widths/heights: the chroma planes of a 4:2:0 image are half size), which is what libjpeg's upsampler starts from.
 * The RGB formats would apply nvJPEG's own upsampling and colour conversion (up to 18 levels from libjpeg-turbo).
 * The hardware backend takes baseline single-scan streams (not 4:1:0 / 4:1:1) through nvjpegDecodeBatched, with one
 * decoder state per batch slot so that several batches can be in flight on different streams (each slot's state is
 * set up for its batch size once and kept while the size repeats); the GPU-hybrid backend (Huffman decode on the CPU, IDCT on the GPU) takes the rest, one image at a time through
 * nvjpegDecode. NVJPEG_FLAGS_BITSTREAM_STRICT: a malformed stream is an error rather than a best-effort picture. */
#include <nvjpeg.h>
#include <stdio.h>
#include <stdlib.h>

#include "image/cuda/img_nvjpeg.h"
#include "qvl.h"

struct img_nvjpeg {
  nvjpegHandle_t hw, hy;           /* hardware (NULL when absent), GPU-hybrid */
  nvjpegJpegState_t hw_state[IMG_NVJ_SLOTS], hy_state;
  nvjpegJpegStream_t stream;       /* header parser for routing (the scans are read by the decode) */
  unsigned engines;
  int hw_batch[IMG_NVJ_SLOTS];     /* batch size each slot's state is initialized for; 0 = none */
  nvjpegImage_t *out[IMG_NVJ_SLOTS]; /* [cap_out] destinations of each slot */
  int cap_out[IMG_NVJ_SLOTS];
};

static int fail(char *msg, size_t cap, int rc, const char *what, nvjpegStatus_t st) {
  if (msg && cap) snprintf(msg, cap, "nvJPEG: %s failed (status %d)", what, (int)st);
  return rc;
}

void img_nvjpeg_close(img_nvjpeg *j) {
  if (!j) return;
  if (j->stream) nvjpegJpegStreamDestroy(j->stream);
  for (int k = 0; k < IMG_NVJ_SLOTS; k++) {
    if (j->hw_state[k]) nvjpegJpegStateDestroy(j->hw_state[k]);
    free(j->out[k]);
  }
  if (j->hy_state) nvjpegJpegStateDestroy(j->hy_state);
  if (j->hw) nvjpegDestroy(j->hw);
  if (j->hy) nvjpegDestroy(j->hy);
  free(j);
}

/* Strict bitstream checks where the backend accepts the flag, else the defaults. */
static nvjpegStatus_t create(nvjpegBackend_t backend, nvjpegHandle_t *h) {
  nvjpegStatus_t st = nvjpegCreateEx(backend, NULL, NULL, NVJPEG_FLAGS_BITSTREAM_STRICT, h);
  if (st != NVJPEG_STATUS_SUCCESS) st = nvjpegCreateEx(backend, NULL, NULL, NVJPEG_FLAGS_DEFAULT, h);
  if (st != NVJPEG_STATUS_SUCCESS) *h = NULL;
  return st;
}

int img_nvjpeg_open(img_nvjpeg **out, char *msg, size_t cap) {
  img_nvjpeg *j = *out = calloc(1, sizeof *j);
  if (!j) return fail(msg, cap, QVL_ERR_NOMEM, "allocation", NVJPEG_STATUS_ALLOCATOR_FAILURE);
  nvjpegStatus_t st = create(NVJPEG_BACKEND_HARDWARE, &j->hw);
  if (st == NVJPEG_STATUS_SUCCESS) {
    unsigned cores = 0;
    int ok = nvjpegGetHardwareDecoderInfo(j->hw, &j->engines, &cores) == NVJPEG_STATUS_SUCCESS && j->engines;
    for (int k = 0; ok && k < IMG_NVJ_SLOTS; k++)
      ok = nvjpegJpegStateCreate(j->hw, &j->hw_state[k]) == NVJPEG_STATUS_SUCCESS;
    if (!ok) {
      for (int k = 0; k < IMG_NVJ_SLOTS; k++)
        if (j->hw_state[k]) nvjpegJpegStateDestroy(j->hw_state[k]), j->hw_state[k] = NULL;
      nvjpegDestroy(j->hw);
      j->hw = NULL, j->engines = 0;
    }
  }
  st = create(NVJPEG_BACKEND_GPU_HYBRID, &j->hy);
  if (st != NVJPEG_STATUS_SUCCESS) st = create(NVJPEG_BACKEND_DEFAULT, &j->hy);
  if (st != NVJPEG_STATUS_SUCCESS && !j->hw) return fail(msg, cap, QVL_ERR_DEVICE, "nvjpegCreateEx", st);
  if (j->hy && (st = nvjpegJpegStateCreate(j->hy, &j->hy_state)) != NVJPEG_STATUS_SUCCESS)
    return fail(msg, cap, QVL_ERR_DEVICE, "nvjpegJpegStateCreate (hybrid)", st);
  if ((st = nvjpegJpegStreamCreate(j->hw ? j->hw : j->hy, &j->stream)) != NVJPEG_STATUS_SUCCESS)
    return fail(msg, cap, QVL_ERR_DEVICE, "nvjpegJpegStreamCreate", st);
  return QVL_OK;
}

int img_nvjpeg_engines(const img_nvjpeg *j) { return j ? (int)j->engines : 0; }

int img_nvjpeg_route(img_nvjpeg *j, const uint8_t *data, size_t len, int *css, int *ncomp) {
  nvjpegChromaSubsampling_t ss = NVJPEG_CSS_UNKNOWN;
  unsigned nc = 0;
  *css = (int)NVJPEG_CSS_UNKNOWN, *ncomp = 0;
  if (nvjpegJpegStreamParseHeader(j->hw ? j->hw : j->hy, data, len, j->stream) != NVJPEG_STATUS_SUCCESS ||
      nvjpegJpegStreamGetComponentsNum(j->stream, &nc) != NVJPEG_STATUS_SUCCESS ||
      nvjpegJpegStreamGetChromaSubsampling(j->stream, &ss) != NVJPEG_STATUS_SUCCESS)
    return IMG_NVJ_NONE;
  *css = (int)ss, *ncomp = (int)nc;
  if ((nc != 1 && nc != 3) || ss == NVJPEG_CSS_UNKNOWN) return IMG_NVJ_NONE;
  int unsupported = 1;
  if (j->hw && nvjpegDecodeBatchedSupported(j->hw, j->stream, &unsupported) == NVJPEG_STATUS_SUCCESS && !unsupported)
    return IMG_NVJ_HARDWARE;
  return j->hy ? IMG_NVJ_HYBRID : IMG_NVJ_NONE;
}

static void destination(nvjpegImage_t *o, const img_planes *p) {
  for (int c = 0; c < NVJPEG_MAX_COMPONENT; c++) {
    o->channel[c] = c < 3 ? (unsigned char *)p->c[c].p : NULL;
    o->pitch[c] = c < 3 ? (size_t)p->c[c].stride : 0;
  }
}

int img_nvjpeg_decode_hw(img_nvjpeg *j, int slot, const uint8_t *const *data, const size_t *len, int n,
                         const img_planes *dst, img_stream s, char *msg, size_t cap) {
  if (n <= 0) return QVL_OK;
  if (!j->hw) return fail(msg, cap, QVL_ERR_DEVICE, "hardware decode (no hardware backend)", NVJPEG_STATUS_NOT_INITIALIZED);
  if (slot < 0 || slot >= IMG_NVJ_SLOTS) return fail(msg, cap, QVL_ERR_INVALID_ARG, "hardware decode slot", NVJPEG_STATUS_INVALID_PARAMETER);
  if (n > j->cap_out[slot]) {
    nvjpegImage_t *o = realloc(j->out[slot], sizeof *o * (size_t)n);
    if (!o) return fail(msg, cap, QVL_ERR_NOMEM, "allocation", NVJPEG_STATUS_ALLOCATOR_FAILURE);
    j->out[slot] = o, j->cap_out[slot] = n;
  }
  for (int i = 0; i < n; i++) destination(&j->out[slot][i], &dst[i]);
  nvjpegStatus_t st;
  if (j->hw_batch[slot] != n) {
    j->hw_batch[slot] = 0;
    if ((st = nvjpegDecodeBatchedInitialize(j->hw, j->hw_state[slot], n, 1, NVJPEG_OUTPUT_YUV)) !=
        NVJPEG_STATUS_SUCCESS)
      return fail(msg, cap, QVL_ERR_DEVICE, "nvjpegDecodeBatchedInitialize", st);
    j->hw_batch[slot] = n;
  }
  st = nvjpegDecodeBatched(j->hw, j->hw_state[slot], (const unsigned char *const *)data, len, j->out[slot],
                           (cudaStream_t)s);
  if (st != NVJPEG_STATUS_SUCCESS) {
    j->hw_batch[slot] = 0; /* "also use to reset failed batches" */
    return fail(msg, cap, st == NVJPEG_STATUS_BAD_JPEG ? QVL_ERR_FORMAT : QVL_ERR_DEVICE, "nvjpegDecodeBatched", st);
  }
  return QVL_OK;
}

int img_nvjpeg_decode_hybrid(img_nvjpeg *j, const uint8_t *data, size_t len, const img_planes *dst, img_stream s,
                             char *msg, size_t cap) {
  if (!j->hy) return fail(msg, cap, QVL_ERR_DEVICE, "hybrid decode (no hybrid backend)", NVJPEG_STATUS_NOT_INITIALIZED);
  nvjpegImage_t o;
  destination(&o, dst);
  nvjpegStatus_t st = nvjpegDecode(j->hy, j->hy_state, data, len, NVJPEG_OUTPUT_YUV, &o, (cudaStream_t)s);
  if (st != NVJPEG_STATUS_SUCCESS)
    return fail(msg, cap, st == NVJPEG_STATUS_BAD_JPEG ? QVL_ERR_FORMAT : QVL_ERR_DEVICE, "nvjpegDecode", st);
  return QVL_OK;
}
