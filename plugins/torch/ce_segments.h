/* ce_segments.h: the part of the cross-entropy kernels that walks a segment
 * (ce_kernels.h) in chunks: whole vectors first, then the tail; short rows
 * packed into buffers or read in place. It is shared by both kernel bodies,
 * ce_body.h (double lanes) and ce_body_f32.h (float lanes), and included by
 * them after their chunk kernels. A body provides:
 *
 *   CE_W, CE_P, CE_EVEC   lanes per vector, positions per chunk at most,
 *                         vectors of exp values a backward chunk keeps;
 *   ce_ctx, ctx_at()      a chunk's context (ce_body.h describes it);
 *   ce_ev                 the vector type of the exp values kept;
 *   ce_facc, facc_open(), facc_close()
 *                         the forward accumulators, loaded from and stored
 *                         back to the block's double acc[CE_ACC];
 *   fwd_index_chunk, fwd_prob_chunk, bwd_index_chunk, bwd_prob_chunk. */
#ifndef LOSSKIT_TORCH_CE_SEGMENTS_H
#define LOSSKIT_TORCH_CE_SEGMENTS_H

/* A stack buffer of CE_PACK elements (ce_kernels.h) of either float type. */
typedef union ce_pack {
    float f[CE_PACK];
    double d[CE_PACK];
} ce_pack;

/* ------------------------------------------------------------------------ */
/* Segments: CONT chunks, then the rest lane by lane                         */

/* Positions per chunk: CE_P, fewer when C is large so that a backward chunk
 * keeps its exp values (C x chunk <= cf->evec vectors); but when that would
 * leave fewer than CE_KEEP_MIN positions, CE_P again, and backward computes
 * each exp twice: runs of a few positions per class cost more than the
 * exps. */
#define CE_KEEP_MIN 16
CE_INLINE int64_t chunk_len(const ce_cfg *cf)
{
    int64_t n = cf->evec / cf->classes * CE_W;
    return n < CE_KEEP_MIN ? CE_P : n > CE_P ? CE_P : n;
}

#define CE_SEGMENT_LOOP(CHUNK, ...)                                                                \
    do {                                                                                           \
        int64_t j = 0, n = sg->n, len = chunk_len(cf);                                             \
        if (sg->ps == 1 && cf->contiguous) {                                                       \
            int64_t full = n / CE_W * CE_W;                                                        \
            while (j < full) {                                                                     \
                ce_ctx k = ctx_at(cf, sg, j, full - j < len ? full - j : len);                     \
                CHUNK(&k, __VA_ARGS__, 1);                                                         \
                j += k.n;                                                                          \
            }                                                                                      \
        }                                                                                          \
        while (j < n) {                                                                            \
            ce_ctx k = ctx_at(cf, sg, j, n - j < len ? n - j : len);                               \
            CHUNK(&k, __VA_ARGS__, 0);                                                             \
            j += k.n;                                                                              \
        }                                                                                          \
    } while (0)

CE_INLINE void fwd_run(const ce_cfg *cf, const ce_seg *sg, ce_facc *a, const int F32, const int T32,
                       const int PROB)
{
    if (PROB)
        CE_SEGMENT_LOOP(fwd_prob_chunk, a, F32, T32);
    else
        CE_SEGMENT_LOOP(fwd_index_chunk, a, F32, T32);
}

CE_INLINE void bwd_run(const ce_cfg *cf, const ce_seg *sg, ce_ev *e, const int F32, const int T32,
                       const int PROB)
{
    if (PROB)
        CE_SEGMENT_LOOP(bwd_prob_chunk, e, F32, T32);
    else
        CE_SEGMENT_LOOP(bwd_index_chunk, e, F32, T32);
}

/* ------------------------------------------------------------------------ */
/* Short rows                                                                */

/* Segments across short rows (s0 >= 0) are packed: a chunk's logits (and
 * probability targets, and the gradient) are copied class-major into
 * buffers, run through the chunk kernels as one CONT run, and the gradient
 * copied back. The copies read and write the tensors in order; the values,
 * and so every result, are the same as read in place. The buffers are on the
 * stack (CE_PACK elements each) or, for more classes, in cf->work; classes
 * that fit neither are read in place, row by row. */

/* Buffers of cap elements each: float or double as the tensor packed. */
typedef struct ce_bufs {
    void *x, *t, *g;
    ce_ev *e;     /* exp values of a backward chunk */
    int64_t cap;  /* elements per buffer */
    int64_t evec; /* vectors of e */
} ce_bufs;

/* Copies the C classes of positions [j0, j0 + n) between the tensor at t
 * (laid out like x, from the row of the segment's first position) and the
 * buffer b, b[c * P + j]; to the tensor with unpack. */
CE_INLINE void pack_rows(const ce_seg *sg, int64_t C, const void *t, void *b, int64_t j0, int64_t n,
                         int64_t P, const int F32, const int UNPACK)
{
    const int64_t S = sg->S;
    int64_t q = sg->s0 + j0, row = q / S, s = q - row * S;
    for (int64_t j = 0; j < n; j++) {
        int64_t o = row * C * S + s;
        for (int64_t c = 0; c < C; c++) {
            if (F32) {
                float *p = (float *)t + o + c * S, *d = (float *)b + c * P + j;
                if (UNPACK)
                    *p = *d;
                else
                    *d = *p;
            } else {
                double *p = (double *)t + o + c * S, *d = (double *)b + c * P + j;
                if (UNPACK)
                    *p = *d;
                else
                    *d = *p;
            }
        }
        if (++s == S)
            s = 0, row++;
    }
}

/* Positions per packed chunk: cap / C, a multiple of CE_W, CE_P at most. */
CE_INLINE int64_t pack_len(int64_t classes, int64_t cap)
{
    int64_t n = cap / classes / CE_W * CE_W;
    return n > CE_P ? CE_P : n;
}

/* The packed segment of positions [j0, j0 + n) of sg. */
CE_INLINE ce_seg packed_seg(const ce_seg *sg, const ce_bufs *b, int64_t j0, int64_t n, int64_t P,
                            const int F32, const int T32, const int PROB)
{
    ce_seg p = {
        .x = b->x,
        .t = PROB ? (const void *)b->t : (const char *)sg->t + j0 * (T32 ? 4 : 8),
        .g = b->g,
        .out = sg->out ? (char *)sg->out + j0 * (F32 ? 4 : 8) : NULL,
        .n = n,
        .cs = P,
        .ps = 1,
        .s0 = -1,
        .S = P,
    };
    return p;
}

/* Runs a segment across short rows through its packed chunks; with BWD the
 * gradient too. */
CE_INLINE void run_packed(const ce_cfg *cf, const ce_seg *sg, const ce_bufs *b, ce_facc *a,
                          const int BWD, const int F32, const int T32, const int PROB)
{
    const int64_t C = cf->classes, P = pack_len(C, b->cap);
    ce_cfg pc = *cf;
    pc.contiguous = 1;
    pc.evec = b->evec;
    for (int64_t j0 = 0; j0 < sg->n; j0 += P) {
        int64_t n = sg->n - j0 < P ? sg->n - j0 : P;
        pack_rows(sg, C, sg->x, b->x, j0, n, P, F32, 0);
        if (PROB)
            pack_rows(sg, C, sg->t, b->t, j0, n, P, T32, 0);
        if (BWD && cf->accumulate)
            pack_rows(sg, C, sg->g, b->g, j0, n, P, F32, 0);
        ce_seg p = packed_seg(sg, b, j0, n, P, F32, T32, PROB);
        if (BWD) {
            bwd_run(&pc, &p, b->e, F32, T32, PROB);
            pack_rows(sg, C, sg->g, b->g, j0, n, P, F32, 1);
        } else {
            fwd_run(&pc, &p, a, F32, T32, PROB);
        }
    }
}

/* The piece of a segment across short rows that starts at position j, in
 * row *row at spatial index *s, read in place: the rest of the row, or for
 * S = 1 every remaining position, C apart. */
CE_INLINE ce_seg row_piece(const ce_cfg *cf, const ce_seg *sg, int64_t j, int64_t *row, int64_t *s,
                           const int F32, const int T32, const int PROB)
{
    const int64_t C = cf->classes, S = sg->S, xs = F32 ? 4 : 8, ts = T32 ? 4 : 8;
    ce_seg p = *sg;
    p.s0 = -1;
    int64_t o = *row * C * S + *s;
    if (S == 1) {
        p.n = sg->n - j;
        p.cs = 1;
        p.ps = C;
    } else {
        p.n = S - *s < sg->n - j ? S - *s : sg->n - j;
        p.cs = S;
        p.ps = 1;
    }
    p.x = (const char *)sg->x + o * xs;
    p.t = PROB ? (const char *)sg->t + o * ts : (const char *)sg->t + j * ts;
    p.g = sg->g ? (char *)sg->g + o * xs : NULL;
    p.out = sg->out ? (char *)sg->out + j * xs : NULL;
    *s = 0;
    *row += 1;
    return p;
}

/* The whole segment: in place (one row), packed, or row by row in place.
 * stack: the caller's buffers (e only for backward, g only for backward,
 * t only for probability targets). */
CE_INLINE void run_seg(const ce_cfg *cf, const ce_seg *sg, ce_facc *a, const ce_bufs *stack,
                       const int BWD, const int F32, const int T32, const int PROB)
{
    ce_cfg lc = *cf;
    lc.evec = CE_EVEC;
    const int64_t C = cf->classes;
    if (sg->s0 >= 0 && C * CE_W <= CE_PACK) {
        run_packed(&lc, sg, stack, a, BWD, F32, T32, PROB);
        return;
    }
    if (sg->s0 >= 0 && cf->work && C * CE_W <= cf->work_cap) {
        double *w = cf->work;
        ce_bufs b = {w,
                     w + cf->work_cap,
                     w + 2 * cf->work_cap,
                     (ce_ev *)(w + 3 * cf->work_cap),
                     cf->work_cap,
                     cf->work_cap * (int64_t)sizeof(double) / (int64_t)sizeof(ce_ev)};
        run_packed(&lc, sg, &b, a, BWD, F32, T32, PROB);
        return;
    }
    int64_t row = sg->s0 < 0 ? 0 : sg->s0 / sg->S, s = sg->s0 < 0 ? 0 : sg->s0 % sg->S;
    for (int64_t j = 0; j < sg->n;) {
        ce_seg p = sg->s0 < 0 ? *sg : row_piece(cf, sg, j, &row, &s, F32, T32, PROB);
        if (BWD)
            bwd_run(&lc, &p, stack->e, F32, T32, PROB);
        else
            fwd_run(&lc, &p, a, F32, T32, PROB);
        j += p.n;
    }
}

CE_INLINE int fwd_seg(const ce_cfg *cf, const ce_seg *sg, double acc[CE_ACC], const int F32,
                      const int T32, const int PROB)
{
    ce_pack xb, tb;
    ce_bufs stack = {xb.d, tb.d, NULL, NULL, CE_PACK, 0};
    ce_facc a = facc_open(acc);
    run_seg(cf, sg, &a, &stack, 0, F32, T32, PROB);
    return facc_close(&a, acc);
}

CE_INLINE void bwd_seg(const ce_cfg *cf, const ce_seg *sg, const int F32, const int T32,
                       const int PROB)
{
    ce_ev e[CE_EVEC];
    ce_pack xb, tb, gb;
    ce_bufs stack = {xb.d, tb.d, gb.d, e, CE_PACK, CE_EVEC};
    run_seg(cf, sg, NULL, &stack, 1, F32, T32, PROB);
}

#endif /* LOSSKIT_TORCH_CE_SEGMENTS_H */
