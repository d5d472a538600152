/* config.c: JSON configs, validated against each loss's declared schema.
 *
 * A config is either one loss:
 *   {"loss": "focal", "params": {"alpha": 0.25}, "reduction": "mean"}
 * or a weighted sum of losses:
 *   {"terms": [{"loss": "bce_with_logits", "weight": 0.5}, ...], "reduction": "mean"}
 * Every error is one line: "SOURCE: $.json.path: problem". */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_TERMS        64

/* A number of the config as it is written: cJSON keeps only its double. */
typedef struct numlit {
    const cJSON *node;
    size_t off, len; /* in the JSON text */
} numlit;

typedef struct ctx {
    lk_runtime *rt;
    const char *source; /* as messages show it (lk__short_path) */
    char *errmsg;
    const char *json;
    const numlit *lits; /* every number of the tree, sorted by node */
    size_t n_lits;
} ctx;

static lk_status fail(const ctx *c, const char *path, const char *fmt, ...) LK__PRINTF(3, 4);

/* An allocation for the config failed: one line naming the config. */
static lk_status out_of_memory(const ctx *c)
{
    return lk__err(c->errmsg, LK_ERR_NOMEM, "%s: out of memory", c->source);
}

static lk_status fail(const ctx *c, const char *path, const char *fmt, ...)
{
    char what[LK_ERRMSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lk__err(c->errmsg, LK_ERR_CONFIG, "%s: %s: %s", c->source, path, what);
}

/* The closest of names to key, as "; did you mean 'x'?", or "". */
static void closest(const char *key, const char *const *names, size_t n, char *buf, size_t cap)
{
    const char *best = lk_closest_name(key, names, n);
    buf[0] = '\0';
    if (best)
        snprintf(buf, cap, "; did you mean '%s'?", best);
}

static void list_names(const char *const *names, size_t n, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, i ? ", %s" : "%s", names[i]);
    if (n == 0)
        snprintf(buf, cap, "(none)");
}

/* A parameter written beside "loss" rather than under "params" is the
 * commonest slip in a config: where key names a parameter of the loss obj
 * names, say where it belongs. */
static int misplaced_param(const ctx *c, const cJSON *obj, const char *key, char *buf, size_t cap)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "loss");
    const lk__entry *e = cJSON_IsString(id) ? lk__registry_find(&c->rt->reg, id->valuestring) : NULL;
    for (uint32_t i = 0; e && i < e->n_params; i++)
        if (strcmp(e->params[i]->name, key) == 0) {
            snprintf(buf, cap,
                     "unknown key '%s': it is a parameter of loss '%s' and goes under "
                     "\"params\", as in \"params\": {\"%s\": ...}",
                     key, e->desc->id, key);
            return 1;
        }
    return 0;
}

static lk_status check_keys(const ctx *c, const cJSON *obj, const char *path,
                            const char *const *allowed, size_t n_allowed)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        size_t i = 0;
        while (i < n_allowed && strcmp(it->string, allowed[i]) != 0)
            i++;
        if (i < n_allowed)
            continue;
        char why[LK_ERRMSG_CAP / 2];
        if (misplaced_param(c, obj, it->string, why, sizeof why))
            return fail(c, path, "%s", why);
        char hint[96], known[256];
        closest(it->string, allowed, n_allowed, hint, sizeof hint);
        list_names(allowed, n_allowed, known, sizeof known);
        return fail(c, path, "unknown key '%s'%s (allowed: %s)", it->string, hint, known);
    }
    return LK_OK;
}

static const char *json_type(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsNull(v))
        return "null";
    return "an invalid value";
}

static int in_range(const lk_param_desc *p, double v)
{
    if (v < p->min || v > p->max)
        return 0;
    if ((p->flags & LK_PARAM_MIN_EXCLUSIVE) && v == p->min)
        return 0;
    if ((p->flags & LK_PARAM_MAX_EXCLUSIVE) && v == p->max)
        return 0;
    return 1;
}

/* The int64 range as doubles: [-2^63, 2^63). Both are exact. */
#define INT64_LO (-9223372036854775808.0)
#define INT64_HI 9223372036854775808.0

/* x as an int64 without undefined behaviour: a NUMBER parameter may hold any
 * finite double (smooth = 1e19), so its integer field saturates (and truncates
 * toward zero within range). INTEGER values are range-checked before this. */
static int64_t to_int64(double x)
{
    if (x != x)
        return 0;
    if (x < INT64_LO)
        return INT64_MIN;
    if (x >= INT64_HI)
        return INT64_MAX;
    return (int64_t)x;
}

static void range_str(const lk_param_desc *p, char *buf, size_t cap)
{
    char lo[32], hi[32];
    lk__fmt_double(lo, sizeof lo, p->min);
    lk__fmt_double(hi, sizeof hi, p->max);
    snprintf(buf, cap, "%c%s, %s%c", (p->flags & LK_PARAM_MIN_EXCLUSIVE) ? '(' : '[', lo, hi,
             (p->flags & LK_PARAM_MAX_EXCLUSIVE) ? ')' : ']');
}

/* ------------------------------------------------------------------------ */
/* Numbers as written. cJSON reads every number into a double, so
 * 9007199254740993 arrives as 9007199254740992 and 1e400 as inf; these
 * read the literal itself, exactly.                                         */

static int cmp_numlit(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const numlit *)a)->node, y = (uintptr_t)((const numlit *)b)->node;
    return x < y ? -1 : x > y;
}

/* The text of number v as the config writes it, or NULL. */
static const char *literal_of(const ctx *c, const cJSON *v, size_t *len)
{
    numlit key = {v, 0, 0};
    const numlit *hit = c->lits ? bsearch(&key, c->lits, c->n_lits, sizeof key, cmp_numlit) : NULL;
    if (!hit)
        return NULL;
    *len = hit->len;
    return c->json + hit->off;
}

/* A decimal literal -?D*(.D*)?([eE][+-]?D+)? read exactly: its value is
 * the digits of ip and fp, as one integer, times 10^(exp - flen). */
typedef struct declit {
    int neg;
    const char *ip, *fp;
    size_t ilen, flen;
    long long exp;      /* saturated at +-10^12: far beyond any double */
    size_t first, last; /* the first and last nonzero digit (of ip then fp) */
    int zero;
} declit;

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static char dl_digit(const declit *d, size_t k)
{
    return k < d->ilen ? d->ip[k] : d->fp[k - d->ilen];
}

/* The power of ten of digit k. */
static long long dl_power(const declit *d, size_t k)
{
    return (long long)d->ilen - 1 - (long long)k + d->exp;
}

static void declit_read(declit *d, const char *s, size_t n)
{
    size_t i = 0;
    memset(d, 0, sizeof *d);
    if (i < n && (s[i] == '-' || s[i] == '+'))
        d->neg = s[i++] == '-';
    d->ip = s + i;
    while (i < n && is_digit(s[i]))
        i++;
    d->ilen = (size_t)(s + i - d->ip);
    d->fp = s + i;
    if (i < n && s[i] == '.') {
        d->fp = s + ++i;
        while (i < n && is_digit(s[i]))
            i++;
        d->flen = (size_t)(s + i - d->fp);
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0;
        if (++i < n && (s[i] == '-' || s[i] == '+'))
            eneg = s[i++] == '-';
        for (; i < n && is_digit(s[i]); i++)
            if (d->exp < 1000000000000LL)
                d->exp = d->exp * 10 + (s[i] - '0');
        if (eneg)
            d->exp = -d->exp;
    }
    size_t nd = d->ilen + d->flen;
    d->first = 0;
    while (d->first < nd && dl_digit(d, d->first) == '0')
        d->first++;
    d->zero = d->first == nd;
    d->last = nd;
    while (!d->zero && dl_digit(d, d->last - 1) == '0')
        d->last--;
    d->last--; /* nd - 1 at most; unused when zero */
}

/* Whether a and b are the same number. */
static int declit_equal(const declit *a, const declit *b)
{
    if (a->zero || b->zero)
        return a->zero && b->zero;
    if (a->neg != b->neg || a->last - a->first != b->last - b->first ||
        dl_power(a, a->first) != dl_power(b, b->first))
        return 0;
    for (size_t k = 0; k <= a->last - a->first; k++)
        if (dl_digit(a, a->first + k) != dl_digit(b, b->first + k))
            return 0;
    return 1;
}

enum { INT_OK, INT_NOT, INT_BEYOND_2P53, INT_BEYOND_INT64 };

/* What a literal is as an integer: exactly one within +-2^53 (what a JSON
 * number holds without loss), one beyond, one beyond int64, or none. */
static int integer_class(const declit *d)
{
    if (d->zero)
        return INT_OK;
    if (dl_power(d, d->last) < 0)
        return INT_NOT;
    if (dl_power(d, d->first) + 1 > 19)
        return INT_BEYOND_INT64;
    uint64_t v = 0; /* at most 19 digits: below 2^64 */
    for (size_t k = d->first; k <= d->last; k++)
        v = v * 10 + (uint64_t)(dl_digit(d, k) - '0');
    for (long long p = dl_power(d, d->last); p > 0; p--)
        v *= 10;
    if (v > (d->neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1))
        return INT_BEYOND_INT64;
    return v > (uint64_t)1 << 53 ? INT_BEYOND_2P53 : INT_OK;
}

#define SHOWN_NUMBER 40 /* a longer literal is cut, with "..." */

/* Number v as typed, into buf (SHOWN_NUMBER + 1 bytes), and its literal
 * read exactly into lit. The double in its shortest form (1.1, -1e+300,
 * an integer below 1e20 in full) when that is the same number; else the
 * literal itself: 9007199254740993, not the 9007199254740992 it reads as,
 * and 1e400, not inf. */
static void number_text(const ctx *c, const cJSON *v, char *buf, declit *lit)
{
    double x = v->valuedouble;
    char xs[32];
    if (x == floor(x) && fabs(x) < 1e20)
        snprintf(xs, sizeof xs, "%.0f", x);
    else
        lk__fmt_double(xs, sizeof xs, x);
    size_t len = 0;
    const char *text = literal_of(c, v, &len);
    if (!text) { /* not from the text (never, but a message still) */
        text = xs;
        len = strlen(xs);
    }
    declit_read(lit, text, len);
    declit as_double;
    declit_read(&as_double, xs, strlen(xs));
    if (isfinite(x) && declit_equal(lit, &as_double))
        snprintf(buf, SHOWN_NUMBER + 1, "%s", xs);
    else if (len <= SHOWN_NUMBER)
        snprintf(buf, SHOWN_NUMBER + 1, "%.*s", (int)len, text);
    else
        snprintf(buf, SHOWN_NUMBER + 1, "%.*s...", SHOWN_NUMBER - 3, text);
}

#define DOUBLE_RANGE "is beyond the range of a double (about 1.8e308 at most)"

static lk_status check_number(const ctx *c, const char *path, const lk_param_desc *p,
                              const cJSON *v, double *out)
{
    if (!cJSON_IsNumber(v))
        return fail(c, path, "expected a number, got %s", json_type(v));
    double x = v->valuedouble;
    char xs[SHOWN_NUMBER + 1];
    declit lit;
    number_text(c, v, xs, &lit);
    if (!isfinite(x))
        return fail(c, path, "%s " DOUBLE_RANGE, xs);
    if (p->type == LK_PARAM_INTEGER) {
        switch (integer_class(&lit)) {
        case INT_NOT: return fail(c, path, "expected an integer, got %s", xs);
        case INT_BEYOND_INT64:
            return fail(c, path, "%s is outside the range of a 64-bit integer", xs);
        case INT_BEYOND_2P53:
            return fail(c, path,
                        "%s is beyond 2^53, where a JSON number no longer holds every integer", xs);
        default: break;
        }
    }
    if (!in_range(p, x)) {
        char r[80];
        range_str(p, r, sizeof r);
        return fail(c, path, "%s is out of range %s", xs, r);
    }
    *out = x;
    return LK_OK;
}

/* Fills one parameter value from JSON (v) or from the declared default. List
 * storage is appended to *lists, which the caller frees after create(). */
static lk_status param_value(const ctx *c, const char *path, const lk_param_desc *p, const cJSON *v,
                             lk_param_value *out, double **store)
{
    memset(out, 0, sizeof *out);
    out->is_set = v != NULL;
    switch (p->type) {
    case LK_PARAM_NUMBER:
    case LK_PARAM_INTEGER: {
        double x = p->default_number;
        if (v && check_number(c, path, p, v, &x) != LK_OK)
            return LK_ERR_CONFIG;
        out->number = x;
        out->integer = to_int64(x);
        return LK_OK;
    }
    case LK_PARAM_BOOL:
        if (v && !cJSON_IsBool(v))
            return fail(c, path, "expected true or false, got %s", json_type(v));
        out->integer = v ? cJSON_IsTrue(v) : (p->default_number != 0);
        out->number = (double)out->integer;
        return LK_OK;
    case LK_PARAM_CHOICE: {
        const char *s = p->default_choice;
        if (v && !cJSON_IsString(v))
            return fail(c, path, "expected a string, got %s", json_type(v));
        if (v)
            s = v->valuestring;
        size_t n = 0;
        while (p->choices[n] && strcmp(p->choices[n], s) != 0)
            n++;
        if (!p->choices[n]) {
            size_t count = 0;
            while (p->choices[count])
                count++;
            char hint[96], known[256];
            closest(s, p->choices, count, hint, sizeof hint);
            list_names(p->choices, count, known, sizeof known);
            return fail(c, path, "'%s' is not one of: %s%s", s, known, hint);
        }
        out->choice = p->choices[n];
        out->integer = (int64_t)n;
        return LK_OK;
    }
    case LK_PARAM_NUMBER_LIST: {
        const double *src = p->default_list;
        int n = p->default_list_len;
        /* a bare number is a list of one: "pos_weight": 2 means [2] */
        int bare = v && cJSON_IsNumber(v);
        if (v && !bare && !cJSON_IsArray(v))
            return fail(c, path, "expected a number or an array of numbers, got %s", json_type(v));
        if (v)
            n = bare ? 1 : cJSON_GetArraySize(v);
        if (v && (n < p->list_min_len || (p->list_max_len >= 0 && n > p->list_max_len))) {
            if (p->list_max_len >= 0)
                return fail(c, path, "has %d items; expected %d to %d", n, p->list_min_len,
                            p->list_max_len);
            return fail(c, path, "has %d items; expected at least %d", n, p->list_min_len);
        }
        double *items = n ? calloc((size_t)n, sizeof *items) : NULL;
        if (n && !items)
            return out_of_memory(c);
        *store = items;
        if (bare)
            return check_number(c, path, p, v, &items[0]) == LK_OK
                       ? (out->list = items, out->list_len = 1, LK_OK)
                       : LK_ERR_CONFIG;
        int i = 0;
        for (const cJSON *it = v ? v->child : NULL; v && it; it = it->next, i++) {
            char ipath[320];
            snprintf(ipath, sizeof ipath, "%s[%d]", path, i);
            if (check_number(c, ipath, p, it, &items[i]) != LK_OK)
                return LK_ERR_CONFIG;
        }
        if (!v && n)
            memcpy(items, src, (size_t)n * sizeof *items);
        out->list = items;
        out->list_len = n;
        return LK_OK;
    }
    default: return lk__err(c->errmsg, LK_ERR_INTERNAL, "%s: bad parameter type", c->source);
    }
}

/* Validates params against the entry's schema and creates the instance. */
static lk_status build_term(const ctx *c, const char *path, const lk__entry *e, const cJSON *params,
                            lk__term *term)
{
    char ppath[224];
    snprintf(ppath, sizeof ppath, "%s.params", path);
    if (params && !cJSON_IsObject(params))
        return fail(c, ppath, "expected an object, got %s", json_type(params));
    const char *names[LK_MAX_PARAMS]; /* the loader refuses more */
    uint32_t np = e->n_params < LK_MAX_PARAMS ? e->n_params : LK_MAX_PARAMS;
    for (uint32_t i = 0; i < np; i++)
        names[i] = e->params[i]->name;
    for (const cJSON *it = params ? params->child : NULL; it; it = it->next) {
        uint32_t i = 0;
        while (i < np && strcmp(it->string, names[i]) != 0)
            i++;
        if (i < np)
            continue;
        char hint[96], known[256];
        closest(it->string, names, np, hint, sizeof hint);
        list_names(names, np, known, sizeof known);
        return fail(c, ppath, "unknown parameter '%s' for loss '%s'%s (parameters: %s)", it->string,
                    e->desc->id, hint, known);
    }
    lk_param_value *values = calloc(np ? np : 1, sizeof *values);
    double **lists = calloc(np ? np : 1, sizeof *lists);
    lk_status st = values && lists ? LK_OK : LK_ERR_NOMEM;
    if (st != LK_OK)
        out_of_memory(c);
    for (uint32_t i = 0; st == LK_OK && i < np; i++) {
        char vpath[288];
        snprintf(vpath, sizeof vpath, "%s.%s", ppath, names[i]);
        const cJSON *v = params ? cJSON_GetObjectItemCaseSensitive(params, names[i]) : NULL;
        /* null leaves a parameter without a default unset, as leaving it
         * out does (`losskit info --json` shows its default as null) */
        if (cJSON_IsNull(v)) {
            if (!lk_param_unset_of(e->params[i], e->module->plugin->abi_minor)) {
                st = fail(c, vpath,
                          "null, but this parameter has a default: leave it out to take the "
                          "default (losskit info %s)",
                          e->desc->id);
                break;
            }
            v = NULL;
        }
        st = param_value(c, vpath, e->params[i], v, &values[i], &lists[i]);
    }
    /* The plugin enters this process here, at the first loss built from it:
     * listing and validating never run its code. */
    char why[LK_ERRMSG_CAP];
    if (st == LK_OK && (st = lk__registry_use(&c->rt->reg, e, why)) != LK_OK)
        lk__err(c->errmsg, st, "%s: %s: loss '%s': %s", c->source, path, e->desc->id, why);
    if (st == LK_OK && e->impl->create) {
        char msg[LK_ERRMSG_CAP / 2] = "";
        lk_msg m = {msg, sizeof msg};
        lk_create_args args = {&c->rt->host, e->impl, values, np};
        lk_status cs = e->impl->create(&args, &term->instance, &m);
        if (cs != LK_OK) {
            st = fail(c, ppath, "loss '%s' refused its parameters: %s", e->desc->id,
                      msg[0] ? msg : lk_status_text(cs));
            term->instance = NULL;
        }
    }
    for (uint32_t i = 0; lists && i < np; i++)
        free(lists[i]);
    free(lists);
    free(values);
    if (st == LK_OK)
        term->entry = e;
    return st;
}

static lk_status lookup(const ctx *c, const char *path, const cJSON *v, const lk__entry **out)
{
    if (!v)
        return fail(c, path, "missing key 'loss'");
    if (!cJSON_IsString(v))
        return fail(c, path, "expected a loss id (a string), got %s", json_type(v));
    *out = lk__registry_find(&c->rt->reg, v->valuestring);
    if (*out)
        return LK_OK;
    char hint[LK_ERRMSG_CAP / 2];
    lk__registry_suggest(&c->rt->reg, v->valuestring, hint, sizeof hint);
    return fail(c, path, "unknown loss '%s'; %s", v->valuestring, hint);
}

/* Tensor names are what a shell, a file name and a Python keyword argument
 * all take unquoted: lowercase letters, digits and '_'. */
#define MAX_TENSOR_NAME 64

static int valid_tensor_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_TENSOR_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* "tensors": {"input": "logits_x2", ...}: which call tensor each slot of the
 * term reads. Slots not named read the tensor of their own name. */
static lk_status parse_tensors(const ctx *c, const char *path, const cJSON *v, const lk__entry *e,
                               lk__term *term)
{
    char tpath[224];
    snprintf(tpath, sizeof tpath, "%s.tensors", path);
    if (!cJSON_IsObject(v))
        return fail(c, tpath, "expected an object mapping slot names to tensor names, got %s",
                    json_type(v));
    const char *names[LK__MAX_SLOTS];
    uint32_t ns = e->n_slots < LK__MAX_SLOTS ? e->n_slots : LK__MAX_SLOTS;
    for (uint32_t s = 0; s < ns; s++)
        names[s] = e->slots[s]->name;
    for (const cJSON *it = v->child; it; it = it->next) {
        uint32_t s = 0;
        while (s < ns && strcmp(it->string, names[s]) != 0)
            s++;
        if (s == ns) {
            char hint[96], known[256];
            closest(it->string, names, ns, hint, sizeof hint);
            list_names(names, ns, known, sizeof known);
            return fail(c, tpath, "unknown slot '%s' for loss '%s'%s (slots: %s)", it->string,
                        e->desc->id, hint, known);
        }
        char vpath[320];
        snprintf(vpath, sizeof vpath, "%s.%s", tpath, it->string);
        if (!cJSON_IsString(it))
            return fail(c, vpath, "expected a tensor name (a string), got %s", json_type(it));
        if (!valid_tensor_name(it->valuestring))
            return fail(c, vpath, "'%s' is not a valid tensor name (1 to %d of a-z, 0-9 and '_')",
                        it->valuestring, MAX_TENSOR_NAME);
        if (strcmp(it->valuestring, names[s]) == 0)
            continue;
        term->bound[s] = lk__strdup(it->valuestring);
        if (!term->bound[s])
            return out_of_memory(c);
    }
    /* One tensor per slot: input and target reading the same array would
     * make its gradient the sum of two roles the loss never combines. */
    const char *reads[LK__MAX_SLOTS];
    for (uint32_t s = 0; s < ns; s++) {
        reads[s] = term->bound[s] ? term->bound[s] : names[s];
        for (uint32_t k = 0; k < s; k++)
            if (strcmp(reads[k], reads[s]) == 0)
                return fail(c, tpath,
                            "slots '%s' and '%s' of loss '%s' both read tensor '%s'; each slot "
                            "of a term needs a tensor of its own",
                            names[k], names[s], e->desc->id, reads[s]);
    }
    return LK_OK;
}

static lk_status parse_term(const ctx *c, const char *path, const cJSON *obj, lk__term *term,
                            int allow_weight)
{
    static const char *const term_keys[] = {"loss", "params", "weight", "tensors", "reduction"};
    static const char *const top_keys[] = {"loss", "params", "tensors", "reduction", "description"};
    if (!cJSON_IsObject(obj))
        return fail(c, path, "expected an object, got %s", json_type(obj));
    lk_status st = allow_weight ? check_keys(c, obj, path, term_keys, 4)
                                : check_keys(c, obj, path, top_keys, 5);
    if (st != LK_OK)
        return st;
    char lpath[224];
    snprintf(lpath, sizeof lpath, "%s.loss", path);
    const lk__entry *e = NULL;
    if ((st = lookup(c, lpath, cJSON_GetObjectItemCaseSensitive(obj, "loss"), &e)) != LK_OK)
        return st;
    term->weight = 1.0;
    const cJSON *w = allow_weight ? cJSON_GetObjectItemCaseSensitive(obj, "weight") : NULL;
    if (w) {
        char wpath[224];
        snprintf(wpath, sizeof wpath, "%s.weight", path);
        if (!cJSON_IsNumber(w))
            return fail(c, wpath, "expected a finite number, got %s", json_type(w));
        if (!isfinite(w->valuedouble)) {
            char xs[SHOWN_NUMBER + 1];
            declit lit;
            number_text(c, w, xs, &lit);
            return fail(c, wpath, "%s " DOUBLE_RANGE, xs);
        }
        term->weight = w->valuedouble;
    }
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(obj, "tensors");
    if (tensors)
        st = parse_tensors(c, path, tensors, e, term);
    if (st == LK_OK)
        st = build_term(c, path, e, cJSON_GetObjectItemCaseSensitive(obj, "params"), term);
    if (st != LK_OK) /* lk_loss_free sees only the terms that were built */
        for (uint32_t s = 0; s < LK__MAX_SLOTS; s++) {
            free(term->bound[s]);
            term->bound[s] = NULL;
        }
    return st;
}

/* "none, mean, sum": the reductions of mask, in their order. */
static const char *reductions_str(uint32_t mask, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t r = 0; r < LK_REDUCTION_COUNT && used < cap; r++)
        if (mask & LK_REDUCTION_BIT(r))
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? ", " : "",
                                     lk_reduction_name(r));
    return buf;
}

static lk_status parse_reduction(const ctx *c, const cJSON *v, lk_loss *loss)
{
    if (!v) {
        loss->reduction =
            loss->is_sum ? LK_REDUCTION_MEAN : loss->terms[0].entry->desc->default_reduction;
    } else {
        if (!cJSON_IsString(v))
            return fail(c, "$.reduction", "expected a string, got %s", json_type(v));
        loss->reduction = lk_reduction_from_name(v->valuestring);
        if (loss->reduction < 0) {
            /* the reductions every term offers (a sum has no 'none') */
            uint32_t mask = loss->is_sum ? ~LK_REDUCTION_BIT(LK_REDUCTION_NONE) : ~0u;
            for (size_t i = 0; i < loss->n_terms; i++)
                mask &= loss->terms[i].entry->desc->reductions;
            char offered[96];
            return fail(c, "$.reduction", "unknown reduction '%s' (%s offers: %s)", v->valuestring,
                        loss->is_sum ? "every term" : "this loss",
                        reductions_str(mask, offered, sizeof offered));
        }
    }
    if (loss->is_sum && loss->reduction == LK_REDUCTION_NONE)
        return fail(c, "$.reduction",
                    "'none' is not available for a weighted sum of losses; use mean or sum");
    for (size_t i = 0; i < loss->n_terms; i++) {
        const lk_loss_desc *d = loss->terms[i].entry->desc;
        if (d->reductions & LK_REDUCTION_BIT(loss->reduction))
            continue;
        char offered[96];
        return fail(c, "$.reduction", "loss '%s' does not offer reduction '%s' (it offers: %s)",
                    d->id, lk_reduction_name(loss->reduction),
                    reductions_str(d->reductions, offered, sizeof offered));
    }
    return LK_OK;
}

/* A tensor a binding makes a differentiable slot of one term and a slot
 * without a gradient of another would get a gradient that leaves the second
 * term out: a silent wrong number, refused. (Configs without bindings keep
 * the union rule: a slot name means one role everywhere.) */
static lk_status check_shared(const ctx *c, const lk_loss *loss)
{
    for (size_t i = 0; i < loss->n_terms; i++) {
        const lk__term *t = &loss->terms[i];
        for (uint32_t s = 0; s < t->entry->n_slots; s++) {
            if (!t->bound[s])
                continue;
            for (size_t j = 0; j < loss->n_terms; j++) {
                const lk__term *u = &loss->terms[j];
                for (uint32_t r = 0; r < u->entry->n_slots; r++) {
                    if (strcmp(lk__term_tensor(u, r), t->bound[s]) != 0)
                        continue;
                    int d1 = (t->entry->slots[s]->flags & LK_SLOT_DIFFERENTIABLE) != 0;
                    int d2 = (u->entry->slots[r]->flags & LK_SLOT_DIFFERENTIABLE) != 0;
                    if (d1 == d2)
                        continue;
                    /* only a weighted sum has two terms to disagree */
                    char path[96];
                    snprintf(path, sizeof path, "$.terms[%zu].tensors.%s", i,
                             t->entry->slots[s]->name);
                    return fail(c, path,
                                "tensor '%s' is read by slot '%s' of loss '%s' (%s) and by "
                                "slot '%s' of loss '%s' in $.terms[%zu] (%s): its gradient "
                                "would leave one of them out",
                                t->bound[s], t->entry->slots[s]->name, t->entry->desc->id,
                                d1 ? "differentiable" : "no gradient", u->entry->slots[r]->name,
                                u->entry->desc->id, j, d2 ? "differentiable" : "no gradient");
                }
            }
        }
    }
    return LK_OK;
}

static lk_status collect_slots(const ctx *c, lk_loss *loss)
{
    size_t cap = 0;
    for (size_t i = 0; i < loss->n_terms; i++)
        cap += loss->terms[i].entry->n_slots;
    loss->slots = calloc(cap, sizeof *loss->slots);
    if (!loss->slots)
        return out_of_memory(c);
    for (size_t i = 0; i < loss->n_terms; i++) {
        const lk__entry *e = loss->terms[i].entry;
        for (uint32_t s = 0; s < e->n_slots; s++) {
            const lk_slot_desc *sd = e->slots[s];
            const char *name = lk__term_tensor(&loss->terms[i], s);
            size_t k = 0;
            while (k < loss->n_slots && strcmp(loss->slots[k].desc->name, name) != 0)
                k++;
            if (k == loss->n_slots) {
                lk__slot *ls = &loss->slots[loss->n_slots++];
                ls->values = lk_slot_values_of(sd, s, e->module->plugin->abi_minor);
                /* the array never moves: desc may point into it */
                ls->named = *sd;
                ls->named.name = name;
                ls->desc = &ls->named;
            }
            loss->slots[k].required |= !(sd->flags & LK_SLOT_OPTIONAL);
            loss->slots[k].differentiable |= (sd->flags & LK_SLOT_DIFFERENTIABLE) != 0;
        }
    }
    return check_shared(c, loss);
}

static lk_status build_name(const ctx *c, lk_loss *loss)
{
    size_t cap = 1;
    for (size_t i = 0; i < loss->n_terms; i++)
        cap += strlen(loss->terms[i].entry->desc->id) + 40;
    loss->name = malloc(cap);
    if (!loss->name)
        return out_of_memory(c);
    if (!loss->is_sum) {
        snprintf(loss->name, cap, "%s", loss->terms[0].entry->desc->id);
        return LK_OK;
    }
    size_t used = 0;
    for (size_t i = 0; i < loss->n_terms; i++) {
        char w[32];
        lk__fmt_double(w, sizeof w, loss->terms[i].weight);
        used += (size_t)snprintf(loss->name + used, cap - used, "%s%s*%s", i ? " + " : "", w,
                                 loss->terms[i].entry->desc->id);
    }
    return LK_OK;
}

static lk_status parse_terms(const ctx *c, const cJSON *terms, lk_loss *loss)
{
    if (!cJSON_IsArray(terms))
        return fail(c, "$.terms", "expected an array of terms, got %s", json_type(terms));
    int n = cJSON_GetArraySize(terms);
    if (n < 1 || n > MAX_TERMS)
        return fail(c, "$.terms", "has %d terms; expected 1 to %d", n, MAX_TERMS);
    loss->terms = calloc((size_t)n, sizeof *loss->terms);
    if (!loss->terms)
        return out_of_memory(c);
    int i = 0;
    for (const cJSON *t = terms->child; t; t = t->next, i++) {
        char path[64];
        snprintf(path, sizeof path, "$.terms[%d]", i);
        lk_status st = parse_term(c, path, t, &loss->terms[i], 1);
        if (st != LK_OK)
            return st;
        loss->n_terms++;
    }
    return LK_OK;
}

static lk_status parse_root(const ctx *c, const cJSON *root, lk_loss *loss)
{
    static const char *const keys[] = {"loss",  "params",      "reduction",
                                       "terms", "description", "tensors"};
    if (!cJSON_IsObject(root))
        return fail(c, "$", "expected an object, got %s", json_type(root));
    lk_status st = check_keys(c, root, "$", keys, 6);
    if (st != LK_OK)
        return st;
    const cJSON *terms = cJSON_GetObjectItemCaseSensitive(root, "terms");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(root, "loss");
    if (terms && (single || cJSON_GetObjectItemCaseSensitive(root, "params") ||
                  cJSON_GetObjectItemCaseSensitive(root, "tensors")))
        return fail(c, "$",
                    "give either 'loss' (with 'params' and 'tensors') or 'terms', not both");
    if (!terms && !single)
        return fail(c, "$", "missing key 'loss' (or 'terms' for a weighted sum)");
    if (terms) {
        loss->is_sum = 1;
        st = parse_terms(c, terms, loss);
    } else {
        loss->terms = calloc(1, sizeof *loss->terms);
        if (!loss->terms)
            return out_of_memory(c);
        st = parse_term(c, "$", root, &loss->terms[0], 0);
        if (st == LK_OK)
            loss->n_terms = 1;
    }
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(root, "description");
    if (st == LK_OK && desc && !cJSON_IsString(desc))
        st = fail(c, "$.description", "expected a string, got %s", json_type(desc));
    if (st == LK_OK)
        st = parse_reduction(c, cJSON_GetObjectItemCaseSensitive(root, "reduction"), loss);
    if (st == LK_OK)
        st = collect_slots(c, loss);
    if (st == LK_OK)
        st = build_name(c, loss);
    return st;
}

/* Line and column of a byte offset, for JSON syntax errors. */
static void line_col(const char *text, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* One meaning per config: cJSON accepts, and we refuse, duplicate keys, NUL
 * characters in strings and bytes after the value.                          */

#define JPATH_CAP 256

/* A JSON path being built: "$", "$.params", "$.terms[0].loss". It is cut
 * (never overrun) when keys are very long; messages stay one line anyway. */
typedef struct jpath {
    char buf[JPATH_CAP];
    size_t len;
} jpath;

static size_t jpath_push(jpath *p, const char *fmt, ...) LK__PRINTF(2, 3);

static size_t jpath_push(jpath *p, const char *fmt, ...)
{
    size_t old = p->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->buf + p->len, sizeof p->buf - p->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        p->len += (size_t)n < sizeof p->buf - p->len ? (size_t)n : sizeof p->buf - 1 - p->len;
    return old;
}

static void jpath_pop(jpath *p, size_t old)
{
    p->len = old;
    p->buf[old] = '\0';
}

typedef struct keyref {
    const char *key;
    size_t index;
} keyref;

static int cmp_keyref(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The first member of obj (in document order) whose key an earlier member
 * already has, or NULL. Sorting keeps this O(n log n) for huge objects. */
static const cJSON *first_duplicate(const cJSON *obj, int *nomem)
{
    size_t n = 0;
    for (const cJSON *it = obj->child; it; it = it->next)
        n++;
    if (n < 2)
        return NULL;
    if (n <= 16) {
        for (const cJSON *it = obj->child->next; it; it = it->next)
            for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
                if (strcmp(prev->string, it->string) == 0)
                    return it;
        return NULL;
    }
    keyref *refs = malloc(n * sizeof *refs);
    const cJSON **members = malloc(n * sizeof *members);
    if (!refs || !members) {
        free(refs);
        free(members);
        *nomem = 1;
        return NULL;
    }
    size_t i = 0;
    for (const cJSON *it = obj->child; it; it = it->next, i++) {
        refs[i].key = it->string;
        refs[i].index = i;
        members[i] = it;
    }
    qsort(refs, n, sizeof *refs, cmp_keyref);
    size_t best = n;
    for (i = 1; i < n; i++)
        if (strcmp(refs[i].key, refs[i - 1].key) == 0 && refs[i].index < best)
            best = refs[i].index;
    const cJSON *dup = best < n ? members[best] : NULL;
    free(refs);
    free(members);
    return dup;
}

/* Refuses the first duplicate key, depth first in document order. cJSON
 * keeps every member, so {"gamma": 2, "gamma": -1} would otherwise run with
 * whichever one a lookup finds first. */
static lk_status check_duplicates(const ctx *c, const cJSON *v, jpath *path)
{
    if (cJSON_IsObject(v)) {
        int nomem = 0;
        const cJSON *dup = first_duplicate(v, &nomem);
        if (nomem)
            return out_of_memory(c);
        if (dup) {
            jpath_push(path, ".%s", dup->string);
            return fail(c, path->buf, "duplicate key '%s' (a key may appear once per object)",
                        dup->string);
        }
        for (const cJSON *it = v->child; it; it = it->next) {
            size_t old = jpath_push(path, ".%s", it->string);
            lk_status st = check_duplicates(c, it, path);
            if (st != LK_OK)
                return st;
            jpath_pop(path, old);
        }
    } else if (cJSON_IsArray(v)) {
        size_t i = 0;
        for (const cJSON *it = v->child; it; it = it->next, i++) {
            size_t old = jpath_push(path, "[%zu]", i);
            lk_status st = check_duplicates(c, it, path);
            if (st != LK_OK)
                return st;
            jpath_pop(path, old);
        }
    }
    return LK_OK;
}

/* The index, among the string tokens of the text (keys and values, in
 * document order), of the first that holds a NUL character: a raw 0 byte
 * or the escape \u0000. (size_t)-1 when none does. The text is valid JSON
 * (cJSON parsed it), so strings are the only place a '"' can appear. */
static size_t first_nul_string(const char *text, size_t len)
{
    size_t index = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '"')
            continue;
        int nul = 0;
        for (i++; i < len && text[i] != '"'; i++) {
            if (text[i] == '\0')
                nul = 1;
            if (text[i] == '\\' && i + 1 < len) {
                if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0)
                    nul = 1;
                i++;
            }
        }
        if (nul)
            return index;
        index++;
    }
    return (size_t)-1;
}

/* Finds string token number *k of the tree (keys and string values in
 * document order, as first_nul_string counts them); fills path with where
 * it is and *is_key. Returns 1 when found. */
static int nth_string(const cJSON *v, size_t *k, jpath *path, int *is_key)
{
    if (cJSON_IsString(v)) {
        if (*k == 0) {
            *is_key = 0;
            return 1;
        }
        (*k)--;
        return 0;
    }
    size_t i = 0;
    for (const cJSON *it = cJSON_IsObject(v) || cJSON_IsArray(v) ? v->child : NULL; it;
         it = it->next, i++) {
        size_t old =
            cJSON_IsObject(v) ? jpath_push(path, ".%s", it->string) : jpath_push(path, "[%zu]", i);
        if (cJSON_IsObject(v)) {
            if (*k == 0) {
                *is_key = 1;
                return 1;
            }
            (*k)--;
        }
        if (nth_string(it, k, path, is_key))
            return 1;
        jpath_pop(path, old);
    }
    return 0;
}

/* cJSON ends a string at a NUL, so "focal\u0000xyz" would read as "focal":
 * a reviewer and the runtime would see two different configs. */
static lk_status check_nuls(const ctx *c, const cJSON *root, const char *text, size_t len)
{
    size_t k = first_nul_string(text, len);
    if (k == (size_t)-1)
        return LK_OK;
    jpath path = {"$", 1};
    int is_key = 0;
    if (!nth_string(root, &k, &path, &is_key))
        return fail(c, "$", "a string contains a NUL character (\\u0000)");
    return fail(c, path.buf, "%s contains a NUL character (\\u0000), which configs do not allow",
                is_key ? "the key" : "the string");
}

/* The offset of the first byte after the value that is not white space, or
 * len when there is none. A NUL byte counts: it is not the end of the text. */
static size_t trailing_offset(const char *json, size_t len, size_t end)
{
    for (size_t i = end; i < len; i++)
        if (json[i] != ' ' && json[i] != '\t' && json[i] != '\n' && json[i] != '\r')
            return i;
    return len;
}

/* ------------------------------------------------------------------------ */
/* JSON syntax. cJSON takes more than JSON (01, 1., -.5, "\uZZZZ" as a NUL,
 * any byte below 0x21 as white space) and, where it stops, says neither
 * what it expected nor why. The config is read strictly first (RFC 8259,
 * with cJSON's leading UTF-8 BOM and its nesting limit); a refusal names
 * the place and what was expected there. Raw bytes in strings are left to
 * cJSON and check_nuls, as before.                                          */

#define JSON_NESTING_LIMIT 1000 /* cJSON's CJSON_NESTING_LIMIT */

typedef struct jsyn {
    const char *s;
    size_t n, pos;
    int depth;
    size_t err_pos;
    char err[160];
} jsyn;

/* A problem at pos: "expected X", or at the end of the text "unexpected
 * end of file (expected X)". Returns 0. */
static int jsyn_expected(jsyn *j, size_t pos, const char *what)
{
    j->err_pos = pos;
    unsigned char b = pos < j->n ? (unsigned char)j->s[pos] : 0;
    if (pos >= j->n)
        snprintf(j->err, sizeof j->err, "unexpected end of file (expected %s)", what);
    else if (b < 0x20 || b == 0x7f) /* white space in JSON is space, tab, CR and LF only */
        snprintf(j->err, sizeof j->err, "expected %s, found byte 0x%02x", what, b);
    else
        snprintf(j->err, sizeof j->err, "expected %s", what);
    return 0;
}

static int jsyn_bad(jsyn *j, size_t pos, const char *what)
{
    j->err_pos = pos;
    snprintf(j->err, sizeof j->err, "%s", what);
    return 0;
}

static void jsyn_ws(jsyn *j)
{
    while (j->pos < j->n && (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' || j->s[j->pos] == '\n' ||
                             j->s[j->pos] == '\r'))
        j->pos++;
}

static int jsyn_digit(const jsyn *j)
{
    return j->pos < j->n && is_digit(j->s[j->pos]);
}

static long hex4(const char *s)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char h = s[i];
        int d = is_digit(h)              ? h - '0'
                : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                         : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static int jsyn_string(jsyn *j)
{
    static const char surrogate[] =
        "a \\u escape holds half of a UTF-16 surrogate pair without the "
        "other half";
    j->pos++; /* the opening quote */
    for (;;) {
        if (j->pos >= j->n)
            return jsyn_expected(j, j->n, "'\"' to close a string");
        char ch = j->s[j->pos];
        if (ch == '"') {
            j->pos++;
            return 1;
        }
        if (ch != '\\') {
            j->pos++;
            continue;
        }
        size_t esc = j->pos;
        if (esc + 1 >= j->n)
            return jsyn_expected(j, j->n, "an escape after '\\'");
        char e = j->s[esc + 1];
        if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
            e == 't') {
            j->pos += 2;
            continue;
        }
        if (e != 'u')
            return jsyn_bad(
                j, esc,
                "invalid escape in a string (JSON has \\\" \\\\ \\/ \\b \\f \\n \\r \\t "
                "and \\uXXXX)");
        long u = esc + 6 <= j->n ? hex4(j->s + esc + 2) : -1;
        if (u < 0)
            return jsyn_bad(j, esc, "\\u in a string must be followed by 4 hex digits");
        j->pos = esc + 6;
        if (u >= 0xdc00 && u <= 0xdfff)
            return jsyn_bad(j, esc, surrogate);
        if (u >= 0xd800 && u <= 0xdbff) {
            long lo = j->pos + 6 <= j->n && j->s[j->pos] == '\\' && j->s[j->pos + 1] == 'u'
                          ? hex4(j->s + j->pos + 2)
                          : -1;
            if (lo < 0xdc00 || lo > 0xdfff)
                return jsyn_bad(j, esc, surrogate);
            j->pos += 6;
        }
    }
}

static int jsyn_number(jsyn *j)
{
    size_t start = j->pos;
    if (j->s[j->pos] == '-')
        j->pos++;
    if (!jsyn_digit(j))
        return jsyn_expected(j, j->pos, "a digit after '-'");
    if (j->s[j->pos] == '0') {
        j->pos++;
        if (jsyn_digit(j))
            return jsyn_bad(j, start,
                            "a number with a leading zero (JSON writes 1 or 0.5, not 01)");
    }
    while (jsyn_digit(j))
        j->pos++;
    if (j->pos < j->n && j->s[j->pos] == '.') {
        j->pos++;
        if (!jsyn_digit(j))
            return jsyn_expected(j, j->pos, "a digit after '.' in a number");
        while (jsyn_digit(j))
            j->pos++;
    }
    if (j->pos < j->n && (j->s[j->pos] == 'e' || j->s[j->pos] == 'E')) {
        j->pos++;
        if (j->pos < j->n && (j->s[j->pos] == '+' || j->s[j->pos] == '-'))
            j->pos++;
        if (!jsyn_digit(j))
            return jsyn_expected(j, j->pos, "a digit in the exponent of a number");
        while (jsyn_digit(j))
            j->pos++;
    }
    return 1;
}

#define JSON_VALUE "a value (a string, number, object, array, true, false or null)"

static int jsyn_word(jsyn *j, const char *w)
{
    size_t k = strlen(w), left = j->n - j->pos;
    if (left >= k && memcmp(j->s + j->pos, w, k) == 0) {
        j->pos += k;
        return 1;
    }
    /* "tru" at the end of the text: cut short, not misspelt */
    return jsyn_expected(j, left < k && memcmp(j->s + j->pos, w, left) == 0 ? j->n : j->pos,
                         JSON_VALUE);
}

static int jsyn_value(jsyn *j);

static int jsyn_container(jsyn *j)
{
    int object = j->s[j->pos] == '{';
    char close = object ? '}' : ']';
    if (j->depth >= JSON_NESTING_LIMIT)
        return jsyn_bad(j, j->pos,
                        "more than 1000 nested arrays and objects (the JSON reader's nesting "
                        "limit)");
    j->depth++;
    j->pos++;
    jsyn_ws(j);
    if (j->pos < j->n && j->s[j->pos] == close) {
        j->pos++;
        j->depth--;
        return 1;
    }
    for (int first = 1;; first = 0) {
        jsyn_ws(j);
        int at_close = j->pos < j->n && j->s[j->pos] == close;
        if (!first && at_close)
            return jsyn_bad(j, j->pos,
                            object ? "expected a key after ',' (JSON allows no ',' before '}')"
                                   : "expected a value after ',' (JSON allows no ',' before ']')");
        if (object) {
            if (j->pos >= j->n || j->s[j->pos] != '"')
                return jsyn_expected(j, j->pos,
                                     first ? "a key (a string in double quotes) or '}'"
                                           : "a key (a string in double quotes) after ','");
            if (!jsyn_string(j))
                return 0;
            jsyn_ws(j);
            if (j->pos >= j->n || j->s[j->pos] != ':')
                return jsyn_expected(j, j->pos, "':' after a key");
            j->pos++;
        }
        if (!jsyn_value(j))
            return 0;
        jsyn_ws(j);
        if (j->pos < j->n && j->s[j->pos] == ',') {
            j->pos++;
            continue;
        }
        if (j->pos < j->n && j->s[j->pos] == close) {
            j->pos++;
            j->depth--;
            return 1;
        }
        return jsyn_expected(j, j->pos,
                             object ? "',' or '}' after a value in an object"
                                    : "',' or ']' after a value in an array");
    }
}

static int jsyn_value(jsyn *j)
{
    jsyn_ws(j);
    if (j->pos >= j->n)
        return jsyn_expected(j, j->n, "a value");
    char ch = j->s[j->pos];
    switch (ch) {
    case '{':
    case '[': return jsyn_container(j);
    case '"': return jsyn_string(j);
    case 't': return jsyn_word(j, "true");
    case 'f': return jsyn_word(j, "false");
    case 'n': return jsyn_word(j, "null");
    default:
        if (ch == '-' || is_digit(ch))
            return jsyn_number(j);
        return jsyn_expected(j, j->pos, JSON_VALUE);
    }
}

/* Checks the first JSON value of the text (bytes after it are the
 * caller's); 0 with j->err and j->err_pos when it is not valid JSON. */
static int json_syntax(jsyn *j, const char *s, size_t n)
{
    memset(j, 0, sizeof *j);
    j->s = s;
    j->n = n;
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        j->pos = 3; /* a UTF-8 byte order mark, which cJSON skips too */
    return jsyn_value(j);
}

/* ------------------------------------------------------------------------ */
/* The literal of every number in the tree: the text's number tokens and
 * the tree's number nodes, both in document order.                          */

typedef struct litscan {
    const char *s;
    size_t n, pos;
    numlit *v;
    size_t count, cap;
    int nomem;
} litscan;

/* The next number token at or after ls->pos of valid JSON text. */
static int next_number(litscan *ls, size_t *off, size_t *len)
{
    size_t i = ls->pos;
    while (i < ls->n) {
        char ch = ls->s[i];
        if (ch == '"') {
            for (i++; i < ls->n && ls->s[i] != '"'; i++)
                if (ls->s[i] == '\\')
                    i++;
            i++;
            continue;
        }
        if (ch == '-' || is_digit(ch)) {
            size_t start = i;
            while (i < ls->n && (is_digit(ls->s[i]) || ls->s[i] == '-' || ls->s[i] == '+' ||
                                 ls->s[i] == '.' || ls->s[i] == 'e' || ls->s[i] == 'E'))
                i++;
            *off = start;
            *len = i - start;
            ls->pos = i;
            return 1;
        }
        i++;
    }
    ls->pos = i;
    return 0;
}

static void collect_numbers(litscan *ls, const cJSON *v)
{
    if (ls->nomem)
        return;
    if (cJSON_IsNumber(v)) {
        size_t off, len;
        if (!next_number(ls, &off, &len))
            return;
        if (ls->count == ls->cap) {
            size_t cap = ls->cap ? 2 * ls->cap : 16;
            numlit *grown = realloc(ls->v, cap * sizeof *grown);
            if (!grown) {
                ls->nomem = 1;
                return;
            }
            ls->v = grown;
            ls->cap = cap;
        }
        ls->v[ls->count++] = (numlit){v, off, len};
        return;
    }
    if (cJSON_IsArray(v) || cJSON_IsObject(v))
        for (const cJSON *it = v->child; it; it = it->next)
            collect_numbers(ls, it);
}

static lk_status syntax_error(const ctx *c, const char *json, size_t len, size_t off,
                              const char *what)
{
    int line, col;
    line_col(json, off, &line, &col);
    /* nothing to quote: what says "unexpected end of file" or "found byte
     * 0x0c" */
    if (off >= len || (strstr(what, ", found byte 0x") && (unsigned char)json[off] < 0x20))
        return lk__err(c->errmsg, LK_ERR_CONFIG, "%s:%d:%d: invalid JSON%s", c->source, line, col,
                       what);
    char near[17];
    size_t k = 0;
    while (k < 16 && off + k < len && (unsigned char)json[off + k] >= 0x20)
        k++;
    memcpy(near, json + off, k);
    near[k] = '\0';
    return lk__err(c->errmsg, LK_ERR_CONFIG, "%s:%d:%d: invalid JSON%s near '%s'", c->source, line,
                   col, what, near);
}

lk_status lk_loss_from_json(lk_runtime *rt, const char *json, size_t len, const char *source,
                            lk_loss **out, char *errmsg)
{
    char shown[LK__PATH_BUF];
    ctx c = {rt, lk__short_path(shown, source ? source : "<config>"), errmsg, json, NULL, 0};
    *out = NULL;
    jsyn syn;
    if (!json_syntax(&syn, json, len)) {
        char what[sizeof syn.err + 2];
        snprintf(what, sizeof what, ": %s", syn.err);
        return syntax_error(&c, json, len, syn.err_pos, what);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) /* JSON that json_syntax took (its depth limit is cJSON's): out of memory */
        return out_of_memory(&c);
    size_t off = trailing_offset(json, len, (size_t)(end - json));
    lk_status st = LK_OK;
    if (off < len) {
        char what[96];
        snprintf(what, sizeof what, ": bytes after the JSON value at offset %zu", off);
        st = syntax_error(&c, json, len, off, what);
    }
    jpath path = {"$", 1};
    if (st == LK_OK)
        st = check_duplicates(&c, root, &path);
    if (st == LK_OK)
        st = check_nuls(&c, root, json, (size_t)(end - json));
    litscan ls = {json, (size_t)(end - json), 0, NULL, 0, 0, 0};
    if (st == LK_OK) {
        collect_numbers(&ls, root);
        if (ls.nomem)
            st = out_of_memory(&c);
        else if (ls.count > 1)
            qsort(ls.v, ls.count, sizeof *ls.v, cmp_numlit);
        c.lits = ls.v;
        c.n_lits = ls.count;
    }
    if (st != LK_OK) {
        free(ls.v);
        cJSON_Delete(root);
        return st;
    }
    lk_loss *loss = calloc(1, sizeof *loss);
    if (!loss) {
        free(ls.v);
        cJSON_Delete(root);
        return out_of_memory(&c);
    }
    loss->rt = rt;
    __atomic_add_fetch(&rt->refs, 1, __ATOMIC_RELAXED);
    st = parse_root(&c, root, loss);
    free(ls.v);
    cJSON_Delete(root);
    if (st != LK_OK) {
        lk_loss_free(loss);
        return st;
    }
    *out = loss;
    return LK_OK;
}

lk_status lk_loss_from_file(lk_runtime *rt, const char *path, lk_loss **out, char *errmsg)
{
    *out = NULL;
    char shown_buf[LK__PATH_BUF];
    const char *shown = lk__short_path(shown_buf, path); /* for messages */
    char why[128];
    int fd = lk__open_regular(path, NULL, why, sizeof why);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0) {
            snprintf(why, sizeof why, "%s", strerror(errno));
            close(fd);
        }
        return lk__err(errmsg, LK_ERR_IO, "%s: cannot open config: %s", shown, why);
    }
    char *buf = malloc(MAX_CONFIG_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_CONFIG_BYTES + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    lk_status st;
    if (!buf)
        st = lk__err(errmsg, LK_ERR_NOMEM, "%s: out of memory", shown);
    else if (bad)
        st = lk__err(errmsg, LK_ERR_IO, "%s: read error", shown);
    else if (n > MAX_CONFIG_BYTES)
        st = lk__err(errmsg, LK_ERR_CONFIG, "%s: config larger than %u bytes", shown,
                     MAX_CONFIG_BYTES);
    else {
        buf[n] = '\0';
        st = lk_loss_from_json(rt, buf, n, path, out, errmsg);
    }
    free(buf);
    return st;
}

void lk_loss_free(lk_loss *loss)
{
    if (!loss)
        return;
    for (size_t i = 0; i < loss->n_terms; i++) {
        if (loss->terms[i].instance && loss->terms[i].entry->impl->destroy)
            loss->terms[i].entry->impl->destroy(loss->terms[i].instance);
        for (uint32_t s = 0; s < LK__MAX_SLOTS; s++)
            free(loss->terms[i].bound[s]);
    }
    free(loss->terms);
    free(loss->slots);
    free(loss->name);
    lk_runtime *rt = loss->rt;
    free(loss);
    lk__runtime_release(rt);
}

int32_t lk_loss_reduction(const lk_loss *loss)
{
    return loss->reduction;
}

const char *lk_loss_name(const lk_loss *loss)
{
    return loss->name;
}

void lk_loss_traffic(const lk_loss *loss, int32_t backward, int32_t *input_reads,
                     int32_t *grad_accesses)
{
    int32_t reads = 0, grads = 0;
    for (size_t i = 0; i < loss->n_terms; i++) {
        int32_t flags = loss->terms[i].entry->desc->flags;
        int two_pass = !(flags & (LK_LOSS_FUSED | LK_LOSS_WHOLE));
        reads += backward && two_pass ? 2 : 1;
        if (backward)
            grads += grads == 0 ? 1 : 2;
    }
    *input_reads = reads;
    *grad_accesses = grads;
}

size_t lk_loss_slot_count(const lk_loss *loss)
{
    return loss->n_slots;
}

lk_status lk_loss_slot_at(const lk_loss *loss, size_t i, const lk_slot_desc **desc,
                          int32_t *required, int32_t *differentiable)
{
    if (i >= loss->n_slots)
        return LK_ERR_NOT_FOUND;
    if (desc)
        *desc = loss->slots[i].desc;
    if (required)
        *required = loss->slots[i].required;
    if (differentiable)
        *differentiable = loss->slots[i].differentiable;
    return LK_OK;
}

int32_t lk_loss_slot_values(const lk_loss *loss, size_t i)
{
    return i < loss->n_slots ? loss->slots[i].values : LK_VALUES_DEFAULT;
}

const char *lk_loss_term_tensor(const lk_loss *loss, size_t term, size_t slot)
{
    if (term >= loss->n_terms || slot >= loss->terms[term].entry->n_slots)
        return NULL;
    return lk__term_tensor(&loss->terms[term], (uint32_t)slot);
}

int lk_loss_takes_whole_batch(const lk_loss *loss)
{
    for (size_t i = 0; i < loss->n_terms; i++)
        if (loss->terms[i].entry->desc->flags & LK_LOSS_WHOLE)
            return 1;
    return 0;
}

static const char *views_word(uint32_t views)
{
    return views == 1 ? "view" : "views";
}

lk_status lk_loss_batch_at(const lk_loss *loss, size_t i, int32_t *dim, uint32_t *views,
                           int32_t *padded, char *errmsg)
{
    char scratch[LK_ERRMSG_CAP];
    if (!errmsg)
        errmsg = scratch;
    errmsg[0] = '\0';
    if (i >= loss->n_slots)
        return lk__err(errmsg, LK_ERR_NOT_FOUND, "loss '%s' has no tensor %zu", loss->name, i);
    const char *name = loss->slots[i].desc->name;
    int32_t d0 = 0, p0 = 0;
    uint32_t v0 = 1;
    size_t first = SIZE_MAX;
    for (size_t k = 0; k < loss->n_terms; k++) {
        const lk__term *t = &loss->terms[k];
        const lk__entry *e = t->entry;
        for (uint32_t s = 0; s < e->n_slots; s++) {
            if (strcmp(lk__term_tensor(t, s), name) != 0)
                continue;
            uint32_t v;
            int32_t p, d = lk_slot_batch_of(e->slots[s], e->module->plugin->abi_minor, &v, &p);
            if (d < 0) {
                if (e->desc->flags & LK_LOSS_WHOLE)
                    return lk__err(errmsg, LK_ERR_UNSUPPORTED,
                                   "loss '%s' (ABI 1.%u) declares no batch dim for slot '%s': "
                                   "its batch cannot be gathered across processes",
                                   e->desc->id, e->module->plugin->abi_minor, e->slots[s]->name);
                d = 0; /* a loss split through statistics: its batch is dim 0 */
            }
            if (first == SIZE_MAX) {
                d0 = d, v0 = v, p0 = p, first = k;
            } else if (d != d0 || v != v0 || p != p0) {
                return lk__err(errmsg, LK_ERR_UNSUPPORTED,
                               "tensor '%s': term %zu ('%s') gathers it along dim %d in %u %s%s, "
                               "term %zu ('%s') along dim %d in %u %s%s",
                               name, first + 1, loss->terms[first].entry->desc->id, (int)d0, v0,
                               views_word(v0), p0 ? ", padded" : "", k + 1, e->desc->id, (int)d, v,
                               views_word(v), p ? ", padded" : "");
            }
        }
    }
    if (dim)
        *dim = d0;
    if (views)
        *views = v0;
    if (padded)
        *padded = p0;
    return LK_OK;
}

int lk_loss_has_example(const lk_loss *loss)
{
    if (loss->n_terms != 1)
        return 0;
    const lk__entry *e = loss->terms[0].entry;
    /* a plugin of ABI 1.0 has no such member: never read past its struct */
    return e->module->plugin->abi_minor >= 1 && e->desc->example != NULL;
}

lk_status lk_loss_example(const lk_loss *loss, int32_t k, int32_t dtype, uint64_t seed,
                          lk_tensor *slots, char *errmsg)
{
    char scratch[LK_ERRMSG_CAP];
    if (!errmsg)
        errmsg = scratch;
    errmsg[0] = '\0';
    if (!lk_loss_has_example(loss))
        return lk__err(errmsg, LK_ERR_UNSUPPORTED, "loss '%s' offers no example data", loss->name);
    const lk__term *t = &loss->terms[0];
    char msg[LK_ERRMSG_CAP / 2] = "";
    lk_msg m = {msg, sizeof msg};
    lk_status st = t->entry->impl->example(t->instance, k, dtype, seed, slots, &m);
    if (st != LK_OK && st != LK_ERR_NOT_FOUND)
        return lk__err(errmsg, st, "loss '%s': example %d: %s", t->entry->desc->id, (int)k,
                       msg[0] ? msg : lk_status_text(st));
    return st;
}
