/* fuzz_request.c - libFuzzer target: arbitrary bytes as a POST /v1/chat/completions body through the server's
 * parser (src/server/request.c), which runs on untrusted input in the HTTP threads. It must accept or refuse
 * with a 4xx and a message, never crash, leak or read out of bounds (the input is not NUL-terminated).
 * Built alone (scripts/fuzz.sh request): the two defaults below stand in for the library's, which pull in the
 * whole engine; only their being plain values matters here. */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

qvl_sampling qvl_sampling_default(void) {
  qvl_sampling s = {.max_tokens = 256, .top_p = 1.0f};
  return s;
}
qvl_image_params qvl_image_default_params(void) {
  qvl_image_params p = {0};
  return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *body = malloc(size ? size : 1); /* exactly size bytes: a read past the end is caught */
  if (size) memcpy(body, data, size);
  job *j = calloc(1, sizeof *j);
  pthread_cond_init(&j->cv, NULL);
  srv_error err = {0};
  int rc = srv_parse_request(j, body, size, "tiny", 4, 256, &err);
  if (rc && (err.status < 400 || err.status > 500 || !err.message[0] || !err.type)) abort();
  if (!rc && (j->n_msgs < 1 || j->n_images > 4 || j->s.max_tokens < 1)) abort();
  for (int i = 0; !rc && i < j->n_images; i++)
    if (!j->images[i].data && j->images[i].size) abort();
  srv_job_free(j);
  free(body);
  return 0;
}
