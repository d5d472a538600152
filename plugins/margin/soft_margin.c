/* soft_margin: torch.nn.functional.soft_margin_loss (torch 1.13),
 *
 *   loss = log(1 + exp(-t x)),   d loss / dx = -t sigmoid(-t x),
 *
 * written as softplus(z), z = -t x, with one exp of -|z|: finite wherever
 * the loss is (torch's exp(-t x) overflows to inf for t x below about -710
 * in float64 and -88 in float32). A label of 0 gives log 2 and a zero
 * gradient even where x is infinite. */
#include "margin.h"

LK_AI void soft_margin_elem(const lk_none *n, lk_elem *e)
{
    (void)n;
    lk_v z = lk_neg(lk_mul0(e->t, e->x));
    lk_sigm p = lk_sigm_of(z);
    e->loss = lk_softplus_of(z, lk_sigm_log1p(&p));
    e->grad = lk_neg(lk_mul(e->t, lk_sigm_p(&p)));
}

LK_ELEMENTWISE_LOSS(soft_margin, lk_none, soft_margin_elem, 0, LK_HOOKS(0),
                    .summary = "torch's soft_margin_loss: log(1 + exp(-t x)), stable",
                    .version = "1.0.0", .slots = mg_sign_slots)
