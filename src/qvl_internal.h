/* qvl_internal.h - engine entry points for the project's own tests and tools, not part of the public API. */
#ifndef QVL_INTERNAL_H
#define QVL_INTERNAL_H

#include "backend/backend.h"
#include "io/config.h"
#include "models/lm.h"
#include "models/model.h"
#include "qvl.h"

const qvl_config *qvl_engine_config(const qvl_engine *e);
qvl_backend *qvl_engine_backend(qvl_engine *e);
const qvl_preproc_config *qvl_engine_preproc(const qvl_engine *e);
qvl_err *qvl_engine_err(qvl_engine *e); /* where the engine's public functions record failures */
/* The engine's GPU image pipeline (image/gpu.h), opened on first use and closed with the engine; NULL with the
 * engine's error set when it has no CUDA backend or the pipeline cannot start. */
struct img_gpu *qvl_engine_img_gpu(qvl_engine *e);
/* The vision tower with an optional tap on intermediates (models/model.h); host f32 pixel rows. */
int qvl_engine_vision(qvl_engine *e, const int32_t *grid, int n_img, const float *pixels, qvl_vision_out *out,
                      qvl_tap_fn tap, void *ud);

/* Prefill of one sequence: vision tower on the images (if any), M-RoPE positions
 * (pos [3][n], *delta), logits [n][vocab]. pos and delta may be NULL. Needs QVL_LOAD_ALL. */
int qvl_engine_prefill(qvl_engine *e, const int32_t *ids, int n, const int32_t *grid, int n_img, const float *pixels,
                       float *logits, int32_t *pos, int64_t *delta);

/* Re-plans the vision tower's device memory for new limits (max_patches 0: releases it) and sets its graph use:
 * -1 where it pays (small calls), 0 never, 1 always. Benchmarks use it to size the plan to each case. */
int qvl_engine_vision_limits(qvl_engine *e, int64_t max_patches, int max_images, int graphs);
int64_t qvl_engine_vision_bytes(const qvl_engine *e); /* device bytes of the vision plan */

/* The same with pixel rows possibly already on the device, and out == NULL to keep the features there. */
int qvl_engine_vision_input(qvl_engine *e, const vis_input *in, qvl_vision_out *out, qvl_tap_fn tap, void *ud);

/* Chooses ahead, on synthetic inputs, the kernels that a backend which times them would choose at the first call
 * of each shape: the tower's linears for 1024 .. vision_rows rows and its attention classes for passes of up to
 * vision_rows patches, the language model's linears for 1 .. lm_rows (0: that part not); *n_tuned GEMM choices
 * made. A no-op on backends without linear_tune. For servers, whose batches meet new shapes all the time. */
int qvl_engine_tune(qvl_engine *e, int64_t vision_rows, int64_t lm_rows, int *n_tuned);

/* The engine's language model (models/lm.h) with a KV pool of at least min_blocks blocks, opened or grown (only
 * while no sequence holds blocks) as needed; owned by the engine. For a scheduler that runs lm_step itself. */
int qvl_engine_lm(qvl_engine *e, int64_t min_blocks, lm_model **out);

#endif
