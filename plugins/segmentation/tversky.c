/* tversky and focal_tversky: TI = (I + s) / max(I + alpha FP + beta FN +
 * s_dr, eps) per (group, class), FP = P - I, FN = T - I. tversky is smp's
 * TverskyLoss, (mean of 1 - TI)^gamma; focal_tversky (Abraham and Khan
 * 2019) the mean of (1 - TI)^gamma. */
#include "overlap.h"

static seg_d tversky_index(const seg *o, seg_d I, seg_d P, double T)
{
    seg_d fp = sd_sub(P, I), fn = sd_sub(sd_c(T), I);
    seg_d den = sd_add(sd_add(I, sd_scale(o->alpha, fp)), sd_scale(o->beta, fn));
    return sd_div(sd_addc(I, o->smooth), sd_max(sd_addc(den, o->smooth_dr), o->eps));
}

static seg_d tversky_pair(const seg *o, seg_d I, seg_d P, double T, double V)
{
    (void)V;
    return sd_sub(sd_c(1.0), tversky_index(o, I, P, T));
}

/* max(1 - TI, 0)^gamma: sd_pow gives 0 and no gradient at 1 - TI <= 0. */
static seg_d focal_tversky_pair(const seg *o, seg_d I, seg_d P, double T, double V)
{
    (void)V;
    return sd_pow(sd_sub(sd_c(1.0), tversky_index(o, I, P, T)), o->gamma);
}

static const seg_kind tversky_kind = {.pair = tversky_pair, .outer_pow = 1};
static const seg_kind focal_tversky_kind = {.pair = focal_tversky_pair};

#define TVERSKY_COMMON                                                                             \
    &seg_p_mode, &seg_p_ignore_index, &seg_p_from_logits, &seg_p_smooth0, &seg_p_smooth_dr,        \
        &seg_p_eps, &seg_p_intersection, &seg_p_classes, &seg_p_include_background,                \
        &seg_p_class_weights, &seg_p_per_sample, &seg_p_empty, &seg_p_alpha, &seg_p_beta

static const lk_param_desc *const tversky_params[] LK__UNUSED = {TVERSKY_COMMON, &seg_p_gamma1,
                                                                  NULL};
static const lk_param_desc *const focal_tversky_params[] LK__UNUSED = {
    TVERSKY_COMMON, &seg_p_gamma075, NULL};

SEG_LOSS(tversky, tversky_kind, tversky_params,
         .summary = "Tversky loss (mean over classes of 1 - TI)^gamma, TI = (I + s) / (I + "
                    "alpha FP + beta FN + s)",
         .version = "1.0.0")
SEG_LOSS(focal_tversky, focal_tversky_kind, focal_tversky_params,
         .summary = "focal Tversky loss: the mean over classes of (1 - TI)^gamma",
         .version = "1.0.0")
