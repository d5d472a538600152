#!/usr/bin/python3
"""Golden data for the classification family, computed by PyTorch (1.13).

    /usr/bin/python3 tests/golden/make_classification.py            # the goldens
    /usr/bin/python3 tests/golden/make_classification.py --random 7 # a fresh comparison

Without arguments it writes, deterministically (fixed seed, fixed order),
tests/golden/classification/*.npy (inputs in float32 and float64, reference
gradients and reduction-none outputs) and tests/golden/catalogue/
classification.json, the list of cases tests/test_catalogue.c runs.

Every reference is computed by torch in float64 on the stored values (float32
inputs upcast): torch.nn.functional.binary_cross_entropy, nll_loss, kl_div and
multilabel_soft_margin_loss. torch has no asymmetric loss: asl() below writes
timm's AsymmetricLossMultiLabel (timm/loss/asymmetric_loss.py, the multilabel
ASL of Ridnik et al., ICCV 2021) in plain torch ops, with its default
disable_torch_grad_focal_loss=False, so that the gradient flows through the
focusing weight.

With --random SEED it draws new shapes, parameters and data (seeds never used
by the goldens), runs build/host/losskit run on them, compares with torch and
prints the largest relative errors per loss; the exit status is 1 when a
value is off by more than 1e-6 (a float32 kl_div value: 1e-6 of the same
reduction of its terms' magnitudes, where terms of both signs cancel; see
value_error), or an element of a float64 gradient or
output by more than 1e-5 (relative, with a 1e-9 absolute floor, as the
catalogue test), or a float32 gradient by more than 1e-5 of its largest
element. float32 elementwise errors are printed, not judged: where a
float32 result is a small difference of larger terms (a soft target's
gradient near its zero, kl_div's t (log t - x) where log t ~ x) it carries
float32 rounding relative to those terms, as torch's own float32 result
does.
"""
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import options, path, run_losskit, save, write_json

OUT = "tests/golden/classification"
CATALOGUE = "tests/golden/catalogue/classification.json"
SEED = 20240917
DTYPES = {"f32": np.float32, "f64": np.float64}


# ---------------------------------------------------------------------------
# References: config + float64/int64 torch tensors -> loss (value or per element)


def asl(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
    """timm's AsymmetricLossMultiLabel.forward before its reduction, as the
    per-element loss (timm returns -loss.sum()); plain torch ops."""
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        loss = loss * one_sided_w
    return -loss


def reduce(loss, red, batch):
    if red == "none":
        return loss
    if red == "sum":
        return loss.sum()
    if red == "mean":
        return loss.mean()
    return loss.sum() / batch  # batchmean


def reference(config, t):
    """The loss a losskit config describes, on torch tensors t (by slot)."""
    loss, p, red = config["loss"], config.get("params", {}), config.get("reduction", "mean")
    x = t["input"]
    if loss == "bce":
        return F.binary_cross_entropy(x, t["target"], weight=t.get("weight"), reduction=red)
    if loss == "nll":
        w = torch.tensor(p["weight"], dtype=torch.float64) if p.get("weight") else None
        v = F.nll_loss(x, t["target"], weight=w, ignore_index=p.get("ignore_index", -100),
                       reduction=red)
        if red == "mean" and torch.isnan(v) and not torch.isnan(x).any():
            # every position ignored or weighing 0: torch's 0/0; losskit's
            # mean over nothing is 0 (docs/losses/classification.md)
            v = (x * 0.0).sum()  # and a zero gradient, as documented
        return v
    if loss == "kl_div":
        return F.kl_div(x, t["target"], reduction=red, log_target=p.get("log_target", False))
    if loss == "multilabel_soft_margin":
        w = torch.tensor(p["weight"], dtype=torch.float64) if p.get("weight") else None
        return F.multilabel_soft_margin_loss(x, t["target"], weight=w, reduction=red)
    if loss == "asymmetric":
        red = config.get("reduction", "sum")  # losskit's default is timm's sum
        el = asl(x, t["target"], **p)
        return reduce(el, red, x.shape[0] if x.dim() else 1)
    raise ValueError(loss)


# ---------------------------------------------------------------------------
# Data


def probs(rng, shape, dim):
    """Random distributions along dim (softmax of noise)."""
    z = np.exp(rng.normal(0.0, 1.5, shape))
    return z / z.sum(axis=dim, keepdims=True)


def log_probs(rng, shape, dim):
    z = rng.normal(0.0, 2.0, shape)
    z = z - z.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


def targets01(rng, shape, soft):
    t = (rng.uniform(size=shape) < 0.4).astype(np.float64)
    if soft:
        s = rng.uniform(size=shape) < 0.5
        t[s] = rng.uniform(size=int(s.sum()))
    return t


def draw(rng, loss, shape, params, soft=True):
    """The tensors of one case (float64 / int64 numpy), by slot."""
    if loss == "bce":
        x = rng.uniform(0.0, 1.0, shape)
        return {"input": x, "target": targets01(rng, shape, soft)}
    if loss == "nll":
        C = shape[0] if len(shape) == 1 else shape[1]
        tshape = () if len(shape) == 1 else shape[:1] + shape[2:]
        y = np.asarray(rng.integers(0, C, tshape), dtype=np.int64)
        ign = params.get("ignore_index", -100)
        if y.ndim:
            y[rng.uniform(size=tshape) < 0.2] = ign
        return {"input": log_probs(rng, shape, 0 if len(shape) == 1 else 1), "target": y}
    if loss == "kl_div":
        dim = 0 if len(shape) == 1 else 1
        t = probs(rng, shape, dim)
        if params.get("log_target"):
            t = np.log(t)
        else:
            t[rng.uniform(size=shape) < 0.15] = 0.0  # zero probabilities contribute 0
        return {"input": log_probs(rng, shape, dim), "target": t}
    if loss == "multilabel_soft_margin":
        return {"input": rng.normal(0.0, 2.0, shape), "target": targets01(rng, shape, soft)}
    if loss == "asymmetric":
        x = rng.normal(0.0, 2.5, shape)
        return {"input": x, "target": targets01(rng, shape, soft)}
    raise ValueError(loss)


def as_dtype(arrays, dt):
    """Float arrays in dtype dt (int64 kept)."""
    return {k: (v.astype(DTYPES[dt]) if v.dtype.kind == "f" else v) for k, v in arrays.items()}


def evaluate(config, arrays):
    """torch in float64 on the given arrays: (value or None, out or None,
    {slot: grad}) for the input slot."""
    t = {}
    for k, v in arrays.items():
        tt = torch.from_numpy(np.array(v))  # a copy; 0-d stays 0-d
        t[k] = tt.double() if v.dtype.kind == "f" else tt
    t["input"].requires_grad_(True)
    loss = reference(config, t)
    red = config.get("reduction", "sum" if config["loss"] == "asymmetric" else "mean")
    scalar = loss.sum() if red == "none" else loss
    scalar.backward()
    grad = t["input"].grad.numpy().copy()
    if red == "none":
        return None, loss.detach().numpy().copy(), {"input": grad}
    return float(loss.detach()), None, {"input": grad}


# ---------------------------------------------------------------------------
# The goldens


def cfg(loss, params, red):
    return {"loss": loss, "params": params, "reduction": red}


def golden_cases():
    """(name, config, shape, dtype, soft, special) in a fixed order; special
    replaces drawn tensors (edge cases)."""
    cases = []
    # bce: reductions, dtypes, weight, the clamp at 0 and 1
    cases += [
        ("bce_mean_f32", cfg("bce", {}, "mean"), (4, 5, 6), "f32", True, None),
        ("bce_sum_f64", cfg("bce", {}, "sum"), (6, 7), "f64", True, None),
        ("bce_none_f32", cfg("bce", {}, "none"), (3, 11), "f32", True, None),
        ("bce_weight_mean_f64", cfg("bce", {}, "mean"), (5, 8), "f64", True, "weight"),
        ("bce_weight_none_f32", cfg("bce", {}, "none"), (2, 3, 7), "f32", False, "weight"),
        ("bce_edges_none_f64", cfg("bce", {}, "none"), None, "f64", False, "bce_edges"),
        ("bce_edges_sum_f32", cfg("bce", {}, "sum"), None, "f32", False, "bce_edges"),
    ]
    # nll: (N, C), (N, C, d1, d2), (C,); weight, ignore_index
    w5, w3 = [0.5, 2.0, 1.0, 0.25, 3.0], [1.5, 0.2, 0.8]
    cases += [
        ("nll_2d_mean_f32", cfg("nll", {}, "mean"), (9, 5), "f32", True, None),
        ("nll_2d_weight_mean_f64", cfg("nll", {"weight": w5}, "mean"), (9, 5), "f64", True, None),
        ("nll_2d_weight_sum_f32", cfg("nll", {"weight": w5}, "sum"), (9, 5), "f32", True, None),
        ("nll_2d_weight_none_f64", cfg("nll", {"weight": w5}, "none"), (9, 5), "f64", True, None),
        ("nll_4d_mean_f64", cfg("nll", {"weight": w3}, "mean"), (2, 3, 4, 5), "f64", True, None),
        ("nll_4d_none_f32", cfg("nll", {}, "none"), (2, 3, 4, 5), "f32", True, None),
        ("nll_3d_ignore1_mean_f32", cfg("nll", {"ignore_index": 1, "weight": w3}, "mean"),
         (3, 3, 7), "f32", True, None),
        ("nll_1d_mean_f64", cfg("nll", {}, "mean"), (6,), "f64", True, None),
        ("nll_1d_weight_none_f32", cfg("nll", {"weight": [0.3, 1.0, 2.0, 0.7, 1.1, 0.9]}, "none"),
         (6,), "f32", True, None),
        ("nll_all_ignored_sum_f64", cfg("nll", {}, "sum"), (4, 3), "f64", True, "all_ignored"),
        ("nll_all_ignored_none_f32", cfg("nll", {}, "none"), (4, 3), "f32", True, "all_ignored"),
    ]
    # kl_div: every reduction, log_target, zero target probabilities
    cases += [
        ("kl_div_mean_f32", cfg("kl_div", {}, "mean"), (4, 6, 5), "f32", True, None),
        ("kl_div_batchmean_f64", cfg("kl_div", {}, "batchmean"), (7, 9), "f64", True, None),
        ("kl_div_batchmean_f32", cfg("kl_div", {}, "batchmean"), (7, 9), "f32", True, None),
        ("kl_div_sum_f64", cfg("kl_div", {}, "sum"), (3, 4, 5), "f64", True, None),
        ("kl_div_none_f64", cfg("kl_div", {}, "none"), (5, 8), "f64", True, None),
        ("kl_div_log_target_batchmean_f32", cfg("kl_div", {"log_target": True}, "batchmean"),
         (6, 10), "f32", True, None),
        ("kl_div_log_target_none_f64", cfg("kl_div", {"log_target": True}, "none"), (4, 9),
         "f64", True, None),
        ("kl_div_log_target_mean_f64", cfg("kl_div", {"log_target": True}, "mean"), (2, 3, 8),
         "f64", True, None),
        ("kl_div_1d_sum_f32", cfg("kl_div", {}, "sum"), (11,), "f32", True, None),
    ]
    # multilabel_soft_margin: (N, C), (C,), more rows dims; weight lists
    m5 = [0.5, 1.5, 1.0, 2.0, 0.25]
    cases += [
        ("msm_mean_f32", cfg("multilabel_soft_margin", {}, "mean"), (8, 5), "f32", False, None),
        ("msm_weight_sum_f64", cfg("multilabel_soft_margin", {"weight": m5}, "sum"), (8, 5),
         "f64", True, None),
        ("msm_weight_none_f32", cfg("multilabel_soft_margin", {"weight": m5}, "none"), (8, 5),
         "f32", True, None),
        ("msm_weight1_mean_f64", cfg("multilabel_soft_margin", {"weight": [0.7]}, "mean"),
         (6, 23), "f64", True, None),
        ("msm_1d_none_f64", cfg("multilabel_soft_margin", {}, "none"), (13,), "f64", True, None),
        ("msm_3d_mean_f32", cfg("multilabel_soft_margin", {}, "mean"), (2, 3, 4), "f32", True,
         None),
        ("msm_wide_none_f64", cfg("multilabel_soft_margin", {}, "none"), (3, 40), "f64", False,
         None),
    ]
    # asymmetric: timm's defaults (sum), every reduction, other parameters
    cases += [
        ("asl_sum_f32", cfg("asymmetric", {}, "sum"), (8, 12), "f32", False, None),
        ("asl_sum_f64", cfg("asymmetric", {}, "sum"), (8, 12), "f64", False, None),
        ("asl_mean_f64", cfg("asymmetric", {}, "mean"), (5, 9), "f64", False, None),
        ("asl_none_f32", cfg("asymmetric", {}, "none"), (4, 10), "f32", False, None),
        ("asl_batchmean_f64", cfg("asymmetric", {}, "batchmean"), (6, 7), "f64", False, None),
        ("asl_soft_sum_f64", cfg("asymmetric", {}, "sum"), (6, 10), "f64", True, None),
        ("asl_soft_none_f32", cfg("asymmetric", {}, "none"), (6, 10), "f32", True, None),
        ("asl_g2_g0_clip0_sum_f64",
         cfg("asymmetric", {"gamma_neg": 2.0, "gamma_pos": 0.0, "clip": 0.0}, "sum"), (7, 8),
         "f64", False, None),
        ("asl_g3_g2_clip01_none_f64",
         cfg("asymmetric", {"gamma_neg": 3.0, "gamma_pos": 2.0, "clip": 0.1}, "none"), (5, 8),
         "f64", True, None),
        ("asl_frac_gammas_mean_f32",
         cfg("asymmetric", {"gamma_neg": 2.5, "gamma_pos": 1.5, "clip": 0.2}, "mean"), (6, 8),
         "f32", True, None),
        ("asl_eps_binds_sum_f64", cfg("asymmetric", {"eps": 1e-3, "clip": 0.0}, "sum"), None,
         "f64", False, "asl_wide"),
        ("asl_no_focus_sum_f64", cfg("asymmetric", {"gamma_neg": 0.0, "gamma_pos": 0.0}, "sum"),
         (4, 6), "f64", True, None),
    ]
    return cases


def special(rng, kind, case_dt):
    """Edge-case tensors (float64 / int64)."""
    if kind == "bce_edges":
        # p at and near 0 and 1: the -100 clamp, and the gradient's 1e-12 floor
        tiny = 1e-30 if case_dt == "f32" else 1e-50
        p = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, tiny, tiny, 0.5, 1e-3, 0.999, 0.25])
        t = np.array([0.0, 1.0, 0.4, 1.0, 0.0, 0.6, 1.0, 0.0, 0.5, 1.0, 0.0, 0.25])
        return {"input": p, "target": t}
    if kind == "asl_wide":
        # logits far out, so that eps and the clip bind on both sides
        x = np.concatenate([rng.normal(0.0, 2.0, 20), np.array([-9.0, -8.0, -7.5, -12.0, -30.0,
                                                                9.0, 12.0, 30.0, -3.0, 3.0])])
        y = np.tile([1.0, 0.0], 15)
        return {"input": x.reshape(5, 6), "target": y.reshape(5, 6)}
    raise ValueError(kind)


def make_goldens():
    os.makedirs(path(OUT), exist_ok=True)
    os.makedirs(os.path.dirname(path(CATALOGUE)), exist_ok=True)
    rng = np.random.default_rng(SEED)
    out = []
    for name, config, shape, dt, soft, sp in golden_cases():
        loss = config["loss"]
        if sp in ("bce_edges", "asl_wide"):
            arrays = special(rng, sp, dt)
        else:
            arrays = draw(rng, loss, shape, config["params"], soft)
            if sp == "weight":
                arrays["weight"] = rng.uniform(0.2, 2.0, shape)
            if sp == "all_ignored":
                arrays["target"][...] = config["params"].get("ignore_index", -100)
        arrays = as_dtype(arrays, dt)
        tensors = {k: save(f"{OUT}/{name}_{k}.npy", v) for k, v in arrays.items()}
        value, o, grads = evaluate(config, arrays)
        case = {"name": name, "config": config, "tensors": tensors, "value": value,
                "grads": {k: save(f"{OUT}/{name}_grad_{k}.npy", g.astype(DTYPES[dt]))
                          for k, g in grads.items()}}
        if o is not None:
            case["out"] = save(f"{OUT}/{name}_out.npy", o.astype(DTYPES[dt]))
        out.append(case)
    write_json(CATALOGUE, out)
    print(f"{len(out)} cases -> {CATALOGUE}")


# ---------------------------------------------------------------------------
# --random: fresh shapes, parameters and data against build/host/losskit run


def rel_errors(got, want, rtol=1e-5):
    """The largest |got - want| / max(|want|, 1e-9 / rtol): at most rtol
    exactly when every element is within the catalogue test's bound
    max(rtol |want|, 1e-9). NaN on both sides, or equal infinities, count
    as 0."""
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    worst = 0.0
    for g, w in zip(got, want):
        if (np.isnan(g) and np.isnan(w)) or g == w:
            continue
        e = abs(g - w) / max(abs(w), 1e-9 / rtol)
        worst = max(worst, e if np.isfinite(e) else np.inf)
    return worst


def normwise(got, want):
    """max |got - want| / max |want| (0 for an all-zero reference)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    top = np.max(np.abs(want)) if want.size else 0.0
    return float(np.max(np.abs(got - want)) / top) if top > 0 else 0.0


def random_case(rng, loss):
    """A config, a shape and a dtype no golden uses."""
    nd = int(rng.integers(1, 4))
    dims = [int(v) for v in rng.integers(2, 9, nd)]
    red_choices = ["none", "mean", "sum"]
    params = {}
    if loss == "nll":
        if nd == 1 and rng.uniform() < 0.5:
            dims = [int(rng.integers(2, 9))]
        elif nd == 1:
            dims = [int(rng.integers(2, 9)), int(rng.integers(2, 9))]
        C = dims[0] if len(dims) == 1 else dims[1]
        if rng.uniform() < 0.6:
            params["weight"] = [round(float(v), 4) for v in rng.uniform(0.1, 3.0, C)]
        if rng.uniform() < 0.4:
            params["ignore_index"] = int(rng.integers(0, C))
    elif loss == "kl_div":
        red_choices.append("batchmean")
        params["log_target"] = bool(rng.uniform() < 0.5)
    elif loss == "multilabel_soft_margin":
        dims = dims[:2]
        C = dims[-1]
        u = rng.uniform()
        if u < 0.4:
            params["weight"] = [round(float(v), 4) for v in rng.uniform(0.1, 3.0, C)]
        elif u < 0.6:
            params["weight"] = [round(float(rng.uniform(0.1, 3.0)), 4)]
    elif loss == "asymmetric":
        red_choices.append("batchmean")
        if rng.uniform() < 0.6:
            params = {"gamma_neg": float(rng.choice([0.0, 1.0, 2.0, 3.0, 4.0, 2.5])),
                      "gamma_pos": float(rng.choice([0.0, 1.0, 2.0, 1.5])),
                      "clip": float(rng.choice([0.0, 0.05, 0.1, 0.2])),
                      "eps": float(rng.choice([1e-8, 1e-6, 1e-3]))}
    red = str(rng.choice(red_choices))
    dt = str(rng.choice(["f32", "f64"]))
    return cfg(loss, params, red), tuple(dims), dt


def value_error(config, arrays, value, want):
    """The value's relative error (1e-9 absolute floor at the 1e-6 bar).
    kl_div's terms t (log t - x) (log_target: e^t (t - x)) take both signs,
    and each is itself a difference: on float32 data, whose logs and
    products carry float32 rounding (about 6e-8 of each piece, in torch's
    float32 computation as in losskit's), the error is taken relative to
    the same reduction of the pieces' magnitudes, t (|log t| + |x|) (e^t
    (|t| + |x|)), which is about |want| where nothing cancels. The other
    losses' terms are never negative."""
    scale = abs(want)
    if config["loss"] == "kl_div" and arrays["input"].dtype == np.float32:
        x = np.asarray(arrays["input"], dtype=np.float64)
        t = np.asarray(arrays["target"], dtype=np.float64)
        if config["params"].get("log_target"):
            mags = np.exp(t) * (np.abs(t) + np.abs(x))
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                mags = np.where(t > 0, t * (np.abs(np.log(t)) + np.abs(x)), 0.0)
        red = config["reduction"]
        mag = {"sum": mags.sum(), "mean": mags.mean() if mags.size else 0.0,
               "batchmean": mags.sum() / (mags.shape[0] if mags.ndim else 1)}[red]
        scale = max(scale, float(mag))
    return 0.0 if value == want else abs(value - want) / max(scale, 1e-9 / 1e-6)


def random_mode(seed, rounds):
    # seeds never used by the goldens: offset from theirs
    rng = np.random.default_rng([seed, 0x5EED])
    worst = {}
    losses = ["bce", "nll", "kl_div", "multilabel_soft_margin", "asymmetric"]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for loss in losses:
                config, shape, dt = random_case(rng, loss)
                arrays = as_dtype(draw(rng, loss, shape, config["params"], rng.uniform() < 0.5), dt)
                if loss == "bce" and rng.uniform() < 0.5:
                    arrays["weight"] = rng.uniform(0.2, 2.0, shape).astype(DTYPES[dt])
                got, got_grads, out = run_losskit(path("build/host/losskit"), tmp, config, arrays,
                                                  out=config["reduction"] == "none")
                value, grad = got.get("value"), got_grads["input"]
                rv, ro, rg = evaluate(config, arrays)
                w = worst.setdefault(loss, [0.0] * 6 + [0])
                if rv is not None:
                    w[0] = max(w[0], value_error(config, arrays, value, rv))
                ge = rel_errors(grad, rg["input"])
                if os.environ.get("LK_RANDOM_VERBOSE"):
                    print(f"  {loss} {dt} {shape} {config['reduction']} {config['params']}: "
                          f"grad {ge:.2e}")
                if dt == "f64":
                    w[1] = max(w[1], ge)
                else:
                    w[2] = max(w[2], ge)
                    w[3] = max(w[3], normwise(grad, rg["input"]))
                if ro is not None:
                    k = 4 if dt == "f64" else 5
                    w[k] = max(w[k], rel_errors(out, ro))
                w[6] += 1
    bad = False
    print("value: every case; float64: elementwise; float32 gradients also normwise "
          "(max |error| / max |reference|)")
    for loss, (ve, g64, g32, g32n, o64, o32, n) in worst.items():
        flag = ve > 1e-6 or g64 > 1e-5 or g32n > 1e-5 or o64 > 1e-5
        bad |= flag
        print(f"{loss:22s} {n:3d} cases  value {ve:.1e}  grad f64 {g64:.1e}  grad f32 {g32:.1e} "
              f"(normwise {g32n:.1e})  out f64 {o64:.1e}  out f32 {o32:.1e}"
              f"{'  FAIL' if flag else ''}")
    return 1 if bad else 0


def main():
    a = options(__doc__, None, [("--rounds", {"type": int, "default": 20})],
                losskit=False).parse_args()
    if a.random is not None:
        sys.exit(random_mode(a.random, a.rounds))
    make_goldens()


if __name__ == "__main__":
    main()
