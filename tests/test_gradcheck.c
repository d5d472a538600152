/* test_gradcheck: the tutorial losses' analytic gradients against central
 * finite differences, and their documented edge cases.
 *
 * gradcheck.fd: every loss of the family and several parameter settings, on
 * float64 input of 64 random logits (N(0, 2)) with binary, soft or mixed
 * targets; each gradient element must match (f(x + h) - f(x - h)) / 2h,
 * h = 1e-6, to 1e-6 relative + 1e-8 absolute. For reduction none the
 * difference is taken of the element's own output.
 *
 * edge.*: +-inf logits (documented values, never NaN), zero-size tensors,
 * empty masks with smooth 0, targets outside [0, 1], a pos_weight that does
 * not fit, many blocks against a direct computation, thread counts, and
 * float32 against float64 input; hinge_embedding and margin_ranking with
 * margins beyond float32's range, infinite targets and -inf inputs, on
 * every kernel path. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"
#include "test_paths.h"

#define N_MAX 64
#define FD_H  1e-6

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t rng_state;

static double uniform(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(double sd)
{
    return sd * sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform());
}

static lk_runtime *open_runtime(int32_t threads)
{
    lk_runtime_options opts;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_runtime_options_init(&opts);
    opts.threads = threads;
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "lk_runtime_open: %s", err);
    return rt;
}

static lk_loss *make_loss(lk_runtime *rt, const char *config)
{
    char err[LK_ERRMSG_CAP] = "";
    lk_loss *loss = NULL;
    lk_status st = lk_loss_from_json(rt, config, strlen(config), "test", &loss, err);
    cr_assert_eq(st, LK_OK, "config %s: %s", config, err);
    return loss;
}

/* One call's tensors: input (dtype F64 or F32 through xf), target and an
 * optional weight in float64, all shaped ndim/shape. */
typedef struct problem {
    int32_t ndim;
    int64_t shape[LK_MAX_NDIM];
    int32_t dtype; /* of input, grad and out */
    void *x;
    double *t;
    double *w; /* NULL: no weight */
} problem;

static lk_tensor view(const problem *p, void *data, int32_t dtype)
{
    lk_tensor v = {data, dtype, p->ndim, p->shape, NULL};
    return v;
}

/* Evaluates; grad and out (may be NULL) have the input's dtype. */
static lk_status eval(const lk_loss *loss, const problem *p, void *grad, void *out, double *value,
                      char *errmsg)
{
    lk_named_tensor in[3] = {
        {.name = "input", .tensor = view(p, p->x, p->dtype)},
        {.name = "target", .tensor = view(p, p->t, LK_DTYPE_F64)},
        {.name = "weight", .tensor = view(p, p->w, LK_DTYPE_F64)},
    };
    lk_named_tensor g = {.name = "input", .tensor = view(p, grad, p->dtype)};
    lk_tensor o = view(p, out, p->dtype);
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = p->w ? 3 : 2;
    args.grads = grad ? &g : NULL;
    args.n_grads = grad ? 1 : 0;
    args.out = out ? &o : NULL;
    *value = NAN;
    lk_status st = lk_loss_eval(loss, &args, value);
    if (errmsg)
        snprintf(errmsg, LK_ERRMSG_CAP, "%s", args.errmsg);
    return st;
}

/* Like eval, asserting success. */
static double eval_ok(const lk_loss *loss, const problem *p, void *grad, void *out)
{
    char err[LK_ERRMSG_CAP];
    double v;
    lk_status st = eval(loss, p, grad, out, &v, err);
    cr_assert_eq(st, LK_OK, "lk_loss_eval: %s (%s)", err, lk_status_name(st));
    return v;
}

/* ------------------------------------------------------------------------ */
/* Finite differences                                                        */

enum { BINARY, SOFT, MIXED };

typedef struct gc_case {
    const char *name;
    const char *config;
    int targets;  /* BINARY, SOFT or MIXED (even positions binary) */
    int weighted; /* 1: a random weight in [0, 2] */
    int none;     /* 1: reduction none, difference each element's output */
} gc_case;

#define PW16 "[0.5, 1, 1.5, 2, 2.5, 3, 0.7, 1.2, 0.9, 2.2, 1.8, 0.4, 1.1, 1.3, 2.7, 0.6]"

static const gc_case gc_cases[] = {
    {"mse", "{\"loss\": \"mse\"}", BINARY, 0, 0},
    {"mse_weight_soft", "{\"loss\": \"mse\"}", SOFT, 1, 0},
    {"mse_sum", "{\"loss\": \"mse\", \"reduction\": \"sum\"}", SOFT, 0, 0},
    {"mse_none", "{\"loss\": \"mse\", \"reduction\": \"none\"}", SOFT, 1, 1},
    {"l1", "{\"loss\": \"l1\"}", SOFT, 0, 0},
    {"l1_weight_sum", "{\"loss\": \"l1\", \"reduction\": \"sum\"}", BINARY, 1, 0},
    {"bce", "{\"loss\": \"bce_with_logits\"}", BINARY, 0, 0},
    {"bce_soft", "{\"loss\": \"bce_with_logits\"}", SOFT, 0, 0},
    {"bce_pos_weight", "{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": " PW16 "}}",
     MIXED, 1, 0},
    {"bce_pos_weight1",
     "{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [2.5]}, \"reduction\": \"sum\"}",
     BINARY, 1, 0},
    {"bce_none",
     "{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": " PW16 "}, "
     "\"reduction\": \"none\"}",
     SOFT, 0, 1},
    {"dice", "{\"loss\": \"dice\"}", BINARY, 0, 0},
    {"dice_soft", "{\"loss\": \"dice\", \"params\": {\"smooth\": 0.5}}", SOFT, 0, 0},
    {"dice_smooth0", "{\"loss\": \"dice\", \"params\": {\"smooth\": 0}}", BINARY, 0, 0},
    {"dice_bce", "{\"loss\": \"dice_bce\"}", BINARY, 0, 0},
    {"dice_bce_soft_smooth0", "{\"loss\": \"dice_bce\", \"params\": {\"smooth\": 0}}", SOFT, 0, 0},
    {"iou", "{\"loss\": \"iou\"}", BINARY, 0, 0},
    {"iou_soft", "{\"loss\": \"iou\", \"params\": {\"smooth\": 2}}", SOFT, 0, 0},
    {"iou_smooth0", "{\"loss\": \"iou\", \"params\": {\"smooth\": 0}}", BINARY, 0, 0},
    {"focal_g0.5", "{\"loss\": \"focal\", \"params\": {\"gamma\": 0.5}}", BINARY, 0, 0},
    {"focal_g1", "{\"loss\": \"focal\", \"params\": {\"gamma\": 1}}", BINARY, 0, 0},
    {"focal_g2", "{\"loss\": \"focal\", \"params\": {\"gamma\": 2}}", BINARY, 0, 0},
    {"focal_g3", "{\"loss\": \"focal\", \"params\": {\"gamma\": 3}}", BINARY, 0, 0},
    {"focal_g0.5_soft", "{\"loss\": \"focal\", \"params\": {\"gamma\": 0.5}}", SOFT, 0, 0},
    {"focal_g1_mixed", "{\"loss\": \"focal\", \"params\": {\"gamma\": 1}}", MIXED, 0, 0},
    {"focal_g2_mixed", "{\"loss\": \"focal\", \"params\": {\"gamma\": 2}}", MIXED, 0, 0},
    {"focal_g3_soft", "{\"loss\": \"focal\", \"params\": {\"gamma\": 3}}", SOFT, 0, 0},
    {"focal_alpha_neg", "{\"loss\": \"focal\", \"params\": {\"alpha\": -1, \"gamma\": 1.5}}", MIXED,
     0, 0},
    {"focal_g0_a0",
     "{\"loss\": \"focal\", \"params\": {\"alpha\": 0, \"gamma\": 0}, "
     "\"reduction\": \"sum\"}",
     MIXED, 0, 0},
    {"focal_none_g0.5",
     "{\"loss\": \"focal\", \"params\": {\"alpha\": 0.6, \"gamma\": 0.5}, \"reduction\": \"none\"}",
     MIXED, 0, 1},
    {"focal_mean_bce", "{\"loss\": \"focal_mean_bce\"}", BINARY, 0, 0},
    {"focal_mean_bce_g0.5",
     "{\"loss\": \"focal_mean_bce\", \"params\": {\"alpha\": 0.3, \"gamma\": 0.5}}", SOFT, 0, 0},
    {"focal_mean_bce_g0", "{\"loss\": \"focal_mean_bce\", \"params\": {\"gamma\": 0}}", MIXED, 0,
     0},
    {"terms_bce_dice",
     "{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 0.3}, "
     "{\"loss\": \"dice\", \"weight\": 0.7, \"params\": {\"smooth\": 1}}]}",
     SOFT, 0, 0},
};

/* Criterion may run each case in a fresh process where addresses differ,
 * so the parameter is an index into gc_cases, not a pointer-bearing struct. */
typedef struct gc_param {
    int index;
} gc_param;

#define N_GC (sizeof gc_cases / sizeof gc_cases[0])
static gc_param gc_params[N_GC];

ParameterizedTestParameters(gradcheck, fd)
{
    for (size_t i = 0; i < N_GC; i++)
        gc_params[i].index = (int)i;
    return cr_make_param_array(gc_param, gc_params, N_GC);
}

static void fill_problem(problem *p, double *x, double *t, double *w, const gc_case *c)
{
    p->ndim = 2;
    p->shape[0] = N_MAX / 16;
    p->shape[1] = 16;
    p->dtype = LK_DTYPE_F64;
    for (int i = 0; i < N_MAX; i++) {
        int binary = c->targets == BINARY || (c->targets == MIXED && i % 2 == 0);
        t[i] = binary ? (uniform() < 0.4 ? 1.0 : 0.0) : 0.05 + 0.9 * uniform();
        do /* keep l1 away from its kink */
            x[i] = normal(2.0);
        while (fabs(x[i] - t[i]) < 1e-3);
        w[i] = 2.0 * uniform();
    }
    p->x = x;
    p->t = t;
    p->w = c->weighted ? w : NULL;
}

/* The value (or, for reduction none, output element i) at x with x[i] moved
 * by dx. */
static double probe(const lk_loss *loss, problem *p, int i, double dx, int none)
{
    double *x = p->x, saved = x[i], out[N_MAX];
    x[i] = saved + dx;
    double v = eval_ok(loss, p, NULL, none ? out : NULL);
    x[i] = saved;
    return none ? out[i] : v;
}

ParameterizedTest(gc_param *param, gradcheck, fd)
{
    const gc_case *c = &gc_cases[param->index];
    double x[N_MAX], t[N_MAX], w[N_MAX], grad[N_MAX], out[N_MAX];
    problem p;
    rng_state = 12345u + (uint64_t)strlen(c->name) * 7919u;
    fill_problem(&p, x, t, w, c);
    lk_runtime *rt = open_runtime(0);
    lk_loss *loss = make_loss(rt, c->config);
    double v = eval_ok(loss, &p, grad, c->none ? out : NULL);
    cr_assert(c->none || isfinite(v), "%s: value %g", c->name, v);
    for (int i = 0; i < N_MAX; i++) {
        double fd =
            (probe(loss, &p, i, FD_H, c->none) - probe(loss, &p, i, -FD_H, c->none)) / (2.0 * FD_H);
        cr_expect(fabs(grad[i] - fd) <= 1e-6 * fabs(fd) + 1e-8,
                  "%s: grad[%d] = %.12g, finite difference %.12g (x %.6g, t %.6g)", c->name, i,
                  grad[i], fd, x[i], t[i]);
    }
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

/* ------------------------------------------------------------------------ */
/* +-inf logits                                                              */

/* Evaluates reduction none on n elements and checks out and grad against
 * the expected values exactly (up to 1e-15 relative for finite ones). */
static void check_none(const char *config, int n, const double *x, const double *t, const double *w,
                       const double *want_out, const double *want_grad)
{
    double out[16], grad[16];
    problem p = {1, {n}, LK_DTYPE_F64, (void *)x, (double *)t, (double *)w};
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, config);
    eval_ok(loss, &p, grad, out);
    for (int i = 0; i < n; i++) {
        cr_expect(!isnan(out[i]) && !isnan(grad[i]), "%s [%d]: NaN", config, i);
        int same = isinf(want_out[i]) ? out[i] == want_out[i]
                                      : fabs(out[i] - want_out[i]) <= 1e-15 * fabs(want_out[i]);
        cr_expect(same, "%s: out[%d] = %.17g, documented %.17g (x %g, t %g)", config, i, out[i],
                  want_out[i], x[i], t[i]);
        cr_expect(isfinite(grad[i]), "%s: grad[%d] = %g is not finite", config, i, grad[i]);
        cr_expect(fabs(grad[i] - want_grad[i]) <= 1e-15 * fabs(want_grad[i]) + 1e-300,
                  "%s: grad[%d] = %.17g, documented %.17g (x %g, t %g)", config, i, grad[i],
                  want_grad[i], x[i], t[i]);
    }
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

static double sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

Test(edge, bce_inf_logits)
{
    const double inf = HUGE_VAL;
    const double x[] = {inf, -inf, inf, -inf, inf, -inf, 0.0, 1.0};
    const double t[] = {1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.5, 1.0};
    const double out[] = {0.0, 0.0, inf, inf, inf, inf, log(2.0), log1p(exp(-1.0))};
    const double grad[] = {0.0, 0.0, 1.0, -1.0, 0.7, -0.3, 0.0, sigmoid(1.0) - 1.0};
    check_none("{\"loss\": \"bce_with_logits\", \"reduction\": \"none\"}", 8, x, t, NULL, out,
               grad);
}

/* A zero weight drops an infinite element; pos_weight 0 drops a positive
 * one; the gradient lw sigmoid(x) - pw t stays finite. */
Test(edge, bce_inf_logits_weighted)
{
    const double inf = HUGE_VAL;
    const double x[] = {inf, -inf, -inf, inf};
    const double t[] = {0.0, 1.0, 1.0, 1.0};
    const double w[] = {0.0, 0.0, 1.0, 2.0};
    const double out[] = {0.0, 0.0, 0.0, 0.0};
    const double grad[] = {0.0, 0.0, 0.0, 0.0};
    check_none("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [0]}, "
               "\"reduction\": \"none\"}",
               4, x, t, w, out, grad);
}

/* Binary targets: 0 when the logit agrees, +inf when it contradicts (0 if
 * alpha_t = 0), with gradient -(2t - 1) alpha_t; soft targets: +inf with
 * gradient alpha_t (p - t) q^gamma, q = 1 - p_t. */
static void focal_inf(double alpha, double gamma, int n)
{
    const double inf = HUGE_VAL;
    const double x[] = {inf, -inf, inf, -inf, inf, -inf};
    const double t[] = {1.0, 0.0, 0.0, 1.0, 0.3, 0.7};
    double at[6], grad[6], out[6] = {0.0, 0.0};
    for (int i = 0; i < 6; i++)
        at[i] = alpha < 0.0 ? 1.0 : alpha * t[i] + (1.0 - alpha) * (1.0 - t[i]);
    for (int i = 2; i < 6; i++) /* a zero alpha_t makes even +inf count 0 */
        out[i] = at[i] == 0.0 ? 0.0 : inf;
    grad[0] = grad[1] = 0.0;
    grad[2] = at[2];
    grad[3] = -at[3];
    grad[4] = at[4] * (1.0 - 0.3) * pow(0.7, gamma);
    grad[5] = at[5] * (0.0 - 0.7) * pow(0.7, gamma);
    char config[160];
    snprintf(config, sizeof config,
             "{\"loss\": \"focal\", \"params\": {\"alpha\": %g, \"gamma\": %g}, "
             "\"reduction\": \"none\"}",
             alpha, gamma);
    check_none(config, n, x, t, NULL, out, grad);
}

/* n = 6: binary and soft targets in one vector; n = 4: binary targets
 * only, the kernels' path for vectors of 0s and 1s (alpha 0 and 1 make
 * alpha_t 0 for one target there). */
Test(edge, focal_inf_logits)
{
    const double gammas[] = {0.0, 0.5, 1.0, 2.0, 3.0};
    const double alphas[] = {0.25, -1.0, 0.0, 1.0};
    for (int a = 0; a < 4; a++)
        for (int g = 0; g < 5; g++) {
            focal_inf(alphas[a], gammas[g], 6);
            focal_inf(alphas[a], gammas[g], 4);
        }
}

/* The overlap losses and focal_mean_bce take +-inf logits too: finite (or
 * +inf for a contradicted BCE) values and finite gradients, never NaN. */
Test(edge, overlap_inf_logits)
{
    const char *configs[] = {"{\"loss\": \"dice\"}",
                             "{\"loss\": \"iou\"}",
                             "{\"loss\": \"dice\", \"params\": {\"smooth\": 0}}",
                             "{\"loss\": \"dice_bce\"}",
                             "{\"loss\": \"focal_mean_bce\"}",
                             "{\"loss\": \"focal_mean_bce\", \"params\": {\"gamma\": 0.5}}"};
    const double inf = HUGE_VAL;
    double x[] = {inf, -inf, 2.0, -1.0, inf};
    double t[] = {1.0, 0.0, 1.0, 0.0, 0.0};
    for (int agree = 1; agree >= 0; agree--) {
        problem p = {1, {agree ? 4 : 5}, LK_DTYPE_F64, x, t, NULL};
        for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
            double grad[5];
            lk_runtime *rt = open_runtime(1);
            lk_loss *loss = make_loss(rt, configs[c]);
            double v = eval_ok(loss, &p, grad, NULL);
            int has_bce = strstr(configs[c], "bce") != NULL;
            cr_expect(agree || !has_bce ? isfinite(v) : v == inf, "%s (agree %d): value %g",
                      configs[c], agree, v);
            for (int i = 0; i < p.shape[0]; i++)
                cr_expect(isfinite(grad[i]), "%s: grad[%d] = %g", configs[c], i, grad[i]);
            lk_loss_free(loss);
            lk_runtime_close(rt);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Zero-size tensors                                                         */

typedef struct empty_case {
    const char *config;
    double value; /* a mean over nothing is 0, never NaN (docs/design.md) */
} empty_case;

Test(edge, zero_size)
{
    const empty_case cases[] = {
        {"{\"loss\": \"mse\"}", 0.0},
        {"{\"loss\": \"mse\", \"reduction\": \"sum\"}", 0.0},
        {"{\"loss\": \"l1\"}", 0.0},
        {"{\"loss\": \"l1\", \"reduction\": \"sum\"}", 0.0},
        {"{\"loss\": \"bce_with_logits\"}", 0.0},
        {"{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": " PW16 "}, "
         "\"reduction\": \"sum\"}",
         0.0},
        {"{\"loss\": \"focal\"}", 0.0},
        {"{\"loss\": \"focal\", \"reduction\": \"sum\"}", 0.0},
        {"{\"loss\": \"dice\"}", 0.0},
        {"{\"loss\": \"dice\", \"params\": {\"smooth\": 0}}", 1.0},
        {"{\"loss\": \"iou\"}", 0.0},
        {"{\"loss\": \"iou\", \"params\": {\"smooth\": 0}}", 1.0},
        {"{\"loss\": \"dice_bce\"}", 0.0},
        {"{\"loss\": \"focal_mean_bce\"}", 0.0},
    };
    static double dummy[1];
    problem p = {3, {2, 0, 16}, LK_DTYPE_F64, dummy, dummy, NULL};
    lk_runtime *rt = open_runtime(0);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        lk_loss *loss = make_loss(rt, cases[c].config);
        double v = eval_ok(loss, &p, dummy, NULL);
        if (isnan(cases[c].value))
            cr_expect(isnan(v), "%s on an empty tensor: %g, documented NaN", cases[c].config, v);
        else
            cr_expect_eq(v, cases[c].value, "%s on an empty tensor: %g, documented %g",
                         cases[c].config, v, cases[c].value);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
}

Test(edge, zero_size_none)
{
    static double dummy[1];
    problem p = {1, {0}, LK_DTYPE_F64, dummy, dummy, NULL};
    const char *ids[] = {"mse", "l1", "bce_with_logits", "focal"};
    lk_runtime *rt = open_runtime(0);
    for (int i = 0; i < 4; i++) {
        char config[96];
        snprintf(config, sizeof config, "{\"loss\": \"%s\", \"reduction\": \"none\"}", ids[i]);
        lk_loss *loss = make_loss(rt, config);
        eval_ok(loss, &p, dummy, dummy);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
}

/* ------------------------------------------------------------------------ */
/* Empty masks with smooth 0                                                 */

/* p = 0 exactly and t = 0: the ratio 0 / max(0, eps) is 0, so the loss is
 * 1 (the formula as is: empty "score"), with a zero gradient. */
Test(edge, smooth0_empty_masks)
{
    double x[8], t[8] = {0}, grad[8];
    for (int i = 0; i < 8; i++)
        x[i] = -HUGE_VAL;
    problem p = {1, {8}, LK_DTYPE_F64, x, t, NULL};
    lk_runtime *rt = open_runtime(1);
    const char *configs[] = {"{\"loss\": \"dice\", \"params\": {\"smooth\": 0}}",
                             "{\"loss\": \"iou\", \"params\": {\"smooth\": 0}}"};
    for (int c = 0; c < 2; c++) {
        lk_loss *loss = make_loss(rt, configs[c]);
        double v = eval_ok(loss, &p, grad, NULL);
        cr_expect_eq(v, 1.0, "%s with p = t = 0: %g, documented 1", configs[c], v);
        for (int i = 0; i < 8; i++)
            cr_expect_eq(grad[i], 0.0, "%s: grad[%d] = %g", configs[c], i, grad[i]);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
}

/* False positives on an empty target do not vanish: any p > 0 gives 1. */
Test(edge, smooth0_false_positives)
{
    double x[8], t[8] = {0}, grad[8];
    for (int i = 0; i < 8; i++)
        x[i] = -40.0;
    problem p = {1, {8}, LK_DTYPE_F64, x, t, NULL};
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, "{\"loss\": \"dice\", \"params\": {\"smooth\": 0}}");
    double v = eval_ok(loss, &p, grad, NULL);
    cr_expect_eq(v, 1.0, "dice, smooth 0, empty target, p = 4e-18: %g", v);
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

/* ------------------------------------------------------------------------ */
/* Refusals                                                                  */

static void expect_refusal(const char *config, const problem *p, lk_status want, const char *needle)
{
    char err[LK_ERRMSG_CAP] = "";
    double v;
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, config);
    lk_status st = eval(loss, p, NULL, NULL, &v, err);
    cr_expect_eq(st, want, "%s: status %s, expected %s (%s)", config, lk_status_name(st),
                 lk_status_name(want), err);
    cr_expect_not_null(strstr(err, needle), "%s: message '%s' lacks '%s'", config, err, needle);
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

Test(edge, target_outside_unit_interval)
{
    double x[4] = {0.1, 0.2, 0.3, 0.4}, t[4] = {0.0, 1.0, 1.5, 0.0};
    problem p = {1, {4}, LK_DTYPE_F64, x, t, NULL};
    const char *ids[] = {"bce_with_logits", "focal",          "dice",      "iou",
                         "dice_bce",        "focal_mean_bce", "asymmetric"};
    for (int i = 0; i < 7; i++) {
        char config[64];
        snprintf(config, sizeof config, "{\"loss\": \"%s\"}", ids[i]);
        expect_refusal(config, &p, LK_ERR_INVALID, "target[2] = 1.5 is outside [0, 1]");
    }
    /* mse and l1 are regressions: any target goes. */
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, "{\"loss\": \"mse\"}");
    double v = eval_ok(loss, &p, NULL, NULL);
    cr_expect(fabs(v - (0.01 + 0.64 + 1.44 + 0.16) / 4.0) < 1e-15, "mse: %g", v);
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

Test(edge, pos_weight_length)
{
    double x[32] = {0}, t[32] = {0};
    problem p = {2, {2, 16}, LK_DTYPE_F64, x, t, NULL};
    expect_refusal("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [1, 2, 3]}}", &p,
                   LK_ERR_SHAPE, "pos_weight has 3 values but the input's last dimension is 16");
}

/* ------------------------------------------------------------------------ */
/* Many blocks, threads, float32                                             */

#define BIG_ROWS 7031
#define BIG_COLS 7
#define BIG_N    (BIG_ROWS * BIG_COLS) /* 49217: four blocks, rows cut across */

static double bce_direct(double x, double t, double pw)
{
    double lw = 1.0 + (pw - 1.0) * t;
    return (1.0 - t) * x + lw * (x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x)));
}

Test(edge, many_blocks_match_direct)
{
    static double x[BIG_N], t[BIG_N], g1[BIG_N], g4[BIG_N];
    const double pw[BIG_COLS] = {0.5, 1.0, 2.0, 3.0, 0.25, 1.5, 4.0};
    rng_state = 99;
    double sum = 0.0, i_pt = 0.0, s_p = 0.0, s_t = 0.0;
    for (int i = 0; i < BIG_N; i++) {
        x[i] = normal(2.0);
        t[i] = uniform() < 0.3 ? 1.0 : 0.0;
        sum += bce_direct(x[i], t[i], pw[i % BIG_COLS]);
        double pi = sigmoid(x[i]);
        i_pt += pi * t[i];
        s_p += pi;
        s_t += t[i];
    }
    problem p = {2, {BIG_ROWS, BIG_COLS}, LK_DTYPE_F64, x, t, NULL};
    const char *bce = "{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": "
                      "[0.5, 1, 2, 3, 0.25, 1.5, 4]}, \"reduction\": \"sum\"}";
    lk_runtime *rt1 = open_runtime(1), *rt4 = open_runtime(4);
    lk_loss *l1 = make_loss(rt1, bce), *l4 = make_loss(rt4, bce);
    double v1 = eval_ok(l1, &p, g1, NULL), v4 = eval_ok(l4, &p, g4, NULL);
    cr_expect(fabs(v1 - sum) <= 1e-12 * sum, "bce sum %.17g, direct %.17g", v1, sum);
    cr_expect_eq(v1, v4, "1 thread %.17g, 4 threads %.17g", v1, v4);
    for (int i = 0; i < BIG_N; i++) {
        double lw = 1.0 + (pw[i % BIG_COLS] - 1.0) * t[i];
        double want = lw * sigmoid(x[i]) - pw[i % BIG_COLS] * t[i];
        cr_assert(fabs(g1[i] - want) <= 1e-13 * fabs(want) + 1e-15, "grad[%d] %.17g, direct %.17g",
                  i, g1[i], want);
        cr_assert_eq(g1[i], g4[i], "grad[%d] differs between thread counts", i);
    }
    lk_loss_free(l1);
    lk_loss_free(l4);

    l1 = make_loss(rt1, "{\"loss\": \"dice\"}");
    l4 = make_loss(rt4, "{\"loss\": \"dice\"}");
    double want = 1.0 - (2.0 * i_pt + 1.0) / (s_p + s_t + 1.0);
    v1 = eval_ok(l1, &p, g1, NULL);
    v4 = eval_ok(l4, &p, g4, NULL);
    cr_expect(fabs(v1 - want) <= 1e-12, "dice %.17g, direct %.17g", v1, want);
    cr_expect_eq(v1, v4, "dice: 1 thread %.17g, 4 threads %.17g", v1, v4);
    cr_expect_eq(memcmp(g1, g4, sizeof g1), 0, "dice gradients differ between thread counts");
    lk_loss_free(l1);
    lk_loss_free(l4);
    lk_runtime_close(rt1);
    lk_runtime_close(rt4);
}

/* A float32 input is read exactly as its float64 upcast: same value, and
 * the same gradient rounded to float32. */
Test(edge, float32_equals_float64_upcast)
{
    float xf[N_MAX], gf[N_MAX];
    double x[N_MAX], t[N_MAX], g[N_MAX];
    rng_state = 7;
    for (int i = 0; i < N_MAX; i++) {
        xf[i] = (float)normal(2.0);
        x[i] = (double)xf[i];
        t[i] = i % 3 == 0 ? 0.25 : (double)(i % 2);
    }
    const char *ids[] = {"mse",      "l1",  "bce_with_logits", "dice",
                         "dice_bce", "iou", "focal",           "focal_mean_bce"};
    lk_runtime *rt = open_runtime(0);
    for (int k = 0; k < 8; k++) {
        char config[64];
        snprintf(config, sizeof config, "{\"loss\": \"%s\"}", ids[k]);
        lk_loss *loss = make_loss(rt, config);
        problem p64 = {1, {N_MAX}, LK_DTYPE_F64, x, t, NULL};
        problem p32 = {1, {N_MAX}, LK_DTYPE_F32, xf, t, NULL};
        double v64 = eval_ok(loss, &p64, g, NULL), v32 = eval_ok(loss, &p32, gf, NULL);
        cr_expect_eq(v32, v64, "%s: float32 %.17g, float64 %.17g", ids[k], v32, v64);
        for (int i = 0; i < N_MAX; i++)
            cr_expect_eq(gf[i], (float)g[i], "%s: grad[%d] float32 %.9g, float64 %.17g", ids[k], i,
                         (double)gf[i], g[i]);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
}

/* Input and target both float32 run in float32 lanes where the loss calls
 * exp (every loss here but mse and l1; the test above, with a float64
 * target, stays in double lanes): the value within 1e-6 relative of the
 * float64 run on the upcast data (a few float32 ulps per term, sums in
 * double), each gradient element within 1e-6 relative or 1e-7 of the
 * largest. */
Test(edge, float32_data_close_to_float64_upcast)
{
    float xf[N_MAX], tf[N_MAX], gf[N_MAX];
    double x[N_MAX], t[N_MAX], g[N_MAX];
    rng_state = 7;
    for (int i = 0; i < N_MAX; i++) {
        xf[i] = (float)normal(2.0);
        x[i] = (double)xf[i];
        t[i] = i % 3 == 0 ? 0.25 : (double)(i % 2);
        tf[i] = (float)t[i];
    }
    const char *ids[] = {"mse",      "l1",  "bce_with_logits", "dice",
                         "dice_bce", "iou", "focal",           "focal_mean_bce"};
    lk_runtime *rt = open_runtime(0);
    int64_t shape[1] = {N_MAX};
    for (int k = 0; k < 8; k++) {
        char config[64];
        snprintf(config, sizeof config, "{\"loss\": \"%s\"}", ids[k]);
        lk_loss *loss = make_loss(rt, config);
        problem p64 = {1, {N_MAX}, LK_DTYPE_F64, x, t, NULL};
        double v64 = eval_ok(loss, &p64, g, NULL), gmax = 0.0;
        for (int i = 0; i < N_MAX; i++)
            gmax = fmax(gmax, fabs(g[i]));
        lk_named_tensor in[2] = {
            {.name = "input", .tensor = {xf, LK_DTYPE_F32, 1, shape, NULL}},
            {.name = "target", .tensor = {tf, LK_DTYPE_F32, 1, shape, NULL}},
        };
        lk_named_tensor gt = {.name = "input", .tensor = {gf, LK_DTYPE_F32, 1, shape, NULL}};
        lk_eval_args args;
        lk_eval_args_init(&args);
        args.tensors = in;
        args.n_tensors = 2;
        args.grads = &gt;
        args.n_grads = 1;
        double v32 = NAN;
        cr_assert_eq(lk_loss_eval(loss, &args, &v32), LK_OK, "%s: %s", ids[k], args.errmsg);
        cr_expect(fabs(v32 - v64) <= 1e-6 * fabs(v64), "%s: all float32 %.17g, float64 %.17g",
                  ids[k], v32, v64);
        for (int i = 0; i < N_MAX; i++)
            cr_expect(fabs(gf[i] - g[i]) <= 1e-6 * fabs(g[i]) + 1e-7 * gmax,
                      "%s: grad[%d] all float32 %.9g, float64 %.17g", ids[k], i, (double)gf[i],
                      g[i]);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
}

/* ------------------------------------------------------------------------ */
/* Margin losses at the edges of their parameters and labels                 */

/* One call of an elementwise margin loss on n <= MG_CAP elements: slots
 * names[0..n_slots) read data[s] (rounded to float32 with f32, every slot
 * of one dtype, so that float32 runs in float lanes), the first n_diff
 * slots' gradients go to grads[s], reduction none's losses to out (NULL:
 * not asked). Returns the status; the message in err. */
enum { MG_CAP = 24 };

static lk_status mg_eval(const char *config, int path, int f32, int n, int n_slots,
                         const char *const *names, const double *const *data, int n_diff,
                         double *out, double *const *grads, double *value, char *err)
{
    cr_assert(n <= MG_CAP && n_slots <= 3 && n_diff <= n_slots);
    int64_t shape[1] = {n};
    int32_t dt = f32 ? LK_DTYPE_F32 : LK_DTYPE_F64;
    double dd[3][MG_CAP], gd[3][MG_CAP], od[MG_CAP];
    float df[3][MG_CAP], gf[3][MG_CAP], of[MG_CAP];
    lk_named_tensor in[3], g[3];
    for (int s = 0; s < n_slots; s++) {
        for (int i = 0; i < n; i++)
            dd[s][i] = data[s][i], df[s][i] = (float)data[s][i];
        in[s] =
            (lk_named_tensor){names[s], {f32 ? (void *)df[s] : dd[s], dt, 1, shape, NULL}, NULL};
        g[s] = (lk_named_tensor){names[s], {f32 ? (void *)gf[s] : gd[s], dt, 1, shape, NULL}, NULL};
    }
    lk_tensor o = {f32 ? (void *)of : od, dt, 1, shape, NULL};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in, args.n_tensors = (size_t)n_slots;
    args.grads = g, args.n_grads = (size_t)n_diff;
    args.out = out ? &o : NULL;
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss_on(rt, config, path);
    *value = NAN;
    lk_status st = lk_loss_eval(loss, &args, value);
    snprintf(err, LK_ERRMSG_CAP, "%s", args.errmsg);
    for (int i = 0; st == LK_OK && i < n; i++) {
        if (out)
            out[i] = f32 ? of[i] : od[i];
        for (int s = 0; s < n_diff; s++)
            grads[s][i] = f32 ? gf[s][i] : gd[s][i];
    }
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return st;
}

/* v rounded as the dtype holds it. */
static double mg_round(int f32, double v)
{
    return f32 ? (double)(float)v : v;
}

/* got equals want: the same value (both NaN included), or within rel. */
static int mg_same(double got, double want, double rel)
{
    return got == want || (isnan(got) && isnan(want)) || fabs(got - want) <= rel * fabs(want);
}

/* hinge_embedding and margin_ranking with a margin beyond float32's range
 * (the parameter takes any real): float32 data gives the exact formula's
 * value rounded to float32, +inf or a finite value or 0, never NaN, with
 * the gradients of the formula; float64 data the formula itself. Every
 * path, reduction none and sum. */
Test(edge, margin_beyond_float_range)
{
    static const double margins[] = {1e39, -1e39, 1e300, -1e308, 4e38, -4e38, 6e38, -6e38};
    static const double hx[] = {0.0,  2.0,      -3e38,     3e38,   1.5,     -1.0,
                                3e38, HUGE_VAL, -HUGE_VAL, 3.4e38, -3.4e38, 7.0};
    static const double ht[] = {-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0};
    static const double ra[] = {0.0, 2.0,       3e38, -3e38,   3.4e38, HUGE_VAL,
                                0.0, -HUGE_VAL, 1.5,  -3.4e38, 1.5e38, -2.0};
    static const double rb[] = {2.0,      0.0, -1.5e38, 1.5e38, -3.4e38, 0.0,
                                HUGE_VAL, 5.0, -2.0,    3.4e38, -3e38,   1e38};
    static const double rt[] = {1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0};
    enum { N = 12 };
    for (size_t m = 0; m < sizeof margins / sizeof margins[0]; m++)
        for (int f32 = 0; f32 <= 1; f32++)
            for (int path = 0; path < N_PATHS; path++)
                for (int red = 0; red < 2; red++) {
                    const double M = margins[m], rel = f32 ? 1e-6 : 1e-15;
                    char config[160], err[LK_ERRMSG_CAP];
                    double out[N], gx[N], g1[N], g2[N], v, sum = 0.0;
                    /* hinge_embedding: x for 1, max(0, M - x) for -1 */
                    snprintf(config, sizeof config,
                             "{\"loss\": \"hinge_embedding\", \"params\": {\"margin\": %.17g}, "
                             "\"reduction\": \"%s\"}",
                             M, red ? "sum" : "none");
                    const char *hn[2] = {"input", "target"};
                    const double *hd[2] = {hx, ht};
                    double *hg[1] = {gx};
                    lk_status st =
                        mg_eval(config, path, f32, N, 2, hn, hd, 1, red ? NULL : out, hg, &v, err);
                    cr_assert_eq(st, LK_OK, "%s %s f32 %d: %s", config, path_names[path], f32, err);
                    for (int i = 0; i < N; i++) {
                        double x = mg_round(f32, hx[i]), u = M - x;
                        double wl = mg_round(f32, ht[i] == 1.0 ? x : u > 0.0 ? u : 0.0);
                        double wg = ht[i] == 1.0 ? 1.0 : u >= 0.0 ? -1.0 : 0.0;
                        sum += wl;
                        if (!red)
                            cr_expect(mg_same(out[i], wl, rel),
                                      "%s %s f32 %d: out[%d] = %g, want %g", config,
                                      path_names[path], f32, i, out[i], wl);
                        cr_expect_eq(gx[i], wg, "%s %s f32 %d: grad[%d] = %g, want %g", config,
                                     path_names[path], f32, i, gx[i], wg);
                    }
                    if (red)
                        cr_expect(mg_same(v, sum, 1e-12), "%s %s f32 %d: sum %g, want %g", config,
                                  path_names[path], f32, v, sum);
                    /* margin_ranking: max(0, -t (x1 - x2) + M) */
                    snprintf(config, sizeof config,
                             "{\"loss\": \"margin_ranking\", \"params\": {\"margin\": %.17g}, "
                             "\"reduction\": \"%s\"}",
                             M, red ? "sum" : "none");
                    const char *rn[3] = {"input1", "input2", "target"};
                    const double *rd[3] = {ra, rb, rt};
                    double *rg[2] = {g1, g2};
                    st = mg_eval(config, path, f32, N, 3, rn, rd, 2, red ? NULL : out, rg, &v, err);
                    cr_assert_eq(st, LK_OK, "%s %s f32 %d: %s", config, path_names[path], f32, err);
                    sum = 0.0;
                    for (int i = 0; i < N; i++) {
                        double h = -rt[i] * (mg_round(f32, ra[i]) - mg_round(f32, rb[i])) + M;
                        double wl = mg_round(f32, h > 0.0 ? h : 0.0);
                        double wg = h >= 0.0 ? -rt[i] : 0.0;
                        sum += wl;
                        if (!red)
                            cr_expect(mg_same(out[i], wl, rel),
                                      "%s %s f32 %d: out[%d] = %g, want %g", config,
                                      path_names[path], f32, i, out[i], wl);
                        cr_expect(g1[i] == wg && g2[i] == -wg,
                                  "%s %s f32 %d: grads[%d] = %g, %g, want %g, %g", config,
                                  path_names[path], f32, i, g1[i], g2[i], wg, -wg);
                    }
                    if (red)
                        cr_expect(mg_same(v, sum, 1e-12), "%s %s f32 %d: sum %g, want %g", config,
                                  path_names[path], f32, v, sum);
                }
}

/* hinge_embedding refuses an input of -inf under mean and sum unless its
 * label is -1, and says what that element's loss is: -inf for a label 1,
 * NaN for any other (both terms apply: max(0, margin + inf) - inf), the
 * value reduction none gives. Float32 and float64, every path. */
Test(edge, hinge_embedding_neginf_refusal_names_the_loss)
{
    static const double labels[] = {0.0, 2.0, 0.5, NAN, 1.0};
    static const char *const shown[] = {
        "target 0:", "target 2:", "target 0.5:", "target NaN:", "target 1:"};
    const char *names[2] = {"input", "target"};
    for (size_t k = 0; k < sizeof labels / sizeof labels[0]; k++)
        for (int f32 = 0; f32 <= 1; f32++)
            for (int path = 0; path < N_PATHS; path++) {
                const double x[2] = {-HUGE_VAL, 0.5}, t[2] = {labels[k], -1.0};
                const double *data[2] = {x, t};
                double out[2], g[2], v;
                double *grads[1] = {g};
                char err[LK_ERRMSG_CAP];
                const int one = labels[k] == 1.0;
                lk_status st = mg_eval("{\"loss\": \"hinge_embedding\", \"reduction\": \"none\"}",
                                       path, f32, 2, 2, names, data, 1, out, grads, &v, err);
                cr_assert_eq(st, LK_OK, "label %g %s f32 %d: %s", labels[k], path_names[path], f32,
                             err);
                cr_expect(one ? out[0] == -HUGE_VAL : isnan(out[0]),
                          "label %g %s f32 %d: none gives %g", labels[k], path_names[path], f32,
                          out[0]);
                st = mg_eval("{\"loss\": \"hinge_embedding\"}", path, f32, 2, 2, names, data, 0,
                             NULL, NULL, &v, err);
                cr_expect_eq(st, LK_ERR_NUMERIC, "label %g %s f32 %d: %s (%s)", labels[k],
                             path_names[path], f32, lk_status_name(st), err);
                const char *want = one ? "a loss of -inf" : "a loss of NaN";
                cr_expect(strstr(err, want) && strstr(err, shown[k]),
                          "label %g %s f32 %d: '%s' lacks '%s' or '%s'", labels[k],
                          path_names[path], f32, err, want, shown[k]);
            }
}

/* margin_ranking with an infinite target and a margin: -t (x1 - x2) is
 * infinite wherever x1 != x2, so the loss is +inf (the hinge open, its
 * gradients -t and t) or 0 (closed) as torch's formula gives, whatever
 * the margin and whatever rounding error x1 - x2 carries; x1 = x2 gives
 * inf 0 = NaN, as in torch. A finite target so large that both -t (x1 -
 * x2) and -t times its rounding error overflow likewise. Float32 and
 * float64, every path. */
Test(edge, margin_ranking_infinite_target)
{
    static const double margins[] = {0.5, -2.0, 1.3, 0.0};
    enum { N = 14 };
    static const double a[N] = {0.0,  0.0,  2.0, 1.0, 3.0, -HUGE_VAL, 1.0,
                                1e60, 1e60, 0.0, 0.0, 2.0, 1.0,       -5.0};
    static const double b[N] = {1e-300, -HUGE_VAL, 1.0,   1e-20,     3.0, HUGE_VAL, -1e-20,
                                -1e40,  1e40,      1e-45, -HUGE_VAL, 1.0, 1e-20,    7.0};
    static const double t[N] = {HUGE_VAL,  HUGE_VAL,  HUGE_VAL,  HUGE_VAL, HUGE_VAL,
                                HUGE_VAL,  -HUGE_VAL, 1e308,     1e308,    HUGE_VAL,
                                -HUGE_VAL, -HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
    const char *names[3] = {"input1", "input2", "target"};
    const double *data[3] = {a, b, t};
    for (size_t m = 0; m < sizeof margins / sizeof margins[0]; m++)
        for (int f32 = 0; f32 <= 1; f32++)
            for (int path = 0; path < N_PATHS; path++) {
                char config[128], err[LK_ERRMSG_CAP];
                double out[N], g1[N], g2[N], v;
                double *grads[2] = {g1, g2};
                snprintf(config, sizeof config,
                         "{\"loss\": \"margin_ranking\", \"params\": {\"margin\": %g}, "
                         "\"reduction\": \"none\"}",
                         margins[m]);
                lk_status st =
                    mg_eval(config, path, f32, N, 3, names, data, 2, out, grads, &v, err);
                cr_assert_eq(st, LK_OK, "%s %s f32 %d: %s", config, path_names[path], f32, err);
                for (int i = 0; i < N; i++) {
                    double ti = mg_round(f32, t[i]);
                    double h = -ti * (mg_round(f32, a[i]) - mg_round(f32, b[i])) + margins[m];
                    double wl = isnan(h) ? NAN : h > 0.0 ? h : 0.0;
                    double wg = h >= 0.0 ? -ti : 0.0;
                    cr_expect(mg_same(out[i], wl, 0.0), "%s %s f32 %d: out[%d] = %g, want %g",
                              config, path_names[path], f32, i, out[i], wl);
                    cr_expect(g1[i] == wg && g2[i] == -wg,
                              "%s %s f32 %d: grads[%d] = %g, %g, want %g, %g", config,
                              path_names[path], f32, i, g1[i], g2[i], wg, -wg);
                }
            }
}

/* multilabel_soft_margin at an infinite target: torch's t log sigmoid(x) +
 * (1 - t) log sigmoid(-x) is inf - inf, so the row's value is NaN (the
 * stable form alone gave +-inf), and the gradient sigmoid(x) - t is -+inf
 * there, as torch's autograd; the other classes' gradients stay the
 * formula's. A finite soft target is unaffected. Every path, both dtypes. */
Test(edge, multilabel_soft_margin_infinite_target)
{
    enum { N = 3 };
    static const double x[N] = {0.5, -1.0, 2.0};
    static const double targets[3][N] = {
        {-HUGE_VAL, 1.0, 0.0}, {HUGE_VAL, 1.0, 0.0}, {0.25, 1.0, 0.0}};
    const char *names[2] = {"input", "target"};
    for (int k = 0; k < 3; k++)
        for (int f32 = 0; f32 <= 1; f32++)
            for (int path = 0; path < N_PATHS; path++) {
                char err[LK_ERRMSG_CAP];
                const double *data[2] = {x, targets[k]};
                double g[N], v;
                double *grads[1] = {g};
                lk_status st = mg_eval("{\"loss\": \"multilabel_soft_margin\", "
                                       "\"reduction\": \"sum\"}",
                                       path, f32, N, 2, names, data, 1, NULL, grads, &v, err);
                cr_assert_eq(st, LK_OK, "%s f32 %d: %s", path_names[path], f32, err);
                double want = 0.0;
                for (int i = 0; i < N; i++) {
                    double xi = mg_round(f32, x[i]), ti = mg_round(f32, targets[k][i]);
                    double sg = 1.0 / (1.0 + exp(-xi));
                    want += (ti * log1p(exp(-xi)) + (1.0 - ti) * log1p(exp(xi))) / N;
                    double wg = (sg - ti) / N;
                    cr_expect(isinf(wg) ? g[i] == wg : mg_same(g[i], wg, f32 ? 1e-6 : 1e-14),
                              "target %d %s f32 %d: grad[%d] = %g, want %g", k, path_names[path],
                              f32, i, g[i], wg);
                }
                if (k < 2)
                    cr_expect(isnan(v), "target %d %s f32 %d: value %g, want NaN", k,
                              path_names[path], f32, v);
                else
                    cr_expect(mg_same(v, want, f32 ? 1e-6 : 1e-14),
                              "%s f32 %d: value %.17g, want %.17g", path_names[path], f32, v, want);
            }
}

/* ||v||_p and d ||v||_p / dv_i (into g) in long double, through the
 * row's largest |v_i|, which keeps every power within [0, 1]. */
static long double tm_ref_norm(int n, const long double *v, long double p, long double *g)
{
    long double m = 0.0L, s = 0.0L;
    for (int i = 0; i < n; i++)
        m = fabsl(v[i]) > m ? fabsl(v[i]) : m;
    if (m == 0.0L) {
        for (int i = 0; i < n; i++)
            g[i] = 0.0L;
        return 0.0L;
    }
    for (int i = 0; i < n; i++)
        s += powl(fabsl(v[i]) / m, p);
    long double S = powl(s, 1.0L / p);
    for (int i = 0; i < n; i++)
        g[i] = v[i] == 0.0L ? 0.0L : copysignl(powl(fabsl(v[i]) / m / S, p - 1.0L), v[i]);
    return m * S;
}

/* triplet_margin at a p other than 1 and 2 where the sum of |v|^p leaves
 * the dtype (float32, p = 10, |v| = 1e4: 1e40; float64, p = 100, |v| =
 * 1e5) or underflows (p = 10, |v| = 1e-6 in float32), and at p = 1e10,
 * the max-norm: torch's sum gave inf - inf = NaN for the value (and
 * losskit's did), and the gradient's |v|^(p-1) / d^(p-1) inf / inf.
 * Against the norms in long double, every path. */
Test(edge, triplet_margin_general_p_beyond_the_sums_range)
{
    static const struct {
        int f32;
        double p, margin, a[3], q[3], n[3];
    } cases[] = {
        {1, 10.0, 1.0, {1e4, -2e4, 3e3}, {0.0, 0.0, 0.0}, {5e4, 0.0, 1e4}},
        {1, 10.0, 1e-5, {1e-6, -2e-6, 3e-7}, {0.0, 0.0, 0.0}, {5e-6, 0.0, 1e-6}},
        {0, 100.0, 1.0, {1e5, -2e5, 3e4}, {0.0, 0.0, 0.0}, {5e5, 0.0, 1e5}},
        {1, 1e10, 5.0, {0.5, -1.0, 2.0}, {1.0, 1.0, 1.0}, {-1.0, 0.0, 3.0}},
        {0, 1e10, 5.0, {0.5, -1.0, 2.0}, {1.0, 1.0, 1.0}, {-1.0, 0.0, 3.0}},
        {0, 3.0, 1.0, {1e200, -2e200, 3e199}, {0.0, 0.0, 0.0}, {5e200, 0.0, 1e200}},
    };
    const char *names[3] = {"anchor", "positive", "negative"};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int path = 0; path < N_PATHS; path++) {
            int f32 = cases[k].f32;
            const double *data[3] = {cases[k].a, cases[k].q, cases[k].n};
            char config[192], err[LK_ERRMSG_CAP];
            snprintf(config, sizeof config,
                     "{\"loss\": \"triplet_margin\", \"params\": {\"p\": %.17g, \"margin\": "
                     "%.17g, \"eps\": 0}, \"reduction\": \"sum\"}",
                     cases[k].p, cases[k].margin);
            double ga[3], gq[3], gn[3], v;
            double *grads[3] = {ga, gq, gn};
            cr_assert_eq(mg_eval(config, path, f32, 3, 3, names, data, 3, NULL, grads, &v, err),
                         LK_OK, "%s: %s", config, err);
            long double ap[3], an[3], gap[3], gan[3], p = cases[k].p;
            for (int i = 0; i < 3; i++) {
                long double a = mg_round(f32, cases[k].a[i]);
                ap[i] = a - mg_round(f32, cases[k].q[i]);
                an[i] = a - mg_round(f32, cases[k].n[i]);
            }
            long double h =
                cases[k].margin + tm_ref_norm(3, ap, p, gap) - tm_ref_norm(3, an, p, gan);
            long double want = h > 0.0L ? h : 0.0L, c = h >= 0.0L ? 1.0L : 0.0L;
            double tol = f32 ? 2e-6 : 1e-12;
            cr_expect(isfinite(v) && mg_same(v, (double)want, tol),
                      "%s %s f32 %d: value %.9g, want %.9Lg", config, path_names[path], f32, v,
                      want);
            for (int i = 0; i < 3; i++) {
                double wa = (double)(c * (gap[i] - gan[i])), wq = (double)(-c * gap[i]),
                       wn = (double)(c * gan[i]);
                cr_expect(mg_same(ga[i], wa, tol) || fabs(ga[i] - wa) < tol,
                          "%s %s f32 %d: d/danchor[%d] = %.9g, want %.9g", config, path_names[path],
                          f32, i, ga[i], wa);
                cr_expect(mg_same(gq[i], wq, tol) || fabs(gq[i] - wq) < tol,
                          "%s %s f32 %d: d/dpositive[%d] = %.9g, want %.9g", config,
                          path_names[path], f32, i, gq[i], wq);
                cr_expect(mg_same(gn[i], wn, tol) || fabs(gn[i] - wn) < tol,
                          "%s %s f32 %d: d/dnegative[%d] = %.9g, want %.9g", config,
                          path_names[path], f32, i, gn[i], wn);
            }
        }
}
