/* plugin.c: the tutorial family's entry point, its shared slots, the choice
 * of kernels, and the chunked drivers of the portable path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tutorial.h"

const lk_slot_desc tut_slot_input = {
    .name = "input",
    .doc = "logits (before the sigmoid)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
};

const lk_slot_desc tut_slot_target = {
    .name = "target",
    .doc = "targets in [0, 1], shaped like input",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = 0,
    .shape = LK_SHAPE_LIKE_INPUT,
};

const lk_slot_desc tut_slot_weight = {
    .name = "weight",
    .doc = "optional per-element weight multiplying each element's loss",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_OPTIONAL,
    .shape = LK_SHAPE_LIKE_INPUT,
};

static const lk_loss_desc *const tutorial_losses[] = {
    &tut_mse_desc,
    &tut_l1_desc,
    &tut_bce_desc,
    &tut_dice_desc,
    &tut_dice_bce_desc,
    &tut_iou_desc,
    &tut_focal_desc,
    &tut_focal_mean_bce_desc,
    NULL,
};

static const lk_plugin tutorial_plugin = {
    LK_ABI_MAJOR,
    LK_ABI_MINOR,
    "tutorial",
    "1.1.0",
    "the losses of the custom-loss tutorial: mse, l1, bce, dice, iou, focal",
    tutorial_losses,
};

LK_PLUGIN_ENTRY(tutorial_plugin)

/* ------------------------------------------------------------------------ */
/* Instances and the choice of kernels                                      */

int32_t tut_simd_choice(void)
{
    int limit = lk_simd_limit();
    if (limit == LK_SIMD_PORTABLE)
        return TUT_SIMD_NONE;
#if TUT_HAVE_AVX2
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return TUT_SIMD_NONE;
#if TUT_HAVE_AVX512
    if (limit == LK_SIMD_BEST && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq"))
        return TUT_SIMD_AVX512;
#endif
    return TUT_SIMD_AVX2;
#else
    return TUT_SIMD_NONE;
#endif
}

lk_status tut_inst_new(const lk_create_args *args, int64_t n_pw, tut_inst **out, lk_msg *msg)
{
    tut_inst *in = calloc(1, sizeof(*in) + (size_t)n_pw * sizeof(double));
    if (!in)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    in->simd = tut_simd_choice();
    in->n_pw = n_pw;
    const lk_host *h = args->host;
    if (h && h->log) {
        char line[128];
        snprintf(line, sizeof line, "tutorial %s: %s kernels", args->desc ? args->desc->id : "?",
                 in->simd == TUT_SIMD_AVX512 ? "AVX-512 (float32 data) and AVX2+FMA"
                 : in->simd == TUT_SIMD_AVX2 ? "AVX2+FMA"
                                             : "portable");
        h->log(h->ctx, LK_LOG_DEBUG, line);
    }
    *out = in;
    return LK_OK;
}

/* create() of the losses without parameters: only the choice of kernels. */
lk_status tut_create_plain(const lk_create_args *args, void **instance, lk_msg *msg)
{
    tut_inst *in = NULL;
    lk_status st = tut_inst_new(args, 0, &in, msg);
    if (st == LK_OK)
        *instance = in;
    return st;
}

void tut_destroy(void *instance)
{
    free(instance);
}

/* ------------------------------------------------------------------------ */
/* Layout                                                                    */

static int is_c_order(const lk_tensor *t)
{
    if (!t->strides || !t->shape)
        return 1;
    int64_t expect = 1;
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] == 0)
            return 1;
        if (t->shape[d] != 1 && t->strides[d] != expect)
            return 0;
        expect *= t->shape[d];
    }
    return 1;
}

int64_t tut_block_positions(int64_t n_positions)
{
    int64_t b = (n_positions / 64 + LK_BLOCK_POSITIONS - 1) / LK_BLOCK_POSITIONS;
    b *= LK_BLOCK_POSITIONS;
    return b < LK_BLOCK_POSITIONS ? LK_BLOCK_POSITIONS : b > TUT_BLOCK_MAX ? TUT_BLOCK_MAX : b;
}

lk_status tut_plan_binary(const lk_tensor *slots, int32_t n_slots, lk_plan *plan, lk_msg *msg)
{
    plan->block_positions = tut_block_positions(plan->n_positions);
    return tut_check_layout(slots, n_slots, msg);
}

lk_status tut_check_layout(const lk_tensor *slots, int32_t n_slots, lk_msg *msg)
{
    for (int32_t s = 0; s < n_slots; s++) {
        if (!is_c_order(&slots[s]))
            return lk_fail(msg, LK_ERR_UNSUPPORTED,
                           "slot %d is strided; the tutorial losses need C-order tensors", (int)s);
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Chunk conversion: the dtype switch happens once per chunk.                */

static void load_chunk(const lk_tensor *t, int64_t begin, int64_t n, double *dst)
{
    if (t->dtype == LK_DTYPE_F32) {
        const float *src = (const float *)t->data + begin;
        for (int64_t j = 0; j < n; j++)
            dst[j] = (double)src[j];
    } else if (t->dtype == LK_DTYPE_F64) {
        memcpy(dst, (const double *)t->data + begin, (size_t)n * sizeof(double));
    } else {
        for (int64_t j = 0; j < n; j++)
            dst[j] = lk_load(t, begin + j);
    }
}

/* Stores (or adds, with LK_BLOCK_GRAD_ACCUMULATE) scale * src[j]: what
 * lk_store does, with the dtype and flag tests hoisted out of the loop. */
static void store_chunk(const lk_tensor *t, int64_t begin, int64_t n, const double *src,
                        double scale, uint32_t flags)
{
    int acc = (flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    if (t->dtype == LK_DTYPE_F32) {
        float *p = (float *)t->data + begin;
        if (acc)
            for (int64_t j = 0; j < n; j++)
                p[j] = (float)((double)p[j] + scale * src[j]);
        else
            for (int64_t j = 0; j < n; j++)
                p[j] = (float)(scale * src[j]);
    } else {
        double *p = (double *)t->data + begin;
        if (acc)
            for (int64_t j = 0; j < n; j++)
                p[j] += scale * src[j];
        else
            for (int64_t j = 0; j < n; j++)
                p[j] = scale * src[j];
    }
}

void tut_shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, cap, "(");
    for (int32_t d = 0; d < ndim && used < cap; d++)
        used +=
            (size_t)snprintf(buf + used, cap - used, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, ndim == 1 ? ",)" : ")");
}

const char *tut_dtype_name(int32_t dtype)
{
    switch (dtype) {
    case LK_DTYPE_F32: return "float32";
    case LK_DTYPE_F64: return "float64";
    case LK_DTYPE_I64: return "int64";
    case LK_DTYPE_I32: return "int32";
    case LK_DTYPE_U8: return "uint8";
    case LK_DTYPE_BOOL: return "bool";
    default: return "invalid";
    }
}

lk_status tut_bad_target(lk_msg *msg, int64_t index, double t)
{
    return lk_fail(msg, LK_ERR_INVALID, "target[%lld] = %g is outside [0, 1]", (long long)index, t);
}

lk_status tut_first_bad_target(const void *t, int f32, int64_t i, int64_t n, lk_msg *msg)
{
    for (int64_t j = i; j < i + n; j++) {
        double v = f32 ? (double)((const float *)t)[j] : ((const double *)t)[j];
        if (v < 0.0 || v > 1.0)
            return tut_bad_target(msg, j, v);
    }
    return lk_fail(msg, LK_ERR_INTERNAL, "a target outside [0, 1] vanished");
}

/* NaN targets pass (and propagate); anything else outside [0, 1] fails. */
static lk_status check_targets(const double *t, int64_t begin, int64_t n, lk_msg *msg)
{
    int bad = 0;
    for (int64_t j = 0; j < n; j++)
        bad |= (t[j] < 0.0) | (t[j] > 1.0);
    if (!bad)
        return LK_OK;
    for (int64_t j = 0; j < n; j++)
        if (t[j] < 0.0 || t[j] > 1.0)
            return tut_bad_target(msg, begin + j, t[j]);
    return LK_ERR_INTERNAL;
}

static int wants(const lk_tensor *t)
{
    return t && t->data;
}

/* ------------------------------------------------------------------------ */
/* Drivers                                                                   */

/* The weight multiplies loss and gradient; a zero weight drops the element
 * even when its loss is infinite. Returns the chunk's sum of losses. */
static double weigh_and_sum(const double *w, double *loss, double *grad, int64_t n)
{
    double sum = 0.0;
    if (w) {
        for (int64_t j = 0; j < n; j++)
            loss[j] = tut_mul0(w[j], loss[j]);
        if (grad)
            for (int64_t j = 0; j < n; j++)
                grad[j] = tut_mul0(w[j], grad[j]);
    }
    for (int64_t j = 0; j < n; j++)
        sum += loss[j];
    return sum;
}

lk_status tut_fused_forward(const tut_inst *inst, const lk_block *blk, tut_fused_fn fn,
                            uint32_t flags, lk_msg *msg)
{
    double x[TUT_CHUNK], t[TUT_CHUNK], w[TUT_CHUNK], loss[TUT_CHUNK], grad[TUT_CHUNK];
    const lk_tensor *wt = (flags & TUT_WEIGHTED) ? &blk->slots[2] : NULL;
    int weighted = wants(wt);
    int want_out = wants(blk->out);
    int want_grad = blk->grads && wants(&blk->grads[0]);
    double sum = 0.0;
    for (int64_t b = blk->begin; b < blk->end; b += TUT_CHUNK) {
        int64_t n = blk->end - b < TUT_CHUNK ? blk->end - b : TUT_CHUNK;
        tut_span s = {b, n, x, t, loss, want_grad ? grad : NULL};
        load_chunk(&blk->slots[0], b, n, x);
        load_chunk(&blk->slots[1], b, n, t);
        if (flags & TUT_CHECK_TARGET) {
            lk_status st = check_targets(t, b, n, msg);
            if (st != LK_OK)
                return st;
        }
        if (weighted)
            load_chunk(wt, b, n, w);
        fn(inst, &s);
        sum += weigh_and_sum(weighted ? w : NULL, loss, s.grad, n);
        if (want_out)
            store_chunk(blk->out, b, n, loss, 1.0, 0);
        if (want_grad)
            store_chunk(&blk->grads[0], b, n, grad, blk->grad_scale, blk->flags);
    }
    blk->stats[0] += sum;
    return LK_OK;
}

lk_status tut_stats_forward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                            tut_stats_fn fn, lk_msg *msg)
{
    double x[TUT_CHUNK], t[TUT_CHUNK];
    double acc[TUT_MAX_STATS] = {0};
    uint32_t ns = plan->n_stats < TUT_MAX_STATS ? plan->n_stats : TUT_MAX_STATS;
    for (int64_t b = blk->begin; b < blk->end; b += TUT_CHUNK) {
        int64_t n = blk->end - b < TUT_CHUNK ? blk->end - b : TUT_CHUNK;
        tut_span s = {b, n, x, t, NULL, NULL};
        load_chunk(&blk->slots[0], b, n, x);
        load_chunk(&blk->slots[1], b, n, t);
        lk_status st = check_targets(t, b, n, msg);
        if (st != LK_OK)
            return st;
        fn(inst, &s, acc);
    }
    for (uint32_t k = 0; k < ns; k++)
        blk->stats[k] += acc[k];
    return LK_OK;
}

lk_status tut_backward(const double *k, const lk_block *blk, tut_grad_fn fn, lk_msg *msg)
{
    double x[TUT_CHUNK], t[TUT_CHUNK], grad[TUT_CHUNK];
    for (int64_t b = blk->begin; b < blk->end; b += TUT_CHUNK) {
        int64_t n = blk->end - b < TUT_CHUNK ? blk->end - b : TUT_CHUNK;
        tut_span s = {b, n, x, t, NULL, grad};
        load_chunk(&blk->slots[0], b, n, x);
        load_chunk(&blk->slots[1], b, n, t);
        fn(k, &s);
        store_chunk(&blk->grads[0], b, n, grad, blk->grad_scale, blk->flags);
    }
    return LK_OK;
}
