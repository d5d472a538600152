/* bce_with_logits: torch's binary cross-entropy from logits, with an
 * optional per-element weight and pos_weight along the last dimension, and
 * smp's SoftBCEWithLogitsLoss options: label_smoothing and ignore_index.
 *
 * Without either option the loss runs the kernels it always had (family
 * bce_plain; bce_pw1 for the default pos_weight of 1). ignore_index makes
 * the mean divide by the elements not ignored, a count of the targets,
 * which the plan takes (bce_plan) before any block runs: the loss stays
 * fused, and a split evaluation sums the shards' counts as it sums any
 * mean's divisor. */
#include "tutorial.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef struct bce {
    int64_t n_pw;     /* 0: pos_weight 1 everywhere */
    double pw1;       /* the value when n_pw <= 1 */
    const double *pw; /* n_pw values when n_pw > 1 */
    double smooth;    /* label_smoothing */
    int has_ignore;
    int64_t ignore_index;
    const lk_host *host; /* its threads serve the plan's count of the targets */
} bce;

static const lk_param_desc bce_pos_weight = {
    .name = "pos_weight",
    .doc = "weight of the positive term: [] for 1, one value for all, or one per "
           "index of the input's last dimension",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc bce_label_smoothing = {
    .name = "label_smoothing",
    .doc = "s: targets become t (1 - s) + (1 - t) s (smp's smooth_factor)",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.0,
    .min = 0.0,
    .max = 1.0,
};

static const lk_param_desc bce_ignore_index = {
    .name = "ignore_index",
    .doc = "elements whose target is this value count nowhere (mean divides by the others)",
    .unset = "no element is ignored",
    .type = LK_PARAM_INTEGER,
    .default_number = -100.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc *const bce_params[] LK__UNUSED = {&bce_pos_weight, &bce_label_smoothing,
                                                             &bce_ignore_index, NULL};

static lk_status bce_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    bce *b = inst;
    b->n_pw = p[0].list ? p[0].list_len : 0;
    b->pw1 = b->n_pw == 1 ? p[0].list[0] : 1.0;
    b->smooth = p[1].number;
    b->has_ignore = p[2].is_set != 0;
    b->ignore_index = p[2].integer;
    if (b->n_pw > 1) {
        double *pw = malloc((size_t)b->n_pw * sizeof *pw);
        if (!pw)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld pos_weight values",
                           (long long)b->n_pw);
        memcpy(pw, p[0].list, (size_t)b->n_pw * sizeof *pw);
        b->pw = pw;
    }
    return LK_OK;
}

static void bce_fini(void *inst)
{
    free((void *)((bce *)inst)->pw);
}

static lk_status bce_norm(const bce *b, const lk_tensor *t, int64_t n, double *norm, lk_msg *msg);

static lk_status bce_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    const bce *b = inst;
    const lk_tensor *x = &slots[0];
    int64_t last = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    if (b->n_pw > 1 && b->n_pw != last)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "pos_weight has %lld values but the input's last dimension is %lld; "
                       "give 1 value or %lld",
                       (long long)b->n_pw, (long long)last, (long long)last);
    if (!b->has_ignore || reduction != LK_REDUCTION_MEAN || !slots[1].data)
        return LK_OK;
    lk_status st = bce_norm(b, &slots[1], plan->n_positions, &plan->mean_norm, msg);
    plan->aux[0] = st == LK_OK; /* the targets are counted and checked: no block checks them */
    return st;
}

/* mean: over the elements (with ignore_index, those counted), 0 when there
 * are none. */
static lk_status bce_finalize(const void *inst, const lk_plan *plan, const double *st,
                              int32_t reduction, double *value, lk_msg *msg)
{
    (void)inst, (void)msg;
    if (reduction != LK_REDUCTION_MEAN)
        *value = st[0];
    else
        *value = plan->mean_norm > 0.0 ? st[0] / plan->mean_norm : 0.0; /* a mean over nothing */
    return LK_OK;
}

/* The index into bce_with_logits' families: bce_plain, bce_gen, bce_pw1. */
static int bce_pick(const void *inst)
{
    const bce *b = inst;
    if (b->smooth != 0.0 || b->has_ignore)
        return 1;
    return b->n_pw == 0 ? 2 : 0;
}

/* The sigmoid of x comes from the driver (LK_EW_SIGMOID), a vector ahead. */
LK_AI void bce_elem(const bce *b, lk_elem *e)
{
    lk_sigm p = e->sig;
    lk_v L = e->sig_L;
    if (b->n_pw == 0) { /* pos_weight 1: the same formulas, fewer multiplies */
        e->loss = lk_bce_logits_of1(&p, L, e->t);
        e->grad = lk_sigm_minus_t(&p, e->t);
        return;
    }
    lk_v pw = b->n_pw > 1 ? lk_load_cyclic(b->pw, b->n_pw, e->i) : lk_set(b->pw1);
    e->loss = lk_bce_logits_of(&p, L, e->t, pw);
    e->grad = lk_bce_logits_grad(&p, e->t, pw);
}

/* Smoothing, then bce_elem; an ignored element gives 0 and no gradient
 * whatever its logit (NaN included). */
LK_AI void bce_elem_gen(const bce *b, lk_elem *e)
{
    lk_v t = e->t;
    if (b->smooth != 0.0)
        e->t = lk_fma(t, lk_set(1.0 - 2.0 * b->smooth), lk_set(b->smooth));
    bce_elem(b, e);
    if (b->has_ignore) {
        lk_m ig = lk_eq(t, lk_set((double)b->ignore_index));
        e->loss = lk_clear(ig, e->loss);
        e->grad = lk_clear(ig, e->grad);
    }
}

/* With targets screened to [0, 1] and pos_weight >= 0 every term is a sum
 * of products of nonnegative numbers, c |x| + lw log1p(e), so the float
 * lanes sum them in groups (LK_EW_NONNEG_SUM); the general family (label
 * smoothing, ignore_index) takes targets it does not screen, and does not
 * declare it. */
LK_KERNELS_ELEMENTWISE(bce_plain, bce, bce_elem,
                       LK_EW_WEIGHT | LK_EW_UNIT_TARGET | LK_EW_SIGMOID | LK_EW_NONNEG_SUM)

/* pos_weight 1 (the default) in a family of its own: with no per-vector
 * test of n_pw in the loop, nor the cyclic load's registers, the sums and
 * constants stay in registers. */
LK_AI void bce_elem1(const bce *b, lk_elem *e)
{
    (void)b;
    lk_sigm p = e->sig;
    e->loss = lk_bce_logits_of1(&p, e->sig_L, e->t);
    e->grad = lk_sigm_minus_t(&p, e->t);
}

LK_KERNELS_ELEMENTWISE(bce_pw1, bce, bce_elem1,
                       LK_EW_WEIGHT | LK_EW_UNIT_TARGET | LK_EW_SIGMOID | LK_EW_NONNEG_SUM)

LK_AI void bce_gen__elem(const void *p, lk_elem *e)
{
    bce_elem_gen((const bce *)p, e);
}

/* Whether a target is ignore_index: compared in the target's precision,
 * as the kernel's float lanes compare it (an index beyond 2^24 in
 * magnitude is rounded to a float there). */
static inline int bce_is_ignored(double v, double ig, int tf)
{
    return tf ? (float)v == (float)ig : v == ig;
}

/* The targets of [j0, j1) other than ig, and in *bad whether one of them
 * lies outside [0, 1] (NaN does not): without branches, four floats or two
 * doubles at a time with SSE2 where the compiler targets x86-64 (whose
 * baseline it is; this runs in the plan, outside the kernels' ISA
 * variants). A scalar loop with two tests an element took twice as long
 * as the loss's own pass. */
static int64_t bce_tally(const lk_tensor *t, double ig, int64_t j0, int64_t j1, int *bad)
{
    int64_t n = 0, j = j0;
    int worse = 0;
    const int tf = t->dtype == LK_DTYPE_F32;
#if defined(__SSE2__)
    if (tf) {
        const float *d = (const float *)t->data;
        const __m128 igv = _mm_set1_ps((float)ig), zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
        __m128i out = _mm_setzero_si128();
        while (j + 4 <= j1) {
            /* four 32-bit counts, taken out every 2^28 elements */
            int64_t stop = j1 - j > ((int64_t)1 << 28) ? j + ((int64_t)1 << 28) : j1;
            __m128i cnt = _mm_setzero_si128();
            for (; j + 4 <= stop; j += 4) {
                __m128 v = _mm_loadu_ps(d + j);
                __m128 keep = _mm_cmpneq_ps(v, igv);
                cnt = _mm_sub_epi32(cnt, _mm_castps_si128(keep));
                __m128 off = _mm_or_ps(_mm_cmplt_ps(v, zero), _mm_cmpgt_ps(v, one));
                out = _mm_or_si128(out, _mm_castps_si128(_mm_and_ps(keep, off)));
            }
            int32_t c[4];
            _mm_storeu_si128((__m128i *)c, cnt);
            n += (int64_t)c[0] + c[1] + c[2] + c[3];
        }
        worse = _mm_movemask_epi8(out) != 0;
    } else {
        const double *d = (const double *)t->data;
        const __m128d igv = _mm_set1_pd(ig), zero = _mm_setzero_pd(), one = _mm_set1_pd(1.0);
        __m128i cnt = _mm_setzero_si128(), out = _mm_setzero_si128();
        for (; j + 2 <= j1; j += 2) {
            __m128d v = _mm_loadu_pd(d + j);
            __m128d keep = _mm_cmpneq_pd(v, igv);
            cnt = _mm_sub_epi64(cnt, _mm_castpd_si128(keep));
            __m128d off = _mm_or_pd(_mm_cmplt_pd(v, zero), _mm_cmpgt_pd(v, one));
            out = _mm_or_si128(out, _mm_castpd_si128(_mm_and_pd(keep, off)));
        }
        int64_t c[2];
        _mm_storeu_si128((__m128i *)c, cnt);
        n = c[0] + c[1];
        worse = _mm_movemask_epi8(out) != 0;
    }
#endif
    for (; j < j1; j++) {
        double v = lk__get(t->data, tf, j);
        int keep = !bce_is_ignored(v, ig, tf);
        n += keep;
        worse |= keep && (v < 0.0 || v > 1.0);
    }
    *bad = worse;
    return n;
}

/* The count of the targets of [j0, j1) other than ignore_index, each of
 * which must lie in [0, 1]; -1 and a message at the first that does not. */
static int64_t bce_count(const bce *b, const lk_tensor *t, int64_t j0, int64_t j1, lk_msg *msg)
{
    int tf = t->dtype == LK_DTYPE_F32;
    double ig = (double)b->ignore_index;
    int bad = 0;
    int64_t count = bce_tally(t, ig, j0, j1, &bad);
    if (!bad)
        return count;
    for (int64_t j = j0; j < j1; j++) { /* the first bad one's message */
        double v = lk__get(t->data, tf, j);
        if (bce_is_ignored(v, ig, tf))
            continue;
        if (v < 0.0 || v > 1.0) {
            char where[160];
            lk_index_str(where, sizeof where, t->ndim, t->shape, j);
            lk_fail(msg, LK_ERR_INVALID,
                    "target%s = %g is outside [0, 1] and not ignore_index %lld", where, v,
                    (long long)b->ignore_index);
            return -1;
        }
    }
    return -1; /* not reached: bce_tally found one */
}

/* The plan's count of the targets not ignored, in pieces of a fixed length
 * on the host's threads, added in piece order: it does not depend on the
 * thread count. A target neither ignored nor in [0, 1] fails the plan, with
 * the first one's message, so that no gradient is half written. */
#define BCE_PIECE ((int64_t)1 << 18)

typedef struct bce_norm_job {
    const bce *b;
    const lk_tensor *t;
    int64_t n;
    int64_t *count; /* per piece; -1 where a target is bad */
} bce_norm_job;

static lk_status bce_norm_range(void *arg, int64_t k0, int64_t k1)
{
    const bce_norm_job *j = (const bce_norm_job *)arg;
    char buf[8];
    lk_msg m = {buf, sizeof buf};
    for (int64_t k = k0; k < k1; k++) {
        int64_t i0 = k * BCE_PIECE, i1 = j->n - i0 < BCE_PIECE ? j->n : i0 + BCE_PIECE;
        j->count[k] = bce_count(j->b, j->t, i0, i1, &m);
    }
    return LK_OK;
}

static lk_status bce_norm(const bce *b, const lk_tensor *t, int64_t n, double *norm, lk_msg *msg)
{
    int64_t pieces = (n + BCE_PIECE - 1) / BCE_PIECE, one = 0;
    bce_norm_job j = {b, t, n, pieces > 1 ? malloc((size_t)pieces * sizeof(int64_t)) : &one};
    if (!j.count)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for the targets' %lld pieces",
                       (long long)pieces);
    const lk_host *h = b->host;
    lk_status st = h && h->parallel_for && pieces > 1
                       ? h->parallel_for(h->ctx, pieces, 1, bce_norm_range, &j)
                       : bce_norm_range(&j, 0, pieces);
    int64_t count = 0;
    int bad = 0;
    for (int64_t k = 0; st == LK_OK && k < pieces; k++) {
        bad |= j.count[k] < 0;
        count += j.count[k];
    }
    if (j.count != &one)
        free(j.count);
    if (st != LK_OK)
        return lk_fail(msg, st, "the targets' count failed");
    if (bad) { /* the first bad target's message */
        bce_count(b, t, 0, n, msg);
        return LK_ERR_INVALID;
    }
    *norm = (double)count;
    return LK_OK;
}

/* Without ignore_index, smoothing only: the plain driver. With it, the
 * targets other than ignore_index must lie in [0, 1]: under mean the plan
 * has checked them as it counted them (plan->aux[0]); otherwise each block
 * checks its own before it writes anything. */
static lk_status bce_gen__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    const bce local = *(const bce *)inst;
    if (!local.has_ignore)
        return lk_elementwise_forward(&local, plan, blk, bce_gen__elem,
                                      LK_EW_WEIGHT | LK_EW_UNIT_TARGET | LK_EW_SIGMOID, msg);
    if (!plan->aux[0] && bce_count(&local, &blk->slots[1], blk->begin, blk->end, msg) < 0)
        return LK_ERR_INVALID;
    return lk_elementwise_forward(&local, plan, blk, bce_gen__elem, LK_EW_WEIGHT | LK_EW_SIGMOID,
                                  msg);
}

LK__KSET(bce_gen, bce_gen__fwd, NULL, 0)
LK__FAMILY(bce_gen)

/* create() as the layer makes it, keeping the host, whose threads the
 * plan's count of the targets uses. */
#if defined(LK_PRIMARY)
static lk_status bce_create(const lk_create_args *a, void **inst, lk_msg *msg);
#else
#define bce_create NULL
#endif

LK_LOSS_DESC(bce_with_logits, bce, LK_LOSS_FUSED, bce_with_logits__finalize, NULL,
             LK_FAMILIES(&bce_plain__family, &bce_gen__family, &bce_pw1__family),
             tut_weighted_logit_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = bce_init, .fini = bce_fini, .plan = bce_plan,
                      .finalize = bce_finalize, .pick = bce_pick),
             .summary = "binary cross-entropy from logits, stable, with weight, pos_weight, "
                        "label_smoothing and ignore_index",
             .version = "1.2.0", .params = bce_params, .create = bce_create)

#if defined(LK_PRIMARY)
static lk_status bce_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    lk_status st = bce_with_logits__create(a, inst, msg);
    if (st == LK_OK)
        ((bce *)lk__user((lk__inst *)*inst))->host = a->host;
    return st;
}
#endif
