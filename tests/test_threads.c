/* Results must be bitwise identical for any thread count (docs/design.md):
 * every built-in loss, value and gradient, 1, 2, 3 and 8 threads, on data
 * spanning many blocks with a ragged last block. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"

#define N (7 * 16384 + 123)

static const char *const configs[] = {
    "{\"loss\": \"mse\"}",
    "{\"loss\": \"l1\", \"reduction\": \"sum\"}",
    "{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [2.5]}}",
    "{\"loss\": \"dice\"}",
    "{\"loss\": \"dice_bce\"}",
    "{\"loss\": \"iou\"}",
    "{\"loss\": \"focal\", \"params\": {\"gamma\": 0.5}}",
    "{\"loss\": \"focal_mean_bce\"}",
    "{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 0.25}, {\"loss\": \"dice\"}]}",
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

typedef struct result {
    double value;
    float *grad;
} result;

static result eval_with(int32_t threads, const char *config, const float *x, const float *t)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.use_env_path = 0;
    opts.threads = threads;
    lk_runtime *rt;
    char err[LK_ERRMSG_CAP];
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "%s", err);
    cr_assert_eq(lk_runtime_threads(rt), threads);
    lk_loss *loss;
    cr_assert_eq(lk_loss_from_json(rt, config, strlen(config), "threads", &loss, err), LK_OK,
                 "%s", err);
    int64_t shape[1] = {N};
    result r = {0, calloc(N, sizeof(float))};
    cr_assert_not_null(r.grad);
    lk_named_tensor in[2] = {
        {"input", {(void *)x, LK_DTYPE_F32, 1, shape, NULL}, NULL},
        {"target", {(void *)t, LK_DTYPE_F32, 1, shape, NULL}, NULL},
    };
    lk_named_tensor g[1] = {{"input", {r.grad, LK_DTYPE_F32, 1, shape, NULL}, NULL}};
    lk_eval_args a;
    lk_eval_args_init(&a);
    a.tensors = in;
    a.n_tensors = 2;
    a.grads = g;
    a.n_grads = 1;
    cr_assert_eq(lk_loss_eval(loss, &a, &r.value), LK_OK, "%s", a.errmsg);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return r;
}

Test(threads, bitwise_identical_for_1_2_3_8_threads)
{
    float *x = malloc(N * sizeof *x), *t = malloc(N * sizeof *t);
    cr_assert(x && t);
    for (int i = 0; i < N; i++) {
        x[i] = (float)(8.0 * uniform() - 4.0);
        t[i] = uniform() < 0.3 ? 1.0f : 0.0f;
    }
    static const int32_t counts[] = {2, 3, 8};
    for (size_t c = 0; c < sizeof configs / sizeof *configs; c++) {
        result ref = eval_with(1, configs[c], x, t);
        cr_assert(isfinite(ref.value), "%s: value %g", configs[c], ref.value);
        double gsum = 0;
        for (int i = 0; i < N; i++)
            gsum += fabs(ref.grad[i]);
        cr_assert_gt(gsum, 0.0, "%s: the gradient is all zero", configs[c]);
        for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
            result r = eval_with(counts[k], configs[c], x, t);
            cr_expect_eq(memcmp(&r.value, &ref.value, sizeof r.value), 0,
                         "%s: value with %d threads %.17g != %.17g with 1", configs[c], counts[k],
                         r.value, ref.value);
            cr_expect_eq(memcmp(r.grad, ref.grad, N * sizeof(float)), 0,
                         "%s: gradient with %d threads differs from 1 thread", configs[c],
                         counts[k]);
            free(r.grad);
        }
        free(ref.grad);
    }
    free(x);
    free(t);
}
