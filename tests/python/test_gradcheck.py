"""torch.autograd.gradcheck in float64 through losskit.Loss: the gradient
that autograd sees (computed by the runtime in forward, scaled by
grad_output in backward) is the derivative of the value, for every
differentiable slot given, reduced and reduction none."""
import unittest

import torch

from _common import losskit

torch.manual_seed(0)
D = torch.float64


def _slots(loss_id):
    return [s["name"] for s in losskit.info(loss_id)["slots"]]


class Gradcheck(unittest.TestCase):
    def check(self, config, **tensors):
        loss = losskit.Loss(config)
        names = [k for k, t in tensors.items() if t.is_floating_point()
                 and k in loss._loss.differentiable]
        self.assertTrue(names)
        fixed = {k: t for k, t in tensors.items() if k not in names}
        leaves = [tensors[k].detach().clone().requires_grad_(True) for k in names]

        def f(*xs):
            return loss(**fixed, **dict(zip(names, xs)))
        self.assertTrue(torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5))

    def test_mse(self):
        x, t = torch.randn(3, 4, 5, dtype=D), torch.randn(3, 4, 5, dtype=D)
        for red in ("mean", "sum", "none"):
            self.check({"loss": "mse", "reduction": red}, input=x, target=t)
        # a slot the loss cannot differentiate is refused, not given a zero gradient
        loss = losskit.Loss({"loss": "mse"})
        with self.assertRaises(losskit.DataError) as cm:
            loss(x.clone().requires_grad_(True), t.clone().requires_grad_(True))
        self.assertIn("'target' requires grad", str(cm.exception))

    def test_focal(self):
        x = torch.randn(4, 50, dtype=D)
        t = (torch.rand(4, 50) < 0.4).to(D)
        self.check({"loss": "focal", "params": {"alpha": 0.25, "gamma": 2.0}}, input=x, target=t)
        self.check({"loss": "focal", "reduction": "none"}, input=x, target=t)

    def test_dice(self):
        x, t = torch.randn(2, 1, 6, 7, dtype=D), torch.rand(2, 1, 6, 7, dtype=D)
        self.check({"loss": "dice", "params": {"smooth": 1}}, input=x, target=t)
        x = torch.randn(2, 4, 5, 6, dtype=D)
        t = torch.randint(0, 4, (2, 5, 6))
        self.check({"loss": "dice", "params": {"mode": "multiclass"}}, input=x, target=t)

    def test_cross_entropy(self):
        x, t = torch.randn(6, 5, dtype=D), torch.randint(0, 5, (6,))
        t[2] = -100
        self.check({"loss": "cross_entropy", "params": {"weight": [1, 2, 0.5, 1, 3],
                                                        "label_smoothing": 0.1}}, input=x,
                   target=t)
        self.check({"loss": "cross_entropy", "reduction": "none"}, input=x, target=t.clamp(0))
        p = torch.softmax(torch.randn(6, 5, dtype=D), 1)
        self.check({"loss": "cross_entropy"}, input=x, target=p)

    def test_gaussian_nll(self):
        s = _slots("gaussian_nll")
        self.assertEqual(s[:3], ["input", "target", "var"])
        x, t = torch.randn(5, 3, dtype=D), torch.randn(5, 3, dtype=D)
        v = torch.rand(5, 3, dtype=D) + 0.5
        self.check({"loss": "gaussian_nll"}, input=x, target=t, var=v)

    def test_triplet_margin(self):
        s = _slots("triplet_margin")
        ts = {n: torch.randn(6, 8, dtype=D) for n in s}
        self.check({"loss": "triplet_margin"}, **ts)
        self.check({"loss": "triplet_margin", "reduction": "none"}, **ts)
        # the cosine distance, with swap: its own row code
        twd = {"loss": "triplet_margin_with_distance",
               "params": {"distance": "cosine", "swap": True, "margin": 0.5}}
        self.check(twd, **ts)
        self.check(dict(twd, reduction="none"), **ts)

    def test_lovasz(self):
        # continuous logits: no two errors tie, so the value is differentiable
        x = torch.randn(3, 4, 5, dtype=D)
        t = (torch.rand(3, 4, 5) < 0.4).to(D)
        self.check({"loss": "lovasz_hinge"}, input=x, target=t)
        t[1, 2] = 255
        self.check({"loss": "lovasz_hinge", "params": {"per_image": True, "ignore_index": 255}},
                   input=x, target=t)
        x = torch.randn(2, 4, 5, 6, dtype=D)
        t = torch.randint(0, 3, (2, 5, 6))
        self.check({"loss": "lovasz_softmax"}, input=x, target=t)
        t[0, 1] = -1
        self.check({"loss": "lovasz_softmax", "params": {"classes": "all", "per_image": True,
                                                         "ignore_index": -1}}, input=x, target=t)
        self.check({"loss": "lovasz_softmax", "params": {"class_list": [3, 1]}}, input=x,
                   target=t.clamp(0))


if __name__ == "__main__":
    unittest.main()
