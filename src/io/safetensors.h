/* safetensors.h - mmap reader (single file, directory, or sharded via model.safetensors.index.json)
 * and a streaming writer (single file or shards + index).
 *
 * Validation follows the reference implementation (huggingface/safetensors): 8-byte little-endian
 * header length N with N <= 100,000,000 and 8 + N <= file size; the header is one JSON object starting
 * with '{'; every entry has a known dtype, a shape of non-negative ints and data_offsets [begin, end]
 * with begin <= end, end <= data size, end - begin == numel * dtype size (overflow-checked); sorted by
 * begin, the entries tile the data region exactly (no overlap, no gap, nothing past the last tensor).
 * "__metadata__" is an optional object of string values. Duplicate names are refused, also across shards.
 * Every error names the file (and tensor) at fault. Data is not assumed aligned.
 */
#ifndef QVL_IO_SAFETENSORS_H
#define QVL_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER 100000000ull

typedef enum st_dtype {
  ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64,
  ST_F8_E4M3, ST_F8_E5M2, ST_NDTYPES
} st_dtype;

const char *st_dtype_name(st_dtype t); /* "BF16", ... as written in the header */
size_t st_dtype_size(st_dtype t);      /* bytes per element */

typedef struct st_tensor {
  const char *name;
  st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  int64_t numel;
  const void *data;  /* inside the mapping; may be unaligned */
  size_t nbytes;
  const char *file;  /* path of the shard holding it */
} st_tensor;

typedef struct st_model st_model;

/* path: a .safetensors file, a model.safetensors.index.json, or a directory holding either
 * (index preferred; else model.safetensors; else the one *.safetensors file present).
 * For an index, every shard named in weight_map is opened and every name in weight_map must be in the
 * shard it names. *out is NULL on failure. */
int st_open(st_model **out, const char *path, qvl_err *err);
void st_close(st_model *m); /* NULL is a no-op */

int st_count(const st_model *m);
const st_tensor *st_at(const st_model *m, int i);
const st_tensor *st_find(const st_model *m, const char *name); /* NULL when absent */

/* Converts BF16, F16, F32, F64 or F8_E4M3 data to f32 (n = t->numel values); other dtypes fail. */
int st_to_f32(const st_tensor *t, float *dst, qvl_err *err);
/* Converts I32, I64, U8..U32 data to int64 (overflow-checked for U64). */
int st_to_i64(const st_tensor *t, int64_t *dst, qvl_err *err);

/* ---- writing ---------------------------------------------------------------------------------- */

typedef struct st_entry {
  const char *name;
  st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const void *data; /* numel * dtype size bytes, or NULL to ask fill() */
} st_entry;

/* Produces the bytes of entry i into dst (nbytes long); returns QVL_OK or a status (fill sets err). */
typedef int (*st_fill_fn)(void *ud, int i, void *dst, size_t nbytes, qvl_err *err);

/* Writes one file, tensors in the given order, with __metadata__ {"format":"pt"}. */
int st_write(const char *path, const st_entry *e, int n, st_fill_fn fill, void *ud, qvl_err *err);

/* Writes dir/model-0000i-of-0000n.safetensors shards of at most shard_bytes of tensor data each (a
 * single larger tensor gets its own shard) and dir/model.safetensors.index.json; one shard is
 * written as dir/model.safetensors without an index. */
int st_write_sharded(const char *dir, const st_entry *e, int n, st_fill_fn fill, void *ud,
                     int64_t shard_bytes, qvl_err *err);

#endif
