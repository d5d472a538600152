/* losskit/classes.h: the class-dimension driver, for softmax losses on
 * logits (N, C, d1, ...) with the C classes in dim 1 (or (C,): one
 * position). A position is one (n, spatial index): N x S positions, S the
 * product of the dims after 1; position p reads its C logits S apart from
 * (p / S) C S + p % S. Targets are per position class indices (int64, or
 * int32 where the loss accepts them; ignore_index marks positions that
 * count nowhere) or per-class float targets shaped like the input.
 *
 * Nothing here is ABI. The driver owns the plan (lk_classes_plan: shapes,
 * dtypes, n_positions = N S, block length, statistics), the loops, loads,
 * masks, stores, grad_scale and LK_BLOCK_GRAD_ACCUMULATE; a loss supplies
 * small always-inline pieces in an lk_cls_ops. A chunk of up to 64
 * positions is processed a vector of LK_W positions at a time:
 *
 *   1. m = max_c x_c (NaN ignored);
 *   2. z_c = x_c - m (0 where x_c == m, so that +inf maxima and rows of
 *      -inf give equal logits rather than NaN), e_c = lk_exp_neg(z_c),
 *      s = sum_c e_c in double; the hook fwd1 (bwd1 in backward) sees
 *      every (c, z_c, e_c, t_c);
 *   3. forward: lse = log s; fwd2, if the loss wants it, sees every class
 *      again, now with lse known; fwd_pos forms the position's loss
 *      (stored for reduction none) and adds the per-position statistics;
 *   3. backward: bwd_pos forms per-position factors (from s and what bwd1
 *      summed), then grad gives d loss / d x_c per class; the driver scales
 *      it, zeroes lanes that do not count, and stores or accumulates it.
 *      A FUSED loss (its mean's divisor a function of the targets:
 *      lk_cls_spec.target_norm) runs this in forward, after fwd_pos, on the
 *      same m, s and exps: one exp per class for value and gradient. With
 *      LK_CLS_POS_GRAD, fwd_pos leaves the per-position factors itself and
 *      the FUSED forward runs neither bwd1 nor bwd_pos.
 *
 * Steps 1 and 2, backward and a forward without class statistics run
 * position-major (one vector through every class, then the next), so that
 * a vector's m, s and per-position sums stay in registers; a forward with
 * class statistics runs fwd2 class-major, each class's sums over the chunk
 * in registers. The exps of step 2 are kept for the later passes. A
 * forward without class statistics whose chunk's exps fit (C LK_CLS_NV <=
 * LK_CLS_KEEP) runs step 2 for every vector of the chunk before step 3 of
 * any, so that the exps of the next vectors overlap the log, divisions and
 * stores of this one (the results are the same).
 *
 * Index targets reach the hooks as lanes: y (the class as a lane value, -1
 * where the position does not count) and, per class, hit = (y == c) and t =
 * hit ? 1 : 0, so one formula in t serves both kinds of target. Classes
 * are exact lane values up to 2^24 (float lanes), which the plan enforces.
 * Statistics are lk_acc double sums in a fixed order: n_pos per position
 * sums first, then n_cls per-class sums laid out stat-major (stat j of
 * class c at n_pos + j C + c). An index that is neither a class nor
 * ignore_index fails the call at the first such position (ops->bad_index
 * words the message); with LK_CLS_UNIT_TARGET a float target outside
 * [0, 1] does, the first by position, then class.
 *
 * Rows shorter than 2 LK_W (S = 1 for (N, C) inputs included) are read by
 * gathering each lane's logits across rows; longer ones in vectors within
 * a row. Float32 data on the portable variant runs in double lanes: the
 * family (LK_CLASSES_KERNELS) has no portable float-lane member, so the
 * reference path gives exactly the float64 upcast's results. */
#ifndef LOSSKIT_CLASSES_H
#define LOSSKIT_CLASSES_H

#include "losskit/loss.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Plan                                                                      */

/* plan->aux of a class loss; the loss may use aux[4 ..) */
enum { LK_CLS_AUX_C, LK_CLS_AUX_S, LK_CLS_AUX_KIND, LK_CLS_AUX_IGNORE };
enum { LK_CLS_INDEX = 0, LK_CLS_PROB = 1 }; /* target kinds */

#define LK_CLS_MAX_CLASSES ((int64_t)1 << 24) /* exact as float lanes */

/* The target's shape does not fit: the loss's own one-line message. want is
 * the shape expected for this kind of target. */
typedef lk_status (*lk_cls_mismatch_fn)(const lk_tensor *x, const lk_tensor *t, int index,
                                        const int64_t *want, int32_t want_ndim, lk_msg *msg);

/* The message of index target y at position pos. */
typedef lk_status (*lk_cls_bad_fn)(const void *inst, const lk_tensor *t, int64_t pos, int64_t y,
                                   int64_t C, lk_msg *msg);

typedef struct lk_cls_spec {
    const char *who;       /* names the loss in messages: "multiclass mode" */
    int allow_1d;          /* (C,) logits with a 0-d target */
    uint32_t index_dtypes; /* LK_DTYPE_BIT()s of accepted class indices */
    int64_t max_classes;   /* 0: LK_CLS_MAX_CLASSES */
    uint32_t n_pos, n_cls; /* statistics: per-position sums, per-class sums */
    int64_t ignore_index;
    lk_cls_mismatch_fn mismatch;
    /* target_norm: "mean" divides by a function of the targets alone, which
     * the plan computes into plan->mean_norm before any kernel runs: with
     * index targets the sum of norm_w[y] over the positions that count
     * (norm_w NULL: their count), with float targets the position count.
     * The loss may then be FUSED (value and gradient in one pass: forward
     * writes the gradient, see lk_classes_forward). A bad index fails the
     * plan, through bad_index (called with inst), so that no gradient is
     * half written. */
    int target_norm;
    const double *norm_w;
    const void *inst;
    lk_cls_bad_fn bad_index;
    const lk_host *host; /* NULL: the pre-pass on the planning thread */
} lk_cls_spec;

/* Positions per block: about 2^18 logits, 64 to LK_BLOCK_POSITIONS, a
 * multiple of 64 (a function of the shape only). */
static inline int64_t lk_classes_block(int64_t classes)
{
    int64_t n = ((int64_t)1 << 18) / classes;
    n = n < 64 ? 64 : n > LK_BLOCK_POSITIONS ? LK_BLOCK_POSITIONS : n;
    return n & ~(int64_t)63;
}

static inline lk_status lk__cls_input(const lk_cls_spec *sp, const lk_tensor *x, lk_msg *msg)
{
    char sh[192];
    int64_t most = sp->max_classes ? sp->max_classes : LK_CLS_MAX_CLASSES;
    if (x->ndim < 1 && sp->allow_1d)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: expected logits (C,) or (N, C, d1, ...), got a scalar");
    if (x->ndim < 2 && !sp->allow_1d) {
        lk_shape_str(sh, sizeof sh, x->ndim, x->shape);
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: shape %s; %s needs (N, C, ...) logits, the classes in dim 1", sh,
                       sp->who);
    }
    int32_t cd = x->ndim == 1 ? 0 : 1;
    if (x->shape[cd] < 1)
        return lk_fail(msg, LK_ERR_SHAPE, "input: the class dimension (dim %d) is empty", (int)cd);
    if (x->shape[cd] > most)
        return lk_fail(msg, LK_ERR_SHAPE, "input: %lld classes in dim %d; %s takes 1 to %lld",
                       (long long)x->shape[cd], (int)cd, sp->who, (long long)most);
    return LK_OK;
}

/* Over n index targets: a, those in [0, uc), and e, those equal to ign;
 * two sums of compares, which the compiler vectorizes (the count decides
 * whether a position counts and whether one is bad, see lk__cls_norm).
 * On x86-64 an AVX2 copy runs where the CPU has it: the plan is compiled
 * for the baseline, whose 64-bit compares are scalar, and this loop would
 * then cost a third of the fused pass. */
#define LK__CLS_COUNT_BODY                                                                         \
    for (int64_t i = 0; i < n; i++) {                                                              \
        int64_t y = i32 ? (int64_t)y32[i] : y64[i];                                                \
        a += (uint64_t)y < uc;                                                                     \
        e += y == ign;                                                                             \
    }
static inline void lk__cls_count_base(const int64_t *y64, const int32_t *y32, int i32, int64_t n,
                                      uint64_t uc, int64_t ign, int64_t *pa, int64_t *pe)
{
    int64_t a = 0, e = 0;
    LK__CLS_COUNT_BODY
    *pa = a, *pe = e;
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static inline void
lk__cls_count_avx2(const int64_t *y64, const int32_t *y32, int i32, int64_t n, uint64_t uc,
                   int64_t ign, int64_t *pa, int64_t *pe)
{
    int64_t a = 0, e = 0;
    if (i32) {
        LK__CLS_COUNT_BODY
    } else {
        i32 = 0;
        LK__CLS_COUNT_BODY
    }
    *pa = a, *pe = e;
}
#endif
static inline void lk__cls_count(const int64_t *y64, const int32_t *y32, int i32, int64_t n,
                                 uint64_t uc, int64_t ign, int64_t *pa, int64_t *pe)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2")) {
        lk__cls_count_avx2(y64, y32, i32, n, uc, ign, pa, pe);
        return;
    }
#endif
    lk__cls_count_base(y64, y32, i32, n, uc, ign, pa, pe);
}
#undef LK__CLS_COUNT_BODY

/* The pre-pass of target_norm over index targets [i0, i1): the divisor's
 * part, and whether some target is neither a class nor ignore_index. The
 * count is exact; weights are summed in 8 interleaved double sums (a
 * single chain would be latency-bound), added in a fixed order. */
static inline void lk__cls_norm_part(const lk_cls_spec *sp, const lk_tensor *t, int64_t i0,
                                     int64_t i1, int64_t C, double *norm, int *bad)
{
    const int i32 = t->dtype == LK_DTYPE_I32;
    const int64_t *y64 = (const int64_t *)t->data + (i32 ? 0 : i0);
    const int32_t *y32 = (const int32_t *)t->data + (i32 ? i0 : 0);
    const int64_t ign = sp->ignore_index, n = i1 - i0;
    const uint64_t uc = (uint64_t)C;
    if (!sp->norm_w) {
        int64_t in = 0, eq = 0;
        lk__cls_count(y64, y32, i32, n, uc, ign, &in, &eq);
        int ign_in = (uint64_t)ign < uc; /* then the ignored are among the classes */
        *norm = (double)(ign_in ? in - eq : in);
        *bad = (ign_in ? n - in : n - in - eq) != 0;
        return;
    }
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t b = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t y = i32 ? y32[i] : y64[i];
        int64_t ok = ((uint64_t)y < uc) & (y != ign);
        part[i & 7] += ok ? sp->norm_w[y] : 0.0;
        b |= !ok & (y != ign);
    }
    *norm = ((part[0] + part[1]) + (part[2] + part[3])) +
            ((part[4] + part[5]) + (part[6] + part[7]));
    *bad = b != 0;
}

/* The pre-pass runs in pieces of a fixed length, on the host's threads
 * where the spec gives a host; their parts are added in piece order, so the
 * divisor depends on the data only, never on the thread count. */
#define LK__CLS_NORM_PIECE ((int64_t)1 << 18)

typedef struct lk__cls_norm_job {
    const lk_cls_spec *sp;
    const lk_tensor *t;
    int64_t n, C;
    double *part;
    int *bad;
} lk__cls_norm_job;

static inline lk_status lk__cls_norm_range(void *arg, int64_t k0, int64_t k1)
{
    const lk__cls_norm_job *j = (const lk__cls_norm_job *)arg;
    for (int64_t k = k0; k < k1; k++) {
        int64_t i0 = k * LK__CLS_NORM_PIECE;
        int64_t i1 = j->n - i0 < LK__CLS_NORM_PIECE ? j->n : i0 + LK__CLS_NORM_PIECE;
        lk__cls_norm_part(j->sp, j->t, i0, i1, j->C, &j->part[k], &j->bad[k]);
    }
    return LK_OK;
}

static inline lk_status lk__cls_norm(const lk_cls_spec *sp, const lk_tensor *t, int64_t n,
                                     int64_t C, double *norm, lk_msg *msg)
{
    int64_t pieces = (n + LK__CLS_NORM_PIECE - 1) / LK__CLS_NORM_PIECE, bad = 0;
    double one_part = 0.0;
    int one_bad = 0;
    lk__cls_norm_job j = {sp, t, n, C, &one_part, &one_bad};
    if (pieces > 1) {
        j.part = (double *)malloc((size_t)pieces * (sizeof(double) + sizeof(int)));
        if (!j.part)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for the targets' %lld pieces",
                           (long long)pieces);
        j.bad = (int *)(j.part + pieces);
    }
    lk_status st = sp->host && sp->host->parallel_for && pieces > 1
                       ? sp->host->parallel_for(sp->host->ctx, pieces, 1, lk__cls_norm_range, &j)
                       : lk__cls_norm_range(&j, 0, pieces);
    double sum = 0.0;
    for (int64_t k = 0; st == LK_OK && k < pieces; k++) {
        sum += j.part[k];
        bad |= j.bad[k];
    }
    if (j.part != &one_part)
        free(j.part);
    if (st != LK_OK)
        return lk_fail(msg, st, "the targets' pre-pass failed");
    *norm = sum;
    const int i32 = t->dtype == LK_DTYPE_I32;
    for (int64_t i = 0; bad && i < n; i++) {
        int64_t y = i32 ? ((const int32_t *)t->data)[i] : ((const int64_t *)t->data)[i];
        if (y != sp->ignore_index && (y < 0 || y >= C))
            return sp->bad_index(sp->inst, t, i, y, C, msg);
    }
    return LK_OK;
}

/* With sp->target_norm, the divisor of "mean" into plan->mean_norm (after
 * the rest of the plan: a loss whose own checks must come first, e.g. that
 * norm_w has C values, plans with target_norm 0 and calls this after). */
static inline lk_status lk_classes_target_norm(const lk_cls_spec *sp, const lk_tensor *slots,
                                               lk_plan *plan, lk_msg *msg)
{
    if (plan->aux[LK_CLS_AUX_KIND] != LK_CLS_INDEX || !slots[1].data)
        return LK_OK; /* float targets: the position count, already there */
    return lk__cls_norm(sp, &slots[1], plan->n_positions, plan->aux[LK_CLS_AUX_C],
                        &plan->mean_norm, msg);
}

/* Checks input and target and fills the plan. */
static inline lk_status lk_classes_plan(const lk_cls_spec *sp, const lk_tensor *slots,
                                        lk_plan *plan, lk_msg *msg)
{
    const lk_tensor *x = &slots[0], *t = &slots[1];
    lk_status st = lk__cls_input(sp, x, msg);
    if (st != LK_OK)
        return st;
    int index = (LK_DTYPE_BIT(t->dtype) & sp->index_dtypes) != 0;
    if (!index && t->dtype != LK_DTYPE_F32 && t->dtype != LK_DTYPE_F64)
        return lk_fail(msg, LK_ERR_DTYPE,
                       "target: dtype %s; %s takes %s class indices or float per-class targets",
                       lk_sdk_dtype_name(t->dtype), sp->who,
                       (sp->index_dtypes & LK_DTYPE_BIT(LK_DTYPE_I32)) ? "int64 or int32"
                                                                       : "int64");
    int32_t cd = x->ndim == 1 ? 0 : 1, wn = 0;
    int64_t want[LK_MAX_NDIM], S = 1;
    for (int32_t d = 0; d < x->ndim; d++)
        if (!index || d != cd)
            want[wn++] = x->shape[d];
    int fits = t->ndim == wn;
    for (int32_t d = 0; fits && d < wn; d++)
        fits = t->shape[d] == want[d];
    if (!fits)
        return sp->mismatch(x, t, index, want, wn, msg);
    for (int32_t d = 2; d < x->ndim; d++)
        S *= x->shape[d];
    plan->n_positions = (x->ndim == 1 ? 1 : x->shape[0]) * S;
    plan->block_positions = lk_classes_block(x->shape[cd]);
    plan->n_stats = sp->n_pos + sp->n_cls * (uint32_t)x->shape[cd];
    plan->out_ndim = x->ndim - 1;
    for (int32_t d = 0, k = 0; d < x->ndim; d++)
        if (d != cd)
            plan->out_shape[k++] = x->shape[d];
    plan->mean_norm = (double)plan->n_positions;
    plan->aux[LK_CLS_AUX_C] = x->shape[cd];
    plan->aux[LK_CLS_AUX_S] = S;
    plan->aux[LK_CLS_AUX_KIND] = index ? LK_CLS_INDEX : LK_CLS_PROB;
    plan->aux[LK_CLS_AUX_IGNORE] = sp->ignore_index;
    return sp->target_norm ? lk_classes_target_norm(sp, slots, plan, msg) : LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Double lanes beside the lanes: lk_w                                       */

/* Sums over classes, and the per-position values formed from them, are
 * kept in double: in float lanes an lk_w is the two halves widened. */
#if defined(LK_LANES_F32)
typedef struct lk_w {
    lk_dv lo, hi;
} lk_w;

LK_AI lk_w lk_w_of(lk_v a)
{
    lk_w r = {lk_f_lo(a), lk_f_hi(a)};
    return r;
}

LK_AI lk_w lk_w_set(double a)
{
    lk_w r = {lk_d_set(a), lk_d_set(a)};
    return r;
}

LK_AI lk_w lk_w_load(const double *p)
{
    lk_w r = {lk_d_load(p), LK_FW > 1 ? lk_d_load(p + LK_DW) : lk_d_zero()};
    return r;
}

#define LK__W2(op)                                                                                 \
    LK_AI lk_w lk_w_##op(lk_w a, lk_w b)                                                           \
    {                                                                                              \
        lk_w r = {lk_d_##op(a.lo, b.lo), lk_d_##op(a.hi, b.hi)};                                   \
        return r;                                                                                  \
    }
LK__W2(add)
LK__W2(sub)
LK__W2(mul)
LK__W2(div)

/* Rounded to the lanes' floats; lanes.h has no narrowing, and this runs
 * per class in some losses, so it is one instruction pair per target. */
LK_AI lk_v lk_w_narrow(lk_w a)
{
#if defined(LK_TARGET_AVX512)
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(a.lo)), _mm512_cvtpd_ps(a.hi),
                              1);
#elif defined(LK_TARGET_AVX2)
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(a.lo)),
                                _mm256_cvtpd_ps(a.hi), 1);
#else
    return (float)a.lo;
#endif
}

/* m ? a : b per lane. On AVX-512 the mask's halves are the double lanes'
 * masks; elsewhere the mask is widened through the lanes (1 where set). */
LK_AI lk_w lk_w_select(lk_m m, lk_w a, lk_w b)
{
#if defined(LK_TARGET_AVX512)
    lk_w r = {_mm512_mask_blend_pd((__mmask8)m, b.lo, a.lo),
              _mm512_mask_blend_pd((__mmask8)(m >> 8), b.hi, a.hi)};
#else
    lk_w one = lk_w_of(lk_keep(m, lk_set(1.0)));
    lk_w r = {lk_d_select(lk_d_eq(one.lo, lk_d_set(1.0)), a.lo, b.lo),
              lk_d_select(lk_d_eq(one.hi, lk_d_set(1.0)), a.hi, b.hi)};
#endif
    return r;
}

LK_AI lk_w lk_w_keep(lk_m m, lk_w a)
{
    return lk_w_select(m, a, lk_w_set(0.0));
}

/* a b + c, rounded once */
LK_AI lk_w lk_w_fma(lk_w a, lk_w b, lk_w c)
{
    lk_w r = {lk_d_fma(a.lo, b.lo, c.lo), lk_d_fma(a.hi, b.hi, c.hi)};
    return r;
}

/* c a, 0 where c is 0 even if a is infinite (lk_mul0). */
LK_AI lk_w lk_w_mul0(lk_w c, lk_w a)
{
    lk_w r = {lk_d_clear(lk_d_eq(c.lo, lk_d_zero()), lk_d_mul(c.lo, a.lo)),
              lk_d_clear(lk_d_eq(c.hi, lk_d_zero()), lk_d_mul(c.hi, a.hi))};
    return r;
}

LK_AI void lk_acc_addw(lk_acc *s, lk_w a)
{
    s->lo = lk_d_add(s->lo, a.lo);
    s->hi = lk_d_add(s->hi, a.hi);
}
#else
typedef lk_v lk_w;
#define lk_w_of(a)     (a)
#define lk_w_set       lk_set
#define lk_w_load      lk_load
#define lk_w_add       lk_add
#define lk_w_sub       lk_sub
#define lk_w_mul       lk_mul
#define lk_w_div       lk_div
#define lk_w_narrow(a) (a)
#define lk_w_keep      lk_keep
#define lk_w_select    lk_select
#define lk_w_fma       lk_fma
#define lk_w_mul0      lk_mul0
#define lk_acc_addw    lk_acc_add
#endif

/* ------------------------------------------------------------------------ */
/* What the hooks see                                                        */

/* The call: tensors and shape. */
typedef struct lk_cls_io {
    const void *x, *t;
    void *g, *out;
    const double *tab; /* backward: ops->n_tab doubles per class, from ops->prep */
    int64_t C, S, ignore;
    int xf, tf, t32, index; /* x, float t float32; index t int32; index targets */
} lk_cls_io;

/* One vector of positions. The driver fills m, s, lse and r (forward), y
 * and valid, and zeroes a, b, u, which are the loss's. */
typedef struct lk_cls_pos {
    lk_v m;     /* max_c x_c */
    lk_w s;     /* sum_c exp(x_c - m) */
    lk_v lse;   /* log s (forward, with LK_CLS_LSE) */
    lk_v r;     /* 1 / s in the lanes' precision (forward) */
    lk_v y;     /* index targets: the class, -1 where the position does not count */
    lk_m valid; /* positions that count: live, and for index targets a class */
    lk_v a, b;
    lk_w u;
    int k; /* live lanes */
} lk_cls_pos;

/* One class of one vector. */
typedef struct lk_cls_el {
    lk_v z;   /* x_c - m, 0 where x_c == m */
    lk_v e;   /* exp(z) (fwd2: only with LK_CLS_FWD_EXP) */
    lk_v t;   /* t_c; index targets: 1 where y == c, else 0 */
    lk_m hit; /* index targets: y == c */
} lk_cls_el;

/* A class statistic of a chunk, as a hook adds to it: double lanes (a),
 * a count (n) for sums of 0 / 1 terms such as the T_c of index targets,
 * exact as an integer and cheaper than widening the terms (lk_cls_count),
 * and lanes (f) for terms that are all >= 0 (or NaN, or +inf): the driver
 * widens f into the double sum every four vectors, so that float lanes
 * widen once per four vectors instead of once per vector, the rule of
 * LK_EW_NONNEG_SUM (loss.h: no term can cancel another, the sum's relative
 * error grows by at most 3 2^-24). A hook must not give f terms that may
 * overflow a group of four: the class driver has no second pass. */
typedef struct lk_cls_acc {
    lk_acc a;
    int64_t n;
    lk_v f;
} lk_cls_acc;

/* A class pass: may update p->a, b, u and, in fwd2, add to ca[0 .. n_cls)
 * (class c's statistics; NULL in fwd1 and bwd1, which run position-major). */
typedef void (*lk_cls_class_fn)(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                                const lk_cls_el *el, lk_cls_acc *ca);
/* Forward: the position's loss (0 where it does not count), after adding
 * the per-position statistics to pa[0 .. n_pos). Backward (pa NULL): the
 * per-position factors of grad, into p->a, b, u. */
typedef lk_w (*lk_cls_pos_fn)(const void *inst, const lk_cls_io *io, lk_cls_pos *p, lk_acc *pa);
/* d loss / d x_c before grad_scale; the driver zeroes lanes that do not
 * count. */
typedef lk_v (*lk_cls_grad_fn)(const void *inst, const lk_cls_io *io, const lk_cls_pos *p,
                               int64_t c, const lk_cls_el *el);
/* Backward, once per block: fills tab (n_tab C doubles) from blk->global
 * and returns the gradient's scale (grad_scale and any divisor). In a
 * FUSED forward blk->global is NULL and grad_scale has the divisor folded
 * in already: then it returns grad_scale. */
typedef double (*lk_cls_prep_fn)(const void *inst, const lk_plan *plan, const lk_block *blk,
                                 double *tab);
/* Whether forward needs its second class pass for this call. */
typedef int (*lk_cls_when_fn)(const void *inst, const lk_cls_io *io);

#define LK_CLS_UNIT_TARGET 0x1u /* float targets outside [0, 1] fail (NaN passes) */
#define LK_CLS_FWD_EXP     0x2u /* fwd2 needs e_c */
#define LK_CLS_LSE         0x4u /* forward needs lse (a call per vector: only if used) */
/* FUSED: when the call writes a gradient (io->g), fwd_pos also leaves in
 * p->a, b, u what bwd1 and bwd_pos would (the per-position terms formed
 * once, for value and gradient); the forward then runs neither. */
#define LK_CLS_POS_GRAD 0x8u

#define LK_CLS_MAX_POS 4 /* per-position statistics at most */

typedef struct lk_cls_ops {
    uint32_t flags;
    uint32_t n_pos, n_cls, n_tab;
    lk_cls_class_fn fwd1, fwd2, bwd1; /* NULL: no such pass */
    lk_cls_when_fn want2;             /* NULL: fwd2 always runs */
    lk_cls_pos_fn fwd_pos, bwd_pos;   /* NULL: nothing per position */
    lk_cls_grad_fn grad;
    lk_cls_prep_fn prep; /* NULL: grad_scale, no table */
    lk_cls_bad_fn bad_index;
} lk_cls_ops;

/* Per-class values of a double table at the lanes' classes y (0 where y <
 * 0), e.g. the weight of each position's target class. */
LK_AI lk_w lk_cls_lookup(const double *tab, lk_v y)
{
    lk_s yb[LK_W];
    double d[LK_W];
    lk_store(yb, y);
    for (int l = 0; l < LK_W; l++)
        d[l] = yb[l] >= 0 ? tab[(int64_t)yb[l]] : 0.0;
    return lk_w_load(d);
}

/* ------------------------------------------------------------------------ */
/* Chunks                                                                    */

#define LK_CLS_CHUNK 64                          /* positions per chunk at most */
#define LK_CLS_NV    (LK_CLS_CHUNK / LK_W)       /* vectors per chunk at most */
#define LK_CLS_KEEP  (32768 / (int)sizeof(lk_v)) /* exps a chunk may keep */

typedef struct lk_cls_chunk {
    int64_t pos;        /* first position */
    int64_t xo;         /* within a row: element offset of its class 0 */
    const int64_t *off; /* across rows: each position's class-0 offset */
    int n, nv;          /* positions, vectors */
} lk_cls_chunk;

LK_AI int lk__cls_k(const lk_cls_chunk *ch, int v)
{
    int r = ch->n - v * LK_W;
    return r < LK_W ? r : LK_W;
}

/* Class-c lanes (cS = c S) of vector v of an input-shaped tensor; lanes
 * past the live ones read pad. G: gather across rows. */
LK_AI lk_v lk__cls_ld(const void *p, int f32, const lk_cls_chunk *ch, int64_t cS, int v, double pad,
                      const int G)
{
    int k = lk__cls_k(ch, v);
    if (!G)
        return lk__ld(p, f32, ch->xo + cS + (int64_t)v * LK_W, k, pad);
    if (k == 1) /* one position, as a (C,) input: broadcast it; no lane but the first counts */
        return lk_set(lk__get(p, f32, ch->off[v * LK_W] + cS));
    lk_s b[LK_W];
    lk_store(b, lk_set(pad)); /* then only the live lanes, one by one */
    for (int l = 0; l < k; l++)
        b[l] = (lk_s)lk__get(p, f32, ch->off[v * LK_W + l] + cS);
    return lk_load(b);
}

/* Writes (or adds) the scaled gradient g of class c, vector v: lanes that
 * do not count get 0 (after the scale, so that an infinite scale leaves
 * them 0). */
LK_AI void lk__cls_put(const lk_cls_io *io, const lk_cls_chunk *ch, const lk_cls_pos *p, int64_t cS,
                       int v, lk_v g, lk_v scale, int acc, int stream, const int G)
{
    g = lk_keep(p->valid, lk_mul(scale, g));
    if (!G) {
        int64_t i = ch->xo + cS + (int64_t)v * LK_W;
        lk_s *at = (lk_s *)io->g + i;
        if (stream && p->k == LK_W && (uintptr_t)at % sizeof(lk_v) == 0) {
            lk_stream(at, g); /* see lk__can_stream in loss.h */
            return;
        }
        if (acc)
            g = lk_add(lk__ld(io->g, io->xf, i, p->k, 0.0), g);
        lk__st(io->g, io->xf, i, p->k, g);
        return;
    }
    lk_s b[LK_W];
    lk_store(b, g);
    for (int l = 0; l < p->k; l++) {
        int64_t i = ch->off[v * LK_W + l] + cS;
        lk_s val = acc ? (lk_s)(lk__get(io->g, io->xf, i) + (double)b[l]) : b[l];
        if (io->xf)
            ((float *)io->g)[i] = (float)val;
        else
            ((double *)io->g)[i] = (double)val;
    }
}

/* Index targets of a full vector as lanes on the SIMD targets: per int64
 * lane, valid (a class in [0, C), not ign) and bad (neither a class nor
 * ign); a valid class is below 2^24, so its low 32 bits are the class. The
 * scalar form below does the same one lane at a time, and costs more than
 * the rest of a chunk's backward; lanes.h has no integer lanes. */
#if defined(LK_TARGET_AVX512)
LK_AI __mmask8 lk__y8(__m512i y, int64_t C, int64_t ign, int *bad)
{
    __mmask8 in = (__mmask8)(_mm512_cmpge_epi64_mask(y, _mm512_setzero_si512()) &
                             _mm512_cmplt_epi64_mask(y, _mm512_set1_epi64(C)));
    __mmask8 eq = _mm512_cmpeq_epi64_mask(y, _mm512_set1_epi64(ign));
    *bad |= (__mmask8) ~(in | eq) != 0;
    return (__mmask8)(in & ~eq);
}

LK_AI __m512i lk__y_at(const lk_cls_io *io, int64_t j)
{
    if (io->t32)
        return _mm512_cvtepi32_epi64(
            _mm256_loadu_si256((const __m256i *)((const int32_t *)io->t + j)));
    return _mm512_loadu_si512((const int64_t *)io->t + j);
}

LK_AI lk_v lk__cls_yfull(const lk_cls_io *io, int64_t p0, int *bad)
{
    __m512i y0 = lk__y_at(io, p0);
    __mmask8 v0 = lk__y8(y0, io->C, io->ignore, bad);
#if defined(LK_LANES_F32)
    __m512i y1 = lk__y_at(io, p0 + 8);
    __mmask8 v1 = lk__y8(y1, io->C, io->ignore, bad);
    __m512 f = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtepi64_ps(y0)),
                                  _mm512_cvtepi64_ps(y1), 1);
    return _mm512_mask_blend_ps((__mmask16)(v0 | (v1 << 8)), _mm512_set1_ps(-1.0f), f);
#else
    return _mm512_mask_blend_pd(v0, _mm512_set1_pd(-1.0), _mm512_cvtepi64_pd(y0));
#endif
}
#elif defined(LK_TARGET_AVX2)
/* The low 32 bits of each int64 lane, in the low half. */
LK_AI __m128i lk__lo32(__m256i a)
{
    return _mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(a, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)));
}

LK_AI __m256i lk__y4(__m256i y, int64_t C, int64_t ign, int *bad)
{
    __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_setzero_si256(), y),
                                     _mm256_cmpgt_epi64(_mm256_set1_epi64x(C), y));
    __m256i eq = _mm256_cmpeq_epi64(y, _mm256_set1_epi64x(ign));
    *bad |= _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_or_si256(in, eq))) != 0xF;
    return _mm256_andnot_si256(eq, in);
}

LK_AI __m256i lk__y_at(const lk_cls_io *io, int64_t j)
{
    if (io->t32)
        return _mm256_cvtepi32_epi64(
            _mm_loadu_si128((const __m128i *)((const int32_t *)io->t + j)));
    return _mm256_loadu_si256((const __m256i *)((const int64_t *)io->t + j));
}

LK_AI lk_v lk__cls_yfull(const lk_cls_io *io, int64_t p0, int *bad)
{
    __m256i y0 = lk__y_at(io, p0);
    __m256i v0 = lk__y4(y0, io->C, io->ignore, bad);
#if defined(LK_LANES_F32)
    __m256i y1 = lk__y_at(io, p0 + 4);
    __m256i v1 = lk__y4(y1, io->C, io->ignore, bad);
    __m256i y = _mm256_set_m128i(lk__lo32(y1), lk__lo32(y0));
    __m256i v = _mm256_set_m128i(lk__lo32(v1), lk__lo32(v0));
    return _mm256_blendv_ps(_mm256_set1_ps(-1.0f), _mm256_cvtepi32_ps(y), _mm256_castsi256_ps(v));
#else
    return _mm256_blendv_pd(_mm256_set1_pd(-1.0), _mm256_cvtepi32_pd(lk__lo32(y0)),
                            _mm256_castsi256_pd(v0));
#endif
}
#endif

/* Index targets of vector v as lanes: the class, -1 where not one; *bad
 * when some live lane is neither a class nor ignore_index. */
LK_AI lk_v lk__cls_y(const lk_cls_io *io, int64_t p0, int k, int *bad)
{
    *bad = 0;
#if defined(LK_TARGET_AVX512) || defined(LK_TARGET_AVX2)
    if (k == LK_W)
        return lk__cls_yfull(io, p0, bad);
#endif
    lk_s b[LK_W];
    for (int l = 0; l < LK_W; l++) {
        int64_t y = l >= k    ? io->ignore
                    : io->t32 ? (int64_t)((const int32_t *)io->t)[p0 + l]
                              : ((const int64_t *)io->t)[p0 + l];
        int cls = y >= 0 && y < io->C && y != io->ignore;
        *bad |= !cls && y != io->ignore;
        b[l] = cls ? (lk_s)y : (lk_s)-1;
    }
    return lk_load(b);
}

/* Opens the chunk's vectors: lanes, targets, zeroed sums. Returns the
 * first vector with a bad index target, or -1. */
LK_AI int lk__cls_open(const lk_cls_io *io, const lk_cls_chunk *ch, lk_cls_pos *P)
{
    int first_bad = -1;
    for (int v = 0; v < ch->nv; v++) {
        lk_cls_pos *p = &P[v];
        p->k = lk__cls_k(ch, v);
        p->m = lk_set(-HUGE_VAL);
        p->s = lk_w_set(0.0);
        p->lse = p->r = p->a = p->b = lk_zero();
        p->u = lk_w_set(0.0);
        p->y = lk_set(-1.0);
        p->valid = lk_first(p->k);
        if (io->index) {
            int bad;
            p->y = lk__cls_y(io, ch->pos + (int64_t)v * LK_W, p->k, &bad);
            p->valid = lk_ge(p->y, lk_zero());
            if (bad && first_bad < 0)
                first_bad = v;
        }
    }
    return first_bad;
}

LK_AI void lk__cls_max(const lk_cls_io *io, const lk_cls_chunk *ch, lk_cls_pos *P, const int G)
{
    for (int64_t c = 0; c < io->C; c++)
        for (int v = 0; v < ch->nv; v++)
            P[v].m = lk_max(lk__cls_ld(io->x, io->xf, ch, c * io->S, v, 0.0, G), P[v].m);
}

/* z_c, and the target, of class c (cv: c as lanes) in vector v. */
LK_AI lk_cls_el lk__cls_el(const lk_cls_io *io, const lk_cls_chunk *ch, const lk_cls_pos *p,
                           int64_t c, lk_v cv, int v, const int G)
{
    lk_cls_el el;
    lk_v x = lk__cls_ld(io->x, io->xf, ch, c * io->S, v, 0.0, G);
    el.z = lk_clear(lk_eq(x, p->m), lk_sub(x, p->m));
    el.e = lk_zero();
    if (io->index) {
        el.hit = lk_eq(p->y, cv);
        el.t = lk_keep(el.hit, lk_set(1.0));
    } else {
        el.hit = lk_first(0);
        el.t = lk__cls_ld(io->t, io->tf, ch, c * io->S, v, 0.0, G);
    }
    return el;
}

/* n added to a double sum exactly, in its lane 0: a count of lanes
 * (lk_cls_count) joining the sum it stands for. */
LK_AI void lk_acc_add_count(lk_acc *a, int64_t n)
{
    a->lo = lk_d_add(a->lo, lk_d_keep(lk_d_first(1), lk_d_set((double)n)));
}

/* The live lanes of m, for sums of 0 / 1 terms kept as exact counts. */
LK_AI int lk_cls_count(lk_m m)
{
#if defined(LK_TARGET_AVX512)
    return __builtin_popcount((unsigned)m);
#elif defined(LK_TARGET_AVX2) && defined(LK_LANES_F32)
    return __builtin_popcount((unsigned)_mm256_movemask_ps(m));
#elif defined(LK_TARGET_AVX2)
    return __builtin_popcount((unsigned)_mm256_movemask_pd(m));
#else
    return m != 0;
#endif
}

/* One vector's softmax pass, the classes inner: m = max_c x_c, then per
 * class z_c, e_c (into Ev[c es] unless Ev is NULL), s += e_c, the target
 * check into *bad (unless NULL) and hook (NULL: none; no class
 * statistics). Position-major, so that m, s and what the hook sums stay in
 * registers: with the vectors inner, every per-position sum would be
 * stored and reloaded once per class. exp is inline on the SIMD targets
 * (lk_exp_neg), so nothing spills around a call. */
LK_AI void lk__cls_soft(const void *inst, const lk_cls_io *io, const lk_cls_chunk *ch,
                        lk_cls_pos *p, int v, lk_v *Ev, int es, lk_cls_class_fn hook, lk_m *bad,
                        const int G)
{
    for (int64_t c = 0; c < io->C; c++)
        p->m = lk_max(lk__cls_ld(io->x, io->xf, ch, c * io->S, v, 0.0, G), p->m);
    lk_v cv = lk_zero();
    for (int64_t c = 0; c < io->C; c++, cv = lk_add(cv, lk_set(1.0))) {
        lk_cls_el el = lk__cls_el(io, ch, p, c, cv, v, G);
        el.e = lk_exp_neg(el.z);
        if (Ev)
            Ev[c * es] = el.e;
        p->s = lk_w_add(p->s, lk_w_of(el.e));
        if (bad)
            *bad = lk_or(*bad, lk_and(p->valid, lk_outside01(el.t)));
        if (hook)
            hook(inst, io, p, c, &el, NULL);
    }
}

/* log s of a softmax sum: s in [1, C] (the max's term is 1), or NaN. As
 * 2^k u with u in [1, 2): log s = k log 2 + log u, inline on the SIMD
 * targets (lk_log is a library call there, and everything live around it
 * would spill); log 2 split as in lk_log_1to2, k log2_hi exact. */
LK_AI lk_v lk__cls_log_sum(lk_v s)
{
#if defined(LK_TARGET_AVX512) && defined(LK_LANES_F32)
    lk_v k = _mm512_getexp_ps(s), u = _mm512_getmant_ps(s, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
    const double hi = 0.693359375, lo = -2.12194440e-4;
#elif defined(LK_TARGET_AVX512)
    lk_v k = _mm512_getexp_pd(s), u = _mm512_getmant_pd(s, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
    const double hi = 6.93147180369123816490e-01, lo = 1.90821492927058770002e-10;
#elif defined(LK_TARGET_AVX2) && defined(LK_LANES_F32)
    __m256i bits = _mm256_castps_si256(s);
    lk_v k =
        _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
    lk_v u = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
    const double hi = 0.693359375, lo = -2.12194440e-4;
#elif defined(LK_TARGET_AVX2)
    /* the exponent field as a double: or-ed into the mantissa of 2^52 */
    __m256i bits = _mm256_castpd_si256(s);
    __m256i two52 = _mm256_castpd_si256(_mm256_set1_pd(4503599627370496.0));
    lk_v k = lk_sub(_mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(bits, 52), two52)),
                    lk_set(4503599627370496.0 + 1023.0));
    lk_v u = _mm256_castsi256_pd(
        _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFF)),
                        _mm256_set1_epi64x(0x3FF0000000000000)));
    const double hi = 6.93147180369123816490e-01, lo = 1.90821492927058770002e-10;
#else
    return lk_log(s);
#endif
#if !defined(LK_TARGET_PORTABLE)
    lk_v r = lk_fma(k, lk_set(hi), lk_fma(k, lk_set(lo), lk_log_1to2(u)));
    return lk_select(lk_isnan(s), s, r); /* the bit forms lose NaN */
#endif
}

/* r = 1 / s and, with LK_CLS_LSE, lse = log s. */
LK_AI void lk__cls_recip(const lk_cls_ops *ops, lk_cls_pos *p)
{
    lk_v s = lk_w_narrow(p->s);
    if (ops->flags & LK_CLS_LSE)
        p->lse = lk__cls_log_sum(s);
    p->r = lk_div(lk_set(1.0), s);
}

/* A second pass over one vector's classes, for hooks without class
 * statistics: e_c from Ev (or computed, when Ev is NULL) if want_e. */
LK_AI void lk__cls_again(const void *inst, const lk_cls_io *io, const lk_cls_chunk *ch,
                         lk_cls_pos *p, int v, const lk_v *Ev, int es, int want_e,
                         lk_cls_class_fn hook, lk_m *bad, const int G)
{
    lk_v cv = lk_zero();
    for (int64_t c = 0; c < io->C; c++, cv = lk_add(cv, lk_set(1.0))) {
        lk_cls_el el = lk__cls_el(io, ch, p, c, cv, v, G);
        if (want_e)
            el.e = Ev ? Ev[c * es] : lk_exp_neg(el.z);
        if (bad)
            *bad = lk_or(*bad, lk_and(p->valid, lk_outside01(el.t)));
        hook(inst, io, p, c, &el, NULL);
    }
}

#define LK_CLS_MAX_CLS 4 /* per-class statistics at most */

/* A second pass, class-major, for hooks with class statistics: each
 * class's sums over the chunk's vectors stay in registers (loc) and are
 * added to ca once; e_c as in lk__cls_again, from E[c nv + v]. Counts
 * (loc[j].n) join the double lanes exactly, in lane 0. */
LK_AI void lk__cls_classes(const void *inst, const lk_cls_io *io, const lk_cls_chunk *ch,
                           lk_cls_pos *P, const lk_v *E, int want_e, lk_cls_class_fn hook,
                           lk_acc *ca, uint32_t n_cls, lk_m *bad, const int G)
{
    lk_v cv = lk_zero();
    for (int64_t c = 0; c < io->C; c++, cv = lk_add(cv, lk_set(1.0))) {
        lk_cls_acc loc[LK_CLS_MAX_CLS];
        for (uint32_t j = 0; j < n_cls; j++)
            loc[j].a = lk_acc_zero(), loc[j].n = 0, loc[j].f = lk_zero();
        for (int v = 0; v < ch->nv; v++) {
            lk_cls_el el = lk__cls_el(io, ch, &P[v], c, cv, v, G);
            if (want_e)
                el.e = E ? E[c * ch->nv + v] : lk_exp_neg(el.z);
            if (bad)
                bad[v] = lk_or(bad[v], lk_and(P[v].valid, lk_outside01(el.t)));
            hook(inst, io, &P[v], c, &el, loc);
            if ((v & 3) == 3 || v + 1 == ch->nv)
                for (uint32_t j = 0; j < n_cls; j++)
                    lk_acc_add(&loc[j].a, loc[j].f), loc[j].f = lk_zero();
        }
        for (uint32_t j = 0; j < n_cls; j++) {
            lk_acc *a = &ca[c * n_cls + j];
            lk_acc_add_count(a, loc[j].n);
            a->lo = lk_d_add(a->lo, loc[j].a.lo);
            a->hi = lk_d_add(a->hi, loc[j].a.hi);
        }
    }
}

/* The first float target outside [0, 1] of vector v, by position, then
 * class (out of line: LK__COLD_FN). */
LK__COLD_FN lk_status lk__cls_bad_t(const lk_cls_io *io, const lk_cls_chunk *ch, int v,
                                    const lk_tensor *ts, lk_msg *msg)
{
    for (int l = 0; l < lk__cls_k(ch, v); l++) {
        int64_t j = v * LK_W + l;
        int64_t base = ch->off ? ch->off[j] : ch->xo + j;
        for (int64_t c = 0; c < io->C; c++) {
            double t = lk__get(io->t, io->tf, base + c * io->S);
            if (t < 0.0 || t > 1.0) {
                char where[160];
                lk_index_str(where, sizeof where, ts->ndim, ts->shape, base + c * io->S);
                return lk_fail(msg, LK_ERR_INVALID, "target%s = %g is outside [0, 1]", where, t);
            }
        }
    }
    return lk_fail(msg, LK_ERR_INTERNAL, "a target outside [0, 1] vanished");
}

/* The first bad index target of vector v. */
static inline lk_status lk__cls_bad_y(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                                      const lk_tensor *t, int64_t p0, int k, lk_msg *msg)
{
    for (int64_t j = p0; j < p0 + k; j++) {
        int64_t y = io->t32 ? ((const int32_t *)io->t)[j] : ((const int64_t *)io->t)[j];
        if (y != io->ignore && (y < 0 || y >= io->C))
            return ops->bad_index(inst, t, j, y, io->C, msg);
    }
    return lk_fail(msg, LK_ERR_INTERNAL, "a bad index target vanished");
}

/* ------------------------------------------------------------------------ */
/* Forward and backward of one chunk                                         */

typedef struct lk__cls_blk {
    const lk_block *blk;
    lk_acc *pa, *ca; /* per-position and per-class sums */
    lk_v scale;
    int acc;
    int stream; /* the gradient may be written with streaming stores */
} lk__cls_blk;

/* grad per class of vector v, scaled and stored (Ev its exps, or NULL),
 * after bwd_pos: the end of backward's softmax pass and of a FUSED
 * forward's. */
LK_AI void lk__cls_store(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                         const lk_cls_chunk *ch, const lk__cls_blk *b, const lk_cls_pos *p, int v,
                         const lk_v *Ev, int es, const int G)
{
    lk_v cv = lk_zero();
    if (Ev) {
        /* a loop of its own: with the exps kept, the logits are not read
         * again (nor z formed) unless the loss's grad reads z */
        for (int64_t c = 0; c < io->C; c++, cv = lk_add(cv, lk_set(1.0))) {
            lk_cls_el el = lk__cls_el(io, ch, p, c, cv, v, G);
            el.e = Ev[c * es];
            lk_v g = ops->grad(inst, io, p, c, &el);
            lk__cls_put(io, ch, p, c * io->S, v, g, b->scale, b->acc, b->stream, G);
        }
        return;
    }
    for (int64_t c = 0; c < io->C; c++, cv = lk_add(cv, lk_set(1.0))) {
        lk_cls_el el = lk__cls_el(io, ch, p, c, cv, v, G);
        el.e = lk_exp_neg(el.z);
        lk_v g = ops->grad(inst, io, p, c, &el);
        lk__cls_put(io, ch, p, c * io->S, v, g, b->scale, b->acc, b->stream, G);
    }
}

/* A FUSED forward's gradient of vector v from the loss's softmax pass (m,
 * s, y, valid of p, and with LK_CLS_POS_GRAD the factors fwd_pos left; Ev
 * its exps, or NULL): else bwd1 on the same exps and bwd_pos, then the
 * store: one exp per class for value and gradient. */
LK_AI void lk__cls_grad(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                        const lk_cls_chunk *ch, const lk__cls_blk *b, lk_cls_pos p, int v,
                        const lk_v *Ev, int es, const int G)
{
    if (!(ops->flags & LK_CLS_POS_GRAD)) {
        p.a = p.b = lk_zero();
        p.u = lk_w_set(0.0);
        if (ops->bwd1)
            lk__cls_again(inst, io, ch, &p, v, Ev, es, 1, ops->bwd1, NULL, G);
        if (ops->bwd_pos)
            ops->bwd_pos(inst, io, &p, NULL);
    }
    lk__cls_store(inst, ops, io, ch, b, &p, v, Ev, es, G);
}

LK_AI lk_status lk__cls_fwd(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                            const lk_cls_chunk *ch, const lk__cls_blk *b, lk_msg *msg, const int G,
                            const int K)
{
    lk_cls_pos P[LK_CLS_NV];
    lk_v E[LK_CLS_KEEP];
    lk_m bad[LK_CLS_NV];
    int unit = (ops->flags & LK_CLS_UNIT_TARGET) && !io->index;
    int vb = lk__cls_open(io, ch, P);
    if (vb >= 0)
        return lk__cls_bad_y(inst, ops, io, &b->blk->slots[1], ch->pos + (int64_t)vb * LK_W,
                             P[vb].k, msg);
    /* targets are checked in the last pass that reads them */
    int two = ops->fwd2 && (!ops->want2 || ops->want2(inst, io));
    int want_e = two && (ops->flags & LK_CLS_FWD_EXP);
    if (!ops->n_cls) {
        /* no class statistics: the softmax sums of every vector of the
         * chunk first (their exps kept in E, class-major, when a later
         * pass reads them), then the chunk's logs and reciprocals, then
         * each vector's value and gradient, its state in registers. In
         * three loops so that the next vector's exps need not wait behind
         * this one's log, divisions and stores, nor its log behind this
         * one's stores (software pipelining by a chunk: each vector's
         * chain from max to log is longer than the window the processor
         * looks ahead in). Only where the chunk's exps are to be kept and
         * there is no room for them (more than LK_CLS_KEEP / LK_CLS_NV
         * classes), each vector start to end, E one vector's exps. */
        const int keep = want_e || io->g;
        const int all = !keep || (K && io->C * LK_CLS_NV <= LK_CLS_KEEP);
        lk_v *Ev = K && keep ? E : NULL;
        const int es = all ? ch->nv : 1;
        for (int v = 0; all && v < ch->nv; v++) {
            bad[v] = lk_first(0);
            lk__cls_soft(inst, io, ch, &P[v], v, keep ? E + v : NULL, es, ops->fwd1,
                         unit && !two ? &bad[v] : NULL, G);
        }
        for (int v = 0; all && v < ch->nv; v++)
            lk__cls_recip(ops, &P[v]);
        for (int v = 0; v < ch->nv; v++) {
            lk_cls_pos p = P[v];
            lk_m bv = all ? bad[v] : lk_first(0);
            if (all)
                Ev = keep ? E + v : NULL;
            else
                lk__cls_soft(inst, io, ch, &p, v, Ev, 1, ops->fwd1, unit && !two ? &bv : NULL, G);
            if (!all)
                lk__cls_recip(ops, &p);
            if (two)
                lk__cls_again(inst, io, ch, &p, v, Ev, es, want_e, ops->fwd2, unit ? &bv : NULL,
                              G);
            if (unit && lk_any(bv))
                return lk__cls_bad_t(io, ch, v, &b->blk->slots[1], msg);
            if (ops->fwd_pos) {
                lk_v loss = lk_w_narrow(ops->fwd_pos(inst, io, &p, b->pa));
                if (io->out)
                    lk__st(io->out, io->xf, ch->pos + (int64_t)v * LK_W, p.k, loss);
            }
            if (io->g)
                lk__cls_grad(inst, ops, io, ch, b, p, v, Ev, es, G);
        }
        return LK_OK;
    }
    /* class statistics: the second pass class-major, E the chunk's exps */
    if (io->g)
        return lk_fail(msg, LK_ERR_INTERNAL, "a class loss with class statistics cannot be FUSED");
    lk_v *ke = K && want_e ? E : NULL;
    for (int v = 0; v < ch->nv; v++) {
        bad[v] = lk_first(0);
        lk__cls_soft(inst, io, ch, &P[v], v, ke ? ke + v : NULL, ch->nv, ops->fwd1,
                     unit && !two ? &bad[v] : NULL, G);
        lk__cls_recip(ops, &P[v]);
    }
    if (two)
        lk__cls_classes(inst, io, ch, P, ke, want_e, ops->fwd2, b->ca, ops->n_cls,
                        unit ? bad : NULL, G);
    for (int v = 0; unit && v < ch->nv; v++)
        if (lk_any(bad[v]))
            return lk__cls_bad_t(io, ch, v, &b->blk->slots[1], msg);
    for (int v = 0; ops->fwd_pos && v < ch->nv; v++) {
        lk_v loss = lk_w_narrow(ops->fwd_pos(inst, io, &P[v], b->pa));
        if (io->out)
            lk__st(io->out, io->xf, ch->pos + (int64_t)v * LK_W, P[v].k, loss);
    }
    return LK_OK;
}

/* Backward has no class statistics: each vector start to end, E its
 * exps. */
LK_AI void lk__cls_bwd(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                       const lk_cls_chunk *ch, const lk__cls_blk *b, const int G, const int K)
{
    lk_cls_pos P[LK_CLS_NV];
    lk_v E[LK_CLS_KEEP];
    lk_v *Ev = K ? E : NULL;
    lk__cls_open(io, ch, P); /* forward has refused bad indices; they count nowhere */
    for (int v = 0; v < ch->nv; v++) {
        lk_cls_pos p = P[v];
        lk__cls_soft(inst, io, ch, &p, v, Ev, 1, ops->bwd1, NULL, G);
        if (ops->bwd_pos)
            ops->bwd_pos(inst, io, &p, NULL);
        lk__cls_store(inst, ops, io, ch, b, &p, v, Ev, 1, G);
    }
}

/* ------------------------------------------------------------------------ */
/* The block: chunks within a row, or across short rows                     */

static inline lk_cls_io lk__cls_io(const lk_plan *plan, const lk_block *blk)
{
    const lk_tensor *s = blk->slots;
    lk_cls_io io = {s[0].data,
                    s[1].data,
                    NULL,
                    blk->out ? blk->out->data : NULL,
                    NULL,
                    plan->aux[LK_CLS_AUX_C],
                    plan->aux[LK_CLS_AUX_S],
                    plan->aux[LK_CLS_AUX_IGNORE],
                    s[0].dtype == LK_DTYPE_F32,
                    s[1].dtype == LK_DTYPE_F32,
                    s[1].dtype == LK_DTYPE_I32,
                    plan->aux[LK_CLS_AUX_KIND] == LK_CLS_INDEX};
    return io;
}

/* The chunk from pos: up to 64 positions, within pos's row unless rows
 * are short (G), where off receives each position's offset. */
static inline lk_cls_chunk lk__cls_chunk(const lk_cls_io *io, int64_t pos, int64_t end,
                                         int64_t *off, int G)
{
    lk_cls_chunk ch = {pos, 0, NULL, 0, 0};
    int64_t n = end - pos < LK_CLS_CHUNK ? end - pos : LK_CLS_CHUNK;
    if (G) {
        /* one division, then the row's position and start stepped along
         * (a division a position was a sixth of a small call's forward) */
        int64_t s = pos % io->S, row = (pos / io->S) * io->C * io->S;
        for (int64_t j = 0; j < n; j++) {
            off[j] = row + s;
            if (++s == io->S) {
                s = 0;
                row += io->C * io->S;
            }
        }
        ch.off = off;
    } else {
        int64_t s = pos % io->S;
        n = n < io->S - s ? n : io->S - s;
        ch.xo = (pos / io->S) * io->C * io->S + s;
    }
    ch.n = (int)n;
    ch.nv = (ch.n + LK_W - 1) / LK_W;
    return ch;
}

/* Asks for the class planes of the chunk LK_CLS_AHEAD chunks on (logits
 * and float targets): C streams S apart are more than the hardware
 * prefetchers follow, and each chunk would otherwise wait for memory.
 * Not the gradient: asking for its lines ahead (for writing) measured
 * slower, the stores finding them soon enough on their own. Prefetches
 * never fault, past the end included. */
#define LK_CLS_AHEAD 2

static inline void lk__cls_prefetch(const lk_cls_io *io, const lk_cls_chunk *ch)
{
    int64_t es = io->xf ? 4 : 8, ts = io->tf ? 4 : 8, ys = io->t32 ? 4 : 8;
    int64_t at = ch->xo + LK_CLS_AHEAD * LK_CLS_CHUNK;
    for (int64_t b = 0; io->index && b < LK_CLS_CHUNK; b += 64 / ys)
        __builtin_prefetch((const char *)io->t + (ch->pos + LK_CLS_AHEAD * LK_CLS_CHUNK + b) * ys,
                           0, 3);
    for (int64_t c = 0; c < io->C; c++)
        for (int64_t b = 0; b < LK_CLS_CHUNK; b += 64 / es) {
            int64_t i = at + c * io->S + b;
            __builtin_prefetch((const char *)io->x + i * es, 0, 3);
            if (!io->index)
                __builtin_prefetch((const char *)io->t + i * ts, 0, 3);
        }
}

LK_AI lk_status lk__cls_run(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                            const lk__cls_blk *b, int bwd, lk_msg *msg, const int G, const int K)
{
    int64_t off[LK_CLS_CHUNK];
    lk_status st = LK_OK;
    for (int64_t pos = b->blk->begin; st == LK_OK && pos < b->blk->end;) {
        lk_cls_chunk ch = lk__cls_chunk(io, pos, b->blk->end, off, G);
        if (!G)
            lk__cls_prefetch(io, &ch);
        if (bwd)
            lk__cls_bwd(inst, ops, io, &ch, b, G, K);
        else
            st = lk__cls_fwd(inst, ops, io, &ch, b, msg, G, K);
        pos += ch.n;
    }
    return st;
}

LK_AI lk_status lk__cls_walk_kind(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                                  const lk__cls_blk *b, int bwd, lk_msg *msg)
{
    int G = LK_W > 1 && io->S < 2 * LK_W;
    /* class-major passes keep a chunk's exps, the others one vector's */
    int K = io->C * (ops->n_cls && !bwd ? LK_CLS_NV : 1) <= LK_CLS_KEEP;
    if (G)
        return K ? lk__cls_run(inst, ops, io, b, bwd, msg, 1, 1)
                 : lk__cls_run(inst, ops, io, b, bwd, msg, 1, 0);
    return K ? lk__cls_run(inst, ops, io, b, bwd, msg, 0, 1)
             : lk__cls_run(inst, ops, io, b, bwd, msg, 0, 0);
}

/* The walk for index targets and for probability targets apart: io->index
 * a constant in each, so that the class loops and the hooks test it
 * nowhere (GCC does not take such a test out of a loop by itself). */
LK_AI lk_status lk__cls_walk(const void *inst, const lk_cls_ops *ops, const lk_cls_io *io,
                             const lk__cls_blk *b, int bwd, lk_msg *msg)
{
    lk_cls_io j = *io;
    if (io->index) {
        j.index = 1;
        return lk__cls_walk_kind(inst, ops, &j, b, bwd, msg);
    }
    j.index = 0;
    return lk__cls_walk_kind(inst, ops, &j, b, bwd, msg);
}

/* A call's per-class buffers live on the stack up to these counts, on the
 * heap past them: on a small call an allocation and its free cost more than
 * the arithmetic (glibc hands the freed top of its heap back to the system
 * and the next call faults the pages in again). */
#define LK_CLS_SMALL_ACC 24  /* lk_acc: 3 KiB in AVX-512 lanes */
#define LK_CLS_SMALL_TAB 128 /* doubles */

/* Per-class sums, aligned for the lanes: small (LK_CLS_SMALL_ACC of them)
 * when n fits, else the heap (free it when it is not small). */
static inline lk_acc *lk__cls_acc_new(size_t n, lk_acc *small)
{
    size_t bytes = (n * sizeof(lk_acc) + 63) / 64 * 64;
    lk_acc *a = n <= LK_CLS_SMALL_ACC ? small : (lk_acc *)aligned_alloc(64, bytes ? bytes : 64);
    for (size_t i = 0; a && i < n; i++)
        a[i] = lk_acc_zero();
    return a;
}

/* The hooks' table of n doubles: small (LK_CLS_SMALL_TAB) when n fits. */
static inline double *lk__cls_tab_new(size_t n, double *small)
{
    return n <= LK_CLS_SMALL_TAB ? small : (double *)malloc(n * sizeof(double));
}

LK_AI lk_status lk_classes_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                   const lk_cls_ops *ops, lk_msg *msg)
{
    lk_cls_io io = lk__cls_io(plan, blk);
    lk_acc pa[LK_CLS_MAX_POS];
    for (uint32_t j = 0; j < LK_CLS_MAX_POS; j++)
        pa[j] = lk_acc_zero();
    lk__cls_blk b = {blk, pa, NULL, lk_zero(), 0, 0};
    lk_acc ca_small[LK_CLS_SMALL_ACC];
    double *tab = NULL, tab_small[LK_CLS_SMALL_TAB];
    if (blk->grads && blk->grads[0].data) {
        /* a FUSED loss (lk_cls_spec.target_norm): the gradient too, its
         * divisor folded into grad_scale by the host */
        io.g = blk->grads[0].data;
        if (ops->n_tab && !(tab = lk__cls_tab_new((size_t)(io.C * ops->n_tab), tab_small)))
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes", (long long)io.C);
        io.tab = tab;
        b.scale = lk_set(ops->prep ? ops->prep(inst, plan, blk, tab) : blk->grad_scale);
        b.acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
        b.stream = lk__can_stream(io.g, io.xf, b.acc, 0, plan->n_positions * io.C);
    }
    if (ops->n_cls && !(b.ca = lk__cls_acc_new((size_t)(io.C * ops->n_cls), ca_small))) {
        if (tab != tab_small)
            free(tab);
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes' sums", (long long)io.C);
    }
    lk_status st = lk__cls_walk(inst, ops, &io, &b, 0, msg);
    if (b.stream)
        lk_stream_fence();
    if (tab != tab_small)
        free(tab);
    for (uint32_t j = 0; st == LK_OK && j < ops->n_pos; j++)
        blk->stats[j] += lk_acc_sum(pa[j]);
    for (int64_t i = 0; st == LK_OK && i < io.C * ops->n_cls; i++) /* i: class i / n_cls */
        blk->stats[ops->n_pos + (i % ops->n_cls) * io.C + i / ops->n_cls] += lk_acc_sum(b.ca[i]);
    if (b.ca != ca_small)
        free(b.ca);
    return st;
}

LK_AI lk_status lk_classes_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                    const lk_cls_ops *ops, lk_msg *msg)
{
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    lk_cls_io io = lk__cls_io(plan, blk);
    io.g = blk->grads[0].data;
    io.out = NULL;
    double *tab = NULL, tab_small[LK_CLS_SMALL_TAB], scale = blk->grad_scale;
    if (ops->n_tab && !(tab = lk__cls_tab_new((size_t)(io.C * ops->n_tab), tab_small)))
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes", (long long)io.C);
    if (ops->prep)
        scale = ops->prep(inst, plan, blk, tab);
    io.tab = tab;
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    lk__cls_blk b = {blk, NULL, NULL, lk_set(scale), acc,
                     lk__can_stream(io.g, io.xf, acc, 0, plan->n_positions * io.C)};
    lk_status st = lk__cls_walk(inst, ops, &io, &b, 1, msg);
    if (b.stream)
        lk_stream_fence();
    if (tab != tab_small)
        free(tab);
    return st;
}

/* ------------------------------------------------------------------------ */
/* The family                                                                */

/* The family has no portable float-lane member: float32 data runs in the
 * portable double lanes (see the top). */
#if defined(LK_PRIMARY)
#define LK__CLS_FAMILY(name)                                                                       \
    LK__DECL_AVX2(name)                                                                            \
    LK__DECL_AVX512(name)                                                                          \
    static const lk_kfamily name##__family = {{                                                    \
        {NULL, &LK__VAR(name, portable, f64)},                                                     \
        LK__REF_AVX2(name),                                                                        \
        LK__REF_AVX512(name),                                                                      \
    }};
#else
#define LK__CLS_FAMILY(name)
#endif

/* The kernels of a class loss: T the instance type, ops an lk_cls_ops. */
#define LK_CLASSES_KERNELS(name, T, ops)                                                           \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T local = *(const T *)inst; /* escapes nowhere: no reloads after stores */           \
        return lk_classes_forward(&local, plan, blk, &(ops), msg);                                 \
    }                                                                                              \
    static lk_status name##__bwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T local = *(const T *)inst;                                                          \
        return lk_classes_backward(&local, plan, blk, &(ops), msg);                                \
    }                                                                                              \
    LK__KSET(name, name##__fwd, name##__bwd, 0)                                                    \
    LK__CLS_FAMILY(name)

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_CLASSES_H */
