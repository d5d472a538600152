#!/usr/bin/env python3
"""Prints, for every config in configs/, one line: the config and the
`losskit run` tensor options that evaluate it on bundled data.

A config that a case of tests/golden/catalogue/*.json evaluates as it
stands (the same JSON but its description) uses that case's tensors. Else
the tutorial family's configs (and weighted sums of its losses) use
configs/data/input.npy and target.npy as the README does; the multiclass
ones configs/data/mc_input.npy and mc_target.npy; every other loss the
tensors of its first case (the same loss, the config's reduction when a
case has it)."""
import glob
import json
import os
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
os.chdir(root)
cases = []
for manifest in sorted(glob.glob("tests/golden/catalogue/*.json")):
    with open(manifest) as f:
        cases += json.load(f)

IMAGE = "--input configs/data/input.npy --target configs/data/target.npy"
CLASSES = "--input configs/data/mc_input.npy --target configs/data/mc_target.npy"
TUTORIAL = {"mse", "l1", "bce_with_logits", "dice", "dice_bce", "iou", "focal", "focal_mean_bce"}

status = 0
for path in sorted(glob.glob("configs/*.json")):
    with open(path) as f:
        cfg = json.load(f)
    loss = cfg.get("loss")
    red = cfg.get("reduction", "mean")
    bare = {k: v for k, v in cfg.items() if k != "description"}
    same = [c for c in cases
            if {k: v for k, v in c["config"].items() if k != "description"} == bare]
    if same:
        print(path, " ".join("--tensor %s=%s" % kv for kv in sorted(same[0]["tensors"].items())))
        continue
    if cfg.get("params", {}).get("mode") == "multiclass" or loss in ("cross_entropy", "nll"):
        print(path, CLASSES)
        continue
    if "terms" in cfg or loss in TUTORIAL:
        print(path, IMAGE)
        continue
    mine = [c for c in cases if c["config"].get("loss") == loss]
    mine.sort(key=lambda c: c["config"].get("reduction", "mean") != red)
    if not mine:
        print("no bundled data for %s (loss %s)" % (path, loss), file=sys.stderr)
        status = 1
        continue
    print(path, " ".join("--tensor %s=%s" % kv for kv in sorted(mine[0]["tensors"].items())))
sys.exit(status)
