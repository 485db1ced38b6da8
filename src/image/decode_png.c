/* decode_png.c - PNG through libpng's progressive-free low-level API, matching Pillow's PNG plugin and
 * its convert("RGB") (PngImagePlugin._MODES, Unpack.c, Convert.c):
 *   gray 1/2/4 bit  -> "1"/"L" scaled to 0..255 (x255, x85, x17)      -> RGB replicated
 *   gray 16 bit     -> "I;16"; convert clips: v > 255 ? 255 : v        -> RGB replicated
 *   gray+alpha 8    -> "LA": alpha dropped (even by qwen-vl-utils, which only composites "RGBA")
 *   gray+alpha 16   -> "RGBA" from the high bytes (Pillow has no LA;16): composited by qwen-vl-utils
 *   RGB 16, RGBA 16 -> the high byte of each sample ("RGB;16B", "RGBA;16B")
 *   palette         -> "P" -> RGB through the palette; tRNS ignored (P is not RGBA)
 *   tRNS on gray/RGB is ignored; gAMA/iCCP are ignored (Pillow applies neither); Adam7 is deinterlaced.
 * libpng reports errors through longjmp; every path out of the setjmp frees what it allocated. */
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

typedef struct png_src {
  const uint8_t *data;
  size_t len, pos;
  char msg[200];  /* libpng's error text */
  char warn[120]; /* its first warning, which often says more ("Image width is zero in IHDR") */
} png_src;

static void on_error(png_structp p, png_const_charp msg) {
  png_src *s = png_get_error_ptr(p);
  snprintf(s->msg, sizeof s->msg, s->warn[0] ? "%s (%s)" : "%s", msg, s->warn);
  png_longjmp(p, 1);
}

static void on_warning(png_structp p, png_const_charp msg) {
  png_src *s = png_get_error_ptr(p);
  if (!s->warn[0]) snprintf(s->warn, sizeof s->warn, "%s", msg);
}

static void on_read(png_structp p, png_bytep dst, size_t n) {
  png_src *s = png_get_io_ptr(p);
  if (n > s->len - s->pos) png_error(p, "file is truncated");
  memcpy(dst, s->data + s->pos, n);
  s->pos += n;
}

typedef struct png_job {
  png_structp p;
  png_infop info;
  png_src src;
  uint8_t *raw;   /* decoded rows before RGB conversion */
  png_bytep *rows;
} png_job;

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Every chunk must fit in the bytes that are there. libpng trusts a chunk's length and allocates (and
 * clears) that much before reading it, so 200 bytes claiming a 1.9 GB sPLT chunk cost 1.9 GB (found by
 * fuzz_png). Pillow fails such a file too ("Truncated File Read"). A missing IEND is fine, as in Pillow. */
static int check_chunks(const uint8_t *data, size_t len, const char *what, qvl_err *err) {
  size_t at = 8;
  while (len >= at && len - at >= 12) {
    uint32_t n = be32(data + at);
    const uint8_t *t = data + at + 4;
    if ((uint64_t)n + 12 > len - at)
      return qvl_fail(err, QVL_ERR_FORMAT,
                      "%s: truncated PNG: chunk \"%c%c%c%c\" at offset %zu claims %u bytes, %zu remain", what,
                      t[0] >= 32 && t[0] < 127 ? t[0] : '?', t[1] >= 32 && t[1] < 127 ? t[1] : '?',
                      t[2] >= 32 && t[2] < 127 ? t[2] : '?', t[3] >= 32 && t[3] < 127 ? t[3] : '?', at, n,
                      len - at - 12);
    if (!memcmp(t, "IEND", 4)) break;
    at += (size_t)n + 12;
  }
  return QVL_OK;
}

/* The job lives on the heap: after libpng's longjmp, locals changed since setjmp would be indeterminate. */
static int open_job(png_job **out, const uint8_t *data, size_t len, const char *what, qvl_err *err) {
  int rc = check_chunks(data, len, what, err);
  png_job *j = *out = rc ? NULL : calloc(1, sizeof *j);
  if (rc) return rc;
  if (!j) return qvl_fail(err, QVL_ERR_NOMEM, "%s: cannot create a PNG decoder", what);
  j->src.data = data, j->src.len = len;
  j->p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &j->src, on_error, on_warning);
  j->info = j->p ? png_create_info_struct(j->p) : NULL;
  if (!j->info) return qvl_fail(err, QVL_ERR_NOMEM, "%s: cannot create a PNG decoder", what);
  png_set_read_fn(j->p, &j->src, on_read);
  png_set_chunk_malloc_max(j->p, 16u << 20); /* text and ICC chunks: bounded, never needed */
  png_set_keep_unknown_chunks(j->p, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
  return QVL_OK;
}

static void close_job(png_job *j) {
  if (!j) return;
  png_destroy_read_struct(j->p ? &j->p : NULL, j->info ? &j->info : NULL, NULL);
  free(j->raw);
  free(j->rows);
  free(j);
}

static void fill_header(img_header *hd, png_structp p, png_infop info) {
  int depth = png_get_bit_depth(p, info), type = png_get_color_type(p, info);
  hd->format = IMG_PNG;
  hd->w = (int)png_get_image_width(p, info), hd->h = (int)png_get_image_height(p, info);
  hd->rgba = type == PNG_COLOR_TYPE_RGBA || (type == PNG_COLOR_TYPE_GRAY_ALPHA && depth == 16);
}

int img_png_header(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err) {
  png_job *j = NULL;
  int rc = open_job(&j, data, len, what, err);
  if (rc) {
    close_job(j);
    return rc;
  }
  if (setjmp(png_jmpbuf(j->p))) {
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: corrupt PNG: %s", what, j->src.msg);
  } else {
    png_read_info(j->p, j->info);
    fill_header(hd, j->p, j->info);
  }
  close_job(j);
  return rc;
}

/* Transforms that make libpng produce what Pillow's unpackers produce; gray 16 stays 16-bit (clipped below). */
static void set_transforms(png_structp p, png_infop info) {
  int depth = png_get_bit_depth(p, info), type = png_get_color_type(p, info);
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(p);
  if (depth == 16 && type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(p);
  png_set_interlace_handling(p);
  png_read_update_info(p, info);
}

/* One decoded pixel (libpng's output layout: ch channels, 8 or 16 bits) -> RGB. */
static void to_rgb(uint8_t *dst, const uint8_t *src, int64_t n, int ch, int depth, int white_alpha) {
  for (int64_t i = 0; i < n; i++, dst += 3) {
    if (depth == 16) { /* gray 16: Pillow's I;16 -> RGB clips */
      unsigned v = (unsigned)src[2 * i] << 8 | src[2 * i + 1];
      dst[0] = dst[1] = dst[2] = (uint8_t)(v > 255 ? 255 : v);
      continue;
    }
    const uint8_t *s = src + ch * i;
    uint8_t r = s[0], g = ch >= 3 ? s[1] : s[0], b = ch >= 3 ? s[2] : s[0];
    if (white_alpha) {
      uint8_t a = s[ch - 1];
      r = img_over_white(r, a), g = img_over_white(g, a), b = img_over_white(b, a);
    }
    dst[0] = r, dst[1] = g, dst[2] = b;
  }
}

static int read_pixels(png_job *j, img_rgb *out, int white_alpha, int64_t max_pixels, const char *what,
                       qvl_err *err) {
  img_header hd;
  png_read_info(j->p, j->info);
  fill_header(&hd, j->p, j->info);
  int rc = img_check_size(hd.w, hd.h, max_pixels, "PNG", what, err);
  if (rc) return rc;
  int src_rgba = hd.rgba;
  set_transforms(j->p, j->info);
  int ch = png_get_channels(j->p, j->info), depth = png_get_bit_depth(j->p, j->info);
  size_t stride = png_get_rowbytes(j->p, j->info);
  if (stride != (size_t)hd.w * (size_t)ch * (size_t)(depth / 8) || (depth != 8 && depth != 16))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: PNG decodes to an unexpected layout", what);
  j->raw = malloc(stride * (size_t)hd.h);
  j->rows = malloc(sizeof *j->rows * (size_t)hd.h);
  out->px = malloc((size_t)hd.w * hd.h * 3);
  if (!j->raw || !j->rows || !out->px)
    return qvl_fail(err, QVL_ERR_NOMEM, "%s: out of memory for a %dx%d PNG", what, hd.w, hd.h);
  for (int y = 0; y < hd.h; y++) j->rows[y] = j->raw + stride * (size_t)y;
  png_read_image(j->p, j->rows); /* no png_read_end: Pillow ignores what follows the pixels */
  out->w = hd.w, out->h = hd.h;
  to_rgb(out->px, j->raw, (int64_t)hd.w * hd.h, ch, depth, white_alpha && src_rgba && (ch == 2 || ch == 4));
  return QVL_OK;
}

int img_png_decode(img_rgb *out, const uint8_t *data, size_t len, int white_alpha, int64_t max_pixels,
                   const char *what, qvl_err *err) {
  png_job *j = NULL;
  int rc = open_job(&j, data, len, what, err);
  if (rc) {
    close_job(j);
    return rc;
  }
  if (setjmp(png_jmpbuf(j->p)))
    rc = qvl_fail(err, QVL_ERR_FORMAT, "%s: corrupt or truncated PNG: %s", what, j->src.msg);
  else
    rc = read_pixels(j, out, white_alpha, max_pixels, what, err);
  close_job(j);
  return rc;
}
