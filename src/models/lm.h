/* lm.h - the text decoders of Qwen2.5-VL (Qwen2) and Qwen3-VL (Qwen3), prefill over one sequence.
 *
 *   ids [n] -> embed [n, H] (vision rows written over the <|image_pad|> positions)
 *   -> layers x { x = rmsnorm(h); q, k, v = x Wq (+bq), x Wk (+bk), x Wv (+bv)   (bias: Qwen2.5-VL)
 *                 q, k = rmsnorm per head (q_norm, k_norm: Qwen3-VL); M-RoPE on q, k
 *                 h += causal_gqa_attention(q, k, v) Wo
 *                 h += down(silu(gate(rmsnorm(h))) * up(rmsnorm(h)))
 *                 Qwen3-VL, layer l < #DeepStack: h[visual positions] += deepstack_l }
 *   -> rmsnorm -> lm_head -> logits [n, vocab]
 */
#ifndef QVL_MODELS_LM_H
#define QVL_MODELS_LM_H

#include "models/model.h"

typedef struct lm_input {
  const int32_t *ids;       /* [n] */
  int n;
  const int32_t *pos;       /* [3][n] M-RoPE positions (mrope.h) */
  const float *vision;      /* [n_vision][H] host f32 rows for the image pad positions, in order; may be NULL */
  const float *const *deepstack; /* n_deepstack arrays like vision (Qwen3-VL), or NULL */
  int n_deepstack;
} lm_input;

/* Logits of every position, host f32 [n][vocab]. CPU backend only for now (QVL_ERR_UNSUPPORTED elsewhere). */
int qvl_lm_prefill(qvl_backend *b, const qvl_config *cfg, const qvl_weights *w, const lm_input *in, float *logits,
                   qvl_err *err);

#endif
