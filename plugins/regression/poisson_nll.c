/* poisson_nll: torch's Poisson negative log-likelihood,
 *   log_input:  exp(x) - t x,          gradient exp(x) - t
 *   otherwise:  x - t log(x + eps),    gradient 1 - t / (x + eps)
 * plus, with full, Stirling's approximation of log(t!) where t > 1,
 *   t log t - t + 0.5 log(2 pi t), which has no gradient. */
#include <float.h>

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

/* The loss is one fused multiply-add, exp(x) - t x or x - t log(x + eps),
 * with x or the log read as 0 where t is 0, so that t x and t log(x + eps)
 * are 0 there also for an infinite x or x = -eps (the layer's 0 inf = 0
 * rule; torch gives NaN); not for a NaN x, nor, with log_input false, for
 * x + eps < 0, where the log is NaN and so is the loss, as torch's. x =
 * +inf gives +inf, the limit, where torch computes inf - inf: the x of t x
 * and the x + eps of the log are capped at a bound beyond which exp(x), or
 * x itself, is +inf already (exp(x) is inf above 89 in float32 and 710 in
 * float64; a finite x + eps is below the largest finite number), so that
 * +inf minus t times the cap is +inf for a finite t and NaN for a NaN or
 * +inf one. The gradient 1 - t / (x + eps) divides t itself, so that a
 * subnormal rate and target give their ratio (1 / (x + eps) alone is inf
 * there). */
LK_AI void poisson_elem(const poisson_nll *s, lk_elem *e)
{
    lk_v x = e->x, t = e->t;
    if (s->log_input) {
        lk_v ex = lk_exp(x);
#if defined(LK_LANES_F32)
        lk_v xc = lk_min(lk_set(89.0), x); /* NaN stays NaN */
#else
        lk_v xc = lk_min(lk_set(710.0), x);
#endif
        /* exp(x) - t x, with x read as 0 where t = 0 */
        e->loss = lk_fnma(t, lk_clear(lk_eq(t, lk_zero()), xc), ex);
        e->grad = lk_sub(ex, t);
    } else {
        lk_v xe = lk_add(x, lk_set(s->eps));
#if defined(LK_LANES_F32)
        lk_v xec = lk_min(lk_set(FLT_MAX), xe); /* NaN stays NaN */
#else
        lk_v xec = lk_min(lk_set(DBL_MAX), xe);
#endif
        /* t = 0 and x + eps >= 0 (false for NaN) */
        lk_m t0 = lk_and(lk_eq(t, lk_zero()), lk_ge(xe, lk_zero()));
        /* x - t log(x + eps), with the log read as 0 there */
        e->loss = lk_fnma(t, lk_clear(t0, lk_log(xec)), x);
        e->grad = lk_sub(lk_set(1.0), lk_clear(t0, lk_div(t, xe)));
    }
    if (s->full) {
        lk_m big = lk_gt(t, lk_set(1.0));
#if defined(LK_LANES_F32)
        lk_v lt = lk_log(t);
#else
        /* the log of the lanes that use it: a target of 0 (log 0 = -inf)
         * sends the vector math library's double log down its lane-by-lane
         * path for special arguments (the float lanes' own log takes it in
         * its stride) */
        lk_v lt = lk_log(lk_select(big, t, lk_set(1.0)));
#endif
        lk_v st = lk_fma(t, lk_sub(lt, lk_set(1.0)),
                         lk_mul(lk_set(0.5), lk_add(lt, lk_set(1.8378770664093454836))));
        e->loss = lk_add(e->loss, lk_keep(big, st));
    }
}

LK_ELEMENTWISE_LOSS(poisson_nll, poisson_nll, poisson_elem, LK_EW_WEIGHT,
                    LK_HOOKS(.init = poisson_init),
                    .summary = "Poisson negative log-likelihood (torch's poisson_nll_loss)",
                    .params = poisson_params, .slots = poisson_slots,
                    /* exp(input) overflows to inf for a finite input, as torch's */
                    .flags = LK_LOSS_FUSED | LK_LOSS_UNBOUNDED)
