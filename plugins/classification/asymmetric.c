/* asymmetric: the multilabel asymmetric loss (ASL) of Ridnik et al., ICCV
 * 2021, as timm's AsymmetricLossMultiLabel computes it from logits x and
 * targets y in [0, 1]. With p = sigmoid(x), q = 1 - p:
 *
 *   q_c = min(q + clip, 1)   (q itself when clip = 0)
 *   A = log max(p, eps),  B = log max(q_c, eps)
 *   1 - p_t = y q + (1 - y)(1 - q_c),  1 - q_c = max(p - clip, 0)
 *   gamma = gamma_pos y + gamma_neg (1 - y)
 *   loss = -[y A + (1 - y) B] (1 - p_t)^gamma
 *
 * summed over the elements for `sum` (timm's value, -loss.sum() in its
 * code), divided by the element count for `mean`, by dim 0 for
 * `batchmean`. The gradient flows through the focusing weight (timm's
 * default disable_torch_grad_focal_loss=False) and follows torch's
 * subgradients of the clamps (0 where a clamp binds). The forms above are
 * the stable ones: q = sigmoid(-x) and 1 - q_c = max(p - clip, 0) are not
 * formed as differences from 1. */
#include "classification.h"

typedef struct asl {
    double gamma_neg, gamma_pos, clip, eps, log_eps;
    /* the same in float, which the float lanes broadcast from memory where
     * registers run short (a double would be converted on every vector) */
    float clip_f, eps_f, log_eps_f;
} asl;

static const lk_param_desc asl_gamma_neg = {
    .name = "gamma_neg",
    .doc = "focusing exponent of the negative targets' term",
    .type = LK_PARAM_NUMBER,
    .default_number = 4.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc asl_gamma_pos = {
    .name = "gamma_pos",
    .doc = "focusing exponent of the positive targets' term",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc asl_clip = {
    .name = "clip",
    .doc = "probability margin of the negatives: 1 - p becomes min(1 - p + clip, 1); 0 "
           "disables it",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.05,
    .min = 0.0,
    .max = 1.0,
};

static const lk_param_desc asl_eps = {
    .name = "eps",
    .doc = "probabilities are clamped to at least eps before the log",
    .type = LK_PARAM_NUMBER,
    .default_number = 1e-8,
    .min = 0.0,
    .max = 1.0,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
};

static const lk_param_desc *const asl_params[] LK__UNUSED = {&asl_gamma_neg, &asl_gamma_pos,
                                                             &asl_clip, &asl_eps, NULL};

static lk_status asl_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    asl *a = inst;
    (void)msg;
    a->gamma_neg = p[0].number;
    a->gamma_pos = p[1].number;
    a->clip = p[2].number;
    a->eps = p[3].number;
    a->log_eps = log(a->eps);
    a->clip_f = (float)a->clip, a->eps_f = (float)a->eps, a->log_eps_f = (float)a->log_eps;
    return LK_OK;
}

/* timm's defaults (exponents 4 and 1, a clip) get their own kernels, the
 * exponents and the test of the clip constants. */
static int asl_pick(const void *inst)
{
    const asl *a = inst;
    return a->gamma_neg == 4.0 && a->gamma_pos == 1.0 && a->clip > 0.0;
}

#if defined(LK_LANES_F32)
#define ASL_C(a, m) ((a)->m##_f)
#else
#define ASL_C(a, m) ((a)->m)
#endif

/* b^g for a constant g >= 0, small integers by multiplication. */
LK_AI lk_v asl_pow(lk_v b, double g)
{
    if (g == 0.0)
        return lk_set(1.0);
    if (g == 1.0)
        return b;
    if (g == 2.0)
        return lk_mul(b, b);
    if (g == 3.0)
        return lk_mul(lk_mul(b, b), b);
    if (g == 4.0) {
        lk_v b2 = lk_mul(b, b);
        return lk_mul(b2, b2);
    }
    return lk_pow(b, lk_set(g));
}

/* g b^(g - 1) db, 0 where g or db is 0 (b^(g - 1) may be infinite at b = 0
 * for g < 1; the clamps that make b = 0 also make db = 0). */
LK_AI lk_v asl_dpow(lk_v b, double g, lk_v db)
{
    if (g == 0.0)
        return lk_zero();
    return lk_mul0(lk_mul(lk_set(g), db), asl_pow(b, g - 1.0));
}

LK_AI void asl_body(const asl *a, double gp, double gn, int clipped, lk_elem *e)
{
    lk_v x = e->x, y = e->t, one = lk_set(1.0), eps = lk_set(ASL_C(a, eps));
    lk_v log_eps = lk_set(ASL_C(a, log_eps));
    lk_sigm s = lk_sigm_of(x);
    lk_v L = lk_sigm_log1p(&s);
    lk_v p = lk_sigm_p(&s), q = lk_sigm_q(&s), pq = lk_sigm_dp(&s);
    /* the positive term: A = log max(p, eps) = log sigmoid(x) unless clamped
     * (the masks are of the clamps binding: false for NaN, which passes) */
    lk_m lowp = lk_lt(p, eps);
    lk_v A = lk_select(lowp, log_eps, lk_log_sigmoid_of(x, L));
    lk_v dA = lk_clear(lowp, q);
    /* the negative term: B = log max(q_c, eps); r = 1 - q_c, dr = d r / dx */
    lk_v B, dB, r, dr;
    if (clipped) {
        lk_v qc = lk_add(q, lk_set(ASL_C(a, clip)));
        lk_m top = lk_gt(qc, one);
        lk_v qn = lk_select(top, one, qc);
        lk_m lowq = lk_lt(qn, eps);
        B = lk_select(lowq, log_eps, cls_log01(qn));
        dB = lk_clear(lk_or(top, lowq), lk_neg(lk_mul(pq, lk__recip_fast(qn))));
        r = lk_max(lk_zero(), lk_sub(p, lk_set(ASL_C(a, clip))));
        dr = lk_clear(top, pq);
    } else {
        lk_m lowq = lk_lt(q, eps);
        B = lk_select(lowq, log_eps, lk_log_sigmoid_of(lk_neg(x), L));
        dB = lk_clear(lowq, lk_neg(p));
        r = p;
        dr = pq;
    }
    lk_m pos = lk_eq(y, one), binary = lk_or(pos, lk_eq(y, lk_zero()));
    lk_v lb = lk_zero(), gb = lk_zero(), ls = lk_zero(), gs = lk_zero();
    if (lk_any(binary)) {
        /* y = 1: W = q^gp, dW = -gp p W; y = 0: W = r^gn, dW = gn r^(gn-1) dr */
        lk_v W1 = asl_pow(q, gp), W0 = asl_pow(r, gn);
        lk_v g1 = lk_mul(W1, lk_sub(lk_mul(lk_mul(lk_set(gp), p), A), dA));
        lk_v g0 = lk_neg(lk_fma(dB, W0, lk_mul0(B, asl_dpow(r, gn, dr))));
        lb = lk_neg(lk_select(pos, lk_mul(A, W1), lk_mul(B, W0)));
        gb = lk_select(pos, g1, g0);
    }
    if (!lk_all(binary)) {
        /* soft targets: gamma per lane */
        lk_v ny = lk_sub(one, y);
        lk_v b = lk_add(lk_mul(y, q), lk_mul(ny, r));
        lk_v db = lk_sub(lk_mul(ny, dr), lk_mul(y, pq));
        lk_v gam = lk_fma(lk_set(gp - gn), y, lk_set(gn));
        lk_v W = lk_pow(b, gam);
        lk_v dW = lk_mul0(lk_mul(gam, db), lk_pow(b, lk_sub(gam, one)));
        lk_v ce = lk_fma(y, A, lk_mul(ny, B));
        lk_v dce = lk_fma(y, dA, lk_mul(ny, dB));
        ls = lk_neg(lk_mul(ce, W));
        gs = lk_neg(lk_fma(dce, W, lk_mul0(ce, dW)));
    }
    e->loss = lk_select(binary, lb, ls);
    e->grad = lk_select(binary, gb, gs);
}

LK_AI void asl_elem(const asl *a, lk_elem *e)
{
    asl_body(a, a->gamma_pos, a->gamma_neg, a->clip > 0.0, e);
}

LK_AI void asl_elem_timm(const asl *a, lk_elem *e)
{
    asl_body(a, 1.0, 4.0, 1, e);
}

static const lk_slot_desc *const asl_slots[] LK__UNUSED = {&cls_logits, &cls_target01, NULL};

LK_KERNELS_ELEMENTWISE(asl_any, asl, asl_elem, LK_EW_UNIT_TARGET)
LK_KERNELS_ELEMENTWISE(asl_timm, asl, asl_elem_timm, LK_EW_UNIT_TARGET)
LK_LOSS_DESC(asymmetric, asl, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&asl_any__family, &asl_timm__family), asl_slots,
             LK_REDUCTIONS_ELEMENTWISE | LK_REDUCTION_BIT(LK_REDUCTION_BATCHMEAN),
             LK_HOOKS(.init = asl_init, .pick = asl_pick),
             .summary = "multilabel asymmetric loss (Ridnik et al. 2021) from logits, as timm's "
                        "AsymmetricLossMultiLabel; sum is timm's value",
             .default_reduction = LK_REDUCTION_SUM, .params = asl_params)
