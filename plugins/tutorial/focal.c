/* focal: the focal loss of Lin et al. in three modes.
 *
 *   binary      per element sigmoid focal (torchvision's sigmoid_focal_loss):
 *               alpha_t (1 - p_t)^gamma ce; the default, and the loss as it
 *               was before modes existed.
 *   multilabel  the same on (N, C, ...) logits, with an optional weight per
 *               channel (dim 1) and channel 0 optionally dropped.
 *   multiclass  softmax focal on (N, C, ...) logits and (N, ...) int64 class
 *               indices: -alpha_y (1 - p_y)^gamma log p_y per position, mean
 *               over the positions not ignored (focal_mc below).
 *
 * The loss is FUSED: every gradient is per position. The one global
 * number, the multiclass mean's count of positions not ignored, is counted
 * from the targets when the call is planned (the class driver's
 * target_norm), so forward knows it before it writes the gradient, and a
 * split evaluation sums the shards' counts as it sums any mean's divisor.
 */
#include <float.h>

#include "losskit/classes.h"
#include "tutorial.h"

enum { FOCAL_BINARY, FOCAL_MULTILABEL, FOCAL_MULTICLASS };

typedef struct focal {
    double alpha, gamma;
    /* alpha_t = at1 t + at0, and for binary t, -(2t - 1) alpha_t = gat1 t +
     * gat0: (1 - alpha) - t, or 1 - 2t without alpha */
    double at1, at0, gat1, gat0;
    /* the same in float, which the float lanes broadcast from memory where
     * registers run short (a double would be converted on every vector) */
    float at1f, at0f, gat1f, gat0f;
    int at_zero; /* alpha_t is 0 for one of the targets (alpha 0 or 1) */
    int mode;
    /* multilabel: n_cw channel weights (0: all 1; 1: one for all), channel
     * 0 dropped when skip_bg; C, S (channels, positions per channel) are
     * set per call in the kernels' copy */
    int64_t n_cw;
    double *cw;
    int skip_bg;
    int64_t C, S;
    /* multiclass: n_ac class weights (0: none; 1: one for all) */
    int64_t n_ac;
    double *ac;
    int has_ignore;
    int64_t ignore_index;
    const lk_host *host; /* its threads serve the pre-pass over the targets */
} focal;

/* ------------------------------------------------------------------------ */
/* Binary and multilabel: per element                                        */

/* A binary target (one lanes where t == 1), with z = x (2t - 1): 1 - p_t =
 * sigmoid(-z), ce = softplus(-z), and the modulation is sigmoid(-z)^gamma
 * for gamma 0, 1, 2 and exp(-gamma softplus(z)) otherwise (log space,
 * stable for gamma < 1);
 *   d loss / dx = -(2t - 1) alpha_t m [sigmoid(-z) + gamma sigmoid(z) ce].
 * |z| = |x|, so the primitives of x serve z: z >= 0 where x's sign agrees
 * with the target, and there ce = L, elsewhere L + |x|. gat is
 * -(2t - 1) alpha_t, the gradient's signed factor. */
LK_AI void focal_binary(double gamma, const lk_sigm *p, lk_v L, lk_v x, lk_m one, lk_v at, lk_v gat,
                        lk_v *l, lk_v *g)
{
    lk_m zpos = lk_ge(lk_select(one, x, lk_neg(x)), lk_zero());
    lk_v er = lk_mul(p->e, p->r);
    lk_v smz = lk_select(zpos, er, p->r), sz = lk_select(zpos, p->r, er);
    lk_v ce = lk_select(zpos, L, lk_add(L, p->a)); /* an add and a blend */
    lk_v m = gamma == 0.0   ? lk_set(1.0)
             : gamma == 1.0 ? smz
             : gamma == 2.0 ? lk_mul(smz, smz)
                            : lk_exp(lk_mul(lk_set(-gamma), lk_add(lk_keep(zpos, p->a), L)));
    lk_v d = gamma == 0.0 ? smz : lk_fma(lk_set(gamma), lk_mul0(sz, ce), smz);
    *g = lk_mul(lk_mul(gat, m), d); /* m is finite */
    *l = lk_mul0(lk_mul(at, m), ce);
}

/* Every target of the vector 0 or 1: focal_binary in fewer multiply-pipe
 * operations (the loop is bound by them). The target's side comes from
 * the sign of h = 1/2 - t (negative where t = 1) and z's from the sign of
 * z itself, selected by the bits (lk_select_neg) rather than by compares:
 * alpha_t by h, z = x (2t - 1) as x or -x. At x = +-0 the two sides of z
 * give the same values (e = 1, sigmoid(+-z) = r = 1/2, a = 0), so -0 may
 * take either. The gradient's sign -(2t - 1) is h's: alpha_t, m and d are
 * never negative, so g = copysign(alpha_t m d, h). sigmoid(z) ce of d is 0
 * times inf only at x = -inf with t = 1 or +inf with t = 0, where its
 * limit is 0: ce is clamped at the largest finite value there (its NaN
 * passes: min returns its second operand). The loss's alpha_t m ce is 0
 * times inf only where alpha_t = 0 (alpha 0 or 1), which lk_mul0 covers
 * when alpha is one of them. */
LK_AI void focal_binary_all(const focal *f, double gamma, const lk_sigm *p, lk_v L, lk_v x, lk_v t,
                            lk_v *l, lk_v *g)
{
#if defined(LK_LANES_F32)
    const double big = FLT_MAX;
    lk_v at1 = lk_set(f->at1f + f->at0f), at0 = lk_set(f->at0f);
#else
    const double big = DBL_MAX;
    lk_v at1 = lk_set(f->at1 + f->at0), at0 = lk_set(f->at0);
#endif
    lk_v h = lk_sub(lk_set(0.5), t);
    lk_v at = lk_select_neg(h, at1, at0);
    lk_v z = lk_select_neg(h, x, lk_neg(x));
    lk_v er = lk_mul(p->e, p->r);
    lk_v smz = lk_select_neg(z, p->r, er), sz = lk_select_neg(z, er, p->r);
    lk_v ce = lk_select_neg(z, lk_add(L, p->a), L);
    lk_v m = gamma == 0.0   ? lk_set(1.0)
             : gamma == 1.0 ? smz
             : gamma == 2.0 ? lk_mul(smz, smz)
                            : lk_exp(lk_mul(lk_set(-gamma), lk_select_neg(z, L, lk_add(p->a, L))));
    lk_v d = gamma == 0.0 ? smz : lk_fma(lk_set(gamma), lk_mul(sz, lk_min(lk_set(big), ce)), smz);
    lk_v am = lk_mul(at, m);
    *l = f->at_zero ? lk_mul0(am, ce) : lk_mul(am, ce);
    *g = lk_copysign(lk_mul(am, d), h);
}

/* A soft target: q = 1 - p_t = p (1 - t) + (1 - p) t, and
 *   d loss / dx = alpha_t [(p - t) q^gamma - gamma q^(gamma-1) p(1-p)(2t-1) ce].
 * q >= min(t, 1 - t) > 0, so where ce is +inf (an infinite logit on the
 * wrong side) the loss is +inf even where q^gamma underflows to 0 (t =
 * 1e-30, gamma 2: 1e-60 is 0 in float, and 0 inf would be NaN). */
LK_AI void focal_soft(double gamma, const lk_sigm *p, lk_v L, lk_v t, lk_v at, lk_v *l, lk_v *g)
{
    lk_v one = lk_set(1.0);
    lk_v pp = lk_sigm_p(p), p1 = lk_sigm_q(p);
    lk_v q = lk_add(lk_mul(pp, lk_sub(one, t)), lk_mul(p1, t));
    lk_v ce = lk_bce_logits_of1(p, L, t);
    lk_v m = lk_powc(q, gamma);
    lk_v dm = gamma == 0.0
                  ? lk_zero()
                  : lk_clear(lk_eq(q, lk_zero()), lk_mul(lk_set(gamma), lk_powc(q, gamma - 1.0)));
    lk_v corr = lk_mul(lk_mul(dm, lk_mul0(lk_mul(pp, p1), ce)), lk_sub(lk_add(t, t), one));
    *g = lk_mul(at, lk_sub(lk_mul(lk_sigm_minus_t(p, t), m), corr));
    lk_v mce = lk_mul(m, ce);
    mce = lk_select(lk_eq(ce, lk_set(HUGE_VAL)), ce, mce);
    *l = lk_mul0(at, mce);
}

/* The element function for a given gamma: a constant where the family is
 * specialised (gamma 2, the default), so that no test of gamma is left in
 * the loop. */
LK_AI void focal_body(const focal *f, double gamma, lk_elem *e)
{
    lk_v t = e->t;
    /* the driver has screened t into [0, 1] (LK_EW_UNIT_TARGET; NaN
     * passes, and is no integer): 0 and 1 are its integers */
    if (lk_all(lk_eq(t, lk_round(t)))) {
        focal_binary_all(f, gamma, &e->sig, e->sig_L, e->x, t, &e->loss, &e->grad);
        return;
    }
#if defined(LK_LANES_F32)
    lk_v at = lk_fma(lk_set(f->at1f), t, lk_set(f->at0f));
    lk_v gat = lk_fma(lk_set(f->gat1f), t, lk_set(f->gat0f));
#else
    lk_v at = lk_fma(lk_set(f->at1), t, lk_set(f->at0));
    lk_v gat = lk_fma(lk_set(f->gat1), t, lk_set(f->gat0));
#endif
    lk_sigm p = e->sig; /* from the driver, a vector ahead (LK_EW_SIGMOID) */
    lk_v L = e->sig_L;
    lk_m one = lk_eq(t, lk_set(1.0)), binary = lk_or(lk_eq(t, lk_zero()), one);
    lk_v lb = lk_zero(), gb = lk_zero(), ls, gs;
    if (lk_any(binary)) {
        focal_binary(gamma, &p, L, e->x, one, at, gat, &lb, &gb);
        if (lk_all(binary)) {
            e->loss = lb;
            e->grad = gb;
            return;
        }
    }
    focal_soft(gamma, &p, L, t, at, &ls, &gs);
    e->loss = lk_select(binary, lb, ls);
    e->grad = lk_select(binary, gb, gs);
}

LK_AI void focal_elem(const focal *f, lk_elem *e)
{
    focal_body(f, f->gamma, e);
}

LK_AI void focal_elem2(const focal *f, lk_elem *e)
{
    focal_body(f, 2.0, e);
}

/* The weight of channel c in multilabel mode. */
static inline double focal_cweight(const focal *f, int64_t c)
{
    if (f->skip_bg && c == 0)
        return 0.0;
    return f->n_cw == 0 ? 1.0 : f->n_cw == 1 ? f->cw[0] : f->cw[c];
}

/* The channel weights of the lanes from flat index i: channel (i / S) mod C;
 * one broadcast where the vector stays within a channel. */
LK_AI lk_v focal_cweights(const focal *f, int64_t i)
{
    int64_t c = (i / f->S) % f->C, left = f->S - i % f->S;
    if (left >= LK_W)
        return lk_set(focal_cweight(f, c));
    lk_s buf[LK_W];
    for (int j = 0; j < LK_W; j++) {
        buf[j] = (lk_s)focal_cweight(f, c);
        if (--left == 0) {
            left = f->S;
            c = c + 1 == f->C ? 0 : c + 1;
        }
    }
    return lk_load(buf);
}

/* Multilabel with channel weights or without channel 0: a weight of 0
 * gives 0 whatever the element (lk_mul0), so a dropped channel counts
 * nowhere, NaN logits included. */
LK_AI void focal_elem_ml(const focal *f, lk_elem *e)
{
    focal_body(f, f->gamma, e);
    lk_v w = focal_cweights(f, e->i);
    e->loss = lk_mul0(w, e->loss);
    e->grad = lk_mul0(w, e->grad);
}

/* The fused elementwise kernels, with the channel count and length of
 * multilabel mode (plan->aux[0], aux[1]) in the kernel's copy. */
#define FOCAL_EW_KERNELS(name, elem)                                                               \
    LK_AI void name##__elem(const void *p, lk_elem *e)                                             \
    {                                                                                              \
        elem((const focal *)p, e);                                                                 \
    }                                                                                              \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        focal local = *(const focal *)inst;                                                        \
        local.C = plan->aux[0], local.S = plan->aux[1];                                            \
        return lk_elementwise_forward(&local, plan, blk, name##__elem,                             \
                                      LK_EW_UNIT_TARGET | LK_EW_SIGMOID, msg);                     \
    }                                                                                              \
    LK__KSET(name, name##__fwd, NULL, 0)                                                           \
    LK__FAMILY(name)

FOCAL_EW_KERNELS(focal_any, focal_elem)
FOCAL_EW_KERNELS(focal_g2, focal_elem2)
FOCAL_EW_KERNELS(focal_ml, focal_elem_ml)

/* ------------------------------------------------------------------------ */
/* Multiclass: softmax focal on the class driver                             */

/* Per position, with z_c = x_c - max, e_c = exp(z_c), s = sum_c e_c, y the
 * class, and q = sum_{c != y} e_c summed on its own (so that 1 - p_y = q / s
 * never cancels), w = q / e_y:
 *   u = 1 - p_y = q / s,   m = u^gamma,
 *   L = -log p_y = log1p(w) where w <= 1 (p_y >= 1/2, no cancellation),
 *       lse - z_y elsewhere (L >= log 2 there),
 *   loss = alpha_y m L,
 *   d loss / d x_c = K (p_c - [c = y]),  K = alpha_y m (1 + gamma R),
 *   R = p_y L / u = L / w (1 at w = 0, its limit; 0 where e_y = 0).
 * That is alpha_y [u^gamma + gamma u^(gamma-1) p_y L] with the u^(gamma-1)
 * of gamma < 1 folded into R, which stays finite as u -> 0. The target's
 * own gradient -K u is formed from u, not as K (p_y - 1). */
enum { FMC_LOSS, FMC_COUNT };

/* z_y (a), e_y (b) and q (u), in both passes. */
LK_AI void fmc_pass1(const void *inst, const lk_cls_io *io, lk_cls_pos *p, int64_t c,
                     const lk_cls_el *el, lk_cls_acc *ca)
{
    (void)inst, (void)io, (void)c, (void)ca;
    p->a = lk_select(el->hit, el->z, p->a);
    p->b = lk_select(el->hit, el->e, p->b);
    p->u = lk_w_add(p->u, lk_w_of(lk_clear(el->hit, el->e)));
}

LK_AI lk_v fmc_alpha(const focal *f, const lk_cls_pos *p)
{
    if (f->n_ac == 0)
        return lk_set(1.0);
    if (f->n_ac == 1)
        return lk_set(f->ac[0]);
    return lk_w_narrow(lk_cls_lookup(f->ac, p->y));
}

typedef struct fmc_terms {
    lk_v u, m, L, R, a;
} fmc_terms;

LK_AI fmc_terms fmc_of(const focal *f, const lk_cls_pos *p, lk_v lse)
{
    fmc_terms o;
    lk_v one = lk_set(1.0), zero = lk_zero();
    lk_v ey = p->b, q = lk_w_narrow(p->u), s = lk_w_narrow(p->s);
    lk_v w = lk_div(q, ey);
    lk_m near = lk_le(w, one);
    lk_v l1 = lk_log1p_unit(lk_min(w, one));
    o.L = lk_select(near, l1, lk_sub(lse, p->a));
    o.u = lk_div(q, s);
    o.m = lk_powc(o.u, f->gamma);
    o.R = lk_select(lk_eq(w, zero), one, lk_clear(lk_eq(ey, zero), lk_div(o.L, w)));
    o.a = fmc_alpha(f, p);
    return o;
}

/* a = K / s (the other classes' factor of e_c), b = -K u (the target's
 * gradient), from the position's terms. */
LK_AI void fmc_factors(const focal *f, lk_cls_pos *p, const fmc_terms *o)
{
    lk_v K = lk_mul(lk_mul(o->a, o->m), lk_fma(lk_set(f->gamma), o->R, lk_set(1.0)));
    p->a = lk_div(K, lk_w_narrow(p->s));
    p->b = lk_neg(lk_mul(K, o->u));
}

/* With a gradient to write, the factors too (LK_CLS_POS_GRAD), from the
 * same terms, lse being log s. */
LK_AI lk_w fmc_fwd_pos(const void *inst, const lk_cls_io *io, lk_cls_pos *p, lk_acc *pa)
{
    const focal *f = (const focal *)inst;
    fmc_terms o = fmc_of(f, p, p->lse);
    lk_v loss = lk_keep(p->valid, lk_mul0(lk_mul(o.a, o.m), o.L));
    lk_acc_add(&pa[FMC_LOSS], loss);
    lk_acc_add(&pa[FMC_COUNT], lk_keep(p->valid, lk_set(1.0)));
    if (io->g)
        fmc_factors(f, p, &o);
    return lk_w_of(loss);
}

LK_AI lk_v fmc_grad(const void *inst, const lk_cls_io *io, const lk_cls_pos *p, int64_t c,
                    const lk_cls_el *el)
{
    (void)inst, (void)io, (void)c;
    return lk_select(el->hit, p->b, lk_mul(p->a, el->e));
}

/* The host's scale: 1 / the divisor the plan counted, for mean. */
static double fmc_prep(const void *inst, const lk_plan *plan, const lk_block *blk, double *tab)
{
    (void)inst, (void)plan, (void)tab;
    return blk->grad_scale;
}

static lk_status fmc_bad_index(const void *inst, const lk_tensor *t, int64_t pos, int64_t y,
                               int64_t C, lk_msg *msg)
{
    const focal *f = (const focal *)inst;
    char where[160];
    lk_index_str(where, sizeof where, t->ndim, t->shape, pos);
    if (!f->has_ignore)
        return lk_fail(msg, LK_ERR_INVALID,
                       "target%s = %lld is not a class index in [0, %lld) (no ignore_index is "
                       "set)",
                       where, (long long)y, (long long)C);
    return lk_fail(msg, LK_ERR_INVALID,
                   "target%s = %lld is not a class index in [0, %lld) nor ignore_index %lld", where,
                   (long long)y, (long long)C, (long long)f->ignore_index);
}

static const lk_cls_ops fmc_ops = {
    .flags = LK_CLS_LSE | LK_CLS_POS_GRAD,
    .n_pos = 2,
    .fwd1 = fmc_pass1,
    .fwd_pos = fmc_fwd_pos,
    .grad = fmc_grad,
    .prep = fmc_prep,
    .bad_index = fmc_bad_index,
};

/* Fused: the statistics and the gradient of the block in one pass of the
 * driver (its divisor known when planning: the position count from the
 * shape, or with ignore_index under mean the count of the positions not
 * ignored from the targets). */
static lk_status focal_mc__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg)
{
    const focal local = *(const focal *)inst;
    lk_status st = lk_classes_forward(&local, plan, blk, &fmc_ops, msg);
    if (st == LK_OK && !local.has_ignore &&
        blk->stats[FMC_COUNT] != (double)(blk->end - blk->begin)) {
        /* the driver's stand-in ignore_index, INT64_MIN, was met: no
         * index is ignored unless asked for */
        const int64_t *y = (const int64_t *)blk->slots[1].data;
        for (int64_t j = blk->begin; j < blk->end; j++)
            if (y[j] == INT64_MIN)
                return fmc_bad_index(&local, &blk->slots[1], j, y[j], plan->aux[LK_CLS_AUX_C], msg);
    }
    return st; /* the driver's forward wrote the gradient too, from the same exps */
}

LK__KSET(focal_mc, focal_mc__fwd, NULL, 0)
LK__CLS_FAMILY(focal_mc)

/* ------------------------------------------------------------------------ */
/* Parameters                                                                */

static const double focal_alpha_default[] = {0.25};

static const lk_param_desc focal_alpha = {
    .name = "alpha",
    .doc = "binary, multilabel: one value, alpha_t = alpha t + (1 - alpha)(1 - t), negative "
           "disables it; multiclass: C class weights or one for every class",
    .unset = "0.25 in modes binary and multilabel; no class weights in mode multiclass",
    .type = LK_PARAM_NUMBER_LIST,
    .min = -1.0,
    .max = HUGE_VAL,
    .default_list = focal_alpha_default,
    .default_list_len = 1,
    .list_min_len = 1,
    .list_max_len = -1,
};

static const lk_param_desc focal_gamma = {
    .name = "gamma",
    .doc = "focusing exponent of (1 - p_t)",
    .type = LK_PARAM_NUMBER,
    .default_number = 2.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const char *const focal_modes[] = {"binary", "multilabel", "multiclass", NULL};

static const lk_param_desc focal_mode = {
    .name = "mode",
    .doc = "binary: sigmoid per element; multilabel: the same on (N, C, ...) with channel "
           "options; multiclass: softmax over dim 1, int64 class-index targets",
    .type = LK_PARAM_CHOICE,
    .choices = focal_modes,
    .default_choice = "binary",
};

static const lk_param_desc focal_class_weights = {
    .name = "class_weights",
    .doc = "multilabel: one weight per channel of dim 1 (or one for all) multiplying each "
           "element's loss",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc focal_include_background = {
    .name = "include_background",
    .doc = "multilabel: false leaves channel 0 out of the loss and of the mean",
    .type = LK_PARAM_BOOL,
    .default_number = 1.0,
};

static const lk_param_desc focal_ignore_index = {
    .name = "ignore_index",
    .doc = "multiclass: positions whose class index is this value count nowhere",
    .unset = "no position is ignored",
    .type = LK_PARAM_INTEGER,
    .default_number = -100.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

enum { P_ALPHA, P_GAMMA, P_MODE, P_CW, P_BG, P_IGNORE };

static const lk_param_desc *const focal_params[] LK__UNUSED = {
    &focal_alpha,        &focal_gamma, &focal_mode, &focal_class_weights, &focal_include_background,
    &focal_ignore_index, NULL};

static double *focal_copy(const lk_param_value *v, int64_t *n)
{
    *n = v->list ? v->list_len : 0;
    if (!*n)
        return NULL;
    double *d = malloc((size_t)*n * sizeof *d);
    if (d)
        memcpy(d, v->list, (size_t)*n * sizeof *d);
    return d;
}

static lk_status focal_only(const lk_param_value *p, int which, const char *name, const char *mode,
                            lk_msg *msg)
{
    if (p[which].is_set)
        return lk_fail(msg, LK_ERR_INVALID, "%s applies to mode \"%s\" only (the mode is \"%s\")",
                       name, mode, p[P_MODE].choice);
    return LK_OK;
}

static lk_status focal_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    focal *f = inst;
    f->gamma = p[P_GAMMA].number;
    f->mode = (int)p[P_MODE].integer;
    lk_status st = LK_OK;
    if (f->mode != FOCAL_MULTILABEL) {
        st = focal_only(p, P_CW, "class_weights", "multilabel", msg);
        if (st == LK_OK)
            st = focal_only(p, P_BG, "include_background", "multilabel", msg);
    }
    if (st == LK_OK && f->mode != FOCAL_MULTICLASS)
        st = focal_only(p, P_IGNORE, "ignore_index", "multiclass", msg);
    if (st != LK_OK)
        return st;
    const lk_param_value *a = &p[P_ALPHA];
    if (f->mode == FOCAL_MULTICLASS) {
        f->has_ignore = p[P_IGNORE].is_set != 0;
        /* unset: the driver's ignore_index is INT64_MIN, which focal_mc__fwd
         * refuses as a class index */
        f->ignore_index = f->has_ignore ? p[P_IGNORE].integer : INT64_MIN;
        for (int64_t i = 0; a->is_set && i < a->list_len; i++)
            if (a->list[i] < 0.0)
                return lk_fail(msg, LK_ERR_INVALID,
                               "alpha[%lld] = %g: multiclass alpha values are class weights, "
                               "each >= 0",
                               (long long)i, a->list[i]);
        if (a->is_set && !(f->ac = focal_copy(a, &f->n_ac)) && f->n_ac)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld alpha values",
                           (long long)f->n_ac);
        return LK_OK;
    }
    if (a->list_len != 1)
        return lk_fail(msg, LK_ERR_INVALID,
                       "alpha has %lld values; mode \"%s\" takes one (a list of class weights "
                       "needs mode \"multiclass\")",
                       (long long)a->list_len, p[P_MODE].choice);
    if (a->list[0] > 1.0)
        return lk_fail(msg, LK_ERR_INVALID,
                       "alpha = %g is out of range [-1, 1] (negative disables it) in mode \"%s\"",
                       a->list[0], p[P_MODE].choice);
    f->alpha = a->list[0];
    int on = f->alpha >= 0.0;
    f->at1 = on ? 2.0 * f->alpha - 1.0 : 0.0;
    f->at0 = on ? 1.0 - f->alpha : 1.0;
    f->gat1 = on ? -1.0 : -2.0;
    f->gat0 = on ? 1.0 - f->alpha : 1.0;
    f->at1f = (float)f->at1, f->at0f = (float)f->at0;
    f->gat1f = (float)f->gat1, f->gat0f = (float)f->gat0;
    f->at_zero = f->at0 == 0.0 || f->at1 + f->at0 == 0.0;
    if (f->mode == FOCAL_MULTILABEL) {
        f->skip_bg = p[P_BG].integer == 0;
        if (!(f->cw = focal_copy(&p[P_CW], &f->n_cw)) && f->n_cw)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld class_weights",
                           (long long)f->n_cw);
    }
    return LK_OK;
}

static void focal_fini(void *inst)
{
    focal *f = inst;
    free(f->cw);
    free(f->ac);
}

/* Families: 0 focal_any, 1 focal_g2, 2 focal_ml, 3 focal_mc. Multilabel
 * without channel options is binary mode exactly. */
static int focal_pick(const void *inst)
{
    const focal *f = inst;
    if (f->mode == FOCAL_MULTICLASS)
        return 3;
    if (f->mode == FOCAL_MULTILABEL && (f->n_cw || f->skip_bg))
        return 2;
    return f->gamma == 2.0;
}

/* ------------------------------------------------------------------------ */
/* Plan and finalize                                                         */

static lk_status fmc_mismatch(const lk_tensor *x, const lk_tensor *t, int index,
                              const int64_t *want, int32_t want_ndim, lk_msg *msg)
{
    char got[160], exp[160];
    (void)x, (void)index;
    lk_shape_str(got, sizeof got, t->ndim, t->shape);
    lk_shape_str(exp, sizeof exp, want_ndim, want);
    return lk_fail(msg, LK_ERR_SHAPE,
                   "target: shape %s, expected %s (int64 class indices: the input's without "
                   "dim 1)",
                   got, exp);
}

static lk_status focal_plan_mc(const focal *f, const lk_tensor *slots, int32_t reduction,
                               lk_plan *plan, lk_msg *msg)
{
    if (slots[1].dtype != LK_DTYPE_I64)
        return lk_fail(msg, LK_ERR_DTYPE,
                       "target: dtype %s; mode \"multiclass\" takes int64 class indices shaped "
                       "like the input without dim 1",
                       lk_sdk_dtype_name(slots[1].dtype));
    /* with ignore_index under mean, the divisor is the count of positions
     * not ignored: the driver's pre-pass counts it (and fails a bad index
     * before any gradient is written) */
    lk_cls_spec sp = {.who = "mode \"multiclass\"",
                      .index_dtypes = LK_DTYPE_BIT(LK_DTYPE_I64),
                      .n_pos = 2,
                      .ignore_index = f->ignore_index,
                      .mismatch = fmc_mismatch,
                      .target_norm = f->has_ignore && reduction == LK_REDUCTION_MEAN,
                      .inst = f,
                      .bad_index = fmc_bad_index,
                      .host = f->host};
    lk_status st = lk_classes_plan(&sp, slots, plan, msg);
    if (st != LK_OK)
        return st;
    int64_t C = plan->aux[LK_CLS_AUX_C];
    if (f->n_ac > 1 && f->n_ac != C)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "alpha has %lld values but the input has %lld class%s (dim 1); give one "
                       "value or %lld",
                       (long long)f->n_ac, (long long)C, C == 1 ? "" : "es", (long long)C);
    return LK_OK;
}

/* Binary and multilabel check the target as the host's LK_SHAPE_LIKE_INPUT
 * would. */
static lk_status focal_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                            lk_plan *plan, lk_msg *msg)
{
    const focal *f = inst;
    const lk_tensor *x = &slots[0], *t = &slots[1];
    if (f->mode == FOCAL_MULTICLASS)
        return focal_plan_mc(f, slots, reduction, plan, msg);
    if (t->dtype != LK_DTYPE_F32 && t->dtype != LK_DTYPE_F64)
        return lk_fail(msg, LK_ERR_DTYPE,
                       "target: dtype %s is not accepted in mode \"%s\" (float32 or float64 "
                       "targets in [0, 1]; int64 class indices need mode \"multiclass\")",
                       lk_sdk_dtype_name(t->dtype), f->mode ? "multilabel" : "binary");
    int same = t->ndim == x->ndim;
    for (int32_t d = 0; same && d < x->ndim; d++)
        same = t->shape[d] == x->shape[d];
    if (!same) {
        char got[160], want[160];
        lk_shape_str(got, sizeof got, t->ndim, t->shape);
        lk_shape_str(want, sizeof want, x->ndim, x->shape);
        return lk_fail(msg, LK_ERR_SHAPE, "target: shape %s, expected %s (the input's)", got, want);
    }
    plan->aux[0] = plan->aux[1] = 1;
    if (f->mode != FOCAL_MULTILABEL)
        return LK_OK;
    if (x->ndim < 2) {
        char sh[160];
        lk_shape_str(sh, sizeof sh, x->ndim, x->shape);
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: shape %s; mode \"multilabel\" needs (N, C, ...) logits, the "
                       "channels in dim 1",
                       sh);
    }
    int64_t C = x->shape[1], S = 1;
    for (int32_t d = 2; d < x->ndim; d++)
        S *= x->shape[d];
    if (f->n_cw > 1 && f->n_cw != C)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "class_weights has %lld values but the input has %lld channel%s (dim 1); "
                       "give one value or %lld",
                       (long long)f->n_cw, (long long)C, C == 1 ? "" : "s", (long long)C);
    if (f->skip_bg && C < 2)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "include_background false needs at least 2 channels in dim 1; the input "
                       "has %lld",
                       (long long)C);
    plan->aux[0] = C > 0 ? C : 1;
    plan->aux[1] = S > 0 ? S : 1;
    if (f->skip_bg)
        plan->mean_norm = (double)x->shape[0] * (double)(C - 1) * (double)S;
    return LK_OK;
}

/* multiclass mean: over the positions not ignored, 0 when none is. */
static lk_status focal_finalize(const void *inst, const lk_plan *plan, const double *st,
                                int32_t reduction, double *value, lk_msg *msg)
{
    const focal *f = inst;
    (void)msg;
    if (reduction != LK_REDUCTION_MEAN)
        *value = st[0];
    else if (f->mode == FOCAL_MULTICLASS)
        *value = st[FMC_COUNT] > 0.0 ? st[FMC_LOSS] / st[FMC_COUNT] : 0.0;
    else
        *value = plan->mean_norm > 0.0 ? st[0] / plan->mean_norm : 0.0; /* a mean over nothing */
    return LK_OK;
}

/* create() as the layer makes it, keeping the host, whose threads the
 * pre-pass over the targets uses. */
#if defined(LK_PRIMARY)
static lk_status focal_create(const lk_create_args *a, void **inst, lk_msg *msg);
#else
#define focal_create NULL
#endif

/* The target depends on the mode, so plan() checks it. */
static const lk_slot_desc focal_target = {
    .name = "target",
    .doc = "binary, multilabel: targets in [0, 1] shaped like input; multiclass: int64 "
           "class indices shaped like input without dim 1",
    .dtypes = LK_DTYPES_FLOAT | LK_DTYPE_BIT(LK_DTYPE_I64),
    .shape = LK_SHAPE_ANY,
};

static const lk_slot_desc *const focal_slots[] LK__UNUSED = {&tut_logits, &focal_target, NULL};

LK_LOSS_DESC(focal, focal, LK_LOSS_FUSED, focal__finalize, NULL,
             LK_FAMILIES(&focal_any__family, &focal_g2__family, &focal_ml__family,
                         &focal_mc__family),
             focal_slots, LK_REDUCTIONS_ELEMENTWISE,
             LK_HOOKS(.init = focal_init, .fini = focal_fini, .plan = focal_plan,
                      .finalize = focal_finalize, .pick = focal_pick),
             .summary = "focal loss of Lin et al.: per-element sigmoid (torchvision's; modes "
                        "binary, multilabel) or softmax over classes (mode multiclass)",
             .version = "1.2.0", .params = focal_params, .create = focal_create)

#if defined(LK_PRIMARY)
static lk_status focal_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    lk_status st = focal__create(a, inst, msg);
    if (st == LK_OK)
        ((focal *)lk__user((lk__inst *)*inst))->host = a->host;
    return st;
}
#endif
