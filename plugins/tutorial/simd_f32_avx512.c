/* simd_f32_avx512.c: the float32-lane kernels of simd_f32.h on AVX-512,
 * sixteen floats a vector. Compiled with -mavx512f -mavx512dq (and AVX2,
 * FMA); runs only when tut_simd_choice() found them all on the CPU. */
#define F32_AVX512 1
#include "simd_f32.h"
