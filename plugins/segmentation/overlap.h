/* overlap.h: what the segmentation family's overlap losses share (dice,
 * iou, tversky, focal_tversky, generalized_dice, mcc). Private to the
 * family.
 *
 * Every overlap loss is a function of four sums per (group, class): I =
 * sum p t (or sum min(p, t)), P = sum p (or p^2), T = sum t (or t^2) and V,
 * the count of elements that are not ignored. The kernels (overlap.c) only
 * form these sums and, in backward, d value / d p = dI I'(p, t) + dP P'(p)
 * chained through the sigmoid or softmax; they know nothing of the loss.
 * A loss is its per-pair formula L(I, P, T, V), written once on duals that
 * carry d/dI and d/dP, so the value and the gradient's two coefficients per
 * pair come from the same expression (seg_eval). generalized_dice, whose
 * pairs are not independent, gives a per-group formula instead.
 *
 * Statistics layout: stat j of (group g, class c) at g 4C + j C + c (the
 * class driver's stat-major layout, one block of 4C per group). */
#ifndef LOSSKIT_SEG_OVERLAP_H
#define LOSSKIT_SEG_OVERLAP_H

#include "losskit/classes.h"

enum { SEG_I, SEG_P, SEG_T, SEG_V, SEG_NSTAT };
enum { SEG_BINARY, SEG_MULTICLASS, SEG_MULTILABEL };
enum { SEG_SCORE, SEG_ZERO, SEG_SKIP };
enum { SEG_SQUARE, SEG_SIMPLE, SEG_UNIFORM };
/* The kernel families, in LK_FAMILIES order: lanes per element (binary,
 * multilabel), the class driver (multiclass softmax with product sums),
 * scalar double code (the other multiclass forms); and seg_ew in double
 * lanes whatever the data, for mcc, whose gradient float lanes would leave
 * with too few digits (a small difference of large terms). */
enum { SEG_FAM_EW, SEG_FAM_MC, SEG_FAM_SC, SEG_FAM_EW64 };
/* plan->aux beyond the class driver's four */
enum { SEG_AUX_G = 4, SEG_AUX_PER = 5, SEG_AUX_FAM = 6 };

/* A value with its derivatives by I and by P. */
typedef struct seg_d {
    double v, i, p;
} seg_d;

static inline seg_d sd_c(double v)
{
    seg_d r = {v, 0.0, 0.0};
    return r;
}
static inline seg_d sd_add(seg_d a, seg_d b)
{
    seg_d r = {a.v + b.v, a.i + b.i, a.p + b.p};
    return r;
}
static inline seg_d sd_sub(seg_d a, seg_d b)
{
    seg_d r = {a.v - b.v, a.i - b.i, a.p - b.p};
    return r;
}
static inline seg_d sd_scale(double k, seg_d a)
{
    seg_d r = {k * a.v, k * a.i, k * a.p};
    return r;
}
static inline seg_d sd_addc(seg_d a, double k)
{
    a.v += k;
    return a;
}
static inline seg_d sd_mul(seg_d a, seg_d b)
{
    seg_d r = {a.v * b.v, a.i * b.v + a.v * b.i, a.p * b.v + a.v * b.p};
    return r;
}
static inline seg_d sd_div(seg_d a, seg_d b)
{
    double q = a.v / b.v;
    seg_d r = {q, (a.i - q * b.i) / b.v, (a.p - q * b.p) / b.v};
    return r;
}
/* max(a, k): below k the constant k, as torch's clamp_min (no gradient);
 * NaN stays NaN, as there. */
static inline seg_d sd_max(seg_d a, double k)
{
    return a.v >= k || isnan(a.v) ? a : sd_c(k);
}
static inline seg_d sd_log(seg_d a)
{
    seg_d r = {log(a.v), a.i / a.v, a.p / a.v};
    return r;
}
static inline seg_d sd_sqrt(seg_d a)
{
    double s = sqrt(a.v);
    seg_d r = {s, 0.5 * a.i / s, 0.5 * a.p / s};
    return r;
}
/* a^g for a > 0; 0 with no gradient at a <= 0; NaN for NaN. */
static inline seg_d sd_pow(seg_d a, double g)
{
    if (isnan(a.v)) {
        seg_d r = {a.v, a.v, a.v};
        return r;
    }
    if (!(a.v > 0.0))
        return sd_c(0.0);
    double d = g * pow(a.v, g - 1.0);
    seg_d r = {pow(a.v, g), d * a.i, d * a.p};
    return r;
}

typedef struct seg seg;

/* What distinguishes one overlap loss from another. */
typedef struct seg_kind {
    /* L of one (group, class) pair; I and P arrive as duals. */
    seg_d (*pair)(const seg *o, seg_d I, seg_d P, double T, double V);
    /* Instead of pair: the loss of group g from its statistics st (4C),
     * taken[c] how many times class c is taken (0: not at all; a class
     * listed twice in classes counts twice, as smp's loss[classes]); writes
     * d L_g / d I_c and / d P_c into coef[2c], coef[2c + 1] when coef is
     * not NULL. */
    double (*group)(const seg *o, const double *st, int64_t C, const int *taken, double *coef);
    /* After the weighted mean m over pairs: value = m^outer_pow (tversky's
     * gamma) when set. */
    int outer_pow;
    int no_multiclass; /* mcc */
    int double_lanes;  /* always double lanes (mcc) */
} seg_kind;

/* The instance of every overlap loss. */
struct seg {
    const seg_kind *kind;
    int mode, from_logits, per_sample, min_i, squared, empty, log_loss, include_bg;
    int has_ignore, weight_type, double_lanes;
    int64_t ignore;     /* with has_ignore */
    int64_t idx_ignore; /* the class index that counts nowhere: ignore, or -100 when unset */
    double smooth, smooth_dr, eps, alpha, beta, gamma;
    int64_t *classes; /* NULL: all (or all but 0 without include_background) */
    int n_classes;
    double *weights; /* NULL: uniform */
    int n_weights;
};

/* The parameters, one descriptor per default. */
extern const lk_param_desc seg_p_mode, seg_p_from_logits, seg_p_ignore_index, seg_p_classes,
    seg_p_include_background, seg_p_per_sample, seg_p_per_sample_true, seg_p_class_weights,
    seg_p_smooth1, seg_p_smooth0, seg_p_smooth_gd, seg_p_smooth_dr, seg_p_eps, seg_p_eps_mcc,
    seg_p_intersection, seg_p_empty, seg_p_log_loss, seg_p_squared_pred, seg_p_alpha, seg_p_beta,
    seg_p_gamma1, seg_p_gamma075, seg_p_weight_type;

extern const lk_slot_desc *const seg_slots[];
extern const lk_kfamily seg_ew_family, seg_mc_family, seg_sc_family, seg_ew64_family;

/* Fills o from the loss's parameter list (descs, in declaration order). */
lk_status seg_init(seg *o, const seg_kind *kind, const lk_param_desc *const *descs,
                   const lk_param_value *p, lk_msg *msg);
void seg_fini(void *inst);
int seg_pick(const void *inst);
lk_status seg_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                   lk_msg *msg);
lk_status seg_finalize(const void *inst, const lk_plan *plan, const double *stats,
                       int32_t reduction, double *value, lk_msg *msg);
/* The value from the combined statistics, and with coef (2 G C doubles)
 * d value / d I and d value / d P of every (group, class). Returns -1 (and
 * sets nothing) when out of memory. */
int seg_eval(const seg *o, const lk_plan *plan, const double *st, double *coef, double *value);
/* Split evaluation (ABI 1.5): the two sums the value is formed from, which
 * add across processes. */
lk_status seg_partials(const void *inst, const lk_plan *plan, const double *stats, double *partials,
                       lk_msg *msg);

/* The descriptor of an overlap loss: its id, kind, parameter list and
 * summary. */
#define SEG_LOSS(lid, kind_, params_, ...)                                                         \
    static lk_status lid##_init(void *inst, const lk_param_value *p, lk_msg *msg)                  \
    {                                                                                              \
        return seg_init((seg *)inst, &(kind_), params_, p, msg);                                   \
    }                                                                                              \
    LK_LOSS_DESC(lid, seg, 0, lid##__finalize, lid##__backward,                                    \
                 LK_FAMILIES(&seg_ew_family, &seg_mc_family, &seg_sc_family, &seg_ew64_family),    \
                 seg_slots, LK_REDUCTION_BIT(LK_REDUCTION_MEAN),                                   \
                 LK_HOOKS(.init = lid##_init, .fini = seg_fini, .plan = seg_plan,                  \
                          .finalize = seg_finalize, .pick = seg_pick, .partials = seg_partials),   \
                 .params = params_, __VA_ARGS__)

#endif /* LOSSKIT_SEG_OVERLAP_H */
