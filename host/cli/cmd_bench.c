/* cmd_bench.c: `losskit bench`, the speed of a loss against the memory
 * roofline measured in the same process and run.
 *
 * The roofline is a plain streaming kernel that moves the same bytes the
 * loss moves (lk_loss_traffic: every input read once per pass, twice for a
 * two-pass loss's forward+backward; the gradient written once, and read and
 * written again by each further term of a sum), on the same number of
 * threads, timed in rounds with the loss (time_rounds). The fraction of the
 * roofline is the median of the rounds' roofline time / loss time: 1.0
 * means the loss runs at memory speed. A second fraction compares the loss
 * with a streaming kernel over the least any loss must move (inputs once,
 * the gradient once), which a two-pass loss cannot reach.
 *
 * --dtype float64 synthesises every floating-point slot (and so the
 * gradient) in float64; int64 class-index targets stay int64. Bytes are
 * counted from the tensors as allocated, so they follow the dtype, and the
 * roofline streams that many bytes.
 *
 * Exit codes (docs/errors.md): 2 for bad options, a config that cannot be
 * built, and a --shape the loss refuses; 4 when the loss refuses the data
 * bench synthesised on a shape of its own choosing, or a call fails on
 * them; 1 when memory runs out. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "losskit/kernel.h" /* lk_shape_str */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

/* Outputs of this many bytes or more are written with streaming stores by
 * the roofline, as the kernel layer writes a gradient that large
 * (LK_STREAM_BYTES in the SDK's losskit/loss.h). */
#define ROOF_STREAM_BYTES ((size_t)16 << 20)
/* Elements per chunk of a roofline pass (a loss's largest block) and the
 * most threads a roofline runs on. */
#define ROOF_GRAIN       ((size_t)262144)
#define ROOF_MAX_THREADS 1024

#define MAX_SLOTS 16
/* --repeat's range; the most elements a --shape may hold (what the host
 * indexes: lk_loss_eval refuses a tensor of more, engine.c's
 * check_tensor); the host-overhead probe's target size. */
#define REPEAT_MAX      10000
#define SHAPE_MAX_NUMEL (INT64_MAX >> 4)
#define PROBE_ELEMENTS  64
#define BENCH_USAGE                                                                                \
    "losskit bench CONFIG [--shape N,C,H,W] [--dtype float32|float64] [--threads N] "              \
    "[--repeat K] [--json]"

typedef struct bench_opts {
    const char *config;
    int32_t ndim;
    int64_t shape[LK_MAX_NDIM];
    int32_t threads;
    int32_t dtype; /* of the floating-point slots: LK_DTYPE_F32 or LK_DTYPE_F64 */
    int repeat;
    int json;
    const char *shape_text; /* --shape as given; NULL: bench chooses the shape */
} bench_opts;

typedef struct bench_data {
    lk_array arrays[MAX_SLOTS];
    lk_named_tensor named[MAX_SLOTS];
    int32_t values[MAX_SLOTS]; /* what each tensor holds (an lk_slot_values) */
    uint8_t onehot[MAX_SLOTS]; /* one-hot rows over dim 1 (fill_onehot) */
    size_t n;
    lk_array grad;
    lk_named_tensor named_grad;
    size_t bytes_in; /* every input tensor once */
} bench_data;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* "(2, 3, 8, 8)", the SDK's form of a shape, returned for use in place */
static const char *shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape)
{
    lk_shape_str(buf, cap, ndim, shape);
    return buf;
}

/* The product of the dimensions; -1 when it overflows 64 bits. */
static int64_t numel_of(int32_t ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int32_t k = 0; k < ndim; k++)
        if (__builtin_mul_overflow(n, shape[k], &n))
            return -1;
    return n;
}

/* --shape: whole numbers of at least 1 separated by single commas, at most
 * LK_MAX_NDIM of them, SHAPE_MAX_NUMEL elements in all. A zero dimension
 * is refused: an empty tensor has nothing to time (and no GB/s). */
static int parse_shape(const char *text, bench_opts *o)
{
    const char *p = text;
    int ndim = 0, big = 0;
    for (;;) {
        if (*p < '0' || *p > '9')
            goto malformed;
        uint64_t v = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (v > ((uint64_t)INT64_MAX - 9) / 10)
                big = 1;
            else
                v = v * 10 + (uint64_t)(*p - '0');
        }
        if (ndim < LK_MAX_NDIM)
            o->shape[ndim] = big ? INT64_MAX : (int64_t)v;
        ndim++;
        if (*p == '\0')
            break;
        if (*p != ',')
            goto malformed;
        p++; /* a value must follow: "1,2," and "1,,2" are malformed */
    }
    if (ndim > LK_MAX_NDIM) {
        cli_error("bench: --shape '%s' has %d dimensions; at most %d", text, ndim, LK_MAX_NDIM);
        return -1;
    }
    o->ndim = ndim;
    for (int k = 0; k < ndim; k++)
        if (o->shape[k] == 0) {
            cli_error("bench: --shape '%s': dimension %d is 0; every dimension must be at least 1 "
                      "(an empty tensor has nothing to time)",
                      text, k + 1);
            return -1;
        }
    int64_t n = big ? -1 : numel_of(o->ndim, o->shape);
    if (n < 0) {
        cli_error("bench: --shape '%s': the element count overflows a 64-bit integer; a tensor "
                  "holds at most %lld elements",
                  text, (long long)SHAPE_MAX_NUMEL);
        return -1;
    }
    if (n > SHAPE_MAX_NUMEL) {
        cli_error("bench: --shape '%s': %lld elements are more than a tensor holds (at most %lld)",
                  text, (long long)n, (long long)SHAPE_MAX_NUMEL);
        return -1;
    }
    o->shape_text = text;
    return 0;
malformed:
    cli_error("bench: --shape '%s' is not a list like 16,1,1024,1024 (whole numbers of at least "
              "1, separated by commas)",
              text);
    return -1;
}

/* A --shape whose input tensor alone is larger than the machine's memory
 * cannot be timed: refused as usage, before anything is allocated. */
static int shape_fits_memory(const bench_opts *o)
{
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return 1;
    unsigned long long mem = (unsigned long long)pages * (unsigned long long)page;
    unsigned long long n = (unsigned long long)numel_of(o->ndim, o->shape);
    unsigned long long bytes = n * lk_dtype_size(o->dtype); /* n <= SHAPE_MAX_NUMEL */
    if (bytes > mem) {
        cli_error("bench: --shape '%s': %llu elements make a %s tensor of %llu bytes, more than "
                  "this machine's memory (%llu bytes)",
                  o->shape_text, n, lk_dtype_name(o->dtype), bytes, mem);
        return 0;
    }
#else
    (void)o;
#endif
    return 1;
}

/* --repeat: digits only, in [1, REPEAT_MAX]. */
static int parse_repeat(const char *text, int *out)
{
    long v = 0;
    const char *p = text;
    for (; *p >= '0' && *p <= '9' && v <= REPEAT_MAX; p++)
        v = v * 10 + (*p - '0');
    if (p == text || *p || v < 1 || v > REPEAT_MAX) {
        cli_error("bench: --repeat '%s' is not a whole number of rounds in [1, %d]", text,
                  REPEAT_MAX);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_bench(int argc, char **argv, bench_opts *o)
{
    static const char *const valued[] = {"--shape", "--dtype", "--threads", "--repeat"};
    static const char *const example[] = {"N,C,H,W", "float32|float64", "N", "K"};
    memset(o, 0, sizeof *o);
    o->repeat = 5;
    o->dtype = LK_DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }
        if (a[0] != '-') {
            if (o->config) {
                cli_error("bench: unexpected argument '%s' (the config is '%s')", a, o->config);
                return -1;
            }
            o->config = a;
            continue;
        }
        size_t opt = 0;
        while (opt < 4 && strcmp(a, valued[opt]) != 0)
            opt++;
        if (opt == 4) {
            cli_unknown_option("bench", a);
            return -1;
        }
        if (!v) {
            cli_error("bench: %s needs a value (%s %s)", a, a, example[opt]);
            return -1;
        }
        i++;
        if (strcmp(a, "--shape") == 0) {
            if (parse_shape(v, o) != 0)
                return -1;
        } else if (strcmp(a, "--dtype") == 0) {
            if (strcmp(v, "float32") == 0)
                o->dtype = LK_DTYPE_F32;
            else if (strcmp(v, "float64") == 0)
                o->dtype = LK_DTYPE_F64;
            else {
                cli_error("bench: --dtype '%s' is not float32 or float64", v);
                return -1;
            }
        } else if (strcmp(a, "--threads") == 0) {
            if ((o->threads = cli_parse_threads(v)) < 0)
                return -1;
        } else if (parse_repeat(v, &o->repeat) != 0) {
            return -1;
        }
    }
    if (!o->config) {
        cli_error("bench: usage: " BENCH_USAGE);
        return -1;
    }
    if (o->shape_text && !shape_fits_memory(o))
        return -1;
    return 0;
}

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Fills a slot's tensor with plausible data for what its values are (an
 * lk_slot_values): reals in [-4, 4), targets 1 with probability 0.3, class
 * ids, signs, counts, and positive values in [0.5, 1.5). */
static void fill(lk_array *a, int32_t values, int64_t classes, uint64_t seed)
{
    size_t n = a->nbytes / lk_dtype_size(a->dtype);
    for (size_t i = 0; i < n; i++) {
        double u = (double)(next_random(&seed) >> 11) / 9007199254740992.0, v;
        switch (values) {
        case LK_VALUES_REAL: v = 8.0 * u - 4.0; break;
        case LK_VALUES_UNIT:
        case LK_VALUES_BINARY: v = u < 0.3 ? 1.0 : 0.0; break;
        case LK_VALUES_SIGN: v = u < 0.3 ? 1.0 : -1.0; break;
        case LK_VALUES_NONNEGATIVE: v = floor(4.0 * u); break;
        case LK_VALUES_CLASS: v = (double)((int64_t)(u * (double)classes) % classes); break;
        default: v = 0.5 + u; break;
        }
        if (a->dtype == LK_DTYPE_F32)
            ((float *)a->data)[i] = (float)v;
        else if (a->dtype == LK_DTYPE_F64)
            ((double *)a->data)[i] = v;
        else if (a->dtype == LK_DTYPE_I64)
            ((int64_t *)a->data)[i] = values == LK_VALUES_CLASS || values == LK_VALUES_NONNEGATIVE
                                          ? (int64_t)v
                                          : (int64_t)(u * (double)classes) % classes;
    }
}

/* One-hot float targets of shape (N, C, ...): at each position one class
 * of C, drawn at random, is 1 and the others 0 (lk_array_alloc zeroed
 * them). What a class-index target means as per-class targets, and valid
 * in every mode: softmax (MONAI's one_hot of a label), sigmoid per class. */
static void fill_onehot(lk_array *a, uint64_t seed)
{
    int64_t n = a->shape[0], c = a->shape[1], inner = 1;
    for (int32_t d = 2; d < a->ndim; d++)
        inner *= a->shape[d];
    for (int64_t b = 0; b < n; b++)
        for (int64_t s = 0; s < inner; s++) {
            double u = (double)(next_random(&seed) >> 11) / 9007199254740992.0;
            int64_t k = (int64_t)(u * (double)c) % c;
            size_t at = (size_t)((b * c + k) * inner + s);
            if (a->dtype == LK_DTYPE_F32)
                ((float *)a->data)[at] = 1.0f;
            else
                ((double *)a->data)[at] = 1.0;
        }
}

/* Allocates one slot's tensor (zeroed; fill_data fills it) in o->dtype;
 * class_ids asks for int64 class indices shaped like the input without
 * dim 1. A slot that refuses o->dtype gets int64 if it takes it, else the
 * other float dtype. Float targets of a slot that also takes class indices
 * are one-hot over dim 1 when there are classes (C >= 2): the per-class
 * form of a class-index target (MONAI's one_hot of a label, which both
 * terms of its dice + focal read), plausible in every mode. On failure
 * *why says what could not be allocated. */
static lk_status make_slot(const lk_slot_desc *sd, size_t index, const bench_opts *o, int class_ids,
                           bench_data *d, char *why)
{
    char err[LK_ERRMSG_CAP], dims[LK_MAX_NDIM * 22 + 4];
    int32_t ndim = o->ndim, dtype = o->dtype;
    int64_t shape[LK_MAX_NDIM];
    memcpy(shape, o->shape, sizeof shape);
    if (class_ids || !(sd->dtypes & LK_DTYPE_BIT(dtype)))
        dtype = (sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_I64)) ? LK_DTYPE_I64
                : dtype == LK_DTYPE_F32                   ? LK_DTYPE_F64
                                                          : LK_DTYPE_F32;
    if ((class_ids || sd->shape == LK_SHAPE_INPUT_NO_CHANNEL) && ndim >= 2) {
        memmove(shape + 1, shape + 2, (size_t)(ndim - 2) * sizeof *shape);
        ndim--;
    }
    lk_array *a = &d->arrays[d->n];
    lk_status st = lk_array_alloc(a, dtype, ndim, shape, err);
    if (st == LK_ERR_NOMEM) {
        int64_t n = numel_of(ndim, shape);
        snprintf(why, LK_ERRMSG_CAP,
                 "out of memory: cannot allocate %llu bytes for the synthesised '%s' (%s %s)",
                 (unsigned long long)n * lk_dtype_size(dtype), sd->name, lk_dtype_name(dtype),
                 shape_str(dims, sizeof dims, ndim, shape));
        return st;
    }
    if (st != LK_OK) {
        snprintf(why, LK_ERRMSG_CAP, "the synthesised '%s' %s: %s", sd->name,
                 shape_str(dims, sizeof dims, ndim, shape), err);
        return st;
    }
    d->values[d->n] = class_ids ? LK_VALUES_CLASS : d->values[d->n];
    d->onehot[d->n] = !class_ids && index > 0 && dtype != LK_DTYPE_I64 &&
                      (sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_I64)) &&
                      sd->shape != LK_SHAPE_INPUT_NO_CHANNEL &&
                      (d->values[d->n] == LK_VALUES_UNIT || d->values[d->n] == LK_VALUES_BINARY) &&
                      ndim >= 2 && ndim == o->ndim && shape[1] >= 2;
    d->named[d->n] = (lk_named_tensor){sd->name, lk_array_view(a), sd->name};
    d->bytes_in += a->nbytes;
    d->n++;
    return LK_OK;
}

/* Whether the loss has a slot past the input that takes int64 class
 * indices (so that a try with them differs from one without). */
static int takes_class_ids(const lk_loss *loss)
{
    for (size_t i = 1; i < lk_loss_slot_count(loss); i++) {
        const lk_slot_desc *sd;
        int32_t required;
        lk_loss_slot_at(loss, i, &sd, &required, NULL);
        if (required && (sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_I64)))
            return 1;
    }
    return 0;
}

static lk_status build_data(const lk_loss *loss, const bench_opts *o, int class_ids, bench_data *d,
                            char *why)
{
    for (size_t i = 0; i < lk_loss_slot_count(loss) && d->n < MAX_SLOTS; i++) {
        const lk_slot_desc *sd;
        int32_t required, diff;
        lk_loss_slot_at(loss, i, &sd, &required, &diff);
        if (!required)
            continue;
        int ids = class_ids && i > 0 && (sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_I64));
        d->values[d->n] = lk_loss_slot_values(loss, i);
        lk_status st = make_slot(sd, i, o, ids, d, why);
        if (st != LK_OK)
            return st;
    }
    return LK_OK;
}

/* Fills the tensors build_data allocated. */
static void fill_data(const bench_opts *o, bench_data *d)
{
    int64_t classes = o->ndim >= 2 ? o->shape[1] : 1;
    for (size_t i = 0; i < d->n; i++) {
        uint64_t seed = 0x9e3779b97f4a7c15ull + i;
        if (d->onehot[i])
            fill_onehot(&d->arrays[i], seed);
        else
            fill(&d->arrays[i], d->values[i], classes, seed);
    }
}

static void free_data(bench_data *d)
{
    for (size_t i = 0; i < d->n; i++)
        lk_array_free(&d->arrays[i]);
    lk_array_free(&d->grad);
    memset(d, 0, sizeof *d);
}

/* The gradient of slot 0, shaped like it. */
static lk_status alloc_grad(bench_data *d, char *why)
{
    char err[LK_ERRMSG_CAP];
    lk_array *in = &d->arrays[0];
    lk_status st = lk_array_alloc(&d->grad, in->dtype, in->ndim, in->shape, err);
    if (st == LK_ERR_NOMEM)
        snprintf(why, LK_ERRMSG_CAP, "out of memory: cannot allocate %zu bytes for the gradient",
                 in->nbytes);
    else if (st != LK_OK)
        snprintf(why, LK_ERRMSG_CAP, "the gradient: %s", err);
    else
        d->named_grad = (lk_named_tensor){d->named[0].name, lk_array_view(&d->grad), "grad"};
    return st;
}

/* A loss with its own example data (lk_loss_desc.example, ABI 1.1, as
 * ctc's lengths need): example k in o->dtype, both calls of the hook; the
 * benchmark's --shape does not apply. */
static lk_status example_data(const lk_loss *loss, const bench_opts *o, int32_t k, bench_data *d,
                              char *why)
{
    char err[LK_ERRMSG_CAP] = "";
    size_t n = lk_loss_slot_count(loss);
    lk_tensor ts[MAX_SLOTS];
    int64_t shapes[MAX_SLOTS][LK_MAX_NDIM];
    if (n > MAX_SLOTS)
        n = MAX_SLOTS;
    memset(ts, 0, sizeof ts);
    for (size_t i = 0; i < n; i++)
        ts[i].shape = shapes[i];
    lk_status st = lk_loss_example(loss, k, o->dtype, 0, ts, err);
    for (size_t i = 0; st == LK_OK && i < n; i++) {
        if (ts[i].ndim < 0)
            continue;
        st = lk_array_alloc(&d->arrays[d->n], ts[i].dtype, ts[i].ndim, ts[i].shape, err);
        if (st != LK_OK)
            break;
        lk_array *a = &d->arrays[d->n++];
        if (a->nbytes)
            memset(a->data, 0, a->nbytes);
        ts[i].data = a->data;
    }
    if (st == LK_OK)
        st = lk_loss_example(loss, k, o->dtype, 0x9e3779b97f4a7c15ull, ts, err);
    if (st != LK_OK) {
        snprintf(why, LK_ERRMSG_CAP, "%s", err);
        return st;
    }
    d->n = 0;
    for (size_t i = 0; i < n; i++) {
        const lk_slot_desc *sd;
        lk_loss_slot_at(loss, i, &sd, NULL, NULL);
        if (ts[i].ndim < 0)
            continue;
        lk_array *a = &d->arrays[d->n];
        d->named[d->n++] = (lk_named_tensor){sd->name, lk_array_view(a), sd->name};
        d->bytes_in += a->nbytes;
    }
    return alloc_grad(d, why);
}

/* The call's arguments: the synthesised tensors and, with with_grad, the
 * gradient of slot 0. */
static void data_args(bench_data *d, int with_grad, lk_eval_args *a)
{
    lk_eval_args_init(a);
    a->tensors = d->named;
    a->n_tensors = d->n;
    if (with_grad) {
        a->grads = &d->named_grad;
        a->n_grads = 1;
    }
}

/* Whether every term of the loss plans the (allocated) tensors of d:
 * lk_loss_out_shape plans the first term, lk_loss_stats_count all of a
 * sum's (a sum's second term may refuse what its first takes: MONAI's
 * dice takes class indices, its focal does not). A sum with a whole-batch
 * term has no statistics (LK_ERR_UNSUPPORTED): with values_ok it is then
 * asked for one forward evaluation, which plans every term (d must be
 * filled). */
static lk_status plans_data(const lk_loss *loss, bench_data *d, int values_ok, char *why)
{
    lk_eval_args a;
    data_args(d, 0, &a);
    int32_t nd;
    int64_t shape[LK_MAX_NDIM];
    lk_status st = lk_loss_out_shape(loss, &a, &nd, shape);
    if (st == LK_OK && lk_loss_term_count(loss) > 1) {
        size_t count;
        st = lk_loss_stats_count(loss, &a, &count);
        if (st == LK_ERR_UNSUPPORTED) {
            double v;
            st = values_ok ? lk_loss_eval(loss, &a, &v) : LK_OK;
        }
    }
    if (st != LK_OK)
        snprintf(why, LK_ERRMSG_CAP, "%s", a.errmsg);
    return st;
}

/* "target int64 (2, 8, 8)": the synthesised tensors past the input. */
static void describe_targets(const bench_data *d, char *buf, size_t cap)
{
    char dims[LK_MAX_NDIM * 22 + 4];
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 1; i < d->n && len < cap; i++)
        len += (size_t)snprintf(
            buf + len, cap - len, "%s%s %s%s %s", i > 1 ? ", " : "", d->named[i].name,
            d->onehot[i] ? "one-hot " : "", lk_dtype_name(d->arrays[i].dtype),
            shape_str(dims, sizeof dims, d->arrays[i].ndim, d->arrays[i].shape));
    if (d->n <= 1)
        snprintf(buf, cap, "the input alone");
}

#define WHY_CAP (3 * LK_ERRMSG_CAP)

/* The benchmark's data: class-index targets where the loss takes them
 * (cross-entropy, multiclass modes), else targets shaped like the input:
 * whichever every term of the loss plans first; then filled, with the
 * gradient. A loss with example data uses its example k instead. On
 * failure d is freed and *why (WHY_CAP bytes) holds one line: the problem,
 * or when no data is accepted, what each try synthesised and which term
 * refused it; *refused_shape is set when some try was refused for its
 * shape (LK_ERR_SHAPE). */
static lk_status make_data(const lk_loss *loss, const bench_opts *o, int32_t k, bench_data *d,
                           char *why, int *refused_shape)
{
    char err[LK_ERRMSG_CAP], what[LK_ERRMSG_CAP];
    lk_status st = LK_ERR_INVALID;
    *refused_shape = 0;
    free_data(d);
    if (lk_loss_has_example(loss)) {
        st = example_data(loss, o, k, d, err);
        if (st != LK_OK) {
            snprintf(why, WHY_CAP, "%s", err);
            free_data(d);
        }
        return st;
    }
    char prev[LK_ERRMSG_CAP] = "";
    size_t len = 0, tries = 0;
    int refused = 0; /* st is the refusal of the tries in why */
    lk_status refusal = LK_ERR_INVALID;
    why[0] = '\0';
    for (int class_ids = takes_class_ids(loss); class_ids >= 0; class_ids--) {
        free_data(d);
        refused = 0;
        st = build_data(loss, o, class_ids, d, err);
        if (st != LK_OK)
            break;
        describe_targets(d, what, sizeof what);
        if (tries > 0 && strcmp(what, prev) == 0) { /* the same tensors again */
            st = refusal, refused = 1;
            continue;
        }
        st = plans_data(loss, d, 0, err);
        if (st == LK_OK) {
            fill_data(o, d);
            st = plans_data(loss, d, 1, err);
        }
        if (st == LK_OK || st == LK_ERR_NOMEM || st == LK_ERR_INTERNAL)
            break;
        *refused_shape |= st == LK_ERR_SHAPE;
        if (len < WHY_CAP)
            len += (size_t)snprintf(why + len, WHY_CAP - len, "%swith %s: %s", tries ? "; " : "",
                                    what, err);
        snprintf(prev, sizeof prev, "%s", what);
        refusal = st, refused = 1;
        tries++;
    }
    if (st == LK_OK)
        st = alloc_grad(d, err);
    if (st != LK_OK) {
        if (!refused)
            snprintf(why, WHY_CAP, "%s", err);
        free_data(d);
    }
    return st;
}

/* Whether the loss's plan takes data of o's shape (either kind of target,
 * as make_data tries them); the tensors are allocated, not filled, and
 * nothing is printed. */
static int takes_shape(const lk_loss *loss, const bench_opts *o)
{
    char why[LK_ERRMSG_CAP];
    lk_status st = LK_ERR_INVALID;
    bench_data d;
    memset(&d, 0, sizeof d);
    for (int class_ids = takes_class_ids(loss); class_ids >= 0 && st != LK_OK; class_ids--) {
        free_data(&d);
        st = build_data(loss, o, class_ids, &d, why);
        if (st == LK_OK)
            st = plans_data(loss, &d, 0, why);
    }
    free_data(&d);
    return st == LK_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One evaluation in ms, or -1 if the call fails (*st says why, and
 * args->errmsg, which the caller reports). */
static double eval_ms(const lk_loss *loss, bench_data *d, int with_grad, lk_status *st,
                      char *errmsg)
{
    lk_eval_args a;
    data_args(d, with_grad, &a);
    double v, t0 = now_ms();
    *st = lk_loss_eval(loss, &a, &v);
    if (*st != LK_OK) {
        snprintf(errmsg, LK_ERRMSG_CAP, "%s", a.errmsg);
        return -1.0;
    }
    return now_ms() - t0;
}

/* The median of t[0 .. n) (sorts t). */
static double median_of(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return t[n / 2];
}

typedef struct stream_job {
    const float *a, *b;
    float *out; /* NULL: read only */
    size_t begin, end;
    int width; /* roof_width() */
    int nt;    /* streaming stores (a large output), as the loss's gradient */
} stream_job;

/* The roofline's two kernels, the fastest this machine runs: out[i] =
 * a[i] - b[i], written with streaming stores when the output is as large
 * as a gradient the loss streams (ROOF_STREAM_BYTES: the written lines
 * are then not read first) and with ordinary ones below (where they stay in
 * cache), and the read-only sum of a[i] b[i] in four vector accumulators,
 * at the widest vectors the CPU has. A roofline of ordinary stores on a
 * large output moves a quarter more traffic than a loss that streams its
 * gradient, and would flatter every fraction. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void roof_write_512(const stream_job *j)
{
    const float *a = j->a, *b = j->b;
    float *o = j->out;
    size_t i = j->begin;
    for (; i < j->end && (uintptr_t)(o + i) % 64 != 0; i++)
        o[i] = a[i] - b[i];
    if (j->nt) {
        for (; i + 16 <= j->end; i += 16)
            _mm512_stream_ps(o + i, _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
        _mm_sfence();
    }
    for (; i + 16 <= j->end; i += 16)
        _mm512_storeu_ps(o + i, _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    for (; i < j->end; i++)
        o[i] = a[i] - b[i];
}

__attribute__((target("avx512f"))) static double roof_read_512(const stream_job *j)
{
    const float *a = j->a, *b = j->b;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = j->begin;
    for (; i + 64 <= j->end; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    double sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < j->end; i++)
        sum += a[i] * b[i];
    return sum;
}

__attribute__((target("avx"))) static void roof_write_256(const stream_job *j)
{
    const float *a = j->a, *b = j->b;
    float *o = j->out;
    size_t i = j->begin;
    for (; i < j->end && (uintptr_t)(o + i) % 32 != 0; i++)
        o[i] = a[i] - b[i];
    if (j->nt) {
        for (; i + 8 <= j->end; i += 8)
            _mm256_stream_ps(o + i, _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
        _mm_sfence();
    }
    for (; i + 8 <= j->end; i += 8)
        _mm256_storeu_ps(o + i, _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < j->end; i++)
        o[i] = a[i] - b[i];
}

__attribute__((target("avx"))) static double roof_read_256(const stream_job *j)
{
    const float *a = j->a, *b = j->b;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = j->begin;
    for (; i + 32 <= j->end; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
        s1 = _mm256_add_ps(s1,
                           _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
        s2 = _mm256_add_ps(s2,
                           _mm256_mul_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16)));
        s3 = _mm256_add_ps(s3,
                           _mm256_mul_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24)));
    }
    float lane[8];
    _mm256_storeu_ps(lane, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    double sum = 0.0;
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    for (; i < j->end; i++)
        sum += a[i] * b[i];
    return sum;
}

/* SSE, which every x86-64 has */
static void roof_write_128(const stream_job *j)
{
    const float *a = j->a, *b = j->b;
    float *o = j->out;
    size_t i = j->begin;
    for (; i < j->end && (uintptr_t)(o + i) % 16 != 0; i++)
        o[i] = a[i] - b[i];
    if (j->nt) {
        for (; i + 4 <= j->end; i += 4)
            _mm_stream_ps(o + i, _mm_sub_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
        _mm_sfence();
    }
    for (; i + 4 <= j->end; i += 4)
        _mm_storeu_ps(o + i, _mm_sub_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
    for (; i < j->end; i++)
        o[i] = a[i] - b[i];
}
#endif

/* The widest of the kernels above the CPU runs: 512, 256, 128, or 0 (not
 * x86: plain C, its stores ordinary). */
static int roof_width(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return 512;
    if (__builtin_cpu_supports("avx"))
        return 256;
    return 128;
#else
    return 0;
#endif
}

/* One chunk of the roofline: j's range, at j's width; the read-only
 * kernel's sum is returned (0 for the writing one). */
static double roof_chunk(const stream_job *j)
{
    const int width = j->width;
#if defined(__x86_64__) && defined(__GNUC__)
    if (width == 512) {
        if (!j->out)
            return roof_read_512(j);
        roof_write_512(j);
        return 0.0;
    }
    if (width == 256) {
        if (!j->out)
            return roof_read_256(j);
        roof_write_256(j);
        return 0.0;
    }
    if (width == 128 && j->out) {
        roof_write_128(j);
        return 0.0;
    }
#else
    (void)width;
#endif
    if (j->out) {
        for (size_t i = j->begin; i < j->end; i++)
            j->out[i] = j->a[i] - j->b[i];
        return 0.0;
    }
    /* Eight independent sums so that the adds' latency does not bound it. */
    float acc[8] = {0};
    size_t i = j->begin;
    for (; i + 8 <= j->end; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += j->a[i + k] * j->b[i + k];
    for (; i < j->end; i++)
        acc[0] += j->a[i] * j->b[i];
    double sum = 0.0;
    for (int k = 0; k < 8; k++)
        sum += acc[k];
    return sum;
}

/* One roofline pass: chunks of ROOF_GRAIN elements taken from a counter,
 * as the host's pool hands out a loss's blocks, so that a thread that
 * starts late (a vCPU the hypervisor parked) does not leave half the work
 * to the end. */
typedef struct roof_pass {
    stream_job job; /* a, b, out, width, nt; begin and end unused */
    size_t n, chunks;
    atomic_size_t next;
} roof_pass;

static double roof_run(roof_pass *p)
{
    double sum = 0.0;
    for (;;) {
        size_t c = atomic_fetch_add(&p->next, 1);
        if (c >= p->chunks)
            return sum;
        stream_job j = p->job;
        j.begin = c * ROOF_GRAIN;
        j.end = j.begin + ROOF_GRAIN < p->n ? j.begin + ROOF_GRAIN : p->n;
        sum += roof_chunk(&j);
    }
}

/* The roofline's arrays, sized once for the largest of its streams and
 * allocated as the loss's tensors are (lk_array_alloc: 64-byte boundaries,
 * huge pages advised for large arrays), and its threads: created
 * once and woken for each pass through a condition variable, as the
 * host's pool wakes its workers for each call (a thread created per pass
 * would pay its creation in every timing). */
typedef struct roof_bufs {
    float *a, *b, *o;
    lk_array arr[3]; /* a, b and o's storage */
    int32_t inited, threads, started;
    pthread_t tid[ROOF_MAX_THREADS];
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    uint64_t generation;
    int32_t active, stop;
    roof_pass *pass;
    double sink; /* the read passes' sums, so that they are not dropped */
} roof_bufs;

static void *roof_worker(void *arg)
{
    roof_bufs *rb = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&rb->lock);
    for (;;) {
        while (!rb->stop && rb->generation == seen)
            pthread_cond_wait(&rb->wake, &rb->lock);
        if (rb->stop)
            break;
        seen = rb->generation;
        roof_pass *p = rb->pass;
        pthread_mutex_unlock(&rb->lock);
        double sum = roof_run(p);
        pthread_mutex_lock(&rb->lock);
        rb->sink += sum;
        if (--rb->active == 0)
            pthread_cond_signal(&rb->done);
    }
    pthread_mutex_unlock(&rb->lock);
    return NULL;
}

static float *roof_array(lk_array *arr, size_t n)
{
    char err[LK_ERRMSG_CAP];
    int64_t shape[1] = {(int64_t)n};
    if (lk_array_alloc(arr, LK_DTYPE_F32, 1, shape, err) != LK_OK)
        return NULL;
    return arr->data;
}

static int roof_alloc(roof_bufs *rb, size_t n, int32_t threads)
{
    memset(rb, 0, sizeof *rb);
    pthread_mutex_init(&rb->lock, NULL);
    pthread_cond_init(&rb->wake, NULL);
    pthread_cond_init(&rb->done, NULL);
    rb->inited = 1;
    rb->a = roof_array(&rb->arr[0], n), rb->b = roof_array(&rb->arr[1], n);
    rb->o = roof_array(&rb->arr[2], n);
    if (!rb->a || !rb->b || !rb->o)
        return -1;
    for (size_t i = 0; i < n; i++)
        rb->a[i] = (float)i, rb->b[i] = 1.0f, rb->o[i] = 0.0f;
    rb->threads = threads < 1 ? 1 : threads > ROOF_MAX_THREADS ? ROOF_MAX_THREADS : threads;
    for (int32_t k = 1; k < rb->threads; k++) {
        if (pthread_create(&rb->tid[rb->started], NULL, roof_worker, rb) != 0)
            break; /* fewer threads: the roofline is then slower, never faster */
        rb->started++;
    }
    return 0;
}

static void roof_free(roof_bufs *rb)
{
    if (!rb->inited)
        return;
    pthread_mutex_lock(&rb->lock);
    rb->stop = 1;
    pthread_cond_broadcast(&rb->wake);
    pthread_mutex_unlock(&rb->lock);
    for (int32_t k = 0; k < rb->started; k++)
        pthread_join(rb->tid[k], NULL);
    pthread_mutex_destroy(&rb->lock);
    pthread_cond_destroy(&rb->wake);
    pthread_cond_destroy(&rb->done);
    for (int k = 0; k < 3; k++)
        lk_array_free(&rb->arr[k]);
}

/* The roofline once, in ms: read two float arrays and, with write set,
 * write a third; the element count is chosen so that the bytes moved
 * equal the loss's. */
static double roof_ms(roof_bufs *rb, size_t bytes, int write)
{
    static int width = -1; /* the calling thread is the only one here */
    if (width < 0)
        width = roof_width();
    roof_pass pass;
    memset(&pass, 0, sizeof pass);
    pass.n = bytes / (write ? 12 : 8);
    pass.job = (stream_job){rb->a,
                            rb->b,
                            write ? rb->o : NULL,
                            0,
                            0,
                            width,
                            write && pass.n * sizeof(float) >= ROOF_STREAM_BYTES};
    pass.chunks = (pass.n + ROOF_GRAIN - 1) / ROOF_GRAIN;
    atomic_init(&pass.next, 0);
    double t0 = now_ms();
    if (pass.chunks <= 1) { /* one chunk: the calling thread alone */
        rb->sink += roof_run(&pass);
        return now_ms() - t0;
    }
    pthread_mutex_lock(&rb->lock);
    rb->pass = &pass;
    rb->active = rb->started;
    rb->generation++;
    pthread_cond_broadcast(&rb->wake);
    pthread_mutex_unlock(&rb->lock);
    double sum = roof_run(&pass);
    pthread_mutex_lock(&rb->lock);
    while (rb->active > 0)
        pthread_cond_wait(&rb->done, &rb->lock);
    rb->sink += sum;
    pthread_mutex_unlock(&rb->lock);
    return now_ms() - t0;
}

/* The benchmark's shape shrunk to about PROBE_ELEMENTS elements, each
 * dimension halved in turn (largest first, none below 2): a loss that takes
 * only some shapes (a matrix of an even number of rows) still takes it. */
static void small_shape(const bench_opts *big, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->ndim = big->ndim;
    o->dtype = big->dtype;
    memcpy(o->shape, big->shape, sizeof o->shape);
    for (;;) {
        int64_t n = 1;
        int32_t k = -1;
        for (int32_t d = 0; d < o->ndim; d++) {
            n *= o->shape[d];
            if (o->shape[d] > 2 && (k < 0 || o->shape[d] > o->shape[k]))
                k = d;
        }
        if (n <= PROBE_ELEMENTS || k < 0)
            return;
        o->shape[k] = (o->shape[k] + 1) / 2;
    }
}

/* The host-overhead probe's shape: small_shape's when the loss's plan takes
 * it, else the benchmark's shape (which the plan took) shrunk step by step
 * while the plan still takes it: the largest dimension halved, and when
 * the plan refuses the half, the least size between it and the present one
 * that the plan takes (found by bisection), after which that dimension
 * stays. ssim's window of 11 on (2, 1, 64, 64) gives (2, 1, 11, 11). */
static void probe_shape(const lk_loss *loss, const bench_opts *big, bench_opts *o)
{
    small_shape(big, o);
    if (takes_shape(loss, o))
        return;
    memcpy(o->shape, big->shape, sizeof o->shape);
    uint32_t settled = 0; /* dimensions at the least size the plan takes */
    for (;;) {
        int64_t n = numel_of(o->ndim, o->shape);
        int32_t k = -1;
        for (int32_t d = 0; d < o->ndim; d++)
            if (o->shape[d] > 2 && !(settled & (1u << d)) && (k < 0 || o->shape[d] > o->shape[k]))
                k = d;
        if (n <= PROBE_ELEMENTS || k < 0)
            return;
        int64_t hi = o->shape[k], lo = (hi + 1) / 2; /* hi taken; lo tried */
        o->shape[k] = lo;
        if (takes_shape(loss, o))
            continue;
        while (hi - lo > 1) {
            o->shape[k] = lo + (hi - lo) / 2;
            if (takes_shape(loss, o))
                hi = o->shape[k];
            else
                lo = o->shape[k];
        }
        o->shape[k] = hi;
        settled |= 1u << k;
    }
}

/* Host overhead per call on a small shape (probe_shape), in microseconds,
 * and the number of elements of its input; NaN when no small call ran. The
 * probe prints nothing: a loss that refuses it is reported as not
 * measured. */
static double small_call_us(lk_runtime *rt, const lk_loss *big_loss, const bench_opts *big,
                            size_t *elements)
{
    lk_loss *loss;
    char err[LK_ERRMSG_CAP], why[WHY_CAP];
    *elements = 0;
    if (lk_loss_from_file(rt, big->config, &loss, err) != LK_OK)
        return NAN;
    bench_opts o;
    if (lk_loss_has_example(loss))
        small_shape(big, &o); /* unused: example 0 is the loss's own small case */
    else
        probe_shape(big_loss, big, &o);
    bench_data d;
    memset(&d, 0, sizeof d);
    double us = NAN;
    int refused;
    if (make_data(loss, &o, 0, &d, why, &refused) == LK_OK) {
        lk_eval_args a;
        data_args(&d, 1, &a);
        const int calls = 20000;
        double v;
        if (lk_loss_eval(loss, &a, &v) == LK_OK) {
            double t0 = now_ms();
            for (int i = 0; i < calls; i++)
                lk_loss_eval(loss, &a, &v);
            us = (now_ms() - t0) * 1e3 / calls;
            *elements = d.arrays[0].nbytes / lk_dtype_size(d.arrays[0].dtype);
        }
    }
    free_data(&d);
    lk_loss_free(loss);
    return us;
}

typedef struct bench_result {
    double fwd_ms, fwd_best, fb_ms, fb_best, roof_fwd_ms, roof_fb_ms, roof_min_ms, small_us;
    /* medians over the rounds of roofline time / loss time, each round's
     * loss and roofline timed back to back */
    double frac_fwd, frac_fb, frac_min;
    size_t elements, bytes_fwd, bytes_fb, bytes_min;
    size_t small_elements; /* of the probe's input; 0 when it did not run */
    /* the synthesised tensors; the process's peak RSS after the warm-up
     * evaluations (before the roofline allocates) */
    size_t tensor_kib, peak_kib;
    int32_t dtype; /* the input's, as synthesised */
    int32_t ndim;  /* and its shape (a loss's example data has its own) */
    int64_t shape[LK_MAX_NDIM];
} bench_result;

static void report(const bench_opts *o, const lk_loss *loss, int32_t threads, const bench_result *r)
{
    double gbs_f = (double)r->bytes_fwd / (r->fwd_ms * 1e6);
    double gbs_fb = (double)r->bytes_fb / (r->fb_ms * 1e6);
    if (!o->json) {
        char dims[LK_MAX_NDIM * 21 + 2];
        size_t len = 0;
        dims[0] = '\0';
        for (int32_t k = 0; k < r->ndim; k++)
            len += (size_t)snprintf(dims + len, sizeof dims - len, "%s%lld", k ? "x" : "",
                                    (long long)r->shape[k]);
        printf("%s on %zu elements (%s), %s, %d threads, median of %d\n", lk_loss_name(loss),
               r->elements, r->ndim ? dims : "a scalar", lk_dtype_name(r->dtype), threads,
               o->repeat);
        printf("  %-17s %9s %12s %10s %8s %9s\n", "pass", "ms", "elements/s", "bytes", "GB/s",
               "roofline");
        printf("  %-17s %9.3f %12.3e %10zu %8.2f %8.0f%%\n", "forward", r->fwd_ms,
               (double)r->elements / (r->fwd_ms * 1e-3), r->bytes_fwd, gbs_f, 100.0 * r->frac_fwd);
        printf("  %-17s %9.3f %12.3e %10zu %8.2f %8.0f%%\n", "forward+backward", r->fb_ms,
               (double)r->elements / (r->fb_ms * 1e-3), r->bytes_fb, gbs_fb, 100.0 * r->frac_fb);
        printf("  roofline (streaming kernel, same bytes): forward %.3f ms, "
               "forward+backward %.3f ms\n",
               r->roof_fwd_ms, r->roof_fb_ms);
        if (r->bytes_min != r->bytes_fb)
            printf("  least bytes (inputs once, gradient once): %zu, streamed in %.3f ms: "
                   "forward+backward at %.0f%% of that\n",
                   r->bytes_min, r->roof_min_ms, 100.0 * r->frac_min);
        if (r->small_elements)
            printf("  host overhead per call on %zu elements: %.3f us\n", r->small_elements,
                   r->small_us);
        else
            printf("  host overhead per call: not measured (no small call of the loss ran)\n");
        printf("  peak RSS after the warm-up evaluations: %zu KiB (inputs and gradient: %zu KiB)\n",
               r->peak_kib, r->tensor_kib);
        return;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "loss", lk_loss_name(loss));
    cJSON_AddStringToObject(j, "config", o->config);
    cJSON *shape = cJSON_AddArrayToObject(j, "shape");
    for (int32_t k = 0; k < r->ndim; k++)
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)r->shape[k]));
    cJSON_AddStringToObject(j, "dtype", lk_dtype_name(r->dtype));
    cJSON_AddNumberToObject(j, "elements", (double)r->elements);
    cJSON_AddNumberToObject(j, "threads", threads);
    cJSON_AddNumberToObject(j, "repeat", o->repeat);
    cJSON_AddNumberToObject(j, "forward_ms", r->fwd_ms);
    cJSON_AddNumberToObject(j, "forward_best_ms", r->fwd_best);
    cJSON_AddNumberToObject(j, "forward_backward_ms", r->fb_ms);
    cJSON_AddNumberToObject(j, "forward_backward_best_ms", r->fb_best);
    cJSON_AddNumberToObject(j, "bytes_forward", (double)r->bytes_fwd);
    cJSON_AddNumberToObject(j, "bytes_forward_backward", (double)r->bytes_fb);
    cJSON_AddNumberToObject(j, "gbps_forward", gbs_f);
    cJSON_AddNumberToObject(j, "gbps_forward_backward", gbs_fb);
    cJSON_AddNumberToObject(j, "roofline_forward_ms", r->roof_fwd_ms);
    cJSON_AddNumberToObject(j, "roofline_forward_backward_ms", r->roof_fb_ms);
    cJSON_AddNumberToObject(j, "roofline_fraction_forward", r->frac_fwd);
    cJSON_AddNumberToObject(j, "roofline_fraction_forward_backward", r->frac_fb);
    cJSON_AddNumberToObject(j, "bytes_least_forward_backward", (double)r->bytes_min);
    cJSON_AddNumberToObject(j, "roofline_least_forward_backward_ms", r->roof_min_ms);
    cJSON_AddNumberToObject(j, "roofline_least_fraction_forward_backward", r->frac_min);
    if (r->small_elements) {
        cJSON_AddNumberToObject(j, "small_call_us", r->small_us);
        cJSON_AddNumberToObject(j, "small_call_elements", (double)r->small_elements);
    } else {
        cJSON_AddNullToObject(j, "small_call_us");
        cJSON_AddNullToObject(j, "small_call_elements");
    }
    cJSON_AddNumberToObject(j, "peak_rss_kib", (double)r->peak_kib);
    cJSON_AddNumberToObject(j, "tensor_kib", (double)r->tensor_kib);
    cli_print_json(j, 0); /* the config's name made well-formed UTF-8 */
    cJSON_Delete(j);
}

/* Times the loss and the roofline in rounds: each round runs the forward
 * pass, the roofline of its bytes, forward+backward and the rooflines of
 * its bytes (and of the least bytes), back to back, so that a loss and its
 * roofline see the same machine (on a shared machine the bandwidth left
 * to a process drifts over seconds). Times are medians over the rounds,
 * fractions the medians of each round's ratio. Returns an exit status,
 * after reporting a failure. */
static int time_rounds(const bench_opts *o, const lk_loss *loss, bench_data *d, int32_t threads,
                       bench_result *r)
{
    const int n = o->repeat;
    double *t = calloc((size_t)n * 8, sizeof *t);
    roof_bufs rb = {0};
    size_t most = r->bytes_fwd / 8;
    if (r->bytes_fb / 12 > most)
        most = r->bytes_fb / 12;
    if (r->bytes_min / 12 > most)
        most = r->bytes_min / 12;
    int rc = EXIT_FAILURE_INTERNAL;
    lk_status st = LK_OK;
    char err[LK_ERRMSG_CAP];
    if (!t) {
        cli_error("bench: %s: out of memory: cannot allocate %zu bytes for the timings", o->config,
                  (size_t)n * 8 * sizeof *t);
        goto out;
    }
    if (roof_alloc(&rb, most, threads) != 0) {
        cli_error("bench: %s: out of memory: cannot allocate the roofline's 3 arrays of %zu bytes",
                  o->config, most * sizeof(float));
        goto out;
    }
    double *tf = t, *tb = t + n, *rf = t + 2 * n, *rfb = t + 3 * n, *rm = t + 4 * n;
    double *qf = t + 5 * n, *qb = t + 6 * n, *qm = t + 7 * n;
    const int least = r->bytes_min != r->bytes_fb;
    /* each timed evaluation follows an untimed one of the same pass, so
     * that a loss whose data fit in cache finds them there as in a run of
     * back-to-back calls, not evicted by the roofline's arrays; each timed
     * roofline pass likewise follows an untimed one (data that fit in the
     * last-level cache would otherwise favour the loss) */
    for (int k = 0; k < n; k++) {
        if (eval_ms(loss, d, 0, &st, err) < 0.0 || (tf[k] = eval_ms(loss, d, 0, &st, err)) < 0.0)
            goto failed;
        roof_ms(&rb, r->bytes_fwd, 0);
        rf[k] = roof_ms(&rb, r->bytes_fwd, 0);
        if (eval_ms(loss, d, 1, &st, err) < 0.0 || (tb[k] = eval_ms(loss, d, 1, &st, err)) < 0.0)
            goto failed;
        roof_ms(&rb, r->bytes_fb, 1);
        rfb[k] = roof_ms(&rb, r->bytes_fb, 1);
        if (least)
            roof_ms(&rb, r->bytes_min, 1);
        rm[k] = least ? roof_ms(&rb, r->bytes_min, 1) : rfb[k];
        qf[k] = rf[k] / tf[k], qb[k] = rfb[k] / tb[k], qm[k] = rm[k] / tb[k];
    }
    r->frac_fwd = median_of(qf, n);
    r->frac_fb = median_of(qb, n);
    r->frac_min = median_of(qm, n);
    r->roof_fwd_ms = median_of(rf, n);
    r->roof_fb_ms = median_of(rfb, n);
    r->roof_min_ms = median_of(rm, n);
    r->fwd_ms = median_of(tf, n);
    r->fwd_best = tf[0];
    r->fb_ms = median_of(tb, n);
    r->fb_best = tb[0];
    rc = EXIT_OK;
    goto out;
failed:
    cli_error("bench: %s: %s", o->config, err);
    rc = cli_exit_for(st);
out:
    roof_free(&rb);
    free(t);
    return rc;
}

/* The shapes bench tries, in order, when --shape is not given: a loss's
 * plan may refuse images, and such a loss is timed on a (N, C) matrix of
 * about as many elements instead.
 *
 *   streaming losses: (16, 1, 1024, 1024), else (131072, 128) (rows of 128
 *     classes or dimensions: the margin and embedding losses)
 *   a whole-batch loss (a global sort, as the Lovasz losses; a similarity
 *     matrix of every pair of rows, as the contrastive ones) costs far more
 *     per element: 8 images of 256 x 256 pixels, with 21 classes (a Pascal
 *     VOC batch) when it takes class ids, else one channel; else a batch
 *     of 4096 embeddings of 128 dimensions
 *
 * With --shape, or for a loss with its own example data, only that. */
static size_t candidate_shapes(const lk_loss *loss, const bench_opts *o, bench_opts cand[2])
{
    cand[0] = cand[1] = *o;
    if (o->shape_text || lk_loss_has_example(loss))
        return 1;
    lk_loss_info info;
    int whole = lk_loss_term_count(loss) > 0 && lk_loss_term_at(loss, 0, &info, NULL) == LK_OK &&
                (info.desc->flags & LK_LOSS_WHOLE);
    int64_t classes = 1;
    for (size_t i = 1; whole && i < lk_loss_slot_count(loss); i++) {
        const lk_slot_desc *sd;
        lk_loss_slot_at(loss, i, &sd, NULL, NULL);
        if (sd->shape == LK_SHAPE_INPUT_NO_CHANNEL && (sd->dtypes & LK_DTYPES_INT))
            classes = 21;
    }
    const int64_t images[4] = {16, 1, 1024, 1024}, whole_images[4] = {8, classes, 256, 256};
    const int64_t rows[2] = {131072, 128}, whole_rows[2] = {4096, 128};
    memset(cand[0].shape, 0, sizeof cand[0].shape);
    memset(cand[1].shape, 0, sizeof cand[1].shape);
    cand[0].ndim = 4;
    memcpy(cand[0].shape, whole ? whole_images : images, sizeof images);
    cand[1].ndim = 2;
    memcpy(cand[1].shape, whole ? whole_rows : rows, sizeof rows);
    return 2;
}

/* The data the benchmark times, on the first of the candidate shapes the
 * loss takes; *o becomes that shape. Returns an exit status, after
 * reporting a failure: 2 when the loss refuses the --shape given, 1 out of
 * memory, else 4, naming the config. */
static int bench_data_for(const lk_loss *loss, bench_opts *o, bench_data *d)
{
    bench_opts cand[2];
    size_t n = candidate_shapes(loss, o, cand);
    char why[WHY_CAP], first[WHY_CAP], dims[LK_MAX_NDIM * 22 + 4];
    lk_status st = LK_ERR_INVALID;
    int refused_shape = 0;
    for (size_t c = 0; c < n; c++) {
        st = make_data(loss, &cand[c], -1, d, why, &refused_shape);
        if (st == LK_OK) {
            *o = cand[c];
            return EXIT_OK;
        }
        if (st == LK_ERR_NOMEM || st == LK_ERR_INTERNAL)
            break;
        if (c == 0)
            snprintf(first, sizeof first, "%s", why);
    }
    if (st == LK_ERR_NOMEM || st == LK_ERR_INTERNAL) {
        cli_error("bench: %s: %s", o->config, why);
        return EXIT_FAILURE_INTERNAL;
    }
    if (lk_loss_has_example(loss)) {
        cli_error("bench: %s: %s", o->config, why);
        return cli_exit_for(st);
    }
    if (o->shape_text && refused_shape) {
        cli_error("bench: %s: --shape '%s' is not a shape the loss takes: %s", o->config,
                  o->shape_text, why);
        return EXIT_USAGE;
    }
    if (n == 1) {
        cli_error("bench: %s: no synthesised data on %s is accepted: %s", o->config,
                  shape_str(dims, sizeof dims, cand[0].ndim, cand[0].shape), why);
        return EXIT_DATA;
    }
    char dims2[sizeof dims];
    cli_error("bench: %s: no synthesised data is accepted on the default shapes %s and %s (give "
              "--shape): on %s %s; on %s %s",
              o->config, shape_str(dims, sizeof dims, cand[0].ndim, cand[0].shape),
              shape_str(dims2, sizeof dims2, cand[1].ndim, cand[1].shape), dims, first, dims2, why);
    return EXIT_DATA;
}

static int run_bench(bench_opts *o, lk_runtime *rt, const lk_loss *loss)
{
    bench_data *d = calloc(1, sizeof *d);
    bench_result r = {0};
    if (!d) {
        cli_error("bench: %s: out of memory: cannot allocate %zu bytes for the data's descriptors",
                  o->config, sizeof *d);
        return EXIT_FAILURE_INTERNAL;
    }
    int rc = bench_data_for(loss, o, d);
    lk_status st = LK_OK;
    char err[LK_ERRMSG_CAP];
    /* one untimed evaluation of each pass first (warm-up, and the first
     * touch of the gradient's pages) */
    if (rc == EXIT_OK &&
        (eval_ms(loss, d, 0, &st, err) < 0.0 || eval_ms(loss, d, 1, &st, err) < 0.0)) {
        cli_error("bench: %s: %s", o->config, err);
        rc = cli_exit_for(st);
    }
    if (rc == EXIT_OK) {
        struct rusage ru;
        r.peak_kib = getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss : 0;
        for (size_t i = 0; i < d->n; i++)
            r.tensor_kib += d->arrays[i].nbytes;
        r.tensor_kib = (r.tensor_kib + d->grad.nbytes + 1023) / 1024;
        r.elements = d->arrays[0].nbytes / lk_dtype_size(d->arrays[0].dtype);
        r.dtype = d->arrays[0].dtype;
        r.ndim = d->arrays[0].ndim;
        memcpy(r.shape, d->arrays[0].shape, sizeof(int64_t) * (size_t)r.ndim);
        int32_t reads_f, reads_fb, grads_f, grads_fb;
        lk_loss_traffic(loss, 0, &reads_f, &grads_f);
        lk_loss_traffic(loss, 1, &reads_fb, &grads_fb);
        r.bytes_fwd = d->bytes_in * (size_t)reads_f;
        r.bytes_fb = d->bytes_in * (size_t)reads_fb + d->grad.nbytes * (size_t)grads_fb;
        r.bytes_min = d->bytes_in + d->grad.nbytes;
        int32_t threads = lk_runtime_threads(rt);
        rc = time_rounds(o, loss, d, threads, &r);
        if (rc == EXIT_OK) {
            free_data(d); /* the probe's own data are small */
            r.small_us = small_call_us(rt, loss, o, &r.small_elements);
            report(o, loss, threads, &r);
        }
    }
    free_data(d);
    free(d);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o;
    if (parse_bench(argc, argv, &o) != 0)
        return EXIT_USAGE;
    lk_runtime *rt = cli_open_runtime(o.threads);
    if (!rt)
        return cli_open_failed();
    lk_loss *loss;
    char err[LK_ERRMSG_CAP];
    lk_status st = lk_loss_from_file(rt, o.config, &loss, err);
    if (st != LK_OK) {
        cli_error("bench: %s", err);
        /* as `losskit run`: an unknown loss may live in a plugin that
         * failed to load; a known one's plugin is loaded only now */
        int rc = EXIT_USAGE;
        if (st == LK_ERR_LOAD || (strstr(err, "unknown loss") && lk_runtime_diag_count(rt)))
            rc = EXIT_PLUGIN;
        else if (st == LK_ERR_NOMEM || st == LK_ERR_INTERNAL)
            rc = EXIT_FAILURE_INTERNAL;
        lk_runtime_close(rt);
        return rc;
    }
    int rc = run_bench(&o, rt, loss);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return rc;
}
