#!/usr/bin/python3
"""Golden data for the modes and options of the tutorial family's focal and
bce_with_logits, computed with PyTorch in float64.

    /usr/bin/python3 tests/golden/make_tutorial_modes.py             # write the goldens
    /usr/bin/python3 tests/golden/make_tutorial_modes.py --random 7  # compare a build

Without arguments it writes, deterministically (fixed seed, fixed order):
  tests/golden/tutorial_modes/*.npy            inputs (float32 and float64), reference
                                               outputs and gradients
  tests/golden/catalogue/tutorial_modes.json   the cases (format: tests/test_catalogue.c)

References, in plain torch ops (smp and MONAI are not packaged; their
formulas are restated here, and the script asserts the equivalences that
docs/losses/tutorial.md states):
  focal binary      torchvision's sigmoid_focal_loss: ce (1 - p_t)^gamma alpha_t;
  focal multilabel  the same per element, times class_weights[c] along dim 1;
                    include_background false slices channel 0 off before the
                    loss and the mean (MONAI's FocalLoss);
  focal multiclass  -alpha_y (1 - p_y)^gamma log p_y from log_softmax over dim 1
                    (MONAI's softmax_focal_loss at one class per position),
                    positions whose index is ignore_index masked out, mean over
                    the others (0 when there are none);
  bce_with_logits   F.binary_cross_entropy_with_logits on t (1 - s) + (1 - t) s
                    (smp's SoftBCEWithLogitsLoss smoothing), ignored elements
                    masked, mean over the elements not ignored.
Gradients are torch autograd's, with respect to the input; reduction none's
gradient is that of the sum of the outputs.

float32 data: every reference runs on the stored float32 values, upcast.
Where a float32 kernel cannot meet 1e-5 relative per gradient element
because the element's gradient cancels (sigmoid(x) - t' with a soft or
smoothed target t' close to sigmoid(x)), the logit is redrawn: float32 cases
keep |sigmoid(x) - t'| > 0.02 for soft targets, and focal's float32 cases use
binary targets (its soft-target gradient vanishes elsewhere than at p = t).

--random SEED draws new shapes, parameters and data (seeds never used by the
goldens), runs `build/host/losskit run ... --json` for every mode, option,
reduction and dtype into a temporary folder, compares with torch and prints
the largest relative errors; it exits 1 if a value is off by more than 1e-6
relative or a gradient (or output) element by more than 1e-5 relative (with
the catalogue test's 1e-9 absolute floor).
"""
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import (cfg, elementwise_rel, load_tensors, main, path, record, rel, report,
                     run_losskit, save, save_tensors, write_json)

OUT = "tests/golden/tutorial_modes"
CATALOGUE = "tests/golden/catalogue/tutorial_modes.json"
SEED = 20261203


# --------------------------------------------------------------------------
# References (float64 torch tensors)

def sigmoid_focal(x, t, gamma, alpha):
    """torchvision.ops.sigmoid_focal_loss per element."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def alpha_one(p):
    a = p.get("alpha", 0.25)
    return a[0] if isinstance(a, list) else a


def focal_elementwise(x, t, p):
    """binary and multilabel: (per-element losses shaped like x, divisor)."""
    gamma, alpha = p.get("gamma", 2.0), alpha_one(p)
    if p.get("mode", "binary") == "binary":
        return sigmoid_focal(x, t, gamma, alpha), x.numel()
    C = x.shape[1]
    cw = torch.tensor(p.get("class_weights", [1.0]), dtype=torch.float64)
    cw = cw.expand(C) if cw.numel() == 1 else cw
    first = 0 if p.get("include_background", True) else 1
    el = sigmoid_focal(x[:, first:], t[:, first:], gamma, alpha) * cw[first:].view(
        [1, C - first] + [1] * (x.dim() - 2))
    if first:  # channel 0 counts nowhere: its outputs are 0
        el = torch.cat([torch.zeros_like(x[:, :1]), el], dim=1)
    return el, x[:, first:].numel()


def softmax_focal(x, y, p):
    """multiclass: (per-position losses shaped like y, the positions counted)."""
    gamma = p.get("gamma", 2.0)
    C = x.shape[1]
    ig = p.get("ignore_index")
    valid = torch.ones_like(y, dtype=torch.bool) if ig is None else y != ig
    yc = torch.where(valid, y, torch.zeros_like(y))
    lp = torch.log_softmax(x, dim=1).gather(1, yc.unsqueeze(1)).squeeze(1)
    loss = -((1 - lp.exp()) ** gamma) * lp
    if "alpha" in p:
        a = torch.tensor(p["alpha"] if isinstance(p["alpha"], list) else [p["alpha"]],
                         dtype=torch.float64)
        a = a.expand(C) if a.numel() == 1 else a
        loss = a[yc] * loss
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss, int(valid.sum())


def bce_elementwise(x, t, p, w):
    """bce_with_logits with label_smoothing and ignore_index: (losses, count)."""
    s = p.get("label_smoothing", 0.0)
    ig = p.get("ignore_index")
    valid = torch.ones_like(t, dtype=torch.bool) if ig is None else t != ig
    tv = torch.where(valid, t, torch.zeros_like(t))
    ts = tv * (1 - s) + (1 - tv) * s
    pw = p.get("pos_weight")
    pw = None if pw is None else torch.tensor(pw if isinstance(pw, list) else [pw],
                                              dtype=torch.float64)
    el = F.binary_cross_entropy_with_logits(x, ts, weight=w, pos_weight=pw, reduction="none")
    el = torch.where(valid, el, torch.zeros_like(el))
    return el, int(valid.sum())


def reference(config, arrays):
    """(value or None, out or None, grad of input) for numpy arrays (floats upcast)."""
    loss, p, red = config["loss"], config.get("params", {}), config.get("reduction", "mean")
    x = torch.from_numpy(arrays["input"].astype(np.float64)).requires_grad_(True)
    t = torch.from_numpy(arrays["target"])
    w = arrays.get("weight")
    w = None if w is None else torch.from_numpy(w.astype(np.float64))
    if loss == "focal" and p.get("mode") == "multiclass":
        el, n = softmax_focal(x, t.long(), p)
    elif loss == "focal":
        el, n = focal_elementwise(x, t.double(), p)
    else:
        el, n = bce_elementwise(x, t.double(), p, w)
        if p.get("ignore_index") is None:
            n = el.numel()
    if red == "none":
        out, value = el.detach().numpy().copy(), None
        r = el.sum()
    else:
        r = el.sum() if red == "sum" else (el.sum() / n if n > 0 else el.sum() * 0.0)
        out, value = None, float(r)
    r.backward()
    return value, out, x.grad.numpy().copy()


# --------------------------------------------------------------------------
# The equivalences docs/losses/tutorial.md states, checked on torch alone

def monai_softmax_focal(x, onehot, gamma, alpha, weight):
    """MONAI FocalLoss(use_softmax=True) per element, restated."""
    ls = x.log_softmax(1)
    loss = -(1 - ls.exp()).pow(gamma) * ls * onehot
    view = [-1] + [1] * (x.dim() - 2)
    if alpha is not None:
        fac = torch.tensor([1 - alpha] + [alpha] * (x.shape[1] - 1), dtype=torch.float64)
        loss = fac.view(view) * loss
    if weight is not None:
        loss = torch.tensor(weight, dtype=torch.float64).view(view) * loss
    return loss


def smp_sigmoid_focal(x, t, gamma, alpha):
    """smp's focal_loss_with_logits per element, restated (pt = exp(-bce))."""
    logpt = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    loss = (1.0 - torch.exp(-logpt)).pow(gamma) * logpt
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss


def check_equivalences(rng):
    x = torch.from_numpy(rng.normal(0, 2, (2, 4, 3, 5)))
    y = torch.from_numpy(rng.integers(0, 4, (2, 3, 5)))
    onehot = F.one_hot(y, 4).permute(0, 3, 1, 2).double()
    a, wt, g = 0.3, [0.5, 1.0, 2.0, 1.5], 1.5
    # MONAI softmax, mean over N C S = ours (alpha [(1 - a) w0, a w1, ...]) / C
    ours, n = softmax_focal(x, y, {"gamma": g, "alpha": [(1 - a) * wt[0]] +
                                   [a * v for v in wt[1:]]})
    monai = monai_softmax_focal(x, onehot, g, a, wt).mean()
    assert torch.allclose(ours.sum() / n / 4, monai, rtol=1e-13), "MONAI softmax mean"
    # MONAI sum averages the spatial dims first: ours sum / S
    monai_sum = monai_softmax_focal(x, onehot, g, None, None).mean(dim=(2, 3)).sum()
    assert torch.allclose(softmax_focal(x, y, {"gamma": g})[0].sum() / 15, monai_sum,
                          rtol=1e-13), "MONAI softmax sum"
    # smp multiclass = C x our multilabel mean on the one-hot targets (alpha None = -1)
    smp = sum(smp_sigmoid_focal(x[:, c], (y == c).double(), g, None).mean() for c in range(4))
    el, n = focal_elementwise(x, onehot, {"mode": "multilabel", "gamma": g, "alpha": -1})
    assert torch.allclose(4 * el.sum() / n, smp, rtol=1e-13), "smp multiclass"
    # smp multilabel / binary = ours on binary targets
    t = torch.from_numpy(rng.integers(0, 2, (2, 4, 3, 5)).astype(np.float64))
    el, n = focal_elementwise(x, t, {"mode": "multilabel", "gamma": g, "alpha": 0.25})
    assert torch.allclose(el.sum() / n, smp_sigmoid_focal(x, t, g, 0.25).mean(), rtol=1e-13)
    # MONAI sigmoid with weight and include_background false = ours multilabel
    el, n = focal_elementwise(x, t, {"mode": "multilabel", "gamma": g, "alpha": 0.25,
                                     "class_weights": [0.0, 1.0, 2.0, 1.5],
                                     "include_background": False})
    ms = sigmoid_focal(x[:, 1:], t[:, 1:], g, 0.25) * torch.tensor(
        [1.0, 2.0, 1.5], dtype=torch.float64).view(-1, 1, 1)
    assert torch.allclose(el.sum() / n, ms.mean(), rtol=1e-13), "MONAI sigmoid"
    # smp SoftBCEWithLogitsLoss divides by every element, ours by those not ignored
    tt = t.clone()
    tt[0, 0] = -100
    el, n = bce_elementwise(x, tt, {"label_smoothing": 0.1, "ignore_index": -100}, None)
    keep = tt != -100
    tts = (1 - tt) * 0.1 + tt * 0.9
    smp_bce = (F.binary_cross_entropy_with_logits(x, tts, reduction="none") * keep).mean()
    assert torch.allclose(el.sum() / tt.numel(), smp_bce, rtol=1e-13), "smp soft bce"


# --------------------------------------------------------------------------
# Data

def draw(rng, kind, shape, dt, params):
    """{slot: array} of one kind of case; shape is the input's."""
    x = rng.normal(0.0, 2.0, shape)
    if kind == "mc":
        C = shape[1]
        y = rng.integers(0, C, (shape[0],) + tuple(shape[2:])).astype(np.int64)
        ig = params.get("ignore_index")
        if ig is not None:
            y[rng.uniform(size=y.shape) < 0.25] = ig
        # a fifth of the positions confident: p_y near 1, where gamma < 1 needs care
        xm = np.moveaxis(x, 1, -1)  # a view: (N, ..., C)
        conf = (rng.uniform(size=y.shape) < 0.2) & (y >= 0) & (y < C)
        xm[conf, y[conf]] += 12.0
        return {"input": x.astype(np.float32 if dt == "f32" else np.float64), "target": y}
    soft = kind == "soft" and dt == "f64"
    t = rng.uniform(0, 1, shape) if soft else rng.integers(0, 2, shape).astype(np.float64)
    s = params.get("label_smoothing", 0.0)
    if dt == "f32" and (soft or s > 0):
        te = t * (1 - s) + (1 - t) * s
        pw = params.get("pos_weight", 1.0)
        pw = pw[0] if isinstance(pw, list) else pw
        lw = 1 + (pw - 1) * te
        for _ in range(200):  # keep the gradient lw p - pw t' away from its zero
            bad = np.abs(lw / (1 + np.exp(-x)) - pw * te) < 0.02 * max(1.0, pw)
            if not bad.any():
                break
            x[bad] = rng.normal(0.0, 2.0, bad.sum())
    ig = params.get("ignore_index")
    if ig is not None:
        t[rng.uniform(size=shape) < 0.2] = ig
    fdt = np.float32 if dt == "f32" else np.float64
    return {"input": x.astype(fdt), "target": t.astype(fdt)}


# (name, config, kind, shape, weighted)
def case_list():
    L = []
    mc = (2, 4, 5, 6)
    ml = (2, 3, 4, 5)
    for dt in ("f32", "f64"):
        for red in ("mean", "sum", "none"):
            L += [
                ("focal_binary_list_%s_%s" % (red, dt), cfg("focal", red, alpha=[0.25]), "bin",
                 (3, 40), False),
                ("focal_ml_%s_%s" % (red, dt), cfg("focal", red, mode="multilabel"), "bin", ml,
                 False),
                ("focal_ml_cw_nobg_%s_%s" % (red, dt),
                 cfg("focal", red, mode="multilabel", class_weights=[0.7, 1.5, 2.0],
                     include_background=False), "bin", ml, False),
                ("focal_mc_%s_%s" % (red, dt), cfg("focal", red, mode="multiclass"), "mc", mc,
                 False),
                ("focal_mc_alpha_ignore_%s_%s" % (red, dt),
                 cfg("focal", red, mode="multiclass", alpha=[0.25, 0.75, 1.0, 2.0],
                     ignore_index=255), "mc", mc, False),
                ("bce_ls_%s_%s" % (red, dt), cfg("bce_with_logits", red, label_smoothing=0.1),
                 "soft", (4, 30), False),
                ("bce_ignore_%s_%s" % (red, dt), cfg("bce_with_logits", red, ignore_index=-100),
                 "soft", (4, 30), False),
            ]
        L += [
            ("focal_ml_soft_cw_%s" % dt, cfg("focal", mode="multilabel",
                                             class_weights=[1.0, 0.5, 2.0]), "soft", ml, False),
            ("focal_ml_cw_%s" % dt, cfg("focal", mode="multilabel", class_weights=[0.5, 0.0, 3.0],
                                        gamma=0.5, alpha=0.6), "bin", ml, False),
            ("focal_ml_cw1_nobg_g1_%s" % dt, cfg("focal", mode="multilabel", class_weights=[2.0],
                                                 include_background=False, gamma=1.0),
             "bin", (3, 2, 7), False),
            ("focal_mc_g05_%s" % dt, cfg("focal", mode="multiclass", gamma=0.5), "mc", mc, False),
            ("focal_mc_g03_alpha1_ignore_none_%s" % dt,
             cfg("focal", "none", mode="multiclass", gamma=0.3, alpha=0.4, ignore_index=-1),
             "mc", mc, False),
            ("focal_mc_g0_%s" % dt, cfg("focal", mode="multiclass", gamma=0.0), "mc", mc, False),
            ("focal_mc_g3_sum_%s" % dt, cfg("focal", "sum", mode="multiclass", gamma=3.0,
                                            alpha=[1.0, 0.5, 0.25, 2.0]), "mc", mc, False),
            ("focal_mc_2d_%s" % dt, cfg("focal", mode="multiclass", alpha=[1.0, 2.0, 3.0]), "mc",
             (37, 3), False),
            ("focal_mc_all_ignored_%s" % dt, cfg("focal", mode="multiclass", ignore_index=7),
             "mc_all_ignored", (2, 3, 4), False),
            ("bce_ls_ignore_weight_%s" % dt,
             cfg("bce_with_logits", label_smoothing=0.05, ignore_index=255), "soft", (5, 12),
             True),
            ("bce_ls1_sum_%s" % dt, cfg("bce_with_logits", "sum", label_smoothing=1.0), "bin",
             (5, 12), False),
            ("bce_ls_pw_%s" % dt, cfg("bce_with_logits", label_smoothing=0.2, pos_weight=[2.0]),
             "bin", (5, 12), False),
            ("bce_all_ignored_%s" % dt, cfg("bce_with_logits", ignore_index=-1), "bce_all_ignored",
             (3, 8), False),
        ]
    return L


def make_arrays(rng, name, config, kind, shape, dt, weighted):
    p = config.get("params", {})
    if kind == "mc_all_ignored":
        a = draw(rng, "mc", shape, dt, {})
        a["target"][...] = p["ignore_index"]
    elif kind == "bce_all_ignored":
        a = draw(rng, "bin", shape, dt, {})
        a["target"][...] = p["ignore_index"]
    else:
        a = draw(rng, kind, shape, dt, p)
    if weighted:
        a["weight"] = rng.uniform(0.2, 2.0, shape).astype(a["input"].dtype)
    return a


def write_goldens():
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(SEED)
    check_equivalences(rng)
    os.makedirs(path(OUT), exist_ok=True)
    cases = []
    for name, config, kind, shape, weighted in case_list():
        dt = name.rsplit("_", 1)[1]
        arrays = make_arrays(rng, name, config, kind, shape, dt, weighted)
        rels = save_tensors("%s/%s" % (OUT, name), arrays)
        value, out, grad = reference(config, load_tensors(rels))
        assert value is None or np.isfinite(value), name
        case = {"name": name, "config": config, "tensors": rels, "value": value,
                "grads": {"input": save("%s/%s_grad_input.npy" % (OUT, name), grad)}}
        if out is not None:
            case["out"] = save("%s/%s_out.npy" % (OUT, name), out)
        cases.append(case)
    write_json(CATALOGUE, cases)
    print("wrote %d cases to %s" % (len(cases), CATALOGUE))


# --------------------------------------------------------------------------
# --random: compare a build with torch on data no test uses

def random_case(rng, what):
    """(config params, kind, shape) of one random case of `what`."""
    big = rng.uniform() < 0.2
    if what == "focal_binary":
        shape = (int(rng.integers(20000, 60000)),) if big else tuple(
            int(s) for s in rng.integers(1, 9, int(rng.integers(1, 4))))
        return {"alpha": float(rng.choice([-1.0, rng.uniform(0, 1)])),
                "gamma": float(rng.choice([0.0, 0.5, 1.0, 2.0, rng.uniform(0, 4)]))}, "bin", shape
    if what == "focal_multilabel":
        C = int(rng.integers(2, 6))
        rest = (int(rng.integers(100, 200)), 97) if big else tuple(
            int(s) for s in rng.integers(1, 8, int(rng.integers(0, 3))))
        shape = (int(rng.integers(1, 4)), C) + rest
        p = {"mode": "multilabel", "gamma": float(rng.choice([0.5, 2.0, rng.uniform(0, 3)])),
             "alpha": float(rng.choice([-1.0, rng.uniform(0, 1)]))}
        if rng.uniform() < 0.7:
            p["class_weights"] = [float(v) for v in rng.uniform(0, 3, C if rng.uniform() < 0.8
                                                                  else 1)]
        if rng.uniform() < 0.6:
            p["include_background"] = False
        return p, "bin", shape
    if what == "focal_multiclass":
        C = int(rng.integers(1, 9))
        rest = (int(rng.integers(200, 400)), 211) if big else tuple(
            int(s) for s in rng.integers(1, 8, int(rng.integers(0, 3))))
        shape = (int(rng.integers(1, 4)), C) + rest
        p = {"mode": "multiclass", "gamma": float(rng.choice([0.0, 0.3, 0.7, 2.0,
                                                              rng.uniform(0, 4)]))}
        r = rng.uniform()
        if r < 0.4:
            p["alpha"] = [float(v) for v in rng.uniform(0, 2, C)]
        elif r < 0.6:
            p["alpha"] = float(rng.uniform(0, 1))
        if rng.uniform() < 0.6:
            p["ignore_index"] = int(rng.choice([-100, -1, 255, C]))
        return p, "mc", shape
    # bce_with_logits
    shape = (int(rng.integers(20000, 60000)),) if big else tuple(
        int(s) for s in rng.integers(1, 9, int(rng.integers(1, 4))))
    p = {}
    if rng.uniform() < 0.7:
        p["label_smoothing"] = float(rng.choice([rng.uniform(0, 0.3), 1.0, 0.5]))
    if rng.uniform() < 0.6 or not p:
        p["ignore_index"] = int(rng.choice([-100, -1, 255, 2]))
    return p, "soft", shape


def run_random(seed, exe):
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(1_000_003 * (seed + 1) + 29)  # never SEED
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for what in ("focal_binary", "focal_multilabel", "focal_multiclass", "bce_with_logits"):
            for rep in range(8):
                params, kind, shape = random_case(rng, what)
                loss = "focal" if what.startswith("focal") else "bce_with_logits"
                for dt in ("f64", "f32"):
                    arrays = draw(rng, kind, shape, dt, params)
                    if loss == "bce_with_logits" and rng.uniform() < 0.3:
                        arrays["weight"] = rng.uniform(0.2, 2.0, shape).astype(
                            arrays["input"].dtype)
                    if rep == 7 and "ignore_index" in params:  # everything ignored
                        arrays["target"][...] = params["ignore_index"]
                    for red in ("mean", "sum", "none"):
                        config = cfg(loss, red, **params)
                        record(worst, (what, dt), *compare_run(exe, tmp, config, arrays))
    return report(seed, worst, "torch (float64 reference)", 17, "gradient/output")


def compare_run(exe, tmp, config, arrays):
    got, got_grads, got_out = run_losskit(exe, tmp, config, arrays,
                                          out=config["reduction"] == "none")
    value, out, grad = reference(config, arrays)
    ve = 0.0 if value is None else rel(got["value"], value)
    ge = elementwise_rel(got_grads["input"], grad, nan_equal=True)
    if out is not None:
        ge = max(ge, elementwise_rel(got_out, out, nan_equal=True))
    return ve, ge


if __name__ == "__main__":
    sys.exit(main(__doc__, write_goldens, run_random))
