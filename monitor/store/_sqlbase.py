"""The base of the SQL store's parts: the hooks a backend implements, and what they share.

``SQLStore`` (``monitor.store.sql``) is assembled from one part per concern (schema, polls,
outbox, leases); each part is an ``SQLBase`` and reaches the database only through
``_session``. A backend (``sqlite.py``, ``postgres.py``) supplies the hooks.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from monitor.errors import FencedOut, StoreError
from monitor.model import Event, event_from_json
from monitor.store import migrations
from monitor.store.base import Fence


class Session(Protocol):
    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


class _Closable(Protocol):
    def close(self) -> None: ...


class SQLBase(ABC):
    """The backend hooks every part of ``SQLStore`` is written against."""

    dialect: migrations.Dialect
    where: str  # names the store in messages; never holds a credential
    _lock: threading.Lock  # one session at a time on the one connection
    _closed: bool
    _connection: _Closable  # the driver's connection, narrowed by each backend
    _write_failure: str | None = None  # the driver's error of the last write, until one works

    # --- backend hooks --------------------------------------------------------------------

    @abstractmethod
    def _session(
        self, operation: str, *, write: bool, flush: bool = True
    ) -> AbstractContextManager[Session]:
        """Hold the store's lock, translate driver errors to ``StoreError`` naming
        ``operation``, and for ``write`` wrap the block in one transaction. ``flush=False``
        lets the commit return before it reaches the disk: for delivery outcomes only, where
        losing the last ones to a power cut means sending them again, never losing one."""

    @abstractmethod
    def _to_db_time(self, value: datetime) -> object: ...

    @abstractmethod
    def _from_db_time(self, value: object) -> datetime: ...

    @abstractmethod
    def _serialise_migrations(self, session: Session) -> None:
        """Keep two processes from migrating at once (called first in each transaction)."""

    @abstractmethod
    def _translated(self, operation: str) -> AbstractContextManager[None]:
        """Turn the driver's errors inside the block into ``StoreError`` naming ``operation``."""

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._translated("close"):
                self._connection.close()

    # --- fencing ------------------------------------------------------------------------------

    @staticmethod
    def _guard(fence: Fence | None) -> tuple[str, tuple[object, ...]]:
        """The condition (and its parameters) that admits a write made under ``fence``: the
        lease's token is still the fence's. Every write is admitted without a fence."""
        if fence is None:
            return "1 = 1", ()
        return "(SELECT token FROM leases WHERE name = ?) = ?", (fence.lease, fence.token)

    def _check_fence(self, session: Session, fence: Fence | None, operation: str) -> None:
        """After a guarded write changed nothing: raise ``FencedOut`` (rolling the transaction
        back) unless the fence still holds, in which case the write had nothing to change."""
        if fence is None:
            return
        rows = session.query("SELECT token FROM leases WHERE name = ?", (fence.lease,))
        current = rows[0][0] if rows else None
        if current != fence.token:
            raise FencedOut(
                f"{self.where}: {operation} refused: it was made under token {fence.token} of "
                f"lease {fence.lease!r}, which now has token {current}: another replica leads"
            )

    def _decode_event(self, body: str) -> Event:
        try:
            return event_from_json(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{self.where}: a stored event is unreadable: {type(exc).__name__}"
            ) from exc
