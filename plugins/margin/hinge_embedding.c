/* hinge_embedding: torch.nn.functional.hinge_embedding_loss (torch 1.13),
 *
 *   loss = [t != 1] max(0, margin - x) + [t != -1] x,
 *
 * x for a label 1, max(0, margin - x) for a label -1 (any other label adds
 * both terms, as torch's two where()s do). d loss / dx = [t != -1] - [t !=
 * 1][margin - x >= 0]: torch's clamp passes the gradient at the kink.
 *
 * The loss of a label 1 is x itself, unbounded below: an input of -inf
 * gives a loss of -inf, and a sum that meets both +inf and -inf is NaN. Any
 * other label but -1 adds max(0, margin + inf) = +inf to that -inf: NaN.
 * So reductions mean and sum refuse an input of -inf whose label is not -1
 * (LK_ERR_NUMERIC, naming the element and its loss); reduction none gives
 * that loss. The check costs nothing on finite data: a block is scanned
 * only when its sum is -inf or NaN (a NaN input still gives NaN). */
#include "margin.h"

typedef struct hinge {
    mg_margin m;
} hinge;

static const lk_param_desc hinge_margin = {
    .name = "margin",
    .doc = "the margin of the -1 labels: max(0, margin - x)",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc *const hinge_params[] LK__UNUSED = {&hinge_margin, NULL};

static lk_status hinge_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    ((hinge *)inst)->m = mg_margin_of(p[0].number);
    return LK_OK;
}

/* margin - x in the lanes' precision, the margin as hi + lo (mg_margin;
 * a -0 difference comes out +0 on both lanes). */
LK_AI lk_v hinge_gap(const hinge *h, lk_v x)
{
    return lk_add(lk_sub(lk_set(mg_hi(&h->m)), x), lk_set(mg_lo(&h->m)));
}

LK_AI void hinge_elem_of(lk_v u, lk_elem *e)
{
    lk_v one = lk_set(1.0);
    lk_m neg = lk_not(lk_eq(e->t, one));         /* t != 1: the margin term */
    lk_m pos = lk_not(lk_eq(e->t, lk_neg(one))); /* t != -1: the x term */
    e->loss = lk_add(lk_keep(neg, mg_clamp0(u)), lk_keep(pos, e->x));
    e->grad = lk_sub(lk_keep(pos, one), lk_keep(lk_and(neg, lk_ge(u, lk_zero())), one));
}

LK_AI void hinge_elem(const hinge *h, lk_elem *e)
{
    hinge_elem_of(hinge_gap(h, e->x), e);
}

#if defined(LK_LANES_F32)
/* margin - x for a finite margin beyond float's range, per lane in double,
 * then rounded to float: the float64 result on the upcast data, rounded.
 * Its magnitude is at least 2^75 where x is finite (beyond FLT_MAX a
 * double is a multiple of 2^75, and so is FLT_MAX), so the rounding never
 * moves it across the kink. The kernel picks it per block, for such
 * margins alone. */
LK_AI lk_v hinge_gap_wide(double margin, lk_v x)
{
    lk_s v[LK_W];
    lk_store(v, x);
    for (int j = 0; j < LK_W; j++)
        v[j] = (lk_s)(margin - (double)v[j]);
    return lk_load(v);
}

LK_AI void hinge__elem_wide(const void *p, lk_elem *e)
{
    hinge_elem_of(hinge_gap_wide(((const hinge *)p)->m.v, e->x), e);
}
#endif

/* The first element of the block with x = -inf and t != -1, refused; LK_OK
 * when there is none (the sum's NaN came from a NaN input). The element's
 * loss is -inf for a label 1; any other label adds max(0, margin + inf) to
 * the -inf, which makes it NaN, and reduction none gives that NaN. */
static inline lk_status hinge_refuse(const lk_block *blk, lk_msg *msg)
{
    const lk_tensor *x = &blk->slots[0], *t = &blk->slots[1];
    int xf = x->dtype == LK_DTYPE_F32, tf = t->dtype == LK_DTYPE_F32;
    for (int64_t i = blk->begin; i < blk->end; i++) {
        double xi = lk__get(x->data, xf, i), ti = lk__get(t->data, tf, i);
        if (xi == -HUGE_VAL && ti != -1.0) {
            char where[160], label[32];
            lk_index_str(where, sizeof where, x->ndim, x->shape, i);
            if (isnan(ti))
                snprintf(label, sizeof label, "NaN");
            else
                snprintf(label, sizeof label, "%g", ti);
            if (ti == 1.0)
                return lk_fail(msg, LK_ERR_NUMERIC,
                               "input%s = -inf with target 1: a loss of -inf, whose mean or sum "
                               "is undefined (reduction none gives it)",
                               where);
            return lk_fail(msg, LK_ERR_NUMERIC,
                           "input%s = -inf with target %s: a loss of NaN (a label neither 1 nor "
                           "-1 adds both terms, max(0, margin + inf) - inf), which makes the "
                           "mean or sum undefined (reduction none gives the NaN)",
                           where, label);
        }
    }
    return LK_OK;
}

LK_AI void hinge__elem(const void *p, lk_elem *e)
{
    hinge_elem((const hinge *)p, e);
}

static lk_status hinge__fwd(const void *inst, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
    const hinge local = *(const hinge *)inst;
    lk_status st;
#if defined(LK_LANES_F32)
    if (local.m.wide)
        st = lk_elementwise_forward(&local, plan, blk, hinge__elem_wide, 0, msg);
    else
#endif
        st = lk_elementwise_forward(&local, plan, blk, hinge__elem, 0, msg);
    if (st == LK_OK && blk->reduction != LK_REDUCTION_NONE && !(blk->stats[0] > -HUGE_VAL))
        st = hinge_refuse(blk, msg);
    return st;
}

LK__KSET(hinge_embedding, hinge__fwd, NULL, 0)
LK__FAMILY(hinge_embedding)
LK_LOSS_DESC(hinge_embedding, hinge, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&hinge_embedding__family), mg_sign_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = hinge_init),
             .summary = "torch's hinge_embedding_loss: x for label 1, max(0, margin - x) "
                        "for label -1",
             .version = "1.0.0", .params = hinge_params)
