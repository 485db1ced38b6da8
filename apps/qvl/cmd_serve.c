/* qvl serve: the OpenAI-compatible HTTP server (src/server/, docs/SERVING.md) until SIGINT or SIGTERM; and
 * qvl batch, the same requests offline from a JSONL file (OpenAI's batch format).
 *   qvl serve --model DIR [--dummy] [--tokenizer FILE] [--host H] [--port P] [--served-model-name NAME]
 *             [--max-queue N] [--max-tokens N] [--max-images N] [--allowed-local-media-path DIR] [--quiet]
 *             [--kv-cache-tokens N] [--max-running N] [--step-tokens N] [--encoder-cache-mb N] [--no-prefix-cache]
 *             [--no-tune]
 * Prints "qvl serve: listening on http://H:P" on stderr once it accepts requests (P is the real port when
 * --port 0 asks for any free one), then one line per request ("qvl serve: <request id> POST /v1/... 200 ...")
 * unless --quiet. Before listening it chooses the GEMM kernels of every row count a vision pass or a step can have
 * (on a GPU: a few seconds; --no-tune leaves each to the first request that needs it).
 *   qvl batch IN.jsonl [-o OUT.jsonl] --model DIR [--dummy] [--tokenizer FILE] [--concurrency N] [--max-tokens N]
 *             [--max-images N] [--allowed-local-media-path DIR]
 * Writes one answer line per request line (stdout without -o), a progress line and a throughput summary on
 * stderr; exits 0 when every line was answered (failed lines included), 1 when the files fail. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "server/server.h"

typedef struct serve_opts {
  qvl_server_params p;
  const char *tokenizer;
  int quiet; /* no per-request log lines */
} serve_opts;

static int split_args(serve_opts *o, int argc, char **argv, char **rest, int *n_rest) {
  memset(o, 0, sizeof *o);
  o->p.port = 8000;
  rest[(*n_rest)++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--tokenizer") && v)
      o->tokenizer = argv[++i];
    else if (!strcmp(a, "--host") && v)
      o->p.host = argv[++i];
    else if (!strcmp(a, "--port") && v)
      o->p.port = atoi(argv[++i]);
    else if (!strcmp(a, "--served-model-name") && v)
      o->p.model = argv[++i];
    else if ((!strcmp(a, "--max-queue") || !strcmp(a, "--concurrency")) && v)
      o->p.max_queue = atoi(argv[++i]);
    else if (!strcmp(a, "--max-tokens") && v)
      o->p.max_tokens = atoi(argv[++i]);
    else if (!strcmp(a, "--max-images") && v)
      o->p.max_images = atoi(argv[++i]);
    else if (!strcmp(a, "--allowed-local-media-path") && v)
      o->p.media_dir = argv[++i];
    else if (!strcmp(a, "--quiet"))
      o->quiet = 1;
    else if (!strcmp(a, "--no-prefix-cache"))
      o->p.no_prefix_cache = 1;
    else if (!strcmp(a, "--no-tune"))
      o->p.no_tune = 1;
    else if (!strcmp(a, "--kv-cache-tokens") && v)
      o->p.kv_tokens = atoll(argv[++i]);
    else if (!strcmp(a, "--max-running") && v)
      o->p.max_running = atoi(argv[++i]);
    else if (!strcmp(a, "--step-tokens") && v)
      o->p.step_tokens = atoi(argv[++i]);
    else if (!strcmp(a, "--encoder-cache-mb") && v)
      o->p.encoder_cache_bytes = atoll(argv[++i]) > 0 ? atoll(argv[i]) << 20 : -1; /* 0: off */
    else if (*n_rest < 63)
      rest[(*n_rest)++] = argv[i];
  }
  if (o->p.port < 0 || o->p.port > 65535) return fprintf(stderr, "qvl serve: --port wants 0..65535\n"), 1;
  if (o->p.max_queue < 0 || o->p.max_running < 0 || o->p.step_tokens < 0 || o->p.kv_tokens < 0)
    return fprintf(stderr, "qvl: --max-queue, --concurrency, --max-running, --step-tokens and --kv-cache-tokens want "
                           "N >= 1\n"),
           1;
  return 0;
}

/* The model's directory name, as vLLM names a model by its path's last part. */
static const char *base_name(const char *dir) {
  static char b[256];
  snprintf(b, sizeof b, "%s", dir);
  size_t n = strlen(b);
  while (n > 1 && b[n - 1] == '/') b[--n] = '\0';
  const char *slash = strrchr(b, '/');
  return slash && slash[1] ? slash + 1 : b;
}

int cmd_serve(int argc, char **argv) {
  serve_opts so;
  char *rest[64], err[256];
  int n_rest = 0;
  app_opts o;
  if (split_args(&so, argc, argv, rest, &n_rest) || app_parse(&o, n_rest, rest)) return 2;
  o.engine.load = QVL_LOAD_ALL, o.engine.kv_cache_tokens = so.p.kv_tokens;
  if (!so.p.model) so.p.model = base_name(o.engine.model_dir);
  if (!so.quiet) so.p.log = stderr;
  /* SIGINT/SIGTERM are taken by sigwait below: blocked here, before any thread starts, so every thread inherits it */
  sigset_t sigs;
  sigemptyset(&sigs), sigaddset(&sigs, SIGINT), sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);
  qvl_engine *e = app_open(&o);
  qvl_tokenizer *t = e ? app_open_tokenizer(so.tokenizer, o.engine.model_dir) : NULL;
  qvl_server *s = NULL;
  int rc = !e || !t;
  if (!rc && (rc = qvl_server_start(&s, e, t, &so.p, err, sizeof err))) fprintf(stderr, "qvl serve: %s\n", err);
  if (!rc) {
    fprintf(stderr, "qvl serve: %s listening on http://%s:%d\n", so.p.model, so.p.host ? so.p.host : "127.0.0.1",
            qvl_server_port(s));
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "qvl serve: signal %d, stopping\n", sig);
  }
  qvl_server_stop(s);
  qvl_tokenizer_close(t);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}

/* The input file: the one argument app_parse would not take (not an option, nor an option's value). */
static const char *input_arg(char **rest, int *n_rest) {
  static const char *valued[] = {"--model", "-o", "--pixels", "--grid", "--threads", "--shard-gb"};
  for (int i = 1; i < *n_rest; i++) {
    int is_value = 0;
    for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) is_value |= !strcmp(rest[i - 1], valued[k]);
    if (rest[i][0] == '-' && rest[i][1]) continue;
    if (is_value) continue;
    const char *in = rest[i];
    memmove(rest + i, rest + i + 1, (size_t)(*n_rest - i - 1) * sizeof *rest);
    (*n_rest)--;
    return in;
  }
  return NULL;
}

int cmd_batch(int argc, char **argv) {
  serve_opts so;
  char *rest[64], err[256];
  int n_rest = 0;
  app_opts o;
  if (split_args(&so, argc, argv, rest, &n_rest)) return 2;
  const char *in_path = input_arg(rest, &n_rest);
  if (app_parse(&o, n_rest, rest)) return 2;
  if (!in_path) return fprintf(stderr, "qvl batch: needs the input file (IN.jsonl, or - for stdin)\n"), 2;
  o.engine.load = QVL_LOAD_ALL, o.engine.kv_cache_tokens = so.p.kv_tokens;
  if (!so.p.model) so.p.model = base_name(o.engine.model_dir);
  FILE *in = strcmp(in_path, "-") ? fopen(in_path, "rb") : stdin;
  FILE *out = o.out && strcmp(o.out, "-") ? fopen(o.out, "wb") : stdout;
  if (!in || !out) {
    fprintf(stderr, "qvl batch: cannot %s %s\n", in ? "write" : "read", in ? o.out : in_path);
    if (in && in != stdin) fclose(in);
    return 1;
  }
  qvl_engine *e = app_open(&o);
  qvl_tokenizer *t = e ? app_open_tokenizer(so.tokenizer, o.engine.model_dir) : NULL;
  qvl_batch_stats st;
  int rc = !e || !t;
  if (!rc && (rc = qvl_batch_run(e, t, &so.p, in, out, stderr, &st, err, sizeof err)))
    fprintf(stderr, "qvl batch: %s\n", err);
  if (in != stdin) fclose(in);
  if (out != stdout && fclose(out) && !rc) rc = 1, fprintf(stderr, "qvl batch: cannot write %s\n", o.out);
  qvl_tokenizer_close(t);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
