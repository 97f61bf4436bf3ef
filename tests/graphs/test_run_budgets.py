"""Budgets on background runs (``submit(..., budget=)``) and on schedules (``--budget-usd``):
kept in the database, enforced by whichever worker executes the runs."""

import asyncio
import textwrap

import pytest

from ponder import Agent, Budget, ConfigurationError
from ponder.graphs import submit, wait
from ponder.graphs.runs import RunRecorder
from ponder.graphs.scheduler import Scheduler
from ponder.graphs.workers import Worker
from ponder.models import chat_model
from ponder.models.budget_store import BudgetStore
from ponder.testing import FakeOpenAIServer, tool_calls
from tests.helpers.cli import ponder
from tests.helpers.priced import PRICED_MODEL, priced

SCHEDULED = textwrap.dedent(f"""
    import os
    from ponder import Agent
    from ponder.models import chat_model

    agent = Agent("reporter", chat_model("openai:{PRICED_MODEL}",
                                         base_url=os.environ["FAKE_OPENAI"], max_tokens=8))
""")


def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def test_a_runs_budget_stops_it_with_an_error_and_keeps_its_steps(tmp_path):
    url = f"sqlite:///{tmp_path}/runs.db"
    replies = [priced(tool_calls(("lookup", {"city": "Oslo"}))), priced("It is sunny.")]
    async with FakeOpenAIServer(replies) as server:
        agent = Agent("weather", chat_model(f"openai:{PRICED_MODEL}", base_url=server.base_url),
                      tools=[lookup], checkpointer=url)
        with pytest.raises(ConfigurationError, match="budget must be a ponder.Budget"):
            await submit(agent, "Weather in Oslo?", url=url, budget={"calls": 1})
        run_id = await submit(agent, "Weather in Oslo?", thread_id="t", url=url,
                              budget=Budget(calls=1))
        record = await asyncio.wait_for(wait(run_id, url=url), 60)
        assert record.status == "error" and record.budget == {"calls": 1}
        assert f"BudgetExceeded: the budget of run {run_id} is used up: 1 calls spent of 1" \
            in record.error
        assert len(server.requests) == 1  # not retried: a retry would fail the same way
        # The first step is kept: the tool call and its result are in the thread.
        state = await agent.aget_state("t")
        assert [m.type for m in state.values["messages"]] == ["human", "ai", "tool"]
        await agent.aclose()


async def test_schedule_budget_from_the_cli_is_stored_and_enforced(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/scheduled.db"
    (tmp_path / "report.py").write_text(SCHEDULED)
    async with FakeOpenAIServer(lambda messages: priced("report")) as server:
        monkeypatch.setenv("FAKE_OPENAI", server.base_url)
        env = {"PONDER_DATABASE_URL": url, "FAKE_OPENAI": server.base_url}
        target = f"{tmp_path}/report.py:agent"
        refused = await asyncio.to_thread(
            ponder, "schedule", "add", "daily", "--target", target, "--every", "1d",
            "--input", '"report"', "--budget-usd=-2", env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "--budget-usd must be a number of dollars, 0 or more" in refused.stderr
        added = await asyncio.to_thread(
            ponder, "schedule", "add", "daily", "--target", target, "--every", "1d",
            "--input", '"report"', "--budget-usd", "0.00002", env=env)
        assert added.returncode == 0, added.stderr
        assert "budget $0.00002" in added.stdout
        listed = await asyncio.to_thread(ponder, "schedule", "list", env=env)
        assert "$0.00002" in listed.stdout

        scheduler = Scheduler(url)
        recorder = RunRecorder(url)
        try:
            assert (await scheduler.get("daily")).budget == Budget(usd=0.00002)
            statuses = []
            async with Worker(url, poll_s=0.05, heartbeat_s=0.2):
                for _ in range(6):  # each run makes one call; together they may not go over
                    fire = await scheduler.run_now("daily")
                    record = await asyncio.wait_for(recorder.wait(fire.run_id), 60)
                    statuses.append(record.status)
                    if record.status == "error":
                        break
            assert statuses[0] == "success" and statuses[-1] == "error"
            assert "the budget of schedule 'daily' is used up" in record.error
            assert "spent of $0.00002" in record.error
            assert len(server.requests) == statuses.count("success")
            budgets = BudgetStore(url)
            spent, held = await budgets.spending("schedule:daily", "total")
            assert 0 < spent.nano_usd <= 20_000 and held.nano_usd == 0
            assert spent.calls == len(server.requests)
            # Added anew, the schedule starts from nothing.
            await scheduler.add("daily", target, (await scheduler.get("daily")).trigger,
                                input="report", replace=True, budget=Budget(usd=0.00002))
            assert (await budgets.spending("schedule:daily", "total"))[0].calls == 0
            await budgets.aclose()
        finally:
            await scheduler.aclose()
            await recorder.aclose()
