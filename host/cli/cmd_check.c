/* cmd_check.c: `losskit check PLUGIN.so [--loss ID] [--pairs] [--json]`, a conformance
 * report for plugin authors.
 *
 * The plugin is loaded alone (no $LOSSKIT_PLUGIN_PATH, no default folder).
 * The parent process checks what needs no plugin code: the ABI fields and
 * each loss's schema. Everything that calls a loss runs in a child process,
 * one per loss, so that a loss that crashes or hangs costs only its own
 * report line and the next loss is still checked. The child sends its
 * results through a pipe, one line per check, and announces each case before
 * it runs it so that a crash can be placed ("during grad float64 ...").
 *
 * Pipe lines, tab-separated:
 *   B <label>                         a case begins
 *   R <name> <ok> <detail> [n:key=number | s:key=text]...   a check's result
 *   E                                 the child finished normally
 *
 * Every check is deterministic: the data come from a fixed-seed generator. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define TIMEOUT_S     60    /* per loss, for all of its checks; LOSSKIT_CHECK_TIMEOUT overrides */
#define MAX_SLOTS     16    /* the host's limit per loss */
#define MAX_SETTINGS  32    /* the defaults, then one per moved parameter or other choice */
#define N_PROBES      7     /* probe shapes */
#define GRAD_RTOL     1e-5  /* gradient vs central differences, relative */
#define GRAD_ATOL     1e-7  /* ... with this absolute floor */
#define FD_STEP       1e-6  /* central-difference step, times max(1, |x|) */
#define FD_NOISE_ULPS 8.0   /* rounding of the differenced values, in ulps */
#define RED_RTOL      1e-10 /* reductions and weight linearity, float64 */
#define OTHER_THREADS 3     /* compared bitwise with 1 thread */
#define BIG_ELEMS     50000 /* enough positions for 4 blocks of 16384 */
#define LABEL_CAP     320

/* The deadline of one loss's checks, in seconds: the parent kills the
 * child then, whatever the child does with its signals. */
static int check_timeout(void)
{
    const char *env = getenv("LOSSKIT_CHECK_TIMEOUT");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v > 0 && v <= 86400)
            return (int)v;
    }
    return TIMEOUT_S;
}

#if defined(__GNUC__)
#define CHECK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CHECK_PRINTF(a, b)
#endif

/* snprintf for messages that may be cut short on purpose (a plugin's long
 * error text): through a va_list, the compiler does not warn about it. */
CHECK_PRINTF(3, 4)
static void fit(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Results                                                                   */

#define MAX_FIELDS 14

/* A number or a short text that --json reports next to the detail. */
typedef struct field {
    char key[24];
    char text[128];
    double num;
    int is_num;
} field;

typedef struct result {
    char name[16];
    int ok;
    char detail[900];
    field fields[MAX_FIELDS];
    int n_fields;
} result;

static void res_init(result *r, const char *name, int ok)
{
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->ok = ok;
}

CHECK_PRINTF(2, 3)
static void res_detail(result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
}

static field *res_field(result *r, const char *key)
{
    if (r->n_fields == MAX_FIELDS)
        return NULL;
    field *f = &r->fields[r->n_fields++];
    snprintf(f->key, sizeof f->key, "%s", key);
    return f;
}

static void res_num(result *r, const char *key, double v)
{
    field *f = res_field(r, key);
    if (f) {
        f->is_num = 1;
        f->num = v;
    }
}

static void res_str(result *r, const char *key, const char *v)
{
    field *f = res_field(r, key);
    if (f)
        fit(f->text, sizeof f->text, "%s", v);
}

/* The parent's side: prints each result as it comes, or gathers them for
 * --json, and counts. */
typedef struct report {
    int json;
    cJSON *checks;
    int passed, failed;
} report;

static void report_json(report *rep, const char *loss, const result *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", r->name);
    if (loss)
        cJSON_AddStringToObject(o, "loss", loss);
    else
        cJSON_AddNullToObject(o, "loss");
    cJSON_AddBoolToObject(o, "ok", r->ok);
    cJSON_AddStringToObject(o, "detail", r->detail);
    for (int i = 0; i < r->n_fields; i++) {
        const field *f = &r->fields[i];
        if (!f->is_num)
            cJSON_AddStringToObject(o, f->key, f->text);
        else if (isfinite(f->num))
            cJSON_AddNumberToObject(o, f->key, f->num);
        else
            cJSON_AddNullToObject(o, f->key); /* JSON has no NaN or inf */
    }
    cJSON_AddItemToArray(rep->checks, o);
}

static void report_add(report *rep, const char *loss, const result *r)
{
    if (r->ok)
        rep->passed++;
    else
        rep->failed++;
    if (rep->json) {
        report_json(rep, loss, r);
        return;
    }
    /* "FAIL crash LOSS: killed by ...": a crash ends the loss's report. */
    int ending = strcmp(r->name, "crash") == 0 || strcmp(r->name, "timeout") == 0;
    char head[160];
    snprintf(head, sizeof head, "%s%s%s%s", r->name, loss ? " " : "", loss ? loss : "",
             ending ? ":" : "");
    printf("%s %-14s %s\n", r->ok ? "PASS" : "FAIL", head, r->detail);
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static int64_t numel(int32_t ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int32_t d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

/* "(2,3,5)", "(7,)" or "()", as numpy writes shapes. */
static void shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, cap, "(");
    for (int32_t d = 0; d < ndim && used < cap; d++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, "%s)", ndim == 1 ? "," : "");
}

/* NaN without its sign bit, so that it prints as "nan", never "-nan". */
static double tidy(double v)
{
    return isnan(v) ? fabs(v) : v;
}

static const char *plural(long n)
{
    return n == 1 ? "" : "s";
}

static int is_float_dtype(int32_t dtype)
{
    return dtype == LK_DTYPE_F32 || dtype == LK_DTYPE_F64;
}

static int offers(const lk_loss_desc *d, int32_t red)
{
    return (d->reductions & LK_REDUCTION_BIT(red)) != 0;
}

static int is_weight_slot(const lk_slot_desc *sd)
{
    return strcmp(sd->name, "weight") == 0;
}

static int present(const char *s)
{
    return s && s[0];
}

/* The names of the reductions a loss offers: "none, mean, sum". */
static void reductions_str(const lk_loss_desc *d, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t r = 0; r < LK_REDUCTION_COUNT && used < cap; r++)
        if (offers(d, r))
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? ", " : "",
                                     lk_reduction_name(r));
}

static const char *signal_abbrev(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    default: return strsignal(sig);
    }
}

/* ------------------------------------------------------------------------ */
/* The child's state: one loss under check                                   */

/* One parameter setting: the config's "params" members that differ from
 * the defaults, and every number parameter's value for labels. A setting
 * of a choice or boolean parameter (opt) may change what the loss takes
 * (mode multiclass wants class indices, from_logits false probabilities):
 * where it refuses the checker's tensors (a shape, dtype or value error, or
 * an unsupported combination) that case is left out and counted in
 * refused, the first refusal kept for the report; the defaults' and the
 * number parameters' settings must take every tensor the defaults take. */
typedef struct setting {
    char params[512];
    char label[256];
    int opt;
    char moved[96]; /* the parameters moved, "name=value ..." ("" at the defaults) */
    int choice;     /* opt: of a choice parameter */
    int unit;       /* opt: slot 0 real values drawn in (0.05, 0.95) (see probe_opts) */
    int index;      /* opt: a float target slot that takes int64 gets class indices */
    long refused, taken;
    char refusal[200];
} setting;

typedef struct checker {
    lk_runtime *rt; /* 1 thread, opened by the parent */
    const lk_loss_desc *d;
    uint32_t n_slots;
    int fd;                             /* the pipe to the parent */
    setting settings[MAX_SETTINGS + 1]; /* the last: a pair (check_pairs) */
    int n_settings;
    int shape_ok[N_PROBES];
    char shape_note[400];
    int ref; /* the probe shape that single-shape checks use */
    /* Example-driven (lk_loss_desc.example, ABI 1.1): the probe shapes are
     * the loss's own examples k = 0 .. N_PROBES - 1, the big case is k = -1
     * (index N_PROBES below). ex_loss (defaults, default reduction) is the
     * instance whose hook builds them; ex_ndim/ex_shape cache slot 0's shape
     * of each example for labels. */
    int ex;
    lk_loss *ex_loss;
    int32_t ex_ndim[N_PROBES + 1];
    int64_t ex_shape[N_PROBES + 1][LK_MAX_NDIM];
    int soft_too;              /* a float target slot: a second run with soft targets */
    int32_t values[MAX_SLOTS]; /* each slot's lk_slot_values, resolved */
    int unit_input;            /* draw slot 0's real values in (0.05, 0.95) */
    int index_target;          /* draw class indices into the index slot (index_slot) */
    char opt_note[600];        /* choice and boolean settings left out, and why */
    double fd_step;            /* > 0: central differences with this absolute step */
    int grad_failed;           /* the grad check failed: extreme compares no gradient */
    char label[LABEL_CAP];
    uint64_t rng;
    void *guard; /* an inaccessible page: the data of zero-size tensors */
    /* Every evaluation compares the inputs before and after. */
    long n_evals;
    int modified;
    char modified_what[600];
    void *shadow[MAX_SLOTS];
    size_t shadow_cap[MAX_SLOTS];
} checker;

static void send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

/* Copies src into dst, turning tabs and newlines (from plugin messages) into
 * spaces: they are the pipe's separators. */
static size_t put_clean(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (; *src && n + 1 < cap; src++)
        dst[n++] = (*src == '\t' || *src == '\n' || *src == '\r') ? ' ' : *src;
    dst[n] = '\0';
    return n;
}

static void send_result(checker *c, const result *r)
{
    char line[4096], tmp[1024];
    size_t used = (size_t)snprintf(line, sizeof line, "R\t%s\t%d\t", r->name, r->ok);
    used += put_clean(line + used, sizeof line - used, r->detail);
    for (int i = 0; i < r->n_fields && used < sizeof line; i++) {
        const field *f = &r->fields[i];
        if (f->is_num)
            snprintf(tmp, sizeof tmp, "\tn:%s=%.17g", f->key, f->num);
        else {
            size_t k = (size_t)snprintf(tmp, sizeof tmp, "\ts:%s=", f->key);
            put_clean(tmp + k, sizeof tmp - k, f->text);
        }
        used += (size_t)snprintf(line + used, sizeof line - used, "%s", tmp);
    }
    if (used > sizeof line - 2)
        used = sizeof line - 2;
    line[used++] = '\n';
    send_all(c->fd, line, used);
}

/* Names the case about to run, here and in the parent (for crash reports). */
CHECK_PRINTF(2, 3)
static void begin(checker *c, const char *fmt, ...)
{
    char label[LABEL_CAP], line[LABEL_CAP + 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    if (strcmp(label, c->label) == 0)
        return;
    memcpy(c->label, label, sizeof label);
    size_t n = (size_t)snprintf(line, sizeof line, "B\t");
    n += put_clean(line + n, sizeof line - n - 1, label);
    line[n++] = '\n';
    send_all(c->fd, line, n);
}

/* splitmix64: small, fast, and the same numbers on every machine. */
static uint64_t rng_next(checker *c)
{
    uint64_t z = (c->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unif(checker *c) /* in [0, 1) */
{
    return (double)(rng_next(c) >> 11) * 0x1.0p-53;
}

static double rng_normal(checker *c)
{
    double u = rng_unif(c), v = rng_unif(c);
    return sqrt(-2.0 * log1p(-u)) * cos(6.283185307179586 * v);
}

/* ------------------------------------------------------------------------ */
/* Parameter settings and configured losses                                 */

/* A value between a number parameter's default and one of its bounds: the
 * midpoint towards a finite bound, else one step past the default. Returns 0
 * when the range is a single point. */
static int alt_value(const lk_param_desc *p, double *v)
{
    double d = p->default_number, step = fabs(d) > 1.0 ? fabs(d) : 1.0;
    if (isfinite(p->min) && p->min < d)
        *v = (d + p->min) / 2.0;
    else if (isfinite(p->max) && p->max > d)
        *v = (d + p->max) / 2.0;
    else if (p->max > d)
        *v = d + step;
    else if (p->min < d)
        *v = d - step;
    else
        return 0;
    return 1;
}

/* Fills a setting: every number parameter at its default except param
 * `which` (-1: none), which takes value v. */
static void fill_setting(const lk_loss_desc *d, int which, double v, setting *s)
{
    size_t used = 0;
    s->params[0] = '\0';
    s->label[0] = '\0';
    s->moved[0] = '\0';
    for (int i = 0; d->params && d->params[i]; i++) {
        const lk_param_desc *p = d->params[i];
        if (p->type != LK_PARAM_NUMBER && !(p->type == LK_PARAM_INTEGER && i == which))
            continue;
        double x = i == which ? v : p->default_number;
        used += (size_t)snprintf(s->label + used, sizeof s->label - used, "%s%s=%g",
                                 used ? " " : "", p->name, x);
        if (used >= sizeof s->label)
            used = sizeof s->label - 1;
        if (i == which) {
            snprintf(s->params, sizeof s->params, "\"%s\": %.17g", p->name, v);
            snprintf(s->moved, sizeof s->moved, "%s=%g", p->name, v);
        }
    }
    if (!s->label[0])
        snprintf(s->label, sizeof s->label, "defaults");
}

/* A setting of the defaults but choice or boolean parameter p, which
 * takes value (a JSON literal: "\"multiclass\"" or "true"). */
static void fill_opt_setting(const lk_loss_desc *d, const lk_param_desc *p, const char *value,
                             setting *s)
{
    fill_setting(d, -1, 0.0, s);
    s->opt = 1;
    snprintf(s->params, sizeof s->params, "\"%s\": %s", p->name, value);
    if (!strcmp(s->label, "defaults"))
        s->label[0] = '\0';
    size_t used = strlen(s->label);
    /* the value without its quotes */
    int n = value[0] == '"' ? (int)strlen(value) - 2 : (int)strlen(value);
    snprintf(s->label + used, sizeof s->label - used, "%s%s=%.*s", used ? " " : "", p->name, n,
             value + (value[0] == '"'));
    snprintf(s->moved, sizeof s->moved, "%s=%.*s", p->name, n, value + (value[0] == '"'));
    s->choice = p->type == LK_PARAM_CHOICE;
}

static void build_settings(checker *c)
{
    fill_setting(c->d, -1, 0.0, &c->settings[0]);
    c->n_settings = 1;
    for (int i = 0; c->d->params && c->d->params[i] && c->n_settings < MAX_SETTINGS; i++) {
        double v;
        if (c->d->params[i]->type == LK_PARAM_NUMBER && alt_value(c->d->params[i], &v))
            fill_setting(c->d, i, v, &c->settings[c->n_settings++]);
    }
    /* an integer to another value in its range (an ignore_index, a blank
     * class, a window), as a choice: it may change what the loss takes */
    for (int i = 0; c->d->params && c->d->params[i] && c->n_settings < MAX_SETTINGS; i++) {
        double v;
        if (c->d->params[i]->type == LK_PARAM_INTEGER && alt_value(c->d->params[i], &v)) {
            v = v < 0.0 ? ceil(v) : floor(v);
            if (v == c->d->params[i]->default_number)
                v += v + 1.0 <= c->d->params[i]->max ? 1.0 : -1.0;
            fill_setting(c->d, i, v, &c->settings[c->n_settings]);
            c->settings[c->n_settings++].opt = 1;
        }
    }
    /* a list (class weights, a class list): of three values, of four and
     * of one, each value a class of some probe shape whether the loss
     * counts classes in dim 1 or in the last dim: three ((2, 3, 5), (5,
     * 3)), four ((6, 4)) and one ((3, 1), or a value broadcast) */
    for (int i = 0; c->d->params && c->d->params[i]; i++) {
        const lk_param_desc *p = c->d->params[i];
        static const char *const lists[] = {"[2, 1, 0]", "[2, 1, 0, 3]", "[2]"};
        static const int lens[] = {3, 4, 1};
        if (p->type != LK_PARAM_NUMBER_LIST)
            continue;
        for (int k = 0; k < 3 && c->n_settings < MAX_SETTINGS; k++) {
            if (lens[k] < p->list_min_len || (p->list_max_len >= 0 && lens[k] > p->list_max_len) ||
                p->min > 0.0 || p->max < 2.0)
                continue;
            fill_opt_setting(c->d, p, lists[k], &c->settings[c->n_settings++]);
        }
    }
    /* every other choice of a choice parameter, the other value of a boolean */
    for (int i = 0; c->d->params && c->d->params[i]; i++) {
        const lk_param_desc *p = c->d->params[i];
        char value[160];
        if (p->type == LK_PARAM_BOOL && c->n_settings < MAX_SETTINGS) {
            fill_opt_setting(c->d, p, p->default_number != 0.0 ? "false" : "true",
                             &c->settings[c->n_settings++]);
            continue;
        }
        if (p->type != LK_PARAM_CHOICE || !p->choices)
            continue;
        for (int k = 0; p->choices[k] && c->n_settings < MAX_SETTINGS; k++) {
            if (p->default_choice && !strcmp(p->choices[k], p->default_choice))
                continue;
            snprintf(value, sizeof value, "\"%s\"", p->choices[k]);
            fill_opt_setting(c->d, p, value, &c->settings[c->n_settings++]);
        }
    }
}

/* Whether an evaluation of setting set refused the checker's tensors (see
 * setting); if so it is counted there. */
static int opt_refused(checker *c, int set, lk_status st, const char *err)
{
    setting *s = &c->settings[set];
    if (!s->opt || (st != LK_ERR_SHAPE && st != LK_ERR_DTYPE && st != LK_ERR_INVALID &&
                    st != LK_ERR_UNSUPPORTED))
        return 0;
    if (!s->refused++)
        fit(s->refusal, sizeof s->refusal, "%s", err);
    return 1;
}

/* Every setting's count of cases refused and taken back to 0, for the
 * next check to count its own. */
static void reset_counts(checker *c)
{
    for (int set = 0; set < c->n_settings; set++)
        c->settings[set].refused = c->settings[set].taken = 0;
}

/* The settings that refused some cases, for a check's detail: "; cases
 * not taken: mode=multiclass 4 of 20 (the first refusal's message),
 * classes=[2] 20 of 20, ..." */
static void refusals_str(const checker *c, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int set = 1; set < c->n_settings && used < cap; set++) {
        const setting *s = &c->settings[set];
        if (!s->refused)
            continue;
        if (!used)
            used += (size_t)snprintf(buf, cap, "; cases not taken: %s %ld of %ld (%.90s%s)",
                                     s->moved, s->refused, s->refused + s->taken, s->refusal,
                                     strlen(s->refusal) > 90 ? "..." : "");
        else
            used += (size_t)snprintf(buf + used, cap - used, ", %s %ld of %ld", s->moved,
                                     s->refused, s->refused + s->taken);
    }
}

static lk_status make_loss(const checker *c, lk_runtime *rt, int set, int32_t red, lk_loss **out,
                           char *err)
{
    char json[1024];
    snprintf(json, sizeof json, "{\"loss\": \"%s\", \"params\": {%s}, \"reduction\": \"%s\"}",
             c->d->id, c->settings[set].params, lk_reduction_name(red));
    *out = NULL;
    return lk_loss_from_json(rt, json, strlen(json), "check", out, err);
}

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */

/* What to build for one evaluation: slot 0's dtype and shape; the other
 * slots follow from their rules. */
typedef struct spec {
    int32_t dtype;
    int32_t ndim;
    int64_t shape[LK_MAX_NDIM];
    int soft;               /* float targets in (0, 1) instead of {0, 1} */
    int weight;             /* also bind an optional slot named "weight" */
    int weight_per_channel; /* an ANY-shaped weight as (C,), not like the input */
    int ex;                 /* the loss's own example ex_k (dtype applies to float slots) */
    int32_t ex_k;
} spec;

/* Every tensor of one evaluation, by slot index; data NULL: not bound. */
typedef struct bundle {
    lk_array in[MAX_SLOTS];
    lk_array grad[MAX_SLOTS];
    lk_array out;
    lk_named_tensor named[MAX_SLOTS];
    int named_slot[MAX_SLOTS];
    size_t n_named;
    lk_named_tensor gnamed[MAX_SLOTS];
    int gnamed_slot[MAX_SLOTS];
    size_t n_grads;
    lk_tensor out_view;
} bundle;

static double get_elem(const lk_array *a, int64_t i)
{
    switch (a->dtype) {
    case LK_DTYPE_F32: return ((const float *)a->data)[i];
    case LK_DTYPE_F64: return ((const double *)a->data)[i];
    case LK_DTYPE_I64: return (double)((const int64_t *)a->data)[i];
    case LK_DTYPE_I32: return ((const int32_t *)a->data)[i];
    default: return ((const uint8_t *)a->data)[i];
    }
}

static void set_elem(lk_array *a, int64_t i, double v)
{
    switch (a->dtype) {
    case LK_DTYPE_F32: ((float *)a->data)[i] = (float)v; break;
    case LK_DTYPE_F64: ((double *)a->data)[i] = v; break;
    case LK_DTYPE_I64: ((int64_t *)a->data)[i] = (int64_t)v; break;
    case LK_DTYPE_I32: ((int32_t *)a->data)[i] = (int32_t)v; break;
    default: ((uint8_t *)a->data)[i] = (uint8_t)(v != 0.0); break;
    }
}

static int64_t array_numel(const lk_array *a)
{
    return numel(a->ndim, a->shape);
}

/* A zero-size array points at the guard page, so that a loss reading or
 * writing through it crashes (and is reported) instead of passing by luck. */
static lk_status alloc_array(const checker *c, lk_array *a, int32_t dtype, int32_t ndim,
                             const int64_t *shape, char *err)
{
    if (numel(ndim, shape) > 0)
        return lk_array_alloc(a, dtype, ndim, shape, err);
    memset(a, 0, sizeof *a);
    a->dtype = dtype;
    a->ndim = ndim;
    memcpy(a->shape, shape, (size_t)ndim * sizeof *shape);
    a->data = c->guard;
    return LK_OK;
}

static void free_array(const checker *c, lk_array *a)
{
    if (a->data != c->guard)
        lk_array_free(a);
    memset(a, 0, sizeof *a);
}

static void bundle_free(const checker *c, bundle *b)
{
    for (int s = 0; s < MAX_SLOTS; s++) {
        free_array(c, &b->in[s]);
        free_array(c, &b->grad[s]);
    }
    free_array(c, &b->out);
}

/* The number of classes of a class-id target: dim 1 of the input (dim 0 of
 * an unbatched (C,) input). */
static int64_t class_count(const spec *sp)
{
    return sp->ndim >= 2 ? sp->shape[1] : sp->ndim == 1 ? sp->shape[0] : 1;
}

static void slot_shape(const lk_slot_desc *sd, const spec *sp, int32_t *nd, int64_t *shape)
{
    *nd = 0;
    if (sd->shape == LK_SHAPE_INPUT_NO_CHANNEL) {
        for (int32_t d = 0; d < sp->ndim; d++)
            if (d != 1 && !(sp->ndim == 1 && d == 0))
                shape[(*nd)++] = sp->shape[d];
    } else if (sp->weight_per_channel && sd->shape == LK_SHAPE_ANY) {
        shape[(*nd)++] = class_count(sp);
    } else {
        *nd = sp->ndim;
        memcpy(shape, sp->shape, (size_t)sp->ndim * sizeof *shape);
    }
}

/* slot 0's dtype when the slot takes it, else the first it takes. */
static int32_t slot_dtype(const lk_slot_desc *sd, int32_t in_dtype)
{
    static const int32_t order[] = {LK_DTYPE_F64, LK_DTYPE_F32, LK_DTYPE_I64,
                                    LK_DTYPE_I32, LK_DTYPE_U8,  LK_DTYPE_BOOL};
    if (sd->dtypes & LK_DTYPE_BIT(in_dtype))
        return in_dtype;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (sd->dtypes & LK_DTYPE_BIT(order[i]))
            return order[i];
    return LK_DTYPE_F64;
}

/* Each slot's data by what its values are (lk_slot_values): reals ~
 * N(0, 1.5); positive values in [0.5, 1.5); class ids in [0, C); [0, 1]
 * targets {0, 1}, or soft in [0.05, 0.95]; counts {0, 1, 2}, or soft in
 * [0, 3). */
static double draw(checker *c, uint32_t s, int32_t dtype, const spec *sp)
{
    double u = rng_unif(c);
    int soft = sp->soft && is_float_dtype(dtype);
    if (s == 0 && c->unit_input && c->values[s] == LK_VALUES_REAL)
        return 0.05 + 0.9 * u;
    switch (c->values[s]) {
    case LK_VALUES_REAL: return 1.5 * rng_normal(c);
    case LK_VALUES_POSITIVE: return 0.5 + u;
    case LK_VALUES_CLASS: return floor(u * (double)class_count(sp));
    case LK_VALUES_SIGN: return u < 0.5 ? -1.0 : 1.0;
    case LK_VALUES_NONNEGATIVE: return soft ? 3.0 * u : floor(3.0 * u);
    case LK_VALUES_UNIT:
        /* slot 0 in [0, 1] (probabilities): inside, where a difference
         * step stays in range; the extreme check tries 0 and 1 */
        if (soft || s == 0)
            return 0.05 + 0.9 * u;
        return u < 0.5 ? 0.0 : 1.0;
    default: /* LK_VALUES_BINARY */ return u < 0.5 ? 0.0 : 1.0;
    }
}

static int binds(const lk_slot_desc *sd, uint32_t s, const spec *sp)
{
    return s == 0 || !(sd->flags & LK_SLOT_OPTIONAL) || (sp->weight && is_weight_slot(sd));
}

/* The slot that takes class indices in place of float targets under a
 * choice such as mode multiclass: the first after slot 0 that is not
 * differentiable, takes a float dtype and int64, and any shape; -1: none. */
static int index_slot(const checker *c)
{
    for (uint32_t s = 1; s < c->n_slots; s++) {
        const lk_slot_desc *sd = c->d->slots[s];
        if (!(sd->flags & LK_SLOT_DIFFERENTIABLE) && sd->shape == LK_SHAPE_ANY &&
            (sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_I64)) &&
            (sd->dtypes & (LK_DTYPE_BIT(LK_DTYPE_F32) | LK_DTYPE_BIT(LK_DTYPE_F64))))
            return (int)s;
    }
    return -1;
}

/* Allocates and fills slot s (and its gradient, when differentiable). */
static lk_status bundle_slot(checker *c, bundle *b, uint32_t s, const spec *sp, char *err)
{
    const lk_slot_desc *sd = c->d->slots[s];
    int32_t nd, dtype = s == 0 ? sp->dtype : slot_dtype(sd, sp->dtype);
    int64_t shape[LK_MAX_NDIM];
    int index = c->index_target && (int)s == index_slot(c);
    slot_shape(sd, sp, &nd, shape);
    if (s == 0) {
        nd = sp->ndim;
        memcpy(shape, sp->shape, sizeof shape);
    }
    if (index) { /* class indices, shaped like the input without its class dim 1 */
        lk_slot_desc nc = *sd;
        nc.shape = LK_SHAPE_INPUT_NO_CHANNEL;
        slot_shape(&nc, sp, &nd, shape);
        dtype = LK_DTYPE_I64;
    }
    lk_status st = alloc_array(c, &b->in[s], dtype, nd, shape, err);
    if (st != LK_OK)
        return st;
    for (int64_t i = 0; i < array_numel(&b->in[s]); i++)
        set_elem(&b->in[s], i,
                 index ? floor(rng_unif(c) * (double)class_count(sp)) : draw(c, s, dtype, sp));
    b->named_slot[b->n_named] = (int)s;
    b->named[b->n_named++] = (lk_named_tensor){sd->name, lk_array_view(&b->in[s]), sd->name};
    if (!(sd->flags & LK_SLOT_DIFFERENTIABLE) || !is_float_dtype(dtype))
        return LK_OK;
    st = alloc_array(c, &b->grad[s], dtype, nd, shape, err);
    if (st != LK_OK)
        return st;
    b->gnamed_slot[b->n_grads] = (int)s;
    b->gnamed[b->n_grads++] = (lk_named_tensor){sd->name, lk_array_view(&b->grad[s]), sd->name};
    return LK_OK;
}

static lk_status bundle_example(checker *c, const spec *sp, bundle *b, char *err);

static lk_status bundle_make(checker *c, const spec *sp, bundle *b, char *err)
{
    memset(b, 0, sizeof *b);
    if (sp->ex)
        return bundle_example(c, sp, b, err);
    for (uint32_t s = 0; s < c->n_slots; s++) {
        if (!binds(c->d->slots[s], s, sp))
            continue;
        lk_status st = bundle_slot(c, b, s, sp, err);
        if (st != LK_OK) {
            bundle_free(c, b);
            return st;
        }
    }
    return LK_OK;
}

/* The first call of the loss's example hook for example k: each slot's
 * dtype, ndim and shape (into shapes) in ts, every data NULL. */
static lk_status example_shapes(checker *c, int32_t k, int32_t dtype, lk_tensor *ts,
                                int64_t (*shapes)[LK_MAX_NDIM], char *err)
{
    memset(ts, 0, MAX_SLOTS * sizeof *ts);
    for (uint32_t s = 0; s < c->n_slots; s++)
        ts[s].shape = shapes[s];
    lk_status st = lk_loss_example(c->ex_loss, k, dtype, 0, ts, err);
    for (uint32_t s = 0; st == LK_OK && s < c->n_slots; s++) {
        const lk_slot_desc *sd = c->d->slots[s];
        int32_t nd = ts[s].ndim;
        if (nd == -1 && (sd->flags & LK_SLOT_OPTIONAL))
            continue;
        if (nd < 0 || nd > LK_MAX_NDIM || !(sd->dtypes & LK_DTYPE_BIT(ts[s].dtype))) {
            fit(err, LK_ERRMSG_CAP,
                "example %d: slot '%s' has ndim %d and dtype %d, which the slot does not take",
                (int)k, sd->name, (int)nd, (int)ts[s].dtype);
            return LK_ERR_INTERNAL;
        }
    }
    return st;
}

static lk_status bundle_example(checker *c, const spec *sp, bundle *b, char *err)
{
    lk_tensor ts[MAX_SLOTS];
    int64_t shapes[MAX_SLOTS][LK_MAX_NDIM];
    lk_status st = example_shapes(c, sp->ex_k, sp->dtype, ts, shapes, err);
    for (uint32_t s = 0; st == LK_OK && s < c->n_slots; s++) {
        if (ts[s].ndim < 0)
            continue;
        st = alloc_array(c, &b->in[s], ts[s].dtype, ts[s].ndim, ts[s].shape, err);
        if (st == LK_OK && b->in[s].data != c->guard)
            memset(b->in[s].data, 0, b->in[s].nbytes);
        ts[s].data = b->in[s].data;
    }
    if (st == LK_OK)
        st = lk_loss_example(c->ex_loss, sp->ex_k, sp->dtype, rng_next(c), ts, err);
    for (uint32_t s = 0; st == LK_OK && s < c->n_slots; s++) {
        const lk_slot_desc *sd = c->d->slots[s];
        lk_array *a = &b->in[s];
        if (!a->data)
            continue;
        b->named_slot[b->n_named] = (int)s;
        b->named[b->n_named++] = (lk_named_tensor){sd->name, lk_array_view(a), sd->name};
        if (!(sd->flags & LK_SLOT_DIFFERENTIABLE) || !is_float_dtype(a->dtype))
            continue;
        st = alloc_array(c, &b->grad[s], a->dtype, a->ndim, a->shape, err);
        b->gnamed_slot[b->n_grads] = (int)s;
        b->gnamed[b->n_grads++] = (lk_named_tensor){sd->name, lk_array_view(&b->grad[s]), sd->name};
    }
    if (st != LK_OK)
        bundle_free(c, b);
    return st;
}

/* Reduction none: (re)allocates the output the loss's plan asks for. */
static lk_status ensure_out(const checker *c, const lk_loss *loss, bundle *b, lk_eval_args *args)
{
    int32_t nd;
    int64_t shape[LK_MAX_NDIM];
    lk_status st = lk_loss_out_shape(loss, args, &nd, shape);
    if (st != LK_OK)
        return st;
    const lk_array *o = &b->out;
    if (o->data && o->dtype == b->in[0].dtype && o->ndim == nd &&
        memcmp(o->shape, shape, (size_t)nd * sizeof *shape) == 0)
        return LK_OK;
    free_array(c, &b->out);
    st = alloc_array(c, &b->out, b->in[0].dtype, nd, shape, args->errmsg);
    b->out_view = lk_array_view(&b->out);
    return st;
}

/* NaN in every element that the loss must write, so that one it forgets
 * shows up as NaN. */
static void poison(lk_array *a)
{
    if (!a->data || !is_float_dtype(a->dtype))
        return;
    for (int64_t i = 0; i < array_numel(a); i++)
        set_elem(a, i, NAN);
}

/* ------------------------------------------------------------------------ */
/* Evaluation, with the inputs compared before and after                     */

static void snapshot_inputs(checker *c, const bundle *b)
{
    for (size_t i = 0; i < b->n_named; i++) {
        const lk_array *a = &b->in[b->named_slot[i]];
        if (a->nbytes > c->shadow_cap[i]) {
            void *grown = realloc(c->shadow[i], a->nbytes);
            if (!grown)
                continue;
            c->shadow[i] = grown;
            c->shadow_cap[i] = a->nbytes;
        }
        if (a->nbytes)
            memcpy(c->shadow[i], a->data, a->nbytes);
    }
}

/* Notes the first change to an input (which element, from what to what,
 * during which case) and undoes it, so that the other checks still see
 * the data they built. */
static void verify_inputs(checker *c, bundle *b)
{
    for (size_t i = 0; i < b->n_named; i++) {
        lk_array *a = &b->in[b->named_slot[i]];
        if (!a->nbytes || c->shadow_cap[i] < a->nbytes ||
            memcmp(c->shadow[i], a->data, a->nbytes) == 0)
            continue;
        size_t es = lk_dtype_size(a->dtype);
        int64_t k = 0;
        while (memcmp((char *)c->shadow[i] + k * es, (char *)a->data + k * es, es) == 0)
            k++;
        double after = get_elem(a, k);
        memcpy(a->data, c->shadow[i], a->nbytes);
        if (!c->modified++)
            snprintf(c->modified_what, sizeof c->modified_what,
                     "'%s' element %lld changed from %.6g to %.6g during %s", b->named[i].name,
                     (long long)k, get_elem(a, k), after, c->label);
    }
}

/* One evaluation. grads: ask for every differentiable slot's gradient.
 * Returns the status; err (LK_ERRMSG_CAP bytes) holds the message. */
static lk_status run_eval(checker *c, const lk_loss *loss, bundle *b, int grads, double *value,
                          char *err)
{
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = b->named;
    args.n_tensors = b->n_named;
    lk_status st = LK_OK;
    if (lk_loss_reduction(loss) == LK_REDUCTION_NONE) {
        st = ensure_out(c, loss, b, &args);
        poison(&b->out);
        args.out = &b->out_view;
    }
    if (grads) {
        args.grads = b->gnamed;
        args.n_grads = b->n_grads;
        for (size_t i = 0; i < b->n_grads; i++)
            poison(&b->grad[b->gnamed_slot[i]]);
    }
    *value = NAN;
    if (st == LK_OK) {
        snapshot_inputs(c, b);
        st = lk_loss_eval(loss, &args, value);
        verify_inputs(c, b);
        c->n_evals++;
    }
    if (st != LK_OK)
        fit(err, LK_ERRMSG_CAP, "%s: %s", lk_status_name(st),
            args.errmsg[0] ? args.errmsg : lk_status_text(st));
    return st;
}

/* The scalar a gradient refers to: the value, or for reduction none the sum
 * of the per-position losses (the upstream gradient of each is 1). */
static double scalar_of(const lk_loss *loss, const bundle *b, double value)
{
    if (lk_loss_reduction(loss) != LK_REDUCTION_NONE)
        return value;
    double s = 0.0;
    for (int64_t i = 0; i < array_numel(&b->out); i++)
        s += get_elem(&b->out, i);
    return s;
}

/* The first element of a float array that is NaN (nan_only) or not finite;
 * -1 when none is. */
static int64_t first_bad(const lk_array *a, int nan_only)
{
    if (!a->data || !is_float_dtype(a->dtype))
        return -1;
    for (int64_t i = 0; i < array_numel(a); i++) {
        double v = get_elem(a, i);
        if (nan_only ? isnan(v) : !isfinite(v))
            return i;
    }
    return -1;
}

/* Checks value, per-position output and gradients after a successful eval;
 * describes the first bad number in why. Returns 1 when all are good. */
static int outputs_ok(const lk_loss *loss, const bundle *b, double value, int nan_only, char *why,
                      size_t cap)
{
    int none = lk_loss_reduction(loss) == LK_REDUCTION_NONE;
    if (!none && (nan_only ? isnan(value) : !isfinite(value))) {
        snprintf(why, cap, "value %g", value);
        return 0;
    }
    int64_t k = none ? first_bad(&b->out, nan_only) : -1;
    if (k >= 0) {
        snprintf(why, cap, "out[%lld] = %g", (long long)k, get_elem(&b->out, k));
        return 0;
    }
    for (size_t i = 0; i < b->n_grads; i++) {
        const lk_array *g = &b->grad[b->gnamed_slot[i]];
        if ((k = first_bad(g, nan_only)) >= 0) {
            int s = b->gnamed_slot[i];
            snprintf(why, cap, "gradient of '%s' [%lld] = %g (%s %g)", b->gnamed[i].name,
                     (long long)k, get_elem(g, k), s == 0 ? "logit" : "value",
                     get_elem(&b->in[s], k));
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                     */

static const struct {
    int32_t ndim;
    int64_t shape[4];
} probes[N_PROBES] = {{1, {7}},    {3, {2, 3, 5}},      {4, {2, 1, 4, 4}},
                      {2, {6, 4}}, {4, {1, 2, 12, 12}}, {2, {5, 3}},
                      {2, {3, 1}}};

/* Probe k, or for an example-driven loss its example k (-1: the big one),
 * with slot 0's shape for labels. */
static spec probe_spec(const checker *c, int k, int32_t dtype, int soft)
{
    spec sp;
    memset(&sp, 0, sizeof sp);
    sp.dtype = dtype;
    sp.soft = soft;
    if (c->ex) {
        int i = k < 0 ? N_PROBES : k;
        sp.ex = 1;
        sp.ex_k = k;
        sp.ndim = c->ex_ndim[i];
        memcpy(sp.shape, c->ex_shape[i], sizeof sp.shape);
        return sp;
    }
    sp.ndim = probes[k].ndim;
    memcpy(sp.shape, probes[k].shape, sizeof probes[k].shape);
    return sp;
}

/* The float dtypes slot 0 accepts, float32 first; returns the count. */
static int float_dtypes(const checker *c, int32_t out[2])
{
    int n = 0;
    if (c->d->slots[0]->dtypes & LK_DTYPE_BIT(LK_DTYPE_F32))
        out[n++] = LK_DTYPE_F32;
    if (c->d->slots[0]->dtypes & LK_DTYPE_BIT(LK_DTYPE_F64))
        out[n++] = LK_DTYPE_F64;
    return n;
}

static int32_t best_float(const checker *c)
{
    int32_t dt[2];
    int n = float_dtypes(c, dt);
    return n ? dt[n - 1] : LK_DTYPE_INVALID;
}

/* "float64 shape (2,3,5) alpha=0.25 gamma=2 mean soft targets" */
static void case_label(const checker *c, char *buf, size_t cap, const spec *sp, int set,
                       int32_t red)
{
    char sh[96];
    shape_str(sh, sizeof sh, sp->ndim, sp->shape);
    char ex[32] = "";
    if (sp->ex)
        snprintf(ex, sizeof ex, " example %d", (int)sp->ex_k);
    snprintf(buf, cap, "%s%s shape %s %s %s%s%s%s", lk_dtype_name(sp->dtype), ex, sh,
             c->settings[set].label, lk_reduction_name(red),
             !c->soft_too ? ""
             : sp->soft   ? " soft targets"
                          : " hard targets",
             sp->weight ? " with weight" : "",
             c->settings[set].unit    ? " input in (0.05, 0.95)"
             : c->settings[set].index ? " class-index targets"
                                      : "");
}

/* A float slot besides slot 0 whose values may be fractional targets
 * ([0, 1] or counts): it gets a second run with soft values. */
static int has_float_target(const checker *c)
{
    for (uint32_t s = 1; s < c->n_slots; s++) {
        const lk_slot_desc *sd = c->d->slots[s];
        if (!(sd->flags & LK_SLOT_OPTIONAL) && (sd->dtypes & LK_DTYPES_FLOAT) &&
            (c->values[s] == LK_VALUES_UNIT || c->values[s] == LK_VALUES_NONNEGATIVE))
            return 1;
    }
    return 0;
}

/* The next parameter name of a setting's params ("name": value, ...)
 * from *p, into name; its value skipped. Returns 0 at the end. */
static int next_name(const char **p, char *name, size_t cap)
{
    const char *s = *p + strspn(*p, " ,"), *e;
    if (*s != '"' || !(e = strchr(s + 1, '"')))
        return 0;
    snprintf(name, cap, "%.*s", (int)(e - s - 1), s + 1);
    s = e + 1 + strspn(e + 1, ": ");
    if (*s == '"' || *s == '[') {
        if (!(e = strchr(s + 1, *s == '"' ? '"' : ']')))
            return 0;
        *p = e + 1;
    } else
        *p = s + strcspn(s, ",");
    return 1;
}

/* Whether settings a and b move a parameter in common. */
static int share_param(const setting *a, const setting *b)
{
    char na[96], nb[96];
    for (const char *p = a->params; next_name(&p, na, sizeof na);)
        for (const char *q = b->params; next_name(&q, nb, sizeof nb);)
            if (!strcmp(na, nb))
                return 1;
    return 0;
}

/* Setting alone joined to choice setting j of another parameter, into
 * *out: the params of both, and labels that name both. Returns 0 where j
 * is not such a setting or the joined params do not fit. */
static int join_setting(const checker *c, const setting *alone, int j, setting *out)
{
    const setting *ch = &c->settings[j];
    if (!ch->choice || share_param(ch, alone))
        return 0;
    *out = *alone;
    if ((size_t)snprintf(out->params, sizeof out->params, "%s, %s", ch->params, alone->params) >=
        sizeof out->params)
        return 0;
    fit(out->moved, sizeof out->moved, "%s %s", ch->moved, alone->moved);
    fit(out->label, sizeof out->label, "%s %s", ch->moved, alone->label);
    out->choice = 0;
    return 1;
}

/* A setting the other defaults rule out (ignore_index outside mode
 * multiclass, say), joined to the first choice setting of another
 * parameter with which the loss takes it. Returns whether one was found;
 * else the setting is as it was. */
static int join_choice(checker *c, int set)
{
    const setting alone = c->settings[set];
    for (int j = 1; j < c->n_settings; j++) {
        lk_loss *loss;
        char err[LK_ERRMSG_CAP];
        if (!join_setting(c, &alone, j, &c->settings[set]))
            continue;
        if (make_loss(c, c->rt, set, c->d->default_reduction, &loss, err) == LK_OK) {
            lk_loss_free(loss);
            return 1;
        }
    }
    c->settings[set] = alone;
    return 0;
}

/* Every setting with every offered reduction must build; a failure at the
 * defaults ends the loss's checks (returns 0), other failures drop their
 * setting. */
static int check_create(checker *c)
{
    for (int set = 0; set < c->n_settings; set++)
        for (int32_t red = 0; red < LK_REDUCTION_COUNT; red++) {
            lk_loss *loss;
            char err[LK_ERRMSG_CAP];
            if (!offers(c->d, red))
                continue;
            if (make_loss(c, c->rt, set, red, &loss, err) == LK_OK) {
                lk_loss_free(loss);
                continue;
            }
            if (c->settings[set].opt && join_choice(c, set)) {
                red = -1; /* the joined setting, every reduction again */
                continue;
            }
            if (c->settings[set].opt) {
                /* a choice the other parameters' defaults rule out (the
                 * loss's own cross-parameter rule), and no other choice
                 * makes room for: not a failure */
                size_t used = strlen(c->opt_note);
                if (!used)
                    snprintf(c->opt_note, sizeof c->opt_note,
                             "; not offered with the other defaults: %s (%.90s%s)",
                             c->settings[set].moved, err, strlen(err) > 90 ? "..." : "");
                else if (used < sizeof c->opt_note)
                    snprintf(c->opt_note + used, sizeof c->opt_note - used, ", %s",
                             c->settings[set].moved);
                c->settings[set] = c->settings[--c->n_settings];
                set--;
                break;
            }
            result r;
            res_init(&r, "create", 0);
            res_detail(&r, "%s %s: %s", c->settings[set].label, lk_reduction_name(red), err);
            send_result(c, &r);
            if (set == 0)
                return 0;
            c->settings[set] = c->settings[--c->n_settings];
            set--;
            break;
        }
    return 1;
}

/* Which probe shapes the loss takes: a loss whose slot 0 is ANY may refuse
 * shapes in plan() (LK_ERR_SHAPE or LK_ERR_UNSUPPORTED); that is its right,
 * and those shapes are left out of the other checks. */
static int example_count(checker *c, size_t *used);

static int probe_shapes(checker *c)
{
    int n_ok = 0, n_ex = N_PROBES;
    size_t used = 0;
    if (c->ex)
        n_ex = example_count(c, &used);
    for (int k = 0; k < n_ex; k++) {
        spec sp = probe_spec(c, k, best_float(c), 0);
        char lab[LABEL_CAP], err[LK_ERRMSG_CAP] = "", sh[64];
        bundle b;
        lk_loss *loss = NULL;
        double v;
        case_label(c, lab, sizeof lab, &sp, 0, c->d->default_reduction);
        begin(c, "finite (shape probe) %s", lab);
        lk_status st = bundle_make(c, &sp, &b, err);
        if (st == LK_OK &&
            (st = make_loss(c, c->rt, 0, c->d->default_reduction, &loss, err)) == LK_OK)
            st = run_eval(c, loss, &b, 0, &v, err);
        c->shape_ok[k] = st != LK_ERR_SHAPE && st != LK_ERR_UNSUPPORTED;
        n_ok += c->shape_ok[k];
        shape_str(sh, sizeof sh, sp.ndim, sp.shape);
        if (!c->shape_ok[k] && used < sizeof c->shape_note)
            used += (size_t)snprintf(c->shape_note + used, sizeof c->shape_note - used,
                                     "; shape %s refused (%s)", sh, err);
        lk_loss_free(loss);
        bundle_free(c, &b);
    }
    /* single-shape checks use (2,3,5) when taken, else (6,4), else the first
     * taken */
    c->ref = c->shape_ok[1] ? 1 : c->shape_ok[3] ? 3 : c->shape_ok[0] ? 0 : c->shape_ok[2] ? 2 : 4;
    for (int k = 0; c->ex && k < n_ex; k++)
        if (c->shape_ok[k]) {
            c->ref = k; /* example-driven: the first example taken */
            break;
        }
    if (c->ex && c->ex_ndim[N_PROBES] < 0) { /* no example -1: the reference one */
        c->ex_ndim[N_PROBES] = c->ex_ndim[c->ref];
        memcpy(c->ex_shape[N_PROBES], c->ex_shape[c->ref], sizeof c->ex_shape[0]);
    }
    return n_ok;
}

/* Example-driven: the examples k = 0, 1, ... up to N_PROBES until the hook
 * answers LK_ERR_NOT_FOUND, and the big one k = -1, with slot 0's shape of
 * each (ex_ndim -1: k = -1 has none). A hook that fails otherwise ends the
 * list there and says why in shape_note. Returns how many. */
static int example_count(checker *c, size_t *used)
{
    int n = 0;
    for (int k = -1; k < N_PROBES; k++) {
        lk_tensor ts[MAX_SLOTS];
        int64_t shapes[MAX_SLOTS][LK_MAX_NDIM];
        char err[LK_ERRMSG_CAP] = "";
        int i = k < 0 ? N_PROBES : k;
        lk_status st = example_shapes(c, k, best_float(c), ts, shapes, err);
        c->ex_ndim[i] = -1;
        if (st == LK_OK) {
            c->ex_ndim[i] = ts[0].ndim;
            memcpy(c->ex_shape[i], shapes[0], sizeof c->ex_shape[i]);
            n += k >= 0;
            continue;
        }
        if (st != LK_ERR_NOT_FOUND && *used < sizeof c->shape_note)
            *used += (size_t)snprintf(c->shape_note + *used, sizeof c->shape_note - *used,
                                      "; example %d: %s", k, err);
        if (k >= 0)
            break;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* finite: ordinary inputs give a finite value, output and gradient          */

/* The kind of data a setting is checked on: 0 the checker's, 1 slot 0 in
 * (0.05, 0.95), 2 class indices in the index slot. */
static int data_kind(const setting *s)
{
    return s->unit ? 1 : s->index ? 2 : 0;
}

/* One bundle, every setting of its kind of data and every reduction.
 * Returns 0 after a failure, whose description is in why. */
static int finite_bundle(checker *c, bundle *b, const spec *sp, int kind, long *count, char *why,
                         size_t cap)
{
    for (int set = 0; set < c->n_settings; set++)
        for (int32_t red = 0; red < LK_REDUCTION_COUNT && data_kind(&c->settings[set]) == kind;
             red++) {
            char lab[LABEL_CAP], err[LK_ERRMSG_CAP], bad[LK_ERRMSG_CAP];
            lk_loss *loss;
            double v;
            if (!offers(c->d, red))
                continue;
            case_label(c, lab, sizeof lab, sp, set, red);
            begin(c, "finite %s", lab);
            if (make_loss(c, c->rt, set, red, &loss, err) != LK_OK)
                continue; /* reported by check_create */
            lk_status st = run_eval(c, loss, b, 1, &v, err);
            if (st != LK_OK && opt_refused(c, set, st, err)) {
                lk_loss_free(loss);
                continue;
            }
            c->settings[set].taken++;
            int ok = st == LK_OK && outputs_ok(loss, b, v, 0, bad, sizeof bad);
            lk_loss_free(loss);
            (*count)++;
            if (!ok) {
                snprintf(why, cap, "%s: %s", lab, st == LK_OK ? bad : err);
                return 0;
            }
        }
    return 1;
}

/* Whether opt setting set gives finite results on some probe shape with
 * some kind of data, which it then keeps: the checker's own; where those
 * are not finite or their values are refused (LK_ERR_INVALID,
 * LK_ERR_NUMERIC), slot 0's real values in (0.05, 0.95) (a setting that
 * makes the input a rate or a probability: log_input false, from_logits
 * false); where their dtype is refused, class indices in the index slot
 * (mode multiclass). Cases refused later are left to the checks (cases
 * not taken). */
static int probe_opt(checker *c, int set)
{
    int done = 0;
    /* try 0: the checker's data; 1: slot 0 in (0.05, 0.95); 2: class
     * indices in the index slot; each on every probe shape taken at the
     * defaults until one is taken (a class list fits some shapes) */
    for (int t = 0; t <= 2 && !done; t++) {
        lk_status first = LK_OK;
        if (t == 2 && index_slot(c) < 0)
            break;
        for (int k = 0; k < N_PROBES && !done; k++) {
            spec sp;
            bundle b;
            lk_loss *loss = NULL;
            double v;
            char err[LK_ERRMSG_CAP], bad[LK_ERRMSG_CAP];
            if (!c->shape_ok[k])
                continue;
            c->unit_input = t == 1;
            c->index_target = t == 2;
            sp = probe_spec(c, k, best_float(c), 0);
            lk_status st = bundle_make(c, &sp, &b, err);
            if (st == LK_OK &&
                (st = make_loss(c, c->rt, set, c->d->default_reduction, &loss, err)) == LK_OK)
                st = run_eval(c, loss, &b, 1, &v, err);
            done = st == LK_OK && outputs_ok(loss, &b, v, 0, bad, sizeof bad);
            lk_loss_free(loss);
            bundle_free(c, &b);
            if (first == LK_OK)
                first = st == LK_OK && !done ? LK_ERR_NUMERIC : st;
        }
        c->settings[set].unit = done && t == 1;
        c->settings[set].index = done && t == 2;
        /* the values refused or not finite: try 1; the dtype: try 2 */
        if (!done && t == 0 && first == LK_ERR_DTYPE)
            t = 1;
        else if (!done && t == 0 && first != LK_ERR_INVALID && first != LK_ERR_NUMERIC &&
                 first != LK_ERR_SHAPE)
            break;
    }
    c->unit_input = c->index_target = 0;
    return done;
}

static void probe_opts(checker *c)
{
    for (int set = 1; set < c->n_settings; set++) {
        if (!c->settings[set].opt || probe_opt(c, set))
            continue;
        /* refused every way: a setting that wants another choice (class
         * weights of one class in binary mode) is tried joined to each
         * choice setting of another parameter */
        const setting alone = c->settings[set];
        int joined = 0;
        for (int j = 1; j < c->n_settings && !alone.choice && !joined; j++)
            joined = join_setting(c, &alone, j, &c->settings[set]) && probe_opt(c, set);
        if (!joined)
            c->settings[set] = alone;
    }
}

static void check_finite(checker *c)
{
    int32_t dts[2];
    int n_dt = float_dtypes(c, dts), ok = 1, n_shapes = 0, kinds[3] = {1, 0, 0};
    long count = 0;
    char why[900] = "", err[LK_ERRMSG_CAP];
    for (int set = 0; set < c->n_settings; set++)
        kinds[data_kind(&c->settings[set])] = 1;
    for (int i = 0; ok && i < n_dt; i++)
        for (int k = 0; ok && k < N_PROBES; k++)
            for (int soft = 0; ok && soft <= c->soft_too; soft++)
                for (int kind = 0; ok && kind < 3; kind++) {
                    spec sp = probe_spec(c, k, dts[i], soft);
                    bundle b;
                    if (!c->shape_ok[k] || !kinds[kind] || (kind == 2 && soft))
                        continue;
                    n_shapes += i == 0 && soft == 0 && kind == 0;
                    c->unit_input = kind == 1;
                    c->index_target = kind == 2;
                    lk_status st = bundle_make(c, &sp, &b, err);
                    c->unit_input = c->index_target = 0;
                    if (st != LK_OK) {
                        snprintf(why, sizeof why, "cannot allocate: %s", err);
                        ok = 0;
                        break;
                    }
                    ok = finite_bundle(c, &b, &sp, kind, &count, why, sizeof why);
                    bundle_free(c, &b);
                }
    result r;
    char reds[64], refusals[900];
    reductions_str(c->d, reds, sizeof reds);
    refusals_str(c, refusals, sizeof refusals);
    res_init(&r, "finite", ok);
    res_num(&r, "evaluations", (double)count);
    if (ok)
        res_detail(&r,
                   "%ld evaluations (%s; %d %s%s; %d setting%s;%s %s): value, output and "
                   "gradient finite%s%s%s",
                   count, n_dt == 2 ? "float32, float64" : lk_dtype_name(dts[0]), n_shapes,
                   c->ex ? "example" : "shape", plural(n_shapes), c->n_settings,
                   plural(c->n_settings), c->soft_too ? " hard and soft targets;" : "", reds,
                   c->shape_note, refusals, c->opt_note);
    else
        res_detail(&r, "%s", why);
    send_result(c, &r);
    reset_counts(c); /* grad counts its own */
}

/* ------------------------------------------------------------------------ */
/* grad: analytic gradient vs central differences, float64                   */

typedef struct grad_worst {
    double err;
    int64_t index;
    int slot;
    double analytic, numeric;
    char label[LABEL_CAP];
    long cases;
} grad_worst;

/* The relative error with an absolute floor: |a - n| / max(|a|, |n|,
 * ATOL / RTOL, noise / RTOL), so that err <= RTOL means |a - n| <=
 * max(RTOL max(|a|, |n|), ATOL, noise). noise is the rounding error of the
 * difference quotient itself, which grows with the scalar's size: a large
 * sum must not fail a right gradient. NaN on either side is the worst. */
static double grad_err_at(double a, double n, double noise, double rtol)
{
    if (isnan(a) || isnan(n))
        return HUGE_VAL;
    if (a == n)
        return 0.0;
    double scale = fmax(fmax(fabs(a), fabs(n)), fmax(GRAD_ATOL, noise) / rtol);
    return fabs(a - n) / scale;
}

/* The relative error of an analytic gradient a against a numeric one n,
 * the difference's rounding noise (and GRAD_ATOL) as its floor. */
static double grad_err(double a, double n, double noise)
{
    return grad_err_at(a, n, noise, GRAD_RTOL);
}

/* d scalar / d x[i] by central differences; the step actually taken is
 * (x + h) - (x - h) as rounded, not 2h. */
static lk_status central_diff(checker *c, const lk_loss *loss, bundle *b, double *x, int64_t i,
                              double *out, double *noise, char *err)
{
    double x0 = x[i], h = c->fd_step > 0.0 ? c->fd_step : FD_STEP * fmax(1.0, fabs(x0)), vp, vm;
    volatile double xp = x0 + h, xm = x0 - h;
    x[i] = xp;
    lk_status st = run_eval(c, loss, b, 0, &vp, err);
    if (st != LK_OK) {
        x[i] = x0;
        return st;
    }
    double fp = scalar_of(loss, b, vp);
    x[i] = xm;
    st = run_eval(c, loss, b, 0, &vm, err);
    x[i] = x0;
    if (st != LK_OK)
        return st;
    double fm = scalar_of(loss, b, vm);
    *out = (fp - fm) / (xp - xm);
    /* each value is off by a few ulps of its size (more for long sums) */
    *noise = FD_NOISE_ULPS * DBL_EPSILON * fmax(fabs(fp), fabs(fm)) / (xp - xm);
    return st;
}

/* Compares slot s's analytic gradient (copied in ana) element by element. */
static lk_status grad_slot(checker *c, const lk_loss *loss, bundle *b, int s, const double *ana,
                           const char *lab, grad_worst *w, char *err)
{
    double *x = b->in[s].data;
    for (int64_t i = 0; i < array_numel(&b->in[s]); i++) {
        double num, noise;
        lk_status st = central_diff(c, loss, b, x, i, &num, &noise, err);
        if (st != LK_OK)
            return st;
        double e = grad_err(ana[i], num, noise);
        if (e > w->err || w->err < 0) {
            w->err = e;
            w->index = i;
            w->slot = s;
            w->analytic = ana[i];
            w->numeric = num;
            fit(w->label, sizeof w->label, "%s", lab);
        }
    }
    return LK_OK;
}

/* One case: the analytic gradients of every differentiable float64 slot,
 * then differences for slot 0 and, with soft targets (where a small step
 * stays inside the targets' range), for the other differentiable slots. */
static lk_status grad_case(checker *c, const lk_loss *loss, bundle *b, int soft, const char *lab,
                           grad_worst *w, char *err)
{
    double v;
    lk_status st = run_eval(c, loss, b, 1, &v, err);
    for (size_t g = 0; st == LK_OK && g < b->n_grads; g++) {
        int s = b->gnamed_slot[g];
        /* a slot of any real or positive value is differenced in every run;
         * one of [0, 1] targets or counts only with soft values, where a
         * small step stays in range */
        int any_value = c->values[s] == LK_VALUES_REAL || c->values[s] == LK_VALUES_POSITIVE;
        if (b->in[s].dtype != LK_DTYPE_F64 || (s != 0 && !soft && !any_value))
            continue;
        size_t bytes = b->grad[s].nbytes;
        double *ana = malloc(bytes ? bytes : 1);
        if (!ana) {
            snprintf(err, LK_ERRMSG_CAP, "out of memory");
            return LK_ERR_NOMEM;
        }
        memcpy(ana, b->grad[s].data, bytes);
        st = grad_slot(c, loss, b, s, ana, lab, w, err);
        free(ana);
    }
    w->cases++;
    return st;
}

/* Every shape, reduction and target kind of one setting; returns 0 after an
 * evaluation failed (err says why, w->label where). */
static int weight_slot(const checker *c);

/* The tensors of sp with the kind of data setting set wants (its inputs
 * in (0.05, 0.95), class-index targets, or the checker's own). */
static lk_status bundle_for(checker *c, int set, const spec *sp, bundle *b, char *err)
{
    c->unit_input = c->settings[set].unit;
    c->index_target = c->settings[set].index;
    lk_status st = bundle_make(c, sp, b, err);
    c->unit_input = c->index_target = 0;
    return st;
}

/* Every shape, target kind and reduction, without and (when the loss has an
 * optional weight) with the weight bound: a gradient that ignores the
 * weight fails here. */
static int grad_setting(checker *c, int set, grad_worst *w, char *err)
{
    int ws = weight_slot(c);
    int weighted = !c->ex && ws >= 0 && c->d->slots[ws]->shape != LK_SHAPE_ANY;
    for (int k = 0; k < N_PROBES; k++)
        for (int v = 0; c->shape_ok[k] && v < 3; v++) {
            /* v: 0 hard targets, 1 soft targets, 2 hard targets and the weight */
            if ((v == 1 && !c->soft_too) || (v == 2 && !weighted))
                continue;
            spec sp = probe_spec(c, k, LK_DTYPE_F64, v == 1);
            sp.weight = v == 2;
            int soft = v == 1;
            bundle b;
            if (c->settings[set].index && v == 1)
                continue; /* class indices have no soft form */
            if (bundle_for(c, set, &sp, &b, err) != LK_OK)
                return 0;
            for (int32_t red = 0; red < LK_REDUCTION_COUNT; red++) {
                lk_loss *loss;
                char lab[LABEL_CAP];
                if (!offers(c->d, red) || make_loss(c, c->rt, set, red, &loss, err) != LK_OK)
                    continue;
                case_label(c, lab, sizeof lab, &sp, set, red);
                begin(c, "grad %s", lab);
                lk_status st = grad_case(c, loss, &b, soft, lab, w, err);
                lk_loss_free(loss);
                if (st != LK_OK && opt_refused(c, set, st, err)) {
                    w->cases--;
                    continue;
                }
                c->settings[set].taken++;
                if (st != LK_OK) {
                    fit(w->label, sizeof w->label, "%s", lab);
                    bundle_free(c, &b);
                    return 0;
                }
            }
            bundle_free(c, &b);
        }
    return 1;
}

static void grad_report(checker *c, int set, const grad_worst *w)
{
    result r;
    int ok = w->err <= GRAD_RTOL;
    char where[LABEL_CAP + 96] = "";
    res_init(&r, "grad", ok);
    if (w->err < 0 && c->settings[set].opt && !c->settings[set].taken) {
        res_detail(&r, "%s  not checked: the checker's tensors are refused in every case (%s)",
                   c->settings[set].label, c->settings[set].refusal);
        send_result(c, &r);
        return;
    }
    if (w->err < 0) {
        res_detail(&r, "%s  no element compared (%ld cases)", c->settings[set].label, w->cases);
        send_result(c, &r);
        return;
    }
    if (!ok || w->slot != 0)
        snprintf(where, sizeof where, " at element %lld%s%s%s (analytic %.6g, numeric %.6g)",
                 (long long)w->index, w->slot ? " of '" : "",
                 w->slot ? c->d->slots[w->slot]->name : "", w->slot ? "'" : "", w->analytic,
                 w->numeric);
    /* the worst case's label leads: "grad LOSS float64 shape (7,) ..." */
    const setting *s = &c->settings[set];
    char refused[300] = "";
    if (s->refused)
        snprintf(refused, sizeof refused, "; %ld case%s not taken (%s)", s->refused,
                 plural(s->refused), s->refusal);
    res_detail(&r, "%s  max rel err %.1e%s (tol %g, floor %g; %ld cases%s)", w->label, w->err,
               where, GRAD_RTOL, GRAD_ATOL, w->cases, refused);
    res_num(&r, "max_rel_err", w->err);
    res_num(&r, "tol", GRAD_RTOL);
    res_num(&r, "floor", GRAD_ATOL);
    res_num(&r, "element", (double)w->index);
    res_num(&r, "analytic", w->analytic);
    res_num(&r, "numeric", w->numeric);
    res_str(&r, "slot", c->d->slots[w->slot]->name);
    res_str(&r, "params", c->settings[set].label);
    res_str(&r, "case", w->label);
    send_result(c, &r);
}

static int no_grad_slot(const checker *c)
{
    for (uint32_t s = 0; s < c->n_slots; s++)
        if (c->d->slots[s]->flags & LK_SLOT_DIFFERENTIABLE)
            return 0;
    return 1;
}

/* Whether the loss has a gradient to compare in float64; if not, check
 * name passes with the reason. */
static int grad_checkable(checker *c, const char *name)
{
    if ((c->d->slots[0]->dtypes & LK_DTYPE_BIT(LK_DTYPE_F64)) && !no_grad_slot(c))
        return 1;
    result r;
    res_init(&r, name, 1);
    res_detail(&r, "nothing to check: %s",
               no_grad_slot(c) ? "no differentiable slot" : "slot 0 does not take float64");
    send_result(c, &r);
    return 0;
}

static void check_grad(checker *c)
{
    result r;
    if (!grad_checkable(c, "grad"))
        return;
    for (int set = 0; set < c->n_settings; set++) {
        grad_worst w;
        char err[LK_ERRMSG_CAP];
        memset(&w, 0, sizeof w);
        w.err = -1.0;
        if (grad_setting(c, set, &w, err)) {
            grad_report(c, set, &w);
            c->grad_failed |= !(w.err <= GRAD_RTOL);
            continue;
        }
        c->grad_failed = 1;
        res_init(&r, "grad", 0);
        res_detail(&r, "%s: %s", w.label, err);
        send_result(c, &r);
    }
}

/* ------------------------------------------------------------------------ */
/* float32: the float lanes against float64 on the same numbers              */
/*
 * The gradient check runs in float64, and the float32 kernels (their own
 * code on the SIMD float lanes: other polynomials, other forms) would
 * otherwise be checked only for finite results. Here every float32
 * evaluation of check_finite's cases is repeated in float64 on the same
 * numbers (the float64 data rounded to float32 first) and the two must
 * agree: the value, and each output and gradient normwise (the largest
 * difference against the largest magnitude), to F32_RTOL, which float32
 * arithmetic meets with orders of magnitude to spare and a wrong
 * coefficient or a dropped term does not. */

#define F32_RTOL 1e-4

/* src's float64 values rounded to float32 in place. */
static void round_to_f32(const checker *c, bundle *b)
{
    for (uint32_t s = 0; s < c->n_slots; s++)
        if (b->in[s].data && b->in[s].dtype == LK_DTYPE_F64)
            for (int64_t i = 0; i < array_numel(&b->in[s]); i++)
                set_elem(&b->in[s], i, (double)(float)get_elem(&b->in[s], i));
}

/* dst: src's tensors with its float64 slots as float32 (where the slot
 * takes float32), the same numbers, gradients alike. */
static lk_status bundle_f32_of(checker *c, const bundle *src, bundle *dst, char *err)
{
    lk_status st = LK_OK;
    memset(dst, 0, sizeof *dst);
    for (size_t k = 0; st == LK_OK && k < src->n_named; k++) {
        int s = src->named_slot[k];
        const lk_slot_desc *sd = c->d->slots[s];
        const lk_array *a = &src->in[s];
        int32_t dt = a->dtype == LK_DTYPE_F64 && (sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_F32))
                         ? LK_DTYPE_F32
                         : a->dtype;
        st = alloc_array(c, &dst->in[s], dt, a->ndim, a->shape, err);
        for (int64_t i = 0; st == LK_OK && i < array_numel(a); i++)
            set_elem(&dst->in[s], i, get_elem(a, i));
        dst->named_slot[dst->n_named] = s;
        dst->named[dst->n_named++] =
            (lk_named_tensor){sd->name, lk_array_view(&dst->in[s]), sd->name};
    }
    for (size_t k = 0; st == LK_OK && k < src->n_grads; k++) {
        int s = src->gnamed_slot[k];
        const lk_array *a = &dst->in[s];
        st = alloc_array(c, &dst->grad[s], a->dtype, a->ndim, a->shape, err);
        dst->gnamed_slot[dst->n_grads] = s;
        dst->gnamed[dst->n_grads++] = (lk_named_tensor){
            c->d->slots[s]->name, lk_array_view(&dst->grad[s]), c->d->slots[s]->name};
    }
    if (st != LK_OK)
        bundle_free(c, dst);
    return st;
}

/* |x - y|: 0 for equal infinities and for two NaNs, HUGE_VAL where only
 * one is NaN or the difference is infinite */
static double diff_of(double x, double y)
{
    double e = x == y || (isnan(x) && isnan(y)) ? 0.0 : fabs(x - y);
    return isnan(e) || isinf(e) ? HUGE_VAL : e;
}

/* max |a - b| / max |b| over two arrays of one shape (0 where both are 0) */
static double norm_err(const lk_array *a, const lk_array *b, int64_t *at)
{
    double d = 0.0, m = 0.0;
    *at = 0;
    for (int64_t i = 0; i < array_numel(b); i++) {
        double x = get_elem(a, i), y = get_elem(b, i), e = diff_of(x, y);
        if (e > d)
            d = e, *at = i;
        if (isfinite(y))
            m = fmax(m, fabs(y));
    }
    return d == 0.0 ? 0.0 : m > 0.0 ? d / m : HUGE_VAL;
}

typedef struct f32_worst {
    double err;
    char label[LABEL_CAP + 64];
} f32_worst;

/* One case: set and red on b64 (float64, values already float32's) and
 * its float32 copy. Returns 0 with why set when they disagree. */
static int f32_case(checker *c, bundle *b64, const spec *sp, int set, int32_t red, f32_worst *w,
                    long *count, char *why, size_t cap)
{
    char lab[LABEL_CAP], err[LK_ERRMSG_CAP];
    lk_loss *loss;
    bundle b32;
    double v64, v32;
    if (make_loss(c, c->rt, set, red, &loss, err) != LK_OK)
        return 1; /* reported by check_create */
    spec sp32 = *sp;
    sp32.dtype = LK_DTYPE_F32;
    case_label(c, lab, sizeof lab, &sp32, set, red);
    begin(c, "float32 %s", lab);
    lk_status st = run_eval(c, loss, b64, 1, &v64, err);
    if (st == LK_OK && (st = bundle_f32_of(c, b64, &b32, err)) == LK_OK) {
        if ((st = run_eval(c, loss, &b32, 1, &v32, err)) == LK_OK) {
            int64_t at = 0;
            double e;
            char what[96];
            (*count)++;
            if (red == LK_REDUCTION_NONE) {
                e = norm_err(&b32.out, &b64->out, &at);
                snprintf(what, sizeof what, "output [%lld]: %.9g against %.9g", (long long)at,
                         get_elem(&b32.out, at), get_elem(&b64->out, at));
            } else {
                e = diff_of(v32, v64);
                e = e == 0.0 ? 0.0 : e / fabs(v64);
                snprintf(what, sizeof what, "value %.9g against %.9g", v32, v64);
            }
            for (size_t g = 0; g < b64->n_grads; g++) {
                int s = b64->gnamed_slot[g];
                int64_t gi;
                double eg = norm_err(&b32.grad[s], &b64->grad[s], &gi);
                if (eg > e) {
                    e = eg;
                    snprintf(what, sizeof what, "gradient of '%s' [%lld]: %.9g against %.9g",
                             c->d->slots[s]->name, (long long)gi, get_elem(&b32.grad[s], gi),
                             get_elem(&b64->grad[s], gi));
                }
            }
            if (e > w->err)
                w->err = e, fit(w->label, sizeof w->label, "%s, %s", lab, what);
            if (!(e <= F32_RTOL))
                snprintf(why, cap, "%s: %s (float64 on the same numbers), rel err %.1e, tol %g",
                         lab, what, e, F32_RTOL);
        }
        bundle_free(c, &b32);
    }
    lk_loss_free(loss);
    if (st != LK_OK && !opt_refused(c, set, st, err) && !why[0])
        snprintf(why, cap, "%s: %s", lab, err);
    return !why[0];
}

static void check_float32(checker *c)
{
    int32_t dts[2] = {LK_DTYPE_INVALID, LK_DTYPE_INVALID};
    result r;
    int n = float_dtypes(c, dts);
    if (n < 2) {
        res_init(&r, "float32", 1);
        if (n == 1)
            res_detail(&r, "nothing to compare: slot 0 takes %s only", lk_dtype_name(dts[0]));
        else
            res_detail(&r, "nothing to compare: slot 0 takes neither float32 nor float64");
        send_result(c, &r);
        return;
    }
    /* the data from a copy of the generator, as for pairs: the later
     * checks see the data they saw before this check was added */
    const uint64_t rng = c->rng;
    f32_worst w = {0.0, ""};
    char why[LK_ERRMSG_CAP + LABEL_CAP + 200] = "", err[LK_ERRMSG_CAP];
    long count = 0;
    int ok = 1;
    int ws = weight_slot(c);
    int weighted = !c->ex && ws >= 0 && c->d->slots[ws]->shape != LK_SHAPE_ANY;
    for (int set = 0; ok && set < c->n_settings; set++)
        for (int k = 0; ok && k < N_PROBES; k++)
            for (int v = 0; ok && v < 3; v++) {
                /* v: 0 hard targets, 1 soft targets, 2 hard targets and the weight */
                spec sp = probe_spec(c, k, LK_DTYPE_F64, v == 1);
                bundle b;
                sp.weight = v == 2;
                if (!c->shape_ok[k] || (v == 1 && (!c->soft_too || c->settings[set].index)) ||
                    (v == 2 && !weighted))
                    continue;
                if (bundle_for(c, set, &sp, &b, err) != LK_OK) {
                    snprintf(why, sizeof why, "cannot allocate: %s", err);
                    ok = 0;
                    break;
                }
                round_to_f32(c, &b);
                for (int32_t red = 0; ok && red < LK_REDUCTION_COUNT; red++)
                    if (offers(c->d, red))
                        ok = f32_case(c, &b, &sp, set, red, &w, &count, why, sizeof why);
                bundle_free(c, &b);
            }
    c->rng = rng;
    res_init(&r, "float32", ok);
    if (ok) {
        res_detail(&r,
                   "%ld cases: float32's value, outputs and gradients within %g of float64's on "
                   "the same numbers (normwise); largest %.1e (%s)",
                   count, F32_RTOL, w.err, w.label);
        res_num(&r, "max_rel_err", w.err);
    } else
        res_detail(&r, "%s", why);
    send_result(c, &r);
    reset_counts(c); /* the later checks count their own */
}

/* ------------------------------------------------------------------------ */
/* pairs (--pairs): two parameters moved at once                             */

#define PAIR_FAILS 5 /* failing pairs reported one by one; the rest counted */

/* Settings a and b joined into the scratch setting (index MAX_SETTINGS);
 * 0 where their params do not fit. */
static int pair_setting(checker *c, int a, int b)
{
    const setting *sa = &c->settings[a], *sb = &c->settings[b];
    setting *p = &c->settings[MAX_SETTINGS];
    memset(p, 0, sizeof *p);
    if ((size_t)snprintf(p->params, sizeof p->params, "%s, %s", sa->params, sb->params) >=
        sizeof p->params)
        return 0;
    fit(p->moved, sizeof p->moved, "%s %s", sa->moved, sb->moved);
    fit(p->label, sizeof p->label, "%s", p->moved);
    p->opt = 1;
    p->unit = sa->unit || sb->unit;
    p->index = sa->index || sb->index;
    return 1;
}

/* One pair on probe shape k (hard targets, the default reduction): the
 * gradient against central differences in float64, and float32 against
 * float64 on the same numbers (check_float32's comparison, into *w32).
 * Returns 0 where the loss refuses the checker's tensors there, 1 after a
 * comparison (*w holds it; a failure leaves why set). */
static int pair_case(checker *c, const lk_loss *loss, int k, grad_worst *w, f32_worst *w32,
                     char *why, size_t cap)
{
    const int set = MAX_SETTINGS;
    const int32_t red = c->d->default_reduction;
    int32_t dts[2];
    const int both = float_dtypes(c, dts) == 2;
    char lab[LABEL_CAP], err[LK_ERRMSG_CAP];
    bundle b;
    spec sp = probe_spec(c, k, LK_DTYPE_F64, 0);
    lk_status st = bundle_for(c, set, &sp, &b, err);
    if (st != LK_OK) {
        snprintf(why, cap, "cannot allocate: %s", err);
        return 1;
    }
    if (both)
        round_to_f32(c, &b);
    case_label(c, lab, sizeof lab, &sp, set, red);
    begin(c, "pairs %s", lab);
    st = grad_case(c, loss, &b, 0, lab, w, err);
    if (st != LK_OK && opt_refused(c, set, st, err)) {
        bundle_free(c, &b);
        return 0;
    }
    if (st != LK_OK)
        snprintf(why, cap, "%s: %s", lab, err);
    else if (!(w->err <= GRAD_RTOL))
        snprintf(why, cap, "%s  max rel err %.1e at element %lld (analytic %.6g, numeric %.6g)",
                 w->label, w->err, (long long)w->index, w->analytic, w->numeric);
    else if (both) {
        long n = 0;
        f32_case(c, &b, &sp, set, red, w32, &n, why, cap);
    }
    bundle_free(c, &b);
    return 1;
}

/* Every two settings of different parameters (check_grad's settings: a
 * number moved, an integer, a list, a boolean flipped, another choice)
 * joined, on the first probe shape that takes them (the reference shape
 * first): a combination the loss refuses at creation is its own rule (an
 * ignore_index outside mode multiclass, say) and is counted, not failed. */
static void check_pairs(checker *c)
{
    result r;
    if (!grad_checkable(c, "pairs"))
        return;
    /* the pairs' data are drawn from a copy of the generator: the later
     * checks see the same data with and without --pairs */
    const uint64_t rng = c->rng;
    long n_pairs = 0, n_ruled = 0, n_refused = 0, n_failed = 0;
    char refused[240] = ""; /* the first pairs no shape gave tensors for */
    grad_worst worst;
    f32_worst w32 = {0.0, ""};
    memset(&worst, 0, sizeof worst);
    worst.err = -1.0;
    for (int a = 1; a < c->n_settings; a++)
        for (int b = a + 1; b < c->n_settings; b++) {
            lk_loss *loss;
            char err[LK_ERRMSG_CAP], why[LK_ERRMSG_CAP + LABEL_CAP] = "";
            if (share_param(&c->settings[a], &c->settings[b]) || !pair_setting(c, a, b))
                continue;
            if (make_loss(c, c->rt, MAX_SETTINGS, c->d->default_reduction, &loss, err) != LK_OK) {
                n_ruled++;
                continue;
            }
            n_pairs++;
            int done = 0;
            for (int t = 0; t < N_PROBES && !done; t++) {
                int k = t == 0 ? c->ref : t - 1 < c->ref ? t - 1 : t;
                grad_worst w;
                memset(&w, 0, sizeof w);
                w.err = -1.0;
                if (!c->shape_ok[k] || !(done = pair_case(c, loss, k, &w, &w32, why, sizeof why)))
                    continue;
                if (why[0]) {
                    if (++n_failed <= PAIR_FAILS) {
                        res_init(&r, "pairs", 0);
                        res_detail(&r, "%s", why);
                        send_result(c, &r);
                    }
                } else if (w.err > worst.err)
                    worst = w;
            }
            if (!done && ++n_refused <= 3) {
                size_t used = strlen(refused);
                snprintf(refused + used, sizeof refused - used, "%s%s", used ? ", " : "",
                         c->settings[MAX_SETTINGS].label);
            }
            lk_loss_free(loss);
        }
    c->rng = rng;
    if (n_failed > PAIR_FAILS) {
        res_init(&r, "pairs", 0);
        res_detail(&r, "%ld more pairs failed", n_failed - PAIR_FAILS);
        send_result(c, &r);
    }
    if (n_failed)
        return;
    res_init(&r, "pairs", 1);
    res_num(&r, "pairs", (double)n_pairs);
    char tail[400] = "";
    if (n_ruled)
        snprintf(tail, sizeof tail, "; %ld refused at creation (the loss's own rules)", n_ruled);
    if (n_refused) {
        size_t used = strlen(tail);
        snprintf(tail + used, sizeof tail - used,
                 "; %ld whose tensors every probe shape refused "
                 "(%s%s)",
                 n_refused, refused, n_refused > 3 ? ", ..." : "");
    }
    if (worst.err < 0)
        res_detail(&r, "%ld pairs of moved parameters, none compared%s", n_pairs, tail);
    else {
        res_detail(&r,
                   "%ld pairs of moved parameters, each on one shape: the gradient against "
                   "central differences (float64) max rel err %.1e (%s); float32 against "
                   "float64 on the same numbers, largest %.1e%s",
                   n_pairs, worst.err, worst.label, w32.err, tail);
        res_num(&r, "max_rel_err", worst.err);
        res_num(&r, "float32_max_rel_err", w32.err);
    }
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* reduce: the reductions agree with one another                             */

typedef struct red_vals {
    int have[LK_REDUCTION_COUNT];
    double v[LK_REDUCTION_COUNT]; /* none: the sum of the outputs */
    double abs_none;              /* the sum of |outputs| */
    double out_count;             /* none: the output's element count */
} red_vals;

static int reduce_values(checker *c, bundle *b, const spec *sp, red_vals *rv, char *why, size_t cap)
{
    memset(rv, 0, sizeof *rv);
    for (int32_t red = 0; red < LK_REDUCTION_COUNT; red++) {
        char lab[LABEL_CAP], err[LK_ERRMSG_CAP];
        lk_loss *loss;
        double v;
        if (!offers(c->d, red))
            continue;
        case_label(c, lab, sizeof lab, sp, 0, red);
        begin(c, "reduce %s", lab);
        if (make_loss(c, c->rt, 0, red, &loss, err) != LK_OK)
            continue;
        lk_status st = run_eval(c, loss, b, 0, &v, err);
        rv->v[red] = scalar_of(loss, b, v);
        lk_loss_free(loss);
        if (st != LK_OK) {
            fit(why, cap, "%s: %s", lab, err);
            return 0;
        }
        rv->have[red] = 1;
        if (red == LK_REDUCTION_NONE) {
            rv->out_count = (double)array_numel(&b->out);
            for (int64_t i = 0; i < array_numel(&b->out); i++)
                rv->abs_none += fabs(get_elem(&b->out, i));
        }
    }
    return 1;
}

/* The divisor "mean" should use: the output's element count when none is
 * offered, else the positions of a class-id target, else slot 0's count. */
static double mean_count(const checker *c, const bundle *b, const red_vals *rv)
{
    if (rv->have[LK_REDUCTION_NONE])
        return rv->out_count;
    for (uint32_t s = 1; s < c->n_slots; s++)
        if (c->d->slots[s]->shape == LK_SHAPE_INPUT_NO_CHANNEL && b->in[s].data)
            return (double)array_numel(&b->in[s]);
    return (double)array_numel(&b->in[0]);
}

static double rel_diff(double a, double b, double scale)
{
    if (a == b)
        return 0.0;
    return fabs(a - b) / fmax(scale, 1e-300);
}

/* Appends one comparison "what (rel err e)" to buf; returns 0 when it was
 * required and failed. */
static int compare_red(char *buf, size_t cap, const char *what, double e, double tol, int required)
{
    size_t used = strlen(buf);
    snprintf(buf + used, cap - used, "%s%s (rel err %.1e%s)", used ? "; " : "", what, e,
             required ? "" : ", not required");
    return !required || e <= tol;
}

static int reduce_compare(const checker *c, const bundle *b, const red_vals *rv, double tol,
                          char *buf, size_t cap)
{
    int ok = 1, fused = (c->d->flags & LK_LOSS_FUSED) != 0;
    const double *v = rv->v;
    int has_s = rv->have[LK_REDUCTION_SUM] || rv->have[LK_REDUCTION_NONE];
    double s = rv->have[LK_REDUCTION_SUM] ? v[LK_REDUCTION_SUM] : v[LK_REDUCTION_NONE];
    char what[160];
    if (rv->have[LK_REDUCTION_SUM] && rv->have[LK_REDUCTION_NONE])
        ok &=
            compare_red(buf, cap, "sum = sum(none)",
                        rel_diff(v[LK_REDUCTION_SUM], v[LK_REDUCTION_NONE], rv->abs_none), tol, 1);
    if (rv->have[LK_REDUCTION_MEAN] && has_s) {
        double n = mean_count(c, b, rv), m = v[LK_REDUCTION_MEAN];
        snprintf(what, sizeof what, "mean * %g = sum (sum / mean = %.6g)", n, tidy(s / m));
        ok &= compare_red(buf, cap, what, rel_diff(m * n, s, fabs(s)), tol, fused);
    }
    if (rv->have[LK_REDUCTION_BATCHMEAN] && has_s) {
        double n = (double)(b->in[0].ndim ? b->in[0].shape[0] : 1);
        snprintf(what, sizeof what, "batchmean * %g = sum", n);
        ok &= compare_red(buf, cap, what, rel_diff(v[LK_REDUCTION_BATCHMEAN] * n, s, fabs(s)), tol,
                          1);
    }
    if (!buf[0])
        snprintf(buf, cap, "nothing to compare");
    return ok;
}

static void check_reduce(checker *c)
{
    spec sp = probe_spec(c, c->ref, best_float(c), 0);
    double tol = sp.dtype == LK_DTYPE_F64 ? RED_RTOL : 1e-5;
    char why[700] = "", err[LK_ERRMSG_CAP], reds[64], sh[64], tol_text[32];
    red_vals rv;
    bundle b;
    memset(&rv, 0, sizeof rv);
    int ok = bundle_make(c, &sp, &b, err) == LK_OK;
    if (!ok)
        snprintf(why, sizeof why, "cannot allocate: %s", err);
    else if ((ok = reduce_values(c, &b, &sp, &rv, why, sizeof why)))
        ok = reduce_compare(c, &b, &rv, tol, why, sizeof why);
    bundle_free(c, &b);
    reductions_str(c->d, reds, sizeof reds);
    shape_str(sh, sizeof sh, sp.ndim, sp.shape);
    snprintf(tol_text, sizeof tol_text, " (tol %g)", tol);
    result r;
    res_init(&r, "reduce", ok);
    res_detail(&r, "%s shape %s %s (%s): %s%s", lk_dtype_name(sp.dtype), sh, c->settings[0].label,
               reds, why, strchr(why, '(') ? tol_text : "");
    res_num(&r, "tol", tol);
    for (int32_t red = 0; red < LK_REDUCTION_COUNT; red++)
        if (rv.have[red])
            res_num(&r, lk_reduction_name(red), rv.v[red]);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* weight: a slot named "weight" acts linearly                               */

static int weight_slot(const checker *c)
{
    for (uint32_t s = 1; s < c->n_slots; s++)
        if (is_weight_slot(c->d->slots[s]))
            return (int)s;
    return -1;
}

/* sum with the weight w, then with 2 w. */
static lk_status weight_sums(checker *c, const lk_loss *loss, bundle *b, int ws, double v[2],
                             char *err)
{
    double raw;
    if (!b->in[ws].data) { /* an example that leaves the weight out */
        fit(err, LK_ERRMSG_CAP, "not checked: the loss's example leaves '%s' unbound",
            c->d->slots[ws]->name);
        return LK_ERR_NOT_FOUND;
    }
    lk_status st = run_eval(c, loss, b, 0, &raw, err);
    v[0] = scalar_of(loss, b, raw);
    for (int64_t i = 0; st == LK_OK && i < array_numel(&b->in[ws]); i++)
        set_elem(&b->in[ws], i, 2.0 * get_elem(&b->in[ws], i));
    if (st == LK_OK)
        st = run_eval(c, loss, b, 0, &raw, err);
    v[1] = scalar_of(loss, b, raw);
    return st;
}

/* A weight of rule ANY is tried shaped like the input, then as (C,). */
static lk_status weight_try(checker *c, int ws, int32_t red, double v[2], char *lab, char *err)
{
    lk_status st = LK_ERR_SHAPE;
    for (int per_channel = 0; st == LK_ERR_SHAPE && per_channel <= 1; per_channel++) {
        spec sp = probe_spec(c, c->ref, best_float(c), 0);
        sp.weight = 1;
        sp.weight_per_channel = per_channel;
        if (per_channel && (c->ex || c->d->slots[ws]->shape != LK_SHAPE_ANY))
            break;
        bundle b;
        lk_loss *loss;
        case_label(c, lab, LABEL_CAP, &sp, 0, red);
        begin(c, "weight %s", lab);
        if ((st = bundle_make(c, &sp, &b, err)) != LK_OK)
            return st;
        if ((st = make_loss(c, c->rt, 0, red, &loss, err)) == LK_OK) {
            st = weight_sums(c, loss, &b, ws, v, err);
            lk_loss_free(loss);
        }
        bundle_free(c, &b);
    }
    return st;
}

static void check_weight(checker *c)
{
    int ws = weight_slot(c);
    if (ws < 0)
        return;
    int32_t red = offers(c->d, LK_REDUCTION_SUM) ? LK_REDUCTION_SUM : LK_REDUCTION_NONE;
    result r;
    char lab[LABEL_CAP], err[LK_ERRMSG_CAP];
    double v[2] = {NAN, NAN};
    if (!offers(c->d, red)) {
        res_init(&r, "weight", 1);
        res_detail(&r, "not checked: needs reduction sum or none");
        send_result(c, &r);
        return;
    }
    lk_status st = weight_try(c, ws, red, v, lab, err);
    double e = rel_diff(v[1], 2.0 * v[0], fabs(2.0 * v[0]));
    res_init(&r, "weight", st == LK_OK ? e <= RED_RTOL : c->ex && st == LK_ERR_NOT_FOUND);
    if (st != LK_OK)
        res_detail(&r, "%s: %s", lab, err);
    else
        res_detail(&r, "%s: sum with 2w = %.10g, 2 * sum with w = %.10g (rel err %.1e, tol %g)",
                   lab, v[1], 2.0 * v[0], e, RED_RTOL);
    res_num(&r, "rel_err", e);
    res_num(&r, "tol", RED_RTOL);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* accumulate: a second term adds to the first term's gradient              */

/* The same loss twice in a weighted sum, weights 1 and 2: the host stores
 * the first term's gradient and asks the second to add to it
 * (LK_BLOCK_GRAD_ACCUMULATE), so the value and every gradient must be 3
 * times the loss's own. A kernel that stores instead of adding gives 2. */
/* A reduction that gives one value: the default, or the first offered
 * that is not none; none when the loss offers only that. */
static int32_t reduced_reduction(const checker *c)
{
    static const int32_t order[] = {LK_REDUCTION_MEAN, LK_REDUCTION_SUM, LK_REDUCTION_BATCHMEAN};
    int32_t red = c->d->default_reduction;
    for (size_t i = 0; red == LK_REDUCTION_NONE && i < sizeof order / sizeof order[0]; i++)
        if (offers(c->d, order[i]))
            red = order[i];
    return red;
}

static void check_accumulate(checker *c)
{
    int32_t red = reduced_reduction(c);
    result r;
    char lab[LABEL_CAP], err[LK_ERRMSG_CAP] = "", json[1400];
    if (no_grad_slot(c) || red == LK_REDUCTION_NONE || c->modified) {
        /* a loss that writes into its inputs changes the second term's
         * data: the inputs check reports that */
        res_init(&r, "accumulate", 1);
        res_detail(&r, "nothing to check: %s",
                   no_grad_slot(c)            ? "no differentiable slot"
                   : red == LK_REDUCTION_NONE ? "only reduction none"
                                              : "the loss modifies its inputs (see inputs)");
        send_result(c, &r);
        return;
    }
    spec sp = probe_spec(c, c->ref, best_float(c), 0);
    bundle b;
    lk_loss *one = NULL, *two = NULL;
    double v1 = NAN, v3 = NAN, *g1[MAX_SLOTS] = {0};
    case_label(c, lab, sizeof lab, &sp, 0, red);
    begin(c, "accumulate %s", lab);
    snprintf(json, sizeof json,
             "{\"terms\": [{\"loss\": \"%s\", \"weight\": 1, \"params\": {%s}}, "
             "{\"loss\": \"%s\", \"weight\": 2, \"params\": {%s}}], \"reduction\": \"%s\"}",
             c->d->id, c->settings[0].params, c->d->id, c->settings[0].params,
             lk_reduction_name(red));
    lk_status st = bundle_make(c, &sp, &b, err);
    if (st == LK_OK)
        st = make_loss(c, c->rt, 0, red, &one, err);
    if (st == LK_OK)
        st = lk_loss_from_json(c->rt, json, strlen(json), "check", &two, err);
    if (st == LK_OK)
        st = run_eval(c, one, &b, 1, &v1, err);
    for (size_t g = 0; st == LK_OK && g < b.n_grads; g++) {
        const lk_array *a = &b.grad[b.gnamed_slot[g]];
        g1[g] = malloc((size_t)array_numel(a) * sizeof(double) + 1);
        if (!g1[g]) {
            st = LK_ERR_NOMEM;
            fit(err, LK_ERRMSG_CAP, "out of memory");
            break;
        }
        for (int64_t i = 0; i < array_numel(a); i++)
            g1[g][i] = get_elem(a, i);
    }
    if (st == LK_OK)
        st = run_eval(c, two, &b, 1, &v3, err);
    double tol = is_float_dtype(sp.dtype) && sp.dtype == LK_DTYPE_F32 ? 1e-6 : RED_RTOL;
    double worst = rel_diff(v3, 3.0 * v1, fabs(3.0 * v1)), got = v3, want = 3.0 * v1;
    const char *what = "value";
    char where[160] = "the value";
    for (size_t g = 0; st == LK_OK && g < b.n_grads; g++) {
        const lk_array *a = &b.grad[b.gnamed_slot[g]];
        double scale = 0.0;
        for (int64_t i = 0; i < array_numel(a); i++)
            scale = fmax(scale, fabs(3.0 * g1[g][i]));
        for (int64_t i = 0; i < array_numel(a); i++) {
            double e = rel_diff(get_elem(a, i), 3.0 * g1[g][i], fmax(scale, 1e-300));
            if (e > worst) {
                worst = e;
                got = get_elem(a, i);
                want = 3.0 * g1[g][i];
                what = b.gnamed[g].name;
                snprintf(where, sizeof where, "gradient of '%s' [%lld]", what, (long long)i);
            }
        }
    }
    for (size_t g = 0; g < MAX_SLOTS; g++)
        free(g1[g]);
    lk_loss_free(one);
    lk_loss_free(two);
    bundle_free(c, &b);
    res_init(&r, "accumulate", st == LK_OK && worst <= tol);
    if (st != LK_OK)
        res_detail(&r, "%s: %s", lab, err);
    else
        res_detail(&r,
                   "%s: terms of weights 1 and 2: %s = %.10g, 3 times the loss's own = %.10g "
                   "(rel err %.1e, tol %g)%s",
                   lab, where, got, want, worst, tol,
                   worst > tol && fabs(got - 2.0 * want / 3.0) <= tol * fabs(want)
                       ? "; the second term stored its gradient instead of adding to the first's"
                       : "");
    res_num(&r, "rel_err", worst);
    res_num(&r, "tol", tol);
    res_num(&r, "got", got);
    res_num(&r, "expected", want);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* threads: bitwise the same with 1 and 3 threads                            */

/* A copy of what one evaluation produced: value, output, gradients. */
typedef struct produced {
    double value;
    void *bytes[MAX_SLOTS + 1]; /* gradients by named index, then out */
    size_t len[MAX_SLOTS + 1];
} produced;

static void produced_free(produced *p)
{
    for (int i = 0; i <= MAX_SLOTS; i++)
        free(p->bytes[i]);
    memset(p, 0, sizeof *p);
}

static const lk_array *produced_array(const bundle *b, size_t i)
{
    return i < b->n_grads ? &b->grad[b->gnamed_slot[i]] : &b->out;
}

static void produced_take(produced *p, const bundle *b, double value)
{
    p->value = value;
    for (size_t i = 0; i <= b->n_grads; i++) {
        const lk_array *a = produced_array(b, i);
        p->len[i] = a->nbytes;
        p->bytes[i] = a->nbytes ? malloc(a->nbytes) : NULL;
        if (p->bytes[i])
            memcpy(p->bytes[i], a->data, a->nbytes);
    }
}

/* Describes the first difference between the 1-thread copy and the bundle's
 * current contents; returns 1 when they are bitwise equal. */
static int produced_same(const produced *p, const bundle *b, double value, char *why, size_t cap)
{
    if (memcmp(&p->value, &value, sizeof value) != 0) {
        snprintf(why, cap, "value %.17g with 1 thread, %.17g with %d", p->value, value,
                 OTHER_THREADS);
        return 0;
    }
    for (size_t i = 0; i <= b->n_grads; i++) {
        const lk_array *a = produced_array(b, i);
        if (!p->bytes[i] || memcmp(p->bytes[i], a->data, p->len[i]) == 0)
            continue;
        size_t es = lk_dtype_size(a->dtype);
        int64_t k = 0;
        while (memcmp((char *)p->bytes[i] + k * es, (char *)a->data + k * es, es) == 0)
            k++;
        lk_array one = *a;
        one.data = (char *)p->bytes[i];
        snprintf(why, cap, "%s%s%s[%lld] is %.17g with 1 thread, %.17g with %d",
                 i < b->n_grads ? "gradient of '" : "out", i < b->n_grads ? b->gnamed[i].name : "",
                 i < b->n_grads ? "'" : "", (long long)k, get_elem(&one, k), get_elem(a, k),
                 OTHER_THREADS);
        return 0;
    }
    return 1;
}

/* The reference shape with dim 0 grown until there are several blocks. */
static spec big_spec(const checker *c, int32_t dtype)
{
    if (c->ex)
        return probe_spec(c, -1, dtype, 0);
    spec sp = probe_spec(c, c->ref, dtype, 0);
    int64_t n = numel(sp.ndim, sp.shape);
    /* a whole-batch loss has no blocks and may cost the square of its rows
     * (a similarity matrix): enough rows for several parallel_for chunks */
    int64_t want = (c->d->flags & LK_LOSS_WHOLE) ? BIG_ELEMS / 16 : BIG_ELEMS;
    sp.shape[0] *= (want + n - 1) / n;
    return sp;
}

static int threads_red(checker *c, lk_runtime *rt3, bundle *b, const spec *sp, int32_t red,
                       char *why, size_t cap)
{
    char lab[LABEL_CAP], err[LK_ERRMSG_CAP];
    lk_loss *one = NULL, *three = NULL;
    double v1, v3;
    produced p;
    memset(&p, 0, sizeof p);
    case_label(c, lab, sizeof lab, sp, 0, red);
    begin(c, "threads %s", lab);
    lk_status st = make_loss(c, c->rt, 0, red, &one, err);
    if (st == LK_OK)
        st = make_loss(c, rt3, 0, red, &three, err);
    if (st == LK_OK && (st = run_eval(c, one, b, 1, &v1, err)) == LK_OK) {
        produced_take(&p, b, v1);
        st = run_eval(c, three, b, 1, &v3, err);
    }
    int ok = st == LK_OK && produced_same(&p, b, v3, err, sizeof err);
    if (!ok)
        snprintf(why, cap, "%s: %s", lab, err);
    produced_free(&p);
    lk_loss_free(one);
    lk_loss_free(three);
    return ok;
}

static lk_runtime *open_threads(const char *path, int32_t threads, char *err)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = path;
    opts.use_env_path = 0;
    opts.use_default_path = 0;
    opts.threads = threads;
    lk_runtime *rt = NULL;
    if (lk_runtime_open(&opts, &rt, err) != LK_OK)
        return NULL;
    return rt;
}

static void check_threads(checker *c, const char *path)
{
    char why[900] = "", err[LK_ERRMSG_CAP] = "", sh[64];
    int32_t dts[2];
    int n_dt = float_dtypes(c, dts), ok = 1;
    lk_runtime *rt3 = open_threads(path, OTHER_THREADS, err);
    if (!rt3) {
        snprintf(why, sizeof why, "cannot open a %d-thread runtime: %s", OTHER_THREADS, err);
        ok = 0;
    }
    for (int i = 0; ok && i < n_dt; i++) {
        spec sp = big_spec(c, dts[i]);
        bundle b;
        if (bundle_make(c, &sp, &b, err) != LK_OK) {
            snprintf(why, sizeof why, "cannot allocate: %s", err);
            ok = 0;
        }
        for (int32_t red = 0; ok && red < LK_REDUCTION_COUNT; red++)
            if (offers(c->d, red))
                ok = threads_red(c, rt3, &b, &sp, red, why, sizeof why);
        bundle_free(c, &b);
    }
    if (rt3) /* closed, so that a leak checker run on `check` sees nothing lost */
        lk_runtime_close(rt3);
    spec big = big_spec(c, LK_DTYPE_F64);
    shape_str(sh, sizeof sh, big.ndim, big.shape);
    result r;
    res_init(&r, "threads", ok);
    if (ok)
        res_detail(&r,
                   "shape %s, every dtype and reduction: value, output and gradients "
                   "bitwise identical with 1 and %d threads",
                   sh, OTHER_THREADS);
    else
        res_detail(&r, "%s", why);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* paths: several blocks, on every kernel path                               */
/*
 * The other checks run shapes of one block, on the kernel path this
 * process chose (LOSSKIT_SIMD), and the threads check compares a large
 * case with itself. Here the large case (big_spec: several blocks) runs
 * on each kernel path, the portable one, avx2's and the best (a path the
 * CPU lacks serves the next below it), and each path's value, output and
 * gradients must agree with the portable path's: normwise to PATH_RTOL64
 * in float64 and PATH_RTOL32 in float32, which lane widths and vector math
 * meet with room to spare and a kernel that one path compiles wrong does
 * not. Then slot 0's float64 gradient is compared with central differences
 * at elements spread over every block: a kernel that writes a later
 * block's gradient in the wrong place passes the one-block checks. */

#define PATH_RTOL64   1e-9
#define PATH_RTOL32   1e-5
#define PATH_FD_RTOL  1e-3 /* the large case's differences: noisier sums */
#define PATH_FD_COUNT 40   /* elements differenced, spread over the blocks */

static const char *const path_envs[3] = {"0", "avx2", NULL}; /* NULL: unset, the best */
static const char *const path_names[3] = {"portable", "avx2", "best"};

/* The loss on one kernel path: LOSSKIT_SIMD is read when it is created. */
static lk_status make_loss_on_path(const checker *c, int path, int32_t red, lk_loss **out,
                                   char *err)
{
    const char *env = getenv("LOSSKIT_SIMD");
    char *saved = env ? strdup(env) : NULL;
    if (path_envs[path])
        setenv("LOSSKIT_SIMD", path_envs[path], 1);
    else
        unsetenv("LOSSKIT_SIMD");
    lk_status st = make_loss(c, c->rt, 0, red, out, err);
    if (saved)
        setenv("LOSSKIT_SIMD", saved, 1);
    else
        unsetenv("LOSSKIT_SIMD");
    free(saved);
    return st;
}

/* The first of value, output and gradients where the bundle's current
 * results differ from p's by more than tol normwise; 1 when none does. */
static int produced_close(const produced *p, const bundle *b, double value, double tol, char *why,
                          size_t cap)
{
    double e = diff_of(p->value, value) / fmax(fabs(p->value), DBL_MIN);
    if (!(isnan(p->value) && isnan(value)) && !(e <= tol)) {
        snprintf(why, cap, "value %.17g on the portable path, %.17g here (rel %.1e, tol %g)",
                 p->value, value, e, tol);
        return 0;
    }
    for (size_t i = 0; i <= b->n_grads; i++) {
        const lk_array *a = produced_array(b, i);
        if (!p->bytes[i])
            continue;
        lk_array ref = *a;
        ref.data = p->bytes[i];
        int64_t at;
        double ne = norm_err(a, &ref, &at);
        if (ne <= tol)
            continue;
        snprintf(why, cap,
                 "%s%s%s[%lld] is %.17g on the portable path, %.17g here (normwise %.1e, tol %g)",
                 i < b->n_grads ? "gradient of '" : "out", i < b->n_grads ? b->gnamed[i].name : "",
                 i < b->n_grads ? "'" : "", (long long)at, get_elem(&ref, at), get_elem(a, at), ne,
                 tol);
        return 0;
    }
    return 1;
}

/* Slot 0's gradient (just computed into b) against central differences at
 * PATH_FD_COUNT elements spread over its blocks and its last element. */
static int paths_fd(checker *c, const lk_loss *loss, bundle *b, const char *lab, char *why,
                    size_t cap)
{
    int64_t n = array_numel(&b->in[0]);
    const double *ana = b->grad[0].data;
    double *x = b->in[0].data;
    double *keep = malloc((size_t)(n ? n : 1) * sizeof *keep);
    char err[LK_ERRMSG_CAP];
    if (!keep) {
        snprintf(why, cap, "%s: out of memory", lab);
        return 0;
    }
    memcpy(keep, ana, (size_t)n * sizeof *keep);
    int ok = 1;
    for (int j = 0; ok && j <= PATH_FD_COUNT && n > 0; j++) {
        int64_t i = j == PATH_FD_COUNT
                        ? n - 1
                        : (int64_t)j * n / PATH_FD_COUNT +
                              (int64_t)(rng_next(c) % (uint64_t)(n / PATH_FD_COUNT + 1));
        i = i < n ? i : n - 1;
        double num, noise;
        if (central_diff(c, loss, b, x, i, &num, &noise, err) != LK_OK) {
            snprintf(why, cap, "%s: %s", lab, err);
            ok = 0;
            break;
        }
        double a = keep[i], e = grad_err_at(a, num, noise, PATH_FD_RTOL);
        if (!(e <= PATH_FD_RTOL)) {
            snprintf(why, cap,
                     "%s: gradient of '%s' at element %lld of %lld: analytic %.6g, numeric %.6g "
                     "(rel %.1e, tol %g)",
                     lab, c->d->slots[0]->name, (long long)i, (long long)n, a, num, e,
                     PATH_FD_RTOL);
            ok = 0;
        }
    }
    free(keep);
    return ok;
}

static int paths_red(checker *c, bundle *b, const spec *sp, int32_t red, char *why, size_t cap)
{
    char lab[LABEL_CAP], err[LK_ERRMSG_CAP];
    produced p;
    memset(&p, 0, sizeof p);
    case_label(c, lab, sizeof lab, sp, 0, red);
    begin(c, "paths %s", lab);
    double tol = sp->dtype == LK_DTYPE_F64 ? PATH_RTOL64 : PATH_RTOL32;
    int ok = 1;
    for (int path = 0; ok && path < 3; path++) {
        lk_loss *loss = NULL;
        double v;
        lk_status st = make_loss_on_path(c, path, red, &loss, err);
        if (st == LK_OK)
            st = run_eval(c, loss, b, 1, &v, err);
        if (st != LK_OK) {
            snprintf(why, cap, "%s, %s path: %s", lab, path_names[path], err);
            ok = 0;
        } else if (path == 0) {
            produced_take(&p, b, v);
        } else if (!produced_close(&p, b, v, tol, err, sizeof err)) {
            snprintf(why, cap, "%s, %s path: %s", lab, path_names[path], err);
            ok = 0;
        }
        /* the differences on the best path, once, in float64; not for a
         * whole-batch loss, which has no blocks (and whose evaluation may
         * cost the square of its rows) */
        if (ok && path == 2 && sp->dtype == LK_DTYPE_F64 && red != LK_REDUCTION_SUM &&
            !(c->d->flags & LK_LOSS_WHOLE) && b->n_grads && b->gnamed_slot[0] == 0 &&
            b->in[0].dtype == LK_DTYPE_F64)
            ok = paths_fd(c, loss, b, lab, why, cap);
        lk_loss_free(loss);
    }
    produced_free(&p);
    return ok;
}

static void check_paths(checker *c)
{
    char why[900] = "", err[LK_ERRMSG_CAP] = "", sh[64];
    int32_t dts[2];
    int n_dt = float_dtypes(c, dts), ok = 1;
    for (int i = 0; ok && i < n_dt; i++) {
        spec sp = big_spec(c, dts[i]);
        bundle b;
        if (bundle_make(c, &sp, &b, err) != LK_OK) {
            snprintf(why, sizeof why, "cannot allocate: %s", err);
            ok = 0;
            break;
        }
        for (int32_t red = 0; ok && red < LK_REDUCTION_COUNT; red++)
            if (offers(c->d, red))
                ok = paths_red(c, &b, &sp, red, why, sizeof why);
        bundle_free(c, &b);
    }
    spec big = big_spec(c, LK_DTYPE_F64);
    shape_str(sh, sizeof sh, big.ndim, big.shape);
    result r;
    res_init(&r, "paths", ok);
    if (ok && (c->d->flags & LK_LOSS_WHOLE))
        res_detail(&r,
                   "shape %s, every dtype and reduction: the avx2 and best kernel paths agree "
                   "with the portable one (normwise %g in float64, %g in float32); a "
                   "whole-batch loss has no blocks to difference across",
                   sh, PATH_RTOL64, PATH_RTOL32);
    else if (ok)
        res_detail(&r,
                   "shape %s, every dtype and reduction: the avx2 and best kernel paths agree "
                   "with the portable one (normwise %g in float64, %g in float32); slot 0's "
                   "gradient matches differences at %d elements across the blocks",
                   sh, PATH_RTOL64, PATH_RTOL32, PATH_FD_COUNT + 1);
    else
        res_detail(&r, "%s", why);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* split: one batch over several processes                                   */
/*
 * Data-parallel training evaluates a loss on shards of a batch (dim 0):
 * lk_loss_stats on each, the statistics added as an all-reduce adds them,
 * lk_loss_finish on each (README, "Embedding"). Here the batch of a probe
 * shape with 11 rows is cut into shards of 1 and 10 rows, in one process:
 * the value of every shard's finish must be the whole batch's, and the
 * gradients, gathered (a tensor that is not cut, such as a per-class
 * weight, summed over the shards), the whole batch's, normwise to
 * SPLIT_RTOL, for every setting and reduction but none. A loss whose
 * statistics are kept per sample and that has no partials (sdk/README.md)
 * is refused by the host: those cases are listed, not failed; any other
 * refusal fails (a shard of one row is a batch too). A whole-batch loss
 * must be refused. */
#define SPLIT_RTOL64 1e-9
#define SPLIT_RTOL32 1e-5
#define SPLIT_ROWS   11 /* a count no probe uses for another dim */

/* One shard's tensors: views of rows [r0, r1) of every tensor whose dim 0
 * is the batch's; gradients of the others go to whole-size scratch. */
typedef struct shard {
    lk_named_tensor named[MAX_SLOTS], gnamed[MAX_SLOTS];
    int64_t shape[MAX_SLOTS][LK_MAX_NDIM], gshape[MAX_SLOTS][LK_MAX_NDIM];
    int gcut[MAX_SLOTS];
} shard;

/* t viewing rows [r0, r1) of a, when a's dim 0 is the batch (n rows). */
static int rows_of(const lk_array *a, int64_t n, int64_t r0, int64_t r1, lk_tensor *t,
                   int64_t *shape)
{
    if (a->ndim < 1 || a->shape[0] != n)
        return 0;
    int64_t row = numel(a->ndim - 1, a->shape + 1);
    memcpy(shape, a->shape, (size_t)a->ndim * sizeof *shape);
    shape[0] = r1 - r0;
    t->data = (char *)a->data + (size_t)(r0 * row) * lk_dtype_size(a->dtype);
    t->shape = shape;
    return 1;
}

static void shard_make(const bundle *b, int64_t r0, int64_t r1, lk_array *scratch, shard *s)
{
    int64_t n = b->in[0].shape[0];
    for (size_t i = 0; i < b->n_named; i++) {
        s->named[i] = b->named[i];
        rows_of(&b->in[b->named_slot[i]], n, r0, r1, &s->named[i].tensor, s->shape[i]);
    }
    for (size_t i = 0; i < b->n_grads; i++) {
        s->gnamed[i] = b->gnamed[i];
        s->gcut[i] =
            rows_of(&b->grad[b->gnamed_slot[i]], n, r0, r1, &s->gnamed[i].tensor, s->gshape[i]);
        if (!s->gcut[i])
            s->gnamed[i].tensor.data = scratch[i].data;
    }
}

/* The statistics of both shards, summed; their count in *count. Returns
 * the status of the first call that failed. */
static lk_status split_stats(const lk_loss *loss, shard *sh, size_t n_named, double **sum,
                             size_t *count, char *err)
{
    size_t counts[2] = {0, 0};
    double *mine = NULL;
    lk_status st = LK_OK;
    *sum = NULL;
    for (int k = 0; st == LK_OK && k < 2; k++) {
        lk_eval_args args;
        lk_eval_args_init(&args);
        args.tensors = sh[k].named;
        args.n_tensors = n_named;
        st = lk_loss_stats_count(loss, &args, &counts[k]);
        if (st == LK_OK && k == 1 && counts[1] != counts[0]) {
            fit(err, LK_ERRMSG_CAP,
                "the shards have %zu and %zu statistics: an all-reduce needs as many on every "
                "process",
                counts[0], counts[1]);
            st = LK_ERR_INTERNAL;
            break;
        }
        if (st == LK_OK) {
            mine = calloc(counts[k] + 1, sizeof *mine);
            if (k == 0)
                *sum = calloc(counts[0] + 1, sizeof **sum);
            if (!mine || !*sum) {
                fit(err, LK_ERRMSG_CAP, "out of memory");
                st = LK_ERR_NOMEM;
                break;
            }
            st = lk_loss_stats(loss, &args, mine, counts[k]);
            for (size_t j = 0; st == LK_OK && j < counts[k]; j++)
                (*sum)[j] += mine[j];
            free(mine);
            mine = NULL;
        }
        if (st != LK_OK)
            fit(err, LK_ERRMSG_CAP, "%s: %s", lk_status_name(st), args.errmsg);
    }
    free(mine);
    if (st != LK_OK) {
        free(*sum);
        *sum = NULL;
        return st;
    }
    *count = counts[0];
    return LK_OK;
}

/* What the host says when it refuses to split per-sample statistics. */
#define SPLIT_PER_SAMPLE_REFUSAL "keeps its statistics per sample"

/* One case: 1 when the split agrees, 2 when the host refuses it for
 * per-sample statistics (*refusal set), 0 when it fails (why set), -1 when
 * the whole batch's evaluation fails (*whole_st, why set: the caller
 * decides whether the setting may refuse these tensors). */
static int split_case(checker *c, const lk_loss *loss, bundle *b, const char *lab, double rtol,
                      double *worst, char *refusal, size_t rcap, char *why, size_t cap,
                      lk_status *whole_st, char *whole_err)
{
    char err[LK_ERRMSG_CAP] = "";
    double want = NAN;
    lk_status st = run_eval(c, loss, b, 1, &want, err);
    *whole_st = st;
    if (st != LK_OK) {
        fit(whole_err, LK_ERRMSG_CAP, "%s", err);
        fit(why, cap, "%s: the whole batch: %s", lab, err);
        return -1;
    }
    /* the whole batch's gradients, kept; scratch for the uncut ones */
    lk_array keep[MAX_SLOTS], scratch[MAX_SLOTS];
    memset(keep, 0, sizeof keep);
    memset(scratch, 0, sizeof scratch);
    int ok = 1;
    for (size_t i = 0; ok && i < b->n_grads; i++) {
        const lk_array *g = &b->grad[b->gnamed_slot[i]];
        if (alloc_array(c, &keep[i], g->dtype, g->ndim, g->shape, err) != LK_OK ||
            alloc_array(c, &scratch[i], g->dtype, g->ndim, g->shape, err) != LK_OK)
            ok = 0;
        else
            memcpy(keep[i].data, g->data, g->nbytes);
    }
    int64_t n = b->in[0].shape[0], cut = 1;
    shard sh[2];
    shard_make(b, 0, cut, scratch, &sh[0]);
    shard_make(b, cut, n, scratch, &sh[1]);
    double *sum = NULL;
    size_t count = 0;
    if (ok) {
        begin(c, "split %s", lab);
        snapshot_inputs(c, b);
        st = split_stats(loss, sh, b->n_named, &sum, &count, err);
        if (st == LK_ERR_UNSUPPORTED && strstr(err, SPLIT_PER_SAMPLE_REFUSAL)) {
            fit(refusal, rcap, "%s", err);
            ok = 2;
        } else if (st != LK_OK) {
            fit(why, cap, "%s: statistics: %s", lab, err);
            ok = 0;
        }
    } else {
        fit(why, cap, "cannot allocate: %s", err);
    }
    /* finish on each shard: the uncut gradients add up over the shards */
    for (size_t i = 0; ok == 1 && i < b->n_grads; i++) {
        lk_array *g = &b->grad[b->gnamed_slot[i]];
        poison(g);
        if (!sh[0].gcut[i])
            memset(g->data, 0, g->nbytes);
    }
    for (int k = 0; ok == 1 && k < 2; k++) {
        lk_eval_args args;
        lk_eval_args_init(&args);
        args.tensors = sh[k].named;
        args.n_tensors = b->n_named;
        args.grads = sh[k].gnamed;
        args.n_grads = b->n_grads;
        double v = NAN;
        st = lk_loss_finish(loss, &args, sum, count, &v);
        if (st != LK_OK) {
            fit(why, cap, "%s: finish on shard %d: %s: %s", lab, k, lk_status_name(st),
                args.errmsg);
            ok = 0;
            break;
        }
        double e = fabs(v - want) / fmax(fabs(want), 1e-12);
        if (!(e <= rtol) && !(isnan(v) && isnan(want))) {
            fit(why, cap, "%s: shard %d's value %.17g, the whole batch's %.17g (%.1e)", lab, k, v,
                want, e);
            ok = 0;
        }
        *worst = isfinite(e) ? fmax(*worst, e) : *worst;
        for (size_t i = 0; ok && i < b->n_grads; i++)
            if (!sh[k].gcut[i]) {
                lk_array *g = &b->grad[b->gnamed_slot[i]];
                for (int64_t j = 0; j < array_numel(g); j++)
                    set_elem(g, j, get_elem(g, j) + get_elem(&scratch[i], j));
            }
    }
    if (ok == 1)
        verify_inputs(c, b);
    for (size_t i = 0; ok == 1 && i < b->n_grads; i++) {
        int64_t at = 0;
        double e = norm_err(&b->grad[b->gnamed_slot[i]], &keep[i], &at);
        *worst = fmax(*worst, e);
        if (!(e <= rtol)) {
            fit(why, cap,
                "%s: gradient of '%s' gathered from the shards differs from the whole batch's: "
                "normwise %.1e, worst at [%lld]: %.17g against %.17g",
                lab, b->gnamed[i].name, e, (long long)at, get_elem(&b->grad[b->gnamed_slot[i]], at),
                get_elem(&keep[i], at));
            ok = 0;
        }
    }
    free(sum);
    for (size_t i = 0; i < b->n_grads; i++) {
        free_array(c, &keep[i]);
        free_array(c, &scratch[i]);
    }
    return ok;
}

/* The probe shape to cut: the first accepted one of rank 2 or more (rank
 * 1 may be classes rather than a batch), with SPLIT_ROWS rows. */
static int split_spec(const checker *c, int32_t dtype, spec *out)
{
    int pick = -1;
    for (int k = 0; k < N_PROBES; k++)
        if (c->shape_ok[k] && (pick < 0 || (probes[pick].ndim < 2 && probes[k].ndim >= 2)))
            pick = k;
    if (pick < 0)
        return 0;
    *out = probe_spec(c, pick, dtype, 0);
    out->shape[0] = SPLIT_ROWS;
    return 1;
}

/* A whole-batch loss: lk_loss_stats_count must refuse, saying why. */
static void split_whole(checker *c, int32_t red)
{
    result r;
    char err[LK_ERRMSG_CAP] = "";
    spec sp = probe_spec(c, c->ref, best_float(c), 0);
    bundle b;
    lk_loss *loss = NULL;
    lk_status st = bundle_make(c, &sp, &b, err), sst = st;
    int made = st == LK_OK;
    if (st == LK_OK)
        st = make_loss(c, c->rt, 0, red, &loss, err);
    lk_eval_args args;
    lk_eval_args_init(&args);
    if (st == LK_OK) {
        size_t count = 0;
        args.tensors = b.named;
        args.n_tensors = b.n_named;
        sst = lk_loss_stats_count(loss, &args, &count);
        lk_loss_free(loss);
    }
    if (made)
        bundle_free(c, &b);
    int refused = sst == LK_ERR_UNSUPPORTED && strstr(args.errmsg, "takes the whole batch at once");
    res_init(&r, "split", st == LK_OK && refused);
    if (st != LK_OK)
        res_detail(&r, "cannot build the case: %s", err);
    else if (refused)
        res_detail(&r, "a whole-batch loss: split evaluation is refused (%s)", args.errmsg);
    else
        res_detail(&r, "a whole-batch loss, but split evaluation is not refused as one: %s%s%s",
                   lk_status_name(sst), args.errmsg[0] ? ": " : "", args.errmsg);
    send_result(c, &r);
}

static void check_split(checker *c)
{
    result r;
    char why[900] = "", refusal[300] = "", err[LK_ERRMSG_CAP] = "", sh[64], lab[LABEL_CAP];
    int32_t whole_red = reduced_reduction(c);
    const char *nothing = whole_red == LK_REDUCTION_NONE
                              ? "the loss offers only reduction none, which split evaluation "
                                "never takes"
                          : c->modified ? "the loss modifies its inputs (see inputs)"
                                        : NULL;
    if (nothing) {
        /* a loss that writes into its inputs: the shards would see data
         * the whole batch's evaluation changed */
        res_init(&r, "split", 1);
        res_detail(&r, "nothing to check: %s", nothing);
        send_result(c, &r);
        return;
    }
    if (c->d->flags & LK_LOSS_WHOLE) {
        split_whole(c, whole_red);
        return;
    }
    spec sp;
    if (c->ex || !split_spec(c, LK_DTYPE_F64, &sp)) {
        res_init(&r, "split", 1);
        res_detail(&r, "not checked: the loss builds its own examples, whose dim 0 the checker "
                       "cannot take for the batch");
        send_result(c, &r);
        return;
    }
    int32_t dts[2];
    int n_dt = float_dtypes(c, dts), ok = 1;
    int32_t dt = dts[n_dt - 1]; /* float64 where slot 0 takes it */
    double rtol = dt == LK_DTYPE_F64 ? SPLIT_RTOL64 : SPLIT_RTOL32, worst = 0.0;
    long cases = 0, refused = 0;
    sp.dtype = dt;
    reset_counts(c);
    for (int set = 0; ok && set < c->n_settings; set++) {
        bundle b;
        if (bundle_for(c, set, &sp, &b, err) != LK_OK) {
            fit(why, sizeof why, "cannot allocate: %s", err);
            ok = 0;
            break;
        }
        for (int32_t red = 0; ok && red < LK_REDUCTION_COUNT; red++) {
            lk_loss *loss;
            if (red == LK_REDUCTION_NONE || !offers(c->d, red) ||
                make_loss(c, c->rt, set, red, &loss, err) != LK_OK)
                continue;
            case_label(c, lab, sizeof lab, &sp, set, red);
            char one_why[600] = "", whole_err[LK_ERRMSG_CAP] = "";
            lk_status whole_st = LK_OK;
            int got = split_case(c, loss, &b, lab, rtol, &worst, refusal, sizeof refusal, one_why,
                                 sizeof one_why, &whole_st, whole_err);
            lk_loss_free(loss);
            /* a moved setting that does not take these tensors at all is
             * listed, as the other checks list it */
            if (got == -1 && opt_refused(c, set, whole_st, whole_err))
                continue;
            c->settings[set].taken++;
            cases++;
            if (got == 2)
                refused++;
            if (got <= 0) {
                fit(why, sizeof why, "%s", one_why);
                ok = 0;
            }
        }
        bundle_free(c, &b);
    }
    char refusals[900];
    refusals_str(c, refusals, sizeof refusals);
    shape_str(sh, sizeof sh, sp.ndim, sp.shape);
    res_init(&r, "split", ok);
    res_num(&r, "max_rel_err", worst);
    if (!ok)
        res_detail(&r, "%s", why);
    else if (refused == cases)
        res_detail(&r,
                   "shape %s in %s cut into 1 + %d rows: every case (%ld) is refused, as the "
                   "host refuses per-sample statistics without partials (%s)%s",
                   sh, lk_dtype_name(dt), SPLIT_ROWS - 1, cases, refusal, refusals);
    else
        res_detail(&r,
                   "shape %s in %s cut into 1 + %d rows, %ld settings and reductions: the "
                   "statistics of the shards, summed, give the whole batch's value and "
                   "gradients (largest error %.1e, bound %g)%s%s%s",
                   sh, lk_dtype_name(dt), SPLIT_ROWS - 1, cases - refused, worst, rtol,
                   refused ? "; refused as per-sample statistics without partials in some "
                             "cases: "
                           : "",
                   refused ? refusal : "", refusals);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* gather: a whole-batch loss's declared batch layout                        */
/*
 * A whole-batch loss is not split through statistics: data-parallel
 * processes gather its tensors along each slot's declared batch dim
 * (lk_slot_desc.batch, ABI 1.6) and evaluate the gathered batch. That is
 * right only if the declared dims are where the samples are. Two
 * properties say so: reordering the samples along every declared dim, the
 * same order in every slot and every view, must leave the value unchanged
 * and move the gradients with the samples (a dim that is not the batch's,
 * or views that do not pair rows, breaks the pairing and changes the
 * value); and a slot declared LK_SLOT_PADDED must give the same value with
 * one more zero at the end of each of its other dims, and a zero gradient
 * there (what the gather's padding adds). */

typedef struct gather_layout {
    int32_t dim;
    uint32_t views;
    int32_t padded;
} gather_layout;

/* dst (allocated here) as src reordered: sample j of each view of dst is
 * sample inv[j] of that view of src (n samples a view; inv NULL: the same
 * order); with pad, every dim but the batch's one longer, the new places
 * zero. map[i] receives the
 * index in dst of src's element i. */
static lk_status relayout(const checker *c, const lk_array *src, const gather_layout *g, int64_t n,
                          const int64_t *inv, int pad, lk_array *dst, int64_t *map, char *err)
{
    int64_t shape[LK_MAX_NDIM];
    for (int32_t k = 0; k < src->ndim; k++)
        shape[k] = src->shape[k] + (pad && k != g->dim ? 1 : 0);
    lk_status st = alloc_array(c, dst, src->dtype, src->ndim, shape, err);
    if (st != LK_OK)
        return st;
    if (dst->data != c->guard)
        memset(dst->data, 0, dst->nbytes);
    int64_t total = array_numel(src);
    for (int64_t i = 0; i < total; i++) {
        int64_t rest = i, at = 0, stride = 1;
        for (int32_t k = src->ndim - 1; k >= 0; k--) {
            int64_t idx = rest % src->shape[k];
            rest /= src->shape[k];
            if (k == g->dim && inv)
                idx = idx / n * n + inv[idx % n];
            at += idx * stride;
            stride *= shape[k];
        }
        set_elem(dst, at, get_elem(src, i));
        map[i] = at;
    }
    return LK_OK;
}

/* One case: b under red, then b reordered by perm (pad 0) or padded
 * (pad 1). Returns 1 when they agree, 0 with why set, -1 when b itself
 * is refused (*st0, why set). */
static int gather_case(checker *c, const lk_loss *loss, bundle *b, const gather_layout *lay,
                       int64_t n, const int64_t *inv, int pad, const char *lab, double rtol,
                       double *worst, char *why, size_t cap, lk_status *st0)
{
    char err[LK_ERRMSG_CAP] = "";
    double want = NAN, got = NAN;
    *st0 = run_eval(c, loss, b, 1, &want, err);
    if (*st0 != LK_OK) {
        fit(why, cap, "%s: %s", lab, err);
        return -1;
    }
    bundle m;
    memset(&m, 0, sizeof m);
    int64_t *map[MAX_SLOTS] = {0};
    int ok = 1;
    lk_status st = LK_OK;
    for (size_t i = 0; st == LK_OK && i < b->n_named; i++) {
        int s = b->named_slot[i];
        const gather_layout *g = &lay[i];
        map[s] = malloc((size_t)(array_numel(&b->in[s]) + 1) * sizeof **map);
        if (!map[s]) {
            st = LK_ERR_NOMEM;
            fit(err, sizeof err, "out of memory");
            break;
        }
        st =
            relayout(c, &b->in[s], g, n, pad ? NULL : inv, pad && g->padded, &m.in[s], map[s], err);
        m.named_slot[i] = s;
        m.named[i] = b->named[i];
        m.named[i].tensor = lk_array_view(&m.in[s]);
    }
    m.n_named = b->n_named;
    for (size_t i = 0; st == LK_OK && i < b->n_grads; i++) {
        int s = b->gnamed_slot[i];
        st = alloc_array(c, &m.grad[s], m.in[s].dtype, m.in[s].ndim, m.in[s].shape, err);
        m.gnamed_slot[i] = s;
        m.gnamed[i] = b->gnamed[i];
        m.gnamed[i].tensor = lk_array_view(&m.grad[s]);
    }
    m.n_grads = b->n_grads;
    if (st == LK_OK)
        st = run_eval(c, loss, &m, 1, &got, err);
    if (st != LK_OK) {
        fit(why, cap, "%s: %s: %s", lab, pad ? "padded" : "reordered", err);
        ok = 0;
    }
    double e = ok ? fabs(got - want) / fmax(fabs(want), 1e-12) : 0.0;
    if (ok && !(e <= rtol) && !(isnan(got) && isnan(want))) {
        fit(why, cap, "%s: %s the value is %.17g, against %.17g (%.1e)%s", lab,
            pad ? "with the padded slots one zero longer in each other dim,"
                : "with the samples reordered along the declared batch dims,",
            got, want, e,
            pad ? ""
                : ": a declared dim is not where the samples are, or the views do not pair "
                  "them");
        ok = 0;
    }
    if (ok && isfinite(e))
        *worst = fmax(*worst, e);
    /* each gradient taken back to b's order, where the whole batch's
     * stands; what is left in the moved one is the padding's */
    for (size_t i = 0; ok && i < b->n_grads; i++) {
        int s = b->gnamed_slot[i];
        const lk_array *g0 = &b->grad[s];
        lk_array *g1 = &m.grad[s], back;
        if (alloc_array(c, &back, g0->dtype, g0->ndim, g0->shape, err) != LK_OK) {
            fit(why, cap, "cannot allocate: %s", err);
            ok = 0;
            break;
        }
        for (int64_t j = 0; j < array_numel(g0); j++) {
            set_elem(&back, j, get_elem(g1, map[s][j]));
            set_elem(g1, map[s][j], 0.0);
        }
        double stray = 0.0;
        for (int64_t j = 0; j < array_numel(g1); j++)
            stray = fmax(stray, diff_of(get_elem(g1, j), 0.0));
        int64_t at = 0;
        double ge = norm_err(&back, g0, &at);
        *worst = fmax(*worst, ge);
        if (!(ge <= rtol)) {
            fit(why, cap,
                "%s: %s the gradient of '%s' does not move with the samples: normwise %.1e, "
                "worst at [%lld]: %.17g against %.17g",
                lab, pad ? "padded," : "reordered,", b->gnamed[i].name, ge, (long long)at,
                get_elem(&back, at), get_elem(g0, at));
            ok = 0;
        } else if (stray != 0.0) {
            fit(why, cap, "%s: padded, the gradient of '%s' is %.3g in the padding, not 0", lab,
                b->gnamed[i].name, stray);
            ok = 0;
        }
        free_array(c, &back);
    }
    for (int k = 0; k < MAX_SLOTS; k++)
        free(map[k]);
    bundle_free(c, &m);
    return ok;
}

/* Each tensor's layout (lk_loss_batch_at) and the number of samples they
 * agree on. Returns 1 with *n set, 0 with why set when the layouts
 * disagree with the tensors (a failure), 2 with why set when the loss
 * declares none (not checkable). */
static int gather_layouts(const lk_loss *loss, const bundle *b, gather_layout *lay, int64_t *n,
                          char *why, size_t cap)
{
    *n = -1;
    for (size_t i = 0; i < b->n_named; i++) {
        size_t k = 0, nslots = lk_loss_slot_count(loss);
        const lk_slot_desc *sd = NULL;
        for (k = 0; k < nslots; k++)
            if (lk_loss_slot_at(loss, k, &sd, NULL, NULL) == LK_OK &&
                strcmp(sd->name, b->named[i].name) == 0)
                break;
        char err[LK_ERRMSG_CAP] = "";
        gather_layout *g = &lay[i];
        lk_status st = lk_loss_batch_at(loss, k, &g->dim, &g->views, &g->padded, err);
        if (st != LK_OK) {
            fit(why, cap, "%s", err);
            return 2;
        }
        const lk_tensor *t = &b->named[i].tensor;
        if (g->dim >= t->ndim) {
            fit(why, cap, "'%s' has %d dimensions, but its batch is declared in dim %d",
                b->named[i].name, (int)t->ndim, (int)g->dim);
            return 0;
        }
        int64_t len = t->shape[g->dim];
        if (len % (int64_t)g->views) {
            fit(why, cap, "'%s' has %lld along its batch dim %d, not a multiple of its %u views",
                b->named[i].name, (long long)len, (int)g->dim, g->views);
            return 0;
        }
        len /= (int64_t)g->views;
        if (*n >= 0 && len != *n) {
            fit(why, cap,
                "the declared batch dims disagree: '%s' has %lld samples along dim %d, '%s' "
                "%lld",
                b->named[i].name, (long long)len, (int)g->dim, b->named[0].name, (long long)*n);
            return 0;
        }
        *n = len;
    }
    return 1;
}

static void check_gather(checker *c)
{
    result r;
    if (!(c->d->flags & LK_LOSS_WHOLE)) {
        res_init(&r, "gather", 1);
        res_detail(&r, "nothing to check: the loss is not whole-batch, and processes split it "
                       "through statistics (see split)");
        send_result(c, &r);
        return;
    }
    int32_t dts[2];
    int n_dt = float_dtypes(c, dts), ok = 1, undeclared = 0;
    int32_t dt = dts[n_dt - 1];
    double rtol = dt == LK_DTYPE_F64 ? SPLIT_RTOL64 : SPLIT_RTOL32, worst = 0.0;
    char why[900] = "", err[LK_ERRMSG_CAP] = "", lab[LABEL_CAP];
    long cases = 0, padded_cases = 0;
    reset_counts(c);
    for (int k = 0; ok && !undeclared && k < N_PROBES; k++) {
        if (!c->shape_ok[k])
            continue;
        spec sp = probe_spec(c, k, dt, 0);
        for (int set = 0; ok && !undeclared && set < c->n_settings; set++) {
            bundle b;
            if (bundle_for(c, set, &sp, &b, err) != LK_OK)
                continue; /* an example the loss does not have */
            for (int32_t red = 0; ok && !undeclared && red < LK_REDUCTION_COUNT; red++) {
                lk_loss *loss;
                if (red == LK_REDUCTION_NONE || !offers(c->d, red) ||
                    make_loss(c, c->rt, set, red, &loss, err) != LK_OK)
                    continue;
                gather_layout lay[MAX_SLOTS];
                int64_t n = 0;
                int got = gather_layouts(loss, &b, lay, &n, why, sizeof why);
                if (got == 2)
                    undeclared = 1;
                else if (got == 0)
                    ok = 0;
                int any_pad = 0;
                for (size_t i = 0; got == 1 && i < b.n_named; i++)
                    any_pad |= lay[i].padded;
                if (got == 1 && (n >= 2 || any_pad)) {
                    /* reversed, then the first two swapped back: no sample
                     * stays where it was when n > 2, and n = 2 swaps */
                    int64_t *inv = malloc((size_t)(n + 1) * sizeof *inv);
                    if (!inv) {
                        fit(why, sizeof why, "out of memory");
                        ok = 0;
                    }
                    for (int64_t j = 0; inv && j < n; j++)
                        inv[j] = n - 1 - j;
                    if (inv && n > 2) {
                        int64_t t = inv[0];
                        inv[0] = inv[1], inv[1] = t;
                    }
                    case_label(c, lab, sizeof lab, &sp, set, red);
                    lk_status st0 = LK_OK;
                    begin(c, "gather %s", lab);
                    for (int pad = 0; ok && inv && pad < 2; pad++) {
                        if ((pad && !any_pad) || (!pad && n < 2))
                            continue;
                        got = gather_case(c, loss, &b, lay, n, inv, pad, lab, rtol, &worst, why,
                                          sizeof why, &st0);
                        if (got == -1) {
                            /* a setting that refuses these tensors is listed */
                            if (!opt_refused(c, set, st0, why))
                                ok = 0;
                            break;
                        }
                        c->settings[set].taken++;
                        cases++;
                        padded_cases += pad;
                        if (!got)
                            ok = 0;
                    }
                    free(inv);
                }
                lk_loss_free(loss);
            }
            bundle_free(c, &b);
        }
    }
    char refusals[900];
    refusals_str(c, refusals, sizeof refusals);
    res_init(&r, "gather", ok);
    if (ok && !undeclared)
        res_num(&r, "max_rel_err", worst);
    if (!ok)
        res_detail(&r, "%s", why);
    else if (undeclared)
        res_detail(&r, "not checked: processes cannot gather this loss (%s)", why);
    else if (!cases)
        res_detail(&r, "not checked: no probe has two samples along the declared batch dims%s",
                   refusals);
    else
        res_detail(&r,
                   "%ld cases in %s: the samples reordered along the declared batch dims give "
                   "the same value and gradients that move with them%s (largest error %.1e, "
                   "bound %g)%s",
                   cases, lk_dtype_name(dt),
                   padded_cases ? "; the padded slots with a zero more in each other dim give "
                                  "the same value and a zero gradient there"
                                : "",
                   worst, rtol, refusals);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* empty: zero-size tensors                                                  */
/*
 * An empty batch (a data-parallel shard with nothing in it, the last batch
 * of a filtered dataset) has a defined value in losskit: the sum over no
 * positions is 0 and so is the mean (docs/design.md, "Numerics"), where
 * torch's mean gives 0/0 = NaN. Every offered reduction must give a finite
 * value and gradients of zero size; a refusal fails too, since a caller
 * cannot tell an empty shard from a broken one by an error. */

/* Shape (0,), or (0, 3) when a slot holds class ids (so that C is known).
 * Every tensor's data is the guard page: touching it crashes the child. */
static spec empty_spec(const checker *c)
{
    spec sp;
    memset(&sp, 0, sizeof sp);
    sp.dtype = best_float(c);
    sp.ndim = 1;
    for (uint32_t s = 1; s < c->n_slots; s++)
        if (c->d->slots[s]->shape == LK_SHAPE_INPUT_NO_CHANNEL) {
            sp.ndim = 2;
            sp.shape[1] = 3;
        }
    return sp;
}

/* Every element of the gradients (and of reduction none's output) is 0;
 * describes the first that is not. */
static int all_zero(const bundle *b, int with_out, char *why, size_t cap)
{
    for (size_t i = 0; i < b->n_grads; i++) {
        const lk_array *g = &b->grad[b->gnamed_slot[i]];
        for (int64_t k = 0; g->data && k < array_numel(g); k++)
            if (get_elem(g, k) != 0.0) {
                snprintf(why, cap, "gradient of '%s' [%lld] = %g, not 0", b->gnamed[i].name,
                         (long long)k, get_elem(g, k));
                return 0;
            }
    }
    for (int64_t k = 0; with_out && b->out.data && k < array_numel(&b->out); k++)
        if (get_elem(&b->out, k) != 0.0) {
            snprintf(why, cap, "out[%lld] = %g, not 0", (long long)k, get_elem(&b->out, k));
            return 0;
        }
    return 1;
}

/* One reduction; appends "mean: 0" (or "sum: refused (...)" where
 * may_refuse) to notes, or on failure writes why ("mean: nan") into
 * fail_why. notes may be NULL. */
static int empty_red(checker *c, bundle *b, const spec *sp, int32_t red, int may_refuse,
                     char *notes, size_t cap, char *fail_why, size_t fcap)
{
    char lab[LABEL_CAP], err[LK_ERRMSG_CAP], why[200] = "";
    lk_loss *loss;
    double v = NAN;
    size_t used = notes ? strlen(notes) : 0;
    case_label(c, lab, sizeof lab, sp, 0, red);
    begin(c, "empty %s", lab);
    lk_status st = make_loss(c, c->rt, 0, red, &loss, err);
    if (st == LK_OK) {
        st = run_eval(c, loss, b, 1, &v, err);
        lk_loss_free(loss);
    }
    int ok =
        st == LK_OK && (red == LK_REDUCTION_NONE || isfinite(v)) && all_zero(b, 0, why, sizeof why);
    if (ok) {
        if (notes && used < cap)
            snprintf(notes + used, cap - used, "%s%s: %g", used ? ", " : "", lk_reduction_name(red),
                     red == LK_REDUCTION_NONE ? 0.0 : tidy(v));
        return 1;
    }
    if (st != LK_OK && st != LK_ERR_INTERNAL && may_refuse) {
        if (notes && used < cap)
            snprintf(notes + used, cap - used, "%s%s: refused (%s)", used ? ", " : "",
                     lk_reduction_name(red), err);
        return 1;
    }
    if (st != LK_OK)
        fit(fail_why, fcap, "%s: refused (%s)", lab, err);
    else if (why[0])
        fit(fail_why, fcap, "%s: %s", lab, why);
    else
        fit(fail_why, fcap, "%s: value %g, not a finite number", lab, tidy(v));
    return 0;
}

/* Every offered reduction on one zero-size spec; 0 after the first failure. */
static int empty_spec_ok(checker *c, const spec *sp, int may_refuse, char *notes, size_t cap,
                         char *why, size_t wcap)
{
    char err[LK_ERRMSG_CAP];
    bundle b;
    if (bundle_make(c, sp, &b, err) != LK_OK) {
        fit(why, wcap, "cannot allocate: %s", err);
        return 0;
    }
    int ok = 1;
    for (int32_t red = 0; ok && red < LK_REDUCTION_COUNT; red++)
        if (offers(c->d, red))
            ok = empty_red(c, &b, sp, red, may_refuse, notes, cap, why, wcap);
    bundle_free(c, &b);
    return ok;
}

static void check_empty(checker *c)
{
    if (c->ex) {
        /* the loss's examples are its data; an empty batch is not one the
         * checker can build from its slot rules */
        result r;
        res_init(&r, "empty", 1);
        res_detail(&r, "not checked: example-driven loss (its own tests cover zero-size "
                       "tensors)");
        send_result(c, &r);
        return;
    }
    char notes[700] = "", why[LK_ERRMSG_CAP + LABEL_CAP] = "", sh[64], shapes[200] = "";
    /* A rank-1 input's only dim may be its classes or features rather
     * than a batch: (0,) may be refused cleanly, but a value it gives must
     * be finite. */
    spec sp = empty_spec(c);
    int ok = empty_spec_ok(c, &sp, 1, notes, sizeof notes, why, sizeof why);
    shape_str(sh, sizeof sh, sp.ndim, sp.shape);
    int n_shapes = 1;
    size_t used = (size_t)snprintf(shapes, sizeof shapes, "%s", sh);
    /* the probe shapes the loss takes, with a batch of 0 */
    for (int k = 0; ok && k < N_PROBES; k++) {
        if (!c->shape_ok[k] || probes[k].ndim < 2)
            continue;
        spec zs = probe_spec(c, k, best_float(c), 0);
        zs.shape[0] = 0;
        ok = empty_spec_ok(c, &zs, 0, NULL, 0, why, sizeof why);
        shape_str(sh, sizeof sh, zs.ndim, zs.shape);
        if (used < sizeof shapes)
            used += (size_t)snprintf(shapes + used, sizeof shapes - used, ", %s", sh);
        n_shapes++;
    }
    result r;
    res_init(&r, "empty", ok);
    if (ok)
        res_detail(&r,
                   "shapes %s, every reduction finite with zero-size gradients, no memory "
                   "touched; %s",
                   shapes, notes);
    else
        res_detail(&r,
                   "an empty batch must give a finite value and zero-size gradients "
                   "(docs/design.md): %s",
                   why);
    res_num(&r, "shapes", n_shapes);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* ignored: a batch whose every class id is ignore_index                     */
/*
 * A loss with an integer parameter ignore_index and a class-id slot: the
 * reference shape with every id set to ignore_index (its default, given
 * explicitly in the config, since a loss may read an unset ignore_index
 * as "nothing is ignored") must give a finite value and gradients of
 * exactly 0. */

static int ignore_param(const checker *c, double *value)
{
    for (int i = 0; c->d->params && c->d->params[i]; i++) {
        const lk_param_desc *p = c->d->params[i];
        if (strcmp(p->name, "ignore_index") == 0 && p->type == LK_PARAM_INTEGER) {
            *value = p->default_number;
            return 1;
        }
    }
    return 0;
}

static void check_ignored(checker *c)
{
    double ignore;
    int cls = -1;
    for (uint32_t s = 1; s < c->n_slots && cls < 0; s++)
        if (c->values[s] == LK_VALUES_CLASS)
            cls = (int)s;
    if (c->ex || cls < 0 || !ignore_param(c, &ignore))
        return;
    spec sp = probe_spec(c, c->ref, best_float(c), 0);
    char err[LK_ERRMSG_CAP], why[LK_ERRMSG_CAP + LABEL_CAP] = "", notes[300] = "", sh[64];
    bundle b;
    int ok = bundle_make(c, &sp, &b, err) == LK_OK;
    if (!ok)
        fit(why, sizeof why, "cannot allocate: %s", err);
    for (int64_t i = 0; ok && i < array_numel(&b.in[cls]); i++)
        set_elem(&b.in[cls], i, ignore);
    for (int32_t red = 0; ok && red < LK_REDUCTION_COUNT; red++) {
        if (!offers(c->d, red))
            continue;
        char lab[LABEL_CAP], zwhy[200] = "";
        lk_loss *loss;
        double v = NAN;
        case_label(c, lab, sizeof lab, &sp, 0, red);
        begin(c, "ignored %s", lab);
        char json[512];
        snprintf(json, sizeof json,
                 "{\"loss\": \"%s\", \"params\": {\"ignore_index\": %.0f}, \"reduction\": \"%s\"}",
                 c->d->id, ignore, lk_reduction_name(red));
        loss = NULL;
        lk_status st = lk_loss_from_json(c->rt, json, strlen(json), "check", &loss, err);
        if (st == LK_OK) {
            st = run_eval(c, loss, &b, 1, &v, err);
            lk_loss_free(loss);
        }
        int none = red == LK_REDUCTION_NONE;
        if (st != LK_OK)
            fit(why, sizeof why, "%s: refused (%s)", lab, err);
        else if (!none && !isfinite(v))
            fit(why, sizeof why, "%s: value %g, not a finite number", lab, tidy(v));
        else if (!all_zero(&b, none, zwhy, sizeof zwhy))
            fit(why, sizeof why, "%s: %s", lab, zwhy);
        ok = !why[0];
        size_t used = strlen(notes);
        if (ok && used < sizeof notes)
            snprintf(notes + used, sizeof notes - used, "%s%s: %g", used ? ", " : "",
                     lk_reduction_name(red), none ? 0.0 : tidy(v));
    }
    bundle_free(c, &b);
    shape_str(sh, sizeof sh, sp.ndim, sp.shape);
    result r;
    res_init(&r, "ignored", ok);
    if (ok)
        res_detail(&r, "shape %s, every '%s' = ignore_index %g: finite values, zero gradients: %s",
                   sh, c->d->slots[cls]->name, ignore, notes);
    else
        res_detail(&r,
                   "every '%s' = ignore_index %g must give a finite value and zero "
                   "gradients (docs/design.md): %s",
                   c->d->slots[cls]->name, ignore, why);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* extreme: logits of +-30, +-1e4, +-inf give no NaN                         */

static const double extremes[] = {30.0, 1e4, HUGE_VAL};

/* The gradients at extreme inputs against central differences of absolute
 * step FD_STEP_EXTREME: a step relative to |x| = 1e4 would see the
 * curvature of a softmax near a tie. */
#define FD_STEP_EXTREME 1e-3
static int extreme_grad(checker *c, const lk_loss *loss, bundle *b, const char *lab, grad_worst *w)
{
    char err[LK_ERRMSG_CAP];
    c->fd_step = FD_STEP_EXTREME;
    lk_status st = grad_case(c, loss, b, 0, lab, w, err);
    c->fd_step = 0.0;
    return st == LK_OK;
}

/* One magnitude with random signs over slot 0 (for a [0, 1] slot 0, its
 * ends 0 and 1), every reduction. A finite magnitude must give finite
 * values, outputs and gradients (unless the loss is LK_LOSS_UNBOUNDED, which
 * may give inf but never NaN), and in float64 gradients that agree with
 * central differences; an infinite one must give no NaN. */
static int extreme_case(checker *c, bundle *b, const spec *sp, double mag, char *why, size_t cap)
{
    int unit = c->values[0] == LK_VALUES_UNIT;
    for (int64_t i = 0; i < array_numel(&b->in[0]); i++) {
        double u = rng_unif(c);
        set_elem(&b->in[0], i, unit ? (u < 0.5 ? 0.0 : 1.0) : u < 0.5 ? -mag : mag);
    }
    int nan_only = isinf(mag) || (c->d->flags & LK_LOSS_UNBOUNDED);
    for (int32_t red = 0; red < LK_REDUCTION_COUNT; red++) {
        char lab[LABEL_CAP], err[LK_ERRMSG_CAP], bad[LK_ERRMSG_CAP];
        lk_loss *loss;
        double v;
        if (!offers(c->d, red) || make_loss(c, c->rt, 0, red, &loss, err) != LK_OK)
            continue;
        case_label(c, lab, sizeof lab, sp, 0, red);
        begin(c, "extreme +-%g %s", mag, lab);
        lk_status st = run_eval(c, loss, b, 1, &v, err);
        /* refusing infinite logits, as documented numerics, is allowed */
        int ok = st == LK_OK ? outputs_ok(loss, b, v, nan_only, bad, sizeof bad)
                             : isinf(mag) && st == LK_ERR_NUMERIC;
        grad_worst w;
        memset(&w, 0, sizeof w);
        w.err = -1.0;
        if (ok && st == LK_OK && !isinf(mag) && sp->dtype == LK_DTYPE_F64 &&
            isfinite(scalar_of(loss, b, v)) && !no_grad_slot(c) && !c->grad_failed &&
            extreme_grad(c, loss, b, lab, &w) && w.err > GRAD_RTOL) {
            ok = 0;
            snprintf(bad, sizeof bad,
                     "gradient of '%s' [%lld]: analytic %.10g, central differences %.10g "
                     "(rel err %.1e, tol %g)",
                     c->d->slots[w.slot]->name, (long long)w.index, w.analytic, w.numeric, w.err,
                     GRAD_RTOL);
        }
        lk_loss_free(loss);
        if (!ok) {
            if (unit)
                snprintf(why, cap, "inputs 0 and 1, %s: %s", lab, st == LK_OK ? bad : err);
            else
                snprintf(why, cap, "logits +-%g, %s: %s", mag, lab, st == LK_OK ? bad : err);
            return 0;
        }
    }
    return 1;
}

static void check_extreme(checker *c)
{
    int32_t dts[2];
    int n_dt = float_dtypes(c, dts), ok = 1;
    char why[900] = "", err[LK_ERRMSG_CAP], sh[64];
    int unit = c->values[0] == LK_VALUES_UNIT;
    result r;
    if (!unit && c->values[0] != LK_VALUES_REAL) {
        res_init(&r, "extreme", 1);
        res_detail(&r, "not checked: slot 0 '%s' is neither real-valued nor in [0, 1]",
                   c->d->slots[0]->name);
        send_result(c, &r);
        return;
    }
    for (int i = 0; ok && i < n_dt; i++)
        for (int soft = 0; ok && soft <= c->soft_too; soft++) {
            spec sp = probe_spec(c, c->ref, dts[i], soft);
            bundle b;
            if (bundle_make(c, &sp, &b, err) != LK_OK) {
                snprintf(why, sizeof why, "cannot allocate: %s", err);
                ok = 0;
            }
            for (size_t m = 0; ok && m < (unit ? 1 : sizeof extremes / sizeof extremes[0]); m++)
                ok = extreme_case(c, &b, &sp, extremes[m], why, sizeof why);
            bundle_free(c, &b);
        }
    spec ref = probe_spec(c, c->ref, LK_DTYPE_F64, 0);
    shape_str(sh, sizeof sh, ref.ndim, ref.shape);
    res_init(&r, "extreme", ok);
    if (ok && unit)
        res_detail(&r,
                   "inputs 0 and 1, shape %s, every dtype and reduction%s: finite value, output "
                   "and gradient; float64 gradients match central differences",
                   sh, c->soft_too ? ", hard and soft targets" : "");
    else if (ok)
        res_detail(&r,
                   "logits +-30, +-1e4: %s value, output and gradient, float64 gradients match "
                   "central differences; +-inf: no NaN; shape %s, every dtype and reduction%s",
                   (c->d->flags & LK_LOSS_UNBOUNDED) ? "no NaN in (unbounded loss)" : "finite", sh,
                   c->soft_too ? ", hard and soft targets" : "");
    else
        res_detail(&r, "%s", why);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* inputs: no evaluation changed an input                                    */

static void report_inputs(checker *c)
{
    result r;
    res_init(&r, "inputs", !c->modified);
    res_num(&r, "evaluations", (double)c->n_evals);
    res_num(&r, "modified", (double)c->modified);
    if (!c->modified)
        res_detail(&r, "%ld evaluations left every input tensor unmodified", c->n_evals);
    else
        res_detail(&r, "%d inputs modified in %ld evaluations; first: %s", c->modified, c->n_evals,
                   c->modified_what);
    send_result(c, &r);
}

/* ------------------------------------------------------------------------ */
/* The child: every runtime check of one loss                                */

/* The plugin as the parent loaded it. */
typedef struct plugin_ctx {
    const char *file;      /* as given on the command line */
    const char *load_path; /* as handed to the runtime */
    lk_runtime *rt;        /* 1 thread: no worker thread to lose in fork() */
    int pairs;             /* --pairs */
} plugin_ctx;

static void checker_init(checker *c, const plugin_ctx *pc, const lk_loss_desc *d, int fd)
{
    memset(c, 0, sizeof *c);
    c->rt = pc->rt;
    c->d = d;
    c->fd = fd;
    lk_loss_info info;
    uint32_t minor =
        lk_runtime_find(pc->rt, d->id, &info, NULL) == LK_OK ? info.plugin_abi_minor : 0;
    while (d->slots[c->n_slots]) {
        c->values[c->n_slots] = lk_slot_values_of(d->slots[c->n_slots], c->n_slots, minor);
        c->n_slots++;
    }
    /* the data depend on the loss's id only, never on the order of losses */
    c->rng = 0x6c6f73736b6974ull;
    for (const char *p = d->id; *p; p++)
        c->rng = c->rng * 131u + (unsigned char)*p;
    c->guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c->guard == MAP_FAILED)
        c->guard = NULL;
    /* example-driven: the examples carry their own targets, no soft run */
    c->ex = minor >= 1 && d->example != NULL;
    c->soft_too = !c->ex && has_float_target(c);
    build_settings(c);
}

static void run_checks(checker *c, const plugin_ctx *pc)
{
    result r;
    if (!check_create(c))
        return;
    char err[LK_ERRMSG_CAP];
    if (c->ex && make_loss(c, c->rt, 0, c->d->default_reduction, &c->ex_loss, err) != LK_OK)
        return; /* check_create has reported it */
    if (best_float(c) == LK_DTYPE_INVALID) {
        res_init(&r, "finite", 1);
        res_detail(&r, "not checked: slot 0 '%s' takes no float dtype", c->d->slots[0]->name);
        send_result(c, &r);
        return;
    }
    if (probe_shapes(c) == 0) {
        res_init(&r, "finite", 0);
        res_detail(&r, "no probe shape is accepted%s", c->shape_note);
        send_result(c, &r);
        return;
    }
    probe_opts(c);
    check_finite(c);
    check_grad(c);
    check_float32(c);
    if (pc->pairs)
        check_pairs(c);
    check_reduce(c);
    check_weight(c);
    check_accumulate(c);
    check_threads(c, pc->load_path);
    check_paths(c);
    check_split(c);
    check_gather(c);
    check_empty(c);
    check_ignored(c);
    check_extreme(c);
}

/* What the child allocated, freed before it exits: `check` under a leak
 * checker (valgrind, .ci/run) then reports a plugin's leaks, not its own. */
static void checker_free(checker *c)
{
    for (int i = 0; i < MAX_SLOTS; i++)
        free(c->shadow[i]);
    if (c->ex_loss)
        lk_loss_free(c->ex_loss);
    if (c->guard)
        munmap(c->guard, 4096);
    free(c);
}

static void child_main(const plugin_ctx *pc, const lk_loss_desc *d, int fd)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a crash is expected; no core file */
    /* no alarm(): a kernel may block SIGALRM; the parent keeps the time */
    checker *c = malloc(sizeof *c);
    if (c) {
        checker_init(c, pc, d, fd);
        run_checks(c, pc);
        if (c->n_evals > 0)
            report_inputs(c);
        checker_free(c);
    }
    /* the child's copy of the parent's runtime too (1 thread: nothing to
     * join); the parent's own is untouched */
    lk_runtime_close(pc->rt);
    send_all(fd, "E\n", 2);
    _exit(0); /* not exit(): the parent's stdio buffers are not ours to flush */
}

/* ------------------------------------------------------------------------ */
/* The parent: runs one child per loss and reads its results                 */

/* Parses "R\tname\tok\tdetail[\tfield]..." (the line is cut up in place). */
static void parse_result(char *line, result *r)
{
    char *p = line + 2, *tok;
    res_init(r, "", 0);
    if ((tok = strsep(&p, "\t")))
        snprintf(r->name, sizeof r->name, "%s", tok);
    if ((tok = strsep(&p, "\t")))
        r->ok = strcmp(tok, "1") == 0;
    if ((tok = strsep(&p, "\t")))
        snprintf(r->detail, sizeof r->detail, "%s", tok);
    while ((tok = strsep(&p, "\t"))) {
        char *eq = strchr(tok, '=');
        if (!eq || strlen(tok) < 3 || tok[1] != ':')
            continue;
        *eq = '\0';
        if (tok[0] == 'n')
            res_num(r, tok + 2, strtod(eq + 1, NULL));
        else
            res_str(r, tok + 2, eq + 1);
    }
}

static void child_line(char *line, const char *loss, report *rep, char *label, size_t cap,
                       int *finished)
{
    if (line[0] == 'B' && line[1] == '\t')
        fit(label, cap, "%s", line + 2);
    else if (line[0] == 'R' && line[1] == '\t') {
        result r;
        parse_result(line, &r);
        report_add(rep, loss, &r);
    } else if (strcmp(line, "E") == 0)
        *finished = 1;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reads the child's lines until it closes the pipe or the deadline passes
 * (then *timed_out is set and the child is killed); returns 1 when it said
 * it finished. label receives the last case it began. */
static int read_child(int fd, pid_t pid, int timeout, const char *loss, report *rep, char *label,
                      size_t cap, int *timed_out)
{
    char line[4096];
    size_t used = 0;
    int finished = 0;
    double deadline = mono_s() + timeout;
    *timed_out = 0;
    for (;;) {
        double left = deadline - mono_s();
        struct pollfd pfd = {fd, POLLIN, 0};
        int ready = left > 0 ? poll(&pfd, 1, (int)(left * 1000) + 1) : 0;
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready == 0) {
            kill(pid, SIGKILL);
            *timed_out = 1;
            return finished;
        }
        if (ready < 0)
            return finished;
        char chunk[4096];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return finished;
        for (ssize_t i = 0; i < n; i++) {
            if (chunk[i] != '\n') {
                if (used + 1 < sizeof line) /* a longer line is cut */
                    line[used++] = chunk[i];
                continue;
            }
            line[used] = '\0';
            child_line(line, loss, rep, label, cap, &finished);
            used = 0;
        }
    }
}

/* The child ended without saying it finished: how, and during what. */
static void report_death(report *rep, const char *loss, int status, int timed_out, int timeout,
                         const char *label)
{
    result r;
    const char *during = label[0] ? label : "start-up";
    if (timed_out || (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)) {
        res_init(&r, "timeout", 0);
        res_detail(&r, "no result within %d s, during %s (killed)", timeout, during);
        res_num(&r, "seconds", timeout);
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        res_init(&r, "crash", 0);
        res_detail(&r, "killed by signal %d (%s) during %s", sig, signal_abbrev(sig), during);
        res_num(&r, "signal", sig);
    } else {
        res_init(&r, "crash", 0);
        res_detail(&r, "exited with status %d during %s",
                   WIFEXITED(status) ? WEXITSTATUS(status) : -1, during);
        res_num(&r, "status", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    res_str(&r, "during", during);
    report_add(rep, loss, &r);
}

static void run_child(const plugin_ctx *pc, const lk_loss_desc *d, report *rep)
{
    int fds[2];
    result r;
    fflush(stdout);
    fflush(stderr);
    if (pipe(fds) != 0)
        fds[0] = fds[1] = -1;
    pid_t pid = fds[0] >= 0 ? fork() : -1;
    if (pid == 0) {
        close(fds[0]);
        child_main(pc, d, fds[1]);
    }
    if (pid < 0) {
        if (fds[0] >= 0) {
            close(fds[0]);
            close(fds[1]);
        }
        res_init(&r, "crash", 0);
        res_detail(&r, "cannot start a child process to check the loss");
        report_add(rep, d->id, &r);
        return;
    }
    close(fds[1]);
    char label[LABEL_CAP] = "";
    int timed_out = 0, timeout = check_timeout();
    int finished = read_child(fds[0], pid, timeout, d->id, rep, label, sizeof label, &timed_out);
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            break;
    if (timed_out || !finished || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        report_death(rep, d->id, status, timed_out, timeout, label);
}

/* ------------------------------------------------------------------------ */
/* Checks that run no plugin code: abi and schema                            */

static void check_abi(const plugin_ctx *pc, size_t n_losses, report *rep)
{
    /* as the scan found it, in a process of its own: no plugin code here */
    const lk_plugin *pl = lk_runtime_plugin(pc->rt, pc->load_path);
    result r;
    res_init(&r, "abi", 0);
    if (!pl) {
        res_detail(&r, "the runtime has no descriptor for %s", pc->load_path);
        report_add(rep, NULL, &r);
        return;
    }
    r.ok = pl->abi_major == LK_ABI_MAJOR && present(pl->name) && present(pl->version) &&
           present(pl->summary);
    res_detail(&r, "ABI %u.%u (host %d.%d)%s, plugin %s %s, %zu loss%s%s%s%s", pl->abi_major,
               pl->abi_minor, LK_ABI_MAJOR, LK_ABI_MINOR,
               pl->abi_minor > LK_ABI_MINOR ? ", newer minor: later members are ignored" : "",
               present(pl->name) ? pl->name : "(no name)",
               present(pl->version) ? pl->version : "(no version)", n_losses,
               n_losses == 1 ? "" : "es", present(pl->name) ? "" : "; the name is missing",
               present(pl->version) ? "" : "; the version is missing",
               present(pl->summary) ? "" : "; the summary is missing");
    res_num(&r, "abi_major", pl->abi_major);
    res_num(&r, "abi_minor", pl->abi_minor);
    res_num(&r, "host_abi_major", LK_ABI_MAJOR);
    res_num(&r, "host_abi_minor", LK_ABI_MINOR);
    res_str(&r, "plugin_name", pl->name ? pl->name : "");
    res_str(&r, "plugin_version", pl->version ? pl->version : "");
    report_add(rep, NULL, &r);
}

static int in_range(const lk_param_desc *p, double v)
{
    if (v < p->min || v > p->max || v != v)
        return 0;
    if ((p->flags & LK_PARAM_MIN_EXCLUSIVE) && v == p->min)
        return 0;
    return !((p->flags & LK_PARAM_MAX_EXCLUSIVE) && v == p->max);
}

static int default_ok(const lk_param_desc *p)
{
    switch (p->type) {
    case LK_PARAM_NUMBER:
    case LK_PARAM_INTEGER: return in_range(p, p->default_number);
    case LK_PARAM_BOOL: return p->default_number == 0.0 || p->default_number == 1.0;
    case LK_PARAM_CHOICE:
        for (const char *const *ch = p->choices; ch && *ch && p->default_choice; ch++)
            if (strcmp(*ch, p->default_choice) == 0)
                return 1;
        return 0;
    case LK_PARAM_NUMBER_LIST:
        for (int32_t i = 0; i < p->default_list_len; i++)
            if (!p->default_list || !in_range(p, p->default_list[i]))
                return 0;
        return 1;
    default: return 0;
    }
}

CHECK_PRINTF(3, 4)
static void problem(char *buf, size_t cap, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;
    if (used + 2 >= cap)
        return;
    snprintf(buf + used, cap - used, "%s", used ? "; " : "");
    used = strlen(buf);
    va_start(ap, fmt);
    vsnprintf(buf + used, cap - used, fmt, ap);
    va_end(ap);
}

static int semver(const char *v)
{
    int parts = 0, digits = 0;
    for (; v && *v; v++) {
        if (*v >= '0' && *v <= '9')
            digits++;
        else if (*v == '.' && digits && parts < 2)
            parts++, digits = 0;
        else
            return 0;
    }
    return parts == 2 && digits > 0;
}

static void schema_params(const lk_loss_desc *d, int *n, char *probs, size_t cap)
{
    for (*n = 0; d->params && d->params[*n]; (*n)++) {
        const lk_param_desc *p = d->params[*n];
        for (int j = 0; j < *n; j++)
            if (strcmp(d->params[j]->name, p->name) == 0)
                problem(probs, cap, "parameter '%s' is declared twice", p->name);
        if (!present(p->doc))
            problem(probs, cap, "parameter '%s' has no doc", p->name);
        if (!default_ok(p))
            problem(probs, cap, "parameter '%s' has a default outside its range or choices",
                    p->name);
    }
}

static void schema_slots(const lk_loss_desc *d, int *n, char *probs, size_t cap)
{
    for (*n = 0; d->slots[*n]; (*n)++) {
        const lk_slot_desc *s = d->slots[*n];
        for (int j = 0; j < *n; j++)
            if (strcmp(d->slots[j]->name, s->name) == 0)
                problem(probs, cap, "slot '%s' is declared twice", s->name);
        if (!present(s->doc))
            problem(probs, cap, "slot '%s' has no doc", s->name);
    }
}

static void check_schema(const lk_loss_desc *d, report *rep)
{
    char probs[700] = "", reds[64];
    int np, ns;
    schema_params(d, &np, probs, sizeof probs);
    schema_slots(d, &ns, probs, sizeof probs);
    if (!present(d->summary))
        problem(probs, sizeof probs, "the summary is missing");
    if (!semver(d->version))
        problem(probs, sizeof probs, "version '%s' is not MAJOR.MINOR.PATCH",
                d->version ? d->version : "");
    reductions_str(d, reds, sizeof reds);
    const lk_slot_desc *s0 = d->slots[0];
    result r;
    res_init(&r, "schema", !probs[0]);
    res_detail(&r, "%d param%s, %d slot%s, %s; slot 0 '%s' %s; %s; reductions %s (default %s)", np,
               plural(np), ns, plural(ns),
               probs[0] ? probs : "defaults inside ranges, docs present", s0->name,
               (s0->flags & LK_SLOT_DIFFERENTIABLE) ? "differentiable" : "not differentiable",
               (d->flags & LK_LOSS_WHOLE)   ? "whole"
               : (d->flags & LK_LOSS_FUSED) ? "fused"
                                            : "two-pass",
               reds, lk_reduction_name(d->default_reduction));
    res_num(&r, "params", np);
    res_num(&r, "slots", ns);
    res_str(&r, "version", d->version ? d->version : "");
    report_add(rep, d->id, &r);
}

/* ------------------------------------------------------------------------ */
/* The command                                                               */

typedef struct check_opts {
    const char *file;
    const char *loss;
    int json;
    int all;   /* --all: every plugin the registry lists */
    int pairs; /* --pairs: every two moved parameters together too */
} check_opts;

static int parse_check(int argc, char **argv, check_opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0)
            o->json = 1;
        else if (strcmp(a, "--all") == 0)
            o->all = 1;
        else if (strcmp(a, "--pairs") == 0)
            o->pairs = 1;
        else if (strcmp(a, "--loss") == 0) {
            if (i + 1 >= argc) {
                cli_error("check: --loss needs a loss id");
                return -1;
            }
            o->loss = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            cli_unknown_option("check", a);
            return -1;
        } else if (!o->file)
            o->file = a;
        else {
            cli_error("check: unexpected argument '%s'", a);
            return -1;
        }
    }
    if (o->all && (o->file || o->json)) {
        cli_error("check: --all checks every plugin on the search path: give no PLUGIN.so and "
                  "no --json");
        return -1;
    }
    if (!o->file && !o->all) {
        cli_error("check: usage: losskit check PLUGIN.so [--loss ID] [--pairs] [--json] | --all "
                  "[--loss ID] [--pairs]");
        return -1;
    }
    return 0;
}

enum { EXIT_CHECK_FAILED = 1 }; /* some check failed */

/* The path handed to the runtime. Its search path is colon-separated, and
 * dlopen() would search the library path for a name without a slash. */
static int load_path_of(const char *file, char *buf, size_t cap)
{
    struct stat st;
    if (strchr(file, ':')) {
        cli_error("check: '%s': a plugin path given to check cannot contain ':'", file);
        return EXIT_USAGE;
    }
    if (stat(file, &st) == 0 && S_ISDIR(st.st_mode)) {
        cli_error("check: '%s' is a directory; name one plugin .so file", file);
        return EXIT_USAGE;
    }
    int bare = !strchr(file, '/') && access(file, F_OK) == 0;
    snprintf(buf, cap, "%s%s", bare ? "./" : "", file);
    return EXIT_OK;
}

/* A runtime with the plugin alone on its path, or NULL after printing why
 * the plugin was refused. */
static lk_runtime *open_plugin(const char *path, int *rc)
{
    char err[LK_ERRMSG_CAP] = "";
    lk_runtime *rt = open_threads(path, 1, err);
    if (!rt) {
        cli_error("check: %s", err);
        *rc = EXIT_FAILURE_INTERNAL;
        return NULL;
    }
    size_t n_diag = lk_runtime_diag_count(rt);
    if (n_diag == 0 && lk_runtime_loss_count(rt) > 0)
        return rt;
    for (size_t i = 0; i < n_diag; i++)
        cli_error("check: %s", lk_runtime_diag(rt, i));
    if (n_diag == 0)
        cli_error("check: %s: no losses loaded", path);
    lk_runtime_close(rt);
    *rc = EXIT_PLUGIN;
    return NULL;
}

static void print_summary(const check_opts *o, report *rep)
{
    if (!rep->json) {
        printf("%d passed, %d failed\n", rep->passed, rep->failed);
        return;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "plugin", o->file);
    cJSON_AddItemToObject(root, "checks", rep->checks);
    cJSON_AddNumberToObject(root, "passed", rep->passed);
    cJSON_AddNumberToObject(root, "failed", rep->failed);
    rep->checks = NULL;      /* now owned by root */
    cli_print_json(root, 1); /* the plugin's file name may hold any byte */
    cJSON_Delete(root);
}

/* One plugin file: the ABI, then each loss's schema and checks. */
static int check_file(const check_opts *o, const char *file)
{
    char path[4096], err[LK_ERRMSG_CAP];
    int rc = load_path_of(file, path, sizeof path);
    if (rc != EXIT_OK)
        return rc;
    plugin_ctx pc = {file, path, open_plugin(path, &rc), o->pairs};
    if (!pc.rt)
        return rc;
    lk_loss_info info;
    if (o->loss && !o->all && lk_runtime_find(pc.rt, o->loss, &info, err) != LK_OK) {
        cli_error("check: %s", err);
        lk_runtime_close(pc.rt);
        return EXIT_USAGE;
    }
    report rep = {o->json, o->json ? cJSON_CreateArray() : NULL, 0, 0};
    size_t n = lk_runtime_loss_count(pc.rt);
    check_abi(&pc, n, &rep);
    for (size_t i = 0; i < n; i++) {
        if (lk_runtime_loss_at(pc.rt, i, &info) != LK_OK ||
            (o->loss && strcmp(info.id, o->loss) != 0))
            continue;
        check_schema(info.desc, &rep);
        run_child(&pc, info.desc, &rep);
    }
    print_summary(o, &rep);
    lk_runtime_close(pc.rt);
    return rep.failed ? EXIT_CHECK_FAILED : EXIT_OK;
}

/* --all: every plugin file the registry lists (the search path, then the
 * built-in folder), each checked alone as above, so that a loss added to
 * any plugin is checked with nothing else to edit; with --loss ID only the
 * file that serves ID (an unknown ID is a usage error, as for one file). A
 * plugin the registry could not load fails the run: its warning is printed
 * and counted, since a plugin that never loads checks nothing. */
static int check_all(const check_opts *o)
{
    lk_runtime *rt = cli_open_runtime(1);
    if (!rt)
        return EXIT_PLUGIN;
    char err[LK_ERRMSG_CAP];
    lk_loss_info want;
    if (o->loss && lk_runtime_find(rt, o->loss, &want, err) != LK_OK) {
        cli_error("check: %s", err);
        lk_runtime_close(rt);
        return EXIT_USAGE;
    }
    size_t not_loaded = lk_runtime_diag_count(rt);
    size_t n = lk_runtime_loss_count(rt), n_files = 0;
    char **files = calloc(n ? n : 1, sizeof *files);
    for (size_t i = 0; files && i < n; i++) {
        lk_loss_info info;
        if (lk_runtime_loss_at(rt, i, &info) != LK_OK ||
            (o->loss && (info.shadowed || strcmp(info.id, o->loss) != 0)))
            continue;
        size_t k = 0;
        while (k < n_files && strcmp(files[k], info.plugin_file) != 0)
            k++;
        if (k == n_files && (files[k] = strdup(info.plugin_file)) != NULL)
            n_files++;
    }
    lk_runtime_close(rt);
    int worst = EXIT_OK, failed = 0;
    for (size_t k = 0; k < n_files; k++) {
        printf("== %s\n", files[k]);
        fflush(stdout);
        int rc = check_file(o, files[k]);
        if (rc != EXIT_OK) {
            failed++;
            worst = worst == EXIT_OK || worst == EXIT_CHECK_FAILED ? rc : worst;
        }
        free(files[k]);
    }
    free(files);
    if (not_loaded)
        printf("%zu plugin%s checked, %d with failures, %zu not loaded (see the warnings above)\n",
               n_files, n_files == 1 ? "" : "s", failed, not_loaded);
    else
        printf("%zu plugin%s checked, %d with failures\n", n_files, n_files == 1 ? "" : "s",
               failed);
    if (n_files == 0 || (not_loaded && worst == EXIT_OK))
        return EXIT_PLUGIN;
    return worst;
}

int cmd_check(int argc, char **argv)
{
    check_opts o;
    if (parse_check(argc, argv, &o) != 0)
        return EXIT_USAGE;
    return o.all ? check_all(&o) : check_file(&o, o.file);
}
