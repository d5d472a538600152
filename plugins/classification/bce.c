/* bce: torch.nn.functional.binary_cross_entropy (torch 1.13) on
 * probabilities, with an optional per-element weight:
 *
 *   loss = -w [t max(log p, -100) + (1 - t) max(log(1 - p), -100)]
 *   d loss / dp = w (p - t) / max(p (1 - p), 1e-12)
 *
 * The gradient is torch's own formula (aten's binary_cross_entropy_backward),
 * not the derivative of the clamped loss: at p = 0 or 1 it is finite (e.g.
 * -1e12 at p = 0, t = 1) rather than 0. An input outside [0, 1] fails the
 * call, as torch refuses it; targets are not checked (torch 1.13 takes any). */
#include "classification.h"

/* log p and log(1 - p) take one vector log where every target is 0 or 1:
 * its argument is p where t = 1 and 1 - p where t = 0, and the other log
 * of each lane only meets a weight of 0. log(1 - p) is log(u) of the
 * rounded u = 1 - p plus what the rounding dropped, (-p - (u - 1)) / u
 * (u - 1 is exact): as accurate as log1p(-p), at the cost of a log. That
 * correction is 0 where p >= 1/2 (u is exact there), so its reciprocal
 * takes max(u, 1/2), finite at p = 1 as it must be. The log's argument
 * is at least BCE_TINY, whose log is below -100: p = 0 and p = 1 meet the
 * clamp through that, with no compare and no log of 0. Where every
 * target of a vector is 0 or 1 (the common case), each lane's term is its
 * own log, with no products by t and 1 - t. The correction and the
 * gradient are divisions, correctly rounded: on AVX-512 a division takes
 * two multiply-pipe and two add-pipe slots where a fast reciprocal and
 * its product take four multiply-pipe ones. max() keeps its second
 * operand when either is NaN, so NaN passes. */
#if defined(LK_LANES_F32)
#define BCE_TINY 1e-44 /* a float subnormal; log = -101.3 */
#else
#define BCE_TINY 1e-300 /* log = -690.8 */
#endif

LK_AI lk_v bce_log(lk_v v)
{
    return cls_log01(lk_max(lk_set(BCE_TINY), v));
}

LK_AI void bce_stage(const lk_none *b, const lk_elem *e, lk_kept *k)
{
    (void)b;
    lk_v p = e->x, t = e->t, one = lk_set(1.0);
    lk_v u = lk_sub(one, p);
    k->v[0] = bce_log(lk_select(lk_eq(t, lk_zero()), u, p));
    k->v[1] = lk_div(lk_sub(lk_neg(p), lk_sub(u, one)), lk_max(lk_set(0.5), u));
}

/* Staged (LK_KERNELS_ELEMENTWISE_STAGED): the log of the next vector
 * overlaps the clamps and the gradient's reciprocal of this one. */
LK_AI void bce_finish(const lk_none *b, const lk_kept *k, lk_elem *e)
{
    (void)b;
    lk_v p = e->x, t = e->t, one = lk_set(1.0), floor = lk_set(-100.0);
    lk_v l1 = k->v[0], lost = k->v[1];
    lk_m neg = lk_eq(t, lk_zero()), bin = lk_or(neg, lk_eq(t, one));
    if (lk_all(bin)) {
        /* each lane's term is its log: log p where t = 1, log(1 - p) where
         * t = 0 (the other term's weight is 0, and it is finite) */
        e->loss = lk_neg(lk_max(floor, lk_add(l1, lk_keep(neg, lost))));
    } else {
        lk_v l2 = bce_log(lk_select(neg, p, lk_sub(one, p)));
        lk_v lp = lk_max(floor, lk_select(neg, l2, l1));
        lk_v lq = lk_max(floor, lk_add(lk_select(neg, l1, l2), lost));
        e->loss = lk_neg(lk_fma(t, lp, lk_mul(lk_sub(one, t), lq)));
    }
    lk_v den = lk_max(lk_set(1e-12), lk_mul(lk_sub(one, p), p));
    e->grad = lk_div(lk_sub(p, t), den);
}

static const lk_slot_desc bce_input = {
    .name = "input",
    .doc = "probabilities in [0, 1], any shape (outside: refused)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_UNIT,
};

static const lk_slot_desc bce_target = {
    .name = "target",
    .doc = "targets, usually in [0, 1], shaped like input; not differentiable",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_UNIT,
};

static const lk_slot_desc bce_weight = {
    .name = "weight",
    .doc = "optional per-element weight multiplying loss and gradient, shaped like input",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_OPTIONAL,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_POSITIVE,
};

static const lk_slot_desc *const bce_slots[] LK__UNUSED = {&bce_input, &bce_target, &bce_weight,
                                                           NULL};

CLS_KERNELS_ELEMENTWISE_CHECKED_STAGED(bce, lk_none, bce_stage, bce_finish, LK_EW_WEIGHT,
                                       cls_bad_prob, 1, "bce")
LK_LOSS_DESC(bce, lk_none, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&bce__family), bce_slots,
             LK_REDUCTIONS_ELEMENTWISE, LK_HOOKS(0),
             .summary = "torch.nn.functional.binary_cross_entropy on probabilities: logs "
                        "clamped at -100, optional weight")
