/* cmd_run.c: `losskit run`: a config and .npy tensors in, the loss out. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "internal.h" /* lk__fmt_double, compiled into the command too */

#define MAX_BINDINGS 32

typedef struct binding {
    const char *name;
    const char *file;
} binding;

typedef struct run_opts {
    const char *config;
    binding tensors[MAX_BINDINGS];
    int n_tensors;
    binding grads[MAX_BINDINGS];
    int n_grads;
    const char *out;
    int32_t threads;
    int json;
} run_opts;

static int add_binding(binding *list, int *n, const char *name, const char *file, const char *opt)
{
    if (!name[0] || !file || !file[0]) {
        cli_error("run: %s needs NAME=FILE.npy", opt);
        return -1;
    }
    for (int i = 0; i < *n; i++)
        if (strcmp(list[i].name, name) == 0) {
            cli_error("run: tensor '%s' is given twice (%s and %s)", name, list[i].file, file);
            return -1;
        }
    if (*n == MAX_BINDINGS) {
        cli_error("run: more than %d tensors", MAX_BINDINGS);
        return -1;
    }
    list[*n].name = name;
    list[(*n)++].file = file;
    return 0;
}

/* NAME=FILE: splits in place. */
static int add_pair(binding *list, int *n, char *arg, const char *opt)
{
    char *eq = arg ? strchr(arg, '=') : NULL;
    if (!eq) {
        cli_error("run: %s needs NAME=FILE.npy, got '%s'", opt, arg ? arg : "");
        return -1;
    }
    *eq = '\0';
    return add_binding(list, n, arg, eq + 1, opt);
}

static int parse_run(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = 0, takes = 1;
        if (strcmp(a, "--input") == 0 || strcmp(a, "--target") == 0 || strcmp(a, "--weight") == 0)
            r = add_binding(o->tensors, &o->n_tensors, a + 2, v, a);
        else if (strcmp(a, "--tensor") == 0)
            r = add_pair(o->tensors, &o->n_tensors, v, a);
        else if (strcmp(a, "--grad") == 0)
            r = add_binding(o->grads, &o->n_grads, "input", v, a);
        else if (strcmp(a, "--grad-tensor") == 0)
            r = add_pair(o->grads, &o->n_grads, v, a);
        else if (strcmp(a, "--out") == 0)
            o->out = v;
        else if (strcmp(a, "--threads") == 0)
            r = (o->threads = cli_parse_threads(v)) < 0 ? -1 : 0;
        else if (strcmp(a, "--json") == 0)
            o->json = 1, takes = 0;
        else if (a[0] == '-' && a[1]) {
            cli_unknown_option("run", a);
            return -1;
        } else if (!o->config)
            o->config = a, takes = 0;
        else {
            cli_error("run: unexpected argument '%s'", a);
            return -1;
        }
        if (r != 0)
            return -1;
        if (takes && !v) {
            cli_error("run: %s needs a value", a);
            return -1;
        }
        i += takes;
    }
    if (!o->config) {
        cli_error("run: usage: losskit run CONFIG --input X.npy [--target T.npy] ...");
        return -1;
    }
    return 0;
}

typedef struct run_state {
    lk_array tensors[MAX_BINDINGS];
    lk_named_tensor named[MAX_BINDINGS];
    lk_array grads[MAX_BINDINGS];
    lk_named_tensor named_grads[MAX_BINDINGS];
    lk_array out;
} run_state;

static void free_state(run_state *s)
{
    for (int i = 0; i < MAX_BINDINGS; i++) {
        lk_array_free(&s->tensors[i]);
        lk_array_free(&s->grads[i]);
    }
    lk_array_free(&s->out);
}

static int read_tensors(const run_opts *o, run_state *s)
{
    char err[LK_ERRMSG_CAP];
    for (int i = 0; i < o->n_tensors; i++) {
        if (lk_npy_read(o->tensors[i].file, &s->tensors[i], err) != LK_OK) {
            cli_error("run: %s", err);
            return EXIT_DATA;
        }
        s->named[i].name = o->tensors[i].name;
        s->named[i].tensor = lk_array_view(&s->tensors[i]);
        s->named[i].origin = o->tensors[i].file;
    }
    return EXIT_OK;
}

/* Allocates each requested gradient like the tensor it belongs to. */
static int alloc_grads(const run_opts *o, run_state *s)
{
    char err[LK_ERRMSG_CAP];
    for (int g = 0; g < o->n_grads; g++) {
        int t = 0;
        while (t < o->n_tensors && strcmp(o->tensors[t].name, o->grads[g].name) != 0)
            t++;
        if (t == o->n_tensors) {
            cli_error("run: a gradient of '%s' is asked for (%s) but no tensor '%s' is given",
                      o->grads[g].name, o->grads[g].file, o->grads[g].name);
            return EXIT_USAGE;
        }
        const lk_array *src = &s->tensors[t];
        if (lk_array_alloc(&s->grads[g], src->dtype, src->ndim, src->shape, err) != LK_OK) {
            cli_error("run: %s", err);
            return EXIT_DATA;
        }
        s->named_grads[g].name = o->grads[g].name;
        s->named_grads[g].tensor = lk_array_view(&s->grads[g]);
        s->named_grads[g].origin = o->grads[g].file;
    }
    return EXIT_OK;
}

/* A tensor missing, or given for a slot the loss does not have, is a usage
 * problem; everything else the evaluation refuses is about the data. */
static int data_exit(lk_status st)
{
    if (st == LK_ERR_NOT_FOUND)
        return EXIT_USAGE;
    return st == LK_ERR_INTERNAL || st == LK_ERR_NOMEM ? EXIT_FAILURE_INTERNAL : EXIT_DATA;
}

static int write_outputs(const run_opts *o, run_state *s)
{
    char err[LK_ERRMSG_CAP];
    for (int g = 0; g < o->n_grads; g++) {
        lk_tensor t = lk_array_view(&s->grads[g]);
        if (lk_npy_write(o->grads[g].file, &t, err) != LK_OK) {
            cli_error("run: %s", err);
            return EXIT_DATA;
        }
    }
    if (o->out) {
        lk_tensor t = lk_array_view(&s->out);
        if (lk_npy_write(o->out, &t, err) != LK_OK) {
            cli_error("run: %s", err);
            return EXIT_DATA;
        }
    }
    return EXIT_OK;
}

/* "focal (tutorial 1.0.0)" or "0.5*bce_with_logits + 0.5*dice (tutorial
 * 1.0.0)": the loss and the plugins that served it. */
static void served_by(const lk_loss *loss, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "%s (", lk_loss_name(loss));
    for (size_t i = 0; i < lk_loss_term_count(loss) && used < cap; i++) {
        lk_loss_info info;
        lk_loss_term_at(loss, i, &info, NULL);
        int seen = 0;
        for (size_t j = 0; j < i; j++) {
            lk_loss_info prev;
            lk_loss_term_at(loss, j, &prev, NULL);
            seen |= strcmp(prev.plugin_file, info.plugin_file) == 0;
        }
        if (!seen)
            used += (size_t)snprintf(buf + used, cap - used, "%s%s %s", i ? ", " : "",
                                     info.plugin_name, info.plugin_version);
    }
    if (used < cap)
        snprintf(buf + used, cap - used, ")");
}

static void print_result(const run_opts *o, const lk_loss *loss, const run_state *s, double value,
                         int32_t threads)
{
    int32_t red = lk_loss_reduction(loss);
    const lk_array *in = &s->tensors[0];
    for (int i = 0; i < o->n_tensors; i++)
        if (strcmp(o->tensors[i].name, "input") == 0)
            in = &s->tensors[i];
    long long count = (long long)(in->nbytes / lk_dtype_size(in->dtype));
    if (!o->json) {
        char who[512];
        served_by(loss, who, sizeof who);
        if (red == LK_REDUCTION_NONE)
            printf("%s, reduction none over %lld %s elements: %lld values%s%s\n", who, count,
                   lk_dtype_name(in->dtype),
                   (long long)(s->out.nbytes /
                               (lk_dtype_size(s->out.dtype) ? lk_dtype_size(s->out.dtype) : 1)),
                   o->out ? " written to " : "; save them with --out FILE.npy",
                   o->out ? o->out : "");
        else {
            char v[32];
            lk__fmt_double(v, sizeof v, value);
            printf("%s, %s over %lld %s elements: %s\n", who, lk_reduction_name(red), count,
                   lk_dtype_name(in->dtype), v);
        }
        return;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "loss", lk_loss_name(loss));
    cJSON_AddStringToObject(root, "config", o->config);
    if (red == LK_REDUCTION_NONE || !isfinite(value))
        cJSON_AddNullToObject(root, "value");
    else
        cJSON_AddNumberToObject(root, "value", value);
    if (red != LK_REDUCTION_NONE && !isfinite(value))
        cJSON_AddStringToObject(root, "value_text",
                                isnan(value) ? "nan"
                                : value > 0  ? "inf"
                                             : "-inf");
    cJSON_AddStringToObject(root, "reduction", lk_reduction_name(red));
    cJSON *shape = cJSON_AddArrayToObject(root, "shape");
    for (int32_t d = 0; d < in->ndim; d++)
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)in->shape[d]));
    cJSON_AddStringToObject(root, "dtype", lk_dtype_name(in->dtype));
    cJSON_AddNumberToObject(root, "elements", (double)count);
    cJSON_AddNumberToObject(root, "threads", threads);
    cJSON *terms = cJSON_AddArrayToObject(root, "terms");
    for (size_t i = 0; i < lk_loss_term_count(loss); i++) {
        lk_loss_info info;
        double weight;
        lk_loss_term_at(loss, i, &info, &weight);
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "loss", info.id);
        cJSON_AddStringToObject(t, "version", info.desc->version);
        cJSON_AddNumberToObject(t, "weight", weight);
        cJSON_AddStringToObject(t, "plugin", info.plugin_name);
        cJSON_AddStringToObject(t, "plugin_version", info.plugin_version);
        cJSON_AddStringToObject(t, "plugin_file", info.plugin_file);
        /* which call tensor each slot of the term read */
        cJSON *ts = cJSON_AddObjectToObject(t, "tensors");
        for (size_t k = 0; info.desc->slots[k]; k++)
            cJSON_AddStringToObject(ts, info.desc->slots[k]->name, lk_loss_term_tensor(loss, i, k));
        cJSON_AddItemToArray(terms, t);
    }
    cJSON *grads = cJSON_AddObjectToObject(root, "grads");
    for (int g = 0; g < o->n_grads; g++)
        cJSON_AddStringToObject(grads, o->grads[g].name, o->grads[g].file);
    if (o->out)
        cJSON_AddStringToObject(root, "out", o->out);
    char *text = cJSON_PrintUnformatted(root);
    puts(text);
    cJSON_free(text);
    cJSON_Delete(root);
}

/* Reduction none: allocates the per-position output the loss will fill. */
static int alloc_out(const run_opts *o, lk_loss *loss, lk_eval_args *args, run_state *s)
{
    int32_t nd;
    int64_t shape[LK_MAX_NDIM];
    char err[LK_ERRMSG_CAP];
    lk_status st = lk_loss_out_shape(loss, args, &nd, shape);
    if (st != LK_OK) {
        cli_error("run: %s: %s", o->config, args->errmsg);
        return data_exit(st);
    }
    const lk_tensor *in = &s->named[0].tensor;
    for (size_t i = 0; i < args->n_tensors; i++)
        if (strcmp(s->named[i].name, "input") == 0)
            in = &s->named[i].tensor;
    if (lk_array_alloc(&s->out, in->dtype, nd, shape, err) != LK_OK) {
        cli_error("run: %s", err);
        return EXIT_DATA;
    }
    return EXIT_OK;
}

static int evaluate(const run_opts *o, lk_runtime *rt, lk_loss *loss, run_state *s)
{
    int rc = read_tensors(o, s);
    if (rc == EXIT_OK)
        rc = alloc_grads(o, s);
    if (rc != EXIT_OK)
        return rc;
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = s->named;
    args.n_tensors = (size_t)o->n_tensors;
    args.grads = s->named_grads;
    args.n_grads = (size_t)o->n_grads;
    lk_tensor out;
    if (lk_loss_reduction(loss) == LK_REDUCTION_NONE) {
        if ((rc = alloc_out(o, loss, &args, s)) != EXIT_OK)
            return rc;
        out = lk_array_view(&s->out);
        args.out = &out;
    }
    double value;
    lk_status st = lk_loss_eval(loss, &args, &value);
    if (st != LK_OK) {
        /* the config first: a shape refusal may be about a parameter set there */
        cli_error("run: %s: %s", o->config, args.errmsg);
        return data_exit(st);
    }
    rc = write_outputs(o, s);
    if (rc == EXIT_OK)
        print_result(o, loss, s, value, lk_runtime_threads(rt));
    return rc;
}

int cmd_run(int argc, char **argv)
{
    run_opts o;
    if (parse_run(argc, argv, &o) != 0)
        return EXIT_USAGE;
    lk_runtime *rt = cli_open_runtime(o.threads);
    if (!rt)
        return cli_open_failed();
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP];
    lk_status st = lk_loss_from_file(rt, o.config, &loss, err);
    if (st != LK_OK) {
        cli_error("run: %s", err);
        /* An unknown loss may live in a plugin that failed to load; a known
         * one's plugin is loaded only now, and may fail to. */
        int rc = EXIT_USAGE;
        if (st == LK_ERR_LOAD || (strstr(err, "unknown loss") && lk_runtime_diag_count(rt)))
            rc = EXIT_PLUGIN;
        lk_runtime_close(rt);
        return rc;
    }
    int rc = EXIT_OK;
    if (o.out && lk_loss_reduction(loss) != LK_REDUCTION_NONE) {
        cli_error("run: --out writes per-position losses, which needs \"reduction\": \"none\" "
                  "in %s (it has '%s')",
                  o.config, lk_reduction_name(lk_loss_reduction(loss)));
        rc = EXIT_USAGE;
    }
    run_state *s = calloc(1, sizeof *s);
    if (rc == EXIT_OK && !s)
        rc = EXIT_FAILURE_INTERNAL;
    if (rc == EXIT_OK)
        rc = evaluate(&o, rt, loss, s);
    if (s)
        free_state(s);
    free(s);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return rc;
}
