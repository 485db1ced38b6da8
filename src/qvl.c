/* qvl.c - the engine: opens a model (config + checkpoint or synthetic weights), binds its weights to a
 * backend through the architecture's name table, and runs the stages. No math here. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/half.h"
#include "core/rng.h"
#include "image/gpu.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/lm.h"
#include "models/model.h"
#include "models/mrope.h"
#include "models/vision_run.h"
#include "qvl_internal.h"
#include "runtime/sampler.h"
#ifdef QVL_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"
#endif

struct qvl_engine {
  qvl_err err;
  qvl_engine_params params;
  char dir[PATH_MAX];
  qvl_config cfg;
  qvl_preproc_config pre;
  st_model *st;           /* NULL with dummy weights */
  qvl_backend *be;
  qvl_tensor_spec *specs; /* every checkpoint tensor of the architecture */
  int n_specs;
  qvl_weights w;
  qvl_model_info info;
  char weights_desc[16];
  vis_ws *ws;             /* the vision tower's device memory, planned at open (models/vision_run.h) */
  lm_model *lm;           /* the language model and its KV pool, opened by the first generation */
  img_gpu *img;           /* the GPU image pipeline, opened by the first qvl_preprocess_images on CUDA */
};

struct qvl_features {
  qvl_vision_out out;
  char names[1 + QVL_MAX_LIST][24];
};

const char *qvl_status_name(int status) {
  switch (status) {
    case QVL_OK: return "QVL_OK";
    case QVL_ERR_INVALID_ARG: return "QVL_ERR_INVALID_ARG";
    case QVL_ERR_IO: return "QVL_ERR_IO";
    case QVL_ERR_FORMAT: return "QVL_ERR_FORMAT";
    case QVL_ERR_UNSUPPORTED: return "QVL_ERR_UNSUPPORTED";
    case QVL_ERR_NOMEM: return "QVL_ERR_NOMEM";
    case QVL_ERR_DEVICE: return "QVL_ERR_DEVICE";
    case QVL_ERR_LIMIT: return "QVL_ERR_LIMIT";
    case QVL_ERR_MISSING: return "QVL_ERR_MISSING";
    default: return "QVL_ERR_UNKNOWN";
  }
}

qvl_engine_params qvl_engine_default_params(void) {
  qvl_engine_params p = {0};
  p.backend = QVL_BACKEND_AUTO;
  p.load = QVL_LOAD_VISION;
  p.max_patches = 262144;
  p.max_images = 256;
  return p;
}

const char *qvl_errmsg(const qvl_engine *e) {
  if (!e) return "no engine (allocation failed or NULL handle)";
  return e->err.msg;
}

/* ---- checkpoint validation and binding -------------------------------------------------------------- */

static int float_dtype(st_dtype t) { return t == ST_BF16 || t == ST_F16 || t == ST_F32; }

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

/* Every spec present with the config's shape and a float dtype; nothing in the checkpoint unaccounted for. */
static int validate_checkpoint(qvl_engine *e) {
  const char *dtype = NULL;
  for (int i = 0; i < e->n_specs; i++) {
    const qvl_tensor_spec *s = &e->specs[i];
    const st_tensor *t = st_find(e->st, s->name);
    if (!t)
      return qvl_fail(&e->err, QVL_ERR_MISSING, "%s: tensor \"%s\" is missing (required by %s)", e->dir, s->name,
                      e->cfg.arch_name);
    int same = t->ndim == s->ndim;
    for (int d = 0; same && d < s->ndim; d++) same = t->shape[d] == s->shape[d];
    if (!same) {
      char got[96], want[96];
      shape_str(got, sizeof got, t->shape, t->ndim);
      shape_str(want, sizeof want, s->shape, s->ndim);
      return qvl_fail(&e->err, QVL_ERR_FORMAT, "%s: tensor \"%s\" has shape %s but config.json implies %s", t->file,
                      s->name, got, want);
    }
    if (!float_dtype(t->dtype))
      return qvl_fail(&e->err, QVL_ERR_UNSUPPORTED, "%s: tensor \"%s\" has dtype %s; qvl loads BF16, F16 or F32",
                      t->file, s->name, st_dtype_name(t->dtype));
    dtype = !dtype || strcmp(dtype, st_dtype_name(t->dtype)) == 0 ? st_dtype_name(t->dtype) : "mixed";
  }
  if (st_count(e->st) != e->n_specs) {
    for (int i = 0; i < st_count(e->st); i++) {
      const st_tensor *t = st_at(e->st, i);
      int known = 0;
      for (int j = 0; j < e->n_specs && !known; j++) known = strcmp(e->specs[j].name, t->name) == 0;
      if (!known)
        return qvl_fail(&e->err, QVL_ERR_FORMAT, "%s: tensor \"%s\" is not part of %s (wrong model or config?)",
                        t->file, t->name, e->cfg.arch_name);
    }
  }
  snprintf(e->weights_desc, sizeof e->weights_desc, "%s", dtype ? dtype : "none");
  for (char *c = e->weights_desc; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
  return QVL_OK;
}

/* The f32 values of spec s: from the checkpoint, or the documented generator (core/rng.h). */
static int spec_values(qvl_engine *e, const qvl_tensor_spec *s, float *dst) {
  if (!e->st) {
    double center, scale;
    qvl_dummy_scale(s->name, s->shape, s->ndim, &center, &scale);
    qvl_counter_fill(dst, s->name, 0, s->numel, center, scale);
    return QVL_OK;
  }
  return st_to_f32(st_find(e->st, s->name), dst, &e->err);
}

static int wanted(const qvl_engine *e, const qvl_tensor_spec *s) {
  if (e->params.load == QVL_LOAD_ALL) return 1;
  return e->params.load == QVL_LOAD_VISION && s->part == PART_VISION;
}

static int bind_weights(qvl_engine *e) {
  int64_t max_numel = 0;
  for (int i = 0; i < e->n_specs; i++)
    if (wanted(e, &e->specs[i]) && e->specs[i].bound_numel > max_numel) max_numel = e->specs[i].bound_numel;
  if (!max_numel) return QVL_OK;
  float *host = malloc((size_t)max_numel * sizeof(float)), *pad = malloc((size_t)max_numel * sizeof(float));
  int rc = host && pad ? QVL_OK : qvl_fail(&e->err, QVL_ERR_NOMEM, "cannot allocate %lld floats of staging",
                                           (long long)max_numel);
  for (int i = 0; i < e->n_specs && !rc; i++) {
    const qvl_tensor_spec *s = &e->specs[i];
    if (!wanted(e, s)) continue;
    if ((rc = spec_values(e, s, host))) break;
    if (s->bound_numel != s->numel) qvl_spec_pad(s, pad, host);
    if (!*s->slot && (rc = e->be->alloc(e->be, s->slot, (size_t)s->slot_numel * e->be->elem_bytes))) break;
    rc = e->be->upload_f32(e->be, (char *)*s->slot + (size_t)s->slot_offset * e->be->elem_bytes,
                           s->bound_numel != s->numel ? pad : host, s->bound_numel);
    e->info.bytes_loaded += s->bound_numel * (int64_t)e->be->elem_bytes;
  }
  if (!rc) rc = e->be->sync(e->be); /* the staging buffers are reused by each upload; settle before freeing */
  free(host), free(pad);
  if (!rc && e->cfg.text.tie_embeddings) e->w.lm_head = e->w.embed;
  return rc;
}

/* ---- open / close -------------------------------------------------------------------------------- */

/* AUTO takes the GPU when this build has the CUDA backend and a device is present. */
static int make_backend(qvl_engine *e) {
  int cuda = e->params.backend == QVL_BACKEND_CUDA;
#ifdef QVL_HAVE_CUDA
  if (e->params.backend == QVL_BACKEND_AUTO && qvl_cuda_device_count() > 0) cuda = 1;
  if (cuda) return qvl_backend_cuda_create(&e->be, e->params.device, &e->err);
#endif
  if (cuda)
    return qvl_fail(&e->err, QVL_ERR_UNSUPPORTED, "this qvl was built without the CUDA backend (no nvcc at build time)");
  return qvl_backend_cpu_create(&e->be, e->params.n_threads, &e->err);
}

static void fill_info(qvl_engine *e) {
  qvl_model_info *in = &e->info;
  const qvl_config *c = &e->cfg;
  in->arch = c->arch_name;
  in->backend = e->be ? e->be->name : "none";
  in->weights = e->st ? e->weights_desc : "dummy";
  in->vision_depth = c->vision.depth, in->vision_hidden = c->vision.hidden, in->vision_heads = c->vision.heads;
  in->vision_intermediate = c->vision.intermediate, in->vision_out_hidden = c->vision.out_hidden;
  in->patch_size = c->vision.patch, in->temporal_patch_size = c->vision.temporal_patch;
  in->merge_size = c->vision.merge;
  in->text_layers = c->text.layers, in->text_hidden = c->text.hidden, in->text_heads = c->text.heads;
  in->text_kv_heads = c->text.kv_heads, in->text_head_dim = c->text.head_dim;
  in->text_intermediate = c->text.intermediate, in->vocab_size = c->text.vocab;
  in->tie_word_embeddings = c->text.tie_embeddings;
  in->n_tensors = e->n_specs;
  for (int i = 0; i < e->n_specs; i++) {
    const qvl_tensor_spec *s = &e->specs[i];
    in->n_params += s->numel;
    *(s->part == PART_VISION ? &in->n_params_vision : &in->n_params_text) += s->numel;
    in->bytes_checkpoint += e->st ? (int64_t)st_find(e->st, s->name)->nbytes : 2 * s->numel;
  }
}

/* The vision tower's workspace for these limits. */
static int vision_open(qvl_engine *e, int64_t max_patches, int max_images) {
  vis_ws_close(e->ws);
  e->ws = NULL;
  return vis_ws_open(&e->ws, e->be, &e->cfg, e->w.vit_ffn, max_patches, max_images, &e->err);
}

int qvl_engine_vision_limits(qvl_engine *e, int64_t max_patches, int max_images, int graphs) {
  qvl_err_clear(&e->err);
  if (!e->w.patch_w) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "vision: the vision tower is not loaded");
  int rc = max_patches ? vision_open(e, max_patches, max_images) : QVL_OK;
  if (!max_patches) {
    vis_ws_close(e->ws);
    e->ws = NULL;
  }
  if (!rc && e->ws) e->ws->graphs = graphs;
  return rc;
}

int64_t qvl_engine_vision_bytes(const qvl_engine *e) { return e->ws ? e->ws->bytes : 0; }

static int open_engine(qvl_engine *e) {
  char path[PATH_MAX + 32];
  int rc;
  if (!e->params.model_dir || !*e->params.model_dir)
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "engine params: model_dir is required");
  if (e->params.load < QVL_LOAD_NONE || e->params.load > QVL_LOAD_ALL)
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "engine params: load %d is not a qvl_load", (int)e->params.load);
  snprintf(e->dir, sizeof e->dir, "%s", e->params.model_dir);
  snprintf(path, sizeof path, "%s/config.json", e->dir);
  if ((rc = qvl_config_load(&e->cfg, path, &e->err))) return rc;
  snprintf(path, sizeof path, "%s/preprocessor_config.json", e->dir);
  if ((rc = qvl_preproc_load(&e->pre, e->cfg.arch, path, &e->err))) return rc;
  if (e->params.load != QVL_LOAD_NONE && (rc = make_backend(e))) return rc;
  int ffn_align = e->be && e->be->elem_bytes == 2 ? 64 : 1; /* pad the vision MLP on GPU backends */
  if ((rc = qvl_model_specs(&e->cfg, ffn_align, &e->w, &e->specs, &e->n_specs, &e->err))) return rc;
  if (!e->params.dummy && ((rc = st_open(&e->st, e->dir, &e->err)) || (rc = validate_checkpoint(e)))) return rc;
  if (e->params.load != QVL_LOAD_NONE && (rc = bind_weights(e))) return rc;
  if (e->w.patch_w && (rc = vision_open(e, e->params.max_patches, e->params.max_images))) return rc;
  fill_info(e);
  return QVL_OK;
}

int qvl_engine_open(qvl_engine **out, const qvl_engine_params *p) {
  if (!out) return QVL_ERR_INVALID_ARG;
  qvl_engine *e = calloc(1, sizeof *e);
  *out = e;
  if (!e) return QVL_ERR_NOMEM;
  if (!p) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "engine params: NULL");
  e->params = *p;
  return open_engine(e);
}

void qvl_engine_close(qvl_engine *e) {
  if (!e) return;
#ifdef QVL_HAVE_CUDA
  img_gpu_close(e->img);
#endif
  lm_close(e->lm);
  for (int i = 0; e->be && i < e->n_specs; i++)
    if (*e->specs[i].slot && !e->specs[i].slot_offset) e->be->free(e->be, *e->specs[i].slot); /* fused: once */
  vis_ws_close(e->ws);
  qvl_weights_free(&e->w, e->be);
  if (e->be) e->be->destroy(e->be);
  free(e->specs);
  st_close(e->st);
  free(e);
}

int qvl_engine_info(const qvl_engine *e, qvl_model_info *out) {
  if (!e || !out) return QVL_ERR_INVALID_ARG;
  if (e->err.code) return e->err.code;
  *out = e->info;
  return QVL_OK;
}

/* ---- export -------------------------------------------------------------------------------------- */

typedef struct export_ctx {
  qvl_engine *e;
  float *host;
} export_ctx;

static int export_fill(void *ud, int i, void *dst, size_t nbytes, qvl_err *err) {
  export_ctx *x = ud;
  const qvl_tensor_spec *s = &x->e->specs[i];
  uint16_t *out = dst;
  enum { CHUNK = 1 << 20 };
  (void)nbytes, (void)err;
  for (int64_t first = 0; first < s->numel; first += CHUNK) {
    int64_t n = s->numel - first < CHUNK ? s->numel - first : CHUNK;
    if (x->e->st) { /* a real checkpoint: convert the whole tensor once */
      if (first == 0) {
        int rc = spec_values(x->e, s, x->host);
        if (rc) return rc;
      }
      for (int64_t j = 0; j < n; j++) out[first + j] = qvl_f32_to_bf16(x->host[first + j]);
    } else {
      double center, scale;
      qvl_dummy_scale(s->name, s->shape, s->ndim, &center, &scale);
      qvl_counter_fill(x->host, s->name, first, n, center, scale);
      for (int64_t j = 0; j < n; j++) out[first + j] = qvl_f32_to_bf16(x->host[j]);
    }
  }
  return QVL_OK;
}

static int copy_file(const char *from, const char *to, int optional, qvl_err *err) {
  char *buf;
  size_t len;
  FILE *probe = fopen(from, "rb");
  if (!probe && optional) return QVL_OK;
  if (probe) fclose(probe);
  int rc = qvl_read_file(from, &buf, &len, 64 << 20, err);
  if (rc) return rc;
  FILE *f = fopen(to, "wb");
  if (!f || fwrite(buf, 1, len, f) != len) rc = qvl_fail(err, QVL_ERR_IO, "%s: cannot write", to);
  if (f && fclose(f)) rc = qvl_fail(err, QVL_ERR_IO, "%s: cannot write", to);
  free(buf);
  return rc;
}

int qvl_engine_export(qvl_engine *e, const char *out_dir, int64_t shard_bytes) {
  if (!e || !out_dir) return QVL_ERR_INVALID_ARG;
  char from[PATH_MAX + 40], to[PATH_MAX + 40];
  int64_t max_numel = 0;
  st_entry *ents = calloc((size_t)e->n_specs, sizeof *ents);
  for (int i = 0; ents && i < e->n_specs; i++) {
    ents[i].name = e->specs[i].name;
    ents[i].dtype = ST_BF16;
    ents[i].ndim = e->specs[i].ndim;
    memcpy(ents[i].shape, e->specs[i].shape, sizeof e->specs[i].shape);
    if (e->specs[i].numel > max_numel) max_numel = e->specs[i].numel;
  }
  export_ctx x = {e, NULL};
  x.host = malloc((size_t)(e->st ? max_numel : (1 << 20)) * sizeof(float));
  int rc = !ents || !x.host ? qvl_fail(&e->err, QVL_ERR_NOMEM, "export: out of memory") : QVL_OK;
  if (!rc) rc = st_write_sharded(out_dir, ents, e->n_specs, export_fill, &x, shard_bytes ? shard_bytes : 4ll << 30,
                                 &e->err);
  snprintf(from, sizeof from, "%s/config.json", e->dir), snprintf(to, sizeof to, "%s/config.json", out_dir);
  if (!rc) rc = copy_file(from, to, 0, &e->err);
  snprintf(from, sizeof from, "%s/preprocessor_config.json", e->dir);
  snprintf(to, sizeof to, "%s/preprocessor_config.json", out_dir);
  if (!rc) rc = copy_file(from, to, 1, &e->err);
  free(x.host);
  free(ents);
  return rc;
}

/* ---- vision -------------------------------------------------------------------------------------- */

const qvl_config *qvl_engine_config(const qvl_engine *e) { return &e->cfg; }

qvl_backend *qvl_engine_backend(qvl_engine *e) { return e->be; }

const qvl_preproc_config *qvl_engine_preproc(const qvl_engine *e) { return &e->pre; }

qvl_err *qvl_engine_err(qvl_engine *e) { return &e->err; }

img_gpu *qvl_engine_img_gpu(qvl_engine *e) {
#ifdef QVL_HAVE_CUDA
  if (!e->img && e->be && !strcmp(e->be->name, "cuda")) img_gpu_open(&e->img, e->be, &e->err);
  else if (!e->img) qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "GPU preprocessing needs an engine on the CUDA backend");
  return e->img;
#else
  qvl_fail(&e->err, QVL_ERR_UNSUPPORTED, "GPU preprocessing: this qvl was built without CUDA");
  return NULL;
#endif
}

int qvl_engine_vision_input(qvl_engine *e, const vis_input *in, qvl_vision_out *out, qvl_tap_fn tap, void *ud) {
  qvl_err_clear(&e->err);
  if (!e->w.patch_w) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: the vision tower is not loaded");
  if (!e->ws) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: the vision workspace was released");
  if (e->cfg.arch == QVL_ARCH_QWEN2_5_VL) return qwen2_5_vl_vision(e->ws, &e->w, in, out, tap, ud, &e->err);
  return qwen3_vl_vision(e->ws, &e->w, in, out, tap, ud, &e->err);
}

int qvl_engine_vision(qvl_engine *e, const int32_t *grid, int n_img, const float *pixels, qvl_vision_out *out,
                      qvl_tap_fn tap, void *ud) {
  vis_input in = {grid, n_img, pixels, NULL, 0, 0};
  return qvl_engine_vision_input(e, &in, out, tap, ud);
}

/* The tower on a qvl_pixels' rows: host f32, or the GPU preprocessing's bf16 rows already on this engine's device.
 * device_out: the features stay in the engine's buffers (for the language model; no host round trip). */
static int vision_pixels(qvl_engine *e, const int32_t *grid, int n_img, const float *rows, const void *dev_rows,
                         int device_out, qvl_vision_out *out) {
  if (dev_rows && (!e->be || e->be->elem_bytes != 2 || strcmp(e->be->name, "cuda"))) {
    qvl_err_clear(&e->err);
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG,
                    "encode: the pixel rows are in GPU memory (qvl_pixels.dev_rows); only the CUDA engine that "
                    "preprocessed them can read them");
  }
  vis_input in = {grid, n_img, dev_rows ? NULL : rows, dev_rows, 0, device_out};
  return qvl_engine_vision_input(e, &in, out, NULL, NULL);
}

/* ---- language model -------------------------------------------------------------------------------- */

/* The engine's language model with a KV pool of at least `blocks` blocks. Without a fixed size
 * (params.kv_cache_tokens = 0) the pool is reopened larger when a call needs more and no sequence holds blocks. */
static int engine_lm(qvl_engine *e, int64_t blocks) {
  int64_t fixed = e->params.kv_cache_tokens / LM_BLOCK;
  if (!e->w.embed) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "generate: open the engine with QVL_LOAD_ALL");
  if (fixed && blocks > fixed)
    return qvl_fail(&e->err, QVL_ERR_LIMIT, "generate: the request needs %lld tokens of KV cache, the engine has %lld",
                    (long long)blocks * LM_BLOCK, (long long)fixed * LM_BLOCK);
  if (e->lm && lm_blocks_total(e->lm) >= blocks) return QVL_OK;
  if (e->lm && lm_blocks_free(e->lm) != lm_blocks_total(e->lm))
    return qvl_fail(&e->err, QVL_ERR_LIMIT, "generate: the KV cache is in use and cannot grow to %lld blocks",
                    (long long)blocks);
  int64_t want = fixed ? fixed : blocks < 256 ? 256 : blocks;
  if (!fixed && e->lm && want < 2 * (int64_t)lm_blocks_total(e->lm)) want = 2 * (int64_t)lm_blocks_total(e->lm);
  if (want > INT32_MAX / LM_BLOCK - 1)
    return qvl_fail(&e->err, QVL_ERR_LIMIT, "generate: %lld KV blocks are more than one pool holds", (long long)want);
  lm_close(e->lm);
  e->lm = NULL;
  if (e->be->trim) e->be->trim(e->be); /* the old pool's memory back to the device before the larger one */
  int rc = lm_open(&e->lm, e->be, &e->cfg, &e->w, (int)want, &e->err);
  if (rc) lm_close(e->lm), e->lm = NULL; /* the next call tries again */
  return rc;
}

int qvl_engine_lm(qvl_engine *e, int64_t min_blocks, lm_model **out) {
  *out = NULL;
  int rc = engine_lm(e, min_blocks);
  if (!rc) *out = e->lm;
  return rc;
}

/* One prompt of a batch: the request and its sequence's state. */
typedef struct gen_seq {
  const int32_t *ids;
  int n_ids;
  const int32_t *grid;          /* [n_img][3] */
  int n_img;
  const float *pixels;          /* the images' pixel rows for the tower (host), */
  const void *dev_pixels;       /* or on the device (GPU preprocessing) */
  const qvl_sampling *s;
  qvl_vision_out vis;           /* the tower's outputs (prefill only) */
  lm_seq seq;
  qvl_sampler *sm;
  int32_t *pos;                 /* [3][n_ids] */
  int64_t delta;
  float *logits;                /* [vocab] when sampled on the host */
  int32_t next;                 /* the token to feed */
  int made, done, device_pick;  /* tokens generated; finished; greedy without penalties: argmax on the device */
} gen_seq;

static int is_stop(const qvl_sampling *s, int32_t id) {
  for (int i = 0; i < s->n_stop; i++)
    if (s->stop_ids[i] == id) return 1;
  return 0;
}

/* Everything that can refuse a request before any work: sizes, the context, penalties, ids, pads vs grids
 * (M-RoPE positions computed here). */
static int gen_check(qvl_engine *e, gen_seq *g, int i) {
  const qvl_text_config *t = &e->cfg.text;
  const qvl_sampling *s = g->s;
  if (g->n_ids < 1 || s->max_tokens < 1)
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG,
                    "generate: request %d needs at least one prompt token and max_tokens >= 1", i);
  if ((int64_t)g->n_ids + s->max_tokens > t->max_position)
    return qvl_fail(&e->err, QVL_ERR_LIMIT, "generate: %d prompt tokens + %d new exceed the context of %d", g->n_ids,
                    s->max_tokens, t->max_position);
  if (!(s->repetition_penalty >= 0) || !isfinite(s->repetition_penalty) || !isfinite(s->presence_penalty) ||
      !isfinite(s->frequency_penalty))
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "generate: penalties must be finite and repetition_penalty >= 0");
  for (int j = 0; j < g->n_ids; j++)
    if (g->ids[j] < 0 || g->ids[j] >= t->vocab)
      return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "generate: token %d has id %d outside the vocabulary (%d)", j,
                      g->ids[j], t->vocab);
  g->pos = malloc((size_t)g->n_ids * 3 * sizeof(int32_t));
  g->logits = malloc((size_t)t->vocab * sizeof(float));
  if (!g->pos || !g->logits || lm_seq_init(&g->seq, g->n_ids + s->max_tokens) ||
      qvl_sampler_open(&g->sm, t->vocab, s))
    return qvl_fail(&e->err, QVL_ERR_NOMEM, "generate: out of memory");
  qvl_sampler_prompt(g->sm, g->ids, g->n_ids);
  g->device_pick = s->temperature <= 0 && (s->repetition_penalty == 1 || s->repetition_penalty == 0) &&
                   s->presence_penalty == 0 && s->frequency_penalty == 0;
  return qvl_rope_index(g->pos, &g->delta, g->ids, g->n_ids, &e->cfg, g->grid, g->n_img, NULL, &e->err);
}

static void gen_free(qvl_engine *e, gen_seq *g) {
  lm_seq_free(e->lm, &g->seq);
  qvl_sampler_close(g->sm);
  qvl_vision_out_free(&g->vis);
  free(g->pos), free(g->logits);
}

/* The chunk of g's next step: the whole prompt, or the last token. */
static void gen_chunk(gen_seq *g, lm_chunk *c, int32_t *pos3) {
  memset(c, 0, sizeof *c);
  c->seq = &g->seq;
  if (g->seq.len == 0) {
    const qvl_vision_out *v = &g->vis; /* in the engine's buffers */
    c->ids = g->ids, c->n = g->n_ids, c->pos = g->pos;
    c->vision_dev = v->n ? v->dev[0] : NULL;
    c->deepstack_dev = v->n ? (const void *const *)v->dev + 1 : NULL;
    c->n_deepstack = v->n ? v->n - 1 : 0;
  } else {
    pos3[0] = pos3[1] = pos3[2] = (int32_t)(g->seq.len + g->delta);
    c->ids = &g->next, c->n = 1, c->pos = pos3, c->n_generated = 1;
  }
  if (g->device_pick) c->argmax = &g->next;
  else c->logits = g->logits;
}

typedef int (*gen_cb)(void *ud, int req, int32_t id);

/* After a step: g's token picked (or the device's argmax taken), reported, and whether g goes on. */
static void gen_accept(gen_seq *g, int i, gen_cb cb, void *ud) {
  if (!g->device_pick) g->next = qvl_sampler_pick(g->sm, g->logits);
  qvl_sampler_accept(g->sm, g->next);
  g->made++;
  if ((cb && cb(ud, i, g->next)) || is_stop(g->s, g->next) || g->made == g->s->max_tokens) g->done = 1;
}

enum { PREFILL_ROWS = 8192 }; /* prompts share a prefill step up to this many tokens */

/* Generation for n prompts: every check first, then prefills (the tower per prompt, prompts packed into steps up
 * to PREFILL_ROWS tokens), then decode steps over the running sequences until each stops. */
static int gen_run(qvl_engine *e, gen_seq *g, int n, gen_cb cb, void *ud) {
  int rc = QVL_OK;
  int64_t blocks = 0;
  for (int i = 0; i < n && !rc; i++) {
    rc = gen_check(e, &g[i], i);
    blocks += (g[i].n_ids + g[i].s->max_tokens + LM_BLOCK - 1) / LM_BLOCK;
  }
  if (!rc) rc = engine_lm(e, blocks);
  lm_chunk *c = calloc((size_t)n, sizeof *c);
  int32_t(*pos3)[3] = calloc((size_t)n, sizeof *pos3);
  int *who = calloc((size_t)n, sizeof *who);
  if (!rc && (!c || !pos3 || !who)) rc = qvl_fail(&e->err, QVL_ERR_NOMEM, "generate: out of memory");
  for (int i = 0; i < n && !rc;) { /* prefill */
    int k = 0, rows = 0;
    for (; i < n && (k == 0 || rows + g[i].n_ids <= PREFILL_ROWS); i++, k++) {
      if (g[i].n_img &&
          (rc = vision_pixels(e, g[i].grid, g[i].n_img, g[i].pixels, g[i].dev_pixels, 1, &g[i].vis)))
        break;
      gen_chunk(&g[i], &c[k], pos3[k]), who[k] = i, rows += g[i].n_ids;
    }
    if (!rc) rc = lm_step(e->lm, c, k, &e->err);
    for (int j = 0; j < k && !rc; j++) qvl_vision_out_free(&g[who[j]].vis), gen_accept(&g[who[j]], who[j], cb, ud);
  }
  while (!rc) { /* decode */
    int k = 0;
    for (int i = 0; i < n; i++)
      if (!g[i].done) gen_chunk(&g[i], &c[k], pos3[k]), who[k++] = i;
    if (!k) break;
    rc = lm_step(e->lm, c, k, &e->err);
    for (int j = 0; j < k && !rc; j++) gen_accept(&g[who[j]], who[j], cb, ud);
  }
  for (int i = 0; i < n; i++) gen_free(e, &g[i]);
  free(c), free(pos3), free(who);
  return rc;
}

int qvl_engine_prefill(qvl_engine *e, const int32_t *ids, int n, const int32_t *grid, int n_img, const float *pixels,
                       float *logits, int32_t *pos, int64_t *delta) {
  qvl_err_clear(&e->err);
  if (n < 1) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "prefill: empty prompt");
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = 1;
  gen_seq g = {.ids = ids, .n_ids = n, .grid = grid, .n_img = n_img, .pixels = pixels, .s = &s};
  int rc = gen_check(e, &g, 0);
  if (!rc) rc = engine_lm(e, (n + LM_BLOCK - 1) / LM_BLOCK);
  if (!rc && n_img) rc = vision_pixels(e, grid, n_img, pixels, NULL, 1, &g.vis);
  if (!rc) {
    lm_chunk c;
    gen_chunk(&g, &c, NULL);
    c.argmax = NULL, c.logits = logits, c.all_logits = 1;
    rc = lm_step(e->lm, &c, 1, &e->err);
  }
  if (!rc && pos) memcpy(pos, g.pos, (size_t)n * 3 * sizeof(int32_t));
  if (!rc && delta) *delta = g.delta;
  gen_free(e, &g);
  return rc;
}

/* The attention kernels the towers choose per shape class (heads, head dim, the longest sequence: <= 64 or its power
 * of two, the sequence count's power of two): the tower over k images of 2^L patches (grids 4 x 4 .. 128 x 128),
 * k = 1, 2, 4, .. while k <= 128 and k 2^L <= rows, meets every class of full-attention layers that passes of up
 * to `rows` patches can have and (Qwen2.5-VL) every class of window layers; the pixels are synthetic, one upload. */
static int tune_attention(qvl_engine *e, int64_t rows) {
  qvl_backend *be = e->be;
  const qvl_vision_config *v = &e->cfg.vision;
  int64_t row_len = (int64_t)v->in_channels * v->temporal_patch * v->patch * v->patch;
  int32_t *grid = malloc(128 * 3 * sizeof *grid);
  float *px = malloc((size_t)row_len * 4096 * sizeof *px);
  void *dev = NULL;
  int rc = grid && px ? be->alloc(be, &dev, (size_t)(rows * row_len) * be->elem_bytes) : QVL_ERR_NOMEM;
  if (!rc) {
    qvl_counter_fill(px, "tune attention pixels", 0, row_len * 4096, 0.0, 1.0);
    for (int64_t at = 0; !rc && at < rows; at += 4096) /* 4096 random rows, repeated */
      rc = be->upload_f32(be, (char *)dev + (size_t)(at * row_len) * be->elem_bytes, px,
                          (rows - at < 4096 ? rows - at : 4096) * row_len);
  }
  for (int L = 4; !rc && L <= 14 && ((int64_t)1 << L) <= rows; L++)
    for (int k = 1; !rc && k <= 128 && ((int64_t)k << L) <= rows; k *= 2) {
      for (int i = 0; i < k; i++) grid[3 * i] = 1, grid[3 * i + 1] = 1 << (L / 2), grid[3 * i + 2] = 1 << (L - L / 2);
      vis_input in = {grid, k, NULL, dev, 0, 1};
      rc = qvl_engine_vision_input(e, &in, NULL, NULL, NULL);
    }
  if (rc == QVL_ERR_NOMEM && !e->err.code) rc = qvl_fail(&e->err, rc, "tune: out of memory");
  if (dev) be->free(be, dev);
  free(grid), free(px);
  return rc;
}

/* A backend that times its GEMM kernels per row count (linear_record/linear_tune) makes those choices here, ahead:
 * the linears of the tower (one synthetic 16 x 16-patch image) for 1024 .. vision_rows rows, its attention classes
 * (tune_attention), then the linears of the language model (a synthetic 64-token prompt and one generated token)
 * for 1 .. lm_rows. */
int qvl_engine_tune(qvl_engine *e, int64_t vision_rows, int64_t lm_rows, int *n_tuned) {
  qvl_backend *be = e->be;
  int n = 0, rc = QVL_OK;
  *n_tuned = 0;
  qvl_err_clear(&e->err);
  if (!be || !be->linear_record || !be->linear_tune) return QVL_OK;
  if (e->w.patch_w && e->ws && vision_rows > 0) {
    const qvl_vision_config *v = &e->cfg.vision;
    int32_t grid[3] = {1, 16, 16};
    int64_t row_len = (int64_t)v->in_channels * v->temporal_patch * v->patch * v->patch, count = 256 * row_len;
    float *px = malloc((size_t)count * sizeof *px);
    if (!px) return qvl_fail(&e->err, QVL_ERR_NOMEM, "tune: out of memory");
    qvl_counter_fill(px, "tune pixels", 0, count, 0.0, 1.0);
    vis_input in = {grid, 1, px, NULL, 0, 1};
    be->linear_record(be);
    rc = qvl_engine_vision_input(e, &in, NULL, NULL, NULL);
    int rc2 = be->linear_tune(be, 1024, vision_rows, &n); /* ends the recording in any case */
    free(px);
    if (!rc) rc = rc2; /* the backend reported it in e->err */
    *n_tuned += n;
    if (!rc) rc = tune_attention(e, vision_rows);
  }
  if (!rc && lm_rows > 0) {
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = 100 + (i * 7919) % 20000; /* ordinary text tokens */
    qvl_sampling s = qvl_sampling_default();
    s.max_tokens = 2;
    be->linear_record(be);
    rc = qvl_generate_ids(e, ids, 64, NULL, &s, NULL, NULL);
    int rc2 = be->linear_tune(be, 1, lm_rows, &n);
    if (!rc) rc = rc2; /* the backend reported it in e->err */
    *n_tuned += n;
  }
  return rc;
}

qvl_sampling qvl_sampling_default(void) {
  qvl_sampling s = {0};
  s.max_tokens = 256;
  s.top_p = 1.0f;
  s.repetition_penalty = 1.0f;
  return s;
}

typedef struct one_cb {
  qvl_token_cb cb;
  void *ud;
} one_cb;

static int call_one(void *ud, int req, int32_t id) {
  one_cb *o = ud;
  (void)req;
  return o->cb ? o->cb(o->ud, id) : 0;
}

int qvl_generate_ids(qvl_engine *e, const int32_t *ids, int n_ids, const qvl_pixels *images, const qvl_sampling *s,
                     qvl_token_cb cb, void *ud) {
  if (!e || !ids || !s) return QVL_ERR_INVALID_ARG;
  qvl_err_clear(&e->err);
  gen_seq g = {.ids = ids, .n_ids = n_ids, .s = s};
  if (images) g.grid = images->grid_thw, g.n_img = images->n_images, g.pixels = images->rows, g.dev_pixels = images->dev_rows;
  one_cb o = {cb, ud};
  return gen_run(e, &g, 1, call_one, &o);
}

int qvl_generate_batch(qvl_engine *e, const qvl_request *r, int n, qvl_batch_cb cb, void *ud) {
  if (!e || (n && !r) || n < 0) return QVL_ERR_INVALID_ARG;
  qvl_err_clear(&e->err);
  gen_seq *g = calloc((size_t)(n ? n : 1), sizeof *g);
  if (!g) return qvl_fail(&e->err, QVL_ERR_NOMEM, "generate: out of memory");
  for (int i = 0; i < n; i++) {
    g[i].ids = r[i].ids, g[i].n_ids = r[i].ids ? r[i].n_ids : 0, g[i].s = &r[i].sampling;
    const qvl_pixels *px = r[i].images;
    if (px) g[i].grid = px->grid_thw, g[i].n_img = px->n_images, g[i].pixels = px->rows, g[i].dev_pixels = px->dev_rows;
  }
  int rc = n ? gen_run(e, g, n, cb, ud) : QVL_OK;
  free(g);
  return rc;
}

static void features_name(qvl_features *f) {
  snprintf(f->names[0], sizeof f->names[0], "features");
  for (int i = 1; i < f->out.n; i++) snprintf(f->names[i], sizeof f->names[i], "deepstack.%d", i - 1);
}

/* The caller's copy of features the tower left in the engine's buffers (dev stays for the language model). */
static int features_download(qvl_engine *e, const qvl_vision_out *dev, qvl_features **out) {
  qvl_backend *b = e->be;
  int64_t n = dev->rows * dev->cols;
  qvl_features *f = calloc(1, sizeof *f);
  int rc = f ? QVL_OK : qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory");
  if (f) f->out.n = dev->n, f->out.rows = dev->rows, f->out.cols = dev->cols;
  for (int l = 0; !rc && l < dev->n; l++)
    if (!(f->out.data[l] = malloc((size_t)n * sizeof(float))))
      rc = qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory for %lld features", (long long)n);
    else if ((rc = b->download_f32(b, f->out.data[l], dev->dev[l], n)))
      rc = qvl_fail(&e->err, rc, "encode: %s", b->err->msg);
  if (rc) {
    qvl_features_free(f);
    return rc;
  }
  features_name(f);
  *out = f;
  return QVL_OK;
}

int qvl_encode_pixels(qvl_engine *e, const qvl_pixels *px, qvl_features **out) {
  if (!out) return QVL_ERR_INVALID_ARG;
  *out = NULL;
  if (!e || !px || !px->grid_thw || (!px->rows && !px->dev_rows)) return QVL_ERR_INVALID_ARG;
  qvl_features *f = calloc(1, sizeof *f);
  if (!f) return qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory");
  int rc = vision_pixels(e, px->grid_thw, px->n_images, px->rows, px->dev_rows, 0, &f->out);
  if (rc) {
    qvl_features_free(f);
    return rc;
  }
  features_name(f);
  *out = f;
  return QVL_OK;
}

int qvl_features_count(const qvl_features *f) { return f ? f->out.n : 0; }

const float *qvl_features_data(const qvl_features *f, int i, int64_t *rows, int64_t *cols) {
  if (!f || i < 0 || i >= f->out.n) return NULL;
  if (rows) *rows = f->out.rows;
  if (cols) *cols = f->out.cols;
  return f->out.data[i];
}

const char *qvl_features_name(const qvl_features *f, int i) {
  return f && i >= 0 && i < f->out.n ? f->names[i] : NULL;
}

void qvl_features_free(qvl_features *f) {
  if (!f) return;
  qvl_vision_out_free(&f->out);
  free(f);
}

/* ---- language-model features ---------------------------------------------------------------------------------- */

struct qvl_hidden {
  int n, layer;
  int64_t cols;
  int *rows;       /* [n] tokens of each prompt */
  float **data;    /* [n] of [rows][cols] */
  qvl_features *f; /* the tower's outputs; NULL without images */
};

/* Everything that can refuse the prompts, before any device work: sizes, ids, pads vs images (M-RoPE positions
 * computed here, pos[i] [3][n_ids]); vis_at[i] = prompt i's first row of vision features. */
static int prompts_check(qvl_engine *e, const qvl_prompt *p, int n, const qvl_pixels *images, int32_t **pos,
                         int64_t *vis_at) {
  const qvl_config *c = &e->cfg;
  int img = 0, n_img = images ? images->n_images : 0;
  int64_t vis = 0;
  for (int i = 0; i < n; i++) {
    if (!p[i].ids || p[i].n_ids < 1 || p[i].n_images < 0)
      return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: prompt %d is empty (it needs at least one token)", i);
    if (p[i].n_ids > c->text.max_position)
      return qvl_fail(&e->err, QVL_ERR_LIMIT, "encode: prompt %d has %d tokens, the context holds %d", i, p[i].n_ids,
                      c->text.max_position);
    if (p[i].n_images > n_img - img)
      return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: prompt %d wants %d image(s) after the first %d, %d given",
                      i, p[i].n_images, img, n_img);
    for (int j = 0; j < p[i].n_ids; j++)
      if (p[i].ids[j] < 0 || p[i].ids[j] >= c->text.vocab)
        return qvl_fail(&e->err, QVL_ERR_INVALID_ARG,
                        "encode: prompt %d: token %d has id %d outside the vocabulary (%d)", i, j, p[i].ids[j],
                        c->text.vocab);
    const int32_t *grid = p[i].n_images ? images->grid_thw + 3 * img : NULL;
    qvl_err why = {0};
    int64_t delta;
    if (!(pos[i] = malloc((size_t)p[i].n_ids * 3 * sizeof(int32_t))))
      return qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory");
    int rc = qvl_rope_index(pos[i], &delta, p[i].ids, p[i].n_ids, c, grid, p[i].n_images, NULL, &why);
    if (rc) return qvl_fail(&e->err, rc, "encode: prompt %d: %s", i, why.msg);
    vis_at[i] = vis;
    for (int k = 0; k < p[i].n_images; k++, img++)
      vis += (int64_t)grid[3 * k] * grid[3 * k + 1] * grid[3 * k + 2] / (c->vision.merge * c->vision.merge);
  }
  if (img != n_img)
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: the prompts use %d image(s), %d given", img, n_img);
  return QVL_OK;
}

/* The prompts from `first` that share one step (up to PREFILL_ROWS tokens; at least one); *blocks their KV blocks. */
static int prompts_step(const qvl_prompt *p, int n, int first, int64_t *blocks) {
  int k = 0, rows = 0;
  *blocks = 0;
  for (; first + k < n && (k == 0 || rows + p[first + k].n_ids <= PREFILL_ROWS); k++) {
    rows += p[first + k].n_ids;
    *blocks += (p[first + k].n_ids + LM_BLOCK - 1) / LM_BLOCK;
  }
  return k;
}

/* The language model over the checked prompts, step by step; each step's sequences freed after it. v: the images'
 * features in the engine's buffers, or NULL. */
static int prompts_run(qvl_engine *e, const qvl_prompt *p, int n, int32_t *const *pos, const int64_t *vis_at,
                       const qvl_vision_out *v, qvl_hidden *h) {
  int64_t blocks, most = 0, H = e->cfg.text.hidden;
  for (int i = 0, k; i < n; i += k) {
    k = prompts_step(p, n, i, &blocks);
    most = blocks > most ? blocks : most;
  }
  int rc = engine_lm(e, most);
  lm_chunk *c = calloc((size_t)n, sizeof *c);
  lm_seq *seq = calloc((size_t)n, sizeof *seq);
  const void *(*ds)[QVL_MAX_LIST] = calloc((size_t)n, sizeof *ds);
  if (!rc && (!c || !seq || !ds)) rc = qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory");
  size_t row_bytes = (size_t)H * e->be->elem_bytes;
  for (int i = 0, k = 0; !rc && i < n; i += k) {
    k = prompts_step(p, n, i, &blocks);
    for (int j = 0; j < k && !rc; j++) {
      const qvl_prompt *q = &p[i + j];
      if ((rc = lm_seq_init(&seq[j], q->n_ids))) {
        rc = qvl_fail(&e->err, rc, "encode: out of memory");
        break;
      }
      c[j] = (lm_chunk){.seq = &seq[j], .ids = q->ids, .n = q->n_ids, .pos = pos[i + j], .hidden = h->data[i + j],
                        .hidden_layer = h->layer};
      if (!v || !q->n_images) continue;
      size_t at = (size_t)vis_at[i + j] * row_bytes; /* its rows of each level */
      for (int l = 1; l < v->n; l++) ds[j][l - 1] = (const char *)v->dev[l] + at;
      c[j].vision_dev = (const char *)v->dev[0] + at, c[j].deepstack_dev = ds[j], c[j].n_deepstack = v->n - 1;
    }
    if (!rc) rc = lm_step(e->lm, c, k, &e->err);
    for (int j = 0; j < k; j++) lm_seq_free(e->lm, &seq[j]);
  }
  free(c), free(seq), free(ds);
  return rc;
}

int qvl_encode_prompts(qvl_engine *e, const qvl_prompt *prompts, int n, const qvl_pixels *images, int layer,
                       qvl_hidden **out) {
  if (!out) return QVL_ERR_INVALID_ARG;
  *out = NULL;
  if (!e) return QVL_ERR_INVALID_ARG;
  qvl_err_clear(&e->err);
  int L = e->cfg.text.layers;
  if (layer < QVL_LAYER_LAST || layer > L)
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: layer %d is outside 0..%d (or QVL_LAYER_LAST)", layer, L);
  if (!prompts || n < 1) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: no prompts");
  if (images && (!images->grid_thw || (!images->rows && !images->dev_rows)))
    return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: images without grids or pixel rows");
  if (!e->w.embed) return qvl_fail(&e->err, QVL_ERR_INVALID_ARG, "encode: open the engine with QVL_LOAD_ALL");
  qvl_hidden *h = calloc(1, sizeof *h);
  int32_t **pos = calloc((size_t)n, sizeof *pos);
  int64_t *vis_at = calloc((size_t)n, sizeof *vis_at);
  int rc = h && pos && vis_at ? QVL_OK : qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory");
  if (!rc) {
    h->n = n, h->layer = layer == QVL_LAYER_LAST ? L : layer, h->cols = e->cfg.text.hidden;
    h->rows = calloc((size_t)n, sizeof *h->rows), h->data = calloc((size_t)n, sizeof *h->data);
    rc = h->rows && h->data ? prompts_check(e, prompts, n, images, pos, vis_at)
                            : qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory");
  }
  for (int i = 0; !rc && i < n; i++)
    if (!(h->data[i] = malloc((size_t)(prompts[i].n_ids * h->cols) * sizeof(float))))
      rc = qvl_fail(&e->err, QVL_ERR_NOMEM, "encode: out of memory for prompt %d's hidden states", i);
    else h->rows[i] = prompts[i].n_ids;
  qvl_vision_out dv = {0}; /* the features on the device, for the language model; h->f gets the caller's copy */
  int imgs = images && images->n_images;
  if (!rc && imgs)
    rc = vision_pixels(e, images->grid_thw, images->n_images, images->rows, images->dev_rows, 1, &dv);
  if (!rc && imgs) rc = features_download(e, &dv, &h->f);
  if (!rc) rc = prompts_run(e, prompts, n, pos, vis_at, imgs ? &dv : NULL, h);
  qvl_vision_out_free(&dv);
  for (int i = 0; pos && i < n; i++) free(pos[i]);
  free(pos), free(vis_at);
  if (rc) qvl_hidden_free(h);
  else *out = h;
  return rc;
}

int qvl_hidden_layer(const qvl_hidden *h) { return h ? h->layer : -1; }

const float *qvl_hidden_data(const qvl_hidden *h, int i, int64_t *rows, int64_t *cols) {
  if (!h || i < 0 || i >= h->n) return NULL;
  if (rows) *rows = h->rows[i];
  if (cols) *cols = h->cols;
  return h->data[i];
}

const qvl_features *qvl_hidden_features(const qvl_hidden *h) { return h ? h->f : NULL; }

void qvl_hidden_free(qvl_hidden *h) {
  if (!h) return;
  for (int i = 0; h->data && i < h->n; i++) free(h->data[i]);
  free(h->data), free(h->rows);
  qvl_features_free(h->f);
  free(h);
}
