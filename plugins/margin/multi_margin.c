/* multi_margin: torch.nn.functional.multi_margin_loss (torch 1.13), on
 * scores x of shape (N, C) or (C,) and an int64 class y per row:
 *
 *   loss = w_y / C sum_{i != y} max(0, margin - x_y + x_i)^p,   p in {1, 2},
 *
 * w the optional per-class weight (1 without). As torch, a term counts
 * only where z = margin - x_y + x_i > 0, a comparison that a NaN fails: a
 * NaN score adds nothing (and +inf - inf gives no term), so the loss is
 * never NaN; an infinite z gives an infinite loss. The gradient: w_y / C
 * (1, or 2 z) at each i with an open term, minus their sum at y. A zero
 * weight gives 0 even where z is infinite (torch: NaN). */
#include "margin.h"

typedef struct mmargin {
    int p;
    double margin;
    int64_t n_w; /* 0: every class weighs 1 */
    double *w;
} mmargin;

static const lk_param_desc mm_p = {
    .name = "p",
    .doc = "the exponent of each hinge term: 1 or 2",
    .type = LK_PARAM_INTEGER,
    .default_number = 1.0,
    .min = 1.0,
    .max = 2.0,
};

static const lk_param_desc mm_margin = {
    .name = "margin",
    .doc = "by how much the target's score should exceed every other",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc mm_weight = {
    .name = "weight",
    .doc = "one weight per class, applied by the target's class; [] for none",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc *const mm_params[] LK__UNUSED = {&mm_p, &mm_margin, &mm_weight, NULL};

static const lk_slot_desc mm_target = {
    .name = "target",
    .doc = "int64 class of each row in [0, C): shape (N,) for (N, C) scores, () for (C,)",
    .dtypes = LK_DTYPE_BIT(LK_DTYPE_I64),
    .shape = LK_SHAPE_INPUT_NO_CHANNEL,
    .values = LK_VALUES_CLASS};
static const lk_slot_desc mm_input = {.name = "input",
                                      .doc = "scores (N, C), or (C,) for one row",
                                      .dtypes = LK_DTYPES_FLOAT,
                                      .flags = LK_SLOT_DIFFERENTIABLE,
                                      .shape = LK_SHAPE_ANY,
                                      .values = LK_VALUES_REAL,
                                      .ndims = LK_NDIM_BIT(1) | LK_NDIM_BIT(2)};
static const lk_slot_desc *const mm_slots[] LK__UNUSED = {&mm_input, &mm_target, NULL};

static lk_status mm_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    mmargin *m = inst;
    m->p = (int)p[0].integer;
    m->margin = p[1].number;
    m->n_w = p[2].list ? p[2].list_len : 0;
    if (m->n_w > 0) {
        if (!(m->w = malloc((size_t)m->n_w * sizeof *m->w)))
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld weights", (long long)m->n_w);
        memcpy(m->w, p[2].list, (size_t)m->n_w * sizeof *m->w);
    }
    return LK_OK;
}

static void mm_fini(void *inst)
{
    free(((mmargin *)inst)->w);
}

static lk_status mm_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                         lk_msg *msg)
{
    const mmargin *m = inst;
    const lk_tensor *x = &slots[0];
    char sh[192];
    (void)reduction;
    if (x->ndim < 1 || x->ndim > 2)
        return lk_fail(msg, LK_ERR_SHAPE, "input: shape %s; multi_margin takes (N, C) or (C,)",
                       mg_shape(sh, sizeof sh, x));
    int64_t C = x->shape[x->ndim - 1], N = x->ndim == 2 ? x->shape[0] : 1;
    if (C < 1)
        return lk_fail(msg, LK_ERR_SHAPE, "input: shape %s has no class",
                       mg_shape(sh, sizeof sh, x));
    if (m->n_w > 0 && m->n_w != C)
        return lk_fail_per_class(msg, "weight", m->n_w, C, "its last dimension");
    mg_rows_plan(plan, N, C, x->ndim - 1, x->shape, 0);
    return LK_OK;
}

#if MG_ROWS
LK_AI lk_status mm_row(const mmargin *m, const mg_rows *io, int64_t r, double *loss, lk_msg *msg)
{
    const int64_t C = io->D, base = r * C;
    const int64_t y = ((const int64_t *)io->s[1].data)[r];
    if (y < 0 || y >= C)
        return lk_fail(msg, LK_ERR_INVALID, "target[%lld] = %lld is not a class in [0, %lld)",
                       (long long)r, (long long)y, (long long)C);
    const double w = m->w ? m->w[y] : 1.0;
    const lk_v gw = lk_set(w / (double)C), vy = lk_set((double)y), iota = mg_iota();
    const lk_v zy = lk_sub(lk_set(m->margin), lk_set(mg_get(io, 0, base + y)));
    const int grad = mg_wants(io, 0);
    lk_acc s = lk_acc_zero(), gs = lk_acc_zero();
    for (int64_t j = 0; j < C; j += LK_W) {
        int k = C - j < LK_W ? (int)(C - j) : LK_W;
        lk_v z = lk_add(zy, mg_ld(io, 0, base + j, k)); /* margin - x_y + x_i, as torch */
        lk_m on = lk_and(lk_and(lk_gt(z, lk_zero()), lk_first(k)),
                         lk_not(lk_eq(lk_add(iota, lk_set((double)j)), vy)));
        lk_v oz = lk_keep(on, z);
        lk_acc_add(&s, m->p == 1 ? oz : lk_mul(oz, oz));
        if (grad) {
            lk_v g = lk_mul0(gw, m->p == 1 ? lk_keep(on, lk_set(1.0)) : lk_add(oz, oz));
            lk_acc_add(&gs, g);
            mg_put(io, 0, base + j, k, g);
        }
    }
    if (grad)
        mg_put1(io, 0, base + y, -lk_acc_sum(gs));
    *loss = w == 0.0 ? 0.0 : w * lk_acc_sum(s) / (double)C;
    return LK_OK;
}
#endif

MG_ROW_LOSS(multi_margin, mmargin, mm_row, 2, mm_slots,
            LK_HOOKS(.init = mm_init, .fini = mm_fini, .plan = mm_plan),
            .summary = "torch's multi_margin_loss: w_y / C sum_i max(0, margin - x_y + x_i)^p",
            .version = "1.0.0", .params = mm_params)
