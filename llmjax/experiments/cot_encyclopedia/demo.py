"""The CoT Encyclopedia on a CPU (configs/cot_encyclopedia.py:tiny): what needs no capable judge.

The task (strategy_sums.py) has two verifiable strategies, and a rule reads which
one a chain of thought used, standing in for the judge's classification. Stages:
  base        a fresh byte-level model fine-tuned on both strategies: prompts with a strategy tag
              ("[seq]", "[pair]") show that strategy; untagged prompts show either
  sequential  the base fine-tuned on sequential chains only (untagged prompts)
  pairwise    the base fine-tuned on pairwise chains only
  respond     greedy answers of the three models to the test questions
  predict     the paper's prediction from the question alone: per question, the strategy that
              succeeded (exactly one of the two specialists answered it right); a logistic
              regression on the question's MiniLM embedding, in domain (a random half) and
              across domains (trained on 4-5 numbers, tested on 6), against the majority class
  control     (a) strategy prompting: the base model's wrong answers (on questions the
              classifier was not fitted on) asked again with the predicted strategy's tag,
              against a random tag and each fixed tag; (b) model merging: theta(a) =
              (1 - a) theta_sequential + a theta_pairwise over a sweep of a, the share of
              pairwise chains and the accuracy at each a
  criteria    the embedding and clustering stages on a fixture of criteria lines written for
              this demo (a capable judge would write them from the responses)
The prompting baseline of prediction asks a judge LM which strategy a question calls for; with
no capable judge offline it is not run here (summary.json says so).
"""

import json
import os

import numpy as np

from llmjax import plotting, runio
from llmjax.data.readers import read_jsonl
from llmjax.experiments.cot_encyclopedia import clustering as clustering_lib
from llmjax.experiments.cot_encyclopedia import strategy_sums as task_lib
from llmjax.experiments.cot_encyclopedia.prompts import parse_criteria
from llmjax.experiments.pipeline_policies import PipelinePolicies, write_rows
from llmjax.experiments.starting_point import StartingPoint
from llmjax.infer import SamplingParams
from llmjax.pipeline import Pipeline, Stage
from llmjax.weights.merge import interpolate

# Criteria lines written for the demo (not judge output): three themes a judge might name,
# four wordings each.
CRITERIA_FIXTURE = """<patterns>
Order of operations (Running total left to right vs. Pairs first then combine)
Accumulation style (Keeps one running sum vs. Builds partial sums in parallel)
Grouping (Adds numbers one at a time vs. Groups numbers into pairs)
Combination order (Sequential accumulation vs. Tree-like combination)
Verification (Checks each step vs. Checks only the final answer)
Self-checking (Verifies every partial sum vs. Verifies the final result only)
Error checking (Re-adds each step vs. Re-adds at the end)
Answer checking (Confirms each intermediate total vs. Confirms only the final total)
Notation (Writes full equations vs. Writes only the numbers)
Presentation (Explicit equations for every step vs. Bare intermediate results)
Formatting of steps (Equation per step vs. List of results)
Step writing (Shows each addition in full vs. Shows results without operations)
</patterns>"""


def run_demo(config, workdir: str) -> dict:
  demo, seed = config.demo, config.seed
  policies = PipelinePolicies(config, workdir, demo.sample_batch)
  start, tokenizer = policies.start, policies.tokenizer
  every = task_lib.questions(demo.train_questions + demo.test_questions, seed)
  train_questions, test_questions = every[:demo.train_questions], every[demo.train_questions:]
  greedy = SamplingParams(temperature=0.0, max_new_tokens=demo.max_new_tokens)

  def fine_tune(ctx, rows, starting: StartingPoint, sft_config):
    result = policies.fine_tune(ctx, rows, "sft", 0.1, seed, starting, sft_config)
    return {"rows": result["rows"], "steps": result["steps"]}

  def base(ctx):
    rng = np.random.default_rng(seed + 1)
    rows = []
    for q in train_questions:
      for strategy in task_lib.STRATEGIES:
        rows.append({"prompt": task_lib.prompt(q, strategy),
                     "completion": task_lib.chain(q, strategy)})
      either = task_lib.STRATEGIES[int(rng.integers(2))]
      rows.append({"prompt": task_lib.prompt(q), "completion": task_lib.chain(q, either)})
    return fine_tune(ctx, rows, start, policies.sft_config)

  def specialist(strategy):
    def stage(ctx):
      base_params = policies.params_of(ctx, "base")
      starting = StartingPoint(start.model_config, base_params, tokenizer, "base")
      sft_config = policies.sft_config.copy_and_resolve_references()
      sft_config.train.update(dict(demo.specialist_train))
      rows = [{"prompt": task_lib.prompt(q), "completion": task_lib.chain(q, strategy)}
              for q in train_questions]
      return fine_tune(ctx, rows, starting, sft_config)
    return stage

  def answer(params, prompts):
    texts, _ = policies.complete(params, prompts, greedy, seed)
    return [t[0] for t in texts]

  def graded(questions, texts):
    return [{"numbers": q, "text": t, "correct": task_lib.is_correct(q, t),
             "strategy": task_lib.strategy_of(q, t)} for q, t in zip(questions, texts)]

  def respond(ctx):
    out = {}
    for name in ("base", "sequential", "pairwise"):
      rows = graded(test_questions,
                    answer(policies.params_of(ctx, name),
                           [task_lib.prompt(q) for q in test_questions]))
      write_rows(ctx.path(f"{name}.jsonl"), rows)
      out[name] = {"accuracy": float(np.mean([r["correct"] for r in rows])),
                   "pairwise_share": _share(rows, "pairwise"),
                   "unclassified": sum(r["strategy"] is None for r in rows)}
    return out

  def responses(name):
    return list(read_jsonl(os.path.join(workdir, "respond", f"{name}.jsonl")))

  def predict(ctx):
    from llmjax.analysis.logistic import fit_logistic
    from llmjax.interop.sentence_embedder import SentenceEmbedder, default_embedder
    seq, pair = responses("sequential"), responses("pairwise")
    labelled = [(i, 1 if p["correct"] else 0) for i, (s, p) in enumerate(zip(seq, pair))
                if s["correct"] != p["correct"]]  # 1: pairwise succeeded, 0: sequential
    embedder = SentenceEmbedder.from_directory(config.embedder or default_embedder())
    vectors = embedder.embed([task_lib.prompt(q) for q in test_questions])
    rng = np.random.default_rng(seed + 2)
    in_train = {i for i, _ in labelled if rng.random() < 0.5}
    settings = {
        "in_domain": ([x for x in labelled if x[0] in in_train],
                      [x for x in labelled if x[0] not in in_train]),
        "cross_domain": ([x for x in labelled if len(test_questions[x[0]]) < 6],
                         [x for x in labelled if len(test_questions[x[0]]) == 6])}
    result, predictor = {"labelled_questions": len(labelled),
                         "pairwise_succeeded": sum(y for _, y in labelled)}, None
    for setting, (train, test) in settings.items():
      ys_train, ys_test = np.array([y for _, y in train]), np.array([y for _, y in test])
      if not len(train) or not len(test):
        result[setting] = {"train": len(train), "test": len(test),
                           "why_not": "no labelled questions on one side"}
        continue
      majority = int(ys_train.mean() >= 0.5)
      if len(set(ys_train.tolist())) < 2:  # nothing to learn: the classifier is the majority
        model, kind = _Constant(majority), "constant (one class among the training labels)"
      else:
        model, kind = fit_logistic(vectors[[i for i, _ in train]], ys_train, seed), \
            "logistic regression"
      result[setting] = {
          "train": len(train), "test": len(test), "classifier": kind,
          "test_pairwise_share": float(ys_test.mean()),
          "accuracy": float(np.mean(model.predict(vectors[[i for i, _ in test]]) == ys_test)),
          "majority_class_accuracy": float(np.mean(ys_test == majority))}
      if setting == "in_domain":
        predictor = model
    result["prompting_baseline"] = ("not run: it asks a judge LM which strategy a question "
                                    "calls for, and no capable judge is available offline")
    # The in-domain classifier's strategy for every test question, and the questions it was
    # fitted on (control asks again only the others).
    result["predicted"] = (predictor.predict(vectors).tolist() if predictor is not None
                           else None)
    result["classifier_trained_on"] = sorted(i for i, _ in settings["in_domain"][0])
    runio.write_json(ctx.path("prediction.json"), result)
    return {k: v for k, v in result.items() if k != "predicted"}

  def control(ctx):
    base_rows = responses("base")
    prediction = _read_json(os.path.join(workdir, "predict", "prediction.json"))
    predicted, fitted_on = prediction["predicted"], set(prediction["classifier_trained_on"])
    # The questions the classifier never saw (their labels were not used to fit it).
    unseen = [i for i in range(len(base_rows)) if i not in fitted_on]
    wrong = [i for i in unseen if not base_rows[i]["correct"]]
    result = {"questions": len(unseen), "wrong_before": len(wrong),
              "accuracy_before": float(np.mean([base_rows[i]["correct"] for i in unseen]))}
    rng = np.random.default_rng(seed + 3)
    base_params = policies.params_of(ctx, "base")
    prompted = {"random_strategy": [task_lib.STRATEGIES[int(rng.integers(2))] for _ in wrong],
                "always_sequential": ["sequential"] * len(wrong),
                "always_pairwise": ["pairwise"] * len(wrong)}
    if predicted is None:
      result["predicted_strategy"] = {
          "why_not": "no in-domain classifier: the specialists never disagreed on a test "
                     "question, so no question has a strategy that succeeded"}
    else:
      prompted["predicted_strategy"] = [task_lib.STRATEGIES[predicted[i]] for i in wrong]
      result["predicted_pairwise_share"] = (float(np.mean([predicted[i] for i in wrong]))
                                            if wrong else None)
    for name, tags in prompted.items():
      texts = answer(base_params, [task_lib.prompt(test_questions[i], t)
                                   for i, t in zip(wrong, tags)]) if wrong else []
      fixed = sum(task_lib.is_correct(test_questions[i], t) for i, t in zip(wrong, texts))
      result[name] = {"fixed": int(fixed),
                      "accuracy_after": (len(unseen) - len(wrong) + fixed) / len(unseen)}
    curve = []
    sequential, pairwise = policies.params_of(ctx, "sequential"), policies.params_of(
        ctx, "pairwise")
    merge_questions = test_questions[:demo.merge_questions]
    for a in np.linspace(0.0, 1.0, demo.merge_points):
      rows = graded(merge_questions, answer(interpolate(sequential, pairwise, float(a)),
                                            [task_lib.prompt(q) for q in merge_questions]))
      curve.append({"a": float(a), "pairwise_share": _share(rows, "pairwise"),
                    "sequential_share": _share(rows, "sequential"),
                    "accuracy": float(np.mean([r["correct"] for r in rows]))})
    result["merging"] = curve
    runio.write_json(ctx.path("control.json"), result)
    plotting.plot_curves(
        os.path.join(workdir, "plots", "merging.png"),
        {name: ([c["a"] for c in curve], [c[key] for c in curve])
         for name, key in (("pairwise share", "pairwise_share"),
                           ("sequential share", "sequential_share"),
                           ("accuracy", "accuracy"))},
        xlabel="a in (1 - a) sequential + a pairwise", ylabel="share of test questions",
        title="model merging: strategy mix and accuracy")
    return {k: v for k, v in result.items() if k != "merging"}

  def criteria(ctx):
    from llmjax.interop.sentence_embedder import SentenceEmbedder, default_embedder
    found = parse_criteria(CRITERIA_FIXTURE)
    embeddings = SentenceEmbedder.from_directory(config.embedder or default_embedder()).embed(
        [c.text for c in found])
    c = config.clustering
    clusters = clustering_lib.cluster(embeddings, c.method, c.k_min, c.k_max, c.threshold)
    clustering_lib.plot_clusters(os.path.join(workdir, "plots", "clusters.png"), embeddings,
                                 clusters, [x.text for x in found])
    return {"source": "a fixture of 12 criteria lines written for this demo, not judge output",
            "k": clusters.k, "labels": clusters.labels.tolist(),
            "representatives": [found[i].text for i in clusters.medoids]}

  sft_settings = {"model": config.model.to_dict(), "sft": config.sft.to_dict(),
                  "demo": demo.to_dict(), "seed": seed, "tokenizer": config.data.tokenizer}
  results = Pipeline(workdir, [
      Stage("base", base, sft_settings, ("checkpoints",)),
      Stage("sequential", specialist("sequential"), sft_settings, ("checkpoints",)),
      Stage("pairwise", specialist("pairwise"), sft_settings, ("checkpoints",)),
      Stage("respond", respond, {}, ("base.jsonl", "sequential.jsonl", "pairwise.jsonl")),
      Stage("predict", predict, {"embedder": config.embedder}, ("prediction.json",)),
      Stage("control", control, {"merge_points": demo.merge_points}, ("control.json",)),
      Stage("criteria", criteria, {"clustering": config.clustering.to_dict()}),
  ]).run()
  return {"models": results["respond"], "prediction": results["predict"],
          "control": results["control"],
          "merging": _read_json(os.path.join(workdir, "control", "control.json"))["merging"],
          "criteria": results["criteria"]}


class _Constant:
  """A classifier that always answers one class (when training saw only that one)."""

  def __init__(self, label: int):
    self.label = label

  def predict(self, x):
    return np.full(len(x), self.label)


def _share(rows, strategy: str) -> float:
  return float(np.mean([r["strategy"] == strategy for r in rows])) if rows else 0.0


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)
