"""Scoring the benchmark: thresholds, ROC-AUC and the per-level table.

Every scorer gives each pair a number (higher: more likely copied). A scorer's decision
threshold is the one that maximises balanced accuracy on the train split (positives outnumber
negatives), except the LM judge's, which is fixed by its scale (likelihood >= 4). On the test
split: ROC-AUC over all pairs, balanced accuracy, and for each variation kind and level the
share of pairs decided correctly (detected copies; rejected negatives).
"""

from typing import Mapping, Sequence

import numpy as np

MODULES = ("melody", "rhythm", "harmony")


def feature_names(features: Mapping[str, float], drop: str | None = None) -> list[str]:
  """The baseline's inputs: every module's features, less those of module `drop`."""
  return sorted(k for k in features if drop is None or not k.startswith(drop + "_"))


def balanced_accuracy(y_N: np.ndarray, decided_N: np.ndarray) -> float:
  rates = [float(np.mean(decided_N[y_N == c] == c)) for c in (0, 1) if np.any(y_N == c)]
  return float(np.mean(rates)) if rates else float("nan")


def best_threshold(y_N: np.ndarray, s_N: np.ndarray) -> float:
  """The score cut (copied when score >= cut) with the best balanced accuracy on (y, s)."""
  candidates = np.unique(s_N)
  accuracies = [balanced_accuracy(y_N, (s_N >= c).astype(int)) for c in candidates]
  return float(candidates[int(np.argmax(accuracies))])


def roc_auc(y_N: np.ndarray, s_N: np.ndarray) -> float | None:
  """ROC-AUC (ties count half); None when one class is absent."""
  if len(set(y_N.tolist())) < 2:
    return None
  from sklearn.metrics import roc_auc_score
  return float(roc_auc_score(y_N, s_N))


def level_table(rows: Sequence[Mapping], decisions: Mapping[str, Mapping[str, int]],
                order: Sequence[str]) -> list[dict]:
  """One row per (kind, level) of `rows` (dicts with id, kind, level, label): how many pairs,
  and per scorer the share decided correctly (None where a scorer decided none of them)."""
  groups: dict[tuple[str, int], list[Mapping]] = {}
  for row in rows:
    groups.setdefault((row["kind"], row["level"]), []).append(row)
  table = []
  for (kind, level) in sorted(groups, key=lambda kl: (order.index(kl[0]) if kl[0] in order
                                                      else len(order), kl[0], kl[1])):
    members = groups[(kind, level)]
    entry = {"kind": kind, "level": level, "label": members[0]["label"], "pairs": len(members)}
    for scorer, decided in decisions.items():
      judged = [r for r in members if r["id"] in decided]
      entry[scorer] = (sum(decided[r["id"]] == r["label"] for r in judged) / len(judged)
                       if judged else None)
    table.append(entry)
  return table


def plot_roc(path: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
             title: str = "") -> None:
  """ROC curves of several scorers: name -> (labels, scores)."""
  from sklearn.metrics import roc_curve

  from llmjax.plotting import plt, save_figure
  fig, ax = plt.subplots(figsize=(6, 6))
  for name, (y_N, s_N) in curves.items():
    if len(set(y_N.tolist())) < 2:
      continue
    fpr, tpr, _ = roc_curve(y_N, s_N)
    ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y_N, s_N):.3f})",
            ls="--" if name.startswith("baseline -") else "-")
  ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  ax.set_title(title)
  ax.legend(fontsize=8, loc="lower right")
  save_figure(fig, path)
