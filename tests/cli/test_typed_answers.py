"""`ponder run` with an agent spec that declares an output schema and fallback models."""

import json
import textwrap

from ponder.testing import FakeOpenAIServer, Fault
from tests.helpers.cli import ponder

SPEC = """
    name: pricer
    model: openai:main
    fallbacks: [openai:backup]
    output:
      type: object
      properties: {price: {type: number}, currency: {type: string}}
      required: [price, currency]
"""


def test_run_prints_the_typed_answer_of_the_fallback_as_json(tmp_path):
    (tmp_path / "pricer.yaml").write_text(textwrap.dedent(SPEC))
    # The main model fails (one attempt, by PONDER_MAX_ATTEMPTS) and the backup answers,
    # without the currency; the repair call finds the main model up again.
    replies = [{"price": 4.5}, {"price": 4.5, "currency": "EUR"}] * 2
    with FakeOpenAIServer(replies, faults=[Fault.server_error(500), None, None,
                                           Fault.server_error(503)]) as srv:
        env = {"OPENAI_BASE_URL": srv.base_url, "PONDER_MAX_ATTEMPTS": "1",
               "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/runs.db"}
        plain = ponder("run", "pricer.yaml", "how much is the tea?", cwd=tmp_path, env=env)
        as_json = ponder("run", "pricer.yaml", "and the cup?", "--json", cwd=tmp_path, env=env)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == {"price": 4.5, "currency": "EUR"}
    assert json.loads(as_json.stdout)["output"] == {"price": 4.5, "currency": "EUR"}
    assert [r["model"] for r in srv.requests] == ["main", "backup", "main"] * 2
    assert srv.requests[1]["response_format"]["json_schema"]["schema"]["required"] == [
        "price", "currency"]


def test_a_spec_with_a_bad_output_or_fallback_is_refused_in_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nmodel: openai:m\noutput: {title: x}\n")
    (tmp_path / "worse.yaml").write_text("name: worse\nmodel: openai:m\nfallbacks: [nope:m]\n")
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
           "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/runs.db"}
    bad = ponder("run", "bad.yaml", "hi", cwd=tmp_path, env=env)
    worse = ponder("run", "worse.yaml", "hi", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "bad.yaml" in bad.stderr and "is not a JSON Schema" in bad.stderr
    assert worse.returncode == 2 and "Traceback" not in worse.stderr
    assert "fallbacks[0] 'nope:m'" in worse.stderr and "unknown model provider" in worse.stderr
