/* dice: 1 - (2 I + s) / max(P + T + s_dr, eps) per (group, class), the
 * tutorial's DiceLoss in its default binary mode, smp's DiceLoss and
 * MONAI's DiceLoss through the shared options (overlap.h). */
#include "overlap.h"

static seg_d dice_pair(const seg *o, seg_d I, seg_d P, double T, double V)
{
    (void)V;
    seg_d score = sd_div(sd_addc(sd_scale(2.0, I), o->smooth),
                         sd_max(sd_addc(P, T + o->smooth_dr), o->eps));
    return o->log_loss ? sd_scale(-1.0, sd_log(sd_max(score, o->eps)))
                       : sd_sub(sd_c(1.0), score);
}

static const seg_kind dice_kind = {.pair = dice_pair};

static const lk_param_desc *const dice_params[] LK__UNUSED = {
    &seg_p_smooth1, &seg_p_mode, &seg_p_ignore_index, &seg_p_from_logits,
    &seg_p_smooth_dr, &seg_p_eps, &seg_p_intersection, &seg_p_classes,
    &seg_p_include_background, &seg_p_class_weights, &seg_p_per_sample, &seg_p_empty,
    &seg_p_log_loss, &seg_p_squared_pred, NULL};

SEG_LOSS(dice, dice_kind, dice_params,
         .summary = "Dice loss 1 - (2 I + s) / (P + T + s) with p = sigmoid or softmax; binary, "
                    "multiclass and multilabel modes",
         .version = "2.0.0")
