/* attn_vit_wgmma.cu - non-causal attention over packed ragged sequences with Hopper warpgroup MMA (wgmma.mma_async,
 * bf16 in, f32 accumulators), for the vision towers: Qwen3-VL (head_dim 72), Qwen2.5-VL full-attention layers (80),
 * and 64. softmax(scale q k^T) v per sequence [cu[i], cu[i+1]) and head, q/k/v read in place from the QKV GEMM's
 * output [rows][3][heads][D], out [rows][heads][D]; k already rotated, q too or rotated here (given cos/sin: see
 * producer_q). sm_90a only: the launcher refuses other devices.
 *
 * Why: cuDNN pads head_dim 72 and 80 to 128, so 4/9 of its tensor work at d72 is padding; here QK^T runs K = 80 (72
 * plus one zero half k-step) and PV runs N = 72 exactly. On an H100 (2026-11-22, 64 x 1,024 rows, 16 heads, d72) it
 * takes 0.83 ms alone, 0.89 with q rotated in it; cuDNN's SDPA ~0.87. In the tower (attention.c's tuning, with the
 * rotary passes): 1.005 ms with q rotated here and rope_qk of k (0.13), 1.06 with rope_qk of both, cuDNN 1.14.
 *
 * Why this shape: on an H100 (2026-11-21, 20 sequences x 4,800 rows x 16 heads, d72) it ran 411 TFLOP/s as
 * configuration "bm192-tma-skip" of six, against 276 for "bm128-cpasync" (two consumer warpgroups, a cp.async
 * producer warpgroup: the first verified kernel), 382 for "bm192-cpasync" and 402 for "bm192-tma" (no rescale skip)
 * (at 64 x 1,024 rows: 276, against 232, 285 and 273); the cp.async and 128-row variants were deleted after that.
 *
 * Work: an item is (sequence, head, BM = 192 query rows). The grid is persistent, min(items, SMs) CTAs of 512 threads
 * (one per SM: 213 KB of shared memory at d72; a few fewer where that count shares a factor with the q tiles per
 * sequence: see run), each taking items blockIdx.x, + gridDim.x, ...; items whose rows start past their sequence's
 * end are skipped, so the grid depends only on the host bounds (n_seq, max_len, heads) and a captured launch replays
 * with other lengths. Item order (sequence, head, q tile) keeps the CTAs running together on a few heads' K/V, which
 * stay in L2 (a 4,800-row head's K and V are 1.4 MB). 192 rows rather than 128: K/V traffic from L2 per query row
 * falls by a third (24 KB per 128 rows instead of 36), and three consumer warps per SM sub-partition hide the
 * softmax's latency.
 *
 * Roles (warps 0-3, 4-7 and 8-11 are the three consumer warpgroups, warps 12-15 the producer warpgroup):
 *   K/V producer (producer_kv): one thread (lane 0 of warp 12) issues per K/V tile of BN = 128 keys the
 *     cp.async.bulk.tensor (TMA) boxes of K and of V into a ring of NS = 4 stages, arming the stage's "full" mbarrier
 *     (count 1) with expect_tx of the bytes of all of them. A tile is two boxes (see "Shared memory"): its dims 0..63
 *     (one 128-byte row per token, 128-byte swizzle) and, at d72/d80, the rest (one 16-byte row per token and 8-dim
 *     chunk). It runs ahead into the next item while the consumers finish the current one. Why TMA: 16-byte cp.async
 *     took 2,304 copies per K/V tile (72 warp instructions plus their addressing, issue slots on the SM
 *     sub-partitions the consumers run on); TMA takes 4 instructions and needs no fence.proxy.async after a wait (it
 *     writes in the async proxy, like wgmma reads). Rows a box reads past a sequence's end belong to the next
 *     sequence (or are zeros past `rows`): K columns past the end are masked in S, Q rows past it are not stored,
 *     and the consumers zero V rows past the end of a partial last tile before its P V (zero_v_rows).
 *   Q producer (producer_q, warps 13-15): lane 0 of warp 13 issues each item's Q boxes (192 rows) into one of two Q
 *     buffers as soon as the buffer is free; with tables all 96 threads then rotate the tile in place and publish it
 *     on a third barrier (qrot) that the consumers wait on instead of the TMA's: rope_qk's pass over q (half its
 *     traffic, ~0.13 ms a layer at 64 x 1,024 rows, 16 heads, d72) done on a tile already on chip, by warps that
 *     were idle, while the consumers work on the item before.
 *   consumer warpgroup w: query rows 64w .. 64w + 63 of the item. Per key tile j, in turn: S_j = Q K_j^T (5 x
 *     m64n128k16 at d72, both operands from shared memory), the online softmax of S_j in f32 registers, the bf16 A
 *     fragments P_j, O += P_j V_j (8 x (m64n64k16 + m64n8k16), P from registers). Only S or P lives beside O; 160
 *     registers were too few for FA3's intra-warpgroup overlap (S_j and P_{j-1} V_{j-1} in flight together: ptxas
 *     spilled and serialised the wgmmas, C7512), so the overlap is across warpgroups: the three take turns issuing
 *     their Q K^T
 *     through the named barriers 1..3 (FA3's "pingpong", round robin over three), so two softmaxes run while the
 *     third warpgroup's GEMMs do. The turns only run on items where every warpgroup has rows; a warpgroup whose 64
 *     rows are all past the end only releases what it is given. Each consumer warp arrives on the stage's "empty"
 *     mbarrier (count 12) after its P V GEMM completed, and on the Q buffer's once the item is done.
 *   exp2 with the scale folded in (p = 2^(s * scale * log2 e - m * scale * log2 e)); row max over the quad of lanes
 *   that share a row (shuffles 1, 2); row sums per thread until the end; keys past the end are -inf before the max
 *   (every tile processed has a valid key, so m is finite and no -inf - -inf arises). Conditional rescale: a warp
 *   skips the rescale of O (D/2 FMUL per thread per tile) when none of its row maxima grew (a warp vote): exact (the
 *   factors would be 2^0 = 1); after the first tiles of a long sequence most tiles leave the maxima unchanged, about
 *   10% fewer softmax instructions.
 *   Per 192 query rows x 128 keys at d72 on one SM (4,096 dense bf16 FLOP/clk, 16 ex2/clk): MMA 3 x (5 x 64 + 8 x
 *   (32 + 4)) = 1,824 clk, ex2 192 x 128 / 16 = 1,536 clk on the SFUs, K+V 36 KB from L2: the softmax of two warpgroups
 *   has to hide behind the third's GEMMs for the MMA pipe to stay busy.
 *
 * Fragments (PTX ISA "Register Fragments", m64nNk16; g = lane / 4, t = lane % 4, warp w4 of the warpgroup):
 *   accumulator d[i], i < N/2: row 16 w4 + g + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2 t + (i & 1); O's d[0..31]
 *   (dims 0..63) and d[32..] (dims 64.., the m64n8k16 / m64n16k16 of the rest) keep this map as one array;
 *   A from registers a[0..3] (bf16x2, low half first): rows 16 w4 + g (+8 for a[1], a[3]), columns 2t, 2t+1
 *   (+8 for a[2], a[3]). So k-step kk of P V takes S's d[8kk .. 8kk+7] in order: a[r] = bf16x2(d[8kk+2r], d[8kk+2r+1]).
 *
 * Shared memory (base rounded up to 1024 bytes). Every tile, Q (192 rows), K and V (128 keys), is two parts:
 *   main: dims 0..63, the canonical 128-byte-swizzled tile: row r's 128 bytes at r * 128, its 16-byte chunk c at
 *     ((c ^ (r % 8)) * 16), 8-row groups of 1,024 bytes (TMA's CU_TENSOR_MAP_SWIZZLE_128B writes exactly this; every
 *     main part and warpgroup slice starts 1024-aligned). One 128-byte TMA row per token: with the chunk-column
 *     layout everywhere (16-byte rows, 9 per token at d72) delivering the tiles alone took 0.87 ms of the kernel's
 *     1.09 at 64 x 1,024 rows (session 8), and 0.43 ms of 0.84 now (H200, 2026-11-22);
 *   rest (d72: dims 64..71, d80: 64..79, none at d64): chunk-column major, element (row r, dim 64 + d) of a tile of
 *     R rows at (d / 8) * (R * 16) + r * 16 + (d % 8) * 2 (each 8-dim chunk a contiguous [R rows][16 B] column,
 *     no swizzle). Q's and K's rest have RC = 2 chunks at d72, the second zero (written once at start, outside the
 *     box), so Q K^T's last k-step covers dims 64..79 exactly.
 * Descriptors (PTX ISA "Matrix Descriptor Format": bits 0-13 start >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 49-51 base
 * offset 0, 62-63 layout: 1 = 128-byte swizzle, 0 = none; PTX ISA 9.7.15.5.1.2 for LBO/SBO; CUTLASS's make_gmma_desc
 * encodes the same):
 *   Q as A and K as B of Q K^T, both K-major (imm-trans 0): main k-steps kk = 0..3 start at the part (+ 64w * 128 for
 *     warpgroup w's Q rows) + 32 kk bytes, 128-byte swizzle, SBO 1,024 (the next 8 rows), LBO unused (1): the
 *     hardware applies the XOR to the address it forms, as in gemm_swiglu.cu; the rest's k-step: no swizzle, start
 *     at the rest (+ 64w * 16), LBO = R * 16 (the next 8 dims), SBO = 128 (the next 8 rows).
 *   V as B of P V, MN-major (imm-trans-b 1: B is keys x dims, dims contiguous), k-step kk = keys 16kk .. 16kk+15:
 *     main (N = 64, one swizzle atom wide): start + 2,048 kk, 128-byte swizzle, SBO 1,024 (the next 8 keys), LBO
 *     unused (1); rest (N = 8 or 16): start + 256 kk, no swizzle, LBO 128 (the next 8 keys), SBO 2,048 (the next 8
 *     dims).
 *   Sizes at d72: Q 2 x (24 + 6) KB, K 4 x (16 + 4) KB, V 4 x (16 + 2) KB, 14 mbarriers, 1 KB alignment slack:
 *   218,224 bytes (d80 226,416, d64 181,360).
 *
 * Proxies: TMA writes and wgmma reads are both async-proxy accesses, ordered by the mbarriers (complete_tx, then the
 * consumers' acquire; wgmma.wait_group, the empty mbarrier's release, then the producer's acquire). The generic-proxy
 * stores, the pad chunks at start, zero_v_rows (a row's 128 main bytes and its rest) and producer_q's rotation, are
 * each followed by fence.proxy.async before the barrier that publishes them (the rotation's reads of a TMA-written
 * tile follow the qfull wait, as any reader's).
 *
 * Registers: __launch_bounds__(512, 1) starts every thread at 128 (65,536 / 512); setmaxnreg then moves them to the
 * consumers, 56 for the producer warpgroup (the rotation keeps ROT_B tasks' loads in flight: with 32, two tasks and
 * spills, 64 x 1,024 rows took 1.06 ms with the rotation against 0.89) and 152 for a consumer (128 x 56 + 384 x 152 =
 * 65,536; at 152 rather than 160 the kernel without tables ran 0.827 ms against 0.846-0.854), which holds S (64
 * f32), O (D/2 f32), P (32 bf16x2) and the row state (ptxas: no spills, no wgmma serialization; check with -Xptxas -v
 * after changes). QVL_ATTN_VIT_PINGPONG=0 (read once at init) stops the warpgroups taking turns. */
#include <cuda.h> /* CUtensorMap and its enums only: cuTensorMapEncodeTiled comes from cuda_tensor_map_encoder */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdlib.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/rope.cuh"
#include "qvl.h"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int WG = 3;                /* consumer warpgroups of 64 query rows; the producer warpgroup comes after them */
constexpr int BM = 64 * WG;          /* query rows per item */
constexpr int NT = 128 * (WG + 1);   /* threads per CTA */
constexpr int BN = 128;              /* keys per K/V tile */
constexpr int NS = 4;                /* K/V ring stages */
constexpr int PREG = 56, CREG = 152; /* setmaxnreg of the producer warpgroup / the consumers */
static_assert(128 * PREG + 128 * WG * CREG <= 65536, "setmaxnreg budget: the CTA's registers at launch");

/* Per head dim: the shared-memory map (see the top). Dims 0..63 of a row are the 128-byte-swizzled "main" part of a
 * tile (Q: 24 KB, K or V: 16 KB, every one 1024-aligned); the NR chunks of 8 dims past them (the "rest": 1 at d72, 2
 * at d80, none at d64) are chunk-column tiles, Q's and K's padded to RC chunks, a whole k-step (chunk 1 at d72 is
 * zero). */
template <int D>
struct dims {
  static constexpr int NC = D / 8;            /* 9 at d72 */
  static constexpr int NR = NC - 8;           /* chunks of the rest: 1 at d72 */
  static constexpr int RC = (NR + 1) / 2 * 2; /* the rest of Q and K padded to a k-step: 2 at d72 */
  static constexpr int QM = BM * 128, KM = BN * 128;
  static constexpr int QR = RC * BM * 16, KR = RC * BN * 16, VR = NR * BN * 16;
  static constexpr int OFF_K = 2 * QM;
  static constexpr int OFF_V = OFF_K + NS * KM;
  static constexpr int OFF_QR = OFF_V + NS * KM;
  static constexpr int OFF_KR = OFF_QR + 2 * QR;
  static constexpr int OFF_VR = OFF_KR + NS * KR;
  static constexpr int OFF_BAR = OFF_VR + NS * VR;               /* full[NS], empty[NS], qfull[2], qempty[2], qrot[2] */
  static constexpr int SMEM = OFF_BAR + (2 * NS + 6) * 8 + 1024; /* + slack to align the base to 1024 */
  static_assert(NR >= 0 && NR <= 2, "head_dim 64, 72 or 80");
  static_assert(QM % 1024 == 0 && KM % 1024 == 0, "swizzled tiles 1024-aligned");
  static_assert(SMEM <= 227 * 1024, "shared memory per CTA");
};

struct params {
  bf16 *out;
  const bf16 *qkv;
  const int32_t *cu;
  const float *cos, *sin; /* NULL: q arrives rotated; else producer_q rotates Q's tiles with these tables */
  float *dbg;             /* test only: block 0's first item dumps S, P and P V of its first key tile (see dump_*) */
  int64_t rows;
  int n_qt;    /* q tiles per (sequence, head): ceil(max_len / BM) */
  int n_items; /* n_seq * heads * n_qt */
  int heads;
  int pingpong;
  float c; /* scale * log2(e) */
};

/* The tensor maps (built on the host, see tmaps_get) ride in the kernel parameters (__grid_constant__), so a captured
 * launch keeps them: the main part (dims 0..63, 128-byte swizzle) and the rest (chunks 8.., no swizzle) of a Q box
 * (BM rows) and of a K or V box (BN rows). */
struct tmaps {
  CUtensorMap qm, qr, kvm, kvr;
};
struct targs {
  params p;
  tmaps m;
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)

#include "backend/cuda/hopper.cuh" /* smem_u32, mbarriers, wgmma groups, fence_regs, sw128_desc */

constexpr int DR = 128;  /* rows of the test-only dumps (params.dbg): consumer warpgroups 0 and 1 */
constexpr int NROT = 96; /* threads of producer_q (the producer warpgroup's warps 1..3) */
constexpr int ROT_B = 3; /* the rotation's tasks in flight per thread (producer_q) */

/* One item: rows [q0, q0 + BM) of the sequence starting at row0 with len rows, head `head`. */
struct item {
  int64_t row0;
  int len, q0, head;
};

/* The item's rows; false when its q tile starts past the sequence's end. cu is clamped to [0, rows] so a bad
 * boundary cannot send the boxes or the stores outside the buffers. */
__device__ __forceinline__ bool item_get(const params &p, int idx, item &x) {
  const int qt = idx % p.n_qt, sh = idx / p.n_qt, seq = sh / p.heads;
  int64_t b = __ldg(p.cu + seq), e = __ldg(p.cu + seq + 1);
  b = b < 0 ? 0 : b > p.rows ? p.rows : b;
  e = e < b ? b : e > p.rows ? p.rows : e;
  x.row0 = b;
  x.len = (int)(e - b);
  x.q0 = qt * BM;
  x.head = sh - seq * p.heads;
  return x.q0 < x.len;
}

/* ---- mbarriers, named barriers, fences ---------------------------------------------------------------------- */

/* hopper.cuh's mbar_wait, then the lanes leave the spin together, ready for the .aligned instructions (wgmma, bar)
 * that follow. */
__device__ __forceinline__ void mbar_wait_warp(uint32_t bar, int parity) {
  mbar_wait(bar, parity);
  __syncwarp();
}
__device__ __forceinline__ void bar_sync(int id, int n) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
/* Generic-proxy shared-memory accesses before it are ordered before async-proxy (wgmma) accesses after it. */
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* ---- wgmma ------------------------------------------------------------------------------------------------------ */

/* No-swizzle shared-memory matrix descriptor (layouts and bits: see the top; the 128-byte-swizzled one is hopper.cuh's
 * sw128_desc). */
__device__ __forceinline__ uint64_t gdesc(uint32_t addr, uint32_t lbo, uint32_t sbo) { /* no swizzle */
  return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32;
}

/* d[64] (+)= A[64x16] B[16x128]: m64n128k16, A (Q) and B (K) from shared memory, both K-major (trans 0).
 * ACC 0 ignores d (scale-d false). */
template <int ACC>
__device__ __forceinline__ void wgmma_qk(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "n"(ACC));
}

/* d[0..31] += A[64x16] B[16x64]: dims 0..63 of O. A (P) from registers (a0..a3 as in the header), B (V's main part)
 * from shared memory, MN-major (imm-trans-b 1). */
template <int NO>
__device__ __forceinline__ void wgmma_pv_main(float (&d)[NO], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "n"(1));
}
/* d[32..35] += A[64x16] B[16x8] (d72: dims 64..71) and d[32..39] += A B[16x16] (d80: dims 64..79), B the rest of
 * V: no swizzle, MN-major. Accumulator i of the whole O keeps the fragment map of the header (its column is
 * 8 (i >> 2) + 2 t + (i & 1) >= 64). */
template <int NO>
__device__ __forceinline__ void wgmma_pv_rest8(float (&d)[NO], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3"
      "}, {%4, %5, %6, %7}, %8, p, 1, 1, 1;\n}\n"
      : "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "n"(1));
}
template <int NO>
__device__ __forceinline__ void wgmma_pv_rest16(float (&d)[NO], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7"
      "}, {%8, %9, %10, %11}, %12, p, 1, 1, 1;\n}\n"
      : "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "n"(1));
}

/* S = Q K^T: 4 k-steps over the swizzled dims 0..63 (each 32 bytes further into the rows: +2 in the start field),
 * then, with a rest (RC > 0), one k-step over it (d72: dims 64..71 and the zero chunk). */
template <int RC>
__device__ __forceinline__ void gemm_qk(float (&s)[64], uint64_t dqm, uint64_t dqr, uint64_t dkm, uint64_t dkr) {
  wgmma_qk<0>(s, dqm, dkm);
#pragma unroll
  for (int kk = 1; kk < 4; kk++) wgmma_qk<1>(s, dqm + 2 * kk, dkm + 2 * kk);
  if constexpr (RC > 0) wgmma_qk<1>(s, dqr, dkr);
}

/* O += P V over the tile's BN keys: 8 k-steps of 16 keys, each 2 swizzled 8-key groups (2 KB) further on in the main
 * part and 16 rows of 16 bytes in the rest. */
template <int NO>
__device__ __forceinline__ void gemm_pv(float (&o)[NO], const uint32_t (&pa)[32], uint64_t dvm, uint64_t dvr) {
#pragma unroll
  for (int kk = 0; kk < BN / 16; kk++) {
    const uint32_t a0 = pa[4 * kk], a1 = pa[4 * kk + 1], a2 = pa[4 * kk + 2], a3 = pa[4 * kk + 3];
    wgmma_pv_main(o, a0, a1, a2, a3, dvm + kk * (2048 >> 4));
    if constexpr (NO == 36) wgmma_pv_rest8(o, a0, a1, a2, a3, dvr + kk * (16 * 16 >> 4));
    if constexpr (NO == 40) wgmma_pv_rest16(o, a0, a1, a2, a3, dvr + kk * (16 * 16 >> 4));
  }
}

/* ---- softmax on accumulator fragments --------------------------------------------------------------------- */

__device__ __forceinline__ float ex2(float x) { /* 2^x; -inf gives 0 */
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *(uint32_t *)&v;
}

/* Keys at or past kv (tile-relative, < BN) get -inf: column of s[i] is 8 (i >> 2) + 2 t + (i & 1). */
__device__ __forceinline__ void mask_keys(float (&s)[64], int kv, int t) {
#pragma unroll
  for (int i = 0; i < 64; i++)
    if (8 * (i >> 2) + 2 * t + (i & 1) >= kv) s[i] = -INFINITY;
}

/* Max of the thread's two rows (s[i] with i & 2 clear: row g; set: row g + 8), over the 4 lanes sharing them. Four
 * partial maxima per row keep the dependent chains short: a consumer warp shares its scheduler with only two others
 * (and, on one of the four, the producer), so latency is hidden by instruction-level parallelism more than by other
 * warps. */
__device__ __forceinline__ void row_max(const float (&s)[64], float &m0, float &m1) {
  float a[4], b[4];
#pragma unroll
  for (int k = 0; k < 4; k++) a[k] = fmaxf(s[4 * k], s[4 * k + 1]), b[k] = fmaxf(s[4 * k + 2], s[4 * k + 3]);
#pragma unroll
  for (int i = 16; i < 64; i += 4) {
    const int k = (i >> 2) & 3;
    a[k] = fmaxf(a[k], fmaxf(s[i], s[i + 1]));
    b[k] = fmaxf(b[k], fmaxf(s[i + 2], s[i + 3]));
  }
  m0 = fmaxf(fmaxf(a[0], a[1]), fmaxf(a[2], a[3]));
  m1 = fmaxf(fmaxf(b[0], b[1]), fmaxf(b[2], b[3]));
  m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 1));
  m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 1));
  m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 2));
  m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 2));
}

/* s = 2^(s c - m c) in place (m finite); returns this thread's part of the two row sums (four partial sums each). */
__device__ __forceinline__ void exponentiate(float (&s)[64], float m0, float m1, float c, float &l0, float &l1) {
  const float mc0 = m0 * c, mc1 = m1 * c;
  float a[4] = {0.f, 0.f, 0.f, 0.f}, b[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < 64; i += 4) {
    const int k = (i >> 2) & 3;
    s[i] = ex2(fmaf(s[i], c, -mc0));
    s[i + 1] = ex2(fmaf(s[i + 1], c, -mc0));
    s[i + 2] = ex2(fmaf(s[i + 2], c, -mc1));
    s[i + 3] = ex2(fmaf(s[i + 3], c, -mc1));
    a[k] += s[i] + s[i + 1];
    b[k] += s[i + 2] + s[i + 3];
  }
  l0 = (a[0] + a[1]) + (a[2] + a[3]);
  l1 = (b[0] + b[1]) + (b[2] + b[3]);
}

__device__ __forceinline__ void to_bf16(uint32_t (&pa)[32], const float (&s)[64]) {
#pragma unroll
  for (int j = 0; j < 32; j++) pa[j] = pack(s[2 * j], s[2 * j + 1]);
}

/* ---- test-only dumps (params.dbg): rows are the item's first DR q rows, columns its first 128 keys or D dims ----- */

__device__ __forceinline__ int frag_row(int wg, int i) {
  return wg * 64 + (threadIdx.x & 127) / 32 * 16 + (threadIdx.x & 31) / 4 + ((i & 2) ? 8 : 0);
}
__device__ __forceinline__ int frag_col(int i) {
  return 8 * (i >> 2) + 2 * (threadIdx.x & 3) + (i & 1);
}
/* dbg[0 .. DR*BN): raw S of key tile 0; dbg[DR*BN .. 2*DR*BN): P of tile 0 as the PV GEMM reads it (bf16, relative
 * to the tile's row max m0, unnormalised). */
__device__ void dump_sp(float *dbg, int wg, const float (&s)[64], const uint32_t (&pa)[32], bool p_part) {
#pragma unroll
  for (int i = 0; i < 64; i++) {
    const int at = frag_row(wg, i) * BN + frag_col(i);
    if (!p_part) {
      dbg[at] = s[i];
    } else {
      const uint32_t u = pa[i >> 1];
      dbg[DR * BN + at] = __uint_as_float((i & 1) ? u & 0xffff0000u : u << 16);
    }
  }
}
/* dbg[2*DR*BN .. 2*DR*BN + DR*D): O after the first PV GEMM = P(tile 0) V(tile 0), before any rescale. */
template <int NO>
__device__ void dump_o(float *dbg, int wg, const float (&o)[NO]) {
#pragma unroll
  for (int i = 0; i < NO; i++) dbg[2 * DR * BN + frag_row(wg, i) * (2 * NO) + frag_col(i)] = o[i];
}

/* ---- producer (TMA) ------------------------------------------------------------------------------------------- */

/* A box of a main map (4-D: dims, token row, head, q/k/v) at (0, row, head, part), or of a rest map (5-D: 8 dims of
 * a chunk, token row, chunk, head, q/k/v) at (0, row, 8, head, part), into shared memory at dst; its bytes complete_tx
 * on bar. The boxes' shared-memory images are the tiles the descriptors describe (see tmaps_get). Rows >= `rows` read
 * as 0. */
__device__ __forceinline__ void tma_main(uint32_t dst, const CUtensorMap *map, uint32_t bar, int row, int head,
                                         int part) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(dst),
      "l"(map), "r"(0), "r"(row), "r"(head), "r"(part), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_rest(uint32_t dst, const CUtensorMap *map, uint32_t bar, int row, int head,
                                         int part) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, "
      "%6}], [%7];\n" ::"r"(dst),
      "l"(map), "r"(0), "r"(row), "r"(8), "r"(head), "r"(part), "r"(bar)
      : "memory");
}

/* Warp 12: the whole warp runs the loop (mbar_wait ends in __syncwarp), lane 0 issues, per K/V tile, the K and the V
 * boxes, each stage's full barrier armed with the bytes of all of them. Rows of a box past the sequence's end are the
 * next sequence's (or zeros past `rows`): K columns past the end are masked in S, and the consumers zero V rows past
 * it before the last tile's P V (P is 0 there, but 0 x NaN is not 0). */
template <int D>
__device__ void producer_kv(const params &p, const tmaps *m, uint32_t sb) {
  using L = dims<D>;
  const uint32_t full = sb + L::OFF_BAR, empty = full + 8 * NS;
  const bool lead = (threadIdx.x & 31) == 0;
  if (lead) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(&m->kvm) : "memory");
    if (L::NR > 0) asm volatile("prefetch.tensormap [%0];\n" ::"l"(&m->kvr) : "memory");
  }
  int t = 0; /* K/V tiles so far: ring stage t % NS */
  for (int idx = blockIdx.x; idx < p.n_items; idx += gridDim.x) {
    item x;
    if (!item_get(p, idx, x)) continue;
    const int nkt = (x.len + BN - 1) / BN, r0 = (int)x.row0;
    for (int kt = 0; kt < nkt; kt++, t++) {
      const int s = t % NS, row = r0 + kt * BN;
      if (t >= NS) mbar_wait_warp(empty + 8 * s, ((t / NS) + 1) & 1); /* released for tile t - NS */
      if (lead) {
        const uint32_t bar = full + 8 * s;
        mbar_expect_tx(bar, 2 * (64 + 8 * L::NR) * BN * 2);
        tma_main(sb + L::OFF_K + s * L::KM, &m->kvm, bar, row, x.head, 1);
        tma_main(sb + L::OFF_V + s * L::KM, &m->kvm, bar, row, x.head, 2);
        if (L::NR > 0) {
          tma_rest(sb + L::OFF_KR + s * L::KR, &m->kvr, bar, row, x.head, 1);
          tma_rest(sb + L::OFF_VR + s * L::VR, &m->kvr, bar, row, x.head, 2);
        }
      }
    }
  }
  /* no wait needed before exit: every box is consumed (its full barrier waited on) by the consumers before they exit */
}

/* ---- Q producer and rotation ------------------------------------------------------------------------------------ */

/* Shared address of elements d, d+1 (d even) of row r of a Q buffer: in its main part (d < 64, 128-byte swizzle) or
 * its rest (chunk-column); see "Shared memory" at the top. */
__device__ __forceinline__ uint32_t q_elem(uint32_t qm, uint32_t qr, int r, int d) {
  return d < 64 ? qm + r * 128 + (((d >> 3) ^ (r & 7)) << 4) + ((d & 7) << 1)
                : qr + ((d - 64) >> 3) * (BM * 16) + r * 16 + ((d & 7) << 1);
}
__device__ __forceinline__ uint32_t lds32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(a));
  return v;
}
__device__ __forceinline__ void sts32(uint32_t a, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a), "r"(v));
}
/* Two pairs (x[d], x[d+h]), (x[d+1], x[d+h+1]) as bf16x2 lo, hi rotated in place with rope.cuh's arithmetic by the
 * tables' entries d, d+1 (cl, sl) and d+h, d+h+1 (ch, sh). */
__device__ __forceinline__ void rope2(uint32_t &lo, uint32_t &hi, float2 cl, float2 sl, float2 ch, float2 sh) {
  const __nv_bfloat162 a = *(const __nv_bfloat162 *)&lo, b = *(const __nv_bfloat162 *)&hi;
  const float a0 = __low2float(a), a1 = __high2float(a), b0 = __low2float(b), b1 = __high2float(b);
  __nv_bfloat162 ol, oh;
  ol.x = rope_lo(a0, b0, cl.x, sl.x), ol.y = rope_lo(a1, b1, cl.y, sl.y);
  oh.x = rope_hi(a0, b0, ch.x, sh.x), oh.y = rope_hi(a1, b1, ch.y, sh.y);
  lo = *(const uint32_t *)&ol, hi = *(const uint32_t *)&oh;
}

/* Warps 13-15 (thread rt < NROT): per item, once the consumers have released its Q buffer (the item two before),
 * thread 0 issues the Q boxes (BM rows) on the buffer's qfull barrier; with tables, every thread then waits for them,
 * rotates the rows of the tile that belong to the sequence in place (rope.cuh's arithmetic: rope_qk's bits; a task
 * is a row's pairs (d, d+h) and (d+1, d+h+1)), fences (its generic stores before the wgmmas' async-proxy reads) and
 * arrives on the buffer's qrot barrier (count NROT), which the consumers then wait on instead of qfull. Without
 * tables warps 14-15 leave at once. Rows past the sequence's end stay as loaded (never stored; their tables may not
 * exist). A Q tile is issued as soon as its buffer is free, when the consumers start the item before it, not behind
 * that item's K/V tiles (warp 12 issued Q too at first: the tile landed NS key tiles before it was needed, too late
 * for a rotation, which then stalled every item: 64 x 1,024 rows took 1.35 ms instead of 0.84). The rotation is
 * bound by the latency of the tables' loads from L2 (an item's 192 rows of cos and sin: 110 KB at d72): B tasks'
 * loads in flight per thread, as the registers allow. */
template <int D>
__device__ void producer_q(const params &p, const tmaps *m, uint32_t sb, int rt) {
  using L = dims<D>;
  constexpr int H = D / 2, U = H / 2; /* tasks per row: 18 at d72 */
  constexpr int B = ROT_B;
  const uint32_t qfull = sb + L::OFF_BAR + 16 * NS, qempty = qfull + 16, qrot = qfull + 32;
  const bool rot = p.cos != nullptr;
  if (!rot && rt >= 32) return;
  if (rt == 0) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(&m->qm) : "memory");
    if (L::NR > 0) asm volatile("prefetch.tensormap [%0];\n" ::"l"(&m->qr) : "memory");
  }
  int it = 0;
  for (int idx = blockIdx.x; idx < p.n_items; idx += gridDim.x) {
    item x;
    if (!item_get(p, idx, x)) continue;
    const int qb = it & 1;
    const uint32_t qm = sb + qb * L::QM, qr = sb + L::OFF_QR + qb * L::QR;
    if (it >= 2) mbar_wait(qempty + 8 * qb, ((it >> 1) + 1) & 1); /* released for item it - 2 */
    if (rt == 0) {
      const uint32_t bar = qfull + 8 * qb;
      mbar_expect_tx(bar, (64 + 8 * L::NR) * BM * 2);
      tma_main(qm, &m->qm, bar, (int)x.row0 + x.q0, x.head, 0);
      if (L::NR > 0) tma_rest(qr, &m->qr, bar, (int)x.row0 + x.q0, x.head, 0);
    }
    if (rot) {
      const int nu = min(BM, x.len - x.q0) * U;
      const int64_t t0 = (x.row0 + x.q0) * D; /* the tables' offset of the tile's row 0 */
      mbar_wait(qfull + 8 * qb, (it >> 1) & 1);
      for (int u0 = rt; u0 < nu; u0 += B * NROT) {
        uint32_t al[B], ah[B], lo[B], hi[B];
        float2 cl[B], sl[B], ch[B], sh[B];
#pragma unroll
        for (int k = 0; k < B; k++) { /* every task's loads first: their latencies overlap */
          const int u = u0 + k * NROT, r = u / U, d = (u - r * U) * 2;
          if (u >= nu) continue;
          al[k] = q_elem(qm, qr, r, d), ah[k] = q_elem(qm, qr, r, d + H);
          const float2 *c = (const float2 *)(p.cos + t0 + r * D + d), *sn = (const float2 *)(p.sin + t0 + r * D + d);
          lo[k] = lds32(al[k]), hi[k] = lds32(ah[k]);
          cl[k] = __ldg(c), sl[k] = __ldg(sn), ch[k] = __ldg(c + H / 2), sh[k] = __ldg(sn + H / 2);
        }
#pragma unroll
        for (int k = 0; k < B; k++) {
          if (u0 + k * NROT >= nu) continue;
          rope2(lo[k], hi[k], cl[k], sl[k], ch[k], sh[k]);
          sts32(al[k], lo[k]);
          sts32(ah[k], hi[k]);
        }
      }
      fence_proxy_async();
      mbar_arrive(qrot + 8 * qb);
    }
    it++;
  }
}

/* ---- consumer ---------------------------------------------------------------------------------------------------- */

/* Rows [from, BN) of a V tile to zero (they hold the next sequence's rows, or anything the caller left past the
 * sequences); thread i of the warpgroup owns row i. Every warpgroup stores the same zeros, each before its own P V,
 * then fences and syncs its own threads (named barrier 4 + wg): a store that lands while another warpgroup's wgmma
 * reads the row writes the value already there. */
template <int D>
__device__ __forceinline__ void zero_v_rows(uint32_t vm, uint32_t vr, int from, int wg) {
  const int r = threadIdx.x & 127;
  if (r >= from) {
#pragma unroll
    for (int c = 0; c < 8; c++) /* the row's 128 swizzled bytes */
      asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(vm + r * 128 + c * 16), "r"(0) : "memory");
#pragma unroll
    for (int ch = 0; ch < dims<D>::NR; ch++)
      asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(vr + ch * (BN * 16) + r * 16), "r"(0) : "memory");
  }
  fence_proxy_async();
  bar_sync(4 + wg, 128);
}

template <int D>
__device__ void consumer(const params &p, uint32_t sb, int wg) {
  using L = dims<D>;
  constexpr int NO = D / 2;
  const uint32_t full = sb + L::OFF_BAR, empty = full + 8 * NS, qfull = empty + 8 * NS, qempty = qfull + 16;
  const uint32_t qready = p.cos ? qfull + 32 : qfull; /* with tables, producer_q's qrot */
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3, w4 = (threadIdx.x & 127) >> 5;
  const int64_t ld = (int64_t)p.heads * D; /* out row stride, elements */
  const float c = p.c;
  /* stage st's tiles: K and V main parts (swizzled), their rests */
  auto km = [&](int st) { return sb + L::OFF_K + st * L::KM; };
  auto vm = [&](int st) { return sb + L::OFF_V + st * L::KM; };
  auto kr = [&](int st) { return sb + L::OFF_KR + st * L::KR; };
  auto vr = [&](int st) { return sb + L::OFF_VR + st * L::VR; };
  float s[64], o[NO];
  uint32_t pa[32];
  int t = 0, it = 0;
  for (int idx = blockIdx.x; idx < p.n_items; idx += gridDim.x) {
    item x;
    if (!item_get(p, idx, x)) continue;
    const int qb = it & 1, nkt = (x.len + BN - 1) / BN;
    mbar_wait_warp(qready + 8 * qb, (it >> 1) & 1);
    if (x.q0 + 64 * wg >= x.len) { /* none of this warpgroup's rows exist: only release the item's buffers */
      if (lane == 0) mbar_arrive(qempty + 8 * qb);
      for (int kt = 0; kt < nkt; kt++, t++) {
        mbar_wait_warp(full + 8 * (t % NS), (t / NS) & 1);
        if (lane == 0) mbar_arrive(empty + 8 * (t % NS));
      }
      it++;
      continue;
    }
    /* every warpgroup has rows: take turns issuing Q K^T (round robin over named barriers 1 .. WG) */
    const bool pp = p.pingpong && x.q0 + 64 * (WG - 1) < x.len;
    const bool dump = p.dbg && blockIdx.x == 0 && it == 0 && wg < 2;
    const uint64_t dqm = sw128_desc(sb + qb * L::QM + wg * 64 * 128),
                   dqr = gdesc(sb + L::OFF_QR + qb * L::QR + wg * 64 * 16, BM * 16, 128);

    /* key tile 0: S, its max and P; O starts at 0 */
    int st = t % NS;
    mbar_wait_warp(full + 8 * st, (t / NS) & 1);
    if (nkt == 1 && x.len < BN) zero_v_rows<D>(vm(st), vr(st), x.len, wg);
    wgmma_fence();
    gemm_qk<L::RC>(s, dqm, dqr, sw128_desc(km(st)), gdesc(kr(st), BN * 16, 128));
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(s);
    if (dump) dump_sp(p.dbg, wg, s, pa, false);
    if (nkt == 1) mask_keys(s, x.len, tq);
    float m0, m1, l0, l1;
    row_max(s, m0, m1);
    exponentiate(s, m0, m1, c, l0, l1);
    to_bf16(pa, s);
    if (dump) dump_sp(p.dbg, wg, s, pa, true);
#pragma unroll
    for (int i = 0; i < NO; i++) o[i] = 0.f;

    /* tiles 1 .. nkt-1: P_{kt-1} V_{kt-1}, then S_kt and its softmax: only S or P is live beside O */
    for (int kt = 1; kt < nkt; kt++) {
      wgmma_fence();
      gemm_pv(o, pa, sw128_desc(vm(st)), gdesc(vr(st), 128, BN * 16));
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(o);
      fence_regs(pa);
      if (lane == 0) mbar_arrive(empty + 8 * st);
      __syncwarp();
      if (dump && kt == 1) dump_o(p.dbg, wg, o);
      t++;
      st = t % NS;
      mbar_wait_warp(full + 8 * st, (t / NS) & 1);
      if (kt == nkt - 1 && x.len - kt * BN < BN) zero_v_rows<D>(vm(st), vr(st), x.len - kt * BN, wg);
      if (pp) bar_sync(1 + wg, 256);
      wgmma_fence();
      gemm_qk<L::RC>(s, dqm, dqr, sw128_desc(km(st)), gdesc(kr(st), BN * 16, 128));
      wgmma_commit();
      if (pp) bar_arrive(1 + (wg + 1) % WG, 256); /* the next warpgroup's turn */
      wgmma_wait<0>();
      fence_regs(s);
      if (kt == nkt - 1) mask_keys(s, x.len - kt * BN, tq);
      float n0, n1, r0, r1;
      row_max(s, n0, n1);
      n0 = fmaxf(n0, m0), n1 = fmaxf(n1, m1);
      /* when no row max of the warp grew, every factor below is 2^0 = 1 and O stays as it is */
      const bool grew = __any_sync(0xffffffffu, n0 > m0 || n1 > m1);
      const float a0 = ex2((m0 - n0) * c), a1 = ex2((m1 - n1) * c);
      m0 = n0, m1 = n1;
      exponentiate(s, m0, m1, c, r0, r1);
      l0 = l0 * a0 + r0, l1 = l1 * a1 + r1;
      if (grew) {
#pragma unroll
        for (int i = 0; i < NO; i++) o[i] *= (i & 2) ? a1 : a0;
      }
      to_bf16(pa, s);
    }
    /* the last tile's P V */
    wgmma_fence();
    gemm_pv(o, pa, sw128_desc(vm(st)), gdesc(vr(st), 128, BN * 16));
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
    if (lane == 0) {
      mbar_arrive(empty + 8 * st);
      mbar_arrive(qempty + 8 * qb);
    }
    t++;
    if (dump && nkt == 1) dump_o(p.dbg, wg, o);

    /* O / l; rows g and g + 8 of this warp, 2 dims per 8-dim chunk */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.f / l0, i1 = 1.f / l1;
    const int r0 = x.q0 + wg * 64 + w4 * 16 + g, r1 = r0 + 8;
    bf16 *o0 = p.out + (x.row0 + r0) * ld + x.head * D + 2 * tq, *o1 = o0 + 8 * ld;
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
      if (r0 < x.len) *(uint32_t *)(o0 + 8 * j) = pack(o[4 * j] * i0, o[4 * j + 1] * i0);
      if (r1 < x.len) *(uint32_t *)(o1 + 8 * j) = pack(o[4 * j + 2] * i1, o[4 * j + 3] * i1);
    }
    it++;
  }
}

template <int D>
__device__ __forceinline__ void body(const params &p, const tmaps *m) {
  using L = dims<D>;
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sb = (smem_u32(smem) + 1023) & ~1023u; /* the swizzled tiles need 1024-byte alignment */
  if (threadIdx.x == 0) {
    for (int i = 0; i < NS; i++) {
      mbar_init(sb + L::OFF_BAR + 8 * i, 1);             /* full: the TMA thread's expect_tx */
      mbar_init(sb + L::OFF_BAR + 8 * (NS + i), 4 * WG); /* empty: every consumer warp */
    }
    for (int i = 0; i < 2; i++) {
      mbar_init(sb + L::OFF_BAR + 8 * (2 * NS + i), 1);          /* qfull: the Q TMA thread's expect_tx */
      mbar_init(sb + L::OFF_BAR + 8 * (2 * NS + 2 + i), 4 * WG); /* qempty: every consumer warp */
      mbar_init(sb + L::OFF_BAR + 8 * (2 * NS + 4 + i), NROT);   /* qrot: every producer_q thread */
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if (L::RC > L::NR) { /* the pad chunk of both Q buffers' and every K stage's rest: zeros that no box overwrites */
    for (int i = threadIdx.x; i < 2 * BM + NS * BN; i += NT) {
      const int j = i - 2 * BM;
      const uint32_t a = j < 0 ? sb + L::OFF_QR + (i / BM) * L::QR + L::NR * (BM * 16) + (i % BM) * 16
                               : sb + L::OFF_KR + (j / BN) * L::KR + L::NR * (BN * 16) + (j % BN) * 16;
      asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(a), "r"(0) : "memory");
    }
    fence_proxy_async();
  }
  __syncthreads();
  /* NT threads start with the launch-bounds maximum, 128; the producer warpgroup gives registers back and the
   * consumers take them: 128 x (128 - 24) >= 384 x (160 - 128). */
  const int warp = threadIdx.x >> 5;
  if (warp >= 4 * WG) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(PREG) : "memory");
    if (warp == 4 * WG)
      producer_kv<D>(p, m, sb);
    else
      producer_q<D>(p, m, sb, threadIdx.x - 128 * WG - 32);
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(CREG) : "memory");
    if (p.pingpong && warp < 4) bar_arrive(1, 256); /* warpgroup 0 holds the first turn */
    consumer<D>(p, sb, warp >> 2);
  }
}

#endif /* sm_90a */

/* The tensor maps must live in the parameter space (__grid_constant__) for the TMA unit. */
template <int D>
__global__ void __launch_bounds__(NT, 1) attn_vit_wgmma_kernel(const __grid_constant__ targs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  body<D>(a.p, &a.m);
#else
  (void)a; /* never launched: the launcher requires compute capability 9.0, which runs the sm_90a code */
#endif
}

int g_state; /* 0 not initialised, 1 ready, QVL_ERR_UNSUPPORTED for a device other than compute capability 9.0 or a
              * driver without cuTensorMapEncodeTiled */
int g_n_sm;
int g_pingpong = 1;

/* ---- tensor maps ---------------------------------------------------------------------------------------------- */

typedef CUresult (*encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                              const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
encode_fn g_encode; /* cuTensorMapEncodeTiled from the driver (set by init, which refuses without it) */

/* Head-agnostic maps of qkv [rows][3][heads][D] (strides: token row 3 heads D 2 bytes, head 2 D, q/k/v 2 heads D),
 * boxes of `box_rows` rows. Rows >= `rows` are out of bounds: zero-filled, never read. L2 promotion 256 B (a head's
 * K/V rows are re-read by every q tile of the head).
 * main: dims (innermost first) dim, token row, head, q/k/v; box (64, box_rows, 1, 1) at dim 0, 128-byte swizzle: TMA
 *   writes box row r's 16-byte chunk c at r * 128 + (c ^ (r % 8)) * 16, the canonical 128-byte-swizzled tile.
 * rest: dims 8 dims of a chunk (16 bytes), token row, chunk (stride 16 bytes), head, q/k/v; box (8, box_rows, NR, 1,
 *   1) at chunk 8, no swizzle: box element (e, r, ch) lands at ((ch * box_rows) + r) * 16 + 2 e, the chunk-column
 *   tile (the pad chunk of Q's and K's rest is outside the box and stays zero). */
int tmap_encode(CUtensorMap *map, const void *qkv, int64_t rows, int heads, int D, int box_rows, bool main) {
  const cuuint64_t row = (cuuint64_t)3 * heads * D * 2, head = (cuuint64_t)D * 2, part = (cuuint64_t)heads * D * 2;
  const cuuint32_t estride[5] = {1, 1, 1, 1, 1};
  CUresult r;
  if (main) {
    const cuuint64_t dim[4] = {(cuuint64_t)D, (cuuint64_t)rows, (cuuint64_t)heads, 3}, stride[3] = {row, head, part};
    const cuuint32_t box[4] = {64, (cuuint32_t)box_rows, 1, 1};
    r = g_encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)qkv, dim, stride, box, estride,
                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  } else {
    const cuuint64_t dim[5] = {8, (cuuint64_t)rows, (cuuint64_t)(D / 8), (cuuint64_t)heads, 3};
    const cuuint64_t stride[4] = {row, 16, head, part};
    const cuuint32_t box[5] = {8, (cuuint32_t)box_rows, (cuuint32_t)(D / 8 - 8), 1, 1};
    r = g_encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 5, (void *)qkv, dim, stride, box, estride,
                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  }
  return r == CUDA_SUCCESS ? QVL_OK : QVL_ERR_UNSUPPORTED;
}

/* Maps per (qkv, rows, heads, D), so repeated calls on the same buffers (every layer of a tower) encode nothing; a
 * captured launch carries its maps in its parameters. 16 entries, replaced round robin, under a mutex. */
struct tmap_entry {
  const void *qkv;
  int64_t rows;
  int heads, d;
  tmaps m;
};
tmap_entry g_tmaps[16];
int g_tmaps_n, g_tmaps_next;
pthread_mutex_t g_tmaps_mu = PTHREAD_MUTEX_INITIALIZER;

int tmaps_get(tmaps *out, const void *qkv, int64_t rows, int heads, int D) {
  if (rows > 0x7fffffff) return QVL_ERR_LIMIT; /* TMA coordinates are int32 */
  int rc = QVL_OK;
  pthread_mutex_lock(&g_tmaps_mu);
  int i = 0;
  while (i < g_tmaps_n &&
         !(g_tmaps[i].qkv == qkv && g_tmaps[i].rows == rows && g_tmaps[i].heads == heads && g_tmaps[i].d == D))
    i++;
  if (i == g_tmaps_n) {
    tmap_entry e = {qkv, rows, heads, D, {}};
    rc = tmap_encode(&e.m.qm, qkv, rows, heads, D, BM, true);
    if (rc == QVL_OK) rc = tmap_encode(&e.m.kvm, qkv, rows, heads, D, BN, true);
    if (rc == QVL_OK && D > 64) rc = tmap_encode(&e.m.qr, qkv, rows, heads, D, BM, false);
    if (rc == QVL_OK && D > 64) rc = tmap_encode(&e.m.kvr, qkv, rows, heads, D, BN, false);
    if (rc == QVL_OK) {
      i = g_tmaps_n < 16 ? g_tmaps_n++ : (g_tmaps_next++ & 15);
      g_tmaps[i] = e;
    }
  }
  if (rc == QVL_OK) *out = g_tmaps[i].m;
  pthread_mutex_unlock(&g_tmaps_mu);
  return rc;
}

/* ---- launch --------------------------------------------------------------------------------------------------- */

template <int D>
int set_attrs() {
  return cudaFuncSetAttribute(attn_vit_wgmma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, dims<D>::SMEM) ||
         cudaFuncSetAttribute(attn_vit_wgmma_kernel<D>, cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared);
}

template <int D>
int launch(const params &p, int grid, cudaStream_t s) {
  targs a;
  a.p = p;
  int rc = tmaps_get(&a.m, p.qkv, p.rows, p.heads, D);
  if (rc != QVL_OK) return rc;
  attn_vit_wgmma_kernel<D><<<grid, NT, dims<D>::SMEM, s>>>(a);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

int gcd(int a, int b) {
  while (b) {
    const int r = a % b;
    a = b, b = r;
  }
  return a;
}

int run(float *dbg, int flags, uint16_t *out, const uint16_t *qkv, const float *cos, const float *sin,
        const int32_t *cu, int n_seq, int max_len, int64_t rows, int heads, int head_dim, float scale, qvl_stream s) {
  if ((head_dim != 64 && head_dim != 72 && head_dim != 80) || rows > 0x7fffffff) /* TMA coordinates are int32 */
    return QVL_ERR_UNSUPPORTED;
  if (!out || !qkv || !cu || heads < 1 || !(scale > 0.f) || n_seq < 0 || max_len < 0 || rows < 0 ||
      ((uintptr_t)qkv & 15) || ((uintptr_t)out & 3) || !cos != !sin || ((uintptr_t)cos & 15) || ((uintptr_t)sin & 15))
    return QVL_ERR_INVALID_ARG;
  if (g_state == 0) {
    int rc = cuda_attn_vit_wgmma_init();
    if (rc != QVL_OK) return rc;
  }
  if (g_state != 1) return g_state;
  if (n_seq == 0 || max_len == 0 || rows == 0) return QVL_OK;
  const int64_t n_qt = ((int64_t)max_len + BM - 1) / BM, items = (int64_t)n_seq * heads * n_qt;
  if (items > 0x7fffffff - 2 * 65536 || n_seq >= 0x7fffffff) return QVL_ERR_LIMIT;
  params p;
  p.out = (bf16 *)out;
  p.qkv = (const bf16 *)qkv;
  p.cu = cu;
  p.cos = cos;
  p.sin = sin;
  p.dbg = dbg;
  p.rows = rows;
  p.n_qt = (int)n_qt;
  p.n_items = (int)items;
  p.heads = heads;
  p.pingpong = g_pingpong && !(flags & CUDA_ATTN_VIT_NO_PINGPONG);
  p.c = scale * 1.4426950408889634f;
  /* Items go round robin, CTA b taking b, b + grid, ...: were n_qt to divide the grid, every CTA would take the same q
   * tile of each (sequence, head), and where the last q tile is short (1,024 rows: five of 192 and one of 64) a sixth
   * of the CTAs would take only short items and idle while the rest take full ones. A grid coprime with n_qt rotates
   * the q tile a CTA takes (H100, 64 x 1,024 rows, 16 heads, d72: 132 CTAs 1.016 ms, 131 0.957). */
  int grid = (int)(items < g_n_sm ? items : g_n_sm);
  if (items > g_n_sm)
    while (grid > g_n_sm / 2 && gcd(grid, p.n_qt) > 1) grid--;
  const cudaStream_t st = (cudaStream_t)s;
  switch (head_dim) {
    case 64:
      return launch<64>(p, grid, st);
    case 72:
      return launch<72>(p, grid, st);
    default:
      return launch<80>(p, grid, st);
  }
}

} /* namespace */

extern "C" int cuda_attn_vit_wgmma_init(void) {
  int dev = 0, major = 0, minor = 0, n_sm = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return QVL_ERR_DEVICE;
  if (major != 9 || minor != 0) return g_state = QVL_ERR_UNSUPPORTED;
  if (set_attrs<64>() || set_attrs<72>() || set_attrs<80>()) return QVL_ERR_DEVICE;
  void *fn = cuda_tensor_map_encoder(); /* device.cu: cuTensorMapEncodeTiled from the driver */
  if (!fn) return g_state = QVL_ERR_UNSUPPORTED;
  g_encode = (encode_fn)fn;
  const char *e = getenv("QVL_ATTN_VIT_PINGPONG");
  g_pingpong = !(e && e[0] == '0');
  g_n_sm = n_sm > 0 ? n_sm : 1;
  g_state = 1;
  return QVL_OK;
}

extern "C" int cuda_attn_vit_wgmma(uint16_t *out, const uint16_t *qkv, const float *cos, const float *sin,
                                   const int32_t *cu, int n_seq, int max_len, int64_t rows, int heads, int head_dim,
                                   float scale, qvl_stream s) {
  return run(NULL, 0, out, qkv, cos, sin, cu, n_seq, max_len, rows, heads, head_dim, scale, s);
}

extern "C" int cuda_attn_vit_wgmma_debug(float *dbg, int flags, uint16_t *out, const uint16_t *qkv, const float *cos,
                                         const float *sin, const int32_t *cu, int n_seq, int max_len, int64_t rows,
                                         int heads, int head_dim, float scale, qvl_stream s) {
  return run(dbg, flags, out, qkv, cos, sin, cu, n_seq, max_len, rows, heads, head_dim, scale, s);
}
