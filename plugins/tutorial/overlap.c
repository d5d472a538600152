/* overlap.c: dice, dice_bce and iou, the tutorial's overlap losses on
 * p = sigmoid(x) over the whole tensor. They are not fused: forward sums
 * I = sum p t, P = sum p, T = sum t (dice_bce also sum bce and the count),
 * finalize forms the ratio, backward differentiates it using those sums. */
#include <stdlib.h>

#include "tutorial.h"

enum { ST_I, ST_P, ST_T, ST_BCE, ST_COUNT };

static const lk_slot_desc *const overlap_slots[] = {
    &tut_slot_input,
    &tut_slot_target,
    NULL,
};

static const lk_param_desc overlap_smooth = {
    .name = "smooth",
    .doc = "added to numerator and denominator of the ratio",
    .type = LK_PARAM_NUMBER,
    .flags = 0,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc *const overlap_params[] = {&overlap_smooth, NULL};

typedef struct overlap_inst {
    double smooth;
} overlap_inst;

static lk_status overlap_create(const lk_create_args *args, void **instance, lk_msg *msg)
{
    if (args->n_params < 1)
        return lk_fail(msg, LK_ERR_INTERNAL, "expected 1 parameter, got %u", args->n_params);
    overlap_inst *o = malloc(sizeof(*o));
    if (!o)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    o->smooth = args->params[0].number;
    *instance = o;
    return LK_OK;
}

static void overlap_destroy(void *instance)
{
    free(instance);
}

static lk_status plan_n_stats(const lk_tensor *slots, lk_plan *plan, uint32_t n, lk_msg *msg)
{
    plan->n_stats = n;
    return tut_check_layout(slots, 2, msg);
}

static void sums_ipt(const tut_span *s, double *stats)
{
    double i = 0.0, p = 0.0, t = 0.0;
    for (int64_t j = 0; j < s->n; j++) {
        double pj = lk_sigmoid(s->x[j]);
        i += pj * s->t[j];
        p += pj;
        t += s->t[j];
    }
    stats[ST_I] += i;
    stats[ST_P] += p;
    stats[ST_T] += t;
}

/* ------------------------------------------------------------------------ */
/* dice: 1 - (2 I + s) / (P + T + s); 0 when the denominator is 0            */

static double dice_value(double smooth, const double *st)
{
    double den = st[ST_P] + st[ST_T] + smooth;
    return den == 0.0 ? 0.0 : 1.0 - (2.0 * st[ST_I] + smooth) / den;
}

/* d dice / dx_j = p'(x_j) (N - 2 t_j D) / D^2. */
static void dice_grad_add(double smooth, const double *g, const tut_span *s)
{
    double den = g[ST_P] + g[ST_T] + smooth;
    double num = 2.0 * g[ST_I] + smooth;
    double inv = den == 0.0 ? 0.0 : 1.0 / (den * den);
    for (int64_t j = 0; j < s->n; j++)
        s->grad[j] += tut_dsigmoid(s->x[j]) * (num - 2.0 * s->t[j] * den) * inv;
}

static lk_status dice_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                           lk_plan *plan, lk_msg *msg)
{
    return plan_n_stats(slots, plan, 3, msg);
}

static void dice_stats(const void *inst, const tut_span *s, double *stats)
{
    sums_ipt(s, stats);
}

static lk_status dice_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    return tut_stats_forward(inst, plan, blk, dice_stats, msg);
}

static lk_status dice_finalize(const void *inst, const lk_plan *plan, const double *stats,
                               int32_t reduction, double *value, lk_msg *msg)
{
    *value = dice_value(((const overlap_inst *)inst)->smooth, stats);
    return LK_OK;
}

static void dice_grad(const void *inst, const lk_plan *plan, const double *g, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++)
        s->grad[j] = 0.0;
    dice_grad_add(((const overlap_inst *)inst)->smooth, g, s);
}

static lk_status dice_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg)
{
    return tut_backward(inst, plan, blk, dice_grad, msg);
}

const lk_loss_desc tut_dice_desc = {
    .id = "dice",
    .summary = "the tutorial's DiceLoss: 1 - (2 sum pt + s) / (sum p + sum t + s), p = sigmoid",
    .version = "1.0.0",
    .params = overlap_params,
    .slots = overlap_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = overlap_create,
    .destroy = overlap_destroy,
    .plan = dice_plan,
    .forward = dice_forward,
    .finalize = dice_finalize,
    .backward = dice_backward,
};

/* ------------------------------------------------------------------------ */
/* dice_bce: mean bce (from logits) + dice                                   */

static lk_status dice_bce_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                               lk_plan *plan, lk_msg *msg)
{
    return plan_n_stats(slots, plan, 5, msg);
}

static void dice_bce_stats(const void *inst, const tut_span *s, double *stats)
{
    double b = 0.0;
    sums_ipt(s, stats);
    for (int64_t j = 0; j < s->n; j++)
        b += tut_bce(s->x[j], s->t[j], 1.0);
    stats[ST_BCE] += b;
    stats[ST_COUNT] += (double)s->n;
}

static lk_status dice_bce_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                  lk_msg *msg)
{
    return tut_stats_forward(inst, plan, blk, dice_bce_stats, msg);
}

/* An empty tensor gives NaN: its mean BCE is 0/0, as in torch. */
static lk_status dice_bce_finalize(const void *inst, const lk_plan *plan, const double *stats,
                                   int32_t reduction, double *value, lk_msg *msg)
{
    double bce = stats[ST_BCE] / stats[ST_COUNT];
    *value = bce + dice_value(((const overlap_inst *)inst)->smooth, stats);
    return LK_OK;
}

static void dice_bce_grad(const void *inst, const lk_plan *plan, const double *g, const tut_span *s)
{
    double inv_n = 1.0 / g[ST_COUNT];
    for (int64_t j = 0; j < s->n; j++)
        s->grad[j] = (lk_sigmoid(s->x[j]) - s->t[j]) * inv_n;
    dice_grad_add(((const overlap_inst *)inst)->smooth, g, s);
}

static lk_status dice_bce_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                   lk_msg *msg)
{
    return tut_backward(inst, plan, blk, dice_bce_grad, msg);
}

const lk_loss_desc tut_dice_bce_desc = {
    .id = "dice_bce",
    .summary = "the tutorial's DiceBCELoss: mean BCE from logits + dice",
    .version = "1.0.0",
    .params = overlap_params,
    .slots = overlap_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = overlap_create,
    .destroy = overlap_destroy,
    .plan = dice_bce_plan,
    .forward = dice_bce_forward,
    .finalize = dice_bce_finalize,
    .backward = dice_bce_backward,
};

/* ------------------------------------------------------------------------ */
/* iou: 1 - (I + s) / (P + T - I + s); 0 when the denominator is 0          */

static lk_status iou_finalize(const void *inst, const lk_plan *plan, const double *st,
                              int32_t reduction, double *value, lk_msg *msg)
{
    double smooth = ((const overlap_inst *)inst)->smooth;
    double den = st[ST_P] + st[ST_T] - st[ST_I] + smooth;
    *value = den == 0.0 ? 0.0 : 1.0 - (st[ST_I] + smooth) / den;
    return LK_OK;
}

/* d iou / dx_j = p'(x_j) (N (1 - t_j) - t_j D) / D^2. */
static void iou_grad(const void *inst, const lk_plan *plan, const double *g, const tut_span *s)
{
    double smooth = ((const overlap_inst *)inst)->smooth;
    double den = g[ST_P] + g[ST_T] - g[ST_I] + smooth;
    double num = g[ST_I] + smooth;
    double inv = den == 0.0 ? 0.0 : 1.0 / (den * den);
    for (int64_t j = 0; j < s->n; j++) {
        double t = s->t[j];
        s->grad[j] = tut_dsigmoid(s->x[j]) * (num * (1.0 - t) - t * den) * inv;
    }
}

static lk_status iou_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    return tut_backward(inst, plan, blk, iou_grad, msg);
}

const lk_loss_desc tut_iou_desc = {
    .id = "iou",
    .summary = "the tutorial's IoULoss: 1 - (I + s) / (sum p + sum t - I + s), p = sigmoid",
    .version = "1.0.0",
    .params = overlap_params,
    .slots = overlap_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = overlap_create,
    .destroy = overlap_destroy,
    .plan = dice_plan,
    .forward = dice_forward,
    .finalize = iou_finalize,
    .backward = iou_backward,
};
