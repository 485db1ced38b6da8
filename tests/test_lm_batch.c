/* The batched language model on the CPU backend with the tiny models: qvl_generate_batch gives every request the
 * tokens qvl_generate_ids gives it alone (greedy, sampled, penalised, with images: prompts prefilled together);
 * lm_step over chunked prefills mixed with decode tokens and over a shared cached prefix reproduces one whole
 * prefill's logits; impossible requests are refused before any work and leave the pool as it was. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/mrope.h"
#include "qvl_internal.h"
#include "testutil.h"

static const char *MODELS[] = {"tests/data/tiny-qwen2_5_vl", "tests/data/tiny-qwen3_vl"};

static void prompt_ids(int32_t *ids, int n, int salt) {
  for (int i = 0; i < n; i++) ids[i] = (i * 37 + 11 + salt * 101) % 1000;
}

/* ---- qvl_generate_batch vs one at a time ------------------------------------------------------------------ */

enum { N_REQ = 6 };

typedef struct batch_out {
  tu_tokens t[N_REQ];
} batch_out;

static int collect_batch(void *ud, int req, int32_t id) {
  batch_out *o = ud;
  return tu_collect(&o->t[req], id);
}

/* An image of grid (1, 4, 6) patches with random pixels, and a prompt holding its 6 pad tokens at `at`. */
typedef struct image {
  int32_t grid[3];
  float *rows;
  qvl_pixels px;
} image;

static void make_image(image *im, const qvl_model_info *info, uint64_t *rng) {
  int64_t row = 3LL * info->temporal_patch_size * info->patch_size * info->patch_size;
  im->grid[0] = 1, im->grid[1] = 4, im->grid[2] = 6;
  im->rows = malloc((size_t)(24 * row) * sizeof(float));
  tu_uniform(im->rows, (size_t)(24 * row), -1, 1, rng);
  memset(&im->px, 0, sizeof im->px);
  im->px.grid_thw = im->grid, im->px.n_images = 1, im->px.rows = im->rows;
}

static void test_batch_matches_single(void **state) {
  (void)state;
  uint64_t rng = tu_seed();
  for (int mi = 0; mi < 2; mi++) {
    qvl_engine *e = tu_open_dummy(MODELS[mi], QVL_BACKEND_CPU, QVL_LOAD_ALL);
    qvl_model_info info;
    assert_int_equal(qvl_engine_info(e, &info), QVL_OK);
    static const int len[N_REQ] = {20, 37, 5, 64, 1, 30}, max[N_REQ] = {24, 10, 17, 5, 30, 12};
    int32_t ids[N_REQ][64];
    image im[2];
    qvl_request r[N_REQ];
    for (int i = 0; i < N_REQ; i++) {
      prompt_ids(ids[i], len[i], i);
      memset(&r[i], 0, sizeof r[i]);
      r[i].ids = ids[i], r[i].n_ids = len[i], r[i].sampling = qvl_sampling_default();
      r[i].sampling.max_tokens = max[i];
    }
    r[2].sampling.temperature = 1.0f, r[2].sampling.top_p = 0.9f, r[2].sampling.seed = 5; /* sampled on the host */
    r[3].sampling.repetition_penalty = 1.3f;                                              /* penalised greedy */
    for (int k = 0; k < 2; k++) { /* requests 1 and 5 carry an image: their vision rows share one prefill step */
      int i = k ? 5 : 1;
      make_image(&im[k], &info, &rng);
      for (int j = 0; j < 6; j++) ids[i][3 + j] = 1012; /* <|image_pad|> of the tiny configs */
      r[i].images = &im[k].px;
    }
    batch_out got;
    memset(&got, 0, sizeof got);
    if (qvl_generate_batch(e, r, N_REQ, collect_batch, &got)) fail_msg("%s", qvl_errmsg(e));
    for (int i = 0; i < N_REQ; i++) {
      tu_tokens one;
      memset(&one, 0, sizeof one);
      if (qvl_generate_ids(e, ids[i], len[i], r[i].images, &r[i].sampling, tu_collect, &one)) fail_msg("%s", qvl_errmsg(e));
      printf("  %s request %d: %d tokens batched, %d alone\n", MODELS[mi] + 11, i, got.t[i].n, one.n);
      assert_int_equal(got.t[i].n, one.n);
      assert_memory_equal(got.t[i].ids, one.ids, sizeof one.ids[0] * (size_t)one.n);
    }
    assert_int_equal(got.t[4].n, 30);
    free(im[0].rows), free(im[1].rows);
    qvl_engine_close(e);
  }
}

/* ---- lm_step at the model level --------------------------------------------------------------------------- */

/* Text positions of tokens [from, from + n): (t, t, t). */
static void text_pos(int32_t *pos, int from, int n) {
  for (int a = 0; a < 3; a++)
    for (int i = 0; i < n; i++) pos[a * n + i] = from + i;
}

static void check_rows(const char *what, const float *got, const float *ref, size_t n) {
  double rel = tu_rel_l2(got, ref, n);
  printf("  %-40s rel_l2 %.2e\n", what, rel);
  if (!(rel <= 1e-5)) fail_msg("%s: rel_l2 %.3e", what, rel);
}

/* One whole prefill of ids [n] into a fresh sequence; logits of every row. */
static void prefill_all(lm_model *m, qvl_err *err, lm_seq *s, const int32_t *ids, int n, float *logits) {
  int32_t *pos = malloc((size_t)n * 3 * sizeof(int32_t));
  text_pos(pos, 0, n);
  lm_chunk c = {.seq = s, .ids = ids, .n = n, .pos = pos, .logits = logits, .all_logits = 1};
  assert_int_equal(lm_seq_init(s, 256), QVL_OK);
  if (lm_step(m, &c, 1, err)) fail_msg("%s", err->msg);
  free(pos);
}

/* A CPU engine on model dir `model` with synthetic weights and its language model of 64 KV blocks. */
static lm_model *open_lm(const char *model, qvl_engine **e) {
  lm_model *m;
  *e = tu_open_dummy(model, QVL_BACKEND_CPU, QVL_LOAD_ALL);
  if (qvl_engine_lm(*e, 64, &m)) fail_msg("%s", qvl_errmsg(*e));
  return m;
}

static void test_chunks_and_prefix(void **state) {
  (void)state;
  enum { N = 50 };
  for (int mi = 0; mi < 2; mi++) {
    qvl_engine *e;
    lm_model *m = open_lm(MODELS[mi], &e);
    qvl_err *err = qvl_engine_err(e);
    int V = qvl_engine_config(e)->text.vocab;
    int32_t ids[N], other[9];
    prompt_ids(ids, N, 1), prompt_ids(other, 9, 2);
    float *ref = malloc((size_t)N * V * sizeof(float)), *got = malloc((size_t)N * V * sizeof(float));
    lm_seq a, b, c, d;
    prefill_all(m, err, &a, ids, N, ref);
    prefill_all(m, err, &c, other, 9, got); /* c then decodes beside b's chunks */
    /* b: the same prompt in chunks of 7, 16, 1, 26, each step with one decode token of c and a chunk of none */
    assert_int_equal(lm_seq_init(&b, 256), QVL_OK);
    static const int chunk[4] = {7, 16, 1, 26};
    tu_poison(got, (size_t)N * V);
    for (int k = 0, at = 0; k < 4; at += chunk[k++]) {
      int32_t pb[3 * 26], pc[3], next = other[k];
      float c_logits[1024];
      int32_t c_top = -1;
      text_pos(pb, at, chunk[k]), text_pos(pc, c.len, 1);
      lm_chunk step[2] = {{.seq = &b, .ids = ids + at, .n = chunk[k], .pos = pb, .logits = got + (size_t)at * V,
                           .all_logits = 1},
                          {.seq = &c, .ids = &next, .n = 1, .pos = pc, .logits = c_logits, .argmax = &c_top}};
      if (lm_step(m, step, 2, err)) fail_msg("%s", err->msg);
      int best = 0; /* the device argmax of c's row is the largest of its logits */
      for (int j = 1; j < V; j++) best = c_logits[j] > c_logits[best] ? j : best;
      assert_int_equal(c_top, best);
    }
    check_rows(mi ? "qwen3_vl chunked prefill beside decode" : "qwen2_5_vl chunked prefill beside decode", got, ref,
               (size_t)N * V);
    /* d: a's first two blocks shared (a cached prefix), then the rest of the prompt */
    assert_int_equal(lm_seq_init(&d, 256), QVL_OK);
    int before = lm_blocks_free(m);
    assert_int_equal(lm_seq_share(m, &d, a.blocks, 2), QVL_OK);
    assert_int_equal(lm_blocks_free(m), before);
    assert_int_equal(lm_block_refs(m, a.blocks[0]), 2);
    int32_t pd[3 * (N - 2 * LM_BLOCK)];
    text_pos(pd, 2 * LM_BLOCK, N - 2 * LM_BLOCK);
    lm_chunk cd = {.seq = &d, .ids = ids + 2 * LM_BLOCK, .n = N - 2 * LM_BLOCK, .pos = pd, .logits = got, .all_logits = 1};
    if (lm_step(m, &cd, 1, err)) fail_msg("%s", err->msg);
    check_rows("after a shared prefix of two blocks", got, ref + (size_t)2 * LM_BLOCK * V, (size_t)(N - 2 * LM_BLOCK) * V);
    int32_t shared = a.blocks[0];
    lm_seq_free(m, &a);
    assert_int_equal(lm_block_refs(m, shared), 1);
    lm_seq_free(m, &b), lm_seq_free(m, &c), lm_seq_free(m, &d);
    assert_int_equal(lm_blocks_free(m), lm_blocks_total(m));
    free(ref), free(got);
    qvl_engine_close(e);
  }
}

/* A prompt with an image (24 pads) prefilled in chunks whose boundaries cut the pad run: each chunk gets the vision
 * (and DeepStack) rows of its own pads; the logits equal one whole prefill's. */
static void test_chunks_through_an_image(void **state) {
  (void)state;
  enum { N = 40, AT = 5, PADS = 24 };
  uint64_t rng = tu_seed();
  for (int mi = 0; mi < 2; mi++) {
    qvl_engine *e = tu_open_dummy(MODELS[mi], QVL_BACKEND_CPU, QVL_LOAD_ALL);
    const qvl_config *cfg = qvl_engine_config(e);
    qvl_err *err = qvl_engine_err(e);
    qvl_model_info info;
    assert_int_equal(qvl_engine_info(e, &info), QVL_OK);
    int V = cfg->text.vocab, H = cfg->text.hidden;
    image im;
    make_image(&im, &info, &rng);
    im.grid[1] = 8; /* (1, 8, 12) patches: 24 merged rows */
    im.grid[2] = 12;
    free(im.rows);
    int64_t row = 3LL * info.temporal_patch_size * info.patch_size * info.patch_size;
    im.rows = malloc((size_t)(96 * row) * sizeof(float));
    tu_uniform(im.rows, (size_t)(96 * row), -1, 1, &rng);
    qvl_vision_out vis = {0};
    vis_input in = {im.grid, 1, im.rows, NULL, 0, 1}; /* the features left in the engine's buffers */
    if (qvl_engine_vision_input(e, &in, &vis, NULL, NULL)) fail_msg("%s", qvl_errmsg(e));
    size_t row_bytes = (size_t)H * vis.be->elem_bytes;
    assert_int_equal(vis.rows, PADS);
    int32_t ids[N], pos[3 * N];
    int64_t delta;
    prompt_ids(ids, N, 4);
    for (int j = 0; j < PADS; j++) ids[AT + j] = cfg->image_token_id;
    if (qvl_rope_index(pos, &delta, ids, N, cfg, im.grid, 1, NULL, err)) fail_msg("%s", err->msg);
    lm_model *m;
    if (qvl_engine_lm(e, 64, &m)) fail_msg("%s", qvl_errmsg(e));
    float *ref = malloc((size_t)N * V * sizeof(float)), *got = malloc((size_t)N * V * sizeof(float));
    lm_seq a, b;
    assert_int_equal(lm_seq_init(&a, N), QVL_OK);
    assert_int_equal(lm_seq_init(&b, N), QVL_OK);
    lm_chunk whole = {.seq = &a, .ids = ids, .n = N, .pos = pos, .vision_dev = vis.dev[0],
                      .deepstack_dev = (const void *const *)vis.dev + 1, .n_deepstack = vis.n - 1, .logits = ref,
                      .all_logits = 1};
    if (lm_step(m, &whole, 1, err)) fail_msg("%s", err->msg);
    static const int cut[] = {0, 9, 10, 21, 33, N}; /* pads at 5 .. 28 */
    tu_poison(got, (size_t)N * V);
    for (int k = 0; k + 1 < (int)(sizeof cut / sizeof cut[0]); k++) {
      int from = cut[k], n = cut[k + 1] - cut[k], first_pad = 0, pads = 0;
      for (int j = 0; j < from; j++) first_pad += ids[j] == cfg->image_token_id;
      for (int j = from; j < from + n; j++) pads += ids[j] == cfg->image_token_id;
      int32_t cp[3 * N];
      for (int ax = 0; ax < 3; ax++) memcpy(cp + ax * n, pos + ax * N + from, (size_t)n * sizeof(int32_t));
      const void *ds[QVL_MAX_LIST];
      for (int l = 1; l < vis.n; l++) ds[l - 1] = (const char *)vis.dev[l] + (size_t)first_pad * row_bytes;
      lm_chunk c = {.seq = &b, .ids = ids + from, .n = n, .pos = cp, .logits = got + (size_t)from * V, .all_logits = 1};
      if (pads)
        c.vision_dev = (const char *)vis.dev[0] + (size_t)first_pad * row_bytes, c.deepstack_dev = ds,
        c.n_deepstack = vis.n - 1;
      if (lm_step(m, &c, 1, err)) fail_msg("%s", err->msg);
    }
    check_rows(mi ? "qwen3_vl chunks cutting an image" : "qwen2_5_vl chunks cutting an image", got, ref, (size_t)N * V);
    lm_seq_free(m, &a), lm_seq_free(m, &b);
    qvl_vision_out_free(&vis);
    free(ref), free(got), free(im.rows);
    qvl_engine_close(e);
  }
}

/* ---- refusals ---------------------------------------------------------------------------------------------- */

static void test_refusals(void **state) {
  (void)state;
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path("tests/data/tiny-qwen3_vl"), p.dummy = 1, p.backend = QVL_BACKEND_CPU;
  p.load = QVL_LOAD_ALL, p.kv_cache_tokens = 64;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  int32_t ids[64];
  prompt_ids(ids, 64, 3);
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = 40; /* 40 + 40 tokens of KV in a cache of 64 */
  tu_tokens t = {.n = 0};
  assert_int_equal(qvl_generate_ids(e, ids, 40, NULL, &s, tu_collect, &t), QVL_ERR_LIMIT);
  tu_assert_msg_has(qvl_errmsg(e), "KV cache", NULL);
  assert_int_equal(t.n, 0);
  /* a batch that fits alone but not together; then one request past the context: nothing runs */
  qvl_request r[2];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 2; i++) r[i].ids = ids, r[i].n_ids = 20, r[i].sampling = qvl_sampling_default();
  r[0].sampling.max_tokens = r[1].sampling.max_tokens = 20; /* 3 blocks each, 4 in the cache */
  batch_out got;
  memset(&got, 0, sizeof got);
  assert_int_equal(qvl_generate_batch(e, r, 2, collect_batch, &got), QVL_ERR_LIMIT);
  r[1].sampling.max_tokens = 4090;
  assert_int_equal(qvl_generate_batch(e, r, 2, collect_batch, &got), QVL_ERR_LIMIT);
  tu_assert_msg_has(qvl_errmsg(e), "context", NULL);
  assert_int_equal(got.t[0].n + got.t[1].n, 0);
  r[1].sampling.max_tokens = 0;
  assert_int_equal(qvl_generate_batch(e, r, 2, collect_batch, &got), QVL_ERR_INVALID_ARG);
  /* lm_step: too few free blocks, a sequence past its length, an id outside the vocabulary */
  lm_model *m;
  qvl_err *err = qvl_engine_err(e);
  assert_int_equal(qvl_engine_lm(e, 4, &m), QVL_OK);
  int total = lm_blocks_total(m);
  int32_t *held = malloc((size_t)total * sizeof(int32_t)), pos[3 * 64];
  assert_int_equal(lm_block_alloc(m, held, total - 1), QVL_OK);
  assert_int_equal(lm_block_alloc(m, held + total - 1, 2), QVL_ERR_LIMIT);
  lm_seq q;
  assert_int_equal(lm_seq_init(&q, 40), QVL_OK);
  text_pos(pos, 0, 64);
  float logits[1024];
  lm_chunk c = {.seq = &q, .ids = ids, .n = 20, .pos = pos, .logits = logits};
  assert_int_equal(lm_step(m, &c, 1, err), QVL_ERR_LIMIT); /* 2 blocks needed, 1 free */
  tu_assert_msg_has(err->msg, "blocks", NULL);
  assert_int_equal(lm_blocks_free(m), 1);
  assert_int_equal(q.len + q.n_blocks, 0);
  for (int i = 0; i < total - 1; i++) lm_block_unref(m, held[i]);
  c.n = 49; /* the sequence holds 3 blocks, 48 tokens */
  assert_int_equal(lm_step(m, &c, 1, err), QVL_ERR_LIMIT);
  c.n = 20, ids[7] = 5000;
  assert_int_equal(lm_step(m, &c, 1, err), QVL_ERR_INVALID_ARG);
  /* an image pad among the prompted tokens without vision rows; a chunk claiming more generated tokens than it has */
  ids[7] = qvl_engine_config(e)->image_token_id;
  c.n_generated = 12; /* ids[7] is prompted */
  assert_int_equal(lm_step(m, &c, 1, err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err->msg, "no vision rows", NULL);
  c.n_generated = 21;
  assert_int_equal(lm_step(m, &c, 1, err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err->msg, "generated", NULL);
  assert_int_equal(lm_blocks_free(m), total);
  lm_seq_free(m, &q);
  free(held);
  qvl_engine_close(e);
}

/* A generated <|image_pad|> is a text token, as transformers embeds it (with random weights a model does sample it:
 * a batch once failed on it): prefilling a prompt then decoding the pad (marked generated) gives the logits of one
 * prefill of prompt + pad with the pad marked generated. A pad among the prompted tokens still needs vision rows
 * (test_refusals). */
static void test_generated_pad(void **state) {
  (void)state;
  enum { N = 21 };
  for (int mi = 0; mi < 2; mi++) {
    qvl_engine *e;
    lm_model *m = open_lm(MODELS[mi], &e);
    qvl_err *err = qvl_engine_err(e);
    int V = qvl_engine_config(e)->text.vocab;
    int32_t ids[N], pos[3 * N];
    prompt_ids(ids, N, 6);
    ids[N - 1] = qvl_engine_config(e)->image_token_id;
    float *ref = malloc((size_t)N * V * sizeof(float)), *got = malloc((size_t)N * V * sizeof(float));
    lm_seq a, b;
    text_pos(pos, 0, N);
    lm_chunk whole = {.seq = &a, .ids = ids, .n = N, .pos = pos, .logits = ref, .all_logits = 1, .n_generated = 1};
    assert_int_equal(lm_seq_init(&a, 256), QVL_OK);
    if (lm_step(m, &whole, 1, err)) fail_msg("%s", err->msg);
    prefill_all(m, err, &b, ids, N - 1, got);
    tu_poison(got, (size_t)V);
    text_pos(pos, N - 1, 1);
    lm_chunk step = {.seq = &b, .ids = ids + N - 1, .n = 1, .pos = pos, .logits = got, .n_generated = 1};
    if (lm_step(m, &step, 1, err)) fail_msg("%s", err->msg);
    check_rows(mi ? "qwen3_vl generated pad decoded" : "qwen2_5_vl generated pad decoded", got,
               ref + (size_t)(N - 1) * V, (size_t)V);
    lm_seq_free(m, &a), lm_seq_free(m, &b);
    free(ref), free(got);
    qvl_engine_close(e);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batch_matches_single), cmocka_unit_test(test_chunks_and_prefix),
                                     cmocka_unit_test(test_chunks_through_an_image),
                                     cmocka_unit_test(test_generated_pad), cmocka_unit_test(test_refusals)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
