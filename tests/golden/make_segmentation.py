#!/usr/bin/python3
"""Golden data for the segmentation family's overlap losses, from PyTorch in float64.

    /usr/bin/python3 tests/golden/make_segmentation.py             # write the goldens
    /usr/bin/python3 tests/golden/make_segmentation.py --random 7  # compare a build

Losses: dice, iou, jaccard (iou's second id), tversky, focal_tversky,
generalized_dice, mcc, with the contract of docs/losses/segmentation.md.

Without arguments it writes, deterministically (fixed seed, fixed order):
  tests/golden/segmentation/*.npy            inputs (float64 per data kind, float32
                                             per case), targets, reference gradients
  tests/golden/catalogue/segmentation.json   the cases (format: tests/test_catalogue.c)

References. `general()` computes every loss from the statistics per (group,
class) exactly as the contract states them, in plain float64 torch ops; the
gradient is autograd's with respect to the input. Two independent
transcriptions of the libraries' semantics sit beside it:
  smp_*     segmentation_models_pytorch's DiceLoss, JaccardLoss, TverskyLoss
            and MCCLoss (losses/dice.py, jaccard.py, tversky.py, mcc.py and
            soft_*_score in losses/_functional.py);
  monai_*   MONAI's DiceLoss (also jaccard=True) and GeneralizedDiceLoss
            (monai/losses/dice.py, compute_tp_fp_fn in monai/losses/utils.py).
For every configuration where the contract's parameters reproduce a library
(the table in docs/losses/segmentation.md), check_references() asserts that
the library-style function and general() agree to 1e-12 (value relative,
gradient relative to its largest element), on the golden data and on random
data, so general() is validated against the libraries' semantics; general()
alone then covers what neither library has (empty "skip", class_weights as a
weighted mean, per_sample in smp's modes, ignore_index in every mode, ...).
One known difference is measured instead of hidden: MONAI computes the
generalized dice weights in float32 (`w_func(ground_o.float())`), losskit in
double; monai_gdl(f32_weights=True) is checked to stay within 1e-6 of it.

float32 cases: the reference runs on the stored float32 values, upcast. A
float32 kernel computes p (sigmoid, softmax) and the per-element gradient in
float, so where a gradient element is ill-conditioned at float32 resolution
(a soft target making N - 2tD or mcc's k0 t + k1 (1 - t) cancel, a softmax
gradient p_c (g_c - sum_k p_k g_k) near 0, min(p, t) at a near tie), its
input element (multiclass: the whole position), and its target if that is
soft, are redrawn: each float32 case holds only data whose reference gradient
moves by less than 1e-6 relative (1e-9 absolute floor scaled as the tests')
and whose value moves by less than 1e-7 when every p moves by 2^-23 relative
(two float32 roundings, room for a sigmoid or softmax a few ulps off), every
input by one float32 ulp and every soft target (not 0, 1 or ignore_index) by
one ulp, and where the terms the gradient is a sum of (kernel_terms()), each
off by 2^-23 relative, could move it by as much. float64 data are not
conditioned.

Data avoid the few points where the reference gradient is undefined: ties of
min(p, t), focal_tversky at TI = 1 with gamma < 1, tversky's mean at 0 with
gamma < 1, and the max(., eps) clamps exactly at eps.

--random SEED draws new shapes, class counts, parameters and data (seeds never
used by the goldens), runs the cross-checks on them, then for every loss runs
`build/host/losskit run CONFIG --input .. --target .. --grad .. --json` and
compares with general(): it prints each loss's largest relative errors and
exits 1 if a value is off by more than 1e-6 relative or a gradient element by
more than 1e-5 relative (1e-9 absolute floor), or if a run fails (a loss the
build does not have fails as "unknown loss").
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import cfg, elementwise_rel, main, path, rel, save, write_json

OUT = "tests/golden/segmentation"
CATALOGUE = "tests/golden/catalogue/segmentation.json"
SEED = 20261202
LOSSES = ("dice", "iou", "jaccard", "tversky", "focal_tversky", "generalized_dice", "mcc")


# --------------------------------------------------------------------------
# The contract: parameters and their defaults

def get(loss, p, key):
    """A parameter's value in a config's params, or its default for the loss."""
    if key in p:
        return p[key]
    if key == "smooth":
        return {"dice": 1.0, "iou": 1.0, "jaccard": 1.0, "generalized_dice": 1e-5}.get(loss, 0.0)
    if key == "smooth_dr":
        return get(loss, p, "smooth")
    if key == "per_sample":
        return loss == "generalized_dice"
    if key == "eps":
        return 1e-5 if loss == "mcc" else 1e-7
    if key == "gamma":
        return 0.75 if loss == "focal_tversky" else 1.0
    return {"mode": "binary", "from_logits": True, "ignore_index": None, "classes": None,
            "include_background": True, "class_weights": None, "intersection": "product",
            "empty": "score", "log_loss": False, "squared_pred": False, "alpha": 0.5,
            "beta": 0.5, "weight_type": "square"}[key]


def probabilities(loss, p, x, noise=None):
    mode = get(loss, p, "mode")
    if get(loss, p, "from_logits"):
        prob = torch.softmax(x, 1) if mode == "multiclass" else torch.sigmoid(x)
    else:
        prob = x
    if noise is not None:  # float32 conditioning: p as a float kernel may round it
        prob = prob * (1.0 + noise)
    return prob


def layout(loss, p, x, y, noise=None):
    """(p, t, valid, per-group sum dims): p, t float64 (G or N, C, S); valid
    broadcastable to them; the sums run over `dims`."""
    mode = get(loss, p, "mode")
    per_sample = get(loss, p, "per_sample")
    ign = get(loss, p, "ignore_index")
    prob = probabilities(loss, p, x, noise)
    if mode == "binary":
        n = x.numel()
        g = x.shape[0] if per_sample and x.dim() >= 1 else 1
        s = n // g if g > 0 else 0
        pr, yt = prob.reshape(g, 1, s), y.reshape(g, 1, s)
        dims = (2,)
    else:
        nb, c = x.shape[0], x.shape[1]
        s = math.prod(x.shape[2:])
        pr = prob.reshape(nb, c, s)
        yt = y.reshape(nb, s) if y.dtype == torch.int64 else y.reshape(nb, c, s)
        dims = (2,) if per_sample else (0, 2)
    if yt.dtype == torch.int64:  # multiclass class indices: a whole position is ignored
        valid = (yt != ign) if ign is not None else torch.ones_like(yt, dtype=torch.bool)
        idx = torch.where(valid, yt, torch.zeros_like(yt))
        t = F.one_hot(idx, pr.shape[1]).permute(0, 2, 1).to(torch.float64)
        valid = valid.unsqueeze(1)
        t = t * valid
    else:
        valid = (yt != ign) if ign is not None else torch.ones_like(yt, dtype=torch.bool)
        t = torch.where(valid, yt, torch.zeros_like(yt)).to(torch.float64)
    return pr, t, valid.to(torch.float64), dims


def statistics(loss, p, x, y, noise=None):
    """I, P, T, V per (group, class): tensors (G, C)."""
    pr, t, vf, dims = layout(loss, p, x, y, noise)
    inter = torch.minimum(pr, t) if get(loss, p, "intersection") == "min" else pr * t
    sq = get(loss, p, "squared_pred")
    I = (inter * vf).sum(dims)
    P = ((pr * pr if sq else pr) * vf).sum(dims)
    T = ((t * t if sq else t) * vf).sum(dims)
    V = vf.expand_as(pr).sum(dims)
    if I.dim() == 1:  # summed over dims (0, 2): one group
        I, P, T, V = I[None], P[None], T[None], V[None]
    return I, P, T, V


def taken_classes(loss, p, C):
    classes = get(loss, p, "classes")
    if classes is not None:
        return list(classes)
    return list(range(1 if not get(loss, p, "include_background") else 0, C))


def pair_loss(loss, p, I, P, T, V):
    s, sd, eps = get(loss, p, "smooth"), get(loss, p, "smooth_dr"), get(loss, p, "eps")
    if loss == "mcc":
        tp, fp, fn = I + eps, P - I + eps, T - I + eps
        tn = V - P - T + I + eps
        return 1.0 - (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    if loss in ("tversky", "focal_tversky"):
        a, b = get(loss, p, "alpha"), get(loss, p, "beta")
        ti = (I + s) / torch.clamp_min(I + a * (P - I) + b * (T - I) + sd, eps)
        if loss == "tversky":
            return 1.0 - ti
        d = 1.0 - ti
        pos = d > 0
        return torch.where(pos, torch.where(pos, d, torch.ones_like(d)) ** get(loss, p, "gamma"),
                           torch.zeros_like(d))
    if loss == "dice":
        score = (2.0 * I + s) / torch.clamp_min(P + T + sd, eps)
    else:  # iou, jaccard
        score = (I + s) / torch.clamp_min(P + T - I + sd, eps)
    if get(loss, p, "log_loss"):
        return -torch.log(torch.clamp_min(score, eps))
    return 1.0 - score


def general(loss, p, x, y, noise=None):
    """The contract's value (a 0-d tensor on x's graph)."""
    I, P, T, V = statistics(loss, p, x, y, noise)
    return from_statistics(loss, p, I, P, T, V, (x * 0.0).sum())


def from_statistics(loss, p, I, P, T, V, zero):
    """The value from the statistics per (group, class), all classes."""
    C = I.shape[1]
    cols = taken_classes(loss, p, C)
    I, P, T, V = I[:, cols], P[:, cols], T[:, cols], V[:, cols]
    if loss == "generalized_dice":
        s, sd, eps = get(loss, p, "smooth"), get(loss, p, "smooth_dr"), get(loss, p, "eps")
        if I.shape[0] == 0 or I.shape[1] == 0:
            return zero
        Td = T.detach()
        wt = get(loss, p, "weight_type")
        w = {"square": lambda: 1.0 / (Td * Td), "simple": lambda: 1.0 / Td,
             "uniform": lambda: torch.ones_like(Td)}[wt]()
        inf = torch.isinf(w)
        w = torch.where(inf, torch.zeros_like(w), w)
        w = torch.where(inf, w.max(dim=1, keepdim=True)[0].expand_as(w), w)
        lg = 1.0 - (2.0 * (w * I).sum(1) + s) / torch.clamp_min((w * (P + T)).sum(1) + sd, eps)
        lg = torch.where((Td == 0).all(dim=1), torch.zeros_like(lg), lg)
        return lg.mean() + zero
    L = pair_loss(loss, p, I, P, T, V)
    cw = get(loss, p, "class_weights")
    w = torch.tensor([float(cw[c]) for c in cols] if cw is not None else [1.0] * len(cols),
                     dtype=torch.float64)
    W = w[None, :].expand_as(L)
    if loss != "mcc":
        empty = T == 0
        rule = get(loss, p, "empty")
        if rule == "zero":
            L = torch.where(empty, torch.zeros_like(L), L)
        elif rule == "skip":
            W = torch.where(empty, torch.zeros_like(W), W)
    den = W.sum()
    if L.numel() == 0 or float(den) == 0.0:
        return zero
    value = (W * L).sum() / den
    if loss == "tversky":
        value = value ** get(loss, p, "gamma")
    return value + zero


def kernel_terms(config, x_np, y_np):
    """Per input element, the size of the terms a kernel sums to form its
    gradient: with k0 = dv/dI + dv/dP and k1 = dv/dP per (group, class) (in
    double), d v / d p = k0 I' + k1 (P' - I'), then the sigmoid's or the
    softmax's chain rule. Where these terms are large next to the gradient
    they add up to, a float kernel's rounding of them shows (a group of one
    element makes mcc's numerator cancel, for one)."""
    loss, p = config["loss"], config.get("params", {})
    x = torch.tensor(np.asarray(x_np, dtype=np.float64))
    y = torch.from_numpy(np.array(y_np)) if np.asarray(y_np).dtype == np.int64 else \
        torch.tensor(np.asarray(y_np, dtype=np.float64))
    I, P, T, V = (s.detach().clone() for s in statistics(loss, p, x, y))
    I.requires_grad_(True)
    P.requires_grad_(True)
    v = from_statistics(loss, p, I, P, T, V, (I * 0.0).sum())
    v.backward()
    dI = I.grad if I.grad is not None else torch.zeros_like(I)
    dP = P.grad if P.grad is not None else torch.zeros_like(P)
    k0, k1 = dI + dP, dP
    pr, t, vf, dims = layout(loss, p, x, y)
    if k0.shape[0] != pr.shape[0]:  # one group over the batch
        k0, k1 = k0.expand(pr.shape[0], -1), k1.expand(pr.shape[0], -1)
    k0, k1 = k0[:, :, None], k1[:, :, None]
    di = (pr < t).to(torch.float64) if get(loss, p, "intersection") == "min" else t
    dP_ = 2.0 * pr if get(loss, p, "squared_pred") else torch.ones_like(pr)
    terms = ((k0 * di).abs() + (k1 * (dP_ - di)).abs()) * vf
    if get(loss, p, "from_logits"):
        if get(loss, p, "mode") == "multiclass":
            terms = pr * (terms + (pr * terms).sum(1, keepdim=True))
        else:
            terms = terms * pr * (1.0 - pr)
    return terms.reshape(x.shape).numpy()


def run_reference(fn, x_np, y_np):
    """(value, gradient w.r.t. x) of fn(x, y) on float64 copies."""
    x = torch.tensor(np.asarray(x_np, dtype=np.float64), requires_grad=True)
    y = torch.from_numpy(np.array(y_np)) if np.asarray(y_np).dtype == np.int64 else \
        torch.tensor(np.asarray(y_np, dtype=np.float64))
    v = fn(x, y)
    v.backward()
    g = x.grad if x.grad is not None else torch.zeros_like(x)
    return float(v), g.detach().numpy().copy()


def reference(config, x_np, y_np, noise=None):
    loss, p = config["loss"], config.get("params", {})
    nz = None if noise is None else torch.from_numpy(np.asarray(noise, dtype=np.float64))
    return run_reference(lambda x, y: general(loss, p, x, y, nz), x_np, y_np)


# --------------------------------------------------------------------------
# segmentation_models_pytorch, transcribed (losses/dice.py, jaccard.py,
# tversky.py, mcc.py; the scores of losses/_functional.py)

def smp_overlap(kind, x, y, mode, classes=None, log_loss=False, from_logits=True, smooth=0.0,
                ignore_index=None, eps=1e-7, alpha=0.5, beta=0.5, gamma=1.0):
    """kind: dice (DiceLoss), jaccard (JaccardLoss: no ignore_index), tversky."""
    assert kind != "jaccard" or ignore_index is None
    if from_logits:
        pred = x.log_softmax(dim=1).exp() if mode == "multiclass" else F.logsigmoid(x).exp()
    else:
        pred = x
    bs = y.size(0)
    nc = pred.size(1)
    if mode == "binary":
        true, pred = y.view(bs, 1, -1), pred.view(bs, 1, -1)
        if ignore_index is not None:
            keep = true != ignore_index
            pred, true = pred * keep, true * keep
    elif mode == "multiclass":
        true, pred = y.view(bs, -1), pred.view(bs, nc, -1)
        if ignore_index is not None:
            keep = true != ignore_index
            pred = pred * keep.unsqueeze(1)
            true = F.one_hot((true * keep).to(torch.long), nc).permute(0, 2, 1) * keep.unsqueeze(1)
        else:
            true = F.one_hot(true, nc).permute(0, 2, 1)
    else:
        true, pred = y.view(bs, nc, -1), pred.view(bs, nc, -1)
        if ignore_index is not None:
            keep = true != ignore_index
            pred, true = pred * keep, true * keep
    true = true.type_as(pred)
    dims = (0, 2)
    inter = (pred * true).sum(dims)
    if kind == "dice":
        score = (2.0 * inter + smooth) / ((pred + true).sum(dims) + smooth).clamp_min(eps)
    elif kind == "jaccard":
        score = (inter + smooth) / ((pred + true).sum(dims) - inter + smooth).clamp_min(eps)
    else:
        fp = (pred * (1.0 - true)).sum(dims)
        fn = ((1.0 - pred) * true).sum(dims)
        score = (inter + smooth) / (inter + alpha * fp + beta * fn + smooth).clamp_min(eps)
    loss = -torch.log(score.clamp_min(eps)) if log_loss else 1.0 - score
    loss = loss * (true.sum(dims) > 0).to(loss.dtype)  # an empty class contributes 0
    if classes is not None:
        loss = loss[torch.tensor(classes, dtype=torch.long)]
    return loss.mean() ** gamma if kind == "tversky" else loss.mean()


def smp_mcc(pred, y, eps=1e-5):
    """MCCLoss: probabilities in, one confusion matrix over the whole batch."""
    bs = y.shape[0]
    t, q = y.view(bs, 1, -1), pred.view(bs, 1, -1)
    tp = (q * t).sum() + eps
    tn = ((1 - q) * (1 - t)).sum() + eps
    fp = (q * (1 - t)).sum() + eps
    fn = ((1 - q) * t).sum() + eps
    return 1.0 - (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


# --------------------------------------------------------------------------
# MONAI, transcribed (monai/losses/dice.py DiceLoss, GeneralizedDiceLoss;
# monai/losses/utils.py compute_tp_fp_fn)

def monai_tp_fp_fn(inp, t, axes, order, soft_label):
    if order == 1 and not soft_label:
        tp = (inp * t).sum(axes)
        return tp, inp.sum(axes) - tp, t.sum(axes) - tp
    po = torch.linalg.vector_norm(inp, ord=order, dim=axes)
    go = torch.linalg.vector_norm(t, ord=order, dim=axes)
    dif = torch.linalg.vector_norm(inp - t, ord=order, dim=axes)
    if order > 1:
        po, go, dif = po ** order, go ** order, dif ** order
    tp = 0.5 * (po + go - dif)
    return tp, po - tp, go - tp


def monai_prepare(x, y, include_background, to_onehot_y, sigmoid, softmax):
    inp = torch.sigmoid(x) if sigmoid else x
    nc = inp.shape[1]
    if softmax and nc > 1:
        inp = torch.softmax(inp, 1)
    if to_onehot_y and nc > 1:  # MONAI's one_hot: (B, 1, ...) indices -> (B, C, ...)
        y = torch.movedim(F.one_hot(y[:, 0].long(), nc), -1, 1).to(inp.dtype)
    if not include_background and nc > 1:
        inp, y = inp[:, 1:], y[:, 1:]
    assert y.shape == inp.shape
    axes = list(range(2, inp.dim()))
    return inp, y, axes


def monai_dice(x, y, include_background=True, to_onehot_y=False, sigmoid=False, softmax=False,
               squared_pred=False, jaccard=False, smooth_nr=1e-5, smooth_dr=1e-5, batch=False,
               weight=None, soft_label=False):
    inp, y, axes = monai_prepare(x, y, include_background, to_onehot_y, sigmoid, softmax)
    if batch:
        axes = [0] + axes
    tp, fp, fn = monai_tp_fp_fn(inp, y, axes, 2 if squared_pred else 1, soft_label)
    if not jaccard:
        fp, fn = 0.5 * fp, 0.5 * fn
    f = 1.0 - (2.0 * tp + smooth_nr) / (2.0 * (tp + fp + fn) + smooth_dr)
    if weight is not None and y.shape[1] != 1:
        f = f * torch.as_tensor(weight, dtype=f.dtype)
    return f.mean()  # MONAI's mean: over batch and classes, whatever the weights


def monai_gdl(x, y, include_background=True, to_onehot_y=False, sigmoid=False, softmax=False,
              w_type="square", smooth_nr=1e-5, smooth_dr=1e-5, batch=False, soft_label=False,
              f32_weights=False):
    """f32_weights: MONAI's own weights, computed from ground_o.float(); False
    keeps them in float64 (the only change, so the 1e-12 check means something)."""
    inp, y, axes = monai_prepare(x, y, include_background, to_onehot_y, sigmoid, softmax)
    if batch:
        axes = [0] + axes
    tp, fp, fn = monai_tp_fp_fn(inp, y, axes, 1, soft_label)
    denominator = 2.0 * (tp + 0.5 * fp + 0.5 * fn)
    ground = y.sum(axes)
    if f32_weights:
        ground = ground.float()
    w = {"simple": lambda g: 1.0 / g, "square": lambda g: 1.0 / (g * g),
         "uniform": torch.ones_like}[w_type](ground)
    infs = torch.isinf(w)
    w = torch.where(infs, torch.zeros_like(w), w)
    if batch:
        w = w + infs * w.max()
    else:
        w = w + infs * w.max(dim=1)[0].unsqueeze(1)
    red = 0 if batch else 1
    numer = 2.0 * (tp * w).sum(red, keepdim=True) + smooth_nr
    denom = (denominator * w).sum(red, keepdim=True) + smooth_dr
    return (1.0 - numer / denom).mean()


# --------------------------------------------------------------------------
# The cross-checks: library semantics == general() where the contract
# reproduces them

def agree(tag, fa, fb, x_np, y_np, tol=1e-12):
    va, ga = run_reference(fa, x_np, y_np)
    vb, gb = run_reference(fb, x_np, y_np)
    ve = abs(va - vb) / max(abs(vb), 1e-300) if va != vb else 0.0
    # relative to the largest gradient element, with the tests' floor (1e-9
    # absolute at 1e-5 relative): a gradient that is tiny everywhere (a loss
    # near its bound) keeps the rounding of the terms it is a difference of
    scale = max(float(np.max(np.abs(gb), initial=0.0)), 1e-4)
    ge = float(np.max(np.abs(ga - gb), initial=0.0)) / scale
    assert ve <= tol and ge <= tol, "%s: value %.17g vs %.17g (rel %.3g), grad rel %.3g" % (
        tag, va, vb, ve, ge)
    return ve, ge


def G(loss, **params):
    """general() with fixed params, as fn(x, y)."""
    return lambda x, y: general(loss, params, x, y)


def group_all_empty(y, include_background, batch, act):
    """Whether some group of MONAI-layout targets (N, C, ...) has every taken
    class empty."""
    t = np.asarray(y, dtype=np.float64)
    if not include_background and t.shape[1] > 1:
        t = t[:, 1:]
    sums = t.reshape(t.shape[0], t.shape[1], -1).sum(axis=2)
    if batch:
        return bool((sums.sum(axis=0) == 0).all())
    return bool((sums == 0).all(axis=1).any())


def onehot_np(y, C):
    return np.moveaxis(np.eye(C)[y], -1, 1).copy()


def check_references(d, verbose=True):
    """d: data kinds (see make_data). Asserts every library-vs-contract
    agreement; returns how many were checked."""
    n = [0]
    worst = [0.0, 0.0, 0.0, 0.0]
    skipped = []

    def ok(tag, fa, fb, x, y, tol=1e-12):
        ve, ge = agree(tag, fa, fb, x, y, tol)
        n[0] += 1
        k = 0 if tol == 1e-12 else 2
        worst[k], worst[k + 1] = max(worst[k], ve), max(worst[k + 1], ge)

    # smp DiceLoss / JaccardLoss / TverskyLoss: empty "zero", smooth_dr = smooth
    for kind, loss in (("dice", "dice"), ("jaccard", "iou"), ("jaccard", "jaccard"),
                       ("tversky", "tversky")):
        for dk, mode in (("bin", "binary"), ("bin_soft", "binary"), ("bin_empty", "binary"),
                         ("ml", "multilabel"), ("ml_empty", "multilabel"),
                         ("mc", "multiclass"), ("mc_empty", "multiclass")):
            x, y = d[dk]
            ab = dict(alpha=0.3, beta=0.7, gamma=1.5) if kind == "tversky" else {}
            for sm in (0.0, 1.0):
                ok("smp %s %s smooth %g" % (kind, dk, sm),
                   lambda x_, y_: smp_overlap(kind, x_, y_, mode, smooth=sm, **ab),
                   G(loss, mode=mode, smooth=sm, empty="zero", **ab), x, y)
            if mode != "binary":
                ok("smp %s %s classes" % (kind, dk),
                   lambda x_, y_: smp_overlap(kind, x_, y_, mode, classes=[2, 0], **ab),
                   G(loss, mode=mode, smooth=0.0, empty="zero", classes=[2, 0], **ab), x, y)
            if kind != "tversky":
                ok("smp %s %s log_loss" % (kind, dk),
                   lambda x_, y_: smp_overlap(kind, x_, y_, mode, log_loss=True, eps=1e-3),
                   G(loss, mode=mode, smooth=0.0, empty="zero", log_loss=True, eps=1e-3), x, y)
        for dk, mode, ign in (("bin_ign", "binary", -1), ("ml_ign", "multilabel", -1),
                              ("mc_ign", "multiclass", 255), ("mc_allign", "multiclass", 255),
                              ("bin_allign", "binary", -1)):
            if kind == "jaccard":
                continue  # smp's JaccardLoss has no ignore_index
            x, y = d[dk]
            ok("smp %s %s" % (kind, dk),
               lambda x_, y_: smp_overlap(kind, x_, y_, mode, ignore_index=ign, smooth=0.5),
               G(loss, mode=mode, smooth=0.5, empty="zero", ignore_index=ign), x, y)
        for dk, mode in (("bin_prob", "binary"), ("mc_prob", "multiclass"),
                         ("ml_prob", "multilabel")):
            x, y = d[dk]
            ok("smp %s %s from_logits false" % (kind, dk),
               lambda x_, y_: smp_overlap(kind, x_, y_, mode, from_logits=False, eps=1e-6),
               G(loss, mode=mode, from_logits=False, smooth=0.0, empty="zero", eps=1e-6), x, y)
    # smp MCCLoss: probabilities, binary, one group
    for dk in ("bin_prob", "bin_prob_soft"):
        x, y = d[dk]
        for eps in (1e-5, 0.3):
            ok("smp mcc %s eps %g" % (dk, eps), lambda x_, y_: smp_mcc(x_, y_, eps),
               G("mcc", from_logits=False, eps=eps), x, y)
    # MONAI DiceLoss: eps 0, per_sample = not batch
    for dk, mode, act in (("ml", "multilabel", "sigmoid"), ("ml_empty", "multilabel", "sigmoid"),
                          ("ml_prob", "multilabel", None), ("mc_onehot", "multiclass", "softmax"),
                          ("mc_empty_onehot", "multiclass", "softmax"),
                          ("mc_prob_onehot", "multiclass", None),
                          ("mc_soft", "multiclass", "softmax"), ("ml_soft", "multilabel",
                                                                 "sigmoid")):
        x, y = d[dk]
        lk_mode = mode if act is not None else "multilabel"
        base = dict(mode=lk_mode, from_logits=act is not None, eps=0.0)
        for batch in (False, True):
            for incl in (True, False):
                for sq in (False, True):
                    for soft in (False, True):
                        if sq and soft:
                            continue  # MONAI's ord 2 ignores soft_label; losskit's min would not
                        kw = dict(include_background=incl, sigmoid=act == "sigmoid",
                                  softmax=act == "softmax", squared_pred=sq, batch=batch,
                                  soft_label=soft)
                        lk = dict(base, smooth=1e-5, smooth_dr=1e-5, per_sample=not batch,
                                  include_background=incl, squared_pred=sq,
                                  intersection="min" if soft else "product")
                        ok("monai dice %s %s" % (dk, kw), lambda x_, y_: monai_dice(x_, y_, **kw),
                           G("dice", **lk), x, y)
                        # jaccard=True: the same ratio with both smooths halved
                        if not sq:
                            lki = dict(lk, smooth=0.5e-5, smooth_dr=0.5e-5)
                            del lki["squared_pred"]
                            ok("monai jaccard %s %s" % (dk, kw),
                               lambda x_, y_: monai_dice(x_, y_, jaccard=True, **kw),
                               G("iou", **lki), x, y)
        # class weights: MONAI averages w_c L over batch and classes, losskit
        # divides by the weight sum: the same when the weights sum to C
        C = x.shape[1]
        wts = np.linspace(0.25, 1.75, C)
        wts = wts * C / wts.sum()
        ok("monai dice %s weight" % dk,
           lambda x_, y_: monai_dice(x_, y_, sigmoid=act == "sigmoid", softmax=act == "softmax",
                                     weight=list(wts), smooth_nr=0.3, smooth_dr=0.7),
           G("dice", **dict(base, smooth=0.3, smooth_dr=0.7, per_sample=True,
                            class_weights=list(wts))), x, y)
        if C > 2:  # without class 0: MONAI's weights are per taken class
            wk = np.linspace(0.5, 1.5, C - 1)
            wk = wk * (C - 1) / wk.sum()
            ok("monai dice %s weight no background" % dk,
               lambda x_, y_: monai_dice(x_, y_, sigmoid=act == "sigmoid",
                                         softmax=act == "softmax", weight=list(wk),
                                         include_background=False, batch=True),
               G("dice", **dict(base, smooth=1e-5, per_sample=False, include_background=False,
                                class_weights=[7.0] + list(wk))), x, y)
    # MONAI with to_onehot_y on index targets == multiclass index targets
    for dk in ("mc", "mc_empty"):
        x, y = d[dk]
        ok("monai dice %s to_onehot_y" % dk,
           lambda x_, y_: monai_dice(x_, y_[:, None], to_onehot_y=True, softmax=True),
           G("dice", mode="multiclass", smooth=1e-5, smooth_dr=1e-5, eps=0.0, per_sample=True),
           x, y)
        ok("monai gdl %s to_onehot_y" % dk,
           lambda x_, y_: monai_gdl(x_, y_[:, None], to_onehot_y=True, softmax=True),
           G("generalized_dice", mode="multiclass"), x, y)
    # MONAI GeneralizedDiceLoss: the generalized_dice defaults
    for dk, mode, act in (("ml", "multilabel", "sigmoid"), ("ml_empty", "multilabel", "sigmoid"),
                          ("ml_allempty", "multilabel", "sigmoid"),
                          ("mc_onehot", "multiclass", "softmax"),
                          ("mc_empty_onehot", "multiclass", "softmax"),
                          ("mc_soft", "multiclass", "softmax"), ("ml_soft", "multilabel",
                                                                 "sigmoid"),
                          ("ml_prob", "multilabel", None)):
        x, y = d[dk]
        for wt in ("square", "simple", "uniform"):
            for batch in (False, True):
                for incl in (True, False):
                    for soft in (False, True):
                        kw = dict(include_background=incl, sigmoid=act == "sigmoid",
                                  softmax=act == "softmax", w_type=wt, batch=batch,
                                  soft_label=soft)
                        lk = dict(mode=mode if act else "multilabel", from_logits=act is not None,
                                  weight_type=wt, per_sample=not batch, include_background=incl,
                                  intersection="min" if soft else "product")
                        if wt == "uniform" and group_all_empty(y, incl, batch, act):
                            # the contract's L_g = 0 for a group whose taken classes
                            # are all empty; MONAI's uniform weights give 1 - s/(P + sd)
                            # there (only square and simple weights all become 0)
                            skipped.append("monai gdl %s %s" % (dk, kw))
                            continue
                        ok("monai gdl %s %s" % (dk, kw), lambda x_, y_: monai_gdl(x_, y_, **kw),
                           G("generalized_dice", **lk), x, y)
                        ok("monai gdl f32 weights %s %s" % (dk, kw),
                           lambda x_, y_: monai_gdl(x_, y_, f32_weights=True, **kw),
                           G("generalized_dice", **lk), x, y, tol=1e-6)
    if verbose and skipped:
        print("cross-checks: %d known differences left out (MONAI GeneralizedDiceLoss, "
              "w_type uniform, a group whose taken classes are all empty)" % len(skipped))
    if verbose:
        print("cross-checks: %d library-style references agree with the contract's formula "
              "(largest: value %.2e, gradient %.2e relative; MONAI's float32 generalized "
              "dice weights: value %.2e, gradient %.2e)" % (n[0], worst[0], worst[1], worst[2],
                                                            worst[3]))
    return n[0]


# --------------------------------------------------------------------------
# Data

def make_data(rng, nb=2, C_ml=3, C_mc=4, hw=(4, 5), bin_shape=(2, 1, 6, 6)):
    """float64 / int64 arrays per data kind: {kind: (input, target)}."""
    d = {}
    H, W = hw

    def logits(shape):
        return rng.normal(0.0, 1.5, shape)

    def mask(shape, q=0.4):
        return (rng.uniform(size=shape) < q).astype(np.float64)

    def probs(shape):
        return rng.uniform(0.03, 0.97, shape)

    def soft(shape):
        return rng.uniform(0.0, 1.0, shape)

    # binary
    bs = bin_shape
    t = mask(bs)
    t.reshape(bs[0], -1)[:, 0] = 1.0  # no group empty
    d["bin"] = (logits(bs), t)
    d["bin_soft"] = (logits(bs), soft(bs))
    te = mask(bs)
    te.reshape(bs[0], -1)[0, 0] = 1.0
    te.reshape(bs[0], -1)[-1] = 0.0  # the last sample's target is empty
    d["bin_empty"] = (logits(bs), te)
    d["bin_prob"] = (probs(bs), t.copy())
    d["bin_prob_soft"] = (probs(bs), soft(bs))
    ti = t.copy()
    ti[rng.uniform(size=bs) < 0.25] = -1.0
    d["bin_ign"] = (logits(bs), ti)
    d["bin_allign"] = (logits(bs), np.full(bs, -1.0))
    d["bin_0d"] = (np.array(rng.normal(0.0, 1.5)), np.array(1.0))
    d["bin_3d"] = (logits((4, 3, 5)), mask((4, 3, 5)))
    d["bin_zero"] = (np.zeros((0, 1, 4, 4)), np.zeros((0, 1, 4, 4)))
    # multilabel (N, C, H, W)
    ms = (nb, C_ml, H, W)
    t = mask(ms)
    t[:, :, 0, 0] = 1.0
    d["ml"] = (logits(ms), t)
    te = t.copy()
    te[:, 1] = 0.0  # class 1 empty in every sample
    te[0, 2] = 0.0  # class 2 empty in sample 0
    d["ml_empty"] = (logits(ms), te)
    tae = te.copy()
    tae[0] = 0.0  # sample 0 entirely empty
    d["ml_allempty"] = (logits(ms), tae)
    d["ml_soft"] = (logits(ms), soft(ms))
    d["ml_prob"] = (probs(ms), t.copy())
    ti = t.copy()
    ti[rng.uniform(size=ms) < 0.25] = -1.0
    d["ml_ign"] = (logits(ms), ti)
    d["ml_allign"] = (logits(ms), np.full(ms, -1.0))
    d["ml_zero"] = (np.zeros((0, C_ml, 3, 3)), np.zeros((0, C_ml, 3, 3)))
    # multiclass (N, C, H, W) logits, (N, H, W) int64 indices
    cs = (nb, C_mc, H, W)
    y = rng.integers(0, C_mc, (nb, H, W)).astype(np.int64)
    k = min(C_mc, H * W)  # every class in every sample, as far as the positions go
    y.reshape(nb, -1)[:, :k] = np.arange(k)
    d["mc"] = (logits(cs), y)
    ye = np.where(y == C_mc - 1, 0, y)  # the last class absent everywhere
    ye[-1][ye[-1] == 2] = 1  # class 2 absent in the last sample
    ye.reshape(nb, -1)[0, 0] = 2
    d["mc_empty"] = (logits(cs), ye)
    yi = y.copy()
    yi[rng.uniform(size=y.shape) < 0.25] = 255
    d["mc_ign"] = (logits(cs), yi)
    d["mc_allign"] = (logits(cs), np.full(y.shape, 255, dtype=np.int64))
    d["mc_onehot"] = (d["mc"][0].copy(), onehot_np(y, C_mc))
    d["mc_empty_onehot"] = (d["mc_empty"][0].copy(), onehot_np(ye, C_mc))
    sl = rng.normal(0.0, 1.0, cs)
    st = np.exp(sl) / np.exp(sl).sum(axis=1, keepdims=True)
    d["mc_soft"] = (logits(cs), st)
    sti = st.copy()
    sti[rng.uniform(size=cs) < 0.2] = -1.0
    d["mc_soft_ign"] = (logits(cs), sti)
    pl = rng.normal(0.0, 1.5, cs)
    pr = np.exp(pl) / np.exp(pl).sum(axis=1, keepdims=True)
    d["mc_prob"] = (pr, y.copy())
    d["mc_prob_onehot"] = (pr.copy(), onehot_np(y, C_mc))
    d["mc_zero"] = (np.zeros((0, C_mc, 3, 3)), np.zeros((0, 3, 3), dtype=np.int64))
    return d


def is_prob(config):
    return not config.get("params", {}).get("from_logits", True)


def redraw_like(rng, config, x, where):
    """New input values at the flagged elements (multiclass: positions)."""
    p = config.get("params", {})
    mode = p.get("mode", "binary")
    x = x.copy()
    if mode == "multiclass":
        pos = where.any(axis=1, keepdims=True) & np.ones_like(where, dtype=bool)
        if is_prob(config):
            fresh = rng.normal(0.0, 1.5, x.shape)
            fresh = np.exp(fresh) / np.exp(fresh).sum(axis=1, keepdims=True)
        else:
            fresh = rng.normal(0.0, 1.5, x.shape)
        x[pos] = fresh[pos]
    else:
        fresh = rng.uniform(0.03, 0.97, x.shape) if is_prob(config) else \
            rng.normal(0.0, 1.5, x.shape)
        x[where] = fresh[where]
    return x


def grad_rel(got, want):
    """Elementwise relative error with the tests' 1e-9 absolute floor at 1e-5."""
    d = np.abs(np.asarray(got, dtype=np.float64) - want)
    return d / np.maximum(np.abs(want), 1e-4)


def soft_target_mask(config, y):
    """The float target elements a kernel meets inexactly: neither 0 nor 1
    (exact in float32, and a kernel's k0 t + k1 (1 - t) is then one of its
    coefficients) nor ignore_index. None for index targets."""
    if y.dtype == np.int64:
        return None
    ign = config.get("params", {}).get("ignore_index")
    m = (y != 0.0) & (y != 1.0)
    if ign is not None:
        m &= y != ign
    return m


def redraw_targets(rng, config, y, where):
    """New soft targets at the flagged elements (multiclass: a position's
    whole distribution, so that it still sums to 1); ignored ones stay."""
    ign = config.get("params", {}).get("ignore_index")
    y = y.copy()
    keep = np.ones_like(where) if ign is None else (y != ign)
    if config.get("params", {}).get("mode") == "multiclass":
        pos = where.any(axis=1, keepdims=True) & np.ones_like(where, dtype=bool)
        e = np.exp(rng.normal(0.0, 1.0, y.shape))
        fresh = e / e.sum(axis=1, keepdims=True)
        sel = pos & keep
    else:
        fresh = rng.uniform(0.0, 1.0, y.shape)
        sel = where & keep
    y[sel] = fresh[sel]
    return y


def condition_f32(config, x, y, rng, tries=80):
    """float32 copies (x32, y32) of input and target whose reference is
    well-conditioned (docstring). Soft float targets move too, by one ulp:
    a float kernel's gradient k0 t + k1 (1 - t) cancels where k0 t ~ -k1 (1 - t),
    which moving t shows; such elements get a new input and, for soft
    targets, a new target."""
    x32 = x.astype(np.float32)
    y32 = y if y.dtype == np.int64 else y.astype(np.float32)
    if x32.size == 0:
        return x32, y32
    soft = soft_target_mask(config, y32)
    soft_any = soft is not None and bool(soft.any())
    for _ in range(tries):
        xf = x32.astype(np.float64)
        yf = y32 if y32.dtype == np.int64 else y32.astype(np.float64)
        v0, g0 = reference(config, xf, yf)
        bad = np.zeros(x.shape, dtype=bool)
        vbad = False
        for _trial in range(4):
            ulp = np.spacing(np.abs(x32)).astype(np.float64)
            xm = xf + np.reshape(rng.choice([-1.0, 1.0], x.size), x.shape) * ulp
            noise = np.reshape(rng.choice([-1.0, 1.0], x.size), x.shape) * 2.0 ** -23
            ym = yf
            if soft_any:
                tul = np.where(soft, np.spacing(np.abs(y32)).astype(np.float64), 0.0)
                ym = yf + np.reshape(rng.choice([-1.0, 1.0], y32.size), y32.shape) * tul
            v1, g1 = reference(config, xm, ym, noise)
            bad |= grad_rel(g1, g0) > 1e-6
            vbad |= abs(v1 - v0) > 1e-7 * max(abs(v0), 1e-12)
        bad |= 2.0 ** -23 * kernel_terms(config, xf, yf) > 1e-6 * np.maximum(np.abs(g0), 1e-4)
        if not bad.any() and not vbad:
            return x32, y32
        if vbad and not bad.any():  # the value itself: redraw a few elements
            bad.reshape(-1)[rng.integers(0, bad.size, max(1, bad.size // 20))] = True
        x32 = redraw_like(rng, config, xf, bad).astype(np.float32)
        if soft_any and y32.shape == bad.shape:
            y32 = redraw_targets(rng, config, y32.astype(np.float64), bad).astype(np.float32)
            soft = soft_target_mask(config, y32)
    raise RuntimeError("could not condition float32 data for %s" % json.dumps(config))


# --------------------------------------------------------------------------
# The committed cases

MODES = {"dice": ("binary", "multiclass", "multilabel"), "mcc": ("binary", "multilabel")}
HAS_EMPTY = ("dice", "iou", "jaccard", "tversky", "focal_tversky")
HAS_SMOOTH = ("dice", "iou", "jaccard", "tversky", "focal_tversky", "generalized_dice")


def loss_variants(loss):
    """Loss-specific parameter sets: (tag, data kind, params)."""
    if loss == "dice":
        return [("log_loss", "bin", {"log_loss": True}),
                ("log_loss_eps", "mc_empty", {"mode": "multiclass", "log_loss": True,
                                              "smooth": 0.0, "eps": 1e-3, "empty": "zero"}),
                ("squared", "bin", {"squared_pred": True}),
                ("squared_ml", "ml", {"mode": "multilabel", "squared_pred": True}),
                ("squared_mc", "mc", {"mode": "multiclass", "squared_pred": True,
                                      "per_sample": True}),
                # (with intersection min the score can pass 1: not pinned here)
                ("squared_soft", "ml_soft", {"mode": "multilabel", "squared_pred": True})]
    if loss in ("iou", "jaccard"):
        return [("log_loss", "bin", {"log_loss": True}),
                ("log_loss_ml", "ml_empty", {"mode": "multilabel", "log_loss": True,
                                             "smooth": 0.0, "empty": "skip"})]
    if loss == "tversky":
        return [("a03_b07", "bin", {"alpha": 0.3, "beta": 0.7}),
                ("a0_b1", "bin_soft", {"alpha": 0.0, "beta": 1.0, "smooth": 0.5}),
                ("a07_b03_g2", "ml", {"mode": "multilabel", "alpha": 0.7, "beta": 0.3,
                                      "gamma": 2.0}),
                ("g06", "mc", {"mode": "multiclass", "alpha": 0.4, "beta": 0.6, "gamma": 0.6}),
                ("g15_empty_zero", "mc_empty", {"mode": "multiclass", "alpha": 0.3, "beta": 0.7,
                                                "gamma": 1.5, "empty": "zero"})]
    if loss == "focal_tversky":
        return [("g15", "bin", {"gamma": 1.5}),
                ("g05_a07_b03", "ml", {"mode": "multilabel", "gamma": 0.5, "alpha": 0.7,
                                       "beta": 0.3}),
                ("g1", "mc", {"mode": "multiclass", "gamma": 1.0, "alpha": 0.3, "beta": 0.7}),
                ("g2_ps", "mc", {"mode": "multiclass", "gamma": 2.0, "per_sample": True}),
                ("g075_a0_b1", "bin_soft", {"alpha": 0.0, "beta": 1.0, "smooth": 0.2,
                                            "smooth_dr": 0.3})]
    if loss == "generalized_dice":
        L = []
        for wt in ("square", "simple", "uniform"):
            L += [("%s_bin" % wt, "bin", {"weight_type": wt}),
                  ("%s_ml" % wt, "ml_empty", {"mode": "multilabel", "weight_type": wt}),
                  ("%s_ml_batch" % wt, "ml_empty", {"mode": "multilabel", "weight_type": wt,
                                                    "per_sample": False}),
                  ("%s_allempty" % wt, "ml_allempty", {"mode": "multilabel", "weight_type": wt}),
                  ("%s_mc" % wt, "mc_empty", {"mode": "multiclass", "weight_type": wt}),
                  ("%s_mc_batch" % wt, "mc", {"mode": "multiclass", "weight_type": wt,
                                              "per_sample": False}),
                  ("%s_mc_soft_min" % wt, "mc_soft", {"mode": "multiclass", "weight_type": wt,
                                                      "intersection": "min"})]
        L += [("allempty_smooth", "ml_allempty", {"mode": "multilabel", "smooth": 0.1,
                                                  "smooth_dr": 0.3})]
        return L
    if loss == "mcc":
        return [("eps03", "bin_soft", {"eps": 0.3}),
                ("ml_prob_ps", "ml_prob", {"mode": "multilabel", "from_logits": False,
                                        "per_sample": True})]
    return []


def case_specs(loss):
    """(tag, data kind, params) for one loss: every mode x every option it has."""
    modes = MODES.get(loss, ("binary", "multiclass", "multilabel"))
    L = []
    smooth = loss in HAS_SMOOTH
    empty = loss in HAS_EMPTY
    weights = loss != "generalized_dice"
    ps_flip = loss != "generalized_dice"  # per_sample's non-default value
    # binary
    L += [("bin", "bin", {}),
          ("bin_prob", "bin_prob", {"from_logits": False}),
          ("bin_soft", "bin_soft", {}),
          ("bin_ps", "bin", {"per_sample": ps_flip}),
          ("bin_ign", "bin_ign", {"ignore_index": -1}),
          ("bin_ign_ps", "bin_ign", {"ignore_index": -1, "per_sample": ps_flip}),
          ("bin_allign", "bin_allign", {"ignore_index": -1}),
          ("bin_0d", "bin_0d", {}),
          ("bin_3d", "bin_3d", {"per_sample": ps_flip}),
          ("bin_zero", "bin_zero", {}),
          ("bin_zero_ps", "bin_zero", {"per_sample": ps_flip}),
          ("bin_eps", "bin", {"eps": 0.3} if loss == "mcc" else {"eps": 400.0})]
    if smooth:
        L += [("bin_smooth", "bin", {"smooth": 0.7, "smooth_dr": 1.3}),
              ("bin_smooth%d" % (get(loss, {}, "smooth") == 0),
               "bin", {"smooth": float(get(loss, {}, "smooth") == 0)}),
              ("bin_min", "bin_soft", {"intersection": "min"}),
              ("bin_min_prob", "bin_prob_soft", {"intersection": "min", "from_logits": False})]
    if get(loss, {}, "smooth") != 0 and loss in HAS_SMOOTH:
        # smooth 0 on no data: (0 + 0) / max(0, eps) scores 0, the loss is 1
        L += [("bin_zero_smooth0", "bin_zero", {"per_sample": False, "smooth": 0.0}),
              ("bin_allign_smooth0", "bin_allign", {"ignore_index": -1, "smooth": 0.0})]
    if empty:
        for rule in ("score", "zero", "skip"):
            L.append(("bin_empty_%s" % rule, "bin_empty",
                      {"per_sample": True, "empty": rule, "smooth": 0.0}))
        L.append(("bin_empty_score_s1", "bin_empty", {"per_sample": True, "empty": "score",
                                                      "smooth": 1.0}))
    else:
        L.append(("bin_empty", "bin_empty", {"per_sample": True}))
    if weights:
        L.append(("bin_cw", "bin", {"class_weights": [2.5]}))
    # multilabel
    if "multilabel" in modes:
        ml = {"mode": "multilabel"}
        L += [("ml", "ml", dict(ml)),
              ("ml_prob", "ml_prob", dict(ml, from_logits=False)),
              ("ml_soft", "ml_soft", dict(ml)),
              ("ml_ps", "ml", dict(ml, per_sample=ps_flip)),
              ("ml_classes", "ml", dict(ml, classes=[2, 0])),
              ("ml_nobg", "ml", dict(ml, include_background=False)),
              ("ml_ign", "ml_ign", dict(ml, ignore_index=-1)),
              ("ml_ign_ps", "ml_ign", dict(ml, ignore_index=-1, per_sample=ps_flip)),
              ("ml_allign", "ml_allign", dict(ml, ignore_index=-1)),
              ("ml_zero", "ml_zero", dict(ml)),
              ("ml_zero_ps", "ml_zero", dict(ml, per_sample=ps_flip))]
        if smooth:
            L += [("ml_min", "ml_soft", dict(ml, intersection="min", smooth=0.2)),
                  ("ml_smooth", "ml", dict(ml, smooth=0.0, smooth_dr=0.5))]
        if weights:
            L += [("ml_cw", "ml", dict(ml, class_weights=[0.5, 2.0, 1.0])),
                  ("ml_cw0", "ml_empty", dict(ml, class_weights=[0.0, 1.0, 3.0],
                                              per_sample=True))]
        if empty:
            for rule in ("score", "zero", "skip"):
                L.append(("ml_empty_%s" % rule, "ml_empty", dict(ml, empty=rule)))
                L.append(("ml_empty_%s_ps" % rule, "ml_empty",
                          dict(ml, empty=rule, per_sample=True, smooth=0.0,
                               class_weights=[1.0, 0.5, 2.0])))
            L.append(("ml_allempty_skip_ps", "ml_allempty",
                      dict(ml, empty="skip", per_sample=True, classes=[1, 2])))
            L.append(("ml_skip_all", "ml_empty", dict(ml, empty="skip", classes=[1])))
        else:
            L.append(("ml_empty", "ml_empty", dict(ml, per_sample=True)))
    # multiclass
    if "multiclass" in modes:
        mc = {"mode": "multiclass"}
        L += [("mc", "mc", dict(mc)),
              ("mc_prob", "mc_prob", dict(mc, from_logits=False)),
              ("mc_ps", "mc", dict(mc, per_sample=ps_flip)),
              ("mc_classes", "mc", dict(mc, classes=[3, 1])),
              ("mc_nobg", "mc", dict(mc, include_background=False)),
              ("mc_ign", "mc_ign", dict(mc, ignore_index=255)),
              ("mc_ign_ps", "mc_ign", dict(mc, ignore_index=255, per_sample=ps_flip)),
              ("mc_ign_class", "mc", dict(mc, ignore_index=0)),
              ("mc_allign", "mc_allign", dict(mc, ignore_index=255)),
              ("mc_zero", "mc_zero", dict(mc)),
              ("mc_zero_ps", "mc_zero", dict(mc, per_sample=ps_flip)),
              ("mc_onehot", "mc_onehot", dict(mc)),
              ("mc_soft", "mc_soft", dict(mc)),
              ("mc_soft_ign", "mc_soft_ign", dict(mc, ignore_index=-1)),
              ("mc_prob_onehot", "mc_prob_onehot", dict(mc, from_logits=False))]
        if smooth:
            L += [("mc_min", "mc_soft", dict(mc, intersection="min")),
                  ("mc_smooth", "mc", dict(mc, smooth=0.3, smooth_dr=0.6))]
        if weights:
            L += [("mc_cw", "mc", dict(mc, class_weights=[1.0, 0.5, 2.0, 1.5])),
                  ("mc_cw_classes", "mc_empty", dict(mc, class_weights=[1.0, 0.5, 2.0, 1.5],
                                                     classes=[0, 3, 2]))]
        if empty:
            for rule in ("score", "zero", "skip"):
                L.append(("mc_empty_%s" % rule, "mc_empty", dict(mc, empty=rule)))
                L.append(("mc_empty_%s_ps" % rule, "mc_empty",
                          dict(mc, empty=rule, per_sample=True, smooth=0.0)))
                L.append(("mc_empty_%s_onehot" % rule, "mc_empty_onehot",
                          dict(mc, empty=rule, per_sample=True)))
        else:
            L.append(("mc_empty", "mc_empty", dict(mc, per_sample=True)))
    L += loss_variants(loss)
    return L


def case_list():
    """(name, config, data kind, dtype)."""
    out = []
    for loss in LOSSES:
        specs = case_specs(loss)
        tags = [t for t, _, _ in specs]
        assert len(tags) == len(set(tags)), loss
        for dt in ("f64", "f32"):
            for tag, kind, params in specs:
                out.append(("%s_%s_%s" % (loss, tag, dt), cfg(loss, **params), kind, dt))
    return out


def check_spec_data(d):
    """The data have what the cases claim (an empty class where one is
    wanted, none elsewhere), and the reference is finite where needed."""
    assert (d["ml_empty"][1][:, 1] == 0).all() and (d["ml_empty"][1][0, 2] == 0).all()
    assert (d["ml"][1].sum(axis=(2, 3)) > 0).all()
    for n in range(d["mc"][1].shape[0]):
        assert len(np.unique(d["mc"][1][n])) == d["mc"][0].shape[1]
    assert not (d["mc_empty"][1] == 3).any() and not (d["mc_empty"][1][-1] == 2).any()
    assert (d["mc_empty"][1][0] == 2).any()


# --------------------------------------------------------------------------
# Today's dice and iou configs: the same values as the tutorial's goldens

def check_compat():
    """configs/dice.json, iou.json and dice_multiclass.json under the
    contract give the values (and gradients) the tutorial family's goldens
    hold (tests/golden/golden.json, tests/golden/multiclass/cases.json);
    returns catalogue cases for the three configs on their data."""
    cases = []
    old = json.load(open(path("tests/golden/golden.json")))
    for c in old:
        cf = c.get("config", {})
        if cf.get("loss") not in ("dice", "iou") or "target" not in c.get("tensors", {}):
            continue
        x = np.load(path(c["tensors"]["input"]))
        y = np.load(path(c["tensors"]["target"]))
        v, g = reference(cf, x.astype(np.float64), y.astype(np.float64))
        assert abs(v - c["value"]) <= 1e-12 * abs(c["value"]), (c["name"], v, c["value"])
        gold = np.load(path(c["grad"]))
        assert np.max(np.abs(g - gold)) <= 1e-12 * np.max(np.abs(gold)), c["name"]
    for c in json.load(open(path("tests/golden/multiclass/cases.json"))):
        x = np.load(path(c["tensors"]["input"])).astype(np.float64)
        y = np.load(path(c["tensors"]["target"]))
        if y.dtype != np.int64:
            y = y.astype(np.float64)
        v, g = reference(c["config"], x, y)
        assert abs(v - c["value"]) <= 1e-12 * abs(c["value"]), (c["name"], v, c["value"])
        gold = np.load(path(c["grad"]))
        assert np.max(np.abs(g - gold)) <= 1e-12 * np.max(np.abs(gold)), c["name"]
    for name, data in (("dice", ("configs/data/input.npy", "configs/data/target.npy")),
                       ("iou", ("configs/data/input.npy", "configs/data/target.npy")),
                       ("dice_multiclass", ("configs/data/mc_input.npy",
                                            "configs/data/mc_target.npy"))):
        config = json.load(open(path("configs/%s.json" % name)))
        x = np.load(path(data[0]))
        y = np.load(path(data[1]))
        v, g = reference(config, x.astype(np.float64),
                         y if y.dtype == np.int64 else y.astype(np.float64))
        cases.append(("config_%s" % name, config, data, v, g))
    return cases


# --------------------------------------------------------------------------
# Writing the goldens

def write_goldens():
    torch.set_default_dtype(torch.float64)
    os.makedirs(path(OUT), exist_ok=True)
    os.makedirs(os.path.dirname(path(CATALOGUE)), exist_ok=True)
    for f in os.listdir(path(OUT)):  # nothing stale survives a rewrite
        if f.endswith(".npy"):
            os.remove(os.path.join(path(OUT), f))
    rng = np.random.default_rng(SEED)
    data = make_data(rng)
    check_spec_data(data)
    check_references(data)
    saved = {}

    def data_file(kind, slot, a, dt):
        tag = "" if a.dtype == np.int64 else "_" + dt
        key = (kind, slot, tag)
        if key not in saved:
            saved[key] = save("%s/%s%s_%s.npy" % (OUT, kind, tag, slot), a)
        return saved[key]

    cases = []
    crng = np.random.default_rng(SEED + 1)
    counts = {}
    for name, config, kind, dt in case_list():
        x, y = data[kind]
        if y.dtype != np.int64:
            y = y.astype(np.float32 if dt == "f32" else np.float64)
        if dt == "f32":
            x32, y32 = condition_f32(config, x, y.astype(np.float64) if y.dtype != np.int64
                                     else y, crng)
            if np.array_equal(x32, x.astype(np.float32)):
                xin = data_file(kind, "input", x32, dt)
            else:
                xin = save("%s/%s_input.npy" % (OUT, name), x32)
            if np.array_equal(y32, y):
                yin = data_file(kind, "target", y, dt)
            else:
                yin = save("%s/%s_target.npy" % (OUT, name), y32)
        else:
            xin = data_file(kind, "input", x, dt)
            yin = data_file(kind, "target", y, dt)
        xs = np.load(path(xin)).astype(np.float64)
        ys = np.load(path(yin))
        value, grad = reference(config, xs, ys if ys.dtype == np.int64 else ys.astype(np.float64))
        assert np.isfinite(value) and np.isfinite(grad).all(), name
        if kind.endswith("allign") or kind.endswith("zero"):
            assert not grad.any(), name
        cases.append({"name": name, "config": config, "tensors": {"input": xin, "target": yin},
                      "value": value,
                      "grads": {"input": save("%s/%s_grad_input.npy" % (OUT, name), grad)}})
        counts[config["loss"]] = counts.get(config["loss"], 0) + 1
    for name, config, (xin, yin), value, grad in check_compat():
        cases.append({"name": name, "config": config, "tensors": {"input": xin, "target": yin},
                      "value": value,
                      "grads": {"input": save("%s/%s_grad_input.npy" % (OUT, name), grad)}})
        counts[config["loss"]] = counts.get(config["loss"], 0) + 1
    write_json(CATALOGUE, cases)
    print("wrote %d cases to %s (%s)" % (len(cases), CATALOGUE, ", ".join(
        "%s %d" % kv for kv in counts.items())))


# --------------------------------------------------------------------------
# --random: compare a build with the reference on data no test uses

def random_case(rng, loss):
    """(config, input, target) with fresh shapes, classes, parameters, data."""
    modes = MODES.get(loss, ("binary", "multiclass", "multilabel"))
    mode = str(rng.choice(modes))
    p = {"mode": mode}
    from_logits = bool(rng.uniform() < 0.75)
    if not from_logits:
        p["from_logits"] = False
    if mode == "binary":
        ndim = int(rng.integers(0, 5))
        shape = tuple(int(s) for s in rng.integers(1, 7, ndim))
        C = 1
    else:
        nb, C = int(rng.integers(1, 4)), int(rng.integers(1 if mode == "multilabel" else 2, 6))
        shape = (nb, C) + tuple(int(s) for s in rng.integers(1, 8, int(rng.integers(0, 3))))
    if rng.uniform() < 0.05:  # a zero-size batch now and then
        shape = (0,) + shape[1:] if len(shape) else shape
    x = rng.normal(0.0, 2.0, shape)
    soft = bool(rng.uniform() < 0.3)
    index = mode == "multiclass" and rng.uniform() < 0.7
    if mode == "multiclass":
        if not from_logits:
            x = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
        if index:
            y = rng.integers(0, C, (shape[0],) + shape[2:]).astype(np.int64)
            if rng.uniform() < 0.4 and C > 1:  # absent classes
                y[y == int(rng.integers(0, C))] = int(rng.integers(0, C))
        elif soft:
            e = np.exp(rng.normal(0.0, 1.0, shape))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            y = onehot_np(rng.integers(0, C, (shape[0],) + shape[2:]), C)
    else:
        if not from_logits:
            x = rng.uniform(0.02, 0.98, shape)
        y = rng.uniform(0.0, 1.0, shape) if soft else \
            (rng.uniform(size=shape) < rng.uniform(0.1, 0.7)).astype(np.float64)
        if rng.uniform() < 0.4 and y.ndim >= 2 and y.size:  # empty classes or samples
            y[tuple(rng.integers(0, s) for s in y.shape[:2])] = 0.0
    x = np.array(x, dtype=np.float64)
    y = np.array(y, dtype=np.int64 if index else np.float64)
    if rng.uniform() < 0.3:
        ign = 255 if index else -1
        if y.size:
            y[rng.uniform(size=y.shape) < rng.choice([0.2, 1.0], p=[0.85, 0.15])] = ign
        p["ignore_index"] = ign
    if mode != "binary" and rng.uniform() < 0.3:
        k = int(rng.integers(1, C + 1))
        p["classes"] = [int(c) for c in rng.permutation(C)[:k]]
    elif mode != "binary" and C > 1 and rng.uniform() < 0.25:
        p["include_background"] = False
    if rng.uniform() < 0.4:
        p["per_sample"] = not get(loss, p, "per_sample")
    if loss != "generalized_dice" and rng.uniform() < 0.3:
        p["class_weights"] = [float(w) for w in rng.uniform(0.0, 3.0, C)]
    if loss in HAS_SMOOTH:
        if rng.uniform() < 0.6:
            p["smooth"] = float(rng.choice([0.0, 10 ** rng.uniform(-5, 0.5)]))
        if rng.uniform() < 0.3:
            p["smooth_dr"] = float(get(loss, p, "smooth") + rng.uniform(0.0, 1.0))
        if rng.uniform() < 0.3 and soft:
            p["intersection"] = "min"
    if rng.uniform() < 0.3:
        p["eps"] = float(10 ** rng.uniform(-8, -2))
    if loss in HAS_EMPTY and rng.uniform() < 0.6:
        p["empty"] = str(rng.choice(["score", "zero", "skip"]))
    if loss in ("dice", "iou", "jaccard") and rng.uniform() < 0.25:
        p["log_loss"] = True
        p["eps"] = float(10 ** rng.uniform(-6, -2))
    if loss == "dice" and rng.uniform() < 0.25:
        p["squared_pred"] = True
    if loss in ("tversky", "focal_tversky"):
        p["alpha"], p["beta"] = float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0))
        p["gamma"] = float(rng.uniform(0.3, 3.0))
    if loss == "generalized_dice":
        p["weight_type"] = str(rng.choice(["square", "simple", "uniform"]))
    return cfg(loss, **p), x, y


def run_random(seed, exe):
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(1_000_003 * (seed + 1) + 29)  # never SEED
    # the cross-checks on fresh data first: smaller and larger shapes
    for _ in range(2):
        # (the checks use classes 0 to 2 in multilabel, 0 to 3 in multiclass)
        nb, cml, cmc = int(rng.integers(1, 4)), int(rng.integers(3, 6)), int(rng.integers(4, 7))
        hw = (int(rng.integers(2, 7)), int(rng.integers(2, 7)))
        d = make_data(rng, nb=nb, C_ml=cml, C_mc=cmc, hw=hw,
                      bin_shape=(nb, 1) + hw)
        check_references(d)
    worst, errors = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for loss in LOSSES:
            for _rep in range(12):
                for _try in range(20):
                    config, x, y = random_case(rng, loss)
                    v, g = reference(config, x, y)
                    if np.isfinite(v) and np.isfinite(g).all():
                        break
                for dt in ("f64", "f32"):
                    xa, ya = x, y
                    if dt == "f32":
                        try:
                            xa, ya = condition_f32(config, x, y, rng)
                        except RuntimeError:
                            continue
                    w = worst.setdefault((loss, dt), [0.0, 0.0, 0, None])
                    try:
                        ve, ge = compare_run(exe, tmp, config, xa, ya)
                    except RuntimeError as e:
                        errors.setdefault(loss, str(e))
                        w[2] += 1
                        w[0] = w[1] = float("inf")
                        continue
                    if ve > w[0] or ge > w[1]:
                        w[3] = config
                    w[0], w[1], w[2] = max(w[0], ve), max(w[1], ge), w[2] + 1
    ok = True
    print("seed %d: largest relative errors against the reference (float64)" % seed)
    for (loss, dt), (ve, ge, n, worst_cfg) in sorted(worst.items()):
        flag = "" if ve <= 1e-6 and ge <= 1e-5 else "   FAIL"
        ok &= not flag
        print("  %-16s %s  value %.2e  gradient %.2e  (%d runs)%s" % (loss, dt, ve, ge, n, flag))
        if flag and worst_cfg is not None:
            print("      worst config: %s" % json.dumps(worst_cfg))
    for loss, e in errors.items():
        print("  %s: losskit failed: %s" % (loss, e.strip().splitlines()[-1] if e.strip() else e))
    return ok


def compare_run(exe, tmp, config, x, y):
    cpath = os.path.join(tmp, "config.json")
    with open(cpath, "w") as f:
        json.dump(config, f)
    xf, yf, gf = (os.path.join(tmp, n + ".npy") for n in ("input", "target", "grad"))
    np.save(xf, x)
    np.save(yf, y)
    if os.path.exists(gf):
        os.remove(gf)
    cmd = [exe, "run", cpath, "--input", xf, "--target", yf, "--grad", gf, "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr or res.stdout or "exit %d" % res.returncode)
    got = json.loads(res.stdout)
    value, grad = reference(config, x.astype(np.float64),
                            y if y.dtype == np.int64 else y.astype(np.float64))
    ve = rel(got["value"], value)
    g = np.load(gf)
    if g.shape != grad.shape:
        return ve, float("inf")
    return ve, elementwise_rel(g, grad)


if __name__ == "__main__":
    sys.exit(main(__doc__, write_goldens, run_random, "the reference"))
