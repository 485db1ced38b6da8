/* config.h - config.json (Qwen2.5-VL, Qwen3-VL) and preprocessor_config.json.
 *
 * Accepts both layouts found in the wild: Qwen2.5-VL releases with the text fields at the top level and
 * rope settings in "rope_scaling", and transformers 5.x saves with "text_config" and "rope_parameters".
 * Architecture comes from "architectures"[0] (Qwen2_5_VLForConditionalGeneration,
 * Qwen3VLForConditionalGeneration), else "model_type" (qwen2_5_vl, qwen3_vl). Missing required fields,
 * wrong types and impossible values are errors naming the file and the field.
 */
#ifndef QVL_IO_CONFIG_H
#define QVL_IO_CONFIG_H

#include <stdint.h>

#include "core/err.h"

typedef enum qvl_arch { QVL_ARCH_QWEN2_5_VL = 1, QVL_ARCH_QWEN3_VL = 2 } qvl_arch;

#define QVL_MAX_LIST 64

typedef struct qvl_vision_config {
  int depth;             /* 32 (Qwen2.5-VL); 24 or 27 (Qwen3-VL) */
  int hidden;            /* 1280; 1024 or 1152 */
  int heads;             /* 16 */
  int head_dim;          /* hidden / heads: 80; 64 or 72 */
  int intermediate;      /* 3420; 4096 or 4304 */
  int out_hidden;        /* the language model's hidden size */
  int patch;             /* 14; 16 */
  int temporal_patch;    /* 2 */
  int merge;             /* spatial_merge_size, 2 */
  int in_channels;       /* 3 */
  int window_size;       /* Qwen2.5-VL: 112 pixels; 0 for Qwen3-VL */
  int n_fullatt;         /* Qwen2.5-VL fullatt_block_indexes: 7, 15, 23, 31 */
  int fullatt[QVL_MAX_LIST];
  int n_deepstack;       /* Qwen3-VL deepstack_visual_indexes: 5, 11, 17 or 8, 16, 24 */
  int deepstack[QVL_MAX_LIST];
  int num_position_embeddings; /* Qwen3-VL: 2304 (a 48x48 table); 0 for Qwen2.5-VL */
  int tokens_per_second; /* Qwen2.5-VL video M-RoPE: 2 */
  char hidden_act[32];   /* "silu"; "gelu_pytorch_tanh" */
  float norm_eps;        /* 1e-6 (not in config.json; the modeling code's constant) */
} qvl_vision_config;

typedef struct qvl_text_config {
  int vocab;             /* embedding rows: 151936 / 152064 */
  int hidden;
  int layers;
  int heads;
  int kv_heads;
  int head_dim;          /* explicit "head_dim" when present, else hidden / heads */
  int intermediate;
  int max_position;      /* max_position_embeddings */
  int tie_embeddings;    /* tie_word_embeddings: no lm_head.weight in the checkpoint */
  int attention_bias;    /* Qwen2.5-VL: q/k/v bias; Qwen3-VL: none */
  float rms_eps;         /* rms_norm_eps, 1e-6 */
  double rope_theta;     /* 1e6; 5e6 */
  int mrope_section[3];  /* [16,24,24]; [24,20,20]; sums to head_dim / 2 */
  int mrope_interleaved; /* Qwen3-VL: 1 */
  char hidden_act[32];   /* "silu" */
} qvl_text_config;

typedef struct qvl_config {
  qvl_arch arch;
  char arch_name[48];    /* "qwen2_5_vl" | "qwen3_vl" */
  qvl_vision_config vision;
  qvl_text_config text;
  int image_token_id, video_token_id, vision_start_token_id, vision_end_token_id;
  char dtype[16];        /* torch_dtype / dtype as written ("bfloat16"), "" when absent */
} qvl_config;

/* Parses a config.json held in memory (json need not be NUL-terminated); what names it in errors. */
int qvl_config_parse(qvl_config *c, const char *json, size_t len, const char *what, qvl_err *err);
/* Reads and parses path. */
int qvl_config_load(qvl_config *c, const char *path, qvl_err *err);

typedef struct qvl_preproc_config {
  int present;             /* 0 when the file is absent: the fields hold the model's defaults */
  int64_t min_pixels;      /* size.shortest_edge, or min_pixels */
  int64_t max_pixels;      /* size.longest_edge, or max_pixels */
  int patch;               /* patch_size */
  int temporal_patch;      /* temporal_patch_size */
  int merge;               /* merge_size */
  float mean[3], std[3];   /* image_mean / image_std */
  double rescale;          /* rescale_factor, 1/255 */
  int do_resize, do_rescale, do_normalize, do_convert_rgb;
  int resample;            /* PIL code; 3 = BICUBIC */
} qvl_preproc_config;

/* Reads path; a missing file is not an error (present = 0, defaults for arch per spec §1.1). */
int qvl_preproc_load(qvl_preproc_config *p, qvl_arch arch, const char *path, qvl_err *err);

/* Reads a whole file into a malloc'd NUL-terminated buffer (*len excludes the NUL). */
int qvl_read_file(const char *path, char **out, size_t *len, size_t max_bytes, qvl_err *err);

#endif
