/* chat.c - the Qwen2.5-VL and Qwen3-VL chat templates, hand-written (spec §5.2), and the processor's
 * expansion of vision placeholders.
 *
 * Each function mirrors one branch of the released Jinja template (the exact strings are test data in
 * scripts/make_tokenizer_goldens.py), so the rendered text equals transformers' apply_chat_template byte
 * for byte. Expansion follows Qwen2_5_VLProcessor / Qwen3VLProcessor: the i-th image's <|image_pad|>
 * becomes t*h*w/merge^2 pads; a Qwen3-VL video becomes one "<T.T seconds>" + vision block per temporal
 * group. Expanding in the text (not in the ids) keeps the tokenization of the timestamp text exact.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tok_json.h"
#include "text/tokenizer.h"

typedef struct render {
  struct qvl_tokenizer *t;
  const qvl_chat *c;
  tok_vec *out;
  int expand, merge;
  int n_images, n_videos; /* the templates' image_count / video_count */
  int rc;
} render;

static void put(render *r, const char *s, size_t n) {
  if (r->rc) return;
  if (tok_vec_reserve(r->out, r->out->n + n + 1, 1)) {
    r->rc = qvl_fail(&r->t->err, QVL_ERR_NOMEM, "qvl_chat_render: out of memory");
    return;
  }
  if (n) memcpy((char *)r->out->p + r->out->n, s, n);
  r->out->n += n;
  ((char *)r->out->p)[r->out->n] = '\0';
}

static void puts_(render *r, const char *s) { put(r, s ? s : "", s ? strlen(s) : 0); }

__attribute__((format(printf, 2, 3))) static void putf(render *r, const char *fmt, ...) {
  char buf[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  put(r, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

__attribute__((format(printf, 2, 3))) static void fail(render *r, const char *fmt, ...) {
  if (r->rc) return;
  char buf[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  r->rc = qvl_fail(&r->t->err, QVL_ERR_INVALID_ARG, "qvl_chat_render: %s", buf);
}

/* ---- transformers' tojson: json.dumps(x, ensure_ascii=False) with ", " and ": " ------------------------ */

static void py_string(render *r, const char *s, size_t n) {
  put(r, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    put(r, s + run, i - run);
    run = i + 1;
    const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                    : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
    if (esc) puts_(r, esc);
    else putf(r, "\\u%04x", c);
  }
  put(r, s + run, n - run);
  put(r, "\"", 1);
}

/* repr(float): the shortest digits that round-trip, positional when -4 < exponent <= 16. */
static void py_float(render *r, double v) {
  if (v == 0) return puts_(r, signbit(v) ? "-0.0" : "0.0");
  char tmp[40], digits[24];
  for (int p = 1; p <= 17; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
    if (strtod(tmp, NULL) == v) break;
  }
  const char *m = tmp + (tmp[0] == '-');
  int nd = 0, exp10 = atoi(strchr(tmp, 'e') + 1), decpt = exp10 + 1;
  for (const char *q = m; *q != 'e'; q++)
    if (*q != '.') digits[nd++] = *q;
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  digits[nd] = '\0';
  if (tmp[0] == '-') put(r, "-", 1);
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      put(r, "0.", 2);
      for (int i = 0; i < -decpt; i++) put(r, "0", 1);
      put(r, digits, (size_t)nd);
    } else if (decpt >= nd) {
      put(r, digits, (size_t)nd);
      for (int i = nd; i < decpt; i++) put(r, "0", 1);
      put(r, ".0", 2);
    } else {
      put(r, digits, (size_t)decpt);
      put(r, ".", 1);
      put(r, digits + decpt, (size_t)(nd - decpt));
    }
    return;
  }
  put(r, digits, 1);
  if (nd > 1) put(r, ".", 1), put(r, digits + 1, (size_t)(nd - 1));
  putf(r, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
}

static int py_number(render *r, tj *j) {
  size_t a = j->i;
  int64_t v;
  if (tj_int(j, &v) == 0 && j->i - a < 18) return putf(r, "%lld", (long long)v), 0; /* Python ints stay exact */
  j->i = a;
  size_t b = a;
  while (b < j->n && strchr("+-0123456789.eE", j->s[b])) b++;
  int all_digits = 1;
  for (size_t i = a + (j->s[a] == '-'); i < b; i++) all_digits &= j->s[i] >= '0' && j->s[i] <= '9';
  if (b == a) return -1;
  if (all_digits) { /* a long integer: json keeps every digit (and "-0" is 0) */
    size_t s = a + (j->s[a] == '-');
    while (s + 1 < b && j->s[s] == '0') s++;
    if (j->s[a] == '-' && !(b - s == 1 && j->s[s] == '0')) put(r, "-", 1);
    put(r, j->s + s, b - s);
  } else {
    char buf[64];
    if (b - a >= sizeof buf) return -1;
    memcpy(buf, j->s + a, b - a), buf[b - a] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (*end) return -1;
    py_float(r, d);
  }
  j->i = b;
  return 0;
}

static int py_value(render *r, tj *j, char **buf, size_t *cap, int depth) {
  int c = tj_peek(j);
  size_t len;
  if (depth > 100) return -1;
  if (c == '"') {
    if (tj_string(j, buf, cap, &len)) return -1;
    py_string(r, *buf, len);
    return 0;
  }
  if (c == '{' || c == '[') {
    int close = c == '{' ? '}' : ']';
    j->i++;
    put(r, c == '{' ? "{" : "[", 1);
    for (int first = 1; !tj_eat(j, close); first = 0) {
      if (!first && !tj_eat(j, ',')) return -1;
      if (!first) put(r, ", ", 2);
      if (c == '{') {
        if (tj_string(j, buf, cap, &len) || !tj_eat(j, ':')) return -1;
        py_string(r, *buf, len);
        put(r, ": ", 2);
      }
      if (py_value(r, j, buf, cap, depth + 1)) return -1;
    }
    put(r, c == '{' ? "}" : "]", 1);
    return 0;
  }
  static const char *lits[3] = {"true", "false", "null"};
  for (int k = 0; k < 3; k++)
    if (j->n - j->i >= strlen(lits[k]) && !memcmp(j->s + j->i, lits[k], strlen(lits[k])))
      return puts_(r, lits[k]), j->i += strlen(lits[k]), 0;
  return py_number(r, j);
}

static void tojson(render *r, const char *json, const char *what) {
  if (!json) return fail(r, "%s: NULL JSON", what);
  tj j = {json, strlen(json), 0};
  char *buf = NULL;
  size_t cap = 0;
  if (py_value(r, &j, &buf, &cap, 0) || tj_peek(&j) != -1) fail(r, "%s: not valid JSON near byte %zu", what, j.i);
  free(buf);
}

/* ---- content ------------------------------------------------------------------------------------------- */

static void vision_block(render *r, const char *pad, int64_t n) {
  puts_(r, "<|vision_start|>");
  for (int64_t i = 0; i < n && !r->rc; i++) puts_(r, pad);
  puts_(r, "<|vision_end|>");
}

static int64_t grid_tokens(render *r, const qvl_chat_part *p, int frames) {
  const int32_t *g = p->grid_thw;
  if (g[0] < 1 || g[1] < 1 || g[2] < 1 || g[1] % r->merge || g[2] % r->merge || (int64_t)g[0] * g[1] * g[2] > (1 << 30))
    return fail(r, "grid %dx%dx%d: needs t, h, w >= 1 with h and w multiples of %d", g[0], g[1], g[2], r->merge), 0;
  return (int64_t)(frames ? 1 : g[0]) * g[1] * g[2] / ((int64_t)r->merge * r->merge);
}

static void image(render *r, const qvl_chat_part *p) {
  r->n_images++;
  if (r->c->add_vision_id) putf(r, "Picture %d: ", r->n_images);
  vision_block(r, "<|image_pad|>", r->expand ? grid_tokens(r, p, 0) : 1);
}

static void video(render *r, const qvl_chat_part *p) {
  r->n_videos++;
  if (r->c->add_vision_id) putf(r, "Video %d: ", r->n_videos);
  if (!r->expand) return vision_block(r, "<|video_pad|>", 1);
  if (r->c->kind == QVL_CHAT_QWEN2_5_VL) return vision_block(r, "<|video_pad|>", grid_tokens(r, p, 0));
  int64_t per_frame = grid_tokens(r, p, 1);
  if (!p->timestamps) return fail(r, "a Qwen3-VL video needs timestamps (one per temporal group) to expand");
  for (int k = 0; k < p->grid_thw[0] && !r->rc; k++) {
    putf(r, "<%.1f seconds>", p->timestamps[k]);
    vision_block(r, "<|video_pad|>", per_frame);
  }
}

/* The content of one message; text_only as the templates render system and assistant messages. */
static void content(render *r, const qvl_chat_message *m, int text_only) {
  if (m->content) return puts_(r, m->content);
  if (m->n_parts && !m->parts) return fail(r, "message with n_parts = %d and no parts", m->n_parts);
  for (int i = 0; i < m->n_parts && !r->rc; i++) {
    const qvl_chat_part *p = &m->parts[i];
    if (p->kind == QVL_PART_TEXT) puts_(r, p->text);
    else if (text_only) continue;
    else if (p->kind == QVL_PART_IMAGE) image(r, p);
    else if (p->kind == QVL_PART_VIDEO) video(r, p);
    else fail(r, "part kind %d is not text, image or video", (int)p->kind);
  }
}

static int truthy(const qvl_chat_message *m) { return m->content ? m->content[0] != '\0' : m->n_parts > 0; }

static int role_is(const qvl_chat_message *m, const char *role) { return m->role && !strcmp(m->role, role); }

/* ---- Qwen2.5-VL ---------------------------------------------------------------------------------------- */

static void render_qwen2_5(render *r) {
  const qvl_chat *c = r->c;
  for (int i = 0; i < c->n_messages && !r->rc; i++) {
    const qvl_chat_message *m = &c->messages[i];
    if (i == 0 && !role_is(m, "system")) puts_(r, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
    puts_(r, "<|im_start|>");
    puts_(r, m->role);
    puts_(r, "\n");
    content(r, m, 0);
    puts_(r, "<|im_end|>\n");
  }
}

/* ---- Qwen3-VL ------------------------------------------------------------------------------------------ */

static void tool_calls(render *r, const qvl_chat_message *m) {
  if (m->n_tool_calls && !m->tool_calls)
    return fail(r, "message with n_tool_calls = %d and no tool_calls", m->n_tool_calls);
  for (int k = 0; k < m->n_tool_calls && !r->rc; k++) {
    const qvl_tool_call *tc = &m->tool_calls[k];
    if (k > 0 || truthy(m)) puts_(r, "\n");
    puts_(r, "<tool_call>\n{\"name\": \"");
    puts_(r, tc->name);
    puts_(r, "\", \"arguments\": ");
    if (tc->arguments_object) tojson(r, tc->arguments, "tool call arguments");
    else puts_(r, tc->arguments);
    puts_(r, "}\n</tool_call>");
  }
}

static void qwen3_system(render *r) {
  const qvl_chat *c = r->c;
  const qvl_chat_message *first = c->n_messages > 0 && role_is(&c->messages[0], "system") ? &c->messages[0] : NULL;
  if (c->n_tools <= 0) {
    if (first) puts_(r, "<|im_start|>system\n"), content(r, first, 1), puts_(r, "<|im_end|>\n");
    return;
  }
  if (!c->tools) return fail(r, "n_tools = %d and no tools", c->n_tools);
  puts_(r, "<|im_start|>system\n");
  if (first) content(r, first, 1), puts_(r, "\n\n");
  puts_(r, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
           "function signatures within <tools></tools> XML tags:\n<tools>");
  for (int k = 0; k < c->n_tools && !r->rc; k++) puts_(r, "\n"), tojson(r, c->tools[k], "tool");
  puts_(r, "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
           "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
           "<args-json-object>}\n</tool_call><|im_end|>\n");
}

static void render_qwen3(render *r) {
  const qvl_chat *c = r->c;
  qwen3_system(r);
  for (int i = 0; i < c->n_messages && !r->rc; i++) {
    const qvl_chat_message *m = &c->messages[i];
    if (role_is(m, "user")) {
      puts_(r, "<|im_start|>user\n"), content(r, m, 0), puts_(r, "<|im_end|>\n");
    } else if (role_is(m, "assistant")) {
      puts_(r, "<|im_start|>assistant\n"), content(r, m, 1), tool_calls(r, m), puts_(r, "<|im_end|>\n");
    } else if (role_is(m, "tool")) { /* consecutive tool messages share one user turn */
      if (i == 0 || !role_is(&c->messages[i - 1], "tool")) puts_(r, "<|im_start|>user");
      puts_(r, "\n<tool_response>\n"), content(r, m, 0), puts_(r, "\n</tool_response>");
      if (i == c->n_messages - 1 || !role_is(&c->messages[i + 1], "tool")) puts_(r, "<|im_end|>\n");
    } /* the template renders no other role (a later system message included) */
  }
}

/* ---- API ------------------------------------------------------------------------------------------------ */

static int render_into(qvl_tokenizer *t, const qvl_chat *c, int expand, tok_vec *out) {
  render r = {.t = t, .c = c, .out = out, .expand = expand, .merge = c->merge_size ? c->merge_size : 2};
  out->n = 0;
  put(&r, "", 0);
  if (c->n_messages < 0 || (c->n_messages && !c->messages) || c->n_tools < 0 || r.merge < 1) fail(&r, "bad counts");
  for (int i = 0; i < c->n_messages && !r.rc; i++)
    if (!c->messages[i].role) fail(&r, "message %d has no role", i);
  if (r.rc) return r.rc;
  if (c->kind == QVL_CHAT_QWEN2_5_VL) render_qwen2_5(&r);
  else if (c->kind == QVL_CHAT_QWEN3_VL) render_qwen3(&r);
  else fail(&r, "unknown template kind %d", (int)c->kind);
  if (c->add_generation_prompt) puts_(&r, "<|im_start|>assistant\n");
  return r.rc;
}

int qvl_chat_render(qvl_tokenizer *t, const qvl_chat *chat, int expand, const char **text, size_t *len) {
  if (!t) return QVL_ERR_INVALID_ARG;
  qvl_err_clear(&t->err);
  if (!chat || !text) return qvl_fail(&t->err, QVL_ERR_INVALID_ARG, "qvl_chat_render: NULL argument");
  int rc = render_into(t, chat, expand, &t->text);
  if (rc) return rc;
  *text = t->text.p;
  if (len) *len = t->text.n;
  return QVL_OK;
}

int qvl_chat_encode(qvl_tokenizer *t, const qvl_chat *chat, const int32_t **ids, size_t *n_ids) {
  const char *text;
  size_t len;
  int rc = qvl_chat_render(t, chat, 1, &text, &len);
  return rc ? rc : qvl_tokenizer_encode(t, text, len, ids, n_ids);
}
