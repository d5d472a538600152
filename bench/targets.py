#!/usr/bin/python3
"""Measures every speed target of losskit in one run and prints a Markdown
report: `losskit bench` for each loss on 1 and 2 threads (fraction of the
memory roofline, thread speed-up, per-call overhead) and, when PyTorch is
importable, bench/compare_torch.py on the same shapes.

    /usr/bin/python3 bench/targets.py --build build-release > /tmp/perf.md
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = "16,1,1024,1024"
MULTI = "8,8,512,512"
# loss, config, shape, roofline target (forward+backward), compute-heavy
LOSSES = [
    ("mse", "configs/mse.json", BINARY, 0.80, False),
    ("l1", "configs/l1.json", BINARY, 0.80, False),
    ("bce_with_logits", "configs/bce_with_logits.json", BINARY, 0.80, False),
    ("focal", "configs/focal.json", BINARY, 0.80, True),
    ("dice", "configs/dice.json", BINARY, 0.75, False),
    ("iou", "configs/iou.json", BINARY, 0.75, False),
    ("dice_bce", "configs/dice_bce.json", BINARY, 0.75, False),
    ("focal_mean_bce", "configs/focal_mean_bce.json", BINARY, 0.75, False),
    ("cross_entropy", "configs/cross_entropy.json", MULTI, 0.60, True),
    ("dice multiclass", "configs/dice_multiclass.json", MULTI, 0.60, True),
    # the catalogue's elementwise losses: 60 % of the roofline
    ("smooth_l1", "configs/smooth_l1.json", BINARY, 0.60, False),
    ("huber", "configs/huber.json", BINARY, 0.60, False),
    ("log_cosh", "configs/log_cosh.json", BINARY, 0.60, True),
    ("robust", "configs/robust.json", BINARY, 0.60, False),
    ("poisson_nll", "configs/poisson_nll.json", BINARY, 0.60, False),
    ("gaussian_nll", "configs/gaussian_nll.json", BINARY, 0.60, False),
    ("bce", "configs/bce.json", BINARY, 0.60, True),
    ("kl_div", "configs/kl_div.json", BINARY, 0.60, False),
    ("asymmetric", "configs/asymmetric.json", BINARY, 0.60, True),
    ("hinge_embedding", "configs/hinge_embedding.json", BINARY, 0.60, False),
    ("soft_margin", "configs/soft_margin.json", BINARY, 0.60, False),
    ("margin_ranking", "configs/margin_ranking.json", BINARY, 0.60, False),
]


def bench(build, config, shape, threads, repeat):
    cmd = [os.path.join(os.path.abspath(build), "host", "losskit"), "bench", os.path.join(ROOT, config),
           "--shape", shape, "--threads", str(threads), "--repeat", str(repeat), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    if not a.no_torch:
        missing = [m for m in ("numpy", "torch") if importlib.util.find_spec(m) is None]
        if missing:
            sys.exit(f"targets.py: {sys.executable} cannot import {' and '.join(missing)}, which "
                     "the comparison with PyTorch needs: run it with Debian's /usr/bin/python3 "
                     "(python3-torch, python3-numpy), or pass --no-torch")
    rows = []
    for name, config, shape, target, heavy in LOSSES:
        if not os.path.exists(os.path.join(ROOT, config)):
            continue
        one = bench(a.build, config, shape, 1, a.repeat)
        two = bench(a.build, config, shape, 2, a.repeat)
        rows.append((name, shape, target, heavy, one, two))
    # The memory's speed drifts within a run: each row's roofline is measured
    # beside its loss, and the fastest of them (in GB/s) is the strictest roof
    # the run saw; "vs fastest roof" is each loss against that one.
    def roof_gbps(two):
        return two["bytes_forward_backward"] / two["roofline_forward_backward_ms"] / 1e6
    fastest = max(rows, key=lambda r: roof_gbps(r[5]))
    top = roof_gbps(fastest[5])
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores; median of {a.repeat} runs.\n")
    print("| loss | shape | fwd ms (2 thr) | fwd+bwd ms (2 thr) | GB/s | roofline fraction "
          "| vs least bytes | vs fastest roof | target | met | 1→2 threads speed-up "
          "| overhead / call (64 el.) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for name, shape, target, heavy, one, two in rows:
        frac = two["roofline_fraction_forward_backward"]
        strict = two["gbps_forward_backward"] / top
        least = two.get("roofline_least_fraction_forward_backward", frac)
        speedup = one["forward_backward_ms"] / two["forward_backward_ms"]
        sp = f"{speedup:.2f}" + (" (target 1.6)" if heavy else "")
        small = two.get("small_call_us")
        small = "n/a" if small is None else f"{small:.2f} µs"
        print(f"| {name} | {shape.replace(',', 'x')} | {two['forward_ms']:.2f} | "
              f"{two['forward_backward_ms']:.2f} | {two['gbps_forward_backward']:.1f} | "
              f"{frac:.0%} | {least:.0%} | {strict:.0%} | {target:.0%} | "
              f"{'yes' if frac >= target else 'no'} | "
              f"{sp} | "
              f"{small} |")
    print(f"\nThe fastest roofline of the run: {top:.1f} GB/s, in {fastest[0]}'s row; "
          "\"met\" compares each loss with the roofline measured beside it.")
    if a.no_torch:
        return
    sys.stdout.flush()
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "compare_torch.py"),
                    "--build", a.build, "--threads", "2", "--repeat", str(a.repeat)], check=True)


if __name__ == "__main__":
    main()
