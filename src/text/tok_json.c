/* tok_json.c - a pull scanner for the two big members of tokenizer.json (model.vocab, ~150k entries, and
 * model.merges, ~150k pairs). Building them as a cJSON tree costs ~600k allocations and most of the load
 * time; scanning them in place does not. Strict JSON (RFC 8259); the rest of the file goes to cJSON. */
#include <stdlib.h>
#include <string.h>

#include "text/tok_json.h"

#define MAX_DEPTH 1000 /* cJSON's nesting limit, so both parsers accept the same documents */

int tj_peek(tj *j) {
  while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\n' || j->s[j->i] == '\r' || j->s[j->i] == '\t')) j->i++;
  return j->i < j->n ? (unsigned char)j->s[j->i] : -1;
}

int tj_eat(tj *j, int c) {
  if (tj_peek(j) != c) return 0;
  j->i++;
  return 1;
}

static int hex4(const char *s, uint32_t *v) {
  *v = 0;
  for (int k = 0; k < 4; k++) {
    char c = s[k];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) return -1;
    *v = *v << 4 | (uint32_t)d;
  }
  return 0;
}

static size_t put_utf8(char *o, uint32_t cp) {
  if (cp < 0x80) return o[0] = (char)cp, 1;
  if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000)
    return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F)), 3;
  o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* \uXXXX, with a surrogate pair when it is one; a lone surrogate is an error (as in serde_json). */
static int unicode_escape(tj *j, uint32_t *cp) {
  if (j->i + 4 > j->n || hex4(j->s + j->i, cp)) return -1;
  j->i += 4;
  if (*cp >= 0xDC00 && *cp <= 0xDFFF) return -1;
  if (*cp < 0xD800 || *cp > 0xDBFF) return 0;
  uint32_t lo;
  if (j->i + 6 > j->n || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u' || hex4(j->s + j->i + 2, &lo) || lo < 0xDC00 ||
      lo > 0xDFFF)
    return -1;
  j->i += 6;
  *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
  return 0;
}

int tj_string(tj *j, char **buf, size_t *cap, size_t *len) {
  if (!tj_eat(j, '"')) return -1;
  size_t k = 0;
  for (;;) {
    if (k + 4 >= *cap) {
      size_t c = *cap ? *cap * 2 : 256;
      char *p = realloc(*buf, c);
      if (!p) return -2;
      *buf = p, *cap = c;
    }
    if (j->i >= j->n) return -1;
    unsigned char c = (unsigned char)j->s[j->i++];
    if (c == '"') break;
    if (c < 0x20) return -1;
    if (c != '\\') {
      (*buf)[k++] = (char)c;
      continue;
    }
    if (j->i >= j->n) return -1;
    char e = j->s[j->i++];
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *at = e ? strchr(from, e) : NULL;
    uint32_t cp;
    if (at) (*buf)[k++] = to[at - from];
    else if (e == 'u' && !unicode_escape(j, &cp)) k += put_utf8(*buf + k, cp);
    else return -1;
  }
  (*buf)[k] = '\0';
  *len = k;
  return 0;
}

int tj_int(tj *j, int64_t *v) {
  tj_peek(j);
  size_t i = j->i;
  int neg = i < j->n && j->s[i] == '-';
  i += (size_t)neg;
  if (i >= j->n || j->s[i] < '0' || j->s[i] > '9' ||
      (j->s[i] == '0' && i + 1 < j->n && j->s[i + 1] >= '0' && j->s[i + 1] <= '9'))
    return -1;
  int64_t x = 0;
  for (; i < j->n && j->s[i] >= '0' && j->s[i] <= '9'; i++) {
    if (x > (INT64_MAX - 9) / 10) return -1;
    x = x * 10 + (j->s[i] - '0');
  }
  if (i < j->n && (j->s[i] == '.' || j->s[i] == 'e' || j->s[i] == 'E')) return -1;
  j->i = i;
  *v = neg ? -x : x;
  return 0;
}

static int skip_scalar(tj *j) {
  static const char *lits[3] = {"true", "false", "null"};
  for (int k = 0; k < 3; k++) {
    size_t n = strlen(lits[k]);
    if (j->i + n <= j->n && !memcmp(j->s + j->i, lits[k], n)) return j->i += n, 0;
  }
  size_t i = j->i;
  if (i < j->n && j->s[i] == '-') i++;
  size_t digits = i;
  while (i < j->n && ((j->s[i] >= '0' && j->s[i] <= '9') || j->s[i] == '.' || j->s[i] == 'e' || j->s[i] == 'E' ||
                      j->s[i] == '+' || j->s[i] == '-'))
    i++;
  if (i == digits) return -1;
  j->i = i;
  return 0;
}

/* Skips one value; strings are skipped without decoding (only escapes matter for finding the end). */
static int skip(tj *j, int depth) {
  int c = tj_peek(j);
  if (c == '"') {
    for (j->i++; j->i < j->n; j->i++) {
      if (j->s[j->i] == '\\') j->i++;
      else if (j->s[j->i] == '"') return j->i++, 0;
      else if ((unsigned char)j->s[j->i] < 0x20) return -1;
    }
    return -1;
  }
  if (c != '{' && c != '[') return skip_scalar(j);
  if (depth >= MAX_DEPTH) return -1;
  int close = c == '{' ? '}' : ']';
  j->i++;
  if (tj_eat(j, close)) return 0;
  do {
    if (c == '{' && (skip(j, depth + 1) || !tj_eat(j, ':'))) return -1; /* the key */
    if (skip(j, depth + 1)) return -1;
  } while (tj_eat(j, ','));
  return tj_eat(j, close) ? 0 : -1;
}

int tj_skip(tj *j) { return skip(j, 0); }
