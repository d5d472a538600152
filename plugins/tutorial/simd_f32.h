/* simd_f32.h: the float32-lane kernels of the tutorial family, written once
 * against a small lane layer and compiled twice:
 *
 *   simd_f32_avx512.c   F32_AVX512 = 1: sixteen float lanes, mask registers
 *   simd_f32_avx2.c     F32_AVX512 = 0: eight float lanes, vector masks
 *
 * They serve the losses whose cost is exp and log1p (bce_with_logits, focal,
 * dice, iou, dice_bce, focal_mean_bce) when every tensor they read is
 * float32, and dice's multiclass mode (simd_f32_mc.h) when its logits are
 * float32 and its targets int64 class indices or float32: the per-position
 * formulas run in float32 (libmvec's expf, log1pf and powf, at most 4 ulp),
 * twice as many lanes per instruction as the double kernels of simd_avx2.c
 * and cheaper polynomials. What stays in double is every sum: a vector of
 * losses or statistics is widened to two double vectors before it is added,
 * so a block's sum carries no more error than its float32 terms do; where
 * only the sum of log1p(e) is wanted it is taken as the log of a product
 * (lsum below), with no log1p per element. float64 data and mixed dtypes
 * keep the double kernels.
 *
 * The formulas mirror simd_avx2.c (and through it the scalar forms of
 * tutorial.h, focal.c and overlap.c), including the rules for 0 * inf
 * (mul0), NaN (pospart) and targets outside [0, 1], except where float32
 * would cancel: sigmoid(x) - t is (1 - t) sigmoid(x) - t sigmoid(-x)
 * (fsig_minus_t). A block's result depends only on the block's data and the
 * lane width, never on the thread that runs it. */
#ifndef LOSSKIT_TUTORIAL_SIMD_F32_H
#define LOSSKIT_TUTORIAL_SIMD_F32_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "tutorial.h"

#define AI static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------ */
/* Lanes                                                                     */

/* clang-format off */
#if F32_AVX512
#if !defined(__AVX512F__) || !defined(__AVX512DQ__)
#error "simd_f32_avx512.c is compiled with -mavx512f -mavx512dq"
#endif
#define W 16
#define F32_NAME(n) n##_avx512
typedef __m512 vf;      /* sixteen floats */
typedef __mmask16 vm;   /* a lane mask */
typedef __m512d vdd;    /* eight doubles: half a vf, widened */
__m512 _ZGVeN16v_expf(__m512 x);
__m512 _ZGVeN16v_log1pf(__m512 x);
__m512 _ZGVeN16vv_powf(__m512 x, __m512 y);
AI vf vexpf(vf x) { return _ZGVeN16v_expf(x); }
AI vf vlog1pf(vf x) { return _ZGVeN16v_log1pf(x); }
AI vf vpowf(vf x, vf y) { return _ZGVeN16vv_powf(x, y); }
AI vf f1(float a) { return _mm512_set1_ps(a); }
AI vf fzero(void) { return _mm512_setzero_ps(); }
AI vf fadd(vf a, vf b) { return _mm512_add_ps(a, b); }
AI vf fsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
AI vf fmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
AI vf fdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
AI vf fabsv(vf a) { return _mm512_abs_ps(a); }
AI vf fneg(vf a) { return _mm512_xor_ps(a, f1(-0.0f)); }
#define FCMP(a, b, pred) _mm512_cmp_ps_mask((a), (b), (pred))
AI vm mnone(void) { return 0; }
AI vm mor(vm a, vm b) { return (vm)(a | b); }
AI int many(vm m) { return m != 0; }
AI int mall(vm m) { return m == 0xFFFF; }
AI vm mlanes(int k) { return k >= W ? (vm)0xFFFF : (vm)((1u << k) - 1u); }
/* m ? a : b; a where m, else 0; a where not m, else 0. */
AI vf fsel(vm m, vf a, vf b) { return _mm512_mask_blend_ps(m, b, a); }
AI vf fkeep(vm m, vf a) { return _mm512_maskz_mov_ps(m, a); }
AI vf fclear(vm m, vf a) { return _mm512_maskz_mov_ps((vm)~m, a); }
/* The first k lanes from p, the others pad; masked lanes never fault. */
AI vf fload(const float *p, int k, float pad)
{
    return k == W ? _mm512_loadu_ps(p) : _mm512_mask_loadu_ps(f1(pad), mlanes(k), p);
}
AI void fstore(float *p, int k, vf v)
{
    if (k == W) _mm512_storeu_ps(p, v);
    else _mm512_mask_storeu_ps(p, mlanes(k), v);
}
AI vdd dzero(void) { return _mm512_setzero_pd(); }
AI vdd d1(double a) { return _mm512_set1_pd(a); }
AI vdd dadd(vdd a, vdd b) { return _mm512_add_pd(a, b); }
AI vdd dsub(vdd a, vdd b) { return _mm512_sub_pd(a, b); }
AI vdd dmul(vdd a, vdd b) { return _mm512_mul_pd(a, b); }
/* a b + c and a b - c, each rounded once */
AI vdd dfmadd(vdd a, vdd b, vdd c) { return _mm512_fmadd_pd(a, b, c); }
AI vdd dfmsub(vdd a, vdd b, vdd c) { return _mm512_fmsub_pd(a, b, c); }
AI vdd dlo(vf a) { return _mm512_cvtps_pd(_mm512_castps512_ps256(a)); }
AI vdd dhi(vf a) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)); }
#define DW 8
AI void dstore(double *p, vdd a) { _mm512_storeu_pd(p, a); }
#else
#if !defined(__AVX2__) || !defined(__FMA__)
#error "simd_f32_avx2.c is compiled with -mavx2 -mfma"
#endif
#define W 8
#define F32_NAME(n) n##_avx2
typedef __m256 vf;
typedef __m256 vm;      /* all ones or all zeros per lane */
typedef __m256d vdd;
__m256 _ZGVdN8v_expf(__m256 x);
__m256 _ZGVdN8v_log1pf(__m256 x);
__m256 _ZGVdN8vv_powf(__m256 x, __m256 y);
AI vf vexpf(vf x) { return _ZGVdN8v_expf(x); }
AI vf vlog1pf(vf x) { return _ZGVdN8v_log1pf(x); }
AI vf vpowf(vf x, vf y) { return _ZGVdN8vv_powf(x, y); }
AI vf f1(float a) { return _mm256_set1_ps(a); }
AI vf fzero(void) { return _mm256_setzero_ps(); }
AI vf fadd(vf a, vf b) { return _mm256_add_ps(a, b); }
AI vf fsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
AI vf fmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
AI vf fdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
AI vf fabsv(vf a) { return _mm256_andnot_ps(f1(-0.0f), a); }
AI vf fneg(vf a) { return _mm256_xor_ps(a, f1(-0.0f)); }
#define FCMP(a, b, pred) _mm256_cmp_ps((a), (b), (pred))
AI vm mnone(void) { return _mm256_setzero_ps(); }
AI vm mor(vm a, vm b) { return _mm256_or_ps(a, b); }
AI int many(vm m) { return _mm256_movemask_ps(m) != 0; }
AI int mall(vm m) { return _mm256_movemask_ps(m) == 0xFF; }
AI vm mlanes(int k)
{
    return _mm256_cmp_ps(_mm256_set_ps(7, 6, 5, 4, 3, 2, 1, 0), f1((float)k), _CMP_LT_OQ);
}
AI vf fsel(vm m, vf a, vf b) { return _mm256_blendv_ps(b, a, m); }
AI vf fkeep(vm m, vf a) { return _mm256_and_ps(m, a); }
AI vf fclear(vm m, vf a) { return _mm256_andnot_ps(m, a); }
AI vf fload(const float *p, int k, float pad)
{
    if (k == W)
        return _mm256_loadu_ps(p);
    vm m = mlanes(k);
    return fsel(m, _mm256_maskload_ps(p, _mm256_castps_si256(m)), f1(pad));
}
AI void fstore(float *p, int k, vf v)
{
    if (k == W) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, _mm256_castps_si256(mlanes(k)), v);
}
AI vdd dzero(void) { return _mm256_setzero_pd(); }
AI vdd d1(double a) { return _mm256_set1_pd(a); }
AI vdd dadd(vdd a, vdd b) { return _mm256_add_pd(a, b); }
AI vdd dsub(vdd a, vdd b) { return _mm256_sub_pd(a, b); }
AI vdd dmul(vdd a, vdd b) { return _mm256_mul_pd(a, b); }
AI vdd dfmadd(vdd a, vdd b, vdd c) { return _mm256_fmadd_pd(a, b, c); }
AI vdd dfmsub(vdd a, vdd b, vdd c) { return _mm256_fmsub_pd(a, b, c); }
AI vdd dlo(vf a) { return _mm256_cvtps_pd(_mm256_castps256_ps128(a)); }
AI vdd dhi(vf a) { return _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)); }
#define DW 4
AI void dstore(double *p, vdd a) { _mm256_storeu_pd(p, a); }
#endif
/* clang-format on */

/* A double sum of float lanes: the low and high halves widened. */
typedef struct dacc {
    vdd lo, hi;
} dacc;

AI dacc dacc_zero(void)
{
    dacc a = {dzero(), dzero()};
    return a;
}

AI void dacc_add(dacc *a, vf v)
{
    a->lo = dadd(a->lo, dlo(v));
    a->hi = dadd(a->hi, dhi(v));
}

/* The lanes of a and b summed in a fixed order. */
AI double dacc_sum(dacc a, dacc b)
{
    double l[DW];
    dstore(l, dadd(dadd(a.lo, a.hi), dadd(b.lo, b.hi)));
    double s = 0.0;
    for (int j = 0; j < DW; j++)
        s += l[j];
    return s;
}

AI vm feq(vf a, float b)
{
    return FCMP(a, f1(b), _CMP_EQ_OQ);
}

/* c a, but 0 where c is 0 even when a is infinite (tut_mul0). */
AI vf fmul0(vf c, vf a)
{
    return fclear(feq(c, 0.0f), fmul(c, a));
}

/* a > 0 ? a : 0, with 0 for NaN. */
AI vf fpospart(vf a)
{
    return fkeep(FCMP(a, fzero(), _CMP_GT_OQ), a);
}

AI vm foutside01(vf t)
{
    return mor(FCMP(t, fzero(), _CMP_LT_OQ), FCMP(t, f1(1.0f), _CMP_GT_OQ));
}

/* ------------------------------------------------------------------------ */
/* The primitives: a = |x|, e = exp(-a), r = 1 / (1 + e)                     */

typedef struct fprim {
    vf a, e, r;
    vm pos;
} fprim;

AI fprim fprims(vf x, vf e)
{
    fprim p;
    p.a = fabsv(x);
    p.e = e;
    p.r = fdiv(f1(1.0f), fadd(f1(1.0f), e));
    p.pos = FCMP(x, fzero(), _CMP_GE_OQ);
    return p;
}

AI vf fsig(const fprim *p)
{
    return fsel(p->pos, p->r, fmul(p->e, p->r));
}

AI vf fsig_neg(const fprim *p)
{
    return fsel(p->pos, fmul(p->e, p->r), p->r);
}

AI vf fdsig(const fprim *p)
{
    return fmul(fmul(p->e, p->r), p->r);
}

/* sigmoid(x) - t as (1 - t) sigmoid(x) - t sigmoid(-x): for a target of 0
 * or 1 no float32 cancellation (sigmoid(x) - 1 near x = +4 would keep only
 * the last bits of the rounded sigmoid). */
AI vf fsig_minus_t(const fprim *p, vf t)
{
    return fsub(fmul(fsub(f1(1.0f), t), fsig(p)), fmul(t, fsig_neg(p)));
}

AI vf fbce(const fprim *p, vf L, vf t, vf pw)
{
    vf lw = fadd(f1(1.0f), fmul(fsub(pw, f1(1.0f)), t));
    return fadd(fmul0(fsel(p->pos, fsub(f1(1.0f), t), fmul(pw, t)), p->a), fmul(lw, L));
}

/* (1 + (pw - 1) t) sigmoid(x) - pw t, rearranged as fsig_minus_t is. */
AI vf fbce_grad(const fprim *p, vf t, vf pw)
{
    return fsub(fmul(fsub(f1(1.0f), t), fsig(p)), fmul(fmul(pw, t), fsig_neg(p)));
}

AI vf fpowg(vf q, float gamma)
{
    if (gamma == 0.0f)
        return f1(1.0f);
    if (gamma == 1.0f)
        return q;
    if (gamma == 2.0f)
        return fmul(q, q);
    return vpowf(q, f1(gamma));
}

/* ------------------------------------------------------------------------ */
/* Chunks: every exp of a chunk, then every log1p, then the arithmetic, so  */
/* that independent library calls overlap.                                   */

#define CHUNK_V 4
#define CHUNK_P (W * CHUNK_V)

AI int lanes_of(int n, int v)
{
    return n - W * v < W ? n - W * v : W;
}

typedef struct fchunk {
    vf x[CHUNK_V], t[CHUNK_V], e[CHUNK_V], L[CHUNK_V];
    int nv;
} fchunk;

/* Loads n <= CHUNK_P positions from i (missing lanes 0); 0 when a target
 * lies outside [0, 1]. */
AI int fchunk_load(fchunk *c, const float *x, const float *t, int64_t i, int n)
{
    vm bad = mnone();
    c->nv = (n + W - 1) / W;
    for (int v = 0; v < c->nv; v++) {
        c->x[v] = fload(x + i + W * v, lanes_of(n, v), 0.0f);
        c->t[v] = fload(t + i + W * v, lanes_of(n, v), 0.0f);
        bad = mor(bad, foutside01(c->t[v]));
    }
    return !many(bad);
}

AI void fchunk_exp(fchunk *c)
{
    for (int v = 0; v < c->nv; v++)
        c->e[v] = vexpf(fneg(fabsv(c->x[v])));
}

AI void fchunk_log1p(fchunk *c)
{
    for (int v = 0; v < c->nv; v++)
        c->L[v] = vlog1pf(c->e[v]);
}

AI vf live_only(vf a, int n, int v)
{
    int k = lanes_of(n, v);
    return k == W ? a : fkeep(mlanes(k), a);
}

/* ------------------------------------------------------------------------ */
/* A sum of log1p(e) with one log per lane per LSUM_FOLD vectors             */
/*
 * Where only the sum of the BCE terms is wanted (bce_with_logits with mean
 * or sum, no weight, no pos_weight, no per-element output; focal_mean_bce's
 * BCE mean), sum log1p(e_i) is taken as the log of the product of
 * u_i = 1 + e_i, and the per-element log1p, the costliest call of these
 * losses, is gone. Each half-vector of e is widened to double
 * and multiplied into a running product per lane, kept exactly as a pair:
 * hi, the rounded product, and lo, the rounding errors carried along
 * (lo u + fma(hi, u, -hi u)), so that log(hi + lo) is the log of the exact
 * product of the rounded u_i. What rounding 1 + e itself dropped,
 * e - (u - 1) (nonzero only for e below 2^-29, where log1p(e) = e to
 * double precision), is summed apart. Every u lies in [1, 2], so after
 * LSUM_FOLD vectors a product is below 2^LSUM_FOLD and is folded:
 * log(hi) + lo / hi per lane, in a fixed order. The result is the sum of
 * log1p of the float32 e_i to about double precision, more exact than
 * adding float32 log1p values; a block's fold points are fixed by its
 * start, so results stay the same for any thread count. NaN in e gives a
 * NaN sum, as a NaN term would. */

#define LSUM_FOLD 256

typedef struct lsum {
    vdd hi[2], lo[2]; /* per half of a vector: the product and its error */
    vdd dropped;      /* sum of e - (u - 1) */
    double logs;      /* the folded products' logs */
    int steps;
} lsum;

AI void lsum_reset(lsum *s)
{
    for (int h = 0; h < 2; h++) {
        s->hi[h] = d1(1.0);
        s->lo[h] = dzero();
    }
    s->steps = 0;
}

static void lsum_init(lsum *s)
{
    lsum_reset(s);
    s->dropped = dzero();
    s->logs = 0.0;
}

static void lsum_fold(lsum *s)
{
    double hi[DW], lo[DW];
    for (int h = 0; h < 2; h++) {
        dstore(hi, s->hi[h]);
        dstore(lo, s->lo[h]);
        for (int j = 0; j < DW; j++)
            s->logs += log(hi[j]) + lo[j] / hi[j];
    }
    lsum_reset(s);
}

AI void lsum_half(vdd *hi, vdd *lo, vdd *dropped, vdd e)
{
    vdd u = dadd(d1(1.0), e);
    *dropped = dadd(*dropped, dsub(e, dsub(u, d1(1.0))));
    vdd q = dmul(*hi, u);
    *lo = dfmadd(*lo, u, dfmsub(*hi, u, q));
    *hi = q;
}

/* Adds log1p(e) of every lane; lanes that do not count must hold 0. */
AI void lsum_add(lsum *s, vf e)
{
    lsum_half(&s->hi[0], &s->lo[0], &s->dropped, dlo(e));
    lsum_half(&s->hi[1], &s->lo[1], &s->dropped, dhi(e));
    if (++s->steps == LSUM_FOLD)
        lsum_fold(s);
}

static double lsum_total(lsum *s)
{
    lsum_fold(s);
    double d[DW], t = s->logs;
    dstore(d, s->dropped);
    for (int j = 0; j < DW; j++)
        t += d[j];
    return t;
}

/* ------------------------------------------------------------------------ */
/* Fused: bce_with_logits and focal                                          */

/* focal.c's focal_binary, for lanes whose target is 0 or 1. */
AI void focal_binary(float gamma, const fprim *p, vf L, vf x, vf t, vf at, vf *l, vf *g)
{
    vf one = f1(1.0f);
    vf sgn = fsel(feq(t, 1.0f), one, f1(-1.0f));
    vf z = fmul(sgn, x);
    vm zpos = FCMP(z, fzero(), _CMP_GE_OQ);
    vf er = fmul(p->e, p->r);
    vf smz = fsel(zpos, er, p->r);
    vf sz = fsel(zpos, p->r, er);
    vf ce = fadd(fpospart(fneg(z)), L);
    vf m;
    if (gamma == 0.0f)
        m = one;
    else if (gamma == 1.0f)
        m = smz;
    else if (gamma == 2.0f)
        m = fmul(smz, smz);
    else
        m = vexpf(fmul(f1(-gamma), fadd(fpospart(z), L)));
    *g = fmul(fmul(fmul(fneg(sgn), at), m), fadd(smz, fmul(f1(gamma), fmul0(sz, ce))));
    *l = fmul0(at, fmul(m, ce));
}

/* focal.c's focal_soft, for the other lanes. */
AI void focal_soft(float gamma, const fprim *p, vf L, vf t, vf at, vf *l, vf *g)
{
    vf one = f1(1.0f);
    vf pp = fsig(p), p1 = fsig_neg(p);
    vf q = fadd(fmul(pp, fsub(one, t)), fmul(p1, t));
    vf ce = fbce(p, L, t, one);
    vf m = fpowg(q, gamma);
    vf dm = gamma == 0.0f ? fzero() : fclear(feq(q, 0.0f), fmul(f1(gamma), fpowg(q, gamma - 1.0f)));
    vf corr = fmul(fmul(dm, fmul0(fmul(pp, p1), ce)), fsub(fmul(f1(2.0f), t), one));
    *g = fmul(at, fsub(fmul(fsig_minus_t(p, t), m), corr));
    *l = fmul0(at, fmul(m, ce));
}

AI void focal_core(float alpha, float gamma, const fprim *p, vf L, vf x, vf t, vf *l, vf *g)
{
    vf at = alpha < 0.0f ? f1(1.0f)
                         : fadd(fmul(f1(alpha), t), fmul(f1(1.0f - alpha), fsub(f1(1.0f), t)));
    vm binary = mor(feq(t, 0.0f), feq(t, 1.0f));
    vf lb = fzero(), gb = fzero(), ls = fzero(), gs = fzero();
    if (many(binary))
        focal_binary(gamma, p, L, x, t, at, &lb, &gb);
    if (!mall(binary))
        focal_soft(gamma, p, L, t, at, &ls, &gs);
    *l = fsel(binary, lb, ls);
    *g = fsel(binary, gb, gs);
}

typedef struct fio {
    const tut_inst *in;
    const float *x, *t, *w; /* w NULL: no weight */
    float *out, *g;         /* NULL: not wanted */
    float scale;
    int accumulate;
    int64_t pw_index;
} fio;

/* pos_weight of k positions from index pw_index of the last dimension. */
AI vf f32_pos_weights(fio *f, int k)
{
    const tut_inst *in = f->in;
    if (in->n_pw <= 1)
        return f1(in->n_pw == 1 ? (float)in->pw[0] : 1.0f);
    float b[W];
    for (int j = 0; j < W; j++)
        b[j] = 1.0f;
    for (int j = 0; j < k; j++) {
        b[j] = (float)in->pw[f->pw_index];
        if (++f->pw_index == in->n_pw)
            f->pw_index = 0;
    }
    return fload(b, W, 0.0f);
}

AI void fused_emit(fio *f, int64_t i, int k, vf l, vf g, dacc *acc)
{
    if (f->w) {
        vf w = fload(f->w + i, k, 0.0f);
        l = fmul0(w, l);
        g = fmul0(w, g);
    }
    dacc_add(acc, k == W ? l : fkeep(mlanes(k), l));
    if (f->out)
        fstore(f->out + i, k, l);
    if (f->g) {
        vf s = fmul(f1(f->scale), g);
        if (f->accumulate)
            s = fadd(fload(f->g + i, k, 0.0f), s);
        fstore(f->g + i, k, s);
    }
}

/* What a fused chunk computes. */
enum { FUSED_BCE, FUSED_BCE_LSUM, FUSED_FOCAL };

AI lk_status fused_chunk(fio *f, int mode, int64_t i, int n, dacc *acc, lsum *ls, lk_msg *msg)
{
    fchunk c;
    if (!fchunk_load(&c, f->x, f->t, i, n))
        return tut_first_bad_target(f->t, 1, i, n, msg);
    fchunk_exp(&c);
    if (mode != FUSED_BCE_LSUM)
        fchunk_log1p(&c);
    float alpha = (float)f->in->alpha, gamma = (float)f->in->gamma;
    for (int v = 0; v < c.nv; v++) {
        int k = lanes_of(n, v);
        fprim p = fprims(c.x[v], c.e[v]);
        vf l, g;
        if (mode == FUSED_FOCAL) {
            focal_core(alpha, gamma, &p, c.L[v], c.x[v], c.t[v], &l, &g);
        } else if (mode == FUSED_BCE_LSUM) {
            /* the terms without log1p(e), which ls sums */
            l = fbce(&p, fzero(), c.t[v], f1(1.0f));
            g = fbce_grad(&p, c.t[v], f1(1.0f));
            lsum_add(ls, live_only(c.e[v], n, v));
        } else {
            vf pw = f32_pos_weights(f, k);
            l = fbce(&p, c.L[v], c.t[v], pw);
            g = fbce_grad(&p, c.t[v], pw);
        }
        fused_emit(f, i + W * v, k, l, g, &acc[v & 1]);
    }
    return LK_OK;
}

AI lk_status fused_loop(fio *f, int mode, int64_t begin, int64_t end, double *sum, lk_msg *msg)
{
    fio local = *f; /* its address escapes nowhere: no reloads after stores */
    dacc acc[2] = {dacc_zero(), dacc_zero()};
    lsum ls;
    lsum_init(&ls);
    lk_status st = LK_OK;
    int64_t i = begin;
    for (; st == LK_OK && i + CHUNK_P <= end; i += CHUNK_P)
        st = fused_chunk(&local, mode, i, CHUNK_P, acc, &ls, msg);
    if (st == LK_OK && i < end)
        st = fused_chunk(&local, mode, i, (int)(end - i), acc, &ls, msg);
    *sum = dacc_sum(acc[0], acc[1]);
    if (mode == FUSED_BCE_LSUM)
        *sum += lsum_total(&ls);
    return st;
}

static lk_status fused_bce(fio *f, int64_t b, int64_t e, double *s, lk_msg *m)
{
    return fused_loop(f, FUSED_BCE, b, e, s, m);
}

static lk_status fused_bce_lsum(fio *f, int64_t b, int64_t e, double *s, lk_msg *m)
{
    return fused_loop(f, FUSED_BCE_LSUM, b, e, s, m);
}

static lk_status fused_focal(fio *f, int64_t b, int64_t e, double *s, lk_msg *m)
{
    return fused_loop(f, FUSED_FOCAL, b, e, s, m);
}

static lk_status f32_fused(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg)
{
    int weighted = kind != TUT_K_FOCAL && blk->slots[2].data;
    fio f = {
        .in = inst,
        .x = blk->slots[0].data,
        .t = blk->slots[1].data,
        .w = weighted ? blk->slots[2].data : NULL,
        .out = blk->out ? blk->out->data : NULL,
        .g = blk->grads ? blk->grads[0].data : NULL,
        .scale = (float)blk->grad_scale,
        .accumulate = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0,
        .pw_index = inst->n_pw > 1 ? blk->begin % inst->n_pw : 0,
    };
    double sum = 0.0;
    lk_status st;
    if (kind == TUT_K_FOCAL)
        st = fused_focal(&f, blk->begin, blk->end, &sum, msg);
    else if (!f.w && !f.out && inst->n_pw == 0)
        st = fused_bce_lsum(&f, blk->begin, blk->end, &sum, msg);
    else
        st = fused_bce(&f, blk->begin, blk->end, &sum, msg);
    if (st == LK_OK)
        blk->stats[0] += sum;
    return st;
}

/* ------------------------------------------------------------------------ */
/* Statistics of the overlap losses and focal_mean_bce                       */

/* The sums, in the order of TUT_ST_* (tut_add_block_sums). */
enum { A_I = TUT_ST_I, A_P = TUT_ST_P, A_T = TUT_ST_T, A_BCE = TUT_ST_BCE, N_ACC };

/* focal_mean_bce's BCE sum goes through ls (log1p summed as the log of a
 * product); dice_bce's takes log1p per element: with its three other sums
 * the product's registers spill, and measured slower than the calls. */
AI lk_status stats_chunk(int kind, const float *x, const float *t, int64_t i, int n, dacc *acc,
                         lsum *ls, lk_msg *msg)
{
    fchunk c;
    if (!fchunk_load(&c, x, t, i, n))
        return tut_first_bad_target(t, 1, i, n, msg);
    int bce = kind == TUT_K_DICE_BCE || kind == TUT_K_FMB;
    fchunk_exp(&c);
    if (kind == TUT_K_DICE_BCE)
        fchunk_log1p(&c);
    for (int v = 0; v < c.nv; v++) {
        fprim p = fprims(c.x[v], c.e[v]);
        if (kind != TUT_K_FMB) {
            vf pp = live_only(fsig(&p), n, v);
            dacc_add(&acc[A_I], fmul(pp, c.t[v]));
            dacc_add(&acc[A_P], pp);
            dacc_add(&acc[A_T], c.t[v]);
        }
        if (kind == TUT_K_DICE_BCE) {
            dacc_add(&acc[A_BCE], live_only(fbce(&p, c.L[v], c.t[v], f1(1.0f)), n, v));
        } else if (bce) {
            dacc_add(&acc[A_BCE], live_only(fbce(&p, fzero(), c.t[v], f1(1.0f)), n, v));
            lsum_add(ls, live_only(c.e[v], n, v));
        }
    }
    return LK_OK;
}

AI lk_status stats_loop(int kind, const float *x, const float *t, int64_t begin, int64_t end,
                        double *out, lk_msg *msg)
{
    dacc acc[N_ACC];
    for (int s = 0; s < N_ACC; s++)
        acc[s] = dacc_zero();
    lsum ls;
    lsum_init(&ls);
    lk_status st = LK_OK;
    int64_t i = begin;
    for (; st == LK_OK && i + CHUNK_P <= end; i += CHUNK_P)
        st = stats_chunk(kind, x, t, i, CHUNK_P, acc, &ls, msg);
    if (st == LK_OK && i < end)
        st = stats_chunk(kind, x, t, i, (int)(end - i), acc, &ls, msg);
    for (int s = 0; s < N_ACC; s++)
        out[s] = dacc_sum(acc[s], dacc_zero());
    if (kind == TUT_K_FMB)
        out[A_BCE] += lsum_total(&ls);
    return st;
}

static lk_status stats_dice(const float *x, const float *t, int64_t b, int64_t e, double *o,
                            lk_msg *m)
{
    return stats_loop(TUT_K_DICE, x, t, b, e, o, m);
}

static lk_status stats_dice_bce(const float *x, const float *t, int64_t b, int64_t e, double *o,
                                lk_msg *m)
{
    return stats_loop(TUT_K_DICE_BCE, x, t, b, e, o, m);
}

static lk_status stats_fmb(const float *x, const float *t, int64_t b, int64_t e, double *o,
                           lk_msg *m)
{
    return stats_loop(TUT_K_FMB, x, t, b, e, o, m);
}

static lk_status f32_stats(const tut_inst *inst, int kind, const lk_block *blk, lk_msg *msg)
{
    (void)inst;
    const float *x = blk->slots[0].data, *t = blk->slots[1].data;
    double s[N_ACC];
    lk_status st = kind == TUT_K_FMB        ? stats_fmb(x, t, blk->begin, blk->end, s, msg)
                   : kind == TUT_K_DICE_BCE ? stats_dice_bce(x, t, blk->begin, blk->end, s, msg)
                                            : stats_dice(x, t, blk->begin, blk->end, s, msg);
    if (st == LK_OK)
        tut_add_block_sums(kind, blk, s);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Gradients of the two-pass losses, from the constants k of overlap.c       */

AI vf grad_core(int kind, const float *k, const fprim *p, vf t)
{
    vf g;
    switch (kind) {
    case TUT_K_DICE:
    case TUT_K_DICE_BCE:
        g = kind == TUT_K_DICE ? fzero() : fmul(fsig_minus_t(p, t), f1(k[3]));
        return fadd(
            g, fmul(fmul(fdsig(p), fsub(f1(k[0]), fmul(fmul(f1(2.0f), t), f1(k[1])))), f1(k[2])));
    case TUT_K_IOU:
        return fmul(fmul(fdsig(p), fsub(fmul(f1(k[0]), fsub(f1(1.0f), t)), fmul(t, f1(k[1])))),
                    f1(k[2]));
    default: return fmul(f1(k[0]), fsig_minus_t(p, t));
    }
}

AI void grad_loop(int kind, const float *k, const lk_block *blk)
{
    const float *x = blk->slots[0].data, *t = blk->slots[1].data;
    float *gp = blk->grads[0].data;
    float scale = (float)blk->grad_scale;
    int accumulate = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    for (int64_t i = blk->begin; i < blk->end; i += CHUNK_P) {
        int n = blk->end - i < CHUNK_P ? (int)(blk->end - i) : CHUNK_P;
        fchunk c;
        fchunk_load(&c, x, t, i, n); /* the forward pass checked the targets */
        fchunk_exp(&c);
        for (int v = 0; v < c.nv; v++) {
            int kl = lanes_of(n, v);
            fprim p = fprims(c.x[v], c.e[v]);
            vf s = fmul(f1(scale), grad_core(kind, k, &p, c.t[v]));
            if (accumulate)
                s = fadd(fload(gp + i + W * v, kl, 0.0f), s);
            fstore(gp + i + W * v, kl, s);
        }
    }
}

static void grad_dice(const float *k, const lk_block *blk)
{
    grad_loop(TUT_K_DICE, k, blk);
}

static void grad_dice_bce(const float *k, const lk_block *blk)
{
    grad_loop(TUT_K_DICE_BCE, k, blk);
}

static void grad_iou(const float *k, const lk_block *blk)
{
    grad_loop(TUT_K_IOU, k, blk);
}

static void grad_fmb(const float *k, const lk_block *blk)
{
    grad_loop(TUT_K_FMB, k, blk);
}

static void f32_grad(int kind, const double *k, const lk_block *blk)
{
    int nk = kind == TUT_K_DICE_BCE ? 4 : kind == TUT_K_FMB ? 1 : 3;
    float kf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int j = 0; j < nk; j++)
        kf[j] = (float)k[j];
    switch (kind) {
    case TUT_K_DICE: grad_dice(kf, blk); break;
    case TUT_K_DICE_BCE: grad_dice_bce(kf, blk); break;
    case TUT_K_IOU: grad_iou(kf, blk); break;
    default: grad_fmb(kf, blk); break;
    }
}

/* ------------------------------------------------------------------------ */
/* dice, multiclass mode                                                     */

#include "simd_f32_mc.h"

const tut_f32_kernels F32_NAME(tut_f32) = {
    .fused = f32_fused,
    .stats = f32_stats,
    .grad = f32_grad,
    .mc_forward = f32_mc_forward,
    .mc_backward = f32_mc_backward,
};

#endif
