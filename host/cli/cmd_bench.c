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
 * roofline streams that many bytes. */
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

#include "cli.h"

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
    int shape_given; /* --shape was on the command line */
} bench_opts;

typedef struct bench_data {
    lk_array arrays[MAX_SLOTS];
    lk_named_tensor named[MAX_SLOTS];
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

static int parse_shape(const char *text, bench_opts *o)
{
    o->ndim = 0;
    const char *p = text;
    while (*p && o->ndim < LK_MAX_NDIM) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 1 || v > (1ll << 34))
            break;
        o->shape[o->ndim++] = v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            break;
    }
    if (*p || o->ndim == 0) {
        cli_error("bench: --shape '%s' is not a list like 16,1,1024,1024", text);
        return -1;
    }
    return 0;
}

static int parse_bench(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->repeat = 5;
    o->dtype = LK_DTYPE_F32;
    bench_opts dflt = {.ndim = 4, .shape = {16, 1, 1024, 1024}};
    o->ndim = dflt.ndim;
    memcpy(o->shape, dflt.shape, sizeof o->shape);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }
        if (a[0] != '-' && !o->config) {
            o->config = a;
            continue;
        }
        if (!v || a[0] != '-') {
            cli_error("bench: unexpected argument '%s'", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--shape") == 0) {
            if (parse_shape(v, o) != 0)
                return -1;
            o->shape_given = 1;
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
        } else if (strcmp(a, "--repeat") == 0) {
            o->repeat = atoi(v);
            if (o->repeat < 1 || o->repeat > 10000) {
                cli_error("bench: --repeat '%s' is not in [1, 10000]", v);
                return -1;
            }
        } else {
            cli_unknown_option("bench", a);
            return -1;
        }
    }
    if (!o->config) {
        cli_error("bench: usage: " BENCH_USAGE);
        return -1;
    }
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

/* Allocates and fills one slot's tensor in o->dtype; class_ids asks for
 * int64 class indices shaped like the input without dim 1. A slot that
 * refuses o->dtype gets int64 if it takes it, else the other float dtype. */
static int make_slot(const lk_slot_desc *sd, int32_t values, const bench_opts *o, int class_ids,
                     size_t seed, lk_array *a)
{
    char err[LK_ERRMSG_CAP];
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
    if (lk_array_alloc(a, dtype, ndim, shape, err) != LK_OK) {
        cli_error("bench: %s", err);
        return -1;
    }
    fill(a, class_ids ? LK_VALUES_CLASS : values, o->ndim >= 2 ? o->shape[1] : 1,
         0x9e3779b97f4a7c15ull + seed);
    return 0;
}

static int build_data(const lk_loss *loss, const bench_opts *o, int class_ids, bench_data *d)
{
    for (size_t i = 0; i < lk_loss_slot_count(loss) && d->n < MAX_SLOTS; i++) {
        const lk_slot_desc *sd;
        int32_t required, diff;
        lk_loss_slot_at(loss, i, &sd, &required, &diff);
        if (!required)
            continue;
        int ids = class_ids && i > 0 && (sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_I64));
        lk_array *a = &d->arrays[d->n];
        if (make_slot(sd, lk_loss_slot_values(loss, i), o, ids, i, a) != 0)
            return -1;
        d->named[d->n] = (lk_named_tensor){sd->name, lk_array_view(a), sd->name};
        d->bytes_in += a->nbytes;
        d->n++;
    }
    return 0;
}

static void free_data(bench_data *d)
{
    for (size_t i = 0; i < d->n; i++)
        lk_array_free(&d->arrays[i]);
    lk_array_free(&d->grad);
    memset(d, 0, sizeof *d);
}

/* A loss with its own example data (lk_loss_desc.example, ABI 1.1, as
 * ctc's lengths need): example k in o->dtype, both calls of the hook; the
 * benchmark's --shape does not apply. */
static int example_data(const lk_loss *loss, const bench_opts *o, int32_t k, bench_data *d)
{
    char err[LK_ERRMSG_CAP];
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
        cli_error("bench: %s", err);
        return -1;
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
    if (lk_array_alloc(&d->grad, d->arrays[0].dtype, d->arrays[0].ndim, d->arrays[0].shape, err) !=
        LK_OK) {
        cli_error("bench: %s", err);
        return -1;
    }
    d->named_grad = (lk_named_tensor){d->named[0].name, lk_array_view(&d->grad), "grad"};
    return 0;
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

/* Class-index targets where the loss takes them (cross-entropy, multiclass
 * modes), else targets shaped like the input: whichever the loss's plan
 * accepts first. A loss with example data uses its example k instead. */
static int make_data(const lk_loss *loss, const bench_opts *o, int32_t k, bench_data *d)
{
    char err[LK_ERRMSG_CAP];
    lk_status st = LK_ERR_INVALID;
    lk_eval_args a;
    if (lk_loss_has_example(loss)) {
        free_data(d);
        return example_data(loss, o, k, d);
    }
    for (int class_ids = 1; class_ids >= 0 && st != LK_OK; class_ids--) {
        free_data(d);
        if (build_data(loss, o, class_ids, d) != 0)
            return -1;
        data_args(d, 0, &a);
        int32_t nd;
        int64_t shape[LK_MAX_NDIM];
        st = lk_loss_out_shape(loss, &a, &nd, shape);
    }
    if (st != LK_OK) {
        cli_error("bench: %s", a.errmsg);
        return -1;
    }
    if (lk_array_alloc(&d->grad, d->arrays[0].dtype, d->arrays[0].ndim, d->arrays[0].shape, err) !=
        LK_OK) {
        cli_error("bench: %s", err);
        return -1;
    }
    d->named_grad = (lk_named_tensor){d->named[0].name, lk_array_view(&d->grad), "grad"};
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One evaluation in ms, or -1 if the call fails (reported). */
static double eval_ms(const lk_loss *loss, bench_data *d, int with_grad)
{
    lk_eval_args a;
    data_args(d, with_grad, &a);
    double v, t0 = now_ms();
    if (lk_loss_eval(loss, &a, &v) != LK_OK) {
        cli_error("bench: %s", a.errmsg);
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

/* The benchmark's shape shrunk to about 64 elements, each dimension
 * halved in turn (largest first, none below 2): a loss that takes only some
 * shapes (a matrix of an even number of rows) still takes it. */
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
        if (n <= 64 || k < 0)
            return;
        o->shape[k] = (o->shape[k] + 1) / 2;
    }
}

/* Host overhead per call on the small shape, in microseconds. */
static double small_call_us(lk_runtime *rt, const bench_opts *big)
{
    lk_loss *loss;
    char err[LK_ERRMSG_CAP];
    if (lk_loss_from_file(rt, big->config, &loss, err) != LK_OK)
        return NAN;
    bench_opts o;
    small_shape(big, &o);
    bench_data d;
    memset(&d, 0, sizeof d);
    double us = NAN;
    if (make_data(loss, &o, 0, &d) == 0) {
        lk_eval_args a;
        data_args(&d, 1, &a);
        const int calls = 20000;
        double v, t0 = now_ms();
        for (int i = 0; i < calls; i++)
            lk_loss_eval(loss, &a, &v);
        us = (now_ms() - t0) * 1e3 / calls;
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
        printf("  host overhead per call on about 64 elements: %.3f us\n", r->small_us);
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
    cJSON_AddNumberToObject(j, "small_call_us", r->small_us);
    cJSON_AddNumberToObject(j, "peak_rss_kib", (double)r->peak_kib);
    cJSON_AddNumberToObject(j, "tensor_kib", (double)r->tensor_kib);
    char *text = cJSON_PrintUnformatted(j);
    puts(text);
    cJSON_free(text);
    cJSON_Delete(j);
}

/* Times the loss and the roofline in rounds: each round runs the forward
 * pass, the roofline of its bytes, forward+backward and the rooflines of
 * its bytes (and of the least bytes), back to back, so that a loss and its
 * roofline see the same machine (on a shared machine the bandwidth left
 * to a process drifts over seconds). Times are medians over the rounds,
 * fractions the medians of each round's ratio. */
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
    int rc = -1;
    if (!t || roof_alloc(&rb, most, threads) != 0) {
        cli_error("bench: out of memory for the roofline's arrays");
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
        if (eval_ms(loss, d, 0) < 0.0 || (tf[k] = eval_ms(loss, d, 0)) < 0.0)
            goto out;
        roof_ms(&rb, r->bytes_fwd, 0);
        rf[k] = roof_ms(&rb, r->bytes_fwd, 0);
        if (eval_ms(loss, d, 1) < 0.0 || (tb[k] = eval_ms(loss, d, 1)) < 0.0)
            goto out;
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
    rc = 0;
out:
    roof_free(&rb);
    free(t);
    return rc;
}

static int run_bench(const bench_opts *o, lk_runtime *rt, const lk_loss *loss)
{
    bench_data *d = calloc(1, sizeof *d);
    bench_result r = {0};
    int rc = EXIT_DATA;
    /* one untimed evaluation of each pass first (warm-up, and the first
     * touch of the gradient's pages) */
    if (d && make_data(loss, o, -1, d) == 0 && eval_ms(loss, d, 0) >= 0.0 &&
        eval_ms(loss, d, 1) >= 0.0) {
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
        if (time_rounds(o, loss, d, threads, &r) == 0) {
            r.small_us = small_call_us(rt, o);
            report(o, loss, threads, &r);
            rc = EXIT_OK;
        }
    }
    if (d)
        free_data(d);
    free(d);
    return rc;
}

/* Whether the loss's plan takes data of o's shape (either kind of target,
 * as make_data tries them); the tensors are allocated, not filled. */
static int takes_shape(const lk_loss *loss, const bench_opts *o)
{
    lk_status st = LK_ERR_INVALID;
    bench_data d;
    memset(&d, 0, sizeof d);
    for (int class_ids = 1; class_ids >= 0 && st != LK_OK; class_ids--) {
        free_data(&d);
        if (build_data(loss, o, class_ids, &d) != 0)
            break;
        lk_eval_args a;
        data_args(&d, 0, &a);
        int32_t nd;
        int64_t shape[LK_MAX_NDIM];
        st = lk_loss_out_shape(loss, &a, &nd, shape);
    }
    free_data(&d);
    return st == LK_OK;
}

/* A whole-batch loss (a global sort, as the Lovasz losses; a similarity
 * matrix of every pair of rows, as the contrastive ones) costs far more per
 * element than a streaming one, and one that takes class-index targets
 * needs classes: without --shape such a loss is timed on 8 images of 256 x
 * 256 pixels, with 21 classes (a Pascal VOC batch) when it takes class ids,
 * else one channel; if its plan refuses images, on a batch of 4096
 * embeddings of 128 dimensions (a (rows, dim) matrix). Other losses keep
 * the default shape. */
static void whole_default_shape(const lk_loss *loss, bench_opts *o)
{
    lk_loss_info info;
    if (o->shape_given || lk_loss_has_example(loss) || lk_loss_term_count(loss) == 0 ||
        lk_loss_term_at(loss, 0, &info, NULL) != LK_OK || !(info.desc->flags & LK_LOSS_WHOLE))
        return;
    int64_t classes = 1;
    for (size_t i = 1; i < lk_loss_slot_count(loss); i++) {
        const lk_slot_desc *sd;
        lk_loss_slot_at(loss, i, &sd, NULL, NULL);
        if (sd->shape == LK_SHAPE_INPUT_NO_CHANNEL && (sd->dtypes & LK_DTYPES_INT))
            classes = 21;
    }
    const int64_t images[4] = {8, classes, 256, 256};
    o->ndim = 4;
    memcpy(o->shape, images, sizeof images);
    bench_opts small;
    small_shape(o, &small);
    if (takes_shape(loss, &small))
        return;
    const int64_t rows[2] = {4096, 128};
    o->ndim = 2;
    memcpy(o->shape, rows, sizeof rows);
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
    if (lk_loss_from_file(rt, o.config, &loss, err) != LK_OK) {
        cli_error("bench: %s", err);
        lk_runtime_close(rt);
        return EXIT_USAGE;
    }
    whole_default_shape(loss, &o);
    int rc = run_bench(&o, rt, loss);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    return rc;
}
