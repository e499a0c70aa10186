"""monitor.heap: the free memory of the C heaps goes back to the system (glibc), on demand and
every few seconds while the daemon runs; elsewhere nothing happens."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from monitor import heap
from monitor.heap import ReturnFreeMemory, map_big_blocks, return_free_memory


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


BIG_BLOCKS = """
import sys
from monitor.heap import map_big_blocks
from tests.unit.test_heap import resident_kib
if sys.argv[1] == "mapped":
    assert map_big_blocks()
first = b"y" * (8 << 20)  # by default, freeing it makes glibc keep blocks below 8 MiB in the heap
del first
before = resident_kib()
blocks, kept = [], []
for _ in range(200):  # 50 MiB of 256 KiB blocks, each followed by a small one that stays
    blocks.append(b"x" * (256 * 1024))
    kept.append(b"k" * 1024)
del blocks
print(resident_kib() - before)
"""


def left_resident_kib(mode: str) -> int:
    """KiB still resident after the big blocks were freed, in a fresh interpreter."""
    command = [sys.executable, "-c", BIG_BLOCKS, mode]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_big_blocks_go_back_to_the_system_as_soon_as_they_are_freed() -> None:
    assert left_resident_kib("mapped") < 8 * 1024


def test_nothing_is_done_where_the_c_library_is_not_glibc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)
    monkeypatch.setattr(heap, "_MALLOPT", None)
    assert return_free_memory() is False
    assert map_big_blocks() is False
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
