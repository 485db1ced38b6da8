/* lm.h - the text decoders of Qwen2.5-VL (Qwen2) and Qwen3-VL (Qwen3) over a paged KV cache, one step at a time
 * for a batch of sequences.
 *
 *   ids [rows] (every sequence's chunk, packed) -> embed [rows, H] (vision rows over the <|image_pad|> positions)
 *   -> layers x { x = rmsnorm(h); qkv = x [Wq|Wk|Wv] (+ [bq|bk|bv])              (one GEMM; bias: Qwen2.5-VL)
 *                 q, k = rmsnorm per head (Qwen3-VL), M-RoPE; k, v -> their cache slots  (qkv_to_cache)
 *                 h += paged_causal_gqa(q, the sequence's cached k, v) Wo              (attention_paged)
 *                 h += down(silu(gate(rmsnorm(h))) * up(rmsnorm(h)))
 *                 Qwen3-VL, layer l < #DeepStack: h[visual positions] += deepstack_l }
 *   -> rmsnorm -> lm_head (only the rows asked for) -> logits / argmax
 *   (hidden states: the embeddings, each layer's output after DeepStack, or the final rmsnorm, per chunk)
 *
 * Usage (a scheduler; qvl.c's generation is the batch-of-one case):
 *
 *   lm_model *m;  lm_open(&m, backend, cfg, weights, n_blocks, err);      the KV pool: n_blocks of LM_BLOCK tokens
 *   lm_seq s;     lm_seq_init(&s, max_tokens);                             a sequence, no blocks yet
 *   lm_chunk c = {&s, ids, n, pos, ...};  lm_step(m, &c, 1, err);          prefill (or a chunk of it)
 *   ... lm_step(m, chunks, B, err) with a chunk of 1 token per running sequence (decode), prefill chunks mixed in
 *   lm_seq_free(m, &s);                                                    its blocks back to the pool
 *   lm_close(m);
 *
 * Blocks: lm_step takes the blocks a chunk needs from the pool itself (all or none, before any device work;
 * QVL_ERR_LIMIT when the pool is short: the scheduler preempts, lm_seq_free, and retries). lm_blocks_free says how
 * many are left, lm_seq_blocks_needed what a chunk would take. Blocks are refcounted for a prefix cache: a cache
 * that keeps a sequence's full blocks after it ends takes lm_block_ref on each and lm_block_unref when it evicts;
 * a new sequence starts on a cached prefix with lm_seq_share (whole blocks only, so no block is ever written by two
 * sequences). Several models may not share a pool. Not thread-safe: one thread owns an lm_model.
 *
 * Decode steps (every chunk one token, no vision rows, at most LM_MAX_GRAPH_BATCH chunks) replay a CUDA graph
 * captured once per (batch bucket, context bucket) when the backend has graphs, with the step's inputs written by
 * one upload; argmax-only outputs then bring back one int32 per sequence.
 */
#ifndef QVL_MODELS_LM_H
#define QVL_MODELS_LM_H

#include "models/model.h"

enum { LM_BLOCK = 16, LM_MAX_GRAPH_BATCH = 64 };

typedef struct lm_model lm_model;

/* A sequence's place in the cache. The caller owns the struct; lm functions keep its fields. */
typedef struct lm_seq {
  int32_t *blocks; /* block table [cap_blocks]: token t lives in blocks[t / LM_BLOCK], slot t % LM_BLOCK */
  int n_blocks;    /* blocks held (refs taken) */
  int cap_blocks;  /* ceil(max_tokens / LM_BLOCK) */
  int len;         /* tokens whose K/V are in the cache */
} lm_seq;

/* One sequence's work in a step: n >= 1 new tokens after its len cached ones. */
typedef struct lm_chunk {
  lm_seq *seq;
  const int32_t *ids;            /* [n] */
  int n;
  const int32_t *pos;            /* [3][n] M-RoPE positions (mrope.h; decode: len + rope_delta on all three) */
  const void *vision_dev;        /* [pads in the chunk][H] rows for its image pad tokens, in order, in the backend's
                                  * buffers and dtype (read in place); NULL without pads */
  const void *const *deepstack_dev; /* n_deepstack arrays like vision_dev (Qwen3-VL), or NULL */
  int n_deepstack;
  int n_generated;               /* the last n_generated of ids were generated, not prompted: an image pad id among
                                  * them is a text token (transformers embeds a generated <|image_pad|> like any
                                  * token), not a vision row */
  /* outputs (host), each NULL when not wanted: */
  float *logits;                 /* [n][vocab] when all_logits, else the last row's [vocab] */
  int all_logits;
  int32_t *argmax;               /* the last row's largest logit (lowest id among equals), computed on the device */
  float *hidden;                 /* [n][H] every row's hidden state at hidden_layer, as transformers'
                                  * output_hidden_states indexes them: 0 the embeddings with the vision rows in;
                                  * l in 1..layers-1 the residual stream entering layer l (layer l-1's output;
                                  * Qwen3-VL: its DeepStack rows added); layers the final RMSNorm's output */
  int hidden_layer;
} lm_chunk;

/* The model over weights w (bound, with the fused qkv; the caller keeps cfg and w alive) and a pool of n_blocks
 * blocks per layer (2 * layers * kv_heads * head_dim * LM_BLOCK elements each). *out is set on failure too when
 * memory allows; lm_close it. */
int lm_open(lm_model **out, qvl_backend *b, const qvl_config *cfg, const qvl_weights *w, int n_blocks, qvl_err *err);
void lm_close(lm_model *m); /* NULL is a no-op; every graph and buffer back to the backend */
int lm_blocks_total(const lm_model *m);
int lm_blocks_free(const lm_model *m);
/* Bytes of KV cache one block takes on backend b for cfg (to size a pool from a memory budget). */
int64_t lm_block_bytes(const qvl_backend *b, const qvl_config *cfg);

int lm_block_alloc(lm_model *m, int32_t *out, int n); /* n blocks at refcount 1; QVL_ERR_LIMIT, none taken */
void lm_block_ref(lm_model *m, int32_t block);
void lm_block_unref(lm_model *m, int32_t block);     /* back to the free list at refcount 0 */
int lm_block_refs(const lm_model *m, int32_t block);

int lm_seq_init(lm_seq *s, int max_tokens);          /* empty; QVL_ERR_NOMEM */
void lm_seq_free(lm_model *m, lm_seq *s);            /* unrefs its blocks, frees the table; zeroes s */
/* Appends n shared whole blocks (a cached prefix: each gets a ref) to an empty or block-aligned sequence:
 * len += n * LM_BLOCK. QVL_ERR_INVALID_ARG when s->len is not a multiple of LM_BLOCK or the table is full. */
int lm_seq_share(lm_model *m, lm_seq *s, const int32_t *blocks, int n);
int lm_seq_blocks_needed(const lm_seq *s, int n); /* blocks lm_step would take for n more tokens */

/* Runs one step over n_chunks chunks of distinct sequences (prefill chunks and decode tokens mixed, ragged).
 * Refused before any device work: an id outside the vocabulary, pad tokens without vision rows, a hidden_layer
 * outside 0..layers, a sequence past its max_tokens (QVL_ERR_LIMIT), too few free blocks (QVL_ERR_LIMIT). On success
 * each seq->len += n. A step whose every chunk asks for hidden states and none for logits or argmax stops after the
 * deepest hidden_layer asked for: the K/V of the layers it skips are not written, so its sequences serve features
 * only (lm_seq_free them after).
 * err is cleared first and holds the reason of a failure. */
int lm_step(lm_model *m, const lm_chunk *c, int n_chunks, qvl_err *err);
/* lm_step in two halves, so the host can work while the device runs the step: begin checks, takes the blocks and
 * queues the step's device work; end waits for it, fills the chunks' outputs and advances each seq->len. Between
 * them c (and what its chunks point to) stays as it is, other device work may be queued (it runs after the step) and
 * no other lm_* call on m is made but lm_blocks_free / lm_seq_blocks_needed. A failed begin queues nothing. */
int lm_step_begin(lm_model *m, const lm_chunk *c, int n_chunks, qvl_err *err);
int lm_step_end(lm_model *m, qvl_err *err);

/* Graph replay of decode steps on (1, default) or off (every op issued eagerly); a no-op without backend graphs. */
void lm_set_graphs(lm_model *m, int on);

#endif
