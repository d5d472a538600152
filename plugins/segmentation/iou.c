/* iou (also jaccard): 1 - (I + s) / max(P + T - I + s_dr, eps) per (group,
 * class): the tutorial's IoULoss in its default binary mode, smp's
 * JaccardLoss through the shared options (overlap.h). */
#include "overlap.h"

static seg_d iou_pair(const seg *o, seg_d I, seg_d P, double T, double V)
{
    (void)V;
    seg_d score =
        sd_div(sd_addc(I, o->smooth), sd_max(sd_addc(sd_sub(P, I), T + o->smooth_dr), o->eps));
    return o->log_loss ? sd_scale(-1.0, sd_log(sd_max(score, o->eps)))
                       : sd_sub(sd_c(1.0), score);
}

static const seg_kind iou_kind = {.pair = iou_pair};

static const lk_param_desc *const iou_params[] LK__UNUSED = {
    &seg_p_smooth1, &seg_p_mode, &seg_p_ignore_index, &seg_p_from_logits, &seg_p_smooth_dr,
    &seg_p_eps, &seg_p_intersection, &seg_p_classes, &seg_p_include_background,
    &seg_p_class_weights, &seg_p_per_sample, &seg_p_empty, &seg_p_log_loss, NULL};

SEG_LOSS(iou, iou_kind, iou_params,
         .summary = "IoU (Jaccard) loss 1 - (I + s) / (P + T - I + s); binary, multiclass and "
                    "multilabel modes",
         .version = "2.0.0")
SEG_LOSS(jaccard, iou_kind, iou_params,
         .summary = "the Jaccard loss: iou under smp's name (the same loss and parameters)",
         .version = "2.0.0")
