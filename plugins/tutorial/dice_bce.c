/* dice_bce: the tutorial's DiceBCELoss, the mean BCE from logits plus dice.
 * Statistics: dice's I, P, T, then the BCE sum and the count. */
#include "tutorial.h"

typedef struct dice_bce {
    double smooth;
} dice_bce;

enum { DB_BCE = 3, DB_COUNT = 4 };

static const lk_param_desc *const dice_bce_params[] LK__UNUSED = {&tut_smooth, NULL};

static lk_status dice_bce_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    ((dice_bce *)inst)->smooth = p[0].number;
    return LK_OK;
}

/* An empty tensor's mean BCE is 0 (a mean over nothing, docs/design.md),
 * where torch gives 0/0 = NaN; the value is then its dice term's. */
static lk_status dice_bce_finalize(const void *inst, const lk_plan *plan, const double *st,
                                   int32_t reduction, double *value, lk_msg *msg)
{
    double bce = st[DB_COUNT] != 0.0 ? st[DB_BCE] / st[DB_COUNT] : 0.0;
    *value = bce + tut_dice_value(((const dice_bce *)inst)->smooth, st);
    return LK_OK;
}

LK_AI void dice_bce_stats(const dice_bce *d, lk_elem *e, lk_v *s)
{
    (void)d;
    lk_sigm p = e->sig; /* from the driver, a vector ahead (LK_EW_SIGMOID) */
    tut_overlap_stats(&p, e->t, s);
    s[DB_BCE] = lk_bce_logits_of1(&p, e->sig_L, e->t);
    s[DB_COUNT] = lk_set(1.0);
}

/* k = dice's {N, D, 1 / D^2}, then 1 / n. */
static void dice_bce_consts(const void *inst, const double *g, double *k)
{
    tut_dice_consts(((const dice_bce *)inst)->smooth, g, k);
    k[3] = g[DB_COUNT] != 0.0 ? 1.0 / g[DB_COUNT] : 0.0;
}

LK_AI void dice_bce_grad(const dice_bce *d, const lk_v *k, lk_elem *e)
{
    (void)d;
    lk_sigm p = e->sig;
    e->grad = lk_fma(lk_sigm_minus_t(&p, e->t), k[3], tut_dice_grad(&p, k, e->t));
}

LK_STATS_LOSS(dice_bce, dice_bce, 5, dice_bce_stats, dice_bce_consts, dice_bce_grad,
              LK_EW_UNIT_TARGET | LK_EW_SIGMOID, LK_HOOKS(.init = dice_bce_init, .finalize = dice_bce_finalize),
              .summary = "the tutorial's DiceBCELoss: mean BCE from logits + dice",
              .version = "1.1.0", .params = dice_bce_params, .slots = tut_logit_slots)
