"""The Differential Information Distribution's synthetic reproduction (experiment
`did_synthetic`; Won, Lee, Hwang, Seo 2025).

Method:
  1. Output space: every string of 1..`space.max_length` letters over `space.tokens` letters,
     each ending with EOS (258 outputs for 6 letters up to length 3).
  2. Energy models: pi_ref proportional to exp(-reference_scale E_ref) and the target
     pi* proportional to pi_ref^target_power exp(-target_scale E*), E_ref and E* standard
     normal per output.
  3. Rejected-response policies: matched, pi_l proportional to pi_ref^(1+beta) pi*^(-beta)
     (the theory's, for which DPO with the same beta has pi* as its optimum), and three
     mismatched ones: uniform, pi_l = pi_ref (labels carry no information), and the matched
     form with a wrong power (`wrong_power_factor` x beta).
  4. Pairs: y_w ~ pi_ref, y_l ~ pi_l, labelled by Bradley-Terry on log q_{pi_ref/pi_l}.
  5. (a) A tabular policy (one logit per output, from log pi_ref) trained on the expected loss
     (tabular_policy.py) with DPO, SimPO and IPO, for every pi_l; and, with DPO
     and the matched pi_l, over a sweep of targets pi* ~ pi_ref exp(-s E*) whose DID,
     ~ exp(-s E*), does not depend on pi_ref and has an entropy set by |s| alone (low for
     large |s|, log N at s = 0).
     (b) A tiny llmjax decoder SFT-trained on samples of pi_ref (its own distribution over the
     space is then the reference, renormalised), then trained on sampled pairs through the real
     `dpo` trainer (llmjax.experiments.pair_training.train_dpo): matched pi_l with DPO, SimPO and
     IPO, and the mismatched pi_l with DPO.
  6. Report JS(pi_theta || pi*) over steps (js_tabular.png, js_decoder.png), the log-margin
     ordering m* >= m_ref >= m_l of the pairs (margins.png), and the chosen log-likelihood
     drift and the policy's entropy change against the DID entropy across the sweep
     (displacement.png); the numbers in summary.json.

A useful identity: with these Bradley-Terry labels the chosen outputs are distributed exactly
as pi_ref (and the rejected ones as pi_l) whatever pi_l is, so at the DPO optimum the mean
chosen drift is -KL(pi_ref || pi*) <= 0: the chosen log-likelihood falls for every target that
differs from pi_ref.
"""

import itertools
import os

import numpy as np

from llmjax.data.examples import Examples
from llmjax.data.tokenizers import load_tokenizer
from llmjax.experiments.pair_training import stage_config, train_dpo
from llmjax.experiments.preference import did
from llmjax.experiments.preference.tabular_policy import train_tabular
from llmjax.experiments.sft import train_sft
from llmjax.experiments.starting_point import StartingPoint, record_model
from llmjax.infer.scoring import Scorer
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.pipeline import Pipeline, Stage
from llmjax.plotting import plt, save_figure
from llmjax.train.preference import PreferenceLoss
from llmjax.weights import load_model

LETTERS = "abcdefghijklmnopqrstuvwxyz"
REJECTED = ("matched", "uniform", "reference", "wrong_power")
PROMPT = ">"


def output_space(tokens: int, max_length: int) -> list[str]:
  """Every string of 1..max_length of the first `tokens` letters, shortest first."""
  return ["".join(s) for n in range(1, max_length + 1)
          for s in itertools.product(LETTERS[:tokens], repeat=n)]


def target_policy(logp_ref_N, energy_N, power: float, scale: float) -> np.ndarray:
  return did.normalize(power * logp_ref_N - scale * energy_N)


def rejected_policies(logp_ref_N, logp_target_N, beta: float, wrong_factor: float) -> dict:
  n = len(logp_ref_N)
  return {"matched": did.matched_rejected_policy(logp_ref_N, logp_target_N, beta),
          "uniform": np.full(n, -np.log(n)),
          "reference": np.asarray(logp_ref_N, np.float64),
          "wrong_power": did.matched_rejected_policy(logp_ref_N, logp_target_N,
                                                     wrong_factor * beta)}


def objective_losses(config) -> dict:
  o = config.objectives
  return {"dpo": PreferenceLoss("sigmoid", o.dpo_beta),
          "simpo": PreferenceLoss("simpo", o.simpo_beta, simpo_gamma=o.simpo_gamma),
          "ipo": PreferenceLoss("ipo", o.ipo_beta)}


def _loss_settings(loss: PreferenceLoss) -> dict:
  return {"loss_type": loss.loss_type, "beta": loss.beta, "simpo_gamma": loss.simpo_gamma}


def _weighted_median(values_N, weights_N) -> float:
  """The median of values under the weights (chosen outputs are distributed as pi_ref)."""
  order = np.argsort(values_N)
  cumulative = np.cumsum(np.asarray(weights_N)[order])
  return float(np.asarray(values_N)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _pearson(x, y) -> float:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.std() == 0 or y.std() == 0:
    return float("nan")
  return float(np.corrcoef(x, y)[0, 1])


def _as_examples(prompt_ids, space_ids, name: str, *indices) -> Examples:
  """Examples of outputs of the space after the one prompt: one completion list per index
  array (one for SFT samples; chosen and rejected for pairs)."""
  n = len(indices[0])
  return Examples(prompts=[list(prompt_ids)] * n,
                  completions=[[list(space_ids[i]) for i in side] for side in indices],
                  where=[f"{name} {i + 1}" for i in range(n)])


def run(config, workdir: str) -> dict:
  space = output_space(config.space.tokens, config.space.max_length)
  lengths = np.array([len(s) + 1 for s in space])  # letters + EOS
  N, beta = len(space), float(config.objectives.dpo_beta)
  rng = np.random.default_rng(config.seed)
  energy_ref, energy_target = rng.normal(size=N), rng.normal(size=N)
  e, dec = config.energy, config.decoder
  energy_logp_ref = did.normalize(-e.reference_scale * energy_ref)
  losses = objective_losses(config)
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  tokenizer = load_tokenizer("byte")
  model_config = ModelConfig.from_dict(config.model.to_dict())
  prompt_ids = tokenizer.encode_prompt(PROMPT)
  space_ids = [tokenizer.encode(s, add_eos=True) for s in space]
  scorer = Scorer(model_config, parallel, batch_size=min(256, N), length_bucket=8,
                  pad_id=tokenizer.pad_id)

  def decoder_logp(params) -> np.ndarray:
    """The decoder's log-probs of every output of the space (not renormalised)."""
    scores = scorer.score_ids(params, [(prompt_ids, c) for c in space_ids])
    return np.array([s.logprob for s in scores], np.float64)

  def setting(logp_ref):
    target = target_policy(logp_ref, energy_target, e.target_power, e.target_scale)
    return target, rejected_policies(logp_ref, target, beta, config.wrong_power_factor)

  def tabular(ctx):
    t = config.tabular
    logp_ref = energy_logp_ref
    target, rejected = setting(logp_ref)
    R = len(REJECTED)
    js_final, arrays, final_logp = {}, {}, {}
    for name, loss in losses.items():
      runs = train_tabular(np.stack([logp_ref] * R), np.stack([rejected[k] for k in REJECTED]),
                           np.stack([target] * R), loss, lengths, t.steps, t.lr, t.log_every)
      arrays[f"{name}_js"], arrays["steps"] = runs.js, runs.steps
      js_final[name] = {k: float(runs.js[i, -1]) for i, k in enumerate(REJECTED)}
      final_logp[name] = runs.final_logp[0]
    # The log-margin ordering on sampled pairs of every pi_l, and the DPO-trained policy's
    # margin on the matched pairs.
    ordering = {}
    for k in REJECTED:
      chosen_P, rejected_P = did.bradley_terry_pairs(np.random.default_rng(config.seed + 1),
                                                     logp_ref, rejected[k], dec.train_pairs)
      ordering[k] = did.margin_ordering(target, logp_ref, rejected[k], chosen_P, rejected_P)
      if k == "matched":
        ordering[k]["mean_dpo_policy_margin"] = float(
            did.log_margins(final_logp["dpo"], chosen_P, rejected_P).mean())
    # The DID entropy sweep: DPO with the matched pi_l for each target pi_ref exp(-s E*).
    scales = list(config.sweep.did_scales)
    targets = [target_policy(logp_ref, energy_target, 1.0, scale) for scale in scales]
    sweep = train_tabular(np.stack([logp_ref] * len(scales)),
                          np.stack([did.matched_rejected_policy(logp_ref, tg, beta)
                                    for tg in targets]),
                          np.stack(targets), losses["dpo"], lengths, config.sweep.steps,
                          config.sweep.lr, t.log_every)
    rows = [{"did_scale": p,
             "did_entropy_normalized": did.did_entropy(tg, logp_ref) / np.log(N),
             "chosen_drift_final": float(sweep.chosen_drift[i, -1]),
             "chosen_drift_at_optimum": -did.kl(logp_ref, tg),
             "chosen_drift_median": _weighted_median(sweep.final_logp[i] - logp_ref,
                                                     np.exp(logp_ref)),
             "policy_entropy_change": float(sweep.entropy[i, -1] - sweep.entropy[i, 0]),
             "policy_entropy_change_at_optimum": did.entropy(tg) - did.entropy(logp_ref),
             "js_final": float(sweep.js[i, -1])}
            for i, (p, tg) in enumerate(zip(scales, targets))]
    arrays.update(sweep_drift=sweep.chosen_drift, sweep_steps=sweep.steps)
    np.savez(ctx.path("tabular.npz"), **arrays)
    return {"outputs": N, "js_initial": did.js_divergence(logp_ref, target),
            "did_entropy_normalized": did.did_entropy(target, logp_ref) / np.log(N),
            "js_final": js_final, "margin_ordering": ordering, "sweep": rows}

  def sft(ctx):
    samples = np.random.default_rng(config.seed + 2).choice(
        N, size=dec.sft_examples + dec.sft_eval_examples, p=np.exp(energy_logp_ref))
    train = _as_examples(prompt_ids, space_ids, "sample", samples[:dec.sft_examples])
    dev = _as_examples(prompt_ids, space_ids, "dev sample", samples[dec.sft_examples:])
    start = StartingPoint(model_config, None, tokenizer, f"seed {config.seed}")
    sft_config = stage_config(config, train=dict(config.sft.train),
                              optim=dict(config.sft.optim))
    record_model(sft_config, ctx.directory, start)
    result = train_sft(sft_config, ctx.directory, start, parallel, train, dev)
    ctx.keep("params", result["state"].params)
    logp = decoder_logp(result["state"].params)
    np.save(ctx.path("reference_logp.npy"), logp)
    return {"mass_on_space": float(np.exp(np.logaddexp.reduce(logp))),
            "js_to_energy_reference": did.js_divergence(did.normalize(logp), energy_logp_ref)}

  def decoder(ctx):
    sft_params = ctx.artifact("sft", "params",
                              lambda directory: load_model(directory, parallel).params)
    logp_ref = did.normalize(np.load(os.path.join(workdir, "sft", "reference_logp.npy")))
    target, rejected = setting(logp_ref)
    start = StartingPoint(model_config, sft_params, tokenizer, "sft stage")
    pairs = {}  # per pi_l: (train chosen_P, rejected_P), (eval chosen_P, rejected_P)
    for k in REJECTED:
      pair_rng = np.random.default_rng(config.seed + 3)
      pairs[k] = [did.bradley_terry_pairs(pair_rng, logp_ref, rejected[k], n)
                  for n in (dec.train_pairs, dec.eval_pairs)]
    runs = [("matched", name) for name in losses] + [(k, "dpo") for k in REJECTED[1:]]
    result = {}
    for k, name in runs:
      train = _as_examples(prompt_ids, space_ids, "train pair", *pairs[k][0])
      evaluation = _as_examples(prompt_ids, space_ids, "eval pair", *pairs[k][1])
      run_config = stage_config(config, dpo=_loss_settings(losses[name]))
      directory = ctx.path(f"{name}_{k}")
      os.makedirs(directory, exist_ok=True)
      record_model(run_config, directory, start)
      trained = train_dpo(run_config, directory, start, parallel, train, evaluation)
      steps = sorted(int(s) for s in os.listdir(os.path.join(directory, "checkpoints"))
                     if s.isdigit())
      js = {0: did.js_divergence(logp_ref, target)}
      for step in steps[:-1]:
        params = load_model(os.path.join(directory, "checkpoints", str(step)), parallel).params
        js[step] = did.js_divergence(did.normalize(decoder_logp(params)), target)
      final = decoder_logp(trained["state"].params)
      js[trained["step"]] = did.js_divergence(did.normalize(final), target)
      result[f"{name}_{k}"] = {"js": {str(s): v for s, v in sorted(js.items())},
                               "js_final": js[trained["step"]],
                               "mass_on_space": float(np.exp(np.logaddexp.reduce(final)))}
      if k == "matched":  # the trained policy's mean log margin on its own pairs
        result[f"{name}_{k}"]["margins"] = {
            label: float(did.log_margins(lp, *pairs[k][0]).mean())
            for label, lp in (("policy", final), ("target", target), ("reference", logp_ref),
                              ("rejected", rejected[k]))}
    return result

  settings = {"space": config.space.to_dict(), "energy": e.to_dict(), "seed": config.seed,
              "objectives": config.objectives.to_dict(),
              "wrong_power_factor": config.wrong_power_factor}
  model = {"model": config.model.to_dict(), "decoder": dec.to_dict()}
  # The tabular stage is last: changing its settings reruns nothing of the decoder's.
  results = Pipeline(workdir, [
      Stage("sft", sft, {**settings, **model, "sft": config.sft.to_dict()},
            ("reference_logp.npy",)),
      Stage("decoder", decoder, {**settings, **model, "train": config.train.to_dict(),
                                 "optim": config.optim.to_dict(), "dpo": config.dpo.to_dict()}),
      Stage("tabular", tabular, {**settings, "tabular": config.tabular.to_dict(),
                                 "sweep": config.sweep.to_dict(),
                                 "train_pairs": dec.train_pairs}, ("tabular.npz",)),
  ]).run()
  _plot(workdir, results)
  return summarise(results)


def summarise(results: dict) -> dict:
  """The three claims with their numbers."""
  tab, dec = results["tabular"], results["decoder"]
  dpo = tab["js_final"]["dpo"]
  mismatched = {k: dpo[k] for k in REJECTED[1:]}
  matched_order = tab["margin_ordering"]["matched"]
  sweep = tab["sweep"]
  entropy = [row["did_entropy_normalized"] for row in sweep]
  summary = {
      "outputs": tab["outputs"],
      "js_initial": tab["js_initial"],
      "did_entropy_normalized": tab["did_entropy_normalized"],
      # Claim 1: with the matched pi_l, DPO (log-ratio reward) reaches pi*; others do not.
      "js_final_matched": dpo["matched"],
      **{f"js_final_mismatched_{k}": v for k, v in mismatched.items()},
      "js_final_simpo_matched": tab["js_final"]["simpo"]["matched"],
      "js_final_ipo_matched": tab["js_final"]["ipo"]["matched"],
      "decoder_js_final_matched": dec["dpo_matched"]["js_final"],
      **{f"decoder_js_final_mismatched_{k}": dec[f"dpo_{k}"]["js_final"] for k in REJECTED[1:]},
      "decoder_js_final_simpo_matched": dec["simpo_matched"]["js_final"],
      "decoder_js_final_ipo_matched": dec["ipo_matched"]["js_final"],
      "claim_matched_reaches_target": bool(
          dpo["matched"] < 0.1 * min(mismatched.values())
          and dec["dpo_matched"]["js_final"] < min(dec[f"dpo_{k}"]["js_final"]
                                                   for k in REJECTED[1:])),
      # Claim 2: the log-margin ordering m* >= m_ref >= m_l.
      "margin_ordering_holds": matched_order["means_ordered"],
      "margin_ordering_share_of_pairs": matched_order["share_of_pairs"],
      "margin_means_matched": [matched_order[k] for k in
                               ("mean_target_margin", "mean_reference_margin",
                                "mean_rejected_margin")],
      "margin_dpo_policy_matched": matched_order["mean_dpo_policy_margin"],
      "decoder_margins_matched": dec["dpo_matched"]["margins"],
      "margin_ordering_holds_mismatched": {k: tab["margin_ordering"][k]["means_ordered"]
                                           for k in REJECTED[1:]},
      # Claim 3: chosen log-likelihood drift against the DID entropy.
      "displacement_vs_entropy_corr": _pearson(entropy,
                                               [r["chosen_drift_final"] for r in sweep]),
      "displacement_median_vs_entropy_corr": _pearson(
          entropy, [r["chosen_drift_median"] for r in sweep]),
      "policy_entropy_change_vs_entropy_corr": _pearson(
          entropy, [r["policy_entropy_change"] for r in sweep]),
      "sweep": sweep,
  }
  return summary


def _plot(workdir: str, results: dict) -> None:
  with np.load(os.path.join(workdir, "tabular", "tabular.npz")) as arrays:
    steps = arrays["steps"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, name in zip(axes, ("dpo", "simpo", "ipo")):
      for i, k in enumerate(REJECTED):
        ax.plot(steps, arrays[f"{name}_js"][i], label=f"pi_l {k}")
      ax.set(title=f"tabular {name}", xlabel="step", yscale="symlog", ylabel="JS(pi || pi*)")
      ax.set_yscale("symlog", linthresh=1e-3)
    axes[0].legend()
    save_figure(fig, os.path.join(workdir, "js_tabular.png"))
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for key, row in results["decoder"].items():
    ax.plot([int(s) for s in row["js"]], list(row["js"].values()), marker="o", label=key)
  ax.set(title="decoder through the dpo trainer", xlabel="step", ylabel="JS(pi || pi*)")
  ax.legend(fontsize=7)
  save_figure(fig, os.path.join(workdir, "js_decoder.png"))
  ordering = results["tabular"]["margin_ordering"]
  fig, ax = plt.subplots(figsize=(7, 3.6))
  kinds = (("mean_target_margin", "m* (target)"), ("mean_reference_margin", "m_ref"),
           ("mean_rejected_margin", "m_l (rejected policy)"))
  for j, (key, label) in enumerate(kinds):
    ax.bar(np.arange(len(REJECTED)) + (j - 1) * 0.27, [ordering[k][key] for k in REJECTED],
           width=0.27, label=label)
  ax.set_xticks(np.arange(len(REJECTED)), [f"pi_l {k}" for k in REJECTED])
  ax.set(ylabel="mean log margin over the pairs",
         title="log-margin ordering m* >= m_ref >= m_l")
  ax.axhline(0, color="black", linewidth=0.5)
  ax.legend(fontsize=7)
  save_figure(fig, os.path.join(workdir, "margins.png"))
  sweep = results["tabular"]["sweep"]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  h = [r["did_entropy_normalized"] for r in sweep]
  axes[0].scatter(h, [r["chosen_drift_final"] for r in sweep])
  axes[0].set(xlabel="DID entropy / log N", ylabel="chosen log-likelihood drift",
              title="displacement vs DID entropy")
  axes[1].scatter(h, [r["policy_entropy_change"] for r in sweep])
  axes[1].set(xlabel="DID entropy / log N", ylabel="H(pi) - H(pi_ref) (nats)",
              title="reinforcement (<0) vs smoothing (>0)")
  for r in sweep:
    axes[0].annotate(f"s = {r['did_scale']}", (r["did_entropy_normalized"],
                                                    r["chosen_drift_final"]), fontsize=7)
  save_figure(fig, os.path.join(workdir, "displacement.png"))
