/* testutil.h - small helpers shared by the cmocka suites. Include after <cmocka.h>'s prerequisites. */
#ifndef QVL_TESTUTIL_H
#define QVL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "qvl.h"

/* A golden file's integer tensor `name` as int64 values (malloc'd, *n of them): fails the test, naming fixture fx,
 * when it is missing, unless optional (then NULL and *n = 0). */
int64_t *tu_golden_ints(const st_model *g, const char *fx, const char *name, int optional, int64_t *n);
/* $QVL_SOURCE_DIR/rel (set by ctest); the string lives until the test program exits. */
const char *tu_path(const char *rel);
/* A fresh empty directory under $TMPDIR (or /tmp); removed by tu_rmtree. */
const char *tu_tmpdir(void);
void tu_rmtree(const char *dir);
void tu_write_file(const char *path, const void *data, size_t len);
/* A GPU test's pair: the CPU backend and the CUDA backend on device 0, both reporting into err; -1, having said why
 * on stderr, when either cannot be made (a CUDA build only). tu_backend_pair_free destroys what was made. */
int tu_backend_pair(qvl_backend **cpu, qvl_backend **gpu, qvl_err *err);
void tu_backend_pair_free(qvl_backend *cpu, qvl_backend *gpu);
/* ||a - ref||_2 / ||ref||_2 in double. */
double tu_rel_l2(const float *a, const float *ref, size_t n);
double tu_max_abs_diff(const float *a, const float *b, size_t n);
/* Fills with NaN so an element a kernel forgot to write fails every comparison. */
void tu_poison(float *p, size_t n);
/* Seeded uniform floats in [lo, hi); a fresh seed per run unless QVL_TEST_SEED is set (printed). */
uint64_t tu_seed(void);
void tu_uniform(float *p, size_t n, float lo, float hi, uint64_t *state);
/* Runs `$QVL_BINARY ARGS` from the source tree, capturing stdout+stderr into out (cap bytes, NUL-terminated);
 * returns the exit status (-1 on a signal). */
int tu_run_qvl(char *out, size_t cap, const char *args);
/* The real Qwen tokenizer (scripts/fetch-tokenizer.sh caches it); NULL after printing how to get it. */
qvl_tokenizer *tu_real_tokenizer(void);
/* An engine on a model of the source tree with synthetic weights; fails the test when it cannot open. */
qvl_engine *tu_open_dummy(const char *model_rel, qvl_backend_kind backend, qvl_load load);
/* A qvl_token_cb that keeps the first 64 tokens. */
typedef struct tu_tokens {
  int32_t ids[64];
  int n;
} tu_tokens;
int tu_collect(void *ud, int32_t id);
/* Asserts that msg contains every needle (each non-NULL), printing msg on failure. */
void tu_assert_msg_has(const char *msg, const char *needle1, const char *needle2);

#endif
