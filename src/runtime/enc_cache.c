/* enc_cache.c - vision outputs by image hash: a chained hash table over the digest's first 8 bytes (already
 * uniform: it is a cryptographic digest) and a doubly linked recency list, most recent at the head; each entry's
 * outputs in one backend buffer. */
#include "runtime/enc_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct ent {
  uint8_t key[QVL_IMAGE_HASH_BYTES];
  struct ent *chain;       /* next in the bucket */
  struct ent *prev, *next; /* recency list */
  int n_out;
  int64_t rows, cols, bytes;
  void *buf;                         /* n_out * rows * cols elements of the backend, one buffer */
  const void *out[1 + QVL_MAX_LIST]; /* n_out pointers into buf */
} ent;

struct enc_cache {
  qvl_backend *be;
  ent **bucket;
  size_t n_bucket; /* a power of two */
  ent *head, *tail;
  enc_cache_stats st;
};

static size_t slot(const enc_cache *c, const uint8_t *key) {
  uint64_t h;
  memcpy(&h, key, sizeof h);
  return (size_t)h & (c->n_bucket - 1);
}

int enc_cache_open(enc_cache **out, qvl_backend *be, int64_t max_bytes) {
  enc_cache *c = calloc(1, sizeof *c);
  *out = c;
  if (!c) return QVL_ERR_NOMEM;
  c->be = be, c->n_bucket = 256;
  c->bucket = calloc(c->n_bucket, sizeof *c->bucket);
  c->st.max_bytes = max_bytes;
  return c->bucket ? QVL_OK : QVL_ERR_NOMEM;
}

static void ent_free(enc_cache *c, ent *e) {
  if (e && e->buf) c->be->free(c->be, e->buf);
  free(e);
}

void enc_cache_close(enc_cache *c) {
  if (!c) return;
  for (ent *e = c->head, *n; e; e = n) n = e->next, ent_free(c, e);
  free(c->bucket);
  free(c);
}

static ent **find(enc_cache *c, const uint8_t *key) {
  ent **p = &c->bucket[slot(c, key)];
  while (*p && memcmp((*p)->key, key, QVL_IMAGE_HASH_BYTES)) p = &(*p)->chain;
  return p;
}

static void unlink_lru(enc_cache *c, ent *e) {
  *(e->prev ? &e->prev->next : &c->head) = e->next;
  *(e->next ? &e->next->prev : &c->tail) = e->prev;
  e->prev = e->next = NULL;
}

static void push_front(enc_cache *c, ent *e) {
  e->prev = NULL, e->next = c->head;
  *(c->head ? &c->head->prev : &c->tail) = e;
  c->head = e;
}

/* Takes e out of the table and the list and frees it. */
static void drop(enc_cache *c, ent *e) {
  ent **p = find(c, e->key);
  *p = e->chain;
  unlink_lru(c, e);
  c->st.bytes -= e->bytes, c->st.entries--;
  ent_free(c, e);
}

int enc_cache_get(enc_cache *c, const uint8_t hash[QVL_IMAGE_HASH_BYTES], enc_entry *out) {
  ent *e = *find(c, hash);
  if (!e) return c->st.misses++, 0;
  c->st.hits++;
  unlink_lru(c, e), push_front(c, e);
  out->n_out = e->n_out, out->rows = e->rows, out->cols = e->cols, out->data = e->out;
  return 1;
}

/* Doubles the bucket array when the table holds more entries than buckets. */
static void grow(enc_cache *c) {
  size_t n = c->n_bucket * 2;
  ent **b = calloc(n, sizeof *b);
  if (!b) return; /* longer chains, still correct */
  free(c->bucket);
  c->bucket = b, c->n_bucket = n;
  for (ent *e = c->head; e; e = e->next) {
    ent **p = &c->bucket[slot(c, e->key)];
    e->chain = *p, *p = e;
  }
}

int enc_cache_put(enc_cache *c, const uint8_t hash[QVL_IMAGE_HASH_BYTES], int n_out, int64_t rows, int64_t cols,
                  const void *const *data) {
  if (n_out < 1 || n_out > 1 + QVL_MAX_LIST || rows < 1 || cols < 1) return QVL_ERR_INVALID_ARG;
  size_t per = (size_t)(rows * cols) * c->be->elem_bytes;
  int64_t bytes = n_out * (int64_t)per;
  ent *old = *find(c, hash);
  if (old) drop(c, old);
  if (bytes > c->st.max_bytes) return QVL_OK; /* never fits: not kept */
  while (c->tail && c->st.bytes + bytes > c->st.max_bytes) drop(c, c->tail), c->st.evictions++;
  ent *e = calloc(1, sizeof *e);
  if (!e) return QVL_ERR_NOMEM;
  int rc = c->be->alloc(c->be, &e->buf, (size_t)bytes);
  for (int k = 0; !rc && k < n_out; k++) {
    e->out[k] = (char *)e->buf + k * per;
    rc = c->be->copy(c->be, (char *)e->buf + k * per, data[k], per);
  }
  if (rc) return ent_free(c, e), rc;
  memcpy(e->key, hash, QVL_IMAGE_HASH_BYTES);
  e->n_out = n_out, e->rows = rows, e->cols = cols, e->bytes = bytes;
  ent **p = &c->bucket[slot(c, hash)];
  e->chain = *p, *p = e;
  push_front(c, e);
  c->st.bytes += bytes, c->st.entries++;
  if ((size_t)c->st.entries > c->n_bucket) grow(c);
  return QVL_OK;
}

enc_cache_stats enc_cache_get_stats(const enc_cache *c) {
  return c->st;
}
