/* prefix_cache.c - block keys by a BLAKE2b-128 chain; a chained hash table over the keys' first 8 bytes and a
 * doubly linked recency list, most recent at the head. */
#include "runtime/prefix_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

typedef struct ent {
  uint8_t key[PC_KEY_BYTES];
  int32_t block;
  struct ent *chain, *prev, *next;
} ent;

struct prefix_cache {
  lm_model *lm;
  ent **bucket;
  size_t n_bucket; /* a power of two */
  ent *head, *tail;
  int n;
};

static size_t slot(const prefix_cache *pc, const uint8_t *key) {
  uint64_t h;
  memcpy(&h, key, sizeof h);
  return (size_t)h & (pc->n_bucket - 1);
}

int pc_open(prefix_cache **out, lm_model *lm) {
  prefix_cache *pc = calloc(1, sizeof *pc);
  *out = pc;
  if (!pc) return QVL_ERR_NOMEM;
  pc->lm = lm, pc->n_bucket = 1024;
  pc->bucket = calloc(pc->n_bucket, sizeof *pc->bucket);
  return pc->bucket ? QVL_OK : QVL_ERR_NOMEM;
}

void pc_close(prefix_cache *pc) {
  if (!pc) return;
  for (ent *e = pc->head, *n; e; e = n) n = e->next, lm_block_unref(pc->lm, e->block), free(e);
  free(pc->bucket);
  free(pc);
}

void pc_keys(uint8_t (*keys)[PC_KEY_BYTES], const int32_t *toks, int n_tok, const uint8_t *const *fold) {
  for (int b = 0; b < n_tok / LM_BLOCK; b++) {
    qvl_blake2b h;
    qvl_blake2b_init(&h, PC_KEY_BYTES);
    if (b) qvl_blake2b_update(&h, keys[b - 1], PC_KEY_BYTES);
    for (int t = b * LM_BLOCK; t < (b + 1) * LM_BLOCK; t++) {
      if (fold && fold[t]) qvl_blake2b_update(&h, fold[t], QVL_IMAGE_HASH_BYTES);
      uint8_t id[4] = {(uint8_t)toks[t], (uint8_t)(toks[t] >> 8), (uint8_t)(toks[t] >> 16), (uint8_t)(toks[t] >> 24)};
      qvl_blake2b_update(&h, id, sizeof id);
    }
    qvl_blake2b_final(&h, keys[b]);
  }
}

static ent **find(prefix_cache *pc, const uint8_t *key) {
  ent **p = &pc->bucket[slot(pc, key)];
  while (*p && memcmp((*p)->key, key, PC_KEY_BYTES)) p = &(*p)->chain;
  return p;
}

static void unlink_lru(prefix_cache *pc, ent *e) {
  *(e->prev ? &e->prev->next : &pc->head) = e->next;
  *(e->next ? &e->next->prev : &pc->tail) = e->prev;
  e->prev = e->next = NULL;
}

static void push_front(prefix_cache *pc, ent *e) {
  e->prev = NULL, e->next = pc->head;
  *(pc->head ? &pc->head->prev : &pc->tail) = e;
  pc->head = e;
}

int pc_lookup(prefix_cache *pc, const uint8_t (*keys)[PC_KEY_BYTES], int n, int32_t *blocks) {
  int k = 0;
  for (ent *e; k < n && (e = *find(pc, keys[k])); k++) blocks[k] = e->block;
  for (int i = k - 1; i >= 0; i--) { /* the first block most recent: a chain's tail leaves before its head */
    ent *e = *find(pc, keys[i]);
    unlink_lru(pc, e), push_front(pc, e);
  }
  return k;
}

/* Doubles the bucket array when the table holds more entries than buckets. */
static void grow(prefix_cache *pc) {
  size_t n = pc->n_bucket * 2;
  ent **b = calloc(n, sizeof *b);
  if (!b) return; /* longer chains, still correct */
  free(pc->bucket);
  pc->bucket = b, pc->n_bucket = n;
  for (ent *e = pc->head; e; e = e->next) {
    ent **p = &pc->bucket[slot(pc, e->key)];
    e->chain = *p, *p = e;
  }
}

int pc_insert(prefix_cache *pc, const uint8_t key[PC_KEY_BYTES], int32_t block) {
  ent **p = find(pc, key);
  if (*p) return QVL_OK;
  ent *e = calloc(1, sizeof *e);
  if (!e) return QVL_ERR_NOMEM;
  memcpy(e->key, key, PC_KEY_BYTES);
  e->block = block;
  lm_block_ref(pc->lm, block);
  e->chain = *p, *p = e;
  push_front(pc, e);
  if ((size_t)++pc->n > pc->n_bucket) grow(pc);
  return QVL_OK;
}

int pc_reclaim(prefix_cache *pc, int want) {
  int got = 0;
  for (ent *e = pc->tail, *prev; e && lm_blocks_free(pc->lm) < want; e = prev) {
    prev = e->prev;
    if (lm_block_refs(pc->lm, e->block) != 1) continue; /* a running sequence reads it */
    ent **p = find(pc, e->key);
    *p = e->chain;
    unlink_lru(pc, e);
    lm_block_unref(pc->lm, e->block);
    free(e);
    pc->n--, got++;
  }
  return got;
}

int pc_blocks(const prefix_cache *pc) {
  return pc ? pc->n : 0;
}
