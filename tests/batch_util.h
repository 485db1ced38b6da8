/* batch_util.h - the scheduler tests' harness (test_sched.c on the CPU, test_gpu_serve.c on CUDA): requests written
 * as qvl batch lines, run through qvl_batch_run in-process, each answer compared with qvl_generate_ids running the
 * request alone on another engine. The tiny Qwen3-VL with the real vocabulary, dummy weights. Header-only. */
#ifndef QVL_BATCH_UTIL_H
#define QVL_BATCH_UTIL_H

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"
#include "testutil.h"

#define MODEL "tests/data/tiny-qwen3_vl-vocab"

static qvl_tokenizer *g_tok;
static qvl_engine *g_direct;                         /* runs each request alone */
static qvl_backend_kind g_backend = QVL_BACKEND_CPU; /* of every engine opened here */
static int g_differ;                                 /* answers unlike their `want`, when not exact */

static qvl_engine *open_engine(int64_t kv_tokens) {
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(MODEL), p.dummy = 1, p.backend = g_backend, p.load = QVL_LOAD_ALL;
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

/* Eight greedy requests of different lengths, three after one system message and two of those on one image (shared
 * prefix blocks with an image in them): test_sched's small-pool preemption case and test_gpu_serve's batch. */
enum { SHARED_N = 8 };
#define SHARED_SYSTEM "You look at pictures and answer in a few words, naming the main object first, then its colour."
static int shared_prefix_requests(req r[SHARED_N]) {
  const char *sys = SHARED_SYSTEM;
  const req all[SHARED_N] = {
      {"Hello there", NULL, 12, 0, 1, NULL, NULL, NULL, 0},
      {"What is the capital of France? Answer briefly.", NULL, 9, 0, 1, NULL, NULL, NULL, 0},
      {"Describe it.", "jpeg_20x20.jpg", 7, 0, 1, NULL, sys, NULL, 0},
      {"Count to ten", NULL, 12, 0, 1, NULL, NULL, NULL, 0},
      {"A much longer prompt that goes on for a while, so that its prefill is longer than the others", NULL, 5, 0, 1,
       NULL, NULL, NULL, 0},
      {"Tags?", "png_1x1.png", 6, 0, 1, NULL, sys, NULL, 0},
      {"Describe it in more words.", "jpeg_20x20.jpg", 7, 0, 1, NULL, sys, NULL, 0},
      {"x", NULL, 1, 0, 1, NULL, NULL, NULL, 0}};
  memcpy(r, all, sizeof all);
  return SHARED_N;
}

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

/* Each run_batch ends within this many seconds, or the test process fails with a message (a scheduler that never
 * finishes a request must not hang the test run). */
enum { BATCH_DEADLINE_S = 300 };

static void batch_deadline(int sig) {
  (void)sig;
  static const char msg[] = "\nFAIL: run_batch did not finish within its deadline (BATCH_DEADLINE_S seconds): the "
                            "scheduler stopped making progress\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  _exit(1);
}

/* Runs the requests as one batch on engine e (server params p) and compares each answer with its `want`: equal when
 * exact, else the differences are counted in g_differ. */
static qvl_batch_stats run_batch(qvl_engine *e, qvl_server_params p, req *r, int n, int exact) {
  char *in_text = input_of(r, n), *out_text = NULL, err[256];
  size_t out_len = 0;
  FILE *in = fmemopen(in_text, strlen(in_text), "r"), *out = open_memstream(&out_text, &out_len);
  qvl_batch_stats st;
  p.media_dir = tu_path("tests/data/images");
  fflush(stdout);
  void (*was)(int) = signal(SIGALRM, batch_deadline);
  time_t t0 = time(NULL);
  unsigned left = alarm(BATCH_DEADLINE_S); /* a deadline of the whole test, if any, comes back after */
  assert_int_equal(qvl_batch_run(e, g_tok, &p, in, out, NULL, &st, err, sizeof err), 0);
  alarm(0);
  signal(SIGALRM, was);
  if (left) alarm(left > (unsigned)(time(NULL) - t0) + 1 ? left - (unsigned)(time(NULL) - t0) : 1);
  fclose(in), fclose(out);
  int k = 0;
  char *save = NULL;
  for (char *line = strtok_r(out_text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), k++) {
    cJSON *o = cJSON_Parse(line);
    const cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body");
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), 0);
    const cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "message"), "content");
    if (!cJSON_IsString(content)) fail_msg("line %d has no answer: %s", k, line);
    int same = !strcmp(content->valuestring, r[k].want);
    printf("  r%d %s\"%s\"\n", k, same ? "" : "DIFFERS ", content->valuestring);
    if (!same) printf("     alone \"%s\"\n", r[k].want);
    if (exact) assert_string_equal(content->valuestring, r[k].want);
    g_differ += !same;
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

#endif
