/* test_tokenizer_golden.c - qvl against HF tokenizers 0.23 and transformers 5.17 (tests/data/tokenizer/, written
 * by scripts/make_tokenizer_goldens.py): ids of >= 5,000 strings, HF's decode of them (with and without special
 * tokens), decode(encode(s)) == NFC(s); every conversation's apply_chat_template text and ids, and the HF
 * processor's expanded input_ids for image conversations. Mismatches are counted per category and the first
 * few printed in full. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "io/config.h"
#include "chat_json.h"
#include "qvl.h"

#define REGEN                                                                                                \
  "python3 scripts/make_tokenizer_goldens.py --tokenizer .cache/tokenizer/tokenizer.json (tokenizers 0.23, " \
  "transformers 5.17)"

static qvl_tokenizer *tok;

static int setup(void **state) {
  (void)state;
  tok = tu_real_tokenizer();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  qvl_tokenizer_close(tok);
  return 0;
}

/* The lines of a golden file after its header, NULL-terminated; they point into *buf. */
static char **read_lines(const char *rel, cJSON **header, char **buf) {
  if (!tok) fail_msg("the real Qwen tokenizer is missing: run scripts/fetch-tokenizer.sh");
  char *text = NULL;
  size_t len = 0;
  qvl_err err = {0};
  if (qvl_read_file(tu_path(rel), &text, &len, (size_t)64 << 20, &err))
    fail_msg("%s: no golden file (%s).\n  Generate it once on a machine with HF: %s", rel, err.msg, REGEN);
  size_t n = 1;
  for (size_t i = 0; i < len; i++) n += text[i] == '\n';
  char **lines = calloc(n + 1, sizeof *lines);
  size_t k = 0;
  for (char *p = text, *nl; p && *p; p = nl ? nl + 1 : NULL) {
    nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    if (*p) lines[k++] = p;
  }
  if (!k || !(*header = cJSON_Parse(lines[0]))) fail_msg("%s: no header line", rel);
  memmove(lines, lines + 1, k * sizeof *lines); /* drop the header; lines[k - 1] becomes NULL */
  *buf = text;
  return lines;
}

static int32_t *id_array(const cJSON *arr, size_t *n) {
  *n = (size_t)cJSON_GetArraySize(arr);
  int32_t *ids = malloc((*n + 1) * sizeof *ids);
  size_t i = 0;
  for (const cJSON *it = arr ? arr->child : NULL; it; it = it->next) ids[i++] = (int32_t)it->valuedouble;
  return ids;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
  fprintf(stderr, "    %s (%zu):", what, n);
  for (size_t i = 0; i < n && i < 60; i++) fprintf(stderr, " %d", ids[i]);
  fprintf(stderr, n > 60 ? " ...\n" : "\n");
}

/* ---- encode.jsonl ------------------------------------------------------------------------------------------- */

typedef struct tally {
  char cat[32];
  int n, bad;
} tally;

static void count(tally *t, int *nt, const char *cat, int bad) {
  int i = 0;
  while (i < *nt && strcmp(t[i].cat, cat)) i++;
  if (i == *nt) snprintf(t[(*nt)++].cat, sizeof t[0].cat, "%s", cat);
  t[i].n++, t[i].bad += bad;
}

static char *hex_text(const char *hex, size_t *len) {
  *len = strlen(hex) / 2;
  char *s = malloc(*len + 1);
  for (size_t i = 0; i < *len; i++) {
    unsigned v;
    sscanf(hex + 2 * i, "%2x", &v);
    s[i] = (char)v;
  }
  s[*len] = 0;
  return s;
}

static void put_bytes(char **buf, size_t *len, const void *p, size_t n) {
  *buf = realloc(*buf, *len + n + 1);
  if (n) memcpy(*buf + *len, p, n);
  *len += n;
}

static void put_nfc(char **buf, size_t *len, const char *s, size_t n) {
  utf8proc_uint8_t *nfc = NULL;
  utf8proc_ssize_t m = n ? utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE) : 0;
  if (m < 0) fail_msg("utf8proc_map: %s", utf8proc_errmsg(m));
  put_bytes(buf, len, nfc, (size_t)m);
  free(nfc);
}

/* NFC(s) as HF means it: the text is split on added tokens first (leftmost, longest), and each stretch between
 * them is normalized on its own, so "<tool_response>" + U+0338 keeps its '>' (whole-string NFC would make it
 * U+226F). For text without added tokens this is plain NFC. */
static char *nfc_between_added(const char *s, size_t n, size_t *len) {
  char *out = NULL;
  size_t seg = 0;
  *len = 0;
  put_bytes(&out, len, "", 0);
  for (size_t i = 0; i < n;) {
    size_t best = 0, plen;
    for (int32_t id = 151643; id < qvl_tokenizer_n_ids(tok); id++) {
      const char *p = qvl_tokenizer_piece(tok, id, &plen);
      if (p && plen <= n - i && plen > best && !memcmp(s + i, p, plen)) best = plen;
    }
    if (!best) {
      i++;
      continue;
    }
    put_nfc(&out, len, s + seg, i - seg);
    put_bytes(&out, len, s + i, best);
    seg = i += best;
  }
  put_nfc(&out, len, s + seg, n - seg);
  return out;
}

/* One string: encode vs HF's ids, decode vs HF's decodes, decode == NFC(text). Returns 0 when all agree. */
static int check_string(const cJSON *rec, int shown) {
  const cJSON *hex = cJSON_GetObjectItem(rec, "text_hex");
  size_t len, n_want, n;
  char *text = hex ? hex_text(hex->valuestring, &len) : strdup(cJSON_GetObjectItem(rec, "text")->valuestring);
  if (!hex) len = strlen(text);
  int32_t *want = id_array(cJSON_GetObjectItem(rec, "ids"), &n_want);
  const int32_t *ids;
  int bad = 0;
  if (qvl_tokenizer_encode(tok, text, len, &ids, &n)) fail_msg("encode: %s", qvl_tokenizer_errmsg(tok));
  if (n != n_want || memcmp(ids, want, n * sizeof *ids)) {
    bad = 1;
    if (shown < 10)
      fprintf(stderr, "  ids differ for \"%.200s\"\n", text), print_ids("qvl", ids, n), print_ids("HF ", want, n_want);
  }
  const char *keys[2] = {"decode", "decode_skip"}, *dec;
  size_t dlen;
  const char *hf = cJSON_GetObjectItem(rec, "decode") ? cJSON_GetObjectItem(rec, "decode")->valuestring : NULL;
  for (int skip = 0; skip < 2; skip++) {
    const cJSON *d = cJSON_GetObjectItem(rec, keys[skip]);
    const char *w = d ? d->valuestring : skip && hf ? hf : text;
    size_t wl = d || (skip && hf) ? strlen(w) : len;
    if (qvl_tokenizer_decode(tok, want, n_want, skip, &dec, &dlen)) fail_msg("decode: %s", qvl_tokenizer_errmsg(tok));
    if (dlen != wl || memcmp(dec, w, wl)) {
      bad = 1;
      if (shown < 10)
        fprintf(stderr, "  %s differs for \"%.200s\":\n    qvl \"%.200s\"\n    HF  \"%.200s\"\n", keys[skip], text, dec,
                w);
    }
  }
  size_t nl;
  char *nfc = nfc_between_added(text, len, &nl);
  qvl_tokenizer_decode(tok, want, n_want, 0, &dec, &dlen);
  if (nl != dlen || memcmp(nfc, dec, dlen)) {
    bad = 1;
    if (shown < 10) fprintf(stderr, "  decode(encode(s)) != NFC(s) for \"%.200s\"\n", text);
  }
  free(nfc), free(want), free(text);
  return bad;
}

static void test_encode_goldens(void **state) {
  (void)state;
  cJSON *header = NULL;
  char *buf = NULL, **lines = read_lines("tests/data/tokenizer/encode.jsonl", &header, &buf);
  tally t[64];
  memset(t, 0, sizeof t);
  int nt = 0, total = 0, bad = 0;
  for (char **l = lines; *l; l++) {
    cJSON *rec = cJSON_Parse(*l);
    if (!rec || !cJSON_GetObjectItem(rec, "ids")) fail_msg("encode.jsonl line %d: not a golden record", total + 2);
    int b = check_string(rec, bad);
    count(t, &nt, cJSON_GetObjectItem(rec, "cat")->valuestring, b);
    bad += b, total++;
    cJSON_Delete(rec);
  }
  fprintf(stderr, "encode goldens (tokenizers %s): %d strings, %d differ\n",
          cJSON_GetObjectItem(header, "tokenizers") ? cJSON_GetObjectItem(header, "tokenizers")->valuestring : "?",
          total, bad);
  for (int i = 0; i < nt; i++) fprintf(stderr, "  %-16s %5d strings, %d differ\n", t[i].cat, t[i].n, t[i].bad);
  cJSON_Delete(header);
  free(lines), free(buf);
  assert_true(total >= 5000);
  assert_int_equal(bad, 0);
}

/* ---- chat.jsonl ----------------------------------------------------------------------------------------------- */

static int compare_ids(const char *what, const char *name, const int32_t *ids, size_t n, const cJSON *want_arr) {
  size_t nw;
  int32_t *want = id_array(want_arr, &nw);
  int bad = n != nw || memcmp(ids, want, n * sizeof *ids);
  if (bad) fprintf(stderr, "  %s: %s differ\n", name, what), print_ids("qvl", ids, n), print_ids("HF ", want, nw);
  free(want);
  return bad;
}

static int check_conv(const cJSON *rec) {
  static conv c;
  read_conv(&c, rec);
  const char *name = str_of(rec, "name"), *want = str_of(rec, "text"), *text;
  char label[96];
  snprintf(label, sizeof label, "%s/%s", str_of(rec, "model"), name);
  int bad = 0;
  if (qvl_chat_render(tok, &c.chat, 0, &text, NULL)) fail_msg("%s: %s", label, qvl_tokenizer_errmsg(tok));
  if (strcmp(text, want)) {
    fprintf(stderr, "  %s: text differs\n--- qvl ---\n%s\n--- HF ---\n%s\n---\n", label, text, want);
    bad = 1;
  }
  const int32_t *ids;
  size_t n;
  if (qvl_tokenizer_encode(tok, want, strlen(want), &ids, &n)) fail_msg("%s: %s", label, qvl_tokenizer_errmsg(tok));
  bad |= compare_ids("ids", label, ids, n, cJSON_GetObjectItem(rec, "ids"));
  if (cJSON_GetObjectItem(rec, "input_ids")) {
    if (qvl_chat_encode(tok, &c.chat, &ids, &n)) fail_msg("%s: %s", label, qvl_tokenizer_errmsg(tok));
    bad |= compare_ids("processor input_ids", label, ids, n, cJSON_GetObjectItem(rec, "input_ids"));
  }
  return bad;
}

static void test_chat_goldens(void **state) {
  (void)state;
  cJSON *header = NULL;
  char *buf = NULL, **lines = read_lines("tests/data/tokenizer/chat.jsonl", &header, &buf);
  int per_model[2] = {0, 0}, expanded = 0, bad = 0;
  for (char **l = lines; *l; l++) {
    cJSON *rec = cJSON_Parse(*l);
    if (!rec || !str_of(rec, "text")) fail_msg("chat.jsonl: not a golden record: %.80s", *l);
    per_model[!strcmp(str_of(rec, "model"), "qwen3_vl")]++;
    expanded += cJSON_GetObjectItem(rec, "input_ids") != NULL;
    bad += check_conv(rec);
    cJSON_Delete(rec);
  }
  fprintf(stderr,
          "chat goldens (transformers %s): %d Qwen2.5-VL + %d Qwen3-VL conversations, %d with processor "
          "input_ids; %d differ\n",
          str_of(header, "transformers") ? str_of(header, "transformers") : "?", per_model[0], per_model[1], expanded,
          bad);
  cJSON_Delete(header);
  free(lines), free(buf);
  assert_true(per_model[0] >= 20 && per_model[1] >= 20);
  assert_int_equal(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_encode_goldens), cmocka_unit_test(test_chat_goldens)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
