/* simd_f32_mc.h: dice in mode "multiclass" in float32 lanes, part of the
 * body of simd_f32.h (included after its lane layer, so compiled twice with
 * it), for blocks with float32 logits and int64 class indices or float32
 * targets.
 *
 * The layout is simd_avx2.c's: lanes run along the spatial positions of one
 * sample (contiguous in every class plane), a group is one vector of them, a
 * chunk up to MCF_GROUPS groups of the same sample. Per chunk: the targets,
 * the max over classes, every exp (class by class, the groups back to back,
 * so that the libmvec calls overlap), then per class the chunk's statistics
 * or gradients. The per-element math (exp, p = e / z, g_c, the gradient)
 * runs in float32; every sum is double: the softmax denominator, the
 * Jacobian's sum over classes, and I_c, P_c and the T_c of float targets,
 * widened vector by vector, summed over the chunk in registers and added
 * once per chunk to per-lane double sums in the work array. The T_c of
 * class indices is a count of positions, exact as an integer and as a
 * double alike.
 *
 * multiclass.c's rules hold unchanged: the max is subtracted before exp,
 * ignored positions count nowhere and get a zero gradient whatever their
 * logits, bad class indices and targets outside [0, 1] fail with the
 * portable path's messages, naming the first bad position of the block. */
#ifndef LOSSKIT_TUTORIAL_SIMD_F32_MC_H
#define LOSSKIT_TUTORIAL_SIMD_F32_MC_H

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Class-index lanes: W int64 indices become W int32 class numbers           */

/* clang-format off */
#if F32_AVX512
typedef __m512i vi;     /* sixteen int32 class numbers */
AI vf fmaxv(vf a, vf b) { return _mm512_max_ps(a, b); }
AI vdd dload(const double *p) { return _mm512_loadu_pd(p); }
AI int mcount(vm m) { return __builtin_popcount(m); }
AI vdd ddiv(vdd a, vdd b) { return _mm512_div_pd(a, b); }
/* m ? a : b and a where not m, else 0, on half h (0 low, 1 high) of m. */
AI vdd dsel_half(vm m, int h, vdd a, vdd b) { return _mm512_mask_blend_pd((__mmask8)(m >> (8 * h)), b, a); }
AI vdd dclear_half(vm m, int h, vdd a) { return _mm512_maskz_mov_pd((__mmask8)~(m >> (8 * h)), a); }
/* The float vector of the doubles lo, then hi. */
AI vf fnarrow(vdd lo, vdd hi)
{
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}
/* Eight int64 from p, lanes from k on 0 and never read. */
AI __m512i iload8(const int64_t *p, int k)
{
    if (k >= 8) return _mm512_loadu_si512(p);
    return _mm512_maskz_loadu_epi64((__mmask8)(k <= 0 ? 0u : (1u << k) - 1u), p);
}
/* The first k <= W class indices from p: the lanes that count (neither
 * padding nor ignore_index), in *bad those of them out of [0, classes), in
 * *cls each counting lane's class and -1 elsewhere. */
AI vm mcf_indices(const int64_t *p, int k, int64_t ignore, int64_t classes, vi *cls, vm *bad)
{
    __m512i lo = iload8(p, k), hi = iload8(p + 8, k - 8);
    __m512i ig = _mm512_set1_epi64(ignore), top = _mm512_set1_epi64(classes);
    __m512i zero = _mm512_setzero_si512();
    vm ign = (vm)(_mm512_cmpeq_epi64_mask(lo, ig) | (_mm512_cmpeq_epi64_mask(hi, ig) << 8));
    vm out = (vm)((_mm512_cmplt_epi64_mask(lo, zero) | _mm512_cmpge_epi64_mask(lo, top)) |
                  ((_mm512_cmplt_epi64_mask(hi, zero) | _mm512_cmpge_epi64_mask(hi, top)) << 8));
    vm live = (vm)(mlanes(k) & ~ign);
    *bad = (vm)(live & out);
    __m512i y = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)),
                                   _mm512_cvtepi64_epi32(hi), 1);
    *cls = _mm512_mask_mov_epi32(_mm512_set1_epi32(-1), live, y);
    return live;
}
AI vm mcf_hit(vi cls, int64_t c) { return _mm512_cmpeq_epi32_mask(cls, _mm512_set1_epi32((int)c)); }
#else
typedef __m256i vi;     /* eight int32 class numbers */
AI vf fmaxv(vf a, vf b) { return _mm256_max_ps(a, b); }
AI vdd dload(const double *p) { return _mm256_loadu_pd(p); }
AI int mcount(vm m) { return __builtin_popcount((unsigned)_mm256_movemask_ps(m)); }
AI vdd ddiv(vdd a, vdd b) { return _mm256_div_pd(a, b); }
AI vdd dmask_half(vm m, int h)
{
    __m128 q = h ? _mm256_extractf128_ps(m, 1) : _mm256_castps256_ps128(m);
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_castps_si128(q)));
}
AI vdd dsel_half(vm m, int h, vdd a, vdd b) { return _mm256_blendv_pd(b, a, dmask_half(m, h)); }
AI vdd dclear_half(vm m, int h, vdd a) { return _mm256_andnot_pd(dmask_half(m, h), a); }
AI vf fnarrow(vdd lo, vdd hi)
{
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
}
AI __m256i iload4(const int64_t *p, int k)
{
    if (k >= 4) return _mm256_loadu_si256((const __m256i *)p);
    __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(k), _mm256_setr_epi64x(0, 1, 2, 3));
    return _mm256_maskload_epi64((const long long *)p, m);
}
/* The low halves of the int64 lanes of a, then of b. */
AI __m256i inarrow(__m256i a, __m256i b)
{
    __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m128i lo = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(a, idx));
    __m128i hi = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(b, idx));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}
AI __m256i ioutside(__m256i y, __m256i top)
{
    return _mm256_or_si256(_mm256_cmpgt_epi64(_mm256_setzero_si256(), y), _mm256_cmpgt_epi64(y, top));
}
AI vm mcf_indices(const int64_t *p, int k, int64_t ignore, int64_t classes, vi *cls, vm *bad)
{
    __m256i lo = iload4(p, k), hi = iload4(p + 4, k - 4);
    __m256i ig = _mm256_set1_epi64x(ignore), top = _mm256_set1_epi64x(classes - 1);
    vm ign = _mm256_castsi256_ps(inarrow(_mm256_cmpeq_epi64(lo, ig), _mm256_cmpeq_epi64(hi, ig)));
    vm out = _mm256_castsi256_ps(inarrow(ioutside(lo, top), ioutside(hi, top)));
    vm live = _mm256_andnot_ps(ign, mlanes(k));
    *bad = _mm256_and_ps(live, out);
    *cls = _mm256_blendv_epi8(_mm256_set1_epi32(-1), inarrow(lo, hi), _mm256_castps_si256(live));
    return live;
}
AI vm mcf_hit(vi cls, int64_t c)
{
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(cls, _mm256_set1_epi32((int)c)));
}
#endif
/* clang-format on */

/* A float vector's worth of doubles, as dacc holds them. */
AI dacc dwiden(vf a)
{
    dacc r = {dlo(a), dhi(a)};
    return r;
}

AI dacc dd1(double a)
{
    dacc r = {d1(a), d1(a)};
    return r;
}

AI dacc ddadd(dacc a, dacc b)
{
    dacc r = {dadd(a.lo, b.lo), dadd(a.hi, b.hi)};
    return r;
}

AI dacc ddsub(dacc a, dacc b)
{
    dacc r = {dsub(a.lo, b.lo), dsub(a.hi, b.hi)};
    return r;
}

AI dacc ddmul(dacc a, dacc b)
{
    dacc r = {dmul(a.lo, b.lo), dmul(a.hi, b.hi)};
    return r;
}

AI dacc dddiv(dacc a, dacc b)
{
    dacc r = {ddiv(a.lo, b.lo), ddiv(a.hi, b.hi)};
    return r;
}

AI dacc ddsel(vm m, dacc a, dacc b)
{
    dacc r = {dsel_half(m, 0, a.lo, b.lo), dsel_half(m, 1, a.hi, b.hi)};
    return r;
}

AI dacc ddclear(vm m, dacc a)
{
    dacc r = {dclear_half(m, 0, a.lo), dclear_half(m, 1, a.hi)};
    return r;
}

AI vf ddnarrow(dacc a)
{
    return fnarrow(a.lo, a.hi);
}

/* ------------------------------------------------------------------------ */
/* Work space                                                                */

#define MCF_GROUPS 4
#define MCF_P      (W * MCF_GROUPS) /* positions of a full chunk */
#define MCF_STACK  32               /* classes whose work array lives on the stack */

typedef struct fmc {
    const tut_inst *in;
    const float *x;
    const void *t; /* int64 class indices or float32 targets */
    int64_t classes, spatial;
    float *ex;               /* MCF_P C: exp, class-major then group */
    double *acc;             /* forward: W lane sums of each I_c, P_c, T_c; backward: k1, k2 */
    const double *kd1, *kd2; /* backward: k1 - ref and k2 per class */
    float *k1, *k12;         /* backward: k1 - ref and k1 - k2 - ref in float */
    double *heap;
    double stack[(3 * W + MCF_P / 2) * MCF_STACK];
} fmc;

static lk_status mcf_init(fmc *m, const tut_inst *in, const lk_plan *plan, const lk_block *blk,
                          lk_msg *msg)
{
    m->in = in;
    m->x = blk->slots[0].data;
    m->t = blk->slots[1].data;
    m->classes = plan->aux[TUT_MC_CLASSES];
    m->spatial = plan->aux[TUT_MC_SPATIAL];
    m->heap = NULL;
    double *base = m->stack;
    size_t acc = 3 * W * (size_t)m->classes;
    if (m->classes > MCF_STACK) {
        m->heap = malloc((acc + MCF_P / 2 * (size_t)m->classes) * sizeof(double));
        if (!m->heap)
            return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld classes",
                           (long long)m->classes);
        base = m->heap;
    }
    m->acc = base;
    m->ex = (float *)(base + acc);
    m->kd1 = base;
    m->kd2 = base + m->classes;
    m->k1 = (float *)(base + 2 * m->classes);
    m->k12 = m->k1 + m->classes;
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Targets                                                                   */

/* The float targets of class c in group g (padding 0). */
AI vf mcf_target(const fmc *m, int64_t c, int64_t base, int n, int g)
{
    return fload((const float *)m->t + base + W * g + c * m->spatial, lanes_of(n, g), 0.0f);
}

/* The lanes of each group that count and, for class indices, each lane's
 * class; fails, when check is set, on a class index or target out of
 * range. ft: float targets. */
AI lk_status mcf_chunk_targets(const fmc *m, int ft, int64_t pos, int64_t base, int n, int ng,
                               vi *cls, vm *live, int check, lk_msg *msg)
{
    vm bad = mnone();
    for (int g = 0; g < ng; g++) {
        int k = lanes_of(n, g);
        if (ft) {
            live[g] = mlanes(k);
            for (int64_t c = 0; check && c < m->classes; c++)
                bad = mor(bad, foutside01(mcf_target(m, c, base, n, g)));
        } else {
            vm b;
            live[g] = mcf_indices((const int64_t *)m->t + pos + W * g, k, m->in->ignore_index,
                                  m->classes, &cls[g], &b);
            bad = mor(bad, b);
        }
    }
    if (!check || !many(bad))
        return LK_OK;
    return ft ? tut_mc_first_bad_target(m->t, 1, base, n, m->classes, m->spatial, msg)
              : tut_mc_first_bad_index(m->t, pos, n, m->classes, m->in->ignore_index, msg);
}

/* ------------------------------------------------------------------------ */
/* Softmax                                                                   */

/* m->ex holds exp(x - max) per class and group, r[g] the reciprocal of each
 * group's sum, summed in double. With am (backward) also, per group, the
 * first class holding the max (where a logit is NaN or +inf, p is NaN and
 * am does not matter). */
AI void mcf_softmax(fmc *m, int64_t base, int n, int ng, vf *r, vf *am)
{
    int64_t classes = m->classes, spatial = m->spatial;
    const float *x = m->x + base;
    vf mx[MCF_GROUPS];
    dacc z[MCF_GROUPS];
    for (int g = 0; g < ng; g++) {
        mx[g] = fload(x + W * g, lanes_of(n, g), 0.0f);
        z[g] = dacc_zero();
        if (am)
            am[g] = fzero();
    }
    for (int64_t c = 1; c < classes; c++)
        for (int g = 0; g < ng; g++) {
            vf xc = fload(x + W * g + c * spatial, lanes_of(n, g), 0.0f);
            if (am)
                am[g] = fsel(FCMP(xc, mx[g], _CMP_GT_OQ), f1((float)c), am[g]);
            mx[g] = fmaxv(mx[g], xc);
        }
    /* The calls clobber every vector register: this loop keeps nothing
     * else live across them, the sums follow in the next. */
    for (int64_t c = 0; c < classes; c++)
        for (int g = 0; g < ng; g++) {
            vf d = fsub(fload(x + W * g + c * spatial, lanes_of(n, g), 0.0f), mx[g]);
            fstore(m->ex + W * (MCF_GROUPS * c + g), W, vexpf(d));
        }
    for (int64_t c = 0; c < classes; c++)
        for (int g = 0; g < ng; g++)
            dacc_add(&z[g], fload(m->ex + W * (MCF_GROUPS * c + g), W, 0.0f));
    for (int g = 0; g < ng; g++)
        r[g] = ddnarrow(dddiv(dd1(1.0), z[g]));
}

AI vf mcf_p(const fmc *m, const vf *r, int64_t c, int g)
{
    return fmul(fload(m->ex + W * (MCF_GROUPS * c + g), W, 0.0f), r[g]);
}

/* ------------------------------------------------------------------------ */
/* Forward: per-lane sums of I_c, P_c, T_c                                   */

AI void mcf_acc_add(double *a, dacc s)
{
    dstore(a, dadd(dload(a), s.lo));
    dstore(a + DW, dadd(dload(a + DW), s.hi));
}

AI lk_status mcf_forward_chunk(fmc *m, int ft, int64_t pos, int64_t base, int n, lk_msg *msg)
{
    int ng = (n + W - 1) / W;
    vi cls[MCF_GROUPS];
    vm live[MCF_GROUPS];
    vf r[MCF_GROUPS];
    lk_status st = mcf_chunk_targets(m, ft, pos, base, n, ng, cls, live, 1, msg);
    if (st != LK_OK)
        return st;
    mcf_softmax(m, base, n, ng, r, NULL);
    int64_t classes = m->classes;
    for (int64_t c = 0; c < classes; c++) {
        dacc si = dacc_zero(), sp = dacc_zero(), stt = dacc_zero();
        int count = 0;
        for (int g = 0; g < ng; g++) {
            vf p = fkeep(live[g], mcf_p(m, r, c, g));
            if (ft) {
                vf t = mcf_target(m, c, base, n, g);
                dacc_add(&si, fmul(p, t));
                dacc_add(&stt, t);
            } else {
                vm hit = mcf_hit(cls[g], c);
                dacc_add(&si, fkeep(hit, p));
                count += mcount(hit);
            }
            dacc_add(&sp, p);
        }
        mcf_acc_add(m->acc + W * c, si);
        mcf_acc_add(m->acc + W * (classes + c), sp);
        if (ft)
            mcf_acc_add(m->acc + W * (2 * classes + c), stt);
        else
            m->acc[W * (2 * classes + c)] += (double)count;
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Backward: p_c (g_c - sum_k p_k g_k), g_c = k1[c] - t_c k2[c]              */
/*
 * The Jacobian term g_c - sum_k p_k g_k is formed as
 *   (g_c - g_m) + sum_{k != m} p_k (g_m - g_k)
 *     = (g_c - g_m) + (g_m sum_{k != m} p_k - sum_{k != m} p_k g_k),
 * m the class of the max, and with every g shifted by one constant ref.
 * Both are exact rewritings (sum_k p_k = 1); the plain form, where p_m is
 * near 1 or g varies little across the classes, keeps only the last bits of
 * float32 terms and would miss the double kernels by far more than float32
 * rounding. The sums are taken in double from the same float32 p_k, so that
 * they cancel exactly where the g_k agree. For class indices g_c takes two
 * values per class, rounded once from double, and the rest runs in float32;
 * for float targets g_c itself varies, and its float32 rounding alone would
 * show through the cancellation, so their Jacobian term runs in double.
 */

/* g_c - ref of group g for class indices: k1[c] - ref or k1[c] - k2[c] -
 * ref. */
AI vf mcf_g(const fmc *m, const vi *cls, int64_t c, int g)
{
    return fsel(mcf_hit(cls[g], c), f1(m->k12[c]), f1(m->k1[c]));
}

/* g_c - ref of group g for float targets, in double. */
AI dacc mcf_gd(const fmc *m, int64_t c, int64_t base, int n, int g)
{
    return ddsub(dd1(m->kd1[c]), ddmul(dwiden(mcf_target(m, c, base, n, g)), dd1(m->kd2[c])));
}

/* Stores (or adds) grad_scale d, d = p_c (g_c - sum_k p_k g_k), on the
 * lanes that count, 0 on the others. */
AI void mcf_store(float *at, int k, vm live, vf scale, int accumulate, vf d)
{
    d = fkeep(live, fmul(scale, d));
    if (accumulate)
        d = fadd(fload(at, k, 0.0f), d);
    fstore(at, k, d);
}

AI void mcf_backward_chunk(fmc *m, int ft, const lk_block *blk, int64_t pos, int64_t base, int n)
{
    int ng = (n + W - 1) / W;
    vi cls[MCF_GROUPS];
    vm live[MCF_GROUPS];
    vf r[MCF_GROUPS], am[MCF_GROUPS], gm[MCF_GROUPS], rest[MCF_GROUPS];
    dacc sp[MCF_GROUPS], gmd[MCF_GROUPS], sum[MCF_GROUPS];
    mcf_chunk_targets(m, ft, pos, base, n, ng, cls, live, 0, NULL);
    mcf_softmax(m, base, n, ng, r, am);
    int64_t classes = m->classes;
    for (int g = 0; g < ng; g++) {
        gm[g] = fzero();
        sp[g] = gmd[g] = sum[g] = dacc_zero();
    }
    for (int64_t c = 0; c < classes; c++)
        for (int g = 0; g < ng; g++) {
            vm is_m = feq(am[g], (float)c);
            vf p = mcf_p(m, r, c, g);
            dacc_add(&sp[g], fclear(is_m, p));
            if (ft) {
                dacc gc = mcf_gd(m, c, base, n, g);
                gmd[g] = ddsel(is_m, gc, gmd[g]);
                sum[g] = ddadd(sum[g], ddclear(is_m, ddmul(dwiden(p), gc)));
            } else {
                vf gc = mcf_g(m, cls, c, g);
                gm[g] = fsel(is_m, gc, gm[g]);
                sum[g] = ddadd(sum[g], ddclear(is_m, ddmul(dwiden(p), dwiden(gc))));
            }
        }
    for (int g = 0; g < ng; g++) {
        if (!ft)
            gmd[g] = dwiden(gm[g]);
        sum[g] = ddsub(ddmul(gmd[g], sp[g]), sum[g]);
        rest[g] = ddnarrow(sum[g]);
    }
    float *gp = (float *)blk->grads[0].data + base;
    vf scale = f1((float)blk->grad_scale);
    int accumulate = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    for (int64_t c = 0; c < classes; c++)
        for (int g = 0; g < ng; g++) {
            float *at = gp + W * g + c * m->spatial;
            vf d;
            if (ft) {
                dacc jac = ddadd(ddsub(mcf_gd(m, c, base, n, g), gmd[g]), sum[g]);
                d = ddnarrow(ddmul(dwiden(mcf_p(m, r, c, g)), jac));
            } else {
                d = fmul(mcf_p(m, r, c, g), fadd(fsub(mcf_g(m, cls, c, g), gm[g]), rest[g]));
            }
            mcf_store(at, lanes_of(n, g), live[g], scale, accumulate, d);
        }
}

/* ------------------------------------------------------------------------ */
/* Blocks                                                                    */

/* Prefetches, MCF_AHEAD chunks ahead, every class plane of the logits, of
 * float targets and, in backward, of the gradient (for writing), and the
 * class indices. The planes lie spatial apart: as many streams as classes,
 * more than the hardware prefetchers follow, and a miss in each would stall
 * every chunk. The addresses may lie past the tensors; a prefetch never
 * faults. */
#define MCF_AHEAD 4
#define MCF_LINE  64 /* bytes */

AI void mcf_prefetch(const fmc *m, const lk_block *blk, int backward, int ft, int64_t pos,
                     int64_t base)
{
    uintptr_t off = (uintptr_t)(base + MCF_AHEAD * MCF_P) * sizeof(float);
    uintptr_t x = (uintptr_t)m->x + off, t = (uintptr_t)m->t + off;
    uintptr_t g = backward ? (uintptr_t)blk->grads[0].data + off : 0;
    uintptr_t plane = (uintptr_t)m->spatial * sizeof(float);
    for (int64_t c = 0; c < m->classes; c++)
        for (uintptr_t l = 0; l < MCF_P * sizeof(float); l += MCF_LINE) {
            uintptr_t at = (uintptr_t)c * plane + l;
            __builtin_prefetch((const void *)(x + at), 0);
            if (ft)
                __builtin_prefetch((const void *)(t + at), 0);
            if (backward)
                __builtin_prefetch((const void *)(g + at), 1);
        }
    if (!ft) {
        uintptr_t y = (uintptr_t)m->t + (uintptr_t)(pos + MCF_AHEAD * MCF_P) * sizeof(int64_t);
        for (uintptr_t l = 0; l < MCF_P * sizeof(int64_t); l += MCF_LINE)
            __builtin_prefetch((const void *)(y + l), 0);
    }
}

/* Each sample's run of positions in the block, in full chunks (n constant,
 * so the loads and stores need no masks) and one ragged chunk. */
AI lk_status mcf_loop(fmc *m, const lk_block *blk, int backward, int ft, lk_msg *msg)
{
    int64_t classes = m->classes, spatial = m->spatial;
    lk_status st = LK_OK;
    for (int64_t pos = blk->begin; st == LK_OK && pos < blk->end;) {
        int64_t s = pos % spatial;
        int64_t run = spatial - s < blk->end - pos ? spatial - s : blk->end - pos;
        int64_t base = pos / spatial * classes * spatial + s, j = 0;
        for (; st == LK_OK && j + MCF_P <= run; j += MCF_P) {
            mcf_prefetch(m, blk, backward, ft, pos + j, base + j);
            if (backward)
                mcf_backward_chunk(m, ft, blk, pos + j, base + j, MCF_P);
            else
                st = mcf_forward_chunk(m, ft, pos + j, base + j, MCF_P, msg);
        }
        if (st == LK_OK && j < run) {
            if (backward)
                mcf_backward_chunk(m, ft, blk, pos + j, base + j, (int)(run - j));
            else
                st = mcf_forward_chunk(m, ft, pos + j, base + j, (int)(run - j), msg);
        }
        pos += run;
    }
    return st;
}

static lk_status mcf_forward_indices(fmc *m, const lk_block *blk, lk_msg *msg)
{
    return mcf_loop(m, blk, 0, 0, msg);
}

static lk_status mcf_forward_floats(fmc *m, const lk_block *blk, lk_msg *msg)
{
    return mcf_loop(m, blk, 0, 1, msg);
}

static void mcf_backward_indices(fmc *m, const lk_block *blk)
{
    mcf_loop(m, blk, 1, 0, NULL);
}

static void mcf_backward_floats(fmc *m, const lk_block *blk)
{
    mcf_loop(m, blk, 1, 1, NULL);
}

static lk_status f32_mc_forward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                                lk_msg *msg)
{
    fmc m;
    lk_status st = mcf_init(&m, inst, plan, blk, msg);
    if (st != LK_OK)
        return st;
    memset(m.acc, 0, 3 * W * (size_t)m.classes * sizeof(double));
    st = plan->aux[TUT_MC_FLOAT_TARGET] ? mcf_forward_floats(&m, blk, msg)
                                        : mcf_forward_indices(&m, blk, msg);
    if (st == LK_OK)
        for (int64_t s = 0; s < 3 * m.classes; s++) {
            dacc a = {dload(m.acc + W * s), dload(m.acc + W * s + DW)};
            blk->stats[s] += dacc_sum(a, dacc_zero());
        }
    free(m.heap);
    return st;
}

static lk_status f32_mc_backward(const tut_inst *inst, const lk_plan *plan, const lk_block *blk,
                                 lk_msg *msg)
{
    fmc m;
    lk_status st = mcf_init(&m, inst, plan, blk, msg);
    if (st != LK_OK)
        return st;
    double *k1 = m.acc, *k2 = m.acc + m.classes, lo = HUGE_VAL, hi = -HUGE_VAL;
    tut_mc_coeffs(inst->smooth, m.classes, blk->global, k1, k2);
    for (int64_t c = 0; c < m.classes; c++) {
        lo = k1[c] < lo ? k1[c] : lo;
        hi = k1[c] > hi ? k1[c] : hi;
    }
    double ref = 0.5 * (lo + hi);
    for (int64_t c = 0; c < m.classes; c++) {
        k1[c] -= ref;
        m.k1[c] = (float)k1[c];
        m.k12[c] = (float)(k1[c] - k2[c]);
    }
    if (plan->aux[TUT_MC_FLOAT_TARGET])
        mcf_backward_floats(&m, blk);
    else
        mcf_backward_indices(&m, blk);
    free(m.heap);
    return LK_OK;
}

#endif
