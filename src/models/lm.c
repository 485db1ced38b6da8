/* lm.c - the text decoders over a paged KV cache, through the backend op table (lm.h has the diagram and the
 * usage). A step packs every chunk's rows into one batch: the per-row and per-sequence inputs (ids, cache slots,
 * sequence boundaries, kv lengths, block tables, rows to take logits of, rotary tables) are laid out in one host
 * staging block and reach the device in one upload; the layers then run as ops over the whole batch. */
#include "models/lm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mrope.h"

enum { N_BATCH_BUCKETS = 7, N_CTX_BUCKETS = 16, MIN_CTX_BUCKET = 512 };

/* Offsets (4-byte units) of the step inputs in the staging block and its device copy. */
typedef struct lm_in {
  int64_t ids, slot, cu_q, kv_len, table, out_idx, vis_idx, cos, sin, total;
} lm_in;

/* The shape of a step. */
typedef struct lm_plan {
  int64_t rows, outs, n_log, n_vis; /* rows; rows given to lm_head (logits rows first), those downloaded; pads */
  int n_seq, max_blocks, max_q, max_kv, argmax;
  int layers; /* layers run: all, or up to the deepest hidden state asked for when no chunk wants logits */
  lm_in in;
} lm_plan;

/* Device buffers of a step, kept between steps; capacities in rows / sequences / table entries. */
typedef struct lm_ws {
  int64_t rows, seqs, table, outs, vis;
  void *h, *x, *qkv, *q, *att, *gu, *mlp, *logits, *in; /* mlp also takes the lm_head rows */
  int32_t *argmax;
} lm_ws;

struct lm_model {
  qvl_backend *b;
  const qvl_config *c;
  const qvl_weights *w;
  int n_blocks;               /* usable blocks 1 .. n_blocks; block 0 takes the padding rows of graph steps */
  void **kc, **vc;            /* per layer [(n_blocks + 1) * LM_BLOCK][kv_heads * head_dim] */
  int32_t *refs, *free_list;  /* [n_blocks + 1], [n_blocks] */
  int n_free;
  lm_ws ws, gws;              /* eager steps (grown on demand); graph steps (fixed once the first graph exists) */
  void *graph[N_BATCH_BUCKETS][N_CTX_BUCKETS];
  int graphs;                 /* replay decode steps */
  void *stage;                /* host staging block (host_alloc: pinned on CUDA, so the upload is asynchronous) */
  int64_t stage_bytes;
  int stage_busy;             /* an upload from the stage may still be in flight */
  float *host_logits;         /* several chunks' logits */
  int64_t host_logits_n;
  int32_t *host_argmax, *row_of; /* argmax of each out row; per chunk: its first logits row, its argmax row */
  int64_t host_argmax_n, row_of_n;
  struct { /* the step lm_step_begin queued, for lm_step_end */
    const lm_chunk *c;
    int n, on;
    lm_plan p;
    lm_ws *ws;
  } pend;
};

/* ---- the pool ------------------------------------------------------------------------------------- */

int64_t lm_block_bytes(const qvl_backend *b, const qvl_config *cfg) {
  const qvl_text_config *t = &cfg->text;
  return 2 * (int64_t)t->layers * t->kv_heads * t->head_dim * LM_BLOCK * (int64_t)b->elem_bytes;
}

int lm_blocks_total(const lm_model *m) { return m->n_blocks; }
int lm_blocks_free(const lm_model *m) { return m->n_free; }
int lm_block_refs(const lm_model *m, int32_t block) { return block > 0 && block <= m->n_blocks ? m->refs[block] : 0; }

int lm_block_alloc(lm_model *m, int32_t *out, int n) {
  if (n > m->n_free) return QVL_ERR_LIMIT;
  for (int i = 0; i < n; i++) out[i] = m->free_list[--m->n_free], m->refs[out[i]] = 1;
  return QVL_OK;
}

void lm_block_ref(lm_model *m, int32_t block) {
  if (block > 0 && block <= m->n_blocks && m->refs[block] > 0) m->refs[block]++;
}

void lm_block_unref(lm_model *m, int32_t block) {
  if (block > 0 && block <= m->n_blocks && m->refs[block] > 0 && --m->refs[block] == 0)
    m->free_list[m->n_free++] = block;
}

int lm_seq_init(lm_seq *s, int max_tokens) {
  memset(s, 0, sizeof *s);
  s->cap_blocks = max_tokens > 0 ? (max_tokens + LM_BLOCK - 1) / LM_BLOCK : 0;
  s->blocks = calloc((size_t)(s->cap_blocks ? s->cap_blocks : 1), sizeof *s->blocks);
  return s->blocks ? QVL_OK : QVL_ERR_NOMEM;
}

void lm_seq_free(lm_model *m, lm_seq *s) {
  if (!s) return;
  for (int i = 0; m && i < s->n_blocks; i++) lm_block_unref(m, s->blocks[i]);
  free(s->blocks);
  memset(s, 0, sizeof *s);
}

int lm_seq_share(lm_model *m, lm_seq *s, const int32_t *blocks, int n) {
  if (s->len % LM_BLOCK || s->len / LM_BLOCK != s->n_blocks || s->n_blocks + n > s->cap_blocks) return QVL_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++)
    if (lm_block_refs(m, blocks[i]) < 1) return QVL_ERR_INVALID_ARG;
  for (int i = 0; i < n; i++) lm_block_ref(m, blocks[i]), s->blocks[s->n_blocks++] = blocks[i];
  s->len += n * LM_BLOCK;
  return QVL_OK;
}

int lm_seq_blocks_needed(const lm_seq *s, int n) {
  int want = (s->len + n + LM_BLOCK - 1) / LM_BLOCK;
  return want > s->n_blocks ? want - s->n_blocks : 0;
}

/* ---- buffers ------------------------------------------------------------------------------------------ */

static lm_in in_layout(int64_t rows, int64_t seqs, int64_t table, int64_t outs, int64_t vis, int hd) {
  lm_in L;
  L.ids = 0, L.slot = rows, L.cu_q = 2 * rows, L.kv_len = L.cu_q + seqs + 1, L.table = L.kv_len + seqs;
  L.out_idx = L.table + table, L.vis_idx = L.out_idx + outs, L.cos = L.vis_idx + vis;
  L.sin = L.cos + rows * hd, L.total = L.sin + rows * hd;
  return L;
}

static void ws_free(qvl_backend *b, lm_ws *ws) {
  void *all[] = {ws->h, ws->x, ws->qkv, ws->q, ws->att, ws->gu, ws->mlp, ws->logits, ws->in, ws->argmax};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) b->free(b, all[i]);
  memset(ws, 0, sizeof *ws);
}

/* Capacity for a step of these sizes (each grown to at least 1.5x what it had, so a few steps settle it). */
static int ws_reserve(lm_model *m, lm_ws *ws, int64_t rows, int64_t seqs, int64_t table, int64_t outs, int64_t vis) {
  if (rows <= ws->rows && seqs <= ws->seqs && table <= ws->table && outs <= ws->outs && vis <= ws->vis) return QVL_OK;
#define GROW(f, n) (n > ws->f ? (n > ws->f * 3 / 2 ? n : ws->f * 3 / 2) : ws->f)
  lm_ws w = {.rows = GROW(rows, rows), .seqs = GROW(seqs, seqs), .table = GROW(table, table),
             .outs = GROW(outs, outs), .vis = GROW(vis, vis)};
#undef GROW
  ws_free(m->b, ws);
  if (m->b->trim) m->b->trim(m->b); /* the smaller buffers are not kept for reuse */
  const qvl_text_config *t = &m->c->text;
  qvl_backend *b = m->b;
  size_t e = b->elem_bytes;
  int64_t H = t->hidden, qd = (int64_t)t->heads * t->head_dim, kvd = (int64_t)t->kv_heads * t->head_dim;
  int64_t I = t->intermediate, rows_x = w.rows > w.outs ? w.rows : w.outs;
  lm_in L = in_layout(w.rows, w.seqs, w.table, w.outs, w.vis, t->head_dim);
  int rc;
  if ((rc = b->alloc(b, &w.h, (size_t)(w.rows * H) * e)) || (rc = b->alloc(b, &w.x, (size_t)(rows_x * H) * e)) ||
      (rc = b->alloc(b, &w.qkv, (size_t)(w.rows * (qd + 2 * kvd)) * e)) ||
      (rc = b->alloc(b, &w.q, (size_t)(w.rows * qd) * e)) || (rc = b->alloc(b, &w.att, (size_t)(w.rows * qd) * e)) ||
      (rc = b->alloc(b, &w.gu, (size_t)(w.rows * 2 * I) * e)) ||
      (rc = b->alloc(b, &w.mlp, (size_t)(w.rows * I > w.outs * H ? w.rows * I : w.outs * H) * e)) ||
      (rc = b->alloc(b, &w.logits, (size_t)(w.outs * t->vocab) * e)) ||
      (rc = b->alloc(b, &w.in, (size_t)L.total * 4)) || (rc = b->alloc(b, (void **)&w.argmax, (size_t)w.outs * 4))) {
    ws_free(b, &w);
    return rc;
  }
  *ws = w;
  return QVL_OK;
}

/* A host array of at least n elements of size es (grown, contents not kept). */
static int host_grow(void **p, int64_t *cap, int64_t n, size_t es) {
  if (n <= *cap) return QVL_OK;
  free(*p);
  *p = malloc((size_t)n * es);
  *cap = *p ? n : 0;
  return *p ? QVL_OK : QVL_ERR_NOMEM;
}

/* ---- open / close ---------------------------------------------------------------------------------------- */

int lm_open(lm_model **out, qvl_backend *b, const qvl_config *cfg, const qvl_weights *w, int n_blocks, qvl_err *err) {
  const qvl_text_config *t = &cfg->text;
  lm_model *m = calloc(1, sizeof *m);
  *out = m;
  if (!m) return qvl_fail(err, QVL_ERR_NOMEM, "language model: out of memory");
  m->b = b, m->c = cfg, m->w = w, m->n_blocks = n_blocks;
  if (!b->qkv_to_cache || !b->attention_paged || !b->argmax_rows || !b->swiglu || !b->download)
    return qvl_fail(err, QVL_ERR_UNSUPPORTED, "language model: the %s backend lacks the paged KV cache ops", b->name);
  if (!w->embed || !w->lm_head || !w->lm) return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: weights not loaded");
  if (n_blocks < 1 || (int64_t)(n_blocks + 1) * LM_BLOCK > INT32_MAX)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: a pool of %d blocks", n_blocks);
  const char *g = getenv("QVL_GRAPHS");
  m->graphs = b->graph_begin && !b->profile && !(g && *g == '0');
  m->kc = calloc((size_t)t->layers, sizeof *m->kc), m->vc = calloc((size_t)t->layers, sizeof *m->vc);
  m->refs = calloc((size_t)n_blocks + 1, sizeof *m->refs), m->free_list = malloc((size_t)n_blocks * sizeof(int32_t));
  if (!m->kc || !m->vc || !m->refs || !m->free_list) return qvl_fail(err, QVL_ERR_NOMEM, "language model: out of memory");
  for (int i = 0; i < n_blocks; i++) m->free_list[i] = n_blocks - i; /* block 1 handed out first */
  m->n_free = n_blocks;
  size_t bytes = (size_t)(n_blocks + 1) * LM_BLOCK * t->kv_heads * t->head_dim * b->elem_bytes;
  for (int l = 0; l < t->layers; l++) {
    int rc = b->alloc(b, &m->kc[l], bytes);
    if (!rc) rc = b->alloc(b, &m->vc[l], bytes);
    if (rc)
      return qvl_fail(err, rc, "language model: cannot allocate a KV cache of %d blocks (%.1f MiB): %s", n_blocks,
                      (double)lm_block_bytes(b, cfg) * n_blocks / (1 << 20), b->err->msg);
  }
  return QVL_OK;
}

void lm_close(lm_model *m) {
  if (!m) return;
  qvl_backend *b = m->b;
  for (int i = 0; i < N_BATCH_BUCKETS; i++)
    for (int k = 0; k < N_CTX_BUCKETS; k++)
      if (m->graph[i][k]) b->graph_free(b, m->graph[i][k]);
  for (int l = 0; m->kc && m->vc && l < m->c->text.layers; l++) b->free(b, m->kc[l]), b->free(b, m->vc[l]);
  ws_free(b, &m->ws), ws_free(b, &m->gws);
  if (m->stage) b->host_free(b, m->stage);
  free(m->kc), free(m->vc), free(m->refs), free(m->free_list);
  free(m->host_logits), free(m->host_argmax), free(m->row_of);
  free(m);
}

void lm_set_graphs(lm_model *m, int on) { m->graphs = on && m->b->graph_begin && !m->b->profile; }

/* ---- the forward pass ------------------------------------------------------------------------------------- */

#define IN(ws, p, f) ((int32_t *)(ws)->in + (p)->in.f)

static int attention_block(lm_model *m, const lm_ws *ws, const lm_plan *p, const lm_layer *L, int l) {
  const qvl_text_config *t = &m->c->text;
  qvl_backend *b = m->b;
  int64_t n = p->rows;
  int H = t->hidden, hd = t->head_dim, qd = t->heads * hd, kvd = t->kv_heads * hd, rc;
  if ((rc = b->rmsnorm(b, ws->x, ws->h, L->in_norm_w, n, H, t->rms_eps)) ||
      (rc = b->linear(b, ws->qkv, ws->x, L->qkv_w, L->qkv_b, n, qd + 2 * kvd, H, QVL_EPI_NONE)) ||
      (rc = b->qkv_to_cache(b, ws->q, m->kc[l], m->vc[l], ws->qkv, L->q_norm_w, L->k_norm_w,
                            (const float *)IN(ws, p, cos), (const float *)IN(ws, p, sin), IN(ws, p, slot), n,
                            t->heads, t->kv_heads, hd, t->rms_eps)) ||
      (rc = b->attention_paged(b, ws->att, ws->q, m->kc[l], m->vc[l], IN(ws, p, cu_q), IN(ws, p, kv_len),
                               IN(ws, p, table), p->n_seq, p->max_blocks, LM_BLOCK, n, p->max_q, p->max_kv, t->heads,
                               t->kv_heads, hd, 1.0f / sqrtf((float)hd))))
    return rc;
  return b->linear(b, ws->h, ws->att, L->o_w, NULL, n, H, qd, QVL_EPI_RESIDUAL);
}

static int mlp_block(lm_model *m, const lm_ws *ws, const lm_plan *p, const lm_layer *L) {
  const qvl_text_config *t = &m->c->text;
  qvl_backend *b = m->b;
  int64_t n = p->rows;
  int H = t->hidden, I = t->intermediate, rc;
  /* fused gate|up GEMM + SwiGLU from 64 rows on (prefill); decode steps keep linear's GEMV path for few rows */
  if ((rc = b->rmsnorm(b, ws->x, ws->h, L->post_norm_w, n, H, t->rms_eps)) ||
      (rc = mlp_gate_up(b, ws->mlp, ws->gu, ws->x, L->gate_up_w, NULL, n, I, H, n >= 64)))
    return rc;
  return b->linear(b, ws->h, ws->mlp, L->down_w, NULL, n, H, I, QVL_EPI_RESIDUAL);
}

/* The rows of the chunks that asked for hidden state `level` (lm_chunk.hidden), downloaded from the residual stream
 * h as it stands, or for level == layers through the final rmsnorm. transformers records hidden_states[l] as layer
 * l-1's output tensor, which its Qwen3-VL _deepstack_process then updates in place: the DeepStack rows are in. */
static int take_hidden(lm_model *m, const lm_ws *ws, const lm_plan *p, const lm_chunk *c, int n_chunks, int level) {
  const qvl_text_config *t = &m->c->text;
  qvl_backend *b = m->b;
  int64_t H = t->hidden, row = 0;
  const void *src = ws->h;
  int rc = QVL_OK;
  for (int i = 0; !rc && i < n_chunks; row += c[i].n, i++) {
    if (!c[i].hidden || c[i].hidden_layer != level) continue;
    if (level == t->layers && src == ws->h) /* once, over every row */
      rc = b->rmsnorm(b, ws->x, ws->h, m->w->final_norm, p->rows, (int)H, t->rms_eps), src = ws->x;
    if (!rc) rc = b->download_f32(b, c[i].hidden, (const char *)src + (size_t)(row * H) * b->elem_bytes, c[i].n * H);
  }
  return rc;
}

/* Token j of chunk k takes a vision row: an image pad id among its prompted tokens (not its n_generated last). */
static int is_pad(const lm_model *m, const lm_chunk *k, int j) {
  return j < k->n - k->n_generated && k->ids[j] == m->c->image_token_id;
}

/* Level `level` of the step's vision rows (0: the features, l: DeepStack l - 1) into ws->h at the pads: set
 * (spec §4.6) or added (DeepStack, §3.7), scattered chunk by chunk from where they are on the device (the pads of
 * the chunks follow each other in vis_idx). */
static int put_vision(lm_model *m, const lm_ws *ws, const lm_plan *p, const lm_chunk *c, int n_chunks, int level) {
  qvl_backend *b = m->b;
  int64_t H = m->c->text.hidden, at = 0;
  for (int i = 0; i < n_chunks; i++) {
    int64_t pads = 0;
    for (int j = 0; j < c[i].n; j++) pads += is_pad(m, &c[i], j);
    if (!pads) continue;
    const void *rows = level ? c[i].deepstack_dev[level - 1] : c[i].vision_dev;
    int rc = b->scatter_rows(b, ws->h, rows, IN(ws, p, vis_idx) + at, pads, H, level > 0);
    if (rc) return rc;
    at += pads;
  }
  return QVL_OK;
}

/* Every op of a step, after its inputs were uploaded; c: the chunks whose hidden states are taken and whose vision
 * rows are read (graph steps have none). */
static int forward(lm_model *m, const lm_ws *ws, const lm_plan *p, const lm_chunk *c, int n_chunks, int n_deepstack) {
  const qvl_text_config *t = &m->c->text;
  qvl_backend *b = m->b;
  int64_t H = t->hidden;
  int rc = b->gather_rows(b, ws->h, m->w->embed, IN(ws, p, ids), p->rows, H);
  if (!rc && p->n_vis) rc = put_vision(m, ws, p, c, n_chunks, 0);
  if (!rc) rc = take_hidden(m, ws, p, c, n_chunks, 0);
  for (int l = 0; !rc && l < p->layers; l++) {
    const lm_layer *L = &m->w->lm[l];
    if ((rc = attention_block(m, ws, p, L, l)) || (rc = mlp_block(m, ws, p, L))) break;
    if (l < n_deepstack && p->n_vis) rc = put_vision(m, ws, p, c, n_chunks, 1 + l);
    if (!rc) rc = take_hidden(m, ws, p, c, n_chunks, l + 1);
  }
  if (rc || !p->outs) return rc;
  rc = b->gather_rows(b, ws->mlp, ws->h, IN(ws, p, out_idx), p->outs, H);
  if (!rc) rc = b->rmsnorm(b, ws->x, ws->mlp, m->w->final_norm, p->outs, (int)H, t->rms_eps);
  if (!rc) rc = b->linear(b, ws->logits, ws->x, m->w->lm_head, NULL, p->outs, t->vocab, (int)H, QVL_EPI_NONE);
  if (!rc && p->argmax) rc = b->argmax_rows(b, ws->argmax, ws->logits, p->outs, t->vocab);
  return rc;
}

/* ---- a step ---------------------------------------------------------------------------------------------- */


/* Everything that can refuse the step, before blocks are taken or the device is touched. */
static int check_step(lm_model *m, const lm_chunk *c, int n_chunks, qvl_err *err) {
  const qvl_config *cfg = m->c;
  int need = 0;
  if (n_chunks < 1) return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: a step of no sequences");
  for (int i = 0; i < n_chunks; i++) {
    const lm_chunk *k = &c[i];
    int pads = 0;
    if (!k->seq || !k->ids || !k->pos || k->n < 1)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: chunk %d is empty or has no sequence", i);
    if (k->n_generated < 0 || k->n_generated > k->n)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: chunk %d: %d of its %d tokens generated", i,
                      k->n_generated, k->n);
    for (int j = 0; j < i; j++)
      if (c[j].seq == k->seq)
        return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: chunks %d and %d are of one sequence", j, i);
    if ((int64_t)k->seq->len + k->n > (int64_t)k->seq->cap_blocks * LM_BLOCK)
      return qvl_fail(err, QVL_ERR_LIMIT, "language model: %d cached + %d new tokens exceed the sequence's %d",
                      k->seq->len, k->n, k->seq->cap_blocks * LM_BLOCK);
    for (int j = 0; j < k->n; j++) {
      if (k->ids[j] < 0 || k->ids[j] >= cfg->text.vocab)
        return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: token %d has id %d outside the vocabulary (%d)",
                        j, k->ids[j], cfg->text.vocab);
      pads += is_pad(m, k, j);
    }
    if (pads && !k->vision_dev)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: %d image pad tokens but no vision rows", pads);
    if (k->hidden && (k->hidden_layer < 0 || k->hidden_layer > cfg->text.layers))
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: hidden layer %d is outside 0..%d", k->hidden_layer,
                      cfg->text.layers);
    if (pads && k->n_deepstack != cfg->vision.n_deepstack)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: %d DeepStack levels given, the model has %d",
                      k->n_deepstack, cfg->vision.n_deepstack);
    need += lm_seq_blocks_needed(k->seq, k->n);
  }
  if (need > m->n_free)
    return qvl_fail(err, QVL_ERR_LIMIT, "language model: the step needs %d more KV blocks, %d of %d are free", need,
                    m->n_free, m->n_blocks);
  return QVL_OK;
}

static void take_blocks(lm_model *m, const lm_chunk *c, int n_chunks) {
  for (int i = 0; i < n_chunks; i++) {
    lm_seq *s = c[i].seq;
    int n = lm_seq_blocks_needed(s, c[i].n);
    lm_block_alloc(m, s->blocks + s->n_blocks, n); /* check_step counted them */
    s->n_blocks += n;
  }
}

static int log2_ceil(int64_t v) {
  int k = 0;
  while ((int64_t)1 << k < v) k++;
  return k;
}

/* The step's shape: eager (pads, prefill chunks) or a graph bucket (graph = 1: every chunk one token). */
static void plan_step(lm_model *m, const lm_chunk *c, int n_chunks, int graph, lm_plan *p) {
  memset(p, 0, sizeof *p);
  int64_t log_rows = 0, arg_rows = 0;
  int features_only = 1;
  for (int i = 0; i < n_chunks; i++) {
    int kv = c[i].seq->len + c[i].n;
    p->rows += c[i].n;
    p->max_q = c[i].n > p->max_q ? c[i].n : p->max_q;
    p->max_kv = kv > p->max_kv ? kv : p->max_kv;
    p->max_blocks = c[i].seq->n_blocks > p->max_blocks ? c[i].seq->n_blocks : p->max_blocks;
    for (int j = 0; j < c[i].n; j++) p->n_vis += is_pad(m, &c[i], j);
    log_rows += c[i].logits ? (c[i].all_logits ? c[i].n : 1) : 0;
    arg_rows += !c[i].logits && c[i].argmax;
    p->argmax |= c[i].argmax != NULL;
    features_only &= c[i].hidden && !c[i].logits && !c[i].argmax;
    p->layers = c[i].hidden && c[i].hidden_layer > p->layers ? c[i].hidden_layer : p->layers;
  }
  if (!features_only) p->layers = m->c->text.layers;
  p->n_seq = n_chunks, p->outs = log_rows + arg_rows, p->n_log = log_rows;
  if (graph) { /* padded to the buckets; chunk i is row i and out row i (can_graph: no hidden states) */
    int ctx = 1 << log2_ceil(p->max_kv < MIN_CTX_BUCKET ? MIN_CTX_BUCKET : p->max_kv);
    p->rows = p->n_seq = p->outs = 1 << log2_ceil(n_chunks);
    p->max_kv = ctx, p->max_blocks = ctx / LM_BLOCK, p->n_log = n_chunks, p->argmax = 1;
  }
  p->in = in_layout(p->rows, p->n_seq, (int64_t)p->n_seq * p->max_blocks, p->outs, p->n_vis, m->c->text.head_dim);
}

/* The staging block of a planned step; row_of[2i], row_of[2i + 1]: chunk i's first logits row and argmax row. */
static void stage_step(lm_model *m, const lm_chunk *c, int n_chunks, const lm_plan *p, int graph) {
  const qvl_text_config *t = &m->c->text;
  int32_t *S = m->stage, *row_of = m->row_of;
  float *cos = (float *)(S + p->in.cos), *sin = (float *)(S + p->in.sin);
  int hd = t->head_dim;
  int64_t row = 0, nv = 0, lo = 0, ao = p->n_log;
  memset(S + p->in.table, 0, (size_t)(p->n_seq * p->max_blocks) * 4);
  for (int i = 0; i < n_chunks; i++) {
    const lm_chunk *k = &c[i];
    const lm_seq *s = k->seq;
    S[p->in.cu_q + i] = (int32_t)row, S[p->in.kv_len + i] = s->len + k->n;
    int nb = s->n_blocks < p->max_blocks ? s->n_blocks : p->max_blocks; /* blocks past len + n are not read */
    memcpy(S + p->in.table + (int64_t)i * p->max_blocks, s->blocks, (size_t)nb * 4);
    for (int j = 0; j < k->n; j++) {
      int tk = s->len + j;
      S[p->in.ids + row + j] = k->ids[j];
      S[p->in.slot + row + j] = s->blocks[tk / LM_BLOCK] * LM_BLOCK + tk % LM_BLOCK;
      if (is_pad(m, k, j)) S[p->in.vis_idx + nv++] = (int32_t)(row + j);
    }
    qvl_mrope_tables(cos + row * hd, sin + row * hd, k->pos, k->n, t);
    if (!graph) { /* lm_head rows: the logits rows of every chunk first, then the argmax-only rows */
      row_of[2 * i] = (int32_t)lo;
      for (int64_t j = k->all_logits ? 0 : k->n - 1; k->logits && j < k->n; j++) S[p->in.out_idx + lo++] = (int32_t)(row + j);
      row_of[2 * i + 1] = (int32_t)(k->logits ? lo - 1 : ao);
      if (!k->logits && k->argmax) S[p->in.out_idx + ao++] = (int32_t)(row + k->n - 1);
    } else {
      row_of[2 * i] = row_of[2 * i + 1] = i, S[p->in.out_idx + i] = i;
    }
    row += k->n;
  }
  for (int64_t i = n_chunks; i < p->n_seq; i++) { /* graph padding: one token at position 0 in block 0 */
    S[p->in.cu_q + i] = (int32_t)i, S[p->in.kv_len + i] = 1;
    S[p->in.ids + i] = 0, S[p->in.slot + i] = (int32_t)(i % LM_BLOCK), S[p->in.out_idx + i] = (int32_t)i;
    for (int d = 0; d < hd; d++) cos[i * hd + d] = 1.0f, sin[i * hd + d] = 0.0f;
  }
  S[p->in.cu_q + p->n_seq] = (int32_t)p->rows;
}

/* Runs a decode step as a graph: replayed when its bucket has one, else run eagerly and then captured. */
static int run_graph(lm_model *m, const lm_plan *p) {
  qvl_backend *b = m->b;
  int bi = log2_ceil(p->n_seq), ki = log2_ceil(p->max_kv / MIN_CTX_BUCKET), rc;
  if (ki >= N_CTX_BUCKETS) return -1;
  if (m->graph[bi][ki]) return b->graph_launch(b, m->graph[bi][ki]);
  if ((rc = forward(m, &m->gws, p, NULL, 0, 0)) || (rc = b->graph_begin(b))) return rc;
  rc = forward(m, &m->gws, p, NULL, 0, 0);
  void *g = NULL;
  int rc2 = b->graph_end(b, &g);
  if (!rc) rc = rc2;
  if (!rc) m->graph[bi][ki] = g;
  else if (g) b->graph_free(b, g);
  return rc;
}

/* The graph workspace holds the largest bucket once, so the graphs' buffers never move. */
static int graph_ws(lm_model *m) {
  if (m->gws.rows) return QVL_OK;
  int64_t ctx = (int64_t)1 << log2_ceil(m->c->text.max_position);
  int64_t max_ctx = (int64_t)MIN_CTX_BUCKET << (N_CTX_BUCKETS - 1);
  ctx = ctx > max_ctx ? max_ctx : ctx < MIN_CTX_BUCKET ? MIN_CTX_BUCKET : ctx;
  return ws_reserve(m, &m->gws, LM_MAX_GRAPH_BATCH, LM_MAX_GRAPH_BATCH, LM_MAX_GRAPH_BATCH * ctx / LM_BLOCK,
                    LM_MAX_GRAPH_BATCH, 0);
}

static int can_graph(const lm_model *m, const lm_chunk *c, int n_chunks) {
  if (!m->graphs || n_chunks > LM_MAX_GRAPH_BATCH) return 0;
  int64_t max_ctx = (int64_t)MIN_CTX_BUCKET << (N_CTX_BUCKETS - 1);
  for (int i = 0; i < n_chunks; i++)
    if (c[i].n != 1 || is_pad(m, &c[i], 0) || c[i].hidden || c[i].seq->len + 1 > max_ctx ||
        c[i].seq->len + 1 > m->c->text.max_position)
      return 0;
  return 1;
}

/* The outputs each chunk asked for. */
static int collect(lm_model *m, const lm_chunk *c, int n_chunks, const lm_plan *p, const lm_ws *ws) {
  qvl_backend *b = m->b;
  int64_t V = m->c->text.vocab;
  int rc = QVL_OK, n_log = 0;
  const lm_chunk *one = NULL;
  for (int i = 0; i < n_chunks; i++)
    if (c[i].logits) n_log++, one = &c[i];
  if (p->argmax && !(rc = host_grow((void **)&m->host_argmax, &m->host_argmax_n, p->outs, 4)))
    rc = b->download(b, m->host_argmax, ws->argmax, (size_t)p->outs * 4);
  for (int i = 0; !rc && i < n_chunks; i++)
    if (c[i].argmax) *c[i].argmax = m->host_argmax[m->row_of[2 * i + 1]];
  if (rc || !n_log) return rc;
  if (n_log == 1) /* straight into the caller's array */
    return b->download_f32(b, one->logits, (const char *)ws->logits + (size_t)(m->row_of[2 * (one - c)] * V) * b->elem_bytes,
                           (one->all_logits ? one->n : 1) * V);
  if ((rc = host_grow((void **)&m->host_logits, &m->host_logits_n, p->n_log * V, sizeof(float))) ||
      (rc = b->download_f32(b, m->host_logits, ws->logits, p->n_log * V)))
    return rc;
  for (int i = 0; i < n_chunks; i++)
    if (c[i].logits)
      memcpy(c[i].logits, m->host_logits + m->row_of[2 * i] * V, (size_t)((c[i].all_logits ? c[i].n : 1) * V) * 4);
  return QVL_OK;
}

int lm_step_begin(lm_model *m, const lm_chunk *c, int n_chunks, qvl_err *err) {
  qvl_backend *b = m->b;
  qvl_err_clear(err);
  if (m->pend.on) return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: a step is still queued (lm_step_end)");
  int rc = check_step(m, c, n_chunks, err);
  if (rc) return rc;
  take_blocks(m, c, n_chunks);
  int graph = can_graph(m, c, n_chunks);
  lm_plan p;
  plan_step(m, c, n_chunks, graph, &p);
  lm_ws *ws = graph ? &m->gws : &m->ws;
  if (m->stage_bytes < p.in.total * 4) {
    if ((rc = b->sync(b))) return qvl_fail(err, rc, "language model: %s", b->err->msg);
    int64_t had = m->stage_bytes;
    b->host_free(b, m->stage);
    m->stage = NULL, m->stage_bytes = 0, m->stage_busy = 0;
    int64_t bytes = p.in.total * 4 > had * 3 / 2 ? p.in.total * 4 : had * 3 / 2;
    if ((rc = b->host_alloc(b, &m->stage, (size_t)bytes))) return qvl_fail(err, rc, "language model: %s", b->err->msg);
    m->stage_bytes = bytes;
  }
  if ((rc = host_grow((void **)&m->row_of, &m->row_of_n, 2 * (int64_t)n_chunks, 4)))
    return qvl_fail(err, QVL_ERR_NOMEM, "language model: out of memory");
  if (m->stage_busy && (rc = b->sync(b))) return qvl_fail(err, rc, "language model: %s", b->err->msg);
  stage_step(m, c, n_chunks, &p, graph);
  if (graph) rc = graph_ws(m);
  else rc = ws_reserve(m, ws, p.rows, p.n_seq, (int64_t)p.n_seq * p.max_blocks, p.outs, p.n_vis);
  if (!rc) rc = b->upload(b, ws->in, m->stage, (size_t)p.in.total * 4);
  m->stage_busy = !p.outs; /* the upload may read the stage until the next sync (collect's downloads) */
  if (!rc) rc = graph ? run_graph(m, &p) : forward(m, ws, &p, c, n_chunks, m->c->vision.n_deepstack);
  if (rc) return b->err != err || !err->code ? qvl_fail(err, rc, "language model: %s", b->err->msg) : rc;
  m->pend.c = c, m->pend.n = n_chunks, m->pend.p = p, m->pend.ws = ws, m->pend.on = 1;
  return QVL_OK;
}

int lm_step_end(lm_model *m, qvl_err *err) {
  qvl_backend *b = m->b;
  if (!m->pend.on) return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: no step queued (lm_step_begin)");
  const lm_chunk *c = m->pend.c;
  int n_chunks = m->pend.n, rc = collect(m, c, n_chunks, &m->pend.p, m->pend.ws);
  m->pend.on = 0;
  if (rc) return b->err != err || !err->code ? qvl_fail(err, rc, "language model: %s", b->err->msg) : rc;
  for (int i = 0; i < n_chunks; i++) c[i].seq->len += c[i].n;
  return QVL_OK;
}

int lm_step(lm_model *m, const lm_chunk *c, int n_chunks, qvl_err *err) {
  int rc = lm_step_begin(m, c, n_chunks, err);
  return rc ? rc : lm_step_end(m, err);
}
