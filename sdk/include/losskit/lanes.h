/* losskit/lanes.h: lane types for writing a loss once and compiling it for
 * every instruction set and precision.
 *
 * Nothing here is ABI: the header is compiled into each plugin. A source
 * that includes it is built once per variant (losskit/loss.h and
 * sdk/README.md, "The kernel layer", say how):
 *
 *   instruction set  picked from the compiler's own macros: AVX-512
 *                    (-mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2
 *                    -mfma), AVX2 (-mavx2 -mfma), or portable (anything
 *                    else; one lane, plain C and libm: the reference every
 *                    other variant is tested against);
 *   precision        LK_LANES_F32 defined: lk_v holds floats; otherwise
 *                    doubles.
 *
 * A loss's formula is written on lk_v with the lk_* operations below. Every
 * sum leaves the lanes in double (lk_acc), whatever the precision, in an
 * order fixed by the lane width alone (the elementwise drivers may add
 * four float vectors of a nonnegative loss first: LK_EW_NONNEG_SUM).
 *
 * Vector math: lk_exp, lk_log, lk_log1p are the layer's own, inline, in
 * the float lanes of the SIMD variants (the exp below on a clamped
 * argument; log on AVX-512 by getexp/getmant and a table of 16 intervals
 * of the mantissa, on AVX2 the exponent and mantissa split off by the bits,
 * then 2 atanh(f / (2 + f)); about 1 to 3 float ulps, 0, infinities,
 * negatives and NaN as libm), and glibc's
 * libmvec in their double lanes and for lk_pow (at most 4 ulp); libm on the
 * portable variant. The
 * restricted-range forms are the layer's own, inline, because the losses
 * call them on every element and a known range makes them several times
 * cheaper than a general routine (and a library call spills every vector
 * register): lk_exp_neg (arguments <= 0, as exp(-|x|) of a logit or x - max
 * of a softmax), lk_log1p_unit (arguments in [0, 1]) and lk_log_1to2
 * (arguments in [1, 2]). Float lanes: about 1 to 2 float ulps (exp: on
 * AVX-512 a table of 2^(j/16) in one register and a cubic, on AVX2
 * Cody-Waite with the Cephes expf coefficients; log1p: e + e^2 Q(e), Q
 * fitted, no division; log: the Cephes logf polynomial). Double lanes:
 * exp by a table of 2^(j/16) and a Taylor series to r^7 (AVX-512) or
 * Cody-Waite and a Taylor series to r^13 (AVX2), log by fdlibm's reduction
 * and polynomial; about 1 ulp. Portable: libm.
 *
 * The careful helpers (lk_sigm and friends) are the forms every logistic
 * loss needs without overflow, cancellation or 0 * inf: one exp, one
 * reciprocal and, where the loss needs a softplus, one log per element. */
#ifndef LOSSKIT_LANES_H
#define LOSSKIT_LANES_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) &&                     \
    defined(__AVX512VL__) && defined(__FMA__)
#define LK_TARGET_AVX512 1
#define LK_TARGET_NAME   "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#define LK_TARGET_AVX2 1
#define LK_TARGET_NAME "avx2"
#else
#define LK_TARGET_PORTABLE 1
#define LK_TARGET_NAME     "portable"
#endif

#if defined(LK_TARGET_AVX512) || defined(LK_TARGET_AVX2)
#include <immintrin.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LK_AI static inline __attribute__((always_inline))
#else
#define LK_AI static inline
#endif

/* ======================================================================== */
/* Float lanes (lk_fv) and double lanes (lk_dv) of the target                */
/*                                                                           */
/* Each set has: set (broadcast), zero, load, loadn (first k lanes, the     */
/* others pad; masked lanes never touch memory), store, storen, add, sub,   */
/* mul, div, fma (a b + c, rounded once on SIMD targets), min, max (the     */
/* second operand when either is NaN), abs, neg, sqrt, comparisons giving   */
/* masks (ordered: false for NaN), select (m ? a : b), keep (m ? a : 0),    */
/* clear (m ? 0 : a), mask and/or/not/any, first (the first k lanes).       */
/* ======================================================================== */

/* clang-format off */
#if defined(LK_TARGET_AVX512)

#define LK_FW 16
#define LK_DW 8
typedef __m512 lk_fv;
typedef __m512d lk_dv;
typedef __mmask16 lk_fm;
typedef __mmask8 lk_dm;

LK_AI lk_fv lk_f_set(double a) { return _mm512_set1_ps((float)a); }
LK_AI lk_fv lk_f_zero(void) { return _mm512_setzero_ps(); }
LK_AI lk_fm lk_f_first(int k) { return k >= 16 ? (lk_fm)0xFFFF : (lk_fm)((1u << k) - 1u); }
LK_AI lk_fv lk_f_load(const float *p) { return _mm512_loadu_ps(p); }
LK_AI lk_fv lk_f_loadn(const float *p, int k, float pad)
{ return k >= 16 ? _mm512_loadu_ps(p) : _mm512_mask_loadu_ps(_mm512_set1_ps(pad), lk_f_first(k), p); }
LK_AI void lk_f_store(float *p, lk_fv v) { _mm512_storeu_ps(p, v); }
LK_AI void lk_f_storen(float *p, int k, lk_fv v)
{ if (k >= 16) _mm512_storeu_ps(p, v); else _mm512_mask_storeu_ps(p, lk_f_first(k), v); }
LK_AI lk_fv lk_f_add(lk_fv a, lk_fv b) { return _mm512_add_ps(a, b); }
LK_AI lk_fv lk_f_sub(lk_fv a, lk_fv b) { return _mm512_sub_ps(a, b); }
LK_AI lk_fv lk_f_mul(lk_fv a, lk_fv b) { return _mm512_mul_ps(a, b); }
LK_AI lk_fv lk_f_div(lk_fv a, lk_fv b) { return _mm512_div_ps(a, b); }
LK_AI lk_fv lk_f_fma(lk_fv a, lk_fv b, lk_fv c) { return _mm512_fmadd_ps(a, b, c); }
LK_AI lk_fv lk_f_fnma(lk_fv a, lk_fv b, lk_fv c) { return _mm512_fnmadd_ps(a, b, c); }
LK_AI lk_fv lk_f_fms(lk_fv a, lk_fv b, lk_fv c) { return _mm512_fmsub_ps(a, b, c); }
LK_AI lk_fv lk_f_min(lk_fv a, lk_fv b) { return _mm512_min_ps(a, b); }
LK_AI lk_fv lk_f_max(lk_fv a, lk_fv b) { return _mm512_max_ps(a, b); }
LK_AI lk_fv lk_f_abs(lk_fv a) { return _mm512_abs_ps(a); }
LK_AI lk_fv lk_f_neg(lk_fv a) { return _mm512_xor_ps(a, _mm512_set1_ps(-0.0f)); }
LK_AI lk_fv lk_f_copysign(lk_fv a, lk_fv s)
{ return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_set1_epi32(INT32_MIN), _mm512_castps_si512(a), _mm512_castps_si512(s), 0xac)); }
LK_AI lk_fv lk_f_select_neg(lk_fv s, lk_fv a, lk_fv b)
{ return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_srai_epi32(_mm512_castps_si512(s), 31), _mm512_castps_si512(a), _mm512_castps_si512(b), 0xca)); }
LK_AI lk_fv lk_f_sqrt(lk_fv a) { return _mm512_sqrt_ps(a); }
LK_AI lk_fm lk_f_lt(lk_fv a, lk_fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
LK_AI lk_fm lk_f_le(lk_fv a, lk_fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
LK_AI lk_fm lk_f_gt(lk_fv a, lk_fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
LK_AI lk_fm lk_f_ge(lk_fv a, lk_fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
LK_AI lk_fm lk_f_eq(lk_fv a, lk_fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
LK_AI lk_fm lk_f_isnan(lk_fv a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
LK_AI lk_fv lk_f_select(lk_fm m, lk_fv a, lk_fv b) { return _mm512_mask_blend_ps(m, b, a); }
LK_AI lk_fv lk_f_mul_where(lk_fm m, lk_fv a, lk_fv b, lk_fv src) { return _mm512_mask_mul_ps(src, m, a, b); }
LK_AI lk_fv lk_f_max_where(lk_fm m, lk_fv a, lk_fv b, lk_fv src) { return _mm512_mask_max_ps(src, m, a, b); }
LK_AI lk_fv lk_f_keep(lk_fm m, lk_fv a) { return _mm512_maskz_mov_ps(m, a); }
LK_AI lk_fv lk_f_clear(lk_fm m, lk_fv a) { return _mm512_maskz_mov_ps((lk_fm)~m, a); }
/* the mask operations on the mask registers (kortest ends in a flag), so
 * that a test of a vector's lanes is not a trip through the integer ones */
LK_AI lk_fm lk_f_and(lk_fm a, lk_fm b) { return _kand_mask16(a, b); }
LK_AI lk_fm lk_f_or(lk_fm a, lk_fm b) { return _kor_mask16(a, b); }
LK_AI lk_fm lk_f_not(lk_fm a) { return _knot_mask16(a); }
LK_AI int lk_f_any(lk_fm m) { return !_kortestz_mask16_u8(m, m); }
LK_AI int lk_f_all(lk_fm m) { return _kortestc_mask16_u8(m, m); }
LK_AI lk_fv lk_f_round(lk_fv a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

LK_AI lk_dv lk_d_set(double a) { return _mm512_set1_pd(a); }
LK_AI lk_dv lk_d_zero(void) { return _mm512_setzero_pd(); }
LK_AI lk_dm lk_d_first(int k) { return k >= 8 ? (lk_dm)0xFF : (lk_dm)((1u << k) - 1u); }
LK_AI lk_dv lk_d_load(const double *p) { return _mm512_loadu_pd(p); }
LK_AI lk_dv lk_d_loadn(const double *p, int k, double pad)
{ return k >= 8 ? _mm512_loadu_pd(p) : _mm512_mask_loadu_pd(_mm512_set1_pd(pad), lk_d_first(k), p); }
LK_AI void lk_d_store(double *p, lk_dv v) { _mm512_storeu_pd(p, v); }
LK_AI void lk_d_storen(double *p, int k, lk_dv v)
{ if (k >= 8) _mm512_storeu_pd(p, v); else _mm512_mask_storeu_pd(p, lk_d_first(k), v); }
/* float memory into double lanes and back (mixed dtypes) */
LK_AI lk_dv lk_d_loadn_f32(const float *p, int k, double pad)
{ return _mm512_cvtps_pd(k >= 8 ? _mm256_loadu_ps(p) : _mm256_mask_loadu_ps(_mm256_set1_ps((float)pad), lk_d_first(k), p)); }
LK_AI void lk_d_storen_f32(float *p, int k, lk_dv v)
{ __m256 f = _mm512_cvtpd_ps(v); if (k >= 8) _mm256_storeu_ps(p, f); else _mm256_mask_storeu_ps(p, lk_d_first(k), f); }
LK_AI lk_dv lk_d_add(lk_dv a, lk_dv b) { return _mm512_add_pd(a, b); }
LK_AI lk_dv lk_d_sub(lk_dv a, lk_dv b) { return _mm512_sub_pd(a, b); }
LK_AI lk_dv lk_d_mul(lk_dv a, lk_dv b) { return _mm512_mul_pd(a, b); }
LK_AI lk_dv lk_d_div(lk_dv a, lk_dv b) { return _mm512_div_pd(a, b); }
LK_AI lk_dv lk_d_fma(lk_dv a, lk_dv b, lk_dv c) { return _mm512_fmadd_pd(a, b, c); }
LK_AI lk_dv lk_d_fnma(lk_dv a, lk_dv b, lk_dv c) { return _mm512_fnmadd_pd(a, b, c); }
LK_AI lk_dv lk_d_fms(lk_dv a, lk_dv b, lk_dv c) { return _mm512_fmsub_pd(a, b, c); }
LK_AI lk_dv lk_d_min(lk_dv a, lk_dv b) { return _mm512_min_pd(a, b); }
LK_AI lk_dv lk_d_max(lk_dv a, lk_dv b) { return _mm512_max_pd(a, b); }
LK_AI lk_dv lk_d_abs(lk_dv a) { return _mm512_abs_pd(a); }
LK_AI lk_dv lk_d_neg(lk_dv a) { return _mm512_xor_pd(a, _mm512_set1_pd(-0.0)); }
LK_AI lk_dv lk_d_copysign(lk_dv a, lk_dv s)
{ return _mm512_castsi512_pd(_mm512_ternarylogic_epi64(_mm512_set1_epi64(INT64_MIN), _mm512_castpd_si512(a), _mm512_castpd_si512(s), 0xac)); }
LK_AI lk_dv lk_d_select_neg(lk_dv s, lk_dv a, lk_dv b)
{ return _mm512_castsi512_pd(_mm512_ternarylogic_epi64(_mm512_srai_epi64(_mm512_castpd_si512(s), 63), _mm512_castpd_si512(a), _mm512_castpd_si512(b), 0xca)); }
LK_AI lk_dv lk_d_sqrt(lk_dv a) { return _mm512_sqrt_pd(a); }
LK_AI lk_dm lk_d_lt(lk_dv a, lk_dv b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
LK_AI lk_dm lk_d_le(lk_dv a, lk_dv b) { return _mm512_cmp_pd_mask(a, b, _CMP_LE_OQ); }
LK_AI lk_dm lk_d_gt(lk_dv a, lk_dv b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
LK_AI lk_dm lk_d_ge(lk_dv a, lk_dv b) { return _mm512_cmp_pd_mask(a, b, _CMP_GE_OQ); }
LK_AI lk_dm lk_d_eq(lk_dv a, lk_dv b) { return _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ); }
LK_AI lk_dm lk_d_isnan(lk_dv a) { return _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q); }
LK_AI lk_dv lk_d_select(lk_dm m, lk_dv a, lk_dv b) { return _mm512_mask_blend_pd(m, b, a); }
LK_AI lk_dv lk_d_mul_where(lk_dm m, lk_dv a, lk_dv b, lk_dv src) { return _mm512_mask_mul_pd(src, m, a, b); }
LK_AI lk_dv lk_d_max_where(lk_dm m, lk_dv a, lk_dv b, lk_dv src) { return _mm512_mask_max_pd(src, m, a, b); }
LK_AI lk_dv lk_d_keep(lk_dm m, lk_dv a) { return _mm512_maskz_mov_pd(m, a); }
LK_AI lk_dv lk_d_clear(lk_dm m, lk_dv a) { return _mm512_maskz_mov_pd((lk_dm)~m, a); }
LK_AI lk_dm lk_d_and(lk_dm a, lk_dm b) { return _kand_mask8(a, b); }
LK_AI lk_dm lk_d_or(lk_dm a, lk_dm b) { return _kor_mask8(a, b); }
LK_AI lk_dm lk_d_not(lk_dm a) { return _knot_mask8(a); }
LK_AI int lk_d_any(lk_dm m) { return !_kortestz_mask8_u8(m, m); }
LK_AI int lk_d_all(lk_dm m) { return _kortestc_mask8_u8(m, m); }
/* float lanes widened into two double halves */
LK_AI lk_dv lk_f_lo(lk_fv a) { return _mm512_cvtps_pd(_mm512_castps512_ps256(a)); }
LK_AI lk_dv lk_f_hi(lk_fv a) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))); }
/* the lanes added in a fixed order: halves, then quarters, ... */
LK_AI double lk_d_hsum(lk_dv a)
{
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

__m512 _ZGVeN16vv_powf(__m512 x, __m512 y);
__m512d _ZGVeN8v_exp(__m512d x);
__m512d _ZGVeN8v_log(__m512d x);
__m512d _ZGVeN8v_log1p(__m512d x);
__m512d _ZGVeN8vv_pow(__m512d x, __m512d y);
LK_AI lk_fv lk_f_pow(lk_fv a, lk_fv b) { return _ZGVeN16vv_powf(a, b); }
LK_AI lk_dv lk_d_exp(lk_dv a) { return _ZGVeN8v_exp(a); }
LK_AI lk_dv lk_d_log(lk_dv a) { return _ZGVeN8v_log(a); }
LK_AI lk_dv lk_d_log1p(lk_dv a) { return _ZGVeN8v_log1p(a); }
LK_AI lk_dv lk_d_pow(lk_dv a, lk_dv b) { return _ZGVeN8vv_pow(a, b); }
LK_AI lk_dv lk_d_round(lk_dv a) { return _mm512_roundscale_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* Streaming (non-temporal) stores of a full vector to a 64-byte aligned
 * address: the line is written without being read first. */
LK_AI void lk_f_stream(float *p, lk_fv v) { _mm512_stream_ps(p, v); }
LK_AI void lk_d_stream(double *p, lk_dv v) { _mm512_stream_pd(p, v); }
/* double lanes rounded to float32 and streamed (a 32-byte aligned address) */
LK_AI void lk_d_stream_f32(float *p, lk_dv v) { _mm256_stream_ps(p, _mm512_cvtpd_ps(v)); }
/* the last lane of a, then the lanes of b but its last: b shifted up by one
 * lane, a's last shifted in (a neighbour's value from the previous vector) */
LK_AI lk_fv lk_f_shift_in(lk_fv a, lk_fv b)
{ return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(b), _mm512_castps_si512(a), 15)); }
LK_AI lk_dv lk_d_shift_in(lk_dv a, lk_dv b)
{ return _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(b), _mm512_castpd_si512(a), 7)); }
LK_AI lk_dv lk_d_ldexp(lk_dv a, lk_dv n) { return _mm512_scalef_pd(a, n); }
/* a 2^n for integral n (float lanes), exact through the subnormal range */
LK_AI lk_fv lk_f_ldexp(lk_fv a, lk_fv n) { return _mm512_scalef_ps(a, n); }
/* 1 / a for a positive normal a: the 14-bit estimate and one Newton step
 * (about 2^-27 relative) */
LK_AI lk_fv lk_f_recip_fast(lk_fv a)
{
    __m512 r = _mm512_rcp14_ps(a);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(2.0f)));
}

#elif defined(LK_TARGET_AVX2)

#define LK_FW 8
#define LK_DW 4
typedef __m256 lk_fv;
typedef __m256d lk_dv;
typedef __m256 lk_fm;  /* all ones or all zeros per lane */
typedef __m256d lk_dm;

LK_AI lk_fv lk_f_set(double a) { return _mm256_set1_ps((float)a); }
LK_AI lk_fv lk_f_zero(void) { return _mm256_setzero_ps(); }
LK_AI lk_fm lk_f_first(int k)
{ return _mm256_cmp_ps(_mm256_set_ps(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_ps((float)k), _CMP_LT_OQ); }
LK_AI lk_fv lk_f_load(const float *p) { return _mm256_loadu_ps(p); }
LK_AI lk_fv lk_f_loadn(const float *p, int k, float pad)
{
    if (k >= 8) return _mm256_loadu_ps(p);
    lk_fm m = lk_f_first(k);
    return _mm256_blendv_ps(_mm256_set1_ps(pad), _mm256_maskload_ps(p, _mm256_castps_si256(m)), m);
}
LK_AI void lk_f_store(float *p, lk_fv v) { _mm256_storeu_ps(p, v); }
LK_AI void lk_f_storen(float *p, int k, lk_fv v)
{ if (k >= 8) _mm256_storeu_ps(p, v); else _mm256_maskstore_ps(p, _mm256_castps_si256(lk_f_first(k)), v); }
LK_AI lk_fv lk_f_add(lk_fv a, lk_fv b) { return _mm256_add_ps(a, b); }
LK_AI lk_fv lk_f_sub(lk_fv a, lk_fv b) { return _mm256_sub_ps(a, b); }
LK_AI lk_fv lk_f_mul(lk_fv a, lk_fv b) { return _mm256_mul_ps(a, b); }
LK_AI lk_fv lk_f_div(lk_fv a, lk_fv b) { return _mm256_div_ps(a, b); }
LK_AI lk_fv lk_f_fma(lk_fv a, lk_fv b, lk_fv c) { return _mm256_fmadd_ps(a, b, c); }
LK_AI lk_fv lk_f_fnma(lk_fv a, lk_fv b, lk_fv c) { return _mm256_fnmadd_ps(a, b, c); }
LK_AI lk_fv lk_f_fms(lk_fv a, lk_fv b, lk_fv c) { return _mm256_fmsub_ps(a, b, c); }
LK_AI lk_fv lk_f_min(lk_fv a, lk_fv b) { return _mm256_min_ps(a, b); }
LK_AI lk_fv lk_f_max(lk_fv a, lk_fv b) { return _mm256_max_ps(a, b); }
LK_AI lk_fv lk_f_abs(lk_fv a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
LK_AI lk_fv lk_f_neg(lk_fv a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
LK_AI lk_fv lk_f_copysign(lk_fv a, lk_fv s)
{ __m256 m = _mm256_set1_ps(-0.0f); return _mm256_or_ps(_mm256_andnot_ps(m, a), _mm256_and_ps(m, s)); }
LK_AI lk_fv lk_f_select_neg(lk_fv s, lk_fv a, lk_fv b) { return _mm256_blendv_ps(b, a, s); }
LK_AI lk_fv lk_f_sqrt(lk_fv a) { return _mm256_sqrt_ps(a); }
LK_AI lk_fm lk_f_lt(lk_fv a, lk_fv b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
LK_AI lk_fm lk_f_le(lk_fv a, lk_fv b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
LK_AI lk_fm lk_f_gt(lk_fv a, lk_fv b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
LK_AI lk_fm lk_f_ge(lk_fv a, lk_fv b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
LK_AI lk_fm lk_f_eq(lk_fv a, lk_fv b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
LK_AI lk_fm lk_f_isnan(lk_fv a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
LK_AI lk_fv lk_f_select(lk_fm m, lk_fv a, lk_fv b) { return _mm256_blendv_ps(b, a, m); }
LK_AI lk_fv lk_f_mul_where(lk_fm m, lk_fv a, lk_fv b, lk_fv src) { return _mm256_blendv_ps(src, _mm256_mul_ps(a, b), m); }
LK_AI lk_fv lk_f_max_where(lk_fm m, lk_fv a, lk_fv b, lk_fv src) { return _mm256_blendv_ps(src, _mm256_max_ps(a, b), m); }
LK_AI lk_fv lk_f_keep(lk_fm m, lk_fv a) { return _mm256_and_ps(m, a); }
LK_AI lk_fv lk_f_clear(lk_fm m, lk_fv a) { return _mm256_andnot_ps(m, a); }
LK_AI lk_fm lk_f_and(lk_fm a, lk_fm b) { return _mm256_and_ps(a, b); }
LK_AI lk_fm lk_f_or(lk_fm a, lk_fm b) { return _mm256_or_ps(a, b); }
LK_AI lk_fm lk_f_not(lk_fm a) { return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(-1))); }
LK_AI int lk_f_any(lk_fm m) { return _mm256_movemask_ps(m) != 0; }
LK_AI int lk_f_all(lk_fm m) { return _mm256_movemask_ps(m) == 0xFF; }
LK_AI lk_fv lk_f_round(lk_fv a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

LK_AI lk_dv lk_d_set(double a) { return _mm256_set1_pd(a); }
LK_AI lk_dv lk_d_zero(void) { return _mm256_setzero_pd(); }
LK_AI lk_dm lk_d_first(int k)
{ return _mm256_cmp_pd(_mm256_set_pd(3, 2, 1, 0), _mm256_set1_pd((double)k), _CMP_LT_OQ); }
LK_AI lk_dv lk_d_load(const double *p) { return _mm256_loadu_pd(p); }
LK_AI lk_dv lk_d_loadn(const double *p, int k, double pad)
{
    if (k >= 4) return _mm256_loadu_pd(p);
    lk_dm m = lk_d_first(k);
    return _mm256_blendv_pd(_mm256_set1_pd(pad), _mm256_maskload_pd(p, _mm256_castpd_si256(m)), m);
}
LK_AI void lk_d_store(double *p, lk_dv v) { _mm256_storeu_pd(p, v); }
LK_AI void lk_d_storen(double *p, int k, lk_dv v)
{ if (k >= 4) _mm256_storeu_pd(p, v); else _mm256_maskstore_pd(p, _mm256_castpd_si256(lk_d_first(k)), v); }
LK_AI lk_dv lk_d_loadn_f32(const float *p, int k, double pad)
{
    if (k >= 4) return _mm256_cvtps_pd(_mm_loadu_ps(p));
    __m128 m = _mm256_cvtpd_ps(lk_d_first(k));
    __m128 v = _mm_blendv_ps(_mm_set1_ps((float)pad), _mm_maskload_ps(p, _mm_castps_si128(m)), m);
    return _mm256_cvtps_pd(v);
}
LK_AI void lk_d_storen_f32(float *p, int k, lk_dv v)
{
    __m128 f = _mm256_cvtpd_ps(v);
    if (k >= 4) _mm_storeu_ps(p, f);
    else _mm_maskstore_ps(p, _mm_castps_si128(_mm256_cvtpd_ps(lk_d_first(k))), f);
}
LK_AI lk_dv lk_d_add(lk_dv a, lk_dv b) { return _mm256_add_pd(a, b); }
LK_AI lk_dv lk_d_sub(lk_dv a, lk_dv b) { return _mm256_sub_pd(a, b); }
LK_AI lk_dv lk_d_mul(lk_dv a, lk_dv b) { return _mm256_mul_pd(a, b); }
LK_AI lk_dv lk_d_div(lk_dv a, lk_dv b) { return _mm256_div_pd(a, b); }
LK_AI lk_dv lk_d_fma(lk_dv a, lk_dv b, lk_dv c) { return _mm256_fmadd_pd(a, b, c); }
LK_AI lk_dv lk_d_fnma(lk_dv a, lk_dv b, lk_dv c) { return _mm256_fnmadd_pd(a, b, c); }
LK_AI lk_dv lk_d_fms(lk_dv a, lk_dv b, lk_dv c) { return _mm256_fmsub_pd(a, b, c); }
LK_AI lk_dv lk_d_min(lk_dv a, lk_dv b) { return _mm256_min_pd(a, b); }
LK_AI lk_dv lk_d_max(lk_dv a, lk_dv b) { return _mm256_max_pd(a, b); }
LK_AI lk_dv lk_d_abs(lk_dv a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
LK_AI lk_dv lk_d_neg(lk_dv a) { return _mm256_xor_pd(a, _mm256_set1_pd(-0.0)); }
LK_AI lk_dv lk_d_copysign(lk_dv a, lk_dv s)
{ __m256d m = _mm256_set1_pd(-0.0); return _mm256_or_pd(_mm256_andnot_pd(m, a), _mm256_and_pd(m, s)); }
LK_AI lk_dv lk_d_select_neg(lk_dv s, lk_dv a, lk_dv b) { return _mm256_blendv_pd(b, a, s); }
LK_AI lk_dv lk_d_sqrt(lk_dv a) { return _mm256_sqrt_pd(a); }
LK_AI lk_dm lk_d_lt(lk_dv a, lk_dv b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
LK_AI lk_dm lk_d_le(lk_dv a, lk_dv b) { return _mm256_cmp_pd(a, b, _CMP_LE_OQ); }
LK_AI lk_dm lk_d_gt(lk_dv a, lk_dv b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
LK_AI lk_dm lk_d_ge(lk_dv a, lk_dv b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
LK_AI lk_dm lk_d_eq(lk_dv a, lk_dv b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
LK_AI lk_dm lk_d_isnan(lk_dv a) { return _mm256_cmp_pd(a, a, _CMP_UNORD_Q); }
LK_AI lk_dv lk_d_select(lk_dm m, lk_dv a, lk_dv b) { return _mm256_blendv_pd(b, a, m); }
LK_AI lk_dv lk_d_mul_where(lk_dm m, lk_dv a, lk_dv b, lk_dv src) { return _mm256_blendv_pd(src, _mm256_mul_pd(a, b), m); }
LK_AI lk_dv lk_d_max_where(lk_dm m, lk_dv a, lk_dv b, lk_dv src) { return _mm256_blendv_pd(src, _mm256_max_pd(a, b), m); }
LK_AI lk_dv lk_d_keep(lk_dm m, lk_dv a) { return _mm256_and_pd(m, a); }
LK_AI lk_dv lk_d_clear(lk_dm m, lk_dv a) { return _mm256_andnot_pd(m, a); }
LK_AI lk_dm lk_d_and(lk_dm a, lk_dm b) { return _mm256_and_pd(a, b); }
LK_AI lk_dm lk_d_or(lk_dm a, lk_dm b) { return _mm256_or_pd(a, b); }
LK_AI lk_dm lk_d_not(lk_dm a) { return _mm256_xor_pd(a, _mm256_castsi256_pd(_mm256_set1_epi64x(-1))); }
LK_AI int lk_d_any(lk_dm m) { return _mm256_movemask_pd(m) != 0; }
LK_AI int lk_d_all(lk_dm m) { return _mm256_movemask_pd(m) == 0xF; }
LK_AI lk_dv lk_f_lo(lk_fv a) { return _mm256_cvtps_pd(_mm256_castps256_ps128(a)); }
LK_AI lk_dv lk_f_hi(lk_fv a) { return _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)); }
LK_AI double lk_d_hsum(lk_dv a)
{
    __m128d q = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

__m256 _ZGVdN8vv_powf(__m256 x, __m256 y);
__m256d _ZGVdN4v_exp(__m256d x);
__m256d _ZGVdN4v_log(__m256d x);
__m256d _ZGVdN4v_log1p(__m256d x);
__m256d _ZGVdN4vv_pow(__m256d x, __m256d y);
LK_AI lk_fv lk_f_pow(lk_fv a, lk_fv b) { return _ZGVdN8vv_powf(a, b); }
LK_AI lk_dv lk_d_exp(lk_dv a) { return _ZGVdN4v_exp(a); }
LK_AI lk_dv lk_d_log(lk_dv a) { return _ZGVdN4v_log(a); }
LK_AI lk_dv lk_d_log1p(lk_dv a) { return _ZGVdN4v_log1p(a); }
LK_AI lk_dv lk_d_pow(lk_dv a, lk_dv b) { return _ZGVdN4vv_pow(a, b); }
/* a 2^n, n integral in [-252, 252] here: two normal factors, so that the
 * subnormal range keeps its bits and an overflow gives inf */
LK_AI lk_fv lk_f_ldexp(lk_fv a, lk_fv n)
{
    __m256i k = _mm256_cvtps_epi32(n), k1 = _mm256_srai_epi32(k, 1), k2 = _mm256_sub_epi32(k, k1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(a, s1), s2);
}
LK_AI lk_fv lk_f_recip_fast(lk_fv a) { return _mm256_div_ps(_mm256_set1_ps(1.0f), a); }
LK_AI lk_dv lk_d_round(lk_dv a) { return _mm256_round_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
LK_AI void lk_f_stream(float *p, lk_fv v) { _mm256_stream_ps(p, v); }
LK_AI void lk_d_stream(double *p, lk_dv v) { _mm256_stream_pd(p, v); }
/* double lanes rounded to float32 and streamed (a 16-byte aligned address) */
LK_AI void lk_d_stream_f32(float *p, lk_dv v) { _mm_stream_ps(p, _mm256_cvtpd_ps(v)); }
/* the last lane of a, then the lanes of b but its last */
LK_AI lk_fv lk_f_shift_in(lk_fv a, lk_fv b)
{
    __m256 t = _mm256_permute2f128_ps(a, b, 0x21); /* a's high half, b's low half */
    return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(b), _mm256_castps_si256(t), 12));
}
LK_AI lk_dv lk_d_shift_in(lk_dv a, lk_dv b)
{ return _mm256_shuffle_pd(_mm256_permute2f128_pd(a, b, 0x21), b, 0x5); }
/* a 2^n, n integral in [-2046, 0] here: two normal factors */
LK_AI lk_dv lk_d_ldexp(lk_dv a, lk_dv n)
{
    __m128i k = _mm256_cvtpd_epi32(n), k1 = _mm_srai_epi32(k, 1), k2 = _mm_sub_epi32(k, k1);
    __m256i b = _mm256_set1_epi64x(1023);
    __m256d s1 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k1), b), 52));
    __m256d s2 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k2), b), 52));
    return _mm256_mul_pd(_mm256_mul_pd(a, s1), s2);
}


#else /* portable: one lane, plain C */

#define LK_FW 1
#define LK_DW 1
typedef float lk_fv;
typedef double lk_dv;
typedef int lk_fm;
typedef int lk_dm;

LK_AI lk_fv lk_f_set(double a) { return (float)a; }
LK_AI lk_fv lk_f_zero(void) { return 0.0f; }
LK_AI lk_fm lk_f_first(int k) { return k >= 1; }
LK_AI lk_fv lk_f_load(const float *p) { return *p; }
LK_AI lk_fv lk_f_loadn(const float *p, int k, float pad) { return k >= 1 ? *p : pad; }
LK_AI void lk_f_store(float *p, lk_fv v) { *p = v; }
LK_AI void lk_f_storen(float *p, int k, lk_fv v) { if (k >= 1) *p = v; }
LK_AI lk_fv lk_f_add(lk_fv a, lk_fv b) { return a + b; }
LK_AI lk_fv lk_f_sub(lk_fv a, lk_fv b) { return a - b; }
LK_AI lk_fv lk_f_mul(lk_fv a, lk_fv b) { return a * b; }
LK_AI lk_fv lk_f_div(lk_fv a, lk_fv b) { return a / b; }
LK_AI lk_fv lk_f_fma(lk_fv a, lk_fv b, lk_fv c) { return a * b + c; }
LK_AI lk_fv lk_f_fnma(lk_fv a, lk_fv b, lk_fv c) { return c - a * b; }
LK_AI lk_fv lk_f_fms(lk_fv a, lk_fv b, lk_fv c) { return a * b - c; }
LK_AI lk_fv lk_f_min(lk_fv a, lk_fv b) { return a < b ? a : b; }
LK_AI lk_fv lk_f_max(lk_fv a, lk_fv b) { return a > b ? a : b; }
LK_AI lk_fv lk_f_abs(lk_fv a) { return fabsf(a); }
LK_AI lk_fv lk_f_neg(lk_fv a) { return -a; }
LK_AI lk_fv lk_f_copysign(lk_fv a, lk_fv s) { return copysignf(a, s); }
LK_AI lk_fv lk_f_select_neg(lk_fv s, lk_fv a, lk_fv b) { return signbit(s) ? a : b; }
LK_AI lk_fv lk_f_sqrt(lk_fv a) { return sqrtf(a); }
LK_AI lk_fm lk_f_lt(lk_fv a, lk_fv b) { return a < b; }
LK_AI lk_fm lk_f_le(lk_fv a, lk_fv b) { return a <= b; }
LK_AI lk_fm lk_f_gt(lk_fv a, lk_fv b) { return a > b; }
LK_AI lk_fm lk_f_ge(lk_fv a, lk_fv b) { return a >= b; }
LK_AI lk_fm lk_f_eq(lk_fv a, lk_fv b) { return a == b; }
LK_AI lk_fm lk_f_isnan(lk_fv a) { return a != a; }
LK_AI lk_fv lk_f_select(lk_fm m, lk_fv a, lk_fv b) { return m ? a : b; }
LK_AI lk_fv lk_f_mul_where(lk_fm m, lk_fv a, lk_fv b, lk_fv src) { return m ? a * b : src; }
LK_AI lk_fv lk_f_max_where(lk_fm m, lk_fv a, lk_fv b, lk_fv src) { return m ? lk_f_max(a, b) : src; }
LK_AI lk_fv lk_f_keep(lk_fm m, lk_fv a) { return m ? a : 0.0f; }
LK_AI lk_fv lk_f_clear(lk_fm m, lk_fv a) { return m ? 0.0f : a; }
LK_AI lk_fm lk_f_and(lk_fm a, lk_fm b) { return a && b; }
LK_AI lk_fm lk_f_or(lk_fm a, lk_fm b) { return a || b; }
LK_AI lk_fm lk_f_not(lk_fm a) { return !a; }
LK_AI int lk_f_any(lk_fm m) { return m != 0; }
LK_AI int lk_f_all(lk_fm m) { return m != 0; }
LK_AI lk_fv lk_f_round(lk_fv a) { return nearbyintf(a); }
LK_AI lk_dv lk_d_round(lk_dv a) { return nearbyint(a); }

LK_AI lk_dv lk_d_set(double a) { return a; }
LK_AI lk_dv lk_d_zero(void) { return 0.0; }
LK_AI lk_dm lk_d_first(int k) { return k >= 1; }
LK_AI lk_dv lk_d_load(const double *p) { return *p; }
LK_AI lk_dv lk_d_loadn(const double *p, int k, double pad) { return k >= 1 ? *p : pad; }
LK_AI void lk_d_store(double *p, lk_dv v) { *p = v; }
LK_AI void lk_d_storen(double *p, int k, lk_dv v) { if (k >= 1) *p = v; }
LK_AI lk_dv lk_d_loadn_f32(const float *p, int k, double pad) { return k >= 1 ? (double)*p : pad; }
LK_AI void lk_d_storen_f32(float *p, int k, lk_dv v) { if (k >= 1) *p = (float)v; }
LK_AI lk_dv lk_d_add(lk_dv a, lk_dv b) { return a + b; }
LK_AI lk_dv lk_d_sub(lk_dv a, lk_dv b) { return a - b; }
LK_AI lk_dv lk_d_mul(lk_dv a, lk_dv b) { return a * b; }
LK_AI lk_dv lk_d_div(lk_dv a, lk_dv b) { return a / b; }
LK_AI lk_dv lk_d_fma(lk_dv a, lk_dv b, lk_dv c) { return a * b + c; }
LK_AI lk_dv lk_d_fnma(lk_dv a, lk_dv b, lk_dv c) { return c - a * b; }
LK_AI lk_dv lk_d_fms(lk_dv a, lk_dv b, lk_dv c) { return a * b - c; }
LK_AI lk_dv lk_d_min(lk_dv a, lk_dv b) { return a < b ? a : b; }
LK_AI lk_dv lk_d_max(lk_dv a, lk_dv b) { return a > b ? a : b; }
LK_AI lk_dv lk_d_abs(lk_dv a) { return fabs(a); }
LK_AI lk_dv lk_d_neg(lk_dv a) { return -a; }
LK_AI lk_dv lk_d_copysign(lk_dv a, lk_dv s) { return copysign(a, s); }
LK_AI lk_dv lk_d_select_neg(lk_dv s, lk_dv a, lk_dv b) { return signbit(s) ? a : b; }
LK_AI lk_dv lk_d_sqrt(lk_dv a) { return sqrt(a); }
LK_AI lk_dm lk_d_lt(lk_dv a, lk_dv b) { return a < b; }
LK_AI lk_dm lk_d_le(lk_dv a, lk_dv b) { return a <= b; }
LK_AI lk_dm lk_d_gt(lk_dv a, lk_dv b) { return a > b; }
LK_AI lk_dm lk_d_ge(lk_dv a, lk_dv b) { return a >= b; }
LK_AI lk_dm lk_d_eq(lk_dv a, lk_dv b) { return a == b; }
LK_AI lk_dm lk_d_isnan(lk_dv a) { return a != a; }
LK_AI lk_dv lk_d_select(lk_dm m, lk_dv a, lk_dv b) { return m ? a : b; }
LK_AI lk_dv lk_d_mul_where(lk_dm m, lk_dv a, lk_dv b, lk_dv src) { return m ? a * b : src; }
LK_AI lk_dv lk_d_max_where(lk_dm m, lk_dv a, lk_dv b, lk_dv src) { return m ? lk_d_max(a, b) : src; }
LK_AI lk_dv lk_d_keep(lk_dm m, lk_dv a) { return m ? a : 0.0; }
LK_AI lk_dv lk_d_clear(lk_dm m, lk_dv a) { return m ? 0.0 : a; }
LK_AI lk_dm lk_d_and(lk_dm a, lk_dm b) { return a && b; }
LK_AI lk_dm lk_d_or(lk_dm a, lk_dm b) { return a || b; }
LK_AI lk_dm lk_d_not(lk_dm a) { return !a; }
LK_AI int lk_d_any(lk_dm m) { return m != 0; }
LK_AI int lk_d_all(lk_dm m) { return m != 0; }
LK_AI lk_dv lk_f_lo(lk_fv a) { return (double)a; }
LK_AI lk_dv lk_f_hi(lk_fv a) { (void)a; return 0.0; }
LK_AI double lk_d_hsum(lk_dv a) { return a; }

LK_AI lk_fv lk_f_exp(lk_fv a) { return expf(a); }
LK_AI lk_fv lk_f_log(lk_fv a) { return logf(a); }
LK_AI lk_fv lk_f_log1p(lk_fv a) { return log1pf(a); }
LK_AI lk_fv lk_f_pow(lk_fv a, lk_fv b) { return powf(a, b); }
LK_AI lk_dv lk_d_exp(lk_dv a) { return exp(a); }
LK_AI lk_dv lk_d_log(lk_dv a) { return log(a); }
LK_AI lk_dv lk_d_log1p(lk_dv a) { return log1p(a); }
LK_AI lk_dv lk_d_pow(lk_dv a, lk_dv b) { return pow(a, b); }
LK_AI lk_fv lk_f_recip_fast(lk_fv a) { return 1.0f / a; }
LK_AI void lk_f_stream(float *p, lk_fv v) { *p = v; }
LK_AI void lk_d_stream(double *p, lk_dv v) { *p = v; }
LK_AI void lk_d_stream_f32(float *p, lk_dv v) { *p = (float)v; }
LK_AI lk_fv lk_f_shift_in(lk_fv a, lk_fv b) { (void)b; return a; }
LK_AI lk_dv lk_d_shift_in(lk_dv a, lk_dv b) { (void)b; return a; }

#endif
/* clang-format on */

/* Orders streaming stores before what follows (the end of a block). */
LK_AI void lk_stream_fence(void)
{
#if !defined(LK_TARGET_PORTABLE)
    _mm_sfence();
#endif
}

/* ------------------------------------------------------------------------ */
/* Restricted-range exp and log                                              */

#if defined(LK_TARGET_AVX512)
/* exp(x) for x in [-120, 120] or NaN: x = (m + j/16) log 2 + r, |r| <=
 * log(2) / 32, exp(x) = 2^m 2^(j/16) exp(r). n = m + j/16 is x / log 2
 * rounded to a sixteenth by adding 1.5 2^19 (whose ulp is 1/16), so that
 * the low 4 bits of the sum are j: vpermps reads only those, and picks
 * 2^(j/16) from a table of 16 floats held in one register. exp(r) - 1 is
 * r + r^2 (1/2 + r/6) (the next term is below 1e-8 of the result);
 * vscalefps multiplies by 2^floor(n) = 2^m, giving 0 below the subnormals
 * and inf above the largest float. About 1 float ulp (the table's
 * rounding and one fma), in 10 operations where the Cephes polynomial on
 * |r| <= log(2) / 2 took 14. */
/* The table of 2^(j/16), j = 0 .. 15, in one register (read by vpermps). */
LK_AI __m512 lk__f_exp2_tab(void)
{
    return _mm512_setr_ps(
        1.000000000e+00f, 1.044273734e+00f, 1.090507746e+00f, 1.138788581e+00f, 1.189207077e+00f,
        1.241857767e+00f, 1.296839595e+00f, 1.354255557e+00f, 1.414213538e+00f, 1.476826191e+00f,
        1.542210817e+00f, 1.610490322e+00f, 1.681792855e+00f, 1.756252170e+00f, 1.834008098e+00f,
        1.915206552e+00f); /* 2^(j/16) rounded to float */
}

/* exp(a) (neg = 0) or exp(-a) (neg = 1, the negation folded into the
 * constants), a as above */
LK_AI lk_fv lk__f_exp_core_s(lk_fv a, int neg)
{
    const __m512 tab = lk__f_exp2_tab();
    const __m512 magic = _mm512_set1_ps(786432.0f); /* 1.5 2^19 */
    __m512 l2e = _mm512_set1_ps(neg ? -1.44269504088896341f : 1.44269504088896341f);
    __m512 t = _mm512_fmadd_ps(a, l2e, magic);
    __m512 n = _mm512_sub_ps(t, magic);
    /* log 2 in Cephes' two parts: n log2_hi is exact (16 n has at most 12
     * bits, log2_hi 9) */
    __m512 h = _mm512_set1_ps(0.693359375f);
    __m512 r = neg ? _mm512_fnmsub_ps(n, h, a) : _mm512_fnmadd_ps(n, h, a);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 tj = _mm512_permutexvar_ps(_mm512_castps_si512(t), tab);
    __m512 q = _mm512_fmadd_ps(r, _mm512_set1_ps(1.6666666667e-1f), _mm512_set1_ps(0.5f));
    q = _mm512_fmadd_ps(q, _mm512_mul_ps(r, r), r);
    return _mm512_scalef_ps(_mm512_fmadd_ps(tj, q, tj), n);
}

LK_AI lk_fv lk__f_exp_core(lk_fv x)
{
    return lk__f_exp_core_s(x, 0);
}
#elif !defined(LK_TARGET_PORTABLE)
/* exp(x) for x in [-120, 120] or NaN: Cody-Waite with Cephes' split of
 * log 2 and its expf polynomial; 2^n by lk_f_ldexp, which gives 0 below
 * the subnormals and inf above the largest float. */
LK_AI lk_fv lk__f_exp_core(lk_fv x)
{
    lk_fv n = lk_f_round(lk_f_mul(x, lk_f_set(1.44269504088896341)));
    lk_fv r = lk_f_fma(n, lk_f_set(-0.693359375), x);
    r = lk_f_fma(n, lk_f_set(2.12194440e-4), r);
    /* Estrin's scheme: a short dependency chain */
    lk_fv r2 = lk_f_mul(r, r), r4 = lk_f_mul(r2, r2);
    lk_fv p01 = lk_f_fma(lk_f_set(1.6666665459e-1), r, lk_f_set(5.0000001201e-1));
    lk_fv p23 = lk_f_fma(lk_f_set(8.3334519073e-3), r, lk_f_set(4.1665795894e-2));
    lk_fv p45 = lk_f_fma(lk_f_set(1.9875691500e-4), r, lk_f_set(1.3981999507e-3));
    lk_fv p = lk_f_fma(p45, r4, lk_f_fma(p23, r2, p01));
    p = lk_f_fma(p, r2, lk_f_add(r, lk_f_set(1.0)));
    return lk_f_ldexp(p, n);
}
#endif

/* exp(a) for a <= 0, -inf or NaN (NaN stays NaN, -inf gives 0); also
 * right up to a = 87 (exp(a) at most 6.1e37, finite), which lk_f_exp_minus
 * relies on. */
LK_AI lk_fv lk_f_exp_neg(lk_fv a)
{
#if defined(LK_TARGET_PORTABLE)
    return expf(a);
#else
    /* Below -120 the result is 0 in float; the clamp keeps 2^n in range.
     * max() returns its second operand for NaN, so NaN passes through. */
    return lk__f_exp_core(lk_f_max(lk_f_set(-120.0), a));
#endif
}

/* exp(-a) for a >= -87 (exp(-a) at most 6.1e37, finite), +inf or NaN:
 * lk_f_exp_neg(-a), with the negation folded into the reduction on
 * AVX-512. */
LK_AI lk_fv lk_f_exp_minus(lk_fv a)
{
#if defined(LK_TARGET_AVX512)
    return lk__f_exp_core_s(lk_f_min(lk_f_set(120.0), a), 1);
#else
    return lk_f_exp_neg(lk_f_neg(a));
#endif
}

/* exp(-c a) for a constant c > 0 and c a >= -87, +inf or NaN, two
 * fma-pipe operations cheaper than lk_f_exp_minus(c a) (five where it takes
 * seven; c folded into the reduction's multiply) at the price of a relative error that grows
 * with c a: about 1 ulp plus up to 1.25 c a ulp (the rounding of y below,
 * at most c a 2^-24 relative, and of c log2(e) to a float, 0.22 c a
 * 2^-24). For callers that need exp's full relative accuracy only where c
 * a is small: log_cosh's exp(-2|d|) for |d| >= 0.75, say, which is added to
 * |d| - log 2 (a relative error of the exp of 2.5|d| 2^-24 stays below the
 * result's last place).
 * On AVX-512 the reduction is in base 2: y = -c a log2(e) rounded once
 * (clamped at -174, where the result is 0), n = y rounded to a sixteenth
 * (as in lk__f_exp_core_s), f = y - n exactly, in [-1/32, 1/32] (an add,
 * where the reduction by log 2 in two parts takes two fmas); 2^f - 1 = f
 * P(f) with P the first three terms of its series, (ln 2)^k f^(k-1) / k!
 * (the next term is below 1e-8 of the result); times 2^(j/16) from the
 * table and 2^floor(n) (vscalefps). Elsewhere lk_f_exp_minus of c a (a + a
 * for c = 2). */
LK_AI lk_fv lk_f_exp_minus_fast(lk_fv a, double c)
{
#if defined(LK_TARGET_AVX512)
    const __m512 magic = _mm512_set1_ps(786432.0f); /* 1.5 2^19 */
    /* max returns its second operand for NaN: NaN passes */
    __m512 y = _mm512_max_ps(_mm512_set1_ps(-174.0f),
                             _mm512_mul_ps(a, _mm512_set1_ps((float)(-1.44269504088896341 * c))));
    __m512 t = _mm512_add_ps(y, magic);
    __m512 n = _mm512_sub_ps(t, magic);
    __m512 f = _mm512_sub_ps(y, n);
    __m512 tj = _mm512_permutexvar_ps(_mm512_castps_si512(t), lk__f_exp2_tab());
    __m512 p = _mm512_fmadd_ps(f, _mm512_set1_ps(5.55041086648215800e-2f),
                               _mm512_set1_ps(2.40226506959100712e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.93147180559945309e-1f));
    return _mm512_scalef_ps(_mm512_fmadd_ps(_mm512_mul_ps(tj, f), p, tj), n);
#else
    return lk_f_exp_minus(c == 2.0 ? lk_f_add(a, a) : lk_f_mul(a, lk_f_set(c)));
#endif
}

/* log(u) for u in [1, 2] (NaN stays NaN). */
LK_AI lk_fv lk_f_log_1to2(lk_fv u)
{
#if defined(LK_TARGET_PORTABLE)
    return logf(u);
#else
    /* Above sqrt(2), log(u) = log(u / 2) + log 2, so that f = m - 1 lies in
     * [-0.293, 0.414]; both m - 1 and u / 2 are exact. */
    lk_fm big = lk_f_gt(u, lk_f_set(1.41421356237));
    lk_fv k = lk_f_keep(big, lk_f_set(1.0));
    lk_fv f = lk_f_sub(lk_f_select(big, lk_f_mul(u, lk_f_set(0.5)), u), lk_f_set(1.0));
    lk_fv z = lk_f_mul(f, f);
    lk_fv p = lk_f_set(7.0376836292e-2);
    p = lk_f_fma(p, f, lk_f_set(-1.1514610310e-1));
    p = lk_f_fma(p, f, lk_f_set(1.1676998740e-1));
    p = lk_f_fma(p, f, lk_f_set(-1.2420140846e-1));
    p = lk_f_fma(p, f, lk_f_set(1.4249322787e-1));
    p = lk_f_fma(p, f, lk_f_set(-1.6668057665e-1));
    p = lk_f_fma(p, f, lk_f_set(2.0000714765e-1));
    p = lk_f_fma(p, f, lk_f_set(-2.4999993993e-1));
    p = lk_f_fma(p, f, lk_f_set(3.3333331174e-1));
    lk_fv y = lk_f_mul(lk_f_mul(p, f), z);
    y = lk_f_fma(k, lk_f_set(-2.12194440e-4), y);
    y = lk_f_fma(z, lk_f_set(-0.5), y);
    return lk_f_fma(k, lk_f_set(0.693359375), lk_f_add(f, y));
#endif
}

/* The general float exp, log and log1p of the SIMD lanes: inline, so that
 * a loss's live registers are not spilled around a library call; about 1
 * to 3 float ulps on every argument. */
#if !defined(LK_TARGET_PORTABLE)
/* exp(a) for any a: 0 below about -104, inf above about 88.7, NaN stays
 * NaN (max() and min() return their second operand for NaN). */
LK_AI lk_fv lk_f_exp(lk_fv a)
{
    return lk__f_exp_core(lk_f_min(lk_f_set(120.0), lk_f_max(lk_f_set(-120.0), a)));
}

/* k log 2 + log1p(f) for f in about [-0.2929, 0.4143] (f = m - 1 of a
 * mantissa m in [sqrt(1/2), sqrt(2)]): 2 atanh(s), s = f / (2 + f) in
 * [-0.1716, 0.1716], by lk_f_log1p_unit's polynomial in s^2; log 2 in
 * Cephes' two parts, k log2_hi exact. */
LK_AI lk_fv lk__f_log_core(lk_fv k, lk_fv f)
{
    lk_fv s = lk_f_mul(f, lk_f_recip_fast(lk_f_add(f, lk_f_set(2.0))));
    lk_fv z = lk_f_mul(s, s);
    lk_fv p = lk_f_fma(lk_f_set(1.4012232699e-01), z, lk_f_set(1.3999569730e-01));
    p = lk_f_fma(p, z, lk_f_set(2.0010849593e-01));
    p = lk_f_fma(p, z, lk_f_set(3.3333206565e-01));
    lk_fv s2 = lk_f_add(s, s);
    lk_fv l = lk_f_fma(lk_f_mul(s2, z), p, lk_f_fma(k, lk_f_set(-2.12194440e-4), s2));
    return lk_f_fma(k, lk_f_set(0.693359375), l);
}

#if defined(LK_TARGET_AVX512)
/* log's answers by the class of its argument (vfixupimm's table): NaN
 * itself, 0 -> -inf, -inf and negatives -> NaN, +inf -> +inf; ordinary
 * positive arguments keep the computed value. */
#define LK__LOG_FIXUP 0x03530421
#else
/* the exponent k and mantissa m = u 2^-k in [sqrt(1/2), sqrt(2)) of u > 0,
 * by the bits of u (AVX2): u - bits(sqrt(1/2)) splits into the two;
 * subnormals are scaled by 2^23 first. Only ordinary positive u give
 * meaning. */
LK_AI void lk__f_frexp(lk_fv u, lk_fv *k, lk_fv *m)
{
    __m256 tiny = _mm256_cmp_ps(u, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    u = _mm256_blendv_ps(u, _mm256_mul_ps(u, _mm256_set1_ps(8388608.0f)), tiny);
    __m256i ix = _mm256_sub_epi32(_mm256_castps_si256(u), _mm256_set1_epi32(0x3f3504f3));
    __m256 e = _mm256_cvtepi32_ps(_mm256_srai_epi32(ix, 23));
    *k = _mm256_sub_ps(e, _mm256_and_ps(tiny, _mm256_set1_ps(23.0f)));
    __m256i mb = _mm256_and_si256(ix, _mm256_set1_epi32(0x007fffff));
    *m = _mm256_castsi256_ps(_mm256_add_epi32(mb, _mm256_set1_epi32(0x3f3504f3)));
}
/* log's answers for the special arguments of u: NaN for NaN and negatives,
 * -inf for 0, +inf for +inf */
LK_AI lk_fv lk__f_log_fixup(lk_fv r, lk_fv u)
{
    __m256 inf = _mm256_set1_ps(HUGE_VALF), zero = _mm256_setzero_ps();
    r = _mm256_blendv_ps(r, inf, _mm256_cmp_ps(u, inf, _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, _mm256_sub_ps(zero, inf), _mm256_cmp_ps(u, zero, _CMP_EQ_OQ));
    return _mm256_blendv_ps(r, _mm256_set1_ps(NAN), _mm256_cmp_ps(u, zero, _CMP_NGE_UQ));
}
#endif

#if defined(LK_TARGET_AVX512)
/* log(u) of a positive u (normal or subnormal) by a table, before the
 * fixup of the special arguments: u = m 2^k with m in [3/4, 3/2)
 * (vgetmantps), the top 5 bits of m's stored mantissa pick one of 32
 * intervals (16 of width 1/32 in [1, 3/2), 16 of width 1/64 in [3/4, 1)),
 * each with a float 1/c near 1 over its centre; the two around 1 take c =
 * 1, so that no result near 0 is a difference. Then log u = k log 2 + log c
 * + log1p(r), r = m / c - 1 in [-1/64, 1/32] rounded once (an fma),
 * log1p(r) = r + r^2 Q(r) with Q quadratic, fitted to it on that range
 * (minimax, relative error 8.2e-9 before rounding), by Estrin's scheme.
 * vgetexpps gives k where m >= 1 and k - 1 where m < 1; the table's log c
 * carries the missing log 2 in those 16 entries (log 2 as the same float as
 * the fma's, so that the two cancel exactly just below 1). Every other 1/c
 * was chosen among the floats near 1 over its interval's centre so that
 * its entry lies within 1.5e-12 of its float. k log 2 is one fma with log 2
 * rounded to float: that rounding, 1.9e-9 k, is below 0.12 ulp of any
 * result with k != 0 (|log u| >= 0.287 |k| there) and absent where k = 0,
 * around 1. The tables are two registers each, read by vpermt2ps. About 1
 * float ulp (1.25 at most in test_vecmath's sweep; the 16-entry table with
 * a cubic Q before gave 1.81), one fma fewer than that table took, with a
 * short dependency chain. With with_add, add is added to r before the polynomial (log1p's
 * correction). The table's search and Q's fit: bench/log_table.py. */
LK_AI lk_fv lk__f_log_tab(lk_fv u, lk_fv add, int with_add)
{
    const __m512 tinv0 = _mm512_setr_ps(
        1.000000000e+00f, 9.570628405e-01f, 9.281467199e-01f, 9.015070796e-01f, 8.774389625e-01f,
        8.515581489e-01f, 8.324992061e-01f, 8.100588918e-01f, 7.884821296e-01f, 7.711816430e-01f,
        7.538068891e-01f, 7.351939678e-01f, 7.200946212e-01f, 7.038778663e-01f, 6.895611286e-01f,
        6.717607379e-01f);
    const __m512 tinv1 = _mm512_setr_ps(
        1.317974091e+00f, 1.290398121e+00f, 1.268692374e+00f, 1.240959048e+00f, 1.223551869e+00f,
        1.199443221e+00f, 1.174646616e+00f, 1.149525881e+00f, 1.136688590e+00f, 1.114777327e+00f,
        1.089912891e+00f, 1.078629017e+00f, 1.058737636e+00f, 1.044291615e+00f, 1.021979213e+00f,
        1.000000000e+00f); /* 1 / c, a float */
    const __m512 tlog0 = _mm512_setr_ps(
        0.000000000e+00f, 4.388622567e-02f, 7.456545532e-02f, 1.036873832e-01f, 1.307478845e-01f,
        1.606874913e-01f, 1.833230108e-01f, 2.106483281e-01f, 2.376455367e-01f, 2.598313391e-01f,
        2.826190591e-01f, 3.076209128e-01f, 3.283726573e-01f, 3.511504233e-01f, 3.716999292e-01f,
        3.978530467e-01f);
    const __m512 tlog1 = _mm512_setr_ps(
        4.170514047e-01f, 4.381963909e-01f, 4.551604390e-01f, 4.772626758e-01f, 4.913891852e-01f,
        5.112897158e-01f, 5.321798325e-01f, 5.537976027e-01f, 5.650278926e-01f, 5.844925046e-01f,
        6.070494056e-01f, 6.174563766e-01f, 6.360698938e-01f, 6.498084068e-01f, 6.714060307e-01f,
        6.931471825e-01f); /* log c, plus log 2 where m < 1 (see above) */
    __m512 m = _mm512_getmant_ps(u, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan);
    /* u = m 2^(k + 1) where m < 1: the table's log 2 makes up the 1 */
    __m512 k = _mm512_getexp_ps(u);
    __m512i j = _mm512_srli_epi32(_mm512_castps_si512(m), 18); /* vpermt2ps reads bits 0-4 */
    __m512 r = _mm512_fmadd_ps(m, _mm512_permutex2var_ps(tinv0, j, tinv1), _mm512_set1_ps(-1.0f));
    __m512 hi = _mm512_fmadd_ps(k, _mm512_set1_ps(0.69314718056f),
                                _mm512_permutex2var_ps(tlog0, j, tlog1));
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 q = _mm512_fmadd_ps(r, _mm512_set1_ps(3.3336645365e-01f), _mm512_set1_ps(-5.0000125170e-01f));
    q = _mm512_fmadd_ps(r2, _mm512_set1_ps(-2.4395203590e-01f), q);
    __m512 lo = _mm512_fmadd_ps(q, r2, with_add ? _mm512_add_ps(r, add) : r);
    return _mm512_add_ps(hi, lo);
}
#endif

/* log(a): log(0) = -inf, log(+inf) = +inf, NaN for a < 0 and NaN. */
LK_AI lk_fv lk_f_log(lk_fv a)
{
#if defined(LK_TARGET_AVX512)
    return _mm512_fixupimm_ps(lk__f_log_tab(a, a, 0), a, _mm512_set1_epi32(LK__LOG_FIXUP), 0);
#else
    lk_fv k, m;
    lk__f_frexp(a, &k, &m);
    lk_fv r = lk__f_log_core(k, lk_f_sub(m, lk_f_set(1.0))); /* m - 1 exact */
    return lk__f_log_fixup(r, a);
#endif
}

/* log(a) for a positive, finite and normal, or NaN (which stays NaN): no
 * fixup of the other special arguments, which the caller rules out. */
LK_AI lk_fv lk__f_log_pos(lk_fv a)
{
#if defined(LK_TARGET_AVX512)
    return lk__f_log_tab(a, a, 0);
#else
    return lk_f_log(a);
#endif
}

/* log1p(a) = log(u), u = 1 + a rounded, plus what the rounding dropped:
 * on AVX-512 d = (a - (u - 1)) / u (a reciprocal good to 2^-27: for a near
 * 2^-24, d is as large as the result), added to r of lk__f_log_tab since
 * log1p(r + d) = log1p(r) + d to first order (d is below u's last bit);
 * on AVX2, f = m - 1 plus the rounding error of u, found
 * exactly by two-sum, times 2^-k (2^-k for k <= 126: above, that term is
 * far below the result's last bit). -1 gives -inf, below -1 NaN. */
LK_AI lk_fv lk_f_log1p(lk_fv a)
{
    lk_fv u = lk_f_add(lk_f_set(1.0), a);
#if defined(LK_TARGET_AVX512)
    __m512 d = _mm512_sub_ps(a, _mm512_sub_ps(u, _mm512_set1_ps(1.0f)));
    d = _mm512_mul_ps(d, lk_f_recip_fast(u));
    return _mm512_fixupimm_ps(lk__f_log_tab(u, d, 1), u, _mm512_set1_epi32(LK__LOG_FIXUP), 0);
#else
    lk_fv k, m;
    lk__f_frexp(u, &k, &m);
    __m256 bv = _mm256_sub_ps(u, a), av = _mm256_sub_ps(u, bv);
    __m256 c = _mm256_add_ps(_mm256_sub_ps(a, av), _mm256_sub_ps(_mm256_set1_ps(1.0f), bv));
    __m256i kc = _mm256_min_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(126));
    __m256i kb = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(127), kc), 23);
    __m256 sc = _mm256_castsi256_ps(kb);
    __m256 f = _mm256_fmadd_ps(c, sc, _mm256_sub_ps(m, _mm256_set1_ps(1.0f)));
    return lk__f_log_fixup(lk__f_log_core(k, f), u);
#endif
}
#endif

/* k!, exact in double for k <= 18; folded to a constant when inlined. */
LK_AI double lk__fact(int k)
{
    double f = 1.0;
    for (int j = 2; j <= k; j++)
        f *= j;
    return f;
}

LK_AI lk_dv lk_d_exp_neg(lk_dv a)
{
#if defined(LK_TARGET_PORTABLE)
    return exp(a);
#elif defined(LK_TARGET_AVX512)
    /* x = (16 m + j) log(2) / 16 + r, |r| <= log(2) / 32: exp(x) = 2^m
     * 2^(j/16) exp(r), 2^(j/16) from a 16-entry table in two registers,
     * exp(r) the Taylor series to r^7 (truncation below 3e-18). Below -746
     * the result is 0; max() passes NaN through. */
    const __m512d t0 = _mm512_setr_pd(1.0, 1.0442737824274138, 1.0905077326652577,
                                      1.1387886347566916, 1.189207115002721, 1.241857812073484,
                                      1.2968395546510096, 1.3542555469368927);
    const __m512d t1 = _mm512_setr_pd(1.4142135623730951, 1.4768261459394993, 1.5422108254079407,
                                      1.6104903319492543, 1.681792830507429, 1.7562521603732995,
                                      1.8340080864093424, 1.9152065613971474);
    lk_dv x = lk_d_max(lk_d_set(-746.0), a);
    lk_dv n = lk_d_round(lk_d_mul(x, lk_d_set(16.0 * 1.4426950408889634)));
    lk_dv r = lk_d_fma(n, lk_d_set(-6.93147180369123816490e-01 / 16.0), x);
    r = lk_d_fma(n, lk_d_set(-1.90821492927058770002e-10 / 16.0), r);
    __m512i ni = _mm512_cvtpd_epi64(n);
    __m512d tj = _mm512_permutex2var_pd(t0, _mm512_and_si512(ni, _mm512_set1_epi64(15)), t1);
    lk_dv m = _mm512_cvtepi64_pd(_mm512_srai_epi64(ni, 4));
    lk_dv p = lk_d_set(1.0 / 5040.0);
    p = lk_d_fma(p, r, lk_d_set(1.0 / 720.0));
    p = lk_d_fma(p, r, lk_d_set(1.0 / 120.0));
    p = lk_d_fma(p, r, lk_d_set(1.0 / 24.0));
    p = lk_d_fma(p, r, lk_d_set(1.0 / 6.0));
    p = lk_d_fma(p, r, lk_d_set(0.5));
    p = lk_d_fma(p, lk_d_mul(r, r), r); /* exp(r) - 1 */
    return lk_d_ldexp(lk_d_fma(tj, p, tj), m);
#else
    /* Cody-Waite with fdlibm's split of log 2, and the Taylor series to
     * r^13 on |r| <= log(2) / 2 (truncation below 1e-17 relative), summed
     * by Estrin's scheme for a short dependency chain. Below -746 the
     * result is 0; max() passes NaN through. */
    lk_dv x = lk_d_max(lk_d_set(-746.0), a);
    lk_dv n = lk_d_round(lk_d_mul(x, lk_d_set(1.4426950408889634)));
    lk_dv r = lk_d_fma(n, lk_d_set(-6.93147180369123816490e-01), x);
    r = lk_d_fma(n, lk_d_set(-1.90821492927058770002e-10), r);
    lk_dv r2 = lk_d_mul(r, r), r4 = lk_d_mul(r2, r2), r8 = lk_d_mul(r4, r4);
#define LK__PAIR(k) lk_d_fma(lk_d_set(1.0 / lk__fact(k + 1)), r, lk_d_set(1.0 / lk__fact(k)))
    lk_dv s0 = lk_d_fma(LK__PAIR(2), r2, LK__PAIR(0));
    lk_dv s1 = lk_d_fma(LK__PAIR(6), r2, LK__PAIR(4));
    lk_dv s2 = lk_d_fma(LK__PAIR(10), r2, LK__PAIR(8));
#undef LK__PAIR
    lk_dv s3 = lk_d_fma(lk_d_set(1.0 / 6227020800.0), r, lk_d_set(1.0 / 479001600.0));
    lk_dv p = lk_d_fma(lk_d_fma(s3, r4, s2), r8, lk_d_fma(s1, r4, s0));
    return lk_d_ldexp(p, n);
#endif
}

/* log(u) for u in [1, 2] (NaN stays NaN): fdlibm's reduction and its
 * degree-7 minimax polynomial in s^2, s = f / (2 + f), f = m - 1 with m = u
 * or u / 2 in [0.707, 1.414] (both exact); below 1 ulp. */
LK_AI lk_dv lk_d_log_1to2(lk_dv u)
{
#if defined(LK_TARGET_PORTABLE)
    return log(u);
#else
    lk_dm big = lk_d_gt(u, lk_d_set(1.4142135623730951));
    lk_dv k = lk_d_keep(big, lk_d_set(1.0));
    lk_dv f = lk_d_sub(lk_d_select(big, lk_d_mul(u, lk_d_set(0.5)), u), lk_d_set(1.0));
    lk_dv s = lk_d_div(f, lk_d_add(f, lk_d_set(2.0)));
    lk_dv z = lk_d_mul(s, s), w = lk_d_mul(z, z);
    lk_dv t1 = lk_d_fma(w, lk_d_set(1.531383769920937332e-01), lk_d_set(2.222219843214978396e-01));
    t1 = lk_d_mul(w, lk_d_fma(w, t1, lk_d_set(3.999999999940941908e-01)));
    lk_dv t2 = lk_d_fma(w, lk_d_set(1.479819860511658591e-01), lk_d_set(1.818357216161805012e-01));
    t2 = lk_d_fma(w, t2, lk_d_set(2.857142874366239149e-01));
    t2 = lk_d_mul(z, lk_d_fma(w, t2, lk_d_set(6.666666666666735130e-01)));
    lk_dv hfsq = lk_d_mul(lk_d_set(0.5), lk_d_mul(f, f));
    lk_dv tail = lk_d_fma(s, lk_d_add(hfsq, lk_d_add(t1, t2)), lk_d_mul(k, lk_d_set(1.90821492927058770002e-10)));
    return lk_d_fma(k, lk_d_set(6.93147180369123816490e-01), lk_d_sub(f, lk_d_sub(hfsq, tail)));
#endif
}

LK_AI lk_dv lk_d_exp_minus(lk_dv a)
{
    return lk_d_exp_neg(lk_d_neg(a));
}

LK_AI lk_dv lk_d_exp_minus_fast(lk_dv a, double c)
{
    return lk_d_exp_minus(c == 2.0 ? lk_d_add(a, a) : lk_d_mul(a, lk_d_set(c)));
}

LK_AI lk_dv lk_d_recip_fast(lk_dv a)
{
    return lk_d_div(lk_d_set(1.0), a);
}

/* ======================================================================== */
/* The lanes of this compilation: lk_v, lk_m, LK_W                           */
/* ======================================================================== */

#if defined(LK_LANES_F32)
#define LK_W LK_FW
typedef float lk_s; /* the element type */
typedef lk_fv lk_v;
typedef lk_fm lk_m;
#define LK__OP(op) lk_f_##op
#define LK_PRECISION_NAME "f32"
#else
#define LK_W LK_DW
typedef double lk_s;
typedef lk_dv lk_v;
typedef lk_dm lk_m;
#define LK__OP(op) lk_d_##op
#define LK_PRECISION_NAME "f64"
#endif

#define lk_set       LK__OP(set)
#define lk_zero      LK__OP(zero)
#define lk_first     LK__OP(first)
#define lk_load      LK__OP(load)
#define lk_loadn     LK__OP(loadn)
#define lk_store     LK__OP(store)
#define lk_storen    LK__OP(storen)
#define lk_add       LK__OP(add)
#define lk_sub       LK__OP(sub)
#define lk_mul       LK__OP(mul)
#define lk_div       LK__OP(div)
#define lk_fma       LK__OP(fma)
#define lk_fnma      LK__OP(fnma)
#define lk_fms       LK__OP(fms)
#define lk_min       LK__OP(min)
#define lk_max       LK__OP(max)
#define lk_abs       LK__OP(abs)
#define lk_neg       LK__OP(neg)
/* |a| with the sign bit of s (NaN and zeros included): bit operations only */
#define lk_copysign  LK__OP(copysign)
/* a where s's sign bit is set (s < 0, -0, a NaN with its sign bit), b
 * elsewhere: a select by the bit itself, with no compare */
#define lk_select_neg LK__OP(select_neg)
#define lk_sqrt      LK__OP(sqrt)
/* a rounded to the nearest integer, ties to even (NaN stays NaN) */
#define lk_round     LK__OP(round)
#define lk_lt        LK__OP(lt)
#define lk_le        LK__OP(le)
#define lk_gt        LK__OP(gt)
#define lk_ge        LK__OP(ge)
#define lk_eq        LK__OP(eq)
#define lk_isnan     LK__OP(isnan)
#define lk_select    LK__OP(select)
#define lk_mul_where LK__OP(mul_where)
#define lk_max_where LK__OP(max_where)
#define lk_keep      LK__OP(keep)
#define lk_clear     LK__OP(clear)
#define lk_and       LK__OP(and)
#define lk_or        LK__OP(or)
#define lk_not       LK__OP(not)
#define lk_any       LK__OP(any)
#define lk_stream    LK__OP(stream)
#define lk_shift_in  LK__OP(shift_in)
#define lk_all       LK__OP(all)
#define lk_exp       LK__OP(exp)
#define lk_log       LK__OP(log)
#define lk_log1p     LK__OP(log1p)
#define lk_pow       LK__OP(pow)
#define lk_exp_neg   LK__OP(exp_neg)
#define lk_exp_minus LK__OP(exp_minus)
#define lk_exp_minus_fast LK__OP(exp_minus_fast)
#define lk_log_1to2  LK__OP(log_1to2)
#define lk__recip_fast  LK__OP(recip_fast)

/* ------------------------------------------------------------------------ */
/* Sums in double                                                            */

/* A running double sum of lanes of lk_v. Float lanes are widened, each half
 * into its own double lanes; lk_acc_sum adds the lanes in a fixed order. */
typedef struct lk_acc {
    lk_dv lo, hi;
} lk_acc;

LK_AI lk_acc lk_acc_zero(void)
{
    lk_acc a = {lk_d_zero(), lk_d_zero()};
    return a;
}

LK_AI void lk_acc_add(lk_acc *a, lk_v v)
{
#if defined(LK_LANES_F32)
    a->lo = lk_d_add(a->lo, lk_f_lo(v));
    a->hi = lk_d_add(a->hi, lk_f_hi(v));
#else
    a->lo = lk_d_add(a->lo, v);
#endif
}

LK_AI double lk_acc_sum(lk_acc a)
{
    return lk_d_hsum(lk_d_add(a.lo, a.hi));
}

/* ------------------------------------------------------------------------ */
/* Careful helpers                                                           */

/* c a, except that a zero coefficient gives 0 even where a is infinite: the
 * rule that keeps a zero weight or target from turning inf into NaN. */
LK_AI lk_v lk_mul0(lk_v c, lk_v a)
{
    return lk_clear(lk_eq(c, lk_zero()), lk_mul(c, a));
}

/* a > 0 ? a : 0, with 0 for NaN: max keeps its second operand when either
 * is NaN, and +0 for -0 (an add-pipe operation, where a compare and a
 * select would take a multiply slot). */
LK_AI lk_v lk_pospart(lk_v a)
{
    return lk_max(a, lk_zero());
}

/* 1, -1 or 0 by the sign of a; NaN stays NaN. */
LK_AI lk_v lk_sign(lk_v a)
{
    lk_v s = lk_select(lk_gt(a, lk_zero()), lk_set(1.0), lk_keep(lk_lt(a, lk_zero()), lk_set(-1.0)));
    return lk_select(lk_isnan(a), a, s);
}

/* Lanes outside [0, 1] (NaN is not outside). */
LK_AI lk_m lk_outside01(lk_v t)
{
    return lk_or(lk_lt(t, lk_zero()), lk_gt(t, lk_set(1.0)));
}

/* Whether any lane is outside [0, 1]. On AVX-512 one unsigned compare of
 * the bits screens the vector first: +0 to 1 are the patterns up to 1's,
 * and only -0, negatives and NaN, all rare in targets, go on to the exact
 * test. */
LK_AI int lk_any_outside01(lk_v t)
{
#if defined(LK_TARGET_AVX512) && defined(LK_LANES_F32)
    __mmask16 m = _mm512_cmpgt_epu32_mask(_mm512_castps_si512(t),
                                          _mm512_castps_si512(_mm512_set1_ps(1.0f)));
    if (_kortestz_mask16_u8(m, m))
        return 0;
#elif defined(LK_TARGET_AVX512)
    __mmask8 m = _mm512_cmpgt_epu64_mask(_mm512_castpd_si512(t),
                                         _mm512_castpd_si512(_mm512_set1_pd(1.0)));
    if (_kortestz_mask8_u8(m, m))
        return 0;
#endif
    return lk_any(lk_outside01(t));
}

/* The primitives of a logit x from which every logistic form is built with
 * one exp and one reciprocal: a = |x|, e = exp(-a) in [0, 1], r = 1 / (1 +
 * e) in [1/2, 1]. exp never sees a positive argument, so nothing overflows;
 * x = +-inf gives e = 0, r = 1; NaN gives NaN throughout. */
typedef struct lk_sigm {
    lk_v a, e, r;
    lk_m pos; /* x >= 0 (false for NaN) */
} lk_sigm;

LK_AI lk_sigm lk_sigm_of(lk_v x)
{
    lk_sigm p;
    p.a = lk_abs(x);
    p.e = lk_exp_minus(p.a);
    p.r = lk__recip_fast(lk_add(lk_set(1.0), p.e));
    p.pos = lk_ge(x, lk_zero());
    return p;
}

/* sigmoid(x) and sigmoid(-x): r on the side of the sign, e r on the other,
 * so that neither cancels. */
LK_AI lk_v lk_sigm_p(const lk_sigm *p)
{
    return lk_select(p->pos, p->r, lk_mul(p->e, p->r));
}

LK_AI lk_v lk_sigm_q(const lk_sigm *p)
{
    return lk_select(p->pos, lk_mul(p->e, p->r), p->r);
}

/* d sigmoid / dx = sigmoid(x) sigmoid(-x) = e r^2. */
LK_AI lk_v lk_sigm_dp(const lk_sigm *p)
{
    return lk_mul(lk_mul(p->e, p->r), p->r);
}

/* log1p(e) for e in [0, 1] (NaN stays NaN). Float lanes: e + e^2 Q(e),
 * Q of degree 7 fitted to (log1p(e) - e) / e^2 on [0, 1] (relative error
 * of the whole 3.3e-8 before rounding, about 2 float ulps after): no
 * division, and the leading term e is exact. Double lanes: log(u) of the
 * rounded u = 1 + e (lk_d_log_1to2) plus what the rounding dropped,
 * (e - (u - 1)) / u. */
LK_AI lk_fv lk_f_log1p_unit(lk_fv e)
{
#if defined(LK_TARGET_PORTABLE)
    return log1pf(e);
#else
    lk_fv q = lk_f_fma(lk_f_set(5.3651416674e-03), e, lk_f_set(-3.0067026615e-02));
    q = lk_f_fma(q, e, lk_f_set(7.9206496477e-02));
    q = lk_f_fma(q, e, lk_f_set(-1.3753964007e-01));
    q = lk_f_fma(q, e, lk_f_set(1.9153729081e-01));
    q = lk_f_fma(q, e, lk_f_set(-2.4857182801e-01));
    q = lk_f_fma(q, e, lk_f_set(3.3321323991e-01));
    q = lk_f_fma(q, e, lk_f_set(-4.9999648333e-01));
    return lk_f_fma(lk_f_mul(e, e), q, e);
#endif
}

/* log(u) + (e - (u - 1)) r with u = 1 + e rounded and r = 1 / u. */
LK_AI lk_dv lk__d_log1p_r(lk_dv e, lk_dv r)
{
    lk_dv u = lk_d_add(lk_d_set(1.0), e);
    lk_dv lost = lk_d_sub(e, lk_d_sub(u, lk_d_set(1.0)));
    return lk_d_fma(lost, r, lk_d_log_1to2(u));
}

LK_AI lk_dv lk_d_log1p_unit(lk_dv e)
{
#if defined(LK_TARGET_PORTABLE)
    return log1p(e);
#else
    return lk__d_log1p_r(e, lk_d_div(lk_d_set(1.0), lk_d_add(lk_d_set(1.0), e)));
#endif
}

#define lk_log1p_unit LK__OP(log1p_unit)

/* log1p(e) = softplus(-|x|); double lanes reuse r = 1 / (1 + e). */
LK_AI lk_v lk_sigm_log1p(const lk_sigm *p)
{
#if defined(LK_LANES_F32) || defined(LK_TARGET_PORTABLE)
    return lk_log1p_unit(p->e);
#else
    return lk__d_log1p_r(p->e, p->r);
#endif
}

/* softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(e); and log sigmoid(x)
 * = -softplus(-x). L is lk_sigm_log1p of x's primitives. */
LK_AI lk_v lk_softplus_of(lk_v x, lk_v L)
{
    return lk_add(lk_pospart(x), L);
}

LK_AI lk_v lk_log_sigmoid_of(lk_v x, lk_v L)
{
    return lk_neg(lk_add(lk_pospart(lk_neg(x)), L));
}

LK_AI lk_v lk_v_softplus(lk_v x)
{
    lk_sigm p = lk_sigm_of(x);
    return lk_softplus_of(x, lk_sigm_log1p(&p));
}

LK_AI lk_v lk_v_sigmoid(lk_v x)
{
    lk_sigm p = lk_sigm_of(x);
    return lk_sigm_p(&p);
}

/* sigmoid(x) - t written as (1 - t) sigmoid(x) - t sigmoid(-x): for a
 * target of 0 or 1 nothing cancels (sigmoid(x) - 1 at x = 4 would keep only
 * the last bits of a float sigmoid). */
LK_AI lk_v lk_sigm_minus_t(const lk_sigm *p, lk_v t)
{
    return lk_sub(lk_mul(lk_sub(lk_set(1.0), t), lk_sigm_p(p)), lk_mul(t, lk_sigm_q(p)));
}

/* Binary cross-entropy from a logit, with positive-class weight pw:
 *   (1 - t) x + lw softplus(-x),  lw = 1 + (pw - 1) t,
 * per sign of x so that nothing cancels and x = +-inf gives 0 (the target
 * agrees) or +inf, never NaN:
 *   x >= 0:  (1 - t) |x| + lw L,     x < 0:  pw t |x| + lw L. */
LK_AI lk_v lk_bce_logits_of(const lk_sigm *p, lk_v L, lk_v t, lk_v pw)
{
    lk_v lw = lk_fma(lk_sub(pw, lk_set(1.0)), t, lk_set(1.0));
    lk_v c = lk_select(p->pos, lk_sub(lk_set(1.0), t), lk_mul(pw, t));
    return lk_add(lk_mul0(c, p->a), lk_mul(lw, L));
}

/* The same with pos_weight 1: (1 - t) |x| or t |x| by the sign, plus L. */
LK_AI lk_v lk_bce_logits_of1(const lk_sigm *p, lk_v L, lk_v t)
{
    lk_v c = lk_select(p->pos, lk_sub(lk_set(1.0), t), t);
    return lk_add(lk_mul0(c, p->a), L);
}

/* d bce / dx = lw sigmoid(x) - pw t = (1 - t) sigmoid(x) - pw t sigmoid(-x). */
LK_AI lk_v lk_bce_logits_grad(const lk_sigm *p, lk_v t, lk_v pw)
{
    return lk_sub(lk_mul(lk_sub(lk_set(1.0), t), lk_sigm_p(p)), lk_mul(lk_mul(pw, t), lk_sigm_q(p)));
}

/* q^g for a constant exponent g >= 0, with the common exponents exact. */
LK_AI lk_v lk_powc(lk_v q, double g)
{
    if (g == 0.0)
        return lk_set(1.0);
    if (g == 1.0)
        return q;
    if (g == 2.0)
        return lk_mul(q, q);
    return lk_pow(q, lk_set(g));
}

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_LANES_H */
