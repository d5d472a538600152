"""losskit's Python API: configs as path, JSON and dict; no copy of the
input on the way in; dtypes; devices; errors as exceptions with the
runtime's one-line message; evaluate() on numpy; list() and info()."""
import json
import os
import tempfile
import unittest

import numpy as np
import torch

from _common import losskit, src


class Configs(unittest.TestCase):
    def test_path_json_dict_agree(self):
        x, t = torch.randn(4, 10, dtype=torch.float64), torch.rand(4, 10, dtype=torch.float64)
        a = losskit.Loss(src("configs/focal.json"))(x, t)
        with open(src("configs/focal.json")) as f:
            text = f.read()
        b = losskit.Loss(text)(x, t)
        c = losskit.Loss(json.loads(text))(x, t)
        self.assertEqual(a.item(), b.item())
        self.assertEqual(a.item(), c.item())
        self.assertEqual(losskit.Loss(json.loads(text)).name, "focal")
        self.assertIsInstance(losskit.Loss(text), torch.nn.Module)

    def test_dict_numbers_from_numpy_and_non_finite(self):
        # numpy scalars and arrays are numbers to a dict config (class
        # weights from np.bincount); NaN and infinities, which JSON cannot
        # spell, are named by their path
        import numpy as np
        x, t = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 2, 2, 2])
        w = np.bincount(t.numpy()).astype(np.float64)
        a = losskit.Loss({"loss": "cross_entropy", "params": {"weight": w}})(x, t)
        b = losskit.Loss({"loss": "cross_entropy", "params": {"weight": w.tolist()}})(x, t)
        self.assertEqual(a.item(), b.item())
        g = losskit.Loss({"loss": "focal", "params": {"gamma": np.float32(3.0)}})
        self.assertEqual(g(x[:, 0], x[:, 1].sigmoid()).item(),
                         losskit.Loss({"loss": "focal", "params": {"gamma": 3.0}})(
                             x[:, 0], x[:, 1].sigmoid()).item())
        for bad, where in (({"gamma": float("nan")}, "$.params.gamma: nan"),
                           ({"gamma": float("-inf")}, "$.params.gamma: -inf"),
                           ({"alpha": np.float64("inf")}, "$.params.alpha: inf")):
            with self.assertRaises(losskit.ConfigError) as cm:
                losskit.Loss({"loss": "focal", "params": bad})
            self.assertIn(where + " is not a finite number", str(cm.exception))

    def test_copy_and_pickle(self):
        # deepcopy (a teacher or EMA copy of a model holding the loss),
        # pickle and torch.save rebuild the loss from its config, a file's
        # text included
        import copy
        import io
        import pickle
        x, t = torch.randn(4, 10, dtype=torch.float64), torch.rand(4, 10, dtype=torch.float64)
        for config in (src("configs/focal.json"), {"loss": "dice", "params": {"smooth": 2}}):
            loss = losskit.Loss(config)
            want = loss(x, t).item()
            model = torch.nn.Sequential(torch.nn.Identity(), loss)
            buf = io.BytesIO()
            torch.save(model, buf)
            buf.seek(0)
            for other in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss)),
                          copy.deepcopy(model)[1], torch.load(buf)[1]):
                self.assertIsNot(other._loss, loss._loss)
                xx = x.clone().requires_grad_(True)
                v = other(xx, t)
                v.backward()
                self.assertEqual(v.item(), want)
                self.assertEqual(other.name, loss.name)
        with self.assertRaises(TypeError) as cm:
            copy.deepcopy(losskit.Loss({"loss": "mse"}, process_group=object()))
        self.assertIn("process_group", str(cm.exception))

    def test_threads_do_not_change_the_result(self):
        x, t = torch.randn(64, 1000), torch.rand(64, 1000)
        vals = []
        for th in (1, 2, 3):
            xx = x.clone().requires_grad_(True)
            v = losskit.Loss(src("configs/dice.json"), threads=th)(xx, t)
            v.backward()
            vals.append((v.item(), xx.grad.clone()))
        for v, g in vals[1:]:
            self.assertEqual(v, vals[0][0])
            self.assertTrue(torch.equal(g, vals[0][1]))


class NoCopy(unittest.TestCase):
    def test_data_pointer_is_the_tensors(self):
        for dt in (torch.float32, torch.float64):
            x = torch.randn(8, 3, 16, 16, dtype=dt, requires_grad=True)
            t = torch.rand(8, 3, 16, 16, dtype=dt)
            loss = losskit.Loss(src("configs/dice.json"))
            v = loss(x, t)
            self.assertEqual(loss.last_data_ptrs["input"], x.data_ptr())
            self.assertEqual(loss.last_data_ptrs["target"], t.data_ptr())
            self.assertEqual(v.dtype, dt)
            v.backward()
            self.assertEqual(x.grad.dtype, dt)

    def test_non_contiguous_is_made_contiguous(self):
        base = torch.randn(10, 20, dtype=torch.float64)
        x = base.t().requires_grad_(True)  # a view with strides (1, 20)
        t = torch.randn(20, 10, dtype=torch.float64)
        self.assertFalse(x.is_contiguous())
        loss = losskit.Loss({"loss": "mse"})
        v = loss(x, t)
        v.backward()
        self.assertAlmostEqual(v.item(), torch.nn.functional.mse_loss(x, t).item(), places=14)
        want = 2 * (x.detach() - t) / x.numel()
        self.assertTrue(torch.allclose(x.grad, want, rtol=1e-13, atol=0))
        self.assertNotEqual(loss.last_data_ptrs["input"], x.data_ptr())

    def test_grad_output_scales(self):
        x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
        t = torch.randn(5, 7, dtype=torch.float64)
        (3.5 * losskit.Loss({"loss": "mse", "reduction": "sum"})(x, t)).backward()
        self.assertTrue(torch.allclose(x.grad, 7 * (x.detach() - t), rtol=1e-13))
        # reduction none under a non-uniform upstream gradient
        x.grad = None
        w = torch.rand(5, 7, dtype=torch.float64)
        (losskit.Loss({"loss": "mse", "reduction": "none"})(x, t) * w).sum().backward()
        self.assertTrue(torch.allclose(x.grad, 2 * w * (x.detach() - t), rtol=1e-13))

    def test_non_uniform_upstream_when_dims_share_a_size(self):
        # reduction none drops a dim whose size another dim shares: the
        # per-position losses (4, 5) of cross_entropy on (4, 4, 5) are the
        # input without dim 0 or dim 1, of triplet_margin on (4, 4) without
        # either dim; the gradient must follow the dim the loss drops
        F = torch.nn.functional
        cases = [
            ({"loss": "cross_entropy", "reduction": "none"}, (4, 4, 5), (4, 5),
             lambda x, t: F.cross_entropy(x, t, reduction="none")),
            ({"loss": "cross_entropy", "reduction": "none"}, (4, 4), (4,),
             lambda x, t: F.cross_entropy(x, t, reduction="none")),
        ]
        for config, xs, ts, ref in cases:
            x = torch.randn(*xs, dtype=torch.float64)
            t = torch.randint(0, xs[1], ts)
            w = torch.rand(ts, dtype=torch.float64)
            a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            (losskit.Loss(config)(a, t) * w).sum().backward()
            (ref(b, t) * w).sum().backward()
            self.assertTrue(torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-15), (config, xs))
        a, p, n = torch.randn(3, 4, 4, dtype=torch.float64)
        w = torch.rand(4, dtype=torch.float64)
        a1, a2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
        tm = losskit.Loss({"loss": "triplet_margin", "reduction": "none"})
        (tm(anchor=a1, positive=p, negative=n) * w).sum().backward()
        (F.triplet_margin_loss(a2, p, n, reduction="none") * w).sum().backward()
        self.assertTrue(torch.allclose(a1.grad, a2.grad, rtol=1e-12, atol=1e-15))
        # (4, 5, 5): without dim 1 or dim 2 even on one row; refused, not guessed
        x = torch.randn(4, 5, 5, dtype=torch.float64, requires_grad=True)
        t = torch.randint(0, 5, (4, 5))
        v = losskit.Loss({"loss": "cross_entropy", "reduction": "none"})(x, t)
        with self.assertRaises(losskit.DataError) as cm:
            (v * torch.rand(4, 5, dtype=torch.float64)).sum().backward()
        self.assertIn("without more than one of its dims", str(cm.exception))
        # a constant upstream needs no dim
        x.grad = None
        (2.0 * losskit.Loss({"loss": "cross_entropy", "reduction": "none"})(x, t)).sum().backward()
        xr = x.detach().clone().requires_grad_(True)
        (2.0 * F.cross_entropy(xr, t, reduction="none")).sum().backward()
        self.assertTrue(torch.allclose(x.grad, xr.grad, rtol=1e-12, atol=1e-15))

    def test_second_derivatives_raise(self):
        # a gradient penalty through the loss (dL/dW1 differentiated again):
        # losskit's gradient is a constant to autograd, so taking it again
        # would drop the loss's second derivatives; it raises instead, on
        # the compiled path and on the ctypes one, below the size the ctypes
        # path hands to torch.dot (8) and above it (4096)
        import losskit._torch as lt
        paths = ("compiled", "ctypes") if lt._fast is not None else ("ctypes",)
        for path, n in [(p, n) for p in paths for n in (8, 4096)]:
            W1 = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
            W2 = torch.randn(3, dtype=torch.float64, requires_grad=True)
            x, zero = torch.randn(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
            loss = losskit.Loss({"loss": "mse"})
            if path == "ctypes":
                loss._fast = None
            v = loss((W1 * W2).sum(1) * x, zero)
            (g,) = torch.autograd.grad(v, W1, create_graph=True)
            with self.assertRaises((RuntimeError, losskit.DataError)) as cm:
                (g * g).sum().backward()
            self.assertIn("losskit gives first derivatives only", str(cm.exception))
            # the first derivative itself is torch's
            (want,) = torch.autograd.grad(
                torch.nn.functional.mse_loss((W1 * W2).sum(1) * x, zero), W1)
            self.assertTrue(torch.allclose(g.detach(), want, rtol=1e-12, atol=1e-15), (path, n))
            # without create_graph the hook leaves the gradient as it is
            W1.grad = None
            loss((W1 * W2).sum(1) * x, zero).backward()
            self.assertTrue(torch.allclose(W1.grad, want, rtol=1e-12, atol=1e-15), (path, n))

    def test_no_grad_requested(self):
        x, t = torch.randn(3, 4), torch.randn(3, 4)
        v = losskit.Loss({"loss": "mse"})(x, t)
        self.assertFalse(v.requires_grad)
        with torch.no_grad():
            v = losskit.Loss({"loss": "mse"})(x.requires_grad_(True), t)
        self.assertFalse(v.requires_grad)


class Errors(unittest.TestCase):
    def test_hierarchy(self):
        for e in (losskit.ConfigError, losskit.PluginError, losskit.DataError):
            self.assertTrue(issubclass(e, losskit.LosskitError))

    def test_config_errors(self):
        with self.assertRaises(losskit.ConfigError) as cm:
            losskit.Loss({"loss": "dcie"})
        self.assertIn("unknown loss 'dcie'", str(cm.exception))
        self.assertIn("dice", str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))
        with self.assertRaises(losskit.ConfigError) as cm:
            losskit.Loss('{"loss": "focal", "params": {"gama": 2}}')
        self.assertIn("gamma", str(cm.exception))
        with self.assertRaises(losskit.ConfigError) as cm:
            losskit.Loss("/nonexistent/x.json")
        self.assertIn("/nonexistent/x.json", str(cm.exception))

    def test_data_errors(self):
        loss = losskit.Loss({"loss": "mse"})
        with self.assertRaises(losskit.DataError) as cm:
            loss(torch.randn(3, 4), torch.randn(4, 3))
        self.assertIn("target", str(cm.exception))
        with self.assertRaises(losskit.ConfigError) as cm:  # bad usage, as the CLI's exit 2
            loss(torch.randn(3, 4), torch.randn(3, 4), nosuch=torch.randn(3, 4))
        self.assertIn("'nosuch' is not a tensor slot of mse", str(cm.exception))
        with self.assertRaises(losskit.ConfigError) as cm:
            loss(torch.randn(3, 4))
        self.assertIn("missing tensor 'target'", str(cm.exception))
        for bad in (0, 1025, 2.5, "2", True):
            with self.assertRaises(ValueError, msg=repr(bad)) as cm:
                losskit.Loss({"loss": "mse"}, threads=bad)
            self.assertIn("threads must be an integer in [1, 1024]", str(cm.exception))
        with self.assertRaises(losskit.DataError) as cm:
            loss(torch.randn(3, 4, dtype=torch.float16), torch.randn(3, 4))
        self.assertIn("float16", str(cm.exception))

    def test_device(self):
        # no GPU here: a meta tensor stands for any tensor not on the CPU
        x = torch.empty(3, 4, device="meta")
        with self.assertRaises(losskit.DataError) as cm:
            losskit.Loss({"loss": "mse"})(x, x)
        self.assertIn("losskit runs on the CPU", str(cm.exception))
        if torch.cuda.is_available():
            y = torch.randn(3, 4, device="cuda")
            with self.assertRaises(losskit.DataError) as cm:
                losskit.Loss({"loss": "mse"})(y, y)
            self.assertIn("cuda", str(cm.exception))

    def test_sparse(self):
        x = torch.randn(3, 4).to_sparse()
        with self.assertRaises(losskit.DataError) as cm:
            losskit.Loss({"loss": "mse"})(x, torch.randn(3, 4))
        self.assertIn("sparse_coo tensor; losskit reads dense tensors", str(cm.exception))

    def test_plugin_error(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "broken.so")
            with open(bad, "wb") as f:
                f.write(b"not an ELF file")
            os.chmod(d, 0o755)
            os.chmod(bad, 0o644)
            with self.assertRaises(losskit.PluginError) as cm:
                losskit.Loss({"loss": "nosuchloss"}, plugin_path=bad)
            self.assertIn("broken.so", str(cm.exception))


class Numpy(unittest.TestCase):
    def test_evaluate(self):
        x = np.random.default_rng(1).normal(size=(4, 6))
        t = np.random.default_rng(2).normal(size=(4, 6))
        v, g = losskit.evaluate({"loss": "mse", "reduction": "sum"}, input=x, target=t)
        self.assertAlmostEqual(v, float(((x - t) ** 2).sum()), places=12)
        self.assertEqual(set(g), {"input"})
        np.testing.assert_allclose(g["input"], 2 * (x - t), rtol=1e-14)
        v, g = losskit.evaluate(src("configs/mse.json"), input=x.astype(np.float32),
                                target=t.astype(np.float32))
        self.assertIsInstance(v, float)
        self.assertEqual(g["input"].dtype, np.float32)
        out, g = losskit.evaluate({"loss": "l1", "reduction": "none"}, input=x, target=t)
        np.testing.assert_allclose(out, np.abs(x - t), rtol=1e-15)

    def test_list_and_info(self):
        ids = [d["id"] for d in losskit.list()]
        for i in ("mse", "dice", "cross_entropy", "ntxent", "ssim"):
            self.assertIn(i, ids)
        d = losskit.info("dice")
        self.assertEqual([s["name"] for s in d["slots"]], ["input", "target"])
        params = {p["name"]: p for p in d["params"]}
        self.assertEqual(params["smooth"]["default"], 1.0)
        self.assertNotIn("unset", params["smooth"])
        # a parameter without a default says what leaving it out means
        self.assertIsNone(params["smooth_dr"]["default"])
        self.assertEqual(params["smooth_dr"]["unset"], "smooth's value")
        self.assertEqual(params["classes"]["unset"], "every class")
        self.assertEqual(d["reductions"], ["mean"])
        self.assertTrue(d["plugin_file"].endswith(".so"))
        self.assertTrue(losskit.info("ntxent")["whole"])
        # the numbers of dimensions a slot takes, None where any
        self.assertEqual(losskit.info("ntxent")["slots"][0]["ndims"], [2])
        self.assertEqual(losskit.info("multilabel_margin")["slots"][0]["ndims"], [0, 1, 2])
        self.assertEqual(losskit.info("triplet_margin")["slots"][0]["ndims"], list(range(1, 17)))
        self.assertIsNone(d["slots"][0]["ndims"])
        with self.assertRaises(losskit.DataError) as cm:
            losskit.evaluate({"loss": "multi_margin"}, input=np.zeros((2, 3, 4)),
                             target=np.zeros(2, dtype=np.int64))
        self.assertIn("has 3 dimensions, expected 1 or 2", str(cm.exception))
        with self.assertRaises(losskit.ConfigError) as cm:
            losskit.info("dcie")
        self.assertIn("dice", str(cm.exception))


if __name__ == "__main__":
    unittest.main()


class Bindings(unittest.TestCase):
    """A config whose terms bind slots to other tensor names (deep
    supervision): the tensors are passed and the gradients returned by
    those names."""

    CONFIG = {"terms": [{"loss": "dice", "weight": 1.0, "params": {"smooth": 1}},
                        {"loss": "dice", "weight": 0.5, "params": {"smooth": 1},
                         "tensors": {"input": "logits_x2", "target": "mask_x2"}}],
              "reduction": "mean"}

    def data(self):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(2, 1, 8, 8))
        t = (rng.random((2, 1, 8, 8)) > 0.5).astype(np.float64)
        x2 = rng.normal(size=(2, 1, 4, 4))
        t2 = (rng.random((2, 1, 4, 4)) > 0.5).astype(np.float64)
        return x, t, x2, t2

    def test_numpy_by_tensor_name(self):
        x, t, x2, t2 = self.data()
        dice = {"loss": "dice", "params": {"smooth": 1}}
        v1, g1 = losskit.evaluate(dice, input=x, target=t)
        v2, g2 = losskit.evaluate(dice, input=x2, target=t2)
        v, g = losskit.evaluate(self.CONFIG, input=x, target=t, logits_x2=x2, mask_x2=t2)
        self.assertEqual(v, v1 + 0.5 * v2)
        self.assertEqual(set(g), {"input", "logits_x2"})
        np.testing.assert_array_equal(g["input"], g1["input"])
        np.testing.assert_allclose(g["logits_x2"], 0.5 * g2["input"], rtol=1e-15)
        # a missing or unknown tensor is bad usage (the CLI's exit code 2)
        with self.assertRaises(losskit.ConfigError) as cm:
            losskit.evaluate(self.CONFIG, input=x, target=t, logits_x2=x2)
        self.assertIn("missing tensor 'mask_x2' for slot 'target'", str(cm.exception))
        with self.assertRaises(losskit.ConfigError) as cm:
            losskit.evaluate(self.CONFIG, input=x, target=t, logits_x2=x2, mask_x2=t2,
                             logits_x4=x2)
        self.assertIn("'logits_x4' is not a tensor slot", str(cm.exception))

    def test_torch_autograd_to_every_head(self):
        x, t, x2, t2 = (torch.from_numpy(a) for a in self.data())
        loss = losskit.Loss(self.CONFIG)
        self.assertEqual(loss.slots, ["input", "target", "logits_x2", "mask_x2"])
        xa = x.clone().requires_grad_(True)
        x2a = x2.clone().requires_grad_(True)
        value = loss(xa, t, logits_x2=x2a, mask_x2=t2)
        value.backward()
        # the same sum of two dice losses in plain torch ops
        xb = x.clone().requires_grad_(True)
        x2b = x2.clone().requires_grad_(True)

        def dice(z, y):
            p = torch.sigmoid(z)
            return 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        ref = dice(xb, t) + 0.5 * dice(x2b, t2)
        ref.backward()
        self.assertAlmostEqual(float(value), float(ref), places=13)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(x2a.grad, x2b.grad, rtol=1e-12, atol=1e-15)

    def test_shared_tensor_accumulates(self):
        x, t, _, _ = (torch.from_numpy(a) for a in self.data())
        aux = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).reshape(x.shape)
        loss = losskit.Loss({"terms": [{"loss": "mse", "weight": 2},
                                       {"loss": "l1", "weight": 0.5,
                                        "tensors": {"target": "aux"}}],
                             "reduction": "sum"})
        xa = x.clone().requires_grad_(True)
        loss(xa, t, aux=aux).backward()
        xb = x.clone().requires_grad_(True)
        (2 * ((xb - t) ** 2).sum() + 0.5 * (xb - aux).abs().sum()).backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-14, atol=0)


class Messages(unittest.TestCase):
    """A refused call names the element and the bound it breaks."""

    def test_ctc_label_outside_the_classes(self):
        lp = np.log(np.full((5, 1, 4), 0.25))
        with self.assertRaises(Exception) as cm:
            losskit.evaluate({"loss": "ctc"}, input=lp, target=np.array([[1, 4]], np.int64),
                             input_lengths=np.array([5], np.int64),
                             target_lengths=np.array([2], np.int64))
        self.assertIn("sample 0: target[1] = 4 is not a class id in [0, C = 4)", str(cm.exception))


class EmptyBatches(unittest.TestCase):
    """A mean over nothing is 0 and its gradient 0, never torch's NaN
    (docs/design.md): an empty batch, or every target ignored."""

    def test_ctc_zero_samples(self):
        lp = np.zeros((5, 0, 4))
        z = np.zeros(0, np.int64)
        for red in ("mean", "sum"):
            v, g = losskit.evaluate({"loss": "ctc", "reduction": red}, input=lp,
                                    target=np.zeros((0, 2), np.int64), input_lengths=z,
                                    target_lengths=z)
            self.assertEqual(v, 0.0, red)
            self.assertEqual(g["input"].shape, (5, 0, 4))

    def test_every_target_ignored(self):
        x = np.random.default_rng(3).normal(size=(2, 3, 4, 4))
        y = np.full((2, 4, 4), -100, np.int64)
        # dice at smooth 0 scores 0 / max(0, eps) = 0 per class: loss 1
        for cfg, want in (({"loss": "nll"}, 0.0), ({"loss": "cross_entropy"}, 0.0),
                          ({"loss": "cross_entropy", "params": {"label_smoothing": 0.1}}, 0.0),
                          ({"loss": "dice", "params": {"mode": "multiclass", "smooth": 0}}, 1.0),
                          ({"loss": "dice", "params": {"mode": "multiclass"}}, 0.0)):
            v, g = losskit.evaluate(cfg, input=x, target=y)
            self.assertEqual(v, want, cfg)
            np.testing.assert_array_equal(g["input"], np.zeros_like(x), str(cfg))

    def test_classes_weighing_zero(self):
        x = np.random.default_rng(4).normal(size=(3, 4))
        y = np.array([0, 0, -100])
        for loss in ("nll", "cross_entropy"):
            v, g = losskit.evaluate({"loss": loss, "params": {"weight": [0, 1, 1, 1]}},
                                    input=x, target=y)
            self.assertEqual(v, 0.0, loss)
            np.testing.assert_array_equal(g["input"], np.zeros_like(x), loss)

    def test_empty_batch_every_mean(self):
        for cfg, shape in (({"loss": "mse"}, (0, 3)), ({"loss": "dice_bce"}, (0, 1, 4, 4)),
                           ({"loss": "focal_mean_bce"}, (0, 2)),
                           ({"loss": "ntxent"}, (0, 4)),
                           ({"loss": "multilabel_soft_margin"}, (0, 3))):
            x = np.zeros(shape)
            kw = {"input": x} if cfg["loss"] == "ntxent" else {"input": x, "target": x}
            v, g = losskit.evaluate(cfg, **kw)
            self.assertEqual(v, 0.0, cfg)


class NamesAsDict(unittest.TestCase):
    """Tensor names that are no Python keyword argument, in a dict."""

    CONFIG = {"terms": [{"loss": "mse", "tensors": {"input": "threads", "target": "2x"}}],
              "reduction": "sum"}

    def test_numpy(self):
        a, b = np.arange(6.0), np.ones(6)
        v, g = losskit.evaluate(self.CONFIG, {"threads": a, "2x": b})
        self.assertEqual(v, float(((a - b) ** 2).sum()))
        np.testing.assert_array_equal(g["threads"], 2 * (a - b))
        with self.assertRaises(TypeError):
            losskit.evaluate({"loss": "mse"}, {"input": a}, input=a)
        # the old keyword form still works
        v2, _ = losskit.evaluate({"loss": "mse", "reduction": "sum"}, input=a, target=b)
        self.assertEqual(v2, v)

    def test_torch(self):
        loss = losskit.Loss(self.CONFIG)
        a = torch.arange(6.0, dtype=torch.float64, requires_grad=True)
        b = torch.ones(6, dtype=torch.float64)
        loss({"threads": a, "2x": b}).backward()
        torch.testing.assert_close(a.grad, 2 * (a.detach() - b))
        with self.assertRaises(TypeError):
            loss({"threads": a}, b)
