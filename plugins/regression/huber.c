/* huber: torch's Huber loss, 0.5 d^2 where |d| <= delta and
 * delta (|d| - 0.5 delta) elsewhere, d = x - t. */
#include "regression.h"

typedef struct huber {
    double delta, half_delta;
} huber;

static const lk_param_desc huber_delta = {
    .name = "delta",
    .doc = "where the loss turns from quadratic to linear",
    .type = LK_PARAM_NUMBER,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc *const huber_params[] LK__UNUSED = {&huber_delta, NULL};

static lk_status huber_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    huber *h = inst;
    h->delta = p[0].number;
    h->half_delta = 0.5 * h->delta;
    return LK_OK;
}

LK_AI void huber_elem(const huber *h, lk_elem *e)
{
    lk_v d = lk_sub(e->x, e->t), a = lk_abs(d), k = lk_set(h->delta);
    lk_m in = lk_lt(a, k);
    e->loss = lk_select(in, lk_mul(lk_mul(lk_set(0.5), d), d),
                        lk_mul(k, lk_sub(a, lk_set(h->half_delta))));
    e->grad = lk_select(in, d, lk_mul(k, lk_sign(d)));
}

LK_ELEMENTWISE_LOSS(huber, huber, huber_elem, LK_EW_WEIGHT, LK_HOOKS(.init = huber_init),
                    .summary = "Huber loss (torch's huber_loss)", .params = huber_params,
                    .slots = reg_slots)
