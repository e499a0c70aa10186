"""monitor.heap: the free memory of the C heaps goes back to the system (glibc), on demand and
every few seconds while the daemon runs; elsewhere nothing happens."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from monitor import heap
from monitor.heap import ReturnFreeMemory, return_free_memory


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False


GLIBC = _glibc()
DEADLINE = 10.0


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_blocks_in_the_middle_of_the_heap_go_back_to_the_system() -> None:
    # 64 MiB of 4 KiB blocks (below glibc's mmap threshold: they live in the heap); every
    # 64th is kept, so the freed ones are not at the top of the heap and stay resident.
    blocks = [bytes(4096) for _ in range(16384)]
    kept = blocks[::64]
    del blocks
    before = resident_kib()
    assert return_free_memory() is True
    returned = before - resident_kib()
    assert returned > 32 * 1024, f"only {returned} KiB returned"
    assert len(kept) == 256


def test_nothing_is_done_where_the_c_library_is_not_glibc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)
    assert return_free_memory() is False
    with ReturnFreeMemory(0.01) as returner:
        assert returner._thread is None


def test_the_thread_returns_memory_every_few_seconds_until_the_block_ends() -> None:
    calls: list[None] = []
    called = threading.Event()

    def release() -> None:
        calls.append(None)
        if len(calls) >= 3:
            called.set()

    with ReturnFreeMemory(0.01, release=release) as returner:
        assert called.wait(DEADLINE), "released fewer than 3 times"
        thread = returner._thread
        assert thread is not None and thread.daemon
    assert not thread.is_alive()  # ended with the block: nothing more is released


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every"):
        ReturnFreeMemory(0)
