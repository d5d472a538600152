#!/usr/bin/env python3
"""docs_cover.py LOSSKIT SOURCE_ROOT: every loss the registry lists is
documented, with no test edit when a loss is added.

For each loss `LOSSKIT list --json` shows (the build's own plugins):
- docs/losses.md names it (`id`) in a row of its family table, and that
  row links to the pages of its family;
- those pages name the loss and every parameter `LOSSKIT info ID --json`
  declares, each as `name` (in backticks, as the pages write parameters);
- every default the pages state agrees with the one the loss declares: a
  "`name` = value" in a table row whose first cell names the loss, or in
  prose under a heading that names it, and a "| `name` | value |" row of a
  "| parameter | default" table under such a heading. Values that are not
  a number, true/false, [] or a plain word (unset, all, = smooth) are read
  as prose and not compared;
- every row of a "reductions (default *)" column lists the reductions the
  loss offers, in its order, with its default starred.

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


def default_matches(text, declared):
    """True/False where the stated default text can be compared with the
    declared one, None where it is prose."""
    v = text.replace("\u2212", "-").replace("*", "").strip().rstrip(".").strip("`'\"")
    if isinstance(declared, bool):
        return v.lower() == str(declared).lower() if v.lower() in ("true", "false") else None
    if isinstance(declared, (int, float)):
        try:
            return abs(float(v) - declared) <= 1e-12 * max(1.0, abs(declared))
        except ValueError:
            return None
    if isinstance(declared, list):
        return (v.replace(" ", "") == "[]") == (declared == []) if v.startswith("[") else None
    if isinstance(declared, str):
        return v == declared if re.fullmatch(r"[a-z0-9_]+", v) else None
    return None


def stated_defaults(text, declared):
    """(line, loss, parameter, stated) for every default the page states
    for a loss in declared ({loss: {parameter: default}})."""
    found = []
    section, in_table = [], False
    for n, line in enumerate(text.splitlines(), 1):
        heading = re.match(r"#+ (.*)", line)
        if heading:
            section = [w for w in re.findall(r"[a-z0-9_]+", heading.group(1)) if w in declared]
            in_table = False
            continue
        scope, pairs = section, []
        if line.startswith("|"):
            named = [w for w in re.findall(r"[a-z0-9_]+", line.split("|")[1]) if w in declared]
            scope = named or section
            row = re.match(r"\|\s*`([a-z0-9_]+)`[^|]*\|\s*([^|]*?)\s*\|", line)
            if in_table and row and row.group(2):
                pairs.append((row.group(1), row.group(2).split()[0]))
            if re.match(r"\|\s*parameter\s*\|\s*default", line):
                in_table = True
        else:
            in_table = False
        pairs += re.findall(r"`([a-z0-9_]+)`\s*=\s*(\[[^\]]*\]|[^,;|)\s]+)", line)
        if line.startswith("|"):  # a table's "`window` 11, `sigma` 1.5"
            pairs += re.findall(r"`([a-z0-9_]+)` (-?[0-9][0-9.e+-]*)(?=[,;| ])", line)
        for name, stated in pairs:
            for loss in scope:
                if name in declared[loss]:
                    found.append((n, loss, name, stated))
    return found


def stated_reductions(text, ids):
    """(line, loss, [reductions], default or None) for every row of a table
    with a "reductions (default *)" column whose first cell names a loss."""
    found, column = [], None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if any(c.startswith("reductions (default *)") for c in cells):
            column = next(i for i, c in enumerate(cells) if c.startswith("reductions (default *)"))
            continue
        named = re.findall(r"`([a-z0-9_]+)`", cells[0])
        if column is None or column >= len(cells) or not named or named[0] not in ids:
            continue
        listed = [r.strip() for r in cells[column].split(",")]
        default = [r.rstrip("*") for r in listed if r.endswith("*")]
        found.append((n, named[0], [r.rstrip("*") for r in listed], default[0] if default else None))
    return found


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: docs_cover.py LOSSKIT SOURCE_ROOT")
    losskit, root = sys.argv[1], sys.argv[2]
    index = os.path.join(root, "docs", "losses.md")
    rows = family_rows(index)
    problems = []
    losses = run_json(losskit, "list")["losses"]
    texts = {}
    infos = {}  # loss -> its `info --json`
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
        infos[loss] = run_json(losskit, "info", loss)
        for param in infos[loss]["params"]:
            if f"`{param['name']}`" not in text:
                problems.append(f"{shown}: loss '{loss}': parameter '{param['name']}' is not "
                                f"described (no `{param['name']}`)")
    declared = {loss: {q["name"]: q.get("default") for q in info["params"]}
                for loss, info in infos.items()}
    compared = 0
    for p in sorted(texts):
        for n, loss, name, stated in stated_defaults(texts[p], declared):
            ok = default_matches(stated, declared[loss][name])
            if ok is None:
                continue
            compared += 1
            if not ok:
                problems.append(f"{os.path.relpath(p, root)}:{n}: loss '{loss}': parameter "
                                f"'{name}' is stated to default to {stated}, but the loss "
                                f"declares {json.dumps(declared[loss][name])}")
        for n, loss, listed, default in stated_reductions(texts[p], infos):
            compared += 1
            want = infos[loss]
            if listed != want["reductions"] or default != want["default_reduction"]:
                problems.append(f"{os.path.relpath(p, root)}:{n}: loss '{loss}': the table "
                                f"lists the reductions {', '.join(listed)} (default {default}), "
                                f"but the loss offers {', '.join(want['reductions'])} (default "
                                f"{want['default_reduction']})")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"docs_cover: {len(losses)} losses, each in docs/losses.md and its family's pages "
          f"with every parameter; {compared} stated defaults and reductions agree with the "
          "declared ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
