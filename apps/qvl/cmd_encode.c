/* qvl encode: features as safetensors, in two modes.
 *
 * Vision tower only: pixel rows -> vision features ("features", "deepstack.K", "image_grid_thw").
 *   qvl encode --model DIR [--dummy] (--pixels FILE | --grid TxHxW...) -o OUT.safetensors
 * Pixel rows come from a safetensors file holding the image processor's output ("pixel_values" [N, 3*T*P*P],
 * "image_grid_thw" [n, 3]) or, with --grid, from the synthetic generator.
 *
 * Images + text -> the language model's hidden states, all inputs in one batch (qvl_encode_prompts; cmd_encode_lm.c):
 *   qvl encode --model DIR [--dummy] [--tokenizer FILE] [--layer N|last] -o OUT.safetensors
 *              (--text TEXT [--image FILE]... | --jsonl FILE)
 * --text: one input per --image (that image, then TEXT), or one text-only input without --image. --jsonl: one input
 * per line, {"images": ["a.jpg", ...], "text": "..."} ("images" optional; paths from the working directory). Each
 * input is one user turn of the model's chat template with the generation prompt, as qvl run feeds the model.
 * --layer: transformers' output_hidden_states index: 0 the embeddings (vision rows in), N the residual stream
 * entering layer N (Qwen3-VL: DeepStack added), last (default) = text_layers, the final RMSNorm's output.
 * OUT holds, for input K (0-based, in input order) and its image J:
 *   input.K.input_ids              int32 [n]        token ids; the image's rows sit at its <|image_pad|> tokens
 *   input.K.hidden_states          f32   [n, H]     every token's hidden state at the layer
 *   input.K.image.J.grid_thw       int32 [3]        the image's grid in patches
 *   input.K.image.J.features       f32   [rows, H]  the vision tower's rows (one per pad token, in order)
 *   input.K.image.J.deepstack.D    f32   [rows, H]  Qwen3-VL's DeepStack features, D = 0..
 *   hidden_layer                   int32 [1]        the layer kept (last resolved)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "qvl_internal.h"

typedef struct pixel_input {
  int n;
  int32_t grid[64 * 3];
  float *rows;
} pixel_input;

static int read_pixels(pixel_input *in, const char *path, int k) {
  qvl_err err = {0};
  st_model *m = NULL;
  int rc = st_open(&m, path, &err);
  const st_tensor *pv = m ? st_find(m, "pixel_values") : NULL, *g = m ? st_find(m, "image_grid_thw") : NULL;
  if (!rc && (!pv || !g)) rc = qvl_fail(&err, QVL_ERR_MISSING, "%s: needs tensors pixel_values and image_grid_thw", path);
  if (!rc && (g->ndim != 2 || g->shape[1] != 3 || g->shape[0] < 1 || g->shape[0] > 64))
    rc = qvl_fail(&err, QVL_ERR_FORMAT, "%s: image_grid_thw must be [n <= 64, 3]", path);
  if (!rc && (pv->ndim != 2 || pv->shape[1] != k))
    rc = qvl_fail(&err, QVL_ERR_FORMAT, "%s: pixel_values must be [N, %d] for this model", path, k);
  int64_t grid64[64 * 3];
  if (!rc) rc = st_to_i64(g, grid64, &err);
  if (!rc) {
    in->n = (int)g->shape[0];
    for (int i = 0; i < 3 * in->n; i++) in->grid[i] = (int32_t)grid64[i];
    in->rows = malloc((size_t)pv->numel * sizeof(float));
    rc = in->rows ? st_to_f32(pv, in->rows, &err) : qvl_fail(&err, QVL_ERR_NOMEM, "out of memory");
  }
  if (rc) fprintf(stderr, "qvl encode: %s (%s)\n", err.msg, qvl_status_name(rc));
  st_close(m);
  return rc;
}

/* Synthetic rows for --grid: the generator stream "pixel_values:encode" (core/rng.h), values in [-1.6, 2.0]. */
static int synth_pixels(pixel_input *in, const app_opts *o, int k) {
  int64_t rows = 0;
  in->n = o->n_grids;
  memcpy(in->grid, o->grids, sizeof(int32_t) * 3 * (size_t)o->n_grids);
  for (int i = 0; i < in->n; i++) rows += (int64_t)in->grid[3 * i] * in->grid[3 * i + 1] * in->grid[3 * i + 2];
  in->rows = malloc((size_t)(rows * k) * sizeof(float));
  if (!in->rows) return fprintf(stderr, "qvl encode: out of memory for %lld pixel rows\n", (long long)rows), 1;
  qvl_counter_fill(in->rows, "pixel_values:encode", 0, rows * k, 0.2, 1.8);
  return 0;
}

static int write_features(const char *path, const qvl_features *f, const pixel_input *in) {
  st_entry e[2 + QVL_MAX_LIST];
  int n = qvl_features_count(f);
  for (int i = 0; i < n; i++) {
    int64_t rows, cols;
    e[i] = (st_entry){.name = qvl_features_name(f, i), .dtype = ST_F32, .ndim = 2};
    e[i].data = qvl_features_data(f, i, &rows, &cols);
    e[i].shape[0] = rows, e[i].shape[1] = cols;
  }
  e[n] = (st_entry){.name = "image_grid_thw", .dtype = ST_I32, .ndim = 2, .data = in->grid};
  e[n].shape[0] = in->n, e[n].shape[1] = 3;
  qvl_err err = {0};
  int rc = st_write(path, e, n + 1, NULL, NULL, &err);
  if (rc) fprintf(stderr, "qvl encode: %s (%s)\n", err.msg, qvl_status_name(rc));
  return rc;
}

/* One line per output: RMS and non-finite count, so a run at a new size shows at once whether it blew up. */
static void print_stats(const qvl_features *f) {
  for (int i = 0; i < qvl_features_count(f); i++) {
    int64_t rows, cols, bad = 0;
    const float *d = qvl_features_data(f, i, &rows, &cols);
    double ss = 0;
    for (int64_t j = 0; j < rows * cols; j++) {
      if (!isfinite(d[j])) bad++;
      else ss += (double)d[j] * d[j];
    }
    fprintf(stderr, "  %-12s [%lld, %lld] rms %.4g, %lld non-finite\n", qvl_features_name(f, i), (long long)rows,
            (long long)cols, sqrt(ss / (double)(rows * cols)), (long long)bad);
  }
}

int cmd_encode(int argc, char **argv) {
  app_opts o;
  pixel_input in = {0};
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--text") || !strcmp(argv[i], "--jsonl")) return cmd_encode_lm(argc, argv);
  if (app_parse(&o, argc, argv)) return 2;
  if (!o.out || (!o.pixels) == (!o.n_grids)) {
    fprintf(stderr, "qvl encode: needs -o OUT and exactly one of --pixels FILE or --grid TxHxW\n");
    return 2;
  }
  qvl_engine *e = app_open(&o);
  if (!e) return 1;
  const qvl_vision_config *v = &qvl_engine_config(e)->vision;
  int k = v->in_channels * v->temporal_patch * v->patch * v->patch;
  int rc = o.pixels ? read_pixels(&in, o.pixels, k) : synth_pixels(&in, &o, k);
  qvl_features *f = NULL;
  if (!rc) {
    qvl_pixels px = {in.n, in.grid, in.rows, NULL};
    rc = qvl_encode_pixels(e, &px, &f);
    if (rc) fprintf(stderr, "qvl encode: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  }
  if (!rc && !(rc = write_features(o.out, f, &in))) {
    int64_t rows, cols;
    qvl_features_data(f, 0, &rows, &cols);
    fprintf(stderr, "qvl encode: %d image(s) -> %lld x %lld features%s -> %s\n", in.n, (long long)rows,
            (long long)cols, qvl_features_count(f) > 1 ? " + DeepStack" : "", o.out);
    print_stats(f);
  }
  qvl_features_free(f);
  free(in.rows);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
