/* pipes.c: what an AVX-512 instruction costs a kernel on this CPU, beside
 * its fma and add pipes, and how long a dependency chain a loop can hide.
 *
 * The compute-bound losses (a log, an exp, a reciprocal per element) are
 * limited by one of two things: the number of instructions that compete
 * for the multiply-add pipes, or the length of the chain of dependent
 * instructions per vector, which the scheduler's window can overlap only
 * so far. This program measures both, so that a kernel's cost can be
 * estimated by counting (docs/performance.md):
 *
 *   1. cycles per trip of 8 independent zmm fmas, then of 8 fmas plus two
 *      of each instruction X: the increase is X's cost in the fma pipes
 *      (0: it runs beside them);
 *   2. the same against 8 independent zmm adds: X's cost in the add pipes;
 *   3. a loop whose every trip loads a vector and runs a chain of L
 *      dependent fmas: cycles per vector against the L an unlimited window
 *      would give;
 *   4. the divisions apart (dividers): two of an instruction beside 8
 *      fmas are bound by the divider, not by the pipes, when the divider
 *      takes more than 4 cycles per division (vdivps does), so step 1 and 2
 *      cannot tell its pipe cost. Step 4 times divisions alone (the
 *      divider's rate), then two beside 24 fmas and beside 24 adds, where
 *      the pipes are the bound.
 *
 * Cycles are nanoseconds times the clock the program measures first (a
 * chain of dependent integer adds, one per cycle). Usage: pipes (no
 * arguments). Built by meson with gcc on x86-64; it says so and exits
 * where the CPU lacks AVX-512. Not installed, not a test. */
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define CLOBBER                                                                                    \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm12",       \
        "xmm13", "k2", "rax"

/* ns per trip of the asm body, best of 3 runs of n trips */
#define TIME(result, n, body)                                                                      \
    do {                                                                                           \
        double best_ = 1e30;                                                                       \
        for (int r_ = 0; r_ < 3; r_++) {                                                           \
            double t0_ = now();                                                                    \
            for (long i_ = 0; i_ < (n); i_++)                                                      \
                __asm__ volatile(body ::: CLOBBER);                                                \
            double dt_ = (now() - t0_) / (double)(n)*1e9;                                          \
            if (dt_ < best_)                                                                       \
                best_ = dt_;                                                                       \
        }                                                                                          \
        (result) = best_;                                                                          \
    } while (0)

#define F(r)  "vfmadd231ps %%zmm10, %%zmm11, %%zmm" #r "\n\t"
#define A(r)  "vaddps %%zmm10, %%zmm11, %%zmm" #r "\n\t"
#define F8    F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7)
#define A8    A(0) A(1) A(2) A(3) A(4) A(5) A(6) A(7)
#define M8    F8 A8
/* two of an instruction, writing registers the base loop does not read */
#define X3(i) i " %%zmm10, %%zmm11, %%zmm8\n\t" i " %%zmm11, %%zmm10, %%zmm9\n\t"
#define X2(i) i " %%zmm10, %%zmm8\n\t" i " %%zmm11, %%zmm9\n\t"
#define XI(i) i " $1, %%zmm10, %%zmm8\n\t" i " $1, %%zmm11, %%zmm9\n\t"

#define PAIR(name, x)                                                                              \
    do {                                                                                           \
        double f_, a_, m_;                                                                         \
        TIME(f_, n, F8 x);                                                                         \
        TIME(a_, n, A8 x);                                                                         \
        TIME(m_, n, M8 x);                                                                         \
        printf("| %-26s | %5.2f | %5.2f | %5.2f |\n", name, (f_ - base_f) * ghz / 2.0,            \
               (a_ - base_a) * ghz / 2.0, (m_ - base_m) * ghz / 2.0);                              \
    } while (0)

static float buf[4096] __attribute__((aligned(64)));

static void chains(double ghz)
{
    typedef float v16 __attribute__((vector_size(64)));
    for (int i = 0; i < 4096; i++)
        buf[i] = 0.001f * (float)i;
    printf("\n| chain of L fmas per vector | cycles per vector | L |\n|---|---:|---:|\n");
    for (int L = 8; L <= 40; L += 8) {
        v16 acc = {0}, c, d;
        for (int k = 0; k < 16; k++)
            c[k] = 0.999f, d[k] = 0.001f;
        const long reps = 20000;
        double best = 1e30;
        for (int r = 0; r < 3; r++) {
            double t0 = now();
            for (long rep = 0; rep < reps; rep++)
                for (int i = 0; i < 4096; i += 16) {
                    v16 x = *(const v16 *)(buf + i);
                    for (int k = 0; k < L; k++)
                        __asm__("vfmadd132ps %2, %1, %0" : "+v"(x) : "v"(d), "v"(c));
                    acc += x;
                }
            double dt = (now() - t0) / (reps * 256.0) * 1e9;
            if (dt < best)
                best = dt;
        }
        float s = 0.0f;
        for (int k = 0; k < 16; k++)
            s += acc[k];
        printf("| %d (sum %.3g) | %.1f | %d |\n", L, (double)s, best * ghz, L);
    }
}

int main(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        printf("pipes: this CPU has no AVX-512; nothing to measure\n");
        return 0;
    }
    long n = 20000000;
    double clk;
    TIME(clk, n,
         "add $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n\t"
         "add $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n\t");
    double ghz = 8.0 / clk;
    __asm__ volatile("vbroadcastss %0, %%zmm10\n\tvbroadcastss %0, %%zmm11" ::"m"((float){1.5f})
                     : "xmm10", "xmm11");
    double base_f, base_a, base_m;
    TIME(base_f, n, F8);
    TIME(base_a, n, A8);
    TIME(base_m, n, M8);
    printf("clock %.2f GHz; 8 zmm fmas %.2f cycles, 8 zmm adds %.2f cycles, 8 of each %.2f "
           "cycles\n\n",
           ghz, base_f * ghz, base_a * ghz, base_m * ghz);
    printf("| instruction (zmm) | cycles beside fmas | cycles beside adds | cycles beside both |\n"
           "|---|---:|---:|---:|\n");
    PAIR("vfmadd231ps", X3("vfmadd231ps"));
    PAIR("vmovaps (register)", X2("vmovaps"));
    PAIR("vmulps", X3("vmulps"));
    PAIR("vaddps", X3("vaddps"));
    PAIR("vmaxps", X3("vmaxps"));
    PAIR("vcmpltps (into a mask)", "vcmpltps %%zmm10, %%zmm11, %%k2\n\tvcmpltps %%zmm11, %%zmm10, %%k2\n\t");
    PAIR("vpcmpgtd (into a mask)", "vpcmpgtd %%zmm10, %%zmm11, %%k2\n\tvpcmpgtd %%zmm11, %%zmm10, %%k2\n\t");
    PAIR("vblendmps", "vblendmps %%zmm10, %%zmm11, %%zmm8%{%%k2%}\n\tvblendmps %%zmm11, %%zmm10, %%zmm9%{%%k2%}\n\t");
    PAIR("vandps", X3("vandps"));
    PAIR("vpternlogd", "vpternlogd $0xac, %%zmm10, %%zmm11, %%zmm8\n\tvpternlogd $0xac, %%zmm11, %%zmm10, %%zmm9\n\t");
    PAIR("vpaddd", X3("vpaddd"));
    PAIR("vpslld", XI("vpslld"));
    PAIR("vpermps", X3("vpermps"));
    PAIR("vpermt2ps", X3("vpermt2ps"));
    PAIR("vrcp14ps", X2("vrcp14ps"));
    PAIR("vgetexpps", X2("vgetexpps"));
    PAIR("vgetmantps", XI("vgetmantps"));
    PAIR("vfixupimmps", "vfixupimmps $0, %%zmm10, %%zmm11, %%zmm8\n\tvfixupimmps $0, %%zmm11, %%zmm10, %%zmm9\n\t");
    PAIR("vscalefps", X3("vscalefps"));
    PAIR("vcvtps2pd (ymm to zmm)", "vcvtps2pd %%ymm10, %%zmm8\n\tvcvtps2pd %%ymm11, %%zmm9\n\t");
    PAIR("vaddpd", X3("vaddpd"));
    PAIR("vdivps", X3("vdivps"));
    PAIR("vptestmd (into a mask)", "vptestmd %%zmm10, %%zmm11, %%k2\n\tvptestmd %%zmm11, %%zmm10, %%k2\n\t");
    PAIR("vpcmpeqd (into a mask)", "vpcmpeqd %%zmm10, %%zmm11, %%k2\n\tvpcmpeqd %%zmm11, %%zmm10, %%k2\n\t");
    PAIR("vfpclassps (into a mask)", "vfpclassps $0x22, %%zmm10, %%k2\n\tvfpclassps $0x22, %%zmm11, %%k2\n\t");
    PAIR("vpmovd2m (into a mask)", "vpmovd2m %%zmm10, %%k2\n\tvpmovd2m %%zmm11, %%k2\n\t");
    PAIR("vpmovm2d (from a mask)", "vpmovm2d %%k2, %%zmm8\n\tvpmovm2d %%k2, %%zmm9\n\t");
    PAIR("vpsrad", XI("vpsrad"));
    PAIR("vpmaxsd", X3("vpmaxsd"));
    PAIR("vpminud", X3("vpminud"));
    PAIR("vpsubd", X3("vpsubd"));
    PAIR("vxorps", X3("vxorps"));
    PAIR("vcvtdq2ps", X2("vcvtdq2ps"));
    PAIR("vcvtps2dq", X2("vcvtps2dq"));
    PAIR("vrndscaleps", XI("vrndscaleps"));
    PAIR("vmulps (masked, merge)", "vmulps %%zmm10, %%zmm11, %%zmm8%{%%k2%}\n\tvmulps %%zmm11, %%zmm10, %%zmm9%{%%k2%}\n\t");
    PAIR("vaddps (masked, merge)", "vaddps %%zmm10, %%zmm11, %%zmm8%{%%k2%}\n\tvaddps %%zmm11, %%zmm10, %%zmm9%{%%k2%}\n\t");
    PAIR("vfmadd231ps (masked)", "vfmadd231ps %%zmm10, %%zmm11, %%zmm8%{%%k2%}\n\tvfmadd231ps %%zmm11, %%zmm10, %%zmm9%{%%k2%}\n\t");
    PAIR("vpsllvd", X3("vpsllvd"));
    PAIR("vpmulld", X3("vpmulld"));
    PAIR("vpermi2ps", X3("vpermi2ps"));
    PAIR("kandw + korw", "kandw %%k2, %%k2, %%k2\n\tkorw %%k2, %%k2, %%k2\n\t");
    /* 4: the divider's rate, then what a division costs the pipes beside
     * 24 fmas or adds (23.3 cycles, more than two divisions take the divider) */
    double d4, f24, a24, f24d, a24d;
    TIME(f24, n / 2, F8 F8 F8);
    TIME(a24, n / 2, A8 A8 A8);
    printf("\n| division (zmm) | divider: cycles per division | cycles beside 24 fmas | cycles "
           "beside 24 adds |\n|---|---:|---:|---:|\n");
    TIME(d4, n / 4, X3("vdivps") X3("vdivps"));
    TIME(f24d, n / 2, F8 F8 F8 X3("vdivps"));
    TIME(a24d, n / 2, A8 A8 A8 X3("vdivps"));
    printf("| vdivps | %5.2f | %5.2f | %5.2f |\n", d4 * ghz / 4.0, (f24d - f24) * ghz / 2.0,
           (a24d - a24) * ghz / 2.0);
    TIME(d4, n / 4, X3("vdivpd") X3("vdivpd"));
    TIME(f24d, n / 2, F8 F8 F8 X3("vdivpd"));
    TIME(a24d, n / 2, A8 A8 A8 X3("vdivpd"));
    printf("| vdivpd | %5.2f | %5.2f | %5.2f |\n", d4 * ghz / 4.0, (f24d - f24) * ghz / 2.0,
           (a24d - a24) * ghz / 2.0);
    chains(ghz);
    return 0;
}
