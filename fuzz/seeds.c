/* seeds.c - writes the fuzz seed corpus: one small file per decoder variant (scripts/fuzz.sh runs it). */
#include <stdio.h>

#include "img_encode.h"

static void put(const char *dir, const char *name, uint8_t *data, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || !data || fwrite(data, 1, n, f) != n) fprintf(stderr, "seeds: cannot write %s\n", path);
  if (f) fclose(f);
  free(data);
}

int main(int argc, char **argv) {
  if (argc != 4) return fprintf(stderr, "usage: seeds JPEG_DIR PNG_DIR WEBP_DIR\n"), 2;
  enum { W = 37, H = 23 };
  static uint8_t px[W * H * 8], pal[16 * 3], trns[16];
  size_t n;
  enc_synth(px, W, H, 4, 1);
  put(argv[1], "420.jpg", enc_jpeg(px, W, H, TJPF_RGB, TJSAMP_420, 90, 0, &n), n);
  put(argv[1], "444.jpg", enc_jpeg(px, W, H, TJPF_RGB, TJSAMP_444, 90, 0, &n), n);
  put(argv[1], "422.jpg", enc_jpeg(px, W, H, TJPF_RGB, TJSAMP_422, 75, 0, &n), n);
  put(argv[1], "gray.jpg", enc_jpeg(px, W, H, TJPF_GRAY, TJSAMP_GRAY, 90, 0, &n), n);
  put(argv[1], "progressive.jpg", enc_jpeg(px, W, H, TJPF_RGB, TJSAMP_420, 90, 1, &n), n);
  put(argv[1], "cmyk.jpg", enc_jpeg(px, W, H, TJPF_CMYK, TJSAMP_444, 90, 0, &n), n);
  for (int i = 0; i < 16; i++)
    pal[3 * i] = (uint8_t)(i * 16), pal[3 * i + 1] = (uint8_t)(255 - i * 9), trns[i] = (uint8_t)(i * 17);
  static uint8_t idx[W * H];
  for (int i = 0; i < W * H; i++) idx[i] = px[i] & 15;
  put(argv[2], "gray8.png", enc_png(px, W, H, PNG_COLOR_TYPE_GRAY, 8, 0, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "gray16.png", enc_png(px, W, H, PNG_COLOR_TYPE_GRAY, 16, 0, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "gray1.png", enc_png(px, W, H, PNG_COLOR_TYPE_GRAY, 1, 0, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "ga8.png", enc_png(px, W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "ga16.png", enc_png(px, W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 16, 1, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "rgb8i.png", enc_png(px, W, H, PNG_COLOR_TYPE_RGB, 8, 1, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "rgb16.png", enc_png(px, W, H, PNG_COLOR_TYPE_RGB, 16, 0, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "rgba8.png", enc_png(px, W, H, PNG_COLOR_TYPE_RGBA, 8, 0, NULL, 0, NULL, 0, &n), n);
  put(argv[2], "pal.png", enc_png(idx, W, H, PNG_COLOR_TYPE_PALETTE, 8, 0, pal, 16, trns, 16, &n), n);
  put(argv[3], "lossy.webp", enc_webp(px, W, H, 0, 0, &n), n);
  put(argv[3], "lossy_alpha.webp", enc_webp(px, W, H, 1, 0, &n), n);
  put(argv[3], "lossless_alpha.webp", enc_webp(px, W, H, 1, 1, &n), n);
  return 0;
}
