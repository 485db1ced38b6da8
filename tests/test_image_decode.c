/* Image decoding: every format variant the issue lists decodes to what Pillow's convert("RGB") gives
 * (exact where the format is lossless, within JPEG's error otherwise), and every kind of bad input gets its
 * own clear error: truncated, corrupt, zero-size, unsupported, over the pixel limit (from the header). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"
#include "img_encode.h"
#include "testutil.h"

enum { W = 37, H = 23 };

static uint8_t *synth(int ch, uint32_t seed) {
  uint8_t *p = malloc((size_t)W * H * ch);
  enc_synth(p, W, H, ch, seed);
  return p;
}

static img_rgb decode_ok(const uint8_t *data, size_t len, int white) {
  img_rgb im;
  qvl_err err = {0};
  if (img_decode(&im, data, len, white, 0, "img", &err)) fail_msg("decode failed: %s", err.msg);
  assert_int_equal(im.w, W);
  assert_int_equal(im.h, H);
  img_header hd;
  assert_int_equal(img_probe(&hd, data, len, "img", &err), QVL_OK);
  assert_int_equal(hd.w, W);
  assert_int_equal(hd.h, H);
  return im;
}

static int max_diff(const uint8_t *a, const uint8_t *b, size_t n) {
  int m = 0;
  for (size_t i = 0; i < n; i++) {
    int d = abs((int)a[i] - (int)b[i]);
    if (d > m) m = d;
  }
  return m;
}

/* ---- JPEG ---- */

static void test_jpeg_variants(void **state) {
  (void)state;
  uint8_t *rgb = synth(3, 7);
  static const int subs[] = {TJSAMP_444, TJSAMP_422, TJSAMP_420};
  for (int prog = 0; prog < 2; prog++)
    for (int s = 0; s < 3; s++) {
      size_t n;
      uint8_t *jpg = enc_jpeg(rgb, W, H, TJPF_RGB, subs[s], 95, prog, &n);
      img_rgb im = decode_ok(jpg, n, 0);
      int d = max_diff(im.px, rgb, (size_t)W * H * 3);
      if (d > (subs[s] == TJSAMP_444 ? 24 : 48)) fail_msg("subsampling %d progressive %d: max diff %d", s, prog, d);
      free(im.px), free(jpg);
    }
  free(rgb);
}

static void test_jpeg_gray(void **state) {
  (void)state;
  uint8_t *g = synth(1, 3);
  size_t n;
  uint8_t *jpg = enc_jpeg(g, W, H, TJPF_GRAY, TJSAMP_GRAY, 100, 0, &n);
  img_rgb im = decode_ok(jpg, n, 0);
  for (int i = 0; i < W * H; i++) { /* mode "L" -> RGB replicates */
    assert_int_equal(im.px[3 * i], im.px[3 * i + 1]);
    assert_int_equal(im.px[3 * i], im.px[3 * i + 2]);
    assert_true(abs(im.px[3 * i] - g[i]) <= 3);
  }
  free(im.px), free(jpg), free(g);
}

/* Flat CMYK patches survive JPEG almost exactly; Pillow reads every 4-component JPEG inverted ("CMYK;I")
 * and converts with r = nk - MULDIV255(c, nk): raw (255,255,255,255) is white, raw k = 0 is black, raw
 * c = 0 is cyan. */
static void test_jpeg_cmyk(void **state) {
  (void)state;
  static const uint8_t raw[4][4] = {{255, 255, 255, 255}, {255, 255, 255, 0}, {0, 255, 255, 255}, {255, 128, 255, 255}};
  static const uint8_t want[4][3] = {{255, 255, 255}, {0, 0, 0}, {0, 255, 255}, {255, 128, 255}};
  uint8_t *px = malloc((size_t)W * H * 4);
  for (int k = 0; k < 4; k++) {
    for (int i = 0; i < W * H; i++) memcpy(px + 4 * i, raw[k], 4);
    size_t n;
    uint8_t *jpg = enc_jpeg(px, W, H, TJPF_CMYK, TJSAMP_444, 100, 0, &n);
    img_rgb im = decode_ok(jpg, n, 0);
    for (int c = 0; c < 3; c++)
      if (abs(im.px[(11 * W + 17) * 3 + c] - want[k][c]) > 2)
        fail_msg("CMYK %d channel %d: got %d, want %d", k, c, im.px[(11 * W + 17) * 3 + c], want[k][c]);
    free(im.px), free(jpg);
  }
  free(px);
}

/* ---- PNG: lossless, so exact ---- */

static void test_png_rgb_rgba(void **state) {
  (void)state;
  uint8_t *rgba = synth(4, 11), *rgb = synth(3, 11);
  size_t n;
  uint8_t *png = enc_png(rgb, W, H, PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, &n);
  img_rgb im = decode_ok(png, n, 1);
  assert_memory_equal(im.px, rgb, (size_t)W * H * 3);
  free(im.px), free(png);
  png = enc_png(rgba, W, H, PNG_COLOR_TYPE_RGBA, 8, 1, NULL, 0, NULL, 0, &n); /* interlaced too */
  im = decode_ok(png, n, 0);
  for (int i = 0; i < W * H; i++) assert_memory_equal(im.px + 3 * i, rgba + 4 * i, 3); /* HF: alpha dropped */
  free(im.px);
  im = decode_ok(png, n, 1);
  for (int i = 0; i < W * H * 3; i++) { /* qwen-vl-utils: on white, rounded (x + 127) / 255 */
    int a = rgba[4 * (i / 3) + 3], c = rgba[4 * (i / 3) + i % 3];
    int want = (255 * (255 - a) + c * a + 127) / 255;
    if (im.px[i] != want) fail_msg("pixel %d: got %d, want %d (c %d, a %d)", i / 3, im.px[i], want, c, a);
  }
  free(im.px), free(png), free(rgba), free(rgb);
}

/* 16-bit samples: Pillow keeps the high byte ("RGB;16B"); 16-bit gray opens as "I;16" and convert clips. */
static void test_png_16bit(void **state) {
  (void)state;
  uint8_t *px = malloc((size_t)W * H * 8);
  for (int i = 0; i < W * H * 8; i++) px[i] = (uint8_t)(i * 37 + i / 5);
  size_t n;
  uint8_t *png = enc_png(px, W, H, PNG_COLOR_TYPE_RGB, 16, 0, NULL, 0, NULL, 0, &n);
  img_rgb im = decode_ok(png, n, 0);
  for (int i = 0; i < W * H * 3; i++) assert_int_equal(im.px[i], px[2 * i]);
  free(im.px), free(png);
  for (int i = 0; i < W * H; i++)
    px[2 * i] = (uint8_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 1 : 0x80), px[2 * i + 1] = (uint8_t)i;
  png = enc_png(px, W, H, PNG_COLOR_TYPE_GRAY, 16, 0, NULL, 0, NULL, 0, &n);
  im = decode_ok(png, n, 0);
  for (int i = 0; i < W * H; i++) {
    int v = px[2 * i] << 8 | px[2 * i + 1], want = v > 255 ? 255 : v;
    assert_int_equal(im.px[3 * i], want);
    assert_int_equal(im.px[3 * i + 2], want);
  }
  free(im.px), free(png), free(px);
}

/* Gray+alpha: 8-bit is "LA" (never composited), 16-bit is "RGBA" (composited by qwen-vl-utils). */
static void test_png_gray_alpha(void **state) {
  (void)state;
  uint8_t *px = synth(4, 5);
  size_t n;
  uint8_t *png = enc_png(px, W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, NULL, 0, NULL, 0, &n);
  img_rgb im = decode_ok(png, n, 1);
  for (int i = 0; i < W * H; i++) assert_int_equal(im.px[3 * i + 1], px[2 * i]);
  free(im.px), free(png);
  png = enc_png(px, W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 16, 0, NULL, 0, NULL, 0, &n);
  im = decode_ok(png, n, 1);
  for (int i = 0; i < W * H; i++) {
    int g = px[4 * i], a = px[4 * i + 2], want = (255 * (255 - a) + g * a + 127) / 255;
    assert_int_equal(im.px[3 * i], want);
  }
  free(im.px), free(png), free(px);
}

/* Palette + tRNS: mode "P" converts through the palette and ignores transparency, in both semantics. */
static void test_png_palette_and_low_depth(void **state) {
  (void)state;
  uint8_t pal[16 * 3], trns[16], idx[W * H], bits[W * H];
  for (int i = 0; i < 16; i++)
    pal[3 * i] = (uint8_t)(i * 16), pal[3 * i + 1] = (uint8_t)(200 - i), pal[3 * i + 2] = 7, trns[i] = (uint8_t)(i * 9);
  for (int i = 0; i < W * H; i++) idx[i] = (uint8_t)((i * 7) % 16);
  size_t n;
  uint8_t *png = enc_png(idx, W, H, PNG_COLOR_TYPE_PALETTE, 8, 1, pal, 16, trns, 16, &n);
  img_rgb im = decode_ok(png, n, 1);
  for (int i = 0; i < W * H; i++) assert_memory_equal(im.px + 3 * i, pal + 3 * idx[i], 3);
  free(im.px), free(png);
  /* 2-bit gray: Pillow's "L;2" scales by 85 */
  int stride = (W * 2 + 7) / 8;
  memset(bits, 0, sizeof bits);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) bits[y * stride + x / 4] |= (uint8_t)(((x + y) % 4) << (6 - 2 * (x % 4)));
  png = enc_png(bits, W, H, PNG_COLOR_TYPE_GRAY, 2, 0, NULL, 0, NULL, 0, &n);
  im = decode_ok(png, n, 0);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) assert_int_equal(im.px[(y * W + x) * 3], ((x + y) % 4) * 85);
  free(im.px), free(png);
}

/* ---- WebP ---- */

static void test_webp(void **state) {
  (void)state;
  uint8_t *rgba = synth(4, 9), *rgb = synth(3, 9);
  size_t n;
  uint8_t *w = enc_webp(rgb, W, H, 0, 1, &n);
  img_rgb im = decode_ok(w, n, 0);
  assert_memory_equal(im.px, rgb, (size_t)W * H * 3);
  free(im.px), free(w);
  w = enc_webp(rgba, W, H, 1, 1, &n);
  im = decode_ok(w, n, 1);
  for (int i = 0; i < W * H * 3; i++) {
    int a = rgba[4 * (i / 3) + 3], c = rgba[4 * (i / 3) + i % 3];
    assert_int_equal(im.px[i], (255 * (255 - a) + c * a + 127) / 255);
  }
  free(im.px), free(w);
  w = enc_webp(rgb, W, H, 0, 0, &n); /* lossy */
  im = decode_ok(w, n, 0);
  assert_true(max_diff(im.px, rgb, (size_t)W * H * 3) < 80);
  free(im.px), free(w), free(rgba), free(rgb);
}

/* ---- errors ---- */

static void expect_error(const uint8_t *data, size_t len, int64_t limit, int code, const char *n1, const char *n2) {
  img_rgb im = {1, 1, (uint8_t *)1};
  qvl_err err = {0};
  int rc = img_decode(&im, data, len, 0, limit, "image 4", &err);
  if (rc != code) fail_msg("rc %d (%s), expected %d; message: %s", rc, qvl_status_name(rc), code, err.msg);
  assert_null(im.px);
  tu_assert_msg_has(err.msg, "image 4: ", n1);
  if (n2) tu_assert_msg_has(err.msg, n2, NULL);
}

static uint8_t *sample(int kind, size_t *n) {
  uint8_t *rgb = synth(4, 1), *out;
  if (kind == 0) out = enc_jpeg(rgb, W, H, TJPF_RGB, TJSAMP_420, 90, 0, n);
  else if (kind == 1) out = enc_png(rgb, W, H, PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, n);
  else out = enc_webp(rgb, W, H, 0, 0, n);
  free(rgb);
  return out;
}

static void test_truncated(void **state) {
  (void)state;
  size_t n;
  uint8_t *d = sample(0, &n);
  expect_error(d, n / 2, 0, QVL_ERR_FORMAT, "truncated JPEG", NULL);
  expect_error(d, 40, 0, QVL_ERR_FORMAT, "truncated JPEG header", NULL);
  free(d);
  d = sample(1, &n);
  expect_error(d, n - 20, 0, QVL_ERR_FORMAT, "truncated PNG: chunk \"IDAT\"", NULL);
  d[8] = 0x7f; /* IHDR claims 2 GB: refused before libpng allocates it */
  expect_error(d, n, 0, QVL_ERR_FORMAT, "truncated PNG: chunk \"IHDR\" at offset 8 claims 2130706445 bytes", NULL);
  expect_error(d, 20, 0, QVL_ERR_FORMAT, "PNG", "truncated");
  free(d);
  d = sample(2, &n);
  expect_error(d, n / 2, 0, QVL_ERR_FORMAT, "truncated WebP", NULL);
  expect_error(d, 16, 0, QVL_ERR_FORMAT, "truncated WebP header", NULL);
  free(d);
}

static void test_corrupt(void **state) {
  (void)state;
  size_t n;
  uint8_t *d = sample(0, &n);
  for (size_t i = 0; i + 9 < n; i++) /* SOF0 with 12-bit precision: a baseline JPEG cannot have it */
    if (d[i] == 0xff && d[i + 1] == 0xc0) d[i + 4] = 12;
  expect_error(d, n, 0, QVL_ERR_FORMAT, "corrupt JPEG header", "precision 12");
  free(d);
  d = sample(1, &n);
  d[n / 2] ^= 0x55; /* inside IDAT: the chunk CRC fails */
  expect_error(d, n, 0, QVL_ERR_FORMAT, "corrupt", "PNG");
  free(d);
  d = sample(2, &n);
  d[23] ^= 0xff; /* the VP8 start code 9d 01 2a after "RIFF....WEBPVP8 ...." and the frame tag */
  expect_error(d, n, 0, QVL_ERR_FORMAT, "corrupt WebP header", NULL);
  free(d);
  uint8_t *rgb = synth(3, 2);
  d = enc_webp(rgb, W, H, 0, 1, &n); /* lossless: its entropy-coded data cannot be garbage */
  for (size_t i = 30; i < n; i++) d[i] = (uint8_t)(i * 13);
  expect_error(d, n, 0, QVL_ERR_FORMAT, "corrupt or truncated WebP", NULL);
  free(d), free(rgb);
}

static void put32be(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* PNG's chunk CRC (ISO 3309), bitwise. */
static uint32_t crc32_png(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xffffffffu;
}

/* Rewrites the IHDR size of a PNG and fixes the chunk CRC, so only the size is wrong. */
static void png_set_size(uint8_t *d, uint32_t w, uint32_t h) {
  put32be(d + 16, w), put32be(d + 20, h);
  put32be(d + 29, crc32_png(d + 12, 17));
}

static void test_zero_size(void **state) {
  (void)state;
  size_t n;
  uint8_t *d = sample(1, &n);
  png_set_size(d, 0, H);
  expect_error(d, n, 0, QVL_ERR_FORMAT, "PNG", "zero");
  free(d);
  d = sample(0, &n);
  for (size_t i = 0; i + 9 < n; i++) /* SOF0: FF C0, length, precision, height, width */
    if (d[i] == 0xff && d[i + 1] == 0xc0) d[i + 5] = d[i + 6] = 0;
  expect_error(d, n, 0, QVL_ERR_FORMAT, "JPEG", NULL);
  free(d);
  qvl_err err = {0};
  assert_int_equal(img_check_size(0, 5, 0, "RGB", "image 4", &err), QVL_ERR_FORMAT);
  tu_assert_msg_has(err.msg, "image 4: RGB image has zero size (0x5)", NULL);
  expect_error((const uint8_t *)"", 0, 0, QVL_ERR_FORMAT, "empty image", NULL);
}

static void test_unsupported(void **state) {
  (void)state;
  static const uint8_t gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00;";
  expect_error(gif, sizeof gif - 1, 0, QVL_ERR_UNSUPPORTED, "GIF images are not supported", "JPEG, PNG and WebP");
  expect_error((const uint8_t *)"BM\x36\x00\x00\x00", 6, 0, QVL_ERR_UNSUPPORTED, "BMP", NULL);
  expect_error((const uint8_t *)"hello world", 11, 0, QVL_ERR_UNSUPPORTED, "not a JPEG, PNG or WebP image",
               "68 65 6c 6c");
}

/* The limit is checked on the header: a PNG or JPEG claiming 100000x100000 pixels while holding 37x23 fails
 * with QVL_ERR_LIMIT, not with the corrupt-data error that decoding would hit first. */
static void test_pixel_limit_from_header(void **state) {
  (void)state;
  size_t n;
  uint8_t *d = sample(1, &n);
  png_set_size(d, 100000, 100000);
  expect_error(d, n, IMG_DEFAULT_MAX_INPUT_PIXELS, QVL_ERR_LIMIT,
               "100000x100000 = 10000000000 pixels, over the limit of 178956970", NULL);
  free(d);
  d = sample(0, &n);
  for (size_t i = 0; i + 9 < n; i++)
    if (d[i] == 0xff && d[i + 1] == 0xc0) d[i + 5] = d[i + 7] = 0xf0, d[i + 6] = d[i + 8] = 0;
  expect_error(d, n, IMG_DEFAULT_MAX_INPUT_PIXELS, QVL_ERR_LIMIT, "JPEG image is 61440x61440", "over the limit");
  free(d);
  for (int k = 0; k < 3; k++) {
    d = sample(k, &n);
    expect_error(d, n, W * H - 1, QVL_ERR_LIMIT, "37x23 = 851 pixels, over the limit of 850", NULL);
    img_rgb im;
    qvl_err err = {0};
    assert_int_equal(img_decode(&im, d, n, 0, W * H, "ok", &err), QVL_OK);
    free(im.px), free(d);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jpeg_variants),   cmocka_unit_test(test_jpeg_gray),
      cmocka_unit_test(test_jpeg_cmyk),       cmocka_unit_test(test_png_rgb_rgba),
      cmocka_unit_test(test_png_16bit),       cmocka_unit_test(test_png_gray_alpha),
      cmocka_unit_test(test_png_palette_and_low_depth), cmocka_unit_test(test_webp),
      cmocka_unit_test(test_truncated),       cmocka_unit_test(test_corrupt),
      cmocka_unit_test(test_zero_size),       cmocka_unit_test(test_unsupported),
      cmocka_unit_test(test_pixel_limit_from_header),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
