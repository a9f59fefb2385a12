"""Self-Explore's answer checks and data rules against hand-worked cases and brute force."""

import os
import random
import re

import pytest

from llmjax.data.readers import read_gsm8k
from llmjax.errors import DataError
from llmjax.experiments.self_explore.data import (Exploration, edit_distance, explore,
                                                  outcome_pairs, pit_histogram, prefix_prompt,
                                                  rft_rationales, step_pairs, steps_of)
from llmjax.tasks.math_answers import (annotations_check, equation_signature, evaluate_expression,
                                       extract_answer, gsm8k_rationale, is_correct,
                                       normalise_number)

GSM8K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "gsm8k")


@pytest.mark.parametrize("text, expected", [
    ("The answer is $1,000.", "1000"), ("The answer is -3.50", "-3.5"),
    ("The answer is: 42", "42"), ("so 3 + 4 = 7\nThe answer is 7.0\nThe answer is 9", "7"),
    ("The answer is 007", "7"), ("The answer is -0.00", "0"), ("The answer is .5", "0.5"),
    ("no answer here", None), ("The answer is seven", None), ("The answer is 1.2.3", None),
    ("The answer is ,", None)])
def test_answer_extraction_hard_cases(text, expected):
  assert extract_answer(text) == expected


def test_both_sides_are_normalised_before_comparing():
  # The reference compares raw text in one place: "1,000" against "1000" became a false pit.
  assert is_correct("The answer is 1,000", "1000") and is_correct("The answer is 1000", "1,000.")
  assert not is_correct("The answer is 100", "1000")
  assert not is_correct("I do not know", "0")  # no answer is wrong, never equal to anything


def test_calculator_annotations():
  assert evaluate_expression("48/2") == 24 and evaluate_expression("(3+4)*2") == 14
  assert evaluate_expression("12 x 3") == 36 and evaluate_expression("1,000/4") == 250
  assert evaluate_expression("__import__('os')") is None
  assert evaluate_expression("1/0") is None and evaluate_expression("9**999") is None
  assert annotations_check("a <<48/2=24>>24 and <<0.2*50=10>>10, so")
  assert annotations_check("<<10/3=3.333>>")  # within 1e-3
  assert not annotations_check("<<10/3=3.33>>") and not annotations_check("<<2+2=5>>")
  assert not annotations_check("<<2+a=5>>")
  assert equation_signature("x <<48 / 2=24>> y\n<<3*4 = 12>>") == "48/2=24|3*4=12"


def test_gsm8k_rationale_rewrites_the_final_line():
  rationale, gold = gsm8k_rationale("She sold 48/2 = <<48/2=24>>24 clips.\n#### 1,024")
  assert rationale == "She sold 48/2 = <<48/2=24>>24 clips.\nThe answer is 1024"
  assert gold == "1024"
  with pytest.raises(ValueError, match="#### N"):
    gsm8k_rationale("no final line")


def test_every_gsm8k_gold_answer_parses_and_verifies_against_itself():
  if not os.path.isdir(GSM8K):
    pytest.skip(f"{GSM8K} absent: the shared GSM8K copy is not on this machine")
  count = 0
  for split in ("train.jsonl", "test.jsonl"):
    for problem in read_gsm8k(os.path.join(GSM8K, split)):
      rationale, gold = problem["rationale"], problem["gold"]
      assert normalise_number(gold) == gold, problem["where"]
      assert extract_answer(rationale) == gold and is_correct(rationale, gold), problem["where"]
      count += 1
  assert count == 7473 + 1319


def test_a_malformed_gsm8k_row_is_named_by_file_and_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text('{"question": "1+1?", "answer": "<<1+1=2>>2\\n#### 2"}\n'
                  '{"question": "2+2?", "answer": "4 without a final line"}\n')
  with pytest.raises(DataError, match=rf"^{path}:2: malformed row: expected a final '#### N'"):
    read_gsm8k(path)
  path.write_text('{"question": "1+1?", "answer": "<<1+1=2>>2\\n#### 2"}\n{"question": 3}\n')
  with pytest.raises(DataError, match=rf"^{path}:2: malformed row: missing field 'answer'"):
    read_gsm8k(path)
  path.write_text('{"question": "1+1?", "answer": "<<1+1=2>>2\\n#### 2"}\n')
  assert read_gsm8k(path) == [{"question": "1+1?", "rationale": "<<1+1=2>>2\nThe answer is 2",
                               "gold": "2", "where": f"{path}:1"}]


def _levenshtein(a, b):
  row = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    previous_diagonal, row[0] = row[0], i
    for j, cb in enumerate(b, 1):
      previous_diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1,
                                              previous_diagonal + (ca != cb))
  return row[-1]


def test_edit_distance_against_the_textbook_recursion():
  rng = random.Random(0)
  for _ in range(200):
    a = "".join(rng.choice("ab c€") for _ in range(rng.randrange(0, 12)))
    b = "".join(rng.choice("ab c€") for _ in range(rng.randrange(0, 12)))
    assert edit_distance(a, b) == _levenshtein(a, b), (a, b)
  assert edit_distance("kitten", "sitting") == 3


def test_rft_keeps_correct_checked_distinct_rationales_up_to_the_cap():
  samples = [
      "<<2+3=5>>5\nThe answer is 5",          # kept
      "<<2 + 3=5>>5 again\nThe answer is 5",  # same signature (spaces removed): dropped
      "<<2+3=6>>6\nThe answer is 5",          # annotation wrong: dropped
      "<<1+4=5>>5\nThe answer is 6",          # wrong answer: dropped
      "<<1+4=5>>5\nThe answer is 5.0",        # kept
      "no equations\nThe answer is 5",        # kept (empty signature)
  ]
  assert rft_rationales(samples, "5") == [samples[0], samples[4], samples[5]]
  assert rft_rationales(samples, "5", max_per_problem=2) == [samples[0], samples[4]]


def test_outcome_pairs_take_the_farthest_unused_rejected():
  chosen_a, chosen_b = "The answer is 5", "so five\nThe answer is 5"
  near, far = "The answer is 6", "a completely different long wrong rationale. The answer is 9"
  pairs = outcome_pairs([chosen_a, near, chosen_b, far, "garbled"], "5")
  # chosen_a takes the farthest of all three incorrect ones (unparsable counts as incorrect);
  # chosen_b the farthest of what is left.
  assert pairs[0] == (chosen_a, far)
  assert pairs[1][0] == chosen_b
  assert pairs[1][1] == max(["The answer is 6", "garbled"],
                            key=lambda r: edit_distance(chosen_b, r))
  assert outcome_pairs([chosen_a, chosen_b], "5") == []


def _item(steps, problem="p1", chosen="<<1+1=2>>\nThe answer is 2"):
  return Exploration(problem=problem, question="Q?", gold="2", chosen=chosen,
                     steps=steps_of("\n".join(steps)))


def test_explore_finds_the_first_pit_in_batched_rounds():
  # A scripted sampler: from a prefix whose last step is "bad", nothing correct follows.
  calls = []

  def complete(prompts, k):
    calls.append(list(prompts))
    return [["The answer is 3"] * k if p.endswith("bad\n") else
            ["long way\nThe answer is 2", "The answer is 2", "The answer is 7"][:k]
            for p in prompts]

  pit2 = _item(["ok 1", "bad", "ok 3", "The answer is 3"])
  pit1 = _item(["bad", "x"])
  no_pit = _item(["ok 1", "ok 2"])
  done = explore([pit2, pit1, no_pit], complete, k=3)
  assert [d.pit for d in done] == [2, 1, None]
  # Round 1 asks all three, round 2 the two still open, then none.
  assert [len(c) for c in calls] == [3, 2]
  assert calls[0][0] == prefix_prompt("Q?", ["ok 1"]) == "Q?\nok 1\n"
  assert pit_histogram(done) == {"1": 1, "2": 1, "none": 1}
  again = explore([_item(["ok 1", "bad", "ok 3"])], complete, k=3)  # pit2's row once more
  other = explore([_item(["ok 1", "bad"], problem="p2")], complete, k=3)  # same row, p2
  rows = step_pairs(done + again + other)
  assert rows == [
      {"problem": "p1", "prompt": "Q?\nok 1\n", "chosen": "The answer is 2",  # the shortest
       "rejected": "bad", "pit": 2},
      {"problem": "p1", "prompt": "Q?\n", "chosen": "<<1+1=2>>\nThe answer is 2",
       "rejected": "bad", "pit": 1},
      {"problem": "p2", "prompt": "Q?\nok 1\n", "chosen": "The answer is 2",
       "rejected": "bad", "pit": 2}]  # deduplicated within a problem, not across problems


def test_a_prefix_that_already_states_a_wrong_answer_is_a_pit():
  item = _item(["ok", "The answer is 4"])
  explore([item], lambda prompts, k: [["The answer is 2"] * k for _ in prompts], k=2)
  assert item.pit == 2  # the prefix's own "The answer is 4" comes first


def test_exploration_stops_at_max_steps():
  item = _item([f"ok {i}" for i in range(30)])
  explore([item], lambda prompts, k: [["The answer is 2"] * k for _ in prompts], k=1,
          max_steps=20)
  assert item.pit is None and len(item.completions) == 20


def _answer_from_question(question):
  """An independent reading of the generator's question sentences."""
  value = int(re.search(r"has (\d+) ", question).group(1))
  for sentence in question.split(". ")[1:]:
    if m := re.search(r"gets (\d+) more", sentence):
      value += int(m.group(1))
    elif m := re.search(r"gives away (\d+)", sentence):
      value -= int(m.group(1))
    elif "doubles" in sentence:
      value *= 2
    elif "triples" in sentence:
      value *= 3
  return value


def test_word_problems_are_verifiable_and_reproducible():
  from llmjax.experiments.self_explore.word_problems import make_problems
  problems = make_problems(300, seed=3)
  assert problems == make_problems(300, seed=3) and problems != make_problems(300, seed=4)
  assert len({p["question"] for p in problems}) == 300
  lengths = set()
  for p in problems:
    assert str(_answer_from_question(p["question"])) == p["gold"], p
    assert annotations_check(p["rationale"]) and is_correct(p["rationale"], p["gold"])
    assert 0 <= int(p["gold"]) <= 99
    steps = steps_of(p["rationale"])
    assert steps[-1] == f"The answer is {p['gold']}"
    lengths.add(len(steps) - 1)
  assert lengths == {1, 2, 3}
  # swap_operands writes some first steps from the operand, not the starting count; the fixed
  # order always starts from the count.
  def starts_from_count(problem):
    start = re.match(r"\w+ has (\d+) ", problem["question"])[1]
    return re.match(rf"{start}[-+*]", problem["rationale"]) is not None
  swapped = [p for p in problems if not starts_from_count(p)]
  assert 50 < len(swapped) < 250 and all(p["rationale"][1] in "+*" or p["rationale"][2] in "+*"
                                         for p in swapped)
  assert all(starts_from_count(p) for p in make_problems(300, seed=3, swap_operands=False))
  with pytest.raises(ValueError, match="expected count >= 1"):
    make_problems(0, seed=0)
