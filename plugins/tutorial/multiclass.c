/* multiclass.c: dice in mode "multiclass", smp's multiclass mode, on the
 * portable path (simd_avx2.c has the AVX2 kernels).
 *
 * input (N, C, ...) logits; p = softmax over dim 1. A position is one (n,
 * spatial index) pair: N x S positions, S the product of the dims after 1.
 * target is either (N, ...) int64 class indices, of which ignore_index
 * marks positions left out of every sum, or (N, C, ...) float per-class
 * targets in [0, 1]. Statistics per class c, over batch and pixels:
 * I_c = sum p_c t_c, P_c = sum p_c, T_c = sum t_c (stats[c], stats[C + c],
 * stats[2C + c]). value = 1 - mean_c (2 I_c + s) / (P_c + T_c + s), a
 * class whose denominator is 0 scoring 1 with no gradient.
 *
 * The gradient, by the softmax Jacobian: with g_c = d value / d p_c at a
 * position = k1_c - t_c k2_c, k1_c = N_c / (C D_c^2), k2_c = 2 / (C D_c),
 * d value / d x_c = p_c (g_c - sum_k p_k g_k). */
#include <stdlib.h>
#include <string.h>

#include "tutorial.h"

#define MC_MAX_CLASSES ((int64_t)(1 << 20) / 3) /* n_stats = 3C <= 2^20 */
#define MC_STACK       256                      /* classes whose buffers live on the stack */

lk_status tut_mc_bad_index(lk_msg *msg, int64_t index, int64_t value, int64_t classes,
                           int64_t ignore_index)
{
    return lk_fail(msg, LK_ERR_INVALID,
                   "target[%lld] = %lld is not a class index in [0, %lld) nor ignore_index %lld",
                   (long long)index, (long long)value, (long long)classes, (long long)ignore_index);
}

lk_status tut_mc_first_bad_index(const int64_t *y, int64_t pos, int64_t n, int64_t classes,
                                 int64_t ignore_index, lk_msg *msg)
{
    for (int64_t j = pos; j < pos + n; j++)
        if (y[j] != ignore_index && (y[j] < 0 || y[j] >= classes))
            return tut_mc_bad_index(msg, j, y[j], classes, ignore_index);
    return lk_fail(msg, LK_ERR_INTERNAL, "a bad class index vanished");
}

lk_status tut_mc_first_bad_target(const void *t, int f32, int64_t base, int64_t n, int64_t classes,
                                  int64_t spatial, lk_msg *msg)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < classes; c++) {
            int64_t at = base + j + c * spatial;
            double v = f32 ? (double)((const float *)t)[at] : ((const double *)t)[at];
            if (v < 0.0 || v > 1.0)
                return tut_bad_target(msg, at, v);
        }
    return lk_fail(msg, LK_ERR_INTERNAL, "a target outside [0, 1] vanished");
}

static int same_shape(const lk_tensor *t, int32_t ndim, const int64_t *shape)
{
    if (t->ndim != ndim)
        return 0;
    for (int32_t d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d])
            return 0;
    return 1;
}

static lk_status wrong_shape(lk_msg *msg, const lk_tensor *t, int32_t ndim, const int64_t *shape,
                             const char *why)
{
    char got[160], want[160];
    tut_shape_str(got, sizeof got, t->ndim, t->shape);
    tut_shape_str(want, sizeof want, ndim, shape);
    return lk_fail(msg, LK_ERR_SHAPE, "target: shape %s, expected %s (%s)", got, want, why);
}

lk_status tut_mc_plan(const tut_inst *inst, const lk_tensor *slots, lk_plan *plan, lk_msg *msg)
{
    const lk_tensor *x = &slots[0], *t = &slots[1];
    char shape[160];
    if (x->ndim < 2) {
        tut_shape_str(shape, sizeof shape, x->ndim, x->shape);
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: shape %s; multiclass mode needs (N, C, ...) logits, the classes "
                       "in dim 1",
                       shape);
    }
    int64_t classes = x->shape[1], spatial = 1;
    if (classes < 1 || classes > MC_MAX_CLASSES)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: %lld classes in dim 1; multiclass mode takes 1 to %lld",
                       (long long)classes, (long long)MC_MAX_CLASSES);
    for (int32_t d = 2; d < x->ndim; d++)
        spatial *= x->shape[d];
    if (t->dtype == LK_DTYPE_I64) {
        int64_t want[LK_MAX_NDIM];
        want[0] = x->shape[0];
        for (int32_t d = 2; d < x->ndim; d++)
            want[d - 1] = x->shape[d];
        if (!same_shape(t, x->ndim - 1, want))
            return wrong_shape(msg, t, x->ndim - 1, want,
                               "int64 class indices: the input's without dim 1");
        plan->aux[TUT_MC_FLOAT_TARGET] = 0;
    } else if (t->dtype == LK_DTYPE_F32 || t->dtype == LK_DTYPE_F64) {
        if (!same_shape(t, x->ndim, x->shape))
            return wrong_shape(msg, t, x->ndim, x->shape,
                               "per-class float targets: the input's; class indices are int64 "
                               "without dim 1");
        plan->aux[TUT_MC_FLOAT_TARGET] = 1;
    } else {
        return lk_fail(msg, LK_ERR_DTYPE,
                       "target: dtype %s; multiclass mode takes int64 class indices or float "
                       "per-class targets",
                       tut_dtype_name(t->dtype));
    }
    int64_t bp = LK_BLOCK_POSITIONS / classes;
    plan->n_positions = x->shape[0] * spatial;
    plan->block_positions = bp < 64 ? 64 : bp & ~(int64_t)63;
    plan->n_stats = (uint32_t)(3 * classes);
    plan->mean_norm = (double)plan->n_positions;
    plan->aux[TUT_MC_CLASSES] = classes;
    plan->aux[TUT_MC_SPATIAL] = spatial;
    return tut_check_layout(slots, 2, msg);
}

lk_status tut_mc_finalize(const tut_inst *inst, const lk_plan *plan, const double *stats,
                          double *value)
{
    int64_t classes = plan->aux[TUT_MC_CLASSES];
    const double *I = stats, *P = stats + classes, *T = stats + 2 * classes;
    double sum = 0.0;
    for (int64_t c = 0; c < classes; c++) {
        double den = P[c] + T[c] + inst->smooth;
        sum += den == 0.0 ? 1.0 : (2.0 * I[c] + inst->smooth) / den;
    }
    *value = 1.0 - sum / (double)classes;
    return LK_OK;
}

void tut_mc_coeffs(double smooth, int64_t classes, const double *global, double *k1, double *k2)
{
    const double *I = global, *P = global + classes, *T = global + 2 * classes;
    double inv_c = 1.0 / (double)classes;
    for (int64_t c = 0; c < classes; c++) {
        double den = P[c] + T[c] + smooth;
        double inv = den == 0.0 ? 0.0 : 1.0 / (den * den);
        k1[c] = (2.0 * I[c] + smooth) * inv * inv_c;
        k2[c] = 2.0 * den * inv * inv_c;
    }
}

/* ------------------------------------------------------------------------ */
/* The portable kernels: one position at a time, classes in order           */

/* Per-position work space: logits, then softmax, and targets. */
typedef struct mc_work {
    double *x, *t, *k1, *k2;
    double stack[4 * MC_STACK];
    double *heap;
} mc_work;

static lk_status work_init(mc_work *w, int64_t classes, lk_msg *msg)
{
    w->heap = NULL;
    double *base = w->stack;
    if (classes > MC_STACK) {
        w->heap = malloc(4 * (size_t)classes * sizeof(double));
        if (!w->heap)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes", (long long)classes);
        base = w->heap;
    }
    w->x = base;
    w->t = base + classes;
    w->k1 = base + 2 * classes;
    w->k2 = base + 3 * classes;
    return LK_OK;
}

/* The class targets of position pos (flat index of its first class base)
 * into w->t; 0 when the position is ignored, 1 when it counts, or a
 * failure. */
static int load_targets(const tut_inst *inst, const lk_plan *plan, const lk_tensor *t, int64_t pos,
                        int64_t base, double *tv, lk_status *st, lk_msg *msg)
{
    int64_t classes = plan->aux[TUT_MC_CLASSES], spatial = plan->aux[TUT_MC_SPATIAL];
    *st = LK_OK;
    if (!plan->aux[TUT_MC_FLOAT_TARGET]) {
        int64_t y = ((const int64_t *)t->data)[pos];
        if (y == inst->ignore_index)
            return 0;
        if (y < 0 || y >= classes) {
            *st = tut_mc_bad_index(msg, pos, y, classes, inst->ignore_index);
            return 0;
        }
        for (int64_t c = 0; c < classes; c++)
            tv[c] = c == y ? 1.0 : 0.0;
        return 1;
    }
    for (int64_t c = 0; c < classes; c++) {
        tv[c] = lk_load(t, base + c * spatial);
        if (tv[c] < 0.0 || tv[c] > 1.0) {
            *st = tut_bad_target(msg, base + c * spatial, tv[c]);
            return 0;
        }
    }
    return 1;
}

/* The softmax of the position's logits, in place in p. */
static void softmax(const lk_tensor *x, int64_t base, int64_t spatial, int64_t classes, double *p)
{
    for (int64_t c = 0; c < classes; c++)
        p[c] = lk_load(x, base + c * spatial);
    double m = p[0], z = 0.0;
    for (int64_t c = 1; c < classes; c++)
        if (p[c] > m)
            m = p[c];
    for (int64_t c = 0; c < classes; c++) {
        p[c] = exp(p[c] - m);
        z += p[c];
    }
    double r = 1.0 / z;
    for (int64_t c = 0; c < classes; c++)
        p[c] *= r;
}

lk_status tut_mc_forward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                         lk_msg *msg)
{
    int64_t classes = plan->aux[TUT_MC_CLASSES], spatial = plan->aux[TUT_MC_SPATIAL];
    double *I = blk->stats, *P = blk->stats + classes, *T = blk->stats + 2 * classes;
    mc_work w;
    lk_status st = work_init(&w, classes, msg);
    for (int64_t pos = blk->begin; st == LK_OK && pos < blk->end; pos++) {
        int64_t base = pos / spatial * classes * spatial + pos % spatial;
        if (!load_targets(inst, plan, &blk->slots[1], pos, base, w.t, &st, msg))
            continue;
        softmax(&blk->slots[0], base, spatial, classes, w.x);
        for (int64_t c = 0; c < classes; c++) {
            I[c] += w.x[c] * w.t[c];
            P[c] += w.x[c];
            T[c] += w.t[c];
        }
    }
    free(w.heap);
    return st;
}

lk_status tut_mc_backward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                          lk_msg *msg)
{
    int64_t classes = plan->aux[TUT_MC_CLASSES], spatial = plan->aux[TUT_MC_SPATIAL];
    const lk_tensor *g = &blk->grads[0];
    mc_work w;
    lk_status st = work_init(&w, classes, msg);
    if (st != LK_OK)
        return st;
    tut_mc_coeffs(inst->smooth, classes, blk->global, w.k1, w.k2);
    for (int64_t pos = blk->begin; st == LK_OK && pos < blk->end; pos++) {
        int64_t base = pos / spatial * classes * spatial + pos % spatial;
        if (!load_targets(inst, plan, &blk->slots[1], pos, base, w.t, &st, msg)) {
            for (int64_t c = 0; st == LK_OK && c < classes; c++)
                lk_store(g, base + c * spatial, 0.0, blk->flags);
            continue;
        }
        softmax(&blk->slots[0], base, spatial, classes, w.x);
        double spg = 0.0;
        for (int64_t c = 0; c < classes; c++)
            spg += w.x[c] * (w.k1[c] - w.t[c] * w.k2[c]);
        for (int64_t c = 0; c < classes; c++) {
            double gc = w.k1[c] - w.t[c] * w.k2[c];
            lk_store(g, base + c * spatial, blk->grad_scale * (w.x[c] * (gc - spg)), blk->flags);
        }
    }
    free(w.heap);
    return st;
}
