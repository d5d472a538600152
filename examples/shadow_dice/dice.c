/* dice.c: an out-of-tree losskit plugin, written against the SDK headers
 * alone, whose loss "dice" shadows the built-in one when its folder comes
 * first on LOSSKIT_PLUGIN_PATH.
 *
 * The built-in dice (family "tutorial") takes logits and applies a sigmoid.
 * This one is a plain soft Dice on probabilities p in [0, 1]:
 *
 *   dice = 1 - (2 sum p t + s) / (sum p + sum t + s)      (0 when the
 *                                                          denominator is 0)
 *   d dice / d p_j = (N - 2 t_j D) / D^2,  N = 2 sum p t + s, D = sum p + sum t + s
 *
 * It is not FUSED: forward sums I = sum p t, P = sum p, T = sum t per block,
 * the host adds the blocks' sums, finalize forms the ratio, and backward
 * differentiates it with the combined sums.
 *
 * Build: cc -std=c11 -shared -fPIC -fvisibility=hidden \
 *          -I SDK/include -o shadow.so dice.c -lm */
#include <stdlib.h>

#include <losskit/kernel.h>
#include <losskit/plugin.h>

enum { ST_I, ST_P, ST_T, ST_COUNT };

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */

static const lk_param_desc smooth_param = {
    .name = "smooth",
    .doc = "added to numerator and denominator of the ratio",
    .type = LK_PARAM_NUMBER,
    .flags = 0,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc *const params[] = {&smooth_param, NULL};

static const lk_slot_desc input_slot = {
    .name = "input",
    .doc = "probabilities in [0, 1] (no sigmoid is applied)",
    .dtypes = LK_DTYPE_BIT(LK_DTYPE_F32) | LK_DTYPE_BIT(LK_DTYPE_F64),
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
};

static const lk_slot_desc target_slot = {
    .name = "target",
    .doc = "targets in [0, 1], shaped like input",
    .dtypes = LK_DTYPE_BIT(LK_DTYPE_F32) | LK_DTYPE_BIT(LK_DTYPE_F64),
    .flags = 0,
    .shape = LK_SHAPE_LIKE_INPUT,
};

static const lk_slot_desc *const slots[] = {&input_slot, &target_slot, NULL};

/* ------------------------------------------------------------------------ */
/* Instance                                                                  */

typedef struct dice_inst {
    double smooth;
} dice_inst;

static lk_status dice_create(const lk_create_args *args, void **instance, lk_msg *msg)
{
    if (args->n_params < 1)
        return lk_fail(msg, LK_ERR_INTERNAL, "expected 1 parameter, got %u", args->n_params);
    dice_inst *d = malloc(sizeof *d);
    if (!d)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    d->smooth = args->params[0].number;
    *instance = d;
    return LK_OK;
}

static void dice_destroy(void *instance)
{
    free(instance);
}

/* ------------------------------------------------------------------------ */
/* Kernels                                                                   */

static lk_status dice_plan(const void *instance, const lk_tensor *tensors, int32_t reduction,
                           lk_plan *plan, lk_msg *msg)
{
    (void)instance;
    (void)tensors;
    (void)reduction;
    (void)msg;
    plan->n_stats = ST_COUNT;
    return LK_OK;
}

static lk_status dice_forward(const void *instance, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    (void)instance;
    (void)plan;
    double i_sum = 0.0, p_sum = 0.0, t_sum = 0.0;
    for (int64_t j = blk->begin; j < blk->end; j++) {
        double p = lk_load(&blk->slots[0], j);
        double t = lk_load(&blk->slots[1], j);
        if (!(p >= 0.0 && p <= 1.0))
            return lk_fail(msg, LK_ERR_INVALID,
                           "input[%lld] = %g is not a probability in [0, 1]", (long long)j, p);
        if (!(t >= 0.0 && t <= 1.0))
            return lk_fail(msg, LK_ERR_INVALID, "target[%lld] = %g is outside [0, 1]",
                           (long long)j, t);
        i_sum += p * t;
        p_sum += p;
        t_sum += t;
    }
    blk->stats[ST_I] += i_sum;
    blk->stats[ST_P] += p_sum;
    blk->stats[ST_T] += t_sum;
    return LK_OK;
}

static lk_status dice_finalize(const void *instance, const lk_plan *plan, const double *stats,
                               int32_t reduction, double *value, lk_msg *msg)
{
    (void)plan;
    (void)reduction;
    (void)msg;
    double s = ((const dice_inst *)instance)->smooth;
    double den = stats[ST_P] + stats[ST_T] + s;
    *value = den == 0.0 ? 0.0 : 1.0 - (2.0 * stats[ST_I] + s) / den;
    return LK_OK;
}

static lk_status dice_backward(const void *instance, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg)
{
    (void)plan;
    (void)msg;
    const lk_tensor *grad = &blk->grads[0];
    if (!grad->data)
        return LK_OK;
    double s = ((const dice_inst *)instance)->smooth;
    const double *g = blk->global;
    double den = g[ST_P] + g[ST_T] + s;
    double num = 2.0 * g[ST_I] + s;
    double inv = den == 0.0 ? 0.0 : blk->grad_scale / (den * den);
    for (int64_t j = blk->begin; j < blk->end; j++) {
        double t = lk_load(&blk->slots[1], j);
        lk_store(grad, j, (num - 2.0 * t * den) * inv, blk->flags);
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* The plugin                                                                */

static const lk_loss_desc dice_desc = {
    .id = "dice",
    .summary = "example: dice on probabilities, shadows the built-in",
    .version = "0.1.0",
    .params = params,
    .slots = slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = dice_create,
    .destroy = dice_destroy,
    .plan = dice_plan,
    .forward = dice_forward,
    .finalize = dice_finalize,
    .backward = dice_backward,
};

static const lk_loss_desc *const losses[] = {&dice_desc, NULL};

static const lk_plugin plugin = {
    .abi_major = LK_ABI_MAJOR,
    .abi_minor = LK_ABI_MINOR,
    .name = "shadow_example",
    .version = "0.1.0",
    .summary = "an out-of-tree dice that shadows the tutorial's",
    .losses = losses,
};

LK_PLUGIN_ENTRY(plugin)
