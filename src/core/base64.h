/* base64.h - strict RFC 4648 base64 (standard alphabet) and RFC 2397 `data:` URLs.
 *
 * Strict means: the length is a multiple of 4, '=' appears only as one or two final padding characters,
 * the unused bits before the padding are zero (RFC 4648 §3.5), and nothing outside the alphabet is
 * accepted, whitespace and line breaks included. Every rejection names the offending byte offset, so a
 * client that sent a broken image can find the problem. */
#ifndef QVL_CORE_BASE64_H
#define QVL_CORE_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* An upper bound on the decoded size of len base64 characters. */
size_t qvl_base64_decoded_max(size_t len);

/* Decodes in[0..len) into out (at least qvl_base64_decoded_max(len) bytes); *out_len is the byte count.
 * what names the input in errors ("image 2"). */
int qvl_base64_decode(uint8_t *out, size_t *out_len, const char *in, size_t len, const char *what, qvl_err *err);

/* Decodes "data:[<mediatype>][;param=value]*;base64,<payload>" into a malloc'd buffer (*out, *out_len;
 * the caller frees it). mime receives the media type ("" when absent), truncated to mime_cap - 1. Only
 * base64 payloads are accepted: an image sent percent-encoded is a client bug worth reporting. */
int qvl_data_url_decode(uint8_t **out, size_t *out_len, char *mime, size_t mime_cap, const char *url, size_t len,
                        const char *what, qvl_err *err);

#endif
