/* err.h - status codes and the error message every library function fills on failure.
 * The library never prints and never exits: a failing function writes one line into a qvl_err
 * (naming the file, tensor or field at fault) and returns the negative status it also stores. */
#ifndef QVL_CORE_ERR_H
#define QVL_CORE_ERR_H

#include "qvl.h"

typedef struct qvl_err {
  int code;       /* QVL_OK or a negative qvl_status */
  char msg[512];  /* one line, no trailing newline; "" when code == QVL_OK */
} qvl_err;

/* Formats msg, stores code, returns code (so `return qvl_fail(err, QVL_ERR_FORMAT, "...")` reads well).
 * err may be NULL. A second failure does not overwrite the first message. */
int qvl_fail(qvl_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Clears err to QVL_OK. */
void qvl_err_clear(qvl_err *err);

#endif
