/* log_cosh: log(cosh(x - t)), gradient tanh(x - t). torch has no log-cosh
 * loss (Keras has one, tf.keras.losses.log_cosh); the formula is written so
 * that it neither overflows for a large |x - t| nor cancels for a small
 * one. */
#include "regression.h"

/* The threshold between the two forms (below), and the terms of the
 * Taylor series of sinh and cosh that reach the precision of the lanes on
 * |y| <= LC_T/2: the first term left out is below 1e-8 (float, a sixth of
 * a float ulp) or 1e-18 (double) of the result. */
#define LC_T 0.75
#if defined(LK_LANES_F32)
#define LC_SINH_TERMS 3
#define LC_COSH_TERMS 3
#else
#define LC_SINH_TERMS 7
#define LC_COSH_TERMS 8
#endif

#define LC_S2 1.41421356237309504880
#define LC_R2 0.70710678118654752440

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

/* S = sqrt(2) sinh(u/2) and c = sqrt(2) cosh(u/2) for |u| <= LC_T, by the
 * Taylor series of sinh(y) and cosh(y) in y = u/2, written in w = u^2 = 4
 * y^2 (the powers of 4 are exact) with the factors sqrt(2) folded into the
 * coefficients: S = u sum w^k / (sqrt(2) 4^k (2k+1)!), c = sqrt(2) sum w^k
 * / (4^k (2k)!). Then S^2 = 2 sinh^2(u/2) = cosh u - 1 and S c = sinh u,
 * each one product. */
LK_AI void lc_sinh2_cosh(lk_v u, lk_v *S, lk_v *c)
{
    lk_v w = lk_mul(u, u);
    lk_v ps = lk_set(LC_R2 / (lc_pow4(LC_SINH_TERMS) * lc_fact(2 * LC_SINH_TERMS + 1)));
    for (int k = LC_SINH_TERMS - 1; k >= 0; k--)
        ps = lk_fma(ps, w, lk_set(LC_R2 / (lc_pow4(k) * lc_fact(2 * k + 1))));
    lk_v pc = lk_set(LC_S2 / (lc_pow4(LC_COSH_TERMS) * lc_fact(2 * LC_COSH_TERMS)));
    for (int k = LC_COSH_TERMS - 1; k >= 0; k--)
        pc = lk_fma(pc, w, lk_set(LC_S2 / (lc_pow4(k) * lc_fact(2 * k))));
    *S = lk_mul(u, ps);
    *c = pc;
}

/* log1p(v) for v in [0, 0.3] (both forms' arguments, below): float SIMD
 * lanes v + v^2 Q(v), Q a quartic fitted to (log1p(v) - v) / v^2 there
 * (weighted least squares on Chebyshev nodes, reweighted towards the
 * largest relative error: 2.7e-8 of log1p(v) with its float
 * coefficients; bench/log_cosh_fit.py), three fmas fewer than
 * lk_log1p_unit's fit on [0, 1]. */
#if defined(LK_LANES_F32) && !defined(LK_TARGET_PORTABLE)
LK_AI lk_v lc_log1p(lk_v v)
{
    lk_v q = lk_fma(lk_set(-8.398835361003876e-02), v, lk_set(1.7674994468688965e-01));
    q = lk_fma(q, v, lk_set(-2.4678848683834076e-01));
    q = lk_fma(q, v, lk_set(3.331333100795746e-01));
    q = lk_fma(q, v, lk_set(-4.999958872795105e-01));
    return lk_fma(lk_mul(v, v), q, v);
}
#else
#define lc_log1p lk_log1p_unit
#endif

/* With d = x - t and a = |d|:
 *   a < LC_T:  S, c of lc_sinh2_cosh(d): v = S^2 = cosh d - 1 <= 0.295;
 *           log cosh(d) = log1p(v),  tanh(d) = S c / (1 + v);
 *   a >= LC_T: v = e = exp(-2a) <= 0.224;
 *           log cosh(d) = (a - log 2) + log1p(v),  tanh(d) = +-(1 - e) / (1 + v).
 * Neither form cancels on its range; exp never sees a positive argument, so
 * a = 1e4 or +inf gives a - log 2 (or +inf) and a gradient of +-1. One
 * log1p and one division serve both forms. NaN passes through.
 *
 * Every term is >= 0 (a - log 2 >= 0.057 where a >= LC_T, and log1p(v) >= 0),
 * so the float lanes sum them in groups (LK_EW_NONNEG_SUM).
 *
 * Staged (LK_KERNELS_ELEMENTWISE_STAGED): stage forms everything but the
 * log1p and the division, so that the two halves of the chain are about
 * as long as each other: the next vector's series, exp and selects run
 * while this one's log1p and division do. */
LK_AI void log_cosh_stage(const lk_none *p, const lk_elem *e, lk_kept *k)
{
    (void)p;
    lk_v d = lk_sub(e->x, e->t), a = lk_abs(d), one = lk_set(1.0);
    lk_v S, c;
    /* the series on every lane, unclamped: where a >= LC_T (up to +-inf and
     * NaN) its values are dropped by the selects below */
    lc_sinh2_cosh(d, &S, &c);
    /* lk_exp_minus_fast: the exp matters where a >= LC_T alone, where it
     * is at most 0.22 and log1p(e) is added to a - log 2 >= 0.057; its
     * extra error, 2.5 a 2^-24 of e at most, is below one ulp of the
     * result (0.84 at a = LC_T, falling fast as a grows; the float sweep:
     * 1.53 ulp at most where a >= LC_T, 1.19 with lk_exp_minus; 4.66
     * overall, from the series) */
    lk_v ex = lk_exp_minus_fast(a, 2.0);
    /* a < LC_T by the sign of a - LC_T, with no compare (a NaN d gives a
     * positive NaN here, and the second form) */
    lk_v small = lk_sub(a, lk_set(LC_T));
    /* the argument of the log1p, and the numerator of tanh: (1 - e) with
     * the sign of d (NaN where d is NaN: e is NaN there) */
    k->v[0] = lk_select_neg(small, lk_mul(S, S), ex);
    k->v[1] = lk_select_neg(small, lk_mul(S, c), lk_copysign(lk_sub(one, ex), d));
    k->v[2] = lk_select_neg(small, lk_zero(), lk_sub(a, lk_set(0.69314718055994530942)));
}

LK_AI void log_cosh_finish(const lk_none *p, const lk_kept *k, lk_elem *e)
{
    (void)p;
    lk_v v = k->v[0];
    e->loss = lk_add(k->v[2], lc_log1p(v));
    e->grad = lk_div(k->v[1], lk_add(lk_set(1.0), v));
}

LK_KERNELS_ELEMENTWISE_STAGED(log_cosh, lk_none, log_cosh_stage, log_cosh_finish,
                              LK_EW_WEIGHT | LK_EW_NONNEG_SUM)
LK_LOSS_DESC(log_cosh, lk_none, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&log_cosh__family),
             lk_slots_weighted, LK_REDUCTIONS_ELEMENTWISE, LK_HOOKS(0),
             .summary = "log-cosh loss log(cosh(x - t)), stable for any |x - t|",
             .slots = reg_slots)
