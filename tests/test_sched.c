/* The scheduler (src/server/sched.c) through qvl batch in-process: many requests in one batched step stream give
 * every request the greedy tokens it gets alone (qvl_generate_ids on another engine), with images, with host
 * sampling mixed in, under KV preemption, and with the encoder cache (a repeated image skips the tower); an image
 * that only decoding finds broken fails its own request, not the others preprocessed with it.
 * The tiny Qwen3-VL with the real vocabulary, dummy weights, CPU backend. */
#include "batch_util.h"

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
  qvl_batch_stats st = run_batch(e, p, r, n, 1);
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
  qvl_batch_stats st = run_batch(e, p, r, 6, 1);
  assert_int_equal(st.ok, 6);
  assert_true(st.preemptions >= 1);
  for (int i = 0; i < 6; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

/* test_gpu_serve's small pool on the CPU: eight requests, three of them after one system message and two of those on
 * one image, in 10 blocks. Their shared prefix blocks stay in the prefix cache, so a preempted sequence used to take
 * them straight back (lm_seq_share) and still hold blocks: the plan preempted it again and again, forever. Now every
 * answer is the one it gets alone, and a request the pool can never hold is refused with a clear error. */
static void test_preemption_shared_prefix(void **state) {
  (void)state;
  NEED_TOKENIZER();
  req r[SHARED_N];
  int n = shared_prefix_requests(r);
  for (int i = 0; i < n; i++) r[i].want = alone(&r[i]);
  qvl_engine *e = open_engine(160);
  qvl_server_params p = {.max_queue = 8, .kv_tokens = 160};
  qvl_batch_stats st = run_batch(e, p, r, n, 1);
  assert_int_equal(st.ok, n);
  assert_true(st.preemptions > 0);
  assert_true(st.prefix_hit_tokens > 0);
  /* over the pool alone (some 50 prompt tokens + 150 new > 160): refused, the other request answered */
  char in_text[1024], *out_text = NULL, err[256];
  size_t out_len = 0;
  snprintf(in_text, sizeof in_text,
           "{\"custom_id\": \"big\", \"body\": {\"messages\": [{\"role\": \"system\", \"content\": \"%s\"}, "
           "{\"role\": \"user\", \"content\": \"%s\"}], \"max_tokens\": 150}}\n"
           "{\"custom_id\": \"small\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], "
           "\"max_tokens\": 4}}\n",
           SHARED_SYSTEM, SHARED_SYSTEM);
  FILE *in = fmemopen(in_text, strlen(in_text), "r"), *out = open_memstream(&out_text, &out_len);
  signal(SIGALRM, batch_deadline);
  alarm(BATCH_DEADLINE_S);
  assert_int_equal(qvl_batch_run(e, g_tok, &p, in, out, NULL, &st, err, sizeof err), 0);
  alarm(0);
  fclose(in), fclose(out);
  assert_int_equal(st.ok, 1);
  assert_int_equal(st.failed, 1);
  assert_non_null(strstr(out_text, "tokens of KV cache"));
  free(out_text);
  for (int i = 0; i < n; i++) free(r[i].want), free(r[i].ids);
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
  qvl_batch_stats st = run_batch(e, p, r, 4, 1);
  assert_int_equal(st.vision_images, 2);
  assert_int_equal(st.encoder_cache_hits, 2);
  p.encoder_cache_bytes = -1;
  st = run_batch(e, p, r, 4, 1);
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
  qvl_batch_stats st = run_batch(e, p, r, 4, 1);
  assert_int_equal(st.prefix_hit_tokens, want);
  p.no_prefix_cache = 1; /* off: no hits, the same answers */
  st = run_batch(e, p, r, 4, 1);
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
  qvl_batch_stats st = run_batch(e, p, r, 5, 1);
  assert_int_equal(st.ok, 5);
  assert_int_equal(st.prefix_hit_tokens, 16);
  for (int i = 0; i < 5; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

/* Copies tests/data/images/<name> to dir/<as>, the first `keep` bytes of it when keep > 0. */
static void copy_image(const char *dir, const char *name, const char *as, long keep) {
  char from[256], to[600];
  snprintf(from, sizeof from, "tests/data/images/%s", name), snprintf(to, sizeof to, "%s/%s", dir, as);
  FILE *f = fopen(tu_path(from), "rb"), *g = fopen(to, "wb");
  assert_true(f && g);
  static uint8_t buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fwrite(buf, 1, keep > 0 && (size_t)keep < n ? (size_t)keep : n, g);
  fclose(f), fclose(g);
}

/* Five requests admitted together, their images preprocessed by the scheduler: r1's JPEG is cut short (its header,
 * all the submitting thread reads, is whole), r4 asks for other pixel limits (another preprocessing call). The call
 * with r1 fails and is made again request by request: r1 alone ends with 400 and the decoder's message, r0, r2 and
 * r3 answer as they do alone, r4 gets its own grid (1 pad token instead of 64), and the tower ran for the three good
 * images only. */
static void test_bad_image_in_batch(void **state) {
  (void)state;
  NEED_TOKENIZER();
  const char *dir = tu_tmpdir();
  copy_image(dir, "jpeg_20x20.jpg", "a.jpg", 0);
  copy_image(dir, "jpeg_420_640x480.jpg", "cut.jpg", 20000);
  copy_image(dir, "png_1x1.png", "b.png", 0);
  req r[] = {{"Describe it.", "jpeg_20x20.jpg", 5, 0, 1, NULL, NULL, NULL, 0},
             {"Tags?", "png_1x1.png", 5, 0, 1, NULL, NULL, NULL, 0},
             {"Hello there", NULL, 5, 0, 1, NULL, NULL, NULL, 0}};
  for (int i = 0; i < 3; i++) r[i].want = alone(&r[i]);
  static const char *line =
      "{\"custom_id\": \"r%d\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": [%s{\"type\": \"text\", "
      "\"text\": \"%s\"}]}], \"max_tokens\": 5, \"temperature\": 0, \"seed\": 7%s}}\n";
  static const char *files[5] = {"a.jpg", "cut.jpg", "b.png", NULL, "a.jpg"};
  static const char *texts[5] = {"Describe it.", "What is this?", "Tags?", "Hello there", "Describe it."};
  char in_text[8192], img[700];
  size_t len = 0;
  for (int i = 0; i < 5; i++) {
    img[0] = '\0';
    if (files[i])
      snprintf(img, sizeof img, "{\"type\": \"image_url\", \"image_url\": \"file://%s/%s\"}, ", dir, files[i]);
    len += (size_t)snprintf(in_text + len, sizeof in_text - len, line, i, img, texts[i],
                            i == 4 ? ", \"min_pixels\": 1024, \"max_pixels\": 1024" : "");
  }
  char *out_text = NULL, err[256];
  size_t out_len = 0;
  FILE *in = fmemopen(in_text, len, "r"), *out = open_memstream(&out_text, &out_len);
  qvl_server_params p = {.max_queue = 5, .kv_tokens = 16384, .media_dir = dir};
  qvl_batch_stats st;
  qvl_engine *e = open_engine(0);
  signal(SIGALRM, batch_deadline);
  alarm(BATCH_DEADLINE_S);
  assert_int_equal(qvl_batch_run(e, g_tok, &p, in, out, NULL, &st, err, sizeof err), 0);
  alarm(0);
  fclose(in), fclose(out);
  assert_int_equal(st.ok, 4);
  assert_int_equal(st.failed, 1);
  assert_int_equal(st.vision_images, 3);
  char *save = NULL;
  int k = 0, prompt[5] = {0};
  for (char *l = strtok_r(out_text, "\n", &save); l; l = strtok_r(NULL, "\n", &save), k++) {
    cJSON *o = cJSON_Parse(l);
    const cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body"),
                *er = cJSON_GetObjectItem(o, "error");
    printf("  %s\n", l);
    if (k == 1) {
      assert_int_equal(cJSON_GetObjectItem(er, "status_code")->valueint, 400);
      tu_assert_msg_has(cJSON_GetObjectItem(er, "message")->valuestring, "image 0", "truncated JPEG");
    } else {
      const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), 0);
      const char *content = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "message"), "content")->valuestring;
      if (k < 4) assert_string_equal(content, r[k == 0 ? 0 : k - 1].want);
      prompt[k] = cJSON_GetObjectItem(cJSON_GetObjectItem(body, "usage"), "prompt_tokens")->valueint;
    }
    cJSON_Delete(o);
  }
  assert_int_equal(k, 5);
  assert_int_equal(prompt[4], prompt[0] - 63);
  free(out_text);
  for (int i = 0; i < 3; i++) free(r[i].want), free(r[i].ids);
  qvl_engine_close(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batched_equals_alone),     cmocka_unit_test(test_preemption),
      cmocka_unit_test(test_preemption_shared_prefix), cmocka_unit_test(test_encoder_cache),
      cmocka_unit_test(test_prefix_cache_images),      cmocka_unit_test(test_prefix_cache_reclaim),
      cmocka_unit_test(test_bad_image_in_batch)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
