/* test_tokenizer.c - the tokenizer without HF goldens: spot ids of the real Qwen vocabulary (spec §5.3),
 * added tokens, NFC, round trips, the streaming detokenizer's boundaries, HF's U+FFFD replacement,
 * invalid UTF-8 input, the \s rewrite, and one distinct message per kind of malformed tokenizer.json
 * (on a tiny synthetic byte-level tokenizer, so those cases run in milliseconds). */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <utf8proc.h>

#include "text/tokenizer.h"

/* ---- helpers ------------------------------------------------------------------------------------------ */

static qvl_tokenizer *real;

static int open_real(void **state) {
  (void)state;
  real = tu_real_tokenizer();
  return 0;
}

static int close_real(void **state) {
  (void)state;
  qvl_tokenizer_close(real);
  return 0;
}

static qvl_tokenizer *need_real(void) {
  if (!real) fail_msg("the real Qwen tokenizer is missing: run scripts/fetch-tokenizer.sh");
  return real;
}

static size_t encode(qvl_tokenizer *t, const char *s, const int32_t **ids) {
  size_t n = 0;
  int rc = qvl_tokenizer_encode(t, s, strlen(s), ids, &n);
  if (rc) fail_msg("encode(\"%s\"): %s", s, qvl_tokenizer_errmsg(t));
  return n;
}

static void expect_ids(qvl_tokenizer *t, const char *s, const int32_t *want, size_t n_want) {
  const int32_t *ids;
  size_t n = encode(t, s, &ids);
  int same = n == n_want && !memcmp(ids, want, n * sizeof *ids);
  if (!same) {
    fprintf(stderr, "encode(\"%s\") =", s);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n  expected    =");
    for (size_t i = 0; i < n_want; i++) fprintf(stderr, " %d", want[i]);
    fail_msg("ids differ");
  }
}

static char *nfc(const char *s) { return (char *)utf8proc_NFC((const utf8proc_uint8_t *)s); }

/* decode(encode(s)) == NFC(s), and the stream of the same ids concatenates to it. */
static void round_trip(qvl_tokenizer *t, const char *s) {
  const int32_t *ids;
  size_t n = encode(t, s, &ids), len;
  int32_t *copy = malloc((n + 1) * sizeof *copy);
  memcpy(copy, ids, n * sizeof *copy);
  const char *text;
  assert_int_equal(qvl_tokenizer_decode(t, copy, n, 0, &text, &len), QVL_OK);
  char *want = nfc(s);
  if (strcmp(text, want)) fail_msg("round trip of \"%s\" gave \"%s\"", s, text);
  qvl_detok *d = NULL;
  assert_int_equal(qvl_detok_open(&d, t, 0), QVL_OK);
  char *streamed = calloc(strlen(want) + 1, 1);
  size_t k = 0;
  for (size_t i = 0; i <= n; i++) {
    const char *piece;
    size_t m;
    assert_int_equal(i < n ? qvl_detok_push(d, copy[i], &piece, &m) : qvl_detok_flush(d, &piece, &m), QVL_OK);
    assert_int_equal(strlen(piece), m);
    assert_true(k + m <= strlen(want));
    memcpy(streamed + k, piece, m);
    k += m;
  }
  assert_string_equal(streamed, want);
  qvl_detok_close(d);
  free(streamed);
  free(want);
  free(copy);
}

/* ---- the real vocabulary ----------------------------------------------------------------------------- */

static void test_spot_ids(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  const char *pieces[5] = {"Ġ", "Ċ", "ĠĠ", "Hello", "ĠHello"};
  const char *texts[5] = {" ", "\n", "  ", "Hello", " Hello"};
  const int32_t ids[5] = {220, 198, 256, 9707, 21927};
  for (int i = 0; i < 5; i++) {
    assert_int_equal(qvl_tokenizer_token_id(t, pieces[i]), ids[i]);
    expect_ids(t, texts[i], &ids[i], 1);
    size_t len;
    const char *p = qvl_tokenizer_piece(t, ids[i], &len);
    assert_int_equal(len, strlen(pieces[i]));
    assert_memory_equal(p, pieces[i], len);
  }
  assert_int_equal(qvl_tokenizer_n_ids(t), 151669);
  assert_null(qvl_tokenizer_piece(t, 151669, NULL));
  assert_null(qvl_tokenizer_piece(t, -1, NULL));
  /* every digit is its own pre-token; "Hello world" merges across the space */
  expect_ids(t, "12345", (const int32_t[]){16, 17, 18, 19, 20}, 5);
  expect_ids(t, "Hello world", (const int32_t[]){9707, 1879}, 2);
}

static void test_special_tokens(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  static const struct { const char *s; int32_t id; } sp[] = {
      {"<|endoftext|>", 151643}, {"<|im_start|>", 151644},   {"<|im_end|>", 151645},    {"<|vision_start|>", 151652},
      {"<|vision_end|>", 151653}, {"<|image_pad|>", 151655}, {"<|video_pad|>", 151656}, {"<tool_call>", 151657},
      {"</tool_call>", 151658},   {"<tool_response>", 151665}, {"</tool_response>", 151666}, {"<think>", 151667},
      {"</think>", 151668}};
  for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
    expect_ids(t, sp[i].s, &sp[i].id, 1);
    assert_int_equal(qvl_tokenizer_token_id(t, sp[i].s), sp[i].id);
  }
  /* matched inside words and before normalization; a broken one is plain text */
  const int32_t *ids;
  size_t n = encode(t, "abc<think>def", &ids);
  int found = 0;
  for (size_t i = 0; i < n; i++) found += ids[i] == 151667;
  assert_int_equal(found, 1);
  n = encode(t, "<|im_start|>user\nhi<|im_end|>\n", &ids);
  assert_int_equal(ids[0], 151644);
  assert_int_equal(ids[1], 872); /* "user" */
  assert_int_equal(ids[2], 198); /* "\n" */
  assert_int_equal(ids[n - 2], 151645);
  n = encode(t, "<|im_end", &ids);
  for (size_t i = 0; i < n; i++) assert_true(ids[i] < 151643);
  /* skip_special drops 151643-151656 only */
  const int32_t mix[4] = {151644, 9707, 151667, 151645};
  const char *text;
  assert_int_equal(qvl_tokenizer_decode(t, mix, 4, 1, &text, NULL), QVL_OK);
  assert_string_equal(text, "Hello<think>");
  assert_int_equal(qvl_tokenizer_decode(t, mix, 4, 0, &text, NULL), QVL_OK);
  assert_string_equal(text, "<|im_start|>Hello<think><|im_end|>");
  const int32_t *stop;
  assert_int_equal(qvl_tokenizer_stop_ids(t, &stop), 2);
  assert_int_equal(stop[0], 151645);
  assert_int_equal(stop[1], 151643);
}

static const char *SAMPLES[] = {
    "Hello, world! How's it going? I'm fine; they'll see, we'd've.",
    "你好，世界！今天天气很好。我们去公园散步吧。",
    "日本語のテキスト、カタカナとひらがな。漢字も。",
    "한국어 텍스트입니다. 안녕하세요!",
    "مرحبا بالعالم، هذا نص عربي.",
    "नमस्ते दुनिया, यह हिंदी पाठ है।",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "def f(x):\n\treturn x**2  # square\r\n\r\n    if x != 0: print(f\"{x}\")",
    "3141592653589793238462643383279502884197169399375105820974944",
    "   leading and trailing   \n\n\n\t\t  ",
    "cafe\xcc\x81 noe\xcc\x88l A\xcc\x8a \xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8 \xea\xb0\x80\xe1\x86\xa8",
    "mixed\xe2\x80\x8bzero\xe2\x80\x8dwidth\xc2\xa0nbsp\xe3\x80\x80ideographic\xe1\xa0\x8emongolian",
    "<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>",
    "",
    "\x01\x02\x1f control \x7f del",
    "ſ ſs 'S 'LL 'Ve K\xe2\x84\xaa",
};

static void test_round_trips(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  for (size_t i = 0; i < sizeof SAMPLES / sizeof SAMPLES[0]; i++) round_trip(t, SAMPLES[i]);
}

static void test_nfc_input(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  const char *pairs[][2] = {{"cafe\xcc\x81", "caf\xc3\xa9"},                  /* e + combining acute */
                            {"\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81"}, /* Hangul L V T */
                            {"\xe2\x84\xab", "\xc3\x85"},                     /* Angstrom sign (singleton) */
                            {"a\xcc\xa3\xcc\x87", "\xe1\xba\xa1\xcc\x87"}};  /* reordered marks */
  for (int i = 0; i < 4; i++) {
    const int32_t *a, *b;
    size_t na = encode(t, pairs[i][0], &a);
    int32_t copy[64];
    memcpy(copy, a, na * sizeof *a);
    size_t nb = encode(t, pairs[i][1], &b);
    assert_int_equal(na, nb);
    assert_memory_equal(copy, b, na * sizeof *a);
  }
}

/* HF normalizes after splitting on added tokens: '>' + U+0338 composes to U+226F in text, but not when the
 * '>' ends an added token (found by fuzz_tokenize, whose first oracle used whole-string NFC). */
static void test_nfc_stops_at_added_tokens(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  expect_ids(t, "<tool_response>\xcc\xb8", (const int32_t[]){151665, 136, 116}, 3);
  expect_ids(t, "x>\xcc\xb8", (const int32_t[]){87, 58994, 107}, 3); /* x, U+226F */
  const char *text;
  const int32_t ids[3] = {151665, 136, 116};
  assert_int_equal(qvl_tokenizer_decode(t, ids, 3, 0, &text, NULL), QVL_OK);
  assert_string_equal(text, "<tool_response>\xcc\xb8");
}

/* tok_nfc's fast path against utf8proc's whole-string NFC on random mixes of the characters that matter:
 * ASCII starters, combining marks, Hangul jamo, composition seconds, singletons, CJK. */
static void test_nfc_fast_path(void **state) {
  (void)state;
  static const uint32_t pool[] = {'a', 'e', 'o', 'A', ' ', 0x300, 0x301, 0x308, 0x323, 0x327, 0x345, 0x1100, 0x1161,
                                  0x11A8, 0xAC00, 0xAC01, 0x9BE, 0x9C7, 0xB3E, 0xCC6, 0xCD5, 0x212B, 0x2126, 0x3099,
                                  0x304B, 0x4E2D, 0xC5, 0xE9, 0x1E0B, 0x0F73, 0x1D15E, 0x1D165, 0x0374, 0xFB1D, 0x05B4};
  uint64_t st = tu_seed();
  for (int round = 0; round < 3000; round++) {
    utf8proc_uint8_t s[256];
    size_t k = 0;
    int n = 1 + (int)(st % 12);
    for (int i = 0; i < n; i++) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      k += (size_t)utf8proc_encode_char((utf8proc_int32_t)pool[(st >> 33) % (sizeof pool / sizeof pool[0])], s + k);
    }
    s[k] = 0;
    tok_vec out = {0};
    assert_int_equal(tok_nfc(&out, s, k), QVL_OK);
    char *want = nfc((const char *)s);
    if (out.n != strlen(want) || memcmp(out.p, want, out.n))
      fail_msg("fast NFC differs from utf8proc (round %d)", round);
    free(want);
    tok_vec_free(&out);
  }
}

static void test_invalid_utf8(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  const char *bad[] = {"ok\xff", "\xc0\xaf", "a\xed\xa0\x80z", "\xf4\x90\x80\x80", "trunc\xe4\xbd"};
  const size_t at[] = {2, 0, 1, 0, 5};
  for (int i = 0; i < 5; i++) {
    const int32_t *ids;
    size_t n;
    assert_int_equal(qvl_tokenizer_encode(t, bad[i], strlen(bad[i]), &ids, &n), QVL_ERR_INVALID_ARG);
    char needle[64];
    snprintf(needle, sizeof needle, "not valid UTF-8 at byte %zu", at[i]);
    tu_assert_msg_has(qvl_tokenizer_errmsg(t), needle, NULL);
  }
  /* NUL is a character like any other */
  const int32_t *ids;
  size_t n;
  assert_int_equal(qvl_tokenizer_encode(t, "a\0b", 3, &ids, &n), QVL_OK);
  assert_int_equal(n, 3);
  assert_string_equal(qvl_tokenizer_errmsg(t), "");
}

/* ---- decoding ------------------------------------------------------------------------------------------ */

/* String::from_utf8_lossy: one U+FFFD per maximal invalid subpart. */
static void test_lossy(void **state) {
  (void)state;
  static const struct { const char *in, *out; } cases[] = {
      {"\xf0\x9f\x98" "A", "\xef\xbf\xbd" "A"},
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
      {"\xe4\xbd" "x\xe5", "\xef\xbf\xbd" "x\xef\xbf\xbd"},
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"ok \xe2\x82\xac", "ok \xe2\x82\xac"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tok_vec out = {0};
    int rc;
    size_t used = tok_utf8_lossy(&out, (const uint8_t *)cases[i].in, strlen(cases[i].in), 1, &rc);
    assert_int_equal(rc, QVL_OK);
    assert_int_equal(used, strlen(cases[i].in));
    assert_int_equal(out.n, strlen(cases[i].out));
    assert_memory_equal(out.p, cases[i].out, out.n);
    tok_vec_free(&out);
  }
}

static int32_t byte_token(qvl_tokenizer *t, uint8_t b) { return t->byte_id[b]; }

static void test_stream_boundaries(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  /* 😀 = F0 9F 98 80 pushed byte by byte: nothing until the last byte, then the whole character */
  const uint8_t smile[4] = {0xF0, 0x9F, 0x98, 0x80};
  qvl_detok *d = NULL;
  assert_int_equal(qvl_detok_open(&d, t, 0), QVL_OK);
  const char *text;
  size_t len;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(qvl_detok_push(d, byte_token(t, smile[i]), &text, &len), QVL_OK);
    assert_int_equal(len, 0);
  }
  assert_int_equal(qvl_detok_push(d, byte_token(t, smile[3]), &text, &len), QVL_OK);
  assert_string_equal(text, "\xf0\x9f\x98\x80");
  /* an incomplete character then ASCII: U+FFFD as soon as it cannot complete */
  assert_int_equal(qvl_detok_push(d, byte_token(t, 0xE4), &text, &len), QVL_OK);
  assert_int_equal(len, 0);
  assert_int_equal(qvl_detok_push(d, 9707, &text, &len), QVL_OK);
  assert_string_equal(text, "\xef\xbf\xbdHello");
  /* incomplete at the end: flush gives U+FFFD, a second flush nothing */
  assert_int_equal(qvl_detok_push(d, byte_token(t, 0xE4), &text, &len), QVL_OK);
  assert_int_equal(qvl_detok_push(d, byte_token(t, 0xBD), &text, &len), QVL_OK);
  assert_int_equal(len, 0);
  assert_int_equal(qvl_detok_flush(d, &text, &len), QVL_OK);
  assert_string_equal(text, "\xef\xbf\xbd");
  assert_int_equal(qvl_detok_flush(d, &text, &len), QVL_OK);
  assert_int_equal(len, 0);
  /* unknown ids are skipped, as HF skips them */
  assert_int_equal(qvl_detok_push(d, 999999, &text, &len), QVL_OK);
  assert_int_equal(len, 0);
  qvl_detok_close(d);
  qvl_detok_close(NULL);
  /* every split of a multi-token text streams to the whole decode */
  for (size_t i = 0; i < sizeof SAMPLES / sizeof SAMPLES[0]; i++) round_trip(t, SAMPLES[i]);
}

static void test_generation_config(void **state) {
  (void)state;
  qvl_tokenizer *t = need_real();
  const char *dir = tu_tmpdir();
  char path[512];
  snprintf(path, sizeof path, "%s/generation_config.json", dir);
  const int32_t *ids;
  assert_int_equal(qvl_tokenizer_read_generation_config(t, path), QVL_OK); /* absent: defaults stay */
  assert_int_equal(qvl_tokenizer_stop_ids(t, &ids), 2);
  const char *good = "{\"bos_token_id\": 151643, \"eos_token_id\": [151645, 151643, 151667], \"do_sample\": true}";
  tu_write_file(path, good, strlen(good));
  assert_int_equal(qvl_tokenizer_read_generation_config(t, path), QVL_OK);
  assert_int_equal(qvl_tokenizer_stop_ids(t, &ids), 3);
  assert_int_equal(ids[2], 151667);
  const char *one = "{\"eos_token_id\": 151645}";
  tu_write_file(path, one, strlen(one));
  assert_int_equal(qvl_tokenizer_read_generation_config(t, path), QVL_OK);
  assert_int_equal(qvl_tokenizer_stop_ids(t, &ids), 1);
  const char *bad = "{\"eos_token_id\": [\"<|im_end|>\"]}";
  tu_write_file(path, bad, strlen(bad));
  assert_int_equal(qvl_tokenizer_read_generation_config(t, path), QVL_ERR_FORMAT);
  tu_assert_msg_has(qvl_tokenizer_errmsg(t), "generation_config.json: eos_token_id", NULL);
  const char *defaults = "{\"eos_token_id\": [151645, 151643]}";
  tu_write_file(path, defaults, strlen(defaults));
  assert_int_equal(qvl_tokenizer_read_generation_config(t, path), QVL_OK);
  tu_rmtree(dir);
}

/* ---- the \s rewrite --------------------------------------------------------------------------------- */

static int matches(pcre2_code *re, pcre2_match_data *md, uint32_t cp) {
  utf8proc_uint8_t b[4];
  size_t n = (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, b);
  return pcre2_match(re, b, n, 0, 0, md, NULL) > 0;
}

static pcre2_code *compile(const char *pattern) {
  char out[1024];
  assert_int_equal(tok_rewrite_pattern(pattern, out, sizeof out), 0);
  int e;
  PCRE2_SIZE at;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)out, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &at, NULL);
  assert_non_null(re);
  return re;
}

static void test_whitespace_class(void **state) {
  (void)state;
  pcre2_code *ours = compile("\\s"), *neg = compile("[^\\s]"), *big_s = compile("\\S");
  int e;
  PCRE2_SIZE at;
  pcre2_code *pcre = pcre2_compile((PCRE2_SPTR) "\\s", 2, PCRE2_UTF | PCRE2_UCP, &e, &at, NULL);
  pcre2_match_data *md = pcre2_match_data_create(1, NULL);
  for (uint32_t cp = 0; cp < 0x110000; cp++) {
    if (cp >= 0xD800 && cp < 0xE000) continue;
    int want = matches(pcre, md, cp) && cp != 0x180E; /* Oniguruma's \s: PCRE2's without U+180E */
    if (matches(ours, md, cp) != want || matches(neg, md, cp) == want || matches(big_s, md, cp) == want)
      fail_msg("U+%04X: rewritten \\s disagrees", cp);
  }
  char out[256];
  assert_int_equal(tok_rewrite_pattern("[\\S]", out, sizeof out), -1);
  assert_int_equal(tok_rewrite_pattern("\\s\\s\\s", out, 16), -1);
  assert_int_equal(tok_rewrite_pattern("[]\\s]", out, sizeof out), 0);
  pcre2_code_free(ours), pcre2_code_free(neg), pcre2_code_free(big_s), pcre2_code_free(pcre);
  pcre2_match_data_free(md);
}

/* ---- malformed tokenizer.json --------------------------------------------------------------------------- */

/* A byte-level tokenizer with the Qwen pipeline: the 256 byte tokens (ids 0-255), merges "Ġ t" -> "Ġt"
 * and "h e" -> "he", and two added tokens. */
static cJSON *tiny_doc(void) {
  cJSON *doc = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(doc, "model");
  cJSON_AddStringToObject(model, "type", "BPE");
  cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
  for (int b = 0; b < 256; b++) {
    int cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 ? b : -1;
    if (cp < 0) {
      int k = 0;
      for (int c = 0; c < b; c++) k += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174);
      cp = 256 + k;
    }
    utf8proc_uint8_t s[8] = {0};
    utf8proc_encode_char(cp, s);
    cJSON_AddNumberToObject(vocab, (char *)s, b);
  }
  cJSON_AddNumberToObject(vocab, "Ġt", 256);
  cJSON_AddNumberToObject(vocab, "he", 257);
  cJSON *merges = cJSON_AddArrayToObject(model, "merges");
  cJSON_AddItemToArray(merges, cJSON_CreateString("Ġ t"));
  const char *pair[2] = {"h", "e"};
  cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
  cJSON *added = cJSON_AddArrayToObject(doc, "added_tokens");
  const char *names[2] = {"<|im_end|>", "<x>"};
  for (int i = 0; i < 2; i++) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", 300 + i);
    cJSON_AddStringToObject(a, "content", names[i]);
    cJSON_AddBoolToObject(a, "special", i == 0);
    cJSON_AddBoolToObject(a, "normalized", 0);
    cJSON_AddItemToArray(added, a);
  }
  cJSON_AddItemToObject(doc, "normalizer", cJSON_Parse("{\"type\":\"NFC\"}"));
  cJSON_AddItemToObject(
      doc, "pre_tokenizer",
      cJSON_Parse("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                  "\"(?i:'s|'t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "
                  "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                  "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                  "\"use_regex\":false}]}"));
  cJSON_AddItemToObject(doc, "decoder", cJSON_Parse("{\"type\":\"ByteLevel\"}"));
  return doc;
}

static int open_doc(const cJSON *doc, qvl_tokenizer **t) {
  char *json = cJSON_PrintUnformatted(doc);
  int rc = qvl_tokenizer_open_json(t, json, strlen(json), "tiny.json");
  free(json);
  return rc;
}

static void test_tiny_ok(void **state) {
  (void)state;
  cJSON *doc = tiny_doc();
  qvl_tokenizer *t = NULL;
  if (open_doc(doc, &t)) fail_msg("%s", qvl_tokenizer_errmsg(t));
  expect_ids(t, "he the<x> t", (const int32_t[]){257, 256, 257, 301, 256}, 5);
  const int32_t *stop;
  assert_int_equal(qvl_tokenizer_stop_ids(t, &stop), 1);
  assert_int_equal(stop[0], 300);
  qvl_tokenizer_close(t);
  /* merges written before the vocabulary: located on the walk, read after it */
  cJSON *model = cJSON_GetObjectItem(doc, "model");
  cJSON_AddItemToObject(model, "vocab", cJSON_DetachItemFromObject(model, "vocab"));
  assert_string_equal(model->child->next->string, "merges");
  if (open_doc(doc, &t)) fail_msg("%s", qvl_tokenizer_errmsg(t));
  expect_ids(t, "he the<x> t", (const int32_t[]){257, 256, 257, 301, 256}, 5);
  qvl_tokenizer_close(t);
  cJSON_Delete(doc);
}

typedef void (*mutate_fn)(cJSON *doc);
static cJSON *model_of(cJSON *d) { return cJSON_GetObjectItem(d, "model"); }
static void m_no_model(cJSON *d) { cJSON_DeleteItemFromObject(d, "model"); }
static void m_vocab_array(cJSON *d) { cJSON_ReplaceItemInObject(model_of(d), "vocab", cJSON_CreateArray()); }
static void m_no_merges(cJSON *d) { cJSON_DeleteItemFromObject(model_of(d), "merges"); }
static void m_bad_id(cJSON *d) {
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(model_of(d), "vocab"), "he", cJSON_CreateNumber(-3));
}
static void m_dup_id(cJSON *d) {
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(model_of(d), "vocab"), "he", cJSON_CreateNumber(256));
}
static void m_merge_unknown(cJSON *d) {
  cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(d), "merges"), cJSON_CreateString("x yz"));
}
static void m_merge_shape(cJSON *d) {
  cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(d), "merges"), cJSON_CreateNumber(7));
}
static void m_merge_spaces(cJSON *d) {
  cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(d), "merges"), cJSON_CreateString("a b c"));
}
static void m_wordpiece(cJSON *d) { cJSON_ReplaceItemInObject(model_of(d), "type", cJSON_CreateString("WordPiece")); }
static void m_byte_fallback(cJSON *d) { cJSON_AddBoolToObject(model_of(d), "byte_fallback", 1); }
static void m_no_byte(cJSON *d) { cJSON_DeleteItemFromObject(cJSON_GetObjectItem(model_of(d), "vocab"), "Ā"); }
static void m_nfkc(cJSON *d) { cJSON_ReplaceItemInObject(d, "normalizer", cJSON_Parse("{\"type\":\"NFKC\"}")); }
static void m_pretok(cJSON *d) {
  cJSON_ReplaceItemInObject(d, "pre_tokenizer", cJSON_Parse("{\"type\":\"Whitespace\"}"));
}
static void m_regex(cJSON *d) {
  cJSON *split = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "pre_tokenizer"), "pretokenizers"), 0);
  cJSON_ReplaceItemInObject(split, "pattern", cJSON_Parse("{\"Regex\":\"(unclosed\"}"));
}
static void m_lstrip(cJSON *d) {
  cJSON_AddBoolToObject(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "added_tokens"), 1), "lstrip", 1);
}
static void m_added_noid(cJSON *d) {
  cJSON_DeleteItemFromObject(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "added_tokens"), 0), "id");
}
static void m_decoder(cJSON *d) { cJSON_ReplaceItemInObject(d, "decoder", cJSON_Parse("{\"type\":\"WordPiece\"}")); }
static void m_template(cJSON *d) {
  cJSON_AddItemToObject(d, "post_processor", cJSON_Parse("{\"type\":\"TemplateProcessing\"}"));
}

static void test_malformed(void **state) {
  (void)state;
  static const struct { mutate_fn f; int code; const char *a, *b; } cases[] = {
      {m_no_model, QVL_ERR_FORMAT, "tiny.json: model", "missing"},
      {m_vocab_array, QVL_ERR_FORMAT, "model.vocab", "not an object"},
      {m_no_merges, QVL_ERR_FORMAT, "model.merges", "missing"},
      {m_bad_id, QVL_ERR_FORMAT, "model.vocab[\"he\"]", "out of"},
      {m_dup_id, QVL_ERR_FORMAT, "model.vocab[\"he\"]", "already used"},
      {m_merge_unknown, QVL_ERR_FORMAT, "model.merges[2]", "\"yz\" is not in model.vocab"},
      {m_merge_shape, QVL_ERR_FORMAT, "model.merges[2]", "expected \"a b\""},
      {m_merge_spaces, QVL_ERR_FORMAT, "model.merges[2]", "two tokens"},
      {m_wordpiece, QVL_ERR_UNSUPPORTED, "model.type", "WordPiece"},
      {m_byte_fallback, QVL_ERR_UNSUPPORTED, "model.byte_fallback", NULL},
      {m_no_byte, QVL_ERR_FORMAT, "no token for byte 0x00", NULL},
      {m_nfkc, QVL_ERR_UNSUPPORTED, "normalizer", "NFKC"},
      {m_pretok, QVL_ERR_UNSUPPORTED, "pre_tokenizer", "Sequence[Split, ByteLevel]"},
      {m_regex, QVL_ERR_FORMAT, "pre_tokenizer.Split.pattern", "regex error"},
      {m_lstrip, QVL_ERR_UNSUPPORTED, "added_tokens[1]", "lstrip"},
      {m_added_noid, QVL_ERR_FORMAT, "added_tokens[0]", "\"id\""},
      {m_decoder, QVL_ERR_UNSUPPORTED, "decoder", "ByteLevel"},
      {m_template, QVL_ERR_UNSUPPORTED, "post_processor", "TemplateProcessing"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cJSON *doc = tiny_doc();
    cases[i].f(doc);
    qvl_tokenizer *t = NULL;
    int rc = open_doc(doc, &t);
    if (rc != cases[i].code)
      fail_msg("case %zu: %s instead of %s: %s", i, qvl_status_name(rc), qvl_status_name(cases[i].code),
               qvl_tokenizer_errmsg(t));
    tu_assert_msg_has(qvl_tokenizer_errmsg(t), cases[i].a, cases[i].b);
    qvl_tokenizer_close(t);
    cJSON_Delete(doc);
  }
}

static void test_malformed_text(void **state) {
  (void)state;
  static const struct { const char *json, *a; } cases[] = {
      {"", "not a JSON object"},
      {"[1, 2]", "not a JSON object"},
      {"{\"model\": {\"vocab\": {\"a\": 0", "not valid JSON near byte"},
      {"{\"model\": {\"vocab\": {\"a\": 0.5}, \"merges\": []}}", "model.vocab: not valid JSON"},
      {"{\"model\": {\"vocab\": {\"\\ud800\": 0}, \"merges\": []}}", "model.vocab: not valid JSON"},
      {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}} trailing", "not valid JSON"},
      {"{\"model\": {\"vocab\": {}, \"merges\": []}}", "model.vocab: empty"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qvl_tokenizer *t = NULL;
    assert_int_equal(qvl_tokenizer_open_json(&t, cases[i].json, strlen(cases[i].json), NULL), QVL_ERR_FORMAT);
    tu_assert_msg_has(qvl_tokenizer_errmsg(t), "tokenizer.json: ", cases[i].a);
    const int32_t *ids; /* a handle that failed to open refuses work instead of crashing */
    size_t n;
    assert_int_equal(qvl_tokenizer_encode(t, "x", 1, &ids, &n), QVL_ERR_INVALID_ARG);
    tu_assert_msg_has(qvl_tokenizer_errmsg(t), "did not open", NULL);
    qvl_tokenizer_close(t);
  }
  qvl_tokenizer *t = NULL;
  assert_int_equal(qvl_tokenizer_open(&t, "/nonexistent/tokenizer.json"), QVL_ERR_IO);
  tu_assert_msg_has(qvl_tokenizer_errmsg(t), "/nonexistent/tokenizer.json", "cannot open");
  qvl_tokenizer_close(t);
  qvl_tokenizer_close(NULL);
}

/* ---- qvl tokenize ------------------------------------------------------------------------------------------ */

static void test_cli_tokenize(void **state) {
  (void)state;
  need_real();
  char out[4096];
  assert_int_equal(
      tu_run_qvl(out, sizeof out, "tokenize --tokenizer .cache/tokenizer/tokenizer.json 'Hello world<|im_end|>'"), 0);
  tu_assert_msg_has(out, "3 tokens: 9707 1879 151645", "\"\xc4\xa0world\"");
  assert_int_equal(tu_run_qvl(out, sizeof out, "tokenize --tokenizer /nonexistent.json hi"), 1);
  tu_assert_msg_has(out, "/nonexistent.json: cannot open", NULL);
  assert_int_equal(
      tu_run_qvl(out, sizeof out, "tokenize --tokenizer .cache/tokenizer/tokenizer.json \"$(printf 'a\\377')\""), 1);
  tu_assert_msg_has(out, "not valid UTF-8 at byte 1", NULL);
  assert_int_equal(tu_run_qvl(out, sizeof out, "tokenize hi"), 2);
  /* --model DIR: stop ids from its generation_config.json */
  const char *dir = tu_tmpdir();
  char path[600], args[1024];
  snprintf(path, sizeof path, "%s/generation_config.json", dir);
  const char *gen = "{\"eos_token_id\": [151645, 151643, 7]}";
  tu_write_file(path, gen, strlen(gen));
  snprintf(args, sizeof args, "tokenize --model '%s' --tokenizer .cache/tokenizer/tokenizer.json hi", dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 0);
  tu_assert_msg_has(out, "stop ids: 151645 151643 7", NULL);
  tu_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spot_ids),         cmocka_unit_test(test_special_tokens),
      cmocka_unit_test(test_round_trips),      cmocka_unit_test(test_nfc_input),
      cmocka_unit_test(test_nfc_fast_path),    cmocka_unit_test(test_nfc_stops_at_added_tokens),    cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_lossy),            cmocka_unit_test(test_stream_boundaries),
      cmocka_unit_test(test_generation_config), cmocka_unit_test(test_whitespace_class),
      cmocka_unit_test(test_tiny_ok),          cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_malformed_text),   cmocka_unit_test(test_cli_tokenize),
  };
  return cmocka_run_group_tests(tests, open_real, close_real);
}
