#!/usr/bin/python3
"""Golden data for the regression family, computed with PyTorch in float64.

    /usr/bin/python3 tests/golden/make_regression.py             # write the goldens
    /usr/bin/python3 tests/golden/make_regression.py --random 7  # compare a build

Without arguments it writes, deterministically (fixed seed, fixed order):
  tests/golden/regression/*.npy            inputs (float32 and float64 copies),
                                           reference outputs and gradients
  tests/golden/catalogue/regression.json   the cases (format: tests/test_catalogue.c)

References:
  smooth_l1, huber, poisson_nll, gaussian_nll  torch.nn.functional's own losses;
  log_cosh   not in torch: log(cosh(d)) written in plain torch ops, as
             log1p(2 sinh(d/2)^2) for |d| < 1 and |d| + log1p(exp(-2|d|)) - log 2
             beyond (the same function, without overflow or cancellation);
  robust     not in torch: Barron's general robust loss (CVPR 2019) in plain
             torch ops, (b/alpha) expm1((alpha/2) log1p(z^2/b)), b = |alpha - 2|,
             with its closed forms at alpha = 2 and 0. The script checks this
             reference against Barron's own pow form and, near alpha = 2 and 0,
             against a series written here (no torch, no mpmath).
The optional weight (a losskit extension) multiplies each element's loss;
mean divides by the element count. Every reference runs in float64 on the
stored values (float32 files upcast); gradients are torch autograd's, with
respect to the input (and var for gaussian_nll); reduction none's gradient is
that of the sum of the outputs.

float32 data: a float32 kernel cannot beat its inputs' own rounding, so where
an element's reference output or gradient is ill-conditioned at float32's
resolution (e.g. exp(x) - t near 0 in poisson_nll's gradient, 1/v - d^2/v^2
near 0 in gaussian_nll's), the element is redrawn: each float32 case holds only
elements whose references move by less than 3e-7 relative when any one input
moves by one float32 ulp either way (poisson_nll's input by at least 2^-23,
the rounding of exp(x) near 1). float64 data are not conditioned. The references of
float32 data take the parameters as a float32 computation holds them:
gaussian_nll's eps rounded to float32 (f32_config).

--random SEED draws new shapes, parameters and data (seeds never used by the
goldens), runs `build/host/losskit run ... --json` for every loss, reduction
and dtype into a temporary folder, compares with torch and prints each loss's
largest relative errors; it exits 1 if a value is off by more than 1e-6
relative or a gradient (or output) element by more than 1e-5 relative (with
the catalogue test's 1e-9 absolute floor).
"""
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import (cfg, elementwise_rel, main, path, record, rel, report, run_losskit, save,
                     write_json)

OUT = "tests/golden/regression"
CATALOGUE = "tests/golden/catalogue/regression.json"
SEED = 20261202
LOG2 = math.log(2.0)


# --------------------------------------------------------------------------
# References (float64 torch tensors in, per-element losses out)

def log_cosh_ref(x, t):
    d = x - t
    a = d.abs()
    small = a < 1.0
    ds = torch.where(small, d, torch.zeros_like(d))  # no inf in the unused branch
    lo = torch.log1p(2.0 * torch.sinh(0.5 * ds) ** 2)
    ab = torch.where(small, torch.ones_like(a), a)
    hi = ab + torch.log1p(torch.exp(-2.0 * ab)) - LOG2
    return torch.where(small, lo, hi)


def robust_ref(x, t, alpha, scale):
    """Barron's rho with expm1/log1p: accurate for every alpha in [-1000, 2]."""
    z = (x - t) / scale
    z2 = z * z
    if alpha == 2.0:
        return 0.5 * z2
    if alpha == 0.0:
        return torch.log1p(0.5 * z2)
    b = abs(alpha - 2.0)
    return (b / alpha) * torch.expm1(0.5 * alpha * torch.log1p(z2 / b))


def robust_pow(z, alpha):
    """Barron's published form, as his reference code computes it (numpy)."""
    b = abs(alpha - 2.0)
    return (b / alpha) * ((z * z / b + 1.0) ** (0.5 * alpha) - 1.0)


def robust_series(z, alpha):
    """An independent float64 reference near alpha = 0 and 2, by series.

    Near 0: rho = (b/2) L sum_k u^k / (k+1)!, u = alpha L / 2, L = log1p(z^2/b).
    Near 2 (b small): rho = ((b + z^2) e^(-b L / 2) - b) / alpha, e^(-b L/2) by
    its Taylor series; b L is small there unless z is huge."""
    b = abs(alpha - 2.0)
    L = np.log1p(z * z / b)
    out = np.empty_like(z)
    if abs(alpha) < 0.5:
        u = 0.5 * alpha * L
        s, term = np.zeros_like(z), np.ones_like(z)
        for k in range(40):
            s += term
            term = term * u / (k + 2)
        out = 0.5 * b * L * s
    else:
        v = -0.5 * b * L
        e, term = np.zeros_like(z), np.ones_like(z)
        for k in range(60):
            e += term
            term = term * v / (k + 1)
        out = ((b + z * z) * e - b) / alpha
    return out


def elem_loss(loss, p, x, t, u):
    """Per-element losses of a losskit config's loss and params."""
    if loss == "smooth_l1":
        if p.get("beta", 1.0) == 0.0:
            return F.l1_loss(x, t, reduction="none")  # see smooth_l1_beta0 below
        return F.smooth_l1_loss(x, t, reduction="none", beta=p.get("beta", 1.0))
    if loss == "huber":
        return F.huber_loss(x, t, reduction="none", delta=p.get("delta", 1.0))
    if loss == "log_cosh":
        return log_cosh_ref(x, t)
    if loss == "poisson_nll":
        return F.poisson_nll_loss(x, t, log_input=p.get("log_input", True),
                                  full=p.get("full", False), eps=p.get("eps", 1e-8),
                                  reduction="none")
    if loss == "robust":
        return robust_ref(x, t, p.get("alpha", 1.0), p.get("scale", 1.0))
    if loss == "gaussian_nll":
        return F.gaussian_nll_loss(x, t, u, full=p.get("full", False), eps=p.get("eps", 1e-6),
                                   reduction="none")
    raise KeyError(loss)


def smooth_l1_beta0(x, t):
    """beta = 0 is L1, and the reference is torch's l1_loss. torch 1.13's
    smooth_l1_loss agrees on every value and on every gradient but one: at
    x == t it returns -1 (its backward takes the sign as x > 0 ? 1 : -1),
    where l1_loss and losskit give 0. This checks exactly that."""
    x = x.clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    a = F.smooth_l1_loss(x, t, reduction="none", beta=0.0)
    b = F.l1_loss(x2, t, reduction="none")
    a.sum().backward()
    b.sum().backward()
    assert torch.equal(a, b)
    tie = x.detach() == t
    assert torch.equal(x.grad[~tie], x2.grad[~tie])
    assert bool((x.grad[tie] == -1.0).all()) and bool((x2.grad[tie] == 0.0).all())


BUILTIN = {"smooth_l1", "huber", "poisson_nll", "gaussian_nll"}
GRAD_SLOTS = {"gaussian_nll": ("input", "var")}


def reference(config, arrays, f32=False):
    """(value or None, out or None, {slot: grad}) for float64 numpy arrays;
    f32: the arrays are float32 data, upcast (see f32_config)."""
    if f32:
        config = f32_config(config)
    loss, p, red = config["loss"], config.get("params", {}), config.get("reduction", "mean")
    tens = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()}
    diff = GRAD_SLOTS.get(loss, ("input",))
    for k in diff:
        tens[k].requires_grad_(True)
    x, t, u, w = tens["input"], tens["target"], tens.get("var"), tens.get("weight")
    if loss == "smooth_l1" and p.get("beta", 1.0) == 0.0:
        smooth_l1_beta0(x.detach(), t)
    if w is None and loss in BUILTIN and red != "none":
        # torch's own reduction
        if loss == "smooth_l1" and p.get("beta", 1.0) == 0.0:
            r = F.l1_loss(x, t, reduction=red)
        elif loss == "smooth_l1":
            r = F.smooth_l1_loss(x, t, reduction=red, beta=p.get("beta", 1.0))
        elif loss == "huber":
            r = F.huber_loss(x, t, reduction=red, delta=p.get("delta", 1.0))
        elif loss == "poisson_nll":
            r = F.poisson_nll_loss(x, t, log_input=p.get("log_input", True),
                                   full=p.get("full", False), eps=p.get("eps", 1e-8),
                                   reduction=red)
        else:
            r = F.gaussian_nll_loss(x, t, u, full=p.get("full", False), eps=p.get("eps", 1e-6),
                                    reduction=red)
    else:
        el = elem_loss(loss, p, x, t, u)
        if w is not None:
            el = w * el
        r = el if red == "none" else el.mean() if red == "mean" else el.sum()
    if red == "none":
        out, value = r.detach().numpy().copy(), None
        r = r.sum()
    else:
        out, value = None, float(r)
    r.backward()
    return value, out, {k: tens[k].grad.numpy().copy() for k in diff}


# --------------------------------------------------------------------------
# Data

def draw(rng, kind, shape):
    """float64 inputs of one kind: {slot: array}."""
    n = int(np.prod(shape))
    x = rng.normal(0.0, 1.5, n)
    t = rng.normal(0.0, 1.5, n)
    if kind == "reg":  # residuals of every size, some exactly 0
        k = max(1, n // 10)
        t[:k] = x[:k]
        big = rng.uniform(size=n) < 0.1
        x[big] = t[big] + rng.choice([-1.0, 1.0], big.sum()) * 10 ** rng.uniform(1, 3, big.sum())
    elif kind == "wide":  # log_cosh: |x - t| from 1e-6 to 1e5
        d = rng.choice([-1.0, 1.0], n) * 10 ** rng.uniform(-6, 5, n)
        d[: max(1, n // 20)] = 0.0
        x = t + d
    elif kind == "counts":  # poisson, log-rates and counts 0..4
        x = rng.normal(0.0, 1.0, n)
        t = rng.integers(0, 5, n).astype(np.float64)
    elif kind == "soft":  # poisson, log-rates and real counts in [0, 5)
        x = rng.normal(0.0, 1.0, n)
        t = rng.uniform(0.0, 5.0, n)
    elif kind == "rates":  # poisson with log_input false: rates > 0
        x = rng.uniform(0.02, 4.0, n)
        t = rng.integers(0, 5, n).astype(np.float64)
    elif kind == "gauss":  # variances from 1e-9 to 50, some 0, some below eps
        v = np.exp(rng.normal(0.0, 1.5, n))
        low = rng.uniform(size=n) < 0.1
        v[low] = 10 ** rng.uniform(-9, -5, low.sum())
        v[: max(1, n // 40)] = 0.0
        return {"input": x.reshape(shape), "target": t.reshape(shape), "var": v.reshape(shape)}
    return {"input": x.reshape(shape), "target": t.reshape(shape)}


def f32_config(config):
    """The parameters a float32 computation holds: gaussian_nll clamps var at
    eps rounded to float32 (torch's clamp_ on a float32 tensor does the
    same), and where (x - t)^2 is near eps, d loss / d var moves by far more
    than eps's rounding (1 / v - (x - t)^2 / v^2 cancels). The references of
    float32 data take that eps."""
    if config["loss"] != "gaussian_nll":
        return config
    p = dict(config.get("params", {}))
    p["eps"] = float(np.float32(p.get("eps", 1e-6)))
    return dict(config, params=p)


def perturbed_refs(config, arrays, rng):
    """Per-element outputs and gradients of one evaluation with reduction
    none (as one flat vector), optionally with inputs moved by a float32 ulp."""
    cfg = dict(config, reduction="none")
    arrays = dict(arrays)
    arrays.pop("weight", None)
    _, out, grads = reference(cfg, arrays, f32=True)
    return np.concatenate([out.ravel()] + [g.ravel() for g in grads.values()])


def condition_f32(config, arrays, rng, kind, shape, tries=60):
    """float32 copies of the arrays whose every element is well-conditioned
    at float32 resolution (see the docstring); ill-conditioned ones redrawn."""
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    n = int(np.prod(shape))
    # each input moved alone, up and down by its ulp: moves of several
    # inputs at once can cancel (in gaussian_nll, d/v dx - d/v dt + (1/v -
    # d^2/v^2)/2 dv is near 0 for some signs while each term is not), and
    # then an element ill-conditioned in every input alone passed; the
    # moves are fixed, so an element that passed keeps passing and only the
    # redrawn ones are judged anew
    for _ in range(tries):
        base = perturbed_refs(config, arrays, rng)
        bad = np.zeros(n, dtype=bool)
        for k, v in arrays.items():
            f = v.astype(np.float64).ravel()
            ulp = np.spacing(np.abs(v.ravel())).astype(np.float64)
            # zeros stay (a variance of 0), and so do counts: their
            # float32 values are exact, and full's Stirling term jumps at 1
            if config["loss"] == "poisson_nll" and k == "input":
                # exp(x) near 1 rounds at 1's ulp, whatever x's own
                ulp = np.maximum(ulp, 2.0 ** -23)
            ulp[(f == 0.0) | ((k == "target") & (f == np.round(f)) & (kind != "reg"))] = 0.0
            for sign in (1.0, -1.0):
                moved = dict(arrays)
                moved[k] = (f + sign * ulp).reshape(shape)
                pert = perturbed_refs(config, moved, rng)
                rel = np.abs(pert - base) / np.maximum(np.abs(base), 1e-30)
                rel[np.abs(base) < 1e-9] = 0.0  # below the tests' absolute floor
                bad |= (rel.reshape(-1, n) > 3e-7).any(axis=0)
        if not bad.any():
            return arrays
        fresh = draw(rng, kind, shape)
        for k in arrays:
            if k in fresh:
                arrays[k].ravel()[bad] = fresh[k].ravel()[bad].astype(np.float32)
    raise RuntimeError("could not condition float32 data for %s" % config)


def condition_f32_fresh(config, arrays, rng, kind, shape, draws=5):
    """condition_f32, and where its redraws of single elements do not
    converge (a variance clamped to a tiny eps makes the residual's float32
    rounding visible at every element it redraws), whole fresh arrays."""
    for _ in range(draws):
        try:
            return condition_f32(config, arrays, rng, kind, shape)
        except RuntimeError:
            arrays = draw(rng, kind, shape)
    return condition_f32(config, arrays, rng, kind, shape)


# --------------------------------------------------------------------------
# The committed cases

# (name, config, data kind, dtype, weighted)
def case_list():
    L = []
    for dt in ("f32", "f64"):
        for red in ("mean", "sum", "none"):
            L.append(("smooth_l1_%s_%s" % (red, dt), cfg("smooth_l1", red), "reg", dt, False))
            L.append(("huber_%s_%s" % (red, dt), cfg("huber", red), "reg", dt, False))
            L.append(("log_cosh_%s_%s" % (red, dt), cfg("log_cosh", red), "reg", dt, False))
            L.append(("poisson_nll_%s_%s" % (red, dt), cfg("poisson_nll", red), "counts", dt,
                      False))
            L.append(("robust_%s_%s" % (red, dt), cfg("robust", red), "reg", dt, False))
            L.append(("gaussian_nll_%s_%s" % (red, dt), cfg("gaussian_nll", red), "gauss", dt,
                      False))
        for red in ("mean", "none"):
            for loss, kind in (("smooth_l1", "reg"), ("huber", "reg"), ("log_cosh", "reg"),
                               ("poisson_nll", "counts"), ("robust", "reg"),
                               ("gaussian_nll", "gauss")):
                L.append(("%s_weight_%s_%s" % (loss, red, dt), cfg(loss, red), kind, dt, True))
        # non-default parameters and edge cases
        L += [
            ("smooth_l1_beta0_%s" % dt, cfg("smooth_l1", beta=0.0), "reg", dt, False),
            ("smooth_l1_beta0_none_%s" % dt, cfg("smooth_l1", "none", beta=0.0), "reg", dt, False),
            ("smooth_l1_beta05_sum_%s" % dt, cfg("smooth_l1", "sum", beta=0.5), "reg", dt, False),
            ("smooth_l1_beta25_none_%s" % dt, cfg("smooth_l1", "none", beta=2.5), "reg", dt,
             False),
            ("huber_delta03_sum_%s" % dt, cfg("huber", "sum", delta=0.3), "reg", dt, False),
            ("huber_delta2_none_%s" % dt, cfg("huber", "none", delta=2.0), "reg", dt, False),
            ("log_cosh_wide_none_%s" % dt, cfg("log_cosh", "none"), "wide", dt, False),
            ("log_cosh_wide_mean_%s" % dt, cfg("log_cosh"), "wide", dt, False),
            ("poisson_nll_soft_none_%s" % dt, cfg("poisson_nll", "none"), "soft", dt, False),
            ("poisson_nll_full_%s" % dt, cfg("poisson_nll", full=True), "counts", dt, False),
            ("poisson_nll_full_soft_none_%s" % dt, cfg("poisson_nll", "none", full=True), "soft",
             dt, False),
            ("poisson_nll_rates_%s" % dt, cfg("poisson_nll", log_input=False), "rates", dt, False),
            ("poisson_nll_rates_full_none_%s" % dt,
             cfg("poisson_nll", "none", log_input=False, full=True), "rates", dt, False),
            ("poisson_nll_rates_eps_sum_%s" % dt,
             cfg("poisson_nll", "sum", log_input=False, eps=0.25), "rates", dt, False),
            ("gaussian_nll_full_%s" % dt, cfg("gaussian_nll", full=True), "gauss", dt, False),
            ("gaussian_nll_eps01_none_%s" % dt, cfg("gaussian_nll", "none", eps=0.1), "gauss", dt,
             False),
            ("gaussian_nll_full_eps_sum_%s" % dt, cfg("gaussian_nll", "sum", full=True, eps=1e-3),
             "gauss", dt, False),
        ]
        for a, s, tag in ((2.0, 1.0, "2"), (2.0 - 1e-6, 1.0, "2m1em6"), (1.5, 0.7, "1p5_s0p7"),
                          (1.0, 3.0, "1_s3"), (0.5, 1.0, "0p5"), (1e-6, 1.0, "1em6"),
                          (0.0, 1.0, "0"), (-1e-6, 0.7, "m1em6_s0p7"), (-2.0, 1.0, "m2"),
                          (-10.0, 2.0, "m10_s2"), (-1000.0, 1.0, "m1000")):
            for red in ("none", "mean"):
                L.append(("robust_a%s_%s_%s" % (tag, red, dt),
                          cfg("robust", red, alpha=a, scale=s), "reg", dt, False))
    return L


SHAPES = {"reg": (6, 5, 4), "wide": (8, 25), "counts": (5, 24), "soft": (4, 30),
          "rates": (3, 40), "gauss": (2, 3, 4, 5)}


def check_robust_reference(arrays, alpha, scale):
    """The torch reference against Barron's pow form and, near alpha = 0 and
    2, against the series (float64, numpy, independent of torch)."""
    z = (arrays["input"].astype(np.float64) - arrays["target"].astype(np.float64)) / scale
    ref = robust_ref(torch.from_numpy(arrays["input"].astype(np.float64)),
                     torch.from_numpy(arrays["target"].astype(np.float64)), alpha, scale).numpy()
    if alpha in (0.0, 2.0):
        return
    if abs(alpha) < 1e-3 or abs(alpha - 2.0) < 1e-3:
        ser = robust_series(z, alpha)
        err = np.max(np.abs(ser - ref) / np.maximum(np.abs(ref), 1e-300))
        assert err < 1e-10, "alpha %g: series and expm1 forms differ by %g" % (alpha, err)
    else:
        pw = robust_pow(z, alpha)
        err = np.max(np.abs(pw - ref) / np.maximum(np.abs(ref), 1e-300))
        assert err < 1e-8, "alpha %g: pow and expm1 forms differ by %g" % (alpha, err)


def write_goldens():
    torch.set_default_dtype(torch.float64)
    os.makedirs(path(OUT), exist_ok=True)
    os.makedirs(os.path.dirname(path(CATALOGUE)), exist_ok=True)
    rng = np.random.default_rng(SEED)
    base = {kind: draw(rng, kind, shape) for kind, shape in SHAPES.items()}
    weights = {kind: rng.uniform(0.2, 2.0, shape) for kind, shape in SHAPES.items()}
    for kind in weights:
        weights[kind].ravel()[:3] = 0.0  # a zero weight drops its element
    saved = {}

    def files_for(name, config, kind, dt, weighted):
        arrays = dict(base[kind])
        if dt == "f32":
            arrays = condition_f32(config, arrays, np.random.default_rng(SEED + 1), kind,
                                   SHAPES[kind])
            key = (kind, config["loss"], json.dumps(config.get("params", {}), sort_keys=True))
        else:
            key = (kind, "f64")
        if weighted:
            arrays["weight"] = weights[kind].astype(np.float32 if dt == "f32" else np.float64)
        if key not in saved:  # float32 data differ per config (conditioning)
            stem = "%s_%s" % (kind, dt) if dt == "f64" else name
            saved[key] = {k: save("%s/%s_%s.npy" % (OUT, stem, k), v)
                          for k, v in arrays.items() if k != "weight"}
        rels = dict(saved[key])
        if weighted:
            rels["weight"] = save("%s/weight_%s_%s.npy" % (OUT, kind, dt), arrays["weight"])
        return arrays, rels

    cases = []
    for name, config, kind, dt, weighted in case_list():
        arrays, rels = files_for(name, config, kind, dt, weighted)
        # every reference from the stored values, upcast
        stored = {k: np.load(path(v)).astype(np.float64) for k, v in rels.items()}
        if config["loss"] == "robust":
            p = config.get("params", {})
            check_robust_reference(stored, p.get("alpha", 1.0), p.get("scale", 1.0))
        value, out, grads = reference(config, stored, f32=dt == "f32")
        case = {"name": name, "config": config, "tensors": rels, "value": value,
                "grads": {k: save("%s/%s_grad_%s.npy" % (OUT, name, k), g)
                          for k, g in grads.items()}}
        if out is not None:
            case["out"] = save("%s/%s_out.npy" % (OUT, name), out)
        assert value is None or np.isfinite(value), name
        cases.append(case)
    write_json(CATALOGUE, cases)
    print("wrote %d cases to %s" % (len(cases), CATALOGUE))


# --------------------------------------------------------------------------
# --random: compare a build with torch on data no test uses

def random_params(rng, loss):
    if loss == "smooth_l1":
        return {"beta": float(rng.choice([0.0, rng.uniform(0.05, 3.0)]))}
    if loss == "huber":
        return {"delta": float(rng.uniform(0.05, 3.0))}
    if loss == "poisson_nll":
        return {"log_input": bool(rng.integers(0, 2)), "full": bool(rng.integers(0, 2)),
                "eps": float(10 ** rng.uniform(-9, -1))}
    if loss == "robust":
        a = float(rng.choice([rng.uniform(-1000, 2), rng.uniform(-3, 2),
                              rng.choice([0.0, 2.0]) + rng.choice([-1, 1]) * 10 ** rng.uniform(-8, -2)]))
        return {"alpha": min(a, 2.0), "scale": float(10 ** rng.uniform(-1, 1))}
    if loss == "gaussian_nll":
        return {"full": bool(rng.integers(0, 2)), "eps": float(10 ** rng.uniform(-8, -1))}
    return {}


KIND = {"smooth_l1": "reg", "huber": "reg", "log_cosh": "wide", "robust": "reg",
        "gaussian_nll": "gauss"}


def run_random(seed, exe):
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(1_000_003 * (seed + 1) + 17)  # never SEED
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for loss in ("smooth_l1", "huber", "log_cosh", "poisson_nll", "robust", "gaussian_nll"):
            for rep in range(4):
                params = random_params(rng, loss)
                kind = KIND.get(loss) or ("counts" if params.get("log_input", True) else "rates")
                if loss == "poisson_nll" and params.get("log_input", True) and rng.uniform() < 0.5:
                    kind = "soft"
                if rep == 0:  # several blocks of the driver, and a ragged tail
                    shape = (int(rng.integers(40000, 70000)),)
                else:
                    ndim = int(rng.integers(1, 5))
                    shape = tuple(int(s) for s in rng.integers(1, 9, ndim))
                arrays = draw(rng, kind, shape)
                weighted = rng.uniform() < 0.4
                for dt in ("f64", "f32"):
                    for red in ("mean", "sum", "none"):
                        config = cfg(loss, red, **params)
                        a = dict(arrays)
                        if dt == "f32":
                            a = condition_f32_fresh(config, a, rng, kind, shape)
                        if weighted:
                            a["weight"] = rng.uniform(0.2, 2.0, shape).astype(
                                np.float32 if dt == "f32" else np.float64)
                        record(worst, (loss, dt), *compare_run(exe, tmp, config, a))
    return report(seed, worst, "torch (float64 reference)", 13, "gradient/output")


def compare_run(exe, tmp, config, arrays):
    diff = GRAD_SLOTS.get(config["loss"], ("input",))
    got, got_grads, got_out = run_losskit(exe, tmp, config, arrays, diff,
                                          config["reduction"] == "none")
    value, out, grads = reference(config, {k: v.astype(np.float64) for k, v in arrays.items()},
                                  f32=arrays["input"].dtype == np.float32)
    ve = 0.0 if value is None else rel(got["value"], value)
    ge = 0.0
    for k in diff:
        ge = max(ge, elementwise_rel(got_grads[k], grads[k], nan_equal=True))
    if out is not None:
        ge = max(ge, elementwise_rel(got_out, out, nan_equal=True))
    return ve, ge


if __name__ == "__main__":
    sys.exit(main(__doc__, write_goldens, run_random))
