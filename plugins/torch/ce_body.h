/* ce_body.h: the cross-entropy kernels, written once against a small layer
 * of lane operations on doubles and compiled twice:
 *
 *   ce_avx2.c       CE_AVX2 = 1, built with -mavx2 -mfma: four lanes on
 *                   AVX2 intrinsics, fused multiply-adds in exp, hardware
 *                   gathers.
 *   ce_portable.c   two lanes on GNU C vector extensions, SSE2 intrinsics
 *                   where GCC's generic lowering is poor (min, max, selects);
 *                   a * b + c is two roundings.
 *
 * Layout: the logits are (N, C, S); for a fixed row n and class c the S
 * positions are consecutive. A kernel walks a run of positions in chunks of
 * up to 64, one lane per position, with the class loop outside:
 *
 *   m = max_c x_c, then s = sum_c exp(x_c - m), lse = log s,
 *   the target's logit x_y and weight w_y gathered by class id,
 *   loss = w_y (lse - z_y) (+ the smoothing term), summed per lane in double.
 *
 * Every value is computed in double lanes: float64 logits always, float32
 * logits on the portable path (and on CPUs or builds without the float
 * kernels of ce_body_f32.h), where they give exactly the result of their
 * float64 upcast (README.md). A lane's arithmetic never depends on the
 * other lanes, the chunking or the thread count; only the order in which a
 * block adds its losses does, and that is fixed by the block. The walk over
 * a segment's chunks and the packing of short rows are ce_segments.h,
 * shared with ce_body_f32.h.
 *
 * Non-finite logits. z_c = x_c - m is taken as 0 where x_c == m, so that a
 * +inf maximum (or a row of -inf) gives 0, not inf - inf. A chunk whose
 * maxima are all finite and whose z_c all lie above -700 takes the fast exp
 * (no clamp, one scaling); any other chunk (an infinite or huge logit, a row
 * of NaN) redoes its sum with the full exp and the x == m rule. Both give the
 * same value wherever both apply, so the choice never shows in a result. */
#ifndef LOSSKIT_TORCH_CE_BODY_H
#define LOSSKIT_TORCH_CE_BODY_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ce_kernels.h"
#include "losskit/types.h"

#define CE_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------ */
/* The lane layer                                                           */

/* clang-format off */
#if CE_AVX2
#include <immintrin.h>

#define CE_W 4

typedef __m256d vd; /* four doubles */
typedef __m256i vi; /* four int64 */
typedef __m256d vm; /* four lane masks: all ones or all zeros */

CE_INLINE vd vset(double a) { return _mm256_set1_pd(a); }
CE_INLINE vi viset(int64_t a) { return _mm256_set1_epi64x(a); }
CE_INLINE vd vload(const double *p) { return _mm256_loadu_pd(p); }
CE_INLINE vd vload_f32(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
CE_INLINE void vstore(double *p, vd v) { _mm256_storeu_pd(p, v); }
CE_INLINE void vstore_f32(float *p, vd v) { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)); }
CE_INLINE vi viload_i64(const int64_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
CE_INLINE vi viload_i32(const int32_t *p)
{
    return _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)p));
}
CE_INLINE vd vadd(vd a, vd b) { return _mm256_add_pd(a, b); }
CE_INLINE vd vsub(vd a, vd b) { return _mm256_sub_pd(a, b); }
CE_INLINE vd vmul(vd a, vd b) { return _mm256_mul_pd(a, b); }
CE_INLINE vd vdiv(vd a, vd b) { return _mm256_div_pd(a, b); }
CE_INLINE vd vfma(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); } /* a b + c */
CE_INLINE vd vfnma(vd a, vd b, vd c) { return _mm256_fnmadd_pd(a, b, c); } /* c - a b */
/* a > b ? a : b and a < b ? a : b: a NaN in a is never taken. */
CE_INLINE vd vmax(vd a, vd b) { return _mm256_max_pd(a, b); }
CE_INLINE vd vmin(vd a, vd b) { return _mm256_min_pd(a, b); }
CE_INLINE vm vlt(vd a, vd b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
CE_INLINE vm vge(vd a, vd b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
CE_INLINE vm veq(vd a, vd b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
CE_INLINE vm visnan(vd a) { return _mm256_cmp_pd(a, a, _CMP_UNORD_Q); }
CE_INLINE vm vieq(vi a, vi b) { return _mm256_castsi256_pd(_mm256_cmpeq_epi64(a, b)); }
CE_INLINE vm vigt(vi a, vi b) { return _mm256_castsi256_pd(_mm256_cmpgt_epi64(a, b)); }
CE_INLINE vm mand(vm a, vm b) { return _mm256_and_pd(a, b); }
CE_INLINE vm mor(vm a, vm b) { return _mm256_or_pd(a, b); }
CE_INLINE vm mandnot(vm a, vm b) { return _mm256_andnot_pd(a, b); } /* ~a & b */
CE_INLINE vm mnone(void) { return _mm256_setzero_pd(); }
CE_INLINE vm mtrue(void) { return _mm256_castsi256_pd(_mm256_set1_epi64x(-1)); }
CE_INLINE int many(vm m) { return _mm256_movemask_pd(m) != 0; }
CE_INLINE int mall(vm m) { return _mm256_movemask_pd(m) == 0xf; }
CE_INLINE vd vsel(vm m, vd a, vd b) { return _mm256_blendv_pd(b, a, m); } /* m ? a : b */
CE_INLINE vd vkeep(vm m, vd a) { return _mm256_and_pd(m, a); } /* m ? a : 0 */
CE_INLINE vd vzero_if(vm m, vd a) { return _mm256_andnot_pd(m, a); } /* m ? 0 : a */
CE_INLINE vi visel(vm m, vi a, vi b)
{
    return _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(b), _mm256_castsi256_pd(a), m));
}
CE_INLINE vi viadd(vi a, vi b) { return _mm256_add_epi64(a, b); }
CE_INLINE vi visub(vi a, vi b) { return _mm256_sub_epi64(a, b); }
CE_INLINE vi viand(vi a, vi b) { return _mm256_and_si256(a, b); }
CE_INLINE vi vior(vi a, vi b) { return _mm256_or_si256(a, b); }
CE_INLINE vi vixor(vi a, vi b) { return _mm256_xor_si256(a, b); }
#define visrl(a, n) _mm256_srli_epi64((a), (n))
#define visll(a, n) _mm256_slli_epi64((a), (n))
/* a * b for 0 <= a, b < 2^32 */
CE_INLINE vi vimul32(vi a, vi b) { return _mm256_mul_epu32(a, b); }
CE_INLINE vi vbits(vd a) { return _mm256_castpd_si256(a); }
CE_INLINE vd vfrombits(vi a) { return _mm256_castsi256_pd(a); }
CE_INLINE vd vgather(const double *base, vi idx) { return _mm256_i64gather_pd(base, idx, 8); }
CE_INLINE vi vigather(const uint64_t *base, vi idx)
{
    return _mm256_i64gather_epi64((const long long *)base, idx, 8);
}
CE_INLINE vi vilanes(int64_t step) { return _mm256_set_epi64x(3 * step, 2 * step, step, 0); }
CE_INLINE vd vgather_f32(const float *base, vi idx)
{
    return _mm256_cvtps_pd(_mm256_i64gather_ps(base, idx, 4));
}

#else /* portable: two lanes, GNU C vector extensions; SSE2 where it helps */

#define CE_W 2
#if defined(__SSE2__)
#include <emmintrin.h>
typedef __m128d vd;
typedef __m128i vi;
#else
typedef double vd __attribute__((vector_size(16)));
typedef long long vi __attribute__((vector_size(16)));
#endif
typedef unsigned long long ce_vu __attribute__((vector_size(16)));
typedef long long ce_vl __attribute__((vector_size(16)));
typedef vi vm;

CE_INLINE vd vset(double a) { return (vd){a, a}; }
CE_INLINE vi viset(int64_t a) { return (vi){a, a}; }
CE_INLINE vd vload(const double *p)
{
    vd v;
    memcpy(&v, p, sizeof v);
    return v;
}
CE_INLINE vd vload_f32(const float *p) { return (vd){p[0], p[1]}; }
CE_INLINE void vstore(double *p, vd v) { memcpy(p, &v, sizeof v); }
CE_INLINE void vstore_f32(float *p, vd v)
{
    p[0] = (float)v[0];
    p[1] = (float)v[1];
}
CE_INLINE vi viload_i64(const int64_t *p)
{
    vi v;
    memcpy(&v, p, sizeof v);
    return v;
}
CE_INLINE vi viload_i32(const int32_t *p) { return (vi){p[0], p[1]}; }
CE_INLINE vd vadd(vd a, vd b) { return a + b; }
CE_INLINE vd vsub(vd a, vd b) { return a - b; }
CE_INLINE vd vmul(vd a, vd b) { return a * b; }
CE_INLINE vd vdiv(vd a, vd b) { return a / b; }
CE_INLINE vd vfma(vd a, vd b, vd c) { return a * b + c; } /* two roundings */
CE_INLINE vd vfnma(vd a, vd b, vd c) { return c - a * b; }
#if defined(__SSE2__)
CE_INLINE vd vsel(vm m, vd a, vd b)
{
    vd f = _mm_castsi128_pd(m);
    return _mm_or_pd(_mm_and_pd(f, a), _mm_andnot_pd(f, b));
}
/* a > b ? a : b and a < b ? a : b: a NaN in a is never taken */
CE_INLINE vd vmax(vd a, vd b) { return _mm_max_pd(a, b); }
CE_INLINE vd vmin(vd a, vd b) { return _mm_min_pd(a, b); }
CE_INLINE vm vlt(vd a, vd b) { return _mm_castpd_si128(_mm_cmplt_pd(a, b)); }
CE_INLINE vm vge(vd a, vd b) { return _mm_castpd_si128(_mm_cmpge_pd(a, b)); }
CE_INLINE vm veq(vd a, vd b) { return _mm_castpd_si128(_mm_cmpeq_pd(a, b)); }
CE_INLINE vm visnan(vd a) { return _mm_castpd_si128(_mm_cmpunord_pd(a, a)); }
CE_INLINE int many(vm m) { return _mm_movemask_pd(_mm_castsi128_pd(m)) != 0; }
CE_INLINE int mall(vm m) { return _mm_movemask_pd(_mm_castsi128_pd(m)) == 3; }
CE_INLINE vm vieq(vi a, vi b)
{
    __m128i e = _mm_cmpeq_epi32(a, b);
    return _mm_and_si128(e, _mm_shuffle_epi32(e, 0xb1)); /* both halves equal */
}
CE_INLINE vi vimul32(vi a, vi b) { return _mm_mul_epu32(a, b); }
#else
CE_INLINE vd vsel(vm m, vd a, vd b) { return (vd)((m & (vi)a) | (~m & (vi)b)); }
CE_INLINE vd vmax(vd a, vd b) { return (vd){a[0] > b[0] ? a[0] : b[0], a[1] > b[1] ? a[1] : b[1]}; }
CE_INLINE vd vmin(vd a, vd b) { return (vd){a[0] < b[0] ? a[0] : b[0], a[1] < b[1] ? a[1] : b[1]}; }
CE_INLINE vm vlt(vd a, vd b) { return (vm)(a < b); }
CE_INLINE vm vge(vd a, vd b) { return (vm)(a >= b); }
CE_INLINE vm veq(vd a, vd b) { return (vm)(a == b); }
CE_INLINE vm visnan(vd a) { return (vm)(a != a); }
CE_INLINE int many(vm m) { return (m[0] | m[1]) != 0; }
CE_INLINE int mall(vm m) { return (m[0] & m[1]) != 0; }
CE_INLINE vm vieq(vi a, vi b) { return (vm)(a == b); }
CE_INLINE vi vimul32(vi a, vi b) { return a * b; }
#endif
/* signed 64-bit a > b, lane by lane (SSE2 has no 64-bit compare) */
CE_INLINE vm vigt(vi a, vi b) { return (vm){-(long long)(a[0] > b[0]), -(long long)(a[1] > b[1])}; }
CE_INLINE vm mand(vm a, vm b) { return a & b; }
CE_INLINE vm mor(vm a, vm b) { return a | b; }
CE_INLINE vm mandnot(vm a, vm b) { return ~a & b; }
CE_INLINE vm mnone(void) { return viset(0); }
CE_INLINE vm mtrue(void) { return viset(-1); }
CE_INLINE vd vkeep(vm m, vd a) { return (vd)(m & (vi)a); }
CE_INLINE vd vzero_if(vm m, vd a) { return (vd)(~m & (vi)a); }
CE_INLINE vi visel(vm m, vi a, vi b) { return (m & a) | (~m & b); }
CE_INLINE vi viadd(vi a, vi b) { return (vi)((ce_vl)a + (ce_vl)b); }
CE_INLINE vi visub(vi a, vi b) { return (vi)((ce_vl)a - (ce_vl)b); }
CE_INLINE vi viand(vi a, vi b) { return a & b; }
CE_INLINE vi vior(vi a, vi b) { return a | b; }
CE_INLINE vi vixor(vi a, vi b) { return a ^ b; }
#define visrl(a, n) ((vi)((ce_vu)(a) >> (n)))
#define visll(a, n) ((vi)((ce_vu)(a) << (n)))
CE_INLINE vi vbits(vd a) { return (vi)a; }
CE_INLINE vd vfrombits(vi a) { return (vd)a; }
CE_INLINE vd vgather(const double *base, vi idx) { return (vd){base[idx[0]], base[idx[1]]}; }
CE_INLINE vd vgather_f32(const float *base, vi idx) { return (vd){base[idx[0]], base[idx[1]]}; }
CE_INLINE vi vigather(const uint64_t *base, vi idx)
{
    return (vi){(long long)base[idx[0]], (long long)base[idx[1]]};
}
CE_INLINE vi vilanes(int64_t step) { return (vi){0, step}; }
#endif
/* clang-format on */

CE_INLINE vd vzero(void)
{
    return vset(0.0);
}

/* A vector of the CE_W values LANE(0), LANE(1), ... */
#if CE_W == 4
#define CE_LANES_VD(LANE) ((vd){LANE(0), LANE(1), LANE(2), LANE(3)})
#else
#define CE_LANES_VD(LANE) ((vd){LANE(0), LANE(1)})
#endif

/* (double)k for |k| < 2^51, exactly */
CE_INLINE vd vi2d(vi k)
{
    return vsub(vfrombits(viadd(k, vbits(vset(0x1.8p52)))), vset(0x1.8p52));
}

/* c * a, except that a zero coefficient gives 0 even when a is infinite or
 * NaN: a class that carries no weight (or no target mass) contributes
 * nothing, whatever its log-probability. */
CE_INLINE vd vmul0(vd c, vd a)
{
    return vzero_if(veq(c, vzero()), vmul(c, a));
}

/* x - m, and 0 where x == m (also when both are +inf or -inf). */
CE_INLINE vd vshift(vd x, vd m)
{
    return vzero_if(veq(x, m), vsub(x, m));
}

/* ------------------------------------------------------------------------ */
/* exp and log                                                               */

/* exp(z) = 2^(k/64) exp(r), k = round(64 z / ln 2), |r| <= ln 2 / 128
 * (Cody-Waite: ln2/64 in a 32-bit head, whose products with k are exact,
 * and a tail); exp(r) - 1 = r + r^2 (1/2 + r/6 + r^2/24 + r^3/120), whose
 * truncation error is below 4e-17; 2^(j/64) from a table of correctly
 * rounded values. Within 1.5 ulp (1.3 measured); exp(0) = 1 exactly.
 *
 * The table holds bits(2^(j/64)) - (j << 46), so that adding k << 46 to it
 * gives the bits of 2^(j/64) 2^floor(k/64) in one integer add (glibc's
 * trick; k = 64 floor(k/64) + j). */
#define CE_EXP_BITS 6
#define CE_EXP_N    64
static const uint64_t ce_exp_tab[64] = {
    0x3ff0000000000000u, 0x3fefec9a3e778061u, 0x3fefd9b0d3158574u, 0x3fefc74518759bc8u,
    0x3fefb5586cf9890fu, 0x3fefa3ec32d3d1a2u, 0x3fef9301d0125b51u, 0x3fef829aaea92de0u,
    0x3fef72b83c7d517bu, 0x3fef635beb6fcb75u, 0x3fef54873168b9aau, 0x3fef463b88628cd6u,
    0x3fef387a6e756238u, 0x3fef2b4565e27cddu, 0x3fef1e9df51fdee1u, 0x3fef1285a6e4030bu,
    0x3fef06fe0a31b715u, 0x3feefc08b26416ffu, 0x3feef1a7373aa9cbu, 0x3feee7db34e59ff7u,
    0x3feedea64c123422u, 0x3feed60a21f72e2au, 0x3feece086061892du, 0x3feec6a2b5c13cd0u,
    0x3feebfdad5362a27u, 0x3feeb9b2769d2ca7u, 0x3feeb42b569d4f82u, 0x3feeaf4736b527dau,
    0x3feeab07dd485429u, 0x3feea76f15ad2148u, 0x3feea47eb03a5585u, 0x3feea23882552225u,
    0x3feea09e667f3bcdu, 0x3fee9fb23c651a2fu, 0x3fee9f75e8ec5f74u, 0x3fee9feb564267c9u,
    0x3feea11473eb0187u, 0x3feea2f336cf4e62u, 0x3feea589994cce13u, 0x3feea8d99b4492edu,
    0x3feeace5422aa0dbu, 0x3feeb1ae99157736u, 0x3feeb737b0cdc5e5u, 0x3feebd829fde4e50u,
    0x3feec49182a3f090u, 0x3feecc667b5de565u, 0x3feed503b23e255du, 0x3feede6b5579fdbfu,
    0x3feee89f995ad3adu, 0x3feef3a2b84f15fbu, 0x3feeff76f2fb5e47u, 0x3fef0c1e904bc1d2u,
    0x3fef199bdd85529cu, 0x3fef27f12e57d14bu, 0x3fef3720dcef9069u, 0x3fef472d4a07897cu,
    0x3fef5818dcfba487u, 0x3fef69e603db3285u, 0x3fef7c97337b9b5fu, 0x3fef902ee78b3ff6u,
    0x3fefa4afa2a490dau, 0x3fefba1bee615a27u, 0x3fefd0765b6e4540u, 0x3fefe7c1819e90d8u,
};

#define CE_EXP_SHIFT    0x1.8p52              /* adding it rounds to an integer */
#define CE_EXP_SHIFTB   0x4338000000000000LL  /* its bits: bits(SHIFT + k) = SHIFTB + k */
#define CE_INVLN2N      0x1.71547652b82fep+6  /* 64 / ln 2 */
#define CE_LN2N_HI      0x1.62e42feep-7       /* ln 2 / 64, 32 bits */
#define CE_LN2N_LO      0x1.a39ef35793c76p-39 /* ln 2 / 64 - CE_LN2N_HI */
#define CE_EXP_FAST_MIN (-700.0)              /* the fast exp is used down to here */

/* r and the polynomial: exp(z) = 2^(k/N) (1 + p); kd receives SHIFT + k. */
CE_INLINE vd ce_exp_reduce(vd z, vd *kd)
{
    vd k = vfma(z, vset(CE_INVLN2N), vset(CE_EXP_SHIFT));
    *kd = k;
    k = vsub(k, vset(CE_EXP_SHIFT));
    vd r = vfnma(k, vset(CE_LN2N_HI), z); /* exact */
    r = vfnma(k, vset(CE_LN2N_LO), r);
    vd q = vfma(r, vset(1.0 / 120.0), vset(1.0 / 24.0));
    q = vfma(q, r, vset(1.0 / 6.0));
    q = vfma(q, r, vset(0.5));
    return vfma(q, vmul(r, r), r);
}

/* exp(z) for CE_EXP_FAST_MIN <= z <= 0, or NaN (which gives NaN). */
CE_INLINE vd ce_exp_fast(vd z)
{
    vd kd;
    vd p = ce_exp_reduce(z, &kd);
    vi k = visub(vbits(kd), viset(CE_EXP_SHIFTB));
    vi j = viand(k, viset(CE_EXP_N - 1));
    vd t = vfrombits(viadd(vigather(ce_exp_tab, j), visll(k, 52 - CE_EXP_BITS)));
    return vfma(t, p, t);
}

/* exp(z) for any z <= 0 (-inf gives 0) or NaN: results below 2^-1022 are
 * scaled in two exact steps, so they are rounded once, as subnormals. Equal
 * to ce_exp_fast wherever that applies. */
CE_INLINE vd ce_exp_full(vd z)
{
    z = vmax(vset(-746.0), z); /* keeps NaN; exp(-746) rounds to 0 */
    vd kd;
    vd p = ce_exp_reduce(z, &kd);
    /* u = k + 2048 N >= 0; the table entry plus j << (52 - bits) is 2^(j/N) */
    vi u = visub(vbits(kd), viset(CE_EXP_SHIFTB - ((int64_t)2048 << CE_EXP_BITS)));
    vi j = viand(u, viset(CE_EXP_N - 1));
    vd t = vfrombits(viadd(vigather(ce_exp_tab, j), visll(j, 52 - CE_EXP_BITS)));
    vi v = visub(viset(2048), visrl(u, CE_EXP_BITS)); /* -floor(k/N), in [0, 1077] */
    vi n1 = visrl(v, 1), n2 = visub(v, n1);
    vd s1 = vfrombits(visll(visub(viset(1023), n1), 52));
    vd s2 = vfrombits(visll(visub(viset(1023), n2), 52));
    return vmul(vmul(vfma(t, p, t), s1), s2);
}

/* log(x) for x >= 1 (any positive normal x, in fact) or NaN: fdlibm's
 * __ieee754_log with both of its final branches computed and selected per
 * lane, within 1 ulp; log(1) = 0 exactly. Plain multiplies and adds, no
 * fused operations: the same result on every path. */
CE_INLINE vd ce_log(vd x)
{
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    vi b = vbits(x);
    vi hx = visrl(b, 32);
    vi k = visub(visrl(hx, 20), viset(1023));
    hx = viand(hx, viset(0x000fffff));
    vi i = viand(viadd(hx, viset(0x95f64)), viset(0x100000));
    vi hi = vior(hx, vixor(i, viset(0x3ff00000))); /* x or x/2, in [sqrt(2)/2, sqrt(2)) */
    vd xn = vfrombits(vior(visll(hi, 32), viand(b, viset(0xffffffffLL))));
    k = viadd(k, visrl(i, 20));
    vd f = vsub(xn, vset(1.0));
    vd s = vdiv(f, vadd(vset(2.0), f));
    vd dk = vi2d(k);
    vd z = vmul(s, s), w = vmul(z, z);
    vd t1 = vmul(w, vadd(vset(Lg2), vmul(w, vadd(vset(Lg4), vmul(w, vset(Lg6))))));
    vd t2 = vmul(
        z, vadd(vset(Lg1), vmul(w, vadd(vset(Lg3), vmul(w, vadd(vset(Lg5), vmul(w, vset(Lg7))))))));
    vi sel = vior(visub(hx, viset(0x6147a)), visub(viset(0x6b851), hx));
    vd R = vadd(t2, t1);
    vd hfsq = vmul(vmul(vset(0.5), f), f);
    vd dkhi = vmul(dk, vset(ln2_hi)), dklo = vmul(dk, vset(ln2_lo));
    vd ra = vsub(dkhi, vsub(vsub(hfsq, vadd(vmul(s, vadd(hfsq, R)), dklo)), f));
    vd rb = vsub(dkhi, vsub(vsub(vmul(s, vsub(f, R)), dklo), f));
    vd res = vsel(vigt(sel, viset(0)), ra, rb);
    return vsel(visnan(x), x, res);
}

/* ------------------------------------------------------------------------ */
/* Chunks                                                                    */

/* A chunk is up to CE_P positions [j0, j0 + n) of a segment, processed as
 * vectors of CE_W positions with the class loop outside: each pass reads,
 * for one class after the other, the chunk's run of logits, and keeps
 * per-position state in small arrays. Long runs per class stream (256 bytes
 * of float32 and more) let the memory system keep up with C streams S
 * apart: runs of 16 or 32 bytes, one vector per class, read at half the
 * speed.
 *
 * CONT chunks have ps = 1 and n a multiple of CE_W: plain vector loads.
 * Other chunks read lanes: positions ps apart, gathered; the lanes of the
 * last vector past n read 0 and are never stored. */
#define CE_P    64 /* positions per chunk at most */
#define CE_PV   (CE_P / CE_W)
#define CE_EVEC 1024 /* vectors of exp values a backward chunk keeps (32 or 16 KiB) */

typedef struct ce_ctx {
    const ce_cfg *cf;
    const ce_seg *sg;
    int64_t j0; /* first position of the chunk, in the segment */
    int64_t n;  /* positions */
    int nvec;   /* vectors, (n + CE_W - 1) / CE_W */
    vi lanes;   /* {0, ps, 2 ps, ...} */
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

CE_INLINE vd ld_val(const ce_ctx *k, const void *base, int64_t c, int v, const int F32,
                    const int CONT)
{
    int64_t off = off_of(k, c, v);
    if (CONT)
        return F32 ? vload_f32((const float *)base + off) : vload((const double *)base + off);
    int nv = live_lanes(k, v);
    if (nv == CE_W) {
        vi idx = viadd(viset(off), k->lanes);
        return F32 ? vgather_f32((const float *)base, idx) : vgather((const double *)base, idx);
    }
    /* a partial vector, built lane by lane in registers (a vector load of
     * values just stored one by one would wait for the stores) */
    int64_t ps = k->sg->ps;
#define CE_LANE(l)                                                                                 \
    ((l) < nv ? (F32 ? (double)((const float *)base)[off + (l)*ps]                                 \
                     : ((const double *)base)[off + (l)*ps])                                       \
              : 0.0)
    return CE_LANES_VD(CE_LANE);
#undef CE_LANE
}

CE_INLINE vd ld_x(const ce_ctx *k, int64_t c, int v, const int F32, const int CONT)
{
    return ld_val(k, k->sg->x, c, v, F32, CONT);
}

/* Stores (or adds, with acc) g at (c, v) of the gradient. */
CE_INLINE void st_grad(const ce_ctx *k, int64_t c, int v, vd g, int acc, const int F32,
                       const int CONT)
{
    int64_t off = off_of(k, c, v);
    if (CONT) {
        if (F32) {
            float *p = (float *)k->sg->g + off;
            vstore_f32(p, acc ? vadd(vload_f32(p), g) : g);
        } else {
            double *p = (double *)k->sg->g + off;
            vstore(p, acc ? vadd(vload(p), g) : g);
        }
        return;
    }
    double a[CE_W];
    vstore(a, g);
    int64_t ps = k->sg->ps;
    for (int l = 0; l < live_lanes(k, v); l++) {
        if (F32) {
            float *p = (float *)k->sg->g + off + l * ps;
            *p = acc ? (float)((double)*p + a[l]) : (float)a[l];
        } else {
            double *p = (double *)k->sg->g + off + l * ps;
            *p = acc ? *p + a[l] : a[l];
        }
    }
}

/* Index targets of vector v (consecutive); lanes past the end read fill. */
CE_INLINE vi ld_index(const ce_ctx *k, int v, int64_t fill, const int I32)
{
    int64_t j = k->j0 + (int64_t)v * CE_W;
    int nv = live_lanes(k, v);
    const void *t = k->sg->t;
    if (nv == CE_W)
        return I32 ? viload_i32((const int32_t *)t + j) : viload_i64((const int64_t *)t + j);
    int64_t a[CE_W];
    for (int l = 0; l < CE_W; l++)
        a[l] = fill;
    for (int l = 0; l < nv; l++)
        a[l] = I32 ? ((const int32_t *)t)[j + l] : ((const int64_t *)t)[j + l];
    return viload_i64(a);
}

/* Per-position losses of vector v (reduction none), consecutive. */
CE_INLINE void st_out(const ce_ctx *k, int v, vd val, const int F32)
{
    int64_t j = k->j0 + (int64_t)v * CE_W;
    int nv = live_lanes(k, v);
    void *out = k->sg->out;
    if (nv == CE_W) {
        if (F32)
            vstore_f32((float *)out + j, val);
        else
            vstore((double *)out + j, val);
        return;
    }
    double a[CE_W];
    vstore(a, val);
    for (int l = 0; l < nv; l++) {
        if (F32)
            ((float *)out)[j + l] = (float)a[l];
        else
            ((double *)out)[j + l] = a[l];
    }
}

/* The target's logit x_y of vector v, at class yc (a class for every lane). */
CE_INLINE vd ld_target_logit(const ce_ctx *k, int v, vi yc, const int F32, const int CONT)
{
    const ce_seg *sg = k->sg;
    int64_t off = off_of(k, 0, v);
    if (CONT) {
        /* C * S < 2^31 (cf->contiguous): 32-bit products suffice */
        vi idx = viadd(vimul32(yc, viset(sg->cs)), viadd(viset(off), k->lanes));
        return F32 ? vgather_f32((const float *)sg->x, idx) : vgather((const double *)sg->x, idx);
    }
    int64_t y[CE_W];
    memcpy(y, &yc, sizeof y);
    int nv = live_lanes(k, v);
#define CE_LANE(l)                                                                                 \
    ((l) < nv ? (F32 ? (double)((const float *)sg->x)[off + y[l] * sg->cs + (l)*sg->ps]            \
                     : ((const double *)sg->x)[off + y[l] * sg->cs + (l)*sg->ps])                  \
              : 0.0)
    return CE_LANES_VD(CE_LANE);
#undef CE_LANE
}

/* q_c = w_c ((1 - eps) t_c + eps / C) of a probability target */
CE_INLINE vd ld_q(const ce_ctx *k, int64_t c, int v, const int TF32, const int CONT)
{
    const ce_cfg *cf = k->cf;
    vd t = ld_val(k, k->sg->t, c, v, TF32, CONT);
    vd q = vadd(vmul(vset(cf->keep), t), vset(cf->share));
    return cf->w ? vmul(vset(cf->w[c]), q) : q;
}

CE_INLINE vd class_weight(const ce_cfg *cf, int64_t c)
{
    return vset(cf->w ? cf->w[c] : 1.0);
}

/* ------------------------------------------------------------------------ */
/* Passes over the classes                                                   */

#ifndef CE_PF_CHUNKS
#define CE_PF_CHUNKS 2
#endif
/* Asks for the logits (and probability targets) CE_PF_CHUNKS chunks ahead,
 * every 64-byte line of every class: C streams S apart are more than the
 * hardware prefetchers follow on their own. */
CE_INLINE void prefetch_ahead(const ce_ctx *k, const void *base, const int F32)
{
    const int64_t es = F32 ? 4 : 8, bytes = k->n * es;
    /* addresses past the tensor are fine for a prefetch, not for C pointers */
    uintptr_t p = (uintptr_t)base + (uintptr_t)((off_of(k, 0, 0) + CE_PF_CHUNKS * k->n) * es);
    for (int64_t c = 0; c < k->cf->classes; c++)
        for (int64_t b = 0; b < bytes; b += 64)
            __builtin_prefetch((const void *)(p + (uintptr_t)(c * k->sg->cs * es + b)), 0, 3);
}

/* m[v] = max_c x_c (NaN ignored; -inf when every logit is NaN or -inf).
 * Returns 1 when every maximum is finite. */
CE_INLINE int pass_max(const ce_ctx *k, vd *m, const int F32, const int CONT)
{
    if (CONT && CE_PF_CHUNKS)
        prefetch_ahead(k, k->sg->x, F32);
    for (int v = 0; v < k->nvec; v++)
        m[v] = vset(-HUGE_VAL);
    for (int64_t c = 0; c < k->cf->classes; c++)
        for (int v = 0; v < k->nvec; v++)
            m[v] = vmax(ld_x(k, c, v, F32, CONT), m[v]);
    vm fin = mtrue();
    for (int v = 0; v < k->nvec; v++)
        fin = mand(fin, veq(vsub(m[v], m[v]), vzero()));
    return mall(fin);
}

/* s[v] = sum_c exp(z_c), z_c = x_c - m (0 where x_c == m); with keep, each
 * exp also into e[c * nvec + v]. The fast exp is tried when every maximum is
 * finite, and the pass is redone with the full exp when some z_c turns out
 * below CE_EXP_FAST_MIN. Returns whether the fast exp stood. */
CE_INLINE int pass_sum(const ce_ctx *k, const vd *m, vd *s, vd *e, int keep, int finite,
                       const int F32, const int CONT)
{
    const int64_t C = k->cf->classes;
    const int nvec = k->nvec;
    if (finite) {
        vd zmin = vzero();
        for (int v = 0; v < nvec; v++)
            s[v] = vzero();
        for (int64_t c = 0; c < C; c++)
            for (int v = 0; v < nvec; v++) {
                vd z = vsub(ld_x(k, c, v, F32, CONT), m[v]);
                zmin = vmin(z, zmin);
                vd ex = ce_exp_fast(z);
                if (keep)
                    e[c * nvec + v] = ex;
                s[v] = vadd(s[v], ex);
            }
        if (!many(vlt(zmin, vset(CE_EXP_FAST_MIN))))
            return 1;
    }
    for (int v = 0; v < nvec; v++)
        s[v] = vzero();
    for (int64_t c = 0; c < C; c++)
        for (int v = 0; v < nvec; v++) {
            vd ex = ce_exp_full(vshift(ld_x(k, c, v, F32, CONT), m[v]));
            if (keep)
                e[c * nvec + v] = ex;
            s[v] = vadd(s[v], ex);
        }
    return 0;
}

/* exp(z_c) of (c, v) again, the way pass_sum computed it */
CE_INLINE vd exp_again(const ce_ctx *k, const vd *m, int64_t c, int v, int fast, const int F32,
                       const int CONT)
{
    vd x = ld_x(k, c, v, F32, CONT);
    return fast ? ce_exp_fast(vsub(x, m[v])) : ce_exp_full(vshift(x, m[v]));
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */

typedef struct ce_facc {
    vd loss, wy;
    vm bad;
} ce_facc;

/* Index targets: loss = (1 - eps) w_y (lse - z_y) + (eps / C) sum_c w_c (lse - z_c),
 * 0 when ignored; w_y (0 when ignored) for the mean's divisor. */
CE_INLINE void fwd_index_chunk(const ce_ctx *k, ce_facc *acc, const int F32, const int I32,
                               const int CONT)
{
    const ce_cfg *cf = k->cf;
    const int64_t C = cf->classes;
    vd m[CE_PV], lse[CE_PV], a[CE_PV];
    int finite = pass_max(k, m, F32, CONT);
    pass_sum(k, m, lse, NULL, 0, finite, F32, CONT);
    for (int v = 0; v < k->nvec; v++)
        lse[v] = ce_log(lse[v]);
    int smooth = cf->eps > 0.0;
    for (int v = 0; v < k->nvec; v++)
        a[v] = vzero();
    if (smooth) {
        for (int64_t c = 0; c < C; c++)
            for (int v = 0; v < k->nvec; v++)
                a[v] = vadd(a[v], vmul0(class_weight(cf, c),
                                        vsub(lse[v], vshift(ld_x(k, c, v, F32, CONT), m[v]))));
    }
    for (int v = 0; v < k->nvec; v++) {
        vi y = ld_index(k, v, cf->ignore_index, I32);
        vm ign = vieq(y, viset(cf->ignore_index));
        vm inr = mand(vigt(y, viset(-1)), vigt(viset(C), y));
        vm valid = mandnot(ign, inr);
        acc->bad = mor(acc->bad, mandnot(mor(ign, inr), mtrue()));
        vi yc = visel(valid, y, viset(0));
        vd zy = vshift(ld_target_logit(k, v, yc, F32, CONT), m[v]);
        vd wy = cf->w ? vgather(cf->w, yc) : vset(1.0);
        vd loss = vmul0(wy, vsub(lse[v], zy));
        if (smooth)
            loss = vadd(vmul0(vset(cf->keep), loss), vmul(vset(cf->share), a[v]));
        loss = vkeep(valid, loss);
        acc->loss = vadd(acc->loss, loss);
        acc->wy = vadd(acc->wy, vkeep(valid, wy));
        if (k->sg->out)
            st_out(k, v, loss, F32);
    }
}

/* Probability targets: loss = sum_c q_c (lse - z_c). */
CE_INLINE void fwd_prob_chunk(const ce_ctx *k, ce_facc *acc, const int F32, const int TF32,
                              const int CONT)
{
    const int64_t C = k->cf->classes;
    vd m[CE_PV], lse[CE_PV], loss[CE_PV];
    int finite = pass_max(k, m, F32, CONT);
    pass_sum(k, m, lse, NULL, 0, finite, F32, CONT);
    for (int v = 0; v < k->nvec; v++) {
        lse[v] = ce_log(lse[v]);
        loss[v] = vzero();
    }
    for (int64_t c = 0; c < C; c++)
        for (int v = 0; v < k->nvec; v++) {
            vd z = vshift(ld_x(k, c, v, F32, CONT), m[v]);
            loss[v] = vadd(loss[v], vmul0(ld_q(k, c, v, TF32, CONT), vsub(lse[v], z)));
        }
    for (int v = 0; v < k->nvec; v++) {
        int nv = live_lanes(k, v);
        vd l = nv == CE_W ? loss[v] : vkeep(vigt(viset(nv), vilanes(1)), loss[v]);
        acc->loss = vadd(acc->loss, l);
        if (k->sg->out)
            st_out(k, v, l, F32);
    }
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                  */

/* Index targets: g_c = scale (Q e_c / s - q_c), Q = (1 - eps) w_y + (eps / C) W,
 * q_c = (1 - eps) w_y [c = y] + (eps / C) w_c; exactly 0 at ignored positions
 * (even for NaN logits) and at any index that is not a class. */
CE_INLINE void bwd_index_chunk(const ce_ctx *k, vd *e, const int F32, const int I32, const int CONT)
{
    const ce_cfg *cf = k->cf;
    const int64_t C = cf->classes;
    const int nvec = k->nvec;
    vd m[CE_PV], a[CE_PV], ty[CE_PV];
    vi ycs[CE_PV];
    vm valids[CE_PV];
    int keep = C * nvec <= cf->evec;
    int finite = pass_max(k, m, F32, CONT);
    int fast = pass_sum(k, m, a, e, keep, finite, F32, CONT);
    for (int v = 0; v < nvec; v++) {
        vi y = ld_index(k, v, cf->ignore_index, I32);
        vm valid =
            mandnot(vieq(y, viset(cf->ignore_index)), mand(vigt(y, viset(-1)), vigt(viset(C), y)));
        vi yc = visel(valid, y, viset(0));
        vd wy = cf->w ? vgather(cf->w, yc) : vset(1.0);
        a[v] =
            vdiv(vmul(vset(cf->scale), vadd(vmul(vset(cf->keep), wy), vset(cf->share * cf->wsum))),
                 a[v]);
        ty[v] = vmul(vset(cf->scale * cf->keep), wy);
        ycs[v] = yc;
        valids[v] = valid;
    }
    int smooth = cf->eps > 0.0;
    vd b = vset(cf->scale * cf->share);
    for (int64_t c = 0; c < C; c++) {
        vi cv = viset(c);
        vd bw = vmul(b, class_weight(cf, c));
        for (int v = 0; v < nvec; v++) {
            vd ex = keep ? e[c * nvec + v] : exp_again(k, m, c, v, fast, F32, CONT);
            vd g = vmul(a[v], ex);
            if (smooth)
                g = vsub(g, bw);
            g = vsub(g, vkeep(vieq(ycs[v], cv), ty[v]));
            st_grad(k, c, v, vkeep(valids[v], g), cf->accumulate, F32, CONT);
        }
    }
}

/* Probability targets: g_c = scale (Q e_c / s - q_c), Q = sum_c q_c. */
CE_INLINE void bwd_prob_chunk(const ce_ctx *k, vd *e, const int F32, const int TF32, const int CONT)
{
    const ce_cfg *cf = k->cf;
    const int64_t C = cf->classes;
    const int nvec = k->nvec;
    vd m[CE_PV], a[CE_PV], Q[CE_PV];
    int keep = C * nvec <= cf->evec;
    int finite = pass_max(k, m, F32, CONT);
    int fast = pass_sum(k, m, a, e, keep, finite, F32, CONT);
    for (int v = 0; v < nvec; v++)
        Q[v] = vzero();
    for (int64_t c = 0; c < C; c++)
        for (int v = 0; v < nvec; v++)
            Q[v] = vadd(Q[v], ld_q(k, c, v, TF32, CONT));
    vd sc = vset(cf->scale);
    for (int v = 0; v < nvec; v++)
        a[v] = vdiv(vmul(sc, Q[v]), a[v]);
    for (int64_t c = 0; c < C; c++) {
        for (int v = 0; v < nvec; v++) {
            vd ex = keep ? e[c * nvec + v] : exp_again(k, m, c, v, fast, F32, CONT);
            vd g = vsub(vmul(a[v], ex), vmul(sc, ld_q(k, c, v, TF32, CONT)));
            st_grad(k, c, v, g, cf->accumulate, F32, CONT);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Segments (ce_segments.h)                                                  */

typedef vd ce_ev;

CE_INLINE ce_ctx ctx_at(const ce_cfg *cf, const ce_seg *sg, int64_t j0, int64_t n)
{
    ce_ctx k;
    k.cf = cf;
    k.sg = sg;
    k.j0 = j0;
    k.n = n;
    k.nvec = (int)((n + CE_W - 1) / CE_W);
    int64_t ps = sg->ps;
    k.lanes = vilanes(ps);
    return k;
}

/* The lanes' sums: the loss in acc[0..CE_W), w_y from acc[CE_ACC / 2]. */
CE_INLINE ce_facc facc_open(const double acc[CE_ACC])
{
    ce_facc a = {vload(acc), vload(acc + CE_ACC / 2), mnone()};
    return a;
}

/* Stores the sums back; returns whether a bad index target was seen. */
CE_INLINE int facc_close(const ce_facc *a, double acc[CE_ACC])
{
    vstore(acc, a->loss);
    vstore(acc + CE_ACC / 2, a->wy);
    return many(a->bad);
}

#include "ce_segments.h"

/* One specialisation per (input dtype, target dtype): x float32?, target
 * 32-bit (int32 or float32)? */
#define CE_VARIANTS(X)                                                                             \
    X(f32_i64, 1, 0, 0)                                                                            \
    X(f32_i32, 1, 1, 0)                                                                            \
    X(f64_i64, 0, 0, 0)                                                                            \
    X(f64_i32, 0, 1, 0)                                                                            \
    X(f32_pf32, 1, 1, 1)                                                                           \
    X(f32_pf64, 1, 0, 1)                                                                           \
    X(f64_pf32, 0, 1, 1)                                                                           \
    X(f64_pf64, 0, 0, 1)

#define CE_DEFINE(NAME, F32, T32, PROB)                                                            \
    static int fwd_##NAME(const ce_cfg *cf, const ce_seg *sg, double acc[CE_ACC])                  \
    {                                                                                              \
        return fwd_seg(cf, sg, acc, F32, T32, PROB);                                               \
    }                                                                                              \
    static void bwd_##NAME(const ce_cfg *cf, const ce_seg *sg)                                     \
    {                                                                                              \
        bwd_seg(cf, sg, F32, T32, PROB);                                                           \
    }
CE_VARIANTS(CE_DEFINE)

static int variant(const ce_cfg *cf)
{
    int f32 = cf->x_dtype == LK_DTYPE_F32;
    int t32 = cf->t_dtype == LK_DTYPE_I32 || cf->t_dtype == LK_DTYPE_F32;
    return (cf->prob ? 4 : 0) + (f32 ? 0 : 2) + (cf->prob ? !t32 : t32);
}

static int ce_forward_any(const ce_cfg *cf, const ce_seg *sg, double acc[CE_ACC])
{
    static int (*const fwd[8])(const ce_cfg *, const ce_seg *, double *) = {
        fwd_f32_i64,  fwd_f32_i32,  fwd_f64_i64,  fwd_f64_i32,
        fwd_f32_pf32, fwd_f32_pf64, fwd_f64_pf32, fwd_f64_pf64,
    };
    return fwd[variant(cf)](cf, sg, acc);
}

static void ce_backward_any(const ce_cfg *cf, const ce_seg *sg)
{
    static void (*const bwd[8])(const ce_cfg *, const ce_seg *) = {
        bwd_f32_i64,  bwd_f32_i32,  bwd_f64_i64,  bwd_f64_i32,
        bwd_f32_pf32, bwd_f32_pf64, bwd_f64_pf32, bwd_f64_pf64,
    };
    bwd[variant(cf)](cf, sg);
}

#endif /* LOSSKIT_TORCH_CE_BODY_H */
