/* tutorial.h: what the files of the tutorial family share. Private: nothing
 * here is exported (the family builds with -fvisibility=hidden).
 *
 * Every kernel works on chunks of TUT_CHUNK positions: the chunk's input,
 * target and weight are first converted to double (one dtype switch per
 * chunk, not per element), a dtype-free loop computes losses, gradients or
 * statistics, and the results are stored back in the caller's dtype. The
 * dtype-free loops are what a later vectorisation works on. */
#ifndef LOSSKIT_TUTORIAL_H
#define LOSSKIT_TUTORIAL_H

#include <math.h>
#include <stdint.h>

#include "losskit/kernel.h"
#include "losskit/plugin.h"

#define TUT_CHUNK     256
#define TUT_MAX_STATS 8 /* statistics a non-fused loss of the family may use */

/* The losses, one per file group (elementwise.c, overlap.c, focal.c). */
extern const lk_loss_desc tut_mse_desc;
extern const lk_loss_desc tut_l1_desc;
extern const lk_loss_desc tut_bce_desc;
extern const lk_loss_desc tut_dice_desc;
extern const lk_loss_desc tut_dice_bce_desc;
extern const lk_loss_desc tut_iou_desc;
extern const lk_loss_desc tut_focal_desc;
extern const lk_loss_desc tut_focal_mean_bce_desc;

/* The slots every loss of the family shares (plugin.c). */
extern const lk_slot_desc tut_slot_input;  /* logits, differentiable */
extern const lk_slot_desc tut_slot_target; /* like input, values in [0, 1] */
extern const lk_slot_desc tut_slot_weight; /* optional, like input */

/* One chunk of positions [begin, begin + n), converted to double. */
typedef struct tut_span {
    int64_t begin;
    int64_t n;
    const double *x; /* logits */
    const double *t; /* targets */
    double *loss;    /* fused kernels: n per-position losses (unweighted) */
    double *grad;    /* n d(loss)/dx values, unscaled; NULL: not wanted */
} tut_span;

/* A fused per-position kernel: fills s->loss and, when s->grad is not NULL,
 * s->grad. */
typedef void (*tut_fused_fn)(const void *inst, const tut_span *s);
/* A statistics kernel: adds the chunk's statistics into stats. */
typedef void (*tut_stats_fn)(const void *inst, const tut_span *s, double *stats);
/* A gradient kernel of a non-fused loss: fills s->grad from the combined
 * statistics global. */
typedef void (*tut_grad_fn)(const void *inst, const lk_plan *plan, const double *global,
                            const tut_span *s);

/* Flags of tut_fused_forward. */
#define TUT_WEIGHTED     0x1u /* slot 2 is an optional per-position weight */
#define TUT_CHECK_TARGET 0x2u /* refuse targets outside [0, 1] */

/* Drivers (plugin.c). A fused forward sums w * loss into stats[0], writes
 * the per-position losses to blk->out and grad_scale * w * grad to
 * blk->grads[0] when they are wanted. A stats forward refuses targets outside
 * [0, 1]; a backward writes grad_scale * grad. */
lk_status tut_fused_forward(const void *inst, const lk_block *blk, tut_fused_fn fn, uint32_t flags,
                            lk_msg *msg);
lk_status tut_stats_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                            tut_stats_fn fn, lk_msg *msg);
lk_status tut_backward(const void *inst, const lk_plan *plan, const lk_block *blk, tut_grad_fn fn,
                       lk_msg *msg);

/* Refuses strided (non C-order) tensors; every plan() calls it. */
lk_status tut_check_layout(const lk_tensor *slots, int32_t n_slots, lk_msg *msg);

/* c * a, except that a zero coefficient gives 0 even when a is infinite:
 * the convention that keeps +-inf logits from producing NaN. */
static inline double tut_mul0(double c, double a)
{
    return c == 0.0 ? 0.0 : c * a;
}

/* Binary cross-entropy from a logit, torch's with pos_weight pw:
 *   (1 - t) x + lw softplus(-x),  lw = 1 + (pw - 1) t,
 * written per sign of x so that nothing cancels and x = +-inf gives 0 (the
 * target agrees) or +inf, never NaN:
 *   x >= 0:  (1 - t) x  + lw log1p(exp(-x))
 *   x <  0:  pw t (-x)  + lw log1p(exp(x)) */
static inline double tut_bce(double x, double t, double pw)
{
    double lw = 1.0 + (pw - 1.0) * t;
    if (x >= 0.0)
        return tut_mul0(1.0 - t, x) + lw * log1p(exp(-x));
    return tut_mul0(pw * t, -x) + lw * log1p(exp(x));
}

/* d tut_bce / dx = lw sigmoid(x) - pw t: finite for every logit. */
static inline double tut_bce_grad(double x, double t, double pw)
{
    double lw = 1.0 + (pw - 1.0) * t;
    return lw * lk_sigmoid(x) - pw * t;
}

/* d sigmoid / dx = sigmoid(x) sigmoid(-x), with one exp and no cancellation. */
static inline double tut_dsigmoid(double x)
{
    double e = exp(-fabs(x));
    double d = 1.0 + e;
    return e / (d * d);
}

#endif /* LOSSKIT_TUTORIAL_H */
