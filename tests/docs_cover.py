#!/usr/bin/env python3
"""docs_cover.py LOSSKIT SOURCE_ROOT: every loss the registry lists is
documented, with no test edit when a loss is added.

For each loss `LOSSKIT list --json` shows (the build's own plugins):
- docs/losses.md names it (`id`) in a row of its family table, and that
  row links to the pages of its family;
- those pages name the loss and every parameter `LOSSKIT info ID --json`
  declares, each as `name` (in backticks, as the pages write parameters).

Prints one line per problem, naming the file, the loss and what is missing,
and exits 1 if there is any; 0 and a count otherwise. Standard library only.
"""
import json
import os
import re
import subprocess
import sys


def run_json(losskit, *args):
    env = dict(os.environ, LOSSKIT_PLUGIN_PATH="")  # the build's own plugins
    r = subprocess.run([losskit, *args, "--json"], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"docs_cover.py: {losskit} {' '.join(args)} --json failed "
                 f"(exit {r.returncode}): {r.stderr.strip()}")
    return json.loads(r.stdout)


def family_rows(index_path):
    """loss id -> the pages its row of docs/losses.md links to."""
    rows = {}
    base = os.path.dirname(index_path)
    with open(index_path, encoding="utf-8") as f:
        for line in f:
            cells = line.split("|")
            if not line.startswith("|") or len(cells) < 4 or "](" not in line:
                continue
            pages = [os.path.normpath(os.path.join(base, p))
                     for p in re.findall(r"\]\(([^)#]+)[^)]*\)", cells[3])]
            for loss in re.findall(r"`([a-z0-9_]+)`", cells[2]):
                rows.setdefault(loss, []).extend(pages)
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: docs_cover.py LOSSKIT SOURCE_ROOT")
    losskit, root = sys.argv[1], sys.argv[2]
    index = os.path.join(root, "docs", "losses.md")
    rows = family_rows(index)
    problems = []
    losses = run_json(losskit, "list")["losses"]
    texts = {}
    for entry in losses:
        loss = entry["id"]
        pages = rows.get(loss)
        if not pages:
            problems.append(f"{os.path.relpath(index, root)}: loss '{loss}' "
                            f"({entry['plugin']} plugin) is in no row of the family table")
            continue
        for p in pages:
            if p not in texts:
                try:
                    with open(p, encoding="utf-8") as f:
                        texts[p] = f.read()
                except OSError as e:
                    problems.append(f"{os.path.relpath(index, root)}: loss '{loss}': its row "
                                    f"links to {os.path.relpath(p, root)}, which cannot be read "
                                    f"({e.strerror})")
                    texts[p] = ""
        text = "".join(texts[p] for p in pages)
        shown = ", ".join(os.path.relpath(p, root) for p in pages)
        if not re.search(r"(?<![a-z0-9_])%s(?![a-z0-9_])" % re.escape(loss), text):
            problems.append(f"{shown}: loss '{loss}' is not named")
        for param in run_json(losskit, "info", loss)["params"]:
            if f"`{param['name']}`" not in text:
                problems.append(f"{shown}: loss '{loss}': parameter '{param['name']}' is not "
                                f"described (no `{param['name']}`)")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"docs_cover: {len(losses)} losses, each in docs/losses.md and its family's pages "
          "with every parameter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
