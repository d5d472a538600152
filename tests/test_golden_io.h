/* test_golden_io.h: reading golden cases (JSON and .npy files under the
 * source tree) and comparing against them, for the suites that check
 * PyTorch's references (test_golden.c, test_torch.c). Static inline, so a
 * suite that leaves one unused draws no warning. */
#ifndef LOSSKIT_TEST_GOLDEN_IO_H
#define LOSSKIT_TEST_GOLDEN_IO_H

#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "losskit/losskit.h"

/* The whole of f (closed), or NULL; no assertion, so that it also serves
 * outside a test. */
static inline char *read_all(FILE *f)
{
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
        buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static inline char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *text = read_all(f);
    cr_assert_not_null(text, "cannot read %s", path);
    return text;
}

static inline cJSON *read_json(const char *path)
{
    char *text = read_text(path);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(j, "%s is not valid JSON", path);
    return j;
}

/* rel: a path below the source root. */
static inline void read_npy(const char *rel, lk_array *a)
{
    char path[4096], err[LK_ERRMSG_CAP] = "";
    snprintf(path, sizeof path, "%s/%s", LK_SOURCE_ROOT, rel);
    cr_assert_eq(lk_npy_read(path, a, err), LK_OK, "lk_npy_read %s: %s", rel, err);
}

static inline const char *str_member(const cJSON *obj, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(m) ? m->valuestring : NULL;
}

/* Element i of a float32 or float64 array. */
static inline double element(const lk_array *a, size_t i)
{
    return a->dtype == LK_DTYPE_F32 ? (double)((const float *)a->data)[i]
                                    : ((const double *)a->data)[i];
}

static inline size_t numel(const lk_array *a)
{
    size_t n = 1;
    for (int32_t d = 0; d < a->ndim; d++)
        n *= (size_t)a->shape[d];
    return n;
}

static inline double rel_err(double got, double want)
{
    double d = fabs(got - want);
    return d == 0.0 ? 0.0 : d / fabs(want);
}

/* |got - want| within rel of want or abs_floor; false for NaN. */
static inline int close_to(double got, double want, double rel, double abs_floor)
{
    return fabs(got - want) <= fmax(rel * fabs(want), abs_floor);
}

/* Every element of got against the reference file ref_rel: within rel
 * relative or floor absolute (the first few misses are reported one by one,
 * then their count). Dims and shape must match. Returns the largest
 * relative error among the reference elements above floor. */
static inline double compare_to_npy(const char *name, const char *what, const lk_array *got,
                                    const char *ref_rel, double rel, double floor)
{
    lk_array ref;
    read_npy(ref_rel, &ref);
    cr_assert_eq(ref.ndim, got->ndim, "%s: %s has %d dims, reference %d", name, what,
                 (int)got->ndim, (int)ref.ndim);
    for (int32_t d = 0; d < ref.ndim; d++)
        cr_assert_eq(ref.shape[d], got->shape[d], "%s: %s dim %d is %lld, reference %lld", name,
                     what, (int)d, (long long)got->shape[d], (long long)ref.shape[d]);
    double worst = 0.0;
    size_t n = numel(&ref), bad = 0;
    for (size_t i = 0; i < n; i++) {
        double g = element(got, i), w = element(&ref, i);
        if (!close_to(g, w, rel, floor) && bad++ < 5)
            cr_expect(0, "%s: %s[%zu] = %.17g, PyTorch %.17g", name, what, i, g, w);
        worst = fmax(worst, fabs(w) > floor ? rel_err(g, w) : 0.0);
    }
    cr_expect_eq(bad, 0, "%s: %zu of %zu elements of %s differ beyond %g (floor %g)", name, bad, n,
                 what, rel, floor);
    lk_array_free(&ref);
    return worst;
}

#endif
