/* fuzz_tokenize.c - libFuzzer target: arbitrary bytes through qvl_tokenizer_encode with the real Qwen
 * tokenizer ($QVL_TOKENIZER, default .cache/tokenizer/tokenizer.json from scripts/fetch-tokenizer.sh).
 * Invalid UTF-8 must be refused with a message; valid text must round-trip: decode(encode(s)) == the text
 * with every stretch between added tokens NFC-normalized on its own (HF normalizes after splitting on added
 * tokens, so "<tool_response>" + U+0338 keeps its '>' where whole-string NFC would make it U+226F), and the
 * streaming detokenizer must produce the same text piece by piece. The first input byte also
 * picks a chat rendering of the text (both templates, expanded), which must encode too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "qvl.h"

static qvl_tokenizer *tok;
static const char *added[64]; /* the added tokens: ids from the end of model.vocab up */
static size_t added_len[64];
static int n_added;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *path = getenv("QVL_TOKENIZER");
  if (!path) path = ".cache/tokenizer/tokenizer.json";
  if (qvl_tokenizer_open(&tok, path)) {
    fprintf(stderr, "fuzz_tokenize: %s\n", qvl_tokenizer_errmsg(tok));
    abort();
  }
  for (int32_t id = 151643; id < qvl_tokenizer_n_ids(tok) && n_added < 64; id++)
    if ((added[n_added] = qvl_tokenizer_piece(tok, id, &added_len[n_added]))) n_added++;
  return 0;
}

/* The longest added token at s, or 0. */
static size_t added_at(const uint8_t *s, size_t n) {
  size_t best = 0;
  for (int k = 0; k < n_added; k++)
    if (added_len[k] <= n && added_len[k] > best && !memcmp(s, added[k], added_len[k])) best = added_len[k];
  return best;
}

static int append(uint8_t **buf, size_t *len, const void *p, size_t n) {
  uint8_t *b = realloc(*buf, *len + n + 1);
  if (!b) return -1;
  if (n) memcpy(b + *len, p, n);
  *buf = b, *len += n;
  return 0;
}

static int append_nfc(uint8_t **buf, size_t *len, const uint8_t *s, size_t n) {
  if (!n) return 0;
  utf8proc_uint8_t *nfc = NULL;
  utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  int rc = m < 0 ? -1 : append(buf, len, nfc, (size_t)m);
  free(nfc);
  return rc;
}

/* The reference: added tokens as they are, the stretches between them through utf8proc's whole-stretch NFC. */
static uint8_t *reference(const uint8_t *s, size_t size, size_t *len) {
  uint8_t *out = malloc(1);
  size_t seg = 0;
  *len = 0;
  for (size_t i = 0; i < size;) {
    size_t k = added_at(s + i, size - i);
    if (!k) {
      i++;
      continue;
    }
    if (append_nfc(&out, len, s + seg, i - seg) || append(&out, len, s + i, k)) abort();
    seg = i += k;
  }
  if (append_nfc(&out, len, s + seg, size - seg)) abort();
  return out;
}

static void check_stream(const int32_t *ids, size_t n, const char *want, size_t want_len) {
  qvl_detok *d = NULL;
  if (qvl_detok_open(&d, tok, 0)) abort();
  size_t k = 0;
  for (size_t i = 0; i <= n; i++) {
    const char *piece;
    size_t m;
    if (i < n ? qvl_detok_push(d, ids[i], &piece, &m) : qvl_detok_flush(d, &piece, &m)) abort();
    if (k + m > want_len || memcmp(want + k, piece, m)) abort();
    k += m;
  }
  if (k != want_len) abort();
  qvl_detok_close(d);
}

static void check_chat(const char *text, uint8_t mode) {
  qvl_chat_part parts[2] = {{.kind = QVL_PART_IMAGE, .grid_thw = {1, 2 + 2 * (mode & 3), 4}},
                            {.kind = QVL_PART_TEXT, .text = text}};
  qvl_chat_message msgs[2] = {{.role = "system", .content = text}, {.role = "user", .parts = parts, .n_parts = 2}};
  qvl_chat c = {.kind = mode & 4 ? QVL_CHAT_QWEN3_VL : QVL_CHAT_QWEN2_5_VL, .messages = msgs + !(mode & 8),
                .n_messages = 1 + !!(mode & 8), .add_generation_prompt = 1, .add_vision_id = mode >> 4 & 1};
  const int32_t *ids;
  size_t n;
  if (qvl_chat_encode(tok, &c, &ids, &n)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const int32_t *ids;
  size_t n = 0;
  int rc = qvl_tokenizer_encode(tok, (const char *)data, size, &ids, &n);
  if (rc) {
    if (rc != QVL_ERR_INVALID_ARG || !strstr(qvl_tokenizer_errmsg(tok), "not valid UTF-8")) abort();
    return 0;
  }
  int32_t *copy = malloc((n + 1) * sizeof *copy);
  memcpy(copy, ids, n * sizeof *copy);
  for (size_t i = 0; i < n; i++)
    if (copy[i] < 0 || copy[i] >= qvl_tokenizer_n_ids(tok)) abort();
  const char *text;
  size_t len;
  if (qvl_tokenizer_decode(tok, copy, n, 0, &text, &len)) abort();
  size_t wl;
  uint8_t *want = reference(data, size, &wl);
  if (wl != len || memcmp(want, text, len)) abort();
  check_stream(copy, n, (const char *)want, wl);
  if (size > 0 && !memchr(data, 0, size)) {
    char *s = malloc(size + 1);
    memcpy(s, data, size), s[size] = 0;
    check_chat(s, data[0]);
    free(s);
  }
  free(want);
  free(copy);
  return 0;
}
