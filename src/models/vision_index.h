/* vision_index.h - host-side index math of the vision towers, shared by every backend (spec §2.3, §2.4,
 * §3.3, §3.4). Rows are patches in the image processor's merge-group order (spec §1.7): within an image,
 * row n = ((t*(gh/m) + bh)*(gw/m) + bw)*m*m + ih*m + iw; images concatenated. All outputs are written to
 * caller-owned arrays sized by the vis_count_* helpers. */
#ifndef QVL_MODELS_VISION_INDEX_H
#define QVL_MODELS_VISION_INDEX_H

#include <stdint.h>

#include "core/err.h"

/* Checks every grid (t, h, w >= 1; h, w multiples of merge; total patches <= max_patches) and returns the
 * number of patch rows through *rows. */
int vis_check_grids(const int32_t *grid, int n, int merge, int64_t max_patches, int64_t *rows, qvl_err *err);

/* (row, col) patch coordinates per row: pos[2r] = bh*m + ih, pos[2r+1] = bw*m + iw, repeated for every t. */
void vis_rot_pos(int32_t *pos, const int32_t *grid, int n, int merge);

/* Full-attention sequence boundaries: 0, then the running sum of h*w repeated t times (each temporal slice is
 * its own sequence). Returns the number of sequences (cu has that + 1 entries; at most sum t). */
int vis_cu_seqlens(int32_t *cu, const int32_t *grid, int n);
int64_t vis_count_seqs(const int32_t *grid, int n);

/* Qwen2.5-VL windows (spec §2.4): window_index over merged tokens (rows/4 entries) and the window
 * boundaries in patches with empty windows dropped. win = window_size / merge / patch (4). Returns the
 * number of windows (cu_win has that + 1 entries). */
int vis_window_index(int32_t *window_index, int32_t *cu_win, const int32_t *grid, int n, int merge, int win);
int64_t vis_count_windows(const int32_t *grid, int n, int merge, int win);

/* Inverse permutation: inv[perm[i]] = i. */
void vis_invert(int32_t *inv, const int32_t *perm, int64_t n);

/* Qwen3-VL learned position embedding, bilinear corners per row (spec §3.3, as transformers 5.17 computes
 * the weights; see vision_index.c): idx[4r+c] into the side x side table, weights w[4r+c]. */
void vis_bilinear(int32_t *idx, float *w, const int32_t *grid, int n, int merge, int side);

/* Rotary tables [rows][head_dim] for head_dim/4 frequencies 1/theta^(2j/(head_dim/2)) (float32 as PyTorch):
 * angles a = [row * f, col * f] (head_dim/2 values), cos/sin of concat(a, a). pos as vis_rot_pos; when
 * order is non-NULL, table row r uses pos of row order[r] (the Qwen2.5-VL window reorder). */
void vis_rope_tables(float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows, int head_dim,
                     float theta);

#endif
