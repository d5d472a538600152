"""losskit.Loss's per-call path: the ctypes arguments cached per call
signature (only the data pointers change), the gradient pool (a large
gradient's buffer is reused only once no tensor references it), and the
behaviours either must keep: a live gradient never overwritten, fresh data
pointers every call, errors as before, retain_graph, threads."""
import gc
import os
import subprocess
import sys
import threading
import unittest

import torch

from _common import BUILD_ROOT, losskit

from losskit import _torch as losskit_torch  # noqa: E402

FAST = losskit_torch._fast  # the compiled per-call path, None without it

N = 1 << 19  # float32: 2 MB, above the pool's 1 MB threshold


def mse_sum_grad(x, t):
    return 2 * (x.detach() - t)


class GradPool(unittest.TestCase):
    def setUp(self):
        self.pool = losskit.grad_pool
        self.saved_limit = self.pool.limit_mb
        self.pool.limit_mb = 512
        self.pool.clear()
        self.loss = losskit.Loss({"loss": "mse", "reduction": "sum"})
        g = torch.Generator().manual_seed(7)
        self.t = torch.randn(N, generator=g)
        self.g = g

    def tearDown(self):
        self.pool.limit_mb = self.saved_limit
        self.pool.clear()

    def x(self):
        return torch.randn(N, generator=self.g).requires_grad_(True)

    def test_live_gradient_is_never_reused(self):
        x1 = self.x()
        self.loss(x1, self.t).backward()
        keep = x1.grad.clone()
        torch.testing.assert_close(x1.grad, mse_sum_grad(x1, self.t), rtol=0, atol=0)
        # x1.grad is alive: every later gradient needs another buffer, and
        # x1.grad's values must survive them
        others = []
        for _ in range(3):
            x2 = self.x()
            self.loss(x2, self.t).backward()
            self.assertNotEqual(x2.grad.data_ptr(), x1.grad.data_ptr())
            torch.testing.assert_close(x2.grad, mse_sum_grad(x2, self.t), rtol=0, atol=0)
            others.append(x2)
        self.assertTrue(torch.equal(x1.grad, keep))
        ptrs = {x.grad.data_ptr() for x in others + [x1]}
        self.assertEqual(len(ptrs), 4)

    def test_views_and_numpy_keep_the_buffer(self):
        x1 = self.x()
        self.loss(x1, self.t).backward()
        ptr = x1.grad.data_ptr()
        view = x1.grad[: N // 2]        # a view of the storage
        arr = x1.grad[N // 2:].numpy()  # a numpy array over it
        keep_v, keep_a = view.clone(), arr.copy()
        del x1
        gc.collect()
        for _ in range(2):
            x2 = self.x()
            self.loss(x2, self.t).backward()
            self.assertNotEqual(x2.grad.data_ptr(), ptr)
        self.assertTrue(torch.equal(view, keep_v))
        self.assertTrue((arr == keep_a).all())

    def test_dead_gradient_is_reused(self):
        x1 = self.x()
        self.loss(x1, self.t).backward()
        ptr = x1.grad.data_ptr()
        hits = self.pool.hits
        del x1
        x2 = self.x()
        self.loss(x2, self.t).backward()
        self.assertEqual(x2.grad.data_ptr(), ptr)
        self.assertEqual(self.pool.hits, hits + 1)
        torch.testing.assert_close(x2.grad, mse_sum_grad(x2, self.t), rtol=0, atol=0)

    def test_non_leaf_gradient_flows_on(self):
        # the gradient of a model's output reaches the parameters, then dies
        w = torch.ones(N, requires_grad=True)
        seen = []
        for k in range(3):
            x = (w * (k + 1)).detach().requires_grad_(True)
            out = x * 2.0
            self.loss(out, self.t).backward()
            torch.testing.assert_close(x.grad, 2 * mse_sum_grad(out, self.t), rtol=0, atol=0)
            seen.append(x.grad)
        self.assertEqual(len({g.data_ptr() for g in seen}), 3)

    def test_disabled_and_capped(self):
        self.pool.limit_mb = 0
        misses, hits = self.pool.misses, self.pool.hits
        x1 = self.x()
        self.loss(x1, self.t).backward()
        self.assertEqual((self.pool.misses, self.pool.hits), (misses, hits))
        self.assertEqual(self.pool.held_bytes, 0)
        torch.testing.assert_close(x1.grad, mse_sum_grad(x1, self.t), rtol=0, atol=0)
        # room for one buffer: the second live gradient is allocated outside
        self.pool.limit_mb = 3
        xs = [self.x() for _ in range(3)]
        for x in xs:
            self.loss(x, self.t).backward()
        self.assertLessEqual(self.pool.held_bytes, 3 << 20)
        self.assertEqual(len({x.grad.data_ptr() for x in xs}), 3)
        for x in xs:
            torch.testing.assert_close(x.grad, mse_sum_grad(x, self.t), rtol=0, atol=0)

    def test_threads(self):
        errors = []

        def work(seed):
            g = torch.Generator().manual_seed(seed)
            kept = []
            try:
                for _ in range(6):
                    x = torch.randn(N, generator=g).requires_grad_(True)
                    self.loss(x, self.t).backward()
                    kept.append((x, x.grad.clone()))
                    if len(kept) > 2:
                        kept.pop(0)
                    for xk, gk in kept:
                        if not torch.equal(xk.grad, gk) or \
                                not torch.equal(gk, mse_sum_grad(xk, self.t)):
                            errors.append("thread %d: a live gradient changed" % seed)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])

    def test_large_gradients_start_on_64_bytes(self):
        # the runtime streams a large gradient only from a vector boundary
        # (docs/performance.md); numpy alone aligns to 16 bytes. Pooled
        # (new and reused) and, with the pool off, numpy's fallback from
        # 1M elements, in both float dtypes
        big = 1 << 20
        for dtype in (torch.float32, torch.float64):
            t = torch.randn(big, generator=self.g, dtype=dtype)
            for limit in (512, 512, 0):
                self.pool.limit_mb = limit
                x = torch.randn(big, generator=self.g, dtype=dtype).requires_grad_(True)
                self.loss(x, t).backward()
                self.assertEqual(x.grad.data_ptr() % 64, 0, (dtype, limit))
                torch.testing.assert_close(x.grad, mse_sum_grad(x, t), rtol=0, atol=0)
                del x
        self.assertGreater(self.pool.hits, 0)

    def test_env_variable(self):
        code = ("import sys; sys.path.insert(0, %r); import losskit; "
                "print(losskit.grad_pool.limit_mb)" % os.path.join(BUILD_ROOT, "python"))
        for value, want in (("0", "0.0"), ("64", "64.0")):
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=dict(os.environ, LOSSKIT_GRAD_POOL_MB=value))
            self.assertEqual(r.stdout.strip(), want, r.stderr)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(os.environ, LOSSKIT_GRAD_POOL_MB="lots"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LOSSKIT_GRAD_POOL_MB", r.stderr)


class CachedCall(unittest.TestCase):
    def test_pointers_and_values_follow_each_call(self):
        loss = losskit.Loss({"loss": "l1"})
        for k in range(3):
            x = torch.randn(4, 16, requires_grad=True)
            t = torch.randn(4, 16)
            v = loss(x, t)
            self.assertEqual(loss.last_data_ptrs, {"input": x.data_ptr(), "target": t.data_ptr()})
            ref = torch.nn.functional.l1_loss(x.double(), t.double()).item()
            self.assertAlmostEqual(v.item(), ref, delta=1e-6 * ref)
            v.backward()
            torch.testing.assert_close(x.grad, torch.sign(x.detach() - t) / x.numel())
        # another shape, another dtype: their own arguments
        x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
        t = torch.randn(3, 5, dtype=torch.float64)
        v = loss(x, t)
        self.assertEqual(v.dtype, torch.float64)
        self.assertAlmostEqual(v.item(), torch.nn.functional.l1_loss(x, t).item(), places=14)

    def test_errors_after_a_cached_call(self):
        loss = losskit.Loss({"loss": "cross_entropy"})
        x = torch.randn(4, 3, requires_grad=True)
        loss(x, torch.tensor([0, 1, 2, 1]))
        with self.assertRaises(losskit.DataError) as cm:
            # the same signature, a class out of range: refused when planning, before any kernel
            loss(x, torch.tensor([0, 1, 5, 2]))
        self.assertEqual(str(cm.exception), "loss 'cross_entropy': target[2] "
                         "(position 2) is 5: not a class in [0, 3) and not ignore_index (-100)")
        loss(x, torch.tensor([2, 1, 0, 1])).backward()  # the loss still works
        self.assertEqual(x.grad.shape, x.shape)

    def test_errors_chain_no_internal_exception(self):
        # a refused call raises the one error, with no exception of the
        # per-call path's own attached (__context__) to confuse a traceback
        loss = losskit.Loss({"loss": "mse"})
        x = torch.randn(4, requires_grad=True)
        for args, err in (((x, [0.0] * 4), TypeError),
                          ((x, torch.zeros(4, dtype=torch.float16)), losskit.DataError),
                          ((x, torch.randn(5)), losskit.DataError)):
            for _ in range(2):  # a new signature, then a cached one where there is
                with self.assertRaises(err) as cm:
                    loss(*args)
                self.assertIsNone(cm.exception.__context__, repr(cm.exception))

    def test_upstream_scale_and_retain_graph(self):
        loss = losskit.Loss({"loss": "mse", "reduction": "sum"})
        x = torch.randn(6, dtype=torch.float64, requires_grad=True)
        t = torch.randn(6, dtype=torch.float64)
        v = loss(x, t)
        v.backward(retain_graph=True)
        v.backward(torch.tensor(0.5, dtype=torch.float64))
        torch.testing.assert_close(x.grad, 1.5 * 2 * (x.detach() - t), rtol=1e-14, atol=0)
        with self.assertRaises(RuntimeError):
            v.backward()  # freed, as for any torch function

    def test_small_flat_input_value_bit_for_bit(self):
        # on the ctypes path a small 1-d input goes to autograd through
        # torch.dot, whose value is replaced by the runtime's; the compiled
        # path has a native node of its own. Either way: the same bits as
        # without autograd, inf and NaN included, and the runtime's gradient
        node = "DotBackward0" if FAST is None else "CppFunction"
        for dtype, bits in ((torch.float32, torch.int32), (torch.float64, torch.int64)):
            for cfg in ({"loss": "mse"}, {"loss": "bce_with_logits", "reduction": "sum"}):
                loss = losskit.Loss(cfg)
                t = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype)
                for vals in ([0.5, float("inf"), -1.0, 2.0], [0.5, float("nan"), 1.0, 2.0],
                             [-0.0, 0.0, 3.0, -3.0]):
                    x = torch.tensor(vals, dtype=dtype, requires_grad=True)
                    v = loss(x, t)
                    self.assertEqual(type(v.grad_fn).__name__, node)
                    self.assertEqual((v.dtype, v.shape), (dtype, torch.Size([])))
                    with torch.no_grad():
                        ref = loss(x, t)
                    self.assertEqual(v.detach().view(bits).item(), ref.view(bits).item())
                    v.backward(torch.tensor(0.5, dtype=dtype))
                    _, g = losskit.evaluate(cfg, input=x.detach().numpy(), target=t.numpy())
                    torch.testing.assert_close(x.grad, 0.5 * torch.from_numpy(g["input"]),
                                               rtol=0, atol=0, equal_nan=True)
        # an N-d input keeps the autograd.Function (a view for torch.dot costs more)
        x = torch.randn(2, 3, requires_grad=True)
        self.assertNotEqual(type(losskit.Loss({"loss": "mse"})(x, torch.randn(2, 3)).grad_fn)
                            .__name__, "DotBackward0")

    def test_no_grad_computes_none(self):
        loss = losskit.Loss({"loss": "mse"})
        x = torch.randn(5, requires_grad=True)
        with torch.no_grad():
            v = loss(x, torch.randn(5))
        self.assertFalse(v.requires_grad)
        # no gradient is wanted under no_grad, not even one the loss lacks:
        # a target that requires grad is refused only where autograd would
        # ask for its gradient
        t = torch.randn(5, requires_grad=True)
        for reduction in ("mean", "none"):  # the cached path and the general one
            loss = losskit.Loss({"loss": "mse", "reduction": reduction})
            with torch.no_grad():
                v = loss(x, t)
            torch.testing.assert_close(v, loss(x.detach(), t.detach()), rtol=0, atol=0)
            with self.assertRaises(losskit.DataError) as cm:
                loss(x, t)
            self.assertIn("'target' requires grad", str(cm.exception))


class CompiledPath(unittest.TestCase):
    """losskit.Loss's compiled per-call path (python/losskit/_fast.cpp): there
    whenever the build made it, the same numbers as the ctypes path, and
    every call it does not take handed to that path whole."""

    def test_present_when_built(self):
        built = os.environ.get("LOSSKIT_PY_FAST_BUILT")
        wanted = os.environ.get("LOSSKIT_PY_FAST", "1") != "0"
        if built is None:
            self.skipTest("not run by meson test: whether the build has the compiled path is unknown")
        self.assertEqual(FAST is not None, built == "1" and wanted)
        loss = losskit.Loss({"loss": "dice"})
        self.assertEqual(loss._fast is not None, FAST is not None)
        # reduction none has no compiled path: its per-position output is the general path's
        self.assertIsNone(losskit.Loss({"loss": "mse", "reduction": "none"})._fast)

    def both(self, cfg):
        """The loss twice: the compiled path (if any) and the ctypes path."""
        fast, slow = losskit.Loss(cfg), losskit.Loss(cfg)
        slow._fast = None
        return fast, slow

    def test_equal_to_the_ctypes_path(self):
        g = torch.Generator().manual_seed(11)
        cases = [
            ({"loss": "cross_entropy", "params": {"label_smoothing": 0.1}},
             lambda dt: [torch.randn(3, 5, 2, generator=g, dtype=dt), torch.randint(0, 5, (3, 2), generator=g)]),
            ({"loss": "dice"}, lambda dt: [torch.randn(2, 1, 4, 4, generator=g, dtype=dt),
                                           (torch.rand(2, 1, 4, 4, generator=g) < 0.5).to(dt)]),
            ({"loss": "mse", "reduction": "sum"},
             lambda dt: [torch.randn(7, generator=g, dtype=dt), torch.randn(7, generator=g, dtype=dt)]),
        ]
        for cfg, make in cases:
            for dt in (torch.float32, torch.float64):
                fast, slow = self.both(cfg)
                x, t = make(dt)
                xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
                va, vb = fast(xa, t), slow(xb, t)
                self.assertEqual((va.dtype, va.shape), (vb.dtype, vb.shape))
                self.assertEqual(va.item(), vb.item(), cfg)  # the same runtime call: the same bits
                (va * 0.25).backward()
                (vb * 0.25).backward()
                torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
                self.assertEqual(fast.last_data_ptrs, {"input": xa.data_ptr(), "target": t.data_ptr()})

    def test_one_tensor_in_two_slots(self):
        # the same tensor as input1 and input2: autograd adds its two gradients
        fast, slow = self.both({"loss": "margin_ranking", "params": {"margin": 0.5}})
        x = torch.randn(9, dtype=torch.float64)
        y = torch.where(torch.randn(9) < 0, -1.0, 1.0).double()
        got = []
        for loss in (fast, slow):
            xg = x.clone().requires_grad_(True)
            loss(input1=xg, input2=xg * 0.5, target=y).backward()
            got.append(xg.grad)
        xr = x.clone().requires_grad_(True)
        torch.nn.functional.margin_ranking_loss(xr, xr * 0.5, y, margin=0.5).backward()
        for gr in got:
            torch.testing.assert_close(gr, xr.grad, rtol=1e-14, atol=0)

    def test_calls_it_leaves_to_the_ctypes_path(self):
        loss = losskit.Loss({"loss": "mse"})
        # non-contiguous: made contiguous on the ctypes path
        x = torch.randn(6, 4, dtype=torch.float64).t().requires_grad_(True)
        t = torch.randn(4, 6, dtype=torch.float64)
        loss(x, t).backward()
        torch.testing.assert_close(x.grad, 2 * (x.detach() - t) / x.numel(), rtol=1e-14, atol=0)
        # a gradient the size of the pool's: the ctypes path and its pool
        x = torch.randn(N, requires_grad=True)
        t = torch.randn(N)
        loss(x, t).backward()
        self.assertIsInstance(loss._last[0][1], losskit_torch._Plan)
        torch.testing.assert_close(x.grad, 2 * (x.detach() - t) / N, rtol=1e-6, atol=1e-12)
        # refused calls raise the runtime's message (the ctypes path reruns them)
        with self.assertRaises(losskit.DataError) as cm:
            loss(torch.randn(3, requires_grad=True), torch.randn(4))
        self.assertIn("mse", str(cm.exception))
        with self.assertRaises(TypeError):
            loss(torch.randn(3), [1.0, 2.0, 3.0])

    def test_threads_share_one_loss(self):
        # each call builds its arguments on its own stack: concurrent calls on
        # one Loss give each thread its own value and gradient
        loss = losskit.Loss({"loss": "mse", "reduction": "sum"})
        errors = []

        def work(seed):
            g = torch.Generator().manual_seed(seed)
            for _ in range(200):
                x = torch.randn(33, generator=g, dtype=torch.float64, requires_grad=True)
                t = torch.randn(33, generator=g, dtype=torch.float64)
                v = loss(x, t)
                v.backward()
                ref = ((x.detach() - t) ** 2).sum()
                if abs(v.item() - ref.item()) > 1e-12 * ref.item() or \
                        not torch.allclose(x.grad, 2 * (x.detach() - t), rtol=1e-14, atol=0):
                    errors.append(seed)
                    return
        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])


if __name__ == "__main__":
    unittest.main()
