"""losskit from Python: losses chosen by a JSON config, run by liblosskit.

    import losskit
    loss = losskit.Loss("configs/dice.json")        # a torch.nn.Module
    value = loss(logits, target)                    # autograd to logits
    value, grads = losskit.evaluate({"loss": "mse"}, input=x, target=t)   # numpy
    losskit.list(); losskit.info("dice")
    report = losskit.check("build/my_loss.so")       # `losskit check`, as a report

See docs/python.md. The library is found through $LOSSKIT_LIB, else the path
meson wrote into losskit/_paths.py (the build tree's or the installed one),
else the system's library path."""
from ._core import ConfigError, DataError, LosskitError, PluginError  # noqa: F401
from ._core import CompiledLoss, list_losses, loss_info, runtime  # noqa: F401
from ._lib import library_path  # noqa: F401
from ._numpy import evaluate  # noqa: F401

__all__ = ["Loss", "evaluate", "list", "info", "check", "grad_pool", "LosskitError",
           "ConfigError", "PluginError", "DataError"]


def list(plugin_path=None):  # noqa: A001 - the API's name
    """Every registered loss, as dicts (id, summary, plugin_file, slots, params, ...)."""
    return list_losses(plugin_path)


def info(loss_id, plugin_path=None):
    """The schema of one loss: summary, version, params, slots, reductions."""
    return loss_info(loss_id, plugin_path)


def check(plugin, loss=None, plugin_path=None, timeout=None, pairs=False):
    """The conformance checks of `losskit check` on a plugin file (or on the
    plugin of a loss id): a CheckReport with .ok, .losses (per loss: id,
    passed, failures) and each check's one-line detail. Raises PluginError
    when the plugin cannot be loaded. pairs=True adds the comparisons with
    every two parameters moved together (`losskit check --pairs`)."""
    from ._check import check as _check
    return _check(plugin, loss, plugin_path, timeout, pairs)


def __getattr__(name):
    # torch is imported only when Loss is first used
    if name == "Loss":
        from ._torch import Loss
        globals()["Loss"] = Loss
        return Loss
    if name == "grad_pool":
        from ._pool import pool
        globals()["grad_pool"] = pool
        return pool
    raise AttributeError("module 'losskit' has no attribute %r" % name)
