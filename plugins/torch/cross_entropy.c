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
 * This file holds the descriptor, the plan and the block drivers. A block's
 * positions are cut into segments that lie in one row n (or, when rows are
 * short, run across rows), and each segment goes to the kernels
 * (ce_kernels.h): double lanes for float64 logits (ce_body.h, AVX2 + FMA or
 * portable), float lanes for float32 logits (ce_body_f32.h, AVX-512 or AVX2
 * + FMA, else the double lanes); create() chooses both sets for the life of
 * the instance, from the CPU and LOSSKIT_SIMD. The kernels read the tensors
 * in place, a vector of positions at a time with the class loop outside, and
 * keep only small per-chunk state on the stack: forward reads input and
 * targets once, backward reads them once more and writes the gradient once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ce_kernels.h"
#include "torch_losses.h"

#define CE_REDUCTIONS                                                                              \
    (LK_REDUCTION_BIT(LK_REDUCTION_NONE) | LK_REDUCTION_BIT(LK_REDUCTION_MEAN) |                   \
     LK_REDUCTION_BIT(LK_REDUCTION_SUM))

#define CE_BLOCK_VALUES (1 << 18) /* logits per block, for the block length */
#define CE_BLOCK_MIN    64        /* positions per block at least */

/* plan->aux */
enum { AUX_C, AUX_S, AUX_MODE };
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
    const lk_host *host;        /* for scratch memory; outlives the instance */
    const ce_kernels *kern;     /* float64 logits: AVX2 + FMA or portable */
    const ce_kernels *kern_f32; /* float32 logits: float lanes, or kern's double lanes */
    int64_t ignore_index;
    double eps;       /* label_smoothing */
    int64_t n_weight; /* 0: every class weighs 1 */
    double weight[];
} ce_inst;

/* Chooses the kernels for float64 and for float32 logits, within what
 * LOSSKIT_SIMD allows (lk_simd_limit): double lanes on AVX2 + FMA, else
 * portable, for float64; float lanes on AVX-512 or AVX2 + FMA for float32
 * where the build and the CPU have them, else the float64 choice. Every
 * x86-64 check sits under TORCH_HAVE_AVX2, which meson sets on x86-64 only. */
static void pick_kernels(ce_inst *ce)
{
    int limit = lk_simd_limit();
    ce->kern = ce->kern_f32 = &torch_ce_portable;
#if TORCH_HAVE_AVX2
    __builtin_cpu_init();
    if (limit == LK_SIMD_PORTABLE || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return;
    ce->kern = ce->kern_f32 = &torch_ce_avx2;
#if TORCH_HAVE_F32_AVX2
    ce->kern_f32 = &torch_ce_f32_avx2;
#endif
#if TORCH_HAVE_F32_AVX512
    if (limit == LK_SIMD_BEST && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        ce->kern_f32 = &torch_ce_f32_avx512;
#endif
#else
    (void)limit;
#endif
}

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
    pick_kernels(ce);
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
/* Segments                                                                  */

/* The segment that starts at pos: the positions up to end that lie in one
 * row n, or, when rows are short (S < CE_SHORT_ROWS), every position up to
 * end (ce_kernels.h). base is the element offset of x, probability targets
 * and g: the first position's (class 0) for one row, its row's start
 * otherwise. */
typedef struct ce_span {
    int64_t pos, base, n, s0;
} ce_span;

static ce_span next_span(const lk_plan *plan, int64_t pos, int64_t end)
{
    int64_t classes = plan->aux[AUX_C], inner = plan->aux[AUX_S];
    int64_t row = pos / inner, s = pos % inner, n = end - pos;
    if (inner < CE_SHORT_ROWS)
        return (ce_span){pos, row * classes * inner, n, s};
    if (n > inner - s)
        n = inner - s;
    return (ce_span){pos, row * classes * inner + s, n, -1};
}

static int64_t dtype_size(int32_t dtype)
{
    return dtype == LK_DTYPE_F32 || dtype == LK_DTYPE_I32 ? 4 : 8;
}

static const void *at(const lk_tensor *t, int64_t i)
{
    return (const char *)t->data + i * (int64_t)dtype_size(t->dtype);
}

static ce_seg make_seg(const lk_plan *plan, const lk_block *blk, const ce_span *sp, void *g)
{
    const lk_tensor *t = &blk->slots[1];
    ce_seg sg = {
        .x = at(&blk->slots[0], sp->base),
        .t = at(t, plan->aux[AUX_MODE] == MODE_INDEX ? sp->pos : sp->base),
        .g = g ? (char *)g + sp->base * (int64_t)dtype_size(blk->slots[0].dtype) : NULL,
        .out = blk->out->data
                   ? (char *)blk->out->data + sp->pos * (int64_t)dtype_size(blk->out->dtype)
                   : NULL,
        .n = sp->n,
        .cs = plan->aux[AUX_S],
        .ps = 1,
        .s0 = sp->s0,
        .S = plan->aux[AUX_S],
    };
    return sg;
}

static ce_cfg make_cfg(const ce_inst *ce, const lk_plan *plan, const lk_block *blk)
{
    int64_t classes = plan->aux[AUX_C];
    ce_cfg cf = {
        .classes = classes,
        .x_dtype = blk->slots[0].dtype,
        .t_dtype = blk->slots[1].dtype,
        .prob = plan->aux[AUX_MODE] == MODE_PROB,
        .accumulate = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0,
        .contiguous = plan->aux[AUX_S] > 1 && classes * plan->aux[AUX_S] < ((int64_t)1 << 31),
        .ignore_index = ce->ignore_index,
        .w = ce->n_weight ? ce->weight : NULL,
        .eps = ce->eps,
        .keep = 1.0 - ce->eps,
        .share = ce->eps / (double)classes,
        .wsum = plan->auxf[AUXF_WSUM],
        .scale = 0.0,
    };
    return cf;
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

/* A kernel found an index target that is neither a class nor ignore_index
 * in [pos, pos + len): fail the call naming the first one. */
static lk_status bad_index(const ce_inst *ce, const lk_tensor *t, int64_t pos, int64_t len,
                           int64_t classes, lk_msg *msg)
{
    int64_t ign = ce->ignore_index;
    for (int64_t j = pos; j < pos + len; j++) {
        int64_t y = t->dtype == LK_DTYPE_I64 ? ((const int64_t *)t->data)[j]
                                             : ((const int32_t *)t->data)[j];
        if (y == ign || (y >= 0 && y < classes))
            continue;
        char where[192];
        index_str(t, j, where, sizeof where);
        return lk_fail(msg, LK_ERR_INVALID,
                       "target%s (position %lld) is %lld: not a class in [0, %lld) and not "
                       "ignore_index (%lld)",
                       where, (long long)j, (long long)y, (long long)classes, (long long)ign);
    }
    return lk_fail(msg, LK_ERR_INTERNAL, "a bad index target was reported but not found");
}

/* ------------------------------------------------------------------------ */
/* Forward and backward                                                      */

/* Short rows of many classes are packed in scratch memory (ce_kernels.h):
 * CE_WORK_POSITIONS positions' worth per buffer (a vector's worth of the
 * widest kernels), up to CE_WORK_CLASSES classes; beyond, the kernels read
 * such rows in place. */
#define CE_WORK_POSITIONS 16
#define CE_WORK_CLASSES   4096

static lk_status work_open(const ce_inst *ce, const ce_kernels *kern, const lk_plan *plan,
                           ce_cfg *cf, lk_msg *msg)
{
    int64_t classes = plan->aux[AUX_C];
    if (plan->aux[AUX_S] >= CE_SHORT_ROWS || classes * kern->lanes <= CE_PACK ||
        classes > CE_WORK_CLASSES)
        return LK_OK;
    int64_t cap = (classes * CE_WORK_POSITIONS + 7) / 8 * 8;
    size_t bytes = (size_t)(4 * cap) * sizeof(double);
    cf->work = ce->host->scratch_alloc(ce->host->ctx, bytes);
    if (!cf->work)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %zu bytes of work space", bytes);
    cf->work_cap = cap;
    return LK_OK;
}

static void work_close(const ce_inst *ce, ce_cfg *cf)
{
    if (cf->work)
        ce->host->scratch_free(ce->host->ctx, cf->work);
    cf->work = NULL;
}

/* The kernels for the call's logits. */
static const ce_kernels *kernels_for(const ce_inst *ce, const ce_cfg *cf)
{
    return cf->x_dtype == LK_DTYPE_F32 ? ce->kern_f32 : ce->kern;
}

/* The lanes' sums of acc[0..n), pairwise in a fixed order: a kernel with
 * fewer lanes leaves the others 0, which changes no sum. */
static double lanes_sum(const double *acc, int n)
{
    return n == 1 ? acc[0] : lanes_sum(acc, n / 2) + lanes_sum(acc + n / 2, n / 2);
}

static lk_status ce_forward(const void *inst, const lk_plan *plan, const lk_block *blk, lk_msg *msg)
{
    const ce_inst *ce = inst;
    ce_cfg cf = make_cfg(ce, plan, blk);
    const ce_kernels *kern = kernels_for(ce, &cf);
    lk_status st = work_open(ce, kern, plan, &cf, msg);
    double acc[CE_ACC] = {0.0};
    for (int64_t pos = blk->begin; st == LK_OK && pos < blk->end;) {
        ce_span sp = next_span(plan, pos, blk->end);
        ce_seg sg = make_seg(plan, blk, &sp, NULL);
        if (kern->forward(&cf, &sg, acc))
            st = bad_index(ce, &blk->slots[1], sp.pos, sp.n, cf.classes, msg);
        pos += sp.n;
    }
    work_close(ce, &cf);
    if (st != LK_OK)
        return st;
    blk->stats[ST_LOSS] += lanes_sum(acc, CE_ACC / 2);
    if (!cf.prob)
        blk->stats[ST_WEIGHT] += lanes_sum(acc + CE_ACC / 2, CE_ACC / 2);
    return LK_OK;
}

static lk_status ce_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                             lk_msg *msg)
{
    const ce_inst *ce = inst;
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    ce_cfg cf = make_cfg(ce, plan, blk);
    cf.scale = blk->grad_scale;
    if (blk->reduction == LK_REDUCTION_MEAN)
        cf.scale /= plan->aux[AUX_MODE] == MODE_INDEX ? blk->global[ST_WEIGHT] : plan->mean_norm;
    const ce_kernels *kern = kernels_for(ce, &cf);
    lk_status st = work_open(ce, kern, plan, &cf, msg);
    if (st != LK_OK)
        return st;
    for (int64_t pos = blk->begin; pos < blk->end;) {
        ce_span sp = next_span(plan, pos, blk->end);
        ce_seg sg = make_seg(plan, blk, &sp, blk->grads[0].data);
        kern->backward(&cf, &sg);
        pos += sp.n;
    }
    work_close(ce, &cf);
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
