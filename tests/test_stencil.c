/* The stencil drivers (losskit/stencil.h) are deterministic: every loss of
 * the stencil family gives bitwise the same value, gradient and output with
 * 1, 2, 3 and 8 threads, float32 and float64, on shapes of many blocks whose
 * blocks cut through rows and planes, so that every block reads its
 * neighbours' positions. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"

typedef struct sten_case {
    const char *config;
    int32_t ndim;
    int64_t shape[4];
    int target;
} sten_case;

static const sten_case cases[] = {
    {"{\"loss\": \"sobolev\"}", 4, {5, 3, 97, 101}, 1},
    {"{\"loss\": \"sobolev\", \"params\": {\"dims\": 3, \"grad_weight\": 0.5}}",
     4,
     {3, 7, 61, 333},
     1},
    /* rows longer than the residual path's piece (4096 columns); one
     * dimension; a gradient large enough to be streamed (16 MiB of float32) */
    {"{\"loss\": \"sobolev\", \"params\": {\"grad_weight\": 1.7}}", 4, {2, 2, 40, 5000}, 1},
    {"{\"loss\": \"sobolev\", \"params\": {\"dims\": 1}}", 4, {3, 7, 61, 333}, 1},
    {"{\"loss\": \"sobolev\"}", 4, {1, 3, 1100, 1300}, 1},
    {"{\"loss\": \"total_variation\", \"reduction\": \"mean\"}", 4, {1, 3, 1100, 1300}, 0},
    {"{\"loss\": \"total_variation\", \"reduction\": \"none\"}", 3, {3, 41, 4999}, 0},
    {"{\"loss\": \"total_variation\", \"reduction\": \"sum\"}", 4, {5, 3, 97, 101}, 0},
    {"{\"loss\": \"total_variation\", \"reduction\": \"none\"}", 4, {9, 2, 300, 37}, 0},
    {"{\"loss\": \"ssim\"}", 4, {3, 3, 211, 77}, 1},
    {"{\"loss\": \"ssim\", \"params\": {\"window\": 7, \"sigma\": 1.0}}", 4, {2, 2, 40, 1500}, 1},
};

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

typedef struct produced {
    double value;
    void *grad, *out;
    size_t grad_bytes, out_bytes;
} produced;

static produced eval_with(int32_t threads, const sten_case *c, int32_t dtype, const void *x,
                          const void *t, int64_t n)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.use_env_path = 0;
    opts.threads = threads;
    lk_runtime *rt;
    char err[LK_ERRMSG_CAP];
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "%s", err);
    lk_loss *loss;
    cr_assert_eq(lk_loss_from_json(rt, c->config, strlen(c->config), "stencil", &loss, err), LK_OK,
                 "%s", err);
    size_t es = dtype == LK_DTYPE_F32 ? sizeof(float) : sizeof(double);
    produced p = {0, calloc((size_t)n, es), NULL, (size_t)n * es, 0};
    cr_assert_not_null(p.grad);
    lk_named_tensor in[2] = {
        {"input", {(void *)x, dtype, c->ndim, c->shape, NULL}, NULL},
        {"target", {(void *)t, dtype, c->ndim, c->shape, NULL}, NULL},
    };
    lk_named_tensor g[1] = {{"input", {p.grad, dtype, c->ndim, c->shape, NULL}, NULL}};
    lk_eval_args a;
    lk_eval_args_init(&a);
    a.tensors = in;
    a.n_tensors = c->target ? 2 : 1;
    a.grads = g;
    a.n_grads = 1;
    int32_t ond;
    int64_t oshape[LK_MAX_NDIM];
    lk_tensor out;
    if (strstr(c->config, "\"none\"")) {
        cr_assert_eq(lk_loss_out_shape(loss, &a, &ond, oshape), LK_OK, "%s", a.errmsg);
        int64_t on = 1;
        for (int32_t d = 0; d < ond; d++)
            on *= oshape[d];
        p.out_bytes = (size_t)on * es;
        p.out = calloc((size_t)on, es);
        out = (lk_tensor){p.out, dtype, ond, oshape, NULL};
        a.out = &out;
    }
    cr_assert_eq(lk_loss_eval(loss, &a, &p.value), LK_OK, "%s", a.errmsg);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return p;
}

static void fill(void *p, int32_t dtype, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++) {
        double v = lo + (hi - lo) * uniform();
        if (dtype == LK_DTYPE_F32)
            ((float *)p)[i] = (float)v;
        else
            ((double *)p)[i] = v;
    }
}

Test(stencil, bitwise_identical_for_1_2_3_8_threads)
{
    static const int32_t threads[] = {2, 3, 8};
    static const int32_t dtypes[] = {LK_DTYPE_F32, LK_DTYPE_F64};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int d = 0; d < 2; d++) {
            const sten_case *c = &cases[k];
            int64_t n = 1;
            for (int32_t j = 0; j < c->ndim; j++)
                n *= c->shape[j];
            cr_assert_gt(n, 4 * 32768, "case %zu: too few elements for several blocks", k);
            size_t es = dtypes[d] == LK_DTYPE_F32 ? sizeof(float) : sizeof(double);
            void *x = malloc((size_t)n * es), *t = malloc((size_t)n * es);
            cr_assert(x && t);
            fill(x, dtypes[d], n, 0.0, 1.0);
            fill(t, dtypes[d], n, 0.0, 1.0);
            produced one = eval_with(1, c, dtypes[d], x, t, n);
            for (size_t m = 0; m < sizeof threads / sizeof threads[0]; m++) {
                produced p = eval_with(threads[m], c, dtypes[d], x, t, n);
                cr_assert(memcmp(&one.value, &p.value, sizeof p.value) == 0,
                          "%s dtype %d: value %.17g with 1 thread, %.17g with %d", c->config,
                          dtypes[d], one.value, p.value, threads[m]);
                cr_assert(memcmp(one.grad, p.grad, p.grad_bytes) == 0,
                          "%s dtype %d: gradient differs with %d threads", c->config, dtypes[d],
                          threads[m]);
                cr_assert(p.out_bytes == 0 || memcmp(one.out, p.out, p.out_bytes) == 0,
                          "%s dtype %d: output differs with %d threads", c->config, dtypes[d],
                          threads[m]);
                free(p.grad);
                free(p.out);
            }
            free(one.grad);
            free(one.out);
            free(x);
            free(t);
        }
}

/* The gradient of one block's edge positions gathers from its neighbours:
 * a shape of one row per block boundary cut still matches the whole-tensor
 * formula, which the catalogue checks on small shapes; here sobolev's value
 * on a constant offset is exactly the squared offset (every difference is
 * zero), whatever the blocks. */
Test(stencil, constant_offset_has_no_difference_terms)
{
    const sten_case c = {
        "{\"loss\": \"sobolev\", \"params\": {\"dims\": 4}}", 4, {4, 3, 123, 129}, 1};
    int64_t n = 4 * 3 * 123 * 129;
    double *x = malloc((size_t)n * sizeof *x), *t = malloc((size_t)n * sizeof *t);
    cr_assert(x && t);
    for (int64_t i = 0; i < n; i++) {
        t[i] = 0.25 * (double)(i % 7);
        x[i] = t[i] + 0.5;
    }
    produced p = eval_with(3, &c, LK_DTYPE_F64, x, t, n);
    cr_assert_eq(p.value, 0.25, "value %.17g", p.value);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(((double *)p.grad)[i], 1.0 / (double)n, "grad[%lld] = %.17g", (long long)i,
                     ((double *)p.grad)[i]);
    free(p.grad);
    free(x);
    free(t);
}
