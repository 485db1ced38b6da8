/* tok_util.c - the growable vectors and open-addressing maps of the tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

int tok_vec_reserve(tok_vec *v, size_t n, size_t elem) {
  if (n <= v->cap) return QVL_OK;
  size_t cap = v->cap ? v->cap : 64;
  while (cap < n) cap *= 2;
  void *p = realloc(v->p, cap * elem);
  if (!p) return QVL_ERR_NOMEM;
  v->p = p;
  v->cap = cap;
  return QVL_OK;
}

void tok_vec_free(tok_vec *v) {
  free(v->p);
  memset(v, 0, sizeof *v);
}

int tok_map_init(tok_map *m, size_t n_expected) {
  size_t cap = 16;
  while (cap < 2 * n_expected) cap *= 2; /* load factor <= 1/2 keeps probes short */
  m->slots = calloc(cap, sizeof *m->slots);
  m->cap = cap;
  m->n = 0;
  return m->slots ? QVL_OK : QVL_ERR_NOMEM;
}

void tok_map_free(tok_map *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t tok_hash(const void *p, size_t n) {
  const uint8_t *s = p;
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, s, 8);
    h = mix(h ^ w);
    s += 8, n -= 8;
  }
  uint64_t w = 0;
  memcpy(&w, s, n);
  return mix(h ^ w ^ 0xff51afd7ed558ccdull);
}

size_t tok_map_home(const tok_map *m, uint64_t key) { return mix(key) & (m->cap - 1); }

static int grow(tok_map *m) {
  tok_map bigger;
  if (tok_map_init(&bigger, m->cap)) return QVL_ERR_NOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->slots[i].key) continue;
    size_t j = mix(m->slots[i].key) & (bigger.cap - 1);
    while (bigger.slots[j].key) j = (j + 1) & (bigger.cap - 1);
    bigger.slots[j].key = m->slots[i].key;
    bigger.slots[j].val = m->slots[i].val;
  }
  bigger.n = m->n;
  tok_map_free(m);
  *m = bigger;
  return QVL_OK;
}

int tok_map_reserve(tok_map *m) { return 2 * (m->n + 1) > m->cap ? grow(m) : QVL_OK; }

int tok_pairs_init(tok_pairs *p, uint64_t n_vocab, size_t n_merges) {
  size_t cap = 16;
  while (cap < n_merges + n_merges / 2) cap *= 2; /* load <= 2/3 */
  p->slots = calloc(cap, sizeof *p->slots);
  p->merged = malloc(cap * sizeof *p->merged);
  p->cap = cap, p->n = 0, p->n_vocab = n_vocab;
  return p->slots && p->merged ? QVL_OK : QVL_ERR_NOMEM;
}

/* Doubles the table (and the rank -> token array with it, so merged[] always has cap entries). */
static int pairs_grow(tok_pairs *p) {
  tok_pairs big;
  if (tok_pairs_init(&big, p->n_vocab, p->cap)) return tok_pairs_free(&big), QVL_ERR_NOMEM;
  for (size_t i = 0; i < p->cap; i++) {
    if (!p->slots[i]) continue;
    size_t j = mix(p->slots[i] >> 24) & (big.cap - 1);
    while (big.slots[j]) j = (j + 1) & (big.cap - 1);
    big.slots[j] = p->slots[i];
  }
  memcpy(big.merged, p->merged, p->cap * sizeof *p->merged);
  big.n = p->n;
  tok_pairs_free(p);
  *p = big;
  return QVL_OK;
}

void tok_pairs_free(tok_pairs *p) {
  free(p->slots);
  free(p->merged);
  memset(p, 0, sizeof *p);
}

int tok_pairs_put(tok_pairs *p, int32_t left, int32_t right, uint32_t rank, int32_t merged) {
  while ((p->n + 1) * 3 > p->cap * 2 || rank >= p->cap)
    if (pairs_grow(p)) return QVL_ERR_NOMEM;
  uint64_t key = (uint64_t)left * p->n_vocab + (uint64_t)right + 1;
  size_t i = mix(key) & (p->cap - 1);
  while (p->slots[i] && p->slots[i] >> 24 != key) i = (i + 1) & (p->cap - 1);
  p->n += !p->slots[i];
  p->slots[i] = key << 24 | rank;
  p->merged[rank] = merged;
  return QVL_OK;
}
