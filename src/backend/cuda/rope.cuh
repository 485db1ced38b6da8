/* rope.cuh - the rotary's arithmetic, shared by every kernel that rotates q or k (rope.cu's rope_qk, attn_vit.cu's
 * fused rotary, attn_vit_wgmma.cu's rotation of Q tiles), so that rotating in a kernel gives rope_qk's
 * bits exactly: NeoX rotate_half pairs (d, d + h), f32 from bf16, rounded once to bf16 (spec §6 item 2). */
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

/* One pair (a = x[d], b = x[d+h]) of f32 values from bf16: the new x[d] by c = cos[d], s = sin[d], and the new x[d+h]
 * by c = cos[d+h], s = sin[d+h]. The roundings are spelled out (one product rounded, then a fused multiply-add): left
 * to the compiler, `a * c - b * s` contracted differently in different kernels (attn_vit_wgmma.cu's rotation against
 * rope_qk: 339 of 4.5 million outputs differed, H100, 2026-11-22). */
__device__ __forceinline__ __nv_bfloat16 rope_lo(float a, float b, float c, float s) {
  return __float2bfloat16(__fmaf_rn(a, c, -__fmul_rn(b, s)));
}
__device__ __forceinline__ __nv_bfloat16 rope_hi(float a, float b, float c, float s) {
  return __float2bfloat16(__fmaf_rn(b, c, __fmul_rn(a, s)));
}

/* lo = x[d .. d+3], hi = x[d+h .. d+h+3] (bf16, low element first) rotated in place by cl = cos[d ..],
 * ch = cos[d+h ..], sl = sin[d ..], sh = sin[d+h ..]. */
__device__ __forceinline__ void rope4(uint2 &lo, uint2 &hi, const float4 &cl, const float4 &ch, const float4 &sl,
                                      const float4 &sh) {
  const __nv_bfloat16 *a = (const __nv_bfloat16 *)&lo, *b = (const __nv_bfloat16 *)&hi;
  const float cls[4] = {cl.x, cl.y, cl.z, cl.w}, chs[4] = {ch.x, ch.y, ch.z, ch.w};
  const float sls[4] = {sl.x, sl.y, sl.z, sl.w}, shs[4] = {sh.x, sh.y, sh.z, sh.w};
  uint2 olo, ohi;
  __nv_bfloat16 *oa = (__nv_bfloat16 *)&olo, *ob = (__nv_bfloat16 *)&ohi;
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const float av = __bfloat162float(a[k]), bv = __bfloat162float(b[k]);
    oa[k] = rope_lo(av, bv, cls[k], sls[k]);
    ob[k] = rope_hi(av, bv, chs[k], shs[k]);
  }
  lo = olo, hi = ohi;
}
