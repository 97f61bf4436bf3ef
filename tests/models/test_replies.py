"""The parsers of model replies: JSON in prose and code fences, and lists with their markers."""

import pytest

from ponder.models.replies import first_json, json_list, list_items


@pytest.mark.parametrize("text, value", [
    ('Sure: {"b": 2, "a": 1} done', {"b": 2, "a": 1}),
    ('```json\n[{"fact": "x"}]\n```', [{"fact": "x"}]),
    ('see [1 and then {"a": [1, 2]}', {"a": [1, 2]}),  # a bracket that starts no JSON is skipped
    ("no json here {oops", None),
    ("just 42 and \"text\"", None),  # scalars are not looked for
])
def test_first_json_finds_the_first_object_or_list(text, value):
    assert first_json(text) == value


def test_first_json_of_a_kind():
    assert first_json('{"facts": [1, 2]} and [3]', list) == [1, 2]
    assert first_json('[1] then {"a": 1}', dict) == {"a": 1}


@pytest.mark.parametrize("text, value", [
    ('Here you go:\n```json\n["a", "b"]\n```', ["a", "b"]),
    ('{"facts": [{"fact": "x"}]}', [{"fact": "x"}]),
    ("[1, 2] and [3]", [1, 2]),  # the first list, not everything from the first [ to the last ]
    ("nothing", []),
    ("[oops", []),
])
def test_json_list(text, value):
    assert json_list(text) == value


@pytest.mark.parametrize("text, items", [
    ("Plan:\n1. a\n2) b\n- c", ["a", "b", "c"]),  # marked lines only: the preamble is left out
    ("look up\ncompute\n\nwrite", ["look up", "compute", "write"]),  # plain lines, one an item
    ("1. refund policy\n2. - money back rules\n\n* returns\n• x", [
        "refund policy", "money back rules", "returns", "x"]),
    ("1.5 kg of flour\n-3 degrees", ["1.5 kg of flour", "-3 degrees"]),  # numbers, not markers
    ("", []),
])
def test_list_items(text, items):
    assert list_items(text) == items


def test_list_items_up_to_a_limit():
    assert list_items("1. a\n2. b\n3. c", 2) == ["a", "b"]
    assert list_items("a\nb", None) == ["a", "b"]
