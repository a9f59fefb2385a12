"""k-coverage of a training set (the coverage principle, Chang et al. 2025).

Definitions, for inputs of n positions and a training set D of (input, target) pairs:
- For a non-trivial subset S of positions (neither empty nor all), an input splits into a
  fragment x_S and a context x_{not S}.
- Two fragments of S are k-equivalent when, in D, they occur with at least k shared contexts
  and with the same target in every shared context. Fragments are grouped into classes by the
  transitive closure of k-equivalence (union-find).
- Inputs x and x' are connected when, for some S, they have the same context, fragments of the
  same class, and the same target. The k-coverage of D is every input connected (transitively)
  to a training input; training inputs are covered.

The substitution graph is built over the whole input domain (every one of the N^n inputs, with
its true target), as the paper defines it: a path may pass through inputs that are neither
training nor test inputs. D is a set: repeated training rows are counted once (a duplicate
would otherwise count as a second agreement in the same context, and a pair whose agreements
outnumber its distinct shared contexts is rejected, so a true equivalence could be dropped).

`k_coverage` computes it for every input of the domain at once, vectorised: per subset, the
candidate fragment pairs are those that agree in some context (grouped by (context, target)),
their shared contexts are counted with bitsets, and the classes come from connected components;
the inputs are then joined through one hub node per (subset, class, context, target).
`k_coverage_brute_force` follows the definition literally (pair by pair, then a breadth-first
search over single substitutions) and exists to check the fast one in tests.
"""

import itertools
from collections import defaultdict

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph


def _check_k(k) -> None:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k = {k!r}: expected an integer >= 1 (the number of shared contexts "
                     "two fragments need to be equivalent)")


def nontrivial_subsets(num_positions: int) -> list[tuple[int, ...]]:
  return [s for r in range(1, num_positions)
          for s in itertools.combinations(range(num_positions), r)]


def _ids(values: np.ndarray, n_tokens: int) -> np.ndarray:
  """Mixed-radix id of each row of `values` [R, m] (0 for m = 0)."""
  ids = np.zeros(len(values), np.int64)
  for column in values.T:
    ids = ids * n_tokens + column
  return ids


def _pairs_within_groups(keys: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """All (a, b) pairs of `members` that share a key, a listed before b in key order."""
  order = np.argsort(keys, kind="stable")
  keys, members = keys[order], members[order]
  firsts, seconds = [], []
  for offset in range(1, len(keys)):
    same = keys[offset:] == keys[:-offset]
    if not same.any():
      break  # sorted: if no element equals the one `offset` later, none is further away
    firsts.append(members[:-offset][same])
    seconds.append(members[offset:][same])
  if not firsts:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(firsts), np.concatenate(seconds)


def fragment_classes(fragments: np.ndarray, contexts: np.ndarray, targets: np.ndarray,
                     num_fragments: int, num_contexts: int, k: int) -> np.ndarray:
  """Class label of every fragment id under the transitive closure of k-equivalence.

  Args:
    fragments, contexts, targets: per training example, its fragment id, context id, target.
    num_fragments, num_contexts: sizes of the id spaces.
    k: minimum number of shared contexts.
  Returns:
    labels [num_fragments]; fragments never seen in training are alone in their class.
  """
  # Pairs that agree somewhere: same context, same target.
  first, second = _pairs_within_groups(contexts * (targets.max(initial=0) + 1) + targets,
                                       fragments)
  lo, hi = np.minimum(first, second), np.maximum(first, second)
  pair_ids, agreements = np.unique(lo * num_fragments + hi, return_counts=True)
  candidates = agreements >= k
  lo, hi = pair_ids[candidates] // num_fragments, pair_ids[candidates] % num_fragments
  agreements = agreements[candidates]
  # Shared contexts, from bitsets of each fragment's contexts: equivalence needs
  # shared == agreements (no shared context with different targets).
  words = (num_contexts + 63) // 64
  bits = np.zeros((num_fragments, words), np.uint64)
  np.bitwise_or.at(bits, (fragments, contexts // 64),
                   np.left_shift(np.uint64(1), (contexts % 64).astype(np.uint64)))
  shared = np.zeros(len(lo), np.int64)
  for start in range(0, len(lo), 1 << 16):  # bounded memory for long candidate lists
    block = slice(start, start + (1 << 16))
    shared[block] = np.bitwise_count(bits[lo[block]] & bits[hi[block]]).sum(axis=1)
  equivalent = shared == agreements
  graph = scipy.sparse.coo_matrix(
      (np.ones(int(equivalent.sum()), np.int8), (lo[equivalent], hi[equivalent])),
      shape=(num_fragments, num_fragments))
  return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def k_coverage(train_inputs: np.ndarray, full_targets: np.ndarray, k: int) -> np.ndarray:
  """Which inputs of the whole domain lie in the k-coverage of the training inputs.

  Args:
    train_inputs: [M, n] training inputs (token ids in [0, N)); repeated rows count once.
    full_targets: the target of every input, an array of shape (N,) * n.
    k: the equivalence threshold (an integer >= 1).
  Returns:
    covered: bool array of shape (N,) * n.
  """
  _check_k(k)
  train_inputs = np.unique(np.asarray(train_inputs).reshape(len(train_inputs), -1), axis=0)
  n = full_targets.ndim
  N = full_targets.shape[0]
  size = full_targets.size
  all_inputs = np.indices(full_targets.shape).reshape(n, -1).T
  all_targets = full_targets.reshape(-1)
  train_ids = np.ravel_multi_index(tuple(train_inputs.T), full_targets.shape)
  train_targets = all_targets[train_ids]
  num_target_values = int(all_targets.max()) + 1

  hub_rows, hub_cols, next_hub = [], [], size
  for subset in nontrivial_subsets(n):
    rest = [p for p in range(n) if p not in subset]
    classes = fragment_classes(_ids(train_inputs[:, subset], N),
                               _ids(train_inputs[:, rest], N), train_targets,
                               N ** len(subset), N ** len(rest), k)
    # One hub per (fragment class, context, target): inputs sharing it are connected.
    keys = ((classes[_ids(all_inputs[:, subset], N)].astype(np.int64) * N ** len(rest)
             + _ids(all_inputs[:, rest], N)) * num_target_values + all_targets)
    _, hubs = np.unique(keys, return_inverse=True)
    hub_rows.append(np.arange(size))
    hub_cols.append(hubs + next_hub)
    next_hub += int(hubs.max()) + 1
  rows, cols = np.concatenate(hub_rows), np.concatenate(hub_cols)
  graph = scipy.sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)),
                                  shape=(next_hub, next_hub))
  components = scipy.sparse.csgraph.connected_components(graph, directed=False)[1][:size]
  covered = np.isin(components, components[train_ids])
  return covered.reshape(full_targets.shape)


def k_coverage_brute_force(train_inputs: np.ndarray, full_targets: np.ndarray,
                           k: int) -> np.ndarray:
  """The definition, literally: pairwise equivalence, union-find, breadth-first substitution.
  For tests on small instances only."""
  _check_k(k)
  n, shape = full_targets.ndim, full_targets.shape
  train = {tuple(int(v) for v in x): int(full_targets[tuple(x)]) for x in train_inputs}
  classes = {}
  for subset in nontrivial_subsets(n):
    rest = [p for p in range(n) if p not in subset]
    seen = defaultdict(dict)  # fragment -> {context: target}
    for x, y in train.items():
      seen[tuple(x[p] for p in subset)][tuple(x[p] for p in rest)] = y
    parent = {}

    def find(a):
      while parent.setdefault(a, a) != a:
        a = parent[a]
      return a

    fragments = list(seen)
    for a, b in itertools.combinations(fragments, 2):
      shared = set(seen[a]) & set(seen[b])
      if len(shared) >= k and all(seen[a][c] == seen[b][c] for c in shared):
        parent[find(a)] = find(b)
    members = defaultdict(list)
    for a in fragments:
      members[find(a)].append(a)
    classes[subset] = {a: members[find(a)] for a in fragments}

  covered = set(train)
  frontier = list(train)
  while frontier:
    x = frontier.pop()
    for subset, fragment_class in classes.items():
      fragment = tuple(x[p] for p in subset)
      for other in fragment_class.get(fragment, [fragment]):
        y = list(x)
        for p, v in zip(subset, other):
          y[p] = v
        y = tuple(y)
        if y not in covered and full_targets[y] == full_targets[x]:
          covered.add(y)
          frontier.append(y)
  mask = np.zeros(shape, bool)
  for x in covered:
    mask[x] = True
  return mask
