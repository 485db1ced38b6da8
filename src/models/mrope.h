/* mrope.h - the language model's 3-axis rotary positions (spec §4.4, §4.5), host-side and shared by backends. */
#ifndef QVL_MODELS_MROPE_H
#define QVL_MODELS_MROPE_H

#include <stdint.h>

#include "core/err.h"
#include "io/config.h"

/* get_rope_index for one sequence of text and images: pos[a*n + i] for axis a in (t, h, w). A maximal run of
 * image_token_id tokens is one image, images in the order of grid (t, gh, gw in patches); its tokens get
 * (cur, cur + r, cur + c) over the merged grid (r, c) and advance cur by max(gh, gw) / merge; text advances by 1.
 * *delta = max position + 1 - n (decode token at cache index p sits at p + delta). The number of pad tokens
 * must match the grids exactly; videos are not handled here yet. */
int qvl_rope_index(int32_t *pos, int64_t *delta, const int32_t *ids, int n, const qvl_config *cfg,
                   const int32_t *grid, int n_img, qvl_err *err);

/* cos/sin [n][head_dim] of the M-RoPE angles: frequency j takes its position from the axis the config assigns
 * it (sectioned: consecutive sections t|h|w; interleaved: h at j = 1 mod 3 below 3*section[1], w at j = 2 mod 3
 * below 3*section[2], t elsewhere), angle = pos * inv_freq[j] in f32, tables cos/sin(concat(angle, angle)). */
void qvl_mrope_tables(float *cos, float *sin, const int32_t *pos, int n, const qvl_text_config *t);

#endif
