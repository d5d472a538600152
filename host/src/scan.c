/* scan.c: the checks every plugin must pass, and the record that carries a
 * plugin's descriptors from the scanner process (losskit-scan) to the
 * runtime and its cache (scan.h). Compiled into both. */
#include "scan.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_ID_LEN LK_MAX_ID_LEN

/* ------------------------------------------------------------------------ */
/* Buffers and arenas                                                        */

void lk__buf_add(lk__buf *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void lk__buf_printf(lk__buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        lk__buf_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    lk__buf_add(b, big, (size_t)n);
    free(big);
}

void lk__buf_str(lk__buf *b, const char *s)
{
    if (!s) {
        lk__buf_add(b, "- ", 2);
        return;
    }
    size_t n = strlen(s);
    lk__buf_printf(b, "%zu:", n);
    lk__buf_add(b, s, n);
    lk__buf_add(b, " ", 1);
}

void lk__buf_free(lk__buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

struct lk__chunk {
    struct lk__chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *lk__arena_alloc(lk__arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct lk__chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        c = calloc(1, sizeof *c + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void lk__arena_free(lk__arena *a)
{
    while (a->head) {
        struct lk__chunk *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/* ------------------------------------------------------------------------ */
/* The checks                                                                */

static int valid_name(const char *s)
{
    if (!s || !*s || strnlen(s, MAX_ID_LEN + 1) > MAX_ID_LEN)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* Why a name is not valid, or NULL. what is "id" or "name". */
static const char *name_problem(const char *s, const char *what, char *buf, size_t cap)
{
    if (valid_name(s))
        return NULL;
    size_t n = s ? strlen(s) : 0;
    if (n > MAX_ID_LEN)
        snprintf(buf, cap, "its %s has %zu characters; at most %d are allowed", what, n,
                 MAX_ID_LEN);
    else
        snprintf(buf, cap, "its %s is not [a-z0-9_]+ (at most %d characters)", what, MAX_ID_LEN);
    return buf;
}

/* A name as messages quote it: one longer than the limit is cut, and says
 * how long it is, so that the reason after it is never lost. */
static const char *shown_name(const char *s, char *buf, size_t cap)
{
    if (!s)
        return "(null)";
    size_t n = strlen(s);
    if (n <= MAX_ID_LEN)
        return s;
    snprintf(buf, cap, "%.*s... (%zu characters)", MAX_ID_LEN, s, n);
    return buf;
}

static int in_bounds(const lk_param_desc *p, double v)
{
    if (v < p->min || v > p->max)
        return 0;
    if ((p->flags & LK_PARAM_MIN_EXCLUSIVE) && v == p->min)
        return 0;
    if ((p->flags & LK_PARAM_MAX_EXCLUSIVE) && v == p->max)
        return 0;
    return 1;
}

/* Checks one parameter declaration of a plugin of ABI 1.minor; returns a
 * problem or NULL. */
static const char *check_param(const lk_param_desc *p, uint32_t minor, char *buf, size_t cap)
{
    const char *bad = name_problem(p->name, "name", buf, cap);
    if (bad)
        return bad;
    if (!p->doc)
        return "it has no doc";
    const char *unset = lk_param_unset_of(p, minor);
    if (unset && !*unset)
        return "its unset text is empty";
    for (const char *c = unset; c && *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return "its unset text is not one line (it holds a control character)";
    if (p->min != p->min || p->max != p->max)
        return "its min or max is NaN";
    if (p->min > p->max)
        return "its min exceeds its max";
    switch (p->type) {
    case LK_PARAM_NUMBER:
    case LK_PARAM_INTEGER:
        /* the checker's rule, now the loader's: a config that says nothing
         * must get a value a config could have given */
        if (!isfinite(p->default_number))
            return "its default is not a finite number (NaN or infinite)";
        if (!in_bounds(p, p->default_number))
            return "its default is outside its range";
        if (p->type == LK_PARAM_INTEGER && p->default_number != floor(p->default_number))
            return "it is an integer with a fractional default";
        if (p->type == LK_PARAM_INTEGER && !(p->default_number >= -9223372036854775808.0 &&
                                             p->default_number < 9223372036854775808.0))
            return "it is an integer whose default is outside the 64-bit range";
        return NULL;
    case LK_PARAM_BOOL:
        return p->default_number == 0 || p->default_number == 1
                   ? NULL
                   : "it is a boolean whose default is not 0 or 1";
    case LK_PARAM_CHOICE:
        if (!p->choices || !p->choices[0] || !p->default_choice)
            return "it is a choice without choices or default";
        for (const char *const *c = p->choices; *c; c++)
            if (strcmp(*c, p->default_choice) == 0)
                return NULL;
        return "its default is not among its choices";
    case LK_PARAM_NUMBER_LIST:
        if (p->default_list_len < 0 || (p->default_list_len > 0 && !p->default_list))
            return "its default list is malformed";
        if (p->list_min_len < 0 || (p->list_max_len >= 0 && p->list_max_len < p->list_min_len))
            return "its list length bounds are malformed";
        for (int32_t i = 0; i < p->default_list_len; i++) {
            if (!isfinite(p->default_list[i]))
                return "its default list has an item that is not a finite number";
            if (!in_bounds(p, p->default_list[i]))
                return "its default list has items outside its range";
        }
        return NULL;
    default: return "its type is unknown";
    }
}

static const char *check_slot(const lk_slot_desc *s, uint32_t index, uint32_t minor, char *buf,
                              size_t cap)
{
    const uint32_t known = LK_DTYPE_BIT(LK_DTYPE_F32) | LK_DTYPE_BIT(LK_DTYPE_F64) |
                           LK_DTYPE_BIT(LK_DTYPE_I64) | LK_DTYPE_BIT(LK_DTYPE_I32) |
                           LK_DTYPE_BIT(LK_DTYPE_U8) | LK_DTYPE_BIT(LK_DTYPE_BOOL);
    const char *bad = name_problem(s->name, "name", buf, cap);
    if (bad)
        return bad;
    if (!s->dtypes || (s->dtypes & ~known))
        return "it accepts no dtype or an unknown one";
    if (s->shape < LK_SHAPE_ANY || s->shape > LK_SHAPE_INPUT_NO_CHANNEL)
        return "its shape rule is unknown";
    if (index == 0 && s->shape == LK_SHAPE_INPUT_NO_CHANNEL)
        return "slot 0 cannot have a shape rule relative to itself";
    if (index == 0 && (s->flags & LK_SLOT_OPTIONAL))
        return "slot 0 cannot be optional";
    if ((s->flags & LK_SLOT_DIFFERENTIABLE) && (s->dtypes & ~LK_DTYPES_FLOAT))
        return "it is differentiable but accepts non-float dtypes";
    if (minor >= 1 && (s->values < LK_VALUES_DEFAULT || s->values > LK_VALUES_LAST))
        return "its values kind is unknown";
    if (lk_slot_ndims_of(s, minor) & ~LK_NDIM_ANY) {
        snprintf(buf, cap, "its ndims mask (0x%x) names more than %d dimensions", s->ndims,
                 LK_MAX_NDIM);
        return buf;
    }
    if (minor >= 6) {
        if (s->batch < LK_BATCH_UNDECLARED || s->batch > LK_BATCH_DIM(LK_MAX_NDIM - 1)) {
            snprintf(buf, cap,
                     "its batch (%d) is neither LK_BATCH_UNDECLARED nor "
                     "LK_BATCH_DIM(d) of a dim d below %d",
                     (int)s->batch, LK_MAX_NDIM);
            return buf;
        }
        if (s->batch_views > LK_MAX_BATCH_VIEWS) {
            snprintf(buf, cap, "its batch_views (%u) is more than %d", s->batch_views,
                     LK_MAX_BATCH_VIEWS);
            return buf;
        }
        if (s->batch == LK_BATCH_UNDECLARED && (s->batch_views > 1 || (s->flags & LK_SLOT_PADDED)))
            return "it has batch_views or LK_SLOT_PADDED but no batch dim";
        uint32_t ndims = lk_slot_ndims_of(s, minor);
        if (s->batch != LK_BATCH_UNDECLARED && ndims && !(ndims >> s->batch)) {
            snprintf(buf, cap, "its batch dim %d is beyond every rank it accepts",
                     (int)s->batch - 1);
            return buf;
        }
    }
    return NULL;
}

static const char *named(char *buf, size_t cap, const char *what, const char *name,
                         const char *problem)
{
    char shown[MAX_ID_LEN + 48];
    snprintf(buf, cap, "%s '%s': %s", what, shown_name(name, shown, sizeof shown), problem);
    return buf;
}

/* Checks a loss descriptor; returns a problem or NULL. */
static const char *check_loss(const lk_loss_desc *d, uint32_t minor)
{
    static _Thread_local char why[256];
    char problem[128];
    const char *bad = name_problem(d->id, "id", why, sizeof why);
    if (bad)
        return bad;
    if (!d->summary || !d->version)
        return "it has no summary or no version";
    /* Counting stops past the limit: a descriptor that claims 100,000
     * parameters costs no more than one that claims 257, and the limit
     * keeps the pairwise name check below (quadratic) at 256 x 255 / 2. */
    uint32_t np = 0, ns = 0;
    while (d->params && d->params[np] && np <= LK_MAX_PARAMS)
        np++;
    while (d->slots && d->slots[ns] && ns <= LK__MAX_SLOTS)
        ns++;
    if (ns == 0)
        return "it declares no tensor slots";
    if (ns > LK__MAX_SLOTS)
        return "it declares more than 16 tensor slots";
    if (np > LK_MAX_PARAMS) {
        snprintf(why, sizeof why, "it declares more than %d parameters (LK_MAX_PARAMS)",
                 LK_MAX_PARAMS);
        return why;
    }
    const uint32_t known_red = (1u << LK_REDUCTION_COUNT) - 1;
    if (!d->reductions)
        return "it offers no reduction (reductions is 0)";
    if (d->reductions & ~known_red) {
        snprintf(why, sizeof why,
                 "its reductions mask 0x%x has bits no reduction has (known: 0x%x)",
                 (unsigned)d->reductions, (unsigned)known_red);
        return why;
    }
    if (d->default_reduction < 0 || d->default_reduction >= LK_REDUCTION_COUNT) {
        snprintf(why, sizeof why, "its default reduction %d is no reduction (0 to %d)",
                 (int)d->default_reduction, LK_REDUCTION_COUNT - 1);
        return why;
    }
    if (!(d->reductions & LK_REDUCTION_BIT(d->default_reduction))) {
        snprintf(why, sizeof why, "its default reduction '%s' is not one it offers",
                 lk_reduction_name(d->default_reduction));
        return why;
    }
    if (d->flags & ~(LK_LOSS_FUSED | LK_LOSS_WHOLE | LK_LOSS_UNBOUNDED))
        return "it sets unknown loss flags";
    int has_diff = 0;
    for (uint32_t i = 0; i < ns; i++) {
        const char *p = check_slot(d->slots[i], i, minor, problem, sizeof problem);
        if (p)
            return named(why, sizeof why, "slot", d->slots[i]->name, p);
        has_diff |= (d->slots[i]->flags & LK_SLOT_DIFFERENTIABLE) != 0;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(d->slots[i]->name, d->slots[j]->name) == 0)
                return "two of its slots have the same name";
    }
    for (uint32_t i = 0; i < np; i++) {
        const char *p = check_param(d->params[i], minor, problem, sizeof problem);
        if (p)
            return named(why, sizeof why, "parameter", d->params[i]->name, p);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(d->params[i]->name, d->params[j]->name) == 0)
                return "two of its parameters have the same name";
    }
    if ((d->create == NULL) != (d->destroy == NULL))
        return "it sets only one of create and destroy";
    if (d->flags & LK_LOSS_WHOLE) {
        if (!d->whole)
            return "the required function whole is NULL (LK_LOSS_WHOLE is set)";
    } else {
        if (!d->forward)
            return "the required function forward is NULL";
        if (has_diff && !(d->flags & LK_LOSS_FUSED) && !d->backward)
            return "the required function backward is NULL (required unless LK_LOSS_FUSED)";
    }
    return NULL;
}

const char *lk__validate_plugin(const lk_plugin *pl, char *why, size_t cap)
{
    size_t n = 0;
    while (pl->losses && pl->losses[n])
        n++;
    if (!pl->name || !pl->version) {
        snprintf(why, cap, "plugin descriptor lacks a name or version");
        return why;
    }
    if (n == 0) {
        snprintf(why, cap, "plugin '%s' declares no losses", pl->name);
        return why;
    }
    for (size_t i = 0; i < n; i++) {
        const char *problem = check_loss(pl->losses[i], pl->abi_minor);
        char shown[MAX_ID_LEN + 48];
        const char *id = shown_name(pl->losses[i]->id, shown, sizeof shown);
        for (size_t j = 0; !problem && j < i; j++)
            if (strcmp(pl->losses[j]->id, pl->losses[i]->id) == 0)
                problem = "the plugin declares this loss id twice";
        if (problem) {
            snprintf(why, cap, "loss '%s': %s; plugin refused", id, problem);
            return why;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The record                                                                */

enum {
    FN_CREATE = 1u << 0,
    FN_DESTROY = 1u << 1,
    FN_PLAN = 1u << 2,
    FN_FORWARD = 1u << 3,
    FN_FINALIZE = 1u << 4,
    FN_BACKWARD = 1u << 5,
    FN_WHOLE = 1u << 6,
    FN_EXAMPLE = 1u << 7,
    FN_PARTIALS = 1u << 8,
};

uint32_t lk__scan_fn_mask(const lk_loss_desc *d, uint32_t abi_minor)
{
    uint32_t m = 0;
    m |= d->create ? FN_CREATE : 0;
    m |= d->destroy ? FN_DESTROY : 0;
    m |= d->plan ? FN_PLAN : 0;
    m |= d->forward ? FN_FORWARD : 0;
    m |= d->finalize ? FN_FINALIZE : 0;
    m |= d->backward ? FN_BACKWARD : 0;
    m |= d->whole ? FN_WHOLE : 0;
    /* a plugin of ABI 1.0 has no such member: never read past its struct */
    m |= abi_minor >= 1 && d->example ? FN_EXAMPLE : 0;
    m |= abi_minor >= 5 && d->partials ? FN_PARTIALS : 0;
    return m;
}

/* Doubles as their bits in hex: exact, and free of the locale's decimal
 * point (an embedding application may have set LC_NUMERIC). */
static void put_double(lk__buf *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    lk__buf_printf(b, "%llx ", (unsigned long long)bits);
}

static void write_param(const lk_param_desc *p, uint32_t minor, lk__buf *b)
{
    lk__buf_add(b, "A ", 2);
    lk__buf_str(b, p->name);
    lk__buf_str(b, p->doc);
    lk__buf_str(b, lk_param_unset_of(p, minor));
    lk__buf_printf(b, "%d %u ", p->type, p->flags);
    put_double(b, p->default_number);
    put_double(b, p->min);
    put_double(b, p->max);
    if (p->type == LK_PARAM_CHOICE) {
        size_t n = 0;
        while (p->choices[n])
            n++;
        lk__buf_printf(b, "%zu ", n);
        for (size_t i = 0; i < n; i++)
            lk__buf_str(b, p->choices[i]);
        lk__buf_str(b, p->default_choice);
    } else {
        lk__buf_add(b, "0 - ", 4);
    }
    if (p->type == LK_PARAM_NUMBER_LIST) {
        lk__buf_printf(b, "%d ", p->default_list_len);
        for (int32_t i = 0; i < p->default_list_len; i++)
            put_double(b, p->default_list[i]);
        lk__buf_printf(b, "%d %d\n", p->list_min_len, p->list_max_len);
    } else {
        lk__buf_add(b, "0 0 0\n", 6);
    }
}

void lk__scan_write(const lk_plugin *pl, lk__buf *b)
{
    size_t n = 0;
    while (pl->losses[n])
        n++;
    lk__buf_printf(b, "P %u %u ", pl->abi_major, pl->abi_minor);
    lk__buf_str(b, pl->name);
    lk__buf_str(b, pl->version);
    lk__buf_str(b, pl->summary);
    lk__buf_printf(b, "%zu\n", n);
    for (size_t i = 0; i < n; i++) {
        const lk_loss_desc *d = pl->losses[i];
        uint32_t np = 0, ns = 0;
        while (d->params && d->params[np])
            np++;
        while (d->slots[ns])
            ns++;
        lk__buf_add(b, "L ", 2);
        lk__buf_str(b, d->id);
        lk__buf_str(b, d->summary);
        lk__buf_str(b, d->version);
        lk__buf_printf(b, "%u %d %u %u %u %u\n", d->reductions, d->default_reduction, d->flags,
                       lk__scan_fn_mask(d, pl->abi_minor), np, ns);
        for (uint32_t k = 0; k < np; k++)
            write_param(d->params[k], pl->abi_minor, b);
        for (uint32_t k = 0; k < ns; k++) {
            const lk_slot_desc *s = d->slots[k];
            lk__buf_add(b, "S ", 2);
            lk__buf_str(b, s->name);
            lk__buf_str(b, s->doc);
            uint32_t views;
            int32_t batch = lk_slot_batch_of(s, pl->abi_minor, &views, NULL);
            lk__buf_printf(b, "%u %u %d %d %u %d %u\n", s->dtypes,
                           pl->abi_minor >= 6 ? s->flags : s->flags & ~LK_SLOT_PADDED, s->shape,
                           pl->abi_minor >= 1 ? s->values : LK_VALUES_DEFAULT,
                           lk_slot_ndims_of(s, pl->abi_minor), batch + 1, batch >= 0 ? views : 0u);
        }
    }
}

/* The reader: every token is followed by one space or newline; anything
 * else makes the whole record malformed. */
typedef struct reader {
    const char *p, *end;
    lk__arena *arena;
    int bad;
} reader;

static int rd_sep(reader *r)
{
    if (r->p < r->end && (*r->p == ' ' || *r->p == '\n')) {
        r->p++;
        return 1;
    }
    r->bad = 1;
    return 0;
}

/* A token into tmp (cap bytes), or "" after setting bad. */
static const char *rd_token(reader *r, char *tmp, size_t cap)
{
    size_t n = 0;
    while (r->p + n < r->end && r->p[n] != ' ' && r->p[n] != '\n' && n + 1 < cap)
        n++;
    if (n == 0 || r->p + n >= r->end || (r->p[n] != ' ' && r->p[n] != '\n')) {
        r->bad = 1;
        tmp[0] = '\0';
        return tmp;
    }
    memcpy(tmp, r->p, n);
    tmp[n] = '\0';
    r->p += n;
    rd_sep(r);
    return tmp;
}

static void rd_word(reader *r, const char *want)
{
    char tmp[8];
    if (!r->bad && strcmp(rd_token(r, tmp, sizeof tmp), want) != 0)
        r->bad = 1;
}

static long long rd_int(reader *r, long long lo, long long hi)
{
    char tmp[32], *end;
    if (r->bad)
        return 0;
    const char *t = rd_token(r, tmp, sizeof tmp);
    long long v = strtoll(t, &end, 10);
    if (r->bad || *end || end == t || v < lo || v > hi) {
        r->bad = 1;
        return 0;
    }
    return v;
}

static double rd_double(reader *r)
{
    char tmp[64], *end;
    if (r->bad)
        return 0;
    const char *t = rd_token(r, tmp, sizeof tmp);
    errno = 0;
    unsigned long long bits = strtoull(t, &end, 16);
    if (r->bad || *end || end == t || errno || t[0] == '-' || t[0] == '+') {
        r->bad = 1;
        return 0;
    }
    uint64_t b64 = bits;
    double v;
    memcpy(&v, &b64, sizeof v);
    return v;
}

static const char *rd_str(reader *r)
{
    if (r->bad)
        return NULL;
    if (r->end - r->p >= 2 && r->p[0] == '-' && (r->p[1] == ' ' || r->p[1] == '\n')) {
        r->p += 2;
        return NULL;
    }
    size_t n = 0, digits = 0;
    while (r->p + digits < r->end && r->p[digits] >= '0' && r->p[digits] <= '9' && digits < 12)
        n = n * 10 + (size_t)(r->p[digits++] - '0');
    if (!digits || r->p + digits >= r->end || r->p[digits] != ':' ||
        (size_t)(r->end - r->p - (ptrdiff_t)digits - 1) < n + 1) {
        r->bad = 1;
        return NULL;
    }
    const char *s = r->p + digits + 1;
    char *copy = memchr(s, '\0', n) ? NULL : lk__arena_alloc(r->arena, n + 1);
    if (!copy) {
        r->bad = 1;
        return NULL;
    }
    memcpy(copy, s, n);
    r->p = s + n;
    rd_sep(r);
    return copy;
}

/* A count of things each at least two bytes long: never more than what is
 * left, so a corrupt count cannot ask for a huge allocation. */
static size_t rd_count(reader *r, long long hi)
{
    long long left = (long long)(r->end - r->p) / 2;
    return (size_t)rd_int(r, 0, hi < left ? hi : left);
}

static void *rd_alloc(reader *r, size_t n)
{
    void *p = r->bad ? NULL : lk__arena_alloc(r->arena, n);
    if (!p)
        r->bad = 1;
    return p;
}

#define NOT_LOADED "the plugin is not loaded: build a loss (lk_loss_from_json) to run it"

static void say_not_loaded(lk_msg *m)
{
    if (m && m->buf && m->cap)
        snprintf(m->buf, m->cap, "%s", NOT_LOADED);
}

static lk_status stub_create(const lk_create_args *a, void **instance, lk_msg *m)
{
    (void)a;
    *instance = NULL;
    say_not_loaded(m);
    return LK_ERR_LOAD;
}

static void stub_destroy(void *instance)
{
    (void)instance;
}

static lk_status stub_plan(const void *i, const lk_tensor *s, int32_t red, lk_plan *p, lk_msg *m)
{
    (void)i, (void)s, (void)red, (void)p;
    say_not_loaded(m);
    return LK_ERR_LOAD;
}

static lk_status stub_block(const void *i, const lk_plan *p, const lk_block *b, lk_msg *m)
{
    (void)i, (void)p, (void)b;
    say_not_loaded(m);
    return LK_ERR_LOAD;
}

static lk_status stub_finalize(const void *i, const lk_plan *p, const double *st, int32_t red,
                               double *v, lk_msg *m)
{
    (void)i, (void)p, (void)st, (void)red, (void)v;
    say_not_loaded(m);
    return LK_ERR_LOAD;
}

static lk_status stub_whole(const void *i, const lk_plan *p, const lk_whole_args *a, double *v,
                            lk_msg *m)
{
    (void)i, (void)p, (void)a, (void)v;
    say_not_loaded(m);
    return LK_ERR_LOAD;
}

static lk_status stub_example(const void *i, int32_t k, int32_t dt, uint64_t seed, lk_tensor *s,
                              lk_msg *m)
{
    (void)i, (void)k, (void)dt, (void)seed, (void)s;
    say_not_loaded(m);
    return LK_ERR_LOAD;
}

static lk_status stub_partials(const void *i, const lk_plan *p, const double *st, double *out,
                               lk_msg *m)
{
    (void)i, (void)p, (void)st, (void)out;
    say_not_loaded(m);
    return LK_ERR_LOAD;
}

static const lk_param_desc *read_param(reader *r, uint32_t minor)
{
    lk_param_desc *p = rd_alloc(r, sizeof *p);
    if (!p)
        return NULL;
    rd_word(r, "A");
    p->name = rd_str(r);
    p->doc = rd_str(r);
    p->unset = rd_str(r);
    if (p->unset && minor < 2) /* a member its plugin's struct does not have */
        r->bad = 1;
    p->type = (int32_t)rd_int(r, INT32_MIN, INT32_MAX);
    p->flags = (uint32_t)rd_int(r, 0, UINT32_MAX);
    p->default_number = rd_double(r);
    p->min = rd_double(r);
    p->max = rd_double(r);
    size_t nch = rd_count(r, 1 << 20);
    if (p->type == LK_PARAM_CHOICE) {
        const char **ch = rd_alloc(r, (nch + 1) * sizeof *ch);
        for (size_t i = 0; ch && i < nch; i++)
            ch[i] = rd_str(r);
        p->choices = ch;
    } else if (nch) {
        r->bad = 1;
    }
    p->default_choice = rd_str(r);
    int32_t nl = (int32_t)rd_count(r, INT32_MAX);
    if (p->type == LK_PARAM_NUMBER_LIST) {
        double *items = nl ? rd_alloc(r, (size_t)nl * sizeof *items) : NULL;
        for (int32_t i = 0; items && i < nl; i++)
            items[i] = rd_double(r);
        p->default_list = items;
    } else if (nl) {
        r->bad = 1;
    }
    p->default_list_len = nl;
    p->list_min_len = (int32_t)rd_int(r, INT32_MIN, INT32_MAX);
    p->list_max_len = (int32_t)rd_int(r, INT32_MIN, INT32_MAX);
    return p;
}

static const lk_loss_desc *read_loss(reader *r, uint32_t minor)
{
    lk_loss_desc *d = rd_alloc(r, sizeof *d);
    if (!d)
        return NULL;
    rd_word(r, "L");
    d->id = rd_str(r);
    d->summary = rd_str(r);
    d->version = rd_str(r);
    d->reductions = (uint32_t)rd_int(r, 0, UINT32_MAX);
    d->default_reduction = (int32_t)rd_int(r, INT32_MIN, INT32_MAX);
    d->flags = (uint32_t)rd_int(r, 0, UINT32_MAX);
    uint32_t fn = (uint32_t)rd_int(r, 0, 511);
    size_t np = rd_count(r, LK_MAX_PARAMS), ns = rd_count(r, LK__MAX_SLOTS);
    const lk_param_desc **params = np ? rd_alloc(r, (np + 1) * sizeof *params) : NULL;
    const lk_slot_desc **slots = rd_alloc(r, (ns + 1) * sizeof *slots);
    for (size_t i = 0; params && i < np && !r->bad; i++)
        params[i] = read_param(r, minor);
    for (size_t i = 0; slots && i < ns && !r->bad; i++) {
        lk_slot_desc *s = rd_alloc(r, sizeof *s);
        if (!s)
            break;
        rd_word(r, "S");
        s->name = rd_str(r);
        s->doc = rd_str(r);
        s->dtypes = (uint32_t)rd_int(r, 0, UINT32_MAX);
        s->flags = (uint32_t)rd_int(r, 0, UINT32_MAX);
        s->shape = (int32_t)rd_int(r, INT32_MIN, INT32_MAX);
        s->values = (int32_t)rd_int(r, INT32_MIN, INT32_MAX);
        s->ndims = (uint32_t)rd_int(r, 0, LK_NDIM_ANY);
        s->batch = (int32_t)rd_int(r, 0, LK_MAX_NDIM);
        s->batch_views = (uint32_t)rd_int(r, 0, LK_MAX_BATCH_VIEWS);
        if ((s->batch || s->batch_views || (s->flags & LK_SLOT_PADDED)) && minor < 6)
            r->bad = 1;
        slots[i] = s;
    }
    d->params = params;
    d->slots = slots;
    d->create = fn & FN_CREATE ? stub_create : NULL;
    d->destroy = fn & FN_DESTROY ? stub_destroy : NULL;
    d->plan = fn & FN_PLAN ? stub_plan : NULL;
    d->forward = fn & FN_FORWARD ? stub_block : NULL;
    d->finalize = fn & FN_FINALIZE ? stub_finalize : NULL;
    d->backward = fn & FN_BACKWARD ? stub_block : NULL;
    d->whole = fn & FN_WHOLE ? stub_whole : NULL;
    d->example = fn & FN_EXAMPLE ? stub_example : NULL;
    d->partials = fn & FN_PARTIALS ? stub_partials : NULL;
    if ((fn & FN_EXAMPLE) && minor < 1)
        r->bad = 1;
    if ((fn & FN_PARTIALS) && minor < 5)
        r->bad = 1;
    return d;
}

const lk_plugin *lk__scan_read(const char *rec, size_t len, lk__arena *arena)
{
    reader r = {rec, rec + len, arena, 0};
    lk_plugin *pl = rd_alloc(&r, sizeof *pl);
    if (!pl)
        return NULL;
    rd_word(&r, "P");
    pl->abi_major = (uint32_t)rd_int(&r, 0, UINT32_MAX);
    pl->abi_minor = (uint32_t)rd_int(&r, 0, UINT32_MAX);
    pl->name = rd_str(&r);
    pl->version = rd_str(&r);
    pl->summary = rd_str(&r);
    size_t n = rd_count(&r, 1 << 20);
    const lk_loss_desc **losses = rd_alloc(&r, (n + 1) * sizeof *losses);
    for (size_t i = 0; losses && i < n && !r.bad; i++)
        losses[i] = read_loss(&r, pl->abi_minor);
    pl->losses = losses;
    char why[512];
    if (r.bad || r.p != r.end || pl->abi_major != LK_ABI_MAJOR ||
        lk__validate_plugin(pl, why, sizeof why))
        return NULL;
    return pl;
}
