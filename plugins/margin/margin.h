/* margin.h: what the margin family's losses share: the target slot of ±1
 * labels, the margin parameter, and the row driver of the losses whose loss
 * is a function of a whole row (multilabel_margin, multi_margin,
 * cosine_embedding, triplet_margin). Private to the family.
 *
 * The row driver. A position is one row: the D elements of the last
 * dimension (of a 2-D (N, D) tensor, or the whole of a 1-D one), laid out
 * contiguously. plan() sets n_positions to the row count, the output of
 * reduction none to one value per row and mean_norm to the row count; the
 * kernel of a block calls the loss's row function once per row, in order,
 * and adds the row losses in double in that order, so a block's sum depends
 * on its rows alone (bitwise the same on any thread count). A row function
 * reads its row through the lanes (lk_v), sums in double (lk_acc), and
 * writes the gradients of its own row, scaled by grad_scale (the gradient of
 * the plain sum of row losses), stored or accumulated.
 *
 * Row losses run in double lanes for both float dtypes: a float32 tensor is
 * read by conversion and its gradient rounded once at the end, so the row
 * sums, norms and cosines are those of the float64 upcast. These losses are
 * bound by their arithmetic, not by memory, and the double lanes keep the
 * cancellation of 1 - cos and of distance differences out of float32. */
#ifndef LOSSKIT_MARGIN_H
#define LOSSKIT_MARGIN_H

#include "losskit/loss.h"

/* ------------------------------------------------------------------------ */
/* Slots and parameters                                                      */

static const lk_slot_desc mg_input LK__UNUSED = {.name = "input",
                                                 .doc = "scores or predictions, any shape",
                                                 .dtypes = LK_DTYPES_FLOAT,
                                                 .flags = LK_SLOT_DIFFERENTIABLE,
                                                 .shape = LK_SHAPE_ANY,
                                                 .values = LK_VALUES_REAL};
static const lk_slot_desc mg_sign_target LK__UNUSED = {.name = "target",
                                                       .doc = "labels 1 or -1, shaped like input",
                                                       .dtypes = LK_DTYPES_FLOAT,
                                                       .shape = LK_SHAPE_LIKE_INPUT,
                                                       .values = LK_VALUES_SIGN};
static const lk_slot_desc *const mg_sign_slots[] LK__UNUSED = {&mg_input, &mg_sign_target, NULL};

/* One value per row of a row loss: shape (N,) of an (N, D) input, () of a
 * (D,) one. */
#define MG_REDUCTIONS LK_REDUCTIONS_ELEMENTWISE

/* A margin parameter (hinge_embedding, margin_ranking) as the lanes take
 * it. Float lanes split it into its float value hi and the rest lo, so
 * that near a kink hi - x is exact and a float32 term keeps what a margin
 * such as 1.3 (not a float) would round away; the rest is 0 for an
 * infinite margin (inf - inf would make every element NaN). A finite
 * margin beyond float's range (wide) has no float value: float lanes then
 * take it whole, in double, lane by lane (the loss's wide element
 * function). Double lanes take the margin whole, with a rest of 0. */
typedef struct mg_margin {
    double v, hi, lo;
    int wide;
} mg_margin;

static inline mg_margin mg_margin_of(double m)
{
    mg_margin o = {m, (double)(float)m, 0.0, 0};
    o.lo = isinf(o.hi) ? 0.0 : m - o.hi;
    o.wide = isinf(o.hi) && !isinf(m);
    return o;
}

/* The lanes' value of the margin, and its rest. */
LK_AI double mg_hi(const mg_margin *m)
{
#if defined(LK_LANES_F32)
    return m->hi;
#else
    return m->v;
#endif
}

LK_AI double mg_lo(const mg_margin *m)
{
#if defined(LK_LANES_F32)
    return m->lo;
#else
    (void)m;
    return 0.0;
#endif
}

/* ------------------------------------------------------------------------ */
/* Lane helpers                                                              */

/* Lanes that are +inf or -inf. */
LK_AI lk_m mg_isinf(lk_v a)
{
    return lk_eq(lk_abs(a), lk_set(HUGE_VAL));
}

/* max(0, a), NaN staying NaN (torch's clamp_min(0)): max() returns its
 * second operand when either is NaN. */
LK_AI lk_v mg_clamp0(lk_v a)
{
    return lk_max(lk_zero(), a);
}

/* ------------------------------------------------------------------------ */
/* The row driver                                                            */

/* A row loss's source is compiled in double lanes only: each wraps its
 * kernels in #if MG_ROWS ... #endif (the float-lane compiles of the recipe
 * then see only its declarations). */
#if defined(LK_LANES_F32)
#define MG_ROWS 0
#else
#define MG_ROWS 1
#endif

#if MG_ROWS
/* The lanes' indices 0, 1, ..., LK_W - 1. */
LK_AI lk_v mg_iota(void)
{
    static const double iota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return lk_load(iota);
}
#endif

enum { MG_AUX_D, MG_AUX_SCRATCH }; /* plan->aux of a row loss */

/* What a row function sees: the call's tensors and how to write
 * gradients. */
typedef struct mg_rows {
    const lk_tensor *s; /* the slots */
    const lk_tensor *g; /* the gradients (data NULL: not wanted) */
    int64_t D;          /* elements per row */
    double scale;       /* grad_scale */
    int acc;            /* LK_BLOCK_GRAD_ACCUMULATE */
    int want_grad;      /* some gradient is wanted */
    double *scratch;    /* plan->aux[MG_AUX_SCRATCH] doubles, for the block */
} mg_rows;

/* Row r's loss into *loss, and its gradients. */
typedef lk_status (*mg_row_fn)(const void *inst, const mg_rows *io, int64_t r, double *loss,
                               lk_msg *msg);

LK_AI int mg_f32(const lk_tensor *t)
{
    return t->dtype == LK_DTYPE_F32;
}

/* The k lanes of slot s from element i (0 in the others). */
LK_AI lk_v mg_ld(const mg_rows *io, int s, int64_t i, int k)
{
    return lk__ld(io->s[s].data, mg_f32(&io->s[s]), i, k, 0.0);
}

/* Element i of float slot s. */
LK_AI double mg_get(const mg_rows *io, int s, int64_t i)
{
    return lk__get(io->s[s].data, mg_f32(&io->s[s]), i);
}

LK_AI int mg_wants(const mg_rows *io, int s)
{
    return io->g && io->g[s].data;
}

/* Writes (or adds) grad_scale g at the k lanes from element i of slot s's
 * gradient, when it is wanted. */
LK_AI void mg_put(const mg_rows *io, int s, int64_t i, int k, lk_v g)
{
    if (mg_wants(io, s))
        lk__put_grad(io->g[s].data, mg_f32(&io->g[s]), i, k, g, lk_set(io->scale), io->acc);
}

/* The same for one element, after its lanes were written: grad_scale v
 * replaces what mg_put stored there, or is added to it. */
LK_AI void mg_put1(const mg_rows *io, int s, int64_t i, double v)
{
    if (!mg_wants(io, s))
        return;
    void *p = io->g[s].data;
    v *= io->scale;
    if (mg_f32(&io->g[s]))
        ((float *)p)[i] = (float)(io->acc ? ((float *)p)[i] + v : v);
    else
        ((double *)p)[i] = io->acc ? ((double *)p)[i] + v : v;
}

/* The message for an infinite element of slot s in [i, i + n). */
static inline lk_status mg_refuse_inf(const mg_rows *io, const char *name, int s, int64_t i,
                                      int64_t n, lk_msg *msg)
{
    for (int64_t j = i; j < i + n; j++) {
        double v = mg_get(io, s, j);
        if (isinf(v)) {
            char where[160];
            lk_index_str(where, sizeof where, io->s[s].ndim, io->s[s].shape, j);
            return lk_fail(msg, LK_ERR_NUMERIC,
                           "%s%s = %g: the distance or angle of an infinite vector is undefined",
                           name, where, v);
        }
    }
    return lk_fail(msg, LK_ERR_INTERNAL, "an infinite %s element vanished", name);
}

/* The block kernel: fn for every row of the block, in order. */
LK_AI lk_status mg_rows_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                mg_row_fn fn, int n_slots, lk_msg *msg)
{
    mg_rows io = {blk->slots,
                  blk->grads,
                  plan->aux[MG_AUX_D],
                  blk->grad_scale,
                  (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0,
                  0,
                  NULL};
    for (int s = 0; s < n_slots; s++)
        io.want_grad |= mg_wants(&io, s);
    int64_t n_scratch = plan->aux[MG_AUX_SCRATCH];
    if (n_scratch > 0 && !(io.scratch = (double *)malloc((size_t)n_scratch * sizeof(double))))
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld doubles of scratch",
                       (long long)n_scratch);
    void *out = blk->out ? blk->out->data : NULL;
    int of32 = out && blk->out->dtype == LK_DTYPE_F32;
    double sum = 0.0;
    lk_status st = LK_OK;
    for (int64_t r = blk->begin; st == LK_OK && r < blk->end; r++) {
        double l = 0.0;
        st = fn(inst, &io, r, &l, msg);
        sum += l;
        if (out && of32)
            ((float *)out)[r] = (float)l;
        else if (out)
            ((double *)out)[r] = l;
    }
    free(io.scratch);
    if (st == LK_OK)
        blk->stats[0] += sum;
    return st;
}

/* The row family: double-lane variants only, so that float32 data runs in
 * double lanes (see the top of this file). */
#if defined(LK_BUILD_AVX2)
#define MG__DECL_AVX2(name) extern const lk_kset LK__VAR(name, avx2, f64);
#define MG__REF_AVX2(name)                                                                         \
    {                                                                                              \
        NULL, &LK__VAR(name, avx2, f64)                                                            \
    }
#else
#define MG__DECL_AVX2(name)
#define MG__REF_AVX2(name)                                                                         \
    {                                                                                              \
        NULL, NULL                                                                                 \
    }
#endif
#if defined(LK_BUILD_AVX512)
#define MG__DECL_AVX512(name) extern const lk_kset LK__VAR(name, avx512, f64);
#define MG__REF_AVX512(name)                                                                       \
    {                                                                                              \
        NULL, &LK__VAR(name, avx512, f64)                                                          \
    }
#else
#define MG__DECL_AVX512(name)
#define MG__REF_AVX512(name)                                                                       \
    {                                                                                              \
        NULL, NULL                                                                                 \
    }
#endif

#if defined(LK_PRIMARY)
#define MG__FAMILY(name)                                                                           \
    MG__DECL_AVX2(name)                                                                            \
    MG__DECL_AVX512(name)                                                                          \
    static const lk_kfamily name##__family = {{                                                    \
        {NULL, &LK__VAR(name, portable, f64)},                                                     \
        MG__REF_AVX2(name),                                                                        \
        MG__REF_AVX512(name),                                                                      \
    }};
#else
#define MG__FAMILY(name)
#endif

/* The kernels of a row loss of n_slots slots: fn is
 * lk_status fn(const T *inst, const mg_rows *io, int64_t r, double *loss, lk_msg *msg). */
#if !MG_ROWS
#define MG_ROW_KERNELS(name, T, fn, n_slots) /* double lanes only */
#else
#define MG_ROW_KERNELS(name, T, fn, n_slots)                                                       \
    LK_AI lk_status name##__row(const void *p, const mg_rows *io, int64_t r, double *l, lk_msg *m) \
    {                                                                                              \
        return fn((const T *)p, io, r, l, m);                                                      \
    }                                                                                              \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T local = *(const T *)inst;                                                          \
        return mg_rows_forward(&local, plan, blk, name##__row, (n_slots), msg);                    \
    }                                                                                              \
    LK__KSET(name, name##__fwd, NULL, 0)                                                           \
    MG__FAMILY(name)
#endif

/* One registration line of a row loss: its kernels and descriptor (FUSED:
 * the gradient of a row needs nothing beyond the row). */
#define MG_ROW_LOSS(lid, T, fn, n_slots, slots, hooks, ...)                                        \
    MG_ROW_KERNELS(lid, T, fn, n_slots)                                                            \
    LK_LOSS_DESC(lid, T, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&lid##__family), slots,            \
                 MG_REDUCTIONS, hooks, __VA_ARGS__)

/* Rows per block: about 2^15 elements (a function of the shape only). */
static inline int64_t mg_block_rows(int64_t D)
{
    int64_t n = ((int64_t)1 << 15) / (D > 0 ? D : 1);
    return n < 1 ? 1 : n > LK_BLOCK_POSITIONS ? LK_BLOCK_POSITIONS : n;
}

/* Fills the plan of a row loss of `rows` rows of D elements; reduction none
 * gives out_ndim values of shape out_shape. */
static inline void mg_rows_plan(lk_plan *plan, int64_t rows, int64_t D, int32_t out_ndim,
                                const int64_t *out_shape, int64_t scratch)
{
    plan->n_positions = rows;
    plan->block_positions = mg_block_rows(D);
    plan->n_stats = 1;
    plan->out_ndim = out_ndim;
    for (int32_t d = 0; d < out_ndim; d++)
        plan->out_shape[d] = out_shape[d];
    plan->mean_norm = (double)rows;
    plan->aux[MG_AUX_D] = D;
    plan->aux[MG_AUX_SCRATCH] = scratch;
}

/* "(2, 3, 5)" of a tensor, for messages. */
static inline const char *mg_shape(char *buf, size_t cap, const lk_tensor *t)
{
    lk_shape_str(buf, cap, t->ndim, t->shape);
    return buf;
}

#endif /* LOSSKIT_MARGIN_H */
