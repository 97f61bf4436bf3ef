"""Shared budgets: an API key's dollars per day over a real `ponder serve` (the official openai
client) and the Agent Server API (langgraph-sdk), and the shared table's atomic holds from
several processes, on SQLite and Postgres."""

import asyncio
import json
import sys
import textwrap

import httpx
import openai
import pytest
from langgraph_sdk import get_client

from ponder import Agent
from ponder.graphs.runs import RunRecorder
from ponder.models import Budget, chat_model
from ponder.models.budget_store import BudgetStore, today
from ponder.server.app import create_app
from ponder.server.keys import KeyStore
from ponder.testing import BackgroundServer, FakeOpenAIServer
from tests.helpers.cli import ponder
from tests.helpers.priced import PRICED_MODEL, priced
from tests.helpers.serving import Served

SERVED = textwrap.dedent(f"""
    import os
    from ponder import Agent
    from ponder.models import chat_model

    graph = Agent("bot", chat_model("openai:{PRICED_MODEL}", base_url=os.environ["FAKE_OPENAI"],
                                    max_tokens=8))
""")


def test_a_keys_daily_dollars_end_in_429_with_a_message(tmp_path):
    db = f"sqlite:///{tmp_path}/served.db"
    env = {"PONDER_DATABASE_URL": db}
    limit = 0.00003  # a few calls' worth of gpt-4o-mini
    made = ponder("keys", "create", "app", "--usd-per-day", str(limit), env=env)
    assert made.returncode == 0, made.stderr
    key_id, secret = made.stdout.split()[0], made.stdout.splitlines()[-1]
    assert "$3e-05/day" in ponder("keys", "list", env=env).stdout
    with FakeOpenAIServer(lambda messages: priced("answer")) as fake, \
            Served(tmp_path, db, SERVED, workers=1, FAKE_OPENAI=fake.base_url) as served:
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=secret, timeout=60)
        answered = 0
        with pytest.raises(openai.RateLimitError) as refused:
            for turn in range(20):
                reply = client.chat.completions.create(
                    model="bot", messages=[{"role": "user", "content": f"question {turn}"}])
                assert reply.choices[0].message.content == "answer"
                answered += 1
        assert answered >= 2
        error = refused.value.body
        assert refused.value.status_code == 429 and error["code"] == "budget_exceeded"
        assert f"API key {key_id} (app, per UTC day)" in error["message"]
        assert "spent of $0.00003" in error["message"]
        sent = len(fake.requests)
        assert sent == answered  # the refused call never reached the provider, nor was retried
        # The next request is refused as well, and nothing more is sent.
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="bot",
                                           messages=[{"role": "user", "content": "again?"}])
        assert len(fake.requests) == sent
        metrics = httpx.get(f"{served.url}/metrics",
                            headers={"Authorization": f"Bearer {secret}"}).text
        cost = next(line for line in metrics.splitlines()
                    if line.startswith('ponder_cost_usd_total{agent="bot"}'))
        assert 0 < float(cost.split()[-1]) <= limit


def test_a_negative_daily_budget_is_refused_without_a_traceback(tmp_path):
    env = {"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/keys.db"}
    refused = ponder("keys", "create", "app", "--usd-per-day=-1", env=env)
    assert refused.returncode == 2
    assert "--usd-per-day must be a number of dollars, 0 or more" in refused.stderr
    assert "Traceback" not in refused.stderr


HOLDER = textwrap.dedent("""
    import asyncio, json, sys
    from ponder.models import Budget
    from ponder.models.budget_store import BudgetStore
    from ponder.models.budgets import Amount, BudgetExceeded

    async def main(url, tries):
        store = BudgetStore(url)
        ledger = store.ledger("key:shared", Budget(usd=0.05), "the shared key", daily=True)
        amount = Amount(nano_usd=1_000_000, tokens=10, calls=1)  # $0.001 a call

        async def one():
            try:
                hold = await ledger.reserve(amount, "openai:gpt-4o-mini")
            except BudgetExceeded:
                return 0
            await asyncio.sleep(0.01)
            await ledger.settle(hold, amount, amount)
            return 1

        made = sum(await asyncio.gather(*(one() for _ in range(tries))))
        await store.aclose()
        print(json.dumps(made))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


async def test_processes_sharing_a_budget_never_go_over_it(database_url):
    store = BudgetStore(database_url)
    await store.engine()  # the table, made before the processes race for it
    processes = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, database_url, "40",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for _ in range(2)]
    made = []
    for process in processes:
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        made.append(json.loads(out))
    # 80 tries of $0.001 against $0.05: exactly 50 held and paid, whoever got them.
    assert sum(made) == 50
    spent, held = await store.spending("key:shared", today())
    assert spent.nano_usd == 50_000_000 and spent.calls == 50 and held.nano_usd == 0
    # Another scope, or a day later, starts from nothing.
    assert (await store.spending("key:other", today()))[0].calls == 0
    assert await store.reserve("key:shared", "2099-01-01", Budget(usd=0.05),
                               spent.__class__(nano_usd=50_000_000))
    await store.aclose()


async def test_a_keys_budget_covers_agent_server_runs(tmp_path):
    db = f"sqlite:///{tmp_path}/agents.db"
    keys = KeyStore(db)
    key, secret = await keys.create("app", usd_per_day=0.00002)
    await keys.aclose()
    async with FakeOpenAIServer(lambda messages: priced("answer")) as fake:
        agent = Agent("bot", chat_model(f"openai:{PRICED_MODEL}", base_url=fake.base_url,
                                        max_tokens=8), checkpointer=db)
        async with BackgroundServer(create_app([agent], database_url=db)) as url:
            client = get_client(url=url, api_key=secret)
            thread = (await client.threads.create())["thread_id"]
            answered = 0
            with pytest.raises(Exception, match=f"BudgetExceeded: the budget of API key "
                                                f"{key.id} \\(app, per UTC day\\) is used up: "
                                                r"\$[0-9.]+ spent of \$0.00002"):
                for turn in range(10):
                    await client.runs.wait(thread, "bot", input={
                        "messages": [{"role": "user", "content": f"question {turn}"}]})
                    answered += 1
            run = (await client.runs.list(thread, limit=1))[0]
            assert run["status"] == "error" and answered > 0
            record = await agent_run_record(db, run["run_id"])
            assert f"the budget of API key {key.id} (app, per UTC day)" in record.error
            assert len(fake.requests) == answered  # the refused call was never sent
    store = BudgetStore(db)
    spent, held = await store.spending(f"key:{key.id}", today())
    await store.aclose()
    assert spent.calls == answered and 0 < spent.nano_usd <= 20_000 and held.calls == 0


async def agent_run_record(db, run_id):
    recorder = RunRecorder(db)
    try:
        return await recorder.record(run_id)
    finally:
        await recorder.aclose()
