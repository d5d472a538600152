"""Helpers the golden-value scripts of tests/golden share.

The scripts run as `/usr/bin/python3 tests/golden/make_X.py`, so this folder
is on sys.path and they import from here directly (`from goldlib import ...`).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def path(rel):
    """A path relative to the repository root, made absolute."""
    return os.path.join(ROOT, rel)


# --------------------------------------------------------------------------
# Writing the goldens

def save(rel, array):
    """Saves array as the .npy file rel (relative to the repository root);
    returns rel."""
    np.save(path(rel), array)
    return rel


def save_tensors(stem, arrays):
    """Saves every array of {slot: array} as STEM_SLOT.npy; returns {slot:
    file}."""
    return {k: save("%s_%s.npy" % (stem, k), v) for k, v in arrays.items()}


def load_tensors(files):
    """The arrays of {slot: file}, read back."""
    return {k: np.load(path(v)) for k, v in files.items()}


def write_json(rel, cases):
    """Writes a list of cases as the catalogue format wants it: indented by
    one, with a final newline."""
    with open(path(rel), "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")


def cfg(loss, red="mean", **params):
    """A losskit config: the loss, its params (left out when there are
    none) and the reduction."""
    c = {"loss": loss}
    if params:
        c["params"] = params
    c["reduction"] = red
    return c


class Writer:
    """Saves the files of a set of cases under one folder, each file once;
    a data set is stored once per dtype and shared by the cases that read
    it."""

    def __init__(self, out):
        self.out = out
        self.cases = []
        self.saved = set()

    def save(self, rel, array):
        """Saves array as rel and returns rel; saving a file twice is an
        error."""
        if rel in self.saved:
            raise ValueError("saved twice: " + rel)
        self.saved.add(rel)
        np.save(path(rel), array)
        return rel

    def data(self, tag, arrays, dtype):
        """Stores a data set once per dtype; returns {slot: file}."""
        files = {}
        for name, a in arrays.items():
            a = a.astype(dtype) if a.dtype.kind == "f" else a
            suffix = "" if a.dtype.kind != "f" else "_f32" if dtype == np.float32 else "_f64"
            rel = "%s/%s_%s%s.npy" % (self.out, tag, name, suffix)
            files[name] = rel if rel in self.saved else self.save(rel, a)
        return files


# --------------------------------------------------------------------------
# --random: running a build and measuring its errors

class LosskitError(RuntimeError):
    """`losskit run` failed; stderr holds what it printed."""

    def __init__(self, cmd, stderr):
        super().__init__("%s: %s" % (" ".join(cmd), stderr))
        self.stderr = stderr


def run_losskit(exe, tmp, config, arrays, grads=("input",), out=False):
    """Runs `exe run CONFIG --json` on files in the folder tmp: each array
    of {slot: array} passed with --tensor, the gradient of every slot in
    grads asked for with --grad-tensor and, with out, reduction none's
    output with --out. Returns (the JSON it printed, {slot: gradient}, the
    output or None); raises LosskitError if the run fails."""
    cpath = os.path.join(tmp, "config.json")
    with open(cpath, "w") as f:
        json.dump(config, f)
    cmd = [exe, "run", cpath, "--json"]
    for k, v in arrays.items():
        fn = os.path.join(tmp, k + ".npy")
        np.save(fn, v)
        cmd += ["--tensor", "%s=%s" % (k, fn)]
    for k in grads:
        cmd += ["--grad-tensor", "%s=%s" % (k, os.path.join(tmp, "g_" + k + ".npy"))]
    if out:
        cmd += ["--out", os.path.join(tmp, "out.npy")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise LosskitError(cmd, res.stderr)
    gradients = {k: np.load(os.path.join(tmp, "g_" + k + ".npy")) for k in grads}
    return (json.loads(res.stdout), gradients,
            np.load(os.path.join(tmp, "out.npy")) if out else None)


def rel(got, want, mag=0.0):
    """A value's relative error (1e-12 absolute floor); mag, where terms of
    both signs may cancel, is the magnitude it is taken relative to when
    larger than |want|."""
    return 0.0 if got == want else abs(got - want) / max(abs(want), mag, 1e-12)


def elementwise_rel(got, want, mag=0.0, nan_equal=False):
    """The largest relative error of an array's elements, with the catalogue
    test's floor of 1e-9 absolute at the 1e-5 bar; mag as for rel(), per
    element or for all. Equal elements count 0, and with nan_equal so do
    NaNs on both sides."""
    got = got.astype(np.float64)
    d = np.abs(got - want)
    same = got == want
    if nan_equal:
        same = same | (np.isnan(got) & np.isnan(want))
    r = np.where(same, 0.0, d / np.maximum(np.maximum(np.abs(want), mag), 1e-9 / 1e-5))
    return float(np.max(r, initial=0.0))


def max_rel(got, want, floor):
    """The largest |got - want| / max(|want|, floor) over the elements (0
    for none)."""
    d = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))
    return float(np.max(d / np.maximum(np.abs(want), floor), initial=0.0))


def record(worst, key, ve, ge):
    """Keeps the largest value and gradient errors of key's runs in
    worst[key] = [value error, gradient error, runs], and counts the run."""
    w = worst.setdefault(key, [0.0, 0.0, 0])
    w[0], w[1], w[2] = max(w[0], ve), max(w[1], ge), w[2] + 1


def report(seed, worst, against, width, grad="gradient"):
    """Prints the largest errors record() kept against the reference named
    by against, one line per (name, dtype) with the name in a column of
    width, marked FAIL where a value is off by more than 1e-6 or a gradient
    (grad names it) by more than 1e-5; returns whether none is."""
    ok = True
    print("seed %d: largest relative errors against %s" % (seed, against))
    for (name, dt), (ve, ge, n) in sorted(worst.items()):
        flag = "" if ve <= 1e-6 and ge <= 1e-5 else "   FAIL"
        ok &= not flag
        print("  %-*s %s  value %.2e  %s %.2e  (%d runs)%s" % (width, name, dt, ve, grad, ge, n,
                                                               flag))
    return ok


# --------------------------------------------------------------------------
# The command line

def options(doc, help="compare build/host/losskit with torch on new random data", more=(),
            losskit=True):
    """The argument parser of a golden script: --random SEED, the script's
    own options (more: (flag, keyword arguments) pairs), then, with
    losskit, --losskit PATH (build/host/losskit by default)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--random", type=int, metavar="SEED", help=help)
    for flag, kw in more:
        ap.add_argument(flag, **kw)
    if losskit:
        ap.add_argument("--losskit", default=path("build/host/losskit"))
    return ap


def main(doc, write, compare, against="torch"):
    """Runs a golden script: without --random, write() writes the goldens;
    with --random SEED, compare(seed, losskit) compares the build and
    returns whether every error was within bounds. Returns the exit
    status."""
    args = options(doc, "compare build/host/losskit with %s on new random data"
                   % against).parse_args()
    if args.random is None:
        write()
        return 0
    return 0 if compare(args.random, args.losskit) else 1


def trials_main(doc, write, compare, trials, trials_help):
    """main() for a script whose --random runs --trials cases (default
    trials) and takes --verbose: compare(seed, trials, losskit, verbose)
    returns the exit status."""
    ap = options(doc, "compare losskit with torch on new random data instead",
                 [("--trials", {"type": int, "default": trials, "help": trials_help})])
    ap.add_argument("--verbose", action="store_true", help="--random: every case's error")
    a = ap.parse_args()
    if a.random is not None:
        sys.exit(compare(a.random, a.trials, a.losskit, a.verbose))
    write()
