/* bce_with_logits: torch's binary cross-entropy from logits, with an
 * optional per-element weight and pos_weight along the last dimension, and
 * smp's SoftBCEWithLogitsLoss options: label_smoothing and ignore_index.
 *
 * Without either option the loss runs the kernels it always had (family
 * bce_plain). ignore_index makes the mean divide by the elements not
 * ignored, a count of the targets: such a call is planned as one block,
 * whose forward counts before it writes the gradient (bce_gen__fwd). */
#include "tutorial.h"

typedef struct bce {
    int64_t n_pw;     /* 0: pos_weight 1 everywhere */
    double pw1;       /* the value when n_pw <= 1 */
    const double *pw; /* n_pw values when n_pw > 1 */
    double smooth;    /* label_smoothing */
    int has_ignore;
    int64_t ignore_index;
} bce;

static const lk_param_desc bce_pos_weight = {
    .name = "pos_weight",
    .doc = "weight of the positive term: [] for 1, one value for all, or one per "
           "index of the input's last dimension",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc bce_label_smoothing = {
    .name = "label_smoothing",
    .doc = "s: targets become t (1 - s) + (1 - t) s (smp's smooth_factor)",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.0,
    .min = 0.0,
    .max = 1.0,
};

static const lk_param_desc bce_ignore_index = {
    .name = "ignore_index",
    .doc = "elements whose target is this value count nowhere (mean divides by the others); "
           "unset (the default shown is not applied): none",
    .type = LK_PARAM_INTEGER,
    .default_number = -100.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc *const bce_params[] LK__UNUSED = {
    &bce_pos_weight, &bce_label_smoothing, &bce_ignore_index, NULL};

static lk_status bce_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    bce *b = inst;
    b->n_pw = p[0].list ? p[0].list_len : 0;
    b->pw1 = b->n_pw == 1 ? p[0].list[0] : 1.0;
    b->smooth = p[1].number;
    b->has_ignore = p[2].is_set != 0;
    b->ignore_index = p[2].integer;
    if (b->n_pw > 1) {
        double *pw = malloc((size_t)b->n_pw * sizeof *pw);
        if (!pw)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld pos_weight values",
                           (long long)b->n_pw);
        memcpy(pw, p[0].list, (size_t)b->n_pw * sizeof *pw);
        b->pw = pw;
    }
    return LK_OK;
}

static void bce_fini(void *inst)
{
    free((void *)((bce *)inst)->pw);
}

static lk_status bce_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    const bce *b = inst;
    const lk_tensor *x = &slots[0];
    int64_t last = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    if (b->n_pw > 1 && b->n_pw != last)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "pos_weight has %lld values but the input's last dimension is %lld; "
                       "give 1 value or %lld",
                       (long long)b->n_pw, (long long)last, (long long)last);
    if (b->has_ignore) {
        plan->n_stats = 2; /* the losses, the elements counted */
        plan->auxf[0] = plan->mean_norm;
        if (reduction == LK_REDUCTION_MEAN) /* one block: see bce_gen__fwd */
            plan->block_positions = plan->n_positions > 0 ? plan->n_positions : 1;
    }
    return LK_OK;
}

/* mean with ignore_index: over the elements counted, 0 when there are none. */
static lk_status bce_finalize(const void *inst, const lk_plan *plan, const double *st,
                              int32_t reduction, double *value, lk_msg *msg)
{
    const bce *b = inst;
    (void)msg;
    if (reduction != LK_REDUCTION_MEAN)
        *value = st[0];
    else if (b->has_ignore)
        *value = st[1] > 0.0 ? st[0] / st[1] : 0.0;
    else
        *value = st[0] / plan->mean_norm;
    return LK_OK;
}

static int bce_pick(const void *inst)
{
    const bce *b = inst;
    return b->smooth != 0.0 || b->has_ignore;
}

LK_AI void bce_elem(const bce *b, lk_elem *e)
{
    lk_sigm p = lk_sigm_of(e->x);
    lk_v L = lk_sigm_log1p(&p);
    if (b->n_pw == 0) { /* pos_weight 1: the same formulas, fewer multiplies */
        e->loss = lk_bce_logits_of1(&p, L, e->t);
        e->grad = lk_sigm_minus_t(&p, e->t);
        return;
    }
    lk_v pw = b->n_pw > 1 ? lk_load_cyclic(b->pw, b->n_pw, e->i) : lk_set(b->pw1);
    e->loss = lk_bce_logits_of(&p, L, e->t, pw);
    e->grad = lk_bce_logits_grad(&p, e->t, pw);
}

/* Smoothing, then bce_elem; an ignored element gives 0 and no gradient
 * whatever its logit (NaN included). */
LK_AI void bce_elem_gen(const bce *b, lk_elem *e)
{
    lk_v t = e->t;
    if (b->smooth != 0.0)
        e->t = lk_fma(t, lk_set(1.0 - 2.0 * b->smooth), lk_set(b->smooth));
    bce_elem(b, e);
    if (b->has_ignore) {
        lk_m ig = lk_eq(t, lk_set((double)b->ignore_index));
        e->loss = lk_clear(ig, e->loss);
        e->grad = lk_clear(ig, e->grad);
    }
}

LK_KERNELS_ELEMENTWISE(bce_plain, bce, bce_elem, LK_EW_WEIGHT | LK_EW_UNIT_TARGET)

LK_AI void bce_gen__elem(const void *p, lk_elem *e)
{
    bce_elem_gen((const bce *)p, e);
}

/* The targets of the block other than ignore_index must lie in [0, 1];
 * their count goes to stats[1]. With reduction mean the block is the whole
 * call (bce_plan), so the count is the call's, and the host's 1 / mean_norm
 * in grad_scale becomes 1 / count (0 when nothing is counted). A split
 * evaluation's second run sees the processes' summed mean_norm, not their
 * summed count: refused. */
static lk_status bce_gen__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    const bce local = *(const bce *)inst;
    if (!local.has_ignore)
        return lk_elementwise_forward(&local, plan, blk, bce_gen__elem,
                                      LK_EW_WEIGHT | LK_EW_UNIT_TARGET, msg);
    const lk_tensor *t = &blk->slots[1];
    int tf = t->dtype == LK_DTYPE_F32;
    double ig = (double)local.ignore_index;
    int64_t n = 0;
    for (int64_t j = blk->begin; j < blk->end; j++) {
        double v = lk__get(t->data, tf, j);
        if (v == ig)
            continue;
        if (v < 0.0 || v > 1.0)
            return lk_fail(msg, LK_ERR_INVALID,
                           "target[%lld] = %g is outside [0, 1] and not ignore_index %lld",
                           (long long)j, v, (long long)local.ignore_index);
        n++;
    }
    lk_block b = *blk;
    if (blk->reduction == LK_REDUCTION_MEAN && blk->grads && blk->grads[0].data) {
        if (plan->mean_norm != plan->auxf[0])
            return lk_fail(msg, LK_ERR_UNSUPPORTED,
                           "ignore_index with reduction mean divides by the elements not "
                           "ignored, which a split evaluation cannot sum; use reduction sum "
                           "and divide by the count");
        b.grad_scale = n > 0 ? blk->grad_scale * plan->mean_norm / (double)n : 0.0;
    }
    blk->stats[1] += (double)n;
    return lk_elementwise_forward(&local, plan, &b, bce_gen__elem, LK_EW_WEIGHT, msg);
}

LK__KSET(bce_gen, bce_gen__fwd, NULL, 0)
LK__FAMILY(bce_gen)

LK_LOSS_DESC(bce_with_logits, bce, LK_LOSS_FUSED, bce_with_logits__finalize, NULL,
             LK_FAMILIES(&bce_plain__family, &bce_gen__family), tut_weighted_logit_slots,
             LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = bce_init, .fini = bce_fini, .plan = bce_plan,
                      .finalize = bce_finalize, .pick = bce_pick),
             .summary = "binary cross-entropy from logits, stable, with weight, pos_weight, "
                        "label_smoothing and ignore_index",
             .version = "1.2.0", .params = bce_params)
