/* The float lanes' exp, log and log1p of one instruction set, for
 * test_vecmath.c: tests/meson.build compiles this file once per SIMD
 * variant with that variant's flags and VM_ISA set to its name, so each
 * copy holds the inline functions exactly as a plugin's kernels get them. */
#define LK_LANES_F32 1
#include <losskit/lanes.h>

#include <stdint.h>

#define VM_CAT2(a, b) a##_##b
#define VM_CAT(a, b)  VM_CAT2(a, b)
#define VM(name)      VM_CAT(name, VM_ISA)

#define VM_MAP(name, expr)                                                                         \
    void VM(name)(const float *in, float *out, int64_t n);                                         \
    void VM(name)(const float *in, float *out, int64_t n)                                          \
    {                                                                                              \
        for (int64_t i = 0; i < n; i += LK_W) {                                                    \
            int k = n - i < LK_W ? (int)(n - i) : LK_W;                                            \
            lk_v a = lk_loadn(in + i, k, 1.0f);                                                    \
            lk_storen(out + i, k, expr);                                                           \
        }                                                                                          \
    }

VM_MAP(vm_log, lk_log(a))
VM_MAP(vm_log1p, lk_log1p(a))
VM_MAP(vm_exp, lk_exp(a))
VM_MAP(vm_exp_minus_fast, lk_exp_minus_fast(a, 1.0))
VM_MAP(vm_exp_minus_fast2, lk_exp_minus_fast(a, 2.0))
