/* The scheduler on CUDA (gpu label): batched serving against each request run alone with qvl_generate_ids on the
 * same engine. bf16 GEMMs over other batch shapes may flip a near-tie between two tokens, after which the answers
 * part; the test allows 3 of the 24 answers to differ and prints where. Also: a KV pool small enough to preempt,
 * and the prefix and encoder caches (the same image and prefix again), under the same rule. Each batch has a deadline
 * (batch_util.h) and the whole test another: past either it fails with a message instead of hanging. */
#include <stddef.h> /* cuda_ops.h uses size_t */

#include "backend/cuda/cuda_ops.h"
#include "batch_util.h"

static void test_batched_vs_alone(void **state) {
  (void)state;
  req r[SHARED_N];
  int n = shared_prefix_requests(r);
  for (int i = 0; i < n; i++) r[i].want = alone(&r[i]);
  qvl_engine *e = g_direct; /* the same engine: its KV pool is free again once the batch ends */
  g_differ = 0;
  qvl_server_params p = {.max_queue = 8, .kv_tokens = 16384};
  qvl_batch_stats st = run_batch(e, p, r, n, 0);
  assert_int_equal(st.ok, n);
  assert_true(st.gen_tokens > st.steps);
  p.max_queue = 1; /* one at a time: r6 starts on r2's cached blocks and image rows */
  st = run_batch(e, p, r, n, 0);
  assert_true(st.prefix_hit_tokens > 0 && st.encoder_cache_hits > 0);
  qvl_engine *small = open_engine(160); /* 10 blocks: prefill waits for blocks, decode preempts */
  p.max_queue = 8, p.kv_tokens = 160;
  st = run_batch(small, p, r, n, 0);
  assert_int_equal(st.ok, n);
  assert_true(st.preemptions > 0);
  qvl_engine_close(small);
  printf("  %d answers of %d differ from the request alone\n", g_differ, 3 * n);
  assert_true(g_differ <= 3);
  for (int i = 0; i < n; i++) free(r[i].want), free(r[i].ids);
}

static void test_deadline(int sig) {
  (void)sig;
  static const char msg[] = "\nFAIL: test_gpu_serve did not finish within 540 s\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  _exit(1);
}

int main(void) {
  signal(SIGALRM, test_deadline);
  alarm(540); /* run_batch re-arms its own, shorter one per batch */
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_serve: no CUDA device here; skipped\n");
    return 0;
  }
  if (!(g_tok = tu_real_tokenizer())) {
    printf("test_gpu_serve: no tokenizer; skipped\n");
    return 0;
  }
  g_backend = QVL_BACKEND_CUDA;
  g_direct = open_engine(0);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batched_vs_alone)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  qvl_engine_close(g_direct);
  qvl_tokenizer_close(g_tok);
  return rc;
}
