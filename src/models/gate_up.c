/* gate_up.c - the first half of a SwiGLU MLP, shared by the Qwen2.5-VL vision blocks (qwen2_5_vl.c) and the language
 * model (lm.c): gate and up are one GEMM (rows stacked at load), then y = silu(gate) * up; one op on backends that
 * fuse the two (gemm_swiglu.cu on Hopper: the same bits, 27% faster than cuBLASLt + swiglu.cu at the tower's shape
 * and 4% at the language model's prefill, docs/PERF.md session 6), two elsewhere (and where the backend has no
 * linear_swiglu: the CUDA backend leaves it NULL with QVL_FUSED_SWIGLU=0). */
#include "models/model.h"

int mlp_gate_up(qvl_backend *b, void *y, void *gu, const void *x, const void *w, const void *bias, int64_t rows, int f,
                int k, int fused) {
  if (fused && b->linear_swiglu) {
    int rc = b->linear_swiglu(b, y, x, w, bias, rows, f, k);
    if (rc != QVL_ERR_UNSUPPORTED) return rc; /* unsupported leaves b->err clear: run the two ops */
  }
  int rc = b->linear(b, gu, x, w, bias, rows, 2 * f, k, QVL_EPI_NONE);
  return rc ? rc : b->swiglu(b, y, gu, rows, f);
}
