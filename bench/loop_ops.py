#!/usr/bin/python3
"""loop_ops.py: the operations of a loss's hottest loops, by the pipes they take.

Runs `losskit bench CONFIG` under `perf record` (cpu-clock samples), finds
the innermost loops holding most of the samples of the hottest function, and
counts their vector instructions by the cost bench/pipes measured on this
CPU (AMD Zen 4, AVX-512):

  F  multiply pipes: fma, mul, compares and tests into a mask register,
     vrcp14, vfixupimm, vpmulld (1 each); vpermt2ps 0.6; vdivps 2, vdivpd 3
  A  add pipes: add, sub, min, max, shifts, vgetexp, vgetmant, conversions,
     vrndscale (1 each); vscalef 2
  I  the other vector operations (bit operations, blends, integer adds,
     permutes, masked moves): any pipe, half a cycle each when both kinds
     of pipe are busy

  D  the divider: one vdivps per 6 cycles, one vdivpd per 9 (bench/pipes,
     step 4), beside their cycles in the multiply pipes

and prints the bound max(F, A, (F + A + I) / 2, D) in cycles per trip (one
vector per trip in the elementwise drivers). Register moves, loads, stores
and scalar instructions are listed apart. The count is static: a branch
inside the loop (bce's second log, for soft targets) counts in full
whether or not a trip takes it. Needs perf (linux-perf) and objdump; reads
the release build's plugins.

Usage: loop_ops.py LOSS|CONFIG [--shape N,C,H,W] [--build DIR] [--loops K]
"""
import argparse
import collections
import os
import re
import subprocess
import sys


F1 = ("vfmadd", "vfnmadd", "vfmsub", "vfnmsub", "vmulp", "vcmp", "vpcmp", "vptestm", "vptestnm",
      "vfpclass", "vpmovd2m", "vpmovq2m", "vrcp14", "vfixupimm", "vpmulld", "vrsqrt14")
A1 = ("vaddp", "vsubp", "vmaxp", "vminp", "vpsll", "vpsrl", "vpsra", "vgetexp", "vgetmant", "vcvt",
      "vrndscale", "vroundp")
I1 = ("vpternlog", "vblendm", "vandp", "vandnp", "vorp", "vxorp", "vpaddd", "vpsubd", "vpaddq",
      "vpsubq", "vpminu", "vpmaxs", "vpmins", "vpmaxu", "vpand", "vpor", "vpxor", "vpermps",
      "vpermpd", "vpermi2", "vpbroadcast", "vextract", "vinsert", "vshuf", "vpshuf", "vpmovm2",
      "valign")
# zmm divisions: (multiply-pipe cycles, divider cycles), bench/pipes step 4
DIVIDES = {"vdivps": (2.0, 6.0), "vdivpd": (3.0, 9.0)}
MOVES = ("vmovap", "vmovup", "vmovdq", "vbroadcasts")


def classify(op, arg):
    """(kind, cost): kind F, A, I, div (cost: the instruction, a key of DIVIDES), or another
    word for what is listed apart."""
    if op.startswith("vdivp"):
        return "div", op[:6]
    if op.startswith("vscalef"):
        return "A", 2.0
    if op.startswith("vpermt2"):
        return "F", 0.6
    if op.startswith(MOVES):
        if "{%k" in arg:
            return "I", 1.0  # a masked move is a blend
        return ("move" if "(" not in arg else "memory"), 0.0
    for kind, prefixes in (("F", F1), ("A", A1), ("I", I1)):
        if op.startswith(prefixes):
            return kind, 1.0
    return ("other vector" if op.startswith("v") else "scalar"), 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("loss", help="a loss id (configs/ID.json) or a config file")
    ap.add_argument("--shape", default="1,1,256,256")
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--loops", type=int, default=2, help="how many loops to print")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = os.path.abspath(args.build)
    cfg = args.loss if args.loss.endswith(".json") else os.path.join(root, "configs",
                                                                       args.loss + ".json")
    plugins = os.environ.get("LOSSKIT_PLUGIN_PATH", os.path.join(build, "plugins"))
    env = dict(os.environ, LOSSKIT_CACHE="off", LOSSKIT_PLUGIN_PATH=plugins)
    data = "/tmp/loop_ops.%d.perf" % os.getpid()
    try:
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", data,
                        os.path.join(build, "host", "losskit"), "bench", cfg, "--shape", args.shape,
                        "--threads", "1", "--repeat", "400"],
                       env=env, capture_output=True, check=True)
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "dso,sym"],
                             capture_output=True, text=True, check=True).stdout
        rows = [line.split() for line in rep.splitlines() if line.strip() and not line.startswith("#")]
        rows = [r for r in rows if r[1].endswith(".so") and r[1] != "libc.so.6"]
        if not rows:
            sys.exit("loop_ops: no samples in a plugin")
        dso, sym = rows[0][1], rows[0][-1]
        ann = subprocess.run(["perf", "annotate", "-i", data, "--stdio", "-s", sym],
                             capture_output=True, text=True, check=True).stdout
    finally:
        if os.path.exists(data):
            os.unlink(data)
    samples = {}
    for line in ann.splitlines():
        m = re.match(r"\s+([0-9.]+) :\s+([0-9a-f]+):", line)
        if m:
            samples[int(m.group(2), 16)] = float(m.group(1))
    lo, hi = min(samples), max(samples)
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", os.path.join(plugins, dso),
                          "--start-address=%d" % max(0, lo - 4096), "--stop-address=%d" % (hi + 64)],
                         capture_output=True, text=True, check=True).stdout
    ins = []
    for line in dis.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(\S+)\s*(.*)", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2), m.group(3)))
    loops = []
    for addr, op, arg in ins:
        m = re.match(r"([0-9a-f]+) <", arg)
        if op.startswith("j") and m:
            target = int(m.group(1), 16)
            if target < addr and addr - target < 4096:
                weight = sum(v for k, v in samples.items() if target <= k <= addr)
                loops.append((weight, target, addr))
    if not loops:
        sys.exit("loop_ops: no loop in %s's samples" % sym)
    top = max(w for w, _, _ in loops)
    loops = sorted((lp for lp in loops if lp[0] >= 0.6 * top), key=lambda lp: lp[2] - lp[1])
    print("%s: %s in %s (%s)" % (args.loss, sym, dso, args.shape))
    for weight, start, end in loops[:args.loops]:
        cost = collections.Counter()
        apart = collections.Counter()
        n = 0
        for addr, op, arg in ins:
            if start <= addr <= end:
                n += 1
                kind, c = classify(op, arg)
                if kind == "div":
                    cost["F"] += DIVIDES[c][0]
                    cost["D"] += DIVIDES[c][1]
                elif kind in ("F", "A", "I"):
                    cost[kind] += c
                else:
                    apart[kind] += 1
        f, a, i, d = cost["F"], cost["A"], cost["I"], cost["D"]
        print("  loop %x-%x (%.1f %% of the function's samples): %d instructions; "
              "F %.1f, A %.1f, I %.1f, D %.1f: at least %.1f cycles per trip; apart: %s"
              % (start, end, weight, n, f, a, i, d, max(f, a, (f + a + i) / 2.0, d),
                 ", ".join("%s %d" % kv for kv in sorted(apart.items()))))


if __name__ == "__main__":
    main()
