"""Every built-in loss through losskit.Loss against the goldens the C suites
check (PyTorch's values and gradients, or the reference formulas): the
catalogue (tests/golden/catalogue/*.json) and the tutorial, torch and
multiclass cases. Value within the case's rtol (default 1e-6), every
gradient and per-position output within grad_rtol (default 1e-5) relative
with a 1e-9 absolute floor, as test_catalogue.c (for float32 gradients
3e-7 times the largest, as test_torch.c)."""
import glob
import json
import unittest

import numpy as np
import torch

from _common import losskit, src


def _cases():
    files = sorted(glob.glob(src("tests/golden/catalogue/*.json")))
    files += [src("tests/golden/golden.json"), src("tests/golden/torch/cases.json"),
              src("tests/golden/multiclass/cases.json")]
    for f in files:
        with open(f) as fh:
            for c in json.load(fh):
                yield f, c


def _close(got, want, rtol, atol=1e-9):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, "shape %s, expected %s" % (got.shape, want.shape)
    same_nan = np.isnan(got) == np.isnan(want)
    ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True) & same_nan
    if not ok.all():
        i = np.argwhere(~ok)[0]
        return False, "at %s: %r, expected %r" % (tuple(i), got[tuple(i)], want[tuple(i)])
    return True, ""


class Golden(unittest.TestCase):
    def test_every_case(self):
        seen, n = set(), 0
        for f, c in _cases():
            with self.subTest(case=c["name"]):
                self._one(c)
                n += 1
                cfg = c["config"]
                for t in cfg.get("terms", [cfg]):
                    seen.add(t["loss"])
        self.assertGreater(n, 200)
        builtin = {d["id"] for d in losskit.list()}
        self.assertEqual(builtin - seen, set(), "built-in losses without a golden case")

    def _one(self, c):
        loss = losskit.Loss(c["config"])
        tensors, leaves = {}, {}
        for name, rel in c["tensors"].items():
            a = np.load(src(rel))
            t = torch.from_numpy(a)
            if t.is_floating_point() and name in loss._loss.differentiable:
                t.requires_grad_(True)
                leaves[name] = t
            tensors[name] = t
        value = loss(**tensors)
        rtol, grtol = c.get("rtol", 1e-6), c.get("grad_rtol", 1e-5)
        if c.get("out"):
            ok, why = _close(value.detach().numpy(), np.load(src(c["out"])), grtol)
            self.assertTrue(ok, "out " + why)
            value.sum().backward()
        else:
            self.assertEqual(value.dim(), 0)
            if c["value"] is None:
                self.assertTrue(torch.isnan(value))
            else:
                ok, why = _close(value.item(), c["value"], rtol, 1e-12)
                self.assertTrue(ok, "value " + why)
            value.backward()
        grads = c.get("grads") or ({"input": c["grad"]} if c.get("grad") else {})
        for name, rel in grads.items():
            g = leaves[name].grad
            self.assertIsNotNone(g, name)
            self.assertEqual(g.dtype, leaves[name].dtype)
            want = np.load(src(rel))
            # float32, as test_torch.c: an element that cancels keeps only the
            # absolute precision of its terms (a floor of 3e-7 x the largest)
            atol = 1e-9 if g.dtype == torch.float64 else \
                max(1e-9, 3e-7 * float(np.abs(want).max(initial=0.0)))
            ok, why = _close(g.numpy(), want, grtol, atol)
            self.assertTrue(ok, "grad %s %s" % (name, why))


if __name__ == "__main__":
    unittest.main()
