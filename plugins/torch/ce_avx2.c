/* ce_avx2.c: the cross-entropy kernels on AVX2 + FMA (built with -mavx2
 * -mfma; only run when the CPU has both, see ce_create()). */
#define CE_AVX2 1
#include "ce_body.h"

const ce_kernels torch_ce_avx2 = {"avx2", CE_W, ce_forward_any, ce_backward_any};
