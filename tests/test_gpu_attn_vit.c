/* cuda_attn_vit_wgmma (attn_vit_wgmma.cu, Hopper wgmma) against an f32 CPU reference computed here from the same
 * bf16 inputs (qkv drawn fresh in [-2, 2) each run; QVL_TEST_SEED replays): softmax(scale q k^T) v per sequence
 * and head. Cases: the kernel's internals on one tile first (raw q k^T, the bf16 probabilities and their product
 * with v, each checked against the CPU on the GPU's own previous stage, so a wrong descriptor or fragment layout is
 * named), then ragged d72 x 16 heads {4800, 1024, 77, 1, 513, 4097}, 3 x 1024, the same without the warpgroup
 * alternation, d80 and d64, the rotary of q in the kernel (bit for bit against rope_qk then the kernel, d72/d80/d64),
 * a graph captured once and replayed with other boundaries, and refusals. Every output row of the sequences must be
 * written (the buffer is NaN first), rows past `rows` untouched (a sentinel), and the relative L2 error <= 1e-2
 * overall and per sequence (sequences over 1,024 rows are checked on every 7th row and the first and last 192), and
 * NaN q/k/v rows after the last sequence (rows > cu[n]) must not reach the output. Skips,
 * saying why, without a compute capability 9.0 GPU (or without the driver's cuTensorMapEncodeTiled). A kernel that
 * deadlocks (an mbarrier or named-barrier protocol error) fails the test after a time limit instead of hanging.
 *
 * QVL_ATTN_VIT_BENCH=1 runs, instead of the tests, a timing of the kernel alone (3 warm-ups, median of 20, CUDA events)
 * on 20 x 4800 and 64 x 1024 tokens, 16 heads, d72, without and with tables (q rotated in the kernel), one JSON line
 * per case: ms and TFLOP/s of real work (4 sum(len^2) heads 72 / t). */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "testutil.h"

enum { GUARD = 16, DR = 128 /* rows of the kernel's test-only dumps */ };
static const uint16_t POISON = 0xffff, SENTINEL = 0x7e57;

static uint64_t rng;
static cudaStream_t stream;

#define CU(call) assert_int_equal((int)(call), (int)cudaSuccess)

/* Host to device, landed before anything after it on `stream`: a pageable cudaMemcpy on the legacy stream may return
 * before its DMA lands and is not ordered with the non-blocking stream the kernels run on (on the H100 at 707a97a
 * test_fragments' NaN poison of its debug buffer landed after the kernel had written it). */
static void h2d(void *dst, const void *src, size_t bytes) {
  CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  CU(cudaStreamSynchronize(stream));
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Waits for the stream, but gives up after `limit` seconds: a kernel that deadlocks (an mbarrier or named barrier
 * protocol error) would otherwise hold the GPU until ctest's timeout; exiting tears the context down. */
static void wait_stream(const char *what, double limit) {
  double t0 = now_s();
  cudaError_t e;
  while ((e = cudaStreamQuery(stream)) == cudaErrorNotReady) {
    if (now_s() - t0 > limit) {
      printf("  %s: the kernel did not finish in %.0f s (deadlock?); exiting\n", what, limit);
      fflush(stdout);
      exit(1);
    }
    struct timespec ns = {0, 200000};
    nanosleep(&ns, NULL);
  }
  if (e != cudaSuccess) fail_msg("%s: %s", what, cudaGetErrorString(e));
}

/* ---- a batch of sequences ------------------------------------------------------------------------------------- */

typedef struct batch {
  int n_seq, heads, hd, max_len;
  int64_t rows; /* passed to the kernel: cu[n_seq] plus `tail` rows of NaN q/k/v that no sequence owns */
  int tail;
  int32_t *cu;   /* host, n_seq + 1 */
  float *qkv;    /* host, bf16-representable, [rows][3][heads][hd] */
  uint16_t *out; /* host copy of the device output, rows + GUARD rows */
  void *d_qkv, *d_cu, *d_out;
} batch;

static void set_lens(batch *b, const int *lens, int n_seq) {
  b->n_seq = n_seq;
  b->cu[0] = 0;
  b->max_len = 0;
  for (int i = 0; i < n_seq; i++) {
    b->cu[i + 1] = b->cu[i] + lens[i];
    if (lens[i] > b->max_len) b->max_len = lens[i];
  }
}

static void batch_make_tail(batch *b, const int *lens, int n_seq, int heads, int hd, int tail) {
  memset(b, 0, sizeof *b);
  b->heads = heads, b->hd = hd;
  b->cu = malloc((size_t)(n_seq + 1) * sizeof(int32_t));
  set_lens(b, lens, n_seq);
  b->tail = tail;
  b->rows = b->cu[n_seq] + tail;
  size_t n = (size_t)b->rows * 3 * heads * hd, no = (size_t)(b->rows + GUARD) * heads * hd;
  size_t nseq = (size_t)b->cu[n_seq] * 3 * heads * hd;
  b->qkv = malloc(n * sizeof(float));
  uint16_t *h = malloc(n * 2);
  tu_uniform(b->qkv, n, -2.f, 2.f, &rng);
  for (size_t i = 0; i < n; i++) {
    h[i] = i < nseq ? qvl_f32_to_bf16(b->qkv[i]) : POISON; /* the tail: NaN */
    b->qkv[i] = qvl_bf16_to_f32(h[i]);
  }
  CU(cudaMalloc(&b->d_qkv, n * 2));
  h2d(b->d_qkv, h, n * 2);
  free(h);
  CU(cudaMalloc(&b->d_cu, (size_t)(n_seq + 1) * sizeof(int32_t)));
  h2d(b->d_cu, b->cu, (size_t)(n_seq + 1) * sizeof(int32_t));
  CU(cudaMalloc(&b->d_out, no * 2));
  b->out = malloc(no * 2);
}

static void batch_make(batch *b, const int *lens, int n_seq, int heads, int hd) {
  batch_make_tail(b, lens, n_seq, heads, hd, 0);
}

/* NaN in the sequences' rows, the sentinel past them (the tail rows and the guard rows). */
static void poison_out(batch *b) {
  size_t nr = (size_t)b->cu[b->n_seq] * b->heads * b->hd, no = (size_t)(b->rows + GUARD) * b->heads * b->hd;
  for (size_t i = 0; i < no; i++) b->out[i] = i < nr ? POISON : SENTINEL;
  h2d(b->d_out, b->out, no * 2);
}

static void batch_free(batch *b) {
  cudaFree(b->d_qkv), cudaFree(b->d_cu), cudaFree(b->d_out);
  free(b->cu), free(b->qkv), free(b->out);
}

static float scale_of(int hd) {
  return 1.f / sqrtf((float)hd);
}

/* flags < 0: the public entry point; else the debug one with these flags. */
static int run(batch *b, int flags) {
  int rc = flags < 0 ? cuda_attn_vit_wgmma(b->d_out, b->d_qkv, NULL, NULL, b->d_cu, b->n_seq, b->max_len, b->rows,
                                           b->heads, b->hd, scale_of(b->hd), stream)
                     : cuda_attn_vit_wgmma_debug(NULL, flags, b->d_out, b->d_qkv, NULL, NULL, b->d_cu, b->n_seq,
                                                 b->max_len, b->rows, b->heads, b->hd, scale_of(b->hd), stream);
  return rc;
}

/* ---- the CPU reference ----------------------------------------------------------------------------------------- */

/* o[D] = softmax(scale q k^T) v for one query row q of a (sequence, head) whose keys are kt [D][len] (transposed,
 * so the score loop runs over contiguous keys) and values vt [len][D]; sc is scratch for len scores. */
static void ref_row(double *o, const float *q, const float *kt, const float *vt, int len, int D, float scale,
                    float *sc) {
  for (int j = 0; j < len; j++) sc[j] = 0.f;
  for (int d = 0; d < D; d++) {
    const float qd = q[d], *kd = kt + (size_t)d * len;
#pragma omp simd
    for (int j = 0; j < len; j++) sc[j] += qd * kd[j];
  }
  float m = -INFINITY;
  for (int j = 0; j < len; j++) {
    sc[j] *= scale;
    if (sc[j] > m) m = sc[j];
  }
  double l = 0;
  for (int d = 0; d < D; d++) o[d] = 0;
  for (int j = 0; j < len; j++) {
    const double p = exp((double)(sc[j] - m));
    const float *v = vt + (size_t)j * D;
    l += p;
#pragma omp simd
    for (int d = 0; d < D; d++) o[d] += p * v[d];
  }
  for (int d = 0; d < D; d++) o[d] /= l;
}

static int row_checked(int r, int len, int all) {
  return all || len <= 1024 || r < 192 || r >= len - 192 || r % 7 == 0;
}

/* Downloads the output and compares; returns the overall relative L2 error. all: every row of long sequences. */
static double check(batch *b, const char *name, int all) {
  const int H = b->heads, D = b->hd;
  const size_t ld = (size_t)H * D, no = (size_t)(b->rows + GUARD) * ld, nr = (size_t)b->cu[b->n_seq] * ld;
  CU(cudaMemcpy(b->out, b->d_out, no * 2, cudaMemcpyDeviceToHost));
  size_t nan = 0, guard = 0;
  for (size_t i = 0; i < nr; i++) nan += isnan(qvl_bf16_to_f32(b->out[i])) != 0;
  for (size_t i = nr; i < no; i++) guard += b->out[i] != SENTINEL;
  printf("  %s: %d sequences, %d heads, d%d, %lld rows%s\n", name, b->n_seq, H, D, (long long)b->rows,
         nan || guard ? "" : "; every row written, rows past the sequences untouched");
  if (nan) printf("    %zu NaN elements in rows that exist (unwritten or NaN)\n", nan);
  if (guard) printf("    %zu elements past the last sequence changed\n", guard);
  double e_all = 0, r_all = 0, worst = 0;
  int bad_seq = -1, shown = 0;
  for (int s = 0; s < b->n_seq; s++) {
    const int len = b->cu[s + 1] - b->cu[s];
    const int64_t r0 = b->cu[s];
    double e_seq = 0, r_seq = 0, max_abs = 0;
    int checked = 0;
    for (int h = 0; h < H; h++) {
      float *kt = malloc((size_t)(len ? len : 1) * D * sizeof(float)), *vt = malloc((size_t)(len ? len : 1) * D * 4);
      for (int j = 0; j < len; j++) {
        const float *row = b->qkv + (size_t)(r0 + j) * 3 * ld;
        for (int d = 0; d < D; d++) kt[(size_t)d * len + j] = row[ld + (size_t)h * D + d];
        memcpy(vt + (size_t)j * D, row + 2 * ld + (size_t)h * D, (size_t)D * 4);
      }
      double es = 0, rs = 0, ma = 0;
      int cnt = 0;
#pragma omp parallel for schedule(dynamic, 8) reduction(+ : es, rs, cnt) reduction(max : ma)
      for (int i = 0; i < len; i++) {
        if (!row_checked(i, len, all)) continue;
        float *sc = malloc((size_t)len * sizeof(float));
        double o[128];
        ref_row(o, b->qkv + (size_t)(r0 + i) * 3 * ld + (size_t)h * D, kt, vt, len, D, scale_of(D), sc);
        const uint16_t *g = b->out + (size_t)(r0 + i) * ld + (size_t)h * D;
        for (int d = 0; d < D; d++) {
          double got = qvl_bf16_to_f32(g[d]), diff = got - o[d];
          if (isnan(got)) diff = 1e30;
          es += diff * diff, rs += o[d] * o[d];
          if (fabs(diff) > ma) ma = fabs(diff);
          if (fabs(diff) > 0.05 + 0.05 * fabs(o[d])) {
#pragma omp critical
            if (shown < 4) {
              printf("    seq %d row %d head %d dim %d: got %g, want %g\n", s, i, h, d, got, o[d]);
              shown++;
            }
          }
        }
        cnt++;
        free(sc);
      }
      e_seq += es, r_seq += rs, checked += cnt;
      if (ma > max_abs) max_abs = ma;
      free(kt), free(vt);
    }
    const double rel = r_seq > 0 ? sqrt(e_seq / r_seq) : 0;
    printf("    seq %d: len %5d, %5d rows x %d heads checked: rel_l2 %.2e  max_abs %.2e\n", s, len, checked / H, H, rel,
           max_abs);
    if (!(rel <= 1e-2) && bad_seq < 0) bad_seq = s;
    if (rel > worst || isnan(rel)) worst = rel;
    e_all += e_seq, r_all += r_seq;
  }
  const double rel = r_all > 0 ? sqrt(e_all / r_all) : 0;
  printf("    overall rel_l2 %.2e\n", rel);
  if (nan || guard) fail_msg("%s: %zu NaN in written rows, %zu elements past the sequences changed", name, nan, guard);
  if (bad_seq >= 0) fail_msg("%s: sequence %d rel_l2 above 1e-2 (worst %.3e)", name, bad_seq, worst);
  if (!(rel <= 1e-2)) fail_msg("%s: overall rel_l2 %.3e > 1e-2", name, rel);
  return rel;
}

static void case_run(const int *lens, int n_seq, int heads, int hd, int flags, const char *name) {
  batch b;
  batch_make(&b, lens, n_seq, heads, hd);
  poison_out(&b);
  assert_int_equal(run(&b, flags), QVL_OK);
  wait_stream(name, 60);
  check(&b, name, 0);
  batch_free(&b);
}

/* ---- the kernel's stages on one tile ------------------------------------------------------------------------ */

static double rel_l2(double e2, double r2) {
  return r2 > 0 ? sqrt(e2 / r2) : 0;
}

/* Where a wrong value came from: the (row, column) of ref [rows][cols] within tol of v, or -1. */
static int find_in(const double *ref, int rows, int cols, double v, double tol, int *col) {
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < cols; j++)
      if (fabs(ref[(size_t)i * cols + j] - v) <= tol) return *col = j, i;
  return *col = -1, -1;
}

/* One sequence of 300 rows, 2 heads, d72; CTA 0's first item is rows 0..191 of head 0, whose first DR = 128 rows
 * (consumer warpgroups 0 and 1) the kernel dumps, its first key tile keys 0..127 (all valid). S is checked against q
 * k^T, P against 2^((S - max S) scale log2 e) from the GPU's own S, and P V against the CPU product of the GPU's own P
 * with v, so each stage is judged alone; a wrong value is traced to the reference element it equals (a layout error
 * shows as a permutation). */
static void test_fragments(void **st) {
  (void)st;
  const int len = 300, H = 2, D = 72, NB = 128;
  batch b;
  batch_make(&b, &len, 1, H, D);
  poison_out(&b);
  const size_t nd = 2 * (size_t)DR * NB + (size_t)DR * D;
  float *dbg = malloc(nd * sizeof(float)), *d_dbg;
  for (size_t i = 0; i < nd; i++) dbg[i] = NAN;
  CU(cudaMalloc((void **)&d_dbg, nd * sizeof(float)));
  h2d(d_dbg, dbg, nd * sizeof(float));
  assert_int_equal(cuda_attn_vit_wgmma_debug(d_dbg, 0, b.d_out, b.d_qkv, NULL, NULL, b.d_cu, 1, len, b.rows, H, D,
                                             scale_of(D), stream),
                   QVL_OK);
  wait_stream("fragments", 30);
  CU(cudaMemcpy(dbg, d_dbg, nd * sizeof(float), cudaMemcpyDeviceToHost));
  const size_t ld = (size_t)H * D;
  const float *S = dbg, *P = dbg + (size_t)DR * NB, *O = dbg + 2 * (size_t)DR * NB;
  const double c = scale_of(D) * 1.4426950408889634;
  double *sref = malloc((size_t)DR * NB * sizeof(double)), *oref = malloc((size_t)DR * D * sizeof(double));
  double e[3] = {0}, r[3] = {0};
  for (int i = 0; i < DR; i++) {
    const float *q = b.qkv + (size_t)i * 3 * ld;
    double m = -INFINITY;
    for (int j = 0; j < NB; j++) m = fmax(m, S[i * NB + j]);
    for (int j = 0; j < NB; j++) {
      const float *k = b.qkv + (size_t)j * 3 * ld + ld;
      double sv = 0;
      for (int d = 0; d < D; d++) sv += (double)q[d] * k[d];
      sref[i * NB + j] = sv;
      const double got = S[i * NB + j], p = exp2((got - m) * c), pg = P[i * NB + j];
      e[0] += (got - sv) * (got - sv), r[0] += sv * sv;
      e[1] += (pg - p) * (pg - p), r[1] += p * p;
    }
    for (int d = 0; d < D; d++) {
      double o = 0;
      for (int j = 0; j < NB; j++) o += (double)P[i * NB + j] * b.qkv[(size_t)j * 3 * ld + 2 * ld + d];
      oref[i * D + d] = o;
      e[2] += (O[i * D + d] - o) * (O[i * D + d] - o), r[2] += o * o;
    }
  }
  const double rs = rel_l2(e[0], r[0]), rp = rel_l2(e[1], r[1]), ro = rel_l2(e[2], r[2]);
  printf(
      "  one tile: S = q k^T rel_l2 %.2e (Q/K descriptors, accumulator layout); P rel_l2 %.2e (row max, exp2); "
      "P V rel_l2 %.2e (V descriptor, P as A fragments)\n",
      rs, rp, ro);
  int shown = 0;
  for (int i = 0; i < DR && shown < 8; i++)
    for (int j = 0; j < NB && shown < 8; j++) {
      const double got = S[i * NB + j], want = sref[i * NB + j];
      if (!(fabs(got - want) <= 1e-3 * (1 + fabs(want)))) {
        int jj, ii = find_in(sref, DR, NB, got, 1e-3 * (1 + fabs(got)), &jj);
        printf("    S[%d][%d] = %g, want %g (equals q k^T [%d][%d])\n", i, j, got, want, ii, jj);
        shown++;
      }
    }
  for (int i = 0; i < DR && shown < 16; i++)
    for (int d = 0; d < D && shown < 16; d++) {
      const double got = O[i * D + d], want = oref[i * D + d];
      if (!(fabs(got - want) <= 1e-3 * (1 + fabs(want)))) {
        int dd, ii = find_in(oref, DR, D, got, 1e-3 * (1 + fabs(got)), &dd);
        printf("    (P V)[%d][%d] = %g, want %g (equals P V [%d][%d])\n", i, d, got, want, ii, dd);
        shown++;
      }
    }
  const int ok = rs <= 1e-4 && rp <= 1e-2 && ro <= 1e-4;
  check(&b, "one tile's sequence", 1);
  cudaFree(d_dbg);
  free(dbg), free(sref), free(oref);
  batch_free(&b);
  if (!ok) fail_msg("tile stages: S %.3e, P %.3e, P V %.3e", rs, rp, ro);
}

/* ---- cases ------------------------------------------------------------------------------------------------------- */

static void test_ragged_d72(void **st) {
  (void)st;
  const int lens[] = {4800, 1024, 77, 1, 513, 4097};
  case_run(lens, 6, 16, 72, -1, "ragged d72");
}

static void test_uniform_d72(void **st) {
  (void)st;
  const int lens[] = {1024, 1024, 1024};
  case_run(lens, 3, 16, 72, -1, "3 x 1024 d72");
}

static void test_no_pingpong(void **st) {
  (void)st;
  const int lens[] = {1024, 200, 129, 1000};
  case_run(lens, 4, 16, 72, CUDA_ATTN_VIT_NO_PINGPONG, "d72 without warpgroup alternation");
}

static void test_d80(void **st) {
  (void)st;
  const int lens[] = {700, 1, 129, 2000, 64};
  case_run(lens, 5, 16, 80, -1, "ragged d80");
}

static void test_d64(void **st) {
  (void)st;
  const int lens[] = {1000, 64, 0, 65, 255};
  case_run(lens, 5, 4, 64, -1, "ragged d64 (one empty sequence)");
}

/* 64 rows of NaN q/k/v after the last sequence (rows = cu[n] + 64): a kernel that reads rows past a sequence's end
 * (TMA boxes do) must keep them out of the output; the first sequence ends mid-tile inside the second's rows. */
static void test_nan_tail(void **st) {
  (void)st;
  const int lens[] = {300, 77};
  batch b;
  batch_make_tail(&b, lens, 2, 4, 72, 64);
  poison_out(&b);
  assert_int_equal(run(&b, -1), QVL_OK);
  wait_stream("NaN tail", 60);
  check(&b, "NaN rows after the last sequence", 1);
  batch_free(&b);
}

/* With tables: rope_qk of k alone, then the kernel rotating q's tiles, must give the bits of rope_qk of q and k then
 * the kernel without tables (the output and its guard rows), leave q in qkv as it was (k rotated as rope_qk rotates
 * it), and match the CPU on the rotated q/k. Random angles per element (cos[d] != cos[d + h], so a wrong table entry
 * shows), 16 heads, ragged lengths (tail items of 1..191 rows, a one-token sequence), NaN rows after the last
 * sequence. */
static void rotary_case(const int *lens, int n_seq, int hd) {
  const int H = 16;
  batch b;
  batch_make_tail(&b, lens, n_seq, H, hd, 5);
  const size_t n = (size_t)b.rows * 3 * H * hd, nt = (size_t)b.rows * hd, no = (size_t)(b.rows + GUARD) * H * hd;
  float *ang = malloc(nt * sizeof(float)), *cs = malloc(nt * sizeof(float)), *sn = malloc(nt * sizeof(float));
  tu_uniform(ang, nt, -60.f, 60.f, &rng);
  for (size_t i = 0; i < nt; i++) cs[i] = cosf(ang[i]), sn[i] = sinf(ang[i]);
  void *dc, *ds;
  CU(cudaMalloc(&dc, nt * 4));
  CU(cudaMalloc(&ds, nt * 4));
  h2d(dc, cs, nt * 4);
  h2d(ds, sn, nt * 4);
  uint16_t *h = malloc(n * 2), *rot = malloc(n * 2), *after = malloc(n * 2), *ref = malloc(no * 2);
  for (size_t i = 0; i < n; i++) h[i] = qvl_f32_to_bf16(b.qkv[i]);
  /* the reference path: q and k rotated in place, the kernel without tables (both paths start from h) */
  h2d(b.d_qkv, h, n * 2);
  poison_out(&b);
  assert_int_equal(cuda_rope_qk(b.d_qkv, dc, ds, b.rows, H, hd, CUDA_ROPE_QK, stream), QVL_OK);
  assert_int_equal(run(&b, -1), QVL_OK);
  wait_stream("rotary: rope_qk + kernel", 60);
  CU(cudaMemcpy(ref, b.d_out, no * 2, cudaMemcpyDeviceToHost));
  CU(cudaMemcpy(rot, b.d_qkv, n * 2, cudaMemcpyDeviceToHost));
  /* the fused path on the original qkv */
  h2d(b.d_qkv, h, n * 2);
  poison_out(&b);
  assert_int_equal(cuda_rope_qk(b.d_qkv, dc, ds, b.rows, H, hd, CUDA_ROPE_K, stream), QVL_OK);
  assert_int_equal(
      cuda_attn_vit_wgmma(b.d_out, b.d_qkv, dc, ds, b.d_cu, b.n_seq, b.max_len, b.rows, H, hd, scale_of(hd), stream),
      QVL_OK);
  wait_stream("rotary: rope k + kernel with tables", 60);
  CU(cudaMemcpy(b.out, b.d_out, no * 2, cudaMemcpyDeviceToHost));
  CU(cudaMemcpy(after, b.d_qkv, n * 2, cudaMemcpyDeviceToHost));
  size_t diff = 0, qdiff = 0;
  for (size_t i = 0; i < no; i++) diff += b.out[i] != ref[i];
  for (size_t i = 0; i < n; i++) { /* q as uploaded, k and v as the reference path left them */
    const int q = (int)(i % ((size_t)3 * H * hd)) < H * hd;
    qdiff += after[i] != (q ? h[i] : rot[i]);
  }
  printf(
      "  rotary d%d: %zu of %zu output elements differ from rope_qk + kernel, %zu of qkv's from q unrotated, k "
      "rotated\n",
      hd, diff, no, qdiff);
  if (diff || qdiff) fail_msg("rotary d%d: %zu output / %zu qkv elements differ", hd, diff, qdiff);
  for (size_t i = 0; i < (size_t)b.cu[b.n_seq] * 3 * H * hd; i++) b.qkv[i] = qvl_bf16_to_f32(rot[i]);
  char name[64];
  snprintf(name, sizeof name, "rotary d%d (q rotated in the kernel)", hd);
  check(&b, name, 0);
  cudaFree(dc), cudaFree(ds);
  free(ang), free(cs), free(sn), free(h), free(rot), free(after), free(ref);
  batch_free(&b);
}

static void test_rotary(void **st) {
  (void)st;
  const int lens[] = {300, 1, 1024, 77, 513, 2000};
  rotary_case(lens, 6, 72);
  rotary_case(lens, 5, 80);
  rotary_case(lens, 5, 64);
}

/* Captured once with bounds (3 sequences, max_len 1024, 2048 rows), replayed with two other boundary sets. */
static void test_graph(void **st) {
  (void)st;
  const int first[] = {1024, 1000, 24}, sets[2][3] = {{500, 1024, 524}, {1, 1023, 1024}};
  batch b;
  batch_make(&b, first, 3, 16, 72);
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CU(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  int rc = run(&b, -1);
  CU(cudaStreamEndCapture(stream, &g));
  assert_int_equal(rc, QVL_OK);
  CU(cudaGraphInstantiate(&ge, g, 0));
  for (int t = 0; t < 2; t++) {
    set_lens(&b, sets[t], 3);
    assert_int_equal(b.cu[3], (int)b.rows);
    h2d(b.d_cu, b.cu, 4 * sizeof(int32_t));
    poison_out(&b);
    CU(cudaGraphLaunch(ge, stream));
    wait_stream("graph replay", 30);
    char name[96];
    snprintf(name, sizeof name, "graph replay %d: lengths %d %d %d", t, sets[t][0], sets[t][1], sets[t][2]);
    check(&b, name, 0);
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  batch_free(&b);
}

static void test_refusals(void **st) {
  (void)st;
  const int len = 10;
  batch b;
  batch_make(&b, &len, 1, 2, 72);
  const float *t = (const float *)b.d_qkv; /* any 16-byte-aligned device floats: nothing launches */
  assert_int_equal(cuda_attn_vit_wgmma(b.d_out, b.d_qkv, NULL, NULL, b.d_cu, 1, 10, 10, 2, 96, 0.1f, stream),
                   QVL_ERR_UNSUPPORTED);
  assert_int_equal(cuda_attn_vit_wgmma(b.d_out, b.d_qkv, NULL, NULL, b.d_cu, 1, 10, 10, 2, 128, 0.1f, stream),
                   QVL_ERR_UNSUPPORTED);
  assert_int_equal(
      cuda_attn_vit_wgmma(b.d_out, (const uint16_t *)b.d_qkv + 4, NULL, NULL, b.d_cu, 1, 10, 10, 2, 72, 0.1f, stream),
      QVL_ERR_INVALID_ARG);
  assert_int_equal(cuda_attn_vit_wgmma(b.d_out, b.d_qkv, t, NULL, b.d_cu, 1, 10, 10, 2, 72, 0.1f, stream),
                   QVL_ERR_INVALID_ARG); /* cos without sin */
  assert_int_equal(cuda_attn_vit_wgmma(b.d_out, b.d_qkv, t, t + 1, b.d_cu, 1, 10, 10, 2, 72, 0.1f, stream),
                   QVL_ERR_INVALID_ARG); /* tables not 16-byte aligned */
  poison_out(&b);
  assert_int_equal(cuda_attn_vit_wgmma(b.d_out, b.d_qkv, NULL, NULL, b.d_cu, 0, 10, 10, 2, 72, 0.1f, stream), QVL_OK);
  wait_stream("no sequences", 10);
  CU(cudaMemcpy(b.out, b.d_out, 2, cudaMemcpyDeviceToHost));
  assert_int_equal(b.out[0], POISON); /* nothing ran */
  batch_free(&b);
}

/* ---- timing (QVL_ATTN_VIT_BENCH=1) ------------------------------------------------------------------------------ */

static int cmp_f(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* rot: with tables (q's tiles rotated in the kernel; the tables' values do not change the time). */
static void bench_case(int n_seq, int len, int heads, int D, int rot) {
  const int64_t rows = (int64_t)n_seq * len;
  const size_t n = (size_t)rows * 3 * heads * D, pat = 1 << 20;
  uint16_t *h = malloc(n * 2);
  float *f = malloc(pat * sizeof(float));
  tu_uniform(f, pat, -2.f, 2.f, &rng);
  for (size_t i = 0; i < n; i++) h[i] = qvl_f32_to_bf16(f[i % pat]);
  int32_t *cu = malloc((size_t)(n_seq + 1) * 4);
  for (int i = 0; i <= n_seq; i++) cu[i] = i * len;
  void *d_qkv, *d_cu, *d_out;
  CU(cudaMalloc(&d_qkv, n * 2));
  h2d(d_qkv, h, n * 2);
  CU(cudaMalloc(&d_cu, (size_t)(n_seq + 1) * 4));
  h2d(d_cu, cu, (size_t)(n_seq + 1) * 4);
  CU(cudaMalloc(&d_out, (size_t)rows * heads * D * 2));
  float *d_tab = NULL; /* cos and sin, [rows][D] each */
  if (rot) {
    const size_t nt = (size_t)rows * D;
    float *t = malloc(2 * nt * sizeof(float));
    for (size_t i = 0; i < 2 * nt; i++) t[i] = f[i % pat] * 0.5f;
    CU(cudaMalloc((void **)&d_tab, 2 * nt * sizeof(float)));
    h2d(d_tab, t, 2 * nt * sizeof(float));
    free(t);
  }
  const float *dc = d_tab, *ds = d_tab ? d_tab + (size_t)rows * D : NULL;
  cudaEvent_t e0, e1;
  CU(cudaEventCreate(&e0));
  CU(cudaEventCreate(&e1));
  float ms[20];
  for (int it = 0; it < 23; it++) {
    CU(cudaEventRecord(e0, stream));
    assert_int_equal(cuda_attn_vit_wgmma(d_out, d_qkv, dc, ds, d_cu, n_seq, len, rows, heads, D, scale_of(D), stream),
                     QVL_OK);
    CU(cudaEventRecord(e1, stream));
    wait_stream("bench", 60);
    if (it >= 3) CU(cudaEventElapsedTime(&ms[it - 3], e0, e1));
  }
  qsort(ms, 20, sizeof(float), cmp_f);
  const double med = 0.5 * (ms[9] + ms[10]), flop = 4.0 * (double)len * len * n_seq * heads * 72;
  printf(
      "{\"kernel\": \"attn_vit_wgmma\", \"sequences\": %d, \"len\": %d, \"heads\": %d, \"head_dim\": %d, "
      "\"rotary\": %s, \"ms\": %.4f, \"ms_min\": %.4f, \"tflops\": %.1f}\n",
      n_seq, len, heads, D, rot ? "true" : "false", med, ms[0], flop / (med * 1e-3) / 1e12);
  uint16_t probe[64];
  CU(cudaMemcpy(probe, d_out, sizeof probe, cudaMemcpyDeviceToHost));
  for (int i = 0; i < 64; i++) assert_false(isnan(qvl_bf16_to_f32(probe[i])));
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  cudaFree(d_qkv), cudaFree(d_cu), cudaFree(d_out), cudaFree(d_tab);
  free(h), free(f), free(cu);
}

static void test_bench(void **st) {
  (void)st;
  const char *e = getenv("QVL_ATTN_VIT_BENCH");
  if (!e || !*e || *e == '0') {
    printf("  timing skipped (set QVL_ATTN_VIT_BENCH=1)\n");
    skip();
  }
  for (int rot = 0; rot < 2; rot++) {
    bench_case(20, 4800, 16, 72, rot);
    bench_case(64, 1024, 16, 72, rot);
  }
}

static int setup(void **s) {
  (void)s;
  rng = tu_seed();
  return cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess ? 0 : -1;
}

static int teardown(void **s) {
  (void)s;
  cudaStreamDestroy(stream);
  return 0;
}

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_attn_vit: no CUDA device here; skipped\n");
    return 0;
  }
  int rc = cuda_attn_vit_wgmma_init();
  if (rc == QVL_ERR_UNSUPPORTED) {
    int dev = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    printf(
        "test_gpu_attn_vit: the device is compute capability %d.%d (the kernel is sm_90a only), or the driver has no "
        "cuTensorMapEncodeTiled; skipped\n",
        major, minor);
    return 0;
  }
  if (rc != QVL_OK) {
    printf("test_gpu_attn_vit: cuda_attn_vit_wgmma_init failed (%d)\n", rc);
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fragments),   cmocka_unit_test(test_uniform_d72), cmocka_unit_test(test_ragged_d72),
      cmocka_unit_test(test_no_pingpong), cmocka_unit_test(test_d80),         cmocka_unit_test(test_d64),
      cmocka_unit_test(test_nan_tail),    cmocka_unit_test(test_rotary),      cmocka_unit_test(test_graph),
      cmocka_unit_test(test_refusals),    cmocka_unit_test(test_bench)};
  const char *bench = getenv("QVL_ATTN_VIT_BENCH");
  if (bench && *bench && *bench != '0') cmocka_set_test_filter("test_bench"); /* the timing alone */
  return cmocka_run_group_tests(tests, setup, teardown);
}
