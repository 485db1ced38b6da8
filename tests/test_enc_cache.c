/* The encoder cache (src/runtime/enc_cache.c): hits return the rows put in, least recently used entries leave
 * first under the byte limit, an entry over the limit is never kept, a re-put replaces; then many random keys
 * against a plain model of the same LRU. Entries are buffers of the CPU backend (f32: 4 bytes a value), put from
 * and read back through the backend's own buffers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/enc_cache.h"
#include "testutil.h"

static qvl_backend *g_be;
static qvl_err g_err;

static void key_of(uint8_t *k, uint64_t v) {
  memset(k, 0, QVL_IMAGE_HASH_BYTES);
  for (int i = 0; i < 8; i++)
    k[8 + i] = (uint8_t)(v >> (8 * i)); /* the first 8 bytes (the bucket) take 2 values: long chains */
  k[0] = (uint8_t)(v & 1);
}

/* Puts rows x cols x n_out values v, v+1, ... under key v, from backend buffers freed right after (the cache copied
 * them). */
static void put(enc_cache *c, uint64_t v, int n_out, int64_t rows, int64_t cols) {
  uint8_t k[QVL_IMAGE_HASH_BYTES];
  int64_t per = rows * cols;
  float *host = malloc((size_t)(n_out * per) * sizeof(float));
  void *d[4];
  for (int64_t i = 0; i < n_out * per; i++) host[i] = (float)(v + (uint64_t)i);
  for (int o = 0; o < n_out; o++) {
    assert_int_equal(g_be->alloc(g_be, &d[o], (size_t)per * g_be->elem_bytes), QVL_OK);
    assert_int_equal(g_be->upload_f32(g_be, d[o], host + o * per, per), QVL_OK);
  }
  key_of(k, v);
  assert_int_equal(enc_cache_put(c, k, n_out, rows, cols, (const void *const *)d), QVL_OK);
  for (int o = 0; o < n_out; o++) g_be->free(g_be, d[o]);
  free(host);
}

static int has(enc_cache *c, uint64_t v) {
  uint8_t k[QVL_IMAGE_HASH_BYTES];
  enc_entry e;
  key_of(k, v);
  if (!enc_cache_get(c, k, &e)) return 0;
  float *host = malloc((size_t)(e.rows * e.cols) * sizeof(float));
  for (int o = 0; o < e.n_out; o++) {
    assert_int_equal(g_be->download_f32(g_be, host, e.data[o], e.rows * e.cols), QVL_OK);
    for (int64_t i = 0; i < e.rows * e.cols; i++)
      assert_true(host[i] == (float)(v + (uint64_t)(o * e.rows * e.cols + i)));
  }
  free(host);
  return 1;
}

static void test_lru_by_hand(void **state) {
  (void)state;
  enc_cache *c = NULL;
  assert_int_equal(enc_cache_open(&c, g_be, 3 * 2 * 4 * 4), QVL_OK); /* room for three entries of 2x4 f32 */
  put(c, 1, 1, 2, 4), put(c, 2, 1, 2, 4), put(c, 3, 1, 2, 4);
  assert_true(has(c, 1)); /* 1 is now the most recent: 2 is the oldest */
  put(c, 4, 1, 2, 4);
  assert_false(has(c, 2));
  assert_true(has(c, 1) && has(c, 3) && has(c, 4));
  enc_cache_stats st = enc_cache_get_stats(c);
  assert_int_equal(st.entries, 3);
  assert_int_equal(st.bytes, 3 * 32);
  assert_int_equal(st.evictions, 1);
  assert_int_equal(st.hits, 4);
  assert_int_equal(st.misses, 1);
  assert_true(has(c, 1)); /* recency now 1, 4, 3 */
  put(c, 5, 2, 2, 4);     /* two outputs (DeepStack): twice the bytes, the two oldest leave (3 then 4) */
  assert_true(has(c, 5) && has(c, 1));
  assert_false(has(c, 3) || has(c, 4));
  put(c, 6, 1, 100, 4); /* over the whole limit: not kept, nothing evicted for it */
  assert_false(has(c, 6));
  assert_true(has(c, 5) && has(c, 1));
  put(c, 1, 1, 1, 4); /* a re-put replaces */
  uint8_t k[QVL_IMAGE_HASH_BYTES];
  enc_entry e;
  key_of(k, 1);
  assert_true(enc_cache_get(c, k, &e));
  assert_int_equal(e.rows, 1);
  assert_int_equal(enc_cache_get_stats(c).bytes, 16 + 64);
  enc_cache_close(c);
  enc_cache_close(NULL);
}

/* Random puts and gets over 64 keys with sizes 1..4 units against an array model of the LRU order. */
static void test_lru_random(void **state) {
  (void)state;
  uint64_t seed = tu_seed();
  enc_cache *c = NULL;
  const int64_t unit = 4 * 4, limit = 10 * unit;
  assert_int_equal(enc_cache_open(&c, g_be, limit), QVL_OK);
  uint64_t order[64]; /* model: keys most recent first */
  int size[64] = {0}, n = 0;
  for (int step = 0; step < 4000; step++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t v = (seed >> 33) % 64;
    int pos = -1;
    for (int i = 0; i < n; i++)
      if (order[i] == v) pos = i;
    if ((seed >> 20) & 1) {
      assert_int_equal(has(c, v), pos >= 0);
      if (pos >= 0) memmove(order + 1, order, (size_t)pos * sizeof *order), order[0] = v;
    } else {
      int units = 1 + (int)((seed >> 40) % 4);
      put(c, v, 1, units, 4);
      if (pos >= 0) memmove(order + pos, order + pos + 1, (size_t)(n - pos - 1) * sizeof *order), n--;
      int64_t used = 0;
      for (int i = 0; i < n; i++) used += size[order[i]] * unit;
      while (n && used + units * unit > limit) used -= size[order[--n]] * unit;
      memmove(order + 1, order, (size_t)n * sizeof *order), order[0] = v, n++, size[v] = units;
    }
    assert_int_equal(enc_cache_get_stats(c).entries, n);
  }
  enc_cache_close(c);
}

int main(void) {
  if (qvl_backend_cpu_create(&g_be, 1, &g_err)) return fprintf(stderr, "%s\n", g_err.msg), 1;
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_lru_by_hand), cmocka_unit_test(test_lru_random)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  g_be->destroy(g_be);
  return rc;
}
