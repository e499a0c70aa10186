"""The leaked-task guard of conftest.py fails an async test that leaves a task running."""

from __future__ import annotations

import pytest

from tests.support import REPO

pytest_plugins = ["pytester"]

CONFTEST = REPO / "tests" / "conftest.py"


def test_a_leaked_task_fails_the_test_and_a_clean_one_passes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        test_inner="""
        import asyncio

        async def test_leaks():
            asyncio.create_task(asyncio.sleep(3600), name="forgotten-poller")

        async def test_cleans_up():
            task = asyncio.create_task(asyncio.sleep(3600))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)  # the leak is a teardown error of test_leaks
    result.stdout.fnmatch_lines(["*left 1 asyncio task(s) running: forgotten-poller*"])
