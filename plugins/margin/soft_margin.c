/* soft_margin: torch.nn.functional.soft_margin_loss (torch 1.13),
 *
 *   loss = log(1 + exp(-t x)),   d loss / dx = -t sigmoid(-t x),
 *
 * written as softplus(z), z = -t x, with one exp of -|z|: finite wherever
 * the loss is (torch's exp(-t x) overflows to inf for t x below about -710
 * in float64 and -88 in float32). A label of 0 gives log 2 and a zero
 * gradient even where x is infinite. */
#include "margin.h"

/* Every term, max(z, 0) + log1p(e), is >= 0: the float lanes sum them in
 * groups (LK_EW_NONNEG_SUM).
 *
 * Three deep (LK_KERNELS_ELEMENTWISE_STAGED3): the exp two vectors ahead,
 * the reciprocal and log1p(e) one ahead, the loss and gradient on this
 * one, so that the three short chains of three vectors overlap. */
LK_AI lk_v soft_margin_z(const lk_elem *e)
{
    return lk_neg(lk_mul0(e->t, e->x));
}

LK_AI void soft_margin_stage(const lk_none *n, const lk_elem *e, lk_kept *k)
{
    (void)n;
    k->v[0] = lk_exp_minus(lk_abs(soft_margin_z(e)));
}

LK_AI void soft_margin_mid(const lk_none *n, const lk_elem *e, lk_kept *k)
{
    (void)n, (void)e;
    lk_sigm p = {lk_zero(), k->v[0], lk__recip_fast(lk_add(lk_set(1.0), k->v[0])), lk_first(0)};
    k->v[1] = p.r;
    k->v[2] = lk_sigm_log1p(&p);
}

LK_AI void soft_margin_finish(const lk_none *n, const lk_kept *k, lk_elem *e)
{
    (void)n;
    lk_v z = soft_margin_z(e), r = k->v[1];
    e->loss = lk_softplus_of(z, k->v[2]);
    /* sigmoid(z): r where z >= 0, e r below (-0 gives e r = r), chosen by
     * z's sign bit rather than a compare */
    e->grad = lk_neg(lk_mul(e->t, lk_select_neg(z, lk_mul(k->v[0], r), r)));
}

LK_KERNELS_ELEMENTWISE_STAGED3(soft_margin, lk_none, soft_margin_stage, soft_margin_mid,
                               soft_margin_finish, LK_EW_NONNEG_SUM)
LK_LOSS_DESC(soft_margin, lk_none, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&soft_margin__family),
             mg_sign_slots, LK_REDUCTIONS_ELEMENTWISE, LK_HOOKS(0),
             .summary = "torch's soft_margin_loss: log(1 + exp(-t x)), stable",
             .version = "1.0.0")
