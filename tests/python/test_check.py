"""losskit.check: `losskit check` from Python. The fixture plugins of the
check suite (tests/fixtures/check) are each wrong in one way; the report
must name the failing check of the failing loss and nothing else, and a
plugin that cannot be loaded raises PluginError with the runtime's line."""
import os
import tempfile
import unittest

from _common import BUILD_ROOT, losskit

FIXTURES = os.path.join(BUILD_ROOT, "tests", "fixtures", "check")


def cf(name):
    return os.path.join(FIXTURES, "cf_%s.so" % name)


class Check(unittest.TestCase):
    def test_good_plugin_passes(self):
        r = losskit.check(cf("good"))
        self.assertTrue(r.ok, [c.message for c in r.failures])
        self.assertEqual([lr.id for lr in r.losses], ["cf_logistic", "cf_xent"])
        self.assertTrue(all(lr.passed for lr in r.losses))
        self.assertEqual(r.n_failed, 0)
        self.assertGreater(r.n_passed, 10)
        self.assertEqual([c.name for c in r.plugin_checks], ["abi"])
        self.assertIn("grad", [c.name for c in r["cf_xent"].checks])

    def test_flipped_gradient_fails_grad(self):
        r = losskit.check(cf("sign"))
        self.assertFalse(r.ok)
        # the grad check, and the paths check's differences over the blocks
        self.assertEqual(r.n_failed, 2)
        lr = r["cf_sign"]
        self.assertFalse(lr.passed)
        self.assertEqual([c.name for c in lr.failures], ["grad", "paths"])
        msg = lr.failures[0].message
        self.assertTrue(msg.startswith("FAIL grad cf_sign: "), msg)
        self.assertIn("max rel err", msg)
        self.assertNotIn("\n", msg)
        # the other checks of the loss still ran and passed
        self.assertIn("finite", [c.name for c in lr.checks if c.ok])

    def test_pairs_fail_only_the_wrong_pair(self):
        r = losskit.check(cf("pair"))
        self.assertTrue(r.ok, [c.message for c in r.failures])
        self.assertNotIn("pairs", [c.name for c in r["cf_pair"].checks])
        r = losskit.check(cf("pair"), pairs=True)
        self.assertFalse(r.ok)
        self.assertEqual([c.name for c in r.failures], ["pairs"])
        self.assertIn("gain=0.5 squared=true", r.failures[0].detail)

    def test_float32_path_is_compared_with_float64(self):
        r = losskit.check(cf("f32"))
        self.assertFalse(r.ok)
        self.assertEqual([c.name for c in r.failures], ["float32"])
        self.assertIn("gradient of 'input'", r.failures[0].detail)
        good = losskit.check(cf("good"))
        f32 = [c for lr in good.losses for c in lr.checks if c.name == "float32"]
        self.assertEqual(len(f32), 2)
        self.assertTrue(all(c.ok for c in f32))
        self.assertTrue(all(c.fields["max_rel_err"] < 1e-4 for c in f32))

    def test_crash_is_a_failed_check(self):
        r = losskit.check(cf("crash"))
        self.assertFalse(r.ok)
        names = [c.name for lr in r.losses for c in lr.failures]
        self.assertIn("crash", names)
        crash = [c for c in r.failures if c.name == "crash"][0]
        self.assertIn("SIGSEGV", crash.detail)

    def test_one_loss_of_a_plugin(self):
        r = losskit.check(cf("good"), loss="cf_xent")
        self.assertEqual([lr.id for lr in r.losses], ["cf_xent"])
        self.assertTrue(r.ok)
        with self.assertRaises(losskit.LosskitError) as cm:
            losskit.check(cf("good"), loss="nosuch")
        self.assertIn("nosuch", str(cm.exception))

    def test_loss_id_checks_its_plugin(self):
        r = losskit.check("cf_sign", plugin_path=FIXTURES)
        self.assertEqual(os.path.realpath(r.plugin), os.path.realpath(cf("sign")))
        self.assertEqual([lr.id for lr in r.losses], ["cf_sign"])
        self.assertEqual([c.name for c in r.failures], ["grad", "paths"])
        with self.assertRaises(losskit.ConfigError) as cm:
            losskit.check("nosuchloss")
        self.assertIn("unknown loss 'nosuchloss'", str(cm.exception))

    def test_missing_file_raises_plugin_error(self):
        with self.assertRaises(losskit.PluginError) as cm:
            losskit.check("/nonexistent/dir/my_loss.so")
        msg = str(cm.exception)
        self.assertIn("/nonexistent/dir/my_loss.so", msg)
        self.assertIn("No such file", msg)
        self.assertNotIn("\n", msg)

    def test_not_a_plugin_raises_plugin_error(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "broken.so")
            with open(bad, "wb") as f:
                f.write(b"not an ELF file")
            with self.assertRaises(losskit.PluginError) as cm:
                losskit.check(bad)
            self.assertIn("broken.so", str(cm.exception))
            self.assertNotIn("\n", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
