/* The paged KV cache ops of the CUDA backend (qkv_to_cache, attention_paged, argmax_rows) and the vision towers'
 * attention (attn_vit.cu alone and through the attention op, with and without the rotary) against the CPU
 * backend's f32 versions on the same bf16-representable inputs, drawn fresh each run (QVL_TEST_SEED to replay):
 * ragged batches, shuffled block tables, partial blocks, block sizes 16 (the LM's), 5 and 1, decode and chunked
 * prefill, GQA ratios 1, 4, 7 and 40, contexts up to 8k, long prefills of several sequences, head dims 128 (the
 * published models), 16 (the tiny ones), 64 and 80; CUDA graphs (decode and prefill) captured once and replayed
 * with other lengths. Attention and the rotary are bf16 on the GPU: relative L2 <= 1e-2; argmax exact. Skips, saying
 * why, without a GPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "testutil.h"

enum { BS = 16 }; /* the language model's block size */

typedef struct env {
  qvl_backend *cpu, *gpu;
  qvl_err err;
  uint64_t rng;
} env;

static env E;

static float *rnd(size_t n, float lo, float hi) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  tu_uniform(p, n, lo, hi, &E.rng);
  for (size_t i = 0; i < n; i++) p[i] = qvl_bf16_to_f32(qvl_f32_to_bf16(p[i]));
  return p;
}

static void *dev(const float *h, size_t n) {
  void *d;
  assert_int_equal(E.gpu->alloc(E.gpu, &d, (n ? n : 1) * 2), QVL_OK);
  if (n) assert_int_equal(E.gpu->upload_f32(E.gpu, d, h, (int64_t)n), QVL_OK);
  return d;
}

static void *dev_poisoned(size_t n) {
  float *nan = malloc(n * sizeof(float));
  tu_poison(nan, n);
  void *d = dev(nan, n);
  free(nan);
  return d;
}

static void *dev_raw(const void *h, size_t bytes) {
  void *d;
  assert_int_equal(E.gpu->alloc(E.gpu, &d, bytes ? bytes : 4), QVL_OK);
  if (bytes) assert_int_equal(E.gpu->upload(E.gpu, d, h, bytes), QVL_OK);
  return d;
}

static uint32_t rnd_u32(void) {
  E.rng = E.rng * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(E.rng >> 33);
}

static double compare(const char *what, const void *d, const float *ref, size_t n, double tol) {
  float *got = malloc(n * sizeof(float));
  assert_int_equal(E.gpu->download_f32(E.gpu, got, d, (int64_t)n), QVL_OK);
  double rel = tu_rel_l2(got, ref, n);
  printf("  %-58s rel_l2 %.2e  max_abs %.2e\n", what, rel, tu_max_abs_diff(got, ref, n));
  if (!(rel <= tol)) fail_msg("%s: rel_l2 %.3e > %.1e", what, rel, tol);
  free(got);
  return rel;
}

/* ---- a paged batch --------------------------------------------------------------------------------------- */

typedef struct batch {
  int n_seq, bs, max_blocks, max_q, max_kv, heads, kv_heads, hd;
  int64_t q_rows, slots;
  int32_t *cu_q, *kv_len, *table; /* host */
  float *q, *kc, *vc;             /* host */
  void *dq, *dkc, *dvc, *dcu, *dlen, *dtab;
} batch;

/* Sequences of n[s] new queries over kv[s] keys in blocks of bs slots; every sequence's blocks are drawn from one
 * shuffled pool with spare blocks in it, so no sequence's slots are contiguous. Table entries past a sequence's
 * blocks are -1: a kernel that read one would fault rather than pass. */
static void batch_make(batch *b, const int *n, const int *kv, int n_seq, int heads, int kv_heads, int hd, int bs) {
  memset(b, 0, sizeof *b);
  b->n_seq = n_seq, b->bs = bs, b->heads = heads, b->kv_heads = kv_heads, b->hd = hd;
  b->cu_q = calloc((size_t)n_seq + 1, sizeof(int32_t));
  b->kv_len = calloc((size_t)n_seq, sizeof(int32_t));
  for (int s = 0; s < n_seq; s++) {
    b->cu_q[s + 1] = b->cu_q[s] + n[s];
    b->kv_len[s] = kv[s];
    if (n[s] > b->max_q) b->max_q = n[s];
    if (kv[s] > b->max_kv) b->max_kv = kv[s];
    if ((kv[s] + bs - 1) / bs > b->max_blocks) b->max_blocks = (kv[s] + bs - 1) / bs;
  }
  if (b->max_blocks == 0) b->max_blocks = 1;
  b->q_rows = b->cu_q[n_seq];
  int pool = 7;
  for (int s = 0; s < n_seq; s++) pool += (kv[s] + bs - 1) / bs;
  int32_t *perm = malloc((size_t)pool * sizeof(int32_t));
  for (int i = 0; i < pool; i++) perm[i] = i;
  for (int i = pool - 1; i > 0; i--) {
    int j = (int)(rnd_u32() % (uint32_t)(i + 1)), t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
  b->table = malloc((size_t)n_seq * b->max_blocks * sizeof(int32_t));
  for (int s = 0, next = 0; s < n_seq; s++)
    for (int i = 0; i < b->max_blocks; i++)
      b->table[s * b->max_blocks + i] = i < (kv[s] + bs - 1) / bs ? perm[next++] : -1;
  free(perm);
  b->slots = (int64_t)pool * bs;
  size_t nq = (size_t)b->q_rows * heads * hd, nkv = (size_t)b->slots * kv_heads * hd;
  b->q = rnd(nq, -2, 2), b->kc = rnd(nkv, -2, 2), b->vc = rnd(nkv, -2, 2);
  b->dq = dev(b->q, nq), b->dkc = dev(b->kc, nkv), b->dvc = dev(b->vc, nkv);
  b->dcu = dev_raw(b->cu_q, (size_t)(n_seq + 1) * 4), b->dlen = dev_raw(b->kv_len, (size_t)n_seq * 4);
  b->dtab = dev_raw(b->table, (size_t)n_seq * b->max_blocks * 4);
}

static void batch_free(batch *b) {
  void *d[] = {b->dq, b->dkc, b->dvc, b->dcu, b->dlen, b->dtab};
  for (int i = 0; i < 6; i++) E.gpu->free(E.gpu, d[i]);
  free(b->cu_q), free(b->kv_len), free(b->table), free(b->q), free(b->kc), free(b->vc);
}

static float *cpu_attention(const batch *b, float scale) {
  float *ref = malloc((size_t)b->q_rows * b->heads * b->hd * sizeof(float));
  if (E.cpu->attention_paged(E.cpu, ref, b->q, b->kc, b->vc, b->cu_q, b->kv_len, b->table, b->n_seq, b->max_blocks,
                             b->bs, b->q_rows, b->max_q, b->max_kv, b->heads, b->kv_heads, b->hd, scale))
    fail_msg("cpu attention_paged: %s", E.err.msg);
  return ref;
}

static void attention_case_bs(const char *what, const int *n, const int *kv, int n_seq, int heads, int kv_heads, int hd,
                              int bs) {
  batch b;
  batch_make(&b, n, kv, n_seq, heads, kv_heads, hd, bs);
  float scale = 1.0f / sqrtf((float)hd);
  float *ref = cpu_attention(&b, scale);
  size_t no = (size_t)b.q_rows * heads * hd;
  void *dout = dev_poisoned(no);
  if (E.gpu->attention_paged(E.gpu, dout, b.dq, b.dkc, b.dvc, b.dcu, b.dlen, b.dtab, n_seq, b.max_blocks, bs, b.q_rows,
                             b.max_q, b.max_kv, heads, kv_heads, hd, scale))
    fail_msg("cuda attention_paged: %s", E.err.msg);
  char name[128];
  snprintf(name, sizeof name, "%s, %d/%d heads, d%d, bs %d (max_q %d, max_kv %d)", what, heads, kv_heads, hd, bs,
           b.max_q, b.max_kv);
  compare(name, dout, ref, no, 1e-2);
  E.gpu->free(E.gpu, dout);
  free(ref);
  batch_free(&b);
}

static void attention_case(const char *what, const int *n, const int *kv, int n_seq, int heads, int kv_heads, int hd) {
  attention_case_bs(what, n, kv, n_seq, heads, kv_heads, hd, BS);
}

static void test_attention_decode(void **s) {
  (void)s;
  /* one new token per sequence; lengths around block and tile edges, up to 8k */
  int kv[] = {1, 15, 16, 17, 63, 64, 65, 100, 1000, 4097, 8192, 333};
  int ones[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  attention_case("decode x12", ones, kv, 12, 28, 4, 128); /* Qwen2.5-VL-7B */
  attention_case("decode x12", ones, kv, 12, 32, 8, 128); /* Qwen3-VL-8B */
  attention_case("decode x12", ones, kv, 12, 8, 8, 128);  /* no grouping */
  attention_case("decode x1", ones, (int[]){8000}, 1, 28, 4, 128);
  attention_case("decode x12 tiny", ones, kv, 12, 6, 2, 16);
  attention_case("decode x12", ones, kv, 12, 14, 2, 64);
  attention_case("decode x12", ones, kv, 12, 16, 4, 80);
  int n64[64], kv64[64];
  for (int i = 0; i < 64; i++) n64[i] = 1, kv64[i] = 1 + (int)(rnd_u32() % 2048);
  attention_case("decode x64 random lengths", n64, kv64, 64, 28, 4, 128);
}

static void test_attention_prefill(void **s) {
  (void)s;
  /* whole prompts and chunks after cached tokens (kv = cached + n), ragged */
  int n[] = {300, 1, 64, 65, 17, 128};
  int kv[] = {300, 51, 1064, 72, 33, 128};
  attention_case("prefill ragged x6", n, kv, 6, 28, 4, 128);
  attention_case("prefill ragged x6", n, kv, 6, 32, 8, 128);
  attention_case("prefill ragged x6", n, kv, 6, 4, 4, 128);
  attention_case("prefill ragged x6 tiny", n, kv, 6, 6, 2, 16);
  attention_case("prefill ragged x6", n, kv, 6, 14, 2, 64);
  attention_case("prefill ragged x6", n, kv, 6, 16, 4, 80);
  /* decode tokens batched with prefill chunks (a serving step): the one-token sequences take the split kernel */
  attention_case("mixed decode + chunks", (int[]){1, 200, 1, 1, 37}, (int[]){8000, 200, 3000, 17, 4000}, 5, 28, 4, 128);
  attention_case("mixed decode + chunks tiny", (int[]){1, 200, 1, 1, 37}, (int[]){8000, 200, 3000, 17, 4000}, 5, 6, 2,
                 16);
  attention_case("chunk of 512 at 8k", (int[]){512}, (int[]){8192}, 1, 28, 4, 128);
  attention_case("prefill 2k", (int[]){2048}, (int[]){2048}, 1, 8, 1, 128);
  /* a few rows per sequence (speculative / short chunks): the decode kernel with several row chunks */
  attention_case("3-5 rows", (int[]){3, 5, 1}, (int[]){700, 5, 90}, 3, 28, 4, 128);
  attention_case("3-5 rows tiny", (int[]){3, 5, 1}, (int[]){700, 5, 90}, 3, 6, 2, 16);
}

/* The prefill kernel's 128-row tiles over many key tiles: long sequences of different lengths in one call, cached
 * context that is no multiple of the 64-key tile, decode rows beside them, block sizes whose blocks end inside a
 * thread's run of keys, and a group wider than a warp's 32 rows. */
static void test_attention_prefill_long(void **s) {
  (void)s;
  int n[] = {2100, 700, 129, 1, 333}, kv[] = {2100, 1337, 184, 4000, 333 + 4001};
  attention_case("long ragged x5", n, kv, 5, 28, 4, 128);
  attention_case("long ragged x5", n, kv, 5, 4, 4, 128);
  attention_case("long ragged x5 tiny", n, kv, 5, 6, 2, 16);
  attention_case("prefill 2500 after 700 cached", (int[]){2500}, (int[]){3200}, 1, 28, 4, 128);
  int nb[] = {300, 1, 65, 17, 2}, kvb[] = {1000, 2000, 65, 50, 9};
  attention_case_bs("block size 5", nb, kvb, 5, 28, 4, 128, 5);
  attention_case_bs("block size 1", nb, kvb, 5, 28, 4, 128, 1);
  attention_case_bs("block size 5 tiny", nb, kvb, 5, 6, 2, 16, 5);
  attention_case("group of 40", (int[]){100, 37, 1}, (int[]){150, 37, 70}, 3, 40, 1, 16);
}

/* One capture with fixed bounds, replayed with other lengths and tables written into the same buffers. */
static void test_attention_graph(void **s) {
  (void)s;
  if (!E.gpu->graph_begin) skip();
  const int heads = 28, kv_heads = 4, hd = 128, n_seq = 4, max_blocks = 4096 / BS;
  float scale = 1.0f / sqrtf((float)hd);
  /* the largest batch fixes every buffer; replays use fewer keys */
  batch big;
  int n[] = {1, 1, 1, 1}, kv0[] = {4096, 4096, 4096, 4096};
  batch_make(&big, n, kv0, n_seq, heads, kv_heads, hd, BS);
  assert_int_equal(big.max_blocks, max_blocks);
  size_t no = (size_t)n_seq * heads * hd;
  void *dout = dev_poisoned(no);
  void *graph = NULL;
  assert_int_equal(E.gpu->graph_begin(E.gpu), QVL_OK);
  int rc = E.gpu->attention_paged(E.gpu, dout, big.dq, big.dkc, big.dvc, big.dcu, big.dlen, big.dtab, n_seq, max_blocks,
                                  BS, n_seq, 1, 4096, heads, kv_heads, hd, scale);
  int rc2 = E.gpu->graph_end(E.gpu, &graph);
  if (rc || rc2) fail_msg("capture: %s", E.err.msg);
  int lens[][4] = {{4096, 1, 17, 4000}, {5, 300, 2049, 64}, {4096, 4096, 4096, 4096}};
  for (int t = 0; t < 3; t++) {
    memcpy(big.kv_len, lens[t], sizeof lens[t]);
    for (int i = 0; i < n_seq * max_blocks; i++) { /* reshuffle the table */
      int j = (int)(rnd_u32() % (uint32_t)(i + 1)), x = big.table[i];
      big.table[i] = big.table[j], big.table[j] = x;
    }
    assert_int_equal(E.gpu->upload(E.gpu, big.dlen, big.kv_len, sizeof lens[t]), QVL_OK);
    assert_int_equal(E.gpu->upload(E.gpu, big.dtab, big.table, (size_t)n_seq * max_blocks * 4), QVL_OK);
    assert_int_equal(E.gpu->graph_launch(E.gpu, graph), QVL_OK);
    float *ref = cpu_attention(&big, scale);
    char name[96];
    snprintf(name, sizeof name, "graph replay %d: kv %d %d %d %d", t, lens[t][0], lens[t][1], lens[t][2], lens[t][3]);
    compare(name, dout, ref, no, 1e-2);
    free(ref);
  }
  E.gpu->graph_free(E.gpu, graph);
  E.gpu->free(E.gpu, dout);
  batch_free(&big);
}

/* One prefill capture with fixed bounds (3 sequences of up to 300 queries over up to 1,000 keys), replayed with
 * other query counts and cached lengths written into the same buffers (a one-token row among them); the output
 * is poisoned again before each replay. */
static void test_attention_graph_prefill(void **s) {
  (void)s;
  if (!E.gpu->graph_begin) skip();
  const int heads = 28, kv_heads = 4, hd = 128, n_seq = 3, max_q = 300, max_kv = 1000;
  float scale = 1.0f / sqrtf((float)hd);
  batch big;
  int n[] = {max_q, max_q, max_q}, kv0[] = {max_kv, max_kv, max_kv};
  batch_make(&big, n, kv0, n_seq, heads, kv_heads, hd, BS);
  size_t no = (size_t)n_seq * max_q * heads * hd;
  float *poison = malloc(no * sizeof(float));
  tu_poison(poison, no);
  void *dout = dev(poison, no), *graph = NULL;
  assert_int_equal(E.gpu->graph_begin(E.gpu), QVL_OK);
  int rc = E.gpu->attention_paged(E.gpu, dout, big.dq, big.dkc, big.dvc, big.dcu, big.dlen, big.dtab, n_seq,
                                  big.max_blocks, BS, big.q_rows, max_q, max_kv, heads, kv_heads, hd, scale);
  int rc2 = E.gpu->graph_end(E.gpu, &graph);
  if (rc || rc2) fail_msg("capture: %s", E.err.msg);
  int ns[][3] = {{300, 1, 77}, {16, 250, 300}, {299, 300, 2}};
  int kvs[][3] = {{1000, 999, 77}, {500, 250, 1000}, {1000, 301, 900}};
  for (int t = 0; t < 3; t++) {
    for (int i = 0; i < n_seq; i++) big.cu_q[i + 1] = big.cu_q[i] + ns[t][i], big.kv_len[i] = kvs[t][i];
    big.q_rows = big.cu_q[n_seq];
    assert_int_equal(E.gpu->upload(E.gpu, big.dcu, big.cu_q, (size_t)(n_seq + 1) * 4), QVL_OK);
    assert_int_equal(E.gpu->upload(E.gpu, big.dlen, big.kv_len, (size_t)n_seq * 4), QVL_OK);
    assert_int_equal(E.gpu->upload_f32(E.gpu, dout, poison, (int64_t)no), QVL_OK);
    assert_int_equal(E.gpu->graph_launch(E.gpu, graph), QVL_OK);
    float *ref = cpu_attention(&big, scale);
    char name[96];
    snprintf(name, sizeof name, "prefill graph replay %d: n %d %d %d, kv %d %d %d", t, ns[t][0], ns[t][1], ns[t][2],
             kvs[t][0], kvs[t][1], kvs[t][2]);
    compare(name, dout, ref, (size_t)big.q_rows * heads * hd, 1e-2);
    free(ref);
  }
  E.gpu->graph_free(E.gpu, graph);
  E.gpu->free(E.gpu, dout);
  free(poison);
  batch_free(&big);
}

/* ---- qkv_to_cache -------------------------------------------------------------------------------------------- */

static void qkv_case(int64_t rows, int heads, int kv_heads, int hd, int norm) {
  int nh = heads + 2 * kv_heads;
  int64_t slots = rows * 3 + 5;
  size_t nx = (size_t)rows * nh * hd, nq = (size_t)rows * heads * hd, nkv = (size_t)slots * kv_heads * hd;
  float *x = rnd(nx, -3, 3), *qn = rnd((size_t)hd, 0.5f, 1.5f), *kn = rnd((size_t)hd, 0.5f, 1.5f);
  float *kc = rnd(nkv, -1, 1), *vc = rnd(nkv, -1, 1), *q = malloc(nq * sizeof(float));
  float *ang = malloc((size_t)rows * hd * sizeof(float)), *cs = malloc((size_t)rows * hd * 4);
  float *sn = malloc((size_t)rows * hd * 4);
  tu_uniform(ang, (size_t)rows * hd, -60, 60, &E.rng);
  for (int64_t j = 0; j < rows * hd; j++) cs[j] = cosf(ang[j]), sn[j] = sinf(ang[j]);
  int32_t *slot = malloc((size_t)rows * sizeof(int32_t)), *used = calloc((size_t)slots, sizeof(int32_t));
  for (int64_t r = 0; r < rows; r++) { /* distinct slots in random order */
    int32_t v;
    do v = (int32_t)(rnd_u32() % (uint32_t)slots);
    while (used[v]);
    used[v] = 1, slot[r] = v;
  }
  void *dx = dev(x, nx), *dqn = dev(qn, (size_t)hd), *dkn = dev(kn, (size_t)hd), *dkc = dev(kc, nkv),
       *dvc = dev(vc, nkv);
  void *dq = dev_poisoned(nq), *dc = dev_raw(cs, (size_t)rows * hd * 4), *ds = dev_raw(sn, (size_t)rows * hd * 4);
  void *dslot = dev_raw(slot, (size_t)rows * 4);
  if (E.cpu->qkv_to_cache(E.cpu, q, kc, vc, x, norm ? qn : NULL, norm ? kn : NULL, cs, sn, slot, rows, heads, kv_heads,
                          hd, 1e-6f))
    fail_msg("cpu qkv_to_cache: %s", E.err.msg);
  if (E.gpu->qkv_to_cache(E.gpu, dq, dkc, dvc, dx, norm ? dqn : NULL, norm ? dkn : NULL, dc, ds, dslot, rows, heads,
                          kv_heads, hd, 1e-6f))
    fail_msg("cuda qkv_to_cache: %s", E.err.msg);
  char name[96];
  snprintf(name, sizeof name, "qkv_to_cache q, %lld rows %d/%d d%d%s", (long long)rows, heads, kv_heads, hd,
           norm ? " q/k norm" : "");
  compare(name, dq, q, nq, 1e-2);
  snprintf(name, sizeof name, "qkv_to_cache k pool (every slot)");
  compare(name, dkc, kc, nkv, 1e-2);
  snprintf(name, sizeof name, "qkv_to_cache v pool (every slot)");
  compare(name, dvc, vc, nkv, 0);
  void *d[] = {dx, dqn, dkn, dkc, dvc, dq, dc, ds, dslot};
  for (int i = 0; i < 9; i++) E.gpu->free(E.gpu, d[i]);
  free(x), free(qn), free(kn), free(kc), free(vc), free(q), free(ang), free(cs), free(sn), free(slot), free(used);
}

static void test_qkv_to_cache(void **s) {
  (void)s;
  qkv_case(77, 28, 4, 128, 0); /* Qwen2.5-VL */
  qkv_case(77, 32, 8, 128, 1); /* Qwen3-VL */
  qkv_case(1, 32, 8, 128, 1);  /* decode */
  qkv_case(33, 6, 2, 16, 0);   /* tiny */
  qkv_case(33, 6, 2, 16, 1);
  qkv_case(19, 4, 2, 72, 1); /* half not a multiple of 8: the scalar path */
  qkv_case(19, 4, 1, 80, 1);
}

/* ---- vision attention: attn_vit.cu alone and the attention op ------------------------------------------------- */

/* A packed batch of sequences of lens[i] rows: qkv [rows][3][heads][hd] random in [-2, 2), cos/sin of random angles,
 * one per element (the kernel may not assume the towers' concat(a, a)). The host copies stay as drawn. */
typedef struct vit_batch {
  int n_seq, max_len, heads, hd;
  int64_t rows;
  int32_t *cu;
  float *qkv, *cos, *sin;
  void *dq, *dcos, *dsin, *dcu;
} vit_batch;

static void vit_bounds(vit_batch *v, const int32_t *lens) {
  v->cu[0] = 0, v->max_len = 0;
  for (int i = 0; i < v->n_seq; i++) {
    v->cu[i + 1] = v->cu[i] + lens[i];
    if (lens[i] > v->max_len) v->max_len = lens[i];
  }
}

static void vit_make(vit_batch *v, const int32_t *lens, int n_seq, int heads, int hd) {
  memset(v, 0, sizeof *v);
  v->n_seq = n_seq, v->heads = heads, v->hd = hd;
  v->cu = malloc((size_t)(n_seq + 1) * sizeof(int32_t));
  vit_bounds(v, lens);
  v->rows = v->cu[n_seq];
  size_t nq = (size_t)v->rows * 3 * heads * hd, nt = (size_t)v->rows * hd;
  float *ang = malloc(nt * sizeof(float));
  v->qkv = rnd(nq, -2, 2), v->cos = malloc(nt * sizeof(float)), v->sin = malloc(nt * sizeof(float));
  tu_uniform(ang, nt, -60, 60, &E.rng);
  for (size_t j = 0; j < nt; j++) v->cos[j] = cosf(ang[j]), v->sin[j] = sinf(ang[j]);
  free(ang);
  v->dq = dev(v->qkv, nq), v->dcos = dev_raw(v->cos, nt * 4), v->dsin = dev_raw(v->sin, nt * 4);
  v->dcu = dev_raw(v->cu, (size_t)(n_seq + 1) * 4);
}

static void vit_free(vit_batch *v) {
  void *d[] = {v->dq, v->dcos, v->dsin, v->dcu};
  for (int i = 0; i < 4; i++) E.gpu->free(E.gpu, d[i]);
  free(v->cu), free(v->qkv), free(v->cos), free(v->sin);
}

/* The CPU op on the batch's current boundaries (rows cu[n_seq]): f32 rope_qk when rotary, then attention. */
static float *vit_ref(const vit_batch *v, int rotary, float scale) {
  int64_t rows = v->cu[v->n_seq];
  size_t nq = (size_t)rows * 3 * v->heads * v->hd;
  float *x = malloc(nq * sizeof(float)), *ref = malloc(((size_t)rows * v->heads * v->hd + 1) * sizeof(float));
  memcpy(x, v->qkv, nq * sizeof(float)); /* rotated in place */
  void *att = NULL;
  if (E.cpu->attention_prepare(E.cpu, &att, v->cu, v->cu, v->n_seq, v->heads, v->hd) ||
      E.cpu->attention(E.cpu, ref, x, att, rotary ? v->cos : NULL, rotary ? v->sin : NULL, scale))
    fail_msg("cpu attention: %s", E.err.msg);
  E.cpu->attention_free(E.cpu, att);
  free(x);
  return ref;
}

static cudaStream_t gpu_stream(void) {
  return ((cuda_ctx *)E.gpu->ctx)->stream;
}

/* cuda_attn_vit alone on the batch's bounds into dout (poisoned first); waits for it. */
static void vit_kernel(const vit_batch *v, void *dout, const float *poison, int rotary, float scale) {
  size_t no = (size_t)v->rows * v->heads * v->hd;
  assert_int_equal(E.gpu->upload_f32(E.gpu, dout, poison, (int64_t)no), QVL_OK);
  int rc = cuda_attn_vit(dout, v->dq, rotary ? v->dcos : NULL, rotary ? v->dsin : NULL, v->dcu, v->n_seq, v->max_len,
                         v->rows, v->heads, v->hd, scale, gpu_stream());
  if (rc) fail_msg("cuda_attn_vit: %s", qvl_status_name(rc));
  assert_int_equal(E.gpu->sync(E.gpu), QVL_OK);
}

/* With and without the rotary: the kernel alone (qkv must come back untouched; with the rotary it must equal
 * rope_qk then the kernel without tables, bit for bit), then the attention op three ways (the tuning run, a second
 * run, a graph replay; qkv uploaded again before each, since an unfused candidate rotates it in place), each against
 * the CPU. */
static void vit_case(const char *what, const int32_t *lens, int n_seq, int heads, int hd) {
  vit_batch v;
  vit_make(&v, lens, n_seq, heads, hd);
  float scale = 1.0f / sqrtf((float)hd);
  size_t no = (size_t)v.rows * heads * hd, nq = (size_t)v.rows * 3 * heads * hd;
  float *poison = malloc(no * sizeof(float)), *fused = malloc(no * sizeof(float));
  tu_poison(poison, no);
  void *dout = dev(poison, no);
  char name[160];
  for (int rotary = 0; rotary < 2; rotary++) {
    float *ref = vit_ref(&v, rotary, scale);
    const char *rot = rotary ? " rotary" : "";
    vit_kernel(&v, dout, poison, rotary, scale);
    snprintf(name, sizeof name, "%s, %d heads d%d%s: kernel (max_len %d)", what, heads, hd, rot, v.max_len);
    compare(name, dout, ref, no, 1e-2);
    snprintf(name, sizeof name, "%s d%d%s: qkv untouched", what, hd, rot);
    compare(name, v.dq, v.qkv, nq, 0);
    if (rotary) {
      assert_int_equal(E.gpu->download_f32(E.gpu, fused, dout, (int64_t)no), QVL_OK);
      if (cuda_rope_qk(v.dq, v.dcos, v.dsin, v.rows, heads, hd, CUDA_ROPE_QK, gpu_stream())) fail_msg("cuda_rope_qk");
      vit_kernel(&v, dout, poison, 0, scale);
      snprintf(name, sizeof name, "%s d%d: fused = rope_qk + kernel", what, hd);
      compare(name, dout, fused, no, 0);
    }
    void *att = NULL, *graph = NULL;
    if (E.gpu->attention_prepare(E.gpu, &att, v.cu, v.dcu, n_seq, heads, hd)) fail_msg("%s", E.err.msg);
    const char *how[] = {"op tuned", "op again", "op graph"};
    for (int run = 0; run < 3; run++) {
      assert_int_equal(E.gpu->upload_f32(E.gpu, v.dq, v.qkv, (int64_t)nq), QVL_OK);
      assert_int_equal(E.gpu->upload_f32(E.gpu, dout, poison, (int64_t)no), QVL_OK);
      const float *dc = rotary ? v.dcos : NULL, *ds = rotary ? v.dsin : NULL;
      if (run < 2 && E.gpu->attention(E.gpu, dout, v.dq, att, dc, ds, scale)) fail_msg("%s", E.err.msg);
      if (run == 2) {
        assert_int_equal(E.gpu->graph_begin(E.gpu), QVL_OK);
        int rc = E.gpu->attention(E.gpu, dout, v.dq, att, dc, ds, scale), end = E.gpu->graph_end(E.gpu, &graph);
        if (rc || end || E.gpu->graph_launch(E.gpu, graph)) fail_msg("%s", E.err.msg);
      }
      snprintf(name, sizeof name, "%s d%d%s: %s", what, hd, rot, how[run]);
      compare(name, dout, ref, no, 1e-2);
      if (run == 0) {
        assert_int_equal(E.gpu->download_f32(E.gpu, fused, dout, (int64_t)no), QVL_OK);
      } else { /* the tuning run leaves the chosen kernel's output: every later run gives the same bits */
        snprintf(name, sizeof name, "%s d%d%s: %s = op tuned, bit for bit", what, hd, rot, how[run]);
        compare(name, dout, fused, no, 0);
      }
    }
    E.gpu->graph_free(E.gpu, graph);
    E.gpu->attention_free(E.gpu, att);
    assert_int_equal(E.gpu->upload_f32(E.gpu, v.dq, v.qkv, (int64_t)nq), QVL_OK);
    free(ref);
  }
  E.gpu->free(E.gpu, dout);
  free(poison), free(fused);
  vit_free(&v);
}

/* Qwen2.5-VL's windows: 200 of 64 tokens with partial ones (16..63) among them, so most 64-row tiles start inside
 * a window; then short sequences of 0..64 tokens in random order (several to a pack, two packs in a tile, empty
 * ones), one-token sequences, and a small head dim on the generic path. */
static void test_vit_windows(void **s) {
  (void)s;
  int32_t win[200], mix[300], ones[100];
  for (int i = 0; i < 200; i++) win[i] = i % 7 ? 64 : 16 + i % 48;
  for (int i = 0; i < 300; i++) mix[i] = (int32_t)(rnd_u32() % 65);
  for (int i = 0; i < 100; i++) ones[i] = 1;
  vit_case("200 windows", win, 200, 16, 80);
  vit_case("200 windows", win, 200, 16, 72);
  vit_case("300 short 0..64", mix, 300, 16, 80);
  vit_case("300 short 0..64", mix, 300, 4, 64);
  vit_case("300 short 0..64", mix, 300, 4, 16);
  vit_case("300 short 0..64", mix, 300, 2, 128);
  vit_case("100 of one token", ones, 100, 3, 72);
}

/* Sequences longer than a tile (the key loop): ragged, the head dims the towers and tests use, and a Qwen3-VL
 * 960x1280 image (4,800 patches, 16 heads, d72). */
static void test_vit_long(void **s) {
  (void)s;
  int32_t mixed[] = {300, 1, 1024, 77, 513};
  int hds[] = {80, 72, 64, 16};
  for (int i = 0; i < 4; i++) vit_case("ragged 5 seqs", mixed, 5, 16, hds[i]);
  vit_case("one 960x1280 image", (const int32_t[]){4800}, 1, 16, 72);
}

/* One capture of the kernel with fixed bounds, replayed after other boundaries under the same bounds were written
 * into the same buffer (fewer rows in use, empty sequences), for the windows and for long sequences. */
static void graph_replays(const char *what, int n_seq, int max_len, const int32_t *lens, int n_lens, int hd) {
  vit_batch v;
  int32_t *full = malloc((size_t)n_seq * sizeof(int32_t));
  for (int i = 0; i < n_seq; i++) full[i] = max_len;
  vit_make(&v, full, n_seq, 16, hd);
  float scale = 1.0f / sqrtf((float)hd);
  size_t no = (size_t)v.rows * v.heads * hd;
  float *poison = malloc(no * sizeof(float));
  tu_poison(poison, no);
  void *dout = dev(poison, no), *graph = NULL;
  assert_int_equal(E.gpu->graph_begin(E.gpu), QVL_OK);
  int rc = cuda_attn_vit(dout, v.dq, v.dcos, v.dsin, v.dcu, n_seq, max_len, v.rows, v.heads, hd, scale, gpu_stream());
  int end = E.gpu->graph_end(E.gpu, &graph);
  if (rc || end) fail_msg("capture: %s", E.err.msg);
  for (int t = 0; t < n_lens; t++) {
    vit_bounds(&v, lens + (size_t)t * n_seq);
    assert_int_equal(E.gpu->upload(E.gpu, v.dcu, v.cu, (size_t)(n_seq + 1) * 4), QVL_OK);
    assert_int_equal(E.gpu->upload_f32(E.gpu, dout, poison, (int64_t)no), QVL_OK);
    assert_int_equal(E.gpu->graph_launch(E.gpu, graph), QVL_OK);
    float *ref = vit_ref(&v, 1, scale);
    char name[96];
    snprintf(name, sizeof name, "%s graph replay %d (%d rows)", what, t, v.cu[n_seq]);
    compare(name, dout, ref, (size_t)v.cu[n_seq] * v.heads * hd, 1e-2);
    free(ref);
  }
  E.gpu->graph_free(E.gpu, graph);
  E.gpu->free(E.gpu, dout);
  free(poison), free(full);
  vit_free(&v);
}

static void test_vit_graph(void **s) {
  (void)s;
  if (!E.gpu->graph_begin) skip();
  enum { NW = 40 };
  int32_t win[3][NW];
  for (int i = 0; i < NW; i++) {
    win[0][i] = 64;
    win[1][i] = 1 + (int32_t)(rnd_u32() % 64);
    win[2][i] = i % 5 == 3 ? 0 : (int32_t)(rnd_u32() % 65);
  }
  graph_replays("40 windows", NW, 64, &win[0][0], 3, 80);
  graph_replays("40 windows", NW, 64, &win[0][0], 3, 72);
  int32_t seqs[] = {1100, 1100, 1100, 1, 1100, 500, 1037, 64, 65, 0, 700, 3};
  graph_replays("3 long", 3, 1100, seqs, 4, 72);
}

/* What the launcher refuses, and the calls with nothing to do. */
static void test_vit_refusals(void **s) {
  (void)s;
  vit_batch v;
  vit_make(&v, (const int32_t[]){64, 7}, 2, 2, 16);
  void *dout = dev_poisoned((size_t)v.rows * 2 * 16);
  cudaStream_t st = gpu_stream();
  uint16_t *o = dout;
  assert_int_equal(cuda_attn_vit(o, v.dq, NULL, NULL, v.dcu, 2, 64, v.rows, 2, 12, 1.f, st), QVL_ERR_UNSUPPORTED);
  assert_int_equal(cuda_attn_vit(o, v.dq, NULL, NULL, v.dcu, 2, 64, v.rows, 1, 136, 1.f, st), QVL_ERR_UNSUPPORTED);
  assert_int_equal(cuda_attn_vit(o + 1, v.dq, NULL, NULL, v.dcu, 2, 64, v.rows, 2, 16, 1.f, st), QVL_ERR_UNSUPPORTED);
  assert_int_equal(cuda_attn_vit(o, v.dq, v.dcos, NULL, v.dcu, 2, 64, v.rows, 2, 16, 1.f, st), QVL_ERR_UNSUPPORTED);
  assert_int_equal(cuda_attn_vit(o, v.dq, NULL, NULL, v.dcu, 0, 64, v.rows, 2, 16, 1.f, st), QVL_OK);
  assert_int_equal(cuda_attn_vit(o, v.dq, NULL, NULL, v.dcu, 2, 64, 0, 2, 16, 1.f, st), QVL_OK);
  assert_int_equal(E.gpu->sync(E.gpu), QVL_OK);
  E.gpu->free(E.gpu, dout);
  vit_free(&v);
}

/* ---- argmax_rows --------------------------------------------------------------------------------------------- */

static void argmax_case(int64_t rows, int n) {
  /* bf16 values from a narrow range: many exact ties, so "lowest index among equals" is exercised */
  float *x = rnd((size_t)rows * n, -4, 4);
  for (int64_t r = 0; r < rows; r++) /* plant a tie for the top at two spots */
    if (r % 2) x[r * n + n / 3] = x[r * n + n - 1] = 9.0f;
  int32_t *ref = malloc((size_t)rows * sizeof(int32_t)), *got = malloc((size_t)rows * sizeof(int32_t));
  void *dx = dev(x, (size_t)rows * n), *dout;
  int32_t *poison = malloc((size_t)rows * sizeof(int32_t));
  for (int64_t r = 0; r < rows; r++) poison[r] = -7;
  dout = dev_raw(poison, (size_t)rows * 4);
  assert_int_equal(E.cpu->argmax_rows(E.cpu, ref, x, rows, n), QVL_OK);
  if (E.gpu->argmax_rows(E.gpu, dout, dx, rows, n)) fail_msg("cuda argmax_rows: %s", E.err.msg);
  assert_int_equal(E.gpu->sync(E.gpu), QVL_OK);
  assert_int_equal(cudaMemcpy(got, dout, (size_t)rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  int bad = 0;
  for (int64_t r = 0; r < rows; r++)
    if (got[r] != ref[r]) {
      if (bad++ < 5) printf("    row %lld: cuda %d, cpu %d\n", (long long)r, got[r], ref[r]);
    }
  printf("  argmax_rows %lld x %d: %d of %lld rows differ\n", (long long)rows, n, bad, (long long)rows);
  if (bad) fail_msg("argmax_rows %lld x %d: %d rows differ", (long long)rows, n, bad);
  E.gpu->free(E.gpu, dx), E.gpu->free(E.gpu, dout);
  free(x), free(ref), free(got), free(poison);
}

static void test_argmax(void **s) {
  (void)s;
  argmax_case(64, 151936); /* Qwen3-VL vocabulary */
  argmax_case(3, 152064);  /* Qwen2.5-VL-7B */
  argmax_case(5, 1001);    /* unaligned rows: the scalar path */
  argmax_case(1, 1);
}

static int setup(void **s) {
  (void)s;
  E.rng = tu_seed();
  return tu_backend_pair(&E.cpu, &E.gpu, &E.err);
}

static int teardown(void **s) {
  (void)s;
  tu_backend_pair_free(E.cpu, E.gpu);
  return 0;
}

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_attn: no CUDA device here; skipped\n");
    return 0;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_qkv_to_cache),
                                     cmocka_unit_test(test_attention_decode),
                                     cmocka_unit_test(test_attention_prefill),
                                     cmocka_unit_test(test_attention_prefill_long),
                                     cmocka_unit_test(test_attention_graph),
                                     cmocka_unit_test(test_attention_graph_prefill),
                                     cmocka_unit_test(test_vit_windows),
                                     cmocka_unit_test(test_vit_long),
                                     cmocka_unit_test(test_vit_graph),
                                     cmocka_unit_test(test_vit_refusals),
                                     cmocka_unit_test(test_argmax)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
