/* The sampler's penalties: hand-computed logits on small vectors, then greedy generation on the tiny model checked
 * step by step against the penalised prefill logits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qvl.h"
#include "qvl_internal.h"
#include "runtime/sampler.h"
#include "testutil.h"

static qvl_sampler *open_sampler(int vocab, float rep, float pres, float freq, float temp) {
  qvl_sampling s = qvl_sampling_default();
  s.repetition_penalty = rep, s.presence_penalty = pres, s.frequency_penalty = freq, s.temperature = temp;
  qvl_sampler *sm = NULL;
  assert_int_equal(qvl_sampler_open(&sm, vocab, &s), QVL_OK);
  return sm;
}

/* prompt {0, 1, 1}, generated {3, 3, 1}: every value below is exact in binary. */
static void test_penalties_by_hand(void **state) {
  (void)state;
  const float in[5] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f};
  const int32_t prompt[3] = {0, 1, 1}, gen[3] = {3, 3, 1};
  float x[5];
  qvl_sampler *sm = open_sampler(5, 2.0f, 0, 0, 0);
  qvl_sampler_prompt(sm, prompt, 3);
  for (int i = 0; i < 3; i++) qvl_sampler_accept(sm, gen[i]);
  memcpy(x, in, sizeof x);
  qvl_sampler_penalize(sm, x); /* repetition alone: seen ids 0, 1, 3 once each, however often they occur */
  const float rep[5] = {1.0f, -2.0f, 0.5f, 1.5f, -2.0f};
  assert_memory_equal(x, rep, sizeof x);
  assert_int_equal(qvl_sampler_pick(sm, in), 3); /* penalised 1.5 is still the largest */
  qvl_sampler_close(sm);

  sm = open_sampler(5, 2.0f, 0.5f, 0.25f, 0);
  qvl_sampler_prompt(sm, prompt, 3);
  for (int i = 0; i < 3; i++) qvl_sampler_accept(sm, gen[i]);
  memcpy(x, in, sizeof x);
  qvl_sampler_penalize(sm, x); /* 3: 1.5 - 0.25*2 - 0.5; 1: -2 - 0.25 - 0.5; prompt-only 0 gets no presence */
  const float all[5] = {1.0f, -2.75f, 0.5f, 0.5f, -2.0f};
  assert_memory_equal(x, all, sizeof x);
  assert_int_equal(qvl_sampler_pick(sm, in), 0);
  qvl_sampler_close(sm);

  sm = open_sampler(5, 1.0f, 0, 0.5f, 0); /* frequency alone, no prompt */
  for (int i = 0; i < 3; i++) qvl_sampler_accept(sm, gen[i]);
  memcpy(x, in, sizeof x);
  qvl_sampler_penalize(sm, x);
  const float fr[5] = {2.0f, -1.5f, 0.5f, 2.0f, -2.0f};
  assert_memory_equal(x, fr, sizeof x);
  qvl_sampler_close(sm);
}

/* Penalties come before temperature (transformers' processor-then-warper order): with top_k = 1 sampling at any
 * temperature picks the penalised argmax; and a zero penalty is read as off (a zeroed struct). */
static void test_penalties_before_warpers(void **state) {
  (void)state;
  const float in[4] = {4.0f, 3.0f, -1.0f, 0.0f};
  const int32_t prompt[1] = {0};
  qvl_sampling t = qvl_sampling_default();
  t.repetition_penalty = 3.0f, t.temperature = 0.7f, t.top_k = 1, t.seed = tu_seed();
  qvl_sampler *sm = NULL;
  assert_int_equal(qvl_sampler_open(&sm, 4, &t), QVL_OK);
  qvl_sampler_prompt(sm, prompt, 1); /* 4 / 3 < 3 */
  for (int i = 0; i < 50; i++) assert_int_equal(qvl_sampler_pick(sm, in), 1);
  qvl_sampler_close(sm);
  qvl_sampling z = {0};
  z.max_tokens = 4;
  assert_int_equal(qvl_sampler_open(&sm, 4, &z), QVL_OK);
  qvl_sampler_prompt(sm, prompt, 1);
  float x[4];
  memcpy(x, in, sizeof x);
  qvl_sampler_penalize(sm, x);
  assert_memory_equal(x, in, sizeof x);
  assert_int_equal(qvl_sampler_pick(sm, in), 0);
  qvl_sampler_close(sm);
}

/* The reference of one step, written out plainly: transformers' repetition over prompt + output, then vLLM's
 * frequency and presence over the output. */
static void penalise_ref(float *l, int vocab, const int32_t *seq, int n_prompt, int n, const qvl_sampling *s) {
  for (int id = 0; id < vocab; id++) {
    int in_seq = 0, count = 0;
    for (int i = 0; i < n; i++) in_seq |= seq[i] == id, count += i >= n_prompt && seq[i] == id;
    if (in_seq) l[id] = l[id] < 0 ? l[id] * s->repetition_penalty : l[id] / s->repetition_penalty;
    if (count) l[id] -= s->frequency_penalty * (float)count, l[id] -= s->presence_penalty;
  }
}

/* Greedy with penalties on the tiny model: each generated token is the argmax (to 1e-4, prefill vs cached decode)
 * of the penalised logits of a fresh prefill of prompt + the tokens before it. */
static void check_greedy(qvl_engine *e, const int32_t *prompt, const qvl_sampling *s, tu_tokens *out) {
  int32_t seq[64];
  const int np = 12, vocab = 1024;
  memcpy(seq, prompt, np * sizeof *seq);
  memset(out, 0, sizeof *out);
  if (qvl_generate_ids(e, seq, np, NULL, s, tu_collect, out)) fail_msg("%s", qvl_errmsg(e));
  assert_int_equal(out->n, s->max_tokens);
  float *all = malloc((size_t)64 * vocab * sizeof *all); /* prefill returns every position's logits */
  for (int k = 0; k < out->n; k++) {
    if (qvl_engine_prefill(e, seq, np + k, NULL, 0, NULL, all, NULL, NULL)) fail_msg("%s", qvl_errmsg(e));
    float *l = all + (size_t)(np + k - 1) * vocab;
    penalise_ref(l, vocab, seq, np, np + k, s);
    float best = l[0];
    for (int i = 1; i < vocab; i++) best = l[i] > best ? l[i] : best;
    if (!(l[out->ids[k]] >= best - 1e-4f))
      fail_msg("step %d: token %d has %g, the best %g", k, out->ids[k], l[out->ids[k]], best);
    seq[np + k] = out->ids[k];
  }
  free(all);
}

static void test_greedy_penalised(void **state) {
  (void)state;
  qvl_engine *e = tu_open_dummy("tests/data/tiny-qwen3_vl", QVL_BACKEND_CPU, QVL_LOAD_ALL);
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = 16;
  tu_tokens plain, rep, pf;
  int32_t prompt[12];
  for (int i = 0; i < 12; i++) prompt[i] = (i * 37 + 11) % 1000;
  check_greedy(e, prompt, &s, &plain);
  /* the penalised runs see the plain continuation in their prompt, so the prompt's part of the history matters */
  for (int i = 0; i < 8; i++) prompt[4 + i] = plain.ids[i];
  s.repetition_penalty = 1.8f;
  check_greedy(e, prompt, &s, &rep);
  assert_true(memcmp(plain.ids, rep.ids, sizeof plain.ids) != 0); /* the penalty changed something */
  s.repetition_penalty = 1.0f, s.presence_penalty = 1e4f, s.frequency_penalty = 0.5f;
  check_greedy(e, prompt, &s, &pf);
  for (int i = 0; i < pf.n; i++) /* a huge presence penalty: no generated token twice */
    for (int j = 0; j < i; j++) assert_int_not_equal(pf.ids[i], pf.ids[j]);
  s.repetition_penalty = -1.0f;
  assert_int_equal(qvl_generate_ids(e, pf.ids, 4, NULL, &s, NULL, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "repetition_penalty", NULL);
  qvl_engine_close(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_penalties_by_hand),
                                     cmocka_unit_test(test_penalties_before_warpers),
                                     cmocka_unit_test(test_greedy_penalised)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
