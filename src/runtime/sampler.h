/* sampler.h - picks the next token from last-position logits (f32, as the reference upcasts them, spec §6.9):
 * greedy when temperature <= 0; else temperature, then top-k, top-p, min-p (transformers' warper order),
 * renormalised, drawn with a seeded counter stream (the same seed gives the same tokens). */
#ifndef QVL_RUNTIME_SAMPLER_H
#define QVL_RUNTIME_SAMPLER_H

#include <stdint.h>

#include "qvl.h"

typedef struct qvl_sampler qvl_sampler;

int qvl_sampler_open(qvl_sampler **out, int vocab, const qvl_sampling *s);
void qvl_sampler_close(qvl_sampler *sm); /* NULL is a no-op */
/* The next token; logits is not modified. */
int32_t qvl_sampler_pick(qvl_sampler *sm, const float *logits);

#endif
