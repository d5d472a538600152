/* ce_kernels.h: the interface between cross_entropy.c (descriptor, plan,
 * block drivers) and the cross-entropy kernels:
 *
 *   ce_body.h, double lanes, any dtype: portably (ce_portable.c) and for
 *       AVX2 + FMA (ce_avx2.c);
 *   ce_body_f32.h, float lanes, float32 logits only: for AVX-512
 *       (ce_f32_avx512.c) and for AVX2 + FMA (ce_f32_avx2.c).
 *
 * create() picks one set for float64 logits and one for float32 logits, for
 * the life of the instance. Private to the family. */
#ifndef LOSSKIT_TORCH_CE_KERNELS_H
#define LOSSKIT_TORCH_CE_KERNELS_H

#include <stdint.h>

/* What a call's kernels share: constants of the instance and the plan. */
typedef struct ce_cfg {
    int64_t classes;    /* C */
    int32_t x_dtype;    /* LK_DTYPE_F32 or F64: logits, gradient and output */
    int32_t t_dtype;    /* I64 or I32 (indices), F32 or F64 (probabilities) */
    int32_t prob;       /* 1: probability targets */
    int32_t accumulate; /* backward: add into the gradient instead of storing */
    int32_t contiguous; /* 1 when S > 1 and C * S < 2^31: 32-bit gather offsets suffice */
    int64_t ignore_index;
    const double *w; /* C class weights, or NULL when every class weighs 1 */
    double eps;      /* label smoothing */
    double keep;     /* 1 - eps */
    double share;    /* eps / C */
    double wsum;     /* W, the sum of the class weights */
    double scale;    /* backward: the factor of every gradient */
    /* Scratch for packing short rows of many classes (S < CE_SHORT_ROWS and
     * C x lanes > CE_PACK): 4 x work_cap doubles, 64-byte aligned, work_cap
     * a multiple of 8 and at least C x lanes; NULL: such rows are read in
     * place. */
    double *work;
    int64_t work_cap;
    int64_t evec; /* kernels' own: vectors of exp values a chunk may keep */
} ce_cfg;

/* Rows shorter than this (S < CE_SHORT_ROWS) are walked across rows: a
 * segment then covers its whole block. */
#define CE_SHORT_ROWS 64

/* Elements of each stack buffer a kernel packs short rows into: C x lanes
 * must fit, else the caller provides cfg->work (see ce_cfg). */
#define CE_PACK 2048

/* A run of positions, in one of two forms:
 *
 *   s0 < 0: consecutive positions of one row n, read with fixed strides
 *       (ps = 1, cs = S); x, probability targets and g point at the first
 *       position, class 0.
 *   s0 >= 0: consecutive positions across rows of S < CE_SHORT_ROWS
 *       positions (S = 1 included); x, probability targets and g point at
 *       the start of the row of the first position, whose spatial index is
 *       s0; cs = S.
 *
 * Index targets and per-position outputs point at the first position:
 * they are consecutive in both forms. */
typedef struct ce_seg {
    const void *x; /* logits */
    const void *t; /* index targets, or probabilities laid out like x */
    void *g;       /* backward: the gradient, laid out like x */
    void *out;     /* forward: per-position losses (reduction none), or NULL */
    int64_t n;     /* positions */
    int64_t cs;    /* elements from one class to the next (S) */
    int64_t ps;    /* elements from one position to the next (1) */
    int64_t s0;    /* see above */
    int64_t S;     /* positions per row */
} ce_seg;

/* Forward accumulators: the lanes' sums of the loss in acc[0..15], of w_y
 * in acc[16..31] (as many as the kernels have lanes: 16, 8, 4 or 2; the
 * others stay 0); the block adds them pairwise in a fixed order at its end. */
#define CE_ACC 32

typedef struct ce_kernels {
    const char *name;
    int lanes; /* positions per vector */
    /* Adds the segment's losses and w_y into acc (and writes seg->out).
     * Returns nonzero when some index target is neither a class nor
     * ignore_index: the caller then finds it and fails the call. Such a
     * target is never used as an index. */
    int (*forward)(const ce_cfg *cfg, const ce_seg *seg, double acc[CE_ACC]);
    /* Writes (or adds) the segment's gradient. */
    void (*backward)(const ce_cfg *cfg, const ce_seg *seg);
} ce_kernels;

extern const ce_kernels torch_ce_portable;
#if TORCH_HAVE_AVX2
extern const ce_kernels torch_ce_avx2;
#endif
#if TORCH_HAVE_F32_AVX2
extern const ce_kernels torch_ce_f32_avx2;
#endif
#if TORCH_HAVE_F32_AVX512
extern const ce_kernels torch_ce_f32_avx512;
#endif

#endif /* LOSSKIT_TORCH_CE_KERNELS_H */
