/* plugin.c: the classification family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc bce_desc, nll_desc, kl_div_desc, multilabel_soft_margin_desc,
    asymmetric_desc;

LK_PLUGIN("classification", "1.0.0",
          "classification losses with torch 1.13's semantics: bce, nll, kl_div, "
          "multilabel_soft_margin, and timm's multilabel asymmetric loss",
          &bce_desc, &nll_desc, &kl_div_desc, &multilabel_soft_margin_desc, &asymmetric_desc)
