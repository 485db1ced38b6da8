/* qvl logits: the prompt's last-position logits for a side-by-side check against another implementation.
 *   qvl logits --model DIR [--dummy] --in IN.safetensors -o OUT.safetensors
 * IN holds input_ids [n] (integers) and, for images, image_grid_thw [k, 3] and pixel_values [rows, 3*T*P*P];
 * OUT gets last_logits [vocab] f32 (bench/lm_agree.py writes IN and reads OUT). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "io/safetensors.h"
#include "qvl_internal.h"

typedef struct logits_in {
  int32_t *ids, grid[3 * 64];
  int n, n_img;
  float *pixels;
} logits_in;

static int read_in(logits_in *in, const char *path) {
  qvl_err err = {0};
  st_model *m = NULL;
  int rc = st_open(&m, path, &err);
  const st_tensor *ids = m ? st_find(m, "input_ids") : NULL, *g = m ? st_find(m, "image_grid_thw") : NULL;
  const st_tensor *px = m ? st_find(m, "pixel_values") : NULL;
  if (!rc && (!ids || ids->numel < 1 || ids->numel > (1 << 20) || (g && (g->numel % 3 || g->numel > 3 * 64 || !px))))
    rc = qvl_fail(&err, QVL_ERR_FORMAT, "%s: needs input_ids [n] (and image_grid_thw [k,3] with pixel_values)", path);
  int64_t *tmp = rc ? NULL : malloc((size_t)ids->numel * sizeof(int64_t)), g64[3 * 64];
  if (!rc && !(rc = st_to_i64(ids, tmp, &err))) {
    in->n = (int)ids->numel;
    in->ids = malloc((size_t)in->n * sizeof(int32_t));
    for (int i = 0; i < in->n; i++) in->ids[i] = (int32_t)tmp[i];
  }
  if (!rc && g && !(rc = st_to_i64(g, g64, &err))) {
    in->n_img = (int)(g->numel / 3);
    for (int i = 0; i < 3 * in->n_img; i++) in->grid[i] = (int32_t)g64[i];
    in->pixels = malloc((size_t)px->numel * sizeof(float));
    rc = st_to_f32(px, in->pixels, &err);
  }
  if (rc) fprintf(stderr, "qvl logits: %s (%s)\n", err.msg, qvl_status_name(rc));
  free(tmp);
  st_close(m);
  return rc;
}

int cmd_logits(int argc, char **argv) {
  const char *in_path = NULL;
  char *rest[64];
  int n_rest = 0;
  rest[n_rest++] = argv[0];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--in") && i + 1 < argc) in_path = argv[++i];
    else if (n_rest < 63) rest[n_rest++] = argv[i];
  }
  app_opts o;
  if (app_parse(&o, n_rest, rest)) return 2;
  if (!in_path || !o.out) return fprintf(stderr, "usage: qvl logits --model DIR [--dummy] --in IN -o OUT\n"), 2;
  logits_in in = {0};
  if (read_in(&in, in_path)) return 1;
  o.engine.load = QVL_LOAD_ALL;
  qvl_engine *e = app_open(&o);
  int rc = !e;
  if (e) {
    int vocab = qvl_engine_config(e)->text.vocab;
    float *logits = malloc((size_t)in.n * vocab * sizeof(float));
    rc = qvl_engine_prefill(e, in.ids, in.n, in.grid, in.n_img, in.pixels, logits, NULL, NULL);
    if (rc) fprintf(stderr, "qvl logits: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
    st_entry ent = {.name = "last_logits", .dtype = ST_F32, .ndim = 1, .data = logits + (size_t)(in.n - 1) * vocab};
    ent.shape[0] = vocab;
    qvl_err err = {0};
    if (!rc && (rc = st_write(o.out, &ent, 1, NULL, NULL, &err))) fprintf(stderr, "qvl logits: %s\n", err.msg);
    free(logits);
  }
  qvl_engine_close(e);
  free(in.ids), free(in.pixels);
  return rc ? 1 : 0;
}
