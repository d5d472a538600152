/* tutorial.h: what the files of the tutorial family share. Private: nothing
 * here is exported (the family builds with -fvisibility=hidden).
 *
 * Every loss has portable kernels and, on x86-64, SIMD ones, chosen once per
 * instance in create() (tut_simd_choice):
 *
 *  - the portable path (plugin.c's drivers, the kernels in elementwise.c,
 *    overlap.c, focal.c, multiclass.c): chunks of TUT_CHUNK positions are
 *    converted to double, a dtype-free scalar loop computes losses,
 *    gradients or statistics, and results are stored back in the caller's
 *    dtype;
 *  - the AVX2+FMA path (simd_avx2.c, its own translation unit compiled with
 *    -mavx2 -mfma, built only on x86-64 with glibc's libmvec): fused loops
 *    that read float32 or float64 directly, compute in double lanes of four
 *    and call libmvec's vector exp, log1p and pow;
 *  - the float32-lane kernels (simd_f32.h and simd_f32_mc.h, compiled for
 *    AVX2 and for AVX-512), to which the AVX2 entry points hand every block
 *    of an exp-bound binary loss whose tensors are all float32, and of
 *    multiclass dice with float32 logits and int64 class indices or float32
 *    targets: the same formulas in float32, every sum in double.
 *
 * Both compute the same formulas, written below once in scalar form from
 * the same primitives of a logit x (tut_prim): a = |x|, e = exp(-a),
 * r = 1 / (1 + e), L = log1p(e). The vector code mirrors each formula
 * operation for operation, so the double lanes differ from the portable
 * path only by the last bits of the math library and the order of the
 * double accumulations, and the float32 lanes by float32 rounding. */
#ifndef LOSSKIT_TUTORIAL_H
#define LOSSKIT_TUTORIAL_H

#include <math.h>
#include <stdint.h>

#include "losskit/kernel.h"
#include "losskit/plugin.h"

#define TUT_CHUNK     256
#define TUT_MAX_STATS 8 /* statistics a non-fused binary loss of the family uses */

#ifndef TUT_HAVE_AVX2
#define TUT_HAVE_AVX2 0
#endif
#ifndef TUT_HAVE_AVX512
#define TUT_HAVE_AVX512 0
#endif

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

/* ------------------------------------------------------------------------ */
/* Instances                                                                 */

/* Which kernels an instance runs. */
enum { TUT_SIMD_NONE = 0, TUT_SIMD_AVX2 = 1, TUT_SIMD_AVX512 = 2 };

/* One instance type for the whole family: each loss fills what it uses.
 * Immutable after create(). */
typedef struct tut_inst {
    int32_t simd;         /* TUT_SIMD_*, chosen by tut_simd_choice() */
    int32_t multiclass;   /* dice: 1 for mode "multiclass" */
    double smooth;        /* dice, dice_bce, iou */
    double alpha, gamma;  /* focal, focal_mean_bce */
    int64_t ignore_index; /* dice multiclass */
    int64_t n_pw;         /* bce_with_logits: 0 means pos_weight 1 everywhere */
    double pw[];          /* n_pw values */
} tut_inst;

/* The kernels to use: TUT_SIMD_AVX2 when this build has them and the CPU
 * runs AVX2 and FMA, unless the environment variable LOSSKIT_SIMD is "0".
 * Read at every create(), so that a test can switch paths between two
 * instances. */
int32_t tut_simd_choice(void);

/* A zeroed instance with room for n_pw pos_weight values and simd chosen;
 * the choice is logged at debug level (LOSSKIT_DEBUG=1 shows it). */
lk_status tut_inst_new(const lk_create_args *args, int64_t n_pw, tut_inst **out, lk_msg *msg);
lk_status tut_create_plain(const lk_create_args *args, void **instance, lk_msg *msg);
void tut_destroy(void *instance);

/* ------------------------------------------------------------------------ */
/* The portable path                                                         */

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
typedef void (*tut_fused_fn)(const tut_inst *inst, const tut_span *s);
/* A statistics kernel: adds the chunk's statistics into stats. */
typedef void (*tut_stats_fn)(const tut_inst *inst, const tut_span *s, double *stats);
/* A gradient kernel of a non-fused loss: fills s->grad using the constants
 * k that the loss derived from the combined statistics. */
typedef void (*tut_grad_fn)(const double *k, const tut_span *s);

/* Flags of tut_fused_forward. */
#define TUT_WEIGHTED     0x1u /* slot 2 is an optional per-position weight */
#define TUT_CHECK_TARGET 0x2u /* refuse targets outside [0, 1] */

/* Drivers (plugin.c). A fused forward sums w * loss into stats[0], writes
 * the per-position losses to blk->out and grad_scale * w * grad to
 * blk->grads[0] when they are wanted. A stats forward refuses targets outside
 * [0, 1]; a backward writes grad_scale * grad. */
lk_status tut_fused_forward(const tut_inst *inst, const lk_block *blk, tut_fused_fn fn,
                            uint32_t flags, lk_msg *msg);
lk_status tut_stats_forward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                            tut_stats_fn fn, lk_msg *msg);
lk_status tut_backward(const double *k, const lk_block *blk, tut_grad_fn fn, lk_msg *msg);

/* Whether a backward has a gradient to write; LK_ERR_INTERNAL in *st when
 * the host gave no global statistics. */
static inline int tut_backward_wanted(const lk_block *blk, lk_status *st, lk_msg *msg)
{
    *st = LK_OK;
    if (!blk->grads || !blk->grads[0].data)
        return 0;
    if (!blk->global) {
        *st = lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
        return 0;
    }
    return 1;
}

/* Refuses strided (non C-order) tensors; every plan() calls it. */
lk_status tut_check_layout(const lk_tensor *slots, int32_t n_slots, lk_msg *msg);

/* Positions per block: about a 64th of the call, in multiples of
 * LK_BLOCK_POSITIONS from 16384 to TUT_BLOCK_MAX. A function of the shape
 * only, as the ABI requires. Large blocks matter on several threads: the
 * host hands blocks out in turn, and when each thread's stream jumps every
 * 64 KiB, a memory-bound kernel loses a quarter of its speed to it. */
#define TUT_BLOCK_MAX (16 * LK_BLOCK_POSITIONS)
int64_t tut_block_positions(int64_t n_positions);

/* What plan() of every binary loss does: the blocks above and the layout
 * check of its n_slots slots. */
lk_status tut_plan_binary(const lk_tensor *slots, int32_t n_slots, lk_plan *plan, lk_msg *msg);

/* "(2, 3)", as the host writes shapes, and "float32". */
void tut_shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape);
const char *tut_dtype_name(int32_t dtype);

/* The message of a target outside [0, 1] (both paths use it). */
lk_status tut_bad_target(lk_msg *msg, int64_t index, double t);

/* For the SIMD paths, which find that a vector holds a bad target and then
 * need the first one: the message of the first target outside [0, 1] among
 * t[i .. i + n) (float32 when f32, else float64). */
lk_status tut_first_bad_target(const void *t, int f32, int64_t i, int64_t n, lk_msg *msg);

/* ------------------------------------------------------------------------ */
/* The AVX2 path (simd_avx2.c)                                               */

/* The kernels of the family, as simd_avx2.c knows them. */
enum {
    TUT_K_MSE,
    TUT_K_L1,
    TUT_K_BCE,
    TUT_K_FOCAL,    /* fused */
    TUT_K_DICE,     /* statistics I, P, T; gradient of dice */
    TUT_K_DICE_BCE, /* statistics I, P, T, BCE, n; gradient of dice_bce */
    TUT_K_IOU,      /* statistics as dice; gradient of iou */
    TUT_K_FMB       /* statistics BCE, n; gradient of focal_mean_bce */
};

/* Statistics of the binary overlap losses and focal_mean_bce. */
enum { TUT_ST_I, TUT_ST_P, TUT_ST_T, TUT_ST_BCE, TUT_ST_COUNT };
enum { TUT_FMB_BCE, TUT_FMB_COUNT };

/* Adds one block's sums to its statistics, for the SIMD paths: s holds the
 * sums of p t, p, t and the BCE terms in the order of TUT_ST_I .. TUT_ST_BCE,
 * over the block's positions. */
static inline void tut_add_block_sums(int kind, const lk_block *blk, const double *s)
{
    double count = (double)(blk->end - blk->begin);
    if (kind == TUT_K_FMB) {
        blk->stats[TUT_FMB_BCE] += s[TUT_ST_BCE];
        blk->stats[TUT_FMB_COUNT] += count;
        return;
    }
    blk->stats[TUT_ST_I] += s[TUT_ST_I];
    blk->stats[TUT_ST_P] += s[TUT_ST_P];
    blk->stats[TUT_ST_T] += s[TUT_ST_T];
    if (kind == TUT_K_DICE_BCE) {
        blk->stats[TUT_ST_BCE] += s[TUT_ST_BCE];
        blk->stats[TUT_ST_COUNT] += count;
    }
}

#if TUT_HAVE_AVX2
lk_status tut_avx2_fused(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg);
lk_status tut_avx2_stats(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg);
lk_status tut_avx2_grad(const tut_inst *inst, int kind, const double *k, const lk_block *blk,
                        lk_msg *msg);
lk_status tut_avx2_mc_forward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg);
lk_status tut_avx2_mc_backward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg);

/* The float32-lane kernels of one instruction set (simd_f32.h, compiled
 * once per set), for blocks whose tensors are all float32: tut_avx2_fused,
 * _stats and _grad hand such blocks to fused, stats and grad, and
 * tut_avx2_mc_forward and _backward the multiclass blocks with float32
 * logits and int64 class indices or float32 targets (simd_f32_mc.h). */
typedef struct tut_f32_kernels {
    lk_status (*fused)(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg);
    lk_status (*stats)(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg);
    void (*grad)(int kind, const double *k, const lk_block *blk);
    lk_status (*mc_forward)(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                            lk_msg *msg);
    lk_status (*mc_backward)(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                             lk_msg *msg);
} tut_f32_kernels;

extern const tut_f32_kernels tut_f32_avx2;
#endif
#if TUT_HAVE_AVX512
extern const tut_f32_kernels tut_f32_avx512;
#endif

/* ------------------------------------------------------------------------ */
/* Dice, multiclass mode (multiclass.c)                                      */

/* plan->aux of a multiclass call. */
enum { TUT_MC_CLASSES, TUT_MC_SPATIAL, TUT_MC_FLOAT_TARGET };

lk_status tut_mc_plan(const tut_inst *inst, const lk_tensor *slots, lk_plan *plan, lk_msg *msg);
lk_status tut_mc_forward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                         lk_msg *msg);
lk_status tut_mc_finalize(const tut_inst *inst, const lk_plan *plan, const double *stats,
                          double *value);
lk_status tut_mc_backward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                          lk_msg *msg);
/* d value / d p_c at a position is k1[c] - t_c k2[c]; both paths use these. */
void tut_mc_coeffs(double smooth, int64_t classes, const double *global, double *k1, double *k2);
/* The message of a class index that is neither in [0, C) nor ignore_index. */
lk_status tut_mc_bad_index(lk_msg *msg, int64_t index, int64_t value, int64_t classes,
                           int64_t ignore_index);
/* For the SIMD paths, as tut_first_bad_target: the first of the n positions
 * from pos whose class index y[] is neither in [0, C) nor ignore_index; the
 * first float target outside [0, 1] of the n positions from flat index base,
 * position by position and class by class as the portable path looks. */
lk_status tut_mc_first_bad_index(const int64_t *y, int64_t pos, int64_t n, int64_t classes,
                                 int64_t ignore_index, lk_msg *msg);
lk_status tut_mc_first_bad_target(const void *t, int f32, int64_t base, int64_t n, int64_t classes,
                                  int64_t spatial, lk_msg *msg);
/* The message of a float target outside [0, 1], at its flat index. */
#define tut_mc_bad_target tut_bad_target

/* ------------------------------------------------------------------------ */
/* Scalar formulas                                                           */

/* c * a, except that a zero coefficient gives 0 even when a is infinite:
 * the convention that keeps +-inf logits from producing NaN. */
static inline double tut_mul0(double c, double a)
{
    return c == 0.0 ? 0.0 : c * a;
}

/* The primitives of a logit: one exp, one division and (when the loss
 * needs a softplus) one log1p, from which every sigmoid-family formula of
 * the family is derived. exp never sees a positive argument, so nothing
 * overflows; +-inf give e = 0, r = 1, L = 0; NaN gives NaN throughout. */
typedef struct tut_prim {
    double a; /* |x| */
    double e; /* exp(-|x|), in [0, 1] */
    double r; /* 1 / (1 + e), in [1/2, 1] */
    int pos;  /* x >= 0 (false for NaN) */
} tut_prim;

static inline tut_prim tut_prims(double x)
{
    tut_prim p;
    p.a = fabs(x);
    p.e = exp(-p.a);
    p.r = 1.0 / (1.0 + p.e);
    p.pos = x >= 0.0;
    return p;
}

/* sigmoid(x) and sigmoid(-x): r on the side of the sign, e r on the other,
 * so that neither cancels. */
static inline double tut_sig(const tut_prim *p)
{
    return p->pos ? p->r : p->e * p->r;
}

static inline double tut_sig_neg(const tut_prim *p)
{
    return p->pos ? p->e * p->r : p->r;
}

/* d sigmoid / dx = sigmoid(x) sigmoid(-x) = e r^2. */
static inline double tut_dsig(const tut_prim *p)
{
    return p->e * p->r * p->r;
}

/* Binary cross-entropy from a logit, torch's with pos_weight pw, with
 * L = log1p(e):
 *   (1 - t) x + lw softplus(-x),  lw = 1 + (pw - 1) t,
 * written per sign of x so that nothing cancels and x = +-inf gives 0 (the
 * target agrees) or +inf, never NaN:
 *   x >= 0:  (1 - t) |x| + lw L
 *   x <  0:  pw t |x|    + lw L */
static inline double tut_bce_p(const tut_prim *p, double L, double t, double pw)
{
    double lw = 1.0 + (pw - 1.0) * t;
    return tut_mul0(p->pos ? 1.0 - t : pw * t, p->a) + lw * L;
}

/* d bce / dx = lw sigmoid(x) - pw t: finite for every logit. */
static inline double tut_bce_grad_p(const tut_prim *p, double t, double pw)
{
    double lw = 1.0 + (pw - 1.0) * t;
    return lw * tut_sig(p) - pw * t;
}

static inline double tut_bce(double x, double t, double pw)
{
    tut_prim p = tut_prims(x);
    return tut_bce_p(&p, log1p(p.e), t, pw);
}

/* q^gamma with the exponents 0, 1 and 2 taken exactly (they are what
 * pow() returns for them too) and pow() otherwise. */
static inline double tut_powg(double q, double gamma)
{
    if (gamma == 0.0)
        return 1.0;
    if (gamma == 1.0)
        return q;
    if (gamma == 2.0)
        return q * q;
    return pow(q, gamma);
}

#endif /* LOSSKIT_TUTORIAL_H */
