/* nll: torch.nn.functional.nll_loss (torch 1.13) on log-probabilities x of
 * shape (N, C, d1, ...) or (C,), the classes in dim 1 (dim 0 for (C,)),
 * with int64 class targets y of the input's shape without that dimension:
 *
 *   loss(pos) = -w_y x_{y, pos}  (0 where y = ignore_index)
 *   d loss / d x_{c, pos} = -w_y [c = y]
 *
 * mean divides the sum by the sum of w_y over the positions not ignored
 * (0 when that is 0, every position ignored or weighing 0, where torch
 * gives NaN: docs/design.md). A
 * position reads one element of its class column: a gather, no softmax.
 * A weight of 0 gives 0 even where x = -inf. A target that is neither a
 * class nor ignore_index fails the call, naming its position; so does a
 * gathered x of +inf, which is no log-probability.
 *
 * Two passes: forward sums the losses and the weights of the counted
 * positions (the mean's divisor), backward writes the block's gradient
 * (zero except at each position's target class). */
#include "classification.h"
#include "losskit/classes.h"

typedef struct nll {
    int64_t ignore_index;
    cls_weights w;
} nll;

enum { ST_LOSS, ST_WEIGHT, N_ST };

/* The positions p0 .. p0 + k of a vector: where each reads x (-1 where it
 * does not count), its weight and its loss, in double: a class weight far
 * from 1 (1e-44 or 1e39 beside float32 log-probabilities) is no float, and
 * the mean's divisor, its sum, is formed from the weights themselves. */
typedef struct nll_vec {
    int64_t at[LK_W];
    double w[LK_W], loss[LK_W];
} nll_vec;

/* The formula: -w x, 0 where w is 0 (ignored positions included, and x =
 * -inf with a weight of 0). */
static inline double nll_loss_of(double w, double x)
{
    return w != 0.0 ? -(w * x) : 0.0;
}

/* Gathers a vector; fails at a bad target or a +inf log-probability. */
LK_AI lk_status nll_gather(const nll *L, const lk_plan *plan, const lk_block *blk, int64_t p0,
                           int k, int want_x, nll_vec *v, lk_msg *msg)
{
    const lk_tensor *x = &blk->slots[0], *t = &blk->slots[1];
    const int64_t *y = (const int64_t *)t->data;
    int64_t C = plan->aux[LK_CLS_AUX_C], S = plan->aux[LK_CLS_AUX_S];
    int xf = x->dtype == LK_DTYPE_F32;
    for (int l = 0; l < LK_W; l++) {
        int64_t pos = p0 + l, c = l < k ? y[pos] : L->ignore_index;
        v->at[l] = -1;
        v->w[l] = v->loss[l] = 0.0;
        if (c == L->ignore_index)
            continue;
        if (c < 0 || c >= C) {
            char where[160];
            lk_index_str(where, sizeof where, t->ndim, t->shape, pos);
            return lk_fail(msg, LK_ERR_INVALID,
                           "target%s (position %lld) is %lld: not a class in [0, %lld) and not "
                           "ignore_index (%lld)",
                           where, (long long)pos, (long long)c, (long long)C,
                           (long long)L->ignore_index);
        }
        v->at[l] = pos / S * C * S + c * S + pos % S;
        v->w[l] = L->w.n ? L->w.d[c] : 1.0;
        if (!want_x)
            continue;
        double xv = lk__get(x->data, xf, v->at[l]);
        if (xv == HUGE_VAL) {
            char where[160];
            lk_index_str(where, sizeof where, x->ndim, x->shape, v->at[l]);
            return lk_fail(msg, LK_ERR_NUMERIC,
                           "input%s = +inf is not a log-probability (they are <= 0); nll "
                           "refuses it rather than return -inf or NaN",
                           where);
        }
        v->loss[l] = nll_loss_of(v->w[l], xv);
    }
    return LK_OK;
}

static lk_status nll_fwd(const void *inst, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
    const nll local = *(const nll *)inst;
    const lk_tensor *out = blk->out;
    int of = blk->slots[0].dtype == LK_DTYPE_F32;
    lk_acc sl = lk_acc_zero(), sw = lk_acc_zero();
    for (int64_t p = blk->begin; p < blk->end; p += LK_W) {
        int k = blk->end - p < LK_W ? (int)(blk->end - p) : LK_W;
        nll_vec v;
        lk_status st = nll_gather(&local, plan, blk, p, k, 1, &v, msg);
        if (st != LK_OK)
            return st;
        lk_w loss = lk_w_load(v.loss);
        lk_acc_addw(&sl, loss);
        lk_acc_addw(&sw, lk_w_load(v.w));
        if (out && out->data)
            lk__st(out->data, of, p, k, lk_w_narrow(loss));
    }
    blk->stats[ST_LOSS] += lk_acc_sum(sl);
    blk->stats[ST_WEIGHT] += lk_acc_sum(sw);
    return LK_OK;
}

/* Zeroes the block's gradient: every class of positions [begin, end). */
static void nll_zero(const lk_plan *plan, const lk_block *blk, size_t es)
{
    int64_t C = plan->aux[LK_CLS_AUX_C], S = plan->aux[LK_CLS_AUX_S];
    char *g = (char *)blk->grads[0].data;
    if (S == 1) {
        memset(g + (size_t)(blk->begin * C) * es, 0, (size_t)((blk->end - blk->begin) * C) * es);
        return;
    }
    for (int64_t p = blk->begin; p < blk->end;) {
        int64_t n = p / S, s0 = p % S, s1 = S < s0 + (blk->end - p) ? S : s0 + (blk->end - p);
        for (int64_t c = 0; c < C; c++)
            memset(g + (size_t)((n * C + c) * S + s0) * es, 0, (size_t)(s1 - s0) * es);
        p += s1 - s0;
    }
}

/* Backward where each row holds at least a vector of positions (S >=
 * LK_W): a vector of positions writes each class of its gradient whole,
 * -w_y scale in the lanes whose target is that class and 0 in the others
 * (or adds them to the gradient there), with streaming stores where the
 * gradient allows; no pass that zeroes the gradient first, no scatter.
 * Forward has refused bad targets. */
static void nll_bwd_rows(const nll *L, const lk_plan *plan, const lk_block *blk, double scale,
                         int acc)
{
    int64_t C = plan->aux[LK_CLS_AUX_C], S = plan->aux[LK_CLS_AUX_S];
    /* the class driver's view of the targets, for its index loads */
    lk_cls_io io = {.t = blk->slots[1].data, .C = C, .S = S, .ignore = L->ignore_index, .index = 1};
    void *g = blk->grads[0].data;
    int gf = blk->grads[0].dtype == LK_DTYPE_F32;
    int stream = lk__can_stream(g, gf, acc, 0, plan->n_positions * C);
    lk_v sc = lk_set(scale);
    for (int64_t p = blk->begin; p < blk->end;) {
        int64_t n = p / S, s0 = p % S;
        int64_t len = S - s0 < blk->end - p ? S - s0 : blk->end - p;
        for (int64_t s = s0; s < s0 + len; s += LK_W) {
            int k = s0 + len - s < LK_W ? (int)(s0 + len - s) : LK_W;
            int bad;                                      /* forward has refused bad targets */
            lk_v yv = lk__cls_y(&io, n * S + s, k, &bad); /* -1 where ignored or past k */
            /* 0 - w scale: +0 where w is 0, whatever the scale; a class
             * weight times the scale in double (nll_vec) */
            lk_v ws = L->w.n ? lk_w_narrow(lk_w_mul0(lk_cls_lookup(L->w.d, yv), lk_w_set(scale)))
                             : lk_mul0(lk_keep(lk_ge(yv, lk_zero()), lk_set(1.0)), sc);
            lk_v gv = lk_sub(lk_zero(), ws);
            lk_v cv = lk_zero();
            for (int64_t c = 0; c < C; c++, cv = lk_add(cv, lk_set(1.0))) {
                int64_t i = (n * C + c) * S + s;
                lk_v gc = lk_keep(lk_eq(yv, cv), gv);
                if (stream && k == LK_W && (uintptr_t)((lk_s *)g + i) % sizeof(lk_v) == 0) {
                    lk_stream((lk_s *)g + i, gc);
                    continue;
                }
                if (acc)
                    gc = lk_add(lk__ld(g, gf, i, k, 0.0), gc);
                lk__st(g, gf, i, k, gc);
            }
        }
        p += len;
    }
    if (stream)
        lk_stream_fence();
}

static lk_status nll_bwd(const void *inst, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    const nll local = *(const nll *)inst;
    int gf = blk->grads[0].dtype == LK_DTYPE_F32;
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    double scale = blk->grad_scale;
    if (blk->reduction == LK_REDUCTION_MEAN) /* nothing counted: a gradient of 0 */
        scale = blk->global[ST_WEIGHT] != 0.0 ? scale / blk->global[ST_WEIGHT] : 0.0;
    if (plan->aux[LK_CLS_AUX_S] >= LK_W) {
        nll_bwd_rows(&local, plan, blk, scale, acc);
        return LK_OK;
    }
    if (!acc)
        nll_zero(plan, blk, gf ? sizeof(float) : sizeof(double));
    for (int64_t p = blk->begin; p < blk->end; p += LK_W) {
        int k = blk->end - p < LK_W ? (int)(blk->end - p) : LK_W;
        nll_vec v;
        lk_status st = nll_gather(&local, plan, blk, p, k, 0, &v, msg);
        if (st != LK_OK)
            return st;
        /* d loss / d x_y = -w, scaled; 0 for a weight of 0 whatever the scale */
        for (int l = 0; l < k; l++) {
            if (v.at[l] < 0)
                continue;
            double g = v.w[l] != 0.0 ? -(v.w[l] * scale) : 0.0;
            if (gf)
                ((float *)blk->grads[0].data)[v.at[l]] += (float)g;
            else
                ((double *)blk->grads[0].data)[v.at[l]] += g;
        }
    }
    return LK_OK;
}

LK__KSET(nll_k, nll_fwd, nll_bwd, N_ST)
LK__FAMILY(nll_k)

/* ------------------------------------------------------------------------ */
/* Descriptor                                                                */

static const lk_param_desc nll_weight = {
    .name = "weight",
    .doc = "per-class weights: [] for none, else exactly C values",
    .type = LK_PARAM_NUMBER_LIST,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc nll_ignore_index = {
    .name = "ignore_index",
    .doc = "positions whose target equals this count nowhere (loss 0, no gradient, not in "
           "the mean's divisor)",
    .type = LK_PARAM_INTEGER,
    .default_number = -100,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc *const nll_params[] LK__UNUSED = {&nll_weight, &nll_ignore_index, NULL};

static lk_status nll_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    nll *L = inst;
    L->ignore_index = p[1].integer;
    return cls_weights_init(&L->w, &p[0], msg);
}

static void nll_fini(void *inst)
{
    cls_weights_fini(&((nll *)inst)->w);
}

static lk_status nll_mismatch(const lk_tensor *x, const lk_tensor *t, int index,
                              const int64_t *want, int32_t want_ndim, lk_msg *msg)
{
    char xs[192], ts[192], ws[192];
    (void)index;
    lk_shape_str(xs, sizeof xs, x->ndim, x->shape);
    lk_shape_str(ts, sizeof ts, t->ndim, t->shape);
    lk_shape_str(ws, sizeof ws, want_ndim, want);
    return lk_fail(msg, LK_ERR_SHAPE,
                   "target: shape %s does not fit input %s: class ids take the input's shape "
                   "without the class dimension, %s",
                   ts, xs, ws);
}

static lk_status nll_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    const nll *L = inst;
    lk_cls_spec sp = {.who = "nll",
                      .allow_1d = 1,
                      .index_dtypes = LK_DTYPE_BIT(LK_DTYPE_I64),
                      .n_pos = N_ST,
                      .ignore_index = L->ignore_index,
                      .mismatch = nll_mismatch};
    (void)reduction;
    lk_status st = lk_classes_plan(&sp, slots, plan, msg);
    if (st != LK_OK)
        return st;
    int64_t C = plan->aux[LK_CLS_AUX_C];
    if (L->w.n && L->w.n != C)
        return lk_fail_per_class(msg, "weight", L->w.n, C, slots[0].ndim == 1 ? "dim 0" : "dim 1");
    return LK_OK;
}

/* A mean over no counted position (every one ignored, or weighing 0) is 0
 * (docs/design.md), where torch gives 0/0 = NaN. */
static lk_status nll_finalize(const void *inst, const lk_plan *plan, const double *st,
                              int32_t reduction, double *value, lk_msg *msg)
{
    (void)inst, (void)plan, (void)msg;
    if (reduction == LK_REDUCTION_MEAN)
        *value = st[ST_WEIGHT] != 0.0 ? st[ST_LOSS] / st[ST_WEIGHT] : 0.0;
    else
        *value = st[ST_LOSS];
    return LK_OK;
}

static const lk_slot_desc nll_input = {
    .name = "input",
    .doc = "log-probabilities (N, C, d1, ...) or (C,); the classes in dim 1 (dim 0 for (C,))",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
};

static const lk_slot_desc nll_target = {
    .name = "target",
    .doc = "int64 class ids in [0, C) or ignore_index, the input's shape without the class "
           "dimension",
    .dtypes = LK_DTYPE_BIT(LK_DTYPE_I64),
    .shape = LK_SHAPE_INPUT_NO_CHANNEL,
    .values = LK_VALUES_CLASS,
};

static const lk_slot_desc *const nll_slots[] LK__UNUSED = {&nll_input, &nll_target, NULL};

LK_LOSS_DESC(nll, nll, 0, nll__finalize, nll__backward, LK_FAMILIES(&nll_k__family), nll_slots,
             LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = nll_init, .fini = nll_fini, .plan = nll_plan,
                      .finalize = nll_finalize),
             .summary = "torch.nn.functional.nll_loss on log-probabilities over dim 1: weight, "
                        "ignore_index",
             .params = nll_params)
