/* tutorial.h: what the tutorial family's losses share: their slots and the
 * overlap statistics of dice, iou and dice_bce. Private to the family. */
#ifndef LOSSKIT_TUTORIAL_H
#define LOSSKIT_TUTORIAL_H

#include "losskit/loss.h"

static const lk_slot_desc tut_logits LK__UNUSED = {
    .name = "input",
    .doc = "logits (before the sigmoid)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
};
static const lk_slot_desc tut_weight LK__UNUSED = {
    .name = "weight",
    .doc = "optional per-element weight multiplying each element's loss",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_OPTIONAL,
    .shape = LK_SHAPE_LIKE_INPUT,
};
static const lk_slot_desc *const tut_logit_slots[] LK__UNUSED = {&tut_logits, &lk_slot_target01,
                                                                 NULL};
static const lk_slot_desc *const tut_weighted_logit_slots[] LK__UNUSED = {
    &tut_logits, &lk_slot_target01, &tut_weight, NULL};

static const lk_param_desc tut_smooth LK__UNUSED = {
    .name = "smooth",
    .doc = "added to numerator and denominator of the ratio",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

/* The overlap statistics of p = sigmoid(x): I = sum p t, P = sum p,
 * T = sum t, in s[0..2]. */
enum { TUT_I, TUT_P, TUT_T };

LK_AI void tut_overlap_stats(const lk_sigm *p, lk_v t, lk_v *s)
{
    lk_v pp = lk_sigm_p(p);
    s[TUT_I] = lk_mul(pp, t);
    s[TUT_P] = pp;
    s[TUT_T] = t;
}

/* dice = 1 - (2 I + s) / (P + T + s); 0 when the denominator is 0. */
static inline double tut_dice_value(double smooth, const double *st)
{
    double den = st[TUT_P] + st[TUT_T] + smooth;
    return den == 0.0 ? 0.0 : 1.0 - (2.0 * st[TUT_I] + smooth) / den;
}

/* Constants of its gradient, k = {N, D, 1 / D^2} (N = 2 I + s, D = P + T +
 * s; 1 / D^2 taken as 0 when D = 0), and d dice / dx = p' (N - 2 t D) / D^2. */
static inline void tut_dice_consts(double smooth, const double *g, double *k)
{
    double den = g[TUT_P] + g[TUT_T] + smooth;
    k[0] = 2.0 * g[TUT_I] + smooth;
    k[1] = den;
    k[2] = den == 0.0 ? 0.0 : 1.0 / (den * den);
}

LK_AI lk_v tut_dice_grad(const lk_sigm *p, const lk_v *k, lk_v t)
{
    return lk_mul(lk_mul(lk_sigm_dp(p), lk_sub(k[0], lk_mul(lk_add(t, t), k[1]))), k[2]);
}

#endif /* LOSSKIT_TUTORIAL_H */
