"""glibc's heap, tuned for processes that move tensors of tens to hundreds of MB.

By default glibc serves every allocation above 32 MB with a fresh `mmap` and unmaps it on
free, so each large message buffer is faulted in again page by page: on a 2-core machine a
plain gRPC echo of 64 MB ran at ~250 MB/s, and at ~1100 MB/s with the heap kept.
`keep_freed_buffers` makes large buffers come from the heap and keeps up to `KEEP_BYTES` of
freed memory for the next request; `release_free_memory` hands what is free back to the
system after a full-grid job. Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_BYTES = 256 * 2**20
"""Free memory at the top of the heap kept for reuse rather than returned to the system."""


def _libc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def keep_freed_buffers(keep_bytes: int = KEEP_BYTES) -> bool:
    """Serve large allocations from the heap and keep `keep_bytes` of freed memory; returns
    whether the C library took the settings."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, keep_bytes))


def release_free_memory() -> None:
    """Give the heap's free memory back to the system: a full-grid job's fields are freed into
    the heap, and without this the next job's peak comes on top of them (~700 MB)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)
