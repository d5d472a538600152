#!/usr/bin/python3
"""Golden data for lovasz_hinge and lovasz_softmax, computed with PyTorch in float64.

    /usr/bin/python3 tests/golden/make_lovasz.py             # write the goldens
    /usr/bin/python3 tests/golden/make_lovasz.py --random 7  # compare a build

Without arguments it writes, deterministically (fixed seed, fixed order):
  tests/golden/lovasz/*.npy            inputs (float32 and float64), reference gradients
  tests/golden/catalogue/lovasz.json   the cases (format: tests/test_catalogue.c)

The reference transcribes, in plain float64 torch ops, the functions of Maxim
Berman's lovasz_losses.py (Berman, Rannen Triki, Blaschko, CVPR 2018; the same
code is in segmentation_models_pytorch): lovasz_grad, lovasz_hinge(_flat),
lovasz_softmax(_flat), flatten_binary_scores, flatten_probas and the mean over
images. Gradients are torch autograd's through torch.sort (the permutation
held constant). Two places where the reference code does not give a number
follow the losskit contract instead: an image (or batch) whose pixels are all
ignored contributes a scalar 0 (the reference returns probas * 0., an empty
tensor), and C = 1 is one class (the reference raises for "present"/"all").
Everything else is the reference's: hinge errors through relu, "present"
means the classes with a foreground pixel among the kept ones, a class list
takes every listed class (absent ones too, duplicates counted twice), and the
mean over images counts every image.

The data have no ties among a class's errors (continuous draws; the script
checks that adjacent sorted errors differ by more than 1e-9 relative), so the
sort order, and so the gradient, is unique.

--random SEED draws new shapes, parameters and data (seeds never used by the
goldens; per loss one float64 batch of more than 32768 pixels), runs `build/host/losskit run ... --json` for each into a temporary
folder, compares with the reference and prints each loss's largest relative
errors; it exits 1 if a value is off by more than 1e-6 relative or a gradient
element by more than 1e-5 relative (with the catalogue test's 1e-9 absolute
floor).
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import (cfg, elementwise_rel, main, path, record, rel, report, run_losskit, save,
                     save_tensors, write_json)

OUT = "tests/golden/lovasz"
CATALOGUE = "tests/golden/catalogue/lovasz.json"
SEED = 20261218
GAP = 1e-9


class Tie(Exception):
    """Two errors of one sort closer than GAP: the data are redrawn."""


# --------------------------------------------------------------------------
# The reference (float64 torch tensors)

def lovasz_grad(gt_sorted):
    """d loss / d (sorted errors): the differences of the Jaccard loss of
    the prefixes (Alg. 1 of the paper)."""
    n = gt_sorted.numel()
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if n > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def sorted_desc(errors):
    es, perm = torch.sort(errors, descending=True)
    d = es.detach()
    if d.numel() > 1:
        gap = (d[:-1] - d[1:]) / torch.clamp(d[:-1].abs(), min=1e-3)
        if float(gap.min()) <= GAP:
            raise Tie()
    return es, perm


def hinge_flat(x, t):
    if x.numel() == 0:  # only ignored pixels
        return x.sum() * 0.0
    signs = 2.0 * t - 1.0
    errors = 1.0 - x * signs
    es, perm = sorted_desc(errors)
    return torch.dot(F.relu(es), lovasz_grad(t[perm]))


def flatten_binary(x, t, ignore):
    x, t = x.reshape(-1), t.reshape(-1)
    if ignore is None:
        return x, t
    keep = t != ignore
    return x[keep], t[keep]


def mean(vals, like):
    if not vals:
        return like.sum() * 0.0
    acc = vals[0]
    for v in vals[1:]:
        acc = acc + v
    return acc / len(vals)


def lovasz_hinge_ref(x, t, per_image=False, ignore=None):
    if per_image and x.dim() > 0:
        return mean([hinge_flat(*flatten_binary(x[i], t[i], ignore)) for i in range(x.shape[0])],
                    x)
    return hinge_flat(*flatten_binary(x, t, ignore))


def softmax_flat(prob, lab, classes):
    if prob.shape[0] == 0:  # only ignored pixels
        return prob.sum() * 0.0
    C = prob.shape[1]
    losses = []
    for c in (range(C) if classes in ("all", "present") else classes):
        fg = (lab == c).double()
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - prob[:, c]).abs()
        es, perm = sorted_desc(errors)
        losses.append(torch.dot(es, lovasz_grad(fg[perm])))
    return mean(losses, prob)


def flatten_probas(prob, lab, ignore):
    C = prob.shape[1]
    prob = prob.movedim(1, -1).reshape(-1, C)
    lab = lab.reshape(-1)
    if ignore is None:
        return prob, lab
    keep = lab != ignore
    return prob[keep], lab[keep]


def lovasz_softmax_ref(x, lab, classes="present", per_image=False, ignore=None, from_logits=True):
    prob = F.softmax(x, dim=1) if from_logits else x
    if per_image:
        return mean([softmax_flat(*flatten_probas(prob[i:i + 1], lab[i:i + 1], ignore), classes)
                     for i in range(prob.shape[0])], prob)
    return softmax_flat(*flatten_probas(prob, lab, ignore), classes)


def reference(config, arrays):
    """(value, input gradient) for numpy arrays (upcast to float64)."""
    p = config.get("params", {})
    x = torch.from_numpy(arrays["input"].astype(np.float64)).requires_grad_(True)
    ignore = p.get("ignore_index")
    if config["loss"] == "lovasz_hinge":
        t = torch.from_numpy(arrays["target"].astype(np.float64))
        r = lovasz_hinge_ref(x, t, p.get("per_image", False), ignore)
    else:
        t = torch.from_numpy(arrays["target"].astype(np.int64))
        classes = p.get("class_list", p.get("classes", "present"))
        r = lovasz_softmax_ref(x, t, classes, p.get("per_image", False), ignore,
                               p.get("from_logits", True))
    r.backward()
    return float(r), x.grad.numpy().copy()


# --------------------------------------------------------------------------
# Data

def draw_hinge(rng, shape, ignore=None, frac=0.0, dead_image=None):
    x = rng.normal(0.0, 1.5, shape)
    t = (rng.uniform(size=shape) < 0.4).astype(np.float64)
    if ignore is not None:
        t[rng.uniform(size=shape) < frac] = ignore
        if dead_image is not None:
            t[dead_image] = ignore
    return {"input": x, "target": t}


def draw_softmax(rng, shape, classes_used, ignore=None, frac=0.0, dead_image=None, probs=False):
    x = rng.normal(0.0, 1.5, shape)
    if probs:  # probabilities, as a softmax of the logits gives them
        e = np.exp(x - x.max(axis=1, keepdims=True))
        x = e / e.sum(axis=1, keepdims=True)
    tshape = (shape[0],) + tuple(shape[2:])
    t = rng.choice(np.asarray(classes_used), size=tshape).astype(np.int64)
    if ignore is not None:
        t[rng.uniform(size=tshape) < frac] = ignore
        if dead_image is not None:
            t[dead_image] = ignore
    return {"input": x, "target": t}


def cast(arrays, dt):
    f = np.float32 if dt == "f32" else np.float64
    out = {"input": arrays["input"].astype(f)}
    tg = arrays["target"]
    out["target"] = tg if tg.dtype == np.int64 else tg.astype(f)
    return out


# (name, config, data key)
def case_list():
    H, S = "lovasz_hinge", "lovasz_softmax"
    return [
        ("hinge", cfg(H), "hinge"),
        ("hinge_per_image", cfg(H, per_image=True), "hinge"),
        ("hinge_ignore", cfg(H, ignore_index=255), "hinge_ign"),
        ("hinge_ignore_per_image", cfg(H, per_image=True, ignore_index=255), "hinge_ign"),
        ("hinge_1d_per_image", cfg(H, per_image=True), "hinge_1d"),
        ("hinge_all_ignored", cfg(H, ignore_index=-1), "hinge_dead"),
        ("softmax", cfg(S), "sm"),
        ("softmax_all", cfg(S, classes="all"), "sm"),
        ("softmax_list", cfg(S, class_list=[0, 2, 4]), "sm"),
        ("softmax_list_dup", cfg(S, class_list=[3, 1, 1]), "sm"),
        ("softmax_per_image", cfg(S, per_image=True), "sm"),
        ("softmax_per_image_all", cfg(S, per_image=True, classes="all"), "sm"),
        ("softmax_ignore", cfg(S, ignore_index=255), "sm_ign"),
        ("softmax_ignore_per_image", cfg(S, ignore_index=255, per_image=True), "sm_ign"),
        ("softmax_ignore_per_image_all",
         cfg(S, ignore_index=255, per_image=True, classes="all"), "sm_ign"),
        ("softmax_probs", cfg(S, from_logits=False), "sm_probs"),
        ("softmax_probs_per_image_list",
         cfg(S, from_logits=False, per_image=True, class_list=[1, 4]), "sm_probs"),
        ("softmax_3d", cfg(S), "sm_3d"),
        ("softmax_2d_all", cfg(S, classes="all"), "sm_2d"),
        ("softmax_all_ignored", cfg(S, ignore_index=7), "sm_dead"),
        ("softmax_all_ignored_per_image", cfg(S, ignore_index=7, per_image=True), "sm_dead"),
    ]


def draw_data(rng, key):
    if key == "hinge":
        return draw_hinge(rng, (4, 3, 7, 5))
    if key == "hinge_ign":
        return draw_hinge(rng, (4, 3, 7, 5), ignore=255.0, frac=0.2, dead_image=2)
    if key == "hinge_1d":
        return draw_hinge(rng, (40,))
    if key == "hinge_dead":
        return draw_hinge(rng, (3, 4, 5), ignore=-1.0, frac=1.0)
    # C = 5; class 4 never in the target, so present, all and lists differ
    if key == "sm":
        return draw_softmax(rng, (3, 5, 6, 7), [0, 1, 2, 3])
    if key == "sm_ign":
        return draw_softmax(rng, (3, 5, 6, 7), [0, 1, 2, 3], ignore=255, frac=0.2, dead_image=1)
    if key == "sm_probs":
        return draw_softmax(rng, (3, 5, 6, 7), [0, 1, 2, 3], probs=True)
    if key == "sm_3d":
        return draw_softmax(rng, (4, 3, 25), [0, 1, 2])
    if key == "sm_2d":
        return draw_softmax(rng, (40, 4), [0, 1, 3])
    if key == "sm_dead":
        return draw_softmax(rng, (2, 3, 4, 5), [0, 1, 2], ignore=7, frac=1.0)
    raise KeyError(key)


def write_goldens():
    torch.set_default_dtype(torch.float64)
    os.makedirs(path(OUT), exist_ok=True)
    os.makedirs(os.path.dirname(path(CATALOGUE)), exist_ok=True)
    rng = np.random.default_rng(SEED)
    data = {}
    for _, _, key in case_list():
        if key not in data:
            data[key] = draw_data(rng, key)
    saved = {}
    cases = []
    for dt in ("f32", "f64"):
        for name, config, key in case_list():
            name = "lovasz_%s_%s" % (name, dt)
            for attempt in range(50):
                arrays = cast(data[key], dt)
                try:
                    value, grad = reference(config, arrays)
                    break
                except Tie:
                    data[key] = draw_data(rng, key)
                    for k in [k for k in saved if k[0] == key]:
                        raise RuntimeError("a tie in %s after its data were saved" % name)
            if (key, dt) not in saved:
                saved[(key, dt)] = save_tensors("%s/%s_%s" % (OUT, key, dt), arrays)
            grel = save("%s/%s_grad_input.npy" % (OUT, name), grad)
            assert np.isfinite(value) and np.isfinite(grad).all(), name
            cases.append({"name": name, "config": config, "tensors": dict(saved[(key, dt)]),
                          "value": value, "grads": {"input": grel}})
    write_json(CATALOGUE, cases)
    print("wrote %d cases to %s" % (len(cases), CATALOGUE))


# --------------------------------------------------------------------------
# --random: compare a build with the reference on data no test uses

def random_case(rng, loss, huge=False):
    """(config, float64 arrays) with fresh shapes and parameters; huge: more
    than 32768 pixels in one set (several chunks of the parallel walk)."""
    big = rng.uniform() < 0.25  # enough pixels for the radix sort's passes
    params = {}
    if rng.uniform() < 0.5:
        params["per_image"] = bool(rng.integers(0, 2))
    ignore = None
    if rng.uniform() < 0.5:
        ignore = int(rng.choice([255, -1, 9]))
        params["ignore_index"] = ignore
    frac = float(rng.uniform(0.0, 0.5)) if ignore is not None else 0.0
    n = int(rng.integers(1, 5))
    spatial = [int(s) for s in rng.integers(1, 9, int(rng.integers(0, 3)))]
    if big:
        spatial = [int(rng.integers(30, 70)), int(rng.integers(30, 70))]
    if huge:
        n, spatial = 2, [int(rng.integers(140, 180)), int(rng.integers(140, 180))]
        params.pop("per_image", None)
        frac = min(frac, 0.2)
    dead = int(rng.integers(0, n)) if ignore is not None and rng.uniform() < 0.3 else None
    if loss == "lovasz_hinge":
        shape = tuple([n] + spatial)
        arrays = draw_hinge(rng, shape, None if ignore is None else float(ignore), frac, dead)
        return cfg(loss, **params), arrays
    C = int(rng.integers(1, 7))
    used = sorted(set(int(c) for c in rng.integers(0, C, int(rng.integers(1, C + 1)))))
    r = rng.uniform()
    if r < 0.3:
        params["classes"] = "all"
    elif r < 0.5:
        params["class_list"] = [int(c) for c in rng.integers(0, C, int(rng.integers(1, 4)))]
    if rng.uniform() < 0.3:
        params["from_logits"] = False
    shape = tuple([n, C] + spatial)
    arrays = draw_softmax(rng, shape, used, ignore, frac, dead,
                          probs=not params.get("from_logits", True))
    return cfg(loss, **params), arrays


def run_random(seed, exe):
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(1_000_003 * (seed + 1) + 29)  # never SEED
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for loss in ("lovasz_hinge", "lovasz_softmax"):
            done = 0
            while done < 12:
                config, arrays = random_case(rng, loss, huge=done == 0)
                # float32 rounding makes exact ties likely among that many
                # pixels, where the reference's order is arbitrary
                for dt in ("f64",) if done == 0 else ("f64", "f32"):
                    a = cast(arrays, dt)
                    try:
                        value, grad = reference(config, a)
                    except Tie:
                        break
                    ve, ge = compare_run(exe, tmp, config, a, value, grad)
                    record(worst, (loss, dt), ve, ge)
                    if ve > 1e-6 or ge > 1e-5:
                        print("  FAIL %s %s shape %s: value err %.2e, grad err %.2e"
                              % (json.dumps(config), dt, a["input"].shape, ve, ge))
                else:
                    done += 1
    return report(seed, worst, "the float64 reference", 15)


def compare_run(exe, tmp, config, arrays, value, grad):
    got, got_grads, _ = run_losskit(exe, tmp, config, arrays)
    return rel(got["value"], value), elementwise_rel(got_grads["input"], grad)


if __name__ == "__main__":
    sys.exit(main(__doc__, write_goldens, run_random, "the reference"))
