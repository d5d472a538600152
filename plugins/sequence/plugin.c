/* plugin.c: the sequence family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc ctc_desc;

LK_PLUGIN("sequence", "1.0.0",
          "losses over sequences of frames: ctc (connectionist temporal classification)", &ctc_desc)
