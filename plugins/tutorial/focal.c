/* focal: the per-element sigmoid focal loss of Lin et al. (torchvision's
 * sigmoid_focal_loss): alpha_t (1 - p_t)^gamma ce. */
#include "tutorial.h"

typedef struct focal {
    double alpha, gamma;
    /* alpha_t = at1 t + at0, and for binary t, -(2t - 1) alpha_t = gat1 t +
     * gat0: (1 - alpha) - t, or 1 - 2t without alpha */
    double at1, at0, gat1, gat0;
} focal;

static const lk_param_desc focal_alpha = {
    .name = "alpha",
    .doc = "alpha_t = alpha t + (1 - alpha)(1 - t); a negative alpha disables it",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.25,
    .min = -1.0,
    .max = 1.0,
};

static const lk_param_desc focal_gamma = {
    .name = "gamma",
    .doc = "focusing exponent of (1 - p_t)",
    .type = LK_PARAM_NUMBER,
    .default_number = 2.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc *const focal_params[] LK__UNUSED = {&focal_alpha, &focal_gamma, NULL};

static lk_status focal_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    focal *f = inst;
    f->alpha = p[0].number;
    f->gamma = p[1].number;
    int on = f->alpha >= 0.0;
    f->at1 = on ? 2.0 * f->alpha - 1.0 : 0.0;
    f->at0 = on ? 1.0 - f->alpha : 1.0;
    f->gat1 = on ? -1.0 : -2.0;
    f->gat0 = on ? 1.0 - f->alpha : 1.0;
    return LK_OK;
}

/* A binary target (one lanes where t == 1), with z = x (2t - 1): 1 - p_t =
 * sigmoid(-z), ce = softplus(-z), and the modulation is sigmoid(-z)^gamma
 * for gamma 0, 1, 2 and exp(-gamma softplus(z)) otherwise (log space,
 * stable for gamma < 1);
 *   d loss / dx = -(2t - 1) alpha_t m [sigmoid(-z) + gamma sigmoid(z) ce].
 * |z| = |x|, so the primitives of x serve z: z >= 0 where x's sign agrees
 * with the target, and there ce = L, elsewhere L + |x|. gat is
 * -(2t - 1) alpha_t, the gradient's signed factor. */
LK_AI void focal_binary(double gamma, const lk_sigm *p, lk_v L, lk_v x, lk_m one, lk_v at,
                        lk_v gat, lk_v *l, lk_v *g)
{
    lk_m zpos = lk_ge(lk_select(one, x, lk_neg(x)), lk_zero());
    lk_v er = lk_mul(p->e, p->r);
    lk_v smz = lk_select(zpos, er, p->r), sz = lk_select(zpos, p->r, er);
    lk_v ce = lk_add(L, lk_clear(zpos, p->a));
    lk_v m = gamma == 0.0   ? lk_set(1.0)
             : gamma == 1.0 ? smz
             : gamma == 2.0 ? lk_mul(smz, smz)
                            : lk_exp(lk_mul(lk_set(-gamma), lk_add(lk_keep(zpos, p->a), L)));
    lk_v d = gamma == 0.0 ? smz : lk_fma(lk_set(gamma), lk_mul0(sz, ce), smz);
    *g = lk_mul(lk_mul(gat, m), d); /* m is finite */
    *l = lk_mul0(lk_mul(at, m), ce);
}

/* A soft target: q = 1 - p_t = p (1 - t) + (1 - p) t, and
 *   d loss / dx = alpha_t [(p - t) q^gamma - gamma q^(gamma-1) p(1-p)(2t-1) ce]. */
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
    *l = lk_mul0(at, lk_mul(m, ce));
}

/* The element function for a given gamma: a constant where the family is
 * specialised (gamma 2, the default), so that no test of gamma is left in
 * the loop. */
LK_AI void focal_body(const focal *f, double gamma, lk_elem *e)
{
    lk_v t = e->t;
    lk_v at = lk_fma(lk_set(f->at1), t, lk_set(f->at0));
    lk_v gat = lk_fma(lk_set(f->gat1), t, lk_set(f->gat0));
    lk_sigm p = lk_sigm_of(e->x);
    lk_v L = lk_sigm_log1p(&p);
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

static int focal_pick(const void *inst)
{
    return ((const focal *)inst)->gamma == 2.0;
}

LK_KERNELS_ELEMENTWISE(focal_any, focal, focal_elem, LK_EW_UNIT_TARGET)
LK_KERNELS_ELEMENTWISE(focal_g2, focal, focal_elem2, LK_EW_UNIT_TARGET)
LK_LOSS_DESC(focal, focal, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&focal_any__family, &focal_g2__family), tut_logit_slots,
             LK_REDUCTIONS_ELEMENTWISE, LK_HOOKS(.init = focal_init, .pick = focal_pick),
             .summary = "per-element sigmoid focal loss of Lin et al. (torchvision's)",
             .version = "1.1.0", .params = focal_params)
