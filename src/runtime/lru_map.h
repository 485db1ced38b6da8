/* lru_map.h - an intrusive hash map from 16-byte digests to entries, with a recency list (most recent at the head):
 * what the encoder cache and the prefix cache keep their entries in. Keys are cryptographic digests, so their first
 * 8 bytes index the table as they are. An entry embeds an lru_node as its first member; the map owns the table
 * only, never the entries. */
#ifndef QVL_RUNTIME_LRU_MAP_H
#define QVL_RUNTIME_LRU_MAP_H

#include <stddef.h>
#include <stdint.h>

enum { LRU_KEY_BYTES = 16 };

typedef struct lru_node {
  uint8_t key[LRU_KEY_BYTES];
  struct lru_node *chain;      /* next in the bucket */
  struct lru_node *prev, *next; /* recency list */
} lru_node;

typedef struct lru_map {
  lru_node **bucket;
  size_t n_bucket; /* a power of two */
  size_t n;        /* entries */
  lru_node *head, *tail;
} lru_map;

int lru_map_init(lru_map *m, size_t n_bucket); /* n_bucket a power of two; QVL_OK or QVL_ERR_NOMEM */
void lru_map_free(lru_map *m);                 /* the table; the entries are the caller's */
lru_node *lru_map_get(const lru_map *m, const uint8_t *key); /* NULL when absent; recency unchanged */
void lru_map_touch(lru_map *m, lru_node *e);   /* e becomes the most recent */
/* e (its key set, not in the map) as the most recent; the table doubles past one entry per bucket (on a failed
 * allocation it keeps its size: longer chains, still correct). */
void lru_map_add(lru_map *m, lru_node *e);
void lru_map_remove(lru_map *m, lru_node *e);

#endif
