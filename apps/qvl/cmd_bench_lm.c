/* qvl bench lm: the language model alone on synthetic prompts (no images): time to first token (prefill of
 * --prompt tokens, then the first sampled token) and decode TPOT (median gap between tokens over --gen
 * greedy tokens), one JSON line per prompt length, median over --runs. Wall clock around
 * qvl_generate_ids; every token is downloaded and picked on the host, as in serving. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "qvl_internal.h"

typedef struct marks {
  double t[4096];
  int n;
} marks;

static int mark(void *ud, int32_t id) {
  (void)id;
  marks *m = ud;
  if (m->n < 4096) m->t[m->n++] = app_now_ms();
  return 0;
}

/* One prompt length: runs generations, prints the medians. */
static int bench_len(qvl_engine *e, int prompt, int gen, int runs) {
  const qvl_config *c = qvl_engine_config(e);
  int32_t *ids = malloc((size_t)prompt * sizeof(int32_t));
  double *ttft = calloc((size_t)runs, sizeof(double)), *tpot = calloc((size_t)runs, sizeof(double));
  for (int i = 0; i < prompt; i++) ids[i] = (int32_t)((i * 7919u + 13u) % 150000u) % c->text.vocab;
  for (int i = 0; i < prompt; i++)
    if (ids[i] == c->image_token_id || ids[i] == c->video_token_id) ids[i] = 100;
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = gen;
  int rc = 0;
  for (int r = -1; r < runs && !rc; r++) { /* run -1 warms up (plans, allocations) */
    marks m = {.n = 0};
    double t0 = app_now_ms();
    if ((rc = qvl_generate_ids(e, ids, prompt, NULL, &s, mark, &m))) break;
    if (r < 0) continue;
    double gaps[4096];
    for (int i = 1; i < m.n; i++) gaps[i - 1] = m.t[i] - m.t[i - 1];
    ttft[r] = m.t[0] - t0;
    tpot[r] = app_median(gaps, m.n - 1);
  }
  if (rc) {
    fprintf(stderr, "qvl bench lm: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  } else {
    qvl_backend *b = qvl_engine_backend(e);
    double ft = app_median(ttft, runs), tp = app_median(tpot, runs);
    printf("{\"bench\": \"lm\", \"arch\": \"%s\", \"device\": \"%s\", \"prompt_tokens\": %d, \"gen_tokens\": %d, "
           "\"ttft_ms\": %.3f, \"prefill_tokens_per_s\": %.0f, \"tpot_ms\": %.3f, \"decode_tokens_per_s\": %.1f, "
           "\"peak_mem_gib\": %.2f, \"runs\": %d}\n",
           c->arch_name, b->device, prompt, gen, ft, prompt / ft * 1e3, tp, 1e3 / tp, b->mem_peak / (double)(1 << 30),
           runs);
    fflush(stdout);
  }
  free(ids), free(ttft), free(tpot);
  return rc;
}

int cmd_bench_lm(int argc, char **argv) {
  int prompts[16], n_prompts = 0, gen = 64, runs = 5;
  char *rest[64];
  int n_rest = 0;
  rest[n_rest++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--prompt") && has && n_prompts < 16) prompts[n_prompts++] = atoi(argv[++i]);
    else if (!strcmp(a, "--gen") && has) gen = atoi(argv[++i]);
    else if (!strcmp(a, "--runs") && has) runs = atoi(argv[++i]);
    else if (n_rest < 63) rest[n_rest++] = argv[i];
  }
  app_opts o;
  if (app_parse(&o, n_rest, rest)) return 2;
  if (!n_prompts || gen < 2 || gen > 4096 || runs < 1)
    return fprintf(stderr, "usage: qvl bench lm --model DIR [--dummy] --prompt N ... [--gen N (2..4096)] [--runs N]\n"), 2;
  o.engine.load = QVL_LOAD_ALL;
  qvl_engine *e = app_open(&o);
  if (!e) return 1;
  int rc = 0;
  for (int i = 0; i < n_prompts && !rc; i++) rc = bench_len(e, prompts[i], gen, runs);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
