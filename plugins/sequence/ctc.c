/* ctc: the connectionist temporal classification loss (Graves et al., ICML
 * 2006), as torch.nn.functional.ctc_loss of PyTorch 1.13 computes it on the
 * CPU (aten/src/ATen/native/LossCTC.cpp).
 *
 * Slots: input (T, N, C) log-probabilities, target (N, S) label ids padded
 * to S, input_lengths (N,) in [1, T], target_lengths (N,) in [0, S]. Sample
 * n reads frames t < input_lengths[n] and labels s < target_lengths[n] = L;
 * its extended label sequence l' puts the blank around and between the
 * labels (length 2L + 1). In log space,
 *
 *   alpha_0(0) = x_0(blank), alpha_0(1) = x_0(l'_1),
 *   alpha_t(s) = LSE(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2)) + x_t(l'_s)
 *                (the s-2 term only when l'_s != l'_{s-2}),
 *   loss_n = -LSE(alpha_{T_n-1}(2L), alpha_{T_n-1}(2L-1)),
 *
 * with x_t(c) = input[t, n, c]; beta runs the same recursion backwards and,
 * as torch's, includes the frame's own emission, so that
 *
 *   d loss_n / d x_t(c) = -exp(LSE_{s: l'_s = c}(alpha_t(s) + beta_t(s)) + loss_n - x_t(c))
 *
 * for t < T_n, and 0 for later frames and for labels the sample never uses.
 * This is the true derivative with respect to the log-probabilities. torch's
 * autograd returns it plus exp(x_t(c)) on the frames t < T_n; the two give
 * the same gradient once they go through a log_softmax, whose backward
 * removes any term proportional to the softmax (docs/losses/sequence.md).
 *
 * Reductions: none (loss_n, shape (N,)), sum, and mean = the mean over the
 * samples of loss_n / max(L, 1), as torch. An alignment that cannot exist
 * (too few frames for the labels, or every path through a -inf) gives
 * loss_n = +inf and, as torch, a NaN gradient on the sample's frames;
 * zero_infinity replaces that loss by 0 and its gradient by 0.
 *
 * Evaluation: LK_LOSS_WHOLE; the samples are independent, run in parallel
 * chunks (host->parallel_for), each writing only its own loss and its own
 * gradient slice; the value sums the per-sample losses in sample order, so
 * the bits do not depend on the thread count. Every number is a double. The
 * recursions are scalar: a dynamic programme over label positions with
 * gathers from the input is not a lane computation, so this file is built
 * for the primary compile only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/loss.h"

#if defined(LK_PRIMARY)

typedef struct ctc_inst {
    int64_t blank;
    int zero_infinity;
    const lk_host *host;
} ctc_inst;

static const lk_param_desc ctc_blank = {
    .name = "blank",
    .doc = "the class id of the blank label, in [0, C)",
    .type = LK_PARAM_INTEGER,
    .default_number = 0.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc ctc_zero_infinity = {
    .name = "zero_infinity",
    .doc = "replace the infinite loss of an impossible alignment (and its gradient) by 0",
    .type = LK_PARAM_BOOL,
    .default_number = 0.0,
};

static const lk_param_desc *const ctc_params[] = {&ctc_blank, &ctc_zero_infinity, NULL};

static const lk_slot_desc ctc_input = {
    .name = "input",
    .doc = "(T, N, C) log-probabilities (a log_softmax over C)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE | LK_SLOT_PADDED, /* frames past a length are not read */
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
    .ndims = LK_NDIM_BIT(3),
    .batch = LK_BATCH_DIM(1),
};

static const lk_slot_desc ctc_target = {
    .name = "target",
    .doc = "(N, S) label ids in [0, C), never the blank, padded to S (padding is not read)",
    .dtypes = LK_DTYPES_INT,
    .flags = LK_SLOT_PADDED, /* labels past a length are not read */
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_NONNEGATIVE,
    .ndims = LK_NDIM_BIT(2),
    .batch = LK_BATCH_DIM(0),
};

static const lk_slot_desc ctc_input_lengths = {
    .name = "input_lengths",
    .doc = "(N,) the frames of each sample, in [1, T]",
    .dtypes = LK_DTYPES_INT,
    .flags = 0,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_NONNEGATIVE,
    .ndims = LK_NDIM_BIT(1),
    .batch = LK_BATCH_DIM(0),
};

static const lk_slot_desc ctc_target_lengths = {
    .name = "target_lengths",
    .doc = "(N,) the labels of each sample, in [0, S]",
    .dtypes = LK_DTYPES_INT,
    .flags = 0,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_NONNEGATIVE,
    .ndims = LK_NDIM_BIT(1),
    .batch = LK_BATCH_DIM(0),
};

static const lk_slot_desc *const ctc_slots[] = {&ctc_input, &ctc_target, &ctc_input_lengths,
                                                &ctc_target_lengths, NULL};

static lk_status ctc_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    ctc_inst *in = (ctc_inst *)calloc(1, sizeof *in);
    if (!in)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    in->blank = a->params[0].integer;
    in->zero_infinity = a->params[1].integer != 0;
    in->host = a->host;
    *inst = in;
    return LK_OK;
}

static void ctc_destroy(void *inst)
{
    free(inst);
}

static lk_status ctc_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    (void)reduction;
    const ctc_inst *in = (const ctc_inst *)inst;
    const lk_tensor *x = &slots[0], *tg = &slots[1], *il = &slots[2], *tl = &slots[3];
    if (x->ndim != 3)
        return lk_fail(msg, LK_ERR_SHAPE, "input has %d dimensions; ctc takes (T, N, C)",
                       (int)x->ndim);
    int64_t n = x->shape[1], c = x->shape[2];
    if (tg->ndim != 2 || tg->shape[0] != n)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "target must be (N, S) with N = %lld (input's dim 1), padded to the "
                       "longest target",
                       (long long)n);
    if (il->ndim != 1 || il->shape[0] != n)
        return lk_fail(msg, LK_ERR_SHAPE, "input_lengths must be (N,) with N = %lld", (long long)n);
    if (tl->ndim != 1 || tl->shape[0] != n)
        return lk_fail(msg, LK_ERR_SHAPE, "target_lengths must be (N,) with N = %lld",
                       (long long)n);
    if (in->blank >= c)
        return lk_fail(msg, LK_ERR_INVALID, "blank = %lld is not a class of input's C = %lld",
                       (long long)in->blank, (long long)c);
    plan->n_positions = n;
    plan->out_ndim = 1;
    plan->out_shape[0] = n;
    plan->mean_norm = (double)n;
    return LK_OK;
}

/* Scalar element access (lk_load and lk_store name lane operations in a
 * loss.h file). */
static double ld(const lk_tensor *t, int64_t i)
{
    return t->dtype == LK_DTYPE_F32 ? (double)((const float *)t->data)[i]
                                    : ((const double *)t->data)[i];
}

static void put(const lk_tensor *t, int64_t i, double v, uint32_t flags)
{
    int acc = (flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    if (t->dtype == LK_DTYPE_F32) {
        float *p = (float *)t->data + i;
        *p = acc ? (float)((double)*p + v) : (float)v;
    } else {
        double *p = (double *)t->data + i;
        *p = acc ? *p + v : v;
    }
}

static int64_t load_int(const lk_tensor *t, int64_t i)
{
    return t->dtype == LK_DTYPE_I32 ? (int64_t)((const int32_t *)t->data)[i]
                                    : ((const int64_t *)t->data)[i];
}

/* log(exp(a) + exp(b) + exp(c)) as torch forms it: shifted by the largest,
 * which is taken as 0 when every term is -inf. */
static double lse3(double a, double b, double c)
{
    double m = a > b ? a : b;
    m = c > m ? c : m;
    if (m == -HUGE_VAL)
        m = 0.0;
    return log(exp(a - m) + exp(b - m) + exp(c - m)) + m;
}

static double lse2(double a, double b)
{
    return lse3(a, b, -HUGE_VAL);
}

/* One call's shared state. */
typedef struct ctc_call {
    const ctc_inst *in;
    const lk_tensor *x, *tg, *il, *tl, *grad;
    int64_t T, N, C, S;
    double *nll;    /* N losses, before zero_infinity */
    double *gscale; /* N gradient factors (reduction, upstream) */
    uint32_t flags; /* LK_BLOCK_* */
} ctc_call;

static double xval(const ctc_call *k, int64_t t, int64_t n, int64_t c)
{
    return ld(k->x, (t * k->N + n) * k->C + c);
}

/* l'_s of sample n: the blank at even s, label s / 2 at odd s. */
static int64_t label_at(const ctc_call *k, int64_t n, int64_t s)
{
    return s % 2 == 0 ? k->in->blank : load_int(k->tg, n * k->S + s / 2);
}

/* Sample n: alpha (tn x (2L + 1), in work), the loss, and when wanted the
 * gradient slice, using two beta rows and one row of C collected sums. */
static void ctc_sample(const ctc_call *k, int64_t n, double *work)
{
    int64_t tn = load_int(k->il, n), L = load_int(k->tl, n), sp = 2 * L + 1;
    double *alpha = work, *beta = alpha + tn * sp, *beta_next = beta + sp, *lcab = beta_next + sp;
    for (int64_t s = 0; s < sp; s++)
        alpha[s] = -HUGE_VAL;
    alpha[0] = xval(k, 0, n, k->in->blank);
    if (L > 0)
        alpha[1] = xval(k, 0, n, label_at(k, n, 1));
    for (int64_t t = 1; t < tn; t++) {
        const double *prev = alpha + (t - 1) * sp;
        double *cur = alpha + t * sp;
        for (int64_t s = 0; s < sp; s++) {
            int64_t l = label_at(k, n, s);
            double a2 = s > 0 ? prev[s - 1] : -HUGE_VAL;
            double a3 = s > 1 && label_at(k, n, s - 2) != l ? prev[s - 2] : -HUGE_VAL;
            cur[s] = lse3(prev[s], a2, a3) + xval(k, t, n, l);
        }
    }
    const double *last = alpha + (tn - 1) * sp;
    double nll = -lse2(last[2 * L], L > 0 ? last[2 * L - 1] : -HUGE_VAL);
    k->nll[n] = nll;
    if (!k->grad->data)
        return;
    double g = k->gscale[n];
    int zero = k->in->zero_infinity && nll == HUGE_VAL;
    for (int64_t t = k->T - 1; t >= 0; t--) {
        int64_t row = (t * k->N + n) * k->C;
        if (t >= tn || zero) {
            for (int64_t c = 0; c < k->C; c++)
                put(k->grad, row + c, 0.0, k->flags);
            continue;
        }
        /* beta_t from beta_{t+1} (beta_next), then the collected sums */
        for (int64_t s = sp - 1; s >= 0; s--) {
            int64_t l = label_at(k, n, s);
            double b;
            if (t == tn - 1)
                b = s >= sp - 2 ? xval(k, t, n, l) : -HUGE_VAL;
            else {
                double b2 = s < sp - 1 ? beta_next[s + 1] : -HUGE_VAL;
                double b3 = s < sp - 2 && label_at(k, n, s + 2) != l ? beta_next[s + 2] : -HUGE_VAL;
                b = lse3(beta_next[s], b2, b3) + xval(k, t, n, l);
            }
            beta[s] = b;
        }
        for (int64_t c = 0; c < k->C; c++)
            lcab[c] = -HUGE_VAL;
        for (int64_t s = 0; s < sp; s++) {
            int64_t l = label_at(k, n, s);
            double ab = alpha[t * sp + s] + beta[s];
            lcab[l] = lcab[l] == -HUGE_VAL ? ab : lse2(lcab[l], ab);
        }
        for (int64_t c = 0; c < k->C; c++) {
            double d = lcab[c] == -HUGE_VAL && nll != HUGE_VAL
                           ? 0.0
                           : -exp(lcab[c] + nll - xval(k, t, n, c));
            put(k->grad, row + c, g * d, k->flags);
        }
        double *swap = beta;
        beta = beta_next;
        beta_next = swap;
    }
}

/* A chunk of samples, with one work area sized for its largest sample. */
static lk_status ctc_chunk(void *arg, int64_t begin, int64_t end)
{
    const ctc_call *k = (const ctc_call *)arg;
    size_t need = 0;
    for (int64_t n = begin; n < end; n++) {
        int64_t tn = load_int(k->il, n), sp = 2 * load_int(k->tl, n) + 1;
        size_t w = (size_t)((tn + 2) * sp + k->C);
        need = w > need ? w : need;
    }
    const lk_host *h = k->in->host;
    double *work = (double *)h->scratch_alloc(h->ctx, need * sizeof(double));
    if (!work)
        return LK_ERR_NOMEM;
    for (int64_t n = begin; n < end; n++)
        ctc_sample(k, n, work);
    h->scratch_free(h->ctx, work);
    return LK_OK;
}

/* Lengths and labels of every sample, and +inf log-probabilities of its
 * labels and the blank in its frames (reached by a path or not: +inf is no
 * log-probability anywhere): one line naming the first bad sample. */
static lk_status ctc_validate(const ctc_call *k, lk_msg *msg)
{
    for (int64_t n = 0; n < k->N; n++) {
        int64_t tn = load_int(k->il, n), L = load_int(k->tl, n);
        if (tn < 1 || tn > k->T)
            return lk_fail(msg, LK_ERR_INVALID,
                           "sample %lld: input_lengths = %lld is outside [1, T = %lld]",
                           (long long)n, (long long)tn, (long long)k->T);
        if (L < 0 || L > k->S)
            return lk_fail(msg, LK_ERR_INVALID,
                           "sample %lld: target_lengths = %lld is outside [0, S = %lld]",
                           (long long)n, (long long)L, (long long)k->S);
        for (int64_t s = 0; s < L; s++) {
            int64_t l = load_int(k->tg, n * k->S + s);
            if (l == k->in->blank)
                return lk_fail(msg, LK_ERR_INVALID,
                               "sample %lld: target[%lld] = %lld is the blank; a target cannot "
                               "hold it",
                               (long long)n, (long long)s, (long long)l);
            if (l < 0 || l >= k->C)
                return lk_fail(
                    msg, LK_ERR_INVALID,
                    "sample %lld: target[%lld] = %lld is not a class id in [0, C = %lld)",
                    (long long)n, (long long)s, (long long)l, (long long)k->C);
        }
        for (int64_t t = 0; t < tn; t++)
            for (int64_t s = 0; s <= L; s++) {
                int64_t c = s == L ? k->in->blank : load_int(k->tg, n * k->S + s);
                if (xval(k, t, n, c) == HUGE_VAL)
                    return lk_fail(msg, LK_ERR_NUMERIC,
                                   "sample %lld: input[%lld, %lld, %lld] is +inf, not a "
                                   "log-probability",
                                   (long long)n, (long long)t, (long long)n, (long long)c);
            }
    }
    return LK_OK;
}

static lk_status ctc_whole(const void *inst, const lk_plan *plan, const lk_whole_args *args,
                           double *value, lk_msg *msg)
{
    (void)plan;
    const ctc_inst *in = (const ctc_inst *)inst;
    const lk_tensor *x = &args->slots[0];
    ctc_call k = {.in = in,
                  .x = x,
                  .tg = &args->slots[1],
                  .il = &args->slots[2],
                  .tl = &args->slots[3],
                  .grad = &args->grads[0],
                  .T = x->shape[0],
                  .N = x->shape[1],
                  .C = x->shape[2],
                  .S = args->slots[1].shape[1],
                  .flags = args->flags};
    lk_status st = ctc_validate(&k, msg);
    if (st != LK_OK)
        return st;
    const lk_host *h = in->host;
    size_t bytes = (size_t)(k.N > 0 ? k.N : 1) * 2 * sizeof(double);
    double *mem = (double *)h->scratch_alloc(h->ctx, bytes);
    if (!mem)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld samples", (long long)k.N);
    k.nll = mem;
    k.gscale = mem + (k.N > 0 ? k.N : 1);
    int mean = args->reduction == LK_REDUCTION_MEAN;
    for (int64_t n = 0; n < k.N; n++) {
        double L = (double)load_int(k.tl, n);
        k.gscale[n] =
            mean ? args->grad_scale / ((double)k.N * (L > 1.0 ? L : 1.0)) : args->grad_scale;
    }
    if (k.N > 0)
        st = h->parallel_for(h->ctx, k.N, 1, ctc_chunk, &k);
    if (st != LK_OK) {
        h->scratch_free(h->ctx, mem);
        return lk_fail(msg, st, "out of memory for the alpha and beta tables");
    }
    double sum = 0.0;
    for (int64_t n = 0; n < k.N; n++) {
        double l = k.nll[n];
        if (in->zero_infinity && l == HUGE_VAL)
            l = 0.0;
        if (args->out->data)
            put(args->out, n, l, 0);
        if (mean) {
            double L = (double)load_int(k.tl, n);
            l /= L > 1.0 ? L : 1.0;
        }
        sum += l;
    }
    h->scratch_free(h->ctx, mem);
    switch (args->reduction) {
    case LK_REDUCTION_SUM: *value = sum; break;
    /* N = 0: a mean over nothing is 0 (docs/design.md; torch: NaN) */
    case LK_REDUCTION_MEAN: *value = k.N > 0 ? sum / (double)k.N : 0.0; break;
    default: *value = NAN; break;
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Examples for `losskit check` and `losskit bench`                          */

static double ex_unit(uint64_t *s) /* splitmix64, in [0, 1) */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

/* (T, N, C, S) of example k; the class count grows past the blank. */
static int ex_sizes(int32_t k, int64_t blank, int64_t *sz)
{
    static const int64_t small[5][4] = {
        {6, 3, 4, 3}, {5, 2, 3, 2}, {8, 4, 5, 4}, {4, 1, 6, 1}, {5, 2, 2, 3}};
    if (k == -1) {
        sz[0] = 60, sz[1] = 96, sz[2] = 12, sz[3] = 20;
    } else if (k >= 0 && k < 5) {
        memcpy(sz, small[k], sizeof small[k]);
    } else {
        return 0;
    }
    if (sz[2] < blank + 2)
        sz[2] = blank + 2;
    return 1;
}

/* Log-softmaxed normal logits; per sample a length in [max(1, T - 2), T]
 * (sample 0 takes T) and labels whose alignment exists: a target of L
 * labels with r adjacent repeats needs L + r frames. Some samples have no
 * label at all. */
static lk_status ctc_example(const void *inst, int32_t k, int32_t dtype, uint64_t seed,
                             lk_tensor *slots, lk_msg *msg)
{
    (void)msg;
    const ctc_inst *in = (const ctc_inst *)inst;
    int64_t sz[4];
    if (!ex_sizes(k, in->blank, sz))
        return LK_ERR_NOT_FOUND;
    int64_t T = sz[0], N = sz[1], C = sz[2], S = sz[3];
    if (!slots[0].data) {
        static const int32_t nd[4] = {3, 2, 1, 1};
        const int64_t shapes[4][3] = {{T, N, C}, {N, S, 0}, {N, 0, 0}, {N, 0, 0}};
        for (int i = 0; i < 4; i++) {
            slots[i].dtype = i == 0 ? dtype : LK_DTYPE_I64;
            slots[i].ndim = nd[i];
            memcpy((int64_t *)slots[i].shape, shapes[i], (size_t)nd[i] * sizeof(int64_t));
        }
        return LK_OK;
    }
    double *row = (double *)malloc((size_t)C * sizeof(double));
    if (!row)
        return LK_ERR_NOMEM;
    for (int64_t i = 0; i < T * N; i++) {
        double m = -HUGE_VAL, z = 0.0;
        for (int64_t c = 0; c < C; c++) {
            double u = ex_unit(&seed), v = ex_unit(&seed);
            row[c] = 1.5 * sqrt(-2.0 * log1p(-u)) * cos(6.283185307179586 * v);
            m = row[c] > m ? row[c] : m;
        }
        for (int64_t c = 0; c < C; c++)
            z += exp(row[c] - m);
        for (int64_t c = 0; c < C; c++) {
            double lp = row[c] - m - log(z);
            if (dtype == LK_DTYPE_F32)
                ((float *)slots[0].data)[i * C + c] = (float)lp;
            else
                ((double *)slots[0].data)[i * C + c] = lp;
        }
    }
    free(row);
    int64_t *tg = (int64_t *)slots[1].data, *il = (int64_t *)slots[2].data,
            *tl = (int64_t *)slots[3].data;
    for (int64_t n = 0; n < N; n++) {
        int64_t tn = n == 0 ? T : T - (int64_t)(ex_unit(&seed) * 3.0);
        tn = tn < 1 ? 1 : tn;
        int64_t want = (int64_t)(ex_unit(&seed) * (double)(S + 1)), L = 0, frames = 0, prev = -1;
        for (int64_t s = 0; s < S; s++) {
            /* a label of [0, C) other than the blank */
            int64_t l = (int64_t)(ex_unit(&seed) * (double)(C - 1));
            l += l >= in->blank;
            int64_t cost = 1 + (l == prev);
            if (s == L && s < want && frames + cost <= tn) {
                frames += cost;
                prev = l;
                L++;
            }
            tg[n * S + s] = l; /* the padding holds labels too; never read */
        }
        il[n] = tn;
        tl[n] = L;
    }
    return LK_OK;
}

const lk_loss_desc ctc_desc = {
    .id = "ctc",
    .summary = "connectionist temporal classification: -log of the total probability of every "
               "alignment of each target to its frames, from (T, N, C) log-probabilities",
    .version = "1.0.0",
    .params = ctc_params,
    .slots = ctc_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_NONE) | LK_REDUCTION_BIT(LK_REDUCTION_MEAN) |
                  LK_REDUCTION_BIT(LK_REDUCTION_SUM),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_WHOLE,
    .create = ctc_create,
    .destroy = ctc_destroy,
    .plan = ctc_plan,
    .whole = ctc_whole,
    .example = ctc_example,
};

#endif
