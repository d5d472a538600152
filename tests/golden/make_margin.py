#!/usr/bin/python3
"""Golden data for the margin family, computed by PyTorch itself.

Run from anywhere with a Python that has torch (1.13 here) and numpy:

    /usr/bin/python3 tests/golden/make_margin.py              # write the goldens
    /usr/bin/python3 tests/golden/make_margin.py --random 7   # compare on new data

Without arguments it writes, deterministically (fixed seed, fixed order),
the inputs of every case under tests/golden/margin/ (float32 and float64
versions, int64 class ids), the references (torch.nn.functional in float64
on the stored values, float32 ones upcast: the value, the output of
reduction none and the gradient of every differentiable slot by autograd)
and the list of cases, tests/golden/catalogue/margin.json, which
tests/test_catalogue.c runs.

Every loss of the family is a torch.nn.functional loss, so every reference
is torch's own function; nothing here restates a formula.

With --random SEED it draws new shapes, parameters, dtypes and data from
that seed (not the committed one), runs `losskit run` on them in a temporary
folder, compares with torch and prints, per loss, the largest relative error
of the value, of the gradients and of the outputs of reduction none (an
absolute floor of 1e-12 for values and 1e-9 for elements, as
tests/test_catalogue.c; a float32 hinge_embedding value, whose terms take
both signs, relative to the same reduction of their magnitudes: see
value_floor). It exits 1 when a value is off by more than 1e-6,
or a gradient or output element by more than 1e-5 (test_catalogue's
tolerances).
"""
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import (LosskitError, Writer, load_tensors, max_rel, path, run_losskit, trials_main,
                     write_json)

OUT = "tests/golden/margin"
CATALOGUE = "tests/golden/catalogue/margin.json"
SEED = 20261202
REDUCTIONS = ("none", "mean", "sum")

# ---------------------------------------------------------------------------
# The losses: slots (name, kind, differentiable) and torch's function.
# Kinds: real scores, sign labels (float +-1), class ids (int64, one per row)
# and multilabel id lists (int64, shaped like the input, -1 padded).


def _hinge(t, p, r):
    return F.hinge_embedding_loss(t["input"], t["target"], margin=p.get("margin", 1.0),
                                  reduction=r)


def _soft(t, p, r):
    return F.soft_margin_loss(t["input"], t["target"], reduction=r)


def _ranking(t, p, r):
    return F.margin_ranking_loss(t["input1"], t["input2"], t["target"],
                                 margin=p.get("margin", 0.0), reduction=r)


def _multi(t, p, r):
    w = p.get("weight") or None
    return F.multi_margin_loss(t["input"], t["target"], p=p.get("p", 1),
                               margin=p.get("margin", 1.0),
                               weight=None if w is None else torch.tensor(w, dtype=torch.float64),
                               reduction=r)


def _multilabel(t, p, r):
    return F.multilabel_margin_loss(t["input"], t["target"], reduction=r)


def _cosine(t, p, r):
    return F.cosine_embedding_loss(t["input1"], t["input2"], t["target"],
                                   margin=p.get("margin", 0.0), reduction=r)


def _triplet(t, p, r):
    return F.triplet_margin_loss(t["anchor"], t["positive"], t["negative"],
                                 margin=p.get("margin", 1.0), p=p.get("p", 2.0),
                                 eps=p.get("eps", 1e-6), swap=p.get("swap", False), reduction=r)


def _twd(t, p, r):
    if p.get("distance", "pairwise") == "cosine":
        # over the last dimension, where the rows are (cosine_similarity's
        # own default is dim 1)
        def dist(u, v):
            return 1.0 - F.cosine_similarity(u, v, dim=-1, eps=p.get("cosine_eps", 1e-8))
    else:
        def dist(u, v):
            return F.pairwise_distance(u, v, p=p.get("p", 2.0), eps=p.get("eps", 1e-6))
    return F.triplet_margin_with_distance_loss(t["anchor"], t["positive"], t["negative"],
                                               distance_function=dist,
                                               margin=p.get("margin", 1.0),
                                               swap=p.get("swap", False), reduction=r)


LOSSES = {
    "hinge_embedding": ([("input", "real", True), ("target", "sign", False)], _hinge),
    "soft_margin": ([("input", "real", True), ("target", "sign", False)], _soft),
    "margin_ranking": ([("input1", "real", True), ("input2", "real", True),
                        ("target", "sign", False)], _ranking),
    "multi_margin": ([("input", "real", True), ("target", "class", False)], _multi),
    "multilabel_margin": ([("input", "real", True), ("target", "multilabel", False)],
                          _multilabel),
    "cosine_embedding": ([("input1", "real", True), ("input2", "real", True),
                          ("target", "rowsign", False)], _cosine),
    "triplet_margin": ([("anchor", "real", True), ("positive", "real", True),
                        ("negative", "real", True)], _triplet),
    "triplet_margin_with_distance": ([("anchor", "real", True), ("positive", "real", True),
                                      ("negative", "real", True)], _twd),
}


def multilabel_ids(rng, C):
    """One row of ids: some classes (a repeat now and then), then -1, then
    anything in [-1, C), which torch ignores after the first -1."""
    k = int(rng.integers(0, C + 1))
    ids = list(rng.choice(C, size=k, replace=False)) if k else []
    if k >= 2 and rng.uniform() < 0.3:
        ids[-1] = ids[0]  # a class listed twice counts twice
    row = ids + ([-1] if k < C else [])
    while len(row) < C:
        row.append(int(rng.integers(-1, C)))
    return row


def draw(rng, kind, shape):
    """One slot's data for an input of shape `shape`."""
    rows = shape[:-1]
    C = shape[-1] if shape else 1
    if kind == "real":
        return rng.normal(0.0, 1.5, shape)
    if kind == "sign":
        return rng.choice([-1.0, 1.0], shape)
    if kind == "rowsign":
        return np.asarray(rng.choice([-1.0, 1.0], rows))
    if kind == "class":
        return np.asarray(rng.integers(0, C, rows)).astype(np.int64)
    if kind == "multilabel":
        n = int(np.prod(rows)) if rows else 1
        return np.array([multilabel_ids(rng, C) for _ in range(n)], dtype=np.int64).reshape(shape)
    raise ValueError(kind)


def torch_eval(loss, params, reduction, arrays):
    """Value (None for reduction none), output and gradients by torch in
    float64 on the arrays (float32 ones upcast)."""
    slots, fn = LOSSES[loss]
    t = {}
    for name, kind, diff in slots:
        a = arrays[name]
        if a.dtype.kind == "f":
            t[name] = torch.tensor(a.astype(np.float64), requires_grad=diff)
        else:
            t[name] = torch.tensor(a)
    out = fn(t, params, reduction)
    (out.sum() if reduction == "none" else out).backward()
    grads = {name: t[name].grad.numpy().copy() for name, _, diff in slots if diff}
    value = None if reduction == "none" else float(out.item())
    return value, out.detach().numpy().copy(), grads


# ---------------------------------------------------------------------------
# The committed cases


class CaseWriter(Writer):
    """A Writer that also keeps the catalogue's cases."""

    def case(self, name, loss, params, reduction, tag, arrays, dtype, **extra):
        files = self.data(tag, arrays, dtype)
        value, out, grads = torch_eval(loss, params, reduction, load_tensors(files))
        if value is not None and not np.isfinite(value):
            raise ValueError(name + ": the reference value is not finite")
        entry = {
            "name": name,
            "config": {"loss": loss, "params": params, "reduction": reduction},
            "tensors": files,
            "value": value,
            "grads": {k: self.save("%s/%s_grad_%s.npy" % (OUT, name, k), g)
                      for k, g in grads.items()},
        }
        if reduction == "none":
            entry["out"] = self.save("%s/%s_out.npy" % (OUT, name), out)
        entry.update(extra)
        self.cases.append(entry)


def standard(w, rng, loss, shape, tag, variants):
    """Every reduction in float32 and float64 at the defaults, then the
    variants: (suffix, params, reduction, dtype)."""
    slots, _ = LOSSES[loss]
    arrays = {name: draw(rng, kind, shape) for name, kind, _ in slots}
    for dt, dname in ((np.float32, "f32"), (np.float64, "f64")):
        for red in REDUCTIONS:
            w.case("%s_%s_%s" % (tag, red, dname), loss, {}, red, tag, arrays, dt)
    for suffix, params, red, dt in variants:
        w.case("%s_%s" % (tag, suffix), loss, params, red, tag, arrays, dt)
    return arrays


def write_goldens():
    rng = np.random.default_rng(SEED)
    os.makedirs(path(OUT), exist_ok=True)
    for f in os.listdir(path(OUT)):
        if f.endswith(".npy"):
            os.remove(os.path.join(path(OUT), f))
    w = CaseWriter(OUT)
    f64, f32 = np.float64, np.float32

    # hinge_embedding: (2, 3, 5) scores, labels +-1; margin 0.5 and 2;
    # edge: a label 0 (both terms, as torch), x on the kink x = margin
    standard(w, rng, "hinge_embedding", (2, 3, 5), "hinge", [
        ("margin05_mean_f64", {"margin": 0.5}, "mean", f64),
        ("margin2_none_f32", {"margin": 2.0}, "none", f32),
        ("margin_neg_sum_f64", {"margin": -0.25}, "sum", f64)])
    edge = {"input": np.array([1.0, 1.0, 0.25, -3.0, 4.0, 0.0, 1e30, -2.5]),
            "target": np.array([-1.0, 1.0, 0.0, 0.0, -1.0, -1.0, -1.0, 1.0])}
    w.case("hinge_edges_none_f64", "hinge_embedding", {}, "none", "hinge_edges", edge, f64)
    w.case("hinge_edges_sum_f32", "hinge_embedding", {}, "sum", "hinge_edges", edge, f32)

    # soft_margin: (4, 7); edge: large |x| where torch's plain formula is
    # still exact in float64, a label 0
    standard(w, rng, "soft_margin", (4, 7), "soft", [])
    edge = {"input": np.array([30.0, -30.0, 50.0, -50.0, 0.0, 3.0, -700.0, 700.0]),
            "target": np.array([1.0, 1.0, -1.0, -1.0, 1.0, 0.0, -1.0, -1.0])}
    w.case("soft_edges_none_f64", "soft_margin", {}, "none", "soft_edges", edge, f64)
    w.case("soft_edges_mean_f64", "soft_margin", {}, "mean", "soft_edges", edge, f64)

    # margin_ranking: (3, 8); margin 0.5 and -1 (float64: a margin makes
    # the float32 hinge cancel, as it does in torch's float32); edge: ties
    # x1 = x2 at margin 0, where torch's clamp passes the gradient
    standard(w, rng, "margin_ranking", (3, 8), "ranking", [
        ("margin05_none_f64", {"margin": 0.5}, "none", f64),
        ("margin_neg_mean_f64", {"margin": -1.0}, "mean", f64)])
    edge = {"input1": np.array([1.0, 2.0, -1.0, 0.5, 3.0, -2.0]),
            "input2": np.array([1.0, 2.0, 0.5, -1.0, 3.0, 4.0]),
            "target": np.array([1.0, -1.0, 1.0, 1.0, 1.0, -1.0])}
    w.case("ranking_ties_none_f64", "margin_ranking", {}, "none", "ranking_ties", edge, f64)
    w.case("ranking_ties_mean_f32", "margin_ranking", {}, "mean", "ranking_ties", edge, f32)

    # multi_margin: (6, 5) scores, class ids; p = 2, margin, weight; a (C,)
    # vector with a 0-d target; edge: NaN and infinite scores, which add no
    # term where torch's z > 0 test fails
    standard(w, rng, "multi_margin", (6, 5), "multi", [
        ("p2_mean_f64", {"p": 2}, "mean", f64),
        ("p2_none_f32", {"p": 2}, "none", f32),
        ("margin05_sum_f64", {"margin": 0.5}, "sum", f64),
        ("weight_mean_f64", {"weight": [0.5, 2.0, 1.0, 0.0, 1.5]}, "mean", f64),
        ("weight_p2_none_f32", {"p": 2, "margin": 2.0, "weight": [0.5, 2.0, 1.0, 0.0, 1.5]},
         "none", f32)])
    vec = {"input": rng.normal(0.0, 1.5, (7,)), "target": np.array(3, dtype=np.int64)}
    for red in REDUCTIONS:
        w.case("multi_vec_%s_f64" % red, "multi_margin", {"p": 2}, red, "multi_vec", vec, f64)
    edge = {"input": np.array([[0.5, np.nan, 0.2, -0.1], [np.inf, 0.3, 0.1, 0.0],
                               [0.2, -np.inf, 0.4, 0.1], [1.0, 0.0, 1.0, -1.0]]),
            "target": np.array([0, 0, 2, 3], dtype=np.int64)}
    w.case("multi_edges_none_f64", "multi_margin", {}, "none", "multi_edges", edge, f64)

    # multilabel_margin: (5, 6) with -1 padding (rows of every length,
    # repeats, ignored ids after the first -1); a (C,) vector; edge: an
    # empty row, NaN and infinite scores
    standard(w, rng, "multilabel_margin", (5, 6), "multilabel", [])
    vec = {"input": rng.normal(0.0, 1.5, (6,)),
           "target": np.array([4, 1, -1, 3, 5, -1], dtype=np.int64)}
    for red in REDUCTIONS:
        w.case("multilabel_vec_%s_f32" % red, "multilabel_margin", {}, red, "multilabel_vec",
               vec, f32)
    edge = {"input": np.array([[0.1, np.nan, 0.3, 0.2], [0.5, 0.1, -0.3, 0.0],
                               [0.1, -np.inf, 0.3, 0.2], [np.inf, 0.2, 0.1, 0.0]]),
            "target": np.array([[1, 0, -1, 2], [-1, 0, 1, 2], [2, -1, -1, -1],
                                [0, 2, -1, 0]], dtype=np.int64)}
    w.case("multilabel_edges_none_f64", "multilabel_margin", {}, "none", "multilabel_edges",
           edge, f64)

    # cosine_embedding: (6, 5) rows; margin 0.5 and -0.3; a (D,) pair with a
    # 0-d target; edge: a zero row (EPSILON keeps it finite), a label 0,
    # parallel and opposite rows
    standard(w, rng, "cosine_embedding", (6, 5), "cosine", [
        ("margin05_none_f64", {"margin": 0.5}, "none", f64),
        ("margin_neg_mean_f32", {"margin": -0.3}, "mean", f32)])
    vec = {"input1": rng.normal(0.0, 1.5, (9,)), "input2": rng.normal(0.0, 1.5, (9,)),
           "target": np.array(-1.0)}
    for red in REDUCTIONS:
        w.case("cosine_vec_%s_f64" % red, "cosine_embedding", {"margin": -0.5}, red,
               "cosine_vec", vec, f64)
    a = rng.normal(0.0, 1.5, (5, 3))
    b = rng.normal(0.0, 1.5, (5, 3))
    a[0] = 0.0
    b[2] = 2.0 * a[2]
    b[3] = -0.5 * a[3]
    edge = {"input1": a, "input2": b, "target": np.array([1.0, -1.0, 1.0, -1.0, 0.0])}
    w.case("cosine_edges_none_f64", "cosine_embedding", {"margin": -0.2}, "none",
           "cosine_edges", edge, f64)

    # triplet_margin: (5, 6) rows; p = 1, 3, 1.5, 0.5, swap, eps = 0,
    # margins; a (D,) triple; a (2, 3, 4) batch (torch's rows along the last
    # dimension)
    standard(w, rng, "triplet_margin", (5, 6), "triplet", [
        ("p1_mean_f64", {"p": 1.0}, "mean", f64),
        ("p3_none_f64", {"p": 3.0}, "none", f64),
        ("p15_sum_f32", {"p": 1.5}, "sum", f32),
        ("p05_mean_f64", {"p": 0.5, "margin": 3.0}, "mean", f64),
        ("swap_none_f64", {"swap": True, "margin": 2.0}, "none", f64),
        ("swap_p1_mean_f32", {"swap": True, "p": 1.0, "margin": 2.0}, "mean", f32),
        ("eps0_margin3_sum_f64", {"eps": 0.0, "margin": 3.0}, "sum", f64)])
    vec = {k: rng.normal(0.0, 1.5, (8,)) for k in ("anchor", "positive", "negative")}
    for red in REDUCTIONS:
        w.case("triplet_vec_%s_f64" % red, "triplet_margin", {"margin": 4.0}, red,
               "triplet_vec", vec, f64)
    batch = {k: rng.normal(0.0, 1.5, (2, 3, 4)) for k in ("anchor", "positive", "negative")}
    w.case("triplet_3d_none_f32", "triplet_margin", {"margin": 2.0}, "none", "triplet_3d",
           batch, f32)
    w.case("triplet_3d_mean_f64", "triplet_margin", {"p": 2.5, "swap": True, "margin": 2.0},
           "mean", "triplet_3d", batch, f64)

    # triplet_margin_with_distance (after every other case, so that their
    # draws stay as they were): (5, 6) rows at the defaults (the pairwise
    # distance); the cosine distance with margins, swap and its eps; p = 1
    # pairwise with swap; a (D,) triple and a (2, 3, 4) batch by cosine;
    # edge: a zero anchor row (its norm clamped at eps), parallel and
    # opposite rows, a tie of the two negative distances under swap
    standard(w, rng, "triplet_margin_with_distance", (5, 6), "twd", [
        ("cos_none_f64", {"distance": "cosine"}, "none", f64),
        ("cos_mean_f32", {"distance": "cosine", "margin": 0.5}, "mean", f32),
        ("cos_swap_sum_f64", {"distance": "cosine", "swap": True, "margin": 0.8}, "sum", f64),
        ("cos_eps_none_f32", {"distance": "cosine", "cosine_eps": 0.5}, "none", f32),
        ("pw_p1_swap_mean_f64", {"p": 1.0, "swap": True, "margin": 2.0}, "mean", f64)])
    vec = {k: rng.normal(0.0, 1.5, (8,)) for k in ("anchor", "positive", "negative")}
    for red in REDUCTIONS:
        w.case("twd_vec_%s_f64" % red, "triplet_margin_with_distance",
               {"distance": "cosine", "margin": 1.5}, red, "twd_vec", vec, f64)
    batch = {k: rng.normal(0.0, 1.5, (2, 3, 4)) for k in ("anchor", "positive", "negative")}
    w.case("twd_3d_none_f32", "triplet_margin_with_distance", {"distance": "cosine"}, "none",
           "twd_3d", batch, f32)
    a = rng.normal(0.0, 1.5, (4, 3))
    q = rng.normal(0.0, 1.5, (4, 3))
    n = rng.normal(0.0, 1.5, (4, 3))
    a[0] = 0.0
    q[1] = 3.0 * a[1]
    n[2] = -0.5 * a[2]
    q[3] = a[3]  # p = a: d(a, n) and d(p, n) tie exactly, on both sides
    edge = {"anchor": a, "positive": q, "negative": n}
    w.case("twd_edges_none_f64", "triplet_margin_with_distance",
           {"distance": "cosine", "swap": True, "margin": 0.3}, "none", "twd_edges", edge, f64)

    write_json(CATALOGUE, w.cases)
    print("%d cases, %d files in %s" % (len(w.cases), len(w.saved), OUT))


# ---------------------------------------------------------------------------
# --random: new data through `losskit run`


def random_setup(rng, loss):
    """A shape and parameters that no committed case uses."""
    if loss in ("hinge_embedding", "soft_margin", "margin_ranking"):
        shape = tuple(int(s) for s in rng.integers(1, 10, int(rng.integers(1, 5))))
    elif loss in ("triplet_margin", "triplet_margin_with_distance"):
        shape = tuple(int(s) for s in rng.integers(1, 12, int(rng.integers(1, 4))))
    else:
        shape = (int(rng.integers(1, 20)), int(rng.integers(2, 13)))
        if rng.uniform() < 0.25:
            shape = shape[1:]
    p = {}
    if loss in ("hinge_embedding", "margin_ranking", "multi_margin", "cosine_embedding",
                "triplet_margin") and rng.uniform() < 0.7:
        p["margin"] = float(np.round(rng.uniform(-1.0, 2.5), 3))
    if loss == "multi_margin":
        p["p"] = int(rng.integers(1, 3))
        if rng.uniform() < 0.5:
            p["weight"] = [float(np.round(v, 3)) for v in rng.uniform(0.0, 2.0, shape[-1])]
    if loss == "triplet_margin":
        p["p"] = float(rng.choice([1.0, 2.0, 3.0, 1.25, 0.75, 4.5]))
        p["eps"] = float(rng.choice([0.0, 1e-6, 1e-3]))
        p["swap"] = bool(rng.uniform() < 0.5)
    if loss == "triplet_margin_with_distance":
        p["margin"] = float(np.round(rng.uniform(0.05, 2.0), 3))
        p["swap"] = bool(rng.uniform() < 0.5)
        if rng.uniform() < 0.6:
            p["distance"] = "cosine"
            # one feature: the cosine is the constant +-1 and its gradient 0,
            # which both libraries give only up to rounding (torch 1.4e-14
            # where losskit gives 1.1e-14, say), so the relative comparison
            # would weigh noise against noise; rows of 2 or more features
            # (as cosine_embedding's draws)
            if shape[-1] == 1:
                shape = shape[:-1] + (int(rng.integers(2, 12)),)
            if rng.uniform() < 0.3:
                p["cosine_eps"] = float(rng.choice([1e-6, 1e-3]))
        else:
            p["p"] = float(rng.choice([1.0, 2.0, 3.0, 1.5]))
            p["eps"] = float(rng.choice([0.0, 1e-6, 1e-3]))
    return shape, p


def value_floor(loss, params, red, arrays):
    """The floor under |value| that max_rel() takes a value's error relative to:
    1e-12, but for hinge_embedding on float32 data the same reduction of its
    terms' magnitudes. Its terms are x where the target is 1, of either sign, so a
    sum can cancel: each float32 term carries float32 rounding (margin - x,
    and the margin itself rounded to float32), in torch's float32 kernel as
    in losskit's, and relative to a cancelled sum that rounding is not
    bounded (seed 2024: terms of magnitude 18.3 summing to -0.0022, torch's
    float32 sum 4.9e-5 from the float64 one and losskit's 8.2e-5). Where
    nothing cancels the floor is |value| itself. The other losses' terms
    are never negative."""
    if loss != "hinge_embedding" or arrays["input"].dtype != np.float32:
        return 1e-12
    x = arrays["input"].astype(np.float64)
    mags = np.where(arrays["target"] == 1, np.abs(x),
                    np.maximum(0.0, params.get("margin", 1.0) - x))
    mag = mags.sum() if red == "sum" else (mags.mean() if mags.size else 0.0)
    return max(1e-12, float(mag))


def run_random(seed, trials, losskit, verbose):
    if seed == SEED:
        sys.exit("--random: %d is the committed seed; pick another" % SEED)
    rng = np.random.default_rng(seed)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for loss, (slots, _) in LOSSES.items():
            vmax = gmax = omax = 0.0
            for trial in range(trials):
                shape, params = random_setup(rng, loss)
                dtype = np.float32 if rng.uniform() < 0.5 else np.float64
                red = str(rng.choice(REDUCTIONS))
                arrays = {}
                for name, kind, _ in slots:
                    a = draw(rng, kind, shape)
                    arrays[name] = a.astype(dtype) if a.dtype.kind == "f" else a
                try:
                    got, got_grads, got_out = run_losskit(
                        losskit, tmp, {"loss": loss, "params": params, "reduction": red}, arrays,
                        [name for name, _, diff in slots if diff], red == "none")
                except LosskitError as err:
                    print("%s %s %s %s: losskit run failed: %s" % (loss, shape, params, red,
                                                                   err.stderr.strip()))
                    failed = True
                    continue
                value, out, grads = torch_eval(loss, params, red, arrays)
                if red == "none":
                    e = max_rel(got_out, out, 1e-9)
                    omax = max(omax, e)
                else:
                    e = max_rel(got["value"], value, value_floor(loss, params, red, arrays))
                    vmax = max(vmax, e)
                if verbose:
                    print("  %s %s %s %s %s: %.2e" % (loss, shape, np.dtype(dtype).name, params,
                                                     red, e))
                for name, g in grads.items():
                    gmax = max(gmax, max_rel(got_grads[name], g, 1e-9))
            bad = vmax > 1e-6 or gmax > 1e-5 or omax > 1e-5
            failed |= bad
            print("%-28s value rel err %.2e  grad rel err %.2e  out rel err %.2e  (%d trials)%s"
                  % (loss, vmax, gmax, omax, trials, "  FAIL" if bad else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    trials_main(__doc__, write_goldens, run_random, 12, "random cases per loss")
