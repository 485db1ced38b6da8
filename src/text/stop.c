/* stop.c - stop strings on the streamed text (qvl.h, qvl_stopper), OpenAI's `stop`: the answer ends right before
 * the first occurrence of any stop string, which is not shown.
 *
 * Generation works on ids and a stop string can span tokens, so the match runs on the detokenizer's pieces.
 * Text is shown as soon as it can no longer be part of a match: only a tail that is a prefix of some stop string
 * is held back. Shown text therefore never contains the start of a match, and a new match can only begin in the
 * held-back tail plus the new piece, which is all that is searched. */
#include <stdlib.h>
#include <string.h>

#include "qvl.h"

typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

struct qvl_stopper {
  char **stop; /* copies of the stop strings */
  size_t *len;
  int n_stop, hit;
  buf tail; /* held back: could still begin a stop string */
  buf out;  /* what the last call returned */
};

static int buf_put(buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return QVL_ERR_NOMEM;
    b->p = p, b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
  return QVL_OK;
}

int qvl_stopper_open(qvl_stopper **out, const char *const *stop, int n) {
  if (!out) return QVL_ERR_INVALID_ARG;
  qvl_stopper *st = *out = calloc(1, sizeof *st);
  if (!st) return QVL_ERR_NOMEM;
  if (n < 0 || (n && !stop)) return QVL_ERR_INVALID_ARG;
  st->stop = calloc((size_t)n + 1, sizeof *st->stop);
  st->len = calloc((size_t)n + 1, sizeof *st->len);
  if (!st->stop || !st->len || buf_put(&st->tail, NULL, 0) || buf_put(&st->out, NULL, 0)) return QVL_ERR_NOMEM;
  for (int i = 0; i < n; i++) {
    if (!stop[i] || !stop[i][0]) return QVL_ERR_INVALID_ARG; /* "" would match before any text */
    if (!(st->stop[i] = strdup(stop[i]))) return QVL_ERR_NOMEM;
    st->len[i] = strlen(stop[i]), st->n_stop = i + 1;
  }
  return QVL_OK;
}

void qvl_stopper_close(qvl_stopper *st) {
  if (!st) return;
  for (int i = 0; i < st->n_stop; i++) free(st->stop[i]);
  free(st->stop), free(st->len), free(st->tail.p), free(st->out.p), free(st);
}

/* The earliest start of any stop string in s, or -1. */
static long first_match(const qvl_stopper *st, const char *s, size_t n) {
  long best = -1;
  for (int i = 0; i < st->n_stop; i++) {
    const char *m = memmem(s, n, st->stop[i], st->len[i]);
    if (m && (best < 0 || m - s < best)) best = m - s;
  }
  return best;
}

/* The longest suffix of s that is a proper prefix of some stop string. */
static size_t held_back(const qvl_stopper *st, const char *s, size_t n) {
  size_t hold = 0;
  for (int i = 0; i < st->n_stop; i++)
    for (size_t k = st->len[i] - 1 < n ? st->len[i] - 1 : n; k > hold; k--)
      if (!memcmp(s + n - k, st->stop[i], k)) {
        hold = k;
        break;
      }
  return hold;
}

int qvl_stopper_push(qvl_stopper *st, const char *text, size_t len, const char **emit, size_t *emit_len, int *hit) {
  st->out.n = 0, st->out.p[0] = 0;
  if (!st->hit && buf_put(&st->tail, text, len)) return QVL_ERR_NOMEM;
  if (!st->hit) {
    long m = first_match(st, st->tail.p, st->tail.n);
    size_t show = m >= 0 ? (size_t)m : st->tail.n - held_back(st, st->tail.p, st->tail.n);
    if (buf_put(&st->out, st->tail.p, show)) return QVL_ERR_NOMEM;
    if (m >= 0) st->hit = 1, show = st->tail.n; /* the stop string and what follows it are dropped */
    memmove(st->tail.p, st->tail.p + show, st->tail.n - show + 1);
    st->tail.n -= show;
  }
  *emit = st->out.p, *hit = st->hit;
  if (emit_len) *emit_len = st->out.n;
  return QVL_OK;
}

int qvl_stopper_flush(qvl_stopper *st, const char **emit, size_t *emit_len) {
  st->out.n = 0, st->out.p[0] = 0;
  if (!st->hit && buf_put(&st->out, st->tail.p, st->tail.n)) return QVL_ERR_NOMEM;
  st->tail.n = 0, st->tail.p[0] = 0;
  *emit = st->out.p;
  if (emit_len) *emit_len = st->out.n;
  return QVL_OK;
}
