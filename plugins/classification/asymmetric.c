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
    /* The timm kernel's screen of the targets (see asl_timm__fwd): the
     * lanes outside [0, 1] seen so far, an lk_m of the call's lanes; NULL
     * where the driver screens */
    void *seen;
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
    a->seen = NULL;
    return LK_OK;
}

/* Whether asl_pow takes b^g and b^(g - 1) by multiplication. */
static inline int asl_small(double g)
{
    return g == 0.0 || g == 1.0 || g == 2.0 || g == 3.0 || g == 4.0;
}

/* timm's defaults (exponents 4 and 1, a clip of at least eps) get their
 * own kernels (family 1), and so do the paper's (gamma_pos 0, family 3):
 * the exponents are constants there, and q_c never falls below eps.
 * Exponents of 0 to 4 take their powers by multiplication (family 0); the
 * others by one pow a vector (family 2). */
static int asl_pick(const void *inst)
{
    const asl *a = inst;
    if (a->gamma_neg == 4.0 && a->clip >= a->eps && (a->gamma_pos == 1.0 || a->gamma_pos == 0.0))
        return a->gamma_pos == 1.0 ? 1 : 3;
    return asl_small(a->gamma_neg) && asl_small(a->gamma_pos) ? 0 : 2;
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
    if (g >= 1.0) /* b^(g - 1) is finite */
        return lk_mul(lk_mul(lk_set(g), db), asl_pow(b, g - 1.0));
    return lk_mul0(lk_mul(lk_set(g), db), asl_pow(b, g - 1.0));
}

/* The smallest normal float or double of the lanes: below it a power has
 * lost relative precision. */
#if defined(LK_LANES_F32)
#define ASL_NORMAL 1.17549435e-38
#else
#define ASL_NORMAL 2.2250738585072014e-308
#endif

/* b^g (*w) and b^(g - 1) (*wm1) for bases b >= 0 (or NaN) and exponents g
 * >= 0 of each lane, with one call of the vector math library's pow. Its
 * path for special arguments (a zero base, which r = max(p - clip, 0)
 * gives wherever p < clip) runs lane by lane, several times slower than the
 * vector itself: the bases that are not positive are given 1 and their
 * answers are set after (0^0 = 1, 0^g = 0; 0^(g - 1) is 0 for g > 1, 1 for
 * g = 1 and inf below). b^(g - 1) is b^g / b, but where b^g is below the
 * normal range it has lost relative precision (b^g underflows before b^(g
 * - 1) does), and those lanes take the pow itself. A NaN base gives 0 or 1
 * here; the caller's log of the same NaN makes its loss and gradient NaN. */
LK_AI void asl_powv(lk_v b, lk_v g, lk_v *w, lk_v *wm1)
{
    lk_v one = lk_set(1.0), zero = lk_zero();
    lk_m live = lk_gt(b, zero);
    lk_v bl = lk_select(live, b, one);
    *w = lk_select(live, lk_pow(bl, g), lk_select(lk_eq(g, zero), one, zero));
    lk_v at0 = lk_select(lk_gt(g, one), zero, lk_select(lk_eq(g, one), one, lk_set(HUGE_VAL)));
    lk_v v = lk_select(live, lk_div(*w, bl), at0);
    lk_m lost = lk_and(live, lk_lt(*w, lk_set(ASL_NORMAL)));
    if (lk_any(lost))
        v = lk_select(lost, lk_pow(lk_select(lost, b, one), lk_sub(g, one)), v);
    *wm1 = v;
}

/* The terms of both targets, negated, from the logs La = log1p(e) (e =
 * exp(-|x|)) and Lb = log q_c and from pqc = p q / q_c: nA = -A and dA =
 * d A / dx of the positive term, nB = -B and dB of the negative one, r =
 * 1 - q_c and dr = d r / dx.
 * lean: the caller weighs the negative term by r^g with g > 1 and q_c never
 * falls below eps, so the clamps at q_c = 1 need not clear B, dB and dr (r^g
 * and its derivative are 0 there) and the one at eps never binds. */
typedef struct asl_parts {
    lk_v nA, dA, nB, dB, r, dr;
} asl_parts;

LK_AI asl_parts asl_parts_of(const asl *a, int clipped, int lean, lk_v x, const lk_sigm *s, lk_v qc,
                             lk_v La, lk_v Lb, lk_v pqc)
{
    lk_v one = lk_set(1.0), zero = lk_zero(), eps = lk_set(ASL_C(a, eps));
    lk_v nlog_eps = lk_neg(lk_set(ASL_C(a, log_eps)));
    lk_v p = lk_sigm_p(s), q = lk_sigm_q(s), pq = lk_sigm_dp(s);
    asl_parts t;
    /* A = log max(p, eps) = min(x, 0) - log1p(e) unless clamped (the masks
     * are of the clamps binding: false for NaN, which passes) */
    lk_m lowp = lk_lt(p, eps);
    t.nA = lk_select(lowp, nlog_eps, lk_sub(La, lk_min(x, zero)));
    t.dA = lk_clear(lowp, q);
    if (clipped) {
        lk_v qn = lk_min(one, qc); /* qc where qc is NaN */
        t.nB = lk_neg(Lb);
        t.dB = lk_neg(pqc);
        t.r = lk_max(zero, lk_sub(p, lk_set(ASL_C(a, clip))));
        t.dr = pq;
        if (!lean) {
            lk_m top = lk_gt(qc, one), lowq = lk_lt(qn, eps);
            t.nB = lk_clear(top, lk_select(lowq, nlog_eps, t.nB));
            t.dB = lk_clear(lk_or(top, lowq), t.dB);
            t.dr = lk_clear(top, pq);
        }
    } else {
        lk_m lowq = lk_lt(q, eps);
        t.nB = lk_select(lowq, nlog_eps, lk_add(La, lk_pospart(x)));
        t.dB = lk_clear(lowq, lk_neg(p));
        t.r = p;
        t.dr = pq;
    }
    return t;
}

/* q_c = q + clip, before its clamp at 1 */
LK_AI lk_v asl_qc(const asl *a, const lk_sigm *s)
{
    return lk_add(lk_sigm_q(s), lk_set(ASL_C(a, clip)));
}

/* log q_c and 1 / q_c (q_c clamped at 1), with a clip */
LK_AI void asl_clip_logs(lk_v qc, lk_v *Lb, lk_v *iqc)
{
    lk_v qn = lk_min(lk_set(1.0), qc); /* qc where qc is NaN */
    *Lb = cls_log01(qn);
    *iqc = lk__recip_fast(qn);
}

/* The logs of a binary vector: La = log1p(e), Lb = log q_c, q_c and 1 /
 * q_c (the last three with a clip). pos: the lanes of target 1. */
typedef struct asl_logs {
    lk_v La, Lb, qc, iqc;
} asl_logs;

LK_AI asl_logs asl_logs_of(const asl *a, int clipped, lk_m pos, const lk_sigm *s)
{
    asl_logs g = {lk_zero(), lk_zero(), lk_zero(), lk_zero()};
#if defined(LK_LANES_F32) && !defined(LK_TARGET_PORTABLE)
    if (clipped) {
        /* one log per lane, of w = 1 + e (a positive target: log1p(e) =
         * log w + (e - (w - 1)) / w, the rounding of w put back) or of q_c
         * (a negative one; above q_c = 1 the clamp's caller discards it) */
        lk_v one = lk_set(1.0), w = lk_add(one, s->e);
        g.qc = asl_qc(a, s);
        g.Lb = lk__f_log_pos(lk_select(pos, w, g.qc)); /* w and qc positive, finite, normal */
        g.La = lk_fma(lk_sub(s->e, lk_sub(w, one)), s->r, g.Lb);
        g.iqc = lk__recip_fast(g.qc);
    } else {
        g.La = lk_sigm_log1p(s);
    }
#else
    (void)pos;
    g.La = lk_sigm_log1p(s);
    if (clipped) {
        g.qc = asl_qc(a, s);
        asl_clip_logs(g.qc, &g.Lb, &g.iqc);
    }
#endif
    return g;
}

/* Every target 0 or 1 (the common case). A lane needs only its target's
 * term, so the terms are selected before the focusing weight is applied:
 * loss = -L W, grad = -(dL W + L dW). lean as in asl_parts_of. */
LK_AI void asl_binary(const asl *a, double gp, double gn, int clipped, int lean, int vpow, lk_m pos,
                      lk_sigm s, asl_logs g, lk_elem *e)
{
    lk_v x = e->x, qc = g.qc, La = g.La, Lb = g.Lb, pqc = lk_mul(lk_sigm_dp(&s), g.iqc);
    asl_parts t = asl_parts_of(a, clipped, lean && gn > 1.0, x, &s, qc, La, Lb, pqc);
    lk_v p = lk_sigm_p(&s), q = lk_sigm_q(&s);
    /* y = 1: W = q^gp, dW = -gp p W; y = 0: W = r^gn, dW = gn r^(gn-1) dr */
    lk_v W, dW;
    if (!vpow) {
        lk_v W1 = asl_pow(q, gp), W0 = asl_pow(t.r, gn);
        W = lk_select(pos, W1, W0);
        lk_v dW1 = gp == 1.0 ? lk_neg(lk_sigm_dp(&s)) : lk_neg(lk_mul(lk_mul(lk_set(gp), p), W1));
        dW = lk_select(pos, dW1, asl_dpow(t.r, gn, t.dr));
    } else {
        /* one pow for both targets: each lane's base and exponent first */
        lk_v gl = lk_select(pos, lk_set(gp), lk_set(gn)), b = lk_select(pos, q, t.r);
        lk_v db = lk_select(pos, lk_neg(lk_sigm_dp(&s)), t.dr);
        lk_v Wm1;
        asl_powv(b, gl, &W, &Wm1);
        dW = lk_mul0(lk_mul(gl, db), Wm1);
    }
    lk_v nL = lk_select(pos, t.nA, t.nB), dL = lk_select(pos, t.dA, t.dB);
    e->loss = lk_mul(nL, W);
    /* L dW is finite: L by the clamp at eps, dW where every exponent is 0
     * or at least 1 (asl_dpow's zero rule covers the others) */
    lk_v LdW =
        (gp == 0.0 || gp >= 1.0) && (gn == 0.0 || gn >= 1.0) ? lk_mul(nL, dW) : lk_mul0(nL, dW);
    e->grad = lk_fnma(dL, W, LdW);
}

/* The binary vector of the lean kernel (a clip of at least eps, gn > 1),
 * in the fewest operations: the terms are selected first and the chain
 * rule folded by hand. With A = log max(p, eps), B = log q_c, r = max(p -
 * clip, 0):
 *   y = 1: loss = -A q^gp,   grad = -q^gp (q' - gp p A)   (q' = 0 where
 *          the clamp at eps binds, q elsewhere)
 *   y = 0: loss = -B r^gn,   grad = p q r^(gn - 1) (r / q_c - gn B)
 * Where q_c > 1 (r = 0) B is log q_c unclamped: r^gn and r^(gn - 1) are 0
 * there, which is the clamp's answer. L is each lane's log, A where pos
 * and B elsewhere; A comes as max(log p, log eps), log being monotonic
 * (NaN passes: max returns its second operand). Both gradients are one
 * product F (C - M L), the lanes' factors selected (neg: the lanes of
 * target 0): C = q' or r / q_c (the latter a masked multiply into q'), M =
 * gp p or gn, F = -q^gp or p q r^(gn - 1); the weight W = q^gp, then r^gn
 * where neg, likewise in place. The clamp's test p < eps is the sign of
 * p - eps (exact: p != eps gives a nonzero difference), an add-pipe
 * operation where a compare takes a slot of the multiply pipes, which this
 * kernel keeps the busier. */
LK_AI void asl_binary_lean(const asl *a, double gp, double gn, lk_m pos, lk_m neg, lk_v p, lk_v q,
                           lk_v pq, lk_v L, lk_v iqc, lk_elem *e)
{
    lk_v zero = lk_zero();
    lk_v qd = lk_select_neg(lk_sub(p, lk_set(ASL_C(a, eps))), lk_zero(), q);
    lk_v W1 = asl_pow(q, gp);
    lk_v r = lk_max(zero, lk_sub(p, lk_set(ASL_C(a, clip))));
    lk_v rg1 = asl_pow(r, gn - 1.0);
    lk_v W = lk_mul_where(neg, rg1, r, W1);
    lk_v C = lk_mul_where(neg, r, iqc, qd);
    lk_v M = lk_select(pos,
                       gp == 1.0   ? p
                       : gp == 0.0 ? lk_zero()
                                   : lk_mul(lk_set(gp), p),
                       lk_set(gn));
    lk_v F = lk_select(pos, lk_neg(W1), lk_mul(pq, rg1));
    e->loss = lk_fnma(L, W, zero);
    e->grad = lk_mul(F, lk_fnma(M, L, C));
}

/* Soft targets in the vector: gamma per lane, both terms weighed; the lanes
 * of target 0 or 1 take the form above. Out of line: it calls the vector
 * math library (pow), and the registers the common case keeps across the
 * loop would be spilled around that call on every trip. */
static __attribute__((noinline)) void asl_soft(const asl *a, double gp, double gn, int clipped,
                                               lk_v x, lk_v y, lk_v *loss, lk_v *grad)
{
    lk_v one = lk_set(1.0);
    lk_m pos = lk_eq(y, one), binary = lk_or(pos, lk_eq(y, lk_zero()));
    lk_elem eb;
    eb.x = x, eb.t = y;
    eb.loss = eb.grad = lk_zero();
    if (lk_any(binary)) {
        lk_sigm sb = lk_sigm_of(x);
        asl_binary(a, gp, gn, clipped, 0, !(asl_small(gp) && asl_small(gn)), pos, sb,
                   asl_logs_of(a, clipped, pos, &sb), &eb);
    }
    lk_sigm s = lk_sigm_of(x);
    lk_v qc = asl_qc(a, &s), L = lk_sigm_log1p(&s), Lb = L, pqc = lk_zero();
    if (clipped) {
        lk_v iqc;
        asl_clip_logs(qc, &Lb, &iqc);
        pqc = lk_mul(lk_sigm_dp(&s), iqc);
    }
    asl_parts t = asl_parts_of(a, clipped, 0, x, &s, qc, L, Lb, pqc);
    lk_v q = lk_sigm_q(&s), pq = lk_sigm_dp(&s);
    lk_v ny = lk_sub(one, y);
    lk_v b = lk_add(lk_mul(y, q), lk_mul(ny, t.r));
    lk_v db = lk_sub(lk_mul(ny, t.dr), lk_mul(y, pq));
    lk_v gam = lk_fma(lk_set(gp - gn), y, lk_set(gn));
    lk_v W, Wm1;
    asl_powv(b, gam, &W, &Wm1);
    lk_v dW = lk_mul0(lk_mul(gam, db), Wm1);
    /* nce = -(y A + (1 - y) B), dce = its derivative, negated back */
    lk_v nce = lk_fma(y, t.nA, lk_mul(ny, t.nB));
    lk_v dce = lk_fma(y, t.dA, lk_mul(ny, t.dB));
    *loss = lk_select(binary, eb.loss, lk_mul(nce, W));
    *grad = lk_select(binary, eb.grad, lk_fnma(dce, W, lk_mul0(nce, dW)));
}

/* A vector with a target other than 0 or 1: where the kernel screens its
 * own targets (a->seen set, see asl_timm__fwd) its lanes outside [0, 1]
 * are gathered first. Locals: e's address escapes nowhere, so what it
 * carries unused is dropped. */
LK_AI void asl_soft_elem(const asl *a, double gp, double gn, int clipped, lk_elem *e)
{
    lk_v loss, grad;
    if (a->seen)
        *(lk_m *)a->seen = lk_or(*(lk_m *)a->seen, lk_outside01(e->t));
    asl_soft(a, gp, gn, clipped, e->x, e->t, &loss, &grad);
    e->loss = loss, e->grad = grad;
}

/* lean: the timm kernel, whose pick guarantees clip >= eps. The sigmoid
 * of x comes from the driver (LK_EW_SIGMOID), formed a vector ahead so
 * that its exp and reciprocal overlap this vector's logs and powers. */
LK_AI void asl_body(const asl *a, double gp, double gn, int clipped, int lean, int vpow, lk_elem *e)
{
    lk_v y = e->t;
    lk_m pos = lk_eq(y, lk_set(1.0)), neg = lk_eq(y, lk_zero()), binary = lk_or(pos, neg);
    if (lk_all(binary)) {
        asl_logs g = asl_logs_of(a, clipped, pos, &e->sig);
        if (lean && clipped && gn > 1.0) {
            lk_sigm s = e->sig;
            lk_v L = lk_max_where(pos, lk_set(ASL_C(a, log_eps)),
                                  lk_sub(lk_min(e->x, lk_zero()), g.La), g.Lb);
            asl_binary_lean(a, gp, gn, pos, neg, lk_sigm_p(&s), lk_sigm_q(&s), lk_sigm_dp(&s), L,
                            g.iqc, e);
        } else
            asl_binary(a, gp, gn, clipped, lean, vpow, pos, e->sig, g, e);
    } else {
        asl_soft_elem(a, gp, gn, clipped, e);
    }
}

LK_AI void asl_elem(const asl *a, lk_elem *e)
{
    asl_body(a, a->gamma_pos, a->gamma_neg, a->clip > 0.0, 0, 0, e);
}

/* The same for exponents other than 0 to 4 (asl_pick): one pow a vector. */
LK_AI void asl_elem_pow(const asl *a, lk_elem *e)
{
    asl_body(a, a->gamma_pos, a->gamma_neg, a->clip > 0.0, 0, 1, e);
}

/* The timm kernel staged (lk_elementwise_forward_staged3), on float SIMD
 * lanes: stage forms, two vectors ahead, the sigmoid (e, 1 + e and p = 1
 * / (1 + e)); mid, a vector ahead, what the terms need from it (q, p q and
 * what the rounding of 1 + e dropped from log1p(e)), each lane's log and
 * 1 / q_c; finish the terms and their gradient from them. Three shorter chains per trip than
 * two longer ones: the scheduler's window holds about two vectors' work.
 * Unlike the driver's sigmoid (LK_EW_SIGMOID, e = exp(-|x|)) stage takes
 * e = exp(-x) with x clamped below at -87 (e at most 6.1e37, so that 1 + e
 * is finite and its reciprocal normal): then p = 1 / (1 + e) and q = e p
 * on both sides of 0 with neither cancelling, and log p = -log1p(e), with
 * no compare of x and no select between the two sides. The clamp changes
 * p only below x = -87, where p < 1.7e-38 and a target of 1 has its log
 * clamped at eps: its gradient there, p q log(eps), is below 3.1e-37 in
 * magnitude instead of the true p's (at most that, 0 at x = -inf). Both
 * reciprocals (p and 1 / q_c) are divisions: on AVX-512 a division takes
 * two slots of the multiply pipes and the divider for 6 cycles, where the
 * estimate and its Newton step take three of the multiply pipes, which
 * this kernel keeps the busier (bench/pipes); 2.7 % faster, and exact. */
#if defined(LK_LANES_F32) && !defined(LK_TARGET_PORTABLE)
#define ASL_TIMM_FLAGS LK_EW_NONNEG_SUM /* stage forms its own sigmoid */
LK_AI void asl_timm_stage(const asl *a, const lk_elem *e, lk_kept *k)
{
    (void)a;
    lk_v one = lk_set(1.0);
    /* max returns its second operand for NaN: NaN passes */
    lk_v ex = lk_exp_minus(lk_max(lk_set(-87.0), e->x)), w = lk_add(one, ex);
    lk_v r = lk_div(one, w);
    k->v[0] = w;
    k->v[1] = ex;
    k->v[2] = r; /* p */
}

/* mid: q, p q, each lane's log (L, into v[0]) and 1 / q_c (v[5]), as if
 * the targets were 0 or 1; finish checks that they are. */
LK_AI void asl_timm_mid(const asl *a, const lk_elem *e, lk_kept *k)
{
    lk_m pos = lk_eq(e->t, lk_set(1.0));
    lk_v one = lk_set(1.0), ex = k->v[1], w = k->v[0], r = k->v[2];
    lk_v q = lk_mul(ex, r);
    /* -(1 + e - w) / w: log p = -log1p(e) = v[1] - log w */
    k->v[1] = lk_fnma(lk_sub(ex, lk_sub(w, one)), r, lk_zero());
    k->v[3] = q;
    k->v[4] = lk_mul(q, r); /* p q */
    lk_v qc = lk_add(q, lk_set(ASL_C(a, clip)));
    lk_v Lb = lk__f_log_pos(lk_select(pos, k->v[0], qc)); /* positive, finite, normal */
    k->v[0] = lk_max_where(pos, lk_set(ASL_C(a, log_eps)), lk_sub(k->v[1], Lb), Lb);
    k->v[5] = lk_div(lk_set(1.0), qc);
}

/* On AVX-512 the loop runs stage, mid and finish three vectors deep; with
 * AVX2's sixteen registers the third vector's values would be spilled,
 * and finish runs mid itself. */
#if defined(LK_TARGET_AVX512)
#define ASL_TIMM_MID 1
#else
#define ASL_TIMM_MID 0
#endif

LK_AI void asl_timm_finish_g(const asl *a, double gp, const lk_kept *kept, lk_elem *e)
{
#if ASL_TIMM_MID
    const lk_kept *k = kept;
#else
    lk_kept mk = *kept, *k = &mk;
    asl_timm_mid(a, e, k);
#endif
    lk_v y = e->t;
    lk_m pos = lk_eq(y, lk_set(1.0)), neg = lk_eq(y, lk_zero());
    if (lk_all(lk_or(pos, neg))) {
        asl_binary_lean(a, gp, 4.0, pos, neg, k->v[2], k->v[3], k->v[4], k->v[0], k->v[5], e);
    } else {
        asl_soft_elem(a, gp, 4.0, 1, e);
    }
}
#else
#define ASL_TIMM_FLAGS (LK_EW_SIGMOID | LK_EW_NONNEG_SUM)
#define ASL_TIMM_MID   0
LK_AI void asl_timm_stage(const asl *a, const lk_elem *e, lk_kept *k)
{
    (void)a, (void)e, (void)k;
}

LK_AI void asl_timm_finish_g(const asl *a, double gp, const lk_kept *k, lk_elem *e)
{
    (void)k;
    asl_body(a, gp, 4.0, 1, 1, 0, e);
}
#endif

/* timm's gamma_pos = 1, and the paper's gamma_pos = 0 */
LK_AI void asl_timm_finish(const asl *a, const lk_kept *k, lk_elem *e)
{
    asl_timm_finish_g(a, 1.0, k, e);
}

LK_AI void asl_timm0_finish(const asl *a, const lk_kept *k, lk_elem *e)
{
    asl_timm_finish_g(a, 0.0, k, e);
}

static const lk_slot_desc *const asl_slots[] LK__UNUSED = {&cls_logits, &cls_target01, NULL};

LK_KERNELS_ELEMENTWISE(asl_any, asl, asl_elem, LK_EW_UNIT_TARGET | LK_EW_SIGMOID | LK_EW_NONNEG_SUM)
LK_KERNELS_ELEMENTWISE(asl_gpow, asl, asl_elem_pow,
                       LK_EW_UNIT_TARGET | LK_EW_SIGMOID | LK_EW_NONNEG_SUM)
/* The timm family screens its targets itself: a vector of 0s and 1s (the
 * kernel's fast path, which compares them anyway) needs no screen, and
 * the others gather their lanes outside [0, 1] into seen, which fails the
 * block after its pass with the driver's message (the outputs of a refused
 * call are not defined). */
LK_STAGE_PART(asl_timm__stage, asl, asl_timm_stage)
LK_FINISH_PART(asl_timm__finish, asl, asl_timm_finish)
LK_FINISH_PART(asl_timm0__finish, asl, asl_timm0_finish)
#if ASL_TIMM_MID
LK_STAGE_PART(asl_timm__mid, asl, asl_timm_mid)
#else
#define asl_timm__mid NULL
#endif

LK_AI lk_status asl_timm_run(const void *inst, const lk_plan *plan, const lk_block *blk,
                             lk_finish_fn finish, lk_msg *msg)
{
    lk_m seen = lk_first(0);
    asl local = *(const asl *)inst;
    local.seen = &seen;
    lk_status st = lk_elementwise_forward_staged3(&local, plan, blk, asl_timm__stage, asl_timm__mid,
                                                  finish, ASL_TIMM_FLAGS, msg);
    if (st == LK_OK && lk_any(seen)) {
        const lk_tensor *t = &blk->slots[1];
        return lk_first_bad_target(t, blk->begin, blk->end - blk->begin, msg);
    }
    return st;
}

static lk_status asl_timm__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg)
{
    return asl_timm_run(inst, plan, blk, asl_timm__finish, msg);
}

static lk_status asl_timm0__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,
                                lk_msg *msg)
{
    return asl_timm_run(inst, plan, blk, asl_timm0__finish, msg);
}
LK__KSET(asl_timm, asl_timm__fwd, NULL, 0)
LK__FAMILY(asl_timm)
LK__KSET(asl_timm0, asl_timm0__fwd, NULL, 0)
LK__FAMILY(asl_timm0)
LK_LOSS_DESC(asymmetric, asl, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&asl_any__family, &asl_timm__family, &asl_gpow__family,
                         &asl_timm0__family),
             asl_slots, LK_REDUCTIONS_ELEMENTWISE | LK_REDUCTION_BIT(LK_REDUCTION_BATCHMEAN),
             LK_HOOKS(.init = asl_init, .pick = asl_pick),
             .summary = "multilabel asymmetric loss (Ridnik et al. 2021) from logits, as timm's "
                        "AsymmetricLossMultiLabel; sum is timm's value",
             .default_reduction = LK_REDUCTION_SUM, .params = asl_params)
