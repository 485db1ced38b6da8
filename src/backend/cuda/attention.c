/* attention.c - backend.h attention on CUDA: per prepared attention, the fastest of these candidates.
 *   vit           attn_vit.cu with the rotary fused: q and k are read unrotated, qkv is left as it is
 *   rope+vit      rope_qk in place, then attn_vit.cu without tables (for long sequences, where the fused kernel reads
 *                 the keys' cos/sin rows again for every query tile); the same output bits as vit
 *   cudnn         rope_qk in place, then cuDNN's SDPA (sdpa.c: the best of its plans, tuned on its own first run)
 *   rope_k+wgmma  rope_qk on k alone in place, then attn_vit_wgmma.cu rotating q's tiles in shared memory (Hopper
 *                 wgmma, head_dim 64/72/80 exactly where cuDNN pads to 128; only for sequences longer than 64 tokens,
 *                 on compute capability 9.0): half of rope_qk's traffic; the same output bits as rope+wgmma
 *   rope+wgmma    rope_qk in place, then attn_vit_wgmma.cu without tables
 * Without a rotary (cos NULL) rope+vit is vit and rope_k+wgmma is rope+wgmma; both are left out.
 *
 * The first run of a prepared attention outside a graph capture times every candidate once on the real buffers
 * (after one untimed run each: cuDNN builds and tunes its plans then) and keeps the fastest, in three phases by what
 * a candidate rotates itself: q and k (vit, on the unrotated qkv), then, after a timed rope_qk of k, q (rope_k+wgmma),
 * then, after a timed rope_qk of q, nothing (the rest, on the rotated q/k); each candidate's time includes the rotary
 * passes before its phase (so the unfused ones count rope_qk as two launches). Then, unless the fastest ran last, it
 * runs once more on the rotated q/k (one that rotates without its tables: the same bits), so that the first run's
 * output is the one every later run gives. A capture before any eager run takes vit for sequences of at most 64
 * tokens (Qwen2.5-VL's windows: one tile each) and cuDNN otherwise, and leaves the choice open. QVL_SDPA_LOG=1
 * prints the times; QVL_SDPA_TUNE=0 takes that same default untimed; QVL_ATTN=<name> keeps that candidate wherever
 * it runs the shape (all still timed, for A/B runs of a whole pass). Adding a candidate: an entry in CANDS and a
 * case in cand_run.
 *
 * Choices are remembered per shape class (heads, head_dim, rotary or not, the longest sequence: <= 64 tokens or its
 * power of two, the sequence count's power of two): a later attention of a known class takes the class's choice
 * without timing, and is not given cuDNN plans at all when the class runs attn_vit.cu or attn_vit_wgmma.cu (prepare
 * builds them only when the class is new or chose cuDNN, and for a known cuDNN class only the ragged plan of the
 * count's power-of-two bucket, shared by every count in it). A server's vision passes have a new image count nearly
 * every time; each one would otherwise build cuDNN plans for its exact window count (a dense plan per count) and
 * time every candidate, with the device idle behind the host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"

enum {
  CAND_VIT,
  CAND_ROPE_VIT,
  CAND_DNN,
  CAND_WGMMA,
  CAND_ROPE_WGMMA,
  N_CAND,
  VIT_SHORT = 64 /* attn_vit.cu's one-tile sequences */
};

static const struct cand {
  const char *name;
  int rot; /* the parts of qkv it rotates itself (CUDA_ROPE_*); rope_qk rotates the others in place first */
} CANDS[N_CAND] = {
    {"vit", CUDA_ROPE_QK}, {"rope+vit", 0}, {"cudnn", 0}, {"rope_k+wgmma", CUDA_ROPE_Q}, {"rope+wgmma", 0}};

/* The tuning's phases: the candidates rotating PHASE_ROT themselves, after rope_qk of PHASE_ROPE. */
static const int PHASE_ROT[3] = {CUDA_ROPE_QK, CUDA_ROPE_Q, 0}, PHASE_ROPE[3] = {0, CUDA_ROPE_K, CUDA_ROPE_Q};

typedef struct cuda_att {
  int n_seq, max_len, heads, head_dim;
  int key[4]; /* the shape class without the rotary: heads, head_dim, length class, count class */
  int64_t rows;
  int32_t *cu;    /* device copy of the boundaries [n_seq + 1] (attn_vit.cu reads them at every run) */
  void *dnn;      /* sdpa.c's prepared attention; NULL when cuDNN has no plan for this layout */
  int ok[N_CAND]; /* the candidate can run this shape */
  int choice;     /* -1 until the first eager run */
} cuda_att;

static int log2_ceil(int v) {
  int l = 0;
  while ((1 << l) < v && l < 30) l++;
  return l;
}

/* The choice remembered for a's class with the rotary rot, or -1. */
static int pick_find(const cuda_ctx *c, const cuda_att *a, int rot) {
  for (int i = 0; i < c->n_att_picks; i++) {
    const struct cuda_att_pick *p = &c->att_picks[i];
    if (p->key[0] == a->key[0] && p->key[1] == a->key[1] && p->key[2] == a->key[2] && p->key[3] == a->key[3] &&
        p->key[4] == rot)
      return p->choice;
  }
  return -1;
}

/* Remembers choice for a's class (an allocation failure only loses the memory of it). */
static void pick_keep(cuda_ctx *c, const cuda_att *a, int rot, int choice) {
  if (pick_find(c, a, rot) >= 0) return;
  if (c->n_att_picks == c->cap_att_picks) {
    int cap = c->cap_att_picks ? 2 * c->cap_att_picks : 32;
    struct cuda_att_pick *p = realloc(c->att_picks, (size_t)cap * sizeof *p);
    if (!p) return;
    c->att_picks = p, c->cap_att_picks = cap;
  }
  c->att_picks[c->n_att_picks++] = (struct cuda_att_pick){{a->key[0], a->key[1], a->key[2], a->key[3], rot}, choice};
}

void cuda_attention_destroy(cuda_ctx *c) {
  free(c->att_picks);
  c->att_picks = NULL, c->n_att_picks = c->cap_att_picks = 0;
}

void cuda_attention_free(qvl_backend *b, void *att) {
  cuda_att *a = att;
  if (!a) return;
  cuda_sdpa_free(b, a->dnn);
  b->free(b, a->cu);
  free(a);
}

int cuda_attention_prepare(qvl_backend *b, void **att, const int32_t *cu, const int32_t *cu_dev, int n_seq, int heads,
                           int head_dim) {
  cuda_ctx *c = b->ctx;
  *att = NULL;
  int max_len = 0;
  for (int i = 0; i < n_seq; i++) {
    if (cu[i + 1] < cu[i]) return qvl_fail(b->err, QVL_ERR_INVALID_ARG, "cuda attention: cu_seqlens not sorted");
    max_len = cu[i + 1] - cu[i] > max_len ? cu[i + 1] - cu[i] : max_len;
  }
  cuda_att *a = calloc(1, sizeof *a);
  if (!a) return qvl_fail(b->err, QVL_ERR_NOMEM, "cuda attention: out of memory");
  a->n_seq = n_seq, a->max_len = max_len, a->heads = heads, a->head_dim = head_dim, a->choice = -1;
  a->rows = n_seq > 0 ? cu[n_seq] : 0;
  a->key[0] = heads, a->key[1] = head_dim, a->key[2] = max_len <= VIT_SHORT ? 0 : log2_ceil(max_len);
  a->key[3] = log2_ceil(n_seq);
  *att = a;
  if (!max_len) return QVL_OK; /* nothing to attend over: attention is a no-op */
  int vit = head_dim >= 8 && head_dim <= 128 && head_dim % 8 == 0, rc;
  if (vit) {
    size_t bytes = (size_t)(n_seq + 1) * sizeof(int32_t);
    if ((rc = b->alloc(b, (void **)&a->cu, bytes)) ||
        (rc = cuda_check(b, cudaMemcpyAsync(a->cu, cu_dev, bytes, cudaMemcpyDeviceToDevice, c->stream),
                         "attention boundaries")))
      return rc;
  }
  /* attn_vit_wgmma.cu on a device it runs on, for more than one tile of attn_vit.cu (its launcher refuses the rest:
   * head dims other than 64/72/80, 2^31 rows; the tuning then leaves it out) */
  a->ok[CAND_WGMMA] = a->ok[CAND_ROPE_WGMMA] = c->wgmma && max_len > VIT_SHORT;
  int known = vit ? pick_find(c, a, 1) : -1; /* the towers always pass the rotary */
  if (known >= 0 && known != CAND_DNN) {     /* this class runs attn_vit.cu or attn_vit_wgmma.cu: no cuDNN plans */
    a->ok[CAND_VIT] = a->ok[CAND_ROPE_VIT] = 1;
    return QVL_OK;
  }
  /* a new class may take cuDNN's dense plan for its exact count; a known cuDNN class keeps to the ragged plans of
   * power-of-two buckets, which every count of the bucket shares (no plan built per count) */
  if ((rc = cuda_sdpa_prepare(b, &a->dnn, cu, cu_dev, n_seq, heads, head_dim, known < 0))) {
    if (!vit) return rc;
    qvl_err_clear(b->err); /* attn_vit.cu alone */
    cuda_sdpa_free(b, a->dnn);
    a->dnn = NULL;
  }
  a->ok[CAND_VIT] = a->ok[CAND_ROPE_VIT] = vit, a->ok[CAND_DNN] = a->dnn != NULL;
  return QVL_OK;
}

/* Runs candidate k; done: the parts of qkv rotated in place already (the tuning's timed rope_qk passes). A candidate
 * rotates its parts itself only when none of them is rotated yet; otherwise rope_qk rotates what is left and the
 * candidate runs without its tables (the same bits), so no part is ever rotated twice. */
static int cand_run(qvl_backend *b, const cuda_att *a, int k, void *out, void *qkv, const float *cos, const float *sin,
                    float scale, int done) {
  cuda_ctx *c = b->ctx;
  const int own = cos && !(CANDS[k].rot & done) ? CANDS[k].rot : 0, need = cos ? CUDA_ROPE_QK & ~done & ~own : 0;
  if (need && cuda_rope_qk(qkv, cos, sin, a->rows, a->heads, a->head_dim, need, c->stream))
    return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda attention: rotary launch failed");
  if (k == CAND_DNN) return cuda_sdpa_run(b, out, qkv, a->dnn, scale);
  const float *tc = own ? cos : NULL, *ts = own ? sin : NULL;
  int rc;
  if (k == CAND_WGMMA || k == CAND_ROPE_WGMMA)
    rc = cuda_attn_vit_wgmma(out, qkv, tc, ts, a->cu, a->n_seq, a->max_len, a->rows, a->heads, a->head_dim, scale,
                             c->stream);
  else
    rc = cuda_attn_vit(out, qkv, tc, ts, a->cu, a->n_seq, a->max_len, a->rows, a->heads, a->head_dim, scale, c->stream);
  return rc ? qvl_fail(b->err, rc, "cuda attention: %s launch failed (%s)", CANDS[k].name, qvl_status_name(rc))
            : QVL_OK;
}

/* vit for one-tile sequences or where cuDNN has no plan, cuDNN otherwise. */
static int default_choice(const cuda_att *a) {
  return a->ok[CAND_VIT] && (a->max_len <= VIT_SHORT || !a->ok[CAND_DNN]) ? CAND_VIT : CAND_DNN;
}

/* ms of what ran on the stream between e0 and e1 (waits for e1). */
static int elapsed(qvl_backend *b, cudaEvent_t e0, cudaEvent_t e1, float *ms) {
  cuda_ctx *c = b->ctx;
  int rc = cuda_check(b, cudaEventRecord(e1, c->stream), "attention timing");
  if (!rc) rc = cuda_check(b, cudaEventSynchronize(e1), "attention timing");
  if (!rc) rc = cuda_check(b, cudaEventElapsedTime(ms, e0, e1), "attention timing");
  return rc;
}

/* Times every runnable candidate (in the phases of the top) into ms[]; one whose launcher refuses the shape or the
 * device (QVL_ERR_UNSUPPORTED, nothing launched) leaves ok[]; rope_ms[ph]: the rotary pass before phase ph; *done:
 * the parts of qkv rotated in place on the way, *last: the candidate whose output out holds. */
static int time_all(qvl_backend *b, const cuda_att *a, int *ok, float *ms, float *rope_ms, int *done, int *last,
                    cudaEvent_t e0, cudaEvent_t e1, void *out, void *qkv, const float *cos, const float *sin,
                    float scale) {
  cuda_ctx *c = b->ctx;
  int rc = QVL_OK;
  float before = 0; /* the rotary passes so far */
  for (int ph = 0; ph < 3; ph++) {
    if (PHASE_ROPE[ph] && cos) {
      /* first an untimed pass on out seen as a third of the rows of qkv (scratch: every candidate writes all of
       * out), so that the timed one does not pay for loading the kernel */
      if ((ph == 1 && cuda_rope_qk(out, cos, sin, a->rows / 3, a->heads, a->head_dim, CUDA_ROPE_QK, c->stream)) ||
          (rc = cuda_check(b, cudaEventRecord(e0, c->stream), "attention timing")) ||
          cuda_rope_qk(qkv, cos, sin, a->rows, a->heads, a->head_dim, PHASE_ROPE[ph], c->stream))
        return rc ? rc : qvl_fail(b->err, QVL_ERR_DEVICE, "cuda attention: rotary launch failed");
      if ((rc = elapsed(b, e0, e1, &rope_ms[ph]))) return rc;
      *done |= PHASE_ROPE[ph];
      before += rope_ms[ph];
    }
    for (int k = 0; k < N_CAND; k++) {
      if (!ok[k] || CANDS[k].rot != PHASE_ROT[ph]) continue;
      if ((rc = cand_run(b, a, k, out, qkv, cos, sin, scale, *done)) == QVL_ERR_UNSUPPORTED) {
        qvl_err_clear(b->err);
        ok[k] = 0;
        continue;
      }
      if (rc || (rc = cuda_check(b, cudaEventRecord(e0, c->stream), "attention timing")) ||
          (rc = cand_run(b, a, k, out, qkv, cos, sin, scale, *done)) || (rc = elapsed(b, e0, e1, &ms[k])))
        return rc;
      ms[k] += before;
      *last = k;
    }
  }
  return QVL_OK;
}

/* The first eager run: every candidate timed, the fastest kept in a->choice and its output left in out. */
static int tune(qvl_backend *b, cuda_att *a, void *out, void *qkv, const float *cos, const float *sin, float scale) {
  float ms[N_CAND] = {0}, rope_ms[3] = {0};
  int ok[N_CAND], best = -1, done = 0, last = -1, rc;
  for (int k = 0; k < N_CAND; k++) ok[k] = a->ok[k] && (cos || (k != CAND_ROPE_VIT && k != CAND_WGMMA));
  cudaEvent_t e0, e1;
  if ((rc = cuda_check(b, cudaEventCreate(&e0), "attention timing"))) return rc;
  if ((rc = cuda_check(b, cudaEventCreate(&e1), "attention timing"))) {
    cudaEventDestroy(e0);
    return rc;
  }
  rc = time_all(b, a, ok, ms, rope_ms, &done, &last, e0, e1, out, qkv, cos, sin, scale);
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  if (rc) return rc;
  const char *force = getenv("QVL_ATTN");
  for (int k = 0; k < N_CAND; k++)
    if (ok[k] && (best < 0 || ms[k] < ms[best])) best = k;
  for (int k = 0; force && k < N_CAND; k++)
    if (ok[k] && !strcmp(force, CANDS[k].name)) best = k;
  if (best < 0) return qvl_fail(b->err, QVL_ERR_UNSUPPORTED, "cuda attention: no kernel runs this shape");
  if (best != last && (rc = cand_run(b, a, best, out, qkv, cos, sin, scale, done))) return rc;
  a->choice = best;
  pick_keep(b->ctx, a, cos != NULL, best);
  const char *log = getenv("QVL_SDPA_LOG");
  if (log && *log == '1') {
    fprintf(stderr, "qvl attention: %d seqs, max %d, h %d d %d%s:", a->n_seq, a->max_len, a->heads, a->head_dim,
            cos ? ", rotary" : "");
    for (int k = 0; k < N_CAND; k++)
      if (ok[k]) fprintf(stderr, " %s %.3f ms,", CANDS[k].name, ms[k]);
    fprintf(stderr, " (rope_qk of k %.3f ms, of q %.3f ms): %s\n", rope_ms[1], rope_ms[2], CANDS[best].name);
  }
  return QVL_OK;
}

int cuda_attention(qvl_backend *b, void *out, void *qkv, const void *att, const float *cos, const float *sin,
                   float scale) {
  cuda_ctx *c = b->ctx;
  cuda_att *a = (cuda_att *)att;
  if (!a->max_len) return QVL_OK; /* nothing to attend over */
  int k = a->choice, rc;
  if (k < 0) { /* a class already decided: its choice, untimed */
    int known = pick_find(c, a, cos != NULL);
    if (known >= 0 && a->ok[known]) k = a->choice = known;
  }
  if (k < 0) {
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(c->stream, &cap);
    const char *off = getenv("QVL_SDPA_TUNE");
    if (cap == cudaStreamCaptureStatusNone && !(off && *off == '0')) {
      cuda_mark_begin(b, 1);
      cuda_mark_label(b, "attention tuning d %d", a->head_dim);
      rc = tune(b, a, out, qkv, cos, sin, scale);
      cuda_mark_end(b);
      return rc;
    }
    k = default_choice(a);
    if (cap == cudaStreamCaptureStatusNone) a->choice = k; /* tuning off: decided for good */
  }
  cuda_mark_begin(b, 1);
  cuda_mark_label(b, "attention %s max %d d %d", CANDS[k].name, a->max_len, a->head_dim);
  rc = cand_run(b, a, k, out, qkv, cos, sin, scale, 0);
  cuda_mark_end(b);
  return rc;
}
