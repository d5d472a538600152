/* dice: the tutorial's DiceLoss, 1 - (2 sum p t + s) / (sum p + sum t + s)
 * with p = sigmoid(x) over the whole tensor; in mode multiclass, smp's
 * multiclass dice with a softmax over dim 1 (dice_multiclass.h). */
#include "tutorial.h"

typedef struct dice {
    double smooth;
    int multiclass;
    int64_t ignore_index;
} dice;

#include "dice_multiclass.h"

/* The target depends on the mode, so plan() checks it. */
static const lk_slot_desc dice_target = {
    .name = "target",
    .doc = "binary mode: targets in [0, 1] shaped like input; multiclass: int64 class "
           "indices shaped like input without dim 1, or per-class targets in [0, 1] "
           "shaped like input",
    .dtypes = LK_DTYPES_FLOAT | LK_DTYPE_BIT(LK_DTYPE_I64),
    .shape = LK_SHAPE_ANY,
};

static const lk_slot_desc *const dice_slots[] LK__UNUSED = {&tut_logits, &dice_target, NULL};

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

static const lk_param_desc *const dice_params[] LK__UNUSED = {&tut_smooth, &dice_mode,
                                                              &dice_ignore_index, NULL};

static lk_status dice_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    dice *d = inst;
    d->smooth = p[0].number;
    d->multiclass = p[1].integer == 1;
    d->ignore_index = p[2].integer;
    if (!d->multiclass && p[2].is_set)
        return lk_fail(msg, LK_ERR_INVALID,
                       "ignore_index applies to mode \"multiclass\" only (the mode is \"%s\")",
                       p[1].choice);
    return LK_OK;
}

static int dice_pick(const void *inst)
{
    return ((const dice *)inst)->multiclass;
}

/* Binary mode checks the target as the host's LK_SHAPE_LIKE_INPUT would. */
static lk_status dice_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                           lk_plan *plan, lk_msg *msg)
{
    if (((const dice *)inst)->multiclass)
        return dice_mc_plan(inst, slots, reduction, plan, msg);
    const lk_tensor *x = &slots[0], *t = &slots[1];
    if (t->dtype != LK_DTYPE_F32 && t->dtype != LK_DTYPE_F64)
        return lk_fail(msg, LK_ERR_DTYPE,
                       "target: dtype %s is not accepted in binary mode (float32 or float64 "
                       "targets in [0, 1]; int64 class indices need mode \"multiclass\")",
                       lk_sdk_dtype_name(t->dtype));
    int same = t->ndim == x->ndim;
    for (int32_t d = 0; same && d < x->ndim; d++)
        same = t->shape[d] == x->shape[d];
    if (!same) {
        char got[160], want[160];
        lk_shape_str(got, sizeof got, t->ndim, t->shape);
        lk_shape_str(want, sizeof want, x->ndim, x->shape);
        return lk_fail(msg, LK_ERR_SHAPE, "target: shape %s, expected %s (the input's)", got, want);
    }
    return LK_OK;
}

static lk_status dice_finalize(const void *inst, const lk_plan *plan, const double *stats,
                               int32_t reduction, double *value, lk_msg *msg)
{
    if (((const dice *)inst)->multiclass)
        return dice_mc_finalize(inst, plan, stats, reduction, value, msg);
    *value = tut_dice_value(((const dice *)inst)->smooth, stats);
    return LK_OK;
}

LK_AI void dice_stats(const dice *d, lk_elem *e, lk_v *s)
{
    (void)d;
    lk_sigm p = lk_sigm_of(e->x);
    tut_overlap_stats(&p, e->t, s);
}

static void dice_consts(const void *inst, const double *g, double *k)
{
    tut_dice_consts(((const dice *)inst)->smooth, g, k);
}

LK_AI void dice_grad(const dice *d, const lk_v *k, lk_elem *e)
{
    (void)d;
    lk_sigm p = lk_sigm_of(e->x);
    e->grad = tut_dice_grad(&p, k, e->t);
}

LK_KERNELS_STATS(dice_bin, dice, 3, dice_stats, dice_consts, dice_grad, LK_EW_UNIT_TARGET)
LK_LOSS_DESC(dice, dice, 0, dice__finalize, dice__backward,
             LK_FAMILIES(&dice_bin__family, &dice_mc__family), dice_slots,
             LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
             LK_HOOKS(.init = dice_init, .plan = dice_plan, .finalize = dice_finalize,
                      .pick = dice_pick),
             .summary = "the tutorial's DiceLoss: 1 - (2 sum pt + s) / (sum p + sum t + s), p = "
                        "sigmoid; or per class with softmax (mode multiclass)",
             .version = "1.1.0", .params = dice_params)
