"""Declarative agents from YAML, and the errors a bad spec gets."""

import textwrap

import pytest

from ponder import Agent
from ponder.agents.spec import SpecError
from ponder.testing import ScriptedChatModel, tool_calls


def write(tmp_path, text: str, name: str = "agent.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


async def test_a_spec_builds_a_working_agent(tmp_path):
    (tmp_path / "faq.md").write_text("Opening hours: 9 to 5.\n\nParking is free on Sundays.\n")
    (tmp_path / "shop_tools.py").write_text(
        "def stock(item: str) -> int:\n    '''Units of an item in stock.'''\n    return 7\n")
    path = write(tmp_path, """
        name: shop-helper
        profile:
          role: the helper of a hardware shop
          instructions: [Answer briefly]
        tools: [calculator, "shop_tools.py:stock"]
        knowledge: ["*.md"]
        max_steps: 4
    """)
    model = ScriptedChatModel(replies=[tool_calls(("stock", {"item": "nails"})), "7 in stock."])
    agent = Agent.from_spec(path, model=model, checkpointer=False)
    assert agent.name == "shop-helper" and agent.action.max_steps == 4
    assert sorted(t.name for t in agent.action.tools) == ["calculator", "stock"]
    state = await agent.ainvoke("When is parking free, and how many nails?")
    assert state["messages"][-2].content == "7"
    system = model.calls[0][0].content
    assert "the helper of a hardware shop" in system and "Parking is free on Sundays." in system


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed", r"not valid YAML at line 1, column 16: expected ',' or ']'"),
    ("- just\n- a list", r"must be a YAML mapping"),
    ("profile: {role: x}", r"name is required"),
    ("name: a\nmodle: openai:x", r"unknown field 'modle' \(known: name, model"),
    ("name: a\nprofile: {rol: x}", r"unknown field 'profile.rol'"),
    ("name: a\nmax_steps: 0", r"max_steps: Input should be greater than or equal to 1"),
    ("name: a\ntools: [teleporter]", r"unknown tool 'teleporter': use a built-in tool"),
    ("name: a\ntools: ['nowhere.module:thing']", r"tool 'nowhere.module:thing': cannot import"),
    ("name: a\nknowledge: [missing/*.md]", r"knowledge source 'missing/\*.md' matches no file"),
    ("name: 'bad name!'", r"agent name 'bad name!' is not valid"),
    ("name: a\nplanner: magic", r"unknown planner 'magic': use one of zero-shot-cot"),
    ("name: a\nplanner: {type: self-consistency, k: 0}", r"planner 'self-consistency': k must"),
])
def test_bad_specs_get_clear_errors_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=message) as caught:
        Agent.from_spec(path, model=ScriptedChatModel())
    assert str(path) in str(caught.value)


async def test_a_named_planner_with_options(tmp_path):
    path = write(tmp_path, """
        name: thinker
        planner: {type: self-consistency, k: 3}
    """)
    model = ScriptedChatModel(replies=lambda m: "2" if m[-1].content.endswith("is")
                              else "thinking: 1 + 1 = 2")
    agent = Agent.from_spec(path, model=model, checkpointer=False)
    assert agent.planner.k == 3
    assert await agent.aask("1 + 1?") == "2"


def test_a_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        Agent.from_spec(tmp_path / "nope.yaml", model=ScriptedChatModel())
