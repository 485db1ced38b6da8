/* img_encode.h - in-memory JPEG/PNG/WebP encoders for the image tests and the fuzz seed corpus, so every
 * fixture variant (subsampling, progressive, CMYK, 16-bit, palette + tRNS, interlace, lossless alpha) is
 * made from known pixels without files in the repository. Header-only; the caller frees the results. */
#ifndef QVL_IMG_ENCODE_H
#define QVL_IMG_ENCODE_H

#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <webp/encode.h>

/* Smooth gradients plus a little hashed noise: resampling has something to do, JPEG stays small. */
static inline void enc_synth(uint8_t *px, int w, int h, int ch, uint32_t seed) {
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < ch; c++) {
        uint32_t z = (uint32_t)(y * 7919 + x * 104729 + c * 1299709) ^ seed;
        z = (z ^ (z >> 15)) * 0x2c1b3c6dU, z ^= z >> 12;
        int v = (x * 255 / (w > 1 ? w - 1 : 1) * (c + 1) + y * 255 / (h > 1 ? h - 1 : 1) * (3 - c % 3)) / 4;
        v += (int)(z % 17) - 8;
        px[((size_t)y * w + x) * ch + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
}

/* pf: TJPF_RGB, TJPF_GRAY or TJPF_CMYK (px has 3, 1 or 4 channels); subsamp TJSAMP_*. */
static inline uint8_t *enc_jpeg(const uint8_t *px, int w, int h, int pf, int subsamp, int quality, int progressive,
                                size_t *len) {
  *len = 0;
  tjhandle tj = tjInitCompress();
  unsigned char *jpeg = NULL;
  unsigned long n = 0;
  int flags = progressive ? TJFLAG_PROGRESSIVE : 0;
  int rc = tjCompress2(tj, px, w, 0, h, pf, &jpeg, &n, pf == TJPF_GRAY ? TJSAMP_GRAY : subsamp, quality, flags);
  tjDestroy(tj);
  uint8_t *out = rc ? NULL : malloc(n);
  if (out) memcpy(out, jpeg, n), *len = n;
  tjFree(jpeg);
  return out;
}

typedef struct enc_buf {
  uint8_t *p;
  size_t n, cap;
} enc_buf;

static inline void enc_png_write(png_structp png, png_bytep data, size_t n) {
  enc_buf *b = png_get_io_ptr(png);
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
}

static inline void enc_png_flush(png_structp png) { (void)png; }

/* px in PNG sample order (16-bit samples big endian); palette: n_pal RGB triples; trns: n_trns alphas
 * (palette) or NULL. */
static inline uint8_t *enc_png(const uint8_t *px, int w, int h, int color_type, int depth, int interlace,
                               const uint8_t *palette, int n_pal, const uint8_t *trns, int n_trns, size_t *len) {
  *len = 0;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  enc_buf *b = calloc(1, sizeof *b);
  png_bytep *rows = malloc(sizeof *rows * (size_t)h);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    free(b->p), free(b), free(rows);
    return NULL;
  }
  int ch = color_type == PNG_COLOR_TYPE_RGB ? 3 : color_type == PNG_COLOR_TYPE_RGBA ? 4
         : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
  size_t stride = ((size_t)w * ch * depth + 7) / 8;
  png_set_write_fn(png, b, enc_png_write, enc_png_flush);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type,
               interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (palette) png_set_PLTE(png, info, (png_const_colorp)palette, n_pal);
  if (trns) png_set_tRNS(png, info, trns, n_trns, NULL);
  for (int y = 0; y < h; y++) rows[y] = (png_bytep)px + stride * (size_t)y;
  png_set_rows(png, info, rows);
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
  png_destroy_write_struct(&png, &info);
  free(rows);
  uint8_t *out = b->p;
  *len = b->n;
  free(b);
  return out;
}

/* px: RGB (alpha = 0) or RGBA (alpha = 1); quality is ignored when lossless. */
static inline uint8_t *enc_webp(const uint8_t *px, int w, int h, int alpha, int lossless, size_t *len) {
  uint8_t *webp = NULL;
  *len = 0;
  size_t n =
      lossless
          ? (alpha ? WebPEncodeLosslessRGBA(px, w, h, w * 4, &webp) : WebPEncodeLosslessRGB(px, w, h, w * 3, &webp))
          : (alpha ? WebPEncodeRGBA(px, w, h, w * 4, 85, &webp) : WebPEncodeRGB(px, w, h, w * 3, 85, &webp));
  uint8_t *out = n ? malloc(n) : NULL;
  if (out) memcpy(out, webp, n), *len = n;
  WebPFree(webp);
  return out;
}

#endif
