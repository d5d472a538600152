/* cmd_list.c: `losskit list` and `losskit info`. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "internal.h" /* lk__fmt_double, compiled into the command too */

static int imax(int a, int b)
{
    return a > b ? a : b;
}

static const char *param_type_name(int32_t type)
{
    switch (type) {
    case LK_PARAM_NUMBER: return "number";
    case LK_PARAM_INTEGER: return "integer";
    case LK_PARAM_BOOL: return "boolean";
    case LK_PARAM_CHOICE: return "choice";
    case LK_PARAM_NUMBER_LIST: return "number list";
    default: return "unknown";
    }
}

static const char *shape_rule_name(int32_t rule)
{
    switch (rule) {
    case LK_SHAPE_LIKE_INPUT: return "like input";
    case LK_SHAPE_INPUT_NO_CHANNEL: return "input without dim 1";
    default: return "any";
    }
}

/* The shape column of a slot: its rule, or where the rule is "any" and the
 * slot declares its numbers of dimensions (ABI 1.3), those: "1 or 2 dims". */
static const char *shape_col(const lk_slot_desc *s, uint32_t minor, char *buf, size_t cap)
{
    uint32_t ndims = lk_slot_ndims_of(s, minor);
    if (s->shape != LK_SHAPE_ANY || !ndims)
        return shape_rule_name(s->shape);
    char n[80];
    lk__ndims_str(n, sizeof n, ndims);
    snprintf(buf, cap, "%s dim%s", n, ndims == LK_NDIM_BIT(1) ? "" : "s");
    return buf;
}

static int parse_json_flag(int argc, char **argv, int first, int *json, const char *cmd)
{
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            *json = 1;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1])
            cli_unknown_option(cmd, argv[i]);
        else
            cli_error("%s: unexpected argument '%s'", cmd, argv[i]);
        return -1;
    }
    return 0;
}

static void print_reductions(const lk_loss_desc *d, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t r = 0; r < LK_REDUCTION_COUNT; r++)
        if (d->reductions & LK_REDUCTION_BIT(r))
            used += (size_t)snprintf(buf + used, cap - used, "%s%s%s", used ? "," : "",
                                     lk_reduction_name(r), r == d->default_reduction ? "*" : "");
}

static int list_json(lk_runtime *rt)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < lk_runtime_loss_count(rt); i++) {
        lk_loss_info li;
        lk_runtime_loss_at(rt, i, &li);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", li.id);
        cJSON_AddStringToObject(o, "summary", li.desc->summary);
        cJSON_AddStringToObject(o, "version", li.desc->version);
        cJSON_AddStringToObject(o, "plugin", li.plugin_name);
        cJSON_AddStringToObject(o, "file", li.plugin_file);
        cJSON_AddBoolToObject(o, "shadowed", li.shadowed);
        if (li.shadowed)
            cJSON_AddStringToObject(o, "shadowed_by", li.shadowed_by);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON *diags = cJSON_CreateArray();
    for (size_t i = 0; i < lk_runtime_diag_count(rt); i++)
        cJSON_AddItemToArray(diags, cJSON_CreateString(lk_runtime_diag(rt, i)));
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "losses", arr);
    cJSON_AddItemToObject(root, "diagnostics", diags);
    cli_print_json(root, 1);
    cJSON_Delete(root);
    return EXIT_OK;
}

int cmd_list(int argc, char **argv)
{
    int json = 0;
    if (parse_json_flag(argc, argv, 1, &json, "list") != 0)
        return EXIT_USAGE;
    lk_runtime *rt = cli_open_runtime(0);
    if (!rt)
        return cli_open_failed();
    if (json) {
        list_json(rt);
        lk_runtime_close(rt);
        return EXIT_OK;
    }
    /* columns as wide as their longest entry, so that every row lines up */
    int w_id = 0, w_plugin = 0, w_red = 0;
    for (size_t i = 0; i < lk_runtime_loss_count(rt); i++) {
        lk_loss_info li;
        lk_runtime_loss_at(rt, i, &li);
        char red[64];
        print_reductions(li.desc, red, sizeof red);
        w_id = imax(w_id, (int)strlen(li.id));
        w_plugin = imax(w_plugin, (int)strlen(li.plugin_name));
        w_red = imax(w_red, (int)strlen(red));
    }
    for (size_t i = 0; i < lk_runtime_loss_count(rt); i++) {
        lk_loss_info li;
        lk_runtime_loss_at(rt, i, &li);
        char red[64];
        print_reductions(li.desc, red, sizeof red);
        printf("%-*s  %-*s  %-*s  %s\n", w_id, li.id, w_plugin, li.plugin_name, w_red, red,
               li.desc->summary);
        if (li.shadowed)
            printf("%-*s    shadowed: %s loses to %s\n", w_id, "", li.plugin_file, li.shadowed_by);
    }
    if (lk_runtime_loss_count(rt) == 0)
        cli_error("no losses found; check LOSSKIT_PLUGIN_PATH");
    lk_runtime_close(rt);
    return EXIT_OK;
}

static void param_default(const lk_param_desc *p, char *buf, size_t cap)
{
    size_t used = 0;
    switch (p->type) {
    case LK_PARAM_BOOL: snprintf(buf, cap, "%s", p->default_number ? "true" : "false"); return;
    case LK_PARAM_CHOICE: snprintf(buf, cap, "\"%s\"", p->default_choice); return;
    case LK_PARAM_NUMBER_LIST:
        used = (size_t)snprintf(buf, cap, "[");
        for (int32_t i = 0; i < p->default_list_len && used < cap; i++) {
            char v[32];
            lk__fmt_double(v, sizeof v, p->default_list[i]);
            used += (size_t)snprintf(buf + used, cap - used, i ? ", %s" : "%s", v);
        }
        if (used < cap)
            snprintf(buf + used, cap - used, "]");
        return;
    default: lk__fmt_double(buf, cap, p->default_number); return;
    }
}

static void param_range(const lk_param_desc *p, char *buf, size_t cap)
{
    if (p->type == LK_PARAM_BOOL) {
        snprintf(buf, cap, "true|false");
        return;
    }
    if (p->type == LK_PARAM_CHOICE) {
        size_t used = 0;
        buf[0] = '\0';
        for (const char *const *c = p->choices; *c && used < cap; c++)
            used +=
                (size_t)snprintf(buf + used, cap - used, "%s%s", c == p->choices ? "" : "|", *c);
        return;
    }
    char lo[32], hi[32];
    lk__fmt_double(lo, sizeof lo, p->min);
    lk__fmt_double(hi, sizeof hi, p->max);
    int n = snprintf(buf, cap, "%c%s, %s%c", (p->flags & LK_PARAM_MIN_EXCLUSIVE) ? '(' : '[', lo,
                     hi, (p->flags & LK_PARAM_MAX_EXCLUSIVE) ? ')' : ']');
    if (p->type == LK_PARAM_NUMBER_LIST && n > 0 && (size_t)n < cap) {
        if (p->list_max_len >= 0)
            snprintf(buf + n, cap - (size_t)n, " each, %d..%d items", p->list_min_len,
                     p->list_max_len);
        else
            snprintf(buf + n, cap - (size_t)n, " each, %d+ items", p->list_min_len);
    }
}

static void dtype_list(uint32_t mask, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t d = LK_DTYPE_F32; d <= LK_DTYPE_BOOL; d++)
        if (mask & LK_DTYPE_BIT(d))
            used +=
                (size_t)snprintf(buf + used, cap - used, "%s%s", used ? "," : "", lk_dtype_name(d));
}

static const char *eval_kind(const lk_loss_desc *d)
{
    if (d->flags & LK_LOSS_WHOLE)
        return "whole batch";
    return (d->flags & LK_LOSS_FUSED) ? "fused (one pass)" : "two passes (global statistics)";
}

static void info_text(const lk_loss_info *li)
{
    const lk_loss_desc *d = li->desc;
    char red[64];
    print_reductions(d, red, sizeof red);
    printf("%s %s: %s\n", d->id, d->version, d->summary);
    printf("  plugin:     %s %s (%s)\n", li->plugin_name, li->plugin_version, li->plugin_file);
    printf("  reductions: %s (* default)\n", red);
    printf("  evaluation: %s\n", eval_kind(d));
    printf("  params:\n");
    if (!d->params || !d->params[0])
        printf("    (none)\n");
    int width = 14; /* the name column: the longest name's */
    for (size_t i = 0; d->params && d->params[i]; i++)
        if ((int)strlen(d->params[i]->name) > width)
            width = (int)strlen(d->params[i]->name);
    for (size_t i = 0; d->params && d->params[i]; i++) {
        const lk_param_desc *p = d->params[i];
        const char *unset = lk_param_unset_of(p, li->plugin_abi_minor);
        char col[136], range[160];
        if (unset) {
            snprintf(col, sizeof col, "unset");
        } else {
            char def[128];
            param_default(p, def, sizeof def);
            snprintf(col, sizeof col, "default %s", def);
        }
        param_range(p, range, sizeof range);
        printf("    %-*s %-11s %-18s %s\n      %s\n", width, p->name, param_type_name(p->type), col,
               range, p->doc);
        if (unset)
            printf("      unset: %s\n", unset);
    }
    printf("  tensors:\n");
    int swidth = 10; /* the name column: the longest slot name's */
    for (size_t i = 0; d->slots[i]; i++)
        if ((int)strlen(d->slots[i]->name) > swidth)
            swidth = (int)strlen(d->slots[i]->name);
    for (size_t i = 0; d->slots[i]; i++) {
        const lk_slot_desc *s = d->slots[i];
        char dt[96], shape[96];
        dtype_list(s->dtypes, dt, sizeof dt);
        printf("    %-*s %-8s %-15s %-20s %s%s\n", swidth, s->name,
               (s->flags & LK_SLOT_OPTIONAL) ? "optional" : "required", dt,
               shape_col(s, li->plugin_abi_minor, shape, sizeof shape),
               (s->flags & LK_SLOT_DIFFERENTIABLE) ? "[differentiable] " : "",
               s->doc ? s->doc : "");
    }
    /* where a whole-batch loss's samples lie, for gathering (ABI 1.6) */
    if (!(d->flags & LK_LOSS_WHOLE))
        return;
    printf("  gathered across processes along:\n");
    for (size_t i = 0; d->slots[i]; i++) {
        uint32_t views;
        int32_t padded, dim = lk_slot_batch_of(d->slots[i], li->plugin_abi_minor, &views, &padded);
        if (dim < 0) {
            printf("    %-*s not declared: processes cannot gather this loss\n", swidth,
                   d->slots[i]->name);
            continue;
        }
        printf("    %-*s dim %d", swidth, d->slots[i]->name, (int)dim);
        if (views > 1)
            printf(", %u views (each sample's rows %s apart)", views,
                   views == 2 ? "N" : "N, 2N, ...");
        if (padded)
            printf(", other dims padded with zeros to the largest process's");
        printf("\n");
    }
}

static cJSON *param_json(const lk_param_desc *p, uint32_t plugin_abi_minor)
{
    const char *unset = lk_param_unset_of(p, plugin_abi_minor);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", p->name);
    cJSON_AddStringToObject(o, "type", param_type_name(p->type));
    cJSON_AddStringToObject(o, "doc", p->doc);
    if (p->type == LK_PARAM_BOOL) {
        cJSON_AddBoolToObject(o, "default", p->default_number != 0);
    } else if (p->type == LK_PARAM_CHOICE) {
        cJSON_AddStringToObject(o, "default", p->default_choice);
        cJSON *c = cJSON_AddArrayToObject(o, "choices");
        for (const char *const *s = p->choices; *s; s++)
            cJSON_AddItemToArray(c, cJSON_CreateString(*s));
    } else if (p->type == LK_PARAM_NUMBER_LIST) {
        /* cJSON makes no array of no items from a NULL pointer */
        cJSON_AddItemToObject(o, "default",
                              p->default_list_len
                                  ? cJSON_CreateDoubleArray(p->default_list, p->default_list_len)
                                  : cJSON_CreateArray());
        cJSON_AddNumberToObject(o, "min_items", p->list_min_len);
        if (p->list_max_len >= 0)
            cJSON_AddNumberToObject(o, "max_items", p->list_max_len);
    } else {
        cJSON_AddNumberToObject(o, "default", p->default_number);
    }
    if (p->type == LK_PARAM_NUMBER || p->type == LK_PARAM_INTEGER ||
        p->type == LK_PARAM_NUMBER_LIST) {
        if (isfinite(p->min))
            cJSON_AddNumberToObject(o, "min", p->min);
        if (isfinite(p->max))
            cJSON_AddNumberToObject(o, "max", p->max);
        cJSON_AddBoolToObject(o, "min_exclusive", (p->flags & LK_PARAM_MIN_EXCLUSIVE) != 0);
        cJSON_AddBoolToObject(o, "max_exclusive", (p->flags & LK_PARAM_MAX_EXCLUSIVE) != 0);
    }
    if (unset) { /* no default: what leaving it out means instead */
        cJSON_ReplaceItemInObjectCaseSensitive(o, "default", cJSON_CreateNull());
        cJSON_AddStringToObject(o, "unset", unset);
    }
    return o;
}

static void info_json(const lk_loss_info *li)
{
    const lk_loss_desc *d = li->desc;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "summary", d->summary);
    cJSON_AddStringToObject(o, "version", d->version);
    cJSON_AddStringToObject(o, "plugin", li->plugin_name);
    cJSON_AddStringToObject(o, "file", li->plugin_file);
    cJSON_AddStringToObject(o, "evaluation", eval_kind(d));
    cJSON *params = cJSON_AddArrayToObject(o, "params");
    for (size_t i = 0; d->params && d->params[i]; i++)
        cJSON_AddItemToArray(params, param_json(d->params[i], li->plugin_abi_minor));
    cJSON *slots = cJSON_AddArrayToObject(o, "slots");
    for (size_t i = 0; d->slots[i]; i++) {
        const lk_slot_desc *s = d->slots[i];
        cJSON *so = cJSON_CreateObject();
        cJSON_AddStringToObject(so, "name", s->name);
        cJSON_AddStringToObject(so, "doc", s->doc ? s->doc : "");
        cJSON_AddBoolToObject(so, "optional", (s->flags & LK_SLOT_OPTIONAL) != 0);
        cJSON_AddBoolToObject(so, "differentiable", (s->flags & LK_SLOT_DIFFERENTIABLE) != 0);
        cJSON_AddStringToObject(so, "shape", shape_rule_name(s->shape));
        uint32_t ndims = lk_slot_ndims_of(s, li->plugin_abi_minor);
        if (ndims) {
            cJSON *nd = cJSON_AddArrayToObject(so, "ndims");
            for (int k = 0; k <= LK_MAX_NDIM; k++)
                if (ndims & LK_NDIM_BIT(k))
                    cJSON_AddItemToArray(nd, cJSON_CreateNumber(k));
        } else {
            cJSON_AddNullToObject(so, "ndims");
        }
        uint32_t views;
        int32_t padded, dim = lk_slot_batch_of(s, li->plugin_abi_minor, &views, &padded);
        if (dim >= 0) {
            cJSON *b = cJSON_AddObjectToObject(so, "batch");
            cJSON_AddNumberToObject(b, "dim", dim);
            cJSON_AddNumberToObject(b, "views", views);
            cJSON_AddBoolToObject(b, "padded", padded != 0);
        } else {
            cJSON_AddNullToObject(so, "batch");
        }
        cJSON *dts = cJSON_AddArrayToObject(so, "dtypes");
        for (int32_t t = LK_DTYPE_F32; t <= LK_DTYPE_BOOL; t++)
            if (s->dtypes & LK_DTYPE_BIT(t))
                cJSON_AddItemToArray(dts, cJSON_CreateString(lk_dtype_name(t)));
        cJSON_AddItemToArray(slots, so);
    }
    cJSON *reds = cJSON_AddArrayToObject(o, "reductions");
    for (int32_t r = 0; r < LK_REDUCTION_COUNT; r++)
        if (d->reductions & LK_REDUCTION_BIT(r))
            cJSON_AddItemToArray(reds, cJSON_CreateString(lk_reduction_name(r)));
    cJSON_AddStringToObject(o, "default_reduction", lk_reduction_name(d->default_reduction));
    cli_print_json(o, 1);
    cJSON_Delete(o);
}

int cmd_info(int argc, char **argv)
{
    int json = 0;
    if (argc < 2 || argv[1][0] == '-') {
        cli_error("info: usage: losskit info LOSS [--json]");
        return EXIT_USAGE;
    }
    if (parse_json_flag(argc, argv, 2, &json, "info") != 0)
        return EXIT_USAGE;
    lk_runtime *rt = cli_open_runtime(0);
    if (!rt)
        return cli_open_failed();
    lk_loss_info li;
    char err[LK_ERRMSG_CAP];
    int rc = EXIT_OK;
    if (lk_runtime_find(rt, argv[1], &li, err) != LK_OK) {
        cli_error("info: %s", err);
        rc = lk_runtime_diag_count(rt) ? EXIT_PLUGIN : EXIT_USAGE;
    } else if (json) {
        info_json(&li);
    } else {
        info_text(&li);
    }
    lk_runtime_close(rt);
    return rc;
}
