"""The embedded default store: one SQLite file in WAL mode with ``synchronous=FULL`` (NORMAL
for the commits of delivery outcomes, see ``SQLStore._session``).

One connection serves every thread, behind a lock. Writes run in ``BEGIN IMMEDIATE``
transactions, so a second process on the same file waits (``busy_timeout``) instead of
failing half-way. Instants are stored as ISO-8601 UTC text with microseconds, which sorts
like the instants themselves.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from monitor.clock import utc
from monitor.errors import StoreError
from monitor.store import migrations
from monitor.store.sql import Session, SQLStore

log = logging.getLogger(__name__)

MEMORY = ":memory:"


class _SQLiteSession:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._connection.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._connection.execute(sql, params).fetchall()


def check_path(path: str) -> None:
    """Raise ``StoreError`` if nothing could be opened or created at ``path``: it is a
    directory, an ancestor is a file, or nothing can be created in the nearest existing
    directory."""
    where = f"SQLite store {path}"
    target = Path(path)
    if target.is_dir():
        raise StoreError(f"{where}: {path} is a directory, not a database file")
    if target.exists():
        return
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StoreError(f"{where}: {ancestor} is a file, not a directory")
    try:  # what creating it would do, leaving nothing behind
        tempfile.TemporaryFile(dir=ancestor).close()
    except OSError as exc:
        raise StoreError(f"{where}: cannot create it in {ancestor}: {exc.strerror}") from exc


def probe(path: str) -> None:
    """Check, changing nothing, that ``open_store`` could open the SQLite file at ``path``:
    the path checks, and an existing file must be a readable SQLite database."""
    check_path(path)
    if path == MEMORY or not Path(path).exists():
        return
    try:
        uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
        connection = sqlite3.connect(uri, uri=True)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store {path}: open failed: {exc}") from exc


class SQLiteStore(SQLStore):
    dialect = migrations.SQLITE
    _connection: sqlite3.Connection

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = str(path)
        self.where = f"SQLite store {self.path}"
        self._lock = threading.Lock()
        self._closed = False
        with self._translated("open"):
            self._connection = self._connect(busy_timeout)
        self._session_object = _SQLiteSession(self._connection)

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        if self.path != MEMORY:
            check_path(self.path)
            self._create_parent_directory()
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            connection.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            connection.close()
            raise
        if self.path != MEMORY:
            log.info("state store: SQLite file %s", Path(self.path).resolve())
            if mode != "wal":
                log.warning("%s: journal mode is %s, not WAL (filesystem?)", self.where, mode)
        return connection

    def _create_parent_directory(self) -> None:
        parent = Path(self.path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.where}: cannot create directory {parent}: {exc}") from exc

    @contextmanager
    def _translated(self, operation: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.where}: {operation} failed: {exc}") from exc

    @contextmanager
    def _session(
        self, operation: str, *, write: bool, flush: bool = True
    ) -> Iterator[_SQLiteSession]:
        with self._lock, self._translated(operation):
            if self._closed:
                raise StoreError(f"{self.where}: {operation} failed: the store is closed")
            if not write:
                yield self._session_object
                return
            if not flush:
                # WAL + NORMAL: safe against a crash of the process; a power cut may undo
                # this commit, and the next FULL commit flushes it with its own.
                self._connection.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction():
                    yield self._session_object
            finally:
                if not flush:
                    self._connection.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; remembers whether the driver failed it (``ping``)."""
        try:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._connection.execute("COMMIT")
            except BaseException:
                self._roll_back()
                raise
        except sqlite3.Error as exc:
            self._write_failure = str(exc)
            raise
        self._write_failure = None

    def _roll_back(self) -> None:
        try:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("%s: rollback failed", self.where)

    def _serialise_migrations(self, session: Session) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's one write lock

    def _to_db_time(self, value: datetime) -> object:
        return utc(value).isoformat(timespec="microseconds")

    def _from_db_time(self, value: object) -> datetime:
        return utc(datetime.fromisoformat(str(value)))

    def size_bytes(self) -> int:
        with self._session("size_bytes", write=False) as session:
            [(pages, page_size)] = session.query(
                "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()"
            )
        return int(pages) * int(page_size)

    def pragma(self, name: str) -> object:
        """The value of one PRAGMA (for tests and ``keywatch status``)."""
        if not name.isidentifier():
            raise ValueError(f"not a PRAGMA name: {name!r}")
        with self._session(f"PRAGMA {name}", write=False) as session:
            return session.query(f"PRAGMA {name}")[0][0]
