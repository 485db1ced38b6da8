#include "runtime/lru_map.h"

#include <stdlib.h>
#include <string.h>

#include "qvl.h"

static size_t slot(size_t n_bucket, const uint8_t *key) {
  uint64_t h;
  memcpy(&h, key, sizeof h);
  return (size_t)h & (n_bucket - 1);
}

int lru_map_init(lru_map *m, size_t n_bucket) {
  memset(m, 0, sizeof *m);
  m->n_bucket = n_bucket;
  m->bucket = calloc(n_bucket, sizeof *m->bucket);
  return m->bucket ? QVL_OK : QVL_ERR_NOMEM;
}

void lru_map_free(lru_map *m) {
  free(m->bucket);
  memset(m, 0, sizeof *m);
}

static lru_node **find(const lru_map *m, const uint8_t *key) {
  lru_node **p = &m->bucket[slot(m->n_bucket, key)];
  while (*p && memcmp((*p)->key, key, LRU_KEY_BYTES)) p = &(*p)->chain;
  return p;
}

lru_node *lru_map_get(const lru_map *m, const uint8_t *key) { return *find(m, key); }

static void unlink_lru(lru_map *m, lru_node *e) {
  *(e->prev ? &e->prev->next : &m->head) = e->next;
  *(e->next ? &e->next->prev : &m->tail) = e->prev;
  e->prev = e->next = NULL;
}

static void push_front(lru_map *m, lru_node *e) {
  e->prev = NULL, e->next = m->head;
  *(m->head ? &m->head->prev : &m->tail) = e;
  m->head = e;
}

void lru_map_touch(lru_map *m, lru_node *e) { unlink_lru(m, e), push_front(m, e); }

static void grow(lru_map *m) {
  size_t n = m->n_bucket * 2;
  lru_node **b = calloc(n, sizeof *b);
  if (!b) return;
  free(m->bucket);
  m->bucket = b, m->n_bucket = n;
  for (lru_node *e = m->head; e; e = e->next) {
    lru_node **p = &m->bucket[slot(n, e->key)];
    e->chain = *p, *p = e;
  }
}

void lru_map_add(lru_map *m, lru_node *e) {
  lru_node **p = &m->bucket[slot(m->n_bucket, e->key)];
  e->chain = *p, *p = e;
  push_front(m, e);
  if (++m->n > m->n_bucket) grow(m);
}

void lru_map_remove(lru_map *m, lru_node *e) {
  lru_node **p = find(m, e->key);
  *p = e->chain;
  unlink_lru(m, e);
  m->n--;
}
