/* qvl info: what a model is, read from config.json and the name table (weights are not materialised). */
#include <stdio.h>

#include "apps.h"

static void print_count(const char *what, int64_t n) {
  printf("%-22s %lld (%.3g B)\n", what, (long long)n, (double)n / 1e9);
}

int cmd_info(int argc, char **argv) {
  app_opts o;
  if (app_parse(&o, argc, argv)) return 2;
  o.engine.load = QVL_LOAD_NONE;
  qvl_engine *e = app_open(&o);
  if (!e) return 1;
  qvl_model_info in;
  qvl_engine_info(e, &in);
  printf("model                  %s\n", o.engine.model_dir);
  printf("architecture           %s\n", in.arch);
  printf("weights                %s\n", in.weights);
  printf("vision tower           depth %d, hidden %d, heads %d, intermediate %d, out %d, patch %d, temporal %d, "
         "merge %d\n",
         in.vision_depth, in.vision_hidden, in.vision_heads, in.vision_intermediate, in.vision_out_hidden,
         in.patch_size, in.temporal_patch_size, in.merge_size);
  printf("language model         layers %d, hidden %d, heads %d, kv heads %d, head_dim %d, intermediate %d, "
         "vocab %d%s\n",
         in.text_layers, in.text_hidden, in.text_heads, in.text_kv_heads, in.text_head_dim, in.text_intermediate,
         in.vocab_size, in.tie_word_embeddings ? ", tied embeddings" : "");
  printf("tensors                %lld\n", (long long)in.n_tensors);
  print_count("parameters", in.n_params);
  print_count("  vision", in.n_params_vision);
  print_count("  language", in.n_params_text);
  printf("%-22s %.2f GiB (checkpoint); %.2f GiB bf16 weights + KV and activations at run time\n", "bytes",
         (double)in.bytes_checkpoint / (1 << 30), (double)in.n_params * 2 / (1 << 30));
  qvl_engine_close(e);
  return 0;
}
