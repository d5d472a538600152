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
#include <float.h>

#include "regression.h"

/* The kernel families, one per form, and one for a scale far from 1 in
 * either lanes' type (robust_zs_of), whatever the form (their order in
 * LK_FAMILIES). */
enum { ROBUST_POS, ROBUST_NEG, ROBUST_TWO, ROBUST_ZERO, ROBUST_ONE, ROBUST_MTWO, ROBUST_RESCALED };

/* z = d / scale where 1 / scale, or scale itself, is not a normal number
 * of the lanes' type with room to spare (|ilogb(scale)| above lim): with
 * scale = c 2^-k, c in [1, 2), z = (d s1 s2) inv_c, s1 s2 = 2^k and inv_c =
 * 1 / c, each factor a normal number, so that d = 0 gives z = 0 (not 0
 * times an infinite 1 / scale) and a subnormal d its true z. In float lanes
 * k is held to [-252, 252] (s1 and s2 floats): for a scale below 2^-252 any
 * nonzero d then still gives z^2 beyond the lanes' forms, which takes the
 * exact far path from d and scale themselves; above 2^252, z is below
 * 2^-124 and rho and the gradient round to 0 either way. */
typedef struct robust_zs {
    int on;
    double s1, s2, inv_c;
} robust_zs;

static robust_zs robust_zs_of(double scale, int lim, int kmax)
{
    robust_zs o = {0, 1.0, 1.0, 1.0};
    if (!isfinite(scale) || abs(ilogb(scale)) <= lim)
        return o;
    int k = -ilogb(scale), kc = k > kmax ? kmax : k < -kmax ? -kmax : k;
    o.on = 1;
    o.s1 = ldexp(1.0, kc / 2);
    o.s2 = ldexp(1.0, kc - kc / 2);
    o.inv_c = 1.0 / ldexp(scale, k);
    return o;
}

typedef struct robust {
    int mode;
    double alpha, scale, inv_scale;
    double b;          /* |alpha - 2| */
    double inv_b;      /* 1 / |alpha - 2| */
    double half_alpha; /* alpha / 2 */
    double neg_half_b; /* -|alpha - 2| / 2 = alpha / 2 - 1 */
    double k;          /* |alpha - 2| / alpha */
    double grad_inf;   /* |d rho / dx| at |x - t| = inf, times sign(d) */
    double log2b;      /* log2 |alpha - 2| */
    /* z^2 above far_t (float lanes: far_t32) takes robust_far1 (see
     * robust_body) */
    double far_t, far_t32;
    /* a scale far from 1 for the lanes' type (robust_zs_of): double lanes,
     * float lanes */
    robust_zs zs, zs32;
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

/* The z^2 up to which the lanes' forms hold in a dtype of largest number
 * max: z^2, q = z^2 / b and z / scale finite, 1 / (1 + q) and (1 + q)^(alpha
 * / 2 - 1) normal numbers: z^2 <= max / 16, q <= max / 16 and |z / scale| <=
 * max / 2. Not below b, where q = 1 (the far forms want q >= 1; a scale
 * that small, below 2 sqrt(b) / max, is beyond any use). */
static double robust_far_t(double max, double b, double scale)
{
    double t = fmin(max, max * b) / 16.0, g = 0.5 * max * scale;
    return fmax(fmin(t, g * g), b);
}

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
    r->scale = p[1].number;
    r->inv_scale = 1.0 / p[1].number;
    r->b = b;
    r->inv_b = b > 0.0 ? 1.0 / b : 0.0;
    r->half_alpha = 0.5 * a;
    r->neg_half_b = -0.5 * b;
    r->k = a != 0.0 ? b / a : 0.0;
    /* |z|^(alpha - 1) as z -> inf: 0 below alpha = 1, 1 at 1, inf above */
    r->grad_inf = a < 1.0 ? 0.0 : a == 1.0 ? r->inv_scale : HUGE_VAL;
    r->log2b = b > 0.0 ? log2(b) : 0.0;
    r->far_t = a == 2.0 ? HUGE_VAL : robust_far_t(DBL_MAX, b, r->scale);
    r->far_t32 = a == 2.0 ? HUGE_VAL : (float)robust_far_t(FLT_MAX, b, r->scale);
    r->zs = robust_zs_of(r->scale, 1000, 2044);
    r->zs32 = robust_zs_of(r->scale, 100, 252);
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

/* rho and d rho / dx of one element far out, in double, for any d (z and
 * z^2 may be beyond the range of any float type) with q = z^2 / b >= 1
 * (above 1e34 but for absurd scales, robust_far_t), from the exponents and
 * mantissas: |z| = m 2^E exactly but for the rounding of m = m_d / m_c in
 * (1/2, 2) (frexp of |d| and of the scale), so
 *   log2(1 + q) = 2E + s,   s = 2 log2 m - log2 b + log2(1 + 1/q),
 * s moderate (no cancellation for q >= 1) and 1/q = (b / m^2) 2^(-2E),
 * tiny but for absurd scales. Then, with Y = alpha/2
 * log2(1 + q),
 *   rho = k (2^Y - 1):  by expm1 where |Y| <= 1 (alpha near 0: no
 *                       cancellation, and alpha = 0 is log(1 + q));
 *                       elsewhere 2^Y = 2^n 2^f, n an integer, |f| <=
 *                       1/2, with alpha E split exactly (its rounding
 *                       error by an fma), so that a large Y carries no
 *                       rounding of its own into 2^Y;
 *   |d rho / dx| = |z| / c (1 + q)^(alpha/2 - 1) = 2^(alpha E - E - e_c +
 *                       log2 m + (alpha/2 - 1) s) / m_c, from the same
 *                       split (the exponent from alpha itself: b = |alpha
 *                       - 2| is rounded, and its rounding times log(1 + q)
 *                       would be 1e-13 of the result at alpha = 1e-6).
 * ldexp gives +inf beyond the range and the subnormals below it. |d| =
 * inf gives the limits: rho = inf (alpha >= 0) or |k|, and the gradient 0,
 * sign(d) / scale or sign(d) inf as alpha is below, at or above 1. */
static void robust_far1(const robust *r, double d, double *loss, double *grad)
{
    static const double ln2 = 0.69314718055994530942;
    double a = r->alpha;
    if (isinf(d)) {
        *loss = a >= 0.0 ? HUGE_VAL : -r->k;
        *grad = copysign(r->grad_inf, d);
        return;
    }
    int ed, ec;
    double md = frexp(fabs(d), &ed), mc = frexp(r->scale, &ec);
    double m = md / mc, lm = log2(m), E = (double)ed - ec;
    double s = 2.0 * lm - r->log2b + log1p(ldexp(r->b / (m * m), -2 * (ed - ec))) / ln2;
    double L2 = 2.0 * E + s, y = 0.5 * a * L2;
    /* alpha E = n + pf exactly but for pf's last rounding */
    double p = a * E, n = rint(p), pf = (p - n) + fma(a, E, -p);
    if (a == 0.0) {
        *loss = L2 * ln2;
    } else if (fabs(y) <= 1.0) {
        *loss = r->k * expm1(y * ln2);
    } else {
        double f = pf + 0.5 * a * s, n1 = rint(f);
        *loss = ldexp(r->k * exp2(f - n1), (int)(n + n1)) - r->k;
    }
    double f = lm + pf + (0.5 * a - 1.0) * s, n1 = rint(f);
    *grad = copysign(ldexp(exp2(f - n1) / mc, (int)(n + n1 - E - ec)), d);
}

/* The lanes whose z^2 is above the threshold, by robust_far1 one at a
 * time; the others keep o. Out of line and rare: only residuals beyond
 * about 4.6e18 scales (float lanes) or 3.4e153 (double lanes), fewer for
 * alpha near 2, come here. */
typedef struct robust_pair {
    lk_v loss, grad;
} robust_pair;

static __attribute__((noinline)) robust_pair robust_far(const robust *r, lk_v d, lk_v z2,
                                                        robust_pair o)
{
#if defined(LK_LANES_F32)
    const lk_s far_t = (lk_s)r->far_t32;
#else
    const lk_s far_t = (lk_s)r->far_t;
#endif
    lk_s dd[LK_W], zz[LK_W], lo[LK_W], gr[LK_W];
    lk_store(dd, d), lk_store(zz, z2), lk_store(lo, o.loss), lk_store(gr, o.grad);
    for (int j = 0; j < LK_W; j++)
        if (zz[j] > far_t) {
            double l, g;
            robust_far1(r, (double)dd[j], &l, &g);
            lo[j] = (lk_s)l, gr[j] = (lk_s)g;
        }
    o.loss = lk_load(lo), o.grad = lk_load(gr);
    return o;
}

/* The lanes whose z^2 is beyond the lanes' forms (NaN is not). */
LK_AI lk_m robust_beyond(const robust *r, lk_v z2)
{
#if defined(LK_LANES_F32)
    return lk_gt(z2, lk_set(r->far_t32));
#else
    return lk_gt(z2, lk_set(r->far_t));
#endif
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
 * The gradient is (z / scale) g with g's factors multiplied in one at a
 * time (z/scale r r, z/scale / (1 + q) exp(y)), so that no factor
 * underflows where the product would not (at alpha = -2, z = 1e100:
 * 1.6e-299, where r^2 is 0).
 * These forms need z^2, q and z / scale finite and 1 / (1 + q) and g
 * normal numbers: above z^2 = far_t (robust_far_t: max / 16, or max b / 16
 * for b < 1, so |z| above about 4.6e18 in float32 and 3.4e153 in float64
 * for b >= 1; less for a scale below about 3e-20 or 4e-155), and where z or
 * z^2 overflowed (also for an infinite d), each element is computed by
 * robust_far1 instead, from d and scale themselves: one compare per
 * vector, the rest a rare branch. alpha = 2 needs none: z^2 / 2 and z /
 * scale overflow only where rho and the gradient do. */
LK_AI void robust_body(const robust *r, int mode, int rescaled, lk_elem *e)
{
#if defined(LK_LANES_F32)
    const robust_zs *zs = &r->zs32;
#else
    const robust_zs *zs = &r->zs;
#endif
    lk_v d = lk_sub(e->x, e->t), one = lk_set(1.0), z, gz;
    if (rescaled && zs->on) { /* a scale far from 1 (robust_zs_of) */
        lk_v s1 = lk_set(zs->s1), s2 = lk_set(zs->s2), ic = lk_set(zs->inv_c);
        z = lk_mul(lk_mul(lk_mul(d, s1), s2), ic);
        gz = lk_mul(lk_mul(z, ic), s1); /* times s2 once g is in (below) */
    } else {
        z = lk_mul(d, lk_set(r->inv_scale));
        gz = lk_mul(z, lk_set(r->inv_scale));
    }
    lk_v z2 = lk_mul(z, z), grad, rho;
    if (mode == ROBUST_TWO) {
        rho = lk_mul(lk_set(0.5), z2);
        grad = gz;
    } else if (mode == ROBUST_ZERO) {
        lk_v hz2 = lk_mul(lk_set(0.5), z2);
        rho = lk_log1p(hz2);
        grad = lk_div(gz, lk_add(one, hz2));
    } else if (mode == ROBUST_ONE) {
        lk_v s = lk_sqrt(lk_add(one, z2));
        rho = lk_select(lk_lt(z2, one), lk_div(z2, lk_add(s, one)), lk_sub(s, one));
        grad = lk_div(gz, s);
    } else if (mode == ROBUST_MTWO) {
        lk_v q = lk_mul(lk_set(0.25), z2), rr = lk_div(one, lk_add(one, q));
        rho = lk_select(lk_lt(q, one), lk_mul(lk_add(q, q), rr),
                        lk_mul(lk_set(2.0), lk_sub(one, rr)));
        grad = lk_mul(lk_mul(gz, rr), rr);
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
            grad = lk_mul(gz, lk_mul(lk_add(one, m1), lk__recip_fast(lk_add(one, q))));
        } else if (mode == ROBUST_POS) {
            lk_v g = lk_exp_neg(lk_mul(lk_set(r->neg_half_b), L));
            lk_v far = lk_sub(lk_mul(lk_add(one, q), g), one);
            m = lk_select(lk_gt(y, one), far, m1);
            grad = lk_mul(gz, g);
        } else {
            lk_v ey = lk_exp_neg(y);
            grad = lk_mul(lk_div(gz, lk_add(one, q)), ey);
            m = lk_select(lk_lt(y, lk_set(-1.0)), lk_sub(ey, one), m1);
        }
        rho = lk_mul(lk_set(r->k), m);
    }
    if (rescaled && zs->on) /* z / scale = gz s2: g first, where z / scale alone may overflow */
        grad = lk_mul(grad, lk_set(zs->s2));
    robust_pair o = {rho, grad};
    if (mode != ROBUST_TWO && lk_any(robust_beyond(r, z2))) /* once per vector */
        o = robust_far(r, d, z2, o);
    e->loss = o.loss, e->grad = o.grad;
}

#define ROBUST_FAMILY(name, mode)                                                                  \
    LK_AI void robust_elem_##name(const robust *r, lk_elem *e)                                     \
    {                                                                                              \
        robust_body(r, mode, 0, e);                                                                \
    }                                                                                              \
    LK_KERNELS_ELEMENTWISE(robust_##name, robust, robust_elem_##name, LK_EW_WEIGHT)

ROBUST_FAMILY(pos, ROBUST_POS)
ROBUST_FAMILY(neg, ROBUST_NEG)
ROBUST_FAMILY(two, ROBUST_TWO)
ROBUST_FAMILY(zero, ROBUST_ZERO)
ROBUST_FAMILY(one, ROBUST_ONE)
ROBUST_FAMILY(mtwo, ROBUST_MTWO)

/* A scale far from 1: the form chosen per call (a rare family, kept out of
 * the others' loops), z formed through robust_zs where the lanes' type
 * needs it. */
LK_AI void robust_elem_rescaled(const robust *r, lk_elem *e)
{
    robust_body(r, r->mode, 1, e);
}
LK_KERNELS_ELEMENTWISE(robust_rescaled, robust, robust_elem_rescaled, LK_EW_WEIGHT)

static int robust_pick(const void *inst)
{
    const robust *r = inst;
    return r->zs.on || r->zs32.on ? ROBUST_RESCALED : r->mode;
}

LK_LOSS_DESC(robust, robust, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&robust_pos__family, &robust_neg__family, &robust_two__family,
                         &robust_zero__family, &robust_one__family, &robust_mtwo__family,
                         &robust_rescaled__family),
             reg_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = robust_init, .pick = robust_pick),
             .summary = "Barron's general robust loss rho(x - t; alpha, scale)",
             .params = robust_params)
