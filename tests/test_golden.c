/* test_golden: the tutorial losses against PyTorch.
 *
 * tests/golden/golden.json (written by tests/golden/make_golden.py from
 * torch in float64) lists cases: a config, the tensors by slot name, the
 * reference value (null for reduction none), the reference gradient with
 * respect to "input" and, for reduction none, the per-element losses. Each
 * case is one parameterised test: the config is built through the embedding
 * API, evaluated with a gradient for "input", and compared with the
 * reference (value 1e-6 relative with a 1e-12 absolute floor; every gradient
 * and output element 1e-6 relative with a 1e-9 absolute floor).
 *
 * LK_GOLDEN_VERBOSE=1 in the environment prints each case's largest relative
 * errors on stderr. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"
#include "test_golden_io.h"

#define SRC(rel)    LK_SOURCE_ROOT "/" rel
#define GOLDEN_JSON SRC("tests/golden/golden.json")
#define MAX_CASES   256
#define MAX_TENSORS 8

/* The eight loss ids of the tutorial family: each must have a golden case
 * and a config in configs/ that the golden data was made from. */
static const char *const family_ids[] = {
    "mse", "l1", "bce_with_logits", "dice", "dice_bce", "iou", "focal", "focal_mean_bce",
};
#define N_IDS (sizeof family_ids / sizeof family_ids[0])

/* ------------------------------------------------------------------------ */
/* Comparison                                                                */

/* Every element of got against the reference file ref_rel (1e-6 relative,
 * 1e-9 absolute floor); returns the largest relative error. */
static double compare_array(const char *name, const char *what, const lk_array *got,
                            const char *ref_rel)
{
    double worst = compare_to_npy(name, what, got, ref_rel, 1e-6, 1e-9);
    cr_assert_gt(numel(got), 0, "%s: empty reference %s", name, ref_rel);
    return worst;
}

/* ------------------------------------------------------------------------ */
/* The cases                                                                 */

typedef struct golden_param {
    int index;
} golden_param;

static golden_param params[MAX_CASES];

/* Runs outside any test: a missing or broken golden.json gives no
 * parameterised case, and configs_match_cases fails instead. */
ParameterizedTestParameters(golden, torch)
{
    FILE *f = fopen(GOLDEN_JSON, "rb");
    cJSON *all = NULL;
    if (f) {
        char *text = read_all(f);
        all = text ? cJSON_Parse(text) : NULL;
        free(text);
    }
    int n = all ? cJSON_GetArraySize(all) : 0;
    cJSON_Delete(all);
    if (n > MAX_CASES)
        n = MAX_CASES;
    for (int i = 0; i < n; i++)
        params[i].index = i;
    return cr_make_param_array(golden_param, params, (size_t)n);
}

static lk_runtime *open_runtime(void)
{
    lk_runtime_options opts;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_runtime_options_init(&opts);
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "lk_runtime_open: %s", err);
    return rt;
}

static lk_loss *build_loss(lk_runtime *rt, const char *name, const cJSON *config)
{
    char *json = cJSON_PrintUnformatted(config);
    char err[LK_ERRMSG_CAP] = "";
    lk_loss *loss = NULL;
    lk_status st = lk_loss_from_json(rt, json, strlen(json), name, &loss, err);
    cr_assert_eq(st, LK_OK, "%s: config %s: %s (%s)", name, json, err, lk_status_name(st));
    free(json);
    return loss;
}

/* Loads the case's tensors (slot name -> file) into arrays and names. */
static size_t load_tensors(const cJSON *c, lk_array *arrays, lk_named_tensor *named)
{
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(c, "tensors");
    const cJSON *t;
    size_t n = 0;
    cJSON_ArrayForEach(t, tensors)
    {
        cr_assert_lt(n, MAX_TENSORS);
        cr_assert(cJSON_IsString(t), "tensor %s is not a file name", t->string);
        read_npy(t->valuestring, &arrays[n]);
        named[n].name = t->string;
        named[n].tensor = lk_array_view(&arrays[n]);
        named[n].origin = t->valuestring;
        n++;
    }
    return n;
}

ParameterizedTest(golden_param *p, golden, torch)
{
    cJSON *all = read_json(GOLDEN_JSON);
    const cJSON *c = cJSON_GetArrayItem(all, p->index);
    const char *name = str_member(c, "name");
    cr_assert_not_null(name, "case %d has no name", p->index);
    lk_runtime *rt = open_runtime();
    lk_loss *loss = build_loss(rt, name, cJSON_GetObjectItemCaseSensitive(c, "config"));

    lk_array arrays[MAX_TENSORS], grad, out;
    lk_named_tensor named[MAX_TENSORS], gnamed;
    size_t n = load_tensors(c, arrays, named);
    cr_assert(n >= 2 && strcmp(named[0].name, "input") == 0, "%s: input must come first", name);
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_array_alloc(&grad, arrays[0].dtype, arrays[0].ndim, arrays[0].shape, err),
                 LK_OK, "%s", err);
    gnamed.name = "input";
    gnamed.tensor = lk_array_view(&grad);
    gnamed.origin = NULL;

    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = named;
    args.n_tensors = n;
    args.grads = &gnamed;
    args.n_grads = 1;

    const char *out_rel = str_member(c, "out");
    lk_tensor out_view;
    if (out_rel) {
        int32_t ndim;
        int64_t shape[LK_MAX_NDIM];
        cr_assert_eq(lk_loss_out_shape(loss, &args, &ndim, shape), LK_OK, "%s: %s", name,
                     args.errmsg);
        cr_assert_eq(lk_array_alloc(&out, arrays[0].dtype, ndim, shape, err), LK_OK, "%s", err);
        out_view = lk_array_view(&out);
        args.out = &out_view;
    }

    double value = NAN;
    lk_status st = lk_loss_eval(loss, &args, &value);
    cr_assert_eq(st, LK_OK, "%s: lk_loss_eval: %s (%s)", name, args.errmsg, lk_status_name(st));

    const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "value");
    double value_err = 0.0, out_err = 0.0;
    if (cJSON_IsNumber(want)) {
        cr_expect(close_to(value, want->valuedouble, 1e-6, 1e-12), "%s: value %.17g, PyTorch %.17g",
                  name, value, want->valuedouble);
        value_err = rel_err(value, want->valuedouble);
    } else {
        cr_assert(cJSON_IsNull(want) && out_rel, "%s: value null needs an \"out\" file", name);
    }
    double grad_err = compare_array(name, "grad", &grad, str_member(c, "grad"));
    if (out_rel) {
        out_err = compare_array(name, "out", &out, out_rel);
        lk_array_free(&out);
    }
    if (getenv("LK_GOLDEN_VERBOSE"))
        fprintf(stderr, "golden %-28s value rel %.3g  grad rel %.3g  out rel %.3g\n", name,
                value_err, grad_err, out_err);

    lk_array_free(&grad);
    for (size_t i = 0; i < n; i++)
        lk_array_free(&arrays[i]);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    cJSON_Delete(all);
}

/* ------------------------------------------------------------------------ */
/* Coverage of the golden file itself                                        */

static const cJSON *find_case(const cJSON *all, const char *name)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, all)
    {
        const char *n = str_member(c, "name");
        if (n && strcmp(n, name) == 0)
            return c;
    }
    return NULL;
}

/* Each loss id has a case named after it whose config is exactly
 * configs/<id>.json, so the shipped configs are what the golden data check. */
Test(golden, configs_match_cases)
{
    cJSON *all = read_json(GOLDEN_JSON);
    cr_assert_geq(cJSON_GetArraySize(all), 40, "golden.json has too few cases");
    for (size_t i = 0; i < N_IDS + 1; i++) {
        const char *id = i < N_IDS ? family_ids[i] : "dice_bce_terms";
        char path[4096];
        snprintf(path, sizeof path, "%s/configs/%s.json", LK_SOURCE_ROOT, id);
        cJSON *file = read_json(path);
        const cJSON *c = find_case(all, id);
        cr_assert_not_null(c, "no golden case named %s", id);
        cr_expect(cJSON_Compare(file, cJSON_GetObjectItemCaseSensitive(c, "config"), 1),
                  "configs/%s.json differs from the config of golden case %s", id, id);
        cJSON_Delete(file);
    }
    cJSON_Delete(all);
}

/* The weighted-sum config equals dice_bce in the reference too. */
Test(golden, terms_equal_dice_bce)
{
    cJSON *all = read_json(GOLDEN_JSON);
    const cJSON *terms = find_case(all, "dice_bce_terms");
    const cJSON *plain = find_case(all, "dice_bce");
    cr_assert(terms && plain, "dice_bce and dice_bce_terms cases are required");
    double a = cJSON_GetObjectItemCaseSensitive(terms, "value")->valuedouble;
    double b = cJSON_GetObjectItemCaseSensitive(plain, "value")->valuedouble;
    cr_expect(close_to(a, b, 1e-12, 0.0), "dice_bce_terms %.17g, dice_bce %.17g", a, b);
    cJSON_Delete(all);
}

/* Each shipped config also loads from its file and runs on the bundled
 * sample data as it is. */
Test(golden, configs_run_on_sample_data)
{
    lk_runtime *rt = open_runtime();
    lk_array x, t;
    read_npy("configs/data/input.npy", &x);
    read_npy("configs/data/target.npy", &t);
    cr_assert_eq(x.dtype, LK_DTYPE_F32, "sample input must be float32");
    cr_assert_eq(t.dtype, LK_DTYPE_F32, "sample target must be float32");
    cr_assert_eq(numel(&x), 512, "sample input must be 2x1x16x16");
    lk_named_tensor named[2] = {
        {.name = "input", .tensor = lk_array_view(&x), .origin = "configs/data/input.npy"},
        {.name = "target", .tensor = lk_array_view(&t), .origin = "configs/data/target.npy"},
    };
    for (size_t i = 0; i < N_IDS + 1; i++) {
        const char *id = i < N_IDS ? family_ids[i] : "dice_bce_terms";
        char path[4096], err[LK_ERRMSG_CAP] = "";
        snprintf(path, sizeof path, "%s/configs/%s.json", LK_SOURCE_ROOT, id);
        lk_loss *loss = NULL;
        lk_status st = lk_loss_from_file(rt, path, &loss, err);
        cr_assert_eq(st, LK_OK, "%s: %s", path, err);
        lk_eval_args args;
        lk_eval_args_init(&args);
        args.tensors = named;
        args.n_tensors = 2;
        double v = NAN;
        cr_expect_eq(lk_loss_eval(loss, &args, &v), LK_OK, "%s: %s", id, args.errmsg);
        cr_expect(isfinite(v) && v > 0.0, "%s: value %g", id, v);
        lk_loss_free(loss);
    }
    lk_array_free(&x);
    lk_array_free(&t);
    lk_runtime_close(rt);
}
