/* Stop strings on streamed text (qvl_stopper): what is shown, what is held back, where the answer ends; then the
 * real tokenizer's streaming detokenizer feeding it, so stop strings split across tokens are seen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qvl.h"
#include "testutil.h"

typedef struct shown {
  char text[4096];
  size_t n;
  int hit, pushes_after_hit;
} shown;

static void feed(qvl_stopper *st, shown *sh, const char *piece) {
  const char *e;
  size_t n;
  int hit;
  assert_int_equal(qvl_stopper_push(st, piece, strlen(piece), &e, &n, &hit), QVL_OK);
  assert_int_equal(strlen(e), n);
  if (sh->hit) sh->pushes_after_hit += n != 0;
  memcpy(sh->text + sh->n, e, n), sh->n += n, sh->text[sh->n] = 0, sh->hit = hit;
}

static void finish(qvl_stopper *st, shown *sh) {
  const char *e;
  size_t n;
  assert_int_equal(qvl_stopper_flush(st, &e, &n), QVL_OK);
  memcpy(sh->text + sh->n, e, n), sh->n += n, sh->text[sh->n] = 0;
}

/* pieces: NULL-terminated; returns what the user saw. */
static shown run_pieces(const char *const *stop, int n_stop, const char *const *pieces) {
  qvl_stopper *st = NULL;
  assert_int_equal(qvl_stopper_open(&st, stop, n_stop), QVL_OK);
  shown sh = {0};
  for (int i = 0; pieces[i]; i++) feed(st, &sh, pieces[i]);
  finish(st, &sh);
  qvl_stopper_close(st);
  assert_int_equal(sh.pushes_after_hit, 0);
  return sh;
}

static void test_stop_pieces(void **state) {
  (void)state;
  const char *const stops[2] = {"STOP", "\n\n"};
  const char *const split[] = {"Hello wor", "ld ST", "O", "P and more", " ignored", NULL};
  shown sh = run_pieces(stops, 2, split);
  assert_string_equal(sh.text, "Hello world ");
  assert_true(sh.hit);
  const char *const none[] = {"no S", "T0P here, S", "T", NULL}; /* a held-back "ST" comes out at flush */
  sh = run_pieces(stops, 2, none);
  assert_string_equal(sh.text, "no ST0P here, ST");
  assert_false(sh.hit);
  const char *const earliest[] = {"a\n\nb STOP", NULL}; /* both in one piece: the earlier one ends the text */
  sh = run_pieces(stops, 2, earliest);
  assert_string_equal(sh.text, "a");
  const char *const first[] = {"STOP", NULL};
  sh = run_pieces(stops, 2, first);
  assert_string_equal(sh.text, "");
  assert_true(sh.hit);
  const char *const passthrough[] = {"ab", "", "c", NULL};
  sh = run_pieces(NULL, 0, passthrough);
  assert_string_equal(sh.text, "abc");
}

/* Only a tail that can still become a stop string is held back: "aab" against "aaa" shows at once. */
static void test_stop_hold_back(void **state) {
  (void)state;
  const char *const stops[2] = {"aaa", "xyz"};
  qvl_stopper *st = NULL;
  assert_int_equal(qvl_stopper_open(&st, stops, 2), QVL_OK);
  shown sh = {0};
  feed(st, &sh, "aab");
  assert_string_equal(sh.text, "aab");
  feed(st, &sh, "x"); /* could begin "xyz" */
  assert_string_equal(sh.text, "aab");
  feed(st, &sh, "aa"); /* "xaa": "x" can no longer match, "aa" still can */
  assert_string_equal(sh.text, "aabx");
  feed(st, &sh, "a!");
  assert_true(sh.hit);
  assert_string_equal(sh.text, "aabx");
  qvl_stopper_close(st);
}

static void test_stop_refusals(void **state) {
  (void)state;
  qvl_stopper *st = NULL;
  const char *const empty[1] = {""}, *const null[2] = {"a", NULL};
  assert_int_equal(qvl_stopper_open(&st, empty, 1), QVL_ERR_INVALID_ARG);
  qvl_stopper_close(st);
  assert_int_equal(qvl_stopper_open(&st, null, 2), QVL_ERR_INVALID_ARG);
  qvl_stopper_close(st);
  assert_int_equal(qvl_stopper_open(&st, NULL, 1), QVL_ERR_INVALID_ARG);
  qvl_stopper_close(st);
}

/* The detokenizer's pieces of a real encoding through the stopper: the shown text is the decoded text up to the
 * first stop string, whichever tokens it spans. */
static void test_stop_with_detok(void **state) {
  (void)state;
  qvl_tokenizer *t = tu_real_tokenizer();
  if (!t) fail_msg("the real Qwen tokenizer is missing: run scripts/fetch-tokenizer.sh");
  const char *text = "The café's answer is: forty-two. Thé end, Observation: done. ✓";
  const char *const cases[][2] = {{"Observation:", "The café's answer is: forty-two. Thé end, "},
                                  {"é end", "The café's answer is: forty-two. Th"},
                                  {"ty-t", "The café's answer is: for"},
                                  {"nowhere", NULL}};
  const int32_t *ids;
  size_t n;
  assert_int_equal(qvl_tokenizer_encode(t, text, strlen(text), &ids, &n), QVL_OK);
  int32_t *copy = malloc(n * sizeof *copy);
  memcpy(copy, ids, n * sizeof *copy);
  for (int c = 0; c < 4; c++) {
    qvl_detok *d = NULL;
    qvl_stopper *st = NULL;
    assert_int_equal(qvl_detok_open(&d, t, 1), QVL_OK);
    assert_int_equal(qvl_stopper_open(&st, &cases[c][0], 1), QVL_OK);
    shown sh = {0};
    const char *piece;
    size_t len;
    for (size_t i = 0; i < n && !sh.hit; i++) {
      assert_int_equal(qvl_detok_push(d, copy[i], &piece, &len), QVL_OK);
      feed(st, &sh, piece);
    }
    assert_int_equal(qvl_detok_flush(d, &piece, &len), QVL_OK);
    feed(st, &sh, piece);
    finish(st, &sh);
    assert_string_equal(sh.text, cases[c][1] ? cases[c][1] : text);
    assert_int_equal(sh.hit, cases[c][1] != NULL);
    qvl_stopper_close(st);
    qvl_detok_close(d);
  }
  free(copy);
  qvl_tokenizer_close(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_stop_pieces), cmocka_unit_test(test_stop_hold_back),
                                     cmocka_unit_test(test_stop_refusals), cmocka_unit_test(test_stop_with_detok)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
