/* margin_ranking: torch.nn.functional.margin_ranking_loss (torch 1.13),
 *
 *   loss = max(0, -t (x1 - x2) + margin),
 *
 * on the elementwise driver's third operand: e->x is input1 (slot 0), e->t
 * input2 (slot 1) and e->u the target (slot 2). Where the hinge is open
 * (-t (x1 - x2) + margin >= 0: torch's clamp passes the gradient at the
 * kink), d loss / d x1 = -t and d loss / d x2 = t; elsewhere both are 0. A
 * NaN stays NaN in the loss, with a zero gradient, as torch's clamp; an
 * infinite difference gives +inf (open) or 0 (closed) with any margin, and
 * so does an infinite target times a nonzero difference (torch's -t (x1 -
 * x2) is then infinite whatever the margin). */
#include "margin.h"

typedef struct ranking {
    mg_margin m;
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

static const lk_slot_desc ranking_input1 = {.name = "input1",
                                            .doc = "the first score, any shape",
                                            .dtypes = LK_DTYPES_FLOAT,
                                            .flags = LK_SLOT_DIFFERENTIABLE,
                                            .shape = LK_SHAPE_ANY,
                                            .values = LK_VALUES_REAL};
static const lk_slot_desc ranking_input2 = {.name = "input2",
                                            .doc = "the second score, shaped like input1",
                                            .dtypes = LK_DTYPES_FLOAT,
                                            .flags = LK_SLOT_DIFFERENTIABLE,
                                            .shape = LK_SHAPE_LIKE_INPUT,
                                            .values = LK_VALUES_REAL};
static const lk_slot_desc ranking_target = {
    .name = "target",
    .doc = "1 where input1 should rank higher, -1 where input2 should, shaped like input1",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_SIGN};
static const lk_slot_desc *const ranking_slots[] LK__UNUSED = {&ranking_input1, &ranking_input2,
                                                               &ranking_target, NULL};

static lk_status ranking_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    ((ranking *)inst)->m = mg_margin_of(p[0].number);
    return LK_OK;
}

/* -t (x1 - x2) + margin. With margin 0, as torch rounds it. Otherwise the
 * difference is kept whole (Knuth's two-sum: s + c = x1 - x2 exactly) and
 * the margin split into the lanes' value and the rest, so that near the
 * kink, where -t s and the margin cancel, float32 lanes lose nothing the
 * float64 result keeps. The correction -t c + lo is finite wherever -t s
 * is (|c| is at most half an ulp of s). Where -t s is infinite (an
 * infinite difference, or an infinite or huge target) the correction may
 * be NaN (the two-sum's inf - inf, or inf 0) or the opposite infinity, and
 * the sum NaN: where it is, h is -t s + hi alone, the infinity (or NaN)
 * torch's -t (x1 - x2) + margin gives. That is one compare and one select
 * per element, as many as clearing the two-sum's NaN alone would take. */
LK_AI lk_v ranking_h(const ranking *r, lk_v x1, lk_v x2, lk_v t)
{
    lk_v nt = lk_neg(t), s = lk_sub(x1, x2);
    if (r->m.v == 0.0)
        return lk_add(lk_mul(nt, s), lk_zero());
    const double hi = mg_hi(&r->m), lo = mg_lo(&r->m);
    lk_v b = lk_sub(s, x1);
    lk_v c = lk_sub(lk_sub(x1, lk_sub(s, b)), lk_add(x2, b));
    lk_v h0 = lk_add(lk_mul(nt, s), lk_set(hi));
    lk_v h = lk_add(h0, lk_add(lk_mul(nt, c), lk_set(lo)));
    return lk_select(lk_isnan(h), h0, h);
}

LK_AI void ranking_elem_of(lk_v h, lk_elem *e)
{
    lk_v t = e->u;
    lk_m open = lk_ge(h, lk_zero());
    e->loss = mg_clamp0(h);
    e->grad_t = lk_keep(open, t);
    e->grad = lk_neg(e->grad_t);
}

LK_AI void ranking_elem(const ranking *r, lk_elem *e)
{
    ranking_elem_of(ranking_h(r, e->x, e->t, e->u), e);
}

LK_AI void ranking__elem(const void *p, lk_elem *e)
{
    ranking_elem((const ranking *)p, e);
}

#if defined(LK_LANES_F32)
/* -t (x1 - x2) + margin for a finite margin beyond float's range, per lane
 * in double, then rounded to float: torch's formula on the float64 upcast,
 * rounded. Where it is finite and not 0 its magnitude is at least 2^75 (a
 * double beyond FLT_MAX is a multiple of 2^75, and so is -t (x1 - x2) as
 * large as it), so the rounding never moves it across the kink. The kernel
 * picks it per block, for such margins alone. */
LK_AI void ranking__elem_wide(const void *p, lk_elem *e)
{
    const double margin = ((const ranking *)p)->m.v;
    lk_s a[LK_W], b[LK_W], t[LK_W];
    lk_store(a, e->x), lk_store(b, e->t), lk_store(t, e->u);
    for (int j = 0; j < LK_W; j++)
        a[j] = (lk_s)(-(double)t[j] * ((double)a[j] - (double)b[j]) + margin);
    ranking_elem_of(lk_load(a), e);
}
#endif

static lk_status ranking__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    const ranking local = *(const ranking *)inst;
    const uint32_t flags = LK_EW_THIRD | LK_EW_GRAD_T;
#if defined(LK_LANES_F32)
    if (local.m.wide)
        return lk_elementwise_forward(&local, plan, blk, ranking__elem_wide, flags, msg);
#endif
    return lk_elementwise_forward(&local, plan, blk, ranking__elem, flags, msg);
}

LK__KSET(margin_ranking, ranking__fwd, NULL, 0)
LK__FAMILY(margin_ranking)
LK_LOSS_DESC(margin_ranking, ranking, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&margin_ranking__family), ranking_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = ranking_init),
             .summary = "torch's margin_ranking_loss: max(0, -t (x1 - x2) + margin)",
             .version = "1.0.0", .params = ranking_params)
