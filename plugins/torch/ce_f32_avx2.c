/* ce_f32_avx2.c: the float32 cross-entropy kernels on AVX2 + FMA (built with
 * -mavx2 -mfma; only run when the CPU has both, see cross_entropy.c). */
#define CE_AVX512 0
#include "ce_body_f32.h"

const ce_kernels torch_ce_f32_avx2 = {"f32-avx2", CE_W, ce_forward_f32, ce_backward_f32};
