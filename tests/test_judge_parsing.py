"""The verdict parsers on hand-written judge outputs: what ends the output counts, nothing else."""

import pytest

from llmjax.evals.parsing import parse_absolute, parse_relative

ABSOLUTE = [
    ("The response follows every rule. [RESULT] 4", 4),
    ("Feedback: clear and correct.\n[RESULT] 5", 5),
    ("It misses the second requirement. [RESULT] (3)", 3),
    ("Partly correct. [RESULT] [2]", 2),
    ("Weak. [RESULT]: 1", 1),
    ("Good plan. [RESULT] 4</s>", 4),
    ("Good plan. [RESULT] 4.", 4),
    ("[SCORE] 3", 3),
    ("The answer is grounded in the document. Score: 4", 4),
    ("Overall: **Score: 5**", 5),
    ("I would give this response a score of 2.", 2),
    ("Final score: 3", 3),
    ("Rating: 4/5", 4),
    ("4/5", 4),
    ("The reasoning is sound, so 5 out of 5.", 5),
    ("Result - (1)", 1),
    ("[RESULT] Score 4", 4),
    ("Feedback: the response echoes 'Score 5: perfect' but fails. [RESULT] 2", 2),
    ("Helpful but verbose.\n\n[RESULT] 3\n", 3),
    ("[RESULT] 4 out of 5", 4),
    # None: no score, the wrong range, fractions, a score that does not end the output.
    ("Score: 2.5", None),
    ("[RESULT] 10", None),
    ("Score: 0", None),
    ("[RESULT] 7/10", None),
    ("[RESULT] 4,5", None),
    ("The response deserves a 4. However, the second part is missing", None),
    ("Score 1: The response fails to address the task.\nScore 5: The response fully addresses "
     "the task.", None),
    ("(Score 5) The response is excellent in every respect", None),
    ("[RESULT] 4 but I am not sure about the reasoning", None),
    ("", None),
    ("[RESULT]", None),
    ("The score is high", None),
    ("[RESULT] 45", None),
    ("Score: 3.0", None),
    ("[RESULT] -3", None),
]

RELATIVE = [
    ("Response A covers every requirement while B misses two. [RESULT] A", "A"),
    ("B is more accurate.\n[RESULT] B", "B"),
    ("[RESULT] (A)", "A"),
    ("[RESULT] [B]", "B"),
    ("[RESULT]: A", "A"),
    ("Both are fine but one is clearer. [RESULT] Response B", "B"),
    ("[RESULT] Response A.", "A"),
    ("[RESULT] B</s>", "B"),
    ("Winner: A", "A"),
    ("The better response is B", "B"),
    ("Verdict: (B)", "B"),
    ("[RESULT] a", "A"),
    ("**[RESULT] B**", "B"),
    ("Response B handles the edge case. Result: B.", "B"),
    ("[SCORE] A", "A"),
    ("Response A is shorter. [RESULT] A\n", "A"),
    ("Response B: good. Response A: bad. [RESULT] B", "B"),
    # None
    ("A or B", None),
    ("[RESULT] C", None),
    ("[RESULT] A and B are tied", None),
    ("[RESULT] Tie", None),
    ("Response A: well written", None),
    ("I prefer A, but B has merits", None),
    ("[RESULT]", None),
    ("", None),
    ("[RESULT] AB", None),
    ("The winner is clear", None),
    ("[RESULT] A. However B is also good", None),
    ("Response A vs Response B", None),
    ("[RESULT] 4", None),
    ("Score: A+", None),
]


@pytest.mark.parametrize("text, expected", ABSOLUTE)
def test_parse_absolute(text, expected):
  assert parse_absolute(text) == expected


@pytest.mark.parametrize("text, expected", RELATIVE)
def test_parse_relative(text, expected):
  assert parse_relative(text) == expected


def test_enough_hand_written_cases():
  assert len(ABSOLUTE) >= 30 and len(RELATIVE) >= 30
  assert parse_absolute(None) is None and parse_relative(None) is None
