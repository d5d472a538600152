"""ctypes declarations of liblosskit's public API (host/include/losskit/losskit.h)."""
import ctypes
import ctypes.util
import os

LK_ERRMSG_CAP = 512
LK_MAX_NDIM = 16

# lk_status
OK = 0
ERR_INVALID = -1
ERR_NOMEM = -2
ERR_DTYPE = -3
ERR_SHAPE = -4
ERR_UNSUPPORTED = -5
ERR_NUMERIC = -6
ERR_IO = -7
ERR_FORMAT = -8
ERR_CONFIG = -9
ERR_NOT_FOUND = -10
ERR_LOAD = -11
ERR_VERSION = -12
ERR_INTERNAL = -13

# lk_dtype
DTYPE_F32, DTYPE_F64, DTYPE_I64, DTYPE_I32, DTYPE_U8, DTYPE_BOOL = 1, 2, 3, 4, 5, 6
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int64", 4: "int32", 5: "uint8", 6: "bool"}
DTYPE_CODES = {v: k for k, v in DTYPE_NAMES.items()}

REDUCTION_NAMES = {0: "none", 1: "mean", 2: "sum", 3: "batchmean"}
REDUCTION_NONE = 0

SLOT_OPTIONAL = 0x1
SLOT_DIFFERENTIABLE = 0x2
LOSS_FUSED, LOSS_WHOLE, LOSS_UNBOUNDED = 0x1, 0x2, 0x4

c_int64_p = ctypes.POINTER(ctypes.c_int64)


# Pointers the binding fills on every call are plain addresses (c_void_p):
# ctypes.cast costs microseconds a call, an address nothing.
class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("ndim", ctypes.c_int32),
                ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p)]


class NamedTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("tensor", Tensor), ("origin", ctypes.c_char_p)]


class EvalArgs(ctypes.Structure):
    _fields_ = [("tensors", ctypes.c_void_p), ("n_tensors", ctypes.c_size_t),
                ("grads", ctypes.c_void_p), ("n_grads", ctypes.c_size_t),
                ("out", ctypes.POINTER(Tensor)), ("grad_scale", ctypes.c_double),
                ("errmsg", ctypes.c_char * LK_ERRMSG_CAP)]


class RuntimeOptions(ctypes.Structure):
    _fields_ = [("plugin_path", ctypes.c_char_p), ("use_env_path", ctypes.c_int32),
                ("use_default_path", ctypes.c_int32), ("threads", ctypes.c_int32)]


class ParamDesc(ctypes.Structure):
    # unset (since ABI 1.2) is read through lk_param_unset_of, never directly
    _fields_ = [("name", ctypes.c_char_p), ("doc", ctypes.c_char_p), ("type", ctypes.c_int32),
                ("flags", ctypes.c_uint32), ("default_number", ctypes.c_double),
                ("min", ctypes.c_double), ("max", ctypes.c_double),
                ("choices", ctypes.POINTER(ctypes.c_char_p)), ("default_choice", ctypes.c_char_p),
                ("default_list", ctypes.POINTER(ctypes.c_double)),
                ("default_list_len", ctypes.c_int32), ("list_min_len", ctypes.c_int32),
                ("list_max_len", ctypes.c_int32)]


class SlotDesc(ctypes.Structure):
    # values (since ABI 1.1), ndims (since 1.3) and batch (since 1.6) are
    # read through lk_slot_values_of, lk_slot_ndims_of and lk_slot_batch_of,
    # never directly
    _fields_ = [("name", ctypes.c_char_p), ("doc", ctypes.c_char_p), ("dtypes", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("shape", ctypes.c_int32)]


class LossDesc(ctypes.Structure):
    _fields_ = [("id", ctypes.c_char_p), ("summary", ctypes.c_char_p), ("version", ctypes.c_char_p),
                ("params", ctypes.POINTER(ctypes.POINTER(ParamDesc))),
                ("slots", ctypes.POINTER(ctypes.POINTER(SlotDesc))),
                ("reductions", ctypes.c_uint32), ("default_reduction", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


class LossInfo(ctypes.Structure):
    _fields_ = [("id", ctypes.c_char_p), ("plugin_file", ctypes.c_char_p),
                ("plugin_name", ctypes.c_char_p), ("plugin_version", ctypes.c_char_p),
                ("desc", ctypes.POINTER(LossDesc)), ("shadowed", ctypes.c_int32),
                ("shadowed_by", ctypes.c_char_p), ("plugin_abi_minor", ctypes.c_uint32)]


def _candidates():
    env = os.environ.get("LOSSKIT_LIB")
    if env:
        yield env
        return
    try:
        from . import _paths  # written by meson: the build tree's or the installed library
        yield _paths.LIBRARY
    except ImportError:
        pass
    found = ctypes.util.find_library("losskit")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("losskit: cannot load liblosskit; tried: %s. Set LOSSKIT_LIB to the "
                      "library's path" % ("; ".join(tried) or "nothing found"))


lib, library_path = _load()

_vp = ctypes.c_void_p
_st = ctypes.c_int


def _decl(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)


_decl("lk_status_name", ctypes.c_char_p, _st)
_decl("lk_runtime_options_init", None, ctypes.POINTER(RuntimeOptions))
_decl("lk_runtime_open", _st, ctypes.POINTER(RuntimeOptions), ctypes.POINTER(_vp), ctypes.c_char_p)
_decl("lk_runtime_close", None, _vp)
_decl("lk_runtime_diag_count", ctypes.c_size_t, _vp)
_decl("lk_runtime_diag", ctypes.c_char_p, _vp, ctypes.c_size_t)
_decl("lk_runtime_threads", ctypes.c_int32, _vp)
_decl("lk_runtime_loss_count", ctypes.c_size_t, _vp)
_decl("lk_runtime_loss_at", _st, _vp, ctypes.c_size_t, ctypes.POINTER(LossInfo))
_decl("lk_runtime_find", _st, _vp, ctypes.c_char_p, ctypes.POINTER(LossInfo), ctypes.c_char_p)
_decl("lk_slot_values_of", ctypes.c_int32, ctypes.POINTER(SlotDesc), ctypes.c_uint32,
      ctypes.c_uint32)
_decl("lk_slot_ndims_of", ctypes.c_uint32, ctypes.POINTER(SlotDesc), ctypes.c_uint32)
_decl("lk_slot_batch_of", ctypes.c_int32, ctypes.POINTER(SlotDesc), ctypes.c_uint32,
      ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_int32))
_decl("lk_param_unset_of", ctypes.c_char_p, ctypes.POINTER(ParamDesc), ctypes.c_uint32)
_decl("lk_loss_from_json", _st, _vp, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
      ctypes.POINTER(_vp), ctypes.c_char_p)
_decl("lk_loss_from_file", _st, _vp, ctypes.c_char_p, ctypes.POINTER(_vp), ctypes.c_char_p)
_decl("lk_loss_free", None, _vp)
_decl("lk_loss_reduction", ctypes.c_int32, _vp)
_decl("lk_loss_name", ctypes.c_char_p, _vp)
_decl("lk_loss_slot_count", ctypes.c_size_t, _vp)
_decl("lk_loss_slot_at", _st, _vp, ctypes.c_size_t, ctypes.POINTER(ctypes.POINTER(SlotDesc)),
      ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32))
_decl("lk_loss_takes_whole_batch", ctypes.c_int, _vp)
_decl("lk_loss_batch_at", _st, _vp, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int32),
      ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_int32), ctypes.c_char_p)
_decl("lk_loss_out_shape", _st, _vp, ctypes.POINTER(EvalArgs), ctypes.POINTER(ctypes.c_int32),
      c_int64_p)
_decl("lk_loss_eval", _st, _vp, ctypes.POINTER(EvalArgs), ctypes.POINTER(ctypes.c_double))
_decl("lk_loss_stats_count", _st, _vp, ctypes.POINTER(EvalArgs), ctypes.POINTER(ctypes.c_size_t))
_decl("lk_loss_stats", _st, _vp, ctypes.POINTER(EvalArgs), ctypes.c_void_p, ctypes.c_size_t)
_decl("lk_loss_finish", _st, _vp, ctypes.POINTER(EvalArgs), ctypes.c_void_p, ctypes.c_size_t,
      ctypes.POINTER(ctypes.c_double))

# The same function without argument checks, for the per-call path of
# losskit.Loss (ctypes' conversions cost a fraction of a microsecond a
# call): its caller passes a c_void_p handle and byref() of an EvalArgs and
# a c_double, nothing else.
lk_loss_eval_unchecked = ctypes.CDLL(library_path).lk_loss_eval
lk_loss_eval_unchecked.restype = ctypes.c_int
