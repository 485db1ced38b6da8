#include "models/mrope.h"

#include <math.h>

int qvl_rope_index(int32_t *pos, int64_t *delta, const int32_t *ids, int n, const qvl_config *cfg,
                   const int32_t *grid, int n_img, qvl_err *err) {
  int32_t cur = 0, max_pos = -1;
  int img = 0, m = cfg->vision.merge;
  for (int i = 0; i < n;) {
    if (ids[i] != cfg->image_token_id) {
      pos[i] = pos[n + i] = pos[2 * n + i] = cur;
      max_pos = cur > max_pos ? cur : max_pos;
      cur++, i++;
      continue;
    }
    if (img >= n_img)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "rope index: image pad run at token %d but only %d image(s)", i, n_img);
    int lt = grid[3 * img], lh = grid[3 * img + 1] / m, lw = grid[3 * img + 2] / m, len = lt * lh * lw, run = 0;
    while (i + run < n && ids[i + run] == cfg->image_token_id) run++;
    if (run != len)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "rope index: image %d has %d pad tokens, its grid needs %d", img, run,
                      len);
    for (int k = 0; k < len; k++, i++) { /* tokens ordered (t', r, c) row-major; images: temporal id 0 */
      int r = (k / lw) % lh, c = k % lw;
      pos[i] = cur, pos[n + i] = cur + r, pos[2 * n + i] = cur + c;
      int hi = cur + (r > c ? r : c);
      max_pos = hi > max_pos ? hi : max_pos;
    }
    cur += lh > lw ? lh : lw;
    img++;
  }
  if (img != n_img)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "rope index: %d image(s) given, %d pad run(s) in the prompt", n_img, img);
  *delta = (int64_t)max_pos + 1 - n;
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
