/* gaussian_nll: torch's Gaussian negative log-likelihood with a predicted
 * variance per element,
 *   0.5 (log v + (x - t)^2 / v),  v = max(var, eps),
 * plus 0.5 log(2 pi) with full. As torch, var is clamped at eps without
 * the clamp entering the gradient: the gradients are those of the formula
 * at v, for every element,
 *   d / dx = (x - t) / v,   d / dvar = 0.5 (v - (x - t)^2) / v^2. */
#include "regression.h"

typedef struct gaussian_nll {
    double eps, add; /* add: 0.5 log(2 pi) with full, else 0 */
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
 * gradient 0.5 (v - d^2) r^2, which is 0 for v = inf (r^2 = 0 there makes
 * the product 0, where inf times 0 would be NaN). A negative
 * var, which torch refuses, gives NaN; NaN passes through the clamp. */
LK_AI void gaussian_elem(const gaussian_nll *g, lk_elem *e)
{
    lk_v d = lk_sub(e->x, e->t), half = lk_set(0.5);
    lk_v v = lk_max(lk_set(g->eps), e->u); /* max() gives u where u is NaN */
    lk_m neg = lk_lt(e->u, lk_zero());
    v = lk_select(neg, lk_set(NAN), v);
    lk_v r = lk_div(lk_set(1.0), v), q = lk_mul(d, r);
    lk_v loss = lk_mul(half, lk_add(lk_log(v), lk_mul(d, q)));
    e->loss = g->add != 0.0 ? lk_add(loss, lk_set(g->add)) : loss;
    e->grad = q;
    /* (v - d^2) / v^2 with d^2 exact inside the fma: 1/v - (d/v)^2 would
     * cancel where d^2 is near v, losing float32's last digits */
    e->grad_u = lk_mul0(lk_mul(r, r), lk_mul(half, lk_fnma(d, d, v)));
}

LK_ELEMENTWISE_LOSS(gaussian_nll, gaussian_nll, gaussian_elem,
                    LK_EW_THIRD | LK_EW_GRAD_U | LK_EW_WEIGHT,
                    LK_HOOKS(.init = gaussian_init, .plan = gaussian_plan),
                    .summary = "Gaussian negative log-likelihood with a variance per element "
                               "(torch's gaussian_nll_loss)",
                    .params = gaussian_params, .slots = gaussian_slots)
