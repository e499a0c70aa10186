"""``FamilyTables``: every tenant's prepared sample lines, kept by metric family, so that a
scrape of 10,000 tenants only concatenates (``plain``) or reuses what it compressed before
(``compressed``).

Each family's lines are held in cells of ``CELL_TENANTS`` tenants: one byte string per cell
(the lines of its tenants in slot order) and each tenant's length in it. A tenant gets a slot
when it first has lines, and gives it back when it has none left in any family. Changing a
tenant's lines rewrites its place in one cell and drops that cell's compressed copy; identical
lines change nothing. A scrape compresses again only the cells that changed since the last
one (in the steady state: the last-success timestamps), outside the lock.
"""

from __future__ import annotations

import heapq
import threading
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from monitor.metrics.deflate import Piece, compress

CELL_TENANTS = 256
"""Tenants per cell: fewer means less text compressed again per change, more pieces to
combine per scrape (~5 µs each)."""


@dataclass(slots=True)
class _Cell:
    lengths: array[int]  # per slot of the cell: bytes in ``text``
    text: bytearray = field(default_factory=bytearray)
    compressed: Piece | None = None  # of ``text``; None: not compressed since it changed
    version: int = 0  # changes with ``text``


@dataclass(slots=True)
class _Slot:
    number: int
    families: int = 0  # families in which the tenant has lines


class FamilyTables:
    """Thread-safe. Only the families named at construction are kept."""

    def __init__(self, families: Iterable[str]) -> None:
        self._cell_tenants = CELL_TENANTS  # read now: tests make cells small
        self._lock = threading.Lock()
        self._cells: dict[str, list[_Cell]] = {name: [] for name in families}
        self._slots: dict[str, _Slot] = {}
        self._free: list[int] = []  # a heap: the lowest free slot is taken first
        self._next_slot = 0

    def put(self, tenant: str, families: Iterable[str], lines: Mapping[str, bytes]) -> None:
        """The tenant's lines in each of ``families`` become ``lines[family]`` (none when
        ``lines`` has no such key)."""
        with self._lock:
            for family in families:
                self._put(tenant, family, lines.get(family, b""))

    def _put(self, tenant: str, family: str, text: bytes) -> None:
        slot = self._slots.get(tenant)
        if slot is None:
            if not text:
                return
            slot = self._slots[tenant] = _Slot(self._take_slot())
        shard, offset = divmod(slot.number, self._cell_tenants)
        cells = self._cells[family]
        while len(cells) <= shard:
            cells.append(_Cell(array("I", bytes(4 * self._cell_tenants))))
        cell = cells[shard]
        held = cell.lengths[offset]
        start = sum(cell.lengths[:offset])
        if held == len(text) and cell.text[start : start + held] == text:
            return
        cell.text[start : start + held] = text
        cell.lengths[offset] = len(text)
        cell.compressed = None
        cell.version += 1
        slot.families += bool(text) - bool(held)
        if not slot.families:
            del self._slots[tenant]
            heapq.heappush(self._free, slot.number)

    def _take_slot(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        self._next_slot += 1
        return self._next_slot - 1

    def plain(self, family: str, *, head: bytes, tail: bytes) -> bytes:
        """``head``, the family's lines of every tenant, ``tail``: joined under the lock (one
        copy; the event loop may wait for it, a few milliseconds for the biggest family)."""
        with self._lock:
            return b"".join([head, *(cell.text for cell in self._cells[family]), tail])

    def compressed(self, family: str) -> list[Piece]:
        """The family's lines of every tenant, compressed a cell at a time; cells that changed
        since the last call are compressed now, outside the lock."""
        with self._lock:
            found = [
                (cell, cell.version, cell.compressed or bytes(cell.text))
                for cell in self._cells[family]
                if cell.text
            ]
        pieces = [got if isinstance(got, Piece) else compress(got) for _, _, got in found]
        with self._lock:
            for (cell, version, got), piece in zip(found, pieces, strict=True):
                if not isinstance(got, Piece) and cell.version == version:
                    cell.compressed = piece
        return pieces

    def tenants(self) -> int:
        """Tenants that have lines in some family."""
        with self._lock:
            return len(self._slots)
