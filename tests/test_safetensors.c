/* test_safetensors.c - the safetensors reader/writer: round trips, conversions, shards, and one test per
 * validation rule on files assembled byte by byte, each checking the status and the message. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"

static char g_dir[512]; /* a fresh directory per test */
static const uint8_t zeros[256];

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "%s", tu_tmpdir());
  return 0;
}

static int teardown(void **state) {
  (void)state;
  tu_rmtree(g_dir);
  return 0;
}

/* g_dir/name, in one of 8 rotating buffers. */
static const char *in_dir(const char *name) {
  static char buf[8][1024];
  static int k;
  char *b = buf[k++ & 7];
  snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
  return b;
}

static int exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

/* ' becomes " so the JSON in the tests stays legible. */
static char *dq(const char *json) {
  char *s = strdup(json);
  for (char *p = s; *p; p++)
    if (*p == '\'') *p = '"';
  return s;
}

/* Writes g_dir/name: the 8-byte little-endian header length hlen, the header json, dlen bytes of data. */
static const char *put_raw(const char *name, uint64_t hlen, const char *json, const void *data, size_t dlen) {
  char *h = dq(json);
  size_t n = strlen(h);
  uint8_t *buf = malloc(8 + n + dlen + 1);
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hlen >> (8 * i));
  memcpy(buf + 8, h, n);
  if (dlen) memcpy(buf + 8 + n, data, dlen);
  const char *path = in_dir(name);
  tu_write_file(path, buf, 8 + n + dlen);
  free(buf);
  free(h);
  return path;
}

static const char *put(const char *name, const char *json, const void *data, size_t dlen) {
  return put_raw(name, strlen(json), json, data, dlen);
}

static void put_index(const char *json) {
  char *s = dq(json);
  tu_write_file(in_dir("model.safetensors.index.json"), s, strlen(s));
  free(s);
}

/* st_open(path) must fail with code, *out NULL, and a one-line message holding each non-NULL needle. */
static void expect_fail(const char *path, int code, const char *n1, const char *n2, const char *n3) {
  st_model *m = NULL;
  qvl_err err = {0};
  int rc = st_open(&m, path, &err);
  if (rc != code) fail_msg("st_open(%s) = %d, want %d: \"%s\"", path, rc, code, err.msg);
  assert_null(m);
  assert_int_equal(err.code, code);
  assert_null(strchr(err.msg, '\n'));
  tu_assert_msg_has(err.msg, n1, n2);
  tu_assert_msg_has(err.msg, n3, NULL);
}

static st_model *open_ok(const char *path) {
  st_model *m = NULL;
  qvl_err err = {0};
  int rc = st_open(&m, path, &err);
  if (rc != QVL_OK) fail_msg("st_open(%s) = %d: %s", path, rc, err.msg);
  assert_non_null(m);
  return m;
}

static void check_tensor(const st_model *m, const st_entry *e, const void *data) {
  const st_tensor *t = st_find(m, e->name);
  if (!t) fail_msg("tensor \"%s\" not found", e->name);
  assert_string_equal(t->name, e->name);
  assert_int_equal(t->dtype, e->dtype);
  assert_int_equal(t->ndim, e->ndim);
  int64_t numel = 1;
  for (int d = 0; d < e->ndim; d++) {
    assert_int_equal(t->shape[d], e->shape[d]);
    numel *= e->shape[d];
  }
  assert_int_equal(t->numel, numel);
  assert_int_equal(t->nbytes, (size_t)numel * st_dtype_size(e->dtype));
  if (t->nbytes) assert_memory_equal(t->data, data, t->nbytes);
}

/* ---- round trips ------------------------------------------------------------------------------ */

static uint8_t pattern(int i, size_t k) { return (uint8_t)(i * 31 + k * 7 + 1); }

typedef struct fill_log {
  int calls[16];
} fill_log;

static int fill_pattern(void *ud, int i, void *dst, size_t nbytes, qvl_err *err) {
  (void)err;
  ((fill_log *)ud)->calls[i]++;
  for (size_t k = 0; k < nbytes; k++) ((uint8_t *)dst)[k] = pattern(i, k);
  return QVL_OK;
}

static void expect_pattern(const st_model *m, const st_entry *e, int i) {
  uint8_t want[256];
  for (size_t k = 0; k < sizeof want; k++) want[k] = pattern(i, k);
  check_tensor(m, e, want);
}

static void test_round_trip(void **state) {
  (void)state;
  const float f32[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
  const int64_t scalar = -42;
  const int32_t i32[3] = {1, -1, 2147483647};
  const uint8_t flags[3] = {1, 0, 1};
  const double f64[2] = {0.1, -1e300};
  const st_entry e[] = {
    {"w.f32", ST_F32, 2, {2, 3}, f32},
    {"scalar", ST_I64, 0, {0}, &scalar},
    {"empty", ST_U8, 2, {0, 5}, zeros},
    {"filled.bf16", ST_BF16, 2, {2, 4}, NULL}, /* from fill() */
    {"odd \"name\" \\ with\tescapes", ST_I32, 1, {3}, i32},
    {"flags", ST_BOOL, 1, {3}, flags},
    {"f64", ST_F64, 1, {2}, f64},
    {"filled.e4m3", ST_F8_E4M3, 3, {1, 1, 5}, NULL},
  };
  const int n = (int)(sizeof e / sizeof e[0]);
  fill_log log = {{0}};
  qvl_err err = {0};
  const char *path = in_dir("rt.safetensors");
  assert_int_equal(st_write(path, e, n, fill_pattern, &log, &err), QVL_OK);
  assert_int_equal(err.code, QVL_OK);
  assert_false(exists(in_dir("rt.safetensors.tmp")));
  for (int i = 0; i < n; i++) assert_int_equal(log.calls[i], e[i].data ? 0 : 1);

  /* The layout the reference writes: 8-aligned data start, metadata {"format":"pt"}. */
  FILE *f = fopen(path, "rb");
  uint8_t head[4096];
  size_t got = fread(head, 1, sizeof head, f);
  fclose(f);
  assert_true(got > 8);
  assert_int_equal(head[0] % 8, 0);
  assert_non_null(memmem(head, got, "\"__metadata__\":{\"format\":\"pt\"}", 30));

  st_model *m = open_ok(path);
  assert_int_equal(st_count(m), n);
  for (int i = 0; i < n; i++) {
    if (e[i].data) check_tensor(m, &e[i], e[i].data);
    else expect_pattern(m, &e[i], i);
    assert_string_equal(st_find(m, e[i].name)->file, path);
  }
  for (int i = 1; i < n; i++) assert_true(strcmp(st_at(m, i - 1)->name, st_at(m, i)->name) < 0);
  assert_null(st_at(m, n));
  assert_null(st_find(m, "missing"));
  assert_int_equal(st_find(m, "scalar")->numel, 1);
  st_close(m);
}

static void test_empty_files_ok(void **state) {
  (void)state;
  st_model *m = open_ok(put("a.safetensors", "{}", NULL, 0));
  assert_int_equal(st_count(m), 0);
  st_close(m);
  /* Padding with spaces (as the reference writes) and a metadata-only header. */
  m = open_ok(put("b.safetensors", "{'__metadata__':{'format':'pt'}}      ", NULL, 0));
  assert_int_equal(st_count(m), 0);
  st_close(m);
  qvl_err err = {0};
  assert_int_equal(st_write(in_dir("c.safetensors"), NULL, 0, NULL, NULL, &err), QVL_OK);
  m = open_ok(in_dir("c.safetensors"));
  assert_int_equal(st_count(m), 0);
  st_close(m);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static void expect_bits(const float *got, const float *want, int n) {
  for (int i = 0; i < n; i++)
    if (memcmp(&got[i], &want[i], 4) != 0) fail_msg("value %d: got %.9g, want %.9g", i, got[i], want[i]);
}

/* One U8 byte first, so every later tensor starts unaligned. */
static void test_to_f32_exact(void **state) {
  (void)state;
  uint8_t d[42] = {0};
  const uint16_t bf[4] = {0x3f80, 0xc020, 0x3fc0, 0x0001}, h[5] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00};
  const float f[3] = {3.14159f, -0.0f, 1e-38f};
  const double g = 0.1;
  for (int i = 0; i < 4; i++) put16(d + 1 + 2 * i, bf[i]);
  for (int i = 0; i < 5; i++) put16(d + 9 + 2 * i, h[i]);
  memcpy(d + 19, f, 12);
  memcpy(d + 31, &g, 8);
  d[39] = 0x38, d[40] = 0x7e, d[41] = 0x81;
  st_model *m = open_ok(put("f.safetensors",
                            "{'u':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
                            "'bf':{'dtype':'BF16','shape':[4],'data_offsets':[1,9]},"
                            "'h':{'dtype':'F16','shape':[5],'data_offsets':[9,19]},"
                            "'f':{'dtype':'F32','shape':[3],'data_offsets':[19,31]},"
                            "'g':{'dtype':'F64','shape':[],'data_offsets':[31,39]},"
                            "'e':{'dtype':'F8_E4M3','shape':[3],'data_offsets':[39,42]}}",
                            d, sizeof d));
  float out[5];
  qvl_err err = {0};
  const float want_bf[4] = {1.0f, -2.5f, 1.5f, 0x1p-133f};
  const float want_h[5] = {1.0f, -2.0f, 0x1p-24f, 65504.0f, __builtin_inff()};
  const float want_g[1] = {0.1f}, want_e[3] = {1.0f, 448.0f, -0x1p-9f};
  assert_int_equal(st_to_f32(st_find(m, "bf"), out, &err), QVL_OK);
  expect_bits(out, want_bf, 4);
  assert_int_equal(st_to_f32(st_find(m, "h"), out, &err), QVL_OK);
  expect_bits(out, want_h, 5);
  assert_int_equal(st_to_f32(st_find(m, "f"), out, &err), QVL_OK);
  expect_bits(out, f, 3);
  assert_int_equal(st_to_f32(st_find(m, "g"), out, &err), QVL_OK);
  expect_bits(out, want_g, 1);
  assert_int_equal(st_to_f32(st_find(m, "e"), out, &err), QVL_OK);
  expect_bits(out, want_e, 3);
  st_close(m);
}

static void test_to_i64(void **state) {
  (void)state;
  uint8_t d[35];
  const int8_t i8[2] = {-1, -128};
  const int16_t i16 = -300;
  const uint16_t u16 = 65535;
  const uint32_t u32 = 4294967295u;
  const int64_t i64 = INT64_MIN;
  const uint64_t u64[2] = {9223372036854775807ull, 9223372036854775808ull};
  d[0] = 7; /* U8 */
  memcpy(d + 1, i8, 2);
  memcpy(d + 3, &i16, 2);
  memcpy(d + 5, &u16, 2);
  memcpy(d + 7, &u32, 4);
  memcpy(d + 11, &i64, 8);
  memcpy(d + 19, u64, 16);
  const char *path = put("i.safetensors",
                         "{'u8':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
                         "'i8':{'dtype':'I8','shape':[2],'data_offsets':[1,3]},"
                         "'i16':{'dtype':'I16','shape':[1],'data_offsets':[3,5]},"
                         "'u16':{'dtype':'U16','shape':[1],'data_offsets':[5,7]},"
                         "'u32':{'dtype':'U32','shape':[1],'data_offsets':[7,11]},"
                         "'i64':{'dtype':'I64','shape':[1],'data_offsets':[11,19]},"
                         "'u64':{'dtype':'U64','shape':[2],'data_offsets':[19,35]}}",
                         d, sizeof d);
  st_model *m = open_ok(path);
  int64_t out[2];
  qvl_err err = {0};
  assert_int_equal(st_to_i64(st_find(m, "u8"), out, &err), QVL_OK);
  assert_int_equal(out[0], 7);
  assert_int_equal(st_to_i64(st_find(m, "i8"), out, &err), QVL_OK);
  assert_true(out[0] == -1 && out[1] == -128);
  assert_int_equal(st_to_i64(st_find(m, "i16"), out, &err), QVL_OK);
  assert_true(out[0] == -300);
  assert_int_equal(st_to_i64(st_find(m, "u16"), out, &err), QVL_OK);
  assert_int_equal(out[0], 65535);
  assert_int_equal(st_to_i64(st_find(m, "u32"), out, &err), QVL_OK);
  assert_int_equal(out[0], 4294967295ll);
  assert_int_equal(st_to_i64(st_find(m, "i64"), out, &err), QVL_OK);
  assert_true(out[0] == INT64_MIN);
  /* 2^63 does not fit. */
  assert_int_equal(st_to_i64(st_find(m, "u64"), out, &err), QVL_ERR_UNSUPPORTED);
  assert_true(out[0] == INT64_MAX);
  tu_assert_msg_has(err.msg, "i.safetensors", "\"u64\"");
  tu_assert_msg_has(err.msg, "does not fit in int64", NULL);
  st_close(m);
}

static void test_convert_unsupported(void **state) {
  (void)state;
  st_model *m = open_ok(put("ids.safetensors",
                            "{'ids':{'dtype':'I64','shape':[2],'data_offsets':[0,16]},"
                            "'w':{'dtype':'F32','shape':[1],'data_offsets':[16,20]}}",
                            zeros, 20));
  float f[2];
  int64_t i[2];
  qvl_err err = {0};
  assert_int_equal(st_to_f32(st_find(m, "ids"), f, &err), QVL_ERR_UNSUPPORTED);
  tu_assert_msg_has(err.msg, "ids.safetensors", "\"ids\"");
  tu_assert_msg_has(err.msg, "cannot convert I64 to f32", NULL);
  qvl_err_clear(&err);
  assert_int_equal(st_to_i64(st_find(m, "w"), i, &err), QVL_ERR_UNSUPPORTED);
  tu_assert_msg_has(err.msg, "\"w\"", "cannot convert F32 to int64");
  st_close(m);
}

/* ---- writing ---------------------------------------------------------------------------------- */

static void sharded_entries(st_entry *e, float (*data)[16]) {
  static const char *names[6] = {"b.0", "a.1", "c.2", "a.0", "b.1", "c.0"};
  for (int i = 0; i < 6; i++) {
    for (int k = 0; k < 16; k++) data[i][k] = (float)(100 * i + k);
    e[i] = (st_entry){names[i], ST_F32, 2, {4, 4}, i == 2 || i == 5 ? NULL : data[i]};
  }
}

static void test_sharded_round_trip(void **state) {
  (void)state;
  st_entry e[6];
  float data[6][16];
  fill_log log = {{0}};
  qvl_err err = {0};
  sharded_entries(e, data);
  /* 64 bytes per tensor, at most 128 per shard: three shards of two. */
  assert_int_equal(st_write_sharded(g_dir, e, 6, fill_pattern, &log, 128, &err), QVL_OK);
  assert_int_equal(log.calls[2] + log.calls[5], 2);
  const char *shards[3] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                           "model-00003-of-00003.safetensors"};
  for (int s = 0; s < 3; s++) assert_true(exists(in_dir(shards[s])));
  assert_false(exists(in_dir("model.safetensors")));
  assert_false(exists(in_dir("model.safetensors.index.json.tmp")));

  FILE *f = fopen(in_dir("model.safetensors.index.json"), "rb");
  char idx[4096] = {0};
  assert_true(fread(idx, 1, sizeof idx - 1, f) > 0);
  fclose(f);
  assert_non_null(strstr(idx, "\"total_size\": 384"));
  const char *a0 = strstr(idx, "\"a.0\""), *a1 = strstr(idx, "\"a.1\""), *c2 = strstr(idx, "\"c.2\"");
  assert_true(a0 && a1 && c2 && a0 < a1 && a1 < c2); /* weight_map sorted by name */
  assert_non_null(strstr(idx, "\"c.2\": \"model-00002-of-00003.safetensors\""));

  const char *paths[2] = {g_dir, in_dir("model.safetensors.index.json")};
  for (int p = 0; p < 2; p++) {
    st_model *m = open_ok(paths[p]);
    assert_int_equal(st_count(m), 6);
    for (int i = 0; i < 6; i++) {
      if (e[i].data) check_tensor(m, &e[i], data[i]);
      else expect_pattern(m, &e[i], i);
      tu_assert_msg_has(st_find(m, e[i].name)->file, shards[i / 2], NULL);
    }
    st_close(m);
  }
}

static void test_sharded_one_shard(void **state) {
  (void)state;
  st_entry e[6];
  float data[6][16];
  fill_log log = {{0}};
  qvl_err err = {0};
  sharded_entries(e, data);
  put_index("{'weight_map':{}}"); /* stale: must not survive */
  assert_int_equal(st_write_sharded(g_dir, e, 6, fill_pattern, &log, 1 << 20, &err), QVL_OK);
  assert_true(exists(in_dir("model.safetensors")));
  assert_false(exists(in_dir("model.safetensors.index.json")));
  st_model *m = open_ok(g_dir);
  assert_int_equal(st_count(m), 6);
  for (int i = 0; i < 6; i++)
    if (e[i].data) check_tensor(m, &e[i], data[i]);
  st_close(m);
}

static int fill_fails(void *ud, int i, void *dst, size_t nbytes, qvl_err *err) {
  (void)ud, (void)dst, (void)nbytes;
  return qvl_fail(err, QVL_ERR_IO, "source tensor %d unreadable", i);
}

static void test_write_failures_leave_nothing(void **state) {
  (void)state;
  const float x[2] = {1, 2};
  const st_entry e[2] = {{"x", ST_F32, 1, {2}, x}, {"y", ST_F32, 1, {2}, NULL}};
  qvl_err err = {0};
  const char *path = in_dir("w.safetensors");
  assert_int_equal(st_write(path, e, 2, fill_fails, NULL, &err), QVL_ERR_IO);
  tu_assert_msg_has(err.msg, "source tensor 1 unreadable", NULL);
  assert_false(exists(path));
  assert_false(exists(in_dir("w.safetensors.tmp")));

  qvl_err_clear(&err);
  const char *bad = in_dir("no/such/dir/w.safetensors");
  assert_int_equal(st_write(bad, e, 1, NULL, NULL, &err), QVL_ERR_IO);
  tu_assert_msg_has(err.msg, bad, "cannot create");
}

static void test_write_rejects_bad_entries(void **state) {
  (void)state;
  const float x[2] = {1, 2};
  const st_entry dup[2] = {{"x", ST_F32, 1, {2}, x}, {"x", ST_F32, 1, {2}, x}};
  const st_entry nodata[1] = {{"y", ST_F32, 1, {2}, NULL}};
  const st_entry negative[1] = {{"z", ST_F32, 1, {-2}, x}};
  const char *path = in_dir("w.safetensors");
  qvl_err err = {0};
  assert_int_equal(st_write(path, dup, 2, NULL, NULL, &err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err.msg, "\"x\"", "given twice");
  qvl_err_clear(&err);
  assert_int_equal(st_write(path, nodata, 1, NULL, NULL, &err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err.msg, "\"y\"", "no fill function");
  qvl_err_clear(&err);
  assert_int_equal(st_write(path, negative, 1, NULL, NULL, &err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err.msg, "\"z\"", "negative");
  assert_false(exists(path));
}

/* ---- one test per validation rule ------------------------------------------------------------- */

#define A_F32_2 "{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}"

static void test_open_missing_path(void **state) {
  (void)state;
  expect_fail(in_dir("nope.safetensors"), QVL_ERR_IO, "nope.safetensors", "cannot open", NULL);
}

static void test_truncated(void **state) {
  (void)state;
  const char *path = in_dir("t.safetensors");
  tu_write_file(path, "\x02\0\0\0\0", 5);
  expect_fail(path, QVL_ERR_FORMAT, "t.safetensors", "truncated", "5 bytes");
}

static void test_header_past_eof(void **state) {
  (void)state;
  expect_fail(put_raw("t.safetensors", 1000, A_F32_2, zeros, 8), QVL_ERR_FORMAT, "t.safetensors",
              "header length 1000 runs past the end of the file", NULL);
}

static void test_header_too_large(void **state) {
  (void)state;
  expect_fail(put_raw("t.safetensors", 100000001, A_F32_2, zeros, 8), QVL_ERR_FORMAT, "t.safetensors",
              "header length 100000001 exceeds the 100000000-byte limit", NULL);
}

static void test_header_not_brace(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", " {}", NULL, 0), QVL_ERR_FORMAT, "t.safetensors",
              "does not start with '{'", NULL);
  expect_fail(put("t.safetensors", "[]", NULL, 0), QVL_ERR_FORMAT, "does not start with '{'", NULL, NULL);
}

static void test_header_bad_json(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32',", NULL, 0), QVL_ERR_FORMAT, "t.safetensors",
              "header is not valid JSON", NULL);
}

static void test_header_trailing_garbage(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{}   x", NULL, 0), QVL_ERR_FORMAT, "t.safetensors",
              "non-space bytes after the JSON object", NULL);
}

static void test_header_not_utf8(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'\xc3\x28':1}", NULL, 0), QVL_ERR_FORMAT, "t.safetensors",
              "header byte 2 (0xc3) is not valid UTF-8", NULL);
  expect_fail(put("t.safetensors", "{'\x01':1}", NULL, 0), QVL_ERR_FORMAT, "t.safetensors",
              "header byte 2 (0x01) is a control character", NULL);
}

static void test_entry_not_object(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':[1]}", NULL, 0), QVL_ERR_FORMAT, "t.safetensors", "\"a\"",
              "entry is not an object");
}

static void test_missing_field(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','data_offsets':[0,8]}}", zeros, 8), QVL_ERR_FORMAT,
              "t.safetensors", "\"a\"", "no \"shape\"");
}

static void test_unknown_dtype(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F24','shape':[2],'data_offsets':[0,6]}}", zeros, 6),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "unknown dtype \"F24\"");
}

static void test_negative_shape(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[2,-1],'data_offsets':[0,8]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "shape[1] is negative (-1)");
}

static void test_non_integer_shape(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[1.5],'data_offsets':[0,8]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "shape[0] is not an integer (1.5)");
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':['2'],'data_offsets':[0,8]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "shape[0] is not a number");
}

static void test_too_many_dims(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[1,1,1,1,1,1,1,1,2],'data_offsets':[0,8]}}",
                  zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "shape has more than 8 dims");
}

static void test_numel_overflow(void **state) {
  (void)state;
  expect_fail(put("t.safetensors",
                  "{'a':{'dtype':'F32','shape':[4294967296,4294967296],'data_offsets':[0,8]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "overflows");
}

static void test_offsets_begin_after_end(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[1],'data_offsets':[8,4]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "data_offsets [8, 4] have begin > end");
}

static void test_offsets_malformed(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4,8]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "data_offsets is not a [begin, end] pair");
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[1],'data_offsets':[-4,0]}}", zeros, 8),
              QVL_ERR_FORMAT, "\"a\"", "data_offsets[0] is negative", NULL);
}

static void test_offsets_out_of_bounds(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[4],'data_offsets':[0,16]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"", "data_offsets [0, 16) end past the 8 bytes of data");
}

static void test_overlap(void **state) {
  (void)state;
  expect_fail(put("t.safetensors",
                  "{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                  "'b':{'dtype':'F32','shape':[2],'data_offsets':[4,12]}}",
                  zeros, 12),
              QVL_ERR_FORMAT, "t.safetensors", "tensor \"b\": data_offsets [4, 12) overlap tensor \"a\"",
              "ending at 8");
}

static void test_gap(void **state) {
  (void)state;
  expect_fail(put("t.safetensors",
                  "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
                  "'b':{'dtype':'F32','shape':[1],'data_offsets':[8,12]}}",
                  zeros, 12),
              QVL_ERR_FORMAT, "t.safetensors", "tensor \"b\": gap: bytes [4, 8)", NULL);
}

static void test_trailing_bytes(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "trailing bytes: [4, 8)", NULL);
  expect_fail(put("t.safetensors", "{}", zeros, 1), QVL_ERR_FORMAT, "trailing bytes: [0, 1)", NULL, NULL);
}

static void test_byte_count_mismatch(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'a':{'dtype':'BF16','shape':[3],'data_offsets':[0,4]}}", zeros, 4),
              QVL_ERR_FORMAT, "t.safetensors", "\"a\"",
              "data_offsets [0, 4) hold 4 bytes but BF16 [3] needs 6");
}

static void test_duplicate_name(void **state) {
  (void)state;
  expect_fail(put("t.safetensors",
                  "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
                  "'a':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}",
                  zeros, 8),
              QVL_ERR_FORMAT, "t.safetensors", "duplicate tensor \"a\"", NULL);
}

static void test_bad_metadata(void **state) {
  (void)state;
  expect_fail(put("t.safetensors", "{'__metadata__':{'format':'pt','step':1}}", NULL, 0), QVL_ERR_FORMAT,
              "t.safetensors", "__metadata__ value of \"step\" is not a string", NULL);
  expect_fail(put("t.safetensors", "{'__metadata__':'pt'}", NULL, 0), QVL_ERR_FORMAT, "t.safetensors",
              "__metadata__ is not an object", NULL);
}

/* ---- sharded checkpoints and directories ------------------------------------------------------ */

#define SHARD_AB                                        \
  "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}," \
  "'b':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}"
#define SHARD_BC                                        \
  "{'b':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}," \
  "'c':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}"

static void test_index_ok(void **state) {
  (void)state;
  put("s1.safetensors", SHARD_AB, zeros, 8);
  put("s2.safetensors", "{'c':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", zeros, 4);
  put_index("{'metadata':{'total_size':12},"
            "'weight_map':{'a':'s1.safetensors','b':'s1.safetensors','c':'s2.safetensors'}}");
  st_model *m = open_ok(g_dir);
  assert_int_equal(st_count(m), 3);
  tu_assert_msg_has(st_find(m, "c")->file, "s2.safetensors", NULL);
  st_close(m);
}

static void test_index_missing_shard(void **state) {
  (void)state;
  put("s1.safetensors", SHARD_AB, zeros, 8);
  put_index("{'weight_map':{'a':'s1.safetensors','b':'s1.safetensors','c':'gone.safetensors'}}");
  expect_fail(g_dir, QVL_ERR_MISSING, "model.safetensors.index.json",
              "gone.safetensors (holding tensor \"c\")", "does not exist");
}

static void test_index_tensor_not_in_shard(void **state) {
  (void)state;
  put("s1.safetensors", SHARD_AB, zeros, 8);
  put_index("{'weight_map':{'a':'s1.safetensors','b':'s1.safetensors','z':'s1.safetensors'}}");
  expect_fail(g_dir, QVL_ERR_FORMAT, "model.safetensors.index.json",
              "weight_map puts tensor \"z\" in s1.safetensors, which has no such tensor", NULL);
}

static void test_index_path_traversal(void **state) {
  (void)state;
  put("s1.safetensors", SHARD_AB, zeros, 8);
  put_index("{'weight_map':{'a':'../s1.safetensors','b':'s1.safetensors'}}");
  expect_fail(g_dir, QVL_ERR_FORMAT, "model.safetensors.index.json",
              "shard \"../s1.safetensors\" for tensor \"a\" is not a plain file name", NULL);
  put_index("{'weight_map':{'a':'sub/s1.safetensors'}}");
  expect_fail(g_dir, QVL_ERR_FORMAT, "\"sub/s1.safetensors\"", "not a plain file name", NULL);
}

static void test_index_unlisted_tensor(void **state) {
  (void)state;
  put("s1.safetensors", SHARD_AB, zeros, 8);
  put_index("{'weight_map':{'a':'s1.safetensors'}}");
  expect_fail(g_dir, QVL_ERR_FORMAT, "s1.safetensors: tensor \"b\" is not listed in the weight_map",
              "model.safetensors.index.json", NULL);
}

static void test_index_duplicate_across_shards(void **state) {
  (void)state;
  put("s1.safetensors", SHARD_AB, zeros, 8);
  put("s2.safetensors", SHARD_BC, zeros, 8);
  put_index("{'weight_map':{'a':'s1.safetensors','b':'s1.safetensors','c':'s2.safetensors'}}");
  expect_fail(g_dir, QVL_ERR_FORMAT, "s2.safetensors: tensor \"b\" is also in", "s1.safetensors",
              "duplicate across shards");
}

static void test_index_malformed(void **state) {
  (void)state;
  put_index("{'weight_map':{'a':1}}");
  expect_fail(g_dir, QVL_ERR_FORMAT, "model.safetensors.index.json",
              "weight_map value for tensor \"a\" is not a string", NULL);
  put_index("{'metadata':{}}");
  expect_fail(g_dir, QVL_ERR_FORMAT, "model.safetensors.index.json", "no \"weight_map\" object", NULL);
  put_index("{'weight_map':");
  expect_fail(g_dir, QVL_ERR_FORMAT, "model.safetensors.index.json", "not valid JSON", NULL);
}

static void test_dir_two_files_no_index(void **state) {
  (void)state;
  put("x.safetensors", A_F32_2, zeros, 8);
  put("y.safetensors", A_F32_2, zeros, 8);
  expect_fail(g_dir, QVL_ERR_FORMAT, g_dir, "2 *.safetensors files (x.safetensors, y.safetensors)",
              "no model.safetensors.index.json");
}

static void test_dir_choices(void **state) {
  (void)state;
  expect_fail(g_dir, QVL_ERR_MISSING, g_dir, "no model.safetensors.index.json", NULL);
  put("weights.safetensors", A_F32_2, zeros, 8); /* the only file: taken whatever its name */
  st_model *m = open_ok(g_dir);
  assert_non_null(st_find(m, "a"));
  st_close(m);
  put("model.safetensors", "{}", NULL, 0); /* model.safetensors is preferred */
  m = open_ok(g_dir);
  assert_int_equal(st_count(m), 0);
  st_close(m);
}

/* ---- corrupted files: never a crash, always a clean one-line error ---------------------------- */

static void open_corrupt(const char *path, const uint8_t *bytes, size_t n, int must_fail) {
  tu_write_file(path, bytes, n);
  st_model *m = NULL;
  qvl_err err = {0};
  int rc = st_open(&m, path, &err);
  if (rc == QVL_OK) {
    if (must_fail) fail_msg("%zu-byte truncation of %s opened", n, path);
    float out[64];
    for (int i = 0; i < st_count(m); i++)
      if (st_at(m, i)->numel <= 64) st_to_f32(st_at(m, i), out, NULL);
    st_close(m);
    return;
  }
  assert_null(m);
  assert_true(rc < 0);
  assert_int_equal(err.code, rc);
  tu_assert_msg_has(err.msg, "fuzz.safetensors", NULL);
}

static void test_fuzz_corruptions(void **state) {
  (void)state;
  const uint16_t bf[6] = {1, 2, 3, 4, 5, 6};
  const float f[3] = {1, 2, 3};
  const st_entry e[3] = {
    {"model.visual.w", ST_BF16, 2, {2, 3}, bf}, {"s", ST_F32, 0, {0}, f}, {"v", ST_F32, 1, {2}, f + 1}};
  const char *src = in_dir("src.safetensors"), *path = in_dir("fuzz.safetensors");
  qvl_err err = {0};
  assert_int_equal(st_write(src, e, 3, NULL, NULL, &err), QVL_OK);
  FILE *fp = fopen(src, "rb");
  uint8_t good[1024], bad[1024];
  size_t n = fread(good, 1, sizeof good, fp);
  fclose(fp);
  size_t hlen = good[0] | (size_t)good[1] << 8;
  assert_true(n > 8 + hlen && n < sizeof good);
  static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x20, 0x40, 0x80, 0xff};
  for (size_t pos = 0; pos < 8 + hlen + 4; pos++) {
    for (size_t k = 0; k < sizeof masks; k++) {
      memcpy(bad, good, n);
      bad[pos] ^= masks[k];
      open_corrupt(path, bad, n, 0);
    }
  }
  for (int t = 0; t < 200; t++) open_corrupt(path, good, (size_t)t * n / 200, 1);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
  const struct CMUnitTest tests[] = {
    T(test_round_trip),
    T(test_empty_files_ok),
    T(test_to_f32_exact),
    T(test_to_i64),
    T(test_convert_unsupported),
    T(test_sharded_round_trip),
    T(test_sharded_one_shard),
    T(test_write_failures_leave_nothing),
    T(test_write_rejects_bad_entries),
    T(test_open_missing_path),
    T(test_truncated),
    T(test_header_past_eof),
    T(test_header_too_large),
    T(test_header_not_brace),
    T(test_header_bad_json),
    T(test_header_trailing_garbage),
    T(test_header_not_utf8),
    T(test_entry_not_object),
    T(test_missing_field),
    T(test_unknown_dtype),
    T(test_negative_shape),
    T(test_non_integer_shape),
    T(test_too_many_dims),
    T(test_numel_overflow),
    T(test_offsets_begin_after_end),
    T(test_offsets_malformed),
    T(test_offsets_out_of_bounds),
    T(test_overlap),
    T(test_gap),
    T(test_trailing_bytes),
    T(test_byte_count_mismatch),
    T(test_duplicate_name),
    T(test_bad_metadata),
    T(test_index_ok),
    T(test_index_missing_shard),
    T(test_index_tensor_not_in_shard),
    T(test_index_path_traversal),
    T(test_index_unlisted_tensor),
    T(test_index_duplicate_across_shards),
    T(test_index_malformed),
    T(test_dir_two_files_no_index),
    T(test_dir_choices),
    T(test_fuzz_corruptions),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
