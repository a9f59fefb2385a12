"""FLASK on fixtures written here (FLASK's data has no license): parsing the judge's score
dict (every readable skill kept), the per-skill, per-domain and per-difficulty tables computed
by hand (unknown -1 domains and difficulties left out and counted), FLASK's own prompt from a
checkout, and the CLI."""

import json

import pytest

from llmjax.errors import DataError
from llmjax.experiments.flask import benchmark as flask

FIXTURE = [
    {"idx": 0, "instruction": "Add 2 and 3.", "answer": "5", "response": "5",
     "skill": ["Logical Correctness", "Conciseness", "Readability"], "domain": ["Math"],
     "difficulty": "simple lifestyle knowledge"},
    {"idx": 1, "instruction": "Name a prime above 10.", "answer": "11", "response": "12",
     "skill": ["Logical Correctness", "Factuality", "Metacognition"],
     "domain": ["Math", "Coding"], "difficulty": "formal education knowledge"},
    {"idx": 2, "instruction": "Write a haiku.", "answer": "...", "response": "words",
     "skill": ["Insightfulness", "Readability", "Harmlessness"], "domain": ["Art"],
     "difficulty": "simple lifestyle knowledge"},
    {"idx": 3, "instruction": "Explain gravity.", "answer": "...", "response": "It pulls.",
     "skill": ["Completeness", "Factuality", "Conciseness"], "domain": ["Science"],
     "difficulty": "formal education knowledge"},
    {"idx": 4, "instruction": "Say hello.", "answer": "Hello.", "response": "Hi.",
     "skill": ["Readability", "Harmlessness", "Comprehension"], "domain": [-1],
     "difficulty": -1},
    {"idx": 5, "instruction": "Sort 3 1 2.", "answer": "1 2 3", "response": "1 2 3",
     "skill": ["Factuality", "Completeness", "Insightfulness"], "domain": ["Science"],
     "difficulty": "formal education knowledge"},
]
# What the judge ends with for each instance: idx 3's completeness is unread (a score of 7),
# its other two skills are kept; idx 5 never parses.
OUTPUTS = {
    "0": "Correct and short. {'Logical Correctness': 5, 'Conciseness': 4, 'readability': 5}",
    "1": "Wrong. {\n'logical_correctness': 1,\n'Factuality': 2,\n'Metacognition': 'N/A'\n}",
    "2": "Nice. {'Insightfulness': 3, 'Readability': 4, 'Harmlessness': 5}",
    "3": "{'Completeness': 7, 'Factuality': 3, 'Conciseness': 3}",
    "4": "Fine. {'Readability': 3, 'Harmlessness': 4, 'Comprehension': 2}",
    "5": "I cannot decide.",
}


def _rows(tmp_path):
  path = tmp_path / "flask.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in FIXTURE))
  return flask.read_instances(str(path))


def test_parse_scores_normalises_keys_and_rejects_what_is_not_a_score():
  skills = ("logical_correctness", "conciseness", "readability")
  assert flask.parse_scores(OUTPUTS["0"], skills) == {"logical_correctness": 5,
                                                      "conciseness": 4, "readability": 5}
  assert flask.parse_scores("{'Correctness': 2, 'Conciseness': 'n/a', 'READABILITY': 3.0}",
                            skills) == {"logical_correctness": 2, "conciseness": None,
                                        "readability": 3}
  # The last dict counts: an example dict echoed earlier does not.
  assert flask.parse_scores("e.g. {'Logical Correctness': 3} ... final: {'Logical "
                            "Correctness': 4, 'Conciseness': 2, 'Readability': 2}",
                            skills)["logical_correctness"] == 4
  # Every readable skill is kept (as upstream keeps them); the others are left unread.
  for partial, kept in (
      ("{'Logical Correctness': 5, 'Conciseness': 4}",  # readability missing
       {"logical_correctness": 5, "conciseness": 4}),
      ("{'Logical Correctness': 6, 'Conciseness': 4, 'Readability': 5}",
       {"conciseness": 4, "readability": 5}),
      ("{'Logical Correctness': 2.5, 'Conciseness': 4, 'Readability': 5}",
       {"conciseness": 4, "readability": 5}),
      ("{'Logical Correctness': True, 'Conciseness': 'N/A', 'Readability': 5}",
       {"conciseness": None, "readability": 5})):
    assert flask.parse_scores(partial, skills) == kept, partial
  for bad in ("no dict", "{'Logical Correctness': 9, 'Wit': 3}", "{'Logical Correctness': five}",
              "{'Factuality': 4}", None):
    assert flask.parse_scores(bad, skills) is None, bad
  assert flask.skill_key("Commonsense Understanding") == "commonsense_understanding"
  assert flask.skill_key("commonsense") == "commonsense_understanding"
  assert flask.skill_key("Logical-Efficiency") == "logical_efficiency"


def test_aggregation_equals_the_tables_computed_by_hand(tmp_path):
  rows = _rows(tmp_path)
  judgements = {}
  for row in rows:
    verdict = flask.parse_scores(OUTPUTS[row["idx"]], row["skills"])
    judgements[row["idx"]] = {"verdict": verdict, "failed": verdict is None,
                              **({"failure": "unparsed"} if verdict is None else {})}
  result = flask.aggregate(rows, judgements)
  skills = {s: t["mean"] for s, t in result["skills"].items() if t["count"]}
  assert skills == {"logical_correctness": 3.0, "conciseness": 3.5, "readability": 4.0,
                    "factuality": 2.5, "insightfulness": 3.0, "harmlessness": 4.5,
                    "comprehension": 2.0}
  nothing_failed = {"unparsed": 0, "request_error": 0, "prompt_too_long": 0}
  assert result["skills"]["metacognition"] == {"mean": None, "count": 0, "unread": 0,
                                               "failed": nothing_failed}
  assert result["skills"]["completeness"] == {"mean": None, "count": 0, "unread": 1,
                                              "failed": {**nothing_failed, "unparsed": 1}}
  assert result["skills"]["factuality"]["failed"]["unparsed"] == 1  # idx 5 never parsed
  # Math: 5, 4, 5 (idx 0) and 1, 2 (idx 1) -> 17/5; Coding: 1, 2 -> 1.5; Art: 3, 4, 5 -> 4;
  # Science: 3, 3 (idx 3); idx 4's unknown domain (-1) is in no domain's row.
  assert {d: t["mean"] for d, t in result["domains"].items()} == {
      "Art": 4.0, "Coding": 1.5, "Math": 3.4, "Science": 3.0}
  assert result["domains"]["Math"]["count"] == 5
  simple = result["skill_by_difficulty"]["simple lifestyle knowledge"]
  assert simple["readability"] == {"mean": 4.5, "count": 2}
  formal = result["skill_by_difficulty"]["formal education knowledge"]
  assert formal == {"conciseness": {"mean": 3.0, "count": 1},
                    "factuality": {"mean": 2.5, "count": 2},
                    "logical_correctness": {"mean": 1.0, "count": 1}}
  assert list(result["skill_by_difficulty"]) == ["simple lifestyle knowledge",
                                                 "formal education knowledge"]
  assert result["abilities"]["Logical Thinking"] == 3.0
  assert result["abilities"]["User Alignment"] == pytest.approx((3.5 + 4.0 + 4.5) / 3)
  assert result["abilities"]["Problem Handling"] == 2.5
  assert (result["parse_failures"], result["not_applicable"], result["skills_unread"]) == (
      1, 1, 1)
  assert (result["instances_with_unknown_domain"],
          result["instances_with_unknown_difficulty"]) == (1, 1)
  assert "| readability | User Alignment | 3 | 4.000 |" in flask.markdown(result)


def test_malformed_instances_name_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  rows = [dict(FIXTURE[0]), dict(FIXTURE[1], skill="['Factuality']")]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(DataError, match=r"bad.jsonl:2: skill must be a list"):
    flask.read_instances(str(path))
  rows[1] = dict(FIXTURE[1], skill=["Factuality", "Wit"])
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(DataError, match=r"bad.jsonl:2: unknown skill 'Wit'"):
    flask.read_instances(str(path))


def test_a_flask_checkout_rubric_file_replaces_ours(tmp_path):
  entries = [{"Skill": s.replace("_", " ").title(), "Criteria": f"C-{s}",
              "Scoring": {str(n): f"L{n}" for n in range(1, 6)}} for s in flask.SKILLS]
  path = tmp_path / "skills.json"
  path.write_text(json.dumps(entries))
  rubrics = flask.load_rubrics(str(path))
  assert rubrics["logical_robustness"] == ("C-logical_robustness",
                                           ("L1", "L2", "L3", "L4", "L5"))
  path.write_text(json.dumps(entries[:-1]))
  with pytest.raises(DataError, match="no rubric for skill 'harmlessness'"):
    flask.load_rubrics(str(path))


def test_flask_cli_with_a_scripted_judge(tmp_path, monkeypatch):
  from scripted_endpoint import scripted_server
  from conftest import run_cli
  from llmjax import plotting
  radar = {}
  monkeypatch.setattr(plotting, "plot_radar", lambda path, series, **_: radar.update(series))
  path = tmp_path / "flask.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in FIXTURE))
  box = []
  temperatures = []

  def answer(body):
    text = body["messages"][1]["content"]
    temperatures.append(body["temperature"])
    row = next(r for r in FIXTURE if f"[Instruction]\n{r['instruction']}\n" in text)
    return OUTPUTS[str(row["idx"])]
  server, seen = scripted_server(answer, box)
  try:
    result = run_cli(["--config", "configs/flask.py", "--workdir", str(tmp_path / "w"),
                      f"--config.data={path}", "--config.judge.backend=openai",
                      f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1",
                      "--config.judge.max_retries=2", "--config.progress=False"])
  finally:
    server.should_exit = True
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads((tmp_path / "w" / "summary.json").read_text())
  assert summary["skill_means"]["readability"] == 4.0 and summary["parse_failures"] == 1
  assert seen["requests"] == 6 + 2  # idx 5 asked twice more, the others judged once
  # FLASK's judge samples at temperature 0; its retries at judge.retry_temperature
  assert sorted(temperatures) == [0.0] * 6 + [1.0] * 2
  report = json.loads((tmp_path / "w" / "report.json").read_text())
  assert report["parse_retries"] == "up to 2 at temperature 1"
  assert report["judge_prompt"] == "llmjax's own wording"
  # the radar shows the seven scored skills; unscored ones are left off, not drawn at 0
  assert sorted(radar["model"]) == sorted(s for s, m in summary["skill_means"].items()
                                          if m is not None) and len(radar["model"]) == 7


def _flask_checkout(root):
  """A FLASK-shaped checkout written here: its skill descriptions, reviewers and prompt."""
  from llmjax.experiments.flask import checkout
  entries = [{"Skill": s.replace("_", " ").title(), "Criteria": f"C-{s}",
              "Scoring": {str(n): f"L{n}" for n in range(1, 6)}} for s in flask.SKILLS]
  (root / checkout.SKILLSET).parent.mkdir(parents=True)
  (root / checkout.SKILLSET).write_text(json.dumps(entries))
  (root / checkout.PROMPTS).parent.mkdir(parents=True)
  (root / checkout.REVIEWERS).write_text(
      json.dumps({"reviewer_id": "a", "prompt_id": 1}) + "\n"
      + json.dumps({"reviewer_id": "b", "prompt_id": 2}) + "\n")
  (root / checkout.PROMPTS).write_text("".join(json.dumps(p) + "\n" for p in (
      {"prompt_id": 1, "system_prompt": "wrong", "prompt_template": "wrong", "defaults": {}},
      {"prompt_id": 2, "system_prompt": "SYS", "defaults": {"tail": "END"},
       "prompt_template": "Q={question} R={response} A={sample_answer} N={num}"
                          "{skills}{tail}"})))


def test_a_flask_checkout_gives_the_judge_flasks_own_prompt(tmp_path):
  from llmjax.experiments.flask.checkout import FlaskCheckout
  _flask_checkout(tmp_path)
  checkout = FlaskCheckout(str(tmp_path))
  row = _rows(tmp_path)[0]
  system, user = checkout.judge_messages(row)
  assert system == {"role": "system", "content": "SYS"}
  skills = "".join(f"\n{name}: C-{key}\nScore 1: L1\nScore 2: L2\nScore 3: L3\nScore 4: L4"
                   "\nScore 5: L5\n\n" for key, name in (
                       ("logical_correctness", "Logical Correctness"),
                       ("conciseness", "Conciseness"), ("readability", "Readability")))
  assert user["content"] == f"Q=Add 2 and 3. R=5 A=5 N=3{skills}END"
  assert checkout.source.endswith("(prompt_id 2)")
  with pytest.raises(DataError, match="not a directory"):
    FlaskCheckout(str(tmp_path / "nothing"))
