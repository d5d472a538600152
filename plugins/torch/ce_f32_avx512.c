/* ce_f32_avx512.c: the float32 cross-entropy kernels on AVX-512 (built with
 * -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma; only run when
 * the CPU has all four AVX-512 subsets, see cross_entropy.c). */
#define CE_AVX512 1
#include "ce_body_f32.h"

const ce_kernels torch_ce_f32_avx512 = {"f32-avx512", CE_W, ce_forward_f32, ce_backward_f32};
