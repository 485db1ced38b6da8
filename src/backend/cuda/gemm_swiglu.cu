/* gemm_swiglu.cu - the gate|up GEMM of a SwiGLU MLP with the activation fused into its epilogue, for Hopper (sm_90a):
 *   y[r][j] = bf16(bf16(silu(g)) * u),  g = bf16(sum_c x[r][c] w[j][c] + bias[j]),  u = the same with row f + j of w,
 * x [m][k], w [2f][k] (gate rows 0 .. f-1, then up rows f .. 2f-1: the concatenation made at load), bias [2f] or
 * NULL, y [m][f]. Used by the Qwen2.5-VL vision blocks and the language model's prefill (backend.h linear_swiglu).
 *
 * Why: the unfused path writes gu [m][2f] with cuBLASLt (BIAS epilogue) and reads it back in swiglu.cu: at the
 * tower's shape (m 65,536, 2f 6,912, k 1,280) 1.76 ms of GEMM plus 0.48 ms for the 1.36 GB round trip. Here gu
 * never leaves the SM (registers, then one tile of it in shared memory).
 *
 * Numerics, step for step those of cuBLASLt + swiglu.cu: f32 accumulation, the bias added in f32 (bias NULL adds
 * -0.0f, the exact identity), g and u rounded to bf16, silu in f32 rounded to bf16 (silu_bf16_f32 of swiglu.cuh:
 * the bits of swiglu.cu's silu_bf16 for every bf16 gate value, in f32 alone and without the division's slow-path
 * call, see there), the product rounded to bf16.
 * Only the order of the f32 sums differs from cuBLASLt's.
 *
 * Tiles: a work unit is BM = 128 rows x BN = 128 output features. Its B operand is 256 weight rows, gate rows
 * n0 .. n0+127 and up rows f+n0 .. f+n0+127 stacked in one stage, so one m64n256k16 per k16 step and consumer
 * warpgroup gives accumulator columns 0-127 = gate and 128-255 = up, and (fragment layout below) column c + 128 sits
 * in register i + 64 of the thread that holds column c in register i: each thread holds both halves of every
 * output it writes, with no shuffle and no permutation of the weights.
 *
 * Roles (warps 0-3 and 4-7 are the consumer warpgroups, rows 0-63 and 64-127 of the tile; warps 8-11 the producer
 * warpgroup: warp 8's lane 0 is the producer, its other lanes wait at the end, warps 9-11 are the epilogue warps):
 *   producer: per k step of BK = 64 (128 bytes of a row) one TMA box of x (128 rows) and two of w (gate and up,
 *     128 rows each) into stage it % NS of a ring of NS = 3 stages, arming the stage's "full" mbarrier (count 1)
 *     with expect_tx of the 48 KB. It runs ahead into the next tile while the consumers finish the current one.
 *   consumer warpgroup: per k step 4 x wgmma m64n256k16 (A and B from shared memory, 128-byte swizzle), one
 *     commit group, then wait until only this step's group is in flight and release the previous stage (one
 *     arrival per warp on its "empty" mbarrier, count 8 x CL). At the end of a tile: wait for all groups, release
 *     the last stage, add the bias and round the 128 accumulators to 64 bf16x2 (g, u) pairs per thread, wait on
 *     epi_empty until the epilogue warps have read E's previous tile (not before the CTA's first tile), write the
 *     pairs to E (32 8-byte stores per thread) and arrive on epi_full; then the next tile's k steps.
 *   epilogue warps (3, 96 threads): the same tile sequence as the consumers (tile_of, the same loop over t). Per
 *     tile, wait on epi_full, then warp w takes rows w, w + 3, ... below m; per row each lane loads 4 consecutive
 *     pairs (16 bytes) of E, computes their 4 outputs (swiglu1: silu_bf16_f32, the product, bf16) and stores 8
 *     bytes of y, the warp one contiguous 256-byte run per row; after its last load of the tile every epilogue
 *     thread arrives on epi_empty. So a tile's SwiGLU runs while the consumers compute the next tile.
 *   Rows >= m: TMA zero-fills them on load; the consumers write them to E like any row, the epilogue never stores
 *   them (in a CL = 2 pair whose second m-tile lies wholly past m it stores nothing, but waits and arrives alike).
 *
 * Why the epilogue warps: the previous design did the SwiGLU in the consumer warps, in chunks of 8 outputs per
 * thread interleaved with the next tile's k steps (expf, a double reciprocal and 2 Newton steps, f32 <-> f64
 * conversions, 4-byte stores of y). On the H100 it ran 497-578 TFLOP/s; the same kernel with that SiLU, product
 * and stores removed (the accumulators still packed) ran 728-815 TFLOP/s (65,536 x 6,912 x 1,280: 1.59 ms;
 * 4,096 x 37,888 x 3,584: 1.37 ms), above cuBLASLt (680-762). An f32 reciprocal instead of the double one won only
 * ~5% (and lost the bit-exactness), relaxed arrivals nothing: the epilogue's instructions and stalls in the
 * consumer warps took the issue slots that feed the tensor pipe. Here the consumers keep only the bias add, the
 * rounding and 32 shared stores per tile, and the epilogue warps (normally on SM sub-partitions 1-3, by warp % 4)
 * have a whole tile's k steps for the rest. The price: 3 stages instead of 4 (E takes the fourth's room).
 *
 * Hand-over barriers (this CTA's own, no cluster traffic; j counts this CTA's tiles from 0): epi_full, count 256
 * (every consumer thread arrives once per tile after its E stores), phase j = tile j written; the epilogue waits
 * parity j & 1. epi_empty, count 96 (every epilogue thread once per tile after its loads), phase j = tile j read;
 * the consumers wait parity (j - 1) & 1 before writing tile j >= 1. Neither barrier can run two phases ahead of a
 * waiter (phase j + 1 of either needs the other side's phase j), so parity waits are unambiguous. Per-thread
 * arrivals (not one per warp after __syncwarp, as the stage releases do): these barriers order generic shared
 * stores and loads between warps, which each thread's own release arrival / acquire wait orders directly; they
 * come once per tile, so their cost does not matter. Both phases complete only when all 256 / 96 threads arrived,
 * and every one of them runs the same number of tiles, so none waits for a tile the other side never does.
 *
 * Schedule: persistent, one CTA (or cluster) per SM, taking tiles blockIdx.x / CL, + gridDim.x / CL, ... The order
 * keeps the smaller operand in L2: when w is at most 24 MB (the tower's 17.7 MB) n-tiles run fastest within an
 * m-tile, so every CTA streams x once and w stays in L2; when w is larger (the language model, 271 MB at 2f 37,888
 * x k 3,584) tiles go in bands of gm m-tiles (band rows x k at most 16 MB), m fastest within a band, so each w tile
 * is read from HBM once per band while the band's x rows stay in L2.
 *
 * Clusters (CL = 2, QVL_GEMM_SWIGLU_CLUSTER=2 or cuda_linear_swiglu_debug): two CTAs of a cluster take the two
 * m-tiles of a pair with the same n-tile; each loads half of the B rows (64 gate + 64 up rows) and multicasts them
 * to both, so the L2 -> SM traffic per stage falls from 48 KB to 32 KB. A stage's "empty" barrier then counts the
 * consumer warps of both CTAs (each warp arrives on its own CTA's barrier and on the peer's), the "full" barrier
 * still expects 48 KB (its own x box, its own B halves and the peer's), and the CTAs meet at a cluster barrier
 * before they exit (a consumer may still arrive on the peer's barrier). CL = 1 is the default until measured.
 *   The pipeline's mbarriers use the default semantics (arrive: release at CTA scope, remote arrivals included;
 * try_wait: acquire at CTA scope), as CUTLASS's ClusterBarrier does: they order only async-proxy traffic (TMA
 * bytes, wgmma reads completed by wgmma.wait_group), never generic accesses between CTAs. The first version used
 * `mbarrier.arrive.release.cluster` for the empty barriers, which ptxas expands to MEMBAR.ALL.CTA; MEMBAR.ALL.GPU;
 * ERRBAR; CGAERRBAR before each arrival: two such sequences per consumer warp and k step, in lane 0 one after the
 * other, each waiting out the warp's outstanding memory traffic (the epilogue's y stores among it) at GPU scope
 * before the stage could go back to either producer. The cluster variant ran at half the one-CTA variant's
 * speed. Its waits' `.acquire.cluster` also put a CCTL.IVALL (L1 invalidation) after every wait in both variants.
 *
 * Shared memory (1024-byte aligned: the 128-byte swizzle repeats every 8 rows x 128 bytes): x stages [NS][128 rows]
 * [128 B] (48 KB), w stages [NS][256 rows][128 B] (gate rows 0-127, up rows 128-255; 96 KB), E [128 rows][136]
 * uint32 (68 KB: one tile's (g, u) pairs, 128 used per row), then full[NS], empty[NS], epi_full, epi_empty: 212 KB
 * + 64 B (+ 1 KB alignment slack), of the 227 KB a CTA may have (4 stages, 192 KB, and E do not fit). TMA with
 * CU_TENSOR_MAP_SWIZZLE_128B writes row r's 16-byte chunk c at r * 128 + ((c ^ (r % 8)) * 16): the canonical
 * K-major SW128 layout of wgmma. E's row stride of 136 words (544 bytes, 8 banks past a multiple of 32 words): a
 * consumer's 8-byte store of word pair (row g + 8h, column 8q + 2t) puts the 16 lanes of a half warp (g 0-3 or 4-7,
 * t 0-3) on banks 8g + 2t, +1: all 32, no conflict; an epilogue lane's 16-byte load of words 4 lane .. 4 lane + 3
 * of one row puts each quarter warp on 128 contiguous bytes: no conflict.
 *
 * Descriptors (PTX ISA "Matrix Descriptor Format"): bits 0-13 start address >> 4, 16-29 leading byte offset >> 4
 * (unused by K-major swizzled layouts whose K extent, 32 bytes per k16, lies within the 128-byte row; 1 as CUTLASS
 * sets it), 32-45 stride byte offset >> 4 = 1024 >> 4 (the next 8-row group), 49-51 base offset 0 (every stage
 * and warpgroup slice starts 1024-aligned), 62-63 layout 1 = 128-byte swizzle. k16 step kk of a stage starts
 * 32 kk bytes into the rows (+2 in the start field), as CUTLASS and DeepGEMM advance it: the hardware applies
 * the XOR swizzle to the address it forms. A of consumer warpgroup w starts at the x stage + 64 w * 128 bytes.
 *
 * Fragments (PTX ISA "Register Fragments", m64nNk16 f32 accumulators; g = lane / 4, t = lane % 4, warp w4 of the
 * warpgroup): d[i], i < N/2 = 128: row 16 w4 + g + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2 t + (i & 1). So with
 * i = 4q + 2h + e (q < 32, h, e < 2): row g + 8h, column 8q + 2t + e; q < 16 is gate column 8q + 2t + e and
 * q + 16 (i + 64) the up column of the same output. The pair e = 0, 1 is one 8-byte store to E.
 *
 * Registers: __launch_bounds__(384, 1) starts every thread at 168; setmaxnreg moves them to the consumers, 72 for
 * the producer warpgroup and 216 for a consumer (128 x 72 + 256 x 216 = 64,512 = 384 x 168). ptxas honours the
 * limits per region (it spills inside a region that needs more): the consumer code alone compiles to 208 registers
 * and spills at 200; the epilogue warps' code alone to 70 (two rows in flight; it fits in 56 with less overlap).
 * ptxas -v (nvcc 13, sm_90a), both variants: 168 registers at launch, 0 bytes stack frame, 0 spill stores or loads,
 * and no "warpgroup.wait/.arrive is injected" note (C7517/C7519: ptxas serializing the wgmmas). Check all three
 * after any change: an IEEE division (its slow-path call) or a branch around the wgmmas brought them back before.
 *
 * Measured (`QVL_GEMM_SWIGLU_BENCH=1 build-gpu/test_gpu_gemm_swiglu`, median of 20; docs/PERF.md session 6), tower
 * shape 65,536 x 6,912 x 1,280, on an H200 (609acdc): fused 1.597 ms (726 TFLOP/s-equivalent), cluster 2 1.775, against
 * cuBLASLt 1.770 + swiglu.cu 0.426 = 2.196 ms; 11,264 rows 0.303 against 0.345; the language model's prefill
 * 1,735 x 37,888 x 3,584: 0.640 against 0.665, 4,096 rows 1.455 against 1.505. The steps that got there: the
 * SiLU with a double reciprocal (f64 FMAs and f32 <-> f64 conversions, on pipes all warps of the SM share) ran
 * 2.19 ms here with the epilogue warps (27b74e6) and 2.04-2.14 ms in the consumer warps before (H100, a2e67d9 and
 * 62ebddf), while the same mainloop with no SiLU at all ran 1.59 ms (a scratch build): the arithmetic was the cost,
 * not where it ran; silu_bf16_f32 removed it. The cluster variant stays off by default (slower here). */
#include <cuda.h> /* CUtensorMap and its enums; the encoder comes from cuda_tensor_map_encoder (device.cu) */
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdlib.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/swiglu.cuh"
#include "qvl.h"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int BM = 128, BN = 128, BK = 64; /* rows, output features (gate and up: 2 BN weight rows), k per stage */
constexpr int NS = 3;                      /* ring stages (4 no longer fit beside E) */
constexpr int NT = 384;                    /* two consumer warpgroups, then the producer warpgroup */
constexpr int EW = 3;                      /* epilogue warps: warps 9 .. 8 + EW of the producer warpgroup */
static_assert(NT == 256 + 32 * (1 + EW), "warps 0-7 consumers, 8 the producer, 9 .. 8 + EW epilogue");
constexpr int PREG = 72, CREG = 216;       /* setmaxnreg of the producer warpgroup / the consumers (see the top) */
static_assert(128 * PREG + 256 * CREG <= 384 * 168, "setmaxnreg budget: the CTA's registers at launch");
constexpr int A_BYTES = BM * BK * 2;      /* 16 KB */
constexpr int B_BYTES = 2 * BN * BK * 2;  /* 32 KB */
constexpr int E_LD = BN + 8;              /* words per row of E: 136 (544 bytes, 16-byte aligned; see the top) */
constexpr int OFF_B = NS * A_BYTES;
constexpr int OFF_E = OFF_B + NS * B_BYTES;   /* E [BM][E_LD] uint32: one tile's (g, u) bf16x2 pairs */
constexpr int OFF_BAR = OFF_E + BM * E_LD * 4; /* full[NS], empty[NS], epi_full, epi_empty */
constexpr int SMEM = OFF_BAR + (2 * NS + 2) * 8 + 1024; /* + slack to align the base to 1024 */
static_assert(A_BYTES % 1024 == 0 && B_BYTES % 1024 == 0 && OFF_B % 1024 == 0, "stages 1024-aligned (SW128)");
static_assert((E_LD * 4) % 16 == 0 && OFF_E % 16 == 0 && OFF_BAR % 8 == 0, "E rows 16-byte aligned, barriers 8");
static_assert(SMEM <= 227 * 1024, "shared memory per CTA");

struct params {
  bf16 *y;
  const bf16 *bias; /* NULL: no bias */
  int64_t m;
  int f;
  int kt;      /* k steps: k / BK */
  int nt;      /* n-tiles: f / BN */
  int mp;      /* m-groups of CL m-tiles: ceil(ceil(m / BM) / CL) */
  int gm;      /* m-groups per band of the raster (see the top) */
  int n_tiles; /* mp * nt: work units of a cluster */
};

/* The tensor maps ride in the kernel parameters (__grid_constant__), so a captured launch keeps them. ma: x, box
 * 64 x 128 rows; mb: w, box 64 x (128 / CL) rows; both 128-byte swizzled. */
struct targs {
  CUtensorMap ma, mb;
  params p;
};

/* 1 in the image compiled for sm_90a, 0 in any other (PTX JIT for a newer device, an sm_90 build): init reads it,
 * so the launcher never runs the empty kernel body below. */
__device__ const int g_image_sm90a =
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    1;
#else
    0;
#endif

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)

#include "backend/cuda/hopper.cuh" /* smem_u32, mbarriers, wgmma groups, fence_regs, sw128_desc */

/* ---- mbarriers, clusters --------------------------------------------------------------------------------------- */

/* Arrives on the barrier at the same offset in CTA `rank` of the cluster (this CTA's own with rank = its own).
 * Default semantics (release at CTA scope), as CUTLASS's ClusterBarrier::arrive(cta_id): the only accesses it
 * orders are the arriving warp's wgmma reads of the stage, complete at wgmma.wait_group, against the TMA that
 * refills it. `.release.cluster` here compiled to MEMBAR.ALL.CTA; MEMBAR.ALL.GPU; ERRBAR; CGAERRBAR before each
 * arrival (see the top): the halving of the two-CTA variant. */
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
/* Every thread of both CTAs (release/acquire: barrier inits before, remote arrivals after). */
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}

/* ---- TMA ----------------------------------------------------------------------------------------------------- */

/* Box (k0, row0) of map into shared memory at dst; its bytes complete_tx on bar. */
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap *map, uint32_t bar, int k0, int row0) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
      ::"r"(dst), "l"(map), "r"(k0), "r"(row0), "r"(bar)
      : "memory");
}
/* The same box into dst of every CTA in mask (cluster ranks), complete_tx on the barrier at bar's offset in each. */
__device__ __forceinline__ void tma_load_multicast(uint32_t dst, const CUtensorMap *map, uint32_t bar, int k0, int row0,
                                                   uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, "
      "{%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(map), "r"(k0), "r"(row0), "r"(bar), "h"(mask)
      : "memory");
}

/* ---- wgmma ------------------------------------------------------------------------------------------------------ */

/* d[128] (+)= A[64x16] B[16x256]: m64n256k16, both from shared memory, K-major (trans 0); acc 0 ignores d. */
__device__ __forceinline__ void wgmma_256(float (&d)[128], uint64_t da, uint64_t db, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]),
        "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),
        "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]),
        "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]),
        "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),
        "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),
        "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),
        "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),
        "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(acc));
}

/* ---- schedule ----------------------------------------------------------------------------------------------- */

/* Work unit t of a cluster: m-group (CL m-tiles) and n-tile, in bands of gm m-groups with m-groups fastest within
 * a band (gm = 1: n-tiles fastest); mt is this CTA's m-tile of the group. */
template <int CL>
__device__ __forceinline__ void tile_of(const params &p, int t, int rank, int &mt, int &nt) {
  const int first = t / (p.gm * p.nt) * p.gm, gm = min(p.gm, p.mp - first), local = t - first * p.nt;
  mt = (first + local % gm) * CL + rank;
  nt = local / gm;
}

/* ---- producer (TMA) ------------------------------------------------------------------------------------------- */

/* One thread. Stage it % NS of k step it (counted over all of this CTA's tiles) is reloaded once the consumers of
 * every CTA it feeds released it for k step it - NS. */
template <int CL>
__device__ void producer(const targs &a, uint32_t sb, int rank) {
  const params &p = a.p;
  const uint32_t full = sb + OFF_BAR, empty = full + 8 * NS;
  const int mtiles = (int)((p.m + BM - 1) / BM);
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.ma) : "memory");
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.mb) : "memory");
  int it = 0;
  for (int t = blockIdx.x / CL; t < p.n_tiles; t += gridDim.x / CL) {
    int mt, nt;
    tile_of<CL>(p, t, rank, mt, nt);
    /* the second m-tile of the last pair may lie past m: no x box (the consumers compute on stale x, never stored) */
    const bool has_a = mt < mtiles;
    for (int kb = 0; kb < p.kt; kb++, it++) {
      const int s = it % NS;
      const uint32_t fb = full + 8 * s, a_dst = sb + s * A_BYTES, b_dst = sb + OFF_B + s * B_BYTES;
      if (it >= NS) mbar_wait(empty + 8 * s, ((it / NS) + 1) & 1);
      mbar_expect_tx(fb, (has_a ? A_BYTES : 0) + B_BYTES);
      if (has_a) tma_load(a_dst, &a.ma, fb, kb * BK, mt * BM);
      if (CL == 1) {
        tma_load(b_dst, &a.mb, fb, kb * BK, nt * BN);
        tma_load(b_dst + B_BYTES / 2, &a.mb, fb, kb * BK, p.f + nt * BN);
      } else { /* this CTA's half of the gate rows and of the up rows, into both CTAs */
        const int half = BN / CL;
        const uint32_t off = rank * half * (BK * 2);
        tma_load_multicast(b_dst + off, &a.mb, fb, kb * BK, nt * BN + rank * half, (1u << CL) - 1);
        tma_load_multicast(b_dst + B_BYTES / 2 + off, &a.mb, fb, kb * BK, p.f + nt * BN + rank * half, (1u << CL) - 1);
      }
    }
  }
}

/* ---- consumer ---------------------------------------------------------------------------------------------------- */

__device__ __forceinline__ uint32_t pack_rn(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *(uint32_t *)&v;
}

/* pv = bf16x2(acc_gate + bias_gate, acc_up + bias_up) per output, rounded to nearest even as cuBLASLt rounds its
 * output. bg/bu: the bias pairs of columns 8q + 2t, +1 (q < 16), -0.0 without bias. */
__device__ __forceinline__ void pack_tile(uint32_t (&pv)[64], const float (&acc)[128], const uint32_t (&bg)[16],
                                          const uint32_t (&bu)[16]) {
#pragma unroll
  for (int i = 0; i < 64; i++) {
    const int q = i >> 2;
    const float b0 = __uint_as_float((i & 1) ? bg[q] & 0xffff0000u : bg[q] << 16);
    const float b1 = __uint_as_float((i & 1) ? bu[q] & 0xffff0000u : bu[q] << 16);
    pv[i] = pack_rn(acc[i] + b0, acc[i + 64] + b1);
  }
}

/* Each warp releases stage s to the producer of every CTA of the cluster: lane r arrives on CTA r's barrier (the
 * arrivals of one warp go out side by side, not one after the other from lane 0). */
template <int CL>
__device__ __forceinline__ void release(uint32_t empty, int s) {
  const int lane = threadIdx.x & 31;
  if (CL == 1) {
    if (lane == 0) mbar_arrive(empty + 8 * s);
  } else {
    if (lane < CL) mbar_arrive_cluster(empty + 8 * s, lane);
  }
  __syncwarp();
}

__device__ __forceinline__ void st_shared_v2(uint32_t addr, uint32_t a, uint32_t b) {
  asm volatile("st.shared.v2.b32 [%0], {%1, %2};\n" ::"r"(addr), "r"(a), "r"(b) : "memory");
}
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}

/* Per tile: the k steps, each a stage's wgmmas, a wait until only this step's group is in flight and the previous
 * stage's release; then the bias, the rounding to (g, u) pairs and their hand-over to the epilogue warps through E
 * (waiting first until those warps have read E's previous tile, tile j - 1: parity (j - 1) & 1 of epi_empty). */
template <int CL>
__device__ void consumer(const params &p, uint32_t sb, int wg, int rank) {
  const uint32_t full = sb + OFF_BAR, empty = full + 8 * NS, epi_full = empty + 8 * NS, epi_empty = epi_full + 8;
  const int lane = threadIdx.x & 31, tq = lane & 3, row = 64 * wg + 16 * ((threadIdx.x >> 5) & 3) + (lane >> 2);
  const uint32_t ep = sb + OFF_E + (uint32_t)(row * E_LD + 2 * tq) * 4; /* E[row][2 tq] */
  float acc[128];
  int it = 0, j = 0;
  for (int t = blockIdx.x / CL; t < p.n_tiles; t += gridDim.x / CL, j++) {
    int mt, nt;
    tile_of<CL>(p, t, rank, mt, nt);
    for (int kb = 0; kb < p.kt; kb++, it++) {
      const int s = it % NS;
      mbar_wait(full + 8 * s, (it / NS) & 1);
      __syncwarp();
      const uint64_t da = sw128_desc(sb + s * A_BYTES + wg * (64 * BK * 2)), db = sw128_desc(sb + OFF_B + s * B_BYTES);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++) wgmma_256(acc, da + 2 * kk, db + 2 * kk, kb | kk);
      wgmma_commit();
      if (kb > 0) {
        wgmma_wait<1>();
        release<CL>(empty, (it - 1) % NS);
      }
    }
    uint32_t bg[16], bu[16];
    if (p.bias) {
      const uint32_t *b = (const uint32_t *)(p.bias + (int64_t)nt * BN + 2 * tq);
#pragma unroll
      for (int q = 0; q < 16; q++) bg[q] = __ldg(b + 4 * q), bu[q] = __ldg(b + p.f / 2 + 4 * q);
    } else {
#pragma unroll
      for (int q = 0; q < 16; q++) bg[q] = bu[q] = 0x80008000u; /* -0.0: x + -0.0 == x for every x, -0.0 included */
    }
    wgmma_wait<0>();
    fence_regs(acc);
    release<CL>(empty, (it - 1) % NS);
    uint32_t pv[64];
    pack_tile(pv, acc, bg, bu);
    if (j > 0) mbar_wait(epi_empty, (j - 1) & 1);
    /* pv[4q + 2h + e]: row + 8h, output 8q + 2t + e; one 8-byte store per (q, h) */
#pragma unroll
    for (int q = 0; q < 16; q++) {
#pragma unroll
      for (int h = 0; h < 2; h++)
        st_shared_v2(ep + (uint32_t)(8 * h * E_LD + 8 * q) * 4, pv[4 * q + 2 * h], pv[4 * q + 2 * h + 1]);
    }
    mbar_arrive(epi_full); /* every consumer thread: count 256 (see the top) */
    (void)mt;
  }
}

/* ---- epilogue warps ------------------------------------------------------------------------------------------ */

/* One output: y = bf16(silu_bf16(g) * u) from v = bf16x2 (g low, u high); returned in f32, rounded by the pack. */
__device__ __forceinline__ float swiglu1(uint32_t v) {
  return silu_bf16_f32(__uint_as_float(v << 16)) * __uint_as_float(v & 0xffff0000u);
}

/* Epilogue warp ew (0 .. EW - 1): the same tiles as the consumers, in the same order. Per tile j it waits for E
 * (parity j & 1 of epi_full), takes rows ew, ew + EW, ... below m, each lane 4 consecutive pairs of the row (one
 * 16-byte load: a quarter warp reads 128 contiguous bytes, no bank conflict) into 4 outputs, 8 bytes of y (a warp
 * writes the row's 256 bytes in one coalesced store), and hands E back (epi_empty). */
template <int CL>
__device__ void epilogue(const params &p, uint32_t sb, int ew, int rank) {
  const uint32_t epi_full = sb + OFF_BAR + 16 * NS, epi_empty = epi_full + 8;
  const int lane = threadIdx.x & 31;
  const uint32_t e0 = sb + OFF_E + 16 * lane;
  const int64_t f = p.f;
  int j = 0;
  for (int t = blockIdx.x / CL; t < p.n_tiles; t += gridDim.x / CL, j++) {
    int mt, nt;
    tile_of<CL>(p, t, rank, mt, nt);
    const int64_t r0 = (int64_t)mt * BM, left = p.m - r0;
    const int rows = left < BM ? (int)(left < 0 ? 0 : left) : BM; /* 0 for the second m-tile of a pair past m */
    bf16 *yp = p.y + r0 * f + (int64_t)nt * BN + 4 * lane;
    mbar_wait(epi_full, j & 1);
#pragma unroll 2
    for (int r = ew; r < rows; r += EW) {
      const uint4 v = ld_shared_v4(e0 + (uint32_t)(r * E_LD) * 4);
      uint2 o;
      o.x = pack_rn(swiglu1(v.x), swiglu1(v.y));
      o.y = pack_rn(swiglu1(v.z), swiglu1(v.w));
      *(uint2 *)(yp + r * f) = o;
    }
    mbar_arrive(epi_empty); /* every epilogue thread, after its last load of E for this tile: count 96 */
  }
}

#endif /* sm_90a */

template <int CL>
__global__ void __launch_bounds__(NT, 1) gemm_swiglu_kernel(const __grid_constant__ targs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t sb = (smem_u32(smem) + 1023) & ~1023u;
  const int warp = threadIdx.x >> 5, rank = CL > 1 ? (int)cluster_rank() : 0;
  if (threadIdx.x == 0) {
    for (int i = 0; i < NS; i++) {
      mbar_init(sb + OFF_BAR + 8 * i, 1);             /* full: the producer's expect_tx */
      mbar_init(sb + OFF_BAR + 8 * (NS + i), 8 * CL); /* empty: every consumer warp of the cluster */
    }
    mbar_init(sb + OFF_BAR + 16 * NS, 256);         /* epi_full: every consumer thread of this CTA */
    mbar_init(sb + OFF_BAR + 16 * NS + 8, 32 * EW); /* epi_empty: every epilogue thread of this CTA */
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if (CL > 1) cluster_sync(); /* the peer's barriers exist before any multicast or remote arrival reaches them */
  else __syncthreads();
  if (warp >= 8) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(PREG) : "memory");
    if (warp == 8) {
      if (threadIdx.x == 256) producer<CL>(a, sb, rank);
    } else {
      epilogue<CL>(a.p, sb, warp - 9, rank);
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(CREG) : "memory");
    consumer<CL>(a.p, sb, warp >> 2, rank);
  }
  __syncwarp();
  if (CL > 1) cluster_sync(); /* every thread of both CTAs, epilogue warps included: no CTA leaves while its
                               * peer's consumers may still arrive on its barriers */
#else
  (void)a; /* never launched: init requires the sm_90a image (g_image_sm90a) */
#endif
}

int g_state; /* 0 not initialised, 1 ready, QVL_ERR_UNSUPPORTED: not compute capability 9.0, no sm_90a image or no
              * cuTensorMapEncodeTiled */
int g_n_sm, g_max_clusters, g_cluster = 1;
PFN_cuTensorMapEncodeTiled_v12000 g_encode;

/* A 2-D bf16 map of [rows][k] (row stride k * 2 bytes, a multiple of 16 as k % 64 == 0), box 64 x box_rows,
 * 128-byte swizzle, rows >= `rows` read as zeros. L2 promotion 256 B: every box is a run of whole 128-byte rows. */
int tmap_encode(CUtensorMap *map, const void *base, int64_t rows, int k, int box_rows) {
  const cuuint64_t dim[2] = {(cuuint64_t)k, (cuuint64_t)rows}, stride[1] = {(cuuint64_t)k * 2};
  const cuuint32_t box[2] = {BK, (cuuint32_t)box_rows}, estride[2] = {1, 1};
  return g_encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)base, dim, stride, box, estride,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS
             ? QVL_OK
             : QVL_ERR_UNSUPPORTED;
}

template <int CL>
int set_attrs() {
  return cudaFuncSetAttribute(gemm_swiglu_kernel<CL>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM) ||
         cudaFuncSetAttribute(gemm_swiglu_kernel<CL>, cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared);
}

template <int CL>
int launch(const targs &a, int grid, cudaStream_t s) {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  cfg.gridDim = dim3((unsigned)grid), cfg.blockDim = dim3(NT), cfg.dynamicSmemBytes = SMEM, cfg.stream = s;
  if (CL > 1) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = CL, attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr, cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, gemm_swiglu_kernel<CL>, a) == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

int run(int cluster, uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *bias, int64_t m, int f, int k,
        qvl_stream s) {
  if (!y || !x || !w || m < 0 || f < 1 || k < 1) return QVL_ERR_INVALID_ARG;
  if (g_state == 0) {
    int rc = cuda_linear_swiglu_init();
    if (rc != QVL_OK) return rc;
  }
  if (g_state != 1) return g_state;
  if (f % BN || k % BK || (((uintptr_t)y | (uintptr_t)x | (uintptr_t)w | (uintptr_t)bias) & 15))
    return QVL_ERR_UNSUPPORTED;
  const int CL = cluster ? cluster : g_cluster;
  if ((CL != 1 && CL != 2) || (CL == 2 && g_max_clusters < 1)) return QVL_ERR_UNSUPPORTED;
  if (m == 0) return QVL_OK;
  const int64_t mtiles = (m + BM - 1) / BM, mp = (mtiles + CL - 1) / CL, nt = f / BN, units = mp * nt;
  if (m > 0x7fffffff || 2 * (int64_t)f > 0x7fffffff || units > 0x7fffffff) return QVL_ERR_LIMIT; /* int32 TMA rows */
  targs a;
  int rc = tmap_encode(&a.ma, x, m, k, BM);
  if (rc == QVL_OK) rc = tmap_encode(&a.mb, w, 2 * (int64_t)f, k, BN / CL);
  if (rc != QVL_OK) return rc;
  /* the raster (top): w up to 24 MB stays in L2 with n-tiles fastest; else bands of x rows up to 16 MB */
  const int64_t w_bytes = 2 * (int64_t)f * k * 2, band = ((int64_t)16 << 20) / ((int64_t)CL * BM * k * 2);
  a.p.y = (bf16 *)y;
  a.p.bias = (const bf16 *)bias;
  a.p.m = m;
  a.p.f = f;
  a.p.kt = k / BK;
  a.p.nt = (int)nt;
  a.p.mp = (int)mp;
  a.p.gm = w_bytes <= ((int64_t)24 << 20) ? 1 : (int)(band < 1 ? 1 : band > mp ? mp : band);
  a.p.n_tiles = (int)units;
  const int64_t slots = CL == 1 ? g_n_sm : g_max_clusters, grid = units < slots ? units : slots;
  return CL == 1 ? launch<1>(a, (int)grid, s) : launch<2>(a, (int)(2 * grid), s);
}

} /* namespace */

extern "C" int cuda_linear_swiglu_init(void) {
  int dev = 0, major = 0, minor = 0, n_sm = 0, image = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return QVL_ERR_DEVICE;
  if (major != 9 || minor != 0) return g_state = QVL_ERR_UNSUPPORTED;
  if (cudaMemcpyFromSymbol(&image, g_image_sm90a, sizeof image) != cudaSuccess) return QVL_ERR_DEVICE;
  g_encode = (PFN_cuTensorMapEncodeTiled_v12000)cuda_tensor_map_encoder();
  if (!image || !g_encode) return g_state = QVL_ERR_UNSUPPORTED;
  if (set_attrs<1>() || set_attrs<2>()) {
    (void)cudaGetLastError();
    return g_state = QVL_ERR_UNSUPPORTED;
  }
  g_n_sm = n_sm > 0 ? n_sm : 1;
  /* clusters of two that fit at once (a GPC's odd SM stays out): the persistent grid of CL = 2 */
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 2, attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
  cfg.gridDim = dim3((unsigned)(g_n_sm / 2 * 2)), cfg.blockDim = dim3(NT), cfg.dynamicSmemBytes = SMEM;
  cfg.attrs = attr, cfg.numAttrs = 1;
  if (cudaOccupancyMaxActiveClusters(&g_max_clusters, gemm_swiglu_kernel<2>, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    g_max_clusters = 0;
  }
  const char *e = getenv("QVL_GEMM_SWIGLU_CLUSTER");
  g_cluster = e && e[0] == '2' && g_max_clusters > 0 ? 2 : 1;
  g_state = 1;
  return QVL_OK;
}

extern "C" int cuda_linear_swiglu(uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *bias, int64_t m,
                                  int f, int k, qvl_stream s) {
  return run(0, y, x, w, bias, m, f, k, s);
}

extern "C" int cuda_linear_swiglu_debug(int cluster, uint16_t *y, const uint16_t *x, const uint16_t *w,
                                        const uint16_t *bias, int64_t m, int f, int k, qvl_stream s) {
  return run(cluster, y, x, w, bias, m, f, k, s);
}
