/* vecmath_cost.c: what the vector math library costs against memory speed.
 *
 * The binary losses' kernels are a streaming pass (read logits and targets,
 * write a gradient, sum a loss) plus one exp, one division and, for the
 * cross-entropy terms, one log1p per element. This program times that pass
 * over 16M float32 elements with the arithmetic added step by step, on
 * libmvec's AVX-512 (16 lanes) and AVX2 (8 lanes) float functions, so that
 * docs/performance.md can say how much of a loss's time is the math library
 * and how much is memory:
 *
 *   stream        g = x + t, sum x                 (the roofline's work)
 *   exp+div       e = exp(-|x|), sigmoid, g = s - t
 *   exp+div+log1p and the loss max(x,0) - x t + log1p(e) summed in double
 *
 * Usage: vecmath_cost [threads] [repeat]   (defaults 2 and 7; best time of
 * repeat). Built by meson only on x86-64 where libmvec's AVX-512 float
 * functions link; not installed. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__m512 _ZGVeN16v_expf(__m512 x);
__m512 _ZGVeN16v_log1pf(__m512 x);
__m256 _ZGVdN8v_expf(__m256 x);
__m256 _ZGVdN8v_log1pf(__m256 x);

#define N       (16l * 1024 * 1024)
#define MAX_THR 64

enum { STREAM, EXP_DIV, EXP_DIV_LOG1P, N_STEPS };
static const char *const step_names[N_STEPS] = {"stream", "exp+div", "exp+div+log1p"};

typedef struct job {
    const float *x, *t;
    float *g;
    long begin, end;
    int step, wide;
    double sum;
} job;

__attribute__((target("avx512f,avx512dq,avx2,fma"))) static void run512(job *j)
{
    __m512d acc = _mm512_setzero_pd();
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (long i = j->begin; i < j->end; i += 16) {
        __m512 x = _mm512_loadu_ps(j->x + i), t = _mm512_loadu_ps(j->t + i), g, l;
        if (j->step == STREAM) {
            g = _mm512_add_ps(x, t);
            l = x;
        } else {
            __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(zero, _mm512_abs_ps(x)));
            __m512 r = _mm512_div_ps(one, _mm512_add_ps(one, e));
            __mmask16 pos = _mm512_cmp_ps_mask(x, zero, _CMP_GE_OQ);
            g = _mm512_sub_ps(_mm512_mask_blend_ps(pos, _mm512_mul_ps(e, r), r), t);
            l = _mm512_sub_ps(_mm512_max_ps(x, zero), _mm512_mul_ps(x, t));
            if (j->step == EXP_DIV_LOG1P)
                l = _mm512_add_ps(l, _ZGVeN16v_log1pf(e));
        }
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(l)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(l, 1)));
        _mm512_storeu_ps(j->g + i, g);
    }
    j->sum = _mm512_reduce_add_pd(acc);
}

__attribute__((target("avx2,fma"))) static void run256(job *j)
{
    __m256d acc = _mm256_setzero_pd();
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (long i = j->begin; i < j->end; i += 8) {
        __m256 x = _mm256_loadu_ps(j->x + i), t = _mm256_loadu_ps(j->t + i), g, l;
        if (j->step == STREAM) {
            g = _mm256_add_ps(x, t);
            l = x;
        } else {
            __m256 e = _ZGVdN8v_expf(_mm256_or_ps(x, sign));
            __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
            __m256 pos = _mm256_cmp_ps(x, zero, _CMP_GE_OQ);
            g = _mm256_sub_ps(_mm256_blendv_ps(_mm256_mul_ps(e, r), r, pos), t);
            l = _mm256_sub_ps(_mm256_max_ps(x, zero), _mm256_mul_ps(x, t));
            if (j->step == EXP_DIV_LOG1P)
                l = _mm256_add_ps(l, _ZGVdN8v_log1pf(e));
        }
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(l)));
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(l, 1)));
        _mm256_storeu_ps(j->g + i, g);
    }
    double s[4];
    _mm256_storeu_pd(s, acc);
    j->sum = (s[0] + s[2]) + (s[1] + s[3]);
}

static void *worker(void *arg)
{
    job *j = arg;
    if (j->wide)
        run512(j);
    else
        run256(j);
    return NULL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static double time_step(const float *x, const float *t, float *g, int threads, int repeat, int step,
                        int wide)
{
    double best = 1e300;
    for (int r = 0; r < repeat; r++) {
        job jobs[MAX_THR];
        pthread_t tid[MAX_THR];
        long per = N / threads / 16 * 16;
        double t0 = now_ms();
        for (int k = 0; k < threads; k++) {
            jobs[k] = (job){x, t, g, per * k, k == threads - 1 ? N : per * (k + 1), step, wide, 0};
            pthread_create(&tid[k], NULL, worker, &jobs[k]);
        }
        for (int k = 0; k < threads; k++)
            pthread_join(tid[k], NULL);
        double ms = now_ms() - t0;
        best = ms < best ? ms : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2, repeat = argc > 2 ? atoi(argv[2]) : 7;
    if (threads < 1 || threads > MAX_THR || repeat < 1) {
        fprintf(stderr, "usage: vecmath_cost [threads 1..%d] [repeat >= 1]\n", MAX_THR);
        return 2;
    }
    float *x = aligned_alloc(64, N * sizeof *x), *t = aligned_alloc(64, N * sizeof *t),
          *g = aligned_alloc(64, N * sizeof *g);
    if (!x || !t || !g) {
        fprintf(stderr, "vecmath_cost: out of memory\n");
        return 1;
    }
    unsigned s = 12345;
    for (long i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = (float)((double)(s >> 8) / 16777216.0 * 16.0 - 8.0);
        t[i] = (float)((s >> 4) & 1);
        g[i] = 0.0f;
    }
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    printf("16M float32 elements, %d threads, best of %d\n", threads, repeat);
    printf("%-8s %-15s %9s %10s\n", "lanes", "step", "ms", "vs stream");
    for (int wide = has512; wide >= 0; wide--) {
        double stream = 0.0;
        for (int step = 0; step < N_STEPS; step++) {
            double ms = time_step(x, t, g, threads, repeat, step, wide);
            if (step == STREAM)
                stream = ms;
            printf("%-8s %-15s %9.2f %9.0f%%\n", wide ? "AVX-512" : "AVX2", step_names[step], ms,
                   100.0 * stream / ms);
        }
    }
    free(x);
    free(t);
    free(g);
    return 0;
}
