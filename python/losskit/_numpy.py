"""losskit.evaluate: a loss on numpy arrays, value and gradients."""
import numpy as np

from . import _lib as L
from ._core import CompiledLoss, DataError, Desc


def _desc(name, a):
    code = L.DTYPE_CODES.get(a.dtype.name)
    if code is None:
        raise DataError("%s: dtype %s is not one losskit reads (%s)"
                        % (name, a.dtype.name, ", ".join(L.DTYPE_CODES)))
    return Desc(name, a.ctypes.data if a.size else None, code, a.shape)


def evaluate(config, tensors=None, /, *, threads=None, plugin_path=None, grad=True, **arrays):
    """Evaluates the loss of config (a path, JSON string or dict) on numpy
    arrays given by tensor name: a slot's (input=..., target=...,
    weight=...) or one the config's "tensors" bind a slot to
    (logits_x2=...). tensors, a dict of name to array, gives them too, for
    names that are no Python keyword argument (threads, grad, 2x, ...).

    Returns (value, grads): value is a float, or for reduction none the
    per-position losses as an array; grads maps each differentiable slot
    given to d(value)/d(slot) (of sum of the per-position losses for
    reduction none), an array of the slot's shape and dtype."""
    loss = config if isinstance(config, CompiledLoss) else CompiledLoss(config, threads,
                                                                        plugin_path)
    if tensors is not None:
        both = set(tensors) & set(arrays)
        if both:
            raise TypeError("tensor %r is given twice" % sorted(both)[0])
        arrays = {**tensors, **arrays}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    loss.check_names(arrays)
    held = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    descs = [_desc(k, a) for k, a in held.items()]
    grads, gdescs = {}, []
    if grad:
        for k, a in held.items():
            if k in loss.differentiable and a.dtype.kind == "f":
                g = np.empty_like(a)
                grads[k] = g
                gdescs.append(_desc(k, g))
    out = None
    if loss.reduction == "none":
        shape = loss.out_shape(descs)
        first = held.get(loss.slot_names[0])
        out = np.empty(shape, dtype=first.dtype if first is not None else np.float64)
        loss.eval(descs, gdescs, _desc("out", out))
        return out, grads
    return loss.eval(descs, gdescs), grads
