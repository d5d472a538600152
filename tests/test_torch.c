/* test_torch: the torch family (cross_entropy) against PyTorch and its own
 * documented conventions.
 *
 * golden.*: tests/golden/torch/cases.json (written by
 * tests/golden/make_golden_torch.py from torch 1.13 in float64): each case
 * built through the embedding API on each kernel path, evaluated with the
 * gradient for "input", value 1e-6 relative (1e-12 absolute floor), every
 * gradient and output element 1e-6 relative (1e-9 absolute floor; for
 * float32 input, F32_ELEM_FLOOR times the largest element).
 *
 * fd.*: analytic gradients against central finite differences in float64.
 *
 * edge.*: ignored positions, out-of-range indices, +-inf logits, bad
 * parameters and shapes, zero-size tensors, weighted sums of terms.
 *
 * big.*: many blocks and large class counts against a direct computation,
 * and bitwise identical results for 1, 2, 3 and 8 threads, on each path.
 *
 * paths.*: the SIMD kernels (AVX2; AVX-512 float lanes for float32) against
 * the portable ones, and float32 against its float64 upcast.
 *
 * LK_GOLDEN_VERBOSE=1 prints each golden case's largest relative errors,
 * LK_PATHS_VERBOSE=1 each path comparison's worst error against its bound. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"
#include "test_golden_io.h"
#include "test_paths.h"

#define SRC(rel)    LK_SOURCE_ROOT "/" rel
#define CASES_JSON  SRC("tests/golden/torch/cases.json")
#define MAX_CASES   128
#define MAX_TENSORS 4

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static lk_runtime *open_runtime(int32_t threads)
{
    lk_runtime_options opts;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_runtime_options_init(&opts);
    opts.use_env_path = 0;
    opts.threads = threads;
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "lk_runtime_open: %s", err);
    return rt;
}

static lk_loss *make_loss(lk_runtime *rt, const char *config)
{
    char err[LK_ERRMSG_CAP] = "";
    lk_loss *loss = NULL;
    lk_status st = lk_loss_from_json(rt, config, strlen(config), "test", &loss, err);
    cr_assert_eq(st, LK_OK, "config %s: %s (%s)", config, err, lk_status_name(st));
    return loss;
}

/* Float32 logits are computed in float lanes on the SIMD paths (exp, log
 * and each gradient element a few float roundings), with every sum in
 * double; the portable path computes them in double. Measured against the
 * float64 run on the upcast logits (paths.*, edge.float32_near_float64,
 * golden.*), with margin: values (means and sums of many positions) within
 * F32_VALUE_REL; a gradient element or per-position loss within
 * F32_ELEM_REL of its own size plus F32_ELEM_FLOOR times the largest |element|
 * of the tensor: an element that cancels (Q p_c - q_c, lse - z_y for a
 * confident prediction) keeps only the absolute precision of its terms. */
#define F32_VALUE_REL  1e-7
#define F32_ELEM_REL   1e-6
#define F32_ELEM_FLOOR 3e-7
#define F32_ABS_FLOOR  1e-15 /* C = 1: a gradient that is 0 up to rounding */

static double largest_finite(const double *a, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(a[i]))
            m = fmax(m, fabs(a[i]));
    return m;
}

/* ------------------------------------------------------------------------ */
/* A call: input and target of any dtype, optional gradient and output       */

typedef struct call {
    lk_tensor x, t;
    void *grad; /* input's dtype and shape, or NULL */
    void *out;  /* reduction none: input's dtype, target-without-class shape */
    int32_t out_ndim;
    int64_t out_shape[LK_MAX_NDIM];
    char errmsg[LK_ERRMSG_CAP];
} call;

static lk_status run_call(const lk_loss *loss, call *c, double *value)
{
    lk_named_tensor in[2] = {{"input", c->x, "input"}, {"target", c->t, "target"}};
    lk_named_tensor g = {"input", c->x, "grad"};
    g.tensor.data = c->grad;
    lk_tensor o = {c->out, c->x.dtype, c->out_ndim, c->out_shape, NULL};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = 2;
    args.grads = c->grad ? &g : NULL;
    args.n_grads = c->grad ? 1 : 0;
    args.out = c->out ? &o : NULL;
    lk_status st = lk_loss_eval(loss, &args, value);
    snprintf(c->errmsg, sizeof c->errmsg, "%s", args.errmsg);
    return st;
}

static double run_ok(const lk_loss *loss, call *c)
{
    double v = NAN;
    lk_status st = run_call(loss, c, &v);
    cr_assert_eq(st, LK_OK, "lk_loss_eval: %s (%s)", c->errmsg, lk_status_name(st));
    return v;
}

/* Evaluates config once on float64 logits x (shape xs) and int64 indices y
 * (the shape without dim 1); grad may be NULL. */
static double eval_index(const char *config, int32_t nd, const int64_t *xs, double *x, int64_t *y,
                         double *grad)
{
    int64_t ts[LK_MAX_NDIM];
    int32_t tn = 0;
    for (int32_t d = 0; d < nd; d++)
        if (d != (nd == 1 ? 0 : 1))
            ts[tn++] = xs[d];
    call c = {
        .x = {x, LK_DTYPE_F64, nd, xs, NULL}, .t = {y, LK_DTYPE_I64, tn, ts, NULL}, .grad = grad};
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, config);
    double v = run_ok(loss, &c);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return v;
}

/* ------------------------------------------------------------------------ */
/* golden: every case of cases.json                                          */

typedef struct golden_param {
    int index;
} golden_param;

static golden_param golden_params[MAX_CASES];

ParameterizedTestParameters(golden, torch)
{
    FILE *f = fopen(CASES_JSON, "rb");
    char *text = f ? read_all(f) : NULL;
    cJSON *all = text ? cJSON_Parse(text) : NULL;
    free(text);
    int n = all ? cJSON_GetArraySize(all) : 0;
    cJSON_Delete(all);
    n = n > MAX_CASES ? MAX_CASES : n;
    for (int i = 0; i < n; i++)
        golden_params[i].index = i;
    return cr_make_param_array(golden_param, golden_params, (size_t)n);
}

/* Every element of got against the reference file: 1e-6 relative with an
 * absolute floor of 1e-9, or for float32 logits on the float lanes
 * F32_ELEM_REL with a floor of F32_ELEM_FLOOR times the largest |element|.
 * Returns the largest relative error (of elements above the floor). */
static double compare_array(const char *name, const char *what, const lk_array *got,
                            const char *ref_rel)
{
    lk_array ref;
    read_npy(ref_rel, &ref);
    double rel = 1e-6, floor = 1e-9, largest = 0.0;
    for (size_t i = 0; i < numel(&ref); i++)
        largest = fmax(largest, fabs(element(&ref, i)));
    lk_array_free(&ref);
    if (got->dtype == LK_DTYPE_F32) {
        rel = F32_ELEM_REL;
        floor = fmax(floor, F32_ELEM_FLOOR * largest);
    }
    return compare_to_npy(name, what, got, ref_rel, rel, floor);
}

static void load_case_tensors(const cJSON *c, lk_array *x, lk_array *t)
{
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(c, "tensors");
    const char *xr = str_member(tensors, "input"), *tr = str_member(tensors, "target");
    cr_assert(xr && tr && cJSON_GetArraySize(tensors) == 2, "a case names input and target");
    read_npy(xr, x);
    read_npy(tr, t);
}

static void check_value(const char *name, const cJSON *c, double value, double *err)
{
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "value");
    *err = 0.0;
    if (cJSON_IsNull(want))
        return;
    cr_assert(cJSON_IsNumber(want), "%s: value must be a number or null", name);
    cr_expect(close_to(value, want->valuedouble, 1e-6, 1e-12), "%s: value %.17g, PyTorch %.17g",
              name, value, want->valuedouble);
    *err = rel_err(value, want->valuedouble);
}

/* One case on one kernel path. */
static void check_case(const cJSON *c, int path)
{
    const char *case_name = str_member(c, "name"), *out_rel = str_member(c, "out");
    char name[160];
    snprintf(name, sizeof name, "%s (%s)", case_name, path_names[path]);
    char *config = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "config"));
    lk_runtime *rt = open_runtime(0);
    lk_loss *loss = make_loss_on(rt, config, path);
    lk_array x, t, grad, out = {0};
    load_case_tensors(c, &x, &t);
    char err[LK_ERRMSG_CAP];
    cr_assert_eq(lk_array_alloc(&grad, x.dtype, x.ndim, x.shape, err), LK_OK, "%s", err);
    call k = {.x = lk_array_view(&x), .t = lk_array_view(&t), .grad = grad.data};
    if (out_rel) {
        k.out_ndim = x.ndim - 1;
        for (int32_t d = 0, j = 0; d < x.ndim; d++)
            if (d != (x.ndim == 1 ? 0 : 1))
                k.out_shape[j++] = x.shape[d];
        cr_assert_eq(lk_array_alloc(&out, x.dtype, k.out_ndim, k.out_shape, err), LK_OK, "%s", err);
        k.out = out.data;
    }
    double value = run_ok(loss, &k), value_err, out_err = 0.0;
    check_value(name, c, value, &value_err);
    double grad_err = compare_array(name, "grad", &grad, str_member(c, "grad"));
    if (out_rel)
        out_err = compare_array(name, "out", &out, out_rel);
    if (getenv("LK_GOLDEN_VERBOSE"))
        fprintf(stderr, "torch %-40s value rel %.3g  grad rel %.3g  out rel %.3g\n", name,
                value_err, grad_err, out_err);
    lk_array_free(&out);
    lk_array_free(&grad);
    lk_array_free(&x);
    lk_array_free(&t);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    free(config);
}

/* Every case on every kernel path. */
ParameterizedTest(golden_param *p, golden, torch)
{
    cJSON *all = read_json(CASES_JSON);
    for (int path = 0; path < N_PATHS; path++)
        check_case(cJSON_GetArrayItem(all, p->index), path);
    cJSON_Delete(all);
}

/* configs/cross_entropy.json is the config of the case named after the loss,
 * and runs on the bundled index-target sample data. */
Test(golden, config_matches_case_and_sample_data)
{
    cJSON *all = read_json(CASES_JSON), *file = read_json(SRC("configs/cross_entropy.json"));
    cr_assert_geq(cJSON_GetArraySize(all), 30, "cases.json has too few cases");
    const cJSON *c = cJSON_GetArrayItem(all, 0);
    cr_assert_str_eq(str_member(c, "name"), "cross_entropy");
    cr_expect(cJSON_Compare(file, cJSON_GetObjectItemCaseSensitive(c, "config"), 1),
              "configs/cross_entropy.json differs from golden case cross_entropy");
    lk_array x, t;
    read_npy("configs/data/mc_input.npy", &x);
    read_npy("configs/data/mc_target.npy", &t);
    cr_expect(x.dtype == LK_DTYPE_F32 && x.ndim == 4 && x.shape[1] == 4 && numel(&x) == 512);
    cr_expect(t.dtype == LK_DTYPE_I64 && t.ndim == 3 && numel(&t) == 128);
    lk_array_free(&x);
    lk_array_free(&t);
    cJSON_Delete(file);
    cJSON_Delete(all);
}

/* ------------------------------------------------------------------------ */
/* fd: central finite differences in float64                                 */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

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

typedef struct fd_case {
    const char *name;
    const char *config;
    int prob; /* 1: probability targets (rows of random distributions) */
} fd_case;

#define W3 "[0.5, 2.0, 1.25]"

static const fd_case fd_cases[] = {
    {"index_mean", "{\"loss\": \"cross_entropy\"}", 0},
    {"index_weight_ignore_ls",
     "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": " W3 ", \"ignore_index\": 1, "
     "\"label_smoothing\": 0.15}}",
     0},
    {"index_weight_sum",
     "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": " W3 "}, \"reduction\": \"sum\"}", 0},
    {"prob_ls_weight",
     "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": " W3 ", \"label_smoothing\": 0.3}}",
     1},
    {"prob_sum", "{\"loss\": \"cross_entropy\", \"reduction\": \"sum\"}", 1},
};

#define N_FD (sizeof fd_cases / sizeof fd_cases[0])

typedef struct fd_param {
    int index;
} fd_param;

static fd_param fd_params[N_FD];

ParameterizedTestParameters(fd, cross_entropy)
{
    for (size_t i = 0; i < N_FD; i++)
        fd_params[i].index = (int)i;
    return cr_make_param_array(fd_param, fd_params, N_FD);
}

/* (2, 3, 2, 3) float64 logits: 12 positions of 3 classes. */
static double eval_fd(const fd_case *fc, double *x, void *t, double *grad)
{
    static const int64_t xs[4] = {2, 3, 2, 3}, ts[3] = {2, 2, 3};
    call c = {.x = {x, LK_DTYPE_F64, 4, xs, NULL},
              .t = {t, fc->prob ? LK_DTYPE_F64 : LK_DTYPE_I64, fc->prob ? 4 : 3, fc->prob ? xs : ts,
                    NULL},
              .grad = grad};
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, fc->config);
    double v = run_ok(loss, &c);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return v;
}

ParameterizedTest(fd_param *p, fd, cross_entropy)
{
    const fd_case *fc = &fd_cases[p->index];
    double x[36], grad[36], tp[36];
    int64_t ti[12];
    for (int i = 0; i < 36; i++) {
        x[i] = normal(2.0);
        tp[i] = uniform();
    }
    for (int i = 0; i < 12; i++)
        ti[i] = (int64_t)(uniform() * 3.0);
    void *t = fc->prob ? (void *)tp : (void *)ti;
    eval_fd(fc, x, t, grad);
    int nonzero = 0;
    for (int i = 0; i < 36; i++) {
        const double h = 1e-6, x0 = x[i];
        x[i] = x0 + h;
        double up = eval_fd(fc, x, t, NULL);
        x[i] = x0 - h;
        double down = eval_fd(fc, x, t, NULL);
        x[i] = x0;
        double fd = (up - down) / (2.0 * h);
        cr_expect(fabs(grad[i] - fd) <= 1e-6 * fabs(fd) + 1e-8, "%s: grad[%d] = %.12g, fd %.12g",
                  fc->name, i, grad[i], fd);
        nonzero += grad[i] != 0.0;
    }
    cr_expect_gt(nonzero, 20, "%s: the gradient is mostly zero", fc->name);
}

/* Reduction none: the derivative of each position's own output. */
Test(fd, none_per_position)
{
    static const int64_t xs[2] = {5, 4}, os[1] = {5};
    double x[20], grad[20], out[5];
    int64_t y[5] = {0, 3, 2, 1, 3};
    for (int i = 0; i < 20; i++)
        x[i] = normal(1.5);
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": "
                                  "[1, 0.5, 2, 1.5], \"label_smoothing\": 0.2}, "
                                  "\"reduction\": \"none\"}");
    call c = {.x = {x, LK_DTYPE_F64, 2, xs, NULL},
              .t = {y, LK_DTYPE_I64, 1, os, NULL},
              .grad = grad,
              .out = out,
              .out_ndim = 1,
              .out_shape = {5}};
    run_ok(loss, &c);
    for (int i = 0; i < 20; i++) {
        const double h = 1e-6, x0 = x[i];
        double o[2];
        for (int k = 0; k < 2; k++) {
            x[i] = x0 + (k ? -h : h);
            call d = c;
            d.grad = NULL;
            run_ok(loss, &d);
            o[k] = out[i / 4];
        }
        x[i] = x0;
        double fd = (o[0] - o[1]) / (2.0 * h);
        cr_expect(fabs(grad[i] - fd) <= 1e-6 * fabs(fd) + 1e-8, "grad[%d] = %.12g, fd %.12g", i,
                  grad[i], fd);
    }
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

/* ------------------------------------------------------------------------ */
/* edge: ignored positions, bad indices, infinities, parameters, shapes      */

#define CE_NONE "{\"loss\": \"cross_entropy\", \"reduction\": \"none\"}"

Test(edge, all_ignored)
{
    static const int64_t xs[2] = {3, 4};
    double x[12], grad[12];
    int64_t y[3] = {-100, -100, -100};
    for (int i = 0; i < 12; i++)
        x[i] = normal(1.0), grad[i] = 7.0;
    double v = eval_index("{\"loss\": \"cross_entropy\"}", 2, xs, x, y, grad);
    cr_expect_eq(v, 0.0, "mean over no position: %g, expected 0 (torch: NaN; docs/design.md)", v);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(grad[i], 0.0, "grad[%d] = %g, expected 0 (as torch)", i, grad[i]);
    v = eval_index("{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 0.2}}", 2, xs,
                   x, y, grad);
    cr_expect_eq(v, 0.0, "with label smoothing: %g", v);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(grad[i], 0.0, "label smoothing: grad[%d] = %g", i, grad[i]);
    v = eval_index("{\"loss\": \"cross_entropy\", \"reduction\": \"sum\"}", 2, xs, x, y, grad);
    cr_expect_eq(v, 0.0, "sum over no position: %g", v);
}

/* Non-ignored positions whose classes all weigh 0: nothing is counted, so
 * the mean is 0 and every gradient 0 (torch: 0/0 = NaN in the value and in
 * those positions' gradients; docs/design.md). */
Test(edge, zero_weight_sum)
{
    static const int64_t xs[2] = {3, 4};
    double x[12], grad[12];
    int64_t y[3] = {0, 0, -100};
    for (int i = 0; i < 12; i++)
        x[i] = normal(1.0);
    double v = eval_index("{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [0, 1, 1, 1]}}",
                          2, xs, x, y, grad);
    cr_expect_eq(v, 0.0, "value %g, expected 0", v);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(grad[i], 0.0, "grad[%d] = %g", i, grad[i]);
}

/* A bad index fails the call naming the first bad position, also when it
 * lies in a later block and other blocks run on other threads. */
static void expect_bad_index(const char *config, int32_t dtype, void *y, int64_t n_pos,
                             int64_t classes, const char *needle)
{
    int64_t xs[2] = {n_pos, classes}, ts[1] = {n_pos};
    double *x = calloc((size_t)(n_pos * classes), sizeof *x);
    double *grad = calloc((size_t)(n_pos * classes), sizeof *grad);
    cr_assert(x && grad);
    call c = {.x = {x, LK_DTYPE_F64, 2, xs, NULL}, .t = {y, dtype, 1, ts, NULL}, .grad = grad};
    lk_runtime *rt = open_runtime(3);
    lk_loss *loss = make_loss(rt, config);
    double v;
    lk_status st = run_call(loss, &c, &v);
    cr_expect_eq(st, LK_ERR_INVALID, "status %s: %s", lk_status_name(st), c.errmsg);
    cr_expect(strstr(c.errmsg, needle) != NULL, "message '%s' lacks '%s'", c.errmsg, needle);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    free(x);
    free(grad);
}

Test(edge, out_of_range_index)
{
    int64_t y[6] = {0, 1, 2, 3, 1, 0};
    expect_bad_index("{\"loss\": \"cross_entropy\"}", LK_DTYPE_I64, y, 6, 3,
                     "target[3] (position 3) is 3: not a class in [0, 3) and not ignore_index "
                     "(-100)");
    y[3] = -1;
    expect_bad_index("{\"loss\": \"cross_entropy\"}", LK_DTYPE_I64, y, 6, 3, "(position 3) is -1");
    int32_t y32[6] = {0, 1, 2, 1, 1, 7};
    expect_bad_index("{\"loss\": \"cross_entropy\", \"params\": {\"ignore_index\": 5}}",
                     LK_DTYPE_I32, y32, 6, 3,
                     "(position 5) is 7: not a class in [0, 3) and not "
                     "ignore_index (5)");
    enum { BIG = 100000 };
    int64_t *yb = calloc(BIG, sizeof *yb);
    cr_assert_not_null(yb);
    yb[70000] = 9;
    yb[40000] = -7;
    expect_bad_index("{\"loss\": \"cross_entropy\"}", LK_DTYPE_I64, yb, BIG, 2,
                     "target[40000] (position 40000) is -7");
    free(yb);
}

/* An index equal to ignore_index is fine even outside [0, C). */
Test(edge, ignore_index_outside_classes)
{
    static const int64_t xs[2] = {2, 3};
    double x[6] = {1, 2, 3, 4, 5, 6}, grad[6];
    int64_t y[2] = {5, 2};
    double v = eval_index("{\"loss\": \"cross_entropy\", \"params\": {\"ignore_index\": 5}}", 2, xs,
                          x, y, grad);
    double want = log(exp(-2.0) + exp(-1.0) + 1.0);
    cr_expect(close_to(v, want, 1e-14, 0.0), "value %.17g, expected %.17g", v, want);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(grad[i], 0.0);
}

/* One row of logits: value and gradient of reduction none. */
static void expect_row(const char *config, const double x4[4], int64_t y, double loss,
                       const double g4[4])
{
    static const int64_t xs[2] = {1, 4}, ts[1] = {1};
    double x[4], grad[4], out[1];
    memcpy(x, x4, sizeof x);
    call c = {.x = {x, LK_DTYPE_F64, 2, xs, NULL},
              .t = {&y, LK_DTYPE_I64, 1, ts, NULL},
              .grad = grad,
              .out = out,
              .out_ndim = 1,
              .out_shape = {1}};
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss_fn = make_loss(rt, config);
    run_ok(loss_fn, &c);
    cr_expect(out[0] == loss || close_to(out[0], loss, 1e-13, 1e-15),
              "[%g %g %g %g] y=%lld: loss %.17g, expected %.17g", x4[0], x4[1], x4[2], x4[3],
              (long long)y, out[0], loss);
    for (int k = 0; k < 4; k++)
        cr_expect(close_to(grad[k], g4[k], 1e-13, 1e-15),
                  "[%g %g %g %g] y=%lld: grad[%d] %.17g, expected %.17g", x4[0], x4[1], x4[2],
                  x4[3], (long long)y, k, grad[k], g4[k]);
    lk_loss_free(loss_fn);
    lk_runtime_close(rt);
}

Test(edge, inf_logits)
{
    const double I = HUGE_VAL, l3 = log(1.0 + M_E + M_E * M_E);
    const double p[3] = {1.0 / exp(l3), M_E / exp(l3), M_E * M_E / exp(l3)};
    const double pinf[4] = {I, 0, 1, 2}, minf[4] = {-I, 0, 1, 2}, allm[4] = {-I, -I, -I, -I};
    const double two[4] = {I, I, 0, -I};
    /* a +inf logit takes all the probability: torch gives NaN here */
    expect_row(CE_NONE, pinf, 0, 0.0, (double[4]){0, 0, 0, 0});
    expect_row(CE_NONE, pinf, 1, I, (double[4]){1, -1, 0, 0});
    expect_row(CE_NONE, two, 0, log(2.0), (double[4]){-0.5, 0.5, 0, 0});
    /* all logits -inf are equal logits: uniform (torch: NaN) */
    expect_row(CE_NONE, allm, 2, log(4.0), (double[4]){0.25, 0.25, -0.75, 0.25});
    /* a -inf logit: as torch, +inf at the target, finite elsewhere */
    expect_row(CE_NONE, minf, 0, I, (double[4]){-1, p[0], p[1], p[2]});
    expect_row(CE_NONE, minf, 1, l3, (double[4]){0, p[0] - 1, p[1], p[2]});
    const char *ls = "{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 0.1}, "
                     "\"reduction\": \"none\"}";
    expect_row(ls, minf, 1, I, (double[4]){-0.025, p[0] - 0.925, p[1] - 0.025, p[2] - 0.025});
    /* label_smoothing 1: the nll term's coefficient is 0, not 0 * inf (torch: NaN) */
    const char *ls1 = "{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 1}, "
                      "\"reduction\": \"none\"}";
    expect_row(ls1, minf, 0, I, (double[4]){-0.25, p[0] - 0.25, p[1] - 0.25, p[2] - 0.25});
    /* a class of weight 0 contributes 0, even at log p = -inf (torch: NaN) */
    const char *w0 = "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [0, 1, 1, 1], "
                     "\"label_smoothing\": 0.1}, \"reduction\": \"none\"}";
    expect_row(w0, minf, 1, 0.9 * l3 + 0.025 * (3 * l3 - 3),
               (double[4]){0, 0.975 * p[0] - 0.925, 0.975 * p[1] - 0.025, 0.975 * p[2] - 0.025});
}

/* Probability targets: a class with target 0 contributes 0 at log p = -inf
 * (torch computes 0 * -inf = NaN there). */
Test(edge, inf_logits_prob_targets)
{
    static const int64_t xs[2] = {1, 4};
    double x[4] = {-HUGE_VAL, 0, 1, 2}, t[4] = {0, 1, 0, 0}, grad[4];
    call c = {
        .x = {x, LK_DTYPE_F64, 2, xs, NULL}, .t = {t, LK_DTYPE_F64, 2, xs, NULL}, .grad = grad};
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, "{\"loss\": \"cross_entropy\"}");
    double v = run_ok(loss, &c), l3 = log(1.0 + M_E + M_E * M_E);
    cr_expect(close_to(v, l3, 1e-14, 0.0), "value %.17g, expected %.17g", v, l3);
    cr_expect_eq(grad[0], 0.0);
    cr_expect(close_to(grad[1], 1.0 / exp(l3) - 1.0, 1e-14, 0.0), "grad[1] %.17g", grad[1]);
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

/* NaN logits give NaN for their position (as torch), except at ignored
 * positions, which give exactly 0. */
Test(edge, nan_logits)
{
    static const int64_t xs[2] = {2, 3}, ts[1] = {2};
    double x[6] = {NAN, 0, 1, NAN, 2, 3}, grad[6], out[2];
    int64_t y[2] = {1, -100};
    call c = {.x = {x, LK_DTYPE_F64, 2, xs, NULL},
              .t = {y, LK_DTYPE_I64, 1, ts, NULL},
              .grad = grad,
              .out = out,
              .out_ndim = 1,
              .out_shape = {2}};
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, CE_NONE);
    run_ok(loss, &c);
    cr_expect(isnan(out[0]) && out[1] == 0.0, "out %g %g", out[0], out[1]);
    for (int i = 0; i < 6; i++)
        cr_expect(i < 3 ? isnan(grad[i]) : grad[i] == 0.0, "grad[%d] = %g", i, grad[i]);
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

static void expect_refused(const char *config, const lk_tensor *x, const lk_tensor *t,
                           lk_status want, const char *needle)
{
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, config);
    call c = {.x = *x, .t = *t};
    double v;
    lk_status st = run_call(loss, &c, &v);
    cr_expect_eq(st, want, "%s: status %s (%s)", config, lk_status_name(st), c.errmsg);
    cr_expect(strstr(c.errmsg, needle) != NULL, "message '%s' lacks '%s'", c.errmsg, needle);
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

Test(edge, bad_parameters_and_shapes)
{
    static const int64_t xs[2] = {2, 4}, ts[1] = {2}, bad[1] = {4}, zero[2] = {2, 0};
    double x[8] = {0}, p[8] = {0};
    int64_t y[8] = {0};
    lk_tensor xt = {x, LK_DTYPE_F64, 2, xs, NULL}, yt = {y, LK_DTYPE_I64, 1, ts, NULL};
    lk_tensor pt = {p, LK_DTYPE_F64, 2, xs, NULL};
    expect_refused("{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [1, 2, 3]}}", &xt, &yt,
                   LK_ERR_SHAPE, "weight has 3 values but the input has 4 classes");
    expect_refused("{\"loss\": \"cross_entropy\", \"params\": {\"weight\": 2}}", &xt, &yt,
                   LK_ERR_SHAPE,
                   "weight has 1 value but the input has 4 classes (dim 1); give [] or 4 values");
    expect_refused("{\"loss\": \"nll\", \"params\": {\"weight\": [1, 2]}}", &xt, &yt, LK_ERR_SHAPE,
                   "weight has 2 values but the input has 4 classes (dim 1); give [] or 4 values");
    expect_refused("{\"loss\": \"multi_margin\", \"params\": {\"weight\": [1, 2, 3]}}", &xt, &yt,
                   LK_ERR_SHAPE,
                   "weight has 3 values but the input has 4 classes (its last dimension); give [] "
                   "or 4 values");
    expect_refused("{\"loss\": \"multi_margin\", \"params\": {\"weight\": 2}}", &xt, &yt,
                   LK_ERR_SHAPE, "weight has 1 value but the input has 4 classes");
    /* one class: singular words */
    static const int64_t xs1[2] = {2, 1};
    lk_tensor x1 = {x, LK_DTYPE_F64, 2, xs1, NULL};
    expect_refused("{\"loss\": \"nll\", \"params\": {\"weight\": [1, 2]}}", &x1, &yt, LK_ERR_SHAPE,
                   "weight has 2 values but the input has 1 class (dim 1); give [] or 1 value");
    expect_refused("{\"loss\": \"cross_entropy\", \"params\": {\"ignore_index\": 0}}", &xt, &pt,
                   LK_ERR_INVALID, "ignore_index 0 is not supported with class-probability");
    lk_tensor wrong = {y, LK_DTYPE_I64, 1, bad, NULL}, y2d = {y, LK_DTYPE_I64, 2, xs, NULL};
    expect_refused("{\"loss\": \"cross_entropy\"}", &xt, &wrong, LK_ERR_SHAPE,
                   "target: shape (4,) does not fit input (2, 4)");
    expect_refused("{\"loss\": \"cross_entropy\"}", &xt, &y2d, LK_ERR_SHAPE, "does not fit");
    lk_tensor p1d = {p, LK_DTYPE_F64, 1, ts, NULL};
    expect_refused("{\"loss\": \"cross_entropy\"}", &xt, &p1d, LK_ERR_SHAPE, "does not fit");
    lk_tensor scalar = {x, LK_DTYPE_F64, 0, NULL, NULL}, s0 = {y, LK_DTYPE_I64, 0, NULL, NULL};
    expect_refused("{\"loss\": \"cross_entropy\"}", &scalar, &s0, LK_ERR_SHAPE, "got a scalar");
    lk_tensor empty = {x, LK_DTYPE_F64, 2, zero, NULL};
    expect_refused("{\"loss\": \"cross_entropy\"}", &empty, &yt, LK_ERR_SHAPE,
                   "class dimension (dim 1) is empty");
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    const char *cfg = "{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 1.5}}";
    cr_expect_neq(lk_loss_from_json(rt, cfg, strlen(cfg), "t", &loss, err), LK_OK);
    cr_expect(strstr(err, "label_smoothing") != NULL, "%s", err);
    lk_runtime_close(rt);
}

/* One class: p = 1, loss 0, gradient 0 (to rounding: Q p - q sums three
 * terms). */
Test(edge, one_class)
{
    static const int64_t xs[2] = {3, 1};
    double x[3] = {-5.0, 0.0, 7.0}, grad[3];
    int64_t y[3] = {0, 0, 0};
    double v = eval_index("{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 0.3}}",
                          2, xs, x, y, grad);
    cr_expect_eq(v, 0.0, "value %g", v);
    for (int i = 0; i < 3; i++)
        cr_expect_leq(fabs(grad[i]), 1e-15, "grad[%d] = %g", i, grad[i]);
}

Test(edge, zero_size)
{
    static const int64_t xs[2] = {0, 4}, ts[1] = {0};
    double x[1], g[1];
    int64_t y[1];
    lk_runtime *rt = open_runtime(1);
    const char *cfgs[2] = {"{\"loss\": \"cross_entropy\"}",
                           "{\"loss\": \"cross_entropy\", \"reduction\": \"sum\"}"};
    for (int k = 0; k < 4; k++) {
        lk_loss *loss = make_loss(rt, cfgs[k & 1]);
        call c = {.x = {x, LK_DTYPE_F64, 2, xs, NULL}, .grad = g};
        c.t = k < 2 ? (lk_tensor){y, LK_DTYPE_I64, 1, ts, NULL}
                    : (lk_tensor){x, LK_DTYPE_F64, 2, xs, NULL};
        double v = run_ok(loss, &c);
        cr_expect_eq(v, 0.0, "case %d: value %g (a mean over nothing is 0)", k, v);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
}

/* A weighted sum of two cross_entropy terms shares one gradient buffer
 * (LK_BLOCK_GRAD_ACCUMULATE) and equals the weighted sum of the terms. */
Test(edge, terms_accumulate)
{
    static const int64_t xs[3] = {3, 4, 5};
    double x[60], g[60], g1[60], g2[60];
    int64_t y[15];
    for (int i = 0; i < 60; i++)
        x[i] = normal(2.0);
    for (int i = 0; i < 15; i++)
        y[i] = i % 5 == 4 ? -100 : (int64_t)(uniform() * 4.0);
    const char *a = "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [1, 2, 3, 4]}}";
    const char *b = "{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 0.2}}";
    const char *ab = "{\"terms\": [{\"loss\": \"cross_entropy\", \"weight\": 0.25, \"params\": "
                     "{\"weight\": [1, 2, 3, 4]}}, {\"loss\": \"cross_entropy\", \"weight\": "
                     "0.75, \"params\": {\"label_smoothing\": 0.2}}]}";
    double v1 = eval_index(a, 3, xs, x, y, g1), v2 = eval_index(b, 3, xs, x, y, g2);
    double v = eval_index(ab, 3, xs, x, y, g);
    cr_expect(close_to(v, 0.25 * v1 + 0.75 * v2, 1e-14, 0.0), "value %.17g", v);
    for (int i = 0; i < 60; i++)
        cr_expect(close_to(g[i], 0.25 * g1[i] + 0.75 * g2[i], 1e-13, 1e-16), "grad[%d]", i);
}

/* nll on rows of 20 positions (more than a vector of them: its backward
 * writes each class of the gradient whole there, a tail vector included):
 * the gradient is -w_y / sum of the counted w_y at each position's target
 * class and 0 elsewhere (ignored positions included), and a weighted sum
 * of two terms adds into one buffer as the sum of the terms. */
Test(edge, nll_rows_gradient)
{
    static const int64_t xs[3] = {2, 3, 20};
    static const double w[3] = {0.5, 2.0, 1.5};
    double x[120], g[120], g1[120], g2[120];
    int64_t y[40];
    for (int i = 0; i < 120; i++)
        x[i] = -uniform() * 3.0;
    double wsum = 0.0;
    for (int i = 0; i < 40; i++) {
        y[i] = i % 7 == 3 ? 1 : (int64_t)(uniform() * 3.0);
        wsum += y[i] == 1 ? 0.0 : w[y[i]];
    }
    const char *a = "{\"loss\": \"nll\", \"params\": {\"weight\": [0.5, 2, 1.5], "
                    "\"ignore_index\": 1}}";
    const char *b = "{\"loss\": \"nll\"}";
    const char *ab = "{\"terms\": [{\"loss\": \"nll\", \"weight\": 0.25, \"params\": "
                     "{\"weight\": [0.5, 2, 1.5], \"ignore_index\": 1}}, {\"loss\": \"nll\", "
                     "\"weight\": 0.75}]}";
    double v1 = eval_index(a, 3, xs, x, y, g1), v2 = eval_index(b, 3, xs, x, y, g2);
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < 20; k++) {
                int64_t t = y[n * 20 + k];
                int i = (n * 3 + c) * 20 + k;
                double want1 = t == c && t != 1 ? -w[c] / wsum : 0.0;
                double want2 = t == c ? -1.0 / 40.0 : 0.0;
                cr_expect(close_to(g1[i], want1, 1e-15, 0.0), "weighted grad[%d] %g, want %g", i,
                          g1[i], want1);
                cr_expect(close_to(g2[i], want2, 1e-15, 0.0), "grad[%d] %g, want %g", i, g2[i],
                          want2);
            }
    double v = eval_index(ab, 3, xs, x, y, g);
    cr_expect(close_to(v, 0.25 * v1 + 0.75 * v2, 1e-14, 0.0), "value %.17g", v);
    for (int i = 0; i < 120; i++)
        cr_expect(close_to(g[i], 0.25 * g1[i] + 0.75 * g2[i], 1e-15, 1e-16), "grad[%d]", i);
}

/* ------------------------------------------------------------------------ */
/* big: many blocks, many classes, thread counts                             */

/* Logits (outer, C, inner) as float32, targets as int64 indices (some
 * ignored) and as float32 probabilities. */
typedef struct big {
    int32_t nd;
    int64_t xs[3], ts[2];
    int64_t outer, classes, inner, n;
    float *x, *p;
    int64_t *y;
} big;

static big make_big(int64_t outer, int64_t classes, int64_t inner)
{
    big b = {.outer = outer, .classes = classes, .inner = inner, .n = outer * classes * inner};
    b.nd = inner > 1 ? 3 : 2;
    b.xs[0] = outer, b.xs[1] = classes, b.xs[2] = inner;
    b.ts[0] = outer, b.ts[1] = inner;
    b.x = malloc((size_t)b.n * sizeof *b.x);
    b.p = malloc((size_t)b.n * sizeof *b.p);
    b.y = malloc((size_t)(outer * inner) * sizeof *b.y);
    cr_assert(b.x && b.p && b.y);
    for (int64_t i = 0; i < b.n; i++) {
        b.x[i] = (float)(8.0 * uniform() - 4.0);
        b.p[i] = (float)uniform();
    }
    for (int64_t i = 0; i < outer * inner; i++)
        b.y[i] = uniform() < 0.1 ? -100 : (int64_t)(uniform() * (double)classes);
    return b;
}

static void free_big(big *b)
{
    free(b->x);
    free(b->p);
    free(b->y);
}

typedef struct big_result {
    double value;
    float *grad;
    float *out;
} big_result;

static big_result eval_big(const big *b, const char *config, int prob, int32_t threads, int path)
{
    int64_t positions = b->outer * b->inner;
    big_result r = {NAN, calloc((size_t)b->n, sizeof(float)), NULL};
    int none = strstr(config, "\"none\"") != NULL;
    if (none)
        r.out = calloc((size_t)positions, sizeof(float));
    cr_assert(r.grad && (!none || r.out));
    call c = {.x = {b->x, LK_DTYPE_F32, b->nd, b->xs, NULL},
              .t = prob ? (lk_tensor){b->p, LK_DTYPE_F32, b->nd, b->xs, NULL}
                        : (lk_tensor){b->y, LK_DTYPE_I64, b->nd - 1, b->ts, NULL},
              .grad = r.grad,
              .out = r.out,
              .out_ndim = b->nd - 1};
    memcpy(c.out_shape, b->ts, sizeof b->ts);
    lk_runtime *rt = open_runtime(threads);
    cr_assert_eq(lk_runtime_threads(rt), threads);
    lk_loss *loss = make_loss_on(rt, config, path);
    r.value = run_ok(loss, &c);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return r;
}

/* The direct formula for index targets, one position at a time: the sum of
 * w_y-weighted smoothed losses, their gradient (unscaled) into g, and the
 * sum of w_y over positions not ignored into *wsum. */
static double direct_index(const big *b, const double *w, double eps, double *g, double *wsum)
{
    double total = 0.0, C = (double)b->classes;
    *wsum = 0.0;
    for (int64_t o = 0; o < b->outer; o++)
        for (int64_t s = 0; s < b->inner; s++) {
            const float *x = b->x + o * b->classes * b->inner + s;
            double *gp = g + o * b->classes * b->inner + s, m = -HUGE_VAL, sum = 0.0, W = 0.0;
            int64_t y = b->y[o * b->inner + s];
            for (int64_t c = 0; c < b->classes; c++)
                m = fmax(m, x[c * b->inner]), W += w[c];
            for (int64_t c = 0; c < b->classes; c++)
                sum += exp(x[c * b->inner] - m);
            double lse = m + log(sum), Q = y < 0 ? 0.0 : (1 - eps) * w[y] + eps / C * W;
            for (int64_t c = 0; c < b->classes; c++) {
                double q = y < 0 ? 0.0 : (1 - eps) * w[y] * (c == y) + eps / C * w[c];
                total += q * (lse - x[c * b->inner]);
                gp[c * b->inner] = Q * exp(x[c * b->inner] - lse) - q;
            }
            *wsum += y < 0 ? 0.0 : w[y];
        }
    return total;
}

static void expect_direct(int64_t outer, int64_t classes, int64_t inner)
{
    big b = make_big(outer, classes, inner);
    double *w = malloc((size_t)classes * sizeof *w), *g = malloc((size_t)b.n * sizeof *g), wsum;
    cr_assert(w && g && classes <= 1000);
    char config[16 * 1000 + 128];
    int used = snprintf(config, sizeof config,
                        "{\"loss\": \"cross_entropy\", \"params\": "
                        "{\"label_smoothing\": 0.125, \"weight\": [");
    for (int64_t c = 0; c < classes; c++) {
        w[c] = 0.25 + (double)(c % 7) * 0.25;
        used +=
            snprintf(config + used, sizeof config - (size_t)used, "%s%.2f", c ? ", " : "", w[c]);
    }
    snprintf(config + used, sizeof config - (size_t)used, "]}}");
    double want = direct_index(&b, w, 0.125, g, &wsum) / wsum;
    for (int64_t i = 0; i < b.n; i++)
        g[i] /= wsum;
    double floor = F32_ELEM_FLOOR * largest_finite(g, b.n);
    for (int path = 0; path < N_PATHS; path++) {
        /* the portable path computes float32 in double, the others in float lanes */
        int fl = path != PATH_PORTABLE;
        big_result r = eval_big(&b, config, 0, 2, path);
        cr_expect(close_to(r.value, want, fl ? F32_VALUE_REL : 1e-12, 0.0),
                  "(%lld, %lld, %lld) %s: value %.17g, direct %.17g", (long long)outer,
                  (long long)classes, (long long)inner, path_names[path], r.value, want);
        int bad = 0;
        for (int64_t i = 0; i < b.n; i++)
            bad += fl ? !close_to(r.grad[i], g[i], F32_ELEM_REL, floor)
                      : !close_to(r.grad[i], (float)g[i], 1e-6, 1e-12);
        cr_expect_eq(bad, 0, "%s: %d gradient elements differ from the direct formula",
                     path_names[path], bad);
        free(r.grad);
    }
    free(w);
    free(g);
    free_big(&b);
}

/* Blocks that cut rows, chunks limited by the row end, and S = 1 with a
 * class count that needs heap work space and many small blocks. */
Test(big, many_blocks_match_direct)
{
    expect_direct(5, 4, 70 * 110);
    expect_direct(600, 1000, 1);
    expect_direct(3, 37, 1001);
}

static void expect_same(const char *what, const big_result *a, const big_result *b, int64_t n,
                        int64_t positions)
{
    cr_expect_eq(memcmp(&a->value, &b->value, sizeof a->value), 0, "%s: value %.17g vs %.17g", what,
                 a->value, b->value);
    cr_expect_eq(memcmp(a->grad, b->grad, (size_t)n * sizeof(float)), 0, "%s: gradients differ",
                 what);
    if (a->out)
        cr_expect_eq(memcmp(a->out, b->out, (size_t)positions * sizeof(float)), 0,
                     "%s: outputs differ", what);
}

/* Blocks are fixed by the shapes and every sum has a fixed order, so each
 * path gives bitwise identical results for any thread count. */
Test(big, bitwise_identical_for_any_thread_count)
{
    static const char *const configs[] = {
        "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [1, 2, 0.5, 1.5], "
        "\"label_smoothing\": 0.1}}",
        "{\"loss\": \"cross_entropy\", \"reduction\": \"sum\"}",
        "{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 0.2}, "
        "\"reduction\": \"none\"}",
    };
    static const int32_t threads[3] = {2, 3, 8};
    big b = make_big(5, 4, 70 * 110);
    for (int path = 0; path < N_PATHS; path++)
        for (int prob = 0; prob < 2; prob++)
            for (size_t k = 0; k < sizeof configs / sizeof *configs; k++) {
                big_result one = eval_big(&b, configs[k], prob, 1, path);
                cr_expect(one.out || isfinite(one.value), "%s: value %g", configs[k], one.value);
                for (int t = 0; t < 3; t++) {
                    big_result more = eval_big(&b, configs[k], prob, threads[t], path);
                    char what[256];
                    snprintf(what, sizeof what, "%s %s, %d threads", configs[k], path_names[path],
                             (int)threads[t]);
                    expect_same(what, &one, &more, b.n, b.outer * b.inner);
                    free(more.grad), free(more.out);
                }
                free(one.grad), free(one.out);
            }
    free_big(&b);
}

/* ------------------------------------------------------------------------ */
/* paths: the AVX2 + FMA kernels against the portable ones                   */

/* One input in both dtypes (the float64 one is the exact upcast of the
 * float32 one), index targets in both widths and probability targets. */
typedef struct pdata {
    int32_t nd;
    int64_t xs[3], ts[2];
    int64_t n, positions;
    float *xf;
    double *xd, *p;
    int64_t *y;
    int32_t *y32;
} pdata;

/* Logits N(0, 3) with about 4% extreme values (+-30, +-1e4, +-inf) and a few
 * NaN, index targets with about 10% ignore_index, random distributions. */
static pdata make_pdata(int64_t outer, int64_t classes, int64_t inner, int64_t ignore)
{
    pdata d = {.nd = inner > 1 ? 3 : 2, .n = outer * classes * inner, .positions = outer * inner};
    d.xs[0] = outer, d.xs[1] = classes, d.xs[2] = inner;
    d.ts[0] = outer, d.ts[1] = inner;
    d.xf = malloc((size_t)d.n * sizeof *d.xf);
    d.xd = malloc((size_t)d.n * sizeof *d.xd);
    d.p = malloc((size_t)d.n * sizeof *d.p);
    d.y = malloc((size_t)d.positions * sizeof *d.y);
    d.y32 = malloc((size_t)d.positions * sizeof *d.y32);
    cr_assert(d.xf && d.xd && d.p && d.y && d.y32);
    static const double extreme[6] = {30.0, -30.0, 1e4, -1e4, HUGE_VAL, -HUGE_VAL};
    for (int64_t i = 0; i < d.n; i++) {
        double u = uniform(), v = normal(3.0);
        if (u < 0.04)
            v = extreme[(int)(u * 150.0) % 6];
        else if (u < 0.041)
            v = NAN;
        d.xf[i] = (float)v;
        d.xd[i] = (double)d.xf[i];
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t s = 0; s < inner; s++) {
            double sum = 0.0;
            for (int64_t c = 0; c < classes; c++)
                sum += d.p[(o * classes + c) * inner + s] = uniform();
            for (int64_t c = 0; c < classes; c++)
                d.p[(o * classes + c) * inner + s] /= sum;
        }
    for (int64_t i = 0; i < d.positions; i++) {
        d.y[i] = uniform() < 0.1 ? ignore : (int64_t)(uniform() * (double)classes);
        d.y32[i] = (int32_t)d.y[i];
    }
    return d;
}

static void free_pdata(pdata *d)
{
    free(d->xf), free(d->xd), free(d->p), free(d->y), free(d->y32);
}

typedef struct presult {
    double value;
    double *grad, *out; /* as doubles */
} presult;

/* kind: 0 int64 indices, 1 int32 indices, 2 float64 probabilities */
static presult eval_path(const pdata *d, const char *config, int f32, int kind, int path)
{
    int none = strstr(config, "\"none\"") != NULL;
    size_t es = f32 ? sizeof(float) : sizeof(double);
    void *g = malloc((size_t)d->n * es), *o = none ? malloc((size_t)d->positions * es) : NULL;
    cr_assert(g && (!none || o));
    call c = {.x = {f32 ? (void *)d->xf : (void *)d->xd, f32 ? LK_DTYPE_F32 : LK_DTYPE_F64, d->nd,
                    d->xs, NULL},
              .grad = g,
              .out = o,
              .out_ndim = d->nd - 1};
    memcpy(c.out_shape, d->ts, sizeof d->ts);
    if (kind == 2)
        c.t = (lk_tensor){d->p, LK_DTYPE_F64, d->nd, d->xs, NULL};
    else
        c.t = (lk_tensor){kind ? (void *)d->y32 : (void *)d->y, kind ? LK_DTYPE_I32 : LK_DTYPE_I64,
                          d->nd - 1, d->ts, NULL};
    lk_runtime *rt = open_runtime(2);
    lk_loss *loss = make_loss_on(rt, config, path);
    presult r = {run_ok(loss, &c), malloc((size_t)d->n * sizeof(double)),
                 none ? malloc((size_t)d->positions * sizeof(double)) : NULL};
    cr_assert(r.grad && (!none || r.out));
    for (int64_t i = 0; i < d->n; i++)
        r.grad[i] = f32 ? (double)((float *)g)[i] : ((double *)g)[i];
    for (int64_t i = 0; none && i < d->positions; i++)
        r.out[i] = f32 ? (double)((float *)o)[i] : ((double *)o)[i];
    lk_loss_free(loss);
    lk_runtime_close(rt);
    free(g), free(o);
    return r;
}

/* a and b agree: both NaN, the same infinity, or |a - b| <= rel |b| + abs. */
static int agree(double a, double b, double rel, double abs_floor)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    return fabs(a - b) <= rel * fabs(b) + abs_floor;
}

/* Counts the elements of a (one path) that do not agree with b (the other)
 * to within rel |b| plus floor_rel times the largest finite |b| (abs_floor at
 * least): a gradient
 * element is a difference of terms as large as the largest gradient
 * (Q p_c - q_c), so where it cancels, a few ulp of those terms is all the
 * precision it has. LK_PATHS_VERBOSE=1 prints the largest error as a
 * fraction of its bound. */
static int64_t disagreements(const char *what, const double *a, const double *b, int64_t n,
                             double rel, double floor_rel, double abs_floor)
{
    double floor = fmax(floor_rel * largest_finite(b, n), abs_floor), worst = 0.0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!agree(a[i], b[i], rel, floor)) {
            if (bad++ < 3)
                cr_log_error("%s[%lld]: %.17g vs %.17g", what, (long long)i, a[i], b[i]);
        } else if (isfinite(b[i]) && a[i] != b[i]) {
            worst = fmax(worst, fabs(a[i] - b[i]) / (rel * fabs(b[i]) + floor));
        }
    }
    if (getenv("LK_PATHS_VERBOSE"))
        fprintf(stderr, "%-60s worst %.3f of the bound, %lld over\n", what, worst, (long long)bad);
    return bad;
}

/* A value (a mean or sum) against the other path's: rel relative, and
 * non-finite values exactly. */
static void expect_value(const char *what, double a, double b, double rel)
{
    cr_expect(agree(a, b, rel, 0.0), "%s: value %.17g vs %.17g", what, a, b);
    if (getenv("LK_PATHS_VERBOSE") && isfinite(b) && b != 0.0)
        fprintf(stderr, "%-60s value worst %.3f of the bound\n", what,
                fabs(a - b) / (rel * fabs(b)));
}

/* Float32 logits on each path against the float64 run on their upcast (on
 * the same path): the value within F32_VALUE_REL, each gradient element and
 * per-position loss within F32_ELEM_REL plus F32_ELEM_FLOOR x the largest;
 * on the portable path exactly the upcast's value. Smooth data (N(0, 3)
 * logits, so that no element is exactly 0 or non-finite). */
Test(paths, float32_near_float64_upcast)
{
    static const int64_t xs[4] = {3, 6, 5, 29}, ts[3] = {3, 5, 29};
    enum { N = 3 * 6 * 5 * 29, P = 3 * 5 * 29 };
    static float xf[N], gf[N], of[P];
    static double xd[N], gd[N], od[P], g32[N], o32[P];
    static int64_t y[P];
    for (int i = 0; i < N; i++)
        xd[i] = (double)(xf[i] = (float)normal(3.0));
    for (int i = 0; i < P; i++)
        y[i] = i % 11 == 3 ? 2 : (int64_t)(uniform() * 6.0);
    static const char *const configs[2] = {
        "{\"loss\": \"cross_entropy\", \"params\": {\"label_smoothing\": 0.1, \"ignore_index\": "
        "2, \"weight\": [1, 0.5, 2, 1, 0.75, 1.5]}}",
        "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [1, 0.5, 2, 1, 0.75, 1.5]}, "
        "\"reduction\": \"none\"}",
    };
    lk_runtime *rt = open_runtime(1);
    for (int path = 0; path < N_PATHS; path++)
        for (int k = 0; k < 2; k++) {
            lk_loss *loss = make_loss_on(rt, configs[k], path);
            call cf = {.x = {xf, LK_DTYPE_F32, 4, xs, NULL},
                       .t = {y, LK_DTYPE_I64, 3, ts, NULL},
                       .grad = gf,
                       .out = k ? of : NULL,
                       .out_ndim = 3};
            call cd = cf;
            cd.x = (lk_tensor){xd, LK_DTYPE_F64, 4, xs, NULL};
            cd.grad = gd;
            cd.out = k ? od : NULL;
            memcpy(cf.out_shape, ts, sizeof ts);
            memcpy(cd.out_shape, ts, sizeof ts);
            double vf = run_ok(loss, &cf), vd = run_ok(loss, &cd);
            for (int i = 0; i < N; i++)
                g32[i] = gf[i];
            for (int i = 0; k && i < P; i++)
                o32[i] = of[i];
            char what[96];
            snprintf(what, sizeof what, "float32 vs upcast, config %d %s", k, path_names[path]);
            if (path == PATH_PORTABLE && !k)
                cr_expect_eq(vf, vd, "%s: value %.17g, float64 %.17g", what, vf, vd);
            else if (!k)
                expect_value(what, vf, vd, F32_VALUE_REL);
            cr_expect_eq(disagreements(what, g32, gd, N, F32_ELEM_REL, F32_ELEM_FLOOR, 0.0), 0,
                         "%s: gradients", what);
            if (k)
                cr_expect_eq(disagreements(what, o32, od, P, F32_ELEM_REL, F32_ELEM_FLOOR, 0.0), 0,
                             "%s: outputs", what);
            lk_loss_free(loss);
        }
    lk_runtime_close(rt);
}

static void free_presult(presult *r)
{
    free(r->grad), free(r->out);
}

/* The SIMD paths (AVX2, and the best the CPU has: AVX-512 float lanes for
 * float32) against the portable one on awkward spatial lengths (vector
 * tails of 16, 8, 4 and 2 lanes, S = 1 rows, segments of one lane) and
 * class counts, with ignored targets, weights, label smoothing, probability
 * targets and extreme logits.
 *
 * Tolerances, float64 logits (double lanes everywhere): values 1e-12
 * relative. Each position's loss is a sum of non-negative terms (positive
 * weights) computed in double on both paths; they differ by the paths' exp
 * (1.3 ulp at most, FMA or not) and by the order in which lanes are summed
 * (four lanes against two), which moves the total by far less than 1e-13
 * for these sizes. Per-position outputs: the same, element by element.
 * Gradients 1e-12 relative with a floor of 1e-12 x the largest gradient (see
 * disagreements()).
 *
 * Float32 logits: the portable path computes them in double, exactly the
 * results of the float64 upcast (checked here too); the SIMD paths in float
 * lanes, within the F32_* bounds of that. Non-finite results must match
 * exactly on every path. */
static void expect_paths_agree(int64_t C, int64_t S);

Test(paths, simd_matches_portable)
{
    static const int64_t classes[5] = {1, 2, 3, 8, 17};
    static const int64_t inner[7] = {1, 7, 8, 9, 33, 100, 16384 + 5};
    for (int ci = 0; ci < 5; ci++)
        for (int si = 0; si < 7; si++)
            expect_paths_agree(classes[ci], inner[si]);
}

/* Many classes: short rows packed on the heap (C x lanes > 2048 with 8 and
 * 16 lanes, not with the portable two), or read in place (C > 4096), and
 * long rows. */
Test(paths, simd_matches_portable_many_classes)
{
    static const int64_t inner[3] = {1, 7, 70};
    for (int si = 0; si < 3; si++)
        expect_paths_agree(600, inner[si]);
    expect_paths_agree(5000, 1);
    expect_paths_agree(5000, 3);
}

/* One SIMD path's results s against the portable path's p. */
static void expect_close_to_portable(const char *what, const pdata *d, const presult *s,
                                     const presult *p, int f32, int has_value)
{
    double vrel = f32 ? F32_VALUE_REL : 1e-12;
    double rel = f32 ? F32_ELEM_REL : 1e-12, floor = f32 ? F32_ELEM_FLOOR : 1e-12;
    char w[160];
    if (has_value)
        expect_value(what, s->value, p->value, vrel);
    snprintf(w, sizeof w, "%s grad", what);
    int64_t bad = disagreements(w, s->grad, p->grad, d->n, rel, floor, f32 ? F32_ABS_FLOOR : 0.0);
    cr_expect_eq(bad, 0, "%s: %lld gradient elements differ", what, (long long)bad);
    if (s->out) {
        snprintf(w, sizeof w, "%s out", what);
        bad = disagreements(w, s->out, p->out, d->positions, f32 ? rel : 1e-12, f32 ? floor : 0.0,
                            0.0);
        cr_expect_eq(bad, 0, "%s: %lld outputs differ", what, (long long)bad);
    }
}

/* The portable path's float32 results are the float64 upcast's: the same
 * value, the gradient rounded. */
static void expect_portable_upcast(const char *what, const pdata *d, const char *config, int kind)
{
    presult a = eval_path(d, config, 1, kind, PATH_PORTABLE);
    presult b = eval_path(d, config, 0, kind, PATH_PORTABLE);
    cr_expect(memcmp(&a.value, &b.value, sizeof a.value) == 0 || (isnan(a.value) && isnan(b.value)),
              "%s portable: float32 value %.17g, float64 %.17g", what, a.value, b.value);
    int64_t diff = 0;
    for (int64_t i = 0; i < d->n; i++)
        diff += !(a.grad[i] == (double)(float)b.grad[i] || (isnan(a.grad[i]) && isnan(b.grad[i])));
    cr_expect_eq(diff, 0, "%s portable: %lld float32 gradients are not the float64 ones rounded",
                 what, (long long)diff);
    free_presult(&a), free_presult(&b);
}

static void expect_paths_agree(int64_t C, int64_t S)
{
    int64_t outer = S == 1 ? 37 : 2;
    int64_t ignore = C > 2 ? 1 : -100;
    pdata d = make_pdata(outer, C, S, ignore);
    size_t cap = 16 * (size_t)C + 512;
    char *weights = malloc(cap), *configs[4];
    cr_assert_not_null(weights);
    for (int k = 0; k < 4; k++)
        cr_assert_not_null(configs[k] = malloc(cap));
    int used = snprintf(weights, cap, "[");
    for (int64_t c = 0; c < C; c++)
        used += snprintf(weights + used, cap - (size_t)used, "%s%.3f", c ? ", " : "",
                         0.25 + 0.125 * (double)(c % 5));
    snprintf(weights + used, cap - (size_t)used, "]");
    snprintf(configs[0], cap,
             "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": %s, \"ignore_index\": "
             "%lld, \"label_smoothing\": 0.1}}",
             weights, (long long)ignore);
    snprintf(configs[1], cap,
             "{\"loss\": \"cross_entropy\", \"params\": {\"ignore_index\": %lld}, "
             "\"reduction\": \"sum\"}",
             (long long)ignore);
    snprintf(configs[2], cap,
             "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": %s, \"ignore_index\": "
             "%lld, \"label_smoothing\": 0.2}, \"reduction\": \"none\"}",
             weights, (long long)ignore);
    snprintf(configs[3], cap,
             "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": %s, "
             "\"label_smoothing\": 0.15}}",
             weights);
    for (int k = 0; k < 4; k++)
        for (int f32 = 0; f32 < 2; f32++) {
            int kind = k == 3 ? 2 : k == 1 ? 1 : 0;
            presult p = eval_path(&d, configs[k], f32, kind, PATH_PORTABLE);
            for (int path = PATH_AVX2; path < N_PATHS; path++) {
                presult s = eval_path(&d, configs[k], f32, kind, path);
                char what[96];
                snprintf(what, sizeof what, "C %lld S %lld config %d %s %s", (long long)C,
                         (long long)S, k, f32 ? "float32" : "float64", path_names[path]);
                expect_close_to_portable(what, &d, &s, &p, f32, k != 2);
                free_presult(&s);
            }
            free_presult(&p);
            if (f32) {
                char what[96];
                snprintf(what, sizeof what, "C %lld S %lld config %d", (long long)C, (long long)S,
                         k);
                expect_portable_upcast(what, &d, configs[k], kind);
            }
        }
    for (int k = 0; k < 4; k++)
        free(configs[k]);
    free(weights);
    free_pdata(&d);
}

/* The regression edge tests run on every kernel path, float32 and float64,
 * with reduction none, against closed forms. reg_edge_eval evaluates n <=
 * 16 elements (f32: the operands rounded to float32; u, the variance, may
 * be NULL): the per-element loss and the gradients for input and var. */
enum { REG_EDGE_CAP = 16 };

static void reg_edge_eval(const char *config, int path, int f32, int n, const double *x,
                          const double *t, const double *u, double *out, double *gx, double *gu)
{
    cr_assert(n <= REG_EDGE_CAP);
    int64_t shape[1] = {n};
    int32_t dt = f32 ? LK_DTYPE_F32 : LK_DTYPE_F64;
    double xd[REG_EDGE_CAP], td[REG_EDGE_CAP], ud[REG_EDGE_CAP] = {0}, od[REG_EDGE_CAP];
    double gxd[REG_EDGE_CAP], gud[REG_EDGE_CAP];
    float xf[REG_EDGE_CAP], tf[REG_EDGE_CAP], uf[REG_EDGE_CAP] = {0}, of[REG_EDGE_CAP];
    float gxf[REG_EDGE_CAP], guf[REG_EDGE_CAP];
    for (int i = 0; i < n; i++) {
        xd[i] = x[i], td[i] = t[i], xf[i] = (float)x[i], tf[i] = (float)t[i];
        if (u)
            ud[i] = u[i], uf[i] = (float)u[i];
    }
    lk_named_tensor in[3] = {{"input", {f32 ? (void *)xf : xd, dt, 1, shape, NULL}, "input"},
                             {"target", {f32 ? (void *)tf : td, dt, 1, shape, NULL}, "target"},
                             {"var", {f32 ? (void *)uf : ud, dt, 1, shape, NULL}, "var"}};
    lk_named_tensor g[2] = {{"input", {f32 ? (void *)gxf : gxd, dt, 1, shape, NULL}, "grad"},
                            {"var", {f32 ? (void *)guf : gud, dt, 1, shape, NULL}, "grad_var"}};
    lk_tensor o = {f32 ? (void *)of : od, dt, 1, shape, NULL};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in, args.n_tensors = u ? 3 : 2;
    args.grads = g, args.n_grads = u ? 2 : 1;
    args.out = &o;
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss_on(rt, config, path);
    double value;
    lk_status st = lk_loss_eval(loss, &args, &value);
    cr_assert_eq(st, LK_OK, "%s: lk_loss_eval: %s", config, args.errmsg);
    for (int i = 0; i < n; i++) {
        out[i] = f32 ? of[i] : od[i];
        gx[i] = f32 ? gxf[i] : gxd[i];
        if (u)
            gu[i] = f32 ? guf[i] : gud[i];
    }
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

/* gaussian_nll with an infinite variance: the loss +inf, both gradients 0
 * (torch's autograd gives 0 for var as well: 1/v - d^2/v^2 at v = inf),
 * never NaN; the finite elements beside them by the closed form. Float32
 * and float64, reduction none, every path. */
Test(edge, gaussian_nll_infinite_var)
{
    const double x[4] = {1.0, 3.0, -2.0, 0.5}, t[4] = {0.0, 1.0, 1.0, 0.0};
    const double var[4] = {HUGE_VAL, 1.5, HUGE_VAL, 2.0};
    for (int f32 = 0; f32 <= 1; f32++)
        for (int path = 0; path < N_PATHS; path++) {
            double out[4], gx[4], gv[4];
            reg_edge_eval("{\"loss\": \"gaussian_nll\", \"reduction\": \"none\"}", path, f32, 4, x,
                          t, var, out, gx, gv);
            for (int i = 0; i < 4; i++) {
                double d = x[i] - t[i], v = var[i];
                double wo = isinf(v) ? HUGE_VAL : 0.5 * (log(v) + d * d / v);
                double wx = isinf(v) ? 0.0 : d / v,
                       wv = isinf(v) ? 0.0 : 0.5 * (v - d * d) / (v * v);
                double tol = f32 ? 1e-6 : 1e-14;
                cr_expect(isinf(wo) ? out[i] == wo : fabs(out[i] - wo) <= tol * fabs(wo),
                          "f32 %d %s: out[%d] = %g, want %g", f32, path_names[path], i, out[i], wo);
                cr_expect(fabs(gx[i] - wx) <= tol * fabs(wx) + 1e-300,
                          "f32 %d %s: d/dinput[%d] = %g, want %g", f32, path_names[path], i, gx[i],
                          wx);
                cr_expect(fabs(gv[i] - wv) <= tol * fabs(wv) + 1e-300,
                          "f32 %d %s: d/dvar[%d] = %g, want %g", f32, path_names[path], i, gv[i],
                          wv);
            }
        }
}

/* robust where z^2 overflows the dtype but z does not (float32 |z| >
 * 1.8e19, float64 |z| > 1.3e154): value and gradient against the closed
 * form in long double, whose range holds z^2. */
static void robust_far_case(double alpha, double scale, int f32)
{
    static const double mag32[3] = {1e20, 1e30, 3e38}, mag64[3] = {1e160, 1e200, 1e300};
    double xd[6], td[6] = {0}, gd[6], od[6];
    float xf[6], tf[6] = {0}, gf[6], of[6];
    for (int i = 0; i < 6; i++) {
        xd[i] = (i % 2 ? -1.0 : 1.0) * (f32 ? mag32 : mag64)[i / 2];
        xf[i] = (float)xd[i];
    }
    static const int64_t shape[1] = {6};
    int32_t dt = f32 ? LK_DTYPE_F32 : LK_DTYPE_F64;
    call c = {.x = {f32 ? (void *)xf : xd, dt, 1, shape, NULL},
              .t = {f32 ? (void *)tf : td, dt, 1, shape, NULL},
              .grad = f32 ? (void *)gf : gd,
              .out = f32 ? (void *)of : od,
              .out_ndim = 1,
              .out_shape = {6}};
    char config[160];
    snprintf(config, sizeof config,
             "{\"loss\": \"robust\", \"params\": {\"alpha\": %.17g, \"scale\": %.17g}, "
             "\"reduction\": \"none\"}",
             alpha, scale);
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, config);
    run_ok(loss, &c);
    long double a = alpha, b = fabsl(a - 2.0L);
    double top = f32 ? FLT_MAX : DBL_MAX;
    for (int i = 0; i < 6; i++) {
        double out = f32 ? of[i] : od[i], grad = f32 ? gf[i] : gd[i];
        long double z = (long double)xd[i] / scale, q = z * z / b;
        long double rho =
            alpha == 0.0 ? log1pl(z * z / 2.0L) : b / a * (powl(q + 1.0L, a / 2.0L) - 1.0L);
        long double g = z / scale * powl(q + 1.0L, a / 2.0L - 1.0L);
        /* rounded to the dtype: beyond its range inf, below it 0 */
        double wo = fabsl(rho) > top ? HUGE_VAL : f32 ? (float)rho : (double)rho;
        double wg = fabsl(g) > top ? copysign(HUGE_VAL, (double)g) : f32 ? (float)g : (double)g;
        double tol = f32 ? 2e-6 : 1e-13, floor = f32 ? 1e-43 : 1e-300;
        cr_expect(isinf(wo) ? out == wo : fabs(out - wo) <= tol * fabs(wo) + floor,
                  "%s f32 %d: out[%d] = %.9g, want %.9g", config, f32, i, out, wo);
        cr_expect(isinf(wg) ? grad == wg : fabs(grad - wg) <= tol * fabs(wg) + floor,
                  "%s f32 %d: grad[%d] = %.9g, want %.9g", config, f32, i, grad, wg);
    }
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

Test(edge, robust_beyond_the_square)
{
    const double alphas[] = {-1000.0, -2.0, -0.5, 0.0, 0.5, 1.0, 1.5, 1.99};
    for (size_t k = 0; k < sizeof alphas / sizeof alphas[0]; k++)
        for (int f32 = 0; f32 <= 1; f32++) {
            robust_far_case(alphas[k], 1.0, f32);
            robust_far_case(alphas[k], 2.5, f32);
        }
}

/* An operand as the kernel sees it: rounded to float32 for f32. */
static long double reg_edge_in(double v, int f32)
{
    return f32 ? (long double)(float)v : (long double)v;
}

/* got against want rounded to the dtype (beyond its range +-inf, below it
 * the subnormals): the same infinity or NaN, else within rel of it plus
 * three units of the dtype's smallest subnormal. */
static int reg_edge_close(double got, long double want, int f32, double rel)
{
    long double top = f32 ? FLT_MAX : DBL_MAX;
    double w = isnan(want)         ? NAN
               : fabsl(want) > top ? copysign(HUGE_VAL, (double)want)
               : f32               ? (double)(float)want
                                   : (double)want;
    if (isnan(w))
        return isnan(got);
    if (isinf(w))
        return got == w;
    double tiny = 3.0 * (f32 ? 0x1p-149 : 0x1p-1074);
    return fabs(got - w) <= rel * fabs(w) + tiny;
}

/* robust where the old forms overflowed or lost their digits: z^2 finite
 * but z^2 / |alpha - 2| beyond the dtype (alpha in (1, 2)), z = d / scale
 * itself beyond it (scale < 1: alpha = 0 gave inf, alpha = -1e-6 the
 * bound 2e6 of an infinite d), alpha = +-1e-6 where z^2 overflows (1e-3
 * off by a power less one), and gradients below 1e-200 (alpha = -2, -0.5)
 * that are products of factors which underflow alone. */
Test(edge, robust_overflow_window)
{
    static const struct {
        double alpha, scale;
        int f32, n;
        double d[4];
    } cases[] = {
        {1.5, 1.0, 0, 4, {1e153, 1e154, -1.3e154, 1e200}},
        {1.99, 1.0, 0, 2, {1e154, -1e155}},
        {1.999999, 1.0, 1, 3, {1e16, 1e18, -1e19}},
        {1.5, 1.0, 1, 3, {1e18, 1.5e19, -3e38}},
        {0.0, 0.01, 1, 3, {1e36, 1e38, -3e38}},
        {-1e-6, 0.01, 1, 2, {1e36, 1e38}},
        {0.0, 0.01, 0, 2, {1e300, 1e307}},
        {1e-6, 1.0, 1, 2, {1e20, 1e30}},
        {-1e-6, 1.0, 1, 2, {1e20, -1e30}},
        {1e-6, 1.0, 1, 1, {1e18}},
        {1e-6, 1.0, 0, 3, {1e150, 1e160, 1e300}},
        {-2.0, 1.0, 0, 2, {1e100, -1e102}},
        {-0.5, 1.0, 0, 2, {1e150, 1e200}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int path = 0; path < N_PATHS; path++) {
            int f32 = cases[k].f32, n = cases[k].n;
            double t[4] = {0}, out[4], gx[4];
            char config[160];
            snprintf(config, sizeof config,
                     "{\"loss\": \"robust\", \"params\": {\"alpha\": %.17g, \"scale\": %.17g}, "
                     "\"reduction\": \"none\"}",
                     cases[k].alpha, cases[k].scale);
            reg_edge_eval(config, path, f32, n, cases[k].d, t, NULL, out, gx, NULL);
            long double a = cases[k].alpha, b = fabsl(a - 2.0L), c = cases[k].scale;
            double tol = f32 ? 2e-6 : 1e-13;
            for (int i = 0; i < n; i++) {
                long double z = reg_edge_in(cases[k].d[i], f32) / c, L = log1pl(z * z / b);
                long double rho = a == 0.0L ? L : b / a * expm1l(a / 2.0L * L);
                long double g = z / c * expl((a / 2.0L - 1.0L) * L);
                cr_expect(reg_edge_close(out[i], rho, f32, tol),
                          "%s %s f32 %d: rho(%g) = %.9g, want %.9Lg", config, path_names[path], f32,
                          cases[k].d[i], out[i], rho);
                cr_expect(reg_edge_close(gx[i], g, f32, tol),
                          "%s %s f32 %d: grad(%g) = %.9g, want %.9Lg", config, path_names[path],
                          f32, cases[k].d[i], gx[i], g);
            }
        }
}

/* gaussian_nll with a variance below 1 / max of the dtype (an eps that
 * small, and var at or below it): 1 / v is inf there, and d (1 / v) gave
 * NaN at d = 0 and inf where d^2 / v is tiny (torch: -356.9 and -46.05 at
 * v = 1e-310 and 1e-40). Against long double, every path, both dtypes;
 * the var gradient, about 0.5 / v, is beyond the dtype (inf) but for v = d^2,
 * where it is 0. */
Test(edge, gaussian_nll_subnormal_var)
{
    static const struct {
        double eps;
        int f32, n;
        double x[4], var[4];
    } cases[] = {
        {1e-310, 0, 4, {0.0, 1e-160, 0.0, 0.0}, {1e-310, 1e-310, 0.0, 1e-300}},
        {1e-40, 1, 4, {0.0, 1e-22, 0.0, 0.0}, {1e-40, 1e-40, 0.0, 1e-30}},
        {0x1p-1074, 0, 2, {0x1p-537, 0.0}, {0x1p-1074, 0.0}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int path = 0; path < N_PATHS; path++) {
            int f32 = cases[k].f32, n = cases[k].n;
            double t[4] = {0}, out[4], gx[4], gv[4];
            char config[160];
            snprintf(config, sizeof config,
                     "{\"loss\": \"gaussian_nll\", \"params\": {\"eps\": %.17g}, "
                     "\"reduction\": \"none\"}",
                     cases[k].eps);
            reg_edge_eval(config, path, f32, n, cases[k].x, t, cases[k].var, out, gx, gv);
            double tol = f32 ? 2e-6 : 1e-13;
            for (int i = 0; i < n; i++) {
                long double d = reg_edge_in(cases[k].x[i], f32),
                            e = reg_edge_in(cases[k].eps, f32),
                            v = reg_edge_in(cases[k].var[i], f32);
                v = v > e ? v : e;
                long double lo = 0.5L * (logl(v) + d * d / v), g = d / v,
                            gu = 0.5L * (v - d * d) / v / v;
                cr_expect(reg_edge_close(out[i], lo, f32, tol), "%s %s: out[%d] = %.9g, want %.9Lg",
                          config, path_names[path], i, out[i], lo);
                cr_expect(reg_edge_close(gx[i], g, f32, tol),
                          "%s %s: d/dinput[%d] = %.9g, want %.9Lg", config, path_names[path], i,
                          gx[i], g);
                cr_expect(reg_edge_close(gv[i], gu, f32, tol),
                          "%s %s: d/dvar[%d] = %.9g, want %.9Lg", config, path_names[path], i,
                          gv[i], gu);
            }
        }
}

/* gaussian_nll's var gradient where d^2 is near v, on every path: v - d^2
 * is one rounding (a fused multiply-add) on the portable path too, which
 * gave -0.0568 for -0.04876 (float32, d = 0.001, v = 1e-6: d^2 is v's
 * neighbour) and 0 for -4.3e-11 and -1.1e-55 in float64. */
Test(edge, gaussian_nll_var_gradient_near_d2)
{
    static const struct {
        int f32;
        double x, var;
    } cases[] = {{1, 0.001, 1e-6}, {0, 0.001, 1e-6}, {0, 1e19, 1e38}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int path = 0; path < N_PATHS; path++) {
            int f32 = cases[k].f32;
            double t[1] = {0}, out[1], gx[1], gv[1];
            const char *config = "{\"loss\": \"gaussian_nll\", \"params\": {\"eps\": 1e-30}, "
                                 "\"reduction\": \"none\"}";
            reg_edge_eval(config, path, f32, 1, &cases[k].x, t, &cases[k].var, out, gx, gv);
            long double d = reg_edge_in(cases[k].x, f32), v = reg_edge_in(cases[k].var, f32);
            long double gu = 0.5L * fmal(-d, d, v) / v / v; /* d^2 exact inside */
            cr_expect(reg_edge_close(gv[0], gu, f32, f32 ? 2e-6 : 1e-13),
                      "f32 %d %s: d/dvar(x = %g, var = %g) = %.9g, want %.9Lg", f32,
                      path_names[path], cases[k].x, cases[k].var, gv[0], gu);
        }
}

/* cross_entropy's mean is the same for class weights w and k w: in
 * float32 lanes weights of 1e-39 (w_y / s subnormal) and 1e39 (beyond
 * float32) gave +-inf and NaN gradients on the SIMD paths, where the
 * gradient's scale 1 / sum w was applied in the lanes. Against the same
 * call with weights 1, index targets (with label smoothing too) and
 * probability targets, every path; float32 input (2, 3). */
Test(edge, cross_entropy_weights_far_from_one)
{
    static const float xv[6] = {1.0f, 2.0f, 0.5f, 0.0f, 1.0f, 3.0f};
    static const int64_t yv[2] = {0, 2}, xs[2] = {2, 3}, ys[1] = {2};
    static const float pv[6] = {0.7f, 0.2f, 0.1f, 0.0f, 0.25f, 0.75f};
    static const char *const extra[3] = {"", ", \"label_smoothing\": 0.1", ""};
    static const double ws[4] = {1e-39, 1e-44, 1e39, 3e38};
    for (int kind = 0; kind < 3; kind++) /* index, index smoothed, probabilities */
        for (int path = 0; path < N_PATHS; path++) {
            float x[6], t[6], g1[6], gw[6];
            int64_t y[2] = {yv[0], yv[1]};
            memcpy(x, xv, sizeof x), memcpy(t, pv, sizeof t);
            call c = {.x = {x, LK_DTYPE_F32, 2, xs, NULL},
                      .t = kind < 2 ? (lk_tensor){y, LK_DTYPE_I64, 1, ys, NULL}
                                    : (lk_tensor){t, LK_DTYPE_F32, 2, xs, NULL}};
            char config[192];
            lk_runtime *rt = open_runtime(1);
            snprintf(config, sizeof config,
                     "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [1, 1, 1]%s}}",
                     extra[kind]);
            lk_loss *loss = make_loss_on(rt, config, path);
            c.grad = g1;
            double v1 = run_ok(loss, &c);
            lk_loss_free(loss);
            /* probability targets: weights beyond float32 scale the
             * gradient's terms past it, however the difference is formed */
            for (int k = 0; k < (kind == 2 ? 2 : 4); k++) {
                snprintf(config, sizeof config,
                         "{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [%g, %g, "
                         "%g]%s}}",
                         ws[k], ws[k], ws[k], extra[kind]);
                loss = make_loss_on(rt, config, path);
                c.grad = gw;
                double v = run_ok(loss, &c);
                /* probability targets: the mean divides by the positions,
                 * so value and gradient scale with the weights */
                double f = kind == 2 ? ws[k] : 1.0;
                cr_expect(fabs(v - f * v1) <= 1e-6 * fabs(f * v1),
                          "%s %s: value %.9g, weights 1: %.9g", config, path_names[path], v, v1);
                for (int i = 0; i < 6; i++) {
                    double want = f * g1[i], w32 = fabs(want) > FLT_MAX ? copysign(HUGE_VAL, want)
                                                                       : (double)(float)want;
                    cr_expect(isinf(w32) ? gw[i] == w32
                                         : fabs(gw[i] - want) <= 1e-6 * fabs(want) + 1e-7 * f +
                                                                     3.0 * 0x1p-149,
                              "%s %s: grad[%d] = %.9g, want %.9g", config, path_names[path], i,
                              gw[i], want);
                }
                lk_loss_free(loss);
            }
            lk_runtime_close(rt);
        }
}

/* nll's mean is the same for class weights w and k w, and its sum k times
 * the sum of weights 1 (a double): float32 lanes rounded the weights to
 * floats (1e-44 subnormal: the mean 0.7857 for 0.8171; 1e-46 zero: the
 * mean and sum 0) and applied 1 / sum w in the lanes. Every path, float32
 * log-probabilities (2, 3); also (2, 3, 9), whose rows hold a vector of
 * positions (the backward that writes whole rows). */
Test(edge, nll_weights_far_from_one)
{
    static const double ws[5] = {1e-39, 1e-44, 1e-46, 1e39, 3e38};
    static const int64_t shapes[2][3] = {{2, 3, 1}, {2, 3, 9}};
    for (int sh = 0; sh < 2; sh++)
        for (int path = 0; path < N_PATHS; path++) {
            int64_t S = shapes[sh][2], xs[3] = {2, 3, S}, ys[2] = {2, S};
            float x[54], g1[54], gw[54];
            int64_t y[18];
            for (int64_t n = 0; n < 2; n++)
                for (int64_t j = 0; j < S; j++) {
                    double z[3] = {sin(1.0 + n + 0.3 * j), cos(2.0 * n + j), 0.5 * j - n}, m = 0;
                    for (int c = 0; c < 3; c++)
                        m += exp(z[c]);
                    for (int c = 0; c < 3; c++)
                        x[(n * 3 + c) * S + j] = (float)(z[c] - log(m));
                    y[n * S + j] = (n + j) % 3;
                }
            call c = {.x = {x, LK_DTYPE_F32, sh ? 3 : 2, xs, NULL},
                      .t = {y, LK_DTYPE_I64, sh ? 2 : 1, ys, NULL}};
            int64_t ne = 2 * 3 * S;
            for (int red = 0; red < 2; red++) {
                const char *rn = red ? "sum" : "mean";
                char config[192];
                lk_runtime *rt = open_runtime(1);
                snprintf(config, sizeof config,
                         "{\"loss\": \"nll\", \"params\": {\"weight\": [1, 1, 1]}, "
                         "\"reduction\": \"%s\"}",
                         rn);
                lk_loss *loss = make_loss_on(rt, config, path);
                c.grad = g1;
                double v1 = run_ok(loss, &c);
                lk_loss_free(loss);
                for (int k = 0; k < 5; k++) {
                    snprintf(config, sizeof config,
                             "{\"loss\": \"nll\", \"params\": {\"weight\": [%g, %g, %g]}, "
                             "\"reduction\": \"%s\"}",
                             ws[k], ws[k], ws[k], rn);
                    loss = make_loss_on(rt, config, path);
                    c.grad = gw;
                    double v = run_ok(loss, &c), f = red ? ws[k] : 1.0;
                    cr_expect(fabs(v - f * v1) <= 1e-6 * fabs(f * v1),
                              "%s %s S %lld: value %.9g, want %.9g", config, path_names[path],
                              (long long)S, v, f * v1);
                    for (int64_t i = 0; i < ne; i++) {
                        double want = f * g1[i];
                        double w32 = fabs(want) > FLT_MAX ? copysign(HUGE_VAL, want)
                                                          : (double)(float)want;
                        cr_expect(isinf(w32) ? gw[i] == w32
                                             : fabs(gw[i] - w32) <= 1e-6 * fabs(w32) + 0x1p-149,
                                  "%s %s S %lld: grad[%lld] = %.9g, want %.9g", config,
                                  path_names[path], (long long)S, (long long)i, gw[i], w32);
                    }
                    lk_loss_free(loss);
                }
                lk_runtime_close(rt);
            }
        }
}

/* robust with a scale far from 1 for the dtype, where 1 / scale is not a
 * normal number of it or not one at all: a zero residual gave 0 inf = NaN
 * (float32 from scale 3e-39, float64 from 5.6e-309), subnormal residuals
 * with a moderate z gave 0 or inf, and a float32 scale of 1e40 took its z
 * from a subnormal 1 / scale. Against z = d / scale in long double, every
 * path, both dtypes, several alphas (2 has its own kernel). */
Test(edge, robust_scale_far_from_one)
{
    static const struct {
        double scale;
        int f32, n;
        double d[4];
    } cases[] = {
        {1e-39, 1, 4, {0.0, 1.401298464324817e-45, 1e-40, -1e-30}},
        {1e-46, 1, 3, {0.0, 1.401298464324817e-45, -2.8e-45}},
        {1e-300, 1, 2, {0.0, 1e-40}},
        {1e40, 1, 4, {0.0, 3e38, -1e30, 1e-10}},
        {1e-310, 0, 4, {0.0, 4.9406564584124654e-324, -1e-320, 1e-300}},
        {4.9406564584124654e-324, 0, 3, {0.0, 4.9406564584124654e-324, -1e-323}},
        {1e308, 0, 3, {0.0, 1e308, -1.7e308}},
    };
    static const double alphas[] = {2.0, 1.0, 0.0, -2.0, 0.5, -1000.0};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (size_t ai = 0; ai < sizeof alphas / sizeof alphas[0]; ai++)
            for (int path = 0; path < N_PATHS; path++) {
                int f32 = cases[k].f32, n = cases[k].n;
                double t[4] = {0}, out[4], gx[4];
                char config[160];
                snprintf(config, sizeof config,
                         "{\"loss\": \"robust\", \"params\": {\"alpha\": %.17g, \"scale\": "
                         "%.17g}, \"reduction\": \"none\"}",
                         alphas[ai], cases[k].scale);
                reg_edge_eval(config, path, f32, n, cases[k].d, t, NULL, out, gx, NULL);
                long double a = alphas[ai], b = fabsl(a - 2.0L), c = cases[k].scale;
                double tol = f32 ? 2e-6 : 1e-13;
                for (int i = 0; i < n; i++) {
                    long double z = reg_edge_in(cases[k].d[i], f32) / c, rho, g;
                    if (a == 2.0L) {
                        rho = z * z / 2.0L;
                        g = z / c;
                    } else {
                        long double L = log1pl(z * z / b);
                        rho = a == 0.0L ? L : b / a * expm1l(a / 2.0L * L);
                        g = z / c * expl((a / 2.0L - 1.0L) * L);
                    }
                    cr_expect(reg_edge_close(out[i], rho, f32, tol),
                              "%s %s f32 %d: rho(%g) = %.9g, want %.9Lg", config,
                              path_names[path], f32, cases[k].d[i], out[i], rho);
                    cr_expect(reg_edge_close(gx[i], g, f32, tol),
                              "%s %s f32 %d: grad(%g) = %.9g, want %.9Lg", config,
                              path_names[path], f32, cases[k].d[i], gx[i], g);
                }
            }
}

/* gaussian_nll's var gradient 0.5 (v - d^2) / v^2 for large variances
 * (float32 1e19 to the largest, float64 1e160 to 1.7e308), where v^2
 * overflows or 1 / v^2 underflows but the gradient, about 0.5 / v, is a
 * normal or subnormal number (torch: 5e-24 at 1e23 in float32; losskit
 * gave 0), and with NaN or infinite operands there: a NaN target gives
 * NaN for all three, also with var 1e30 or inf (losskit gave a var
 * gradient 0); an infinite target the limits +inf, -inf, -inf; d^2
 * beyond the dtype with v = d gives -0.5, not -inf. */
Test(edge, gaussian_nll_large_var)
{
    static const double x32[] = {1, 1, 1, 1, 1, 1, 0, 0, 1, 1e20, 3, 1},
                        t32[] = {0, 0, 0, 0, 0, 0, NAN, INFINITY, NAN, 0, 1, 0},
                        v32[] = {1e19, 1e22, 1e23,     1e30, 1e38, 3e38,
                                 1e30, 1e30, INFINITY, 1e20, 1.5,  INFINITY};
    static const double x64[] = {1, 1, 1, 1, 0, 0, 1, 1e160, INFINITY, 3, 1},
                        t64[] = {0, 0, 0, 0, NAN, INFINITY, NAN, 0, 0, 1, 0},
                        v64[] = {1e160,    1e165, 1e300,    1.7e308, 1e300,   1e300,
                                 INFINITY, 1e160, INFINITY, 1.5,     INFINITY};
    for (int f32 = 0; f32 <= 1; f32++)
        for (int path = 0; path < N_PATHS; path++) {
            const double *x = f32 ? x32 : x64, *t = f32 ? t32 : t64, *var = f32 ? v32 : v64;
            int n = f32 ? (int)(sizeof x32 / sizeof x32[0]) : (int)(sizeof x64 / sizeof x64[0]);
            double out[REG_EDGE_CAP], gx[REG_EDGE_CAP], gv[REG_EDGE_CAP];
            reg_edge_eval("{\"loss\": \"gaussian_nll\", \"reduction\": \"none\"}", path, f32, n, x,
                          t, var, out, gx, gv);
            double tol = f32 ? 1e-6 : 1e-14;
            for (int i = 0; i < n; i++) {
                long double d = reg_edge_in(x[i], f32) - reg_edge_in(t[i], f32);
                long double v = reg_edge_in(var[i], f32); /* all above eps */
                long double wo = 0.5L * (logl(v) + d * d / v), wx = d / v;
                long double wv = 0.5L * (v - d * d) / (v * v);
                if (isinf(v) && isfinite(d))
                    wo = HUGE_VAL, wx = 0.0L, wv = 0.0L;
                cr_expect(reg_edge_close(out[i], wo, f32, tol),
                          "%s f32 %d: loss[%d] = %.9g, want %.9Lg", path_names[path], f32, i,
                          out[i], wo);
                cr_expect(reg_edge_close(gx[i], wx, f32, tol),
                          "%s f32 %d: d/dinput[%d] = %.9g, want %.9Lg", path_names[path], f32, i,
                          gx[i], wx);
                cr_expect(reg_edge_close(gv[i], wv, f32, tol),
                          "%s f32 %d: d/dvar[%d] = %.9g, want %.9Lg", path_names[path], f32, i,
                          gv[i], wv);
            }
        }
}

/* poisson_nll at the edges of its domain: with log_input false a rate
 * with x + eps < 0 gives a NaN loss as torch (losskit gave x itself for a
 * zero target, -1 at x = -1) and torch's gradient 1 - t / (x + eps); a NaN
 * rate a NaN gradient (it gave 1); x = +inf with a NaN target a NaN loss
 * in both forms (it gave +inf); and with eps = 0, subnormal rates and
 * targets the gradient 1 - t / x (it gave -inf, 1 / x overflowing). */
static void poisson_edge_case(const char *config, int f32, int n, const double *x, const double *t,
                              int log_input, double eps)
{
    for (int path = 0; path < N_PATHS; path++) {
        double out[REG_EDGE_CAP], gx[REG_EDGE_CAP];
        reg_edge_eval(config, path, f32, n, x, t, NULL, out, gx, NULL);
        double tol = f32 ? 1e-6 : 1e-14;
        for (int i = 0; i < n; i++) {
            long double xl = reg_edge_in(x[i], f32), tl = reg_edge_in(t[i], f32);
            long double xe = xl + (f32 ? (long double)(float)eps : (long double)eps), wo, wg;
            if (log_input) {
                wo = isinf(xl) && xl > 0 && !isnan(tl) ? HUGE_VAL : expl(xl) - tl * xl;
                wg = expl(xl) - tl;
            } else if (isnan(xl) || isnan(tl)) {
                wo = wg = NAN;
            } else {
                wo = isinf(xl) && xl > 0 ? HUGE_VAL
                     : xe < 0            ? NAN
                     : tl == 0           ? xl
                                         : xl - tl * logl(xe);
                wg = tl == 0 ? 1.0L : 1.0L - tl / xe;
            }
            cr_expect(reg_edge_close(out[i], wo, f32, tol),
                      "%s %s f32 %d: loss(%g, %g) = %.9g, want %.9Lg", config, path_names[path],
                      f32, x[i], t[i], out[i], wo);
            cr_expect(reg_edge_close(gx[i], wg, f32, tol),
                      "%s %s f32 %d: grad(%g, %g) = %.9g, want %.9Lg", config, path_names[path],
                      f32, x[i], t[i], gx[i], wg);
        }
    }
}

Test(edge, poisson_nll_rates_out_of_domain)
{
    static const double x[] = {-1, -INFINITY, -1, NAN, INFINITY, -1e-8, 2, INFINITY},
                        t[] = {0, 0, 2, 0, NAN, 0, 3, 2};
    static const double xl[] = {INFINITY, NAN, INFINITY, 1}, tl[] = {NAN, 0, 2, 2};
    static const double x0[] = {0x1p-1074, 1e-310, 1e-300, 1e-300, 4},
                        t0[] = {0x1p-1074, 1e-310, 1e-300, 2e-300, 3};
    static const double x0f[] = {0x1p-149, 1e-40, 1e-40, 4}, t0f[] = {0x1p-149, 1e-40, 2e-40, 3};
    for (int f32 = 0; f32 <= 1; f32++) {
        poisson_edge_case("{\"loss\": \"poisson_nll\", \"params\": {\"log_input\": false}, "
                          "\"reduction\": \"none\"}",
                          f32, 8, x, t, 0, 1e-8);
        poisson_edge_case("{\"loss\": \"poisson_nll\", \"reduction\": \"none\"}", f32, 4, xl, tl, 1,
                          0.0);
        poisson_edge_case("{\"loss\": \"poisson_nll\", \"params\": {\"log_input\": false, \"eps\": "
                          "0}, \"reduction\": \"none\"}",
                          f32, f32 ? 4 : 5, f32 ? x0f : x0, f32 ? t0f : t0, 0, 0.0);
    }
}

/* Messages name an element of a multi-dimensional tensor by its
 * multi-index, as "input1[1, 0]", not by its flat position. */
static lk_status eval_slots(const char *config, int n, const char *const *names,
                            const lk_tensor *ts, char *msg, size_t cap)
{
    lk_named_tensor in[4];
    for (int i = 0; i < n; i++) {
        in[i].name = names[i];
        in[i].tensor = ts[i];
        in[i].origin = names[i];
    }
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in, args.n_tensors = (size_t)n;
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, config);
    double v;
    lk_status st = lk_loss_eval(loss, &args, &v);
    snprintf(msg, cap, "%s", args.errmsg);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return st;
}

Test(edge, messages_name_elements_by_multi_index)
{
    static const int64_t s22[2] = {2, 2}, s2[1] = {2}, s23[2] = {2, 3};
    char msg[LK_ERRMSG_CAP];
    double a[4] = {1, 2, HUGE_VAL, 4}, b[4] = {1, 0, 0, 1}, y[2] = {1, -1};
    const char *cos_names[3] = {"input1", "input2", "target"};
    lk_tensor cos[3] = {{a, LK_DTYPE_F64, 2, s22, NULL},
                        {b, LK_DTYPE_F64, 2, s22, NULL},
                        {y, LK_DTYPE_F64, 1, s2, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"cosine_embedding\"}", 3, cos_names, cos, msg, sizeof msg),
                 LK_ERR_NUMERIC, "%s", msg);
    cr_expect(strstr(msg, "input1[1, 0] = inf") != NULL, "%s", msg);

    double x[6] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6};
    int64_t cls[6] = {0, -1, 0, 2, 1, 7};
    const char *two[2] = {"input", "target"};
    lk_tensor ml[2] = {{x, LK_DTYPE_F64, 2, s23, NULL}, {cls, LK_DTYPE_I64, 2, s23, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"multilabel_margin\"}", 2, two, ml, msg, sizeof msg),
                 LK_ERR_INVALID, "%s", msg);
    cr_expect(strstr(msg, "target[1, 2] = 7") != NULL, "%s", msg);

    double hx[6] = {0, 1, 2, 3, -HUGE_VAL, 5}, ht[6] = {1, -1, 1, -1, 1, -1};
    lk_tensor he[2] = {{hx, LK_DTYPE_F64, 2, s23, NULL}, {ht, LK_DTYPE_F64, 2, s23, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"hinge_embedding\"}", 2, two, he, msg, sizeof msg),
                 LK_ERR_NUMERIC, "%s", msg);
    cr_expect(strstr(msg, "input[1, 1] = -inf") != NULL, "%s", msg);

    double at[6] = {0, 1, 0, 1, 0.5, 3};
    lk_tensor as[2] = {{x, LK_DTYPE_F64, 2, s23, NULL}, {at, LK_DTYPE_F64, 2, s23, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"asymmetric\"}", 2, two, as, msg, sizeof msg),
                 LK_ERR_INVALID, "%s", msg);
    cr_expect(strstr(msg, "target[1, 2] = 3 is outside [0, 1]") != NULL, "%s", msg);

    /* an input of a rank the loss refuses, with a target that fits no input
     * of an accepted rank: the input's rank is what the message reports (the
     * slot's declared ndims, checked before the target's shape rule) */
    static const int64_t s231[3] = {2, 3, 1};
    int64_t y2[2] = {0, 1};
    lk_tensor mm[2] = {{x, LK_DTYPE_F64, 3, s231, NULL}, {y2, LK_DTYPE_I64, 1, s2, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"multi_margin\"}", 2, two, mm, msg, sizeof msg),
                 LK_ERR_SHAPE, "%s", msg);
    cr_expect(strstr(msg, "input (input): shape (2, 3, 1) has 3 dimensions, expected 1 or 2") !=
                  NULL,
              "%s", msg);
    /* an accepted rank with a target that does not fit it: the target's
     * shape rule, naming the input's shape */
    static const int64_t s23b[2] = {2, 3};
    int64_t y3[3] = {0, 1, 2};
    static const int64_t s3[1] = {3};
    lk_tensor mm2[2] = {{x, LK_DTYPE_F64, 2, s23b, NULL}, {y3, LK_DTYPE_I64, 1, s3, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"multi_margin\"}", 2, two, mm2, msg, sizeof msg),
                 LK_ERR_SHAPE, "%s", msg);
    cr_expect(strstr(msg, "target (target): shape (3,), expected (2,): the shape of input, (2, 3), "
                          "without dim 1") != NULL,
              "%s", msg);
}

Test(edge, lovasz_messages_name_elements_by_multi_index)
{
    static const int64_t s123[3] = {1, 2, 3}, s1322[4] = {1, 3, 2, 2}, s122[3] = {1, 2, 2};
    const char *two[2] = {"input", "target"};
    char msg[LK_ERRMSG_CAP];
    double x[6] = {0.1, 0.2, 0.3, 0.4, 0.5, HUGE_VAL};
    double t[6] = {0, 1, 0, 2, 1, 0}, t01[6] = {0, 1, 0, 1, 1, 0};
    lk_tensor h[2] = {{x, LK_DTYPE_F64, 3, s123, NULL}, {t, LK_DTYPE_F64, 3, s123, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"lovasz_hinge\"}", 2, two, h, msg, sizeof msg),
                 LK_ERR_INVALID, "%s", msg);
    cr_expect(strstr(msg, "target[0, 1, 0] = 2 is not 0 or 1") != NULL, "%s", msg);
    h[1].data = t01;
    cr_expect_eq(eval_slots("{\"loss\": \"lovasz_hinge\"}", 2, two, h, msg, sizeof msg),
                 LK_ERR_NUMERIC, "%s", msg);
    cr_expect(strstr(msg, "input[0, 1, 2] = inf is not finite") != NULL, "%s", msg);
    double xs[12] = {0};
    int64_t ys[4] = {0, 1, 5, 2};
    lk_tensor s[2] = {{xs, LK_DTYPE_F64, 4, s1322, NULL}, {ys, LK_DTYPE_I64, 3, s122, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"lovasz_softmax\"}", 2, two, s, msg, sizeof msg),
                 LK_ERR_INVALID, "%s", msg);
    cr_expect(strstr(msg, "target[0, 1, 0] = 5 is not a class in [0, C = 3)") != NULL, "%s", msg);
    /* a 1-D input, which has no class dimension: its rank is the message,
     * not the target's shape against it (lovasz_softmax's input declares 2
     * or more dimensions) */
    static const int64_t s4[1] = {4};
    lk_tensor r[2] = {{xs, LK_DTYPE_F64, 1, s4, NULL}, {ys, LK_DTYPE_I64, 1, s4, NULL}};
    cr_expect_eq(eval_slots("{\"loss\": \"lovasz_softmax\"}", 2, two, r, msg, sizeof msg),
                 LK_ERR_SHAPE, "%s", msg);
    cr_expect(strstr(msg, "input (input): shape (4,) has 1 dimension, expected 2 or more") != NULL,
              "%s", msg);
}

/* The stencil losses' refusal of an infinite input names it by its
 * multi-index, on both of their drivers (sobolev's differences, ssim's
 * windows). */
Test(edge, stencil_messages_name_elements_by_multi_index)
{
    static const int64_t s[4] = {1, 1, 12, 12};
    const char *two[2] = {"input", "target"};
    char msg[LK_ERRMSG_CAP];
    double x[144] = {0}, t[144] = {0};
    x[5 * 12 + 7] = HUGE_VAL;
    lk_tensor xt[2] = {{x, LK_DTYPE_F64, 4, s, NULL}, {t, LK_DTYPE_F64, 4, s, NULL}};
    const char *configs[3] = {"{\"loss\": \"sobolev\"}", "{\"loss\": \"ssim\"}",
                              "{\"loss\": \"total_variation\"}"};
    for (int c = 0; c < 3; c++) {
        cr_expect_eq(eval_slots(configs[c], c == 2 ? 1 : 2, two, xt, msg, sizeof msg),
                     LK_ERR_NUMERIC, "%s: %s", configs[c], msg);
        cr_expect(strstr(msg, "input[0, 0, 5, 7] = inf; this loss takes differences") != NULL,
                  "%s: %s", configs[c], msg);
    }
}

/* The segmentation losses with ignore_index: a float target that is not
 * ignore_index must still lie in [0, 1] (the screen of the targets is off
 * there, ignore_index itself lying anywhere); ignore_index passes. */
Test(edge, segmentation_ignore_index_keeps_the_unit_check)
{
    static const int64_t s1[4] = {1, 1, 2, 2}, s2[4] = {1, 2, 2, 2};
    const char *two[2] = {"input", "target"};
    const char *losses[3] = {"dice", "mcc", "tversky"};
    const char *modes[3] = {"binary", "multiclass", "multilabel"};
    char msg[LK_ERRMSG_CAP], config[200];
    for (int l = 0; l < 3; l++)
        for (int m = 0; m < 3; m++) {
            if (l == 1 && m == 1)
                continue; /* mcc has no multiclass mode */
            const int64_t *s = m == 0 ? s1 : s2;
            int n = m == 0 ? 4 : 8;
            double x[8] = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8};
            double t[8] = {0, 1, 7, 0, 1, 0, 7, 1};
            lk_tensor xt[2] = {{x, LK_DTYPE_F64, 4, s, NULL}, {t, LK_DTYPE_F64, 4, s, NULL}};
            snprintf(config, sizeof config,
                     "{\"loss\": \"%s\", \"params\": {\"mode\": \"%s\", \"ignore_index\": 7}}",
                     losses[l], modes[m]);
            cr_expect_eq(eval_slots(config, 2, two, xt, msg, sizeof msg), LK_OK, "%s: %s", config,
                         msg);
            t[n - 1] = 1.5;
            cr_expect_eq(eval_slots(config, 2, two, xt, msg, sizeof msg), LK_ERR_INVALID, "%s: %s",
                         config, msg);
            cr_expect(strstr(msg, "= 1.5 is outside [0, 1] and not ignore_index 7") != NULL,
                      "%s: %s", config, msg);
        }
    /* the per-position path (multiclass on probabilities) says the same */
    double x[8] = {0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6};
    double t[8] = {0, 1, 7, 0, 1, 0, 7, 1.5};
    lk_tensor xt[2] = {{x, LK_DTYPE_F64, 4, s2, NULL}, {t, LK_DTYPE_F64, 4, s2, NULL}};
    const char *probs = "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", "
                        "\"from_logits\": false, \"ignore_index\": 7}}";
    cr_expect_eq(eval_slots(probs, 2, two, xt, msg, sizeof msg), LK_ERR_INVALID, "%s", msg);
    cr_expect(strstr(msg, "target[0, 1, 1, 1] = 1.5 is outside [0, 1] and not ignore_index 7") !=
                  NULL,
              "%s", msg);
}

/* A NaN input gives a NaN value in every overlap loss (clamps and the
 * degenerate-class rules do not swallow it); tversky's outer power of a
 * negative mean (smooth > smooth_dr) is torch's pow: real for an integer
 * gamma, its gradient by central differences, NaN for a fractional one. */
static double tv_value(const char *config, double *x, double *t, int64_t n, double *grad)
{
    const int64_t s[1] = {n};
    lk_named_tensor in[2] = {{"input", {x, LK_DTYPE_F64, 1, s, NULL}, "input"},
                             {"target", {t, LK_DTYPE_F64, 1, s, NULL}, "target"}};
    lk_named_tensor g = {"input", {grad, LK_DTYPE_F64, 1, s, NULL}, "grad"};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in, args.n_tensors = 2;
    args.grads = grad ? &g : NULL, args.n_grads = grad ? 1 : 0;
    lk_runtime *rt = open_runtime(1);
    lk_loss *loss = make_loss(rt, config);
    double v = NAN;
    cr_assert_eq(lk_loss_eval(loss, &args, &v), LK_OK, "%s: %s", config, args.errmsg);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return v;
}

Test(edge, overlap_nan_and_negative_means)
{
    const char *nan_configs[] = {"{\"loss\": \"focal_tversky\"}", "{\"loss\": \"mcc\"}",
                                 "{\"loss\": \"tversky\"}", "{\"loss\": \"dice\"}",
                                 "{\"loss\": \"focal_tversky\", \"params\": {\"gamma\": 2}}"};
    for (size_t c = 0; c < sizeof nan_configs / sizeof nan_configs[0]; c++) {
        double x[4] = {0.3, NAN, -1.0, 2.0}, t[4] = {1, 0, 0, 1};
        double v = tv_value(nan_configs[c], x, t, 4, NULL);
        cr_expect(isnan(v), "%s: %g, not NaN", nan_configs[c], v);
    }
    const char *neg = "{\"loss\": \"tversky\", \"params\": {\"from_logits\": false, \"smooth\": 1, "
                      "\"smooth_dr\": 0, \"gamma\": %g}}";
    char config[200];
    double p[2] = {0.9, 0.1}, t[2] = {1.0, 0.0}, g[2];
    snprintf(config, sizeof config, neg, 2.0);
    double v = tv_value(config, p, t, 2, g);
    /* I = 0.9, FP = FN = 0.1, TI = 1.9 / 1.0, L = -0.9 */
    cr_expect(fabs(v - 0.81) <= 1e-14, "gamma 2: %.17g, want 0.81", v);
    for (int i = 0; i < 2; i++) {
        const double h = 1e-6;
        double pp[2] = {p[0], p[1]}, pm[2] = {p[0], p[1]};
        pp[i] += h, pm[i] -= h;
        double fd = (tv_value(config, pp, t, 2, NULL) - tv_value(config, pm, t, 2, NULL)) / (2 * h);
        cr_expect(fabs(g[i] - fd) <= 1e-7 * fmax(1.0, fabs(fd)),
                  "gamma 2: grad[%d] = %.12g, "
                  "central difference %.12g",
                  i, g[i], fd);
    }
    snprintf(config, sizeof config, neg, 0.5);
    v = tv_value(config, p, t, 2, NULL);
    cr_expect(isnan(v), "gamma 0.5 of a negative mean: %g, not NaN", v);
}

/* asymmetric with exponents other than 0 to 4 takes its powers by one pow
 * a vector, the lanes' bases and exponents selected first and b^(g - 1)
 * as b^g / b; gamma_neg 4 with gamma_pos 0 (the paper's setting) has a
 * kernel of its own. Against timm's formula in double with its derivative
 * in closed form, at exponents above and below 1, on logits that put many
 * bases at 0 (p below the clip: the clamp binds) and near it, hard and
 * soft targets, float32 and float64, every kernel path. */
static void asl_gen_ref(double x, double y, double gp, double gn, double *loss, double *grad)
{
    const double clip = 0.05, eps = 1e-8;
    double p = 1.0 / (1.0 + exp(-x)), q = 1.0 / (1.0 + exp(x)), pq = p * q;
    int top = q + clip >= 1.0; /* the clamp of q_c at 1 binds */
    double qc = top ? 1.0 : q + clip;
    double A = log(fmax(p, eps)), B = log(fmax(qc, eps));
    double dA = p < eps ? 0.0 : q, dqc = top ? 0.0 : -pq, dB = qc < eps ? 0.0 : dqc / qc;
    double b = y * q + (1.0 - y) * (1.0 - qc), db = -y * pq - (1.0 - y) * dqc;
    double g = gp * y + gn * (1.0 - y), W = pow(b, g);
    double gdb = g * db, dW = gdb == 0.0 ? 0.0 : gdb * pow(b, g - 1.0);
    double L = y * A + (1.0 - y) * B, dL = y * dA + (1.0 - y) * dB;
    *loss = -L * W;
    *grad = -(dL * W + L * dW);
}

Test(edge, asymmetric_fractional_exponents)
{
    enum { N = 4099 };
    /* gn, gp: the last is the paper's setting, which has a kernel of its own */
    static const double gammas[4][2] = {{2.5, 0.5}, {0.5, 1.5}, {3.0, 0.0}, {4.0, 0.0}};
    int64_t shape[1] = {N};
    double *xd = malloc(N * sizeof *xd), *td = malloc(N * sizeof *td);
    double *gd = malloc(N * sizeof *gd), *od = malloc(N * sizeof *od);
    float *xf = malloc(N * sizeof *xf), *tf = malloc(N * sizeof *tf);
    float *gf = malloc(N * sizeof *gf), *of = malloc(N * sizeof *of);
    double *rl = malloc(N * sizeof *rl), *rg = malloc(N * sizeof *rg);
    char *kink = malloc(N);
    cr_assert(xd && td && gd && od && xf && tf && gf && of && rl && rg && kink);
    lk_runtime *rt = open_runtime(2);
    for (int k = 0; k < 4; k++) {
        rng_state = 4242 + (uint64_t)k;
        double gmax = 0.0, lmax = 0.0;
        for (int64_t i = 0; i < N; i++) {
            /* logits in [-9, 9], a tenth of them within 0.01 of logit(clip) */
            double x = i % 10 == 0 ? -2.944439 + 0.02 * uniform() - 0.01 : 18.0 * uniform() - 9.0;
            /* soft targets in every third run of 16: the others binary vectors */
            double y = (i / 16) % 3 == 0 && i % 5 == 0 ? uniform() : (double)(uniform() < 0.4);
            xf[i] = (float)x, tf[i] = (float)y;
            xd[i] = xf[i], td[i] = tf[i];
            asl_gen_ref(xd[i], td[i], gammas[k][1], gammas[k][0], &rl[i], &rg[i]);
            /* within 64 float ulps of p = clip float32's own rounding of p decides r =
             * p - clip, whose power's derivative is unbounded there below an exponent of 1:
             * float32 is compared away from it, float64 everywhere */
            kink[i] = td[i] < 1.0 && fabs(1.0 / (1.0 + exp(-xd[i])) - 0.05) < 64 * 0x1p-24 * 0.05;
            gmax = fmax(gmax, fabs(rg[i]));
            lmax = fmax(lmax, fabs(rl[i]));
        }
        char config[200];
        snprintf(config, sizeof config,
                 "{\"loss\": \"asymmetric\", \"params\": {\"gamma_neg\": %g, \"gamma_pos\": "
                 "%g}, \"reduction\": \"none\"}",
                 gammas[k][0], gammas[k][1]);
        for (int f64 = 0; f64 < 2; f64++)
            for (int path = 0; path < N_PATHS; path++) {
                /* float32 against float64 data rounded to it: its own rounding; float64 to
                 * about the pow's accuracy */
                double rel = f64 ? 1e-11 : 2e-6, abs_g = f64 ? 1e-12 : 1e-6;
                lk_loss *loss = make_loss_on(rt, config, path);
                call cl;
                memset(&cl, 0, sizeof cl);
                lk_dtype dt = f64 ? LK_DTYPE_F64 : LK_DTYPE_F32;
                cl.x = (lk_tensor){f64 ? (void *)xd : (void *)xf, dt, 1, shape, NULL};
                cl.t = (lk_tensor){f64 ? (void *)td : (void *)tf, dt, 1, shape, NULL};
                cl.grad = f64 ? (void *)gd : (void *)gf;
                cl.out = f64 ? (void *)od : (void *)of;
                cl.out_ndim = 1, cl.out_shape[0] = N;
                run_ok(loss, &cl);
                int64_t bad = 0, first = -1;
                for (int64_t i = 0; i < N; i++) {
                    if (!f64 && kink[i])
                        continue;
                    double g = f64 ? gd[i] : gf[i], o = f64 ? od[i] : of[i];
                    int ok = fabs(g - rg[i]) <= rel * fabs(rg[i]) + abs_g * gmax &&
                             fabs(o - rl[i]) <= rel * fabs(rl[i]) + abs_g * lmax;
                    if (!ok && first < 0)
                        first = i;
                    bad += !ok;
                }
                cr_expect_eq(bad, 0,
                             "%s (%s, %s): %lld elements off, the first %lld (x %.9g, t %.9g): "
                             "grad %.12g want %.12g, loss %.12g want %.12g",
                             config, f64 ? "float64" : "float32", path_names[path],
                             (long long)bad, (long long)first, first < 0 ? 0.0 : xd[first],
                             first < 0 ? 0.0 : td[first],
                             first < 0 ? 0.0 : (f64 ? gd[first] : gf[first]),
                             first < 0 ? 0.0 : rg[first],
                             first < 0 ? 0.0 : (f64 ? od[first] : of[first]),
                             first < 0 ? 0.0 : rl[first]);
                lk_loss_free(loss);
            }
    }
    lk_runtime_close(rt);
    free(xd), free(td), free(gd), free(od), free(xf), free(tf), free(gf), free(of), free(rl),
        free(rg), free(kink);
}

/* asymmetric's kernel for timm's defaults takes a vector of 0s and 1s by
 * its fast path and any other by the general form: soft vectors among
 * binary ones, a few or many, alone or in runs, the last partial vector
 * among them; with reduction none, sum, and as the second term of a sum
 * (whose gradient accumulates), on every kernel path. Each element against
 * timm's formula in double, its gradient by central differences; and a
 * target outside [0, 1] inside a soft vector is reported by its index. */
static double asl_timm_ref(double x, double y)
{
    double p = 1.0 / (1.0 + exp(-x)), q = 1.0 / (1.0 + exp(x));
    double qc = fmin(q + 0.05, 1.0);
    double A = log(fmax(p, 1e-8)), B = log(fmax(qc, 1e-8));
    double b = y * q + (1.0 - y) * (1.0 - qc);
    return -(y * A + (1.0 - y) * B) * pow(b, y + 4.0 * (1.0 - y));
}

static int asl_near(double got, double want, double scale)
{
    return fabs(got - want) <= 2e-6 * fabs(want) + 1e-6 * scale;
}

Test(edge, asymmetric_soft_vectors_among_binary)
{
    enum { W = 16, N = 3 * 16384 + 37, NV = (N + W - 1) / W };
    int64_t shape[1] = {N};
    float *x = malloc(N * sizeof *x), *t = malloc(N * sizeof *t);
    float *g = malloc(N * sizeof *g), *o = malloc(N * sizeof *o);
    double *rl = malloc(N * sizeof *rl), *rg = malloc(N * sizeof *rg);
    cr_assert(x && t && g && o && rl && rg);
    lk_runtime *rt = open_runtime(2);
    for (int pattern = 0; pattern < 2; pattern++) {
        rng_state = 77 + (uint64_t)pattern;
        double rsum = 0.0, gmax = 0.0, lmax = 0.0;
        for (int64_t i = 0; i < N; i++) {
            int64_t v = i / W;
            /* 0: five soft vectors (3 and 4 a run, the partial last one);
             * 1: every seventh and a run of 300 */
            int soft = pattern == 0 ? (v == 3 || v == 4 || v == 100 || v == 2000 || v == NV - 1)
                                    : (v % 7 == 0 || (v >= 1000 && v < 1300));
            x[i] = (float)(12.0 * uniform() - 6.0);
            t[i] = soft && i % 3 == 0 ? (float)uniform() : (float)(uniform() < 0.3);
            double xd = x[i], h = 1e-5 * fmax(1.0, fabs(xd));
            rl[i] = asl_timm_ref(xd, t[i]);
            rg[i] = (asl_timm_ref(xd + h, t[i]) - asl_timm_ref(xd - h, t[i])) / (2.0 * h);
            rsum += rl[i];
            gmax = fmax(gmax, fabs(rg[i]));
            lmax = fmax(lmax, fabs(rl[i]));
        }
        const char *terms = "{\"terms\": [{\"loss\": \"asymmetric\", \"weight\": 1}, "
                            "{\"loss\": \"asymmetric\", \"weight\": 0.5}], \"reduction\": \"sum\"}";
        const char *const configs[3] = {"{\"loss\": \"asymmetric\", \"reduction\": \"none\"}",
                                        "{\"loss\": \"asymmetric\", \"reduction\": \"sum\"}",
                                        terms};
        for (int c = 0; c < 3; c++)
            for (int path = 0; path < N_PATHS; path++) {
                double k = c == 2 ? 1.5 : 1.0;
                lk_loss *loss = make_loss_on(rt, configs[c], path);
                call cl;
                memset(&cl, 0, sizeof cl);
                cl.x = (lk_tensor){x, LK_DTYPE_F32, 1, shape, NULL};
                cl.t = (lk_tensor){t, LK_DTYPE_F32, 1, shape, NULL};
                cl.grad = g;
                cl.out = c == 0 ? o : NULL;
                cl.out_ndim = 1, cl.out_shape[0] = N;
                double v = run_ok(loss, &cl);
                int64_t bad = 0, first = -1;
                for (int64_t i = 0; i < N; i++) {
                    int ok =
                        asl_near(g[i], k * rg[i], gmax) && (c != 0 || asl_near(o[i], rl[i], lmax));
                    if (!ok && first < 0)
                        first = i;
                    bad += !ok;
                }
                cr_expect_eq(bad, 0,
                             "%s (pattern %d, %s): %lld elements off, the first %lld: grad %.9g "
                             "want %.9g, loss %.9g want %.9g",
                             configs[c], pattern, path_names[path], (long long)bad,
                             (long long)first, first < 0 ? 0.0 : g[first],
                             first < 0 ? 0.0 : k * rg[first], first < 0 ? 0.0 : o[first],
                             first < 0 ? 0.0 : rl[first]);
                if (c != 0)
                    cr_expect(fabs(v - k * rsum) <= 1e-6 * k * rsum,
                              "%s (pattern %d, %s): %.12g, want %.12g", configs[c], pattern,
                              path_names[path], v, k * rsum);
                lk_loss_free(loss);
            }
        /* a bad target in a lone soft vector (pattern 0) or deep in the run */
        int64_t at = pattern == 0 ? 2000 * W + 9 : 1250 * W + 5;
        float keep = t[at];
        t[at] = 1.5f;
        for (int path = 0; path < N_PATHS; path++) {
            lk_loss *loss = make_loss_on(rt, configs[1], path);
            call cl;
            memset(&cl, 0, sizeof cl);
            cl.x = (lk_tensor){x, LK_DTYPE_F32, 1, shape, NULL};
            cl.t = (lk_tensor){t, LK_DTYPE_F32, 1, shape, NULL};
            cl.grad = g;
            double v;
            char want[64];
            snprintf(want, sizeof want, "target[%lld] = 1.5 is outside [0, 1]", (long long)at);
            cr_expect_eq(run_call(loss, &cl, &v), LK_ERR_INVALID, "pattern %d, %s: %s", pattern,
                         path_names[path], cl.errmsg);
            cr_expect(strstr(cl.errmsg, want) != NULL, "pattern %d, %s: '%s' lacks '%s'", pattern,
                      path_names[path], cl.errmsg, want);
            lk_loss_free(loss);
        }
        t[at] = keep;
    }
    lk_runtime_close(rt);
    free(x), free(t), free(g), free(o), free(rl), free(rg);
}

/* margin_ranking with infinite scores: -t (x1 - x2) + margin is +inf
 * (the hinge open: loss +inf, gradients -t and t) or -inf (closed: 0 and
 * 0) with any margin, as torch gives; only x1 = x2 = ±inf is NaN. With a
 * margin other than 0 the difference's rounding error is carried apart,
 * and once gave inf - inf = NaN for every infinite difference. Every
 * path, float32 and float64, reduction none and sum. */
Test(edge, margin_ranking_infinite_scores)
{
    enum { N = 37 };
    static const double pairs[][3] = {
        {0.0, HUGE_VAL, 1.0},   {HUGE_VAL, 0.0, 1.0},        {2.0, 1.0, 1.0},
        {-HUGE_VAL, 3.0, 1.0},  {HUGE_VAL, -HUGE_VAL, -1.0}, {-HUGE_VAL, HUGE_VAL, -1.0},
        {1e30, -HUGE_VAL, 1.0}, {0.5, 0.25, -1.0},           {-HUGE_VAL, -2.0, -1.0},
    };
    const size_t np = sizeof pairs / sizeof pairs[0];
    static const int64_t shape[1] = {N};
    static const double margins[4] = {0.0, 1.0, 0.5, -2.0};
    lk_runtime *rt = open_runtime(1);
    for (int f32 = 0; f32 <= 1; f32++)
        for (int m = 0; m < 4; m++)
            for (int path = 0; path < N_PATHS; path++) {
                int32_t dt = f32 ? LK_DTYPE_F32 : LK_DTYPE_F64;
                double a[N], b[N], t[N], o[N], g1[N], g2[N];
                float af[N], bf[N], tf[N], of[N], g1f[N], g2f[N];
                double want_sum = 0.0;
                for (int i = 0; i < N; i++) {
                    a[i] = pairs[i % np][0], b[i] = pairs[i % np][1], t[i] = pairs[i % np][2];
                    af[i] = (float)a[i], bf[i] = (float)b[i], tf[i] = (float)t[i];
                    if (f32) /* the float32 inputs as the loss sees them */
                        a[i] = af[i], b[i] = bf[i];
                }
                char config[128];
                snprintf(config, sizeof config,
                         "{\"loss\": \"margin_ranking\", \"params\": {\"margin\": %g}, "
                         "\"reduction\": \"none\"}",
                         margins[m]);
                for (int red = 0; red < 2; red++) {
                    if (red)
                        snprintf(config, sizeof config,
                                 "{\"loss\": \"margin_ranking\", \"params\": {\"margin\": %g}, "
                                 "\"reduction\": \"sum\"}",
                                 margins[m]);
                    lk_named_tensor in[3] = {
                        {"input1", {f32 ? (void *)af : a, dt, 1, shape, NULL}, "input1"},
                        {"input2", {f32 ? (void *)bf : b, dt, 1, shape, NULL}, "input2"},
                        {"target", {f32 ? (void *)tf : t, dt, 1, shape, NULL}, "target"}};
                    lk_named_tensor gr[2] = {
                        {"input1", {f32 ? (void *)g1f : g1, dt, 1, shape, NULL}, "g1"},
                        {"input2", {f32 ? (void *)g2f : g2, dt, 1, shape, NULL}, "g2"}};
                    lk_tensor out = {f32 ? (void *)of : o, dt, 1, shape, NULL};
                    lk_eval_args args;
                    lk_eval_args_init(&args);
                    args.tensors = in, args.n_tensors = 3;
                    args.grads = gr, args.n_grads = 2;
                    args.out = red ? NULL : &out;
                    lk_loss *loss = make_loss_on(rt, config, path);
                    double v = 0.0;
                    cr_assert_eq(lk_loss_eval(loss, &args, &v), LK_OK, "%s: %s", config,
                                 args.errmsg);
                    want_sum = 0.0;
                    for (int i = 0; i < N; i++) {
                        if (f32)
                            o[i] = of[i], g1[i] = g1f[i], g2[i] = g2f[i];
                        double h = -t[i] * (a[i] - b[i]) + margins[m];
                        double wl = h > 0.0 ? h : 0.0, wg = h >= 0.0 ? -t[i] : 0.0;
                        want_sum += wl;
                        if (!red)
                            cr_expect(o[i] == wl || fabs(o[i] - wl) <= 1e-6 * fabs(wl),
                                      "%s %s f32 %d: out[%d] = %g, want %g", config,
                                      path_names[path], f32, i, o[i], wl);
                        cr_expect(g1[i] == wg && g2[i] == -wg,
                                  "%s %s f32 %d: grads[%d] = %g, %g, want %g, %g", config,
                                  path_names[path], f32, i, g1[i], g2[i], wg, -wg);
                    }
                    if (red)
                        cr_expect(v == want_sum, "%s %s f32 %d: sum %g, want %g", config,
                                  path_names[path], f32, v, want_sum);
                    lk_loss_free(loss);
                }
            }
    lk_runtime_close(rt);
}

/* focal (binary) at an infinite logit on the wrong side of a soft target:
 * ce is +inf and 1 - p_t = t (or 1 - t) > 0, so the loss is +inf — also
 * where (1 - p_t)^gamma underflows to 0 (t = 1e-30, float32), which made it
 * 0 inf = NaN — with a finite gradient. Every path, float32 and float64,
 * gamma 2 (its own kernel) and others, reduction none and sum. */
Test(edge, focal_soft_targets_at_infinite_logits)
{
    enum { N = 20 };
    static const double xs[2] = {-HUGE_VAL, HUGE_VAL};
    static const double ts[5] = {1e-30, 1e-20, 0.5, 0.25, 1e-38};
    static const double gammas[3] = {2.0, 3.0, 1.5};
    static const int64_t shape[1] = {N};
    lk_runtime *rt = open_runtime(1);
    for (int f32 = 0; f32 <= 1; f32++)
        for (int k = 0; k < 3; k++)
            for (int path = 0; path < N_PATHS; path++)
                for (int red = 0; red < 2; red++) {
                    double x[N], t[N], o[N], g[N];
                    float xf[N], tf[N], of[N], gf[N];
                    for (int i = 0; i < N; i++) {
                        x[i] = xs[i % 2];
                        /* the target on the far side of x's: t small for -inf, 1 - t for +inf */
                        t[i] = x[i] < 0 ? ts[(i / 2) % 5] : 1.0 - ts[(i / 2) % 5];
                        xf[i] = (float)x[i], tf[i] = (float)t[i];
                    }
                    char config[160];
                    snprintf(config, sizeof config,
                             "{\"loss\": \"focal\", \"params\": {\"gamma\": %g}, \"reduction\": "
                             "\"%s\"}",
                             gammas[k], red ? "sum" : "none");
                    call c;
                    memset(&c, 0, sizeof c);
                    int32_t dt = f32 ? LK_DTYPE_F32 : LK_DTYPE_F64;
                    c.x = (lk_tensor){f32 ? (void *)xf : x, dt, 1, shape, NULL};
                    c.t = (lk_tensor){f32 ? (void *)tf : t, dt, 1, shape, NULL};
                    c.grad = f32 ? (void *)gf : g;
                    c.out = red ? NULL : (f32 ? (void *)of : o);
                    c.out_ndim = 1, c.out_shape[0] = N;
                    lk_loss *loss = make_loss_on(rt, config, path);
                    double v = run_ok(loss, &c);
                    for (int i = 0; i < N; i++) {
                        double oi = f32 ? of[i] : o[i], gi = f32 ? gf[i] : g[i];
                        if ((f32 ? (double)tf[i] : t[i]) == 1.0)
                            continue; /* 1 - 1e-20 rounds to 1: a hard target, loss 0 */
                        if (!red)
                            cr_expect(oi == HUGE_VAL, "%s %s f32 %d: out[%d] = %g (t = %g)", config,
                                      path_names[path], f32, i, oi, t[i]);
                        cr_expect(isfinite(gi), "%s %s f32 %d: grad[%d] = %g (t = %g)", config,
                                  path_names[path], f32, i, gi, t[i]);
                    }
                    if (red)
                        cr_expect(v == HUGE_VAL, "%s %s f32 %d: sum %g", config, path_names[path],
                                  f32, v);
                    lk_loss_free(loss);
                }
    lk_runtime_close(rt);
}

/* kl_div with log_target at the edges of e^t (t - x): a target of -inf
 * gives 0 whatever the input; an input of -inf gives +inf for any finite
 * target, also where e^t underflows to 0 (t = -800; it gave 0); a NaN input
 * stays NaN beside such a target (it gave 0). Every path, both dtypes. */
Test(edge, kl_div_log_target_extremes)
{
    enum { N = 21 };
    static const double pat[7][3] = {
        /* x, t, the loss */
        {-HUGE_VAL, -800.0, HUGE_VAL},
        {NAN, -800.0, NAN},
        {-1.0, -HUGE_VAL, 0.0},
        {-HUGE_VAL, -HUGE_VAL, 0.0},
        {NAN, -HUGE_VAL, 0.0},
        {-HUGE_VAL, -90.0, HUGE_VAL},
        {-2.0, -0.5, 0.0 /* exp(-0.5) * 1.5, set below */},
    };
    static const int64_t shape[1] = {N};
    lk_runtime *rt = open_runtime(1);
    for (int f32 = 0; f32 <= 1; f32++)
        for (int path = 0; path < N_PATHS; path++) {
            double x[N], t[N], o[N], g[N];
            float xf[N], tf[N], of[N], gf[N];
            for (int i = 0; i < N; i++) {
                x[i] = pat[i % 7][0], t[i] = pat[i % 7][1];
                xf[i] = (float)x[i], tf[i] = (float)t[i];
            }
            call c;
            memset(&c, 0, sizeof c);
            int32_t dt = f32 ? LK_DTYPE_F32 : LK_DTYPE_F64;
            c.x = (lk_tensor){f32 ? (void *)xf : x, dt, 1, shape, NULL};
            c.t = (lk_tensor){f32 ? (void *)tf : t, dt, 1, shape, NULL};
            c.grad = f32 ? (void *)gf : g;
            c.out = f32 ? (void *)of : o;
            c.out_ndim = 1, c.out_shape[0] = N;
            const char *config = "{\"loss\": \"kl_div\", \"params\": {\"log_target\": true}, "
                                 "\"reduction\": \"none\"}";
            lk_loss *loss = make_loss_on(rt, config, path);
            run_ok(loss, &c);
            for (int i = 0; i < N; i++) {
                double oi = f32 ? of[i] : o[i];
                double want = i % 7 == 6 ? exp(-0.5) * 1.5 : pat[i % 7][2];
                int ok = isnan(want) ? isnan(oi)
                         : isinf(want) || want == 0.0
                             ? oi == want
                             : fabs(oi - want) <= (f32 ? 1e-6 : 1e-15) * fabs(want);
                cr_expect(ok, "%s f32 %d: out[%d] = %g for x %g, t %g; want %g", path_names[path],
                          f32, i, oi, x[i], t[i], want);
            }
            lk_loss_free(loss);
        }
    lk_runtime_close(rt);
}
