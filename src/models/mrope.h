/* mrope.h - the language model's 3-axis rotary positions (spec §4.4, §4.5), host-side and shared by backends. */
#ifndef QVL_MODELS_MROPE_H
#define QVL_MODELS_MROPE_H

#include <stdint.h>

#include "core/err.h"
#include "io/config.h"

/* The videos of a prompt for get_rope_index, in order (spec §1.9, §4.5). */
typedef enum qvl_video_rope {
  /* Qwen2.5-VL: the Qwen training code (rope2d.get_rope_index_25, transformers <= 5.2): temporal id
   * T(t') = (long)(t' * second_per_grid * tokens_per_second) in f32, and the next token after the video takes
   * 1 + the largest of its three ids. */
  QVL_VIDEO_ROPE_QWEN = 0,
  /* Qwen2.5-VL: transformers 5.x after PR #48669: T(t') = (long)(t' * (tokens_per_second * second_per_grid)),
   * the next token at cur + max(lh, lw) (the temporal extent is ignored). */
  QVL_VIDEO_ROPE_HF5 = 1,
} qvl_video_rope;

typedef struct qvl_rope_videos {
  const int32_t *grid;          /* [n][3] (t, gh, gw) in patches, t after temporal patching */
  const float *second_per_grid; /* [n] Qwen2.5-VL: temporal_patch_size / fps; NULL: 1.0 (fps 2) */
  int n;
  qvl_video_rope rule; /* Qwen2.5-VL only; Qwen3-VL has one rule */
} qvl_rope_videos;

/* get_rope_index for one sequence of text, images and videos: pos[a*n + i] for axis a in (t, h, w). A maximal
 * run of image_token_id tokens is one image, images in the order of grid (t, gh, gw in patches); its tokens get
 * (cur, cur + r, cur + c) over the merged grid (r, c) and advance cur by max(gh, gw) / merge; text advances by 1.
 * Videos (vid, NULL for none): Qwen3-VL's prompt splits each video into t runs of video_token_id, one per
 * temporal group with timestamp text between them, each placed like an image; Qwen2.5-VL's video is one run
 * (t', r, c) placed by vid->rule. *delta = max position + 1 - n (decode token at cache index p sits at p + delta).
 * The number of pad tokens must match the grids exactly. */
int qvl_rope_index(int32_t *pos, int64_t *delta, const int32_t *ids, int n, const qvl_config *cfg,
                   const int32_t *grid, int n_img, const qvl_rope_videos *vid, qvl_err *err);

/* cos/sin [n][head_dim] of the M-RoPE angles: frequency j takes its position from the axis the config assigns
 * it (sectioned: consecutive sections t|h|w; interleaved: h at j = 1 mod 3 below 3*section[1], w at j = 2 mod 3
 * below 3*section[2], t elsewhere), angle = pos * inv_freq[j] in f32, tables cos/sin(concat(angle, angle)). */
void qvl_mrope_tables(float *cos, float *sin, const int32_t *pos, int n, const qvl_text_config *t);

#endif
