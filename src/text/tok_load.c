/* tok_load.c - tokenizer.json -> qvl_tokenizer (see tokenizer.h).
 *
 * Accepts exactly the pipeline of the Qwen tokenizers (spec §5.3): model BPE without dropout, byte
 * fallback or subword affixes; normalizer NFC (or none); pre-tokenizer Split(Regex, Isolated) followed
 * by ByteLevel(use_regex = false); ByteLevel decoder; no post-processor template. Anything else is
 * QVL_ERR_UNSUPPORTED naming the field, so a different tokenizer is refused instead of mis-encoded.
 * Every message is "<file>: <field path>: <what is wrong>".
 */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "text/tok_json.h"
#include "text/tokenizer.h"

#define TOKENIZER_MAX_BYTES ((size_t)1 << 30)

typedef struct ctx {
  struct qvl_tokenizer *t;
  const char *what;
  tok_vec pieces, bytes; /* arenas while loading */
  int ignore_merges;
  int32_t cap_ids; /* allocated length of the per-id arrays (t->n_ids is the largest id + 1) */
  int32_t last_merged; /* the previous merge's result */
} ctx;

__attribute__((format(printf, 4, 5))) static int fail_at(ctx *x, int code, const char *path, const char *fmt, ...) {
  char detail[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  return qvl_fail(&x->t->err, code, "%s: %s: %s", x->what, path, detail);
}

static const cJSON *get(const cJSON *obj, const char *key) {
  const cJSON *it = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
  return cJSON_IsNull(it) ? NULL : it;
}

static const char *get_str(const cJSON *obj, const char *key) {
  const cJSON *it = get(obj, key);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int is_true(const cJSON *obj, const char *key) { return cJSON_IsTrue(get(obj, key)); }

/* ---- the ByteLevel alphabet (GPT-2 bytes_to_unicode) ---------------------------------------------- */

/* Printable bytes stand for themselves; the other 68 map to U+0100.. in byte order. */
static int byte_char(int b) {
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
  int k = 0;
  for (int c = 0; c < b; c++) k += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174);
  return 256 + k;
}

static int char_byte(uint32_t cp) {
  static int16_t table[324];
  static int ready;
  if (!ready) { /* idempotent: racing initialisations write the same values */
    for (int i = 0; i < 324; i++) table[i] = -1;
    for (int b = 0; b < 256; b++) table[byte_char(b)] = (int16_t)b;
    ready = 1;
  }
  return cp < 324 ? table[cp] : -1;
}

/* Decodes one character for the alphabet lookup; a malformed one yields a code point outside it. */
static size_t utf8_decode1(const uint8_t *s, size_t n, uint32_t *cp) {
  size_t k = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
  if (k > n || (k > 1 && s[0] < 0xC2)) return *cp = UINT32_MAX, 1;
  *cp = k == 1 ? s[0] : s[0] & (0x7F >> k);
  for (size_t i = 1; i < k; i++) *cp = *cp << 6 | (s[i] & 0x3F);
  return k;
}

/* HF's ByteLevel decoder: each character back to its byte; a token with a character outside the
 * alphabet is taken as its own UTF-8 bytes. */
static int append_raw(tok_vec *out, const char *piece, size_t n) {
  if (tok_vec_reserve(out, out->n + n, 1)) return QVL_ERR_NOMEM;
  uint8_t *dst = (uint8_t *)out->p + out->n;
  const uint8_t *s = (const uint8_t *)piece;
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    i += utf8_decode1(s + i, n - i, &cp);
    int b = char_byte(cp);
    if (b < 0) {
      memcpy(dst, piece, n);
      out->n += n;
      return QVL_OK;
    }
    dst[k++] = (uint8_t)b;
  }
  out->n += k;
  return QVL_OK;
}

/* ---- token table --------------------------------------------------------------------------------- */

static int grow_ids(ctx *x, int32_t id) {
  struct qvl_tokenizer *t = x->t;
  if (id < x->cap_ids) return QVL_OK;
  int32_t n = x->cap_ids ? x->cap_ids : 1024;
  while (n <= id) n = n > INT32_MAX / 2 ? INT32_MAX : n * 2;
  tok_span *p = realloc(t->piece, (size_t)n * sizeof *p), *r = p ? realloc(t->raw, (size_t)n * sizeof *r) : NULL;
  if (p) t->piece = p;
  if (r) t->raw = r;
  uint8_t *sp = r ? realloc(t->special, (size_t)n) : NULL;
  if (!sp) return qvl_fail(&t->err, QVL_ERR_NOMEM, "%s: out of memory for %d tokens", x->what, n);
  t->special = sp;
  memset(t->piece + x->cap_ids, 0, (size_t)(n - x->cap_ids) * sizeof *t->piece);
  memset(t->raw + x->cap_ids, 0, (size_t)(n - x->cap_ids) * sizeof *t->raw);
  memset(t->special + x->cap_ids, 0, (size_t)(n - x->cap_ids));
  x->cap_ids = n;
  return QVL_OK;
}

/* Stores id's piece and raw bytes (a later definition of the same id replaces the earlier one). */
static int set_token(ctx *x, int32_t id, const char *piece, size_t n) {
  if (grow_ids(x, id)) return QVL_ERR_NOMEM;
  if (id >= x->t->n_ids) x->t->n_ids = id + 1;
  size_t po = x->pieces.n, bo = x->bytes.n;
  if (po + n > UINT32_MAX || tok_vec_reserve(&x->pieces, po + n, 1) || append_raw(&x->bytes, piece, n))
    return qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory for the token table", x->what);
  memcpy((char *)x->pieces.p + po, piece, n);
  x->pieces.n += n;
  x->t->piece[id] = (tok_span){(uint32_t)po, (uint32_t)n};
  x->t->raw[id] = (tok_span){(uint32_t)bo, (uint32_t)(x->bytes.n - bo)};
  return QVL_OK;
}

static const char *piece_ptr(const struct qvl_tokenizer *t, int32_t id) { return t->pieces + t->piece[id].off; }

int32_t tok_piece_id(const struct qvl_tokenizer *t, const char *s, size_t n) {
  if (!t->vocab.cap) return -1;
  uint64_t h = tok_hash(s, n) | 1;
  for (size_t i = tok_map_home(&t->vocab, h); t->vocab.slots[i].key; i = (i + 1) & (t->vocab.cap - 1)) {
    int32_t id = (int32_t)t->vocab.slots[i].val;
    if (t->vocab.slots[i].key == h && t->piece[id].len == n && !memcmp(piece_ptr(t, id), s, n)) return id;
  }
  return -1;
}

/* The pieces arena moves while loading, so lookups during load read from x->pieces. */
static int32_t load_piece_id(ctx *x, const char *s, size_t n) {
  x->t->pieces = x->pieces.p;
  return tok_piece_id(x->t, s, n);
}

/* Paths are formatted only on failure: printf per entry would cost a third of the load time. */
static const char *vocab_path(char *buf, size_t n, const char *key) {
  snprintf(buf, n, "model.vocab[\"%.100s\"]", key);
  return buf;
}

/* Inserts with the duplicate check in the same probe (one cache miss per entry, not two). */
static int vocab_put(ctx *x, const char *s, size_t n, int32_t id) {
  tok_map *m = &x->t->vocab;
  char path[160];
  if (tok_map_reserve(m)) return qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
  uint64_t h = tok_hash(s, n) | 1;
  size_t i = tok_map_home(m, h);
  for (; m->slots[i].key; i = (i + 1) & (m->cap - 1)) {
    int32_t other = (int32_t)m->slots[i].val;
    if (m->slots[i].key == h && x->t->piece[other].len == n &&
        !memcmp((char *)x->pieces.p + x->t->piece[other].off, s, n))
      return fail_at(x, QVL_ERR_FORMAT, vocab_path(path, sizeof path, s), "duplicate token");
  }
  m->slots[i].key = h;
  m->slots[i].val = (uint64_t)id;
  m->n++;
  return QVL_OK;
}

static int scan_fail(ctx *x, const char *path, const tj *j, int code) {
  if (code == -2) return qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
  return fail_at(x, QVL_ERR_FORMAT, path, "not valid JSON near byte %zu", j->i);
}

static int read_vocab(ctx *x, tj *j) {
  if (!tj_eat(j, '{')) return fail_at(x, QVL_ERR_FORMAT, "model.vocab", "missing or not an object");
  char *key = NULL, path[160];
  size_t cap = 0, len = 0;
  int rc = QVL_OK, e = 0;
  for (int first = 1; rc == QVL_OK && !tj_eat(j, '}'); first = 0) {
    int64_t id = -1;
    if ((!first && !tj_eat(j, ',')) || (e = tj_string(j, &key, &cap, &len)) || !tj_eat(j, ':') ||
        (e = tj_int(j, &id))) {
      rc = scan_fail(x, "model.vocab", j, e);
      break;
    }
    if (id < 0 || id > 1000000000)
      rc = fail_at(x, QVL_ERR_FORMAT, vocab_path(path, sizeof path, key), "id %lld is out of [0, 1e9]", (long long)id);
    else if (id < x->cap_ids && x->t->piece[id].len)
      rc = fail_at(x, QVL_ERR_FORMAT, vocab_path(path, sizeof path, key), "id %lld is already used by another token",
                   (long long)id);
    else if (!len) rc = fail_at(x, QVL_ERR_FORMAT, "model.vocab", "empty token (id %lld)", (long long)id);
    else if (!(rc = set_token(x, (int32_t)id, key, len))) rc = vocab_put(x, key, len, (int32_t)id);
    if (rc == QVL_OK && id >= x->t->n_vocab) x->t->n_vocab = (int32_t)id + 1;
  }
  free(key);
  if (rc == QVL_OK && x->t->vocab.n == 0) rc = fail_at(x, QVL_ERR_FORMAT, "model.vocab", "empty");
  return rc;
}

/* ---- merges ---------------------------------------------------------------------------------------- */

static const char *merge_path(char *buf, size_t n, int64_t rank) {
  snprintf(buf, n, "model.merges[%lld]", (long long)rank);
  return buf;
}

/* One merge into buf as "a b" (both spellings: "a b", tokenizers < 0.20, or ["a", "b"]); *split: the space. */
static int merge_parts(ctx *x, tj *j, int64_t rank, char **buf, size_t *cap, size_t *len, size_t *split) {
  char path[64], *second = NULL;
  size_t cap2 = 0, len2 = 0;
  int e = 0, rc = QVL_OK;
  if (tj_peek(j) == '"') {
    if ((e = tj_string(j, buf, cap, len))) return scan_fail(x, merge_path(path, sizeof path, rank), j, e);
    char *sp = strchr(*buf, ' ');
    if (!sp || strchr(sp + 1, ' ') || sp == *buf || !sp[1] || strlen(*buf) != *len)
      return fail_at(x, QVL_ERR_FORMAT, merge_path(path, sizeof path, rank),
                     "\"%.60s\" is not two tokens separated by one space", *buf);
    *split = (size_t)(sp - *buf);
    return QVL_OK;
  }
  if (!tj_eat(j, '[') || (e = tj_string(j, buf, cap, len)) || !tj_eat(j, ',') ||
      (e = tj_string(j, &second, &cap2, &len2)) || !tj_eat(j, ']'))
    rc = e == -2 ? scan_fail(x, "", j, e)
                 : fail_at(x, QVL_ERR_FORMAT, merge_path(path, sizeof path, rank),
                           "expected \"a b\" or [\"a\", \"b\"] (near byte %zu)", j->i);
  if (rc == QVL_OK && (*len + len2 + 2 > *cap)) {
    char *p = realloc(*buf, *len + len2 + 2);
    if (!p) rc = qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
    else *buf = p, *cap = *len + len2 + 2;
  }
  if (rc == QVL_OK) {
    *split = *len;
    (*buf)[*len] = ' ';
    memcpy(*buf + *len + 1, second, len2 + 1);
    *len += 1 + len2;
  }
  free(second);
  return rc;
}

/* Merged tokens usually follow merge order in the vocabulary (Qwen: id 256 + rank), so the id after the
 * previous merge's is tried first: a sequential read instead of a hash probe. */
static int32_t merged_id(ctx *x, const char *s, size_t n) {
  int32_t guess = x->last_merged + 1;
  const tok_span *p = guess > 0 && guess < x->t->n_ids ? &x->t->piece[guess] : NULL;
  int32_t id = p && p->len == n && !memcmp((char *)x->pieces.p + p->off, s, n) ? guess : load_piece_id(x, s, n);
  if (id >= 0) x->last_merged = id;
  return id;
}

static int add_merge(ctx *x, int64_t rank, char *m, size_t len, size_t split) {
  const char *a = m, *b = m + split + 1;
  size_t na = split, nb = len - split - 1;
  memmove(m + split, m + split + 1, nb); /* "a b" -> "ab": the merged token */
  int32_t ia = load_piece_id(x, a, na), im = merged_id(x, m, na + nb);
  memmove(m + split + 1, m + split, nb), m[split] = ' ';
  int32_t ib = load_piece_id(x, b, nb);
  if (ia < 0 || ib < 0 || im < 0) {
    char path[64];
    if (im < 0 && ia >= 0 && ib >= 0) memmove(m + split, m + split + 1, nb);
    const char *miss = ia < 0 ? a : ib < 0 ? b : m;
    int nmiss = (int)(ia < 0 ? na : ib < 0 ? nb : na + nb);
    return fail_at(x, QVL_ERR_FORMAT, merge_path(path, sizeof path, rank), "token \"%.*s\" is not in model.vocab",
                   nmiss, miss);
  }
  if (tok_pairs_put(&x->t->merges, ia, ib, (uint32_t)rank, im))
    return qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
  return QVL_OK;
}

static int read_merges(ctx *x, tj *j) {
  if (!tj_eat(j, '[')) return fail_at(x, QVL_ERR_FORMAT, "model.merges", "missing or not an array");
  struct qvl_tokenizer *t = x->t;
  if (t->n_vocab > TOK_MAX_VOCAB)
    return fail_at(x, QVL_ERR_UNSUPPORTED, "model.vocab", "ids up to %d (at most %d)", t->n_vocab - 1,
                   TOK_MAX_VOCAB - 1);
  /* BPE vocabularies have about as many merges as tokens; the table grows if not */
  if (tok_pairs_init(&t->merges, (uint64_t)t->n_vocab, (size_t)t->n_vocab))
    return qvl_fail(&t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
  char *buf = NULL;
  size_t cap = 0, len = 0, split = 0;
  int64_t rank = 0;
  int rc = QVL_OK;
  for (; rc == QVL_OK && !tj_eat(j, ']'); rank++) {
    if (rank >= TOK_MAX_MERGES)
      rc = fail_at(x, QVL_ERR_UNSUPPORTED, "model.merges", "more than %d merges", TOK_MAX_MERGES);
    else if (rank > 0 && !tj_eat(j, ',')) rc = scan_fail(x, "model.merges", j, -1);
    else if (!(rc = merge_parts(x, j, rank, &buf, &cap, &len, &split))) rc = add_merge(x, rank, buf, len, split);
  }
  free(buf);
  t->n_merges = rank;
  return rc;
}

/* Where model.vocab and model.merges lie in the text ([0] = 0 when absent), and whether they were read. */
typedef struct spans {
  size_t at[2][2];
  int done[2];
} spans;

/* vocab and merges are read in place during the walk (one pass over the ~11 MB); merges need the
 * vocabulary, so merges that come first are only located here and read after the walk. */
static int model_members(ctx *x, tj *j, char **key, size_t *cap, spans *sp) {
  size_t len;
  int e = 0;
  if (tj_eat(j, '}')) return QVL_OK;
  do {
    if ((e = tj_string(j, key, cap, &len)) || !tj_eat(j, ':')) return scan_fail(x, "model", j, e);
    int k = !strcmp(*key, "vocab") ? 0 : !strcmp(*key, "merges") ? 1 : -1;
    tj_peek(j);
    size_t start = j->i;
    int rc = k == 0                  ? read_vocab(x, j)
             : k == 1 && sp->done[0] ? read_merges(x, j)
                                     : ((e = tj_skip(j)) ? scan_fail(x, "model", j, e) : QVL_OK);
    if (rc) return rc;
    if (k >= 0) sp->at[k][0] = start, sp->at[k][1] = j->i, sp->done[k] = k == 0 || sp->done[0];
  } while (tj_eat(j, ','));
  return tj_eat(j, '}') ? QVL_OK : scan_fail(x, "model", j, -1);
}

static int find_spans(ctx *x, const char *s, size_t n, spans *sp) {
  tj j = {s, n, 0};
  char *key = NULL;
  size_t cap = 0, len;
  int rc = QVL_OK, e = 0;
  memset(sp, 0, sizeof *sp);
  if (tok_map_init(&x->t->vocab, n / 64)) /* ~75 bytes per token in tokenizer.json; grows when short */
    return qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
  if (!tj_eat(&j, '{')) rc = fail_at(x, QVL_ERR_FORMAT, "(document)", "not a JSON object");
  else if (!tj_eat(&j, '}')) {
    do {
      if ((e = tj_string(&j, &key, &cap, &len)) || !tj_eat(&j, ':')) rc = scan_fail(x, "(document)", &j, e);
      else if (!strcmp(key, "model") && tj_eat(&j, '{')) rc = model_members(x, &j, &key, &cap, sp);
      else if ((e = tj_skip(&j))) rc = scan_fail(x, "(document)", &j, e);
    } while (rc == QVL_OK && tj_eat(&j, ','));
    if (rc == QVL_OK && !tj_eat(&j, '}')) rc = scan_fail(x, "(document)", &j, -1);
  }
  if (rc == QVL_OK && tj_peek(&j) != -1) rc = scan_fail(x, "(document)", &j, -1);
  free(key);
  return rc;
}

/* The document with vocab and merges emptied, for cJSON (the small members). */
static char *without_spans(const char *s, size_t n, const spans *sp, size_t *out_len) {
  char *o = malloc(n + 5);
  if (!o) return NULL;
  size_t k = 0, from = 0;
  int first = sp->at[1][0] && (!sp->at[0][0] || sp->at[1][0] < sp->at[0][0]);
  for (int r = 0; r < 2; r++) {
    int m = first ? 1 - r : r;
    if (!sp->at[m][0]) continue;
    memcpy(o + k, s + from, sp->at[m][0] - from), k += sp->at[m][0] - from;
    memcpy(o + k, m == 0 ? "{}" : "[]", 2), k += 2;
    from = sp->at[m][1];
  }
  memcpy(o + k, s + from, n - from), k += n - from;
  *out_len = k;
  return o;
}

/* ---- model, normalizer, pre-tokenizer, decoder ------------------------------------------------------ */

static int read_model(ctx *x, const cJSON *model, const char *json, size_t len, const spans *sp) {
  if (!cJSON_IsObject(model)) return fail_at(x, QVL_ERR_FORMAT, "model", "missing or not an object");
  const char *type = get_str(model, "type");
  if (type && strcmp(type, "BPE")) return fail_at(x, QVL_ERR_UNSUPPORTED, "model.type", "\"%s\" (only BPE)", type);
  if (get(model, "dropout") && !(cJSON_IsNumber(get(model, "dropout")) && get(model, "dropout")->valuedouble == 0))
    return fail_at(x, QVL_ERR_UNSUPPORTED, "model.dropout", "BPE dropout is not deterministic");
  if (is_true(model, "byte_fallback")) return fail_at(x, QVL_ERR_UNSUPPORTED, "model.byte_fallback", "true");
  const char *affix[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (int i = 0; i < 2; i++) {
    const char *s = get_str(model, affix[i]);
    if (s && *s) return fail_at(x, QVL_ERR_UNSUPPORTED, affix[i], "\"%s\" (only empty)", s);
  }
  x->ignore_merges = is_true(model, "ignore_merges");
  if (!sp->at[0][0]) return fail_at(x, QVL_ERR_FORMAT, "model.vocab", "missing");
  if (!sp->at[1][0]) return fail_at(x, QVL_ERR_FORMAT, "model.merges", "missing");
  tj jm = {json, sp->at[1][1], sp->at[1][0]};
  (void)len;
  int rc = sp->done[1] ? QVL_OK : read_merges(x, &jm);
  for (int b = 0; b < 256 && rc == QVL_OK; b++) {
    char ch[3];
    int cp = byte_char(b), n = cp < 0x80 ? 1 : 2;
    if (n == 1) ch[0] = (char)cp;
    else ch[0] = (char)(0xC0 | cp >> 6), ch[1] = (char)(0x80 | (cp & 0x3F));
    x->t->byte_id[b] = load_piece_id(x, ch, (size_t)n);
    if (x->t->byte_id[b] < 0)
      rc = fail_at(x, QVL_ERR_FORMAT, "model.vocab", "no token for byte 0x%02x (\"%.*s\"): not a byte-level vocabulary",
                   b, n, ch);
  }
  return rc;
}

static int read_normalizer(ctx *x, const cJSON *n) {
  if (!n) return QVL_OK;
  const char *type = get_str(n, "type");
  if (type && !strcmp(type, "NFC")) return QVL_OK;
  if (type && !strcmp(type, "Sequence")) {
    const cJSON *list = get(n, "normalizers");
    int k = cJSON_GetArraySize(list);
    if (k == 0) return QVL_OK;
    if (k == 1) return read_normalizer(x, list->child);
  }
  return fail_at(x, QVL_ERR_UNSUPPORTED, "normalizer", "%s (only NFC or none)", type ? type : "untyped");
}

static int read_split(ctx *x, const cJSON *split) {
  const cJSON *pat = get(split, "pattern");
  const char *re = get_str(pat, "Regex"), *behavior = get_str(split, "behavior");
  if (!re) return fail_at(x, QVL_ERR_UNSUPPORTED, "pre_tokenizer.Split.pattern", "only {\"Regex\": ...}");
  if (!behavior || strcmp(behavior, "Isolated") || is_true(split, "invert"))
    return fail_at(x, QVL_ERR_UNSUPPORTED, "pre_tokenizer.Split.behavior", "only Isolated without invert");
  char rewritten[4096];
  if (tok_rewrite_pattern(re, rewritten, sizeof rewritten))
    return fail_at(x, QVL_ERR_UNSUPPORTED, "pre_tokenizer.Split.pattern", "too long or uses \\S inside a class");
  int code;
  PCRE2_SIZE at;
  x->t->re = pcre2_compile((PCRE2_SPTR)rewritten, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
  if (!x->t->re) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(code, msg, sizeof msg);
    return fail_at(x, QVL_ERR_FORMAT, "pre_tokenizer.Split.pattern", "regex error at %zu: %s", (size_t)at, (char *)msg);
  }
  x->t->jit = pcre2_jit_compile(x->t->re, PCRE2_JIT_COMPLETE) == 0; /* else the interpreter matches */
  x->t->md = pcre2_match_data_create(1, NULL);
  return x->t->md ? QVL_OK : qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
}

static int read_pre_tokenizer(ctx *x, const cJSON *p) {
  const char *type = get_str(p, "type");
  const cJSON *list = type && !strcmp(type, "Sequence") ? get(p, "pretokenizers") : NULL;
  const cJSON *split = list ? list->child : NULL, *bl = split ? split->next : NULL;
  if (!split || !bl || bl->next || strcmp(get_str(split, "type") ? get_str(split, "type") : "", "Split") ||
      strcmp(get_str(bl, "type") ? get_str(bl, "type") : "", "ByteLevel"))
    return fail_at(x, QVL_ERR_UNSUPPORTED, "pre_tokenizer", "only Sequence[Split, ByteLevel] (the Qwen pipeline)");
  if (is_true(bl, "add_prefix_space") || is_true(bl, "use_regex"))
    return fail_at(x, QVL_ERR_UNSUPPORTED, "pre_tokenizer.ByteLevel", "only add_prefix_space = use_regex = false");
  return read_split(x, split);
}

static int read_decoder(ctx *x, const cJSON *root) {
  const char *dec = get_str(get(root, "decoder"), "type"), *post = get_str(get(root, "post_processor"), "type");
  if (!dec || strcmp(dec, "ByteLevel")) return fail_at(x, QVL_ERR_UNSUPPORTED, "decoder", "only ByteLevel");
  if (get(root, "post_processor") && (!post || strcmp(post, "ByteLevel")))
    return fail_at(x, QVL_ERR_UNSUPPORTED, "post_processor", "%s (only ByteLevel or none)", post ? post : "untyped");
  return QVL_OK;
}

/* ---- added tokens ------------------------------------------------------------------------------------ */

static int cmp_added(const void *a, const void *b) {
  const tok_added *x = a, *y = b;
  return (x->id > y->id) - (x->id < y->id);
}

static int read_added_one(ctx *x, const cJSON *a, int k) {
  char path[64];
  snprintf(path, sizeof path, "added_tokens[%d]", k);
  const char *content = get_str(a, "content");
  const cJSON *id = get(a, "id");
  if (!content || !*content || !cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e9 ||
      id->valuedouble != (double)(int32_t)id->valuedouble)
    return fail_at(x, QVL_ERR_FORMAT, path, "needs a non-empty \"content\" and an integer \"id\" in [0, 1e9]");
  const char *flags[4] = {"lstrip", "rstrip", "single_word", "normalized"};
  for (int i = 0; i < 4; i++)
    if (is_true(a, flags[i])) return fail_at(x, QVL_ERR_UNSUPPORTED, path, "%s = true (\"%s\")", flags[i], content);
  int32_t i32 = (int32_t)id->valuedouble;
  size_t n = strlen(content);
  int32_t in_vocab = load_piece_id(x, content, n);
  if (in_vocab >= 0 && in_vocab != i32)
    return fail_at(x, QVL_ERR_FORMAT, path, "\"%s\" is token %d in model.vocab but has id %d here", content, in_vocab,
                   i32);
  if (set_token(x, i32, content, n)) return x->t->err.code;
  x->t->special[i32] = (uint8_t)is_true(a, "special");
  tok_added *ad = &x->t->added[x->t->n_added++];
  *ad = (tok_added){x->t->piece[i32], i32, x->t->special[i32]};
  x->t->added_first[(uint8_t)content[0]] = 1;
  return QVL_OK;
}

static int read_added(ctx *x, const cJSON *list) {
  if (!list) return QVL_OK;
  if (!cJSON_IsArray(list)) return fail_at(x, QVL_ERR_FORMAT, "added_tokens", "expected an array");
  int n = cJSON_GetArraySize(list), k = 0;
  x->t->added = calloc((size_t)n + 1, sizeof *x->t->added);
  if (!x->t->added) return qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
  for (const cJSON *a = list->child; a; a = a->next, k++)
    if (read_added_one(x, a, k)) return x->t->err.code;
  qsort(x->t->added, (size_t)x->t->n_added, sizeof *x->t->added, cmp_added);
  for (int i = 1; i < x->t->n_added; i++)
    if (x->t->added[i].id == x->t->added[i - 1].id)
      return fail_at(x, QVL_ERR_FORMAT, "added_tokens", "id %d appears twice", x->t->added[i].id);
  return QVL_OK;
}

/* ---- open ------------------------------------------------------------------------------------------- */

static void default_stops(struct qvl_tokenizer *t) {
  const char *names[2] = {"<|im_end|>", "<|endoftext|>"}; /* the released generation configs' eos list */
  for (int i = 0; i < 2; i++) {
    int32_t id = tok_piece_id(t, names[i], strlen(names[i]));
    for (int k = 0; k < t->n_added && id < 0; k++)
      if (t->added[k].text.len == strlen(names[i]) &&
          !memcmp(t->pieces + t->added[k].text.off, names[i], t->added[k].text.len))
        id = t->added[k].id;
    if (id >= 0) t->stop[t->n_stop++] = id;
  }
}

static int parse(ctx *x, const char *json, size_t len) {
  spans sp;
  size_t rest_len = 0;
  int rc = find_spans(x, json, len, &sp);
  if (rc) return rc;
  char *rest = without_spans(json, len, &sp, &rest_len);
  if (!rest) return qvl_fail(&x->t->err, QVL_ERR_NOMEM, "%s: out of memory", x->what);
  cJSON *root = cJSON_ParseWithLength(rest, rest_len);
  free(rest);
  if (!root) return fail_at(x, QVL_ERR_FORMAT, "(document)", "not valid JSON");
  rc = cJSON_IsObject(root) ? QVL_OK : fail_at(x, QVL_ERR_FORMAT, "(document)", "not a JSON object");
  if (rc == QVL_OK) rc = read_model(x, get(root, "model"), json, len, &sp);
  if (rc == QVL_OK) rc = read_added(x, get(root, "added_tokens"));
  if (rc == QVL_OK) rc = read_normalizer(x, get(root, "normalizer"));
  if (rc == QVL_OK) rc = read_pre_tokenizer(x, get(root, "pre_tokenizer"));
  if (rc == QVL_OK) rc = read_decoder(x, root);
  cJSON_Delete(root);
  return rc;
}

int qvl_tokenizer_open_json(qvl_tokenizer **out, const char *json, size_t len, const char *what) {
  if (!out) return QVL_ERR_INVALID_ARG;
  struct qvl_tokenizer *t = *out = calloc(1, sizeof *t);
  if (!t) return QVL_ERR_NOMEM;
  if (!json) return qvl_fail(&t->err, QVL_ERR_INVALID_ARG, "qvl_tokenizer_open_json: NULL json");
  ctx x = {.t = t, .what = what ? what : "tokenizer.json"};
  int rc = parse(&x, json, len);
  t->pieces = x.pieces.p;
  t->pieces_len = x.pieces.n;
  t->bytes = x.bytes.p;
  t->bytes_len = x.bytes.n;
  if (rc == QVL_OK && x.ignore_merges) /* not in any Qwen tokenizer; refuse rather than guess */
    rc = fail_at(&x, QVL_ERR_UNSUPPORTED, "model.ignore_merges", "true");
  if (rc == QVL_OK) default_stops(t);
  return rc;
}

int qvl_tokenizer_open(qvl_tokenizer **out, const char *path) {
  if (!out) return QVL_ERR_INVALID_ARG;
  *out = NULL;
  qvl_err err = {0};
  char *json = NULL;
  size_t len = 0;
  int rc = path ? qvl_read_file(path, &json, &len, TOKENIZER_MAX_BYTES, &err)
                : qvl_fail(&err, QVL_ERR_INVALID_ARG, "qvl_tokenizer_open: NULL path");
  if (rc) {
    *out = calloc(1, sizeof **out);
    if (*out) (*out)->err = err;
    return rc;
  }
  rc = qvl_tokenizer_open_json(out, json, len, path);
  free(json);
  return rc;
}

void qvl_tokenizer_close(qvl_tokenizer *t) {
  if (!t) return;
  free(t->pieces), free(t->bytes), free(t->piece), free(t->raw), free(t->special), free(t->added);
  tok_map_free(&t->vocab), tok_pairs_free(&t->merges), tok_map_free(&t->cache.map);
  tok_vec_free(&t->cache.entries), tok_vec_free(&t->cache.keys), tok_vec_free(&t->cache.ids);
  tok_vec *bufs[6] = {&t->out_ids, &t->work_ids, &t->norm, &t->text, &t->sym, &t->heap};
  for (int i = 0; i < 6; i++) tok_vec_free(bufs[i]);
  pcre2_match_data_free(t->md);
  pcre2_code_free(t->re);
  free(t);
}

const char *qvl_tokenizer_errmsg(const qvl_tokenizer *t) { return t ? t->err.msg : "no tokenizer (out of memory?)"; }

int32_t qvl_tokenizer_n_ids(const qvl_tokenizer *t) { return t ? t->n_ids : 0; }

const char *qvl_tokenizer_piece(const qvl_tokenizer *t, int32_t id, size_t *len) {
  if (!t || id < 0 || id >= t->n_ids || !t->piece[id].len) return NULL;
  if (len) *len = t->piece[id].len;
  return t->pieces + t->piece[id].off;
}

int32_t qvl_tokenizer_token_id(const qvl_tokenizer *t, const char *piece) {
  if (!t || !piece) return -1;
  size_t n = strlen(piece);
  for (int k = 0; k < t->n_added; k++)
    if (t->added[k].text.len == n && !memcmp(t->pieces + t->added[k].text.off, piece, n)) return t->added[k].id;
  return tok_piece_id(t, piece, n);
}

int qvl_tokenizer_stop_ids(const qvl_tokenizer *t, const int32_t **ids) {
  if (ids) *ids = t ? t->stop : NULL;
  return t ? t->n_stop : 0;
}

/* ---- the pre-tokenizer pattern --------------------------------------------------------------------- */

/* White_Space, as Oniguruma's \s (HF tokenizers) has it; PCRE2's \s also counts U+180E (deps.md). */
#define WS_CLASS \
  "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

int tok_rewrite_pattern(const char *in, char *out, size_t cap) {
  size_t k = 0;
  int in_class = 0;
  for (const char *p = in; *p; p++) {
    const char *add = NULL;
    char one[4] = {p[0], 0, 0, 0};
    if (p[0] == '\\' && p[1]) {
      one[1] = p[1];
      if (p[1] == 's') add = in_class ? WS_CLASS : "[" WS_CLASS "]";
      else if (p[1] == 'S' && !in_class) add = "[^" WS_CLASS "]";
      else if (p[1] == 'S') return -1;
      p++;
    } else if (p[0] == '[' && !in_class) {
      in_class = 1;
      if (p[1] == '^') one[1] = '^', p++;
      if (p[1] == ']') one[one[1] ? 2 : 1] = ']', p++; /* a leading ] is a literal */
    } else if (p[0] == ']' && in_class) {
      in_class = 0;
    }
    if (!add) add = one;
    size_t n = strlen(add);
    if (k + n + 1 > cap) return -1;
    memcpy(out + k, add, n);
    k += n;
  }
  out[k] = '\0';
  return 0;
}

/* ---- generation_config.json -------------------------------------------------------------------------- */

static int read_eos(qvl_tokenizer *t, const cJSON *eos, const char *path) {
  int32_t ids[8];
  int n = 0;
  const cJSON *it = cJSON_IsArray(eos) ? eos->child : eos;
  for (; it; it = cJSON_IsArray(eos) ? it->next : NULL) {
    if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= t->n_ids ||
        it->valuedouble != (int32_t)it->valuedouble)
      return qvl_fail(&t->err, QVL_ERR_FORMAT, "%s: eos_token_id: expected token ids below %d", path, t->n_ids);
    if (n == 8) return qvl_fail(&t->err, QVL_ERR_FORMAT, "%s: eos_token_id: more than 8 ids", path);
    ids[n++] = (int32_t)it->valuedouble;
  }
  if (n == 0) return qvl_fail(&t->err, QVL_ERR_FORMAT, "%s: eos_token_id: empty", path);
  memcpy(t->stop, ids, sizeof ids);
  t->n_stop = n;
  return QVL_OK;
}

int qvl_tokenizer_read_generation_config(qvl_tokenizer *t, const char *path) {
  if (!t) return QVL_ERR_INVALID_ARG;
  qvl_err_clear(&t->err);
  if (!path) return qvl_fail(&t->err, QVL_ERR_INVALID_ARG, "qvl_tokenizer_read_generation_config: NULL path");
  FILE *probe = fopen(path, "rb");
  if (!probe) return QVL_OK; /* checkpoints without one stop on the defaults */
  fclose(probe);
  char *json = NULL;
  size_t len = 0;
  int rc = qvl_read_file(path, &json, &len, 1 << 20, &t->err);
  if (rc) return rc;
  cJSON *root = cJSON_ParseWithLength(json, len);
  free(json);
  const cJSON *eos = get(root, "eos_token_id");
  if (!cJSON_IsObject(root)) rc = qvl_fail(&t->err, QVL_ERR_FORMAT, "%s: not a JSON object", path);
  else if (eos) rc = read_eos(t, eos, path);
  cJSON_Delete(root);
  return rc;
}
