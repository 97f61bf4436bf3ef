"""Chain-of-Thought (few-shot, zero-shot, Auto-CoT) and Self-Consistency."""

import re

import pytest
from langchain_core.messages import AIMessage

from ponder import Agent, Profile
from ponder.agents.planning import (
    AutoCoT,
    Budget,
    ChainOfThought,
    Example,
    SelfConsistency,
    ZeroShotCoT,
    extract_answer,
)
from ponder.agents.planning.cot import kmeans
from ponder.models import chat_model
from ponder.testing import FakeOpenAIServer, HashingEmbeddings, ScriptedChatModel
from tests.helpers.concurrency import Rendezvous

POOL = [
    Example("Tom has 3 apples and buys 2 more apples. How many apples?", "3 + 2 = 5.", "5"),
    Example("A train travels 60 km per hour for 2 hours. How far?", "60 * 2 = 120.", "120"),
    Example("Ann has 10 apples and eats 4 apples. How many apples are left?", "10 - 4 = 6.", "6"),
    Example("A car travels 50 km per hour for 3 hours. How far does it go?", "50 * 3 = 150.",
            "150"),
]


def last_question(messages) -> str:
    return messages[-1].content.rsplit("Q: ", 1)[-1]


# -- Chain-of-Thought ---------------------------------------------------------------------------


async def test_few_shot_prompt_holds_the_worked_examples():
    model = ScriptedChatModel(replies=["7 + 1 = 8. The answer is 8."])
    solution = await ChainOfThought(POOL[:2]).solve("Sam has 7 pens and gets 1. How many?", model)
    prompt = model.calls[0][-1].content
    assert "Q: Tom has 3 apples" in prompt and "A: 3 + 2 = 5. The answer is 5." in prompt
    assert prompt.endswith("Q: Sam has 7 pens and gets 1. How many?\nA:")
    assert solution.answer == "8" and solution.calls == 1 and solution.total_tokens > 0


async def test_similarity_selection_puts_the_nearest_example_last():
    cot = ChainOfThought(POOL, k=2, select="similarity", embeddings=HashingEmbeddings(256))
    chosen = await cot.choose("A bus travels 40 km per hour for 2 hours. How far does it go?")
    assert {e.answer for e in chosen} == {"120", "150"}  # the two travel questions
    assert chosen[-1].answer == "150"  # "How far does it go?" is the closest wording


async def test_diversity_selection_takes_one_example_per_cluster():
    cot = ChainOfThought(POOL, k=2, select="diversity", embeddings=HashingEmbeddings(256))
    chosen = await cot.choose("anything")
    kinds = {"apples" in e.question for e in chosen}
    assert kinds == {True, False}  # one apple question, one travel question


def test_kmeans_separates_clear_groups():
    vectors = [[0.0, 0.1], [0.1, 0.0], [10.0, 10.1], [10.1, 10.0], [0.05, 0.05]]
    _, labels = kmeans(vectors, 2)
    assert labels[0] == labels[1] == labels[4] != labels[2] == labels[3]


async def test_zero_shot_cot_runs_two_stages():
    model = ScriptedChatModel(replies=["16 - 3 - 4 = 9 eggs, sold at $2: 18 dollars.", "$18."])
    solution = await ZeroShotCoT().solve("How much does Janet make?", model)
    first, second = (m[-1].content for m in model.calls)
    assert first.endswith("A: Let's think step by step.")
    assert "16 - 3 - 4 = 9 eggs" in second
    assert second.endswith("Therefore, the answer (arabic numerals) is")
    assert solution.answer == "18" and [s.kind for s in solution.steps] == ["reason", "extract"]


async def test_an_unparseable_or_empty_reply_is_a_recorded_failure_not_a_hang():
    solution = await ZeroShotCoT().solve("?", ScriptedChatModel(replies=["hmm", ""]))
    assert solution.answer is None and "no answer" in solution.error
    assert solution.calls == 2


async def test_auto_cot_applies_the_selection_heuristics():
    long_question = "How many apples " + "really " * 70 + "are there?"
    bank = [long_question, "Tom has 3 apples and buys 2 more. How many apples?",
            "Ann has 10 apples and eats 4. How many apples?",
            "A train goes 60 km per hour for 2 hours. How far?",
            "A car goes 50 km per hour for 3 hours. How far?"]

    def reply(messages):
        prompt = messages[-1].content
        if "Therefore" in prompt:
            return re.findall(r"= (\d+)", prompt)[-1] if "= " in prompt else "none"
        if "Ann has 10" in prompt:  # a rambling rationale: too many steps
            return "\n".join(f"step {i}" for i in range(8)) + "\n10 - 4 = 6"
        numbers = [int(n) for n in re.findall(r"\d+", last_question(messages))]
        value = numbers[0] + numbers[1] if "buys" in prompt else numbers[0] * numbers[1]
        return f"So the result is {numbers[0]} op {numbers[1]} = {value}"

    model = ScriptedChatModel(replies=reply)
    auto = AutoCoT(bank, HashingEmbeddings(256), clusters=2)
    demos = await auto.build(model)
    questions = {d.question for d in demos}
    assert len(demos) == 2
    assert long_question not in questions  # over 60 tokens
    assert "Ann has 10 apples and eats 4. How many apples?" not in questions  # over 5 steps
    assert all(len(d.rationale.splitlines()) <= 5 for d in demos)
    assert await auto.build(model) is demos  # built once


# -- Self-Consistency ---------------------------------------------------------------------------


def reasoning_then_answer(answers):
    """Zero-shot-CoT replies: reasoning ending in the next answer, then the extraction."""
    queue = list(answers)

    def reply(messages):
        prompt = messages[-1].content
        if prompt.endswith("is"):
            return re.findall(r"ANSWER (\S+)", prompt)[-1]
        return f"thinking... ANSWER {queue.pop(0)}"
    return reply


async def test_majority_vote_with_distribution_and_agreement():
    model = ScriptedChatModel(replies=reasoning_then_answer(["18", "18.0", "17", "$18", "20"]))
    solution = await SelfConsistency(5, early_stop=False).solve("?", model)
    assert solution.answer == "18"
    assert solution.details["votes"] == {"18": 3.0, "17": 1.0, "20": 1.0}
    assert solution.details["agreement"] == 0.6


async def test_a_tie_goes_to_the_answer_that_came_first():
    model = ScriptedChatModel(replies=reasoning_then_answer(["5", "7", "7", "5"]))
    solution = await SelfConsistency(4, early_stop=False).solve("?", model)
    assert solution.answer == "5" and solution.details["votes"] == {"5": 2.0, "7": 2.0}


async def test_early_stop_once_the_winner_is_certain():
    answers = ["42"] * 6 + ["1"] * 4
    model = ScriptedChatModel(replies=reasoning_then_answer(answers), latency=0.01)
    solution = await SelfConsistency(10).solve("?", model)
    assert solution.answer == "42"
    assert solution.details["sampled"] < 10  # 6 agreeing of 10 cannot be overturned


async def test_paths_run_concurrently():
    script = reasoning_then_answer(["3"] * 20)
    reasoning = Rendezvous(20)  # the 20 paths' reasoning calls, all at once

    async def reply(messages):
        if not messages[-1].content.endswith("is"):  # not an answer extraction
            await reasoning.meet()
        return script(messages)

    model = ScriptedChatModel(replies=reply)
    solution = await SelfConsistency(20, base=ZeroShotCoT(), early_stop=False).solve("?", model)
    assert solution.details["votes"] == {"3": 20.0}  # a path that failed to meet has no vote


async def test_failed_paths_lose_their_vote_only():
    calls = 0

    async def flaky(messages):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("provider hiccup")
        return "The answer is 9."

    few_shot = ChainOfThought([POOL[0]])
    solution = await SelfConsistency(3, base=few_shot, early_stop=False).solve(
        "?", ScriptedChatModel(replies=flaky))
    assert solution.answer == "9" and len(solution.details["failed_paths"]) == 1


async def test_no_answer_at_all_is_reported():
    solution = await SelfConsistency(3, base=ChainOfThought([POOL[0]])).solve(
        "?", ScriptedChatModel(replies=lambda m: "no idea"))
    assert solution.answer is None and solution.error == "no path produced an answer"


def test_bad_k():
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be a whole number of at least 1"):
            SelfConsistency(k)


async def test_n_in_one_request_and_logprob_weights_through_the_openai_protocol():
    # Three paths in one request (n=3): two say 7 with low confidence, one says 9 with high.
    def lp(value):
        return {"content": [{"token": "x", "logprob": value, "bytes": None, "top_logprobs": []}]}

    replies = [AIMessage(content="The answer is 7.", response_metadata={"logprobs": lp(-3.0)}),
               AIMessage(content="The answer is 7.", response_metadata={"logprobs": lp(-3.0)}),
               AIMessage(content="The answer is 9.", response_metadata={"logprobs": lp(-0.01)})]
    async with FakeOpenAIServer(replies * 2) as srv:
        model = chat_model("openai:scripted", base_url=srv.base_url)
        plain = await SelfConsistency(3, base=ChainOfThought([POOL[0]]), use_n=True).solve(
            "?", model)
        weighted = await SelfConsistency(3, base=ChainOfThought([POOL[0]]), use_n=True,
                                         weighted=True).solve("?", model)
        requests = list(srv.requests)
    assert len(requests) == 2 and requests[0]["n"] == 3 and requests[1]["logprobs"] is True
    assert plain.answer == "7"      # majority
    assert weighted.answer == "9"   # one confident path outweighs two unsure ones
    assert weighted.details["votes"]["9"] > weighted.details["votes"]["7"]


async def test_a_budget_stops_sampling():
    model = ScriptedChatModel(replies=lambda m: "The answer is 1.")
    solution = await SelfConsistency(10, base=ChainOfThought([POOL[0]]),
                                     budget=Budget(calls=3), early_stop=False).solve("?", model)
    assert solution.calls <= 3 and solution.answer == "1"
    assert any("budget" in f for f in solution.details["failed_paths"])


async def test_as_an_agent_planner_its_steps_stream_and_the_profile_holds():
    model = ScriptedChatModel(replies=reasoning_then_answer(["4", "4", "5"]))
    agent = Agent("thinker", model, Profile(role="a careful mathematician"),
                  planner=SelfConsistency(3, early_stop=False), checkpointer=False)
    steps = []
    async for mode, data in agent.astream("2 + 2?", stream_mode=["custom", "values"]):
        if mode == "custom":
            steps.append(data["planner_step"])
        else:
            final = data
    assert sorted(steps) == ["extract"] * 3 + ["reason"] * 3
    assert final["messages"][-1].content == "4"
    assert all("a careful mathematician" in call[0].content for call in model.calls)


async def test_a_planner_streams_its_answer_not_its_samples():
    def reply(messages):
        return "18" if messages[-1].content.endswith("is") else "thinking about it: 18"

    agent = Agent("thinker", ScriptedChatModel(replies=reply),
                  planner=SelfConsistency(3, early_stop=False), checkpointer=False)
    assert "".join([t async for t in agent.astream_text("?")]) == "18"


async def test_one_request_for_k_paths_counts_its_tokens_once():
    async with FakeOpenAIServer(["The answer is 7."] * 3) as srv:
        model = chat_model("openai:s", base_url=srv.base_url)
        solution = await SelfConsistency(3, base=ChainOfThought([Example("q", "r", "1")]),
                                         use_n=True).solve("?", model)
        assert solution.calls == 3 and sum(s.output_tokens > 0 for s in solution.steps) == 1
        over = await SelfConsistency(3, base=ChainOfThought([Example("q", "r", "1")]),
                                     use_n=True, budget=Budget(calls=2)).solve("?", model)
    assert over.answer is None and over.calls == 0
    assert over.error == "stopped: the budget of 2 calls is spent"


async def test_zero_shot_reads_the_first_answer_deterministically():
    async with FakeOpenAIServer(["16 - 3 - 4 = 9 eggs at $2 each.",
                                 " 18 dollars. That is 9 eggs at $2."]) as srv:
        solution = await ZeroShotCoT().solve("How much?", chat_model("openai:s",
                                                                     base_url=srv.base_url))
        stage_two = srv.requests[1]
    assert solution.answer == "18" and stage_two["temperature"] == 0.0


def test_answers_that_used_to_split_votes():
    trigger = "The answer is"
    assert extract_answer("The answer is: Paris.", "text", trigger) == \
        extract_answer("The answer is Paris", "text", trigger) == "paris"
    assert extract_answer("The answer is (B). A quick check agrees.", "option", trigger) == "B"
    assert extract_answer("The sides are 3,4,5 so the answer is 5", "number") == "5"
    assert extract_answer("The answer is 9.\nQ: next?\nA: The answer is 7.", "number",
                          trigger) == "9"
