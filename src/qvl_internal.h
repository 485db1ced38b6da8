/* qvl_internal.h - engine entry points for the project's own tests and tools, not part of the public API. */
#ifndef QVL_INTERNAL_H
#define QVL_INTERNAL_H

#include "backend/backend.h"
#include "io/config.h"
#include "models/model.h"
#include "qvl.h"

const qvl_config *qvl_engine_config(const qvl_engine *e);
qvl_backend *qvl_engine_backend(qvl_engine *e);
const qvl_preproc_config *qvl_engine_preproc(const qvl_engine *e);
qvl_err *qvl_engine_err(qvl_engine *e); /* where the engine's public functions record failures */
/* The vision tower with an optional tap on intermediates (models/model.h). */
int qvl_engine_vision(qvl_engine *e, const int32_t *grid, int n_img, const float *pixels, qvl_vision_out *out,
                      qvl_tap_fn tap, void *ud);

/* Prefill of one sequence (CPU backend for now): vision tower on the images (if any), M-RoPE positions
 * (pos [3][n], *delta), logits [n][vocab]. pos and delta may be NULL. Needs QVL_LOAD_ALL. */
int qvl_engine_prefill(qvl_engine *e, const int32_t *ids, int n, const int32_t *grid, int n_img, const float *pixels,
                       float *logits, int32_t *pos, int64_t *delta);

/* The same with pixel rows possibly already on the device, and out == NULL to keep the features there. */
int qvl_engine_vision_input(qvl_engine *e, const vis_input *in, qvl_vision_out *out, qvl_tap_fn tap, void *ud);

#endif
