/* qvl bench attn-lm: the language model's paged attention op alone on the CUDA backend, synthetic bf16 data in a
 * shuffled block pool (block size 16). Decode: one query per sequence over --context keys, batches --batch; the
 * rate is the K/V bytes read per second (the op's floor on an H100 is ~3.35 TB/s, H200 ~4.8). Prefill: one
 * causal sequence of --prefill tokens, TFLOP/s counting only the unmasked products (4 * head_dim per query-key
 * pair and head). Device time of the op alone (the backend's CUDA events, QVL_PROFILE), median of --iters after
 * --warmup, one JSON line per case. Heads default to Qwen2.5-VL-7B (28 over 4, head_dim 128). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "backend/backend.h"
#include "core/half.h"

#ifdef QVL_HAVE_CUDA

typedef struct attn_opts {
  int heads, kv_heads, hd, iters, warmup;
} attn_opts;

/* A device buffer of n bf16 values in [-1, 1), uploaded in chunks from one host pattern. */
static int fill(qvl_backend *b, void **d, int64_t n) {
  enum { CHUNK = 1 << 22 };
  uint16_t *h = malloc((size_t)CHUNK * 2);
  int rc = h ? b->alloc(b, d, (size_t)(n ? n : 1) * 2) : QVL_ERR_NOMEM;
  uint32_t x = 12345;
  for (int i = 0; h && i < CHUNK; i++) {
    x = x * 1664525u + 1013904223u;
    h[i] = qvl_f32_to_bf16((float)(x >> 8) / (float)(1 << 24) * 2.f - 1.f);
  }
  for (int64_t i = 0; !rc && i < n; i += CHUNK)
    rc = b->upload(b, (uint16_t *)*d + i, h, (size_t)(n - i < CHUNK ? n - i : CHUNK) * 2);
  free(h);
  return rc;
}

/* n_seq sequences of n_q queries over kv keys each; prints one JSON line. */
static int run_case(qvl_backend *b, const attn_opts *o, int n_seq, int n_q, int kv) {
  int bs = 16, max_blocks = (kv + bs - 1) / bs, pool = n_seq * max_blocks;
  int64_t q_rows = (int64_t)n_seq * n_q, slots = (int64_t)pool * bs;
  int32_t *cu = malloc((size_t)(n_seq + 1) * 4), *len = malloc((size_t)n_seq * 4), *tab = malloc((size_t)pool * 4);
  double *ms = calloc((size_t)o->iters, sizeof(double));
  void *q = NULL, *out = NULL, *kc = NULL, *vc = NULL, *dcu = NULL, *dlen = NULL, *dtab = NULL;
  int rc = cu && len && tab && ms ? QVL_OK : QVL_ERR_NOMEM;
  for (int s = 0; s <= n_seq && cu; s++) cu[s] = s * n_q;
  for (int s = 0; s < n_seq && len; s++) len[s] = kv;
  uint32_t x = 7;
  for (int i = 0; i < pool && tab; i++) tab[i] = i;
  for (int i = pool - 1; i > 0 && tab; i--) { /* a shuffled pool, as after many requests */
    x = x * 1664525u + 1013904223u;
    int j = (int)(x % (uint32_t)(i + 1)), t = tab[i];
    tab[i] = tab[j], tab[j] = t;
  }
  if (!rc) rc = fill(b, &q, q_rows * o->heads * o->hd);
  if (!rc) rc = fill(b, &out, q_rows * o->heads * o->hd);
  if (!rc) rc = fill(b, &kc, slots * o->kv_heads * o->hd);
  if (!rc) rc = fill(b, &vc, slots * o->kv_heads * o->hd);
  if (!rc) rc = b->alloc(b, &dcu, (size_t)(n_seq + 1) * 4);
  if (!rc) rc = b->alloc(b, &dlen, (size_t)n_seq * 4);
  if (!rc) rc = b->alloc(b, &dtab, (size_t)pool * 4);
  if (!rc) rc = b->upload(b, dcu, cu, (size_t)(n_seq + 1) * 4);
  if (!rc) rc = b->upload(b, dlen, len, (size_t)n_seq * 4);
  if (!rc) rc = b->upload(b, dtab, tab, (size_t)pool * 4);
  double t[3], scale = 1.0 / sqrt((double)o->hd);
  if (!rc) rc = b->profile(b, t); /* drops the uploads' marks */
  for (int i = -o->warmup; !rc && i < o->iters; i++) {
    rc = b->attention_paged(b, out, q, kc, vc, dcu, dlen, dtab, n_seq, max_blocks, bs, q_rows, n_q, kv, o->heads,
                            o->kv_heads, o->hd, (float)scale);
    if (!rc) rc = b->profile(b, t);
    if (!rc && i >= 0) ms[i] = t[1];
  }
  if (!rc) {
    double med = app_median(ms, o->iters);
    printf("{\"bench\": \"attn_lm\", \"device\": \"%s\", \"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, ",
           b->device, o->heads, o->kv_heads, o->hd);
    if (n_q == 1) {
      double bytes = 2.0 * n_seq * kv * o->kv_heads * o->hd * 2;
      printf(
          "\"mode\": \"decode\", \"batch\": %d, \"context\": %d, \"median_us\": %.2f, \"kv_bytes\": %.0f, "
          "\"kv_gb_per_s\": %.0f, \"iters\": %d}\n",
          n_seq, kv, med * 1e3, bytes, bytes / (med * 1e-3) / 1e9, o->iters);
    } else {
      double pairs = (double)n_seq * n_q * (2.0 * kv - n_q + 1) / 2; /* query i sees kv - n_q + i + 1 keys */
      double flops = 4.0 * o->hd * o->heads * pairs;
      printf(
          "\"mode\": \"prefill\", \"sequences\": %d, \"tokens\": %d, \"context\": %d, \"median_ms\": %.3f, "
          "\"causal_tflops\": %.1f, \"iters\": %d}\n",
          n_seq, n_q, kv, med, flops / (med * 1e-3) / 1e12, o->iters);
    }
    fflush(stdout);
  }
  void *all[] = {q, out, kc, vc, dcu, dlen, dtab};
  for (int i = 0; i < 7; i++) b->free(b, all[i]);
  free(cu), free(len), free(tab), free(ms);
  return rc;
}

int cmd_bench_attn(int argc, char **argv) {
  attn_opts o = {28, 4, 128, 50, 5};
  int batch[8], n_batch = 0, ctx[8], n_ctx = 0, pre[8], n_pre = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--heads") && has)
      o.heads = atoi(argv[++i]);
    else if (!strcmp(a, "--kv-heads") && has)
      o.kv_heads = atoi(argv[++i]);
    else if (!strcmp(a, "--head-dim") && has)
      o.hd = atoi(argv[++i]);
    else if (!strcmp(a, "--iters") && has)
      o.iters = atoi(argv[++i]);
    else if (!strcmp(a, "--warmup") && has)
      o.warmup = atoi(argv[++i]);
    else if (!strcmp(a, "--batch") && has && n_batch < 8)
      batch[n_batch++] = atoi(argv[++i]);
    else if (!strcmp(a, "--context") && has && n_ctx < 8)
      ctx[n_ctx++] = atoi(argv[++i]);
    else if (!strcmp(a, "--prefill") && has && n_pre < 8)
      pre[n_pre++] = atoi(argv[++i]);
    else
      return fprintf(stderr, "qvl bench attn-lm: unknown option %s\n", a), 2;
  }
  int db[] = {1, 8, 64}, dc[] = {1024, 4096, 16384}, dp[] = {1024, 8192};
  if (!n_batch && !n_ctx && !n_pre) memcpy(pre, dp, sizeof dp), n_pre = 2; /* the default sweep */
  if (!n_pre || n_batch || n_ctx) { /* decode cases: what was given, the defaults for the rest */
    if (!n_batch) memcpy(batch, db, sizeof db), n_batch = 3;
    if (!n_ctx) memcpy(ctx, dc, sizeof dc), n_ctx = 3;
  }
  if (o.heads < 1 || o.kv_heads < 1 || o.heads % o.kv_heads || o.iters < 1 || o.warmup < 0)
    return fprintf(stderr,
                   "usage: qvl bench attn-lm [--batch N]... [--context N]... [--prefill N]... [--heads H] "
                   "[--kv-heads G] [--head-dim D] [--iters N] [--warmup N]\n"),
           2;
  setenv("QVL_PROFILE", "1", 1); /* the backend's per-op CUDA events */
  qvl_err err = {0};
  qvl_backend *b = NULL;
  int rc = qvl_backend_cuda_create(&b, 0, &err);
  if (rc) {
    fprintf(stderr, "qvl bench attn-lm: %s\n", err.msg);
    if (b) b->destroy(b);
    return 1;
  }
  for (int i = 0; i < n_batch && !rc; i++)
    for (int j = 0; j < n_ctx && !rc; j++) rc = run_case(b, &o, batch[i], 1, ctx[j]);
  for (int i = 0; i < n_pre && !rc; i++) rc = run_case(b, &o, 1, pre[i], pre[i]);
  if (rc) fprintf(stderr, "qvl bench attn-lm: %s (%s)\n", err.msg, qvl_status_name(rc));
  b->destroy(b);
  return rc ? 1 : 0;
}

#else

int cmd_bench_attn(int argc, char **argv) {
  (void)argc, (void)argv;
  fprintf(stderr, "qvl bench attn-lm: this build has no CUDA backend\n");
  return 1;
}

#endif
