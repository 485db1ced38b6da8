/* qvl batch (src/server/batch.c): OpenAI batch lines in, one answer line each out, in input order. The tiny Qwen3-VL
 * with the real vocabulary, dummy weights, CPU: greedy answers equal qvl_generate_ids run directly, every kind of bad
 * line is answered with an error and the lines after it still run, and `qvl batch` as a command does the same. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"
#include "testutil.h"

#define MODEL "tests/data/tiny-qwen3_vl-vocab"

static char *slurp_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot read %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (fread(b, 1, (size_t)n, f) != (size_t)n) fail_msg("short read %s", path);
  b[n] = '\0';
  fclose(f);
  return b;
}

/* The greedy answer of qvl_generate_ids to one user turn of text. */
static char *direct_answer(qvl_tokenizer *t, const char *text, int max_tokens) {
  qvl_engine *e = tu_open_dummy(MODEL, QVL_BACKEND_CPU, QVL_LOAD_ALL);
  qvl_chat_message m = {.role = "user", .content = text};
  qvl_chat chat = {.kind = QVL_CHAT_QWEN3_VL, .messages = &m, .n_messages = 1, .add_generation_prompt = 1};
  const int32_t *ids;
  size_t n;
  assert_int_equal(qvl_chat_encode(t, &chat, &ids, &n), QVL_OK);
  int32_t *copy = malloc(n * sizeof *copy);
  memcpy(copy, ids, n * sizeof *copy);
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = max_tokens, s.temperature = 0;
  s.n_stop = qvl_tokenizer_stop_ids(t, &s.stop_ids);
  tu_tokens out = {0};
  assert_int_equal(qvl_generate_ids(e, copy, (int)n, NULL, &s, tu_collect, &out), QVL_OK);
  const char *txt;
  assert_int_equal(qvl_tokenizer_decode(t, out.ids, (size_t)out.n, 1, &txt, NULL), QVL_OK);
  char *r = strdup(txt);
  free(copy);
  qvl_engine_close(e);
  return r;
}

static const char *answer_of(const cJSON *line) {
  const cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(line, "response"), "body");
  const cJSON *msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), 0), "message");
  const cJSON *c = cJSON_GetObjectItem(msg, "content");
  return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* Writes the test input: good text and image lines around every kind of bad one. */
static void write_input(const char *path) {
  FILE *f = fopen(path, "w");
  const char *text = "{\"custom_id\": \"t%d\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": "
                     "{\"model\": \"any-name\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], "
                     "\"max_tokens\": 6, \"temperature\": 0}}\n";
  fprintf(f, text, 1);
  fprintf(f, "not json\n\n");                                            /* a bad line, then a blank one (skipped) */
  fprintf(f, "{\"custom_id\": \"nobody\"}\n");                           /* no body */
  fprintf(f, "{\"custom_id\": \"emb\", \"url\": \"/v1/embeddings\", \"body\": {}}\n"); /* another endpoint */
  fprintf(f, "{\"custom_id\": \"temp\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
             "\"temperature\": \"hot\"}}\n");                            /* a schema error */
  fprintf(f, "{\"custom_id\": \"img\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
             "\"image_url\", \"image_url\": {\"url\": \"file://%s\"}}, {\"type\": \"text\", \"text\": \"What?\"}]}], "
             "\"max_tokens\": 4, \"temperature\": 0}}\n",
          tu_path("tests/data/images/jpeg_20x20.jpg"));
  fprintf(f, "{\"custom_id\": \"badimg\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
             "\"image_url\", \"image_url\": {\"url\": \"data:image/png;base64,AAAAAAAA\"}}]}]}}\n"); /* fails later */
  fprintf(f, "{\"custom_id\": \"long\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
             "\"max_tokens\": 5000}}\n");                                /* over the context, found by the engine */
  fprintf(f, text, 2);
  fclose(f);
}

static const char *want_ids[] = {"t1", NULL, "nobody", "emb", "temp", "img", "badimg", "long", "t2"};
static const int want_status[] = {200, 400, 400, 400, 400, 200, 400, 400, 200};
static const char *want_msg[] = {NULL,           "not a JSON object", "'body' must be an object",
                                 "'url' must be", "must be a number", NULL,
                                 "image 0",      "exceed the context", NULL};

/* Checks every output line against the table above; returns the first answer. */
static char *check_output(const char *out) {
  char *txt = slurp_text(out), *first = NULL, *save = NULL;
  int k = 0;
  for (char *line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save), k++) {
    assert_true(k < 9);
    cJSON *o = cJSON_Parse(line);
    assert_non_null(o);
    const cJSON *id = cJSON_GetObjectItem(o, "custom_id"), *err = cJSON_GetObjectItem(o, "error");
    if (want_ids[k])
      assert_string_equal(id->valuestring, want_ids[k]);
    else
      assert_true(cJSON_IsNull(id));
    if (want_status[k] == 200) {
      assert_true(cJSON_IsNull(err));
      assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "status_code")->valueint, 200);
      assert_non_null(answer_of(o));
      if (!first) first = strdup(answer_of(o));
      if (k == 8) assert_string_equal(answer_of(o), first); /* t2 == t1 */
    } else {
      assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "response")));
      assert_int_equal(cJSON_GetObjectItem(err, "status_code")->valueint, want_status[k]);
      tu_assert_msg_has(cJSON_GetObjectItem(err, "message")->valuestring, want_msg[k], NULL);
    }
    cJSON_Delete(o);
  }
  assert_int_equal(k, 9);
  free(txt);
  return first;
}

static void test_batch_in_process(void **state) {
  (void)state;
  qvl_tokenizer *t = tu_real_tokenizer();
  if (!t) {
    printf("  skipped: no tokenizer\n");
    return;
  }
  const char *dir = tu_tmpdir();
  char in_path[600], out_path[600];
  snprintf(in_path, sizeof in_path, "%s/in.jsonl", dir), snprintf(out_path, sizeof out_path, "%s/out.jsonl", dir);
  write_input(in_path);
  qvl_engine *e = tu_open_dummy(MODEL, QVL_BACKEND_CPU, QVL_LOAD_ALL);
  qvl_server_params p = {.model = "tiny", .max_queue = 3, .media_dir = tu_path("tests/data/images")};
  FILE *in = fopen(in_path, "rb"), *out = fopen(out_path, "wb");
  qvl_batch_stats st;
  char err[256];
  assert_int_equal(qvl_batch_run(e, t, &p, in, out, stdout, &st, err, sizeof err), 0);
  fclose(in), fclose(out);
  assert_int_equal(st.lines, 9);
  assert_int_equal(st.ok, 3);
  assert_int_equal(st.failed, 6);
  assert_int_equal(st.images, 1);
  assert_true(st.gen_tokens >= 3 && st.prompt_tokens > 64);
  char *first = check_output(out_path);
  char *direct = direct_answer(t, "Hello there", 6);
  printf("  answer \"%s\"\n", first);
  assert_string_equal(first, direct);
  free(first), free(direct);
  qvl_engine_close(e);
  qvl_tokenizer_close(t);
  tu_rmtree(dir);
}

/* The command: the same output file, the summary on stderr, exit 0 although lines failed; a missing input is 1. */
static void test_batch_command(void **state) {
  (void)state;
  qvl_tokenizer *t = tu_real_tokenizer();
  if (!t) {
    printf("  skipped: no tokenizer\n");
    return;
  }
  qvl_tokenizer_close(t);
  const char *dir = tu_tmpdir();
  char in_path[600], out_path[600], args[2048], log[8192];
  snprintf(in_path, sizeof in_path, "%s/in.jsonl", dir), snprintf(out_path, sizeof out_path, "%s/out.jsonl", dir);
  write_input(in_path);
  snprintf(args, sizeof args,
           "batch '%s' -o '%s' --model " MODEL " --dummy --cpu --tokenizer .cache/tokenizer/tokenizer.json "
           "--allowed-local-media-path tests/data/images --concurrency 4",
           in_path, out_path);
  int rc = tu_run_qvl(log, sizeof log, args);
  printf("%s", log);
  assert_int_equal(rc, 0);
  tu_assert_msg_has(log, "9 lines (3 ok, 6 failed)", "images/s");
  free(check_output(out_path));
  snprintf(args, sizeof args, "batch '%s/missing.jsonl' --model " MODEL " --dummy --cpu", dir);
  assert_int_equal(tu_run_qvl(log, sizeof log, args), 1);
  tu_assert_msg_has(log, "cannot read", "missing.jsonl");
  tu_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batch_in_process), cmocka_unit_test(test_batch_command)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
