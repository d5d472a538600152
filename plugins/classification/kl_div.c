/* kl_div: torch.nn.functional.kl_div (torch 1.13), the input being
 * log-probabilities log q:
 *
 *   log_target false:  loss = t (log t - x),       d loss / dx = -t
 *   log_target true:   loss = e^t (t - x),         d loss / dx = -e^t
 *
 * A target probability of 0 contributes exactly 0 (torch's xlogy(t, t)),
 * even where x = -inf (torch gives NaN there, from 0 * -inf). Reductions
 * none, mean (over elements), sum and batchmean (the sum over dim 0's
 * size, the KL divergence per sample); the host does those divisions. An
 * input of +inf is not a log-probability: refused, since it would give
 * -inf, and NaN beside a +inf. */
#include "classification.h"

typedef struct kl_div {
    int log_target;
} kl_div;

static const lk_param_desc kl_log_target = {
    .name = "log_target",
    .doc = "the target holds log-probabilities rather than probabilities",
    .type = LK_PARAM_BOOL,
    .default_number = 0.0,
};

static const lk_param_desc *const kl_params[] LK__UNUSED = {&kl_log_target, NULL};

static lk_status kl_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    ((kl_div *)inst)->log_target = p[0].integer != 0;
    return LK_OK;
}

static int kl_pick(const void *inst)
{
    return ((const kl_div *)inst)->log_target;
}

LK_AI void kl_prob_elem(const kl_div *k, lk_elem *e)
{
    (void)k;
    /* t = 0 gives 0 (the log sees 1 there: a log of 0 would send the vector
     * math down its slow path); t < 0 gives NaN, as xlogy */
    lk_v lt = lk_log(lk_select(lk_eq(e->t, lk_zero()), lk_set(1.0), e->t));
    e->loss = lk_mul0(e->t, lk_sub(lt, e->x));
    e->grad = lk_neg(e->t);
}

/* The lanes of kl_log_elem where e^t is 0 (t = -inf, or so small that e^t
 * underflows): a target of -inf contributes 0 whatever x (NaN included);
 * t - x = +inf (x = -inf) gives +inf beside a finite t; a NaN x stays NaN
 * and a finite one gives 0 (as p d already does). Rare: out of the hot
 * path's way. */
static __attribute__((noinline)) lk_v kl_log_zero(lk_v t, lk_v d, lk_v l)
{
    l = lk_select(lk_eq(d, lk_set(HUGE_VAL)), d, l);
    return lk_clear(lk_eq(t, lk_set(-HUGE_VAL)), l);
}

LK_AI void kl_log_elem(const kl_div *k, lk_elem *e)
{
    (void)k;
    lk_v p = lk_exp(e->t), d = lk_sub(e->t, e->x), l = lk_mul(p, d);
    if (lk_any(lk_eq(p, lk_zero())))
        l = kl_log_zero(e->t, d, l);
    e->loss = l;
    e->grad = lk_neg(p);
}

static const lk_slot_desc kl_input = {
    .name = "input",
    .doc = "log-probabilities log q, any shape (+inf refused)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
};

static const lk_slot_desc kl_target = {
    .name = "target",
    .doc = "probabilities p (log-probabilities with log_target), shaped like input; not "
           "differentiable",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_UNIT,
};

static const lk_slot_desc *const kl_slots[] LK__UNUSED = {&kl_input, &kl_target, NULL};

CLS_KERNELS_ELEMENTWISE_CHECKED(kl_prob, kl_div, kl_prob_elem, 0, cls_bad_logprob, 0, "kl_div")
CLS_KERNELS_ELEMENTWISE_CHECKED(kl_log, kl_div, kl_log_elem, 0, cls_bad_logprob, 0, "kl_div")
LK_LOSS_DESC(kl_div, kl_div, LK_LOSS_FUSED, NULL, NULL,
             LK_FAMILIES(&kl_prob__family, &kl_log__family), kl_slots,
             LK_REDUCTIONS_ELEMENTWISE | LK_REDUCTION_BIT(LK_REDUCTION_BATCHMEAN),
             LK_HOOKS(.init = kl_init, .pick = kl_pick),
             .summary = "torch.nn.functional.kl_div: pointwise KL t (log t - x) on "
                        "log-probabilities x, log_target, reduction batchmean",
             .params = kl_params)
