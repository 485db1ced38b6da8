/* hopper.cuh - the sm_90a primitives shared by the wgmma/TMA kernels (attn_vit_wgmma.cu, gemm_swiglu.cu): shared
 * addresses, mbarriers, the 128-byte-swizzle descriptor, wgmma groups, register fences. Device code only: include it
 * inside the kernels' `#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)` block. */
#pragma once
#include <stdint.h>

__device__ __forceinline__ uint32_t smem_u32(const void *ptr) {
  return (uint32_t)__cvta_generic_to_shared(ptr);
}

/* ---- mbarriers ------------------------------------------------------------------------------------------------ */

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
/* Spins until the phase of parity `parity` has completed. Default semantics (acquire at CTA scope), as CUTLASS's
 * ClusterBarrier::wait: what these waits order is async-proxy traffic (a TMA's bytes, counted by complete_tx; wgmma
 * reads finished by wgmma.wait_group before the arrival) and shared memory of this CTA. `.acquire.cluster` compiled
 * to a CCTL.IVALL (the SM's whole L1 invalidated) after every wait (gemm_swiglu.cu, session 6). No __syncwarp: a
 * caller whose next instruction is .aligned (wgmma, bar) adds it. */
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* Adds `bytes` to the transaction count of bar's current phase and arrives (barriers armed by one thread). */
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

/* ---- wgmma operands ------------------------------------------------------------------------------------------ */

/* Matrix descriptor (PTX ISA "Matrix Descriptor Format") of an operand in the canonical 128-byte-swizzled layout at
 * shared address addr (1024-aligned tiles, as TMA's CU_TENSOR_MAP_SWIZZLE_128B writes them): start >> 4, LBO 1
 * (unused: K-major with the k-step inside the 128-byte row, or MN-major one 64-element atom wide), SBO 1024 >> 4
 * (the next 8-row group), base offset 0, layout 1 = 128-byte swizzle. A k-step inside the row adds its byte offset
 * to the start (the hardware applies the XOR to the address it forms). */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

/* ---- wgmma groups ---------------------------------------------------------------------------------------------- */

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Pins register values in place: no access is moved across it, so reads of wgmma results stay after the wait that
 * completes them (CUTLASS's warpgroup_fence_operand). */
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_regs(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+r"(r[i])::"memory");
}
