"""Geometry of learned embeddings: effective dimension, PCA, Fourier structure, and the
restricted/excluded losses of Nanda et al. (2023).

Shape letters: E entities (numbers, vertices), D d_model, F frequencies, P modulus.
"""

import jax
import jax.numpy as jnp
import numpy as np

VARIANCE_SHARE = 0.01  # a principal component counts towards the effective dimension above this


def explained_variance(emb_ExD):
  """Share of variance of each principal component of the (centred) rows, descending."""
  centred = emb_ExD - emb_ExD.mean(axis=0, keepdims=True)
  singular = jnp.linalg.svd(centred.astype(jnp.float32), compute_uv=False)
  power = singular ** 2
  return power / jnp.maximum(power.sum(), 1e-30)


def effective_dimension(emb_ExD):
  """Number of principal components each explaining more than 1% of the variance."""
  return jnp.sum(explained_variance(emb_ExD) > VARIANCE_SHARE)


def pca(emb_ExD: np.ndarray, k: int = 2) -> np.ndarray:
  """Coordinates of each row on the first k principal components, [E, k]."""
  centred = np.asarray(emb_ExD, np.float64) - np.mean(emb_ExD, axis=0, keepdims=True)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:k].T


def fourier_power(emb_PxD: np.ndarray) -> np.ndarray:
  """Power of the embedding at each frequency k = 0..P//2 of Z_P, summed over D, normalised to
  sum to 1 over the non-constant frequencies (index 0 is the constant component, kept as is)."""
  spectrum = np.abs(np.fft.rfft(np.asarray(emb_PxD, np.float64), axis=0)) ** 2  # [P//2+1, D]
  power = spectrum.sum(axis=1)
  power[1:] = power[1:] / max(power[1:].sum(), 1e-30)
  return power


def key_frequencies(power: np.ndarray, coverage: float = 0.9, max_keys: int = 8) -> list[int]:
  """The fewest non-constant frequencies whose power adds up to `coverage` of the non-constant
  power, at most `max_keys` (a trained modular-addition embedding needs a handful; a random one
  would need all of them and is cut at the cap)."""
  order = np.argsort(power[1:])[::-1] + 1
  keys, total = [], 0.0
  for k in order[:max_keys]:
    keys.append(int(k))
    total += power[k]
    if total >= coverage:
      break
  return sorted(keys)


def frequency_plane(emb_PxD: np.ndarray, k: int) -> np.ndarray:
  """Each number's embedding projected onto frequency k's cos/sin plane, [P, 2].

  The plane is spanned by the embedding's k-th Fourier components, sum_x cos(2 pi k x / P) E_x
  and sum_x sin(2 pi k x / P) E_x (orthonormalised). An embedding that represents x through
  frequency k puts the numbers on a circle in it, number x at angle 2 pi k x / P.
  """
  emb = np.asarray(emb_PxD, np.float64)
  emb = emb - emb.mean(axis=0, keepdims=True)
  p = emb.shape[0]
  angle = 2 * np.pi * k * np.arange(p) / p
  directions = np.stack([np.cos(angle) @ emb, np.sin(angle) @ emb], axis=1)  # [D, 2]
  basis, _ = np.linalg.qr(directions)
  return emb @ basis


def _frequency_basis(p: int, keys: list[int]) -> np.ndarray:
  """Orthonormal directions cos/sin(2 pi k (x + y - c) / p) over the [x, y, c] logit grid."""
  x, y, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
  basis = []
  for k in keys:
    angle = 2 * np.pi * k * (x + y - c) / p
    for wave in (np.cos(angle), np.sin(angle)):
      basis.append((wave / np.linalg.norm(wave)).ravel())
  return np.stack(basis) if basis else np.zeros((0, p ** 3))


def restricted_and_excluded_loss(logits_PxPxP: np.ndarray, targets_PxP: np.ndarray,
                                 keys: list[int]) -> tuple[float, float]:
  """Nanda et al.'s progress measures for modular addition, over the whole table.

  restricted: cross-entropy when the logits keep only their components along the key-frequency
    directions cos/sin(w_k (x + y - c)) (plus each input's mean logit, which softmax ignores);
  excluded: cross-entropy when exactly those components are removed.
  A model that computes x + y through the key frequencies has a low restricted and a high
  excluded loss.
  """
  p = logits_PxPxP.shape[0]
  flat = np.asarray(logits_PxPxP, np.float64).ravel()
  basis = _frequency_basis(p, keys)
  along_keys = (basis.T @ (basis @ flat)).reshape(p, p, p)
  mean = np.asarray(logits_PxPxP, np.float64).mean(axis=-1, keepdims=True)

  def cross_entropy(logits):
    logits = jnp.asarray(logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.asarray(targets_PxP)[..., None], axis=-1)
    return float(-picked.mean())

  return (cross_entropy(along_keys + mean),
          cross_entropy(np.asarray(logits_PxPxP, np.float64) - along_keys))
