/* overlap.c: the engine of the overlap losses (overlap.h): parameters,
 * plan, the mean over (group, class) pairs, and three kernel families that
 * form the sums I, P, T, V and the gradient:
 *
 *   seg_ew  binary and multilabel: the elementwise statistics driver on each
 *           run of elements that share (group, class), every option in lanes;
 *   seg_mc  multiclass from logits with product sums (the defaults): the
 *           class driver (losskit/classes.h), split at samples with
 *           per_sample;
 *   seg_sc  the other multiclass forms (probabilities given, intersection
 *           min, squared_pred): scalar double code, one position at a time.
 *
 * The kernels are compiled once per variant; parameters, plan and the mean
 * only in the primary compile. */
#include "overlap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* seg_ew: lanes per element                                                 */

/* p, and p's derivative by x, of the lanes' elements; from logits, the
 * sigmoid comes from the driver (LK_EW_SIGMOID), a vector ahead. */
LK_AI lk_v seg_prob(const seg *o, const lk_elem *e, lk_v *dpdx)
{
    if (!o->from_logits) {
        *dpdx = lk_set(1.0);
        return e->x;
    }
    *dpdx = lk_sigm_dp(&e->sig);
    return lk_sigm_p(&e->sig);
}

/* The elements that count: all, or those whose target is not ignore_index. */
LK_AI lk_m seg_counts(const seg *o, lk_v t)
{
    if (!o->has_ignore)
        return lk_first(LK_W);
    return lk_not(lk_eq(t, lk_set((double)o->ignore)));
}

LK_AI void seg_ew_stats(const void *inst, lk_elem *e, lk_v *s)
{
    const seg *o = (const seg *)inst;
    lk_v dp, p = seg_prob(o, e, &dp), t = e->t;
    lk_m m = seg_counts(o, t);
    (void)dp;
    s[SEG_I] = lk_keep(m, o->min_i ? lk_min(p, t) : lk_mul(p, t));
    s[SEG_P] = lk_keep(m, o->squared ? lk_mul(p, p) : p);
    s[SEG_T] = lk_keep(m, o->squared ? lk_mul(t, t) : t);
    s[SEG_V] = lk_keep(m, lk_set(1.0));
}

/* d min(p, t) / dp: 1 below t, 1/2 at a tie (as torch's minimum), else 0. */
LK_AI lk_v seg_dmin(lk_v p, lk_v t)
{
    return lk_add(lk_keep(lk_lt(p, t), lk_set(1.0)), lk_keep(lk_eq(p, t), lk_set(0.5)));
}

/* g = dI I' + dP P' as (dI + dP) I' + dP (P' - I'), from k = {dI + dP, dP}
 * (seg_ew_consts): where dI and dP nearly cancel (mcc's TN = V - P - T + I
 * + eps), their sum is formed in double, not in the lanes' floats; P' - I'
 * is 1 - t exactly for product sums. */
LK_AI void seg_ew_grad(const void *inst, const lk_v *k, lk_elem *e)
{
    const seg *o = (const seg *)inst;
    lk_v dp, p = seg_prob(o, e, &dp), t = e->t;
    lk_v di = o->min_i ? seg_dmin(p, t) : t;
    lk_v dP = o->squared ? lk_add(p, p) : lk_set(1.0);
    lk_v g = lk_add(lk_mul(k[0], di), lk_mul(k[1], lk_sub(dP, di)));
    e->grad = lk_keep(seg_counts(o, t), o->from_logits ? lk_mul(g, dp) : g);
}

static void seg_ew_consts(const void *inst, const double *global, double *k)
{
    (void)inst;
    k[0] = global[0] + global[1];
    k[1] = global[1];
}

/* The end of the run of elements sharing (group, class) that holds i. */
static inline int64_t seg_run_end(const lk_plan *plan, const lk_block *blk, int64_t i)
{
    int64_t S = plan->aux[LK_CLS_AUX_S], end = (i / S + 1) * S;
    return end < blk->end ? end : blk->end;
}

/* The (group, class) index g C + c of the run holding element i. */
static inline int64_t seg_run_pair(const lk_plan *plan, int64_t i)
{
    int64_t C = plan->aux[LK_CLS_AUX_C], run = i / plan->aux[LK_CLS_AUX_S];
    return plan->aux[SEG_AUX_PER] ? run : run % C;
}

/* The message of a float target t[j] = v outside [0, 1]: with
 * ignore_index on, the value it is not. */
LK__COLD_FN lk_status seg_bad_unit(const seg *o, const lk_tensor *t, int64_t j, double v,
                                   lk_msg *msg)
{
    char where[160], ign[48] = "";
    lk_index_str(where, sizeof where, t->ndim, t->shape, j);
    if (o->has_ignore)
        snprintf(ign, sizeof ign, " and not ignore_index %lld", (long long)o->ignore);
    return lk_fail(msg, LK_ERR_INVALID, "target%s = %g is outside [0, 1]%s", where, v, ign);
}

/* With ignore_index the drivers' screen of the targets is off (it would
 * refuse ignore_index itself), so the float targets that are not
 * ignore_index are checked to lie in [0, 1] here, before the block's pass:
 * elements [e0, e1) of t, or with C > 0 positions [e0, e1) of an (N, C,
 * S) t, every class of each. NaN passes, as the screen lets it. */
static lk_status seg_check_kept(const seg *o, const lk_tensor *t, int64_t e0, int64_t e1,
                                int64_t C, int64_t S, lk_msg *msg)
{
    if (!o->has_ignore || (t->dtype != LK_DTYPE_F32 && t->dtype != LK_DTYPE_F64))
        return LK_OK;
    const int f32 = t->dtype == LK_DTYPE_F32;
    const double ign = (double)o->ignore;
    for (int64_t p = e0; p < e1; p++)
        for (int64_t c = 0; c < (C > 0 ? C : 1); c++) {
            int64_t j = C > 0 ? p / S * C * S + c * S + p % S : p;
            double v = lk__get(t->data, f32, j);
            if (v != ign && (v < 0.0 || v > 1.0))
                return seg_bad_unit(o, t, j, v, msg);
        }
    return LK_OK;
}

static lk_status seg_ew_fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                            lk_msg *msg)
{
    const seg local = *(const seg *)inst;
    lk_status cs = seg_check_kept(&local, &blk->slots[1], blk->begin, blk->end, 0, 1, msg);
    if (cs != LK_OK)
        return cs;
    int64_t C = plan->aux[LK_CLS_AUX_C];
    lk_status st = LK_OK;
    for (int64_t i = blk->begin; st == LK_OK && i < blk->end;) {
        int64_t end = seg_run_end(plan, blk, i), gc = seg_run_pair(plan, i);
        int64_t g = gc / C, c = gc % C;
        double tmp[SEG_NSTAT] = {0};
        lk_block sub = *blk;
        sub.begin = i;
        sub.end = end;
        sub.stats = tmp;
        uint32_t flags = local.has_ignore ? 0u : LK_EW_UNIT_TARGET;
        /* from logits every term is >= 0 (p and the counted targets in [0,
         * 1]: the screen, or seg_check_kept with ignore_index), so the
         * float lanes sum them in groups; given probabilities may be any
         * real */
        st = local.from_logits
                 ? lk_stats_forward(&local, &sub, seg_ew_stats, SEG_NSTAT,
                                    flags | LK_EW_SIGMOID | LK_EW_NONNEG_SUM, msg)
                 : lk_stats_forward(&local, &sub, seg_ew_stats, SEG_NSTAT, flags, msg);
        for (int j = 0; j < SEG_NSTAT; j++)
            blk->stats[(g * SEG_NSTAT + j) * C + c] += tmp[j];
        i = end;
    }
    return st;
}

/* d value / d I and d P of every pair, for one block's backward: in small
 * (SEG_SMALL_COEFS doubles) when they fit, else on the heap (seg_coefs_free).
 * A small call spends more on an allocation than on its arithmetic. */
#define SEG_SMALL_PAIRS 64
#define SEG_SMALL_COEFS (2 * SEG_SMALL_PAIRS + 1)
static double *seg_coefs(const seg *o, const lk_plan *plan, const lk_block *blk, double *small,
                         lk_msg *msg)
{
    size_t n = (size_t)(plan->aux[SEG_AUX_G] * plan->aux[LK_CLS_AUX_C]);
    double *coef = n <= SEG_SMALL_PAIRS ? small : (double *)malloc((2 * n + 1) * sizeof(double));
    double value;
    if (!coef || seg_eval(o, plan, blk->global, coef, &value) != 0) {
        if (coef != small)
            free(coef);
        lk_fail(msg, LK_ERR_NOMEM, "out of memory for %zu (group, class) pairs", n);
        return NULL;
    }
    return coef;
}

static void seg_coefs_free(double *coef, const double *small)
{
    if (coef != small)
        free(coef);
}

static lk_status seg_ew_bwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                            lk_msg *msg)
{
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    const seg local = *(const seg *)inst;
    double coef_small[SEG_SMALL_COEFS];
    double *coef = seg_coefs(&local, plan, blk, coef_small, msg);
    if (!coef)
        return LK_ERR_NOMEM;
    lk_status st = LK_OK;
    for (int64_t i = blk->begin; st == LK_OK && i < blk->end;) {
        int64_t end = seg_run_end(plan, blk, i);
        lk_block sub = *blk;
        sub.begin = i;
        sub.end = end;
        sub.global = coef + 2 * seg_run_pair(plan, i);
        st = local.from_logits
                 ? lk_stats_backward_sigmoid(&local, plan, &sub, seg_ew_consts, seg_ew_grad, msg)
                 : lk_stats_backward(&local, plan, &sub, seg_ew_consts, seg_ew_grad, msg);
        i = end;
    }
    seg_coefs_free(coef, coef_small);
    return st;
}

LK__KSET(seg_ew, seg_ew_fwd, seg_ew_bwd, 0)

/* ------------------------------------------------------------------------ */
/* seg_mc: the class driver                                                  */

/* Float targets: the elements that count (index targets: the driver's
 * valid lanes, which already leave ignore_index out). */
LK_AI lk_m seg_mc_counts(const lk_cls_io *io, const lk_cls_pos *p, const lk_cls_el *el,
                         const seg *o)
{
    if (io->index || !o->has_ignore)
        return p->valid;
    return lk_and(p->valid, lk_not(lk_eq(el->t, lk_set((double)o->ignore))));
}

/* V is left 0: no loss that runs in multiclass mode reads it (mcc, which
 * does, offers binary and multilabel only). */
LK_AI void seg_mc_fwd2(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                       const lk_cls_el *el, lk_cls_acc *ca)
{
    const seg *o = (const seg *)inst;
    (void)c;
    lk_m m = seg_mc_counts(io, p, el, o);
    lk_v pc = lk_keep(m, lk_mul(el->e, p->r));
    /* every term in [0, 1] (the counted targets screened): the lanes' sums
     * (lk_cls_acc.f) */
    ca[SEG_P].f = lk_add(ca[SEG_P].f, pc);
    if (io->index) {
        ca[SEG_I].f = lk_add(ca[SEG_I].f, lk_keep(el->hit, pc));
        ca[SEG_T].n += lk_cls_count(el->hit);
    } else {
        ca[SEG_I].f = lk_add(ca[SEG_I].f, lk_mul(pc, el->t));
        ca[SEG_T].f = lk_add(ca[SEG_T].f, lk_keep(m, el->t));
    }
}

/* g_c = d value / d p_c = dI_c t_c + dP_c, in double (the softmax
 * Jacobian's g_c - sum_k p_k g_k cancels where p is nearly one-hot). */
LK_AI lk_w seg_mc_g(const lk_cls_io *io, const lk_cls_pos *p, const lk_cls_el *el, int64_t c,
                    const seg *o)
{
    if (io->index) /* t_c is 0 or 1: one of two constants, the same roundings */
        return lk_w_select(el->hit, lk_w_set(io->tab[2 * c] + io->tab[2 * c + 1]),
                           lk_w_set(io->tab[2 * c + 1]));
    lk_w g = lk_w_fma(lk_w_of(el->t), lk_w_set(io->tab[2 * c]), lk_w_set(io->tab[2 * c + 1]));
    return !o->has_ignore ? g : lk_w_keep(seg_mc_counts(io, p, el, o), g);
}

LK_AI void seg_mc_bwd1(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                       const lk_cls_el *el, lk_cls_acc *ca)
{
    (void)ca;
    p->u = lk_w_fma(lk_w_of(el->e), seg_mc_g(io, p, el, c, (const seg *)inst), p->u);
}

LK_AI lk_w seg_mc_bwd_pos(const void *inst, const lk_cls_io *io, lk_cls_pos *p, lk_acc *pa)
{
    (void)inst, (void)io, (void)pa;
    lk_w inv = lk_w_div(lk_w_set(1.0), p->s);
    p->a = lk_w_narrow(inv);
    p->u = lk_w_mul(p->u, inv);
    return p->u;
}

LK_AI lk_v seg_mc_grad(const void *inst, const lk_cls_io *io, const lk_cls_pos *p, int64_t c,
                       const lk_cls_el *el)
{
    lk_v jac = lk_w_narrow(lk_w_sub(seg_mc_g(io, p, el, c, (const seg *)inst), p->u));
    return lk_mul(lk_mul(el->e, p->a), jac);
}

/* The block's global points at its group's coefficients (seg_mc_bwd). */
static double seg_mc_prep(const void *inst, const lk_plan *plan, const lk_block *blk, double *tab)
{
    (void)inst;
    memcpy(tab, blk->global, (size_t)(2 * plan->aux[LK_CLS_AUX_C]) * sizeof(double));
    return blk->grad_scale;
}

static lk_status seg_bad_index(const void *inst, const lk_tensor *t, int64_t pos, int64_t y,
                               int64_t C, lk_msg *msg)
{
    char where[160];
    lk_index_str(where, sizeof where, t->ndim, t->shape, pos);
    return lk_fail(msg, LK_ERR_INVALID,
                   "target%s = %lld is not a class index in [0, %lld) nor ignore_index %lld",
                   where, (long long)y, (long long)C, (long long)((const seg *)inst)->idx_ignore);
}

/* Targets are checked to lie in [0, 1] unless ignore_index is given (its
 * value may lie anywhere): seg_mc_ops, and seg_mc_ops_any without the
 * check. */
#define SEG_MC_OPS(var, fl)                                                                        \
    static const lk_cls_ops var = {                                                                \
        .flags = LK_CLS_FWD_EXP | (fl),                                                            \
        .n_cls = SEG_T + 1,                                                                        \
        .n_tab = 2,                                                                                \
        .fwd2 = seg_mc_fwd2,                                                                       \
        .bwd1 = seg_mc_bwd1,                                                                       \
        .bwd_pos = seg_mc_bwd_pos,                                                                 \
        .grad = seg_mc_grad,                                                                       \
        .prep = seg_mc_prep,                                                                       \
        .bad_index = seg_bad_index,                                                                \
    };
SEG_MC_OPS(seg_mc_ops, LK_CLS_UNIT_TARGET)
SEG_MC_OPS(seg_mc_ops_any, 0)

/* With per_sample, the block in pieces that lie within one sample, each
 * adding to its group's statistics; without, the block whole. ops is a
 * constant in each caller, so that the driver inlines its hooks (and once
 * per ops: one call site, which keeps the function small to compile). */
LK_AI lk_status seg_mc_fwd_with(const seg *o, const lk_plan *plan, const lk_block *blk,
                                const lk_cls_ops *ops, lk_msg *msg)
{
    int64_t C = plan->aux[LK_CLS_AUX_C], S = plan->aux[LK_CLS_AUX_S];
    int per = plan->aux[SEG_AUX_PER] != 0;
    lk_status st = LK_OK;
    for (int64_t i = blk->begin; st == LK_OK && i < blk->end;) {
        int64_t end = per ? seg_run_end(plan, blk, i) : blk->end;
        lk_block sub = *blk;
        sub.begin = i;
        sub.end = end;
        if (per)
            sub.stats = blk->stats + i / S * SEG_NSTAT * C;
        st = lk_classes_forward(o, plan, &sub, ops, msg);
        i = end;
    }
    return st;
}

static lk_status seg_mc_fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                            lk_msg *msg)
{
    const seg local = *(const seg *)inst;
    if (local.has_ignore) {
        lk_status cs = seg_check_kept(&local, &blk->slots[1], blk->begin, blk->end,
                                      plan->aux[LK_CLS_AUX_C], plan->aux[LK_CLS_AUX_S], msg);
        if (cs != LK_OK)
            return cs;
        return seg_mc_fwd_with(&local, plan, blk, &seg_mc_ops_any, msg);
    }
    return seg_mc_fwd_with(&local, plan, blk, &seg_mc_ops, msg);
}

static lk_status seg_mc_bwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                            lk_msg *msg)
{
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    const seg local = *(const seg *)inst;
    double coef_small[SEG_SMALL_COEFS];
    double *coef = seg_coefs(&local, plan, blk, coef_small, msg);
    if (!coef)
        return LK_ERR_NOMEM;
    int64_t C = plan->aux[LK_CLS_AUX_C], S = plan->aux[LK_CLS_AUX_S];
    int per = plan->aux[SEG_AUX_PER] != 0;
    lk_status st = LK_OK;
    for (int64_t i = blk->begin; st == LK_OK && i < blk->end;) {
        int64_t end = per ? seg_run_end(plan, blk, i) : blk->end;
        lk_block sub = *blk;
        sub.begin = i;
        sub.end = end;
        sub.global = coef + (per ? 2 * (i / S) * C : 0);
        st = lk_classes_backward(&local, plan, &sub, &seg_mc_ops, msg);
        i = end;
    }
    seg_coefs_free(coef, coef_small);
    return st;
}

LK__KSET(seg_mc, seg_mc_fwd, seg_mc_bwd, 0)

/* ------------------------------------------------------------------------ */
/* The primary compile: families, scalar kernels, parameters, plan, mean     */

#if defined(LK_PRIMARY)

LK__DECL_F32(seg_ew, portable)
LK__DECL_AVX2(seg_ew)
LK__DECL_AVX512(seg_ew)
const lk_kfamily seg_ew_family = {{
    {LK__REF_F32(seg_ew, portable), &LK__VAR(seg_ew, portable, f64)},
    LK__REF_AVX2(seg_ew),
    LK__REF_AVX512(seg_ew),
}};

/* A family without its float-lane members: float32 data in double lanes. */
#if defined(LK_BUILD_AVX2)
#define SEG_AVX2_F64(name) {NULL, &LK__VAR(name, avx2, f64)}
#else
#define SEG_AVX2_F64(name) {NULL, NULL}
#endif
#if defined(LK_BUILD_AVX512)
#define SEG_AVX512_F64(name) {NULL, &LK__VAR(name, avx512, f64)}
#else
#define SEG_AVX512_F64(name) {NULL, NULL}
#endif
const lk_kfamily seg_ew64_family = {{
    {NULL, &LK__VAR(seg_ew, portable, f64)},
    SEG_AVX2_F64(seg_ew),
    SEG_AVX512_F64(seg_ew),
}};

/* The class driver has no portable float-lane member (classes.h). */
LK__DECL_AVX2(seg_mc)
LK__DECL_AVX512(seg_mc)
const lk_kfamily seg_mc_family = {{
    {NULL, &LK__VAR(seg_mc, portable, f64)},
    LK__REF_AVX2(seg_mc),
    LK__REF_AVX512(seg_mc),
}};


/* One position of a multiclass call: p_c (softmax or as given), t_c, and
 * which classes count. Returns 0 when the whole position does not count,
 * -1 for a bad class index. */
typedef struct seg_row {
    const seg *o;
    const void *x, *t;
    int xf, tf, index;
    int64_t C, S;
    double *p, *tc;
    unsigned char *on;
} seg_row;

static int seg_row_at(const seg_row *r, int64_t pos, int64_t *bad)
{
    int64_t n = pos / r->S, base = n * r->C * r->S + pos % r->S, y = -1;
    if (r->index) {
        y = ((const int64_t *)r->t)[pos];
        if (y == r->o->idx_ignore)
            return 0;
        if (y < 0 || y >= r->C) {
            *bad = y;
            return -1;
        }
    }
    double m = -HUGE_VAL, s = 0.0;
    for (int64_t c = 0; c < r->C; c++) {
        r->p[c] = lk__get(r->x, r->xf, base + c * r->S);
        m = r->p[c] > m ? r->p[c] : m;
        r->tc[c] = r->index ? (double)(c == y) : lk__get(r->t, r->tf, base + c * r->S);
        r->on[c] = r->index || !r->o->has_ignore || r->tc[c] != (double)r->o->ignore;
    }
    if (r->o->from_logits) {
        for (int64_t c = 0; c < r->C; c++) {
            r->p[c] = r->p[c] == m ? 1.0 : exp(r->p[c] - m);
            s += r->p[c];
        }
        for (int64_t c = 0; c < r->C; c++)
            r->p[c] /= s;
    }
    return 1;
}

static lk_status seg_row_open(seg_row *r, const seg *o, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    r->o = o;
    r->x = blk->slots[0].data;
    r->t = blk->slots[1].data;
    r->xf = blk->slots[0].dtype == LK_DTYPE_F32;
    r->tf = blk->slots[1].dtype == LK_DTYPE_F32;
    r->index = plan->aux[LK_CLS_AUX_KIND] == LK_CLS_INDEX;
    r->C = plan->aux[LK_CLS_AUX_C];
    r->S = plan->aux[LK_CLS_AUX_S];
    r->p = (double *)malloc((size_t)r->C * (2 * sizeof(double) + 1));
    if (!r->p)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes", (long long)r->C);
    r->tc = r->p + r->C;
    r->on = (unsigned char *)(r->tc + r->C);
    return LK_OK;
}

static lk_status seg_sc_fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                            lk_msg *msg)
{
    const seg *o = (const seg *)inst;
    seg_row r;
    lk_status st = seg_row_open(&r, o, plan, blk, msg);
    for (int64_t pos = blk->begin; st == LK_OK && pos < blk->end; pos++) {
        int64_t bad = 0;
        int k = seg_row_at(&r, pos, &bad);
        if (k < 0)
            st = seg_bad_index(o, &blk->slots[1], pos, bad, r.C, msg);
        if (k <= 0)
            continue;
        double *s = blk->stats + (plan->aux[SEG_AUX_PER] ? pos / r.S : 0) * SEG_NSTAT * r.C;
        for (int64_t c = 0; st == LK_OK && c < r.C; c++) {
            double p = r.p[c], t = r.tc[c];
            if (!r.on[c])
                continue;
            if (t < 0.0 || t > 1.0) /* r.on leaves ignore_index out */
                st = seg_bad_unit(o, &blk->slots[1], pos / r.S * r.C * r.S + c * r.S + pos % r.S,
                                  t, msg);
            s[SEG_I * r.C + c] += o->min_i ? (p < t ? p : t) : p * t;
            s[SEG_P * r.C + c] += o->squared ? p * p : p;
            s[SEG_T * r.C + c] += o->squared ? t * t : t;
            s[SEG_V * r.C + c] += 1.0;
        }
    }
    free(r.p);
    return st;
}

static lk_status seg_sc_bwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                            lk_msg *msg)
{
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    const seg *o = (const seg *)inst;
    seg_row r;
    double coef_small[SEG_SMALL_COEFS];
    double *coef = seg_coefs(o, plan, blk, coef_small, msg);
    if (!coef)
        return LK_ERR_NOMEM;
    lk_status st = seg_row_open(&r, o, plan, blk, msg);
    void *gd = blk->grads[0].data;
    int gf = blk->grads[0].dtype == LK_DTYPE_F32;
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    double *g = st == LK_OK ? (double *)malloc((size_t)r.C * sizeof(double)) : NULL;
    if (st == LK_OK && !g)
        st = lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes", (long long)r.C);
    for (int64_t pos = blk->begin; st == LK_OK && pos < blk->end; pos++) {
        int64_t bad = 0, base = pos / r.S * r.C * r.S + pos % r.S;
        int k = seg_row_at(&r, pos, &bad);
        const double *cf = coef + 2 * (plan->aux[SEG_AUX_PER] ? pos / r.S : 0) * r.C;
        double u = 0.0;
        for (int64_t c = 0; c < r.C; c++) {
            double p = r.p[c], t = r.tc[c];
            double di = o->min_i ? (p < t ? 1.0 : p == t ? 0.5 : 0.0) : t;
            g[c] = k > 0 && r.on[c] ? cf[2 * c] * di + cf[2 * c + 1] * (o->squared ? 2.0 * p : 1.0)
                                    : 0.0;
            u += k > 0 ? p * g[c] : 0.0;
        }
        for (int64_t c = 0; c < r.C; c++) {
            double d = k <= 0 ? 0.0 : o->from_logits ? r.p[c] * (g[c] - u) : g[c];
            d *= blk->grad_scale;
            int64_t i = base + c * r.S;
            if (gf)
                ((float *)gd)[i] = (float)(acc ? ((float *)gd)[i] + d : d);
            else
                ((double *)gd)[i] = acc ? ((double *)gd)[i] + d : d;
        }
    }
    free(g);
    free(r.p);
    seg_coefs_free(coef, coef_small);
    return st;
}

static const lk_kset seg_sc_kset = {seg_sc_fwd, seg_sc_bwd, 0, "scalar f64"};
const lk_kfamily seg_sc_family = {{{NULL, &seg_sc_kset}, {NULL, NULL}, {NULL, NULL}}};

/* Parameters */

static const char *const seg_modes[] = {"binary", "multiclass", "multilabel", NULL};
static const char *const seg_inters[] = {"product", "min", NULL};
static const char *const seg_empties[] = {"score", "zero", "skip", NULL};
static const char *const seg_wtypes[] = {"square", "simple", "uniform", NULL};

#define SEG_BOOL(var, nm, dflt, dc)                                                                \
    const lk_param_desc var = {.name = nm, .doc = dc, .type = LK_PARAM_BOOL,                       \
                               .default_number = dflt, .min = 0.0, .max = 1.0};
#define SEG_NUM(var, nm, dflt, lo, fl, dc)                                                         \
    const lk_param_desc var = {.name = nm, .doc = dc, .type = LK_PARAM_NUMBER, .flags = fl,        \
                               .default_number = dflt, .min = lo, .max = HUGE_VAL};

const lk_param_desc seg_p_mode = {
    .name = "mode",
    .doc = "binary: sigmoid, one class over the whole tensor; multiclass: softmax over dim 1, "
           "int64 class-index or per-class targets; multilabel: sigmoid per element, (N, C, ...)",
    .type = LK_PARAM_CHOICE,
    .choices = seg_modes,
    .default_choice = "binary",
};
SEG_BOOL(seg_p_from_logits, "from_logits", 1.0,
         "true: the input holds logits; false: probabilities, used as given")
const lk_param_desc seg_p_ignore_index = {
    .name = "ignore_index",
    .doc = "elements (multiclass index targets: positions) whose target equals it count in no "
           "sum and get a zero gradient",
    .type = LK_PARAM_INTEGER,
    .default_number = -100.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
    .unset = "multiclass index targets of -100 are ignored (torch's convention), nothing else",
};
const lk_param_desc seg_p_classes = {
    .name = "classes",
    .doc = "the class indices the mean takes",
    .unset = "every class",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = (double)LK_CLS_MAX_CLASSES - 1.0,
    .list_min_len = 1,
    .list_max_len = -1,
};
SEG_BOOL(seg_p_include_background, "include_background", 1.0,
         "false: class 0 is left out of the mean (multiclass and multilabel)")
SEG_BOOL(seg_p_per_sample, "per_sample", 0.0,
         "true: statistics per (sample, class), the mean over all those pairs; false: over "
         "the whole batch")
SEG_BOOL(seg_p_per_sample_true, "per_sample", 1.0,
         "true: one score per sample, the mean over samples; false: one over the whole batch")
const lk_param_desc seg_p_class_weights = {
    .name = "class_weights",
    .doc = "one weight per class of the input: the mean is sum w_c L_c / sum w_c over the "
           "classes taken",
    .unset = "every class weighs the same",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = HUGE_VAL,
    .list_min_len = 1,
    .list_max_len = -1,
};
SEG_NUM(seg_p_smooth1, "smooth", 1.0, 0.0, 0, "added to the ratio's numerator and denominator")
SEG_NUM(seg_p_smooth0, "smooth", 0.0, 0.0, 0, "added to the ratio's numerator and denominator")
SEG_NUM(seg_p_smooth_gd, "smooth", 1e-5, 0.0, 0,
        "added to the ratio's numerator and denominator")
const lk_param_desc seg_p_smooth_dr = {.name = "smooth_dr",
                                       .doc = "added to the denominator instead of smooth",
                                       .type = LK_PARAM_NUMBER,
                                       .default_number = 0.0,
                                       .min = 0.0,
                                       .max = HUGE_VAL,
                                       .unset = "smooth's value"};
SEG_NUM(seg_p_eps, "eps", 1e-7, 0.0, 0, "the floor of the ratio's denominator")
SEG_NUM(seg_p_eps_mcc, "eps", 1e-5, 0.0, 0, "added to each of TP, TN, FP and FN")
const lk_param_desc seg_p_intersection = {
    .name = "intersection",
    .doc = "product: I = sum p t; min: I = sum min(p, t), for soft targets (equal for 0/1 ones)",
    .type = LK_PARAM_CHOICE,
    .choices = seg_inters,
    .default_choice = "product",
};
const lk_param_desc seg_p_empty = {
    .name = "empty",
    .doc = "a class whose target is empty: score (the formula as is), zero (loss 0), skip "
           "(left out of the mean)",
    .type = LK_PARAM_CHOICE,
    .choices = seg_empties,
    .default_choice = "score",
};
SEG_BOOL(seg_p_log_loss, "log_loss", 0.0, "true: the loss is -log(max(score, eps))")
SEG_BOOL(seg_p_squared_pred, "squared_pred", 0.0,
         "true: sum p^2 and sum t^2 in the denominator")
SEG_NUM(seg_p_alpha, "alpha", 0.5, 0.0, 0, "the weight of false positives")
SEG_NUM(seg_p_beta, "beta", 0.5, 0.0, 0, "the weight of false negatives")
SEG_NUM(seg_p_gamma1, "gamma", 1.0, 0.0, LK_PARAM_MIN_EXCLUSIVE,
        "the power of the mean over classes")
SEG_NUM(seg_p_gamma075, "gamma", 0.75, 0.0, LK_PARAM_MIN_EXCLUSIVE,
        "the power of each class's 1 - TI")
const lk_param_desc seg_p_weight_type = {
    .name = "weight_type",
    .doc = "class weights from the target: square 1/T^2, simple 1/T, uniform 1",
    .type = LK_PARAM_CHOICE,
    .choices = seg_wtypes,
    .default_choice = "square",
};

static const lk_slot_desc seg_input = {
    .name = "input",
    .doc = "logits (or probabilities with from_logits false); multiclass and multilabel: "
           "(N, C, ...)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
};
static const lk_slot_desc seg_target = {
    .name = "target",
    .doc = "targets shaped like input (binary, multilabel; float), or int64 class indices "
           "shaped like input without dim 1 (multiclass)",
    .dtypes = LK_DTYPES_FLOAT | LK_DTYPE_BIT(LK_DTYPE_I64),
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_UNIT,
};
const lk_slot_desc *const seg_slots[] = {&seg_input, &seg_target, NULL};

void seg_fini(void *inst)
{
    seg *o = (seg *)inst;
    free(o->classes);
    free(o->weights);
    o->classes = NULL;
    o->weights = NULL;
}

lk_status seg_init(seg *o, const seg_kind *kind, const lk_param_desc *const *descs,
                   const lk_param_value *p, lk_msg *msg)
{
    int classes_set = 0, bg_set = 0, dr_set = 0;
    o->kind = kind;
    o->from_logits = 1;
    o->include_bg = 1;
    o->gamma = 1.0;
    o->idx_ignore = -100;
    for (int i = 0; descs[i]; i++) {
        const lk_param_desc *d = descs[i];
        const lk_param_value *v = &p[i];
        if (d == &seg_p_mode)
            o->mode = (int)v->integer;
        else if (d == &seg_p_from_logits)
            o->from_logits = v->integer != 0;
        else if (d == &seg_p_ignore_index)
            o->has_ignore = v->is_set, o->ignore = v->integer, o->idx_ignore = v->integer;
        else if (d == &seg_p_include_background)
            o->include_bg = v->integer != 0, bg_set = v->is_set;
        else if (d == &seg_p_per_sample || d == &seg_p_per_sample_true)
            o->per_sample = v->integer != 0;
        else if (d == &seg_p_smooth1 || d == &seg_p_smooth0 || d == &seg_p_smooth_gd)
            o->smooth = v->number;
        else if (d == &seg_p_smooth_dr)
            o->smooth_dr = v->number, dr_set = v->is_set;
        else if (d == &seg_p_eps || d == &seg_p_eps_mcc)
            o->eps = v->number;
        else if (d == &seg_p_intersection)
            o->min_i = v->integer == 1;
        else if (d == &seg_p_empty)
            o->empty = (int)v->integer;
        else if (d == &seg_p_log_loss)
            o->log_loss = v->integer != 0;
        else if (d == &seg_p_squared_pred)
            o->squared = v->integer != 0;
        else if (d == &seg_p_alpha)
            o->alpha = v->number;
        else if (d == &seg_p_beta)
            o->beta = v->number;
        else if (d == &seg_p_gamma1 || d == &seg_p_gamma075)
            o->gamma = v->number;
        else if (d == &seg_p_weight_type)
            o->weight_type = (int)v->integer;
        else if (d == &seg_p_classes && v->is_set) {
            classes_set = 1;
            o->classes = (int64_t *)malloc(v->list_len * sizeof(int64_t));
            if (!o->classes)
                return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
            o->n_classes = (int)v->list_len;
            for (int64_t k = 0; k < v->list_len; k++) {
                if (v->list[k] != floor(v->list[k])) {
                    seg_fini(o);
                    return lk_fail(msg, LK_ERR_INVALID,
                                   "classes[%lld] = %g is not a class index (an integer)", (long long)k,
                                   v->list[k]);
                }
                o->classes[k] = (int64_t)v->list[k];
            }
        } else if (d == &seg_p_class_weights && v->is_set) {
            o->weights = (double *)malloc(v->list_len * sizeof(double));
            if (!o->weights) {
                seg_fini(o);
                return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
            }
            o->n_weights = (int)v->list_len;
            memcpy(o->weights, v->list, v->list_len * sizeof(double));
        }
    }
    if (!dr_set)
        o->smooth_dr = o->smooth;
    o->double_lanes = kind->double_lanes;
    const char *why = NULL;
    if (classes_set && bg_set)
        why = "classes and include_background are both given: classes names every class the "
              "mean takes";
    else if (bg_set && o->mode == SEG_BINARY)
        why = "include_background applies to modes multiclass and multilabel (binary mode has "
              "one class)";
    else if (kind->no_multiclass && o->mode == SEG_MULTICLASS)
        why = "mode \"multiclass\" is not offered: use binary or multilabel";
    if (why) {
        seg_fini(o);
        return lk_fail(msg, LK_ERR_INVALID, "%s", why);
    }
    return LK_OK;
}

int seg_pick(const void *inst)
{
    const seg *o = (const seg *)inst;
    if (o->mode != SEG_MULTICLASS)
        return o->double_lanes ? SEG_FAM_EW64 : SEG_FAM_EW;
    return !o->from_logits || o->min_i || o->squared ? SEG_FAM_SC : SEG_FAM_MC;
}

/* The target's shape against want (ndim n); what closes the message. */
static lk_status seg_target_shape(const lk_tensor *t, const int64_t *want, int32_t n,
                                  const char *what, lk_msg *msg)
{
    int same = t->ndim == n;
    for (int32_t d = 0; same && d < n; d++)
        same = t->shape[d] == want[d];
    if (same)
        return LK_OK;
    char got[160], exp[160];
    lk_shape_str(got, sizeof got, t->ndim, t->shape);
    lk_shape_str(exp, sizeof exp, n, want);
    return lk_fail(msg, LK_ERR_SHAPE, "target: shape %s, expected %s (%s)", got, exp, what);
}

lk_status seg_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                   lk_msg *msg)
{
    const seg *o = (const seg *)inst;
    const lk_tensor *x = &slots[0], *t = &slots[1];
    static const char *const names[] = {"binary", "multiclass", "multilabel"};
    const char *mode = names[o->mode];
    int index = t->dtype == LK_DTYPE_I64, fam = seg_pick(o);
    int64_t numel = 1, N, C, S;
    (void)reduction;
    for (int32_t d = 0; d < x->ndim; d++)
        numel *= x->shape[d];
    if (o->mode != SEG_MULTICLASS && index)
        return lk_fail(msg, LK_ERR_DTYPE,
                       "target: dtype int64 is not accepted in %s mode (float32 or float64 "
                       "targets shaped like the input; int64 class indices need mode "
                       "\"multiclass\")",
                       mode);
    if (o->mode == SEG_BINARY) {
        lk_status st = seg_target_shape(t, x->shape, x->ndim, "the input's", msg);
        if (st != LK_OK)
            return st;
        N = x->ndim ? x->shape[0] : 1;
        C = 1;
        S = o->per_sample ? (N ? numel / N : 0) : numel;
    } else {
        if (x->ndim < 2) {
            char sh[160];
            lk_shape_str(sh, sizeof sh, x->ndim, x->shape);
            return lk_fail(msg, LK_ERR_SHAPE,
                           "input: shape %s; %s mode needs (N, C, ...) logits, the classes in "
                           "dim 1",
                           sh, mode);
        }
        N = x->shape[0];
        C = x->shape[1];
        S = C && N ? numel / (N * C) : 0;
        if (C < 1)
            return lk_fail(msg, LK_ERR_SHAPE, "input: the class dimension (dim 1) is empty");
        if (C > LK_CLS_MAX_CLASSES)
            return lk_fail(msg, LK_ERR_SHAPE, "input: %lld classes in dim 1, at most %lld",
                           (long long)C, (long long)LK_CLS_MAX_CLASSES);
        int64_t w[LK_MAX_NDIM];
        w[0] = N;
        for (int32_t d = 2; d < x->ndim; d++)
            w[d - 1] = x->shape[d];
        lk_status st =
            index ? seg_target_shape(t, w, x->ndim - 1,
                                     "int64 class indices: the input's shape without dim 1", msg)
            : seg_target_shape(t, x->shape, x->ndim,
                               o->mode == SEG_MULTICLASS
                                   ? "per-class float targets: the input's shape"
                                   : "the input's",
                               msg);
        if (st != LK_OK)
            return st;
    }
    for (int k = 0; k < o->n_classes; k++)
        if (o->classes[k] >= C)
            return lk_fail(msg, LK_ERR_INVALID,
                           "classes[%d] = %lld is not a class of the input, which has %lld", k,
                           (long long)o->classes[k], (long long)C);
    if (o->weights && o->n_weights != C)
        return lk_fail(msg, LK_ERR_INVALID,
                       "class_weights: %d weight%s for the input's %lld class%s (dim %d)",
                       o->n_weights, o->n_weights == 1 ? "" : "s", (long long)C,
                       C == 1 ? "" : "es", o->mode == SEG_BINARY ? 0 : 1);
    int64_t G = o->per_sample ? N : 1;
    if (G > 0 && C > (((int64_t)1 << 20) / SEG_NSTAT) / G)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "%lld groups x %lld classes: more (group, class) pairs than the %d "
                       "statistics a call may keep",
                       (long long)G, (long long)C, 1 << 20);
    plan->n_stats = (uint32_t)(G * C * SEG_NSTAT);
    if (plan->n_stats == 0)
        plan->n_stats = 1;
    if (fam == SEG_FAM_EW || fam == SEG_FAM_EW64) {
        plan->n_positions = numel;
        plan->block_positions = lk_block_positions(numel);
    } else {
        plan->n_positions = N * S;
        plan->block_positions = lk_classes_block(C);
    }
    plan->out_ndim = 0;
    plan->mean_norm = 1.0;
    plan->aux[LK_CLS_AUX_C] = C;
    plan->aux[LK_CLS_AUX_S] = S > 0 ? S : 1;
    plan->aux[LK_CLS_AUX_KIND] = index ? LK_CLS_INDEX : LK_CLS_PROB;
    plan->aux[LK_CLS_AUX_IGNORE] = o->idx_ignore;
    plan->aux[SEG_AUX_G] = G;
    plan->aux[SEG_AUX_PER] = o->per_sample;
    /* each sample's statistics go through the loss on their own: another
     * process's samples summed into them would be other samples */
    if (o->per_sample) {
        lk_plan_set_flags(plan, LK_PLAN_STATS_PER_SAMPLE);
        /* split evaluation adds num and den across processes (seg_sums) */
        lk_plan_set_partials(plan, 2);
    }
    plan->aux[SEG_AUX_FAM] = fam;
    return LK_OK;
}

/* How many times the mean takes each class: once each, or as often as
 * classes lists it (smp's loss[classes] takes a repeated class again). */
static void seg_taken(const seg *o, int64_t C, int *taken)
{
    for (int64_t c = 0; c < C; c++)
        taken[c] = !o->classes;
    if (!o->classes && !o->include_bg && o->mode != SEG_BINARY)
        taken[0] = 0;
    for (int k = 0; k < o->n_classes; k++)
        if (o->classes[k] < C)
            taken[o->classes[k]]++;
}

/* The loss is outer(num / den): num and den are sums over (group, class)
 * pairs, or over groups for a kind with a group function, and so add
 * across processes (seg_partials). With coef, d num / d I and d P of every
 * pair. */
static int seg_sums(const seg *o, const lk_plan *plan, const double *st, double *coef,
                    double *num_out, double *den_out)
{
    int64_t G = plan->aux[SEG_AUX_G], C = plan->aux[LK_CLS_AUX_C];
    int taken_small[SEG_SMALL_PAIRS + 1];
    int *taken = C <= SEG_SMALL_PAIRS ? taken_small : (int *)malloc(((size_t)C + 1) * sizeof(int));
    if (!taken)
        return -1;
    seg_taken(o, C, taken);
    if (coef)
        memset(coef, 0, (size_t)(2 * G * C) * sizeof(double));
    double num = 0.0, den = 0.0;
    if (o->kind->group) {
        for (int64_t g = 0; g < G; g++)
            num += o->kind->group(o, st + g * SEG_NSTAT * C, C, taken,
                                  coef ? coef + 2 * g * C : NULL);
        den = (double)G;
    } else {
        for (int64_t g = 0; g < G; g++)
            for (int64_t c = 0; c < C; c++) {
                const double *s = st + g * SEG_NSTAT * C;
                double T = s[SEG_T * C + c];
                int empty = T == 0.0;
                if (!taken[c] || (empty && o->empty == SEG_SKIP))
                    continue;
                double w = (o->weights ? o->weights[c] : 1.0) * taken[c];
                den += w;
                if (empty && o->empty == SEG_ZERO)
                    continue;
                seg_d I = {s[SEG_I * C + c], 1.0, 0.0}, P = {s[SEG_P * C + c], 0.0, 1.0};
                seg_d L = o->kind->pair(o, I, P, T, s[SEG_V * C + c]);
                num += w * L.v;
                if (coef) {
                    coef[2 * (g * C + c)] = w * L.i;
                    coef[2 * (g * C + c) + 1] = w * L.p;
                }
            }
    }
    if (taken != taken_small)
        free(taken);
    *num_out = num;
    *den_out = den;
    return 0;
}

/* outer(num / den), and d outer / d num in *dm. */
static double seg_outer(const seg *o, double num, double den, double *dm_out)
{
    double m = den > 0.0 ? num / den : 0.0, dm = den > 0.0 ? 1.0 / den : 0.0;
    if (o->kind->outer_pow && o->gamma != 1.0) {
        /* m^gamma as torch's pow: a negative mean (smooth > smooth_dr) has
         * a real power for an integer gamma and NaN otherwise; at m = 0 the
         * value is 0 with no gradient (none exists for gamma < 1) */
        double r = m == 0.0 ? 0.0 : pow(m, o->gamma);
        dm *= m == 0.0 ? 0.0 : o->gamma * pow(m, o->gamma - 1.0);
        m = r;
    }
    *dm_out = dm;
    return m;
}

/* Whether the host runs lk_loss_finish's finalize or backward of a split
 * evaluation (ABI 1.5): the summed partials stand in for this process's
 * num and den. */
static int seg_split_finish(const lk_plan *plan)
{
    return lk_host_abi_minor >= 5 && (plan->flags & LK_PLAN_SPLIT_FINISH);
}

int seg_eval(const seg *o, const lk_plan *plan, const double *st, double *coef, double *value)
{
    double num, den, dm;
    if (seg_sums(o, plan, st, coef, &num, &den) != 0)
        return -1;
    if (seg_split_finish(plan)) {
        /* backward: this process's statistics, then the summed partials */
        num = st[plan->n_stats];
        den = st[plan->n_stats + 1];
    }
    *value = seg_outer(o, num, den, &dm);
    int64_t n = coef ? 2 * plan->aux[SEG_AUX_G] * plan->aux[LK_CLS_AUX_C] : 0;
    for (int64_t k = 0; k < n; k++)
        coef[k] *= dm;
    return 0;
}

lk_status seg_finalize(const void *inst, const lk_plan *plan, const double *stats,
                       int32_t reduction, double *value, lk_msg *msg)
{
    (void)reduction;
    const seg *o = (const seg *)inst;
    double dm;
    if (seg_split_finish(plan)) {
        /* the partials summed over every process: num, den */
        *value = seg_outer(o, stats[0], stats[1], &dm);
        return LK_OK;
    }
    if (seg_eval(o, plan, stats, NULL, value) != 0)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    return LK_OK;
}

lk_status seg_partials(const void *inst, const lk_plan *plan, const double *stats, double *partials,
                       lk_msg *msg)
{
    if (seg_sums((const seg *)inst, plan, stats, NULL, &partials[0], &partials[1]) != 0)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    return LK_OK;
}

#endif /* LK_PRIMARY */
