/* triplet_margin: torch.nn.functional.triplet_margin_loss (torch 1.13), and
 * triplet_margin_with_distance: torch's triplet_margin_with_distance_loss
 * with its distance function named in the config (pairwise_distance, the
 * default, or 1 - cosine_similarity), on anchor, positive and negative of
 * one shape, rows along the last dimension ((N, D), (D,), or any (..., D)
 * as torch takes them):
 *
 *   d(u, v) = || u - v + eps ||_p          (torch's pairwise_distance)
 *   loss = max(0, margin + d(a, p) - d_n),  d_n = d(a, n), or with swap
 *                                           min(d(a, n), d(p, n)).
 *
 * The gradient of a norm: sgn(v) |v|^(p-1) / d^(p-1) per element (v / d
 * for p = 2, sgn(v) for p = 1), 0 where v or d is 0; it flows where
 * margin + d(a, p) - d_n >= 0 (torch's clamp passes it at the kink), and
 * with swap a tie between the two negative distances splits it in halves,
 * as torch's min does. An infinite element has no finite distance: the call
 * is refused (LK_ERR_NUMERIC); a NaN gives NaN.
 *
 * The cosine distance, d(u, v) = 1 - (u . v) / (m_u m_v) with m_u =
 * max(||u||, eps) (torch's cosine_similarity divides each vector by its
 * norm clamped at eps), has the gradient
 *
 *   d d / du = -v / (m_u m_v) + cos u / (m_u ||u||)   (the second term 0
 *                                                      where ||u|| < eps)
 *
 * so that each row's gradients are sums of multiples of a, p and n. */
#include "margin.h"

typedef struct triplet {
    double margin, p, eps;
    int swap;
    int cosine;  /* the distance is 1 - cosine similarity */
    double ceps; /* the floor of its norms */
} triplet;

static const lk_param_desc tm_margin = {
    .name = "margin",
    .doc = "by how much the negative should be farther than the positive",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = -HUGE_VAL,
    .max = HUGE_VAL,
};

static const lk_param_desc tm_p = {
    .name = "p",
    .doc = "the norm's degree",
    .type = LK_PARAM_NUMBER,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
    .default_number = 2.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc tm_eps = {
    .name = "eps",
    .doc = "added to every difference before the norm, as torch's pairwise_distance",
    .type = LK_PARAM_NUMBER,
    .default_number = 1e-6,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc tm_swap = {
    .name = "swap",
    .doc = "use min(d(a, n), d(p, n)) as the negative distance (Balntas et al.'s swap)",
    .type = LK_PARAM_BOOL,
    .default_number = 0.0,
};

static const lk_param_desc *const tm_params[] LK__UNUSED = {&tm_margin, &tm_p, &tm_eps, &tm_swap,
                                                            NULL};

#define TM_SLOT(var, nm, dc, shp)                                                                  \
    static const lk_slot_desc var = {.name = nm,                                                   \
                                     .doc = dc,                                                    \
                                     .dtypes = LK_DTYPES_FLOAT,                                    \
                                     .flags = LK_SLOT_DIFFERENTIABLE,                              \
                                     .shape = shp,                                                 \
                                     .values = LK_VALUES_REAL,                                     \
                                     .ndims = LK_NDIM_FROM(1)};
TM_SLOT(tm_anchor, "anchor", "anchors: rows along the last dimension, (N, D) or (D,)", LK_SHAPE_ANY)
TM_SLOT(tm_positive, "positive", "positives, shaped like anchor", LK_SHAPE_LIKE_INPUT)
TM_SLOT(tm_negative, "negative", "negatives, shaped like anchor", LK_SHAPE_LIKE_INPUT)
static const lk_slot_desc *const tm_slots[] LK__UNUSED = {&tm_anchor, &tm_positive, &tm_negative,
                                                          NULL};

static lk_status tm_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    triplet *t = inst;
    (void)msg;
    t->margin = p[0].number;
    t->p = p[1].number;
    t->eps = p[2].number;
    t->swap = (int)p[3].integer;
    t->cosine = 0, t->ceps = 0.0;
    return LK_OK;
}

/* triplet_margin_with_distance: the distance first, then triplet_margin's
 * parameters, then the cosine's eps. */
static const char *const twd_distances[] = {"pairwise", "cosine", NULL};

static const lk_param_desc twd_distance = {
    .name = "distance",
    .doc = "pairwise: torch's pairwise_distance (the p-norm of u - v + eps, torch's default "
           "distance_function; p and eps apply to it alone); cosine: 1 - "
           "cosine_similarity(u, v) (cosine_eps applies to it alone)",
    .type = LK_PARAM_CHOICE,
    .choices = twd_distances,
    .default_choice = "pairwise",
};

static const lk_param_desc twd_cosine_eps = {
    .name = "cosine_eps",
    .doc = "each norm is clamped at least to it, as torch's cosine_similarity's eps "
           "(distance cosine)",
    .type = LK_PARAM_NUMBER,
    .default_number = 1e-8,
    .min = 0.0,
    .max = HUGE_VAL,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
};

static const lk_param_desc *const twd_params[] LK__UNUSED = {
    &twd_distance, &tm_margin, &tm_p, &tm_eps, &tm_swap, &twd_cosine_eps, NULL};

static lk_status twd_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    triplet *t = inst;
    (void)msg;
    t->cosine = p[0].integer == 1;
    t->margin = p[1].number;
    t->p = p[2].number;
    t->eps = p[3].number;
    t->swap = (int)p[4].integer;
    t->ceps = p[5].number;
    return LK_OK;
}

static lk_status tm_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                         lk_msg *msg)
{
    const lk_tensor *x = &slots[0];
    char sh[192];
    int64_t rows = 1;
    (void)inst, (void)reduction;
    if (x->ndim < 1)
        return lk_fail(msg, LK_ERR_SHAPE, "anchor: shape %s; the triplet losses take rows (..., D)",
                       mg_shape(sh, sizeof sh, x));
    for (int32_t d = 0; d + 1 < x->ndim; d++)
        rows *= x->shape[d];
    mg_rows_plan(plan, rows, x->shape[x->ndim - 1], x->ndim - 1, x->shape, 0);
    return LK_OK;
}

#if MG_ROWS
/* a^g for a >= 0 (or NaN) and a constant g != 0. The double lanes take
 * exp(g log a) from the vector math library's exp and log, about twice as
 * fast as its pow (13 against 29 ns a vector of 8 here), with a relative
 * error of about |g log a| 2^-52 (below 1e-14 while |g log a| < 45): a
 * zero a gives exp(-inf g), 0 or inf as pow, NaN stays NaN. Out of line:
 * inlined, its two library calls made the loops of p = 2 (which never
 * reach them) 5 % slower in float64. */
static __attribute__((noinline)) lk_v tm_pow(lk_v a, double g)
{
#if defined(LK_LANES_F32)
    return lk_pow(a, lk_set(g));
#else
    return lk_exp(lk_mul(lk_set(g), lk_log(a)));
#endif
}

/* p = 1 and 2 (tm_row; other p: tm_row_p). |v|^p summed into a norm's
 * sum. */
LK_AI lk_v tm_term(double p, lk_v v)
{
    return p == 2.0 ? lk_mul(v, v) : lk_abs(v);
}

/* The norm from its sum. */
static inline double tm_norm(double p, double s)
{
    return p == 2.0 ? sqrt(s) : s;
}

/* k times d ||v|| / dv, k = coefficient / d^(p-1) (0 where d is 0). */
LK_AI lk_v tm_dnorm(double p, lk_v v, lk_v k)
{
    return p == 2.0 ? lk_mul(k, v) : lk_mul(k, lk_sign(v));
}

/* coefficient / d^(p-1), 0 where d is 0. */
static inline double tm_k(double p, double c, double d)
{
    if (c == 0.0 || d == 0.0)
        return 0.0;
    return p == 1.0 ? c : c / d;
}

static const char *const tm_names[3] = {"anchor", "positive", "negative"};

/* The message of the first infinite element of the row from base. */
static inline lk_status tm_refuse(const mg_rows *io, int64_t base, lk_msg *msg)
{
    lk_status st = LK_ERR_INTERNAL;
    for (int s = 0; s < 3 && st != LK_ERR_NUMERIC; s++)
        st = mg_refuse_inf(io, tm_names[s], s, base, io->D, msg);
    return st;
}

/* The row's loss max(0, margin + d(a, p) - d_n) into *loss from its three
 * distances (dpn used with swap only); returns c, 1 where the gradient
 * flows (margin + d(a, p) - d_n >= 0: torch's clamp passes it at the kink),
 * and the shares of d(a, n) and d(p, n) in d_n, halves at a tie. */
static inline double tm_hinge(const triplet *tr, double dap, double dan, double dpn, double *loss,
                              double *wan, double *wpn)
{
    double dn = dan;
    *wan = 1.0, *wpn = 0.0;
    if (tr->swap) {
        dn = isnan(dan) || isnan(dpn) ? NAN : dan < dpn ? dan : dpn;
        *wan = dan == dpn ? 0.5 : dan > dpn ? 0.0 : 1.0;
        *wpn = dan == dpn ? 0.5 : dan < dpn ? 0.0 : 1.0;
    }
    const double h = tr->margin + dap - dn;
    *loss = isnan(h) || h > 0.0 ? h : 0.0;
    return h >= 0.0 ? 1.0 : 0.0;
}

/* d(u, v) = 1 - cos and its gradient's multiples: d d / du = au v + bu u,
 * d d / dv = au u + bv v, from the sums uu, vv and uv. */
typedef struct tm_cos {
    double d, a, bu, bv;
} tm_cos;

static inline tm_cos tm_cos_of(double eps, double uu, double vv, double uv)
{
    tm_cos c;
    const double nu = sqrt(uu), nv = sqrt(vv);
    const double mu = nu > eps ? nu : eps, mv = nv > eps ? nv : eps;
    const double cs = uv / (mu * mv);
    c.d = 1.0 - cs;
    c.a = -1.0 / (mu * mv);
    c.bu = nu < eps ? 0.0 : cs / (mu * nu);
    c.bv = nv < eps ? 0.0 : cs / (mv * nv);
    return c;
}

/* The row of the cosine distance: six sums (nine with swap), the loss and
 * its gradient's multiples, then a pass writing a A + p P + n N per
 * slot. */
LK_AI lk_status tm_cos_row(const triplet *tr, const mg_rows *io, int64_t r, double *loss,
                           lk_msg *msg)
{
    const int64_t D = io->D, base = r * D;
    lk_acc saa = lk_acc_zero(), spp = lk_acc_zero(), snn = lk_acc_zero();
    lk_acc sap = lk_acc_zero(), san = lk_acc_zero(), spn = lk_acc_zero();
    lk_m bad = lk_eq(lk_set(1.0), lk_zero());
    for (int64_t j = 0; j < D; j += LK_W) {
        int k = D - j < LK_W ? (int)(D - j) : LK_W;
        lk_v a = mg_ld(io, 0, base + j, k), q = mg_ld(io, 1, base + j, k);
        lk_v n = mg_ld(io, 2, base + j, k);
        lk_acc_add(&saa, lk_mul(a, a));
        lk_acc_add(&spp, lk_mul(q, q));
        lk_acc_add(&snn, lk_mul(n, n));
        lk_acc_add(&sap, lk_mul(a, q));
        lk_acc_add(&san, lk_mul(a, n));
        if (tr->swap)
            lk_acc_add(&spn, lk_mul(q, n));
        bad = lk_or(bad, lk_or(mg_isinf(a), lk_or(mg_isinf(q), mg_isinf(n))));
    }
    if (lk_any(bad))
        return tm_refuse(io, base, msg);
    const double aa = lk_acc_sum(saa), pp = lk_acc_sum(spp), nn = lk_acc_sum(snn);
    const tm_cos cap = tm_cos_of(tr->ceps, aa, pp, lk_acc_sum(sap));
    const tm_cos can = tm_cos_of(tr->ceps, aa, nn, lk_acc_sum(san));
    const tm_cos cpn = tr->swap ? tm_cos_of(tr->ceps, pp, nn, lk_acc_sum(spn)) : (tm_cos){0};
    double wan, wpn;
    const double c = tm_hinge(tr, cap.d, can.d, cpn.d, loss, &wan, &wpn);
    if (!io->want_grad)
        return LK_OK;
    /* loss = c (d(a, p) - wan d(a, n) - wpn d(p, n)) */
    const double kan = -c * wan, kpn = -c * wpn;
    /* the multiples of each slot in each gradient: a cross term (of a in
     * p's gradient, say) is the same in both slots' gradients */
    const lk_v Aa = lk_set(c * cap.bu + kan * can.bu), Pp = lk_set(c * cap.bv + kpn * cpn.bu),
               Nn = lk_set(kan * can.bv + kpn * cpn.bv);
    const lk_v AP = lk_set(c * cap.a), AN = lk_set(kan * can.a), PN = lk_set(kpn * cpn.a);
    for (int64_t j = 0; j < D; j += LK_W) {
        int k = D - j < LK_W ? (int)(D - j) : LK_W;
        lk_v a = mg_ld(io, 0, base + j, k), q = mg_ld(io, 1, base + j, k);
        lk_v n = mg_ld(io, 2, base + j, k);
        mg_put(io, 0, base + j, k, lk_fma(Aa, a, lk_fma(AP, q, lk_mul(AN, n))));
        mg_put(io, 1, base + j, k, lk_fma(AP, a, lk_fma(Pp, q, lk_mul(PN, n))));
        mg_put(io, 2, base + j, k, lk_fma(AN, a, lk_fma(PN, q, lk_mul(Nn, n))));
    }
    return LK_OK;
}

/* The three differences a - p, a - n, p - n (plus eps) of the row's
 * elements j .. j + k, and the elements themselves in s[0..3). */
LK_AI void tm_diffs(const mg_rows *io, int64_t i, int k, lk_v eps, lk_v s[3], lk_v v[3])
{
    for (int t = 0; t < 3; t++)
        s[t] = mg_ld(io, t, i, k);
    v[0] = lk_add(lk_sub(s[0], s[1]), eps);
    v[1] = lk_add(lk_sub(s[0], s[2]), eps);
    v[2] = lk_add(lk_sub(s[1], s[2]), eps);
}

/* One difference's share of tm_row_p's gradient: k sgn(v) |v|^(p-1) (k
 * holding 1 / d^(p-1)), or with scaled k sgn(v) ((|v| / m) / S)^(p-1); 0
 * where v is 0. */
LK_AI lk_v tm_dn(lk_v v, double k, double m, double S, double p, const int scaled)
{
    lk_v av = lk_abs(v);
    if (scaled)
        av = lk_div(lk_div(av, lk_set(m > 0.0 ? m : 1.0)), lk_set(S));
    lk_v w = lk_mul(lk_set(k), lk_mul(lk_sign(v), tm_pow(av, p - 1.0)));
    return lk_clear(lk_eq(v, lk_zero()), w);
}

/* The gradient pass of tm_row_p (the differences named one by one, so
 * that their vectors stay in registers). */
LK_AI void tm_grads_p(const mg_rows *io, int64_t base, lk_v eps, int nd, double p, const double *kc,
                      const double *m, const double *S, const int scaled)
{
    for (int64_t j = 0; j < io->D; j += LK_W) {
        int k = io->D - j < LK_W ? (int)(io->D - j) : LK_W;
        lk_v e[3], v[3], g[3];
        tm_diffs(io, base + j, k, eps, e, v);
        g[0] = tm_dn(v[0], kc[0], m[0], S[0], p, scaled);
        g[1] = tm_dn(v[1], kc[1], m[1], S[1], p, scaled);
        g[2] = nd == 3 ? tm_dn(v[2], kc[2], m[2], S[2], p, scaled) : lk_zero();
        mg_put(io, 0, base + j, k, lk_add(g[0], g[1]));
        mg_put(io, 1, base + j, k, lk_sub(g[2], g[0]));
        mg_put(io, 2, base + j, k, lk_neg(lk_add(g[1], g[2])));
    }
}

/* The row of a p other than 1 and 2. Its norm is (sum |v|^p)^(1/p) and
 * its gradient sgn(v) |v|^(p-1) / d^(p-1), from the sums of the first
 * pass, wherever those are finite and normal (well above the subnormals).
 * Elsewhere the sum overflowed (float lanes from p ln|v| > 88: p = 10 with
 * |v| = 1e4; double from 709) or underflowed where the norm does neither,
 * and its inf - inf would be NaN: that row takes the norm as d = m S, m =
 * max |v| over the row and S = (sum (|v| / m)^p)^(1/p), whose terms lie in
 * [0, 1], one of them 1, so S is in [1, D^(1/p)]; and its gradient as
 * sgn(v) ((|v| / m) / S)^(p-1), a power of a number in [0, 1]. Every factor
 * is finite wherever the norm is; a large p gives the largest |v| (S tends
 * to 1), as the max-norm. Such a row takes two more passes (m, then the
 * scaled sums), and two divisions an element in its gradient. */
LK_AI lk_status tm_row_p(const triplet *tr, const mg_rows *io, int64_t r, double *loss, lk_msg *msg)
{
    const int64_t D = io->D, base = r * D;
    const double p = tr->p;
    const int nd = tr->swap ? 3 : 2; /* the differences a - p, a - n, p - n */
    const lk_v eps = lk_set(tr->eps);
    lk_m bad = lk_eq(lk_set(1.0), lk_zero());
    lk_acc sum[3] = {lk_acc_zero(), lk_acc_zero(), lk_acc_zero()};
    for (int64_t j = 0; j < D; j += LK_W) {
        int k = D - j < LK_W ? (int)(D - j) : LK_W;
        lk_m live = lk_first(k);
        lk_v e[3], v[3];
        tm_diffs(io, base + j, k, eps, e, v);
        lk_acc_add(&sum[0], lk_keep(live, tm_pow(lk_abs(v[0]), p)));
        lk_acc_add(&sum[1], lk_keep(live, tm_pow(lk_abs(v[1]), p)));
        if (nd == 3)
            lk_acc_add(&sum[2], lk_keep(live, tm_pow(lk_abs(v[2]), p)));
        bad = lk_or(bad, lk_or(mg_isinf(e[0]), lk_or(mg_isinf(e[1]), mg_isinf(e[2]))));
    }
    if (lk_any(bad))
        return tm_refuse(io, base, msg);
    double m[3] = {0.0, 0.0, 0.0}, S[3] = {1.0, 1.0, 1.0}, d[3] = {0.0, 0.0, 0.0};
    int scaled = 0;
    for (int i = 0; i < nd; i++) {
        const double si = lk_acc_sum(sum[i]);
        /* NaN where a difference is (its term is); 0 where all are 0 */
        if (isnan(si) || (isfinite(si) && si >= 0x1p-900))
            d[i] = pow(si, 1.0 / p);
        else /* overflowed or underflowed (or every |v| is 0: m says so) */
            scaled = 1;
    }
    if (scaled) { /* every difference of the row, through its m */
        lk_v mx[3] = {lk_zero(), lk_zero(), lk_zero()};
        for (int64_t j = 0; j < D; j += LK_W) {
            int k = D - j < LK_W ? (int)(D - j) : LK_W;
            lk_v e[3], v[3];
            tm_diffs(io, base + j, k, eps, e, v);
            for (int i = 0; i < nd; i++)
                mx[i] = lk_max(mx[i], lk_keep(lk_first(k), lk_abs(v[i])));
        }
        for (int i = 0; i < nd; i++) {
            lk_s t[LK_W];
            lk_store(t, mx[i]);
            for (int l = 0; l < LK_W; l++)
                m[i] = t[l] > m[i] ? t[l] : m[i];
            sum[i] = lk_acc_zero();
        }
        for (int64_t j = 0; j < D; j += LK_W) {
            int k = D - j < LK_W ? (int)(D - j) : LK_W;
            lk_m live = lk_first(k);
            lk_v e[3], v[3];
            tm_diffs(io, base + j, k, eps, e, v);
            for (int i = 0; i < nd; i++)
                if (m[i] > 0.0)
                    lk_acc_add(&sum[i],
                               lk_keep(live, tm_pow(lk_div(lk_abs(v[i]), lk_set(m[i])), p)));
        }
        for (int i = 0; i < nd; i++)
            if (!isnan(d[i]) && m[i] > 0.0)
                S[i] = pow(lk_acc_sum(sum[i]), 1.0 / p), d[i] = m[i] * S[i];
    }
    double wan, wpn;
    const double c = tm_hinge(tr, d[0], d[1], d[2], loss, &wan, &wpn);
    if (!io->want_grad)
        return LK_OK;
    /* d loss / d d(a, p) = c, d loss / d d(a, n) = -c wan, d loss / d d(p, n) = -c wpn; 0
     * where the distance is 0. Unscaled, the coefficient takes 1 / d^(p-1). */
    const double kc[3] = {c, -c * wan, -c * wpn};
    double kv[3];
    for (int i = 0; i < 3; i++) {
        const int live = i < nd && kc[i] != 0.0 && d[i] != 0.0;
        kv[i] = !live ? 0.0 : scaled ? kc[i] : kc[i] * pow(d[i], 1.0 - p);
    }
    /* the two forms in loops of their own (scaled a constant in each) */
    if (scaled)
        tm_grads_p(io, base, eps, nd, p, kv, m, S, 1);
    else
        tm_grads_p(io, base, eps, nd, p, kv, m, S, 0);
    return LK_OK;
}

LK_AI lk_status tm_row(const triplet *tr, const mg_rows *io, int64_t r, double *loss, lk_msg *msg)
{
    if (tr->cosine)
        return tm_cos_row(tr, io, r, loss, msg);
    if (tr->p != 1.0 && tr->p != 2.0)
        return tm_row_p(tr, io, r, loss, msg);
    const int64_t D = io->D, base = r * D;
    const double p = tr->p;
    const lk_v eps = lk_set(tr->eps);
    lk_acc sap = lk_acc_zero(), san = lk_acc_zero(), spn = lk_acc_zero();
    lk_m bad = lk_eq(lk_set(1.0), lk_zero());
    for (int64_t j = 0; j < D; j += LK_W) {
        int k = D - j < LK_W ? (int)(D - j) : LK_W;
        lk_m live = lk_first(k);
        lk_v a = mg_ld(io, 0, base + j, k), q = mg_ld(io, 1, base + j, k);
        lk_v n = mg_ld(io, 2, base + j, k);
        lk_acc_add(&sap, lk_keep(live, tm_term(p, lk_add(lk_sub(a, q), eps))));
        lk_acc_add(&san, lk_keep(live, tm_term(p, lk_add(lk_sub(a, n), eps))));
        if (tr->swap)
            lk_acc_add(&spn, lk_keep(live, tm_term(p, lk_add(lk_sub(q, n), eps))));
        bad = lk_or(bad, lk_or(mg_isinf(a), lk_or(mg_isinf(q), mg_isinf(n))));
    }
    if (lk_any(bad))
        return tm_refuse(io, base, msg);
    const double dap = tm_norm(p, lk_acc_sum(sap)), dan = tm_norm(p, lk_acc_sum(san));
    const double dpn = tr->swap ? tm_norm(p, lk_acc_sum(spn)) : 0.0;
    double wan, wpn;
    const double c = tm_hinge(tr, dap, dan, dpn, loss, &wan, &wpn);
    if (!io->want_grad)
        return LK_OK;
    /* d loss / d d(a, p) = c, d loss / d d(a, n) = -c wan, d loss / d d(p, n) = -c wpn */
    const lk_v kap = lk_set(tm_k(p, c, dap)), kan = lk_set(tm_k(p, -c * wan, dan));
    const lk_v kpn = lk_set(tm_k(p, -c * wpn, dpn));
    for (int64_t j = 0; j < D; j += LK_W) {
        int k = D - j < LK_W ? (int)(D - j) : LK_W;
        lk_v a = mg_ld(io, 0, base + j, k), q = mg_ld(io, 1, base + j, k);
        lk_v n = mg_ld(io, 2, base + j, k);
        lk_v gap = tm_dnorm(p, lk_add(lk_sub(a, q), eps), kap);
        lk_v gan = tm_dnorm(p, lk_add(lk_sub(a, n), eps), kan);
        lk_v gpn = tr->swap ? tm_dnorm(p, lk_add(lk_sub(q, n), eps), kpn) : lk_zero();
        mg_put(io, 0, base + j, k, lk_add(gap, gan));
        mg_put(io, 1, base + j, k, lk_sub(gpn, gap));
        mg_put(io, 2, base + j, k, lk_neg(lk_add(gan, gpn)));
    }
    return LK_OK;
}
#endif

MG_ROW_LOSS(triplet_margin, triplet, tm_row, 3, tm_slots,
            LK_HOOKS(.init = tm_init, .plan = tm_plan),
            .summary = "torch's triplet_margin_loss: max(0, margin + d(a, p) - d(a, n)), "
                       "d the p-norm distance",
            .version = "1.0.0", .params = tm_params)
MG_ROW_LOSS(triplet_margin_with_distance, triplet, tm_row, 3, tm_slots,
            LK_HOOKS(.init = twd_init, .plan = tm_plan),
            .summary = "torch's triplet_margin_with_distance_loss: max(0, margin + d(a, p) - "
                       "d(a, n)), d the pairwise p-norm distance or 1 - cosine similarity",
            .version = "1.0.0", .params = twd_params)
