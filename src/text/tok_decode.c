/* tok_decode.c - ids -> text, whole or streamed (see tokenizer.h).
 *
 * HF's ByteLevel decoder joins the tokens' bytes and converts them with String::from_utf8_lossy: each
 * maximal invalid subpart becomes one U+FFFD. The stream does the same conversion incrementally and
 * holds back only a truncated sequence at the end, so its pieces concatenate to exactly the whole
 * decode, and no piece ends inside a character. Ids with no token are skipped, as HF skips them. */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

static const uint8_t REPLACEMENT[3] = {0xEF, 0xBF, 0xBD};

/* How many bytes at s belong to the sequence s[0] starts (*expected: its full length, 0 if s[0] can
 * never start one). Equal when the sequence is complete and valid. */
static size_t seq_prefix(const uint8_t *s, size_t n, size_t *expected) {
  uint8_t c = s[0];
  size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  *expected = k;
  if (k <= 1) return 1;
  uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
  size_t m = 1;
  for (; m < k && m < n; m++, lo = 0x80, hi = 0xBF)
    if (s[m] < lo || s[m] > hi) break;
  return m;
}

static int put(tok_vec *out, const void *s, size_t n) {
  if (tok_vec_reserve(out, out->n + n + 1, 1)) return QVL_ERR_NOMEM;
  if (n) memcpy((uint8_t *)out->p + out->n, s, n); /* s may be NULL when n is 0 */
  out->n += n;
  ((uint8_t *)out->p)[out->n] = 0; /* always NUL-terminated for the caller */
  return QVL_OK;
}

size_t tok_utf8_lossy(tok_vec *out, const uint8_t *s, size_t len, int final, int *rc) {
  size_t i = 0, run = 0; /* s[run..i) is valid and not yet copied */
  *rc = QVL_OK;
  if (!len) { /* s may be NULL */
    if (put(out, "", 0)) *rc = QVL_ERR_NOMEM;
    return 0;
  }
  while (i < len) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t k, m = seq_prefix(s + i, len - i, &k);
    if (m == k) {
      i += k;
      continue;
    }
    if (!final && i + m == len && k) break; /* truncated at the end: wait for the rest */
    if (put(out, s + run, i - run) || put(out, REPLACEMENT, 3)) return *rc = QVL_ERR_NOMEM, 0;
    run = i += m;
  }
  if (put(out, s + run, i - run)) return *rc = QVL_ERR_NOMEM, 0;
  return i;
}

/* Appends the bytes of one token unless it is skipped (unknown id, or special with skip_special). */
static int token_bytes(const struct qvl_tokenizer *t, int32_t id, int skip_special, tok_vec *out) {
  if (id < 0 || id >= t->n_ids || !t->piece[id].len || (skip_special && t->special[id])) return QVL_OK;
  if (tok_vec_reserve(out, out->n + t->raw[id].len, 1)) return QVL_ERR_NOMEM;
  memcpy((uint8_t *)out->p + out->n, t->bytes + t->raw[id].off, t->raw[id].len);
  out->n += t->raw[id].len;
  return QVL_OK;
}

int qvl_tokenizer_decode(qvl_tokenizer *t, const int32_t *ids, size_t n, int skip_special, const char **text,
                         size_t *len) {
  if (!t) return QVL_ERR_INVALID_ARG;
  qvl_err_clear(&t->err);
  if (!text || (!ids && n)) return qvl_fail(&t->err, QVL_ERR_INVALID_ARG, "qvl_tokenizer_decode: NULL argument");
  t->norm.n = t->text.n = 0;
  int rc = QVL_OK;
  for (size_t i = 0; i < n && rc == QVL_OK; i++) rc = token_bytes(t, ids[i], skip_special, &t->norm);
  if (rc == QVL_OK) tok_utf8_lossy(&t->text, t->norm.p, t->norm.n, 1, &rc);
  if (rc) return qvl_fail(&t->err, rc, "qvl_tokenizer_decode: out of memory");
  *text = t->text.p;
  if (len) *len = t->text.n;
  return QVL_OK;
}

/* ---- streaming --------------------------------------------------------------------------------------- */

struct qvl_detok {
  const qvl_tokenizer *t;
  int skip_special;
  tok_vec pending; /* bytes of a character still incomplete */
  tok_vec out;     /* the text returned by the last call */
};

int qvl_detok_open(qvl_detok **out, const qvl_tokenizer *t, int skip_special) {
  if (!out) return QVL_ERR_INVALID_ARG;
  *out = NULL;
  if (!t) return QVL_ERR_INVALID_ARG;
  qvl_detok *d = calloc(1, sizeof *d);
  if (!d || tok_vec_reserve(&d->out, 16, 1)) {
    free(d);
    return QVL_ERR_NOMEM;
  }
  d->t = t;
  d->skip_special = skip_special;
  *out = d;
  return QVL_OK;
}

static int emit(qvl_detok *d, int final, const char **text, size_t *len) {
  int rc;
  d->out.n = 0;
  ((char *)d->out.p)[0] = 0;
  size_t used = tok_utf8_lossy(&d->out, d->pending.p, d->pending.n, final, &rc);
  if (rc) return rc;
  if (used && d->pending.n > used) memmove(d->pending.p, (uint8_t *)d->pending.p + used, d->pending.n - used);
  d->pending.n -= used;
  *text = d->out.p;
  if (len) *len = d->out.n;
  return QVL_OK;
}

int qvl_detok_push(qvl_detok *d, int32_t id, const char **text, size_t *len) {
  if (!d || !text) return QVL_ERR_INVALID_ARG;
  if (token_bytes(d->t, id, d->skip_special, &d->pending)) return QVL_ERR_NOMEM;
  return emit(d, 0, text, len);
}

int qvl_detok_flush(qvl_detok *d, const char **text, size_t *len) {
  if (!d || !text) return QVL_ERR_INVALID_ARG;
  return emit(d, 1, text, len);
}

void qvl_detok_close(qvl_detok *d) {
  if (!d) return;
  tok_vec_free(&d->pending);
  tok_vec_free(&d->out);
  free(d);
}
