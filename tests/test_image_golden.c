/* The CPU image path against transformers 5.17's PIL-backend Qwen2VLImageProcessor, bit for bit: the
 * fixtures and goldens.json in tests/data/images come from scripts/make_image_goldens.py (run where
 * transformers is installed). For every fixture and setting (Qwen2.5-VL / Qwen3-VL processor settings, HF
 * and qwen-vl-utils semantics) three stages are compared by BLAKE2b-128, so a mismatch says where it
 * starts: the decoded RGB, the resized RGB (Pillow's BICUBIC), and the pixel rows; grids exactly. Also
 * reported: the torchvision backend's distance from the PIL backend, in uint8 levels.
 * QVL_IMAGE_GOLDENS=DIR reads another directory (e.g. goldens made with another Pillow). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "image/image.h"
#include "testutil.h"

typedef struct golden_ctx {
  const char *dir;
  int checked, mismatches, skipped;
  int tv_max, tv_runs;
} golden_ctx;

/* The sanitizer build (-O0, ASan) is here for memory safety, and hashing a 4000x3000 image's 288 MB of rows
 * takes it minutes: it checks the images up to 1 Mpx; the optimized build checks them all. */
#if defined(__SANITIZE_ADDRESS__)
#define MAX_CHECKED_PIXELS (1 << 20)
#else
#define MAX_CHECKED_PIXELS INT64_MAX
#endif

static void b2hex(char out[33], const void *data, size_t n) {
  qvl_blake2b s;
  uint8_t d[16];
  qvl_blake2b_init(&s, 16);
  qvl_blake2b_update(&s, data, n);
  qvl_blake2b_final(&s, d);
  for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static const char *str(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsString(v)) fail_msg("goldens.json: \"%s\" missing or not a string", key);
  return v->valuestring;
}

static int num(const cJSON *o, const char *key, int i) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  const cJSON *e = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : NULL;
  if (!cJSON_IsNumber(e)) fail_msg("goldens.json: \"%s\"[%d] missing", key, i);
  return e->valueint;
}

static void mismatch(golden_ctx *g, const char *file, const char *setting, const char *stage, const char *detail) {
  fprintf(stderr, "MISMATCH %s [%s] %s: %s\n", file, setting, stage, detail);
  g->mismatches++;
}

static char *slurp(const char *path, size_t *n) {
  qvl_err err = {0};
  char *buf = NULL;
  if (qvl_read_file(path, &buf, n, 64u << 20, &err)) fail_msg("%s", err.msg);
  return buf;
}

/* Compares one setting's stages; returns after the first stage that differs (later ones would too). */
static void check_setting(golden_ctx *g, const cJSON *img, const char *name, const cJSON *s, const uint8_t *data,
                          size_t len, const qvl_preproc_config *pc, int qvu) {
  const char *file = str(img, "file");
  char got[33], msg[256];
  img_rgb rgb;
  qvl_err err = {0};
  if (img_decode(&rgb, data, len, qvu, 0, file, &err)) return mismatch(g, file, name, "decode", err.msg);
  b2hex(got, rgb.px, (size_t)rgb.w * rgb.h * 3);
  int ok = !strcmp(got, str(img, qvu ? "rgb_qvu_blake2b" : "rgb_blake2b"));
  qvl_image im = {.data = data, .size = len};
  qvl_image_params p = qvl_image_default_params();
  p.semantics = qvu ? QVL_IMAGE_QWEN_VL_UTILS : QVL_IMAGE_HF;
  qvl_image_batch *b = NULL;
  int rc = img_preprocess(&b, pc, &im, 1, &p, &err);
  if (cJSON_GetObjectItemCaseSensitive(s, "error")) { /* the reference refused it */
    if (rc != QVL_ERR_LIMIT || !strstr(err.msg, "aspect ratio"))
      mismatch(g, file, name, "refusal", err.msg[0] ? err.msg : "accepted an image the reference refuses");
    free(rgb.px), qvl_image_batch_free(b);
    return;
  }
  if (!ok) mismatch(g, file, name, "decoded RGB", got);
  int rh = num(s, "resized", 0), rw = num(s, "resized", 1);
  uint8_t *rs = ok && !rc ? malloc((size_t)rw * rh * 3) : NULL;
  if (rs && !img_resample_bicubic(rs, rw, rh, rgb.px, rgb.w, rgb.h, &err)) {
    b2hex(got, rs, (size_t)rw * rh * 3);
    if (strcmp(got, str(s, "resized_blake2b"))) snprintf(msg, sizeof msg, "%dx%d %s", rw, rh, got), ok = 0,
        mismatch(g, file, name, "resized RGB", msg);
  }
  if (rc) mismatch(g, file, name, "preprocess", err.msg);
  for (int i = 0; !rc && i < 3; i++)
    if (b->grid[i] != num(s, "image_grid_thw", i)) {
      snprintf(msg, sizeof msg, "grid %dx%dx%d, want %dx%dx%d", b->grid[0], b->grid[1], b->grid[2],
               num(s, "image_grid_thw", 0), num(s, "image_grid_thw", 1), num(s, "image_grid_thw", 2));
      mismatch(g, file, name, "grid", msg);
      rc = 1;
    }
  if (!rc) {
    b2hex(got, b->rows, sizeof(float) * (size_t)(b->n_rows * b->row_len));
    if (strcmp(got, str(s, "pixel_values_blake2b"))) mismatch(g, file, name, "pixel rows", got);
    const cJSON *smp = cJSON_GetObjectItemCaseSensitive(s, "samples"), *row;
    cJSON_ArrayForEach(row, smp) {
      int r = atoi(row->string), k = 0;
      const cJSON *v;
      cJSON_ArrayForEach(v, row) {
        float want = (float)v->valuedouble, have = b->rows[(int64_t)r * b->row_len + k];
        if (have != want && snprintf(msg, sizeof msg, "row %d col %d: %.9g, want %.9g", r, k, have, want))
          return mismatch(g, file, name, "sample", msg), free(rs), free(rgb.px), qvl_image_batch_free(b);
        k++;
      }
    }
  }
  const cJSON *tv = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s, "torchvision"), "max_levels");
  if (cJSON_IsNumber(tv)) g->tv_runs++, g->tv_max = tv->valueint > g->tv_max ? tv->valueint : g->tv_max;
  g->checked++;
  free(rs), free(rgb.px), qvl_image_batch_free(b);
}

static void check_image(golden_ctx *g, const cJSON *img, const cJSON *settings) {
  if ((int64_t)num(img, "size", 0) * num(img, "size", 1) > MAX_CHECKED_PIXELS) {
    g->skipped++;
    return;
  }
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", g->dir, str(img, "file"));
  size_t len;
  char *data = slurp(path, &len);
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(img, "settings")) {
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(settings, s->string);
    qvl_preproc_config pc;
    qvl_err err = {0};
    qvl_arch arch = !strncmp(s->string, "qwen3_vl", 8) ? QVL_ARCH_QWEN3_VL : QVL_ARCH_QWEN2_5_VL;
    if (qvl_preproc_load(&pc, arch, tu_path(str(def, "config")), &err)) fail_msg("%s", err.msg);
    int qvu = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(def, "qwen_vl_utils"));
    check_setting(g, img, s->string, s, (const uint8_t *)data, len, &pc, qvu);
  }
  free(data);
}

static void test_goldens(void **state) {
  (void)state;
  golden_ctx g = {getenv("QVL_IMAGE_GOLDENS") ? getenv("QVL_IMAGE_GOLDENS") : tu_path("tests/data/images"), 0, 0, 0,
                  0, 0};
  char path[1024];
  snprintf(path, sizeof path, "%s/goldens.json", g.dir);
  FILE *f = fopen(path, "rb");
  if (!f)
    fail_msg("%s is missing: generate it where transformers 5.17 is installed with\n"
             "  python3 scripts/make_image_goldens.py --out tests/data/images", path);
  fclose(f);
  size_t len;
  char *text = slurp(path, &len);
  cJSON *doc = cJSON_ParseWithLength(text, len);
  if (!doc) fail_msg("%s: not JSON", path);
  const cJSON *versions = cJSON_GetObjectItemCaseSensitive(doc, "versions"), *img;
  fprintf(stderr, "goldens: %s (Pillow %s, libjpeg-turbo %s, webp %s, transformers %s)\n", path,
          str(versions, "pillow"), str(versions, "libjpeg_turbo"), str(versions, "webp"),
          str(versions, "transformers"));
  cJSON_ArrayForEach(img, cJSON_GetObjectItemCaseSensitive(doc, "images")) {
    check_image(&g, img, cJSON_GetObjectItemCaseSensitive(doc, "settings"));
  }
  fprintf(stderr, "goldens: %d runs checked, %d mismatches; torchvision backend vs PIL: max %d levels (%d runs)\n",
          g.checked, g.mismatches, g.tv_max, g.tv_runs);
  if (g.skipped) fprintf(stderr, "goldens: %d images over 1 Mpx skipped in the sanitizer build\n", g.skipped);
  cJSON_Delete(doc);
  free(text);
  assert_int_equal(g.mismatches, 0);
  assert_true(g.checked >= 20); /* the sanitizer build too */
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_goldens)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
