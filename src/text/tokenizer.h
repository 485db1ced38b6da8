/* tokenizer.h - byte-level BPE from tokenizer.json, exact against HF tokenizers (spec §5.3).
 *
 *   text ─► split on added tokens, raw text, leftmost-longest ─► NFC per segment ─► Split regex (PCRE2 JIT)
 *        ─► the bytes of each pre-token ─► BPE merges by rank (cached per pre-token) ─► ids
 *   ids  ─► the bytes of each token ─► UTF-8, each invalid sequence -> U+FFFD (HF errors="replace")
 *
 * Tokens are kept as raw bytes: the ByteLevel alphabet (bytes_to_unicode) is undone once at load, so
 * encode never maps characters and decode is a concatenation.
 */
#ifndef QVL_TEXT_TOKENIZER_H
#define QVL_TEXT_TOKENIZER_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct tok_span {
  uint32_t off, len; /* into an arena */
} tok_span;

typedef struct tok_added {
  tok_span text; /* content, in the piece arena */
  int32_t id;
  int special;   /* "special": true - dropped by decode with skip_special */
} tok_added;

/* Open addressing, power-of-two capacity, linear probing; key and value side by side so a lookup
 * touches one cache line. */
typedef struct tok_slot {
  uint64_t key; /* pair maps: (left << 32 | right) + 1, 0 = empty; string maps: hash | 1 */
  uint64_t val;
} tok_slot;

typedef struct tok_map {
  tok_slot *slots;
  size_t cap, n;
} tok_map;

/* The merges: (left, right) -> rank in one 8-byte slot, [key = left * n_vocab + right + 1 : 40][rank : 24], so
 * the table of ~150k merges is 2 MB and lookups mostly hit the cache; merged[rank] is the merge's token. */
typedef struct tok_pairs {
  uint64_t *slots;
  size_t cap, n;
  int32_t *merged; /* [cap] by rank */
  uint64_t n_vocab;
} tok_pairs;

#define TOK_MAX_VOCAB (1 << 20) /* keys fit 40 bits */
#define TOK_MAX_MERGES (1 << 24)

typedef struct tok_vec {
  void *p;
  size_t n, cap; /* elements */
} tok_vec;

/* Pre-token -> ids, for words that recur (most of them). Cleared when full, like HF's cache. */
typedef struct tok_cache_entry {
  uint32_t key_off, key_len, ids_off, n_ids;
} tok_cache_entry;

typedef struct tok_cache {
  tok_map map;     /* hash of the bytes | 1 -> index into entries */
  tok_vec entries; /* tok_cache_entry */
  tok_vec keys;    /* bytes */
  tok_vec ids;     /* int32_t */
} tok_cache;

struct qvl_tokenizer {
  qvl_err err;
  int32_t n_ids;       /* largest id + 1 (vocab and added tokens) */
  int32_t n_vocab;     /* entries of model.vocab */
  int64_t n_merges;
  char *pieces;        /* arena: every token as written in tokenizer.json ("ĠHello") */
  size_t pieces_len;
  uint8_t *bytes;      /* arena: every token's raw bytes (" Hello") */
  size_t bytes_len;
  tok_span *piece;     /* [n_ids]; len 0 where no token has that id */
  tok_span *raw;       /* [n_ids] */
  uint8_t *special;    /* [n_ids] 1 for added tokens marked special */
  int32_t byte_id[256];/* the one-byte token of each byte */
  tok_map vocab;       /* piece string -> id (hash keyed, verified against pieces) */
  tok_pairs merges;
  tok_added *added;    /* sorted by id */
  int n_added;
  uint8_t added_first[256]; /* 1 when some added token starts with that byte */
  pcre2_code *re;
  pcre2_match_data *md;
  int jit;             /* the pattern is JIT-compiled: match with pcre2_jit_match */
  tok_cache cache;
  int32_t stop[8];
  int n_stop;
  /* per-call buffers, owned by the handle (the results of encode/decode live here) */
  tok_vec out_ids, work_ids, norm, text, sym, heap;
};

/* ---- maps and vectors (tok_util.c) ---- */
int tok_vec_reserve(tok_vec *v, size_t n, size_t elem);
void tok_vec_free(tok_vec *v);
int tok_map_init(tok_map *m, size_t n_expected);
void tok_map_free(tok_map *m);
uint64_t tok_hash(const void *p, size_t n);
/* Where probing for a stored key starts; and growing before an insert (load <= 1/2). */
size_t tok_map_home(const tok_map *m, uint64_t key);
int tok_map_reserve(tok_map *m);
int tok_pairs_init(tok_pairs *p, uint64_t n_vocab, size_t n_merges);
void tok_pairs_free(tok_pairs *p);
/* A later duplicate merge replaces the earlier one (HF builds a HashMap from the list). */
int tok_pairs_put(tok_pairs *p, int32_t left, int32_t right, uint32_t rank, int32_t merged);
/* The rank of merging left and right, or UINT32_MAX when they do not merge. */
static inline uint32_t tok_pairs_rank(const tok_pairs *p, int32_t left, int32_t right) {
  uint64_t key = (uint64_t)left * p->n_vocab + (uint64_t)right + 1, z = key;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  for (size_t i = (z ^ (z >> 31)) & (p->cap - 1);; i = (i + 1) & (p->cap - 1)) {
    uint64_t s = p->slots[i];
    if (!s) return UINT32_MAX;
    if (s >> 24 == key) return (uint32_t)(s & 0xFFFFFF);
  }
}

/* ---- load (tok_load.c) ---- */
/* Looks a piece (tokenizer.json spelling) up; -1 when absent. */
int32_t tok_piece_id(const struct qvl_tokenizer *t, const char *s, size_t n);
/* Rewrites the Split pattern for PCRE2: \s -> the explicit White_Space class Oniguruma uses (PCRE2 also
 * counts U+180E). out gets a NUL-terminated pattern. */
int tok_rewrite_pattern(const char *in, char *out, size_t cap);

/* ---- encode (tok_encode.c) ---- */
/* Offset of the first invalid UTF-8 byte (overlong, surrogate, > U+10FFFF, truncated), or len. */
size_t tok_utf8_check(const uint8_t *s, size_t len);
/* Appends NFC(s) to out (a byte vector): only the spans around characters that can change are
 * passed to utf8proc. */
int tok_nfc(tok_vec *out, const uint8_t *s, size_t len);
/* BPE of one pre-token's bytes, appended to out (ids). */
int tok_bpe(struct qvl_tokenizer *t, const uint8_t *s, size_t len, tok_vec *out);

/* ---- decode (tok_decode.c) ---- */
/* Appends s[0..len) to out with every maximal invalid subpart replaced by U+FFFD (Rust's
 * String::from_utf8_lossy). With final = 0 a truncated sequence at the end is left unconsumed;
 * returns the number of bytes consumed. */
size_t tok_utf8_lossy(tok_vec *out, const uint8_t *s, size_t len, int final, int *rc);

#endif
