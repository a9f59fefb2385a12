"""The music-plagiarism judge (experiment `music_judge`; Hwang & Hwang 2026).

People judge plagiarism by melody, rhythm and chord progression, and tolerate different amounts
of change in each. The judge therefore first extracts those attributes with dedicated modules
(melody.py, .rhythm, .harmony), then decides from the extracted evidence: a learned
baseline (logistic regression on the modules' numbers) and an LM that reasons over the
modules' findings step by step (lm_judge.py, through the judge layer's backends).

Stages (a resumable pipeline under the workdir):
  benchmark  graded pairs from music21's Bach chorales and folk-tune variants
             (benchmark.py) -> pairs.jsonl
  modules    every module's finding on every pair -> findings.jsonl
  baseline   the baseline and its ablations fitted on the train split -> scores.json
  lm_judge   (when judge.backend is not 'none') the LM judge on the test split ->
             judgements.jsonl (raw outputs; a rerun asks only for what is missing or
             failed), and with `lm_judge_ablations` the same judge with each module's
             evidence withheld -> judgements_without_<module>.jsonl
Then report.json, report.md (the per-level table) and plots/roc.png, from the test split.
"""

import json
import os
import time

import numpy as np

from llmjax import runio
from llmjax.analysis.logistic import fit_logistic
from llmjax.data.readers import read_jsonl
from llmjax.errors import UserError
from llmjax.evals.backends import check_judge_config
from llmjax.experiments.music_judge import evaluation
from llmjax.experiments.music_judge.benchmark import (Pair, build_folk_pairs, build_pairs,
                                                      chorale_tunes, folk_tunes, load_folk_tunes,
                                                      load_tunes)
from llmjax.experiments.music_judge.compare import compare, features
from llmjax.experiments.music_judge.lm_judge import COPIED_FROM
from llmjax.experiments.music_judge.variations import LEVELS
from llmjax.pipeline import Pipeline, Stage

KIND_ORDER = ("natural", "folk_variant", *LEVELS, "negative", "hard_negative", "folk_negative")


def _write_jsonl(path: str, rows) -> None:
  if runio.is_writer():
    runio.atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _benchmark(config, ctx) -> dict:
  def reading(what):
    def progress(items):
      bar = runio.progress_bar(len(items), 0, config.progress, f"reading {what}")
      for item in items:
        yield item
        bar.update(1)
      bar.close()
    return progress

  loaded, skipped = load_tunes(chorale_tunes(config.benchmark.tunes), reading("chorales"))
  pairs = build_pairs(loaded, config.benchmark.test_share, config.seed,
                      config.benchmark.natural_per_tune, config.benchmark.negatives_per_tune)
  folk: dict = {}
  if config.benchmark.folk_tunes > 0:
    folk, folk_skipped = load_folk_tunes(folk_tunes(config.benchmark.folk_tunes),
                                         reading("folk tunes"))
    skipped += folk_skipped
    pairs += build_folk_pairs(folk, config.benchmark.test_share, config.seed)
  _write_jsonl(ctx.path("pairs.jsonl"), (p.to_json() for p in pairs))
  counts: dict[str, dict[str, int]] = {}
  for p in pairs:
    counts.setdefault(p.split, {}).setdefault(p.kind, 0)
    counts[p.split][p.kind] += 1
  return {"tunes": len(loaded), "settings": sum(len(v) for v in loaded.values()),
          "folk_tunes": len(folk),
          "pairs": len(pairs), "counts": counts, "skipped": skipped}


def _modules(config, ctx) -> dict:
  pairs = [Pair.from_json(r) for r in read_jsonl(os.path.join(ctx.workdir, "benchmark",
                                                               "pairs.jsonl"))]
  rows = []
  bar = runio.progress_bar(len(pairs), 0, config.progress, "modules")
  for pair in pairs:
    findings = compare(pair.a, pair.b)
    rows.append({"id": pair.id, "split": pair.split, "kind": pair.kind, "level": pair.level,
                 "label": pair.label, "scores": {m: f.score for m, f in findings.items()},
                 "features": features(findings),
                 "texts": {m: f.text for m, f in findings.items()}})
    bar.update(1)
  bar.close()
  _write_jsonl(ctx.path("findings.jsonl"), rows)
  return {"pairs": len(rows)}


def _baseline(config, ctx) -> dict:
  rows = list(read_jsonl(os.path.join(ctx.workdir, "modules", "findings.jsonl")))
  train = [r for r in rows if r["split"] == "train"]
  if len({r["label"] for r in train}) < 2:
    raise UserError("music_judge: the train split needs copies and negatives to fit the "
                    "baseline; raise benchmark.tunes")
  y_train = np.array([r["label"] for r in train])
  scores: dict[str, dict[str, float]] = {}
  models = {}
  for drop in (None, *evaluation.MODULES):
    names = evaluation.feature_names(rows[0]["features"], drop)
    model = fit_logistic(
        np.array([[r["features"][k] for k in names] for r in train]), y_train, config.seed)
    probabilities = model.predict_proba(
        np.array([[r["features"][k] for k in names] for r in rows]))[:, 1]
    scorer = "baseline" if drop is None else f"baseline - {drop}"
    scores[scorer] = {r["id"]: float(p) for r, p in zip(rows, probabilities)}
    regression = model[-1]
    models[scorer] = {"features": names,
                      "coefficients": [float(c) for c in regression.coef_[0]],
                      "intercept": float(regression.intercept_[0])}
  for module in evaluation.MODULES:
    scores[module] = {r["id"]: float(r["scores"][module]) for r in rows}
  runio.write_json(ctx.path("scores.json"), {"scores": scores, "models": models})
  return {"scorers": sorted(scores)}


def _lm_judge(config, ctx) -> dict:
  from llmjax.evals.backends import judge_sampling, make_backend
  from llmjax.evals.judging import JudgeItem, JudgeOptions, failure_counts, judge
  from llmjax.evals.parsing import parse_absolute
  from llmjax.experiments.music_judge.finding import Finding
  from llmjax.experiments.music_judge.lm_judge import judge_messages
  from llmjax.parallel import Parallel
  rows = [r for r in read_jsonl(os.path.join(ctx.workdir, "modules", "findings.jsonl"))
          if r["split"] == "test"]
  if config.lm_judge_limit and config.lm_judge_limit < len(rows):
    # A seeded random sample: the file's order runs tune by tune, positives first.
    chosen = np.random.default_rng(config.seed).choice(len(rows), config.lm_judge_limit,
                                                       replace=False)
    rows = [rows[i] for i in sorted(chosen)]
  backend = make_backend(config.judge, Parallel.from_config(config.mesh, config.sharding_rules))
  result = {"judged": len(rows)}
  for without in (None, *(evaluation.MODULES if config.lm_judge_ablations else ())):
    items = [JudgeItem(r["id"], judge_messages(
        {m: Finding(m, r["scores"][m], {}, r["texts"][m]) for m in evaluation.MODULES},
        without)) for r in rows]
    judgements = judge(items, backend, parse_absolute, judge_sampling(config.judge),
                       ctx.path(_judgements_file(without)), seed=config.seed,
                       options=JudgeOptions.from_config(config.judge),
                       show_progress=config.progress)
    causes = failure_counts([judgements[r["id"]] for r in rows])
    result[_lm_scorer(without)] = {
        "parse_failures": causes["unparsed"],
        "request_failures": causes["request_error"] + causes["prompt_too_long"]}
  return result


def _judgements_file(without: str | None) -> str:
  return "judgements.jsonl" if without is None else f"judgements_without_{without}.jsonl"


def _lm_scorer(without: str | None) -> str:
  return "lm_judge" if without is None else f"lm_judge - {without}"


def _report(config, workdir: str, judged: bool) -> dict:
  rows = list(read_jsonl(os.path.join(workdir, "modules", "findings.jsonl")))
  with open(os.path.join(workdir, "baseline", "scores.json")) as f:
    scores = json.load(f)["scores"]
  failures: dict[str, int] = {}
  if judged:
    from llmjax.evals.judging import failure_counts, read_judgements
    for without in (None, *evaluation.MODULES):
      path = os.path.join(workdir, "lm_judge", _judgements_file(without))
      if os.path.exists(path):
        records = read_judgements(path)
        scores[_lm_scorer(without)] = {i: float(r["verdict"]) for i, r in records.items()
                                       if not r["failed"]}
        failures[_lm_scorer(without)] = failure_counts(list(records.values()))
  train = [r for r in rows if r["split"] == "train"]
  test = [r for r in rows if r["split"] == "test"]
  scorers = [s for s in ("melody", "rhythm", "harmony", "baseline", "baseline - melody",
                         "baseline - rhythm", "baseline - harmony", "lm_judge",
                         "lm_judge - melody", "lm_judge - rhythm", "lm_judge - harmony")
             if s in scores]
  overall, decisions, curves = {}, {}, {}
  for scorer in scorers:
    if scorer.startswith("lm_judge"):
      threshold = float(COPIED_FROM)
    else:
      threshold = evaluation.best_threshold(
          np.array([r["label"] for r in train]), np.array([scores[scorer][r["id"]] for r in train]))
    scored = [r for r in test if r["id"] in scores[scorer]]
    y = np.array([r["label"] for r in scored])
    s = np.array([scores[scorer][r["id"]] for r in scored])
    decided = (s >= threshold).astype(int)
    decisions[scorer] = {r["id"]: int(d) for r, d in zip(scored, decided)}
    curves[scorer] = (y, s)
    overall[scorer] = {"auc": evaluation.roc_auc(y, s), "threshold": threshold,
                       "balanced_accuracy": evaluation.balanced_accuracy(y, decided),
                       "accuracy": float(np.mean(decided == y)) if len(y) else None,
                       "pairs": len(scored),
                       "parse_failures": failures.get(scorer, {}).get("unparsed", 0),
                       "request_failures": sum(failures.get(scorer, {}).values()) - (
                           failures.get(scorer, {}).get("unparsed", 0))}
  negatives = [r for r in test if r["label"] == 0]

  def auc_against_negatives(positives):
    members = positives + negatives
    return {scorer: evaluation.roc_auc(
        np.array([r["label"] for r in members if r["id"] in scores[scorer]]),
        np.array([scores[scorer][r["id"]] for r in members if r["id"] in scores[scorer]]))
        for scorer in scorers}

  # ROC-AUC of each kind of copy, and of each of its levels, against all negatives.
  per_kind_auc = {}
  for kind in KIND_ORDER:
    positives = [r for r in test if r["kind"] == kind and r["label"] == 1]
    if not positives or not negatives:
      continue
    per_kind_auc[kind] = auc_against_negatives(positives)
    for level in sorted({r["level"] for r in positives if r["level"]}):
      per_kind_auc[f"{kind} level {level}"] = auc_against_negatives(
          [r for r in positives if r["level"] == level])
  table = evaluation.level_table(test, decisions, KIND_ORDER)
  report = {"overall": overall, "per_kind_auc": per_kind_auc, "levels": table,
            "pairs": {"train": len(train), "test": len(test)}}
  runio.write_json(os.path.join(workdir, "report.json"), report)
  if runio.is_writer():
    runio.atomic_write_text(os.path.join(workdir, "report.md"),
                            _markdown(report, scorers))
  evaluation.plot_roc(os.path.join(workdir, "plots", "roc.png"), curves,
                      title=f"music plagiarism, test split ({len(test)} pairs)")
  return report


def _markdown(report: dict, scorers: list[str]) -> str:
  def fmt(x):
    return "-" if x is None else f"{x:.3f}"

  lines = ["# Music plagiarism judge: test split", "",
           "| scorer | ROC-AUC | balanced accuracy | accuracy | threshold | pairs | "
           "unparsed | request failures |", "|---|---|---|---|---|---|---|---|"]
  for scorer in scorers:
    o = report["overall"][scorer]
    lines.append(f"| {scorer} | {fmt(o['auc'])} | {fmt(o['balanced_accuracy'])} | "
                 f"{fmt(o['accuracy'])} | {o['threshold']:.3g} | {o['pairs']} | "
                 f"{o['parse_failures']} | {o['request_failures']} |")
  lines += ["", "Share decided correctly per kind and level (copies detected, negatives "
            "rejected):", "", "| kind | level | copy | pairs | " + " | ".join(scorers) + " |",
            "|---|---|---|---|" + "---|" * len(scorers)]
  for row in report["levels"]:
    lines.append(f"| {row['kind']} | {row['level'] or '-'} | {'yes' if row['label'] else 'no'}"
                 f" | {row['pairs']} | " + " | ".join(fmt(row[s]) for s in scorers) + " |")
  lines += ["", "ROC-AUC of each kind (and level) of copy against all negatives:", "",
            "| kind | " + " | ".join(scorers) + " |", "|---|" + "---|" * len(scorers)]
  for kind, aucs in report["per_kind_auc"].items():
    lines.append(f"| {kind} | " + " | ".join(fmt(aucs[s]) for s in scorers) + " |")
  return "\n".join(lines) + "\n"


def run(config, workdir: str) -> dict:
  started = time.time()
  check_judge_config(config.judge, allow_none=True)  # before minutes of module scoring
  judged = config.judge.backend != "none"
  benchmark_config = dict(config.benchmark.to_dict(), seed=config.seed)
  stages = [
      Stage("benchmark", lambda ctx: _benchmark(config, ctx), benchmark_config,
            ("pairs.jsonl",)),
      Stage("modules", lambda ctx: _modules(config, ctx), {}, ("findings.jsonl",)),
      Stage("baseline", lambda ctx: _baseline(config, ctx), {"seed": config.seed},
            ("scores.json",)),
  ]
  if judged:
    judge_settings = {k: v for k, v in config.judge.to_dict().items() if k != "api_key_env"}
    stages.append(Stage("lm_judge", lambda ctx: _lm_judge(config, ctx),
                        {"judge": judge_settings, "limit": config.lm_judge_limit,
                         "ablations": config.lm_judge_ablations,
                         "seed": config.seed}, ("judgements.jsonl",)))
  results = Pipeline(workdir, stages).run()
  report = _report(config, workdir, judged)
  summary = {scorer: {"auc": o["auc"], "balanced_accuracy": o["balanced_accuracy"]}
             for scorer, o in report["overall"].items()}
  return {"benchmark": {k: results["benchmark"][k]
                        for k in ("tunes", "settings", "folk_tunes", "pairs")},
          "skipped_settings": len(results["benchmark"]["skipped"]),
          "test": summary, "lm_judge": results.get("lm_judge"),
          "seconds": round(time.time() - started, 1)}
