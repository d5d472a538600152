/* mse: (x - t)^2 on raw predictions, the tutorial's my_loss. */
#include "losskit/loss.h"

LK_AI void mse_elem(const lk_none *m, lk_elem *e)
{
    (void)m;
    lk_v d = lk_sub(e->x, e->t);
    e->loss = lk_mul(d, d);
    e->grad = lk_add(d, d);
}

LK_ELEMENTWISE_LOSS(mse, lk_none, mse_elem, LK_EW_WEIGHT, LK_HOOKS(0),
                    .summary = "mean squared error (x - t)^2 on raw inputs, the tutorial's my_loss",
                    .version = "1.1.0")
