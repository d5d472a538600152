#!/usr/bin/python3
"""The table of the float table log (lk__f_log_tab in sdk/include/losskit/lanes.h).

The mantissa m of u lies in [3/4, 3/2); the top 4 bits of its stored
fraction pick interval j: j = 0..7 cover [1, 3/2) in steps of 1/16, j = 8..15
cover [3/4, 1) in steps of 1/32. Each interval has a float t = 1/c near 1 over
its centre (t = 1 for the two intervals beside 1) and the entry

    log c                 for j < 8,
    log 2f + log c        for j >= 8 (vgetexpps gives k - 1 there),

where log 2f is log 2 rounded to float, the constant the kernel's fma
multiplies k by. For j >= 8 the float t is searched among the floats within
0.4 % of 1 over the centre so that the entry lies as near its float as
possible (below 5e-13 for every entry), and r = m t - 1 stays in the
polynomial's range [-1/32, 1/16]. Prints the two rows as C initialisers.
"""
import math
import struct


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def from_bits(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


LOG2F = f32(math.log(2.0))


def interval(j):
    if j < 8:
        return 1.0 + j / 16.0, 1.0 + (j + 1) / 16.0
    return 0.75 + (j - 8) / 32.0, 0.75 + (j - 7) / 32.0


def entry(j, t):
    return (LOG2F if j >= 8 else 0.0) - math.log(t)


def search(j):
    lo, hi = interval(j)
    centre = (lo + hi) / 2.0
    b0 = bits(f32(1.0 / centre))
    best = None
    for d in range(-60000, 60001):
        t = from_bits(b0 + d)
        if abs(t * centre - 1.0) > 0.004:
            continue
        if lo * t - 1.0 < -1.0 / 32.0 or hi * t - 1.0 > 1.0 / 16.0:
            continue
        v = entry(j, t)
        err = abs(f32(v) - v)
        if best is None or err < best[0]:
            best = (err, t)
    return best[1]


def main():
    tinv, tlog = [], []
    for j in range(16):
        if j == 0 or j == 15:
            t = 1.0
        elif j < 8:  # the entries kept from the first table: 1 over the centre
            lo, hi = interval(j)
            t = f32(2.0 / (lo + hi))
        else:
            t = search(j)
        v = entry(j, t)
        tinv.append(t)
        tlog.append(f32(v))
        lo, hi = interval(j)
        print("/* j %2d: m in [%.5f, %.5f), 1/c %.9e, entry %.9e, off its float by %.2g, "
              "r in [%.4f, %.4f] */" % (j, lo, hi, t, v, abs(f32(v) - v), lo * t - 1, hi * t - 1))
    print("tinv: " + ", ".join("%.9ef" % t for t in tinv))
    print("tlog: " + ", ".join("%.9ef" % v for v in tlog))


if __name__ == "__main__":
    main()
