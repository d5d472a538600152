/* plugin.c: the tutorial family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc mse_desc, l1_desc, bce_with_logits_desc, dice_bce_desc, focal_desc,
    focal_mean_bce_desc;

LK_PLUGIN("tutorial", "1.2.0",
          "the losses of the custom-loss tutorial: mse, l1, bce, dice_bce, focal (its dice and iou "
          "are in the segmentation family)",
          &mse_desc, &l1_desc, &bce_with_logits_desc, &dice_bce_desc, &focal_desc,
          &focal_mean_bce_desc)
