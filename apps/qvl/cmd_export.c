/* qvl export: writes the model (typically --dummy synthetic weights) as a bf16 HF checkpoint directory, so
 * that transformers can load exactly the weights qvl runs. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "apps.h"

int cmd_export(int argc, char **argv) {
  app_opts o;
  if (app_parse(&o, argc, argv)) return 2;
  if (!o.out) {
    fprintf(stderr, "qvl export: -o DIR is required\n");
    return 2;
  }
  if (mkdir(o.out, 0755) && errno != EEXIST) {
    perror(o.out);
    return 1;
  }
  o.engine.load = QVL_LOAD_NONE;
  qvl_engine *e = app_open(&o);
  if (!e) return 1;
  int rc = qvl_engine_export(e, o.out, (int64_t)(o.shard_gb * (1 << 30)));
  if (rc) fprintf(stderr, "qvl export: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  else fprintf(stderr, "qvl export: wrote %s\n", o.out);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
