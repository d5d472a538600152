/* poisson_nll: torch's Poisson negative log-likelihood,
 *   log_input:  exp(x) - t x,          gradient exp(x) - t
 *   otherwise:  x - t log(x + eps),    gradient 1 - t / (x + eps)
 * plus, with full, Stirling's approximation of log(t!) where t > 1,
 *   t log t - t + 0.5 log(2 pi t), which has no gradient. */
#include "regression.h"

typedef struct poisson_nll {
    int log_input, full;
    double eps;
} poisson_nll;

static const lk_param_desc poisson_log_input = {
    .name = "log_input",
    .doc = "true: input is the log of the rate; false: input is the rate itself",
    .type = LK_PARAM_BOOL,
    .default_number = 1.0,
};
static const lk_param_desc poisson_full = {
    .name = "full",
    .doc = "add Stirling's approximation of log(target!) where target > 1",
    .type = LK_PARAM_BOOL,
    .default_number = 0.0,
};
static const lk_param_desc poisson_eps = {
    .name = "eps",
    .doc = "added to the rate inside the log when log_input is false",
    .type = LK_PARAM_NUMBER,
    .default_number = 1e-8,
    .min = 0.0,
    .max = HUGE_VAL,
};
static const lk_param_desc *const poisson_params[] LK__UNUSED = {&poisson_log_input, &poisson_full,
                                                                 &poisson_eps, NULL};

static const lk_slot_desc poisson_input LK__UNUSED = {
    .name = "input",
    .doc = "log-rates (log_input true, any real) or rates (log_input false, >= 0)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
};
static const lk_slot_desc poisson_target LK__UNUSED = {
    .name = "target",
    .doc = "observed counts >= 0, shaped like input (not differentiable)",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_NONNEGATIVE,
};
static const lk_slot_desc *const poisson_slots[] LK__UNUSED = {&poisson_input, &poisson_target,
                                                               &reg_weight, NULL};

static lk_status poisson_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    poisson_nll *s = inst;
    s->log_input = p[0].integer != 0;
    s->full = p[1].integer != 0;
    s->eps = p[2].number;
    return LK_OK;
}

/* t x and t log(x + eps) are 0 where t is 0, also for an infinite x (the
 * layer's 0 inf = 0 rule; torch gives NaN there). x = +inf gives +inf, the
 * limit, where torch computes inf - inf. */
LK_AI void poisson_elem(const poisson_nll *s, lk_elem *e)
{
    lk_v x = e->x, t = e->t, inf = lk_set(HUGE_VAL);
    lk_m pinf = lk_eq(x, inf);
    if (s->log_input) {
        lk_v ex = lk_exp(x);
        e->loss = lk_select(pinf, inf, lk_sub(ex, lk_mul0(t, x)));
        e->grad = lk_sub(ex, t);
    } else {
        lk_v xe = lk_add(x, lk_set(s->eps));
        e->loss = lk_select(pinf, inf, lk_sub(x, lk_mul0(t, lk_log(xe))));
        e->grad = lk_sub(lk_set(1.0), lk_mul0(t, lk_div(lk_set(1.0), xe)));
    }
    if (s->full) {
        lk_v lt = lk_log(t);
        lk_v st = lk_fma(t, lk_sub(lt, lk_set(1.0)),
                         lk_mul(lk_set(0.5), lk_add(lt, lk_set(1.8378770664093454836))));
        e->loss = lk_add(e->loss, lk_keep(lk_gt(t, lk_set(1.0)), st));
    }
}

LK_ELEMENTWISE_LOSS(poisson_nll, poisson_nll, poisson_elem, LK_EW_WEIGHT,
                    LK_HOOKS(.init = poisson_init),
                    .summary = "Poisson negative log-likelihood (torch's poisson_nll_loss)",
                    .params = poisson_params, .slots = poisson_slots,
                    /* exp(input) overflows to inf for a finite input, as torch's */
                    .flags = LK_LOSS_FUSED | LK_LOSS_UNBOUNDED)
