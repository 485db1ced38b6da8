/* qvl bench tok: single-thread encode throughput on a corpus and tokenizer.json load time, one JSON line.
 * The corpus is scripts/make_tokenizer_goldens.py's (documents separated by U+001E), the same file HF
 * tokenizers is timed on, so the two numbers compare; "tokens" must equal HF's count (docs/PERF.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) free(b), b = NULL;
  fclose(f);
  if (b) b[n] = 0, *len = (size_t)n;
  return b;
}

/* One pass over the documents; returns seconds, or -1 (message printed). */
static double encode_all(qvl_tokenizer *t, const char *corpus, size_t len, size_t *n_tokens, size_t *n_docs) {
  double t0 = now_s();
  *n_tokens = *n_docs = 0;
  for (size_t a = 0; a <= len;) {
    const char *sep = memchr(corpus + a, 0x1E, len - a);
    size_t b = sep ? (size_t)(sep - corpus) : len;
    const int32_t *ids;
    size_t n;
    if (qvl_tokenizer_encode(t, corpus + a, b - a, &ids, &n)) {
      fprintf(stderr, "qvl: document %zu: %s\n", *n_docs, qvl_tokenizer_errmsg(t));
      return -1;
    }
    *n_tokens += n, ++*n_docs;
    a = b + 1;
  }
  return now_s() - t0;
}

int cmd_bench_tok(int argc, char **argv) {
  const char *file = ".cache/tokenizer/tokenizer.json", *corpus_path = ".cache/tokenizer/bench_corpus.txt";
  int iters = 3;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--tokenizer") && v) file = argv[++i];
    else if (!strcmp(argv[i], "--corpus") && v) corpus_path = argv[++i];
    else if (!strcmp(argv[i], "--iters") && v) iters = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: qvl bench tok [--tokenizer FILE] [--corpus FILE] [--iters N]\n"
                      "  the corpus: python3 scripts/make_tokenizer_goldens.py --corpus-only\n");
      return 2;
    }
  }
  double load = 1e9;
  qvl_tokenizer *t = NULL;
  for (int k = 0; k < 5; k++) {
    qvl_tokenizer_close(t);
    double t0 = now_s();
    int rc = qvl_tokenizer_open(&t, file);
    double dt = now_s() - t0;
    if (rc) {
      fprintf(stderr, "qvl: %s (%s)\n", qvl_tokenizer_errmsg(t), qvl_status_name(rc));
      qvl_tokenizer_close(t);
      return 1;
    }
    if (dt < load) load = dt;
  }
  size_t len = 0, n_tokens = 0, n_docs = 0;
  char *corpus = slurp(corpus_path, &len);
  if (!corpus) {
    fprintf(stderr, "qvl: cannot read %s (python3 scripts/make_tokenizer_goldens.py --corpus-only writes it)\n",
            corpus_path);
    qvl_tokenizer_close(t);
    return 1;
  }
  double best = 1e9;
  for (int k = 0; k < (iters < 1 ? 1 : iters); k++) {
    double s = encode_all(t, corpus, len, &n_tokens, &n_docs);
    if (s < 0) return free(corpus), qvl_tokenizer_close(t), 1;
    if (s < best) best = s;
  }
  printf(
      "{\"bench\": \"tokenizer\", \"impl\": \"qvl\", \"threads\": 1, \"corpus_bytes\": %zu, \"corpus_docs\": %zu, "
      "\"tokens\": %zu, \"encode_s\": %.4f, \"encode_mb_s\": %.3f, \"load_ms\": %.2f}\n",
      len - (n_docs ? n_docs - 1 : 0), n_docs, n_tokens, best, (double)(len - (n_docs ? n_docs - 1 : 0)) / best / 1e6,
      load * 1e3);
  free(corpus);
  qvl_tokenizer_close(t);
  return 0;
}
