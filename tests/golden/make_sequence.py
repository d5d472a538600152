#!/usr/bin/python3
"""Golden data for the sequence family (ctc), computed by PyTorch (1.13).

Run from anywhere with a Python that has torch and numpy:

    /usr/bin/python3 tests/golden/make_sequence.py              # write the goldens
    /usr/bin/python3 tests/golden/make_sequence.py --random 7   # compare on new data

Without arguments it writes, deterministically (fixed seed, fixed order),
the inputs of every case under tests/golden/sequence/ (float32 and float64
log-probabilities, int64 or int32 targets and lengths), the references and
the list of cases, tests/golden/catalogue/sequence.json, which
tests/test_catalogue.c runs.

References. The value and the output of reduction none are
torch.nn.functional.ctc_loss in float64 on the stored values (float32 ones
upcast). The gradient is the true derivative of the loss with respect to the
log-probabilities, which is what losskit returns; torch's autograd for
ctc_loss returns that plus exp(input) on each sample's frames (times the
sample's upstream gradient), a term that vanishes once it passes through a
log_softmax. So the script computes the reference gradient by autograd
through a plain-torch forward (alpha) recursion of the same loss, checks
that its value equals F.ctc_loss, and checks the claim on every case:
  - torch's gradient minus the reference equals the exp(input) term, and
  - with logits z and input = log_softmax(z), the gradients with respect to
    z through torch's ctc_loss and through the reference agree.
It stops if any of these differ by more than 1e-9 (relative, floor 1e-12).

With --random SEED it draws new shapes, lengths, parameters, dtypes and
data from that seed (not the committed one), runs `losskit run` on them in a
temporary folder (--tensor NAME=FILE for every slot), compares with the
references and prints the largest relative errors of the value, the
gradient and the output of reduction none; it exits 1 beyond 1e-6 (value)
or 1e-5 (gradient, output), test_catalogue's tolerances. It also checks an
impossible alignment with zero_infinity false: +inf in the same outputs.
"""
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from goldlib import (LosskitError, Writer, load_tensors, max_rel, path, run_losskit, trials_main,
                     write_json)

OUT = "tests/golden/sequence"
CATALOGUE = "tests/golden/catalogue/sequence.json"
SEED = 20261231
REDUCTIONS = ("none", "mean", "sum")
NEG = -1e200  # stands for log 0 in the reference recursion: no NaN in autograd
SLOTS = ("input", "target", "input_lengths", "target_lengths")


# ---------------------------------------------------------------------------
# The reference


def reference_nll(lp, target, il, tl, blank):
    """Per-sample negative log-likelihoods by the alpha recursion in plain
    torch ops, differentiable with respect to lp (T, N, C)."""
    out = []
    for n in range(lp.shape[1]):
        T, L = int(il[n]), int(tl[n])
        ext = [blank]
        for s in range(L):
            ext += [int(target[n, s]), blank]
        ext_t = torch.tensor(ext)
        skip = torch.tensor([s >= 2 and ext[s] != ext[s - 2] for s in range(len(ext))])
        neg = torch.full((len(ext),), NEG, dtype=lp.dtype)
        alpha = neg.clone()
        alpha = torch.where(torch.arange(len(ext)) < min(2, len(ext)), lp[0, n, ext_t], alpha)
        for t in range(1, T):
            a2 = torch.cat([neg[:1], alpha[:-1]])
            a3 = torch.cat([neg[:2], alpha[:-2]])[: len(ext)]
            a3 = torch.where(skip, a3, neg)
            alpha = torch.logsumexp(torch.stack([alpha, a2, a3]), 0) + lp[t, n, ext_t]
        out.append(-torch.logsumexp(alpha[-2:] if L > 0 else alpha[-1:], 0))
    return torch.stack(out) if out else lp.new_zeros(0)


def weights(tl, red, n):
    """d value / d loss_n for each sample."""
    if red == "mean":
        return np.array([1.0 / (n * max(int(l), 1)) for l in tl])
    return np.ones(n)


def torch_eval(params, red, arrays):
    """value (None for none), out (none only) and the reference gradient."""
    blank = int(params.get("blank", 0))
    zi = bool(params.get("zero_infinity", False))
    lp = torch.tensor(arrays["input"], dtype=torch.float64, requires_grad=True)
    tg = torch.tensor(arrays["target"].astype(np.int64))
    il = torch.tensor(arrays["input_lengths"].astype(np.int64))
    tl = torch.tensor(arrays["target_lengths"].astype(np.int64))
    N = lp.shape[1]
    res = F.ctc_loss(lp, tg, il, tl, blank=blank, reduction=red, zero_infinity=zi)
    value = None if red == "none" else float(res)
    out = res.detach().numpy() if red == "none" else None
    # torch's gradient, for the claim check
    torch_grad = torch.autograd.grad(res.sum(), lp)[0].numpy()
    # the reference
    lp2 = lp.detach().clone().requires_grad_(True)
    nll = reference_nll(lp2, tg, il, tl, blank)
    impossible = nll.detach().numpy() > 1e100
    torch_none = F.ctc_loss(lp.detach(), tg, il, tl, blank=blank, reduction="none",
                            zero_infinity=False).numpy()
    fin = ~impossible
    close(nll.detach().numpy()[fin], torch_none[fin], "reference value vs F.ctc_loss")
    assert np.all(np.isinf(torch_none[impossible])), "impossible alignments must give inf"
    w = torch.tensor(weights(tl, red, N))
    if fin.any():
        keep = torch.tensor(fin)
        ref_grad = torch.autograd.grad(
            (torch.where(keep, nll, torch.zeros_like(nll)) * w).sum(), lp2)[0].numpy()
    else:
        ref_grad = np.zeros_like(arrays["input"], dtype=np.float64)
    grad_ok = fin | zi
    if not grad_ok.all():  # torch: a NaN gradient for an infinite loss
        ref_grad = None
    else:
        claim_check(arrays, params, red, lp.detach(), torch_grad, ref_grad, fin, w.numpy())
    return value, out, ref_grad


def close(got, want, what, tol=1e-9, floor=1e-12):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    d = np.abs(got - want) / np.maximum(np.abs(want), floor)
    if d.size and not np.max(d) <= tol:
        raise SystemExit("%s: relative difference %.3g" % (what, np.max(d)))
    return float(np.max(d, initial=0.0))


def claim_check(arrays, params, red, lp, torch_grad, ref_grad, fin, w):
    """torch's gradient = reference + w_n exp(input) on each sample's frames
    (none where zero_infinity zeroed the sample); through a log_softmax both
    give one gradient with respect to the logits."""
    il = arrays["input_lengths"].astype(np.int64)
    T, N, C = lp.shape
    frames = (np.arange(T)[:, None] < il[None, :]).astype(np.float64)
    extra = np.exp(lp.numpy()) * (frames * w * fin)[:, :, None]
    CLAIM["exp"] = max(CLAIM["exp"], close(torch_grad - ref_grad, extra,
                                           "torch's gradient - reference vs exp(input)", 1e-8,
                                           1e-6))
    # through log_softmax: the input as logits z, both losses on
    # log_softmax(z) (which normalises a float32 input exactly)
    blank = int(params.get("blank", 0))
    zi = bool(params.get("zero_infinity", False))
    tg = torch.tensor(arrays["target"].astype(np.int64))
    il_t = torch.tensor(il)
    tl_t = torch.tensor(arrays["target_lengths"].astype(np.int64))
    z = lp.clone().requires_grad_(True)
    a = F.ctc_loss(F.log_softmax(z, 2), tg, il_t, tl_t, blank=blank, reduction=red,
                   zero_infinity=zi)
    gz_torch = torch.autograd.grad(a.sum(), z)[0]
    z2 = lp.clone().requires_grad_(True)
    nll = reference_nll(F.log_softmax(z2, 2), tg, il_t, tl_t, blank)
    keep = torch.tensor(fin)
    b = (torch.where(keep, nll, torch.zeros_like(nll)) * torch.tensor(w)).sum()
    gz_ref = torch.autograd.grad(b, z2)[0]
    CLAIM["softmax"] = max(CLAIM["softmax"],
                           close(gz_ref.numpy(), gz_torch.numpy(),
                                 "gradient through log_softmax: reference vs torch", 1e-8, 1e-6))


CLAIM = {"exp": 0.0, "softmax": 0.0}


# ---------------------------------------------------------------------------
# Data


def draw(rng, T, N, C, S, blank, il=None, tl=None, impossible=(), idtype=np.int64):
    """Log-softmaxed normal logits; lengths that allow an alignment (except
    the samples listed in impossible, which get too few frames)."""
    z = rng.normal(0.0, 1.5, (T, N, C))
    lp = z - z.max(2, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(2, keepdims=True))
    if il is None:
        il = np.array([T] + [int(rng.integers(max(1, T - 4), T + 1)) for _ in range(N - 1)])
    target = np.full((N, S), blank, dtype=np.int64)  # padding: the blank, never read
    lens = np.zeros(N, dtype=np.int64)
    others = [c for c in range(C) if c != blank]
    for n in range(N):
        want = int(rng.integers(0, S + 1)) if tl is None else int(tl[n])
        labels, frames = [], 0
        for s in range(want):
            l = int(rng.choice(others))
            if s > 0 and rng.uniform() < 0.3:
                l = labels[-1]  # a repeated label: a blank must separate them
            cost = 1 + (bool(labels) and labels[-1] == l)
            if frames + cost > il[n] and n not in impossible:
                break
            labels.append(l)
            frames += cost
        if n in impossible:
            # as many labels as fit in S, all the same: 2L - 1 frames needed
            labels = [others[0]] * S
            il[n] = max(1, min(il[n], 2 * S - 2))
        target[n, : len(labels)] = labels
        lens[n] = len(labels)
    return {"input": lp, "target": target.astype(idtype),
            "input_lengths": np.asarray(il).astype(idtype), "target_lengths": lens.astype(idtype)}


class CaseWriter(Writer):
    """A Writer that also keeps the catalogue's cases."""

    def case(self, name, params, red, tag, arrays, dtype):
        files = self.data(tag, {k: arrays[k] for k in SLOTS}, dtype)
        value, out, grad = torch_eval(params, red, load_tensors(files))
        if value is not None and not np.isfinite(value):
            raise ValueError(name + ": the reference value is not finite")
        if grad is None:
            raise ValueError(name + ": no finite reference gradient")
        entry = {
            "name": name,
            "config": {"loss": "ctc", "params": params, "reduction": red},
            "tensors": files,
            "value": value,
            "grads": {"input": self.save("%s/%s_grad_input.npy" % (OUT, name), grad)},
        }
        if red == "none":
            entry["out"] = self.save("%s/%s_out.npy" % (OUT, name), out)
        self.cases.append(entry)


def write_goldens():
    rng = np.random.default_rng(SEED)
    os.makedirs(path(OUT), exist_ok=True)
    for f in os.listdir(path(OUT)):
        if f.endswith(".npy"):
            os.remove(path(os.path.join(OUT, f)))
    w = CaseWriter(OUT)
    # every reduction and dtype; lengths vary, one sample has no label,
    # repeated labels occur
    base = draw(rng, 12, 4, 6, 5, 0, tl=[3, 0, 5, 2])
    for dt, dn in ((np.float32, "f32"), (np.float64, "f64")):
        for red in REDUCTIONS:
            w.case("ctc_%s_%s" % (red, dn), {}, red, "base", base, dt)
    # blank not 0
    b3 = draw(rng, 10, 3, 5, 4, 3)
    for red, dt, dn in (("mean", np.float64, "f64"), ("none", np.float32, "f32"),
                        ("sum", np.float64, "f64")):
        w.case("ctc_blank3_%s_%s" % (red, dn), {"blank": 3}, red, "blank3", b3, dt)
    # an impossible alignment (sample 1), zeroed by zero_infinity
    imp = draw(rng, 8, 3, 4, 4, 0, impossible=(1,))
    for red, dt, dn in (("none", np.float64, "f64"), ("mean", np.float64, "f64"),
                        ("sum", np.float32, "f32"), ("mean", np.float32, "f32")):
        w.case("ctc_zero_infinity_%s_%s" % (red, dn), {"zero_infinity": True}, red,
               "impossible", imp, dt)
    # zero_infinity on possible alignments changes nothing
    w.case("ctc_zero_infinity_possible_mean_f64", {"zero_infinity": True}, "mean", "base", base,
           np.float64)
    # every target empty: mean divides by max(0, 1) = 1
    empty = draw(rng, 5, 3, 3, 2, 0, tl=[0, 0, 0])
    for red in ("mean", "none"):
        w.case("ctc_empty_targets_%s_f64" % red, {}, red, "empty_targets", empty, np.float64)
    # labels repeated throughout, input lengths exactly what they need
    rep = draw(rng, 7, 2, 3, 4, 0, il=np.array([7, 7]), tl=[4, 3])
    rep["target"][0, :4] = [1, 1, 1, 1]  # needs 7 frames: exactly one alignment path family
    rep["target"][1, :3] = [2, 2, 1]
    w.case("ctc_repeats_sum_f64", {}, "sum", "repeats", rep, np.float64)
    w.case("ctc_repeats_none_f32", {}, "none", "repeats", rep, np.float32)
    # int32 targets and lengths, blank the last class
    i32 = draw(rng, 9, 3, 4, 3, 3, idtype=np.int32)
    w.case("ctc_int32_blank_last_mean_f64", {"blank": 3}, "mean", "int32", i32, np.float64)
    write_json(CATALOGUE, w.cases)
    print("%d cases; claim: torch's gradient - reference = exp(input) term (max rel diff "
          "%.2e); through log_softmax reference = torch (max rel diff %.2e)"
          % (len(w.cases), CLAIM["exp"], CLAIM["softmax"]))


# ---------------------------------------------------------------------------
# --random: new data through `losskit run`


def run_ctc(losskit, tmp, params, red, arrays):
    """run_losskit() on a ctc config and the four slots."""
    return run_losskit(losskit, tmp, {"loss": "ctc", "params": params, "reduction": red},
                       {k: arrays[k] for k in SLOTS}, out=red == "none")


def run_random(seed, trials, losskit, verbose):
    if seed == SEED:
        sys.exit("--random: %d is the committed seed; pick another" % SEED)
    rng = np.random.default_rng(seed)
    failed = False
    vmax = gmax = omax = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(trials):
            T, N = int(rng.integers(1, 16)), int(rng.integers(1, 7))
            C, S = int(rng.integers(2, 9)), int(rng.integers(0, 7))
            params = {}
            if rng.uniform() < 0.5:
                params["blank"] = int(rng.integers(0, C))
            if rng.uniform() < 0.5:
                params["zero_infinity"] = True
            imp = (int(rng.integers(0, N)),) if params.get("zero_infinity") and S > 1 and \
                rng.uniform() < 0.5 else ()
            idt = np.int32 if rng.uniform() < 0.3 else np.int64
            arrays = draw(rng, T, N, C, S, params.get("blank", 0), impossible=imp, idtype=idt)
            dtype = np.float32 if rng.uniform() < 0.5 else np.float64
            arrays["input"] = arrays["input"].astype(dtype)
            red = str(rng.choice(REDUCTIONS))
            desc = "T=%d N=%d C=%d S=%d %s %s %s" % (T, N, C, S, np.dtype(dtype).name, params, red)
            try:
                got, got_grads, got_out = run_ctc(losskit, tmp, params, red, arrays)
            except LosskitError as err:
                print("%s: losskit run failed: %s" % (desc, err.stderr.strip()))
                failed = True
                continue
            stored = {k: v for k, v in arrays.items()}
            value, out, grad = torch_eval(params, red, stored)
            if red == "none":
                e = max_rel(got_out, out, 1e-9)
                omax = max(omax, e)
            else:
                e = max_rel(got["value"], value, 1e-12)
                vmax = max(vmax, e)
            ge = max_rel(got_grads["input"], grad, 1e-9)
            gmax = max(gmax, ge)
            if verbose:
                print("  %s: value/out %.2e grad %.2e" % (desc, e, ge))
        # an impossible alignment without zero_infinity: +inf, as torch
        arrays = draw(rng, 6, 3, 4, 4, 0, impossible=(2,))
        try:
            got = run_ctc(losskit, tmp, {}, "none", arrays)[2]
        except LosskitError:
            got = None
        want = F.ctc_loss(torch.tensor(arrays["input"]), torch.tensor(arrays["target"]),
                          torch.tensor(arrays["input_lengths"]),
                          torch.tensor(arrays["target_lengths"]), reduction="none").numpy()
        inf_ok = got is not None and np.array_equal(np.isinf(got), np.isinf(want)) and \
            max_rel(got[~np.isinf(want)], want[~np.isinf(want)], 1e-9) <= 1e-5
        failed |= not inf_ok
    bad = vmax > 1e-6 or gmax > 1e-5 or omax > 1e-5
    failed |= bad
    print("%-18s value rel err %.2e  grad rel err %.2e  out rel err %.2e  (%d trials)%s"
          % ("ctc", vmax, gmax, omax, trials, "  FAIL" if bad else ""))
    print("impossible alignment, zero_infinity false: %s" % ("+inf as torch" if inf_ok
                                                             else "FAIL"))
    print("claim: torch's gradient - reference = exp(input) term (max rel diff %.2e); through "
          "log_softmax reference = torch (max rel diff %.2e)" % (CLAIM["exp"], CLAIM["softmax"]))
    return 1 if failed else 0


if __name__ == "__main__":
    trials_main(__doc__, write_goldens, run_random, 40, "random cases")
