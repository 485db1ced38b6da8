/* decode_jpeg.c - JPEG through libjpeg-turbo's TurboJPEG API, matching Pillow's JPEG plugin:
 *   - libjpeg's defaults (ISLOW IDCT, fancy upsampling), as Pillow leaves them;
 *   - 1 component -> mode "L" -> RGB by replication;
 *   - 4 components (CMYK, or YCCK converted to CMYK by libjpeg) -> Pillow reads them with rawmode "CMYK;I"
 *     (inverted, Adobe's convention, assumed for every 4-component JPEG), then converts CMYK -> RGB with
 *     r = nk - MULDIV255(c, nk), nk = 255 - k (Convert.c cmyk2rgb);
 *   - a file that ends early is an error (Pillow: "image file is truncated"); libjpeg's other warnings
 *     (extraneous bytes, bad restart markers) are not, as in Pillow.
 * Progressive scans are capped at libjpeg-turbo's LIMITSCANS (500) against denial of service. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <turbojpeg.h>

#include "image/image.h"

static int header(tjhandle tj, img_header *hd, int *cs, const uint8_t *data, size_t len, const char *what,
                  qvl_err *err) {
  int w = 0, h = 0, sub = 0;
  if (tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &sub, cs))
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: corrupt JPEG header: %s", what, tjGetErrorStr2(tj));
  if (w == 0 && h == 0) /* libjpeg saw the end of the data before a frame header */
    return qvl_fail(err, QVL_ERR_FORMAT, "%s: corrupt or truncated JPEG header (no frame header)", what);
  hd->format = IMG_JPEG, hd->w = w, hd->h = h, hd->rgba = 0;
  return QVL_OK;
}

int img_jpeg_header(img_header *hd, const uint8_t *data, size_t len, const char *what, qvl_err *err) {
  tjhandle tj = tjInitDecompress();
  if (!tj) return qvl_fail(err, QVL_ERR_NOMEM, "%s: cannot create a JPEG decoder", what);
  int cs = 0, rc = header(tj, hd, &cs, data, len, what, err);
  tjDestroy(tj);
  return rc;
}

/* Pillow's MULDIV255(a, b): (a*b + 127) / 255 without a division. */
static int muldiv255(int a, int b) {
  int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

static uint8_t clip8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* In place, 4 bytes -> 3: raw CMYK as libjpeg returns it -> Pillow's inverted read -> cmyk2rgb. */
static void cmyk_to_rgb(uint8_t *px, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const uint8_t *s = px + 4 * i;
    int nk = s[3]; /* 255 - (255 - k) */
    uint8_t r = clip8(nk - muldiv255(255 - s[0], nk));
    uint8_t g = clip8(nk - muldiv255(255 - s[1], nk));
    uint8_t b = clip8(nk - muldiv255(255 - s[2], nk));
    px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = b;
  }
}

static void gray_to_rgb(uint8_t *px, int64_t n) {
  for (int64_t i = n - 1; i >= 0; i--) px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = px[i];
}

static int decode(tjhandle tj, img_rgb *out, const uint8_t *data, size_t len, int64_t max_pixels, const char *what,
                  qvl_err *err) {
  img_header hd = {0};
  int cs = 0, rc = header(tj, &hd, &cs, data, len, what, err);
  if (!rc) rc = img_check_size(hd.w, hd.h, max_pixels, "JPEG", what, err);
  if (rc) return rc;
  int pf = cs == TJCS_GRAY ? TJPF_GRAY : (cs == TJCS_CMYK || cs == TJCS_YCCK) ? TJPF_CMYK : TJPF_RGB;
  int64_t n = (int64_t)hd.w * hd.h;
  out->w = hd.w, out->h = hd.h;
  out->px = malloc((size_t)n * (pf == TJPF_CMYK ? 4 : 3));
  if (!out->px) return qvl_fail(err, QVL_ERR_NOMEM, "%s: out of memory for a %dx%d JPEG", what, hd.w, hd.h);
  if (tjDecompress2(tj, data, (unsigned long)len, out->px, hd.w, 0, hd.h, pf, TJFLAG_LIMITSCANS)) {
    const char *msg = tjGetErrorStr2(tj);
    if (tjGetErrorCode(tj) != TJERR_WARNING || strcasestr(msg, "premature end"))
      return qvl_fail(err, QVL_ERR_FORMAT, "%s: corrupt or truncated JPEG: %s", what, msg);
  }
  if (pf == TJPF_CMYK) cmyk_to_rgb(out->px, n);
  if (pf == TJPF_GRAY) gray_to_rgb(out->px, n);
  return QVL_OK;
}

int img_jpeg_decode(img_rgb *out, const uint8_t *data, size_t len, int64_t max_pixels, const char *what,
                    qvl_err *err) {
  tjhandle tj = tjInitDecompress(); /* one per call: a handle is not thread-safe */
  if (!tj) return qvl_fail(err, QVL_ERR_NOMEM, "%s: cannot create a JPEG decoder", what);
  int rc = decode(tj, out, data, len, max_pixels, what, err);
  tjDestroy(tj);
  return rc;
}

int img_jpeg_sampling(int tj_subsamp, int hs[3], int vs[3], int *n) {
  static const struct { int tj, h, v; } k[] = {{TJSAMP_444, 1, 1}, {TJSAMP_422, 2, 1}, {TJSAMP_420, 2, 2},
                                              {TJSAMP_440, 1, 2}, {TJSAMP_411, 4, 1}, {TJSAMP_GRAY, 1, 1}};
  for (size_t i = 0; i < sizeof k / sizeof *k; i++)
    if (k[i].tj == tj_subsamp) {
      hs[0] = k[i].h, vs[0] = k[i].v, hs[1] = vs[1] = hs[2] = vs[2] = 1;
      *n = tj_subsamp == TJSAMP_GRAY ? 1 : 3;
      return 0;
    }
  return -1;
}
