/* lovasz_hinge, lovasz_softmax: the Lovasz extension of the Jaccard loss
 * (Berman, Rannen Triki, Blaschko, CVPR 2018), as the authors'
 * lovasz_losses.py computes it.
 *
 * For a set of pixels with errors e_i >= 0 and binary ground truth g_i, sort
 * the errors in decreasing order (pi), let F_k and B_k count the foreground
 * and background pixels among the first k, G the foreground count, and
 *
 *   J(F, B) = 1 - (G - F) / (G + B)        (J(0, 0) = 0),
 *   loss    = sum_k e_pi(k) (J(F_k, B_k) - J(F_{k-1}, B_{k-1})).
 *
 * lovasz_hinge: e = relu(1 - x s), s = 2 t - 1, on logits x and {0, 1}
 * targets t. lovasz_softmax: per class c, e = |[t = c] - p_c| with p the
 * softmax over dim 1 (or the input itself), then the mean over the classes
 * taken. per_image: the same per index of dim 0, then the mean over images.
 *
 * The gradient is the one autograd gives (the sort permutation held
 * constant): d loss / d e_pi(k) = J_k - J_{k-1}. Where several pixels share
 * one error value the extension has no gradient; each of them then gets the
 * mean of its two one-sided derivatives (the marginal gain as the first and
 * as the last of its tie group), which is what central differences measure
 * and which equals the ordinary gradient when there is no tie. Errors closer
 * than the input's rounding (or the keys' truncation) count as tied.
 *
 * Memory. Per pixel one 64-bit sort key (the error's order bits, truncated,
 * above two flags and the pixel's index, so that the keys are distinct and
 * the order is total and deterministic) and, for softmax from logits, the
 * log-sum-exp over classes (or, with a logit beyond LV_LSE_EXACT, the max
 * and 1 / sum: two doubles); nothing per class. Classes are processed one
 * at a time: keys from the input, an in-place MSD radix sort, then a walk over
 * the sorted keys that reads everything it needs from them (error, class
 * membership, sign of d e / d p) and scatters d loss / d p_c into the
 * gradient buffer; the softmax Jacobian is applied per pixel at the end.
 *
 * Threads: the key, max-and-sum and Jacobian passes run over fixed chunks of
 * pixels, the radix sort's buckets after its first pass and the walk's
 * fixed chunks of keys run in parallel, and per_image runs the images in
 * parallel; every sum is formed in a fixed order, so the bits do not depend
 * on the thread count. Everything is scalar double arithmetic: this file is
 * built for the primary compile only. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/loss.h"

#if defined(LK_PRIMARY)

enum { LV_HINGE, LV_SOFTMAX };
enum { LV_PRESENT, LV_ALL, LV_LIST };

typedef struct lv_inst {
    int kind;
    int per_image;
    int has_ignore;
    int64_t ignore;
    int classes; /* LV_PRESENT, LV_ALL, LV_LIST */
    int from_logits;
    int64_t n_list; /* class_list: its length, and the distinct classes with */
    int64_t n_distinct;
    int64_t *cls; /* n_distinct class ids, ascending */
    double *mult; /* how often each is listed */
    const lk_host *host;
} lv_inst;

/* ------------------------------------------------------------------------ */
/* Parameters and slots                                                      */

static const lk_param_desc lv_per_image = {
    .name = "per_image",
    .doc = "true: one loss per index of dim 0, then their mean; false: one over the batch",
    .type = LK_PARAM_BOOL,
    .default_number = 0.0,
};

static const lk_param_desc lv_ignore_index = {
    .name = "ignore_index",
    .doc = "pixels whose target equals it are left out (zero gradient)",
    .type = LK_PARAM_INTEGER,
    .default_number = -100.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
    .unset = "no pixel is left out",
};

static const char *const lv_class_choices[] = {"present", "all", NULL};

static const lk_param_desc lv_classes = {
    .name = "classes",
    .doc = "present: the mean over the classes present in the target; all: over every class",
    .type = LK_PARAM_CHOICE,
    .choices = lv_class_choices,
    .default_choice = "present",
};

static const lk_param_desc lv_class_list = {
    .name = "class_list",
    .doc = "the class indices the mean takes (absent ones too); not with classes",
    .unset = "the classes that classes picks",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = 2147483647.0,
    .list_min_len = 1,
    .list_max_len = -1,
};

static const lk_param_desc lv_from_logits = {
    .name = "from_logits",
    .doc = "true: softmax over dim 1 of the input; false: the input holds probabilities",
    .type = LK_PARAM_BOOL,
    .default_number = 1.0,
};

static const lk_param_desc *const hinge_params[] = {&lv_per_image, &lv_ignore_index, NULL};
static const lk_param_desc *const softmax_params[] = {
    &lv_classes, &lv_class_list, &lv_per_image, &lv_ignore_index, &lv_from_logits, NULL};

static const lk_slot_desc hinge_input = {
    .name = "input",
    .doc = "logits, any shape (N, ...)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
    .batch = LK_BATCH_DIM(0),
};
static const lk_slot_desc hinge_target = {
    .name = "target",
    .doc = "0 or 1 (or ignore_index), shaped like the input",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = 0,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_BINARY,
    .batch = LK_BATCH_DIM(0),
};
static const lk_slot_desc *const hinge_slots[] = {&hinge_input, &hinge_target, NULL};

static const lk_slot_desc softmax_input = {
    .name = "input",
    .doc = "(N, C, ...) logits (from_logits) or probabilities",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
    .ndims = LK_NDIM_FROM(2),
    .batch = LK_BATCH_DIM(0),
};
static const lk_slot_desc softmax_target = {
    .name = "target",
    .doc = "(N, ...) class indices in [0, C) (or ignore_index)",
    .dtypes = LK_DTYPES_INT,
    .flags = 0,
    .shape = LK_SHAPE_INPUT_NO_CHANNEL,
    .values = LK_VALUES_CLASS,
    .batch = LK_BATCH_DIM(0),
};
static const lk_slot_desc *const softmax_slots[] = {&softmax_input, &softmax_target, NULL};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void lv_destroy(void *inst)
{
    lv_inst *in = (lv_inst *)inst;
    if (in) {
        free(in->cls);
        free(in->mult);
    }
    free(in);
}

static lk_status lv_create(const lk_create_args *a, void **inst, lk_msg *msg, int kind)
{
    lv_inst *in = (lv_inst *)calloc(1, sizeof *in);
    if (!in)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    const lk_param_value *p = a->params;
    in->kind = kind;
    in->host = a->host;
    if (kind == LV_HINGE) {
        in->per_image = p[0].integer != 0;
        in->has_ignore = p[1].is_set;
        in->ignore = p[1].integer;
        *inst = in;
        return LK_OK;
    }
    in->classes = (int)p[0].integer == 1 ? LV_ALL : LV_PRESENT;
    in->per_image = p[2].integer != 0;
    in->has_ignore = p[3].is_set;
    in->ignore = p[3].integer;
    in->from_logits = p[4].integer != 0;
    if (p[1].is_set && p[1].list_len > 0) {
        if (p[0].is_set) {
            lv_destroy(in);
            return lk_fail(msg, LK_ERR_INVALID,
                           "classes and class_list are both set; give one (class_list means the "
                           "listed classes)");
        }
        int64_t n = (int64_t)p[1].list_len, *ids = (int64_t *)malloc((size_t)n * sizeof *ids);
        in->cls = (int64_t *)malloc((size_t)n * sizeof *in->cls);
        in->mult = (double *)malloc((size_t)n * sizeof *in->mult);
        if (!ids || !in->cls || !in->mult) {
            free(ids);
            lv_destroy(in);
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
        }
        for (int64_t i = 0; i < n; i++) {
            double v = p[1].list[i];
            if (v != floor(v)) {
                free(ids);
                lv_destroy(in);
                return lk_fail(msg, LK_ERR_INVALID, "class_list[%lld] = %g is not an integer",
                               (long long)i, v);
            }
            ids[i] = (int64_t)v;
        }
        qsort(ids, (size_t)n, sizeof *ids, cmp_i64);
        for (int64_t i = 0; i < n; i++) {
            if (in->n_distinct > 0 && in->cls[in->n_distinct - 1] == ids[i]) {
                in->mult[in->n_distinct - 1] += 1.0;
                continue;
            }
            in->cls[in->n_distinct] = ids[i];
            in->mult[in->n_distinct++] = 1.0;
        }
        free(ids);
        in->classes = LV_LIST;
        in->n_list = n;
    }
    *inst = in;
    return LK_OK;
}

static lk_status hinge_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    return lv_create(a, inst, msg, LV_HINGE);
}

static lk_status softmax_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    return lv_create(a, inst, msg, LV_SOFTMAX);
}

static lk_status hinge_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                            lk_plan *plan, lk_msg *msg)
{
    (void)inst, (void)reduction, (void)slots, (void)msg;
    plan->out_ndim = 0;
    return LK_OK;
}

static lk_status softmax_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                              lk_plan *plan, lk_msg *msg)
{
    (void)reduction;
    const lv_inst *in = (const lv_inst *)inst;
    const lk_tensor *x = &slots[0];
    if (x->ndim < 2)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input has %d dimension%s; lovasz_softmax takes (N, C, ...)", (int)x->ndim,
                       x->ndim == 1 ? "" : "s");
    if (in->classes == LV_LIST && in->cls[in->n_distinct - 1] >= x->shape[1])
        return lk_fail(msg, LK_ERR_INVALID, "class_list holds class %lld; the input has C = %lld",
                       (long long)in->cls[in->n_distinct - 1], (long long)x->shape[1]);
    plan->out_ndim = 0;
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Element access                                                            */

static inline double ld(const lk_tensor *t, int64_t i)
{
    return t->dtype == LK_DTYPE_F32 ? (double)((const float *)t->data)[i]
                                    : ((const double *)t->data)[i];
}

static inline int64_t ld_int(const lk_tensor *t, int64_t i)
{
    return t->dtype == LK_DTYPE_I32 ? (int64_t)((const int32_t *)t->data)[i]
                                    : ((const int64_t *)t->data)[i];
}

/* The gradient buffer, or a scratch copy of its layout. */
typedef struct lv_buf {
    void *data;
    int32_t dtype;
} lv_buf;

static inline void g_set(const lv_buf *g, int64_t i, double v)
{
    if (g->dtype == LK_DTYPE_F32)
        ((float *)g->data)[i] = (float)v;
    else
        ((double *)g->data)[i] = v;
}

static inline void g_add(const lv_buf *g, int64_t i, double v)
{
    if (g->dtype == LK_DTYPE_F32) {
        float *p = (float *)g->data + i;
        *p = (float)((double)*p + v);
    } else {
        ((double *)g->data)[i] += v;
    }
}

static inline double g_get(const lv_buf *g, int64_t i)
{
    return g->dtype == LK_DTYPE_F32 ? (double)((const float *)g->data)[i]
                                    : ((const double *)g->data)[i];
}

/* ------------------------------------------------------------------------ */
/* Sort keys and the in-place radix sort                                     */

/* Bits needed for indices in [0, n). */
static int index_bits(int64_t n)
{
    int b = 0;
    while (b < 63 && ((int64_t)1 << b) < n)
        b++;
    return b;
}

/* A key: the error's order bits, complemented so that larger errors sort
 * first and truncated to the top 64 - (b + 2) bits, then the sign of
 * d e / d p (softmax) and the foreground bit, then the pixel's index in b
 * bits. The walk reads everything it needs from the keys, in order, and
 * touches the input only to scatter the gradient. */
#define LV_SGN_BIT(b) ((uint64_t)1 << ((b) + 1))
#define LV_FG_BIT(b)  ((uint64_t)1 << (b))

static inline uint64_t make_key(double e, int sgn, int fg, int b, uint64_t idx)
{
    uint64_t u;
    e += 0.0; /* -0 -> +0 */
    memcpy(&u, &e, sizeof u);
    u = (u >> 63) ? ~u : u | ((uint64_t)1 << 63); /* ascending with e */
    u = ~u;
    int s = b + 2;
    return ((u >> s) << s) | (sgn ? LV_SGN_BIT(b) : 0) | (fg ? LV_FG_BIT(b) : 0) | idx;
}

/* The error back from a key: its order bits with the dropped ones cleared,
 * i.e. e rounded toward zero for e >= 0 (0 stays 0). */
static inline double key_error(uint64_t key, int b)
{
    int s = b + 2;
    uint64_t u = ~((key >> s) << s | (((uint64_t)1 << s) - 1));
    u = (u >> 63) ? u & ~((uint64_t)1 << 63) : ~u;
    double e;
    memcpy(&e, &u, sizeof e);
    return e;
}

/* Ignored pixels sort after every error. */
static inline uint64_t ignored_key(int b, uint64_t idx)
{
    int s = b + 2;
    return ((~(uint64_t)0 >> s) << s) | idx;
}

#define LV_INSERTION 32

static void insertion_sort(uint64_t *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] > v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

/* Digits of 11 bits for large ranges (fewer passes: the first digit of an
 * error in [0, 1] is mostly exponent bits, which few keys differ in), 8
 * bits below LV_WIDE keys (the count arrays then cost less than the keys). */
#define LV_WIDE    65536
#define LV_MAXBITS 11

static int digit_bits(size_t n)
{
    return n >= LV_WIDE ? 11 : 8;
}

/* One American-flag pass on the r-bit digit at shift: start[0..2^r] are the
 * bucket bounds afterwards. Returns 0 when every key fell in one bucket
 * (nothing moved). */
__attribute__((noinline)) static int flag_pass(uint64_t *a, size_t n, int shift, int r,
                                               size_t *start)
{
    const size_t nb = (size_t)1 << r;
    const uint64_t mask = nb - 1;
    size_t cnt[1 << LV_MAXBITS], next[1 << LV_MAXBITS];
    memset(cnt, 0, nb * sizeof *cnt);
    for (size_t i = 0; i < n; i++)
        cnt[(a[i] >> shift) & mask]++;
    start[0] = 0;
    for (size_t d = 0; d < nb; d++) {
        if (cnt[d] == n)
            return 0;
        start[d + 1] = start[d] + cnt[d];
    }
    memcpy(next, start, nb * sizeof *next);
    for (size_t d = 0; d < nb; d++) {
        while (next[d] < start[d + 1]) {
            uint64_t v = a[next[d]];
            size_t dv = (size_t)((v >> shift) & mask);
            while (dv != d) {
                uint64_t w = a[next[dv]];
                a[next[dv]++] = v;
                v = w;
                dv = (size_t)((v >> shift) & mask);
            }
            a[next[d]++] = v;
        }
    }
    return 1;
}

/* Sorts a whose keys agree on every bit from shift up. Each pass takes the
 * digit just below (at shift 0 it may overlap bits already equal, which is
 * harmless). */
static void radix_rec(uint64_t *a, size_t n, int shift)
{
    /* a frame holds 8-bit bounds only: the recursion stays shallow in stack
     * (the count arrays live in flag_pass's frame, not across levels) */
    size_t small[257];
    while (shift > 0) {
        if (n <= LV_INSERTION)
            break;
        int r = digit_bits(n), lo = shift > r ? shift - r : 0;
        size_t *start = r == 8 ? small : (size_t *)malloc(((1 << LV_MAXBITS) + 1) * sizeof *start);
        if (!start)
            start = small, r = 8, lo = shift > 8 ? shift - 8 : 0;
        if (!flag_pass(a, n, lo, r, start)) {
            if (start != small)
                free(start);
            shift = lo;
            continue;
        }
        if (lo > 0)
            for (size_t d = 0; d < ((size_t)1 << r); d++)
                if (start[d + 1] - start[d] > 1)
                    radix_rec(a + start[d], start[d + 1] - start[d], lo);
        if (start != small)
            free(start);
        return;
    }
    insertion_sort(a, n);
}

typedef struct sort_job {
    uint64_t *a;
    size_t start[(1 << LV_MAXBITS) + 1];
    int shift;
} sort_job;

static lk_status sort_buckets(void *arg, int64_t begin, int64_t end)
{
    sort_job *j = (sort_job *)arg;
    for (int64_t d = begin; d < end; d++)
        if (j->start[d + 1] - j->start[d] > 1)
            radix_rec(j->a + j->start[d], j->start[d + 1] - j->start[d], j->shift);
    return LK_OK;
}

/* Sorts distinct keys ascending: the first pass on the highest bits that
 * differ, then its buckets in parallel. The result is the sorted array
 * whatever the threads. */
static lk_status sort_keys(const lk_host *h, uint64_t *a, size_t n)
{
    if (n <= LV_INSERTION) {
        insertion_sort(a, n);
        return LK_OK;
    }
    uint64_t o = 0, an = ~(uint64_t)0;
    for (size_t i = 0; i < n; i++)
        o |= a[i], an &= a[i];
    uint64_t diff = o ^ an;
    if (!diff)
        return LK_OK;
    int top = 64 - __builtin_clzll(diff); /* the keys agree from bit top up */
    sort_job *j = (sort_job *)malloc(sizeof *j);
    if (!j) {
        radix_rec(a, n, top);
        return LK_OK;
    }
    int r = digit_bits(n), lo = top > r ? top - r : 0;
    j->a = a;
    j->shift = lo;
    /* the digit holds bit top - 1, where keys differ: it always splits */
    if (!flag_pass(a, n, lo, r, j->start))
        radix_rec(a, n, lo);
    else if (lo > 0)
        h->parallel_for(h->ctx, (int64_t)1 << r, 16, sort_buckets, j);
    free(j);
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* One call                                                                  */

#define LV_CHUNK 16384 /* pixels per chunk of the parallel passes */
#define LV_TILE  2048  /* pixels of one image handled together, class by class */

/* The softmax over classes of one pixel. Where every |x| is at most
 * LV_LSE_EXACT, p_c = exp(x_c - lse) with one log-sum-exp lse = max +
 * log(sum) per pixel: its rounding, at most half an ulp of 2 LV_LSE_EXACT
 * (2.3e-13), moves p by that much relatively. Beyond, that rounding would
 * take the low digits of x_c - max (an ulp of 1e12 is 1e-4), and with them
 * p's: there p_c = exp(x_c - max) / sum, as torch forms it, with the
 * division a product by 1 / sum (an ulp apart; a division per pixel and
 * class costs the loss a few percent), at 16 bytes a pixel instead of 8 and
 * about 5 % of the time. */
#define LV_LSE_EXACT 1024.0

typedef struct lv_norm {
    double max, inv; /* inv = 1 / sum */
} lv_norm;

typedef struct lv_call {
    const lv_inst *in;
    const lk_tensor *x, *t;
    lv_buf g; /* d loss / d input (softmax: d loss / d p until the end) */
    int want_grad;
    int64_t N, C, HW; /* hinge: C = 1 */
    int hw_shift;     /* log2(HW) when HW is a power of two, else -1 */
    double *lse;      /* softmax from logits: per pixel, or */
    lv_norm *norm;    /* the same beyond LV_LSE_EXACT (lv_norm) */
    double amax;      /* the largest |x| */
    double tie;       /* errors closer than this are ties (the rounding of the input) */
    double grad_scale;
    double *img_value; /* per image (per_image) */
    int64_t tile;      /* pixels per tile of the softmax passes: tile x C doubles stay small */
    lk_status img_status;
} lv_call;

static inline int is_ignored_f(const lv_call *k, double t)
{
    return k->in->has_ignore && t == (double)k->in->ignore;
}

/* The pixel q of the batch (n HW + hw): its error for class c, whether it
 * is foreground and (softmax) p_c, from the input. */
/* p_c from the logit x and the pixel's lv_norm, or its log-sum-exp */
static inline double lv_p_norm(double x, const lv_norm *n)
{
    return exp(x - n->max) * n->inv;
}

static inline double lv_p_lse(double x, double lse)
{
    return exp(x - lse);
}

/* p_c of pixel q, from its logit x (LV_LSE_EXACT) */
static inline double lv_softmax_p(const lv_call *k, int64_t q, double x)
{
    return k->norm ? lv_p_norm(x, &k->norm[q]) : lv_p_lse(x, k->lse[q]);
}

static inline double pixel_eval(const lv_call *k, int64_t q, int64_t c, int *fg, double *p)
{
    if (k->in->kind == LV_HINGE) {
        double t = ld(k->t, q);
        *fg = t == 1.0;
        return 1.0 - ld(k->x, q) * (2.0 * t - 1.0);
    }
    int64_t n = k->hw_shift >= 0 ? q >> k->hw_shift : q / k->HW, hw = q - n * k->HW;
    double x = ld(k->x, (n * k->C + c) * k->HW + hw);
    *p = k->in->from_logits ? lv_softmax_p(k, q, x) : x;
    *fg = ld_int(k->t, q) == c;
    return fabs((double)*fg - *p);
}

static inline int pixel_ignored(const lv_call *k, int64_t q)
{
    if (!k->in->has_ignore)
        return 0;
    if (k->in->kind == LV_HINGE)
        return is_ignored_f(k, ld(k->t, q));
    return ld_int(k->t, q) == k->in->ignore;
}

/* Where d loss / d (error's variable) of pixel q goes. */
static inline int64_t grad_index(const lv_call *k, int64_t q, int64_t c)
{
    if (k->in->kind == LV_HINGE)
        return q;
    int64_t n = k->hw_shift >= 0 ? q >> k->hw_shift : q / k->HW, hw = q - n * k->HW;
    return (n * k->C + c) * k->HW + hw;
}

typedef struct key_job {
    const lv_call *k;
    uint64_t *keys;
    int64_t q0, n; /* the group's pixels [q0, q0 + n) */
    int64_t c;
    int bits;
    int64_t *fg_count; /* per chunk */
} key_job;

static lk_status make_keys(void *arg, int64_t begin, int64_t end)
{
    key_job *j = (key_job *)arg;
    const int hinge = j->k->in->kind == LV_HINGE;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t lo = ch * LV_CHUNK, hi = lo + LV_CHUNK < j->n ? lo + LV_CHUNK : j->n, fgs = 0;
        for (int64_t i = lo; i < hi; i++) {
            int64_t q = j->q0 + i;
            if (pixel_ignored(j->k, q)) {
                j->keys[i] = ignored_key(j->bits, (uint64_t)i);
                continue;
            }
            int fg;
            double p = 0.0, e = pixel_eval(j->k, q, j->c, &fg, &p);
            fgs += fg;
            j->keys[i] = make_key(e, !hinge && p > (double)fg, fg, j->bits, (uint64_t)i);
        }
        j->fg_count[ch] = fgs;
    }
    return LK_OK;
}

/* J(F2, B2) - J(F1, B1) for J(F, B) = 1 - (G - F) / (G + B), J(0, 0) = 0,
 * with the numerator formed exactly. */
static inline double jac_diff(double G, double F1, double B1, double F2, double B2)
{
    double u1 = G + B1, u2 = G + B2;
    if (u1 == 0.0)
        return u2 == 0.0 ? 0.0 : 1.0 - (G - F2) / u2;
    return ((G - F1) * u2 - (G - F2) * u1) / (u1 * u2);
}

/* The walk over the sorted keys, in fixed chunks of LV_WALK keys run in
 * parallel. Tie groups are runs of keys whose errors each lie within the
 * input's rounding (or the keys' truncation) of the one before: a local
 * rule, so that a chunk can tell where the groups that start in it begin;
 * a group belongs to the chunk where it starts and may run past its end.
 * The value takes each pixel in key order, as autograd's sort; the chunks'
 * partial sums are added in chunk order. */
#define LV_WALK 32768

typedef struct walk_job {
    const lv_call *k;
    const uint64_t *keys;
    int64_t q0, c, valid;
    int bits;
    double G, scale, tie, res;
    int64_t *fg_before; /* per chunk: foreground keys before it */
    double *part;       /* per chunk: its share of the loss */
} walk_job;

static inline int group_starts(const walk_job *w, int64_t i)
{
    double a = key_error(w->keys[i - 1], w->bits), b = key_error(w->keys[i], w->bits);
    return fabs(b - a) > w->tie + w->res * fabs(a);
}

static lk_status walk_count(void *arg, int64_t begin, int64_t end)
{
    walk_job *w = (walk_job *)arg;
    const uint64_t fgb = LV_FG_BIT(w->bits);
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t lo = ch * LV_WALK, hi = lo + LV_WALK < w->valid ? lo + LV_WALK : w->valid, f = 0;
        for (int64_t i = lo; i < hi; i++)
            f += (w->keys[i] & fgb) != 0;
        w->fg_before[ch] = f;
    }
    return LK_OK;
}

static lk_status walk_chunk(void *arg, int64_t begin, int64_t end)
{
    walk_job *w = (walk_job *)arg;
    const lv_call *k = w->k;
    const uint64_t *keys = w->keys;
    const int bits = w->bits, hinge = k->in->kind == LV_HINGE;
    const uint64_t mask = bits > 0 ? (((uint64_t)1 << bits) - 1) : 0, fgb = LV_FG_BIT(bits);
    const double G = w->G;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t lo = ch * LV_WALK, hi = lo + LV_WALK < w->valid ? lo + LV_WALK : w->valid;
        double F = (double)w->fg_before[ch], B = (double)lo - F, loss = 0.0;
        int64_t i = lo;
        if (lo > 0) /* the end of a group that started before */
            for (; i < hi && !group_starts(w, i); i++) {
                if (keys[i] & fgb)
                    F += 1.0;
                else
                    B += 1.0;
            }
        double e = i < hi ? key_error(keys[i], bits) : 0.0; /* keys[i]'s */
        while (i < hi) {
            /* the tie group [i, m) */
            double F2 = F, B2 = B;
            int64_t m = i;
            for (;;) {
                int fg = (keys[m] & fgb) != 0;
                double Fn = F2 + (fg ? 1.0 : 0.0), Bn = B2 + (fg ? 0.0 : 1.0);
                loss += (e > 0.0 ? e : 0.0) * jac_diff(G, F2, B2, Fn, Bn);
                F2 = Fn, B2 = Bn;
                if (++m >= w->valid)
                    break;
                /* group_starts(w, m), with keys[m - 1]'s error at hand */
                double en = key_error(keys[m], bits);
                int starts = fabs(en - e) > w->tie + w->res * fabs(e);
                e = en;
                if (starts)
                    break;
            }
            if (k->want_grad) {
                double gf, gb; /* d loss / d e of a foreground / background pixel */
                if (m - i == 1) {
                    gf = gb = jac_diff(G, F, B, F2, B2);
                } else {
                    gf = 0.5 * (jac_diff(G, F, B, F + 1.0, B) + jac_diff(G, F2 - 1.0, B2, F2, B2));
                    gb = 0.5 * (jac_diff(G, F, B, F, B + 1.0) + jac_diff(G, F2, B2 - 1.0, F2, B2));
                }
                for (int64_t r = i; r < m; r++) {
                    uint64_t key = keys[r];
                    int64_t q = w->q0 + (int64_t)(key & mask);
                    int fg = (key & fgb) != 0;
                    if (!(key_error(key, bits) > 0.0))
                        continue; /* relu' and |.|' are 0 at 0, as torch's */
                    if (hinge) {
                        /* e = 1 - x s: d e / d x = -s */
                        g_add(&k->g, q, w->scale * (fg ? -gf : gb));
                    } else {
                        /* e = |fg - p|: d e / d p = sign(p - fg) */
                        double d = (key & LV_SGN_BIT(bits)) ? 1.0 : -1.0;
                        g_set(&k->g, grad_index(k, q, w->c), w->scale * d * (fg ? gf : gb));
                    }
                }
            }
            F = F2, B = B2;
            i = m;
        }
        w->part[ch] = loss;
    }
    return LK_OK;
}

/* One class c over the group's pixels [q0, q0 + n), valid of them kept:
 * the Lovasz extension of its errors; its gradient times scale goes to the
 * buffer. keys: n words; fg_count: one per key chunk. Returns the loss, or
 * NAN when out of memory. */
static double lovasz_class(const lv_call *k, int64_t q0, int64_t n, int64_t valid, int64_t c,
                           double scale, uint64_t *keys, int64_t *fg_count)
{
    const lk_host *h = k->in->host;
    int bits = index_bits(n);
    int64_t chunks = (n + LV_CHUNK - 1) / LV_CHUNK;
    key_job j = {
        .k = k, .keys = keys, .q0 = q0, .n = n, .c = c, .bits = bits, .fg_count = fg_count};
    h->parallel_for(h->ctx, chunks, 1, make_keys, &j);
    double G = 0.0;
    for (int64_t ch = 0; ch < chunks; ch++)
        G += (double)fg_count[ch];
    sort_keys(h, keys, (size_t)n);
    int64_t wn = (valid + LV_WALK - 1) / LV_WALK;
    /* errors within the input's rounding, or within the keys' truncation */
    walk_job w = {.k = k,
                  .keys = keys,
                  .q0 = q0,
                  .c = c,
                  .valid = valid,
                  .bits = bits,
                  .G = G,
                  .scale = scale,
                  .tie = k->tie,
                  .res = ldexp(1.0, bits + 3 - 52),
                  .fg_before = (int64_t *)malloc((size_t)(wn + 1) * sizeof(int64_t)),
                  .part = (double *)malloc((size_t)(wn + 1) * sizeof(double))};
    if (!w.fg_before || !w.part) {
        free(w.fg_before);
        free(w.part);
        return NAN;
    }
    h->parallel_for(h->ctx, wn, 1, walk_count, &w);
    int64_t f = 0;
    for (int64_t ch = 0; ch < wn; ch++) {
        int64_t here = w.fg_before[ch];
        w.fg_before[ch] = f;
        f += here;
    }
    h->parallel_for(h->ctx, wn, 1, walk_chunk, &w);
    double loss = 0.0;
    for (int64_t ch = 0; ch < wn; ch++)
        loss += w.part[ch];
    free(w.fg_before);
    free(w.part);
    return loss;
}

/* The group of images [n0, n1): its loss (the mean over its classes for
 * softmax) with gradient factor gscale. */
static lk_status lovasz_group(const lv_call *k, int64_t n0, int64_t n1, double gscale, double *out)
{
    const lk_host *h = k->in->host;
    const lv_inst *in = k->in;
    int64_t q0 = n0 * k->HW, n = (n1 - n0) * k->HW;
    *out = 0.0;
    if (n == 0)
        return LK_OK;
    int64_t chunks = (n + LV_CHUNK - 1) / LV_CHUNK;
    /* class counts over the valid pixels */
    int64_t C = in->kind == LV_HINGE ? 1 : k->C, valid = 0;
    int64_t *hist = (int64_t *)calloc((size_t)C + 1, sizeof *hist);
    if (!hist)
        return LK_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++) {
        int64_t q = q0 + i;
        if (pixel_ignored(k, q))
            continue;
        valid++;
        if (in->kind == LV_SOFTMAX)
            hist[ld_int(k->t, q)]++;
    }
    if (valid == 0) {
        free(hist);
        return LK_OK;
    }
    double taken = 0.0;
    if (in->kind == LV_HINGE)
        taken = 1.0;
    else if (in->classes == LV_LIST)
        taken = (double)in->n_list;
    else if (in->classes == LV_ALL)
        taken = (double)C;
    else
        for (int64_t c = 0; c < C; c++)
            taken += hist[c] > 0;
    uint64_t *keys = (uint64_t *)h->scratch_alloc(h->ctx, (size_t)n * sizeof *keys);
    int64_t *fgc = (int64_t *)calloc((size_t)chunks, sizeof *fgc);
    if (!keys || !fgc) {
        if (keys)
            h->scratch_free(h->ctx, keys);
        free(fgc);
        free(hist);
        return LK_ERR_NOMEM;
    }
    double sum = 0.0;
    if (in->kind == LV_HINGE) {
        sum = lovasz_class(k, q0, n, valid, 0, gscale, keys, fgc);
    } else if (in->classes == LV_LIST) {
        for (int64_t i = 0; i < in->n_distinct; i++)
            sum += in->mult[i] * lovasz_class(k, q0, n, valid, in->cls[i],
                                              gscale * in->mult[i] / taken, keys, fgc);
    } else {
        for (int64_t c = 0; c < C; c++)
            if (in->classes == LV_ALL || hist[c] > 0)
                sum += lovasz_class(k, q0, n, valid, c, gscale / taken, keys, fgc);
    }
    h->scratch_free(h->ctx, keys);
    free(fgc);
    free(hist);
    if (isnan(sum))
        return LK_ERR_NOMEM; /* a class's walk had no memory (inputs are finite) */
    *out = taken > 0.0 ? sum / taken : 0.0;
    return LK_OK;
}

static lk_status image_chunk(void *arg, int64_t begin, int64_t end)
{
    lv_call *k = (lv_call *)arg;
    for (int64_t i = begin; i < end; i++) {
        lk_status st = lovasz_group(k, i, i + 1, k->grad_scale / (double)k->N, &k->img_value[i]);
        if (st != LK_OK)
            return st;
    }
    return LK_OK;
}

/* Per tile of one image: the softmax's max and sum over classes
 * (norm_pass) or its Jacobian applied to d loss / d p (jacobian_pass). */
static void tile_of(const lv_call *k, int64_t tile, int64_t *n, int64_t *h0, int64_t *h1)
{
    int64_t per = (k->HW + k->tile - 1) / k->tile;
    *n = tile / per;
    *h0 = (tile % per) * k->tile;
    *h1 = *h0 + k->tile < k->HW ? *h0 + k->tile : k->HW;
}

static lk_status norm_pass(void *arg, int64_t begin, int64_t end)
{
    const lv_call *k = (const lv_call *)arg;
    double m[LV_TILE], s[LV_TILE];
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t n, h0, h1;
        tile_of(k, tile, &n, &h0, &h1);
        for (int64_t hw = h0; hw < h1; hw++)
            m[hw - h0] = -HUGE_VAL, s[hw - h0] = 0.0;
        for (int64_t c = 0; c < k->C; c++) {
            int64_t base = (n * k->C + c) * k->HW;
            for (int64_t hw = h0; hw < h1; hw++) {
                double v = ld(k->x, base + hw);
                m[hw - h0] = v > m[hw - h0] ? v : m[hw - h0];
            }
        }
        for (int64_t c = 0; c < k->C; c++) {
            int64_t base = (n * k->C + c) * k->HW;
            for (int64_t hw = h0; hw < h1; hw++)
                s[hw - h0] += exp(ld(k->x, base + hw) - m[hw - h0]);
        }
        for (int64_t hw = h0; hw < h1; hw++) {
            int64_t q = n * k->HW + hw;
            if (k->norm) {
                k->norm[q].max = m[hw - h0];
                k->norm[q].inv = 1.0 / s[hw - h0];
            } else {
                k->lse[q] = m[hw - h0] + log(s[hw - h0]);
            }
        }
    }
    return LK_OK;
}

static lk_status jacobian_pass(void *arg, int64_t begin, int64_t end)
{
    const lv_call *k = (const lv_call *)arg;
    double s[LV_TILE];
    double *pb = (double *)malloc((size_t)(k->tile * k->C) * sizeof *pb); /* p of the tile */
    if (!pb)
        return LK_ERR_NOMEM;
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t n, h0, h1;
        tile_of(k, tile, &n, &h0, &h1);
        for (int64_t hw = h0; hw < h1; hw++)
            s[hw - h0] = 0.0;
        for (int64_t c = 0; c < k->C; c++) {
            int64_t base = (n * k->C + c) * k->HW;
            double *pc = pb + c * k->tile - h0;
            /* the form chosen outside the loop, which the compiler then
             * vectorises (exp included) */
            const double *lse = k->lse ? k->lse + n * k->HW : NULL;
            const lv_norm *nm = k->norm ? k->norm + n * k->HW : NULL;
            if (nm)
                for (int64_t hw = h0; hw < h1; hw++) {
                    double p = lv_p_norm(ld(k->x, base + hw), &nm[hw]);
                    pc[hw] = p;
                    s[hw - h0] += p * g_get(&k->g, base + hw);
                }
            else
                for (int64_t hw = h0; hw < h1; hw++) {
                    double p = lv_p_lse(ld(k->x, base + hw), lse[hw]);
                    pc[hw] = p;
                    s[hw - h0] += p * g_get(&k->g, base + hw);
                }
        }
        for (int64_t c = 0; c < k->C; c++) {
            int64_t base = (n * k->C + c) * k->HW;
            const double *pc = pb + c * k->tile - h0;
            for (int64_t hw = h0; hw < h1; hw++)
                g_set(&k->g, base + hw, pc[hw] * (g_get(&k->g, base + hw) - s[hw - h0]));
        }
    }
    free(pb);
    return LK_OK;
}

typedef struct finite_job {
    const lk_tensor *x;
    int64_t n;
    int64_t *bad; /* per chunk: the first non-finite element, or -1 */
    double *amax; /* per chunk: the largest |x| */
} finite_job;

static lk_status finite_chunk(void *arg, int64_t begin, int64_t end)
{
    finite_job *j = (finite_job *)arg;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t lo = ch * LV_CHUNK, hi = lo + LV_CHUNK < j->n ? lo + LV_CHUNK : j->n;
        double m = 0.0;
        j->bad[ch] = -1;
        for (int64_t i = lo; i < hi; i++) {
            double v = fabs(ld(j->x, i));
            if (!(v <= DBL_MAX)) {
                j->bad[ch] = i;
                break;
            }
            m = v > m ? v : m;
        }
        j->amax[ch] = m;
    }
    return LK_OK;
}

/* Targets and inputs before anything is written: one line naming the first
 * bad element. */
static lk_status lv_validate(lv_call *k, lk_msg *msg)
{
    const lv_inst *in = k->in;
    int64_t np = k->N * k->HW;
    char where[160];
    for (int64_t q = 0; q < np; q++) {
        if (in->kind == LV_HINGE) {
            double t = ld(k->t, q);
            if (t != 0.0 && t != 1.0 && !is_ignored_f(k, t)) {
                lk_index_str(where, sizeof where, k->t->ndim, k->t->shape, q);
                return lk_fail(msg, LK_ERR_INVALID, "target%s = %g is not 0 or 1%s", where, t,
                               in->has_ignore ? " nor ignore_index" : "");
            }
        } else {
            int64_t t = ld_int(k->t, q);
            if ((t < 0 || t >= k->C) && !(in->has_ignore && t == in->ignore)) {
                lk_index_str(where, sizeof where, k->t->ndim, k->t->shape, q);
                return lk_fail(
                    msg, LK_ERR_INVALID, "target%s = %lld is not a class in [0, C = %lld)%s", where,
                    (long long)t, (long long)k->C, in->has_ignore ? " nor ignore_index" : "");
            }
        }
    }
    int64_t nx = np * (in->kind == LV_HINGE ? 1 : k->C);
    int64_t chunks = (nx + LV_CHUNK - 1) / LV_CHUNK;
    if (chunks == 0)
        return LK_OK;
    finite_job j = {.x = k->x,
                    .n = nx,
                    .bad = (int64_t *)malloc((size_t)chunks * sizeof(int64_t)),
                    .amax = (double *)malloc((size_t)chunks * sizeof(double))};
    if (!j.bad || !j.amax) {
        free(j.bad);
        free(j.amax);
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    }
    in->host->parallel_for(in->host->ctx, chunks, 1, finite_chunk, &j);
    int64_t bad = -1;
    double amax = 0.0;
    for (int64_t ch = 0; ch < chunks && bad < 0; ch++) {
        bad = j.bad[ch];
        amax = j.amax[ch] > amax ? j.amax[ch] : amax;
    }
    free(j.bad);
    free(j.amax);
    /* the rounding of 1 - x s; softmax's p rounds less (the rounding of
     * x - max costs p at most p |x - max| eps <= eps / e, whatever |x|) but
     * keeps the same rule */
    k->tie = 16.0 * DBL_EPSILON * (2.0 + 2.0 * amax + log((double)k->C + 1.0));
    k->amax = amax;
    if (bad >= 0) {
        lk_index_str(where, sizeof where, k->x->ndim, k->x->shape, bad);
        return lk_fail(msg, LK_ERR_NUMERIC, "input%s = %g is not finite", where, ld(k->x, bad));
    }
    return LK_OK;
}

static lk_status lv_whole(const void *inst, const lk_plan *plan, const lk_whole_args *args,
                          double *value, lk_msg *msg)
{
    (void)plan;
    const lv_inst *in = (const lv_inst *)inst;
    const lk_host *h = in->host;
    const lk_tensor *x = &args->slots[0];
    lv_call k = {.in = in, .x = x, .t = &args->slots[1], .grad_scale = args->grad_scale};
    int64_t numel = 1;
    for (int32_t d = 0; d < x->ndim; d++)
        numel *= x->shape[d];
    k.N = x->ndim > 0 ? x->shape[0] : 1;
    k.C = in->kind == LV_HINGE ? 1 : x->shape[1];
    k.HW = k.N * k.C > 0 ? numel / (k.N * k.C) : 0;
    if (in->kind == LV_SOFTMAX && k.N > 0 && k.C == 0) { /* no class: the spatial size */
        k.HW = 1;
        for (int32_t d = 2; d < x->ndim; d++)
            k.HW *= x->shape[d];
    }
    k.hw_shift = -1;
    if (k.HW > 0 && (k.HW & (k.HW - 1)) == 0)
        k.hw_shift = index_bits(k.HW);
    *value = 0.0;
    lk_status st = lv_validate(&k, msg);
    if (st != LK_OK)
        return st;
    const lk_tensor *gt = &args->grads[0];
    int accumulate = (args->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    k.want_grad = gt->data != NULL;
    size_t gbytes = (size_t)numel * (x->dtype == LK_DTYPE_F32 ? 4 : 8);
    void *tmp = NULL;
    if (k.want_grad) {
        k.g.dtype = x->dtype;
        k.g.data = gt->data;
        if (accumulate && in->kind == LV_SOFTMAX) {
            /* the buffer holds other terms' gradients: work in a copy */
            tmp = h->scratch_alloc(h->ctx, gbytes ? gbytes : 1);
            if (!tmp)
                return lk_fail(msg, LK_ERR_NOMEM, "out of memory for the gradient");
            k.g.data = tmp;
        }
        if (!accumulate || in->kind == LV_SOFTMAX)
            memset(k.g.data, 0, gbytes);
    }
    int64_t np = k.N * k.HW;
    if (in->kind == LV_SOFTMAX && in->from_logits && np > 0 && k.C > 0) {
        if (k.amax > LV_LSE_EXACT)
            k.norm = (lv_norm *)h->scratch_alloc(h->ctx, (size_t)np * sizeof(lv_norm));
        else
            k.lse = (double *)h->scratch_alloc(h->ctx, (size_t)np * sizeof(double));
        if (!k.norm && !k.lse) {
            if (tmp)
                h->scratch_free(h->ctx, tmp);
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld pixels", (long long)np);
        }
        k.tile = 16384 / k.C;
        k.tile = k.tile < 16 ? 16 : k.tile > LV_TILE ? LV_TILE : k.tile;
        int64_t tiles = k.N * ((k.HW + k.tile - 1) / k.tile);
        h->parallel_for(h->ctx, tiles, 1, norm_pass, &k);
    }
    double v = 0.0;
    if (np > 0 && in->per_image) {
        k.img_value = (double *)calloc((size_t)k.N, sizeof(double));
        st = k.img_value ? h->parallel_for(h->ctx, k.N, 1, image_chunk, &k) : LK_ERR_NOMEM;
        for (int64_t i = 0; st == LK_OK && i < k.N; i++)
            v += k.img_value[i];
        v /= (double)k.N;
        free(k.img_value);
    } else if (np > 0) {
        st = lovasz_group(&k, 0, k.N, k.grad_scale, &v);
    }
    if (st == LK_OK && k.want_grad && (k.norm || k.lse)) {
        int64_t tiles = k.N * ((k.HW + k.tile - 1) / k.tile);
        st = h->parallel_for(h->ctx, tiles, 1, jacobian_pass, &k);
    }
    if (st == LK_OK && tmp) {
        lv_buf out = {gt->data, x->dtype};
        for (int64_t i = 0; i < numel; i++)
            g_add(&out, i, g_get(&k.g, i));
    }
    if (k.norm)
        h->scratch_free(h->ctx, k.norm);
    if (k.lse)
        h->scratch_free(h->ctx, k.lse);
    if (tmp)
        h->scratch_free(h->ctx, tmp);
    if (st != LK_OK)
        return lk_fail(msg, st, "out of memory for the scratch of %lld pixels", (long long)np);
    *value = v;
    return LK_OK;
}

const lk_loss_desc lovasz_hinge_desc = {
    .id = "lovasz_hinge",
    .summary = "Lovasz hinge (Berman et al. 2018): the Lovasz extension of the Jaccard loss "
               "on hinge errors relu(1 - x (2t - 1)) of binary logits",
    .version = "1.0.0",
    .params = hinge_params,
    .slots = hinge_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_WHOLE,
    .create = hinge_create,
    .destroy = lv_destroy,
    .plan = hinge_plan,
    .whole = lv_whole,
};

const lk_loss_desc lovasz_softmax_desc = {
    .id = "lovasz_softmax",
    .summary = "Lovasz-softmax (Berman et al. 2018): per class, the Lovasz extension of the "
               "Jaccard loss on errors |[t = c] - p_c|, the mean over classes",
    .version = "1.0.0",
    .params = softmax_params,
    .slots = softmax_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_WHOLE,
    .create = softmax_create,
    .destroy = lv_destroy,
    .plan = softmax_plan,
    .whole = lv_whole,
};

#endif
