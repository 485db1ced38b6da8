/* swiglu.cuh - the SwiGLU activation's rounding steps, shared by swiglu.cu (after the gate|up GEMM) and
 * gemm_swiglu.cu (fused into it), so that both paths give the same bits for the same gate value: silu in f32 as
 * v / (1 + e^-v) with expf and the IEEE division (no fast-math flags in this project), then rounded to bf16 as the
 * reference rounds act_fn(gate). */
#pragma once
#include <cuda_bf16.h>

__device__ __forceinline__ float silu_bf16(float v) {
  return __bfloat162float(__float2bfloat16(v / (1.0f + expf(-v))));
}

/* ---- the same bits without the division's subroutine ----------------------------------------------------------
 * The IEEE division compiles to a fast sequence plus a call of a slow-path subroutine for operands near the ends of
 * the exponent range. A call site where some 200 registers are live (gemm_swiglu.cu: the accumulators, in flight,
 * and the previous tile's outputs) makes ptxas spill around it, so the fused kernel uses silu_bf16_nodiv: the same
 * d = 1 + expf(-v) in f32, then q = fl32(v * r) with r = 1/d in double (rcp.approx and two Newton steps: relative
 * error below 2^-52 for every finite d >= 1, a normal double), which is fl32(v / d) bit for bit: v / d is never
 * closer than 2^-49 (relative) to a rounding boundary of f32 (v - d m, for a boundary m of 25 significant bits, is a
 * nonzero multiple of the quantum of d m, which has fewer than 49 bits), and the double value is closer to v / d
 * than that, so both round alike (f32 subnormals included: their boundaries are farther apart). d = +inf (v < -88.7,
 * where 1/d is 0 but the Newton steps would make NaN) gives v * 0, the IEEE v / inf. No branch, no call, a few
 * registers. test_gpu_gemm_swiglu checks all 65,536 bf16 gate values against swiglu.cu bit for bit. */
__device__ __forceinline__ float silu_bf16_nodiv(float v) {
  const float d = 1.0f + expf(-v);
  const double dd = d;
  double r;
  asm("rcp.approx.ftz.f64 %0, %1;\n" : "=d"(r) : "d"(dd));
  r = fma(r, fma(-dd, r, 1.0), r);
  r = fma(r, fma(-dd, r, 1.0), r);
  float q = (float)((double)v * r);
  if (d == __int_as_float(0x7f800000)) q = v * 0.0f;
  return __bfloat162float(__float2bfloat16(q));
}

/* ---- the same bits in f32 alone ------------------------------------------------------------------------------
 * silu_bf16_f32: d = 1 + expf(-v) as above, then the quotient as the IEEE division's fast path forms it: r =
 * rcp.approx(d) refined by one Newton step (r + r (1 - d r)), q = v r, and q corrected once by its residual
 * (q + r (v - d q), each step one fused multiply-add). d >= 1 is never subnormal; d = +inf (v < -88.7) gives v * 0,
 * the IEEE v / inf, as in silu_bf16_nodiv. No double precision, no conversions: on the SM's FP64 and conversion
 * pipes the double reciprocal was what made the fused kernel's epilogue slow. Exact against silu_bf16 for every
 * bf16 v: test_gpu_gemm_swiglu runs all 65,536 of them through the kernel. */
__device__ __forceinline__ float silu_bf16_f32(float v) {
  const float d = 1.0f + expf(-v);
  float r;
  asm("rcp.approx.f32 %0, %1;\n" : "=f"(r) : "f"(d));
  r = fmaf(r, fmaf(-d, r, 1.0f), r);
  float q = v * r;
  q = fmaf(r, fmaf(-d, q, v), q);
  if (d == __int_as_float(0x7f800000)) q = v * 0.0f;
  return __bfloat162float(__float2bfloat16(q));
}
