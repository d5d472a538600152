/* bce_with_logits: torch's binary cross-entropy from logits, with an
 * optional per-element weight and pos_weight along the last dimension. */
#include "tutorial.h"

typedef struct bce {
    int64_t n_pw;     /* 0: pos_weight 1 everywhere */
    double pw1;       /* the value when n_pw <= 1 */
    const double *pw; /* n_pw values when n_pw > 1 */
} bce;

static const lk_param_desc bce_pos_weight = {
    .name = "pos_weight",
    .doc = "weight of the positive term: [] for 1, one value for all, or one per "
           "index of the input's last dimension",
    .type = LK_PARAM_NUMBER_LIST,
    .min = 0.0,
    .max = HUGE_VAL,
    .list_max_len = -1,
};

static const lk_param_desc *const bce_params[] LK__UNUSED = {&bce_pos_weight, NULL};

static lk_status bce_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    bce *b = inst;
    b->n_pw = p[0].list ? p[0].list_len : 0;
    b->pw1 = b->n_pw == 1 ? p[0].list[0] : 1.0;
    if (b->n_pw > 1) {
        double *pw = malloc((size_t)b->n_pw * sizeof *pw);
        if (!pw)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld pos_weight values",
                           (long long)b->n_pw);
        memcpy(pw, p[0].list, (size_t)b->n_pw * sizeof *pw);
        b->pw = pw;
    }
    return LK_OK;
}

static void bce_fini(void *inst)
{
    free((void *)((bce *)inst)->pw);
}

static lk_status bce_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    const bce *b = inst;
    const lk_tensor *x = &slots[0];
    int64_t last = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    if (b->n_pw > 1 && b->n_pw != last)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "pos_weight has %lld values but the input's last dimension is %lld; "
                       "give 1 value or %lld",
                       (long long)b->n_pw, (long long)last, (long long)last);
    return LK_OK;
}

LK_AI void bce_elem(const bce *b, lk_elem *e)
{
    lk_sigm p = lk_sigm_of(e->x);
    lk_v L = lk_sigm_log1p(&p);
    if (b->n_pw == 0) { /* pos_weight 1: the same formulas, fewer multiplies */
        e->loss = lk_bce_logits_of1(&p, L, e->t);
        e->grad = lk_sigm_minus_t(&p, e->t);
        return;
    }
    lk_v pw = b->n_pw > 1 ? lk_load_cyclic(b->pw, b->n_pw, e->i) : lk_set(b->pw1);
    e->loss = lk_bce_logits_of(&p, L, e->t, pw);
    e->grad = lk_bce_logits_grad(&p, e->t, pw);
}

LK_ELEMENTWISE_LOSS(bce_with_logits, bce, bce_elem, LK_EW_WEIGHT | LK_EW_UNIT_TARGET,
                    LK_HOOKS(.init = bce_init, .fini = bce_fini, .plan = bce_plan),
                    .summary = "binary cross-entropy from logits, stable, with weight and "
                               "pos_weight",
                    .version = "1.1.0", .params = bce_params, .slots = tut_weighted_logit_slots)
