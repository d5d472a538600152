/* gaussian_nll: torch's Gaussian negative log-likelihood with a predicted
 * variance per element,
 *   0.5 (log v + (x - t)^2 / v),  v = max(var, eps),
 * plus 0.5 log(2 pi) with full. As torch, var is clamped at eps without
 * the clamp entering the gradient: the gradients are those of the formula
 * at v, for every element,
 *   d / dx = (x - t) / v,   d / dvar = 0.5 (v - (x - t)^2) / v^2. */
#include <float.h>

#include "regression.h"

typedef struct gaussian_nll {
    double eps, add; /* add: 0.5 log(2 pi) with full, else 0 */
    /* 1 / eps overflows the lanes' type (float lanes: tiny32), so that 1 /
     * v may be inf (gaussian_elem) */
    int tiny, tiny32;
} gaussian_nll;

static const lk_param_desc gaussian_full = {
    .name = "full",
    .doc = "add the constant 0.5 log(2 pi) to every element",
    .type = LK_PARAM_BOOL,
    .default_number = 0.0,
};
static const lk_param_desc gaussian_eps = {
    .name = "eps",
    .doc = "var is clamped below at eps (the clamp passes no gradient)",
    .type = LK_PARAM_NUMBER,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
    .default_number = 1e-6,
    .min = 0.0,
    .max = HUGE_VAL,
};
static const lk_param_desc *const gaussian_params[] LK__UNUSED = {&gaussian_full, &gaussian_eps,
                                                                  NULL};

/* var is declared ANY so that plan() can say why torch's broadcast shapes
 * are refused; it must have the input's shape exactly. */
static const lk_slot_desc gaussian_var LK__UNUSED = {
    .name = "var",
    .doc = "predicted variances >= 0, shaped like input exactly (torch's broadcast forms are "
           "refused)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_POSITIVE,
};
static const lk_slot_desc *const gaussian_slots[] LK__UNUSED = {&reg_input, &reg_target,
                                                                &gaussian_var, &reg_weight, NULL};

static lk_status gaussian_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    gaussian_nll *g = inst;
    g->add = p[0].integer ? 0.91893853320467274178 : 0.0;
    g->eps = p[1].number;
    g->tiny = isinf(1.0 / g->eps);
    g->tiny32 = isinf(1.0f / (float)g->eps);
    return LK_OK;
}

static lk_status gaussian_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                               lk_plan *plan, lk_msg *msg)
{
    (void)inst, (void)reduction, (void)plan;
    const lk_tensor *x = &slots[0], *v = &slots[2];
    int same = v->ndim == x->ndim;
    for (int32_t d = 0; same && d < x->ndim; d++)
        same = v->shape[d] == x->shape[d];
    if (same)
        return LK_OK;
    char vs[160], xs[160];
    lk_shape_str(vs, sizeof vs, v->ndim, v->shape);
    lk_shape_str(xs, sizeof xs, x->ndim, x->shape);
    return lk_fail(msg, LK_ERR_SHAPE,
                   "var has shape %s but must have the input's shape %s: torch's broadcast "
                   "forms (the input's shape without its last dimension, or with it 1) are not "
                   "accepted; expand var to the input's shape",
                   vs, xs);
}

/* r = 1 / v and q = (x - t) r: the loss is 0.5 (log v + d q) and the var
 * gradient 0.5 (v - d^2) r r, v - d^2 in one fma (d^2 exact inside it:
 * 1/v - (d/v)^2 would cancel where d^2 is near v, losing float32's last
 * digits), multiplied by r twice, so that it stays accurate down to the
 * subnormals (r^2 alone is subnormal from v = 9e18 in float32, 7e153 in
 * float64, and 0 from 4e22 and 6e161, where the gradient, about 0.5 / v,
 * is not). v enters the fma capped at the dtype's largest finite number,
 * so that v = inf gives a finite v - d^2 and (v - d^2) 0 0 = 0, the limit,
 * while a NaN d still gives NaN. Where v - d^2 overflows (|d| beyond about
 * 1.8e19 in float32, 1.3e154 in float64, or infinite; a rare branch) the
 * gradient is 0.5 (r - q^2) instead: there d^2 > max >= v, so nothing
 * cancels but near v = max, and d = inf gives -inf (v = inf as well: NaN,
 * as the loss). A negative var, which torch refuses, gives NaN; NaN passes
 * through the clamp and the cap (min and max give their second operand
 * for NaN). */
/* c - a b rounded once on every target: the portable lane's lk_fnma is a
 * product and a difference, two roundings */
#if defined(LK_TARGET_PORTABLE) && defined(LK_LANES_F32)
#define gn_fnma(a, b, c) fmaf(-(a), (b), (c))
#elif defined(LK_TARGET_PORTABLE)
#define gn_fnma(a, b, c) fma(-(a), (b), (c))
#else
#define gn_fnma lk_fnma
#endif

LK_AI void gaussian_elem(const gaussian_nll *g, lk_elem *e)
{
    lk_v d = lk_sub(e->x, e->t), half = lk_set(0.5);
    lk_v v = lk_max(lk_set(g->eps), e->u); /* max() gives u where u is NaN */
    lk_m neg = lk_lt(e->u, lk_zero());
    v = lk_select(neg, lk_set(NAN), v);
    lk_v r = lk_div(lk_set(1.0), v), q = lk_mul(d, r);
    /* v below 1 / max (a subnormal eps and var): r is inf, and d r would
     * be NaN at d = 0; those lanes divide instead (a rare branch, looked
     * for only where eps allows it) */
#if defined(LK_LANES_F32)
    const int may = g->tiny32;
#else
    const int may = g->tiny;
#endif
    lk_m tiny = lk_first(0);
    int any_tiny = 0;
    if (may) {
        tiny = lk_eq(r, lk_set(HUGE_VAL));
        any_tiny = lk_any(tiny);
    }
    if (any_tiny)
        q = lk_select(tiny, lk_div(d, v), q);
    lk_v loss = lk_mul(half, lk_add(lk_log(v), lk_mul(d, q)));
    e->loss = g->add != 0.0 ? lk_add(loss, lk_set(g->add)) : loss;
    e->grad = q;
#if defined(LK_LANES_F32)
    lk_v vmax = lk_min(lk_set(FLT_MAX), v);
#else
    lk_v vmax = lk_min(lk_set(DBL_MAX), v);
#endif
    lk_v h = lk_mul(half, gn_fnma(d, d, vmax));
    lk_v gu = lk_mul(lk_mul(h, r), r);
    lk_m over = lk_eq(h, lk_set(-HUGE_VAL));
    if (lk_any(over))
        gu = lk_select(over, lk_mul(half, lk_fnma(q, q, r)), gu);
    if (any_tiny) /* 0.5 ((v - d^2) / v / v): 0 where v = d^2, not 0 inf; the
                   * half last, where 0.5 v alone would round to 0 */
        gu = lk_select(tiny, lk_mul(half, lk_div(lk_div(gn_fnma(d, d, vmax), v), v)), gu);
    e->grad_u = gu;
}

LK_ELEMENTWISE_LOSS(gaussian_nll, gaussian_nll, gaussian_elem,
                    LK_EW_THIRD | LK_EW_GRAD_U | LK_EW_WEIGHT,
                    LK_HOOKS(.init = gaussian_init, .plan = gaussian_plan),
                    .summary = "Gaussian negative log-likelihood with a variance per element "
                               "(torch's gaussian_nll_loss)",
                    .params = gaussian_params, .slots = gaussian_slots)
