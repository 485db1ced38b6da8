/* attn_paged.cu - attention_paged: causal GQA of a ragged batch of sequences over the paged KV cache (backend.h
 * has the contract), bf16 tensor cores (mma.sync m16n8k16, f32 accumulators), online softmax in f32.
 *
 * Everything that varies between steps is read on the device (cu_q, kv_len, table); the grid comes from the host
 * bounds (n_seq, max_q, max_kv), so a captured step replays with other lengths. Blocks past a sequence's rows or
 * keys exit at once.
 *
 *   prefill (max_q >= PREFILL_MIN_Q): FA2 structure. A CTA of 4 warps owns 128 rows (32 per warp, two 16-row mma
 *     blocks) of (query, q head) pairs of one kv head's group, so each K/V tile in shared memory serves every head
 *     of the group and each K/V fragment a warp loads feeds 4 mma (16 rows per warp would make ldmatrix, not the
 *     tensor cores, the limit). K/V tiles of 64 keys are gathered through the block table (cp.async, two stages,
 *     the next tile in flight while the current one is computed; XOR-swizzled rows for conflict-free ldmatrix). Q
 *     stays in shared memory (in registers it would not fit beside the 32 x 128 accumulators); scores become the
 *     PV A fragments in registers. Tiles above a warp's diagonal are skipped, only the ones crossing it masked.
 *     96 KB of shared memory and <= 255 registers: two CTAs per SM. CTAs count their row tiles from each
 *     sequence's end and the last rows (the most keys) of every sequence are launched first, so the tail is short.
 *   decode (max_q < PREFILL_MIN_Q, and the one-token sequences of a batch that also has prefill chunks):
 *     flash-decoding for GQA. A CTA owns (sequence, kv head, split of the keys) and 16 "rows" = the group's q
 *     heads x the sequence's queries, so each K/V tile is read once for the whole group; its 4 warps take 16 keys
 *     of each 64-key tile, then merge through shared memory. With several splits each CTA writes (m, l,
 *     unnormalised o) partials and a combine kernel reduces them.
 *
 * Head dims up to 128 that are multiples of 8, padded in shared memory to 64 or 128 (the tiny test models use 16;
 * every published Qwen LM uses 128). scale > 0 (1 / sqrt(head_dim)): it is applied after the row max.
 *
 * Split partials live in a workspace the backend allocates once at creation (never during a graph capture): the
 * launcher lowers the number of splits until n_seq x (max_q, or 1 with prefill chunks) x heads x splits x
 * (head_dim + 2) floats fit; one split needs no workspace at all. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "qvl.h"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int KT = 64;  /* keys per tile */
constexpr int NT = 128; /* threads per CTA: 4 warps */
constexpr int QT = 128; /* prefill rows per CTA: 32 per warp */
constexpr int DR = 16;  /* decode rows per CTA (one mma M) */
constexpr int MAX_SPLITS = 128;
constexpr int PREFILL_MIN_Q = 16;

/* Shared byte address of 16-byte chunk ch of row `row` of a [rows][D] bf16 tile at t (128-byte aligned) whose chunks
 * are XOR-swizzled by row % 8, so the 8 rows one ldmatrix matrix reads sit in 8 different bank groups. Only address
 * bits 4-6 carry the swizzle ((ch ^ row) % 8), which gives two cheap moves from an address a = sw(t, row, ch):
 *   sw_x(a, x) = sw(t, row, ch ^ x) for ch < 8 (another chunk of the row: one XOR plus an immediate), and
 *   (a ^ i << 4) + i * 2D = sw(t, row + i, ch) where row % 8 and i < 8 have no bit in common (a row below);
 * rows 8k further on are a plain + 8k * 2D. */
template <int D>
__device__ __forceinline__ uint32_t sw(uint32_t t, int row, int ch) {
  return t + row * 2 * D + ((ch ^ (row & 7)) << 4);
}
__device__ __forceinline__ uint32_t sw_x(uint32_t a, int x) {
  return (a ^ ((x & 7) << 4)) + ((x >> 3) << 7);
}

/* K and V rows of keys [k0, k0 + KT) of kv head g into the swizzled tiles at shared addresses sk, sv; keys >= k_end
 * and dims >= hd are zeros (a zero V row times a zero probability stays zero, where stale memory could hold a NaN).
 * A thread moves one 16-byte chunk c of RPT consecutive keys, so it divides by the block size and reads the block
 * table once per tile (again only when its keys cross into the next block). */
template <int D>
__device__ __forceinline__ void load_kv(uint32_t sk, uint32_t sv, const bf16 *kc, const bf16 *vc, const int32_t *tab,
                                        int bs, int k0, int k_end, int kv_heads, int g, int hd) {
  constexpr int CH = D / 8, RPT = KT * CH / NT; /* 8 keys of 16 chunks, or 4 of 8 */
  int c = threadIdx.x % CH, r0 = threadIdx.x / CH * RPT, t = k0 + r0, goff = g * hd + c * 8;
  int64_t stride = (int64_t)kv_heads * hd; /* elements per slot */
  uint32_t dk = sw<D>(sk, r0, c), dv = sw<D>(sv, r0, c);
  int blk = t / bs, off = t - blk * bs;
  int64_t base = t < k_end ? (int64_t)tab[blk] * bs : 0; /* the first slot of block blk */
#pragma unroll
  for (int i = 0; i < RPT; i++) {
    bool ok = t + i < k_end && c * 8 < hd;
    int64_t e = ok ? (base + off) * stride + goff : 0;
    cp16((dk ^ (i << 4)) + i * 2 * D, kc + e, ok); /* r0 % RPT == 0: row r0 + i, see sw */
    cp16((dv ^ (i << 4)) + i * 2 * D, vc + e, ok);
    if (++off == bs) {
      off = 0, blk++;
      if (t + i + 1 < k_end) base = (int64_t)tab[blk] * bs;
    }
  }
}

/* Online softmax of one 16-row block: the raw scores sc[NB][4] (C fragments: rows lane/4 and lane/4 + 8, masked
 * with -inf) become probabilities 2^(sc * scale_log2 - m); m (log2 domain), l, and the accumulators o[ND][4] are
 * rescaled. */
template <int NB, int ND>
__device__ __forceinline__ void softmax_step(float (&sc)[NB][4], float (&o)[ND][4], float m[2], float l[2],
                                             float scale_log2) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NB; n++) mx = fmaxf(mx, fmaxf(sc[n][2 * h], sc[n][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    float m_new = fmaxf(m[h], mx * scale_log2), ref = m_new == -INFINITY ? 0.f : m_new; /* nothing seen yet */
    float alpha = exp2_ftz(m[h] - ref), sum = 0.f;
#pragma unroll
    for (int n = 0; n < NB; n++) {
      sc[n][2 * h] = exp2_ftz(fmaf(sc[n][2 * h], scale_log2, -ref));
      sc[n][2 * h + 1] = exp2_ftz(fmaf(sc[n][2 * h + 1], scale_log2, -ref));
      sum += sc[n][2 * h] + sc[n][2 * h + 1];
    }
    l[h] = l[h] * alpha + sum; /* per-lane partial sum; the 4 lanes of a row are added at the end */
    m[h] = m_new;
#pragma unroll
    for (int d = 0; d < ND; d++) o[d][2 * h] *= alpha, o[d][2 * h + 1] *= alpha;
  }
}

/* sc[M][NK / 8][4] = q k^T for M 16-row blocks of queries and NK keys, as C fragments: sc[mb][nb] holds keys
 * nb * 8 .. nb * 8 + 7. lq: the lane's address in the swizzled Q tile, sw(tile, row (lane & 7) + 8 * (lane >> 3 & 1)
 * of block 0, chunk lane >> 4) (the A fragment's four matrices); block mb is 16 rows further on. lk: sw(tile, key
 * (lane & 7) + 8 * (lane >> 4), chunk lane >> 3 & 1) (the B fragments of two 8-key blocks). */
template <int D, int M, int NK>
__device__ __forceinline__ void qk(float (&sc)[M][NK / 8][4], uint32_t lq, uint32_t lk) {
#pragma unroll
  for (int mb = 0; mb < M; mb++)
#pragma unroll
    for (int nb = 0; nb < NK / 8; nb++) sc[mb][nb][0] = sc[mb][nb][1] = sc[mb][nb][2] = sc[mb][nb][3] = 0.f;
#pragma unroll
  for (int c = 0; c < D / 16; c++) { /* 16 dims: chunks 2c, 2c + 1 */
    uint32_t a[M][4];
#pragma unroll
    for (int mb = 0; mb < M; mb++) ldsm4(a[mb], sw_x(lq, 2 * c) + mb * 16 * 2 * D);
#pragma unroll
    for (int nb = 0; nb < NK / 8; nb += 2) {
      uint32_t b[4];
      ldsm4(b, sw_x(lk, 2 * c) + nb * 8 * 2 * D);
#pragma unroll
      for (int mb = 0; mb < M; mb++) mma(sc[mb][nb], a[mb], b[0], b[1]), mma(sc[mb][nb + 1], a[mb], b[2], b[3]);
    }
  }
}

/* o[M][D / 8][4] += p v for the probabilities p in qk's C layout over NK keys: the C fragments of key blocks 2kk and
 * 2kk + 1, packed to bf16, are the A fragment of key step kk, with no trip through shared memory. lv: sw(tile, key
 * (lane & 7) + 8 * (lane >> 3 & 1), chunk lane >> 4) in the swizzled V tile (transposed: the B fragments of two
 * 8-dim blocks). Dims outer, keys inner: so ptxas fits the 32 x 128 accumulators of a prefill warp without spilling
 * in the hot loop. */
template <int D, int M, int NK>
__device__ __forceinline__ void pv(float (&o)[M][D / 8][4], const float (&p)[M][NK / 8][4], uint32_t lv) {
  uint32_t a[NK / 16][M][4];
#pragma unroll
  for (int kk = 0; kk < NK / 16; kk++)
#pragma unroll
    for (int mb = 0; mb < M; mb++) {
      a[kk][mb][0] = pack(p[mb][2 * kk][0], p[mb][2 * kk][1]);
      a[kk][mb][1] = pack(p[mb][2 * kk][2], p[mb][2 * kk][3]);
      a[kk][mb][2] = pack(p[mb][2 * kk + 1][0], p[mb][2 * kk + 1][1]);
      a[kk][mb][3] = pack(p[mb][2 * kk + 1][2], p[mb][2 * kk + 1][3]);
    }
#pragma unroll
  for (int d = 0; d < D / 8; d += 2) { /* dims 8d .. 8d + 15 */
#pragma unroll
    for (int kk = 0; kk < NK / 16; kk++) {
      uint32_t b[4];
      ldsm4t(b, sw_x(lv, d) + kk * 16 * 2 * D);
#pragma unroll
      for (int mb = 0; mb < M; mb++) mma(o[mb][d], a[kk][mb], b[0], b[1]), mma(o[mb][d + 1], a[kk][mb], b[2], b[3]);
    }
  }
}

/* ---- prefill ------------------------------------------------------------------------------------------------- */

/* grid (row tiles x n_seq x kv_heads), the row tile slowest; sequences of at most skip queries are left out. Row t
 * of a sequence's n x r (query, group head) pairs is query t / r at head g*r + t % r, so a CTA's 128 rows span the
 * group's heads and each K/V tile is read once for all of them. Row tile i of a sequence covers rows n*r - 128(i+1)
 * .. n*r - 128i - 1 (those below 0 are padding: zero queries, never written), so tile 0, the one with the most
 * keys, of every sequence and head is launched first. */
template <int D>
__global__ void __launch_bounds__(NT, 2)
    attn_prefill_kernel(bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc, const int32_t *cu_q,
                        const int32_t *kv_len, const int32_t *table, int n_seq, int max_blocks, int bs, int heads,
                        int kv_heads, int hd, int skip, float scale_log2) {
  constexpr int TB = KT * D * 2; /* bytes of one K or V stage */
  extern __shared__ __align__(128) unsigned char smem[];
  uint32_t sq = smem_u32(smem), sk = sq + QT * D * 2, sv = sk + 2 * TB; /* sq [QT][D]; sk, sv [2][KT][D] */
  int per = n_seq * kv_heads, s = blockIdx.x % per / kv_heads, g = blockIdx.x % kv_heads, r = heads / kv_heads;
  int row0 = cu_q[s], n = cu_q[s + 1] - row0;
  /* the CTA's rows tb .. t_hi - 1; sequences of <= skip queries are the decode kernel's */
  int t_hi = n * r - (int)(blockIdx.x / per) * QT, tb = t_hi - QT;
  if (t_hi <= 0 || n <= skip) return;
  const int32_t *tab = table + (int64_t)s * max_blocks;
  /* query 0 sits at position first; the CTA's last row sees keys 0 .. k_end - 1 */
  int first = kv_len[s] - n, k_end = first + (t_hi - 1) / r + 1, n_tiles = (k_end + KT - 1) / KT;
  for (int i = threadIdx.x; i < QT * (D / 8); i += NT) {
    int rho = i / (D / 8), c = i % (D / 8), t = tb + rho;
    bool ok = t >= 0 && c * 8 < hd;
    cp16(sw<D>(sq, rho, c), q + (ok ? ((int64_t)(row0 + t / r) * heads + g * r + t % r) * hd + c * 8 : 0), ok);
  }
  load_kv<D>(sk, sv, kc, vc, tab, bs, 0, k_end, kv_heads, g, hd);
  cp_commit();
  /* the warp's rows wt .. wt + 31 sit at positions least .. most */
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wt = tb + warp * 32;
  int least = first + max(wt, 0) / r, most = first + (wt + 31) / r;
  uint32_t lq = sw<D>(sq, warp * 32 + (lane & 7) + 8 * (lane >> 3 & 1), lane >> 4);
  uint32_t lk = sw<D>(sk, (lane & 7) + 8 * (lane >> 4), lane >> 3 & 1);
  uint32_t lv = sw<D>(sv, (lane & 7) + 8 * (lane >> 3 & 1), lane >> 4);
  float o[2][D / 8][4], m[2][2], l[2][2];
#pragma unroll
  for (int mb = 0; mb < 2; mb++) {
    m[mb][0] = m[mb][1] = -INFINITY, l[mb][0] = l[mb][1] = 0.f;
#pragma unroll
    for (int d = 0; d < D / 8; d++) o[mb][d][0] = o[mb][d][1] = o[mb][d][2] = o[mb][d][3] = 0.f;
  }
  for (int j = 0; j < n_tiles; j++) {
    /* after the barrier tile j is in for every thread and every warp is done with tile j - 1, whose stage then
     * takes tile j + 1 while tile j is computed */
    cp_wait<0>();
    __syncthreads();
    if (j + 1 < n_tiles) {
      int st = (j + 1) & 1;
      load_kv<D>(sk + st * TB, sv + st * TB, kc, vc, tab, bs, (j + 1) * KT, k_end, kv_heads, g, hd);
      cp_commit();
    }
    int k0 = j * KT;
    if (wt + 31 < 0 || k0 > most) continue; /* padding only, or every key above the warp's diagonal */
    float sc[2][KT / 8][4];
    qk<D, 2, KT>(sc, lq, lk + (j & 1) * TB);
    if (k0 + KT - 1 > least) /* the tile crosses the warp's diagonal: mask the keys past each row's position */
#pragma unroll
      for (int mb = 0; mb < 2; mb++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int pos = first + max(wt + 16 * mb + 8 * h + lane / 4, 0) / r; /* padding rows as row 0 */
#pragma unroll
          for (int nb = 0; nb < KT / 8; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++)
              if (k0 + nb * 8 + 2 * (lane % 4) + e > pos) sc[mb][nb][2 * h + e] = -INFINITY;
        }
#pragma unroll
    for (int mb = 0; mb < 2; mb++) softmax_step<KT / 8, D / 8>(sc[mb], o[mb], m[mb], l[mb], scale_log2);
    pv<D, 2, KT>(o, sc, lv + (j & 1) * TB);
  }
#pragma unroll
  for (int mb = 0; mb < 2; mb++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float sum = l[mb][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      int t = wt + 16 * mb + 8 * h + lane / 4;
      if (t < 0) continue;
      float inv = sum > 0.f ? 1.f / sum : 0.f;
      bf16 *dst = out + ((int64_t)(row0 + t / r) * heads + g * r + t % r) * hd + 2 * (lane % 4);
#pragma unroll
      for (int d = 0; d < D / 8; d++)
        if (d * 8 < hd) *(uint32_t *)(dst + d * 8) = pack(o[mb][d][2 * h] * inv, o[mb][d][2 * h + 1] * inv);
    }
}

/* ---- decode -------------------------------------------------------------------------------------------------- */

/* grid (row chunks x splits, kv_heads, n_seq), for the sequences of at most mq queries (the others are the
 * prefill kernel's). Row rho of chunk c is query i = (16c + rho) / r of the sequence at head g*r + (16c + rho) % r.
 * Split x of n_split takes an equal share (whole tiles) of the keys the chunk sees, so a replay with lengths far
 * below max_kv still spreads over every split. With one split o goes to out; otherwise partial (o unnormalised, m
 * in the log2 domain, l) to ws_o [sequence][mq][head][split][hd], ws_ml [..][2]. */
template <int D>
__global__ void __launch_bounds__(NT)
    attn_decode_kernel(bf16 *out, float *ws_o, float *ws_ml, const bf16 *q, const bf16 *kc, const bf16 *vc,
                       const int32_t *cu_q, const int32_t *kv_len, const int32_t *table, int max_blocks, int bs,
                       int heads, int kv_heads, int hd, int mq, int n_split, float scale_log2) {
  constexpr int TB = KT * D * 2; /* bytes of one K or V stage */
  extern __shared__ __align__(128) unsigned char smem[];
  uint32_t sq = smem_u32(smem), sk = sq + DR * D * 2, sv = sk + 2 * TB; /* sq [DR][D]; sk, sv [2][KT][D] */
  int s = blockIdx.z, g = blockIdx.y, r = heads / kv_heads;
  int chunk = blockIdx.x / n_split, x = blockIdx.x % n_split;
  int row0 = cu_q[s], n = cu_q[s + 1] - row0, L = kv_len[s];
  int rho0 = chunk * DR, n_rho = min(DR, n * r - rho0);
  if (n_rho <= 0 || n > mq) return;
  const int32_t *tab = table + (int64_t)s * max_blocks;
  int span = L - n + (rho0 + n_rho - 1) / r + 1; /* keys the chunk's last query sees */
  int per = ((span + n_split - 1) / n_split + KT - 1) / KT * KT;
  int k_begin = x * per, k_end = min(span, k_begin + per);
  for (int i = threadIdx.x; i < DR * (D / 8); i += NT) {
    int rho = i / (D / 8), c = i % (D / 8), qi = (rho0 + rho) / r, hq = g * r + (rho0 + rho) % r;
    bool ok = rho < n_rho && c * 8 < hd;
    cp16(sw<D>(sq, rho, c), q + (ok ? ((int64_t)(row0 + qi) * heads + hq) * hd + c * 8 : 0), ok);
  }
  if (k_begin < k_end) load_kv<D>(sk, sv, kc, vc, tab, bs, k_begin, k_end, kv_heads, g, hd);
  cp_commit();
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int pos[2];
  for (int hh = 0; hh < 2; hh++) pos[hh] = L - n + (rho0 + lane / 4 + 8 * hh) / r;
  uint32_t lq = sw<D>(sq, (lane & 7) + 8 * (lane >> 3 & 1), lane >> 4); /* qk's and pv's lane addresses */
  uint32_t lk = sw<D>(sk, warp * 16 + (lane & 7) + 8 * (lane >> 4), lane >> 3 & 1);
  uint32_t lv = sw<D>(sv, warp * 16 + (lane & 7) + 8 * (lane >> 3 & 1), lane >> 4);
  float o[1][D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int d = 0; d < D / 8; d++) o[0][d][0] = o[0][d][1] = o[0][d][2] = o[0][d][3] = 0.f;
  int n_tiles = k_begin < k_end ? (k_end - k_begin + KT - 1) / KT : 0;
  cp_wait<0>();
  __syncthreads();
  for (int j = 0; j < n_tiles; j++) {
    if (j + 1 < n_tiles) {
      int st = (j + 1) & 1;
      load_kv<D>(sk + st * TB, sv + st * TB, kc, vc, tab, bs, k_begin + (j + 1) * KT, k_end, kv_heads, g, hd);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    float sc[1][2][4];
    qk<D, 1, 16>(sc, lq, lk + (j & 1) * TB);
    int k0 = k_begin + j * KT + warp * 16;
#pragma unroll
    for (int nb = 0; nb < 2; nb++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int key = k0 + nb * 8 + 2 * (lane % 4) + (e & 1);
        if (key >= k_end || key > pos[e >> 1]) sc[0][nb][e] = -INFINITY;
      }
    softmax_step<2, D / 8>(sc[0], o[0], m, l, scale_log2);
    pv<D, 1, 16>(o, sc, lv + (j & 1) * TB);
    __syncthreads();
  }
  /* merge the 4 warps: per row the largest m, then the rescaled sums; the K/V stages hold the f32 o's */
  float *so = (float *)(smem + DR * D * 2), *sml = so + 4 * DR * D; /* so [warp][row][D], sml [warp][row][2] */
#pragma unroll
  for (int hh = 0; hh < 2; hh++) {
    float sum = l[hh];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    int rho = lane / 4 + 8 * hh;
    if (lane % 4 == 0) sml[(warp * DR + rho) * 2] = m[hh], sml[(warp * DR + rho) * 2 + 1] = sum;
#pragma unroll
    for (int d = 0; d < D / 8; d++) {
      float *p = so + (warp * DR + rho) * D + d * 8 + 2 * (lane % 4);
      p[0] = o[0][d][2 * hh], p[1] = o[0][d][2 * hh + 1];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n_rho * hd; i += NT) {
    int rho = i / hd, d = i % hd;
    float mm = -INFINITY;
    for (int w = 0; w < 4; w++) mm = fmaxf(mm, sml[(w * DR + rho) * 2]);
    float ref = mm == -INFINITY ? 0.f : mm, ls = 0.f, os = 0.f;
    for (int w = 0; w < 4; w++) {
      float f = exp2f(sml[(w * DR + rho) * 2] - ref);
      ls += f * sml[(w * DR + rho) * 2 + 1];
      os += f * so[(w * DR + rho) * D + d];
    }
    int qi = (rho0 + rho) / r, hq = g * r + (rho0 + rho) % r;
    if (n_split == 1) {
      out[((int64_t)(row0 + qi) * heads + hq) * hd + d] = __float2bfloat16(ls > 0.f ? os / ls : 0.f);
    } else {
      int64_t at = ((int64_t)s * mq + qi) * heads + hq;
      ws_o[(at * n_split + x) * hd + d] = os;
      if (d == 0) ws_ml[(at * n_split + x) * 2] = mm, ws_ml[(at * n_split + x) * 2 + 1] = ls;
    }
  }
}

/* One CTA per (sequence, query < mq, head) of the decode kernel's partials: out = sum_x 2^(m_x - M) o_x /
 * sum_x 2^(m_x - M) l_x. The threads form groups of head_dim / 4 (4 dims each, float4 loads), the groups take every
 * splits-th partial, then add up in shared memory. */
__global__ void __launch_bounds__(NT) attn_combine_kernel(bf16 *out, const float *ws_o, const float *ws_ml,
                                                          const int32_t *cu_q, int heads, int hd, int mq, int n_split) {
  __shared__ float wts[MAX_SPLITS], red[NT * 4], stat[2][NT / 32];
  int64_t at = blockIdx.x;
  int s = (int)(at / ((int64_t)mq * heads)), i = (int)(at / heads % mq), h = (int)(at % heads);
  int row0 = cu_q[s], n = cu_q[s + 1] - row0;
  if (n > mq || i >= n) return;
  const float *ml = ws_ml + at * n_split * 2;
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float mm = -INFINITY;
  for (int x = threadIdx.x; x < n_split; x += NT) mm = fmaxf(mm, ml[2 * x]);
  for (int o = 16; o; o >>= 1) mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, o));
  if (lane == 0) stat[0][warp] = mm;
  __syncthreads();
  for (int w = 0; w < NT / 32; w++) mm = fmaxf(mm, stat[0][w]);
  float ref = mm == -INFINITY ? 0.f : mm, ls = 0.f;
  for (int x = threadIdx.x; x < n_split; x += NT) {
    float f = exp2f(ml[2 * x] - ref);
    wts[x] = f;
    ls += f * ml[2 * x + 1];
  }
  for (int o = 16; o; o >>= 1) ls += __shfl_xor_sync(0xffffffffu, ls, o);
  if (lane == 0) stat[1][warp] = ls;
  __syncthreads();
  ls = 0.f;
  for (int w = 0; w < NT / 32; w++) ls += stat[1][w];
  int per = hd / 4, groups = NT / per, grp = threadIdx.x / per, d = 4 * (threadIdx.x % per);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (grp < groups)
    for (int x = grp; x < n_split; x += groups) {
      float4 v = *(const float4 *)(ws_o + (at * n_split + x) * hd + d);
      float f = wts[x];
      acc.x += f * v.x, acc.y += f * v.y, acc.z += f * v.z, acc.w += f * v.w;
    }
  if (grp < groups) *(float4 *)(red + grp * hd + d) = acc;
  __syncthreads();
  float inv = ls > 0.f ? 1.f / ls : 0.f;
  for (int e = threadIdx.x; e < hd; e += NT) {
    float sum = 0.f;
    for (int g = 0; g < groups; g++) sum += red[g * hd + e];
    out[((int64_t)(row0 + i) * heads + h) * hd + e] = __float2bfloat16(sum * inv);
  }
}

size_t prefill_smem(int d) {
  return (size_t)(QT + 4 * KT) * d * sizeof(bf16);
}
size_t decode_smem(int d) {
  return (size_t)(DR + 4 * KT) * d * sizeof(bf16);
}

template <int D>
int launch(bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc, const int32_t *cu_q, const int32_t *kv_len,
           const int32_t *table, int n_seq, int max_blocks, int bs, int max_q, int max_kv, int heads, int kv_heads,
           int hd, float scale, float *ws, size_t ws_bytes, int n_sm, qvl_stream s) {
  float scale_log2 = scale * 1.4426950408889634f;
  int r = heads / kv_heads, mq = max_q; /* the decode kernel takes the sequences of at most mq queries */
  if (max_q >= PREFILL_MIN_Q) {
    /* The prefill kernel takes every sequence of several queries; one-token sequences (decode tokens batched with
     * a prefill chunk) stay with the split decode kernel, rather than walk a long context in one CTA. */
    unsigned ctas = (unsigned)(((int64_t)max_q * r + QT - 1) / QT * kv_heads * n_seq); /* < 2^31: checked */
    attn_prefill_kernel<D><<<ctas, NT, prefill_smem(D), s>>>(out, q, kc, vc, cu_q, kv_len, table, n_seq, max_blocks, bs,
                                                             heads, kv_heads, hd, 1, scale_log2);
    if (cudaGetLastError() != cudaSuccess) return QVL_ERR_DEVICE;
    mq = 1;
  }
  int64_t chunks = ((int64_t)mq * r + DR - 1) / DR, ctas = chunks * kv_heads * n_seq,
          slots = (int64_t)n_seq * mq * heads;
  /* about 8 CTAs per SM (3 fit at once): several waves, so a short last wave costs little */
  int64_t want = (8 * (int64_t)n_sm + ctas - 1) / ctas, tiles = (max_kv + KT - 1) / KT;
  int64_t fit = (int64_t)(ws_bytes / ((size_t)slots * (hd + 2) * sizeof(float)));
  int n_split = (int)(want < tiles ? want : tiles);
  if (n_split > MAX_SPLITS) n_split = MAX_SPLITS;
  if (n_split > fit) n_split = (int)fit;
  if (n_split < 1) n_split = 1;
  float *ws_o = ws, *ws_ml = ws + (size_t)slots * n_split * hd;
  size_t shm = decode_smem(D);
  dim3 grid((unsigned)(chunks * n_split), (unsigned)kv_heads, (unsigned)n_seq);
  attn_decode_kernel<D><<<grid, NT, shm, s>>>(out, ws_o, ws_ml, q, kc, vc, cu_q, kv_len, table, max_blocks, bs, heads,
                                              kv_heads, hd, mq, n_split, scale_log2);
  if (n_split > 1) attn_combine_kernel<<<(unsigned)slots, NT, 0, s>>>(out, ws_o, ws_ml, cu_q, heads, hd, mq, n_split);
  return cudaGetLastError() == cudaSuccess ? QVL_OK : QVL_ERR_DEVICE;
}

}  // namespace

/* The kernels want more than the default 48 KB of shared memory; set once at backend creation, outside any
 * graph capture. The prefill kernel also asks for the largest carveout, so that two of its CTAs fit on an SM. */
extern "C" int cuda_attention_paged_init(void) {
  int bad =
      cudaFuncSetAttribute(attn_prefill_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)prefill_smem(64)) ||
      cudaFuncSetAttribute(attn_prefill_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)prefill_smem(128)) ||
      cudaFuncSetAttribute(attn_prefill_kernel<64>, cudaFuncAttributePreferredSharedMemoryCarveout,
                           cudaSharedmemCarveoutMaxShared) ||
      cudaFuncSetAttribute(attn_prefill_kernel<128>, cudaFuncAttributePreferredSharedMemoryCarveout,
                           cudaSharedmemCarveoutMaxShared) ||
      cudaFuncSetAttribute(attn_decode_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)decode_smem(64)) ||
      cudaFuncSetAttribute(attn_decode_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)decode_smem(128));
  return bad ? QVL_ERR_DEVICE : QVL_OK;
}

extern "C" int cuda_attention_paged(uint16_t *out, const uint16_t *q, const uint16_t *kc, const uint16_t *vc,
                                    const int32_t *cu_q, const int32_t *kv_len, const int32_t *table, int n_seq,
                                    int max_blocks, int block_size, int64_t q_rows, int max_q, int max_kv, int heads,
                                    int kv_heads, int head_dim, float scale, float *ws, size_t ws_bytes, int n_sm,
                                    qvl_stream s) {
  if (head_dim < 8 || head_dim > 128 || head_dim % 8 || kv_heads < 1 || heads % kv_heads || block_size < 1)
    return QVL_ERR_UNSUPPORTED;
  if (n_seq < 1 || q_rows < 1 || max_q < 1 || max_kv < 1) return QVL_OK;
  int64_t rows = (int64_t)max_q * (heads / kv_heads); /* per sequence and kv head */
  if (n_seq > 65535 || heads > 65535 || rows > 2147483647LL / MAX_SPLITS ||
      (rows + QT - 1) / QT * kv_heads * n_seq > 2147483647LL)
    return QVL_ERR_LIMIT;
  const bf16 *Q = (const bf16 *)q, *K = (const bf16 *)kc, *V = (const bf16 *)vc;
  if (head_dim <= 64)
    return launch<64>((bf16 *)out, Q, K, V, cu_q, kv_len, table, n_seq, max_blocks, block_size, max_q, max_kv, heads,
                      kv_heads, head_dim, scale, ws, ws_bytes, n_sm, s);
  return launch<128>((bf16 *)out, Q, K, V, cu_q, kv_len, table, n_seq, max_blocks, block_size, max_q, max_kv, heads,
                     kv_heads, head_dim, scale, ws, ws_bytes, n_sm, s);
}
