/* tok_encode.c - text -> ids (see tokenizer.h): added tokens, NFC, the Split regex, BPE. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "text/tokenizer.h"

#define CACHE_MAX_KEY 64         /* longer pre-tokens are rare and cheap to miss */
#define CACHE_MAX_ENTRIES 32768  /* then the cache starts over */
#define BPE_MAX_WORD (1 << 28)   /* 256 MiB of one pre-token (one run of letters, or of spaces) */

/* ---- UTF-8 --------------------------------------------------------------------------------------- */

/* Length of the valid sequence at s (1..4), or 0: the table of well-formed sequences in Unicode §3.9. */
static size_t utf8_valid1(const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  if (c < 0x80) return 1;
  size_t k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (!k || k > n) return 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c == 0xE0) lo = 0xA0;      /* overlong */
  else if (c == 0xED) hi = 0x9F; /* surrogates */
  else if (c == 0xF0) lo = 0x90; /* overlong */
  else if (c == 0xF4) hi = 0x8F; /* > U+10FFFF */
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < k; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return k;
}

size_t tok_utf8_check(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t k = utf8_valid1(s + i, len - i);
    if (!k) return i;
    i += k;
  }
  return len;
}

static uint32_t decode_valid(const uint8_t *s, size_t *k) {
  *k = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
  uint32_t cp = *k == 1 ? s[0] : s[0] & (0x7F >> *k);
  for (size_t i = 1; i < *k; i++) cp = cp << 6 | (s[i] & 0x3F);
  return cp;
}

/* ---- NFC ------------------------------------------------------------------------------------------- */

/* A character NFC leaves alone and never combines with what precedes it: ccc 0, no canonical
 * decomposition, never the second of a composition (utf8proc marks those 0x8000 in comb_index),
 * not a Hangul vowel or trailing jamo (composed algorithmically). Normalization boundaries sit before
 * every such character, so the text between two of them normalizes on its own. */
static int nfc_stable(uint32_t cp) {
  if (cp < 0x300) return cp < 0xC0 || cp == 0xD7 || cp == 0xF7; /* Latin-1 letters decompose canonically */
  if ((cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2)) return 0;
  const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
  if (p->combining_class) return 0;
  if (p->decomp_type == 0 && p->decomp_seqindex != UINT16_MAX) return 0;
  return p->comb_index == UINT16_MAX || !(p->comb_index & 0x8000);
}

static int append(tok_vec *out, const void *s, size_t n) {
  if (!n) return QVL_OK; /* s may be NULL */
  if (tok_vec_reserve(out, out->n + n, 1)) return QVL_ERR_NOMEM;
  memcpy((uint8_t *)out->p + out->n, s, n);
  out->n += n;
  return QVL_OK;
}

static int nfc_span(tok_vec *out, const uint8_t *s, size_t n) {
  utf8proc_uint8_t *dst = NULL;
  utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  int rc = m < 0 ? (m == UTF8PROC_ERROR_NOMEM ? QVL_ERR_NOMEM : QVL_ERR_INVALID_ARG) : append(out, dst, (size_t)m);
  free(dst);
  return rc;
}

int tok_nfc(tok_vec *out, const uint8_t *s, size_t len) {
  size_t copied = 0, last_stable = 0, i = 0;
  while (i < len) {
    if (s[i] < 0x80) {
      last_stable = i++;
      continue;
    }
    size_t k;
    if (nfc_stable(decode_valid(s + i, &k))) {
      last_stable = i;
      i += k;
      continue;
    }
    /* an unstable run: from the last stable character up to the next one */
    size_t end = i + k;
    while (end < len && !(s[end] < 0x80 || nfc_stable(decode_valid(s + end, &k)))) end += k;
    size_t start = last_stable >= copied && last_stable < i ? last_stable : i;
    if (append(out, s + copied, start - copied) || nfc_span(out, s + start, end - start)) return QVL_ERR_NOMEM;
    copied = i = end;
    last_stable = end; /* s[end] is stable (or the end) */
  }
  return append(out, s + copied, len - copied);
}

/* ---- BPE --------------------------------------------------------------------------------------------- */

typedef struct sym {
  int32_t id, prev, next; /* id -1: merged into its left neighbour */
} sym;

/* A queued merge: rank << 32 | position (HF pops the lowest rank, then the leftmost: exactly the classic
 * "best pair first" order), and the pair it was queued for, so a stale entry is recognised without a
 * second lookup. */
typedef struct pending {
  uint64_t key;
  int32_t left, right;
} pending;

static void heap_push(pending *h, size_t *n, pending v) {
  size_t i = (*n)++;
  while (i && h[(i - 1) / 2].key > v.key) h[i] = h[(i - 1) / 2], i = (i - 1) / 2;
  h[i] = v;
}

static pending heap_pop(pending *h, size_t *n) {
  pending top = h[0], v = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && h[c + 1].key < h[c].key) c++;
    if (h[c].key >= v.key) break;
    h[i] = h[c], i = c;
  }
  h[i] = v;
  return top;
}

static void queue_pair(const struct qvl_tokenizer *t, const sym *sy, int32_t i, pending *h, size_t *n) {
  if (i < 0 || sy[i].next < 0) return;
  int32_t l = sy[i].id, r = sy[sy[i].next].id;
  uint32_t rank = tok_pairs_rank(&t->merges, l, r);
  if (rank != UINT32_MAX) heap_push(h, n, (pending){(uint64_t)rank << 32 | (uint32_t)i, l, r});
}

static int bpe_merge(struct qvl_tokenizer *t, const uint8_t *s, size_t len, tok_vec *out) {
  if (len > BPE_MAX_WORD) /* symbol links are int32; and 16 bytes of queue per byte */
    return qvl_fail(&t->err, QVL_ERR_LIMIT, "qvl_tokenizer_encode: one pre-token of %zu bytes (at most %d)", len,
                    BPE_MAX_WORD);
  if (tok_vec_reserve(&t->sym, len, sizeof(sym)) || tok_vec_reserve(&t->heap, 2 * len, sizeof(pending)) ||
      tok_vec_reserve(out, out->n + len, sizeof(int32_t)))
    return QVL_ERR_NOMEM;
  sym *sy = t->sym.p;
  pending *h = t->heap.p;
  size_t nh = 0;
  for (size_t i = 0; i < len; i++) sy[i] = (sym){t->byte_id[s[i]], (int32_t)i - 1, i + 1 < len ? (int32_t)i + 1 : -1};
  for (size_t i = 0; i + 1 < len; i++) queue_pair(t, sy, (int32_t)i, h, &nh);
  while (nh) {
    pending top = heap_pop(h, &nh);
    int32_t i = (int32_t)(uint32_t)top.key, j = sy[i].next;
    /* stale: the symbol was merged away or its pair changed since it was queued */
    if (sy[i].id != top.left || j < 0 || sy[j].id != top.right) continue;
    sy[i].id = t->merges.merged[top.key >> 32];
    sy[i].next = sy[j].next;
    sy[j].id = -1;
    if (sy[j].next >= 0) sy[sy[j].next].prev = i;
    queue_pair(t, sy, sy[i].prev, h, &nh);
    queue_pair(t, sy, i, h, &nh);
  }
  int32_t *o = out->p;
  for (int32_t i = 0; i >= 0; i = sy[i].next) o[out->n++] = sy[i].id;
  return QVL_OK;
}

static void cache_clear(tok_cache *c) {
  memset(c->map.slots, 0, c->map.cap * sizeof *c->map.slots);
  c->map.n = c->entries.n = c->keys.n = c->ids.n = 0;
}

static const tok_cache_entry *cache_get(const tok_cache *c, const uint8_t *s, size_t len, uint64_t h) {
  if (!c->map.cap) return NULL;
  const tok_cache_entry *e = c->entries.p;
  for (size_t i = tok_map_home(&c->map, h); c->map.slots[i].key; i = (i + 1) & (c->map.cap - 1)) {
    const tok_cache_entry *x = &e[c->map.slots[i].val];
    if (c->map.slots[i].key == h && x->key_len == len && !memcmp((uint8_t *)c->keys.p + x->key_off, s, len)) return x;
  }
  return NULL;
}

static int cache_put(tok_cache *c, const uint8_t *s, size_t len, uint64_t h, const int32_t *ids, size_t n) {
  if (!c->map.cap && tok_map_init(&c->map, CACHE_MAX_ENTRIES)) return QVL_ERR_NOMEM;
  if (c->entries.n >= CACHE_MAX_ENTRIES) cache_clear(c);
  if (tok_vec_reserve(&c->entries, c->entries.n + 1, sizeof(tok_cache_entry)) ||
      tok_vec_reserve(&c->ids, c->ids.n + n, sizeof(int32_t)) || append(&c->keys, s, len))
    return QVL_ERR_NOMEM;
  ((tok_cache_entry *)c->entries.p)[c->entries.n] =
      (tok_cache_entry){(uint32_t)(c->keys.n - len), (uint32_t)len, (uint32_t)c->ids.n, (uint32_t)n};
  memcpy((int32_t *)c->ids.p + c->ids.n, ids, n * sizeof *ids);
  c->ids.n += n;
  size_t i = tok_map_home(&c->map, h);
  while (c->map.slots[i].key) i = (i + 1) & (c->map.cap - 1);
  c->map.slots[i].key = h;
  c->map.slots[i].val = c->entries.n++;
  c->map.n++;
  return QVL_OK;
}

int tok_bpe(struct qvl_tokenizer *t, const uint8_t *s, size_t len, tok_vec *out) {
  if (len == 1) {
    if (tok_vec_reserve(out, out->n + 1, sizeof(int32_t))) return QVL_ERR_NOMEM;
    ((int32_t *)out->p)[out->n++] = t->byte_id[s[0]];
    return QVL_OK;
  }
  if (len > CACHE_MAX_KEY) return bpe_merge(t, s, len, out);
  uint64_t h = tok_hash(s, len) | 1;
  const tok_cache_entry *e = cache_get(&t->cache, s, len, h);
  if (e) {
    if (tok_vec_reserve(out, out->n + e->n_ids, sizeof(int32_t))) return QVL_ERR_NOMEM;
    memcpy((int32_t *)out->p + out->n, (int32_t *)t->cache.ids.p + e->ids_off, e->n_ids * sizeof(int32_t));
    out->n += e->n_ids;
    return QVL_OK;
  }
  size_t before = out->n;
  int rc = bpe_merge(t, s, len, out);
  if (rc == QVL_OK) rc = cache_put(&t->cache, s, len, h, (int32_t *)out->p + before, out->n - before);
  return rc;
}

/* ---- pre-tokenization -------------------------------------------------------------------------------- */

static int match_at(struct qvl_tokenizer *t, const uint8_t *s, size_t len, size_t pos) {
  return t->jit ? pcre2_jit_match(t->re, s, len, pos, 0, t->md, NULL)
                : pcre2_match(t->re, s, len, pos, PCRE2_NO_UTF_CHECK, t->md, NULL);
}

/* Split(Isolated): every match is a pre-token and so is every gap between matches. */
static int pretokenize(struct qvl_tokenizer *t, const uint8_t *s, size_t len, tok_vec *out) {
  size_t pos = 0;
  while (pos < len) {
    int m = match_at(t, s, len, pos);
    if (m == PCRE2_ERROR_NOMATCH) return tok_bpe(t, s + pos, len - pos, out);
    if (m < 0) return qvl_fail(&t->err, QVL_ERR_LIMIT, "qvl_tokenizer_encode: regex match failed (PCRE2 error %d)", m);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
    size_t a = ov[0], b = ov[1];
    int rc = a > pos ? tok_bpe(t, s + pos, a - pos, out) : QVL_OK;
    if (rc) return rc;
    if (b == a) { /* an empty match (not possible with the Qwen pattern): the next character is a gap */
      size_t k;
      decode_valid(s + a, &k);
      b = a + k;
    }
    if ((rc = tok_bpe(t, s + a, b - a, out))) return rc;
    pos = b;
  }
  return QVL_OK;
}

static int encode_segment(struct qvl_tokenizer *t, const uint8_t *s, size_t len) {
  if (!len) return QVL_OK;
  t->norm.n = 0;
  int rc = tok_nfc(&t->norm, s, len);
  if (rc) return qvl_fail(&t->err, rc, "qvl_tokenizer_encode: NFC failed (utf8proc error)");
  rc = pretokenize(t, t->norm.p, t->norm.n, &t->out_ids);
  if (rc == QVL_ERR_NOMEM) qvl_fail(&t->err, rc, "qvl_tokenizer_encode: out of memory");
  return rc;
}

/* The longest added token starting at s, leftmost first (HF's LeftmostLongest matcher). */
static const tok_added *added_at(const struct qvl_tokenizer *t, const uint8_t *s, size_t n) {
  const tok_added *best = NULL;
  for (int k = 0; k < t->n_added; k++) {
    const tok_added *a = &t->added[k];
    if (a->text.len <= n && (!best || a->text.len > best->text.len) && !memcmp(t->pieces + a->text.off, s, a->text.len))
      best = a;
  }
  return best;
}

int qvl_tokenizer_encode(qvl_tokenizer *t, const char *text, size_t len, const int32_t **ids, size_t *n_ids) {
  if (!t) return QVL_ERR_INVALID_ARG;
  qvl_err_clear(&t->err);
  if (!t->re || !t->md) return qvl_fail(&t->err, QVL_ERR_INVALID_ARG, "qvl_tokenizer_encode: the tokenizer did not open");
  if (!ids || !n_ids || (!text && len))
    return qvl_fail(&t->err, QVL_ERR_INVALID_ARG, "qvl_tokenizer_encode: NULL argument");
  *ids = NULL, *n_ids = 0;
  const uint8_t *s = (const uint8_t *)text;
  size_t bad = tok_utf8_check(s, len);
  if (bad < len)
    return qvl_fail(&t->err, QVL_ERR_INVALID_ARG, "qvl_tokenizer_encode: text is not valid UTF-8 at byte %zu (0x%02x)",
                    bad, s[bad]);
  t->out_ids.n = 0;
  if (tok_vec_reserve(&t->out_ids, 1, sizeof(int32_t))) /* *ids is never NULL, even for "" */
    return qvl_fail(&t->err, QVL_ERR_NOMEM, "qvl_tokenizer_encode: out of memory");
  size_t seg = 0;
  for (size_t i = 0; i < len;) {
    const tok_added *a = t->added_first[s[i]] ? added_at(t, s + i, len - i) : NULL;
    if (!a) {
      i++;
      continue;
    }
    int rc = encode_segment(t, s + seg, i - seg);
    if (rc == QVL_OK && tok_vec_reserve(&t->out_ids, t->out_ids.n + 1, sizeof(int32_t)))
      rc = qvl_fail(&t->err, QVL_ERR_NOMEM, "qvl_tokenizer_encode: out of memory");
    if (rc) return rc;
    ((int32_t *)t->out_ids.p)[t->out_ids.n++] = a->id;
    seg = i += a->text.len;
  }
  int rc = encode_segment(t, s + seg, len - seg);
  if (rc) return rc;
  *ids = t->out_ids.p;
  *n_ids = t->out_ids.n;
  return QVL_OK;
}
