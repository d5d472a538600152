/* losskit/kernel.h: small inline helpers for writing loss kernels.
 *
 * Nothing here is ABI: it is compiled into each plugin. Use it or not. */
#ifndef LOSSKIT_KERNEL_H
#define LOSSKIT_KERNEL_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes a formatted one-line message into the host's buffer and returns st,
 * so that a kernel can say: return lk_fail(msg, LK_ERR_INVALID, "...", ...). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static inline lk_status lk_fail(lk_msg *msg, lk_status st, const char *fmt, ...)
{
    if (msg && msg->buf && msg->cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg->buf, msg->cap, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* The refusal of a per-class list parameter (a class weight) whose length
 * is not the input's class count C: "NAME has N value(s) but the input has
 * C class(es) (WHERE); give [] or C value(s)", WHERE naming the class
 * dimension ("dim 1", "its last dimension"). Returns LK_ERR_SHAPE. */
static inline lk_status lk_fail_per_class(lk_msg *msg, const char *name, int64_t n, int64_t C,
                                          const char *where)
{
    return lk_fail(msg, LK_ERR_SHAPE,
                   "%s has %lld value%s but the input has %lld class%s (%s); give [] or %lld "
                   "value%s",
                   name, (long long)n, n == 1 ? "" : "s", (long long)C, C == 1 ? "" : "es", where,
                   (long long)C, C == 1 ? "" : "s");
}

/* The element count of a tensor (shapes are validated by the host). */
static inline int64_t lk_numel(const lk_tensor *t)
{
    int64_t n = 1;
    for (int32_t d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

/* Element i (C order, contiguous) of a tensor of any dtype, as a double. */
static inline double lk_load(const lk_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case LK_DTYPE_F32: return (double)((const float *)t->data)[i];
    case LK_DTYPE_F64: return ((const double *)t->data)[i];
    case LK_DTYPE_I64: return (double)((const int64_t *)t->data)[i];
    case LK_DTYPE_I32: return (double)((const int32_t *)t->data)[i];
    case LK_DTYPE_U8:
    case LK_DTYPE_BOOL: return (double)((const uint8_t *)t->data)[i];
    default: return NAN;
    }
}

/* Stores (or, with LK_BLOCK_GRAD_ACCUMULATE, adds) v at element i of a
 * floating-point tensor. Does nothing when t->data is NULL. */
static inline void lk_store(const lk_tensor *t, int64_t i, double v, uint32_t flags)
{
    if (!t->data)
        return;
    int acc = (flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    if (t->dtype == LK_DTYPE_F32) {
        float *p = (float *)t->data + i;
        *p = acc ? (float)((double)*p + v) : (float)v;
    } else {
        double *p = (double *)t->data + i;
        *p = acc ? *p + v : v;
    }
}

/* log(1 + exp(x)) without overflow or loss of precision. */
static inline double lk_softplus(double x)
{
    if (x > 0)
        return x + log1p(exp(-x));
    return log1p(exp(x));
}

/* log(sigmoid(x)) = -softplus(-x). */
static inline double lk_log_sigmoid(double x)
{
    return -lk_softplus(-x);
}

/* sigmoid(x), exact at both tails: never exp of a large positive number. */
static inline double lk_sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* Binary cross-entropy from a logit x and a (soft) target t in [0, 1]:
 * (1 - t) x + softplus(-x), written so that x = +-inf gives +inf or a finite
 * value, never NaN (0 * inf is avoided). */
static inline double lk_bce_logits(double x, double t)
{
    if (isinf(x)) {
        if (x > 0)
            return t == 1.0 ? 0.0 : HUGE_VAL;
        return t == 0.0 ? 0.0 : HUGE_VAL;
    }
    return (1.0 - t) * x + lk_softplus(-x);
}

/* "(2, 3)", as the host writes shapes, into buf. */
static inline void lk_shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, cap, "(");
    for (int32_t d = 0; d < ndim && used < cap; d++)
        used +=
            (size_t)snprintf(buf + used, cap - used, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, ndim == 1 ? ",)" : ")");
}

/* A helper out of line and cold (a message's formatting, on the error path
 * of a hot loop): inlined, it weighs on the loop's register allocation. */
#if defined(__GNUC__)
#define LK__COLD_FN static __attribute__((noinline, cold, unused))
#else
#define LK__COLD_FN static inline
#endif

/* "[1, 0, 3]": the multi-index of element flat (row-major) of a tensor of
 * this shape, as messages name an element; "" for a 0-d tensor. */
static inline void lk_index_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape,
                                int64_t flat)
{
    int64_t idx[LK_MAX_NDIM];
    size_t used = 0;
    for (int32_t d = ndim - 1; d >= 0; d--) {
        idx[d] = shape[d] ? flat % shape[d] : 0;
        flat = shape[d] ? flat / shape[d] : 0;
    }
    buf[0] = '\0';
    for (int32_t d = 0; d < ndim && used + 1 < cap; d++) {
        int n = snprintf(buf + used, cap - used, "%s%lld", d ? ", " : "[", (long long)idx[d]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (ndim && used + 2 < cap)
        snprintf(buf + used, cap - used, "]");
}

/* "float32", "int64", ... */
static inline const char *lk_sdk_dtype_name(int32_t dtype)
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

/* The widest kernels the environment variable LOSSKIT_SIMD allows: "0" or
 * "portable", portable C only; "avx2", at most AVX2; unset or anything
 * else, the best the CPU has. Read it in create(), so that a test can build
 * one loss on each path in the same process; the built-in plugins do. */
enum { LK_SIMD_PORTABLE = 0, LK_SIMD_AVX2 = 1, LK_SIMD_BEST = 2 };

static inline int lk_simd_limit(void)
{
    const char *env = getenv("LOSSKIT_SIMD");
    if (env && (strcmp(env, "0") == 0 || strcmp(env, "portable") == 0))
        return LK_SIMD_PORTABLE;
    if (env && strcmp(env, "avx2") == 0)
        return LK_SIMD_AVX2;
    return LK_SIMD_BEST;
}

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_KERNEL_H */
