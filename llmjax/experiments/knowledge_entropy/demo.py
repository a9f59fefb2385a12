"""The paper's three findings at CPU scale, as one resumable pipeline (mode `demo`):

  1. pretrain       a small byte-level LM, a checkpoint every `pretrain.train.checkpoint_every`
                    steps (all kept), on fictional-knowledge paragraphs that are never injected
                    (every version of the injected items is held out of it);
  2. entropy        the knowledge entropy of every checkpoint on held-out paragraphs: does it
                    fall over pretraining?
  3. inject_early   continual training with knowledge injection from an early checkpoint,
  4. inject_late    and from the last one: acquisition A and forgetting F of each;
  5. resuscitate    the last checkpoint with its low-coefficient memories scaled up (p, q),
                    written as an llmjax run, and its entropy;
  6. inject_resuscitated   the same injection from it: does A rise and F fall? (K_PT and P_PT
                    are the late checkpoint's, before resuscitation, as for the late run)
  7. report         the table (entropy, A, F per start), plots/ and summary.json.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

from llmjax import plotting, runio
from llmjax.data.builders import build_corpus
from llmjax.data.corpora import default_cache_dir
from llmjax.data.tokenizers import load_tokenizer
from llmjax.errors import UserError
from llmjax.experiments.knowledge_entropy import injection as injection_lib
from llmjax.experiments.knowledge_entropy.entropy import resuscitate
from llmjax.experiments.knowledge_entropy.series import expand_checkpoints, measure_series
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.pipeline import Pipeline, Stage
from llmjax.weights import load_model
from llmjax.weights.params_run import save_params_run

STARTS = ("early", "late", "resuscitated")


def _held_out_texts(root: str, injected: dict[str, set[int]], validation_items: int):
  """(train texts, validation texts): every version of every item that is not injected; the
  last `validation_items` such items of once60 are validation."""
  train, validation = [], []
  for name in injection_lib.DATASETS:
    items = injection_lib.read_fictional_knowledge(os.path.join(root, f"{name}.json"))
    free = [i for i in range(len(items)) if i not in injected[name]]
    held = set(free[-validation_items:]) if name == "once60" else set()
    for i in free:
      versions = [items[i]["train_context"], *items[i]["paraphrases"]]
      (validation if i in held else train).extend(str(v) for v in versions)
  return train, validation


def run_demo(config, workdir: str) -> dict:
  demo, inj = config.demo, config.injection
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  tokenizer = load_tokenizer(config.pretrain.data.tokenizer)
  model_config = ModelConfig.from_dict(config.pretrain.model.to_dict())
  plan = injection_lib.plan_injection(inj.root, inj.injections, inj.paraphrased_items,
                                      inj.once_per_injection)
  injected = {name: {item for shown in plan.schedule for d, item, _ in shown if d == name}
              for name in injection_lib.DATASETS}
  train_texts, validation_texts = _held_out_texts(inj.root, injected, demo.validation_items)
  fingerprint = runio.jsonable({"root": os.path.abspath(inj.root), "injected": sorted(
      (k, sorted(v)) for k, v in injected.items()), "validation": demo.validation_items,
      "sizes": [os.path.getsize(os.path.join(inj.root, f"{n}.json"))
                for n in injection_lib.DATASETS]})
  name = "fictional_pretrain_" + hashlib.sha256(
      json.dumps(fingerprint).encode()).hexdigest()[:16]

  def rows(texts, split):
    return lambda: (("", t, f"{split} paragraph {i + 1}") for i, t in enumerate(texts))
  corpus = build_corpus(name, {"train": rows(train_texts, "train"),
                               "validation": rows(validation_texts, "validation")},
                        config.pretrain.data.cache_dir or default_cache_dir())
  entropy_texts = validation_texts[:demo.entropy_documents]

  def pretrain(ctx):
    from llmjax.experiments import lm_pretrain
    sub = config.pretrain.copy_and_resolve_references()
    with sub.unlocked():
      sub.experiment, sub.mesh, sub.sharding_rules = "lm_pretrain", config.mesh, \
          config.sharding_rules
      sub.seed, sub.resume, sub.overwrite = config.seed, True, False
    summary = lm_pretrain.train_on_corpus(sub, ctx.directory, corpus)
    # What load_model reads to rebuild the model of a checkpoint spec under this stage.
    runio.write_json(os.path.join(ctx.directory, "config.json"), {
        "model": dataclasses.asdict(model_config),
        "data": {"tokenizer": config.pretrain.data.tokenizer}})
    return {"steps": summary["steps"], "final_eval_loss": summary.get("final_eval_loss")}

  def entropy(ctx):
    checkpoints = expand_checkpoints(os.path.join(workdir, "pretrain"))
    measured = measure_series(config, ctx.directory, checkpoints, entropy_texts, parallel)
    return {"steps": [r["step"] for r in measured],
            "knowledge_entropy": [r["knowledge_entropy"] for r in measured]}

  def start_spec(which: str) -> str:
    step = demo.early_step if which == "early" else config.pretrain.train.steps
    return os.path.join(workdir, "pretrain", "checkpoints", str(step))

  def inject(which):
    def stage(ctx):
      spec = (os.path.join(workdir, "resuscitate", "run", "checkpoints",
                           str(config.pretrain.train.steps))
              if which == "resuscitated" else start_spec(which))
      if not os.path.isdir(spec):
        raise UserError(f"knowledge injection from {which}: checkpoint {spec} not found "
                        "(demo.early_step must be a multiple of the checkpoint interval)")
      result = injection_lib.continual_training(
          ctx.directory, model_config, tokenizer, corpus, plan, spec, config.train,
          config.optim, inj.interval, inj.rows_per_step, parallel, seed=config.seed,
          placement=inj.placement)
      scores = {k: v for k, v in result.items() if k not in ("first", "last")}
      if which == "resuscitated":
        # K_PT and P_PT are the pretrained (late) model's, as for the late run: the scaled
        # model's own start is not what pretraining left. Against its own start, for reference.
        scores = {**injection_lib.acquisition_and_forgetting(ctx.results["inject_late"]["first"],
                                                             result["last"]),
                  "against_own_start": scores}
      return {**scores, "first": result["first"], "last": result["last"], "start": spec}
    return stage

  def resuscitate_stage(ctx):
    late = start_spec("late")
    loaded = load_model(late, parallel)
    row = next(r for r in runio.read_metrics(os.path.join(workdir, "entropy"))
               if r["checkpoint"] == late)
    coefficients = np.load(os.path.join(workdir, "entropy", row["coefficients"]))
    params, counts = resuscitate(loaded.params, coefficients["mean_coefficients"],
                                 demo.resuscitation_quantile, demo.resuscitation_multiplier)
    spec = save_params_run(ctx.path("run"), params, loaded.config,
                           config.pretrain.train.steps, config.pretrain.data.tokenizer)
    measured = measure_series(config, ctx.path("entropy"), [(spec, None)], entropy_texts,
                              parallel)
    return {"scaled_memories": counts.tolist(),
            "knowledge_entropy": measured[-1]["knowledge_entropy"]}

  def report(ctx):
    results = ctx.results
    series = results["entropy"]
    by_step = dict(zip(series["steps"], series["knowledge_entropy"]))
    table = {}
    for which in STARTS:
      r = results[f"inject_{which}"]
      entropy_value = (results["resuscitate"]["knowledge_entropy"] if which == "resuscitated"
                       else by_step[demo.early_step if which == "early"
                                    else config.pretrain.train.steps])
      table[which] = {"knowledge_entropy": entropy_value, "acquisition": r["acquisition"],
                      "forgetting": r["forgetting"],
                      **{k: v for k, v in r.items() if k.startswith("acquisition_")}}
    plots = os.path.join(workdir, "plots")
    plotting.plot_curves(os.path.join(plots, "knowledge_entropy.png"),
                         {"knowledge entropy": (series["steps"], series["knowledge_entropy"])},
                         ylabel="knowledge entropy (nats)",
                         title="knowledge entropy over pretraining")
    for which in STARTS:
      injection_lib.plot_retention(os.path.join(plots, f"retention_{which}.png"),
                                   os.path.join(workdir, f"inject_{which}"),
                                   f"probes during injection from the {which} checkpoint")
    entropy_falls = series["knowledge_entropy"][-1] < series["knowledge_entropy"][0]
    return {"table": table, "entropy_falls": bool(entropy_falls),
            "later_acquires_less": table["late"]["acquisition"] < table["early"]["acquisition"],
            "later_forgets_more": table["late"]["forgetting"] > table["early"]["forgetting"],
            "resuscitation_raises_acquisition": (table["resuscitated"]["acquisition"]
                                                 > table["late"]["acquisition"]),
            "resuscitation_lowers_forgetting": (table["resuscitated"]["forgetting"]
                                                < table["late"]["forgetting"])}

  pretrain_settings = {"pretrain": config.pretrain.to_dict(), "corpus": name,
                       "seed": config.seed}
  entropy_settings = {**pretrain_settings, "entropy_documents": demo.entropy_documents,
                      "max_tokens": config.max_tokens, "include_padding": config.include_padding}
  inject_settings = {**entropy_settings, "injection": inj.to_dict(),
                     "train": config.train.to_dict(), "optim": config.optim.to_dict(),
                     "early_step": demo.early_step}
  resuscitate_settings = {**entropy_settings, "quantile": demo.resuscitation_quantile,
                          "multiplier": demo.resuscitation_multiplier}
  results = Pipeline(workdir, [
      Stage("pretrain", pretrain, pretrain_settings, ("checkpoints",)),
      Stage("entropy", entropy, entropy_settings, ("metrics.jsonl",)),
      Stage("inject_early", inject("early"), inject_settings),
      Stage("inject_late", inject("late"), inject_settings),
      Stage("resuscitate", resuscitate_stage, resuscitate_settings, ("run",)),
      Stage("inject_resuscitated", inject("resuscitated"),
            {**inject_settings, **resuscitate_settings}),
      Stage("report", report, inject_settings),
  ]).run()
  report_result = results["report"]
  return {"table": report_result["table"],
          **{k: v for k, v in report_result.items() if k != "table"},
          "entropy_steps": results["entropy"]["steps"],
          "knowledge_entropy": results["entropy"]["knowledge_entropy"],
          "pretrain_steps": results["pretrain"]["steps"]}
