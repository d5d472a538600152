"""Writes the lower-scale heads of configs/deep_supervision.json next to
configs/data/input.npy and target.npy: logits at 1/2 and 1/4 resolution (the
full-scale logits average-pooled, plus noise, as a decoder's side outputs
would differ from its last one) and the masks max-pooled to match.

    /usr/bin/python3 configs/data/make_deep_supervision.py
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def pool(a, k, how):
    n, c, h, w = a.shape
    b = a.reshape(n, c, h // k, k, w // k, k)
    return b.mean(axis=(3, 5)) if how == "mean" else b.max(axis=(3, 5))


def main():
    x = np.load(os.path.join(HERE, "input.npy")).astype(np.float64)
    t = np.load(os.path.join(HERE, "target.npy")).astype(np.float64)
    rng = np.random.default_rng(20261202)
    for k in (2, 4):
        xk = pool(x, k, "mean") + 0.5 * rng.standard_normal(pool(x, k, "mean").shape)
        np.save(os.path.join(HERE, "logits_x%d.npy" % k), xk.astype(np.float32))
        np.save(os.path.join(HERE, "mask_x%d.npy" % k), pool(t, k, "max").astype(np.float32))


if __name__ == "__main__":
    main()
