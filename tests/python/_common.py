"""What the Python suites share: the source and build roots, and importing
losskit from the build tree (meson sets PYTHONPATH to build/python)."""
import os
import sys

SOURCE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("LOSSKIT_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
_pkg = os.path.join(BUILD_ROOT, "python")
if _pkg not in sys.path:
    sys.path.insert(0, _pkg)

import losskit  # noqa: E402,F401


def src(rel):
    return os.path.join(SOURCE_ROOT, rel)
