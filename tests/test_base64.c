/* Strict base64 and data: URLs (RFC 4648 / RFC 2397), and BLAKE2b (RFC 7693) against published vectors.
 * Every rejection has its own case: a decoder that is lenient in one place is lenient everywhere. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "core/hash.h"
#include "testutil.h"

static int decode(const char *in, char *out, size_t *n, qvl_err *err) {
  qvl_err_clear(err);
  int rc = qvl_base64_decode((uint8_t *)out, n, in, strlen(in), "input", err);
  if (!rc) out[*n] = '\0';
  return rc;
}

/* RFC 4648 §10. */
static void test_rfc4648_vectors(void **state) {
  (void)state;
  static const char *v[][2] = {{"", ""},         {"f", "Zg=="},       {"fo", "Zm8="},         {"foo", "Zm9v"},
                               {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char out[16];
    size_t n;
    qvl_err err = {0};
    assert_int_equal(decode(v[i][1], out, &n, &err), QVL_OK);
    assert_int_equal(n, strlen(v[i][0]));
    assert_string_equal(out, v[i][0]);
  }
  char out[8];
  size_t n;
  qvl_err err = {0};
  assert_int_equal(decode("+/+/", out, &n, &err), QVL_OK); /* the two non-alphanumeric characters */
  assert_int_equal((uint8_t)out[0], 0xfb);
  assert_int_equal((uint8_t)out[2], 0xbf);
}

static void expect_bad(const char *in, const char *needle) {
  char out[64];
  size_t n = 99;
  qvl_err err = {0};
  int rc = decode(in, out, &n, &err);
  if (rc != QVL_ERR_FORMAT) fail_msg("\"%s\" decoded (rc %d), expected a format error", in, rc);
  assert_int_equal(n, 0);
  tu_assert_msg_has(err.msg, "input: invalid base64", needle);
}

static void test_bad_length(void **state) {
  (void)state;
  expect_bad("Zg=", "not a multiple of 4");
  expect_bad("Zm9vY", "not a multiple of 4");
  expect_bad("Zm9vYg", "missing padding");
}

static void test_bad_characters(void **state) {
  (void)state;
  expect_bad("Zm9v!A==", "'!' at offset 4");
  expect_bad("Zm9-", "'-' at offset 3"); /* base64url is not accepted */
  expect_bad("Zm9_", "'_' at offset 3");
  expect_bad("Zm\x80v", "byte 0x80 at offset 2");
}

static void test_whitespace_rejected(void **state) {
  (void)state;
  expect_bad("Zm9v YmFy", "byte 0x20 at offset 4");
  expect_bad("Zm9v\nYmFy", "byte 0x0a at offset 4");
  expect_bad("Zm9vYmF\r", "byte 0x0d at offset 7");
  expect_bad("\tZm9vYmF", "whitespace is not accepted");
}

static void test_bad_padding(void **state) {
  (void)state;
  expect_bad("Zg==Zm9v", "'=' at offset 2 before the end");
  expect_bad("====", "misplaced '='");
  expect_bad("Z===", "misplaced '='");
  expect_bad("Zm=v", "misplaced '='");
  expect_bad("Zh==", "nonzero bits before the padding"); /* 'h' leaves 4 nonzero bits */
  expect_bad("Zm9=", "nonzero bits before the padding");
}

static void test_nul_inside(void **state) {
  (void)state;
  char out[8];
  size_t n;
  qvl_err err = {0};
  assert_int_equal(qvl_base64_decode((uint8_t *)out, &n, "Zm9v\0AAA", 8, "input", &err), QVL_ERR_FORMAT);
  tu_assert_msg_has(err.msg, "byte 0x00 at offset 4", NULL);
}

static void test_data_url(void **state) {
  (void)state;
  static const char *ok[] = {"data:image/png;base64,Zm9v", "DATA:image/png;BASE64,Zm9v", "data:;base64,Zm9v",
                             "data:image/jpeg;name=a.jpg;base64,Zm9v"};
  static const char *mime[] = {"image/png", "image/png", "", "image/jpeg"};
  for (int i = 0; i < 4; i++) {
    uint8_t *out = NULL;
    size_t n;
    char m[32];
    qvl_err err = {0};
    assert_int_equal(qvl_data_url_decode(&out, &n, m, sizeof m, ok[i], strlen(ok[i]), "url", &err), QVL_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "foo", 3);
    assert_string_equal(m, mime[i]);
    free(out);
  }
}

static void expect_bad_url(const char *url, int code, const char *needle) {
  uint8_t *out = (uint8_t *)1;
  size_t n;
  char m[32];
  qvl_err err = {0};
  assert_int_equal(qvl_data_url_decode(&out, &n, m, sizeof m, url, strlen(url), "url", &err), code);
  assert_null(out);
  tu_assert_msg_has(err.msg, "url: ", needle);
}

static void test_data_url_errors(void **state) {
  (void)state;
  expect_bad_url("http://example.com/a.png", QVL_ERR_FORMAT, "not a data: URL");
  expect_bad_url("data:image/png;base64", QVL_ERR_FORMAT, "without a ','");
  expect_bad_url("data:image/png,Zm9v", QVL_ERR_FORMAT, "is not base64");
  expect_bad_url("data:image/png;base64x,Zm9v", QVL_ERR_FORMAT, "is not base64");
  expect_bad_url("data:image/png;base64,Zm9v\n", QVL_ERR_FORMAT, "invalid base64");
  expect_bad_url("data:image/png;base64,Zm9", QVL_ERR_FORMAT, "not a multiple of 4");
}

static void hex(char *out, const uint8_t *d, size_t n) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_blake2b(const void *msg, size_t len, size_t outlen, const char *want) {
  uint8_t d[64];
  char h[129];
  qvl_blake2b s;
  qvl_blake2b_init(&s, outlen);
  qvl_blake2b_update(&s, msg, len);
  qvl_blake2b_final(&s, d);
  hex(h, d, outlen);
  assert_string_equal(h, want);
}

/* RFC 7693 Appendix A ("abc", 512 bits) and the empty message; 128-bit digests agree with Python's hashlib
 * (hashlib.blake2b(m, digest_size=16)), an independent implementation. */
static void test_blake2b_vectors(void **state) {
  (void)state;
  check_blake2b("abc", 3, 64,
                "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d"
                "38aa8dbf1925ab92386edd4009923");
  check_blake2b("", 0, 64,
                "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419d25e1031afee585313896444934eb04b903a"
                "685b1448b755d56f701afe9be2ce");
  check_blake2b("abc", 3, 16, "cf4ab791c62b8d2b2109c90275287816");
  uint8_t m[1280];
  for (int i = 0; i < 1280; i++) m[i] = (uint8_t)i;
  check_blake2b(m, 128, 16, "a74787004ef589e31149183900d0294a"); /* exactly one block */
  check_blake2b(m, 1280, 16, "825c7cfa8fc12c18f57b6046a548db9f");
}

/* Any split of the input gives the digest of the whole. */
static void test_blake2b_incremental(void **state) {
  (void)state;
  uint8_t m[300], one[16], two[16];
  for (int i = 0; i < 300; i++) m[i] = (uint8_t)(i * 7);
  qvl_blake2b s;
  qvl_blake2b_init(&s, 16);
  qvl_blake2b_update(&s, m, 300);
  qvl_blake2b_final(&s, one);
  for (size_t cut = 0; cut <= 300; cut += 1) {
    qvl_blake2b_init(&s, 16);
    qvl_blake2b_update(&s, m, cut);
    qvl_blake2b_update(&s, m + cut, 300 - cut);
    qvl_blake2b_final(&s, two);
    assert_memory_equal(one, two, 16);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc4648_vectors), cmocka_unit_test(test_bad_length),
      cmocka_unit_test(test_bad_characters),  cmocka_unit_test(test_whitespace_rejected),
      cmocka_unit_test(test_bad_padding),     cmocka_unit_test(test_nul_inside),
      cmocka_unit_test(test_data_url),        cmocka_unit_test(test_data_url_errors),
      cmocka_unit_test(test_blake2b_vectors), cmocka_unit_test(test_blake2b_incremental),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
