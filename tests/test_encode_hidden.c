/* Language-model hidden states (qvl_encode_prompts, lm_chunk.hidden) on the CPU backend with the tiny models, three
 * prompts (one image; text only; two images of different grids):
 *   - the final normed states times lm_head are the logits of qvl_engine_prefill (rel L2 <= 1e-5);
 *   - the batch of three gives each prompt what it gets alone (rel L2 <= 1e-6), at the last and a middle layer;
 *   - layer 0 is exactly the embedding rows with the call's vision features at the pad tokens; a middle layer differs
 *     from the last; a features-only step (which stops after the layer) equals the same layer taken in a step that runs
 *     every layer for another chunk's logits, with the output poisoned first;
 *   - bad layers, empty prompts, pads without images, images left over, ids outside the vocabulary, no prompts and a
 *     vision-only engine are refused with messages that say so;
 *   - qvl encode --text / --jsonl writes the tensors its header names, equal to the library's for the same ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "io/safetensors.h"
#include "models/mrope.h"
#include "qvl_internal.h"
#include "testutil.h"

static const char *MODELS[] = {"tests/data/tiny-qwen2_5_vl", "tests/data/tiny-qwen3_vl"};

enum { N_PROMPTS = 3, N_IMAGES = 3 };

/* Three prompts and their images in prompt order: 0 = text, image 0 (1x4x6), text; 1 = text only; 2 = text, image 1
 * (1x4x6), text, image 2 (1x4x4), text. */
typedef struct fixture {
  int32_t ids[N_PROMPTS][64], grid[3 * N_IMAGES];
  int n_ids[N_PROMPTS], n_img[N_PROMPTS], first_img[N_PROMPTS];
  int64_t first_row[N_IMAGES + 1], row_len; /* pixel rows */
  float *rows;
  qvl_prompt p[N_PROMPTS];
  qvl_pixels px;
} fixture;

static void put_text(fixture *f, int k, int n, int salt) {
  for (int i = 0; i < n; i++, f->n_ids[k]++) f->ids[k][f->n_ids[k]] = (f->n_ids[k] * 37 + 11 + salt * 101) % 1000;
}

static void put_image(fixture *f, const qvl_config *c, int k, int img) {
  int pads = f->grid[3 * img] * f->grid[3 * img + 1] * f->grid[3 * img + 2] / (c->vision.merge * c->vision.merge);
  f->ids[k][f->n_ids[k]++] = c->vision_start_token_id;
  for (int i = 0; i < pads; i++) f->ids[k][f->n_ids[k]++] = c->image_token_id;
  f->ids[k][f->n_ids[k]++] = c->vision_end_token_id;
  f->n_img[k]++;
}

static void make_fixture(fixture *f, const qvl_config *c, uint64_t *rng) {
  static const int32_t grids[3 * N_IMAGES] = {1, 4, 6, 1, 4, 6, 1, 4, 4};
  memset(f, 0, sizeof *f);
  memcpy(f->grid, grids, sizeof grids);
  f->row_len = (int64_t)c->vision.in_channels * c->vision.temporal_patch * c->vision.patch * c->vision.patch;
  for (int i = 0; i < N_IMAGES; i++) f->first_row[i + 1] = f->first_row[i] + grids[3 * i] * grids[3 * i + 1] * grids[3 * i + 2];
  f->rows = malloc((size_t)(f->first_row[N_IMAGES] * f->row_len) * sizeof(float));
  tu_uniform(f->rows, (size_t)(f->first_row[N_IMAGES] * f->row_len), -1, 1, rng);
  put_text(f, 0, 12, 0), put_image(f, c, 0, 0), put_text(f, 0, 5, 1);
  put_text(f, 1, 17, 2);
  f->first_img[2] = 1;
  put_text(f, 2, 3, 3), put_image(f, c, 2, 1), put_text(f, 2, 4, 4), put_image(f, c, 2, 2), put_text(f, 2, 2, 5);
  f->first_img[1] = 1;
  for (int k = 0; k < N_PROMPTS; k++) f->p[k] = (qvl_prompt){f->ids[k], f->n_ids[k], f->n_img[k]};
  f->px = (qvl_pixels){N_IMAGES, f->grid, f->rows, NULL};
}

/* Prompt k's images alone, as qvl_pixels (NULL without images). */
static const qvl_pixels *images_of(const fixture *f, int k, qvl_pixels *one) {
  int i = f->first_img[k];
  *one = (qvl_pixels){f->n_img[k], f->grid + 3 * i, f->rows + f->first_row[i] * f->row_len, NULL};
  return f->n_img[k] ? one : NULL;
}

static qvl_hidden *encode(qvl_engine *e, const qvl_prompt *p, int n, const qvl_pixels *px, int layer) {
  qvl_hidden *h = NULL;
  if (qvl_encode_prompts(e, p, n, px, layer, &h)) fail_msg("%s", qvl_errmsg(e));
  return h;
}

/* The embedding (lm_head = 0) or lm_head [vocab][hidden] as the synthetic generator makes it for the engine. */
static float *host_weight(const qvl_config *c, int lm_head) {
  qvl_weights w = {0};
  qvl_tensor_spec *specs = NULL;
  int n = 0;
  qvl_err err = {0};
  assert_int_equal(qvl_model_specs(c, 1, &w, &specs, &n, &err), QVL_OK);
  void **want = lm_head && !c->text.tie_embeddings ? &w.lm_head : &w.embed;
  float *out = NULL;
  for (int i = 0; i < n && !out; i++) {
    if (specs[i].slot != want) continue;
    double center, scale;
    out = malloc((size_t)specs[i].numel * sizeof(float));
    qvl_dummy_scale(specs[i].name, specs[i].shape, specs[i].ndim, &center, &scale);
    qvl_counter_fill(out, specs[i].name, 0, specs[i].numel, center, scale);
  }
  assert_non_null(out);
  free(specs);
  qvl_weights_free(&w, NULL);
  return out;
}

static void check_close(const char *what, const float *got, const float *ref, size_t n, double tol) {
  double rel = tu_rel_l2(got, ref, n);
  printf("  %-52s rel_l2 %.2e  max_abs %.2e\n", what, rel, tu_max_abs_diff(got, ref, n));
  if (!(rel <= tol)) fail_msg("%s: rel_l2 %.3e > %.0e", what, rel, tol);
}

/* (a) final normed states x lm_head = the logits of the generation path's prefill. */
static void check_logits(qvl_engine *e, const fixture *f, const qvl_hidden *h, const char *model) {
  const qvl_config *c = qvl_engine_config(e);
  int V = c->text.vocab, H = c->text.hidden;
  float *W = host_weight(c, 1);
  for (int k = 0; k < N_PROMPTS; k++) {
    int n = f->n_ids[k], first = f->first_img[k];
    int64_t rows, cols;
    const float *hs = qvl_hidden_data(h, k, &rows, &cols);
    assert_int_equal(rows, n), assert_int_equal(cols, H);
    float *ref = malloc((size_t)n * V * sizeof(float)), *got = malloc((size_t)n * V * sizeof(float));
    tu_poison(ref, (size_t)n * V);
    if (qvl_engine_prefill(e, f->ids[k], n, f->grid + 3 * first, f->n_img[k], f->rows + f->first_row[first] * f->row_len,
                           ref, NULL, NULL))
      fail_msg("%s", qvl_errmsg(e));
    for (int i = 0; i < n; i++)
      for (int v = 0; v < V; v++) {
        double s = 0;
        for (int d = 0; d < H; d++) s += (double)hs[(int64_t)i * H + d] * W[(int64_t)v * H + d];
        got[(int64_t)i * V + v] = (float)s;
      }
    char what[96];
    snprintf(what, sizeof what, "%s prompt %d: last x lm_head vs logits", model, k);
    check_close(what, got, ref, (size_t)n * V, 1e-5);
    free(ref), free(got);
  }
  free(W);
}

/* (b) the batch gives each prompt what it gets alone. */
static void check_alone(qvl_engine *e, const fixture *f, const qvl_hidden *batch, int layer, const char *model) {
  for (int k = 0; k < N_PROMPTS; k++) {
    qvl_pixels one;
    qvl_hidden *h = encode(e, &f->p[k], 1, images_of(f, k, &one), layer);
    int64_t rows, cols, rows_b, cols_b;
    const float *a = qvl_hidden_data(h, 0, &rows, &cols), *b = qvl_hidden_data(batch, k, &rows_b, &cols_b);
    assert_int_equal(rows, rows_b), assert_int_equal(cols, cols_b);
    char what[96];
    snprintf(what, sizeof what, "%s prompt %d layer %d: batch vs alone", model, k, qvl_hidden_layer(h));
    check_close(what, b, a, (size_t)(rows * cols), 1e-6);
    qvl_hidden_free(h);
  }
}

/* (c) layer 0 = embedding rows, the vision features at the pads (exactly). */
static void check_layer0(qvl_engine *e, const fixture *f, const qvl_hidden *h, const char *model) {
  const qvl_config *c = qvl_engine_config(e);
  int H = c->text.hidden;
  float *E = host_weight(c, 0);
  int64_t vrows, vcols, at = 0;
  const float *vis = qvl_features_data(qvl_hidden_features(h), 0, &vrows, &vcols);
  assert_int_equal(vcols, H);
  for (int k = 0; k < N_PROMPTS; k++) {
    const float *hs = qvl_hidden_data(h, k, NULL, NULL);
    for (int i = 0; i < f->n_ids[k]; i++) {
      int32_t id = f->ids[k][i];
      const float *want = id == c->image_token_id ? vis + H * at++ : E + (int64_t)id * H;
      if (memcmp(hs + (int64_t)i * H, want, (size_t)H * sizeof(float)))
        fail_msg("%s prompt %d token %d (id %d): layer 0 is not its %s row", model, k, i, id,
                 id == c->image_token_id ? "vision" : "embedding");
    }
  }
  assert_int_equal(at, vrows);
  printf("  %-52s exact (%lld vision rows)\n", model, (long long)vrows);
  free(E);
}

/* (c) a features-only step (stops after `layer`) equals the layer taken in a full step beside a logits chunk. */
static void check_full_step(qvl_engine *e, const fixture *f, const qvl_hidden *h, int layer, const char *model) {
  const qvl_config *c = qvl_engine_config(e);
  int H = c->text.hidden, n = f->n_ids[1], V = c->text.vocab;
  lm_model *m;
  if (qvl_engine_lm(e, 16, &m)) fail_msg("%s", qvl_errmsg(e));
  int32_t *pos = malloc((size_t)n * 3 * sizeof(int32_t));
  int64_t delta;
  assert_int_equal(qvl_rope_index(pos, &delta, f->ids[1], n, c, NULL, 0, NULL, qvl_engine_err(e)), QVL_OK);
  float *got = malloc((size_t)n * H * sizeof(float)), *logits = malloc((size_t)V * sizeof(float));
  tu_poison(got, (size_t)n * H);
  lm_seq a, b;
  assert_int_equal(lm_seq_init(&a, n), QVL_OK), assert_int_equal(lm_seq_init(&b, n), QVL_OK);
  lm_chunk step[2] = {{.seq = &a, .ids = f->ids[1], .n = n, .pos = pos, .hidden = got, .hidden_layer = layer},
                      {.seq = &b, .ids = f->ids[1], .n = n, .pos = pos, .logits = logits}};
  if (lm_step(m, step, 2, qvl_engine_err(e))) fail_msg("%s", qvl_errmsg(e));
  char what[96];
  snprintf(what, sizeof what, "%s layer %d: features-only vs full step", model, layer);
  check_close(what, got, qvl_hidden_data(h, 1, NULL, NULL), (size_t)n * H, 1e-6);
  lm_seq_free(m, &a), lm_seq_free(m, &b);
  free(pos), free(got), free(logits);
}

static void test_hidden_states(void **state) {
  (void)state;
  uint64_t rng = tu_seed();
  for (int mi = 0; mi < 2; mi++) {
    const char *model = MODELS[mi] + 11;
    qvl_engine *e = tu_open_dummy(MODELS[mi], QVL_BACKEND_CPU, QVL_LOAD_ALL);
    const qvl_config *c = qvl_engine_config(e);
    int L = c->text.layers, mid = L / 2;
    fixture f;
    make_fixture(&f, c, &rng);
    qvl_hidden *last = encode(e, f.p, N_PROMPTS, &f.px, QVL_LAYER_LAST);
    qvl_hidden *middle = encode(e, f.p, N_PROMPTS, &f.px, mid), *zero = encode(e, f.p, N_PROMPTS, &f.px, 0);
    assert_int_equal(qvl_hidden_layer(last), L), assert_int_equal(qvl_hidden_layer(middle), mid);
    assert_null(qvl_hidden_data(last, N_PROMPTS, NULL, NULL));
    assert_int_equal(qvl_features_count(qvl_hidden_features(last)), 1 + c->vision.n_deepstack);
    check_logits(e, &f, last, model);
    check_alone(e, &f, last, QVL_LAYER_LAST, model);
    check_alone(e, &f, middle, mid, model);
    check_layer0(e, &f, zero, model);
    check_full_step(e, &f, middle, mid, model);
    check_full_step(e, &f, last, L, model);
    for (int k = 0; k < N_PROMPTS; k++) { /* a middle layer is not the last one */
      int64_t n = f.n_ids[k] * (int64_t)c->text.hidden;
      double rel = tu_rel_l2(qvl_hidden_data(middle, k, NULL, NULL), qvl_hidden_data(last, k, NULL, NULL), (size_t)n);
      if (!(rel > 0.05)) fail_msg("%s prompt %d: layer %d vs last rel_l2 %.3e: not different", model, k, mid, rel);
    }
    qvl_hidden_free(last), qvl_hidden_free(middle), qvl_hidden_free(zero);
    free(f.rows);
    qvl_engine_close(e);
  }
}

/* ---- refusals ------------------------------------------------------------------------------------------------ */

static void refused(qvl_engine *e, const qvl_prompt *p, int n, const qvl_pixels *px, int layer, int status,
                    const char *needle1, const char *needle2) {
  qvl_hidden *h = (qvl_hidden *)1;
  assert_int_equal(qvl_encode_prompts(e, p, n, px, layer, &h), status);
  assert_null(h);
  printf("  refused: %s\n", qvl_errmsg(e));
  tu_assert_msg_has(qvl_errmsg(e), needle1, needle2);
}

static void test_refusals(void **state) {
  (void)state;
  uint64_t rng = tu_seed();
  qvl_engine *e = tu_open_dummy(MODELS[1], QVL_BACKEND_CPU, QVL_LOAD_ALL);
  fixture f;
  make_fixture(&f, qvl_engine_config(e), &rng);
  qvl_pixels broken = {1, NULL, NULL, NULL};
  refused(e, f.p, 3, &broken, 4, QVL_ERR_INVALID_ARG, "layer 4 is outside 0..3", NULL); /* before the images */
  refused(e, f.p, 3, &f.px, -2, QVL_ERR_INVALID_ARG, "layer -2", NULL);
  refused(e, f.p, 0, &f.px, 0, QVL_ERR_INVALID_ARG, "no prompts", NULL);
  qvl_prompt empty[2] = {f.p[1], {f.ids[1], 0, 0}};
  refused(e, empty, 2, NULL, 1, QVL_ERR_INVALID_ARG, "prompt 1 is empty", NULL);
  refused(e, f.p, 1, NULL, 1, QVL_ERR_INVALID_ARG, "prompt 0 wants 1 image(s)", "0 given");
  qvl_prompt no_count = {f.ids[0], f.n_ids[0], 0};
  qvl_pixels one;
  refused(e, &no_count, 1, images_of(&f, 0, &one), 1, QVL_ERR_INVALID_ARG, "prompt 0", "image pad run");
  refused(e, &f.p[1], 1, images_of(&f, 0, &one), 1, QVL_ERR_INVALID_ARG, "use 0 image(s), 1 given", NULL);
  int32_t bad[3] = {5, 100000, 7};
  qvl_prompt oov = {bad, 3, 0};
  refused(e, &oov, 1, NULL, 1, QVL_ERR_INVALID_ARG, "id 100000 outside the vocabulary", NULL);
  assert_int_equal(qvl_encode_prompts(e, f.p, 3, &f.px, 1, NULL), QVL_ERR_INVALID_ARG);
  qvl_engine_close(e);
  e = tu_open_dummy(MODELS[1], QVL_BACKEND_CPU, QVL_LOAD_VISION);
  refused(e, &f.p[1], 1, NULL, 1, QVL_ERR_INVALID_ARG, "QVL_LOAD_ALL", NULL);
  qvl_engine_close(e);
  free(f.rows);
}

/* ---- the command ----------------------------------------------------------------------------------------------- */

static float *tensor_f32(const st_model *m, const char *name, int64_t *numel) {
  const st_tensor *t = st_find(m, name);
  if (!t) fail_msg("the output has no %s", name);
  float *v = malloc((size_t)t->numel * sizeof(float));
  assert_int_equal(st_to_f32(t, v, NULL), QVL_OK);
  *numel = t->numel;
  return v;
}

static void test_cli(void **state) {
  (void)state;
  qvl_tokenizer *tok = tu_real_tokenizer();
  if (!tok) return; /* tu_real_tokenizer said why */
  qvl_tokenizer_close(tok);
  static const char *IMGS[2] = {"tests/data/images/png_rgb_448x448.png", "tests/data/images/jpeg_422_333x777.jpg"};
  const char *dir = tu_tmpdir();
  char args[2048], out[8192], path[512], jsonl[512];
  snprintf(args, sizeof args,
           "encode --model tests/data/tiny-qwen3_vl-vocab --dummy --cpu --layer 2 --text \"What is this?\" --image %s "
           "--image %s -o %s/h.st", IMGS[0], IMGS[1], dir);
  if (tu_run_qvl(out, sizeof out, args)) fail_msg("%s", out);
  printf("%s", out);
  snprintf(jsonl, sizeof jsonl, "%s/in.jsonl", dir);
  char lines[1024];
  int len = snprintf(lines, sizeof lines, "{\"images\": [\"%s\", \"%s\"], \"text\": \"Compare.\"}\n\n{\"text\": \"Hi\"}\n",
                     IMGS[0], IMGS[1]);
  tu_write_file(jsonl, lines, (size_t)len);
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen3_vl-vocab --dummy --cpu --jsonl %s -o %s/j.st", jsonl,
           dir);
  if (tu_run_qvl(out, sizeof out, args)) fail_msg("%s", out);
  printf("%s", out);
  /* --text: input k = image k + text; the library on the same ids and images gives the same states */
  qvl_engine *e = tu_open_dummy("tests/data/tiny-qwen3_vl-vocab", QVL_BACKEND_CPU, QVL_LOAD_ALL);
  const qvl_config *c = qvl_engine_config(e);
  qvl_image im[2];
  char *bytes[2];
  for (int i = 0; i < 2; i++) {
    memset(&im[i], 0, sizeof im[i]);
    FILE *fp = fopen(tu_path(IMGS[i]), "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    im[i].size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    bytes[i] = malloc(im[i].size);
    assert_int_equal(fread(bytes[i], 1, im[i].size, fp), im[i].size);
    fclose(fp);
    im[i].data = bytes[i];
  }
  qvl_image_batch *batch = NULL;
  if (qvl_preprocess_images(e, im, 2, NULL, &batch)) fail_msg("%s", qvl_errmsg(e));
  const qvl_pixels *px = qvl_image_batch_pixels(batch);
  snprintf(path, sizeof path, "%s/h.st", dir);
  st_model *m = NULL;
  qvl_err err = {0};
  if (st_open(&m, path, &err)) fail_msg("%s", err.msg);
  int64_t nl, layer64;
  assert_int_equal(st_to_i64(st_find(m, "hidden_layer"), &layer64, NULL), QVL_OK);
  assert_int_equal(layer64, 2);
  assert_null(st_find(m, "input.2.input_ids"));
  for (int k = 0; k < 2; k++) {
    char name[96];
    snprintf(name, sizeof name, "input.%d.input_ids", k);
    const st_tensor *ti = st_find(m, name);
    assert_non_null(ti);
    int64_t *ids64 = malloc((size_t)ti->numel * sizeof(int64_t)), n = ti->numel, pads = 0;
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    assert_int_equal(st_to_i64(ti, ids64, NULL), QVL_OK);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)ids64[i], pads += ids[i] == c->image_token_id;
    snprintf(name, sizeof name, "input.%d.hidden_states", k);
    float *hs = tensor_f32(m, name, &nl);
    assert_int_equal(nl, n * c->text.hidden);
    snprintf(name, sizeof name, "input.%d.image.0.features", k);
    float *feat = tensor_f32(m, name, &nl);
    assert_int_equal(nl, pads * c->text.hidden); /* one vision row per pad token */
    snprintf(name, sizeof name, "input.%d.image.0.deepstack.%d", k, c->vision.n_deepstack - 1);
    free(tensor_f32(m, name, &nl));
    assert_int_equal(nl, pads * c->text.hidden);
    qvl_pixels one = {1, px->grid_thw + 3 * k, px->rows, NULL};
    int64_t row_len, before = 0;
    qvl_image_batch_rows(batch, &row_len);
    for (int i = 0; i < k; i++) before += (int64_t)px->grid_thw[3 * i] * px->grid_thw[3 * i + 1] * px->grid_thw[3 * i + 2];
    one.rows = px->rows + before * row_len;
    qvl_prompt p = {ids, (int)n, 1};
    qvl_hidden *h = encode(e, &p, 1, &one, 2);
    snprintf(name, sizeof name, "qvl encode --text input %d vs library", k);
    check_close(name, hs, qvl_hidden_data(h, 0, NULL, NULL), (size_t)(n * c->text.hidden), 1e-6);
    check_close("  its image features", feat, qvl_features_data(qvl_hidden_features(h), 0, NULL, NULL),
                (size_t)(pads * c->text.hidden), 1e-6);
    qvl_hidden_free(h);
    free(ids64), free(ids), free(hs), free(feat);
  }
  st_close(m);
  /* --jsonl: input 0 has both images (image.1 present), input 1 none; layer last */
  snprintf(path, sizeof path, "%s/j.st", dir);
  if (st_open(&m, path, &err)) fail_msg("%s", err.msg);
  assert_non_null(st_find(m, "input.0.image.1.features")), assert_non_null(st_find(m, "input.0.image.1.grid_thw"));
  assert_non_null(st_find(m, "input.1.hidden_states")), assert_null(st_find(m, "input.1.image.0.features"));
  assert_int_equal(st_to_i64(st_find(m, "hidden_layer"), &layer64, NULL), QVL_OK);
  assert_int_equal(layer64, c->text.layers);
  st_close(m);
  /* bad invocations: usage errors (2) and a layer the model does not have (1) */
  assert_int_equal(tu_run_qvl(out, sizeof out, "encode --model tests/data/tiny-qwen3_vl-vocab --dummy --layer x --text a -o /tmp/x.st"), 2);
  tu_assert_msg_has(out, "--layer wants", NULL);
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen3_vl-vocab --dummy --cpu --layer 9 --text a -o %s/x.st", dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 1);
  tu_assert_msg_has(out, "layer 9 is outside 0..3", NULL);
  assert_int_equal(tu_run_qvl(out, sizeof out, "encode --model tests/data/tiny-qwen3_vl-vocab --dummy --text a --jsonl b -o /tmp/x.st"), 2);
  tu_assert_msg_has(out, "not both", NULL);
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen3_vl-vocab --dummy --cpu --text \"\" -o %s/x.st", dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 1);
  tu_assert_msg_has(out, "no text and no image", NULL);
  tu_write_file(jsonl, "{\"images\": \"a.jpg\"}\n", 20);
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen3_vl-vocab --dummy --cpu --jsonl %s -o %s/x.st", jsonl, dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 2);
  tu_assert_msg_has(out, "line 1", "wants");
  qvl_image_batch_free(batch);
  qvl_engine_close(e);
  free(bytes[0]), free(bytes[1]);
  tu_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_hidden_states), cmocka_unit_test(test_refusals),
                                     cmocka_unit_test(test_cli)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
