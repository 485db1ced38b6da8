/* hash.h - BLAKE2b (RFC 7693), unkeyed, any digest length 1..64 bytes.
 * The content hash of an image is BLAKE2b-128: collision resistant (unlike a fast non-cryptographic hash),
 * so a client cannot craft an image that hits another image's encoder-cache or prefix-cache entry.
 * Written from the RFC because no package in the project's set provides a 128-bit hash. */
#ifndef QVL_CORE_HASH_H
#define QVL_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct qvl_blake2b {
  uint64_t h[8], t[2];
  uint8_t buf[128];
  size_t n;      /* bytes in buf */
  size_t outlen; /* digest bytes */
} qvl_blake2b;

void qvl_blake2b_init(qvl_blake2b *s, size_t outlen); /* outlen in 1..64 */
void qvl_blake2b_update(qvl_blake2b *s, const void *data, size_t len);
void qvl_blake2b_final(qvl_blake2b *s, uint8_t *out); /* writes outlen bytes */

#endif
