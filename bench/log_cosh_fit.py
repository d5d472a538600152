#!/usr/bin/python3
"""The quartic of log_cosh's float log1p (lc_log1p in
plugins/regression/log_cosh.c).

Both forms of log_cosh take log1p(v) for v in [0, 0.3]: v = cosh d - 1 <=
0.295 below |d| = 0.75, v = exp(-2|d|) <= 0.224 above. There log1p(v) =
v + v^2 Q(v), Q a quartic fitted to (log1p(v) - v) / v^2 by weighted
least squares on Chebyshev nodes, the weights reweighted towards the
largest error relative to log1p(v) (Lawson's iteration). Prints the
coefficients, highest first as the kernel's Horner scheme reads them, and
the largest relative error of v + v^2 Q(v) with the coefficients rounded
to float, on a fine grid.

    /usr/bin/python3 bench/log_cosh_fit.py
"""
import numpy as np

LO, HI, DEGREE, NODES, ROUNDS = 0.0, 0.3, 4, 3000, 300


def q_exact(v):
    """(log1p(v) - v) / v^2, by its series where the quotient cancels."""
    small = v < 1e-4
    vs = np.where(small, 1.0, v)
    return np.where(small, -0.5 + v / 3 - v * v / 4 + v**3 / 5, (np.log1p(vs) - vs) / vs**2)


def main():
    k = np.arange(NODES)
    v = LO + (HI - LO) * (1 - np.cos((k + 0.5) * np.pi / NODES)) / 2
    vs = np.maximum(v, 1e-300)
    scale = np.log1p(vs) / vs**2  # an error in Q, relative to log1p(v)
    a = np.vander(v, DEGREE + 1, increasing=True)
    y = q_exact(v)
    weight = np.ones(NODES)
    for _ in range(ROUNDS):
        w = np.sqrt(weight) / scale
        c, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
        r = np.abs(a @ c - y) / scale
        weight *= r / r.mean() + 1e-300
        weight /= weight.sum()
    cf = c.astype(np.float32).astype(np.float64)
    grid = np.linspace(1e-6, HI, 400001)
    approx = grid + grid * grid * np.polyval(cf[::-1], grid)
    err = np.max(np.abs(approx / np.log1p(grid) - 1))
    for x in c[::-1]:
        print(repr(float(np.float32(x))))
    print(f"largest relative error on [{LO}, {HI}] with float coefficients: {err:.2e}")


if __name__ == "__main__":
    main()
