/* The scheduler (src/server/sched.c) through qvl batch in-process: many requests in one batched step stream give
 * every request the greedy tokens it gets alone (qvl_generate_ids on another engine), with images, with host
 * sampling mixed in, under KV preemption, and with the encoder cache (a repeated image skips the tower).
 * The tiny Qwen3-VL with the real vocabulary, dummy weights, CPU backend. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"
#include "testutil.h"

#define MODEL "tests/data/tiny-qwen3_vl-vocab"

static qvl_tokenizer *g_tok;
static qvl_engine *g_direct;

static qvl_engine *open_engine(int64_t kv_tokens) {
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(MODEL), p.dummy = 1, p.backend = QVL_BACKEND_CPU, p.load = QVL_LOAD_ALL;
  p.kv_cache_tokens = kv_tokens;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  return e;
}

/* One request of a test: a text, an optional image file, and the sampling. */
typedef struct req {
  const char *text, *image; /* image: a file under tests/data/images, or NULL */
  int max_tokens;
  double temperature; /* 0: greedy */
  double rep;         /* repetition_penalty (1: off) */
  char *want;         /* the answer of qvl_generate_ids alone */
  const char *system; /* a system message first, or NULL */
  int32_t *ids;       /* the prompt's ids (alone() fills them) */
  int n_ids;
} req;

/* What qvl_generate_ids gives the request alone (the same seed as the batch line); r->ids gets its prompt. */
static char *alone(req *r) {
  qvl_image_batch *batch = NULL;
  qvl_chat_part parts[2];
  memset(parts, 0, sizeof parts);
  int np = 0;
  if (r->image) {
    char path[256];
    snprintf(path, sizeof path, "tests/data/images/%s", r->image);
    FILE *f = fopen(tu_path(path), "rb");
    if (!f) fail_msg("cannot read %s", path);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    qvl_image im = {.data = buf, .size = n};
    if (qvl_preprocess_images(g_direct, &im, 1, NULL, &batch)) fail_msg("%s", qvl_errmsg(g_direct));
    parts[np].kind = QVL_PART_IMAGE;
    memcpy(parts[np++].grid_thw, qvl_image_batch_pixels(batch)->grid_thw, 3 * sizeof(int32_t));
  }
  parts[np].kind = QVL_PART_TEXT, parts[np++].text = r->text;
  qvl_chat_message m[2] = {{.role = "system", .content = r->system}, {.role = "user", .parts = parts, .n_parts = np}};
  int sys = r->system != NULL;
  qvl_chat chat = {
      .kind = QVL_CHAT_QWEN3_VL, .messages = m + 1 - sys, .n_messages = 1 + sys, .add_generation_prompt = 1};
  const int32_t *ids;
  size_t n;
  assert_int_equal(qvl_chat_encode(g_tok, &chat, &ids, &n), QVL_OK);
  int32_t *copy = malloc(n * sizeof *copy);
  memcpy(copy, ids, n * sizeof *copy);
  free(r->ids);
  r->ids = malloc(n * sizeof *r->ids), r->n_ids = (int)n;
  memcpy(r->ids, ids, n * sizeof *ids);
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = r->max_tokens, s.temperature = (float)r->temperature, s.seed = 7;
  s.repetition_penalty = (float)r->rep;
  s.n_stop = qvl_tokenizer_stop_ids(g_tok, &s.stop_ids);
  tu_tokens out = {0};
  if (qvl_generate_ids(g_direct, copy, (int)n, batch ? qvl_image_batch_pixels(batch) : NULL, &s, tu_collect, &out))
    fail_msg("%s", qvl_errmsg(g_direct));
  const char *txt;
  assert_int_equal(qvl_tokenizer_decode(g_tok, out.ids, (size_t)out.n, 1, &txt, NULL), QVL_OK);
  free(copy);
  qvl_image_batch_free(batch);
  return strdup(txt);
}

/* The batch input for the requests: line i has custom_id "r<i>". */
static char *input_of(const req *r, int n) {
  size_t cap = 4096 * (size_t)n, len = 0;
  char *b = malloc(cap);
  for (int i = 0; i < n; i++) {
    char img[512] = "";
    if (r[i].image)
      snprintf(img, sizeof img, "{\"type\": \"image_url\", \"image_url\": \"file://%s/%s\"}, ",
               tu_path("tests/data/images"), r[i].image);
    char sys[1024] = "";
    if (r[i].system) snprintf(sys, sizeof sys, "{\"role\": \"system\", \"content\": \"%s\"}, ", r[i].system);
    len += (size_t)snprintf(b + len, cap - len,
                            "{\"custom_id\": \"r%d\", \"body\": {\"messages\": [%s{\"role\": \"user\", \"content\": [%s"
                            "{\"type\": \"text\", \"text\": \"%s\"}]}], \"max_tokens\": %d, \"temperature\": %g, "
                            "\"repetition_penalty\": %g, \"seed\": 7}}\n",
                            i, sys, img, r[i].text, r[i].max_tokens, r[i].temperature, r[i].rep);
  }
  return b;
}

/* Runs the requests as one batch on engine e (server params p) and checks each answer against its `want`. */
static qvl_batch_stats run_and_check(qvl_engine *e, qvl_server_params p, req *r, int n) {
  char *in_text = input_of(r, n), *out_text = NULL, err[256];
  size_t out_len = 0;
  FILE *in = fmemopen(in_text, strlen(in_text), "r"), *out = open_memstream(&out_text, &out_len);
  qvl_batch_stats st;
  p.media_dir = tu_path("tests/data/images");
  assert_int_equal(qvl_batch_run(e, g_tok, &p, in, out, NULL, &st, err, sizeof err), 0);
  fclose(in), fclose(out);
  int k = 0;
  char *save = NULL;
  for (char *line = strtok_r(out_text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), k++) {
    cJSON *o = cJSON_Parse(line);
    const cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body");
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), 0);
    const cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "message"), "content");
    if (!cJSON_IsString(content)) fail_msg("line %d has no answer: %s", k, line);
    printf("  r%d %s\"%s\"\n", k, strcmp(content->valuestring, r[k].want) ? "DIFFERS " : "", content->valuestring);
    assert_string_equal(content->valuestring, r[k].want);
    cJSON_Delete(o);
  }
  assert_int_equal(k, n);
  printf(
      "  %lld steps, %lld step tokens, %lld generated, %lld preemptions, %lld tower images, %lld encoder cache hits, "
      "%lld prefix hit tokens\n",
      (long long)st.steps, (long long)st.step_tokens, (long long)st.gen_tokens, (long long)st.preemptions,
      (long long)st.vision_images, (long long)st.encoder_cache_hits, (long long)st.prefix_hit_tokens);
  free(in_text), free(out_text);
  return st;
}

static int setup(void **state) {
  (void)state;
  if (!(g_tok = tu_real_tokenizer())) return 0;
  g_direct = open_engine(0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  qvl_engine_close(g_direct);
  qvl_tokenizer_close(g_tok);
  return 0;
}

#define NEED_TOKENIZER()                                          \
  do {                                                            \
    if (!g_tok) return (void)printf("  skipped: no tokenizer\n"); \
  } while (0)

/* Eight requests of different lengths, two with images, two sampled on the host: every answer equals the
 * request run alone, and the steps were shared (far fewer steps than tokens). */
static void test_batched_equals_alone(void **state) {
  (void)state;
  NEED_TOKENIZER();
  req r[] = {{"Hello there", NULL, 12, 0, 1, NULL, NULL, NULL, 0},
             {"What is the capital of France? Answer briefly.", NULL, 9, 0, 1, NULL, NULL, NULL, 0},
             {"Describe it.", "jpeg_20x20.jpg", 7, 0, 1, NULL, NULL, NULL, 0},
             {"Count to ten", NULL, 12, 0.8, 1, NULL, NULL, NULL, 0},
             {"A much longer prompt that goes on for a while, so that its prefill is longer than the others", NULL, 5,
              0, 1, NULL, NULL, NULL, 0},
             {"Tags?", "png_1x1.png", 6, 0, 1, NULL, NULL, NULL, 0},
             {"Repeat after me: la la la", NULL, 10, 0, 1.5, NULL, NULL, NULL, 0},
             {"x", NULL, 1, 0, 1, NULL, NULL, NULL, 0}};
  int n = (int)(sizeof r / sizeof r[0]);
  for (int i = 0; i < n; i++) r[i].want = alone(&r[i]);
  qvl_engine *e = open_engine(0);
  qvl_server_params p = {.max_queue = 8, .kv_tokens = 16384};
  qvl_batch_stats st = run_and_check(e, p, r, n);
  assert_int_equal(st.ok, n);
  assert_true(st.steps <= 14);           /* one prefill step, then one step per token of the longest answer */
  assert_true(st.gen_tokens > st.steps); /* so steps carried several sequences */
  assert_int_equal(st.vision_images, 2);
  for (int i = 0; i < n; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

/* A KV pool of 10 blocks (160 tokens) for six requests that need 5 blocks each by their end: prefill waits for
 * blocks, decode runs out and preempts; every answer is still the one it gets alone. */
static void test_preemption(void **state) {
  (void)state;
  NEED_TOKENIZER();
  req r[6];
  static const char *texts[6] = {"Hello there", "Hi", "Good morning", "Tell me a story", "Why?", "Name a colour"};
  for (int i = 0; i < 6; i++) r[i] = (req){texts[i], NULL, 60, 0, 1, NULL, NULL, NULL, 0}, r[i].want = alone(&r[i]);
  qvl_engine *e = open_engine(160);
  qvl_server_params p = {.max_queue = 6, .kv_tokens = 160};
  qvl_batch_stats st = run_and_check(e, p, r, 6);
  assert_int_equal(st.ok, 6);
  assert_true(st.preemptions >= 1);
  for (int i = 0; i < 6; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

/* The same image in four requests: the tower runs once, the cache answers the rest, the answers are those of the
 * tower's own rows (each request alone). With the cache off the tower runs four times. */
static void test_encoder_cache(void **state) {
  (void)state;
  NEED_TOKENIZER();
  req r[4] = {{"What is it?", "jpeg_20x20.jpg", 5, 0, 1, NULL, NULL, NULL, 0},
              {"And now?", "jpeg_20x20.jpg", 5, 0, 1, NULL, NULL, NULL, 0},
              {"Colour?", "png_1x1.png", 5, 0, 1, NULL, NULL, NULL, 0},
              {"What is it?", "jpeg_20x20.jpg", 5, 0, 1, NULL, NULL, NULL, 0}};
  for (int i = 0; i < 4; i++) r[i].want = alone(&r[i]);
  qvl_engine *e = open_engine(0);
  qvl_server_params p = {.max_queue = 1, .kv_tokens = 16384}; /* one at a time: each sees the cache of the last */
  qvl_batch_stats st = run_and_check(e, p, r, 4);
  assert_int_equal(st.vision_images, 2);
  assert_int_equal(st.encoder_cache_hits, 2);
  p.encoder_cache_bytes = -1;
  st = run_and_check(e, p, r, 4);
  assert_int_equal(st.vision_images, 4);
  assert_int_equal(st.encoder_cache_hits, 0);
  for (int i = 0; i < 4; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

static int first_pad(const req *r) {
  for (int t = 0; t < r->n_ids; t++)
    if (r->ids[t] == 151655) return t; /* <|image_pad|> */
  return -1;
}

static int first_difference(const req *a, const req *b) {
  int t = 0;
  while (t < a->n_ids && t < b->n_ids && a->ids[t] == b->ids[t]) t++;
  return t;
}

/* The prefix cache with images, one request at a time after a shared system message:
 *   r0 image A + question Q    nothing cached yet: no hit
 *   r1 image B + question Q    the same token ids as r0 (pads are pads) but another image: only the blocks before the
 *                              image's first pad are shared, never one that holds image KV
 *   r2 image A + question Q'   the same image: the hit runs through the image up to the block where Q' departs from Q
 *   r3 = r0 again              everything but the last block's tail
 * The hit tokens are exactly those, and every answer equals the request alone (M-RoPE positions after the hit). */
static void test_prefix_cache_images(void **state) {
  (void)state;
  NEED_TOKENIZER();
  const char *sys =
      "You are a careful assistant that looks at pictures and answers in a few words. Always name the main object "
      "first, then its colour, then anything else that stands out in the picture, and nothing more than that.";
  req r[4] = {
      {"Describe the picture.", "jpeg_20x20.jpg", 6, 0, 1, NULL, sys, NULL, 0},
      {"Describe the picture.", "png_1x1.png", 6, 0, 1, NULL, sys, NULL, 0},
      {"Describe the picture in more detail, please, with colours.", "jpeg_20x20.jpg", 6, 0, 1, NULL, sys, NULL, 0},
      {"Describe the picture.", "jpeg_20x20.jpg", 6, 0, 1, NULL, sys, NULL, 0}};
  for (int i = 0; i < 4; i++) r[i].want = alone(&r[i]);
  int pad = first_pad(&r[0]), diff = first_difference(&r[0], &r[2]);
  assert_int_equal(first_difference(&r[0], &r[1]), r[0].n_ids); /* r0 and r1: identical ids */
  assert_true(pad >= 2 * 16 && diff > pad + 64);
  int64_t want = pad / 16 * 16 + diff / 16 * 16 + (r[0].n_ids - 1) / 16 * 16;
  printf("  first pad at %d, r2 departs at %d, r0 has %d tokens: %lld hit tokens expected\n", pad, diff, r[0].n_ids,
         (long long)want);
  qvl_engine *e = open_engine(0);
  qvl_server_params p = {.max_queue = 1, .kv_tokens = 16384};
  qvl_batch_stats st = run_and_check(e, p, r, 4);
  assert_int_equal(st.prefix_hit_tokens, want);
  p.no_prefix_cache = 1; /* off: no hits, the same answers */
  st = run_and_check(e, p, r, 4);
  assert_int_equal(st.prefix_hit_tokens, 0);
  for (int i = 0; i < 4; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

/* A pool of 4 blocks (64 tokens) for one request at a time, each of 3 blocks with one full prompt block that the
 * prefix cache keeps: from the third request on, blocks come back from the cache (least recently used first), and
 * the last request, the same prompt as the one before it, still finds its block. Every answer is its own. */
static void test_prefix_cache_reclaim(void **state) {
  (void)state;
  NEED_TOKENIZER();
  static const char *texts[5] = {
      "Write one line about the sea, the wind over it, and the boats going out early in the morning light.",
      "Write one line about the mountains, the snow on them, and the people climbing up in the cold air.",
      "Write one line about a city at night, its lights, its noise and the trains that never seem to stop.",
      "Write one line about a forest after rain, its smell, its colours and the birds coming back out.",
      "Write one line about a forest after rain, its smell, its colours and the birds coming back out."};
  req r[5];
  for (int i = 0; i < 5; i++) r[i] = (req){texts[i], NULL, 8, 0, 1, NULL, NULL, NULL, 0}, r[i].want = alone(&r[i]);
  for (int i = 0; i < 5; i++) assert_true(r[i].n_ids > 16 && r[i].n_ids + 8 <= 48);
  qvl_engine *e = open_engine(4 * 16);
  qvl_server_params p = {.max_queue = 1, .kv_tokens = 4 * 16};
  qvl_batch_stats st = run_and_check(e, p, r, 5);
  assert_int_equal(st.ok, 5);
  assert_int_equal(st.prefix_hit_tokens, 16);
  for (int i = 0; i < 5; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batched_equals_alone), cmocka_unit_test(test_preemption),
                                     cmocka_unit_test(test_encoder_cache), cmocka_unit_test(test_prefix_cache_images),
                                     cmocka_unit_test(test_prefix_cache_reclaim)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
