/* test_catalogue: every loss of the catalogue families against PyTorch.
 *
 * Each file tests/golden/catalogue/<family>.json (written by that family's
 * script, tests/golden/make_<family>.py, from torch in float64; bindings.json
 * holds weighted sums whose terms bind slots to other tensors) is a list
 * of cases:
 *
 *   {"name": "...", "config": {...}, "tensors": {"input": "tests/...npy", ...},
 *    "value": 0.123 | null, "grads": {"input": "...npy", "var": "...npy"},
 *    "out": "...npy" (reduction none), "rtol": 1e-6, "grad_rtol": 1e-5}
 *
 * Each case is one parameterised test: the config is built through the
 * embedding API and evaluated with a gradient for every slot named in
 * "grads"; the value must agree within rtol (default 1e-6) relative, every
 * gradient and output element within grad_rtol (default 1e-5) relative with a
 * 1e-9 absolute floor. A loss the registry lists from a catalogue family
 * without a case fails catalogue.every_loss_has_a_case.
 *
 * LK_GOLDEN_VERBOSE=1 prints each case's largest relative errors. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"
#include "test_golden_io.h"

#define CAT_DIR     "tests/golden/catalogue"
#define MAX_FILES   32
#define MAX_CASES   2048
#define MAX_TENSORS 16

/* The families whose losses are checked here (the tutorial and torch
 * families have their own suites, test_golden and test_torch). */
static const char *const families[] = {"regression", "classification", "margin",      "contrastive",
                                       "sequence",   "stencil",        "segmentation"};

typedef struct cat_param {
    char file[64];
    int index;
} cat_param;

static cat_param params[MAX_CASES];

static int cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* The manifest names under CAT_DIR, sorted; returns the count. */
static int list_files(char names[MAX_FILES][64])
{
    DIR *d = opendir(LK_SOURCE_ROOT "/" CAT_DIR);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL && n < MAX_FILES) {
        size_t len = strlen(de->d_name);
        if (len > 5 && len < 64 && strcmp(de->d_name + len - 5, ".json") == 0)
            snprintf(names[n++], 64, "%s", de->d_name);
    }
    if (d)
        closedir(d);
    qsort(names, (size_t)n, 64, cmp_name);
    return n;
}

static cJSON *load_manifest(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", LK_SOURCE_ROOT, CAT_DIR, name);
    FILE *f = fopen(path, "rb");
    char *text = f ? read_all(f) : NULL;
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    return j;
}

/* Runs outside any test: an unreadable manifest gives no case from it, and
 * catalogue.manifests_parse fails instead. */
ParameterizedTestParameters(catalogue, torch)
{
    char names[MAX_FILES][64];
    int nf = list_files(names);
    size_t n = 0;
    for (int f = 0; f < nf; f++) {
        cJSON *all = load_manifest(names[f]);
        int k = all ? cJSON_GetArraySize(all) : 0;
        for (int i = 0; i < k && n < MAX_CASES; i++) {
            snprintf(params[n].file, sizeof params[n].file, "%s", names[f]);
            params[n++].index = i;
        }
        cJSON_Delete(all);
    }
    return cr_make_param_array(cat_param, params, n);
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

static double number_or(const cJSON *c, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Every element of got against the reference file (rtol relative, 1e-9
 * absolute floor); returns the largest relative error. */
static double compare(const char *name, const char *what, const lk_array *got, const char *ref_rel,
                      double rtol)
{
    return compare_to_npy(name, what, got, ref_rel, rtol, 1e-9);
}

ParameterizedTest(cat_param *p, catalogue, torch)
{
    cJSON *all = load_manifest(p->file);
    cr_assert_not_null(all, "%s is not valid JSON", p->file);
    const cJSON *c = cJSON_GetArrayItem(all, p->index);
    const char *name = str_member(c, "name");
    cr_assert_not_null(name, "%s: case %d has no name", p->file, p->index);
    lk_runtime *rt = open_runtime();
    char *json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "config"));
    char err[LK_ERRMSG_CAP] = "";
    lk_loss *loss = NULL;
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), name, &loss, err), LK_OK,
                 "%s: config %s: %s", name, json, err);
    free(json);

    lk_array arrays[MAX_TENSORS], grads[MAX_TENSORS], out;
    lk_named_tensor named[MAX_TENSORS], gnamed[MAX_TENSORS];
    const char *grad_ref[MAX_TENSORS];
    size_t n = 0, ng = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(c, "tensors"))
    {
        cr_assert_lt(n, MAX_TENSORS);
        cr_assert(cJSON_IsString(t), "%s: tensor %s is not a file name", name, t->string);
        read_npy(t->valuestring, &arrays[n]);
        named[n] = (lk_named_tensor){t->string, lk_array_view(&arrays[n]), t->valuestring};
        n++;
    }
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(c, "grads"))
    {
        size_t k = 0;
        while (k < n && strcmp(named[k].name, t->string) != 0)
            k++;
        cr_assert_lt(k, n, "%s: gradient of %s, which is not among the tensors", name, t->string);
        cr_assert_eq(
            lk_array_alloc(&grads[ng], arrays[k].dtype, arrays[k].ndim, arrays[k].shape, err),
            LK_OK, "%s", err);
        gnamed[ng] = (lk_named_tensor){t->string, lk_array_view(&grads[ng]), NULL};
        grad_ref[ng++] = t->valuestring;
    }

    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = named;
    args.n_tensors = n;
    args.grads = gnamed;
    args.n_grads = ng;
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

    double rtol = number_or(c, "rtol", 1e-6), grtol = number_or(c, "grad_rtol", 1e-5);
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "value");
    double value_err = 0.0, grad_err = 0.0, out_err = 0.0;
    if (cJSON_IsNumber(want)) {
        cr_expect(close_to(value, want->valuedouble, rtol, 1e-12), "%s: value %.17g, PyTorch %.17g",
                  name, value, want->valuedouble);
        value_err = rel_err(value, want->valuedouble);
    } else {
        cr_assert(cJSON_IsNull(want) && out_rel, "%s: value null needs an \"out\" file", name);
    }
    for (size_t g = 0; g < ng; g++) {
        char what[64];
        snprintf(what, sizeof what, "grad %s", gnamed[g].name);
        grad_err = fmax(grad_err, compare(name, what, &grads[g], grad_ref[g], grtol));
        lk_array_free(&grads[g]);
    }
    if (out_rel) {
        out_err = compare(name, "out", &out, out_rel, grtol);
        lk_array_free(&out);
    }
    if (getenv("LK_GOLDEN_VERBOSE"))
        fprintf(stderr, "catalogue %-40s value rel %.3g  grad rel %.3g  out rel %.3g\n", name,
                value_err, grad_err, out_err);
    for (size_t i = 0; i < n; i++)
        lk_array_free(&arrays[i]);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    cJSON_Delete(all);
}

/* Every manifest parses, and each case names a loss this build has. */
Test(catalogue, manifests_parse)
{
    char names[MAX_FILES][64];
    int nf = list_files(names);
    lk_runtime *rt = open_runtime();
    for (int f = 0; f < nf; f++) {
        cJSON *all = load_manifest(names[f]);
        cr_expect_not_null(all, "%s/%s is not valid JSON", CAT_DIR, names[f]);
        const cJSON *c;
        cJSON_ArrayForEach(c, all)
        {
            /* one loss, or a weighted sum (bindings.json): each term's */
            const cJSON *config = cJSON_GetObjectItemCaseSensitive(c, "config");
            const cJSON *terms = cJSON_GetObjectItemCaseSensitive(config, "terms");
            int n_ids = terms ? cJSON_GetArraySize(terms) : 1;
            for (int k = 0; k < n_ids; k++) {
                const char *id = str_member(terms ? cJSON_GetArrayItem(terms, k) : config, "loss");
                lk_loss_info info;
                char err[LK_ERRMSG_CAP] = "";
                cr_expect(id && lk_runtime_find(rt, id, &info, err) == LK_OK, "%s: case %s: %s",
                          names[f], str_member(c, "name"), id ? err : "no config.loss");
            }
        }
        cJSON_Delete(all);
    }
    lk_runtime_close(rt);
}

/* A case for every loss of a catalogue family: a new loss cannot land
 * without its reference values. */
Test(catalogue, every_loss_has_a_case)
{
    char names[MAX_FILES][64];
    int nf = list_files(names);
    cJSON *ids = cJSON_CreateObject();
    for (int f = 0; f < nf; f++) {
        cJSON *all = load_manifest(names[f]);
        const cJSON *c;
        cJSON_ArrayForEach(c, all)
        {
            const char *id = str_member(cJSON_GetObjectItemCaseSensitive(c, "config"), "loss");
            if (id && !cJSON_GetObjectItemCaseSensitive(ids, id))
                cJSON_AddTrueToObject(ids, id);
        }
        cJSON_Delete(all);
    }
    lk_runtime *rt = open_runtime();
    size_t checked = 0;
    for (size_t i = 0; i < lk_runtime_loss_count(rt); i++) {
        lk_loss_info info;
        cr_assert_eq(lk_runtime_loss_at(rt, i, &info), LK_OK);
        int ours = 0;
        for (size_t k = 0; k < sizeof families / sizeof families[0]; k++)
            ours |= strcmp(info.plugin_name, families[k]) == 0;
        if (!ours || info.shadowed)
            continue;
        checked++;
        cr_expect_not_null(cJSON_GetObjectItemCaseSensitive(ids, info.id),
                           "loss %s (family %s) has no case in %s", info.id, info.plugin_name,
                           CAT_DIR);
    }
    if (getenv("LK_GOLDEN_VERBOSE"))
        fprintf(stderr, "catalogue: %zu losses of catalogue families\n", checked);
    lk_runtime_close(rt);
    cJSON_Delete(ids);
}
