/* Generation on the tiny models (CPU): the sampler's contracts and the refusals that must come before any work. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qvl.h"
#include "runtime/sampler.h"
#include "testutil.h"

static void generate(qvl_engine *e, const qvl_sampling *s, tu_tokens *out) {
  int32_t prompt[20];
  for (int i = 0; i < 20; i++) prompt[i] = (i * 37 + 11) % 1000;
  memset(out, 0, sizeof *out);
  if (qvl_generate_ids(e, prompt, 20, NULL, s, tu_collect, out)) fail_msg("%s", qvl_errmsg(e));
}

static void test_sampling_contracts(void **state) {
  (void)state;
  qvl_engine *e = tu_open_dummy("tests/data/tiny-qwen3_vl", QVL_BACKEND_CPU, QVL_LOAD_ALL);
  qvl_sampling greedy = qvl_sampling_default(), topk1 = greedy, warm = greedy, warm2, other;
  greedy.max_tokens = topk1.max_tokens = warm.max_tokens = 24;
  topk1.temperature = 1.3f, topk1.top_k = 1, topk1.seed = 7; /* one candidate: must equal greedy */
  warm.temperature = 1.0f, warm.top_p = 0.9f, warm.min_p = 0.01f, warm.seed = 42;
  warm2 = warm, other = warm, other.seed = 43;
  tu_tokens a, b, c, d, f;
  generate(e, &greedy, &a), generate(e, &topk1, &b), generate(e, &warm, &c), generate(e, &warm2, &d);
  generate(e, &other, &f);
  assert_int_equal(a.n, 24);
  assert_memory_equal(a.ids, b.ids, sizeof a.ids);
  assert_memory_equal(c.ids, d.ids, sizeof c.ids); /* same seed, same tokens */
  assert_true(memcmp(c.ids, f.ids, sizeof c.ids) != 0); /* another seed samples otherwise (24 tokens of ~1k) */
  /* stop ids end generation right after the stop token */
  qvl_sampling stop = greedy;
  stop.stop_ids = &a.ids[5], stop.n_stop = 1;
  tu_tokens g;
  generate(e, &stop, &g);
  assert_true(g.n <= 6 && g.ids[g.n - 1] == a.ids[5]);
  qvl_engine_close(e);
}

static void test_sampler_distribution(void **state) {
  (void)state;
  float logits[4] = {0.0f, 1.0f, 2.0f, -30.0f};
  qvl_sampling s = qvl_sampling_default();
  s.temperature = 1.0f, s.seed = tu_seed();
  qvl_sampler *sm = NULL;
  assert_int_equal(qvl_sampler_open(&sm, 4, &s), QVL_OK);
  int count[4] = {0};
  for (int i = 0; i < 20000; i++) count[qvl_sampler_pick(sm, logits)]++;
  /* softmax(0, 1, 2): 0.090, 0.245, 0.665 */
  printf("  counts %d %d %d %d\n", count[0], count[1], count[2], count[3]);
  assert_true(count[0] > 1500 && count[0] < 2100 && count[2] > 12800 && count[2] < 13800 && count[3] == 0);
  qvl_sampler_close(sm);
  s.top_k = 2; /* only ids 2 and 1 remain */
  assert_int_equal(qvl_sampler_open(&sm, 4, &s), QVL_OK);
  for (int i = 0; i < 2000; i++) assert_true(qvl_sampler_pick(sm, logits) >= 1);
  qvl_sampler_close(sm);
}

/* transformers' order: top-p measures the mass of what top-k kept (renormalised), min-p is relative to the best. */
static void test_sampler_filters(void **state) {
  (void)state;
  float logits[5] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f), -1e30f};
  qvl_sampling s = qvl_sampling_default();
  s.temperature = 1.0f, s.seed = tu_seed();
  int seen[5];
  struct {
    int top_k;
    float top_p, min_p;
    int allowed; /* bit i: id i may come out */
  } cases[] = {
    {2, 0.6f, 0, 0x1},      /* top-k keeps 0.5 and 0.3 = 0.8; 0.5 / 0.8 >= 0.6: only id 0 */
    {0, 0.6f, 0, 0x3},      /* the full mass: 0.5 < 0.6 <= 0.8: ids 0 and 1 */
    {0, 1.0f, 0.4f, 0x3},   /* min-p: 0.4 * 0.5 = 0.2 floor */
    {0, 1.0f, 2.0f, 0x1},   /* nothing reaches the floor: the best id stays */
    {3, 1.0f, 0, 0x7},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    s.top_k = cases[c].top_k, s.top_p = cases[c].top_p, s.min_p = cases[c].min_p;
    qvl_sampler *sm = NULL;
    assert_int_equal(qvl_sampler_open(&sm, 5, &s), QVL_OK);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 4000; i++) seen[qvl_sampler_pick(sm, logits)]++;
    for (int id = 0; id < 5; id++)
      if ((seen[id] > 0) != ((cases[c].allowed >> id) & 1))
        fail_msg("case %zu: id %d drawn %d times, allowed %d", c, id, seen[id], (cases[c].allowed >> id) & 1);
    qvl_sampler_close(sm);
  }
}

static void test_refusals(void **state) {
  (void)state;
  qvl_engine *e = tu_open_dummy("tests/data/tiny-qwen3_vl", QVL_BACKEND_CPU, QVL_LOAD_ALL);
  qvl_sampling s = qvl_sampling_default();
  int32_t ids[4] = {1, 2, 3, 4};
  s.max_tokens = 5000; /* the tiny context is 4096 */
  assert_int_equal(qvl_generate_ids(e, ids, 4, NULL, &s, NULL, NULL), QVL_ERR_LIMIT);
  tu_assert_msg_has(qvl_errmsg(e), "exceed the context of 4096", NULL);
  s.max_tokens = 4;
  ids[2] = 5000; /* outside the 1024-entry vocabulary */
  assert_int_equal(qvl_generate_ids(e, ids, 4, NULL, &s, NULL, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "outside the vocabulary", NULL);
  ids[2] = 1012; /* an image pad with no image */
  assert_int_equal(qvl_generate_ids(e, ids, 4, NULL, &s, NULL, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "image", NULL);
  qvl_engine_close(e);
  /* a vision-only engine cannot generate */
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path("tests/data/tiny-qwen3_vl"), p.dummy = 1, p.backend = QVL_BACKEND_CPU;
  assert_int_equal(qvl_engine_open(&e, &p), QVL_OK);
  ids[2] = 3;
  assert_int_equal(qvl_generate_ids(e, ids, 4, NULL, &s, NULL, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "QVL_LOAD_ALL", NULL);
  qvl_engine_close(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_sampling_contracts), cmocka_unit_test(test_sampler_distribution),
                                     cmocka_unit_test(test_sampler_filters),
                                     cmocka_unit_test(test_refusals)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
