/* multilabel_soft_margin: torch.nn.functional.multilabel_soft_margin_loss
 * (torch 1.13) on logits x of shape (N, C) or (C,), the classes in the last
 * dimension (torch's class_dim = input.dim() - 1; more leading dimensions
 * are rows too), targets t shaped like x:
 *
 *   loss(row) = (1 / C) sum_c w_c bce(x_c, t_c),
 *   bce(x, t) = -[t log sigmoid(x) + (1 - t) log sigmoid(-x)]
 *   d loss(row) / d x_c = w_c (sigmoid(x_c) - t_c) / C
 *
 * none gives one value per row (the input's shape without its last
 * dimension), mean averages the rows, sum adds them. The bce is the stable
 * logistic form (no NaN or overflow at +-inf logits). A position is a row;
 * one pass writes the gradient (fused). */
#include "classification.h"
#include "losskit/classes.h"

typedef struct msm {
    cls_weights w; /* 0, 1 (every class) or C values */
} msm;

static const lk_param_desc msm_weight = {
    .name = "weight",
    .doc = "per-class weights: [] for none, one value for every class, or C values",
    .type = LK_PARAM_NUMBER_LIST,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc *const msm_params[] LK__UNUSED = {&msm_weight, NULL};

static lk_status msm_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    return cls_weights_init(&((msm *)inst)->w, &p[0], msg);
}

static void msm_fini(void *inst)
{
    cls_weights_fini(&((msm *)inst)->w);
}

enum { MSM_AUX_C };

static lk_status msm_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    const msm *m = inst;
    const lk_tensor *x = &slots[0];
    (void)reduction;
    if (x->ndim < 1)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: expected logits (C,) or (N, C), the classes last; got a scalar");
    int64_t C = x->shape[x->ndim - 1], rows = 1;
    for (int32_t d = 0; d + 1 < x->ndim; d++)
        rows *= x->shape[d];
    if (m->w.n > 1 && m->w.n != C)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "weight has %lld values but the input has %lld class%s (its last "
                       "dimension); give [], 1 or %lld values",
                       (long long)m->w.n, (long long)C, C == 1 ? "" : "es", (long long)C);
    plan->n_positions = rows;
    plan->block_positions = lk_classes_block(C > 0 ? C : 1);
    plan->out_ndim = x->ndim - 1;
    for (int32_t d = 0; d + 1 < x->ndim; d++)
        plan->out_shape[d] = x->shape[d];
    plan->mean_norm = (double)rows;
    plan->aux[MSM_AUX_C] = C;
    return LK_OK;
}

/* One vector of a row: the weighted bce and its gradient, from k classes
 * at c. */
LK_AI void msm_elem(const msm *m, int64_t c, int k, lk_v x, lk_v t, lk_v *loss, lk_v *grad)
{
    lk_sigm p = lk_sigm_of(x);
    lk_v L = lk_sigm_log1p(&p);
    *loss = lk_bce_logits_of1(&p, L, t);
    *grad = lk_sigm_minus_t(&p, t);
    if (m->w.n) {
        lk_v w = m->w.n == 1 ? lk_set(m->w.d[0]) : cls_weights_load(&m->w, c, k);
        *loss = lk_mul0(w, *loss);
        *grad = lk_mul0(w, *grad);
    }
}

static lk_status msm_fwd(const void *inst, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
    const msm local = *(const msm *)inst;
    const lk_tensor *s = blk->slots;
    int64_t C = plan->aux[MSM_AUX_C];
    int xf = s[0].dtype == LK_DTYPE_F32, tf = s[1].dtype == LK_DTYPE_F32;
    void *g = blk->grads ? blk->grads[0].data : NULL, *out = blk->out->data;
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    lk_v scale = lk_set(blk->grad_scale / (double)C);
    double total = 0.0;
    (void)msg;
    for (int64_t r = blk->begin; r < blk->end; r++) {
        lk_acc sum = lk_acc_zero();
        for (int64_t c = 0; c < C; c += LK_W) {
            int k = C - c < LK_W ? (int)(C - c) : LK_W;
            int64_t i = r * C + c;
            lk_v loss, grad;
            msm_elem(&local, c, k, lk__ld(s[0].data, xf, i, k, 0.0),
                     lk__ld(s[1].data, tf, i, k, 0.0), &loss, &grad);
            lk_acc_add(&sum, k == LK_W ? loss : lk_keep(lk_first(k), loss));
            if (g)
                lk__put_grad(g, xf, i, k, grad, scale, acc);
        }
        /* C = 0: a mean over no class is 0 (docs/design.md; torch: NaN) */
        double row = C ? lk_acc_sum(sum) / (double)C : 0.0;
        /* torch's t log sigmoid(x) + (1 - t) log sigmoid(-x) is inf - inf,
         * NaN, at an infinite target, where the stable form gives +-inf:
         * such a row is never finite here, so only those are looked at */
        for (int64_t c = 0; !isfinite(row) && !isnan(row) && c < C; c++)
            if (isinf(lk__get(s[1].data, tf, r * C + c)))
                row = NAN;
        total += row;
        if (out) {
            if (xf)
                ((float *)out)[r] = (float)row;
            else
                ((double *)out)[r] = row;
        }
    }
    blk->stats[0] += total;
    return LK_OK;
}

LK__KSET(msm_k, msm_fwd, NULL, 0)
LK__FAMILY(msm_k)

static const lk_slot_desc msm_input = {
    .name = "input",
    .doc = "logits (N, C) or (C,), the classes in the last dimension",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
    .ndims = LK_NDIM_FROM(1),
};

static const lk_slot_desc msm_target = {
    .name = "target",
    .doc = "targets, 0/1 labels or soft, shaped like input; not differentiable",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_UNIT,
};

static const lk_slot_desc *const msm_slots[] LK__UNUSED = {&msm_input, &msm_target, NULL};

LK_LOSS_DESC(multilabel_soft_margin, msm, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&msm_k__family),
             msm_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = msm_init, .fini = msm_fini, .plan = msm_plan),
             .summary = "torch.nn.functional.multilabel_soft_margin_loss: per row the "
                        "class-mean of the weighted logistic loss, classes last",
             .params = msm_params)
