#include "models/vision_run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/vision_index.h"


float vis_attn_scale(const qvl_vision_config *v) { return 1.0f / sqrtf((float)v->head_dim); }

static int buf(vis_run *r, void **p, int64_t elems, size_t elem_bytes) {
  return r->b->alloc(r->b, p, (size_t)elems * elem_bytes);
}

int vis_run_begin(vis_run *r, qvl_backend *b, const qvl_vision_config *v, int ffn_width, const vis_input *in,
                  int n_out, qvl_err *err) {
  memset(r, 0, sizeof *r);
  r->b = b, r->v = v, r->err = err, r->n_out = n_out, r->ffn_width = ffn_width;
  r->k = v->in_channels * v->temporal_patch * v->patch * v->patch;
  int rc = vis_check_grids(in->grid, in->n, v->merge, in->max_patches, &r->rows, err);
  if (rc) return rc;
  int64_t N = r->rows, D = v->hidden, wide = ffn_width > r->k ? ffn_width : r->k;
  size_t e = b->elem_bytes;
  if ((rc = buf(r, &r->h, N * D, e)) || (rc = buf(r, &r->x, N * D, e)) || (rc = buf(r, &r->y, N * D, e)) ||
      (rc = buf(r, &r->qkv, N * 3 * D, e)) || (rc = buf(r, &r->ffn, N * wide, e)) ||
      (rc = buf(r, &r->ffn2, N * wide, e)) || (rc = buf(r, (void **)&r->cos, N * v->head_dim, sizeof(float))) ||
      (rc = buf(r, (void **)&r->sin, N * v->head_dim, sizeof(float))) ||
      (rc = buf(r, (void **)&r->idx, N * 4, sizeof(int32_t))) ||
      (rc = buf(r, (void **)&r->pos, N * 3, sizeof(int32_t))) ||
      (rc = buf(r, (void **)&r->wts, N * 4, sizeof(float))))
    goto fail;
  for (int i = 0; i < n_out; i++)
    if ((rc = buf(r, &r->out_dev[i], N / (v->merge * v->merge) * v->out_hidden, e))) goto fail;
  return QVL_OK;
fail:
  vis_run_end(r);
  return rc;
}

void vis_run_end(vis_run *r) {
  qvl_backend *b = r->b;
  if (!b) return;
  void *all[] = {r->h, r->x, r->y, r->qkv, r->ffn, r->ffn2, r->cos, r->sin, r->idx, r->pos, r->wts};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) b->free(b, all[i]);
  for (int i = 0; i < r->n_out; i++) b->free(b, r->out_dev[i]);
  memset(r, 0, sizeof *r);
}

int vis_run_rope(vis_run *r, const int32_t *pos, const int32_t *order) {
  qvl_backend *b = r->b;
  int32_t *dorder = order ? r->pos + 2 * r->rows : NULL;
  int rc = b->upload(b, r->pos, pos, (size_t)r->rows * 2 * sizeof(int32_t));
  if (!rc && order) rc = b->upload(b, dorder, order, (size_t)r->rows * sizeof(int32_t));
  return rc ? rc : b->rope_tables(b, r->cos, r->sin, r->pos, dorder, r->rows, r->v->head_dim, 10000.0f);
}

static int merger_norm(vis_run *r, const vit_merger *m, const void *in, int64_t rows, int dim) {
  qvl_backend *b = r->b;
  if (!m->norm_b) return b->rmsnorm(b, r->x, in, m->norm_w, rows, dim, r->v->norm_eps);
  return b->layernorm(b, r->x, in, m->norm_w, m->norm_b, rows, dim, r->v->norm_eps);
}

int vis_merger(vis_run *r, const vit_merger *m, int postshuffle, const void *in, void *out) {
  qvl_backend *b = r->b;
  int unit = r->v->merge * r->v->merge, D = r->v->hidden, D4 = unit * D, rc;
  int64_t G = r->rows / unit;
  rc = postshuffle ? merger_norm(r, m, in, G, D4) : merger_norm(r, m, in, r->rows, D);
  if (rc || (rc = b->linear(b, r->y, r->x, m->fc1_w, m->fc1_b, G, D4, D4, QVL_EPI_NONE)) ||
      (rc = b->gelu_erf(b, r->y, r->y, G * D4)))
    return rc;
  return b->linear(b, out, r->y, m->fc2_w, m->fc2_b, G, r->v->out_hidden, D4, QVL_EPI_NONE);
}

int vis_pixels(vis_run *r, const vis_input *in, const void **px) {
  *px = in->dev_pixels;
  if (*px) return QVL_OK;
  *px = r->ffn;
  return r->b->upload_f32(r->b, r->ffn, in->host_pixels, r->rows * r->k);
}

int vis_run_collect(vis_run *r, qvl_vision_out *out, int n_features) {
  if (!out) return r->b->sync(r->b);
  int64_t G = r->rows / (r->v->merge * r->v->merge), O = r->v->out_hidden;
  memset(out, 0, sizeof *out);
  out->n = n_features, out->rows = G, out->cols = O;
  for (int i = 0; i < n_features; i++) {
    out->data[i] = malloc((size_t)(G * O) * sizeof(float));
    if (!out->data[i]) {
      qvl_vision_out_free(out);
      return qvl_fail(r->err, QVL_ERR_NOMEM, "vision: cannot allocate %lld x %lld features", (long long)G,
                      (long long)O);
    }
    int rc = r->b->download_f32(r->b, out->data[i], r->out_dev[i == 0 ? 0 : i + 1], G * O);
    if (rc) {
      qvl_vision_out_free(out);
      return rc;
    }
  }
  return r->b->sync(r->b);
}

void qvl_vision_out_free(qvl_vision_out *o) {
  for (int i = 0; i < o->n; i++) free(o->data[i]);
  memset(o, 0, sizeof *o);
}

void vis_tap_block(qvl_tap_fn tap, void *ud, int layer, const void *buf, int64_t rows, int64_t cols) {
  char name[32];
  snprintf(name, sizeof name, "block.%d", layer);
  tap(ud, name, buf, rows, cols);
}
