#!/usr/bin/python3
"""Golden data for the stencil family (sobolev, total_variation, ssim).

Run from anywhere with a Python that has torch (1.13 here) and numpy:

    /usr/bin/python3 tests/golden/make_stencil.py            # writes the goldens
    /usr/bin/python3 tests/golden/make_stencil.py --random 7 # compares build/host/losskit

PyTorch ships none of the three losses, so each reference is its formula in
plain torch ops, in float64, differentiated by autograd:

  sobolev          mean((x - t)^2) + grad_weight * sum over the last `dims`
                   dims of mean(diff(x - t, dim)^2) (torch.diff); a dim of
                   size 1 adds 0.
  total_variation  kornia's definition per sample: sum over everything but
                   dim 0 of |diff along -2| and |diff along -1|; autograd's
                   abs gives gradient 0 where a difference is 0.
  ssim             Wang et al. 2004 as pytorch-msssim and kornia compute it:
                   window-weighted raw moments by conv2d with the Gaussian
                   window (the outer product of the normalised 1-D window),
                   groups = channels, no padding; 1 - mean of the SSIM map.

It writes tests/golden/stencil/*.npy (inputs as float32 and float64,
reference gradients and outputs in float64) and
tests/golden/catalogue/stencil.json, read by tests/test_catalogue.c.
"""
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import LosskitError, options, path, run_losskit, save, save_tensors, write_json

OUT = "tests/golden/stencil"
CATALOGUE = "tests/golden/catalogue/stencil.json"
SEED = 20240712

# ---------------------------------------------------------------------------
# The formulas, in plain torch


def sobolev(x, t, dims=2, grad_weight=1.0):
    e = x - t
    v = (e * e).mean()
    for d in range(x.dim() - dims, x.dim()):
        if x.shape[d] > 1:
            de = torch.diff(e, dim=d)
            v = v + grad_weight * (de * de).mean()
    return v


def total_variation_none(x):
    d1 = torch.diff(x, dim=-2).abs()
    d2 = torch.diff(x, dim=-1).abs()
    rest = tuple(range(1, x.dim()))
    return d1.sum(dim=rest) + d2.sum(dim=rest)


def total_variation(x, reduction="mean"):
    v = total_variation_none(x)
    return {"none": v, "mean": v.mean(), "sum": v.sum()}[reduction]


def gauss_window(n, sigma):
    u = torch.arange(n, dtype=torch.float64) - (n - 1) // 2
    g = torch.exp(-(u * u) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim(x, t, window=11, sigma=1.5, data_range=1.0, k1=0.01, k2=0.03):
    C = x.shape[1]
    g = gauss_window(window, sigma)
    w = torch.outer(g, g).expand(C, 1, window, window).contiguous().to(x.dtype)

    def filt(a):
        return F.conv2d(a, w, groups=C)

    mx, mt = filt(x), filt(t)
    sxx = filt(x * x) - mx * mx
    stt = filt(t * t) - mt * mt
    sxt = filt(x * t) - mx * mt
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mx * mt + c1) * (2 * sxt + c2)) / ((mx * mx + mt * mt + c1) * (sxx + stt + c2))
    return 1.0 - smap.mean()


def reference(loss, params, reduction, tensors):
    """value (None for none), out (or None), grad w.r.t. input; float64."""
    x = torch.tensor(tensors["input"], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(tensors["target"], dtype=torch.float64) if "target" in tensors else None
    if loss == "sobolev":
        v = sobolev(x, t, **params)
    elif loss == "total_variation":
        v = total_variation(x, reduction)
    else:
        v = ssim(x, t, **params)
    if reduction == "none":
        v.sum().backward()
        return None, v.detach().numpy(), x.grad.numpy()
    v.backward()
    return float(v), None, x.grad.numpy()


# ---------------------------------------------------------------------------
# The committed cases


def golden_cases(rng):
    """(name, loss, params, reduction, shape, dtype, draw) of every case."""
    c = []
    for dt in ("float32", "float64"):
        c.append((f"sobolev_{dt}", "sobolev", {}, "mean", (2, 3, 6, 5), dt, "normal"))
        c.append((f"tv_{dt}_none", "total_variation", {}, "none", (2, 3, 6, 5), dt, "normal"))
        c.append((f"tv_{dt}_mean", "total_variation", {}, "mean", (2, 3, 6, 5), dt, "normal"))
        c.append((f"tv_{dt}_sum", "total_variation", {}, "sum", (2, 3, 6, 5), dt, "normal"))
        c.append((f"ssim_{dt}", "ssim", {}, "mean", (2, 3, 16, 14), dt, "unit"))
    c += [
        ("sobolev_dims1", "sobolev", {"dims": 1}, "mean", (3, 4, 9), "float64", "normal"),
        ("sobolev_dims3_gw025", "sobolev", {"dims": 3, "grad_weight": 0.25}, "mean",
         (2, 3, 5, 4), "float64", "normal"),
        ("sobolev_size1_dim", "sobolev", {"dims": 2, "grad_weight": 2.0}, "mean", (3, 1, 7),
         "float64", "normal"),
        ("sobolev_gw0", "sobolev", {"grad_weight": 0.0}, "mean", (4, 6), "float64", "normal"),
        ("sobolev_1d", "sobolev", {"dims": 1}, "mean", (11,), "float32", "normal"),
        ("sobolev_dims_rank", "sobolev", {"dims": 2}, "mean", (5, 7), "float64", "normal"),
        ("tv_rank3_none", "total_variation", {}, "none", (3, 5, 4), "float64", "normal"),
        ("tv_rank5_sum", "total_variation", {}, "sum", (2, 2, 3, 4, 5), "float64", "normal"),
        ("tv_h1_none", "total_variation", {}, "none", (2, 2, 1, 7), "float64", "normal"),
        ("tv_ties_none", "total_variation", {}, "none", (2, 2, 5, 5), "float64", "ties"),
        ("ssim_w7_s1", "ssim", {"window": 7, "sigma": 1.0}, "mean", (2, 2, 9, 12), "float64",
         "unit"),
        ("ssim_range_k", "ssim", {"data_range": 2.0, "k1": 0.02, "k2": 0.05}, "mean",
         (1, 2, 13, 15), "float64", "normal"),
        ("ssim_one_position", "ssim", {}, "mean", (1, 1, 11, 11), "float64", "unit"),
        ("ssim_w1", "ssim", {"window": 1}, "mean", (2, 1, 4, 5), "float32", "unit"),
    ]
    return c


def draw(rng, shape, kind):
    if kind == "unit":
        return rng.uniform(0.0, 1.0, shape)
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(np.float64)
    return rng.normal(0.0, 1.5, shape)


def has_target(loss):
    return loss != "total_variation"


def tensors_of(rng, loss, shape, kind, dt):
    x = draw(rng, shape, kind).astype(dt)
    out = {"input": x}
    if has_target(loss):
        t = draw(rng, shape, kind)
        if kind == "unit":  # a target that resembles the input, as in practice
            t = np.clip(x + rng.normal(0.0, 0.1, shape), 0.0, 1.0)
        out["target"] = t.astype(dt)
    return out


def write_goldens():
    rng = np.random.default_rng(SEED)
    os.makedirs(path(OUT), exist_ok=True)
    os.makedirs(os.path.dirname(path(CATALOGUE)), exist_ok=True)
    cases = []
    for name, loss, params, red, shape, dt, kind in golden_cases(rng):
        ts = tensors_of(rng, loss, shape, kind, dt)
        files = save_tensors(f"{OUT}/{name}", ts)
        value, out, grad = reference(loss, params, red, ts)
        case = {
            "name": name,
            "config": {"loss": loss, "params": params, "reduction": red},
            "tensors": files,
            "value": value,
            "grads": {"input": save(f"{OUT}/{name}_grad.npy", grad)},
        }
        if out is not None:
            case["out"] = save(f"{OUT}/{name}_out.npy", out)
        cases.append(case)
    write_json(CATALOGUE, cases)
    print(f"{len(cases)} cases -> {CATALOGUE}")


# ---------------------------------------------------------------------------
# --random: new shapes, parameters and seeds against the built runtime


def random_case(rng, loss):
    dt = str(rng.choice(["float32", "float64"]))
    # one case in six has rows longer than the edge driver's chunk (1024),
    # some longer than the residual path's piece (4096)
    long_row = int(rng.integers(1025, 5200)) if rng.integers(0, 6) == 0 else 0
    if loss == "sobolev":
        rank = int(rng.integers(1, 5))
        shape = tuple(int(rng.integers(1, 9)) for _ in range(rank))
        if long_row:
            shape = shape[:-1] + (long_row,)
        params = {"dims": int(rng.integers(1, rank + 1)),
                  "grad_weight": float(np.round(rng.uniform(0.0, 3.0), 3))}
        return params, "mean", shape, dt, "normal"
    if loss == "total_variation":
        rank = int(rng.integers(3, 6))
        shape = tuple(int(rng.integers(1, 9)) for _ in range(rank))
        if long_row:
            shape = shape[:-1] + (long_row,)
        return {}, str(rng.choice(["none", "mean", "sum"])), shape, dt, "normal"
    window = int(rng.choice([1, 3, 5, 7, 9, 11]))
    params = {"window": window, "sigma": float(np.round(rng.uniform(0.5, 3.0), 3)),
              "data_range": float(np.round(rng.uniform(0.5, 2.0), 3)),
              "k1": float(np.round(rng.uniform(0.005, 0.05), 4)),
              "k2": float(np.round(rng.uniform(0.01, 0.1), 4))}
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)),
             window + int(rng.integers(0, 12)), window + int(rng.integers(0, 12)))
    return params, "mean", shape, dt, "unit"


def rel_err(a, b, floor=1e-9):
    """The largest elementwise relative error, with an absolute floor."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float(np.max(np.abs(a - b) / scale))


def run_random(seed, n_per_loss):
    if seed == SEED:
        sys.exit("--random: pick a seed other than the goldens' own")
    rng = np.random.default_rng(seed)
    exe = path("build/host/losskit")
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for loss in ("sobolev", "total_variation", "ssim"):
            wv = wg = wg32 = 0.0  # wg32: float32 cases, strictly elementwise
            for i in range(n_per_loss):
                params, red, shape, dt, kind = random_case(rng, loss)
                ts = tensors_of(rng, loss, shape, kind, dt)
                value, out, grad = reference(loss, params, red, ts)
                try:
                    got, got_grads, got_out = run_losskit(
                        exe, tmp, {"loss": loss, "params": params, "reduction": red}, ts,
                        out=red == "none")
                except LosskitError as err:
                    print(f"{loss} {shape} {params} {red}: {err.stderr.strip()}")
                    wv = wg = float("inf")
                    continue
                if red == "none":
                    wv = max(wv, rel_err(got_out, out))
                else:
                    wv = max(wv, rel_err(got["value"], value))
                # every gradient element, float32 ones too, within 1e-5
                # relative of torch's float64 gradient (floor 1e-9)
                e = rel_err(got_grads["input"], grad)
                wg = max(wg, e)
                if dt == "float32":
                    wg32 = max(wg32, e)
            worst[loss] = (wv, wg)
            print(f"{loss:16s} {n_per_loss} cases: value max rel err {wv:.2e}, "
                  f"gradient max rel err per element {wg:.2e} (float32 cases: {wg32:.2e})")
    bad = [l for l, (v, g) in worst.items() if v > 1e-6 or g > 1e-5]
    if bad:
        print("FAIL:", ", ".join(bad))
        sys.exit(1)


def main():
    a = options(__doc__, None, [("--cases", {"type": int, "default": 40,
                                             "help": "per loss, with --random"})],
                losskit=False).parse_args()
    torch.set_default_dtype(torch.float64)
    if a.random is not None:
        run_random(a.random, a.cases)
    else:
        write_goldens()


if __name__ == "__main__":
    main()
