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

#endif
