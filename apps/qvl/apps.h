/* apps.h - the subcommands of the qvl tool and their shared option parsing. */
#ifndef QVL_APPS_H
#define QVL_APPS_H

#include "qvl.h"

typedef struct app_opts {
  qvl_engine_params engine;
  const char *out;       /* -o */
  const char *pixels;    /* --pixels */
  int n_grids;
  int32_t grids[64 * 3]; /* --grid TxHxW, repeatable */
  double shard_gb;       /* --shard-gb */
} app_opts;

/* Parses the options shared by every subcommand; prints the problem and returns nonzero on error. */
int app_parse(app_opts *o, int argc, char **argv);
/* Monotonic wall clock in milliseconds, and the median of n values (sorts v), for the benchmarks. */
double app_now_ms(void);
double app_median(double *v, int n);

/* Opens the engine, printing qvl_errmsg on failure (and closing it). */
qvl_engine *app_open(const app_opts *o);

int cmd_info(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_bench_tok(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bench_pre(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench_lm(int argc, char **argv);
int cmd_bench_attn(int argc, char **argv);
int cmd_bench_e2e(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_batch(int argc, char **argv);

#endif
