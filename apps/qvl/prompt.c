/* prompt.c - what qvl run, serve and encode share to turn files and text into model input: reading files, the
 * tokenizer (--tokenizer, the model's, or the fetched one), images preprocessed in one batch, and a user turn
 * rendered with the model's chat template. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"

char *app_slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long n = ftell(f);
    if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) && fread(buf, 1, (size_t)n, f) != (size_t)n)
      free(buf), buf = NULL;
    *len = n > 0 ? (size_t)n : 0;
  }
  fclose(f);
  return buf;
}

qvl_tokenizer *app_open_tokenizer(const char *given, const char *dir) {
  char path[4096], gen[4096];
  const char *tries[3] = {given, path, ".cache/tokenizer/tokenizer.json"};
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  snprintf(gen, sizeof gen, "%s/generation_config.json", dir);
  for (int i = given ? 0 : 1; i < 3; i++) {
    FILE *f = fopen(tries[i], "rb");
    if (!f) continue;
    fclose(f);
    qvl_tokenizer *t = NULL;
    if (qvl_tokenizer_open(&t, tries[i]) == QVL_OK && qvl_tokenizer_read_generation_config(t, gen) == QVL_OK) return t;
    fprintf(stderr, "qvl: %s\n", qvl_tokenizer_errmsg(t));
    qvl_tokenizer_close(t);
    return NULL;
  }
  fprintf(stderr, "qvl: no tokenizer.json (--tokenizer FILE, %s/tokenizer.json, or scripts/fetch-tokenizer.sh)\n",
          dir);
  return NULL;
}

int app_load_images(qvl_engine *e, const char *const *paths, int n, qvl_image_batch **batch) {
  qvl_image *imgs = calloc((size_t)(n ? n : 1), sizeof *imgs);
  char **bufs = calloc((size_t)(n ? n : 1), sizeof *bufs);
  int rc = !imgs || !bufs ? fprintf(stderr, "qvl: out of memory for %d images\n", n) : 0;
  *batch = NULL;
  for (int i = 0; i < n && !rc; i++) {
    if (!(bufs[i] = app_slurp(paths[i], &imgs[i].size))) rc = fprintf(stderr, "qvl: cannot read %s\n", paths[i]);
    imgs[i].data = bufs[i];
  }
  if (!rc && n && (rc = qvl_preprocess_images(e, imgs, n, NULL, batch)))
    fprintf(stderr, "qvl: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  for (int i = 0; bufs && i < n; i++) free(bufs[i]);
  free(bufs), free(imgs);
  return rc ? 1 : 0;
}

int app_user_turn(qvl_tokenizer *t, const char *arch, const int32_t *grids, int n_img, const char *text,
                  const int32_t **ids, size_t *n) {
  qvl_chat_part *parts = calloc((size_t)n_img + 1, sizeof *parts);
  if (!parts) return fprintf(stderr, "qvl: out of memory\n"), 1;
  for (int i = 0; i < n_img; i++) {
    parts[i].kind = QVL_PART_IMAGE;
    memcpy(parts[i].grid_thw, grids + 3 * i, sizeof parts[i].grid_thw);
  }
  parts[n_img].kind = QVL_PART_TEXT, parts[n_img].text = text;
  qvl_chat_message msg = {.role = "user", .parts = parts, .n_parts = n_img + 1};
  qvl_chat chat = {.kind = strcmp(arch, "qwen3_vl") ? QVL_CHAT_QWEN2_5_VL : QVL_CHAT_QWEN3_VL, .messages = &msg,
                   .n_messages = 1, .add_generation_prompt = 1};
  int rc = qvl_chat_encode(t, &chat, ids, n);
  if (rc) fprintf(stderr, "qvl: %s\n", qvl_tokenizer_errmsg(t));
  free(parts);
  return rc ? 1 : 0;
}
