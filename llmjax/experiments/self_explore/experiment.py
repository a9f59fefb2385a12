"""Self-Explore (Hwang et al. 2024, "Self-Explore to Avoid the Pit"): step-level preference
training from the model's own first wrong step (experiment `self_explore`).

A resumable pipeline (llmjax.pipeline), one stage per step of the method, each with its files
under WORKDIR/<stage>/:

  1. sft           SFT a generator on `question + "\\n" + rationale` (GSM8K's `#### N` rewritten
                   as `The answer is N`).
  2. sample        N rationales per training problem from the SFT model (temperature 0.7,
                   top-p 1); correct when the extracted answer equals the gold one, both
                   normalised.
  3. rft           RFT data: per problem the gold rationale and the correct samples whose
                   calculator annotations check, one per equation signature, at most 8; RFT is
                   the SFT recipe on it, from the base model.
  4. pairs         outcome pairs: each correct sample with the unused incorrect one farthest
                   from it in edit distance (llmjax.experiments.self_explore.data).
  5. explore       the RFT model explores each pair's rejected rationale: from the prefix
                   ending at step s it samples k completions; the first s with none correct is
                   the first pit. Step-level pairs follow from the pits. Written problem by
                   problem in chunks: a killed run resumes where it stopped.
  6. dpo_outcome   DPO from the RFT model (the reference) on the outcome pairs.
  7. self_explore  DPO from the RFT model (the reference) on the step-level pairs.
  8. evaluate      greedy accuracy of the SFT, RFT, outcome-DPO and Self-Explore models on
                   held-out problems.

Problems come from `task.kind`: `word_problems` (procedural, word_problems.py) or
`gsm8k` (`task.path`/{train,test}.jsonl).
"""

import json
import os
import time

import numpy as np

from llmjax import runio
from llmjax.data.examples import read_examples
from llmjax.data.readers import read_gsm8k, read_jsonl
from llmjax.errors import UserError
from llmjax.experiments.pair_training import summarise, train_dpo
from llmjax.experiments.pipeline_policies import PipelinePolicies, write_rows, write_split
from llmjax.experiments.self_explore import word_problems
from llmjax.experiments.self_explore import data as method
from llmjax.experiments.starting_point import StartingPoint, record_model
from llmjax.infer import SamplingParams
from llmjax.pipeline import Pipeline, Stage
from llmjax.tasks import math_answers

KINDS = ("word_problems", "gsm8k")


def load_problems(task) -> dict[str, list[dict]]:
  """{"train", "test"}: [{"id", "question", "rationale", "gold"}] for `task.kind`."""
  if task.kind == "word_problems":
    drawn = word_problems.make_problems(task.train_problems + task.test_problems, task.seed,
                                        task.min_ops, task.max_ops, task.swap_operands)
    splits = {"train": drawn[:task.train_problems], "test": drawn[task.train_problems:]}
  elif task.kind == "gsm8k":
    splits = {name: read_gsm8k(os.path.join(task.path, f"{name}.jsonl"))
              for name in ("train", "test")}
    if task.train_problems:
      splits["train"] = splits["train"][:task.train_problems]
    if task.test_problems:
      splits["test"] = splits["test"][:task.test_problems]
  else:
    raise UserError(f"task.kind = {task.kind!r}: expected one of {KINDS}")
  return {name: [{"id": f"{name}-{i}", "question": p["question"], "rationale": p["rationale"],
                  "gold": p["gold"]} for i, p in enumerate(problems)]
          for name, problems in splits.items()}


def _prompt(question: str) -> str:
  return question + "\n"


def run(config, workdir: str) -> dict:
  task, seed = config.task, config.seed
  problems = load_problems(task)
  policies = PipelinePolicies(config, workdir, task.sample_batch)
  start, tokenizer, parallel = policies.start, policies.tokenizer, policies.parallel
  params_of, complete = policies.params_of, policies.complete
  length = config.train.seq_len + 1
  sampling = SamplingParams(temperature=task.temperature, top_p=task.top_p, n=task.samples,
                            max_new_tokens=task.max_new_tokens)

  def fine_tune(ctx, rows, name):
    """The SFT recipe from the base model on {prompt, completion} rows."""
    result = policies.fine_tune(ctx, rows, name, task.dev_share, seed)
    return {f"{name}_rows": result["rows"], "steps": result["steps"],
            "truncated": result["truncated"]}

  def sft(ctx):
    rows = [{"prompt": _prompt(p["question"]), "completion": p["rationale"]}
            for p in problems["train"]]
    return fine_tune(ctx, rows, "sft")

  def sample(ctx):
    train = problems["train"]
    texts, seconds = complete(params_of(ctx, "sft"), [_prompt(p["question"]) for p in train],
                              sampling, seed + 1, progress=True)
    rows = [{"id": p["id"], "gold": p["gold"], "samples": samples,
             "correct": [math_answers.is_correct(s, p["gold"]) for s in samples]}
            for p, samples in zip(train, texts)]
    write_rows(ctx.path("samples.jsonl"), rows)
    total = sum(len(r["samples"]) for r in rows)
    return {"problems": len(rows), "samples": total,
            "correct_rate": sum(sum(r["correct"]) for r in rows) / max(total, 1),
            "problems_with_a_correct_sample": sum(any(r["correct"]) for r in rows),
            "samples_per_second": total / max(seconds, 1e-9)}

  def samples_by_id(ctx):
    path = os.path.join(workdir, "sample", "samples.jsonl")
    return {row["id"]: row for row in read_jsonl(path)}

  def rft(ctx):
    sampled = samples_by_id(ctx)
    rows = []
    for p in problems["train"]:
      kept = method.rft_rationales([p["rationale"], *sampled[p["id"]]["samples"]], p["gold"],
                                   task.rft_per_problem)
      rows += [{"prompt": _prompt(p["question"]), "completion": r} for r in kept]
    return fine_tune(ctx, rows, "rft")

  def pairs(ctx):
    sampled = samples_by_id(ctx)
    rows = []
    for p in problems["train"]:
      for chosen, rejected in method.outcome_pairs(sampled[p["id"]]["samples"], p["gold"]):
        rows.append({"id": p["id"], "prompt": _prompt(p["question"]), "chosen": chosen,
                     "rejected": rejected})
    if len(rows) < 2:
      raise UserError(f"{len(rows)} outcome pairs from {len(problems['train'])} problems: too "
                      "few to train on; sample more (task.samples) or train the SFT model less")
    return {"outcome_pairs": len(rows),
            "outcome_train_pairs": write_split(ctx, rows, "outcome", task.dev_share,
                                               seed + 2),
            "problems_with_pairs": len({r["id"] for r in rows})}

  def explore(ctx):
    questions = {p["id"]: p for p in problems["train"]}
    pairs_path = os.path.join(workdir, "pairs", "outcome_train.jsonl")
    todo = list(read_jsonl(pairs_path))
    if task.explore_pairs:
      todo = todo[:task.explore_pairs]  # a random subset: the pairs file is shuffled
    explored_path = ctx.path("explored.jsonl")
    done = runio.read_complete_jsonl(explored_path) if ctx.resumed else []
    total, resumed_at = len(todo), len(done)
    todo = todo[resumed_at:]  # chunks are appended in order
    params = params_of(ctx, "rft")
    k_sampling = SamplingParams(temperature=task.temperature, top_p=task.top_p,
                                n=task.explore_k, max_new_tokens=task.max_new_tokens)
    started, sampled = time.perf_counter(), 0
    bar = runio.progress_bar(total, len(done), task.progress, "explore")
    for chunk_start in range(0, len(todo), task.explore_chunk):
      chunk = todo[chunk_start:chunk_start + task.explore_chunk]
      items = [method.Exploration(problem=r["id"], question=questions[r["id"]]["question"],
                                  gold=questions[r["id"]]["gold"], chosen=r["chosen"],
                                  steps=method.steps_of(r["rejected"])) for r in chunk]
      rounds = 0

      def complete_k(prompts, k):
        nonlocal rounds, sampled
        rounds += 1
        # Seeded by the pair's absolute position: a resumed run draws what an uninterrupted
        # one would have.
        texts, _ = complete(params, prompts, k_sampling,
                            seed + 7919 * rounds + resumed_at + chunk_start)
        sampled += sum(len(t) for t in texts)
        return texts

      method.explore(items, complete_k, task.explore_k, task.explore_max_steps)
      if runio.is_writer():  # one write per chunk, by one process
        with open(explored_path, "a") as f:
          f.write("".join(json.dumps(vars(item)) + "\n" for item in items))
      done += [vars(item) for item in items]
      bar.update(len(items))
      bar.set_postfix(samples_per_s=f"{sampled / max(time.perf_counter() - started, 1e-9):.1f}")
    bar.close()
    explored = [method.Exploration(**row) for row in done]
    step_rows = method.step_pairs(explored)
    if len(step_rows) < 2:
      raise UserError(f"{len(step_rows)} step-level pairs from {len(explored)} explored "
                      "rationales: too few to train on")
    write_split(ctx, step_rows, "step", task.dev_share, seed + 3)
    return {"explored": len(explored), "pits_by_step": method.pit_histogram(explored),
            "step_pairs": len(step_rows), "explore_samples_per_second":
            sampled / max(time.perf_counter() - started, 1e-9) if sampled else None}

  def preference_stage(stage_dir, train_name, eval_name):
    def stage(ctx):
      rft_start = StartingPoint(start.model_config, params_of(ctx, "rft"), tokenizer,
                                "rft stage")
      train = read_examples(os.path.join(workdir, stage_dir, train_name), tokenizer, length,
                            ("chosen", "rejected"))
      evaluation = read_examples(os.path.join(workdir, stage_dir, eval_name), tokenizer,
                                 length, ("chosen", "rejected"))
      record_model(config, ctx.directory, start)
      result = train_dpo(config, ctx.directory, rft_start, parallel, train, evaluation)
      ctx.keep("params", result["state"].params)
      return summarise(ctx.directory, result, train, evaluation)
    return stage

  def evaluate(ctx):
    test = problems["test"]
    greedy = SamplingParams(max_new_tokens=task.max_new_tokens)
    accuracy = {"test_problems": len(test)}
    for stage in ("sft", "rft", "dpo_outcome", "self_explore"):
      texts, _ = complete(params_of(ctx, stage), [_prompt(p["question"]) for p in test], greedy,
                          0)
      accuracy[f"{stage}_accuracy"] = float(np.mean(
          [math_answers.is_correct(t[0], p["gold"]) for t, p in zip(texts, test)]))
    return accuracy

  settings = {"task": task.to_dict(), "seed": seed, "model": config.model.to_dict(),
              "init": config.init}
  sft_settings = {**settings, "sft": config.sft.to_dict()}
  dpo_settings = {**settings, "dpo": config.dpo.to_dict(), "train": config.train.to_dict(),
                  "optim": config.optim.to_dict()}
  results = Pipeline(workdir, [
      Stage("sft", sft, sft_settings, ("sft_train.jsonl",)),
      Stage("sample", sample, settings, ("samples.jsonl",)),
      Stage("rft", rft, sft_settings, ("rft_train.jsonl",)),
      Stage("pairs", pairs, settings, ("outcome_train.jsonl", "outcome_eval.jsonl")),
      Stage("explore", explore, settings, ("explored.jsonl", "step_train.jsonl")),
      Stage("dpo_outcome", preference_stage("pairs", "outcome_train.jsonl", "outcome_eval.jsonl"),
            dpo_settings),
      Stage("self_explore", preference_stage("explore", "step_train.jsonl", "step_eval.jsonl"),
            dpo_settings),
      Stage("evaluate", evaluate, settings),
  ]).run()
  summary = {"task": task.kind}
  for stage in ("sft", "sample", "rft", "pairs", "explore", "evaluate"):
    summary.update({f"{stage}_{k}" if stage in ("sft", "rft") else k: v
                    for k, v in (results[stage] or {}).items()})
  for stage in ("dpo_outcome", "self_explore"):
    summary.update({f"{stage}_{k}": v for k, v in (results[stage] or {}).items()
                    if k in ("eval_reward_accuracy", "eval_loss", "train_loss")})
  return summary
