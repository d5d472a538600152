/* plugin.c: the torch family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc cross_entropy_desc;

LK_PLUGIN("torch", "1.0.0",
          "losses of torch.nn.functional with PyTorch's exact semantics: cross_entropy",
          &cross_entropy_desc)
