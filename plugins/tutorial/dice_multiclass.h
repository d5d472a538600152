/* dice_multiclass.h: dice in mode "multiclass" (smp's multiclass mode), the
 * kernel family dice_mc on the class driver (losskit/classes.h). Included
 * by dice.c after its typedef of dice.
 *
 * p = softmax(x) over dim 1; targets are int64 class indices (ignore_index
 * marks positions that count nowhere) or per-class float targets in
 * [0, 1]. Statistics per class c over batch and positions: I_c = sum p_c
 * t_c, P_c = sum p_c, T_c = sum t_c (stats[c], stats[C + c], stats[2C +
 * c]); value = 1 - mean_c (2 I_c + s) / (P_c + T_c + s), a class whose
 * denominator is 0 scoring 1 with no gradient.
 *
 * The gradient by the softmax Jacobian: with g_c = d value / d p_c = k1_c -
 * t_c k2_c, k1_c = (2 I_c + s) / (C D_c^2), k2_c = 2 / (C D_c),
 * d value / d x_c = p_c (g_c - sum_k p_k g_k). */
#include "losskit/classes.h"

#define DICE_MC_MAX_CLASSES ((int64_t)(1 << 20) / 3) /* n_stats = 3C <= 2^20 */

enum { DICE_MC_I, DICE_MC_P, DICE_MC_T }; /* statistics per class */

/* I, P and T of class c; p = e / s. The T_c of index targets counts the
 * hits (exact), and hits lie within valid. */
LK_AI void dice_mc_fwd2(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                        const lk_cls_el *el, lk_cls_acc *ca)
{
    (void)inst, (void)c;
    lk_v pc = lk_keep(p->valid, lk_mul(el->e, p->r));
    if (io->index) {
        lk_acc_add(&ca[DICE_MC_I].a, lk_keep(el->hit, pc));
        ca[DICE_MC_T].n += lk_cls_count(el->hit);
    } else {
        lk_acc_add(&ca[DICE_MC_I].a, lk_mul(pc, el->t));
        lk_acc_add(&ca[DICE_MC_T].a, lk_keep(p->valid, el->t));
    }
    lk_acc_add(&ca[DICE_MC_P].a, pc);
}

/* g_c = k1_c - t k2_c in double: the Jacobian's g_c - sum_k p_k g_k
 * cancels where p is nearly one-hot, and float terms would leave only
 * their last bits. */
LK_AI lk_w dice_mc_g(const lk_cls_io *io, int64_t c, lk_v t)
{
    return lk_w_sub(lk_w_set(io->tab[2 * c]), lk_w_mul(lk_w_of(t), lk_w_set(io->tab[2 * c + 1])));
}

/* sum_k e_k g_k. */
LK_AI void dice_mc_bwd1(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                        const lk_cls_el *el, lk_cls_acc *ca)
{
    (void)inst, (void)ca;
    p->u = lk_w_add(p->u, lk_w_mul(lk_w_of(el->e), dice_mc_g(io, c, el->t)));
}

/* a = 1 / s; u = sum_k p_k g_k. */
LK_AI lk_w dice_mc_bwd_pos(const void *inst, const lk_cls_io *io, lk_cls_pos *p, lk_acc *pa)
{
    (void)inst, (void)io, (void)pa;
    p->a = lk_w_narrow(lk_w_div(lk_w_set(1.0), p->s));
    p->u = lk_w_div(p->u, p->s);
    return p->u;
}

/* p_c (g_c - sum_k p_k g_k). */
LK_AI lk_v dice_mc_grad(const void *inst, const lk_cls_io *io, const lk_cls_pos *p, int64_t c,
                        const lk_cls_el *el)
{
    (void)inst;
    lk_v jac = lk_w_narrow(lk_w_sub(dice_mc_g(io, c, el->t), p->u));
    return lk_mul(lk_mul(el->e, p->a), jac);
}

/* k1_c, k2_c from the combined statistics. */
static double dice_mc_prep(const void *inst, const lk_plan *plan, const lk_block *blk, double *tab)
{
    double smooth = ((const dice *)inst)->smooth;
    int64_t C = plan->aux[LK_CLS_AUX_C];
    const double *I = blk->global, *P = I + C, *T = I + 2 * C;
    for (int64_t c = 0; c < C; c++) {
        double den = P[c] + T[c] + smooth;
        double inv = den == 0.0 ? 0.0 : 1.0 / (den * den);
        tab[2 * c] = (2.0 * I[c] + smooth) * inv / (double)C;
        tab[2 * c + 1] = 2.0 * den * inv / (double)C;
    }
    return blk->grad_scale;
}

static lk_status dice_mc_bad_index(const void *inst, const lk_tensor *t, int64_t pos, int64_t y,
                                   int64_t C, lk_msg *msg)
{
    (void)t;
    return lk_fail(msg, LK_ERR_INVALID,
                   "target[%lld] = %lld is not a class index in [0, %lld) nor ignore_index %lld",
                   (long long)pos, (long long)y, (long long)C,
                   (long long)((const dice *)inst)->ignore_index);
}

static const lk_cls_ops dice_mc_ops = {
    .flags = LK_CLS_UNIT_TARGET | LK_CLS_FWD_EXP,
    .n_cls = 3,
    .n_tab = 2,
    .fwd2 = dice_mc_fwd2,
    .bwd1 = dice_mc_bwd1,
    .bwd_pos = dice_mc_bwd_pos,
    .grad = dice_mc_grad,
    .prep = dice_mc_prep,
    .bad_index = dice_mc_bad_index,
};

LK_CLASSES_KERNELS(dice_mc, dice, dice_mc_ops)

static lk_status dice_mc_mismatch(const lk_tensor *x, const lk_tensor *t, int index,
                                  const int64_t *want, int32_t want_ndim, lk_msg *msg)
{
    char got[160], exp[160];
    (void)x;
    lk_shape_str(got, sizeof got, t->ndim, t->shape);
    lk_shape_str(exp, sizeof exp, want_ndim, want);
    return lk_fail(msg, LK_ERR_SHAPE, "target: shape %s, expected %s (%s)", got, exp,
                   index ? "int64 class indices: the input's without dim 1"
                         : "per-class float targets: the input's; class indices are int64 "
                           "without dim 1");
}

static lk_status dice_mc_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                              lk_plan *plan, lk_msg *msg)
{
    lk_cls_spec sp = {.who = "multiclass mode",
                      .index_dtypes = LK_DTYPE_BIT(LK_DTYPE_I64),
                      .max_classes = DICE_MC_MAX_CLASSES,
                      .n_cls = 3,
                      .ignore_index = ((const dice *)inst)->ignore_index,
                      .mismatch = dice_mc_mismatch};
    (void)reduction;
    return lk_classes_plan(&sp, slots, plan, msg);
}

static lk_status dice_mc_finalize(const void *inst, const lk_plan *plan, const double *stats,
                                  int32_t reduction, double *value, lk_msg *msg)
{
    double smooth = ((const dice *)inst)->smooth, sum = 0.0;
    int64_t C = plan->aux[LK_CLS_AUX_C];
    const double *I = stats, *P = stats + C, *T = stats + 2 * C;
    (void)reduction, (void)msg;
    for (int64_t c = 0; c < C; c++) {
        double den = P[c] + T[c] + smooth;
        sum += den == 0.0 ? 1.0 : (2.0 * I[c] + smooth) / den;
    }
    *value = 1.0 - sum / (double)C;
    return LK_OK;
}
