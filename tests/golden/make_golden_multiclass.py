#!/usr/bin/python3
"""Golden data for dice in mode "multiclass", computed by PyTorch.

Run from anywhere with a Python that has torch (1.13 here) and numpy:

    /usr/bin/python3 tests/golden/make_golden_multiclass.py

It writes, deterministically (fixed seed, fixed order), into
tests/golden/multiclass/:
  input_f64.npy, input_f32.npy   logits ~ N(0, 2), shape 2x4x8x8 (N, C, H, W);
                                 the float32 one is the float64 one rounded
  target*.npy                    int64 class indices (2, 8, 8), some with
                                 ignored positions, one with class 3 absent,
                                 and float64 one-hot per-class targets
                                 (2, 4, 8, 8)
  <case>_grad.npy                d value / d input, float64
  cases.json                     the cases: config, tensors, value, grad

The reference follows segmentation_models_pytorch's DiceLoss in multiclass
mode step for step (softmax over dim 1, ignored positions masked out of
prediction and one-hot target, sums over batch and pixels per class), with
the score losskit documents: (2 I_c + s) / (P_c + T_c + s) for every class,
averaged, loss = 1 - mean. Two points where smp differs are left out on
purpose: smp zeroes the loss of a class absent from the target (losskit does
not excuse false positives, as the binary tutorial dice does not; the case
"mc_absent_class" pins it), and smp clamps the denominator at eps (losskit
uses the empty-mask rule, denominator 0 scoring 1). Everything is float64;
tests/test_simd.c checks both of losskit's kernel paths against these files
(value 1e-12 relative, gradient elements 1e-10 relative + 1e-15 absolute).
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import path, write_json

OUT = "tests/golden/multiclass"
SEED = 20240612
N, C, H, W = 2, 4, 8, 8


def dice_multiclass(x, y, smooth, ignore_index):
    """smp's multiclass DiceLoss with losskit's per-class score, on logits x
    (N, C, H, W) and int64 indices y (N, H, W) or float targets (N, C, H, W)."""
    bs, num_classes = x.shape[0], x.shape[1]
    p = x.log_softmax(dim=1).exp().view(bs, num_classes, -1)
    if y.dtype == torch.int64:
        y = y.view(bs, -1)
        mask = y != ignore_index
        p = p * mask.unsqueeze(1)
        t = F.one_hot((y * mask).to(torch.long), num_classes)  # N, HW, C
        t = t.permute(0, 2, 1) * mask.unsqueeze(1)  # N, C, HW
    else:
        t = y.view(bs, num_classes, -1)
    t = t.type_as(p)
    dims = (0, 2)
    intersection = torch.sum(p * t, dim=dims)
    cardinality = torch.sum(p + t, dim=dims)
    score = (2.0 * intersection + smooth) / (cardinality + smooth)
    return 1.0 - score.mean()


def save(name, array):
    """Saves array as OUT/name; returns that path."""
    np.save(path(f"{OUT}/{name}"), array)
    return f"{OUT}/{name}"


def main():
    os.makedirs(path(OUT), exist_ok=True)
    rng = np.random.default_rng(SEED)
    x64 = rng.normal(0.0, 2.0, size=(N, C, H, W))
    x32 = x64.astype(np.float32)
    y = rng.integers(0, C, size=(N, H, W), dtype=np.int64)
    y_ignore = y.copy()
    y_ignore[rng.random((N, H, W)) < 0.2] = -100
    y_ignore255 = y.copy()
    y_ignore255[rng.random((N, H, W)) < 0.3] = 255
    y_absent = np.where(y == 3, 0, y)
    onehot = np.eye(C)[y].transpose(0, 3, 1, 2).copy()  # (N, C, H, W) float64

    files = {
        "input_f64": save("input_f64.npy", x64),
        "input_f32": save("input_f32.npy", x32),
        "target": save("target.npy", y),
        "target_ignore": save("target_ignore.npy", y_ignore),
        "target_ignore255": save("target_ignore255.npy", y_ignore255),
        "target_absent": save("target_absent.npy", y_absent),
        "target_onehot": save("target_onehot.npy", onehot),
    }
    # name, input, target, smooth, ignore_index (None: not in the config)
    specs = [
        ("mc_smooth1", "input_f64", "target", 1.0, None),
        ("mc_smooth05", "input_f64", "target", 0.5, None),
        ("mc_smooth1_ignore", "input_f64", "target_ignore", 1.0, -100),
        ("mc_smooth05_ignore255", "input_f64", "target_ignore255", 0.5, 255),
        ("mc_f32_smooth05_ignore", "input_f32", "target_ignore", 0.5, -100),
        ("mc_absent_class", "input_f64", "target_absent", 1.0, None),
        ("mc_onehot_smooth1", "input_f64", "target_onehot", 1.0, None),
    ]
    arrays = {"input_f64": x64, "input_f32": x32, "target": y, "target_ignore": y_ignore,
              "target_ignore255": y_ignore255, "target_absent": y_absent,
              "target_onehot": onehot}
    cases = []
    for name, xin, tin, smooth, ignore in specs:
        x = torch.tensor(arrays[xin].astype(np.float64), requires_grad=True)
        t = torch.tensor(arrays[tin])
        value = dice_multiclass(x, t, smooth, -100 if ignore is None else ignore)
        value.backward()
        params = {"mode": "multiclass", "smooth": smooth}
        if ignore is not None:
            params["ignore_index"] = ignore
        cases.append({
            "name": name,
            "config": {"loss": "dice", "params": params, "reduction": "mean"},
            "tensors": {"input": files[xin], "target": files[tin]},
            "value": value.item(),
            "grad": save(f"{name}_grad.npy", x.grad.numpy()),
        })
    # one-hot float targets are the same problem as their indices
    assert abs(cases[0]["value"] - cases[-1]["value"]) < 1e-15
    write_json(f"{OUT}/cases.json", cases)
    for c in cases:
        print(f"{c['name']:26s} {c['value']:.17g}")


if __name__ == "__main__":
    main()
