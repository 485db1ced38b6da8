#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>

struct qvl_sampler {
  int vocab;
  qvl_sampling s;
  uint64_t state;
  int32_t *order; /* candidate ids, most probable first */
  double *p;      /* their probabilities */
};

int qvl_sampler_open(qvl_sampler **out, int vocab, const qvl_sampling *s) {
  qvl_sampler *sm = calloc(1, sizeof *sm);
  *out = sm;
  if (!sm) return QVL_ERR_NOMEM;
  sm->vocab = vocab, sm->s = *s, sm->state = s->seed ^ 0x5851f42d4c957f2dull;
  sm->order = malloc((size_t)vocab * sizeof *sm->order);
  sm->p = malloc((size_t)vocab * sizeof *sm->p);
  return sm->order && sm->p ? QVL_OK : QVL_ERR_NOMEM;
}

void qvl_sampler_close(qvl_sampler *sm) {
  if (!sm) return;
  free(sm->order), free(sm->p), free(sm);
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

/* Softmax of logits / T into sm->p (indexed by id), ids sorted by probability into sm->order. */
static void rank(qvl_sampler *sm, const float *logits) {
  double mx = -INFINITY, sum = 0, inv_t = 1.0 / sm->s.temperature;
  for (int i = 0; i < sm->vocab; i++) mx = logits[i] * inv_t > mx ? logits[i] * inv_t : mx;
  for (int i = 0; i < sm->vocab; i++) sum += sm->p[i] = exp(logits[i] * inv_t - mx), sm->order[i] = i;
  for (int i = 0; i < sm->vocab; i++) sm->p[i] /= sum;
  qsort_r(sm->order, (size_t)sm->vocab, sizeof *sm->order, by_prob, sm->p); /* glibc; _GNU_SOURCE */
}

int32_t qvl_sampler_pick(qvl_sampler *sm, const float *logits) {
  if (sm->s.temperature <= 0) return argmax(logits, sm->vocab);
  rank(sm, logits);
  int keep = sm->vocab;
  if (sm->s.top_k > 0 && sm->s.top_k < keep) keep = sm->s.top_k;
  if (sm->s.top_p > 0 && sm->s.top_p < 1) { /* the smallest prefix holding top_p of the mass */
    double cum = 0;
    for (int i = 0; i < keep; i++)
      if ((cum += sm->p[sm->order[i]]) >= sm->s.top_p) keep = i + 1;
  }
  if (sm->s.min_p > 0) {
    double floor_p = sm->s.min_p * sm->p[sm->order[0]];
    for (int i = 1; i < keep; i++)
      if (sm->p[sm->order[i]] < floor_p) keep = i;
  }
  double mass = 0;
  for (int i = 0; i < keep; i++) mass += sm->p[sm->order[i]];
  double u = uniform01(&sm->state) * mass, cum = 0;
  for (int i = 0; i < keep; i++)
    if ((cum += sm->p[sm->order[i]]) > u) return sm->order[i];
  return sm->order[keep - 1];
}
