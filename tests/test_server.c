/* The HTTP server (src/server/) answering a real HTTP client: a small POSIX-socket client below talks to a
 * server started in-process on a free port, and to `qvl serve` run as a child process.
 * The model is tests/data/tiny-qwen3_vl-vocab (the tiny Qwen3-VL with the real vocabulary and special ids, so the
 * real tokenizer fits it), dummy weights, CPU. Greedy answers are compared with qvl_generate_ids run directly. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qvl.h"
#include "server/server.h"
#include "testutil.h"

#define MODEL     "tests/data/tiny-qwen3_vl-vocab"
#define TOKENIZER ".cache/tokenizer/tokenizer.json"
#define MAX_BODY  (2u << 20)

typedef struct fixture {
  qvl_engine *e, *e_direct; /* the server's (its worker owns it) and the test's own */
  qvl_tokenizer *t, *t_direct;
  qvl_server *s;
  int port;
  const char *dir; /* a scratch directory: the server's log */
  char log_path[600];
  FILE *log;
} fixture;

static fixture g;

/* ---- a minimal HTTP/1.1 client ----------------------------------------------------------------- */

typedef struct resp {
  int status;
  char head[4096]; /* the status line and headers */
  char *body;      /* NUL-terminated, chunked encoding undone */
  size_t len;
} resp;

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) fail_msg("cannot connect to port %d", port);
  return fd;
}

static void send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return; /* the server may answer (413) and close before the body is all sent */
    p += k, n -= (size_t)k;
  }
}

static void send_request(int fd, const char *method, const char *path, const char *body, size_t len) {
  char head[512];
  int n = snprintf(head, sizeof head,
                   "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n\r\n",
                   method, path, body ? len : 0);
  send_all(fd, head, (size_t)n);
  if (body) send_all(fd, body, len);
}

static void dechunk(resp *r) {
  char *in = r->body, *out = r->body, *end = r->body + r->len;
  while (in < end) {
    char *stop;
    unsigned long n = strtoul(in, &stop, 16);
    char *data = strstr(stop, "\r\n");
    if (!data || n == 0) break;
    data += 2;
    if (data + n > end) fail_msg("truncated chunk");
    memmove(out, data, n);
    out += n, in = data + n + 2;
  }
  r->len = (size_t)(out - r->body);
  r->body[r->len] = '\0';
}

static void read_response(int fd, resp *r) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (ssize_t k; (k = recv(fd, buf + n, cap - n - 1, 0)) > 0;)
    if ((n += (size_t)k) + 1 == cap) buf = realloc(buf, cap *= 2);
  close(fd);
  buf[n] = '\0';
  char *sep = strstr(buf, "\r\n\r\n");
  if (!sep || sscanf(buf, "HTTP/1.1 %d", &r->status) != 1) fail_msg("not an HTTP response: \"%.200s\"", buf);
  size_t hl = (size_t)(sep - buf);
  snprintf(r->head, sizeof r->head, "%.*s", (int)(hl < sizeof r->head ? hl : sizeof r->head - 1), buf);
  r->len = n - hl - 4;
  r->body = malloc(r->len + 1);
  memcpy(r->body, sep + 4, r->len + 1);
  free(buf);
  if (strcasestr(r->head, "transfer-encoding: chunked")) dechunk(r);
}

static resp http(int port, const char *method, const char *path, const char *body) {
  resp r = {0};
  int fd = connect_to(port);
  send_request(fd, method, path, body, body ? strlen(body) : 0);
  read_response(fd, &r);
  return r;
}

/* A header's value (case-insensitive name), copied into out; "" when absent. */
static const char *header(const resp *r, const char *name, char *out, size_t cap) {
  out[0] = '\0';
  for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
    if (!strncasecmp(p + 2, name, strlen(name)) && p[2 + strlen(name)] == ':') {
      const char *v = p + 3 + strlen(name), *e = strstr(v, "\r\n");
      while (*v == ' ') v++;
      snprintf(out, cap, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
    }
  return out;
}

static cJSON *parse_json(const char *s) {
  cJSON *o = cJSON_Parse(s);
  if (!o) fail_msg("not JSON: \"%.300s\"", s);
  return o;
}

static const char *jstr(const cJSON *o, const char *path1, const char *path2) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, path1);
  if (path2) v = cJSON_GetObjectItemCaseSensitive(v, path2);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *path1, const char *path2) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, path1);
  if (path2) v = cJSON_GetObjectItemCaseSensitive(v, path2);
  if (!cJSON_IsNumber(v)) fail_msg("%s.%s is not a number", path1, path2 ? path2 : "");
  return v->valuedouble;
}

/* ---- fixtures ---------------------------------------------------------------------------------- */

static char *b64(const uint8_t *p, size_t n) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *o = malloc(4 * ((n + 2) / 3) + 1), *q = o;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    *q++ = a[v >> 18], *q++ = a[v >> 12 & 63];
    *q++ = i + 1 < n ? a[v >> 6 & 63] : '=', *q++ = i + 2 < n ? a[v & 63] : '=';
  }
  *q = '\0';
  return o;
}

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot read %s", path);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*n);
  if (fread(b, 1, *n, f) != *n) fail_msg("short read %s", path);
  fclose(f);
  return b;
}

/* "data:image/jpeg;base64,..." of a test image. */
static char *data_url(const char *rel, const char *mime) {
  size_t n;
  uint8_t *bytes = slurp(tu_path(rel), &n);
  char *enc = b64(bytes, n), *url = malloc(strlen(enc) + 64);
  sprintf(url, "data:%s;base64,%s", mime, enc);
  free(bytes), free(enc);
  return url;
}

static qvl_engine *open_engine(void) {
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(MODEL), p.dummy = 1, p.backend = QVL_BACKEND_CPU, p.load = QVL_LOAD_ALL;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  return e;
}

static qvl_tokenizer *open_tok(void) {
  qvl_tokenizer *t = NULL;
  if (qvl_tokenizer_open(&t, tu_path(TOKENIZER))) fail_msg("%s", qvl_tokenizer_errmsg(t));
  return t;
}

static int have_tokenizer(void) {
  FILE *f = fopen(tu_path(TOKENIZER), "rb");
  if (f) return fclose(f), 1;
  printf("  skipped: %s is missing (bash scripts/fetch-tokenizer.sh fetches it; scripts/test.sh runs it)\n", TOKENIZER);
  return 0;
}

static int setup(void **state) {
  (void)state;
  if (!have_tokenizer()) return 0;
  g.e = open_engine(), g.e_direct = open_engine(), g.t = open_tok(), g.t_direct = open_tok();
  g.dir = tu_tmpdir();
  snprintf(g.log_path, sizeof g.log_path, "%s/server.log", g.dir);
  if (!(g.log = fopen(g.log_path, "w"))) fail_msg("cannot write %s", g.log_path);
  qvl_server_params p = {.port = 0,
                         .model = "tiny",
                         .max_queue = 1,
                         .max_body = MAX_BODY,
                         .max_images = 2,
                         .media_dir = tu_path("tests/data/images"),
                         .log = g.log,
                         .kv_tokens = 16384,
                         .max_running = 1}; /* one runs, one waits: test_queue_and_cancel */
  char err[256];
  if (qvl_server_start(&g.s, g.e, g.t, &p, err, sizeof err)) fail_msg("%s", err);
  g.port = qvl_server_port(g.s);
  assert_true(g.port > 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  qvl_server_stop(g.s);
  qvl_tokenizer_close(g.t), qvl_tokenizer_close(g.t_direct);
  qvl_engine_close(g.e), qvl_engine_close(g.e_direct);
  if (g.log) fclose(g.log), tu_rmtree(g.dir);
  return 0;
}

#define NEED_SERVER()         \
  do {                        \
    if (!g.s) return (void)0; \
  } while (0)

typedef struct ids_out {
  int32_t ids[512];
  int n;
} ids_out;

static int collect(void *ud, int32_t id) {
  ids_out *o = ud;
  if (o->n < 512) o->ids[o->n++] = id;
  return 0;
}

/* What qvl_generate_ids answers greedily to one user turn (an optional image first, then text), decoded. */
static char *direct_answer(const char *image_rel, const char *text, int max_tokens, int *n_prompt) {
  qvl_image_batch *batch = NULL;
  qvl_chat_part parts[2];
  memset(parts, 0, sizeof parts);
  int np = 0;
  if (image_rel) {
    size_t n;
    uint8_t *bytes = slurp(tu_path(image_rel), &n);
    qvl_image im = {.data = bytes, .size = n};
    if (qvl_preprocess_images(g.e_direct, &im, 1, NULL, &batch)) fail_msg("%s", qvl_errmsg(g.e_direct));
    free(bytes);
    parts[np].kind = QVL_PART_IMAGE;
    memcpy(parts[np++].grid_thw, qvl_image_batch_pixels(batch)->grid_thw, 3 * sizeof(int32_t));
  }
  parts[np].kind = QVL_PART_TEXT, parts[np++].text = text;
  qvl_chat_message m = {.role = "user", .parts = parts, .n_parts = np};
  qvl_chat chat = {.kind = QVL_CHAT_QWEN3_VL, .messages = &m, .n_messages = 1, .add_generation_prompt = 1};
  const int32_t *ids;
  size_t n;
  assert_int_equal(qvl_chat_encode(g.t_direct, &chat, &ids, &n), QVL_OK);
  *n_prompt = (int)n;
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = max_tokens, s.temperature = 0;
  s.n_stop = qvl_tokenizer_stop_ids(g.t_direct, &s.stop_ids);
  static ids_out out;
  out.n = 0;
  if (qvl_generate_ids(g.e_direct, ids, (int)n, batch ? qvl_image_batch_pixels(batch) : NULL, &s, collect, &out))
    fail_msg("%s", qvl_errmsg(g.e_direct));
  qvl_image_batch_free(batch);
  const char *text_out;
  assert_int_equal(qvl_tokenizer_decode(g.t_direct, out.ids, (size_t)out.n, 1, &text_out, NULL), QVL_OK);
  return strdup(text_out);
}

/* A completion's answer text, checking the response's shape on the way. */
static cJSON *completion(const char *body, resp *r) {
  *r = http(g.port, "POST", "/v1/chat/completions", body);
  if (r->status != 200) fail_msg("status %d: %s", r->status, r->body);
  cJSON *o = parse_json(r->body);
  char rid[64];
  assert_string_equal(jstr(o, "object", NULL), "chat.completion");
  assert_string_equal(jstr(o, "id", NULL), header(r, "x-request-id", rid, sizeof rid));
  assert_true(!strncmp(rid, "chatcmpl-", 9));
  assert_string_equal(jstr(o, "model", NULL), "tiny");
  const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
  assert_non_null(c0);
  assert_string_equal(jstr(c0, "message", "role"), "assistant");
  assert_non_null(jstr(c0, "message", "content"));
  const char *fin = jstr(c0, "finish_reason", NULL);
  assert_true(fin && (!strcmp(fin, "stop") || !strcmp(fin, "length")));
  assert_int_equal(jnum(o, "usage", "prompt_tokens") + jnum(o, "usage", "completion_tokens"),
                   jnum(o, "usage", "total_tokens"));
  return o;
}

static const char *answer_of(const cJSON *o) {
  return jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "message", "content");
}

static void test_health_models(void **state) {
  (void)state;
  NEED_SERVER();
  char rid[64];
  resp r = http(g.port, "GET", "/health", NULL);
  assert_int_equal(r.status, 200);
  assert_true(header(&r, "x-request-id", rid, sizeof rid)[0]);
  free(r.body);
  r = http(g.port, "GET", "/v1/models", NULL);
  assert_int_equal(r.status, 200);
  cJSON *o = parse_json(r.body);
  assert_string_equal(jstr(o, "object", NULL), "list");
  assert_string_equal(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "data"), 0), "id", NULL), "tiny");
  cJSON_Delete(o), free(r.body);
}

/* Greedy text: the same twice, and what qvl_generate_ids gives directly. */
static void test_completion_text(void **state) {
  (void)state;
  NEED_SERVER();
  const char *body =
      "{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], "
      "\"max_tokens\": 12, \"temperature\": 0}";
  resp r1, r2;
  cJSON *a = completion(body, &r1), *b = completion(body, &r2);
  int n_prompt;
  char *direct = direct_answer(NULL, "Hello there", 12, &n_prompt);
  printf("  answer \"%s\"\n", answer_of(a));
  assert_string_equal(answer_of(a), answer_of(b));
  assert_string_equal(answer_of(a), direct);
  assert_int_equal(jnum(a, "usage", "prompt_tokens"), n_prompt);
  assert_true(jnum(a, "usage", "completion_tokens") >= 1 && jnum(a, "usage", "completion_tokens") <= 12);
  /* the list form of the same content, and max_completion_tokens, give the same answer */
  resp r3;
  cJSON *c = completion(
      "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hello "
      "there\"}]}], \"max_completion_tokens\": 12, \"temperature\": 0}",
      &r3);
  assert_string_equal(answer_of(c), direct);
  free(direct), free(r1.body), free(r2.body), free(r3.body);
  cJSON_Delete(a), cJSON_Delete(b), cJSON_Delete(c);
}

static char *image_body(const char *url, const char *extra) {
  char *b = malloc(strlen(url) + 512);
  sprintf(
      b,
      "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": \"%s\"}}, "
      "{\"type\": \"text\", \"text\": \"What is this?\"}]}], \"max_tokens\": 6, \"temperature\": 0%s}",
      url, extra);
  return b;
}

/* The value of one metric sample line ("name value"). */
static double metric(const char *name) {
  resp r = http(g.port, "GET", "/metrics", NULL);
  char *p = strstr(r.body, name);
  double v = p ? strtod(p + strlen(name), NULL) : -1;
  free(r.body);
  return v;
}

/* An image as a data: URL; per-request min/max pixels change its token count, in either spelling. */
static void test_completion_image(void **state) {
  (void)state;
  NEED_SERVER();
  char *url = data_url("tests/data/images/jpeg_20x20.jpg", "image/jpeg"), *body = image_body(url, "");
  resp r;
  cJSON *o = completion(body, &r);
  int n_prompt;
  char *direct = direct_answer("tests/data/images/jpeg_20x20.jpg", "What is this?", 6, &n_prompt);
  assert_string_equal(answer_of(o), direct);
  assert_int_equal(jnum(o, "usage", "prompt_tokens"), n_prompt);
  /* 20x20 at the default min_pixels (65536) is 256x256: 64 pad tokens; capped at 1024 pixels: 32x32, 1 token */
  /* the same file as a file:// URL under the server's --allowed-local-media-path */
  char *local = malloc(strlen(url) + 1024);
  sprintf(local, "file://%s", tu_path("tests/data/images/jpeg_20x20.jpg"));
  char *b3 = image_body(local, "");
  resp r3;
  cJSON *o3 = completion(b3, &r3);
  assert_string_equal(answer_of(o3), direct);
  assert_int_equal(jnum(o3, "usage", "prompt_tokens"), n_prompt);
  cJSON_Delete(o3), free(r3.body), free(b3), free(local);
  /* the second time the same pixels came (a file this time): the encoder cache had them, the tower did not run */
  assert_true(metric("\nqvl_encoder_cache_hits_total ") >= 1);
  assert_true(metric("\nqvl_vision_images_total ") < metric("\nqvl_images_total "));
  const char *small[2] = {", \"min_pixels\": 1024, \"max_pixels\": 1024",
                          ", \"mm_processor_kwargs\": {\"min_pixels\": 1024, \"max_pixels\": 1024}"};
  for (int i = 0; i < 2; i++) {
    char *b2 = image_body(url, small[i]);
    resp r2;
    cJSON *o2 = completion(b2, &r2);
    assert_int_equal(jnum(o2, "usage", "prompt_tokens"), n_prompt - 63);
    cJSON_Delete(o2), free(r2.body), free(b2);
  }
  cJSON_Delete(o), free(r.body), free(direct), free(body), free(url);
}

/* SSE: every event is "data: <chunk>\n\n", the deltas add up to the plain answer, one finish_reason, the usage
 * chunk (choices []) only when asked, "data: [DONE]" last. */
static void check_stream(int include_usage, const char *extra, const char *want) {
  char body[512];
  snprintf(
      body, sizeof body,
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], \"max_tokens\": 12, \"temperature\": 0, "
      "\"stream\": true%s%s}",
      include_usage ? ", \"stream_options\": {\"include_usage\": true}" : "", extra);
  resp r = http(g.port, "POST", "/v1/chat/completions", body);
  char ct[128], rid[64];
  assert_int_equal(r.status, 200);
  assert_string_equal(header(&r, "content-type", ct, sizeof ct), "text/event-stream");
  header(&r, "x-request-id", rid, sizeof rid);
  char text[4096] = "";
  int n_events = 0, n_finish = 0, n_usage = 0, done = 0, completion_tokens = -1;
  for (char *ev = r.body, *next; *ev; ev = next) {
    char *end = strstr(ev, "\n\n");
    if (!end) fail_msg("event not ended by a blank line: \"%s\"", ev);
    *end = '\0', next = end + 2;
    if (strncmp(ev, "data: ", 6)) fail_msg("not a data line: \"%s\"", ev);
    assert_false(done); /* nothing after [DONE] */
    if (!strcmp(ev + 6, "[DONE]")) {
      done = 1;
      continue;
    }
    cJSON *o = parse_json(ev + 6);
    n_events++;
    assert_string_equal(jstr(o, "object", NULL), "chat.completion.chunk");
    assert_string_equal(jstr(o, "id", NULL), rid);
    const cJSON *ch = cJSON_GetObjectItem(o, "choices"), *u = cJSON_GetObjectItem(o, "usage");
    assert_true(cJSON_IsArray(ch));
    assert_int_equal(u != NULL, include_usage);
    if (cJSON_GetArraySize(ch) == 0) {
      assert_true(cJSON_IsObject(u));
      completion_tokens = (int)jnum(o, "usage", "completion_tokens"), n_usage++;
    } else {
      const cJSON *c0 = cJSON_GetArrayItem(ch, 0);
      const char *piece = jstr(c0, "delta", "content");
      if (n_events == 1) assert_string_equal(jstr(c0, "delta", "role"), "assistant");
      if (piece) strncat(text, piece, sizeof text - strlen(text) - 1);
      n_finish += jstr(c0, "finish_reason", NULL) != NULL;
    }
    cJSON_Delete(o);
  }
  assert_true(done);
  assert_int_equal(n_finish, 1);
  assert_int_equal(n_usage, include_usage);
  if (include_usage) assert_true(completion_tokens >= 1 && completion_tokens <= 12);
  assert_string_equal(text, want);
  free(r.body);
}

static void test_stream(void **state) {
  (void)state;
  NEED_SERVER();
  int n_prompt;
  char *direct = direct_answer(NULL, "Hello there", 12, &n_prompt);
  check_stream(1, "", direct);
  check_stream(0, "", direct);
  free(direct);
}

/* stop strings end the answer right before the first match, streamed or not; penalties change a repetitive
 * greedy answer and stay deterministic. */
static void test_stop_and_penalties(void **state) {
  (void)state;
  NEED_SERVER();
  int n_prompt;
  char *direct = direct_answer(NULL, "Hello there", 12, &n_prompt), stop[4] = "", body[512], extra[64];
  /* three ASCII letters from the answer's second third, at their first occurrence: the answer is cut mid-way */
  for (size_t i = strlen(direct) / 3; i + 3 <= strlen(direct) && !stop[0]; i++) {
    memcpy(stop, direct + i, 3);
    int ok = isalpha((unsigned char)stop[0]) && isalpha((unsigned char)stop[1]) && isalpha((unsigned char)stop[2]);
    if (!ok || strstr(direct, stop) != direct + i) stop[0] = '\0';
  }
  if (!stop[0]) fail_msg("no ASCII in the answer \"%s\"", direct);
  char want[512];
  snprintf(want, sizeof want, "%.*s", (int)(strstr(direct, stop) - direct), direct);
  printf("  stop \"%s\" -> \"%s\"\n", stop, want);
  snprintf(
      body, sizeof body,
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], \"max_tokens\": 12, \"temperature\": 0, "
      "\"stop\": [\"%s\", \"never-in-the-answer\"]}",
      stop);
  resp r;
  cJSON *o = completion(body, &r);
  assert_string_equal(answer_of(o), want);
  assert_string_equal(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "finish_reason", NULL), "stop");
  cJSON_Delete(o), free(r.body);
  snprintf(extra, sizeof extra, ", \"stop\": \"%s\"", stop);
  check_stream(1, extra, want);
  const char *pen =
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], \"max_tokens\": 12, "
      "\"temperature\": 0, \"repetition_penalty\": 1.5, \"frequency_penalty\": 1.0}";
  resp r1, r2;
  cJSON *a = completion(pen, &r1), *b = completion(pen, &r2);
  printf("  penalized \"%s\"\n", answer_of(a));
  assert_string_equal(answer_of(a), answer_of(b));
  assert_string_not_equal(answer_of(a), direct);
  cJSON_Delete(a), cJSON_Delete(b), free(r1.body), free(r2.body), free(direct);
}

/* Prometheus text format: "# HELP name ...", "# TYPE name kind", or "name{labels} value". */
static void test_metrics(void **state) {
  (void)state;
  NEED_SERVER();
  free(http(g.port, "GET", "/health", NULL).body);
  resp r = http(g.port, "GET", "/metrics", NULL);
  assert_int_equal(r.status, 200);
  int n_samples = 0, saw_200 = 0;
  double last_bucket = -1, hist_count = -1;
  for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
    char name[128], kind[32];
    if (!strncmp(line, "# HELP ", 7)) continue;
    if (!strncmp(line, "# TYPE ", 7)) {
      assert_int_equal(sscanf(line, "# TYPE %127s %31s", name, kind), 2);
      assert_true(!strcmp(kind, "counter") || !strcmp(kind, "gauge") || !strcmp(kind, "histogram"));
      continue;
    }
    char *sp = strrchr(line, ' '), *end;
    if (!sp) fail_msg("not a sample: \"%s\"", line);
    double v = strtod(sp + 1, &end);
    assert_true(*end == '\0' && isfinite(v) && v >= 0);
    size_t nl = strcspn(line, "{ ");
    for (size_t i = 0; i < nl; i++)
      if (!(line[i] == '_' || (line[i] >= 'a' && line[i] <= 'z') || (line[i] >= '0' && line[i] <= '9' && i)))
        fail_msg("bad metric name in \"%s\"", line);
    if (line[nl] == '{' && sp[-1] != '}') fail_msg("labels not closed: \"%s\"", line);
    if (!strncmp(line, "qvl_requests_total{code=\"200\"}", 30)) saw_200 = v > 0;
    if (!strncmp(line, "qvl_time_to_first_token_seconds_bucket", 38)) assert_true(v >= last_bucket), last_bucket = v;
    if (!strncmp(line, "qvl_time_to_first_token_seconds_count ", 38)) hist_count = v;
    n_samples++;
  }
  assert_true(n_samples >= 20 && saw_200);
  assert_true(hist_count >= 1 && hist_count == last_bucket); /* +Inf bucket == count */
  assert_true(metric("\nqvl_time_per_output_token_seconds_count ") >= 1);
  assert_true(metric("\nqvl_request_duration_seconds_count ") >= 1);
  assert_true(metric("\nqvl_request_duration_seconds_bucket{le=\"+Inf\"} ") >= 1);
  assert_true(metric("\nqvl_queue_time_seconds_count ") >= 1);
  assert_true(metric("\nqvl_stage_seconds_count{stage=\"preprocess\"} ") >= 1); /* the image requests */
  assert_true(metric("\nqvl_stage_seconds_count{stage=\"prefill\"} ") >= 1);
  assert_true(metric("\nqvl_stage_seconds_bucket{stage=\"decode\",le=\"+Inf\"} ") >= 1);
  assert_true(metric("\nqvl_images_total ") >= 1);
  assert_true(metric("\nqvl_generation_tokens_per_second ") >= 0);
  assert_int_equal(metric("\nqvl_queue_capacity "), 1);
  assert_true(metric("\nqvl_stage_seconds_count{stage=\"vision\"} ") >= 1);
  assert_true(metric("\nqvl_steps_total ") >= 1 && metric("\nqvl_step_tokens_total ") >= metric("\nqvl_steps_total "));
  assert_true(metric("\nqvl_stage_seconds_count{stage=\"step\"} ") == metric("\nqvl_steps_total ")); /* each one */
  assert_true(metric("\nqvl_stage_seconds_count{stage=\"gap\"} ") >= 1); /* between a request's decode steps */
  assert_int_equal(metric("\nqvl_kv_cache_blocks_total "), 16384 / 16);
  /* once the cancelled requests of test_queue_and_cancel are gone, the blocks in use are the ones the prefix cache
   * keeps (a request the scheduler admitted just before its client's hang-up was seen leaves at the next step) */
  double used = -1, kept = -2;
  for (int i = 0; i < 400 && used != kept; i++, usleep(10000))
    used = metric("\nqvl_kv_cache_blocks_used "), kept = metric("\nqvl_prefix_cache_blocks ");
  printf("  %.0f KV blocks in use, %.0f kept by the prefix cache\n", used, kept);
  assert_true(used == kept && kept >= 0);
  assert_true(metric("\nqvl_encoder_cache_entries ") >= 1);
  free(r.body);
}

/* The line of the server's log that carries request id rid, or "" (copied into out). */
static const char *log_line(const char *rid, char *out, size_t cap) {
  fflush(g.log);
  FILE *f = fopen(g.log_path, "r");
  char line[2048];
  out[0] = '\0';
  while (f && fgets(line, sizeof line, f))
    if (strstr(line, rid)) snprintf(out, cap, "%s", line);
  if (f) fclose(f);
  return out;
}

/* Every answer's x-request-id names its line in the log: route, status, seconds, then tokens or the error. */
static void test_request_log(void **state) {
  (void)state;
  NEED_SERVER();
  char rid[64], line[2048];
  resp r = http(g.port, "POST", "/v1/chat/completions",
                "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 3}");
  assert_int_equal(r.status, 200);
  printf("  %s", log_line(header(&r, "x-request-id", rid, sizeof rid), line, sizeof line));
  tu_assert_msg_has(line, "qvl serve: chatcmpl-", "POST /v1/chat/completions 200 ");
  tu_assert_msg_has(line, "prompt=", "gen=");
  free(r.body);
  r = http(g.port, "POST", "/v1/chat/completions", "{\"messages\": 3}");
  assert_int_equal(r.status, 400);
  printf("  %s", log_line(header(&r, "x-request-id", rid, sizeof rid), line, sizeof line));
  tu_assert_msg_has(line, " 400 ", "'messages' must be a non-empty list");
  free(r.body);
  r = http(g.port, "GET", "/health", NULL);
  printf("  %s", log_line(header(&r, "x-request-id", rid, sizeof rid), line, sizeof line));
  tu_assert_msg_has(line, "GET /health 200", NULL);
  free(r.body);
  r = http(g.port, "POST", "/v1/chat/completions",
           "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 3, \"stream\": true}");
  assert_int_equal(r.status, 200);
  header(&r, "x-request-id", rid, sizeof rid);
  for (int i = 0; i < 200 && !log_line(rid, line, sizeof line)[0]; i++) usleep(10000); /* logged as the stream ends */
  printf("  %s", line);
  tu_assert_msg_has(line, "200 stream", "finish=");
  free(r.body);
}

typedef struct bad_case {
  const char *method, *path, *body;
  int status;
  const char *needle, *param;
} bad_case;

/* Each bad request gets its status and an OpenAI error object saying why; the server keeps serving. */
static void test_errors(void **state) {
  (void)state;
  NEED_SERVER();
  static const char *msg = "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]";
  static const char *local =
      "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", "
      "\"image_url\": \"file://%s\"}]}]}";
  char b[16][512];
  size_t n_jpeg; /* a JPEG cut short after a whole header: only the scheduler's preprocessing finds it broken */
  uint8_t *jpeg = slurp(tu_path("tests/data/images/jpeg_420_640x480.jpg"), &n_jpeg);
  char *enc = b64(jpeg, 20000), *cut = malloc(strlen(enc) + 256);
  sprintf(cut,
          "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": "
          "\"data:image/jpeg;base64,%s\"}]}]}",
          enc);
  const bad_case cases[] = {
      {"POST", "/v1/chat/completions", "{\"messages\": [", 400, "not valid JSON", NULL},
      {"POST", "/v1/chat/completions", "[1, 2]", 400, "must be a JSON object", NULL},
      {"POST", "/v1/chat/completions", "{\"messages\": []} {}", 400, "more after its JSON", NULL},
      {"POST", "/v1/chat/completions", "", 400, "not valid JSON", NULL},
      {"POST", "/v1/chat/completions", "{}", 400, "'messages' must be a non-empty list", "messages"},
      {"POST", "/v1/chat/completions", (sprintf(b[0], "{%s, \"temperature\": \"hot\"}", msg), b[0]), 400,
       "must be a number", "temperature"},
      {"POST", "/v1/chat/completions", (sprintf(b[1], "{%s, \"max_tokens\": 0}", msg), b[1]), 400, "max_tokens",
       "max_tokens"},
      {"POST", "/v1/chat/completions", (sprintf(b[2], "{%s, \"top_p\": 1.5}", msg), b[2]), 400, "top_p", "top_p"},
      {"POST", "/v1/chat/completions", (sprintf(b[3], "{%s, \"stream\": 1}", msg), b[3]), 400, "true or false",
       "stream"},
      {"POST", "/v1/chat/completions", (sprintf(b[4], "{%s, \"n\": 2}", msg), b[4]), 400, "'n'", "n"},
      {"POST", "/v1/chat/completions", (sprintf(b[7], "{%s, \"frequency_penalty\": 3}", msg), b[7]), 400,
       "frequency_penalty", "frequency_penalty"},
      {"POST", "/v1/chat/completions", (sprintf(b[8], "{%s, \"stop\": [\"\"]}", msg), b[8]), 400, "non-empty", "stop"},
      {"POST", "/v1/chat/completions", (sprintf(b[5], "{%s, \"model\": \"gpt-4o\"}", msg), b[5]), 404, "gpt-4o",
       "model"},
      {"POST", "/v1/chat/completions", (sprintf(b[6], "{%s, \"max_tokens\": 5000}", msg), b[6]), 400,
       "exceed the context", NULL},
      {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}", 400,
       "unknown role", "messages[0]"},
      {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 7}]}", 400,
       "string or a list", "messages[0].content"},
      {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"audio\"}]}]}",
       400, "not supported", "messages[0].content[0]"},
      {"POST", "/v1/chat/completions",
       "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": "
       "\"data:image/png;base64,iVBO*w0K\"}}]}]}",
       400, "base64", "messages[0].content[0]"},
      {"POST", "/v1/chat/completions",
       "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": "
       "\"data:image/png;base64,AAAAAAAA\"}}]}]}",
       400, "image 0", NULL},
      {"POST", "/v1/chat/completions", cut, 400, "image 0: corrupt or truncated JPEG", NULL},
      {"POST", "/v1/chat/completions",
       "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": "
       "\"https://example.com/cat.png\"}}]}]}",
       400, "does not fetch http(s) URLs", "messages[0].content[0]"},
      {"POST", "/v1/chat/completions",
       "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": "
       "\"file:///etc/passwd\"}]}]}",
       400, "not a file under --allowed-local-media-path", "messages[0].content[0]"},
      {"POST", "/v1/chat/completions",
       (sprintf(b[9], local, tu_path("tests/data/images/../tiny-qwen3_vl/config.json")), b[9]), 400, "not a file under",
       "messages[0].content[0]"},
      {"POST", "/v1/chat/completions", (sprintf(b[10], local, tu_path("tests/data/images/nope.jpg")), b[10]), 400,
       "not a file under", "messages[0].content[0]"},
      {"POST", "/v1/chat/completions", (sprintf(b[11], local, tu_path("tests/data/images")), b[11]), 400,
       "not a file under", "messages[0].content[0]"},
      {"POST", "/v1/chat/completions",
       "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": \"data:,\"}, "
       "{\"type\": \"image_url\", \"image_url\": \"data:,\"}, {\"type\": \"image_url\", \"image_url\": \"data:,\"}]}]}",
       400, "at most 2", "messages"},
      {"GET", "/v1/chat/completions", NULL, 405, "wants POST", NULL},
      {"DELETE", "/health", NULL, 405, "wants GET", NULL},
      {"GET", "/v2/nothing", NULL, 404, "no route", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const bad_case *c = &cases[i];
    resp r = http(g.port, c->method, c->path, c->body);
    char rid[64];
    printf("  %d %s\n", r.status, r.body);
    assert_int_equal(r.status, c->status);
    cJSON *o = parse_json(r.body);
    const cJSON *er = cJSON_GetObjectItem(o, "error");
    assert_true(cJSON_IsObject(er));
    tu_assert_msg_has(jstr(o, "error", "message"), c->needle, NULL);
    assert_non_null(jstr(o, "error", "type"));
    assert_non_null(cJSON_GetObjectItem(er, "param"));
    assert_non_null(cJSON_GetObjectItem(er, "code"));
    if (c->param) assert_string_equal(jstr(o, "error", "param"), c->param);
    assert_string_equal(jstr(o, "id", NULL), header(&r, "x-request-id", rid, sizeof rid));
    cJSON_Delete(o), free(r.body);
  }
  free(jpeg), free(enc), free(cut);
  /* 413: announced by Content-Length, and sent chunked with no length */
  size_t big = MAX_BODY + 100;
  char *huge = malloc(big + 1);
  memset(huge, ' ', big), huge[big] = '\0';
  resp r = http(g.port, "POST", "/v1/chat/completions", huge);
  assert_int_equal(r.status, 413);
  tu_assert_msg_has(r.body, "exceeds", "body_too_large");
  free(r.body);
  int fd = connect_to(g.port);
  const char *head =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
  send_all(fd, head, strlen(head));
  for (size_t off = 0; off < big; off += 65536) {
    char ch[16];
    size_t n = big - off < 65536 ? big - off : 65536;
    sprintf(ch, "%zx\r\n", n);
    send_all(fd, ch, strlen(ch)), send_all(fd, huge + off, n), send_all(fd, "\r\n", 2);
  }
  send_all(fd, "0\r\n\r\n", 5);
  read_response(fd, &r);
  assert_int_equal(r.status, 413);
  free(r.body), free(huge);
  r = http(g.port, "GET", "/health", NULL);
  assert_int_equal(r.status, 200);
  free(r.body);
}

static int wait_metric(const char *name, double want) {
  for (int i = 0; i < 400; i++) {
    if (metric(name) == want) return 1;
    usleep(10000);
  }
  return 0;
}

/* One runs, one waits (max_queue 1), the next gets 503; clients that hang up (mid-stream, and while queued)
 * cancel their work: the worker is idle again long before 4000 tokens could have been generated. */
static void test_queue_and_cancel(void **state) {
  (void)state;
  NEED_SERVER();
  const char *longreq =
      "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 4000, "
      "\"temperature\": 0, \"stream\": %s}";
  char b1[256], b2[256];
  snprintf(b1, sizeof b1, longreq, "true"), snprintf(b2, sizeof b2, longreq, "false");
  double t0 = metric("\nqvl_generation_tokens_total ");
  int a = connect_to(g.port);
  send_request(a, "POST", "/v1/chat/completions", b1, strlen(b1));
  char first[256];
  assert_true(recv(a, first, sizeof first - 1, 0) > 0); /* the stream started: headers and the first chunk */
  assert_true(wait_metric("\nqvl_requests_running ", 1));
  int b = connect_to(g.port);
  send_request(b, "POST", "/v1/chat/completions", b2, strlen(b2));
  assert_true(wait_metric("\nqvl_requests_waiting ", 1));
  resp r = http(g.port, "POST", "/v1/chat/completions", b2);
  assert_int_equal(r.status, 503);
  tu_assert_msg_has(r.body, "queue_full", "already waiting");
  free(r.body);
  double before = metric("\nqvl_requests_total{code=\"503\"} ");
  assert_true(before >= 1);
  close(b), close(a);
  assert_true(wait_metric("\nqvl_requests_waiting ", 0));
  assert_true(wait_metric("\nqvl_requests_running ", 0));
  double made = metric("\nqvl_generation_tokens_total ") - t0;
  printf("  %.0f tokens generated before the cancel\n", made);
  assert_true(made < 4000);
  r = http(g.port, "GET", "/health", NULL);
  assert_int_equal(r.status, 200);
  free(r.body);
}

/* `qvl serve` as a child process: it prints its port, answers, and exits 0 on SIGTERM. */
static void test_serve_command(void **state) {
  (void)state;
  NEED_SERVER();
  const char *dir = tu_tmpdir();
  char log[600];
  snprintf(log, sizeof log, "%s/log", dir);
  pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(log, "w", stderr) || chdir(tu_path(""))) _exit(127);
    execl(getenv("QVL_BINARY"), "qvl", "serve", "--model", MODEL, "--dummy", "--cpu", "--tokenizer", TOKENIZER,
          "--port", "0", "--served-model-name", "child", (char *)NULL);
    _exit(127);
  }
  int port = 0;
  char text[1024] = "";
  for (int i = 0; i < 1000 && !port; i++) {
    usleep(10000);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f) fclose(f);
    const char *p = strstr(text, "listening on http://127.0.0.1:");
    if (p) port = atoi(p + 30);
  }
  if (!port) {
    kill(pid, SIGKILL), waitpid(pid, NULL, 0);
    fail_msg("qvl serve did not start: %s", text);
  }
  resp r = http(port, "POST", "/v1/chat/completions",
                "{\"model\": \"child\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], "
                "\"max_tokens\": 12, \"temperature\": 0}");
  assert_int_equal(r.status, 200);
  cJSON *o = parse_json(r.body);
  int n_prompt;
  char *direct = direct_answer(NULL, "Hello there", 12, &n_prompt);
  assert_string_equal(answer_of(o), direct);
  cJSON_Delete(o), free(r.body), free(direct);
  int st;
  kill(pid, SIGTERM);
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  tu_rmtree(dir);
}

/* The text of an SSE answer, or NULL when it is not one ending in [DONE]; no cmocka calls (runs on threads). */
static char *sse_text(char *body) {
  char *text = calloc(1, 1), *done = strstr(body, "data: [DONE]\n\n");
  if (!done || done[14]) return free(text), NULL;
  for (char *ev = strstr(body, "data: {"); ev && ev < done; ev = strstr(ev + 1, "data: {")) {
    char *end = strstr(ev, "\n\n");
    *end = '\0';
    cJSON *o = cJSON_Parse(ev + 6);
    const char *piece = o ? jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "delta", "content") : NULL;
    if (piece) {
      text = realloc(text, strlen(text) + strlen(piece) + 1);
      strcat(text, piece);
    }
    cJSON_Delete(o);
    *end = '\n';
  }
  return text;
}

typedef struct client {
  pthread_t th;
  int port, n, n_ok;
  const char *want;
} client;

/* Several requests, streamed and not, each checked against the greedy answer. */
static void *client_main(void *arg) {
  client *cl = arg;
  for (int i = 0; i < cl->n; i++) {
    char body[256];
    snprintf(body, sizeof body,
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], \"max_tokens\": 12, "
             "\"temperature\": 0, \"stream\": %s}",
             i % 2 ? "true" : "false");
    resp r = http(cl->port, "POST", "/v1/chat/completions", body);
    char *text = NULL;
    if (r.status == 200 && i % 2) text = sse_text(r.body);
    if (r.status == 200 && !(i % 2)) {
      cJSON *o = cJSON_Parse(r.body);
      const char *a = o ? answer_of(o) : NULL;
      text = a ? strdup(a) : NULL;
      cJSON_Delete(o);
    }
    cl->n_ok += text && !strcmp(text, cl->want);
    free(text), free(r.body);
  }
  return NULL;
}

/* 8 clients at once against a server with room in its queue: every answer 200 and the greedy text. */
static void test_concurrent_clients(void **state) {
  (void)state;
  NEED_SERVER();
  qvl_engine *e = open_engine();
  qvl_tokenizer *t = open_tok();
  qvl_server *s = NULL;
  qvl_server_params p = {.port = 0, .model = "tiny", .kv_tokens = 16384};
  char err[256];
  if (qvl_server_start(&s, e, t, &p, err, sizeof err)) fail_msg("%s", err);
  int n_prompt;
  char *want = direct_answer(NULL, "Hello there", 12, &n_prompt);
  client cl[8];
  for (int i = 0; i < 8; i++) {
    cl[i] = (client){.port = qvl_server_port(s), .n = 4, .want = want};
    assert_int_equal(pthread_create(&cl[i].th, NULL, client_main, &cl[i]), 0);
  }
  int ok = 0;
  for (int i = 0; i < 8; i++) pthread_join(cl[i].th, NULL), ok += cl[i].n_ok;
  assert_int_equal(ok, 32);
  free(want);
  qvl_server_stop(s);
  qvl_tokenizer_close(t);
  qvl_engine_close(e);
}

/* The Python standard-library client (tests/server_client.py), when there is a python3. */
static void test_python_client(void **state) {
  (void)state;
  NEED_SERVER();
  if (system("command -v python3 >/dev/null 2>&1")) {
    printf("  skipped: no python3\n");
    return;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "python3 '%s' %d", tu_path("tests/server_client.py"), g.port);
  int st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_health_models),      cmocka_unit_test(test_completion_text),
      cmocka_unit_test(test_completion_image),   cmocka_unit_test(test_stream),
      cmocka_unit_test(test_stop_and_penalties), cmocka_unit_test(test_errors),
      cmocka_unit_test(test_queue_and_cancel),   cmocka_unit_test(test_metrics),
      cmocka_unit_test(test_serve_command),      cmocka_unit_test(test_python_client),
      cmocka_unit_test(test_request_log),
      cmocka_unit_test(test_concurrent_clients),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
