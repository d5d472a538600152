"""A user's plugin built out of tree, as tests/e2e_sdk.sh builds one
(`losskit new` and meson through pkg-config: the build's losskit-sdk.pc
with includedir pointed at the source tree's sdk/include, as if installed),
used from Python through LOSSKIT_PLUGIN_PATH
with nothing of losskit rebuilt."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from _common import BUILD_ROOT, losskit, src

CLI = os.path.join(BUILD_ROOT, "host", "losskit")
PC = os.path.join(BUILD_ROOT, "meson-private", "losskit-sdk.pc")


def _sdk_pc(folder):
    """losskit-sdk.pc as installed, its headers those of the source tree."""
    with open(PC) as f:
        lines = f.read().splitlines()
    lines = ["includedir=" + src("sdk/include") if ln.startswith("includedir=") else ln
             for ln in lines]
    with open(os.path.join(folder, "losskit-sdk.pc"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return folder

PROBE = r"""
import sys, torch
sys.path.insert(0, %r)
import losskit
loss = losskit.Loss(sys.argv[1])
x = torch.randn(4, 100, dtype=torch.float64, requires_grad=True)
t = torch.rand(4, 100, dtype=torch.float64)
v = loss(x, t)
v.backward()
ids = [d["id"] for d in losskit.list()]
info = losskit.info("my_tversky")
print("OK", loss.name, float(v), bool(torch.isfinite(x.grad).all()), "my_tversky" in ids,
      info["plugin_file"])
"""


@unittest.skipUnless(shutil.which("meson") and os.path.exists(CLI) and os.path.exists(PC),
                     "meson, the CLI or losskit-sdk.pc missing")
class OutOfTreePlugin(unittest.TestCase):
    def test_new_build_load(self):
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)
            env = dict(os.environ, PKG_CONFIG_PATH=_sdk_pc(d))
            subprocess.run([CLI, "new", "my_tversky"], cwd=d, check=True, env=env,
                           stdout=subprocess.DEVNULL)
            proj = os.path.join(d, "my_tversky")
            r = subprocess.run(["meson", "setup", "build"], cwd=proj, env=env,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = subprocess.run(["meson", "compile", "-C", "build"], cwd=proj, env=env,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            cfg = os.path.join(proj, "my_tversky.json")
            self.assertTrue(os.path.exists(cfg), os.listdir(proj))
            env = dict(os.environ, LOSSKIT_PLUGIN_PATH=os.path.join(proj, "build"))
            r = subprocess.run([sys.executable, "-c", PROBE % os.path.join(BUILD_ROOT, "python"),
                                cfg], env=env, capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            words = r.stdout.split()
            self.assertEqual(words[:2], ["OK", "my_tversky"], r.stdout)
            self.assertEqual(words[3:5], ["True", "True"], r.stdout)
            self.assertTrue(words[5].startswith(os.path.join(proj, "build")), r.stdout)

    def test_flipped_gradient_is_reported(self):
        """The elementwise scaffold with its gradient negated (as
        tests/e2e_sdk.sh makes it): losskit.check names the grad check of
        that loss, by file and by loss id."""
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)
            env = dict(os.environ, PKG_CONFIG_PATH=_sdk_pc(d))
            subprocess.run([CLI, "new", "my_broken", "--elementwise"], cwd=d, check=True,
                           env=env, stdout=subprocess.DEVNULL)
            proj = os.path.join(d, "my_broken")
            c_file = os.path.join(proj, "my_broken.c")
            with open(c_file) as f:
                text = f.read()
            line = "    e->grad = lk_select(quadratic, d, lk_mul(delta, lk_sign(d)));"
            self.assertIn(line, text)
            with open(c_file, "w") as f:
                f.write(text.replace(line, "    e->grad = lk_neg(lk_select(quadratic, d, "
                                           "lk_mul(delta, lk_sign(d))));"))
            for cmd in (["meson", "setup", "build"], ["meson", "compile", "-C", "build"]):
                r = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            so = os.path.join(proj, "build", "my_broken.so")
            for report in (losskit.check(so),
                           losskit.check("my_broken", plugin_path=os.path.join(proj, "build"))):
                self.assertFalse(report.ok)
                self.assertEqual([lr.id for lr in report.losses], ["my_broken"])
                fails = report["my_broken"].failures
                # the grad check, and the paths check's differences over the blocks
                self.assertEqual({c.name for c in fails}, {"grad", "paths"},
                                 [c.message for c in fails])
                self.assertTrue(fails[0].message.startswith("FAIL grad my_broken: "))


if __name__ == "__main__":
    unittest.main()
