#!/usr/bin/python3
"""Golden data for the torch loss family, computed by PyTorch itself.

Run from anywhere with a Python that has torch (1.13 here) and numpy:

    /usr/bin/python3 tests/golden/make_golden_torch.py

It writes, deterministically (fixed seed, fixed order):
  configs/data/mc_input.npy    float32 logits ~ N(0, 2), shape 2x4x8x8
  configs/data/mc_target.npy   int64 class indices in [0, 4), shape 2x8x8
  tests/golden/torch/*.npy     further inputs and targets, reference
                               gradients and reduction-none outputs (float64)
  tests/golden/torch/cases.json  the list of cases, in the format of
                               tests/golden/golden.json

Every reference is torch.nn.functional.cross_entropy in float64 on the stored
tensors (float32 ones upcast, int32 targets widened to int64), so the runtime,
which accumulates in double, must agree to ~1e-12 relative; tests/test_torch.c
checks 1e-6.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = "tests/golden/torch"
SEED = 20240612
C = 4
SHAPE = (2, C, 8, 8)
TSHAPE = (2, 8, 8)


def path(rel):
    return os.path.join(ROOT, rel)


def save(rel, array):
    np.save(path(rel), array)
    return rel


def ignore_some(rng, t, frac, value=-100):
    t = t.copy()
    t[rng.uniform(size=t.shape) < frac] = value
    return t


def probabilities(rng, shape, class_dim):
    """Random class distributions along class_dim (a softmax of noise)."""
    p = np.exp(rng.normal(0.0, 1.5, shape))
    return p / p.sum(axis=class_dim, keepdims=True)


def make_data(rng):
    f = {}
    x = rng.normal(0.0, 2.0, SHAPE).astype(np.float32)
    t = rng.integers(0, C, TSHAPE).astype(np.int64)
    f["x"] = save("configs/data/mc_input.npy", x)
    f["t"] = save("configs/data/mc_target.npy", t)
    f["t_ign"] = save(OUT + "/target_ignore.npy", ignore_some(rng, t, 0.2))
    f["t_i32"] = save(OUT + "/target_ignore_i32.npy",
                      ignore_some(rng, t, 0.2).astype(np.int32))
    f["x64"] = save(OUT + "/input_f64.npy", rng.normal(0.0, 2.0, SHAPE))
    f["p"] = save(OUT + "/prob.npy", probabilities(rng, SHAPE, 1).astype(np.float32))
    f["p64"] = save(OUT + "/prob_f64.npy", probabilities(rng, SHAPE, 1))
    # (C,) logits with a 0-d class index or a (C,) distribution
    f["vx"] = save(OUT + "/vec_input.npy", rng.normal(0.0, 2.0, (5,)).astype(np.float32))
    f["vt"] = save(OUT + "/vec_target.npy", np.array(3, dtype=np.int64))
    f["vp"] = save(OUT + "/vec_prob.npy", probabilities(rng, (5,), 0))
    # (N, C) logits
    f["x2"] = save(OUT + "/input_2d.npy", rng.normal(0.0, 2.0, (7, 5)).astype(np.float32))
    f["t2"] = save(OUT + "/target_2d.npy",
                   np.array([0, 4, -100, 2, 1, 4, 3], dtype=np.int64))
    # (N, C, d1, d2, d3) logits
    f["x5"] = save(OUT + "/input_5d.npy",
                   rng.normal(0.0, 2.0, (2, 3, 2, 3, 4)).astype(np.float32))
    f["t5"] = save(OUT + "/target_5d.npy",
                   ignore_some(rng, rng.integers(0, 3, (2, 2, 3, 4)), 0.15).astype(np.int64))
    f["p5"] = save(OUT + "/prob_5d.npy", probabilities(rng, (2, 3, 2, 3, 4), 1))
    return f


def ce(params, red="mean"):
    return {"loss": "cross_entropy", "params": params, "reduction": red}


def cases(weights4, weights5, weights3):
    """(name, config, {slot: file key}) in a fixed order."""
    base = {"input": "x", "target": "t"}
    ign = {"input": "x", "target": "t_ign"}
    prob = {"input": "x", "target": "p"}
    w = {"weight": weights4}
    ls = {"label_smoothing": 0.1}
    out = [
        ("cross_entropy", load_config(), base),
        ("ce_sum", ce({}, "sum"), base),
        ("ce_none", ce({}, "none"), base),
        ("ce_weight", ce(w), base),
        ("ce_weight_sum", ce(w, "sum"), base),
        ("ce_ignore", ce({}), ign),
        ("ce_ignore_weight", ce(w), ign),
        ("ce_ignore_weight_none", ce(w, "none"), ign),
        ("ce_ignore_index_class1", ce({"ignore_index": 1, "weight": weights4}), base),
        ("ce_ls01", ce(ls), base),
        ("ce_ls01_weight", ce(dict(ls, **w)), base),
        ("ce_ls01_ignore", ce(ls), ign),
        ("ce_ls01_weight_ignore", ce(dict(ls, **w)), ign),
        ("ce_ls01_weight_ignore_sum", ce(dict(ls, **w), "sum"), ign),
        ("ce_ls01_weight_ignore_none", ce(dict(ls, **w), "none"), ign),
        ("ce_ls1_weight", ce({"label_smoothing": 1.0, "weight": weights4}), ign),
        ("ce_i32_weight_ls", ce(dict(ls, **w)), {"input": "x", "target": "t_i32"}),
        ("ce_prob", ce({}), prob),
        ("ce_prob_sum", ce({}, "sum"), prob),
        ("ce_prob_none", ce({}, "none"), prob),
        ("ce_prob_ls02", ce({"label_smoothing": 0.2}), prob),
        ("ce_prob_ls02_weight", ce({"label_smoothing": 0.2, "weight": weights4}), prob),
        ("ce_prob_ls02_weight_none", ce({"label_smoothing": 0.2, "weight": weights4}, "none"),
         prob),
        ("ce_vec", ce({}), {"input": "vx", "target": "vt"}),
        ("ce_vec_weight_ls_none", ce({"weight": weights5, "label_smoothing": 0.3}, "none"),
         {"input": "vx", "target": "vt"}),
        ("ce_vec_prob_sum", ce({}, "sum"), {"input": "vx", "target": "vp"}),
        ("ce_2d", ce({}), {"input": "x2", "target": "t2"}),
        ("ce_2d_weight_ls", ce({"weight": weights5, "label_smoothing": 0.1}),
         {"input": "x2", "target": "t2"}),
        ("ce_2d_weight_none", ce({"weight": weights5}, "none"), {"input": "x2", "target": "t2"}),
        ("ce_5d", ce({}), {"input": "x5", "target": "t5"}),
        ("ce_5d_weight_ls", ce({"weight": weights3, "label_smoothing": 0.1}),
         {"input": "x5", "target": "t5"}),
        ("ce_5d_none", ce({"weight": weights3}, "none"), {"input": "x5", "target": "t5"}),
        ("ce_5d_prob_ls", ce({"label_smoothing": 0.05}), {"input": "x5", "target": "p5"}),
        ("ce_f64_weight_ls", ce(dict(ls, **w)), {"input": "x64", "target": "t_ign"}),
        ("ce_f64_prob_weight", ce(w), {"input": "x64", "target": "p64"}),
        ("ce_f64_none", ce({}, "none"), {"input": "x64", "target": "t"}),
    ]
    return out


def load_config():
    with open(path("configs/cross_entropy.json")) as f:
        return json.load(f)


def reference(config, x, t):
    """torch.nn.functional.cross_entropy for a losskit config."""
    p = config.get("params", {})
    w = p.get("weight") or None
    return F.cross_entropy(x, t, weight=None if w is None else torch.tensor(w),
                           ignore_index=p.get("ignore_index", -100),
                           label_smoothing=p.get("label_smoothing", 0.0),
                           reduction=config.get("reduction", "mean"))


def golden_case(name, config, slots, files):
    rels = {slot: files[key] for slot, key in slots.items()}
    x = torch.from_numpy(np.load(path(rels["input"])).astype(np.float64)).requires_grad_(True)
    t = np.load(path(rels["target"]))
    t = torch.from_numpy(t.astype(np.int64) if t.dtype.kind == "i" else t.astype(np.float64))
    result = reference(config, x, t)
    case = {"name": name, "config": config, "tensors": rels}
    if config.get("reduction", "mean") == "none":
        case["value"] = None
        case["out"] = save("%s/%s_out.npy" % (OUT, name), result.detach().numpy())
        result = result.sum()
    else:
        case["value"] = float(result)
    assert np.isfinite(float(result)), name
    result.backward()
    case["grad"] = save("%s/%s_grad.npy" % (OUT, name), x.grad.numpy())
    return case


def main():
    torch.set_default_dtype(torch.float64)
    os.makedirs(path(OUT), exist_ok=True)
    rng = np.random.default_rng(SEED)
    files = make_data(rng)
    weights4 = [float(v) for v in np.round(rng.uniform(0.2, 2.0, C), 3)]
    weights5 = [float(v) for v in np.round(rng.uniform(0.2, 2.0, 5), 3)]
    weights3 = [float(v) for v in np.round(rng.uniform(0.2, 2.0, 3), 3)]
    golden = [golden_case(n, c, s, files) for n, c, s in cases(weights4, weights5, weights3)]
    with open(path(OUT + "/cases.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("wrote %d cases to %s/cases.json" % (len(golden), OUT))


if __name__ == "__main__":
    main()
