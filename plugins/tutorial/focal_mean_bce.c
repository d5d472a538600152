/* focal_mean_bce: the tutorial's FocalLoss, alpha (1 - e^-B)^gamma B on the
 * mean BCE B of the whole tensor (not per element: kept under its own name
 * so that the tutorial's numbers reproduce). Statistics: the BCE sum and
 * the count. */
#include "tutorial.h"

typedef struct fmb {
    double alpha, gamma;
} fmb;

static const lk_param_desc fmb_alpha = {
    .name = "alpha",
    .doc = "scale of the modulated mean BCE",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.8,
    .min = 0.0,
    .max = 1.0,
};

static const lk_param_desc fmb_gamma = {
    .name = "gamma",
    .doc = "exponent of (1 - exp(-B))",
    .type = LK_PARAM_NUMBER,
    .default_number = 2.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc *const fmb_params[] LK__UNUSED = {&fmb_alpha, &fmb_gamma, NULL};

static lk_status fmb_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    fmb *f = inst;
    f->alpha = p[0].number;
    f->gamma = p[1].number;
    return LK_OK;
}

LK_AI void fmb_stats(const fmb *f, lk_elem *e, lk_v *s)
{
    (void)f;
    lk_sigm p = e->sig; /* from the driver, a vector ahead (LK_EW_SIGMOID) */
    s[0] = lk_bce_logits_of1(&p, e->sig_L, e->t);
    s[1] = lk_set(1.0);
}

/* An empty tensor's mean BCE is 0 (a mean over nothing, docs/design.md),
 * where torch gives 0/0 = NaN: the value is then 0. */
static lk_status fmb_finalize(const void *inst, const lk_plan *plan, const double *st,
                              int32_t reduction, double *value, lk_msg *msg)
{
    const fmb *f = inst;
    double b = st[1] != 0.0 ? st[0] / st[1] : 0.0;
    *value = f->alpha == 0.0 ? 0.0 : f->alpha * (pow(-expm1(-b), f->gamma) * b);
    return LK_OK;
}

/* k[0] = d value / dB / n, with d value / dB = alpha [u^gamma + gamma
 * u^(gamma-1) e^-B B], u = 1 - e^-B; the second term tends to 0 as B -> 0
 * (gamma > 0) and as B -> inf. */
static void fmb_consts(const void *inst, const double *g, double *k)
{
    const fmb *f = inst;
    if (g[1] == 0.0) { /* no element: no gradient to scale */
        k[0] = 0.0;
        return;
    }
    double b = g[0] / g[1], d;
    if (b == 0.0) {
        d = f->gamma == 0.0 ? f->alpha : 0.0;
    } else {
        double u = -expm1(-b);
        double tail = isinf(b) ? 0.0 : f->gamma * pow(u, f->gamma - 1.0) * exp(-b) * b;
        d = f->alpha * (pow(u, f->gamma) + tail);
    }
    k[0] = d / g[1];
}

LK_AI void fmb_grad(const fmb *f, const lk_v *k, lk_elem *e)
{
    (void)f;
    lk_sigm p = e->sig;
    e->grad = lk_mul(k[0], lk_sigm_minus_t(&p, e->t));
}

LK_STATS_LOSS(focal_mean_bce, fmb, 2, fmb_stats, fmb_consts, fmb_grad,
              LK_EW_UNIT_TARGET | LK_EW_SIGMOID,
              LK_HOOKS(.init = fmb_init, .finalize = fmb_finalize),
              .summary = "the tutorial's FocalLoss: alpha (1 - e^-B)^gamma B on the mean BCE B",
              .version = "1.1.0", .params = fmb_params, .slots = tut_logit_slots)
