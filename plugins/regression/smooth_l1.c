/* smooth_l1: torch's smooth L1 loss, 0.5 d^2 / beta where |d| < beta and
 * |d| - 0.5 beta elsewhere, d = x - t. beta = 0 is exactly L1. */
#include "regression.h"

typedef struct smooth_l1 {
    double beta, half_beta;
    double inv_beta; /* 1 / beta where d / beta = d (1 / beta) exactly, else 0 */
} smooth_l1;

static const lk_param_desc smooth_l1_beta = {
    .name = "beta",
    .doc = "where the loss turns from quadratic to linear; 0 is L1",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};

static const lk_param_desc *const smooth_l1_params[] LK__UNUSED = {&smooth_l1_beta, NULL};

static lk_status smooth_l1_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    (void)msg;
    smooth_l1 *s = inst;
    s->beta = p[0].number;
    s->half_beta = 0.5 * s->beta;
    /* beta a power of two whose reciprocal is a normal float: d / beta and
     * d (1 / beta) are the same exact quotient, rounded once, in float and
     * double lanes alike */
    int e2;
    s->inv_beta = frexp(s->beta, &e2) == 0.5 && e2 >= -100 && e2 <= 100 ? 1.0 / s->beta : 0.0;
    return LK_OK;
}

/* |d| < beta is never true for beta = 0, so that case is L1 with the
 * gradient sign(d) (0 at d = 0); the lanes that divided by 0 are not
 * selected. d / beta as torch computes it: a tiny beta whose reciprocal
 * overflows stays exact. A power of two (the default 1) multiplies by its
 * reciprocal instead, the same number: a vector division costs as much as
 * the rest of the element, and the loss would no longer run at the speed
 * of memory. */
LK_AI void smooth_l1_elem(const smooth_l1 *s, lk_elem *e)
{
    lk_v d = lk_sub(e->x, e->t), a = lk_abs(d);
    lk_m in = lk_lt(a, lk_set(s->beta));
    lk_v db = s->inv_beta != 0.0 ? lk_mul(d, lk_set(s->inv_beta)) : lk_div(d, lk_set(s->beta));
    e->loss = lk_select(in, lk_mul(lk_mul(lk_set(0.5), d), db), lk_sub(a, lk_set(s->half_beta)));
    e->grad = lk_select(in, db, lk_sign(d));
}

LK_ELEMENTWISE_LOSS(smooth_l1, smooth_l1, smooth_l1_elem, LK_EW_WEIGHT,
                    LK_HOOKS(.init = smooth_l1_init),
                    .summary = "smooth L1 loss (torch's smooth_l1_loss), beta = 0 is L1",
                    .params = smooth_l1_params, .slots = reg_slots)
