/* overlap.c: dice, dice_bce and iou, the tutorial's overlap losses on
 * p = sigmoid(x) over the whole tensor. They are not fused: forward sums
 * I = sum p t, P = sum p, T = sum t (dice_bce also sum bce and the count),
 * finalize forms the ratio, backward differentiates it using those sums.
 * dice also has a multiclass mode (softmax over dim 1, per-class sums), in
 * multiclass.c. */
#include <stdlib.h>
#include <string.h>

#include "tutorial.h"

enum {
    ST_I = TUT_ST_I,
    ST_P = TUT_ST_P,
    ST_T = TUT_ST_T,
    ST_BCE = TUT_ST_BCE,
    ST_COUNT = TUT_ST_COUNT
};

static const lk_slot_desc *const overlap_slots[] = {
    &tut_slot_input,
    &tut_slot_target,
    NULL,
};

/* dice's target depends on its mode, so plan() checks it. */
static const lk_slot_desc dice_target = {
    .name = "target",
    .doc = "binary mode: targets in [0, 1] shaped like input; multiclass: int64 class "
           "indices shaped like input without dim 1, or per-class targets in [0, 1] "
           "shaped like input",
    .dtypes = LK_DTYPES_FLOAT | LK_DTYPE_BIT(LK_DTYPE_I64),
    .flags = 0,
    .shape = LK_SHAPE_ANY,
};

static const lk_slot_desc *const dice_slots[] = {
    &tut_slot_input,
    &dice_target,
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

static const char *const dice_modes[] = {"binary", "multiclass", NULL};

static const lk_param_desc dice_mode = {
    .name = "mode",
    .doc = "binary: sigmoid over the whole tensor; multiclass: softmax over dim 1, "
           "one dice per class, averaged",
    .type = LK_PARAM_CHOICE,
    .choices = dice_modes,
    .default_choice = "binary",
};

static const lk_param_desc dice_ignore_index = {
    .name = "ignore_index",
    .doc = "multiclass: positions whose class index is this value count nowhere",
    .type = LK_PARAM_INTEGER,
    .default_number = -100.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc *const dice_params[] = {&overlap_smooth, &dice_mode, &dice_ignore_index,
                                                   NULL};

static lk_status overlap_create(const lk_create_args *args, void **instance, lk_msg *msg)
{
    if (args->n_params < 1)
        return lk_fail(msg, LK_ERR_INTERNAL, "expected 1 parameter, got %u", args->n_params);
    tut_inst *o = NULL;
    lk_status st = tut_inst_new(args, 0, &o, msg);
    if (st != LK_OK)
        return st;
    o->smooth = args->params[0].number;
    *instance = o;
    return LK_OK;
}

static lk_status dice_create(const lk_create_args *args, void **instance, lk_msg *msg)
{
    if (args->n_params < 3)
        return lk_fail(msg, LK_ERR_INTERNAL, "expected 3 parameters, got %u", args->n_params);
    int multiclass = strcmp(args->params[1].choice, "multiclass") == 0;
    if (!multiclass && args->params[2].is_set)
        return lk_fail(msg, LK_ERR_INVALID,
                       "ignore_index applies to mode \"multiclass\" only (the mode is \"%s\")",
                       args->params[1].choice);
    tut_inst *o = NULL;
    lk_status st = tut_inst_new(args, 0, &o, msg);
    if (st != LK_OK)
        return st;
    o->smooth = args->params[0].number;
    o->multiclass = multiclass;
    o->ignore_index = args->params[2].integer;
    *instance = o;
    return LK_OK;
}

static lk_status plan_n_stats(const lk_tensor *slots, lk_plan *plan, uint32_t n, lk_msg *msg)
{
    plan->n_stats = n;
    return tut_plan_binary(slots, 2, plan, msg);
}

/* The kernels of the AVX2 path when the instance chose it, else the portable
 * ones. */
static lk_status overlap_forward(const tut_inst *in, int kind, const lk_plan *plan,
                                 const lk_block *blk, tut_stats_fn fn, lk_msg *msg)
{
#if TUT_HAVE_AVX2
    if (in->simd != TUT_SIMD_NONE)
        return tut_avx2_stats(in, kind, blk, msg);
#endif
    return tut_stats_forward(in, plan, blk, fn, msg);
}

static lk_status overlap_backward(const tut_inst *in, int kind, const double *k,
                                  const lk_block *blk, tut_grad_fn fn, lk_msg *msg)
{
#if TUT_HAVE_AVX2
    if (in->simd != TUT_SIMD_NONE)
        return tut_avx2_grad(in, kind, k, blk, msg);
#endif
    return tut_backward(k, blk, fn, msg);
}

static void sums_ipt(const tut_span *s, double *stats)
{
    double i = 0.0, p = 0.0, t = 0.0;
    for (int64_t j = 0; j < s->n; j++) {
        tut_prim pr = tut_prims(s->x[j]);
        double pj = tut_sig(&pr);
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

/* The constants of the dice gradient: k = {N, D, 1 / D^2} with N = 2 I + s,
 * D = P + T + s (1 / D^2 taken as 0 when D = 0). */
static void dice_consts(double smooth, const double *g, double *k)
{
    double den = g[ST_P] + g[ST_T] + smooth;
    k[0] = 2.0 * g[ST_I] + smooth;
    k[1] = den;
    k[2] = den == 0.0 ? 0.0 : 1.0 / (den * den);
}

/* d dice / dx_j = p'(x_j) (N - 2 t_j D) / D^2, added to s->grad. */
static void dice_grad_add(const double *k, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++) {
        tut_prim p = tut_prims(s->x[j]);
        s->grad[j] += tut_dsig(&p) * (k[0] - 2.0 * s->t[j] * k[1]) * k[2];
    }
}

/* Binary mode checks the target the host's LK_SHAPE_LIKE_INPUT rule would. */
static lk_status dice_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                           lk_plan *plan, lk_msg *msg)
{
    const tut_inst *in = inst;
    if (in->multiclass)
        return tut_mc_plan(in, slots, plan, msg);
    const lk_tensor *x = &slots[0], *t = &slots[1];
    if (t->dtype != LK_DTYPE_F32 && t->dtype != LK_DTYPE_F64)
        return lk_fail(msg, LK_ERR_DTYPE,
                       "target: dtype %s is not accepted in binary mode (float32 or float64 "
                       "targets in [0, 1]); class indices need \"mode\": \"multiclass\"",
                       tut_dtype_name(t->dtype));
    int same = t->ndim == x->ndim;
    for (int32_t d = 0; same && d < x->ndim; d++)
        same = t->shape[d] == x->shape[d];
    if (!same) {
        char got[160], want[160];
        tut_shape_str(got, sizeof got, t->ndim, t->shape);
        tut_shape_str(want, sizeof want, x->ndim, x->shape);
        return lk_fail(msg, LK_ERR_SHAPE, "target: shape %s, expected %s (the input's)", got, want);
    }
    return plan_n_stats(slots, plan, 3, msg);
}

static void dice_stats(const tut_inst *inst, const tut_span *s, double *stats)
{
    sums_ipt(s, stats);
}

static lk_status dice_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    const tut_inst *in = inst;
    if (in->multiclass) {
#if TUT_HAVE_AVX2
        if (in->simd != TUT_SIMD_NONE)
            return tut_avx2_mc_forward(in, plan, blk, msg);
#endif
        return tut_mc_forward(in, plan, blk, msg);
    }
    return overlap_forward(in, TUT_K_DICE, plan, blk, dice_stats, msg);
}

static lk_status dice_finalize(const void *inst, const lk_plan *plan, const double *stats,
                               int32_t reduction, double *value, lk_msg *msg)
{
    const tut_inst *in = inst;
    if (in->multiclass)
        return tut_mc_finalize(in, plan, stats, value);
    *value = dice_value(in->smooth, stats);
    return LK_OK;
}

static void dice_grad(const double *k, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++)
        s->grad[j] = 0.0;
    dice_grad_add(k, s);
}

static lk_status dice_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg)
{
    const tut_inst *in = inst;
    lk_status st;
    if (!tut_backward_wanted(blk, &st, msg))
        return st;
    if (in->multiclass) {
#if TUT_HAVE_AVX2
        if (in->simd != TUT_SIMD_NONE)
            return tut_avx2_mc_backward(in, plan, blk, msg);
#endif
        return tut_mc_backward(in, plan, blk, msg);
    }
    double k[3];
    dice_consts(in->smooth, blk->global, k);
    return overlap_backward(in, TUT_K_DICE, k, blk, dice_grad, msg);
}

const lk_loss_desc tut_dice_desc = {
    .id = "dice",
    .summary = "the tutorial's DiceLoss: 1 - (2 sum pt + s) / (sum p + sum t + s), p = sigmoid; "
               "or per class with softmax (mode multiclass)",
    .version = "1.1.0",
    .params = dice_params,
    .slots = dice_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = dice_create,
    .destroy = tut_destroy,
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

static void dice_bce_stats(const tut_inst *inst, const tut_span *s, double *stats)
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
    return overlap_forward(inst, TUT_K_DICE_BCE, plan, blk, dice_bce_stats, msg);
}

/* An empty tensor gives NaN: its mean BCE is 0/0, as in torch. */
static lk_status dice_bce_finalize(const void *inst, const lk_plan *plan, const double *stats,
                                   int32_t reduction, double *value, lk_msg *msg)
{
    double bce = stats[ST_BCE] / stats[ST_COUNT];
    *value = bce + dice_value(((const tut_inst *)inst)->smooth, stats);
    return LK_OK;
}

/* k = {N, D, 1 / D^2, 1 / n}. */
static void dice_bce_grad(const double *k, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++) {
        tut_prim p = tut_prims(s->x[j]);
        s->grad[j] = (tut_sig(&p) - s->t[j]) * k[3];
    }
    dice_grad_add(k, s);
}

static lk_status dice_bce_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                   lk_msg *msg)
{
    lk_status st;
    if (!tut_backward_wanted(blk, &st, msg))
        return st;
    double k[4];
    dice_consts(((const tut_inst *)inst)->smooth, blk->global, k);
    k[3] = 1.0 / blk->global[ST_COUNT];
    return overlap_backward(inst, TUT_K_DICE_BCE, k, blk, dice_bce_grad, msg);
}

const lk_loss_desc tut_dice_bce_desc = {
    .id = "dice_bce",
    .summary = "the tutorial's DiceBCELoss: mean BCE from logits + dice",
    .version = "1.0.1",
    .params = overlap_params,
    .slots = overlap_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = overlap_create,
    .destroy = tut_destroy,
    .plan = dice_bce_plan,
    .forward = dice_bce_forward,
    .finalize = dice_bce_finalize,
    .backward = dice_bce_backward,
};

/* ------------------------------------------------------------------------ */
/* iou: 1 - (I + s) / (P + T - I + s); 0 when the denominator is 0          */

static lk_status iou_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    return plan_n_stats(slots, plan, 3, msg);
}

static lk_status iou_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                             lk_msg *msg)
{
    return overlap_forward(inst, TUT_K_IOU, plan, blk, dice_stats, msg);
}

static lk_status iou_finalize(const void *inst, const lk_plan *plan, const double *st,
                              int32_t reduction, double *value, lk_msg *msg)
{
    double smooth = ((const tut_inst *)inst)->smooth;
    double den = st[ST_P] + st[ST_T] - st[ST_I] + smooth;
    *value = den == 0.0 ? 0.0 : 1.0 - (st[ST_I] + smooth) / den;
    return LK_OK;
}

/* d iou / dx_j = p'(x_j) (N (1 - t_j) - t_j D) / D^2, k = {N, D, 1 / D^2}
 * with N = I + s, D = U + s. */
static void iou_grad(const double *k, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++) {
        double t = s->t[j];
        tut_prim p = tut_prims(s->x[j]);
        s->grad[j] = tut_dsig(&p) * (k[0] * (1.0 - t) - t * k[1]) * k[2];
    }
}

static lk_status iou_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    lk_status st;
    if (!tut_backward_wanted(blk, &st, msg))
        return st;
    const double *g = blk->global;
    double smooth = ((const tut_inst *)inst)->smooth;
    double den = g[ST_P] + g[ST_T] - g[ST_I] + smooth;
    double k[3] = {g[ST_I] + smooth, den, den == 0.0 ? 0.0 : 1.0 / (den * den)};
    return overlap_backward(inst, TUT_K_IOU, k, blk, iou_grad, msg);
}

const lk_loss_desc tut_iou_desc = {
    .id = "iou",
    .summary = "the tutorial's IoULoss: 1 - (I + s) / (sum p + sum t - I + s), p = sigmoid",
    .version = "1.0.1",
    .params = overlap_params,
    .slots = overlap_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = overlap_create,
    .destroy = tut_destroy,
    .plan = iou_plan,
    .forward = iou_forward,
    .finalize = iou_finalize,
    .backward = iou_backward,
};
