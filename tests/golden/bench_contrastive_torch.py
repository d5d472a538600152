#!/usr/bin/python3
"""Times the plain-op torch formulas of make_contrastive.py (the references
of ntxent and supcon; torch has neither loss) on the shape `losskit bench
--shape M,D` uses, for comparison with

    build-rel/host/losskit bench configs/ntxent.json --shape 512,128 --dtype float32 --threads 2

Usage: /usr/bin/python3 tests/golden/bench_contrastive_torch.py [M D [THREADS [DTYPE]]]
Prints the median and best milliseconds of forward and forward+backward per
loss (on a busy machine the best is the steadier figure).
"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_contrastive as mc  # noqa: E402


def median_ms(fn, repeat=20):
    """(median, best) milliseconds, as losskit bench --json reports them."""
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts)), 1e3 * min(ts)


def main():
    m = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    dtype = {"float32": torch.float32, "float64": torch.float64}[
        sys.argv[4] if len(sys.argv) > 4 else "float32"]
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(m, d, generator=g, dtype=dtype)
    labels = torch.randint(0, d, (m,), generator=g)
    forms = {
        "ntxent": lambda t: mc.ntxent_ce(t, 0.07),
        "supcon": lambda t: mc.supcon_official(t, labels, 0.07),
    }
    print(f"torch {torch.__version__}, ({m},{d}) {str(dtype)[6:]}, {threads} threads, ms")
    for name, f in forms.items():
        with torch.no_grad():
            fwd = median_ms(lambda: f(x))
        xr = x.clone().requires_grad_(True)

        def both():
            xr.grad = None
            f(xr).backward()

        fb = median_ms(both)
        print(f"  {name:7s} forward {fwd[0]:8.3f} (best {fwd[1]:8.3f})   "
              f"forward+backward {fb[0]:8.3f} (best {fb[1]:8.3f})")


if __name__ == "__main__":
    main()
