/* robust: the general robust loss of Barron, "A General and Adaptive Robust
 * Loss Function" (CVPR 2019), on the residual d = x - t with z = d / scale:
 *
 *   rho(z; alpha) = |alpha - 2| / alpha ((z^2 / |alpha - 2| + 1)^(alpha/2) - 1)
 *
 * with its limits alpha = 2 (z^2 / 2) and alpha = 0 (log(z^2 / 2 + 1)).
 * alpha = 1 is Charbonnier (pseudo-Huber), -2 Geman-McClure, and large
 * negative alpha approaches Welsch, 1 - exp(-z^2 / 2). alpha and scale are
 * constants, so only the gradient with respect to the input is given:
 *
 *   d rho / dx = (z / scale) (z^2 / |alpha - 2| + 1)^(alpha/2 - 1). */
#include "regression.h"

/* The kernel families, one per form (their order in LK_FAMILIES). */
enum { ROBUST_POS, ROBUST_NEG, ROBUST_TWO, ROBUST_ZERO, ROBUST_ONE, ROBUST_MTWO };

typedef struct robust {
    int mode;
    double alpha, inv_scale;
    double inv_b;      /* 1 / |alpha - 2| */
    double half_alpha; /* alpha / 2 */
    double neg_half_b; /* -|alpha - 2| / 2 = alpha / 2 - 1 */
    double k;          /* |alpha - 2| / alpha */
    double grad_inf;   /* |d rho / dx| at |x - t| = inf, times sign(d) */
    /* where z^2 overflows, with u = |z| far_s: rho = k (u^alpha far_l - 1)
     * and |d rho / dx| = u^(alpha - 1) far_g (see robust_body) */
    double far_s, far_l, far_g;
} robust;

static const lk_param_desc robust_alpha = {
    .name = "alpha",
    .doc = "shape: 2 is L2, 1 Charbonnier, 0 Cauchy, -2 Geman-McClure, -1000 about Welsch",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = -1000.0,
    .max = 2.0,
};
static const lk_param_desc robust_scale = {
    .name = "scale",
    .doc = "the residual's scale c: z = (input - target) / c",
    .type = LK_PARAM_NUMBER,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};
static const lk_param_desc *const robust_params[] LK__UNUSED = {&robust_alpha, &robust_scale, NULL};

static lk_status robust_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    robust *r = inst;
    double a = p[0].number, b = fabs(a - 2.0);
    r->alpha = a;
    r->mode = a == 2.0    ? ROBUST_TWO
              : a == 0.0  ? ROBUST_ZERO
              : a == 1.0  ? ROBUST_ONE
              : a == -2.0 ? ROBUST_MTWO
              : a > 0.0   ? ROBUST_POS
                          : ROBUST_NEG;
    r->inv_scale = 1.0 / p[1].number;
    r->inv_b = b > 0.0 ? 1.0 / b : 0.0;
    r->half_alpha = 0.5 * a;
    r->neg_half_b = -0.5 * b;
    r->k = a != 0.0 ? b / a : 0.0;
    /* |z|^(alpha - 1) as z -> inf: 0 below alpha = 1, 1 at 1, inf above */
    r->grad_inf = a < 1.0 ? 0.0 : a == 1.0 ? r->inv_scale : HUGE_VAL;
    r->far_s = a < 0.0 ? 1.0 / sqrt(b) : 1.0;
    r->far_l = a < 0.0 || b == 0.0 ? 1.0 : pow(b, -0.5 * a);
    r->far_g = (a < 0.0 ? sqrt(b) : pow(b, 1.0 - 0.5 * a)) * r->inv_scale;
    return LK_OK;
}

/* Terms of the Taylor series of expm1 on |h| <= 1/2: the first left out is
 * below 1e-8 (float) or 1e-18 (double) of the result. */
#if defined(LK_LANES_F32)
#define ROBUST_EXPM1_TERMS 8
#else
#define ROBUST_EXPM1_TERMS 15
#endif

/* expm1(y) for |y| <= 1: p = expm1(y / 2) by its series, then
 * expm1(y) = p (p + 2), which neither cancels nor loses y's small size. */
LK_AI lk_v robust_expm1_1(lk_v y)
{
    lk_v h = lk_mul(lk_set(0.5), y);
    double f = 1.0;
    for (int n = 2; n <= ROBUST_EXPM1_TERMS; n++)
        f *= n;
    lk_v p = lk_set(1.0 / f);
    for (int n = ROBUST_EXPM1_TERMS - 1; n >= 1; n--) {
        f /= n + 1;
        p = lk_fma(p, h, lk_set(1.0 / f));
    }
    p = lk_mul(p, h);
    return lk_mul(p, lk_add(p, lk_set(2.0)));
}

/* The lanes where z^2 overflowed: the far forms where z is finite, the
 * limits where it is infinite (see robust_body). Out of line: it calls the
 * vector math library (pow), and the registers the loop keeps would be
 * spilled around that call on every trip; e is not passed, so that its
 * address escapes nowhere. */
typedef struct robust_pair {
    lk_v loss, grad;
} robust_pair;

static __attribute__((noinline)) robust_pair robust_far(const robust *r, int mode, lk_v d, lk_v z,
                                                        lk_v z2, robust_pair o)
{
    lk_m big = lk_eq(z2, lk_set(HUGE_VAL));
    lk_v az = lk_abs(z);
    if (mode != ROBUST_TWO) {
        lk_v u = lk_mul(az, lk_set(r->far_s));
        lk_v far = mode == ROBUST_ZERO
                       ? lk_sub(lk_mul(lk_set(2.0), lk_log(az)), lk_set(log(2.0)))
                       : lk_mul(lk_set(r->k), lk_fma(lk_pow(u, lk_set(r->alpha)), lk_set(r->far_l),
                                                     lk_set(-1.0)));
        o.loss = lk_select(big, far, o.loss);
        lk_v fg = lk_mul(lk_pow(u, lk_set(r->alpha - 1.0)), lk_set(r->far_g));
        o.grad = lk_select(big, lk_copysign(fg, z), o.grad);
    }
    lk_m inf = lk_eq(az, lk_set(HUGE_VAL));
    o.grad = lk_select(inf, lk_mul(lk_sign(d), lk_set(r->grad_inf)), o.grad);
    return o;
}

/* With q = z^2 / b (b = |alpha - 2|), L = log1p(q) and y = alpha L / 2:
 *   rho = k expm1(y),   k = b / alpha,
 *   d rho / dx = (z / scale) g,   g = (1 + q)^(-b/2) = exp(-b L / 2).
 * expm1(y) is taken in the form that is exact on its range:
 *   |y| <= 1:            the series above (alpha near 0: y is tiny, and
 *                        k expm1(y) tends to log1p(z^2 / 2) with no
 *                        cancellation);
 *   y > 1 (0 < alpha):   (1 + q) g - 1, since (1 + q)^(alpha/2) =
 *                        (1 + q) g, and g = exp of a small negative number
 *                        when alpha is near 2, where exp(y) would amplify
 *                        the rounding of a large y;
 *   y < -1 (alpha < 0):  exp(y) - 1 >= -0.64; g = exp(y) / (1 + q).
 * Where every lane of a vector has |y| <= 1, g = (1 + expm1(y)) / (1 + q)
 * instead, a reciprocal for an exp. Every exp has an argument <= 0. The
 * named cases have closed forms, each its own kernel family (mode is a
 * constant there):
 *   alpha = 2:   rho = z^2 / 2,                         g = 1;
 *   alpha = 0:   rho = log1p(z^2 / 2),                  g = 1 / (1 + z^2 / 2);
 *   alpha = 1:   s = sqrt(1 + z^2), rho = s - 1 as z^2 / (s + 1) below z^2 = 1,
 *                                                       g = 1 / s;
 *   alpha = -2:  r = 1 / (1 + z^2 / 4), rho = 2 (1 - r) as (z^2 / 2) r below
 *                z^2 = 4,                               g = r^2.
 * |x - t| = inf gives the limits: rho = inf (alpha >= 0) or |k|, and the
 * gradient 0, sign(d) / scale or sign(d) inf as alpha is below, at or
 * above 1. Where z is finite but z^2 overflows (|z| above about 1.8e19 in
 * float32, 1.3e154 in float64), q = inf in the forms above; there q is so
 * large that 1 + q is q, so (1 + q)^(alpha/2) = |z|^alpha b^(-alpha/2)
 * and d rho / dx = sign(z) |z|^(alpha - 1) b^(1 - alpha/2) / scale, by pow
 * (log(z^2 / 2) for alpha = 0; alpha = 2 has no q). For alpha < 0 the
 * powers are of u = |z| / sqrt(b) instead, as u^alpha and sqrt(b)
 * u^(alpha - 1): b^(1 - alpha/2) alone overflows at alpha = -1000, where
 * for 0 < alpha < 2 (b <= 2) the constants are moderate and u could
 * overflow (b near 0). */
LK_AI void robust_body(const robust *r, int mode, lk_elem *e)
{
    lk_v d = lk_sub(e->x, e->t), z = lk_mul(d, lk_set(r->inv_scale)), one = lk_set(1.0);
    lk_v gz = lk_mul(z, lk_set(r->inv_scale)); /* d (z^2 / 2) / dx */
    lk_v z2 = lk_mul(z, z), g, rho;
    if (mode == ROBUST_TWO) {
        rho = lk_mul(lk_set(0.5), z2);
        g = one;
    } else if (mode == ROBUST_ZERO) {
        lk_v hz2 = lk_mul(lk_set(0.5), z2);
        rho = lk_log1p(hz2);
        g = lk_div(one, lk_add(one, hz2));
    } else if (mode == ROBUST_ONE) {
        lk_v s = lk_sqrt(lk_add(one, z2));
        rho = lk_select(lk_lt(z2, one), lk_div(z2, lk_add(s, one)), lk_sub(s, one));
        g = lk_div(one, s);
    } else if (mode == ROBUST_MTWO) {
        lk_v q = lk_mul(lk_set(0.25), z2), rr = lk_div(one, lk_add(one, q));
        rho = lk_select(lk_lt(q, one), lk_mul(lk_add(q, q), rr),
                        lk_mul(lk_set(2.0), lk_sub(one, rr)));
        g = lk_mul(rr, rr);
    } else {
        lk_v q = lk_mul(z2, lk_set(r->inv_b));
        lk_v L = lk_log1p(q);
        lk_v y = lk_mul(lk_set(r->half_alpha), L);
        lk_v near = lk_min(one, lk_max(lk_set(-1.0), y)); /* NaN stays NaN */
        lk_v m1 = robust_expm1_1(near), m;
        if (lk_all(lk_le(lk_abs(y), one))) {
            /* every lane on the series (the common case: |y| <= 1 holds up
             * to z^2 = |alpha - 2| (e^(2 / |alpha|) - 1)): g = (1 + q)^(alpha/2)
             * / (1 + q) from the series' value, a reciprocal for the exp */
            m = m1;
            g = lk_mul(lk_add(one, m1), lk__recip_fast(lk_add(one, q)));
        } else if (mode == ROBUST_POS) {
            g = lk_exp_neg(lk_mul(lk_set(r->neg_half_b), L));
            lk_v far = lk_sub(lk_mul(lk_add(one, q), g), one);
            m = lk_select(lk_gt(y, one), far, m1);
            /* q = inf (also for an infinite d): (1 + q) g is inf 0 */
            m = lk_select(lk_eq(q, lk_set(HUGE_VAL)), q, m);
        } else {
            lk_v ey = lk_exp_neg(y);
            g = lk_div(ey, lk_add(one, q));
            m = lk_select(lk_lt(y, lk_set(-1.0)), lk_sub(ey, one), m1);
        }
        rho = lk_mul(lk_set(r->k), m);
    }
    robust_pair o = {rho, lk_mul(gz, g)};
    /* z^2 overflowed, tested once per vector */
    if (lk_any(lk_eq(z2, lk_set(HUGE_VAL))))
        o = robust_far(r, mode, d, z, z2, o);
    e->loss = o.loss, e->grad = o.grad;
}

#define ROBUST_FAMILY(name, mode)                                                                  \
    LK_AI void robust_elem_##name(const robust *r, lk_elem *e)                                     \
    {                                                                                              \
        robust_body(r, mode, e);                                                                   \
    }                                                                                              \
    LK_KERNELS_ELEMENTWISE(robust_##name, robust, robust_elem_##name, LK_EW_WEIGHT)

ROBUST_FAMILY(pos, ROBUST_POS)
ROBUST_FAMILY(neg, ROBUST_NEG)
ROBUST_FAMILY(two, ROBUST_TWO)
ROBUST_FAMILY(zero, ROBUST_ZERO)
ROBUST_FAMILY(one, ROBUST_ONE)
ROBUST_FAMILY(mtwo, ROBUST_MTWO)

static int robust_pick(const void *inst)
{
    return ((const robust *)inst)->mode;
}

LK_LOSS_DESC(robust, robust, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&robust_pos__family, &robust_neg__family, &robust_two__family,
                         &robust_zero__family, &robust_one__family, &robust_mtwo__family),
             reg_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = robust_init, .pick = robust_pick),
             .summary = "Barron's general robust loss rho(x - t; alpha, scale)",
             .params = robust_params)
