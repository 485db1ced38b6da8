/* qvl - the command-line tool: one binary, one subcommand per job.
 *   qvl info   --model DIR [--dummy]                      what the model is and what it needs
 *   qvl encode --model DIR [--dummy] (--pixels FILE | --grid TxHxW...) -o OUT.safetensors
 *   qvl encode --model DIR [--dummy] [--layer N|last] (--text T [--image F]... | --jsonl FILE) -o OUT.safetensors
 *   qvl preprocess --model DIR IMAGE... -o OUT.safetensors  pixel rows + grids (HF image processor)
 *   qvl export --model DIR --dummy -o OUT_DIR             write a synthetic model as an HF checkpoint
 *   qvl bench vit --model DIR --dummy --images NxHxW...   time the vision tower (JSON lines) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qvl <command> [options]\n"
          "  info   --model DIR [--dummy]                 architecture, sizes, parameters, bytes\n"
          "  encode --model DIR [--dummy] (--pixels FILE | --grid TxHxW ...) -o OUT.safetensors\n"
          "                                               vision features (and DeepStack features)\n"
          "  encode --model DIR [--dummy] [--tokenizer FILE] [--layer N|last] -o OUT.safetensors\n"
          "         (--text TEXT [--image FILE]... | --jsonl FILE)\n"
          "                                               LM hidden states of image+text inputs, one batch: --text\n"
          "                                               makes one input per --image; JSONL lines are\n"
          "                                               {\"images\": [FILE, ...], \"text\": \"...\"}; --layer: HF's\n"
          "                                               hidden_states index (0 = embeddings, last = final norm)\n"
          "  export --model DIR [--dummy] -o DIR [--shard-gb N]\n"
          "                                               write the model as a bf16 HF checkpoint\n"
          "  bench vit --model DIR [--dummy] --images NxHxW ... [--iters N] [--warmup N] [--dump FILE]\n"
          "                                               time the vision tower, one JSON line per case\n"
          "  bench tok [--tokenizer FILE] [--corpus FILE]   tokenizer encode MB/s and load time\n"
          "  bench lm --model DIR [--dummy] [--prompt N]... [--batch B,B,...] [--gen N] [--runs N] [--graphs on|off|both]\n"
          "                                               language model TTFT, TPOT and batched decode, JSON lines\n"
          "  bench e2e --model DIR [--dummy] [--image FILE | --synthetic HxW] [--question N] [--runs N]\n"
          "  bench attn-lm [--batch N]... [--context N]... [--prefill N]... [--heads H] [--kv-heads G] [--head-dim D]\n"
          "                                               the LM's paged attention alone (CUDA), one JSON line per case\n"
          "  bench linear --model DIR [--m N]... [--iters N] [--warmup N]\n"
          "                                               the LM's linear layers at decode rows (CUDA): cuBLASLt,\n"
          "                                               the GEMV kernel and the tuned pick, one JSON line per case\n"
          "  tokenize (--model DIR | --tokenizer FILE) TEXT  token ids and pieces\n"
          "  preprocess --model DIR IMAGE... -o OUT.safetensors [--qwen-vl-utils] [--min-pixels N] [--max-pixels N]\n"
          "                                               pixel rows + grids as the HF image processor makes them\n"
          "  run --model DIR [--dummy] [--image FILE]... [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]\n"
          "      [--min-p P] [--repetition-penalty R] [--presence-penalty P] [--frequency-penalty F] [--seed S]\n"
          "      [--stop STR]... [--tokenizer FILE] [--verbose] PROMPT\n"
          "                                               one chat turn, the answer streamed to stdout\n"
          "  logits --model DIR [--dummy] --in IN.safetensors -o OUT.safetensors\n"
          "                                               last-position logits of a prompt (side-by-side checks)\n"
          "  serve --model DIR [--dummy] [--tokenizer FILE] [--host H] [--port P] [--served-model-name NAME]\n"
          "                                               OpenAI-compatible HTTP server (docs/SERVING.md)\n"
          "  batch IN.jsonl [-o OUT.jsonl] --model DIR [--dummy] [--concurrency N] [--tokenizer FILE]\n"
          "                                               OpenAI batch lines offline, answers in input order\n"
          "common options: --cpu | --cuda, --threads N, --max-patches N (patches per vision call; the tower's\n"
          "device memory is planned from it at open, default 262144)\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "info")) return cmd_info(argc - 1, argv + 1);
  if (!strcmp(argv[1], "encode")) return cmd_encode(argc - 1, argv + 1);
  if (!strcmp(argv[1], "export")) return cmd_export(argc - 1, argv + 1);
  if (!strcmp(argv[1], "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
  if (!strcmp(argv[1], "bench")) return cmd_bench(argc - 1, argv + 1);
  if (!strcmp(argv[1], "preprocess")) return cmd_preprocess(argc - 1, argv + 1);
  if (!strcmp(argv[1], "run")) return cmd_run(argc - 1, argv + 1);
  if (!strcmp(argv[1], "logits")) return cmd_logits(argc - 1, argv + 1);
  if (!strcmp(argv[1], "serve")) return cmd_serve(argc - 1, argv + 1);
  if (!strcmp(argv[1], "batch")) return cmd_batch(argc - 1, argv + 1);
  fprintf(stderr, "qvl: unknown command \"%s\"\n", argv[1]);
  usage(stderr);
  return 2;
}
