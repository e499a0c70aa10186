"""Fixtures shared by several test files: a private PostgreSQL schema per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from monitor.store import redact_url

POSTGRES_URL = os.environ.get(
    "KEYWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The server's URL; skips when it is unreachable, except under CI=true, where it fails."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True) as connection:
            connection.execute("SELECT 1")
    except Exception as exc:
        cause = " ".join(str(exc).split())
        reason = f"PostgreSQL at {redact_url(POSTGRES_URL)} is unavailable: {cause}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true never skips it)")
        pytest.skip(f"{reason} (set KEYWATCH_TEST_POSTGRES_URL)")
    return POSTGRES_URL


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    option = "options=" + quote(f"-c search_path={schema}")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    import psycopg
    from psycopg import sql

    admin_url: str = request.getfixturevalue("postgres_admin_url")
    schema = f"kw_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(admin_url, schema)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
