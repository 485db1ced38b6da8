/* qvl encode with --text or --jsonl: images + text -> the language model's hidden states at one layer, every input
 * in one qvl_encode_prompts batch (cmd_encode.c's header has the usage and the tensors written). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "io/safetensors.h"
#include "qvl_internal.h"

/* The inputs: input k is text[k] after images first[k] .. first[k] + count[k] - 1 of paths. */
typedef struct enc_inputs {
  int n, n_img, cap, cap_img;
  char **text, **paths;
  int *first, *count;
} enc_inputs;

typedef struct enc_opts {
  const char *text, *jsonl, *tokenizer;
  int layer;
  enc_inputs in;
} enc_opts;

static int add_input(enc_inputs *in, const char *text, const char *const *paths, int n_paths) {
  if (in->n == in->cap) {
    in->cap = in->cap ? 2 * in->cap : 16;
    char **t = realloc(in->text, (size_t)in->cap * sizeof *t);
    if (t) in->text = t;
    int *f = realloc(in->first, (size_t)in->cap * sizeof *f);
    int *c = f ? realloc(in->count, (size_t)in->cap * sizeof *c) : NULL;
    if (f) in->first = f;
    if (c) in->count = c;
    if (!t || !f || !c) return 1;
  }
  if (in->n_img + n_paths > in->cap_img) {
    in->cap_img = 2 * (in->n_img + n_paths) + 16;
    char **p = realloc(in->paths, (size_t)in->cap_img * sizeof *p);
    if (!p) return 1;
    in->paths = p;
  }
  in->first[in->n] = in->n_img, in->count[in->n] = n_paths;
  for (int i = 0; i < n_paths; i++)
    if (!(in->paths[in->n_img++] = strdup(paths[i]))) return 1;
  return !(in->text[in->n++] = strdup(text));
}

static void free_inputs(enc_inputs *in) {
  for (int i = 0; i < in->n; i++) free(in->text[i]);
  for (int i = 0; i < in->n_img; i++) free(in->paths[i]);
  free(in->text), free(in->paths), free(in->first), free(in->count);
}

/* One JSONL line {"images": [...], "text": "..."}; nonzero after printing what is wrong with it. */
static int add_json_line(enc_inputs *in, const char *line, const char *file, int no) {
  cJSON *j = cJSON_Parse(line), *t = cJSON_GetObjectItemCaseSensitive(j, "text");
  cJSON *imgs = cJSON_GetObjectItemCaseSensitive(j, "images"), *it;
  const char *paths[256];
  int n = 0, rc = 0;
  if (!cJSON_IsObject(j) || !cJSON_IsString(t) || (imgs && !cJSON_IsArray(imgs)))
    rc = fprintf(stderr, "qvl encode: %s line %d: wants {\"images\": [\"FILE\", ...], \"text\": \"...\"}\n", file, no);
  if (rc) imgs = NULL;
  cJSON_ArrayForEach(it, imgs) {
    if (!cJSON_IsString(it) || n == 256) {
      rc = fprintf(stderr, "qvl encode: %s line %d: images must be at most 256 file names\n", file, no);
      break;
    }
    paths[n++] = it->valuestring;
  }
  if (!rc && add_input(in, t->valuestring, paths, n)) rc = fprintf(stderr, "qvl encode: out of memory\n");
  cJSON_Delete(j);
  return rc;
}

static int read_jsonl(enc_inputs *in, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return fprintf(stderr, "qvl encode: cannot read %s\n", path), 1;
  char *line = NULL;
  size_t cap = 0;
  int rc = 0, no = 0;
  while (!rc && getline(&line, &cap, f) > 0) {
    no++;
    if (strspn(line, " \t\r\n") != strlen(line)) rc = add_json_line(in, line, path, no);
  }
  free(line);
  fclose(f);
  if (!rc && !in->n) rc = fprintf(stderr, "qvl encode: %s holds no inputs\n", path);
  return rc;
}

static int parse_layer(const char *v, int *layer) {
  char *end;
  errno = 0;
  long l = strtol(v, &end, 10);
  if (!strcmp(v, "last")) return *layer = QVL_LAYER_LAST, 0;
  if (errno || end == v || *end || l < 0 || l > 100000)
    return fprintf(stderr, "qvl encode: --layer wants N >= 0 or last, got \"%s\"\n", v), 1;
  return *layer = (int)l, 0;
}

/* Pulls encode's own options out of argv (the rest goes to app_parse) and builds the inputs. */
static int split_args(enc_opts *r, int argc, char **argv, char **rest, int *n_rest) {
  const char *images[256];
  int n_images = 0;
  memset(r, 0, sizeof *r);
  r->layer = QVL_LAYER_LAST;
  rest[(*n_rest)++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int ours = !strcmp(a, "--text") || !strcmp(a, "--jsonl") || !strcmp(a, "--image") || !strcmp(a, "--layer") ||
               !strcmp(a, "--tokenizer");
    if (ours && !v) return fprintf(stderr, "qvl encode: %s needs a value\n", a), 1;
    if (!strcmp(a, "--text")) r->text = v;
    else if (!strcmp(a, "--jsonl")) r->jsonl = v;
    else if (!strcmp(a, "--tokenizer")) r->tokenizer = v;
    else if (!strcmp(a, "--layer")) {
      if (parse_layer(v, &r->layer)) return 1;
    } else if (!strcmp(a, "--image")) {
      if (n_images == 256) return fprintf(stderr, "qvl encode: at most 256 --image\n"), 1;
      images[n_images++] = v;
    }
    else if (*n_rest < 63) rest[(*n_rest)++] = argv[i];
    i += ours;
  }
  if (!r->text == !r->jsonl || (r->jsonl && n_images))
    return fprintf(stderr, "qvl encode: needs --text TEXT [--image FILE]... or --jsonl FILE (not both)\n"), 1;
  if (r->jsonl) return read_jsonl(&r->in, r->jsonl);
  for (int i = 0; i < (n_images ? n_images : 1); i++)
    if (add_input(&r->in, r->text, images + i, n_images ? 1 : 0))
      return fprintf(stderr, "qvl encode: out of memory\n"), 1;
  return 0;
}

/* Each input as a chat turn: ids copied out of the tokenizer (prompts[k].ids, malloc'd). */
static int make_prompts(qvl_tokenizer *t, const char *arch, const enc_inputs *in, const qvl_pixels *px,
                        qvl_prompt *prompts) {
  for (int k = 0; k < in->n; k++) {
    const int32_t *ids;
    size_t n;
    if (!in->text[k][0] && !in->count[k])
      return fprintf(stderr, "qvl encode: input %d has no text and no image\n", k), 1;
    if (app_user_turn(t, arch, in->count[k] ? px->grid_thw + 3 * in->first[k] : NULL, in->count[k], in->text[k], &ids,
                      &n))
      return 1;
    int32_t *copy = malloc(n * sizeof *copy);
    if (!copy) return fprintf(stderr, "qvl encode: out of memory\n"), 1;
    memcpy(copy, ids, n * sizeof *copy);
    prompts[k] = (qvl_prompt){.ids = copy, .n_ids = (int)n, .n_images = in->count[k]};
  }
  return 0;
}

/* The safetensors of cmd_encode.c's header: per input its ids and hidden states, per image its grid and rows. */
static int write_hidden(const char *path, const enc_inputs *in, const qvl_prompt *prompts, const qvl_pixels *px,
                        const qvl_hidden *h, int merge) {
  const qvl_features *f = qvl_hidden_features(h);
  int levels = qvl_features_count(f), n_e = 1 + 2 * in->n + in->n_img * (1 + levels), at = 0;
  int layer = qvl_hidden_layer(h);
  st_entry *e = calloc((size_t)n_e, sizeof *e);
  char(*names)[64] = calloc((size_t)n_e, sizeof *names);
  if (!e || !names) return free(e), free(names), fprintf(stderr, "qvl encode: out of memory\n"), 1;
  e[at++] = (st_entry){.name = "hidden_layer", .dtype = ST_I32, .ndim = 1, .shape = {1}, .data = &layer};
  int64_t row = 0;
  for (int k = 0; k < in->n; k++) {
    int64_t rows, cols;
    const float *hs = qvl_hidden_data(h, k, &rows, &cols);
    snprintf(names[at], sizeof names[at], "input.%d.input_ids", k);
    e[at] = (st_entry){.name = names[at], .dtype = ST_I32, .ndim = 1, .shape = {prompts[k].n_ids},
                       .data = prompts[k].ids};
    at++;
    snprintf(names[at], sizeof names[at], "input.%d.hidden_states", k);
    e[at] = (st_entry){.name = names[at], .dtype = ST_F32, .ndim = 2, .shape = {rows, cols}, .data = hs};
    at++;
    for (int j = 0; j < in->count[k]; j++) {
      const int32_t *g = px->grid_thw + 3 * (in->first[k] + j);
      int64_t n_rows = (int64_t)g[0] * g[1] * g[2] / (merge * merge), fcols;
      snprintf(names[at], sizeof names[at], "input.%d.image.%d.grid_thw", k, j);
      e[at] = (st_entry){.name = names[at], .dtype = ST_I32, .ndim = 1, .shape = {3}, .data = g};
      at++;
      for (int l = 0; l < levels; l++, at++) {
        const float *d = qvl_features_data(f, l, NULL, &fcols);
        snprintf(names[at], sizeof names[at], "input.%d.image.%d.%s", k, j, qvl_features_name(f, l));
        e[at] = (st_entry){.name = names[at], .dtype = ST_F32, .ndim = 2, .shape = {n_rows, fcols},
                           .data = d + row * fcols};
      }
      row += n_rows;
    }
  }
  qvl_err err = {0};
  int rc = st_write(path, e, at, NULL, NULL, &err);
  if (rc) fprintf(stderr, "qvl encode: %s (%s)\n", err.msg, qvl_status_name(rc));
  free(e), free(names);
  return rc;
}

int cmd_encode_lm(int argc, char **argv) {
  enc_opts r;
  char *rest[64];
  int n_rest = 0;
  app_opts o;
  if (split_args(&r, argc, argv, rest, &n_rest) || app_parse(&o, n_rest, rest)) return free_inputs(&r.in), 2;
  if (!o.out) return free_inputs(&r.in), fprintf(stderr, "qvl encode: needs -o OUT.safetensors\n"), 2;
  o.engine.load = QVL_LOAD_ALL;
  qvl_engine *e = app_open(&o);
  qvl_tokenizer *t = e ? app_open_tokenizer(r.tokenizer, o.engine.model_dir) : NULL;
  qvl_image_batch *batch = NULL;
  qvl_prompt *prompts = calloc((size_t)r.in.n, sizeof *prompts);
  qvl_hidden *h = NULL;
  qvl_model_info info;
  int rc = !t || !prompts || qvl_engine_info(e, &info) ||
           app_load_images(e, (const char *const *)r.in.paths, r.in.n_img, &batch);
  const qvl_pixels *px = batch ? qvl_image_batch_pixels(batch) : NULL;
  if (!rc) rc = make_prompts(t, info.arch, &r.in, px, prompts);
  if (!rc && (rc = qvl_encode_prompts(e, prompts, r.in.n, px, r.layer, &h)))
    fprintf(stderr, "qvl encode: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  if (!rc && !(rc = write_hidden(o.out, &r.in, prompts, px, h, qvl_engine_config(e)->vision.merge))) {
    int64_t tokens = 0;
    for (int k = 0; k < r.in.n; k++) tokens += prompts[k].n_ids;
    fprintf(stderr, "qvl encode: %d input(s), %d image(s), %lld tokens -> hidden states at layer %d of %d -> %s\n",
            r.in.n, r.in.n_img, (long long)tokens, qvl_hidden_layer(h), info.text_layers, o.out);
  }
  for (int k = 0; prompts && k < r.in.n; k++) free((void *)prompts[k].ids);
  free(prompts);
  qvl_hidden_free(h);
  qvl_image_batch_free(batch);
  qvl_tokenizer_close(t);
  qvl_engine_close(e);
  free_inputs(&r.in);
  return rc ? 1 : 0;
}
