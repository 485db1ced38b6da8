/* half.h - bf16 / f16 / fp8 <-> f32 conversions on the host (bit-exact with PyTorch's casts). */
#ifndef QVL_CORE_HALF_H
#define QVL_CORE_HALF_H

#include <stdint.h>
#include <string.h>

static inline float qvl_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Round to nearest even, like torch's .to(torch.bfloat16); NaN stays a quiet NaN. */
static inline uint16_t qvl_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float qvl_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else { /* subnormal: renormalise */
      int e = -1;
      do { man <<= 1; e++; } while (!(man & 0x400));
      u = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* OCP FP8 E4M3 (fn variant: no infinities, S.1111.111 is NaN), max 448. */
static inline float qvl_e4m3_to_f32(uint8_t v) {
  uint32_t sign = (uint32_t)(v & 0x80) << 24, exp = (v >> 3) & 0xf, man = v & 7, u;
  if (exp == 15 && man == 7) {
    u = 0x7fc00000u | sign;
  } else if (exp == 0) {
    float f = (float)man / 8.0f / 64.0f; /* 2^-6 * man/8 */
    return sign ? -f : f;
  } else {
    u = sign | (exp + 120) << 23 | man << 20;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

#endif
