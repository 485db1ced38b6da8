/* sampler.h - picks the next token from last-position logits (f32, as the reference upcasts them, spec §6.9):
 * penalties first (repetition over the prompt and output, then frequency and presence over the output), then
 * greedy when temperature <= 0; else temperature, then top-k, top-p, min-p (transformers' warper order),
 * renormalised, drawn with a seeded counter stream (the same seed gives the same tokens). */
#ifndef QVL_RUNTIME_SAMPLER_H
#define QVL_RUNTIME_SAMPLER_H

#include <stdint.h>

#include "qvl.h"

typedef struct qvl_sampler qvl_sampler;

int qvl_sampler_open(qvl_sampler **out, int vocab, const qvl_sampling *s);
void qvl_sampler_close(qvl_sampler *sm); /* NULL is a no-op */
/* The history the penalties read: the prompt once, then each generated token as it is accepted. Ids outside
 * the vocabulary are ignored. */
void qvl_sampler_prompt(qvl_sampler *sm, const int32_t *ids, int n);
void qvl_sampler_accept(qvl_sampler *sm, int32_t id);
/* Applies the penalties to logits in place (what pick does to its own copy). */
void qvl_sampler_penalize(const qvl_sampler *sm, float *logits);
/* The next token; logits is not modified and the token is not accepted. */
int32_t qvl_sampler_pick(qvl_sampler *sm, const float *logits);

#endif
