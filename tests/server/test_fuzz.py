"""The served OpenAPI schema, fuzzed with schemathesis: no input gets a 5xx."""

import schemathesis
import schemathesis.specs.openapi.checks  # noqa: F401 (parsed at collection, not mid-test)
from hypothesis import HealthCheck, given, settings

from ponder import Agent
from ponder.server import create_app
from ponder.testing import BackgroundServer, ScriptedChatModel


def test_no_generated_input_gets_a_server_error(tmp_path):
    db = f"sqlite:///{tmp_path}/fuzz.db"
    agent = Agent("bot", ScriptedChatModel(replies=lambda m: "ok"), checkpointer=db)
    failures: list[str] = []
    statuses: list[int] = []
    with BackgroundServer(create_app([agent], database_url=db)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 45  # OpenAI (chat, responses), the Agent Server API, health

        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(base_url=url, timeout=30)
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: "
                                    f"{response.status_code} {response.text[:200]}")

            check()
    assert failures == []
    assert len(statuses) > 5 * len(operations)  # it really sent requests
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
