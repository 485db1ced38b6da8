/* The CPU backend's paged KV cache ops (qkv_to_cache, attention_paged, argmax_rows) against straightforward
 * references in double: contiguous causal GQA per sequence, per-head RMS norm and NeoX rotation. Random inputs
 * drawn fresh each run (QVL_TEST_SEED to replay), outputs and untouched cache slots poisoned with NaN; ragged
 * batches mixing decode rows, whole prefills, chunks after cached tokens and idle sequences, partially filled
 * last blocks, and block tables shuffled over the pool. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "testutil.h"

enum { BS = 16 };

static qvl_backend *B;
static qvl_err E;
static uint64_t R;

static float *rnd(size_t n, float lo, float hi) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  tu_uniform(p, n, lo, hi, &R);
  return p;
}

static int rnd_int(int n) { /* 0 .. n-1 */
  float u;
  tu_uniform(&u, 1, 0, 1, &R);
  int v = (int)(u * (float)n);
  return v < n ? v : n - 1;
}

static void shuffle(int32_t *a, int n) {
  for (int i = n - 1; i > 0; i--) {
    int j = rnd_int(i + 1);
    int32_t t = a[i];
    a[i] = a[j], a[j] = t;
  }
}

/* ---- attention_paged ---------------------------------------------------------------------------- */

typedef struct batch {
  int n_seq, heads, kv_heads, hd, max_blocks, n_blocks, max_q, max_kv;
  int32_t *cu_q, *kv_len, *table;
  int64_t rows;
  float *q, *kc, *vc;  /* [rows][heads][hd], pools [n_blocks * BS][kv_heads][hd] */
  float **k, **v;      /* per sequence, contiguous [kv_len][kv_heads][hd] (the reference's view) */
} batch;

/* n[s] queries over kv[s] keys per sequence; blocks shuffled over a pool with spare blocks left poisoned. */
static void batch_make(batch *t, const int *n, const int *kv, int n_seq, int heads, int kv_heads, int hd) {
  memset(t, 0, sizeof *t);
  t->n_seq = n_seq, t->heads = heads, t->kv_heads = kv_heads, t->hd = hd;
  t->cu_q = calloc((size_t)n_seq + 1, 4), t->kv_len = calloc((size_t)n_seq + 1, 4);
  int used = 0;
  for (int s = 0; s < n_seq; s++) {
    t->cu_q[s + 1] = t->cu_q[s] + n[s], t->kv_len[s] = kv[s];
    int nb = (kv[s] + BS - 1) / BS;
    used += nb;
    if (nb > t->max_blocks) t->max_blocks = nb;
    if (n[s] > t->max_q) t->max_q = n[s];
    if (kv[s] > t->max_kv) t->max_kv = kv[s];
  }
  t->max_blocks += 1; /* a spare column: entries past a sequence's blocks are never read */
  t->rows = t->cu_q[n_seq];
  t->n_blocks = used + 3;
  int32_t *perm = malloc((size_t)t->n_blocks * 4);
  for (int i = 0; i < t->n_blocks; i++) perm[i] = i;
  shuffle(perm, t->n_blocks);
  t->table = malloc((size_t)n_seq * t->max_blocks * 4);
  for (int i = 0; i < n_seq * t->max_blocks; i++) t->table[i] = -7; /* garbage */
  int64_t kvd = (int64_t)kv_heads * hd, pool = (int64_t)t->n_blocks * BS * kvd;
  t->kc = malloc((size_t)pool * 4), t->vc = malloc((size_t)pool * 4);
  tu_poison(t->kc, (size_t)pool), tu_poison(t->vc, (size_t)pool);
  t->k = calloc((size_t)n_seq, sizeof *t->k), t->v = calloc((size_t)n_seq, sizeof *t->v);
  for (int s = 0, next = 0; s < n_seq; s++) {
    for (int j = 0; j < (kv[s] + BS - 1) / BS; j++) t->table[s * t->max_blocks + j] = perm[next++];
    t->k[s] = rnd((size_t)(kv[s] * kvd), -1, 1), t->v[s] = rnd((size_t)(kv[s] * kvd), -1, 1);
    for (int i = 0; i < kv[s]; i++) {
      int64_t slot = (int64_t)t->table[s * t->max_blocks + i / BS] * BS + i % BS;
      memcpy(t->kc + slot * kvd, t->k[s] + i * kvd, (size_t)kvd * 4);
      memcpy(t->vc + slot * kvd, t->v[s] + i * kvd, (size_t)kvd * 4);
    }
  }
  t->q = rnd((size_t)(t->rows * heads * hd), -1, 1);
  free(perm);
}

static void batch_free(batch *t) {
  for (int s = 0; s < t->n_seq; s++) free(t->k[s]), free(t->v[s]);
  free(t->k), free(t->v), free(t->q), free(t->kc), free(t->vc), free(t->cu_q), free(t->kv_len), free(t->table);
}

/* Contiguous causal GQA in double. */
static void reference(const batch *t, float scale, float *out) {
  int hd = t->hd, group = t->heads / t->kv_heads;
  int64_t kvd = (int64_t)t->kv_heads * hd;
  double *p = malloc(((size_t)t->max_kv + 1) * sizeof(double));
  for (int s = 0; s < t->n_seq; s++) {
    int n = t->cu_q[s + 1] - t->cu_q[s], kv = t->kv_len[s];
    for (int i = 0; i < n; i++)
      for (int h = 0; h < t->heads; h++) {
        const float *qr = t->q + ((int64_t)(t->cu_q[s] + i) * t->heads + h) * hd;
        int g = h / group, last = kv - n + i;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j <= last; j++) {
          double d = 0;
          for (int c = 0; c < hd; c++) d += (double)qr[c] * t->k[s][j * kvd + g * hd + c];
          p[j] = d * scale;
          mx = p[j] > mx ? p[j] : mx;
        }
        for (int j = 0; j <= last; j++) sum += p[j] = exp(p[j] - mx);
        float *o = out + ((int64_t)(t->cu_q[s] + i) * t->heads + h) * hd;
        for (int c = 0; c < hd; c++) {
          double a = 0;
          for (int j = 0; j <= last; j++) a += p[j] * t->v[s][j * kvd + g * hd + c];
          o[c] = (float)(a / sum);
        }
      }
  }
  free(p);
}

static void attention_case(const char *what, const int *n, const int *kv, int n_seq, int heads, int kv_heads, int hd) {
  batch t;
  batch_make(&t, n, kv, n_seq, heads, kv_heads, hd);
  size_t no = (size_t)(t.rows * heads * hd);
  float *got = malloc((no ? no : 1) * 4), *ref = malloc((no ? no : 1) * 4), scale = 1.0f / sqrtf((float)hd);
  tu_poison(got, no);
  reference(&t, scale, ref);
  assert_int_equal(B->attention_paged(B, got, t.q, t.kc, t.vc, t.cu_q, t.kv_len, t.table, n_seq, t.max_blocks, BS,
                                      t.rows, t.max_q, t.max_kv, heads, kv_heads, hd, scale),
                   QVL_OK);
  double rel = tu_rel_l2(got, ref, no);
  printf("  %-44s rel_l2 %.2e  max_abs %.2e\n", what, rel, tu_max_abs_diff(got, ref, no));
  if (!(rel <= 1e-5)) fail_msg("%s: rel_l2 %.3e", what, rel);
  batch_free(&t);
  free(got), free(ref);
}

static void test_attention_paged(void **state) {
  (void)state;
  { /* decode: one row per sequence over ragged lengths (block edges, partial blocks, a single key) */
    int n[] = {1, 1, 1, 1, 1, 1}, kv[] = {1, 15, 16, 17, 100, 257};
    attention_case("decode x6, 8/2 heads, hd 64", n, kv, 6, 8, 2, 64);
    attention_case("decode x6, 4/4 heads, hd 128", n, kv, 6, 4, 4, 128);
  }
  { /* prefill: every row new */
    int n[] = {37, 16, 1}, kv[] = {37, 16, 1};
    attention_case("prefill x3, 8/2 heads, hd 64", n, kv, 3, 8, 2, 64);
  }
  { /* mixed: chunks after cached tokens, decode rows, a whole prefill and idle (zero-row) sequences */
    int n[] = {5, 1, 0, 20, 33, 1, 0}, kv[] = {70, 49, 31, 20, 48, 2, 0};
    attention_case("mixed chunks/decode/idle, 6/3 heads, hd 64", n, kv, 7, 6, 3, 64);
    attention_case("mixed chunks/decode/idle, 16/2 heads, hd 128", n, kv, 7, 16, 2, 128);
  }
  { /* random ragged batch */
    int n[12], kv[12];
    for (int s = 0; s < 12; s++) kv[s] = 1 + rnd_int(200), n[s] = rnd_int(3) ? 1 : 1 + rnd_int(kv[s]);
    attention_case("random ragged x12, 8/2 heads, hd 64", n, kv, 12, 8, 2, 64);
  }
}

/* Violations of the contract's bounds are refused, not read out of range. */
static void test_attention_paged_bounds(void **state) {
  (void)state;
  int n[] = {3, 1}, kv[] = {20, 9};
  batch t;
  batch_make(&t, n, kv, 2, 4, 2, 32);
  float *out = malloc((size_t)(t.rows * 4 * 32) * 4);
  int rc = B->attention_paged(B, out, t.q, t.kc, t.vc, t.cu_q, t.kv_len, t.table, 2, t.max_blocks, BS, t.rows,
                              t.max_q - 1, t.max_kv, 4, 2, 32, 0.1f);
  assert_int_equal(rc, QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(E.msg, "max_q", NULL);
  rc = B->attention_paged(B, out, t.q, t.kc, t.vc, t.cu_q, t.kv_len, t.table, 2, t.max_blocks, BS, t.rows, t.max_q,
                          t.max_kv - 1, 4, 2, 32, 0.1f);
  assert_int_equal(rc, QVL_ERR_INVALID_ARG);
  t.kv_len[1] = 0; /* more queries than keys */
  rc = B->attention_paged(B, out, t.q, t.kc, t.vc, t.cu_q, t.kv_len, t.table, 2, t.max_blocks, BS, t.rows, t.max_q,
                          t.max_kv, 4, 2, 32, 0.1f);
  assert_int_equal(rc, QVL_ERR_INVALID_ARG);
  batch_free(&t);
  free(out);
}

/* ---- qkv_to_cache --------------------------------------------------------------------------------- */

static void norm_rotate_ref(float *dst, const float *x, const float *w, const float *cos, const float *sin, int hd,
                            float eps) {
  double ss = 0, t[512];
  for (int j = 0; j < hd; j++) ss += (double)x[j] * x[j];
  double inv = w ? 1.0 / sqrt(ss / hd + eps) : 1.0;
  for (int j = 0; j < hd; j++) t[j] = w ? x[j] * inv * w[j] : x[j];
  for (int d = 0; d < hd / 2; d++) {
    dst[d] = (float)(t[d] * cos[d] - t[d + hd / 2] * sin[d]);
    dst[d + hd / 2] = (float)(t[d + hd / 2] * cos[d + hd / 2] + t[d] * sin[d + hd / 2]);
  }
}

static void qkv_case(int64_t rows, int heads, int kv_heads, int hd, int normed) {
  int64_t ld = (int64_t)(heads + 2 * kv_heads) * hd, kvd = (int64_t)kv_heads * hd, n_slots = rows + 2 * BS;
  float *qkv = rnd((size_t)(rows * ld), -2, 2), *qn = rnd((size_t)hd, 0.5f, 1.5f), *kn = rnd((size_t)hd, 0.5f, 1.5f);
  float *ang = rnd((size_t)(rows * hd / 2), -30, 30), *cos = malloc((size_t)(rows * hd) * 4);
  float *sin = malloc((size_t)(rows * hd) * 4);
  for (int64_t r = 0; r < rows; r++)
    for (int j = 0; j < hd / 2; j++) {
      float a = ang[r * hd / 2 + j];
      cos[r * hd + j] = cos[r * hd + j + hd / 2] = cosf(a), sin[r * hd + j] = sin[r * hd + j + hd / 2] = sinf(a);
    }
  int32_t *slot = malloc((size_t)n_slots * 4);
  for (int64_t i = 0; i < n_slots; i++) slot[i] = (int32_t)i;
  shuffle(slot, (int)n_slots); /* the first rows entries are the rows' slots; the rest stay untouched */
  float *q = malloc((size_t)(rows * heads * hd) * 4), *kc = malloc((size_t)(n_slots * kvd) * 4);
  float *vc = malloc((size_t)(n_slots * kvd) * 4), *want = malloc((size_t)hd * 4);
  tu_poison(q, (size_t)(rows * heads * hd)), tu_poison(kc, (size_t)(n_slots * kvd)), tu_poison(vc, (size_t)(n_slots * kvd));
  assert_int_equal(B->qkv_to_cache(B, q, kc, vc, qkv, normed ? qn : NULL, normed ? kn : NULL, cos, sin, slot, rows,
                                   heads, kv_heads, hd, 1e-6f),
                   QVL_OK);
  double worst = 0;
  for (int64_t r = 0; r < rows; r++) {
    const float *x = qkv + r * ld, *c = cos + r * hd, *s = sin + r * hd;
    for (int h = 0; h < heads + kv_heads; h++) {
      norm_rotate_ref(want, x + (int64_t)h * hd, normed ? (h < heads ? qn : kn) : NULL, c, s, hd, 1e-6f);
      const float *got = h < heads ? q + (r * heads + h) * hd : kc + slot[r] * kvd + (int64_t)(h - heads) * hd;
      double d = tu_max_abs_diff(got, want, (size_t)hd);
      worst = d > worst || d != d ? d : worst;
    }
    assert_memory_equal(vc + slot[r] * kvd, x + (int64_t)(heads + kv_heads) * hd, (size_t)kvd * 4);
  }
  for (int64_t i = rows; i < n_slots; i++) /* slots no row names are not written */
    assert_true(isnan(kc[slot[i] * kvd]) && isnan(vc[slot[i] * kvd + kvd - 1]));
  printf("  qkv_to_cache rows %lld, %d/%d heads, hd %d%s: max_abs %.2e\n", (long long)rows, heads, kv_heads, hd,
         normed ? ", q/k norm" : "", worst);
  if (!(worst <= 2e-5)) fail_msg("qkv_to_cache: max_abs %.3e", worst);
  free(qkv), free(qn), free(kn), free(ang), free(cos), free(sin), free(slot), free(q), free(kc), free(vc), free(want);
}

static void test_qkv_to_cache(void **state) {
  (void)state;
  qkv_case(1, 8, 2, 64, 0);
  qkv_case(37, 8, 2, 64, 1);
  qkv_case(19, 4, 4, 128, 1);
  qkv_case(5, 28, 4, 128, 0);
}

/* ---- argmax_rows ------------------------------------------------------------------------------------- */

static void test_argmax_rows(void **state) {
  (void)state;
  enum { ROWS = 9, N = 1001 };
  float *x = rnd((size_t)ROWS * N, -5, 5);
  int32_t want[ROWS], got[ROWS];
  for (int r = 0; r < ROWS; r++) {
    int at = rnd_int(N);
    x[r * N + at] = 7.0f + (float)r;
    if (r % 3 == 0 && at + 1 < N) x[r * N + N - 1] = x[r * N + at]; /* a tie later: the lower index wins */
    if (r % 3 == 1 && at > 0) x[r * N + at - 1] = x[r * N + at], at--; /* a tie earlier */
    want[r] = at;
    got[r] = -1;
  }
  x[8 * N + 0] = 100.0f, want[8] = 0; /* the first element */
  assert_int_equal(B->argmax_rows(B, got, x, ROWS, N), QVL_OK);
  assert_memory_equal(got, want, sizeof want);
  free(x);
}

int main(void) {
  R = tu_seed();
  if (qvl_backend_cpu_create(&B, 0, &E)) return 1;
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_attention_paged), cmocka_unit_test(test_attention_paged_bounds),
                                     cmocka_unit_test(test_qkv_to_cache), cmocka_unit_test(test_argmax_rows)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  B->destroy(B);
  return rc;
}
