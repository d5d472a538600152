"""losskit.Loss: a torch.nn.Module over a losskit config."""
import ctypes
import functools
import os

import numpy as np
import torch

from . import _lib as L
from ._core import CompiledLoss, DataError, Desc, LosskitError, _config_source
from ._pool import MIN_BYTES as _POOL_MIN_BYTES
from ._pool import aligned_empty as _aligned_empty
from ._pool import pool as _pool

# the names of the tensors given as input, target, weight (bit 0, 1, 2)
_NAMES = [tuple(n for b, n in enumerate(("input", "target", "weight")) if k >> b & 1)
          for k in range(8)]
_INPUT_TARGET = _NAMES[3]
_MAX_PLANS = 32  # signatures a Loss keeps plans for (variable shapes would grow them forever)
# A gradient up to this size goes to autograd through torch.dot, a larger one
# through an autograd.Function that hands it over uncopied: torch.dot's
# backward writes a new gradient, which costs more than the Python of the
# Function from about 3000 float32 elements on (measured: 2.8 us saved a
# call at 64 elements, 0.9 at 2048, 0.1 lost at 3072; the hook that makes a
# second differentiation raise takes about 3 us of it back: 19.3 -> 22.7 us
# for mse's call and backward at 64 elements, against 23.5 us through the
# Function)
_NATIVE_MAX_BYTES = 1 << 13
_grad_enabled = torch.is_grad_enabled
_dot = torch.dot
_empty_like = torch.empty_like

_DTYPES = {
    torch.float32: L.DTYPE_F32, torch.float64: L.DTYPE_F64, torch.int64: L.DTYPE_I64,
    torch.int32: L.DTYPE_I32, torch.uint8: L.DTYPE_U8, torch.bool: L.DTYPE_BOOL,
}


_NUMPY = {torch.float32: "float32", torch.float64: "float64"}

# The compiled per-call path (_fast.cpp), when the build made it and
# LOSSKIT_PY_FAST is not 0; without it every call takes the ctypes path.
_fast = None
if os.environ.get("LOSSKIT_PY_FAST", "1") != "0":
    try:
        from . import _fast
    except ImportError:
        _fast = None


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


# torch.distributed.is_initialized, looked up once (torch imports the package)
_dist_initialized = (torch.distributed.is_initialized if torch.distributed.is_available()
                     else (lambda: False))


class _Plan:
    """The ctypes arguments of one call signature (slot names, dtypes,
    shapes, contiguity, gradients wanted), built once: a call only writes
    the data pointers. A plan is used by one call at a time (Loss._run_local
    takes it out of the cache while the runtime runs, without the GIL)."""
    __slots__ = ("args", "value", "run", "tdata", "gslots", "dtype", "keep", "empty",
                 "any_empty", "copy", "native")

    def __init__(self, loss, names, held, want):
        loss.check_names(names)
        _check(loss, names, held, want)
        descs = [_desc(n, t) for n, t in zip(names, held)]  # DataError for a dtype
        self.keep = []
        self.args = L.EvalArgs()
        self.args.grad_scale = 1.0
        self.tdata = self._fill(descs, "tensors", "n_tensors")
        gdescs = [d for d, w in zip(descs, want) if w]
        gdata = self._fill(gdescs, "grads", "n_grads")
        self.empty = [t.numel() == 0 for t in held]
        self.any_empty = any(self.empty)
        self.copy = not all(t.is_contiguous() for t in held)
        # (slot index, its gradient's ctypes tensor, small): below the pool's
        # size torch's allocator serves a gradient best; None for an empty
        # tensor, which hands the runtime no data pointer
        self.gslots = [(i, d, None if self.empty[i] else
                        held[i].numel() * held[i].element_size() < _POOL_MIN_BYTES)
                       for i, d in zip([i for i, w in enumerate(want) if w], gdata)]
        self.value = ctypes.c_double()
        # the call into the runtime, its arguments bound once
        self.run = functools.partial(L.lk_loss_eval_unchecked, loss.handle,
                                     ctypes.byref(self.args), ctypes.byref(self.value))
        first = dict(zip(names, held)).get(loss.slot_names[0])
        self.dtype = first.dtype if first is not None else torch.float64
        # One small flat gradient of the value's dtype goes to autograd
        # through torch.dot (Loss._run_local); an N-d tensor would need a
        # view first, whose two autograd nodes cost more than the
        # autograd.Function does.
        self.native = None
        if len(self.gslots) == 1:
            t = held[self.gslots[0][0]]
            if (t.dim() == 1 and t.dtype == self.dtype
                    and t.numel() * t.element_size() <= _NATIVE_MAX_BYTES):
                self.native = ctypes.c_float if t.dtype == torch.float32 else ctypes.c_double

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


def _check(loss, names, tensors, want):
    """The checks of a call's tensors before their dtypes (_desc): want
    says which gradients autograd will ask for."""
    diff = loss.differentiable
    for k, t, w in zip(names, tensors, want):
        if not isinstance(t, torch.Tensor):
            raise TypeError("%s: expected a torch.Tensor, got %s" % (k, type(t).__name__))
        if not t.is_cpu:
            raise DataError("%s: a %s tensor; losskit runs on the CPU: pass "
                            "tensor.cpu() (and move the loss back with .to(device))"
                            % (k, t.device))
        if t.layout != torch.strided:
            raise DataError("%s: a %s tensor; losskit reads dense tensors: pass "
                            "tensor.to_dense()" % (k, str(t.layout).replace("torch.", "")))
        if w and k not in diff:
            raise DataError("%s: '%s' requires grad but the loss has no gradient with "
                            "respect to it (differentiable: %s); pass %s.detach()"
                            % (loss.name, k, ", ".join(sorted(diff)) or "none", k))


def _desc(name, t):
    code = _DTYPES.get(t.dtype)
    if code is None:
        raise DataError("%s: dtype %s is not one losskit reads (float32, float64, int64, "
                        "int32, uint8, bool)" % (name, str(t.dtype).replace("torch.", "")))
    return Desc(name, t.data_ptr() if t.numel() else None, code, t.shape)


def _fits(shape, out):
    """The dims k of shape without which it is out."""
    return [k for k in range(len(shape)) if shape[:k] + shape[k + 1:] == out]


def _dropped_dims(loss, names, held, out):
    """For each tensor, the dim its positions lose in the per-position
    losses of reduction none (shape out): None where its shape is out, k
    where one dim k fits, and -1 where none does or where more than one
    does and the batch of one cannot tell them apart (cross_entropy on
    (4, 4, 5) gives (4, 5), which is the input without dim 0 or dim 1: on
    the first row alone it gives (1, 5), the input's (1, 4, 5) without dim
    1). The tensors share dim 0, the batch, as split evaluation has them."""
    drops, probe = [], None
    for t in held:
        shape = tuple(t.shape)
        if shape == out:
            drops.append(None)
            continue
        ks = _fits(shape, out)
        if len(ks) > 1:
            if probe is None:
                probe = ()
                if all(u.dim() > 0 and u.shape[0] > 1 for u in held):
                    try:
                        probe = loss.out_shape([_desc(n, u[:1].contiguous())
                                                for n, u in zip(names, held)])
                    except LosskitError:
                        probe = ()
            ks = [k for k in ks if k > 0 and (1,) + shape[1:k] + shape[k + 1:] == probe]
        drops.append(ks[0] if len(ks) == 1 else -1)
    return drops


def _align(g, go, k):
    """d(sum go * losses)/d(slot) from g, the gradient of the plain sum, when
    each per-position loss reads its own positions of the slot: go has the
    slot's shape, or the slot's without dim k (class, feature:
    _dropped_dims)."""
    if go.shape == g.shape:
        return g * go
    if k is not None and k >= 0:
        return g * go.unsqueeze(k)
    gs, os_ = list(g.shape), list(go.shape)
    if len(_fits(tuple(gs), tuple(os_))) > 1:
        raise DataError("reduction none: the per-position losses, of shape %s, are the slot's "
                        "shape %s without more than one of its dims, and the batch of one does "
                        "not tell which, so a non-uniform upstream gradient cannot be carried to "
                        "it; make the dims' sizes differ, weight the losses with a constant, or "
                        "use reduction mean or sum" % (os_, gs))
    raise DataError("reduction none: cannot carry a non-uniform upstream gradient of shape %s "
                    "to a slot of shape %s; reduce the per-position losses with a constant "
                    "weight, or use reduction mean or sum" % (os_, gs))


class _NoSecond(torch.autograd.Function):
    """A losskit gradient handed to autograd under create_graph: the same
    values, tied to the tensor they are the gradient of, so that
    differentiating them again raises instead of taking them for a constant
    (which would drop the loss's second derivatives without a word)."""

    @staticmethod
    def forward(ctx, g, anchor):
        return g.view_as(g)

    @staticmethod
    def backward(ctx, grad_output):
        raise DataError("losskit gives first derivatives only: a losskit gradient was "
                        "differentiated again (create_graph=True through the loss); compute "
                        "this loss with torch where its second derivatives are needed")


class _FirstOrderHook:
    """A hook on the torch.dot node's output: under create_graph (grad mode
    on in backward) the upstream gradient tied to anchor by _NoSecond;
    otherwise nothing (None keeps the gradient as it is)."""
    __slots__ = ("anchor",)

    def __init__(self, anchor):
        self.anchor = anchor

    def __call__(self, grad):
        if _grad_enabled():
            return _NoSecond.apply(grad, self.anchor)
        return None


def _first_order(grads, anchors):
    """grads as backward returns them; under create_graph (grad mode on in
    backward) each one tied to its tensor by _NoSecond."""
    if not torch.is_grad_enabled():
        return grads
    return tuple(_NoSecond.apply(g, a) if g is not None and a is not None and a.requires_grad
                 else g for g, a in zip(grads, anchors))


class _Function(torch.autograd.Function):
    """The general call (reduction none, split evaluation): computes the
    value and every wanted gradient in forward (one call into the runtime,
    or the split pair around an all-reduce); backward scales the stored
    gradients by grad_output."""

    @staticmethod
    def forward(ctx, module, names, grad_on, *tensors):
        # needs_input_grad says which tensors require grad, also under
        # no_grad: grad_on (the grad mode of the caller) keeps a gradient
        # from being computed that autograd would not ask for
        want = ctx.needs_input_grad[3:] if grad_on else (False,) * len(tensors)
        module._loss.check_names(names)
        _check(module._loss, names, tensors, want)
        value, grads = module._run_general(names, want, tensors)
        # saved tensors (not ctx attributes): autograd releases them once
        # backward returns unless the graph is retained, so that a leaf's
        # .grad becomes the gradient itself instead of a copy of it
        ctx.save_for_backward(*grads)
        ctx.anchors = (None, None, None) + tensors
        ctx.loss, ctx.names = module._loss, names  # for _dropped_dims, if backward needs it
        return value

    @staticmethod
    def backward(ctx, grad_output):
        grads = ctx.saved_tensors
        if grad_output.dim() == 0:
            scale = float(grad_output)
            if scale == 1.0:  # value.backward(): the gradients as computed
                return _first_order((None, None, None) + grads, ctx.anchors)
            return _first_order((None, None, None) + tuple(g * scale if g is not None else None
                                                           for g in grads), ctx.anchors)
        out = [None, None, None]
        # reduced, or reduction none under a constant upstream gradient (a sum)
        flat = grad_output.reshape(-1)
        uniform = flat.numel() <= 1 or bool((flat == flat[0]).all())
        scale = float(flat[0]) if uniform and flat.numel() else 1.0
        drops = [None] * len(grads) if uniform else _dropped_dims(
            ctx.loss, ctx.names, [t.detach() for t in ctx.anchors[3:]], tuple(grad_output.shape))
        for g, k in zip(grads, drops):
            if g is None:
                out.append(None)
            elif uniform:
                out.append(g if scale == 1.0 else g * scale)
            else:
                out.append(_align(g, grad_output, k))
        return _first_order(tuple(out), ctx.anchors)


class _Computed(torch.autograd.Function):
    """A reduced value whose gradients the runtime has already written
    (Loss._run_local): forward returns the value, backward the gradients
    times grad_output. tensors: those the gradients belong to, in order."""

    @staticmethod
    def forward(ctx, value, dtype, grads, *tensors):
        ctx.save_for_backward(*grads)  # released after backward, as in _Function
        ctx.anchors = (None, None, None) + tensors
        return torch.scalar_tensor(value, dtype=dtype)

    @staticmethod
    def backward(ctx, grad_output):
        grads = ctx.saved_tensors
        scale = float(grad_output)  # a 0-dim upstream gradient
        if scale == 1.0:  # value.backward(): the gradients as computed, uncopied
            return _first_order((None, None, None, *grads), ctx.anchors)
        return _first_order((None, None, None, *[g * scale for g in grads]), ctx.anchors)


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
    loss with respect to its own tensors. A whole-batch loss (ntxent,
    supcon, ctc, lovasz) is gathered instead, along the batch dims it
    declares, and every process evaluates the whole batch. None: the
    default group when torch.distributed is initialised, else local;
    False: always local.
    ddp_scale: multiply the gradient (not the value) by the group's size, so
    that DistributedDataParallel's averaging of gradients gives the gradient
    of one process on the whole batch (docs/python.md)."""

    def __init__(self, config, threads=None, plugin_path=None, process_group=None,
                 ddp_scale=False):
        super().__init__()
        self._build(config, threads, plugin_path)
        self.process_group = process_group  # sets _local too
        self.ddp_scale = ddp_scale

    def _build(self, config, threads, plugin_path):
        """The runtime's side of the module, which pickling rebuilds: the
        compiled loss, its call plans, the compiled caller."""
        self._loss = CompiledLoss(config, threads, plugin_path)
        # what a copy is built from: a config file's text, read now (the
        # copy may be made where the file is not)
        text, path = _config_source(config)
        if text is None:
            with open(path, "rb") as f:
                config = f.read().decode()
        self._init = (config, threads, plugin_path)
        # in a list, set in place: nn.Module.__setattr__ costs microseconds a call
        self._last = [None]  # (slot names, data pointers) of the last call
        self._plans = {}  # call signature -> its _Plans not in use
        # the compiled caller of the common call (None: the ctypes path
        # only); a gradient it would have to take from the pool is left to
        # _run_local
        loss = self._loss
        self._fast = (_fast.Caller(ctypes.cast(L.lk_loss_eval_unchecked, ctypes.c_void_p).value,
                                   loss.handle.value, loss.slot_names[0],
                                   sorted(loss.differentiable), _POOL_MIN_BYTES - 1)
                      if _fast is not None and loss.reduced and loss.slot_names else None)

    def __getstate__(self):
        """pickle, copy.deepcopy (an EMA or teacher copy of a model holding
        the loss), torch.save: the module without its runtime objects,
        which __setstate__ builds again from the config."""
        group = self._process_group
        if group is not None and group is not False:
            raise TypeError("losskit.Loss: a loss given a process_group cannot be copied or "
                            "pickled (the group is this process's); copy it with "
                            "process_group=None and set .process_group on the copy")
        state = self.__dict__.copy()
        for k in ("_loss", "_fast", "_plans", "_last"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._build(*self._init)

    @property
    def process_group(self):
        return self._process_group

    @process_group.setter
    def process_group(self, group):
        self._process_group = group
        # which calls take the local path (_run_local): 2 all, 1 those made
        # while torch.distributed is not initialised, 0 none
        self._local = (0 if not self._loss.reduced else 2 if group is False
                       else 1 if group is None else 0)

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
        if target is not None and weight is None and not tensors and input is not None \
                and not isinstance(input, dict):
            names, ts = _INPUT_TARGET, [input, target]  # the common call, parsed quickly
        elif isinstance(input, dict):
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
        local = self._local
        if local == 2 or (local == 1 and not _dist_initialized()):
            fast = self._fast
            if fast is not None:
                out = fast.call(names, ts)
                if out is not None:
                    self._last[0] = (names, fast)
                    return out
            return self._run_local(names, ts)
        return _Function.apply(self, names, torch.is_grad_enabled(), *ts)

    @property
    def last_data_ptrs(self):
        """slot -> the data pointer handed to the runtime by the last call
        (None for an empty tensor): the tensor's own data_ptr() unless it had
        to be made contiguous."""
        last = self._last[0]
        if last is None:
            return {}
        names, ptrs = last
        if isinstance(ptrs, _Plan):  # still holds the pointers of the call
            ptrs = [d.data for d in ptrs.tdata]
        elif _fast is not None and isinstance(ptrs, _fast.Caller):
            ptrs = [p or None for p in ptrs.last()]
        return dict(zip(names, ptrs))

    def _run_local(self, names, ts):
        """The common call, a reduced value on one process, through a plan
        cached per call signature: the ctypes arguments are built once and
        only the data pointers change from call to call. Every microsecond
        counts here: a loss on a few dozen elements costs about as much as
        torch's own loss call (bench/compare_torch.py --module)."""
        grad_on = _grad_enabled()
        key = [names, grad_on]
        try:
            for t in ts:
                key += (t.dtype, t.shape, t.requires_grad, t.is_cpu, t.is_contiguous())
        except AttributeError:  # not a tensor
            key = None
        if key is None:  # the general path's TypeError, chained to no other
            return _Function.apply(self, names, grad_on, *ts)
        key = tuple(key)
        # the plans of a signature not in use, taken out with list.pop (atomic
        # under the GIL: a concurrent call on the same signature builds its own)
        free = self._plans.get(key)
        try:
            plan = free.pop()
        except (AttributeError, IndexError):  # a new signature, or its plans all in use
            plan = None
        if plan is None:  # built outside the except: its errors chain no other
            plan = _Plan(self._loss, names, ts, [grad_on and t.requires_grad for t in ts])
            if free is None:
                plans = self._plans
                if len(plans) >= _MAX_PLANS:
                    plans.clear()
                free = plans[key] = []
        if plan.copy:  # a non-contiguous tensor is copied (through autograd)
            ts = [t.contiguous() for t in ts]
        if plan.any_empty:
            for d, t, e in zip(plan.tdata, ts, plan.empty):
                d.data = None if e else t.data_ptr()
        else:
            for d, t in zip(plan.tdata, ts):
                d.data = t.data_ptr()
        grads = []
        for i, d, small in plan.gslots:
            g = _empty_like(ts[i]) if small else _empty(ts[i])
            grads.append(g)
            d.data = g.data_ptr() if small is not None else None
        if plan.run() != L.OK:
            # the general path raises the runtime's message from fresh arguments
            return _Function.apply(self, names, grad_on, *ts)
        self._last[0] = (names, plan)
        value = plan.value.value
        if not grads:
            out = torch.scalar_tensor(value, dtype=plan.dtype)
        elif plan.native is not None:
            # out = x . g has the gradient g * grad_output with respect to
            # x through one native autograd node (no Python in backward).
            # Its value is then replaced by the runtime's, bit for bit:
            # DotBackward keeps x and g, not out, so writing out's memory
            # changes nothing else (and x . g may be NaN, x or g holding an
            # inf).
            x = ts[plan.gslots[0][0]]
            out = _dot(x, grads[0])
            plan.native.from_address(out.data_ptr()).value = value
            # DotBackward's gradient is g times the upstream one, g a
            # constant: under create_graph its derivative would be 0, so
            # the upstream gradient is tied to x there (_NoSecond), and a
            # second differentiation raises. The hook costs about 3 us a
            # call, less than the autograd.Function of larger gradients.
            out.register_hook(_FirstOrderHook(x))
        else:
            out = _Computed.apply(value, plan.dtype, grads,
                                  *[ts[i] for i, _, _ in plan.gslots])
        free.append(plan)
        return out

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
        elif loss.whole:
            # a whole-batch term: no statistics to sum; gather the batch
            value = _gathered(loss, names, held, grads, group,
                              self.ddp_scale)
        else:
            import torch.distributed as dist
            stats = torch.tensor(loss.stats(descs), dtype=torch.float64)
            dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
            scale = float(dist.get_world_size(group)) if self.ddp_scale else 1.0
            value = loss.finish(descs, gdescs, stats.tolist(), grad_scale=scale)
        return torch.tensor(value, dtype=dtype), grads


def _gathered(loss, names, held, grads, group, ddp_scale):
    """A loss with a whole-batch term (ntxent, supcon, ctc, lovasz) over
    shards: every process gathers every tensor along its declared batch
    dim (lk_loss_batch_at), evaluates the gathered batch (the same value on
    every process) and keeps the gradient of its own samples in grads.
    Each process's tensor is cut into `views` equal runs; the gathered
    tensor is every process's first run in rank order, then every second
    run (ntxent's rows i and i + N stay N apart). A padded slot's other
    dims may differ between processes: they are padded with zeros to the
    largest, which the loss ignores. Returns the value."""
    import torch.distributed as dist
    layout = loss.batch_layout(names)
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    nd = L.LK_MAX_NDIM
    # every process's shapes, in one all_gather
    mine = torch.full((len(held), nd + 1), -1, dtype=torch.int64)
    for i, t in enumerate(held):
        mine[i, 0] = t.dim()
        mine[i, 1:1 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=group)
    shapes = [[tuple(e[i, 1:1 + int(e[i, 0])].tolist()) for e in everyone]
              for i in range(len(held))]
    counts = None  # samples of each process
    for i, name in enumerate(names):
        dim, views, padded = layout[name]
        sh = shapes[i]
        ranks = {len(x) for x in sh}
        if len(ranks) != 1:
            raise DataError("loss '%s': '%s' has %s dimensions on the processes; gathering the batch "
                            "needs the same on each" % (loss.name, name,
                                                        " and ".join(str(len(x)) for x in sh)))
        if dim >= len(sh[0]):
            raise DataError("loss '%s': '%s' has %d dimensions; its batch is dim %d"
                            % (loss.name, name, len(sh[0]), dim))
        for r, x in enumerate(sh):
            if x[dim] % views:
                raise DataError("loss '%s': '%s' on process %d has %d along dim %d, not a multiple of "
                                "its %d views" % (loss.name, name, r, x[dim], dim, views))
            if not padded and any(x[k] != sh[0][k] for k in range(len(x)) if k != dim):
                raise DataError("loss '%s': '%s' has shape %s on process %d and %s on process 0: "
                                "only dim %d (the batch) may differ between processes"
                                % (loss.name, name, tuple(x), r, tuple(sh[0]), dim))
        n = [x[dim] // views for x in sh]
        if counts is None:
            counts = n
        elif n != counts:
            raise DataError("loss '%s': the processes hold %s samples of '%s' but %s of '%s'"
                            % (loss.name, counts, names[0], n, name))
    total = sum(counts)
    before = sum(counts[:rank])
    full = []
    for i, (name, t) in enumerate(zip(names, held)):
        dim, views, padded = layout[name]
        sh = shapes[i]
        big = [max(x[k] for x in sh) for k in range(t.dim())]
        wire = t.to(torch.uint8) if t.dtype == torch.bool else t
        if list(t.shape) != big:
            # the same size on every process for all_gather: zeros past the end
            padded_t = wire.new_zeros(big)
            padded_t[tuple(slice(0, e) for e in t.shape)] = wire
            wire = padded_t
        parts = [torch.empty_like(wire) for _ in range(world)]
        dist.all_gather(parts, wire.contiguous(), group=group)
        # every process's own shape, then the largest of the other dims
        pieces = []
        for v in range(views):
            for r in range(world):
                p = parts[r][tuple(slice(0, e) for e in sh[r])]
                p = p.narrow(dim, v * counts[r], counts[r])
                if padded and [p.shape[k] for k in range(p.dim()) if k != dim] != \
                        [big[k] for k in range(p.dim()) if k != dim]:
                    grown = list(big)
                    grown[dim] = p.shape[dim]
                    q = p.new_zeros(grown)
                    q[tuple(slice(0, e) for e in p.shape)] = p
                    p = q
                pieces.append(p)
        g = torch.cat(pieces, dim)
        full.append(g.to(torch.bool) if t.dtype == torch.bool else g.contiguous())
    descs = [_desc(n, t) for n, t in zip(names, full)]
    fgrads = [_empty(f) if g is not None else None for f, g in zip(full, grads)]
    gdescs = [_desc(n, g) for n, g in zip(names, fgrads) if g is not None]
    scale = float(world) if ddp_scale else 1.0
    value = loss.eval(descs, gdescs, grad_scale=scale)
    for i, (name, t) in enumerate(zip(names, held)):
        if grads[i] is None:
            continue
        dim, views, _ = layout[name]
        n = counts[rank]
        own = [fgrads[i].narrow(dim, v * total + before, n) for v in range(views)]
        own = torch.cat(own, dim) if views > 1 else own[0]
        grads[i].copy_(own[tuple(slice(0, e) for e in t.shape)])
    return value
