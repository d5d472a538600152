/* margin_ranking: torch.nn.functional.margin_ranking_loss (torch 1.13),
 *
 *   loss = max(0, -t (x1 - x2) + margin),
 *
 * on the elementwise driver's third operand: e->x is input1 (slot 0), e->t
 * input2 (slot 1) and e->u the target (slot 2). Where the hinge is open
 * (-t (x1 - x2) + margin >= 0: torch's clamp passes the gradient at the
 * kink), d loss / d x1 = -t and d loss / d x2 = t; elsewhere both are 0. A
 * NaN stays NaN in the loss, with a zero gradient, as torch's clamp; an
 * infinite difference gives +inf (open) or 0 (closed) with any margin. */
#include "margin.h"

typedef struct ranking {
    double margin;
} ranking;

static const lk_param_desc ranking_margin = {
    .name = "margin",
    .doc = "the margin by which input1 should exceed input2 where the target is 1",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc *const ranking_params[] LK__UNUSED = {&ranking_margin, NULL};

static const lk_slot_desc ranking_input1 = {"input1",        "the first score, any shape",
                                            LK_DTYPES_FLOAT, LK_SLOT_DIFFERENTIABLE,
                                            LK_SHAPE_ANY,    LK_VALUES_REAL};
static const lk_slot_desc ranking_input2 = {"input2",
                                            "the second score, shaped like input1",
                                            LK_DTYPES_FLOAT,
                                            LK_SLOT_DIFFERENTIABLE,
                                            LK_SHAPE_LIKE_INPUT,
                                            LK_VALUES_REAL};
static const lk_slot_desc ranking_target = {
    "target",
    "1 where input1 should rank higher, -1 where input2 should, shaped like input1",
    LK_DTYPES_FLOAT,
    0,
    LK_SHAPE_LIKE_INPUT,
    LK_VALUES_SIGN};
static const lk_slot_desc *const ranking_slots[] LK__UNUSED = {&ranking_input1, &ranking_input2,
                                                               &ranking_target, NULL};

static lk_status ranking_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    ((ranking *)inst)->margin = p[0].number;
    return LK_OK;
}

/* -t (x1 - x2) + margin. With margin 0, as torch rounds it. Otherwise the
 * difference is kept whole (Knuth's two-sum: s + c = x1 - x2 exactly) and
 * the margin split into the lanes' value and the rest, so that near the
 * kink, where -t s and the margin cancel, float32 lanes lose nothing the
 * float64 result keeps. */
LK_AI lk_v ranking_h(double margin, lk_v x1, lk_v x2, lk_v t)
{
    lk_v nt = lk_neg(t), s = lk_sub(x1, x2);
    if (margin == 0.0)
        return lk_add(lk_mul(nt, s), lk_zero());
    lk_v b = lk_sub(s, x1);
    lk_v c = lk_sub(lk_sub(x1, lk_sub(s, b)), lk_add(x2, b));
    /* an infinite difference has no rounding error to carry (the two-sum
     * gives inf - inf there); a NaN one is NaN in -t s already */
    c = lk_clear(lk_isnan(c), c);
    double hi = (double)(lk_s)margin;
    lk_v h = lk_add(lk_mul(nt, s), lk_set(hi));
    return lk_add(h, lk_add(lk_mul(nt, c), lk_set(margin - hi)));
}

LK_AI void ranking_elem(const ranking *r, lk_elem *e)
{
    lk_v t = e->u;
    lk_v h = ranking_h(r->margin, e->x, e->t, t);
    lk_m open = lk_ge(h, lk_zero());
    e->loss = mg_clamp0(h);
    e->grad_t = lk_keep(open, t);
    e->grad = lk_neg(e->grad_t);
}

LK_ELEMENTWISE_LOSS(margin_ranking, ranking, ranking_elem, LK_EW_THIRD | LK_EW_GRAD_T,
                    LK_HOOKS(.init = ranking_init),
                    .summary = "torch's margin_ranking_loss: max(0, -t (x1 - x2) + margin)",
                    .version = "1.0.0", .params = ranking_params, .slots = ranking_slots)
