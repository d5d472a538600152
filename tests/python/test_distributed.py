"""torch.distributed: 2 processes (gloo on 127.0.0.1, torch.multiprocessing
spawn) each holding part of a batch get, through losskit.Loss, the value
and the gradients of one process on the whole batch, to 1e-12 relative in
float64 (each gradient element relative to the gradient's largest): dice
binary and multiclass, weighted terms sums, mean-reduced elementwise losses,
cross_entropy, region losses with per-sample statistics (dice per_sample,
MONAI's generalized dice); a whole-batch loss (ntxent) is refused with one
line. A
2-process DistributedDataParallel step with ddp_scale=True
on a tiny linear model gives the single-process step's parameter gradients
(to 1e-6)."""
import os
import socket
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _common import losskit, src

WORLD = 2

CASES = [
    # name, config, input shape, target kind
    ("dice_binary", src("configs/dice.json"), (7, 1, 12, 10), "unit"),
    ("dice_multiclass", src("configs/dice_multiclass.json"), (7, 4, 9, 8), "class"),
    ("terms", src("configs/dice_bce_terms.json"), (7, 1, 12, 10), "unit"),
    ("terms_weighted", {"terms": [{"loss": "bce_with_logits", "weight": 0.3},
                                  {"loss": "dice", "weight": 0.7},
                                  {"loss": "focal", "weight": 2.0}], "reduction": "mean"},
     (7, 1, 12, 10), "unit"),
    ("mse_mean", src("configs/mse.json"), (7, 5, 11), "real"),
    ("focal_mean", src("configs/focal.json"), (7, 3, 10), "unit"),
    ("cross_entropy", {"loss": "cross_entropy", "params": {"weight": [0.5, 2, 1, 0.25]},
                       "reduction": "mean"}, (7, 4, 9, 8), "class"),
    # statistics kept per sample, split through the loss's partials
    ("dice_per_sample", {"loss": "dice", "params": {"mode": "multiclass", "per_sample": True,
                                                    "empty": "skip"}}, (7, 4, 2, 3), "class"),
    ("monai_generalized_dice_focal", src("configs/monai_generalized_dice_focal.json"),
     (7, 4, 9, 8), "unit"),
]


def _data(shape, kind):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    if kind == "class":
        t = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
        t[0, 0, :3] = -100
    elif kind == "unit":
        t = (torch.rand(shape, dtype=torch.float64, generator=g) < 0.4).to(torch.float64)
    else:
        t = torch.randn(shape, dtype=torch.float64, generator=g)
    return x, t


def _rows(n, rank):
    # uneven on purpose: 7 rows as 4 + 3
    cut = (n + 1) // 2
    return slice(0, cut) if rank == 0 else slice(cut, n)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out_dir, job):
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port,
                            rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        result = {}
        if job == "losses":
            for name, cfg, shape, kind in CASES:
                x, t = _data(shape, kind)
                rows = _rows(shape[0], rank)
                xs = x[rows].clone().requires_grad_(True)
                v = losskit.Loss(cfg, threads=1)(xs, t[rows])  # the default group
                v.backward()
                result[name] = (v.item(), xs.grad)
            try:
                losskit.Loss(src("configs/ntxent.json"))(torch.randn(4, 3, dtype=torch.float64))
                result["whole"] = "no error"
            except losskit.LosskitError as e:
                result["whole"] = "%s: %s" % (type(e).__name__, e)
        else:
            result = _ddp_step(rank)
        torch.save(result, os.path.join(out_dir, "rank%d.pt" % rank))
    finally:
        dist.destroy_process_group()


def _model():
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 1)).double()


def _ddp_batch():
    g = torch.Generator().manual_seed(99)
    x = torch.randn(8, 6, dtype=torch.float64, generator=g)
    t = (torch.rand(8, 1, dtype=torch.float64, generator=g) < 0.5).to(torch.float64)
    return x, t


DDP_CONFIGS = [src("configs/dice.json"), src("configs/mse.json"),
               src("configs/dice_bce_terms.json")]


def _ddp_step(rank):
    x, t = _ddp_batch()
    rows = slice(0, 4) if rank == 0 else slice(4, 8)
    out = {}
    for cfg in DDP_CONFIGS:
        model = torch.nn.parallel.DistributedDataParallel(_model())
        loss = losskit.Loss(cfg, threads=1, ddp_scale=True)
        v = loss(model(x[rows]), t[rows])
        v.backward()
        out[cfg] = (v.item(), [p.grad.clone() for p in model.parameters()])
    return out


def _spawn(job):
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(_free_port(), d, job), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(d, "rank%d.pt" % r)) for r in range(WORLD)]


class Distributed(unittest.TestCase):
    _losses = None

    @classmethod
    def losses(cls):
        if cls._losses is None:
            cls._losses = _spawn("losses")
        return cls._losses

    def close(self, got, want, rtol, what):
        scale = want.abs().max().item()
        err = (got - want).abs().max().item()
        self.assertLessEqual(err, rtol * scale, "%s: max error %g of %g" % (what, err, scale))

    def test_sharded_equals_whole_batch(self):
        ranks = self.losses()
        for name, cfg, shape, kind in CASES:
            with self.subTest(case=name):
                x, t = _data(shape, kind)
                xx = x.clone().requires_grad_(True)
                want = losskit.Loss(cfg, process_group=False)(xx, t)
                want.backward()
                grad = torch.cat([ranks[r][name][1] for r in range(WORLD)])
                for r in range(WORLD):
                    v = ranks[r][name][0]
                    self.assertLessEqual(abs(v - want.item()), 1e-12 * abs(want.item()),
                                         "%s rank %d: %.17g vs %.17g" % (name, r, v,
                                                                         want.item()))
                self.close(grad, xx.grad, 1e-12, name)

    def test_whole_batch_loss_refused(self):
        ranks = self.losses()
        for r in range(WORLD):
            msg = ranks[r]["whole"]
            self.assertIn("loss 'ntxent' takes the whole batch at once", msg)
            self.assertIn("cannot be summed across processes", msg)

    def test_ddp_step_equals_single_process_step(self):
        ranks = _spawn("ddp")
        x, t = _ddp_batch()
        for cfg in DDP_CONFIGS:
            with self.subTest(config=os.path.basename(cfg)):
                model = _model()
                v = losskit.Loss(cfg, process_group=False)(model(x), t)
                v.backward()
                for r in range(WORLD):
                    got_v, got_g = ranks[r][cfg]
                    self.assertAlmostEqual(got_v, v.item(), delta=1e-12 * abs(v.item()))
                    for p, g in zip(model.parameters(), got_g):
                        self.close(g, p.grad, 1e-6, "parameter gradient")

    def test_not_initialised(self):
        with self.assertRaises(RuntimeError):
            losskit.Loss({"loss": "mse"}, process_group=object())(torch.zeros(2),
                                                                    torch.zeros(2))


if __name__ == "__main__":
    unittest.main()
