/* generalized_dice: MONAI's GeneralizedDiceLoss (Sudre et al. 2017), per
 * group L = 1 - (2 sum_c w_c I_c + s) / max(sum_c w_c (P_c + T_c) + s_dr,
 * eps) with w_c = 1 / T_c^2, 1 / T_c or 1 from the target (constants: no
 * gradient flows through them); an infinite w_c (an empty class) becomes
 * the group's largest finite one, and a group whose classes are all empty
 * scores 0. The mean over groups (per sample by default, as MONAI). */
#include "overlap.h"

static double gd_weight(const seg *o, double T)
{
    return o->weight_type == SEG_UNIFORM  ? 1.0
           : o->weight_type == SEG_SIMPLE ? 1.0 / T
                                          : 1.0 / (T * T);
}

static double gd_group(const seg *o, const double *st, int64_t C, const int *taken, double *coef)
{
    const double *I = st + SEG_I * C, *P = st + SEG_P * C, *T = st + SEG_T * C;
    double wmax = 0.0, num = 0.0, den = 0.0;
    int any = 0;
    for (int64_t c = 0; c < C; c++) {
        if (!taken[c] || T[c] == 0.0)
            continue;
        double w = gd_weight(o, T[c]);
        any = 1;
        if (isfinite(w) && w > wmax)
            wmax = w;
    }
    if (!any)
        return 0.0;
    for (int64_t c = 0; c < C; c++) {
        if (!taken[c])
            continue;
        double w = T[c] == 0.0 && o->weight_type != SEG_UNIFORM ? wmax : gd_weight(o, T[c]);
        w = isfinite(w) ? w : wmax;
        num += taken[c] * w * I[c];
        den += taken[c] * w * (P[c] + T[c]);
    }
    num = 2.0 * num + o->smooth;
    den += o->smooth_dr;
    /* max(den, eps) as torch's clamp_min: a NaN denominator (a NaN input)
     * stays NaN, and so does every coefficient */
    int floored = den < o->eps;
    if (floored)
        den = o->eps;
    for (int64_t c = 0; coef && c < C; c++) {
        if (!taken[c])
            continue;
        double w = T[c] == 0.0 && o->weight_type != SEG_UNIFORM ? wmax : gd_weight(o, T[c]);
        w = isfinite(w) ? w : wmax;
        coef[2 * c] = -2.0 * taken[c] * w / den;
        coef[2 * c + 1] = floored ? 0.0 : num * taken[c] * w / (den * den);
    }
    return 1.0 - num / den;
}

static const seg_kind gd_kind = {.group = gd_group};

static const lk_param_desc *const generalized_dice_params[] LK__UNUSED = {
    &seg_p_mode, &seg_p_ignore_index, &seg_p_from_logits, &seg_p_smooth_gd, &seg_p_smooth_dr,
    &seg_p_eps, &seg_p_intersection, &seg_p_classes, &seg_p_include_background,
    &seg_p_per_sample_true, &seg_p_weight_type, NULL};

SEG_LOSS(generalized_dice, gd_kind, generalized_dice_params,
         .summary = "generalized Dice loss (MONAI): class weights 1 / T^2 from the target, one "
                    "score per sample",
         .version = "1.0.0")
