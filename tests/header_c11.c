/* Built with -std=c11 -pedantic -Werror (ctest: header_c11_pedantic): the public header stands alone as
 * strict C11, and every close/free accepts NULL. */
#include <stdio.h>

#include "qvl.h"

int main(void) {
  qvl_engine_close(NULL);
  qvl_features_free(NULL);
  qvl_hidden_free(NULL);
  qvl_stopper_close(NULL);
  qvl_engine_params p = qvl_engine_default_params();
  if (p.backend != QVL_BACKEND_AUTO || p.load != QVL_LOAD_VISION || !qvl_errmsg(NULL)) return 1;
  puts("qvl.h: strict C11 ok; NULL close/free ok");
  return 0;
}
