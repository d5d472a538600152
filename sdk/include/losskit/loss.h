/* losskit/loss.h: the kernel layer. A loss is one small file: its
 * parameters, an always-inline function on lanes (losskit/lanes.h) and one
 * registration line; the loops over blocks, the weight slot, reduction
 * none, grad_scale, LK_BLOCK_GRAD_ACCUMULATE, the target checks, the choice
 * of instruction set and the descriptor are written here once.
 *
 * Nothing here is ABI: it is compiled into each plugin. The source of a
 * loss is compiled once per variant, each compile defining what lanes.h
 * reads (the instruction set from -m flags, LK_LANES_F32 for float lanes),
 * plus, in every compile, which variants the build has:
 *
 *   LK_BUILD_F32     the float-lane variants exist
 *   LK_BUILD_AVX2    the AVX2+FMA variants exist
 *   LK_BUILD_AVX512  the AVX-512 variants exist
 *
 * The portable double-lane compile (no -m flags, no LK_LANES_F32) is the
 * primary one: it alone defines the lk_loss_desc and the picker. A source
 * compiled once with no flags at all is thus a working, portable plugin;
 * the meson recipe in sdk/README.md ("Building the variants") compiles
 * every variant. The picker runs at create(): the widest instruction set
 * the build has, the CPU runs and LOSSKIT_SIMD allows; then, per call,
 * float lanes when every floating tensor of the call is float32, else
 * double lanes (reading and writing float32 tensors by conversion). */
#ifndef LOSSKIT_LOSS_H
#define LOSSKIT_LOSS_H

#include <stdio.h>
#include <stdlib.h>

#include "losskit/kernel.h"
#include "losskit/lanes.h"
#include "losskit/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(LK_TARGET_PORTABLE) && !defined(LK_LANES_F32)
#define LK_PRIMARY 1
#endif

#if defined(LK_TARGET_AVX512)
#define LK__TGT avx512
#elif defined(LK_TARGET_AVX2)
#define LK__TGT avx2
#else
#define LK__TGT portable
#endif
#if defined(LK_LANES_F32)
#define LK__PREC f32
#else
#define LK__PREC f64
#endif

#define LK__CAT4(a, b, c, d)  a##__##b##_##c##d
#define LK__XCAT4(a, b, c, d) LK__CAT4(a, b, c, d)
/* The name of this compile's variant of a kernel family: name__avx2_f32. */
#define LK_VARIANT(name) LK__XCAT4(name, LK__TGT, LK__PREC, )
#define LK__VAR(name, tgt, prec) LK__CAT4(name, tgt, prec, )

#if defined(__GNUC__)
#define LK__UNUSED __attribute__((unused))
#else
#define LK__UNUSED
#endif

/* ------------------------------------------------------------------------ */
/* Kernel sets and families                                                  */

/* The block kernels of one variant. inst is the loss's own instance. */
typedef lk_status (*lk_block_fn)(const void *inst, const lk_plan *plan, const lk_block *blk,
                                 lk_msg *msg);

typedef struct lk_kset {
    lk_block_fn forward;
    lk_block_fn backward; /* NULL for a fused family */
    uint32_t n_stats;     /* statistics per block; 0 leaves the plan's */
    const char *name;     /* "avx2 f32" */
} lk_kset;

/* A family's variants: [instruction set][precision], NULL where not built.
 * Instruction sets: 0 portable, 1 AVX2+FMA, 2 AVX-512; precision 0 f32,
 * 1 f64. */
typedef struct lk_kfamily {
    const lk_kset *v[3][2];
} lk_kfamily;

/* ------------------------------------------------------------------------ */
/* Block helpers shared by the drivers                                       */

/* Positions per block: about a 64th of the call, in multiples of
 * LK_BLOCK_POSITIONS from 16384 to 16 times that. A function of the shape
 * only, as the ABI requires; large blocks keep each thread's memory stream
 * long. */
static inline int64_t lk_block_positions(int64_t n_positions)
{
    int64_t b = (n_positions / 64 + LK_BLOCK_POSITIONS - 1) / LK_BLOCK_POSITIONS;
    b *= LK_BLOCK_POSITIONS;
    return b < LK_BLOCK_POSITIONS ? LK_BLOCK_POSITIONS
           : b > 16 * LK_BLOCK_POSITIONS ? 16 * LK_BLOCK_POSITIONS
                                         : b;
}

/* Element i of a float tensor as a double. */
static inline double lk__get(const void *p, int f32, int64_t i)
{
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

/* The message of the first target outside [0, 1] among elements [i, i +
 * n) of t, named by its multi-index (out of line: LK__COLD_FN). */
LK__COLD_FN lk_status lk_first_bad_target(const lk_tensor *t, int64_t i, int64_t n, lk_msg *msg)
{
    for (int64_t j = i; j < i + n; j++) {
        double v = lk__get(t->data, t->dtype == LK_DTYPE_F32, j);
        if (v < 0.0 || v > 1.0) {
            char where[160];
            lk_index_str(where, sizeof where, t->ndim, t->shape, j);
            return lk_fail(msg, LK_ERR_INVALID, "target%s = %g is outside [0, 1]", where, v);
        }
    }
    return lk_fail(msg, LK_ERR_INTERNAL, "a target outside [0, 1] vanished");
}

/* The first k lanes of a float tensor from element i, the others pad. In
 * float lanes the tensor is float32; in double lanes it may be either. */
LK_AI lk_v lk__ld(const void *p, int f32, int64_t i, int k, double pad)
{
#if defined(LK_LANES_F32)
    (void)f32;
    return lk_f_loadn((const float *)p + i, k, (float)pad);
#else
    return f32 ? lk_d_loadn_f32((const float *)p + i, k, pad) : lk_d_loadn((const double *)p + i, k, pad);
#endif
}

LK_AI void lk__st(void *p, int f32, int64_t i, int k, lk_v v)
{
#if defined(LK_LANES_F32)
    (void)f32;
    lk_f_storen((float *)p + i, k, v);
#else
    if (f32)
        lk_d_storen_f32((float *)p + i, k, v);
    else
        lk_d_storen((double *)p + i, k, v);
#endif
}

/* Writes (or, with accumulate, adds) scale g at element i. */
LK_AI void lk__put_grad(void *p, int f32, int64_t i, int k, lk_v g, lk_v scale, int accumulate)
{
    g = lk_mul(scale, g);
    if (accumulate)
        g = lk_add(lk__ld(p, f32, i, k, 0.0), g);
    lk__st(p, f32, i, k, g);
}

/* Gradients of at least this many bytes are written with streaming stores
 * where they can be: the lines are not read first, and a tensor this large
 * leaves the caches anyway. */
#define LK_STREAM_BYTES ((int64_t)16 << 20)

/* Whether a block may stream its gradient: SIMD lanes of the tensor's own
 * precision, stored, not accumulated, a large call, and the block's first
 * vector on a vector boundary (then every full vector is). */
LK_AI int lk__can_stream(const void *g, int gf32, int accumulate, int64_t begin, int64_t n)
{
#if defined(LK_TARGET_PORTABLE)
    (void)g, (void)gf32, (void)accumulate, (void)begin, (void)n;
    return 0;
#else
#if defined(LK_LANES_F32)
    int own = gf32;
#else
    int own = !gf32;
#endif
    return g && own && !accumulate && n * (int64_t)sizeof(lk_s) >= LK_STREAM_BYTES &&
           (uintptr_t)((const lk_s *)g + begin) % (LK_W * sizeof(lk_s)) == 0;
#endif
}

/* Writes scale g at element i with a streaming store (a full vector). */
LK_AI void lk__stream_grad(void *p, int64_t i, lk_v g, lk_v scale)
{
    lk_stream((lk_s *)p + i, lk_mul(scale, g));
}

/* The lanes tab[(i + j) mod n] of a table of n doubles, n >= 1: a per-index
 * parameter along the last dimension (bce_with_logits' pos_weight). */
LK_AI lk_v lk_load_cyclic(const double *tab, int64_t n, int64_t i)
{
    lk_s buf[LK_W];
    int64_t c = i % n;
    for (int j = 0; j < LK_W; j++) {
        buf[j] = (lk_s)tab[c];
        if (++c == n)
            c = 0;
    }
    return lk_load(buf);
}

/* ------------------------------------------------------------------------ */
/* Elementwise losses: value and gradient per element, in one pass           */

/* What an element function sees and fills, one vector of positions. */
typedef struct lk_elem {
    int64_t i;   /* flat index of lane 0 */
    lk_v x;      /* slot 0, the input */
    lk_v t;      /* slot 1, the target */
    lk_v u;      /* slot 2 with LK_EW_THIRD (a variance, a second input...) */
    lk_v loss;   /* out: the per-element loss */
    lk_v grad;   /* out: d loss / d x (ignored in a statistics pass) */
    lk_v grad_t; /* out with LK_EW_GRAD_T: d loss / d t */
    lk_v grad_u; /* out with LK_EW_GRAD_U: d loss / d u */
    lk_sigm sig; /* with LK_EW_SIGMOID: lk_sigm_of(x), formed by the driver */
    lk_v sig_L;  /* with LK_EW_SIGMOID: lk_sigm_log1p(&sig) (dropped where unread) */
} lk_elem;

/* Flags of the drivers. */
#define LK_EW_WEIGHT      0x1u /* an optional weight multiplying loss and gradients: slot 2,
                                  or slot 3 with LK_EW_THIRD */
#define LK_EW_UNIT_TARGET 0x2u /* targets outside [0, 1] are refused (NaN passes) */
#define LK_EW_THIRD       0x4u /* slot 2 is a third operand shaped like the input: e->u */
#define LK_EW_GRAD_T      0x8u /* the element function fills grad_t: slot 1 is differentiable */
#define LK_EW_GRAD_U      0x10u /* it fills grad_u: slot 2 (LK_EW_THIRD) is differentiable */
/* The drivers (fused and two-pass) form e->sig = lk_sigm_of(e->x) and
 * e->sig_L a vector ahead of the element function (software pipelined, see
 * lk__ew_loop): for losses on logits that start from the sigmoid. */
#define LK_EW_SIGMOID 0x20u
/* Every element's loss is >= 0 (or NaN, or +inf): the float lanes'
 * per-element losses may then be added four vectors at a time in float
 * before they join the sum in double, since no term can cancel another.
 * Where the block's sum comes out +inf (an infinite term, or a group of
 * finite terms whose float sum overflowed, which rounds to +inf) it is
 * formed again, vector by vector in double, as without the flag, by a
 * second pass that writes nothing (lk__elementwise_forward): no check in
 * the loop, and a second pass only where a term is +inf or as large as
 * 2^126. The total's relative error grows by at most 3 2^-24 (1.8e-7); the
 * order stays fixed by the lane width and the block alone. Ignored with a
 * weight (any real may weigh a term) and in double lanes. */
#define LK_EW_NONNEG_SUM 0x40u

typedef void (*lk_elem_fn)(const void *inst, lk_elem *e);

typedef struct lk__ew_io {
    const void *x, *t, *w;
    const lk_tensor *ts; /* the target's tensor, for messages */
    void *out, *g;
    int xf, tf, wf; /* each tensor is float32 */
    const void *u;  /* LK_EW_THIRD: slot 2 */
    void *gt, *gu;  /* the gradients of slots 1 and 2, when wanted */
    int uf, gtf, guf;
} lk__ew_io;

/* The io of input and target (slots 0 and 1), the rest unset. */
LK_AI lk__ew_io lk__ew_io_pair(const lk_tensor *s)
{
    lk__ew_io io;
    memset(&io, 0, sizeof io);
    io.x = s[0].data;
    io.t = s[1].data;
    io.ts = &s[1];
    io.xf = s[0].dtype == LK_DTYPE_F32;
    io.tf = s[1].dtype == LK_DTYPE_F32;
    return io;
}

/* What a loop writes; constants where the loop is specialised, so that a
 * pass without a gradient does not compute one. */
#define LK__W_GRAD   0x100u
#define LK__W_OUT    0x200u
#define LK__W_WEIGHT 0x400u
#define LK__W_STREAM 0x800u
#define LK__W_GROUP  0x1000u /* LK_EW_NONNEG_SUM in effect */
#define LK__W_SIG3   0x2000u /* the sigmoid in two steps: its exp, then the rest (three deep) */

/* The loss sum of a loop: lanes into double, or with LK__W_GROUP (float
 * lanes only) groups of four vectors added in float first. */
typedef struct lk__ew_sum {
    lk_acc acc;
    lk_v part; /* the group so far */
    int n;     /* vectors in it */
} lk__ew_sum;

/* What lk__ew_loop returns where the groups' sum came out +inf: the block's
 * other outputs are written, its sum is to be formed again without the
 * groups. Never leaves the driver. */
#define LK__EW_REDO ((lk_status)-1000)

LK_AI lk__ew_sum lk__ew_sum_zero(void)
{
    lk__ew_sum s;
    s.acc = lk_acc_zero(), s.part = lk_zero(), s.n = 0;
    return s;
}

LK_AI void lk__ew_sum_flush(lk__ew_sum *s)
{
    lk_acc_add(&s->acc, s->part);
    s->part = lk_zero(), s->n = 0;
}

LK_AI void lk__ew_sum_add(uint32_t flags, lk__ew_sum *s, lk_v v)
{
#if defined(LK_LANES_F32)
    if (flags & LK__W_GROUP) {
        s->part = lk_add(s->part, v);
        if (++s->n == 4)
            lk__ew_sum_flush(s);
        return;
    }
#else
    (void)flags;
#endif
    lk_acc_add(&s->acc, v);
}

LK_AI double lk__ew_sum_total(uint32_t flags, lk__ew_sum *s)
{
    if ((flags & LK__W_GROUP) && s->n)
        lk__ew_sum_flush(s);
    return lk_acc_sum(s->acc);
}

/* Loads the k elements from i of input and target into e; with
 * LK_EW_UNIT_TARGET, a target outside [0, 1] fails the call (every driver's
 * pass reads the targets through here). */
LK_AI lk_status lk__elem_load(const lk__ew_io *io, uint32_t flags, int64_t i, int k, lk_elem *e,
                              lk_msg *msg)
{
    e->i = i;
    e->x = lk__ld(io->x, io->xf, i, k, 0.0);
    e->t = lk__ld(io->t, io->tf, i, k, 0.0);
    if (flags & LK_EW_THIRD)
        e->u = lk__ld(io->u, io->uf, i, k, 1.0);
    if ((flags & LK_EW_UNIT_TARGET) && lk_any_outside01(e->t))
        return lk_first_bad_target(io->ts, i, k, msg);
    return LK_OK;
}

/* What follows the element function: the weight, the stores, the sum. */
LK_AI void lk__ew_finish(uint32_t flags, const lk__ew_io *io, lk_elem *ep, int64_t i, int k,
                         lk_v scale, int accumulate, lk__ew_sum *sum)
{
    lk_elem e = *ep;
    if (flags & LK__W_WEIGHT) {
        lk_v w = lk__ld(io->w, io->wf, i, k, 0.0);
        e.loss = lk_mul0(w, e.loss);
        e.grad = lk_mul0(w, e.grad);
        if (flags & LK_EW_GRAD_T)
            e.grad_t = lk_mul0(w, e.grad_t);
        if (flags & LK_EW_GRAD_U)
            e.grad_u = lk_mul0(w, e.grad_u);
    }
    if ((flags & LK_EW_GRAD_T) && io->gt)
        lk__put_grad(io->gt, io->gtf, i, k, e.grad_t, scale, accumulate);
    if ((flags & LK_EW_GRAD_U) && io->gu)
        lk__put_grad(io->gu, io->guf, i, k, e.grad_u, scale, accumulate);
    lk__ew_sum_add(flags, sum, k == LK_W ? e.loss : lk_keep(lk_first(k), e.loss));
    if (flags & LK__W_OUT)
        lk__st(io->out, io->xf, i, k, e.loss);
    if ((flags & LK__W_STREAM) && k == LK_W)
        lk__stream_grad(io->g, i, e.grad, scale);
    else if (flags & LK__W_GRAD)
        lk__put_grad(io->g, io->xf, i, k, e.grad, scale, accumulate);
}

/* A staged element function (LK_KERNELS_ELEMENTWISE_STAGED): stage fills
 * up to LK_EW_KEEP vectors from e's operands, finish completes e from
 * them. With LK_EW_SIGMOID stage runs after the sigmoid and may read its
 * e and r in v[LK_EW_KEEP] and v[LK_EW_KEEP + 1]. */
#define LK_EW_KEEP 6
typedef struct lk_kept {
    lk_v v[LK_EW_KEEP + 3]; /* the last three: the driver's, for LK_EW_SIGMOID */
} lk_kept;
typedef void (*lk_stage_fn)(const void *inst, const lk_elem *e, lk_kept *k);
typedef void (*lk_finish_fn)(const void *inst, const lk_kept *k, lk_elem *e);

/* The first half of a staged step (the sigmoid, stage), then the second
 * (finish, or the element function whole). */
LK_AI void lk__ew_first(const void *inst, lk_stage_fn stage, uint32_t flags, lk_elem *e, lk_kept *k)
{
    if (flags & LK__W_SIG3) {
        k->v[LK_EW_KEEP] = lk_exp_minus(lk_abs(e->x));
    } else if (flags & LK_EW_SIGMOID) { /* the exp and reciprocal; the rest is cheap to form again */
        lk_sigm s = lk_sigm_of(e->x);
        k->v[LK_EW_KEEP] = s.e, k->v[LK_EW_KEEP + 1] = s.r;
        k->v[LK_EW_KEEP + 2] = lk_sigm_log1p(&s);
    }
    if (stage)
        stage(inst, e, k);
}

/* The second step of the sigmoid three deep (LK__W_SIG3): the reciprocal
 * and log1p(e) from the exp kept. */
LK_AI void lk__sig_mid(const void *inst, const lk_elem *e, lk_kept *k)
{
    (void)inst;
    lk_sigm s;
    s.a = lk_abs(e->x), s.pos = lk_ge(e->x, lk_zero());
    s.e = k->v[LK_EW_KEEP];
    s.r = lk__recip_fast(lk_add(lk_set(1.0), s.e));
    k->v[LK_EW_KEEP + 1] = s.r;
    k->v[LK_EW_KEEP + 2] = lk_sigm_log1p(&s);
}

/* e->sig and e->sig_L from the kept vectors; without LK_EW_SIGMOID zeros
 * (which the compiler drops: nothing reads them then). */
LK_AI void lk__ew_sig(uint32_t flags, const lk_kept *k, lk_elem *e)
{
    if (flags & LK_EW_SIGMOID) {
        e->sig.a = lk_abs(e->x), e->sig.pos = lk_ge(e->x, lk_zero());
        e->sig.e = k->v[LK_EW_KEEP], e->sig.r = k->v[LK_EW_KEEP + 1];
        e->sig_L = k->v[LK_EW_KEEP + 2];
    } else {
        e->sig.a = e->sig.e = e->sig.r = e->sig_L = lk_zero();
        e->sig.pos = lk_first(0);
    }
}

LK_AI void lk__ew_second(const void *inst, lk_elem_fn fn, lk_finish_fn finish, uint32_t flags,
                         const lk_kept *k, lk_elem *e)
{
    lk__ew_sig(flags, k, e);
    if (finish)
        finish(inst, k, e);
    else
        fn(inst, e);
}

LK_AI lk_status lk__ew_step(const void *inst, lk_elem_fn fn, lk_stage_fn stage, lk_stage_fn mid,
                            lk_finish_fn finish, uint32_t flags, const lk__ew_io *io, int64_t i,
                            int k, lk_v scale, int accumulate, lk__ew_sum *sum, lk_msg *msg)
{
    lk_elem e;
    lk_kept kp;
    lk_status st = lk__elem_load(io, flags, i, k, &e, msg);
    if (st != LK_OK)
        return st;
    lk__ew_first(inst, stage, flags, &e, &kp);
    if (mid)
        mid(inst, &e, &kp);
    lk__ew_second(inst, fn, finish, flags, &kp, &e);
    lk__ew_finish(flags, io, &e, i, k, scale, accumulate, sum);
    return LK_OK;
}

/* With a staged element function the loop is software pipelined: each
 * trip runs stage on the next vector and finish on the current one, so
 * that the two halves of a long dependency chain overlap (the scheduler's
 * window holds about half as many waiting operations). Results and their
 * order are those of the plain loop. */
LK_AI lk_status lk__ew_loop(const void *inst, const lk_block *blk, lk_elem_fn fn, lk_stage_fn stage,
                            lk_stage_fn mid, lk_finish_fn finish, uint32_t flags,
                            const lk__ew_io *io, lk_msg *msg)
{
    lk_v scale = lk_set(blk->grad_scale);
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    lk__ew_sum sum = lk__ew_sum_zero();
    lk_status st = LK_OK;
    /* the end in a local: a vector store may alias *blk, which would make
     * the loop read blk->end again on every trip */
    const int64_t end = blk->end;
    int64_t i = blk->begin;
    if (mid && i + 3 * LK_W <= end) {
        /* three deep: stage on the vector after next, mid on the next,
         * finish on the current one */
        lk_elem e0, e1, e2;
        lk_kept k0, k1, k2;
        st = lk__elem_load(io, flags, i, LK_W, &e0, msg);
        if (st == LK_OK)
            st = lk__elem_load(io, flags, i + LK_W, LK_W, &e1, msg);
        if (st != LK_OK)
            return st;
        lk__ew_first(inst, stage, flags, &e0, &k0);
        mid(inst, &e0, &k0);
        lk__ew_first(inst, stage, flags, &e1, &k1);
        for (; i + 3 * LK_W <= end; i += LK_W) {
            st = lk__elem_load(io, flags, i + 2 * LK_W, LK_W, &e2, msg);
            if (st != LK_OK)
                return st;
            lk__ew_first(inst, stage, flags, &e2, &k2);
            mid(inst, &e1, &k1);
            lk__ew_second(inst, fn, finish, flags, &k0, &e0);
            lk__ew_finish(flags, io, &e0, i, LK_W, scale, acc, &sum);
            e0 = e1, k0 = k1, e1 = e2, k1 = k2;
        }
        mid(inst, &e1, &k1);
        lk__ew_second(inst, fn, finish, flags, &k0, &e0);
        lk__ew_finish(flags, io, &e0, i, LK_W, scale, acc, &sum);
        lk__ew_second(inst, fn, finish, flags, &k1, &e1);
        lk__ew_finish(flags, io, &e1, i + LK_W, LK_W, scale, acc, &sum);
        i += 2 * LK_W;
    }
    if (!mid && (stage || (flags & LK_EW_SIGMOID)) && i + 2 * LK_W <= end) {
        lk_elem cur, next;
        lk_kept kc, kn;
        st = lk__elem_load(io, flags, i, LK_W, &cur, msg);
        if (st != LK_OK)
            return st;
        lk__ew_first(inst, stage, flags, &cur, &kc);
        for (; i + 2 * LK_W <= end; i += LK_W) {
            st = lk__elem_load(io, flags, i + LK_W, LK_W, &next, msg);
            if (st != LK_OK)
                return st;
            lk__ew_first(inst, stage, flags, &next, &kn);
            lk__ew_second(inst, fn, finish, flags, &kc, &cur);
            lk__ew_finish(flags, io, &cur, i, LK_W, scale, acc, &sum);
            cur = next, kc = kn;
        }
        lk__ew_second(inst, fn, finish, flags, &kc, &cur);
        lk__ew_finish(flags, io, &cur, i, LK_W, scale, acc, &sum);
        i += LK_W;
    }
    for (; st == LK_OK && i + LK_W <= end; i += LK_W)
        st = lk__ew_step(inst, fn, stage, mid, finish, flags, io, i, LK_W, scale, acc, &sum, msg);
    if (st == LK_OK && i < end)
        st = lk__ew_step(inst, fn, stage, mid, finish, flags, io, i, (int)(end - i), scale, acc,
                         &sum, msg);
    if (flags & LK__W_STREAM)
        lk_stream_fence();
    if (st == LK_OK) {
        double total = lk__ew_sum_total(flags, &sum);
        /* +inf from the groups: a term was +inf, or a group's float sum
         * overflowed (the double sum of float terms cannot) */
        if ((flags & LK__W_GROUP) && total == HUGE_VAL)
            return LK__EW_REDO;
        blk->stats[0] += total;
    }
    return st;
}

/* The fused driver: sums w * loss into stats[0], writes the per-element
 * losses to blk->out and grad_scale * w * grad to blk->grads[0] (and, with
 * LK_EW_GRAD_T / LK_EW_GRAD_U, grad_t and grad_u to blk->grads[1] and [2])
 * when they are wanted. */
LK_AI lk_status lk__elementwise_forward(const void *inst, const lk_plan *plan,
                                        const lk_block *blk, lk_elem_fn fn, lk_stage_fn stage,
                                        lk_stage_fn mid, lk_finish_fn finish, uint32_t flags,
                                        lk_msg *msg)
{
    const lk_tensor *s = blk->slots;
    const int third = (flags & LK_EW_THIRD) != 0;
    const lk_tensor *ws = &s[third ? 3 : 2];
    int weighted = (flags & LK_EW_WEIGHT) && ws->data;
    const lk_tensor *g = blk->grads;
    lk__ew_io io = lk__ew_io_pair(s);
    io.w = weighted ? ws->data : NULL;
    io.out = blk->out ? blk->out->data : NULL;
    io.g = g ? g[0].data : NULL;
    io.wf = weighted && ws->dtype == LK_DTYPE_F32;
    io.u = third ? s[2].data : NULL;
    io.gt = g && (flags & LK_EW_GRAD_T) ? g[1].data : NULL;
    io.gu = g && third && (flags & LK_EW_GRAD_U) ? g[2].data : NULL;
    io.uf = third && s[2].dtype == LK_DTYPE_F32;
    io.gtf = s[1].dtype == LK_DTYPE_F32;
    io.guf = third && s[2].dtype == LK_DTYPE_F32;
    uint32_t base =
        flags & (LK_EW_UNIT_TARGET | LK_EW_THIRD | LK_EW_GRAD_T | LK_EW_GRAD_U | LK_EW_SIGMOID);
#if defined(LK_TARGET_AVX512)
    if ((flags & LK_EW_SIGMOID) && !stage && !mid)
        mid = lk__sig_mid, base |= LK__W_SIG3;
#endif
#if defined(LK_LANES_F32)
    if ((flags & LK_EW_NONNEG_SUM) && !io.w)
        base |= LK__W_GROUP;
#endif
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    lk_status st;
    /* each call's flags are constants, so that each loop is specialised;
     * several gradients, a weight or the losses out: the general loop */
    if (io.gt || io.gu || io.w || io.out)
        st = lk__ew_loop(inst, blk, fn, stage, mid, finish,
                         base | (io.g ? LK__W_GRAD : 0u) | (io.out ? LK__W_OUT : 0u) |
                             (io.w ? LK__W_WEIGHT : 0u),
                         &io, msg);
    else if (!io.g)
        st = lk__ew_loop(inst, blk, fn, stage, mid, finish, base, &io, msg);
    else if (lk__can_stream(io.g, io.xf, acc, blk->begin, plan->n_positions))
        st = lk__ew_loop(inst, blk, fn, stage, mid, finish, base | LK__W_GRAD | LK__W_STREAM, &io,
                         msg);
    else
        st = lk__ew_loop(inst, blk, fn, stage, mid, finish, base | LK__W_GRAD, &io, msg);
#if defined(LK_LANES_F32)
    if ((base & LK__W_GROUP) && st == LK__EW_REDO) /* the sum alone, vector by vector */
        st = lk__ew_loop(inst, blk, fn, stage, mid, finish, base & ~LK__W_GROUP, &io, msg);
#endif
    return st;
}

LK_AI lk_status lk_elementwise_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                       lk_elem_fn fn, uint32_t flags, lk_msg *msg)
{
    return lk__elementwise_forward(inst, plan, blk, fn, NULL, NULL, NULL, flags, msg);
}

/* The same with a staged element function: stage, then finish. */
LK_AI lk_status lk_elementwise_forward_staged(const void *inst, const lk_plan *plan,
                                              const lk_block *blk, lk_stage_fn stage,
                                              lk_finish_fn finish, uint32_t flags, lk_msg *msg)
{
    return lk__elementwise_forward(inst, plan, blk, NULL, stage, NULL, finish, flags, msg);
}

/* The same in three parts: stage, then mid (which reads and may rewrite
 * what stage kept), then finish; the loop runs them three vectors deep. */
LK_AI lk_status lk_elementwise_forward_staged3(const void *inst, const lk_plan *plan,
                                               const lk_block *blk, lk_stage_fn stage,
                                               lk_stage_fn mid, lk_finish_fn finish,
                                               uint32_t flags, lk_msg *msg)
{
    return lk__elementwise_forward(inst, plan, blk, NULL, stage, mid, finish, flags, msg);
}

/* ------------------------------------------------------------------------ */
/* Two-pass losses: statistics per block, then the gradient                  */

#define LK_STATS_MAX 8 /* statistics a two-pass family of this driver may sum */

/* A check at compile time, in C and C++. */
#if defined(__cplusplus)
#define LK__STATIC_ASSERT(cond, why) static_assert(cond, why)
#else
#define LK__STATIC_ASSERT(cond, why) _Static_assert(cond, why)
#endif

/* Fills s[0 .. K) with the vector's contributions to the statistics. */
typedef void (*lk_stats_fn)(const void *inst, lk_elem *e, lk_v *s);
/* Fills k[0 .. LK_STATS_MAX) with constants of the gradient, from the
 * combined statistics; scalar, once per block. */
typedef void (*lk_consts_fn)(const void *inst, const double *global, double *k);
/* Sets e->grad from the constants k (as lanes). */
typedef void (*lk_grad_fn)(const void *inst, const lk_v *k, lk_elem *e);

/* The K running sums of a block, as named members rather than an array, so
 * that they stay in registers once the unused ones are dropped. */
typedef struct lk__accs {
    lk_acc a0, a1, a2, a3, a4, a5, a6, a7;
} lk__accs;

#define LK__EACH_ACC(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

LK_AI void lk__st_add(int n_stats, int k, const lk_v *s, lk__accs *acc)
{
#define LK__ADD(j)                                                                                 \
    if (n_stats > j)                                                                               \
        lk_acc_add(&acc->a##j, k == LK_W ? s[j] : lk_keep(lk_first(k), s[j]));
    LK__EACH_ACC(LK__ADD)
#undef LK__ADD
}

/* The running sums of a statistics pass: lanes into double, or with group
 * (LK_EW_NONNEG_SUM on float lanes) four vectors of each statistic added
 * in float first, as the fused driver's loss sum (lk__ew_sum). */
typedef struct lk__st_sums {
    lk__accs acc;
    lk_v p0, p1, p2, p3, p4, p5, p6, p7; /* the groups so far */
    int n;                               /* vectors in them */
} lk__st_sums;

LK_AI void lk__st_flush(int n_stats, lk__st_sums *g)
{
#define LK__FLUSH(j)                                                                               \
    if (n_stats > j)                                                                               \
        lk_acc_add(&g->acc.a##j, g->p##j), g->p##j = lk_zero();
    LK__EACH_ACC(LK__FLUSH)
#undef LK__FLUSH
    g->n = 0;
}

LK_AI void lk__st_sum(int n_stats, int k, const lk_v *s, lk__st_sums *g, const int group)
{
    if (!group) {
        lk__st_add(n_stats, k, s, &g->acc);
        return;
    }
#define LK__PART(j)                                                                                \
    if (n_stats > j)                                                                               \
        g->p##j = lk_add(g->p##j, k == LK_W ? s[j] : lk_keep(lk_first(k), s[j]));
    LK__EACH_ACC(LK__PART)
#undef LK__PART
    if (++g->n == 4)
        lk__st_flush(n_stats, g);
}

LK_AI lk_status lk__st_step(const void *inst, lk_stats_fn fn, int n_stats, uint32_t flags,
                            const lk__ew_io *io, int64_t i, int k, lk__st_sums *g, lk_msg *msg,
                            const int group)
{
    lk_elem e;
    lk_kept kp;
    lk_v s[LK_STATS_MAX];
    lk_status st = lk__elem_load(io, flags, i, k, &e, msg);
    if (st != LK_OK)
        return st;
    lk__ew_first(inst, NULL, flags, &e, &kp);
    lk__ew_sig(flags, &kp, &e);
    fn(inst, &e, s);
    lk__st_sum(n_stats, k, s, g, group);
    return LK_OK;
}

/* One statistics pass over the block into sum[0 .. n_stats). With
 * LK_EW_SIGMOID (e->sig for stats and grad, as in the fused driver) it is
 * software pipelined like lk__ew_loop. */
LK_AI lk_status lk__st_loop(const void *inst, const lk_block *blk, lk_stats_fn fn, int n_stats,
                            uint32_t flags, const lk__ew_io *io, double *sum, lk_msg *msg,
                            const int group)
{
    lk__st_sums g;
#define LK__ZERO(j) g.acc.a##j = lk_acc_zero(), g.p##j = lk_zero();
    LK__EACH_ACC(LK__ZERO)
#undef LK__ZERO
    g.n = 0;
    lk_status st = LK_OK;
    const int64_t end = blk->end;
    int64_t i = blk->begin;
    if ((flags & LK_EW_SIGMOID) && i + 2 * LK_W <= end) {
        lk_elem cur, next;
        lk_kept kc, kn;
        lk_v sv[LK_STATS_MAX];
        st = lk__elem_load(io, flags, i, LK_W, &cur, msg);
        if (st != LK_OK)
            return st;
        lk__ew_first(inst, NULL, flags, &cur, &kc);
        for (; i + 2 * LK_W <= end; i += LK_W) {
            st = lk__elem_load(io, flags, i + LK_W, LK_W, &next, msg);
            if (st != LK_OK)
                return st;
            lk__ew_first(inst, NULL, flags, &next, &kn);
            lk__ew_sig(flags, &kc, &cur);
            fn(inst, &cur, sv);
            lk__st_sum(n_stats, LK_W, sv, &g, group);
            cur = next, kc = kn;
        }
        lk__ew_sig(flags, &kc, &cur);
        fn(inst, &cur, sv);
        lk__st_sum(n_stats, LK_W, sv, &g, group);
        i += LK_W;
    }
    for (; st == LK_OK && i + LK_W <= end; i += LK_W)
        st = lk__st_step(inst, fn, n_stats, flags, io, i, LK_W, &g, msg, group);
    if (st == LK_OK && i < end)
        st = lk__st_step(inst, fn, n_stats, flags, io, i, (int)(end - i), &g, msg, group);
    if (group && g.n)
        lk__st_flush(n_stats, &g);
#define LK__OUT(j)                                                                                 \
    if (n_stats > j)                                                                               \
        sum[j] = lk_acc_sum(g.acc.a##j);
    LK__EACH_ACC(LK__OUT)
#undef LK__OUT
    return st;
}

/* The statistics of a block, added to blk->stats. flags: LK_EW_UNIT_TARGET,
 * LK_EW_SIGMOID, and LK_EW_NONNEG_SUM where every statistic's terms are >=
 * 0 (or NaN, or +inf): the float lanes then add them four vectors at a time
 * before they join the sums in double, with the fused driver's bound (the
 * relative error grows by at most 3 2^-24) and its rule for +inf: where a
 * statistic comes out +inf, the pass runs again without the groups. */
LK_AI lk_status lk_stats_forward(const void *inst, const lk_block *blk, lk_stats_fn fn,
                                 int n_stats, uint32_t flags, lk_msg *msg)
{
    lk__ew_io io = lk__ew_io_pair(blk->slots);
    double sum[LK_STATS_MAX];
    flags &= LK_EW_UNIT_TARGET | LK_EW_SIGMOID | LK_EW_NONNEG_SUM;
    lk_status st;
#if defined(LK_LANES_F32)
    if (flags & LK_EW_NONNEG_SUM) {
        st = lk__st_loop(inst, blk, fn, n_stats, flags, &io, sum, msg, 1);
        int redo = 0;
        for (int j = 0; st == LK_OK && j < n_stats; j++)
            redo |= sum[j] == HUGE_VAL;
        if (!redo) {
            for (int j = 0; st == LK_OK && j < n_stats; j++)
                blk->stats[j] += sum[j];
            return st;
        }
    }
#endif
    st = lk__st_loop(inst, blk, fn, n_stats, flags, &io, sum, msg, 0);
    for (int j = 0; st == LK_OK && j < n_stats; j++)
        blk->stats[j] += sum[j];
    return st;
}

LK_AI void lk__gr_put(const lk__ew_io *io, const lk_elem *e, int64_t i, int k, lk_v scale,
                      int accumulate, const int stream)
{
    if (stream && k == LK_W)
        lk__stream_grad(io->g, i, e->grad, scale);
    else
        lk__put_grad(io->g, io->xf, i, k, e->grad, scale, accumulate);
}

LK_AI void lk__gr_step(const void *inst, lk_grad_fn fn, uint32_t flags, const lk_v *kv,
                       const lk__ew_io *io, int64_t i, int k, lk_v scale, int accumulate,
                       const int stream)
{
    lk_elem e;
    lk_kept kp;
    lk__elem_load(io, 0, i, k, &e, NULL); /* the forward pass checked the targets */
    lk__ew_first(inst, NULL, flags, &e, &kp);
    lk__ew_sig(flags, &kp, &e);
    fn(inst, kv, &e);
    lk__gr_put(io, &e, i, k, scale, accumulate, stream);
}

LK_AI void lk__gr_loop(const void *inst, const lk_block *blk, lk_grad_fn fn, uint32_t flags,
                       const lk_v *kv, const lk__ew_io *io, int accumulate, const int stream)
{
    lk_v scale = lk_set(blk->grad_scale);
    const int64_t end = blk->end;
    int64_t i = blk->begin;
    if ((flags & LK_EW_SIGMOID) && i + 2 * LK_W <= end) {
        lk_elem cur, next;
        lk_kept kc, kn;
        lk__elem_load(io, 0, i, LK_W, &cur, NULL);
        lk__ew_first(inst, NULL, flags, &cur, &kc);
        for (; i + 2 * LK_W <= end; i += LK_W) {
            lk__elem_load(io, 0, i + LK_W, LK_W, &next, NULL);
            lk__ew_first(inst, NULL, flags, &next, &kn);
            lk__ew_sig(flags, &kc, &cur);
            fn(inst, kv, &cur);
            lk__gr_put(io, &cur, i, LK_W, scale, accumulate, stream);
            cur = next, kc = kn;
        }
        lk__ew_sig(flags, &kc, &cur);
        fn(inst, kv, &cur);
        lk__gr_put(io, &cur, i, LK_W, scale, accumulate, stream);
        i += LK_W;
    }
    for (; i + LK_W <= end; i += LK_W)
        lk__gr_step(inst, fn, flags, kv, io, i, LK_W, scale, accumulate, stream);
    if (i < end)
        lk__gr_step(inst, fn, flags, kv, io, i, (int)(end - i), scale, accumulate, stream);
    if (stream)
        lk_stream_fence();
}

/* flags: LK_EW_SIGMOID or 0 (the forward pass checked the targets). */
LK_AI lk_status lk__stats_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                   lk_consts_fn consts, lk_grad_fn fn, uint32_t flags, lk_msg *msg)
{
    if (!blk->grads || !blk->grads[0].data)
        return LK_OK;
    if (!blk->global)
        return lk_fail(msg, LK_ERR_INTERNAL, "backward called without global statistics");
    lk__ew_io io = lk__ew_io_pair(blk->slots);
    io.g = blk->grads[0].data;
    double k[LK_STATS_MAX] = {0};
    lk_v kv[LK_STATS_MAX];
    consts(inst, blk->global, k);
    for (int j = 0; j < LK_STATS_MAX; j++)
        kv[j] = lk_set(k[j]);
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    flags &= LK_EW_SIGMOID;
    if (lk__can_stream(io.g, io.xf, acc, blk->begin, plan->n_positions))
        lk__gr_loop(inst, blk, fn, flags, kv, &io, acc, 1);
    else
        lk__gr_loop(inst, blk, fn, flags, kv, &io, acc, 0);
    return LK_OK;
}

LK_AI lk_status lk_stats_backward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                  lk_consts_fn consts, lk_grad_fn fn, lk_msg *msg)
{
    return lk__stats_backward(inst, plan, blk, consts, fn, 0, msg);
}

/* The same, forming e->sig (LK_EW_SIGMOID) a vector ahead for grad. */
LK_AI lk_status lk_stats_backward_sigmoid(const void *inst, const lk_plan *plan,
                                          const lk_block *blk, lk_consts_fn consts, lk_grad_fn fn,
                                          lk_msg *msg)
{
    return lk__stats_backward(inst, plan, blk, consts, fn, LK_EW_SIGMOID, msg);
}

/* ------------------------------------------------------------------------ */
/* Families: the variant kernel sets of this compile                         */

/* Declares the variants the primary compile links to. */
#if defined(LK_BUILD_F32)
#define LK__DECL_F32(name, tgt) extern const lk_kset LK__VAR(name, tgt, f32);
#define LK__REF_F32(name, tgt)  &LK__VAR(name, tgt, f32)
#else
#define LK__DECL_F32(name, tgt)
#define LK__REF_F32(name, tgt) NULL
#endif
#if defined(LK_BUILD_AVX2)
#define LK__DECL_AVX2(name)                                                                        \
    LK__DECL_F32(name, avx2) extern const lk_kset LK__VAR(name, avx2, f64);
#define LK__REF_AVX2(name) {LK__REF_F32(name, avx2), &LK__VAR(name, avx2, f64)}
#else
#define LK__DECL_AVX2(name)
#define LK__REF_AVX2(name) {NULL, NULL}
#endif
#if defined(LK_BUILD_AVX512)
#define LK__DECL_AVX512(name)                                                                      \
    LK__DECL_F32(name, avx512) extern const lk_kset LK__VAR(name, avx512, f64);
#define LK__REF_AVX512(name) {LK__REF_F32(name, avx512), &LK__VAR(name, avx512, f64)}
#else
#define LK__DECL_AVX512(name)
#define LK__REF_AVX512(name) {NULL, NULL}
#endif

#define LK__KSET(name, fwd, bwd, nstats)                                                           \
    extern const lk_kset LK_VARIANT(name);                                                         \
    const lk_kset LK_VARIANT(name) = {fwd, bwd, nstats, LK_TARGET_NAME " " LK_PRECISION_NAME};

#if defined(LK_PRIMARY)
#define LK__FAMILY(name)                                                                           \
    LK__DECL_F32(name, portable)                                                                   \
    LK__DECL_AVX2(name)                                                                            \
    LK__DECL_AVX512(name)                                                                          \
    static const lk_kfamily name##__family = {{                                                   \
        {LK__REF_F32(name, portable), &LK__VAR(name, portable, f64)},                              \
        LK__REF_AVX2(name),                                                                        \
        LK__REF_AVX512(name),                                                                      \
    }};
#else
#define LK__FAMILY(name)
#endif

/* An elementwise family: elem is void elem(const T *inst, lk_elem *e). */
#define LK_KERNELS_ELEMENTWISE(name, T, elem, flags)                                               \
    LK_AI void name##__elem(const void *p, lk_elem *e)                                             \
    {                                                                                              \
        elem((const T *)p, e);                                                                     \
    }                                                                                              \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,      \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T local = *(const T *)inst; /* escapes nowhere: no reloads after stores */          \
        return lk_elementwise_forward(&local, plan, blk, name##__elem, (flags), msg);              \
    }                                                                                              \
    LK__KSET(name, name##__fwd, NULL, 0)                                                           \
    LK__FAMILY(name)

/* The parts of a staged element function, typed for the drivers: a stage
 * or mid part wname(p, e, k) calling fn((const T *)p, e, k), a finish part
 * wname(p, k, e) calling fn((const T *)p, k, e). Families with a forward of
 * their own (one that screens its inputs, say) declare theirs with these. */
#define LK_STAGE_PART(wname, T, fn)                                                                \
    LK_AI void wname(const void *p, const lk_elem *e, lk_kept *k)                                  \
    {                                                                                              \
        fn((const T *)p, e, k);                                                                    \
    }
#define LK_FINISH_PART(wname, T, fn)                                                               \
    LK_AI void wname(const void *p, const lk_kept *k, lk_elem *e)                                  \
    {                                                                                              \
        fn((const T *)p, k, e);                                                                    \
    }

/* The forward of a staged family from its parts name##__stage and
 * name##__finish, with mid (name##__mid, or NULL for two parts). */
#define LK__STAGED_FWD(name, T, mid, flags)                                                        \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,      \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T local = *(const T *)inst;                                                          \
        return lk__elementwise_forward(&local, plan, blk, NULL, name##__stage, mid,               \
                                       name##__finish, (flags), msg);                              \
    }                                                                                              \
    LK__KSET(name, name##__fwd, NULL, 0)                                                           \
    LK__FAMILY(name)

/* An elementwise family whose element function is split in two (see
 * lk__ew_loop): stage is void stage(const T *inst, const lk_elem *e,
 * lk_kept *k), reading e's operands only; finish is void finish(const T
 * *inst, const lk_kept *k, lk_elem *e), filling loss and gradients. */
#define LK_KERNELS_ELEMENTWISE_STAGED(name, T, stage, finish, flags)                               \
    LK_STAGE_PART(name##__stage, T, stage)                                                         \
    LK_FINISH_PART(name##__finish, T, finish)                                                      \
    LK__STAGED_FWD(name, T, NULL, flags)

/* The same in three parts, run three vectors deep (see lk__ew_loop): mid
 * is void mid(const T *inst, const lk_elem *e, lk_kept *k), reading e's
 * operands and what stage kept, and keeping what finish reads. */
#define LK_KERNELS_ELEMENTWISE_STAGED3(name, T, stage, mid, finish, flags)                         \
    LK_STAGE_PART(name##__stage, T, stage)                                                         \
    LK_STAGE_PART(name##__mid, T, mid)                                                             \
    LK_FINISH_PART(name##__finish, T, finish)                                                      \
    LK__STAGED_FWD(name, T, name##__mid, flags)

/* A two-pass family of n_stats statistics:
 *   void stats(const T *inst, lk_elem *e, lk_v *s)
 *   void consts(const void *inst, const double *global, double *k)   (scalar)
 *   void grad(const T *inst, const lk_v *k, lk_elem *e) */
#define LK_KERNELS_STATS(name, T, n_stats, stats, consts, grad, flags)                             \
    LK__STATIC_ASSERT((n_stats) >= 1 && (n_stats) <= LK_STATS_MAX,                                 \
                      "a two-pass family sums 1 to LK_STATS_MAX (8) statistics");                  \
    LK__STATIC_ASSERT(((flags) & ~(LK_EW_UNIT_TARGET | LK_EW_SIGMOID | LK_EW_NONNEG_SUM)) == 0u,   \
                      "a two-pass family takes LK_EW_UNIT_TARGET, LK_EW_SIGMOID and "              \
                      "LK_EW_NONNEG_SUM only: LK_EW_WEIGHT and the third operand are the "         \
                      "elementwise driver's");                                                     \
    LK_AI void name##__stats(const void *p, lk_elem *e, lk_v *s)                                   \
    {                                                                                              \
        stats((const T *)p, e, s);                                                                 \
    }                                                                                              \
    LK_AI void name##__grad(const void *p, const lk_v *k, lk_elem *e)                              \
    {                                                                                              \
        grad((const T *)p, k, e);                                                                  \
    }                                                                                              \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        (void)plan;                                                                                \
        const T local = *(const T *)inst;                                                          \
        return lk_stats_forward(&local, blk, name##__stats, (n_stats), (flags), msg);              \
    }                                                                                              \
    static lk_status name##__bwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T local = *(const T *)inst;                                                          \
        return lk__stats_backward(&local, plan, blk, consts, name##__grad, (flags), msg);          \
    }                                                                                              \
    LK__KSET(name, name##__fwd, name##__bwd, (n_stats))                                            \
    LK__FAMILY(name)

/* What the host does for a loss without finalize, for a family whose
 * descriptor installs its own (LK_STATS_LOSS without a finalize hook): the
 * first statistic is the sum of the losses; mean divides it by mean_norm (0
 * for a divisor of 0). batchmean needs dim 0, which finalize is not given:
 * such a loss declares a finalize hook. */
static inline lk_status lk__default_finalize(const lk_plan *plan, const double *stats,
                                             int32_t reduction, double *value, lk_msg *m)
{
    if (reduction == LK_REDUCTION_SUM) {
        *value = stats[0];
        return LK_OK;
    }
    if (reduction == LK_REDUCTION_MEAN) {
        *value = plan->mean_norm != 0.0 ? stats[0] / plan->mean_norm : 0.0;
        return LK_OK;
    }
    return lk_fail(m, LK_ERR_UNSUPPORTED,
                   "reduction %d needs the loss's finalize hook (LK_HOOKS(.finalize = ...))",
                   (int)reduction);
}

/* ------------------------------------------------------------------------ */
/* The descriptor (primary compile only)                                     */

/* The instance type of a loss without parameters. */
typedef struct lk_none {
    char unused;
} lk_none;

/* The layer's hooks of a loss (LK_HOOKS(.init = ..., ...)); every member may
 * be NULL. */
typedef struct lk_loss_hooks {
    /* Fills the instance (zeroed, sizeof the loss's type) from the
     * validated parameters, in declaration order; may refuse a
     * combination with LK_ERR_INVALID and a message. */
    lk_status (*init)(void *inst, const lk_param_value *params, lk_msg *msg);
    /* Frees what init allocated inside the instance. */
    void (*fini)(void *inst);
    /* Runs after the default plan (blocks by lk_block_positions, C-order
     * tensors, the family's statistics). */
    lk_status (*plan)(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                      lk_msg *msg);
    /* The ABI's finalize, on the loss's instance (two-pass losses). */
    lk_status (*finalize)(const void *inst, const lk_plan *plan, const double *stats,
                          int32_t reduction, double *value, lk_msg *msg);
    /* With several families: which one an instance runs (an index into
     * them). NULL: the first. */
    int (*pick)(const void *inst);
    /* The ABI's partials (since 1.5), on the loss's instance: split
     * evaluation of a loss whose plan hook sets LK_PLAN_STATS_PER_SAMPLE
     * and lk_plan_set_partials(). */
    lk_status (*partials)(const void *inst, const lk_plan *plan, const double *stats,
                          double *partials, lk_msg *msg);
} lk_loss_hooks;

/* Parenthesised so that it passes through other macros as one argument. */
#define LK_HOOKS(...) (__VA_ARGS__)
#define LK__STRIP(...) __VA_ARGS__

/* The instance the host holds: the kernels chosen at create(), then the
 * loss's own instance. */
typedef struct lk__inst {
    const lk_kset *k32, *k64;
    void (*fini)(void *inst);
} lk__inst;

/* The loss's own instance, 64 bytes into the same allocation. */
#define LK__USER_AT 64
static inline void *lk__user(const lk__inst *in)
{
    return (char *)(uintptr_t)in + LK__USER_AT;
}

/* Which instruction sets LOSSKIT_SIMD and the CPU allow: 0 portable, 1 AVX2,
 * 2 AVX-512. */
static inline int lk__isa_allowed(void)
{
    int limit = lk_simd_limit(), isa = 0;
    if (limit == LK_SIMD_PORTABLE)
        return 0;
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        isa = 1;
    if (isa == 1 && limit == LK_SIMD_BEST && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        isa = 2;
#endif
    return isa;
}

/* The widest built variant the CPU and LOSSKIT_SIMD allow, per precision;
 * float32 data falls back to double lanes where no float variant is built. */
static inline void lk__pick(const lk_kfamily *f, lk__inst *in)
{
    int isa = lk__isa_allowed();
    while (isa > 0 && !f->v[isa][1])
        isa--;
    in->k64 = f->v[isa][1];
    in->k32 = f->v[isa][0] ? f->v[isa][0] : in->k64;
}

static inline lk_status lk__create(const lk_loss_hooks *spec, const lk_kfamily *const *families,
                                   size_t size, const lk_create_args *args, void **instance,
                                   lk_msg *msg)
{
    lk__inst *in = (lk__inst *)calloc(1, LK__USER_AT + size);
    if (!in)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory");
    if (spec->init) {
        lk_status st = spec->init(lk__user(in), args->params, msg);
        if (st != LK_OK) {
            free(in);
            return st;
        }
    }
    in->fini = spec->fini;
    lk__pick(families[spec->pick ? spec->pick(lk__user(in)) : 0], in);
    const lk_host *h = args->host;
    if (h && h->log) {
        char line[160];
        snprintf(line, sizeof line, "%s: %s and %s kernels", args->desc ? args->desc->id : "?",
                 in->k32->name, in->k64->name);
        h->log(h->ctx, LK_LOG_DEBUG, line);
    }
    *instance = in;
    return LK_OK;
}

static inline void lk__destroy(void *instance)
{
    lk__inst *in = (lk__inst *)instance;
    if (in && in->fini)
        in->fini(lk__user(in));
    free(in);
}

static inline int lk__c_order(const lk_tensor *t)
{
    if (!t->strides || !t->shape)
        return 1;
    int64_t expect = 1;
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] == 0)
            return 1;
        if (t->shape[d] != 1 && t->strides[d] != expect)
            return 0;
        expect *= t->shape[d];
    }
    return 1;
}

/* The kernels of a call: float lanes when every floating tensor is
 * float32. */
static inline const lk_kset *lk__kset(const lk__inst *in, const lk_tensor *slots, int32_t n)
{
    for (int32_t s = 0; s < n; s++)
        if (slots[s].data && slots[s].dtype == LK_DTYPE_F64)
            return in->k64;
    return in->k32;
}

static inline int32_t lk__n_slots(const lk_loss_desc *d)
{
    int32_t n = 0;
    while (d->slots[n])
        n++;
    return n;
}

static inline lk_status lk__plan(const lk_loss_hooks *spec, const lk_loss_desc *d,
                                 const void *instance, const lk_tensor *slots, int32_t reduction,
                                 lk_plan *plan, lk_msg *msg)
{
    const lk__inst *in = (const lk__inst *)instance;
    int32_t n = lk__n_slots(d);
    for (int32_t s = 0; s < n; s++)
        if (slots[s].data && !lk__c_order(&slots[s]))
            return lk_fail(msg, LK_ERR_UNSUPPORTED, "slot %s is strided; this loss needs C-order tensors",
                           d->slots[s]->name);
    plan->block_positions = lk_block_positions(plan->n_positions);
    if (in->k64->n_stats)
        plan->n_stats = in->k64->n_stats;
    return spec->plan ? spec->plan(lk__user(in), slots, reduction, plan, msg) : LK_OK;
}

/* Standard slots, for the primary compile's descriptors. */
#define LK__SLOT(var, nm, dc, fl, shp, vals)                                                       \
    static const lk_slot_desc var LK__UNUSED = {nm,   dc, LK_DTYPES_FLOAT,     fl, shp,            \
                                                vals, 0,  LK_BATCH_UNDECLARED, 0};
LK__SLOT(lk_slot_logits, "input", "logits, any shape", LK_SLOT_DIFFERENTIABLE, LK_SHAPE_ANY,
         LK_VALUES_REAL)
LK__SLOT(lk_slot_prediction, "input", "predictions, any shape", LK_SLOT_DIFFERENTIABLE,
         LK_SHAPE_ANY, LK_VALUES_REAL)
LK__SLOT(lk_slot_target01, "target", "targets in [0, 1], shaped like input", 0,
         LK_SHAPE_LIKE_INPUT, LK_VALUES_UNIT)
LK__SLOT(lk_slot_target, "target", "targets of any value, shaped like input", 0,
         LK_SHAPE_LIKE_INPUT, LK_VALUES_REAL)
LK__SLOT(lk_slot_weight, "weight", "optional per-element weight, shaped like input",
         LK_SLOT_OPTIONAL, LK_SHAPE_LIKE_INPUT, LK_VALUES_POSITIVE)
static const lk_slot_desc *const lk_slots_weighted[] LK__UNUSED = {
    &lk_slot_prediction, &lk_slot_target, &lk_slot_weight, NULL};
static const lk_slot_desc *const lk_slots_pair[] LK__UNUSED = {&lk_slot_prediction,
                                                               &lk_slot_target, NULL};

#define LK_REDUCTIONS_ELEMENTWISE                                                                  \
    (LK_REDUCTION_BIT(LK_REDUCTION_NONE) | LK_REDUCTION_BIT(LK_REDUCTION_MEAN) |                   \
     LK_REDUCTION_BIT(LK_REDUCTION_SUM))

#if defined(__clang__)
#define LK__OVERRIDE_INIT_OFF                                                                      \
    _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Winitializer-overrides\"")
#define LK__OVERRIDE_INIT_ON _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define LK__OVERRIDE_INIT_OFF                                                                      \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Woverride-init\"")
#define LK__OVERRIDE_INIT_ON _Pragma("GCC diagnostic pop")
#else
#define LK__OVERRIDE_INIT_OFF
#define LK__OVERRIDE_INIT_ON
#endif

/* Defines `const lk_loss_desc id_desc` for instance type T over the
 * families fams (LK_FAMILIES(&a__family, ...)). The trailing arguments are
 * lk_loss_desc members (.summary required; .version, .params, .slots,
 * .reductions, .default_reduction override the defaults given here). */
#if defined(LK_PRIMARY)
#define LK_LOSS_DESC(lid, T, loss_flags, finalize_fn, backward_fn, fams, dslots, dreds, hooks,     \
                     ...)                                                                          \
    static const lk_loss_hooks lid##__hooks = {LK__STRIP hooks};                                   \
    static const lk_kfamily *const lid##__families[] = fams;                                       \
    extern const lk_loss_desc lid##_desc;                                                          \
    static lk_status lid##__create(const lk_create_args *a, void **inst, lk_msg *m)                \
    {                                                                                              \
        return lk__create(&lid##__hooks, lid##__families, sizeof(T), a, inst, m);                  \
    }                                                                                              \
    /* lk__slots: a plugin's own file-scope `slots` (the templates' array)                         \
     * must not be shadowed by a parameter (-Wshadow) */                                           \
    static lk_status lid##__plan(const void *inst, const lk_tensor *lk__slots, int32_t reduction,  \
                                 lk_plan *plan, lk_msg *m)                                         \
    {                                                                                              \
        return lk__plan(&lid##__hooks, &lid##_desc, inst, lk__slots, reduction, plan, m);          \
    }                                                                                              \
    static lk_status lid##__forward(const void *inst, const lk_plan *plan, const lk_block *blk,    \
                                    lk_msg *m)                                                     \
    {                                                                                              \
        const lk__inst *in = (const lk__inst *)inst;                                               \
        return lk__kset(in, blk->slots, lk__n_slots(&lid##_desc))                                  \
            ->forward(lk__user(in), plan, blk, m);                                                 \
    }                                                                                              \
    LK__UNUSED static lk_status lid##__backward(const void *inst, const lk_plan *plan,             \
                                                const lk_block *blk, lk_msg *m)                    \
    {                                                                                              \
        const lk__inst *in = (const lk__inst *)inst;                                               \
        return lk__kset(in, blk->slots, lk__n_slots(&lid##_desc))                                  \
            ->backward(lk__user(in), plan, blk, m);                                                \
    }                                                                                              \
    LK__UNUSED static lk_status lid##__finalize(const void *inst, const lk_plan *plan,             \
                                                const double *stats, int32_t reduction,            \
                                                double *value, lk_msg *m)                          \
    {                                                                                              \
        if (!lid##__hooks.finalize) /* the host's default: the first statistic, a sum */           \
            return lk__default_finalize(plan, stats, reduction, value, m);                         \
        return lid##__hooks.finalize(lk__user((const lk__inst *)inst), plan, stats, reduction,     \
                                     value, m);                                                    \
    }                                                                                              \
    static lk_status lid##__partials(const void *inst, const lk_plan *plan, const double *stats,   \
                                     double *partials, lk_msg *m)                                  \
    {                                                                                              \
        if (!lid##__hooks.partials)                                                                \
            return lk_fail(m, LK_ERR_INTERNAL,                                                     \
                           "plan set n_partials, but the loss has no partials hook "               \
                           "(LK_HOOKS(.partials = ...))");                                         \
        return lid##__hooks.partials(lk__user((const lk__inst *)inst), plan, stats, partials, m);  \
    }                                                                                              \
    LK__OVERRIDE_INIT_OFF                                                                          \
    const lk_loss_desc lid##_desc = {.id = #lid,                                                   \
                                     .version = "1.0.0",                                           \
                                     .slots = dslots,                                              \
                                     .reductions = dreds,                                          \
                                     .default_reduction = LK_REDUCTION_MEAN,                       \
                                     .flags = (loss_flags),                                        \
                                     .create = lid##__create,                                      \
                                     .destroy = lk__destroy,                                       \
                                     .plan = lid##__plan,                                          \
                                     .forward = lid##__forward,                                    \
                                     .finalize = finalize_fn,                                      \
                                     .backward = backward_fn,                                      \
                                     .partials = lid##__partials,                                  \
                                     __VA_ARGS__};                                                 \
    LK__OVERRIDE_INIT_ON
#else
/* The other compiles see the same names, so that nothing the primary
 * compile uses is an unused static here; the compiler drops them. */
#define LK_LOSS_DESC(lid, T, loss_flags, finalize_fn, backward_fn, fams, dslots, dreds, hooks, ...) \
    static const lk_loss_hooks lid##__hooks LK__UNUSED = {LK__STRIP hooks};                                    \
    static const lk_loss_desc lid##__desc LK__UNUSED = {__VA_ARGS__};
#endif

#define LK_FAMILIES(...) {__VA_ARGS__}

/* One line for an elementwise loss: its kernels and its descriptor. The
 * default slots are input, target and (with LK_EW_WEIGHT) weight; the
 * default reductions none, mean and sum. */
#define LK_ELEMENTWISE_LOSS(lid, T, elem, flags, hooks, ...)                                        \
    LK_KERNELS_ELEMENTWISE(lid, T, elem, flags)                                                     \
    LK_LOSS_DESC(lid, T, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&lid##__family),                     \
                 ((flags) & LK_EW_WEIGHT) ? lk_slots_weighted : lk_slots_pair,                     \
                 LK_REDUCTIONS_ELEMENTWISE, hooks, __VA_ARGS__)

/* One line for a two-pass loss on (input, target) of n_stats statistics,
 * reduction mean: its kernels and its descriptor (hooks.finalize
 * required). */
#define LK_STATS_LOSS(lid, T, n_stats, stats, consts, grad, flags, hooks, ...)                      \
    LK_KERNELS_STATS(lid, T, n_stats, stats, consts, grad, flags)                                   \
    LK_LOSS_DESC(lid, T, 0, lid##__finalize, lid##__backward, LK_FAMILIES(&lid##__family),             \
                 lk_slots_pair, LK_REDUCTION_BIT(LK_REDUCTION_MEAN), hooks, __VA_ARGS__)

/* The plugin's entry point, in the primary compile only. */
#if defined(LK_PRIMARY)
#define LK_PLUGIN(name, version, summary, ...)                                                     \
    static const lk_loss_desc *const lk__plugin_losses[] = {__VA_ARGS__, NULL};                    \
    static const lk_plugin lk__plugin = {LK_ABI_MAJOR, LK_ABI_MINOR, name, version, summary,       \
                                         lk__plugin_losses};                                       \
    LK_PLUGIN_ENTRY(lk__plugin)
#else
#define LK_PLUGIN(name, version, summary, ...)
#endif

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_LOSS_H */
