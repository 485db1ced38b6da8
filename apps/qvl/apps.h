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

/* prompt.c: a file's bytes (malloc'd; NULL when it cannot be read). */
char *app_slurp(const char *path, size_t *len);
/* The tokenizer: given (--tokenizer), else DIR/tokenizer.json, else the copy scripts/fetch-tokenizer.sh caches; with
 * DIR/generation_config.json's stop ids when there is one. NULL after printing why. */
qvl_tokenizer *app_open_tokenizer(const char *given, const char *dir);
/* Reads and preprocesses n image files in one batch; *batch NULL when n = 0. Nonzero after printing why. */
int app_load_images(qvl_engine *e, const char *const *paths, int n, qvl_image_batch **batch);
/* One user turn (the images of grids [n_img][3], then text) rendered with the model's chat template, generation
 * prompt added, pads expanded, and encoded: the ids the HF processor gives. *ids owned by t. Nonzero after printing. */
int app_user_turn(qvl_tokenizer *t, const char *arch, const int32_t *grids, int n_img, const char *text,
                  const int32_t **ids, size_t *n);

int cmd_info(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_encode_lm(int argc, char **argv); /* encode with --text or --jsonl */
int cmd_export(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_bench_tok(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bench_pre(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench_lm(int argc, char **argv);
int cmd_bench_attn(int argc, char **argv);
int cmd_bench_linear(int argc, char **argv);
int cmd_bench_e2e(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_batch(int argc, char **argv);

#endif
