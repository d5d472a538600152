#!/usr/bin/python3
"""Golden data for configs whose terms bind slots to other tensors
("tensors": deep supervision, several heads), computed with PyTorch in
float64.

    /usr/bin/python3 tests/golden/make_bindings.py             # write the goldens
    /usr/bin/python3 tests/golden/make_bindings.py --random 7  # compare a build

Without arguments it writes, deterministically (fixed seed, fixed order):
  tests/golden/bindings/*.npy            inputs, reference gradients
  tests/golden/catalogue/bindings.json   the cases (format: tests/test_catalogue.c)

Each config is a weighted sum whose reference is the same weighted sum of
torch losses, each on the tensors its term reads, differentiated by autograd
with respect to every differentiable tensor, so that a tensor two terms read
gets both terms' gradients:
  deep_supervision  configs/deep_supervision.json on configs/data: dice at
                    three scales; dice in plain torch ops (the tutorial's
                    DiceLoss: 1 - (2 sum p t + s) / (sum p + sum t + s),
                    p = sigmoid(x));
  shared_input      bce_with_logits(input, target) + 0.5 mse(input, aux):
                    F.binary_cross_entropy_with_logits and F.mse_loss, one
                    logit tensor read by both terms;
  two_heads_ce      cross_entropy(input, target) + 0.4 cross_entropy(aux_logits,
                    target): F.cross_entropy, two heads sharing one int64
                    target.

--random SEED draws new shapes, weights and data, runs `build/host/losskit
run ... --tensor NAME=FILE --grad-tensor NAME=FILE --json` into a temporary
folder, compares with torch and prints the largest relative errors; it exits
1 if a value is off by more than 1e-6 relative or a gradient element by more
than 1e-5 relative (1e-9 absolute floor, as the catalogue test). The value's
error is taken relative to the sum of the absolute values of the weighted
terms, and a gradient element's relative to the sum of the absolute values
of the terms' weighted gradients there: shared_input's second weight is
drawn from [-1, 2], and where the two terms nearly cancel, the float32
rounding of each (about 6e-8 of it) is large against their difference
(seed 7103: a float32 value 1.2e-6 from torch's float64 one, relative to
itself).
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import (elementwise_rel, load_tensors, main, path, record, rel, report, run_losskit,
                     save, save_tensors, write_json)

OUT = "tests/golden/bindings"
CATALOGUE = "tests/golden/catalogue/bindings.json"
SEED = 20261202


def dice(x, t, smooth):
    p = torch.sigmoid(x)
    return 1.0 - (2.0 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


# The torch loss of one term on the tensors it reads, by slot.
def term_loss(term, ts, red):
    loss, p = term["loss"], term.get("params", {})
    if loss == "dice":
        return dice(ts["input"], ts["target"], p.get("smooth", 1.0))
    if loss == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(ts["input"], ts["target"], reduction=red)
    if loss == "mse":
        return F.mse_loss(ts["input"], ts["target"], reduction=red)
    if loss == "cross_entropy":
        return F.cross_entropy(ts["input"], ts["target"], reduction=red)
    raise ValueError(loss)


SLOTS = {"dice": ("input", "target"), "bce_with_logits": ("input", "target"),
         "mse": ("input", "target"), "cross_entropy": ("input", "target")}


def reference(config, arrays):
    """The value, the gradient of every float tensor by tensor name, per
    tensor the sum over the terms of the absolute value of each term's
    weighted gradient, element by element, and the sum of the absolute
    values of the weighted terms (what a float32 computation's error is
    relative to where terms of opposite sign cancel)."""
    red = config.get("reduction", "mean")
    leaves = {}
    for k, a in arrays.items():
        t = torch.from_numpy(np.asarray(a))
        if t.is_floating_point():
            t = t.to(torch.float64).requires_grad_(True)
        leaves[k] = t
    wanted = [k for k, t in leaves.items() if t.is_floating_point() and k in differentiable(config)]
    total = torch.zeros((), dtype=torch.float64)
    vmag = 0.0
    mags = {k: np.zeros(leaves[k].shape) for k in wanted}
    for term in config["terms"]:
        bind = term.get("tensors", {})
        ts = {s: leaves[bind.get(s, s)] for s in SLOTS[term["loss"]]}
        part = term.get("weight", 1.0) * term_loss(term, ts, red)
        total = total + part
        vmag += abs(float(part))
        gs = torch.autograd.grad(part, [leaves[k] for k in wanted], retain_graph=True,
                                 allow_unused=True)
        for k, g in zip(wanted, gs):
            if g is not None:
                mags[k] += np.abs(g.numpy())
    total.backward()
    grads = {k: leaves[k].grad.numpy() for k in wanted if leaves[k].grad is not None}
    return float(total), grads, mags, vmag


def differentiable(config):
    """The tensors some term reads through its input slot (only inputs
    have gradients in these losses)."""
    return {t.get("tensors", {}).get("input", "input") for t in config["terms"]}


def ds_config():
    with open(path("configs/deep_supervision.json")) as f:
        c = json.load(f)
    c.pop("description", None)
    return c


SHARED = {"terms": [{"loss": "bce_with_logits", "weight": 1.0},
                    {"loss": "mse", "weight": 0.5, "tensors": {"target": "aux"}}],
          "reduction": "mean"}
TWO_HEADS = {"terms": [{"loss": "cross_entropy", "weight": 1.0},
                       {"loss": "cross_entropy", "weight": 0.4,
                        "tensors": {"input": "aux_logits"}}],
             "reduction": "mean"}


def draw_shared(rng, shape, dt):
    return {"input": (1.5 * rng.standard_normal(shape)).astype(dt),
            "target": (rng.random(shape) > 0.5).astype(dt),
            "aux": rng.standard_normal(shape).astype(dt)}


def draw_heads(rng, n, c, hw, dt):
    return {"input": (1.5 * rng.standard_normal((n, c) + hw)).astype(dt),
            "aux_logits": (1.5 * rng.standard_normal((n, c) + hw)).astype(dt),
            "target": rng.integers(0, c, (n,) + hw).astype(np.int64)}


def write_goldens():
    os.makedirs(path(OUT), exist_ok=True)
    rng = np.random.default_rng(SEED)
    data = "configs/data/"
    cases = []

    def add(name, config, rels):
        value, grads, _, _ = reference(config, load_tensors(rels))
        gr = {k: save("%s/%s_grad_%s.npy" % (OUT, name, k), g) for k, g in grads.items()}
        cases.append({"name": name, "config": config, "tensors": rels, "value": value,
                      "grads": gr})

    add("deep_supervision_f32", ds_config(),
        {"input": data + "input.npy", "target": data + "target.npy",
         "logits_x2": data + "logits_x2.npy", "mask_x2": data + "mask_x2.npy",
         "logits_x4": data + "logits_x4.npy", "mask_x4": data + "mask_x4.npy"})
    for dt, tag in ((np.float64, "f64"), (np.float32, "f32")):
        add("shared_input_%s" % tag, SHARED,
            save_tensors("%s/shared_%s" % (OUT, tag), draw_shared(rng, (4, 3, 5), dt)))
        add("two_heads_ce_%s" % tag, TWO_HEADS,
            save_tensors("%s/heads_%s" % (OUT, tag), draw_heads(rng, 3, 4, (5,), dt)))
    write_json(CATALOGUE, cases)
    print("wrote %d cases to %s" % (len(cases), CATALOGUE))


# --------------------------------------------------------------------------
# --random: compare a build with torch on data no test uses

def compare_run(exe, tmp, config, arrays):
    """The value's error relative to the sum of the weighted terms'
    magnitudes, and each gradient element's relative to the sum of its
    terms' magnitudes (|want| itself where no two terms cancel)."""
    got, got_grads, _ = run_losskit(exe, tmp, config, arrays, sorted(differentiable(config)))
    value, grads, mags, vmag = reference(config, arrays)
    ge = max(elementwise_rel(got_grads[k], g, mags[k]) for k, g in grads.items())
    return rel(got["value"], value, vmag), ge


def run_random(seed, exe):
    rng = np.random.default_rng(1_000_003 * (seed + 1) + 29)  # never SEED
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(6):
            for dt, tag in ((np.float64, "f64"), (np.float32, "f32")):
                n = int(rng.integers(1, 4))
                h = int(rng.choice([4, 8, 16]))
                scales = int(rng.integers(2, 4))
                terms, arrays = [], {}
                for s in range(scales):
                    hs = h >> s
                    x = (1.5 * rng.standard_normal((n, 1, hs, hs))).astype(dt)
                    t = (rng.random((n, 1, hs, hs)) > 0.5).astype(dt)
                    names = ("input", "target") if s == 0 else ("logits_x%d" % (1 << s),
                                                                 "mask_x%d" % (1 << s))
                    arrays[names[0]], arrays[names[1]] = x, t
                    term = {"loss": "dice", "weight": float(rng.uniform(0.1, 1.0)),
                            "params": {"smooth": float(rng.uniform(0.0, 2.0))}}
                    if s:
                        term["tensors"] = {"input": names[0], "target": names[1]}
                    terms.append(term)
                cases = [("deep_supervision", {"terms": terms, "reduction": "mean"}, arrays)]
                shared = json.loads(json.dumps(SHARED))
                shared["terms"][1]["weight"] = float(rng.uniform(-1.0, 2.0))
                shared["reduction"] = str(rng.choice(["mean", "sum"]))
                shape = tuple(int(s) for s in rng.integers(1, 7, int(rng.integers(1, 4))))
                cases.append(("shared_input", shared, draw_shared(rng, shape, dt)))
                heads = json.loads(json.dumps(TWO_HEADS))
                heads["terms"][1]["weight"] = float(rng.uniform(0.1, 1.0))
                heads["reduction"] = str(rng.choice(["mean", "sum"]))
                cases.append(("two_heads_ce", heads,
                              draw_heads(rng, int(rng.integers(1, 5)), int(rng.integers(2, 6)),
                                         (int(rng.integers(1, 6)),), dt)))
                for name, config, a in cases:
                    record(worst, (name, tag), *compare_run(exe, tmp, config, a))
    return report(seed, worst, "torch (float64 reference)", 17)


if __name__ == "__main__":
    sys.exit(main(__doc__, write_goldens, run_random))
