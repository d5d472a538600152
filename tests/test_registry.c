/* test_registry: loading plugins, on real fixture .so files good and broken
 * (tests/fixtures/plugins). What a user sees is pinned: which losses are
 * served, from which file, what each refused plugin's diagnostic says, how
 * the search path orders and shadows, and that a good plugin's losses give
 * the right numbers once loaded. */
#include <criterion/criterion.h>
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "losskit/losskit.h"

#define FX(name) LK_FIXTURE_DIR "/" name ".so"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* A runtime that searches path only: no $LOSSKIT_PLUGIN_PATH, no default
 * folder, so that only the fixtures named are loaded. */
static lk_runtime *open_path(const char *path)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = path;
    opts.use_env_path = 0;
    opts.use_default_path = 0;
    opts.threads = 2;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_status st = lk_runtime_open(&opts, &rt, err);
    cr_assert_eq(st, LK_OK, "lk_runtime_open(%s): %s", path ? path : "NULL", err);
    cr_assert_not_null(rt, "lk_runtime_open returned LK_OK and no runtime");
    return rt;
}

/* All diagnostics, one per line, for failure messages. */
static const char *all_diags(const lk_runtime *rt)
{
    static char buf[8192];
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < lk_runtime_diag_count(rt) && used < sizeof buf; i++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "  [%zu] %s\n", i,
                                 lk_runtime_diag(rt, i));
    return used ? buf : "  (none)\n";
}

static void expect_no_diag(const lk_runtime *rt)
{
    cr_expect_eq(lk_runtime_diag_count(rt), 0, "unexpected diagnostics:\n%s", all_diags(rt));
}

/* The one diagnostic line about file: "FILE: problem" (losskit.h), naming the
 * file as it was found on the path. Asserts there is exactly one. */
static const char *diag_about(const lk_runtime *rt, const char *file)
{
    const char *found = NULL;
    size_t n = 0, len = strlen(file);
    for (size_t i = 0; i < lk_runtime_diag_count(rt); i++) {
        const char *d = lk_runtime_diag(rt, i);
        cr_assert_not_null(d, "lk_runtime_diag(%zu) is NULL below the count", i);
        if (strncmp(d, file, len) == 0 && d[len] == ':') {
            found = d;
            n++;
        }
    }
    cr_assert_eq(n, 1, "expected one diagnostic \"%s: ...\", got %zu:\n%s", file, n, all_diags(rt));
    cr_expect_null(strchr(found, '\n'), "a diagnostic is one line: %s", found);
    return found;
}

static void expect_mentions(const char *line, const char *what)
{
    cr_expect_not_null(strstr(line, what), "the diagnostic does not mention \"%s\": %s", what,
                       line);
}

static int find(const lk_runtime *rt, const char *id, lk_loss_info *info)
{
    char err[LK_ERRMSG_CAP];
    return lk_runtime_find(rt, id, info, err) == LK_OK;
}

static void expect_served(const lk_runtime *rt, const char *id, const char *file)
{
    lk_loss_info info;
    char err[LK_ERRMSG_CAP] = "";
    lk_status st = lk_runtime_find(rt, id, &info, err);
    cr_assert_eq(st, LK_OK, "%s is not served: %s\ndiagnostics:\n%s", id, err, all_diags(rt));
    cr_expect_str_eq(info.id, id, "find(%s) returned %s", id, info.id);
    if (file)
        cr_expect_str_eq(info.plugin_file, file, "%s is served from the wrong file", id);
    cr_expect_eq(info.shadowed, 0, "the loss that serves %s is marked shadowed", id);
}

static void expect_not_served(const lk_runtime *rt, const char *id)
{
    lk_loss_info info;
    memset(&info, 0, sizeof info);
    cr_expect_not(find(rt, id, &info), "%s is served (from %s) but should have been refused", id,
                  info.plugin_file);
    for (size_t i = 0; i < lk_runtime_loss_count(rt); i++) {
        cr_assert_eq(lk_runtime_loss_at(rt, i, &info), LK_OK, "loss_at(%zu)", i);
        cr_expect_str_neq(info.id, id, "%s is listed (from %s) but was refused", id,
                          info.plugin_file);
    }
}

/* fx_good's two losses are served from path, and nothing else broke them. */
static void expect_good_served(const lk_runtime *rt, const char *path)
{
    expect_served(rt, "fx_sq", path);
    expect_served(rt, "fx_count", path);
}

static lk_loss *build(lk_runtime *rt, const char *json)
{
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_status st = lk_loss_from_json(rt, json, strlen(json), "test.json", &loss, err);
    cr_assert_eq(st, LK_OK, "config %s: %s", json, err);
    cr_assert_not_null(loss, "no loss from %s", json);
    return loss;
}

/* Evaluates loss on float64 input x (and target t when not NULL), n
 * positions in one dimension; fills grad (n doubles) when not NULL. */
static double eval_loss(const lk_loss *loss, const double *x, const double *t, int64_t n,
                        double *grad)
{
    int64_t shape[1] = {n};
    lk_named_tensor in[2] = {
        {.name = "input", .tensor = {(void *)x, LK_DTYPE_F64, 1, shape, NULL}},
        {.name = "target", .tensor = {(void *)t, LK_DTYPE_F64, 1, shape, NULL}},
    };
    lk_named_tensor g[1] = {
        {.name = "input", .tensor = {grad, LK_DTYPE_F64, 1, shape, NULL}},
    };
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = t ? 2 : 1;
    args.grads = grad ? g : NULL;
    args.n_grads = grad ? 1 : 0;
    double value = NAN;
    lk_status st = lk_loss_eval(loss, &args, &value);
    cr_assert_eq(st, LK_OK, "lk_loss_eval: %s", args.errmsg);
    return value;
}

/* Builds json, evaluates it once and frees it. */
static double eval_json(lk_runtime *rt, const char *json, const double *x, const double *t,
                        int64_t n, double *grad)
{
    lk_loss *loss = build(rt, json);
    double v = eval_loss(loss, x, t, n, grad);
    lk_loss_free(loss);
    return v;
}

#define EPS 1e-12
#define expect_near(actual, expected, what)                                                        \
    cr_expect(fabs((actual) - (expected)) <= EPS * (1.0 + fabs(expected)),                         \
              "%s: got %.17g, expected %.17g", what, (double)(actual), (double)(expected))

/* A private temporary folder (mode 0700), removed by rm_tree. */
static void make_temp_dir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/lk-registry-XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

static void copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    cr_assert_not_null(in, "open %s: %s", src, strerror(errno));
    FILE *out = fopen(dst, "wb");
    cr_assert_not_null(out, "create %s: %s", dst, strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, out), n, "write %s", dst);
    fclose(in);
    cr_assert_eq(fclose(out), 0, "close %s", dst);
    cr_assert_eq(chmod(dst, 0755), 0, "chmod %s", dst);
}

/* Copies fixture name.so into dir; returns the copy's path in out. */
static void copy_fixture(const char *name, const char *dir, char *out, size_t cap)
{
    char src[1024];
    snprintf(src, sizeof src, "%s/%s.so", LK_FIXTURE_DIR, name);
    snprintf(out, cap, "%s/%s.so", dir, name);
    copy_file(src, out);
}

static void rm_tree(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0, "%s", cmd);
}

/* ------------------------------------------------------------------------ */
/* A good plugin                                                             */

Test(registry, good_plugin_lists_its_losses)
{
    lk_runtime *rt = open_path(FX("fx_good"));
    expect_no_diag(rt);
    cr_assert_eq(lk_runtime_loss_count(rt), 2, "fx_good has two losses");

    static const char *const ids[] = {"fx_sq", "fx_count"};
    static const size_t n_params[] = {2, 3};
    static const size_t n_slots[] = {1, 2};
    for (size_t i = 0; i < 2; i++) {
        lk_loss_info info;
        memset(&info, 0xab, sizeof info);
        cr_assert_eq(lk_runtime_loss_at(rt, i, &info), LK_OK, "loss_at(%zu)", i);
        /* Declaration order is kept. */
        cr_expect_str_eq(info.id, ids[i], "loss %zu", i);
        cr_expect_str_eq(info.plugin_file, FX("fx_good"), "plugin_file of %s", ids[i]);
        cr_expect_str_eq(info.plugin_name, "fx_good", "plugin_name of %s", ids[i]);
        cr_expect_str_eq(info.plugin_version, "0.0.1", "plugin_version of %s", ids[i]);
        cr_expect_eq(info.shadowed, 0, "%s is not shadowed", ids[i]);
        cr_expect_null(info.shadowed_by, "%s: shadowed_by is set", ids[i]);
        cr_assert_not_null(info.desc, "%s: desc", ids[i]);
        cr_expect_str_eq(info.desc->id, ids[i], "desc of %s", ids[i]);
        size_t np = 0, ns = 0;
        while (info.desc->params && info.desc->params[np])
            np++;
        while (info.desc->slots[ns])
            ns++;
        cr_expect_eq(np, n_params[i], "%s declares %zu params", ids[i], n_params[i]);
        cr_expect_eq(ns, n_slots[i], "%s declares %zu slots", ids[i], n_slots[i]);
    }
    lk_loss_info info;
    cr_expect_eq(lk_runtime_loss_at(rt, 2, &info), LK_ERR_NOT_FOUND, "loss_at past the end");
    cr_expect_null(lk_runtime_diag(rt, 0), "lk_runtime_diag past the end");
    lk_runtime_close(rt);
}

Test(registry, fused_loss_evaluates)
{
    lk_runtime *rt = open_path(FX("fx_good"));
    const double x[3] = {1.0, -2.0, 3.0};
    double g[3];

    /* Defaults: scale 1, plain, sum: 1 + 4 + 9; gradient 2x. */
    expect_near(eval_json(rt, "{\"loss\": \"fx_sq\"}", x, NULL, 3, g), 14.0, "fx_sq sum");
    expect_near(g[0], 2.0, "grad[0]");
    expect_near(g[1], -4.0, "grad[1]");
    expect_near(g[2], 6.0, "grad[2]");

    /* scale 2, half: s = 1; mean over 3: 14 / 3; gradient 2 s x / 3. */
    const char *cfg = "{\"loss\": \"fx_sq\", \"params\": {\"scale\": 2, \"mode\": \"half\"},"
                      " \"reduction\": \"mean\"}";
    expect_near(eval_json(rt, cfg, x, NULL, 3, g), 14.0 / 3.0, "fx_sq half mean");
    expect_near(g[0], 2.0 / 3.0, "grad[0]");
    expect_near(g[1], -4.0 / 3.0, "grad[1]");
    expect_near(g[2], 2.0, "grad[2]");
    lk_runtime_close(rt);
}

Test(registry, fused_loss_reduction_none)
{
    lk_runtime *rt = open_path(FX("fx_good"));
    const double x[3] = {1.0, -2.0, 3.0};
    double out_buf[3] = {-1, -1, -1};
    int64_t shape[1] = {3};
    lk_loss *loss = build(rt, "{\"loss\": \"fx_sq\", \"params\": {\"scale\": 3},"
                              " \"reduction\": \"none\"}");
    lk_named_tensor in[1] = {
        {.name = "input", .tensor = {(void *)x, LK_DTYPE_F64, 1, shape, NULL}}};
    lk_tensor out = {out_buf, LK_DTYPE_F64, 1, shape, NULL};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = 1;
    args.out = &out;
    double value = 0.0;
    cr_assert_eq(lk_loss_eval(loss, &args, &value), LK_OK, "%s", args.errmsg);
    cr_expect(isnan(value), "reduction none gives NaN as value, got %g", value);
    expect_near(out_buf[0], 3.0, "out[0]");
    expect_near(out_buf[1], 12.0, "out[1]");
    expect_near(out_buf[2], 27.0, "out[2]");
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

Test(registry, non_fused_loss_evaluates)
{
    lk_runtime *rt = open_path(FX("fx_good"));
    const double x[4] = {1.0, 2.0, 3.0, 4.0};
    const double t[4] = {0.0, 2.0, -100.0, 1.0};
    double g[4];

    /* Defaults: ignore_index -100 drops position 2; squared; weight 1;
     * mean over the 3 kept: (1 + 0 + 9) / 3; gradient 2 (x - t) / 3. */
    expect_near(eval_json(rt, "{\"loss\": \"fx_count\"}", x, t, 4, g), 10.0 / 3.0,
                "fx_count default");
    expect_near(g[0], 2.0 / 3.0, "grad[0]");
    expect_near(g[1], 0.0, "grad[1]");
    expect_near(g[2], 0.0, "grad[2] (ignored)");
    expect_near(g[3], 2.0, "grad[3]");

    /* ignore_index 2 drops position 1; |x - t|; weights 1, 3, 1, 3; sum:
     * 1 + 103 + 3 * 3. Gradient: w sign(x - t). */
    const char *cfg = "{\"loss\": \"fx_count\", \"reduction\": \"sum\", \"params\":"
                      " {\"ignore_index\": 2, \"squared\": false, \"weights\": [1, 3]}}";
    expect_near(eval_json(rt, cfg, x, t, 4, g), 113.0, "fx_count configured");
    expect_near(g[0], 1.0, "grad[0]");
    expect_near(g[1], 0.0, "grad[1] (ignored)");
    expect_near(g[2], 1.0, "grad[2]");
    expect_near(g[3], 3.0, "grad[3]");
    lk_runtime_close(rt);
}

Test(registry, non_fused_loss_over_many_blocks)
{
    /* More positions than three default blocks: the host must add every
     * block's statistics and hand the combined count to backward. */
    enum { N = 3 * LK_BLOCK_POSITIONS + 123 };
    static double x[N], t[N], g[N];
    double sum = 0.0, kept = 0.0;
    for (int64_t i = 0; i < N; i++) {
        x[i] = (double)(i % 7) - 3.0;
        t[i] = i % 5 == 0 ? -100.0 : 0.5;
        if (t[i] != -100.0) {
            sum += (x[i] - 0.5) * (x[i] - 0.5);
            kept += 1.0;
        }
    }
    lk_runtime *rt = open_path(FX("fx_good"));
    expect_near(eval_json(rt, "{\"loss\": \"fx_count\"}", x, t, N, g), sum / kept,
                "fx_count mean over blocks");
    for (int64_t i = 0; i < N; i++) {
        double want = t[i] == -100.0 ? 0.0 : 2.0 * (x[i] - 0.5) / kept;
        if (fabs(g[i] - want) > 1e-15) {
            cr_expect_fail("grad[%lld] = %.17g, expected %.17g", (long long)i, g[i], want);
            break;
        }
    }
    lk_runtime_close(rt);
}

Test(registry, plugin_schema_is_enforced)
{
    /* The host validates configs against a plugin's declared params before
     * the plugin sees them; each of these would reach create() otherwise. */
    static const char *const bad[] = {
        "{\"loss\": \"fx_sq\", \"params\": {\"scale\": 0}}",     /* min is exclusive */
        "{\"loss\": \"fx_sq\", \"params\": {\"scale\": 100.5}}", /* above max */
        "{\"loss\": \"fx_sq\", \"params\": {\"mode\": \"quarter\"}}",
        "{\"loss\": \"fx_sq\", \"params\": {\"scal\": 2}}",
        "{\"loss\": \"fx_sq\", \"reduction\": \"batchmean\"}", /* not offered */
        "{\"loss\": \"fx_count\", \"params\": {\"ignore_index\": 1.5}}",
        "{\"loss\": \"fx_count\", \"params\": {\"ignore_index\": 1001}}",
        "{\"loss\": \"fx_count\", \"params\": {\"squared\": 1}}",
        "{\"loss\": \"fx_count\", \"params\": {\"weights\": []}}", /* shorter than 1 */
        "{\"loss\": \"fx_count\", \"params\": {\"weights\": [1, 1, 1, 1, 1]}}",
        "{\"loss\": \"fx_count\", \"params\": {\"weights\": [1, 11]}}",
    };
    lk_runtime *rt = open_path(FX("fx_good"));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lk_loss *loss = NULL;
        char err[LK_ERRMSG_CAP] = "";
        lk_status st = lk_loss_from_json(rt, bad[i], strlen(bad[i]), "bad.json", &loss, err);
        cr_expect_eq(st, LK_ERR_CONFIG, "%s was accepted (%d)", bad[i], st);
        cr_expect_null(loss, "%s: a loss was returned on failure", bad[i]);
        cr_expect_not_null(strstr(err, "bad.json"), "%s: message lacks the source: %s", bad[i],
                           err);
        lk_loss_free(loss);
    }
    /* The bounds themselves are accepted: max is inclusive. */
    lk_loss_free(build(rt, "{\"loss\": \"fx_sq\", \"params\": {\"scale\": 100}}"));
    lk_loss_free(build(rt, "{\"loss\": \"fx_count\", \"params\": {\"weights\": [0, 10, 1, 2]}}"));
    lk_runtime_close(rt);
}

Test(registry, modules_outlive_the_runtime_while_losses_live)
{
    /* docs/design.md: a module is never unloaded while an instance from it
     * lives. If closing the runtime unloaded fx_good.so, this evaluation
     * would jump into unmapped code and crash the test. */
    lk_runtime *rt = open_path(FX("fx_good"));
    lk_loss *loss = build(rt, "{\"loss\": \"fx_count\", \"reduction\": \"sum\"}");
    lk_runtime_close(rt);
    const double x[2] = {3.0, 1.0}, t[2] = {1.0, 1.0};
    double g[2];
    expect_near(eval_loss(loss, x, t, 2, g), 4.0, "after lk_runtime_close");
    expect_near(g[0], 4.0, "grad[0]");
    lk_loss_free(loss);
}

/* ------------------------------------------------------------------------ */
/* Broken plugins: one diagnostic each, and fx_good is still served          */

/* Opens broken.so followed by fx_good.so; returns the runtime and the one
 * diagnostic about broken. */
static lk_runtime *open_with_good(const char *broken, const char **diag)
{
    char path[2048];
    snprintf(path, sizeof path, "%s:%s", broken, FX("fx_good"));
    lk_runtime *rt = open_path(path);
    cr_expect_eq(lk_runtime_diag_count(rt), 1, "expected one diagnostic:\n%s", all_diags(rt));
    *diag = diag_about(rt, broken);
    expect_good_served(rt, FX("fx_good"));
    cr_expect_eq(lk_runtime_loss_count(rt), 2, "only fx_good's losses are listed");
    return rt;
}

Test(registry, wrong_major_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_wrong_major"), &d);
    /* The file, its version and the host's. */
    expect_mentions(d, "fx_wrong_major.so");
    expect_mentions(d, "ABI 2.0");
    expect_mentions(d, "ABI 1.6");
    expect_not_served(rt, "fx_wrong_major");
    lk_runtime_close(rt);
}

Test(registry, missing_entry_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_missing_entry"), &d);
    expect_mentions(d, "fx_missing_entry.so");
    expect_mentions(d, "losskit_plugin_entry");
    lk_runtime_close(rt);
}

Test(registry, null_entry_result_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_null_entry"), &d);
    expect_mentions(d, "fx_null_entry.so");
    expect_mentions(d, "losskit_plugin_entry");
    expect_mentions(d, "NULL");
    lk_runtime_close(rt);
}

Test(registry, null_required_function_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_null_required"), &d);
    expect_mentions(d, "fx_null_required.so");
    expect_mentions(d, "fx_null_forward");
    expect_mentions(d, "forward");
    expect_not_served(rt, "fx_null_forward");
    lk_runtime_close(rt);
}

Test(registry, duplicate_id_in_one_plugin_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_duplicate_id"), &d);
    expect_mentions(d, "fx_duplicate_id.so");
    expect_mentions(d, "'fx_dup'");
    /* The host refuses a plugin with any bad loss whole (registry.c): its
     * unique loss is not served either, so a half-working plugin is never
     * mistaken for a working one. */
    expect_not_served(rt, "fx_dup");
    expect_not_served(rt, "fx_dup_other");
    lk_runtime_close(rt);
}

Test(registry, param_default_outside_range_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_bad_default"), &d);
    expect_mentions(d, "fx_bad_default.so");
    expect_mentions(d, "'fx_bad_default'");
    /* The author must learn which parameter is wrong, not only that one
     * is. */
    expect_mentions(d, "alpha");
    expect_mentions(d, "default");
    expect_not_served(rt, "fx_bad_default");
    lk_runtime_close(rt);
}

Test(registry, default_reduction_not_offered_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_bad_reduction"), &d);
    expect_mentions(d, "fx_bad_reduction.so");
    expect_mentions(d, "'fx_bad_reduction'");
    expect_mentions(d, "its default reduction 'none' is not one it offers");
    expect_not_served(rt, "fx_bad_reduction");
    lk_runtime_close(rt);
}

Test(registry, param_with_empty_unset_text_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_bad_unset"), &d);
    expect_mentions(d, "fx_bad_unset.so");
    expect_mentions(d, "'fx_bad_unset'");
    expect_mentions(d, "'ignore_index'");
    expect_mentions(d, "its unset text is empty");
    expect_not_served(rt, "fx_bad_unset");
    lk_runtime_close(rt);
}

Test(registry, loss_without_slots_is_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_no_slots"), &d);
    expect_mentions(d, "fx_no_slots.so");
    expect_mentions(d, "'fx_no_slots'");
    expect_mentions(d, "slot");
    expect_not_served(rt, "fx_no_slots");
    lk_runtime_close(rt);
}

Test(registry, crashing_kernel_loads)
{
    /* Nothing is wrong with its descriptor: only running it crashes, which
     * `losskit check` finds in a child process. Never evaluated here. */
    lk_runtime *rt = open_path(FX("fx_crash_kernel"));
    expect_no_diag(rt);
    expect_served(rt, "fx_crash", FX("fx_crash_kernel"));
    lk_runtime_close(rt);
}

Test(registry, newer_minor_is_accepted)
{
    lk_runtime *rt = open_path(FX("fx_newer_minor"));
    expect_no_diag(rt);
    expect_served(rt, "fx_newer", FX("fx_newer_minor"));
    lk_loss_info info;
    cr_assert(find(rt, "fx_newer", &info), "fx_newer");
    cr_expect_str_eq(info.plugin_name, "fx_newer_minor", "plugin_name");
    cr_expect_str_eq(info.desc->summary, "k times the sum, from a newer minor", "summary");
    cr_expect_str_eq(info.desc->params[0]->name, "k", "param reached through the bigger desc");
    cr_expect_null(info.desc->params[1], "one param");

    /* Its loss is usable, params included: default k = 3, then k = -1 with
     * mean. */
    const double x[3] = {1.0, 2.0, 3.0};
    double g[3];
    expect_near(eval_json(rt, "{\"loss\": \"fx_newer\"}", x, NULL, 3, g), 18.0, "k = 3, sum");
    expect_near(g[1], 3.0, "grad[1]");
    expect_near(eval_json(rt,
                          "{\"loss\": \"fx_newer\", \"params\": {\"k\": -1},"
                          " \"reduction\": \"mean\"}",
                          x, NULL, 3, g),
                -2.0, "k = -1, mean");
    expect_near(g[2], -1.0 / 3.0, "grad[2]");
    lk_runtime_close(rt);
}

Test(registry, older_minor_is_read_only_as_far_as_its_structs_go)
{
    /* fx_older_minor is built against 1.1: its parameter struct ends before
     * `unset`, and the pointer after it must not be taken for one. */
    lk_runtime *rt = open_path(FX("fx_older_minor"));
    expect_no_diag(rt);
    expect_served(rt, "fx_older", FX("fx_older_minor"));
    lk_loss_info info;
    cr_assert(find(rt, "fx_older", &info), "fx_older");
    cr_expect_eq(info.plugin_abi_minor, 1, "plugin_abi_minor");
    const lk_param_desc *k = info.desc->params[0];
    cr_assert_not_null(k, "its param");
    cr_expect_str_eq(k->name, "k", "param name");
    cr_expect_eq(k->default_number, 2.0, "its default");
    cr_expect_null(lk_param_unset_of(k, info.plugin_abi_minor), "unset read from a 1.1 plugin");
    /* the host's copy of the descriptor holds NULL there too: the scan
     * never wrote what lay past the struct */
    cr_expect_null(k->unset, "the scan record carried what lay past a 1.1 parameter");
    /* and its slot ends before `ndims`: the mask after it (rank 5 only) is
     * neither read nor carried, so a 1-D input is taken below */
    const lk_slot_desc *in = info.desc->slots[0];
    cr_expect_eq(lk_slot_ndims_of(in, info.plugin_abi_minor), 0u, "ndims read from a 1.1 plugin");
    cr_expect_eq(in->ndims, 0u, "the scan record carried what lay past a 1.1 slot");
    const double x[3] = {1.0, 2.0, 3.0};
    expect_near(eval_json(rt, "{\"loss\": \"fx_older\"}", x, NULL, 3, NULL), 12.0, "2 x the sum");
    lk_runtime_close(rt);
}

Test(registry, slot_ndims_beyond_max_ndim_are_refused)
{
    const char *d;
    lk_runtime *rt = open_with_good(FX("fx_bad_ndims"), &d);
    expect_mentions(d, "fx_bad_ndims.so");
    expect_mentions(d, "'fx_bad_ndims'");
    expect_mentions(d, "'input'");
    expect_mentions(d, "names more than 16 dimensions");
    expect_not_served(rt, "fx_bad_ndims");
    lk_runtime_close(rt);
}

Test(registry, batch_layouts_no_tensor_can_have_are_refused)
{
    static const struct {
        const char *file, *problem;
    } cases[] = {
        {"fx_bad_batch_dim", "its batch (17) is neither LK_BATCH_UNDECLARED nor LK_BATCH_DIM(d)"},
        {"fx_bad_batch_rank", "its batch dim 2 is beyond every rank it accepts"},
        {"fx_bad_batch_views", "it has batch_views or LK_SLOT_PADDED but no batch dim"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024], file[256], id[64];
        snprintf(path, sizeof path, "%s/%s.so", LK_FIXTURE_DIR, cases[i].file);
        snprintf(file, sizeof file, "%s.so", cases[i].file);
        snprintf(id, sizeof id, "'%s'", cases[i].file);
        const char *d;
        lk_runtime *rt = open_with_good(path, &d);
        expect_mentions(d, file);
        expect_mentions(d, id);
        expect_mentions(d, "'input'");
        expect_mentions(d, cases[i].problem);
        expect_not_served(rt, cases[i].file);
        lk_runtime_close(rt);
    }
}

Test(registry, batch_of_a_slot_follows_the_plugins_minor)
{
    /* lk_slot_batch_of reads the members only from a plugin of 1.6 or
     * later: the same bytes say "undeclared" for an older minor. */
    const lk_slot_desc s = {
        .name = "input", .flags = LK_SLOT_PADDED, .batch = LK_BATCH_DIM(1), .batch_views = 3};
    uint32_t views = 0;
    int32_t padded = -1;
    cr_expect_eq(lk_slot_batch_of(&s, 5, &views, &padded), -1, "minor 5");
    cr_expect_eq(views, 1u, "minor 5: one view");
    cr_expect_eq(padded, 0, "minor 5: not padded");
    cr_expect_eq(lk_slot_batch_of(&s, 6, &views, &padded), 1, "minor 6");
    cr_expect_eq(views, 3u, "minor 6: views");
    cr_expect_eq(padded, 1, "minor 6: padded");
    const lk_slot_desc one = {.name = "input", .batch = LK_BATCH_DIM(0)};
    cr_expect_eq(lk_slot_batch_of(&one, 7, &views, NULL), 0, "a newer minor");
    cr_expect_eq(views, 1u, "batch_views 0 is one view");
}

Test(registry, ndims_of_a_slot_follows_the_plugins_minor)
{
    const lk_slot_desc s = {.name = "input", .ndims = LK_NDIM_BIT(2)};
    cr_expect_eq(lk_slot_ndims_of(&s, 1), 0u, "minor 1");
    cr_expect_eq(lk_slot_ndims_of(&s, 2), 0u, "minor 2");
    cr_expect_eq(lk_slot_ndims_of(&s, 3), LK_NDIM_BIT(2), "minor 3");
    cr_expect_eq(lk_slot_ndims_of(&s, 4), LK_NDIM_BIT(2), "a newer minor");
}

Test(registry, unset_of_a_parameter_follows_the_plugins_minor)
{
    /* lk_param_unset_of reads the member only from a plugin of 1.2 or
     * later: the same bytes give NULL for an older minor. */
    const lk_param_desc p = {.name = "ignore_index",
                             .doc = "d",
                             .type = LK_PARAM_INTEGER,
                             .unset = "no element is ignored"};
    cr_expect_null(lk_param_unset_of(&p, 0), "minor 0");
    cr_expect_null(lk_param_unset_of(&p, 1), "minor 1");
    cr_expect_str_eq(lk_param_unset_of(&p, 2), "no element is ignored", "minor 2");
    cr_expect_str_eq(lk_param_unset_of(&p, 3), "no element is ignored", "a newer minor");
}

Test(registry, fixture_directory)
{
    /* The whole folder at once: every broken fixture gives its one line, in
     * name order, and the good ones are served. Name order also decides that
     * fx_good.so's fx_sq serves and fx_shadow.so's is shadowed. */
    static const char *const broken[] = {
        "fx_bad_batch_dim", "fx_bad_batch_rank", "fx_bad_batch_views", "fx_bad_default",
        "fx_bad_ndims",     "fx_bad_reduction",  "fx_bad_unset",       "fx_duplicate_id",
        "fx_missing_entry", "fx_no_slots",       "fx_null_entry",      "fx_null_required",
        "fx_wrong_major",
    };
    const size_t n_broken = sizeof broken / sizeof broken[0];
    lk_runtime *rt = open_path(LK_FIXTURE_DIR);
    cr_expect_eq(lk_runtime_diag_count(rt), n_broken, "diagnostics:\n%s", all_diags(rt));
    for (size_t i = 0; i < n_broken && i < lk_runtime_diag_count(rt); i++) {
        char file[1024];
        snprintf(file, sizeof file, "%s/%s.so", LK_FIXTURE_DIR, broken[i]);
        const char *d = lk_runtime_diag(rt, i);
        cr_expect(strncmp(d, file, strlen(file)) == 0 && d[strlen(file)] == ':',
                  "diagnostic %zu should be about %s: %s", i, file, d);
    }
    expect_good_served(rt, FX("fx_good"));
    expect_served(rt, "fx_newer", FX("fx_newer_minor"));
    expect_served(rt, "fx_crash", FX("fx_crash_kernel"));
    expect_served(rt, "fx_older", FX("fx_older_minor"));
    /* fx_sq, fx_count, fx_crash, fx_newer, fx_older, and fx_shadow's fx_sq. */
    cr_expect_eq(lk_runtime_loss_count(rt), 6, "losses listed");

    const double x[2] = {1.0, 2.0};
    expect_near(eval_json(rt, "{\"loss\": \"fx_sq\"}", x, NULL, 2, NULL), 5.0,
                "fx_good's fx_sq, not fx_shadow's");
    lk_runtime_close(rt);
}

/* ------------------------------------------------------------------------ */
/* Search path                                                               */

/* The listing entry with id from file, asserting it exists. */
static lk_loss_info listed(const lk_runtime *rt, const char *id, const char *file)
{
    lk_loss_info info;
    memset(&info, 0, sizeof info);
    for (size_t i = 0; i < lk_runtime_loss_count(rt); i++) {
        cr_assert_eq(lk_runtime_loss_at(rt, i, &info), LK_OK, "loss_at(%zu)", i);
        if (strcmp(info.id, id) == 0 && strcmp(info.plugin_file, file) == 0)
            return info;
    }
    cr_assert_fail("%s from %s is not listed", id, file);
    return info;
}

static lk_runtime *open_pair(const char *first, const char *second)
{
    char path[2100];
    snprintf(path, sizeof path, "%s:%s", first, second);
    return open_path(path);
}

/* rt was opened on a path where first_file comes before second_file, both
 * with an fx_sq; expected is the value of the one from first_file. */
static void check_shadowing(lk_runtime *rt, const char *first_file, const char *second_file,
                            double expected)
{
    expect_served(rt, "fx_sq", first_file);

    lk_loss_info win = listed(rt, "fx_sq", first_file);
    cr_expect_eq(win.shadowed, 0, "the first fx_sq is not shadowed");
    cr_expect_null(win.shadowed_by, "the first fx_sq has no shadowed_by");
    lk_loss_info lose = listed(rt, "fx_sq", second_file);
    cr_expect_eq(lose.shadowed, 1, "the second fx_sq is shadowed");
    cr_assert_not_null(lose.shadowed_by, "shadowed_by is NULL");
    cr_expect_str_eq(lose.shadowed_by, first_file, "shadowed_by names the winner");
    /* Search-path order is listing order. */
    lk_loss_info first_listed;
    cr_assert_eq(lk_runtime_loss_at(rt, 0, &first_listed), LK_OK, "loss_at(0)");
    cr_expect_str_eq(first_listed.plugin_file, first_file, "the earlier file is listed first");

    /* The value proves which kernel runs: fx_good gives 1 + 4 for x = 1, 2,
     * fx_shadow ten times that. */
    const double x[2] = {1.0, 2.0};
    expect_near(eval_json(rt, "{\"loss\": \"fx_sq\"}", x, NULL, 2, NULL), expected,
                "the served fx_sq");
    lk_runtime_close(rt);
}

Test(registry, earlier_directory_shadows_later)
{
    char a[64], b[64], shadow[256], good[256];
    make_temp_dir(a, sizeof a);
    make_temp_dir(b, sizeof b);
    copy_fixture("fx_shadow", a, shadow, sizeof shadow);
    copy_fixture("fx_good", b, good, sizeof good);
    lk_runtime *ab = open_pair(a, b);
    lk_runtime *ba = open_pair(b, a);
    /* A plugin is loaded when one of its losses is built, not when the
     * runtime opens: the folders must outlive the checks. */
    check_shadowing(ab, shadow, good, 50.0);
    check_shadowing(ba, good, shadow, 5.0);
    rm_tree(a);
    rm_tree(b);
}

Test(registry, earlier_file_shadows_later)
{
    check_shadowing(open_pair(FX("fx_shadow"), FX("fx_good")), FX("fx_shadow"), FX("fx_good"),
                    50.0);
    check_shadowing(open_pair(FX("fx_good"), FX("fx_shadow")), FX("fx_good"), FX("fx_shadow"), 5.0);
}

/* A file reached twice on the path — its folder listed twice, the folder
 * and the file itself, or a symbolic link to it — is one plugin, taken at
 * its first place: listed once, not shadowing itself, no diagnostic. */
Test(registry, the_same_file_twice_is_one_plugin)
{
    char a[64], good[256], link[300], path[1400];
    make_temp_dir(a, sizeof a);
    copy_fixture("fx_good", a, good, sizeof good);
    snprintf(link, sizeof link, "%s/zz_again.so", a); /* listed after the file */
    cr_assert_eq(symlink(good, link), 0, "symlink: %s", strerror(errno));
    const char *forms[3] = {"%s:%s", "%s:%s/fx_good.so", "%s:%s/zz_again.so"};
    for (int f = 0; f < 3; f++) {
        snprintf(path, sizeof path, forms[f], a, a);
        lk_runtime *rt = open_path(path);
        expect_no_diag(rt);
        size_t n = lk_runtime_loss_count(rt), sq = 0;
        for (size_t i = 0; i < n; i++) {
            lk_loss_info info;
            cr_assert_eq(lk_runtime_loss_at(rt, i, &info), LK_OK, "loss_at(%zu)", i);
            cr_expect_eq(info.shadowed, 0, "%s: %s from %s is shadowed by %s", path, info.id,
                         info.plugin_file, info.shadowed_by ? info.shadowed_by : "?");
            sq += strcmp(info.id, "fx_sq") == 0;
        }
        cr_expect_eq(sq, 1, "%s: fx_sq listed %zu times", path, sq);
        expect_served(rt, "fx_sq", good);
        lk_runtime_close(rt);
    }
    rm_tree(a);
}

Test(registry, plugin_path_comes_before_env_path)
{
    /* losskit.h: plugin_path is searched first, $LOSSKIT_PLUGIN_PATH after.
     * Criterion runs each test in its own process, so setenv stays here. */
    cr_assert_eq(setenv("LOSSKIT_PLUGIN_PATH", FX("fx_good"), 1), 0, "setenv");
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = FX("fx_shadow");
    opts.use_default_path = 0;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "%s", err);
    expect_served(rt, "fx_sq", FX("fx_shadow"));
    expect_served(rt, "fx_count", FX("fx_good"));
    lk_runtime_close(rt);

    /* use_env_path = 0 really ignores the variable. */
    opts.plugin_path = NULL;
    opts.use_env_path = 0;
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "%s", err);
    cr_expect_eq(lk_runtime_loss_count(rt), 0, "the env path was searched");
    expect_no_diag(rt);
    lk_runtime_close(rt);
}

Test(registry, default_path_finds_the_built_families)
{
    /* From the build tree, the default path is the build's plugin folders;
     * fixtures on plugin_path come first. */
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = FX("fx_good");
    opts.use_env_path = 0;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "%s", err);
    expect_no_diag(rt);
    lk_loss_info info;
    cr_assert_eq(lk_runtime_loss_at(rt, 0, &info), LK_OK, "loss_at(0)");
    cr_expect_str_eq(info.plugin_file, FX("fx_good"), "plugin_path is searched first");
    int tutorial = 0;
    for (size_t i = 0; i < lk_runtime_loss_count(rt); i++) {
        cr_assert_eq(lk_runtime_loss_at(rt, i, &info), LK_OK, "loss_at(%zu)", i);
        tutorial |= strcmp(info.plugin_file, LK_BUILD_ROOT "/plugins/tutorial.so") == 0;
    }
    cr_expect(tutorial, "no loss from the build's tutorial.so is listed");
    lk_runtime_close(rt);
}

Test(registry, unknown_id_suggests_the_closest)
{
    lk_runtime *rt = open_path(FX("fx_good"));
    lk_loss_info info;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_find(rt, "fx_sqq", &info, err), LK_ERR_NOT_FOUND, "fx_sqq found");
    cr_expect_not_null(strstr(err, "fx_sqq"), "the message names the id asked: %s", err);
    /* losskit.h: the message lists the known ids and names the closest one,
     * so "fx_sq" (not as the prefix of the echoed "fx_sqq") appears twice:
     * once as the suggestion, once in the list. */
    int mentions = 0;
    for (const char *p = err; (p = strstr(p, "fx_sq")) != NULL; p++)
        mentions += p[5] != 'q';
    cr_expect_geq(mentions, 2, "the message does not suggest fx_sq: %s", err);
    cr_expect_not_null(strstr(err, "fx_count"), "the message lists the known ids: %s", err);

    /* errmsg may be NULL. */
    cr_expect_eq(lk_runtime_find(rt, "nothing_like_it", &info, NULL), LK_ERR_NOT_FOUND,
                 "unknown id with errmsg NULL");
    lk_runtime_close(rt);
}

Test(registry, world_writable_directory_is_refused)
{
    char dir[64], copy[256];
    make_temp_dir(dir, sizeof dir);
    copy_fixture("fx_good", dir, copy, sizeof copy);
    cr_assert_eq(chmod(dir, 0777), 0, "chmod");
    lk_runtime *open_dir = open_path(dir);
    /* The same folder, made private again, is served: the mode was the only
     * reason. */
    cr_assert_eq(chmod(dir, 0700), 0, "chmod");
    lk_runtime *private_dir = open_path(dir);
    /* Everything is loaded: remove the folder before anything can fail, so
     * that nothing is left behind in /tmp. */
    rm_tree(dir);

    expect_mentions(diag_about(open_dir, dir), "writable");
    cr_expect_eq(lk_runtime_diag_count(open_dir), 1, "diagnostics:\n%s", all_diags(open_dir));
    cr_expect_eq(lk_runtime_loss_count(open_dir), 0, "a loss from the refused folder is listed");
    lk_runtime_close(open_dir);

    expect_no_diag(private_dir);
    expect_good_served(private_dir, copy);
    lk_runtime_close(private_dir);
}

/* umask 002 (user private groups): a folder writable by the owner's own
 * private group is the owner's alone and is served; writable by a group
 * other users are in, it is refused. */
static int is_private_group(gid_t gid)
{
    struct passwd *pw = getpwuid(geteuid());
    struct group *gr = getgrgid(gid);
    if (!pw || !gr || pw->pw_gid != gid || strcmp(gr->gr_name, pw->pw_name) != 0 ||
        (gr->gr_mem && gr->gr_mem[0]))
        return 0;
    int others = 0;
    setpwent();
    while ((pw = getpwent()) != NULL)
        others |= pw->pw_gid == gid && pw->pw_uid != geteuid();
    endpwent();
    return !others;
}

Test(registry, group_writable_folder_of_a_private_group)
{
    char dir[64], copy[256];
    make_temp_dir(dir, sizeof dir);
    copy_fixture("fx_good", dir, copy, sizeof copy);
    cr_assert_eq(chmod(dir, 0775), 0, "chmod");
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    int private_group = is_private_group(st.st_gid);
    lk_runtime *own = open_path(dir);
    /* a group another account has as its primary one (daemon's, gid 1)
     * when we may give the folder to it */
    int shared = geteuid() == 0 && chown(dir, (uid_t)-1, 1) == 0;
    lk_runtime *other = shared ? open_path(dir) : NULL;
    rm_tree(dir);
    if (private_group) {
        expect_no_diag(own);
        expect_good_served(own, copy);
    } else {
        expect_mentions(diag_about(own, dir), "writable");
    }
    lk_runtime_close(own);
    if (other) {
        expect_mentions(diag_about(other, dir), "writable");
        cr_expect_eq(lk_runtime_loss_count(other), 0, "a loss from the refused folder is listed");
        lk_runtime_close(other);
    }
    cr_expect(private_group || !shared, "neither case could be set up: the test checked nothing");
}

Test(registry, world_writable_file_is_refused)
{
    char dir[64], copy[256];
    make_temp_dir(dir, sizeof dir);
    copy_fixture("fx_good", dir, copy, sizeof copy);
    cr_assert_eq(chmod(copy, 0757), 0, "chmod");
    lk_runtime *in_dir = open_path(dir);   /* found in a folder */
    lk_runtime *on_path = open_path(copy); /* named on the path */
    rm_tree(dir);

    expect_mentions(diag_about(in_dir, copy), "writable");
    cr_expect_eq(lk_runtime_diag_count(in_dir), 1, "diagnostics:\n%s", all_diags(in_dir));
    cr_expect_eq(lk_runtime_loss_count(in_dir), 0, "a loss from the refused file is listed");
    lk_runtime_close(in_dir);

    expect_mentions(diag_about(on_path, copy), "writable");
    cr_expect_eq(lk_runtime_loss_count(on_path), 0, "a loss from the refused file is listed");
    lk_runtime_close(on_path);
}

Test(registry, missing_directory_is_a_diagnostic)
{
    /* A folder that does not exist (a typo in the path, an uninstalled
     * package) is reported and skipped; the rest of the path is served. */
    const char *missing = "/nonexistent/losskit-plugins";
    char path[1024];
    snprintf(path, sizeof path, "%s:%s", missing, FX("fx_good"));
    lk_runtime *rt = open_path(path);
    cr_expect_eq(lk_runtime_diag_count(rt), 1, "diagnostics:\n%s", all_diags(rt));
    expect_mentions(diag_about(rt, missing), strerror(ENOENT));
    expect_good_served(rt, FX("fx_good"));
    lk_runtime_close(rt);
}

Test(registry, empty_path_elements_are_ignored)
{
    /* "::" or a leading or trailing colon must not become "" or "." (the
     * current folder): nothing is loaded for them and nothing is said. Run
     * from the fixture folder, so that loading "." would show. */
    cr_assert_eq(chdir(LK_FIXTURE_DIR), 0, "chdir: %s", strerror(errno));
    lk_runtime *rt = open_path("::" FX("fx_good") ":::");
    expect_no_diag(rt);
    cr_expect_eq(lk_runtime_loss_count(rt), 2, "losses listed");
    expect_good_served(rt, FX("fx_good"));
    lk_runtime_close(rt);

    rt = open_path("");
    expect_no_diag(rt);
    cr_expect_eq(lk_runtime_loss_count(rt), 0, "an empty path loads nothing");
    lk_runtime_close(rt);

    rt = open_path(NULL);
    expect_no_diag(rt);
    cr_expect_eq(lk_runtime_loss_count(rt), 0, "a NULL path loads nothing");
    lk_runtime_close(rt);
}

Test(registry, diagnostics_follow_path_order)
{
    lk_runtime *rt = open_path(FX("fx_wrong_major") ":" FX("fx_missing_entry"));
    cr_assert_eq(lk_runtime_diag_count(rt), 2, "diagnostics:\n%s", all_diags(rt));
    cr_expect_not_null(strstr(lk_runtime_diag(rt, 0), "fx_wrong_major.so"), "first: %s",
                       lk_runtime_diag(rt, 0));
    cr_expect_not_null(strstr(lk_runtime_diag(rt, 1), "fx_missing_entry.so"), "second: %s",
                       lk_runtime_diag(rt, 1));
    cr_expect_eq(lk_runtime_loss_count(rt), 0, "no loss from broken plugins");
    lk_runtime_close(rt);
}
