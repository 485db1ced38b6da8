/* qvl bench lm: the language model alone on synthetic prompts (no images), greedy, one JSON line per case, medians
 * over --runs after one warm-up run (plans, allocations, graph captures):
 *   --prompt N   batch 1: time to first token (prefill of N tokens + the first token) and decode TPOT (median gap
 *                between tokens over --gen tokens), wall clock around qvl_generate_ids;
 *   --batch B    B prompts of --batch-prompt tokens decoded together by qvl_generate_batch: the median step time
 *                (gap between consecutive tokens of one request) and decode tokens/s = B / step time.
 * --graphs on|off|both: decode steps replayed as CUDA graphs or issued op by op (each case run for each). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "qvl_internal.h"

enum { MAX_MARKS = 4096 };

typedef struct marks {
  double t[MAX_MARKS];
  int n;
} marks;

static int mark(void *ud, int32_t id) {
  (void)id;
  marks *m = ud;
  if (m->n < MAX_MARKS) m->t[m->n++] = app_now_ms();
  return 0;
}

static int mark_first(void *ud, int req, int32_t id) { return req == 0 ? mark(ud, id) : 0; }

/* B synthetic prompts of n tokens (no image or video pads), request i shifted so that they differ. */
static int32_t *make_ids(const qvl_config *c, int n, int b) {
  int32_t *ids = malloc((size_t)n * b * sizeof(int32_t));
  for (int k = 0; ids && k < b; k++)
    for (int i = 0; i < n; i++) {
      int32_t v = (int32_t)(((i + 31u * k) * 7919u + 13u) % 150000u) % c->text.vocab;
      ids[k * n + i] = v == c->image_token_id || v == c->video_token_id ? 100 : v;
    }
  return ids;
}

/* The engine's KV pool sized for the case up front (so that generation does not reopen it), graphs set. */
static int set_graphs(qvl_engine *e, int64_t tokens, int on) {
  lm_model *m;
  int rc = qvl_engine_lm(e, (tokens + LM_BLOCK - 1) / LM_BLOCK, &m);
  if (!rc) lm_set_graphs(m, on);
  return rc;
}

/* One case: batch 1 over a prompt of `prompt` tokens (b == 0) or a batch of b; prints the medians. */
static int bench_case(qvl_engine *e, int prompt, int b, int gen, int runs, int graphs) {
  const qvl_config *c = qvl_engine_config(e);
  int n_req = b ? b : 1;
  int32_t *ids = make_ids(c, prompt, n_req);
  double *ttft = calloc((size_t)runs, sizeof(double)), *tpot = calloc((size_t)runs, sizeof(double));
  qvl_request *r = calloc((size_t)n_req, sizeof *r);
  marks *m = malloc(sizeof *m);
  int rc = ids && ttft && tpot && r && m ? set_graphs(e, (int64_t)n_req * (prompt + gen), graphs) : QVL_ERR_NOMEM;
  for (int i = 0; i < n_req && !rc; i++) {
    r[i].ids = ids + (size_t)i * prompt, r[i].n_ids = prompt, r[i].sampling = qvl_sampling_default();
    r[i].sampling.max_tokens = gen;
  }
  for (int k = -1; k < runs && !rc; k++) { /* run -1 warms up */
    m->n = 0;
    double t0 = app_now_ms();
    rc = b ? qvl_generate_batch(e, r, b, mark_first, m) : qvl_generate_ids(e, ids, prompt, NULL, &r[0].sampling, mark, m);
    if (rc || k < 0) continue;
    double *gaps = malloc((size_t)m->n * sizeof(double));
    for (int i = 1; gaps && i < m->n; i++) gaps[i - 1] = m->t[i] - m->t[i - 1];
    ttft[k] = m->t[0] - t0;
    tpot[k] = gaps ? app_median(gaps, m->n - 1) : 0;
    free(gaps);
  }
  if (rc) {
    fprintf(stderr, "qvl bench lm: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  } else {
    qvl_backend *be = qvl_engine_backend(e);
    double ft = app_median(ttft, runs), tp = app_median(tpot, runs);
    printf("{\"bench\": \"lm\", \"arch\": \"%s\", \"device\": \"%s\", \"batch\": %d, \"prompt_tokens\": %d, "
           "\"gen_tokens\": %d, \"graphs\": %s, \"ttft_ms\": %.3f, \"prefill_tokens_per_s\": %.0f, \"tpot_ms\": %.3f, "
           "\"decode_tokens_per_s\": %.1f, \"peak_mem_gib\": %.2f, \"runs\": %d}\n",
           c->arch_name, be->device, n_req, prompt, gen, graphs && be->graph_begin ? "true" : "false", ft,
           (double)n_req * prompt / ft * 1e3, tp, n_req * 1e3 / tp, be->mem_peak / (double)(1 << 30), runs);
    fflush(stdout);
  }
  free(ids), free(ttft), free(tpot), free(r), free(m);
  return rc;
}

/* "1,8,64" -> values (at most cap); returns the count, 0 on a malformed list. */
static int parse_list(const char *s, int *v, int cap) {
  int n = 0;
  for (const char *p = s; *p && n < cap;) {
    char *end;
    long x = strtol(p, &end, 10);
    if (end == p || x < 1 || x > 4096) return 0;
    v[n++] = (int)x;
    p = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') return 0;
  }
  return n;
}

int cmd_bench_lm(int argc, char **argv) {
  int prompts[16], n_prompts = 0, batches[16], n_batches = 0, gen = 64, runs = 5, batch_prompt = 128, g_lo = 1, g_hi = 1;
  char *rest[64];
  int n_rest = 0, bad = 0;
  rest[n_rest++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--prompt") && has && n_prompts < 16) prompts[n_prompts++] = atoi(argv[++i]);
    else if (!strcmp(a, "--batch") && has) bad |= !(n_batches = parse_list(argv[++i], batches, 16));
    else if (!strcmp(a, "--batch-prompt") && has) batch_prompt = atoi(argv[++i]);
    else if (!strcmp(a, "--gen") && has) gen = atoi(argv[++i]);
    else if (!strcmp(a, "--runs") && has) runs = atoi(argv[++i]);
    else if (!strcmp(a, "--graphs") && has) {
      const char *g = argv[++i];
      g_lo = strcmp(g, "on") != 0 ? 0 : 1, g_hi = strcmp(g, "off") != 0 ? 1 : 0;
      bad |= strcmp(g, "on") && strcmp(g, "off") && strcmp(g, "both");
    } else if (n_rest < 63) rest[n_rest++] = argv[i];
  }
  app_opts o;
  if (app_parse(&o, n_rest, rest)) return 2;
  if (bad || (!n_prompts && !n_batches) || gen < 2 || gen > MAX_MARKS || runs < 1 || batch_prompt < 1)
    return fprintf(stderr, "usage: qvl bench lm --model DIR [--dummy] [--prompt N]... [--batch B,B,...] "
                           "[--batch-prompt N] [--gen N (2..4096)] [--runs N] [--graphs on|off|both]\n"),
           2;
  o.engine.load = QVL_LOAD_ALL;
  qvl_engine *e = app_open(&o);
  if (!e) return 1;
  if (!qvl_engine_backend(e)->graph_begin) g_lo = g_hi = 0; /* nothing to compare */
  int rc = 0;
  for (int g = g_hi; g >= g_lo && !rc; g--) {
    for (int i = 0; i < n_prompts && !rc; i++) rc = bench_case(e, prompts[i], 0, gen, runs, g);
    for (int i = 0; i < n_batches && !rc; i++) rc = bench_case(e, batch_prompt, batches[i], gen, runs, g);
  }
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
