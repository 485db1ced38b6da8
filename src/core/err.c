#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>

int qvl_fail(qvl_err *err, int code, const char *fmt, ...) {
  if (!err || err->code != QVL_OK) return code;
  err->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return code;
}

void qvl_err_clear(qvl_err *err) {
  if (!err) return;
  err->code = QVL_OK;
  err->msg[0] = '\0';
}
