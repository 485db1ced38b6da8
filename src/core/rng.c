#include "core/rng.h"

#include <math.h>
#include <string.h>

uint64_t qvl_fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return h;
}

void qvl_counter_fill(float *dst, const char *name, int64_t first, int64_t n, double center, double scale) {
  uint64_t seed = qvl_fnv1a64(name);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) dst[i] = qvl_counter_value(seed, (uint64_t)(first + i), center, scale);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

void qvl_dummy_scale(const char *name, const int64_t *shape, int ndim, double *center, double *scale) {
  *center = 0.0;
  if (ends_with(name, ".bias")) {
    *scale = 0.02;
  } else if (strstr(name, "norm") || strstr(name, "ln_q")) {
    *center = 1.0;
    *scale = 0.1;
  } else if (ends_with(name, "embed_tokens.weight") || ends_with(name, "pos_embed.weight")) {
    *scale = 0.05;
  } else {
    int64_t fan_in = 1;
    for (int d = 1; d < ndim; d++) fan_in *= shape[d];
    *scale = 1.0 / sqrt((double)fan_in);
  }
}
