/* enc_cache.h - the encoder cache: vision-tower outputs of one image (the merger's rows and, on Qwen3-VL, each
 * DeepStack level's) kept by the image's content hash (qvl_image_batch_hash: BLAKE2b-128 over the resized pixels
 * and the grid, so equal keys mean equal pixel rows), least recently used first out under a byte limit.
 * A repeated image (the same picture tagged with several prompts, a chat resent turn after turn) skips the tower.
 * Entries live where the tower leaves its features: buffers of the engine's backend in its dtype (device memory on
 * CUDA), so a hit is one buffer-to-buffer copy and no feature row crosses to the host.
 * Not thread-safe: the one thread that runs the engine owns it. */
#ifndef QVL_RUNTIME_ENC_CACHE_H
#define QVL_RUNTIME_ENC_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "io/config.h"
#include "qvl.h"

typedef struct enc_cache enc_cache;

typedef struct enc_cache_stats {
  uint64_t hits, misses, evictions;
  int64_t bytes, max_bytes; /* backend bytes held, and the limit */
  int64_t entries;
} enc_cache_stats;

/* Entries in be's buffers. max_bytes: backend bytes at most (rows * cols * be->elem_bytes per output); an entry
 * larger than that is never kept. be outlives the cache. */
int enc_cache_open(enc_cache **out, qvl_backend *be, int64_t max_bytes);
void enc_cache_close(enc_cache *c); /* NULL is a no-op */

/* 1 and *out filled when hash is present (the entry becomes the most recent), else 0; counts a hit or a miss.
 * out->data[k] is a buffer of be, [rows][cols] in be's dtype, of output k (0: the merger's features, then
 * DeepStack), owned by c and valid until the next enc_cache_put. */
typedef struct enc_entry {
  int n_out;
  int64_t rows, cols;
  const void *const *data;
} enc_entry;
int enc_cache_get(enc_cache *c, const uint8_t hash[QVL_IMAGE_HASH_BYTES], enc_entry *out);

/* Copies n_out buffers of be, [rows][cols] each, in under hash (be->copy, in stream order with the ops that wrote
 * them), replacing an entry with that hash and evicting the least recently used entries until it fits.
 * QVL_ERR_NOMEM or the copy's error leaves the cache as it was but for evictions. */
int enc_cache_put(enc_cache *c, const uint8_t hash[QVL_IMAGE_HASH_BYTES], int n_out, int64_t rows, int64_t cols,
                  const void *const *data);

enc_cache_stats enc_cache_get_stats(const enc_cache *c);

#endif
