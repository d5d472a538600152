/* cmd_run.c: `losskit run`: a config and .npy tensors in, the loss out. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "internal.h" /* lk__fmt_double, compiled into the command too */

#define MAX_BINDINGS 32

typedef struct binding {
    const char *name;
    const char *file;
    const char *opt; /* the option that gave it: "--input", "--tensor", ... */
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

/* The options that take NAME=FILE rather than a file. */
static int is_pair_option(const char *opt)
{
    return strcmp(opt, "--tensor") == 0 || strcmp(opt, "--grad-tensor") == 0;
}

/* "--input x.npy", "--tensor logits=x.npy": how a message names a binding. */
static void binding_text(const binding *b, char *buf, size_t cap)
{
    if (is_pair_option(b->opt))
        snprintf(buf, cap, "%s %s=%s", b->opt, b->name, b->file);
    else
        snprintf(buf, cap, "%s %s", b->opt, b->file);
}

static int add_binding(binding *list, int *n, const char *name, const char *file, const char *opt,
                       int grads)
{
    int pair = is_pair_option(opt);
    if (pair && (!name[0] || !file[0])) {
        cli_error("run: %s needs NAME=FILE.npy, got '%s=%s'", opt, name, file);
        return -1;
    }
    if (!file[0]) {
        cli_error("run: %s needs a file, got ''", opt);
        return -1;
    }
    binding b = {name, file, opt};
    for (int i = 0; i < *n; i++) {
        if (strcmp(list[i].name, name) != 0)
            continue;
        char first[PATH_MAX + 128], second[PATH_MAX + 128];
        binding_text(&list[i], first, sizeof first);
        binding_text(&b, second, sizeof second);
        if (strcmp(list[i].opt, opt) == 0 && !pair)
            cli_error("run: %s given twice (%s and %s)", opt, list[i].file, file);
        else if (grads)
            cli_error("run: the gradient of tensor '%s' is asked for twice (%s and %s)", name,
                      first, second);
        else
            cli_error("run: tensor '%s' is given twice (%s and %s)", name, first, second);
        return -1;
    }
    if (*n == MAX_BINDINGS) {
        cli_error("run: more than %d %s", MAX_BINDINGS, grads ? "gradients" : "tensors");
        return -1;
    }
    list[(*n)++] = b;
    return 0;
}

/* NAME=FILE: splits in place. */
static int add_pair(binding *list, int *n, char *arg, const char *opt, int grads)
{
    char *eq = strchr(arg, '=');
    if (!eq) {
        cli_error("run: %s needs NAME=FILE.npy, got '%s'", opt, arg);
        return -1;
    }
    *eq = '\0';
    return add_binding(list, n, arg, eq + 1, opt, grads);
}

static const char *const run_options[] = {"--input",  "--target",  "--weight",
                                          "--tensor", "--grad",    "--grad-tensor",
                                          "--out",    "--threads", "--json"};

/* The value of option a, or NULL after saying that it is missing: the end
 * of the command line, or another option of run's ("--input --target t.npy"
 * would otherwise read a file named --target). */
static char *option_value(const char *a, char *v)
{
    int is_option = 0;
    for (size_t k = 0; v && k < sizeof run_options / sizeof run_options[0]; k++)
        is_option |= strcmp(v, run_options[k]) == 0;
    if (v && !is_option)
        return v;
    const char *what = is_pair_option(a)             ? "a value, NAME=FILE.npy"
                       : strcmp(a, "--threads") == 0 ? "a value, a thread count in [1, 1024]"
                                                     : "a file";
    if (v)
        cli_error("run: %s needs %s; '%s' is an option", a, what, v);
    else
        cli_error("run: %s needs %s", a, what);
    return NULL;
}

static int parse_run(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    const char *threads_text = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }
        int known = 0;
        for (size_t k = 0; k < sizeof run_options / sizeof run_options[0]; k++)
            known |= strcmp(a, run_options[k]) == 0;
        if (!known && a[0] == '-' && a[1]) {
            cli_unknown_option("run", a);
            return -1;
        }
        if (!known) {
            if (o->config) {
                cli_error("run: unexpected argument '%s'", a);
                return -1;
            }
            o->config = a;
            continue;
        }
        char *v = option_value(a, i + 1 < argc ? argv[i + 1] : NULL);
        if (!v)
            return -1;
        i++;
        int r = 0;
        if (strcmp(a, "--input") == 0 || strcmp(a, "--target") == 0 || strcmp(a, "--weight") == 0)
            r = add_binding(o->tensors, &o->n_tensors, a + 2, v, a, 0);
        else if (strcmp(a, "--tensor") == 0)
            r = add_pair(o->tensors, &o->n_tensors, v, a, 0);
        else if (strcmp(a, "--grad") == 0)
            r = add_binding(o->grads, &o->n_grads, "input", v, a, 1);
        else if (strcmp(a, "--grad-tensor") == 0)
            r = add_pair(o->grads, &o->n_grads, v, a, 1);
        else if (strcmp(a, "--out") == 0) {
            if (o->out) {
                cli_error("run: --out given twice (%s and %s)", o->out, v);
                return -1;
            }
            o->out = v;
        } else if (strcmp(a, "--threads") == 0) {
            if (threads_text) {
                cli_error("run: --threads given twice (%s and %s)", threads_text, v);
                return -1;
            }
            threads_text = v;
            r = (o->threads = cli_parse_threads(v)) < 0 ? -1 : 0;
        }
        if (r != 0)
            return -1;
    }
    if (!o->config) {
        cli_error("run: usage: losskit run CONFIG --input X.npy [--target T.npy] ...");
        return -1;
    }
    return 0;
}

/* What a path names, to tell whether two options name one file: the device
 * and inode of a file that exists; else the real path of its folder and its
 * last component, or (no such folder) the path with "." components and
 * repeated slashes left out. */
typedef struct file_id {
    int exists;
    dev_t dev;
    ino_t ino;
    char *path; /* malloc'd; NULL when exists */
} file_id;

static char *lexical_path(const char *path)
{
    size_t len = strlen(path);
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && path[j] != '/')
            j++;
        size_t n = j - i;
        if (n == 0 && i == 0)
            out[o++] = '/';
        else if (n > 0 && !(n == 1 && path[i] == '.')) {
            if (o && out[o - 1] != '/')
                out[o++] = '/';
            memcpy(out + o, path + i, n);
            o += n;
        }
        i = j + 1;
    }
    out[o] = '\0';
    return out;
}

static int file_id_of(const char *path, file_id *id)
{
    memset(id, 0, sizeof *id);
    struct stat st;
    if (stat(path, &st) == 0) {
        id->exists = 1;
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        return 0;
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char *dir = slash ? malloc((size_t)(slash - path) + 2) : NULL;
    if (slash && !dir)
        return -1;
    if (dir) {
        size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x": the folder is "/" */
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    char *real = realpath(dir ? dir : ".", NULL);
    free(dir);
    if (real && base[0] && strcmp(base, ".") != 0 && strcmp(base, "..") != 0) {
        size_t n = strlen(real) + strlen(base) + 2;
        id->path = malloc(n);
        if (id->path)
            snprintf(id->path, n, "%s/%s", real, base);
        free(real);
        return id->path ? 0 : -1;
    }
    free(real);
    id->path = lexical_path(path);
    return id->path ? 0 : -1;
}

static int same_file(const file_id *a, const file_id *b)
{
    if (a->exists || b->exists)
        return a->exists && b->exists && a->dev == b->dev && a->ino == b->ino;
    return strcmp(a->path, b->path) == 0;
}

/* Each file run writes (a gradient, --out) must be a file of its own: not
 * another output's, not one it reads (a tensor, the config). Refused
 * before anything is read or computed. */
static int check_outputs(const run_opts *o)
{
    enum { CAP = 2 * MAX_BINDINGS + 2 };
    binding files[CAP];
    file_id ids[CAP];
    int n_out = 0, n = 0;
    for (int g = 0; g < o->n_grads; g++)
        files[n++] = o->grads[g];
    if (o->out)
        files[n++] = (binding){"out", o->out, "--out"};
    n_out = n;
    for (int t = 0; t < o->n_tensors; t++)
        files[n++] = o->tensors[t];
    files[n++] = (binding){"config", o->config, "the config"};
    int rc = EXIT_OK, made = 0;
    for (; made < n; made++)
        if (file_id_of(files[made].file, &ids[made]) != 0) {
            cli_error("run: out of memory");
            rc = EXIT_FAILURE_INTERNAL;
            break;
        }
    for (int i = 0; rc == EXIT_OK && i < n_out; i++)
        for (int j = 0; j < n && rc == EXIT_OK; j++) {
            if (j == i || (j < n_out && j > i) || !same_file(&ids[i], &ids[j]))
                continue;
            char a[PATH_MAX + 128], b[PATH_MAX + 128];
            binding_text(&files[i], a, sizeof a);
            binding_text(&files[j], b, sizeof b);
            if (j < n_out) /* an earlier output */
                cli_error("run: %s and %s are the same file; each output needs a file of its own",
                          b, a);
            else
                cli_error("run: %s and %s are the same file; an output may not overwrite an input",
                          a, b);
            rc = EXIT_USAGE;
        }
    for (int i = 0; i < made; i++)
        free(ids[i].path);
    return rc;
}

/* The tensor the engine takes for the input: what slot 0 of the first term
 * reads (its shape is the output's of reduction none, its dtype the
 * output's). An index into o->tensors, or -1 when it is not given. */
static int input_index(const run_opts *o, const lk_loss *loss)
{
    const char *name = lk_loss_term_tensor(loss, 0, 0);
    for (int i = 0; name && i < o->n_tensors; i++)
        if (strcmp(o->tensors[i].name, name) == 0)
            return i;
    return -1;
}

/* Each gradient asked for must be of a tensor the loss differentiates: a
 * name it does not read, or one it reads without a gradient (a target),
 * is bad usage naming the option. */
static int check_grads(const run_opts *o, const lk_loss *loss)
{
    for (int g = 0; g < o->n_grads; g++) {
        char names[512] = "", diff[512] = "";
        size_t un = 0, ud = 0;
        int found = 0, differentiable = 0;
        for (size_t i = 0; i < lk_loss_slot_count(loss); i++) {
            const lk_slot_desc *d;
            int32_t required, dif;
            if (lk_loss_slot_at(loss, i, &d, &required, &dif) != LK_OK)
                continue;
            if (strcmp(d->name, o->grads[g].name) == 0)
                found = 1, differentiable = dif;
            if (un < sizeof names)
                un += (size_t)snprintf(names + un, sizeof names - un, "%s%s", un ? ", " : "",
                                       d->name);
            if (dif && ud < sizeof diff)
                ud +=
                    (size_t)snprintf(diff + ud, sizeof diff - ud, "%s%s", ud ? ", " : "", d->name);
        }
        if (found && differentiable)
            continue;
        char what[PATH_MAX + 128];
        binding_text(&o->grads[g], what, sizeof what);
        const char *hint = strcmp(o->grads[g].opt, "--grad") == 0
                               ? "; --grad is short for --grad-tensor input=FILE"
                               : "";
        if (!found)
            cli_error("run: %s: %s has no tensor '%s' (its tensors: %s)%s", what,
                      lk_loss_name(loss), o->grads[g].name, names, hint);
        else
            cli_error("run: %s: tensor '%s' of %s has no gradient (differentiable: %s)", what,
                      o->grads[g].name, lk_loss_name(loss), ud ? diff : "none");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* A failure of lk_npy_read or lk_npy_write on file: its message, which
 * names the file, said to be out of memory when it is. */
static int file_error(const char *file, lk_status st, const char *err)
{
    if (st != LK_ERR_NOMEM) {
        cli_error("run: %s", err);
        return cli_exit_for(st);
    }
    char shown[LK__PATH_BUF];
    lk__short_path(shown, file);
    size_t n = strlen(shown);
    const char *why =
        strncmp(err, shown, n) == 0 && strncmp(err + n, ": ", 2) == 0 ? err + n + 2 : err;
    if (strncmp(why, "out of memory", 13) == 0)
        cli_error("run: %s: %s", shown, why);
    else
        cli_error("run: %s: out of memory: %s", shown, why);
    return EXIT_FAILURE_INTERNAL;
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
        lk_status st = lk_npy_read(o->tensors[i].file, &s->tensors[i], err);
        if (st != LK_OK)
            return file_error(o->tensors[i].file, st, err);
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
        lk_status st = lk_array_alloc(&s->grads[g], src->dtype, src->ndim, src->shape, err);
        if (st == LK_ERR_NOMEM) {
            cli_error("run: %s: out of memory: cannot allocate %zu bytes for the gradient of '%s'",
                      o->grads[g].file, src->nbytes, o->grads[g].name);
            return EXIT_FAILURE_INTERNAL;
        }
        if (st != LK_OK) {
            cli_error("run: %s: %s", o->grads[g].file, err);
            return EXIT_FAILURE_INTERNAL;
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
    return st == LK_ERR_NOT_FOUND ? EXIT_USAGE : cli_exit_for(st);
}

static int write_outputs(const run_opts *o, run_state *s)
{
    char err[LK_ERRMSG_CAP];
    for (int g = 0; g < o->n_grads; g++) {
        lk_tensor t = lk_array_view(&s->grads[g]);
        lk_status st = lk_npy_write(o->grads[g].file, &t, err);
        if (st != LK_OK)
            return file_error(o->grads[g].file, st, err);
    }
    if (o->out) {
        lk_tensor t = lk_array_view(&s->out);
        lk_status st = lk_npy_write(o->out, &t, err);
        if (st != LK_OK)
            return file_error(o->out, st, err);
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
    int at = input_index(o, loss);
    const lk_array *in = &s->tensors[at < 0 ? 0 : at];
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
    cli_print_json(root, 0);
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
    int at = input_index(o, loss);
    const lk_tensor *in = &s->named[at < 0 ? 0 : at].tensor;
    st = lk_array_alloc(&s->out, in->dtype, nd, shape, err);
    if (st != LK_OK) {
        /* the engine bounded the shape's size: only memory can run out */
        size_t bytes = lk_dtype_size(in->dtype);
        for (int32_t d = 0; d < nd; d++)
            bytes *= (size_t)shape[d];
        if (st == LK_ERR_NOMEM)
            cli_error("run: %s: out of memory: cannot allocate %zu bytes for the per-position "
                      "losses",
                      o->out ? o->out : o->config, bytes);
        else
            cli_error("run: %s: %s", o->out ? o->out : o->config, err);
        return EXIT_FAILURE_INTERNAL;
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
    int out_rc = check_outputs(&o);
    if (out_rc != EXIT_OK)
        return out_rc;
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
        else if (st == LK_ERR_NOMEM || st == LK_ERR_INTERNAL)
            rc = EXIT_FAILURE_INTERNAL;
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
    if (rc == EXIT_OK)
        rc = check_grads(&o, loss);
    run_state *s = calloc(1, sizeof *s);
    if (rc == EXIT_OK && !s) {
        cli_error("run: %s: out of memory", o.config);
        rc = EXIT_FAILURE_INTERNAL;
    }
    if (rc == EXIT_OK)
        rc = evaluate(&o, rt, loss, s);
    if (s)
        free_state(s);
    free(s);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return rc;
}
