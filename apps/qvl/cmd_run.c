/* qvl run: one chat turn end to end. Images (files) are preprocessed for the model, the prompt rendered with the
 * model's chat template and its <|image_pad|> runs expanded, the vision tower and the language model run, and
 * the answer streams to stdout as it is decoded. --verbose prints the stage times to stderr.
 *   qvl run --model DIR [--dummy] [--image FILE]... [--tokenizer FILE] [--max-tokens N] [--temperature T]
 *           [--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R] [--presence-penalty P]
 *           [--frequency-penalty F] [--seed S] [--stop STR]... [--verbose] "prompt"
 * --stop ends the answer before the first occurrence of STR (OpenAI's stop), which is not printed.
 * On a GPU the language model runs with first, plain CUDA kernels (issue 6 brings the fast ones). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps.h"

typedef struct run_opts {
  const char *images[16];
  int n_images;
  const char *stops[16];
  const char *tokenizer, *prompt;
  qvl_sampling s;
  int verbose;
} run_opts;

typedef struct stream {
  qvl_detok *d;
  qvl_stopper *stop;
  double t0, t_first, t_last;
  int n;
} stream;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Detokenized text through the stop strings to stdout; 1 once a stop string ends the answer. */
static int show(stream *st, const char *text, size_t len) {
  const char *out;
  size_t n;
  int hit = 0;
  if (qvl_stopper_push(st->stop, text, len, &out, &n, &hit) == QVL_OK && n) fwrite(out, 1, n, stdout), fflush(stdout);
  return hit;
}

static int on_token(void *ud, int32_t id) {
  stream *st = ud;
  const char *text;
  size_t len;
  st->t_last = now_s();
  if (st->n++ == 0) st->t_first = st->t_last;
  return qvl_detok_push(st->d, id, &text, &len) == QVL_OK && show(st, text, len);
}

/* Pulls run's own options out of argv; the rest goes to app_parse. */
static int split_args(run_opts *r, int argc, char **argv, char **rest, int *n_rest) {
  memset(r, 0, sizeof *r);
  r->s = qvl_sampling_default();
  rest[(*n_rest)++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--image") && v && r->n_images < 16) r->images[r->n_images++] = argv[++i];
    else if (!strcmp(a, "--tokenizer") && v) r->tokenizer = argv[++i];
    else if (!strcmp(a, "--max-tokens") && v) r->s.max_tokens = atoi(argv[++i]);
    else if (!strcmp(a, "--temperature") && v) r->s.temperature = (float)atof(argv[++i]);
    else if (!strcmp(a, "--top-k") && v) r->s.top_k = atoi(argv[++i]);
    else if (!strcmp(a, "--top-p") && v) r->s.top_p = (float)atof(argv[++i]);
    else if (!strcmp(a, "--min-p") && v) r->s.min_p = (float)atof(argv[++i]);
    else if (!strcmp(a, "--repetition-penalty") && v) r->s.repetition_penalty = (float)atof(argv[++i]);
    else if (!strcmp(a, "--presence-penalty") && v) r->s.presence_penalty = (float)atof(argv[++i]);
    else if (!strcmp(a, "--frequency-penalty") && v) r->s.frequency_penalty = (float)atof(argv[++i]);
    else if (!strcmp(a, "--stop") && v && r->s.n_stop_strings < 16) r->stops[r->s.n_stop_strings++] = argv[++i];
    else if (!strcmp(a, "--seed") && v) r->s.seed = strtoull(argv[++i], NULL, 0);
    else if (!strcmp(a, "--verbose")) r->verbose = 1;
    else if (a[0] != '-' && !r->prompt && (i == 1 || strcmp(argv[i - 1], "--model"))) r->prompt = a;
    else if (*n_rest < 63) rest[(*n_rest)++] = argv[i];
  }
  if (!r->prompt) return fprintf(stderr, "qvl run: needs a prompt (the last argument)\n"), 1;
  r->s.stop = r->stops;
  return 0;
}

int cmd_run(int argc, char **argv) {
  run_opts r;
  char *rest[64];
  int n_rest = 0;
  app_opts o;
  if (split_args(&r, argc, argv, rest, &n_rest) || app_parse(&o, n_rest, rest)) return 2;
  o.engine.load = QVL_LOAD_ALL;
  double t0 = now_s();
  qvl_engine *e = app_open(&o);
  if (!e) return 1;
  qvl_model_info info;
  qvl_engine_info(e, &info);
  double t_load = now_s();
  qvl_tokenizer *t = app_open_tokenizer(r.tokenizer, o.engine.model_dir);
  qvl_image_batch *batch = NULL;
  const int32_t *ids = NULL;
  size_t n = 0;
  stream st = {0};
  int rc = !t || app_load_images(e, r.images, r.n_images, &batch);
  const qvl_pixels *px = batch ? qvl_image_batch_pixels(batch) : NULL;
  double t_pre = now_s();
  if (!rc) rc = app_user_turn(t, info.arch, px ? px->grid_thw : NULL, px ? px->n_images : 0, r.prompt, &ids, &n);
  if (!rc && (rc = qvl_detok_open(&st.d, t, 1))) fprintf(stderr, "qvl run: cannot open the detokenizer\n");
  if (!rc && (rc = qvl_stopper_open(&st.stop, r.s.stop, r.s.n_stop_strings)))
    fprintf(stderr, "qvl run: --stop needs a non-empty string\n");
  if (!rc) {
    r.s.n_stop = qvl_tokenizer_stop_ids(t, &r.s.stop_ids);
    st.t0 = now_s();
    rc = qvl_generate_ids(e, ids, (int)n, px, &r.s, on_token, &st);
    if (rc) fprintf(stderr, "\nqvl run: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
    const char *tail;
    size_t len;
    if (!rc && qvl_detok_flush(st.d, &tail, &len) == QVL_OK) show(&st, tail, len);
    if (!rc && qvl_stopper_flush(st.stop, &tail, &len) == QVL_OK && len) fwrite(tail, 1, len, stdout);
    printf("\n");
  }
  if (!rc && r.verbose)
    fprintf(stderr,
            "qvl run: %s on %s; load %.2f s; read+preprocess %d image(s) %.1f ms; prompt %zu tokens; TTFT %.1f ms "
            "(vision + prefill); %d tokens, TPOT %.1f ms, %.1f tokens/s\n",
            info.arch, info.backend, t_load - t0, r.n_images, (t_pre - t_load) * 1e3, n, (st.t_first - st.t0) * 1e3,
            st.n, st.n > 1 ? (st.t_last - st.t_first) / (st.n - 1) * 1e3 : 0.0,
            st.n > 1 ? (st.n - 1) / (st.t_last - st.t_first) : 0.0);
  qvl_detok_close(st.d);
  qvl_stopper_close(st.stop);
  qvl_image_batch_free(batch);
  qvl_tokenizer_close(t);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
