/* plugin.c: the segmentation family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc dice_desc, iou_desc, jaccard_desc, tversky_desc, focal_tversky_desc,
    generalized_dice_desc, mcc_desc, lovasz_hinge_desc, lovasz_softmax_desc;

LK_PLUGIN("segmentation", "1.0.0",
          "segmentation losses: dice, iou, tversky, generalized dice, mcc in binary, multiclass "
          "and multilabel modes; the Lovasz hinge and softmax losses",
          &dice_desc, &iou_desc, &jaccard_desc, &tversky_desc, &focal_tversky_desc,
          &generalized_dice_desc, &mcc_desc, &lovasz_hinge_desc, &lovasz_softmax_desc)
