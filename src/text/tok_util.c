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

int tok_pair_put(tok_map *m, uint64_t key, uint64_t val) {
  if (tok_map_reserve(m)) return QVL_ERR_NOMEM;
  uint64_t k = key + 1;
  size_t i = mix(k) & (m->cap - 1);
  while (m->slots[i].key && m->slots[i].key != k) i = (i + 1) & (m->cap - 1);
  if (!m->slots[i].key) m->n++;
  m->slots[i].key = k;
  m->slots[i].val = val;
  return QVL_OK;
}

int tok_pair_get(const tok_map *m, uint64_t key, uint64_t *val) {
  uint64_t k = key + 1;
  size_t i = mix(k) & (m->cap - 1);
  while (m->slots[i].key) {
    if (m->slots[i].key == k) {
      *val = m->slots[i].val;
      return 1;
    }
    i = (i + 1) & (m->cap - 1);
  }
  return 0;
}
