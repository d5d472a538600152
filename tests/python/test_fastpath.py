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
        # a small 1-d input goes to autograd through torch.dot, whose value
        # is replaced by the runtime's: the same bits as without autograd,
        # inf and NaN included, and the runtime's gradient
        for dtype, bits in ((torch.float32, torch.int32), (torch.float64, torch.int64)):
            for cfg in ({"loss": "mse"}, {"loss": "bce_with_logits", "reduction": "sum"}):
                loss = losskit.Loss(cfg)
                t = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype)
                for vals in ([0.5, float("inf"), -1.0, 2.0], [0.5, float("nan"), 1.0, 2.0],
                             [-0.0, 0.0, 3.0, -3.0]):
                    x = torch.tensor(vals, dtype=dtype, requires_grad=True)
                    v = loss(x, t)
                    self.assertEqual(type(v.grad_fn).__name__, "DotBackward0")
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


if __name__ == "__main__":
    unittest.main()
