"""One registry of planner names: a name or alias means the same planner in an agent spec, at the
CLI and in evaluation; an unknown one is refused with the list of known ones."""

import textwrap

import pytest

from ponder import Agent
from ponder.agents.planning import (
    ChainOfThought,
    Decompose,
    Example,
    SelfConsistency,
    TreeOfThoughts,
    ZeroShotCoT,
    make_planner,
    planner_name,
)
from ponder.agents.planning.evaluation import game24_planner, gsm8k_planner
from ponder.agents.spec import SpecError
from ponder.config import ConfigurationError
from ponder.testing import ScriptedChatModel

EXAMPLES = [Example("What is 2 plus 3?", "2 + 3 = 5.", "5")]


@pytest.mark.parametrize("alias, name", [
    ("sc", "self-consistency"), ("self-consistency", "self-consistency"),
    ("tot", "tree-of-thoughts"), ("cot", "chain-of-thought"), ("io", "input-output"),
    ("zero-shot-cot", "zero-shot-cot"), ("plan-and-execute", "decompose"),
])
def test_aliases_resolve_to_the_planners_own_names(alias, name):
    assert planner_name(alias) == name


def test_a_name_makes_its_planner_with_options():
    assert isinstance(make_planner("zero-shot-cot"), ZeroShotCoT)
    assert make_planner("tot", breadth=2).breadth == 2
    assert isinstance(make_planner({"type": "decompose", "max_subtasks": 3}), Decompose)
    cot = make_planner("cot", examples=[{"question": "q", "rationale": "r", "answer": "1"}])
    assert isinstance(cot, ChainOfThought) and cot.examples == [Example("q", "r", "1")]
    spec_form = make_planner({"type": "cot", "examples": EXAMPLES,
                              "prompt_format": {"trigger": "Answer:"}})
    assert spec_form.prompt_format.trigger == "Answer:"
    sc = make_planner("sc", k=3, base={"type": "cot", "examples": EXAMPLES})
    assert isinstance(sc, SelfConsistency) and sc.k == 3 and sc.base.examples == EXAMPLES


async def test_input_output_prompting_shows_the_answers_alone():
    model = ScriptedChatModel(replies=["The answer is 9."])
    solution = await make_planner("io", examples=EXAMPLES).solve("What is 4 plus 5?", model)
    assert model.calls[0][-1].content == (
        "Q: What is 2 plus 3?\nA: The answer is 5.\n\nQ: What is 4 plus 5?\nA:")
    assert solution.answer == "9"


def test_unknown_names_and_bad_options_are_configuration_errors():
    with pytest.raises(ConfigurationError, match=r"unknown planner 'magic': use one of "
                       r"zero-shot-cot, chain-of-thought \(cot\), .*self-consistency \(sc\), "
                       r"tree-of-thoughts \(tot\), decompose \(plan-and-execute\)"):
        make_planner("magic")
    with pytest.raises(ConfigurationError, match="planner 'chain-of-thought': it needs examples"):
        make_planner("cot")
    with pytest.raises(ConfigurationError, match="planner 'tree-of-thoughts': .*'depth'"):
        make_planner("tot", depth=3)
    with pytest.raises(ConfigurationError, match="unknown method 'decompose': use one of "
                       "chain-of-thought"):
        game24_planner("decompose")  # a planner, but not a Game of 24 method


def _spec_planner(tmp_path, planner: str):
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(f"""
        name: thinker
        planner: {planner}
    """))
    return Agent.from_spec(path, model=ScriptedChatModel(), checkpointer=False).planner


@pytest.mark.parametrize("alias, kind", [("sc", SelfConsistency), ("tot", TreeOfThoughts)])
def test_a_name_means_the_same_planner_in_a_spec_and_in_evaluation(tmp_path, alias, kind):
    full = planner_name(alias)
    for planner in (_spec_planner(tmp_path, alias), _spec_planner(tmp_path, full),
                    make_planner(alias), game24_planner(alias), game24_planner(full)):
        assert type(planner) is kind
    assert type(gsm8k_planner("sc")) is type(gsm8k_planner("self-consistency")) is SelfConsistency
    assert type(gsm8k_planner("cot")) is ChainOfThought


def test_an_unknown_planner_in_a_spec_lists_the_names_and_module_attr(tmp_path):
    with pytest.raises(SpecError, match=r"unknown planner 'magic': use one of zero-shot-cot, "
                       r".*, or module:attr for your own"):
        _spec_planner(tmp_path, "magic")
