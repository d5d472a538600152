/* contrastive.h: the engine shared by ntxent and supcon, two whole-batch
 * losses over the cosine similarities of M embedding rows.
 *
 * Both are one formula. Rows are L2-normalised (z_i = x_i / max(|x_i|,
 * 1e-12), torch's F.normalize), l_ij = z_i . z_j / tau, and each row i has
 * a class c_i; its positives are P(i) = {j != i : c_j = c_i}. An anchor with
 * at least one positive (i in A) scores
 *
 *     loss_i = LSE_i - (1 / |P(i)|) sum_{p in P(i)} l_ip,
 *     LSE_i  = log sum_{a != i} exp(l_ia),
 *
 * and the value is the mean of loss_i over A. supcon takes the classes from
 * its target; ntxent is the case c_i = i mod N of a (2N, D) input (one
 * positive per anchor, every anchor in A).
 *
 * The gradient. With p_ij = exp(l_ij - LSE_i), y_ij = [c_i = c_j, i != j]
 * and the symmetry of l,
 *
 *     d value / d z_i = K sum_j w_ij z_j,  K = 1 / (tau |A|),
 *     w_ij = [i in A] (p_ij - y_ij / |P(i)|) + [j in A] (p_ji - y_ij / |P(j)|),
 *
 * with p_ji = exp(l_ij - LSE_j); then through the normalisation,
 * d/dx_i = (g - z_i (z_i . g)) / |x_i| for |x_i| > 1e-12, g / 1e-12 below.
 *
 * Evaluation: two passes over the anchor rows, each row on its own (so any
 * row order, chunking or thread count gives the same bits). Pass 1 computes
 * row i of the similarity matrix (a matrix-vector product over the
 * transposed normalised rows, in double lanes), its max-shifted log-sum-exp
 * and the sum of its positive logits. Pass 2 (only when a gradient is
 * wanted) recomputes the row (or reads it back when the whole matrix fits in
 * CTR_CACHE_BYTES), forms w_i. and d/dz_i = sum_j w_ij z_j. Every product
 * and sum is in double whatever the input dtype; the value is the sum of
 * the per-row terms in row order.
 *
 * The four row kernels below are written once on double lanes (lanes.h) and
 * compiled for every instruction set; the float-lane compiles define
 * nothing (every computation here is in double). */
#ifndef CONTRASTIVE_H
#define CONTRASTIVE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/loss.h"

/* The norm floor of F.normalize (torch's default eps). */
#define CTR_NORM_EPS 1e-12
/* Row lengths are padded to a multiple of this (4 vectors of the widest
 * lanes), with zeros, so that the kernels need no tails. */
#define CTR_PAD 32
/* The rows of the transposed embeddings are this many doubles longer than
 * needed, so that a power-of-two row count does not put every row's start
 * in the same cache set (the kernels walk down the columns). */
#define CTR_SKEW 8
/* Anchor rows handled together, so that each load of the transposed rows
 * serves several of them. */
#define CTR_GROUP 4
/* The similarity matrix is kept between the passes when it fits here. */
#define CTR_CACHE_BYTES ((size_t)64 << 20)

typedef struct ctr_kernels {
    /* For each of r <= CTR_GROUP rows q: s[q mp + j] = sum_k z[q d + k]
     * zt[k ld + j], j in [0, mp). Each element is the same chain of fused
     * multiply-adds over k whatever r, so rows come out bitwise the same
     * however they are grouped. */
    void (*sims)(const double *zt, int64_t ld, int64_t mp, int64_t d, const double *z, int r,
                 double *s);
    /* Over j < m, j != i, with l_j = s[j] inv_tau: out[0] = max l_j,
     * out[1] = sum exp(l_j - out[0]), out[2] = sum of l_j where cls[j] =
     * cls[i]. */
    void (*stats)(const double *s, const double *cls, int64_t m, int64_t i, double inv_tau,
                  double out[3]);
    /* w[j] for j in [0, mp) as in the header (0 at j = i and j >= m); lse[j]
     * and invp[j] (1 / |P(j)|) are 0 for rows outside A, in_a[j] is 1 or
     * 0. q: NULL, or q[j] = exp(Lc - LSE_j) (0 outside A) and f_i = exp(LSE_i
     * - Lc) for a centre Lc, so that p_ji = p_ij f_i q_j costs no exp. */
    void (*weights)(const double *s, const double *cls, const double *lse, const double *invp,
                    const double *in_a, const double *q, double f_i, int64_t m, int64_t mp,
                    int64_t i, double inv_tau, double *w);
    /* For each of r <= CTR_GROUP rows q: dz[q d + k] = sum_j w[q mp + j]
     * zt[k ld + j], k in [0, d), summed in an order that does not depend
     * on r. */
    void (*grad)(const double *zt, int64_t ld, int64_t mp, int64_t d, const double *w, int r,
                 double *dz);
    const char *name;
} ctr_kernels;

/* ------------------------------------------------------------------------ */
/* The row kernels (double-lane compiles)                                    */

#if !defined(LK_LANES_F32)

static const double ctr_iota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

LK_AI lk_dv ctr_index(int64_t j)
{
    return lk_d_add(lk_d_set((double)j), lk_d_load(ctr_iota));
}

LK_AI void ctr_sims_n(const double *zt, int64_t ld, int64_t mp, int64_t d, const double *z,
                      double *s, const int r)
{
    for (int64_t j = 0; j < mp; j += 2 * LK_DW) {
        lk_dv a[CTR_GROUP][2];
        for (int q = 0; q < r; q++)
            a[q][0] = a[q][1] = lk_d_zero();
        const double *t = zt + j;
        for (int64_t k = 0; k < d; k++, t += ld) {
            lk_dv b0 = lk_d_load(t), b1 = lk_d_load(t + LK_DW);
            for (int q = 0; q < r; q++) {
                lk_dv c = lk_d_set(z[q * d + k]);
                a[q][0] = lk_d_fma(c, b0, a[q][0]);
                a[q][1] = lk_d_fma(c, b1, a[q][1]);
            }
        }
        for (int q = 0; q < r; q++) {
            lk_d_store(s + q * mp + j, a[q][0]);
            lk_d_store(s + q * mp + j + LK_DW, a[q][1]);
        }
    }
}

static void ctr_sims(const double *zt, int64_t ld, int64_t mp, int64_t d, const double *z, int r,
                     double *s)
{
    if (r == CTR_GROUP)
        ctr_sims_n(zt, ld, mp, d, z, s, CTR_GROUP);
    else
        for (int q = 0; q < r; q++)
            ctr_sims_n(zt, ld, mp, d, z + q * d, s + q * mp, 1);
}

/* The lanes j, j + 1, ... that are other rows of the batch. */
LK_AI lk_dm ctr_others(int64_t j, int64_t m, int64_t i)
{
    lk_dv jv = ctr_index(j);
    return lk_d_and(lk_d_lt(jv, lk_d_set((double)m)), lk_d_not(lk_d_eq(jv, lk_d_set((double)i))));
}

static void ctr_stats(const double *s, const double *cls, int64_t m, int64_t i, double inv_tau,
                      double out[3])
{
    const lk_dv it = lk_d_set(inv_tau), ninf = lk_d_set(-HUGE_VAL), ci = lk_d_set(cls[i]);
    lk_dv mx = ninf;
    /* max() keeps its second operand when either is NaN: a NaN logit is
     * skipped here and makes the sum below NaN */
    for (int64_t j = 0; j < m; j += LK_DW)
        mx = lk_d_max(lk_d_select(ctr_others(j, m, i), lk_d_mul(lk_d_load(s + j), it), ninf), mx);
    double lane[LK_DW], top = -HUGE_VAL;
    lk_d_store(lane, mx);
    for (int k = 0; k < LK_DW; k++)
        top = lane[k] > top ? lane[k] : top;
    const lk_dv tv = lk_d_set(isfinite(top) ? top : 0.0), zero = lk_d_zero();
    lk_dv se = zero, sp = zero;
    for (int64_t j = 0; j < m; j += LK_DW) {
        lk_dm o = ctr_others(j, m, i);
        lk_dv l = lk_d_mul(lk_d_load(s + j), it);
        se = lk_d_add(se, lk_d_keep(o, lk_d_exp_neg(lk_d_min(zero, lk_d_sub(l, tv)))));
        sp = lk_d_add(sp, lk_d_keep(lk_d_and(o, lk_d_eq(lk_d_load(cls + j), ci)), l));
    }
    out[0] = isfinite(top) ? top : 0.0;
    out[1] = lk_d_hsum(se);
    out[2] = lk_d_hsum(sp);
}

static void ctr_weights(const double *s, const double *cls, const double *lse, const double *invp,
                        const double *in_a, const double *q, double f_i, int64_t m, int64_t mp,
                        int64_t i, double inv_tau, double *w)
{
    const lk_dv it = lk_d_set(inv_tau), zero = lk_d_zero(), ci = lk_d_set(cls[i]);
    const lk_dv lse_i = lk_d_set(lse[i]), invp_i = lk_d_set(invp[i]), fi = lk_d_set(f_i);
    const int anchor = in_a[i] != 0.0;
    for (int64_t j = 0; j < mp; j += LK_DW) {
        lk_dm o = ctr_others(j, m, i);
        lk_dm y = lk_d_and(o, lk_d_eq(lk_d_load(cls + j), ci));
        lk_dv l = lk_d_mul(lk_d_load(s + j), it), pj, wj = zero;
        if (anchor) {
            lk_dv pi = lk_d_exp_neg(lk_d_min(zero, lk_d_sub(l, lse_i)));
            wj = lk_d_sub(pi, lk_d_keep(y, invp_i));
            /* p_ji = p_ij exp(LSE_i - LSE_j), one exp for both */
            pj = q ? lk_d_mul(pi, lk_d_mul(fi, lk_d_load(q + j)))
                   : lk_d_exp_neg(lk_d_min(zero, lk_d_sub(l, lk_d_load(lse + j))));
        } else {
            pj = lk_d_exp_neg(lk_d_min(zero, lk_d_sub(l, lk_d_load(lse + j))));
        }
        /* rows j outside A: in_a = 0 and lse = invp = q = 0, so their term
         * is 0 times a finite number */
        wj = lk_d_add(
            wj, lk_d_mul(lk_d_load(in_a + j), lk_d_sub(pj, lk_d_keep(y, lk_d_load(invp + j)))));
        lk_d_store(w + j, lk_d_keep(o, wj));
    }
}

LK_AI void ctr_grad_n(const double *zt, int64_t ld, int64_t mp, int64_t d, const double *w,
                      double *dz, const int r)
{
    for (int64_t k = 0; k < d; k++) {
        const double *t = zt + k * ld;
        lk_dv a[CTR_GROUP][2];
        for (int q = 0; q < r; q++)
            a[q][0] = a[q][1] = lk_d_zero();
        for (int64_t j = 0; j < mp; j += 2 * LK_DW) {
            lk_dv b0 = lk_d_load(t + j), b1 = lk_d_load(t + j + LK_DW);
            for (int q = 0; q < r; q++) {
                a[q][0] = lk_d_fma(lk_d_load(w + q * mp + j), b0, a[q][0]);
                a[q][1] = lk_d_fma(lk_d_load(w + q * mp + j + LK_DW), b1, a[q][1]);
            }
        }
        for (int q = 0; q < r; q++)
            dz[q * d + k] = lk_d_hsum(lk_d_add(a[q][0], a[q][1]));
    }
}

static void ctr_grad(const double *zt, int64_t ld, int64_t mp, int64_t d, const double *w, int r,
                     double *dz)
{
    if (r == CTR_GROUP)
        ctr_grad_n(zt, ld, mp, d, w, dz, CTR_GROUP);
    else
        for (int q = 0; q < r; q++)
            ctr_grad_n(zt, ld, mp, d, w + q * mp, dz + q * d, 1);
}

/* This compile's kernel table, named after the loss (each loss file has its
 * own copy, so that no symbol is defined twice in one variant library). */
#define CTR__KTABLE(lid)                                                                           \
    extern const ctr_kernels LK_VARIANT(lid##__rows);                                              \
    const ctr_kernels LK_VARIANT(lid##__rows) = {ctr_sims, ctr_stats, ctr_weights, ctr_grad,       \
                                                 LK_TARGET_NAME " double lanes"};
#else
#define CTR__KTABLE(lid)
#endif

/* ------------------------------------------------------------------------ */
/* The whole() engine (primary compile)                                      */

#if defined(LK_PRIMARY)

#if defined(LK_BUILD_AVX2)
#define CTR__DECL_AVX2(lid) extern const ctr_kernels LK__VAR(lid##__rows, avx2, f64);
#define CTR__REF_AVX2(lid)  &LK__VAR(lid##__rows, avx2, f64)
#else
#define CTR__DECL_AVX2(lid)
#define CTR__REF_AVX2(lid) NULL
#endif
#if defined(LK_BUILD_AVX512)
#define CTR__DECL_AVX512(lid) extern const ctr_kernels LK__VAR(lid##__rows, avx512, f64);
#define CTR__REF_AVX512(lid)  &LK__VAR(lid##__rows, avx512, f64)
#else
#define CTR__DECL_AVX512(lid)
#define CTR__REF_AVX512(lid) NULL
#endif

/* The widest built table the CPU and LOSSKIT_SIMD allow. */
static inline const ctr_kernels *ctr_pick(const ctr_kernels *const v[3])
{
    int isa = lk__isa_allowed();
    while (isa > 0 && !v[isa])
        isa--;
    return v[isa];
}

typedef struct ctr_inst {
    double tau;
    const lk_host *host;
    const ctr_kernels *k;
} ctr_inst;

static inline lk_status ctr_create(const ctr_kernels *const v[3], const lk_create_args *a,
                                   void **inst, lk_msg *msg)
{
    ctr_inst *in = (ctr_inst *)calloc(1, sizeof *in);
    if (!in)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    in->tau = a->params[0].number;
    in->host = a->host;
    in->k = ctr_pick(v);
    if (a->host && a->host->log) {
        char line[160];
        snprintf(line, sizeof line, "%s: %s kernels", a->desc ? a->desc->id : "?", in->k->name);
        a->host->log(a->host->ctx, LK_LOG_DEBUG, line);
    }
    *inst = in;
    return LK_OK;
}

static inline void ctr_destroy(void *inst)
{
    free(inst);
}

/* One call's working set. */
typedef struct ctr_call {
    const ctr_inst *in;
    int64_t m, d, mp;
    int64_t ld; /* the row stride of zt: mp + CTR_SKEW */
    double inv_tau;
    const lk_tensor *x;
    const lk_tensor *g; /* NULL: no gradient */
    int accumulate;
    double gscale;             /* grad_scale K, times 1 / (tau |A|) */
    double *z;                 /* m x d, the normalised rows */
    double *zt;                /* d x mp, their transpose, zero-padded */
    double *norm;              /* |x_i|: NaN, +inf for a row with an infinite entry */
    double *cls, *invp, *in_a; /* mp each (padded) */
    double *lse;               /* mp: LSE_i for rows in A, else 0 */
    double *term;              /* m: loss_i for rows in A, else 0 */
    double *cache;             /* m x mp similarities, or NULL */
    double *q;                 /* mp: exp(lc - LSE_j) in A, else 0; or NULL */
    double lc;                 /* the centre of the LSE_j of A */
} ctr_call;

static inline void *ctr_alloc(const ctr_inst *in, size_t bytes)
{
    bytes = bytes ? bytes : 8;
    if (in->host && in->host->scratch_alloc)
        return in->host->scratch_alloc(in->host->ctx, bytes);
    return malloc(bytes);
}

static inline void ctr_free(const ctr_inst *in, void *p)
{
    if (!p)
        return;
    if (in->host && in->host->scratch_free)
        in->host->scratch_free(in->host->ctx, p);
    else
        free(p);
}

/* z_i = x_i / max(|x_i|, eps) for one row; |x_i| by a scaled sum of squares
 * (no overflow or underflow for any finite row). A row with infinite
 * entries takes the limit: the unit vector of the signs of its infinite
 * entries, with norm +inf (and, below, a zero gradient). NaN spreads. */
static inline void ctr_normalise_row(ctr_call *c, int64_t i)
{
    const int64_t d = c->d;
    const int f32 = c->x->dtype == LK_DTYPE_F32;
    const void *xp = c->x->data;
    double *z = c->z + i * d;
    double big = 0.0;
    int nan = 0;
    for (int64_t k = 0; k < d; k++) {
        z[k] = lk__get(xp, f32, i * d + k);
        double a = fabs(z[k]);
        nan |= a != a;
        big = a > big ? a : big;
    }
    double nrm;
    if (nan) {
        nrm = NAN;
    } else if (isinf(big)) {
        double cnt = 0.0;
        for (int64_t k = 0; k < d; k++) {
            z[k] = isinf(z[k]) ? copysign(1.0, z[k]) : 0.0;
            cnt += z[k] != 0.0;
        }
        double r = 1.0 / sqrt(cnt);
        for (int64_t k = 0; k < d; k++)
            z[k] *= r;
        c->norm[i] = HUGE_VAL;
        return;
    } else if (big == 0.0) {
        nrm = 0.0;
    } else {
        double ss = 0.0;
        for (int64_t k = 0; k < d; k++) {
            double u = z[k] / big;
            ss += u * u;
        }
        nrm = big * sqrt(ss);
    }
    c->norm[i] = nrm;
    double den = nrm > CTR_NORM_EPS ? nrm : CTR_NORM_EPS;
    if (nan)
        den = NAN;
    for (int64_t k = 0; k < d; k++)
        z[k] /= den;
}

static lk_status ctr_prep_task(void *arg, int64_t begin, int64_t end)
{
    ctr_call *c = (ctr_call *)arg;
    for (int64_t i = begin; i < end; i++) {
        ctr_normalise_row(c, i);
        for (int64_t k = 0; k < c->d; k++)
            c->zt[k * c->ld + i] = c->z[i * c->d + k];
    }
    return LK_OK;
}

static lk_status ctr_pass1_task(void *arg, int64_t begin, int64_t end)
{
    ctr_call *c = (ctr_call *)arg;
    size_t row = (size_t)c->mp * sizeof(double);
    double *buf = c->cache ? NULL : (double *)ctr_alloc(c->in, CTR_GROUP * row);
    if (!c->cache && !buf)
        return LK_ERR_NOMEM;
    for (int64_t i0 = begin; i0 < end; i0 += CTR_GROUP) {
        int r = end - i0 < CTR_GROUP ? (int)(end - i0) : CTR_GROUP;
        double *s0 = c->cache ? c->cache + i0 * c->mp : buf;
        c->in->k->sims(c->zt, c->ld, c->mp, c->d, c->z + i0 * c->d, r, s0);
        for (int q = 0; q < r; q++) {
            int64_t i = i0 + q;
            double st[3];
            c->lse[i] = 0.0;
            c->term[i] = 0.0;
            if (c->in_a[i] == 0.0)
                continue; /* no term; its similarities serve pass 2 */
            c->in->k->stats(s0 + q * c->mp, c->cls, c->m, i, c->inv_tau, st);
            double lse = st[0] + log(st[1]);
            c->lse[i] = lse;
            c->term[i] = lse - c->invp[i] * st[2];
        }
    }
    ctr_free(c->in, buf);
    return LK_OK;
}

/* Writes (or adds) K d value / d x_i from g = sum_j w_ij z_j. */
static inline void ctr_put_row(ctr_call *c, int64_t i, const double *g)
{
    const int64_t d = c->d;
    const double *z = c->z + i * d;
    double nrm = c->norm[i], zg = 0.0;
    for (int64_t k = 0; k < d; k++)
        zg += z[k] * g[k];
    const int f32 = c->g->dtype == LK_DTYPE_F32;
    void *gp = c->g->data;
    for (int64_t k = 0; k < d; k++) {
        double v;
        if (isinf(nrm))
            v = 0.0; /* the limit: d z / d x = (I - z z') / |x| -> 0 */
        else if (nrm > CTR_NORM_EPS)
            v = (g[k] - z[k] * zg) / nrm;
        else if (nrm == nrm)
            v = g[k] / CTR_NORM_EPS;
        else
            v = NAN;
        v *= c->gscale;
        int64_t at = i * d + k;
        if (c->accumulate)
            v += lk__get(gp, f32, at);
        if (f32)
            ((float *)gp)[at] = (float)v;
        else
            ((double *)gp)[at] = v;
    }
}

static lk_status ctr_pass2_task(void *arg, int64_t begin, int64_t end)
{
    ctr_call *c = (ctr_call *)arg;
    size_t row = (size_t)c->mp * sizeof(double);
    double *s = c->cache ? NULL : (double *)ctr_alloc(c->in, CTR_GROUP * row);
    double *w = (double *)ctr_alloc(c->in, CTR_GROUP * row);
    double *g = (double *)ctr_alloc(c->in, CTR_GROUP * (size_t)c->d * sizeof(double));
    lk_status st = LK_OK;
    if ((!c->cache && !s) || !w || !g)
        st = LK_ERR_NOMEM;
    for (int64_t i0 = begin; st == LK_OK && i0 < end; i0 += CTR_GROUP) {
        int r = end - i0 < CTR_GROUP ? (int)(end - i0) : CTR_GROUP;
        const double *s0 = c->cache ? c->cache + i0 * c->mp : s;
        if (!c->cache)
            c->in->k->sims(c->zt, c->ld, c->mp, c->d, c->z + i0 * c->d, r, s);
        for (int q = 0; q < r; q++)
            c->in->k->weights(s0 + q * c->mp, c->cls, c->lse, c->invp, c->in_a, c->q,
                              c->q ? exp(c->lse[i0 + q] - c->lc) : 0.0, c->m, c->mp, i0 + q,
                              c->inv_tau, w + q * c->mp);
        c->in->k->grad(c->zt, c->ld, c->mp, c->d, w, r, g);
        for (int q = 0; q < r; q++)
            ctr_put_row(c, i0 + q, g + q * c->d);
    }
    ctr_free(c->in, s);
    ctr_free(c->in, w);
    ctr_free(c->in, g);
    return st;
}

/* When the LSE_j of the rows in A lie within CTR_FACTOR_RANGE of one
 * another, pass 2 takes p_ji = p_ij exp(LSE_i - Lc) exp(Lc - LSE_j): one exp
 * per pair instead of two, the factors within e^(+-100). Where p_ij
 * underflows, p_ji < e^(-745 + 200): nothing a sum of terms near 1 can
 * see. A wider spread (a tiny temperature) keeps the two exps. */
#define CTR_FACTOR_RANGE 200.0

static inline void ctr_factor(ctr_call *c)
{
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    for (int64_t j = 0; j < c->m; j++)
        if (c->in_a[j] != 0.0) {
            lo = c->lse[j] < lo ? c->lse[j] : lo;
            hi = c->lse[j] > hi ? c->lse[j] : hi;
        }
    if (!(hi - lo <= CTR_FACTOR_RANGE) || !isfinite(lo) || !isfinite(hi))
        return; /* also NaN */
    c->q = (double *)ctr_alloc(c->in, (size_t)c->mp * sizeof(double));
    if (!c->q)
        return; /* the two-exp path needs no memory */
    c->lc = 0.5 * (lo + hi);
    for (int64_t j = 0; j < c->mp; j++)
        c->q[j] = j < c->m && c->in_a[j] != 0.0 ? exp(c->lc - c->lse[j]) : 0.0;
}

static lk_status ctr_run(const lk_host *h, int64_t n, int64_t grain, lk_range_fn fn, void *arg)
{
    if (h && h->parallel_for)
        return h->parallel_for(h->ctx, n, grain, fn, arg);
    return n > 0 ? fn(arg, 0, n) : LK_OK;
}

/* Gradient zero (or untouched under accumulation): no anchor has a term. */
static inline void ctr_zero_grad(const lk_tensor *g, int64_t n, int accumulate)
{
    if (!g || accumulate || n == 0)
        return;
    memset(g->data, 0, (size_t)n * (g->dtype == LK_DTYPE_F32 ? sizeof(float) : sizeof(double)));
}

/* The whole loss. cls_of fills cls[0..m) with each row's class (exact
 * small integers in double) from the call's slots; empty_value is the value
 * when no anchor has a positive. */
typedef lk_status (*ctr_classes_fn)(const lk_tensor *slots, int64_t m, double *cls, lk_msg *msg);

static inline lk_status ctr_whole(const void *instance, const lk_whole_args *args,
                                  ctr_classes_fn cls_of, double empty_value, double *value,
                                  lk_msg *msg)
{
    const ctr_inst *in = (const ctr_inst *)instance;
    const lk_tensor *x = &args->slots[0];
    ctr_call c;
    memset(&c, 0, sizeof c);
    c.in = in;
    c.m = x->shape[0];
    c.d = x->shape[1];
    c.mp = (c.m + CTR_PAD - 1) / CTR_PAD * CTR_PAD;
    c.ld = c.mp + CTR_SKEW;
    c.inv_tau = 1.0 / in->tau;
    c.x = x;
    c.g = args->grads && args->grads[0].data ? &args->grads[0] : NULL;
    c.accumulate = (args->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    const int64_t m = c.m, d = c.d, mp = c.mp;

    size_t nz = (size_t)(m * d), nzt = (size_t)(d * c.ld), nrow = (size_t)mp;
    c.z = (double *)ctr_alloc(in, nz * sizeof(double));
    c.zt = (double *)ctr_alloc(in, nzt * sizeof(double));
    c.norm = (double *)ctr_alloc(in, nrow * sizeof(double));
    c.cls = (double *)ctr_alloc(in, nrow * sizeof(double));
    c.invp = (double *)ctr_alloc(in, nrow * sizeof(double));
    c.in_a = (double *)ctr_alloc(in, nrow * sizeof(double));
    c.lse = (double *)ctr_alloc(in, nrow * sizeof(double));
    c.term = (double *)ctr_alloc(in, nrow * sizeof(double));
    size_t cache_bytes = (size_t)m * (size_t)mp * sizeof(double);
    if (c.g && m > 0 && cache_bytes <= CTR_CACHE_BYTES)
        c.cache = (double *)ctr_alloc(in, cache_bytes);
    lk_status st = LK_OK;
    if (!c.z || !c.zt || !c.norm || !c.cls || !c.invp || !c.in_a || !c.lse || !c.term ||
        (c.g && m > 0 && cache_bytes <= CTR_CACHE_BYTES && !c.cache))
        st = lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld rows of %lld", (long long)m,
                     (long long)d);
    if (st == LK_OK) {
        memset(c.zt, 0, nzt * sizeof(double));
        for (int64_t j = 0; j < mp; j++)
            c.cls[j] = c.invp[j] = c.in_a[j] = c.lse[j] = 0.0;
        st = cls_of(args->slots, m, c.cls, msg);
    }
    /* classes -> positives: cls_of gives dense ids in [0, m), so a count
     * per class gives |P(i)| = count - 1 */
    int64_t n_a = 0;
    if (st == LK_OK && m > 0) {
        int64_t *cnt = (int64_t *)ctr_alloc(in, (size_t)m * sizeof(int64_t));
        if (!cnt) {
            st = lk_fail(msg, LK_ERR_NOMEM, "out of memory");
        } else {
            memset(cnt, 0, (size_t)m * sizeof(int64_t));
            for (int64_t i = 0; i < m; i++)
                cnt[(int64_t)c.cls[i]]++;
            for (int64_t i = 0; i < m; i++) {
                int64_t k = cnt[(int64_t)c.cls[i]];
                c.in_a[i] = k >= 2 ? 1.0 : 0.0;
                c.invp[i] = k >= 2 ? 1.0 / (double)(k - 1) : 0.0;
                n_a += k >= 2;
            }
            ctr_free(in, cnt);
        }
    }
    /* rows per chunk: a function of the shape only */
    int64_t work = (mp * (d + 4)) > 0 ? mp * (d + 4) : 1;
    int64_t grain = ((int64_t)1 << 16) / work / CTR_GROUP * CTR_GROUP;
    grain = grain < CTR_GROUP ? CTR_GROUP : grain;
    if (st == LK_OK)
        st = ctr_run(in->host, m, grain * 8, ctr_prep_task, &c);
    if (st == LK_OK && n_a > 0)
        st = ctr_run(in->host, m, grain, ctr_pass1_task, &c);
    if (st == LK_OK) {
        double sum = 0.0;
        for (int64_t i = 0; i < m; i++)
            sum += c.term[i];
        *value = n_a > 0 ? sum / (double)n_a : empty_value;
    }
    if (st == LK_OK && c.g) {
        if (n_a == 0) {
            ctr_zero_grad(c.g, m * d, c.accumulate);
        } else {
            c.gscale = args->grad_scale / (in->tau * (double)n_a);
            ctr_factor(&c);
            st = ctr_run(in->host, m, grain, ctr_pass2_task, &c);
        }
    }
    if (st == LK_ERR_NOMEM && !(msg && msg->buf && msg->buf[0]))
        lk_fail(msg, LK_ERR_NOMEM, "out of memory for the rows of %lld similarities",
                (long long)mp);
    ctr_free(in, c.z);
    ctr_free(in, c.zt);
    ctr_free(in, c.norm);
    ctr_free(in, c.cls);
    ctr_free(in, c.invp);
    ctr_free(in, c.in_a);
    ctr_free(in, c.lse);
    ctr_free(in, c.term);
    ctr_free(in, c.cache);
    ctr_free(in, c.q);
    return st;
}

/* The temperature parameter of both losses. */
static const lk_param_desc ctr_temperature = {
    .name = "temperature",
    .doc = "tau > 0: the cosine similarities are divided by it",
    .type = LK_PARAM_NUMBER,
    .flags = LK_PARAM_MIN_EXCLUSIVE | LK_PARAM_MAX_EXCLUSIVE,
    .default_number = 0.07,
    .min = 0.0,
    .max = HUGE_VAL,
};
static const lk_param_desc *const ctr_params[] = {&ctr_temperature, NULL};

/* Refuses anything but a C-order (rows, dim) matrix. */
static inline lk_status ctr_plan_matrix(const lk_tensor *x, lk_plan *plan, lk_msg *msg)
{
    if (x->ndim != 2)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: expected a (rows, dim) matrix of embeddings, got %d dims",
                       (int)x->ndim);
    if (!lk__c_order(x))
        return lk_fail(msg, LK_ERR_UNSUPPORTED, "input is strided; this loss needs C order");
    plan->n_positions = x->shape[0];
    plan->mean_norm = (double)x->shape[0];
    plan->out_ndim = 1;
    plan->out_shape[0] = x->shape[0];
    return LK_OK;
}

#endif /* LK_PRIMARY */

/* The kernel tables of this compile and, in the primary compile, the
 * variants' declarations and the table of tables lid##__variants. */
#if defined(LK_PRIMARY)
#define CTR_KERNELS(lid)                                                                           \
    CTR__KTABLE(lid)                                                                               \
    CTR__DECL_AVX2(lid)                                                                            \
    CTR__DECL_AVX512(lid)                                                                          \
    static const ctr_kernels *const lid##__variants[3] = {                                         \
        &LK__VAR(lid##__rows, portable, f64), CTR__REF_AVX2(lid), CTR__REF_AVX512(lid)};
#else
#define CTR_KERNELS(lid) CTR__KTABLE(lid)
#endif

#endif /* CONTRASTIVE_H */
