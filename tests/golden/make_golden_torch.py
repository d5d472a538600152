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

    /usr/bin/python3 tests/golden/make_golden_torch.py --random 7  # compare a build

--random SEED draws new shapes, parameters and data (never from the goldens'
seed) for cross_entropy (class-index targets, int64 and int32, some ignored;
class-probability targets; per-class weights; label smoothing; logits (C,),
(N, C) and (N, C, d1, ...)) and for torch's l1_loss and mse_loss (the tutorial
family's l1 and mse), float32 and float64, reductions none, mean and sum; runs
`build/host/losskit run ... --json` (or --losskit PATH) into a temporary folder
and compares with torch in float64 on the same values. It prints the largest
relative errors and exits 1 if a value is off by more than 1e-6, or a gradient
or per-position output by more than 1e-5 (each element against max(|want|,
1e-4), the catalogue test's 1e-9 absolute floor). float32 gradients and outputs
of cross_entropy are judged normwise (max |error| / max |want|): softmax(x)_y -
1 and lse - x_y cancel where p_y is near 1, so an element there carries the
float32 rounding of p_y, not an error of the kernel; their elementwise figure is
printed beside. Every case keeps at least one position not ignored: torch's
mean over nothing is NaN, losskit's is 0 (docs/losses.md).
"""
import json
import os
import subprocess
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import elementwise_rel, options, path, save, write_json

OUT = "tests/golden/torch"
SEED = 20240612
C = 4
SHAPE = (2, C, 8, 8)
TSHAPE = (2, 8, 8)


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
    write_json(OUT + "/cases.json", golden)
    print("wrote %d cases to %s/cases.json" % (len(golden), OUT))


# --------------------------------------------------------------------------
# --random: compare a build with torch on data no test uses

def random_ce_case(rng, dt):
    """A random cross_entropy config and its input and target arrays."""
    C = int(rng.integers(2, 13))
    form = rng.choice(["vec", "2d", "nd", "big"], p=[0.15, 0.3, 0.4, 0.15])
    if form == "vec":
        shape = (C,)
    elif form == "2d":
        shape = (int(rng.integers(1, 40)), C)
    elif form == "nd":
        shape = (int(rng.integers(1, 4)), C) + tuple(int(v) for v in
                                                    rng.integers(1, 7, int(rng.integers(1, 4))))
    else:  # several blocks of the driver and a ragged tail
        shape = (int(rng.integers(2, 5)), C, int(rng.integers(2000, 5000)))
    tshape = () if len(shape) == 1 else shape[:1] + shape[2:]
    x = rng.normal(0.0, float(rng.uniform(0.5, 4.0)), shape)
    params = {}
    if rng.uniform() < 0.5:
        params["weight"] = [float(v) for v in rng.uniform(0.2, 2.0, C)]
    if rng.uniform() < 0.5:
        params["label_smoothing"] = float(rng.choice([rng.uniform(0.0, 1.0), 1.0]))
    if rng.uniform() < 0.3:  # class probabilities
        cdim = 0 if len(shape) == 1 else 1
        p = np.exp(rng.normal(0.0, 1.5, shape))
        t = p / p.sum(axis=cdim, keepdims=True)
        t = t.astype(np.float32 if dt == "f32" else np.float64)
    else:
        t = rng.integers(0, C, tshape).astype(rng.choice([np.int64, np.int32]))
        ign = int(rng.choice([-100, -1, int(rng.integers(0, C))]))
        if ign != -100:
            params["ignore_index"] = ign
        kept = (ign + 1) % C if ign >= 0 else 0  # a class other than ign
        if t.ndim and rng.uniform() < 0.6:
            t = np.where(rng.uniform(size=t.shape) < rng.uniform(0.05, 0.4), ign, t).astype(t.dtype)
            if (t == ign).all():  # keep one position: torch's mean over nothing is NaN
                t.flat[0] = kept
        elif not t.ndim and int(t) == ign:
            t = np.array(kept, dtype=t.dtype)
    return params, x.astype(np.float32 if dt == "f32" else np.float64), t


def random_pointwise_case(rng, dt):
    if rng.uniform() < 0.25:
        shape = (int(rng.integers(40000, 70000)),)
    else:
        shape = tuple(int(v) for v in rng.integers(1, 9, int(rng.integers(1, 5))))
    ftype = np.float32 if dt == "f32" else np.float64
    scale = float(10 ** rng.uniform(-2, 2))
    x = rng.normal(0.0, scale, shape).astype(ftype)
    t = rng.normal(0.0, scale, shape).astype(ftype)
    return {}, x, t


def torch_reference(loss, params, red, x, t):
    """torch in float64 on the upcast values: (value or None, out or None, grad)."""
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    if t.dtype.kind == "i":
        tt = torch.from_numpy(t.astype(np.int64))
    else:
        tt = torch.from_numpy(t.astype(np.float64))
    if loss == "cross_entropy":
        r = reference({"params": params, "reduction": red}, xt, tt)
    elif loss == "l1":
        r = F.l1_loss(xt, tt, reduction=red)
    else:
        r = F.mse_loss(xt, tt, reduction=red)
    value = out = None
    if red == "none":
        out = r.detach().numpy()
        r = r.sum()
    else:
        value = float(r)
    r.backward()
    return value, out, xt.grad.numpy()


def normwise_rel(got, want):
    top = float(np.max(np.abs(want), initial=0.0))
    d = float(np.max(np.abs(np.asarray(got, np.float64) - want), initial=0.0))
    return d / top if top > 0 else d


def run_losskit(exe, tmp, config, x, t):
    cpath = os.path.join(tmp, "config.json")
    with open(cpath, "w") as f:
        json.dump(config, f)
    xf, tf = os.path.join(tmp, "x.npy"), os.path.join(tmp, "t.npy")
    gf, of = os.path.join(tmp, "g.npy"), os.path.join(tmp, "out.npy")
    np.save(xf, x)
    np.save(tf, t)
    cmd = [exe, "run", cpath, "--input", xf, "--target", tf, "--grad", gf, "--json"]
    if config["reduction"] == "none":
        cmd += ["--out", of]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), res.stderr.strip()))
    got = json.loads(res.stdout)
    out = np.load(of) if config["reduction"] == "none" else None
    return got["value"], out, np.load(gf)


def run_random(seed, exe, rounds):
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(1_000_003 * (seed + 1) + 29)  # never SEED
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for loss in ("cross_entropy", "l1", "mse"):
                for dt in ("f64", "f32"):
                    make = random_ce_case if loss == "cross_entropy" else random_pointwise_case
                    params, x, t = make(rng, dt)
                    for red in ("mean", "sum", "none"):
                        config = {"loss": loss, "params": params, "reduction": red}
                        value, out, grad = run_losskit(exe, tmp, config, x, t)
                        rv, ro, rg = torch_reference(loss, params, red, x, t)
                        w = worst.setdefault((loss, dt), [0.0, 0.0, 0.0, 0])
                        if rv is not None:
                            w[0] = max(w[0], abs(value - rv) / max(abs(rv), 1e-12))
                        pairs = [(grad, rg)] + ([(out, ro)] if ro is not None else [])
                        for got, want in pairs:
                            w[1] = max(w[1], elementwise_rel(got, want, nan_equal=True))
                            w[2] = max(w[2], normwise_rel(got, want))
                        w[3] += 1
    ok = True
    print("seed %d: largest relative errors against torch (float64 on the same values)" % seed)
    for (loss, dt), (ve, ge, gn, n) in sorted(worst.items()):
        judged = gn if (loss == "cross_entropy" and dt == "f32") else ge
        flag = ve > 1e-6 or judged > 1e-5
        ok &= not flag
        print("  %-13s %s  value %.2e  gradient/output %.2e (normwise %.2e)  (%d runs)%s"
              % (loss, dt, ve, ge, gn, n, "   FAIL" if flag else ""))
    return ok


if __name__ == "__main__":
    args = options(__doc__, more=[("--rounds", {"type": int, "default": 8})]).parse_args()
    if args.random is None:
        main()
    else:
        raise SystemExit(0 if run_random(args.random, args.losskit, args.rounds) else 1)
