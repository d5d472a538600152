"""losskit.Loss: a torch.nn.Module over a losskit config."""
import torch

from . import _lib as L
from ._core import CompiledLoss, DataError, Desc

_DTYPES = {
    torch.float32: L.DTYPE_F32, torch.float64: L.DTYPE_F64, torch.int64: L.DTYPE_I64,
    torch.int32: L.DTYPE_I32, torch.uint8: L.DTYPE_U8, torch.bool: L.DTYPE_BOOL,
}


_NUMPY = {torch.float32: "float32", torch.float64: "float64"}


def _empty(like):
    """An uninitialised gradient shaped like `like`. numpy's allocator asks
    the kernel for transparent huge pages on large arrays, which makes the
    first write of a fresh 64 MB gradient several times cheaper than
    torch.empty's (page faults dominate a large loss call otherwise)."""
    kind = _NUMPY.get(like.dtype)
    if kind is None or like.numel() < (1 << 20):
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    import numpy
    return torch.from_numpy(numpy.empty(tuple(like.shape), dtype=kind))


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
    def forward(ctx, module, names, want, *tensors):
        value, grads = module._run(names, want, tensors)
        ctx.save_for_backward(*[g if g is not None else torch.empty(0) for g in grads])
        ctx.has = [g is not None for g in grads]
        return value

    @staticmethod
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        out = [None, None, None]
        # reduced, or reduction none under a constant upstream gradient (a sum)
        flat = grad_output.reshape(-1)
        uniform = flat.numel() <= 1 or bool((flat == flat[0]).all())
        scale = float(flat[0]) if uniform and flat.numel() else 1.0
        for g, has in zip(saved, ctx.has):
            if not has:
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
        self.last_data_ptrs = {}  # slot -> the data pointer handed to the runtime

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
            given = dict(input)
        else:
            given = {"input": input, "target": target, "weight": weight}
            given.update(tensors)
        given = {k: v for k, v in given.items() if v is not None}
        self._loss.check_names(given)
        names, want, ts = [], [], []
        for k, t in given.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError("%s: expected a torch.Tensor, got %s" % (k, type(t).__name__))
            if t.device.type != "cpu":
                raise DataError("%s: a %s tensor; losskit runs on the CPU: pass "
                                "tensor.cpu() (and move the loss back with .to(device))"
                                % (k, t.device))
            if t.requires_grad and k not in self._loss.differentiable and \
                    torch.is_grad_enabled():
                raise DataError("%s: '%s' requires grad but the loss has no gradient with "
                                "respect to it (differentiable: %s); pass %s.detach()"
                                % (self._loss.name, k,
                                   ", ".join(sorted(self._loss.differentiable)) or "none", k))
            names.append(k)
            want.append(bool(t.requires_grad and k in self._loss.differentiable))
            ts.append(t)
        return _Function.apply(self, tuple(names), tuple(want), *ts)

    def _run(self, names, want, tensors):
        held = [t.detach().contiguous() for t in tensors]
        descs = [_desc(n, t) for n, t in zip(names, held)]
        # in place: nn.Module.__setattr__ costs microseconds a call
        self.last_data_ptrs.clear()
        self.last_data_ptrs.update((d.name, d.ptr) for d in descs)
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
