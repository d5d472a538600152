"""losskit.check: the conformance checker of `losskit check` from Python.

The checks run plugin code that may crash or hang, which is why the CLI runs
each loss in a child process under a deadline; this module runs the CLI
(`losskit check PLUGIN.so --json`) and reads its report, so that a broken
plugin costs a failed check, never the caller's process."""
import json
import os
import shutil
import subprocess

from ._core import LosskitError, PluginError, loss_info


def cli_path():
    """The `losskit` executable beside the library this package loads:
    $LOSSKIT_CLI, else the path meson wrote into _paths.py (the build
    tree's or the installed one), else `losskit` on $PATH."""
    env = os.environ.get("LOSSKIT_CLI")
    if env:
        return env
    try:
        from . import _paths
        path = getattr(_paths, "CLI", None)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("losskit")
    if found:
        return found
    raise LosskitError("losskit.check: cannot find the losskit executable; set LOSSKIT_CLI "
                       "to its path")


class Check:
    """One check's result: name (abi, schema, value, grad, ...), ok, the
    one-line detail, the loss it is about (None for the plugin's ABI), and
    the numbers the checker reports with it (fields)."""
    __slots__ = ("name", "ok", "detail", "loss", "fields")

    def __init__(self, d):
        self.name, self.ok, self.detail = d.get("name"), bool(d.get("ok")), d.get("detail", "")
        self.loss = d.get("loss")
        self.fields = {k: v for k, v in d.items() if k not in ("name", "ok", "detail", "loss")}

    @property
    def message(self):
        """'FAIL grad mse: ...' as the CLI prints it."""
        return "%s %s%s: %s" % ("PASS" if self.ok else "FAIL", self.name,
                                " " + self.loss if self.loss else "", self.detail)

    def __repr__(self):
        return "<Check %s>" % self.message


class LossReport:
    """The checks of one loss: id, checks (every one), failures, passed."""
    __slots__ = ("id", "checks")

    def __init__(self, loss_id):
        self.id, self.checks = loss_id, []

    @property
    def failures(self):
        return [c for c in self.checks if not c.ok]

    @property
    def passed(self):
        return not self.failures

    ok = passed

    def __repr__(self):
        return "<LossReport %s: %s>" % (self.id, "passed" if self.passed else "failed: " +
                                        ", ".join(c.name for c in self.failures))


class CheckReport:
    """What `losskit check PLUGIN.so --json` reports: plugin (the file),
    losses (a LossReport per loss, in the plugin's order; report["mse"]
    is one by id), plugin_checks (those about the plugin as a whole: its
    ABI), checks (every one), n_passed, n_failed, and ok (nothing failed)."""

    def __init__(self, data):
        self.plugin = data.get("plugin")
        self.checks = [Check(d) for d in data.get("checks", [])]
        self.n_passed, self.n_failed = int(data.get("passed", 0)), int(data.get("failed", 0))
        self.plugin_checks = [c for c in self.checks if c.loss is None]
        self._losses = {}
        for c in self.checks:
            if c.loss is not None:
                self._losses.setdefault(c.loss, LossReport(c.loss)).checks.append(c)
        self.losses = list(self._losses.values())

    @property
    def ok(self):
        return self.n_failed == 0 and all(c.ok for c in self.checks)

    @property
    def failures(self):
        return [c for c in self.checks if not c.ok]

    def __getitem__(self, loss_id):
        return self._losses[loss_id]

    def __iter__(self):
        return iter(self.losses)

    def __repr__(self):
        return "<CheckReport %s: %d passed, %d failed>" % (self.plugin, self.n_passed,
                                                          self.n_failed)


def _last_error(stderr):
    """The CLI's one-line error without its 'losskit: check: ' prefix."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return None
    msg = lines[0]
    for prefix in ("losskit: ", "check: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return "; ".join([msg] + [ln.split("check: ", 1)[-1] for ln in lines[1:]])


def check(plugin, loss=None, plugin_path=None, timeout=None, pairs=False):
    """Runs the conformance checks of `losskit check` on a plugin and
    returns a CheckReport (report.ok, report.losses, report["id"].failures).

    plugin: a plugin .so file, or the id of a registered loss (then its
    plugin file is checked, that loss alone; plugin_path as for Loss).
    loss: check only this loss of the plugin file. timeout: seconds
    allowed to each loss's checks (the CLI's $LOSSKIT_CHECK_TIMEOUT,
    60 by default); a loss that overruns fails its "timeout" check.
    pairs: also compare the gradient with every two parameters moved
    together (the CLI's --pairs; its results are the "pairs" checks).

    Raises PluginError (the runtime's one-line message) when the plugin
    cannot be loaded, ConfigError for an id no plugin registers."""
    plugin = os.fspath(plugin)
    is_file = os.sep in plugin or plugin.endswith(".so") or os.path.exists(plugin)
    if not is_file:
        info = loss_info(plugin, plugin_path)  # ConfigError: unknown loss 'x' (did you mean)
        loss, plugin = info["id"], info["plugin_file"]
    args = [cli_path(), "check", plugin, "--json"]
    if loss is not None:
        args += ["--loss", loss]
    if pairs:
        args.append("--pairs")
    env = dict(os.environ)
    if timeout is not None:
        if int(timeout) < 1:
            raise ValueError("timeout must be a positive number of seconds, not %r" % (timeout,))
        env["LOSSKIT_CHECK_TIMEOUT"] = str(int(timeout))
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode in (0, 1) and r.stdout.lstrip().startswith("{"):
        try:
            return CheckReport(json.loads(r.stdout))
        except ValueError:
            pass
    msg = _last_error(r.stderr) or "losskit check exited with status %d" % r.returncode
    if r.returncode == 3:
        raise PluginError(msg)
    if r.returncode == 2:
        from ._core import ConfigError
        raise ConfigError(msg)
    raise LosskitError(msg)
