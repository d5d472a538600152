/* simd_f32_avx2.c: the float32-lane kernels of simd_f32.h on AVX2+FMA,
 * eight floats a vector. Compiled with -mavx2 -mfma; runs only when
 * tut_simd_choice() found both on the CPU. */
#define F32_AVX512 0
#include "simd_f32.h"
