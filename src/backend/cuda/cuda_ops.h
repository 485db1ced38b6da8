/* cuda_ops.h - C-callable launchers of the CUDA backend's kernels. bf16 buffers are uint16_t here so
 * plain C can hold them; the .cu files treat them as __nv_bfloat16. Each launcher returns QVL_OK or
 * QVL_ERR_DEVICE and never synchronises. Argument order: outputs, inputs, sizes, scalars, stream.
 * Numerics follow the bf16 reference (spec §6): f32 math inside a kernel, one rounding to bf16 where
 * PyTorch rounds. */
#ifndef QVL_BACKEND_CUDA_OPS_H
#define QVL_BACKEND_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *qvl_stream; /* = cudaStream_t */

/* Number of usable CUDA devices; 0 when there is no driver or no device (never fails). */
int qvl_cuda_device_count(void);
/* device.cu: reads bytes (a multiple of 16) of the zero-filled buf, so that L2 holds none of what ran before. */
int cuda_l2_flush(void *buf, size_t bytes, qvl_stream s);
/* device.cu: the driver's cuTensorMapEncodeTiled (CUDA 12.0 ABI: PFN_cuTensorMapEncodeTiled_v12000 of
 * <cudaTypedefs.h>), looked up once per process through the runtime; NULL when the driver has none. For the TMA
 * kernels (attn_vit_wgmma.cu, gemm_swiglu.cu). */
void *cuda_tensor_map_encoder(void);

/* gemv.cu: backend.h linear for m <= CUDA_GEMV_MAX_ROWS rows (decode steps): y[m,n] = x[m,k] w[n,k]^T (+ bias[n]),
 * then gelu_tanh when gelu, or + res[m,n] when res != NULL (res may be y); f32 sums, one rounding to bf16.
 * QVL_ERR_UNSUPPORTED unless 1 <= m <= CUDA_GEMV_MAX_ROWS, k is a multiple of 8 and x, w are 16-byte aligned. */
enum { CUDA_GEMV_MAX_ROWS = 16 };
int cuda_gemv(uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *bias, const uint16_t *res, int m,
              int n, int k, int gelu, qvl_stream s);

/* norms.cu: y = bf16(bf16(x * rsqrt(mean(x^2) + eps)) * w); y = bf16((x - mean) * rstd * w + b). */
int cuda_rmsnorm(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t rows, int dim, float eps, qvl_stream s);
int cuda_layernorm(uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b, int64_t rows, int dim,
                   float eps, qvl_stream s);

/* eltwise.cu */
int cuda_add(uint16_t *h, const uint16_t *x, int64_t n, qvl_stream s);                          /* h = bf16(h + x) */
int cuda_silu_mul(uint16_t *y, const uint16_t *g, const uint16_t *u, int64_t n, qvl_stream s);  /* bf16(silu(g)) * u */
/* swiglu.cu: y[r][j] = bf16(bf16(silu(gu[r][j])) * gu[r][f + j]) for gu [rows][2f], y [rows][f]. */
int cuda_swiglu(uint16_t *y, const uint16_t *gu, int64_t rows, int f, qvl_stream s);
/* gemm_swiglu.cu: cuda_swiglu of gu = x [m][k] w [2f][k]^T + bias [2f] (the backend's linear, bias NULL for none)
 * in one Hopper kernel that never writes gu: y [m][f], rounded step for step as linear + swiglu round (only the
 * order of the f32 sums differs). y is not read and must not overlap x. QVL_ERR_UNSUPPORTED, nothing launched,
 * unless f % 128 == 0, k % 64 == 0, every pointer is 16-byte aligned, the device is compute capability 9.0 running
 * this file's sm_90a code and the driver has cuTensorMapEncodeTiled; QVL_ERR_LIMIT past 2^31 rows. m == 0 does
 * nothing. No host synchronisation or allocation: a launch can be captured in a graph (the tensor maps, encoded
 * per call, travel in its parameters). Call cuda_linear_swiglu_init once per process on the device before the first
 * launch and outside graph capture (kernel attributes, SM count, the encoder; the first launch does it otherwise);
 * QVL_GEMM_SWIGLU_CLUSTER=2 in the environment then selects the two-CTA cluster variant (weights multicast). */
int cuda_linear_swiglu_init(void);
int cuda_linear_swiglu(uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *bias, int64_t m, int f, int k,
                       qvl_stream s);
/* Test and bench only: cluster 1 or 2 forces that variant (QVL_ERR_UNSUPPORTED when clusters of 2 cannot run), 0 the
 * default. */
int cuda_linear_swiglu_debug(int cluster, uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *bias,
                             int64_t m, int f, int k, qvl_stream s);
int cuda_gelu(uint16_t *y, const uint16_t *x, int64_t n, int tanh_approx, qvl_stream s);
int cuda_f32_to_bf16(uint16_t *y, const float *x, int64_t n, qvl_stream s);
int cuda_bf16_to_f32(float *y, const uint16_t *x, int64_t n, qvl_stream s);

/* rope.cu: q and/or k (parts: CUDA_ROPE_Q | CUDA_ROPE_K) of qkv [rows][3][heads][head_dim] rotated in place, in f32
 * by cos/sin [rows][head_dim] (rope.cuh's arithmetic). QVL_ERR_INVALID_ARG for parts outside 1..3. */
enum { CUDA_ROPE_Q = 1, CUDA_ROPE_K = 2, CUDA_ROPE_QK = 3 };
int cuda_rope_qk(uint16_t *qkv, const float *cos, const float *sin, int64_t rows, int heads, int head_dim, int parts,
                 qvl_stream s);

/* rope.cu: cos/sin tables [rows][head_dim] from pos [n][2] (row r uses pos[order ? order[r] : r]). */
int cuda_rope_tables(float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows, int head_dim,
                     float theta, qvl_stream s);

/* gather.cu: y[i] = x[idx[i]] (rows of row_elems bf16); h[r] = bf16(h[r] + bf16(sum_c w[4r+c] table[idx[4r+c]])). */
int cuda_gather_rows(uint16_t *y, const uint16_t *x, const int32_t *idx, int64_t n, int64_t row_elems, qvl_stream s);
int cuda_add_bilinear(uint16_t *h, const uint16_t *table, const int32_t *idx, const float *w, int64_t rows, int dim,
                      qvl_stream s);
/* y[r] = x[r] for rows of row_elems, reading rows at x_stride and writing at y_stride (elements). */
int cuda_copy_rows(uint16_t *y, int64_t y_stride, const uint16_t *x, int64_t x_stride, int64_t rows, int64_t row_elems,
                   qvl_stream s);

/* sdpa_meta.cu: cuDNN's per-slot sequence lengths lens [nb] and element offsets off_qkv, off_o [nb + 1]
 * (cu[min(i, n_seq)] * qkv_row / o_row) from device boundaries cu [n_seq + 1]; slots past n_seq are empty. */
int cuda_sdpa_meta(int32_t *lens, int64_t *off_qkv, int64_t *off_o, const int32_t *cu, int n_seq, int nb,
                   int64_t qkv_row, int64_t o_row, qvl_stream s);

/* scatter.cu: backend.h scatter_rows (vision rows and DeepStack into the language model's rows). */
int cuda_scatter_rows(uint16_t *y, const uint16_t *x, const int32_t *idx, int64_t n, int64_t row_elems, int accumulate,
                      qvl_stream s);
/* QVL_ERR_LIMIT when the keys do not fit the kernel's shared memory (~56k). */

/* kv_cache.cu: backend.h qkv_to_cache (q/k RMSNorm, text rotary, k and v into their cache slots).
 * QVL_ERR_UNSUPPORTED for an odd head_dim. */
int cuda_qkv_to_cache(uint16_t *q, uint16_t *kc, uint16_t *vc, const uint16_t *qkv, const uint16_t *q_norm,
                      const uint16_t *k_norm, const float *cos, const float *sin, const int32_t *slot, int64_t rows,
                      int heads, int kv_heads, int head_dim, float eps, qvl_stream s);
/* attn_paged.cu: backend.h attention_paged. ws (ws_bytes, device floats) holds split partials; the number of
 * splits is lowered until they fit (none are needed with one). n_sm: the device's SM count.
 * QVL_ERR_UNSUPPORTED unless head_dim is a multiple of 8 up to 128 and heads a multiple of kv_heads. */
int cuda_attention_paged(uint16_t *out, const uint16_t *q, const uint16_t *kc, const uint16_t *vc,
                         const int32_t *cu_q, const int32_t *kv_len, const int32_t *table, int n_seq, int max_blocks,
                         int block_size, int64_t q_rows, int max_q, int max_kv, int heads, int kv_heads, int head_dim,
                         float scale, float *ws, size_t ws_bytes, int n_sm, qvl_stream s);
/* Once per process and device before the first cuda_attention_paged (kernel attributes). */
int cuda_attention_paged_init(void);
/* attn_vit.cu: backend.h attention for the vision towers: out [rows][heads * head_dim] = softmax(q k^T * scale) v
 * over the sequences [cu[i], cu[i+1]) (device int32, n_seq + 1 entries) of qkv [rows][3][heads][head_dim], q and k
 * first rotated as cuda_rope_qk does when cos/sin (f32 [rows][head_dim]) are non-NULL (qkv is not written). max_len
 * bounds every sequence's length and rows >= cu[n_seq]: the grid comes from them alone (graph replay with other
 * boundaries under the same bounds). QVL_ERR_UNSUPPORTED unless head_dim is a multiple of 8 up to 128 and every
 * pointer is 16-byte aligned; QVL_ERR_LIMIT past 2^31 rows or CTAs. */
int cuda_attn_vit(uint16_t *out, const uint16_t *qkv, const float *cos, const float *sin, const int32_t *cu, int n_seq,
                  int max_len, int64_t rows, int heads, int head_dim, float scale, qvl_stream s);
/* Once per process and device before the first cuda_attn_vit (kernel attributes: > 48 KB of shared memory). */
int cuda_attn_vit_init(void);
/* attn_vit_wgmma.cu: non-causal attention of packed ragged sequences (the vision towers) with Hopper wgmma.
 * qkv [rows][3][heads][head_dim] (q, k, v of a row), sequences [cu[i], cu[i+1]) from the device boundaries cu
 * [n_seq + 1], every length <= max_len; out[r][h*head_dim + d] = softmax(scale q k^T) v for the rows of the
 * sequences (other rows are not written, nothing outside [0, rows) is read). k must be rotated already (cuda_rope_qk
 * with CUDA_ROPE_K); q is too when cos/sin are NULL, else the kernel rotates q's tiles in shared memory as
 * cuda_rope_qk would with the tables cos/sin (f32 [rows][head_dim], 16-byte aligned) and leaves qkv unwritten: the
 * same output bits as cuda_rope_qk(CUDA_ROPE_Q) then the kernel without tables. The grid depends only on n_seq,
 * max_len and heads, so a captured launch replays with other boundaries. head_dim 64, 72 or 80; qkv 16-byte and out
 * 4-byte aligned. QVL_ERR_UNSUPPORTED for rows >= 2^31 (TMA coordinates are int32), another head_dim, a device
 * other than compute capability 9.0 (sm_90a code only) or a driver without cuTensorMapEncodeTiled.
 * Call cuda_attn_vit_wgmma_init once per process on the device before the first launch and outside graph capture
 * (kernel attributes, SM count, the driver's tensor-map encoder; the first launch does it otherwise);
 * QVL_ATTN_VIT_PINGPONG=0 in the environment then stops the kernel's three consumer warpgroups from taking turns at
 * issuing their GEMMs (a diagnosis switch). */
int cuda_attn_vit_wgmma_init(void);
int cuda_attn_vit_wgmma(uint16_t *out, const uint16_t *qkv, const float *cos, const float *sin, const int32_t *cu,
                        int n_seq, int max_len, int64_t rows, int heads, int head_dim, float scale, qvl_stream s);
/* Test only: the same with flags (CUDA_ATTN_VIT_NO_PINGPONG), and, when dbg != NULL, CTA 0's first item (the first
 * rows of sequence 0, head 0) writes dbg[0 .. 128*128) = raw q k^T of its first 128 rows x 128 keys,
 * dbg[128*128 .. 2*128*128) = the bf16 probabilities of that tile relative to its row max,
 * dbg[2*128*128 .. + 128*head_dim) = their product with the tile's v (before any rescale); rows/keys past the
 * sequence are masked or unwritten. */
enum { CUDA_ATTN_VIT_NO_PINGPONG = 1 };
int cuda_attn_vit_wgmma_debug(float *dbg, int flags, uint16_t *out, const uint16_t *qkv, const float *cos,
                              const float *sin, const int32_t *cu, int n_seq, int max_len, int64_t rows, int heads,
                              int head_dim, float scale, qvl_stream s);
/* argmax.cu: out[r] = index of the largest of x[r][0..n) (lowest among equals; NaN counts as +inf). */
int cuda_argmax_rows(int32_t *out, const uint16_t *x, int64_t rows, int n, qvl_stream s);

#ifdef __cplusplus
}
#endif

#endif
