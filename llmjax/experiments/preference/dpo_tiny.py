"""The `dpo` tiny preset: SFT -> sample -> verified pairs -> DPO -> task accuracy, as one
resumable pipeline (llmjax.pipeline) on the digit-sorting task (sorting.py).

  1. sft       SFT a fresh byte-level model on `task.sft_examples` prompts; those holding the
               `task.trap` digit have a wrong answer (the trap digit moved one place) in a
               `task.noise` share, more than half: the policy learns the mistake as its
               greedy answer.
  2. pairs     Sample `task.samples` completions of the SFT policy (temperature 1) for held-out
               prompts; a pair's chosen answer is a sample verified right (else the correct
               answer), its rejected one a sample verified wrong; prompts whose samples were
               all right give no pair (counted).
  3. dpo       Preference-train from the SFT params with them as the reference.
  4. evaluate  Greedy accuracy of the SFT and the DPO policy on test prompts, on all of them
               and on those holding the trap digit.
Params pass from stage to stage in memory; a rerun in a new process reads them back from the
stage's checkpoints.
"""

import os

from llmjax.data.examples import read_examples
from llmjax.errors import UserError
from llmjax.experiments.pair_training import summarise, train_dpo
from llmjax.experiments.pipeline_policies import PipelinePolicies, write_rows
from llmjax.experiments.preference import sorting
from llmjax.experiments.sft import train_sft
from llmjax.experiments.starting_point import StartingPoint, record_model
from llmjax.infer import SamplingParams
from llmjax.pipeline import Pipeline, Stage


def run(config, workdir: str) -> dict:
  if config.task.kind != "sorting":
    raise UserError(f"task.kind = {config.task.kind!r}: expected 'sorting' or '' (pair files)")
  task, seed = config.task, config.seed
  policies = PipelinePolicies(config, workdir, task.sample_batch)
  start, tokenizer, parallel = policies.start, policies.tokenizer, policies.parallel
  sft_config, params_of = policies.sft_config, policies.params_of
  length = config.train.seq_len + 1

  def complete(params, prompts, sampling, sample_seed=0):
    return policies.complete(params, prompts, sampling, sample_seed)[0]

  # Every split's prompts are distinct from every other's.
  splits = sorting.disjoint_prompts(
      {"sft": task.sft_examples, "dev": 256, "train_pairs": task.pair_prompts,
       "eval_pairs": task.eval_prompts, "test": task.test_prompts}, task.digits, seed)

  def sft(ctx):
    write_rows(ctx.path("train.jsonl"), sorting.noisy_examples(
        splits["sft"], task.noise, task.trap, seed))
    write_rows(ctx.path("dev.jsonl"), sorting.noisy_examples(
        splits["dev"], task.noise, task.trap, seed + 1))
    train = read_examples(ctx.path("train.jsonl"), tokenizer, length, ("completion",))
    dev = read_examples(ctx.path("dev.jsonl"), tokenizer, length, ("completion",))
    record_model(sft_config, ctx.directory, start)
    result = train_sft(sft_config, ctx.directory, start, parallel, train, dev)
    ctx.keep("params", result["state"].params)
    return {"steps": result["step"]}

  def pairs(ctx):
    params = params_of(ctx, "sft")
    sampling = SamplingParams(temperature=1.0, n=task.samples, max_new_tokens=task.digits + 1)
    counts = {}
    for name, offset in (("train", 2), ("eval", 3)):
      prompts = splits[f"{name}_pairs"]
      rows, all_right = [], 0
      for prompt, samples in zip(prompts, complete(params, prompts, sampling, seed + offset)):
        right = [s for s in samples if sorting.is_correct(prompt, s)]
        wrong = [s for s in samples if not sorting.is_correct(prompt, s)]
        if not wrong:
          all_right += 1
          continue
        rows.append({"prompt": prompt, "chosen": right[0] if right else sorting.answer(prompt),
                     "rejected": wrong[0]})
      write_rows(ctx.path(f"{name}_pairs.jsonl"), rows)
      counts.update({f"{name}_pairs": len(rows), f"{name}_prompts_all_right": all_right})
    return counts

  def dpo(ctx):
    sft_start = StartingPoint(start.model_config, params_of(ctx, "sft"), tokenizer, "sft stage")
    train = read_examples(os.path.join(workdir, "pairs", "train_pairs.jsonl"), tokenizer,
                          length, ("chosen", "rejected"))
    evaluation = read_examples(os.path.join(workdir, "pairs", "eval_pairs.jsonl"), tokenizer,
                               length, ("chosen", "rejected"))
    record_model(config, ctx.directory, start)
    result = train_dpo(config, ctx.directory, sft_start, parallel, train, evaluation)
    ctx.keep("params", result["state"].params)
    return summarise(ctx.directory, result, train, evaluation)

  def evaluate(ctx):
    prompts = splits["test"]
    greedy = SamplingParams(max_new_tokens=task.digits + 1)
    trap = [sorting.has_trap(p, task.trap) for p in prompts]
    accuracy = {"test_prompts": len(prompts), "test_prompts_with_trap": sum(trap)}
    for stage in ("sft", "dpo"):
      answers = complete(params_of(ctx, stage), prompts, greedy)
      right = [sorting.is_correct(p, a[0]) for p, a in zip(prompts, answers)]
      accuracy[f"{stage}_task_accuracy"] = sum(right) / len(prompts)
      accuracy[f"{stage}_trap_accuracy"] = sum(r for r, t in zip(right, trap) if t) / sum(trap)
      accuracy[f"{stage}_other_accuracy"] = (sum(r for r, t in zip(right, trap) if not t)
                                             / (len(prompts) - sum(trap)))
    return accuracy

  settings = {"task": task.to_dict(), "seed": seed, "model": config.model.to_dict()}
  results = Pipeline(workdir, [
      Stage("sft", sft, {**settings, "sft": config.sft.to_dict()}, ("train.jsonl",)),
      Stage("pairs", pairs, settings, ("train_pairs.jsonl", "eval_pairs.jsonl")),
      Stage("dpo", dpo, {**settings, "dpo": config.dpo.to_dict(),
                         "train": config.train.to_dict(), "optim": config.optim.to_dict()}),
      Stage("evaluate", evaluate, settings),
  ]).run()
  summary = {"task": "sorting", "digits": task.digits, "noise": task.noise, "trap": task.trap,
             **results["pairs"], **{k: v for k, v in results["dpo"].items()},
             **results["evaluate"]}
  return summary
