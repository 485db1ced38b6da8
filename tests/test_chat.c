/* test_chat.c - chat templates without HF goldens: the rendered examples of spec §5.2, Qwen3-VL tools,
 * tool calls and tool responses as the released template writes them, transformers' tojson spelling,
 * the processor's expansion of image and video pads, and refusals of impossible chats. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_json.h"
#include "io/config.h"
#include "qvl.h"

static qvl_tokenizer *tok;

static int setup(void **state) {
  (void)state;
  tok = tu_real_tokenizer();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  qvl_tokenizer_close(tok);
  return 0;
}

static const char *render(const qvl_chat *c, int expand) {
  if (!tok) fail_msg("the real Qwen tokenizer is missing: run scripts/fetch-tokenizer.sh");
  const char *text;
  size_t len;
  if (qvl_chat_render(tok, c, expand, &text, &len)) fail_msg("%s", qvl_tokenizer_errmsg(tok));
  assert_int_equal(strlen(text), len);
  return text;
}

static const qvl_chat_part DESCRIBE[2] = {{.kind = QVL_PART_IMAGE, .grid_thw = {1, 4, 6}},
                                          {.kind = QVL_PART_TEXT, .text = "Describe this image."}};

static void test_spec_examples(void **state) {
  (void)state;
  qvl_chat_message m = {.role = "user", .parts = DESCRIBE, .n_parts = 2};
  qvl_chat c = {.kind = QVL_CHAT_QWEN2_5_VL, .messages = &m, .n_messages = 1, .add_generation_prompt = 1};
  assert_string_equal(
      render(&c, 0),
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
      "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n<|im_start|>assistant\n");
  c.kind = QVL_CHAT_QWEN3_VL;
  assert_string_equal(render(&c, 0), "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this "
                                     "image.<|im_end|>\n<|im_start|>assistant\n");
  /* expanded: 1*4*6/4 = 6 pads; encoded, each is token 151655 */
  const char *six = "<|image_pad|><|image_pad|><|image_pad|><|image_pad|><|image_pad|><|image_pad|>";
  assert_non_null(strstr(render(&c, 1), six));
  const int32_t *ids;
  size_t n;
  assert_int_equal(qvl_chat_encode(tok, &c, &ids, &n), QVL_OK);
  int pads = 0;
  for (size_t i = 0; i < n; i++) pads += ids[i] == 151655;
  assert_int_equal(pads, 6);
  assert_int_equal(ids[0], 151644);
  assert_int_equal(ids[n - 1], 198);
}

static void test_qwen2_5_roles_and_ids(void **state) {
  (void)state;
  qvl_chat_part two[3] = {{.kind = QVL_PART_IMAGE}, {.kind = QVL_PART_VIDEO}, {.kind = QVL_PART_IMAGE}};
  qvl_chat_message m[3] = {{.role = "system", .content = "Be brief."}, {.role = "user", .parts = two, .n_parts = 3},
                           {.role = "assistant", .content = "OK"}};
  qvl_chat c = {.kind = QVL_CHAT_QWEN2_5_VL, .messages = m, .n_messages = 3, .add_vision_id = 1};
  assert_string_equal(
      render(&c, 0),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nPicture 1: "
      "<|vision_start|><|image_pad|><|vision_end|>Video 1: <|vision_start|><|video_pad|><|vision_end|>"
      "Picture 2: <|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\nOK<|im_end|>\n");
}

static const char *WEATHER =
    "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather \\\"now\\\"\\n\\u00e9\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}},"
    "\"x\":1.0,\"y\":1e-5,\"z\":[true,null,-0,12345678901234567890,0.1,1e16,2.5e300,\"\\u0001\"],\"e\":{}}";
static const char *WEATHER_PY =
    "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather "
    "\\\"now\\\"\\n\xc3\xa9\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": "
    "[\"city\"]}}, "
    "\"x\": 1.0, \"y\": 1e-05, \"z\": [true, null, 0, 12345678901234567890, 0.1, 1e+16, 2.5e+300, \"\\u0001\"], \"e\": "
    "{}}";

static void test_qwen3_tools(void **state) {
  (void)state;
  const char *tools[1] = {WEATHER};
  qvl_tool_call calls[2] = {{.name = "get_weather", .arguments = "{\"city\":\"Paris\"}", .arguments_object = 1},
                            {.name = "get_weather", .arguments = "{\"city\": \"Lyon\"}"}};
  qvl_chat_part shot[2] = {{.kind = QVL_PART_TEXT, .text = "sunny"}, {.kind = QVL_PART_IMAGE}};
  qvl_chat_message m[6] = {{.role = "system", .content = "You are a bot."},
                           {.role = "user", .content = "Weather in Paris and Lyon?"},
                           {.role = "assistant", .content = "", .tool_calls = calls, .n_tool_calls = 2},
                           {.role = "tool", .content = "{\"temp\": 20}"},
                           {.role = "tool", .parts = shot, .n_parts = 2},
                           {.role = "assistant", .content = "Both sunny."}};
  qvl_chat c = {.kind = QVL_CHAT_QWEN3_VL, .messages = m, .n_messages = 6, .tools = tools, .n_tools = 1,
                .add_generation_prompt = 1};
  char want[4096];
  snprintf(
      want, sizeof want,
      "<|im_start|>system\nYou are a bot.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
      "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n%s\n</tools>\n\n"
      "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
      "XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
      "<|im_start|>user\nWeather in Paris and Lyon?<|im_end|>\n"
      "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\"}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lyon\"}}\n</tool_call><|im_end|>\n"
      "<|im_start|>user\n<tool_response>\n{\"temp\": 20}\n</tool_response>\n<tool_response>\nsunny"
      "<|vision_start|><|image_pad|><|vision_end|>\n</tool_response><|im_end|>\n"
      "<|im_start|>assistant\nBoth sunny.<|im_end|>\n<|im_start|>assistant\n",
      WEATHER_PY);
  assert_string_equal(render(&c, 0), want);
  /* content before the calls gets a newline; a later system message is not rendered */
  m[2].content = "Let me check.";
  m[0].role = "user";
  m[3].role = "system";
  c.n_tools = 0;
  const char *text = render(&c, 0);
  assert_non_null(strstr(text, "<|im_start|>assistant\nLet me check.\n<tool_call>\n"));
  assert_null(strstr(text, "{\"temp\": 20}"));
  assert_null(strstr(text, "<|im_start|>system"));
}

static void test_video_expansion(void **state) {
  (void)state;
  double ts[2] = {0.25, 1.75};
  qvl_chat_part v[2] = {{.kind = QVL_PART_VIDEO, .grid_thw = {2, 2, 4}, .timestamps = ts},
                        {.kind = QVL_PART_TEXT, .text = "?"}};
  qvl_chat_message m = {.role = "user", .parts = v, .n_parts = 2};
  qvl_chat c = {.kind = QVL_CHAT_QWEN3_VL, .messages = &m, .n_messages = 1, .add_vision_id = 1};
  assert_string_equal(render(&c, 1),
                      "<|im_start|>user\nVideo 1: <0.2 seconds><|vision_start|><|video_pad|><|video_pad|>"
                      "<|vision_end|><1.8 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>?"
                      "<|im_end|>\n");
  c.kind = QVL_CHAT_QWEN2_5_VL;
  c.add_vision_id = 0;
  const char *text = render(&c, 1), *p = text;
  int pads = 0;
  while ((p = strstr(p, "<|video_pad|>"))) pads++, p++;
  assert_int_equal(pads, 4);
}

static void test_refusals(void **state) {
  (void)state;
  if (!tok) fail_msg("the real Qwen tokenizer is missing: run scripts/fetch-tokenizer.sh");
  const char *text;
  qvl_chat_part bad_grid = {.kind = QVL_PART_IMAGE, .grid_thw = {1, 3, 4}};
  qvl_chat_part video = {.kind = QVL_PART_VIDEO, .grid_thw = {2, 2, 2}};
  qvl_chat_message m = {.role = "user", .parts = &bad_grid, .n_parts = 1};
  qvl_chat c = {.kind = QVL_CHAT_QWEN3_VL, .messages = &m, .n_messages = 1};
  assert_int_equal(qvl_chat_render(tok, &c, 0, &text, NULL), QVL_OK); /* grids matter only when expanding */
  assert_int_equal(qvl_chat_render(tok, &c, 1, &text, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_tokenizer_errmsg(tok), "grid 1x3x4", "multiples of 2");
  m.parts = &video;
  assert_int_equal(qvl_chat_render(tok, &c, 1, &text, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_tokenizer_errmsg(tok), "timestamps", NULL);
  m.role = NULL;
  assert_int_equal(qvl_chat_render(tok, &c, 0, &text, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_tokenizer_errmsg(tok), "message 0 has no role", NULL);
  const char *tools[1] = {"{\"a\": [1, }"};
  m.role = "user";
  c.tools = tools, c.n_tools = 1;
  assert_int_equal(qvl_chat_render(tok, &c, 0, &text, NULL), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_tokenizer_errmsg(tok), "tool: not valid JSON", NULL);
  c.kind = (qvl_chat_template)7;
  c.n_tools = 0;
  assert_int_equal(qvl_chat_render(tok, &c, 0, &text, NULL), QVL_ERR_INVALID_ARG);
  assert_int_equal(qvl_chat_render(tok, NULL, 0, &text, NULL), QVL_ERR_INVALID_ARG);
  assert_int_equal(qvl_chat_render(NULL, &c, 0, &text, NULL), QVL_ERR_INVALID_ARG);
}

/* tests/data/tokenizer/chat_jinja.jsonl: the verbatim templates rendered by Jinja2 in transformers' environment
 * (scripts/make_chat_jinja_goldens.py): curated and random conversations, text compared byte for byte. */
static void test_jinja_goldens(void **state) {
  (void)state;
  if (!tok) fail_msg("the real Qwen tokenizer is missing: run scripts/fetch-tokenizer.sh");
  char *text = NULL;
  size_t len = 0;
  qvl_err err = {0};
  if (qvl_read_file(tu_path("tests/data/tokenizer/chat_jinja.jsonl"), &text, &len, 16 << 20, &err))
    fail_msg("%s", err.msg);
  static conv c;
  int n[2] = {0, 0}, bad = 0, line = 0;
  for (char *p = text, *nl; p && *p; p = nl ? nl + 1 : NULL, line++) {
    nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    cJSON *rec = line ? cJSON_Parse(p) : NULL;
    if (!line) continue;
    if (!rec || !str_of(rec, "text")) fail_msg("chat_jinja.jsonl line %d: not a record", line + 1);
    read_conv(&c, rec);
    n[c.chat.kind == QVL_CHAT_QWEN3_VL]++;
    const char *got;
    if (qvl_chat_render(tok, &c.chat, 0, &got, NULL))
      fail_msg("%s: %s", str_of(rec, "name"), qvl_tokenizer_errmsg(tok));
    if (strcmp(got, str_of(rec, "text"))) {
      if (bad++ < 5) fprintf(stderr, "%s/%s differs\n--- qvl ---\n%s\n--- Jinja2 ---\n%s\n", str_of(rec, "model"),
                             str_of(rec, "name"), got, str_of(rec, "text"));
    }
    cJSON_Delete(rec);
  }
  free(text);
  fprintf(stderr, "Jinja2 goldens: %d Qwen2.5-VL + %d Qwen3-VL conversations, %d differ\n", n[0], n[1], bad);
  assert_true(n[0] >= 100 && n[1] >= 100);
  assert_int_equal(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_examples), cmocka_unit_test(test_qwen2_5_roles_and_ids),
      cmocka_unit_test(test_qwen3_tools),   cmocka_unit_test(test_video_expansion),
      cmocka_unit_test(test_refusals),      cmocka_unit_test(test_jinja_goldens),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
