/* prefix_cache.h - KV blocks of earlier prompts, found again by the tokens they hold.
 *
 * A full block of LM_BLOCK prompt tokens is keyed by a hash chain: key[b] = BLAKE2b-128(key[b-1], the block's token
 * ids, and, folded in right before an image's first pad token, that image's content hash). Two prompts share block b
 * only when every token up to its end is equal and every image begun by then has the same pixels and grid; the pad
 * ids of two different images are equal, their keys never are (the failure of SGLang #6583/#5455). The same image and
 * tokens also give the same M-RoPE positions (they are a function of the ids and grids), so a hit's KV is exactly what
 * the prefill would write. Hits are whole blocks from the start of the prompt.
 *
 * The cache holds one reference on each of its blocks (lm_block_ref), so a block outlives the sequence that wrote it;
 * entries leave least recently used first when the scheduler needs blocks (pc_reclaim), and only when no sequence
 * holds the block. Not thread-safe: the scheduler owns it. */
#ifndef QVL_RUNTIME_PREFIX_CACHE_H
#define QVL_RUNTIME_PREFIX_CACHE_H

#include <stdint.h>

#include "models/lm.h"

#define PC_KEY_BYTES 16

typedef struct prefix_cache prefix_cache;

int pc_open(prefix_cache **out, lm_model *lm);
void pc_close(prefix_cache *pc); /* every block's reference back; NULL is a no-op */

/* The keys of the n_tok / LM_BLOCK full blocks of toks. fold[t] (or NULL): a QVL_IMAGE_HASH_BYTES hash hashed in
 * right before token t (an image's first pad). */
void pc_keys(uint8_t (*keys)[PC_KEY_BYTES], const int32_t *toks, int n_tok, const uint8_t *const *fold);

/* The longest run of keys[0..n) held, at most n blocks: their ids into blocks[], each made recent. */
int pc_lookup(prefix_cache *pc, const uint8_t (*keys)[PC_KEY_BYTES], int n, int32_t *blocks);

/* Keeps block under key (one reference taken), unless the key is held already. QVL_ERR_NOMEM: not kept. */
int pc_insert(prefix_cache *pc, const uint8_t key[PC_KEY_BYTES], int32_t block);

/* Drops least recently used entries whose block no sequence holds until lm_blocks_free >= want or none is left;
 * returns how many blocks came back. */
int pc_reclaim(prefix_cache *pc, int want);

int pc_blocks(const prefix_cache *pc); /* entries (one block each) */

#endif
