/* simd_avx2.c: the AVX2+FMA kernels of the tutorial family.
 *
 * This translation unit alone is compiled with -mavx2 -mfma; nothing in it
 * runs unless tut_simd_choice() found both on the CPU (see tutorial.h). The
 * kernels read float32 or float64 straight from the caller's tensors, compute
 * in double lanes of four (__m256d) and write the caller's dtype back: one
 * pass over memory. exp, log and pow are glibc's libmvec (_ZGVdN4v_exp,
 * _ZGVdN4v_log, _ZGVdN4vv_pow: at most 4 ulp, with the C library's results
 * for 0, +-inf and NaN). log1p(e), e in [0, 1], is taken as
 * log(u) + (e - (u - 1)) / u with u = 1 + e rounded, the classic correction
 * that makes it as accurate as log1p (at most 2 ulp from glibc's scalar
 * log1p of the same e, measured on 32M values; 5 ulp for the whole
 * log1p(exp(-a))): libmvec's log costs a third less than its log1p, and
 * 1 / u is the sigmoid's division, already there.
 *
 * FMA is required because libmvec's AVX2 variants use it. Our own arithmetic
 * does not: every formula mirrors its scalar form in tutorial.h, focal.c,
 * overlap.c or multiclass.c operation for operation (ISO C mode, so no
 * contraction either), and the two paths differ only by the math library's
 * last bits and by the order of the double sums. float32 and float64 data
 * run the same instructions on the same lanes, so a float32 input gives
 * exactly the result of its float64 upcast — for the blocks that stay here:
 * the entry points hand blocks whose tensors are all float32 to the
 * float32-lane kernels of simd_f32.h, except for mse and l1, and so do the
 * multiclass entry points with float32 logits and int64 class indices or
 * float32 targets (simd_f32_mc.h). A block's result depends only on the
 * block's data, never on the thread that runs it.
 *
 * Loops take their block in steps of whole vectors, sums alternating
 * between two accumulators, then a ragged tail whose missing lanes are
 * padded with harmless values and masked out of every sum and store. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "tutorial.h"

#if !defined(__AVX2__) || !defined(__FMA__)
#error "simd_avx2.c is compiled with -mavx2 -mfma"
#endif

typedef __m256d vd;

/* glibc's libmvec, vector function ABI variant 'd' (AVX2, four doubles). */
__m256d _ZGVdN4v_exp(__m256d x);
__m256d _ZGVdN4v_log(__m256d x);
__m256d _ZGVdN4vv_pow(__m256d x, __m256d y);

#define AI static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------ */
/* Lanes                                                                     */

AI vd v1(double a)
{
    return _mm256_set1_pd(a);
}

AI vd vzero(void)
{
    return _mm256_setzero_pd();
}

AI vd vadd(vd a, vd b)
{
    return _mm256_add_pd(a, b);
}

AI vd vsub(vd a, vd b)
{
    return _mm256_sub_pd(a, b);
}

AI vd vmul(vd a, vd b)
{
    return _mm256_mul_pd(a, b);
}

AI vd vdiv(vd a, vd b)
{
    return _mm256_div_pd(a, b);
}

AI vd vand(vd a, vd b)
{
    return _mm256_and_pd(a, b);
}

AI vd vor(vd a, vd b)
{
    return _mm256_or_pd(a, b);
}

/* a where m is clear, 0 where it is set. */
AI vd vclear(vd m, vd a)
{
    return _mm256_andnot_pd(m, a);
}

AI vd vabs(vd a)
{
    return _mm256_andnot_pd(v1(-0.0), a);
}

AI vd vneg(vd a)
{
    return _mm256_xor_pd(a, v1(-0.0));
}

/* m ? a : b, lane by lane (m all ones or all zeros). */
AI vd vsel(vd m, vd a, vd b)
{
    return _mm256_blendv_pd(b, a, m);
}

AI vd veq(vd a, double b)
{
    return _mm256_cmp_pd(a, v1(b), _CMP_EQ_OQ);
}

AI vd vge0(vd a)
{
    return _mm256_cmp_pd(a, vzero(), _CMP_GE_OQ);
}

/* a > 0 ? a : 0, with 0 for NaN, as the scalar (a > 0.0 ? a : 0.0). */
AI vd vpospart(vd a)
{
    return vand(_mm256_cmp_pd(a, vzero(), _CMP_GT_OQ), a);
}

/* Lanes whose target lies outside [0, 1] (NaN passes). */
AI vd voutside01(vd t)
{
    return vor(_mm256_cmp_pd(t, vzero(), _CMP_LT_OQ), _mm256_cmp_pd(t, v1(1.0), _CMP_GT_OQ));
}

AI int vany(vd m)
{
    return _mm256_movemask_pd(m) != 0;
}

/* The first k lanes set. */
AI vd vlanes(int k)
{
    return _mm256_cmp_pd(_mm256_set_pd(3.0, 2.0, 1.0, 0.0), v1((double)k), _CMP_LT_OQ);
}

/* tut_mul0: c a, but 0 where c is 0 even when a is infinite. */
AI vd vmul0(vd c, vd a)
{
    return vclear(veq(c, 0.0), vmul(c, a));
}

/* ((a0 + a2) + (a1 + a3)): a fixed order. */
AI double vsum(vd a)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* ------------------------------------------------------------------------ */
/* Memory: f32 is a compile-time constant where the loops are specialised    */

AI double ld1(const void *p, int f32, int64_t i)
{
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

AI vd ld4(const void *p, int f32, int64_t i)
{
    if (f32)
        return _mm256_cvtps_pd(_mm_loadu_ps((const float *)p + i));
    return _mm256_loadu_pd((const double *)p + i);
}

/* The first k lanes from p[i..], the others pad. */
AI vd ldk(const void *p, int f32, int64_t i, int k, double pad)
{
    if (k == 4)
        return ld4(p, f32, i);
    double b[4] = {pad, pad, pad, pad};
    for (int j = 0; j < k; j++)
        b[j] = ld1(p, f32, i + j);
    return _mm256_loadu_pd(b);
}

AI void stk(void *p, int f32, int64_t i, int k, vd v)
{
    if (k == 4) {
        if (f32)
            _mm_storeu_ps((float *)p + i, _mm256_cvtpd_ps(v));
        else
            _mm256_storeu_pd((double *)p + i, v);
        return;
    }
    double b[4];
    _mm256_storeu_pd(b, v);
    for (int j = 0; j < k; j++) {
        if (f32)
            ((float *)p)[i + j] = (float)b[j];
        else
            ((double *)p)[i + j] = b[j];
    }
}

/* A gradient store: scale g, added to what is there with accumulate. */
AI void st_grad(void *p, int f32, int64_t i, int k, vd g, double scale, int accumulate)
{
    vd s = vmul(v1(scale), g);
    if (accumulate)
        s = vadd(ldk(p, f32, i, k, 0.0), s);
    stk(p, f32, i, k, s);
}

/* ------------------------------------------------------------------------ */
/* The primitives of tutorial.h: a = |x|, e = exp(-a), r = 1 / (1 + e)     */

typedef struct vprim {
    vd a, e, r, pos;
} vprim;

/* exp(-|x|): the one exp of every sigmoid-family kernel. */
AI vd vexp_neg_abs(vd x)
{
    return _ZGVdN4v_exp(vneg(vabs(x)));
}

/* The primitives from x and e = exp(-|x|). */
AI vprim vprims(vd x, vd e)
{
    vprim p;
    p.a = vabs(x);
    p.e = e;
    p.r = vdiv(v1(1.0), vadd(v1(1.0), e));
    p.pos = vge0(x);
    return p;
}

AI vd vsig(const vprim *p)
{
    return vsel(p->pos, p->r, vmul(p->e, p->r));
}

AI vd vsig_neg(const vprim *p)
{
    return vsel(p->pos, vmul(p->e, p->r), p->r);
}

AI vd vdsig(const vprim *p)
{
    return vmul(vmul(p->e, p->r), p->r);
}

AI vd vbce(const vprim *p, vd L, vd t, vd pw)
{
    vd lw = vadd(v1(1.0), vmul(vsub(pw, v1(1.0)), t));
    return vadd(vmul0(vsel(p->pos, vsub(v1(1.0), t), vmul(pw, t)), p->a), vmul(lw, L));
}

AI vd vbce_grad(const vprim *p, vd t, vd pw)
{
    vd lw = vadd(v1(1.0), vmul(vsub(pw, v1(1.0)), t));
    return vsub(vmul(lw, vsig(p)), vmul(pw, t));
}

/* log1p(e) from log(1 + e) (see the top of the file). */
AI vd vlog1p_fin(vd log_u, const vprim *p)
{
    vd u = vadd(v1(1.0), p->e);
    return vadd(log_u, vmul(vsub(p->e, vsub(u, v1(1.0))), p->r));
}

AI vd vpowg(vd q, double gamma)
{
    if (gamma == 0.0)
        return v1(1.0);
    if (gamma == 1.0)
        return q;
    if (gamma == 2.0)
        return vmul(q, q);
    return _ZGVdN4vv_pow(q, v1(gamma));
}

/* ------------------------------------------------------------------------ */
/* Chunks                                                                    */
/*
 * The kernels that call libmvec take their block in chunks of CHUNK_V
 * vectors: load and convert, then every exp of the chunk, then every log,
 * then the arithmetic. Calls of one function back to back do not depend on
 * each other, so the CPU overlaps them; a dependent exp -> log1p -> divide
 * chain per vector would run at the functions' latency instead.
 */

#define CHUNK_V 8
#define CHUNK_P (4 * CHUNK_V)

typedef struct chunk {
    vd x[CHUNK_V], t[CHUNK_V], e[CHUNK_V];
    vd log_u[CHUNK_V]; /* log(1 + e), for vlog1p_fin */
} chunk;

AI int lanes_of(int n, int v)
{
    return n - 4 * v < 4 ? n - 4 * v : 4;
}

/* Loads n <= CHUNK_P positions from i (missing lanes 0); returns the
 * number of vectors. */
AI int chunk_load(chunk *c, const void *xp, int xf, const void *tp, int tf, int64_t i, int n)
{
    int nv = (n + 3) / 4;
    for (int v = 0; v < nv; v++) {
        c->x[v] = ldk(xp, xf, i + 4 * v, lanes_of(n, v), 0.0);
        c->t[v] = ldk(tp, tf, i + 4 * v, lanes_of(n, v), 0.0);
    }
    return nv;
}

AI int chunk_targets_ok(const chunk *c, int nv)
{
    vd bad = vzero();
    for (int v = 0; v < nv; v++)
        bad = vor(bad, voutside01(c->t[v]));
    return !vany(bad);
}

AI void chunk_exp(chunk *c, int nv)
{
    for (int v = 0; v < nv; v++)
        c->e[v] = vexp_neg_abs(c->x[v]);
}

AI void chunk_log(chunk *c, int nv)
{
    for (int v = 0; v < nv; v++)
        c->log_u[v] = _ZGVdN4v_log(vadd(v1(1.0), c->e[v]));
}

/* Lane v of a chunk of n positions, masked to its live lanes. */
AI vd live_only(vd a, int n, int v)
{
    int k = lanes_of(n, v);
    return k == 4 ? a : vand(a, vlanes(k));
}

/* ------------------------------------------------------------------------ */
/* Fused per-position losses (elementwise.c, focal.c)                        */

AI void mse_core(vd x, vd t, vd *l, vd *g)
{
    vd d = vsub(x, t);
    *l = vmul(d, d);
    *g = vmul(v1(2.0), vsub(x, t));
}

/* |d|; sign(d) with 0 at 0 and NaN for NaN. */
AI void l1_core(vd x, vd t, vd *l, vd *g)
{
    vd d = vsub(x, t);
    vd one = vand(_mm256_cmp_pd(d, vzero(), _CMP_NEQ_OQ), v1(1.0));
    *l = vabs(d);
    *g = vsel(_mm256_cmp_pd(d, d, _CMP_UNORD_Q), d, vor(one, vand(d, v1(-0.0))));
}

/* focal.c's focal_binary, for lanes whose target is 0 or 1. */
AI void focal_binary(const tut_inst *in, const vprim *p, vd L, vd x, vd t, vd at, vd *l, vd *g)
{
    double gamma = in->gamma;
    vd one = v1(1.0);
    vd sgn = vsel(veq(t, 1.0), one, v1(-1.0));
    vd z = vmul(sgn, x);
    vd zpos = vge0(z);
    vd er = vmul(p->e, p->r);
    vd smz = vsel(zpos, er, p->r);
    vd sz = vsel(zpos, p->r, er);
    vd ce = vadd(vpospart(vneg(z)), L);
    vd m;
    if (gamma == 0.0)
        m = one;
    else if (gamma == 1.0)
        m = smz;
    else if (gamma == 2.0)
        m = vmul(smz, smz);
    else
        m = _ZGVdN4v_exp(vmul(v1(-gamma), vadd(vpospart(z), L)));
    *g = vmul(vmul(vmul(vneg(sgn), at), m), vadd(smz, vmul(v1(gamma), vmul0(sz, ce))));
    *l = vmul0(at, vmul(m, ce));
}

/* focal.c's focal_soft, for the other lanes. */
AI void focal_soft(const tut_inst *in, const vprim *p, vd L, vd t, vd at, vd *l, vd *g)
{
    double gamma = in->gamma;
    vd one = v1(1.0);
    vd pp = vsig(p), p1 = vsig_neg(p);
    vd q = vadd(vmul(pp, vsub(one, t)), vmul(p1, t));
    vd ce = vbce(p, L, t, one);
    vd m = vpowg(q, gamma);
    vd dm = gamma == 0.0 ? vzero() : vclear(veq(q, 0.0), vmul(v1(gamma), vpowg(q, gamma - 1.0)));
    vd corr = vmul(vmul(dm, vmul0(vmul(pp, p1), ce)), vsub(vmul(v1(2.0), t), one));
    *g = vmul(at, vsub(vmul(vsub(pp, t), m), corr));
    *l = vmul0(at, vmul(m, ce));
}

AI void focal_core(const tut_inst *in, const vprim *p, vd L, vd x, vd t, vd *l, vd *g)
{
    double alpha = in->alpha;
    vd at =
        alpha < 0.0 ? v1(1.0) : vadd(vmul(v1(alpha), t), vmul(v1(1.0 - alpha), vsub(v1(1.0), t)));
    vd binary = vor(veq(t, 0.0), veq(t, 1.0));
    int mask = _mm256_movemask_pd(binary);
    vd lb = vzero(), gb = vzero(), ls = vzero(), gs = vzero();
    if (mask != 0)
        focal_binary(in, p, L, x, t, at, &lb, &gb);
    if (mask != 0xF)
        focal_soft(in, p, L, t, at, &ls, &gs);
    *l = vsel(binary, lb, ls);
    *g = vsel(binary, gb, gs);
}

/* pos_weight of k positions from index *c of the last dimension on. */
AI vd pos_weights(const tut_inst *in, int64_t *c, int k)
{
    if (in->n_pw <= 1)
        return v1(in->n_pw == 1 ? in->pw[0] : 1.0);
    double b[4] = {1.0, 1.0, 1.0, 1.0};
    for (int j = 0; j < k; j++) {
        b[j] = in->pw[*c];
        if (++*c == in->n_pw)
            *c = 0;
    }
    return _mm256_loadu_pd(b);
}

typedef struct fused_io {
    const tut_inst *in;
    const void *x, *t, *w; /* w NULL: no weight */
    void *out, *g;         /* NULL: not wanted */
    double scale;
    int accumulate;
    int64_t pw_index;
} fused_io;

/* The common tail of every fused kernel: weight, sum, write out. */
AI void fused_emit(fused_io *f, int xf, int wf, int64_t i, int k, vd l, vd g, vd *acc)
{
    if (f->w) {
        vd w = ldk(f->w, wf, i, k, 0.0);
        l = vmul0(w, l);
        g = vmul0(w, g);
    }
    *acc = vadd(*acc, k == 4 ? l : vand(l, vlanes(k)));
    if (f->out)
        stk(f->out, xf, i, k, l);
    if (f->g)
        st_grad(f->g, xf, i, k, g, f->scale, f->accumulate);
}

/* mse and l1 call no library function: a plain loop, eight positions a step
 * into two accumulators. */
AI void plain_step(fused_io *f, int kind, int xf, int tf, int wf, int64_t i, int k, vd *acc)
{
    vd x = ldk(f->x, xf, i, k, 0.0), t = ldk(f->t, tf, i, k, 0.0), l, g;
    if (kind == TUT_K_MSE)
        mse_core(x, t, &l, &g);
    else
        l1_core(x, t, &l, &g);
    fused_emit(f, xf, wf, i, k, l, g, acc);
}

AI lk_status plain_loop(fused_io *f, int kind, int xf, int tf, int wf, int64_t begin, int64_t end,
                        double *sum, lk_msg *msg)
{
    vd acc[2] = {vzero(), vzero()};
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        plain_step(f, kind, xf, tf, wf, i, 4, &acc[0]);
        plain_step(f, kind, xf, tf, wf, i + 4, 4, &acc[1]);
    }
    int64_t rest = end - i;
    if (rest > 0)
        plain_step(f, kind, xf, tf, wf, i, rest > 4 ? 4 : (int)rest, &acc[0]);
    if (rest > 4)
        plain_step(f, kind, xf, tf, wf, i + 4, (int)rest - 4, &acc[1]);
    *sum = vsum(vadd(acc[0], acc[1]));
    return LK_OK;
}

/* bce_with_logits and focal: n positions from i, by chunk phases. */
AI lk_status logit_chunk(fused_io *f, int kind, int xf, int tf, int wf, int64_t i, int n, vd *acc,
                         lk_msg *msg)
{
    chunk c;
    int nv = chunk_load(&c, f->x, xf, f->t, tf, i, n);
    if (!chunk_targets_ok(&c, nv))
        return tut_first_bad_target(f->t, tf, i, n, msg);
    chunk_exp(&c, nv);
    chunk_log(&c, nv);
    for (int v = 0; v < nv; v++) {
        int k = lanes_of(n, v);
        vprim p = vprims(c.x[v], c.e[v]);
        vd L = vlog1p_fin(c.log_u[v], &p), l, g;
        if (kind == TUT_K_BCE) {
            vd pw = pos_weights(f->in, &f->pw_index, k);
            l = vbce(&p, L, c.t[v], pw);
            g = vbce_grad(&p, c.t[v], pw);
        } else {
            focal_core(f->in, &p, L, c.x[v], c.t[v], &l, &g);
        }
        fused_emit(f, xf, wf, i + 4 * v, k, l, g, &acc[v & 1]);
    }
    return LK_OK;
}

AI lk_status logit_loop(fused_io *f, int kind, int xf, int tf, int wf, int64_t begin, int64_t end,
                        double *sum, lk_msg *msg)
{
    vd acc[2] = {vzero(), vzero()};
    lk_status st = LK_OK;
    int64_t i = begin;
    for (; st == LK_OK && i + CHUNK_P <= end; i += CHUNK_P)
        st = logit_chunk(f, kind, xf, tf, wf, i, CHUNK_P, acc, msg);
    if (st == LK_OK && i < end)
        st = logit_chunk(f, kind, xf, tf, wf, i, (int)(end - i), acc, msg);
    *sum = vsum(vadd(acc[0], acc[1]));
    return st;
}

/* The loops work on a local copy of the io, whose address escapes nowhere:
 * else every store through a data pointer would make the compiler reload
 * the pointers from *f. */
AI lk_status fused_loop(fused_io *f, int kind, int xf, int tf, int wf, int64_t begin, int64_t end,
                        double *sum, lk_msg *msg)
{
    fused_io local = *f;
    if (kind == TUT_K_MSE || kind == TUT_K_L1)
        return plain_loop(&local, kind, xf, tf, wf, begin, end, sum, msg);
    return logit_loop(&local, kind, xf, tf, wf, begin, end, sum, msg);
}

/* One specialisation per loss and dtype set: all float32, all float64, and
 * mixed dtypes with the dtype tests left in the loop. */
#define FUSED_FN(name, kind)                                                                       \
    static lk_status name(fused_io *f, int xf, int tf, int wf, int64_t b, int64_t e, double *s,    \
                          lk_msg *m)                                                               \
    {                                                                                              \
        if (xf && tf && (wf || !f->w))                                                             \
            return fused_loop(f, kind, 1, 1, 1, b, e, s, m);                                       \
        if (!xf && !tf && (!wf || !f->w))                                                          \
            return fused_loop(f, kind, 0, 0, 0, b, e, s, m);                                       \
        return fused_loop(f, kind, xf, tf, wf, b, e, s, m);                                        \
    }

FUSED_FN(fused_mse, TUT_K_MSE)
FUSED_FN(fused_l1, TUT_K_L1)
FUSED_FN(fused_bce, TUT_K_BCE)
FUSED_FN(fused_focal, TUT_K_FOCAL)

/* ------------------------------------------------------------------------ */
/* Entry points                                                              */
/*
 * A block whose tensors are all float32 goes to the float-lane kernels of
 * simd_f32.h (AVX-512 when the instance chose it, else AVX2) for every loss
 * that calls exp; mse and l1, which run at memory speed in double lanes, and
 * every block with a float64 tensor stay here.
 */

/* The float32-lane kernels the instance chose. */
static const tut_f32_kernels *f32k(const tut_inst *inst)
{
#if TUT_HAVE_AVX512
    if (inst->simd == TUT_SIMD_AVX512)
        return &tut_f32_avx512;
#else
    (void)inst;
#endif
    return &tut_f32_avx2;
}

/* The input and target slots of a binary block are float32. */
static int binary_f32(const lk_block *blk)
{
    return blk->slots[0].dtype == LK_DTYPE_F32 && blk->slots[1].dtype == LK_DTYPE_F32;
}

lk_status tut_avx2_fused(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg)
{
    int weighted = kind != TUT_K_FOCAL && blk->slots[2].data;
    if ((kind == TUT_K_BCE || kind == TUT_K_FOCAL) && binary_f32(blk) &&
        (!weighted || blk->slots[2].dtype == LK_DTYPE_F32))
        return f32k(inst)->fused(inst, kind, blk, msg);
    fused_io f = {
        .in = inst,
        .x = blk->slots[0].data,
        .t = blk->slots[1].data,
        .w = weighted ? blk->slots[2].data : NULL,
        .out = blk->out ? blk->out->data : NULL,
        .g = blk->grads ? blk->grads[0].data : NULL,
        .scale = blk->grad_scale,
        .accumulate = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0,
        .pw_index = inst->n_pw > 1 ? blk->begin % inst->n_pw : 0,
    };
    int xf = blk->slots[0].dtype == LK_DTYPE_F32, tf = blk->slots[1].dtype == LK_DTYPE_F32;
    int wf = weighted && blk->slots[2].dtype == LK_DTYPE_F32;
    double sum = 0.0;
    lk_status st;
    switch (kind) {
    case TUT_K_MSE: st = fused_mse(&f, xf, tf, wf, blk->begin, blk->end, &sum, msg); break;
    case TUT_K_L1: st = fused_l1(&f, xf, tf, wf, blk->begin, blk->end, &sum, msg); break;
    case TUT_K_BCE: st = fused_bce(&f, xf, tf, wf, blk->begin, blk->end, &sum, msg); break;
    default: st = fused_focal(&f, xf, tf, wf, blk->begin, blk->end, &sum, msg); break;
    }
    if (st == LK_OK)
        blk->stats[0] += sum;
    return st;
}

/* ------------------------------------------------------------------------ */
/* Statistics of the overlap losses and focal_mean_bce (overlap.c, focal.c)  */

/* The sums, in the order of TUT_ST_* (tut_add_block_sums). */
enum { A_I = TUT_ST_I, A_P = TUT_ST_P, A_T = TUT_ST_T, A_BCE = TUT_ST_BCE, N_ACC };

/* n positions from i into the accumulators acc[2][N_ACC]. */
AI lk_status stats_chunk(int kind, const void *xp, const void *tp, int xf, int tf, int64_t i, int n,
                         vd (*acc)[N_ACC], lk_msg *msg)
{
    chunk c;
    int nv = chunk_load(&c, xp, xf, tp, tf, i, n);
    if (!chunk_targets_ok(&c, nv))
        return tut_first_bad_target(tp, tf, i, n, msg);
    chunk_exp(&c, nv);
    if (kind == TUT_K_DICE_BCE || kind == TUT_K_FMB)
        chunk_log(&c, nv);
    for (int v = 0; v < nv; v++) {
        vd *a = acc[v & 1];
        vprim p = vprims(c.x[v], c.e[v]);
        if (kind != TUT_K_FMB) {
            vd pp = live_only(vsig(&p), n, v);
            a[A_I] = vadd(a[A_I], vmul(pp, c.t[v]));
            a[A_P] = vadd(a[A_P], pp);
            a[A_T] = vadd(a[A_T], c.t[v]);
        }
        if (kind == TUT_K_DICE_BCE || kind == TUT_K_FMB)
            a[A_BCE] = vadd(a[A_BCE],
                            live_only(vbce(&p, vlog1p_fin(c.log_u[v], &p), c.t[v], v1(1.0)), n, v));
    }
    return LK_OK;
}

AI lk_status stats_loop(int kind, const void *xp, const void *tp, int xf, int tf, int64_t begin,
                        int64_t end, double *out, lk_msg *msg)
{
    vd acc[2][N_ACC];
    for (int s = 0; s < N_ACC; s++)
        acc[0][s] = acc[1][s] = vzero();
    lk_status st = LK_OK;
    int64_t i = begin;
    for (; st == LK_OK && i + CHUNK_P <= end; i += CHUNK_P)
        st = stats_chunk(kind, xp, tp, xf, tf, i, CHUNK_P, acc, msg);
    if (st == LK_OK && i < end)
        st = stats_chunk(kind, xp, tp, xf, tf, i, (int)(end - i), acc, msg);
    for (int s = 0; s < N_ACC; s++)
        out[s] = vsum(vadd(acc[0][s], acc[1][s]));
    return st;
}

#define STATS_FN(name, kind)                                                                       \
    static lk_status name(const void *x, const void *t, int xf, int tf, int64_t b, int64_t e,      \
                          double *out, lk_msg *m)                                                  \
    {                                                                                              \
        if (xf && tf)                                                                              \
            return stats_loop(kind, x, t, 1, 1, b, e, out, m);                                     \
        if (!xf && !tf)                                                                            \
            return stats_loop(kind, x, t, 0, 0, b, e, out, m);                                     \
        return stats_loop(kind, x, t, xf, tf, b, e, out, m);                                       \
    }

STATS_FN(stats_dice, TUT_K_DICE)
STATS_FN(stats_dice_bce, TUT_K_DICE_BCE)
STATS_FN(stats_fmb, TUT_K_FMB)

lk_status tut_avx2_stats(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg)
{
    if (binary_f32(blk))
        return f32k(inst)->stats(inst, kind, blk, msg);
    const void *x = blk->slots[0].data, *t = blk->slots[1].data;
    int xf = blk->slots[0].dtype == LK_DTYPE_F32, tf = blk->slots[1].dtype == LK_DTYPE_F32;
    double s[N_ACC];
    lk_status st = kind == TUT_K_FMB ? stats_fmb(x, t, xf, tf, blk->begin, blk->end, s, msg)
                   : kind == TUT_K_DICE_BCE
                       ? stats_dice_bce(x, t, xf, tf, blk->begin, blk->end, s, msg)
                       : stats_dice(x, t, xf, tf, blk->begin, blk->end, s, msg);
    if (st == LK_OK)
        tut_add_block_sums(kind, blk, s);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Gradients of the two-pass losses, from the constants k of overlap.c       */

AI vd grad_core(int kind, const double *k, const vprim *p, vd t)
{
    vd g;
    switch (kind) {
    case TUT_K_DICE:
    case TUT_K_DICE_BCE:
        g = kind == TUT_K_DICE ? vzero() : vmul(vsub(vsig(p), t), v1(k[3]));
        return vadd(
            g, vmul(vmul(vdsig(p), vsub(v1(k[0]), vmul(vmul(v1(2.0), t), v1(k[1])))), v1(k[2])));
    case TUT_K_IOU:
        return vmul(vmul(vdsig(p), vsub(vmul(v1(k[0]), vsub(v1(1.0), t)), vmul(t, v1(k[1])))),
                    v1(k[2]));
    default: return vmul(v1(k[0]), vsub(vsig(p), t));
    }
}

AI void grad_chunk(int kind, const double *k, const lk_block *blk, int xf, int tf, int64_t i, int n)
{
    chunk c;
    int nv = chunk_load(&c, blk->slots[0].data, xf, blk->slots[1].data, tf, i, n);
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    chunk_exp(&c, nv);
    for (int v = 0; v < nv; v++) {
        vprim p = vprims(c.x[v], c.e[v]);
        st_grad(blk->grads[0].data, xf, i + 4 * v, lanes_of(n, v), grad_core(kind, k, &p, c.t[v]),
                blk->grad_scale, acc);
    }
}

AI void grad_loop(int kind, const double *k, const lk_block *blk, int xf, int tf)
{
    int64_t i = blk->begin;
    for (; i + CHUNK_P <= blk->end; i += CHUNK_P)
        grad_chunk(kind, k, blk, xf, tf, i, CHUNK_P);
    if (i < blk->end)
        grad_chunk(kind, k, blk, xf, tf, i, (int)(blk->end - i));
}

#define GRAD_FN(name, kind)                                                                        \
    static void name(const double *k, const lk_block *blk, int xf, int tf)                         \
    {                                                                                              \
        if (xf && tf)                                                                              \
            grad_loop(kind, k, blk, 1, 1);                                                         \
        else if (!xf && !tf)                                                                       \
            grad_loop(kind, k, blk, 0, 0);                                                         \
        else                                                                                       \
            grad_loop(kind, k, blk, xf, tf);                                                       \
    }

GRAD_FN(grad_dice, TUT_K_DICE)
GRAD_FN(grad_dice_bce, TUT_K_DICE_BCE)
GRAD_FN(grad_iou, TUT_K_IOU)
GRAD_FN(grad_fmb, TUT_K_FMB)

lk_status tut_avx2_grad(const tut_inst *inst, int kind, const double *k, const lk_block *blk,
                        lk_msg *msg)
{
    if (binary_f32(blk)) {
        f32k(inst)->grad(kind, k, blk);
        return LK_OK;
    }
    int xf = blk->slots[0].dtype == LK_DTYPE_F32, tf = blk->slots[1].dtype == LK_DTYPE_F32;
    switch (kind) {
    case TUT_K_DICE: grad_dice(k, blk, xf, tf); break;
    case TUT_K_DICE_BCE: grad_dice_bce(k, blk, xf, tf); break;
    case TUT_K_IOU: grad_iou(k, blk, xf, tf); break;
    default: grad_fmb(k, blk, xf, tf); break;
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* dice, multiclass mode (multiclass.c)                                      */
/*
 * Lanes run along the spatial positions of one sample (contiguous in every
 * class plane): a group is four of them, a chunk up to MC_GROUPS groups of
 * the same sample. Per chunk: the targets, the max over classes, every exp
 * (class by class, the chunk's groups back to back), then per class the
 * chunk's sums in registers, added once to the block's per-lane sums (or, in
 * backward, the gradients). The work array holds the chunk's exps, 4 G C
 * doubles, and the block's sums, 12 C (forward) or k1, k2 (backward).
 */

#define MC_GROUPS 4
#define MC_STACK  64 /* classes whose work array lives on the stack */

typedef struct mc_ctx {
    const tut_inst *in;
    const void *x, *t;
    int64_t classes, spatial;
    int float_target;
    double *ex;  /* 4 MC_GROUPS C: exp, class-major then group */
    double *acc; /* forward: 3 C x 4 lane sums; backward: k1, k2 */
    double stack[(4 * MC_GROUPS + 12) * MC_STACK];
    double *heap;
} mc_ctx;

static lk_status mc_init(mc_ctx *m, const tut_inst *in, const lk_plan *plan, const lk_block *blk,
                         lk_msg *msg)
{
    m->in = in;
    m->x = blk->slots[0].data;
    m->t = blk->slots[1].data;
    m->classes = plan->aux[TUT_MC_CLASSES];
    m->spatial = plan->aux[TUT_MC_SPATIAL];
    m->float_target = plan->aux[TUT_MC_FLOAT_TARGET] != 0;
    m->heap = NULL;
    double *base = m->stack;
    if (m->classes > MC_STACK) {
        m->heap = malloc((4 * MC_GROUPS + 12) * (size_t)m->classes * sizeof(double));
        if (!m->heap)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes",
                           (long long)m->classes);
        base = m->heap;
    }
    m->ex = base;
    m->acc = base + 4 * MC_GROUPS * m->classes;
    memset(m->acc, 0, 12 * (size_t)m->classes * sizeof(double));
    return LK_OK;
}

/* The class indices of k positions from pos, padded with ignore_index. */
AI __m256i mc_indices(const mc_ctx *m, int64_t pos, int k)
{
    if (k == 4)
        return _mm256_loadu_si256((const __m256i *)((const int64_t *)m->t + pos));
    int64_t b[4] = {m->in->ignore_index, m->in->ignore_index, m->in->ignore_index,
                    m->in->ignore_index};
    for (int j = 0; j < k; j++)
        b[j] = ((const int64_t *)m->t)[pos + j];
    return _mm256_loadu_si256((const __m256i *)b);
}

/* The targets of class c in group g: 1 or 0 from indices, or the floats. */
AI vd mc_target(const mc_ctx *m, int tf, const __m256i *y, const vd *live, int64_t c, int64_t base,
                int n, int g)
{
    if (m->float_target)
        return ldk(m->t, tf, base + 4 * g + c * m->spatial, lanes_of(n, g), 0.0);
    vd hit = _mm256_castsi256_pd(_mm256_cmpeq_epi64(y[g], _mm256_set1_epi64x(c)));
    return vand(vand(hit, live[g]), v1(1.0));
}

/* The lanes of each group that count (the others are padding or ignored);
 * fails, when check is set, on a class index or target out of range. */
AI lk_status mc_chunk_targets(const mc_ctx *m, int tf, int64_t pos, int64_t base, int n, int ng,
                              __m256i *y, vd *live, int check, lk_msg *msg)
{
    if (m->float_target) {
        vd bad = vzero();
        for (int g = 0; g < ng; g++) {
            int k = lanes_of(n, g);
            live[g] = k == 4 ? _mm256_castsi256_pd(_mm256_set1_epi64x(-1)) : vlanes(k);
            for (int64_t c = 0; check && c < m->classes; c++)
                bad = vor(bad, voutside01(ldk(m->t, tf, base + 4 * g + c * m->spatial, k, 0.0)));
        }
        return vany(bad) ? tut_mc_first_bad_target(m->t, tf, base, n, m->classes, m->spatial, msg)
                         : LK_OK;
    }
    __m256i bad = _mm256_setzero_si256();
    for (int g = 0; g < ng; g++) {
        y[g] = mc_indices(m, pos + 4 * g, lanes_of(n, g));
        __m256i ign = _mm256_cmpeq_epi64(y[g], _mm256_set1_epi64x(m->in->ignore_index));
        live[g] = _mm256_castsi256_pd(_mm256_xor_si256(ign, _mm256_set1_epi64x(-1)));
        __m256i out = _mm256_or_si256(_mm256_cmpgt_epi64(_mm256_setzero_si256(), y[g]),
                                      _mm256_cmpgt_epi64(y[g], _mm256_set1_epi64x(m->classes - 1)));
        bad = _mm256_or_si256(bad, _mm256_andnot_si256(ign, out));
    }
    if (check && !_mm256_testz_si256(bad, bad))
        return tut_mc_first_bad_index(m->t, pos, n, m->classes, m->in->ignore_index, msg);
    return LK_OK;
}

/* The softmax of the chunk: m->ex holds exp(x - max) per class and group,
 * r[g] the reciprocal of each group's sum. */
AI void mc_softmax(mc_ctx *m, int xf, int64_t base, int n, int ng, vd *r)
{
    int64_t classes = m->classes, spatial = m->spatial;
    vd mx[MC_GROUPS], z[MC_GROUPS];
    for (int g = 0; g < ng; g++) {
        mx[g] = ldk(m->x, xf, base + 4 * g, lanes_of(n, g), 0.0);
        z[g] = vzero();
    }
    for (int64_t c = 1; c < classes; c++)
        for (int g = 0; g < ng; g++)
            mx[g] = _mm256_max_pd(mx[g],
                                  ldk(m->x, xf, base + 4 * g + c * spatial, lanes_of(n, g), 0.0));
    for (int64_t c = 0; c < classes; c++)
        for (int g = 0; g < ng; g++) {
            vd x = ldk(m->x, xf, base + 4 * g + c * spatial, lanes_of(n, g), 0.0);
            vd e = _ZGVdN4v_exp(vsub(x, mx[g]));
            _mm256_storeu_pd(m->ex + 4 * (MC_GROUPS * c + g), e);
            z[g] = vadd(z[g], e);
        }
    for (int g = 0; g < ng; g++)
        r[g] = vdiv(v1(1.0), z[g]);
}

AI vd mc_p(const mc_ctx *m, const vd *r, int64_t c, int g)
{
    return vmul(_mm256_loadu_pd(m->ex + 4 * (MC_GROUPS * c + g)), r[g]);
}

AI lk_status mc_forward_chunk(mc_ctx *m, int xf, int tf, int64_t pos, int64_t base, int n,
                              lk_msg *msg)
{
    int ng = (n + 3) / 4;
    __m256i y[MC_GROUPS];
    vd live[MC_GROUPS], r[MC_GROUPS];
    lk_status st = mc_chunk_targets(m, tf, pos, base, n, ng, y, live, 1, msg);
    if (st != LK_OK)
        return st;
    mc_softmax(m, xf, base, n, ng, r);
    int64_t classes = m->classes;
    for (int64_t c = 0; c < classes; c++) {
        vd si = vzero(), sp = vzero(), stt = vzero();
        for (int g = 0; g < ng; g++) {
            vd p = vand(mc_p(m, r, c, g), live[g]);
            vd t = mc_target(m, tf, y, live, c, base, n, g);
            si = vadd(si, vmul(p, t));
            sp = vadd(sp, p);
            stt = vadd(stt, t);
        }
        double *a = m->acc + 4 * c;
        _mm256_storeu_pd(a, vadd(_mm256_loadu_pd(a), si));
        a += 4 * classes;
        _mm256_storeu_pd(a, vadd(_mm256_loadu_pd(a), sp));
        a += 4 * classes;
        _mm256_storeu_pd(a, vadd(_mm256_loadu_pd(a), stt));
    }
    return LK_OK;
}

AI void mc_backward_chunk(mc_ctx *m, int xf, int tf, const lk_block *blk, int64_t pos, int64_t base,
                          int n)
{
    int ng = (n + 3) / 4;
    __m256i y[MC_GROUPS];
    vd live[MC_GROUPS], r[MC_GROUPS], spg[MC_GROUPS];
    mc_chunk_targets(m, tf, pos, base, n, ng, y, live, 0, NULL);
    mc_softmax(m, xf, base, n, ng, r);
    int64_t classes = m->classes;
    const double *k1 = m->acc, *k2 = m->acc + classes;
    for (int g = 0; g < ng; g++)
        spg[g] = vzero();
    for (int64_t c = 0; c < classes; c++)
        for (int g = 0; g < ng; g++) {
            vd gc = vsub(v1(k1[c]), vmul(mc_target(m, tf, y, live, c, base, n, g), v1(k2[c])));
            spg[g] = vadd(spg[g], vmul(mc_p(m, r, c, g), gc));
        }
    int acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    void *gp = blk->grads[0].data;
    for (int64_t c = 0; c < classes; c++)
        for (int g = 0; g < ng; g++) {
            int k = lanes_of(n, g);
            int64_t at = base + 4 * g + c * m->spatial;
            vd gc = vsub(v1(k1[c]), vmul(mc_target(m, tf, y, live, c, base, n, g), v1(k2[c])));
            vd d = vmul(v1(blk->grad_scale), vmul(mc_p(m, r, c, g), vsub(gc, spg[g])));
            d = vand(d, live[g]);
            if (acc)
                d = vadd(ldk(gp, xf, at, k, 0.0), d);
            stk(gp, xf, at, k, d);
        }
}

/* Runs the chunks of a block: each sample's run of positions. */
AI lk_status mc_loop(mc_ctx *m, const lk_block *blk, int backward, int xf, int tf, lk_msg *msg)
{
    int64_t classes = m->classes, spatial = m->spatial;
    for (int64_t pos = blk->begin; pos < blk->end;) {
        int64_t s = pos % spatial;
        int64_t run = spatial - s < blk->end - pos ? spatial - s : blk->end - pos;
        int64_t base = pos / spatial * classes * spatial + s;
        for (int64_t j = 0; j < run; j += 4 * MC_GROUPS) {
            int n = run - j < 4 * MC_GROUPS ? (int)(run - j) : 4 * MC_GROUPS;
            if (backward) {
                mc_backward_chunk(m, xf, tf, blk, pos + j, base + j, n);
            } else {
                lk_status st = mc_forward_chunk(m, xf, tf, pos + j, base + j, n, msg);
                if (st != LK_OK)
                    return st;
            }
        }
        pos += run;
    }
    return LK_OK;
}

/* float64 logits and targets, or a mix: all-float32 data goes to the float
 * lanes (mc_f32 below) and never reaches here. */
static lk_status mc_run(mc_ctx *m, const lk_block *blk, int backward, lk_msg *msg)
{
    int xf = blk->slots[0].dtype == LK_DTYPE_F32;
    int tf = m->float_target && blk->slots[1].dtype == LK_DTYPE_F32;
    if (!xf && !tf)
        return mc_loop(m, blk, backward, 0, 0, msg);
    return mc_loop(m, blk, backward, xf, tf, msg);
}

/* float32 logits with class indices or float32 targets run in float lanes
 * (simd_f32_mc.h), AVX-512 when the instance chose it; float64 and mixed
 * data stay in the double lanes above. */
static int mc_f32(const lk_plan *plan, const lk_block *blk)
{
    return blk->slots[0].dtype == LK_DTYPE_F32 &&
           (!plan->aux[TUT_MC_FLOAT_TARGET] || blk->slots[1].dtype == LK_DTYPE_F32);
}

lk_status tut_avx2_mc_forward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                              lk_msg *msg)
{
    if (mc_f32(plan, blk))
        return f32k(inst)->mc_forward(inst, plan, blk, msg);
    mc_ctx m;
    lk_status st = mc_init(&m, inst, plan, blk, msg);
    if (st != LK_OK)
        return st;
    st = mc_run(&m, blk, 0, msg);
    if (st == LK_OK)
        for (int64_t s = 0; s < 3 * m.classes; s++)
            blk->stats[s] += vsum(_mm256_loadu_pd(m.acc + 4 * s));
    free(m.heap);
    return st;
}

lk_status tut_avx2_mc_backward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                               lk_msg *msg)
{
    if (mc_f32(plan, blk))
        return f32k(inst)->mc_backward(inst, plan, blk, msg);
    mc_ctx m;
    lk_status st = mc_init(&m, inst, plan, blk, msg);
    if (st != LK_OK)
        return st;
    tut_mc_coeffs(inst->smooth, m.classes, blk->global, m.acc, m.acc + m.classes);
    st = mc_run(&m, blk, 1, msg);
    free(m.heap);
    return st;
}
