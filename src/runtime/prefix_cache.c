/* prefix_cache.c - block keys by a BLAKE2b-128 chain; the blocks in an lru_map, most recent at the head. */
#include "runtime/prefix_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "runtime/lru_map.h"

typedef struct ent {
  lru_node node; /* first: the key is the block's */
  int32_t block;
} ent;

_Static_assert(PC_KEY_BYTES == LRU_KEY_BYTES, "block keys key the map");

struct prefix_cache {
  lm_model *lm;
  lru_map map;
};

int pc_open(prefix_cache **out, lm_model *lm) {
  prefix_cache *pc = calloc(1, sizeof *pc);
  *out = pc;
  if (!pc) return QVL_ERR_NOMEM;
  pc->lm = lm;
  return lru_map_init(&pc->map, 1024);
}

void pc_close(prefix_cache *pc) {
  if (!pc) return;
  for (lru_node *e = pc->map.head, *n; e; e = n) n = e->next, lm_block_unref(pc->lm, ((ent *)e)->block), free(e);
  lru_map_free(&pc->map);
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

int pc_lookup(prefix_cache *pc, const uint8_t (*keys)[PC_KEY_BYTES], int n, int32_t *blocks) {
  int k = 0;
  for (ent *e; k < n && (e = (ent *)lru_map_get(&pc->map, keys[k])); k++) blocks[k] = e->block;
  for (int i = k - 1; i >= 0; i--) /* the first block most recent: a chain's tail leaves before its head */
    lru_map_touch(&pc->map, lru_map_get(&pc->map, keys[i]));
  return k;
}

int pc_insert(prefix_cache *pc, const uint8_t key[PC_KEY_BYTES], int32_t block) {
  if (lru_map_get(&pc->map, key)) return QVL_OK;
  ent *e = calloc(1, sizeof *e);
  if (!e) return QVL_ERR_NOMEM;
  memcpy(e->node.key, key, PC_KEY_BYTES);
  e->block = block;
  lm_block_ref(pc->lm, block);
  lru_map_add(&pc->map, &e->node);
  return QVL_OK;
}

int pc_reclaim(prefix_cache *pc, int want) {
  int got = 0;
  for (lru_node *n = pc->map.tail, *prev; n && lm_blocks_free(pc->lm) < want; n = prev) {
    ent *e = (ent *)n;
    prev = n->prev;
    if (lm_block_refs(pc->lm, e->block) != 1) continue; /* a running sequence reads it */
    lru_map_remove(&pc->map, n);
    lm_block_unref(pc->lm, e->block);
    free(e);
    got++;
  }
  return got;
}

int pc_blocks(const prefix_cache *pc) {
  return pc ? (int)pc->map.n : 0;
}
