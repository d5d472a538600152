"""The runtime, configured losses and evaluation over raw tensor descriptions,
shared by the numpy and the torch front ends."""
import ctypes
import json
import numbers
import os
import threading

from . import _lib as L
from ._lib import lib


class LosskitError(Exception):
    """An error of the losskit runtime; str() is its one-line message."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status
        self.status_name = (lib.lk_status_name(status).decode()
                            if status is not None else None)


class ConfigError(LosskitError):
    """A config that does not validate (the CLI's exit code 2)."""


class PluginError(LosskitError):
    """A plugin that could not be loaded (the CLI's exit code 3)."""


class DataError(LosskitError):
    """Tensors the loss refuses: shape, dtype, values (the CLI's exit code 4)."""


def _eval_error(status, msg):
    if status in (L.ERR_LOAD, L.ERR_VERSION):
        cls = PluginError
    elif status in (L.ERR_CONFIG, L.ERR_NOT_FOUND):
        cls = ConfigError  # a missing tensor is bad usage, as the CLI's exit code 2
    elif status in (L.ERR_NOMEM, L.ERR_INTERNAL):
        cls = LosskitError
    else:
        cls = DataError
    return cls(msg or lib.lk_status_name(status).decode(), status)


def _s(b):
    return b.decode("utf-8", "replace") if b is not None else None


class Runtime:
    """An open lk_runtime: the plugins of one search path, one thread count."""

    def __init__(self, threads=None, plugin_path=None):
        opts = L.RuntimeOptions()
        lib.lk_runtime_options_init(ctypes.byref(opts))
        if threads is not None:
            opts.threads = _threads(threads)
        if plugin_path is not None:
            if not isinstance(plugin_path, str):
                plugin_path = os.pathsep.join(os.fspath(p) for p in plugin_path)
            self._path_bytes = os.fsencode(plugin_path)
            opts.plugin_path = self._path_bytes
        err = ctypes.create_string_buffer(L.LK_ERRMSG_CAP)
        h = ctypes.c_void_p()
        st = lib.lk_runtime_open(ctypes.byref(opts), ctypes.byref(h), err)
        if st != L.OK:
            raise PluginError(_s(err.value), st)
        self.handle = h

    @property
    def diagnostics(self):
        return [_s(lib.lk_runtime_diag(self.handle, i))
                for i in range(lib.lk_runtime_diag_count(self.handle))]

    @property
    def threads(self):
        return lib.lk_runtime_threads(self.handle)

    def __del__(self):
        h = getattr(self, "handle", None)
        if h and lib is not None:
            lib.lk_runtime_close(h)
            self.handle = None


_runtimes = {}
_runtimes_lock = threading.Lock()


def _threads(threads):
    """threads= checked: an integer in [1, 1024] (not a bool, a float or a
    string, which int() would take)."""
    if (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
            or not 1 <= threads <= 1024):
        raise ValueError("threads must be an integer in [1, 1024], not %r" % (threads,))
    return int(threads)


def runtime(threads=None, plugin_path=None):
    """The runtime for these options, opened once per process and kept.
    $LOSSKIT_PLUGIN_PATH is read when it is first opened."""
    if plugin_path is not None and not isinstance(plugin_path, str):
        plugin_path = os.pathsep.join(os.fspath(p) for p in plugin_path)
    if threads is not None:
        threads = _threads(threads)  # before the cache: True == 1 as a key
    key = (threads, plugin_path, os.environ.get("LOSSKIT_PLUGIN_PATH"))
    with _runtimes_lock:
        rt = _runtimes.get(key)
        if rt is None:
            rt = _runtimes[key] = Runtime(threads, plugin_path)
        return rt


def _ndims(mask):
    """The numbers of dimensions a slot's mask accepts, or None for any."""
    return [k for k in range(L.LK_MAX_NDIM + 1) if mask >> k & 1] or None


def _batch(sd, minor):
    """Where a slot's samples lie (ABI 1.6), or None when it does not say."""
    views, padded = ctypes.c_uint32(), ctypes.c_int32()
    dim = lib.lk_slot_batch_of(sd, minor, ctypes.byref(views), ctypes.byref(padded))
    if dim < 0:
        return None
    return {"dim": dim, "views": views.value, "padded": bool(padded.value)}


def _info_dict(rt, info):
    d = info.desc.contents
    slots, params = [], []
    i = 0
    while d.slots and d.slots[i]:
        sd = d.slots[i].contents
        slots.append({
            "name": _s(sd.name), "doc": _s(sd.doc),
            "dtypes": [n for c, n in L.DTYPE_NAMES.items() if sd.dtypes & (1 << c)],
            "optional": bool(sd.flags & L.SLOT_OPTIONAL),
            "differentiable": bool(sd.flags & L.SLOT_DIFFERENTIABLE),
            "values": lib.lk_slot_values_of(d.slots[i], i, info.plugin_abi_minor),
            "ndims": _ndims(lib.lk_slot_ndims_of(d.slots[i], info.plugin_abi_minor)),
            "batch": _batch(d.slots[i], info.plugin_abi_minor),
        })
        i += 1
    i = 0
    types = {1: "number", 2: "integer", 3: "bool", 4: "choice", 5: "number_list"}
    while d.params and d.params[i]:
        p = d.params[i].contents
        item = {"name": _s(p.name), "doc": _s(p.doc), "type": types.get(p.type, str(p.type))}
        if p.type == 4:
            ch, k = [], 0
            while p.choices[k]:
                ch.append(_s(p.choices[k]))
                k += 1
            item["choices"], item["default"] = ch, _s(p.default_choice)
        elif p.type == 5:
            item["default"] = [p.default_list[k] for k in range(p.default_list_len)]
            item["min"], item["max"] = p.min, p.max
        elif p.type == 3:
            item["default"] = bool(p.default_number)
        else:
            item["default"] = int(p.default_number) if p.type == 2 else p.default_number
            item["min"], item["max"] = p.min, p.max
        # no default: what leaving the parameter out means instead
        unset = lib.lk_param_unset_of(d.params[i], info.plugin_abi_minor)
        if unset is not None:
            item["default"], item["unset"] = None, _s(unset)
        params.append(item)
        i += 1
    return {
        "id": _s(info.id), "summary": _s(d.summary), "version": _s(d.version),
        "plugin_file": _s(info.plugin_file), "plugin_name": _s(info.plugin_name),
        "plugin_version": _s(info.plugin_version), "shadowed": bool(info.shadowed),
        "shadowed_by": _s(info.shadowed_by),
        "reductions": [n for c, n in L.REDUCTION_NAMES.items() if d.reductions & (1 << c)],
        "default_reduction": L.REDUCTION_NAMES.get(d.default_reduction),
        "fused": bool(d.flags & L.LOSS_FUSED), "whole": bool(d.flags & L.LOSS_WHOLE),
        "slots": slots, "params": params,
    }


def list_losses(plugin_path=None):
    """Every registered loss (shadowed ones included) as dicts."""
    rt = runtime(None, plugin_path)
    out = []
    for i in range(lib.lk_runtime_loss_count(rt.handle)):
        info = L.LossInfo()
        if lib.lk_runtime_loss_at(rt.handle, i, ctypes.byref(info)) == L.OK:
            out.append(_info_dict(rt, info))
    return out


def loss_info(loss_id, plugin_path=None):
    """The schema of one loss: summary, params, slots, reductions."""
    rt = runtime(None, plugin_path)
    info = L.LossInfo()
    err = ctypes.create_string_buffer(L.LK_ERRMSG_CAP)
    st = lib.lk_runtime_find(rt.handle, loss_id.encode(), ctypes.byref(info), err)
    if st != L.OK:
        raise ConfigError(_s(err.value), st)
    return _info_dict(rt, info)


def _finite_or_raise(v, where):
    """A dict config's numbers as JSON can hold them: NaN and infinities
    have no JSON spelling, so they are named here, by their JSON path."""
    if isinstance(v, dict):
        for k, x in v.items():
            _finite_or_raise(x, "%s.%s" % (where, k))
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _finite_or_raise(x, "%s[%d]" % (where, i))
    elif (isinstance(v, numbers.Real) and not isinstance(v, bool)
          and (v != v or v in (float("inf"), float("-inf")))):
        raise ConfigError("<dict>: %s: %r is not a finite number (JSON has no NaN or "
                          "infinity)" % (where, float(v)))


def _json_default(o):
    """numpy scalars and arrays, and torch tensors, as the numbers they hold."""
    if hasattr(o, "tolist") and callable(o.tolist):
        return o.tolist()
    raise TypeError("<dict>: a %s is not a JSON value (numbers, strings, booleans, lists and "
                    "dicts are)" % type(o).__name__)


def _config_source(config):
    """(json bytes, source name) or (None, path) for a file."""
    if isinstance(config, dict):
        text = json.dumps(config, default=_json_default)
        # the numbers as JSON reads them back (numpy's NaN arrives as a float)
        _finite_or_raise(json.loads(text), "$")
        return text.encode(), "<dict>"
    if isinstance(config, os.PathLike):
        return None, os.fspath(config)
    if isinstance(config, bytes):
        config = config.decode()
    if not isinstance(config, str):
        raise TypeError("config must be a path, a JSON string or a dict, not %s"
                        % type(config).__name__)
    if config.lstrip().startswith("{"):
        return config.encode(), "<json>"
    return None, config


class Desc:
    """A tensor as the runtime sees it: name, data pointer, dtype code, shape."""
    __slots__ = ("name", "ptr", "dtype", "shape")

    def __init__(self, name, ptr, dtype, shape):
        self.name, self.ptr, self.dtype, self.shape = name, ptr, dtype, tuple(shape)


class _Call:
    """The ctypes arguments of one call; keeps every buffer alive."""

    def __init__(self, tensors, grads, out=None, grad_scale=1.0):
        self.keep = []
        self.args = L.EvalArgs()
        self.args.grad_scale = grad_scale
        self.n = self._fill(tensors, "tensors", "n_tensors")
        self._fill(grads, "grads", "n_grads")
        if out is not None:
            self.out = L.Tensor(out.ptr, out.dtype, len(out.shape), self._shape(out.shape), None)
            self.args.out = ctypes.pointer(self.out)

    def _shape(self, shape):
        arr = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        self.keep.append(arr)
        return ctypes.addressof(arr)

    def _fill(self, descs, field, nfield):
        arr = (L.NamedTensor * max(len(descs), 1))()
        for i, d in enumerate(descs):
            name = d.name.encode()
            self.keep.append(name)
            arr[i].name = name
            arr[i].tensor = L.Tensor(d.ptr, d.dtype, len(d.shape), self._shape(d.shape), None)
        self.keep.append(arr)
        setattr(self.args, field, ctypes.addressof(arr))
        setattr(self.args, nfield, len(descs))
        return len(descs)

    def error(self, st):
        return _eval_error(st, _s(self.args.errmsg))


class CompiledLoss:
    """An lk_loss built from a config on a runtime."""

    def __init__(self, config, threads=None, plugin_path=None):
        self.rt = runtime(threads, plugin_path)
        data, source = _config_source(config)
        err = ctypes.create_string_buffer(L.LK_ERRMSG_CAP)
        h = ctypes.c_void_p()
        if data is None:
            st = lib.lk_loss_from_file(self.rt.handle, os.fsencode(source), ctypes.byref(h), err)
        else:
            st = lib.lk_loss_from_json(self.rt.handle, data, len(data), source.encode(),
                                       ctypes.byref(h), err)
        if st != L.OK:
            msg = _s(err.value)
            diags = self.rt.diagnostics
            if st == L.ERR_CONFIG and diags and "unknown loss" in msg:
                raise PluginError(msg + " (plugins not loaded: " + "; ".join(diags) + ")", st)
            raise (ConfigError if st in (L.ERR_CONFIG, L.ERR_IO, L.ERR_NOT_FOUND,
                                         L.ERR_INVALID, L.ERR_FORMAT) else
                   PluginError if st in (L.ERR_LOAD, L.ERR_VERSION) else LosskitError)(msg, st)
        self.handle = h
        self.name = _s(lib.lk_loss_name(h))
        self.reduction = L.REDUCTION_NAMES[lib.lk_loss_reduction(h)]
        self.reduced = self.reduction != "none"
        self.slots = []  # (name, required, differentiable)
        for i in range(lib.lk_loss_slot_count(h)):
            sd = ctypes.POINTER(L.SlotDesc)()
            req, diff = ctypes.c_int32(), ctypes.c_int32()
            lib.lk_loss_slot_at(h, i, ctypes.byref(sd), ctypes.byref(req), ctypes.byref(diff))
            self.slots.append((_s(sd.contents.name), bool(req.value), bool(diff.value)))
        self.slot_names = [s[0] for s in self.slots]
        self.slot_set = frozenset(self.slot_names)
        self.differentiable = {s[0] for s in self.slots if s[2]}
        # a term takes the whole batch at once: processes gather the batch
        self.whole = bool(lib.lk_loss_takes_whole_batch(h))

    def batch_layout(self, names):
        """tensor name -> (dim, views, padded) for the tensors named: how
        processes gather them (lk_loss_batch_at); a DataError when one
        cannot be gathered."""
        out = {}
        err = ctypes.create_string_buffer(L.LK_ERRMSG_CAP)
        for i, name in enumerate(self.slot_names):
            if name not in names:
                continue
            dim, views, padded = ctypes.c_int32(), ctypes.c_uint32(), ctypes.c_int32()
            st = lib.lk_loss_batch_at(self.handle, i, ctypes.byref(dim), ctypes.byref(views),
                                      ctypes.byref(padded), err)
            if st != L.OK:
                raise DataError(_s(err.value), st)
            out[name] = (dim.value, views.value, bool(padded.value))
        return out

    def __del__(self):
        h = getattr(self, "handle", None)
        if h and lib is not None:
            lib.lk_loss_free(h)
            self.handle = None

    def check_names(self, names):
        for n in names:
            if n not in self.slot_names:
                raise ConfigError("'%s' is not a tensor slot of %s (slots: %s)"
                                  % (n, self.name, ", ".join(self.slot_names)))

    def out_shape(self, tensors):
        c = _Call(tensors, [])
        nd = ctypes.c_int32()
        shape = (ctypes.c_int64 * L.LK_MAX_NDIM)()
        st = lib.lk_loss_out_shape(self.handle, ctypes.byref(c.args), ctypes.byref(nd), shape)
        if st != L.OK:
            raise c.error(st)
        return tuple(shape[i] for i in range(nd.value))

    def eval(self, tensors, grads, out=None, grad_scale=1.0):
        c = _Call(tensors, grads, out, grad_scale)
        v = ctypes.c_double()
        st = lib.lk_loss_eval(self.handle, ctypes.byref(c.args), ctypes.byref(v))
        if st != L.OK:
            raise c.error(st)
        return v.value

    def stats(self, tensors):
        """This shard's statistics (a list of floats) for split evaluation."""
        import array
        c = _Call(tensors, [])
        n = ctypes.c_size_t()
        st = lib.lk_loss_stats_count(self.handle, ctypes.byref(c.args), ctypes.byref(n))
        if st != L.OK:
            raise c.error(st)
        buf = array.array("d", bytes(8 * n.value))
        addr = buf.buffer_info()[0] if n.value else None
        st = lib.lk_loss_stats(self.handle, ctypes.byref(c.args), addr, n.value)
        if st != L.OK:
            raise c.error(st)
        return buf

    def finish(self, tensors, grads, global_stats, grad_scale=1.0):
        """The global value from summed statistics, with this shard's gradients."""
        import array
        buf = array.array("d", global_stats)
        c = _Call(tensors, grads, None, grad_scale)
        v = ctypes.c_double()
        addr = buf.buffer_info()[0] if len(buf) else None
        st = lib.lk_loss_finish(self.handle, ctypes.byref(c.args), addr, len(buf),
                                ctypes.byref(v))
        if st != L.OK:
            raise c.error(st)
        return v.value
