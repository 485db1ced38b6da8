/* test_config.c - config.json / preprocessor_config.json parsing: the shipped configs, the three layouts
 * found in the wild, and one distinct message (file + field path) per kind of error. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"

/* ---- helpers -------------------------------------------------------------------------------------- */

static cJSON *load_json(const char *rel) {
  char *text = NULL;
  size_t len = 0;
  qvl_err err = {0};
  if (qvl_read_file(tu_path(rel), &text, &len, 1 << 20, &err) != QVL_OK) fail_msg("%s", err.msg);
  cJSON *doc = cJSON_ParseWithLength(text, len);
  free(text);
  if (!doc) fail_msg("cannot parse %s", rel);
  return doc;
}

/* Serializes doc and runs the parser on it, as if it were config.json. */
static int parse_doc(const cJSON *doc, qvl_config *c, qvl_err *err) {
  char *text = cJSON_PrintUnformatted(doc);
  assert_non_null(text);
  qvl_err_clear(err);
  int rc = qvl_config_parse(c, text, strlen(text), "config.json", err);
  free(text);
  return rc;
}

static void parse_ok(const cJSON *doc, qvl_config *c) {
  qvl_err err;
  if (parse_doc(doc, c, &err) != QVL_OK) fail_msg("unexpected failure: %s", err.msg);
}

/* The object holding the last component of a dotted path, and that component. */
static cJSON *parent_of(cJSON *doc, const char *path, char *key, size_t n) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  cJSON *obj = doc;
  char *part = buf, *dot;
  while ((dot = strchr(part, '.'))) {
    *dot = '\0';
    obj = cJSON_GetObjectItemCaseSensitive(obj, part);
    if (!cJSON_IsObject(obj)) fail_msg("test path %s: %s is not an object", path, part);
    part = dot + 1;
  }
  snprintf(key, n, "%s", part);
  return obj;
}

static void del_path(cJSON *doc, const char *path) {
  char key[256];
  cJSON *obj = parent_of(doc, path, key, sizeof key);
  if (!cJSON_GetObjectItemCaseSensitive(obj, key)) fail_msg("test path %s is not in the document", path);
  cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
}

/* Sets path to the JSON value written in value (added when absent). */
static void set_path(cJSON *doc, const char *path, const char *value) {
  char key[256];
  cJSON *obj = parent_of(doc, path, key, sizeof key), *v = cJSON_Parse(value);
  if (!v) fail_msg("test value %s does not parse", value);
  if (cJSON_GetObjectItemCaseSensitive(obj, key))
    cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
  else
    cJSON_AddItemToObject(obj, key, v);
}

/* Moves key from one object to another (keep: leave a copy behind, as transformers 4.5x saves do). */
static void move_key(cJSON *from, cJSON *to, const char *key, int keep) {
  cJSON *it = cJSON_GetObjectItemCaseSensitive(from, key);
  if (!it) fail_msg("test key %s is not in the document", key);
  cJSON_AddItemToObject(to, key, keep ? cJSON_Duplicate(it, 1) : cJSON_DetachItemFromObject(from, key));
}

/* Parsing fails with code and a one-line message naming config.json and containing both needles. */
static void expect_fail(const cJSON *doc, int code, const char *needle1, const char *needle2) {
  qvl_config c;
  qvl_err err;
  int rc = parse_doc(doc, &c, &err);
  if (rc != code) fail_msg("expected %s, got %s (%s)", qvl_status_name(code), qvl_status_name(rc), err.msg);
  assert_int_equal(err.code, code);
  assert_null(strchr(err.msg, '\n'));
  tu_assert_msg_has(err.msg, "config.json: ", needle1);
  if (needle2) tu_assert_msg_has(err.msg, needle2, NULL);
  qvl_config zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&c, &zero, sizeof c); /* nothing half-filled is left behind */
}

/* Applies one edit (path = value, or delete when value is NULL) to a fresh copy of rel and expects code. */
static void expect_edit_fails(const char *rel, const char *path, const char *value, int code,
                              const char *needle1, const char *needle2) {
  cJSON *doc = load_json(rel);
  if (value)
    set_path(doc, path, value);
  else
    del_path(doc, path);
  expect_fail(doc, code, needle1, needle2);
  cJSON_Delete(doc);
}

static void expect_text_fails(const char *text, const char *needle1, const char *needle2) {
  qvl_config c;
  qvl_err err = {0};
  assert_int_equal(qvl_config_parse(&c, text, strlen(text), "config.json", &err), QVL_ERR_FORMAT);
  assert_null(strchr(err.msg, '\n'));
  tu_assert_msg_has(err.msg, "config.json: ", needle1);
  if (needle2) tu_assert_msg_has(err.msg, needle2, NULL);
}

#define Q25_7B "configs/Qwen2.5-VL-7B-Instruct/config.json"
#define Q3_4B "configs/Qwen3-VL-4B-Instruct/config.json"

/* ---- the shipped configs ---------------------------------------------------------------------------- */

typedef struct expect {
  const char *dir; /* relative to the source root */
  qvl_arch arch;
  int v_depth, v_hidden, v_heads, v_inter, v_out, v_patch;
  int t_vocab, t_hidden, t_layers, t_heads, t_kv, t_head_dim, t_inter, tie;
  int mrope[3];
  int n_idx, idx[4]; /* fullatt (Qwen2.5-VL) or deepstack (Qwen3-VL) */
  int num_pos;
} expect;

/* One row per model; clang-format would put every number on its own line. */
/* clang-format off */
static const expect models[] = {
  /* dir, arch; vision depth hidden heads inter out patch; text vocab hidden layers heads kv head_dim inter;
   * tie, mrope, indexes, num_position_embeddings */
  {"configs/Qwen2.5-VL-3B-Instruct", QVL_ARCH_QWEN2_5_VL, 32, 1280, 16, 3420, 2048, 14,
   151936, 2048, 36, 16, 2, 128, 11008, 1, {16, 24, 24}, 4, {7, 15, 23, 31}, 0},
  {"configs/Qwen2.5-VL-7B-Instruct", QVL_ARCH_QWEN2_5_VL, 32, 1280, 16, 3420, 3584, 14,
   152064, 3584, 28, 28, 4, 128, 18944, 0, {16, 24, 24}, 4, {7, 15, 23, 31}, 0},
  {"configs/Qwen2.5-VL-72B-Instruct", QVL_ARCH_QWEN2_5_VL, 32, 1280, 16, 3420, 8192, 14,
   152064, 8192, 80, 64, 8, 128, 29568, 0, {16, 24, 24}, 4, {7, 15, 23, 31}, 0},
  {"configs/Qwen3-VL-2B-Instruct", QVL_ARCH_QWEN3_VL, 24, 1024, 16, 4096, 2048, 16,
   151936, 2048, 28, 16, 8, 128, 6144, 1, {24, 20, 20}, 3, {5, 11, 17}, 2304},
  {"configs/Qwen3-VL-4B-Instruct", QVL_ARCH_QWEN3_VL, 24, 1024, 16, 4096, 2560, 16,
   151936, 2560, 36, 32, 8, 128, 9728, 1, {24, 20, 20}, 3, {5, 11, 17}, 2304},
  {"configs/Qwen3-VL-8B-Instruct", QVL_ARCH_QWEN3_VL, 27, 1152, 16, 4304, 4096, 16,
   151936, 4096, 36, 32, 8, 128, 12288, 0, {24, 20, 20}, 3, {8, 16, 24}, 2304},
  {"configs/Qwen3-VL-32B-Instruct", QVL_ARCH_QWEN3_VL, 27, 1152, 16, 4304, 5120, 16,
   151936, 5120, 64, 64, 8, 128, 25600, 0, {24, 20, 20}, 3, {8, 16, 24}, 2304},
  {"tests/data/tiny-qwen2_5_vl", QVL_ARCH_QWEN2_5_VL, 4, 64, 4, 80, 96, 14,
   1024, 96, 2, 6, 2, 16, 128, 0, {2, 3, 3}, 2, {1, 3}, 0},
  {"tests/data/tiny-qwen3_vl", QVL_ARCH_QWEN3_VL, 4, 64, 4, 80, 96, 16,
   1024, 96, 3, 6, 2, 16, 128, 1, {2, 3, 3}, 3, {0, 2, 3}, 256},
  {"tests/data/tiny-qwen3_vl-vocab", QVL_ARCH_QWEN3_VL, 4, 64, 4, 80, 96, 16,
   151936, 96, 3, 6, 2, 16, 128, 1, {2, 3, 3}, 3, {0, 2, 3}, 256},
};
/* clang-format on */

static void check_vision(const expect *e, const qvl_vision_config *v) {
  int q25 = e->arch == QVL_ARCH_QWEN2_5_VL;
  assert_int_equal(v->depth, e->v_depth);
  assert_int_equal(v->hidden, e->v_hidden);
  assert_int_equal(v->heads, e->v_heads);
  assert_int_equal(v->head_dim, e->v_hidden / e->v_heads);
  assert_int_equal(v->intermediate, e->v_inter);
  assert_int_equal(v->out_hidden, e->v_out);
  assert_int_equal(v->patch, e->v_patch);
  assert_int_equal(v->temporal_patch, 2);
  assert_int_equal(v->merge, 2);
  assert_int_equal(v->in_channels, 3);
  assert_int_equal(v->window_size, q25 ? 112 : 0);
  assert_int_equal(v->tokens_per_second, q25 ? 2 : 0);
  assert_int_equal(v->num_position_embeddings, e->num_pos);
  assert_int_equal(q25 ? v->n_fullatt : v->n_deepstack, e->n_idx);
  assert_int_equal(q25 ? v->n_deepstack : v->n_fullatt, 0);
  assert_memory_equal(q25 ? v->fullatt : v->deepstack, e->idx, (size_t)e->n_idx * sizeof(int));
  assert_string_equal(v->hidden_act, q25 ? "silu" : "gelu_pytorch_tanh");
  assert_float_equal(v->norm_eps, 1e-6f, 0);
}

static void check_text(const expect *e, const qvl_text_config *t) {
  int q25 = e->arch == QVL_ARCH_QWEN2_5_VL, tiny = strstr(e->dir, "tiny") != NULL;
  assert_int_equal(t->vocab, e->t_vocab);
  assert_int_equal(t->hidden, e->t_hidden);
  assert_int_equal(t->layers, e->t_layers);
  assert_int_equal(t->heads, e->t_heads);
  assert_int_equal(t->kv_heads, e->t_kv);
  assert_int_equal(t->head_dim, e->t_head_dim);
  assert_int_equal(t->intermediate, e->t_inter);
  assert_int_equal(t->max_position, tiny ? 4096 : q25 ? 128000 : 262144);
  assert_int_equal(t->tie_embeddings, e->tie);
  assert_int_equal(t->attention_bias, q25);
  assert_float_equal(t->rms_eps, 1e-6f, 0);
  assert_float_equal(t->rope_theta, q25 ? 1e6 : 5e6, 0);
  assert_memory_equal(t->mrope_section, e->mrope, sizeof e->mrope);
  assert_int_equal(t->mrope_interleaved, !q25);
  assert_string_equal(t->hidden_act, "silu");
}

static void check_model(const expect *e) {
  char rel[256];
  snprintf(rel, sizeof rel, "%s/config.json", e->dir);
  qvl_config c;
  qvl_err err = {0};
  if (qvl_config_load(&c, tu_path(rel), &err) != QVL_OK) fail_msg("%s", err.msg);
  int tiny = strstr(e->dir, "tiny") != NULL, tiny_ids = tiny && e->t_vocab == 1024; /* -vocab keeps Qwen's ids */
  assert_int_equal(c.arch, e->arch);
  assert_string_equal(c.arch_name, e->arch == QVL_ARCH_QWEN2_5_VL ? "qwen2_5_vl" : "qwen3_vl");
  check_vision(e, &c.vision);
  check_text(e, &c.text);
  assert_int_equal(c.image_token_id, tiny_ids ? 1012 : 151655);
  assert_int_equal(c.video_token_id, tiny_ids ? 1013 : 151656);
  assert_int_equal(c.vision_start_token_id, tiny_ids ? 1010 : 151652);
  assert_int_equal(c.vision_end_token_id, tiny_ids ? 1011 : 151653);
  assert_string_equal(c.dtype, tiny ? "float32" : "bfloat16");
}

static void test_shipped_configs(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) check_model(&models[i]);
}

/* A model directory added under configs/ (or a tiny test model) must get a row in models[]. */
static void check_dirs_listed(const char *rel, const char *prefix) {
  DIR *d = opendir(tu_path(rel));
  if (!d) fail_msg("cannot list %s", rel);
  struct dirent *de;
  while ((de = readdir(d))) {
    char dir[512], probe[600];
    snprintf(dir, sizeof dir, "%s/%s", rel, de->d_name);
    snprintf(probe, sizeof probe, "%s/config.json", tu_path(dir));
    FILE *f = strncmp(de->d_name, prefix, strlen(prefix)) == 0 ? fopen(probe, "rb") : NULL;
    if (!f) continue;
    fclose(f);
    int listed = 0;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) listed |= strcmp(models[i].dir, dir) == 0;
    if (!listed) fail_msg("%s has no row in models[]", dir);
  }
  closedir(d);
}

static void test_every_config_dir_is_checked(void **state) {
  (void)state;
  check_dirs_listed("configs", "");
  check_dirs_listed("tests/data", "tiny-");
}

/* ---- layouts ---------------------------------------------------------------------------------------- */

static const char *const q25_text_keys[] = {
    "hidden_size",         "intermediate_size",   "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "vocab_size",
    "rms_norm_eps",        "rope_theta",          "max_position_embeddings",
    "hidden_act",          "rope_scaling",        "tie_word_embeddings",
};
#define N_Q25_TEXT_KEYS (sizeof q25_text_keys / sizeof q25_text_keys[0])

/* (b) text fields nested in text_config, optionally also left at the top level (transformers 4.5x saves). */
static cJSON *nest_text(const cJSON *released, int keep) {
  cJSON *doc = cJSON_Duplicate(released, 1), *tc = cJSON_AddObjectToObject(doc, "text_config");
  for (size_t i = 0; i < N_Q25_TEXT_KEYS; i++) move_key(doc, tc, q25_text_keys[i], keep);
  return doc;
}

/* (c) transformers 5.x: rope_scaling + rope_theta become text_config.rope_parameters. */
static void to_rope_parameters(cJSON *tc) {
  cJSON *rp = cJSON_DetachItemFromObject(tc, "rope_scaling");
  cJSON_DeleteItemFromObject(rp, "type");
  cJSON_AddStringToObject(rp, "rope_type", "default");
  move_key(tc, rp, "rope_theta", 0);
  cJSON_AddItemToObject(tc, "rope_parameters", rp);
}

static void expect_same(const cJSON *doc, const qvl_config *want) {
  qvl_config c;
  parse_ok(doc, &c);
  assert_memory_equal(&c, want, sizeof c);
}

static void test_layouts_qwen2_5_vl(void **state) {
  (void)state;
  cJSON *a = load_json(Q25_7B);
  qvl_config want;
  parse_ok(a, &want);
  cJSON *b = nest_text(a, 0), *b2 = nest_text(a, 1), *c = nest_text(a, 0);
  expect_same(b, &want);
  expect_same(b2, &want);
  to_rope_parameters(cJSON_GetObjectItem(c, "text_config"));
  set_path(c, "dtype", "\"bfloat16\"");
  del_path(c, "torch_dtype");
  set_path(c, "vision_config.in_channels", "3");
  del_path(c, "vision_config.in_chans");
  expect_same(c, &want);
  cJSON_Delete(a), cJSON_Delete(b), cJSON_Delete(b2), cJSON_Delete(c);
}

static void test_layouts_qwen3_vl(void **state) {
  (void)state;
  cJSON *b = load_json(Q3_4B);
  qvl_config want;
  parse_ok(b, &want);
  cJSON *c = cJSON_Duplicate(b, 1), *a = cJSON_Duplicate(b, 1);
  to_rope_parameters(cJSON_GetObjectItem(c, "text_config"));
  expect_same(c, &want);
  /* The same model written flat, Qwen2.5-VL style: the text fields at the top level. */
  cJSON *tc = cJSON_DetachItemFromObject(a, "text_config");
  cJSON_DeleteItemFromObject(a, "tie_word_embeddings");
  for (cJSON *it = tc->child; it; it = it->next) cJSON_AddItemToObject(a, it->string, cJSON_Duplicate(it, 1));
  expect_same(a, &want);
  cJSON_Delete(tc), cJSON_Delete(a), cJSON_Delete(c), cJSON_Delete(b);
}

/* Optional fields removed: the defaults are the released values (dtype aside, which is then ""). */
static void expect_defaults(const char *rel, const char *const *paths, size_t n) {
  cJSON *doc = load_json(rel);
  qvl_config want, got;
  parse_ok(doc, &want);
  for (size_t i = 0; i < n; i++) del_path(doc, paths[i]);
  parse_ok(doc, &got);
  if (strcmp(got.dtype, want.dtype) != 0) assert_string_equal(got.dtype, ""); /* dtype has no default */
  memcpy(got.dtype, want.dtype, sizeof got.dtype);
  assert_memory_equal(&got, &want, sizeof got);
  cJSON_Delete(doc);
}

static void test_defaults(void **state) {
  (void)state;
  static const char *const q25[] = {
      "vision_config.temporal_patch_size",
      "vision_config.spatial_merge_size",
      "vision_config.in_chans",
      "vision_config.window_size",
      "vision_config.tokens_per_second",
      "vision_config.fullatt_block_indexes",
      "vision_config.hidden_act",
      "image_token_id",
      "video_token_id",
      "vision_start_token_id",
      "vision_end_token_id",
      "torch_dtype",
      "rope_theta",
      "rms_norm_eps",
      "max_position_embeddings",
      "hidden_act",
      "rope_scaling.type",
  };
  static const char *const q3[] = {
      "vision_config.num_position_embeddings",
      "vision_config.in_channels",
      "vision_config.temporal_patch_size",
      "vision_config.spatial_merge_size",
      "vision_config.hidden_act",
      "text_config.rope_scaling.mrope_interleaved",
      "text_config.rope_scaling.rope_type",
      "text_config.attention_bias",
      "text_config.rope_theta",
      "text_config.hidden_act",
      "text_config.dtype",
      "text_config.max_position_embeddings",
      "text_config.tie_word_embeddings",
      "image_token_id",
      "video_token_id",
      "vision_start_token_id",
      "vision_end_token_id",
  };
  expect_defaults(Q25_7B, q25, sizeof q25 / sizeof q25[0]);
  expect_defaults(Q3_4B, q3, sizeof q3 / sizeof q3[0]);
  /* head_dim = hidden / heads when absent (the 4B's explicit 128 is not 2560 / 32). */
  static const char *const tiny3[] = {"text_config.head_dim"};
  expect_defaults("tests/data/tiny-qwen3_vl/config.json", tiny3, 1);
}

static void test_arch_from_model_type(void **state) {
  (void)state;
  cJSON *doc = load_json(Q3_4B);
  qvl_config c;
  set_path(doc, "architectures", "[\"MyQwen3VLFineTune\"]"); /* unknown class: model_type decides */
  parse_ok(doc, &c);
  assert_int_equal(c.arch, QVL_ARCH_QWEN3_VL);
  del_path(doc, "architectures");
  parse_ok(doc, &c);
  assert_int_equal(c.arch, QVL_ARCH_QWEN3_VL);
  cJSON_Delete(doc);
}

/* ---- errors: JSON text -------------------------------------------------------------------------------- */

static void test_malformed_json(void **state) {
  (void)state;
  expect_text_fails("{\"architectures\": [\"Qwen3VLForConditionalGeneration\"],, }", "malformed JSON",
                    "line 1");
  expect_text_fails("{\n  \"a\": 1,\n  \"b\": ]\n}\n", "malformed JSON", "line 3, column 8");
  expect_text_fails("{\"a\": 1} x", "text after the document", NULL);
  expect_text_fails("[1, 2]", "the document is an array, expected an object", NULL);
  expect_text_fails("", "empty document", NULL);
  expect_text_fails(" \n\t", "empty document", NULL);
}

/* Parses the first n bytes of text from an exactly sized buffer (no NUL after it: ASan sees any overread). */
static int parse_prefix(const char *text, size_t n, qvl_err *err) {
  char *buf = malloc(n ? n : 1);
  assert_non_null(buf);
  memcpy(buf, text, n);
  qvl_config c;
  qvl_err_clear(err);
  int rc = qvl_config_parse(&c, buf, n, "config.json", err);
  free(buf);
  return rc;
}

static void expect_truncated(const char *text, size_t n, const char *inside) {
  qvl_err err;
  assert_int_equal(parse_prefix(text, n, &err), QVL_ERR_FORMAT);
  tu_assert_msg_has(err.msg, "config.json: incomplete JSON", inside);
}

static size_t offset_after(const char *text, const char *needle) {
  const char *p = strstr(text, needle);
  assert_non_null(p);
  return (size_t)(p - text) + strlen(needle);
}

static void test_truncated_json(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  qvl_err err = {0};
  assert_int_equal(qvl_read_file(tu_path(Q25_7B), &text, &len, 1 << 20, &err), QVL_OK);
  expect_truncated(text, len / 2, NULL);
  expect_truncated(text, offset_after(text, "\"qwen2"), "inside a string");
  expect_truncated(text, offset_after(text, "\"use_cache\": tr"), "inside an unclosed object or array");
  expect_truncated(text, offset_after(text, "\"use_cache\": true,\n "), "inside an unclosed object or array");
  expect_truncated(text, offset_after(text, "\"max_window_layers\": 2"),
                   "inside an unclosed object or array");
  expect_truncated(text, len - 3, "inside an unclosed object or array"); /* without the closing "}\n" */
  /* Every prefix fails cleanly (ASan checks the reads), and the whole file parses. */
  for (size_t n = 0; n < len - 2; n++) assert_int_equal(parse_prefix(text, n, &err), QVL_ERR_FORMAT);
  assert_int_equal(parse_prefix(text, len, &err), QVL_OK);
  free(text);
}

/* ---- errors: structure -------------------------------------------------------------------------------- */

static void test_missing_vision_config(void **state) {
  (void)state;
  expect_edit_fails(Q25_7B, "vision_config", NULL, QVL_ERR_FORMAT, "config.json: vision_config: missing",
                    NULL);
  expect_edit_fails(Q3_4B, "vision_config", NULL, QVL_ERR_FORMAT, "config.json: vision_config: missing",
                    NULL);
}

/* Each field that defines a tensor shape, deleted alone, is reported by its full path. */
static void expect_each_required(const char *rel, const char *const *paths, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char needle[160];
    snprintf(needle, sizeof needle, "config.json: %s: missing", paths[i]);
    expect_edit_fails(rel, paths[i], NULL, QVL_ERR_FORMAT, needle, NULL);
  }
}

static void test_missing_required_fields(void **state) {
  (void)state;
  static const char *const q25[] = {
      "hidden_size",
      "num_hidden_layers",
      "num_attention_heads",
      "num_key_value_heads",
      "intermediate_size",
      "vocab_size",
      "rope_scaling.mrope_section",
      "vision_config.depth",
      "vision_config.hidden_size",
      "vision_config.num_heads",
      "vision_config.intermediate_size",
      "vision_config.out_hidden_size",
      "vision_config.patch_size",
  };
  static const char *const q3[] = {
      "text_config.hidden_size",
      "text_config.num_hidden_layers",
      "text_config.num_attention_heads",
      "text_config.num_key_value_heads",
      "text_config.intermediate_size",
      "text_config.vocab_size",
      "text_config.rope_scaling.mrope_section",
      "vision_config.depth",
      "vision_config.hidden_size",
      "vision_config.num_heads",
      "vision_config.intermediate_size",
      "vision_config.out_hidden_size",
      "vision_config.patch_size",
      "vision_config.deepstack_visual_indexes",
  };
  expect_each_required(Q25_7B, q25, sizeof q25 / sizeof q25[0]);
  expect_each_required(Q3_4B, q3, sizeof q3 / sizeof q3[0]);
  /* No rope settings at all: the message still names the section that is needed. */
  expect_edit_fails(Q3_4B, "text_config.rope_scaling", NULL, QVL_ERR_FORMAT,
                    "text_config.rope_scaling.mrope_section: missing", NULL);
}

typedef struct edit_case {
  const char *path, *value; /* value NULL: delete */
  int code;
  const char *needle1, *needle2;
} edit_case;

static void run_cases(const char *rel, const edit_case *cases, size_t n) {
  for (size_t i = 0; i < n; i++)
    expect_edit_fails(rel, cases[i].path, cases[i].value, cases[i].code, cases[i].needle1, cases[i].needle2);
}

static void test_wrong_types(void **state) {
  (void)state;
  static const edit_case q3[] = {
      {"vision_config.depth", "\"32\"", QVL_ERR_FORMAT, "vision_config.depth: expected an integer",
       "a string"},
      {"vision_config.depth", "32.5", QVL_ERR_FORMAT, "vision_config.depth: expected an integer, found 32.5",
       NULL},
      {"vision_config.depth", "1e12", QVL_ERR_FORMAT, "vision_config.depth: 1000000000000 is out of range",
       NULL},
      {"text_config.hidden_size", "true", QVL_ERR_FORMAT, "text_config.hidden_size: expected an integer",
       "boolean"},
      {"tie_word_embeddings", "\"yes\"", QVL_ERR_FORMAT, "tie_word_embeddings: expected true or false", NULL},
      {"vision_config.hidden_act", "7", QVL_ERR_FORMAT, "vision_config.hidden_act: expected a string", NULL},
      {"vision_config.deepstack_visual_indexes", "{\"a\": 1}", QVL_ERR_FORMAT,
       "vision_config.deepstack_visual_indexes: expected an array, found an object", NULL},
      {"vision_config.deepstack_visual_indexes", "[5, \"11\", 17]", QVL_ERR_FORMAT,
       "vision_config.deepstack_visual_indexes[1]: expected an integer", NULL},
      {"text_config.rope_scaling", "[1]", QVL_ERR_FORMAT, "text_config.rope_scaling: expected an object",
       NULL},
      {"text_config.rms_norm_eps", "\"1e-6\"", QVL_ERR_FORMAT, "text_config.rms_norm_eps: expected a number",
       NULL},
      {"vision_config", "3", QVL_ERR_FORMAT, "vision_config: expected an object, found a number", NULL},
      {"text_config", "[]", QVL_ERR_FORMAT, "text_config: expected an object", NULL},
      {"architectures", "\"Qwen3VLForConditionalGeneration\"", QVL_ERR_FORMAT,
       "architectures: expected an array", NULL},
      {"model_type", "3", QVL_ERR_FORMAT, "model_type: expected a string", NULL},
      {"image_token_id", "\"151655\"", QVL_ERR_FORMAT, "image_token_id: expected an integer", NULL},
      {"text_config.dtype", "16", QVL_ERR_FORMAT, "text_config.dtype: expected a string", NULL},
      {"text_config.hidden_act", "\"a_very_long_activation_name_beyond_31\"", QVL_ERR_FORMAT,
       "text_config.hidden_act:", "longer than 31 characters"},
  };
  run_cases(Q3_4B, q3, sizeof q3 / sizeof q3[0]);
}

/* ---- errors: impossible values ------------------------------------------------------------------------ */

static void test_impossible_values_qwen3_vl(void **state) {
  (void)state;
  static const edit_case q3[] = {
      {"vision_config.num_heads", "15", QVL_ERR_FORMAT,
       "vision_config.num_heads: 15 does not divide hidden_size 1024", NULL},
      {"text_config.num_key_value_heads", "5", QVL_ERR_FORMAT,
       "text_config.num_key_value_heads: 5 does not divide num_attention_heads 32", NULL},
      {"text_config.rope_scaling.mrope_section", "[24, 20, 21]", QVL_ERR_FORMAT,
       "text_config.rope_scaling.mrope_section: [24, 20, 21]", "sum to head_dim / 2 = 64"},
      {"text_config.rope_scaling.mrope_section", "[32, 32]", QVL_ERR_FORMAT,
       "text_config.rope_scaling.mrope_section: expected 3 entries", NULL},
      {"text_config.rope_scaling.mrope_section", "[34, -10, 40]", QVL_ERR_FORMAT, "must be non-negative",
       NULL},
      {"vision_config.deepstack_visual_indexes", "[5, 11, 24]", QVL_ERR_FORMAT,
       "vision_config.deepstack_visual_indexes[2]: 24 is out of range [0, 24)", NULL},
      {"vision_config.deepstack_visual_indexes", "[-1, 5]", QVL_ERR_FORMAT,
       "vision_config.deepstack_visual_indexes[0]: -1 is out of range", NULL},
      {"vision_config.deepstack_visual_indexes", "[11, 5]", QVL_ERR_FORMAT,
       "vision_config.deepstack_visual_indexes[1]: 5 does not increase on the previous entry 11", NULL},
      {"vision_config.num_position_embeddings", "2300", QVL_ERR_FORMAT,
       "vision_config.num_position_embeddings: 2300 is not a perfect square", NULL},
      {"vision_config.out_hidden_size", "2048", QVL_ERR_FORMAT,
       "vision_config.out_hidden_size: 2048 differs from the text hidden_size 2560", NULL},
      {"vision_config.depth", "0", QVL_ERR_FORMAT, "vision_config.depth: must be positive, found 0", NULL},
      {"text_config.vocab_size", "-5", QVL_ERR_FORMAT, "text_config.vocab_size: must be positive, found -5",
       NULL},
      {"text_config.num_hidden_layers", "2", QVL_ERR_FORMAT,
       "vision_config.deepstack_visual_indexes: 3 entries", "only 2 layers"},
      {"text_config.rms_norm_eps", "0", QVL_ERR_FORMAT, "text_config.rms_norm_eps: must be positive", NULL},
      {"image_token_id", "200000", QVL_ERR_FORMAT, "image_token_id: 200000 is outside the vocabulary", NULL},
      {"text_config.tie_word_embeddings", "false", QVL_ERR_FORMAT,
       "tie_word_embeddings: true disagrees with text_config.tie_word_embeddings false", NULL},
      {"vision_config.in_chans", "4", QVL_ERR_FORMAT, "vision_config.in_channels: 3 disagrees", NULL},
  };
  run_cases(Q3_4B, q3, sizeof q3 / sizeof q3[0]);
}

static void test_list_too_long(void **state) {
  (void)state;
  char list[1024] = "[";
  for (int i = 0; i <= QVL_MAX_LIST; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? ", " : "", i);
  strcat(list, "]");
  expect_edit_fails(Q3_4B, "vision_config.deepstack_visual_indexes", list, QVL_ERR_FORMAT,
                    "vision_config.deepstack_visual_indexes: 65 entries, at most 64", NULL);
}

static void test_impossible_values_qwen2_5_vl(void **state) {
  (void)state;
  static const edit_case q25[] = {
      {"vision_config.fullatt_block_indexes", "[7, 15, 23, 32]", QVL_ERR_FORMAT,
       "vision_config.fullatt_block_indexes[3]: 32 is out of range [0, 32)", NULL},
      {"vision_config.fullatt_block_indexes", "[7, 15, 15, 31]", QVL_ERR_FORMAT,
       "vision_config.fullatt_block_indexes[2]: 15 does not increase", NULL},
      {"vision_config.window_size", "14", QVL_ERR_FORMAT,
       "vision_config.window_size: 14 is smaller than patch_size * spatial_merge_size = 28", NULL},
      {"head_dim", "64", QVL_ERR_FORMAT,
       "config.json: head_dim: 64 differs from hidden_size / num_attention_heads", NULL},
      {"rope_scaling.mrope_section", "[16, 24, 16]", QVL_ERR_FORMAT,
       "config.json: rope_scaling.mrope_section:", "= 64"},
  };
  run_cases(Q25_7B, q25, sizeof q25 / sizeof q25[0]);
  /* The brief's own example: heads that do not divide the hidden size, top-level layout. */
  cJSON *doc = load_json(Q25_7B);
  set_path(doc, "hidden_size", "3000");
  set_path(doc, "vision_config.out_hidden_size", "3000");
  expect_fail(doc, QVL_ERR_FORMAT, "config.json: num_attention_heads: 28 does not divide hidden_size 3000",
              NULL);
  cJSON *nested = nest_text(doc, 0);
  expect_fail(nested, QVL_ERR_FORMAT, "config.json: text_config.num_attention_heads: 28 does not divide",
              NULL);
  cJSON_Delete(doc), cJSON_Delete(nested);
}

/* ---- errors: architecture ------------------------------------------------------------------------------ */

static void test_unsupported_architectures(void **state) {
  (void)state;
  cJSON *doc = load_json(Q25_7B);
  set_path(doc, "architectures", "[\"Qwen2VLForConditionalGeneration\"]");
  set_path(doc, "model_type", "\"qwen2_vl\"");
  expect_fail(doc, QVL_ERR_UNSUPPORTED, "architectures[0]: unsupported architecture", "\"qwen2_vl\"");
  expect_fail(doc, QVL_ERR_UNSUPPORTED, "\"Qwen2VLForConditionalGeneration\"", NULL);
  del_path(doc, "architectures");
  expect_fail(doc, QVL_ERR_UNSUPPORTED, "config.json: model_type: unsupported architecture", "qwen2_vl");
  del_path(doc, "model_type");
  expect_fail(doc, QVL_ERR_FORMAT, "config.json: architectures: missing", NULL);
  cJSON_Delete(doc);
  doc = load_json(Q3_4B);
  set_path(doc, "architectures", "[\"Qwen3VLMoeForConditionalGeneration\"]");
  set_path(doc, "model_type", "\"qwen3_vl_moe\"");
  expect_fail(doc, QVL_ERR_UNSUPPORTED, "Qwen3VLMoeForConditionalGeneration", "qwen3_vl_moe");
  set_path(doc, "architectures", "[\"Qwen3VLForConditionalGeneration\"]");
  set_path(doc, "model_type", "\"qwen2_5_vl\"");
  expect_fail(doc, QVL_ERR_FORMAT, "architectures[0]: \"Qwen3VLForConditionalGeneration\" contradicts", NULL);
  cJSON_Delete(doc);
  expect_edit_fails(Q3_4B, "text_config.rope_scaling.rope_type", "\"yarn\"", QVL_ERR_UNSUPPORTED,
                    "text_config.rope_scaling.rope_type: \"yarn\" is not supported", NULL);
}

/* ---- files ----------------------------------------------------------------------------------------------
 */

static void test_load_errors(void **state) {
  (void)state;
  qvl_config c;
  qvl_err err = {0};
  assert_int_equal(qvl_config_load(&c, "/nonexistent/qvl/config.json", &err), QVL_ERR_IO);
  tu_assert_msg_has(err.msg, "/nonexistent/qvl/config.json: cannot open", NULL);
  qvl_err_clear(&err);
  assert_int_equal(qvl_config_load(&c, tu_path("configs"), &err), QVL_ERR_IO); /* a directory */
  tu_assert_msg_has(err.msg, "configs: read error", NULL);
  /* err may be NULL: the status still comes back. */
  assert_int_equal(qvl_config_parse(&c, "{", 1, "config.json", NULL), QVL_ERR_FORMAT);
  /* A failure keeps the first message. */
  qvl_err_clear(&err);
  assert_int_equal(qvl_config_parse(&c, "[", 1, "first.json", &err), QVL_ERR_FORMAT);
  assert_int_equal(qvl_config_parse(&c, "[", 1, "second.json", &err), QVL_ERR_FORMAT);
  tu_assert_msg_has(err.msg, "first.json", NULL);
}

static void test_read_file(void **state) {
  (void)state;
  const char *dir = tu_tmpdir();
  char path[600], data[10000];
  snprintf(path, sizeof path, "%s/f.bin", dir);
  for (size_t i = 0; i < sizeof data; i++) data[i] = (char)('a' + i % 26);
  tu_write_file(path, data, sizeof data);
  char *buf = NULL;
  size_t len = 0;
  qvl_err err = {0};
  assert_int_equal(qvl_read_file(path, &buf, &len, sizeof data, &err), QVL_OK);
  assert_int_equal(len, sizeof data);
  assert_memory_equal(buf, data, sizeof data);
  assert_int_equal(buf[len], '\0');
  free(buf);
  assert_int_equal(qvl_read_file(path, &buf, &len, sizeof data - 1, &err), QVL_ERR_FORMAT);
  assert_null(buf);
  tu_assert_msg_has(err.msg, "f.bin: too large", NULL);
  tu_write_file(path, "", 0);
  assert_int_equal(qvl_read_file(path, &buf, &len, 0, NULL), QVL_OK);
  assert_int_equal(len, 0);
  assert_string_equal(buf, "");
  free(buf);
  tu_rmtree(dir);
}

/* ---- preprocessor_config.json -----------------------------------------------------------------------------
 */

static void load_preproc(qvl_preproc_config *p, qvl_arch arch, const char *rel) {
  qvl_err err = {0};
  if (qvl_preproc_load(p, arch, tu_path(rel), &err) != QVL_OK) fail_msg("%s", err.msg);
}

static void check_preproc(const qvl_preproc_config *p, int present, qvl_arch arch) {
  int q25 = arch == QVL_ARCH_QWEN2_5_VL;
  assert_int_equal(p->present, present);
  assert_int_equal(p->min_pixels, q25 ? 3136 : 65536);
  assert_int_equal(p->max_pixels, q25 ? 12845056 : 16777216);
  assert_int_equal(p->patch, q25 ? 14 : 16);
  assert_int_equal(p->temporal_patch, 2);
  assert_int_equal(p->merge, 2);
  assert_float_equal(p->mean[0], q25 ? 0.48145466f : 0.5f, 0);
  assert_float_equal(p->mean[2], q25 ? 0.40821073f : 0.5f, 0);
  assert_float_equal(p->std[1], q25 ? 0.26130258f : 0.5f, 0);
  assert_float_equal(p->rescale, 1.0 / 255.0, 1e-15);
  assert_true(p->do_resize && p->do_rescale && p->do_normalize && p->do_convert_rgb);
  assert_int_equal(p->resample, 3);
}

static void test_preproc_present(void **state) {
  (void)state;
  qvl_preproc_config p;
  for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s/preprocessor_config.json", models[i].dir);
    load_preproc(&p, models[i].arch, rel);
    check_preproc(&p, 1, models[i].arch);
  }
}

static void test_preproc_absent(void **state) {
  (void)state;
  qvl_preproc_config p;
  load_preproc(&p, QVL_ARCH_QWEN2_5_VL, "configs/no-such-model/preprocessor_config.json");
  check_preproc(&p, 0, QVL_ARCH_QWEN2_5_VL);
  load_preproc(&p, QVL_ARCH_QWEN3_VL, "configs/no-such-model/preprocessor_config.json");
  check_preproc(&p, 0, QVL_ARCH_QWEN3_VL);
  qvl_err err = {0};
  assert_int_equal(qvl_preproc_load(&p, (qvl_arch)7, "x", &err), QVL_ERR_INVALID_ARG);
}

/* Writes text as a preprocessor_config.json and loads it; returns the status, the message in err. */
static int preproc_text(const char *text, qvl_preproc_config *p, qvl_err *err) {
  const char *dir = tu_tmpdir();
  char path[600];
  snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
  tu_write_file(path, text, strlen(text));
  qvl_err_clear(err);
  int rc = qvl_preproc_load(p, QVL_ARCH_QWEN3_VL, path, err);
  tu_rmtree(dir);
  return rc;
}

static void expect_preproc_fails(const char *text, const char *needle) {
  qvl_preproc_config p;
  qvl_err err;
  assert_int_equal(preproc_text(text, &p, &err), QVL_ERR_FORMAT);
  tu_assert_msg_has(err.msg, "preprocessor_config.json: ", needle);
  assert_int_equal(p.present, 0);
}

static void test_preproc_fields(void **state) {
  (void)state;
  qvl_preproc_config p;
  qvl_err err;
  /* Top-level min/max_pixels override size (as Qwen2VLImageProcessor does); absent fields keep defaults. */
  assert_int_equal(
      preproc_text("{\"min_pixels\": 100, \"size\": {\"shortest_edge\": 50, \"longest_edge\": 1000},"
                   " \"do_normalize\": false, \"resample\": 2, \"rescale_factor\": 0.5}",
                   &p, &err),
      QVL_OK);
  assert_int_equal(p.min_pixels, 100);
  assert_int_equal(p.max_pixels, 1000);
  assert_int_equal(p.do_normalize, 0);
  assert_int_equal(p.resample, 2);
  assert_float_equal(p.rescale, 0.5, 0);
  assert_int_equal(p.patch, 16);
  expect_preproc_fails("{\"size\": {", "incomplete JSON");
  expect_preproc_fails("{\"image_mean\": [0.5, \"x\", 0.5]}", "image_mean: entry 1 must be a number");
  expect_preproc_fails("{\"image_std\": [0.5, 0, 0.5]}", "image_std: entry 1 must be a positive number");
  expect_preproc_fails("{\"image_std\": [0.5, 0.5]}", "image_std: expected an array of 3 numbers");
  expect_preproc_fails("{\"min_pixels\": 1000, \"max_pixels\": 10}",
                       "max_pixels: 10 is below min_pixels 1000");
  expect_preproc_fails("{\"size\": {\"shortest_edge\": \"a\"}}", "size.shortest_edge: expected an integer");
  expect_preproc_fails("{\"resample\": 9}", "resample: 9 is not a PIL resampling filter");
  expect_preproc_fails("{\"patch_size\": 0}", "patch_size: must be positive");
  expect_preproc_fails("{\"do_resize\": 1}", "do_resize: expected true or false");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shipped_configs),
      cmocka_unit_test(test_every_config_dir_is_checked),
      cmocka_unit_test(test_layouts_qwen2_5_vl),
      cmocka_unit_test(test_layouts_qwen3_vl),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_arch_from_model_type),
      cmocka_unit_test(test_malformed_json),
      cmocka_unit_test(test_truncated_json),
      cmocka_unit_test(test_missing_vision_config),
      cmocka_unit_test(test_missing_required_fields),
      cmocka_unit_test(test_wrong_types),
      cmocka_unit_test(test_impossible_values_qwen3_vl),
      cmocka_unit_test(test_list_too_long),
      cmocka_unit_test(test_impossible_values_qwen2_5_vl),
      cmocka_unit_test(test_unsupported_architectures),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_read_file),
      cmocka_unit_test(test_preproc_present),
      cmocka_unit_test(test_preproc_absent),
      cmocka_unit_test(test_preproc_fields),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
