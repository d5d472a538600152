"""torch.distributed: 2 processes (gloo on 127.0.0.1, torch.multiprocessing
spawn) each holding part of a batch get, through losskit.Loss, the value
and the gradients of one process on the whole batch, to 1e-12 relative in
float64 (each gradient element relative to the gradient's largest): dice
binary and multiclass, weighted terms sums, mean-reduced elementwise losses,
cross_entropy, region losses with per-sample statistics (dice per_sample,
MONAI's generalized dice). Whole-batch losses are gathered along their
declared batch dims (ABI 1.6) and equal one process on the gathered batch
to 1e-12 too: ntxent (two views, rows i and i + N), supcon, ctc (shards
with different T and S, padded with zeros) and lovasz_softmax over the
batch; a whole-batch loss that declares no batch dim is refused with one
line. A
2-process DistributedDataParallel step with ddp_scale=True
on a tiny linear model gives the single-process step's parameter gradients
(to 1e-6), with a gathered supcon on a small embedding model too."""
import os
import socket
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _common import BUILD_ROOT, losskit, src

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


# Whole-batch losses: 7 samples held as 4 + 3. Each case gives each
# process's tensors and the gathered batch's, whose layout the losses
# declare: ntxent's rows are [view 1 of every sample, view 2 of every
# sample], ctc's shards have their own T and S (padded with zeros when
# gathered).
WHOLE = ["ntxent", "supcon", "ctc", "lovasz_softmax"]
WHOLE_CONFIGS = {"ntxent": src("configs/ntxent.json"), "supcon": {"loss": "supcon"},
                 "ctc": {"loss": "ctc", "reduction": "mean"},
                 "lovasz_softmax": src("configs/lovasz_softmax.json")}
COUNTS = [4, 3]


def _whole_data(name):
    """(per process: {tensor: value}, the gathered batch: {tensor: value})."""
    g = torch.Generator().manual_seed(4321)
    rows = [slice(0, 4), slice(4, 7)]
    if name == "ntxent":
        v1 = torch.randn(7, 5, dtype=torch.float64, generator=g)
        v2 = v1 + 0.3 * torch.randn(7, 5, dtype=torch.float64, generator=g)
        shards = [{"input": torch.cat([v1[r], v2[r]])} for r in rows]
        return shards, {"input": torch.cat([v1, v2])}
    if name == "supcon":
        x = torch.randn(7, 5, dtype=torch.float64, generator=g)
        t = torch.randint(0, 3, (7,), generator=g)
        return [{"input": x[r], "target": t[r]} for r in rows], {"input": x, "target": t}
    if name == "lovasz_softmax":
        x = torch.randn(7, 3, 4, 5, dtype=torch.float64, generator=g)
        t = torch.randint(0, 3, (7, 4, 5), generator=g)
        return [{"input": x[r], "target": t[r]} for r in rows], {"input": x, "target": t}
    # ctc: process 0 has T = 12 frames and S = 4 labels, process 1 T = 9, S = 3
    ts, ss, C = [12, 9], [4, 3], 5
    shards = []
    for r, n in enumerate(COUNTS):
        x = torch.randn(ts[r], n, C, dtype=torch.float64, generator=g).log_softmax(2)
        tl = torch.randint(0, ss[r] + 1, (n,), generator=g)
        tl[0] = ss[r]
        il = torch.randint(2 * ss[r] + 1, ts[r] + 1, (n,), generator=g)
        tgt = torch.randint(1, C, (n, ss[r]), generator=g)
        shards.append({"input": x, "target": tgt, "input_lengths": il, "target_lengths": tl})
    x = torch.zeros(max(ts), 7, C, dtype=torch.float64)
    x[:ts[0], :4] = shards[0]["input"]
    x[:ts[1], 4:] = shards[1]["input"]
    tgt = torch.zeros(7, max(ss), dtype=torch.int64)
    tgt[:4, :ss[0]] = shards[0]["target"]
    tgt[4:, :ss[1]] = shards[1]["target"]
    return shards, {"input": x, "target": tgt,
                    "input_lengths": torch.cat([s["input_lengths"] for s in shards]),
                    "target_lengths": torch.cat([s["target_lengths"] for s in shards])}


def _own_grad(name, grad, rank, shard_input):
    """The part of the gathered batch's input gradient that is rank's."""
    at = sum(COUNTS[:rank])
    n = COUNTS[rank]
    if name == "ntxent":
        return torch.cat([grad[at:at + n], grad[7 + at:7 + at + n]])
    if name == "ctc":
        return grad[:shard_input.shape[0], at:at + n]
    return grad[at:at + n]


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
            for name in WHOLE:
                shards, _ = _whole_data(name)
                ts = dict(shards[rank])
                ts["input"] = ts["input"].clone().requires_grad_(True)
                v = losskit.Loss(WHOLE_CONFIGS[name], threads=1)(ts)
                v.backward()
                result[name] = (v.item(), ts["input"].grad)
            # ntxent with rows of another width on one process
            try:
                losskit.Loss(src("configs/ntxent.json"))(
                    torch.randn(4, 3 + rank, dtype=torch.float64))
                result["mismatch"] = "no error"
            except losskit.LosskitError as e:
                result["mismatch"] = "%s: %s" % (type(e).__name__, e)
            # a whole-batch loss of ABI 1.5, which declares no batch dim
            try:
                old = losskit.Loss({"loss": "fx_whole_sum"},
                                   plugin_path=os.path.join(BUILD_ROOT, "tests", "fixtures",
                                                            "split"))
                old(torch.randn(4, 3, dtype=torch.float64))
                result["undeclared"] = "no error"
            except losskit.LosskitError as e:
                result["undeclared"] = "%s: %s" % (type(e).__name__, e)
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


def _embedder():
    torch.manual_seed(11)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 4)).double()


def _ddp_step(rank):
    x, t = _ddp_batch()
    rows = slice(0, 4) if rank == 0 else slice(4, 8)
    out = {}
    # a whole-batch loss, gathered: supcon on the embeddings of every
    # process's rows, labels 0, 1, 2 over the batch
    labels = torch.arange(8) % 3
    model = torch.nn.parallel.DistributedDataParallel(_embedder())
    v = losskit.Loss({"loss": "supcon"}, threads=1, ddp_scale=True)(model(x[rows]),
                                                                     labels[rows])
    v.backward()
    out["supcon"] = (v.item(), [p.grad.clone() for p in model.parameters()])
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

    def test_whole_batch_loss_gathered(self):
        ranks = self.losses()
        for name in WHOLE:
            with self.subTest(loss=name):
                shards, whole = _whole_data(name)
                ts = dict(whole)
                ts["input"] = ts["input"].clone().requires_grad_(True)
                want = losskit.Loss(WHOLE_CONFIGS[name], process_group=False)(ts)
                want.backward()
                for r in range(WORLD):
                    v, grad = ranks[r][name]
                    self.assertLessEqual(abs(v - want.item()), 1e-12 * abs(want.item()),
                                         "%s rank %d: %.17g vs %.17g" % (name, r, v,
                                                                         want.item()))
                    own = _own_grad(name, ts["input"].grad, r, shards[r]["input"])
                    self.assertEqual(tuple(grad.shape), tuple(shards[r]["input"].shape))
                    self.close(grad, own, 1e-12, "%s rank %d" % (name, r))
                if name == "ctc":
                    # the padding's frames of process 1's samples have no gradient
                    self.assertEqual(ts["input"].grad[9:, 4:].abs().max().item(), 0.0)

    def test_whole_batch_loss_refusals(self):
        ranks = self.losses()
        for r in range(WORLD):
            msg = ranks[r]["mismatch"]
            self.assertIn("DataError: loss 'ntxent': 'input' has shape (4, 4) on process 1 and "
                          "(4, 3) on process 0: only dim 0 (the batch) may differ", msg)
            msg = ranks[r]["undeclared"]
            self.assertIn("DataError: loss 'fx_whole_sum' (ABI 1.5) declares no batch dim for "
                          "slot 'input': its batch cannot be gathered across processes", msg)

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
        # supcon, gathered across the processes: the same step as one
        # process on the whole batch
        model = _embedder()
        v = losskit.Loss({"loss": "supcon"}, process_group=False)(model(x), torch.arange(8) % 3)
        v.backward()
        for r in range(WORLD):
            got_v, got_g = ranks[r]["supcon"]
            self.assertAlmostEqual(got_v, v.item(), delta=1e-12 * abs(v.item()))
            for p, g in zip(model.parameters(), got_g):
                self.close(g, p.grad, 1e-6, "supcon parameter gradient")

    def test_not_initialised(self):
        with self.assertRaises(RuntimeError):
            losskit.Loss({"loss": "mse"}, process_group=object())(torch.zeros(2),
                                                                    torch.zeros(2))


if __name__ == "__main__":
    unittest.main()
