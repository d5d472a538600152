/* classification.h: what the classification family's losses share: their
 * slots, the checks of slot 0's values a kernel makes before its formula
 * runs, a per-class weight table in both precisions, and the multi-index
 * of a position for messages. Private to the family. */
#ifndef LOSSKIT_CLASSIFICATION_H
#define LOSSKIT_CLASSIFICATION_H

#include "losskit/loss.h"

#include <string.h>

static const lk_slot_desc cls_logits LK__UNUSED = {
    .name = "input",
    .doc = "logits (before the sigmoid), any shape",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
};

static const lk_slot_desc cls_target01 LK__UNUSED = {
    .name = "target",
    .doc = "targets in [0, 1] (0/1 labels or soft), shaped like input; not differentiable",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_UNIT,
};

/* ------------------------------------------------------------------------ */
/* Checks of slot 0's values                                                 */

/* The lanes of slot 0 a check refuses. */
typedef lk_m (*cls_bad_fn)(lk_v x);

LK_AI lk_m cls_bad_prob(lk_v x)
{
    return lk_outside01(x); /* NaN is not outside: it passes through */
}

LK_AI lk_m cls_bad_logprob(lk_v x)
{
    return lk_eq(x, lk_set(HUGE_VAL));
}

/* The message of the first element of slot 0 in [begin, end) that the
 * rule refuses (prob: outside [0, 1]; else +inf). */
static inline lk_status cls_refuse_input(const lk_block *blk, int prob, const char *who,
                                         lk_msg *msg)
{
    const lk_tensor *x = &blk->slots[0];
    int xf = x->dtype == LK_DTYPE_F32;
    for (int64_t j = blk->begin; j < blk->end; j++) {
        double v = lk__get(x->data, xf, j);
        if (!(prob ? v < 0.0 || v > 1.0 : v == HUGE_VAL))
            continue;
        char where[160];
        lk_index_str(where, sizeof where, x->ndim, x->shape, j);
        if (prob)
            return lk_fail(msg, LK_ERR_INVALID,
                           "input%s = %.9g is outside [0, 1]: %s takes probabilities (for "
                           "logits use bce_with_logits)",
                           where, v, who);
        return lk_fail(msg, LK_ERR_NUMERIC,
                       "input%s = +inf is not a log-probability (they are <= 0); %s "
                       "refuses it rather than return -inf or NaN",
                       where, who);
    }
    return lk_fail(msg, LK_ERR_INTERNAL, "a refused input vanished");
}

/* An elementwise family (LK_KERNELS_ELEMENTWISE) that refuses some values
 * of slot 0: the element function also gathers bad(x) lanes (padding lanes
 * are 0, which no rule refuses), and the block fails after its pass if any
 * was seen. One pass, so that the check costs no second read of memory; a
 * refused call's outputs are not defined. _STAGED: the same for a staged
 * element function (LK_KERNELS_ELEMENTWISE_STAGED), whose finish gathers
 * the bad lanes. */
#define CLS_KERNELS_ELEMENTWISE_CHECKED(name, T, elem, flags, bad, prob, who)                      \
    CLS__CHECKED_CTX(name, T)                                                                      \
    LK_AI void name##__elem(const void *p, lk_elem *e)                                             \
    {                                                                                              \
        const name##__ctx *c = (const name##__ctx *)p;                                             \
        *c->seen = lk_or(*c->seen, bad(e->x));                                                     \
        elem(&c->user, e);                                                                         \
    }                                                                                              \
    CLS__CHECKED_FWD(name, T, name##__elem, NULL, NULL, flags, prob, who)

#define CLS_KERNELS_ELEMENTWISE_CHECKED_STAGED(name, T, stage, finish, flags, bad, prob, who)      \
    CLS__CHECKED_CTX(name, T)                                                                      \
    LK_AI void name##__stage(const void *p, const lk_elem *e, lk_kept *k)                          \
    {                                                                                              \
        stage(&((const name##__ctx *)p)->user, e, k);                                              \
    }                                                                                              \
    LK_AI void name##__finish(const void *p, const lk_kept *k, lk_elem *e)                         \
    {                                                                                              \
        const name##__ctx *c = (const name##__ctx *)p;                                             \
        *c->seen = lk_or(*c->seen, bad(e->x));                                                     \
        finish(&c->user, k, e);                                                                    \
    }                                                                                              \
    CLS__CHECKED_FWD(name, T, NULL, name##__stage, name##__finish, flags, prob, who)

#define CLS__CHECKED_CTX(name, T)                                                                  \
    typedef struct name##__ctx {                                                                   \
        T user;                                                                                    \
        lk_m *seen;                                                                                \
    } name##__ctx;

#define CLS__CHECKED_FWD(name, T, elem, stage, finish, flags, prob, who)                           \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        lk_m seen = lk_first(0);                                                                   \
        const name##__ctx local = {*(const T *)inst, &seen};                                       \
        lk_status st =                                                                             \
            lk__elementwise_forward(&local, plan, blk, elem, stage, NULL, finish, (flags), msg);   \
        if (st == LK_OK && lk_any(seen))                                                           \
            return cls_refuse_input(blk, prob, who, msg);                                          \
        return st;                                                                                 \
    }                                                                                              \
    LK__KSET(name, name##__fwd, NULL, 0)                                                           \
    LK__FAMILY(name)

/* ------------------------------------------------------------------------ */
/* log on (0, 1], inline                                                     */

/* A scaling step: s, 2^-s and 2^s, as constants (ldexp of a step read from
 * a table is not folded: it would be two calls into libm a step). */
typedef struct cls__step {
    double s, below, by;
} cls__step;

/* v 2^s where v < 2^-s, and k + s there. */
LK_AI void cls__scale(lk_v *v, lk_v *k, cls__step st)
{
    lk_m m = lk_lt(*v, lk_set(st.below));
    *v = lk_select(m, lk_mul(*v, lk_set(st.by)), *v);
    *k = lk_select(m, lk_add(*k, lk_set(st.s)), *k);
}

/* log v for v in (0, 1] (subnormals included; NaN passes; other arguments
 * are the caller's to avoid): v is scaled by powers of 2 into [1/2, 1]
 * (exactly), then log v = -log1p(w) - k log 2 with w = (1 - v) / v in [0, 1]
 * (1 - v exact). Inline, so that a loss's registers are not spilled around
 * a call into the vector math library; a few float ulps in float lanes.
 * Arguments of 1/16 and more, the common case, take two scaling steps.
 * The float lanes of the SIMD targets take the layer's inline lk_f_log,
 * cheaper still (no scaling steps, no test). */
LK_AI lk_v cls_log01(lk_v v)
{
#if defined(LK_LANES_F32) && !defined(LK_TARGET_PORTABLE)
    return lk_f_log(v); /* inline in the float lanes of the SIMD targets */
#else
#if defined(LK_TARGET_AVX512)
    /* the double lanes of AVX-512 scale in one step: v 2^s with s =
     * max(-1 - floor(log2 v), 0) is in [1/2, 1], exactly (vgetexppd reads
     * the exponent of a subnormal too; NaN gives s = 0 and passes) */
    lk_v k = lk_max(lk_sub(lk_set(-1.0), _mm512_getexp_pd(v)), lk_zero());
    v = lk_d_ldexp(v, k);
#else
    lk_v k = lk_zero();
    if (lk_any(lk_lt(v, lk_set(0.0625)))) {
#if defined(LK_LANES_F32)
        static const cls__step steps[] = {{64, 0x1p-64, 0x1p64}, {64, 0x1p-64, 0x1p64},
                                          {32, 0x1p-32, 0x1p32}, {16, 0x1p-16, 0x1p16},
                                          {8, 0x1p-8, 0x1p8},    {4, 0x1p-4, 0x1p4}};
#else
        static const cls__step steps[] = {
            {512, 0x1p-512, 0x1p512}, {512, 0x1p-512, 0x1p512}, {256, 0x1p-256, 0x1p256},
            {128, 0x1p-128, 0x1p128}, {64, 0x1p-64, 0x1p64},    {32, 0x1p-32, 0x1p32},
            {16, 0x1p-16, 0x1p16},    {8, 0x1p-8, 0x1p8},       {4, 0x1p-4, 0x1p4}};
#endif
        for (size_t j = 0; j < sizeof steps / sizeof steps[0]; j++)
            cls__scale(&v, &k, steps[j]);
    }
    cls__scale(&v, &k, (cls__step){2, 0x1p-2, 0x1p2});
    cls__scale(&v, &k, (cls__step){1, 0x1p-1, 0x1p1});
#endif
    lk_v w = lk_mul(lk_sub(lk_set(1.0), v), lk__recip_fast(v));
    lk_v l = lk_log1p_unit(w);
    /* log 2 in two parts, so that k log 2 is exact to the lanes' precision */
    return lk_neg(lk_fma(k, lk_set(6.93147180369123816490e-01),
                         lk_fma(k, lk_set(1.90821492927058770002e-10), l)));
#endif
}

/* ------------------------------------------------------------------------ */
/* A per-class weight list                                                   */

/* The list parameter `weight`, kept in both precisions so that a kernel
 * loads it as lanes; n = 0: every class weighs 1. */
typedef struct cls_weights {
    int64_t n;
    double *d;
    float *f;
} cls_weights;

static inline lk_status cls_weights_init(cls_weights *w, const lk_param_value *p, lk_msg *msg)
{
    w->n = p->list ? p->list_len : 0;
    if (!w->n)
        return LK_OK;
    w->d = (double *)malloc((size_t)w->n * sizeof *w->d);
    w->f = (float *)malloc((size_t)w->n * sizeof *w->f);
    if (!w->d || !w->f) {
        free(w->d);
        free(w->f);
        w->d = NULL, w->f = NULL;
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld weights", (long long)w->n);
    }
    for (int64_t c = 0; c < w->n; c++) {
        w->d[c] = p->list[c];
        w->f[c] = (float)p->list[c];
    }
    return LK_OK;
}

static inline void cls_weights_fini(cls_weights *w)
{
    free(w->d);
    free(w->f);
}

/* The k weights of classes c .. c + k (n > 1), the others 0. */
LK_AI lk_v cls_weights_load(const cls_weights *w, int64_t c, int k)
{
#if defined(LK_LANES_F32)
    return lk_loadn(w->f + c, k, 0.0f);
#else
    return lk_loadn(w->d + c, k, 0.0);
#endif
}

#endif /* LOSSKIT_CLASSIFICATION_H */
