#!/usr/bin/python3
"""Golden data for the tutorial loss family, computed by PyTorch.

Run from anywhere with a Python that has torch (1.13 here) and numpy:

    /usr/bin/python3 tests/golden/make_golden.py

It writes, deterministically (fixed seed, fixed order):
  configs/data/input.npy, target.npy   float32 sample logits ~ N(0, 2) and a
                                       0/1 mask, shape 2x1x16x16
  tests/golden/*.npy                   extra tensors, reference gradients and
                                       reduction-none outputs (float64)
  tests/golden/golden.json             the list of cases

Every reference is computed in float64 from the stored tensors (float32 ones
upcast), so the runtime, which accumulates in double, must agree to ~1e-12
relative; tests/test_golden.c checks 1e-6.

The tutorial's classes are copied below as they are, with two changes that do
not alter a number on these data: torch.sigmoid for the deprecated
F.sigmoid (the same function), and the BCE inside DiceBCELoss and FocalLoss
taken from the logits (F.binary_cross_entropy_with_logits) instead of
F.binary_cross_entropy on sigmoid(inputs). The two agree here because no logit
saturates (|x| < 10, so torch's log clamp at -100 never acts); main() asserts
it.
"""
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from goldlib import path, save, write_json

GOLDEN = "tests/golden"
SEED = 20240611
SHAPE = (2, 1, 16, 16)


# --------------------------------------------------------------------------
# The tutorial's losses (reference/custom-loss-tutorial.txt)

class DiceLoss(nn.Module):
    def __init__(self, weight=None, size_average=True):
        super(DiceLoss, self).__init__()

    def forward(self, inputs, targets, smooth=1):
        inputs = torch.sigmoid(inputs)
        inputs = inputs.view(-1)
        targets = targets.view(-1)
        intersection = (inputs * targets).sum()
        dice = (2. * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
        return 1 - dice


class DiceBCELoss(nn.Module):
    def __init__(self, weight=None, size_average=True):
        super(DiceBCELoss, self).__init__()

    def forward(self, inputs, targets, smooth=1):
        logits = inputs.view(-1)
        inputs = torch.sigmoid(inputs)
        inputs = inputs.view(-1)
        targets = targets.view(-1)
        intersection = (inputs * targets).sum()
        dice_loss = 1 - (2. * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
        BCE = F.binary_cross_entropy_with_logits(logits, targets, reduction='mean')
        Dice_BCE = BCE + dice_loss
        return Dice_BCE


class IoULoss(nn.Module):
    def __init__(self, weight=None, size_average=True):
        super(IoULoss, self).__init__()

    def forward(self, inputs, targets, smooth=1):
        inputs = torch.sigmoid(inputs)
        inputs = inputs.view(-1)
        targets = targets.view(-1)
        intersection = (inputs * targets).sum()
        total = (inputs + targets).sum()
        union = total - intersection
        IoU = (intersection + smooth) / (union + smooth)
        return 1 - IoU


ALPHA = 0.8
GAMMA = 2


class FocalLoss(nn.Module):
    def __init__(self, weight=None, size_average=True):
        super(FocalLoss, self).__init__()

    def forward(self, inputs, targets, alpha=ALPHA, gamma=GAMMA, smooth=1):
        logits = inputs.view(-1)
        targets = targets.view(-1)
        BCE = F.binary_cross_entropy_with_logits(logits, targets, reduction='mean')
        BCE_EXP = torch.exp(-BCE)
        focal_loss = alpha * (1 - BCE_EXP) ** gamma * BCE
        return focal_loss


# torchvision.ops.sigmoid_focal_loss, written out (torchvision is optional).
def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


# --------------------------------------------------------------------------
# The losses as configs name them: f(x, tensors, params, reduction)

def reduce(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def ref_mse(x, ts, p, red):
    w = ts.get("weight")
    if w is None:
        return F.mse_loss(x, ts["target"], reduction=red)
    return reduce(w * F.mse_loss(x, ts["target"], reduction="none"), red)


def ref_l1(x, ts, p, red):
    w = ts.get("weight")
    if w is None:
        return F.l1_loss(x, ts["target"], reduction=red)
    return reduce(w * F.l1_loss(x, ts["target"], reduction="none"), red)


def ref_bce(x, ts, p, red):
    pw = p.get("pos_weight") or None
    if pw is not None:
        pw = torch.tensor(pw, dtype=torch.float64)
    return F.binary_cross_entropy_with_logits(x, ts["target"], weight=ts.get("weight"),
                                              pos_weight=pw, reduction=red)


def ref_dice(x, ts, p, red):
    return DiceLoss()(x, ts["target"], smooth=p.get("smooth", 1))


def ref_dice_bce(x, ts, p, red):
    return DiceBCELoss()(x, ts["target"], smooth=p.get("smooth", 1))


def ref_iou(x, ts, p, red):
    return IoULoss()(x, ts["target"], smooth=p.get("smooth", 1))


def ref_focal(x, ts, p, red):
    return sigmoid_focal_loss(x, ts["target"], alpha=p.get("alpha", 0.25),
                              gamma=p.get("gamma", 2.0), reduction=red)


def ref_focal_mean_bce(x, ts, p, red):
    return FocalLoss()(x, ts["target"], alpha=p.get("alpha", ALPHA), gamma=p.get("gamma", GAMMA))


REFS = {
    "mse": ref_mse, "l1": ref_l1, "bce_with_logits": ref_bce, "dice": ref_dice,
    "dice_bce": ref_dice_bce, "iou": ref_iou, "focal": ref_focal,
    "focal_mean_bce": ref_focal_mean_bce,
}
IDS = list(REFS)


def ref_config(config, tensors):
    """The reference value (or per-element tensor) of a config on tensors."""
    red = config.get("reduction", "mean")
    if "terms" in config:
        return sum(term.get("weight", 1.0) * ref_config(
            {"loss": term["loss"], "params": term.get("params", {}), "reduction": red}, tensors)
            for term in config["terms"])
    x = tensors["input"]
    ts = {k: v for k, v in tensors.items() if k != "input"}
    return REFS[config["loss"]](x, ts, config.get("params", {}), red)


# --------------------------------------------------------------------------
# Data

def make_data(rng):
    """Sample data: float32 logits ~ N(0, 2); a mask of two discs per image."""
    files = {}
    x = rng.normal(0.0, 2.0, SHAPE).astype(np.float32)
    yy, xx = np.mgrid[0:16, 0:16]
    t = np.zeros(SHAPE, dtype=np.float32)
    for n in range(SHAPE[0]):
        for _ in range(2):
            cy, cx = rng.uniform(3, 13, 2)
            r = rng.uniform(2.5, 5.0)
            t[n, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    files["input"] = save("configs/data/input.npy", x)
    files["target"] = save("configs/data/target.npy", t)
    files["weight"] = save(GOLDEN + "/weight.npy", rng.uniform(0.0, 2.0, SHAPE).astype(np.float32))
    files["input_f64"] = save(GOLDEN + "/input_f64.npy", rng.normal(0.0, 2.0, SHAPE))
    files["target_f64"] = save(GOLDEN + "/target_f64.npy", t.astype(np.float64))
    files["target_soft"] = save(GOLDEN + "/target_soft.npy", rng.uniform(0.0, 1.0, SHAPE))
    return files


def load_config(loss_id):
    with open(path("configs/%s.json" % loss_id)) as f:
        return json.load(f)


def cases(files, pos_weight):
    """(name, config, tensor slot -> file key) in a fixed order."""
    base = {"input": "input", "target": "target"}
    wbase = dict(base, weight="weight")
    out = [(i, load_config(i), base) for i in IDS]
    out.append(("dice_bce_terms", load_config("dice_bce_terms"), base))
    for i in ("mse", "l1", "bce_with_logits", "focal"):
        cfg = load_config(i)
        for red in ("sum", "none"):
            out.append(("%s_%s" % (i, red), dict(cfg, reduction=red), base))
    for i in ("mse", "l1", "bce_with_logits"):
        out.append(("%s_weight" % i, {"loss": i, "reduction": "mean"}, wbase))
    out.append(("mse_weight_none", {"loss": "mse", "reduction": "none"}, wbase))
    bce = "bce_with_logits"
    out += [
        ("bce_pos_weight", {"loss": bce, "params": {"pos_weight": pos_weight},
                            "reduction": "mean"}, base),
        ("bce_pos_weight1", {"loss": bce, "params": {"pos_weight": [2.5]},
                             "reduction": "mean"}, base),
        ("bce_pos_weight_weight_none", {"loss": bce, "params": {"pos_weight": pos_weight},
                                        "reduction": "none"}, wbase),
        ("focal_gamma05", {"loss": "focal", "params": {"alpha": 0.25, "gamma": 0.5},
                           "reduction": "mean"}, base),
        ("focal_alpha_neg", {"loss": "focal", "params": {"alpha": -1, "gamma": 2.0},
                             "reduction": "mean"}, base),
        ("focal_gamma0", {"loss": "focal", "params": {"alpha": 0.25, "gamma": 0},
                          "reduction": "sum"}, base),
        ("dice_smooth05", {"loss": "dice", "params": {"smooth": 0.5}, "reduction": "mean"}, base),
        ("iou_smooth0", {"loss": "iou", "params": {"smooth": 0}, "reduction": "mean"}, base),
        ("dice_bce_smooth05", {"loss": "dice_bce", "params": {"smooth": 0.5},
                               "reduction": "mean"}, base),
        ("focal_mean_bce_a05_g05", {"loss": "focal_mean_bce",
                                    "params": {"alpha": 0.5, "gamma": 0.5},
                                    "reduction": "mean"}, base),
        # float64 input: with a float32 target (mixed dtypes), with a float64
        # target, and with soft float64 targets (focal's general path).
        ("mse_f64", load_config("mse"), {"input": "input_f64", "target": "target"}),
        ("bce_f64", load_config(bce), {"input": "input_f64", "target": "target"}),
        ("dice_f64", load_config("dice"), {"input": "input_f64", "target": "target_f64"}),
        ("iou_f64", load_config("iou"), {"input": "input_f64", "target": "target_f64"}),
        ("focal_f64", load_config("focal"), {"input": "input_f64", "target": "target_f64"}),
        ("focal_soft_f64", {"loss": "focal", "params": {"alpha": 0.25, "gamma": 0.5},
                            "reduction": "mean"},
         {"input": "input_f64", "target": "target_soft"}),
        ("focal_soft_none_f64", {"loss": "focal", "params": {"alpha": 0.6, "gamma": 3.0},
                                 "reduction": "none"},
         {"input": "input_f64", "target": "target_soft"}),
        ("bce_soft_f64", {"loss": bce, "params": {"pos_weight": pos_weight}, "reduction": "sum"},
         {"input": "input_f64", "target": "target_soft"}),
        ("dice_bce_f64", load_config("dice_bce"), {"input": "input_f64", "target": "target_soft"}),
        ("focal_mean_bce_f64", load_config("focal_mean_bce"),
         {"input": "input_f64", "target": "target_soft"}),
    ]
    return out


def golden_case(name, config, slots, files):
    rels = {slot: files[key] for slot, key in slots.items()}
    tensors = {slot: torch.from_numpy(np.load(path(rel)).astype(np.float64))
               for slot, rel in rels.items()}
    tensors["input"].requires_grad_(True)
    result = ref_config(config, tensors)
    case = {"name": name, "config": config, "tensors": rels}
    if config.get("reduction", "mean") == "none":
        case["value"] = None
        case["out"] = save("%s/%s_out.npy" % (GOLDEN, name), result.detach().numpy())
        result = result.sum()
    else:
        case["value"] = float(result)
    result.backward()
    case["grad"] = save("%s/%s_grad.npy" % (GOLDEN, name), tensors["input"].grad.numpy())
    return case


def check_tutorial_bce(files):
    """The logits BCE used above equals the tutorial's BCE on probabilities."""
    for key in ("input", "input_f64"):
        x = torch.from_numpy(np.load(path(files[key])).astype(np.float64))
        t = torch.from_numpy(np.load(path(files["target"])).astype(np.float64))
        assert x.abs().max() < 10.0
        a = F.binary_cross_entropy(torch.sigmoid(x), t)
        b = F.binary_cross_entropy_with_logits(x, t)
        assert abs(float(a - b)) <= 1e-12 * float(b), (key, float(a), float(b))


def main():
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(SEED)
    files = make_data(rng)
    pos_weight = [float(v) for v in np.round(rng.uniform(0.5, 3.0, SHAPE[-1]), 2)]
    check_tutorial_bce(files)
    golden = [golden_case(n, c, s, files) for n, c, s in cases(files, pos_weight)]
    terms = next(c for c in golden if c["name"] == "dice_bce_terms")
    plain = next(c for c in golden if c["name"] == "dice_bce")
    assert abs(terms["value"] - plain["value"]) <= 1e-14, (terms["value"], plain["value"])
    write_json(GOLDEN + "/golden.json", golden)
    print("wrote %d cases to %s/golden.json" % (len(golden), GOLDEN))


if __name__ == "__main__":
    main()
