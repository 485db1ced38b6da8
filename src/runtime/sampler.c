#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct qvl_sampler {
  int vocab;
  qvl_sampling s;
  uint64_t state;
  int32_t *order; /* candidate ids: ranked (top-k / top-p) or in id order */
  double *p;      /* probabilities by id */
  double *sel;    /* scratch for the k-th largest probability */
  float *work;    /* the penalised logits */
  uint8_t *seen;  /* [vocab] 1 if in the prompt or the output: repetition */
  int32_t *count; /* [vocab] times generated: presence and frequency */
  int penalised;  /* any penalty on */
};

int qvl_sampler_open(qvl_sampler **out, int vocab, const qvl_sampling *s) {
  qvl_sampler *sm = calloc(1, sizeof *sm);
  *out = sm;
  if (!sm) return QVL_ERR_NOMEM;
  sm->vocab = vocab, sm->s = *s, sm->state = s->seed ^ 0x5851f42d4c957f2dull;
  if (sm->s.repetition_penalty == 0) sm->s.repetition_penalty = 1; /* a zeroed struct samples as before */
  sm->penalised = sm->s.repetition_penalty != 1 || sm->s.presence_penalty != 0 || sm->s.frequency_penalty != 0;
  sm->order = malloc((size_t)vocab * sizeof *sm->order);
  sm->p = malloc((size_t)vocab * sizeof *sm->p);
  sm->sel = malloc((size_t)vocab * sizeof *sm->sel);
  sm->work = malloc((size_t)vocab * sizeof *sm->work);
  sm->seen = calloc((size_t)vocab, sizeof *sm->seen);
  sm->count = calloc((size_t)vocab, sizeof *sm->count);
  return sm->order && sm->p && sm->sel && sm->work && sm->seen && sm->count ? QVL_OK : QVL_ERR_NOMEM;
}

void qvl_sampler_close(qvl_sampler *sm) {
  if (!sm) return;
  free(sm->order), free(sm->p), free(sm->sel), free(sm->work), free(sm->seen), free(sm->count), free(sm);
}

void qvl_sampler_prompt(qvl_sampler *sm, const int32_t *ids, int n) {
  for (int i = 0; i < n; i++)
    if (ids[i] >= 0 && ids[i] < sm->vocab) sm->seen[ids[i]] = 1;
}

void qvl_sampler_accept(qvl_sampler *sm, int32_t id) {
  if (id < 0 || id >= sm->vocab) return;
  sm->seen[id] = 1;
  sm->count[id]++;
}

/* f32 throughout, one rounding per operation as torch does: transformers' gather / where / scatter touches each
 * seen id once however often it occurs; vLLM subtracts frequency * count, then presence * mask. */
void qvl_sampler_penalize(const qvl_sampler *sm, float *logits) {
  float r = sm->s.repetition_penalty, pres = sm->s.presence_penalty, freq = sm->s.frequency_penalty;
  for (int i = 0; i < sm->vocab; i++) {
    if (sm->seen[i] && r != 1) logits[i] = logits[i] < 0 ? logits[i] * r : logits[i] / r;
    if (sm->count[i]) {
      logits[i] -= freq * (float)sm->count[i];
      logits[i] -= pres;
    }
  }
}

static int32_t argmax(const float *x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
  return best;
}

static double uniform01(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (double)(z >> 11) * 0x1p-53;
}

static int by_prob(const void *a, const void *b, void *ctx) {
  const double *p = ctx;
  double x = p[*(const int32_t *)a], y = p[*(const int32_t *)b];
  return x < y ? 1 : x > y ? -1 : (*(const int32_t *)a > *(const int32_t *)b) - (*(const int32_t *)a < *(const int32_t *)b);
}

/* Softmax of logits / T into sm->p (indexed by id); returns the most probable id. */
static int32_t softmax(qvl_sampler *sm, const float *logits) {
  double mx = -INFINITY, sum = 0, inv_t = 1.0 / sm->s.temperature;
  int32_t best = 0;
  for (int i = 0; i < sm->vocab; i++)
    if (logits[i] * inv_t > mx) mx = logits[i] * inv_t, best = i;
  for (int i = 0; i < sm->vocab; i++) sum += sm->p[i] = exp(logits[i] * inv_t - mx);
  for (int i = 0; i < sm->vocab; i++) sm->p[i] /= sum;
  return best;
}

/* The k-th largest of v[0..n) (Hoare's quickselect; v is reordered). */
static double kth_largest(double *v, int n, int k) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    double pivot = v[lo + (hi - lo) / 2];
    int i = lo, j = hi;
    while (i <= j) {
      while (v[i] > pivot) i++;
      while (v[j] < pivot) j--;
      if (i <= j) {
        double t = v[i];
        v[i++] = v[j], v[j--] = t;
      }
    }
    if (k - 1 <= j) hi = j;
    else if (k - 1 >= i) lo = i;
    else break;
  }
  return v[k - 1];
}

/* The most probable ids, sorted (probability down, id up), into sm->order: at least k of them and at least
 * `mass` of probability, so top-k and top-p see exactly the head of the full ranking. Gathers every id above a
 * threshold (the k-th largest probability, or a falling one for the mass) instead of sorting the whole vocabulary
 * (151,936 ids per token). Returns the count. */
static int ranked_head(qvl_sampler *sm, double pmax, int k, double mass) {
  int n = 0;
  if (k > 1) {
    memcpy(sm->sel, sm->p, (size_t)sm->vocab * sizeof *sm->sel);
    pmax = kth_largest(sm->sel, sm->vocab, k);
  }
  for (double t = pmax;; t /= 16) {
    double m = 0;
    n = 0;
    for (int i = 0; i < sm->vocab; i++)
      if (sm->p[i] >= t) sm->order[n++] = i, m += sm->p[i];
    if ((n >= k && m >= mass) || n == sm->vocab || t < 1e-300) break;
  }
  qsort_r(sm->order, (size_t)n, sizeof *sm->order, by_prob, sm->p); /* glibc; _GNU_SOURCE */
  return n;
}

/* transformers' warper order: top-k, then top-p over the probabilities renormalised to what top-k kept (the
 * smallest head holding top_p of that mass), then min-p relative to the most probable id. */
int32_t qvl_sampler_pick(qvl_sampler *sm, const float *logits) {
  if (sm->penalised) {
    memcpy(sm->work, logits, (size_t)sm->vocab * sizeof *sm->work);
    qvl_sampler_penalize(sm, sm->work);
    logits = sm->work;
  }
  if (sm->s.temperature <= 0) return argmax(logits, sm->vocab);
  int32_t best = softmax(sm, logits);
  double pmax = sm->p[best];
  int top_k = sm->s.top_k > 0 && sm->s.top_k < sm->vocab, top_p = sm->s.top_p > 0 && sm->s.top_p < 1, n;
  if (top_k || top_p) {
    n = ranked_head(sm, pmax, top_k ? sm->s.top_k : 1, top_p && !top_k ? sm->s.top_p : 0);
    if (top_k && n > sm->s.top_k) n = sm->s.top_k;
  } else {
    for (n = 0; n < sm->vocab; n++) sm->order[n] = n; /* no ranking needed: id order */
  }
  if (top_p) {
    double base = 0, cum = 0;
    for (int i = 0; i < n; i++) base += sm->p[sm->order[i]];
    base = top_k ? base : 1.0;
    for (int i = 0; i < n; i++)
      if ((cum += sm->p[sm->order[i]]) >= sm->s.top_p * base) n = i + 1;
  }
  if (sm->s.min_p > 0) { /* keeps the order it finds */
    int kept = 0;
    for (int i = 0; i < n; i++)
      if (sm->p[sm->order[i]] >= sm->s.min_p * pmax) sm->order[kept++] = sm->order[i];
    n = kept ? kept : (sm->order[0] = best, 1); /* min_p > 1 would drop everything: keep the best */
  }
  double total = 0;
  for (int i = 0; i < n; i++) total += sm->p[sm->order[i]];
  double u = uniform01(&sm->state) * total, cum = 0;
  for (int i = 0; i < n; i++)
    if ((cum += sm->p[sm->order[i]]) > u) return sm->order[i];
  return sm->order[n - 1];
}
