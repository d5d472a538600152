/* l1: |x - t|, gradient sign(x - t), 0 at 0 (NaN stays NaN). */
#include "losskit/loss.h"

LK_AI void l1_elem(const lk_none *p, lk_elem *e)
{
    (void)p;
    lk_v d = lk_sub(e->x, e->t);
    e->loss = lk_abs(d);
    e->grad = lk_sign(d);
}

LK_ELEMENTWISE_LOSS(l1, lk_none, l1_elem, LK_EW_WEIGHT, LK_HOOKS(0),
                    .summary = "mean absolute error |x - t| on raw inputs", .version = "1.1.0")
