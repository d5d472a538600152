#!/usr/bin/python3
"""Compares the built-in plugins of two build trees, loss by loss: is the new
build's plugin as fast as the base build's?

One losskit binary, the new tree's, runs both sides, so the host (engine,
thread pool, bench) is the same and only the plugins differ: each side puts
its build's plugins first on LOSSKIT_PLUGIN_PATH,
where they shadow the binary's own. Before timing, `losskit list --json`
must show every loss served from the intended build's plugin file.

For each loss, dtype and thread count, `losskit bench --json` runs
alternately on base and new for --rounds rounds (the order swapped every
round), each with --repeat timed runs after a warm-up; each side keeps its
best (minimum) time over all rounds. The ratio is base / new: above 1 the
new build is faster. The script exits 1 when a ratio is below 0.95.

    /usr/bin/python3 bench/compare_builds.py --base /work/base/build-release \\
        --new build-release
    /usr/bin/python3 bench/compare_builds.py --family stencil --dtypes float32 ...
"""
import argparse
import json
import os
import subprocess
import sys

import targets  # beside this script: its list of losses and shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name, config, shape: the losses and shapes of bench/targets.py, with
# multiclass dice's name as one word
LOSSES = [(n.replace(" ", "_"), c, shape) for n, c, shape, _, _ in targets.LOSSES]
# --family stencil: the stencil family's losses on images (ssim, far slower,
# on a smaller shape)
STENCIL = [("sobolev", "configs/sobolev.json", "16,3,512,512"),
           ("total_variation", "configs/total_variation.json", "16,3,512,512"),
           ("ssim", "configs/ssim.json", "2,3,256,256")]
# the catalogue's compute-bound elementwise losses (docs/performance.md, "The
# catalogue's elementwise losses"), robust at a general alpha from a config of
# its own
LOSSES += [
    ("asymmetric", "configs/asymmetric.json", "16777216"),
    ("robust_alpha05", "bench/configs/robust_alpha05.json", "16777216"),
    ("log_cosh", "configs/log_cosh.json", "16777216"),
]
PLUGIN_DIRS = ("tutorial", "torch")
THRESHOLD = 0.95


def fail(msg):
    sys.exit(f"compare_builds: {msg}")


def plugin_path(build):
    """The folders that hold a build's plugins: build/plugins itself (one
    folder for every family), or one folder per family in older trees."""
    top = os.path.join(build, "plugins")
    if any(f.endswith(".so") for f in os.listdir(top) if os.path.isfile(os.path.join(top, f))):
        return [top]
    dirs = [os.path.join(top, p) for p in PLUGIN_DIRS]
    for d in dirs:
        if not os.path.isdir(d):
            fail(f"{d}: no such plugin folder (is {build} a built losskit tree?)")
    return dirs


def side_env(build):
    env = dict(os.environ)
    env["LOSSKIT_PLUGIN_PATH"] = os.pathsep.join(plugin_path(build))
    env.pop("LOSSKIT_THREADS", None)
    return env


def loss_ids(config):
    with open(os.path.join(ROOT, config)) as f:
        c = json.load(f)
    if "terms" in c:
        return [t["loss"] for t in c["terms"]]
    return [c["loss"]]


def verify(binary, build, ids):
    """Checks with `losskit list --json` that every loss id in ids is served
    from a plugin file inside build/plugins; returns {id: file}."""
    out = subprocess.run([binary, "list", "--json"], env=side_env(build), check=True,
                         capture_output=True, text=True).stdout
    listing = json.loads(out)
    for d in listing.get("diagnostics", []):
        print(f"compare_builds: warning from {build}: {d}", file=sys.stderr)
    want = os.path.realpath(os.path.join(build, "plugins")) + os.sep
    served = {}
    for entry in listing["losses"]:
        if not entry.get("shadowed") and entry["id"] in ids:
            served[entry["id"]] = entry.get("file")
    for i in ids:
        f = served.get(i)
        if f is None:
            fail(f"{build}: 'losskit list' shows no loss '{i}'")
        if not os.path.realpath(f).startswith(want):
            fail(f"{build}: loss '{i}' is served from {f}, not from {want}")
    return served


def bench(binary, build, config, shape, dtype, threads, repeat):
    cmd = [binary, "bench", os.path.join(ROOT, config), "--shape", shape, "--dtype", dtype,
           "--threads", str(threads), "--repeat", str(repeat), "--json"]
    p = subprocess.run(cmd, env=side_env(build), capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{' '.join(cmd)} (plugins of {build}) exit {p.returncode}: {p.stderr.strip()}")
    r = json.loads(p.stdout)
    if r.get("dtype") != dtype:
        fail(f"{config}: bench ran in {r.get('dtype')}, not {dtype} (a losskit without --dtype?)")
    return r


class Side:
    def __init__(self):
        self.fwd = self.fb = float("inf")
        self.runs = []

    def add(self, r):
        self.fwd = min(self.fwd, r["forward_best_ms"])
        self.fb = min(self.fb, r["forward_backward_best_ms"])
        self.runs.append(r)


def git_head(build):
    """The commit of the source tree a build directory was set up from."""
    try:
        info = os.path.join(build, "meson-info", "meson-info.json")
        with open(info) as f:
            src = json.load(f)["directories"]["source"]
        head = subprocess.run(["git", "-C", src, "log", "-1", "--format=%h %s"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True).stdout.strip()
        return f"{src} at {head}" + (" (with uncommitted changes)" if dirty else "")
    except (OSError, KeyError, ValueError, subprocess.CalledProcessError):
        return "source tree unknown"


def csv(text):
    return [x for x in text.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the build tree before the change")
    ap.add_argument("--new", required=True, help="the build tree after it; its losskit runs both")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per bench call")
    ap.add_argument("--only", type=csv, help="LOSS[,LOSS]: " + ",".join(
        n for n, _, _ in LOSSES + STENCIL))
    ap.add_argument("--dtypes", type=csv, default=["float32", "float64"])
    ap.add_argument("--threads", type=lambda s: [int(x) for x in csv(s)], default=[1, 2])
    ap.add_argument("--family", choices=("targets", "stencil"), default="targets",
                    help="the losses of bench/targets.py, or the stencil family's")
    a = ap.parse_args()
    all_losses = LOSSES if a.family == "targets" else STENCIL
    if a.rounds < 1 or a.repeat < 1:
        fail("--rounds and --repeat must be at least 1")
    for d in a.dtypes:
        if d not in ("float32", "float64"):
            fail(f"--dtypes: '{d}' is not float32 or float64")
    names = [n for n, _, _ in all_losses]
    for n in a.only or []:
        if n not in names:
            fail(f"--only: unknown loss '{n}' (losses: {', '.join(names)})")
    losses = [x for x in all_losses if not a.only or x[0] in a.only]
    base, new = os.path.abspath(a.base), os.path.abspath(a.new)
    binary = os.path.join(new, "host", "losskit")
    if not os.access(binary, os.X_OK):
        fail(f"{binary}: not an executable (build the new tree first)")

    ids = sorted({i for _, config, _ in losses for i in loss_ids(config)})
    served_base = verify(binary, base, ids)
    served_new = verify(binary, new, ids)
    print(f"Machine: {targets.cpu_model()}, {os.cpu_count()} cores; losskit: {binary}")
    print(f"base: {git_head(base)}; new: {git_head(new)}")
    for label, served in (("base", served_base), ("new", served_new)):
        files = sorted(set(served.values()))
        print(f"{label} plugins (from `losskit list --json`): {', '.join(files)}")
    if os.environ.get("LOSSKIT_SIMD"):
        print(f"LOSSKIT_SIMD={os.environ['LOSSKIT_SIMD']}")
    if any(served_base[i] == served_new[i] for i in ids):
        print("warning: base and new serve a loss from the same plugin file")
    print(f"Best of {a.rounds} rounds x {a.repeat} runs per side, base and new alternating; "
          f"ratio = base / new (above 1: new is faster).\n")
    sys.stdout.flush()

    rows = []
    for name, config, shape in losses:
        for dtype in a.dtypes:
            for threads in a.threads:
                sides = {"base": Side(), "new": Side()}
                for r in range(a.rounds):
                    order = ("base", "new") if r % 2 == 0 else ("new", "base")
                    for s in order:
                        build = base if s == "base" else new
                        sides[s].add(bench(binary, build, config, shape, dtype, threads, a.repeat))
                b, n = sides["base"], sides["new"]
                rows.append((name, shape, dtype, threads, b, n, b.fwd / n.fwd, b.fb / n.fb))
                print(f"  {name} {dtype} {threads} thr: fwd {b.fwd:.2f}/{n.fwd:.2f} ms, "
                      f"fwd+bwd {b.fb:.2f}/{n.fb:.2f} ms", file=sys.stderr)

    print("| loss | dtype | threads | base fwd ms | new fwd ms | ratio "
          "| base fwd+bwd ms | new fwd+bwd ms | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, shape, dtype, threads, b, n, rf, rfb in rows:
        print(f"| {name} | {dtype} | {threads} | {b.fwd:.3f} | {n.fwd:.3f} | {rf:.3f} "
              f"| {b.fb:.3f} | {n.fb:.3f} | {rfb:.3f} |")

    print("\nNew build, forward+backward against the memory roofline (bench's fractions, "
          "best round):\n")
    print("| loss | shape | dtype | threads | bytes | best ms | GB/s at best | roofline fraction "
          "| vs least bytes |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, shape, dtype, threads, b, n, rf, rfb in rows:
        frac = max(r["roofline_fraction_forward_backward"] for r in n.runs)
        least = max(r["roofline_least_fraction_forward_backward"] for r in n.runs)
        nbytes = n.runs[0]["bytes_forward_backward"]
        print(f"| {name} | {shape.replace(',', 'x')} | {dtype} | {threads} | {nbytes:.0f} "
              f"| {n.fb:.3f} | {nbytes / (n.fb * 1e6):.1f} | {frac:.0%} | {least:.0%} |")

    worst = min(((rf, name, dtype, threads, "forward") for name, _, dtype, threads, _, _, rf, _
                 in rows),
                default=None)
    worst_fb = min(((rfb, name, dtype, threads, "forward+backward")
                    for name, _, dtype, threads, _, _, _, rfb in rows), default=None)
    if worst is None:
        print("\nNothing measured.")
        return 0
    low = min(worst, worst_fb)
    ok = low[0] >= THRESHOLD
    print(f"\nMinimum ratio (base / new): {low[0]:.3f} ({low[1]}, {low[2]}, {low[3]} threads, "
          f"{low[4]}); every ratio >= {THRESHOLD}: {'yes' if ok else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
