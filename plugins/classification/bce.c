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

LK_AI void bce_elem(const lk_none *b, lk_elem *e)
{
    (void)b;
    lk_v p = e->x, t = e->t, one = lk_set(1.0), floor = lk_set(-100.0);
    /* max() keeps its second operand when either is NaN: NaN passes */
    lk_v lp = lk_max(floor, lk_log(p));
    lk_v lq = lk_max(floor, lk_log1p(lk_neg(p)));
    e->loss = lk_neg(lk_fma(t, lp, lk_mul(lk_sub(one, t), lq)));
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

CLS_KERNELS_ELEMENTWISE_CHECKED(bce, lk_none, bce_elem, LK_EW_WEIGHT, cls_bad_prob, 1, "bce")
LK_LOSS_DESC(bce, lk_none, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&bce__family), bce_slots,
             LK_REDUCTIONS_ELEMENTWISE, LK_HOOKS(0),
             .summary = "torch.nn.functional.binary_cross_entropy on probabilities: logs "
                        "clamped at -100, optional weight")
