/* cross_entropy.c: torch.nn.functional.cross_entropy (torch 1.13), with
 * class-index or class-probability targets, per-class weights, ignore_index
 * and label smoothing, on the class driver (losskit/classes.h). README.md
 * gives the formulas and edge cases. Both kinds of target are one weighted
 * sum over classes,
 *
 *   loss = sum_c q_c (lse - z_c),   d loss / d x_c = Q p_c - q_c,  Q = sum_c q_c,
 *
 * q_c = (1 - eps) w_y [c = y] + (eps / C) w_c for a class index y and
 * q_c = w_c ((1 - eps) t_c + eps / C) for probabilities t.
 *
 * One pass (FUSED): "mean" divides by the sum of w_y over the positions
 * not ignored (index targets) or the position count, a function of the
 * targets alone, which the plan computes (lk_cls_spec.target_norm); forward
 * then forms value and gradient from one exp per class. Statistics: the
 * sum of losses and of w_y (the value divides by the latter, as split
 * evaluation sums it). */
#include "losskit/classes.h"

typedef struct cross_entropy {
    int64_t ignore_index;
    double eps;       /* label_smoothing */
    int64_t n_weight; /* 0: every class weighs 1 */
    double wsum;      /* sum of the weights */
    double *weight;
    const lk_host *host; /* its threads run the plan's pre-pass over the targets */
} cross_entropy;

enum { ST_LOSS, ST_WEIGHT };

/* ------------------------------------------------------------------------ */
/* Kernel pieces                                                             */

LK_AI double ce_w(const cross_entropy *ce, int64_t c)
{
    return ce->weight ? ce->weight[c] : 1.0;
}

LK_AI double ce_share(const cross_entropy *ce, const lk_cls_io *io)
{
    return ce->eps / (double)io->C;
}

/* q_c of a probability target, in double. */
LK_AI lk_w ce_q(const cross_entropy *ce, const lk_cls_io *io, int64_t c, lk_v t)
{
    lk_w q = lk_w_add(lk_w_mul(lk_w_set(1.0 - ce->eps), lk_w_of(t)), lk_w_set(ce_share(ce, io)));
    return lk_w_mul(lk_w_set(ce_w(ce, c)), q);
}

/* Forward, index targets: the target's z_y. */
LK_AI void ce_fwd1(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                   const lk_cls_el *el, lk_cls_acc *ca)
{
    (void)inst, (void)c, (void)ca;
    if (io->index)
        p->a = lk_select(el->hit, el->z, p->a);
}

/* Backward, probability targets: Q = sum_c q_c. */
LK_AI void ce_bwd1(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                   const lk_cls_el *el, lk_cls_acc *ca)
{
    (void)ca;
    if (!io->index)
        p->u = lk_w_add(p->u, ce_q((const cross_entropy *)inst, io, c, el->t));
}

/* With lse: the smoothing sum sum_c w_c (lse - z_c) (a weight of 0
 * contributes 0 even where z_c = -inf), or sum_c q_c (lse - z_c). */
LK_AI void ce_fwd2(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                   const lk_cls_el *el, lk_cls_acc *ca)
{
    const cross_entropy *ce = (const cross_entropy *)inst;
    (void)ca;
    lk_w d = lk_w_of(lk_sub(p->lse, el->z));
    if (!io->index)
        p->u = lk_w_add(p->u, lk_w_mul0(ce_q(ce, io, c, el->t), d));
    else if (ce_w(ce, c) != 0.0)
        p->u = lk_w_add(p->u, lk_w_mul(lk_w_set(ce_w(ce, c)), d));
}

LK_AI int ce_want2(const void *inst, const lk_cls_io *io)
{
    return !io->index || ((const cross_entropy *)inst)->eps > 0.0;
}

LK_AI lk_w ce_wy(const cross_entropy *ce, const lk_cls_pos *p)
{
    return ce->weight ? lk_cls_lookup(ce->weight, p->y) : lk_w_keep(p->valid, lk_w_set(1.0));
}

/* Index targets, no class weights, no label smoothing (the defaults): each
 * counted position weighs 1. */
LK_AI int ce_plain(const cross_entropy *ce, int index)
{
    return index && !ce->weight && ce->eps == 0.0;
}

LK_AI lk_w ce_fwd_pos(const void *inst, const lk_cls_io *io, lk_cls_pos *p, lk_acc *pa)
{
    const cross_entropy *ce = (const cross_entropy *)inst;
    if (ce_plain(ce, io->index)) {
        /* lse - z_y >= 0 in the lanes (one rounding of the difference), the
         * weights' sum a count of the counted lanes, exact */
        lk_v loss = lk_keep(p->valid, lk_sub(p->lse, p->a));
        lk_acc_add(&pa[ST_LOSS], loss);
        lk_acc_add_count(&pa[ST_WEIGHT], lk_cls_count(p->valid));
        return lk_w_of(loss);
    }
    lk_w loss = p->u;
    if (io->index) {
        lk_w wy = ce_wy(ce, p);
        loss = lk_w_mul0(wy, lk_w_sub(lk_w_of(p->lse), lk_w_of(p->a)));
        if (ce->eps > 0.0)
            loss = lk_w_add(lk_w_mul0(lk_w_set(1.0 - ce->eps), loss),
                            lk_w_mul(lk_w_set(ce_share(ce, io)), p->u));
        lk_acc_addw(&pa[ST_WEIGHT], lk_w_keep(p->valid, wy));
    }
    loss = lk_w_keep(p->valid, loss);
    lk_acc_addw(&pa[ST_LOSS], loss);
    return loss;
}

/* The gradient's scale (grad_scale over the mean's divisor) outside the
 * plain case: ce_prep leaves it after the table, and the factors a, b and
 * the table take it in double before they are rounded to the lanes, so
 * that class weights far from 1 (1e-39 or 1e39 in float32 lanes: w_y / s
 * subnormal, 1 / sum w beyond the floats) give the gradient of the same
 * weights near 1, which the mean's is. */
LK_AI double ce_scale(const lk_cls_io *io)
{
    return io->tab[io->C];
}

/* a = Q / s; index targets: b = q_y; both times the scale. */
LK_AI lk_w ce_bwd_pos(const void *inst, const lk_cls_io *io, lk_cls_pos *p, lk_acc *pa)
{
    const cross_entropy *ce = (const cross_entropy *)inst;
    (void)pa;
    if (ce_plain(ce, io->index)) {
        /* Q = 1: the softmax's factor 1 / s, in the lanes (as the
         * driver's r, which backward does not form) */
        p->a = lk_keep(p->valid, lk_div(lk_set(1.0), lk_w_narrow(p->s)));
        p->b = lk_keep(p->valid, lk_set(1.0));
        return lk_w_set(1.0);
    }
    lk_w Q = p->u, sc = lk_w_set(ce_scale(io));
    if (io->index) {
        lk_w wy = ce_wy(ce, p), kw = lk_w_mul(lk_w_set(1.0 - ce->eps), wy);
        Q = lk_w_add(kw, lk_w_set(ce_share(ce, io) * (ce->weight ? ce->wsum : (double)io->C)));
        p->b = lk_w_narrow(lk_w_mul(lk_w_add(kw, lk_w_mul(lk_w_set(ce_share(ce, io)), wy)), sc));
    }
    p->a = lk_w_narrow(lk_w_div(lk_w_mul(Q, sc), p->s));
    return Q;
}

/* Q p_c - q_c, one rounding; tab[c] is the q_c of a class other than y. */
LK_AI lk_v ce_grad(const void *inst, const lk_cls_io *io, const lk_cls_pos *p, int64_t c,
                   const lk_cls_el *el)
{
    const cross_entropy *ce = (const cross_entropy *)inst;
    lk_v q = io->index ? lk_select(el->hit, p->b, lk_set(io->tab[c]))
                       : lk_w_narrow(lk_w_mul(ce_q(ce, io, c, el->t), lk_w_set(ce_scale(io))));
    return lk_fma(p->a, el->e, lk_neg(q));
}

/* tab: (eps / C) w_c per class, formed once rather than per vector, and
 * after the C classes the gradient's scale. Outside the plain case the
 * scale is in tab and the factors (ce_scale), and the driver's is 1. */
static double ce_prep(const void *inst, const lk_plan *plan, const lk_block *blk, double *tab)
{
    const cross_entropy *ce = (const cross_entropy *)inst;
    int64_t C = plan->aux[LK_CLS_AUX_C];
    int index = plan->aux[LK_CLS_AUX_KIND] == LK_CLS_INDEX;
    double scale = blk->grad_scale; /* FUSED forward: the host folded the divisor in */
    if (blk->reduction == LK_REDUCTION_MEAN && blk->global) {
        double norm = index ? blk->global[ST_WEIGHT] : plan->mean_norm;
        scale = norm != 0.0 ? blk->grad_scale / norm : 0.0; /* nothing counted: no gradient */
    }
    int plain = ce_plain(ce, index);
    for (int64_t c = 0; c < C; c++)
        tab[c] = ce->eps / (double)C * ce_w(ce, c) * (plain ? 1.0 : scale);
    tab[C] = scale;
    return plain ? scale : 1.0;
}

/* "[1, 3, 5]": the multi-index of element flat of t. */
static void index_str(const lk_tensor *t, int64_t flat, char *buf, size_t cap)
{
    int64_t idx[LK_MAX_NDIM];
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? flat % t->shape[d] : 0;
        flat = t->shape[d] ? flat / t->shape[d] : 0;
    }
    lk_shape_str(buf, cap, t->ndim, idx);
    buf[0] = '[';
    char *end = strrchr(buf, ')');
    if (end && end > buf && end[-1] == ',')
        end--;
    if (end)
        end[0] = ']', end[1] = '\0';
}

static lk_status ce_bad_index(const void *inst, const lk_tensor *t, int64_t pos, int64_t y,
                              int64_t C, lk_msg *msg)
{
    char where[192];
    index_str(t, pos, where, sizeof where);
    return lk_fail(msg, LK_ERR_INVALID,
                   "target%s (position %lld) is %lld: not a class in [0, %lld) and not "
                   "ignore_index (%lld)",
                   where, (long long)pos, (long long)y, (long long)C,
                   (long long)((const cross_entropy *)inst)->ignore_index);
}

static const lk_cls_ops ce_ops = {
    .flags = LK_CLS_LSE,
    .n_pos = 2,
    .n_tab = 2, /* C doubles, then the scale */
    .fwd1 = ce_fwd1,
    .fwd2 = ce_fwd2,
    .bwd1 = ce_bwd1,
    .want2 = ce_want2,
    .fwd_pos = ce_fwd_pos,
    .bwd_pos = ce_bwd_pos,
    .grad = ce_grad,
    .prep = ce_prep,
    .bad_index = ce_bad_index,
};

LK_CLASSES_KERNELS(cross_entropy, cross_entropy, ce_ops)

/* ------------------------------------------------------------------------ */
/* Descriptor                                                                */

static lk_status ce_init(void *inst, const lk_param_value *params, lk_msg *msg)
{
    cross_entropy *ce = (cross_entropy *)inst;
    ce->n_weight = params[0].list ? params[0].list_len : 0;
    ce->ignore_index = params[1].integer;
    ce->eps = params[2].number;
    if (!ce->n_weight)
        return LK_OK;
    ce->weight = (double *)malloc((size_t)ce->n_weight * sizeof(double));
    if (!ce->weight)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    for (int64_t c = 0; c < ce->n_weight; c++)
        ce->wsum += ce->weight[c] = params[0].list[c];
    return LK_OK;
}

static void ce_fini(void *inst)
{
    free(((cross_entropy *)inst)->weight);
}

static lk_status ce_mismatch(const lk_tensor *x, const lk_tensor *t, int index, const int64_t *want,
                             int32_t want_ndim, lk_msg *msg)
{
    char xs[192], ts[192];
    (void)index, (void)want, (void)want_ndim;
    lk_shape_str(xs, sizeof xs, x->ndim, x->shape);
    lk_shape_str(ts, sizeof ts, t->ndim, t->shape);
    return lk_fail(msg, LK_ERR_SHAPE,
                   "target: shape %s does not fit input %s: class indices take the input's "
                   "shape without dim %d, class probabilities the input's shape",
                   ts, xs, x->ndim == 1 ? 0 : 1);
}

static lk_status ce_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                         lk_msg *msg)
{
    const cross_entropy *ce = (const cross_entropy *)inst;
    lk_cls_spec sp = {.who = "cross_entropy",
                      .allow_1d = 1,
                      .index_dtypes = LK_DTYPES_INT,
                      .n_pos = 2,
                      .ignore_index = ce->ignore_index,
                      .mismatch = ce_mismatch,
                      .norm_w = ce->weight,
                      .inst = ce,
                      .bad_index = ce_bad_index,
                      .host = ce->host};
    lk_status st = lk_classes_plan(&sp, slots, plan, msg);
    if (st != LK_OK)
        return st;
    int64_t C = plan->aux[LK_CLS_AUX_C];
    if (plan->aux[LK_CLS_AUX_KIND] == LK_CLS_PROB && ce->ignore_index >= 0)
        return lk_fail(msg, LK_ERR_INVALID,
                       "ignore_index %lld is not supported with class-probability targets "
                       "(torch refuses any ignore_index >= 0 there)",
                       (long long)ce->ignore_index);
    if (ce->n_weight && ce->n_weight != C)
        return lk_fail_per_class(msg, "weight", ce->n_weight, C,
                                 slots[0].ndim == 1 ? "dim 0" : "dim 1");
    /* after the weight check: the pre-pass reads weight[y]. Sum and none
     * divide by nothing: forward refuses a bad index there */
    sp.target_norm = reduction == LK_REDUCTION_MEAN;
    return sp.target_norm ? lk_classes_target_norm(&sp, slots, plan, msg) : LK_OK;
}

/* A mean over no counted position (none at all, every one ignored, or all
 * weighing 0) is 0 (docs/design.md), where torch gives 0/0 = NaN. */
static lk_status ce_finalize(const void *inst, const lk_plan *plan, const double *st,
                             int32_t reduction, double *value, lk_msg *msg)
{
    (void)inst, (void)msg;
    double norm = plan->aux[LK_CLS_AUX_KIND] == LK_CLS_INDEX ? st[ST_WEIGHT] : plan->mean_norm;
    if (reduction == LK_REDUCTION_SUM)
        *value = st[ST_LOSS];
    else
        *value = norm != 0.0 ? st[ST_LOSS] / norm : 0.0;
    return LK_OK;
}

/* create() as the layer makes it, keeping the host. */
#if defined(LK_PRIMARY)
static lk_status ce_create(const lk_create_args *a, void **inst, lk_msg *msg);
#else
#define ce_create NULL
#endif

static const lk_slot_desc ce_input = {
    .name = "input",
    .doc = "logits (N, C, d1, ...) or (C,); the class dimension is dim 1 (dim 0 for (C,))",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
};

/* LK_SHAPE_ANY: the dtype decides the rule, which the plan checks. */
static const lk_slot_desc ce_target = {
    .name = "target",
    .doc = "class indices (int64/int32, the input's shape without dim 1) or class "
           "probabilities (float, the input's shape)",
    .dtypes = LK_DTYPES_FLOAT | LK_DTYPES_INT,
    .shape = LK_SHAPE_ANY,
};

static const lk_slot_desc *const ce_slots[] LK__UNUSED = {&ce_input, &ce_target, NULL};

static const lk_param_desc ce_weight = {
    .name = "weight",
    .doc = "per-class weights: [] for none, else exactly C values",
    .type = LK_PARAM_NUMBER_LIST,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc ce_ignore_index = {
    .name = "ignore_index",
    .doc = "positions whose class index equals this give loss 0 and no gradient "
           "(index targets; must be negative with probability targets)",
    .type = LK_PARAM_INTEGER,
    .default_number = -100,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc ce_label_smoothing = {
    .name = "label_smoothing",
    .doc = "mixes the target with the uniform distribution: (1 - eps) target + eps / C",
    .type = LK_PARAM_NUMBER,
    .min = 0.0,
    .max = 1.0,
};

static const lk_param_desc *const ce_params[] = {&ce_weight, &ce_ignore_index, &ce_label_smoothing,
                                                 NULL};

LK_LOSS_DESC(cross_entropy, cross_entropy, LK_LOSS_FUSED, cross_entropy__finalize, NULL,
             LK_FAMILIES(&cross_entropy__family), ce_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = ce_init, .fini = ce_fini, .plan = ce_plan, .finalize = ce_finalize),
             .summary = "torch.nn.functional.cross_entropy: log-softmax over dim 1 with "
                        "class-index or class-probability targets, weight, ignore_index, "
                        "label_smoothing",
             .params = ce_params, .create = ce_create)

#if defined(LK_PRIMARY)
static lk_status ce_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    lk_status st = cross_entropy__create(a, inst, msg);
    if (st == LK_OK)
        ((cross_entropy *)lk__user((lk__inst *)*inst))->host = a->host;
    return st;
}
#endif
