/* plugin.c: the regression family's entry point. */
#include "losskit/loss.h"

extern const lk_loss_desc smooth_l1_desc, huber_desc, log_cosh_desc, poisson_nll_desc, robust_desc,
    gaussian_nll_desc;

LK_PLUGIN("regression", "1.0.0",
          "regression losses: smooth_l1, huber, log_cosh, poisson_nll, robust, gaussian_nll",
          &smooth_l1_desc, &huber_desc, &log_cosh_desc, &poisson_nll_desc, &robust_desc,
          &gaussian_nll_desc)
