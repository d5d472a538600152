"""losskit.Loss: a torch.nn.Module over a losskit config."""
import ctypes

import numpy as np
import torch

from . import _lib as L
from ._core import CompiledLoss, DataError, Desc
from ._pool import MIN_BYTES as _POOL_MIN_BYTES
from ._pool import aligned_empty as _aligned_empty
from ._pool import pool as _pool

# the names of the tensors given as input, target, weight (bit 0, 1, 2)
_NAMES = [tuple(n for b, n in enumerate(("input", "target", "weight")) if k >> b & 1)
          for k in range(8)]
_MAX_PLANS = 32  # call signatures a Loss keeps (variable shapes would grow it forever)

_DTYPES = {
    torch.float32: L.DTYPE_F32, torch.float64: L.DTYPE_F64, torch.int64: L.DTYPE_I64,
    torch.int32: L.DTYPE_I32, torch.uint8: L.DTYPE_U8, torch.bool: L.DTYPE_BOOL,
}


_NUMPY = {torch.float32: "float32", torch.float64: "float64"}


def _empty(like):
    """An uninitialised gradient shaped like `like`. A large one comes from
    the gradient pool (_pool.py: memory already touched, once the tensor it
    last backed has died), else from numpy, whose allocator asks the kernel
    for transparent huge pages on large arrays, which makes the first write
    of a fresh 64 MB gradient several times cheaper than torch.empty's (page
    faults dominate a large loss call otherwise). Either starts on a 64-byte
    boundary, as torch's own allocator does, so that the runtime can stream
    it (_pool.aligned_empty)."""
    kind = _NUMPY.get(like.dtype)
    if kind is None:
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    n = like.numel()
    if n * like.element_size() >= _POOL_MIN_BYTES:
        g = _pool.empty(like.shape, np.dtype(kind), n)
        if g is not None:
            return g
    if n < (1 << 20):
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    return torch.from_numpy(_aligned_empty(n, np.dtype(kind))).view(like.shape)


_dist_initialized = None


def _distributed_on():
    """torch.distributed is available and initialised (imported once)."""
    global _dist_initialized
    if _dist_initialized is None:
        import torch.distributed as dist
        _dist_initialized = dist.is_initialized if dist.is_available() else (lambda: False)
    return _dist_initialized()


class _Plan:
    """The ctypes arguments of one call signature (slot names, dtypes,
    shapes, gradients wanted), built once: a call only writes the data
    pointers. A plan is used by one call at a time (Loss._run takes it out
    of the cache while the runtime runs, without the GIL)."""
    __slots__ = ("args", "args_ref", "value", "value_ref", "tdata", "gdata", "gslots",
                 "dtype", "keep", "empty", "any_empty")

    def __init__(self, loss, names, want, held):
        descs = [_desc(n, t) for n, t in zip(names, held)]  # DataError for a dtype
        self.keep = []
        self.args = L.EvalArgs()
        self.args.grad_scale = 1.0
        self.tdata = self._fill(descs, "tensors", "n_tensors")
        gdescs = [d for d, w in zip(descs, want) if w]
        self.gdata = self._fill(gdescs, "grads", "n_grads")
        self.empty = [t.numel() == 0 for t in held]
        self.any_empty = any(self.empty)
        # (slot index, its gradient's ctypes tensor, small): below the pool's
        # size torch's allocator serves a gradient best
        self.gslots = [(i, d, held[i].numel() * held[i].element_size() < _POOL_MIN_BYTES)
                       for i, d in zip([i for i, w in enumerate(want) if w], self.gdata)]
        self.value = ctypes.c_double()
        self.args_ref = ctypes.byref(self.args)
        self.value_ref = ctypes.byref(self.value)
        first = dict(zip(names, held)).get(loss.slot_names[0])
        self.dtype = first.dtype if first is not None else torch.float64

    def _fill(self, descs, field, nfield):
        arr = (L.NamedTensor * max(len(descs), 1))()
        data = []
        for i, d in enumerate(descs):
            name = d.name.encode()
            shape = (ctypes.c_int64 * max(len(d.shape), 1))(*d.shape)
            self.keep += [name, shape]
            arr[i].name = name
            arr[i].tensor = L.Tensor(None, d.dtype, len(d.shape), ctypes.addressof(shape), None)
            data.append(arr[i].tensor)  # shares arr's memory: setting .data fills the call
        self.keep.append(arr)
        setattr(self.args, field, ctypes.addressof(arr))
        setattr(self.args, nfield, len(descs))
        return data


def _desc(name, t):
    code = _DTYPES.get(t.dtype)
    if code is None:
        raise DataError("%s: dtype %s is not one losskit reads (float32, float64, int64, "
                        "int32, uint8, bool)" % (name, str(t.dtype).replace("torch.", "")))
    return Desc(name, t.data_ptr() if t.numel() else None, code, t.shape)


def _align(g, go):
    """d(sum go * losses)/d(slot) from g, the gradient of the plain sum, when
    each per-position loss reads its own positions of the slot: go has the
    slot's shape, or the slot's without one dim (class, feature)."""
    if go.shape == g.shape:
        return g * go
    gs, os_ = tuple(g.shape), tuple(go.shape)
    for k in range(len(gs)):
        if gs[:k] + gs[k + 1:] == os_:
            return g * go.unsqueeze(k)
    raise DataError("reduction none: cannot carry a non-uniform upstream gradient of shape %s "
                    "to a slot of shape %s; reduce the per-position losses with a constant "
                    "weight, or use reduction mean or sum" % (list(os_), list(gs)))


class _Function(torch.autograd.Function):
    """Computes the value and every wanted gradient in forward (one call into
    the runtime, or the split pair around an all-reduce); backward scales the
    stored gradients by grad_output."""

    @staticmethod
    def forward(ctx, module, names, *tensors):
        # needs_input_grad: a tensor requires grad and grad mode is on, so no
        # gradient is computed that autograd would not ask for
        value, grads = module._call(names, tensors, ctx.needs_input_grad[2:])
        # saved tensors (not ctx attributes): autograd releases them once
        # backward returns unless the graph is retained, so that a leaf's
        # .grad becomes the gradient itself instead of a copy of it
        ctx.save_for_backward(*grads)
        return value

    @staticmethod
    def backward(ctx, grad_output):
        grads = ctx.saved_tensors
        if grad_output.dim() == 0:
            scale = float(grad_output)
            if scale == 1.0:  # value.backward(): the gradients as computed
                return (None, None) + grads
            return (None, None) + tuple(g * scale if g is not None else None for g in grads)
        out = [None, None]
        # reduced, or reduction none under a constant upstream gradient (a sum)
        flat = grad_output.reshape(-1)
        uniform = flat.numel() <= 1 or bool((flat == flat[0]).all())
        scale = float(flat[0]) if uniform and flat.numel() else 1.0
        for g in grads:
            if g is None:
                out.append(None)
            elif uniform:
                out.append(g if scale == 1.0 else g * scale)
            else:
                out.append(_align(g, grad_output))
        return tuple(out)


class Loss(torch.nn.Module):
    """A loss from a losskit config: a path, a JSON string or a dict.

    loss(input, target=None, weight=None, **tensors) returns the value (a
    0-dim tensor; per-position losses for reduction none) with autograd to
    every differentiable tensor given. Tensors are named by slot, or by the
    names a config's "tensors" bind slots to (deep supervision:
    loss(x, t, logits_x2=x2, mask_x2=t2)); loss({"name": tensor, ...})
    takes them all from one dict. CPU float32/float64 tensors are passed
    to the runtime in place (a non-contiguous one is made contiguous).

    threads: evaluation threads (like --threads); plugin_path: plugin folders
    or .so files searched before $LOSSKIT_PLUGIN_PATH and the built-ins.

    process_group: with torch.distributed, each process holds a shard of the
    batch (split along dim 0); the statistics are summed over the group and
    every process gets the loss of the whole batch and the gradient of that
    loss with respect to its own tensors. None: the default group when
    torch.distributed is initialised, else local; False: always local.
    ddp_scale: multiply the gradient (not the value) by the group's size, so
    that DistributedDataParallel's averaging of gradients gives the gradient
    of one process on the whole batch (docs/python.md)."""

    def __init__(self, config, threads=None, plugin_path=None, process_group=None,
                 ddp_scale=False):
        super().__init__()
        self._loss = CompiledLoss(config, threads, plugin_path)
        self.process_group = process_group
        self.ddp_scale = ddp_scale
        # in a list, set in place: nn.Module.__setattr__ costs microseconds a call
        self._last = [None]  # (slot names, data pointers) of the last call
        self._plans = {}  # call signature -> _Plan

    @property
    def name(self):
        return self._loss.name

    @property
    def reduction(self):
        return self._loss.reduction

    @property
    def slots(self):
        return list(self._loss.slot_names)

    def extra_repr(self):
        return "%s, reduction=%s" % (self._loss.name, self._loss.reduction)

    def _group(self):
        if self.process_group is False:
            return None
        import torch.distributed as dist
        if not dist.is_available() or not dist.is_initialized():
            if self.process_group is not None:
                raise RuntimeError("losskit.Loss: a process_group is given but "
                                   "torch.distributed is not initialised")
            return None
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def forward(self, input=None, target=None, weight=None, **tensors):
        if isinstance(input, dict):
            # loss({"logits_x2": x2, ...}): every tensor by name, for names
            # that are no Python keyword argument
            if target is not None or weight is not None or tensors:
                raise TypeError("give the tensors either as one dict or as arguments, not both")
            items = [(k, v) for k, v in input.items() if v is not None]
            names, ts = tuple([k for k, _ in items]), [v for _, v in items]
        else:
            names = _NAMES[(input is not None) | (target is not None) << 1 |
                           (weight is not None) << 2]
            ts = [v for v in (input, target, weight) if v is not None]
            if tensors:
                items = [(k, v) for k, v in tensors.items() if v is not None]
                names += tuple([k for k, _ in items])
                ts += [v for _, v in items]
        if not self._loss.slot_set.issuperset(names):
            self._loss.check_names(names)
        # the tensors are checked in _Function.forward, which sees whether
        # autograd wants each one's gradient
        return _Function.apply(self, names, *ts)

    def _call(self, names, tensors, want):
        """(value, gradients) for _Function.forward. want: autograd's
        needs_input_grad, refused for a slot the loss cannot differentiate."""
        loss = self._loss
        diff = loss.differentiable
        # one pass: the checks, the call signature, the data pointers
        sig = [names, want]
        ptrs = []
        contiguous = True
        for k, t, w in zip(names, tensors, want):
            if not isinstance(t, torch.Tensor):
                raise TypeError("%s: expected a torch.Tensor, got %s" % (k, type(t).__name__))
            if not t.is_cpu:
                raise DataError("%s: a %s tensor; losskit runs on the CPU: pass "
                                "tensor.cpu() (and move the loss back with .to(device))"
                                % (k, t.device))
            if w and k not in diff:
                raise DataError("%s: '%s' requires grad but the loss has no gradient with "
                                "respect to it (differentiable: %s); pass %s.detach()"
                                % (loss.name, k, ", ".join(sorted(diff)) or "none", k))
            sig += (t.dtype, t.shape)
            ptrs.append(t.data_ptr())
            if not t.is_contiguous():
                contiguous = False
        pg = self.process_group
        if not loss.reduced or not (pg is False or (pg is None and not _distributed_on())):
            return self._run_general(names, want, tensors)
        if not contiguous:  # the same signature, other pointers
            tensors = [t.contiguous() for t in tensors]
            ptrs = [t.data_ptr() for t in tensors]
        return self._run_local(names, want, tensors, tuple(sig), ptrs)

    @property
    def last_data_ptrs(self):
        """slot -> the data pointer handed to the runtime by the last call
        (None for an empty tensor): the tensor's own data_ptr() unless it had
        to be made contiguous."""
        last = self._last[0]
        return dict(zip(*last)) if last is not None else {}

    def _run_local(self, names, want, tensors, key, ptrs):
        """The common call, a reduced value on one process, through a
        plan cached per signature (key): the ctypes arguments are built once
        and only the data pointers change from call to call."""
        plans = self._plans
        plan = plans.pop(key, None)  # a concurrent call on the same key builds its own
        if plan is None:
            plan = _Plan(self._loss, names, want, tensors)
        if plan.any_empty:
            ptrs = [None if e else p for p, e in zip(ptrs, plan.empty)]
        for d, p in zip(plan.tdata, ptrs):
            d.data = p
        grads = [None] * len(ptrs)
        for i, d, small in plan.gslots:
            t = tensors[i]
            g = torch.empty_like(t) if small else _empty(t)
            grads[i] = g
            d.data = None if plan.empty[i] else g.data_ptr()
        st = L.lk_loss_eval_unchecked(self._loss.handle, plan.args_ref, plan.value_ref)
        if st != L.OK:
            # the general path raises the runtime's message from fresh arguments
            return self._run_general(names, want, tensors)
        self._last[0] = (names, ptrs)
        value = plan.value.value
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plans[key] = plan
        return torch.scalar_tensor(value, dtype=plan.dtype), grads

    def _run_general(self, names, want, tensors):
        held = [t.detach().contiguous() for t in tensors]
        descs = [_desc(n, t) for n, t in zip(names, held)]
        self._last[0] = (names, [d.ptr for d in descs])
        grads = [_empty(t) if w else None for t, w in zip(held, want)]
        gdescs = [_desc(n, g) for n, g in zip(names, grads) if g is not None]
        loss = self._loss
        first = dict(zip(names, held)).get(loss.slot_names[0])
        dtype = first.dtype if first is not None else torch.float64
        if loss.reduction == "none":
            out = torch.empty(loss.out_shape(descs), dtype=dtype)
            loss.eval(descs, gdescs, _desc("out", out))
            return out, grads
        group = self._group()
        if group is None:
            value = loss.eval(descs, gdescs)
        else:
            import torch.distributed as dist
            stats = torch.tensor(loss.stats(descs), dtype=torch.float64)
            dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
            scale = float(dist.get_world_size(group)) if self.ddp_scale else 1.0
            value = loss.finish(descs, gdescs, stats.tolist(), grad_scale=scale)
        return torch.tensor(value, dtype=dtype), grads
