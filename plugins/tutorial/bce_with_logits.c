/* bce_with_logits: torch's binary cross-entropy from logits, with an
 * optional per-element weight and pos_weight along the last dimension, and
 * smp's SoftBCEWithLogitsLoss options: label_smoothing and ignore_index.
 *
 * Without either option the loss runs the kernels it always had (family
 * bce_plain; bce_pw1 for the default pos_weight of 1). ignore_index makes
 * the mean divide by the elements not ignored, a count of the targets:
 * under mean such a call is planned as one block, whose forward counts
 * before it writes the gradient, spreading that block over the host's
 * threads itself (bce_one_block). */
#include "tutorial.h"

typedef struct bce {
    int64_t n_pw;     /* 0: pos_weight 1 everywhere */
    double pw1;       /* the value when n_pw <= 1 */
    const double *pw; /* n_pw values when n_pw > 1 */
    double smooth;    /* label_smoothing */
    int has_ignore;
    int64_t ignore_index;
    const lk_host *host; /* its threads serve the one block of bce_gen__fwd */
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

static const lk_param_desc *const bce_params[] LK__UNUSED = {&bce_pos_weight, &bce_label_smoothing,
                                                             &bce_ignore_index, NULL};

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
        *value = plan->mean_norm > 0.0 ? st[0] / plan->mean_norm : 0.0; /* a mean over nothing */
    return LK_OK;
}

/* The index into bce_with_logits' families: bce_plain, bce_gen, bce_pw1. */
static int bce_pick(const void *inst)
{
    const bce *b = inst;
    if (b->smooth != 0.0 || b->has_ignore)
        return 1;
    return b->n_pw == 0 ? 2 : 0;
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

/* pos_weight 1 (the default) in a family of its own: with no per-vector
 * test of n_pw in the loop, nor the cyclic load's registers, the sums and
 * constants stay in registers. */
LK_AI void bce_elem1(const bce *b, lk_elem *e)
{
    (void)b;
    lk_sigm p = lk_sigm_of(e->x);
    e->loss = lk_bce_logits_of1(&p, lk_sigm_log1p(&p), e->t);
    e->grad = lk_sigm_minus_t(&p, e->t);
}

LK_KERNELS_ELEMENTWISE(bce_pw1, bce, bce_elem1, LK_EW_WEIGHT | LK_EW_UNIT_TARGET)

LK_AI void bce_gen__elem(const void *p, lk_elem *e)
{
    bce_elem_gen((const bce *)p, e);
}

/* The count of the targets of [j0, j1) other than ignore_index, each of
 * which must lie in [0, 1]; -1 and a message at the first that does not. */
static int64_t bce_count(const bce *b, const lk_tensor *t, int64_t j0, int64_t j1, lk_msg *msg)
{
    int tf = t->dtype == LK_DTYPE_F32;
    double ig = (double)b->ignore_index;
    int64_t n = 0;
    for (int64_t j = j0; j < j1; j++) {
        double v = lk__get(t->data, tf, j);
        if (v == ig)
            continue;
        if (v < 0.0 || v > 1.0) {
            lk_fail(msg, LK_ERR_INVALID,
                    "target[%lld] = %g is outside [0, 1] and not ignore_index %lld", (long long)j,
                    v, (long long)b->ignore_index);
            return -1;
        }
        n++;
    }
    return n;
}

/* With ignore_index under mean the plan makes the call one block, cut here
 * into the blocks it would otherwise have had (a function of the shape), on
 * the host's threads: every sub-block's count (pass 0), then, the call's
 * count known, their losses and gradients (pass 1), each sub-block's sums
 * in its own pair, added in order: the result does not depend on the
 * thread count. */
typedef struct bce_cut {
    const bce *b;
    const lk_plan *plan;
    const lk_block *blk;
    int64_t len;
    double *st; /* 2 per sub-block */
    double scale;
    int pass;
} bce_cut;

static lk_status bce_cut_range(void *arg, int64_t k0, int64_t k1)
{
    const bce_cut *j = (const bce_cut *)arg;
    char buf[64];
    lk_msg m = {buf, sizeof buf};
    for (int64_t k = k0; k < k1; k++) {
        lk_block s = *j->blk;
        s.begin = j->blk->begin + k * j->len;
        s.end = j->blk->end - s.begin > j->len ? s.begin + j->len : j->blk->end;
        s.stats = j->st + 2 * k;
        if (j->pass == 0) {
            int64_t n = bce_count(j->b, &s.slots[1], s.begin, s.end, &m);
            if (n < 0)
                return LK_ERR_INVALID;
            s.stats[1] = (double)n;
        } else {
            s.grad_scale = j->scale;
            lk_status st =
                lk_elementwise_forward(j->b, j->plan, &s, bce_gen__elem, LK_EW_WEIGHT, &m);
            if (st != LK_OK)
                return st;
        }
    }
    return LK_OK;
}

static lk_status bce_one_block(const bce *b, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
    int64_t len = lk_block_positions(blk->end - blk->begin);
    int64_t n = (blk->end - blk->begin + len - 1) / len;
    int grads = blk->grads && blk->grads[0].data;
    if (grads && plan->mean_norm != plan->auxf[0])
        return lk_fail(msg, LK_ERR_UNSUPPORTED,
                       "ignore_index with reduction mean divides by the elements not ignored, "
                       "which a split evaluation cannot sum; use reduction sum and divide by "
                       "the count");
    bce_cut j = {b, plan, blk, len, calloc((size_t)(n > 0 ? 2 * n : 1), sizeof(double)), 0.0, 0};
    if (!j.st)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld blocks' sums", (long long)n);
    const lk_host *h = b->host;
    int par = h && h->parallel_for;
    lk_status st = par ? h->parallel_for(h->ctx, n, 1, bce_cut_range, &j) : bce_cut_range(&j, 0, n);
    if (st != LK_OK) { /* the message of the first bad target, in order */
        bce_count(b, &blk->slots[1], blk->begin, blk->end, msg);
        free(j.st);
        return st;
    }
    double count = 0.0;
    for (int64_t k = 0; k < n; k++)
        count += j.st[2 * k + 1];
    /* the host's 1 / mean_norm becomes 1 / count, or 0 */
    j.scale = count > 0.0 ? blk->grad_scale * plan->mean_norm / count : 0.0;
    j.pass = 1;
    st = par ? h->parallel_for(h->ctx, n, 1, bce_cut_range, &j) : bce_cut_range(&j, 0, n);
    if (st != LK_OK)
        lk_fail(msg, st, "a block of the loss failed");
    for (int64_t k = 0; st == LK_OK && k < n; k++)
        blk->stats[0] += j.st[2 * k];
    blk->stats[1] += count;
    free(j.st);
    return st;
}

/* Without ignore_index, smoothing only: the plain driver. With it, the
 * targets other than ignore_index must lie in [0, 1], and their count goes
 * to stats[1]; under mean the call is one block (bce_plan, bce_one_block),
 * so the count is the call's. */
static lk_status bce_gen__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    const bce local = *(const bce *)inst;
    if (!local.has_ignore)
        return lk_elementwise_forward(&local, plan, blk, bce_gen__elem,
                                      LK_EW_WEIGHT | LK_EW_UNIT_TARGET, msg);
    if (blk->reduction == LK_REDUCTION_MEAN)
        return bce_one_block(&local, plan, blk, msg);
    int64_t n = bce_count(&local, &blk->slots[1], blk->begin, blk->end, msg);
    if (n < 0)
        return LK_ERR_INVALID;
    blk->stats[1] += (double)n;
    return lk_elementwise_forward(&local, plan, blk, bce_gen__elem, LK_EW_WEIGHT, msg);
}

LK__KSET(bce_gen, bce_gen__fwd, NULL, 0)
LK__FAMILY(bce_gen)

/* create() as the layer makes it, keeping the host, whose threads the
 * one-block calls use. */
#if defined(LK_PRIMARY)
static lk_status bce_create(const lk_create_args *a, void **inst, lk_msg *msg);
#else
#define bce_create NULL
#endif

LK_LOSS_DESC(bce_with_logits, bce, LK_LOSS_FUSED, bce_with_logits__finalize, NULL,
             LK_FAMILIES(&bce_plain__family, &bce_gen__family, &bce_pw1__family),
             tut_weighted_logit_slots,
             LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = bce_init, .fini = bce_fini, .plan = bce_plan,
                      .finalize = bce_finalize, .pick = bce_pick),
             .summary = "binary cross-entropy from logits, stable, with weight, pos_weight, "
                        "label_smoothing and ignore_index",
             .version = "1.2.0", .params = bce_params, .create = bce_create)

#if defined(LK_PRIMARY)
static lk_status bce_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    lk_status st = bce_with_logits__create(a, inst, msg);
    if (st == LK_OK)
        ((bce *)lk__user((lk__inst *)*inst))->host = a->host;
    return st;
}
#endif
