"""Answer extraction and normalisation: the edge cases votes depend on."""

import pytest

from ponder.agents.planning import canonical_answer, extract_answer


@pytest.mark.parametrize("text, expected", [
    ("She makes 9 * 2 = $18 every day. The answer is $18.", "18"),
    ("The answer is 1,234.50 dollars.", "1234.5"),
    ("Temperatures fell by 3, to -7. The answer is -7.", "-7"),
    ("First 12, then 15, so 27", "27"),                       # no trigger: the last number
    ("The answer is 18. Checking: 9 * 2 = 18, done in 3 steps", "18"),  # trigger beats last
    ("The answer is 3/4", "3/4"),
    ("The answer is 18.000", "18"),
    ("I am not sure.", None),
    ("", None),
    (None, None),
])
def test_numbers(text, expected):
    assert extract_answer(text, "number", trigger="The answer is") == expected


@pytest.mark.parametrize("text, expected", [
    ("Among A through E, the answer is (C).", "C"),
    ("B is wrong, D is right", "D"),
    ("No option fits", None),
])
def test_options(text, expected):
    assert extract_answer(text, "option", trigger="the answer is") == expected


def test_free_text_and_json():
    assert extract_answer("Reasoning...\nThe answer is Paris.\nMore", "text",
                          trigger="The answer is") == "paris"
    assert extract_answer('Sure: {"b": 2, "a": 1} done', "json") == '{"a": 1, "b": 2}'
    assert extract_answer("no json here {oops", "json") is None


def test_expressions_vote_alike_whatever_their_spacing():
    reply = "Steps: ...\nAnswer: (6 - 4) * (4 + 8) = 24\nInput: 1 1 1 1\nAnswer: 1 = 24"
    assert extract_answer(reply, "expression", trigger="Answer:") == "(6-4)*(4+8)=24"
    assert canonical_answer(" (6-4) *(4+8) = 24.", "expression") == "(6-4)*(4+8)=24"


def test_equal_answers_normalise_alike():
    assert {canonical_answer(a) for a in ("18", "18.0", "$18", "18.", "1,8")} == {"18"}
    assert canonical_answer(" Paris. ", "text") == canonical_answer("paris", "text")
    assert canonical_answer("not a number") is None


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown answer kind 'date'"):
        extract_answer("x", "date")
