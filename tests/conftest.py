"""Fixtures shared by several test files: a private PostgreSQL schema per test, and a guard
that fails an async test which leaves asyncio tasks running behind it."""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import pytest_asyncio

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


# --- leaked asyncio tasks ----------------------------------------------------------------------

TASK_GUARD = "no_leaked_tasks"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test gets the task guard as its first fixture, so the guard's teardown runs
    after every other fixture of the test has stopped what it started."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, TASK_GUARD)


@pytest_asyncio.fixture(name=TASK_GUARD)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test when tasks it started are still pending once its fixtures are torn down
    (like kopf's guard): a leaked task keeps running into the next test's loop and hides a
    shutdown that forgot something. The leaked tasks are cancelled so the next test is clean."""
    before = asyncio.all_tasks()
    yield
    for _ in range(3):
        await asyncio.sleep(0)  # let tasks that were just cancelled finish
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    if not leaked:
        return
    for task in leaked:
        task.cancel()
    await asyncio.gather(*leaked, return_exceptions=True)
    names = sorted(f"{task.get_name()} ({task.get_coro()!r})" for task in leaked)
    pytest.fail(f"the test left {len(leaked)} asyncio task(s) running: {', '.join(names)}")
