/* Compiled with -std=c11 -pedantic -Werror by ctest (header_c11_pedantic): the public header stands alone. */
#include "qvl.h"

int main(void) {
  qvl_engine_params p = qvl_engine_default_params();
  (void)p;
  return 0;
}
