"""The Differential Information Distribution (Won, Lee, Hwang, Seo 2025) and what the paper
reads from it: exact quantities on finite output spaces, and a Monte-Carlo estimate of the
DID's entropy for sequence models.

Shape letters: N outcomes of a finite output space, P preference pairs, K samples.
All log-probabilities are natural logs, held in float64.

For policies pi and pi_ref over the same outputs y, the DID from pi_ref to pi is the normalised
likelihood ratio
    q_{pi/pi_ref}(y) = (pi/pi_ref)(y) / sum_y' (pi/pi_ref)(y').
Its entropy says what kind of information turned pi_ref into pi: a low-entropy DID puts mass on
few outputs (the update reinforces them), a high-entropy one spreads it (the update smooths the
policy). Preference pairs (y_w ~ pi_ref, y_l ~ pi_l) labelled by Bradley-Terry on
log q_{pi_ref/pi_l} encode the DID that turns pi_ref into pi* when
q_{pi_ref/pi_l} is proportional to q_{pi*/pi_ref}^beta, that is when
pi_l is proportional to pi_ref^(1+beta) pi*^(-beta) (`matched_rejected_policy`); then every
correctly labelled pair has log margins m* >= m_ref >= m_l (m = log pi(y_w) - log pi(y_l)).
"""

import dataclasses

import numpy as np
from scipy.special import logsumexp


def normalize(logp_N) -> np.ndarray:
  """Log-probabilities from unnormalised log-weights."""
  logp_N = np.asarray(logp_N, np.float64)
  return logp_N - logsumexp(logp_N)


def log_did(logp_pi_N, logp_ref_N) -> np.ndarray:
  """log q_{pi/pi_ref} over a finite output space: log(pi/pi_ref), normalised."""
  return normalize(np.asarray(logp_pi_N, np.float64) - np.asarray(logp_ref_N, np.float64))


def entropy(logp_N) -> float:
  """Shannon entropy in nats of a distribution given by its log-probabilities."""
  logp_N = np.asarray(logp_N, np.float64)
  p = np.exp(logp_N)
  return float(-np.sum(np.where(p > 0, p * logp_N, 0.0)))


def did_entropy(logp_pi_N, logp_ref_N) -> float:
  """H(q_{pi/pi_ref}) in nats."""
  return entropy(log_did(logp_pi_N, logp_ref_N))


def kl(logp_N, logq_N) -> float:
  """KL(p || q) in nats."""
  p = np.exp(logp_N)
  return float(np.sum(np.where(p > 0, p * (logp_N - logq_N), 0.0)))


def js_divergence(logp_N, logq_N) -> float:
  """Jensen-Shannon divergence in nats (0 to log 2)."""
  logm = np.logaddexp(logp_N, logq_N) - np.log(2.0)
  return max(0.5 * kl(logp_N, logm) + 0.5 * kl(logq_N, logm), 0.0)


def matched_rejected_policy(logp_ref_N, logp_target_N, beta: float) -> np.ndarray:
  """The rejected-response policy whose pairs encode the DID from pi_ref to pi* with power
  beta: log pi_l = (1 + beta) log pi_ref - beta log pi*, normalised. DPO with the same beta
  then has pi* as its optimum."""
  return normalize((1.0 + beta) * np.asarray(logp_ref_N) - beta * np.asarray(logp_target_N))


def bradley_terry_pairs(rng: np.random.Generator, logp_ref_N, logp_rejected_N, n: int):
  """n labelled pairs: y_w ~ pi_ref, y_l ~ pi_l, kept in that order with probability
  s(log q_{pi_ref/pi_l}(y_w) - log q_{pi_ref/pi_l}(y_l)), else swapped.

  Returns (chosen_P, rejected_P): indices into the output space."""
  p_ref, p_rej = np.exp(logp_ref_N), np.exp(logp_rejected_N)
  a = rng.choice(len(p_ref), size=n, p=p_ref / p_ref.sum())
  b = rng.choice(len(p_rej), size=n, p=p_rej / p_rej.sum())
  reward_N = np.asarray(logp_ref_N) - np.asarray(logp_rejected_N)  # log q up to a constant
  keep = rng.random(n) < 1.0 / (1.0 + np.exp(-(reward_N[a] - reward_N[b])))
  return np.where(keep, a, b), np.where(keep, b, a)


def log_margins(logp_N, chosen_P, rejected_P) -> np.ndarray:
  """m = log pi(y_w) - log pi(y_l) per pair."""
  logp_N = np.asarray(logp_N)
  return logp_N[chosen_P] - logp_N[rejected_P]


def margin_ordering(logp_target_N, logp_ref_N, logp_rejected_N, chosen_P, rejected_P) -> dict:
  """The log-margin ordering m* >= m_ref >= m_l over the pairs: the share of pairs where it
  holds (ties, as for identical outputs, count as holding), the mean margins, and whether the
  means are ordered."""
  m_star, m_ref, m_l = (log_margins(lp, chosen_P, rejected_P)
                        for lp in (logp_target_N, logp_ref_N, logp_rejected_N))
  tol = 1e-9
  holds = (m_star >= m_ref - tol) & (m_ref >= m_l - tol)
  means = [float(m.mean()) for m in (m_star, m_ref, m_l)]
  return {"share_of_pairs": float(holds.mean()), "mean_target_margin": means[0],
          "mean_reference_margin": means[1], "mean_rejected_margin": means[2],
          "means_ordered": bool(means[0] >= means[1] >= means[2])}


@dataclasses.dataclass(frozen=True)
class DIDEntropyEstimate:
  """A Monte-Carlo reading of the DID from K samples of pi_ref (ours; the paper's estimator is
  not public).

  entropy, entropy_se: H(q_{pi/pi_ref}) in nats and its delta-method standard error.
  weight_entropy: entropy of the self-normalised weights w_k ~ (pi/pi_ref)(y_k), which is the
    DID restricted to the samples; weight_entropy_normalized divides it by log K (1 when the
    weights are flat, 0 when one sample holds them all). It tends to log K - KL(pi || pi_ref),
    so it measures how far pi moved from pi_ref, not H(q).
  effective_samples: 1 / sum w_k^2.
  """

  entropy: float
  entropy_se: float
  weight_entropy: float
  weight_entropy_normalized: float
  effective_samples: float
  samples: int


def did_entropy_mc(logp_pi_K, logp_ref_K) -> DIDEntropyEstimate:
  """Estimates the DID's entropy from K outputs sampled from pi_ref with their log-probs
  under pi and pi_ref (for a sequence model: summed token log-probs of each sample).

  H(q) = log Z - E_q[log r] with r = pi/pi_ref and Z = sum_y r(y). Sums over the output space
  are expectations under pi_ref of f(y)/pi_ref(y), so with v_k = r(y_k)/pi_ref(y_k):
    Z ~ mean_k v_k,   E_q[log r] ~ sum_k v_k log r_k / sum_k v_k,
  a ratio estimator that converges to H(q) as K grows (for any pi_ref with full support). Its
  variance grows with how unevenly pi_ref covers the outputs that q weighs, so read entropy_se.
  """
  logp_pi = np.asarray(logp_pi_K, np.float64)
  logp_ref = np.asarray(logp_ref_K, np.float64)
  if logp_pi.shape != logp_ref.shape or logp_pi.ndim != 1 or len(logp_pi) < 2:
    raise ValueError(f"expected two [K] arrays of log-probs with K >= 2, got shapes "
                     f"{logp_pi.shape} and {logp_ref.shape}")
  K = len(logp_pi)
  log_r = logp_pi - logp_ref
  log_v = log_r - logp_ref
  shift = log_v.max()
  v = np.exp(log_v - shift)  # v / c with c = exp(shift)
  a, b = v.mean(), (v * log_r).mean()
  h = np.log(a) + shift - b / a
  # Delta method on h(A, B) = log A - B / A with the sample covariance of (v, v log r).
  grad = np.array([1.0 / a + b / a**2, -1.0 / a])
  cov = np.cov(np.stack([v, v * log_r]), ddof=1) / K
  se = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
  log_w = log_r - logsumexp(log_r)
  w = np.exp(log_w)
  weight_entropy = float(-np.sum(w * log_w))
  return DIDEntropyEstimate(entropy=float(h), entropy_se=se, weight_entropy=weight_entropy,
                            weight_entropy_normalized=weight_entropy / np.log(K),
                            effective_samples=float(1.0 / np.sum(w**2)), samples=K)
