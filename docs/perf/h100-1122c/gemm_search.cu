// gemm_search.cu - session 11 scratch program (not built by the project), kept as the record of c2-c4: every cuBLASLt
// configuration of the Qwen3-VL tower GEMMs, cold and at the power cap. nvcc -arch=sm_90a -O2 -std=c++17 -o gs
// gemm_search.cu -lcublasLt; c4: GS_FIRST=0 GS_LAST=3 ./gs 100000 16 (all configurations), c3: ./gs 2500 16.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <algorithm>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_) { printf("cuda %s at %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)

__global__ void fill(__nv_bfloat16 *p, size_t n, uint32_t seed, float scale) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  for (; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    p[i] = __float2bfloat16(((h & 0xffffff) / 16777216.0f * 2 - 1) * scale);
  }
}

struct cand { cublasLtMatmulAlgo_t a; int id, tile, stages, cluster, swz, custom, inner, heur; size_t ws; float cold, hot; };

static void desc(const cand &c, char *s) {
  sprintf(s, "id %d tile %d stages %d cluster %d swz %d custom %d inner %d%s", c.id, c.tile, c.stages, c.cluster,
          c.swz, c.custom, c.inner, c.heur >= 0 ? " [heur]" : "");
}

static void read_cfg(cand &c) {
  uint32_t u; uint16_t h; int32_t i; size_t w;
  cublasLtMatmulAlgoConfigGetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_ID, &i, 4, &w); c.id = i;
  cublasLtMatmulAlgoConfigGetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_TILE_ID, &u, 4, &w); c.tile = u;
  cublasLtMatmulAlgoConfigGetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &u, 4, &w); c.stages = u;
  cublasLtMatmulAlgoConfigGetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &u, 4, &w); c.swz = u;
  cublasLtMatmulAlgoConfigGetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &u, 4, &w); c.custom = u;
  cublasLtMatmulAlgoConfigGetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, &h, 2, &w); c.inner = h;
  cublasLtMatmulAlgoConfigGetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &h, 2, &w); c.cluster = h;
}

int main(int argc, char **argv) {
  int M = 65536, max_timed = argc > 1 ? atoi(argv[1]) : 1500, top = argc > 2 ? atoi(argv[2]) : 12;
  struct shp { int n, k, epi; } all[] = {{3456, 1152, 0}, {1152, 1152, 2}, {4352, 1152, 1}, {1152, 4352, 2},
                                     {3840, 1280, 0}, {1280, 1280, 2}, {1280, 3456, 2}};
  int first = getenv("GS_FIRST") ? atoi(getenv("GS_FIRST")) : 0, last = getenv("GS_LAST") ? atoi(getenv("GS_LAST")) : 3;
  std::vector<shp> shapes(all + first, all + last + 1);
  cublasLtHandle_t lt;
  cublasLtCreate(&lt);
  size_t ws_bytes = 32u << 20;
  void *ws;
  CK(cudaMalloc(&ws, ws_bytes));
  __nv_bfloat16 *x, *w, *y, *d, *bias;
  CK(cudaMalloc(&x, (size_t)M * 4352 * 2));
  CK(cudaMalloc(&w, (size_t)4352 * 4352 * 2));
  CK(cudaMalloc(&y, (size_t)M * 4352 * 2));
  CK(cudaMalloc(&d, (size_t)M * 4352 * 2));
  CK(cudaMalloc(&bias, 4352 * 2));
  fill<<<1024, 256>>>(x, (size_t)M * 4352, 1, 2.0f);
  fill<<<1024, 256>>>(w, (size_t)4352 * 4352, 2, 0.03f);
  fill<<<1024, 256>>>(y, (size_t)M * 4352, 3, 1.0f);
  fill<<<64, 256>>>(bias, 4352, 4, 0.1f);
  CK(cudaDeviceSynchronize());
  cudaStream_t st;
  cudaStreamCreate(&st);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  for (auto &sh : shapes) {
    int n = sh.n, k = sh.k, epi = sh.epi;
    cublasLtMatmulDesc_t op;
    cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t ep = epi == 1 ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = CUDA_R_16BF;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, n, k);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, M, k);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, M, n);
    float one = 1.0f, beta = epi == 2 ? 1.0f : 0.0f;
    std::vector<cand> cs;
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes);
    cublasLtMatmulHeuristicResult_t h[8];
    int found = 0;
    cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 8, h, &found);
    for (int i = 0; i < found; i++) {
      cand c{};
      c.a = h[i].algo, c.heur = i, c.ws = h[i].workspaceSize;
      read_cfg(c);
      cs.push_back(c);
      char s[256];
      desc(c, s);
      printf("heuristic %d: %s\n", i, s);
    }
    fflush(stdout);
    int ids[256], n_ids = 0;
    cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, 256,
                             ids, &n_ids);
    long checked = 0;
    clock_t t_check = clock();
    std::vector<cand> ex;
    for (int a = 0; a < n_ids; a++) {
      int want = 0;
      for (int i = 0; i < found; i++) want |= cs[i].id == ids[a];
      for (int i = 3; i < argc; i++) want |= atoi(argv[i]) == ids[a];
      if (!want) continue;
      printf("enumerating id %d\n", ids[a]);
      fflush(stdout);
      cublasLtMatmulAlgo_t algo;
      if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF,
                                 ids[a], &algo))
        continue;
      size_t sz = 0;
      std::vector<uint32_t> tiles, stages;
      if (!cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_TILE_IDS, NULL, 0, &sz) && sz >= 4) {
        tiles.resize(sz / 4);
        cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_TILE_IDS, tiles.data(), tiles.size() * 4, &sz);
      } else tiles.push_back(0);
      if (!cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_STAGES_IDS, NULL, 0, &sz) && sz >= 4) {
        stages.resize(sz / 4);
        cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_STAGES_IDS, stages.data(), stages.size() * 4, &sz);
      } else stages.push_back(0);
      int n_tiles = (int)tiles.size(), n_stages = (int)stages.size();
      printf("  id %d: %d tiles, %d stages\n", ids[a], n_tiles, n_stages);
      fflush(stdout);
      int32_t swz_ok = 0, cmax = 0;
      cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &swz_ok, 4, &sz);
      cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, &cmax, 4, &sz);
      int ok_here = 0;
      for (int t = 0; t < n_tiles; t++)
        for (int s = 0; s < n_stages; s++)
          for (int cl = 0; cl <= 10; cl++) {
            if (cl == 1) continue;
            for (int z = 0; z <= (swz_ok ? 1 : 0); z++)
              for (int cu = 0; cu <= cmax && cu < 16; cu++) {
                cand c{};
                c.a = algo, c.heur = -1;
                uint32_t tv = tiles[t], sv = stages[s], zv = z, cuv = cu;
                uint16_t clv = cl;
                cublasLtMatmulAlgoConfigSetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tv, 4);
                cublasLtMatmulAlgoConfigSetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &sv, 4);
                cublasLtMatmulAlgoConfigSetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &zv, 4);
                cublasLtMatmulAlgoConfigSetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &cuv, 4);
                cublasLtMatmulAlgoConfigSetAttribute(&c.a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &clv, 2);
                cublasLtMatmulHeuristicResult_t r;
                checked++;
                if (cublasLtMatmulAlgoCheck(lt, op, la, lb, lc, lc, &c.a, &r) || r.workspaceSize > ws_bytes) continue;
                c.ws = r.workspaceSize;
                read_cfg(c);
                ex.push_back(c), ok_here++;
              }
          }
      printf("shape n %d k %d: algo id %d tiles %d stages %d swz %d custom_max %d: %d configs pass the check\n", n, k,
             ids[a], n_tiles, n_stages, swz_ok, cmax, ok_here);
    }
    printf("shape n %d k %d epi %d: %d heuristic, %ld checked, %zu valid configs, %.1f s\n", n, k, epi, found, checked,
           ex.size(), (double)(clock() - t_check) / CLOCKS_PER_SEC);
    fflush(stdout);
    srand(12345);
    std::random_shuffle(ex.begin(), ex.end());
    if ((int)ex.size() > max_timed) ex.resize(max_timed);
    cs.insert(cs.end(), ex.begin(), ex.end());
    auto run = [&](cand &c) {
      return cublasLtMatmul(lt, op, &one, w, la, x, lb, &beta, y, lc, d, lc, &c.a, ws, ws_bytes, st);
    };
    // screening: 1 warm + 3 timed each, best of 3 (cold-ish, back to back)
    for (auto &c : cs) {
      c.cold = 1e9;
      if (run(c)) { c.cold = 2e9; cudaGetLastError(); continue; }
      for (int r = 0; r < 3; r++) {
        float t;
        cudaEventRecord(e0, st);
        run(c);
        cudaEventRecord(e1, st);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&t, e0, e1);
        c.cold = std::min(c.cold, t);
      }
    }
    if (cudaDeviceSynchronize() != cudaSuccess) { printf("sticky error\n"); return 1; }
    std::vector<cand *> sel;
    for (auto &c : cs) if (c.heur >= 0) sel.push_back(&c);
    std::vector<cand *> byc;
    for (auto &c : cs) if (c.heur < 0 && c.cold < 1e8) byc.push_back(&c);
    std::sort(byc.begin(), byc.end(), [](cand *a, cand *b) { return a->cold < b->cold; });
    for (int i = 0; i < (int)byc.size() && i < top; i++) sel.push_back(byc[i]);
    // hot: 7 rounds, each candidate 3 warm + 20 timed back to back; median of rounds
    int R = 7;
    std::vector<std::vector<float>> hot(sel.size());
    for (int r = 0; r < R; r++)
      for (size_t i = 0; i < sel.size(); i++) {
        for (int j = 0; j < 3; j++) run(*sel[i]);
        cudaEventRecord(e0, st);
        for (int j = 0; j < 20; j++) run(*sel[i]);
        cudaEventRecord(e1, st);
        cudaEventSynchronize(e1);
        float t;
        cudaEventElapsedTime(&t, e0, e1);
        hot[i].push_back(t / 20);
      }
    for (size_t i = 0; i < sel.size(); i++) {
      std::sort(hot[i].begin(), hot[i].end());
      sel[i]->hot = hot[i][R / 2];
    }
    std::sort(sel.begin(), sel.end(), [](cand *a, cand *b) { return a->hot < b->hot; });
    double fl = 2.0 * M * n * k;
    printf("== shape %d x %d x %d epi %d: hot (median of %d rounds x 20) / cold (best of 3)\n", M, n, k, epi, R);
    for (auto *c : sel) {
      char s[256];
      desc(*c, s);
      printf("  hot %.4f ms (%.0f TFLOP/s)  cold %.4f ms (%.0f)  ws %zu  %s\n", c->hot, fl / c->hot / 1e9, c->cold,
             fl / c->cold / 1e9, c->ws, s);
    }
    {
      char fn[64];
      sprintf(fn, "all_%d_%d_%d.txt", n, k, epi);
      FILE *f = fopen(fn, "w");
      for (auto &c : cs) fprintf(f, "%d %d %d %d %d %.5f\n", c.tile, c.cluster, c.custom, c.swz, c.heur, c.cold);
      fclose(f);
    }
    printf("  cold top 20 of the search:\n");
    for (int i = 0; i < (int)byc.size() && i < 20; i++) {
      char s[256];
      desc(*byc[i], s);
      printf("    cold %.4f ms %s\n", byc[i]->cold, s);
    }
    fflush(stdout);
    cublasLtMatmulPreferenceDestroy(pref);
  }
  return 0;
}
