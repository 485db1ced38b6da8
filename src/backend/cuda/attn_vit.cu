/* attn_vit.cu - the vision towers' attention with the rotary fused in: non-causal attention over packed ragged
 * sequences [cu[i], cu[i+1]) of qkv [rows][3][heads][head_dim] (q heads, k heads, v heads per row), out
 * [rows][heads * head_dim]; when cos/sin (f32 [rows][head_dim]) are given, q and k are rotated NeoX style on the
 * way into shared memory with rope.cu's arithmetic (f32 from the bf16 inputs, one rounding to bf16), so the result
 * equals rope_qk followed by the attention, and rope_qk's pass over q and k (read and write, ~0.25 ms a layer for
 * 64 images of 448x448) disappears. bf16 tensor cores (mma.sync m16n8k16, f32 accumulators), online softmax in f32,
 * FA2 structure; the fragment conventions and helpers mirror attn_paged.cu's.
 *
 * A CTA has 4 warps of 16 query rows (64 rows) and walks a group of heads; everything that varies between calls is
 * read on the device from cu, the grid comes from host bounds (rows, n_seq, max_len), so a captured launch replays
 * with other lengths under the same bounds.
 *   short (max_len <= 64: Qwen2.5-VL's windows, full and partial): CTA i owns the sequences that start in rows
 *     [64i, 64i + 64) (found by a cooperative search of cu, one load per thread and round). They span at most 127
 *     rows and are split into at most two packs of whole sequences of <= 64 rows, so a CTA is never idle behind one
 *     partial window: 16-token windows go four to a pack. A pack is one 64x64 tile; keys of another sequence are
 *     masked per row. Its cos/sin rows sit in shared memory (f32) for the whole head group.
 *   long (otherwise): CTA (sequence, 64-row query tile) walks the sequence's keys in 64-key tiles; the keys' cos/sin
 *     rows are read from global memory (L2) at each tile. That costs 640 bytes per key row and tile (d80), more
 *     than K and V, so for long sequences the fused rotary is slow; the op (attention.c) also times rope_qk followed
 *     by this kernel without tables, and cuDNN.
 * Per step (head x key tile) q (at a head's first tile), k and v arrive raw through cp.async into one of two
 * stages while the previous step computes; after the barrier the rows of q and k are rotated in place in shared
 * memory (tasks of 4 pairs (d .. d+3, d+h .. d+h+3), 8-byte accesses: head_dim / 2 need not be a multiple of 8, 72
 * has 36; a thread reads 3 tasks before writing any), another barrier, then each warp: S = q k^T (ldmatrix, padded
 * dims zero), mask, online softmax, O += P V with P kept in registers. A head's last step writes O through the
 * warp's own q rows in shared memory, 16-byte stores.
 *
 * Shared memory: 2 stages x (q, k, v) tiles [64][DP + 8] bf16 (DP = head_dim padded to a multiple of 16; rows of
 * DP + 8 elements put the 8 rows an ldmatrix reads in 8 different bank groups for every DP used, which an XOR
 * swizzle of 16-byte chunks cannot do for 160-byte rows), plus in short mode cos/sin [64][head_dim] f32.
 * d80: 67.5 KB + 40 KB = 108 KB, two CTAs (8 warps) per SM, each with one stage (30 KB) in flight while it
 * rotates and computes the other; d64 87 KB; d128 168 KB (one CTA). Registers: ptxas takes what the bound of 2
 * CTAs of 128 threads allows (~255 at d80, no spills in short mode; the long mode spills a little at d128).
 *
 * Limits. For windows the floor is HBM: q, k, v read once, o written once, cos/sin read once per head group (the
 * host picks the fewest groups that still give 3 waves of CTAs: all 16 heads in one for 64 images of 448x448) -
 * 713 MB for 65,536 tokens x 16 heads x d80, 0.24 ms at the 3.0 TB/s a copy reaches on the H100. Measured there
 * (qvl bench vit --attn-only, 64x448x448): 0.31 ms with the rotary (cuDNN 0.35 + rope_qk 0.26); without it, on
 * the tests' 300 windows x 16 heads, the kernel moved 3.0 TB/s. The rotary's cost is latency, not bytes: with 8
 * warps per SM each CTA has one stage in flight, and the rotation pass and its barrier sit between a stage's arrival
 * and its compute. A three-stage variant with the tables in registers (two loads in flight per CTA) reached 0.25 ms;
 * it was deleted for its ~200 lines (eaad63a; the design is in its parent's version of this comment).
 * For sequences of 1,024 the kernel is about 2x slower than cuDNN even without the rotary (16 rows per warp:
 * ldmatrix bound, see attn_paged.cu), so the op keeps cuDNN there.
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/rope.cuh"
#include "qvl.h"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int NT = 128;      /* threads per CTA: 4 warps of 16 query rows */
constexpr int TR = 64;       /* rows of a query tile, keys of a key tile */
constexpr int SPAN = 2 * TR; /* rows a short-mode CTA may own: < 64 rows of starts + a last sequence of <= 64 */

/* ---- the work of a CTA ------------------------------------------------------------------------------------------ */

struct vit_args {
  bf16 *out;
  const bf16 *qkv;
  const float *cos, *sin; /* NULL: no rotary */
  const int32_t *cu;
  int n_seq, heads, hd;
  int hpc, ng; /* heads per CTA, head groups (blockIdx.x % ng picks the group) */
  int n_qt;    /* long mode: query tiles per sequence */
  float scale_log2;
};

/* Byte offsets in dynamic shared memory: q, k, v stages, then (short mode with rotary) cos, sin [64][hd] f32. */
template <int DP>
struct lay {
  static constexpr int RS = DP + 8;    /* elements per tile row */
  static constexpr int RB = RS * 2;    /* bytes per tile row */
  static constexpr int TILE = TR * RB; /* bytes per [64][RS] tile */
  static constexpr int Q = 0, K = 2 * TILE, V = 4 * TILE, TAB = 6 * TILE;
};

/* The first j in [0, n] with cu[j] >= x, or n + 1 when there is none, for two values at once; every thread of the
 * CTA calls it and gets the result. Each round reads NT entries spread over the range left and keeps the gap that
 * holds the answer (cu is sorted, so the entries below x are a prefix of them): ceil(log_128(n + 1)) rounds. */
__device__ void cta_lower_bound2(const int32_t *cu, int n, const int x[2], int res[2]) {
  int lo[2] = {0, 0}, hi[2] = {n + 1, n + 1}; /* the answer is in [lo, hi]; cu[j] < x below lo */
  /* the same on every thread: all see the same counts */
  while (lo[0] < hi[0] || lo[1] < hi[1]) {
#pragma unroll
    for (int k = 0; k < 2; k++) {
      int step = (hi[k] - lo[k] + NT - 1) / NT, j = lo[k] + (int)threadIdx.x * step; /* step 0: this one is done */
      int c = __syncthreads_count(step > 0 && j < hi[k] && cu[j] < x[k]);
      if (step > 0) {
        int nlo = lo[k] + (c > 0 ? (c - 1) * step + 1 : 0);
        hi[k] = min(hi[k], lo[k] + c * step), lo[k] = nlo;
      }
    }
  }
  res[0] = lo[0], res[1] = lo[1];
}

/* cp.async of rows [r0, r0 + n) (n <= 64) of part (0 q, 1 k, 2 v) of head h into the tile at t; rows >= n and dims
 * >= hd are zero-filled (a zero v row times a zero probability stays zero where stale memory could be a NaN; zero
 * q/k dims add nothing to the scores). */
template <int DP>
__device__ __forceinline__ void load_tile(uint32_t t, const vit_args &a, int r0, int n, int part, int h, int hd) {
  constexpr int CH = DP / 8; /* 16-byte chunks per tile row */
  const int64_t stride = 3 * (int64_t)a.heads * hd;
  const bf16 *src = a.qkv + (int64_t)r0 * stride + (int64_t)(part * a.heads + h) * hd;
#pragma unroll
  for (int k = 0; k < TR * CH / NT; k++) { /* CH is even: a whole number of rounds */
    int i = (int)threadIdx.x + k * NT, r = i / CH, c = i % CH;
    bool ok = r < n && c * 8 < hd;
    cp16(t + r * lay<DP>::RB + c * 16, ok ? src + r * stride + c * 8 : (const bf16 *)a.qkv, ok);
  }
}

/* Issues step st of a pack: keys tile t = st % n_kt of head h0 + st / n_kt into stage st & 1, and at a head's first
 * tile its q rows into q stage (head index) & 1, so a head's q stays put while its key tiles alternate. */
template <int DP>
__device__ __forceinline__ void issue_step(uint32_t base, const vit_args &a, int st, int n_kt, int h0, int q0, int nq,
                                           int k0, int nk, int hd) {
  int hh = st / n_kt, t = st - hh * n_kt, kr = k0 + t * TR, kn = min(TR, nk - t * TR);
  if (t == 0) load_tile<DP>(base + lay<DP>::Q + (hh & 1) * lay<DP>::TILE, a, q0, nq, 0, h0 + hh, hd);
  load_tile<DP>(base + lay<DP>::K + (st & 1) * lay<DP>::TILE, a, kr, kn, 1, h0 + hh, hd);
  load_tile<DP>(base + lay<DP>::V + (st & 1) * lay<DP>::TILE, a, kr, kn, 2, h0 + hh, hd);
}

/* 4 pairs (x[0..3], x[h..h+3]) of a bf16 row in shared memory, read before as lo, hi, rotated with rope.cuh's
 * arithmetic (rope_qk's bits) by t = {cos[d..], cos[d+h..], sin[d..], sin[d+h..]}. */
__device__ __forceinline__ void rot4(bf16 *x, int half, uint2 lo, uint2 hi, const float4 (&t)[4]) {
  rope4(lo, hi, t[0], t[1], t[2], t[3]);
  *(uint2 *)x = lo;
  *(uint2 *)(x + half) = hi;
}

/* Rows [0, n) of the q tile tq and/or the k tile tk (NULL: not this one) rotated in place by the tables c, s (row r
 * at c + r * hd; shared or global memory). A task is one row's 4 pairs (d .. d+3, d+h .. d+h+3); a thread reads
 * BATCH of its tasks before writing any (as far as the compiler knows a store could alias the next task's loads),
 * so their latencies overlap. */
template <int DP, int HD, int BATCH>
__device__ __forceinline__ void rotate(bf16 *tq, bf16 *tk, const float *c, const float *s, int n, int hd) {
  constexpr int ITER = (TR * ((HD ? HD : DP) / 8) + NT - 1) / NT, B = ITER < BATCH ? ITER : BATCH; /* tasks, batch */
  const int half = hd / 2, G = hd / 8; /* G: tasks per row */

#pragma unroll
  for (int k0 = 0; k0 < ITER; k0 += B) {
    float4 t[B][4];
    uint2 x[B][2][2]; /* q, k; lo, hi */
    int off[B];       /* the task's first element in a tile; -1: none */
#pragma unroll
    for (int k = 0; k < B; k++) {
      int i = (int)threadIdx.x + (k0 + k) * NT, r = i / G, d = (i - r * G) * 4;
      off[k] = k0 + k < ITER && r < n ? r * lay<DP>::RS + d : -1;
      if (off[k] < 0) continue;
      const float *cr = c + (int64_t)r * hd + d, *sr = s + (int64_t)r * hd + d;
      t[k][0] = *(const float4 *)cr, t[k][1] = *(const float4 *)(cr + half);
      t[k][2] = *(const float4 *)sr, t[k][3] = *(const float4 *)(sr + half);
      if (tq) x[k][0][0] = *(const uint2 *)(tq + off[k]), x[k][0][1] = *(const uint2 *)(tq + off[k] + half);
      if (tk) x[k][1][0] = *(const uint2 *)(tk + off[k]), x[k][1][1] = *(const uint2 *)(tk + off[k] + half);
    }
#pragma unroll
    for (int k = 0; k < B; k++) {
      if (off[k] < 0) continue;
      if (tq) rot4(tq + off[k], half, x[k][0][0], x[k][0][1], t[k]);
      if (tk) rot4(tk + off[k], half, x[k][1][0], x[k][1][1], t[k]);
    }
  }
}

/* s[8][4] = q k^T for the warp's 16 rows and 64 keys as C fragments (s[nb]: keys 8nb .. 8nb + 7). lq: the lane's
 * address in the q tile, row (lane & 7) + 8 (lane >> 3 & 1) of the warp's block, chunk lane >> 4 (the A
 * fragment's four matrices); lk: key (lane & 7) + 8 (lane >> 4), chunk lane >> 3 & 1 (B fragments of two 8-key
 * blocks). 16 dims are 32 bytes further on. */
template <int DP>
__device__ __forceinline__ void qk(float (&s)[TR / 8][4], uint32_t lq, uint32_t lk) {
#pragma unroll
  for (int nb = 0; nb < TR / 8; nb++) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
#pragma unroll
  for (int c = 0; c < DP / 16; c++) {
    uint32_t a[4];
    ldsm4(a, lq + c * 32);
#pragma unroll
    for (int nb = 0; nb < TR / 8; nb += 2) {
      uint32_t b[4];
      ldsm4(b, lk + c * 32 + nb * 8 * lay<DP>::RB);
      mma(s[nb], a, b[0], b[1]);
      mma(s[nb + 1], a, b[2], b[3]);
    }
  }
}

/* o[DP / 8][4] += p v for the probabilities p in qk's C layout: the C fragments of key blocks 2kk, 2kk + 1, packed to
 * bf16, are the A fragment of key step kk. lv: key (lane & 7) + 8 (lane >> 3 & 1), chunk lane >> 4 of the v tile
 * (ldmatrix.trans: the B fragments of two 8-dim blocks). */
template <int DP>
__device__ __forceinline__ void pv(float (&o)[DP / 8][4], const float (&p)[TR / 8][4], uint32_t lv) {
  uint32_t a[TR / 16][4];
#pragma unroll
  for (int kk = 0; kk < TR / 16; kk++) {
    a[kk][0] = pack(p[2 * kk][0], p[2 * kk][1]);
    a[kk][1] = pack(p[2 * kk][2], p[2 * kk][3]);
    a[kk][2] = pack(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[kk][3] = pack(p[2 * kk + 1][2], p[2 * kk + 1][3]);
  }
#pragma unroll
  for (int d = 0; d < DP / 8; d += 2) {
#pragma unroll
    for (int kk = 0; kk < TR / 16; kk++) {
      uint32_t b[4];
      ldsm4t(b, lv + d * 16 + kk * 16 * lay<DP>::RB);
      mma(o[d], a[kk], b[0], b[1]);
      mma(o[d + 1], a[kk], b[2], b[3]);
    }
  }
}

/* Online softmax of the warp's 16 rows: the raw scores s (masked with -inf) become 2^(s * scale_log2 - m); m (log2
 * domain), the per-lane partial sums l and the accumulators o are rescaled. */
template <int DP>
__device__ __forceinline__ void softmax_step(float (&s)[TR / 8][4], float (&o)[DP / 8][4], float m[2], float l[2],
                                             float scale_log2) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < TR / 8; n++) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    float m_new = fmaxf(m[h], mx * scale_log2), ref = m_new == -INFINITY ? 0.f : m_new; /* nothing seen yet */
    float alpha = exp2_ftz(m[h] - ref), sum = 0.f;
#pragma unroll
    for (int n = 0; n < TR / 8; n++) {
      s[n][2 * h] = exp2_ftz(fmaf(s[n][2 * h], scale_log2, -ref));
      s[n][2 * h + 1] = exp2_ftz(fmaf(s[n][2 * h + 1], scale_log2, -ref));
      sum += s[n][2 * h] + s[n][2 * h + 1];
    }
    l[h] = l[h] * alpha + sum;
    m[h] = m_new;
#pragma unroll
    for (int d = 0; d < DP / 8; d++) o[d][2 * h] *= alpha, o[d][2 * h + 1] *= alpha;
  }
}

/* out rows q0 + (the warp's rows) of head h = o / l, through the warp's own rows of the q tile at sq (its last use
 * of them for this head) so that the global stores are 16 bytes wide. */
template <int DP>
__device__ __forceinline__ void store_o(const vit_args &a, bf16 *sq, const float (&o)[DP / 8][4], const float l[2],
                                        int q0, int nq, int h, int hd) {
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    float sum = l[hf];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    float inv = sum > 0.f ? 1.f / sum : 0.f;
    bf16 *row = sq + (warp * 16 + lane / 4 + 8 * hf) * lay<DP>::RS + 2 * (lane % 4);
#pragma unroll
    for (int d = 0; d < DP / 8; d++) *(uint32_t *)(row + d * 8) = pack(o[d][2 * hf] * inv, o[d][2 * hf + 1] * inv);
  }
  __syncwarp();
  constexpr int CH = DP / 8;
  const int64_t ld = (int64_t)a.heads * hd;
#pragma unroll
  for (int k = 0; k < 16 * CH / 32; k++) {
    int i = lane + k * 32, r = warp * 16 + i / CH, c = i % CH;
    if (r < nq && c * 8 < hd)
      *(uint4 *)(a.out + (int64_t)(q0 + r) * ld + (int64_t)h * hd + c * 8) =
          *(const uint4 *)(sq + r * lay<DP>::RS + c * 8);
  }
}

/* One pack: query rows [q0, q0 + nq) (nq <= 64) against keys [k0, k0 + nk), for heads [h0, h1). Row i of the pack
 * sees the keys [row_lo[i], row_hi[i]) (global rows, shared memory, written before the caller's last barrier).
 * same_rows (short mode): the keys are the query rows (nk = nq, one key tile) and the cos/sin rows of the pack are
 * in shared memory (loaded here); otherwise key tiles are rotated with global table rows. */
template <int DP, int HD>
__device__ __forceinline__ void run_pack(const vit_args &a, int q0, int nq, int k0, int nk, int h0, int h1,
                                         const int *row_lo, const int *row_hi, bool same_rows) {
  typedef lay<DP> L;
  extern __shared__ __align__(128) unsigned char smem[];
  const int hd = HD ? HD : a.hd;
  const uint32_t base = smem_u32(smem);
  float *tc = (float *)(smem + L::TAB), *ts = tc + TR * hd;
  const bool rot = a.cos != nullptr;
  const int n_kt = same_rows ? 1 : (nk + TR - 1) / TR, steps = (h1 - h0) * n_kt; /* short: o dies each step */
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = warp * 16 < nq; /* the warp has query rows */
  /* the keys the lane's two rows see, relative to k0, within [0, nk) */
  int lo[2], hi[2];
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    int r = warp * 16 + lane / 4 + 8 * hf;
    lo[hf] = r < nq ? min(max(row_lo[r] - k0, 0), nk) : 0;
    hi[hf] = r < nq ? min(max(row_hi[r] - k0, 0), nk) : 0;
  }
  const uint32_t lq = base + L::Q + (warp * 16 + (lane & 7) + 8 * (lane >> 3 & 1)) * L::RB + (lane >> 4) * 16;
  const uint32_t lk = base + L::K + ((lane & 7) + 8 * (lane >> 4)) * L::RB + (lane >> 3 & 1) * 16;
  const uint32_t lv = base + L::V + ((lane & 7) + 8 * (lane >> 3 & 1)) * L::RB + (lane >> 4) * 16;

  if (rot && same_rows) /* the pack's cos/sin rows, in the first group with step 0 */
    for (int i = threadIdx.x, c4 = hd / 4; i < nq * c4; i += NT) {
      int r = i / c4, c = i - r * c4;
      cp16(base + L::TAB + (r * hd + c * 4) * 4, a.cos + (int64_t)(q0 + r) * hd + c * 4, true);
      cp16(base + L::TAB + (TR * hd + r * hd + c * 4) * 4, a.sin + (int64_t)(q0 + r) * hd + c * 4, true);
    }
  issue_step<DP>(base, a, 0, n_kt, h0, q0, nq, k0, nk, hd);
  cp_commit();
  float o[DP / 8][4], m[2], l[2];
  for (int st = 0; st < steps; st++) {
    const int hh = st / n_kt, t = st - hh * n_kt, h = h0 + hh;
    /* after the barrier step st is in for every thread and every warp is done with step st - 1, whose stage then
     * takes step st + 1 while this one is computed */
    cp_wait<0>();
    __syncthreads();
    if (st + 1 < steps) {
      issue_step<DP>(base, a, st + 1, n_kt, h0, q0, nq, k0, nk, hd);
      cp_commit();
    }
    bf16 *sq = (bf16 *)(smem + L::Q + (hh & 1) * L::TILE), *sk = (bf16 *)(smem + L::K + (st & 1) * L::TILE);
    if (rot) {
      if (same_rows) {
        rotate<DP, HD, 3>(sq, sk, tc, ts, nq, hd);
      } else { /* one task at a time: the accumulators of the head stay live across the key tiles */
        int kr = k0 + t * TR;
        if (t == 0) rotate<DP, HD, 1>(sq, nullptr, a.cos + (int64_t)q0 * hd, a.sin + (int64_t)q0 * hd, nq, hd);
        rotate<DP, HD, 1>(nullptr, sk, a.cos + (int64_t)kr * hd, a.sin + (int64_t)kr * hd, min(TR, nk - t * TR), hd);
      }
      __syncthreads();
    }
    if (!active) continue;
    if (t == 0) {
      m[0] = m[1] = -INFINITY, l[0] = l[1] = 0.f;
#pragma unroll
      for (int d = 0; d < DP / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    }
    float s[TR / 8][4];
    qk<DP>(s, lq + (hh & 1) * L::TILE, lk + (st & 1) * L::TILE);
    const int kb = t * TR; /* the tile's first key, relative to k0 */
    if (same_rows || kb + TR > nk)
#pragma unroll
      for (int nb = 0; nb < TR / 8; nb++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          int key = kb + nb * 8 + 2 * (lane % 4) + (e & 1);
          if (key < lo[e >> 1] || key >= hi[e >> 1]) s[nb][e] = -INFINITY;
        }
    softmax_step<DP>(s, o, m, l, a.scale_log2);
    pv<DP>(o, s, lv + (st & 1) * L::TILE);
    if (t == n_kt - 1) store_o<DP>(a, sq, o, l, q0, nq, h, hd);
  }
}

/* The group of heads of CTA blockIdx.x: [h0, h1). */
__device__ __forceinline__ void head_group(const vit_args &a, int &h0, int &h1) {
  h0 = (int)(blockIdx.x % a.ng) * a.hpc;
  h1 = min(a.heads, h0 + a.hpc);
}

/* grid: 64-row tiles of the packed rows x head groups (the group fastest, so a tile's cos/sin rows are read from
 * HBM once). Sequence s belongs to tile cu[s] / 64; its rows and keys are its own [cu[s], cu[s+1]). */
template <int DP, int HD>
__global__ void __launch_bounds__(NT, 2) vit_short_kernel(vit_args a) {
  __shared__ int s_lo[SPAN], s_hi[SPAN], s_cut;
  int h0, h1;
  head_group(a, h0, h1);
  const int tile = (int)(blockIdx.x / a.ng), x[2] = {tile * TR, tile * TR + TR};
  int sq[2];
  cta_lower_bound2(a.cu, a.n_seq, x, sq);
  const int first = sq[0], last = min(sq[1], a.n_seq); /* owned: [first, last) */
  if (first >= last) return;
  const int r0 = a.cu[first], r1 = min(a.cu[last], r0 + SPAN); /* SPAN: only if max_len was not a bound */
  if (r0 >= r1) return;                                        /* only empty sequences */

  if (threadIdx.x == 0) s_cut = r0;
  __syncthreads();
  /* each owned sequence fills its rows' key ranges; the first pack ends at the last sequence end <= r0 + 64 */
  for (int s = first + (int)threadIdx.x; s < last; s += NT) {
    int b = a.cu[s], e = a.cu[s + 1];
    for (int r = max(b, r0); r < min(e, r1); r++) s_lo[r - r0] = b, s_hi[r - r0] = e;
    if (e <= r0 + TR) atomicMax(&s_cut, e);
  }
  __syncthreads();
  const int cut = s_cut > r0 ? s_cut : min(r1, r0 + TR); /* no whole sequence fits: max_len was not a bound */
  run_pack<DP, HD>(a, r0, cut - r0, r0, cut - r0, h0, h1, s_lo, s_hi, true);
  if (cut < r1) {
    const int n = min(r1 - cut, TR);
    __syncthreads(); /* every warp is done with the stages and the tables */
    run_pack<DP, HD>(a, cut, n, cut, n, h0, h1, s_lo + (cut - r0), s_hi + (cut - r0), true);
  }
}

/* grid: (sequence, 64-row query tile) x head groups, the group fastest. */
template <int DP, int HD>
__global__ void __launch_bounds__(NT, 2) vit_long_kernel(vit_args a) {
  __shared__ int s_lo[TR], s_hi[TR];
  int h0, h1;
  head_group(a, h0, h1);
  const int unit = (int)(blockIdx.x / a.ng), s = unit / a.n_qt, j = unit - s * a.n_qt;
  const int k0 = a.cu[s], nk = a.cu[s + 1] - k0, q0 = k0 + j * TR, nq = min(TR, nk - j * TR);
  if (nq <= 0) return;
  for (int i = threadIdx.x; i < TR; i += NT) s_lo[i] = k0, s_hi[i] = k0 + nk;
  __syncthreads();
  run_pack<DP, HD>(a, q0, nq, k0, nk, h0, h1, s_lo, s_hi, false);
}

template <int DP>
constexpr size_t smem_bytes(bool tables) {
  return (size_t)lay<DP>::TAB + (tables ? 2 * (size_t)TR * DP * sizeof(float) : 0);
}

template <int DP, int HD>
int set_attrs() {
  int n = (int)smem_bytes<DP>(true);
  return cudaFuncSetAttribute(vit_short_kernel<DP, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, n) ||
         cudaFuncSetAttribute(vit_long_kernel<DP, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, n) ||
         cudaFuncSetAttribute(vit_short_kernel<DP, HD>, cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared) ||
         cudaFuncSetAttribute(vit_long_kernel<DP, HD>, cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared);
}

template <int DP, int HD>
int launch(const vit_args &a, bool short_mode, unsigned ctas, qvl_stream s) {
  size_t shm = smem_bytes<DP>(short_mode && a.cos);
  if (short_mode)
    vit_short_kernel<DP, HD><<<ctas, NT, shm, s>>>(a);
  else
    vit_long_kernel<DP, HD><<<ctas, NT, shm, s>>>(a);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}


}  // namespace

/* Compile-time paths: 80, 72 (padded to 80), 64 and 128 exactly; other multiples of 8 by the padded size. */
extern "C" int cuda_attn_vit_init(void) {
  int bad = set_attrs<80, 80>() || set_attrs<80, 72>() || set_attrs<64, 64>() || set_attrs<128, 128>() ||
            set_attrs<16, 0>() || set_attrs<32, 0>() || set_attrs<64, 0>() || set_attrs<80, 0>() || set_attrs<128, 0>();
  return bad ? QVL_ERR_DEVICE : QVL_OK;
}

/* The arguments and grid of a launch over `units` row tiles: head groups as few as give 3 waves of two CTAs per SM
 * (each group reads its tiles' cos/sin rows again and pays the start of a CTA: the search, the tables, a first step
 * with nothing to overlap). */
static int plan(vit_args *a, unsigned *ctas, uint16_t *out, const uint16_t *qkv, const float *cos, const float *sin,
                const int32_t *cu, int n_seq, int max_len, int64_t units, int heads, int head_dim, float scale) {
  int dev = 0, n_sm = 132;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev))
    return QVL_ERR_DEVICE;
  int ng = 1;
  while (ng < heads && units * ng < 6LL * n_sm) ng++;
  int hpc = (heads + ng - 1) / ng;
  ng = (heads + hpc - 1) / hpc;
  if (units * ng > 2147483647LL) return QVL_ERR_LIMIT;
  a->out = (bf16 *)out, a->qkv = (const bf16 *)qkv, a->cos = cos, a->sin = sin, a->cu = cu;
  a->n_seq = n_seq, a->heads = heads, a->hd = head_dim, a->hpc = hpc, a->ng = ng, a->n_qt = (max_len + TR - 1) / TR;
  a->scale_log2 = scale * 1.4426950408889634f;
  *ctas = (unsigned)(units * ng);
  return QVL_OK;
}

extern "C" int cuda_attn_vit(uint16_t *out, const uint16_t *qkv, const float *cos, const float *sin, const int32_t *cu,
                             int n_seq, int max_len, int64_t rows, int heads, int head_dim, float scale, qvl_stream s) {
  if (head_dim < 8 || head_dim > 128 || head_dim % 8 || heads < 1 || !cos != !sin || (uintptr_t)out % 16 ||
      (uintptr_t)qkv % 16 || (uintptr_t)cos % 16 || (uintptr_t)sin % 16)
    return QVL_ERR_UNSUPPORTED;
  if (n_seq < 1 || rows < 1 || max_len < 1) return QVL_OK;
  if (rows > 2147483647LL - 2 * TR || n_seq > 2147483647 - 1) return QVL_ERR_LIMIT;
  const bool short_mode = max_len <= TR;
  int64_t units = short_mode ? (rows + TR - 1) / TR : (int64_t)n_seq * ((max_len + TR - 1) / TR);
  vit_args a;
  unsigned ctas;
  int rc = plan(&a, &ctas, out, qkv, cos, sin, cu, n_seq, max_len, units, heads, head_dim, scale);
  if (rc) return rc;
  switch (head_dim) {
    case 80:
      return launch<80, 80>(a, short_mode, ctas, s);
    case 72:
      return launch<80, 72>(a, short_mode, ctas, s);
    case 64:
      return launch<64, 64>(a, short_mode, ctas, s);
    case 128:
      return launch<128, 128>(a, short_mode, ctas, s);
    default:
      break;
  }
  if (head_dim <= 16) return launch<16, 0>(a, short_mode, ctas, s);
  if (head_dim <= 32) return launch<32, 0>(a, short_mode, ctas, s);
  if (head_dim <= 64) return launch<64, 0>(a, short_mode, ctas, s);
  if (head_dim <= 80) return launch<80, 0>(a, short_mode, ctas, s);
  return launch<128, 0>(a, short_mode, ctas, s);
}

