"""The CoT Encyclopedia (experiment `cot_encyclopedia`; Lee et al. 2025): a taxonomy of reasoning
strategies built bottom-up from models' own chains of thought.

Over a JSONL of (question, answer, response, model) rows, a resumable pipeline:
  criteria   a judge LM names contrasting criteria in each response ("Name (A vs. B)" lines in a
             <patterns> block) -> judgements.jsonl; unreadable answers retried, then counted
  embed      each criterion's text (name and both patterns) embedded by a sentence-transformers
             BERT checkpoint (default all-MiniLM-L6-v2) -> embeddings.npy, criteria.jsonl
  cluster    agglomerative clustering (the paper's cosine average linkage with k chosen by
             silhouette, or the released code's Ward + distance threshold); each cluster's medoid
             is its representative criterion -> clusters.json, plots/clusters.png
  rubrics    a rubric per representative criterion (definition, characteristics, examples of
             each pattern) -> judgements.jsonl
  classify   every response against every representative criterion: a report ending "Final
             pattern determination: X", read as A or B -> judgements.jsonl, matrix.npy
  predict    (rows with a `correct` field) per criterion, the pattern that succeeded on each
             question predicted from the question's embedding (prediction.py):
             trained on questions first answered correctly, tested on the others, and
             across `domain`s; against the majority class and a prompted judge
  control    (with `control.backend`: the model under test) the questions first answered
             wrong, asked again with a prompt prescribing the predicted patterns (rubric
             definitions), against random patterns; answers read as "The answer is N"
  merge      (with `merge.first` and `merge.second`, two fine-tunes of one base) answers of
             theta(a) = (1 - a) theta_first + a theta_second over a sweep of a, classified by the
             judge against every representative criterion: the pattern shares (and accuracy)
             at each a -> merge.json, plots/merging.png
Then summary numbers: the share of each pattern per model and, between two models, a
chi-squared test and Cohen's d per criterion (report.json, report.md).
"""

import dataclasses
import json
import os

import numpy as np

from llmjax import checks, runio
from llmjax.data.readers import read_jsonl, read_jsonl_numbered
from llmjax.errors import UserError
from llmjax.evals.backends import check_judge_config
from llmjax.experiments.cot_encyclopedia import prompts
from llmjax.experiments.cot_encyclopedia import clustering as clustering_lib
from llmjax.experiments.cot_encyclopedia.statistics import compare_models, pattern_shares
from llmjax.pipeline import Pipeline, Stage

FIELDS = ("question", "response", "model")


def read_rows(path: str) -> list[dict]:
  """The response rows, each with an id (its own, or its line number); one line per bad row."""
  rows = []
  for line_number, row in read_jsonl_numbered(path, required=FIELDS):
    bad = [k for k in FIELDS if not isinstance(row[k], str)]
    if bad:
      raise UserError(f"{path}:{line_number}: field {bad[0]!r} must be a string")
    rows.append({**row, "id": str(row.get("id", line_number))})
  ids = [r["id"] for r in rows]
  if len(set(ids)) != len(ids):
    raise UserError(f"{path}: id {next(i for i in ids if ids.count(i) > 1)!r} repeats")
  if not rows:
    raise UserError(f"{path}: no rows; expected JSONL of question, answer, response, model")
  return rows


class _Judge:
  """The judge layer, shared by the three judged stages."""

  def __init__(self, config):
    from llmjax.evals.backends import judge_sampling, make_backend
    from llmjax.parallel import Parallel
    self.config = config
    self.backend = make_backend(config.judge,
                                Parallel.from_config(config.mesh, config.sharding_rules))
    self.sampling = judge_sampling(config.judge)

  def __call__(self, items, path: str) -> dict:
    from llmjax.evals.judging import JudgeOptions, judge
    return judge(items, self.backend, lambda text: None, self.sampling, path,
                 seed=self.config.seed, options=JudgeOptions.from_config(self.config.judge),
                 show_progress=self.config.progress)


def _failures(records) -> dict[str, int]:
  """A stage's failed judgements: outputs that never parsed, and requests the judge refused or
  never answered (kept in the stage's judgements.jsonl with the endpoint's error)."""
  from llmjax.evals.judging import failure_counts
  causes = failure_counts(list(records))
  return {"parse_failures": causes["unparsed"],
          "request_failures": causes["request_error"] + causes["prompt_too_long"]}


def _criteria_of(text: str):
  found = prompts.parse_criteria(text)
  return [dataclasses.astuple(c) for c in found] if found else None


def run(config, workdir: str) -> dict:
  checks.expect(config.clustering.method in clustering_lib.METHODS, "clustering.method",
                config.clustering.method, f"one of {clustering_lib.METHODS}")
  if config.mode == "judge":
    check_judge_config(config.judge)  # before a single answer is paid for
  if config.mode == "demo":
    import ml_collections

    from llmjax.experiments.cot_encyclopedia.demo import run_demo
    values = config.to_dict()  # the fine-tuning helpers read config.data.tokenizer
    values["data"] = {"tokenizer": config.demo.tokenizer, "loss_on_prompt": False}
    return run_demo(ml_collections.ConfigDict(values), workdir)
  if config.mode != "judge":
    raise UserError(f"config.mode = {config.mode!r}: expected 'judge' or 'demo'")
  from llmjax.evals.judging import JudgeItem
  if not config.data:
    raise UserError("config.data is required: a JSONL of question, answer, response and model "
                    "rows (the responses whose strategies are analysed)")
  rows = read_rows(config.data)
  if config.limit:
    rows = rows[:config.limit]
  judge = _Judge(config)

  def criteria_stage(ctx):
    items = [JudgeItem(r["id"], prompts.criteria_messages(r["question"], r["response"]),
                       _criteria_of) for r in rows]
    judged = judge(items, ctx.path("judgements.jsonl"))
    return {"responses": len(rows), **_failures(judged[r["id"]] for r in rows),
            "criteria": sum(len(judged[r["id"]]["verdict"] or []) for r in rows)}

  def embed_stage(ctx):
    from llmjax.interop.sentence_embedder import SentenceEmbedder, default_embedder
    judged = _read_judgements(os.path.join(workdir, "criteria", "judgements.jsonl"))
    criteria = [{"row": r["id"], "name": name, "pattern_a": a, "pattern_b": b}
                for r in rows if not judged[r["id"]]["failed"]
                for name, a, b in judged[r["id"]]["verdict"]]
    if len(criteria) < 2:
      raise UserError(f"cot_encyclopedia: {len(criteria)} criteria were read from the judge's "
                      "answers; clustering needs at least 2 (see criteria/judgements.jsonl)")
    embedder = SentenceEmbedder.from_directory(config.embedder or default_embedder())
    texts = [prompts.Criterion(c["name"], c["pattern_a"], c["pattern_b"]).text
             for c in criteria]
    embeddings = embedder.embed(texts)
    if runio.is_writer():
      runio.atomic_save_npy(ctx.path("embeddings.npy"), embeddings)
      runio.atomic_write_text(ctx.path("criteria.jsonl"),
                              "".join(json.dumps(c) + "\n" for c in criteria))
    return {"criteria": len(criteria), "dimension": int(embeddings.shape[1])}

  def cluster_stage(ctx):
    embeddings = np.load(os.path.join(workdir, "embed", "embeddings.npy"))
    criteria = list(read_jsonl(os.path.join(workdir, "embed", "criteria.jsonl")))
    c = config.clustering
    found = clustering_lib.cluster(embeddings, c.method, c.k_min, c.k_max, c.threshold)
    texts = [prompts.Criterion(x["name"], x["pattern_a"], x["pattern_b"]).text
             for x in criteria]
    clusters = [{"cluster": k, "size": int((found.labels == k).sum()),
                 "representative": criteria[index], "representative_text": texts[index]}
                for k, index in enumerate(found.medoids)]
    runio.write_json(ctx.path("clusters.json"), {
        "method": c.method, "k": found.k, "labels": found.labels.tolist(),
        "silhouettes": {str(k): v for k, v in found.silhouettes.items()},
        "clusters": clusters})
    clustering_lib.plot_clusters(os.path.join(workdir, "plots", "clusters.png"), embeddings,
                                 found, texts)
    return {"k": found.k, "sizes": [x["size"] for x in clusters],
            "representatives": [x["representative_text"] for x in clusters]}

  def representatives():
    with open(os.path.join(workdir, "cluster", "clusters.json")) as f:
      clusters = json.load(f)["clusters"]
    return [prompts.Criterion(x["representative"]["name"], x["representative"]["pattern_a"],
                              x["representative"]["pattern_b"]) for x in clusters]

  def rubrics_stage(ctx):
    criteria = representatives()
    items = [JudgeItem(f"criterion-{k}", prompts.rubric_messages(c), prompts.parse_rubric)
             for k, c in enumerate(criteria)]
    judged = judge(items, ctx.path("judgements.jsonl"))
    return {"rubrics": len(items), **_failures(judged[i.id] for i in items)}

  def classify_stage(ctx):
    criteria = representatives()
    rubrics = _read_judgements(os.path.join(workdir, "rubrics", "judgements.jsonl"))
    usable = [k for k in range(len(criteria)) if not rubrics[f"criterion-{k}"]["failed"]]
    items = []
    for r in rows:
      for k in usable:
        c = criteria[k]
        items.append(JudgeItem(
            f"{r['id']}|{k}",
            prompts.classification_messages(r["question"], r["response"], c,
                                            rubrics[f"criterion-{k}"]["verdict"]),
            lambda text, c=c: prompts.parse_determination(text, c)))
    judged = judge(items, ctx.path("judgements.jsonl"))
    matrix = np.full((len(rows), len(criteria)), -1, np.int8)  # 1 = A, 0 = B, -1 = none
    for i, r in enumerate(rows):
      for k in usable:
        verdict = judged[f"{r['id']}|{k}"]["verdict"]
        if verdict is not None:
          matrix[i, k] = 1 if verdict == "A" else 0
    if runio.is_writer():
      runio.atomic_save_npy(ctx.path("matrix.npy"), matrix)
    return {"classified": len(items), **_failures(judged[i.id] for i in items),
            "criteria_without_rubric": len(criteria) - len(usable)}

  def predict_stage(ctx):
    from llmjax.experiments.cot_encyclopedia import prediction
    from llmjax.interop.sentence_embedder import SentenceEmbedder, default_embedder
    matrix = np.load(os.path.join(workdir, "classify", "matrix.npy"))
    # One model's answers, as the paper works per model: its first answer to a question
    # decides the split, its correct answers the label.
    counts = {}
    for r in rows:
      counts[r["model"]] = counts.get(r["model"], 0) + 1
    model = config.predict_model or max(sorted(counts), key=counts.get)
    if model not in counts:
      raise UserError(f"config.predict_model = {model!r}: no rows of that model; models: "
                      f"{sorted(counts)}")
    mine = [i for i, r in enumerate(rows) if r["model"] == model]
    labels = prediction.question_labels([rows[i] for i in mine], matrix[mine])
    first = prediction.first_answer_correct([rows[i] for i in mine])
    questions = sorted(first)
    vectors = dict(zip(questions, SentenceEmbedder.from_directory(
        config.embedder or default_embedder()).embed(questions)))
    train = [q for q in questions if first[q]]
    test = [q for q in questions if not first[q]]
    criteria = representatives()
    rubrics = _read_judgements(os.path.join(workdir, "rubrics", "judgements.jsonl"))
    items, keys = [], {}
    for k, c in enumerate(criteria):
      rubric = rubrics[f"criterion-{k}"]
      if rubric["failed"]:
        continue
      for q in test:
        if labels.get(q) and labels[q][k] is not None:
          item_id = f"{questions.index(q)}|{k}"
          keys[item_id] = (q, k)
          items.append(JudgeItem(item_id, prompts.prediction_messages(q, c, rubric["verdict"]),
                                 lambda text, c=c: prompts.parse_determination(text, c)))
    judged = judge(items, ctx.path("judgements.jsonl"))
    domains = {rows[i]["question"]: rows[i].get("domain") for i in mine}
    names = sorted({d for d in domains.values() if d is not None})
    per_criterion = []
    for k, c in enumerate(criteria):
      entry = {"criterion": c.text,
               "in_domain": prediction.evaluate(vectors, labels, train, test, k, config.seed)}
      asked = [(q, judged[i]["verdict"]) for i, (q, kk) in keys.items() if kk == k]
      answered = [(q, v) for q, v in asked if v is not None]
      entry["in_domain"]["prompting_accuracy"] = (
          float(np.mean([(v == "A") == (labels[q][k] == 1) for q, v in answered]))
          if answered else None)
      if len(names) > 1:  # train on the other domains' train questions, test on one's test
        entry["cross_domain"] = {d: prediction.evaluate(
            vectors, labels, [q for q in train if domains[q] != d],
            [q for q in test if domains[q] == d], k, config.seed) for d in names}
      per_criterion.append(entry)
    # The in-domain classifiers' patterns for every test question (the control stage's).
    predicted = {q: [None] * len(criteria) for q in test}
    for k in range(len(criteria)):
      classifier = prediction.fit(vectors, labels, train, k, config.seed)
      if classifier is not None and test and not rubrics[f"criterion-{k}"]["failed"]:
        for q, value in zip(test, classifier(np.stack([vectors[q] for q in test]))):
          predicted[q][k] = int(value)
    result = {"model": model, "train_questions": len(train), "test_questions": len(test),
              "prompting_parse_failures": sum(1 for i in items if judged[i.id]["failed"]),
              "criteria": per_criterion, "predicted": predicted}
    runio.write_json(ctx.path("prediction.json"), result)
    return {"model": model, "parse_failures": result["prompting_parse_failures"],
            "in_domain_accuracy": [e["in_domain"]["accuracy"] for e in per_criterion],
            "majority_class_accuracy": [e["in_domain"]["majority_class_accuracy"]
                                        for e in per_criterion],
            "prompting_accuracy": [e["in_domain"]["prompting_accuracy"]
                                   for e in per_criterion]}

  def control_stage(ctx):
    from llmjax.evals.backends import judge_sampling, make_backend
    from llmjax.evals.judging import JudgeOptions, judge as generate
    from llmjax.parallel import Parallel
    from llmjax.tasks.math_answers import extract_answer, is_correct, normalise_number
    with open(os.path.join(workdir, "predict", "prediction.json")) as f:
      predicted = json.load(f)["predicted"]
    rubrics = _read_judgements(os.path.join(workdir, "rubrics", "judgements.jsonl"))
    gold = {r["question"]: str(r.get("answer", "")) for r in rows}
    steerable = sorted(q for q, patterns in predicted.items()
                       if any(p is not None for p in patterns))
    # Answers are compared as numbers ("The answer is N"); a question whose gold answer is not
    # a number cannot be checked and is counted, not scored.
    questions = [q for q in steerable if normalise_number(gold[q]) is not None]
    rng = np.random.default_rng(config.seed + 1)
    backend = make_backend(config.control,
                           Parallel.from_config(config.mesh, config.sharding_rules))
    result = {"questions": len(questions),
              "gold_not_a_number": len(steerable) - len(questions),
              # these are the questions the model first answered wrong
              "accuracy_before_on_these_questions": 0.0}
    for name in ("predicted", "random"):
      items = []
      for q in questions:
        chosen = [(k, p if name == "predicted" else int(rng.integers(2)))
                  for k, p in enumerate(predicted[q]) if p is not None]
        patterns = [rubrics[f"criterion-{k}"]["verdict"]["A" if p == 1 else "B"]
                    for k, p in chosen]
        items.append(JudgeItem(str(questions.index(q)), prompts.steering_messages(q, patterns)))
      answers = generate(items, backend, lambda text: text if text.strip() else None,
                         judge_sampling(config.control), ctx.path(f"{name}.jsonl"),
                         seed=config.seed, options=JudgeOptions.from_config(config.control),
                         show_progress=config.progress)
      outputs = [answers[i.id]["output"] for i in items]
      correct = [is_correct(o, gold[q]) for o, q in zip(outputs, questions)]
      result[f"accuracy_after_{name}_patterns"] = (float(np.mean(correct)) if correct
                                                   else None)
      result[f"no_answer_{name}_patterns"] = sum(extract_answer(o) is None for o in outputs)
    runio.write_json(ctx.path("control.json"), result)
    return result

  def merge_stage(ctx):
    from llmjax import plotting
    from llmjax.evals.backends import ChatRequest, JudgeSampling, LocalBackend
    from llmjax.evals.judging import request_seed
    from llmjax.parallel import Parallel
    from llmjax.tasks.math_answers import is_correct, normalise_number
    from llmjax.weights import load_model
    from llmjax.weights.merge import interpolate
    m = config.merge
    parallel = Parallel.from_config(config.mesh, config.sharding_rules)
    model = LocalBackend(m.first, parallel, m.batch_size, m.length_bucket)
    second = load_model(m.second, parallel).params
    questions = list(dict.fromkeys(r["question"] for r in rows))[:m.questions or None]
    gold = {r["question"]: str(r.get("answer", "")) for r in rows}
    criteria = representatives()
    rubrics = _read_judgements(os.path.join(workdir, "rubrics", "judgements.jsonl"))
    usable = [k for k in range(len(criteria)) if not rubrics[f"criterion-{k}"]["failed"]]
    sampling = JudgeSampling(temperature=m.temperature, top_p=1.0, max_tokens=m.max_tokens,
                             repetition_penalty=1.0)
    curve = []
    for step, a in enumerate(np.linspace(0.0, 1.0, m.points)):
      path = ctx.path(f"responses_{step}.jsonl")
      if os.path.exists(path):  # a resumed sweep keeps the answers it has
        texts = [r["response"] for r in read_jsonl(path)]
      else:
        texts = model.complete(
            [ChatRequest(({"role": "user", "content": q},), request_seed(config.seed, q, 0))
             for q in questions], sampling, config.progress,
            params=interpolate(model.loaded.params, second, float(a)))
        if runio.is_writer():
          runio.atomic_write_text(path, "".join(
              json.dumps({"a": float(a), "question": q, "response": t}) + "\n"
              for q, t in zip(questions, texts)))
      items = []
      for i, (q, text) in enumerate(zip(questions, texts)):
        for k in usable:
          c = criteria[k]
          items.append(JudgeItem(
              f"{step}|{i}|{k}",
              prompts.classification_messages(q, text, c, rubrics[f"criterion-{k}"]["verdict"]),
              lambda t, c=c: prompts.parse_determination(t, c)))
      judged = judge(items, ctx.path("judgements.jsonl"))
      shares = []
      for k in range(len(criteria)):
        verdicts = [judged[f"{step}|{i}|{k}"]["verdict"] for i in range(len(questions))
                    if k in usable]
        determined = [v for v in verdicts if v is not None]
        shares.append(float(np.mean([v == "A" for v in determined])) if determined else None)
      checkable = [(q, t) for q, t in zip(questions, texts)
                   if normalise_number(gold[q]) is not None]
      curve.append({"a": float(a), "pattern_a_share": shares,
                    "undetermined": sum(judged[i.id]["failed"] for i in items),
                    "accuracy": (float(np.mean([is_correct(t, gold[q]) for q, t in checkable]))
                                 if checkable else None)})
    runio.write_json(ctx.path("merge.json"), {"first": m.first, "second": m.second,
                                              "questions": len(questions), "curve": curve})
    plotting.plot_curves(
        os.path.join(workdir, "plots", "merging.png"),
        {f"{criteria[k].name}: share of {criteria[k].pattern_a}":
         ([c["a"] for c in curve], [c["pattern_a_share"][k] for c in curve])
         for k in usable},
        xlabel="a in (1 - a) first + a second", ylabel="share",
        title="model merging: strategy mix")
    return {"points": len(curve), "questions": len(questions),
            "pattern_a_share_first": curve[0]["pattern_a_share"],
            "pattern_a_share_second": curve[-1]["pattern_a_share"]}

  judge_settings = {k: v for k, v in config.judge.to_dict().items() if k != "api_key_env"}
  control_settings = {k: v for k, v in config.control.to_dict().items() if k != "api_key_env"}
  has_correct = any("correct" in r for r in rows)
  data_settings = {"data": os.path.abspath(config.data), "limit": config.limit,
                   "size": os.path.getsize(config.data), "seed": config.seed,
                   "judge": judge_settings}
  results = Pipeline(workdir, [
      Stage("criteria", criteria_stage, data_settings, ("judgements.jsonl",)),
      Stage("embed", embed_stage, {"embedder": config.embedder},
            ("embeddings.npy", "criteria.jsonl")),
      Stage("cluster", cluster_stage, config.clustering.to_dict(), ("clusters.json",)),
      Stage("rubrics", rubrics_stage, {}, ("judgements.jsonl",)),
      Stage("classify", classify_stage, {}, ("judgements.jsonl", "matrix.npy")),
      *([Stage("predict", predict_stage, {"embedder": config.embedder},
               ("prediction.json",))] if has_correct else []),
      *([Stage("control", control_stage, {"control": control_settings},
               ("control.json",))] if has_correct and config.control.backend != "none"
        else []),
      *([Stage("merge", merge_stage, {"merge": config.merge.to_dict()}, ("merge.json",))]
        if config.merge.first and config.merge.second else []),
  ]).run()
  report = _report(config, workdir, rows, representatives())
  return {"responses": len(rows), "criteria": results["embed"]["criteria"],
          "clusters": results["cluster"]["k"],
          "representatives": results["cluster"]["representatives"],
          "parse_failures": {stage: results[stage]["parse_failures"]
                             for stage in ("criteria", "rubrics", "classify", "predict")
                             if stage in results},
          "prediction": ({k: v for k, v in results["predict"].items() if k != "parse_failures"}
                         if "predict" in results else
                         "not run: the rows carry no 'correct' field"),
          "control": results.get("control", "not run: needs rows with 'correct' and a model "
                                            "under test (config.control.backend)"),
          "merge": results.get("merge", "not run: config.merge.first and .second name the two "
                                        "fine-tunes to interpolate"),
          "pattern_a_share": report["pattern_a_share"], "comparison": report["comparison"]}


def _read_judgements(path: str) -> dict:
  from llmjax.evals.judging import read_judgements
  return read_judgements(path)


def _report(config, workdir: str, rows: list[dict], criteria) -> dict:
  matrix = np.load(os.path.join(workdir, "classify", "matrix.npy"))
  models = [r["model"] for r in rows]
  shares = pattern_shares(matrix, models)
  names = sorted(set(models))
  pair = list(config.compare) if config.compare else names[:2]
  comparison = None
  if len(pair) == 2 and all(m in names for m in pair):
    comparison = compare_models(matrix, models, pair[0], pair[1])
  elif config.compare:
    raise UserError(f"config.compare = {list(config.compare)}: expected two of the models in "
                    f"the data {names}")
  report = {"criteria": [dataclasses.asdict(c) for c in criteria],
            "matrix": {"rows": [r["id"] for r in rows], "values": matrix.tolist()},
            "pattern_a_share": shares, "comparison": comparison, "compared": pair}
  runio.write_json(os.path.join(workdir, "report.json"), report)
  if runio.is_writer():
    lines = ["# CoT Encyclopedia: strategies by model", "",
             "Share of pattern A among determined responses:", "",
             "| criterion (A vs. B) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for k, c in enumerate(criteria):
      cells = [("-" if shares[m][k] is None else f"{shares[m][k]:.2f}") for m in names]
      lines.append(f"| {c.text} | " + " | ".join(cells) + " |")
    if comparison:
      lines += ["", f"{pair[0]} against {pair[1]}:", "",
                "| criterion | chi2 | p | Cohen's d |", "|---|---|---|---|"]
      for k, row in enumerate(comparison):
        def fmt(x):
          return "-" if x is None else f"{x:.3g}"
        lines.append(f"| {criteria[k].name} | {fmt(row['chi2'])} | {fmt(row['p_value'])} | "
                     f"{fmt(row['cohens_d'])} |")
    runio.atomic_write_text(os.path.join(workdir, "report.md"), "\n".join(lines) + "\n")
  return report
