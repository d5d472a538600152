#!/usr/bin/python3
"""Golden data for the contrastive family (ntxent, supcon).

torch has neither loss, so this script writes each published formula in
plain torch ops, in float64, and checks it against a second formulation
written independently (before any golden value is saved):

  ntxent  SimCLR's NT-Xent (Chen et al. 2020, eq. 1): rows of a (2N, D)
          batch are L2-normalised with F.normalize (eps = 1e-12), the cosine
          similarities divided by the temperature, the diagonal masked out,
          and F.cross_entropy over each row with the other view (i + N mod
          2N) as the class, mean over the 2N anchors.
          Second form: an explicit loop over anchors, cosine similarity as
          x_i . x_j / (max(|x_i|, eps) max(|x_j|, eps)), torch.logsumexp over
          the 2N - 1 other rows.
  supcon  Khosla et al. 2020, L_out (eq. 2), as the authors' SupConLoss
          writes it (max-shifted logits, the self-pair masked from the
          denominator, the mean log-probability of the positives), without
          the tau / base_temperature factor, averaged over the anchors that
          have at least one positive; 0 (with a zero gradient) when none has.
          Second form: a loop over anchors with torch.logsumexp over a != i
          and the positives' log-probabilities averaged explicitly.

Gradients are torch autograd's in float64 on the stored values (float32
inputs upcast), w.r.t. the input.

    /usr/bin/python3 tests/golden/make_contrastive.py            # writes the goldens
    /usr/bin/python3 tests/golden/make_contrastive.py --random 7 # compares losskit run

The first form writes tests/golden/contrastive/*.npy and
tests/golden/catalogue/contrastive.json. --random SEED draws new shapes,
temperatures and data (seeds far from the committed one), runs
build/host/losskit run on them (float32 and float64) and prints the largest
relative errors; it exits 1 if a value is off by more than 1e-6 or a
gradient element by more than 1e-5 relative (elements below 1e-4 in size:
1e-9 absolute, as tests/test_catalogue.c).
"""
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import LosskitError, options, path, run_losskit, save, write_json

OUT = "tests/golden/contrastive"
CATALOGUE = "tests/golden/catalogue/contrastive.json"
SEED = 20250110
EPS = 1e-12  # F.normalize's default norm floor, as the plugin uses

torch.set_default_dtype(torch.float64)


# ---------------------------------------------------------------------------
# The references


def ntxent_ce(x, tau):
    """NT-Xent through F.cross_entropy over the masked similarity matrix."""
    m = x.shape[0]
    n = m // 2
    z = F.normalize(x, dim=1, eps=EPS)
    logits = z @ z.T / tau
    eye = torch.eye(m, dtype=torch.bool)
    logits = logits.masked_fill(eye, float("-inf"))
    target = (torch.arange(m) + n) % m
    return F.cross_entropy(logits, target, reduction="mean")


def ntxent_loop(x, tau):
    """NT-Xent anchor by anchor, cosine similarities written out."""
    m = x.shape[0]
    n = m // 2
    norms = torch.linalg.vector_norm(x, dim=1).clamp_min(EPS)
    terms = []
    for i in range(m):
        others = [j for j in range(m) if j != i]
        sims = torch.stack([(x[i] * x[j]).sum() / (norms[i] * norms[j]) for j in others]) / tau
        pos = others.index((i + n) % m)
        terms.append(torch.logsumexp(sims, 0) - sims[pos])
    return torch.stack(terms).mean()


def supcon_official(x, labels, tau):
    """L_out as the authors' SupConLoss computes it, one view per row, no
    base-temperature factor, mean over the anchors with a positive."""
    m = x.shape[0]
    z = F.normalize(x, dim=1, eps=EPS)
    lab = labels.view(-1, 1)
    mask = torch.eq(lab, lab.T).to(x.dtype)
    logits = z @ z.T / tau
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    logits_mask = 1.0 - torch.eye(m)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    npos = mask.sum(1)
    has = npos > 0
    if not bool(has.any()):
        return (x * 0.0).sum()
    mean_log_prob_pos = (mask * log_prob).sum(1)[has] / npos[has]
    return -mean_log_prob_pos.mean()


def supcon_loop(x, labels, tau):
    """L_out anchor by anchor with torch.logsumexp."""
    m = x.shape[0]
    norms = torch.linalg.vector_norm(x, dim=1).clamp_min(EPS)
    terms = []
    for i in range(m):
        others = [j for j in range(m) if j != i]
        pos = [k for k, j in enumerate(others) if int(labels[j]) == int(labels[i])]
        if not pos:
            continue
        sims = torch.stack([(x[i] * x[j]).sum() / (norms[i] * norms[j]) for j in others]) / tau
        lse = torch.logsumexp(sims, 0)
        terms.append(-torch.stack([sims[k] - lse for k in pos]).mean())
    if not terms:
        return (x * 0.0).sum()
    return torch.stack(terms).mean()


def value_and_grad(fn, x, *rest):
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    v = fn(xt, *rest)
    (g,) = torch.autograd.grad(v, xt, allow_unused=True)
    if g is None:
        g = torch.zeros_like(xt)
    return float(v.detach()), g.numpy()


def reference(loss, x, labels, tau, check=True):
    """The value and gradient of the first form, checked against the second."""
    if loss == "ntxent":
        forms = (ntxent_ce, ntxent_loop)
        rest = (tau,)
    else:
        forms = (supcon_official, supcon_loop)
        rest = (torch.tensor(labels, dtype=torch.int64), tau)
    v, g = value_and_grad(forms[0], x, *rest)
    if check and x.shape[0] <= 64:
        v2, g2 = value_and_grad(forms[1], x, *rest)
        scale = max(1.0, abs(v))
        assert abs(v - v2) <= 1e-12 * scale, (loss, v, v2)
        gs = max(1e-300, float(np.abs(g).max()))
        assert np.abs(g - g2).max() <= max(1e-11 * gs, 1e-14), (loss, np.abs(g - g2).max(), gs)
    return v, g


# ---------------------------------------------------------------------------
# Committed goldens


def embeddings(rng, m, d, scale=1.0):
    return rng.normal(0.0, scale, (m, d))


def add_case(cases, name, loss, x, tau, labels=None, dtype=np.float64, params=True, rtol=None):
    xs = x.astype(dtype)
    v, g = reference(loss, xs.astype(np.float64), labels, tau)
    suffix = "f32" if dtype == np.float32 else "f64"
    tensors = {"input": save(f"{OUT}/{name}_x_{suffix}.npy", xs)}
    if labels is not None:
        tensors["target"] = save(f"{OUT}/{name}_t.npy", np.asarray(labels, dtype=np.int64))
    case = {
        "name": name,
        "config": {
            "loss": loss,
            "params": {"temperature": tau} if params else {},
            "reduction": "mean",
        },
        "tensors": tensors,
        "value": v,
        "grads": {"input": save(f"{OUT}/{name}_grad.npy", g)},
    }
    if rtol:
        case["rtol"] = rtol
    cases.append(case)


def make_goldens():
    os.makedirs(path(OUT), exist_ok=True)
    os.makedirs(os.path.dirname(path(CATALOGUE)), exist_ok=True)
    rng = np.random.default_rng(SEED)
    cases = []

    # ntxent
    x = embeddings(rng, 8, 5)
    add_case(cases, "ntxent_default_f32", "ntxent", x, 0.07, dtype=np.float32, params=False)
    add_case(cases, "ntxent_default_f64", "ntxent", x, 0.07, params=False)
    add_case(cases, "ntxent_tau05_f64", "ntxent", embeddings(rng, 12, 16), 0.5)
    add_case(cases, "ntxent_tau02_f32", "ntxent", embeddings(rng, 6, 3), 0.2, dtype=np.float32)
    add_case(cases, "ntxent_d32_f32", "ntxent", embeddings(rng, 16, 32), 0.07, dtype=np.float32)
    # one pair: the positive is the only other row, loss 0, gradient 0
    add_case(cases, "ntxent_one_pair_f64", "ntxent", embeddings(rng, 2, 4), 0.1)
    # a zero row: F.normalize's floor, z = 0 and d/dx = d/dz / eps
    xz = embeddings(rng, 8, 4)
    xz[3] = 0.0
    add_case(cases, "ntxent_zero_row_f64", "ntxent", xz, 0.1)
    # collapsed embeddings: every similarity 1, loss log(2N - 1)
    xc = np.tile(embeddings(rng, 1, 4), (6, 1))
    add_case(cases, "ntxent_collapsed_f64", "ntxent", xc, 0.07)
    # scale invariance far from 1, and D = 1
    add_case(cases, "ntxent_large_f64", "ntxent", embeddings(rng, 10, 6, 1e4), 0.07)
    add_case(cases, "ntxent_tiny_f64", "ntxent", embeddings(rng, 10, 6, 1e-5), 0.07)
    add_case(cases, "ntxent_d1_f64", "ntxent", embeddings(rng, 8, 1), 0.3)

    # supcon
    x = embeddings(rng, 10, 6)
    lab = rng.integers(0, 3, 10)
    add_case(cases, "supcon_default_f32", "supcon", x, 0.07, lab, np.float32, params=False)
    add_case(cases, "supcon_default_f64", "supcon", x, 0.07, lab, params=False)
    # singletons: anchors without a positive are left out of the mean but
    # stay negatives of the others
    lab = np.array([0, 1, 2, 0, 3, 4, 0, 5, 1, 6, 7, 8, 9, 1, 0, 10])
    add_case(cases, "supcon_singletons_tau03_f64", "supcon", embeddings(rng, 16, 8), 0.3, lab)
    add_case(cases, "supcon_tau05_f32", "supcon", embeddings(rng, 12, 5), 0.5,
             rng.integers(0, 4, 12), np.float32)
    # every label distinct: no anchor has a positive, value 0, gradient 0
    add_case(cases, "supcon_no_positive_f64", "supcon", embeddings(rng, 6, 4), 0.07,
             np.arange(6))
    # one row: no positive
    add_case(cases, "supcon_one_row_f64", "supcon", embeddings(rng, 1, 4), 0.07, np.array([3]))
    # labels are any integers: negative and large values
    lab = np.array([-5, 10**12, -5, 7, 10**12, 7, -5, 0])
    add_case(cases, "supcon_any_labels_f64", "supcon", embeddings(rng, 8, 3), 0.2, lab)
    # a single class: every other row is a positive
    add_case(cases, "supcon_one_class_f64", "supcon", embeddings(rng, 8, 4), 0.1, np.zeros(8))
    # labels i mod N: supcon is ntxent (checked here against ntxent's form)
    xv = embeddings(rng, 10, 7)
    lab = np.arange(10) % 5
    add_case(cases, "supcon_as_ntxent_f64", "supcon", xv, 0.07, lab)
    v_nt, g_nt = reference("ntxent", xv, None, 0.07)
    assert abs(cases[-1]["value"] - v_nt) <= 1e-12 * abs(v_nt)
    assert np.abs(np.load(path(cases[-1]["grads"]["input"])) - g_nt).max() <= 1e-12
    add_case(cases, "supcon_d32_f32", "supcon", embeddings(rng, 20, 32), 0.07,
             rng.integers(0, 5, 20), np.float32)
    # a zero row among labelled ones
    xz = embeddings(rng, 8, 4)
    xz[5] = 0.0
    add_case(cases, "supcon_zero_row_f64", "supcon", xz, 0.1, np.array([0, 1, 0, 1, 2, 2, 0, 1]))

    write_json(CATALOGUE, cases)
    print(f"{len(cases)} cases -> {CATALOGUE}")


# ---------------------------------------------------------------------------
# --random SEED: losskit run against the references on fresh data


def rel_err(a, b):
    """max |a - b| / max(|b|, 1e-4): relative, except that elements below
    1e-4 are held to 1e-9 absolute (1e-5 of 1e-4), the criterion of
    tests/test_catalogue.c (1e-5 relative with a 1e-9 floor). For D = 1 the
    true gradient is 0; losskit gives exactly 0, autograd rounding noise of
    about 1e-14 / |x|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-4), initial=0.0))


def run_random(seed):
    if seed == SEED:
        sys.exit("--random: pick a seed other than the committed one")
    exe = path("build/host/losskit")
    rng = np.random.default_rng([seed, 0xC0])
    worst = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(6):
            for loss in ("ntxent", "supcon"):
                m = int(rng.integers(1, 24)) * 2 if loss == "ntxent" else int(rng.integers(2, 40))
                d = int(rng.integers(1, 40))
                tau = float(np.exp(rng.uniform(np.log(0.02), np.log(2.0))))
                scale = float(10.0 ** rng.uniform(-3, 3))
                x = rng.normal(0.0, scale, (m, d))
                labels = rng.integers(0, max(1, m // 3), m) if loss == "supcon" else None
                for dtype in (np.float32, np.float64):
                    xs = x.astype(dtype)
                    v, g = reference(loss, xs.astype(np.float64), labels, tau, check=trial < 2)
                    arrays = {"input": xs}
                    if labels is not None:
                        arrays["target"] = labels.astype(np.int64)
                    try:
                        res, got_grads, _ = run_losskit(
                            exe, tmp, {"loss": loss, "params": {"temperature": tau}}, arrays)
                    except LosskitError as err:
                        print(f"{loss}: losskit run failed: {err.stderr.strip()}")
                        ok = False
                        continue
                    got = res["value"]
                    ev = abs(got - v) / max(abs(v), 1e-12)
                    eg = rel_err(got_grads["input"], g)
                    w = worst.setdefault(loss, [0.0, 0.0, ""])
                    if ev > w[0]:
                        w[0] = ev
                    if eg > w[1]:
                        w[1] = eg
                        w[2] = f"({m},{d}) {np.dtype(dtype).name} tau={tau:.3g} scale={scale:.2g}"
                    if ev > 1e-6 or eg > 1e-5:
                        ok = False
                        print(f"FAIL {loss} ({m},{d}) {np.dtype(dtype).name} tau={tau:.4g}: "
                              f"value {got!r} vs {v!r} (rel {ev:.1e}), grad rel {eg:.1e}")
    for loss, (ev, eg, where) in sorted(worst.items()):
        print(f"{loss}: max value rel err {ev:.2e}, max grad rel err {eg:.2e} (worst {where})")
    return 0 if ok else 1


def main():
    a = options(__doc__, "compare losskit run with the references on new random data",
                losskit=False).parse_args()
    if a.random is not None:
        sys.exit(run_random(a.random))
    make_goldens()


if __name__ == "__main__":
    main()
