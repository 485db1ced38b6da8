/* config.c - config.json and preprocessor_config.json (see config.h).
 *
 * Text fields are looked up in "text_config" first, then at the top level: released Qwen2.5-VL configs
 * keep them at the top, transformers >= 4.5x saves nest them (often duplicating them at the top, and
 * sometimes only partly), Qwen3-VL nests them. Rope settings come from "rope_parameters" (transformers
 * 5.x) or "rope_scaling" + "rope_theta". A JSON null counts as absent, as it does for transformers.
 * Every message is "<file>: <field path>: <what is wrong>".
 */
#include "io/config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* config.json files are a few KiB; the cap only stops a wrong path from reading a checkpoint. */
#define CONFIG_MAX_BYTES ((size_t)16 << 20)

/* ---- messages ----------------------------------------------------------------------------------- */

typedef struct ctx {
  const char *what; /* the file every message names */
  qvl_err *err;
} ctx;

__attribute__((format(printf, 4, 5)))
static int fail_at(const ctx *x, int code, const char *path, const char *fmt, ...) {
  char detail[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  return qvl_fail(x->err, code, "%s: %s: %s", x->what, path, detail);
}

static const char *type_name(const cJSON *it) {
  if (cJSON_IsString(it)) return "a string";
  if (cJSON_IsNumber(it)) return "a number";
  if (cJSON_IsBool(it)) return "a boolean";
  if (cJSON_IsArray(it)) return "an array";
  if (cJSON_IsObject(it)) return "an object";
  return "null";
}

static const char *errstr(int e, char *buf, size_t n) {
#ifdef _GNU_SOURCE
  return strerror_r(e, buf, n); /* the GNU variant returns the message */
#else
  return strerror_r(e, buf, n) == 0 ? buf : "unknown error";
#endif
}

/* ---- lookup --------------------------------------------------------------------------------------- */

/* Where a field is looked up: obj first (spelt prefix + key in messages), then fallback. */
typedef struct scope {
  const cJSON *obj, *fallback;
  const char *prefix, *fallback_prefix;
} scope;

typedef struct found {
  const cJSON *item; /* NULL when absent or null */
  char path[128];    /* where it was found, or where it was expected */
} found;

static const cJSON *get(const cJSON *obj, const char *key) {
  const cJSON *it = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
  return cJSON_IsNull(it) ? NULL : it;
}

static found lookup(const scope *s, const char *key) {
  found f = {get(s->obj, key), ""};
  const char *prefix = s->prefix;
  if (!f.item && s->fallback) {
    f.item = get(s->fallback, key);
    if (f.item) prefix = s->fallback_prefix;
  }
  snprintf(f.path, sizeof f.path, "%s%s", prefix, key);
  return f;
}

/* An object-valued field (absent is fine: *obj = NULL); sub gets its "path." prefix for messages. */
static int lookup_object(const ctx *x, const scope *s, const char *key, found *f, char *sub, size_t n) {
  *f = lookup(s, key);
  snprintf(sub, n, "%s.", f->path);
  if (f->item && !cJSON_IsObject(f->item))
    return fail_at(x, QVL_ERR_FORMAT, f->path, "expected an object, found %s", type_name(f->item));
  return QVL_OK;
}

/* ---- typed readers -------------------------------------------------------------------------------- */

#define REQUIRED INT_MIN   /* no default: the field defines tensor shapes */
#define SKIP (INT_MIN + 1) /* not read for this architecture; stays 0 */

/* JSON numbers are doubles: an integer field must hold an integral value in range. */
static int as_i64(const ctx *x, const char *path, const cJSON *it, double lo, double hi, int64_t *out) {
  if (!cJSON_IsNumber(it))
    return fail_at(x, QVL_ERR_FORMAT, path, "expected an integer, found %s", type_name(it));
  double v = it->valuedouble;
  if (v != floor(v)) return fail_at(x, QVL_ERR_FORMAT, path, "expected an integer, found %g", v);
  if (v < lo || v > hi)
    return fail_at(x, QVL_ERR_FORMAT, path, "%.17g is out of range [%.17g, %.17g]", v, lo, hi);
  *out = (int64_t)v;
  return QVL_OK;
}

static int as_int(const ctx *x, const char *path, const cJSON *it, int *out) {
  int64_t v = 0;
  int rc = as_i64(x, path, it, INT_MIN, INT_MAX, &v);
  *out = (int)v;
  return rc;
}

/* A size: positive when present; def when absent, or "missing" when def is REQUIRED. */
static int read_size(const ctx *x, const scope *s, const char *key, int def, int *out) {
  found f = lookup(s, key);
  if (!f.item) {
    if (def == REQUIRED) return fail_at(x, QVL_ERR_FORMAT, f.path, "missing");
    *out = def;
    return QVL_OK;
  }
  int rc = as_int(x, f.path, f.item, out);
  if (rc == QVL_OK && *out <= 0)
    return fail_at(x, QVL_ERR_FORMAT, f.path, "must be positive, found %d", *out);
  return rc;
}

/* A size with two accepted spellings (in_chans / in_channels); both present must agree. */
static int read_size2(const ctx *x, const scope *s, const char *key, const char *alt, int def, int *out) {
  if (!alt || !lookup(s, alt).item) return read_size(x, s, key, def, out);
  if (!lookup(s, key).item) return read_size(x, s, alt, def, out);
  int a = 0, b = 0, rc = read_size(x, s, key, def, &a);
  if (rc == QVL_OK) rc = read_size(x, s, alt, def, &b);
  if (rc == QVL_OK && a != b)
    return fail_at(x, QVL_ERR_FORMAT, lookup(s, alt).path, "%d disagrees with %s %d", b, lookup(s, key).path,
                   a);
  *out = a;
  return rc;
}

static int read_bool(const ctx *x, const scope *s, const char *key, int def, int *out, int *present) {
  found f = lookup(s, key);
  if (present) *present = f.item != NULL;
  if (!f.item) {
    *out = def;
    return QVL_OK;
  }
  if (!cJSON_IsBool(f.item))
    return fail_at(x, QVL_ERR_FORMAT, f.path, "expected true or false, found %s", type_name(f.item));
  *out = cJSON_IsTrue(f.item) ? 1 : 0;
  return QVL_OK;
}

/* A positive finite real (eps, rope theta, rescale factor). */
static int read_real(const ctx *x, const scope *s, const char *key, double def, double *out) {
  found f = lookup(s, key);
  if (!f.item) {
    *out = def;
    return QVL_OK;
  }
  if (!cJSON_IsNumber(f.item))
    return fail_at(x, QVL_ERR_FORMAT, f.path, "expected a number, found %s", type_name(f.item));
  *out = f.item->valuedouble;
  if (!(*out > 0) || !isfinite(*out))
    return fail_at(x, QVL_ERR_FORMAT, f.path, "must be positive and finite, found %g", *out);
  return QVL_OK;
}

static int read_str(const ctx *x, const scope *s, const char *key, const char *def, char *out, size_t cap) {
  found f = lookup(s, key);
  const char *v = def;
  if (f.item) {
    if (!cJSON_IsString(f.item))
      return fail_at(x, QVL_ERR_FORMAT, f.path, "expected a string, found %s", type_name(f.item));
    v = f.item->valuestring;
  }
  if (strlen(v) >= cap)
    return fail_at(x, QVL_ERR_FORMAT, f.path, "\"%.40s\" is longer than %zu characters", v, cap - 1);
  snprintf(out, cap, "%s", v);
  return QVL_OK;
}

/* An array of integers into out[cap]; def (n_def entries) when absent, "missing" when def is NULL. */
static int read_list(const ctx *x, const scope *s, const char *key, const int *def, int n_def, int *out,
                     int cap, int *n) {
  found f = lookup(s, key);
  if (!f.item) {
    if (!def) return fail_at(x, QVL_ERR_FORMAT, f.path, "missing");
    memcpy(out, def, (size_t)n_def * sizeof *out);
    *n = n_def;
    return QVL_OK;
  }
  if (!cJSON_IsArray(f.item))
    return fail_at(x, QVL_ERR_FORMAT, f.path, "expected an array, found %s", type_name(f.item));
  *n = cJSON_GetArraySize(f.item);
  if (*n > cap) return fail_at(x, QVL_ERR_FORMAT, f.path, "%d entries, at most %d", *n, cap);
  int i = 0;
  for (const cJSON *e = f.item->child; e; e = e->next, i++) {
    char path[160];
    snprintf(path, sizeof path, "%s[%d]", f.path, i);
    int rc = as_int(x, path, e, &out[i]);
    if (rc) return rc;
  }
  return QVL_OK;
}

/* ---- field tables --------------------------------------------------------------------------------- */

typedef struct int_field {
  const char *key, *alt; /* alt: a second accepted spelling */
  size_t off;            /* offsetof in the destination struct */
  int def25, def3;       /* per architecture: default, REQUIRED or SKIP */
} int_field;

#define V(m) offsetof(qvl_vision_config, m)
static const int_field vision_ints[] = {
  {"depth", NULL, V(depth), REQUIRED, REQUIRED},
  {"hidden_size", NULL, V(hidden), REQUIRED, REQUIRED},
  {"num_heads", NULL, V(heads), REQUIRED, REQUIRED},
  {"intermediate_size", NULL, V(intermediate), REQUIRED, REQUIRED},
  {"out_hidden_size", NULL, V(out_hidden), REQUIRED, REQUIRED},
  {"patch_size", NULL, V(patch), REQUIRED, REQUIRED},
  {"temporal_patch_size", NULL, V(temporal_patch), 2, 2},
  {"spatial_merge_size", NULL, V(merge), 2, 2},
  {"in_chans", "in_channels", V(in_channels), 3, 3},
  {"window_size", NULL, V(window_size), 112, SKIP},
  {"tokens_per_second", NULL, V(tokens_per_second), 2, SKIP},
  {"num_position_embeddings", NULL, V(num_position_embeddings), SKIP, 2304},
};
#undef V

#define T(m) offsetof(qvl_text_config, m)
static const int_field text_ints[] = {
  {"vocab_size", NULL, T(vocab), REQUIRED, REQUIRED},
  {"hidden_size", NULL, T(hidden), REQUIRED, REQUIRED},
  {"num_hidden_layers", NULL, T(layers), REQUIRED, REQUIRED},
  {"num_attention_heads", NULL, T(heads), REQUIRED, REQUIRED},
  {"num_key_value_heads", NULL, T(kv_heads), REQUIRED, REQUIRED},
  {"intermediate_size", NULL, T(intermediate), REQUIRED, REQUIRED},
  {"head_dim", NULL, T(head_dim), 0, 0}, /* 0: hidden / heads, derived in check_heads */
  {"max_position_embeddings", NULL, T(max_position), 128000, 262144},
};
#undef T

#define C(m) offsetof(qvl_config, m)
static const int_field token_ids[] = {
  {"image_token_id", NULL, C(image_token_id), 151655, 151655},
  {"video_token_id", NULL, C(video_token_id), 151656, 151656},
  {"vision_start_token_id", NULL, C(vision_start_token_id), 151652, 151652},
  {"vision_end_token_id", NULL, C(vision_end_token_id), 151653, 151653},
};
#undef C

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int read_sizes(const ctx *x, const scope *s, const int_field *t, size_t n, qvl_arch arch, void *dst) {
  for (size_t i = 0; i < n; i++) {
    int def = arch == QVL_ARCH_QWEN2_5_VL ? t[i].def25 : t[i].def3;
    if (def == SKIP) continue;
    int rc = read_size2(x, s, t[i].key, t[i].alt, def, (int *)((char *)dst + t[i].off));
    if (rc) return rc;
  }
  return QVL_OK;
}

/* ---- architecture ---------------------------------------------------------------------------------- */

static const struct {
  const char *cls, *type;
  qvl_arch arch;
} archs[] = {
  {"Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", QVL_ARCH_QWEN2_5_VL},
  {"Qwen3VLForConditionalGeneration", "qwen3_vl", QVL_ARCH_QWEN3_VL},
};

static int arch_index(const char *name, int by_type) {
  for (size_t i = 0; name && i < COUNT(archs); i++)
    if (strcmp(name, by_type ? archs[i].type : archs[i].cls) == 0) return (int)i;
  return -1;
}

/* architectures[0] and model_type as strings (NULL when absent). */
static int arch_names(const ctx *x, const cJSON *root, const char **cls, const char **type) {
  const cJSON *a = get(root, "architectures"), *t = get(root, "model_type");
  if (a && !cJSON_IsArray(a))
    return fail_at(x, QVL_ERR_FORMAT, "architectures", "expected an array, found %s", type_name(a));
  if (a && a->child && !cJSON_IsString(a->child))
    return fail_at(x, QVL_ERR_FORMAT, "architectures[0]", "expected a string, found %s", type_name(a->child));
  if (t && !cJSON_IsString(t))
    return fail_at(x, QVL_ERR_FORMAT, "model_type", "expected a string, found %s", type_name(t));
  *cls = a && a->child ? a->child->valuestring : NULL;
  *type = t ? t->valuestring : NULL;
  return QVL_OK;
}

/* architectures[0] decides; model_type is the fallback (fine-tunes rename the class). */
static int detect_arch(const ctx *x, const cJSON *root, qvl_config *c) {
  const char *cls = NULL, *type = NULL;
  int rc = arch_names(x, root, &cls, &type);
  if (rc) return rc;
  int k = arch_index(cls, 0), kt = arch_index(type, 1);
  if (k >= 0 && kt >= 0 && k != kt)
    return fail_at(x, QVL_ERR_FORMAT, "architectures[0]", "\"%s\" contradicts model_type \"%s\"", cls, type);
  if (k < 0) k = kt;
  if (k < 0 && !cls && !type)
    return fail_at(x, QVL_ERR_FORMAT, "architectures", "missing, and so is model_type");
  if (k < 0 && !cls)
    return fail_at(x, QVL_ERR_UNSUPPORTED, "model_type",
                   "unsupported architecture \"%s\"; qvl runs qwen2_5_vl and qwen3_vl", type);
  if (k < 0)
    return fail_at(x, QVL_ERR_UNSUPPORTED, "architectures[0]",
                   "unsupported architecture \"%s\" (model_type \"%s\"); qvl runs qwen2_5_vl and qwen3_vl",
                   cls, type ? type : "absent");
  c->arch = archs[k].arch;
  snprintf(c->arch_name, sizeof c->arch_name, "%s", archs[k].type);
  return QVL_OK;
}

/* ---- vision ---------------------------------------------------------------------------------------- */

/* Block indexes (full-attention blocks, DeepStack taps): within [0, depth), strictly increasing. */
static int check_indexes(const ctx *x, const char *key, const int *idx, int n, int depth) {
  for (int i = 0; i < n; i++) {
    char path[96];
    snprintf(path, sizeof path, "vision_config.%s[%d]", key, i);
    if (idx[i] < 0 || idx[i] >= depth)
      return fail_at(x, QVL_ERR_FORMAT, path, "%d is out of range [0, %d) (depth)", idx[i], depth);
    if (i > 0 && idx[i] <= idx[i - 1])
      return fail_at(x, QVL_ERR_FORMAT, path, "%d does not increase on the previous entry %d", idx[i],
                     idx[i - 1]);
  }
  return QVL_OK;
}

static int check_vision(const ctx *x, qvl_arch arch, qvl_vision_config *v) {
  if (v->hidden % v->heads != 0)
    return fail_at(x, QVL_ERR_FORMAT, "vision_config.num_heads", "%d does not divide hidden_size %d",
                   v->heads, v->hidden);
  v->head_dim = v->hidden / v->heads;
  if (arch == QVL_ARCH_QWEN2_5_VL) {
    /* get_window_index works in merged-patch units: window_size / (patch * merge) must be >= 1. */
    if (v->window_size < v->patch * v->merge)
      return fail_at(x, QVL_ERR_FORMAT, "vision_config.window_size",
                     "%d is smaller than patch_size * spatial_merge_size = %d", v->window_size,
                     v->patch * v->merge);
    return check_indexes(x, "fullatt_block_indexes", v->fullatt, v->n_fullatt, v->depth);
  }
  int side = (int)lround(sqrt((double)v->num_position_embeddings));
  if (side * side != v->num_position_embeddings)
    return fail_at(x, QVL_ERR_FORMAT, "vision_config.num_position_embeddings",
                   "%d is not a perfect square (the table is a square grid)", v->num_position_embeddings);
  return check_indexes(x, "deepstack_visual_indexes", v->deepstack, v->n_deepstack, v->depth);
}

static int read_vision(const ctx *x, const cJSON *root, qvl_arch arch, qvl_vision_config *v) {
  scope s = {get(root, "vision_config"), NULL, "vision_config.", NULL};
  if (!s.obj) return fail_at(x, QVL_ERR_FORMAT, "vision_config", "missing");
  if (!cJSON_IsObject(s.obj))
    return fail_at(x, QVL_ERR_FORMAT, "vision_config", "expected an object, found %s", type_name(s.obj));
  int rc = read_sizes(x, &s, vision_ints, COUNT(vision_ints), arch, v);
  int q25 = arch == QVL_ARCH_QWEN2_5_VL;
  if (!rc)
    rc = read_str(x, &s, "hidden_act", q25 ? "silu" : "gelu_pytorch_tanh", v->hidden_act,
                  sizeof v->hidden_act);
  static const int fullatt_default[] = {7, 15, 23, 31}; /* Qwen2_5_VLVisionConfig's default */
  if (!rc && q25)
    rc = read_list(x, &s, "fullatt_block_indexes", fullatt_default, 4, v->fullatt, QVL_MAX_LIST,
                   &v->n_fullatt);
  /* DeepStack taps decide how many merger weights the checkpoint has: no default. */
  if (!rc && !q25)
    rc = read_list(x, &s, "deepstack_visual_indexes", NULL, 0, v->deepstack, QVL_MAX_LIST, &v->n_deepstack);
  v->norm_eps = 1e-6f; /* the modeling code's constant, not in config.json */
  return rc ? rc : check_vision(x, arch, v);
}

/* ---- text ----------------------------------------------------------------------------------------- */

static scope text_scope(const cJSON *root) {
  const cJSON *tc = get(root, "text_config");
  if (tc) return (scope){tc, root, "text_config.", ""};
  return (scope){root, NULL, "", NULL};
}

/* Only plain M-RoPE is implemented; a scaled variant (yarn, dynamic) would silently change the angles. */
static int check_rope_type(const ctx *x, const scope *rs) {
  static const char *const keys[] = {"rope_type", "type"};
  for (size_t i = 0; i < COUNT(keys); i++) {
    found f = lookup(rs, keys[i]);
    if (!f.item) continue;
    if (!cJSON_IsString(f.item))
      return fail_at(x, QVL_ERR_FORMAT, f.path, "expected a string, found %s", type_name(f.item));
    const char *t = f.item->valuestring;
    if (strcmp(t, "default") != 0 && strcmp(t, "mrope") != 0)
      return fail_at(x, QVL_ERR_UNSUPPORTED, f.path, "\"%s\" is not supported (only plain M-RoPE)", t);
  }
  return QVL_OK;
}

/* Needs head_dim: the three sections split its half (one frequency per pair of dimensions). */
static int read_mrope(const ctx *x, const scope *rs, qvl_text_config *t) {
  int sec[QVL_MAX_LIST], n = 0;
  int rc = read_list(x, rs, "mrope_section", NULL, 0, sec, QVL_MAX_LIST, &n);
  const char *path = lookup(rs, "mrope_section").path;
  if (!rc && n != 3) return fail_at(x, QVL_ERR_FORMAT, path, "expected 3 entries (t, h, w), found %d", n);
  if (!rc && (sec[0] < 0 || sec[1] < 0 || sec[2] < 0 || 2 * (sec[0] + sec[1] + sec[2]) != t->head_dim))
    return fail_at(x, QVL_ERR_FORMAT, path, "[%d, %d, %d] must be non-negative and sum to head_dim / 2 = %d",
                   sec[0], sec[1], sec[2], t->head_dim / 2);
  if (!rc) memcpy(t->mrope_section, sec, sizeof t->mrope_section);
  return rc;
}

static int read_rope(const ctx *x, const scope *s, qvl_arch arch, qvl_text_config *t) {
  found r;
  char prefix[160];
  int rc = lookup_object(x, s, "rope_parameters", &r, prefix, sizeof prefix);
  if (!rc && !r.item) rc = lookup_object(x, s, "rope_scaling", &r, prefix, sizeof prefix);
  if (rc) return rc;
  scope rs = {r.item, NULL, prefix, NULL};
  rc = check_rope_type(x, &rs);
  /* transformers 5.x moved rope_theta into rope_parameters. */
  const scope *theta_at = lookup(&rs, "rope_theta").item ? &rs : s;
  if (!rc) rc = read_real(x, theta_at, "rope_theta", arch == QVL_ARCH_QWEN2_5_VL ? 1e6 : 5e6, &t->rope_theta);
  if (!rc) rc = read_mrope(x, &rs, t);
  if (!rc)
    rc = read_bool(x, &rs, "mrope_interleaved", arch == QVL_ARCH_QWEN3_VL, &t->mrope_interleaved, NULL);
  return rc;
}

/* Written at the top level, in text_config, or both; when both, they must agree. */
static int read_tie(const ctx *x, const cJSON *root, qvl_text_config *t) {
  scope top = {root, NULL, "", NULL}, nested = {get(root, "text_config"), NULL, "text_config.", NULL};
  int a = 0, b = 0, has_a = 0, has_b = 0;
  int rc = read_bool(x, &top, "tie_word_embeddings", 0, &a, &has_a);
  if (!rc) rc = read_bool(x, &nested, "tie_word_embeddings", 0, &b, &has_b);
  if (!rc && has_a && has_b && a != b)
    return fail_at(x, QVL_ERR_FORMAT, "tie_word_embeddings",
                   "%s disagrees with text_config.tie_word_embeddings %s", a ? "true" : "false",
                   b ? "true" : "false");
  t->tie_embeddings = has_a ? a : b;
  return rc;
}

static int check_heads(const ctx *x, const scope *s, qvl_arch arch, qvl_text_config *t) {
  int derived = t->hidden / t->heads;
  if (t->head_dim == 0 || arch == QVL_ARCH_QWEN2_5_VL) {
    /* Qwen2.5-VL always uses hidden / heads; Qwen3-VL does when head_dim is absent. */
    if (t->hidden % t->heads != 0)
      return fail_at(x, QVL_ERR_FORMAT, lookup(s, "num_attention_heads").path,
                     "%d does not divide hidden_size %d", t->heads, t->hidden);
    if (t->head_dim != 0 && t->head_dim != derived)
      return fail_at(x, QVL_ERR_FORMAT, lookup(s, "head_dim").path,
                     "%d differs from hidden_size / num_attention_heads = %d", t->head_dim, derived);
    t->head_dim = derived;
  }
  if (t->heads % t->kv_heads != 0)
    return fail_at(x, QVL_ERR_FORMAT, lookup(s, "num_key_value_heads").path,
                   "%d does not divide num_attention_heads %d", t->kv_heads, t->heads);
  return QVL_OK;
}

static int read_text(const ctx *x, const cJSON *root, qvl_arch arch, qvl_text_config *t) {
  const cJSON *tc = get(root, "text_config");
  if (tc && !cJSON_IsObject(tc))
    return fail_at(x, QVL_ERR_FORMAT, "text_config", "expected an object, found %s", type_name(tc));
  scope s = text_scope(root);
  int rc = read_sizes(x, &s, text_ints, COUNT(text_ints), arch, t);
  if (!rc) rc = check_heads(x, &s, arch, t);
  double eps = 0;
  if (!rc) rc = read_real(x, &s, "rms_norm_eps", 1e-6, &eps);
  t->rms_eps = (float)eps;
  if (!rc) rc = read_str(x, &s, "hidden_act", "silu", t->hidden_act, sizeof t->hidden_act);
  t->attention_bias = arch == QVL_ARCH_QWEN2_5_VL; /* Qwen2 decoders always have q/k/v bias */
  if (!rc && arch == QVL_ARCH_QWEN3_VL) rc = read_bool(x, &s, "attention_bias", 0, &t->attention_bias, NULL);
  if (!rc) rc = read_rope(x, &s, arch, t);
  return rc ? rc : read_tie(x, root, t);
}

/* ---- top level -------------------------------------------------------------------------------------- */

static int read_token_ids(const ctx *x, const cJSON *root, qvl_config *c) {
  for (size_t i = 0; i < COUNT(token_ids); i++) {
    found f = lookup(&(scope){root, NULL, "", NULL}, token_ids[i].key);
    int *id = (int *)((char *)c + token_ids[i].off);
    *id = token_ids[i].def25;
    int rc = f.item ? as_int(x, f.path, f.item, id) : QVL_OK;
    if (rc) return rc;
    if (*id < 0 || *id >= c->text.vocab)
      return fail_at(x, QVL_ERR_FORMAT, f.path, "%d is outside the vocabulary [0, %d)", *id, c->text.vocab);
  }
  return QVL_OK;
}

/* The released Qwen3-VL configs write "dtype" only inside text_config. */
static int read_dtype(const ctx *x, const cJSON *root, qvl_config *c) {
  const scope where[] = {{root, NULL, "", NULL}, {get(root, "text_config"), NULL, "text_config.", NULL}};
  static const char *const keys[] = {"torch_dtype", "dtype"};
  for (size_t w = 0; w < COUNT(where); w++)
    for (size_t k = 0; k < COUNT(keys); k++)
      if (lookup(&where[w], keys[k]).item)
        return read_str(x, &where[w], keys[k], "", c->dtype, sizeof c->dtype);
  return QVL_OK;
}

static int check_cross(const ctx *x, const qvl_config *c) {
  if (c->vision.out_hidden != c->text.hidden)
    return fail_at(x, QVL_ERR_FORMAT, "vision_config.out_hidden_size",
                   "%d differs from the text hidden_size %d", c->vision.out_hidden, c->text.hidden);
  /* DeepStack feature i is added after decoder layer i. */
  if (c->vision.n_deepstack > c->text.layers)
    return fail_at(x, QVL_ERR_FORMAT, "vision_config.deepstack_visual_indexes",
                   "%d entries but the text model has only %d layers", c->vision.n_deepstack, c->text.layers);
  return QVL_OK;
}

static int read_root(const ctx *x, const cJSON *root, qvl_config *c) {
  int rc = detect_arch(x, root, c);
  if (!rc) rc = read_vision(x, root, c->arch, &c->vision);
  if (!rc) rc = read_text(x, root, c->arch, &c->text);
  if (!rc) rc = read_token_ids(x, root, c);
  if (!rc) rc = read_dtype(x, root, c);
  return rc ? rc : check_cross(x, c);
}

/* ---- JSON text ------------------------------------------------------------------------------------- */

/* What a cut-off text stops inside, or NULL when the text is wrong rather than short: it must end inside a
 * string or an unclosed object or array, and cJSON's failure must lie in the last token (cJSON reports an
 * unterminated string or literal by its first byte, a premature end by the last byte). */
static const char *truncated(const char *s, size_t len, size_t pos) {
  int depth = 0, in_str = 0;
  size_t tail = 0; /* where the last token starts */
  for (size_t i = 0; i < len && s[i]; i++) {
    char ch = s[i];
    if (in_str && ch == '\\') {
      i++; /* skip the escaped character */
    } else if (ch == '"') {
      in_str = !in_str;
      if (in_str) tail = i;
    } else if (!in_str) {
      depth += (ch == '{' || ch == '[') - (ch == '}' || ch == ']');
      if (strchr(" \t\r\n,:[]{}", ch)) tail = i + 1;
    }
  }
  if (!in_str && depth <= 0) return NULL;
  if (pos + 1 < len && pos < tail) return NULL; /* the error lies before the last token */
  return in_str ? "a string" : "an unclosed object or array";
}

static int blank(const char *s, size_t len) {
  for (size_t i = 0; i < len && s[i]; i++)
    if (!isspace((unsigned char)s[i])) return 0;
  return 1;
}

static int json_error(const ctx *x, const char *json, size_t len, size_t pos, const char *problem) {
  int line = 1, col = 1;
  for (size_t i = 0; i < pos && i < len; i++, col++)
    if (json[i] == '\n') line++, col = 0;
  return qvl_fail(x->err, QVL_ERR_FORMAT, "%s: %s at line %d, column %d (byte %zu)", x->what, problem, line,
                  col, pos);
}

static int parse_json(const ctx *x, const char *json, size_t len, cJSON **out) {
  const char *end = NULL;
  *out = NULL;
  if (blank(json, len))
    return qvl_fail(x->err, QVL_ERR_FORMAT, "%s: empty document, expected a JSON object", x->what);
  cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  size_t pos = end ? (size_t)(end - json) : 0;
  if (!root) {
    const char *inside = truncated(json, len, pos);
    if (inside)
      return qvl_fail(x->err, QVL_ERR_FORMAT, "%s: incomplete JSON: the text ends after %zu bytes inside %s",
                      x->what, len, inside);
    return json_error(x, json, len, pos, "malformed JSON");
  }
  while (pos < len && isspace((unsigned char)json[pos])) pos++;
  if (pos < len && json[pos] != '\0') {
    cJSON_Delete(root);
    return json_error(x, json, len, pos, "malformed JSON: text after the document");
  }
  if (!cJSON_IsObject(root)) {
    const char *t = type_name(root);
    cJSON_Delete(root);
    return qvl_fail(x->err, QVL_ERR_FORMAT, "%s: the document is %s, expected an object", x->what, t);
  }
  *out = root;
  return QVL_OK;
}

/* ---- public ----------------------------------------------------------------------------------------- */

int qvl_config_parse(qvl_config *c, const char *json, size_t len, const char *what, qvl_err *err) {
  if (!c || (!json && len)) return qvl_fail(err, QVL_ERR_INVALID_ARG, "qvl_config_parse: NULL argument");
  ctx x = {what ? what : "config.json", err};
  cJSON *root = NULL;
  memset(c, 0, sizeof *c);
  int rc = parse_json(&x, json, len, &root);
  if (!rc) rc = read_root(&x, root, c);
  cJSON_Delete(root);
  if (rc) memset(c, 0, sizeof *c);
  return rc;
}

int qvl_config_load(qvl_config *c, const char *path, qvl_err *err) {
  if (!c || !path) return qvl_fail(err, QVL_ERR_INVALID_ARG, "qvl_config_load: NULL argument");
  char *text = NULL;
  size_t len = 0;
  int rc = qvl_read_file(path, &text, &len, CONFIG_MAX_BYTES, err);
  if (!rc) rc = qvl_config_parse(c, text, len, path, err);
  free(text);
  return rc;
}

/* ---- preprocessor_config.json ------------------------------------------------------------------------ */

/* Spec §1.1: the released preprocessor_config.json values, used when a checkpoint ships none. */
static void preproc_defaults(qvl_preproc_config *p, qvl_arch arch) {
  static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  int q25 = arch == QVL_ARCH_QWEN2_5_VL;
  memset(p, 0, sizeof *p);
  p->min_pixels = q25 ? 3136 : 65536;
  p->max_pixels = q25 ? 12845056 : 16777216;
  p->patch = q25 ? 14 : 16;
  p->temporal_patch = 2;
  p->merge = 2;
  for (int i = 0; i < 3; i++) {
    p->mean[i] = q25 ? clip_mean[i] : 0.5f;
    p->std[i] = q25 ? clip_std[i] : 0.5f;
  }
  p->rescale = 1.0 / 255.0;
  p->do_resize = p->do_rescale = p->do_normalize = p->do_convert_rgb = 1;
  p->resample = 3; /* PIL BICUBIC */
}

/* min_pixels at the top level overrides size.shortest_edge (as in Qwen2VLImageProcessor). */
static int read_pixels(const ctx *x, const scope *top, const scope *size, const char *key, const char *edge,
                       int64_t *out) {
  found f = lookup(top, key);
  if (!f.item) f = lookup(size, edge);
  if (!f.item) return QVL_OK;
  int rc = as_i64(x, f.path, f.item, 1, 9007199254740992.0, out); /* 2^53: exact in a double */
  return rc;
}

static int read_triple(const ctx *x, const scope *s, const char *key, float out[3], int positive) {
  found f = lookup(s, key);
  if (!f.item) return QVL_OK;
  if (!cJSON_IsArray(f.item) || cJSON_GetArraySize(f.item) != 3)
    return fail_at(x, QVL_ERR_FORMAT, f.path, "expected an array of 3 numbers, found %s", type_name(f.item));
  int i = 0;
  for (const cJSON *e = f.item->child; e; e = e->next, i++) {
    if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || (positive && !(e->valuedouble > 0)))
      return fail_at(x, QVL_ERR_FORMAT, f.path, "entry %d must be a %snumber", i,
                     positive ? "positive " : "");
    out[i] = (float)e->valuedouble;
  }
  return QVL_OK;
}

static int read_preproc_flags(const ctx *x, const scope *s, qvl_preproc_config *p) {
  static const struct {
    const char *key;
    size_t off;
  } flags[] = {
      {"do_resize", offsetof(qvl_preproc_config, do_resize)},
      {"do_rescale", offsetof(qvl_preproc_config, do_rescale)},
      {"do_normalize", offsetof(qvl_preproc_config, do_normalize)},
      {"do_convert_rgb", offsetof(qvl_preproc_config, do_convert_rgb)},
  };
  for (size_t i = 0; i < COUNT(flags); i++) {
    int *v = (int *)((char *)p + flags[i].off);
    int rc = read_bool(x, s, flags[i].key, *v, v, NULL);
    if (rc) return rc;
  }
  found f = lookup(s, "resample");
  int rc = f.item ? as_int(x, f.path, f.item, &p->resample) : QVL_OK;
  if (!rc && (p->resample < 0 || p->resample > 5))
    return fail_at(x, QVL_ERR_FORMAT, f.path, "%d is not a PIL resampling filter (0..5)", p->resample);
  return rc;
}

static int read_preproc(const ctx *x, const cJSON *root, qvl_preproc_config *p) {
  scope top = {root, NULL, "", NULL};
  found sz;
  char prefix[160];
  int rc = lookup_object(x, &top, "size", &sz, prefix, sizeof prefix);
  scope size = {sz.item, NULL, prefix, NULL};
  if (!rc) rc = read_pixels(x, &top, &size, "min_pixels", "shortest_edge", &p->min_pixels);
  if (!rc) rc = read_pixels(x, &top, &size, "max_pixels", "longest_edge", &p->max_pixels);
  if (!rc && p->max_pixels < p->min_pixels)
    return fail_at(x, QVL_ERR_FORMAT, "max_pixels", "%lld is below min_pixels %lld", (long long)p->max_pixels,
                   (long long)p->min_pixels);
  if (!rc) rc = read_size(x, &top, "patch_size", p->patch, &p->patch);
  if (!rc) rc = read_size(x, &top, "temporal_patch_size", p->temporal_patch, &p->temporal_patch);
  if (!rc) rc = read_size(x, &top, "merge_size", p->merge, &p->merge);
  if (!rc) rc = read_triple(x, &top, "image_mean", p->mean, 0);
  if (!rc) rc = read_triple(x, &top, "image_std", p->std, 1);
  if (!rc) rc = read_real(x, &top, "rescale_factor", p->rescale, &p->rescale);
  return rc ? rc : read_preproc_flags(x, &top, p);
}

int qvl_preproc_load(qvl_preproc_config *p, qvl_arch arch, const char *path, qvl_err *err) {
  if (!p || !path) return qvl_fail(err, QVL_ERR_INVALID_ARG, "qvl_preproc_load: NULL argument");
  if (arch != QVL_ARCH_QWEN2_5_VL && arch != QVL_ARCH_QWEN3_VL)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "qvl_preproc_load: unknown architecture %d", (int)arch);
  preproc_defaults(p, arch);
  struct stat st;
  if (stat(path, &st) != 0 && errno == ENOENT) return QVL_OK; /* absent: the model's defaults */
  ctx x = {path, err};
  char *text = NULL;
  size_t len = 0;
  cJSON *root = NULL;
  int rc = qvl_read_file(path, &text, &len, CONFIG_MAX_BYTES, err);
  if (!rc) rc = parse_json(&x, text, len, &root);
  free(text);
  if (!rc) rc = read_preproc(&x, root, p);
  cJSON_Delete(root);
  if (rc)
    preproc_defaults(p, arch);
  else
    p->present = 1;
  return rc;
}

/* ---- files ------------------------------------------------------------------------------------------- */

/* Reads until EOF, stopping once past max_bytes (a wrong path may name a checkpoint or a pipe). */
static int read_stream(FILE *f, const char *path, size_t max_bytes, char **out, size_t *len, qvl_err *err) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1), eb[128];
  for (;;) {
    if (!buf) return qvl_fail(err, QVL_ERR_NOMEM, "%s: out of memory after %zu bytes", path, n);
    size_t want = cap - n, got = fread(buf + n, 1, want, f);
    n += got;
    if (n > max_bytes || got < want) break; /* too large, or a short read: end of file or an error */
    char *nb = cap <= (SIZE_MAX - 1) / 2 ? realloc(buf, 2 * cap + 1) : NULL;
    if (!nb) free(buf);
    buf = nb, cap *= 2;
  }
  int rc = QVL_OK;
  if (n > max_bytes)
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: too large (over %zu bytes)", path, max_bytes);
  else if (ferror(f))
    rc = qvl_fail(err, QVL_ERR_IO, "%s: read error: %s", path, errstr(errno, eb, sizeof eb));
  if (rc) {
    free(buf);
    return rc;
  }
  buf[n] = '\0';
  *out = buf;
  if (len) *len = n;
  return QVL_OK;
}

int qvl_read_file(const char *path, char **out, size_t *len, size_t max_bytes, qvl_err *err) {
  if (!path || !out) return qvl_fail(err, QVL_ERR_INVALID_ARG, "qvl_read_file: NULL argument");
  *out = NULL;
  if (len) *len = 0;
  FILE *f = fopen(path, "rb");
  char eb[128];
  if (!f) return qvl_fail(err, QVL_ERR_IO, "%s: cannot open: %s", path, errstr(errno, eb, sizeof eb));
  int rc = read_stream(f, path, max_bytes, out, len, err);
  fclose(f);
  return rc;
}
