/* multilabel_margin: torch.nn.functional.multilabel_margin_loss (torch
 * 1.13), on scores x of shape (N, C) or (C,) and int64 targets of the same
 * shape: each row lists its classes, then -1 if there are fewer than C
 * (what follows the first -1 is ignored, but must still lie in [-1, C), as
 * torch checks). With J the listed classes (a repeated class counts as
 * often as it is listed) and T the set of them,
 *
 *   loss = 1 / C sum_{j in J} sum_{i not in T} max(0, 1 - (x_j - x_i)).
 *
 * As torch, a term counts only where z = 1 - x_j + x_i > 0, which a NaN
 * fails: a NaN score adds nothing and the loss is never NaN. The gradient
 * of an open term is 1 / C at i and -1 / C at j. */
#include "margin.h"

static const lk_slot_desc ml_target = {
    .name = "target",
    .doc = "int64 class ids of each row, shaped like input, padded with -1 after the last",
    .dtypes = LK_DTYPE_BIT(LK_DTYPE_I64),
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_CLASS};
static const lk_slot_desc ml_input = {.name = "input",
                                      .doc = "scores (N, C), (C,) for one row, or () for one class",
                                      .dtypes = LK_DTYPES_FLOAT,
                                      .flags = LK_SLOT_DIFFERENTIABLE,
                                      .shape = LK_SHAPE_ANY,
                                      .values = LK_VALUES_REAL,
                                      .ndims = LK_NDIM_BIT(0) | LK_NDIM_BIT(1) | LK_NDIM_BIT(2)};
static const lk_slot_desc *const ml_slots[] LK__UNUSED = {&ml_input, &ml_target, NULL};

static lk_status ml_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                         lk_msg *msg)
{
    const lk_tensor *x = &slots[0];
    char sh[192];
    (void)inst, (void)reduction;
    if (x->ndim > 2)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: shape %s; multilabel_margin takes (N, C), (C,) or ()",
                       mg_shape(sh, sizeof sh, x));
    int64_t C = x->ndim == 0 ? 1 : x->shape[x->ndim - 1], N = x->ndim == 2 ? x->shape[0] : 1;
    if (C < 1)
        return lk_fail(msg, LK_ERR_SHAPE, "input: shape %s has no class",
                       mg_shape(sh, sizeof sh, x));
    /* scratch: which classes are not targets, and the gradient's counts */
    mg_rows_plan(plan, N, C, x->ndim == 2 ? 1 : 0, x->shape, 2 * C);
    return LK_OK;
}

#if MG_ROWS
LK_AI lk_status ml_row(const lk_none *n, const mg_rows *io, int64_t r, double *loss, lk_msg *msg)
{
    const int64_t C = io->D, base = r * C;
    const int64_t *y = (const int64_t *)io->s[1].data + base;
    double *other = io->scratch, *cnt = io->scratch + C;
    const int grad = mg_wants(io, 0);
    int64_t nv = C;
    (void)n;
    for (int64_t j = 0; j < C; j++) {
        if (y[j] < -1 || y[j] >= C) {
            char where[160];
            lk_index_str(where, sizeof where, io->s[1].ndim, io->s[1].shape, base + j);
            return lk_fail(msg, LK_ERR_INVALID,
                           "target%s = %lld is neither a class in [0, %lld) nor -1", where,
                           (long long)y[j], (long long)C);
        }
        other[j] = 1.0;
        cnt[j] = 0.0;
    }
    for (int64_t j = 0; j < C; j++) {
        if (y[j] < 0) {
            nv = j;
            break;
        }
        other[y[j]] = 0.0;
    }
    lk_acc s = lk_acc_zero();
    for (int64_t jt = 0; jt < nv; jt++) {
        const lk_v zt = lk_sub(lk_set(1.0), lk_set(mg_get(io, 0, base + y[jt])));
        lk_acc c = lk_acc_zero();
        for (int64_t i = 0; i < C; i += LK_W) {
            int k = C - i < LK_W ? (int)(C - i) : LK_W;
            lk_v z = lk_add(zt, mg_ld(io, 0, base + i, k)); /* 1 - x_j + x_i, as torch */
            lk_m on = lk_and(lk_gt(z, lk_zero()), lk_gt(lk_loadn(other + i, k, 0.0), lk_zero()));
            lk_acc_add(&s, lk_keep(on, z));
            if (grad) {
                lk_v one = lk_keep(on, lk_set(1.0));
                lk_storen(cnt + i, k, lk_add(lk_loadn(cnt + i, k, 0.0), one));
                lk_acc_add(&c, one);
            }
        }
        if (grad)
            cnt[y[jt]] -= lk_acc_sum(c);
    }
    *loss = lk_acc_sum(s) / (double)C;
    for (int64_t i = 0; grad && i < C; i += LK_W) {
        int k = C - i < LK_W ? (int)(C - i) : LK_W;
        mg_put(io, 0, base + i, k, lk_mul(lk_loadn(cnt + i, k, 0.0), lk_set(1.0 / (double)C)));
    }
    return LK_OK;
}
#endif

MG_ROW_LOSS(multilabel_margin, lk_none, ml_row, 2, ml_slots, LK_HOOKS(.plan = ml_plan),
            .summary = "torch's multilabel_margin_loss: hinges between each listed class and "
                       "every unlisted one",
            .version = "1.0.0")
