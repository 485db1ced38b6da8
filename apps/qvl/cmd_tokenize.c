/* qvl tokenize: the ids and pieces of a text, with the model's tokenizer.json (or --tokenizer FILE). */
#include <stdio.h>
#include <string.h>

#include "apps.h"

static void usage(void) {
  fprintf(stderr, "usage: qvl tokenize (--model DIR | --tokenizer FILE) [--model DIR] TEXT\n");
}

/* The piece as tokenizer.json spells it, quoted, with control characters escaped. */
static void print_piece(const char *p, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
    else putchar(c);
  }
  putchar('"');
}

int cmd_tokenize(int argc, char **argv) {
  const char *model = NULL, *file = NULL, *text = NULL;
  for (int i = 1; i < argc; i++) {
    int has = i + 1 < argc;
    if (!strcmp(argv[i], "--model") && has) model = argv[++i];
    else if (!strcmp(argv[i], "--tokenizer") && has) file = argv[++i];
    else if (argv[i][0] == '-' && argv[i][1] == '-' && !text)
      return usage(), fprintf(stderr, "qvl: bad option \"%s\"\n", argv[i]), 2;
    else if (!text) text = argv[i];
    else return usage(), 2;
  }
  if ((!model && !file) || !text) return usage(), 2;
  char path[4096];
  if (!file) snprintf(path, sizeof path, "%s/tokenizer.json", model), file = path;
  qvl_tokenizer *t = NULL;
  int rc = qvl_tokenizer_open(&t, file);
  if (rc == QVL_OK && model) {
    char gen[4096];
    snprintf(gen, sizeof gen, "%s/generation_config.json", model);
    rc = qvl_tokenizer_read_generation_config(t, gen);
  }
  const int32_t *ids = NULL;
  size_t n = 0;
  if (rc == QVL_OK) rc = qvl_tokenizer_encode(t, text, strlen(text), &ids, &n);
  if (rc) {
    fprintf(stderr, "qvl: %s (%s)\n", qvl_tokenizer_errmsg(t), qvl_status_name(rc));
    qvl_tokenizer_close(t);
    return 1;
  }
  printf("%zu tokens:", n);
  for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
  printf("\n");
  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    const char *p = qvl_tokenizer_piece(t, ids[i], &len);
    printf("%8d  ", ids[i]);
    print_piece(p, len);
    printf("\n");
  }
  const int32_t *stop;
  int n_stop = qvl_tokenizer_stop_ids(t, &stop);
  printf("stop ids:");
  for (int i = 0; i < n_stop; i++) printf(" %d", stop[i]);
  printf(model ? " (generation_config.json when present, else the defaults)\n" : " (defaults)\n");
  qvl_tokenizer_close(t);
  return 0;
}
