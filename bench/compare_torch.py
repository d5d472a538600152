#!/usr/bin/python3
"""losskit against PyTorch, on the same tensors, in one process and one run.

losskit is called through its C embedding API (liblosskit, via ctypes) on
numpy arrays that PyTorch shares without copying (torch.from_numpy), so both
see exactly the same memory. Each loss is timed forward only and forward +
backward, losskit's calls alternating with torch's; the table gives the
median of --repeat calls each and the ratio torch / losskit (above 1:
losskit is faster).

Run with Debian's python3 (python3-torch, python3-numpy):
    /usr/bin/python3 bench/compare_torch.py --build build --threads 2
"""
import argparse
import ctypes as C
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPE_F32, DTYPE_F64, DTYPE_I64 = 1, 2, 3


class Tensor(C.Structure):
    _fields_ = [("data", C.c_void_p), ("dtype", C.c_int32), ("ndim", C.c_int32),
                ("shape", C.POINTER(C.c_int64)), ("strides", C.POINTER(C.c_int64))]


class Named(C.Structure):
    _fields_ = [("name", C.c_char_p), ("tensor", Tensor), ("origin", C.c_char_p)]


class EvalArgs(C.Structure):
    _fields_ = [("tensors", C.POINTER(Named)), ("n_tensors", C.c_size_t),
                ("grads", C.POINTER(Named)), ("n_grads", C.c_size_t),
                ("out", C.POINTER(Tensor)), ("grad_scale", C.c_double),
                ("errmsg", C.c_char * 512)]


class Options(C.Structure):
    _fields_ = [("plugin_path", C.c_char_p), ("use_env_path", C.c_int32),
                ("use_default_path", C.c_int32), ("threads", C.c_int32)]


class Losskit:
    def __init__(self, build, threads):
        self.lib = C.CDLL(os.path.join(build, "host", "liblosskit.so"))
        self.lib.lk_runtime_options_init.argtypes = [C.POINTER(Options)]
        self.lib.lk_runtime_open.argtypes = [C.POINTER(Options), C.POINTER(C.c_void_p), C.c_char_p]
        self.lib.lk_loss_from_file.argtypes = [C.c_void_p, C.c_char_p, C.POINTER(C.c_void_p),
                                               C.c_char_p]
        self.lib.lk_loss_eval.argtypes = [C.c_void_p, C.POINTER(EvalArgs), C.POINTER(C.c_double)]
        self.lib.lk_loss_free.argtypes = [C.c_void_p]
        opts = Options()
        self.lib.lk_runtime_options_init(C.byref(opts))
        opts.use_env_path = 0
        opts.threads = threads
        self.rt = C.c_void_p()
        err = C.create_string_buffer(512)
        if self.lib.lk_runtime_open(C.byref(opts), C.byref(self.rt), err) != 0:
            sys.exit("losskit: " + err.value.decode())

    def loss(self, config):
        loss = C.c_void_p()
        err = C.create_string_buffer(512)
        if self.lib.lk_loss_from_file(self.rt, config.encode(), C.byref(loss), err) != 0:
            sys.exit(err.value.decode())
        return loss


def describe(name, arr, keep):
    shape = (C.c_int64 * arr.ndim)(*arr.shape)
    keep.append(shape)
    dtype = {np.float32: DTYPE_F32, np.float64: DTYPE_F64, np.int64: DTYPE_I64}[arr.dtype.type]
    return Named(name.encode(), Tensor(arr.ctypes.data, dtype, arr.ndim, shape, None), None)


def losskit_timer(lk, loss, tensors, grad, with_grad):
    keep = []
    named = (Named * len(tensors))(*[describe(k, v, keep) for k, v in tensors.items()])
    grads = (Named * 1)(describe(next(iter(tensors)), grad, keep))
    args = EvalArgs()
    args.tensors, args.n_tensors = named, len(tensors)
    if with_grad:
        args.grads, args.n_grads = grads, 1
    value = C.c_double()

    def call():
        args.grad_scale = 1.0
        if lk.lib.lk_loss_eval(loss, C.byref(args), C.byref(value)) != 0:
            sys.exit(args.errmsg.decode())
        return value.value
    return call


# PyTorch's side: the same definitions the goldens use.
def t_dice(x, t, s=1.0):
    p = torch.sigmoid(x).reshape(-1)
    t = t.reshape(-1)
    i = (p * t).sum()
    return 1 - (2 * i + s) / (p.sum() + t.sum() + s)


def t_iou(x, t, s=1.0):
    p = torch.sigmoid(x).reshape(-1)
    t = t.reshape(-1)
    i = (p * t).sum()
    return 1 - (i + s) / (p.sum() + t.sum() - i + s)


def t_focal(x, t, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    return ((alpha * t + (1 - alpha) * (1 - t)) * loss).mean()


def t_focal_mean_bce(x, t, alpha=0.8, gamma=2.0):
    b = F.binary_cross_entropy_with_logits(x, t)
    return alpha * (1 - torch.exp(-b)) ** gamma * b


def t_dice_multiclass(x, t, s=1.0):
    p = torch.softmax(x, dim=1)
    oh = F.one_hot(t, x.shape[1]).movedim(-1, 1).to(x.dtype)
    dims = (0,) + tuple(range(2, x.dim()))
    i = (p * oh).sum(dims)
    score = (2 * i + s) / (p.sum(dims) + oh.sum(dims) + s)
    return 1 - score.mean()


def t_focal_multiclass(x, t, gamma=2.0):
    """Softmax focal loss (MONAI's use_softmax at one class per position),
    the mean over positions, in plain torch ops."""
    lp = torch.log_softmax(x, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
    return (-((1 - lp.exp()) ** gamma) * lp).mean()


def t_log_cosh(x, t):
    d = x - t
    return (d.abs() + F.softplus(-2 * d.abs()) - np.log(2.0)).mean()


def t_robust(x, t, alpha=1.0, scale=1.0):
    # Barron's general loss at alpha = 1: sqrt((z)^2 + 1) - 1
    z = (x - t) / scale
    return (torch.sqrt(z * z + 1) - 1).mean()


def t_asymmetric(x, t, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
    # timm's AsymmetricLossMultiLabel in plain ops
    xs_pos = torch.sigmoid(x)
    xs_neg = (1 - xs_pos + clip).clamp(max=1)
    los = t * torch.log(xs_pos.clamp(min=eps)) + (1 - t) * torch.log(xs_neg.clamp(min=eps))
    pt = xs_pos * t + xs_neg * (1 - t)
    w = torch.pow(1 - pt, gamma_pos * t + gamma_neg * (1 - t))
    return -(los * w).sum()  # timm's value, configs/asymmetric.json's reduction sum


# 16M float32 elements each: the size the project's speed targets name
BINARY = (16, 1, 1024, 1024)
MULTI = (8, 8, 512, 512)
# What each slot holds, for the elementwise losses of the catalogue:
# real N(0, 2); unit {0, 1} with P(1) = 0.3; prob in (0, 1); sign +-1;
# pos in [0.5, 1.5); count {0, ..., 3}; logprob log of a (0, 1) uniform.
CASES = [
    ("mse", "configs/mse.json", BINARY, lambda x, t: F.mse_loss(x, t)),
    ("l1", "configs/l1.json", BINARY, lambda x, t: F.l1_loss(x, t)),
    ("bce_with_logits", "configs/bce_with_logits.json", BINARY,
     lambda x, t: F.binary_cross_entropy_with_logits(x, t)),
    ("focal", "configs/focal.json", BINARY, t_focal),
    ("dice", "configs/dice.json", BINARY, t_dice),
    ("iou", "configs/iou.json", BINARY, t_iou),
    ("dice_bce", "configs/dice_bce.json", BINARY,
     lambda x, t: F.binary_cross_entropy_with_logits(x, t) + t_dice(x, t)),
    ("focal_mean_bce", "configs/focal_mean_bce.json", BINARY, t_focal_mean_bce),
    ("cross_entropy", "configs/cross_entropy.json", MULTI, lambda x, t: F.cross_entropy(x, t)),
    ("dice multiclass", "configs/dice_multiclass.json", MULTI, t_dice_multiclass),
    ("focal multiclass", "configs/focal_multiclass.json", MULTI, t_focal_multiclass),
]
# The catalogue's elementwise losses: (name, config, slots, torch function of
# the tensors in slot order); the input is slot 0.
ELEMENTWISE = [
    ("smooth_l1", "configs/smooth_l1.json", [("input", "real"), ("target", "real")],
     lambda x, t: F.smooth_l1_loss(x, t)),
    ("huber", "configs/huber.json", [("input", "real"), ("target", "real")],
     lambda x, t: F.huber_loss(x, t)),
    ("log_cosh", "configs/log_cosh.json", [("input", "real"), ("target", "real")], t_log_cosh),
    ("robust", "configs/robust.json", [("input", "real"), ("target", "real")], t_robust),
    ("poisson_nll", "configs/poisson_nll.json", [("input", "real"), ("target", "count")],
     lambda x, t: F.poisson_nll_loss(x, t)),
    ("gaussian_nll", "configs/gaussian_nll.json",
     [("input", "real"), ("target", "real"), ("var", "pos")],
     lambda x, t, v: F.gaussian_nll_loss(x, t, v)),
    ("bce", "configs/bce.json", [("input", "prob"), ("target", "unit")],
     lambda p, t: F.binary_cross_entropy(p, t)),
    ("kl_div", "configs/kl_div.json", [("input", "logprob"), ("target", "prob")],
     lambda x, t: F.kl_div(x, t, reduction="batchmean")),  # configs/kl_div.json
    ("asymmetric", "configs/asymmetric.json", [("input", "real"), ("target", "unit")],
     t_asymmetric),
    ("hinge_embedding", "configs/hinge_embedding.json", [("input", "real"), ("target", "sign")],
     lambda x, t: F.hinge_embedding_loss(x, t)),
    ("soft_margin", "configs/soft_margin.json", [("input", "real"), ("target", "sign")],
     lambda x, t: F.soft_margin_loss(x, t)),
    ("margin_ranking", "configs/margin_ranking.json",
     [("input1", "real"), ("input2", "real"), ("target", "sign")],
     lambda a, b, t: F.margin_ranking_loss(a, b, t)),
]

# The stencil losses on images, (name, config, shape, slots, torch function):
# the plain-torch formulas of the goldens (tests/golden/make_stencil.py).
IMAGES = (16, 3, 512, 512)
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))
import make_stencil  # noqa: E402  (beside the goldens it defines)
STENCIL = [
    ("sobolev", "configs/sobolev.json", IMAGES, [("input", "real"), ("target", "real")],
     lambda x, t: make_stencil.sobolev(x, t)),
    ("total_variation", "configs/total_variation.json", IMAGES, [("input", "real")],
     lambda x: make_stencil.total_variation(x)),
    ("ssim", "configs/ssim.json", IMAGES, [("input", "prob"), ("target", "prob")],
     lambda x, t: make_stencil.ssim(x, t)),
]


# losskit.Loss's own aligned allocation (python/losskit/_pool.py), loaded
# from the source tree on its own: it needs numpy alone, not the package
_spec = importlib.util.spec_from_file_location(
    "losskit_pool", os.path.join(ROOT, "python", "losskit", "_pool.py"))
_pool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pool)


def grad_like(a):
    """The C API's gradient buffer, uninitialised and shaped like a, on a
    64-byte boundary: what lk_array_alloc, torch's allocator and
    losskit.Loss's gradients give, and what the runtime needs to write a
    large gradient with streaming stores (docs/performance.md). numpy
    alone gives 16 bytes, and the runtime then reads every line of the
    gradient before writing it."""
    return _pool.aligned_empty(a.size, a.dtype).reshape(a.shape)


def aligned_copy(a):
    """a copied to a 64-byte boundary (grad_like)."""
    out = grad_like(a)
    out[...] = a
    return out


def draw(kind, shape, rng):
    if kind == "real":
        return rng.normal(0.0, 2.0, size=shape).astype(np.float32)
    if kind == "unit":
        return (rng.random(shape) < 0.3).astype(np.float32)
    if kind == "prob":
        return rng.uniform(0.02, 0.98, size=shape).astype(np.float32)
    if kind == "sign":
        return np.where(rng.random(shape) < 0.3, 1.0, -1.0).astype(np.float32)
    if kind == "pos":
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    if kind == "count":
        return rng.integers(0, 4, size=shape).astype(np.float32)
    if kind == "logprob":
        return np.log(rng.uniform(0.02, 0.98, size=shape)).astype(np.float32)
    raise ValueError(kind)


# The pause before each timed large call. After a call returns, torch's
# OpenMP threads spin for a while waiting for more work; on two cores they
# took the cores of whichever call came next (measured: losskit's mse
# forward+backward 1-2 ms slower right after a torch call than alone, and
# no slower after a torch call and 20 ms of sleep, or with GOMP_SPINCOUNT=0).
# So each timed call starts on an idle machine, whichever side it is.
SETTLE_S = 0.02


def paired_median_ms(fa, fb, repeat):
    """Medians (ms) of repeat calls each of fa and fb, after one warm-up
    call each, alternated call by call (a b b a a b ...) so that a change in
    the machine's load falls on both alike: their ratio holds on a shared
    machine where timing one after the other does not. Each call starts
    after SETTLE_S of idleness."""
    fa()
    fb()
    ta, tb = [], []
    for k in range(repeat):
        for fn, times in ((fa, ta), (fb, tb)) if k % 2 == 0 else ((fb, tb), (fa, ta)):
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ta), statistics.median(tb)


def module_fwd_bwd(module, names, ts):
    xg = ts[0].detach().requires_grad_(True)
    module(**dict(zip(names, [xg] + list(ts[1:])))).backward()


def paired_median_us(fa, fb, repeat, blocks=10):
    """Medians (µs) of fa's and fb's calls, timed in alternating blocks so
    that a drift in the machine's load falls on both sides alike."""
    fa()
    fb()
    ta, tb = [], []
    for k in range(blocks):
        for fn, times in ((fa, ta), (fb, tb)) if k % 2 == 0 else ((fb, tb), (fa, ta)):
            for _ in range(repeat // blocks):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(ta), statistics.median(tb)


def data_for(shape, multiclass, rng):
    x = rng.normal(0.0, 2.0, size=shape).astype(np.float32)
    if multiclass:
        t = rng.integers(0, shape[1], size=(shape[0],) + shape[2:]).astype(np.int64)
    else:
        t = (rng.random(shape) < 0.3).astype(np.float32)
    return x, t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="loss names to run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--module", action="store_true",
                    help="time losskit through its Python module (losskit.Loss, autograd) "
                    "instead of the C API, and add each loss's per-call overhead on about "
                    "64 elements against torch's own call")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lk = Losskit(os.path.abspath(a.build), a.threads)
    if a.module:
        sys.path.insert(0, os.path.join(os.path.abspath(a.build), "python"))
        import losskit
    rng = np.random.default_rng(0)
    rows = []
    cases = [(n, c, s, f, None) for n, c, s, f in CASES] + \
        [(n, c, BINARY, f, slots) for n, c, slots, f in ELEMENTWISE] + \
        [(n, c, shape, f, slots) for n, c, shape, slots, f in STENCIL]
    for name, config, shape, torch_fn, slots in cases:
        if a.only and name not in a.only:
            continue
        if not os.path.exists(os.path.join(ROOT, config)):
            print(f"skipping {name}: {config} does not exist", file=sys.stderr)
            continue
        multiclass = shape == MULTI
        if slots:
            tensors = {slot: draw(kind, shape, rng) for slot, kind in slots}
        else:
            x, t = data_for(shape, multiclass, rng)
            tensors = {"input": x, "target": t}
        # torch's allocator puts a tensor on a 64-byte boundary, numpy on 16:
        # the data both sides read is placed as a torch user's would be
        # (misaligned inputs cost the memory-bound losses 15-30 %, measured)
        tensors = {k: aligned_copy(v) for k, v in tensors.items()}
        grad = grad_like(next(iter(tensors.values())))
        loss = lk.loss(os.path.join(ROOT, config))
        ts = [torch.from_numpy(v) for v in tensors.values()]
        if a.module:
            module = losskit.Loss(os.path.join(ROOT, config), threads=a.threads)
            names = list(tensors)

            def lk_fwd_call():
                with torch.no_grad():
                    module(**dict(zip(names, ts)))

            def lk_fb_call():
                module_fwd_bwd(module, names, ts)
            lk_value = float(module(**dict(zip(names, ts))))
            small = [torch.from_numpy(np.ascontiguousarray(v.reshape(-1)[:64]))
                     if not multiclass else None for v in tensors.values()]
            if shape == IMAGES:  # images: 1 x 1 x 12 x 12 (ssim's window is 11)
                small = [torch.from_numpy(np.ascontiguousarray(v[:1, :1, :12, :12]))
                         for v in tensors.values()]
            if multiclass:  # 1 x C x 8 x 8 / 8 positions: about 64 logits
                c = shape[1]
                small = [torch.from_numpy(np.ascontiguousarray(tensors["input"][:1, :, :1, :8])),
                         torch.from_numpy(np.ascontiguousarray(tensors["target"][:1, :1, :8]))]
            # the call a user writes: positional for input and target
            positional = names == ["input", "target"]

            def lk_small_call():
                xg = small[0].detach().requires_grad_(True)
                if positional:
                    module(xg, small[1]).backward()
                else:
                    module(**dict(zip(names, [xg] + small[1:]))).backward()

            def torch_small():
                xg = small[0].detach().requires_grad_(True)
                torch_fn(xg, *small[1:]).backward()
            lk_small, th_small = paired_median_us(lk_small_call, torch_small, 4000)
        else:
            lk_fwd_call = losskit_timer(lk, loss, tensors, grad, False)
            lk_fb_call = losskit_timer(lk, loss, tensors, grad, True)
            lk_value = losskit_timer(lk, loss, tensors, grad, True)()
            lk_small = th_small = None

        def th_fwd_call():
            with torch.no_grad():
                torch_fn(*ts)

        def th_fb_call():
            xg = ts[0].detach().requires_grad_(True)
            torch_fn(xg, *ts[1:]).backward()
        lk_fwd, th_fwd = paired_median_ms(lk_fwd_call, th_fwd_call, a.repeat)
        lk_fb, th_fb = paired_median_ms(lk_fb_call, th_fb_call, a.repeat)
        th_value = float(torch_fn(*[v if v.dtype == torch.int64 else v.double() for v in ts]))
        lk.lib.lk_loss_free(loss)
        rows.append({"loss": name, "shape": list(shape), "threads": a.threads,
                     "losskit_forward_ms": lk_fwd, "torch_forward_ms": th_fwd,
                     "losskit_forward_backward_ms": lk_fb, "torch_forward_backward_ms": th_fb,
                     "ratio_forward": th_fwd / lk_fwd, "ratio_forward_backward": th_fb / lk_fb,
                     "rel_diff_value": abs(lk_value - th_value) / max(abs(th_value), 1e-300),
                     "losskit_small_call_us": lk_small, "torch_small_call_us": th_small})
    if a.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "rows": rows}, indent=1))
        return
    print(f"torch {torch.__version__}, {a.threads} threads, median of {a.repeat}; "
          "ratio = torch time / losskit time"
          + ("; losskit through losskit.Loss (Python, autograd)" if a.module else ""))
    print(f"| loss | shape | losskit fwd ms | torch fwd ms | ratio | "
          f"losskit fwd+bwd ms | torch fwd+bwd ms | ratio | value rel. diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['loss']} | {'x'.join(map(str, r['shape']))} | "
              f"{r['losskit_forward_ms']:.1f} | {r['torch_forward_ms']:.1f} | "
              f"{r['ratio_forward']:.1f} | {r['losskit_forward_backward_ms']:.1f} | "
              f"{r['torch_forward_backward_ms']:.1f} | {r['ratio_forward_backward']:.1f} | "
              f"{r['rel_diff_value']:.1e} |")
    if a.module:
        print("\nPer call, forward+backward on about 64 elements (median of 2000 calls each, timed in alternating blocks of 200, µs):")
        print("| loss | losskit.Loss | torch | torch / losskit |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['loss']} | {r['losskit_small_call_us']:.1f} | "
                  f"{r['torch_small_call_us']:.1f} | "
                  f"{r['torch_small_call_us'] / r['losskit_small_call_us']:.2f} |")


if __name__ == "__main__":
    main()
