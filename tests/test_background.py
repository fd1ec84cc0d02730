"""django_realtime.background.spawn: a task nobody awaits is held until it
ends, and its failure is logged, not lost."""

import asyncio
import logging

from django_realtime import background


async def test_a_failing_task_is_logged_and_let_go(caplog):
    async def fails() -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="django_realtime.background"):
        task = background.spawn(fails())
        assert task in background._running
        await asyncio.wait([task])
        await asyncio.sleep(0)  # the done callbacks run
    assert task not in background._running
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


async def test_a_task_held_by_its_owner_leaves_its_set_and_a_cancel_is_no_failure(caplog):
    held: set = set()
    task = background.spawn(asyncio.sleep(60), into=held)
    assert held == {task} and task not in background._running
    task.cancel()
    with caplog.at_level(logging.ERROR, logger="django_realtime.background"):
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert held == set() and caplog.records == []
