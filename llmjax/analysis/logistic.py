"""A logistic-regression classifier on standardised features, classes weighted to balance: the
learned baseline of the music judge and the strategy predictor of the CoT Encyclopedia."""

import numpy as np


def fit_logistic(x_NxF: np.ndarray, y_N: np.ndarray, seed: int = 0):
  """A fitted scikit-learn pipeline (StandardScaler, then LogisticRegression with balanced
  class weights); `.predict` and `.predict_proba` take [N, F] features."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced",
                                                             max_iter=2000, random_state=seed))
  return model.fit(x_NxF, y_N)
