"""Schedules: cron, interval and once, across daylight-saving changes; misfires, coalescing,
max instances, pause and resume; bad input stores nothing. On SQLite and on Postgres."""

import textwrap
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ponder.config import ConfigurationError
from ponder.errors import NotFoundError
from ponder.graphs.scheduler import ScheduleError, Scheduler, Trigger, parse_duration

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone, *fields) -> float:
    return datetime(*fields, tzinfo=zone).timestamp()


def local(zone, timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, zone).strftime("%Y-%m-%d %H:%M %Z")


@pytest.fixture
def target(tmp_path) -> str:
    path = tmp_path / "nightly.py"
    path.write_text(textwrap.dedent("""
        from ponder import Agent
        from ponder.testing import ScriptedChatModel
        agent = Agent("nightly", ScriptedChatModel(replies=lambda m: "done"))
    """))
    return f"{path}:agent"


@pytest.fixture
async def scheduler(database_url):
    store = Scheduler(database_url)
    yield store
    await store.aclose()


def test_cron_follows_cron_across_daylight_saving_changes():
    nightly = Trigger.cron("30 2 * * *", "Europe/Berlin")
    # Spring forward (02:00 -> 03:00): 02:30 does not exist; it fires at 03:00, once.
    fire = nightly.next_after(at(BERLIN, 2027, 3, 27, 12, 0))
    assert local(BERLIN, fire) == "2027-03-28 03:00 CEST"
    assert local(BERLIN, nightly.next_after(fire)) == "2027-03-29 02:30 CEST"
    # Fall back (03:00 -> 02:00): 02:30 happens twice; a daily job fires once.
    fires, t = [], at(BERLIN, 2027, 10, 30, 12, 0)
    for _ in range(3):
        t = nightly.next_after(t)
        fires.append(local(BERLIN, t))
    assert fires == ["2027-10-31 02:30 CEST", "2027-11-01 02:30 CET", "2027-11-02 02:30 CET"]
    # A job for every half hour runs in both copies of the repeated hour.
    half_hourly = Trigger.cron("*/30 * * * *", "America/New_York")
    fires, t = [], at(NEW_YORK, 2027, 11, 7, 0, 45)
    for _ in range(4):
        t = half_hourly.next_after(t)
        fires.append(local(NEW_YORK, t))
    assert fires == ["2027-11-07 01:00 EDT", "2027-11-07 01:30 EDT", "2027-11-07 01:00 EST",
                     "2027-11-07 01:30 EST"]
    # Nine in the morning is nine in the morning on both sides of a change.
    nine = Trigger.cron("0 9 * * *", "America/New_York")
    assert local(NEW_YORK, nine.next_after(at(NEW_YORK, 2027, 3, 13, 10, 0))) == \
        "2027-03-14 09:00 EDT"


def test_interval_and_once_triggers():
    every = Trigger.every("90s", start=1000.0)
    assert every.next_after(0) == 1000.0 and every.next_after(1000.0) == 1090.0
    assert every.next_after(1100.0) == 1180.0  # on the grid: late fires do not shift it
    once = Trigger.at("2027-01-01T09:00", "Europe/Berlin")
    assert once.next_after(0) == at(BERLIN, 2027, 1, 1, 9, 0)
    assert once.next_after(at(BERLIN, 2027, 1, 1, 9, 0)) is None
    assert parse_duration("250ms") == 0.25 and parse_duration("1.5h") == 5400


@pytest.mark.parametrize("make, message", [
    (lambda: Trigger.cron("61 * * * *"), "not a cron expression"),
    (lambda: Trigger.cron("* * *"), "not a cron expression"),
    (lambda: Trigger.cron("0 9 * * *", "Mars/Olympus"), "not a time zone"),
    (lambda: Trigger.at("next tuesday"), "not a time"),
    (lambda: Trigger.every("5 minutes"), "not a duration"),
    (lambda: Trigger.every("0s"), "not a duration"),
])
def test_bad_triggers_say_what_is_wrong(make, message):
    with pytest.raises(ScheduleError, match=message):
        make()


async def test_bad_schedules_store_nothing(scheduler, target, tmp_path):
    await scheduler.add("kept", target, Trigger.every("1h"), input="hi")
    with pytest.raises(ScheduleError, match="exists"):
        await scheduler.add("kept", target, Trigger.every("5m"), input="hi")
    with pytest.raises(ScheduleError, match="give the schedule an input"):
        await scheduler.add("mute", target, Trigger.every("5m"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        await scheduler.add("ghost", f"{tmp_path}/nowhere.py:agent", Trigger.every("1h"),
                            input="hi")
    with pytest.raises(ScheduleError, match="must be JSON"):
        await scheduler.add("odd", target, Trigger.every("1h"), input={"when": object()})
    with pytest.raises(ScheduleError, match="in the past"):
        await scheduler.add("late", target, Trigger.at("2001-01-01T00:00"), input="hi")
    with pytest.raises(ScheduleError, match="not valid"):
        await scheduler.add("bad name!", target, Trigger.every("1h"), input="hi")
    schedules = await scheduler.schedules()
    assert [s.name for s in schedules] == ["kept"]
    assert schedules[0].trigger.expr == "3600.0" and schedules[0].input == "hi"


async def test_fires_become_pending_runs_once(scheduler, target):
    schedule = await scheduler.add("tick", target, Trigger.every("10s", start=1000.0),
                                   input={"q": 1}, misfire_grace_s=None, coalesce=False,
                                   max_instances=10)
    assert schedule.next_fire_at >= 1000.0
    first = schedule.next_fire_at
    assert await scheduler.claim_due(first - 1) == []
    fires = await scheduler.claim_due(first + 25)  # three due: first, +10, +20
    assert [f.scheduled_for - first for f in fires] == [0, 10, 20]
    assert await scheduler.claim_due(first + 25) == []  # claimed already
    assert len({f.thread_id for f in fires}) == 3  # a new thread per fire
    record = await scheduler.runs.record(fires[0].run_id)
    assert record.status == "pending" and record.input == {"q": 1}
    assert (await scheduler.get("tick")).next_fire_at == first + 30


async def test_misfire_grace_coalesce_and_max_instances(scheduler, target):
    late = await scheduler.add("late", target, Trigger.every("10s", start=1000.0),
                               misfire_grace_s=15, coalesce=False, max_instances=10,
                               input="go")
    start = late.next_fire_at
    fires = await scheduler.claim_due(start + 42)  # due: +0 +10 +20 +30 +40; in grace: +30 +40
    assert [f.scheduled_for - start for f in fires] == [30, 40]
    assert (await scheduler.get("late")).skipped == 3

    merged = await scheduler.add("merged", target, Trigger.every("10s", start=1000.0),
                                 misfire_grace_s=None, coalesce=True, max_instances=10,
                                 input="go")
    fires = await scheduler.claim_due(merged.next_fire_at + 35)
    assert [f.scheduled_for - merged.next_fire_at for f in fires] == [30]  # only the latest

    single = await scheduler.add("single", target, Trigger.every("10s", start=1000.0),
                                 thread="persistent", misfire_grace_s=None, max_instances=1,
                                 input="go")
    t = single.next_fire_at
    assert len(await scheduler.claim_due(t)) == 1
    assert await scheduler.claim_due(t + 10) == []  # the first is still pending: skipped
    assert (await scheduler.get("single")).skipped == 1


async def test_cron_schedule_fires_across_spring_forward(scheduler, target):
    await scheduler.add("nightly", target, Trigger.cron("30 2 * * *", "Europe/Berlin"),
                        thread="persistent", misfire_grace_s=60, input="go")
    await scheduler.claim_due(at(BERLIN, 2027, 3, 28, 1, 0))  # catch up to the night of change
    assert local(BERLIN, (await scheduler.get("nightly")).next_fire_at) == \
        "2027-03-28 03:00 CEST"
    fires = await scheduler.claim_due(at(BERLIN, 2027, 3, 28, 3, 0) + 1)
    assert [local(BERLIN, f.scheduled_for) for f in fires] == ["2027-03-28 03:00 CEST"]
    assert fires[0].thread_id == "schedule:nightly"


async def test_pause_resume_remove_run_now_and_next_fires(scheduler, target):
    schedule = await scheduler.add("hourly", target, Trigger.cron("0 * * * *"), input="go")
    upcoming = await scheduler.next_fires("hourly", 3)
    assert upcoming[0] == schedule.next_fire_at and upcoming[1] - upcoming[0] == 3600
    await scheduler.pause("hourly")
    assert await scheduler.claim_due(schedule.next_fire_at + 7200) == []
    resumed = await scheduler.resume("hourly")
    assert not resumed.paused and resumed.next_fire_at == schedule.next_fire_at
    fire = await scheduler.run_now("hourly")
    assert (await scheduler.runs.record(fire.run_id)).status == "pending"
    await scheduler.remove("hourly")
    assert await scheduler.schedules() == []
    with pytest.raises(NotFoundError, match="no schedule is named 'hourly'"):
        await scheduler.pause("hourly")


def test_schedule_commands_and_their_mistakes(target, tmp_path):
    from tests.helpers.cli import ponder

    env = {"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}
    added = ponder("schedule", "add", "nightly", "--target", target, "--cron", "30 2 * * *",
                   "--tz", "Europe/Berlin", "--input", '"Summarise yesterday"', env=env)
    assert added.returncode == 0, added.stderr
    assert "added nightly: cron 30 2 * * * (Europe/Berlin)" in added.stdout
    mistakes = {
        ("--cron", "61 * * * *"): "not a cron expression",
        ("--cron", "0 9 * * *", "--tz", "Mars/Olympus"): "not a time zone",
        ("--every", "5m", "--input", "{oops"): "--input is not JSON",
        ("--every", "5m", "--at", "2030-01-01T00:00"): "exactly one of",
    }
    for options, message in mistakes.items():
        failed = ponder("schedule", "add", "broken", "--target", target, *options, env=env)
        assert failed.returncode == 2 and message in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
    unknown = ponder("schedule", "add", "ghost", "--target", "no_such_module:agent",
                     "--every", "5m", "--input", '"hi"', env=env)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    listed = ponder("schedule", "list", env=env)
    assert "nightly" in listed.stdout and "broken" not in listed.stdout
    assert "ghost" not in listed.stdout
    for command in ("pause", "resume", "run-now", "remove"):
        done = ponder("schedule", command, "nightly", env=env)
        assert done.returncode == 0, done.stderr
    assert "nightly" not in ponder("schedule", "list", env=env).stdout
    missing = ponder("schedule", "pause", "nightly", env=env)
    assert missing.returncode == 2 and "no schedule is named 'nightly'" in missing.stderr
