/* rng.h - the counter-based generator behind synthetic weights (--dummy) and test inputs.
 *
 * Definition (also implemented, identically, in scripts/qvl_dummy.py for transformers):
 *   seed      = FNV-1a 64 of the tensor's name bytes (offset 0xcbf29ce484222325, prime 0x100000001b3)
 *   x_i       = seed + (i + 1) * 0x9e3779b97f4a7c15            (mod 2^64, i = flat row-major index)
 *   z         = x_i; z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
 *               z ^= z >> 31                                    (SplitMix64's finaliser)
 *   u         = (double)(z >> 40) * 2^-24                       (in [0, 1), exact)
 *   value     = (float)(center + scale * (2u - 1))              (double arithmetic, one rounding to f32)
 * so every element is computable alone, in any order, on any thread, in any language.
 *
 * Scales (qvl_dummy_scale), chosen to look like a trained checkpoint so activations stay finite:
 *   *.bias                                   center 0, scale 0.02
 *   norm weights (name has "norm" or "ln_q") center 1, scale 0.1
 *   embed_tokens.weight, pos_embed.weight    center 0, scale 0.05
 *   every other weight                       center 0, scale 1/sqrt(fan_in), fan_in = numel / shape[0]
 */
#ifndef QVL_CORE_RNG_H
#define QVL_CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

uint64_t qvl_fnv1a64(const char *s);

static inline float qvl_counter_value(uint64_t seed, uint64_t i, double center, double scale) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  double u = (double)(z >> 40) * 0x1p-24;
  return (float)(center + scale * (2.0 * u - 1.0));
}

/* Fills dst[0..n) with elements [first, first + n) of the named tensor's stream. */
void qvl_counter_fill(float *dst, const char *name, int64_t first, int64_t n, double center, double scale);

/* The documented center/scale for an HF tensor name and shape. */
void qvl_dummy_scale(const char *name, const int64_t *shape, int ndim, double *center, double *scale);

#endif
