/* losskit/stencil.h: the stencil drivers of the kernel layer, for losses
 * whose term at a position reads neighbouring positions along the trailing
 * dimensions of slot 0. Two shapes of stencil:
 *
 *   edges   a term per position (node) plus a term per pair of neighbours
 *           (p, p + s_j) along each of the last K dimensions (an edge, a
 *           function of the differences x[p + s_j] - x[p] and t[p + s_j] -
 *           t[p]): finite-difference losses (sobolev, total variation);
 *   window  per plane of the last two dimensions, F fields of (x, t) at each
 *           position are filtered by a separable window of n taps (no
 *           padding: the valid positions), and a map of the filtered fields
 *           gives the term of each valid position (SSIM).
 *
 * Both are FUSED: the gradient needs no global statistic, so forward writes
 * it in the same pass. Every block writes only the gradient of the
 * positions it owns and computes it by gathering: p adds -phi'(x[p + s] -
 * x[p]) for its forward edge and +phi'(x[p] - x[p - s]) for its backward
 * edge, the latter kept from where the block computed it as a forward edge
 * (the last dimension within a chunk of a row, dimension K - 2 from the row
 * above) or formed again, by the same lanes, where the block did not (its
 * first chunk, its first row, the other dimensions); a window block
 * recomputes the map's partial derivatives on the window - 1 rows above its
 * first row, then filters them back (the transposed window) onto its own
 * rows. A loss of the residual r = x - t alone (LK_STEN_RESIDUAL) over one or
 * two dimensions runs on the residual path instead: r formed once per
 * element into three row buffers, each edge evaluated once (lk__res_range).
 * Nothing is ever scattered into another block's positions, so there
 * is no race and no dependence on the thread count: every result is a
 * function of the shapes and the data alone, as with every other driver.
 *
 * Nothing here is ABI; like loss.h, the source of a loss is compiled once per
 * variant and the formula is written once, on lk_v. */
#ifndef LOSSKIT_STENCIL_H
#define LOSSKIT_STENCIL_H

#include "losskit/loss.h"

#ifdef __cplusplus
extern "C" {
#endif

/* plan->aux of a stencil loss; the loss may use aux[4 ..) */
enum { LK_STEN_AUX_DIMS, LK_STEN_AUX_UNIT, LK_STEN_AUX_H, LK_STEN_AUX_W };
/* aux[LK_STEN_AUX_UNIT]: 0 when the positions are elements, else the
 * elements of a sample (reduction none per sample: positions are samples). */

/* Flags of the edge driver. */
#define LK_STEN_TARGET     0x1u /* slot 1 is a target shaped like the input */
#define LK_STEN_NODE       0x2u /* the loss has a per-position term */
#define LK_STEN_PER_SAMPLE 0x4u /* reduction none: one value per index of dim 0 */
#define LK_STEN_FINITE     0x8u /* an infinite input fails the call (LK_ERR_NUMERIC) */
/* The loss is a function of the residual r = x - t (of x without a target):
 * its node term of x - t alone, its edge term of d - dt alone, and the edge
 * term and its derivative are 0 at d - dt = 0. Over one or two dimensions
 * the driver then forms r once per element, keeps three rows of it, and
 * passes node x = r, t = 0 and edge d = r[p + s] - r[p], dt = 0. */
#define LK_STEN_RESIDUAL 0x10u

/* The geometry of the last K dimensions of slot 0: dim j of the stencil is
 * dim ndim - K + j of the tensor; j = K - 1 is the last (stride 1). */
typedef struct lk_sten_geom {
    int32_t K;
    int64_t n[LK_MAX_NDIM]; /* sizes */
    int64_t s[LK_MAX_NDIM]; /* strides, in elements */
    int64_t numel;
} lk_sten_geom;

static inline void lk_sten_geom_of(const lk_tensor *x, int32_t K, lk_sten_geom *g)
{
    int64_t stride = 1;
    g->K = K;
    for (int32_t j = K - 1; j >= 0; j--) {
        g->n[j] = x->shape[x->ndim - K + j];
        g->s[j] = stride;
        stride *= g->n[j];
    }
    g->numel = lk_numel(x);
}

/* ------------------------------------------------------------------------ */
/* Loads near the edges of a tensor                                          */

/* Lanes i .. i + k of a float tensor of n elements; lanes outside [0, n)
 * and from k on read 0. */
LK_AI lk_v lk__sten_ld(const void *p, int f32, int64_t i, int k, int64_t n)
{
    if (i >= 0 && i + k <= n)
        return lk__ld(p, f32, i, k, 0.0);
    lk_s buf[LK_W];
    for (int l = 0; l < LK_W; l++)
        buf[l] = (lk_s)(l < k && i + l >= 0 && i + l < n ? lk__get(p, f32, i + l) : 0.0);
    return lk_load(buf);
}

/* The message of the first infinite element among elements [i, i + k) of
 * x, named by its multi-index. Out of line (LK__COLD_FN): inlined, its
 * formatting made sobolev's forward 1.35 times slower. */
LK__COLD_FN lk_status lk__sten_inf(const lk_tensor *x, int64_t i, int k, lk_msg *msg)
{
    const int f32 = x->dtype == LK_DTYPE_F32;
    for (int64_t j = i; j < i + k; j++)
        if (isinf(lk__get(x->data, f32, j))) {
            char where[160];
            lk_index_str(where, sizeof where, x->ndim, x->shape, j);
            return lk_fail(msg, LK_ERR_NUMERIC,
                           "input%s = %g; this loss takes differences of neighbouring "
                           "inputs and needs them finite",
                           where, lk__get(x->data, f32, j));
        }
    return lk_fail(msg, LK_ERR_INTERNAL, "an infinite input vanished");
}

/* A family of double lanes only (float32 data read and written by
 * conversion): the window family, and an edge family whose float32 results
 * must not carry float rounding (LK_EDGE_LOSS_F64). */
#if defined(LK_PRIMARY)
#if defined(LK_BUILD_AVX2)
#define LK__F64_REF_AVX2(name)                                                                     \
    {                                                                                              \
        NULL, &LK__VAR(name, avx2, f64)                                                            \
    }
#define LK__F64_DECL_AVX2(name) extern const lk_kset LK__VAR(name, avx2, f64);
#else
#define LK__F64_REF_AVX2(name)                                                                     \
    {                                                                                              \
        NULL, NULL                                                                                 \
    }
#define LK__F64_DECL_AVX2(name)
#endif
#if defined(LK_BUILD_AVX512)
#define LK__F64_REF_AVX512(name)                                                                   \
    {                                                                                              \
        NULL, &LK__VAR(name, avx512, f64)                                                          \
    }
#define LK__F64_DECL_AVX512(name) extern const lk_kset LK__VAR(name, avx512, f64);
#else
#define LK__F64_REF_AVX512(name)                                                                   \
    {                                                                                              \
        NULL, NULL                                                                                 \
    }
#define LK__F64_DECL_AVX512(name)
#endif
#define LK__F64_FAMILY(name)                                                                       \
    LK__F64_DECL_AVX2(name)                                                                        \
    LK__F64_DECL_AVX512(name)                                                                      \
    static const lk_kfamily name##__family = {{                                                    \
        {NULL, &LK__VAR(name, portable, f64)},                                                     \
        LK__F64_REF_AVX2(name),                                                                    \
        LK__F64_REF_AVX512(name),                                                                  \
    }};
#else
#define LK__F64_FAMILY(name)
#endif

/* ------------------------------------------------------------------------ */
/* Edges                                                                     */

/* One vector of edges along one dimension. */
typedef struct lk_edge {
    lk_v d;    /* x[p + s] - x[p] */
    lk_v dt;   /* t[p + s] - t[p] (0 without LK_STEN_TARGET) */
    lk_v loss; /* out: the edge's term */
    lk_v grad; /* out: d term / d d */
} lk_edge;

typedef void (*lk_edge_fn)(const void *inst, lk_edge *e);
/* w[0]: the weight of the node term; w[1 + j]: the weight of every edge along
 * stencil dim j (0 drops the dimension). Scalar, once per block. */
typedef void (*lk_sten_weights_fn)(const void *inst, const lk_sten_geom *g, double *w);

/* The plan of an edge loss over the last K dims of slot 0. With
 * LK_STEN_PER_SAMPLE the output of reduction none is (N,), mean divides by
 * N, and reduction none's blocks are whole samples (its positions are the
 * samples, so that an empty sample still gets its 0). */
static inline void lk_edges_plan(const lk_tensor *x, int32_t K, uint32_t flags, int32_t reduction,
                                 lk_plan *plan)
{
    int64_t numel = lk_numel(x);
    plan->aux[LK_STEN_AUX_DIMS] = K;
    plan->aux[LK_STEN_AUX_UNIT] = 0;
    if (!(flags & LK_STEN_PER_SAMPLE))
        return;
    int64_t N = x->shape[0], S = N ? numel / N : 0;
    plan->out_ndim = 1;
    plan->out_shape[0] = N;
    plan->mean_norm = (double)N;
    if (reduction == LK_REDUCTION_NONE) {
        plan->n_positions = N;
        plan->aux[LK_STEN_AUX_UNIT] = S ? S : -1;
        int64_t per = S ? (lk_block_positions(numel) + S - 1) / S : N;
        plan->block_positions = per > 0 ? per : 1;
    }
}

/* Positions per chunk of a row: the derivatives of a chunk's edges along the
 * last dimension are kept in a scratch, each computed once. */
#define LK__STEN_CHUNK 1024
/* Elements a software prefetch runs ahead of the furthest neighbour. */
#ifndef LK__STEN_PREFETCH
#define LK__STEN_PREFETCH 512
#endif

typedef struct lk__eio {
    const void *x, *t;
    const lk_tensor *xs; /* the input's tensor, for messages */
    void *out, *g;
    int xf, tf, acc;
    int64_t numel;
    int stream; /* 1: the gradient streamed from the lanes (their own precision); 2: a
                 * float32 gradient streamed from double lanes (the residual path) */
    lk_v scale;
} lk__eio;

/* An edge's term and derivative, weighted. */
LK_AI void lk__edge_eval(const void *inst, lk_edge_fn fn, lk_v d, lk_v dt, lk_v w, lk_v *loss,
                         lk_v *dd)
{
    lk_edge e;
    e.d = d;
    e.dt = dt;
    fn(inst, &e);
    *loss = lk_mul(w, e.loss);
    *dd = lk_mul(w, e.grad);
}

/* The edges along the last dimension (of nL) at the positions [i, i + len)
 * of one row, from column c: de[1 + l] = d term / d d of the edge from i + l
 * to i + l + 1, de[0] that of the edge from i - 1 to i (with want_grad), 0
 * where an edge does not exist; le[l] = the term of the edge from i + l
 * (that position's own, forward edge). Each edge is computed once per chunk, by the same lanes
 * wherever a chunk begins, so that its value does not depend on the
 * blocks. xc, tc: NULL, or the row's x and t already in lanes' precision
 * (lanes past kf are masked off). */
LK_AI void lk__edges_last(const void *inst, lk_edge_fn edge, int has_t, const lk__eio *io, lk_v wL,
                          int64_t i, int64_t len, int64_t c, int64_t nL, int want_grad, lk_s *de,
                          lk_s *le, const lk_s *xc, const lk_s *tc)
{
    lk_v l, dd;
    if (want_grad) {
        lk_v d = lk_zero(), dt = lk_zero();
        if (c > 0) {
            d = lk_sub(lk__ld(io->x, io->xf, i, 1, 0.0), lk__ld(io->x, io->xf, i - 1, 1, 0.0));
            if (has_t)
                dt = lk_sub(lk__ld(io->t, io->tf, i, 1, 0.0), lk__ld(io->t, io->tf, i - 1, 1, 0.0));
        }
        lk__edge_eval(inst, edge, d, dt, wL, &l, &dd);
        lk_store(de, c > 0 ? lk_keep(lk_first(1), dd) : lk_zero());
    }
    for (int64_t v = 0; v < len; v += LK_W) {
        int64_t kf = nL - 1 - (c + v); /* forward edges while c + v + l < nL - 1 */
        int k = len - v < LK_W ? (int)(len - v) : LK_W;
        if (kf > k)
            kf = k;
        if (kf <= 0) {
            lk_store(de + 1 + v, lk_zero());
            lk_store(le + v, lk_zero());
            continue;
        }
        lk_v x0, x1, dt = lk_zero();
        if (xc) {
            x0 = lk_load(xc + v);
            x1 = lk_load(xc + v + 1);
            if (has_t)
                dt = lk_sub(lk_load(tc + v + 1), lk_load(tc + v));
        } else {
            x0 = lk__ld(io->x, io->xf, i + v, (int)kf, 0.0);
            x1 = lk__ld(io->x, io->xf, i + v + 1, (int)kf, 0.0);
            if (has_t)
                dt = lk_sub(lk__ld(io->t, io->tf, i + v + 1, (int)kf, 0.0),
                            lk__ld(io->t, io->tf, i + v, (int)kf, 0.0));
        }
        lk__edge_eval(inst, edge, lk_sub(x1, x0), dt, wL, &l, &dd);
        if (kf < LK_W) {
            lk_m m = lk_first((int)kf);
            l = lk_keep(m, l);
            dd = lk_keep(m, dd);
        }
        lk_store(le + v, l);
        lk_store(de + 1 + v, dd);
    }
}

/* What a whole row keeps for the next (lk__edges_range): the derivatives of
 * its forward edges along dim K - 2 (dvo, written; dvi, those of the row
 * above, read) and, where lanes are wider than the data, the next row's x
 * and t in lanes' precision (xo, to written; xc, tc the row's own, read:
 * the lanes of its last vector past the row are 0). */
typedef struct lk__erow {
    lk_s *dvo, *xo, *to;
    const lk_s *dvi, *xc, *tc;
} lk__erow;

/* The edges of the vector at p along one dim but the last (stride s): the
 * forward edge's term and derivative (if fok), the backward edge's
 * derivative (if bok), from the row above's (rw->dvi) where it kept them. */
LK_AI void lk__edges_dim(const void *inst, lk_edge_fn edge, int has_t, const lk__eio *io, lk_v x0,
                         lk_v t0, int64_t p, int64_t s, int k, int fok, int bok, lk_v w,
                         const lk__erow *rw, int64_t v, lk_v *loss, lk_v *grad)
{
    lk_v l, dd;
    if (fok) {
        lk_v xf = lk__ld(io->x, io->xf, p + s, k, 0.0);
        lk_v tf = has_t ? lk__ld(io->t, io->tf, p + s, k, 0.0) : lk_zero();
        lk__edge_eval(inst, edge, lk_sub(xf, x0), lk_sub(tf, t0), w, &l, &dd);
        *loss = lk_add(*loss, l);
        *grad = lk_sub(*grad, dd);
        if (rw && rw->dvo) {
            lk_store(rw->dvo + v, dd);
            if (rw->xo) {
                lk_store(rw->xo + v, xf);
                lk_store(rw->to + v, tf);
            }
        }
    }
    if (rw && rw->dvi) {
        *grad = lk_add(*grad, lk_load(rw->dvi + v));
    } else if (bok) {
        lk_v xb = lk__ld(io->x, io->xf, p - s, k, 0.0);
        lk_v tb = has_t ? lk__ld(io->t, io->tf, p - s, k, 0.0) : lk_zero();
        lk__edge_eval(inst, edge, lk_sub(x0, xb), lk_sub(t0, tb), w, &l, &dd);
        *grad = lk_add(*grad, dd);
    }
}

/* The positions [i, i + len) of one row from column c (len at most
 * LK__STEN_CHUNK); fok/bok: the forward and backward neighbours along each
 * dim but the last exist. The gradient of a position is, in this order: its
 * node term's, minus its forward and plus its backward edges' along each dim
 * but the last (computed at both ends), minus its forward and plus its
 * backward edge's along the last dim (from the scratch). */
LK_AI lk_status lk__edges_chunk(const void *inst, lk_elem_fn node, lk_edge_fn edge, uint32_t flags,
                                const lk__eio *io, const lk_sten_geom *g, const double *w,
                                const lk_v *wv, const int *fok, const int *bok, int64_t i,
                                int64_t len, int64_t c, int want_grad, const lk__erow *rw,
                                lk_acc *sum, lk_msg *msg)
{
    const int has_t = (flags & LK_STEN_TARGET) != 0;
    const int32_t K = g->K;
    const int64_t nL = g->n[K - 1];
    const int last = w[K] != 0.0 && nL > 1;
    lk_s de[LK__STEN_CHUNK + 2 * LK_W], le[LK__STEN_CHUNK + LK_W];
    const int cross = K >= 2 && w[K - 1] != 0.0;
    const int64_t s2 = K >= 2 ? g->s[K - 2] : 0;
    if (last)
        lk__edges_last(inst, edge, has_t, io, wv[K], i, len, c, nL, want_grad, de, le, rw->xc,
                       rw->tc);
    int64_t pf = i + g->s[0] + LK__STEN_PREFETCH;
    for (int64_t v = 0; v < len; v += LK_W) {
        int k = len - v < LK_W ? (int)(len - v) : LK_W;
        int64_t p = i + v;
#if defined(__GNUC__)
        /* the leading rows, ahead of their first (vertical) reads */
        if (pf < g->numel) {
            __builtin_prefetch((const char *)io->x + (pf << (2 + !io->xf)));
            if (has_t)
                __builtin_prefetch((const char *)io->t + (pf << (2 + !io->tf)));
        }
        pf += LK_W;
#endif
        lk_v x0, t0 = lk_zero();
        if (rw->xc) {
            x0 = lk_load(rw->xc + v);
            if (has_t)
                t0 = lk_load(rw->tc + v);
        } else {
            x0 = lk__ld(io->x, io->xf, p, k, 0.0);
            if (has_t)
                t0 = lk__ld(io->t, io->tf, p, k, 0.0);
        }
        if ((flags & LK_STEN_FINITE) && lk_any(lk_eq(lk_abs(x0), lk_set(HUGE_VAL))))
            return lk__sten_inf(io->xs, p, k, msg);
        lk_v loss = lk_zero(), grad = lk_zero();
        if ((flags & LK_STEN_NODE) && w[0] != 0.0) {
            lk_elem e;
            e.i = p;
            e.x = x0;
            e.t = t0;
            node(inst, &e);
            loss = lk_mul(wv[0], e.loss);
            grad = lk_mul(wv[0], e.grad);
        }
        for (int32_t j = 0; j + 2 < K; j++)
            if (w[1 + j] != 0.0)
                lk__edges_dim(inst, edge, has_t, io, x0, t0, p, g->s[j], k, fok[j],
                              bok[j] && want_grad, wv[1 + j], NULL, v, &loss, &grad);
        if (cross) /* dim K - 2, straight: an image's rows */
            lk__edges_dim(inst, edge, has_t, io, x0, t0, p, s2, k, fok[K - 2],
                          bok[K - 2] && want_grad, wv[K - 1], rw, v, &loss, &grad);
        if (last)
            loss = lk_add(loss, lk_load(le + v));
        lk_acc_add(sum, k == LK_W ? loss : lk_keep(lk_first(k), loss));
        if (!want_grad)
            continue;
        if (last) {
            grad = lk_sub(grad, lk_load(de + 1 + v));
            grad = lk_add(grad, lk_load(de + v));
        }
        /* a large gradient is streamed where a whole vector lies on a vector
         * boundary: its lines are written without being read first */
        if (io->stream == 1 && k == LK_W &&
            (uintptr_t)((lk_s *)io->g + p) % (LK_W * sizeof(lk_s)) == 0)
            lk__stream_grad(io->g, p, grad, io->scale);
        else
            lk__put_grad(io->g, io->xf, p, k, grad, io->scale, io->acc);
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* Edges of the residual (LK_STEN_RESIDUAL), over one or two dimensions      */

/* Columns per piece of a row on the residual path: a piece's residual rows
 * (three of them, in lanes' precision) stay in L1/L2. */
#define LK__RES_PIECE 4096
#ifndef LK__RES_PREFETCH
#define LK__RES_PREFETCH 1024 /* elements a software prefetch runs ahead of the loads */
#endif

/* A residual row piece: r = x - t (x alone without a target) at the columns
 * [c - 1, c + len] of one row, at buf[LK_W - 1 .. LK_W + len]: column col at
 * buf[LK_W + col - c]. Outside the row the last column is replicated, so an
 * edge that does not exist has d = 0 (then term and derivative 0, as the
 * flag requires); past the piece the same, so every lane read is a number. */
typedef struct lk__rrow {
    int64_t row, c, len;
    lk_s *buf;
} lk__rrow;

LK_AI lk_s lk__res_at(const lk__eio *io, int has_t, int64_t i)
{
    lk_s one[LK_W];
    lk_v r = lk__ld(io->x, io->xf, i, 1, 0.0);
    if (has_t)
        r = lk_sub(r, lk__ld(io->t, io->tf, i, 1, 0.0));
    lk_store(one, r);
    return one[0];
}

LK_AI void lk__res_fill(const lk__eio *io, int has_t, lk__rrow *rr, int64_t row, int64_t c,
                        int64_t len, int64_t nL)
{
    const int64_t base = row * nL + c;
    lk_s *b = rr->buf + LK_W;
    const int64_t pf = base + LK__RES_PREFETCH, n = io->numel;
    for (int64_t v = 0; v < len; v += LK_W) {
        int k = len - v < LK_W ? (int)(len - v) : LK_W;
#if defined(__GNUC__)
        /* rows ahead of their first reads */
        if (pf + v < n) {
            __builtin_prefetch((const char *)io->x + ((pf + v) << (2 + !io->xf)));
            if (has_t)
                __builtin_prefetch((const char *)io->t + ((pf + v) << (2 + !io->tf)));
        }
#endif
        lk_v r = lk__ld(io->x, io->xf, base + v, k, 0.0);
        if (has_t)
            r = lk_sub(r, lk__ld(io->t, io->tf, base + v, k, 0.0));
        lk_store(b + v, r);
    }
    b[-1] = c > 0 ? lk__res_at(io, has_t, base - 1) : b[0];
    lk_s east = c + len < nL ? lk__res_at(io, has_t, base + len) : b[len - 1];
    int64_t end = (len + LK_W - 1) / LK_W * LK_W + 2 * LK_W;
    b[len] = east;
    for (int64_t j = len + 1; j < end; j++)
        b[j] = b[len - 1];
    rr->row = row;
    rr->c = c;
    rr->len = len;
}

/* The residual row piece of row at [c, c + len), from the ring (slot row mod
 * 3) or formed there. */
LK_AI const lk_s *lk__res_row(const lk__eio *io, int has_t, lk__rrow *ring, int64_t row, int64_t c,
                              int64_t len, int64_t nL)
{
    lk__rrow *rr = &ring[row % 3];
    if (rr->row != row || rr->c != c || rr->len != len)
        lk__res_fill(io, has_t, rr, row, c, len, nL);
    return rr->buf + LK_W;
}

/* One piece of a row: the positions pb .. pb + len, their residuals at rc,
 * the rows below and above at rs, rn (or the derivatives of the edges north
 * kept at gn), the derivatives of the edges south written to go. nd, hz,
 * vt: the node, the edges along the last dim and along dim K - 2; each call
 * site passes constants where it can, so that the loop tests none of them. */
LK_AI lk_status lk__res_piece(const void *inst, lk_elem_fn node, lk_edge_fn edge, uint32_t flags,
                              const lk__eio *io, int nd, int hz, int vt, int want_grad, int stream,
                              lk_v w0, lk_v wH, lk_v wV, int64_t pb, int64_t len, const lk_s *rc,
                              const lk_s *rs, const lk_s *rn, const lk_s *gn, lk_s *go, lk_acc *sum,
                              lk_msg *msg)
{
    lk_status st = LK_OK;
    lk_edge e;
    lk_v gprev = lk_zero(); /* the derivatives of the previous vector's edges east */
    if (hz && want_grad) {
        e.d = lk_sub(lk_load(rc - LK_W + 1), lk_load(rc - LK_W)); /* last lane: c - 1 */
        e.dt = lk_zero();
        edge(inst, &e);
        gprev = e.grad;
    }
    for (int64_t v = 0; v < len; v += LK_W) {
        const int k = len - v < LK_W ? (int)(len - v) : LK_W;
        const int64_t p = pb + v;
        lk_v r = lk_load(rc + v);
        if ((flags & LK_STEN_FINITE) && lk_any(lk_eq(lk_abs(r), lk_set(HUGE_VAL)))) {
            for (int64_t j = p; j < p + k; j++)
                if (isinf(lk__get(io->x, io->xf, j))) {
                    st = lk__sten_inf(io->xs, j, 1, msg);
                    break;
                }
            if (st != LK_OK)
                break;
        }
        lk_v loss = lk_zero(), grad = lk_zero();
        if (nd) {
            lk_elem n;
            n.i = p;
            n.x = r;
            n.t = lk_zero();
            node(inst, &n);
            loss = lk_mul(w0, n.loss);
            grad = lk_mul(w0, n.grad);
        }
        if (hz) {
            e.d = lk_sub(lk_load(rc + v + 1), r);
            e.dt = lk_zero();
            edge(inst, &e);
            loss = lk_fma(wH, e.loss, loss);
            if (want_grad) {
                /* the edges west are the previous positions' east */
                lk_v gw = lk_shift_in(gprev, e.grad);
                gprev = e.grad;
                grad = lk_fma(wH, lk_sub(gw, e.grad), grad);
            }
        }
        if (vt) {
            e.d = lk_sub(lk_load(rs + v), r);
            e.dt = lk_zero();
            edge(inst, &e);
            loss = lk_fma(wV, e.loss, loss);
            if (want_grad) {
                lk_v gf = e.grad;
                lk_store(go + v, gf);
                if (gn) {
                    e.grad = lk_load(gn + v);
                } else {
                    e.d = lk_sub(r, lk_load(rn + v));
                    e.dt = lk_zero();
                    edge(inst, &e);
                }
                grad = lk_fma(wV, lk_sub(e.grad, gf), grad);
            }
        }
        lk_acc_add(sum, k == LK_W ? loss : lk_keep(lk_first(k), loss));
        if (!want_grad)
            continue;
#if !defined(LK_TARGET_PORTABLE)
#if defined(LK_LANES_F32)
        if (io->stream && k == LK_W &&
            (uintptr_t)((lk_s *)io->g + p) % (LK_W * sizeof(lk_s)) == 0) {
            lk__stream_grad(io->g, p, grad, io->scale);
            continue;
        }
#else
        if (stream == 2 && k == LK_W && (uintptr_t)((float *)io->g + p) % (LK_W * 4) == 0) {
            lk_d_stream_f32((float *)io->g + p, lk_mul(io->scale, grad));
            continue;
        }
        if (stream == 1 && k == LK_W &&
            (uintptr_t)((lk_s *)io->g + p) % (LK_W * sizeof(lk_s)) == 0) {
            lk__stream_grad(io->g, p, grad, io->scale);
            continue;
        }
#endif
#endif
        lk__put_grad(io->g, io->xf, p, k, grad, io->scale, io->acc);
    }
    return st;
}

/* The positions [eb, ee) with K <= 2: row pieces in order; each position's
 * term and gradient from the residual rows above, at and below it. The
 * gradient of a position is its node term's, plus the derivatives of its
 * backward and minus those of its forward edges along the last dim, then
 * the same along dim K - 2: every edge formed from the same two residuals
 * by the same lanes wherever it is needed, so that nothing depends on the
 * blocks. */
LK_AI lk_status lk__res_range(const void *inst, lk_elem_fn node, lk_edge_fn edge, uint32_t flags,
                              const lk__eio *io, const lk_sten_geom *g, const double *w,
                              const lk_v *wv, int64_t eb, int64_t ee, int want_grad, lk_acc *sum,
                              lk_msg *msg)
{
    const int has_t = (flags & LK_STEN_TARGET) != 0;
    const int32_t K = g->K;
    const int64_t nL = g->n[K - 1], H = K >= 2 ? g->n[K - 2] : 1;
    const int hz = w[K] != 0.0 && nL > 1, vt = K >= 2 && w[K - 1] != 0.0 && H > 1;
    const int nd = (flags & LK_STEN_NODE) && w[0] != 0.0;
    const lk_v wH = wv[K], wV = K >= 2 ? wv[K - 1] : lk_zero(), w0 = wv[0];
    const int64_t piece = nL < LK__RES_PIECE ? nL : LK__RES_PIECE;
    const int64_t cells = (piece + LK_W - 1) / LK_W * LK_W + 3 * LK_W;
    /* three residual rows, and two rows of the derivatives of the edges to
     * the row below (the row below's edges to the row above) */
    lk_s *mem = (lk_s *)calloc(5 * (size_t)cells, sizeof(lk_s));
    if (!mem)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for the stencil's 5 rows of %lld",
                       (long long)piece);
    lk__rrow ring[3], gs[2];
    for (int q = 0; q < 3; q++)
        ring[q] = (lk__rrow){-1, 0, 0, mem + q * cells};
    for (int q = 0; q < 2; q++)
        gs[q] = (lk__rrow){-1, 0, 0, mem + (3 + q) * cells};
        /* the streaming mode of sobolev's and total_variation's large calls */
#if defined(LK_LANES_F32)
    const int s = 1;
#else
    const int s = 2;
#endif
    lk_status st = LK_OK;
    for (int64_t p0 = eb; p0 < ee && st == LK_OK;) {
        const int64_t row = p0 / nL, c0 = p0 - row * nL;
        const int64_t ce = row * nL + nL < ee ? nL : ee - row * nL;
        const int64_t y = row % H;
        for (int64_t c = c0; c < ce && st == LK_OK; c += LK__RES_PIECE) {
            const int64_t len = ce - c < LK__RES_PIECE ? ce - c : LK__RES_PIECE;
            const lk_s *rc = lk__res_row(io, has_t, ring, row, c, len, nL);
            const lk_s *rn = rc, *rs = rc;
            if (vt && y + 1 < H)
                rs = lk__res_row(io, has_t, ring, row + 1, c, len, nL);
            /* the edges to the row above: kept by the row above if it was
             * this piece too, else formed again (the same lanes) */
            lk__rrow *gsn = &gs[(row + 1) & 1], *gso = &gs[row & 1];
            const int keptn = gsn->row == row - 1 && gsn->c == c && gsn->len == len;
            if (vt && y > 0 && want_grad && !keptn)
                rn = lk__res_row(io, has_t, ring, row - 1, c, len, nL);
            const lk_s *gn = vt && y > 0 && keptn ? gsn->buf : NULL;
            lk_s *go = vt && want_grad ? gso->buf : NULL;
            const int64_t pb = row * nL + c;
            /* sobolev's and total_variation's case, specialised */
            const int nf = (flags & LK_STEN_NODE) != 0, both = nd == nf && hz && vt;
            const int full = both && want_grad;
            if (both && !want_grad)
                st = lk__res_piece(inst, node, edge, flags, io, nf, 1, 1, 0, 0, w0, wH, wV, pb, len,
                                   rc, rs, rn, gn, go, sum, msg);
            else if (full && io->stream == s)
                st = lk__res_piece(inst, node, edge, flags, io, nf, 1, 1, 1, s, w0, wH, wV, pb, len,
                                   rc, rs, rn, gn, go, sum, msg);
            else if (full && s != 1 && io->stream == 1) /* float64 data in double lanes */
                st = lk__res_piece(inst, node, edge, flags, io, nf, 1, 1, 1, 1, w0, wH, wV, pb, len,
                                   rc, rs, rn, gn, go, sum, msg);
            else if (full && io->stream == 0)
                st = lk__res_piece(inst, node, edge, flags, io, nf, 1, 1, 1, 0, w0, wH, wV, pb, len,
                                   rc, rs, rn, gn, go, sum, msg);
            else
                st = lk__res_piece(inst, node, edge, flags, io, nd, hz, vt, want_grad, io->stream,
                                   w0, wH, wV, pb, len, rc, rs, rn, gn, go, sum, msg);
            if (go)
                *gso = (lk__rrow){row, c, len, go};
        }
        p0 = row * nL + ce;
    }
    free(mem);
    return st;
}

/* The positions [eb, ee) row by row, in chunks; the loss's terms added into
 * sum. */
LK_AI lk_status lk__edges_range(const void *inst, lk_elem_fn node, lk_edge_fn edge, uint32_t flags,
                                const lk__eio *io, const lk_sten_geom *g, const double *w,
                                const lk_v *wv, int64_t eb, int64_t ee, int want_grad, lk_acc *sum,
                                lk_msg *msg)
{
    if ((flags & LK_STEN_RESIDUAL) && g->K <= 2)
        return lk__res_range(inst, node, edge, flags, io, g, w, wv, eb, ee, want_grad, sum, msg);
    const int32_t K = g->K;
    const int64_t nL = g->n[K - 1];
    int fok[LK_MAX_NDIM], bok[LK_MAX_NDIM];
    /* Whole rows that fit a chunk keep the derivatives of their forward
     * edges along dim K - 2 for the next row, whose backward edges they are
     * (the first row of a range computes its own, by the same lanes). */
    lk_s dv[2][LK__STEN_CHUNK + LK_W];
    const int keep = K >= 2 && want_grad && nL <= LK__STEN_CHUNK && w[K - 1] != 0.0;
#if !defined(LK_LANES_F32)
    /* float32 data in double lanes: each row converted once */
    lk_s xr[2][LK__STEN_CHUNK + 2 * LK_W], tr[2][LK__STEN_CHUNK + 2 * LK_W];
    const int conv = keep && io->xf && (io->tf || !(flags & LK_STEN_TARGET));
#endif
    int have = 0, cur = 0;
    for (int64_t p = eb; p < ee;) {
        int64_t c = p % nL, row = p - c, re = row + nL < ee ? row + nL : ee;
        for (int32_t j = 0; j + 1 < K; j++) {
            int64_t cj = (row / g->s[j]) % g->n[j];
            fok[j] = cj + 1 < g->n[j];
            bok[j] = cj > 0;
        }
        const int whole = keep && c == 0 && re == row + nL;
        lk__erow rw = {NULL, NULL, NULL, NULL, NULL, NULL};
        if (whole) {
            rw.dvo = dv[cur];
            if (have && bok[K - 2])
                rw.dvi = dv[1 - cur];
#if !defined(LK_LANES_F32)
            if (conv) {
                int64_t end = (nL + LK_W - 1) / LK_W * LK_W;
                rw.xo = xr[cur];
                rw.to = tr[cur];
                lk_store(xr[cur] + end, lk_zero()); /* read past the row, masked */
                lk_store(tr[cur] + end, lk_zero());
                if (have && bok[K - 2]) {
                    rw.xc = xr[1 - cur];
                    rw.tc = tr[1 - cur];
                }
            }
#endif
        }
        for (int64_t i = p; i < re; i += LK__STEN_CHUNK) {
            int64_t len = re - i < LK__STEN_CHUNK ? re - i : LK__STEN_CHUNK;
            lk_status st = lk__edges_chunk(inst, node, edge, flags, io, g, w, wv, fok, bok, i, len,
                                           i - row, want_grad, &rw, sum, msg);
            if (st != LK_OK)
                return st;
        }
        have = whole && fok[K - 2];
        cur = 1 - cur;
        p = re;
    }
    return LK_OK;
}

/* The same, with the gradient wanted or not and, in double lanes, float32
 * and float64 data apart: each loop knows its loads at compile time. */
LK_AI lk_status lk__edges_run(const void *inst, lk_elem_fn node, lk_edge_fn edge, uint32_t flags,
                              const lk__eio *io, const lk_sten_geom *g, const double *w,
                              const lk_v *wv, int64_t eb, int64_t ee, lk_acc *sum, lk_msg *msg)
{
#if !defined(LK_LANES_F32)
    if (io->xf == io->tf || !(flags & LK_STEN_TARGET)) {
        lk__eio c = *io;
        c.xf = c.tf = io->xf;
        if (io->xf)
            return io->g
                       ? lk__edges_range(inst, node, edge, flags, &c, g, w, wv, eb, ee, 1, sum, msg)
                       : lk__edges_range(inst, node, edge, flags, &c, g, w, wv, eb, ee, 0, sum,
                                         msg);
        c.xf = c.tf = 0;
        return io->g ? lk__edges_range(inst, node, edge, flags, &c, g, w, wv, eb, ee, 1, sum, msg)
                     : lk__edges_range(inst, node, edge, flags, &c, g, w, wv, eb, ee, 0, sum, msg);
    }
#endif
    return io->g ? lk__edges_range(inst, node, edge, flags, io, g, w, wv, eb, ee, 1, sum, msg)
                 : lk__edges_range(inst, node, edge, flags, io, g, w, wv, eb, ee, 0, sum, msg);
}

LK_AI lk_status lk_edges_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                 lk_elem_fn node, lk_edge_fn edge, lk_sten_weights_fn weights,
                                 uint32_t flags, lk_msg *msg)
{
    const lk_tensor *s = blk->slots;
    lk_sten_geom g;
    double w[LK_MAX_NDIM + 1];
    lk_v wv[LK_MAX_NDIM + 1];
    lk_sten_geom_of(&s[0], (int32_t)plan->aux[LK_STEN_AUX_DIMS], &g);
    for (int32_t j = 0; j <= g.K; j++)
        w[j] = 1.0;
    if (weights)
        weights(inst, &g, w);
    for (int32_t j = 0; j <= g.K; j++)
        wv[j] = lk_set(w[j]);
    lk__eio io;
    io.x = s[0].data;
    io.xs = &s[0];
    io.t = (flags & LK_STEN_TARGET) ? s[1].data : NULL;
    io.xf = s[0].dtype == LK_DTYPE_F32;
    io.tf = (flags & LK_STEN_TARGET) ? s[1].dtype == LK_DTYPE_F32 : 0;
    io.out = blk->out ? blk->out->data : NULL;
    io.g = blk->grads ? blk->grads[0].data : NULL;
    io.acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    io.scale = lk_set(blk->grad_scale);
    io.numel = g.numel;
    io.stream = lk__can_stream(io.g, io.xf, io.acc, 0, g.numel);
#if !defined(LK_LANES_F32) && !defined(LK_TARGET_PORTABLE)
    /* a float32 gradient from double lanes, rounded as it is streamed */
    if (!io.stream && io.g && io.xf && !io.acc && (flags & LK_STEN_RESIDUAL) &&
        g.numel * (int64_t)sizeof(float) >= LK_STREAM_BYTES)
        io.stream = 2;
#endif
    int64_t unit = plan->aux[LK_STEN_AUX_UNIT];
    lk_status st = LK_OK;
    double total = 0.0;
    /* reduction none per sample: one sum per sample, in sample order */
    for (int64_t u = blk->begin; st == LK_OK && u < blk->end; u++) {
        int64_t eb = unit == 0 ? blk->begin : unit < 0 ? 0 : u * unit;
        int64_t ee = unit == 0 ? blk->end : unit < 0 ? 0 : eb + unit;
        lk_acc sum = lk_acc_zero();
        st = lk__edges_run(inst, node, edge, flags, &io, &g, w, wv, eb, ee, &sum, msg);
        double v = lk_acc_sum(sum);
        total += v;
        if (io.out && unit != 0) {
            if (io.xf)
                ((float *)io.out)[u] = (float)v;
            else
                ((double *)io.out)[u] = v;
        }
        if (unit == 0)
            break;
    }
    if (io.stream)
        lk_stream_fence();
    if (st == LK_OK)
        blk->stats[0] += total;
    return st;
}

/* An edge family: node(const T *, lk_elem *) fills e->loss, e->grad from
 * e->x, e->t (called only with LK_STEN_NODE); edge(const T *, lk_edge *);
 * weights(const void *, const lk_sten_geom *, double *) or NULL (every
 * weight 1); family: LK__FAMILY (float and double lanes) or LK__F64_FAMILY
 * (double lanes only). */
#define LK_KERNELS_EDGES_IN(name, T, node, edge, weights, flags, family)                           \
    LK_AI void name##__node(const void *p, lk_elem *e)                                             \
    {                                                                                              \
        node((const T *)p, e);                                                                     \
    }                                                                                              \
    LK_AI void name##__edge(const void *p, lk_edge *e)                                             \
    {                                                                                              \
        edge((const T *)p, e);                                                                     \
    }                                                                                              \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T local = *(const T *)inst;                                                          \
        return lk_edges_forward(&local, plan, blk, name##__node, name##__edge, (weights), (flags), \
                                msg);                                                              \
    }                                                                                              \
    LK__KSET(name, name##__fwd, NULL, 0)                                                           \
    family(name)

#define LK_KERNELS_EDGES(name, T, node, edge, weights, flags)                                      \
    LK_KERNELS_EDGES_IN(name, T, node, edge, weights, flags, LK__FAMILY)

/* One line for an edge loss (FUSED). The trailing arguments are
 * lk_loss_desc members; .slots and .reductions are the loss's own. The
 * loss's hooks.plan calls lk_edges_plan. */
#define LK_EDGE_LOSS(lid, T, node, edge, weights, flags, hooks, ...)                               \
    LK_KERNELS_EDGES(lid, T, node, edge, weights, flags)                                           \
    LK_LOSS_DESC(lid, T, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&lid##__family), lk_slots_pair,    \
                 LK_REDUCTION_BIT(LK_REDUCTION_MEAN), hooks, __VA_ARGS__)

/* The same in double lanes only: float32 data is widened on load, every term
 * and derivative is formed and summed in double, and the gradient is
 * rounded to float32 once, when it is stored. For a loss whose gradient at
 * a position sums terms that cancel (sobolev: a discrete Laplacian). */
#define LK_EDGE_LOSS_F64(lid, T, node, edge, weights, flags, hooks, ...)                           \
    LK_KERNELS_EDGES_IN(lid, T, node, edge, weights, flags, LK__F64_FAMILY)                        \
    LK_LOSS_DESC(lid, T, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&lid##__family), lk_slots_pair,    \
                 LK_REDUCTION_BIT(LK_REDUCTION_MEAN), hooks, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Windows                                                                   */

#define LK_WIN_MAX_TAPS   63 /* the longest window */
#define LK_WIN_MAX_FIELDS 8

/* A normalised 1-D window of n taps (n odd); the 2-D window is its outer
 * product with itself. The loss keeps one in its instance. */
typedef struct lk_window {
    int32_t n;
    double w[LK_WIN_MAX_TAPS];
} lk_window;

/* The Gaussian window exp(-(u - r)^2 / (2 sigma^2)), r = (n - 1) / 2,
 * divided by its sum. */
static inline void lk_window_gauss(lk_window *win, int32_t n, double sigma)
{
    double sum = 0.0;
    win->n = n;
    for (int32_t u = 0; u < n; u++) {
        double d = (double)(u - (n - 1) / 2);
        win->w[u] = exp(-d * d / (2.0 * sigma * sigma));
        sum += win->w[u];
    }
    for (int32_t u = 0; u < n; u++)
        win->w[u] /= sum;
}

/* fields(const T *, lk_v x, lk_v t, lk_v *f): the F fields at a position.
 * map(const T *, const lk_v *m, lk_v *loss, lk_v *dm): the term of a valid
 * position from the F filtered fields m, and d term / d m_k for the first G
 * fields (the others must not depend on the input); dm is NULL when no
 * gradient is wanted. grad(const T *, lk_v x, lk_v t, const lk_v *G): d
 * value / d x = sum_k G_k d f_k / d x, G_k the back-filtered dm_k. */
typedef void (*lk_win_fields_fn)(const void *inst, lk_v x, lk_v t, lk_v *f);
typedef void (*lk_win_map_fn)(const void *inst, const lk_v *m, lk_v *loss, lk_v *dm);
typedef lk_v (*lk_win_grad_fn)(const void *inst, lk_v x, lk_v t, const lk_v *G);

/* Rows per block: about 32768 positions, and at least 4 windows. */
static inline int64_t lk_window_rows(int64_t W, int32_t n)
{
    int64_t r = W ? (32768 + W - 1) / W : 1;
    return r < 4 * n ? 4 * n : r;
}

/* Checks that x and t are (N, C, H, W) with H, W >= n and fills the plan:
 * the positions are the input's elements, blocks whole rows, mean over the
 * N C (H - n + 1)(W - n + 1) valid positions. who names the loss. */
static inline lk_status lk_window_plan(const char *who, const lk_tensor *x, const lk_tensor *t,
                                       int32_t n, lk_plan *plan, lk_msg *msg)
{
    char sh[192];
    lk_shape_str(sh, sizeof sh, x->ndim, x->shape);
    if (x->ndim != 4)
        return lk_fail(msg, LK_ERR_SHAPE, "input: shape %s; %s takes images (N, C, H, W)", sh, who);
    if (x->shape[2] < n || x->shape[3] < n)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: shape %s; %s's window of %d needs H and W of at least %d", sh, who,
                       (int)n, (int)n);
    for (int32_t d = 0; t && d < 4; d++)
        if (t->ndim != 4 || t->shape[d] != x->shape[d])
            return lk_fail(msg, LK_ERR_SHAPE, "target: shape differs from input %s", sh);
    int64_t H = x->shape[2], W = x->shape[3];
    plan->aux[LK_STEN_AUX_DIMS] = 2;
    plan->aux[LK_STEN_AUX_H] = H;
    plan->aux[LK_STEN_AUX_W] = W;
    plan->block_positions = W * lk_window_rows(W, n);
    plan->mean_norm =
        (double)(x->shape[0] * x->shape[1]) * (double)(H - n + 1) * (double)(W - n + 1);
    plan->out_ndim = 0;
    return LK_OK;
}

/* Row lengths of the scratch: whole vectors. */
LK_AI int64_t lk__vround(int64_t n)
{
    return (n + LK_W - 1) / LK_W * LK_W;
}

typedef struct lk__wio {
    const void *x, *t;
    const lk_tensor *xs; /* the input's tensor, for messages */
    void *g;
    int xf, tf, acc;
    int64_t H, W, Hv, Wv, rl; /* rl: a scratch row's length */
    int32_t F, G, n;
    lk_v tap[LK_WIN_MAX_TAPS];
    lk_s *hr; /* F x n rows: the fields filtered along W, ring by row */
    lk_s *pr; /* G x n rows: the map's partials, ring by row */
    lk_s *vr; /* G rows of vl: partials filtered back along H, zero-padded */
    int64_t vl;
    lk_v scale;
} lk__wio;

/* Fields of input row r (base: its first element) filtered along W into the
 * ring. */
LK_AI void lk__win_hrow(const void *inst, lk_win_fields_fn fields, const lk__wio *io, int64_t base,
                        int64_t r)
{
    lk_s *dst = io->hr + (r % io->n) * io->rl;
    for (int64_t c = 0; c < io->Wv; c += LK_W) {
        int k = io->Wv - c < LK_W ? (int)(io->Wv - c) : LK_W;
        lk_v acc[LK_WIN_MAX_FIELDS], f[LK_WIN_MAX_FIELDS];
        for (int32_t q = 0; q < io->F; q++)
            acc[q] = lk_zero();
        for (int32_t u = 0; u < io->n; u++) {
            lk_v x = lk__ld(io->x, io->xf, base + c + u, k, 0.0);
            lk_v t = io->t ? lk__ld(io->t, io->tf, base + c + u, k, 0.0) : lk_zero();
            fields(inst, x, t, f);
            for (int32_t q = 0; q < io->F; q++)
                acc[q] = lk_fma(io->tap[u], f[q], acc[q]);
        }
        for (int32_t q = 0; q < io->F; q++)
            lk_store(dst + q * io->n * io->rl + c, acc[q]);
    }
}

/* Valid row p: the map over the window's rows p .. p + n - 1 of the ring;
 * the terms of owned rows into sum, the partials into the ring. */
LK_AI void lk__win_map_row(const void *inst, lk_win_map_fn map, const lk__wio *io, int64_t p,
                           int own, int want_grad, lk_acc *sum)
{
    lk_s *prow = io->pr + (p % io->n) * io->rl;
    for (int64_t c = 0; c < io->Wv; c += LK_W) {
        int k = io->Wv - c < LK_W ? (int)(io->Wv - c) : LK_W;
        lk_v m[LK_WIN_MAX_FIELDS], dm[LK_WIN_MAX_FIELDS], loss;
        for (int32_t q = 0; q < io->F; q++)
            m[q] = lk_zero();
        for (int32_t v = 0; v < io->n; v++) {
            const lk_s *h = io->hr + ((p + v) % io->n) * io->rl + c;
            for (int32_t q = 0; q < io->F; q++)
                m[q] = lk_fma(io->tap[v], lk_load(h + q * io->n * io->rl), m[q]);
        }
        map(inst, m, &loss, want_grad ? dm : NULL);
        if (own)
            lk_acc_add(sum, k == LK_W ? loss : lk_keep(lk_first(k), loss));
        if (want_grad)
            for (int32_t q = 0; q < io->G; q++)
                lk_store(prow + q * io->n * io->rl + c, dm[q]);
    }
}

/* The gradient of input row q: the partials of valid rows q - n + 1 .. q
 * (those in [pa, pb)) filtered back along H, then along W. */
LK_AI void lk__win_grad_row(const void *inst, lk_win_grad_fn grad, const lk__wio *io, int64_t base,
                            int64_t q, int64_t pa, int64_t pb)
{
    const int64_t off = io->n - 1;
    for (int64_t c = 0; c < io->Wv; c += LK_W) {
        int k = io->Wv - c < LK_W ? (int)(io->Wv - c) : LK_W;
        lk_v V[LK_WIN_MAX_FIELDS];
        for (int32_t q2 = 0; q2 < io->G; q2++)
            V[q2] = lk_zero();
        for (int32_t v = 0; v < io->n; v++) {
            int64_t p = q - v;
            if (p < pa || p >= pb)
                continue;
            const lk_s *pr = io->pr + (p % io->n) * io->rl + c;
            for (int32_t q2 = 0; q2 < io->G; q2++)
                V[q2] = lk_fma(io->tap[v], lk_load(pr + q2 * io->n * io->rl), V[q2]);
        }
        for (int32_t q2 = 0; q2 < io->G; q2++)
            lk_storen(io->vr + q2 * io->vl + off + c, k, V[q2]);
    }
    for (int64_t c = 0; c < io->W; c += LK_W) {
        int k = io->W - c < LK_W ? (int)(io->W - c) : LK_W;
        lk_v G[LK_WIN_MAX_FIELDS];
        for (int32_t q2 = 0; q2 < io->G; q2++)
            G[q2] = lk_zero();
        for (int32_t u = 0; u < io->n; u++)
            for (int32_t q2 = 0; q2 < io->G; q2++)
                G[q2] = lk_fma(io->tap[u], lk_load(io->vr + q2 * io->vl + off + c - u), G[q2]);
        lk_v x = lk__ld(io->x, io->xf, base + c, k, 0.0);
        lk_v t = io->t ? lk__ld(io->t, io->tf, base + c, k, 0.0) : lk_zero();
        lk__put_grad(io->g, io->xf, base + c, k, grad(inst, x, t, G), io->scale, io->acc);
    }
}

/* Rows [r0, r1) of one plane (base: its first element). */
LK_AI void lk__win_band(const void *inst, lk_win_fields_fn fields, lk_win_map_fn map,
                        lk_win_grad_fn grad, const lk__wio *io, int64_t base, int64_t r0,
                        int64_t r1, int want_grad, lk_acc *sum)
{
    int64_t pa = want_grad ? (r0 - io->n + 1 > 0 ? r0 - io->n + 1 : 0) : r0;
    int64_t pb = r1 < io->Hv ? r1 : io->Hv;
    if (pa >= pb && !want_grad)
        return;
    for (int64_t r = pa; r < pa + io->n - 1; r++)
        lk__win_hrow(inst, fields, io, base + r * io->W, r);
    for (int64_t p = pa; p < pb; p++) {
        lk__win_hrow(inst, fields, io, base + (p + io->n - 1) * io->W, p + io->n - 1);
        lk__win_map_row(inst, map, io, p, p >= r0, want_grad, sum);
        if (want_grad && p >= r0)
            lk__win_grad_row(inst, grad, io, base + p * io->W, p, pa, pb);
    }
    if (want_grad)
        for (int64_t q = r0 > pb ? r0 : pb; q < r1; q++)
            lk__win_grad_row(inst, grad, io, base + q * io->W, q, pa, pb);
}

LK_AI lk_status lk_window_forward(const void *inst, const lk_plan *plan, const lk_block *blk,
                                  const lk_window *win, int32_t F, int32_t G,
                                  lk_win_fields_fn fields, lk_win_map_fn map, lk_win_grad_fn grad,
                                  lk_msg *msg)
{
    const lk_tensor *s = blk->slots;
    lk__wio io;
    io.x = s[0].data;
    io.xs = &s[0];
    io.t = s[1].data;
    io.xf = s[0].dtype == LK_DTYPE_F32;
    io.tf = s[1].dtype == LK_DTYPE_F32;
    io.g = blk->grads ? blk->grads[0].data : NULL;
    io.acc = (blk->flags & LK_BLOCK_GRAD_ACCUMULATE) != 0;
    io.scale = lk_set(blk->grad_scale);
    io.H = plan->aux[LK_STEN_AUX_H];
    io.W = plan->aux[LK_STEN_AUX_W];
    io.n = win->n;
    io.Hv = io.H - io.n + 1;
    io.Wv = io.W - io.n + 1;
    io.F = F;
    io.G = G;
    io.rl = lk__vround(io.Wv);
    io.vl = lk__vround(io.W) + 2 * (io.n - 1) + LK_W;
    for (int32_t u = 0; u < io.n; u++)
        io.tap[u] = lk_set(win->w[u]);
    size_t cells = (size_t)(F + G) * (size_t)io.n * (size_t)io.rl + (size_t)G * (size_t)io.vl;
    lk_s *mem = (lk_s *)calloc(cells ? cells : 1, sizeof(lk_s));
    if (!mem)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for the window's %zu rows",
                       (size_t)(F + G) * (size_t)io.n);
    io.hr = mem;
    io.pr = mem + (size_t)F * io.n * io.rl;
    io.vr = io.pr + (size_t)G * io.n * io.rl;
    /* infinite inputs fail the call, the first of the block's own rows named */
    for (int64_t i = blk->begin; i < blk->end; i += LK_W) {
        int k = blk->end - i < LK_W ? (int)(blk->end - i) : LK_W;
        if (lk_any(lk_eq(lk_abs(lk__ld(io.x, io.xf, i, k, 0.0)), lk_set(HUGE_VAL)))) {
            free(mem);
            return lk__sten_inf(io.xs, i, k, msg);
        }
    }
    lk_acc sum = lk_acc_zero();
    int64_t rb = blk->begin / io.W, re = (blk->end + io.W - 1) / io.W;
    for (int64_t pl = rb / io.H; pl * io.H < re; pl++) {
        int64_t r0 = rb - pl * io.H > 0 ? rb - pl * io.H : 0;
        int64_t r1 = re - pl * io.H < io.H ? re - pl * io.H : io.H;
        int64_t base = pl * io.H * io.W;
        if (io.g)
            lk__win_band(inst, fields, map, grad, &io, base, r0, r1, 1, &sum);
        else
            lk__win_band(inst, fields, map, grad, &io, base, r0, r1, 0, &sum);
    }
    free(mem);
    blk->stats[0] += lk_acc_sum(sum);
    return LK_OK;
}

/* A window family has double lanes only: the filtered second moments
 * (E[x^2] - E[x]^2) cancel too much in float lanes, so float32 data runs in
 * double lanes, read and written by conversion (LK__F64_FAMILY). */

/* A window family on (input, target): win_of(const T *) gives the window;
 * F fields, the first G of which depend on the input. */
#define LK_KERNELS_WINDOW(name, T, win_of, F, G, fields, map, grad)                                \
    LK_AI void name##__fields(const void *p, lk_v x, lk_v t, lk_v *f)                              \
    {                                                                                              \
        fields((const T *)p, x, t, f);                                                             \
    }                                                                                              \
    LK_AI void name##__map(const void *p, const lk_v *m, lk_v *loss, lk_v *dm)                     \
    {                                                                                              \
        map((const T *)p, m, loss, dm);                                                            \
    }                                                                                              \
    LK_AI lk_v name##__grad(const void *p, lk_v x, lk_v t, const lk_v *Gk)                         \
    {                                                                                              \
        return grad((const T *)p, x, t, Gk);                                                       \
    }                                                                                              \
    static lk_status name##__fwd(const void *inst, const lk_plan *plan, const lk_block *blk,       \
                                 lk_msg *msg)                                                      \
    {                                                                                              \
        const T *self = (const T *)inst;                                                           \
        return lk_window_forward(self, plan, blk, win_of(self), (F), (G), name##__fields,          \
                                 name##__map, name##__grad, msg);                                  \
    }                                                                                              \
    LK__KSET(name, name##__fwd, NULL, 0)                                                           \
    LK__F64_FAMILY(name)

/* One line for a window loss (FUSED, reduction mean by default). */
#define LK_WINDOW_LOSS(lid, T, win_of, F, G, fields, map, grad, hooks, ...)                        \
    LK_KERNELS_WINDOW(lid, T, win_of, F, G, fields, map, grad)                                     \
    LK_LOSS_DESC(lid, T, LK_LOSS_FUSED, NULL, NULL, LK_FAMILIES(&lid##__family), lk_slots_pair,    \
                 LK_REDUCTION_BIT(LK_REDUCTION_MEAN), hooks, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_STENCIL_H */
