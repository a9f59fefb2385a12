"""Knowledge injection (Kim et al. 2025, Section 4, on the fictional knowledge of Chang et al.
2024): continue training a checkpoint on ordinary batches into which new paragraphs are
injected at fixed intervals, and measure how much of the new knowledge it acquires and how much
of what it knew it forgets.

Data (`root`/paraphrase70.json and once60.json; each item has `train_context`, 9
`paraphrases` and 5 probes of each kind, `<kind>_input` -> `<kind>_target`):
  paraphrase70  injection k (0-based) shows each item's train_context (k = 0) or its
                paraphrase k - 1: one version of every item per injection;
  once60        injection k shows its own `once_per_injection` items, each only then.
The authors inject every 160 steps, 10 times, 70 + 6 paragraphs in rows of a 128-row batch.

Placement (`injection.placement`): "prepend", the authors' (each paragraph, + EOS, in front of
one ordinary row, cut back to the row's length; the paragraph is its own document there, so the
row's text does not attend to it), or "rows" (each paragraph in whole rows of its own, cut into
`seq_len` chunks): for paragraphs longer than a row, as at CPU scale, where prepending would
keep only a paragraph's first row's worth. At most `rows_per_step` rows a step, from the
injection's step on. With several processes, paragraph j goes to process j mod P.

Probes: the log-probability of `<kind>_target` (summed over its tokens, after " ") given
`<kind>_input`, for kinds mem (the training sentence), gen (a paraphrase of it) and hard_gen
(a question needing the paragraph's content), with the engine's Scorer; per dataset and kind the
mean over probes is K.

Metrics (the paper's): acquisition A = (K_CL - K_PT) / |K_PT|, with K_PT at the starting
checkpoint (step 0) and K_CL after the last step; forgetting F = -(P_CL - P_PT) / P_PT, with P
the next-token accuracy on held-out text of the ordinary corpus (the pretraining knowledge kept;
the authors use downstream task accuracies).
"""

import dataclasses
import json
import os
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from llmjax.data.batches import BATCH_KEYS
from llmjax.data.readers import check_file
from llmjax.data.tokenizers import Tokenizer
from llmjax.errors import DataError, UserError
from llmjax.infer import Scorer

DATASETS = ("paraphrase70", "once60")
PROBE_KINDS = ("mem", "gen", "hard_gen")
PLACEMENTS = ("prepend", "rows")
_FIELDS = ("train_context", "paraphrases") + tuple(
    f"{kind}_{part}" for kind in PROBE_KINDS for part in ("input", "target"))


@dataclasses.dataclass(frozen=True)
class Probe:
  dataset: str
  kind: str
  item: int
  input: str
  target: str


def read_fictional_knowledge(path: str) -> list[dict[str, Any]]:
  """The items of one fictional-knowledge file, checked: one line naming file and item if not."""
  check_file(path)
  try:
    with open(path, encoding="utf-8") as f:
      items = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(items, list) or not items:
    raise DataError(f"{path}: expected a non-empty JSON list of knowledge items")
  for i, item in enumerate(items):
    missing = [f for f in _FIELDS if not isinstance(item, dict) or f not in item]
    if missing:
      raise DataError(f"{path}: item {i}: missing field {missing[0]!r}")
    for kind in PROBE_KINDS:
      if len(item[f"{kind}_input"]) != len(item[f"{kind}_target"]):
        raise DataError(f"{path}: item {i}: {kind}_input and {kind}_target differ in length")
  return items


@dataclasses.dataclass
class Injection:
  """What continual training injects and probes.

  Attributes:
    schedule: per injection k, the paragraphs it shows, as (dataset, item, text).
    probes: every probe of every injected item.
  """

  schedule: list[list[tuple[str, int, str]]]
  probes: list[Probe]


def plan_injection(root: str, injections: int, paraphrased_items: int,
                   once_per_injection: int) -> Injection:
  """The paragraphs of each injection and the probes of the items they cover.

  Args:
    root: the directory holding paraphrase70.json and once60.json.
    injections: how many injections (the paper: 10; at most 1 + the paraphrases per item).
    paraphrased_items: the first N paraphrase70 items, shown at every injection (0: none).
    once_per_injection: once60 items per injection, each shown once (0: none).
  """
  if injections < 1:
    raise UserError(f"injection.injections = {injections}: expected at least 1")
  paraphrase = read_fictional_knowledge(os.path.join(root, "paraphrase70.json"))
  once = read_fictional_knowledge(os.path.join(root, "once60.json"))
  if paraphrased_items > len(paraphrase):
    raise UserError(f"injection.paraphrased_items = {paraphrased_items}: paraphrase70 has "
                    f"{len(paraphrase)} items")
  if injections * once_per_injection > len(once):
    raise UserError(f"{injections} injections x {once_per_injection} once60 items exceed its "
                    f"{len(once)} items")
  versions = min((1 + len(item["paraphrases"]) for item in paraphrase[:paraphrased_items]),
                 default=injections)
  if injections > versions:
    raise UserError(f"injection.injections = {injections}: paraphrase70 items have only "
                    f"{versions} versions (the context and its paraphrases)")
  schedule = []
  for k in range(injections):
    shown = [("paraphrase70", i, item["train_context"] if k == 0 else item["paraphrases"][k - 1])
             for i, item in enumerate(paraphrase[:paraphrased_items])]
    first = k * once_per_injection
    shown += [("once60", i, once[i]["train_context"])
              for i in range(first, first + once_per_injection)]
    schedule.append(shown)
  probes = [Probe(dataset=name, kind=kind, item=i, input=text, target=target)
            for name, items in (("paraphrase70", paraphrase[:paraphrased_items]),
                                ("once60", once[:injections * once_per_injection]))
            for i, item in enumerate(items) for kind in PROBE_KINDS
            for text, target in zip(item[f"{kind}_input"], item[f"{kind}_target"])]
  return Injection(schedule, probes)


def paragraph_rows(tokens: Sequence[int], seq_len: int, pad_id: int) -> list[dict[str, np.ndarray]]:
  """A tokenized paragraph as whole LM rows (BATCH_KEYS -> [seq_len]): chunks of seq_len + 1
  tokens overlapping by one, so every token after the first is a target once."""
  rows = []
  for start in range(0, max(len(tokens) - 1, 1), seq_len):
    chunk = list(tokens[start:start + seq_len + 1])
    n = len(chunk) - 1
    padded = np.full(seq_len + 1, pad_id, np.int32)
    padded[:len(chunk)] = chunk
    row = {"inputs": padded[:-1], "targets": padded[1:],
           "loss_mask": (np.arange(seq_len) < n).astype(np.int32),
           "segment_ids": (np.arange(seq_len) < len(chunk)).astype(np.int32),
           "positions": np.arange(seq_len, dtype=np.int32)}
    rows.append(row)
  return rows


def prepended_row(row: dict[str, np.ndarray], tokens: Sequence[int]) -> dict[str, np.ndarray]:
  """An ordinary LM row (BATCH_KEYS -> [L]) with `tokens` (a paragraph) in front, cut back to
  L + 1 tokens, as the authors inject: the paragraph is a document of its own (segment 1,
  positions from 0, every next token a target), the row's documents follow with their segments
  shifted by one, their positions and loss mask kept."""
  L = row["inputs"].shape[0]
  P = min(len(tokens), L + 1)
  keep = L + 1 - P
  row_tokens = np.append(row["inputs"], row["targets"][-1])
  row_segments = np.append(row["segment_ids"], row["segment_ids"][-1])
  row_positions = np.append(row["positions"], row["positions"][-1] + 1)
  new_tokens = np.concatenate([np.asarray(tokens[:P], np.int32), row_tokens[:keep]])
  new_segments = np.concatenate([np.ones(P, np.int32),
                                 np.where(row_segments[:keep] > 0, row_segments[:keep] + 1, 0)])
  new_positions = np.concatenate([np.arange(P, dtype=np.int32), row_positions[:keep]])
  loss_mask = np.zeros(L, np.int32)
  loss_mask[:P - 1] = 1  # the paragraph's own next tokens
  loss_mask[P:] = row["loss_mask"][:max(keep - 1, 0)]  # the row's targets, as they were
  return {"inputs": new_tokens[:-1], "targets": new_tokens[1:], "loss_mask": loss_mask,
          "segment_ids": new_segments[:-1].astype(np.int32),
          "positions": new_positions[:-1].astype(np.int32)}


class InjectingIterator:
  """Ordinary host batches with injected rows placed from given steps on.

  `plan[step]` (1-based: the batch of training step `step`) lists what goes into the first
  rows of that batch: a whole row (a dict, `paragraph_rows`) replaces one; a token list is
  prepended to one (`prepended_row`). Checkpointable with the train state: its position and
  the inner grain iterator's are saved together (grain's checkpoint handler: bytes state).
  """

  def __init__(self, inner: Iterator[dict[str, np.ndarray]], plan: dict[int, list[dict]]):
    self.inner, self.plan, self.step = inner, plan, 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self.inner)
    self.step += 1
    placements = self.plan.get(self.step, ())
    if placements:
      batch = {k: np.array(v) for k, v in batch.items()}
      for r, placement in enumerate(placements):
        row = placement if isinstance(placement, dict) else prepended_row(
            {k: batch[k][r] for k in BATCH_KEYS}, placement)
        for key in BATCH_KEYS:
          batch[key][r] = row[key]
    return batch

  def get_state(self) -> bytes:
    return json.dumps({"step": self.step, "inner": self.inner.get_state()}).encode()

  def set_state(self, state: bytes) -> None:
    saved = json.loads(state)
    self.inner.set_state(saved["inner"])
    self.step = saved["step"]

  def start_prefetch(self) -> None:
    if hasattr(self.inner, "start_prefetch"):
      self.inner.start_prefetch()


def injection_plan(injection: Injection, tokenizer: Tokenizer, seq_len: int, interval: int,
                   rows_per_step: int, local_batch: int,
                   placement: str = "rows") -> dict[int, list]:
  """{step: placements}: injection k's paragraphs (this process's share) from step (k + 1) x
  interval on, at most `rows_per_step` rows a step; an injection must be placed before the
  next one starts.

  placement: "prepend" (the authors': each paragraph in front of one ordinary row, cut to the
    row's length) or "rows" (each paragraph in whole rows of its own, `paragraph_rows`: for
    paragraphs longer than a row).
  """
  if placement not in PLACEMENTS:
    raise UserError(f"injection.placement = {placement!r}: expected one of {PLACEMENTS}")
  if not 1 <= rows_per_step <= local_batch:
    raise UserError(f"injection.rows_per_step = {rows_per_step}: expected 1..{local_batch} "
                    "(the rows of this process's batch)")
  process, processes = jax.process_index(), jax.process_count()
  plan: dict[int, list] = {}
  for k, shown in enumerate(injection.schedule):
    paragraphs = [tokenizer.encode(text, add_eos=True)
                  for j, (_, _, text) in enumerate(shown) if j % processes == process]
    rows = (paragraphs if placement == "prepend" else
            [row for tokens in paragraphs
             for row in paragraph_rows(tokens, seq_len, tokenizer.pad_id)])
    start = (k + 1) * interval
    steps = -(-len(rows) // rows_per_step)
    if steps > interval:
      raise UserError(f"injection {k + 1}: {len(rows)} paragraph rows need {steps} steps at "
                      f"{rows_per_step} rows a step, more than the interval of {interval}")
    for s in range(steps):
      plan[start + s] = rows[s * rows_per_step:(s + 1) * rows_per_step]
  return plan


class ProbeScorer:
  """Scores every probe with the params it is given: mean target log-prob per dataset x kind."""

  def __init__(self, probes: Sequence[Probe], tokenizer: Tokenizer, scorer: Scorer):
    self.probes, self.scorer = list(probes), scorer
    self.pairs = [(tokenizer.encode(p.input), tokenizer.encode(" " + p.target))
                  for p in self.probes]

  def __call__(self, params, step: int = 0) -> dict[str, float]:
    del step
    scores = self.scorer.score_ids(params, self.pairs)
    sums: dict[str, list[float]] = {}
    for probe, score in zip(self.probes, scores):
      sums.setdefault(f"probe_{probe.dataset}_{probe.kind}", []).append(score.logprob)
    return {name: float(np.mean(values)) for name, values in sorted(sums.items())}


def acquisition_and_forgetting(first: dict[str, float], last: dict[str, float],
                               accuracy_key: str = "accuracy") -> dict[str, float]:
  """A per probe group (and their mean, `acquisition`) and F from the evaluation rows at the
  start (K_PT, P_PT) and at the end (K_CL, P_CL) of continual training."""
  out = {}
  groups = [k for k in first if k.startswith("probe_")]
  for key in groups:
    out[f"acquisition_{key[len('probe_'):]}"] = (last[key] - first[key]) / abs(first[key])
  if groups:
    out["acquisition"] = float(np.mean([out[f"acquisition_{k[len('probe_'):]}"]
                                        for k in groups]))
  if accuracy_key in first:
    out["forgetting"] = -(last[accuracy_key] - first[accuracy_key]) / first[accuracy_key]
  return out


def continual_training(workdir: str, model_config, tokenizer: Tokenizer, corpus: dict,
                       injection: Injection, init_from: Any, train_config, optim_config,
                       interval: int, rows_per_step: int, parallel, seed: int = 0,
                       probe_batch: int = 32, placement: str = "rows") -> dict[str, Any]:
  """Continues training `init_from` (a checkpoint spec or a params tree) on `corpus`'s train
  split with `injection`'s paragraphs placed every `interval` steps; evaluates held-out
  accuracy (P) and the probes (K) at step 0 and every `train.eval_every` steps. Resumable.

  Returns:
    {'acquisition', 'acquisition_<dataset>_<kind>', 'forgetting', 'first', 'last'} with the
    first and last evaluation rows; every evaluation is in WORKDIR/metrics.jsonl.
  """
  from llmjax.data.pipeline import lm_batches, take
  from llmjax.train.lm import lm_trainer

  steps = len(injection.schedule) * interval
  if train_config.steps < steps:
    raise UserError(f"continual training of {train_config.steps} steps is shorter than "
                    f"{len(injection.schedule)} injections x {interval} steps")
  trainer = lm_trainer(model_config, train_config, optim_config, parallel)
  B, L = train_config.batch_size, train_config.seq_len

  def batches(split, train):
    return lm_batches(corpus[split], tokenizer, L, B, seed=seed, train=train)

  plan = injection_plan(injection, tokenizer, L, interval, rows_per_step,
                        B // jax.process_count(), placement)
  train_iter = InjectingIterator(iter(batches("train", True)), plan)
  eval_batches = take(batches("validation", False), train_config.eval_batches)
  if not eval_batches:  # forgetting is measured on it
    raise UserError(f"the validation split has too little text for one batch of {B} x {L} "
                    "tokens")
  probes = ProbeScorer(injection.probes, tokenizer,
                       Scorer(model_config, parallel, batch_size=probe_batch,
                              length_bucket=64, pad_id=tokenizer.pad_id))
  trainer.fit(workdir, train_iter, eval_batches, seed=seed, init_from=init_from,
              eval_hook=probes, eval_at_start=True)
  from llmjax import runio
  rows = runio.read_metrics(workdir, "eval")
  first, last = rows[0], rows[-1]
  if first["step"] != 0:
    raise UserError(f"{workdir}: the evaluation at step 0 is missing from metrics.jsonl")
  return {**acquisition_and_forgetting(first, last), "first": first, "last": last}


def plot_retention(path: str, workdir: str, title: str) -> None:
  """The probe groups' mean target log-prob at each evaluation of a continual-training run."""
  from llmjax import plotting, runio
  evals = runio.read_metrics(workdir, "eval")
  groups = [k for k in evals[0] if k.startswith("probe_")] if evals else []
  plotting.plot_curves(path, {g[len("probe_"):]: ([e["step"] for e in evals], [e[g] for e in evals])
                              for g in groups},
                       ylabel="target log-prob (nats)", title=title)
