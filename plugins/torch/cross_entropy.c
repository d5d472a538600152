/* cross_entropy.c: torch.nn.functional.cross_entropy (torch 1.13), with
 * class-index or class-probability targets, per-class weights, ignore_index
 * and label smoothing. README.md gives the formulas and edge cases.
 *
 * A position is one (n, d1, d2, ...) of the input (N, C, d1, ...): it reads
 * C logits strided by the spatial size S = d1 * d2 * .... Both index and
 * probability targets are written as one weighted sum over classes,
 *
 *   loss = sum_c q_c (lse - x_c),   d loss / d x_c = Q p_c - q_c,  Q = sum_c q_c,
 *
 * with q_c = (1 - eps) w_y [c = y] + (eps / C) w_c for a class index y and
 * q_c = w_c ((1 - eps) t_c + eps / C) for probabilities t.
 *
 * The loss is two-pass (not FUSED): with index targets, "mean" divides by
 * the sum of w_y over the positions that are not ignored, which depends on
 * the data, so the gradient can only be scaled once every block has been
 * seen. Descriptor flags are static, so the probability-target case, which
 * could be fused, takes the same two passes.
 *
 * Kernels work on chunks of positions that lie in one row n (or, when
 * S = 1, on consecutive rows): the chunk's C x L logits are converted to
 * double once (the dtype switch is outside every inner loop), then each
 * step is a loop over classes around a loop over the chunk's positions,
 * which reads each class's L logits contiguously. */
#include <stdlib.h>
#include <string.h>

#include "torch_losses.h"

#define CE_REDUCTIONS                                                                              \
    (LK_REDUCTION_BIT(LK_REDUCTION_NONE) | LK_REDUCTION_BIT(LK_REDUCTION_MEAN) |                   \
     LK_REDUCTION_BIT(LK_REDUCTION_SUM))

#define CE_CHUNK        256       /* positions per chunk at most */
#define CE_CHUNK_VALUES 16384     /* logits per chunk at most (one position at least) */
#define CE_BLOCK_VALUES (1 << 18) /* logits per block, for the block length */
#define CE_BLOCK_MIN    64        /* positions per block at least */
#define CE_LOCAL        4096      /* doubles of work space kept on the stack */

/* plan->aux */
enum { AUX_C, AUX_S, AUX_MODE, AUX_CHUNK };
/* plan->auxf */
enum { AUXF_WSUM };
/* statistics: the sum of losses and, for index targets, of w_y */
enum { ST_LOSS, ST_WEIGHT };
enum { MODE_INDEX = 0, MODE_PROB = 1 };

/* ------------------------------------------------------------------------ */
/* Descriptor                                                                */

static const lk_slot_desc ce_input = {
    .name = "input",
    .doc = "logits (N, C, d1, ...) or (C,); the class dimension is dim 1 (dim 0 for (C,))",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
};

/* LK_SHAPE_ANY: the dtype decides the rule, which plan() checks. */
static const lk_slot_desc ce_target = {
    .name = "target",
    .doc = "class indices (int64/int32, the input's shape without dim 1) or class "
           "probabilities (float, the input's shape)",
    .dtypes = LK_DTYPES_FLOAT | LK_DTYPES_INT,
    .flags = 0,
    .shape = LK_SHAPE_ANY,
};

static const lk_slot_desc *const ce_slots[] = {&ce_input, &ce_target, NULL};

static const lk_param_desc ce_weight = {
    .name = "weight",
    .doc = "per-class weights: [] for none, else exactly C values",
    .type = LK_PARAM_NUMBER_LIST,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
    .list_min_len = 0,
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
    .default_number = 0.0,
    .min = 0.0,
    .max = 1.0,
};

static const lk_param_desc *const ce_params[] = {
    &ce_weight,
    &ce_ignore_index,
    &ce_label_smoothing,
    NULL,
};

/* ------------------------------------------------------------------------ */
/* Instance                                                                  */

typedef struct ce_inst {
    const lk_host *host; /* for scratch memory; outlives the instance */
    int64_t ignore_index;
    double eps;       /* label_smoothing */
    int64_t n_weight; /* 0: every class weighs 1 */
    double weight[];
} ce_inst;

static lk_status ce_create(const lk_create_args *args, void **instance, lk_msg *msg)
{
    if (args->n_params < 3)
        return lk_fail(msg, LK_ERR_INTERNAL, "expected 3 parameters, got %u", args->n_params);
    const lk_param_value *w = &args->params[0];
    int64_t n = w->list ? w->list_len : 0;
    ce_inst *ce = malloc(sizeof *ce + (size_t)n * sizeof(double));
    if (!ce)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    ce->host = args->host;
    ce->ignore_index = args->params[1].integer;
    ce->eps = args->params[2].number;
    ce->n_weight = n;
    for (int64_t c = 0; c < n; c++)
        ce->weight[c] = w->list[c];
    *instance = ce;
    return LK_OK;
}

static void ce_destroy(void *instance)
{
    free(instance);
}

/* ------------------------------------------------------------------------ */
/* Plan                                                                      */

static int is_index_dtype(int32_t dtype)
{
    return dtype == LK_DTYPE_I64 || dtype == LK_DTYPE_I32;
}

/* The target's expected shape: the input's, without the class dimension for
 * class indices. */
static int target_fits(const lk_tensor *x, const lk_tensor *t, int index)
{
    int32_t class_dim = x->ndim == 1 ? 0 : 1;
    if (t->ndim != (index ? x->ndim - 1 : x->ndim))
        return 0;
    for (int32_t d = 0, k = 0; d < x->ndim; d++) {
        if (index && d == class_dim)
            continue;
        if (t->shape[k++] != x->shape[d])
            return 0;
    }
    return 1;
}

static void shape_str(const lk_tensor *t, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "(");
    for (int32_t d = 0; d < t->ndim && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", d ? ", " : "",
                                 (long long)t->shape[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, "%s)", t->ndim == 1 ? "," : "");
}

static lk_status check_target(const ce_inst *ce, const lk_tensor *x, const lk_tensor *t,
                              lk_msg *msg)
{
    int index = is_index_dtype(t->dtype);
    if (!target_fits(x, t, index)) {
        char xs[192], ts[192];
        shape_str(x, xs, sizeof xs);
        shape_str(t, ts, sizeof ts);
        return lk_fail(msg, LK_ERR_SHAPE,
                       "target: shape %s does not fit input %s: class indices take the input's "
                       "shape without dim %d, class probabilities the input's shape",
                       ts, xs, x->ndim == 1 ? 0 : 1);
    }
    if (!index && ce->ignore_index >= 0)
        return lk_fail(msg, LK_ERR_INVALID,
                       "ignore_index %lld is not supported with class-probability targets "
                       "(torch refuses any ignore_index >= 0 there)",
                       (long long)ce->ignore_index);
    return LK_OK;
}

/* Positions per chunk: at most CE_CHUNK, and at most CE_CHUNK_VALUES logits
 * so that the work space stays in cache whatever C is. */
static int64_t chunk_positions(int64_t classes)
{
    int64_t n = CE_CHUNK_VALUES / classes;
    return n < 1 ? 1 : n > CE_CHUNK ? CE_CHUNK : n;
}

/* Shapes only: the blocks must not depend on anything else. */
static int64_t block_positions(int64_t classes)
{
    int64_t n = CE_BLOCK_VALUES / classes;
    return n < CE_BLOCK_MIN ? CE_BLOCK_MIN : n > LK_BLOCK_POSITIONS ? LK_BLOCK_POSITIONS : n;
}

static void fill_plan(const ce_inst *ce, const lk_tensor *x, int64_t classes, int index,
                      lk_plan *plan)
{
    int64_t outer = x->ndim == 1 ? 1 : x->shape[0], inner = 1;
    for (int32_t d = 2; d < x->ndim; d++)
        inner *= x->shape[d];
    plan->n_positions = outer * inner;
    plan->block_positions = block_positions(classes);
    plan->n_stats = index ? 2 : 1;
    plan->out_ndim = x->ndim - 1;
    for (int32_t d = 0, k = 0; d < x->ndim; d++)
        if (d != (x->ndim == 1 ? 0 : 1))
            plan->out_shape[k++] = x->shape[d];
    plan->mean_norm = (double)plan->n_positions;
    plan->aux[AUX_C] = classes;
    plan->aux[AUX_S] = inner;
    plan->aux[AUX_MODE] = index ? MODE_INDEX : MODE_PROB;
    plan->aux[AUX_CHUNK] = chunk_positions(classes);
    double wsum = 0.0;
    for (int64_t c = 0; c < classes; c++)
        wsum += ce->n_weight ? ce->weight[c] : 1.0;
    plan->auxf[AUXF_WSUM] = wsum;
}

static lk_status ce_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                         lk_msg *msg)
{
    const ce_inst *ce = inst;
    const lk_tensor *x = &slots[0];
    if (x->ndim < 1)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: expected logits (C,) or (N, C, d1, ...), got a scalar");
    int32_t class_dim = x->ndim == 1 ? 0 : 1;
    int64_t classes = x->shape[class_dim];
    if (classes < 1)
        return lk_fail(msg, LK_ERR_SHAPE, "input: the class dimension (dim %d) is empty",
                       (int)class_dim);
    lk_status st = check_target(ce, x, &slots[1], msg);
    if (st != LK_OK)
        return st;
    if (ce->n_weight && ce->n_weight != classes)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "weight has %lld values but the input has %lld classes (dim %d); "
                       "give [] or %lld values",
                       (long long)ce->n_weight, (long long)classes, (int)class_dim,
                       (long long)classes);
    fill_plan(ce, x, classes, is_index_dtype(slots[1].dtype), plan);
    return torch_check_layout(slots, 2, msg);
}

static lk_status ce_finalize(const void *inst, const lk_plan *plan, const double *st,
                             int32_t reduction, double *value, lk_msg *msg)
{
    if (reduction == LK_REDUCTION_SUM)
        *value = st[ST_LOSS];
    else if (plan->aux[AUX_MODE] == MODE_INDEX)
        *value = st[ST_LOSS] / st[ST_WEIGHT]; /* 0 / 0 = NaN when all are ignored */
    else
        *value = st[ST_LOSS] / plan->mean_norm;
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Chunks and work space                                                     */

/* L positions [pos, pos + n). Logit (c, j) is at base + c * cs + j * ps. */
typedef struct ce_chunk {
    int64_t pos, base, cs, ps, n;
} ce_chunk;

/* The chunk that starts at pos: at most max_len positions, none past end,
 * and all in one row unless S = 1. */
static ce_chunk next_chunk(const lk_plan *plan, int64_t pos, int64_t end, int64_t max_len)
{
    int64_t classes = plan->aux[AUX_C], inner = plan->aux[AUX_S];
    int64_t n = end - pos < max_len ? end - pos : max_len;
    if (inner == 1)
        return (ce_chunk){pos, pos * classes, 1, classes, n};
    int64_t row = pos / inner, s = pos % inner;
    if (n > inner - s)
        n = inner - s;
    return (ce_chunk){pos, row * classes * inner + s, inner, 1, n};
}

/* Per chunk: x and q hold C x L values, class-major (x[c * L + j]). */
typedef struct ce_work {
    double *x;           /* logits, then shifted logits or their exps, then gradients */
    double *q;           /* probability targets, then their weights q_c */
    double *w;           /* the C class weights (1 when none are given) */
    double *lse;         /* per position: the maximum, then log sum exp of the shifted logits */
    double *s;           /* per position: sum of exp of the shifted logits, >= 1 */
    double *loss;        /* per position: the loss */
    double *a, *b;       /* per position: coefficients of the step at hand */
    int64_t len;         /* positions per chunk at most (<= CE_CHUNK) */
    int64_t y[CE_CHUNK]; /* per position: the class index */
    double local[CE_LOCAL];
    void *heap; /* scratch memory when local is too small */
} ce_work;

/* Work space for chunks of up to w->len positions: the plan's chunk length,
 * or the block's length when that is shorter (a small call stays on the
 * stack). */
static lk_status work_open(const ce_inst *ce, const lk_plan *plan, const lk_block *blk, ce_work *w,
                           lk_msg *msg)
{
    int64_t classes = plan->aux[AUX_C], len = plan->aux[AUX_CHUNK];
    if (blk->end - blk->begin < len)
        len = blk->end - blk->begin;
    w->len = len;
    size_t n = (size_t)(2 * classes * len + classes + 5 * len);
    double *mem = w->local;
    w->heap = NULL;
    if (n > CE_LOCAL) {
        w->heap = ce->host->scratch_alloc(ce->host->ctx, n * sizeof(double));
        if (!w->heap)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %zu doubles of work space", n);
        mem = w->heap;
    }
    w->x = mem;
    w->q = w->x + classes * len;
    w->w = w->q + classes * len;
    w->lse = w->w + classes;
    w->s = w->lse + len;
    w->loss = w->s + len;
    w->a = w->loss + len;
    w->b = w->a + len;
    for (int64_t c = 0; c < classes; c++)
        w->w[c] = ce->n_weight ? ce->weight[c] : 1.0;
    return LK_OK;
}

static void work_close(const ce_inst *ce, ce_work *w)
{
    if (w->heap)
        ce->host->scratch_free(ce->host->ctx, w->heap);
}

/* ------------------------------------------------------------------------ */
/* Loading and storing, one dtype switch per chunk                           */

TORCH_CLONES
static void load_rows(const lk_tensor *t, const ce_chunk *k, int64_t classes, double *dst)
{
    int64_t len = k->n;
    for (int64_t c = 0; c < classes; c++) {
        double *d = dst + c * len;
        if (t->dtype == LK_DTYPE_F32) {
            const float *src = (const float *)t->data + k->base + c * k->cs;
            if (k->ps == 1)
                for (int64_t j = 0; j < len; j++)
                    d[j] = (double)src[j];
            else
                for (int64_t j = 0; j < len; j++)
                    d[j] = (double)src[j * k->ps];
        } else {
            const double *src = (const double *)t->data + k->base + c * k->cs;
            if (k->ps == 1)
                memcpy(d, src, (size_t)len * sizeof *d);
            else
                for (int64_t j = 0; j < len; j++)
                    d[j] = src[j * k->ps];
        }
    }
}

/* Writes (or adds, with LK_BLOCK_GRAD_ACCUMULATE) the chunk's C x L values. */
TORCH_CLONES
static void store_rows(const lk_tensor *t, const ce_chunk *k, int64_t classes, const double *src,
                       uint32_t flags)
{
    int acc = (flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    int64_t len = k->n, ps = k->ps;
    for (int64_t c = 0; c < classes; c++) {
        const double *v = src + c * len;
        if (t->dtype == LK_DTYPE_F32) {
            float *d = (float *)t->data + k->base + c * k->cs;
            if (acc)
                for (int64_t j = 0; j < len; j++)
                    d[j * ps] = (float)((double)d[j * ps] + v[j]);
            else
                for (int64_t j = 0; j < len; j++)
                    d[j * ps] = (float)v[j];
        } else {
            double *d = (double *)t->data + k->base + c * k->cs;
            if (acc)
                for (int64_t j = 0; j < len; j++)
                    d[j * ps] += v[j];
            else
                for (int64_t j = 0; j < len; j++)
                    d[j * ps] = v[j];
        }
    }
}

static void store_out(const lk_tensor *o, int64_t pos, int64_t len, const double *src)
{
    if (o->dtype == LK_DTYPE_F32) {
        float *d = (float *)o->data + pos;
        for (int64_t j = 0; j < len; j++)
            d[j] = (float)src[j];
    } else {
        memcpy((double *)o->data + pos, src, (size_t)len * sizeof *src);
    }
}

static void load_index(const lk_tensor *t, int64_t pos, int64_t len, int64_t *y)
{
    if (t->dtype == LK_DTYPE_I64) {
        memcpy(y, (const int64_t *)t->data + pos, (size_t)len * sizeof *y);
    } else {
        const int32_t *src = (const int32_t *)t->data + pos;
        for (int64_t j = 0; j < len; j++)
            y[j] = src[j];
    }
}

/* "[1, 3, 5]": the multi-index of element flat of t. */
static void index_str(const lk_tensor *t, int64_t flat, char *buf, size_t cap)
{
    int64_t idx[LK_MAX_NDIM];
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? flat % t->shape[d] : 0;
        flat = t->shape[d] ? flat / t->shape[d] : 0;
    }
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int32_t d = 0; d < t->ndim && used < cap; d++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", d ? ", " : "", (long long)idx[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* Index targets are checked before anything indexes with them: a value that
 * is neither a class nor ignore_index fails the call, naming the first one. */
static lk_status check_index(const ce_inst *ce, const lk_tensor *t, int64_t pos, int64_t len,
                             int64_t classes, const int64_t *y, lk_msg *msg)
{
    int64_t ign = ce->ignore_index;
    int bad = 0;
    for (int64_t j = 0; j < len; j++)
        bad |= (y[j] != ign) & ((y[j] < 0) | (y[j] >= classes));
    for (int64_t j = 0; bad && j < len; j++) {
        if (y[j] == ign || (y[j] >= 0 && y[j] < classes))
            continue;
        char where[192];
        index_str(t, pos + j, where, sizeof where);
        return lk_fail(msg, LK_ERR_INVALID,
                       "target%s (position %lld) is %lld: not a class in [0, %lld) and not "
                       "ignore_index (%lld)",
                       where, (long long)(pos + j), (long long)y[j], (long long)classes,
                       (long long)ign);
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* The math, on a chunk in double                                            */

/* Shifts each position's logits by their maximum m: z_c = x_c - m, taken as
 * 0 where x_c == m, so that a maximum of +inf (or all logits -inf) gives 0
 * instead of inf - inf. Then s = sum_c exp(z_c) >= 1 (NaN when a logit is
 * NaN). x receives z, or exp(z) with keep_exp. */
TORCH_CLONES
static void shift(int64_t classes, int64_t len, ce_work *w, int keep_exp)
{
    double *m = w->lse, *s = w->s;
    for (int64_t j = 0; j < len; j++) {
        m[j] = -HUGE_VAL;
        s[j] = 0.0;
    }
    for (int64_t c = 0; c < classes; c++) {
        const double *x = w->x + c * len;
        for (int64_t j = 0; j < len; j++)
            m[j] = x[j] > m[j] ? x[j] : m[j];
    }
    for (int64_t c = 0; c < classes; c++) {
        double *x = w->x + c * len;
        if (keep_exp)
            for (int64_t j = 0; j < len; j++) {
                double e = torch_exp_nonpos(x[j] == m[j] ? 0.0 : x[j] - m[j]);
                s[j] += e;
                x[j] = e;
            }
        else
            for (int64_t j = 0; j < len; j++) {
                double z = x[j] == m[j] ? 0.0 : x[j] - m[j];
                s[j] += torch_exp_nonpos(z);
                x[j] = z;
            }
    }
}

/* After shift(x := z): lse := log s, so that -log p_c = lse - z_c >= 0. */
static void log_sums(int64_t len, ce_work *w)
{
    for (int64_t j = 0; j < len; j++)
        w->lse[j] = log(w->s[j]);
}

/* a := sum_c r_c (lse - z_c), with r_c the class weight w_c, or the
 * position's own q_c when per_position. */
TORCH_CLONES
static void weighted_nll(int64_t classes, int64_t len, const double *r, int per_position,
                         ce_work *w)
{
    double *a = w->a;
    const double *lse = w->lse;
    for (int64_t j = 0; j < len; j++)
        a[j] = 0.0;
    for (int64_t c = 0; c < classes; c++) {
        const double *z = w->x + c * len;
        if (per_position) {
            const double *q = r + c * len;
            for (int64_t j = 0; j < len; j++)
                a[j] += torch_mul0(q[j], lse[j] - z[j]);
        } else {
            double wc = r[c];
            for (int64_t j = 0; j < len; j++)
                a[j] += torch_mul0(wc, lse[j] - z[j]);
        }
    }
}

/* Index targets: loss = (1 - eps) w_y (lse - z_y) + (eps / C) sum_c w_c (lse - z_c),
 * 0 when ignored; b := w_y (0 when ignored), the position's share of "mean". */
static void index_losses(const ce_inst *ce, int64_t classes, int64_t len, ce_work *w)
{
    double eps = ce->eps;
    log_sums(len, w);
    if (eps > 0.0)
        weighted_nll(classes, len, w->w, 0, w);
    for (int64_t j = 0; j < len; j++) {
        int64_t y = w->y[j];
        if (y == ce->ignore_index) {
            w->loss[j] = 0.0;
            w->b[j] = 0.0;
            continue;
        }
        double wy = w->w[y];
        double nll = torch_mul0(wy, w->lse[j] - w->x[y * len + j]);
        w->loss[j] = eps > 0.0 ? torch_mul0(1.0 - eps, nll) + eps / (double)classes * w->a[j] : nll;
        w->b[j] = wy;
    }
}

/* Probability targets: q_c = w_c ((1 - eps) t_c + eps / C), in place. */
TORCH_CLONES
static void prob_weights(const ce_inst *ce, int64_t classes, int64_t len, ce_work *w)
{
    double keep = 1.0 - ce->eps, add = ce->eps / (double)classes;
    for (int64_t c = 0; c < classes; c++) {
        double *q = w->q + c * len, wc = w->w[c];
        for (int64_t j = 0; j < len; j++)
            q[j] = wc * (keep * q[j] + add);
    }
}

/* Loads a chunk and computes its losses into w->loss (and, for index
 * targets, each position's w_y into w->b). */
static lk_status chunk_losses(const ce_inst *ce, const lk_plan *plan, const lk_block *blk,
                              const ce_chunk *k, ce_work *w, lk_msg *msg)
{
    int64_t classes = plan->aux[AUX_C];
    load_rows(&blk->slots[0], k, classes, w->x);
    if (plan->aux[AUX_MODE] == MODE_INDEX) {
        load_index(&blk->slots[1], k->pos, k->n, w->y);
        lk_status st = check_index(ce, &blk->slots[1], k->pos, k->n, classes, w->y, msg);
        if (st != LK_OK)
            return st;
        shift(classes, k->n, w, 0);
        index_losses(ce, classes, k->n, w);
        return LK_OK;
    }
    load_rows(&blk->slots[1], k, classes, w->q);
    prob_weights(ce, classes, k->n, w);
    shift(classes, k->n, w, 0);
    log_sums(k->n, w);
    weighted_nll(classes, k->n, w->q, 1, w);
    memcpy(w->loss, w->a, (size_t)k->n * sizeof *w->loss);
    return LK_OK;
}

static lk_status ce_forward(const void *inst, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
    const ce_inst *ce = inst;
    ce_work w;
    lk_status st = work_open(ce, plan, blk, &w, msg);
    int index = plan->aux[AUX_MODE] == MODE_INDEX;
    double sum = 0.0, wsum = 0.0;
    for (int64_t pos = blk->begin; st == LK_OK && pos < blk->end;) {
        ce_chunk k = next_chunk(plan, pos, blk->end, w.len);
        st = chunk_losses(ce, plan, blk, &k, &w, msg);
        if (st != LK_OK)
            break;
        for (int64_t j = 0; j < k.n; j++)
            sum += w.loss[j];
        for (int64_t j = 0; index && j < k.n; j++)
            wsum += w.b[j];
        if (blk->out->data)
            store_out(blk->out, k.pos, k.n, w.loss);
        pos += k.n;
    }
    work_close(ce, &w);
    if (st != LK_OK)
        return st;
    blk->stats[ST_LOSS] += sum;
    if (index)
        blk->stats[ST_WEIGHT] += wsum;
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                  */

/* Index targets, after shift(x := exp z): g_c = scale (Q e_c / s - q_c) with
 * Q = (1 - eps) w_y + (eps / C) W and q_c = (1 - eps) w_y [c = y] + (eps / C) w_c:
 * a e_c - b w_c for every class, then the target's own share (kept in
 * w->loss) off class y. An ignored position gets exactly 0, even for NaN
 * logits. forward() has refused every other index outside [0, C), and an
 * index outside is treated as ignored here all the same: never indexed with. */
TORCH_CLONES
static void index_grads(const ce_inst *ce, const lk_plan *plan, int64_t len, double scale,
                        ce_work *w)
{
    int64_t classes = plan->aux[AUX_C];
    double eps = ce->eps, share = eps / (double)classes, wsum = plan->auxf[AUXF_WSUM];
    for (int64_t j = 0; j < len; j++) {
        int64_t y = w->y[j];
        int skip = y == ce->ignore_index || y < 0 || y >= classes;
        double wy = skip ? 0.0 : w->w[y];
        w->a[j] = skip ? 0.0 : scale * ((1.0 - eps) * wy + share * wsum) / w->s[j];
        w->b[j] = skip ? 0.0 : scale * share;
        w->loss[j] = scale * (1.0 - eps) * wy;
    }
    for (int64_t c = 0; c < classes; c++) {
        double *g = w->x + c * len, wc = w->w[c];
        if (eps > 0.0)
            for (int64_t j = 0; j < len; j++)
                g[j] = w->a[j] * g[j] - w->b[j] * wc;
        else
            for (int64_t j = 0; j < len; j++)
                g[j] = w->a[j] * g[j];
    }
    for (int64_t j = 0; j < len; j++) {
        int64_t y = w->y[j];
        if (y != ce->ignore_index && y >= 0 && y < classes)
            w->x[y * len + j] -= w->loss[j];
        else
            for (int64_t c = 0; c < classes; c++)
                w->x[c * len + j] = 0.0;
    }
}

/* Probability targets, after shift(x := exp z): g_c = scale (Q e_c / s - q_c)
 * with Q = sum_c q_c. */
TORCH_CLONES
static void prob_grads(int64_t classes, int64_t len, double scale, ce_work *w)
{
    for (int64_t j = 0; j < len; j++)
        w->b[j] = 0.0;
    for (int64_t c = 0; c < classes; c++) {
        const double *q = w->q + c * len;
        for (int64_t j = 0; j < len; j++)
            w->b[j] += q[j];
    }
    for (int64_t j = 0; j < len; j++)
        w->a[j] = scale * w->b[j] / w->s[j];
    for (int64_t c = 0; c < classes; c++) {
        double *g = w->x + c * len;
        const double *q = w->q + c * len;
        for (int64_t j = 0; j < len; j++)
            g[j] = w->a[j] * g[j] - scale * q[j];
    }
}

static void chunk_grads(const ce_inst *ce, const lk_plan *plan, const lk_block *blk,
                        const ce_chunk *k, double scale, ce_work *w)
{
    int64_t classes = plan->aux[AUX_C];
    load_rows(&blk->slots[0], k, classes, w->x);
    if (plan->aux[AUX_MODE] == MODE_INDEX) {
        load_index(&blk->slots[1], k->pos, k->n, w->y);
        shift(classes, k->n, w, 1);
        index_grads(ce, plan, k->n, scale, w);
    } else {
        load_rows(&blk->slots[1], k, classes, w->q);
        prob_weights(ce, classes, k->n, w);
        shift(classes, k->n, w, 1);
        prob_grads(classes, k->n, scale, w);
    }
    store_rows(&blk->grads[0], k, classes, w->x, blk->flags);
}

static lk_status ce_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                             lk_msg *msg)
{
    const ce_inst *ce = inst;
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    double scale = blk->grad_scale;
    if (blk->reduction == LK_REDUCTION_MEAN)
        scale /= plan->aux[AUX_MODE] == MODE_INDEX ? blk->global[ST_WEIGHT] : plan->mean_norm;
    ce_work w;
    lk_status st = work_open(ce, plan, blk, &w, msg);
    if (st != LK_OK)
        return st;
    for (int64_t pos = blk->begin; pos < blk->end;) {
        ce_chunk k = next_chunk(plan, pos, blk->end, w.len);
        chunk_grads(ce, plan, blk, &k, scale, &w);
        pos += k.n;
    }
    work_close(ce, &w);
    return LK_OK;
}

const lk_loss_desc torch_cross_entropy_desc = {
    .id = "cross_entropy",
    .summary = "torch.nn.functional.cross_entropy: log-softmax over dim 1 with class-index "
               "or class-probability targets, weight, ignore_index, label_smoothing",
    .version = "1.0.0",
    .params = ce_params,
    .slots = ce_slots,
    .reductions = CE_REDUCTIONS,
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = 0,
    .create = ce_create,
    .destroy = ce_destroy,
    .plan = ce_plan,
    .forward = ce_forward,
    .finalize = ce_finalize,
    .backward = ce_backward,
};
