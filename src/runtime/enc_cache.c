/* enc_cache.c - vision outputs by image hash in an lru_map (most recent at the head), each entry's outputs in one
 * backend buffer. */
#include "runtime/enc_cache.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/lru_map.h"

typedef struct ent {
  lru_node node; /* first: the key is the image hash */
  int n_out;
  int64_t rows, cols, bytes;
  void *buf;                         /* n_out * rows * cols elements of the backend, one buffer */
  const void *out[1 + QVL_MAX_LIST]; /* n_out pointers into buf */
} ent;

_Static_assert(QVL_IMAGE_HASH_BYTES == LRU_KEY_BYTES, "image hashes key the map");

struct enc_cache {
  qvl_backend *be;
  lru_map map;
  enc_cache_stats st;
};

int enc_cache_open(enc_cache **out, qvl_backend *be, int64_t max_bytes) {
  enc_cache *c = calloc(1, sizeof *c);
  *out = c;
  if (!c) return QVL_ERR_NOMEM;
  c->be = be, c->st.max_bytes = max_bytes;
  return lru_map_init(&c->map, 256);
}

static void ent_free(enc_cache *c, ent *e) {
  if (e && e->buf) c->be->free(c->be, e->buf);
  free(e);
}

void enc_cache_close(enc_cache *c) {
  if (!c) return;
  for (lru_node *e = c->map.head, *n; e; e = n) n = e->next, ent_free(c, (ent *)e);
  lru_map_free(&c->map);
  free(c);
}

/* Takes e out of the map and frees it. */
static void drop(enc_cache *c, ent *e) {
  lru_map_remove(&c->map, &e->node);
  c->st.bytes -= e->bytes, c->st.entries--;
  ent_free(c, e);
}

int enc_cache_get(enc_cache *c, const uint8_t hash[QVL_IMAGE_HASH_BYTES], enc_entry *out) {
  ent *e = (ent *)lru_map_get(&c->map, hash);
  if (!e) return c->st.misses++, 0;
  c->st.hits++;
  lru_map_touch(&c->map, &e->node);
  out->n_out = e->n_out, out->rows = e->rows, out->cols = e->cols, out->data = e->out;
  return 1;
}

int enc_cache_put(enc_cache *c, const uint8_t hash[QVL_IMAGE_HASH_BYTES], int n_out, int64_t rows, int64_t cols,
                  const void *const *data) {
  if (n_out < 1 || n_out > 1 + QVL_MAX_LIST || rows < 1 || cols < 1) return QVL_ERR_INVALID_ARG;
  size_t per = (size_t)(rows * cols) * c->be->elem_bytes;
  int64_t bytes = n_out * (int64_t)per;
  ent *old = (ent *)lru_map_get(&c->map, hash);
  if (old) drop(c, old);
  if (bytes > c->st.max_bytes) return QVL_OK; /* never fits: not kept */
  while (c->map.tail && c->st.bytes + bytes > c->st.max_bytes) drop(c, (ent *)c->map.tail), c->st.evictions++;
  ent *e = calloc(1, sizeof *e);
  if (!e) return QVL_ERR_NOMEM;
  int rc = c->be->alloc(c->be, &e->buf, (size_t)bytes);
  for (int k = 0; !rc && k < n_out; k++) {
    e->out[k] = (char *)e->buf + k * per;
    rc = c->be->copy(c->be, (char *)e->buf + k * per, data[k], per);
  }
  if (rc) return ent_free(c, e), rc;
  memcpy(e->node.key, hash, QVL_IMAGE_HASH_BYTES);
  e->n_out = n_out, e->rows = rows, e->cols = cols, e->bytes = bytes;
  lru_map_add(&c->map, &e->node);
  c->st.bytes += bytes, c->st.entries++;
  return QVL_OK;
}

enc_cache_stats enc_cache_get_stats(const enc_cache *c) {
  return c->st;
}
