/* answer.c - the JSON the server answers with (OpenAI's shapes), shared by the HTTP side and qvl batch. */
#include <time.h>

#include "server/srv_state.h"

cJSON *srv_error_json(const srv_error *e, const char *rid) {
  cJSON *o = cJSON_CreateObject(), *er = cJSON_AddObjectToObject(o, "error");
  cJSON_AddStringToObject(er, "message", e->message);
  cJSON_AddStringToObject(er, "type", e->type ? e->type : "server_error");
  if (e->param[0])
    cJSON_AddStringToObject(er, "param", e->param);
  else
    cJSON_AddNullToObject(er, "param");
  if (e->code)
    cJSON_AddStringToObject(er, "code", e->code);
  else
    cJSON_AddNullToObject(er, "code");
  cJSON_AddStringToObject(o, "id", rid);
  return o;
}

cJSON *srv_usage_json(const job *j) {
  cJSON *u = cJSON_CreateObject();
  cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
  cJSON_AddNumberToObject(u, "completion_tokens", j->n_gen);
  cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_gen);
  return u;
}

cJSON *srv_completion_head(const qvl_server *s, const job *j, const char *object, long created) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", j->id);
  cJSON_AddStringToObject(o, "object", object);
  cJSON_AddNumberToObject(o, "created", (double)created);
  cJSON_AddStringToObject(o, "model", s->model);
  return o;
}

cJSON *srv_completion_json(const qvl_server *s, const job *j) { /* under s->mu */
  cJSON *o = srv_completion_head(s, j, "chat.completion", (long)time(NULL));
  cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c0 = cJSON_CreateObject();
  cJSON_AddItemToArray(ch, c0);
  cJSON_AddNumberToObject(c0, "index", 0);
  cJSON *msg = cJSON_AddObjectToObject(c0, "message");
  cJSON_AddStringToObject(msg, "role", "assistant");
  cJSON_AddStringToObject(msg, "content", j->text ? j->text : "");
  cJSON_AddNullToObject(c0, "logprobs");
  cJSON_AddStringToObject(c0, "finish_reason", j->finish ? j->finish : "length");
  cJSON_AddItemToObject(o, "usage", srv_usage_json(j));
  return o;
}
