"""Stored run events and how another process follows them: LISTEN/NOTIFY on Postgres."""

import asyncio
import time

from ponder.server.agent_server.streams import StoredEvents


async def test_a_follower_on_postgres_wakes_when_another_process_stores_an_event(postgres_url):
    # Two stores on one database stand for two server processes.
    async with StoredEvents(postgres_url) as here, StoredEvents(postgres_url) as there:
        assert here.shared
        async with here.following("run-1") as changed:
            async def later():
                await asyncio.sleep(0.3)
                await there.add("run-1", 1, "values", {"n": 1})
                await there.add("run-2", 1, "values", {"n": 2})  # another run's: not ours

            writer = asyncio.create_task(later())
            started = time.monotonic()
            await changed(30)
            woke_after = time.monotonic() - started
            await writer
            assert woke_after < 10  # woken by the notification, not the 30 s timeout
            assert await here.after("run-1", seq=0) == [(1, "values", {"n": 1})]
            # What was announced while nobody waited is not lost: the next wait returns.
            await there.announce("run-1")
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await changed(30)
            assert time.monotonic() - started < 10


async def test_sqlite_stores_only_what_is_asked_and_followers_poll(tmp_path):
    async with StoredEvents(f"sqlite:///{tmp_path}/events.db") as events:
        assert not events.shared
        async with events.following("run-1") as changed:
            started = time.monotonic()
            await changed(30)
            assert time.monotonic() - started < 5  # a poll interval, not the timeout
