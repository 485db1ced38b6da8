/* attn_paged.cu - attention_paged: causal GQA of a ragged batch of sequences over the paged KV cache (backend.h
 * has the contract), bf16 tensor cores (mma.sync m16n8k16, f32 accumulators), online softmax in f32.
 *
 * Everything that varies between steps is read on the device (cu_q, kv_len, table); the grid comes from the host
 * bounds (n_seq, max_q, max_kv), so a captured step replays with other lengths. Blocks past a sequence's rows or
 * keys exit at once.
 *
 *   prefill (max_q >= PREFILL_MIN_Q): FA2 structure. A CTA of 4 warps owns 64 rows (16 per warp) of (query, q
 *     head) pairs of one kv head's group, so each K/V tile serves every head of the group. K/V tiles of 64 keys
 *     are gathered through the block table into shared memory (cp.async, two stages, XOR-swizzled rows for
 *     conflict-free ldmatrix); causal masking only on the tiles that cross a warp's diagonal.
 *   decode (max_q < PREFILL_MIN_Q, and the one-token sequences of a batch that also has prefill chunks):
 *     flash-decoding for GQA. A CTA owns (sequence, kv head, split of the keys) and 16 "rows" = the group's q
 *     heads x the sequence's queries, so each K/V tile is read once for the whole group; its 4 warps take 16 keys
 *     of each 64-key tile, then merge through shared memory. With several splits each CTA writes (m, l,
 *     unnormalised o) partials and a combine kernel reduces them.
 *
 * Head dims up to 128 that are multiples of 8, padded in shared memory to 64 or 128 (the tiny test models use 16;
 * every published Qwen LM uses 128).
 *
 * Split partials live in a workspace the backend allocates once at creation (never during a graph capture): the
 * launcher lowers the number of splits until n_seq x (max_q, or 1 with prefill chunks) x heads x splits x
 * (head_dim + 2) floats fit; one split needs no workspace at all. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "qvl.h"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int KT = 64;  /* keys per tile */
constexpr int NT = 128; /* threads per CTA: 4 warps */
constexpr int QT = 64;  /* prefill query rows per CTA */
constexpr int DR = 16;  /* decode rows per CTA (one mma M) */
constexpr int MAX_SPLITS = 128;
constexpr int PREFILL_MIN_Q = 16;

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, zero-filled when !valid (src is then not read). */
__device__ __forceinline__ void cp16(void *dst, const void *src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm4(uint32_t r[4], const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm4t(uint32_t r[4], const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

/* c[16x8] += a[16x16] b[16x8], bf16 in, f32 accumulate. */
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *(uint32_t *)&v;
}

/* Element (row, col) of a [rows][D] bf16 tile whose 16-byte chunks are XOR-swizzled by row % 8 (col % 8 == 0). */
template <int D>
__device__ __forceinline__ bf16 *sw(bf16 *t, int row, int col) {
  return t + row * D + ((((col >> 3) ^ (row & 7))) << 3);
}

/* Slot of token t of a sequence whose block table row is tab. */
__device__ __forceinline__ int64_t slot_of(const int32_t *tab, int bs, int t) {
  return (int64_t)tab[t / bs] * bs + t % bs;
}

/* K and V rows of keys [k0, k0 + KT) of kv head g into two swizzled tiles; keys >= k_end and dims >= hd are zeros
 * (a zero V row times a zero probability stays zero, where stale memory could hold a NaN). */
template <int D>
__device__ __forceinline__ void load_kv(bf16 *sk, bf16 *sv, const bf16 *kc, const bf16 *vc, const int32_t *tab, int bs,
                                        int k0, int k_end, int kv_heads, int g, int hd) {
  constexpr int CH = D / 8;
  for (int i = threadIdx.x; i < KT * CH; i += NT) {
    int r = i / CH, c = i % CH, t = k0 + r;
    bool ok = t < k_end && c * 8 < hd;
    int64_t off = ok ? (slot_of(tab, bs, t) * kv_heads + g) * hd + c * 8 : 0;
    cp16(sw<D>(sk, r, c * 8), kc + off, ok);
    cp16(sw<D>(sv, r, c * 8), vc + off, ok);
  }
}

/* Online softmax of one 16-row fragment block: the scores sc[NB][4] (rows lane/4 and lane/4 + 8, already in the
 * log2 domain and masked with -inf) become probabilities; m, l, and the accumulators o[ND][4] are rescaled. */
template <int NB, int ND>
__device__ __forceinline__ void softmax_step(float (&sc)[NB][4], float (&o)[ND][4], float m[2], float l[2]) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NB; n++) mx = fmaxf(mx, fmaxf(sc[n][2 * h], sc[n][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    float m_new = fmaxf(m[h], mx), ref = m_new == -INFINITY ? 0.f : m_new; /* a row with nothing seen yet */
    float alpha = exp2f(m[h] - ref), sum = 0.f;
#pragma unroll
    for (int n = 0; n < NB; n++) {
      sc[n][2 * h] = exp2f(sc[n][2 * h] - ref);
      sc[n][2 * h + 1] = exp2f(sc[n][2 * h + 1] - ref);
      sum += sc[n][2 * h] + sc[n][2 * h + 1];
    }
    l[h] = l[h] * alpha + sum; /* per-lane partial sum; the 4 lanes of a row are added at the end */
    m[h] = m_new;
#pragma unroll
    for (int d = 0; d < ND; d++) o[d][2 * h] *= alpha, o[d][2 * h + 1] *= alpha;
  }
}

/* o[16][D] += P[16][16 keys] V[16 keys][D]: P from the score fragments n-blocks nb, nb + 1; V rows at vrow. */
template <int D>
__device__ __forceinline__ void pv16(float (&o)[D / 8][4], const float (&p0)[4], const float (&p1)[4], bf16 *sv,
                                     int vrow, int lane) {
  uint32_t a[4] = {pack(p0[0], p0[1]), pack(p0[2], p0[3]), pack(p1[0], p1[1]), pack(p1[2], p1[3])};
#pragma unroll
  for (int d = 0; d < D / 8; d += 2) {
    uint32_t b[4];
    ldsm4t(b, sw<D>(sv, vrow + (lane & 7) + 8 * ((lane >> 3) & 1), d * 8 + 8 * (lane >> 4)));
    mma(o[d], a, b[0], b[1]);
    mma(o[d + 1], a, b[2], b[3]);
  }
}

/* s[16][16 keys] = q[16][D] k[16 keys][D]^T for the K rows at krow. */
template <int D>
__device__ __forceinline__ void qk16(float (&s0)[4], float (&s1)[4], const uint32_t (&qf)[D / 16][4], bf16 *sk,
                                     int krow, int lane) {
#pragma unroll
  for (int i = 0; i < 4; i++) s0[i] = s1[i] = 0.f;
#pragma unroll
  for (int c = 0; c < D / 16; c++) {
    uint32_t b[4];
    ldsm4(b, sw<D>(sk, krow + (lane & 7) + 8 * (lane >> 4), c * 16 + 8 * ((lane >> 3) & 1)));
    mma(s0, qf[c], b[0], b[1]);
    mma(s1, qf[c], b[2], b[3]);
  }
}

/* The A fragments of 16 query rows at qrow of a swizzled Q tile. */
template <int D>
__device__ __forceinline__ void load_q_frags(uint32_t (&qf)[D / 16][4], bf16 *sq, int qrow, int lane) {
#pragma unroll
  for (int c = 0; c < D / 16; c++)
    ldsm4(qf[c], sw<D>(sq, qrow + (lane & 7) + 8 * ((lane >> 3) & 1), c * 16 + 8 * (lane >> 4)));
}

/* ---- prefill ------------------------------------------------------------------------------------------------- */

/* grid (row tiles, kv_heads, n_seq); sequences of at most skip queries are left out. Row t of a sequence's n x r
 * (query, group head) pairs is query t / r at head g*r + t % r, so a CTA's 64 rows span the group's heads and each K/V
 * tile is read once for all of them. The last row tiles (the most keys) are launched first. */
template <int D>
__global__ void __launch_bounds__(NT)
    attn_prefill_kernel(bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc, const int32_t *cu_q,
                        const int32_t *kv_len, const int32_t *table, int max_blocks, int bs, int heads, int kv_heads,
                        int hd, int skip, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *sq = (bf16 *)smem, *sk = sq + QT * D, *sv = sk + 2 * KT * D; /* sk, sv: two stages each */
  int s = blockIdx.z, g = blockIdx.y, r = heads / kv_heads;
  int t0 = (gridDim.x - 1 - blockIdx.x) * QT;
  int row0 = cu_q[s], n = cu_q[s + 1] - row0, L = kv_len[s], rows = n * r;
  if (t0 >= rows || n <= skip) return; /* sequences of <= skip queries are the decode kernel's */
  const int32_t *tab = table + (int64_t)s * max_blocks;
  int first = L - n; /* position of query 0 */
  int last = first + (min(t0 + QT, rows) - 1) / r, n_tiles = (last + KT) / KT;
  for (int i = threadIdx.x; i < QT * (D / 8); i += NT) {
    int row = i / (D / 8), c = i % (D / 8), t = t0 + row;
    bool ok = t < rows && c * 8 < hd;
    cp16(sw<D>(sq, row, c * 8), q + (ok ? ((int64_t)(row0 + t / r) * heads + g * r + t % r) * hd + c * 8 : 0), ok);
  }
  load_kv<D>(sk, sv, kc, vc, tab, bs, 0, last + 1, kv_heads, g, hd);
  cp_commit();
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int wt = t0 + warp * 16, least = first + wt / r; /* the warp's first row and its position */
  int pos[2] = {first + (wt + lane / 4) / r, first + (wt + lane / 4 + 8) / r};
  float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int d = 0; d < D / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  uint32_t qf[D / 16][4];
  for (int j = 0; j < n_tiles; j++) {
    if (j + 1 < n_tiles) {
      load_kv<D>(sk + ((j + 1) & 1) * KT * D, sv + ((j + 1) & 1) * KT * D, kc, vc, tab, bs, (j + 1) * KT, last + 1,
                 kv_heads, g, hd);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    if (j == 0) load_q_frags<D>(qf, sq, warp * 16, lane);
    bf16 *tk = sk + (j & 1) * KT * D, *tv = sv + (j & 1) * KT * D;
    float sc[KT / 8][4];
#pragma unroll
    for (int nb = 0; nb < KT / 8; nb += 2) qk16<D>(sc[nb], sc[nb + 1], qf, tk, nb * 8, lane);
    int k0 = j * KT;
    bool diag = k0 + KT - 1 > least; /* the tile crosses the warp's diagonal */
#pragma unroll
    for (int nb = 0; nb < KT / 8; nb++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int key = k0 + nb * 8 + 2 * (lane % 4) + (e & 1);
        sc[nb][e] = diag && key > pos[e >> 1] ? -INFINITY : sc[nb][e] * scale_log2;
      }
    softmax_step<KT / 8, D / 8>(sc, o, m, l);
#pragma unroll
    for (int kk = 0; kk < KT / 16; kk++) pv16<D>(o, sc[2 * kk], sc[2 * kk + 1], tv, kk * 16, lane);
    __syncthreads(); /* the stage just read is the next load's target */
  }
#pragma unroll
  for (int hh = 0; hh < 2; hh++) {
    float sum = l[hh];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    int t = wt + lane / 4 + 8 * hh;
    if (t >= rows) continue;
    float inv = sum > 0.f ? 1.f / sum : 0.f;
    bf16 *dst = out + ((int64_t)(row0 + t / r) * heads + g * r + t % r) * hd + 2 * (lane % 4);
#pragma unroll
    for (int d = 0; d < D / 8; d++)
      if (d * 8 < hd) *(uint32_t *)(dst + d * 8) = pack(o[d][2 * hh] * inv, o[d][2 * hh + 1] * inv);
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
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *sq = (bf16 *)smem, *sk = sq + DR * D, *sv = sk + 2 * KT * D;
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
    cp16(sw<D>(sq, rho, c * 8), q + (ok ? ((int64_t)(row0 + qi) * heads + hq) * hd + c * 8 : 0), ok);
  }
  if (k_begin < k_end) load_kv<D>(sk, sv, kc, vc, tab, bs, k_begin, k_end, kv_heads, g, hd);
  cp_commit();
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int pos[2];
  for (int hh = 0; hh < 2; hh++) pos[hh] = L - n + (rho0 + lane / 4 + 8 * hh) / r;
  float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int d = 0; d < D / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  uint32_t qf[D / 16][4];
  int n_tiles = k_begin < k_end ? (k_end - k_begin + KT - 1) / KT : 0;
  cp_wait<0>();
  __syncthreads();
  load_q_frags<D>(qf, sq, 0, lane);
  for (int j = 0; j < n_tiles; j++) {
    if (j + 1 < n_tiles) {
      load_kv<D>(sk + ((j + 1) & 1) * KT * D, sv + ((j + 1) & 1) * KT * D, kc, vc, tab, bs, k_begin + (j + 1) * KT,
                 k_end, kv_heads, g, hd);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    bf16 *tk = sk + (j & 1) * KT * D, *tv = sv + (j & 1) * KT * D;
    float sc[2][4];
    qk16<D>(sc[0], sc[1], qf, tk, warp * 16, lane);
    int k0 = k_begin + j * KT + warp * 16;
#pragma unroll
    for (int nb = 0; nb < 2; nb++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int key = k0 + nb * 8 + 2 * (lane % 4) + (e & 1);
        sc[nb][e] = key >= k_end || key > pos[e >> 1] ? -INFINITY : sc[nb][e] * scale_log2;
      }
    softmax_step<2, D / 8>(sc, o, m, l);
    pv16<D>(o, sc[0], sc[1], tv, warp * 16, lane);
    __syncthreads();
  }
  /* merge the 4 warps: per row the largest m, then the rescaled sums; the K/V stages hold the f32 o's */
  float *so = (float *)sk, *sml = so + 4 * DR * D; /* so [warp][row][D], sml [warp][row][2] */
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
      p[0] = o[d][2 * hh], p[1] = o[d][2 * hh + 1];
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
    size_t shm = prefill_smem(D);
    dim3 grid((unsigned)(((int64_t)max_q * r + QT - 1) / QT), (unsigned)kv_heads, (unsigned)n_seq);
    attn_prefill_kernel<D>
        <<<grid, NT, shm, s>>>(out, q, kc, vc, cu_q, kv_len, table, max_blocks, bs, heads, kv_heads, hd, 1, scale_log2);
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
 * graph capture. */
extern "C" int cuda_attention_paged_init(void) {
  int bad =
      cudaFuncSetAttribute(attn_prefill_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)prefill_smem(64)) ||
      cudaFuncSetAttribute(attn_prefill_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)prefill_smem(128)) ||
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
  if (n_seq > 65535 || heads > 65535 || (int64_t)max_q * (heads / kv_heads) > 2147483647LL / MAX_SPLITS)
    return QVL_ERR_LIMIT;
  const bf16 *Q = (const bf16 *)q, *K = (const bf16 *)kc, *V = (const bf16 *)vc;
  if (head_dim <= 64)
    return launch<64>((bf16 *)out, Q, K, V, cu_q, kv_len, table, n_seq, max_blocks, block_size, max_q, max_kv, heads,
                      kv_heads, head_dim, scale, ws, ws_bytes, n_sm, s);
  return launch<128>((bf16 *)out, Q, K, V, cu_q, kv_len, table, n_seq, max_blocks, block_size, max_q, max_kv, heads,
                     kv_heads, head_dim, scale, ws, ws_bytes, n_sm, s);
}
