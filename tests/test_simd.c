/* test_simd: the tutorial family's two kernel paths agree, and dice's
 * multiclass mode is right.
 *
 * The tutorial plugin chooses its kernels at create(): AVX2+FMA when the CPU
 * has them, the portable scalar ones when LOSSKIT_SIMD=0 (read at every
 * create, so each loss below is built once per path in the same process).
 *
 * simd.paths_agree_*: every tutorial loss (and parameter variants, weights,
 * reductions sum and none, weighted sums that accumulate into one gradient)
 * on float32, float64 and mixed dtypes, lengths 1, 7, 8, 9, 31, 33, 16389
 * and several blocks, binary, soft and mixed targets, logits with +-30,
 * +-100, +-inf and NaN among them: the value to 1e-12 relative (1e-15
 * absolute near 0), every gradient and output element to 1e-12 relative
 * (float64) or 1e-6 (float32), with a floor for entries that are the
 * difference of larger terms (sigmoid(x) - 1 at large x, the softmax
 * Jacobian's g_c - sum p g): 2e-15 (float64, 9 ulps) or 1e-7 (float32) of
 * the largest element. Non-finite results must match exactly (the same
 * infinity, or NaN on both).
 * simd.avx2_path_runs: on a CPU with AVX2 and FMA the two paths do differ
 * in the last bits somewhere, so the comparisons above compared two
 * different paths.
 * simd.errors_agree: targets outside [0, 1] and bad class indices give the
 * same message, naming the same position, on both paths.
 *
 * simd.threads_bitwise: blocks larger than 16384 positions and multiclass
 * dice still give bitwise the same value and gradient on 1 and 3 threads.
 *
 * multiclass.golden: tests/golden/multiclass/cases.json, from
 * tests/golden/make_golden_multiclass.py (PyTorch, smp's multiclass mode),
 * on every path: value 1e-12 relative, gradient 1e-10 relative (float64
 * input) or 1e-6 (float32); float32 lanes (float32 input, SIMD paths) 1e-8
 * relative on the value and a gradient floor of 1e-8 of the largest
 * element. multiclass.paths_agree: portable against AVX2 and the best path,
 * as simd.paths_agree_*. multiclass.float_lanes_run: float32 data does run
 * in float32 lanes, on AVX2 and AVX-512. multiclass.gradcheck: central
 * finite differences. multiclass.*: shapes and dtypes refused with their
 * message, ignore_index, empty and fully ignored inputs. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"

#define SRC(rel) LK_SOURCE_ROOT "/" rel
#define MC_DIR   "tests/golden/multiclass"

/* The kernel paths: portable, AVX2 at most (LOSSKIT_SIMD=avx2), and the best
 * the CPU has (AVX-512 float lanes where present). */
enum { PORTABLE = 0, SIMD_AVX2 = 1, SIMD = 2 };
static const char *const path_names[] = {"portable", "AVX2", "SIMD"};

/* Value tolerances: double lanes (float64 data, mixed dtypes, mse, l1) and
 * float32 lanes (binary losses whose tensors are all float32, multiclass
 * dice with float32 logits and int64 or float32 targets: float32 terms,
 * double sums). */
#define VALUE_F64 1e-12
#define VALUE_F32 1e-6

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
    opts.use_env_path = 0;
    opts.threads = threads;
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "lk_runtime_open: %s", err);
    return rt;
}

/* The loss built for one path: LOSSKIT_SIMD is read by create(). */
static lk_loss *make_loss_on(lk_runtime *rt, const char *config, int path)
{
    char err[LK_ERRMSG_CAP] = "";
    lk_loss *loss = NULL;
    if (path == PORTABLE)
        setenv("LOSSKIT_SIMD", "0", 1);
    else if (path == SIMD_AVX2)
        setenv("LOSSKIT_SIMD", "avx2", 1);
    else
        unsetenv("LOSSKIT_SIMD");
    lk_status st = lk_loss_from_json(rt, config, strlen(config), "test_simd", &loss, err);
    unsetenv("LOSSKIT_SIMD");
    cr_assert_eq(st, LK_OK, "config %s: %s", config, err);
    return loss;
}

static size_t dsize(int32_t dtype)
{
    return dtype == LK_DTYPE_F32 ? 4 : 8;
}

static double get(const void *p, int32_t dtype, int64_t i)
{
    return dtype == LK_DTYPE_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static void put(void *p, int32_t dtype, int64_t i, double v)
{
    if (dtype == LK_DTYPE_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* A tensor owned by the test: data in its dtype. */
typedef struct tens {
    int32_t dtype;
    int32_t ndim;
    int64_t shape[LK_MAX_NDIM];
    int64_t n;
    void *data;
} tens;

static tens tens_new(int32_t dtype, int32_t ndim, const int64_t *shape)
{
    tens t = {dtype, ndim, {0}, 1, NULL};
    for (int32_t d = 0; d < ndim; d++) {
        t.shape[d] = shape[d];
        t.n *= shape[d];
    }
    t.data = calloc((size_t)(t.n > 0 ? t.n : 1), dtype == LK_DTYPE_I64 ? 8 : dsize(dtype));
    cr_assert_not_null(t.data);
    return t;
}

static lk_tensor view(const tens *t)
{
    lk_tensor v = {t->data, t->dtype, t->ndim, t->shape, NULL};
    return v;
}

/* One evaluation's results, copied to double. */
typedef struct result {
    lk_status st;
    double value;
    double *grad; /* n, or NULL */
    double *out;  /* n, or NULL */
    int64_t n;
    char err[LK_ERRMSG_CAP];
} result;

static void result_free(result *r)
{
    free(r->grad);
    free(r->out);
}

/* Evaluates with a gradient for input (and out, for reduction none).
 * weight may be NULL. */
static result eval(const lk_loss *loss, const tens *x, const tens *t, const tens *w, int want_out)
{
    result r = {0};
    tens g = tens_new(x->dtype, x->ndim, x->shape), o = {0};
    lk_named_tensor in[3] = {
        {.name = "input", .tensor = view(x)},
        {.name = "target", .tensor = view(t)},
        {.name = "weight", .tensor = w ? view(w) : view(x)},
    };
    lk_named_tensor gn = {.name = "input", .tensor = view(&g)};
    lk_eval_args a;
    lk_eval_args_init(&a);
    a.tensors = in;
    a.n_tensors = w ? 3 : 2;
    a.grads = &gn;
    a.n_grads = 1;
    lk_tensor ov;
    if (want_out) {
        o = tens_new(x->dtype, x->ndim, x->shape);
        ov = view(&o);
        a.out = &ov;
    }
    r.st = lk_loss_eval(loss, &a, &r.value);
    snprintf(r.err, sizeof r.err, "%s", a.errmsg);
    r.n = x->n;
    r.grad = malloc((size_t)(r.n > 0 ? r.n : 1) * sizeof(double));
    cr_assert_not_null(r.grad);
    for (int64_t i = 0; i < r.n; i++)
        r.grad[i] = get(g.data, g.dtype, i);
    if (want_out) {
        r.out = malloc((size_t)(r.n > 0 ? r.n : 1) * sizeof(double));
        cr_assert_not_null(r.out);
        for (int64_t i = 0; i < r.n; i++)
            r.out[i] = get(o.data, o.dtype, i);
        free(o.data);
    }
    free(g.data);
    return r;
}

/* a and b agree: the same non-finite value, or |a - b| <= rel |b| + abs. */
static int agree(double a, double b, double rel, double abs_floor)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    return fabs(a - b) <= rel * fabs(b) + abs_floor;
}

static double max_finite(const double *v, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i]) && fabs(v[i]) > m)
            m = fabs(v[i]);
    return m;
}

static int64_t bitwise_differences; /* between the paths, over all comparisons */

/* Compares an array element by element; reports the first few mismatches. */
static int compare_arrays(const char *what, const char *label, const double *a, const double *b,
                          int64_t n, double rel, double floor_rel)
{
    double abs_floor = floor_rel * max_finite(b, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], sizeof a[i]) != 0)
            bitwise_differences++;
        if (!agree(a[i], b[i], rel, abs_floor)) {
            if (bad < 3)
                cr_log_error("%s: %s[%lld]: SIMD %.17g, portable %.17g", label, what, (long long)i,
                             a[i], b[i]);
            bad++;
        }
    }
    return bad;
}

/* The two paths' results of one case agree. */
static void expect_same(const char *label, const result *s, const result *p, int32_t dtype,
                        double value_rel)
{
    cr_expect_eq(s->st, p->st, "%s: status SIMD %s, portable %s (%s | %s)", label,
                 lk_status_name(s->st), lk_status_name(p->st), s->err, p->err);
    if (s->st != LK_OK || p->st != LK_OK) {
        cr_expect_str_eq(s->err, p->err, "%s: messages differ", label);
        return;
    }
    if (memcmp(&s->value, &p->value, sizeof s->value) != 0)
        bitwise_differences++;
    cr_expect(agree(s->value, p->value, value_rel, 1e-15), "%s: value SIMD %.17g, portable %.17g",
              label, s->value, p->value);
    double rel = dtype == LK_DTYPE_F32 ? 1e-6 : 1e-12;
    double floor_rel = dtype == LK_DTYPE_F32 ? 1e-7 : 2e-15;
    int bad = compare_arrays("grad", label, s->grad, p->grad, s->n, rel, floor_rel);
    if (s->out && p->out)
        bad += compare_arrays("out", label, s->out, p->out, s->n, rel, floor_rel);
    cr_expect_eq(bad, 0, "%s: %d elements differ beyond tolerance", label, bad);
}

/* ------------------------------------------------------------------------ */
/* Data of the binary losses                                                 */

enum { T_BINARY, T_SOFT, T_MIXED };
enum { X_PLAIN, X_EXTREME, X_INF, X_NAN };

static const char *const target_names[] = {"binary", "soft", "mixed"};
static const char *const logit_names[] = {"plain", "extreme", "inf", "nan"};

static void fill_logits(tens *x, int kind)
{
    static const double extremes[] = {30.0, -30.0, 100.0, -100.0};
    for (int64_t i = 0; i < x->n; i++) {
        double v = normal(3.0);
        if (kind >= X_EXTREME && i % 11 == 5)
            v = extremes[(i / 11) % 4];
        if (kind >= X_INF && i % 13 == 6)
            v = (i / 13) % 2 ? HUGE_VAL : -HUGE_VAL;
        put(x->data, x->dtype, i, v);
    }
    if (kind == X_NAN && x->n > 0)
        put(x->data, x->dtype, x->n / 2, NAN);
}

static void fill_targets(tens *t, int kind)
{
    for (int64_t i = 0; i < t->n; i++) {
        int binary = kind == T_BINARY || (kind == T_MIXED && i % 3 != 0);
        put(t->data, t->dtype, i, binary ? (uniform() < 0.35 ? 1.0 : 0.0) : uniform());
    }
}

static void fill_weights(tens *w)
{
    for (int64_t i = 0; i < w->n; i++)
        put(w->data, w->dtype, i, i % 17 == 3 ? 0.0 : 2.0 * uniform());
}

static void fill_mc(tens *x, tens *y, int64_t classes, int64_t spatial, int64_t ignore,
                    int extreme);

typedef struct bin_case {
    const char *config;
    int weighted; /* a weight tensor too */
    int none;     /* reduction none: compare out as well */
} bin_case;

static const bin_case bin_cases[] = {
    {"{\"loss\": \"mse\"}", 0, 0},
    {"{\"loss\": \"mse\", \"reduction\": \"sum\"}", 1, 0},
    {"{\"loss\": \"mse\", \"reduction\": \"none\"}", 1, 1},
    {"{\"loss\": \"l1\"}", 0, 0},
    {"{\"loss\": \"l1\", \"reduction\": \"none\"}", 1, 1},
    {"{\"loss\": \"bce_with_logits\"}", 0, 0},
    {"{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [2.5]}}", 1, 0},
    {"{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [0.3]}, "
     "\"reduction\": \"none\"}",
     1, 1},
    {"{\"loss\": \"focal\"}", 0, 0},
    {"{\"loss\": \"focal\", \"params\": {\"gamma\": 0.5}}", 0, 0},
    {"{\"loss\": \"focal\", \"params\": {\"gamma\": 0}}", 0, 0},
    {"{\"loss\": \"focal\", \"params\": {\"alpha\": 0.6, \"gamma\": 1}, \"reduction\": \"sum\"}", 0,
     0},
    {"{\"loss\": \"focal\", \"params\": {\"alpha\": -1, \"gamma\": 3}, \"reduction\": \"none\"}", 0,
     1},
    {"{\"loss\": \"dice\"}", 0, 0},
    {"{\"loss\": \"dice\", \"params\": {\"smooth\": 0}}", 0, 0},
    {"{\"loss\": \"dice_bce\"}", 0, 0},
    {"{\"loss\": \"iou\", \"params\": {\"smooth\": 0.5}}", 0, 0},
    {"{\"loss\": \"focal_mean_bce\"}", 0, 0},
    {"{\"loss\": \"focal_mean_bce\", \"params\": {\"alpha\": 0.4, \"gamma\": 0.5}}", 0, 0},
    /* two terms into one gradient: the second accumulates */
    {"{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 0.3}, "
     "{\"loss\": \"dice\", \"weight\": 0.7}]}",
     0, 0},
    {"{\"terms\": [{\"loss\": \"focal\", \"weight\": 0.5}, "
     "{\"loss\": \"iou\", \"weight\": 2}, {\"loss\": \"mse\", \"weight\": 0.25}]}",
     0, 0},
};
#define N_BIN (sizeof bin_cases / sizeof bin_cases[0])

static const int64_t lengths[] = {1, 7, 8, 9, 31, 33, 16384 + 5, 3 * 16384 + 1001};
#define N_LEN (sizeof lengths / sizeof lengths[0])

/* Both paths on one set of tensors, for every case. */
static void run_binary_cases(lk_runtime *rt, const tens *x, const tens *t, const tens *w,
                             const char *data_label)
{
    for (size_t c = 0; c < N_BIN; c++) {
        const bin_case *bc = &bin_cases[c];
        char label[512];
        snprintf(label, sizeof label, "%s on %s", bc->config, data_label);
        double value_rel =
            x->dtype == LK_DTYPE_F32 && t->dtype == LK_DTYPE_F32 ? VALUE_F32 : VALUE_F64;
        lk_loss *lp = make_loss_on(rt, bc->config, PORTABLE);
        result p = eval(lp, x, t, bc->weighted ? w : NULL, bc->none);
        for (int path = SIMD_AVX2; path <= SIMD; path++) {
            char plabel[560];
            snprintf(plabel, sizeof plabel, "%s (%s)", label, path_names[path]);
            lk_loss *ls = make_loss_on(rt, bc->config, path);
            result s = eval(ls, x, t, bc->weighted ? w : NULL, bc->none);
            expect_same(plabel, &s, &p, x->dtype, value_rel);
            result_free(&s);
            lk_loss_free(ls);
        }
        result_free(&p);
        lk_loss_free(lp);
    }
}

static void paths_agree(int32_t xdt, int32_t tdt, int32_t wdt)
{
    lk_runtime *rt = open_runtime(2);
    for (size_t l = 0; l < N_LEN; l++)
        for (int tk = T_BINARY; tk <= T_MIXED; tk++)
            for (int xk = X_PLAIN; xk <= X_NAN; xk++) {
                if (lengths[l] > 20000 && (xk == X_INF || xk == X_NAN))
                    continue; /* the non-finite cases need no long data */
                rng_state = 1000u * (uint64_t)l + 10u * (uint64_t)tk + (uint64_t)xk;
                int64_t shape[1] = {lengths[l]};
                tens x = tens_new(xdt, 1, shape), t = tens_new(tdt, 1, shape),
                     w = tens_new(wdt, 1, shape);
                fill_logits(&x, xk);
                fill_targets(&t, tk);
                fill_weights(&w);
                char label[160];
                snprintf(label, sizeof label, "n %lld, %s targets, %s logits, %s/%s/%s",
                         (long long)lengths[l], target_names[tk], logit_names[xk],
                         xdt == LK_DTYPE_F32 ? "f32" : "f64", tdt == LK_DTYPE_F32 ? "f32" : "f64",
                         wdt == LK_DTYPE_F32 ? "f32" : "f64");
                run_binary_cases(rt, &x, &t, &w, label);
                free(x.data);
                free(t.data);
                free(w.data);
            }
    lk_runtime_close(rt);
}

Test(simd, paths_agree_float32, .timeout = 300)
{
    paths_agree(LK_DTYPE_F32, LK_DTYPE_F32, LK_DTYPE_F32);
}

Test(simd, paths_agree_float64, .timeout = 300)
{
    paths_agree(LK_DTYPE_F64, LK_DTYPE_F64, LK_DTYPE_F64);
}

Test(simd, paths_agree_mixed_dtypes, .timeout = 300)
{
    paths_agree(LK_DTYPE_F32, LK_DTYPE_F64, LK_DTYPE_F32);
    paths_agree(LK_DTYPE_F64, LK_DTYPE_F32, LK_DTYPE_F64);
}

/* pos_weight along the last dimension, rows cut across blocks and vectors. */
Test(simd, paths_agree_pos_weight_list)
{
    static const int64_t rows[] = {1, 3, 5, 2345, 7031};
    const char *config = "{\"loss\": \"bce_with_logits\", \"params\": "
                         "{\"pos_weight\": [0.5, 1, 2, 3, 0.25, 1.5, 4]}, \"reduction\": \"none\"}";
    lk_runtime *rt = open_runtime(2);
    for (int dt = 0; dt < 2; dt++)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            int32_t dtype = dt ? LK_DTYPE_F64 : LK_DTYPE_F32;
            int64_t shape[2] = {rows[r], 7};
            rng_state = 77u + r;
            tens x = tens_new(dtype, 2, shape), t = tens_new(dtype, 2, shape),
                 w = tens_new(dtype, 2, shape);
            fill_logits(&x, X_EXTREME);
            fill_targets(&t, T_MIXED);
            fill_weights(&w);
            lk_loss *lp = make_loss_on(rt, config, PORTABLE);
            result p = eval(lp, &x, &t, &w, 1);
            for (int path = SIMD_AVX2; path <= SIMD; path++) {
                lk_loss *ls = make_loss_on(rt, config, path);
                result s = eval(ls, &x, &t, &w, 1);
                char label[96];
                snprintf(label, sizeof label, "pos_weight list, %lld rows, %s (%s)",
                         (long long)rows[r], dt ? "f64" : "f32", path_names[path]);
                expect_same(label, &s, &p, dtype, dt ? VALUE_F64 : VALUE_F32);
                result_free(&s);
                lk_loss_free(ls);
            }
            result_free(&p);
            lk_loss_free(lp);
            free(x.data);
            free(t.data);
            free(w.data);
        }
    lk_runtime_close(rt);
}

/* More than a million positions: blocks larger than 16384 (tutorial.h). */
Test(simd, paths_agree_large_blocks, .timeout = 300)
{
    int64_t shape[1] = {(1 << 21) + 77};
    lk_runtime *rt = open_runtime(2);
    rng_state = 4242;
    tens x = tens_new(LK_DTYPE_F32, 1, shape), t = tens_new(LK_DTYPE_F32, 1, shape);
    fill_logits(&x, X_EXTREME);
    fill_targets(&t, T_MIXED);
    static const char *const configs[] = {"{\"loss\": \"mse\"}", "{\"loss\": \"focal\"}",
                                          "{\"loss\": \"dice_bce\"}"};
    for (size_t c = 0; c < 3; c++) {
        lk_loss *ls = make_loss_on(rt, configs[c], SIMD),
                *lp = make_loss_on(rt, configs[c], PORTABLE);
        result s = eval(ls, &x, &t, NULL, 0), p = eval(lp, &x, &t, NULL, 0);
        expect_same(configs[c], &s, &p, LK_DTYPE_F32, VALUE_F32);
        result_free(&s);
        result_free(&p);
        lk_loss_free(ls);
        lk_loss_free(lp);
    }
    free(x.data);
    free(t.data);
    lk_runtime_close(rt);
}

static int same_bits(const result *a, const result *b)
{
    return a->st == LK_OK && b->st == LK_OK && a->n == b->n &&
           memcmp(&a->value, &b->value, sizeof a->value) == 0 &&
           memcmp(a->grad, b->grad, (size_t)a->n * sizeof *a->grad) == 0;
}

/* Results depend on the data only, never on the thread count, on either
 * path: large binary calls (blocks of 32768 positions) and multiclass. */
Test(simd, threads_bitwise, .timeout = 300)
{
    int64_t shape[1] = {(1 << 21) + 77}, xs[3] = {3, 5, 30001}, ys[2] = {3, 30001};
    tens x = tens_new(LK_DTYPE_F32, 1, shape), t = tens_new(LK_DTYPE_F32, 1, shape);
    tens mx = tens_new(LK_DTYPE_F32, 3, xs), my = tens_new(LK_DTYPE_I64, 2, ys);
    rng_state = 17;
    fill_logits(&x, X_EXTREME);
    fill_targets(&t, T_MIXED);
    fill_mc(&mx, &my, 5, 30001, -100, 1);
    static const char *const configs[] = {
        "{\"loss\": \"mse\"}", "{\"loss\": \"focal\"}", "{\"loss\": \"dice_bce\"}",
        "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\"}}"};
    lk_runtime *rt1 = open_runtime(1), *rt3 = open_runtime(3);
    for (size_t c = 0; c < 4; c++)
        for (int path = PORTABLE; path <= SIMD; path++) {
            lk_loss *l1 = make_loss_on(rt1, configs[c], path),
                    *l3 = make_loss_on(rt3, configs[c], path);
            const tens *xi = c == 3 ? &mx : &x, *ti = c == 3 ? &my : &t;
            result a = eval(l1, xi, ti, NULL, 0), b = eval(l3, xi, ti, NULL, 0);
            cr_expect(same_bits(&a, &b), "%s (%s): 1 and 3 threads differ (%.17g, %.17g)",
                      configs[c], path_names[path], a.value, b.value);
            result_free(&a);
            result_free(&b);
            lk_loss_free(l1);
            lk_loss_free(l3);
        }
    lk_runtime_close(rt1);
    lk_runtime_close(rt3);
    free(x.data);
    free(t.data);
    free(mx.data);
    free(my.data);
}

/* The gradient of x under loss, written into g (n elements of x's dtype,
 * which the caller places); the value in *value. */
static lk_status eval_into(const lk_loss *loss, const tens *x, const tens *t, void *g,
                           double *value)
{
    lk_named_tensor in[2] = {{.name = "input", .tensor = view(x)},
                             {.name = "target", .tensor = view(t)}};
    lk_tensor gv = view(x);
    gv.data = g;
    lk_named_tensor gn = {.name = "input", .tensor = gv};
    lk_eval_args a;
    lk_eval_args_init(&a);
    a.tensors = in;
    a.n_tensors = 2;
    a.grads = &gn;
    a.n_grads = 1;
    return lk_loss_eval(loss, &a, value);
}

/* One config on data whose gradient is 16 MiB or more: the SIMD path's
 * gradient in a buffer aligned to the vectors (streamed: loss.h,
 * LK_STREAM_BYTES) must be bit for bit the one in a buffer one element off
 * (ordinary stores), and portable-close (what is streamed is right). */
static void expect_streamed_like_stored(lk_runtime *rt, const char *config, const tens *x,
                                        const tens *t, const char *what)
{
    size_t es = dsize(x->dtype), bytes = ((size_t)x->n + 64) * es;
    unsigned char *aligned = aligned_alloc(64, (bytes + 63) / 64 * 64);
    unsigned char *shifted = aligned_alloc(64, (bytes + 63) / 64 * 64);
    cr_assert(aligned && shifted);
    lk_loss *ls = make_loss_on(rt, config, SIMD), *lp = make_loss_on(rt, config, PORTABLE);
    double va = 0.0, vs = 0.0;
    cr_assert_eq(eval_into(ls, x, t, aligned, &va), LK_OK, "%s", config);
    cr_assert_eq(eval_into(ls, x, t, shifted + es, &vs), LK_OK, "%s", config);
    cr_expect(va == vs && memcmp(aligned, shifted + es, (size_t)x->n * es) == 0,
              "%s (%s): the gradient differs between an aligned buffer and one that is not", config,
              what);
    result p = eval(lp, x, t, NULL, 0), a = p;
    a.value = va;
    a.grad = malloc((size_t)x->n * sizeof(double));
    cr_assert_not_null(a.grad);
    for (int64_t i = 0; i < x->n; i++)
        a.grad[i] = get(aligned, x->dtype, i);
    char label[128];
    snprintf(label, sizeof label, "%s (%s, streamed)", config, what);
    expect_same(label, &a, &p, x->dtype, x->dtype == LK_DTYPE_F64 ? VALUE_F64 : VALUE_F32);
    result_free(&a);
    result_free(&p);
    lk_loss_free(ls);
    lk_loss_free(lp);
    free(aligned);
    free(shifted);
}

/* Streamed gradients in float and double lanes, for fused losses and a
 * two-pass one, with a gradient scale of 1/n (mean) and of 1 (sum). */
Test(simd, streaming_stores_write_the_same_gradient, .timeout = 300)
{
    static const char *const configs[] = {
        "{\"loss\": \"mse\"}", "{\"loss\": \"mse\", \"reduction\": \"sum\"}",
        "{\"loss\": \"bce_with_logits\"}", "{\"loss\": \"focal\"}", "{\"loss\": \"dice\"}"};
    lk_runtime *rt = open_runtime(2);
    for (int dt = 0; dt < 2; dt++) {
        int32_t dtype = dt ? LK_DTYPE_F64 : LK_DTYPE_F32;
        int64_t shape[1] = {(int64_t)((16u << 20) / dsize(dtype)) + 4099};
        tens x = tens_new(dtype, 1, shape), t = tens_new(dtype, 1, shape);
        rng_state = 404 + (uint64_t)dt;
        fill_logits(&x, X_PLAIN);
        fill_targets(&t, T_MIXED);
        for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++)
            expect_streamed_like_stored(rt, configs[c], &x, &t, dt ? "float64" : "float32");
        free(x.data);
        free(t.data);
    }
    lk_runtime_close(rt);
}

/* The same for the class-dimension driver: multiclass dice on (2, 4, S)
 * float32 logits, a 16 MiB gradient. */
Test(simd, streaming_stores_class_driver, .timeout = 300)
{
    const int64_t S = (1 << 19) + 64, xs[3] = {2, 4, S}, ys[2] = {2, S};
    tens x = tens_new(LK_DTYPE_F32, 3, xs), y = tens_new(LK_DTYPE_I64, 2, ys);
    rng_state = 808;
    fill_mc(&x, &y, 4, S, -100, 0);
    lk_runtime *rt = open_runtime(2);
    expect_streamed_like_stored(rt, "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\"}}",
                                &x, &y, "float32");
    lk_runtime_close(rt);
    free(x.data);
    free(y.data);
}

#if defined(__x86_64__) && defined(__GNUC__)
static int cpu_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
}
#else
static int cpu_has_avx2_fma(void)
{
    return 0;
}

static int cpu_has_avx512(void)
{
    return 0;
}
#endif

/* The comparisons compared two paths: on an AVX2 machine the sums' order
 * and libmvec's last bits show somewhere; without AVX2 both are portable
 * and must be identical. */
Test(simd, avx2_path_runs)
{
    int64_t shape[1] = {16384 + 5};
    lk_runtime *rt = open_runtime(1);
    rng_state = 99;
    tens x = tens_new(LK_DTYPE_F64, 1, shape), t = tens_new(LK_DTYPE_F64, 1, shape);
    fill_logits(&x, X_EXTREME);
    fill_targets(&t, T_SOFT);
    bitwise_differences = 0;
    for (size_t c = 0; c < N_BIN; c++) {
        lk_loss *ls = make_loss_on(rt, bin_cases[c].config, SIMD);
        lk_loss *lp = make_loss_on(rt, bin_cases[c].config, PORTABLE);
        result s = eval(ls, &x, &t, NULL, 0), p = eval(lp, &x, &t, NULL, 0);
        expect_same(bin_cases[c].config, &s, &p, LK_DTYPE_F64, VALUE_F64);
        result_free(&s);
        result_free(&p);
        lk_loss_free(ls);
        lk_loss_free(lp);
    }
    if (cpu_has_avx2_fma())
        cr_expect_gt(bitwise_differences, 0,
                     "the SIMD path gave bitwise the portable results: "
                     "is it running?");
    else
        cr_expect_eq(bitwise_differences, 0, "no AVX2 here, yet the paths differ");
    free(x.data);
    free(t.data);
    lk_runtime_close(rt);
}

/* The float32 lanes run: on all-float32 data, the AVX2 path's results are
 * not those of the double lanes (the same float32 logits with a float64
 * target). float64 data never leaves the double lanes: AVX2 and the best
 * path agree to double precision (float lanes would differ near 1e-7,
 * beyond expect_same's float64 bounds). (AVX-512 and AVX2 float lanes may well agree to
 * the bit: libmvec's two expf give the same floats, and a double sum of
 * float32 terms of similar size is exact in any order. test_cli checks
 * which kernels an instance chose.) */
Test(simd, float_lanes_run)
{
    int64_t shape[1] = {3 * 4096 + 77};
    lk_runtime *rt = open_runtime(1);
    rng_state = 2718;
    tens x = tens_new(LK_DTYPE_F32, 1, shape), t32 = tens_new(LK_DTYPE_F32, 1, shape),
         t64 = tens_new(LK_DTYPE_F64, 1, shape), x64 = tens_new(LK_DTYPE_F64, 1, shape);
    fill_logits(&x, X_EXTREME);
    fill_targets(&t64, T_MIXED);
    for (int64_t i = 0; i < x.n; i++) {
        put(t32.data, LK_DTYPE_F32, i, ((double *)t64.data)[i]);
        put(x64.data, LK_DTYPE_F64, i, (double)((float *)x.data)[i]);
    }
    static const char *const ids[] = {"bce_with_logits", "focal",         "dice", "iou",
                                      "dice_bce",        "focal_mean_bce"};
    for (size_t c = 0; c < sizeof ids / sizeof ids[0]; c++) {
        char config[64];
        snprintf(config, sizeof config, "{\"loss\": \"%s\"}", ids[c]);
        lk_loss *l2 = make_loss_on(rt, config, SIMD_AVX2), *lb = make_loss_on(rt, config, SIMD);
        result f2 = eval(l2, &x, &t32, NULL, 0), mixed = eval(l2, &x, &t64, NULL, 0);
        result d2 = eval(l2, &x64, &t64, NULL, 0), db = eval(lb, &x64, &t64, NULL, 0);
        if (cpu_has_avx2_fma())
            cr_expect(memcmp(&f2.value, &mixed.value, sizeof f2.value) != 0 ||
                          memcmp(f2.grad, mixed.grad, (size_t)f2.n * sizeof *f2.grad) != 0,
                      "%s: float32 data gave bitwise the double lanes' results", ids[c]);
        char label[96];
        snprintf(label, sizeof label, "%s: float64 data on AVX2 and on the best path", ids[c]);
        expect_same(label, &db, &d2, LK_DTYPE_F64, VALUE_F64);
        result_free(&f2);
        result_free(&mixed);
        result_free(&d2);
        result_free(&db);
        lk_loss_free(l2);
        lk_loss_free(lb);
    }
    free(x.data);
    free(t32.data);
    free(t64.data);
    free(x64.data);
    lk_runtime_close(rt);
}

/* A target outside [0, 1] at a ragged position: the same failure and
 * message on both paths, naming the first bad position. */
Test(simd, errors_agree)
{
    static const int64_t bad_at[] = {0, 5, 8, 33, 16384 + 3, 2 * 16384 + 30};
    static const char *const ids[] = {"bce_with_logits", "focal",     "dice", "dice_bce", "iou",
                                      "focal_mean_bce",  "asymmetric"};
    int64_t shape[1] = {3 * 16384};
    lk_runtime *rt = open_runtime(2);
    for (int dt = 0; dt < 2; dt++) {
        int32_t dtype = dt ? LK_DTYPE_F64 : LK_DTYPE_F32;
        tens x = tens_new(dtype, 1, shape), t = tens_new(dtype, 1, shape);
        rng_state = 5;
        fill_logits(&x, X_PLAIN);
        for (size_t b = 0; b < sizeof bad_at / sizeof bad_at[0]; b++) {
            fill_targets(&t, T_SOFT);
            put(t.data, dtype, bad_at[b], 1.5);
            put(t.data, dtype, bad_at[b] + 7, -0.5); /* a later one is not reported */
            for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
                char config[64], want[96], label[96];
                snprintf(config, sizeof config, "{\"loss\": \"%s\"}", ids[i]);
                snprintf(want, sizeof want, "target[%lld] = 1.5 is outside [0, 1]",
                         (long long)bad_at[b]);
                snprintf(label, sizeof label, "%s, bad target at %lld", ids[i],
                         (long long)bad_at[b]);
                lk_loss *lp = make_loss_on(rt, config, PORTABLE);
                result p = eval(lp, &x, &t, NULL, 0);
                for (int path = SIMD_AVX2; path <= SIMD; path++) {
                    lk_loss *ls = make_loss_on(rt, config, path);
                    result s = eval(ls, &x, &t, NULL, 0);
                    cr_expect_eq(s.st, LK_ERR_INVALID, "%s (%s): %s", label, path_names[path],
                                 lk_status_name(s.st));
                    cr_expect_not_null(strstr(s.err, want), "%s (%s): '%s' lacks '%s'", label,
                                       path_names[path], s.err, want);
                    expect_same(label, &s, &p, dtype, VALUE_F64);
                    result_free(&s);
                    lk_loss_free(ls);
                }
                result_free(&p);
                lk_loss_free(lp);
            }
        }
        free(x.data);
        free(t.data);
    }
    lk_runtime_close(rt);
}

/* BCE terms far below float32's resolution of 1: logits in [38, 44] with
 * target 1 leave only log1p(exp(-x)), 3e-17 down to 8e-20, each lost
 * entirely when rounded into 1 + e. The float32-lane kernels that sum
 * log1p(e) as the log of a product (bce_with_logits mean and sum, the BCE
 * mean of focal_mean_bce) must still find them, on every path:
 * the value against log1p(exp(-x)) summed here in double. */
Test(simd, tiny_bce_terms_are_kept)
{
    int64_t shape[1] = {5 * 4096 + 37};
    tens x = tens_new(LK_DTYPE_F32, 1, shape), t = tens_new(LK_DTYPE_F32, 1, shape);
    rng_state = 314;
    double want = 0.0;
    for (int64_t i = 0; i < x.n; i++) {
        put(x.data, x.dtype, i, 38.0 + 6.0 * uniform());
        put(t.data, t.dtype, i, 1.0);
        want += log1p(exp(-(double)((float *)x.data)[i]));
    }
    double n = (double)x.n;
    static const struct {
        const char *config;
        double scale; /* value = scale * sum */
    } cases[] = {
        {"{\"loss\": \"bce_with_logits\"}", 0.0},
        {"{\"loss\": \"bce_with_logits\", \"reduction\": \"sum\"}", 1.0},
        {"{\"loss\": \"focal_mean_bce\", \"params\": {\"alpha\": 1, \"gamma\": 0}}", 0.0},
    };
    lk_runtime *rt = open_runtime(2);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int path = PORTABLE; path <= SIMD; path++) {
            lk_loss *loss = make_loss_on(rt, cases[c].config, path);
            result r = eval(loss, &x, &t, NULL, 0);
            double expect = cases[c].scale == 0.0 ? want / n : want;
            cr_expect_eq(r.st, LK_OK, "%s (%s): %s", cases[c].config, path_names[path], r.err);
            cr_expect(expect > 0.0 && fabs(r.value - expect) <= 1e-6 * expect,
                      "%s (%s): value %.17g, expected %.17g", cases[c].config, path_names[path],
                      r.value, expect);
            result_free(&r);
            lk_loss_free(loss);
        }
    lk_runtime_close(rt);
    free(x.data);
    free(t.data);
}

/* ------------------------------------------------------------------------ */
/* dice, mode multiclass                                                     */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static tens read_npy(const char *rel)
{
    char path[4096], err[LK_ERRMSG_CAP] = "";
    lk_array a;
    snprintf(path, sizeof path, "%s/%s", LK_SOURCE_ROOT, rel);
    cr_assert_eq(lk_npy_read(path, &a, err), LK_OK, "%s: %s", rel, err);
    tens t = tens_new(a.dtype, a.ndim, a.shape);
    memcpy(t.data, a.data, a.nbytes);
    lk_array_free(&a);
    return t;
}

Test(multiclass, golden)
{
    char *text = read_text(SRC(MC_DIR "/cases.json"));
    cJSON *all = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(all, "cases.json is not JSON");
    cr_assert_geq(cJSON_GetArraySize(all), 6, "too few multiclass cases");
    lk_runtime *rt = open_runtime(2);
    const cJSON *c;
    cJSON_ArrayForEach(c, all)
    {
        const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
        const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(c, "tensors");
        tens x = read_npy(cJSON_GetObjectItemCaseSensitive(tensors, "input")->valuestring);
        tens t = read_npy(cJSON_GetObjectItemCaseSensitive(tensors, "target")->valuestring);
        tens want = read_npy(cJSON_GetObjectItemCaseSensitive(c, "grad")->valuestring);
        double value = cJSON_GetObjectItemCaseSensitive(c, "value")->valuedouble;
        char *config = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "config"));
        int f32 = x.dtype == LK_DTYPE_F32;
        double rel = f32 ? 1e-6 : 1e-10;
        for (int path = PORTABLE; path <= SIMD; path++) {
            lk_loss *loss = make_loss_on(rt, config, path);
            result r = eval(loss, &x, &t, NULL, 0);
            const char *pn = path_names[path];
            /* float32 lanes (float32 logits, SIMD paths): measured 8.5e-10
             * relative on the value and 1.2e-9 of the largest element on
             * the gradient (a small element's Jacobian term cancels) */
            int lanes32 = f32 && path != PORTABLE;
            double value_rel = lanes32 ? 1e-8 : 1e-12;
            double floor_abs = lanes32 ? 1e-8 * max_finite(r.grad, r.n) : f32 ? 1e-12 : 1e-15;
            cr_assert_eq(r.st, LK_OK, "%s (%s): %s", name, pn, r.err);
            cr_expect(agree(r.value, value, value_rel, 0.0), "%s (%s): value %.17g, PyTorch %.17g",
                      name, pn, r.value, value);
            int bad = 0;
            for (int64_t i = 0; i < x.n; i++)
                if (!agree(r.grad[i], get(want.data, want.dtype, i), rel, floor_abs) && bad++ < 3)
                    cr_log_error("%s (%s): grad[%lld] = %.17g, PyTorch %.17g", name, pn,
                                 (long long)i, r.grad[i], get(want.data, want.dtype, i));
            cr_expect_eq(bad, 0, "%s (%s): %d gradient elements differ from PyTorch", name, pn,
                         bad);
            result_free(&r);
            lk_loss_free(loss);
        }
        cJSON_free(config);
        free(x.data);
        free(t.data);
        free(want.data);
    }
    lk_runtime_close(rt);
    cJSON_Delete(all);
}

/* Multiclass data (N, C, S): logits with extremes, class indices with some
 * ignored (or out of range at bad_at), or float per-class targets. */
static void fill_mc(tens *x, tens *y, int64_t classes, int64_t spatial, int64_t ignore, int extreme)
{
    for (int64_t i = 0; i < x->n; i++) {
        double v = normal(2.0);
        if (extreme && i % 7 == 3)
            v = (i / 7) % 3 == 0 ? 30.0 : (i / 7) % 3 == 1 ? -100.0 : -HUGE_VAL;
        put(x->data, x->dtype, i, v);
    }
    if (y->dtype == LK_DTYPE_I64) {
        for (int64_t i = 0; i < y->n; i++)
            ((int64_t *)y->data)[i] =
                uniform() < 0.15 ? ignore : (int64_t)(uniform() * (double)classes);
        return;
    }
    /* soft per-class targets: a random distribution over the classes */
    int64_t samples = y->n / (classes * spatial);
    for (int64_t n = 0; n < samples; n++)
        for (int64_t s = 0; s < spatial; s++) {
            double total = 0.0, w[512];
            for (int64_t c = 0; c < classes; c++)
                total += (w[c] = uniform() < 0.5 ? 0.0 : uniform());
            for (int64_t c = 0; c < classes; c++)
                put(y->data, y->dtype, (n * classes + c) * spatial + s,
                    total > 0.0 ? w[c] / total : 0.0);
        }
}

Test(multiclass, paths_agree, .timeout = 300)
{
    /* N, C, S */
    static const int64_t shapes[][3] = {{1, 1, 1},  {2, 3, 1},   {3, 2, 7},    {2, 5, 9},
                                        {1, 4, 33}, {3, 300, 5}, {4, 3, 4101}, {2, 8, 16384 + 3}};
    lk_runtime *rt = open_runtime(2);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int variant = 0; variant < 10; variant++) {
            int32_t xdt = variant % 2 && variant < 8 ? LK_DTYPE_F64 : LK_DTYPE_F32;
            int float_target = variant >= 4 && variant != 8;
            int32_t ydt = !float_target                                  ? LK_DTYPE_I64
                          : variant == 4 || variant == 7 || variant == 9 ? LK_DTYPE_F32
                                                                         : LK_DTYPE_F64;
            int64_t n = shapes[k][0], classes = shapes[k][1], spatial = shapes[k][2];
            if (float_target && classes > 512)
                continue;
            int64_t xs[3] = {n, classes, spatial}, ys[2] = {n, spatial};
            tens x = tens_new(xdt, 3, xs);
            tens y = float_target ? tens_new(ydt, 3, xs) : tens_new(ydt, 2, ys);
            rng_state = 31u * k + (uint64_t)variant;
            int64_t ignore = variant < 2 ? -100 : 1;
            fill_mc(&x, &y, classes, spatial, ignore, variant >= 2 && variant < 8);
            /* 0, 1: the default ignore_index; 2, 3: class 1 ignored, smooth 1 and
             * 0, extreme logits; 4, 5: float targets, extreme logits; 6, 7:
             * float targets of the other dtype (double lanes); 8, 9: float32,
             * two weighted terms, the second accumulating into the gradient
             * (plain logits: the extreme ones are 2 to 5's) */
            static const char *const configs[] = {
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0.5}}",
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0.5}}",
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": 1}}",
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0, "
                "\"ignore_index\": 1}}",
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\"}}",
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0}}",
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\"}}",
                "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0}}",
                "{\"terms\": [{\"loss\": \"dice\", \"weight\": 0.3, \"params\": {\"mode\": "
                "\"multiclass\", \"ignore_index\": 1}}, {\"loss\": \"dice\", \"weight\": 2, "
                "\"params\": {\"mode\": \"multiclass\", \"smooth\": 0.5, \"ignore_index\": 1}}]}",
                "{\"terms\": [{\"loss\": \"dice\", \"weight\": 0.3, \"params\": {\"mode\": "
                "\"multiclass\"}}, {\"loss\": \"dice\", \"weight\": 2, \"params\": {\"mode\": "
                "\"multiclass\", \"smooth\": 0.5}}]}",
            };
            const char *config = configs[variant];
            /* float32 lanes: float32 logits with class indices or float32 targets */
            double value_rel = xdt == LK_DTYPE_F32 && ydt != LK_DTYPE_F64 ? VALUE_F32 : VALUE_F64;
            char label[256];
            snprintf(label, sizeof label, "%s on (%lld, %lld, %lld) %s, target %s", config,
                     (long long)n, (long long)classes, (long long)spatial,
                     xdt == LK_DTYPE_F32 ? "f32" : "f64", lk_dtype_name(ydt));
            lk_loss *lp = make_loss_on(rt, config, PORTABLE);
            result p = eval(lp, &x, &y, NULL, 0);
            for (int path = SIMD_AVX2; path <= SIMD; path++) {
                char pl[300];
                snprintf(pl, sizeof pl, "%s (%s)", label, path_names[path]);
                lk_loss *ls = make_loss_on(rt, config, path);
                result s = eval(ls, &x, &y, NULL, 0);
                cr_expect_eq(s.st, LK_OK, "%s: %s", pl, s.err);
                expect_same(pl, &s, &p, xdt, value_rel);
                result_free(&s);
                lk_loss_free(ls);
            }
            result_free(&p);
            lk_loss_free(lp);
            free(x.data);
            free(y.data);
        }
    lk_runtime_close(rt);
}

/* focal in mode multiclass (the same class driver): portable against AVX2
 * and the best path, with extreme logits (30, -100, -inf: an infinite loss
 * where the target's logit is -inf, finite gradients), ignored positions,
 * gamma below 1, class weights, and every reduction; and 1 against 3
 * threads, bit for bit, with ignore_index under mean (one block) and sum
 * (the driver's blocks). */
Test(multiclass, focal_paths_agree, .timeout = 300)
{
    static const int64_t shapes[][3] = {{1, 1, 1},  {2, 3, 1},   {3, 2, 7},    {2, 5, 9},
                                        {1, 4, 33}, {3, 300, 5}, {4, 3, 4101}, {2, 8, 16384 + 3}};
    static const char *const configs[] = {
        "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": -100}}",
        "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": -100, "
        "\"gamma\": 0.3, \"alpha\": 0.25}, \"reduction\": \"sum\"}",
        "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": 1, "
        "\"gamma\": 0}, \"reduction\": \"none\"}",
        "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": 1, "
        "\"gamma\": 3.5}}",
    };
    lk_runtime *rt = open_runtime(2), *rt1 = open_runtime(1), *rt3 = open_runtime(3);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int variant = 0; variant < 8; variant++) {
            int32_t xdt = variant % 2 ? LK_DTYPE_F64 : LK_DTYPE_F32;
            int64_t n = shapes[k][0], classes = shapes[k][1], spatial = shapes[k][2];
            int64_t xs[3] = {n, classes, spatial}, ys[2] = {n, spatial};
            tens x = tens_new(xdt, 3, xs), y = tens_new(LK_DTYPE_I64, 2, ys);
            rng_state = 71u * k + (uint64_t)variant;
            const char *config = configs[variant / 2];
            fill_mc(&x, &y, classes, spatial, variant < 4 ? -100 : 1, 1);
            char label[320];
            snprintf(label, sizeof label, "%s on (%lld, %lld, %lld) %s", config, (long long)n,
                     (long long)classes, (long long)spatial, xdt == LK_DTYPE_F32 ? "f32" : "f64");
            int none = 0; /* eval's out is shaped like the input; the catalogue checks none */
            lk_loss *lp = make_loss_on(rt, config, PORTABLE);
            result p = eval(lp, &x, &y, NULL, none);
            cr_expect_eq(p.st, LK_OK, "%s (portable): %s", label, p.err);
            for (int path = SIMD_AVX2; path <= SIMD; path++) {
                char pl[400];
                snprintf(pl, sizeof pl, "%s (%s)", label, path_names[path]);
                lk_loss *ls = make_loss_on(rt, config, path);
                result s = eval(ls, &x, &y, NULL, none);
                expect_same(pl, &s, &p, xdt, xdt == LK_DTYPE_F32 ? VALUE_F32 : VALUE_F64);
                result_free(&s);
                lk_loss_free(ls);
                lk_loss *l1 = make_loss_on(rt1, config, path),
                        *l3 = make_loss_on(rt3, config, path);
                result a = eval(l1, &x, &y, NULL, none), b = eval(l3, &x, &y, NULL, none);
                cr_expect(same_bits(&a, &b), "%s: 1 and 3 threads differ (%.17g, %.17g)", pl,
                          a.value, b.value);
                result_free(&a);
                result_free(&b);
                lk_loss_free(l1);
                lk_loss_free(l3);
            }
            result_free(&p);
            lk_loss_free(lp);
            free(x.data);
            free(y.data);
        }
    lk_runtime_close(rt);
    lk_runtime_close(rt1);
    lk_runtime_close(rt3);
}

/* focal multiclass under mean: without ignore_index the FUSED forward
 * writes the gradient from the factors its fwd_pos left
 * (LK_CLS_POS_GRAD); with one that no target equals, the call is one block
 * whose gradient comes from the driver's backward (bwd1, bwd_pos). Both
 * must give the same value and gradient, on every path. */
Test(multiclass, focal_fused_gradient_as_backward, .timeout = 300)
{
    static const int64_t shapes[][3] = {{3, 5, 9}, {4, 3, 4101}, {2, 8, 16384 + 3}};
    static const char *const params[] = {"\"gamma\": 2", "\"gamma\": 0.3, \"alpha\": 0.25"};
    lk_runtime *rt = open_runtime(2);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int variant = 0; variant < 4; variant++) {
            int32_t xdt = variant % 2 ? LK_DTYPE_F64 : LK_DTYPE_F32;
            int64_t xs[3] = {shapes[k][0], shapes[k][1], shapes[k][2]},
                    ys[2] = {shapes[k][0], shapes[k][2]};
            tens x = tens_new(xdt, 3, xs), y = tens_new(LK_DTYPE_I64, 2, ys);
            rng_state = 97u * k + (uint64_t)variant;
            fill_mc(&x, &y, xs[1], xs[2], 0, 1); /* every target a class */
            char fused[200], cut[200];
            snprintf(fused, sizeof fused,
                     "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", %s}}",
                     params[variant / 2]);
            snprintf(cut, sizeof cut,
                     "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", %s, "
                     "\"ignore_index\": -100}}",
                     params[variant / 2]);
            for (int path = PORTABLE; path <= SIMD; path++) {
                char label[400];
                snprintf(label, sizeof label, "%s on (%lld, %lld, %lld) %s (%s): fused", fused,
                         (long long)xs[0], (long long)xs[1], (long long)xs[2],
                         xdt == LK_DTYPE_F32 ? "f32" : "f64", path_names[path]);
                lk_loss *lf = make_loss_on(rt, fused, path), *lc = make_loss_on(rt, cut, path);
                result f = eval(lf, &x, &y, NULL, 0), c = eval(lc, &x, &y, NULL, 0);
                cr_expect_eq(f.st, LK_OK, "%s: %s", label, f.err);
                expect_same(label, &f, &c, xdt, xdt == LK_DTYPE_F32 ? VALUE_F32 : VALUE_F64);
                result_free(&f);
                result_free(&c);
                lk_loss_free(lf);
                lk_loss_free(lc);
            }
            free(x.data);
            free(y.data);
        }
    lk_runtime_close(rt);
}

/* bce_with_logits with ignore_index and label_smoothing: under mean the
 * call is one block that the loss cuts and spreads over the threads itself
 * (tutorial README): several sub-blocks, every path, 1 against 3 threads
 * bit for bit, and portable against SIMD. */
Test(simd, bce_ignore_index_one_block, .timeout = 300)
{
    int64_t shape[2] = {3, 40000 + 17};
    static const char *const configs[] = {
        "{\"loss\": \"bce_with_logits\", \"params\": {\"ignore_index\": 255, "
        "\"label_smoothing\": 0.1}}",
        "{\"loss\": \"bce_with_logits\", \"params\": {\"ignore_index\": 255}, "
        "\"reduction\": \"sum\"}"};
    lk_runtime *rt1 = open_runtime(1), *rt3 = open_runtime(3);
    for (int dt = 0; dt < 2; dt++) {
        int32_t dtype = dt ? LK_DTYPE_F64 : LK_DTYPE_F32;
        tens x = tens_new(dtype, 2, shape), t = tens_new(dtype, 2, shape);
        rng_state = 23u + (uint64_t)dt;
        fill_logits(&x, X_EXTREME);
        fill_targets(&t, T_MIXED);
        for (int64_t i = 0; i < t.n; i += 3)
            put(t.data, t.dtype, i, 255.0);
        for (size_t c = 0; c < 2; c++) {
            lk_loss *lp = make_loss_on(rt1, configs[c], PORTABLE);
            result p = eval(lp, &x, &t, NULL, 0);
            cr_expect_eq(p.st, LK_OK, "%s: %s", configs[c], p.err);
            for (int path = PORTABLE; path <= SIMD; path++) {
                lk_loss *l1 = make_loss_on(rt1, configs[c], path),
                        *l3 = make_loss_on(rt3, configs[c], path);
                result a = eval(l1, &x, &t, NULL, 0), b = eval(l3, &x, &t, NULL, 0);
                char label[300];
                snprintf(label, sizeof label, "%s %s (%s)", configs[c], dt ? "f64" : "f32",
                         path_names[path]);
                cr_expect(same_bits(&a, &b), "%s: 1 and 3 threads differ (%.17g, %.17g)", label,
                          a.value, b.value);
                if (path != PORTABLE)
                    expect_same(label, &a, &p, dtype, dt ? VALUE_F64 : VALUE_F32);
                result_free(&a);
                result_free(&b);
                lk_loss_free(l1);
                lk_loss_free(l3);
            }
            result_free(&p);
            lk_loss_free(lp);
        }
        free(x.data);
        free(t.data);
    }
    lk_runtime_close(rt1);
    lk_runtime_close(rt3);
}

/* The analytic gradient against central differences, float64. */
Test(multiclass, gradcheck)
{
    static const char *const configs[] = {
        "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\"}}",
        "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0}}",
        ("{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0.5, "
         "\"ignore_index\": 255}}"),
    };
    static const int64_t ignores[] = {-100, -100, 255};
    const int64_t xs[4] = {2, 3, 2, 3}, ys[3] = {2, 2, 3};
    lk_runtime *rt = open_runtime(1);
    for (size_t c = 0; c < 3; c++)
        for (int path = PORTABLE; path <= SIMD; path++) {
            tens x = tens_new(LK_DTYPE_F64, 4, xs), y = tens_new(LK_DTYPE_I64, 3, ys);
            rng_state = 11u + c;
            fill_mc(&x, &y, 3, 6, ignores[c], 0);
            lk_loss *loss = make_loss_on(rt, configs[c], path);
            result r = eval(loss, &x, &y, NULL, 0);
            cr_assert_eq(r.st, LK_OK, "%s: %s", configs[c], r.err);
            double *xd = x.data;
            for (int64_t i = 0; i < x.n; i++) {
                const double h = 1e-6, saved = xd[i];
                xd[i] = saved + h;
                result up = eval(loss, &x, &y, NULL, 0);
                xd[i] = saved - h;
                result down = eval(loss, &x, &y, NULL, 0);
                xd[i] = saved;
                double fd = (up.value - down.value) / (2.0 * h);
                cr_expect(fabs(r.grad[i] - fd) <= 1e-6 * fabs(fd) + 1e-8,
                          "%s (%s): grad[%lld] = %.12g, finite difference %.12g", configs[c],
                          path_names[path], (long long)i, r.grad[i], fd);
                result_free(&up);
                result_free(&down);
            }
            result_free(&r);
            lk_loss_free(loss);
            free(x.data);
            free(y.data);
        }
    lk_runtime_close(rt);
}

/* One evaluation of multiclass dice that must fail with st and a message
 * containing needle, on both paths. */
static void expect_mc_failure(const char *config, const tens *x, const tens *y, lk_status want,
                              const char *needle)
{
    lk_runtime *rt = open_runtime(2);
    for (int path = PORTABLE; path <= SIMD; path++) {
        lk_loss *loss = make_loss_on(rt, config, path);
        result r = eval(loss, x, y, NULL, 0);
        cr_expect_eq(r.st, want, "%s: status %s, expected %s (%s)", config, lk_status_name(r.st),
                     lk_status_name(want), r.err);
        cr_expect_not_null(strstr(r.err, needle), "%s (%s): message '%s' lacks '%s'", config,
                           path_names[path], r.err, needle);
        result_free(&r);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
}

#define MC "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\"}}"

/* Whether two results differ in any bit of the value or the gradient. */
static int differ_bitwise(const result *a, const result *b)
{
    return memcmp(&a->value, &b->value, sizeof a->value) != 0 ||
           memcmp(a->grad, b->grad, (size_t)a->n * sizeof *a->grad) != 0;
}

/* float32 data runs in float32 lanes: on AVX2 and on AVX-512 the value
 * differs from that of the float64 upcast, which the double lanes compute,
 * and on AVX2 from the portable one. float64 data stays in double lanes on
 * both: they agree to double precision (float lanes would not). The logits
 * are spread wide (p from 1 down to 1e-30) and the targets are the argmax,
 * so the value is small and shows the float32 terms' last bits. */
Test(multiclass, float_lanes_run)
{
    enum { N = 2, C = 5, S = 4099 };
    const int64_t xs[3] = {N, C, S}, ys[2] = {N, S};
    tens x = tens_new(LK_DTYPE_F32, 3, xs), x64 = tens_new(LK_DTYPE_F64, 3, xs);
    tens y = tens_new(LK_DTYPE_I64, 2, ys), t = tens_new(LK_DTYPE_F32, 3, xs);
    tens t64 = tens_new(LK_DTYPE_F64, 3, xs);
    rng_state = 23;
    for (int64_t i = 0; i < x.n; i++)
        ((float *)x.data)[i] = (float)normal(20.0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            const float *xp = (const float *)x.data + n * C * S + s;
            int64_t best = 0;
            for (int64_t c = 1; c < C; c++)
                best = xp[c * S] > xp[best * S] ? c : best;
            ((int64_t *)y.data)[n * S + s] = best;
            ((float *)t.data)[n * C * S + best * S + s] = 1.0f;
        }
    for (int64_t i = 0; i < x.n; i++) {
        ((double *)x64.data)[i] = ((const float *)x.data)[i];
        ((double *)t64.data)[i] = ((const float *)t.data)[i];
    }
    lk_runtime *rt = open_runtime(2);
    const tens *targets[2] = {&y, &t}, *targets64[2] = {&y, &t64};
    for (int k = 0; k < 2; k++) {
        const char *what = k ? "float32 targets" : "class indices";
        lk_loss *lp = make_loss_on(rt, MC, PORTABLE), *l2 = make_loss_on(rt, MC, SIMD_AVX2),
                *lb = make_loss_on(rt, MC, SIMD);
        result p = eval(lp, &x, targets[k], NULL, 0), a = eval(l2, &x, targets[k], NULL, 0),
               b = eval(lb, &x, targets[k], NULL, 0), a64 = eval(l2, &x64, targets64[k], NULL, 0),
               b64 = eval(lb, &x64, targets64[k], NULL, 0);
        cr_assert(p.st == LK_OK && a.st == LK_OK && b.st == LK_OK && a64.st == LK_OK &&
                      b64.st == LK_OK,
                  "%s: %s %s %s %s %s", what, p.err, a.err, b.err, a64.err, b64.err);
        if (cpu_has_avx2_fma()) {
            cr_expect(differ_bitwise(&a, &p), "%s: AVX2 gave bitwise the portable results", what);
            cr_expect(memcmp(&a.value, &a64.value, sizeof a.value) != 0,
                      "%s: AVX2 on float32 gave bitwise the double kernels' value (%.17g): are "
                      "the float lanes running?",
                      what, a.value);
        }
        if (cpu_has_avx512())
            cr_expect(memcmp(&b.value, &b64.value, sizeof b.value) != 0,
                      "%s: AVX-512 on float32 gave bitwise the double kernels' value (%.17g): "
                      "are the float lanes running?",
                      what, b.value);
        char label[96];
        snprintf(label, sizeof label, "%s: float64 data on AVX2 and on the best path", what);
        expect_same(label, &b64, &a64, LK_DTYPE_F64, VALUE_F64);
        result_free(&p);
        result_free(&a);
        result_free(&b);
        result_free(&a64);
        result_free(&b64);
        lk_loss_free(lp);
        lk_loss_free(l2);
        lk_loss_free(lb);
    }
    lk_runtime_close(rt);
    free(x.data);
    free(x64.data);
    free(y.data);
    free(t.data);
    free(t64.data);
}

Test(multiclass, bad_class_index_names_its_position)
{
    const int64_t xs[3] = {2, 4, 5000}, ys[2] = {2, 5000};
    tens x = tens_new(LK_DTYPE_F32, 3, xs), y = tens_new(LK_DTYPE_I64, 2, ys);
    rng_state = 3;
    fill_mc(&x, &y, 4, 5000, -100, 0);
    ((int64_t *)y.data)[7003] = 4;
    ((int64_t *)y.data)[7010] = -1;
    expect_mc_failure(MC, &x, &y, LK_ERR_INVALID,
                      "target[1, 2003] = 4 is not a class index in [0, 4) nor ignore_index -100");
    ((int64_t *)y.data)[7003] = -100;
    expect_mc_failure(MC, &x, &y, LK_ERR_INVALID,
                      "target[1, 2010] = -1 is not a class index in [0, 4) nor ignore_index -100");
    free(x.data);
    free(y.data);
}

Test(multiclass, float_target_outside_unit_interval)
{
    const int64_t xs[3] = {1, 3, 10};
    tens x = tens_new(LK_DTYPE_F64, 3, xs), y = tens_new(LK_DTYPE_F64, 3, xs);
    rng_state = 4;
    fill_mc(&x, &y, 3, 10, 0, 0);
    ((double *)y.data)[2 * 10 + 6] = 1.25; /* class 2, position 6 */
    ((double *)y.data)[0 * 10 + 7] = -1.0; /* class 0, position 7: later */
    expect_mc_failure(MC, &x, &y, LK_ERR_INVALID, "target[0, 2, 6] = 1.25 is outside [0, 1]");
    free(x.data);
    free(y.data);
}

Test(multiclass, shapes_and_dtypes_refused)
{
    const int64_t xs[3] = {2, 3, 4}, wrong[2] = {2, 3}, flat[1] = {6};
    tens x = tens_new(LK_DTYPE_F64, 3, xs), yw = tens_new(LK_DTYPE_I64, 2, wrong),
         yf = tens_new(LK_DTYPE_F64, 2, wrong), x1 = tens_new(LK_DTYPE_F64, 1, flat),
         y1 = tens_new(LK_DTYPE_I64, 1, flat);
    expect_mc_failure(MC, &x, &yw, LK_ERR_SHAPE,
                      "target: shape (2, 3), expected (2, 4) (int64 class indices: the input's "
                      "shape without dim 1)");
    expect_mc_failure(MC, &x, &yf, LK_ERR_SHAPE,
                      "target: shape (2, 3), expected (2, 3, 4) (per-class float targets: the "
                      "input's shape)");
    expect_mc_failure(MC, &x1, &y1, LK_ERR_SHAPE, "multiclass mode needs (N, C, ...) logits");
    /* binary mode keeps the tutorial's target: float, the input's shape */
    expect_mc_failure("{\"loss\": \"dice\"}", &x, &yw, LK_ERR_DTYPE,
                      "dtype int64 is not accepted in binary mode");
    expect_mc_failure("{\"loss\": \"dice\"}", &x, &yf, LK_ERR_SHAPE,
                      "target: shape (2, 3), expected (2, 3, 4) (the input's)");
    free(x.data);
    free(yw.data);
    free(yf.data);
    free(x1.data);
    free(y1.data);
}

Test(multiclass, misspelt_mode_is_a_config_error)
{
    lk_runtime *rt = open_runtime(1);
    char err[LK_ERRMSG_CAP] = "";
    lk_loss *loss = NULL;
    const char *config;
    lk_status st;
    config = "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclas\"}}";
    st = lk_loss_from_json(rt, config, strlen(config), "test", &loss, err);
    cr_expect_eq(st, LK_ERR_CONFIG, "a misspelt mode: %s", lk_status_name(st));
    lk_runtime_close(rt);
}

/* Every position ignored, or none at all: each class scores s / s = 1 (loss
 * 0) at smooth 1, and 0 / max(0, eps) = 0 (loss 1) at smooth 0, the
 * formula as is; the gradient is zero. */
Test(multiclass, nothing_to_count)
{
    static const char *const configs[] = {
        MC, "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"smooth\": 0}}"};
    const int64_t xs[3] = {2, 3, 5}, ys[2] = {2, 5}, zx[3] = {0, 3, 5}, zy[2] = {0, 5};
    tens x = tens_new(LK_DTYPE_F64, 3, xs), y = tens_new(LK_DTYPE_I64, 2, ys);
    tens ex = tens_new(LK_DTYPE_F64, 3, zx), ey = tens_new(LK_DTYPE_I64, 2, zy);
    rng_state = 8;
    fill_mc(&x, &y, 3, 5, -100, 0);
    for (int64_t i = 0; i < y.n; i++)
        ((int64_t *)y.data)[i] = -100;
    lk_runtime *rt = open_runtime(1);
    for (size_t c = 0; c < 2; c++)
        for (int path = PORTABLE; path <= SIMD; path++) {
            lk_loss *loss = make_loss_on(rt, configs[c], path);
            result r = eval(loss, &x, &y, NULL, 0);
            cr_expect_eq(r.st, LK_OK, "%s: %s", configs[c], r.err);
            cr_expect_eq(r.value, (double)c, "%s, all ignored: %g", configs[c], r.value);
            for (int64_t i = 0; i < r.n; i++)
                cr_expect_eq(r.grad[i], 0.0, "%s: grad[%lld] = %g", configs[c], (long long)i,
                             r.grad[i]);
            result_free(&r);
            r = eval(loss, &ex, &ey, NULL, 0);
            cr_expect_eq(r.st, LK_OK, "%s, empty: %s", configs[c], r.err);
            cr_expect_eq(r.value, (double)c, "%s, empty: %g", configs[c], r.value);
            result_free(&r);
            lk_loss_free(loss);
        }
    lk_runtime_close(rt);
    free(x.data);
    free(y.data);
    free(ex.data);
    free(ey.data);
}

/* An ignored position counts nowhere: whatever its logits (even NaN), the
 * value equals that of the data without it. */
Test(multiclass, ignored_positions_count_nowhere)
{
    const int64_t xs[3] = {1, 3, 6}, ys[2] = {1, 6}, xs5[3] = {1, 3, 5}, ys5[2] = {1, 5};
    tens x = tens_new(LK_DTYPE_F64, 3, xs), y = tens_new(LK_DTYPE_I64, 2, ys);
    tens x5 = tens_new(LK_DTYPE_F64, 3, xs5), y5 = tens_new(LK_DTYPE_I64, 2, ys5);
    rng_state = 9;
    fill_mc(&x, &y, 3, 6, -100, 0);
    for (int64_t s = 0; s < 6; s++)
        ((int64_t *)y.data)[s] = s % 3;
    ((int64_t *)y.data)[4] = -100;
    for (int64_t c = 0; c < 3; c++) {
        ((double *)x.data)[c * 6 + 4] = c == 1 ? NAN : HUGE_VAL;
        for (int64_t s = 0, k = 0; s < 6; s++)
            if (s != 4)
                ((double *)x5.data)[c * 5 + k++] = ((double *)x.data)[c * 6 + s];
    }
    for (int64_t s = 0, k = 0; s < 6; s++)
        if (s != 4)
            ((int64_t *)y5.data)[k++] = ((int64_t *)y.data)[s];
    lk_runtime *rt = open_runtime(1);
    for (int path = PORTABLE; path <= SIMD; path++) {
        lk_loss *loss = make_loss_on(rt, MC, path);
        result a = eval(loss, &x, &y, NULL, 0), b = eval(loss, &x5, &y5, NULL, 0);
        cr_expect(agree(a.value, b.value, 1e-13, 0.0),
                  "with the ignored position %.17g, "
                  "without %.17g",
                  a.value, b.value);
        for (int64_t c = 0; c < 3; c++)
            cr_expect_eq(a.grad[c * 6 + 4], 0.0, "an ignored position has a gradient");
        result_free(&a);
        result_free(&b);
        lk_loss_free(loss);
    }
    lk_runtime_close(rt);
    free(x.data);
    free(y.data);
    free(x5.data);
    free(y5.data);
}

/* The two-pass driver's LK_EW_NONNEG_SUM: each statistic is summed in
 * groups of four float vectors. fs_square (tests/fixtures/stats) sums x^2;
 * at x = 1e19 each term is 1e38 and a group of four overflows float, so
 * the statistics pass must run again without the groups: the sum is then
 * finite and equal to the terms added in double, and the gradient (2 x,
 * from the second pass) unchanged. A term of +inf still makes it +inf; an
 * ordinary input agrees with the terms' double sum to the flag's bound.
 * Every path. */
Test(simd, nonneg_stats_groups_that_overflow_are_summed_again)
{
    const int64_t n = 197; /* groups, and a tail */
    const int64_t shape[1] = {n};
    lk_runtime_options opts;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_runtime_options_init(&opts);
    opts.plugin_path = LK_STATS_FIXTURE_DIR;
    opts.use_env_path = 0;
    opts.use_default_path = 0;
    opts.threads = 1;
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "lk_runtime_open: %s", err);
    tens x = tens_new(LK_DTYPE_F32, 1, shape), t = tens_new(LK_DTYPE_F32, 1, shape);
    const float big = 1e19f;
    const double term = (double)(big * big); /* the float lanes' x^2 */
    for (int path = PORTABLE; path <= SIMD; path++) {
        if ((path == SIMD_AVX2 && !cpu_has_avx2_fma()) || (path == SIMD && !cpu_has_avx512()))
            continue;
        lk_loss *loss = make_loss_on(rt, "{\"loss\": \"fs_square\"}", path);
        for (int64_t i = 0; i < n; i++)
            put(x.data, LK_DTYPE_F32, i, big), put(t.data, LK_DTYPE_F32, i, 0.0);
        result r = eval(loss, &x, &t, NULL, 0);
        cr_assert_eq(r.st, LK_OK, "path %s: %s", path_names[path], r.err);
        cr_expect(isfinite(r.value) && agree(r.value, (double)n * term, 1e-12, 0.0),
                  "path %s: sum %.17g, the terms add to %.17g", path_names[path], r.value,
                  (double)n * term);
        for (int64_t i = 0; i < n; i++)
            cr_expect_eq(r.grad[i], 2.0 * (double)big, "path %s: gradient %.17g at %lld",
                         path_names[path], r.grad[i], (long long)i);
        put(x.data, LK_DTYPE_F32, 77, HUGE_VAL);
        result r2 = eval(loss, &x, &t, NULL, 0);
        cr_expect(r2.st == LK_OK && r2.value == HUGE_VAL, "path %s: %.17g with a +inf term",
                  path_names[path], r2.value);
        double ref = 0.0;
        for (int64_t i = 0; i < n; i++) {
            float v = (float)(0.001 * (double)((i * 7919) % 1009) - 0.5);
            put(x.data, LK_DTYPE_F32, i, v);
            ref += (double)(v * v);
        }
        result r3 = eval(loss, &x, &t, NULL, 0);
        cr_expect(r3.st == LK_OK && agree(r3.value, ref, 4.0 * 0x1p-24, 0.0),
                  "path %s: sum %.17g, the terms add to %.17g", path_names[path], r3.value, ref);
        result_free(&r);
        result_free(&r2);
        result_free(&r3);
        lk_loss_free(loss);
    }
    free(x.data);
    free(t.data);
    lk_runtime_close(rt);
}

/* LK_EW_NONNEG_SUM adds four float vectors of terms before widening them.
 * Terms of 3e38 overflow such a group (4 x 3e38 > FLT_MAX): the block's sum
 * must then be formed again in double, finite and equal to the sum of the
 * terms reduction none writes; the gradient is written once, as without
 * the overflow. A term of +inf still makes the sum +inf. Every path. */
Test(simd, nonneg_groups_that_overflow_are_summed_again)
{
    static const struct {
        const char *loss;
        double x, t, grad; /* each element's input, target and gradient */
    } cases[] = {
        {"log_cosh", 3e38, 0.0, 1.0},
        {"soft_margin", 3e38, -1.0, 1.0},
        {"bce_with_logits", -3e38, 1.0, -1.0},
    };
    const int64_t n = 197; /* groups, and a tail */
    const int64_t shape[1] = {n};
    lk_runtime *rt = open_runtime(1);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tens x = tens_new(LK_DTYPE_F32, 1, shape), t = tens_new(LK_DTYPE_F32, 1, shape);
        for (int64_t i = 0; i < n; i++)
            put(x.data, LK_DTYPE_F32, i, cases[c].x), put(t.data, LK_DTYPE_F32, i, cases[c].t);
        char sum_cfg[128], none_cfg[128];
        snprintf(sum_cfg, sizeof sum_cfg, "{\"loss\": \"%s\", \"reduction\": \"sum\"}",
                 cases[c].loss);
        snprintf(none_cfg, sizeof none_cfg, "{\"loss\": \"%s\", \"reduction\": \"none\"}",
                 cases[c].loss);
        for (int path = PORTABLE; path <= SIMD; path++) {
            if ((path == SIMD_AVX2 && !cpu_has_avx2_fma()) || (path == SIMD && !cpu_has_avx512()))
                continue;
            lk_loss *ls = make_loss_on(rt, sum_cfg, path), *ln = make_loss_on(rt, none_cfg, path);
            result s = eval(ls, &x, &t, NULL, 0), e = eval(ln, &x, &t, NULL, 1);
            cr_assert_eq(s.st, LK_OK, "%s: %s", cases[c].loss, s.err);
            cr_assert_eq(e.st, LK_OK, "%s: %s", cases[c].loss, e.err);
            double ref = 0.0;
            for (int64_t i = 0; i < n; i++)
                ref += e.out[i];
            cr_expect(isfinite(s.value) && agree(s.value, ref, 1e-12, 0.0),
                      "%s on path %s: sum %.17g, the terms add to %.17g", cases[c].loss,
                      path_names[path], s.value, ref);
            cr_expect(ref > 5e40, "%s: the terms add to %.17g", cases[c].loss, ref);
            for (int64_t i = 0; i < n; i++)
                cr_expect_eq(s.grad[i], cases[c].grad, "%s on path %s: gradient %.17g at %lld",
                             cases[c].loss, path_names[path], s.grad[i], (long long)i);
            put(x.data, LK_DTYPE_F32, 77, cases[c].x > 0 ? HUGE_VAL : -HUGE_VAL);
            result s2 = eval(ls, &x, &t, NULL, 0);
            cr_expect(s2.st == LK_OK && s2.value == HUGE_VAL,
                      "%s on path %s: %.17g with a +inf term", cases[c].loss, path_names[path],
                      s2.value);
            put(x.data, LK_DTYPE_F32, 77, cases[c].x);
            result_free(&s);
            result_free(&e);
            result_free(&s2);
            lk_loss_free(ls);
            lk_loss_free(ln);
        }
        free(x.data);
        free(t.data);
    }
    lk_runtime_close(rt);
}

/* ------------------------------------------------------------------------ */
/* The segmentation family                                                   */

/* A float tensor of the given values (in its dtype). */
static tens tens_of(int32_t dtype, int32_t ndim, const int64_t *shape, const double *v)
{
    tens t = tens_new(dtype, ndim, shape);
    for (int64_t i = 0; i < t.n; i++)
        put(t.data, dtype, i, v[i]);
    return t;
}

/* generalized_dice floors its denominator at eps as torch's clamp_min:
 * NaN stays NaN. One NaN logit makes the group's value and every element's
 * gradient NaN (the floor used to replace the NaN denominator by eps and
 * give finite gradients of -4.7e6). Every path, float32 and float64. */
Test(segmentation, generalized_dice_nan_stays_nan)
{
    static const char *const config = "{\"loss\": \"generalized_dice\", \"params\": {\"mode\": "
                                      "\"multilabel\", \"per_sample\": false}}";
    const int64_t shape[3] = {1, 2, 2};
    const double xv[4] = {0.5, NAN, -1.0, 2.0}, tv[4] = {1.0, 0.0, 0.0, 1.0};
    lk_runtime *rt = open_runtime(1);
    for (int d = 0; d < 2; d++) {
        int32_t dt = d ? LK_DTYPE_F32 : LK_DTYPE_F64;
        tens x = tens_of(dt, 3, shape, xv), t = tens_of(dt, 3, shape, tv);
        for (int path = PORTABLE; path <= SIMD; path++) {
            lk_loss *loss = make_loss_on(rt, config, path);
            result r = eval(loss, &x, &t, NULL, 0);
            cr_assert_eq(r.st, LK_OK, "path %s: %s", path_names[path], r.err);
            cr_expect(isnan(r.value), "path %s, %s: value %.17g", path_names[path],
                      d ? "float32" : "float64", r.value);
            for (int64_t i = 0; i < r.n; i++)
                cr_expect(isnan(r.grad[i]), "path %s, %s: grad[%lld] = %.17g", path_names[path],
                          d ? "float32" : "float64", (long long)i, r.grad[i]);
            result_free(&r);
            lk_loss_free(loss);
        }
        free(x.data);
        free(t.data);
    }
    lk_runtime_close(rt);
}

/* lovasz_softmax forms p = exp(x - max) / sum, which keeps the digits of
 * x - max at any |x|. One pixel [B, B, 0] of class 0 has p = [1/2, 1/2, 0]
 * for every B: value 1/3 and gradient [-1/6, 1/6, 0] (a log-sum-exp gave
 * p = 1 for both at B = 1e16, and gradients off by 3e-5 at 1e12). Twelve
 * pixels of logits in {-B, 0, B}: for B >= 1e4 every exp(x - max) is 0 or
 * 1, so the value at B = 1e14 and beyond is the one at 1e4 (a log-sum-exp
 * was 1e-4 off at 1e14). Every path. */
Test(segmentation, lovasz_softmax_huge_logits)
{
    static const double big[] = {1e12, 1e15, 1e16, 1e30};
    const int64_t xs[3] = {1, 3, 1}, ts[2] = {1, 1}, xs12[3] = {1, 3, 12}, ts12[2] = {1, 12};
    lk_runtime *rt = open_runtime(1);
    tens t = tens_new(LK_DTYPE_I64, 2, ts), t12 = tens_new(LK_DTYPE_I64, 2, ts12);
    for (int64_t s = 0; s < 12; s++)
        ((int64_t *)t12.data)[s] = (s * 5 + s / 4) % 3;
    for (int path = PORTABLE; path <= SIMD; path++) {
        lk_loss *all = make_loss_on(rt,
                                    "{\"loss\": \"lovasz_softmax\", \"params\": "
                                    "{\"classes\": \"all\"}}",
                                    path);
        lk_loss *dflt = make_loss_on(rt, "{\"loss\": \"lovasz_softmax\"}", path);
        for (int d = 0; d < 2; d++) {
            int32_t dt = d ? LK_DTYPE_F32 : LK_DTYPE_F64;
            double rel = d ? 1e-7 : 1e-15;
            for (size_t b = 0; b < sizeof big / sizeof big[0]; b++) {
                const double xv[3] = {big[b], big[b], 0.0}, want[3] = {-1.0 / 6.0, 1.0 / 6.0, 0.0};
                tens x = tens_of(dt, 3, xs, xv);
                result r = eval(all, &x, &t, NULL, 0);
                cr_assert_eq(r.st, LK_OK, "path %s: %s", path_names[path], r.err);
                cr_expect(agree(r.value, 1.0 / 3.0, 1e-15, 0.0), "path %s, B = %g: value %.17g",
                          path_names[path], big[b], r.value);
                for (int64_t i = 0; i < 3; i++)
                    cr_expect(agree(r.grad[i], want[i], rel, 0.0),
                              "path %s, %s, B = %g: grad[%lld] = %.17g, want %.17g",
                              path_names[path], d ? "float32" : "float64", big[b], (long long)i,
                              r.grad[i], want[i]);
                result_free(&r);
                free(x.data);
            }
        }
        double base = 0.0;
        static const double scales[] = {1e4, 1e14, 1e16, 1e30};
        for (size_t b = 0; b < sizeof scales / sizeof scales[0]; b++) {
            tens x = tens_new(LK_DTYPE_F64, 3, xs12);
            for (int64_t c = 0; c < 3; c++)
                for (int64_t s = 0; s < 12; s++)
                    put(x.data, LK_DTYPE_F64, c * 12 + s,
                        (double)((s * 7 + c * 5 + s * s * c) % 3 - 1) * scales[b]);
            result r = eval(dflt, &x, &t12, NULL, 0);
            cr_assert_eq(r.st, LK_OK, "path %s: %s", path_names[path], r.err);
            if (b == 0)
                base = r.value;
            cr_expect(agree(r.value, base, 1e-14, 0.0),
                      "path %s: value %.17g at B = %g, %.17g at B = 1e4", path_names[path], r.value,
                      scales[b], base);
            result_free(&r);
            free(x.data);
        }
        lk_loss_free(all);
        lk_loss_free(dflt);
    }
    free(t.data);
    free(t12.data);
    lk_runtime_close(rt);
}

/* Value and gradient of config on (x, t) and of ref on (xr, tr) agree, the
 * gradient of ref summed over the input elements fold maps each of x's to
 * (fold NULL: the same element; else element i gets ref's fold[2i] and,
 * when fold[2i + 1] >= 0, that one too). */
static void expect_configs_agree(lk_runtime *rt, int path, const char *config, const tens *x,
                                 const tens *t, const char *ref, const tens *xr, const tens *tr,
                                 const int64_t *fold)
{
    lk_loss *a = make_loss_on(rt, config, path), *b = make_loss_on(rt, ref, path);
    result ra = eval(a, x, t, NULL, 0), rb = eval(b, xr, tr, NULL, 0);
    cr_assert_eq(ra.st, LK_OK, "%s: %s", config, ra.err);
    cr_assert_eq(rb.st, LK_OK, "%s: %s", ref, rb.err);
    cr_expect(agree(ra.value, rb.value, 1e-13, 0.0), "path %s: %s gives %.17g, %s %.17g",
              path_names[path], config, ra.value, ref, rb.value);
    double floor = 1e-14 * max_finite(rb.grad, rb.n);
    for (int64_t i = 0; i < ra.n; i++) {
        double g =
            fold ? rb.grad[fold[2 * i]] + (fold[2 * i + 1] >= 0 ? rb.grad[fold[2 * i + 1]] : 0.0)
                 : rb.grad[i];
        cr_expect(agree(ra.grad[i], g, 1e-12, floor), "path %s: %s: grad[%lld] = %.17g, want %.17g",
                  path_names[path], config, (long long)i, ra.grad[i], g);
    }
    result_free(&ra);
    result_free(&rb);
    lk_loss_free(a);
    lk_loss_free(b);
}

/* A class listed twice in classes is taken twice, as smp's loss[classes]:
 * the mean over the list's entries, in value and gradient. For the losses
 * of one value per (group, class), classes [1, 1, 2] is classes [1, 2]
 * with class weights 2 and 1 (modes multiclass and multilabel, per_sample,
 * every empty rule, tversky's outer power); for generalized_dice in
 * multilabel mode, it is classes [1, 2, 3] on the input with class 1
 * copied into a class 3; in multiclass mode (softmax: no copy) it is
 * torch's value and gradient (tests/golden/make_segmentation.py's
 * reference, float64), and dice's there is smp's DiceLoss with classes
 * [1, 1, 2] (0.67464140279275530). Every path. */
Test(segmentation, repeated_classes_count_as_listed, .timeout = 120)
{
    static const char *const pair_losses[] = {
        "\"loss\": \"dice\", \"params\": {\"smooth\": 0, \"empty\": \"zero\", ",
        "\"loss\": \"iou\", \"params\": {\"per_sample\": true, ",
        "\"loss\": \"tversky\", \"params\": {\"gamma\": 2, \"alpha\": 0.3, ",
        "\"loss\": \"focal_tversky\", \"params\": {\"empty\": \"skip\", ",
        "\"loss\": \"mcc\", \"params\": {",
    };
    const int64_t xs[3] = {2, 3, 4}, ys[2] = {2, 4}, xs4[3] = {2, 4, 4};
    /* class 2 is empty in sample 1 of the index targets and in the multilabel
     * ones: the empty rules act */
    const double xv[24] = {0.0, 1.0, -1.0, 2.0, 0.3,  -0.7, 1.5, 0.2, 1.0, 0.0,  0.5, -1.0,
                           0.4, 0.9, -0.2, 1.1, -1.0, 0.5,  0.0, 0.0, 0.6, -1.3, 0.8, 0.1};
    const double mlv[24] = {1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
    const int64_t yv[8] = {0, 1, 1, 2, 1, 0, 1, 0};
    tens x = tens_of(LK_DTYPE_F64, 3, xs, xv), ml = tens_of(LK_DTYPE_F64, 3, xs, mlv);
    tens y = tens_new(LK_DTYPE_I64, 2, ys);
    memcpy(y.data, yv, sizeof yv);
    /* the input and multilabel target with class 1 copied into class 3 */
    tens x4 = tens_new(LK_DTYPE_F64, 3, xs4), ml4 = tens_new(LK_DTYPE_F64, 3, xs4);
    int64_t fold[48];
    for (int64_t n = 0; n < 2; n++)
        for (int64_t c = 0; c < 4; c++)
            for (int64_t s = 0; s < 4; s++) {
                int64_t from = (n * 3 + (c == 3 ? 1 : c)) * 4 + s, to = (n * 4 + c) * 4 + s;
                put(x4.data, LK_DTYPE_F64, to, xv[from]);
                put(ml4.data, LK_DTYPE_F64, to, mlv[from]);
                if (c < 3) {
                    fold[2 * from] = to;
                    fold[2 * from + 1] = c == 1 ? (n * 4 + 3) * 4 + s : -1;
                }
            }
    /* make_segmentation.reference({"loss": "generalized_dice", "params":
     * {"mode": "multiclass", "classes": [1, 1, 2]}}, x, y) */
    static const double gd_value = 0.7819782282826744;
    static const double gd_grad[24] = {
        -0.0043541758381459225, 0.0040473042351232644,  0.004197727847261112,
        0.006223672518407832,   -0.0014881537866408131, -0.013356255606656523,
        -0.031373223947068485,  0.0032707130274306976,  0.005842329624786736,
        0.009308951371533258,   0.027175496099807385,   -0.009494385545838528,
        0.00749479259280836,    -0.006193168316640454,  0.011114742196241569,
        -0.004837055819291119,  -0.02334802325477983,   0.0060373001224653215,
        -0.04877671023786089,   0.0036885457620465505,  0.015853230661971467,
        0.00015586819417513258, 0.037661968041619316,   0.0011485100572445675};
    char cfg[256], ref[256];
    lk_runtime *rt = open_runtime(1);
    for (int path = PORTABLE; path <= SIMD; path++) {
        for (size_t l = 0; l < sizeof pair_losses / sizeof pair_losses[0]; l++)
            for (int mode = 0; mode < 2; mode++) {
                int mc = mode == 0;
                if (mc && strstr(pair_losses[l], "mcc"))
                    continue;
                const char *m = mc ? "multiclass" : "multilabel";
                snprintf(cfg, sizeof cfg, "{%s\"mode\": \"%s\", \"classes\": [1, 1, 2]}}",
                         pair_losses[l], m);
                snprintf(ref, sizeof ref,
                         "{%s\"mode\": \"%s\", \"classes\": [1, 2], \"class_weights\": [5, 2, "
                         "1]}}",
                         pair_losses[l], m);
                expect_configs_agree(rt, path, cfg, &x, mc ? &y : &ml, ref, &x, mc ? &y : &ml,
                                     NULL);
            }
        expect_configs_agree(
            rt, path,
            "{\"loss\": \"generalized_dice\", \"params\": {\"mode\": \"multilabel\", "
            "\"classes\": [1, 1, 2]}}",
            &x, &ml,
            "{\"loss\": \"generalized_dice\", \"params\": {\"mode\": \"multilabel\", "
            "\"classes\": [1, 2, 3]}}",
            &x4, &ml4, fold);
        lk_loss *gd = make_loss_on(rt,
                                   "{\"loss\": \"generalized_dice\", \"params\": {\"mode\": "
                                   "\"multiclass\", \"classes\": [1, 1, 2]}}",
                                   path);
        result r = eval(gd, &x, &y, NULL, 0);
        cr_assert_eq(r.st, LK_OK, "%s", r.err);
        cr_expect(agree(r.value, gd_value, 1e-13, 0.0),
                  "path %s: generalized_dice %.17g, torch %.17g", path_names[path], r.value,
                  gd_value);
        for (int64_t i = 0; i < 24; i++)
            cr_expect(agree(r.grad[i], gd_grad[i], 1e-12, 1e-15),
                      "path %s: generalized_dice grad[%lld] = %.17g, torch %.17g", path_names[path],
                      (long long)i, r.grad[i], gd_grad[i]);
        result_free(&r);
        lk_loss_free(gd);
        lk_loss *dice = make_loss_on(rt,
                                     "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", "
                                     "\"classes\": [1, 1, 2], \"smooth\": 0, \"empty\": \"zero\"}}",
                                     path);
        const int64_t xs1[3] = {1, 3, 4}, ys1[2] = {1, 4};
        const double x1v[12] = {0, 1, -1, 2, 1, 0, .5, -1, -1, .5, 0, 0};
        tens x1 = tens_of(LK_DTYPE_F64, 3, xs1, x1v), y1 = tens_new(LK_DTYPE_I64, 2, ys1);
        memcpy(y1.data, (const int64_t[4]){0, 1, 1, 2}, 4 * sizeof(int64_t));
        r = eval(dice, &x1, &y1, NULL, 0);
        cr_expect(r.st == LK_OK && agree(r.value, 0.67464140279275530, 1e-14, 0.0),
                  "path %s: dice %.17g, smp 0.67464140279275530", path_names[path], r.value);
        result_free(&r);
        lk_loss_free(dice);
        free(x1.data);
        free(y1.data);
    }
    lk_runtime_close(rt);
    free(x.data);
    free(ml.data);
    free(y.data);
    free(x4.data);
    free(ml4.data);
}
