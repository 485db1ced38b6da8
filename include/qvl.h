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
  int64_t max_patches;      /* most patch rows one vision call takes, all its images together; a larger batch is
                             * refused with QVL_ERR_LIMIT before any device work. The vision tower's device memory
                             * is planned from it and reserved at open (about 30 KB per patch for Qwen2.5-VL-7B,
                             * 22 KB for Qwen3-VL-8B in bf16; open fails with QVL_ERR_NOMEM when it does not fit).
                             * Default 262144 (64 images of 896x896 at patch 14) */
  int max_images;           /* most images (videos count once) one vision call takes; default 256 */
  int64_t kv_cache_tokens;  /* KV cache size in tokens (all sequences of a generation call together); a call that
                             * needs more is refused with QVL_ERR_LIMIT before any work. 0 (default): sized to
                             * each call's needs, grown when a call needs more */
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
  const float *rows;       /* [sum t*h*w][3*T*P*P] host f32, borrowed for the call; or NULL and */
  const void *dev_rows;    /* the same rows as bf16 in the engine's GPU memory: what qvl_preprocess_images gives on
                              a CUDA engine (only that engine's batches; never set by hand) */
} qvl_pixels;

/* Runs the vision tower. *out is owned by the caller (qvl_features_free). */
int qvl_encode_pixels(qvl_engine *e, const qvl_pixels *px, qvl_features **out);

/* Output i: 0 = the merger's features (one row per <|image_pad|>, images in order), 1..n-1 = DeepStack
 * features in deepstack_visual_indexes order (Qwen3-VL only). f32, row-major, owned by f. */
int qvl_features_count(const qvl_features *f);
const float *qvl_features_data(const qvl_features *f, int i, int64_t *rows, int64_t *cols);
const char *qvl_features_name(const qvl_features *f, int i); /* "features", "deepstack.0", ... */
void qvl_features_free(qvl_features *f);                        /* NULL is a no-op */

/* ---------------------------------------------------------------------------------------------------
 * Images: encoded bytes -> pixel rows for qvl_encode_pixels (spec §1). The CPU path reproduces
 * transformers' Qwen2VLImageProcessor with the PIL backend bit for bit: Pillow's decoding and RGB
 * conversion, smart_resize, Pillow's BICUBIC resample, rescale + normalize, temporal duplication and the
 * patch order. JPEG, PNG and WebP are decoded; EXIF orientation is ignored, as by the reference.
 */
typedef struct qvl_image {
  const void *data;   /* encoded JPEG/PNG/WebP bytes, or a "data:<mime>;base64,<payload>" URL; borrowed */
  size_t size;        /* bytes at data */
  const uint8_t *rgb; /* instead of data: decoded interleaved RGB8, width*height*3 bytes; borrowed */
  int width, height;  /* of rgb */
} qvl_image;

typedef enum qvl_image_semantics {
  /* transformers' processor on Image.open(f): alpha dropped, min/max pixels from preprocessor_config.json */
  QVL_IMAGE_HF = 0,
  /* qwen-vl-utils' fetch_image, then the processor with do_resize=False: "RGBA" images composited on white,
   * its smart_resize variant, min/max pixels 4*F^2 and 16384*F^2 (F = patch * merge) */
  QVL_IMAGE_QWEN_VL_UTILS = 1,
} qvl_image_semantics;

typedef struct qvl_image_params {
  qvl_image_semantics semantics; /* default QVL_IMAGE_HF */
  int64_t min_pixels;            /* smart_resize bounds; 0 = the semantics' default */
  int64_t max_pixels;
  int64_t max_input_pixels;      /* decode limit on width*height, checked on the header before any pixel is
                                    decoded; 0 = 178956970 (Pillow's DecompressionBombError limit); < 0 = none */
  int n_threads;                 /* images decoded in parallel; 0 = OpenMP's default */
  int host_rows;                 /* 1: the CPU path's host f32 rows even on a CUDA engine (qvl_pixels.rows);
                                    0: a CUDA engine runs the GPU path (nvJPEG + kernels) into qvl_pixels.dev_rows */
} qvl_image_params;

qvl_image_params qvl_image_default_params(void);

#define QVL_IMAGE_HASH_BYTES 16

typedef struct qvl_image_batch qvl_image_batch;

/* Preprocesses n images for e's model (its preprocessor_config.json). p may be NULL for the defaults.
 * On a CUDA engine the rows are made on the GPU and stay there (qvl_pixels.dev_rows, bf16 = the CPU path's f32
 * rows rounded; JPEGs decoded by nvJPEG, docs/IMAGES.md), unless p->host_rows. *out is owned by the caller
 * (qvl_image_batch_free, before qvl_engine_close when it holds GPU rows). Errors name the image ("image 3: ...")
 * and leave *out NULL; nothing is returned for the other images. */
int qvl_preprocess_images(qvl_engine *e, const qvl_image *images, int n, const qvl_image_params *p,
                          qvl_image_batch **out);

/* The rows and grids, ready for qvl_encode_pixels; owned by b. */
const qvl_pixels *qvl_image_batch_pixels(const qvl_image_batch *b);
/* Total rows and row length (3*T*P*P). */
int64_t qvl_image_batch_rows(const qvl_image_batch *b, int64_t *row_len);
/* A BLAKE2b-128 digest of image i's resized RGB pixels and grid: equal digests, equal pixel rows (for one
 * model), whichever path made them. QVL_IMAGE_HASH_BYTES bytes owned by b; NULL when i is out of range (or,
 * for GPU rows, when the device copy fails). GPU rows: the first call computes every image's (one download of the
 * batch's resized pixels, hashed in parallel), so call it from the thread that uses the engine. */
const uint8_t *qvl_image_batch_hash(const qvl_image_batch *b, int i);
void qvl_image_batch_free(qvl_image_batch *b); /* NULL is a no-op */

/* The grid one image will get, from its header alone (nothing is decoded): what a chat needs to count the
 * image's <|image_pad|> tokens (t*h*w / merge^2) before preprocessing. Same errors as preprocessing's
 * header stage (format, size, pixel limit, aspect ratio). */
int qvl_image_grid(qvl_engine *e, const qvl_image *image, const qvl_image_params *p, int32_t grid_thw[3]);

/* ---------------------------------------------------------------------------------------------------
 * Text: the tokenizer (byte-level BPE read from tokenizer.json, id for id identical to HF tokenizers),
 * a streaming detokenizer, and the chat templates of Qwen2.5-VL and Qwen3-VL (spec §5).
 *
 * A qvl_tokenizer holds an encode cache and its result buffers: use it from one thread at a time (open
 * one per thread to encode in parallel). Ids and text it returns are owned by it and stay valid until
 * its next call.
 */
typedef struct qvl_tokenizer qvl_tokenizer;

/* Opens a tokenizer.json. Anything but the Qwen pipeline (BPE; NFC; Split regex + ByteLevel; ByteLevel
 * decoder) is refused with QVL_ERR_UNSUPPORTED naming the field. On failure *out is set when memory
 * allows, so qvl_tokenizer_errmsg(*out) can say why; the caller always calls qvl_tokenizer_close(*out). */
int qvl_tokenizer_open(qvl_tokenizer **out, const char *path);
/* The same from memory (json need not be NUL-terminated); what names it in messages (NULL: "tokenizer.json"). */
int qvl_tokenizer_open_json(qvl_tokenizer **out, const char *json, size_t len, const char *what);
void qvl_tokenizer_close(qvl_tokenizer *t); /* NULL is a no-op */
/* The last error's message, owned by t; "" after success. */
const char *qvl_tokenizer_errmsg(const qvl_tokenizer *t);

/* Stop ids: by default <|im_end|> and <|endoftext|> (those present). Reading a generation_config.json
 * replaces them with its eos_token_id (an id or a list); a missing file changes nothing and is not an
 * error. *ids is owned by t. */
int qvl_tokenizer_read_generation_config(qvl_tokenizer *t, const char *path);
int qvl_tokenizer_stop_ids(const qvl_tokenizer *t, const int32_t **ids); /* returns the count */

/* Encodes len bytes of UTF-8 text: added tokens (<|im_start|>, <|image_pad|>, ...) are matched in the raw
 * text first, the rest is NFC-normalized, split by the pre-tokenizer regex and merged by BPE. No BOS/EOS
 * is added. Text that is not valid UTF-8 is refused (QVL_ERR_INVALID_ARG naming the byte offset): HF
 * tokenizers only ever sees valid strings. One pre-token (a run of letters, or of spaces) longer than 256 MiB
 * is QVL_ERR_LIMIT. */
int qvl_tokenizer_encode(qvl_tokenizer *t, const char *text, size_t len, const int32_t **ids, size_t *n_ids);
/* Decodes ids as HF's decode does: the tokens' bytes joined, each invalid UTF-8 sequence replaced by
 * U+FFFD (errors="replace"), ids with no token skipped; skip_special drops tokens marked special
 * (151643-151656 in Qwen). *text is NUL-terminated; len may be NULL. */
int qvl_tokenizer_decode(qvl_tokenizer *t, const int32_t *ids, size_t n, int skip_special, const char **text,
                         size_t *len);

int32_t qvl_tokenizer_n_ids(const qvl_tokenizer *t); /* largest token id + 1 */
/* The piece of a token id as tokenizer.json spells it ("ĠHello", "<|im_end|>"), not NUL-terminated; NULL for an
 * unused id. */
const char *qvl_tokenizer_piece(const qvl_tokenizer *t, int32_t id, size_t *len);
/* The id of a piece spelt as in tokenizer.json (NUL-terminated), or -1. */
int32_t qvl_tokenizer_token_id(const qvl_tokenizer *t, const char *piece);

/* Streaming detokenizer: push ids one at a time as they are generated; each call returns the text that
 * became complete (possibly ""), never part of a UTF-8 character. flush at the end returns what is left
 * (an incomplete character as U+FFFD). The pieces concatenate to qvl_tokenizer_decode of all the ids.
 * Reads t (which must outlive it) without changing it; *text is owned by d until its next call. */
typedef struct qvl_detok qvl_detok;
int qvl_detok_open(qvl_detok **out, const qvl_tokenizer *t, int skip_special);
int qvl_detok_push(qvl_detok *d, int32_t id, const char **text, size_t *len);
int qvl_detok_flush(qvl_detok *d, const char **text, size_t *len);
void qvl_detok_close(qvl_detok *d); /* NULL is a no-op */

/* Stop strings (OpenAI's `stop`, qvl_sampling.stop), matched on the decoded text because generation sees only
 * ids: push each piece the detokenizer returns (and its flush). *emit is the text that can be shown now; a tail
 * that could still begin a stop string is held back. Once the text contains a stop string *hit is 1, *emit ends
 * right before its first occurrence, the stop string and anything after it are dropped, and the caller ends
 * generation (its qvl_token_cb returns nonzero); later pushes emit nothing. flush, after the last push, returns
 * the held-back tail when no stop string matched. *emit is NUL-terminated and owned by st until its next call;
 * emit_len may be NULL. A NULL or empty stop string is QVL_ERR_INVALID_ARG; n = 0 passes text through. */
typedef struct qvl_stopper qvl_stopper;
int qvl_stopper_open(qvl_stopper **out, const char *const *stop, int n); /* strings copied; close *out always */
int qvl_stopper_push(qvl_stopper *st, const char *text, size_t len, const char **emit, size_t *emit_len, int *hit);
int qvl_stopper_flush(qvl_stopper *st, const char **emit, size_t *emit_len);
void qvl_stopper_close(qvl_stopper *st); /* NULL is a no-op */

/* Chat templates: what transformers' apply_chat_template renders with each model's chat_template, and
 * what the HF processor then feeds the model (each image's <|image_pad|> repeated t*h*w/merge^2 times). */
typedef enum qvl_chat_template {
  QVL_CHAT_QWEN2_5_VL = 1, /* default system prompt "You are a helpful assistant."; roles printed as given;
                              tools and tool_calls are not rendered */
  QVL_CHAT_QWEN3_VL = 2,   /* no default system prompt; tools, tool calls and tool responses */
} qvl_chat_template;

typedef enum qvl_part_kind { QVL_PART_TEXT = 0, QVL_PART_IMAGE = 1, QVL_PART_VIDEO = 2 } qvl_part_kind;

typedef struct qvl_chat_part {
  qvl_part_kind kind;
  const char *text;          /* QVL_PART_TEXT */
  int32_t grid_thw[3];       /* image/video: the processor's grid in patches, read only when expanding */
  const double *timestamps;  /* Qwen3-VL video, expanding: grid_thw[0] seconds, one per temporal group */
} qvl_chat_part;

typedef struct qvl_tool_call {
  const char *name;
  const char *arguments; /* JSON text; emitted verbatim (the OpenAI string form) ... */
  int arguments_object;  /* ... unless 1: then re-serialized as transformers' tojson does a dict */
} qvl_tool_call;

typedef struct qvl_chat_message {
  const char *role;           /* "system", "user", "assistant", "tool" (Qwen3-VL drops other roles) */
  const char *content;        /* string content, or NULL to use parts (NULL and no parts: empty) */
  const qvl_chat_part *parts; /* the list form: text, images and videos in order */
  int n_parts;
  const qvl_tool_call *tool_calls; /* assistant messages, Qwen3-VL */
  int n_tool_calls;
} qvl_chat_message;

typedef struct qvl_chat {
  qvl_chat_template kind;
  const qvl_chat_message *messages;
  int n_messages;
  const char *const *tools; /* Qwen3-VL: JSON text of each tool (a function schema), or NULL */
  int n_tools;
  int add_generation_prompt; /* end with "<|im_start|>assistant\n" */
  int add_vision_id;         /* "Picture 1: " / "Video 1: " before each image / video */
  int merge_size;            /* spatial merge of the vision tower; 0 = 2 (every Qwen2.5-VL and Qwen3-VL) */
} qvl_chat;

/* Renders the chat as text. expand = 0: exactly apply_chat_template's output (one <|image_pad|> per
 * image); expand = 1: the processor's text (pads repeated per grid; Qwen3-VL videos as timestamped
 * frame groups). *text is NUL-terminated and owned by t. */
int qvl_chat_render(qvl_tokenizer *t, const qvl_chat *chat, int expand, const char **text, size_t *len);
/* Renders with expansion and encodes: the input_ids the HF processor returns. */
int qvl_chat_encode(qvl_tokenizer *t, const qvl_chat *chat, const int32_t **ids, size_t *n_ids);

/* ---------------------------------------------------------------------------------------------------
 * Generation: token ids (qvl_chat_encode) and images in, token ids out, through a paged KV cache. Both backends
 * run it; on CUDA, greedy decode steps replay captured graphs (QVL_GRAPHS=0 in the environment turns that off).
 */
typedef struct qvl_sampling {
  int max_tokens;          /* new tokens at most; default 256 */
  float temperature;       /* <= 0: greedy (default) */
  int top_k;               /* 0: off */
  float top_p;             /* 1: off (default) */
  float min_p;             /* 0: off */
  uint64_t seed;           /* the same seed, prompt and model give the same tokens */
  /* Penalties on the raw logits, before temperature and the filters (greedy too), in this order:
   * repetition (transformers' RepetitionPenaltyLogitsProcessor: each id of the prompt and the output so far,
   * once, l < 0 ? l * r : l / r), then OpenAI/vLLM's frequency (l -= f * count) and presence (l -= p if
   * count > 0), count = times the id was generated (the prompt does not count). */
  float repetition_penalty; /* 1: off (default); 0 is read as 1; negative is refused */
  float presence_penalty;   /* 0: off (default) */
  float frequency_penalty;  /* 0: off (default) */
  const int32_t *stop_ids;  /* generation ends after emitting one of these (qvl_tokenizer_stop_ids); borrowed */
  int n_stop;
  /* Stop strings, borrowed. They are text, so qvl_generate_ids (ids only) does not read them: a caller that
   * detokenizes runs its stream through qvl_stopper_open(&st, s.stop, s.n_stop_strings) (see qvl run). */
  const char *const *stop;
  int n_stop_strings;
} qvl_sampling;

qvl_sampling qvl_sampling_default(void);

/* Called with each new token; return nonzero to stop after it. */
typedef int (*qvl_token_cb)(void *ud, int32_t id);

/* Prefills ids (images: the pixel rows of the images whose pad tokens ids holds, in order, or NULL) and
 * generates. A prompt plus max_tokens beyond the model's context, an id outside the vocabulary, or pad tokens
 * that do not match the images are refused before any work. Needs an engine opened with QVL_LOAD_ALL. */
int qvl_generate_ids(qvl_engine *e, const int32_t *ids, int n_ids, const qvl_pixels *images, const qvl_sampling *s,
                     qvl_token_cb cb, void *ud);

/* One prompt of a batch: ids and images as for qvl_generate_ids, with its own sampling settings. */
typedef struct qvl_request {
  const int32_t *ids;
  int n_ids;
  const qvl_pixels *images; /* or NULL */
  qvl_sampling sampling;
} qvl_request;

/* Called with each new token of request `request` (index into the batch); nonzero stops that request after it. */
typedef int (*qvl_batch_cb)(void *ud, int request, int32_t id);

/* Generates for n prompts at once: the prompts are prefilled (packed into steps of up to 8192 tokens), then every
 * running request advances one token per decode step, as one batch, until each stops (its stop ids, max_tokens,
 * or the callback). Tokens of one step reach cb in request order. Each request gets the tokens qvl_generate_ids
 * would give it (greedy: the same ids on the CPU backend). Every request is checked before any work, as in
 * qvl_generate_ids; the KV cache must hold all of them together (qvl_engine_params.kv_cache_tokens). */
int qvl_generate_batch(qvl_engine *e, const qvl_request *r, int n, qvl_batch_cb cb, void *ud);

/* ---------------------------------------------------------------------------------------------------
 * Language-model features: every token's hidden state at one layer for a batch of prompts (ids and images), what
 * transformers returns as output_hidden_states[layer], with the images' vision features (the feature extractor).
 */
#define QVL_LAYER_LAST (-1) /* the final RMSNorm's output: hidden_states[-1], what lm_head reads */

typedef struct qvl_prompt {
  const int32_t *ids; /* the token ids (qvl_chat_encode: pads expanded), borrowed */
  int n_ids;
  int n_images; /* images whose <|image_pad|> runs ids holds: the call's next n_images images, in order */
} qvl_prompt;

typedef struct qvl_hidden qvl_hidden;

/* Runs n prompts through the vision tower (one call for all their images: images holds them in prompt order, NULL
 * when none has any) and the language model (prompts packed into steps of up to 8192 tokens), and keeps each token's
 * hidden state at `layer`, L = text_layers:
 *   0            the input embeddings with the vision rows in their pad slots
 *   1 .. L-1     the residual stream entering that layer (the previous layer's output; Qwen3-VL: with its DeepStack
 *                rows added, as transformers records it)
 *   L, or QVL_LAYER_LAST  the final RMSNorm's output
 * The layers after `layer` and lm_head are not run. Refused before any work (QVL_ERR_INVALID_ARG unless said): a
 * layer outside -1..L, no prompts, an empty prompt, one longer than the context (QVL_ERR_LIMIT), an id outside the
 * vocabulary, pad runs that do not match the prompt's images, images left over; images over the engine's max_patches
 * or max_images (QVL_ERR_LIMIT). Needs an engine opened with QVL_LOAD_ALL. *out is owned by the caller
 * (qvl_hidden_free) and NULL on failure. */
int qvl_encode_prompts(qvl_engine *e, const qvl_prompt *prompts, int n, const qvl_pixels *images, int layer,
                       qvl_hidden **out);

int qvl_hidden_layer(const qvl_hidden *h); /* the layer kept, 0..L (QVL_LAYER_LAST resolved to L) */
/* Prompt i's hidden states [n_ids][text_hidden], f32 row-major, owned by h; NULL when i is out of range. */
const float *qvl_hidden_data(const qvl_hidden *h, int i, int64_t *rows, int64_t *cols);
/* The vision tower's outputs for all the call's images (qvl_encode_pixels' layout: images in order, t*h*w/merge^2
 * rows each), owned by h; NULL when there were none. */
const qvl_features *qvl_hidden_features(const qvl_hidden *h);
void qvl_hidden_free(qvl_hidden *h); /* NULL is a no-op */

#ifdef __cplusplus
}
#endif

#endif /* QVL_H */
