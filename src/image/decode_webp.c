/* decode_webp.c - WebP through libwebp, matching Pillow's WebP plugin: a still image opens as "RGBA" when
 * it has alpha (composited on white by qwen-vl-utils, alpha dropped by HF) and "RGB" otherwise, decoded
 * with libwebp's defaults (fancy upsampling). Pillow decodes through WebPAnimDecoder, whose first frame of
 * a still image is exactly WebPDecodeRGBA's output. Animated WebP is refused: which frame the reference
 * would see depends on the Pillow version. */
#include <stdlib.h>
#include <webp/decode.h>

#include "image/image.h"

static int features(WebPBitstreamFeatures *f, const uint8_t *data, size_t len, const char *what, qvl_err *err) {
  VP8StatusCode st = WebPGetFeatures(data, len, f);
  if (st == VP8_STATUS_NOT_ENOUGH_DATA)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: truncated WebP header", what);
  if (st != VP8_STATUS_OK)
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: corrupt WebP header (libwebp status %d)", what, st);
  if (f->has_animation) return qvl_fail(err, QVL_ERR_UNSUPPORTED, "%s: animated WebP is not supported", what);
  return QVL_OK;
}

int img_webp_header(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err) {
  WebPBitstreamFeatures f;
  int rc = features(&f, data, len, what, err);
  if (rc) return rc;
  hd->format = IMG_WEBP, hd->w = f.width, hd->h = f.height, hd->rgba = f.has_alpha;
  return QVL_OK;
}

int img_webp_decode(img_rgb *out, const uint8_t *data, size_t len, int white_alpha, int64_t max_pixels,
                    const char *what, qvl_err *err) {
  WebPBitstreamFeatures f;
  int rc = features(&f, data, len, what, err);
  if (!rc) rc = img_check_size(f.width, f.height, max_pixels, "WebP", what, err);
  if (rc) return rc;
  int ch = f.has_alpha ? 4 : 3;
  size_t stride = (size_t)f.width * ch, n = (size_t)f.width * f.height;
  out->w = f.width, out->h = f.height;
  out->px = malloc(stride * (size_t)f.height);
  if (!out->px) return qvl_fail(err, QVL_ERR_NOMEM, "%s: out of memory for a %dx%d WebP", what, f.width, f.height);
  uint8_t *ok = ch == 4 ? WebPDecodeRGBAInto(data, len, out->px, stride * (size_t)f.height, (int)stride)
                        : WebPDecodeRGBInto(data, len, out->px, stride * (size_t)f.height, (int)stride);
  if (!ok) return qvl_fail(err, QVL_ERR_FORMAT, "%s: corrupt or truncated WebP (%dx%d)", what, f.width, f.height);
  for (size_t i = 0; ch == 4 && i < n; i++) { /* RGBA -> RGB in place */
    uint8_t r = out->px[4 * i], g = out->px[4 * i + 1], b = out->px[4 * i + 2], a = out->px[4 * i + 3];
    if (white_alpha) r = img_over_white(r, a), g = img_over_white(g, a), b = img_over_white(b, a);
    out->px[3 * i] = r, out->px[3 * i + 1] = g, out->px[3 * i + 2] = b;
  }
  return QVL_OK;
}
