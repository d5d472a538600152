/* torch_losses.h: what the files of the torch family share. Private: nothing
 * here is exported (the family builds with -fvisibility=hidden).
 *
 * The family reproduces losses of torch.nn.functional exactly, conventions
 * included; README.md lists every formula and every edge case. */
#ifndef LOSSKIT_TORCH_LOSSES_H
#define LOSSKIT_TORCH_LOSSES_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "losskit/kernel.h"
#include "losskit/plugin.h"

/* The losses (cross_entropy.c). */
extern const lk_loss_desc torch_cross_entropy_desc;

/* Refuses strided (non C-order) tensors. The host of ABI 1.0 already does,
 * but a kernel that walks memory by hand must not trust that blindly. */
lk_status torch_check_layout(const lk_tensor *slots, int32_t n_slots, lk_msg *msg);

/* The hot chunk kernels are compiled twice, for AVX2 and for the x86-64
 * baseline (SSE2), and the dynamic loader picks one (a glibc IFUNC, local to
 * the module: nothing more is exported). Both run the same IEEE operations
 * per element (ISO C mode does not contract them into FMAs, and "avx2" does
 * not enable FMA), so the results are bitwise the same whichever runs;
 * AVX2 only runs four lanes instead of two. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && defined(__GLIBC__)
#define TORCH_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TORCH_CLONES
#endif

/* c * a, except that a zero coefficient gives 0 even when a is infinite:
 * a class that carries no weight (or no target mass) contributes nothing,
 * whatever its log-probability. */
static inline double torch_mul0(double c, double a)
{
    return c == 0.0 ? 0.0 : c * a;
}

static inline uint64_t torch_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline double torch_from_bits(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* exp(z) for z <= 0 (or NaN), within 1 ulp, without branches or calls so
 * that a loop over it vectorizes: libm's exp is a call per element and was
 * most of the cross-entropy kernel's time. fdlibm's method (as in musl):
 * z = k ln2 + r with |r| <= ln2 / 2, exp(r) = 1 + r + r c / (2 - c) with
 * c = r - r^2 P(r^2), then the result times 2^k. k is rounded with the
 * 1.5 * 2^52 trick and 2^k applied as two normal factors, so that results
 * down to the subnormals are right; z < -746 (-inf included) gives 0, and a
 * NaN stays NaN. exp(0) is exactly 1. */
static inline double torch_exp_nonpos(double z)
{
    const double inv_ln2 = 1.44269504088896338700e+00, shift = 0x1.8p52;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double p1 = 1.66666666666666019037e-01, p2 = -2.77777777770155933842e-03,
                 p3 = 6.61375632143793436117e-05, p4 = -1.65339022054652515390e-06,
                 p5 = 4.13813679705723846039e-08;
    z = z < -746.0 ? -746.0 : z;
    double kd = z * inv_ln2 + shift;
    uint64_t nk = torch_bits(shift) - torch_bits(kd); /* -k, in [0, 1077] */
    kd -= shift;
    double hi = z - kd * ln2_hi, lo = kd * ln2_lo, r = hi - lo, rr = r * r;
    double c = r - rr * (p1 + rr * (p2 + rr * (p3 + rr * (p4 + rr * p5))));
    double y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    uint64_t n1 = nk >> 1, n2 = nk - n1;
    double s1 = torch_from_bits((uint64_t)(1023 - n1) << 52);
    double s2 = torch_from_bits((uint64_t)(1023 - n2) << 52);
    return y * s1 * s2;
}

#endif /* LOSSKIT_TORCH_LOSSES_H */
