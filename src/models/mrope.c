#include "models/mrope.h"

#include <math.h>
#include <stdio.h>

/* The walk over one sequence: the next free position and the largest one written so far. */
typedef struct walk {
  int32_t *pos;
  const int32_t *ids;
  int n, i; /* tokens, the next one */
  int32_t cur, max_pos;
  const qvl_config *cfg;
  qvl_err *err;
} walk;

/* One vision block of lt x lh x lw tokens at w->i, ordered (t', r, c) row-major as the merged features:
 * (cur + T(t'), cur + r, cur + c), T(t') truncated from f32 as each reference computes it: the Qwen code
 * (t' * spg) * tps, transformers 5.x (hf5) t' * (tps * int(spg)): 5.17 still truncates the seconds per grid
 * (checked on the GPU machine against its get_rope_index; spec §4.5 expected PR #48669 to drop the int);
 * spg = 0 for images and Qwen3-VL frames.
 * Returns the largest position of the block. */
static int32_t place(walk *w, int lt, int lh, int lw, float spg, int tps, int hf5) {
  int32_t hi = w->cur, n = w->n;
  float interval = (float)(tps * (int)spg); /* transformers 5.x: tokens_per_second * int(second_per_grid_t) */
  for (int k = 0; k < lt * lh * lw; k++, w->i++) {
    int t = k / (lh * lw), r = (k / lw) % lh, c = k % lw;
    int32_t tt = hf5 ? (int32_t)((float)t * interval) : (int32_t)((float)t * spg * (float)tps);
    int32_t *p = w->pos + w->i;
    p[0] = w->cur + tt, p[n] = w->cur + r, p[2 * n] = w->cur + c;
    int32_t m = tt > r ? (tt > c ? tt : c) : (r > c ? r : c);
    hi = w->cur + m > hi ? w->cur + m : hi;
  }
  w->max_pos = hi > w->max_pos ? hi : w->max_pos;
  return hi;
}

/* The pad run at w->i must hold exactly len tokens of id (what: "image 0", "video 1 group 3"). */
static int check_run(walk *w, int32_t id, int len, const char *what) {
  int run = 0;
  while (w->i + run < w->n && w->ids[w->i + run] == id) run++;
  if (run == len) return QVL_OK;
  return qvl_fail(w->err, QVL_ERR_INVALID_ARG, "rope index: %s has %d pad tokens at token %d, its grid needs %d",
                  what, run, w->i, len);
}

static int image_run(walk *w, const int32_t *g, int k) {
  int m = w->cfg->vision.merge, lh = g[1] / m, lw = g[2] / m;
  char what[48];
  snprintf(what, sizeof what, "image %d", k);
  int rc = check_run(w, w->cfg->image_token_id, g[0] * lh * lw, what);
  if (rc) return rc;
  place(w, g[0], lh, lw, 0, 0, 0);
  w->cur += lh > lw ? lh : lw;
  return QVL_OK;
}

/* Qwen3-VL: frame group f of video k is one run of t = 1 (transformers splits the video grid into t rows). */
static int video_frame_run(walk *w, const int32_t *g, int k, int f) {
  int m = w->cfg->vision.merge, lh = g[1] / m, lw = g[2] / m;
  char what[48];
  snprintf(what, sizeof what, "video %d group %d", k, f);
  int rc = check_run(w, w->cfg->video_token_id, lh * lw, what);
  if (rc) return rc;
  place(w, 1, lh, lw, 0, 0, 0);
  w->cur += lh > lw ? lh : lw;
  return QVL_OK;
}

/* Qwen2.5-VL: the whole video is one run (spec §4.5's table). */
static int video_run(walk *w, const qvl_rope_videos *v, int k) {
  const int32_t *g = v->grid + 3 * k;
  int m = w->cfg->vision.merge, lh = g[1] / m, lw = g[2] / m, hf5 = v->rule == QVL_VIDEO_ROPE_HF5;
  float spg = v->second_per_grid ? v->second_per_grid[k] : 1.0f;
  char what[48];
  snprintf(what, sizeof what, "video %d", k);
  int rc = check_run(w, w->cfg->video_token_id, g[0] * lh * lw, what);
  if (rc) return rc;
  int32_t hi = place(w, g[0], lh, lw, spg, w->cfg->vision.tokens_per_second, hf5);
  w->cur = hf5 ? w->cur + (lh > lw ? lh : lw) : hi + 1;
  return QVL_OK;
}

int qvl_rope_index(int32_t *pos, int64_t *delta, const int32_t *ids, int n, const qvl_config *cfg,
                   const int32_t *grid, int n_img, const qvl_rope_videos *vid, qvl_err *err) {
  walk w = {pos, ids, n, 0, 0, -1, cfg, err};
  int img = 0, v = 0, f = 0, n_vid = vid ? vid->n : 0, rc = QVL_OK, qwen3 = cfg->arch == QVL_ARCH_QWEN3_VL;
  while (!rc && w.i < n) {
    int32_t id = ids[w.i];
    if (id == cfg->image_token_id && img >= n_img)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "rope index: image pad run at token %d but only %d image(s)", w.i,
                      n_img);
    if (id == cfg->video_token_id && v >= n_vid)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "rope index: video pad run at token %d but only %d video(s)", w.i,
                      n_vid);
    if (id == cfg->image_token_id) rc = image_run(&w, grid + 3 * img, img), img++;
    else if (id == cfg->video_token_id && !qwen3) rc = video_run(&w, vid, v++);
    else if (id == cfg->video_token_id) {
      rc = video_frame_run(&w, vid->grid + 3 * v, v, f);
      if (++f == vid->grid[3 * v]) v++, f = 0;
    } else {
      pos[w.i] = pos[n + w.i] = pos[2 * n + w.i] = w.cur;
      w.max_pos = w.cur > w.max_pos ? w.cur : w.max_pos;
      w.cur++, w.i++;
    }
  }
  if (rc) return rc;
  if (img != n_img)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "rope index: %d image(s) given, %d pad run(s) in the prompt", n_img, img);
  if (v != n_vid || f)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "rope index: %d video(s) given, the prompt has pads for %d%s", n_vid, v,
                    f ? " and part of another" : "");
  *delta = (int64_t)w.max_pos + 1 - n;
  return QVL_OK;
}

static int axis_of(const qvl_text_config *t, int j) {
  const int *s = t->mrope_section;
  if (t->mrope_interleaved) {
    if (j % 3 == 1 && j < 3 * s[1]) return 1;
    if (j % 3 == 2 && j < 3 * s[2]) return 2;
    return 0;
  }
  return j < s[0] ? 0 : j < s[0] + s[1] ? 1 : 2;
}

void qvl_mrope_tables(float *cos, float *sin, const int32_t *pos, int n, const qvl_text_config *t) {
  int hd = t->head_dim, half = hd / 2;
  float inv[512];
  for (int j = 0; j < half; j++) inv[j] = 1.0f / powf((float)t->rope_theta, (float)(2 * j) / (float)hd);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < half; j++) {
      float a = (float)pos[axis_of(t, j) * n + i] * inv[j];
      cos[(int64_t)i * hd + j] = cos[(int64_t)i * hd + j + half] = cosf(a);
      sin[(int64_t)i * hd + j] = sin[(int64_t)i * hd + j + half] = sinf(a);
    }
}
