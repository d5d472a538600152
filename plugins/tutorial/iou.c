/* iou: the tutorial's IoULoss, 1 - (I + s) / (P + T - I + s) with I = sum p
 * t, P = sum p, T = sum t, p = sigmoid(x); 0 when the denominator is 0. */
#include "tutorial.h"

typedef struct iou {
    double smooth;
} iou;

static const lk_param_desc *const iou_params[] LK__UNUSED = {&tut_smooth, NULL};

static lk_status iou_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    ((iou *)inst)->smooth = p[0].number;
    return LK_OK;
}

static lk_status iou_finalize(const void *inst, const lk_plan *plan, const double *st,
                              int32_t reduction, double *value, lk_msg *msg)
{
    double smooth = ((const iou *)inst)->smooth;
    double den = st[TUT_P] + st[TUT_T] - st[TUT_I] + smooth;
    *value = den == 0.0 ? 0.0 : 1.0 - (st[TUT_I] + smooth) / den;
    return LK_OK;
}

LK_AI void iou_stats(const iou *o, lk_elem *e, lk_v *s)
{
    (void)o;
    lk_sigm p = lk_sigm_of(e->x);
    tut_overlap_stats(&p, e->t, s);
}

/* d iou / dx = p' (N (1 - t) - t D) / D^2 with k = {N, D, 1 / D^2},
 * N = I + s, D = P + T - I + s. */
static void iou_consts(const void *inst, const double *g, double *k)
{
    double smooth = ((const iou *)inst)->smooth;
    double den = g[TUT_P] + g[TUT_T] - g[TUT_I] + smooth;
    k[0] = g[TUT_I] + smooth;
    k[1] = den;
    k[2] = den == 0.0 ? 0.0 : 1.0 / (den * den);
}

LK_AI void iou_grad(const iou *o, const lk_v *k, lk_elem *e)
{
    (void)o;
    lk_sigm p = lk_sigm_of(e->x);
    lk_v t = e->t;
    lk_v num = lk_sub(lk_mul(k[0], lk_sub(lk_set(1.0), t)), lk_mul(t, k[1]));
    e->grad = lk_mul(lk_mul(lk_sigm_dp(&p), num), k[2]);
}

LK_STATS_LOSS(iou, iou, 3, iou_stats, iou_consts, iou_grad, LK_EW_UNIT_TARGET,
              LK_HOOKS(.init = iou_init, .finalize = iou_finalize),
              .summary = "the tutorial's IoULoss: 1 - (I + s) / (sum p + sum t - I + s), p = "
                         "sigmoid",
              .version = "1.1.0", .params = iou_params, .slots = tut_logit_slots)
