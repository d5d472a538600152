#!/usr/bin/python3
"""Golden data for the compound segmentation configs (weighted `terms` sums),
from PyTorch in float64.

    /usr/bin/python3 tests/golden/make_compound.py             # write the goldens
    /usr/bin/python3 tests/golden/make_compound.py --random 7  # compare a build

Configs (configs/, docs/losses/segmentation.md "Compound losses"):
  monai_dice_ce.json           MONAI DiceCELoss(softmax=True, to_onehot_y=True)
  monai_dice_focal.json        MONAI DiceFocalLoss(softmax=True, to_onehot_y=True)
  monai_generalized_dice_focal.json
                               MONAI GeneralizedDiceFocalLoss(softmax=True,
                               to_onehot_y=True)
  combo.json                   the combo loss of Taghanaki et al. (2019)

Without arguments it writes, deterministically (fixed seed, fixed order):
  tests/golden/compound/*.npy            inputs, targets, reference gradients
  tests/golden/catalogue/compound.json   the cases (format: tests/test_catalogue.c)
  configs/data/mc_target_onehot.npy      the one-hot float copy of
                                         configs/data/mc_target.npy that the two
                                         focal configs' README example reads

References. Each library's computation is restated in plain float64 torch
ops from its source (MONAI at commit d388d1c, 1.5: monai/losses/dice.py
DiceLoss, GeneralizedDiceLoss, DiceCELoss, DiceFocalLoss,
GeneralizedDiceFocalLoss; monai/losses/focal_loss.py FocalLoss and
sigmoid_focal_loss); the combo loss from the paper's formula, as the widely
used PyTorch implementation computes it (sigmoid, p clamped to
[1e-9, 1 - 1e-9], the BCE's mean over elements, one dice over the flattened
tensor with smooth 1). The reference takes the library's own arguments
(lambda_dice, lambda_ce, ..., alpha, beta); the config comes from the
shipped file with the term weights set by the rule docs state
(config_for()), and with the library's defaults config_for() must give the
shipped file exactly. Gradients are autograd's with respect to the logits.
check_transcriptions() asserts (1e-12) that the MONAI terms here agree with
the independent transcriptions in make_segmentation.py (monai_dice,
monai_gdl, fed MONAI's (N, 1, ...) label with to_onehot_y) and
make_tutorial_modes.py (sigmoid_focal), on random data with absent classes.

The combo reference is -dice where losskit's dice term is 1 - dice: losskit's
value is the reference plus the constant 1 - alpha (ce_ratio). The manifest
stores reference + (1 - alpha) as the value (the gradient is the reference's,
unchanged), and --random compares the same way.

Cases: every config at class counts 2, 3, 5 (combo: binary masks of several
shapes and alpha, beta), 2-d and 3-d spatial shapes, float32 and float64,
classes absent from a sample (dice of an empty class, the generalized dice
weight of an absent class replaced by the sample's largest), the library
lambdas other than 1, the variants docs give a rule for (DiceFocalLoss:
sigmoid=True on multilabel targets, alpha, batch, squared_pred; DiceCELoss:
label_smoothing, batch; GeneralizedDiceFocalLoss: batch),
and each config on its bundled data in configs/data.

float32 cases: the reference runs on the stored float32 values, upcast;
condition() redraws the logits of the positions where the gradient is
ill-conditioned at float32 resolution (torch's own float32 gradient off the
float64 one by more than 1e-6), so that the 1e-5 bound tests the kernels and
not float32 rounding. float64 data are not conditioned.

--random SEED draws new shapes, class counts, lambdas (combo: alpha, beta),
variants and data, runs `build/host/losskit run CONFIG --tensor NAME=FILE ...
--grad-tensor input=FILE --json` and compares with the reference: it exits 1
if a value is off by more than 1e-6 relative or a gradient element by more
than 1e-5 relative (1e-9 absolute floor, as the catalogue test).
"""
import copy
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import (elementwise_rel, load_tensors, main, path, record, rel, report, run_losskit,
                     save, save_tensors, write_json)

OUT = "tests/golden/compound"
CATALOGUE = "tests/golden/catalogue/compound.json"
SEED = 20261203


# --------------------------------------------------------------------------
# MONAI, restated (float64 throughout; MONAI itself casts FocalLoss's input
# to float32 and computes GeneralizedDiceLoss's weights in float32, see docs)

def onehot(y, c, dtype=torch.float64):
    """MONAI's one_hot of (N, 1, ...) indices -> (N, C, ...) floats; here the
    indices come without the channel dim, as losskit takes them."""
    return torch.movedim(F.one_hot(y.long(), c), -1, 1).to(dtype)


def monai_dice_loss(x, t, smooth_nr=1e-5, smooth_dr=1e-5, sigmoid=False, batch=False,
                    squared_pred=False):
    """DiceLoss(softmax=True) (or sigmoid=True) on one-hot (multilabel) t,
    reduction mean."""
    p = torch.sigmoid(x) if sigmoid else torch.softmax(x, 1)
    axes = list(range(2, x.dim()))
    if batch:
        axes = [0] + axes
    inter = (p * t).sum(axes)
    if squared_pred:
        denom = (t * t).sum(axes) + (p * p).sum(axes)
    else:
        denom = t.sum(axes) + p.sum(axes)
    f = 1.0 - (2.0 * inter + smooth_nr) / (denom + smooth_dr)
    return f.mean()


def monai_gdl(x, t, smooth_nr=1e-5, smooth_dr=1e-5, batch=False):
    """GeneralizedDiceLoss(softmax=True, w_type square) on one-hot t."""
    p = torch.softmax(x, 1)
    axes = list(range(2, x.dim()))
    if batch:
        axes = [0] + axes
    inter = (p * t).sum(axes)
    ground = t.sum(axes)
    denominator = ground + p.sum(axes)
    w = 1.0 / (ground * ground)
    infs = torch.isinf(w)
    w = torch.where(infs, torch.zeros_like(w), w)
    if batch:
        w = w + infs * w.max()
    else:
        w = w + infs * w.max(dim=1)[0].unsqueeze(1)
    red = 0 if batch else 1
    numer = 2.0 * (inter * w).sum(red, keepdim=True) + smooth_nr
    denom = (denominator * w).sum(red, keepdim=True) + smooth_dr
    return (1.0 - numer / denom).mean()


def monai_ce(x, y, label_smoothing=0.0):
    """nn.CrossEntropyLoss(label_smoothing) on the squeezed long target: mean
    over positions of (1 - e)(-log p_y) + e mean_c(-log p_c)."""
    ls = torch.log_softmax(x, 1)
    nll = -ls.gather(1, y.long().unsqueeze(1)).squeeze(1)
    smooth = -ls.mean(1)
    return ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mean()


def monai_sigmoid_focal(x, t, gamma=2.0, alpha=None):
    """FocalLoss() (use_softmax False, weight None), mean over every element
    of (N, C, ...)."""
    loss = x - x * t - F.logsigmoid(x)
    invprobs = F.logsigmoid(-x * (t * 2 - 1))
    loss = (invprobs * gamma).exp() * loss
    if alpha is not None:
        loss = (t * alpha + (1 - t) * (1 - alpha)) * loss
    return loss.mean()


def ref_dice_ce(x, y, lam):
    t = onehot(y, x.shape[1], x.dtype)
    dice = monai_dice_loss(x, t, batch=lam.get("batch", False))
    return lam["lambda_dice"] * dice + lam["lambda_ce"] * \
        monai_ce(x, y, lam.get("label_smoothing", 0.0))


def ref_dice_focal(x, t, lam):
    """DiceFocalLoss(softmax=True, to_onehot_y=True), or with the variants
    docs give a rule for: sigmoid=True (instead of softmax, multilabel
    targets), alpha, batch, squared_pred."""
    dice = monai_dice_loss(x, t, sigmoid=lam.get("sigmoid", False),
                           batch=lam.get("batch", False),
                           squared_pred=lam.get("squared_pred", False))
    return lam["lambda_dice"] * dice + lam["lambda_focal"] * \
        monai_sigmoid_focal(x, t, alpha=lam.get("alpha"))


def ref_gdl_focal(x, t, lam):
    return lam["lambda_gdl"] * monai_gdl(x, t, batch=lam.get("batch", False)) + \
        lam["lambda_focal"] * monai_sigmoid_focal(x, t)


# --------------------------------------------------------------------------
# The combo loss (Taghanaki et al. 2019):
#   L = alpha * (-1/N sum [beta t ln p + (1 - beta)(1 - t) ln(1 - p)])
#       - (1 - alpha) * (2 sum p t + S) / (sum p + sum t + S)

def ref_combo(x, t, lam, smooth=1.0, eps=1e-9):
    alpha, beta = lam["alpha"], lam["beta"]
    p = torch.sigmoid(x).reshape(-1)
    t = t.reshape(-1)
    dice = (2.0 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)
    p = torch.clamp(p, eps, 1.0 - eps)
    wce = -(beta * t * torch.log(p) + (1.0 - beta) * (1.0 - t) * torch.log(1.0 - p)).mean()
    return alpha * wce - (1.0 - alpha) * dice


def combo_offset(lam):
    return 1.0 - lam["alpha"]


# --------------------------------------------------------------------------
# The configs and the rule that maps the library's arguments onto them

KINDS = {
    "dice_ce": {"file": "configs/monai_dice_ce.json", "ref": ref_dice_ce,
                "defaults": {"lambda_dice": 1.0, "lambda_ce": 1.0},
                "weights": ("lambda_dice", "lambda_ce"), "target": "index"},
    "dice_focal": {"file": "configs/monai_dice_focal.json", "ref": ref_dice_focal,
                   "defaults": {"lambda_dice": 1.0, "lambda_focal": 1.0},
                   "weights": ("lambda_dice", "lambda_focal"), "target": "onehot"},
    "gdl_focal": {"file": "configs/monai_generalized_dice_focal.json", "ref": ref_gdl_focal,
                  "defaults": {"lambda_gdl": 1.0, "lambda_focal": 1.0},
                  "weights": ("lambda_gdl", "lambda_focal"), "target": "onehot"},
    "combo": {"file": "configs/combo.json", "ref": ref_combo,
              "defaults": {"alpha": 0.5, "beta": 0.5}, "target": "binary"},
}


def shipped(kind):
    with open(path(KINDS[kind]["file"])) as f:
        return json.load(f)


def config_for(kind, lam):
    """The shipped config with the term weights (and combo's pos_weight) the
    docs' rule gives for these library arguments."""
    c = copy.deepcopy(shipped(kind))
    if kind == "combo":
        a, b = lam["alpha"], lam["beta"]
        c["terms"][0]["weight"] = a * (1.0 - b)
        c["terms"][0]["params"]["pos_weight"] = [b / (1.0 - b)]
        c["terms"][1]["weight"] = 1.0 - a
    else:
        for term, key in zip(c["terms"], KINDS[kind]["weights"]):
            term["weight"] = lam[key]
    if kind != "combo" and lam.get("batch"):
        c["terms"][0]["params"]["per_sample"] = False
    if kind == "dice_ce" and lam.get("label_smoothing"):
        c["terms"][1]["params"] = {"label_smoothing": lam["label_smoothing"]}
    if kind == "dice_focal":
        dice, focal = c["terms"][0]["params"], c["terms"][1]["params"]
        if lam.get("sigmoid"):
            dice["mode"] = "multilabel"
        if lam.get("squared_pred"):
            dice["squared_pred"] = True
        if lam.get("alpha") is not None:
            focal["alpha"] = lam["alpha"]
    return c


def check_shipped_configs():
    for kind, k in KINDS.items():
        assert config_for(kind, k["defaults"]) == shipped(kind), \
            "%s: the rule with the library's defaults does not give the shipped file" % k["file"]


def reference(kind, lam, arrays, dtype=torch.float64):
    """The library's value and d/d(input), in float64 (or dtype) on the given data."""
    x = torch.from_numpy(np.asarray(arrays["input"])).to(dtype).requires_grad_(True)
    y = torch.from_numpy(np.asarray(arrays["target"]))
    if y.is_floating_point():
        y = y.to(dtype)
    v = KINDS[kind]["ref"](x, y, lam)
    v.backward()
    return float(v), x.grad.numpy()


def expected_value(kind, lam, ref_value):
    """What losskit must give: the reference, plus combo's documented constant."""
    return ref_value + (combo_offset(lam) if kind == "combo" else 0.0)


# --------------------------------------------------------------------------
# Data

def draw(rng, kind, n, c, spatial, dt, absent=0, multilabel=False):
    """Logits and the target the config reads; `absent` classes (> 0) never
    occur in sample 0 (an empty class there); multilabel: independent 0/1
    targets per channel (DiceFocalLoss with sigmoid=True)."""
    if kind == "combo":
        shape = (n, 1) + spatial
        x = (1.5 * rng.standard_normal(shape)).astype(dt)
        t = (rng.random(shape) > 0.6).astype(dt)
        return {"input": x, "target": t}
    x = (1.5 * rng.standard_normal((n, c) + spatial)).astype(dt)
    y = rng.integers(0, c, (n,) + spatial).astype(np.int64)
    if absent:
        keep = c - absent
        y[0] = rng.integers(0, keep, spatial)
    if KINDS[kind]["target"] == "index":
        return {"input": x, "target": y}
    if multilabel:
        t = (rng.random((n, c) + spatial) > 0.5).astype(dt)
        if absent:
            t[0, c - absent:] = 0
        return {"input": x, "target": t}
    t = np.moveaxis(np.eye(c, dtype=dt)[y], -1, 1).copy()
    return {"input": x, "target": t}


def check_transcriptions(rng, reps=6):
    """The MONAI terms above against the independent transcriptions of
    make_segmentation.py (monai_dice, monai_gdl: MONAI's DiceLoss and
    GeneralizedDiceLoss with to_onehot_y=True, softmax=True on the
    (N, 1, ...) label) and make_tutorial_modes.py (torchvision's sigmoid
    focal, which MONAI's equals on 0/1 targets): value and gradient 1e-12."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_segmentation as seg
    import make_tutorial_modes as tut
    for _ in range(reps):
        c = int(rng.integers(2, 6))
        shape = (int(rng.integers(1, 4)), c) + tuple(int(s) for s in rng.integers(1, 6, 2))
        y = torch.from_numpy(rng.integers(0, c, (shape[0],) + shape[2:]))
        y[0] = y[0] % max(1, c - 1)  # a class absent from sample 0
        t = onehot(y, c)
        for mine, theirs in (
                (lambda x: monai_dice_loss(x, t),
                 lambda x: seg.monai_dice(x, y.unsqueeze(1), to_onehot_y=True, softmax=True)),
                (lambda x: monai_gdl(x, t),
                 lambda x: seg.monai_gdl(x, y.unsqueeze(1), to_onehot_y=True, softmax=True)),
                (lambda x: monai_sigmoid_focal(x, t),
                 lambda x: tut.sigmoid_focal(x, t, 2.0, -1.0).mean())):
            x = torch.from_numpy(1.5 * rng.standard_normal(shape)).requires_grad_(True)
            a = mine(x)
            ga, = torch.autograd.grad(a, x)
            b = theirs(x)
            gb, = torch.autograd.grad(b, x)
            assert abs(float(a) - float(b)) <= 1e-12 * abs(float(b)), (float(a), float(b))
            assert float((ga - gb).abs().max()) <= 1e-12 * float(gb.abs().max())


def condition(rng, kind, lam, arrays):
    """float32 data: redraw the logits of every position (all its channels)
    where the reference gradient, computed by torch in float32 on the same
    data, is off the float64 one by more than 1e-6 relative (1e-9 absolute
    floor, as the tests). There the gradient is ill-conditioned at float32
    resolution (a softmax Jacobian or the sum of two terms' gradients
    cancelling), and no float32 kernel can be held to 1e-5 on it."""
    if arrays["input"].dtype != np.float32:
        return arrays
    x = arrays["input"]
    for _ in range(100):
        _, g64 = reference(kind, lam, arrays)
        _, g32 = reference(kind, lam, arrays, torch.float32)
        r = np.abs(g32.astype(np.float64) - g64) / np.maximum(np.abs(g64), 1e-4)
        bad = r > 1e-6
        if not bad.any():
            return arrays
        if kind != "combo":
            bad = np.broadcast_to(bad.any(axis=1, keepdims=True), bad.shape)
        x = x.copy()
        x[bad] = (1.5 * rng.standard_normal(int(bad.sum()))).astype(np.float32)
        arrays = dict(arrays, input=x)
    raise RuntimeError("%s: float32 data could not be conditioned" % kind)


def write_goldens():
    check_shipped_configs()
    check_transcriptions(np.random.default_rng(SEED + 1))
    os.makedirs(path(OUT), exist_ok=True)
    rng = np.random.default_rng(SEED)
    cases = []

    mc_target = np.load(path("configs/data/mc_target.npy"))
    oh = np.moveaxis(np.eye(4, dtype=np.float32)[mc_target], -1, 1).copy()
    save("configs/data/mc_target_onehot.npy", oh)

    def add(name, kind, lam, rels):
        arrays = load_tensors(rels)
        value, grad = reference(kind, lam, arrays)
        grel = save("%s/%s_grad.npy" % (OUT, name), grad.astype(arrays["input"].dtype))
        case = {"name": name, "config": config_for(kind, lam), "tensors": rels,
                "value": expected_value(kind, lam, value), "grads": {"input": grel}}
        cases.append(case)

    def add_drawn(name, kind, lam, arrays):
        arrays = condition(rng, kind, lam, arrays)
        add(name, kind, lam, save_tensors("%s/%s" % (OUT, name), arrays))

    # each config on its bundled data, with the library's defaults
    data = "configs/data/"
    for kind in ("dice_ce", "dice_focal", "gdl_focal"):
        tgt = "mc_target.npy" if KINDS[kind]["target"] == "index" else "mc_target_onehot.npy"
        add("%s_bundled" % kind, kind, KINDS[kind]["defaults"],
            {"input": data + "mc_input.npy", "target": data + tgt})
    add("combo_bundled", "combo", KINDS["combo"]["defaults"],
        {"input": data + "input.npy", "target": data + "target.npy"})

    shapes = [(2, 2, (5, 6), 0), (3, 3, (4, 4, 3), 1), (2, 5, (7, 5), 2), (1, 3, (9,), 0)]
    lams = {"dice_ce": [{"lambda_dice": 1.0, "lambda_ce": 1.0},
                        {"lambda_dice": 0.7, "lambda_ce": 0.3}],
            "dice_focal": [{"lambda_dice": 1.0, "lambda_focal": 1.0},
                           {"lambda_dice": 0.5, "lambda_focal": 2.0}],
            "gdl_focal": [{"lambda_gdl": 1.0, "lambda_focal": 1.0},
                          {"lambda_gdl": 1.5, "lambda_focal": 0.25}]}
    for dt, tag in ((np.float64, "f64"), (np.float32, "f32")):
        for kind in ("dice_ce", "dice_focal", "gdl_focal"):
            for i, (n, c, sp, absent) in enumerate(shapes):
                lam = lams[kind][i % 2]
                add_drawn("%s_c%d_%dd_%s" % (kind, c, len(sp), tag), kind, lam,
                          draw(rng, kind, n, c, sp, dt, absent))
        for i, (var, (n, c, sp, absent)) in enumerate([
                ({"sigmoid": True}, (2, 3, (5, 6), 1)),
                ({"alpha": 0.25}, (2, 4, (4, 3, 3), 0)),
                ({"batch": True, "squared_pred": True}, (3, 3, (6, 5), 1)),
                ({"sigmoid": True, "alpha": 0.7, "batch": True}, (2, 5, (7,), 2))]):
            lam = dict(lams["dice_focal"][i % 2], **var)
            add_drawn("dice_focal_var%d_%s" % (i, tag), "dice_focal", lam,
                      draw(rng, "dice_focal", n, c, sp, dt, absent, var.get("sigmoid", False)))
        for i, (kind, var, (n, c, sp, absent)) in enumerate([
                ("dice_ce", {"label_smoothing": 0.1}, (2, 3, (5, 6), 1)),
                ("dice_ce", {"batch": True, "label_smoothing": 0.3}, (3, 4, (4, 3, 2), 2)),
                ("gdl_focal", {"batch": True}, (3, 3, (6, 5), 1))]):
            lam = dict(lams[kind][i % 2], **var)
            add_drawn("%s_var%d_%s" % (kind, i, tag), kind, lam,
                      draw(rng, kind, n, c, sp, dt, absent))
        for i, (lam, shape) in enumerate([
                ({"alpha": 0.5, "beta": 0.5}, (2, (8, 8))),
                ({"alpha": 0.3, "beta": 0.7}, (3, (4, 5, 6))),
                ({"alpha": 0.8, "beta": 0.2}, (1, (17,))),
                ({"alpha": 0.6, "beta": 0.9}, (4, (6, 6)))]):
            add_drawn("combo_%d_%s" % (i, tag), "combo", lam,
                      draw(rng, "combo", shape[0], 1, shape[1], dt))
    write_json(CATALOGUE, cases)
    print("wrote %d cases to %s" % (len(cases), CATALOGUE))


# --------------------------------------------------------------------------
# --random: compare a build with the references on data no test uses

def compare_run(exe, tmp, kind, lam, arrays):
    got, got_grads, _ = run_losskit(exe, tmp, config_for(kind, lam), arrays)
    value, grad = reference(kind, lam, arrays)
    return (rel(got["value"], expected_value(kind, lam, value)),
            elementwise_rel(got_grads["input"], grad))


def random_lam(rng, kind):
    if kind == "combo":
        return {"alpha": float(rng.uniform(0.05, 0.95)), "beta": float(rng.uniform(0.05, 0.95))}
    if rng.random() < 0.3:
        lam = dict(KINDS[kind]["defaults"])
    else:
        lam = {k: float(rng.uniform(0.1, 2.0)) for k in KINDS[kind]["weights"]}
    if kind != "combo" and rng.random() < 0.3:
        lam["batch"] = True
    if kind == "dice_ce" and rng.random() < 0.4:
        lam["label_smoothing"] = float(rng.uniform(0.0, 0.5))
    if kind == "dice_focal" and rng.random() < 0.5:
        for k in ("sigmoid", "batch", "squared_pred"):
            lam[k] = bool(rng.random() < 0.5)
        if rng.random() < 0.5:
            lam["alpha"] = float(rng.uniform(0.0, 1.0))
    return lam


def run_random(seed, exe):
    rng = np.random.default_rng(1_000_003 * (seed + 1) + 31)  # never SEED
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(8):
            for dt, tag in ((np.float64, "f64"), (np.float32, "f32")):
                for kind in KINDS:
                    n = int(rng.integers(1, 4))
                    c = int(rng.integers(2, 7))
                    spatial = tuple(int(s) for s in rng.integers(1, 8, int(rng.integers(1, 4))))
                    absent = int(rng.integers(0, c)) if rng.random() < 0.4 else 0
                    lam = random_lam(rng, kind)
                    arrays = condition(rng, kind, lam, draw(rng, kind, n, c, spatial, dt, absent,
                                                            lam.get("sigmoid", False)))
                    record(worst, (kind, tag), *compare_run(exe, tmp, kind, lam, arrays))
    return report(seed, worst, "the references (float64)", 11)


def check_and_run_random(seed, exe):
    """The checks of the references (on data drawn from seed), then
    run_random."""
    check_shipped_configs()
    check_transcriptions(np.random.default_rng(seed + 77))
    return run_random(seed, exe)


if __name__ == "__main__":
    sys.exit(main(__doc__, write_goldens, check_and_run_random, "the references"))
