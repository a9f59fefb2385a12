"""Grouping criteria into strategies: agglomerative clustering of their embeddings.

Two rules: the paper's (average linkage on cosine distance, the number of clusters chosen by
the best silhouette score over a range of k) and the released code's (Ward linkage on the raw
vectors, cut at a distance threshold, 10.5 there). Each cluster is represented by its medoid:
the member with the smallest total cosine distance to the other members.
"""

import dataclasses

import numpy as np

METHODS = ("average_silhouette", "ward_threshold")


@dataclasses.dataclass(frozen=True)
class Clustering:
  labels: np.ndarray  # [N] cluster of each criterion, 0..k-1
  k: int
  medoids: tuple[int, ...]  # [k] index of each cluster's representative
  silhouettes: dict[int, float]  # k -> silhouette score (the average_silhouette rule)


def cosine_distances(e_NxD: np.ndarray) -> np.ndarray:
  """D_NxN: 1 - cosine similarity (rows need not be unit length)."""
  unit = e_NxD / np.maximum(np.linalg.norm(e_NxD, axis=1, keepdims=True), 1e-12)
  return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)


def medoids(e_NxD: np.ndarray, labels: np.ndarray) -> tuple[int, ...]:
  """For each cluster 0..k-1, the member with the least summed cosine distance to the others
  (ties: the lowest index)."""
  distances = cosine_distances(e_NxD)
  chosen = []
  for cluster in range(int(labels.max()) + 1):
    members = np.flatnonzero(labels == cluster)
    chosen.append(int(members[np.argmin(distances[np.ix_(members, members)].sum(axis=1))]))
  return tuple(chosen)


def _relabel(raw: np.ndarray) -> np.ndarray:
  """Cluster ids 0..k-1 in order of first appearance (scipy numbers them 1..k arbitrarily)."""
  order = {}
  for label in raw:
    order.setdefault(int(label), len(order))
  return np.array([order[int(label)] for label in raw])


def cluster(e_NxD: np.ndarray, method: str = "average_silhouette", k_min: int = 2,
            k_max: int = 12, threshold: float = 10.5) -> Clustering:
  """Clusters N criterion embeddings.

  Args:
    method: 'average_silhouette' (the paper: average linkage, cosine distance, k in
      [k_min, k_max] with the best silhouette; ties: the smaller k) or 'ward_threshold' (the
      released code: Ward linkage, cut at `threshold`).
  """
  from scipy.cluster.hierarchy import fcluster, linkage
  from scipy.spatial.distance import squareform
  from sklearn.metrics import silhouette_score
  if method not in METHODS:
    raise ValueError(f"clustering method {method!r}: expected one of {METHODS}")
  n = len(e_NxD)
  if n < 2:
    labels = np.zeros(n, int)
    return Clustering(labels, n, medoids(e_NxD, labels) if n else (), {})
  if method == "ward_threshold":
    tree = linkage(e_NxD, method="ward")
    labels = _relabel(fcluster(tree, t=threshold, criterion="distance"))
    return Clustering(labels, int(labels.max()) + 1, medoids(e_NxD, labels), {})
  distances = cosine_distances(e_NxD)
  np.fill_diagonal(distances, 0.0)
  tree = linkage(squareform(distances, checks=False), method="average")
  scores: dict[int, float] = {}
  for k in range(max(2, k_min), min(k_max, n - 1) + 1):
    labels = fcluster(tree, t=k, criterion="maxclust")
    if len(set(labels.tolist())) < 2:
      continue
    scores[len(set(labels.tolist()))] = float(
        silhouette_score(distances, labels, metric="precomputed"))
  if not scores:
    labels = np.zeros(n, int)
    return Clustering(labels, 1, medoids(e_NxD, labels), {})
  best = max(scores, key=lambda k: (scores[k], -k))
  labels = _relabel(fcluster(tree, t=best, criterion="maxclust"))
  return Clustering(labels, best, medoids(e_NxD, labels), scores)


def project_2d(e_NxD: np.ndarray) -> np.ndarray:
  """P_Nx2: the first two principal components (for the cluster plot)."""
  centred = e_NxD - e_NxD.mean(axis=0, keepdims=True)
  if len(e_NxD) < 2:
    return np.zeros((len(e_NxD), 2))
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  out = centred @ vt[:2].T
  return out if out.shape[1] == 2 else np.pad(out, [(0, 0), (0, 2 - out.shape[1])])


def plot_clusters(path: str, e_NxD: np.ndarray, clustering: Clustering,
                  names: list[str]) -> None:
  """The criteria in 2-D (PCA), coloured by cluster; medoids labelled with their name."""
  from llmjax.plotting import plt, save_figure
  points = project_2d(e_NxD)
  fig, ax = plt.subplots(figsize=(8, 6))
  colours = plt.get_cmap("tab10")
  for c in range(clustering.k):
    members = clustering.labels == c
    ax.scatter(points[members, 0], points[members, 1], s=18, color=colours(c % 10),
               label=f"cluster {c} ({int(members.sum())})")
  for c, index in enumerate(clustering.medoids):
    ax.scatter(*points[index], s=90, marker="*", color=colours(c % 10), edgecolor="black")
    ax.annotate(names[index][:60], points[index], fontsize=7, xytext=(4, 4),
                textcoords="offset points")
  ax.set_xlabel("PC 1")
  ax.set_ylabel("PC 2")
  ax.set_title(f"criteria by cluster (k = {clustering.k}; stars: medoids)")
  ax.legend(fontsize=7, loc="best")
  save_figure(fig, path)
