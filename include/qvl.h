/* qvl.h - the public interface of qvl, a Qwen vision-language inference engine (Qwen2.5-VL, Qwen3-VL).
 *
 * This header is the manual. Conventions, everywhere:
 *   - Functions return QVL_OK (0) or a negative qvl_status. Nothing exits, aborts or prints.
 *   - Constructors return their handle through an out-parameter. On failure the handle is still set when
 *     memory allows, so qvl_errmsg() can say why; the caller always closes it.
 *   - Every close/free function accepts NULL as a no-op.
 *   - Pointers returned by a handle are owned by that handle and live until it is closed/freed.
 *   - A qvl_engine may be used from one thread at a time (later issues add a thread-safe submit).
 */
#ifndef QVL_H
#define QVL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qvl_status {
  QVL_OK = 0,
  QVL_ERR_INVALID_ARG = -1, /* a caller passed something impossible (NULL, bad shape, bad option) */
  QVL_ERR_IO = -2,          /* a file could not be opened, read, mapped or written */
  QVL_ERR_FORMAT = -3,      /* a file or buffer is malformed (safetensors, JSON, config values) */
  QVL_ERR_UNSUPPORTED = -4, /* well-formed but not something qvl runs (architecture, dtype, backend) */
  QVL_ERR_NOMEM = -5,       /* host or device allocation failed */
  QVL_ERR_DEVICE = -6,      /* a CUDA / cuBLAS / cuDNN call failed */
  QVL_ERR_LIMIT = -7,       /* the request exceeds a limit planned at load (tokens, images, patches) */
  QVL_ERR_MISSING = -8,     /* a tensor or file the model needs is absent */
} qvl_status;

/* A short constant name for a status ("QVL_ERR_FORMAT"), never NULL. */
const char *qvl_status_name(int status);

/* ---------------------------------------------------------------------------------------------------
 * Engine: a loaded model bound to one backend.
 */
typedef struct qvl_engine qvl_engine;

typedef enum qvl_backend_kind {
  QVL_BACKEND_AUTO = 0, /* CUDA when a device is present, else CPU */
  QVL_BACKEND_CPU = 1,  /* f32 reference; OpenMP + OpenBLAS */
  QVL_BACKEND_CUDA = 2, /* bf16 on one GPU */
} qvl_backend_kind;

/* Which weights are materialised at open. Every tensor of the checkpoint is validated either way. */
typedef enum qvl_load {
  QVL_LOAD_NONE = 0,   /* config + checkpoint validation only (qvl info) */
  QVL_LOAD_VISION = 1, /* the vision tower */
  QVL_LOAD_ALL = 2,    /* vision tower and language model */
} qvl_load;

typedef struct qvl_engine_params {
  const char *model_dir;    /* HF checkpoint directory: config.json + *.safetensors; borrowed during open */
  int dummy;                /* 1: synthetic weights from config.json alone (no safetensors read) */
  qvl_backend_kind backend; /* default QVL_BACKEND_AUTO */
  qvl_load load;            /* default QVL_LOAD_VISION */
  int device;               /* CUDA device ordinal, default 0 */
  int n_threads;            /* CPU threads; 0 = all cores */
} qvl_engine_params;

qvl_engine_params qvl_engine_default_params(void);

/* Opens model_dir (or only its config.json with dummy = 1). On failure *out is set when memory allows;
 * the caller always calls qvl_engine_close(*out). */
int qvl_engine_open(qvl_engine **out, const qvl_engine_params *p);
void qvl_engine_close(qvl_engine *e); /* NULL is a no-op */

/* The last error's message, owned by the engine; "" after success. NULL engine: a fixed message. */
const char *qvl_errmsg(const qvl_engine *e);

/* What a model is, read from its config and name table; strings are owned by the engine. */
typedef struct qvl_model_info {
  const char *arch;       /* "qwen2_5_vl" or "qwen3_vl" */
  const char *backend;    /* "cpu" or "cuda" */
  const char *weights;    /* "dummy" or the checkpoint's dtype ("bf16", "f32", "mixed", ...) */
  int vision_depth, vision_hidden, vision_heads, vision_intermediate, vision_out_hidden;
  int patch_size, temporal_patch_size, merge_size;
  int text_layers, text_hidden, text_heads, text_kv_heads, text_head_dim, text_intermediate, vocab_size;
  int tie_word_embeddings;
  int64_t n_tensors;
  int64_t n_params, n_params_vision, n_params_text;
  int64_t bytes_checkpoint; /* the checkpoint's tensor bytes (bf16 for dummy) */
  int64_t bytes_loaded;     /* bytes of weights materialised on the backend */
} qvl_model_info;

int qvl_engine_info(const qvl_engine *e, qvl_model_info *out);

/* Writes the engine's model as a Hugging Face checkpoint directory: config.json (and
 * preprocessor_config.json when the source has one) copied, weights as bf16 safetensors in shards of at
 * most shard_bytes (0: 4 GiB) with model.safetensors.index.json. With dummy weights this is how
 * transformers loads exactly the weights qvl runs. */
int qvl_engine_export(qvl_engine *e, const char *out_dir, int64_t shard_bytes);

/* ---------------------------------------------------------------------------------------------------
 * Vision: pixel rows -> features. Pixel rows are the image processor's output (spec §1.7): one row of
 * 3*T*P*P floats per patch, images concatenated, grid_thw in patch units.
 */
typedef struct qvl_features qvl_features;

typedef struct qvl_pixels {
  int n_images;
  const int32_t *grid_thw; /* [n_images][3] (t, h, w) in patches; h and w multiples of the merge size */
  const float *rows;       /* [sum t*h*w][3*T*P*P], borrowed for the call */
} qvl_pixels;

/* Runs the vision tower. *out is owned by the caller (qvl_features_free). */
int qvl_encode_pixels(qvl_engine *e, const qvl_pixels *px, qvl_features **out);

/* Output i: 0 = the merger's features (one row per <|image_pad|>, images in order), 1..n-1 = DeepStack
 * features in deepstack_visual_indexes order (Qwen3-VL only). f32, row-major, owned by f. */
int qvl_features_count(const qvl_features *f);
const float *qvl_features_data(const qvl_features *f, int i, int64_t *rows, int64_t *cols);
const char *qvl_features_name(const qvl_features *f, int i); /* "features", "deepstack.0", ... */
void qvl_features_free(qvl_features *f);                        /* NULL is a no-op */

#ifdef __cplusplus
}
#endif

#endif /* QVL_H */
