/* plugin.c: the contrastive family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc ntxent_desc;
extern const lk_loss_desc supcon_desc;

LK_PLUGIN("contrastive", "1.0.0",
          "whole-batch contrastive losses on embeddings: ntxent (SimCLR), supcon (Khosla et al.)",
          &ntxent_desc, &supcon_desc)
