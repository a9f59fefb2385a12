"""Latent reasoning by sentence-embedding prediction (experiment `sentence_lm`; Hwang, Jeon et
al. 2025), as a resumable pipeline (llmjax.pipeline) under the workdir:

  data      the task's problems (data.py) and, with no tokenizer
            given, a sentencepiece model trained on their text
  cot       the token LM fine-tuned on question -> steps -> "### answer" (from config.init: a
            fresh model, an llmjax run or hf:DIR)
  no_cot    the same start fine-tuned on question -> "### answer" (the no-CoT baseline)
  semantic  the autoencoder (shared weights, from the CoT model): z = the last hidden state of
            BOS + sentence; the decoder reconstructs the sentence from [z]
  ctx_b     contextual embeddings: z of the question and the steps before sentence t; the
            decoder produces sentence t from [z] (prefix dropout)
  ctx_c     CTX-B plus weight x InfoNCE(z, the frozen semantic embedding of sentence t)
  latent_<teacher>  for each teacher in config.latent.teachers: the CoT model with input and
            output projections reads the question and the teacher's embedding of each step, and
            predicts the next one (frozen decoder's cross-entropy + InfoNCE + stop head)
  evaluate  reconstruction exact match of each autoencoder; accuracy and FLOPs per problem of
            no-CoT, CoT, and discretized and continuous inference of each latent model; the
            continuous accuracy under Gaussian noise on the fed-back embeddings; SentenceLens
            of one problem; results.json and table.md
Every training stage can start from a checkpoint instead (`config.<stage>.init`: an llmjax run,
RUN/checkpoints/STEP or hf:DIR; GPT-2 and Llama families through llmjax.interop). With
`config.lens_problem` >= 0 the run ends by printing SentenceLens for that test problem: each
layer's decoded thought at each latent step.
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from llmjax import runio
from llmjax.data.tokenizers import train_sentencepiece
from llmjax.errors import UserError
from llmjax.experiments.pair_training import stage_config
from llmjax.experiments.sentence_lm import data as data_lib
from llmjax.experiments.sentence_lm.inference import LatentRunner
from llmjax.experiments.sentence_lm.model import LatentModel
from llmjax.experiments.sentence_lm.training import autoencoder_objective, latent_objective
from llmjax.experiments.sft import train_sft
from llmjax.experiments.starting_point import StartingPoint, record_model, starting_point
from llmjax.infer import Generator, SamplingParams, generate_text
from llmjax.models import Decoder
from llmjax.models.flops import generation_flops
from llmjax.models.layout import params_layout
from llmjax.parallel import Parallel
from llmjax.pipeline import Pipeline, Stage
from llmjax.train.trainer import Trainer
from llmjax.weights import RunCheckpoint, load_model

TEACHERS = ("semantic", "ctx_b", "ctx_c")


class _Run:
  """What every stage shares: config, task, tokenizer, model config, mesh."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    self.parallel = Parallel.from_config(config.mesh, config.sharding_rules)
    self.task = data_lib.build_task(config)
    self._start = None
    self._stop_ids = None
    self._tokenized: dict[str, list[data_lib.Tokenized]] = {}
    self._runners: dict[str, LatentRunner] = {}

  @property
  def tokenizer_spec(self) -> str:
    if self.config.data.tokenizer:
      return self.config.data.tokenizer
    if self.config.init:
      return ""  # the checkpoint's own
    return os.path.join(self.workdir, "data", "tokenizer.model")

  @property
  def start(self) -> StartingPoint:
    if self._start is None:
      config = stage_config(self.config, data={"tokenizer": self.tokenizer_spec})
      self._start = starting_point(config, self.parallel)
    return self._start

  @property
  def tokenizer(self):
    return self.start.tokenizer

  @property
  def model_config(self):
    return self.start.model_config

  def tokenized(self, split: str) -> list[data_lib.Tokenized]:
    """The split's problems as token ids (tokenized once per run)."""
    if split not in self._tokenized:
      self._tokenized[split] = data_lib.tokenize(self.task.splits[split], self.tokenizer)
    return self._tokenized[split]

  def stage_train_config(self, section: str):
    return stage_config(self.config, train=dict(self.config[section].train),
                        optim=dict(self.config[section].optim),
                        data={"tokenizer": self.tokenizer_spec})

  def init_spec(self, section: str, default_stage: str) -> str:
    return self.config[section].init or os.path.join(self.workdir, default_stage)


def run(config, workdir: str) -> dict:
  cfg = config
  if cfg.require_init and not cfg.init:
    raise UserError("this preset starts from a pretrained checkpoint: set --config.init=hf:DIR "
                    "(a local Hugging Face directory, e.g. GPT-2) or an llmjax run")
  r = _Run(config, workdir)
  teachers = list(cfg.latent.teachers)
  unknown = [t for t in teachers if t not in TEACHERS]
  if unknown:
    raise UserError(f"latent.teachers: {unknown[0]!r} is not one of {TEACHERS}")
  extra = [a for a in cfg.autoencoders if a not in TEACHERS]
  if extra:
    raise UserError(f"autoencoders: {extra[0]!r} is not one of {TEACHERS}")
  tests = len(r.task.splits["test"])
  if not -1 <= cfg.lens_problem < tests:  # checked now, not after hours of training
    raise UserError(f"lens_problem = {cfg.lens_problem}: the test split has {tests} problems "
                    "(-1: no lens)")
  needed = set(teachers) | set(cfg.autoencoders)
  if "ctx_c" in needed:
    needed.add("semantic")
  stages = [Stage("data", lambda ctx: _data(r, ctx), _stage_cfg(cfg, "task", "data"),
                  outputs=("problems.json",)),
            Stage("cot", lambda ctx: _sft(r, ctx, "cot", answer_only=False),
                  _stage_cfg(cfg, "cot", "model", "init", "lengths"))]
  if cfg.no_cot.enabled:
    stages.append(Stage("no_cot", lambda ctx: _sft(r, ctx, "no_cot", answer_only=True),
                        _stage_cfg(cfg, "no_cot", "model", "init", "lengths")))
  for teacher in TEACHERS:
    if teacher in needed:
      stages.append(Stage(teacher, lambda ctx, t=teacher: _autoencoder(r, ctx, t),
                          _stage_cfg(cfg, teacher, "lengths")))
  for teacher in teachers:
    stages.append(Stage(f"latent_{teacher}", lambda ctx, t=teacher: _latent(r, ctx, t),
                        _stage_cfg(cfg, "latent", "lengths")))
  stages.append(Stage("evaluate", lambda ctx: _evaluate(r, ctx, teachers, sorted(
      needed, key=TEACHERS.index)),
                      _stage_cfg(cfg, "inference"), outputs=("results.json", "table.md")))
  results = Pipeline(workdir, stages).run()
  summary = dict(results["evaluate"])
  if cfg.lens_problem >= 0:
    for teacher in teachers:
      print(format_lens(sentence_lens(r, teacher, cfg.lens_problem)))
  return summary


def _stage_cfg(config, *sections) -> dict:
  return {name: (config[name].to_dict() if hasattr(config[name], "to_dict") else config[name])
          for name in sections}


# ---- stages -------------------------------------------------------------------------------

def _data(r: _Run, ctx) -> dict:
  if not r.config.data.tokenizer and not r.config.init:
    corpus = ctx.path("corpus.txt")
    with open(corpus, "w") as f:
      for text in r.task.corpus_text():
        f.write(text.replace("\n", " ") + "\n")
    try:
      train_sentencepiece([corpus], ctx.path("tokenizer"), r.config.data.vocab_size,
                          r.config.data.tokenizer_type)
    except RuntimeError as e:  # sentencepiece's complaint, e.g. a vocabulary too large
      raise UserError(f"data.vocab_size = {r.config.data.vocab_size}: sentencepiece training "
                      f"on the task's text failed: {str(e).splitlines()[0]}") from None
    os.remove(corpus)
  counts = {split: len(rows) for split, rows in r.task.splits.items()}
  runio.write_json(ctx.path("problems.json"), {"task": r.task.name, "counts": counts,
                                               "test_first": r.task.splits["test"][:3]})
  return {"task": r.task.name, **counts}


def _sft(r: _Run, ctx, section: str, answer_only: bool) -> dict:
  eos = r.tokenizer.eos_id
  train = data_lib.cot_examples(r.tokenized("train"), eos, answer_only, "train ")
  dev = data_lib.cot_examples(r.tokenized("dev"), eos, answer_only, "dev ")
  config = stage_config(r.stage_train_config(section), data={"loss_on_prompt": False})
  longest = max(len(p) + len(c) for p, c in zip(train.prompts, train.completions[0]))
  if longest > config.train.seq_len + 1:
    raise UserError(f"{section}.train.seq_len = {config.train.seq_len}: the longest training "
                    f"example has {longest} tokens; raise it to at least {longest - 1}")
  start = r.start
  if r.config[section].init:  # this stage's own starting checkpoint
    own = stage_config(config)
    own.init = r.config[section].init
    start = starting_point(own, r.parallel)
    if start.model_config != r.model_config:
      raise UserError(f"{section}.init = {r.config[section].init!r}: its model differs from "
                      "config.init's, which the other stages build on")
  record_model(config, ctx.directory, start)
  result = train_sft(config, ctx.directory, start, r.parallel, train, dev)
  return {"steps": result["step"], "final_eval": result.get("eval", {})}


def _autoencoder_arrays(r: _Run, teacher: str, split: str):
  problems = r.tokenized(split)
  bos, eos, lengths = r.tokenizer.bos_id, r.tokenizer.eos_id, r.config.lengths
  if teacher == "semantic":
    return data_lib.semantic_arrays(problems, bos, eos, lengths)
  arrays = data_lib.contextual_arrays(problems, bos, eos, lengths)
  if teacher == "ctx_b":
    arrays = {k: v for k, v in arrays.items() if not k.startswith("sem_")}
  return arrays


def _autoencoder(r: _Run, ctx, teacher: str) -> dict:
  section = r.config[teacher]
  config = r.stage_train_config(teacher)
  decoder = Decoder(r.model_config)
  weight = section.get("weight", 0.0) if teacher == "ctx_c" else 0.0
  objective = autoencoder_objective(decoder, section.prefix_dropout, weight,
                                    section.get("temperature", 0.1))
  trainer = Trainer(decoder, objective, config.train, config.optim, r.parallel)
  frozen = _decoder_params(r, "semantic") if teacher == "ctx_c" else None
  train = _autoencoder_arrays(r, teacher, "train")
  dev = _autoencoder_arrays(r, teacher, "dev")
  record_model(config, ctx.directory, r.start)
  result = trainer.fit(ctx.directory, data_lib.index_batches(train, config.train.batch_size,
                                                             config.seed),
                       data_lib.fixed_batches(dev, config.train.batch_size,
                                              config.train.eval_batches),
                       seed=config.seed, frozen=frozen,
                       init_from=r.init_spec(teacher, "cot"))
  return {"steps": result["step"], "rows": len(train["enc_tokens"]),
          "final_eval": result.get("eval", {})}


def _decoder_params(r: _Run, stage: str):
  return load_model(os.path.join(r.workdir, stage), r.parallel).params


def teacher_embeddings(r: _Run, teacher: str, params, problems) -> list[np.ndarray]:
  """Each problem's [S_i, D] teacher embeddings of its sentences. Semantic: one encoder pass
  per sentence (BOS + sentence). Contextual: one causal pass per problem over the question and
  all sentences but the answer, read at the last token before each sentence (equal to
  encoding each context alone, at a fraction of the cost)."""
  bos, lengths = r.tokenizer.bos_id, r.config.lengths
  if teacher == "semantic":
    rows = [[bos] + s for p in problems for s in p.sentences]
    reads = [[len(row) - 1] for row in rows]
    width = lengths.sentence
  else:
    rows = [data_lib.context_tokens(p, len(p.sentences) - 1) for p in problems]
    reads = [list(len(p.question) - 1 + np.cumsum([0] + [len(s) for s in p.sentences[:-1]]))
             for p in problems]
    width = lengths.context
  tokens = data_lib.pad_rows(rows, width, "context" if teacher != "semantic" else "sentence")
  counts = np.asarray([len(row) for row in rows], np.int32)
  hidden = _hidden_fn(r.model_config)
  batch = r.config.inference.batch_size
  vectors = []
  for i in range(0, len(rows), batch):
    t, n = tokens[i:i + batch], counts[i:i + batch]
    pad = batch - len(t)
    h = np.asarray(hidden(params, np.pad(t, ((0, pad), (0, 0))),
                          np.pad(n, (0, pad), constant_values=1)))
    vectors += [h[j, reads[i + j]] for j in range(len(t))]
  if teacher == "semantic":
    flat, out, at = np.concatenate(vectors), [], 0
    for p in problems:
      out.append(flat[at:at + len(p.sentences)])
      at += len(p.sentences)
    return out
  return vectors


@functools.lru_cache(maxsize=4)
def _hidden_fn(model_config):
  """The compiled final hidden states of right-padded rows (one compile per model config)."""
  decoder = Decoder(model_config)

  def hidden(params, tokens_BxL, lengths_B):
    segments = (jnp.arange(tokens_BxL.shape[1])[None] < lengths_B[:, None]).astype(jnp.int32)
    return decoder.apply({"params": params}, tokens_BxL, segment_ids_BxL=segments,
                         return_hidden=True)

  return jax.jit(hidden)


def latent_model_and_example(r: _Run):
  cfg, L = r.model_config, r.config.lengths.latent
  model = LatentModel(cfg, r.config.latent.input_dropout)
  example = (jnp.zeros((1, L), jnp.int32), jnp.zeros((1, L, cfg.d_model), jnp.float32),
             jnp.zeros((1, L), jnp.int32))
  return model, example


def _latent(r: _Run, ctx, teacher: str) -> dict:
  config = r.stage_train_config("latent")
  teacher_params = _decoder_params(r, teacher)
  model, example = latent_model_and_example(r)
  objective = latent_objective(model, Decoder(r.model_config), config.latent.nce_weight,
                               config.latent.temperature, config.latent.stop_weight)
  trainer = Trainer(model, objective, config.train, config.optim, r.parallel,
                    example_inputs=example)
  arrays = {}
  for split in ("train", "dev"):
    problems = r.tokenized(split)
    arrays[split] = data_lib.latent_arrays(
        problems, teacher_embeddings(r, teacher, teacher_params, problems),
        r.tokenizer.eos_id, r.config.lengths)
  record_model(config, ctx.directory, r.start)
  result = trainer.fit(ctx.directory, data_lib.index_batches(arrays["train"],
                                                             config.train.batch_size,
                                                             config.seed),
                       data_lib.fixed_batches(arrays["dev"], config.train.batch_size,
                                              config.train.eval_batches),
                       seed=config.seed, frozen=teacher_params,
                       init_from=r.init_spec("latent", "cot"))
  return {"steps": result["step"], "final_eval": result.get("eval", {})}


def latent_params(r: _Run, teacher: str):
  model, example = latent_model_and_example(r)
  layout = params_layout(model, r.parallel, *example)
  return RunCheckpoint.parse(os.path.join(r.workdir, f"latent_{teacher}")).restore_params(
      layout)[0]


def stop_ids(r: _Run) -> set[int]:
  """The first token of every training answer sentence: the "###" mark as the tokenizer
  writes it. A tokenizer that begins some reasoning step with one of them would stop rollouts
  at that step: refused."""
  if r._stop_ids is None:
    problems = r.tokenized("train")
    answers = {p.sentences[-1][0] for p in problems}
    steps = {s[0] for p in problems for s in p.sentences[:-1] if s}
    shared = sorted(answers & steps)
    if shared and r.config.inference.stop == "decoder":
      raise UserError(f"the tokenizer begins both answer sentences and reasoning steps with "
                      f"token {shared[0]} ({r.tokenizer.decode([shared[0]])!r}): the '###' "
                      "stop rule needs a first token of its own; use inference.stop="
                      "'classifier'")
    r._stop_ids = answers
  return r._stop_ids


def latent_runner(r: _Run, teacher: str) -> LatentRunner:
  """The rollouts of `teacher`'s latent model (built once per run: its compiled programs are
  shared by the evaluation, the reconstruction check and the lens)."""
  if teacher not in r._runners:
    cfg = r.config
    r._runners[teacher] = LatentRunner(
        r.model_config, r.tokenizer, stop_ids(r), teacher, cfg.lengths.sentences,
        cfg.lengths.sentence, cfg.lengths.context, cfg.inference.batch_size, cfg.inference.stop)
  return r._runners[teacher]


# ---- evaluation ---------------------------------------------------------------------------

def _evaluate(r: _Run, ctx, teachers: list[str], trained: list[str]) -> dict:
  cfg = r.config.inference
  rows = r.task.splits["test"][:cfg.problems or None]
  problems = r.tokenized("test")[:len(rows)]
  say = (lambda m: print(m, file=sys.stderr)) if runio.is_writer() else (lambda m: None)
  methods, reconstruction, noise = {}, {}, {}
  for name in ("no_cot", "cot") if r.config.no_cot.enabled else ("cot",):
    methods[name] = _token_answers(r, name, rows, problems)
    say(f"{name}: accuracy {methods[name]['accuracy']:.3f}")
  cot_gflops = methods["cot"]["gflops"]
  decode_steps = r.task.answer_is_steps
  for teacher in trained:
    reconstruction[teacher] = _reconstruction(r, teacher, problems)
  for teacher in teachers:
    runner = latent_runner(r, teacher)
    latent, teacher_params = latent_params(r, teacher), _decoder_params(r, teacher)
    for mode in ("discretized", "continuous"):
      rollouts = runner.rollout(latent, teacher_params, problems, mode,
                                decode_steps=decode_steps)
      methods[f"{teacher}_{mode}"] = _score(r, rows, rollouts)
      say(f"{teacher} {mode}: accuracy {methods[f'{teacher}_{mode}']['accuracy']:.3f}")
    noise[teacher] = {}
    for sigma in cfg.noise:
      rollouts = runner.rollout(latent, teacher_params, problems, "continuous", noise=sigma,
                                seed=r.config.seed, decode_steps=decode_steps)
      noise[teacher][str(sigma)] = _score(r, rows, rollouts)["accuracy"]
  for method in methods.values():
    method["flops_vs_cot"] = method["gflops"] / cot_gflops if cot_gflops else None
  lens = None
  if teachers:
    lens = sentence_lens(r, teachers[0], 0)
    with open(ctx.path("lens.txt"), "w") as f:
      f.write(format_lens(lens) + "\n")
  results = {"task": r.task.name, "test_problems": len(rows), "methods": methods,
             "reconstruction_exact_match": reconstruction, "noise_accuracy": noise,
             "stop": cfg.stop}
  runio.write_json(ctx.path("results.json"), results)
  with runio.atomic_output(ctx.path("table.md")) as tmp, open(tmp, "w") as f:
    f.write(results_table(results))
  return results


def _score(r: _Run, rows, rollouts) -> dict:
  correct = [r.task.is_correct(row, ro.text) for row, ro in zip(rows, rollouts)]
  return {"accuracy": float(np.mean(correct)),
          "gflops": float(np.mean([ro.flops for ro in rollouts])) / 1e9,
          "stopped": float(np.mean([ro.stopped for ro in rollouts])),
          "sentences": float(np.mean([len(ro.sentences) for ro in rollouts]))}


def _token_answers(r: _Run, stage: str, rows, problems) -> dict:
  cfg = r.config.inference
  params = load_model(os.path.join(r.workdir, stage), r.parallel).params
  generator = Generator(r.model_config, r.parallel, batch_size=cfg.batch_size,
                        length_bucket=16, pad_id=r.tokenizer.pad_id)
  sampling = SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens)
  prompts = [p.question for p in problems]
  results, _ = generate_text(generator, params, r.tokenizer, prompts, sampling,
                             seed=r.config.seed, stop_token_ids=r.tokenizer.stop_ids)
  texts = [c[0].text for c in results]
  flops = [generation_flops(r.model_config, len(p), len(c[0].tokens))
           for p, c in zip(prompts, results)]
  correct = [r.task.is_correct(row, text) for row, text in zip(rows, texts)]
  return {"accuracy": float(np.mean(correct)), "gflops": float(np.mean(flops)) / 1e9,
          "generated_tokens": float(np.mean([len(c[0].tokens) for c in results])),
          "example": texts[0]}


def _reconstruction(r: _Run, teacher: str, problems) -> float:
  """Share of test sentences the autoencoder's greedy decoding of their embedding (semantic:
  of the sentence; contextual: of its context) reproduces exactly."""
  params = _decoder_params(r, teacher)
  embeddings = np.concatenate(teacher_embeddings(r, teacher, params, problems))
  targets = [s for p in problems for s in p.sentences]
  runner = latent_runner(r, teacher)
  batch = r.config.inference.batch_size
  exact = 0
  for i in range(0, len(targets), batch):
    z = embeddings[i:i + batch]
    pad = batch - len(z)
    tokens, lengths = runner.prefix(params, jnp.asarray(np.pad(z, ((0, pad), (0, 0)))))
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    for j, target in enumerate(targets[i:i + batch]):
      exact += tokens[j, :lengths[j]].tolist() == target
  return exact / max(len(targets), 1)


# ---- SentenceLens -------------------------------------------------------------------------

def sentence_lens(r: _Run, teacher: str, index: int, max_tokens: int = 50) -> dict:
  """For test problem `index`, the continuous rollout's sentences and, at each latent step,
  each layer's decoded thought: the layer's output at the predicting position (the last layer
  through the final norm, as the model reads it) through the output projection, greedily
  decoded by the teacher's decoder (at most `max_tokens` tokens)."""
  from llmjax.experiments.sentence_lm.lens import layer_thoughts
  problems = r.tokenized("test")
  if not 0 <= index < len(problems):
    raise UserError(f"lens_problem = {index}: the test split has {len(problems)} problems")
  problem = problems[index]
  runner = latent_runner(r, teacher)
  latent, teacher_params = latent_params(r, teacher), _decoder_params(r, teacher)
  rollout = runner.rollout(latent, teacher_params, [problem], "continuous")[0]
  thoughts = layer_thoughts(runner, latent, teacher_params, problem, rollout.embeddings,
                            max_tokens)
  return {"teacher": teacher, "problem": index,
          "question": r.task.splits["test"][index]["question"],
          "sentences": rollout.sentences, "thoughts": thoughts}


def format_lens(lens: dict) -> str:
  lines = [f"SentenceLens ({lens['teacher']} latent model), test problem {lens['problem']}",
           f"question: {lens['question']}"]
  for step, (sentence, layers) in enumerate(zip(lens["sentences"], lens["thoughts"]), 1):
    lines.append(f"step {step}: {sentence}")
    for layer, thought in enumerate(layers):
      lines.append(f"  layer {layer}: {thought}")
  return "\n".join(lines)


def results_table(results: dict) -> str:
  """The markdown table of accuracy and FLOPs per method, reconstruction and noise."""
  lines = [f"# Sentence-space reasoning: {results['task']}, {results['test_problems']} test "
           "problems", "", "| method | accuracy | GFLOPs / problem | FLOPs vs CoT | sentences |",
           "|---|---|---|---|---|"]
  for name, m in results["methods"].items():
    ratio = f"{m['flops_vs_cot']:.2f}" if m.get("flops_vs_cot") is not None else "-"
    lines.append(f"| {name} | {m['accuracy']:.3f} | {m['gflops']:.4f} | {ratio} | "
                 f"{m.get('sentences', '-')} |")
  lines += ["", "| autoencoder | reconstruction exact match |", "|---|---|"]
  lines += [f"| {k} | {v:.3f} |" for k, v in results["reconstruction_exact_match"].items()]
  for teacher, sweep in results["noise_accuracy"].items():
    lines += ["", f"Continuous accuracy with Gaussian noise (sigma x RMS) on {teacher}'s "
              "fed-back embeddings:", "", "| sigma | accuracy |", "|---|---|"]
    lines += [f"| {s} | {a:.3f} |" for s, a in sweep.items()]
  return "\n".join(lines) + "\n"
