/* focal.c: focal (Lin et al., torchvision's sigmoid_focal_loss), fused and
 * per element, and focal_mean_bce, the tutorial's FocalLoss, which modulates
 * the mean BCE of the whole tensor instead (kept under its own name so that
 * the tutorial's numbers reproduce). */
#include <stdlib.h>

#include "tutorial.h"

static const lk_slot_desc *const focal_slots[] = {
    &tut_slot_input,
    &tut_slot_target,
    NULL,
};

static lk_status focal_create(const lk_create_args *args, void **instance, lk_msg *msg)
{
    if (args->n_params < 2)
        return lk_fail(msg, LK_ERR_INTERNAL, "expected 2 parameters, got %u", args->n_params);
    tut_inst *f = NULL;
    lk_status st = tut_inst_new(args, 0, &f, msg);
    if (st != LK_OK)
        return st;
    f->alpha = args->params[0].number;
    f->gamma = args->params[1].number;
    *instance = f;
    return LK_OK;
}

static lk_status focal_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                            lk_plan *plan, lk_msg *msg)
{
    return tut_plan_binary(slots, 2, plan, msg);
}

static const lk_param_desc focal_gamma = {
    .name = "gamma",
    .doc = "focusing exponent of (1 - p_t)",
    .type = LK_PARAM_NUMBER,
    .default_number = 2.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

/* ------------------------------------------------------------------------ */
/* focal: alpha_t (1 - p_t)^gamma ce                                         */

static const lk_param_desc focal_alpha = {
    .name = "alpha",
    .doc = "alpha_t = alpha t + (1 - alpha)(1 - t); a negative alpha disables it",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.25,
    .min = -1.0,
    .max = 1.0,
};

static const lk_param_desc *const focal_params[] = {&focal_alpha, &focal_gamma, NULL};

/* A binary target, with z = x (2t - 1): 1 - p_t = sigmoid(-z), ce =
 * softplus(-z), and the modulation (1 - p_t)^gamma is sigmoid(-z)^gamma for
 * gamma 1 and 2 and exp(-gamma softplus(z)) otherwise (log space, stable for
 * gamma < 1);
 *   d loss / dx = -(2t - 1) alpha_t m [sigmoid(-z) + gamma sigmoid(z) ce],
 * finite for every gamma >= 0 and every logit. |z| = |x|, so the primitives
 * of x serve z. */
static double focal_binary(const tut_prim *p, double L, double x, double t, double at, double gamma,
                           double *grad)
{
    double sgn = t == 1.0 ? 1.0 : -1.0;
    double z = sgn * x;
    int zpos = z >= 0.0;
    double smz = zpos ? p->e * p->r : p->r; /* sigmoid(-z) */
    double sz = zpos ? p->r : p->e * p->r;  /* sigmoid(z) */
    double ce = (-z > 0.0 ? -z : 0.0) + L;  /* softplus(-z) */
    double m;
    if (gamma == 0.0)
        m = 1.0;
    else if (gamma == 1.0)
        m = smz;
    else if (gamma == 2.0)
        m = smz * smz;
    else
        m = exp(-gamma * ((z > 0.0 ? z : 0.0) + L));
    if (grad)
        *grad = -sgn * at * m * (smz + gamma * tut_mul0(sz, ce));
    return tut_mul0(at, m * ce);
}

/* A soft target: q = 1 - p_t = p (1 - t) + (1 - p) t > 0, and
 *   d loss / dx = alpha_t [(p - t) q^gamma - gamma q^(gamma-1) p(1-p)(2t-1) ce]. */
static double focal_soft(const tut_prim *p, double L, double t, double at, double gamma,
                         double *grad)
{
    double pp = tut_sig(p), p1 = tut_sig_neg(p);
    double q = pp * (1.0 - t) + p1 * t;
    double ce = tut_bce_p(p, L, t, 1.0);
    double m = tut_powg(q, gamma);
    if (grad) {
        double dm = gamma == 0.0 || q == 0.0 ? 0.0 : gamma * tut_powg(q, gamma - 1.0);
        *grad = at * ((pp - t) * m - dm * tut_mul0(pp * p1, ce) * (2.0 * t - 1.0));
    }
    return tut_mul0(at, m * ce);
}

static void focal_kernel(const tut_inst *f, const tut_span *s)
{
    double g, *gp = s->grad ? &g : NULL;
    for (int64_t j = 0; j < s->n; j++) {
        double x = s->x[j], t = s->t[j];
        double at = f->alpha < 0.0 ? 1.0 : f->alpha * t + (1.0 - f->alpha) * (1.0 - t);
        tut_prim p = tut_prims(x);
        double L = log1p(p.e);
        if (t == 0.0 || t == 1.0)
            s->loss[j] = focal_binary(&p, L, x, t, at, f->gamma, gp);
        else
            s->loss[j] = focal_soft(&p, L, t, at, f->gamma, gp);
        if (gp)
            s->grad[j] = g;
    }
}

static lk_status focal_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg)
{
#if TUT_HAVE_AVX2
    if (((const tut_inst *)inst)->simd != TUT_SIMD_NONE)
        return tut_avx2_fused(inst, TUT_K_FOCAL, blk, msg);
#endif
    return tut_fused_forward(inst, blk, focal_kernel, TUT_CHECK_TARGET, msg);
}

const lk_loss_desc tut_focal_desc = {
    .id = "focal",
    .summary = "per-element sigmoid focal loss of Lin et al. (torchvision's)",
    .version = "1.0.1",
    .params = focal_params,
    .slots = focal_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_NONE) | LK_REDUCTION_BIT(LK_REDUCTION_MEAN) |
                  LK_REDUCTION_BIT(LK_REDUCTION_SUM),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_FUSED,
    .create = focal_create,
    .destroy = tut_destroy,
    .plan = focal_plan,
    .forward = focal_forward,
};

/* ------------------------------------------------------------------------ */
/* focal_mean_bce: alpha (1 - exp(-B))^gamma B, B = mean bce                 */

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

static const lk_param_desc *const fmb_params[] = {&fmb_alpha, &fmb_gamma, NULL};

static lk_status fmb_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    plan->n_stats = 2;
    return tut_plan_binary(slots, 2, plan, msg);
}

static void fmb_stats(const tut_inst *inst, const tut_span *s, double *stats)
{
    double b = 0.0;
    for (int64_t j = 0; j < s->n; j++)
        b += tut_bce(s->x[j], s->t[j], 1.0);
    stats[TUT_FMB_BCE] += b;
    stats[TUT_FMB_COUNT] += (double)s->n;
}

static lk_status fmb_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                             lk_msg *msg)
{
#if TUT_HAVE_AVX2
    if (((const tut_inst *)inst)->simd != TUT_SIMD_NONE)
        return tut_avx2_stats(inst, TUT_K_FMB, blk, msg);
#endif
    return tut_stats_forward(inst, plan, blk, fmb_stats, msg);
}

/* An empty tensor gives NaN: its mean BCE is 0/0, as in torch. */
static lk_status fmb_finalize(const void *inst, const lk_plan *plan, const double *stats,
                              int32_t reduction, double *value, lk_msg *msg)
{
    const tut_inst *f = inst;
    double b = stats[TUT_FMB_BCE] / stats[TUT_FMB_COUNT];
    *value = tut_mul0(f->alpha, pow(-expm1(-b), f->gamma) * b);
    return LK_OK;
}

/* d value / dB = alpha [u^gamma + gamma u^(gamma-1) e^-B B], u = 1 - e^-B;
 * the second term tends to 0 as B -> 0 (for gamma > 0) and as B -> inf. */
static double fmb_dvalue(const tut_inst *f, double b)
{
    if (b == 0.0)
        return f->gamma == 0.0 ? f->alpha : 0.0;
    double u = -expm1(-b);
    double tail = isinf(b) ? 0.0 : f->gamma * pow(u, f->gamma - 1.0) * exp(-b) * b;
    return f->alpha * (pow(u, f->gamma) + tail);
}

/* k[0] is d value / dB / n. */
static void fmb_grad(const double *k, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++) {
        tut_prim p = tut_prims(s->x[j]);
        s->grad[j] = k[0] * (tut_sig(&p) - s->t[j]);
    }
}

static lk_status fmb_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    lk_status st;
    if (!tut_backward_wanted(blk, &st, msg))
        return st;
    const double *g = blk->global;
    double k[1] = {fmb_dvalue(inst, g[TUT_FMB_BCE] / g[TUT_FMB_COUNT]) / g[TUT_FMB_COUNT]};
#if TUT_HAVE_AVX2
    if (((const tut_inst *)inst)->simd != TUT_SIMD_NONE)
        return tut_avx2_grad(inst, TUT_K_FMB, k, blk, msg);
#endif
    return tut_backward(k, blk, fmb_grad, msg);
}

const lk_loss_desc tut_focal_mean_bce_desc = {
    .id = "focal_mean_bce",
    .summary = "the tutorial's FocalLoss: alpha (1 - e^-B)^gamma B on the mean BCE B",
    .version = "1.0.1",
    .params = fmb_params,
    .slots = focal_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = focal_create,
    .destroy = tut_destroy,
    .plan = fmb_plan,
    .forward = fmb_forward,
    .finalize = fmb_finalize,
    .backward = fmb_backward,
};
