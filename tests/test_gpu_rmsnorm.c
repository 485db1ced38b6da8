/* CUDA rmsnorm vs the CPU reference op (bf16 tolerance). Skips, saying why, where no GPU is present. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "testutil.h"

static void test_rmsnorm_matches_cpu(void **state) {
  (void)state;
  if (qvl_cuda_device_count() == 0) skip();
  const int rows = 1037, dim = 1280;
  size_t n = (size_t)rows * dim;
  uint64_t rng = tu_seed();
  float *x = malloc(n * 4), *w = malloc(dim * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
  uint16_t *hx = malloc(n * 2), *hw = malloc(dim * 2), *hy = malloc(n * 2);
  tu_uniform(x, n, -3.f, 3.f, &rng);
  tu_uniform(w, dim, 0.5f, 1.5f, &rng);
  for (size_t i = 0; i < n; i++) x[i] = qvl_bf16_to_f32(hx[i] = qvl_f32_to_bf16(x[i]));
  for (int i = 0; i < dim; i++) w[i] = qvl_bf16_to_f32(hw[i] = qvl_f32_to_bf16(w[i]));
  assert_int_equal(cpu_rmsnorm(NULL, ref, x, w, rows, dim, 1e-6f), QVL_OK);
  void *dx, *dw, *dy;
  assert_int_equal(cudaMalloc(&dx, n * 2) | cudaMalloc(&dw, dim * 2) | cudaMalloc(&dy, n * 2), cudaSuccess);
  cudaMemcpy(dx, hx, n * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dw, hw, dim * 2, cudaMemcpyHostToDevice);
  cudaMemset(dy, 0xff, n * 2); /* poison: bf16 0xffff is NaN */
  assert_int_equal(cuda_rmsnorm(dy, dx, dw, rows, dim, 1e-6f, NULL), QVL_OK);
  assert_int_equal(cudaMemcpy(hy, dy, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < n; i++) got[i] = qvl_bf16_to_f32(hy[i]);
  double rel = tu_rel_l2(got, ref, n);
  printf("rmsnorm cuda vs cpu: rel_l2 %.3e max_abs %.3e\n", rel, tu_max_abs_diff(got, ref, n));
  assert_true(rel < 8e-3);
  cudaFree(dx), cudaFree(dw), cudaFree(dy);
  free(x), free(w), free(ref), free(got), free(hx), free(hw), free(hy);
}

int main(void) {
  if (qvl_cuda_device_count() == 0) printf("test_gpu_rmsnorm: no CUDA device here; the gpu tests skip\n");
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_rmsnorm_matches_cpu)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
