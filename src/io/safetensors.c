/* safetensors.c - see safetensors.h.
 *
 * A model owns its mapped files and a tensor table sorted by name (st_at iterates in name order,
 * st_find is a binary search). Everything is attached to the model as soon as it exists, so every
 * failure path of st_open just calls st_close.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* GNU strerror_r (returns the message; the library is used from several threads) */
#endif
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/half.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is used in place"
#endif

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define SUFFIX ".safetensors"
/* JSON numbers arrive as doubles, exact up to 2^53; nothing larger can be a dimension or an offset of a
 * file that fits on a disk. */
#define MAX_EXACT 9007199254740992.0

static const struct {
  const char *name;
  size_t size;
} dtypes[ST_NDTYPES] = {
  [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},     [ST_I16] = {"I16", 2},
  [ST_U16] = {"U16", 2},   [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4},
  [ST_U32] = {"U32", 4},   [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},
  [ST_U64] = {"U64", 8},   [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(st_dtype t) { return (unsigned)t < ST_NDTYPES ? dtypes[t].name : "?"; }

size_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_NDTYPES ? dtypes[t].size : 0; }

typedef struct st_file {
  char *path;
  void *map; /* the whole file, read-only; NULL until mapped */
  size_t size;
  const uint8_t *data; /* the byte buffer after the header */
  size_t data_len;
} st_file;

struct st_model {
  st_file *files;
  int nfiles;
  st_tensor *t; /* names owned; sorted by name once st_open succeeds */
  int n, cap;
};

/* ---- small helpers ---------------------------------------------------------------------------- */

static int io_fail(qvl_err *err, const char *path, const char *what, int errnum) {
  char buf[128];
  return qvl_fail(err, QVL_ERR_IO, "%s: cannot %s: %s", path, what, strerror_r(errnum, buf, sizeof buf));
}

static int nomem(qvl_err *err, const char *path) {
  return qvl_fail(err, QVL_ERR_NOMEM, "%s: out of memory", path);
}

static char *join(const char *a, const char *sep, const char *b) {
  size_t na = strlen(a), ns = strlen(sep), nb = strlen(b);
  char *s = malloc(na + ns + nb + 1);
  if (!s) return NULL;
  memcpy(s, a, na);
  memcpy(s + na, sep, ns);
  memcpy(s + na + ns, b, nb + 1);
  return s;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static int is_regular(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

/* qsort, except that an empty array may be NULL (qsort's base must never be). */
static void sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
  if (n > 1) qsort(base, n, size, cmp);
}

static int cmp_str_ptr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Length of the valid UTF-8 sequence starting s[0] (n bytes left), 0 when invalid: overlong forms,
 * surrogates and code points past U+10FFFF are refused like Rust's str::from_utf8 does. */
static size_t utf8_seq(const uint8_t *s, size_t n) {
  uint32_t cp, min;
  size_t len;
  if (s[0] < 0x80) return 1;
  if ((s[0] & 0xe0) == 0xc0) {
    len = 2, cp = s[0] & 0x1f, min = 0x80;
  } else if ((s[0] & 0xf0) == 0xe0) {
    len = 3, cp = s[0] & 0x0f, min = 0x800;
  } else if ((s[0] & 0xf8) == 0xf0) {
    len = 4, cp = s[0] & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

/* Offset of the first byte that is not UTF-8 text (or, with no_ctl, a control byte other than JSON
 * whitespace: raw control bytes are never valid JSON), n when all is well. */
static size_t bad_text_at(const uint8_t *s, size_t n, int no_ctl) {
  for (size_t i = 0; i < n;) {
    if (no_ctl && s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') return i;
    size_t k = utf8_seq(s + i, n - i);
    if (!k) return i;
    i += k;
  }
  return n;
}

static int only_json_space(const char *s, const char *end) {
  for (; s < end; s++)
    if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return 0;
  return 1;
}

static void fmt_shape(char *buf, size_t n, const int64_t *shape, int ndim) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

/* numel and byte count of a shape, 0 on overflow. */
static int shape_bytes(const int64_t *shape, int ndim, st_dtype dt, int64_t *numel, size_t *nbytes) {
  int64_t e = 1, b;
  for (int i = 0; i < ndim; i++)
    if (__builtin_mul_overflow(e, shape[i], &e)) return 0;
  if (__builtin_mul_overflow(e, (int64_t)st_dtype_size(dt), &b)) return 0;
  *numel = e;
  *nbytes = (size_t)b;
  return 1;
}

/* ---- model bookkeeping ------------------------------------------------------------------------ */

void st_close(st_model *m) {
  if (!m) return;
  for (int i = 0; i < m->nfiles; i++) {
    if (m->files[i].map) munmap(m->files[i].map, m->files[i].size);
    free(m->files[i].path);
  }
  for (int i = 0; i < m->n; i++) free((char *)m->t[i].name);
  free(m->files);
  free(m->t);
  free(m);
}

static int add_file(st_model *m, const char *path, st_file **out, qvl_err *err) {
  st_file *f = realloc(m->files, (size_t)(m->nfiles + 1) * sizeof *f);
  if (!f) return nomem(err, path);
  m->files = f;
  f += m->nfiles;
  memset(f, 0, sizeof *f);
  if (!(f->path = strdup(path))) return nomem(err, path);
  m->nfiles++;
  *out = f;
  return QVL_OK;
}

static int add_tensor(st_model *m, const st_tensor *t, qvl_err *err) {
  if (m->n == m->cap) {
    if (m->cap > INT32_MAX / 2) return qvl_fail(err, QVL_ERR_FORMAT, "%s: too many tensors", t->file);
    int cap = m->cap ? 2 * m->cap : 64;
    st_tensor *p = realloc(m->t, (size_t)cap * sizeof *p);
    if (!p) return nomem(err, t->file);
    m->t = p, m->cap = cap;
  }
  char *name = strdup(t->name);
  if (!name) return nomem(err, t->file);
  m->t[m->n] = *t;
  m->t[m->n++].name = name;
  return QVL_OK;
}

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Ties broken by file, so a duplicate's message names its files in a stable order. */
static int cmp_tensor_name_file(const void *a, const void *b) {
  int c = cmp_tensor_name(a, b);
  return c ? c : strcmp(((const st_tensor *)a)->file, ((const st_tensor *)b)->file);
}

static int cmp_tensor_offset(const void *a, const void *b) {
  const st_tensor *x = a, *y = b;
  uintptr_t px = (uintptr_t)x->data, py = (uintptr_t)y->data;
  if (px != py) return px < py ? -1 : 1;
  return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Sorts t[0..n) by name and refuses a name seen twice (within one file or across shards). */
static int check_unique(st_tensor *t, int n, qvl_err *err) {
  sort(t, (size_t)n, sizeof *t, cmp_tensor_name_file);
  for (int i = 1; i < n; i++) {
    if (strcmp(t[i - 1].name, t[i].name) != 0) continue;
    if (t[i - 1].file == t[i].file)
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: duplicate tensor \"%s\"", t[i].file, t[i].name);
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\" is also in %s (duplicate across shards)",
                    t[i].file, t[i].name, t[i - 1].file);
  }
  return QVL_OK;
}

/* Sorted by begin, the tensors of one file must cover its data buffer exactly, like the reference. */
static int check_tiling(const st_file *f, st_tensor *t, int n, qvl_err *err) {
  sort(t, (size_t)n, sizeof *t, cmp_tensor_offset);
  size_t pos = 0;
  for (int i = 0; i < n; i++) {
    size_t begin = (size_t)((const uint8_t *)t[i].data - f->data), end = begin + t[i].nbytes;
    if (begin < pos)
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%zu, %zu) overlap tensor \"%s\" "
                      "ending at %zu", f->path, t[i].name, begin, end, t[i - 1].name, pos);
    if (begin > pos)
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": gap: bytes [%zu, %zu) before it belong to no "
                      "tensor", f->path, t[i].name, pos, begin);
    pos = end;
  }
  if (pos != f->data_len)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: trailing bytes: [%zu, %zu) after the last tensor belong to no "
                    "tensor", f->path, pos, f->data_len);
  return QVL_OK;
}

/* ---- one file: mapping and header ------------------------------------------------------------- */

static int map_file(st_file *f, qvl_err *err) {
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_fail(err, f->path, "open", errno);
  struct stat sb;
  int rc = QVL_OK;
  if (fstat(fd, &sb) != 0) {
    rc = io_fail(err, f->path, "stat", errno);
  } else if (!S_ISREG(sb.st_mode)) {
    rc = qvl_fail(err, QVL_ERR_IO, "%s: not a regular file", f->path);
  } else if (sb.st_size < 8) {
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: truncated: %lld bytes, less than the 8-byte header length",
                  f->path, (long long)sb.st_size);
  } else {
    /* No MADV_WILLNEED: loading only the vision tower touches a small part of a multi-GB checkpoint. */
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) rc = io_fail(err, f->path, "mmap", errno);
    else f->map = p, f->size = (size_t)sb.st_size;
  }
  close(fd);
  return rc;
}

/* Problem with a JSON value that must be a non-negative integer, NULL when it is one. */
static const char *uint_problem(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v)) return "is not a number";
  double d = v->valuedouble;
  if (d < 0) return "is negative";
  if (d > MAX_EXACT) return "is too large";
  if ((double)(int64_t)d != d) return "is not an integer";
  *out = (int64_t)d;
  return NULL;
}

static int bad_uint(const st_file *f, const char *tensor, const char *what, int i, const cJSON *v,
                    const char *problem, qvl_err *err) {
  if (cJSON_IsNumber(v))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": %s[%d] %s (%.17g)", f->path, tensor, what, i,
                    problem, v->valuedouble);
  return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": %s[%d] %s", f->path, tensor, what, i, problem);
}

/* The one member `key` of a tensor entry (missing or repeated keys are errors). */
static int field(const st_file *f, const cJSON *obj, const char *key, const cJSON **out, qvl_err *err) {
  *out = NULL;
  for (const cJSON *c = obj->child; c; c = c->next) {
    if (strcmp(c->string, key) != 0) continue;
    if (*out)
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": key \"%s\" appears twice", f->path,
                      obj->string, key);
    *out = c;
  }
  if (!*out) return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": no \"%s\"", f->path, obj->string, key);
  return QVL_OK;
}

static int parse_dtype(const st_file *f, const cJSON *obj, st_tensor *t, qvl_err *err) {
  const cJSON *v;
  int rc = field(f, obj, "dtype", &v, err);
  if (rc) return rc;
  if (!cJSON_IsString(v))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": dtype is not a string", f->path, t->name);
  for (int d = 0; d < ST_NDTYPES; d++) {
    if (strcmp(v->valuestring, dtypes[d].name) == 0) {
      t->dtype = (st_dtype)d;
      return QVL_OK;
    }
  }
  return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%s\"", f->path, t->name,
                  v->valuestring);
}

static int parse_shape(const st_file *f, const cJSON *obj, st_tensor *t, qvl_err *err) {
  const cJSON *v;
  int rc = field(f, obj, "shape", &v, err);
  if (rc) return rc;
  if (!cJSON_IsArray(v))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": shape is not an array", f->path, t->name);
  int i = 0;
  for (const cJSON *c = v->child; c; c = c->next, i++) {
    if (i == ST_MAX_DIMS)
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": shape has more than %d dims", f->path,
                      t->name, ST_MAX_DIMS);
    const char *problem = uint_problem(c, &t->shape[i]);
    if (problem) return bad_uint(f, t->name, "shape", i, c, problem, err);
  }
  t->ndim = i;
  if (!shape_bytes(t->shape, t->ndim, t->dtype, &t->numel, &t->nbytes))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": element count of shape overflows", f->path,
                    t->name);
  return QVL_OK;
}

static int parse_offsets(const st_file *f, const cJSON *obj, st_tensor *t, qvl_err *err) {
  const cJSON *v;
  int64_t off[2];
  int rc = field(f, obj, "data_offsets", &v, err);
  if (rc) return rc;
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": data_offsets is not a [begin, end] pair",
                    f->path, t->name);
  for (int i = 0; i < 2; i++) {
    const cJSON *c = cJSON_GetArrayItem(v, i);
    const char *problem = uint_problem(c, &off[i]);
    if (problem) return bad_uint(f, t->name, "data_offsets", i, c, problem, err);
  }
  if (off[0] > off[1])
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%" PRId64 ", %" PRId64 "] have "
                    "begin > end", f->path, t->name, off[0], off[1]);
  if ((uint64_t)off[1] > f->data_len)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%" PRId64 ", %" PRId64 ") end "
                    "past the %zu bytes of data", f->path, t->name, off[0], off[1], f->data_len);
  if ((uint64_t)(off[1] - off[0]) != t->nbytes) {
    char shape[200];
    fmt_shape(shape, sizeof shape, t->shape, t->ndim);
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%" PRId64 ", %" PRId64 ") hold "
                    "%" PRId64 " bytes but %s %s needs %zu", f->path, t->name, off[0], off[1],
                    off[1] - off[0], st_dtype_name(t->dtype), shape, t->nbytes);
  }
  t->data = f->data + off[0];
  return QVL_OK;
}

static int parse_tensor(st_model *m, const st_file *f, const cJSON *obj, qvl_err *err) {
  st_tensor t = {.name = obj->string, .file = f->path};
  if (!cJSON_IsObject(obj))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\": entry is not an object", f->path, t.name);
  int rc = parse_dtype(f, obj, &t, err);
  if (!rc) rc = parse_shape(f, obj, &t, err);
  if (!rc) rc = parse_offsets(f, obj, &t, err);
  if (!rc) rc = add_tensor(m, &t, err);
  return rc;
}

static int check_metadata(const st_file *f, const cJSON *meta, qvl_err *err) {
  if (!cJSON_IsObject(meta))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: __metadata__ is not an object", f->path);
  for (const cJSON *c = meta->child; c; c = c->next)
    if (!cJSON_IsString(c))
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: __metadata__ value of \"%s\" is not a string", f->path,
                      c->string);
  return QVL_OK;
}

static int parse_entries(st_model *m, const st_file *f, const cJSON *root, qvl_err *err) {
  int rc = QVL_OK, metas = 0;
  for (const cJSON *c = root->child; c && !rc; c = c->next) {
    if (strcmp(c->string, "__metadata__") != 0) rc = parse_tensor(m, f, c, err);
    else if (metas++) rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: __metadata__ appears twice", f->path);
    else rc = check_metadata(f, c, err);
  }
  return rc;
}

/* Checks the header's length and bytes before JSON sees them. */
static int check_header_bytes(const st_file *f, size_t *len, qvl_err *err) {
  const uint8_t *p = f->map;
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)p[i] << (8 * i);
  if (n > ST_MAX_HEADER)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the %llu-byte limit", f->path,
                    n, ST_MAX_HEADER);
  if (n > f->size - 8)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: header length %" PRIu64 " runs past the end of the file (%zu "
                    "bytes)", f->path, n, f->size);
  if (n == 0) return qvl_fail(err, QVL_ERR_FORMAT, "%s: header length is 0: empty header", f->path);
  if (p[8] != '{')
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: header does not start with '{' (byte 0x%02x)", f->path, p[8]);
  size_t bad = bad_text_at(p + 8, n, 1);
  if (bad < n)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: header byte %zu (0x%02x) is %s", f->path, bad, p[8 + bad],
                    p[8 + bad] < 0x20 ? "a control character" : "not valid UTF-8");
  *len = n;
  return QVL_OK;
}

static int parse_header(st_model *m, st_file *f, qvl_err *err) {
  size_t n = 0;
  int rc = check_header_bytes(f, &n, err);
  if (rc) return rc;
  f->data = (const uint8_t *)f->map + 8 + n;
  f->data_len = f->size - 8 - n;
  /* A NUL-terminated copy: the parser then never reads the mapping past the header's end. */
  char *text = malloc(n + 1);
  if (!text) return nomem(err, f->path);
  memcpy(text, (const char *)f->map + 8, n);
  text[n] = '\0';
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
  if (!root)
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: header is not valid JSON (error near byte %td)", f->path,
                  end ? end - text : (ptrdiff_t)0);
  else if (!only_json_space(end, text + n))
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: header has non-space bytes after the JSON object (byte %td)",
                  f->path, end - text);
  else
    rc = parse_entries(m, f, root, err);
  cJSON_Delete(root);
  free(text);
  return rc;
}

/* Maps and validates one file, appending its tensors to m (unsorted across files). */
static int load_file(st_model *m, const char *path, qvl_err *err) {
  st_file *f = NULL;
  int first = m->n;
  int rc = add_file(m, path, &f, err);
  if (!rc) rc = map_file(f, err);
  if (!rc) rc = parse_header(m, f, err);
  if (!rc) rc = check_unique(m->t + first, m->n - first, err);
  if (!rc) rc = check_tiling(f, m->t + first, m->n - first, err);
  return rc;
}

static int open_single(st_model *m, const char *path, qvl_err *err) {
  int rc = load_file(m, path, err);
  return rc ? rc : check_unique(m->t, m->n, err);
}

/* ---- sharded checkpoints ---------------------------------------------------------------------- */

typedef struct wm_entry {
  const char *name, *shard; /* inside the parsed index */
} wm_entry;

static int cmp_wm_name(const void *a, const void *b) {
  return strcmp(((const wm_entry *)a)->name, ((const wm_entry *)b)->name);
}

static int cmp_wm_shard(const void *a, const void *b) {
  const wm_entry *x = a, *y = b;
  int c = strcmp(x->shard, y->shard);
  return c ? c : strcmp(x->name, y->name);
}

static int read_all(const char *path, char **out, size_t *len, qvl_err *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_fail(err, path, "open", errno);
  struct stat sb;
  int rc = QVL_OK;
  char *buf = NULL;
  if (fstat(fd, &sb) != 0) rc = io_fail(err, path, "stat", errno);
  else if ((uint64_t)sb.st_size > ST_MAX_HEADER)
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: %lld bytes, more than the %llu-byte limit for an index", path,
                  (long long)sb.st_size, ST_MAX_HEADER);
  else if (!(buf = malloc((size_t)sb.st_size + 1))) rc = nomem(err, path);
  size_t got = 0;
  while (!rc && got < (size_t)sb.st_size) {
    ssize_t k = read(fd, buf + got, (size_t)sb.st_size - got);
    if (k > 0) got += (size_t)k;
    else if (k == 0) rc = qvl_fail(err, QVL_ERR_IO, "%s: file shrank while being read", path);
    else if (errno != EINTR) rc = io_fail(err, path, "read", errno);
  }
  close(fd);
  if (rc) {
    free(buf);
    return rc;
  }
  buf[got] = '\0';
  *out = buf, *len = got;
  return QVL_OK;
}

static int check_wm_value(const char *path, const cJSON *c, qvl_err *err) {
  if (!cJSON_IsString(c))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: weight_map value for tensor \"%s\" is not a string", path,
                    c->string);
  /* Shards live beside the index: no path traversal, no hidden files. */
  const char *s = c->valuestring;
  if (!s[0] || s[0] == '.' || strchr(s, '/'))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: weight_map shard \"%s\" for tensor \"%s\" is not a plain file "
                    "name beside the index", path, s, c->string);
  return QVL_OK;
}

/* Validates weight_map and lists it as (name, shard) pairs sorted by name. */
static int parse_weight_map(const char *path, const cJSON *root, wm_entry **out, int *n, qvl_err *err) {
  const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
  if (!cJSON_IsObject(wm)) return qvl_fail(err, QVL_ERR_FORMAT, "%s: no \"weight_map\" object", path);
  int k = cJSON_GetArraySize(wm), rc = QVL_OK;
  wm_entry *e = malloc((size_t)(k ? k : 1) * sizeof *e);
  if (!e) return nomem(err, path);
  int i = 0;
  for (const cJSON *c = wm->child; c && !rc; c = c->next, i++) {
    rc = check_wm_value(path, c, err);
    e[i] = (wm_entry){.name = c->string, .shard = c->valuestring};
  }
  if (!rc) sort(e, (size_t)k, sizeof *e, cmp_wm_name);
  for (i = 1; i < k && !rc; i++)
    if (strcmp(e[i - 1].name, e[i].name) == 0)
      rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: weight_map lists tensor \"%s\" twice", path, e[i].name);
  if (rc) {
    free(e);
    return rc;
  }
  *out = e, *n = k;
  return QVL_OK;
}

/* Opens each distinct shard once; e is left sorted by (shard, name). */
static int load_shards(st_model *m, const char *path, const char *dir, wm_entry *e, int n, qvl_err *err) {
  sort(e, (size_t)n, sizeof *e, cmp_wm_shard);
  for (int i = 0; i < n; i++) {
    if (i && strcmp(e[i - 1].shard, e[i].shard) == 0) continue;
    char *shard = join(dir, "/", e[i].shard);
    if (!shard) return nomem(err, path);
    struct stat sb;
    int rc;
    if (stat(shard, &sb) != 0 && errno == ENOENT)
      rc = qvl_fail(err, QVL_ERR_MISSING, "%s: shard %s (holding tensor \"%s\") does not exist", path, shard,
                    e[i].name);
    else
      rc = load_file(m, shard, err);
    free(shard);
    if (rc) return rc;
  }
  return QVL_OK;
}

/* m sorted by name, e sorted by name: each side must name exactly the other's tensors. */
static int check_weight_map(const st_model *m, const char *path, const wm_entry *e, int n, qvl_err *err) {
  for (int i = 0; i < n; i++) {
    const st_tensor *t = st_find(m, e[i].name);
    if (!t)
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: weight_map puts tensor \"%s\" in %s, which has no such "
                      "tensor", path, e[i].name, e[i].shard);
    if (strcmp(base_name(t->file), e[i].shard) != 0)
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: weight_map puts tensor \"%s\" in %s but it is in %s", path,
                      e[i].name, e[i].shard, t->file);
  }
  for (int i = 0; i < m->n; i++) {
    wm_entry key = {.name = m->t[i].name};
    if (!bsearch(&key, e, (size_t)n, sizeof *e, cmp_wm_name))
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: tensor \"%s\" is not listed in the weight_map of %s",
                      m->t[i].file, m->t[i].name, path);
  }
  return QVL_OK;
}

static int open_shards(st_model *m, const char *path, const cJSON *root, qvl_err *err) {
  wm_entry *e = NULL;
  int n = 0;
  int rc = parse_weight_map(path, root, &e, &n, err);
  if (rc) return rc;
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
  if (!dir) rc = nomem(err, path);
  if (!rc) rc = load_shards(m, path, dir, e, n, err);
  if (!rc) rc = check_unique(m->t, m->n, err);
  if (!rc) sort(e, (size_t)n, sizeof *e, cmp_wm_name);
  if (!rc) rc = check_weight_map(m, path, e, n, err);
  free(dir);
  free(e);
  return rc;
}

static int open_index(st_model *m, const char *path, qvl_err *err) {
  char *text = NULL;
  size_t len = 0;
  int rc = read_all(path, &text, &len, err);
  if (rc) return rc;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root || !only_json_space(end, text + len))
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: not valid JSON (error near byte %td)", path,
                  end ? end - text : (ptrdiff_t)0);
  else
    rc = open_shards(m, path, root, err);
  cJSON_Delete(root);
  free(text);
  return rc;
}

/* ---- directories ------------------------------------------------------------------------------ */

static void free_names(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* The visible *.safetensors names in dir, sorted. */
static int list_safetensors(const char *dir, char ***out, int *n, qvl_err *err) {
  DIR *d = opendir(dir);
  if (!d) return io_fail(err, dir, "list directory", errno);
  char **names = NULL;
  int k = 0, rc = QVL_OK;
  for (struct dirent *de; !rc && (de = readdir(d));) {
    if (de->d_name[0] == '.' || !ends_with(de->d_name, SUFFIX)) continue;
    char **p = realloc(names, (size_t)(k + 1) * sizeof *p);
    if (p) names = p;
    if (!p || !(names[k] = strdup(de->d_name))) rc = nomem(err, dir);
    else k++;
  }
  closedir(d);
  if (rc) {
    free_names(names, k);
    return rc;
  }
  sort(names, (size_t)k, sizeof *names, cmp_str_ptr);
  *out = names, *n = k;
  return QVL_OK;
}

static int open_only_file(st_model *m, const char *dir, qvl_err *err) {
  char **names = NULL;
  int n = 0, rc = list_safetensors(dir, &names, &n, err);
  if (rc) return rc;
  if (n == 0) {
    rc = qvl_fail(err, QVL_ERR_MISSING, "%s: no %s, %s or other *%s file", dir, INDEX_NAME, SINGLE_NAME,
                  SUFFIX);
  } else if (n > 1) {
    char list[256];
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof list; i++)
      k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", names[i]);
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: %d *%s files (%s) and no %s saying how they fit together", dir, n,
                  SUFFIX, list, INDEX_NAME);
  } else {
    char *path = join(dir, "/", names[0]);
    rc = path ? open_single(m, path, err) : nomem(err, dir);
    free(path);
  }
  free_names(names, n);
  return rc;
}

static int open_dir(st_model *m, const char *dir, qvl_err *err) {
  char *index = join(dir, "/", INDEX_NAME), *single = join(dir, "/", SINGLE_NAME);
  int rc;
  if (!index || !single) rc = nomem(err, dir);
  else if (is_regular(index)) rc = open_index(m, index, err);
  else if (is_regular(single)) rc = open_single(m, single, err);
  else rc = open_only_file(m, dir, err);
  free(index);
  free(single);
  return rc;
}

int st_open(st_model **out, const char *path, qvl_err *err) {
  if (!out || !path) return qvl_fail(err, QVL_ERR_INVALID_ARG, "st_open: NULL argument");
  *out = NULL;
  st_model *m = calloc(1, sizeof *m);
  if (!m) return nomem(err, path);
  struct stat sb;
  int rc;
  if (stat(path, &sb) != 0) rc = io_fail(err, path, "open", errno);
  else if (S_ISDIR(sb.st_mode)) rc = open_dir(m, path, err);
  else if (ends_with(path, ".json")) rc = open_index(m, path, err);
  else rc = open_single(m, path, err);
  if (rc) {
    st_close(m);
    return rc;
  }
  *out = m;
  return QVL_OK;
}

int st_count(const st_model *m) { return m ? m->n : 0; }

const st_tensor *st_at(const st_model *m, int i) { return m && i >= 0 && i < m->n ? &m->t[i] : NULL; }

const st_tensor *st_find(const st_model *m, const char *name) {
  if (!m || !name || !m->n) return NULL;
  st_tensor key = {.name = name};
  return bsearch(&key, m->t, (size_t)m->n, sizeof key, cmp_tensor_name);
}

/* ---- conversions ------------------------------------------------------------------------------ */

/* dst[i] = expr over v, element i of type T: data may be unaligned, so it is copied out. */
#define CONVERT(T, expr)                                            \
  for (int64_t i = 0; i < n; i++) {                                 \
    T v;                                                            \
    memcpy(&v, (const uint8_t *)p + (size_t)i * sizeof v, sizeof v); \
    dst[i] = (expr);                                                \
  }

static int bad_convert(const st_tensor *t, const char *to, qvl_err *err) {
  return qvl_fail(err, QVL_ERR_UNSUPPORTED, "%s: tensor \"%s\": cannot convert %s to %s", t->file, t->name,
                  st_dtype_name(t->dtype), to);
}

int st_to_f32(const st_tensor *t, float *dst, qvl_err *err) {
  if (!t || (!dst && t->numel)) return qvl_fail(err, QVL_ERR_INVALID_ARG, "st_to_f32: NULL argument");
  const void *p = t->data;
  int64_t n = t->numel;
  switch (t->dtype) {
  case ST_BF16: CONVERT(uint16_t, qvl_bf16_to_f32(v)); break;
  case ST_F16: CONVERT(uint16_t, qvl_f16_to_f32(v)); break;
  case ST_F32: if (n) memcpy(dst, p, (size_t)n * sizeof(float)); break;
  case ST_F64: CONVERT(double, (float)v); break;
  case ST_F8_E4M3: CONVERT(uint8_t, qvl_e4m3_to_f32(v)); break;
  default: return bad_convert(t, "f32", err);
  }
  return QVL_OK;
}

int st_to_i64(const st_tensor *t, int64_t *dst, qvl_err *err) {
  if (!t || (!dst && t->numel)) return qvl_fail(err, QVL_ERR_INVALID_ARG, "st_to_i64: NULL argument");
  const void *p = t->data;
  int64_t n = t->numel;
  switch (t->dtype) {
  case ST_BOOL: CONVERT(uint8_t, v != 0); break;
  case ST_U8: CONVERT(uint8_t, v); break;
  case ST_I8: CONVERT(int8_t, v); break;
  case ST_I16: CONVERT(int16_t, v); break;
  case ST_U16: CONVERT(uint16_t, v); break;
  case ST_I32: CONVERT(int32_t, v); break;
  case ST_U32: CONVERT(uint32_t, v); break;
  case ST_I64: if (n) memcpy(dst, p, (size_t)n * sizeof(int64_t)); break;
  case ST_U64:
    for (int64_t i = 0; i < n; i++) {
      uint64_t v;
      memcpy(&v, (const uint8_t *)p + (size_t)i * sizeof v, sizeof v);
      if (v > INT64_MAX)
        return qvl_fail(err, QVL_ERR_UNSUPPORTED, "%s: tensor \"%s\": U64 element %" PRId64 " = %" PRIu64
                        " does not fit in int64", t->file, t->name, i, v);
      dst[i] = (int64_t)v;
    }
    break;
  default: return bad_convert(t, "int64", err);
  }
  return QVL_OK;
}

/* ---- writing ---------------------------------------------------------------------------------- */

/* A growing string whose allocation failure is sticky, so JSON building checks once at the end. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_i64(sbuf *b, int64_t v) {
  char buf[24];
  sb_add(b, buf, (size_t)snprintf(buf, sizeof buf, "%" PRId64, v));
}

/* s as a JSON string: quotes, backslashes and control bytes escaped, UTF-8 passed through. */
static void sb_json(sbuf *b, const char *s) {
  sb_add(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      sb_add(b, esc, 2);
    } else if (c < 0x20) {
      int k = snprintf(esc, sizeof esc, "\\u%04x", c);
      sb_add(b, esc, (size_t)k);
    } else {
      sb_add(b, s, 1);
    }
  }
  sb_add(b, "\"", 1);
}

/* Output goes to path.tmp, renamed over path only once complete: a failed write leaves no file. */
typedef struct tmp_out {
  const char *path;
  char *tmp;
  FILE *f;
} tmp_out;

static int out_open(tmp_out *o, const char *path, qvl_err *err) {
  o->path = path;
  o->f = NULL;
  if (!(o->tmp = join(path, "", ".tmp"))) return nomem(err, path);
  if (!(o->f = fopen(o->tmp, "wb"))) {
    int rc = io_fail(err, o->tmp, "create", errno);
    free(o->tmp);
    return rc;
  }
  return QVL_OK;
}

static int out_write(tmp_out *o, const void *p, size_t n, qvl_err *err) {
  if (n && fwrite(p, 1, n, o->f) != n) return io_fail(err, o->tmp, "write", errno);
  return QVL_OK;
}

static void out_abort(tmp_out *o) {
  if (o->f) fclose(o->f);
  unlink(o->tmp);
  free(o->tmp);
}

static int out_commit(tmp_out *o, qvl_err *err) {
  int rc = QVL_OK;
  if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0) rc = io_fail(err, o->tmp, "write", errno);
  if (fclose(o->f) != 0 && !rc) rc = io_fail(err, o->tmp, "close", errno);
  o->f = NULL;
  if (!rc && rename(o->tmp, o->path) != 0) rc = io_fail(err, o->tmp, "rename into place", errno);
  if (rc) unlink(o->tmp);
  free(o->tmp);
  return rc;
}

static int write_bytes(const char *path, const void *p, size_t n, qvl_err *err) {
  tmp_out o;
  int rc = out_open(&o, path, err);
  if (rc) return rc;
  rc = out_write(&o, p, n, err);
  if (rc) {
    out_abort(&o);
    return rc;
  }
  return out_commit(&o, err);
}

static size_t entry_nbytes(const st_entry *e) {
  int64_t numel;
  size_t nbytes;
  return shape_bytes(e->shape, e->ndim, e->dtype, &numel, &nbytes) ? nbytes : 0;
}

static int check_entry(const char *path, const st_entry *e, int i, st_fill_fn fill, qvl_err *err) {
  const char *name = e->name ? e->name : "(null)";
  int64_t numel;
  size_t nbytes;
  const char *problem = NULL;
  if (!e->name) problem = "has no name";
  else if (strcmp(e->name, "__metadata__") == 0) problem = "uses the reserved name __metadata__";
  else if (bad_text_at((const uint8_t *)e->name, strlen(e->name), 0) < strlen(e->name))
    problem = "has a name that is not valid UTF-8";
  else if ((unsigned)e->dtype >= ST_NDTYPES) problem = "has no valid dtype";
  else if (e->ndim < 0 || e->ndim > ST_MAX_DIMS) problem = "has an ndim outside [0, 8]";
  for (int d = 0; !problem && d < e->ndim; d++)
    if (e->shape[d] < 0 || e->shape[d] > (int64_t)MAX_EXACT) problem = "has a negative or huge dimension";
  if (!problem && !shape_bytes(e->shape, e->ndim, e->dtype, &numel, &nbytes))
    problem = "has a shape whose byte count overflows";
  if (!problem && !e->data && !fill) problem = "has no data and there is no fill function";
  if (problem)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "%s: entry %d (\"%s\") %s", path, i, name, problem);
  return QVL_OK;
}

static int cmp_entry_name(const void *a, const void *b) {
  return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

/* The entries sorted by name (for duplicate detection and the index's weight_map); NULL when out of
 * memory. */
static const st_entry **sorted_entries(const st_entry *e, int n) {
  const st_entry **s = malloc((size_t)(n > 0 ? n : 1) * sizeof *s);
  if (!s) return NULL;
  for (int i = 0; i < n; i++) s[i] = &e[i];
  sort(s, (size_t)n, sizeof *s, cmp_entry_name);
  return s;
}

static int check_entries(const char *path, const st_entry *e, int n, st_fill_fn fill, qvl_err *err) {
  if (!path || n < 0 || (n && !e)) return qvl_fail(err, QVL_ERR_INVALID_ARG, "st_write: bad arguments");
  double total = 0;
  for (int i = 0; i < n; i++) {
    int rc = check_entry(path, &e[i], i, fill, err);
    if (rc) return rc;
    total += (double)entry_nbytes(&e[i]);
  }
  /* Keeps every offset and sum below in range, and readable back (see MAX_EXACT). */
  if (total > MAX_EXACT)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "%s: tensors total %.17g bytes, more than 2^53", path, total);
  const st_entry **s = sorted_entries(e, n);
  if (!s) return nomem(err, path);
  int rc = QVL_OK;
  for (int i = 1; i < n && !rc; i++)
    if (strcmp(s[i - 1]->name, s[i]->name) == 0)
      rc = qvl_fail(err, QVL_ERR_INVALID_ARG, "%s: tensor \"%s\" given twice", path, s[i]->name);
  free(s);
  return rc;
}

/* The header JSON, tensors in order with contiguous offsets, padded with spaces to a multiple of 8 like
 * the reference so the data buffer starts 8-aligned. */
static int build_header(const char *path, const st_entry *e, int n, sbuf *b, qvl_err *err) {
  int64_t off = 0;
  sb_str(b, "{\"__metadata__\":{\"format\":\"pt\"}");
  for (int i = 0; i < n; i++) {
    sb_add(b, ",", 1);
    sb_json(b, e[i].name);
    sb_str(b, ":{\"dtype\":\"");
    sb_str(b, st_dtype_name(e[i].dtype));
    sb_str(b, "\",\"shape\":[");
    for (int d = 0; d < e[i].ndim; d++) {
      if (d) sb_add(b, ",", 1);
      sb_i64(b, e[i].shape[d]);
    }
    sb_str(b, "],\"data_offsets\":[");
    sb_i64(b, off);
    sb_add(b, ",", 1);
    off += (int64_t)entry_nbytes(&e[i]);
    sb_i64(b, off);
    sb_str(b, "]}");
  }
  sb_add(b, "}", 1);
  while (!b->oom && b->len % 8) sb_add(b, " ", 1);
  if (b->oom) return nomem(err, path);
  if (b->len > ST_MAX_HEADER)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "%s: header of %zu bytes exceeds the %llu-byte limit", path,
                    b->len, ST_MAX_HEADER);
  return QVL_OK;
}

/* Writes one tensor's bytes, from its data or from fill() into *buf (grown to the largest tensor so far,
 * so a multi-GB export holds one tensor at a time). index is the entry's index for fill(). */
static int write_tensor(tmp_out *o, const st_entry *e, int index, st_fill_fn fill, void *ud, void **buf,
                        size_t *cap, qvl_err *err) {
  size_t nbytes = entry_nbytes(e);
  if (e->data) return out_write(o, e->data, nbytes, err);
  if (nbytes > *cap) {
    free(*buf);
    if (!(*buf = malloc(nbytes))) {
      *cap = 0;
      return nomem(err, o->path);
    }
    *cap = nbytes;
  }
  unsigned char none;
  int rc = fill(ud, index, nbytes ? *buf : &none, nbytes, err);
  if (rc != QVL_OK)
    return qvl_fail(err, rc < 0 ? rc : QVL_ERR_INVALID_ARG, "%s: fill failed for tensor \"%s\"", o->path,
                    e->name);
  return out_write(o, *buf, nbytes, err);
}

/* Writes entries e[0..n) to path; fill() sees them as first + i. Entries are already checked. */
static int write_file(const char *path, const st_entry *e, int n, int first, st_fill_fn fill, void *ud,
                      qvl_err *err) {
  sbuf h = {0};
  tmp_out o;
  int rc = build_header(path, e, n, &h, err);
  if (!rc) rc = out_open(&o, path, err);
  if (rc) {
    free(h.p);
    return rc;
  }
  unsigned char len[8];
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
  rc = out_write(&o, len, 8, err);
  if (!rc) rc = out_write(&o, h.p, h.len, err);
  void *buf = NULL;
  size_t cap = 0;
  for (int i = 0; i < n && !rc; i++) rc = write_tensor(&o, &e[i], first + i, fill, ud, &buf, &cap, err);
  free(buf);
  free(h.p);
  if (rc) {
    out_abort(&o);
    return rc;
  }
  return out_commit(&o, err);
}

int st_write(const char *path, const st_entry *e, int n, st_fill_fn fill, void *ud, qvl_err *err) {
  int rc = check_entries(path, e, n, fill, err);
  return rc ? rc : write_file(path, e, n, 0, fill, ud, err);
}

/* Greedy split like transformers' shard_checkpoint: start a new shard when the next tensor would push a
 * non-empty shard past shard_bytes. shard[i] is entry i's shard; returns the shard count. */
static int plan_shards(const st_entry *e, int n, int64_t shard_bytes, int *shard) {
  int k = 0;
  int64_t size = 0;
  for (int i = 0; i < n; i++) {
    int64_t b = (int64_t)entry_nbytes(&e[i]);
    if (i && size + b > shard_bytes) k++, size = 0;
    shard[i] = k;
    size += b;
  }
  return k + 1;
}

static void shard_name(char *buf, size_t n, int i, int count) {
  snprintf(buf, n, "model-%05d-of-%05d.safetensors", i + 1, count);
}

/* transformers' layout: {"metadata": {"total_size": N}, "weight_map": {name: shard, ...}}, names sorted. */
static int write_index(const char *dir, const st_entry *e, int n, const int *shard, int count, qvl_err *err) {
  const st_entry **s = sorted_entries(e, n);
  char *path = join(dir, "/", INDEX_NAME);
  sbuf b = {0};
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += (int64_t)entry_nbytes(&e[i]);
  sb_str(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
  sb_i64(&b, total);
  sb_str(&b, "\n  },\n  \"weight_map\": {");
  for (int i = 0; s && i < n; i++) {
    char name[64];
    shard_name(name, sizeof name, shard[s[i] - e], count);
    sb_str(&b, i ? ",\n    " : "\n    ");
    sb_json(&b, s[i]->name);
    sb_str(&b, ": ");
    sb_json(&b, name);
  }
  sb_str(&b, "\n  }\n}\n");
  int rc = !s || !path || b.oom ? nomem(err, dir) : write_bytes(path, b.p, b.len, err);
  free(b.p);
  free(path);
  free(s);
  return rc;
}

static int write_shards(const char *dir, const st_entry *e, int n, st_fill_fn fill, void *ud,
                        const int *shard, int count, qvl_err *err) {
  for (int i = 0, s = 0; s < count; s++) {
    int first = i;
    while (i < n && shard[i] == s) i++;
    char name[64];
    shard_name(name, sizeof name, s, count);
    char *path = join(dir, "/", name);
    int rc = path ? write_file(path, e + first, i - first, first, fill, ud, err) : nomem(err, dir);
    free(path);
    if (rc) return rc;
  }
  return write_index(dir, e, n, shard, count, err);
}

int st_write_sharded(const char *dir, const st_entry *e, int n, st_fill_fn fill, void *ud,
                     int64_t shard_bytes, qvl_err *err) {
  int rc = check_entries(dir, e, n, fill, err);
  if (rc) return rc;
  if (shard_bytes <= 0) return qvl_fail(err, QVL_ERR_INVALID_ARG, "%s: shard_bytes must be positive", dir);
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) return io_fail(err, dir, "create directory", errno);
  /* A stale index would be preferred over what is written now, and must not point into a half-written
   * set of shards: it goes first and the new one is written last. */
  char *index = join(dir, "/", INDEX_NAME);
  if (!index) return nomem(err, dir);
  if (unlink(index) != 0 && errno != ENOENT) rc = io_fail(err, index, "remove stale index", errno);
  free(index);
  int *shard = malloc((size_t)(n ? n : 1) * sizeof *shard);
  if (!rc && !shard) rc = nomem(err, dir);
  int count = rc ? 0 : plan_shards(e, n, shard_bytes, shard);
  if (!rc && count == 1) {
    char *path = join(dir, "/", SINGLE_NAME);
    rc = path ? write_file(path, e, n, 0, fill, ud, err) : nomem(err, dir);
    free(path);
  } else if (!rc) {
    rc = write_shards(dir, e, n, fill, ud, shard, count, err);
  }
  free(shard);
  return rc;
}
