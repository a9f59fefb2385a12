"""The problems of the sentence-space experiment, as sentences and as token arrays.

A problem is a question, reasoning steps (one sentence each) and an answer sentence that begins
with "###" (the stop mark: a decoder whose first token is "###" is writing the answer):
  prosqa       procedural "is every X a Y or a Z?" with the proof path (prosqa.py):
               the facts stated in each question ('stated', ProsQA's form) or a fixed ontology
               learned from the training problems ('ontology')
  blocksworld  procedural block-stacking plans, one move a step, checked by a simulator
               (blocksworld.py)
  gsm8k        ../shared/data/gsm8k ({question, answer} rows): the answer's lines are the steps,
               its "#### N" line the answer "### N"
Token layouts (BOS once, at the start of every sequence a model reads):
  CoT           BOS question sentence_1 ... sentence_S EOS   (the loss on the sentences)
  semantic      encoder BOS sentence; decoder [z] sentence EOS
  contextual    encoder BOS question sentence_1 .. sentence_{t-1}; decoder [z] sentence_t EOS
  latent        BOS question [v_1] ... [v_{S-1}]: position n_q - 1 + t predicts sentence t + 1's
                embedding (v_t is sentence t's teacher embedding)
"""

import dataclasses
import os
import re
from typing import Callable

import numpy as np

from llmjax.data.examples import Examples
from llmjax.data.readers import read_gsm8k
from llmjax.data.tokenizers import Tokenizer
from llmjax.errors import UserError
from llmjax.experiments.sentence_lm import blocksworld, prosqa
from llmjax.tasks.math_answers import normalise_number

ANSWER_MARK = prosqa.ANSWER_MARK


@dataclasses.dataclass
class Task:
  """Rows ({question, steps, answer, label}) per split, and the answer check."""

  name: str
  splits: dict[str, list[dict]]
  is_correct: Callable[[dict, str], bool]
  corpus_text: Callable[[], list[str]]  # every sentence, for training a tokenizer
  # The answer is the steps themselves (a plan): a rollout must decode every step, not only
  # the answer sentence, and its FLOPs count that.
  answer_is_steps: bool = False


def sentences(row: dict) -> list[str]:
  return list(row["steps"]) + [row["answer"]]


def build_task(config) -> Task:
  """The task `config.task.name` names, with train/dev/test rows."""
  cfg = config.task
  if cfg.name == "prosqa":
    names = prosqa.concept_names(cfg.concepts, config.seed)
    count = cfg.train + cfg.dev + cfg.test
    if cfg.facts == "stated":
      every = prosqa.problems(count, config.seed, names, hops=tuple(cfg.hops),
                              branches=tuple(cfg.branches),
                              distractor_hops=tuple(cfg.distractor_hops))
    elif cfg.facts == "ontology":
      every = prosqa.ontology_problems(count, config.seed,
                                       prosqa.ontology(names, config.seed), tuple(cfg.hops))
    else:
      raise UserError(f"task.facts = {cfg.facts!r}: expected 'stated' or 'ontology'")
    rows = [p.to_row() for p in every]
    return _procedural("prosqa", rows, cfg, prosqa.is_correct)
  if cfg.name == "blocksworld":
    every = blocksworld.problems(cfg.train + cfg.dev + cfg.test, config.seed,
                                 tuple(cfg.blocks))
    return _procedural("blocksworld", [p.to_row() for p in every], cfg,
                       blocksworld.is_correct, answer_is_steps=True)
  if cfg.name == "gsm8k":
    return _gsm8k(cfg)
  raise UserError(f"task.name = {cfg.name!r}: expected 'prosqa', 'blocksworld' or 'gsm8k'")


def _procedural(name, rows, cfg, is_correct, answer_is_steps: bool = False) -> Task:
  splits = {"train": rows[:cfg.train], "dev": rows[cfg.train:cfg.train + cfg.dev],
            "test": rows[cfg.train + cfg.dev:]}
  return Task(name, splits, is_correct, lambda: _corpus(rows), answer_is_steps)


def _corpus(rows) -> list[str]:
  return [text for row in rows for text in [row["question"], *sentences(row)]]


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def gsm8k_rows(path: str) -> list[dict]:
  """A GSM8K-format file read by the engine's reader (llmjax.data.readers.read_gsm8k: a bad
  row is one error naming file and line): the rationale's lines are the steps, its gold number
  the answer sentence "### N"."""
  rows = []
  for problem in read_gsm8k(path):
    lines = [line.strip() for line in problem["rationale"].split("\n")[:-1] if line.strip()]
    rows.append({"question": problem["question"].strip(), "steps": lines,
                 "answer": f"{ANSWER_MARK} {problem['gold']}", "label": problem["gold"]})
  return rows


def gsm8k_is_correct(row: dict, text: str) -> bool:
  """The first number after "###" equals the label, both normalised
  (llmjax.tasks.math_answers.normalise_number: "1,024" is 1024)."""
  at = text.find(ANSWER_MARK)
  match = _NUMBER.search(text[at + len(ANSWER_MARK):]) if at >= 0 else None
  return match is not None and normalise_number(match.group(0)) == normalise_number(
      row["label"])


def _gsm8k(cfg) -> Task:
  directory = cfg.path
  files = {split: os.path.join(directory, f"{split}.jsonl") for split in ("train", "test")}
  missing = [p for p in files.values() if not os.path.isfile(p)]
  if missing:
    raise UserError(f"task.path = {directory!r}: {missing[0]} not found (GSM8K train.jsonl and "
                    "test.jsonl with question and answer fields)")
  read = {split: gsm8k_rows(path) for split, path in files.items()}
  train = read["train"]
  dev_count = min(cfg.dev, len(train) // 10)
  splits = {"train": train[dev_count:][:cfg.train or None], "dev": train[:dev_count],
            "test": read["test"][:cfg.test or None]}
  return Task("gsm8k", splits, gsm8k_is_correct, lambda: _corpus(train))


# ---- tokens -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Tokenized:
  """One problem's token ids: the question (BOS first) and each sentence (no BOS, no EOS)."""

  question: list[int]
  sentences: list[list[int]]


def tokenize(rows: list[dict], tokenizer: Tokenizer) -> list[Tokenized]:
  return [Tokenized(tokenizer.encode_prompt(row["question"]),
                    [tokenizer.encode(" " + s) for s in sentences(row)]) for row in rows]


def cot_examples(problems: list[Tokenized], eos_id: int, answer_only: bool = False,
                 where: str = "") -> Examples:
  """SFT examples: the question as prompt; the sentences (or only the answer) and EOS as the
  completion."""
  prompts, completions, wheres = [], [], []
  for i, p in enumerate(problems):
    chosen = p.sentences[-1:] if answer_only else p.sentences
    completion = [t for s in chosen for t in s] + [eos_id]
    prompts.append(p.question)
    completions.append(completion)
    wheres.append(f"{where}problem {i}")
  return Examples(prompts, [completions], wheres)


def pad_rows(rows: list[list[int]], length: int, what: str, pad_id: int = 0) -> np.ndarray:
  """[N, length] int32, right-padded; a longer row is an error naming it."""
  out = np.full((len(rows), length), pad_id, np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise UserError(f"{what} row {i} has {len(row)} tokens, more than the configured "
                      f"{length}; raise the length in config.lengths")
    out[i, :len(row)] = row
  return out


def decoder_arrays(targets: list[list[int]], length: int, eos_id: int, what: str):
  """A prefix decoder's inputs, targets and loss mask [N, length]: position 0 holds the vector
  (its input id is ignored), position i reads target i - 1 and predicts target i; the targets
  end with EOS."""
  full = [t + [eos_id] for t in targets]
  target_NxL = pad_rows(full, length, what)
  inputs_NxL = np.zeros_like(target_NxL)
  inputs_NxL[:, 1:] = target_NxL[:, :-1]
  mask_NxL = np.zeros_like(target_NxL)
  for i, row in enumerate(full):
    mask_NxL[i, :len(row)] = 1
  return inputs_NxL, target_NxL, mask_NxL


def semantic_arrays(problems: list[Tokenized], bos_id: int, eos_id: int, lengths,
                    unique: bool = True) -> dict[str, np.ndarray]:
  """Autoencoder rows of every sentence (distinct ones with `unique`): the encoder reads
  BOS + sentence, the decoder reconstructs it."""
  seen, chosen = set(), []
  for p in problems:
    for s in p.sentences:
      if not unique or tuple(s) not in seen:
        seen.add(tuple(s))
        chosen.append(s)
  enc = [[bos_id] + s for s in chosen]
  inputs, targets, mask = decoder_arrays(chosen, lengths.sentence, eos_id, "sentence")
  return {"enc_tokens": pad_rows(enc, lengths.sentence, "sentence"),
          "enc_lengths": np.asarray([len(e) for e in enc], np.int32),
          "dec_inputs": inputs, "dec_targets": targets, "dec_mask": mask}


def context_tokens(problem: Tokenized, t: int) -> list[int]:
  """The contextual encoder's input before sentence t (0-based): question and sentences < t."""
  return problem.question + [tok for s in problem.sentences[:t] for tok in s]


def contextual_arrays(problems: list[Tokenized], bos_id: int, eos_id: int,
                      lengths) -> dict[str, np.ndarray]:
  """One row per (problem, sentence t): the encoder reads the question and sentences before t;
  the decoder produces sentence t; `sem_*` is sentence t alone (for CTX-C's alignment)."""
  enc, targets = [], []
  for p in problems:
    for t, s in enumerate(p.sentences):
      enc.append(context_tokens(p, t))
      targets.append(s)
  inputs, dec_targets, mask = decoder_arrays(targets, lengths.sentence, eos_id, "sentence")
  sem = [[bos_id] + s for s in targets]
  return {"enc_tokens": pad_rows(enc, lengths.context, "context"),
          "enc_lengths": np.asarray([len(e) for e in enc], np.int32),
          "dec_inputs": inputs, "dec_targets": dec_targets, "dec_mask": mask,
          "sem_tokens": pad_rows(sem, lengths.sentence, "sentence"),
          "sem_lengths": np.asarray([len(s) for s in sem], np.int32)}


def latent_arrays(problems: list[Tokenized], teacher: list[np.ndarray], eos_id: int,
                  lengths) -> dict[str, np.ndarray]:
  """The latent model's rows (module docstring): tokens [N, L] with the vector slots after the
  question, and per predicted sentence (S slots): the position predicting it, its teacher
  embedding, its decoder inputs/targets/mask and whether it is the answer (the stop label).
  Sentence t's embedding (every one but the answer's) is also the input at the position after
  the one predicting it (`latent_vectors` places them). `teacher[i]`: [S_i, D] embeddings of
  problem i's sentences."""
  L, S, Ls = lengths.latent, lengths.sentences, lengths.sentence
  N, D = len(problems), teacher[0].shape[-1]
  out = {"tokens": np.zeros((N, L), np.int32), "segments": np.zeros((N, L), np.int32),
         "vector_mask": np.zeros((N, L), np.int32),
         "predict_at": np.zeros((N, S), np.int32), "predict_mask": np.zeros((N, S), np.int32),
         "target_vectors": np.zeros((N, S, D), np.float32),
         "stop_labels": np.zeros((N, S), np.float32),
         "next_inputs": np.zeros((N, S, Ls), np.int32),
         "next_targets": np.zeros((N, S, Ls), np.int32),
         "next_mask": np.zeros((N, S, Ls), np.int32)}
  for i, (p, z) in enumerate(zip(problems, teacher)):
    n_q, n_s = len(p.question), len(p.sentences)
    if n_s > S:
      raise UserError(f"problem {i} has {n_s} sentences, more than lengths.sentences = {S}")
    if n_q + n_s - 1 > L:
      raise UserError(f"problem {i} needs {n_q + n_s - 1} latent positions, more than "
                      f"lengths.latent = {L}")
    out["tokens"][i, :n_q] = p.question
    out["segments"][i, :n_q + n_s - 1] = 1
    out["vector_mask"][i, n_q:n_q + n_s - 1] = 1
    out["predict_at"][i, :n_s] = np.arange(n_q - 1, n_q - 1 + n_s)
    out["predict_mask"][i, :n_s] = 1
    out["target_vectors"][i, :n_s] = z
    out["stop_labels"][i, n_s - 1] = 1.0
    inputs, targets, mask = decoder_arrays(p.sentences, Ls, eos_id, "sentence")
    out["next_inputs"][i, :n_s], out["next_targets"][i, :n_s] = inputs, targets
    out["next_mask"][i, :n_s] = mask
  return out


def latent_vectors(arrays, length: int):
  """The latent model's input vectors [B, L, D] of a batch of `latent_arrays` rows: each
  sentence's teacher embedding but the answer's, one position after the one predicting it.
  Works on numpy and jax arrays."""
  import jax.numpy as jnp
  at_BxS, z_BxSxD = arrays["predict_at"], arrays["target_vectors"]
  B, S, D = z_BxSxD.shape
  fed_BxS = (arrays["predict_mask"] > 0) & (arrays["stop_labels"] < 0.5)
  slot_BxS = jnp.where(fed_BxS, at_BxS + 1, length)  # out of range: dropped
  rows_BxS = jnp.broadcast_to(jnp.arange(B)[:, None], (B, S))
  return jnp.zeros((B, length, D), z_BxSxD.dtype).at[rows_BxS, slot_BxS].set(z_BxSxD,
                                                                              mode="drop")


def index_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int):
  """Shuffled epochs of rows of `arrays` (a checkpointable grain iterator of dict batches)."""
  from llmjax.data.pipeline import row_batches
  count = len(next(iter(arrays.values())))
  if count < batch_size:
    raise UserError(f"{count} training rows, fewer than train.batch_size = {batch_size}")
  return iter(row_batches(np.arange(count), batch_size, seed,
                          lambda index: {k: v[index] for k, v in arrays.items()}))


def fixed_batches(arrays: dict[str, np.ndarray], batch_size: int,
                  limit: int) -> list[dict[str, np.ndarray]]:
  """The first `limit` full batches of rows in order (an evaluation set)."""
  count = len(next(iter(arrays.values())))
  return [{k: v[i:i + batch_size] for k, v in arrays.items()}
          for i in range(0, count - batch_size + 1, batch_size)][:limit]
