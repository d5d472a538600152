/* cosine_embedding: torch.nn.functional.cosine_embedding_loss (torch 1.13),
 * on rows x1, x2 of shape (N, D) or (D,) and a label t per row (shape (N,)
 * or ()):
 *
 *   cos = sum x1 x2 / sqrt((sum x1^2 + eps) (sum x2^2 + eps)),
 *   loss = 1 - cos for t = 1, max(0, cos - margin) for t = -1, 0 otherwise,
 *
 * eps torch's EPSILON, the float 1e-12 (9.999999960041972e-13 as a double).
 * With m1, m2 the two eps-padded squared norms and s = d loss / d cos (-1,
 * or 1 where cos - margin >= 0 for t = -1, as torch's clamp passes it):
 *
 *   d loss / d x1 = s (x2 / sqrt(m1 m2) - cos x1 / m1), and symmetrically.
 *
 * An infinite element has no angle: the call is refused (LK_ERR_NUMERIC);
 * a NaN gives NaN for labels 1 and -1. */
#include "margin.h"

#define CE_EPS ((double)1e-12f)

typedef struct cosemb {
    double margin;
} cosemb;

static const lk_param_desc ce_margin = {
    .name = "margin",
    .doc = "pairs labelled -1 cost max(0, cos - margin)",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc *const ce_params[] LK__UNUSED = {&ce_margin, NULL};

static const lk_slot_desc ce_input1 = {.name = "input1",
                                       .doc = "first vectors: (N, D) rows, or one (D,) vector",
                                       .dtypes = LK_DTYPES_FLOAT,
                                       .flags = LK_SLOT_DIFFERENTIABLE,
                                       .shape = LK_SHAPE_ANY,
                                       .values = LK_VALUES_REAL,
                                       .ndims = LK_NDIM_BIT(1) | LK_NDIM_BIT(2)};
static const lk_slot_desc ce_input2 = {.name = "input2",
                                       .doc = "second vectors, shaped like input1",
                                       .dtypes = LK_DTYPES_FLOAT,
                                       .flags = LK_SLOT_DIFFERENTIABLE,
                                       .shape = LK_SHAPE_LIKE_INPUT,
                                       .values = LK_VALUES_REAL};
static const lk_slot_desc ce_target = {
    .name = "target",
    .doc = "1 for a similar pair, -1 for a dissimilar one: shape (N,), or () for (D,)",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_INPUT_NO_CHANNEL,
    .values = LK_VALUES_SIGN};
static const lk_slot_desc *const ce_slots[] LK__UNUSED = {&ce_input1, &ce_input2, &ce_target, NULL};

static lk_status ce_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    ((cosemb *)inst)->margin = p[0].number;
    return LK_OK;
}

static lk_status ce_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                         lk_msg *msg)
{
    const lk_tensor *x = &slots[0];
    char sh[192];
    (void)inst, (void)reduction;
    if (x->ndim < 1 || x->ndim > 2)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input1: shape %s; cosine_embedding takes (N, D) rows or one (D,) vector",
                       mg_shape(sh, sizeof sh, x));
    mg_rows_plan(plan, x->ndim == 2 ? x->shape[0] : 1, x->shape[x->ndim - 1], x->ndim - 1, x->shape,
                 0);
    return LK_OK;
}

#if MG_ROWS
LK_AI lk_status ce_row(const cosemb *c, const mg_rows *io, int64_t r, double *loss, lk_msg *msg)
{
    const int64_t D = io->D, base = r * D;
    lk_acc sp = lk_acc_zero(), s1 = lk_acc_zero(), s2 = lk_acc_zero();
    lk_m bad = lk_eq(lk_set(1.0), lk_zero());
    for (int64_t j = 0; j < D; j += LK_W) {
        int k = D - j < LK_W ? (int)(D - j) : LK_W;
        lk_v a = mg_ld(io, 0, base + j, k), b = mg_ld(io, 1, base + j, k);
        lk_acc_add(&sp, lk_mul(a, b));
        lk_acc_add(&s1, lk_mul(a, a));
        lk_acc_add(&s2, lk_mul(b, b));
        bad = lk_or(bad, lk_or(mg_isinf(a), mg_isinf(b)));
    }
    if (lk_any(bad)) {
        lk_status st = mg_refuse_inf(io, "input1", 0, base, D, msg);
        return st == LK_ERR_NUMERIC ? st : mg_refuse_inf(io, "input2", 1, base, D, msg);
    }
    const double m1 = lk_acc_sum(s1) + CE_EPS, m2 = lk_acc_sum(s2) + CE_EPS;
    const double den = sqrt(m1 * m2), cs = lk_acc_sum(sp) / den;
    const double t = mg_get(io, 2, r), h = cs - c->margin;
    double ds = 0.0;
    *loss = 0.0;
    if (t == 1.0) {
        *loss = 1.0 - cs;
        ds = -1.0;
    } else if (t == -1.0) {
        *loss = isnan(h) || h > 0.0 ? h : 0.0;
        ds = h >= 0.0 ? 1.0 : 0.0;
    }
    if (!io->want_grad)
        return LK_OK;
    const lk_v vs = lk_set(ds / den), v1 = lk_set(ds * cs / m1), v2 = lk_set(ds * cs / m2);
    for (int64_t j = 0; j < D; j += LK_W) {
        int k = D - j < LK_W ? (int)(D - j) : LK_W;
        lk_v a = mg_ld(io, 0, base + j, k), b = mg_ld(io, 1, base + j, k);
        mg_put(io, 0, base + j, k, ds == 0.0 ? lk_zero() : lk_sub(lk_mul(vs, b), lk_mul(v1, a)));
        mg_put(io, 1, base + j, k, ds == 0.0 ? lk_zero() : lk_sub(lk_mul(vs, a), lk_mul(v2, b)));
    }
    return LK_OK;
}
#endif

MG_ROW_LOSS(cosine_embedding, cosemb, ce_row, 3, ce_slots,
            LK_HOOKS(.init = ce_init, .plan = ce_plan),
            .summary = "torch's cosine_embedding_loss: 1 - cos for label 1, max(0, cos - "
                       "margin) for label -1",
            .version = "1.0.0", .params = ce_params)
