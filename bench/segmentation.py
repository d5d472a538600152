#!/usr/bin/python3
"""The multiclass overlap losses against the memory roofline and PyTorch, in
one run: for each loss, `losskit bench` (forward+backward, float32 logits
(N, C, H, W), int64 class indices) and the same formula in plain torch ops
(softmax, one-hot, sums over batch and positions, autograd) on the same
shape and thread count. Prints a Markdown table.

    /usr/bin/python3 bench/segmentation.py --build build-release
    /usr/bin/python3 bench/segmentation.py --shape 4,8,2048,2048 --repeat 3

The default shape holds 16M positions of 8 classes: 512 MiB of logits, as
much gradient and 128 MiB of targets.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSSES = ["dice", "iou", "tversky", "focal_tversky", "generalized_dice"]


def losskit_bench(build, loss, shape, threads, repeat):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"loss": loss, "params": {"mode": "multiclass"}}, f)
        config = f.name
    try:
        cmd = [os.path.join(os.path.abspath(build), "host", "losskit"), "bench", config,
               "--shape", shape, "--threads", str(threads), "--repeat", str(repeat), "--json"]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                         text=True).stdout)
    finally:
        os.unlink(config)


def torch_loss(torch, loss, x, y):
    """The losses' defaults in multiclass mode, as smp and MONAI write them."""
    C = x.shape[1]
    p = x.softmax(1)
    t = torch.nn.functional.one_hot(y, C).permute(0, 3, 1, 2).to(p.dtype)
    if loss == "generalized_dice":  # per sample, as MONAI's batch=False
        dims = (2, 3)
    else:
        dims = (0, 2, 3)
    I, P, T = (p * t).sum(dims), p.sum(dims), t.sum(dims)
    if loss == "dice":
        return (1 - (2 * I + 1) / (P + T + 1).clamp_min(1e-7)).mean()
    if loss == "iou":
        return (1 - (I + 1) / (P + T - I + 1).clamp_min(1e-7)).mean()
    if loss in ("tversky", "focal_tversky"):
        ti = I / (I + 0.5 * (P - I) + 0.5 * (T - I)).clamp_min(1e-7)
        if loss == "tversky":
            return (1 - ti).mean()
        return ((1 - ti).clamp_min(0) ** 0.75).mean()
    w = 1.0 / (T * T)
    inf = torch.isinf(w)
    w = torch.where(inf, torch.zeros_like(w), w)
    w = w + inf * w.max(1, keepdim=True)[0]
    num = 2 * (w * I).sum(1) + 1e-5
    den = (w * (P + T)).sum(1) + 1e-5
    return (1 - num / den).mean()


def torch_time(loss, shape, threads, repeat):
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, requires_grad=True)
    y = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=g)
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch_loss(torch, loss, x, y).backward()
        dt = (time.perf_counter() - t0) * 1e3
        x.grad = None
        best = dt if best is None else min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--shape", default="4,8,2048,2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated losses")
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    losses = args.only.split(",") if args.only else LOSSES
    print(f"shape {args.shape}, float32, {args.threads} threads; losskit: median of "
          f"{args.repeat}; torch: best of {args.repeat}\n")
    print("| loss | losskit fwd+bwd ms | roofline fraction | torch fwd+bwd ms | torch / losskit |")
    print("|---|---:|---:|---:|---:|")
    for loss in losses:
        r = losskit_bench(args.build, loss, args.shape, args.threads, args.repeat)
        t = torch_time(loss, shape, args.threads, args.repeat)
        ms = r["forward_backward_ms"]
        print(f"| {loss} | {ms:.1f} | {100 * r['roofline_fraction_forward_backward']:.0f}% | "
              f"{t:.1f} | {t / ms:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
