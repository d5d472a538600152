/* ce_body_f32.h: the cross-entropy kernels for float32 logits in float
 * lanes, written once against a small lane layer and compiled twice:
 *
 *   ce_f32_avx512.c  CE_AVX512 = 1, built with -mavx512f -mavx512dq
 *                    -mavx512bw -mavx512vl -mavx2 -mfma: 16 float lanes,
 *                    mask registers, masked loads and stores for tails.
 *   ce_f32_avx2.c    built with -mavx2 -mfma: 8 float lanes.
 *
 * exp and log are glibc's libmvec vector routines (about 1 ulp in float;
 * exp(0) = 1, exp(-inf) = 0, NaN stays NaN): they were measured faster than
 * SLEEF's on both widths. Float64 logits never come here (ce_body.h).
 *
 * Precision: every per-element value (z_c = x_c - m, exp, the gradient) is
 * a float, rounded a few times; every sum is a double: s = sum_c e_c, the
 * smoothing and probability-target sums over the classes, Q, and the
 * per-lane loss and w_y accumulators of a block. Per-position quantities
 * that feed those sums (lse - z_y, w_y, the gradient's factors) are formed
 * in double from the floats, then rounded to float where they meet the
 * per-element arithmetic. A lane's arithmetic never depends on the other
 * lanes, the chunking or the thread count, so results are bitwise identical
 * for any thread count.
 *
 * Layout, chunks and the non-finite rules are those of ce_body.h: z_c is 0
 * where x_c == m (a +inf maximum, a row of -inf). libmvec's exp covers every
 * argument, so a chunk whose maxima are all finite takes the plain x - m and
 * any other chunk the x == m rule; both give the same z wherever both
 * apply. */
#ifndef LOSSKIT_TORCH_CE_BODY_F32_H
#define LOSSKIT_TORCH_CE_BODY_F32_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ce_kernels.h"
#include "losskit/types.h"

#define CE_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------ */
/* The lane layer: vf (CE_W floats), vm (a mask of CE_W lanes), vi (CE_W
 * int32, or CE_W / 2 int64 for index targets) and vdd (CE_W doubles, as two
 * vectors of double lanes: lanes [0, CE_W / 2) and [CE_W / 2, CE_W)).     */

/* clang-format off */
#if CE_AVX512

#define CE_W 16

typedef __m512 vf;
typedef __mmask16 vm;
typedef __m512i vi;
typedef __m512d vd;

__m512 _ZGVeN16v_expf(__m512 x);
__m512 _ZGVeN16v_logf(__m512 x);

CE_INLINE vf vfexp(vf a) { return _ZGVeN16v_expf(a); }
CE_INLINE vf vflog(vf a) { return _ZGVeN16v_logf(a); }
CE_INLINE vf vfset(float a) { return _mm512_set1_ps(a); }
CE_INLINE vf vfload(const float *p) { return _mm512_loadu_ps(p); }
CE_INLINE void vfstore(float *p, vf v) { _mm512_storeu_ps(p, v); }
CE_INLINE vm mfirst(int n) { return (vm)((1u << n) - 1u); } /* lanes [0, n), n < CE_W */
/* the first n lanes (others read 0, past the end never touched) */
CE_INLINE vf vfload_n(const float *p, int n) { return _mm512_maskz_loadu_ps(mfirst(n), p); }
CE_INLINE void vfstore_n(float *p, vf v, int n) { _mm512_mask_storeu_ps(p, mfirst(n), v); }
CE_INLINE vf vfadd(vf a, vf b) { return _mm512_add_ps(a, b); }
CE_INLINE vf vfsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
CE_INLINE vf vfmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
CE_INLINE vf vffms(vf a, vf b, vf c) { return _mm512_fmsub_ps(a, b, c); } /* a b - c, one rounding */
/* a > b ? a : b: a NaN in a is never taken */
CE_INLINE vf vfmax(vf a, vf b) { return _mm512_max_ps(a, b); }
CE_INLINE vm vfeq(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
CE_INLINE vf vfkeep(vm m, vf a) { return _mm512_maskz_mov_ps(m, a); } /* m ? a : 0 */
CE_INLINE vf vfsel(vm m, vf a, vf b) { return _mm512_mask_blend_ps(m, b, a); } /* m ? a : b */
CE_INLINE vf vfzero_if(vm m, vf a) { return _mm512_maskz_mov_ps((vm)~m, a); } /* m ? 0 : a */
CE_INLINE vm mand(vm a, vm b) { return a & b; }
CE_INLINE vm mor(vm a, vm b) { return a | b; }
CE_INLINE vm mandnot(vm a, vm b) { return (vm)(~a & b); } /* ~a & b */
CE_INLINE vm mnone(void) { return 0; }
CE_INLINE vm mtrue(void) { return 0xffff; }
CE_INLINE int many(vm m) { return m != 0; }
CE_INLINE int mall(vm m) { return m == 0xffff; }
CE_INLINE vi viset(int32_t a) { return _mm512_set1_epi32(a); }
CE_INLINE vi viadd(vi a, vi b) { return _mm512_add_epi32(a, b); }
CE_INLINE vi vimul(vi a, vi b) { return _mm512_mullo_epi32(a, b); }
CE_INLINE vi viota(void) { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
CE_INLINE vm vieq(vi a, vi b) { return _mm512_cmpeq_epi32_mask(a, b); }
CE_INLINE void vistore(int32_t *p, vi v) { _mm512_storeu_si512(p, v); }
CE_INLINE vf vfgather(const float *base, vi idx) { return _mm512_i32gather_ps(idx, base, 4); }

/* index targets: CE_W / 2 int64 lanes per half */
CE_INLINE vi vi64load(const int64_t *p) { return _mm512_loadu_si512(p); }
CE_INLINE vi vi64load_i32(const int32_t *p) { return _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)p)); }
/* Lanes of y (two halves of int64) that are a class in [0, C) and not ign
 * (valid), and that are neither (bad); the classes as int32, 0 where not
 * valid. */
CE_INLINE vi vindex(vi lo, vi hi, int64_t ign, int64_t C, vm *valid, vm *bad)
{
    vi g = _mm512_set1_epi64(ign), c = _mm512_set1_epi64(C), z = _mm512_setzero_si512();
    vm in = (vm)(_mm512_cmpge_epi64_mask(lo, z) & _mm512_cmplt_epi64_mask(lo, c));
    in = (vm)(in | (vm)((_mm512_cmpge_epi64_mask(hi, z) & _mm512_cmplt_epi64_mask(hi, c)) << 8));
    vm eq = (vm)(_mm512_cmpeq_epi64_mask(lo, g) | (vm)(_mm512_cmpeq_epi64_mask(hi, g) << 8));
    *valid = mandnot(eq, in);
    *bad = (vm)~(in | eq);
    vi y = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)),
                              _mm512_cvtepi64_epi32(hi), 1);
    return _mm512_maskz_mov_epi32(*valid, y);
}

typedef struct vdd { vd lo, hi; } vdd;

CE_INLINE vdd dd_set(double a) { return (vdd){_mm512_set1_pd(a), _mm512_set1_pd(a)}; }
CE_INLINE vdd dd_of(vf a)
{
    return (vdd){_mm512_cvtps_pd(_mm512_castps512_ps256(a)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1))};
}
CE_INLINE vf dd_to_f(vdd a)
{
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(a.lo)), _mm512_cvtpd_ps(a.hi), 1);
}
CE_INLINE vdd dd_load(const double *p) { return (vdd){_mm512_loadu_pd(p), _mm512_loadu_pd(p + 8)}; }
CE_INLINE void dd_store(double *p, vdd a) { _mm512_storeu_pd(p, a.lo); _mm512_storeu_pd(p + 8, a.hi); }
CE_INLINE vdd dd_add(vdd a, vdd b) { return (vdd){_mm512_add_pd(a.lo, b.lo), _mm512_add_pd(a.hi, b.hi)}; }
CE_INLINE vdd dd_sub(vdd a, vdd b) { return (vdd){_mm512_sub_pd(a.lo, b.lo), _mm512_sub_pd(a.hi, b.hi)}; }
CE_INLINE vdd dd_mul(vdd a, vdd b) { return (vdd){_mm512_mul_pd(a.lo, b.lo), _mm512_mul_pd(a.hi, b.hi)}; }
CE_INLINE vdd dd_div(vdd a, vdd b) { return (vdd){_mm512_div_pd(a.lo, b.lo), _mm512_div_pd(a.hi, b.hi)}; }
CE_INLINE vdd dd_keep(vm m, vdd a)
{
    return (vdd){_mm512_maskz_mov_pd((__mmask8)m, a.lo), _mm512_maskz_mov_pd((__mmask8)(m >> 8), a.hi)};
}
CE_INLINE vm dd_eq0(vdd a)
{
    __m512d z = _mm512_setzero_pd();
    return (vm)(_mm512_cmp_pd_mask(a.lo, z, _CMP_EQ_OQ) | (vm)(_mm512_cmp_pd_mask(a.hi, z, _CMP_EQ_OQ) << 8));
}
CE_INLINE vdd dd_gather(const double *base, vi idx)
{
    return (vdd){_mm512_i32gather_pd(_mm512_castsi512_si256(idx), base, 8),
                 _mm512_i32gather_pd(_mm512_extracti64x4_epi64(idx, 1), base, 8)};
}

#else /* AVX2 + FMA: 8 float lanes */

#define CE_W 8

typedef __m256 vf;
typedef __m256 vm; /* lanes all ones or all zeros */
typedef __m256i vi;
typedef __m256d vd;

__m256 _ZGVdN8v_expf(__m256 x);
__m256 _ZGVdN8v_logf(__m256 x);

CE_INLINE vf vfexp(vf a) { return _ZGVdN8v_expf(a); }
CE_INLINE vf vflog(vf a) { return _ZGVdN8v_logf(a); }
CE_INLINE vf vfset(float a) { return _mm256_set1_ps(a); }
CE_INLINE vf vfload(const float *p) { return _mm256_loadu_ps(p); }
CE_INLINE void vfstore(float *p, vf v) { _mm256_storeu_ps(p, v); }
CE_INLINE vi viset(int32_t a) { return _mm256_set1_epi32(a); }
CE_INLINE vi viota(void) { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
CE_INLINE vm mfirst(int n) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(viset(n), viota())); }
CE_INLINE vf vfload_n(const float *p, int n) { return _mm256_maskload_ps(p, _mm256_castps_si256(mfirst(n))); }
CE_INLINE void vfstore_n(float *p, vf v, int n) { _mm256_maskstore_ps(p, _mm256_castps_si256(mfirst(n)), v); }
CE_INLINE vf vfadd(vf a, vf b) { return _mm256_add_ps(a, b); }
CE_INLINE vf vfsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
CE_INLINE vf vfmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
CE_INLINE vf vffms(vf a, vf b, vf c) { return _mm256_fmsub_ps(a, b, c); } /* a b - c, one rounding */
/* a > b ? a : b: a NaN in a is never taken */
CE_INLINE vf vfmax(vf a, vf b) { return _mm256_max_ps(a, b); }
CE_INLINE vm vfeq(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
CE_INLINE vf vfkeep(vm m, vf a) { return _mm256_and_ps(m, a); } /* m ? a : 0 */
CE_INLINE vf vfsel(vm m, vf a, vf b) { return _mm256_blendv_ps(b, a, m); } /* m ? a : b */
CE_INLINE vf vfzero_if(vm m, vf a) { return _mm256_andnot_ps(m, a); } /* m ? 0 : a */
CE_INLINE vm mand(vm a, vm b) { return _mm256_and_ps(a, b); }
CE_INLINE vm mor(vm a, vm b) { return _mm256_or_ps(a, b); }
CE_INLINE vm mandnot(vm a, vm b) { return _mm256_andnot_ps(a, b); } /* ~a & b */
CE_INLINE vm mnone(void) { return _mm256_setzero_ps(); }
CE_INLINE vm mtrue(void) { return _mm256_castsi256_ps(viset(-1)); }
CE_INLINE int many(vm m) { return _mm256_movemask_ps(m) != 0; }
CE_INLINE int mall(vm m) { return _mm256_movemask_ps(m) == 0xff; }
CE_INLINE vi viadd(vi a, vi b) { return _mm256_add_epi32(a, b); }
CE_INLINE vi vimul(vi a, vi b) { return _mm256_mullo_epi32(a, b); }
CE_INLINE vm vieq(vi a, vi b) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)); }
CE_INLINE void vistore(int32_t *p, vi v) { _mm256_storeu_si256((__m256i *)p, v); }
CE_INLINE vf vfgather(const float *base, vi idx) { return _mm256_i32gather_ps(base, idx, 4); }

CE_INLINE vi vi64load(const int64_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
CE_INLINE vi vi64load_i32(const int32_t *p) { return _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)p)); }
/* The low 32 bits of the int64 lanes of lo, then of hi. */
CE_INLINE vi vi64to32(vi lo, vi hi)
{
    vi p = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    return _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(lo, p),
                                     _mm256_permutevar8x32_epi32(hi, p), 0x20);
}
CE_INLINE vi vin64(vi y, vi c) /* 0 <= y < c, per int64 lane */
{
    return _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_setzero_si256(), y), _mm256_cmpgt_epi64(c, y));
}
/* See the AVX-512 version. */
CE_INLINE vi vindex(vi lo, vi hi, int64_t ign, int64_t C, vm *valid, vm *bad)
{
    vi g = _mm256_set1_epi64x(ign), c = _mm256_set1_epi64x(C);
    vm in = _mm256_castsi256_ps(vi64to32(vin64(lo, c), vin64(hi, c)));
    vm eq = _mm256_castsi256_ps(vi64to32(_mm256_cmpeq_epi64(lo, g), _mm256_cmpeq_epi64(hi, g)));
    *valid = mandnot(eq, in);
    *bad = mandnot(mor(in, eq), mtrue());
    return _mm256_and_si256(_mm256_castps_si256(*valid), vi64to32(lo, hi));
}

typedef struct vdd { vd lo, hi; } vdd;

CE_INLINE vdd dd_set(double a) { return (vdd){_mm256_set1_pd(a), _mm256_set1_pd(a)}; }
CE_INLINE vdd dd_of(vf a)
{
    return (vdd){_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1))};
}
CE_INLINE vf dd_to_f(vdd a)
{
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(a.lo)), _mm256_cvtpd_ps(a.hi), 1);
}
CE_INLINE vdd dd_load(const double *p) { return (vdd){_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)}; }
CE_INLINE void dd_store(double *p, vdd a) { _mm256_storeu_pd(p, a.lo); _mm256_storeu_pd(p + 4, a.hi); }
CE_INLINE vdd dd_add(vdd a, vdd b) { return (vdd){_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }
CE_INLINE vdd dd_sub(vdd a, vdd b) { return (vdd){_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi)}; }
CE_INLINE vdd dd_mul(vdd a, vdd b) { return (vdd){_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)}; }
CE_INLINE vdd dd_div(vdd a, vdd b) { return (vdd){_mm256_div_pd(a.lo, b.lo), _mm256_div_pd(a.hi, b.hi)}; }
/* The float mask's lanes widened to the two halves' double lanes. */
CE_INLINE vd mlo(vm m) { return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_castps_si128(_mm256_castps256_ps128(m)))); }
CE_INLINE vd mhi(vm m) { return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_castps_si128(_mm256_extractf128_ps(m, 1)))); }
CE_INLINE vdd dd_keep(vm m, vdd a) { return (vdd){_mm256_and_pd(mlo(m), a.lo), _mm256_and_pd(mhi(m), a.hi)}; }
CE_INLINE vm dd_eq0(vdd a)
{
    __m256d z = _mm256_setzero_pd();
    return _mm256_castsi256_ps(vi64to32(_mm256_castpd_si256(_mm256_cmp_pd(a.lo, z, _CMP_EQ_OQ)),
                                        _mm256_castpd_si256(_mm256_cmp_pd(a.hi, z, _CMP_EQ_OQ))));
}
CE_INLINE vdd dd_gather(const double *base, vi idx)
{
    return (vdd){_mm256_i32gather_pd(base, _mm256_castsi256_si128(idx), 8),
                 _mm256_i32gather_pd(base, _mm256_extracti128_si256(idx, 1), 8)};
}

#endif
/* clang-format on */

CE_INLINE vf vfzero(void)
{
    return vfset(0.0f);
}

CE_INLINE vdd dd_zero(void)
{
    return dd_set(0.0);
}

CE_INLINE vdd dd_zero_if(vm m, vdd a)
{
    return dd_keep(mandnot(m, mtrue()), a);
}

/* c * a, except that a zero coefficient gives 0 even when a is infinite or
 * NaN (ce_body.h). */
CE_INLINE vdd dd_mul0(vdd c, vdd a)
{
    return dd_zero_if(dd_eq0(c), dd_mul(c, a));
}

/* x - m, and 0 where x == m (also when both are +inf or -inf). */
CE_INLINE vf vfshift(vf x, vf m)
{
    return vfzero_if(vfeq(x, m), vfsub(x, m));
}

/* ------------------------------------------------------------------------ */
/* Chunks (ce_body.h describes them)                                         */

/* The chunk kernels take ce_body.h's parameters, the dtypes included, so
 * that ce_segments.h drives both bodies; F32 is always 1 here. */

#define CE_P    64 /* positions per chunk at most */
#define CE_PV   (CE_P / CE_W)
#define CE_EVEC (32768 / (int)sizeof(vf)) /* vectors of exp values a chunk keeps: 32 KiB */

typedef struct ce_ctx {
    const ce_cfg *cf;
    const ce_seg *sg;
    int64_t j0; /* first position of the chunk, in the segment */
    int64_t n;  /* positions */
    int nvec;   /* vectors, (n + CE_W - 1) / CE_W */
} ce_ctx;

CE_INLINE int live_lanes(const ce_ctx *k, int v)
{
    int64_t r = k->n - (int64_t)v * CE_W;
    return r < CE_W ? (int)r : CE_W;
}

/* Element offset of (class c, vector v) in x-shaped tensors. */
CE_INLINE int64_t off_of(const ce_ctx *k, int64_t c, int v)
{
    return c * k->sg->cs + (k->j0 + (int64_t)v * CE_W) * k->sg->ps;
}

/* nv lanes ps apart from p; the others read 0. */
CE_INLINE vf ld_lanes(const float *p, int64_t ps, int nv)
{
    if (ps == 1)
        return nv == CE_W ? vfload(p) : vfload_n(p, nv);
    float a[CE_W] = {0};
    for (int l = 0; l < nv; l++)
        a[l] = p[l * ps];
    return vfload(a);
}

CE_INLINE vf ld_x(const ce_ctx *k, int64_t c, int v, const int CONT)
{
    const float *p = (const float *)k->sg->x + off_of(k, c, v);
    return CONT ? vfload(p) : ld_lanes(p, k->sg->ps, live_lanes(k, v));
}

/* Stores (or adds, with acc) g at (c, v) of the gradient. */
CE_INLINE void st_grad(const ce_ctx *k, int64_t c, int v, vf g, int acc, const int CONT)
{
    float *p = (float *)k->sg->g + off_of(k, c, v);
    int nv = CONT ? CE_W : live_lanes(k, v);
    int64_t ps = k->sg->ps;
    if (nv == CE_W && (CONT || ps == 1)) {
        vfstore(p, acc ? vfadd(vfload(p), g) : g);
    } else if (ps == 1) {
        vfstore_n(p, acc ? vfadd(vfload_n(p, nv), g) : g, nv);
    } else {
        float a[CE_W];
        vfstore(a, g);
        for (int l = 0; l < nv; l++)
            p[l * ps] = acc ? p[l * ps] + a[l] : a[l];
    }
}

/* Index targets of vector v (consecutive) as classes, 0 where not valid;
 * lanes past the end read fill. */
CE_INLINE vi ld_index(const ce_ctx *k, int v, vm *valid, vm *bad, const int I32)
{
    const ce_cfg *cf = k->cf;
    int64_t j = k->j0 + (int64_t)v * CE_W;
    int nv = live_lanes(k, v);
    const void *t = k->sg->t;
    if (nv == CE_W && I32) {
        const int32_t *p = (const int32_t *)t + j;
        return vindex(vi64load_i32(p), vi64load_i32(p + CE_W / 2), cf->ignore_index, cf->classes,
                      valid, bad);
    }
    if (nv == CE_W) {
        const int64_t *p = (const int64_t *)t + j;
        return vindex(vi64load(p), vi64load(p + CE_W / 2), cf->ignore_index, cf->classes, valid,
                      bad);
    }
    int64_t a[CE_W];
    for (int l = 0; l < CE_W; l++)
        a[l] = l < nv ? (I32 ? ((const int32_t *)t)[j + l] : ((const int64_t *)t)[j + l])
                      : cf->ignore_index;
    return vindex(vi64load(a), vi64load(a + CE_W / 2), cf->ignore_index, cf->classes, valid, bad);
}

/* Per-position losses of vector v (reduction none), consecutive. */
CE_INLINE void st_out(const ce_ctx *k, int v, vdd val)
{
    float *p = (float *)k->sg->out + k->j0 + (int64_t)v * CE_W;
    int nv = live_lanes(k, v);
    if (nv == CE_W)
        vfstore(p, dd_to_f(val));
    else
        vfstore_n(p, dd_to_f(val), nv);
}

/* The target's logit x_y of vector v, at class yc (a class for every lane). */
CE_INLINE vf ld_target_logit(const ce_ctx *k, int v, vi yc, const int CONT)
{
    const ce_seg *sg = k->sg;
    const float *p = (const float *)sg->x + off_of(k, 0, v);
    if (CONT) /* C * S < 2^31 (cf->contiguous): 32-bit offsets suffice */
        return vfgather(p, viadd(vimul(yc, viset((int32_t)sg->cs)), viota()));
    int32_t y[CE_W];
    float a[CE_W] = {0};
    vistore(y, yc);
    for (int l = 0; l < live_lanes(k, v); l++)
        a[l] = p[y[l] * sg->cs + l * sg->ps];
    return vfload(a);
}

/* q_c = w_c ((1 - eps) t_c + eps / C) of a probability target, in double. */
CE_INLINE vdd ld_q(const ce_ctx *k, int64_t c, int v, const int TF32, const int CONT)
{
    const ce_cfg *cf = k->cf;
    int64_t off = off_of(k, c, v), ps = k->sg->ps;
    int nv = CONT ? CE_W : live_lanes(k, v);
    vdd t;
    if (TF32) {
        t = dd_of(CONT ? vfload((const float *)k->sg->t + off)
                       : ld_lanes((const float *)k->sg->t + off, ps, nv));
    } else if (nv == CE_W && ps == 1) {
        t = dd_load((const double *)k->sg->t + off);
    } else {
        double a[CE_W] = {0};
        for (int l = 0; l < nv; l++)
            a[l] = ((const double *)k->sg->t)[off + l * ps];
        t = dd_load(a);
    }
    vdd q = dd_add(dd_mul(dd_set(cf->keep), t), dd_set(cf->share));
    return cf->w ? dd_mul(dd_set(cf->w[c]), q) : q;
}

/* ------------------------------------------------------------------------ */
/* Passes over the classes                                                   */

#ifndef CE_PF_CHUNKS
#define CE_PF_CHUNKS 2
#endif
/* Asks for the logits CE_PF_CHUNKS chunks ahead (ce_body.h); with W, for
 * the gradient, to be written: its lines are then owned by the time the
 * stores come, which otherwise wait for them. */
CE_INLINE void prefetch_ahead(const ce_ctx *k, const void *base, const int W)
{
    const int64_t bytes = k->n * 4;
    uintptr_t p = (uintptr_t)base + (uintptr_t)((off_of(k, 0, 0) + CE_PF_CHUNKS * k->n) * 4);
    for (int64_t c = 0; c < k->cf->classes; c++)
        for (int64_t b = 0; b < bytes; b += 64) {
            const void *a = (const void *)(p + (uintptr_t)(c * k->sg->cs * 4 + b));
            if (W)
                __builtin_prefetch(a, 1, 3);
            else
                __builtin_prefetch(a, 0, 3);
        }
}

/* m[v] = max_c x_c (NaN ignored; -inf when every logit is NaN or -inf).
 * Returns 1 when every maximum is finite. */
CE_INLINE int pass_max(const ce_ctx *k, vf *m, const int CONT)
{
    if (CONT && CE_PF_CHUNKS) {
        prefetch_ahead(k, k->sg->x, 0);
        if (k->sg->g)
            prefetch_ahead(k, k->sg->g, 1);
    }
    for (int v = 0; v < k->nvec; v++)
        m[v] = vfset(-HUGE_VALF);
    for (int64_t c = 0; c < k->cf->classes; c++)
        for (int v = 0; v < k->nvec; v++)
            m[v] = vfmax(ld_x(k, c, v, CONT), m[v]);
    vm fin = mtrue();
    for (int v = 0; v < k->nvec; v++)
        fin = mand(fin, vfeq(vfsub(m[v], m[v]), vfzero()));
    return mall(fin);
}

/* z_c of (c, v): x - m, with the x == m rule unless every maximum is finite
 * (where the two agree). */
CE_INLINE vf shifted(const ce_ctx *k, const vf *m, int64_t c, int v, int finite, const int CONT)
{
    vf x = ld_x(k, c, v, CONT);
    return finite ? vfsub(x, m[v]) : vfshift(x, m[v]);
}

/* s[v] = sum_c exp(z_c), in double; with keep, each exp also into
 * e[c * nvec + v]. */
CE_INLINE void pass_sum(const ce_ctx *k, const vf *m, vdd *s, vf *e, int keep, int finite,
                        const int CONT)
{
    const int nvec = k->nvec;
    for (int v = 0; v < nvec; v++)
        s[v] = dd_zero();
    for (int64_t c = 0; c < k->cf->classes; c++)
        for (int v = 0; v < nvec; v++) {
            vf ex = vfexp(shifted(k, m, c, v, finite, CONT));
            if (keep)
                e[c * nvec + v] = ex;
            s[v] = dd_add(s[v], dd_of(ex));
        }
}

/* lse[v] = log s[v], rounded to float first. */
CE_INLINE void pass_log(const ce_ctx *k, const vdd *s, vf *lse)
{
    for (int v = 0; v < k->nvec; v++)
        lse[v] = vflog(dd_to_f(s[v]));
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */

typedef struct ce_facc {
    vdd loss, wy;
    vm bad;
} ce_facc;

/* Index targets: loss = (1 - eps) w_y (lse - z_y) + (eps / C) sum_c w_c (lse - z_c),
 * 0 when ignored; w_y (0 when ignored) for the mean's divisor. */
CE_INLINE void fwd_index_chunk(const ce_ctx *k, ce_facc *acc, const int F32, const int I32,
                               const int CONT)
{
    const ce_cfg *cf = k->cf;
    const int64_t C = cf->classes;
    vf m[CE_PV], lse[CE_PV];
    vdd s[CE_PV], a[CE_PV];
    int finite = pass_max(k, m, CONT);
    pass_sum(k, m, s, NULL, 0, finite, CONT);
    pass_log(k, s, lse);
    int smooth = cf->eps > 0.0;
    for (int v = 0; v < k->nvec; v++)
        a[v] = dd_zero();
    for (int64_t c = 0; smooth && c < C; c++) {
        double w = cf->w ? cf->w[c] : 1.0;
        if (w == 0.0) /* contributes 0, whatever its log-probability */
            continue;
        for (int v = 0; v < k->nvec; v++) {
            vf d = vfsub(lse[v], vfshift(ld_x(k, c, v, CONT), m[v]));
            a[v] = dd_add(a[v], dd_mul(dd_set(w), dd_of(d)));
        }
    }
    for (int v = 0; v < k->nvec; v++) {
        vm valid, bad;
        vi yc = ld_index(k, v, &valid, &bad, I32);
        acc->bad = mor(acc->bad, bad);
        vf zy = vfshift(ld_target_logit(k, v, yc, CONT), m[v]);
        vdd wy = cf->w ? dd_gather(cf->w, yc) : dd_set(1.0);
        vdd loss = dd_mul0(wy, dd_sub(dd_of(lse[v]), dd_of(zy)));
        if (smooth)
            loss = dd_add(dd_mul0(dd_set(cf->keep), loss), dd_mul(dd_set(cf->share), a[v]));
        loss = dd_keep(valid, loss);
        acc->loss = dd_add(acc->loss, loss);
        acc->wy = dd_add(acc->wy, dd_keep(valid, wy));
        if (k->sg->out)
            st_out(k, v, loss);
    }
}

/* Probability targets: loss = sum_c q_c (lse - z_c). */
CE_INLINE void fwd_prob_chunk(const ce_ctx *k, ce_facc *acc, const int F32, const int TF32,
                              const int CONT)
{
    vf m[CE_PV], lse[CE_PV];
    vdd s[CE_PV], loss[CE_PV];
    int finite = pass_max(k, m, CONT);
    pass_sum(k, m, s, NULL, 0, finite, CONT);
    pass_log(k, s, lse);
    for (int v = 0; v < k->nvec; v++)
        loss[v] = dd_zero();
    for (int64_t c = 0; c < k->cf->classes; c++)
        for (int v = 0; v < k->nvec; v++) {
            vf d = vfsub(lse[v], vfshift(ld_x(k, c, v, CONT), m[v]));
            loss[v] = dd_add(loss[v], dd_mul0(ld_q(k, c, v, TF32, CONT), dd_of(d)));
        }
    for (int v = 0; v < k->nvec; v++) {
        int nv = live_lanes(k, v);
        vdd l = nv == CE_W ? loss[v] : dd_keep(mfirst(nv), loss[v]);
        acc->loss = dd_add(acc->loss, l);
        if (k->sg->out)
            st_out(k, v, l);
    }
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                  */

/* exp(z_c) of (c, v): kept by pass_sum, or computed again the same way. */
CE_INLINE vf exp_at(const ce_ctx *k, const vf *m, const vf *e, int keep, int64_t c, int v,
                    int finite, const int CONT)
{
    return keep ? e[c * k->nvec + v] : vfexp(shifted(k, m, c, v, finite, CONT));
}

/* Index targets: g_c = scale (Q e_c / s - q_c), Q = (1 - eps) w_y + (eps / C) W,
 * q_c = (1 - eps) w_y [c = y] + (eps / C) w_c; exactly 0 at ignored positions
 * (even for NaN logits) and at any index that is not a class. The factors
 * scale Q / s and scale q_c are formed in double and rounded once, the
 * product and difference are one fused float operation; with C = 1 both
 * factors are the same double, and the gradient exactly 0. */
CE_INLINE void bwd_index_chunk(const ce_ctx *k, vf *e, const int F32, const int I32, const int CONT)
{
    const ce_cfg *cf = k->cf;
    const int64_t C = cf->classes;
    const int nvec = k->nvec;
    vf m[CE_PV], a[CE_PV], qy[CE_PV];
    vdd s[CE_PV];
    vi ycs[CE_PV];
    vm valids[CE_PV];
    int keep = C * nvec <= cf->evec;
    int finite = pass_max(k, m, CONT);
    pass_sum(k, m, s, e, keep, finite, CONT);
    for (int v = 0; v < nvec; v++) {
        vm bad;
        ycs[v] = ld_index(k, v, &valids[v], &bad, I32);
        vdd wy = cf->w ? dd_gather(cf->w, ycs[v]) : dd_set(1.0);
        vdd sc = dd_set(cf->scale), kw = dd_mul(dd_set(cf->keep), wy);
        a[v] = dd_to_f(dd_div(dd_mul(sc, dd_add(kw, dd_set(cf->share * cf->wsum))), s[v]));
        qy[v] = dd_to_f(dd_mul(sc, dd_add(kw, dd_mul(dd_set(cf->share), wy))));
    }
    for (int64_t c = 0; c < C; c++) {
        vi cv = viset((int32_t)c);
        vf bw = vfset((float)(cf->scale * (cf->share * (cf->w ? cf->w[c] : 1.0))));
        for (int v = 0; v < nvec; v++) {
            vf ex = exp_at(k, m, e, keep, c, v, finite, CONT);
            vf g = vffms(a[v], ex, vfsel(vieq(ycs[v], cv), qy[v], bw));
            st_grad(k, c, v, vfkeep(valids[v], g), cf->accumulate, CONT);
        }
    }
}

/* Probability targets: g_c = scale (Q e_c / s - q_c), Q = sum_c q_c. */
CE_INLINE void bwd_prob_chunk(const ce_ctx *k, vf *e, const int F32, const int TF32, const int CONT)
{
    const ce_cfg *cf = k->cf;
    const int64_t C = cf->classes;
    const int nvec = k->nvec;
    vf m[CE_PV], a[CE_PV];
    vdd s[CE_PV], Q[CE_PV];
    int keep = C * nvec <= cf->evec;
    int finite = pass_max(k, m, CONT);
    pass_sum(k, m, s, e, keep, finite, CONT);
    for (int v = 0; v < nvec; v++)
        Q[v] = dd_zero();
    for (int64_t c = 0; c < C; c++)
        for (int v = 0; v < nvec; v++)
            Q[v] = dd_add(Q[v], ld_q(k, c, v, TF32, CONT));
    vdd sc = dd_set(cf->scale);
    for (int v = 0; v < nvec; v++)
        a[v] = dd_to_f(dd_div(dd_mul(sc, Q[v]), s[v]));
    for (int64_t c = 0; c < C; c++)
        for (int v = 0; v < nvec; v++) {
            vf ex = exp_at(k, m, e, keep, c, v, finite, CONT);
            vf g = vffms(a[v], ex, dd_to_f(dd_mul(sc, ld_q(k, c, v, TF32, CONT))));
            st_grad(k, c, v, g, cf->accumulate, CONT);
        }
}

/* ------------------------------------------------------------------------ */
/* Segments (ce_segments.h)                                                  */

typedef vf ce_ev;

CE_INLINE ce_ctx ctx_at(const ce_cfg *cf, const ce_seg *sg, int64_t j0, int64_t n)
{
    ce_ctx k = {cf, sg, j0, n, (int)((n + CE_W - 1) / CE_W)};
    return k;
}

/* The lanes' sums: the loss in acc[0..CE_W), w_y from acc[CE_ACC / 2]. */
CE_INLINE ce_facc facc_open(const double acc[CE_ACC])
{
    ce_facc a = {dd_load(acc), dd_load(acc + CE_ACC / 2), mnone()};
    return a;
}

/* Stores the sums back; returns whether a bad index target was seen. */
CE_INLINE int facc_close(const ce_facc *a, double acc[CE_ACC])
{
    dd_store(acc, a->loss);
    dd_store(acc + CE_ACC / 2, a->wy);
    return many(a->bad);
}

#include "ce_segments.h"

/* One specialisation per target dtype: 32-bit (int32 or float32)? */
#define CE_F32_VARIANTS(X)                                                                         \
    X(i64, 0, 0)                                                                                   \
    X(i32, 1, 0)                                                                                   \
    X(pf32, 1, 1)                                                                                  \
    X(pf64, 0, 1)

#define CE_F32_DEFINE(NAME, T32, PROB)                                                             \
    static int fwd_##NAME(const ce_cfg *cf, const ce_seg *sg, double acc[CE_ACC])                  \
    {                                                                                              \
        return fwd_seg(cf, sg, acc, 1, T32, PROB);                                                 \
    }                                                                                              \
    static void bwd_##NAME(const ce_cfg *cf, const ce_seg *sg)                                     \
    {                                                                                              \
        bwd_seg(cf, sg, 1, T32, PROB);                                                             \
    }
CE_F32_VARIANTS(CE_F32_DEFINE)

static int variant(const ce_cfg *cf)
{
    int t32 = cf->t_dtype == LK_DTYPE_I32 || cf->t_dtype == LK_DTYPE_F32;
    return (cf->prob ? 2 : 0) + (cf->prob ? !t32 : t32);
}

/* Float32 logits only (the caller's choice, cross_entropy.c). */
static int ce_forward_f32(const ce_cfg *cf, const ce_seg *sg, double acc[CE_ACC])
{
    static int (*const fwd[4])(const ce_cfg *, const ce_seg *, double *) = {
        fwd_i64,
        fwd_i32,
        fwd_pf32,
        fwd_pf64,
    };
    return fwd[variant(cf)](cf, sg, acc);
}

static void ce_backward_f32(const ce_cfg *cf, const ce_seg *sg)
{
    static void (*const bwd[4])(const ce_cfg *, const ce_seg *) = {
        bwd_i64,
        bwd_i32,
        bwd_pf32,
        bwd_pf64,
    };
    bwd[variant(cf)](cf, sg);
}

#endif /* LOSSKIT_TORCH_CE_BODY_F32_H */
