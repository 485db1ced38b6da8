#include "models/vision_run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/vision_index.h"

enum { GRAPH_ROWS = 16384, IX_ALIGN = 64 };

float vis_attn_scale(const qvl_vision_config *v) { return 1.0f / sqrtf((float)v->head_dim); }

static int imax(int a, int b) { return a > b ? a : b; }

/* Widths of a and u and the number of outputs, per architecture (vision_run.h). */
static void widths(const qvl_config *cfg, int ffn, int *wa, int *wu, int *n_out) {
  const qvl_vision_config *v = &cfg->vision;
  int D = v->hidden, K = v->in_channels * v->temporal_patch * v->patch * v->patch, unit = v->merge * v->merge;
  if (cfg->arch == QVL_ARCH_QWEN2_5_VL) {
    *wa = imax(imax(3 * D, ffn), (v->out_hidden + unit - 1) / unit);
    *wu = imax(imax(2 * ffn, D), K);
    *n_out = 1;
  } else {
    *wa = imax(imax(3 * D, ffn), imax(D, K));
    *wu = 0;
    *n_out = 1 + v->n_deepstack;
  }
}

/* Index words a call may take: Qwen3-VL 2N positions + 4N corners + 4N weights + G + 1 boundaries; Qwen2.5-VL
 * fewer (3N + 4G + 2); plus the alignment of each area. */
static int64_t ix_words(int64_t rows) { return 11 * rows + 8 * IX_ALIGN; }

int64_t vis_ws_bytes(const qvl_config *cfg, int ffn_width, size_t elem_bytes, int64_t max_patches) {
  const qvl_vision_config *v = &cfg->vision;
  int wa, wu, n_out;
  widths(cfg, ffn_width, &wa, &wu, &n_out);
  int64_t N = max_patches, G = N / (v->merge * v->merge);
  return N * (2 * (int64_t)v->hidden + wa + wu) * (int64_t)elem_bytes + 2 * N * v->head_dim * 4 + ix_words(N) * 4 +
         n_out * G * v->out_hidden * (int64_t)elem_bytes;
}

static void shape_clear(qvl_backend *b, vis_shape *s) {
  if (s->graph) b->graph_free(b, s->graph);
  for (int i = 0; i < 2; i++) b->attention_free(b, s->att[i]);
  free(s->grid), free(s->ix);
  memset(s, 0, sizeof *s);
}

void vis_ws_close(vis_ws *ws) {
  if (!ws) return;
  qvl_backend *b = ws->b;
  for (int i = 0; i < VIS_GRAPHS; i++) shape_clear(b, &ws->shapes[i]);
  void *all[] = {ws->h, ws->x, ws->a, ws->u, ws->cos, ws->sin, ws->ix};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) b->free(b, all[i]);
  for (int i = 0; i < ws->n_out; i++) b->free(b, ws->out[i]);
  b->host_free(b, ws->ix_host);
  b->trim(b);
  free(ws);
}

int vis_ws_open(vis_ws **out, qvl_backend *b, const qvl_config *cfg, int ffn_width, int64_t max_patches,
                int max_images, qvl_err *err) {
  const qvl_vision_config *v = &cfg->vision;
  *out = NULL;
  if (max_patches < v->merge * v->merge || max_images < 1)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "engine params: max_patches %lld and max_images %d must be >= %d and 1",
                    (long long)max_patches, max_images, v->merge * v->merge);
  vis_ws *ws = calloc(1, sizeof *ws);
  if (!ws) return qvl_fail(err, QVL_ERR_NOMEM, "vision: cannot allocate the workspace");
  ws->b = b, ws->cfg = cfg, ws->max_rows = max_patches, ws->max_images = max_images, ws->ffn_width = ffn_width;
  ws->graphs = -1, ws->ix_words = ix_words(max_patches);
  widths(cfg, ffn_width, &ws->wa, &ws->wu, &ws->n_out);
  int64_t N = max_patches, G = N / (v->merge * v->merge), D = v->hidden;
  size_t e = b->elem_bytes;
  struct { void **p; int64_t bytes; } want[] = {
    {&ws->h, N * D * (int64_t)e}, {&ws->x, N * D * (int64_t)e}, {&ws->a, N * ws->wa * (int64_t)e},
    {&ws->u, N * ws->wu * (int64_t)e}, {(void **)&ws->cos, N * v->head_dim * 4},
    {(void **)&ws->sin, N * v->head_dim * 4},
    {(void **)&ws->ix, ws->ix_words * 4}};
  int rc = QVL_OK;
  for (size_t i = 0; !rc && i < sizeof want / sizeof want[0]; i++)
    if (want[i].bytes) rc = b->alloc(b, want[i].p, (size_t)want[i].bytes);
  for (int i = 0; !rc && i < ws->n_out; i++) rc = b->alloc(b, &ws->out[i], (size_t)(G * v->out_hidden) * e);
  if (!rc) rc = b->host_alloc(b, (void **)&ws->ix_host, (size_t)ws->ix_words * 4);
  int64_t bytes = ws->bytes = vis_ws_bytes(cfg, ffn_width, e, max_patches);
  if (rc) {
    int code = err->code ? err->code : rc;
    char why[sizeof err->msg];
    memcpy(why, err->msg, sizeof why);
    vis_ws_close(ws);
    qvl_err_clear(err); /* the allocator's own message is kept inside the one that names the limit */
    return qvl_fail(err, code,
                    "vision: the workspace for %lld patches (qvl_engine_params.max_patches) needs %.2f GiB of %s "
                    "memory: %.200s",
                    (long long)max_patches, (double)bytes / (1 << 30), b->name, why);
  }
  *out = ws;
  return QVL_OK;
}

int32_t *vis_ix_take(vis_run *r, int64_t words, int32_t **host) {
  int64_t at = r->ix_used;
  r->ix_used += (words + IX_ALIGN - 1) / IX_ALIGN * IX_ALIGN;
  *host = r->ws->ix_host + at;
  return r->ws->ix + at;
}

int vis_merger(vis_run *r, const vit_merger *m, int postshuffle, const void *in, void *mid, void *out) {
  qvl_backend *b = r->b;
  const qvl_vision_config *v = r->v;
  int unit = v->merge * v->merge, D = v->hidden, D4 = unit * D, rc;
  int64_t G = r->rows / unit, rows = postshuffle ? G : r->rows;
  int dim = postshuffle ? D4 : D;
  rc = m->norm_b ? b->layernorm(b, r->x, in, m->norm_w, m->norm_b, rows, dim, v->norm_eps)
                 : b->rmsnorm(b, r->x, in, m->norm_w, rows, dim, v->norm_eps);
  if (rc || (rc = b->linear(b, mid, r->x, m->fc1_w, m->fc1_b, G, D4, D4, QVL_EPI_NONE)) ||
      (rc = b->gelu_erf(b, mid, mid, G * D4)))
    return rc;
  return b->linear(b, out, mid, m->fc2_w, m->fc2_b, G, v->out_hidden, D4, QVL_EPI_NONE);
}

/* Downloads out_dev[0 .. n_features) into out (host f32); out == NULL only synchronises. */
static int collect(vis_run *r, qvl_vision_out *out, int n_features, int device_out) {
  if (!out) return r->b->sync(r->b);
  int64_t G = r->rows / (r->v->merge * r->v->merge), O = r->v->out_hidden;
  memset(out, 0, sizeof *out);
  out->n = n_features, out->rows = G, out->cols = O;
  if (device_out) { /* copies out of the workspace, which the next call overwrites; no host round trip */
    size_t bytes = (size_t)(G * O) * r->b->elem_bytes;
    out->be = r->b;
    for (int i = 0; i < n_features; i++) {
      int rc = r->b->alloc(r->b, &out->dev[i], bytes);
      if (!rc) rc = r->b->copy(r->b, out->dev[i], r->out_dev[i], bytes);
      if (rc) {
        qvl_vision_out_free(out);
        return rc;
      }
    }
    return QVL_OK;
  }
  for (int i = 0; i < n_features; i++) {
    out->data[i] = malloc((size_t)(G * O) * sizeof(float));
    if (!out->data[i]) {
      qvl_vision_out_free(out);
      return qvl_fail(r->err, QVL_ERR_NOMEM, "vision: cannot allocate %lld x %lld features", (long long)G,
                      (long long)O);
    }
    int rc = r->b->download_f32(r->b, out->data[i], r->out_dev[i], G * O);
    if (rc) {
      qvl_vision_out_free(out);
      return rc;
    }
  }
  return r->b->sync(r->b);
}

void qvl_vision_out_free(qvl_vision_out *o) {
  for (int i = 0; i < o->n; i++) {
    free(o->data[i]);
    if (o->be && o->dev[i]) o->be->free(o->be, o->dev[i]);
  }
  memset(o, 0, sizeof *o);
}

void vis_tap_block(qvl_tap_fn tap, void *ud, int layer, const void *buf, int64_t rows, int64_t cols) {
  char name[32];
  snprintf(name, sizeof name, "block.%d", layer);
  tap(ud, name, buf, rows, cols);
}

/* The entry of this call's shape (grids and pixel buffer), the least recently used one recycled. */
static vis_shape *shape_get(vis_ws *ws, const int32_t *grid, int n, const void *px, qvl_err *err) {
  vis_shape *lru = &ws->shapes[0];
  ws->clock++;
  for (int i = 0; i < VIS_GRAPHS; i++) {
    vis_shape *s = &ws->shapes[i];
    if (s->grid && s->n == n && s->px == px && !memcmp(s->grid, grid, (size_t)n * 3 * sizeof(int32_t))) {
      s->last_use = ws->clock;
      return s;
    }
    if (!s->grid || (lru->grid && s->last_use < lru->last_use)) lru = s;
  }
  if (ws->ix_of == lru) ws->ix_of = NULL;
  shape_clear(ws->b, lru);
  lru->grid = malloc((size_t)n * 3 * sizeof(int32_t));
  if (!lru->grid) return qvl_fail(err, QVL_ERR_NOMEM, "vision: out of memory"), NULL;
  memcpy(lru->grid, grid, (size_t)n * 3 * sizeof(int32_t));
  lru->n = n, lru->px = px, lru->last_use = ws->clock;
  return lru;
}

/* Records the forward as a graph and launches it; on a capture failure the shape runs eagerly from then on. */
static int record(vis_run *r, vis_shape *sh, const vis_arch *arch, const qvl_weights *w, const void *px) {
  qvl_backend *b = r->b;
  int rc = b->graph_begin(b);
  if (!rc) {
    int fwd = arch->forward(r, w, px, NULL, NULL);
    int end = b->graph_end(b, &sh->graph);
    rc = fwd ? fwd : end;
  }
  if (rc) {
    qvl_err_clear(r->err);
    sh->graph = NULL, sh->runs = -1;
    return arch->forward(r, w, px, NULL, NULL);
  }
  return b->graph_launch(b, sh->graph);
}

int vis_run_tower(vis_ws *ws, const vis_arch *arch, const qvl_weights *w, const vis_input *in, qvl_vision_out *out,
                  qvl_tap_fn tap, void *ud, qvl_err *err) {
  qvl_backend *b = ws->b;
  const qvl_vision_config *v = &ws->cfg->vision;
  int64_t max_rows = in->max_patches > 0 && in->max_patches < ws->max_rows ? in->max_patches : ws->max_rows, rows;
  if (in->n > ws->max_images)
    return qvl_fail(err, QVL_ERR_LIMIT, "vision: %d images in one call; this engine takes at most %d "
                    "(qvl_engine_params.max_images)", in->n, ws->max_images);
  int rc = vis_check_grids(in->grid, in->n, v->merge, max_rows, &rows, err);
  if (rc) return rc;
  vis_run r = {.ws = ws, .b = b, .v = v, .err = err, .rows = rows, .ffn_width = ws->ffn_width, .h = ws->h,
               .x = ws->x, .a = ws->a, .u = ws->u, .cos = ws->cos, .sin = ws->sin, .out_dev = ws->out};
  r.k = v->in_channels * v->temporal_patch * v->patch * v->patch;
  const void *px = in->dev_pixels ? in->dev_pixels : ws->wu ? ws->u : ws->a;
  vis_shape *sh = shape_get(ws, in->grid, in->n, px, err);
  if (!sh) return err->code;
  int graphs = b->graph_begin && !tap && !b->profile && sh->runs >= 0 &&
               (ws->graphs == 1 || (ws->graphs < 0 && rows <= GRAPH_ROWS));
  if (ws->ix_of == sh && sh->ix) { /* the index area still holds this shape's arrays */
    vis_run keep = r;
    r = *sh->ix;
    r.ws = keep.ws, r.b = keep.b, r.v = keep.v, r.err = keep.err;
  } else { /* host index work, one upload */
    if ((rc = b->sync(b))) return rc; /* the staging area may still feed the previous call's upload */
    ws->ix_of = NULL;
    if ((rc = arch->index(&r, in->grid, in->n)) || (rc = b->upload(b, ws->ix, ws->ix_host, (size_t)r.ix_used * 4)))
      return rc;
    if (!sh->ix && !(sh->ix = malloc(sizeof *sh->ix))) return qvl_fail(err, QVL_ERR_NOMEM, "vision: out of memory");
    *sh->ix = r;
    ws->ix_of = sh;
    for (int i = 0; i < r.n_att; i++) {
      if (sh->att[i] && sh->n_seq[i] == r.n_seq[i]) continue;
      b->attention_free(b, sh->att[i]);
      sh->att[i] = NULL, sh->n_seq[i] = r.n_seq[i];
      if ((rc = b->attention_prepare(b, &sh->att[i], r.cu[i], r.cu_dev[i], r.n_seq[i], v->heads, v->head_dim))) {
        ws->ix_of = NULL; /* prepared again by the next call */
        return rc;
      }
    }
  }
  r.att = sh->att;
  if (!in->dev_pixels && (rc = b->upload_f32(b, (void *)px, in->host_pixels, rows * r.k))) return rc;
  if (graphs && sh->graph) rc = b->graph_launch(b, sh->graph);
  else if (graphs && sh->runs >= 1) rc = record(&r, sh, arch, w, px);
  else {
    rc = arch->forward(&r, w, px, tap, ud);
    if (sh->runs >= 0) sh->runs++;
  }
  return rc ? rc : collect(&r, out, arch->n_features, in->device_out);
}
