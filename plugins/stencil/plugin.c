/* plugin.c: the stencil family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc sobolev_desc;
extern const lk_loss_desc total_variation_desc;
extern const lk_loss_desc ssim_desc;

LK_PLUGIN("stencil", "1.0.0", "losses over neighbouring positions: sobolev, total_variation, ssim",
          &sobolev_desc, &total_variation_desc, &ssim_desc)
