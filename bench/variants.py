#!/usr/bin/python3
"""variants.py: each registered loss's parameter variants against its defaults.

For every loss `losskit list` shows, times `losskit bench` (forward+backward,
best of --repeat, one thread, the bench's default shape for the loss) on the
loss's default config and on variants drawn from `losskit info`: each number
moved to two values (d/2 + 0.37 and 1.5 d + 0.13, kept inside its range, so
that integers become fractions), each boolean flipped, each choice taken,
each integer moved by one. Prints the variants that take more than --ratio
times the default's time per element, per dtype: the slow paths a config
edit can fall into (a call into the vector math library for every element,
a scalar pass, a special-argument path taken lane by lane). A variant that
the bench refuses (a shape it does not fit) is skipped.

Usage: variants.py [--build DIR] [--ratio R] [--dtypes float32,float64]
                   [--only LOSS,LOSS] [--repeat K] [--all]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def bench(losskit, cfg, dtype, repeat, tmp):
    path = os.path.join(tmp, "variant.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([losskit, "bench", path, "--dtype", dtype, "--threads", "1", "--repeat",
                        str(repeat), "--json"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return None
    d = json.loads(r.stdout)
    return d["forward_backward_best_ms"] / max(1, d["elements"]) * 1e6  # ns per element


def variants(info):
    out = []
    for p in info.get("params", []):
        name, kind = p["name"], p["type"]
        # a parameter without a default ("unset" says what leaving it out
        # means) has "default": null; its variant sets it
        dflt = p.get("default")
        if kind == "number":
            d = 1.0 if dflt is None else dflt
            lo, hi = p.get("min"), p.get("max")
            for v in (d * 0.5 + 0.37, d * 1.5 + 0.13):
                if (lo is not None and v <= lo) or (hi is not None and v > hi):
                    continue
                out.append({name: round(v, 3)})
        elif kind == "boolean":
            out.append({name: not p.get("default", False)})
        elif kind == "choice":
            out += [{name: c} for c in p["choices"] if c != dflt]
        elif kind == "integer":
            out.append({name: -1 if dflt is None else dflt + 1})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--ratio", type=float, default=2.5)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--only", default="")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="print every variant, not only the slow")
    a = ap.parse_args()
    losskit = os.path.join(a.build, "host", "losskit")
    listed = json.loads(subprocess.run([losskit, "list", "--json"], capture_output=True,
                                       text=True, check=True).stdout)["losses"]
    only = set(filter(None, a.only.split(",")))
    slow = 0
    with tempfile.TemporaryDirectory() as tmp:
        for entry in listed:
            lid = entry["id"]
            if only and lid not in only:
                continue
            info = json.loads(subprocess.run([losskit, "info", lid, "--json"], capture_output=True,
                                             text=True, check=True).stdout)
            for dt in a.dtypes.split(","):
                base = bench(losskit, {"loss": lid}, dt, a.repeat, tmp)
                if base is None:
                    print("%-28s %s: the default config does not bench" % (lid, dt))
                    continue
                for v in variants(info):
                    t = bench(losskit, {"loss": lid, "params": v}, dt, a.repeat, tmp)
                    if t is None:
                        continue
                    if t > a.ratio * base:
                        slow += 1
                    if a.all or t > a.ratio * base:
                        print("%-28s %s %-44s %8.3f ns/element, default %8.3f: %5.1fx" %
                              (lid, dt, json.dumps(v), t, base, t / base), flush=True)
    print("%d variants slower than %gx their loss's default" % (slow, a.ratio))


if __name__ == "__main__":
    sys.exit(main())
