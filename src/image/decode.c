/* decode.c - format detection by signature, the shared size checks, and the dispatch to the decoders. */
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

const char *img_format_name(img_format f) {
  switch (f) {
    case IMG_JPEG: return "JPEG";
    case IMG_PNG: return "PNG";
    case IMG_WEBP: return "WebP";
    default: return "unknown";
  }
}

/* Formats people send that qvl does not decode: named in the error so the fix is obvious. */
static const char *other_format(const uint8_t *d, size_t n) {
  if (n >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6))) return "GIF";
  if (n >= 2 && !memcmp(d, "BM", 2)) return "BMP";
  if (n >= 4 && (!memcmp(d, "II*\0", 4) || !memcmp(d, "MM\0*", 4))) return "TIFF";
  if (n >= 12 && !memcmp(d + 4, "ftyp", 4)) return "HEIF/AVIF (ISO-BMFF)";
  if (n >= 4 && !memcmp(d, "\0\0\1\0", 4)) return "ICO";
  if (n >= 5 && (!memcmp(d, "<?xml", 5) || !memcmp(d, "<svg", 4))) return "SVG";
  return NULL;
}

static img_format sniff(const uint8_t *d, size_t n) {
  if (n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff) return IMG_JPEG;
  if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return IMG_PNG;
  if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) return IMG_WEBP;
  return IMG_UNKNOWN;
}

static int unsupported(const uint8_t *d, size_t n, const char *what, qvl_err *err) {
  const char *other = other_format(d, n);
  if (!n) return qvl_fail(err, QVL_ERR_FORMAT, "%s: empty image (0 bytes)", what);
  if (other)
    return qvl_fail(err, QVL_ERR_UNSUPPORTED, "%s: %s images are not supported (JPEG, PNG and WebP are)", what,
                    other);
  return qvl_fail(err, QVL_ERR_UNSUPPORTED, "%s: not a JPEG, PNG or WebP image (first bytes %02x %02x %02x %02x)",
                  what, n > 0 ? d[0] : 0, n > 1 ? d[1] : 0, n > 2 ? d[2] : 0, n > 3 ? d[3] : 0);
}

int img_check_size(int64_t w, int64_t h, int64_t max_pixels, const char *fmt, const char *what, qvl_err *err) {
  if (w <= 0 || h <= 0)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: %s image has zero size (%lldx%lld)", what, fmt, (long long)w,
                    (long long)h);
  if (max_pixels > 0 && w * h > max_pixels)
    return qvl_fail(err, QVL_ERR_LIMIT, "%s: %s image is %lldx%lld = %lld pixels, over the limit of %lld", what, fmt,
                    (long long)w, (long long)h, (long long)(w * h), (long long)max_pixels);
  return QVL_OK;
}

int img_probe(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err) {
  memset(hd, 0, sizeof *hd);
  switch (sniff(data, len)) {
    case IMG_JPEG: return img_jpeg_header(hd, data, len, what, err);
    case IMG_PNG: return img_png_header(hd, data, len, what, err);
    case IMG_WEBP: return img_webp_header(hd, data, len, what, err);
    default: return unsupported(data, len, what, err);
  }
}

int img_decode(img_rgb *out, const uint8_t *data, size_t len, int white_alpha, int64_t max_pixels, const char *what,
               qvl_err *err) {
  memset(out, 0, sizeof *out);
  int rc;
  switch (sniff(data, len)) {
    case IMG_JPEG: rc = img_jpeg_decode(out, data, len, max_pixels, what, err); break;
    case IMG_PNG: rc = img_png_decode(out, data, len, white_alpha, max_pixels, what, err); break;
    case IMG_WEBP: rc = img_webp_decode(out, data, len, white_alpha, max_pixels, what, err); break;
    default: return unsupported(data, len, what, err);
  }
  if (rc) {
    free(out->px);
    memset(out, 0, sizeof *out);
  }
  return rc;
}
