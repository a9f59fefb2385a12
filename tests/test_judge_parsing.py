"""The verdict parsers on hand-written judge outputs: what ends the output counts, nothing else;
every form upstream's parser tests check is read as upstream reads it, and numbers in running
prose are not verdicts."""

import os

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
    ("I would give this response a score of 2", 2),
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
    # numbers in running prose are not verdicts
    ("The essay would earn a grade 3.", None),
    ("Adding the two parts leads to the final result 2.", None),
    ("I would give this response a score of 2.", None),
    ("It reaches the final result 2 quickly, which helps.", None),
]

# Each form upstream's parser tests check (prometheus-eval, libs/prometheus-eval/tests/
# test_parser.py), in our own words, with upstream's expected verdict.
UPSTREAM_FORMS_ABSOLUTE = [
    ("Thorough answer. [RESULT] 5 out of 5", 5),
    ("Misses the point. [RESULT] score of 1", 1),
    ("Solid. [Result] 3", 3),
    ("Some gaps. [Result] Score: 2", 2),
    ("Careful work. [Result] Result: 4", 4),
    ("Middling. [Result] 4/5", 4),
    ("Thorough answer. [Result] 5 out of 5", 5),
    ("Misses the point. [Result] score of 1", 1),
    ("Nice work. (Score 5)", 5),
    ("Nice work. [Score 4]", 4),
    ("Nice work. score: 3", 3),
    ("Nice work. Score: 3", 3),
    ("Nice work. score of 1", 1),
    ("Nice work. [RESULT] (5)", 5),
    ("The score is clearly not 4.", None),
    ("I would call this an outstanding 10!", None),
    ("Score: 3.5", None),
    ("Result: B", None),
]
UPSTREAM_FORMS_RELATIVE = [
    ("A is stronger. [RESULT] A", "A"),
    ("B is preferred. [RESULT] B", "B"),
    ("Feedback: both are close... [Response B]", "B"),
    ("Feedback: both are sound... [Result] Response B", "B"),
    ("Feedback: both are sound... Response B Response A", None),
    ("Feedback: both are sound... [RESULT: B]", "B"),
    ("Feedback: both are sound... [Result: A]", "A"),
    ("Feedback: both are sound...Response A. [RESULT] B", "B"),
    ("Having weighed both, I pick Response B.", None),
    ("Each response has strengths.", None),
    ("Response C is best.", None),
    ("The better response is surely B... or maybe A? Hard to say.", None),
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
    ("The final result B was chosen by the other annotator", None),
]


@pytest.mark.parametrize("text, expected", ABSOLUTE + UPSTREAM_FORMS_ABSOLUTE)
def test_parse_absolute(text, expected):
  assert parse_absolute(text) == expected


@pytest.mark.parametrize("text, expected", RELATIVE + UPSTREAM_FORMS_RELATIVE)
def test_parse_relative(text, expected):
  assert parse_relative(text) == expected


def test_enough_hand_written_cases():
  assert len(ABSOLUTE) >= 30 and len(RELATIVE) >= 30
  assert parse_absolute(None) is None and parse_relative(None) is None


# Where we read a verdict upstream's parser does not, on purpose: a verdict followed by a full
# stop, markup or an end-of-sequence token; a bracketed letter; "Rating:", "Winner:",
# "Verdict:", "Result -" and "The better response is" labels; "N/5" alone. Upstream reads no
# verdict in these cases that we refuse (the rubric echo, prose numbers, fractions included).
OURS_ONLY = {
    "Good plan. [RESULT] 4</s>", "Good plan. [RESULT] 4.", "Overall: **Score: 5**",
    "Rating: 4/5", "4/5", "The reasoning is sound, so 5 out of 5.", "Result - (1)",
    "[RESULT] (A)", "[RESULT] [B]", "[RESULT]: A", "[RESULT] Response A.", "[RESULT] B</s>",
    "Winner: A", "The better response is B", "Verdict: (B)", "**[RESULT] B**",
    "Response B handles the edge case. Result: B.", "[SCORE] A",
}


def _upstream_parser():
  """prometheus-eval's parse_output, read from the installed package's parser module (its
  package __init__ imports LLM clients); None when it is not installed."""
  import importlib.util
  spec = importlib.util.find_spec("prometheus_eval")
  if spec is None:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "parser.py")
  module_spec = importlib.util.spec_from_file_location("_upstream_parser", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.parse_output


def test_every_case_agrees_with_upstreams_parser_but_the_listed_departures():
  parse_output = _upstream_parser()
  if parse_output is None:
    pytest.skip("prometheus-eval is not installed (the test extra installs it)")
  disagreements = set()
  for cases, mode, ours in ((ABSOLUTE + UPSTREAM_FORMS_ABSOLUTE, "absolute", parse_absolute),
                            (RELATIVE + UPSTREAM_FORMS_RELATIVE, "relative", parse_relative)):
    for text, expected in cases:
      upstream = parse_output(text, mode)[1]
      assert ours(text) == expected
      if upstream != expected:
        disagreements.add(text)
  for text, _ in UPSTREAM_FORMS_ABSOLUTE + UPSTREAM_FORMS_RELATIVE:
    assert text not in disagreements  # upstream's own forms: read exactly as upstream
  assert disagreements == OURS_ONLY
