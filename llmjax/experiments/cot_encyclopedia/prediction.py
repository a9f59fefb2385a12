"""Predicting, from the question alone, which pattern of each criterion will succeed.

The label of a question for criterion k is the pattern its correct responses used (the majority
among them; a tie gives no label). The paper trains on questions the model first answered
correctly and tests on the others (questions it first got wrong, labelled by the pattern a
later correct response used), one model's answers at a time; across domains, it trains on the
train questions of all domains but one and tests on that one's test questions. The classifier is
a logistic regression on the question's sentence embedding, one per criterion; the baselines
are the training labels' majority class and asking a judge (the prompting baseline, run by the
experiment).
"""

from typing import Sequence

import numpy as np


def question_labels(rows: Sequence[dict], m_RxC: np.ndarray) -> dict[str, list[int | None]]:
  """question -> per criterion, 1 (pattern A) or 0 (B) among its correct responses' patterns,
  None without a correct determined response or on a tie."""
  votes: dict[str, list[list[int]]] = {}
  for row, patterns in zip(rows, m_RxC):
    if not row.get("correct"):
      continue
    per_criterion = votes.setdefault(row["question"], [[] for _ in range(m_RxC.shape[1])])
    for k, value in enumerate(patterns):
      if value >= 0:
        per_criterion[k].append(int(value))
  labels = {}
  for question, per_criterion in votes.items():
    labels[question] = [None if not v or 2 * sum(v) == len(v) else int(2 * sum(v) > len(v))
                        for v in per_criterion]
  return labels


def first_answer_correct(rows: Sequence[dict]) -> dict[str, bool]:
  """question -> whether its first response (in file order) is correct."""
  first: dict[str, bool] = {}
  for row in rows:
    first.setdefault(row["question"], bool(row.get("correct")))
  return first


def fit(vectors: dict[str, np.ndarray], labels: dict[str, list[int | None]],
        train: Sequence[str], criterion: int, seed: int = 0):
  """question vector(s) -> predicted pattern (1 = A): the logistic regression on the labelled
  `train` questions, the majority class when they hold one class, None when none is labelled."""
  from llmjax.analysis.logistic import fit_logistic
  train = [q for q in train if labels.get(q) and labels[q][criterion] is not None]
  if not train:
    return None
  y_train = np.array([labels[q][criterion] for q in train])
  if len(set(y_train.tolist())) < 2:
    majority = int(y_train[0])
    return lambda x_NxD: np.full(len(x_NxD), majority)
  return fit_logistic(np.stack([vectors[q] for q in train]), y_train, seed).predict


def evaluate(vectors: dict[str, np.ndarray], labels: dict[str, list[int | None]],
             train: Sequence[str], test: Sequence[str], criterion: int,
             seed: int = 0) -> dict:
  """Accuracy of the per-criterion classifier and of the majority class on the labelled `test`
  questions, fitted on the labelled `train` ones."""
  train = [q for q in train if labels.get(q) and labels[q][criterion] is not None]
  test = [q for q in test if labels.get(q) and labels[q][criterion] is not None]
  if not train or not test:
    return {"train": len(train), "test": len(test), "accuracy": None,
            "majority_class_accuracy": None}
  y_train = np.array([labels[q][criterion] for q in train])
  y_test = np.array([labels[q][criterion] for q in test])
  majority = int(y_train.mean() >= 0.5)
  predicted = fit(vectors, labels, train, criterion, seed)(np.stack([vectors[q] for q in test]))
  return {"train": len(train), "test": len(test),
          "accuracy": float(np.mean(predicted == y_test)),
          "majority_class_accuracy": float(np.mean(y_test == majority))}
