/* tok_json.h - a strict JSON pull scanner over a buffer (see tok_json.c). Functions return 0 on success
 * and -1 on malformed input (j->i then points near the problem), -2 when out of memory. */
#ifndef QVL_TEXT_TOK_JSON_H
#define QVL_TEXT_TOK_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct tj {
  const char *s;
  size_t n, i;
} tj;

/* The next non-blank character (not consumed), or -1 at the end. */
int tj_peek(tj *j);
/* Consumes c after blanks when it is next; returns 1 if it did. */
int tj_eat(tj *j, int c);
/* Decodes a string into *buf (grown as needed, NUL-terminated; *len excludes the NUL). */
int tj_string(tj *j, char **buf, size_t *cap, size_t *len);
/* An integer (no fraction or exponent). */
int tj_int(tj *j, int64_t *v);
/* Skips any value, nesting at most 1000 deep. */
int tj_skip(tj *j);

#endif
