/* request.c - an OpenAI chat.completions body -> a job. Runs on the HTTP thread: everything that can be
 * refused without the engine is refused here (JSON, schema, types, ranges, base64), with the field named.
 * Unknown fields are ignored, as OpenAI clients send many; ones that would change the answer and that this
 * server does not do yet (n > 1) are refused rather than silently dropped. */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base64.h"
#include "server/srv_int.h"

double srv_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

void srv_errorf(srv_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...) {
  e->status = status, e->type = type, e->code = code;
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
}

#define BAD(param, ...) (srv_errorf(err, 400, "invalid_request_error", param, NULL, __VA_ARGS__), -1)

void srv_job_free(job *j) {
  if (!j) return;
  for (int i = 0; i < j->n_images; i++) free(j->image_bytes[i]);
  free(j->image_bytes), free(j->images), free(j->stop), free(j->parts), free(j->msgs), free(j->text);
  cJSON_Delete(j->root);
  pthread_cond_destroy(&j->cv);
  free(j);
}

/* A number field in [lo, hi] (integral when want_int); absent or null leaves *out alone. */
static int num_field(const cJSON *o, const char *name, double lo, double hi, int want_int, double *out,
                     srv_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsNumber(v)) return BAD(name, "'%s' must be a number", name);
  double d = v->valuedouble;
  if (!isfinite(d) || d < lo || d > hi || (want_int && d != floor(d)))
    return BAD(name, "'%s' must be %s in [%g, %g]; got %g", name, want_int ? "an integer" : "a number", lo, hi, d);
  *out = d;
  return 0;
}

static int bool_field(const cJSON *o, const char *name, int *out, srv_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsBool(v)) return BAD(name, "'%s' must be true or false", name);
  *out = cJSON_IsTrue(v);
  return 0;
}

/* stop: a string or a list of at most 16 non-empty strings (OpenAI allows 4), pointing into the JSON tree. */
static int parse_stop(job *j, const cJSON *r, srv_error *err) {
  const cJSON *stop = cJSON_GetObjectItemCaseSensitive(r, "stop");
  if (!stop || cJSON_IsNull(stop)) return 0;
  int n = cJSON_IsString(stop) ? 1 : cJSON_IsArray(stop) ? cJSON_GetArraySize(stop) : -1;
  if (n < 0 || n > 16) return BAD("stop", "'stop' must be a string or a list of at most 16 strings");
  j->stop = calloc((size_t)n + 1, sizeof *j->stop);
  if (!j->stop) return srv_errorf(err, 500, "server_error", NULL, NULL, "out of memory"), -1;
  const cJSON *s = cJSON_IsString(stop) ? stop : stop->child;
  for (int i = 0; i < n; i++, s = s->next) {
    if (!cJSON_IsString(s) || !s->valuestring[0]) return BAD("stop", "'stop' strings must be non-empty strings");
    j->stop[i] = s->valuestring;
  }
  j->s.stop = j->stop, j->s.n_stop_strings = n;
  return 0;
}

static int parse_sampling(job *j, const cJSON *r, int max_tokens, srv_error *err) {
  double mt = max_tokens, mct = -1, temp = 1.0, top_p = 1.0, top_k = 0, min_p = 0, seed = NAN, n = 1;
  if (num_field(r, "max_tokens", 1, 1 << 20, 1, &mt, err) ||
      num_field(r, "max_completion_tokens", 1, 1 << 20, 1, &mct, err) ||
      num_field(r, "temperature", 0, 2, 0, &temp, err) || num_field(r, "top_p", 0, 1, 0, &top_p, err) ||
      num_field(r, "top_k", -1, 1 << 30, 1, &top_k, err) || num_field(r, "min_p", 0, 1, 0, &min_p, err) ||
      num_field(r, "seed", -9007199254740992.0, 9007199254740992.0, 1, &seed, err) ||
      num_field(r, "n", 1, 1, 1, &n, err))
    return -1;
  if (top_p <= 0) return BAD("top_p", "'top_p' must be in (0, 1]; got 0");
  double rep = 1, pres = 0, freq = 0;
  if (num_field(r, "presence_penalty", -2, 2, 0, &pres, err) ||
      num_field(r, "frequency_penalty", -2, 2, 0, &freq, err) ||
      num_field(r, "repetition_penalty", 0, 10, 0, &rep, err))
    return -1;
  if (parse_stop(j, r, err)) return -1;
  const char *const *stop = j->s.stop;
  int n_stop = j->s.n_stop_strings;
  j->s = qvl_sampling_default();
  j->s.stop = stop, j->s.n_stop_strings = n_stop;
  j->s.repetition_penalty = (float)rep, j->s.presence_penalty = (float)pres, j->s.frequency_penalty = (float)freq;
  j->s.max_tokens = (int)(mct > 0 ? mct : mt);
  j->s.temperature = (float)temp, j->s.top_p = (float)top_p, j->s.top_k = top_k < 0 ? 0 : (int)top_k;
  /* no seed: a fresh one per request, as OpenAI samples differently each call */
  j->s.min_p = (float)min_p,
  j->s.seed = isnan(seed) ? (uint64_t)(srv_now() * 1e9) ^ (uint64_t)(uintptr_t)j : (uint64_t)(int64_t)seed;
  if (bool_field(r, "stream", &j->stream, err)) return -1;
  const cJSON *so = cJSON_GetObjectItemCaseSensitive(r, "stream_options");
  if (so && !cJSON_IsNull(so)) {
    if (!cJSON_IsObject(so)) return BAD("stream_options", "'stream_options' must be an object");
    if (bool_field(so, "include_usage", &j->include_usage, err)) return -1;
  }
  return 0;
}

/* min_pixels / max_pixels at the top level or under mm_processor_kwargs (vLLM's spelling). */
static int parse_pixels(job *j, const cJSON *r, srv_error *err) {
  j->ip = qvl_image_default_params();
  const cJSON *kw = cJSON_GetObjectItemCaseSensitive(r, "mm_processor_kwargs");
  if (kw && !cJSON_IsNull(kw) && !cJSON_IsObject(kw))
    return BAD("mm_processor_kwargs", "'mm_processor_kwargs' must be an object");
  double mn = 0, mx = 0;
  for (int pass = 0; pass < 2; pass++) {
    const cJSON *o = pass ? kw : r;
    if (o && (num_field(o, "min_pixels", 1, 1e12, 1, &mn, err) || num_field(o, "max_pixels", 1, 1e12, 1, &mx, err)))
      return -1;
  }
  if (mn && mx && mn > mx) return BAD("max_pixels", "'min_pixels' (%.0f) exceeds 'max_pixels' (%.0f)", mn, mx);
  j->ip.min_pixels = (int64_t)mn, j->ip.max_pixels = (int64_t)mx;
  return 0;
}

/* file://PATH under the --allowed-local-media-path directory (media_dir, already a realpath): the path is resolved
 * (symlinks, "..") before the check, then read whole, at most 64 MiB. */
static int read_local(job *j, const char *path, char *param, srv_error *err) {
  char real[PATH_MAX];
  size_t n = strlen(j->media_dir);
  if (!realpath(path, real) || strncmp(real, j->media_dir, n) || real[n] != '/')
    return BAD(param, "%s: %.200s is not a file under --allowed-local-media-path", param, path);
  FILE *f = fopen(real, "rb");
  long size = f && !fseek(f, 0, SEEK_END) ? ftell(f) : -1;
  uint8_t *b = size > 0 && size <= (64l << 20) && !fseek(f, 0, SEEK_SET) ? malloc((size_t)size) : NULL;
  int ok = b && fread(b, 1, (size_t)size, f) == (size_t)size;
  if (f) fclose(f);
  if (!ok) return free(b), BAD(param, "%s: cannot read %.200s (empty, over 64 MiB, or not a file)", param, path);
  int i = j->n_images++;
  j->image_bytes[i] = b, j->images[i].data = b, j->images[i].size = (size_t)size;
  return 0;
}

/* One image_url part: data: URLs, and file:// ones when the server names a media directory. The bytes are decoded
 * here; the image itself on the worker. */
static int parse_image(job *j, const cJSON *part, char *param, srv_error *err) {
  const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
  const cJSON *url = cJSON_IsObject(iu) ? cJSON_GetObjectItemCaseSensitive(iu, "url") : iu;
  if (!cJSON_IsString(url)) return BAD(param, "%s: 'image_url' must be {\"url\": \"data:...\"} or a string", param);
  const char *u = url->valuestring;
  if (!strncmp(u, "file://", 7) && j->media_dir) return read_local(j, u + 7, param, err);
  if (strncmp(u, "data:", 5))
    return BAD(param, "%s: only data: URLs (data:image/png;base64,...) are accepted; %s", param,
               !strncmp(u, "http://", 7) || !strncmp(u, "https://", 8)
                   ? "this server does not fetch http(s) URLs (it has no HTTP client): send the image as a data: URL, "
                     "or as file:// under --allowed-local-media-path"
               : !strncmp(u, "file://", 7) || u[0] == '/'
                   ? "local files are not served (qvl serve --allowed-local-media-path DIR allows file:// there)"
                   : "not a URL this server takes");
  qvl_err e = {0};
  char mime[64];
  int i = j->n_images;
  if (qvl_data_url_decode(&j->image_bytes[i], &j->images[i].size, mime, sizeof mime, u, strlen(u), param, &e))
    return BAD(param, "%s", e.msg);
  j->images[i].data = j->image_bytes[i];
  j->n_images++;
  return 0;
}

/* A message's content: a string, null, or a list of text / image_url parts. */
static int parse_content(job *j, qvl_chat_message *m, const cJSON *c, int mi, char *param, srv_error *err) {
  if (!c || cJSON_IsNull(c)) return 0;
  if (cJSON_IsString(c)) return m->content = c->valuestring, 0;
  snprintf(param, 96, "messages[%d].content", mi);
  if (!cJSON_IsArray(c)) return BAD(param, "'%s' must be a string or a list of parts", param);
  m->parts = j->parts + j->n_parts;
  int pi = 0;
  for (const cJSON *p = c->child; p; p = p->next, pi++) {
    snprintf(param, 96, "messages[%d].content[%d]", mi, pi);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsObject(p) || !cJSON_IsString(type)) return BAD(param, "%s must be an object with a 'type'", param);
    qvl_chat_part *q = &j->parts[j->n_parts];
    memset(q, 0, sizeof *q);
    if (!strcmp(type->valuestring, "text")) {
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
      if (!cJSON_IsString(t)) return BAD(param, "%s: 'text' must be a string", param);
      q->kind = QVL_PART_TEXT, q->text = t->valuestring;
    } else if (!strcmp(type->valuestring, "image_url")) {
      if (parse_image(j, p, param, err)) return -1;
      q->kind = QVL_PART_IMAGE;
    } else {
      return BAD(param, "%s: part type '%s' is not supported (text, image_url)", param, type->valuestring);
    }
    j->n_parts++, m->n_parts++;
  }
  return 0;
}

/* Counts parts and image parts first so every array is allocated once. */
static int count_parts(const cJSON *msgs, int *n_parts, int *n_images) {
  *n_parts = *n_images = 0;
  for (const cJSON *m = msgs->child; m; m = m->next) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!cJSON_IsArray(c)) continue;
    for (const cJSON *p = c->child; p; p = p->next) {
      const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
      (*n_parts)++;
      *n_images += cJSON_IsString(type) && !strcmp(type->valuestring, "image_url");
    }
  }
  return 0;
}

static int parse_messages(job *j, const cJSON *r, int max_images, srv_error *err) {
  char param[96];
  const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(r, "messages");
  if (!cJSON_IsArray(msgs) || !cJSON_GetArraySize(msgs)) return BAD("messages", "'messages' must be a non-empty list");
  int np, ni;
  count_parts(msgs, &np, &ni);
  if (ni > max_images) return BAD("messages", "%d images in one request; this server takes at most %d", ni, max_images);
  j->n_msgs = cJSON_GetArraySize(msgs);
  j->msgs = calloc((size_t)j->n_msgs, sizeof *j->msgs), j->parts = calloc((size_t)np + 1, sizeof *j->parts);
  j->images = calloc((size_t)ni + 1, sizeof *j->images),
  j->image_bytes = calloc((size_t)ni + 1, sizeof *j->image_bytes);
  if (!j->msgs || !j->parts || !j->images || !j->image_bytes)
    return srv_errorf(err, 500, "server_error", NULL, NULL, "out of memory"), -1;
  int mi = 0;
  for (const cJSON *m = msgs->child; m; m = m->next, mi++) {
    snprintf(param, 96, "messages[%d]", mi);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    if (!cJSON_IsObject(m) || !cJSON_IsString(role)) return BAD(param, "%s must be an object with a 'role'", param);
    const char *rl = role->valuestring;
    if (strcmp(rl, "system") && strcmp(rl, "user") && strcmp(rl, "assistant") && strcmp(rl, "tool") &&
        strcmp(rl, "developer"))
      return BAD(param, "%s: unknown role '%s'", param, rl);
    j->msgs[mi].role = strcmp(rl, "developer") ? rl : "system";
    if (parse_content(j, &j->msgs[mi], cJSON_GetObjectItemCaseSensitive(m, "content"), mi, param, err)) return -1;
  }
  return 0;
}

int srv_parse_request(job *j, const char *body, size_t len, const char *model, int max_images, int max_tokens,
                      srv_error *err) {
  const char *end = NULL;
  j->root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
  if (!j->root)
    return BAD(NULL, "the body is not valid JSON (at byte %td of %zu)", end ? end - body : (ptrdiff_t)0, len);
  while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
  if (end < body + len)
    return BAD(NULL, "the body has more after its JSON value (at byte %td of %zu)", end - body, len);
  return srv_parse_body(j, NULL, model, max_images, max_tokens, err);
}

int srv_parse_body(job *j, cJSON *root, const char *model, int max_images, int max_tokens, srv_error *err) {
  if (root) j->root = root;
  if (!cJSON_IsObject(j->root)) return BAD(NULL, "the body must be a JSON object");
  const cJSON *mdl = cJSON_GetObjectItemCaseSensitive(j->root, "model");
  if (mdl && !cJSON_IsNull(mdl) && !cJSON_IsString(mdl)) return BAD("model", "'model' must be a string");
  if (model && cJSON_IsString(mdl) && strcmp(mdl->valuestring, model))
    return srv_errorf(err, 404, "not_found_error", "model", "model_not_found",
                      "the model '%.200s' does not exist; this server serves '%.200s'", mdl->valuestring, model),
           -1;
  if (parse_sampling(j, j->root, max_tokens, err) || parse_pixels(j, j->root, err)) return -1;
  return parse_messages(j, j->root, max_images, err);
}
