/* elementwise.c: mse, l1 and bce_with_logits, the fused per-element losses
 * with an optional weight. The host's default finalize reduces them. Each
 * forward runs the AVX2 kernel of simd_avx2.c when the instance chose it,
 * else the portable kernel below. */
#include <stdlib.h>

#include "tutorial.h"

#define ELEMENTWISE_REDUCTIONS                                                                     \
    (LK_REDUCTION_BIT(LK_REDUCTION_NONE) | LK_REDUCTION_BIT(LK_REDUCTION_MEAN) |                   \
     LK_REDUCTION_BIT(LK_REDUCTION_SUM))

static const lk_slot_desc *const weighted_slots[] = {
    &tut_slot_input,
    &tut_slot_target,
    &tut_slot_weight,
    NULL,
};

/* mse and l1 compare raw predictions with targets of any value. */
static const lk_slot_desc regression_input = {
    .name = "input",
    .doc = "predictions (no sigmoid)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
};

static const lk_slot_desc regression_target = {
    .name = "target",
    .doc = "targets of any value, shaped like input",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = 0,
    .shape = LK_SHAPE_LIKE_INPUT,
};

static const lk_slot_desc *const regression_slots[] = {
    &regression_input,
    &regression_target,
    &tut_slot_weight,
    NULL,
};

static lk_status plain_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                            lk_plan *plan, lk_msg *msg)
{
    return tut_plan_binary(slots, 3, plan, msg);
}

/* ------------------------------------------------------------------------ */
/* mse: (x - t)^2, gradient 2 (x - t)                                        */

static void mse_kernel(const tut_inst *inst, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++) {
        double d = s->x[j] - s->t[j];
        s->loss[j] = d * d;
    }
    if (s->grad)
        for (int64_t j = 0; j < s->n; j++)
            s->grad[j] = 2.0 * (s->x[j] - s->t[j]);
}

static lk_status mse_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                             lk_msg *msg)
{
#if TUT_HAVE_AVX2
    if (((const tut_inst *)inst)->simd != TUT_SIMD_NONE)
        return tut_avx2_fused(inst, TUT_K_MSE, blk, msg);
#endif
    return tut_fused_forward(inst, blk, mse_kernel, TUT_WEIGHTED, msg);
}

const lk_loss_desc tut_mse_desc = {
    .id = "mse",
    .summary = "mean squared error (x - t)^2 on raw inputs, the tutorial's my_loss",
    .version = "1.0.1",
    .params = NULL,
    .slots = regression_slots,
    .reductions = ELEMENTWISE_REDUCTIONS,
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_FUSED,
    .create = tut_create_plain,
    .destroy = tut_destroy,
    .plan = plain_plan,
    .forward = mse_forward,
};

/* ------------------------------------------------------------------------ */
/* l1: |x - t|, gradient sign(x - t) with 0 at 0 (NaN stays NaN)             */

static void l1_kernel(const tut_inst *inst, const tut_span *s)
{
    for (int64_t j = 0; j < s->n; j++)
        s->loss[j] = fabs(s->x[j] - s->t[j]);
    if (s->grad)
        for (int64_t j = 0; j < s->n; j++) {
            double d = s->x[j] - s->t[j];
            s->grad[j] = d != d ? d : copysign((double)(d != 0.0), d);
        }
}

static lk_status l1_forward(const void *inst, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
#if TUT_HAVE_AVX2
    if (((const tut_inst *)inst)->simd != TUT_SIMD_NONE)
        return tut_avx2_fused(inst, TUT_K_L1, blk, msg);
#endif
    return tut_fused_forward(inst, blk, l1_kernel, TUT_WEIGHTED, msg);
}

const lk_loss_desc tut_l1_desc = {
    .id = "l1",
    .summary = "mean absolute error |x - t| on raw inputs",
    .version = "1.0.1",
    .params = NULL,
    .slots = regression_slots,
    .reductions = ELEMENTWISE_REDUCTIONS,
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_FUSED,
    .create = tut_create_plain,
    .destroy = tut_destroy,
    .plan = plain_plan,
    .forward = l1_forward,
};

/* ------------------------------------------------------------------------ */
/* bce_with_logits: tut_bce with pos_weight along the last dimension         */

static const lk_param_desc bce_pos_weight = {
    .name = "pos_weight",
    .doc = "weight of the positive term: [] for 1, one value for all, or one per "
           "index of the input's last dimension",
    .type = LK_PARAM_NUMBER_LIST,
    .flags = 0,
    .min = 0.0,
    .max = HUGE_VAL,
    .default_list = NULL,
    .default_list_len = 0,
    .list_min_len = 0,
    .list_max_len = -1,
};

static const lk_param_desc *const bce_params[] = {&bce_pos_weight, NULL};

static lk_status bce_create(const lk_create_args *args, void **instance, lk_msg *msg)
{
    if (args->n_params < 1)
        return lk_fail(msg, LK_ERR_INTERNAL, "expected 1 parameter, got %u", args->n_params);
    const lk_param_value *pw = &args->params[0];
    int64_t n = pw->list ? pw->list_len : 0;
    tut_inst *b = NULL;
    lk_status st = tut_inst_new(args, n, &b, msg);
    if (st != LK_OK)
        return st;
    for (int64_t k = 0; k < n; k++)
        b->pw[k] = pw->list[k];
    *instance = b;
    return LK_OK;
}

static lk_status bce_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    const tut_inst *b = inst;
    const lk_tensor *x = &slots[0];
    int64_t last = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    if (b->n_pw > 1 && b->n_pw != last)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "pos_weight has %lld values but the input's last dimension is %lld; "
                       "give 1 value or %lld",
                       (long long)b->n_pw, (long long)last, (long long)last);
    return tut_plan_binary(slots, 3, plan, msg);
}

/* Fills pw[j] for the positions of the span: the weight of each position's
 * index along the last dimension. */
static void bce_pos_weights(const tut_inst *b, const tut_span *s, double *pw)
{
    if (b->n_pw <= 1) {
        double v = b->n_pw == 1 ? b->pw[0] : 1.0;
        for (int64_t j = 0; j < s->n; j++)
            pw[j] = v;
        return;
    }
    int64_t c = s->begin % b->n_pw;
    for (int64_t j = 0; j < s->n; j++) {
        pw[j] = b->pw[c];
        if (++c == b->n_pw)
            c = 0;
    }
}

static void bce_kernel(const tut_inst *inst, const tut_span *s)
{
    double pw[TUT_CHUNK];
    bce_pos_weights(inst, s, pw);
    for (int64_t j = 0; j < s->n; j++) {
        tut_prim p = tut_prims(s->x[j]);
        s->loss[j] = tut_bce_p(&p, log1p(p.e), s->t[j], pw[j]);
        if (s->grad)
            s->grad[j] = tut_bce_grad_p(&p, s->t[j], pw[j]);
    }
}

static lk_status bce_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                             lk_msg *msg)
{
#if TUT_HAVE_AVX2
    if (((const tut_inst *)inst)->simd != TUT_SIMD_NONE)
        return tut_avx2_fused(inst, TUT_K_BCE, blk, msg);
#endif
    return tut_fused_forward(inst, blk, bce_kernel, TUT_WEIGHTED | TUT_CHECK_TARGET, msg);
}

const lk_loss_desc tut_bce_desc = {
    .id = "bce_with_logits",
    .summary = "binary cross-entropy from logits, stable, with weight and pos_weight",
    .version = "1.0.1",
    .params = bce_params,
    .slots = weighted_slots,
    .reductions = ELEMENTWISE_REDUCTIONS,
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_FUSED,
    .create = bce_create,
    .destroy = tut_destroy,
    .plan = bce_plan,
    .forward = bce_forward,
};
