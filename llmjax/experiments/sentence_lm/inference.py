"""Inference of the sentence-space models, with each problem's analytic FLOPs.

  cot          the token LM writes its chain of thought (engine Generator, greedy)
  continuous   the latent model prefills the question; each predicted embedding goes straight
               back in as the next input (through the same input projection as the teacher
               embeddings in training); the decoder reads only the answer's embedding
  discretized  each predicted embedding is decoded to text and re-encoded (semantic: the
               sentence alone; contextual: the question and the decoded sentences before it,
               as the teacher embeddings were made), and that goes back in
Stop: the rollout ends at the first predicted embedding whose greedy first token is the "###"
answer mark ('decoder'), or whose stop head says so ('classifier'); it is then decoded as the
answer. Every rollout runs `max_sentences` steps at once on a batch (the later steps cannot
change the earlier ones); the FLOPs count each problem's own rollout up to its stop.

FLOPs (llmjax.models.flops; every model keeps a KV cache): continuous = question prefill +
one latent position, input and output projection per further step + one decoder position per
stop check + the answer's decoding (+ every step's decoding when the task's answer is the steps
themselves: blocksworld's plan). Discretized adds each step's decoding and re-encoding (the
contextual encoder extends its own cache by the new sentence).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.experiments.sentence_lm.data import Tokenized, context_tokens, pad_rows
from llmjax.experiments.sentence_lm.model import LatentModel, encode
from llmjax.infer.cache import init_cache, left_padded_inputs
from llmjax.infer.vector_prefix import VectorPrefixDecoder
from llmjax.models import Decoder, ModelConfig
from llmjax.models.flops import forward_flops, generation_flops, mlp_head_flops


@dataclasses.dataclass
class Rollout:
  """One problem's latent rollout: the decoded sentences (the last one the answer, when the
  rollout stopped), whether it stopped, and its FLOPs."""

  sentences: list[str]
  stopped: bool
  flops: float
  embeddings: np.ndarray  # [len(sentences), D] the predicted embeddings

  @property
  def text(self) -> str:
    return " ".join(self.sentences)


class LatentRunner:
  """Compiled rollouts of one latent model and its teacher autoencoder."""

  def __init__(self, config: ModelConfig, tokenizer, stop_ids, teacher: str,
               max_sentences: int, sentence_tokens: int, context_tokens: int,
               batch_size: int, stop: str = "decoder"):
    self.config, self.tokenizer, self.teacher = config, tokenizer, teacher
    self.stop_ids, self.stop = np.asarray(sorted(stop_ids), np.int32), stop
    self.S, self.Ls, self.Lc, self.B = max_sentences, sentence_tokens, context_tokens, batch_size
    self.latent = LatentModel(config)
    self.decoder = Decoder(config)
    self.prefix = VectorPrefixDecoder(config, sentence_tokens, tokenizer.eos_id,
                                      tokenizer.pad_id)
    self._jit = {}

  # ---- compiled pieces --------------------------------------------------------------------

  def _prefill(self, P: int):
    if ("prefill", P) not in self._jit:
      latent, B, cache_len = self.latent, self.B, P + self.S

      def run(params, tokens_BxP, mask_BxP):
        positions, segments = left_padded_inputs(mask_BxP)
        cache = init_cache(latent, B, cache_len)
        (z_Bx1xD, stop_Bx1), variables = latent.apply(
            {"params": params, "cache": cache}, tokens_BxP, positions_BxL=positions,
            segment_ids_BxL=segments, decode=True, last_positions=1, mutable=["cache"])
        return variables["cache"], z_Bx1xD[:, 0], stop_Bx1[:, 0]

      self._jit[("prefill", P)] = jax.jit(run)
    return self._jit[("prefill", P)]

  def _step(self):
    if "step" not in self._jit:
      latent, B = self.latent, self.B

      def run(params, cache, z_BxD, positions_B):
        (z_Bx1xD, stop_Bx1), variables = latent.apply(
            {"params": params, "cache": cache}, None, z_BxD[:, None, :],
            positions_BxL=positions_B[:, None], segment_ids_BxL=jnp.ones((B, 1), jnp.int32),
            decode=True, mutable=["cache"])
        return variables["cache"], z_Bx1xD[:, 0], stop_Bx1[:, 0]

      self._jit["step"] = jax.jit(run)
    return self._jit["step"]

  def _encoder(self):
    if "encode" not in self._jit:
      self._jit["encode"] = jax.jit(lambda p, t, n: encode(self.decoder, p, t, n))
    return self._jit["encode"]

  # ---- rollouts ---------------------------------------------------------------------------

  def rollout(self, latent_params, teacher_params, problems: list[Tokenized], mode: str,
              noise: float = 0.0, seed: int = 0, decode_steps: bool = False) -> list[Rollout]:
    """`mode` 'continuous' or 'discretized' for every problem (module docstring). `noise`:
    Gaussian noise of this standard deviation, relative to each embedding's RMS, added to every
    predicted embedding fed back (continuous). `decode_steps`: the answer needs the steps'
    text (their decoding is counted)."""
    out = []
    for start in range(0, len(problems), self.B):
      chunk = problems[start:start + self.B]
      out += self._rollout_batch(latent_params, teacher_params, chunk, mode, noise,
                                 seed + start, decode_steps)
    return out

  def _rollout_batch(self, latent_params, teacher_params, chunk, mode, noise, seed,
                     decode_steps):
    B, n = self.B, len(chunk)
    questions = [p.question for p in chunk] + [chunk[0].question] * (B - n)
    P = max(len(q) for q in questions)
    tokens = np.zeros((B, P), np.int32)
    mask = np.zeros((B, P), np.int32)
    for i, q in enumerate(questions):  # left-padded, as the engine's generator pads
      tokens[i, P - len(q):], mask[i, P - len(q):] = q, 1
    lengths_B = np.asarray([len(q) for q in questions], np.int32)
    cache, z, stop_logit = self._prefill(P)(latent_params, tokens, mask)
    predicted, stop_logits, decoded = [z], [stop_logit], []
    rng = np.random.default_rng(seed)
    for t in range(1, self.S + 1):
      z = predicted[-1]
      if mode == "discretized":
        sentence, lengths = self.prefix(teacher_params, z)
        decoded.append((np.asarray(sentence), np.asarray(lengths)))
        if t == self.S:
          break
        z = self._reencode(teacher_params, chunk, decoded, t)
      elif t == self.S:
        break
      elif noise:
        scale = np.sqrt(np.mean(np.square(np.asarray(z)), axis=-1, keepdims=True))
        z = z + noise * scale * rng.standard_normal(z.shape).astype(np.float32)
      cache, z_next, stop_logit = self._step()(latent_params, cache, z,
                                               jnp.asarray(lengths_B + t - 1))
      predicted.append(z_next)
      stop_logits.append(stop_logit)
    Z = np.stack([np.asarray(z) for z in predicted], axis=1)  # [B, S, D]
    if mode == "continuous":  # decode every predicted embedding once (display, answer)
      sentence, lengths = self.prefix(teacher_params, jnp.asarray(Z.reshape(B * self.S, -1)))
      sentence = np.asarray(sentence).reshape(B, self.S, -1)
      lengths = np.asarray(lengths).reshape(B, self.S)
      decoded = [(sentence[:, t], lengths[:, t]) for t in range(self.S)]
    stops = (np.stack([np.asarray(s) for s in stop_logits], axis=1) > 0
             if self.stop == "classifier"
             else np.stack([np.isin(tok[:, 0], self.stop_ids) for tok, _ in decoded], axis=1))
    results = []
    for i, problem in enumerate(chunk):
      k = int(np.argmax(stops[i])) + 1 if stops[i].any() else self.S
      texts, counts = [], []
      for t in range(k):
        tok, length = decoded[t][0][i], int(decoded[t][1][i])
        texts.append(self.tokenizer.decode(tok[:length].tolist()).strip())
        counts.append(min(length + 1, self.Ls))  # generated tokens, EOS included
      results.append(Rollout(texts, bool(stops[i].any()),
                             self._flops(problem, counts, mode, decode_steps), Z[i, :k]))
    return results

  def _reencode(self, teacher_params, chunk, decoded, t: int):
    """Sentence t's embedding (1-based) from the decoded text, as the teacher made it."""
    B = self.B
    sentences = [[decoded[s][0][i][:decoded[s][1][i]].tolist() for s in range(t)]
                 for i in range(len(chunk))]
    if self.teacher == "semantic":
      rows = [[self.tokenizer.bos_id] + s[t - 1] for s in sentences]
      length = self.Ls
    else:
      rows = [context_tokens(Tokenized(p.question, s), t - 1)
              for p, s in zip(chunk, sentences)]
      length = self.Lc
    rows += [rows[0]] * (B - len(rows))
    tokens = pad_rows([r[:length] for r in rows], length, "re-encoded")
    lengths = np.asarray([min(len(r), length) for r in rows], np.int32)
    return self._encoder()(teacher_params, tokens, lengths)

  def _flops(self, problem: Tokenized, counts: list[int], mode: str,
             decode_steps: bool) -> float:
    return rollout_flops(self.config, len(problem.question), counts, mode, self.teacher,
                         self.stop, decode_steps)


def rollout_flops(config: ModelConfig, question_tokens: int, counts: list[int], mode: str,
                  teacher: str = "semantic", stop: str = "decoder",
                  decode_steps: bool = False) -> float:
  """FLOPs of one problem's latent rollout of len(counts) sentences whose greedy decodings
  have `counts` tokens each (EOS included; the last sentence is the answer), in `mode`
  'continuous' or 'discretized' (module docstring)."""
  cfg, D, k, n_q = config, config.d_model, len(counts), question_tokens
  head = mlp_head_flops(D, D, D, 1) + (2.0 * D if stop == "classifier" else 0.0)
  total = forward_flops(cfg, n_q, 0, 0, outputs=1) + head
  for t in range(1, k):  # feed sentence t's embedding, predict t + 1
    total += mlp_head_flops(D, D, D, 1) + forward_flops(cfg, 1, n_q + t - 1, 0) + head
  check = forward_flops(cfg, 1, 0, 1) if stop == "decoder" else 0.0
  for t, count in enumerate(counts):
    if t == k - 1 or decode_steps or mode == "discretized":
      total += generation_flops(cfg, 1, count)  # its first position is the stop check
    else:
      total += check
  if mode == "discretized":  # the embeddings of sentences 1 .. k-1 fed back
    context = 0
    for t in range(1, k):
      if teacher == "semantic":  # BOS and sentence t
        total += forward_flops(cfg, counts[t - 1], 0, 0, outputs=1)
      else:  # the question, then the encoder's cache grows by sentence t - 1
        new = n_q if t == 1 else counts[t - 2] - 1
        total += forward_flops(cfg, new, context, 0, outputs=1)
        context += new
  return total

