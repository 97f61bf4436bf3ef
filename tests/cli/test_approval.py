"""``ponder chat`` and ``ponder run`` ask about each tool call that needs approval: approve,
always (for the thread), edit (JSON arguments, asked again until they fit) or reject."""

import json
import re

from tests.helpers.cli import ponder

SHOP = '''
from pathlib import Path

from ponder import Agent
from ponder.testing import ScriptedChatModel, tool_calls
from ponder.tools import tool

LOG = Path(__file__).with_name("ran.log")


@tool(approval=True)
def send_email(to: str) -> str:
    """Send an email."""
    with LOG.open("a") as log:
        log.write(f"send_email {to}\\n")
    return f"sent to {to}"


@tool(approval=True)
def pay(amount: int) -> str:
    """Pay an amount, in dollars."""
    with LOG.open("a") as log:
        log.write(f"pay {amount}\\n")
    return f"paid {amount}"


def reply(messages):
    if messages[-1].type == "tool":
        turn = messages[max(i for i, m in enumerate(messages) if m.type == "human"):]
        return "Done: " + "; ".join(m.content for m in turn if m.type == "tool")
    return tool_calls(("send_email", {"to": "ann"}), ("pay", {"amount": 500}))


shop = Agent("shop", ScriptedChatModel(replies=reply), tools=[send_email, pay])
'''


def test_chat_asks_about_each_call_that_needs_approval(tmp_path):
    (tmp_path / "shop.py").write_text(SHOP)
    env = {"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/shop.db"}
    answers = [
        "buy", "maybe", "a",  # not an answer (explained), then: always allow send_email
        "n", "too much",  # reject the payment, with a reason for the model
        "buy again",  # send_email is allowed for the thread: only the payment is asked about
        "e", "{oops", '{"amount": "five"}',  # not JSON; then arguments that do not fit
        "e", '{"amount": 5}',  # asked again, with the problem: now they fit
    ]
    done = ponder("chat", f"{tmp_path}/shop.py:shop", input="\n".join(answers) + "\n", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert 'approve send_email({"to": "ann"})? Send an email.' in out
    assert 'approve pay({"amount": 500})? Pay an amount, in dollars.' in out
    assert "answer y to approve the call, a to approve it and every call" in out
    assert "Done: too much; sent to ann" in out  # the approved call ran a step later
    assert "that is not JSON" in out
    assert re.search(r"approve pay\(\{\"amount\": 500\}\)\? .*\(the edited arguments do not "
                     r"fit tool 'pay': amount: Input should be a valid integer", out)
    assert "Done: sent to ann; paid 5" in out
    # Only what was approved ran, once; the second email was not asked about.
    assert (tmp_path / "ran.log").read_text().splitlines() == [
        "send_email ann", "send_email ann", "pay 5"]
    assert len(re.findall(r"approve send_email", out)) == 1


def test_run_json_lists_approval_requests_and_resume_takes_decisions(tmp_path):
    (tmp_path / "shop.py").write_text(SHOP)
    env = {"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/shop.db"}
    target = f"{tmp_path}/shop.py:shop"
    paused = json.loads(ponder("run", target, "buy", "--thread", "t", "--json", env=env).stdout)
    ids = {i["value"]["tool"]: i["id"] for i in paused["interrupts"]}
    bad = ponder("run", target, "--thread", "t", "--resume",
                 json.dumps({ids["pay"]: {"decision": "perhaps"}}), env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "the decision \"perhaps\" is not one of approve, edit, reject" in bad.stderr
    assert not (tmp_path / "ran.log").exists()
    done = ponder("run", target, "--thread", "t", "--json", "--resume", json.dumps(
        {ids["pay"]: {"decision": "reject"}, ids["send_email"]: {"decision": "approve"}}),
        env=env)
    assert json.loads(done.stdout)["output"] == (
        "Done: The person did not approve this call of 'pay': it was not run.; sent to ann")
