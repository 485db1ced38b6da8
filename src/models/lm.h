/* lm.h - the text decoders of Qwen2.5-VL (Qwen2) and Qwen3-VL (Qwen3) over one sequence with a KV cache.
 *
 *   ids [n] -> embed [n, H] (vision rows written over the <|image_pad|> positions)
 *   -> layers x { x = rmsnorm(h); q, k, v = x Wq (+bq), x Wk (+bk), x Wv (+bv)   (bias: Qwen2.5-VL)
 *                 q, k = rmsnorm per head (q_norm, k_norm: Qwen3-VL); M-RoPE on q, k; k, v appended to the cache
 *                 h += causal_gqa_attention(q, cached k, cached v) Wo
 *                 h += down(silu(gate(rmsnorm(h))) * up(rmsnorm(h)))
 *                 Qwen3-VL, layer l < #DeepStack: h[visual positions] += deepstack_l }
 *   -> rmsnorm -> lm_head -> logits
 * A chunk of n tokens runs after the tokens already cached: a prompt is one chunk (prefill), each generated
 * token another (decode).
 */
#ifndef QVL_MODELS_LM_H
#define QVL_MODELS_LM_H

#include "models/model.h"

typedef struct lm_seq lm_seq; /* one sequence: its K/V cache on the backend */

int lm_seq_open(lm_seq **out, qvl_backend *b, const qvl_config *cfg, int max_ctx, qvl_err *err);
void lm_seq_close(lm_seq *s); /* NULL is a no-op */
int lm_seq_len(const lm_seq *s);

typedef struct lm_chunk {
  const int32_t *ids;       /* [n] */
  int n;
  const int32_t *pos;       /* [3][n] M-RoPE positions (mrope.h) */
  const float *vision;      /* [pads in the chunk][H] host f32 rows for its image pad tokens, in order; or NULL */
  const float *const *deepstack; /* n_deepstack arrays like vision (Qwen3-VL), or NULL */
  int n_deepstack;
} lm_chunk;

/* Runs the chunk; logits (host f32): every row [n][vocab] when all_logits, else only the last [vocab].
 */
int lm_seq_forward(lm_seq *s, const qvl_weights *w, const lm_chunk *c, float *logits, int all_logits, qvl_err *err);

#endif
