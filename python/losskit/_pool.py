"""Gradient buffers reused once their previous tensor has died.

A loss over 16M float32 positions hands autograd a fresh 64 MB gradient per
call; a fresh buffer costs a page fault per page and the kernel's zeroing of
it, which takes longer than the loss itself. The pool keeps the numpy arrays
behind the large gradients it handed out. torch.from_numpy(array) keeps a
reference to the array for as long as any tensor on its storage lives (the
gradient, x.grad that autograd made of it, views, .numpy() of them), so an
array that nothing but the pool references belongs to no live tensor and its
memory, already touched, can back the next gradient of that size.

Each buffer starts on a 64-byte boundary (aligned_empty): the runtime
writes a large gradient with streaming stores, which skip reading its lines
before writing them, only when it starts on a vector boundary; numpy alone
gives 16 bytes, and the gradient's lines were then read and written back.

LOSSKIT_GRAD_POOL_MB (read at import) or losskit.grad_pool.limit_mb (at any
time) caps the memory the pool owns, live gradients included; 0 disables it.
"""
import os
import sys
import threading

import numpy as np

_DEFAULT_MB = 512
# Below this many bytes torch's own allocator is as fast as a reused buffer.
MIN_BYTES = 1 << 20
# The widest vector the runtime streams a gradient in (AVX-512), in bytes.
ALIGN = 64


def aligned_empty(numel, dtype):
    """An uninitialised 1-d numpy array of numel elements of dtype whose
    data starts on an ALIGN-byte boundary: a slice of a slightly larger
    numpy buffer, so that it keeps numpy's allocator (transparent huge
    pages for large arrays) and the buffer lives as long as the array."""
    nbytes = numel * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    off = -raw.ctypes.data % ALIGN
    return raw[off:off + nbytes].view(dtype)


def _env_limit():
    text = os.environ.get("LOSSKIT_GRAD_POOL_MB", "")
    if not text.strip():
        return _DEFAULT_MB
    try:
        v = float(text)
    except ValueError:
        raise ValueError("LOSSKIT_GRAD_POOL_MB: expected a number of megabytes (0 disables "
                         "the gradient pool), not %r" % text) from None
    if v < 0:
        raise ValueError("LOSSKIT_GRAD_POOL_MB: expected a number of megabytes >= 0, not %r"
                         % text)
    return v


class GradPool:
    """Buffers by (dtype, element count). A buffer is free when
    sys.getrefcount says only the pool's list (and the call's own argument)
    hold it; the check and the hand-out happen under one lock, so two
    threads never get the same buffer."""

    def __init__(self, limit_mb):
        self.limit_mb = limit_mb
        self._lock = threading.Lock()
        self._buffers = []  # numpy arrays, oldest first
        self._bytes = 0
        self.hits = 0    # gradients served by a reused buffer
        self.misses = 0  # pooled allocations of a new buffer

    @property
    def held_bytes(self):
        """Bytes the pool owns, whether its buffers are free or in use."""
        return self._bytes

    def clear(self):
        """Forgets every buffer: the free ones are released now, the ones in
        use when their tensors die."""
        with self._lock:
            self._buffers = []
            self._bytes = 0

    def empty(self, shape, dtype, numel):
        """A float tensor of this shape on a pooled buffer, or None when the
        pool is disabled or full (the caller then allocates as usual)."""
        nbytes = numel * dtype.itemsize
        limit = self.limit_mb * 1048576.0
        if nbytes < MIN_BYTES or nbytes > limit:
            return None
        import torch
        with self._lock:
            # refcount 3: the list, `b` and getrefcount's argument (no
            # enumerate(): its cached result tuple would hold one more)
            bufs = self._buffers
            for i in range(len(bufs)):
                b = bufs[i]
                if b.size == numel and b.dtype == dtype and sys.getrefcount(b) <= 3:
                    del bufs[i]
                    bufs.append(b)  # most recently used last
                    self.hits += 1
                    return torch.from_numpy(b).view(shape)
            b = None
            if self._bytes + nbytes > limit:
                self._evict(self._bytes + nbytes - limit)
                if self._bytes + nbytes > limit:
                    return None
            buf = aligned_empty(numel, dtype)
            self._buffers.append(buf)
            self._bytes += nbytes
            self.misses += 1
            return torch.from_numpy(buf).view(shape)

    def _evict(self, need):
        keep = []
        freed = 0
        for b in self._buffers:
            # refcount 3 here too: the old list, `b`, getrefcount's argument
            if freed < need and sys.getrefcount(b) <= 3:
                freed += b.nbytes
            else:
                keep.append(b)
        self._buffers = keep
        self._bytes -= freed


pool = GradPool(_env_limit())
