/* plugin.c: the margin family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc hinge_embedding_desc, soft_margin_desc, margin_ranking_desc,
    multi_margin_desc, multilabel_margin_desc, cosine_embedding_desc, triplet_margin_desc,
    triplet_margin_with_distance_desc;

LK_PLUGIN("margin", "1.0.0",
          "torch's margin and embedding losses: hinge_embedding, soft_margin, multilabel_margin, "
          "multi_margin, margin_ranking, cosine_embedding, triplet_margin, "
          "triplet_margin_with_distance",
          &hinge_embedding_desc, &soft_margin_desc, &margin_ranking_desc, &multi_margin_desc,
          &multilabel_margin_desc, &cosine_embedding_desc, &triplet_margin_desc,
          &triplet_margin_with_distance_desc)
