#!/usr/bin/python3
"""The table and polynomial of the float table log (lk__f_log_tab in
sdk/include/losskit/lanes.h).

The mantissa m of u lies in [3/4, 3/2); the top 5 bits of its stored
fraction pick interval j: j = 0..15 cover [1, 3/2) in steps of 1/32,
j = 16..31 cover [3/4, 1) in steps of 1/64. Each interval has a float
t = 1/c near 1 over its centre (t = 1 for the two intervals beside 1, so
that r = m - 1 is exact there) and the entry

    log c                 for j < 16,
    log 2f + log c        for j >= 16 (vgetexpps gives k - 1 there),

where log 2f is log 2 rounded to float, the constant the kernel's fma
multiplies k by. Each other t is searched among the floats within 0.4 % of
1 over the centre so that the entry lies as near its float as possible
(below 1.5e-12 for every entry), and r = m t - 1 stays in the polynomial's
range [-1/64, 1/32].

The polynomial: log1p(r) = r + r^2 (a + b r + c r^2), (a, b, c) the minimax
fit of the relative error on that range (Lawson's iteration on a fine grid,
then a search among the floats near the rounded coefficients). Prints the
four table rows as C initialisers, the coefficients and the fit's largest
relative error.
"""
import itertools
import math
import struct

import numpy as np

RLO, RHI = -1.0 / 64.0, 1.0 / 32.0


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def from_bits(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


LOG2F = f32(math.log(2.0))


def interval(j):
    if j < 16:
        return 1.0 + j / 32.0, 1.0 + (j + 1) / 32.0
    return 0.75 + (j - 16) / 64.0, 0.75 + (j - 15) / 64.0


def entry(j, t):
    return (LOG2F if j >= 16 else 0.0) - math.log(t)


def search(j):
    lo, hi = interval(j)
    centre = (lo + hi) / 2.0
    b0 = bits(f32(1.0 / centre))
    best = None
    for d in range(-40000, 40001):
        t = from_bits(b0 + d)
        if abs(t * centre - 1.0) > 0.004:
            continue
        if lo * t - 1.0 < RLO or hi * t - 1.0 > RHI:
            continue
        v = entry(j, t)
        err = abs(f32(v) - v)
        if best is None or err < best[0]:
            best = (err, t)
    return best[1]


def fit():
    """(a, b, c) as floats and the largest relative error of r + r^2 (a +
    b r + c r^2) against log1p(r) on the range."""
    r = np.linspace(RLO, RHI, 200001)
    r = r[np.abs(r) > 1e-12]
    lg = np.log1p(r)
    # relative error = (r^2/L) (a + b r + c r^2) - (L - r)/L: linear in (a, b, c)
    A = np.vstack([r ** 2 / lg, r ** 3 / lg, r ** 4 / lg]).T
    y = (lg - r) / lg
    w = np.full(len(r), 1.0 / len(r))
    for _ in range(3000):  # Lawson: reweight by the error towards minimax
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
        w = w * np.abs(A @ c - y)
        w /= w.sum()
    base = [bits(f32(v)) for v in c]
    best = None
    for d in itertools.product(range(-3, 4), range(-30, 31, 2), range(-60, 61, 4)):
        cc = [from_bits(base[k] + d[k]) for k in range(3)]
        err = np.abs(A @ np.array(cc) - y).max()
        if best is None or err < best[0]:
            best = (err, cc)
    return best[1], best[0]


def row(vals):
    return ", ".join("%.9ef" % v for v in vals)


def main():
    tinv, tlog = [], []
    for j in range(32):
        t = 1.0 if j in (0, 31) else search(j)
        v = entry(j, t)
        tinv.append(t)
        tlog.append(f32(v))
        lo, hi = interval(j)
        print("/* j %2d: m in [%.6f, %.6f), 1/c %.9e, entry %.9e, off its float by %.2g, "
              "r in [%.5f, %.5f] */" % (j, lo, hi, t, v, abs(f32(v) - v), lo * t - 1, hi * t - 1))
    print("tinv0: " + row(tinv[:16]))
    print("tinv1: " + row(tinv[16:]))
    print("tlog0: " + row(tlog[:16]))
    print("tlog1: " + row(tlog[16:]))
    coef, err = fit()
    print("a, b, c: " + ", ".join("%.10ef" % v for v in coef))
    print("largest relative error of the fit: %.3g" % err)


if __name__ == "__main__":
    main()
