/* The C reference of the GPU colour conversion (image/ycc.h): a JPEG's planes from tjDecompressToYUVPlanes, upsampled
 * and converted by img_ycc_to_rgb, equal tjDecompress2's RGB bit for bit - for the JPEG fixtures and for fresh
 * random-content JPEGs of every TurboJPEG subsampling at odd sizes (including the <= 2-sample-wide chroma planes that
 * libjpeg upsamples by replication instead of the triangle filter). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"
#include "img_encode.h"
#include "img_planes.h"
#include "io/config.h"
#include "testutil.h"

/* Returns the number of differing bytes; prints the first. */
static long compare_with_tj(const uint8_t *jpg, size_t len, const char *what) {
  tj_planes t;
  if (planes_decode(&t, jpg, len)) fail_msg("%s: no planes from TurboJPEG", what);
  int w = t.im.w, h = t.im.h;
  size_t n = (size_t)w * h * 3;
  uint8_t *ref = malloc(n), *got = malloc(n);
  tjhandle tj = tjInitDecompress();
  if (tjDecompress2(tj, jpg, (unsigned long)len, ref, w, 0, h, TJPF_RGB, 0)) fail_msg("%s: %s", what, tjGetErrorStr2(tj));
  tjDestroy(tj);
  memset(got, 0xa5, n); /* poison */
  img_ycc_to_rgb(got, &t.im);
  long bad = 0;
  for (size_t i = 0; i < n; i++)
    if (got[i] != ref[i] && !bad++)
      fprintf(stderr, "%s (%dx%d, subsampling %d): first difference at x %zu y %zu channel %zu: %d, libjpeg %d\n", what,
              w, h, t.subsamp, i / 3 % w, i / 3 / w, i % 3, got[i], ref[i]);
  free(ref), free(got), planes_free(&t);
  return bad;
}

static void test_constants(void **state) {
  (void)state;
  const double v[4] = {1.40200, 1.77200, 0.71414, 0.34414};
  const int fix[4] = {IMG_FIX_1_40200, IMG_FIX_1_77200, IMG_FIX_0_71414, IMG_FIX_0_34414};
  for (int i = 0; i < 4; i++) assert_int_equal(fix[i], (int)(v[i] * 65536 + 0.5));
}

static void test_fixtures(void **state) {
  (void)state;
  static const char *files[] = {"jpeg_20x20.jpg", "jpeg_420_640x480.jpg", "jpeg_422_333x777.jpg",
                                "jpeg_444_1000x750.jpg", "jpeg_gray_500x400.jpg", "jpeg_progressive_1024x768.jpg",
                                "jpeg_wide_4000x20.jpg", "jpeg_1920x1080.jpg"};
  long bad = 0;
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char rel[128], *data;
    size_t len;
    qvl_err err = {0};
    snprintf(rel, sizeof rel, "tests/data/images/%s", files[i]);
    if (qvl_read_file(tu_path(rel), &data, &len, 64 << 20, &err)) fail_msg("%s", err.msg);
    bad += compare_with_tj((const uint8_t *)data, len, files[i]);
    free(data);
  }
  assert_int_equal(bad, 0);
}

/* Noise (every level, hard edges in chroma) or smooth gradients with a little noise. */
static void fill(uint8_t *px, int w, int h, int noise, uint64_t *st) {
  if (!noise) {
    enc_synth(px, w, h, 3, (uint32_t)(*st >> 7));
    return;
  }
  for (size_t i = 0; i < (size_t)w * h * 3; i++) {
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    px[i] = (uint8_t)(*st >> 56);
  }
}

static void test_random(void **state) {
  (void)state;
  static const int subs[] = {TJSAMP_444, TJSAMP_422, TJSAMP_420, TJSAMP_440, TJSAMP_411, TJSAMP_GRAY};
  static const int sizes[][2] = {{1, 1}, {2, 3}, {3, 2}, {4, 5}, {5, 4}, {6, 7}, {17, 9}, {33, 31}, {101, 67}, {64, 48}};
  uint64_t st = tu_seed();
  long bad = 0;
  int runs = 0;
  for (size_t s = 0; s < sizeof subs / sizeof *subs; s++)
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes + 6; k++) {
      st = st * 6364136223846793005ull + 1;
      int w = k < sizeof sizes / sizeof *sizes ? sizes[k][0] : 1 + (int)(st >> 33) % 300;
      int h = k < sizeof sizes / sizeof *sizes ? sizes[k][1] : 1 + (int)(st >> 45) % 300;
      int q = 50 + (int)(st >> 20) % 50, prog = k % 3 == 2;
      uint8_t *px = malloc((size_t)w * h * 3);
      fill(px, w, h, k % 2, &st);
      size_t len;
      uint8_t *jpg = enc_jpeg(px, w, h, TJPF_RGB, subs[s], q, prog, &len);
      if (!jpg) fail_msg("encode %dx%d failed", w, h);
      char what[64];
      snprintf(what, sizeof what, "random q%d%s", q, prog ? " progressive" : "");
      bad += compare_with_tj(jpg, len, what);
      runs++;
      free(px), free(jpg);
    }
  printf("ycc: %d random JPEGs, %ld differing bytes\n", runs, bad);
  assert_int_equal(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constants),
      cmocka_unit_test(test_fixtures),
      cmocka_unit_test(test_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
