/* fuzz_base64.c - libFuzzer target: arbitrary bytes as base64 and as a data: URL. A successful decode must
 * re-encode to exactly the input (strict decoding accepts one spelling per byte string). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"

static void encode(char *out, const uint8_t *in, size_t n) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t w = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    out[o++] = a[w >> 18 & 63], out[o++] = a[w >> 12 & 63];
    out[o++] = i + 1 < n ? a[w >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? a[w & 63] : '=';
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qvl_err err = {0};
  uint8_t *out = malloc(qvl_base64_decoded_max(size));
  size_t n = 0;
  if (!qvl_base64_decode(out, &n, (const char *)data, size, "fuzz", &err)) {
    char *back = malloc(size + 1);
    encode(back, out, n);
    if (n > size || memcmp(back, data, size)) abort();
    free(back);
  } else if (!err.msg[0]) {
    abort();
  }
  free(out);
  uint8_t *u = NULL;
  char mime[16];
  qvl_err_clear(&err);
  if (!qvl_data_url_decode(&u, &n, mime, sizeof mime, (const char *)data, size, "fuzz", &err)) free(u);
  return 0;
}
