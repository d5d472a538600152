/* plugin.c: the segmentation family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc lovasz_hinge_desc;
extern const lk_loss_desc lovasz_softmax_desc;

LK_PLUGIN("segmentation", "1.0.0",
          "segmentation losses: lovasz_hinge and lovasz_softmax (Lovasz extension of the Jaccard "
          "loss)",
          &lovasz_hinge_desc, &lovasz_softmax_desc)
