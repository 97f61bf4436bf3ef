"""Prebuilt graphs, with scripted models: plan-and-execute, DSP-style multi-hop retrieval, the
Tree of Clarifications and Self-Instruct."""

import collections
import json

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from ponder.config import ConfigurationError
from ponder.graphs.prebuilt.clarify import clarification_tree
from ponder.graphs.prebuilt.multihop import multi_hop
from ponder.graphs.prebuilt.plan_execute import plan_and_execute
from ponder.graphs.prebuilt.self_instruct import self_instruct
from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.testing import HashingEmbeddings, ScriptedChatModel, tool_calls
from ponder.tools import calculator


def planner_script(messages):
    prompt = messages[-1].content if isinstance(messages[-1].content, str) else ""
    if prompt.startswith("Break this task"):
        return "1. Multiply the tins by the price\n2. Look up the shipping cost"
    if "This subtask failed" in prompt:
        return "1. Use the flat shipping rate of 5 dollars"
    if prompt.startswith("Task:") and "Results of the steps" in prompt:
        return "Total: 42.40 + 5 = 47.40 dollars."
    if "Now do this subtask" in prompt:
        subtask = prompt.rsplit("Now do this subtask, using your tools when they help: ", 1)[1]
        subtask = subtask.split("\n", 1)[0]
        if subtask.startswith("Multiply"):
            return tool_calls(("calculator", {"expression": "3 * 14.1333"}))
        if subtask.startswith("Look up"):
            return "FAILED: there is no shipping table"
        return "Shipping is 5 dollars."
    if messages[-1].type == "tool":
        return "42.40"
    raise AssertionError(f"unexpected prompt: {prompt[:80]!r}")


async def test_plan_and_execute_runs_subtasks_revises_after_a_failure_and_synthesises():
    model = ScriptedChatModel(replies=planner_script)
    graph = plan_and_execute(model, tools=[calculator], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "order"}}
    nodes = []
    async for update in graph.astream({"messages": [("user", "3 tins at 14.13, shipped?")]},
                                      config, stream_mode="updates"):
        nodes += list(update)
    assert nodes == ["plan", "execute", "execute", "revise", "execute", "synthesize"]
    state = (await graph.aget_state(config)).values
    assert state["messages"][-1].content == "Total: 42.40 + 5 = 47.40 dollars."
    assert [tuple(d) for d in state["done"]] == [("Multiply the tins by the price", "42.40"),
                             ("Use the flat shipping rate of 5 dollars", "Shipping is 5 dollars.")]
    assert state["revisions"] == 1
    history = [s async for s in graph.aget_state_history(config)]
    assert len(history) >= 7  # a checkpoint after every subtask


async def test_plan_and_execute_stops_revising_at_the_limit():
    def script(messages):
        prompt = messages[-1].content
        if prompt.startswith("Break this task"):
            return "1. Do the impossible"
        if "This subtask failed" in prompt:
            return "1. Try the impossible again"
        if "Now do this subtask" in prompt:
            return "FAILED: impossible"
        return "I could not do it."

    graph = plan_and_execute(ScriptedChatModel(replies=script), max_revisions=1)
    state = await graph.ainvoke({"messages": [("user", "do the impossible")]})
    assert state["revisions"] == 1
    failed = [tuple(d) for d in state["done"]]
    assert failed == [("Try the impossible again", "(failed: impossible)")]
    assert state["messages"][-1].content == "I could not do it."


async def test_multi_hop_writes_each_query_from_what_earlier_hops_found(tmp_path):
    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings=HashingEmbeddings(),
                       mode="sparse")
    await kb.add([Document("Ada Lovelace was born in London in 1815.", "ada"),
                  Document("London is the capital city of England.", "london"),
                  Document("Paris is the capital city of France.", "paris")])
    prompts = []

    def script(messages):
        prompt = messages[-1].content
        prompts.append(prompt)
        if prompt.startswith("Answering this question"):
            return "Where was Ada Lovelace born?"
        if "Write the search query for what is still missing" in prompt:
            if "capital" in prompt.split("Write the search query")[0].split("found:")[1]:
                return "DONE"
            return "London is the capital of which country?"
        return "Ada Lovelace was born in London [1], the capital of England [2]."

    graph = multi_hop(ScriptedChatModel(replies=script), kb, hops=3, k=1)
    state = await graph.ainvoke({"messages": [("user", "In which country was Ada born?")]})
    await kb.aclose()
    assert state["queries"] == ["Where was Ada Lovelace born?",
                                "London is the capital of which country?"]
    assert state["passages"] == ["Ada Lovelace was born in London in 1815.",
                                 "London is the capital city of England."]
    assert "[1] Ada Lovelace was born in London" in prompts[1]  # hop 2 knows hop 1
    assert "[2] London is the capital city of England." in prompts[-1]
    assert state["messages"][-1].content.endswith("the capital of England [2].")
    assert len(prompts) == 4  # query, query, query (DONE), predict


async def test_clarification_tree_refines_prunes_and_merges(tmp_path):
    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings=HashingEmbeddings(),
                       mode="sparse")
    await kb.add([
        Document("Argentina won the 2022 FIFA World Cup, beating France.", "wc2022"),
        Document("Spain won the 2010 FIFA World Cup in South Africa.", "wc2010"),
        Document("England won the 1966 FIFA World Cup at Wembley.", "wc1966"),
        Document("Australia won the 2023 Cricket World Cup.", "cricket"),
    ])
    calls = collections.Counter()

    def script(messages):
        prompt = messages[-1].content
        if prompt.startswith("This question is ambiguous"):
            calls["refine"] += 1
            if "already narrowed" in prompt:  # level 2: one repeat, one new reading
                return json.dumps([{"question": "Who won the 2022 FIFA World Cup?",
                                    "answer": "Argentina"},
                                   {"question": "Who won the 2022 FIFA World Cup final?",
                                    "answer": "Argentina"}][:1 if "2010" in prompt else 2])
            return ("Readings:\n" + json.dumps([
                {"question": "Who won the 2022 FIFA World Cup?", "answer": "Argentina"},
                {"question": "Who won the 2010 FIFA World Cup?", "answer": "Spain"},
                {"question": "Who won the 2023 Cricket World Cup?", "answer": "Australia"}]))
        if prompt.startswith("Original question"):
            calls["verify"] += 1
            return "NO" if "reading: Who won the 2023 Cricket" in prompt else "YES"
        calls["merge"] += 1
        return "It depends on the year: Argentina won in 2022 and Spain in 2010."

    graph = clarification_tree(ScriptedChatModel(replies=script), kb, depth=2, k=2)
    state = await graph.ainvoke({"messages": [("user", "Who won the World Cup?")]})
    await kb.aclose()
    questions = [(r["question"], r["depth"]) for r in state["readings"]]
    assert questions == [("Who won the 2022 FIFA World Cup?", 1),
                         ("Who won the 2010 FIFA World Cup?", 1),
                         ("Who won the 2022 FIFA World Cup final?", 2)]
    # Level 1: one refinement, three checks (cricket pruned). Level 2: the two survivors are
    # refined; the repeated reading is dropped before checking, the new one checked once.
    assert calls == {"refine": 3, "verify": 4, "merge": 1}
    assert state["messages"][-1].content.startswith("It depends on the year")


SEEDS = [
    {"instruction": "Is the sentiment of this review positive or negative?",
     "is_classification": True,
     "instances": [{"input": "I loved it.", "output": "positive"}]},
    {"instruction": "Write a haiku about the given season.", "is_classification": False,
     "instances": [{"input": "autumn", "output": "Leaves fall..."}]},
    {"instruction": "Give three tips for staying healthy.", "is_classification": False,
     "instances": [{"input": "", "output": "Eat well, sleep, move."}]},
]


def self_instruct_script(messages):
    prompt = messages[-1].content
    if prompt.startswith("Come up with a series of tasks"):
        return ("Is the sentiment of this movie review positive or negative?\n"  # near a seed
                "5. Describe the picture in the given image.\n"  # not for a text model
                "6. Hi there\n"  # too short
                "7. Classify the animal as a mammal, bird or fish.\n"
                "8. Summarise the given paragraph in one sentence.")
    if prompt.startswith("Can the following task"):
        return "Yes" if "Classify" in prompt else "No"
    if prompt.startswith("Given the classification task"):
        return ("Class label: mammal\nInput: dog\n\nClass label: bird\nInput: eagle\n\n"
                "Class label: fish\nInput: salmon")
    if prompt.startswith("Come up with examples"):
        return ("Example 1\nInput: The cat sat on the mat all day long.\n"
                "Output: A cat rested.\nExample 2\nInput: <noinput>\nOutput: Nothing.")
    raise AssertionError(prompt[:60])


async def test_self_instruct_filters_and_writes_a_jsonl_data_set(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps(s) for s in SEEDS) + "\n")
    output = tmp_path / "generated.jsonl"
    graph = self_instruct(ScriptedChatModel(replies=self_instruct_script), seeds, output,
                          target=5, max_rounds=3)
    state = await graph.ainvoke({})
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert written == state["generated"]
    # Round 1 accepts two; later rounds propose the same and are filtered as repeats.
    assert [t["instruction"] for t in written] == [
        "Classify the animal as a mammal, bird or fish.",
        "Summarise the given paragraph in one sentence."]
    assert state["rounds"] == 3
    classify, summarise = written
    assert classify["is_classification"] and classify["instances"] == [
        {"input": "dog", "output": "mammal"}, {"input": "eagle", "output": "bird"},
        {"input": "salmon", "output": "fish"}]
    assert not summarise["is_classification"] and summarise["instances"] == [
        {"input": "The cat sat on the mat all day long.", "output": "A cat rested."},
        {"input": "", "output": "Nothing."}]


def test_bad_seed_files_say_which_line(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps(SEEDS[0]) + "\n{oops\n")
    with pytest.raises(ConfigurationError, match="seeds.jsonl, line 2: not a seed task"):
        self_instruct(ScriptedChatModel(replies=[]), seeds, tmp_path / "out.jsonl")
