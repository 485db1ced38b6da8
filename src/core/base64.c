#include "core/base64.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* 0..63 for the alphabet, 64 for '=', 255 for anything else. */
static const uint8_t T[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  62, 255, 255, 255,  63,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61, 255, 255, 255,  64, 255, 255,
    255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255, 255,
    255,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};

size_t qvl_base64_decoded_max(size_t len) { return len / 4 * 3 + 3; }

static int bad_char(const char *in, size_t i, const char *what, qvl_err *err) {
  uint8_t c = (uint8_t)in[i];
  if (c > 0x20 && c < 0x7f)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: invalid base64: character '%c' at offset %zu", what, c, i);
  return qvl_fail(err, QVL_ERR_FORMAT, "%s: invalid base64: byte 0x%02x at offset %zu (whitespace is not accepted)",
                  what, c, i);
}

/* The last quantum: "xx==", "xxx=" or "xxxx"; padding bits must be zero. */
static int last_quantum(uint8_t *out, size_t *n, const char *in, size_t at, const char *what, qvl_err *err) {
  uint8_t v[4];
  for (int j = 0; j < 4; j++) v[j] = T[(uint8_t)in[at + j]];
  for (int j = 0; j < 4; j++)
    if (v[j] == 255) return bad_char(in, at + j, what, err);
  int pad = v[3] == 64 ? (v[2] == 64 ? 2 : 1) : 0;
  if (v[0] == 64 || v[1] == 64 || (v[2] == 64 && v[3] != 64))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: invalid base64: misplaced '=' in the last 4 characters (offset %zu)",
                    what, at);
  uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)(pad < 2 ? v[2] : 0) << 6 |
               (uint32_t)(pad < 1 ? v[3] : 0);
  if ((pad == 2 && (w & 0xffff)) || (pad == 1 && (w & 0xff)))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: invalid base64: nonzero bits before the padding (offset %zu)", what,
                    at);
  out[(*n)++] = (uint8_t)(w >> 16);
  if (pad < 2) out[(*n)++] = (uint8_t)(w >> 8);
  if (pad < 1) out[(*n)++] = (uint8_t)w;
  return QVL_OK;
}

int qvl_base64_decode(uint8_t *out, size_t *out_len, const char *in, size_t len, const char *what, qvl_err *err) {
  size_t n = 0;
  *out_len = 0;
  if (len % 4) { /* a stray character is the likelier cause: name it */
    for (size_t i = 0; i < len; i++)
      if (T[(uint8_t)in[i]] == 255) return bad_char(in, i, what, err);
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: invalid base64: length %zu is not a multiple of 4 (missing padding?)",
                    what, len);
  }
  if (!len) return QVL_OK;
  for (size_t i = 0; i + 4 < len; i += 4) {
    uint8_t a = T[(uint8_t)in[i]], b = T[(uint8_t)in[i + 1]], c = T[(uint8_t)in[i + 2]], d = T[(uint8_t)in[i + 3]];
    if ((a | b | c | d) >= 64) {
      for (int j = 0; j < 4; j++)
        if (T[(uint8_t)in[i + j]] == 64)
          return qvl_fail(err, QVL_ERR_FORMAT, "%s: invalid base64: '=' at offset %zu before the end", what, i + j);
      for (int j = 0;; j++)
        if (T[(uint8_t)in[i + j]] == 255) return bad_char(in, i + j, what, err);
    }
    uint32_t w = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
    out[n++] = (uint8_t)(w >> 16), out[n++] = (uint8_t)(w >> 8), out[n++] = (uint8_t)w;
  }
  int rc = last_quantum(out, &n, in, len - 4, what, err);
  *out_len = rc ? 0 : n;
  return rc;
}

/* "data:" then the media type and parameters up to the first ','; the last parameter must be "base64". */
int qvl_data_url_decode(uint8_t **out, size_t *out_len, char *mime, size_t mime_cap, const char *url, size_t len,
                        const char *what, qvl_err *err) {
  *out = NULL, *out_len = 0;
  if (mime_cap) mime[0] = '\0';
  if (len < 5 || strncasecmp(url, "data:", 5))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: not a data: URL (it must start with \"data:\")", what);
  const char *comma = memchr(url, ',', len);
  if (!comma) return qvl_fail(err, QVL_ERR_FORMAT, "%s: data: URL without a ',' before the payload", what);
  const char *head = url + 5;
  size_t head_len = (size_t)(comma - head);
  if (head_len < 7 || strncasecmp(comma - 7, ";base64", 7))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: data: URL is not base64 (\";base64\" must precede the ',')", what);
  const char *semi = memchr(head, ';', head_len);
  size_t mlen = (size_t)(semi - head);
  if (mime_cap) {
    size_t k = mlen < mime_cap - 1 ? mlen : mime_cap - 1;
    memcpy(mime, head, k);
    mime[k] = '\0';
  }
  const char *payload = comma + 1;
  size_t plen = len - (size_t)(payload - url);
  uint8_t *buf = malloc(qvl_base64_decoded_max(plen));
  if (!buf) return qvl_fail(err, QVL_ERR_NOMEM, "%s: out of memory for %zu bytes of base64", what, plen);
  int rc = qvl_base64_decode(buf, out_len, payload, plen, what, err);
  if (rc) {
    free(buf);
    return rc;
  }
  *out = buf;
  return QVL_OK;
}
