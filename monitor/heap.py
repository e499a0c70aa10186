"""Giving the memory the daemon freed back to the operating system (glibc's ``malloc_trim``).

glibc keeps freed blocks in its heaps for reuse, and returns a page to the system only when
the block at the top of a heap is free. A big fleet frees tens of megabytes in the middle of
the heaps: each tenant's prepared ``/metrics`` lines are freed when a scrape compresses them,
so a 10,000-tenant daemon stayed about 45 MB above what it used (measured in
``bench/README.md``). ``malloc_trim(0)`` returns every free page of every heap, in a few
milliseconds; ``ReturnFreeMemory`` calls it every ``RETURN_EVERY`` seconds from a thread of
its own (ctypes releases the GIL for the call, so the event loop does not wait for it).

``map_big_blocks()`` keeps blocks of ``MMAP_THRESHOLD`` bytes and more out of the heaps
(``mallopt(M_MMAP_THRESHOLD)``): each is mapped on its own and unmapped when freed. glibc does
that from 128 KiB by default, but raises the threshold to the size of each such block freed,
so after the first scrapes the compressed cells, their text and a scrape's body came from the
heaps and stayed there between two returns (the 10,000-tenant peak: 241 -> 221 MB).

Python has no binding for either, hence ctypes here (a library for two calls would be a
dependency for nothing). Off glibc (musl, macOS, Windows) nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from types import TracebackType

RETURN_EVERY = 10.0
"""Seconds between two returns of the free memory (each costs 0-10 ms of CPU at 10,000
tenants, off the event loop)."""


MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # glibc answers "glibc 2.36"
            return None
        return ctypes.CDLL(None)  # the process's own C library
    except (ValueError, OSError):  # no such name: not glibc
        return None


def _function(name: str, *argtypes: type) -> Callable[..., int] | None:
    library = _glibc()
    function = getattr(library, name, None) if library is not None else None
    if function is not None:
        function.argtypes = list(argtypes)
        function.restype = ctypes.c_int
    return function


_TRIM = _function("malloc_trim", ctypes.c_size_t)
_MALLOPT = _function("mallopt", ctypes.c_int, ctypes.c_int)


def map_big_blocks() -> bool:
    """Blocks of ``MMAP_THRESHOLD`` bytes and more are mapped apart and unmapped when freed
    (see the module); False where that is not possible (not glibc)."""
    return _MALLOPT is not None and _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def return_free_memory() -> bool:
    """Return the free pages of the C heaps to the system; False where that is not possible
    (not glibc)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class ReturnFreeMemory:
    """While in the ``with`` block, a daemon thread returns the free memory every ``every``
    seconds (``release`` does the work: ``return_free_memory`` unless told otherwise)."""

    def __init__(
        self, every: float = RETURN_EVERY, *, release: Callable[[], object] = return_free_memory
    ) -> None:
        if every <= 0:
            raise ValueError("every must be > 0")
        self._every = every
        self._release = release
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ReturnFreeMemory:
        if _TRIM is not None or self._release is not return_free_memory:
            self._thread = threading.Thread(target=self._run, name="return-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            self._release()
