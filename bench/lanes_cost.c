/* lanes_cost.c: what the kernel layer's own float transcendentals cost a
 * loop on this CPU, alone and together, in cycles per 16-lane vector.
 *
 * bench/pipes prices single instructions; a loss's loop is a mix of them
 * with long dependency chains. This program times, over 2048 float32
 * elements held in L1 (one load and one store per vector, as a loss's
 * pass), the AVX-512 float lanes of losskit/lanes.h:
 *
 *   exp        lk_exp_minus(max(-87, x))                    (a sigmoid's exp)
 *   div        1 / (1 + |x|)                                (vdivps)
 *   log        lk__f_log_pos(9 + x)                          (the table log)
 *   exp+exp, log+log   two independent ones per vector
 *   exp+div+log        w = 1 + exp(-x), 1 / w + log w: one chain
 *   the same software pipelined 2, 3 and 4 deep (each trip one stage of
 *   as many vectors, as the staged elementwise drivers run), and
 *   unrolled by 2 and 4 (independent chains side by side)
 *
 * so that docs/performance.md can say how a compute-bound loss's time
 * divides between its pieces, and what pipelining buys. Cycles are
 * nanoseconds times the clock measured first (a chain of dependent integer
 * adds). Usage: lanes_cost (no arguments). Built by meson on x86-64 with
 * the AVX-512 variant's flags; not installed, not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "losskit/lanes.h"

#define N      2048 /* floats: 3 arrays of 8 KiB, in L1 */
#define ROUNDS 20000

static float X[N] __attribute__((aligned(64)));
static float Y[N] __attribute__((aligned(64)));
static float O[N] __attribute__((aligned(64)));

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* eight dependent integer adds a trip, one a cycle: the loop's own
 * counting hides beside them */
static double clock_ghz(void)
{
    const long n = 100000000;
    long x = 0;
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        for (long i = 0; i < n; i++)
            __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                             "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                             : "+r"(x));
        double t = now() - t0;
        best = t < best ? t : best;
    }
    return 8.0 * (double)n / best / 1e9;
}

/* best ns per pass over the arrays, of ROUNDS passes */
#define TIME(result, ...)                                                                          \
    do {                                                                                           \
        double best_ = 1e30;                                                                       \
        for (int r_ = 0; r_ < ROUNDS; r_++) {                                                      \
            double t0_ = now();                                                                    \
            __VA_ARGS__;                                                                           \
            __asm__ volatile("" ::: "memory");                                                     \
            double dt_ = (now() - t0_) * 1e9;                                                      \
            if (dt_ < best_)                                                                       \
                best_ = dt_;                                                                       \
        }                                                                                          \
        (result) = best_;                                                                          \
    } while (0)

/* one vector's result o from its x (and target y) */
#define LOOP(...)                                                                                  \
    for (int i = 0; i < N; i += LK_W) {                                                            \
        lk_v x = lk_load(X + i), y = lk_load(Y + i), o;                                            \
        (void)y;                                                                                   \
        __VA_ARGS__;                                                                               \
        lk_store(O + i, o);                                                                        \
    }

static inline lk_v sig_exp(lk_v x)
{
    return lk_exp_minus(lk_max(lk_set(-87.0), x));
}

static inline lk_v edl(lk_v x)
{
    lk_v w = lk_add(lk_set(1.0), sig_exp(x));
    return lk_add(lk_div(lk_set(1.0), w), lk__f_log_pos(w));
}

static void row(const char *name, double ns, double ghz)
{
    printf("| %-34s | %6.2f |\n", name, ns * ghz / (double)(N / LK_W));
}

int main(void)
{
#if !defined(LK_TARGET_AVX512) || !defined(LK_LANES_F32)
    puts("lanes_cost: needs the AVX-512 float lanes (built without them)");
    return 0;
#else
    if (!__builtin_cpu_supports("avx512f")) {
        puts("lanes_cost: this CPU has no AVX-512");
        return 0;
    }
    for (int i = 0; i < N; i++) {
        X[i] = (float)(rand() / (double)RAND_MAX * 16.0 - 8.0);
        Y[i] = (rand() & 1) ? 1.0f : 0.0f;
    }
    double ghz = clock_ghz(), t;
    printf("clock %.2f GHz; %d float32 elements in L1, best of %d passes\n\n", ghz, N, ROUNDS);
    printf("| loop | cycles per vector |\n|---|---:|\n");
    TIME(t, LOOP(o = lk_add(x, y)));
    row("load, add, store", t, ghz);
    TIME(t, LOOP(o = sig_exp(x)));
    row("exp", t, ghz);
    TIME(t, LOOP(o = lk_div(lk_set(1.0), lk_add(lk_set(1.0), lk_abs(x)))));
    row("div", t, ghz);
    TIME(t, LOOP(o = lk__f_log_pos(lk_add(lk_set(9.0), x))));
    row("log", t, ghz);
    TIME(t, LOOP(o = lk_add(sig_exp(x), sig_exp(y))));
    row("exp + exp (independent)", t, ghz);
    TIME(t, LOOP(o = lk_add(lk__f_log_pos(lk_add(lk_set(2.0), x)),
                            lk__f_log_pos(lk_add(lk_set(3.0), x)))));
    row("log + log (independent)", t, ghz);
    TIME(t, LOOP({
             lk_v w = lk_add(lk_set(1.0), sig_exp(x));
             o = lk_add(w, lk__f_log_pos(w));
         }));
    row("exp, then log (one chain)", t, ghz);
    TIME(t, LOOP(o = edl(x)));
    row("exp, div, log (one chain)", t, ghz);
    /* two deep: exp and div of the next vector, log of this one */
    TIME(t, {
        lk_v w = lk_add(lk_set(1.0), sig_exp(lk_load(X)));
        lk_v p = lk_div(lk_set(1.0), w);
        for (int i = 0; i + LK_W < N; i += LK_W) {
            lk_v wn = lk_add(lk_set(1.0), sig_exp(lk_load(X + i + LK_W)));
            lk_v pn = lk_div(lk_set(1.0), wn);
            lk_store(O + i, lk_add(p, lk__f_log_pos(w)));
            w = wn, p = pn;
        }
    });
    row("exp, div, log pipelined 2 deep", t, ghz);
    /* three deep: exp of the vector after next, div of the next, log */
    TIME(t, {
        lk_v e1 = sig_exp(lk_load(X + LK_W));
        lk_v w0 = lk_add(lk_set(1.0), sig_exp(lk_load(X)));
        lk_v p0 = lk_div(lk_set(1.0), w0);
        for (int i = 0; i + 2 * LK_W < N; i += LK_W) {
            lk_v e2 = sig_exp(lk_load(X + i + 2 * LK_W));
            lk_v w1 = lk_add(lk_set(1.0), e1), p1 = lk_div(lk_set(1.0), w1);
            lk_store(O + i, lk_add(p0, lk__f_log_pos(w0)));
            w0 = w1, p0 = p1, e1 = e2;
        }
    });
    row("exp, div, log pipelined 3 deep", t, ghz);
    /* four deep: exp, then w and div, then log, then the sum */
    TIME(t, {
        lk_v e2 = sig_exp(lk_load(X + 2 * LK_W));
        lk_v e1 = sig_exp(lk_load(X + LK_W));
        lk_v w0 = lk_add(lk_set(1.0), sig_exp(lk_load(X)));
        lk_v w1 = lk_add(lk_set(1.0), e1);
        lk_v p0 = lk_div(lk_set(1.0), w0), l0 = lk__f_log_pos(w0);
        for (int i = 0; i + 3 * LK_W < N; i += LK_W) {
            lk_v e3 = sig_exp(lk_load(X + i + 3 * LK_W));
            lk_v w2 = lk_add(lk_set(1.0), e2);
            lk_v p1 = lk_div(lk_set(1.0), w1), l1 = lk__f_log_pos(w1);
            lk_store(O + i, lk_add(p0, l0));
            w1 = w2, p0 = p1, l0 = l1, e2 = e3;
        }
    });
    row("exp, div, log pipelined 4 deep", t, ghz);
    TIME(
        t, for (int i = 0; i < N; i += 2 * LK_W) {
            lk_v o0 = edl(lk_load(X + i)), o1 = edl(lk_load(X + i + LK_W));
            lk_store(O + i, o0);
            lk_store(O + i + LK_W, o1);
        });
    row("exp, div, log unrolled by 2", t, ghz);
    TIME(
        t, for (int i = 0; i < N; i += 4 * LK_W) {
            lk_v o0 = edl(lk_load(X + i)), o1 = edl(lk_load(X + i + LK_W));
            lk_v o2 = edl(lk_load(X + i + 2 * LK_W)), o3 = edl(lk_load(X + i + 3 * LK_W));
            lk_store(O + i, o0);
            lk_store(O + i + LK_W, o1);
            lk_store(O + i + 2 * LK_W, o2);
            lk_store(O + i + 3 * LK_W, o3);
        });
    row("exp, div, log unrolled by 4", t, ghz);
    return 0;
#endif
}
