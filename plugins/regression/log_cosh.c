/* log_cosh: log(cosh(x - t)), gradient tanh(x - t). torch has no log-cosh
 * loss (Keras has one, tf.keras.losses.log_cosh); the formula is written so
 * that it neither overflows for a large |x - t| nor cancels for a small
 * one. */
#include "regression.h"

/* Terms of the Taylor series of sinh and cosh that reach the precision of
 * the lanes on |y| <= 1/2: the first term left out is below 1.1e-8 (float,
 * a fifth of a float ulp) or 1e-18 (double) of the result. */
#if defined(LK_LANES_F32)
#define LC_SINH_TERMS 3
#define LC_COSH_TERMS 4
#else
#define LC_SINH_TERMS 7
#define LC_COSH_TERMS 8
#endif

static inline double lc_fact(int k)
{
    double f = 1.0;
    for (int j = 2; j <= k; j++)
        f *= j;
    return f;
}

static inline double lc_pow4(int k)
{
    double f = 1.0;
    for (int j = 0; j < k; j++)
        f *= 4.0;
    return f;
}

/* S = 2 sinh(u/2) and c = cosh(u/2) for |u| <= 1, by the Taylor series of
 * sinh(y) and cosh(y) in y = u/2, written in w = u^2 = 4 y^2 (the powers of
 * 4 are exact): S = u sum w^k / (4^k (2k+1)!), c = sum w^k / (4^k (2k)!). */
LK_AI void lc_sinh2_cosh(lk_v u, lk_v *S, lk_v *c)
{
    lk_v w = lk_mul(u, u);
    lk_v ps = lk_set(1.0 / (lc_pow4(LC_SINH_TERMS) * lc_fact(2 * LC_SINH_TERMS + 1)));
    for (int k = LC_SINH_TERMS - 1; k >= 0; k--)
        ps = lk_fma(ps, w, lk_set(1.0 / (lc_pow4(k) * lc_fact(2 * k + 1))));
    lk_v pc = lk_set(1.0 / (lc_pow4(LC_COSH_TERMS) * lc_fact(2 * LC_COSH_TERMS)));
    for (int k = LC_COSH_TERMS - 1; k >= 0; k--)
        pc = lk_fma(pc, w, lk_set(1.0 / (lc_pow4(k) * lc_fact(2 * k))));
    *S = lk_mul(u, ps);
    *c = pc;
}

/* With d = x - t and a = |d|:
 *   a < 1:  S = 2 sinh(d/2), c = cosh(d/2) by their series;
 *           log cosh(d) = log1p(S^2 / 2),  tanh(d) = S c / (1 + S^2 / 2)
 *           (cosh d = 1 + 2 sinh^2(d/2), sinh d = 2 sinh(d/2) cosh(d/2));
 *   a >= 1: e = exp(-2a) <= 0.136;
 *           log cosh(d) = (a - log 2) + log1p(e),  tanh(d) = +-(1 - e) / (1 + e).
 * Neither form cancels on its range; exp never sees a positive argument, so
 * a = 1e4 or +inf gives a - log 2 (or +inf) and a gradient of +-1. One
 * log1p and one division serve both forms. NaN passes through.
 *
 * Staged (LK_KERNELS_ELEMENTWISE_STAGED): the series and the exp of the
 * next vector are formed while this one's log1p and division run. */
LK_AI void log_cosh_stage(const lk_none *p, const lk_elem *e, lk_kept *k)
{
    (void)p;
    lk_v d = lk_sub(e->x, e->t), one = lk_set(1.0);
    lc_sinh2_cosh(lk_min(one, lk_max(lk_set(-1.0), d)), &k->v[0], &k->v[1]);
    k->v[2] = lk_exp_neg(lk_mul(lk_set(-2.0), lk_abs(d)));
}

LK_AI void log_cosh_finish(const lk_none *p, const lk_kept *k, lk_elem *e)
{
    (void)p;
    lk_v d = lk_sub(e->x, e->t), a = lk_abs(d), one = lk_set(1.0);
    lk_v S = k->v[0], c = k->v[1], ex = k->v[2];
    lk_m small = lk_lt(a, one);
    lk_v t2 = lk_mul(lk_set(0.5), lk_mul(S, S));
    lk_v L = lk_log1p_unit(lk_select(small, t2, ex));
    e->loss = lk_select(small, L, lk_add(lk_sub(a, lk_set(0.69314718055994530942)), L));
    /* sg (1 - e), sg the sign of d (-1 for NaN, whose e is NaN) */
    lk_v sg = lk_select(lk_gt(d, lk_zero()), one, lk_set(-1.0));
    lk_v num = lk_select(small, lk_mul(S, c), lk_fnma(sg, ex, sg));
    lk_v den = lk_add(one, lk_select(small, t2, ex));
    e->grad = lk_div(num, den);
}

LK_KERNELS_ELEMENTWISE_STAGED(log_cosh, lk_none, log_cosh_stage, log_cosh_finish, LK_EW_WEIGHT)
LK_LOSS_DESC(log_cosh, lk_none, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&log_cosh__family),
             lk_slots_weighted, LK_REDUCTIONS_ELEMENTWISE, LK_HOOKS(0),
             .summary = "log-cosh loss log(cosh(x - t)), stable for any |x - t|",
             .slots = reg_slots)
