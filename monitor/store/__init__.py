"""State stores: ``open_store(url)`` picks the backend from the URL scheme.

sqlite:///state.db                  a file relative to the working directory
sqlite:////var/lib/keywatch/state.db    an absolute path (four slashes)
sqlite:///:memory:                  in memory, gone on exit (tests, demos)
postgresql://user:pass@host:5432/db   PostgreSQL (also postgres://), needs psycopg
"""

from __future__ import annotations

from monitor.errors import StoreError
from monitor.redact import redact_url, scheme_of
from monitor.store.base import Delivery, OutboxStats, Store

__all__ = [
    "Delivery",
    "OutboxStats",
    "Store",
    "StoreError",
    "open_store",
    "probe_store",
    "redact_url",
]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store ``url`` names and, unless ``migrate=False``, bring its schema up to date.

    Raises ``StoreError`` (never showing a password) when the URL is not understood or the
    store cannot be opened.
    """
    scheme = scheme_of(url)
    store: Store
    if scheme == "sqlite":
        store = _open_sqlite(url)
    elif scheme in POSTGRES_SCHEMES:
        store = _open_postgres(url)
    else:
        shown = repr(scheme) if scheme else "none"
        raise StoreError(
            f"state: unsupported URL scheme {shown}; "
            "use sqlite:///path/to/state.db or postgresql://host/db"
        )
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


def probe_store(url: str) -> None:
    """Raise the ``StoreError`` that ``open_store(url)`` would, without creating or changing
    anything: a SQLite path is checked (and an existing file opened read-only); a PostgreSQL
    server is connected to."""
    if scheme_of(url) == "sqlite":
        from monitor.store.sqlite import MEMORY, probe

        _check_sqlite_url(url)
        path = url[len(SQLITE_PREFIX) :]
        if path != MEMORY:
            probe(path)
        return
    open_store(url, migrate=False).close()


def _check_sqlite_url(url: str) -> None:
    if url[: len(SQLITE_PREFIX)].lower() != SQLITE_PREFIX or len(url) == len(SQLITE_PREFIX):
        raise StoreError(
            f"state: {redact_url(url)} is not a SQLite URL; use sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )


def _open_sqlite(url: str) -> Store:
    from monitor.store.sqlite import SQLiteStore

    _check_sqlite_url(url)
    return SQLiteStore(url[len(SQLITE_PREFIX) :])


def _open_postgres(url: str) -> Store:
    try:
        from monitor.store.postgres import PostgresStore
    except ImportError as exc:
        raise StoreError(
            f"state: {redact_url(url)} needs the PostgreSQL driver: "
            "pip install 'keywatch[postgres]'"
        ) from exc
    return PostgresStore(url)
