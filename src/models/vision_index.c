#include "models/vision_index.h"

#include <math.h>
#include <stdlib.h>

int vis_check_grids(const int32_t *grid, int n, int merge, int64_t max_patches, int64_t *rows, qvl_err *err) {
  int64_t total = 0;
  if (n < 1) return qvl_fail(err, QVL_ERR_INVALID_ARG, "vision: no images");
  for (int i = 0; i < n; i++) {
    int32_t t = grid[3 * i], h = grid[3 * i + 1], w = grid[3 * i + 2];
    if (t < 1 || h < 1 || w < 1 || h % merge || w % merge)
      return qvl_fail(err, QVL_ERR_INVALID_ARG,
                      "vision: image %d grid (%d, %d, %d): t, h, w must be >= 1 and h, w multiples of %d", i, t, h,
                      w, merge);
    total += (int64_t)t * h * w;
    if (total > max_patches)
      return qvl_fail(err, QVL_ERR_LIMIT, "vision: %lld patches by image %d exceed the limit of %lld",
                      (long long)total, i, (long long)max_patches);
  }
  *rows = total;
  return QVL_OK;
}

void vis_rot_pos(int32_t *pos, const int32_t *grid, int n, int merge) {
  for (int i = 0; i < n; i++) {
    int32_t t = grid[3 * i], h = grid[3 * i + 1], w = grid[3 * i + 2];
    for (int tt = 0; tt < t; tt++)
      for (int bh = 0; bh < h / merge; bh++)
        for (int bw = 0; bw < w / merge; bw++)
          for (int ih = 0; ih < merge; ih++)
            for (int iw = 0; iw < merge; iw++) {
              *pos++ = bh * merge + ih;
              *pos++ = bw * merge + iw;
            }
  }
}

int64_t vis_count_seqs(const int32_t *grid, int n) {
  int64_t s = 0;
  for (int i = 0; i < n; i++) s += grid[3 * i];
  return s;
}

int vis_cu_seqlens(int32_t *cu, const int32_t *grid, int n) {
  int k = 0;
  cu[0] = 0;
  for (int i = 0; i < n; i++)
    for (int t = 0; t < grid[3 * i]; t++, k++) cu[k + 1] = cu[k] + grid[3 * i + 1] * grid[3 * i + 2];
  return k;
}

/* Windows per temporal slice, padded by win - (l mod win) (a full extra window when divisible; it is
 * empty and dropped, spec §2.4). */
static void window_grid(int lh, int lw, int win, int *nwh, int *nww) {
  *nwh = (lh + win - lh % win) / win;
  *nww = (lw + win - lw % win) / win;
}

int64_t vis_count_windows(const int32_t *grid, int n, int merge, int win) {
  int64_t c = 0;
  for (int i = 0; i < n; i++) {
    int nwh, nww;
    window_grid(grid[3 * i + 1] / merge, grid[3 * i + 2] / merge, win, &nwh, &nww);
    c += (int64_t)grid[3 * i] * nwh * nww;
  }
  return c;
}

int vis_window_index(int32_t *window_index, int32_t *cu_win, const int32_t *grid, int n, int merge, int win) {
  int32_t offset = 0, *wi = window_index;
  int k = 0, unit = merge * merge;
  cu_win[0] = 0;
  for (int i = 0; i < n; i++) {
    int t = grid[3 * i], lh = grid[3 * i + 1] / merge, lw = grid[3 * i + 2] / merge, nwh, nww;
    window_grid(lh, lw, win, &nwh, &nww);
    for (int tt = 0; tt < t; tt++)
      for (int wr = 0; wr < nwh; wr++)
        for (int wc = 0; wc < nww; wc++) {
          int len = 0;
          for (int r = wr * win; r < (wr + 1) * win && r < lh; r++)
            for (int c = wc * win; c < (wc + 1) * win && c < lw; c++, len++)
              *wi++ = offset + (tt * lh + r) * lw + c;
          if (len) { /* empty windows would repeat the previous boundary; unique_consecutive drops them */
            cu_win[k + 1] = cu_win[k] + len * unit;
            k++;
          }
        }
    offset += t * lh * lw;
  }
  return k;
}

void vis_invert(int32_t *inv, const int32_t *perm, int64_t n) {
  for (int64_t i = 0; i < n; i++) inv[perm[i]] = (int32_t)i;
}

/* One axis of the bilinear lookup as transformers 5.17 computes it (vision_utils.py,
 * _interpolation_axis_taps_weights; align_corners=True): src = f32(i*(side-1)) / f32(n-1); taps floor(src)
 * and floor(src)+1 clamped to the table; tap k weighs max(1 - |f32(src - floor) - k|, 0), all in float32.
 * (Older releases used torch.linspace, spec §3.3; the two differ in the last bit of the weights.) */
static void axis(int64_t n, int side, int64_t i, int tap[2], float wt[2]) {
  float src = (float)(i * (side - 1)) / (float)(n > 1 ? n - 1 : 1), fl = floorf(src), frac = src - fl;
  for (int k = 0; k < 2; k++) {
    int t = (int)fl + k;
    tap[k] = t < 0 ? 0 : t > side - 1 ? side - 1 : t;
    wt[k] = fmaxf(1.0f - fabsf(frac - (float)k), 0.0f);
  }
}

void vis_bilinear(int32_t *idx, float *w, const int32_t *grid, int n, int merge, int side) {
  for (int i = 0; i < n; i++) {
    int t = grid[3 * i], h = grid[3 * i + 1], ww = grid[3 * i + 2];
    for (int tt = 0; tt < t; tt++)
      for (int bh = 0; bh < h / merge; bh++)
        for (int bw = 0; bw < ww / merge; bw++)
          for (int ih = 0; ih < merge; ih++)
            for (int iw = 0; iw < merge; iw++) {
              int th[2], tw[2];
              float wh[2], wv[2];
              axis(h, side, bh * merge + ih, th, wh);
              axis(ww, side, bw * merge + iw, tw, wv);
              for (int c = 0; c < 4; c++) { /* corners (h0,w0), (h0,w1), (h1,w0), (h1,w1) */
                idx[c] = th[c / 2] * side + tw[c % 2];
                w[c] = wh[c / 2] * wv[c % 2];
              }
              idx += 4, w += 4;
            }
  }
}

void vis_rope_tables(float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows, int head_dim,
                     float theta) {
  int half = head_dim / 2, nf = half / 2;
  float inv_freq[256];
  for (int j = 0; j < nf; j++) inv_freq[j] = 1.0f / powf(theta, (float)(2 * j) / (float)half);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const int32_t *p = pos + 2 * (order ? order[r] : r);
    float *c = cos + r * head_dim, *s = sin + r * head_dim;
    for (int j = 0; j < half; j++) {
      float a = (float)(j < nf ? p[0] : p[1]) * inv_freq[j % nf];
      c[j] = c[j + half] = cosf(a);
      s[j] = s[j + half] = sinf(a);
    }
  }
}
