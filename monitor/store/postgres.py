"""The shared store for two or more replicas: PostgreSQL through psycopg 3.

The same schema and behaviour as SQLite, with ``TIMESTAMPTZ`` instants and ``JSONB`` bodies.
One connection in autocommit mode serves every thread behind a lock; each write is one
``connection.transaction()``. A connection the server dropped is replaced on the next call.
Concurrent ``migrate()`` calls from several replicas are serialised by an advisory lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.types.string import TextLoader

from monitor.clock import utc
from monitor.errors import StoreError
from monitor.redact import Redactor, redact_url, url_secrets
from monitor.store import migrations
from monitor.store.sql import Session, SQLStore

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x6B65_7977_6D69  # "keywmi": any constant shared by every replica

Connection = psycopg.Connection[tuple[Any, ...]]


class _PostgresSession:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._connection.execute(_format_placeholders(sql), params).rowcount

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._connection.execute(_format_placeholders(sql), params).fetchall()


def _format_placeholders(sql: str) -> str:
    """The shared SQL uses ``?``; psycopg wants ``%s`` (and a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SQLStore):
    dialect = migrations.POSTGRES
    _connection: Connection

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self.where = f"PostgreSQL store {redact_url(url)}"
        self._url = url
        self._redact = Redactor(url_secrets(url))
        self._connect_options = _default_options(url, connect_timeout=connect_timeout)
        self._lock = threading.Lock()
        self._closed = False
        with self._translated("connect"):
            self._connection = self._connect()

    def _connect(self) -> Connection:
        conninfo = make_conninfo(self._url, **self._connect_options)
        connection = psycopg.connect(conninfo, autocommit=True)
        try:
            connection.adapters.register_loader("jsonb", TextLoader)  # model parses the text
            connection.execute("SET TIME ZONE 'UTC'")
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def _translated(self, operation: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            full_text = str(exc)
            message = self._redact(_first_line(full_text) or type(exc).__name__)
            error = StoreError(f"{self.where}: {operation} failed: {message}")
            if self._redact(full_text) != full_text:
                raise error from None  # the driver's own message would show the password
            raise error from exc

    @contextmanager
    def _session(self, operation: str, *, write: bool, flush: bool = True) -> Iterator[Session]:
        with self._lock, self._translated(operation):
            connection = self._live_connection(operation)
            session = _PostgresSession(connection)
            if not write:
                yield session
                return
            try:
                with connection.transaction():
                    if not flush:
                        session.execute("SET LOCAL synchronous_commit TO off")
                    yield session
            except psycopg.Error as exc:
                self._write_failure = self._redact(_first_line(str(exc)) or type(exc).__name__)
                raise
            self._write_failure = None

    def _live_connection(self, operation: str) -> Connection:
        if self._closed:
            raise StoreError(f"{self.where}: {operation} failed: the store is closed")
        if self._connection.closed:
            log.warning("%s: the connection was lost; reconnecting", self.where)
            self._connection = self._connect()
        return self._connection

    def _serialise_migrations(self, session: Session) -> None:
        session.query("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))

    def size_bytes(self) -> int:
        """The tables of the store's schema, with their indexes and TOAST data."""
        with self._session("size_bytes", write=False) as session:
            rows = session.query(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        return int(rows[0][0])

    def _to_db_time(self, value: datetime) -> object:
        return utc(value)

    def _from_db_time(self, value: object) -> datetime:
        if not isinstance(value, datetime):
            raise StoreError(f"{self.where}: expected a timestamp, got {type(value).__name__}")
        return utc(value)


def _first_line(text: str) -> str:
    """The message without the SQL excerpt and hints the server appends on later lines."""
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _default_options(url: str, *, connect_timeout: float) -> dict[str, str]:
    """Connection parameters keywatch sets unless the URL sets them itself."""
    given = {name.lower() for name, _ in parse_qsl(urlsplit(url).query)}
    defaults = {
        "connect_timeout": str(max(1, round(connect_timeout))),
        "application_name": "keywatch",
        # A server that goes silent (a partition, a frozen host) fails a query within ~30 s
        # instead of the kernel's ~15 minutes of retransmissions.
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "5",
        "keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }
    return {name: value for name, value in defaults.items() if name not in given}
