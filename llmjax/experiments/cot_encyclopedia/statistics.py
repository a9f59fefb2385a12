"""Comparing two models' strategy use: pattern shares, chi-squared test and Cohen's d.

The classification stage gives a binary matrix M_RxC (response x criterion; 1 = pattern A,
0 = pattern B, -1 = not determined). Per model and criterion, the share of A among determined
responses; between two models, per criterion, a chi-squared test of the 2x2 table (model x
pattern) and Cohen's d of the 0/1 pattern values (pooled standard deviation).
"""

import math

import numpy as np


def pattern_shares(m_RxC: np.ndarray, models: list[str]) -> dict[str, list[float | None]]:
  """model -> per criterion, the share of pattern A among its determined responses."""
  out = {}
  for model in sorted(set(models)):
    rows = m_RxC[np.array(models) == model]
    shares = []
    for c in range(m_RxC.shape[1]):
      column = rows[:, c]
      determined = column[column >= 0]
      shares.append(float(determined.mean()) if len(determined) else None)
    out[model] = shares
  return out


def cohens_d(x: np.ndarray, y: np.ndarray) -> float | None:
  """(mean x - mean y) / pooled standard deviation (ddof 1); None when undefined."""
  if len(x) < 2 or len(y) < 2:
    return None
  pooled = ((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2)
  if pooled <= 0:
    return None
  return float((x.mean() - y.mean()) / math.sqrt(pooled))


def compare_models(m_RxC: np.ndarray, models: list[str], first: str, second: str) -> list[dict]:
  """Per criterion: both models' A shares, the chi-squared statistic and p-value of the 2x2
  table (Yates-corrected, as scipy does for 2x2), and Cohen's d."""
  from scipy.stats import chi2_contingency
  names = np.array(models)
  out = []
  for c in range(m_RxC.shape[1]):
    x = m_RxC[names == first, c]
    y = m_RxC[names == second, c]
    x, y = x[x >= 0].astype(float), y[y >= 0].astype(float)
    table = np.array([[x.sum(), len(x) - x.sum()], [y.sum(), len(y) - y.sum()]])
    chi2 = p = None
    if table.sum(axis=0).all() and table.sum(axis=1).all():
      chi2, p, _, _ = chi2_contingency(table)
      chi2, p = float(chi2), float(p)
    out.append({"criterion": c, f"share_a_{first}": float(x.mean()) if len(x) else None,
                f"share_a_{second}": float(y.mean()) if len(y) else None,
                "chi2": chi2, "p_value": p, "cohens_d": cohens_d(x, y)})
  return out
