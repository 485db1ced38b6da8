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
 * the exponent range. A call site where some 200 registers are live (gemm_swiglu.cu) made ptxas spill around it, so
 * the fused kernel uses silu_bf16_f32: d = 1 + expf(-v) as above, then the quotient as the division's fast path
 * forms it: r = rcp.approx(d) refined by one Newton step (r + r (1 - d r)), q = v r, and q corrected once by its
 * residual (q + r (v - d q), each step one fused multiply-add). d >= 1 is never subnormal; d = +inf (v < -88.7)
 * gives v * 0, the IEEE v / inf. No double precision, no conversions: a double reciprocal (the version before) made
 * the fused kernel's epilogue its bottleneck (docs/PERF.md, session 6). Exact against silu_bf16 for every bf16 v:
 * test_gpu_gemm_swiglu runs all 65,536 of them through the kernel (0 of 8.4 M outputs differ, H200). */
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
