#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct qvl_sampler {
  int vocab;
  qvl_sampling s;
  uint64_t state;
  int32_t *order; /* candidate ids, most probable first */
  double *p;      /* their probabilities */
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
  sm->work = malloc((size_t)vocab * sizeof *sm->work);
  sm->seen = calloc((size_t)vocab, sizeof *sm->seen);
  sm->count = calloc((size_t)vocab, sizeof *sm->count);
  return sm->order && sm->p && sm->work && sm->seen && sm->count ? QVL_OK : QVL_ERR_NOMEM;
}

void qvl_sampler_close(qvl_sampler *sm) {
  if (!sm) return;
  free(sm->order), free(sm->p), free(sm->work), free(sm->seen), free(sm->count), free(sm);
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

/* Softmax of logits / T into sm->p (indexed by id), ids sorted by probability into sm->order. */
static void rank(qvl_sampler *sm, const float *logits) {
  double mx = -INFINITY, sum = 0, inv_t = 1.0 / sm->s.temperature;
  for (int i = 0; i < sm->vocab; i++) mx = logits[i] * inv_t > mx ? logits[i] * inv_t : mx;
  for (int i = 0; i < sm->vocab; i++) sum += sm->p[i] = exp(logits[i] * inv_t - mx), sm->order[i] = i;
  for (int i = 0; i < sm->vocab; i++) sm->p[i] /= sum;
  qsort_r(sm->order, (size_t)sm->vocab, sizeof *sm->order, by_prob, sm->p); /* glibc; _GNU_SOURCE */
}

int32_t qvl_sampler_pick(qvl_sampler *sm, const float *logits) {
  if (sm->penalised) {
    memcpy(sm->work, logits, (size_t)sm->vocab * sizeof *sm->work);
    qvl_sampler_penalize(sm, sm->work);
    logits = sm->work;
  }
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
