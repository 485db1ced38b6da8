#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps.h"

static int parse_grid(app_opts *o, const char *s) {
  int t, h, w;
  char tail;
  if (o->n_grids >= 64 || sscanf(s, "%dx%dx%d%c", &t, &h, &w, &tail) != 3 || t < 1 || h < 1 || w < 1) {
    fprintf(stderr, "qvl: --grid wants TxHxW in patches (e.g. 1x32x32), at most 64 of them; got \"%s\"\n", s);
    return 1;
  }
  o->grids[3 * o->n_grids] = t, o->grids[3 * o->n_grids + 1] = h, o->grids[3 * o->n_grids + 2] = w;
  o->n_grids++;
  return 0;
}

int app_parse(app_opts *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->engine = qvl_engine_default_params();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = !strcmp(a, "--model") || !strcmp(a, "-o") || !strcmp(a, "--pixels") || !strcmp(a, "--grid") ||
                !strcmp(a, "--threads") || !strcmp(a, "--shard-gb") || !strcmp(a, "--max-patches");
    if (takes && !v) {
      fprintf(stderr, "qvl: %s needs a value\n", a);
      return 1;
    }
    if (!strcmp(a, "--model")) o->engine.model_dir = v;
    else if (!strcmp(a, "-o")) o->out = v;
    else if (!strcmp(a, "--pixels")) o->pixels = v;
    else if (!strcmp(a, "--grid")) { if (parse_grid(o, v)) return 1; }
    else if (!strcmp(a, "--threads")) o->engine.n_threads = atoi(v);
    else if (!strcmp(a, "--shard-gb")) o->shard_gb = atof(v);
    else if (!strcmp(a, "--max-patches")) o->engine.max_patches = atoll(v); /* sizes the vision plan */
    else if (!strcmp(a, "--dummy")) o->engine.dummy = 1;
    else if (!strcmp(a, "--cpu")) o->engine.backend = QVL_BACKEND_CPU;
    else if (!strcmp(a, "--cuda")) o->engine.backend = QVL_BACKEND_CUDA;
    else {
      fprintf(stderr, "qvl: unknown option \"%s\"\n", a);
      return 1;
    }
    i += takes;
  }
  if (!o->engine.model_dir) {
    fprintf(stderr, "qvl: --model DIR is required\n");
    return 1;
  }
  return 0;
}

qvl_engine *app_open(const app_opts *o) {
  qvl_engine *e = NULL;
  int rc = qvl_engine_open(&e, &o->engine);
  if (rc) {
    fprintf(stderr, "qvl: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
    qvl_engine_close(e);
    return NULL;
  }
  return e;
}

double app_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double app_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n ? v[n / 2] : 0.0;
}
