/* chat_json.h - a conversation as transformers' apply_chat_template takes it (JSON messages, tools, flags; the
 * golden files of tests/data/tokenizer/) -> qvl_chat. Header-only: included by the suites that need it. */
#ifndef QVL_TESTS_CHAT_JSON_H
#define QVL_TESTS_CHAT_JSON_H

#include <cjson/cJSON.h>
#include <string.h>

#include "qvl.h"

typedef struct conv {
  qvl_chat chat;
  qvl_chat_message msgs[64];
  qvl_chat_part parts[64][16];
  qvl_tool_call calls[64][8];
  const char *tools[16];
  int n_images, n_videos;
  qvl_chat_part *images[64]; /* in order, for their grids */
  qvl_chat_part *videos[16];
  double timestamps[512]; /* Qwen3-VL videos: every temporal group's "<T.T seconds>", videos in order */
} conv;

static inline const char *str_of(const cJSON *o, const char *k) {
  const cJSON *it = cJSON_GetObjectItem(o, k);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

static inline void read_parts(conv *c, int i, const cJSON *content) {
  qvl_chat_message *m = &c->msgs[i];
  if (cJSON_IsString(content)) return (void)(m->content = content->valuestring);
  if (!cJSON_IsArray(content)) return; /* absent or null: empty */
  m->parts = c->parts[i];
  for (const cJSON *p = content->child; p && m->n_parts < 16; p = p->next) {
    qvl_chat_part *q = &c->parts[i][m->n_parts++];
    const char *type = str_of(p, "type");
    if ((type && !strcmp(type, "image")) || cJSON_GetObjectItem(p, "image") || cJSON_GetObjectItem(p, "image_url")) {
      q->kind = QVL_PART_IMAGE;
      c->images[c->n_images++] = q;
    } else if ((type && !strcmp(type, "video")) || cJSON_GetObjectItem(p, "video")) {
      q->kind = QVL_PART_VIDEO;
      if (c->n_videos < 16) c->videos[c->n_videos++] = q;
    } else {
      q->kind = QVL_PART_TEXT, q->text = str_of(p, "text");
    }
  }
}

static inline void read_calls(conv *c, int i, const cJSON *calls) {
  qvl_chat_message *m = &c->msgs[i];
  m->tool_calls = c->calls[i];
  for (const cJSON *tc = calls ? calls->child : NULL; tc && m->n_tool_calls < 8; tc = tc->next) {
    const cJSON *f = cJSON_GetObjectItem(tc, "function") ? cJSON_GetObjectItem(tc, "function") : tc;
    qvl_tool_call *q = &c->calls[i][m->n_tool_calls++];
    q->name = str_of(f, "name");
    q->arguments = str_of(f, "arguments");
    if (!q->arguments) q->arguments = str_of(f, "arguments_json"), q->arguments_object = 1;
  }
}

/* The processor's grids, one per image (or video) in order. */
static inline void read_grids(const cJSON *grids, qvl_chat_part **parts, int n) {
  int k = 0;
  for (const cJSON *g = grids ? grids->child : NULL; g && k < n; g = g->next, k++)
    for (int d = 0; d < 3; d++) parts[k]->grid_thw[d] = (int32_t)cJSON_GetArrayItem(g, d)->valuedouble;
}

static inline void read_conv(conv *c, const cJSON *rec) {
  memset(c, 0, sizeof *c);
  const char *model = str_of(rec, "model");
  c->chat.kind = !strcmp(model, "qwen3_vl") ? QVL_CHAT_QWEN3_VL : QVL_CHAT_QWEN2_5_VL;
  c->chat.add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItem(rec, "add_generation_prompt"));
  c->chat.add_vision_id = cJSON_IsTrue(cJSON_GetObjectItem(rec, "add_vision_id"));
  c->chat.messages = c->msgs;
  for (const cJSON *m = cJSON_GetObjectItem(rec, "messages")->child; m && c->chat.n_messages < 64; m = m->next) {
    int i = c->chat.n_messages++;
    c->msgs[i].role = str_of(m, "role");
    read_parts(c, i, cJSON_GetObjectItem(m, "content"));
    read_calls(c, i, cJSON_GetObjectItem(m, "tool_calls"));
  }
  const cJSON *tools = cJSON_GetObjectItem(rec, "tools_json");
  for (const cJSON *t = tools ? tools->child : NULL; t && c->chat.n_tools < 16; t = t->next)
    c->tools[c->chat.n_tools++] = t->valuestring;
  c->chat.tools = c->tools;
  read_grids(cJSON_GetObjectItem(rec, "image_grid_thw"), c->images, c->n_images);
  read_grids(cJSON_GetObjectItem(rec, "video_grid_thw"), c->videos, c->n_videos);
  const cJSON *ts = cJSON_GetObjectItem(rec, "video_timestamps");
  int n_ts = 0;
  for (const cJSON *t = ts ? ts->child : NULL; t && n_ts < 512; t = t->next) c->timestamps[n_ts++] = t->valuedouble;
  for (int v = 0, at = 0; ts && v < c->n_videos && at + c->videos[v]->grid_thw[0] <= n_ts; at += c->videos[v++]->grid_thw[0])
    c->videos[v]->timestamps = c->timestamps + at;
}

#endif
