"""Plots of a grokking run: curves with the three stages shaded, violation, effective
dimension, PCA of the embeddings at the end of each stage, the Fourier spectrum, and the
structure the papers draw (structure.png): for modular arithmetic the numbers projected onto
each key frequency's cos/sin plane (circles), for graphs the PCA with the graph's edges drawn
(a grid for the lattices), for comparison each attribute's best linear readout against its
value (a line) beside the PCA with grid edges."""

import os

import numpy as np

from llmjax import runio
from llmjax.experiments.grokking import geometry
from llmjax.plotting import plt, save_figure

STAGE_COLOURS = (("memorization", "#f4cccc"), ("symmetry acquisition", "#fff2cc"),
                 ("geometric organization", "#d9ead3"))


class EmbeddingSnapshots:
  """Seed 0's entity embeddings at every evaluation, kept beside the checkpoints so that a
  resumed run can still draw the PCA at each stage boundary."""

  def __init__(self, path: str):
    self.path = path
    self.steps: list[int] = []
    self.embeddings: list[np.ndarray] = []
    if os.path.exists(path):
      with np.load(path) as saved:
        self.steps = saved["steps"].tolist()
        self.embeddings = list(saved["embeddings"])

  def keep_through(self, step: int) -> None:
    kept = [(s, e) for s, e in zip(self.steps, self.embeddings) if s <= step]
    self.steps = [s for s, _ in kept]
    self.embeddings = [e for _, e in kept]

  def add(self, step: int, embedding: np.ndarray) -> None:
    self.steps.append(int(step))
    self.embeddings.append(np.asarray(embedding, np.float32))

  def at(self, step: int) -> np.ndarray:
    """The snapshot at the last evaluation at or before `step`."""
    index = max(i for i, s in enumerate(self.steps) if s <= step)
    return self.embeddings[index]

  def save(self) -> None:
    if runio.is_writer() and self.steps:
      with runio.atomic_output(self.path) as tmp:
        np.savez(tmp, steps=np.asarray(self.steps), embeddings=np.stack(self.embeddings))


def _shade(ax, found: dict, last_step: int) -> None:
  bounds = [0, found["step_memorized"], found["step_symmetry"], found["step_organized"]]
  for (label, colour), start, end in zip(STAGE_COLOURS, bounds, bounds[1:]):
    if start is not None and end is not None and end > start:
      ax.axvspan(start, min(end, last_step), color=colour, alpha=0.6, label=label, lw=0)


def all_curves(plot_dir: str, per_seed, threshold: float, stage_signal: str) -> None:
  """accuracy.png, loss.png, violation.png, effective_dimension.png (seed 0 bold, others thin).
  violation.png draws `stage_signal` (the column the symmetry stage read; its crossing is the
  dashed line) beside every identity's maximum and mean."""
  if not runio.is_writer():
    return
  curve0, found0 = per_seed[0]
  last = curve0[-1]["step"]
  panels = [
      ("accuracy", (("train_accuracy", "train"), ("test_accuracy", "test")), False),
      ("loss", (("train_loss", "train"), ("test_loss", "test")), True),
      ("violation", ((stage_signal, f"{stage_signal} (the stage signal)"),
                     *((key, label) for key, label in (("violation_max", "every identity: max"),
                                                       ("violation", "every identity: mean"))
                       if key != stage_signal)),
       True),
      ("effective_dimension", (("effective_dimension", "effective dimension"),), False),
  ]
  for name, series, logy in panels:
    fig, ax = plt.subplots(figsize=(7, 4))
    _shade(ax, found0, last)
    for i, (curve, _) in enumerate(per_seed):
      steps = [r["step"] for r in curve]
      for (key, label), colour in zip(series, ("tab:blue", "tab:orange", "tab:purple")):
        ax.plot(steps, [max(r[key], 1e-8) if logy else r[key] for r in curve], color=colour,
                lw=1.8 if i == 0 else 0.6, alpha=1.0 if i == 0 else 0.4,
                label=f"{label} (seed 0)" if i == 0 else None)
    if name == "violation" and found0["step_symmetry"] is not None:
      ax.axvline(found0["step_symmetry"], color="k", ls="--", lw=1,
                 label=f"below {threshold:g} x peak")
    for key, marker in (("step_generalized", "generalized"),):
      if found0[key] is not None:
        ax.axvline(found0[key], color="tab:green", ls=":", lw=1.2, label=marker)
    ax.set(xlabel="step", ylabel=name.replace("_", " "), title=f"{name.replace('_', ' ')} "
           "(shaded: stages of seed 0)")
    if logy:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(plot_dir, f"{name}.png"))


def stage_pca(path: str, snapshots: EmbeddingSnapshots, found: dict, task) -> None:
  """First two principal components of seed 0's entity embeddings at the end of each stage."""
  if not runio.is_writer() or not snapshots.steps:
    return
  moments = [("end of memorization", found["step_memorized"]),
             ("end of symmetry acquisition", found["step_symmetry"]),
             ("end of organization", found["step_organized"]), ("final", snapshots.steps[-1])]
  moments = [(label, step) for label, step in moments if step is not None]
  fig, axes = plt.subplots(1, len(moments), figsize=(4 * len(moments), 4), squeeze=False)
  colour = np.arange(len(task.entity_tokens))
  for ax, (label, step) in zip(axes[0], moments):
    xy = geometry.pca(snapshots.at(step), 2)
    ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="viridis", s=14)
    ax.set(title=f"{label} (step {step})", xticks=[], yticks=[])
  fig.suptitle(f"{task.name}: PCA of entity embeddings (colour = token order)")
  save_figure(fig, path)


def fourier(path: str, power: np.ndarray, keys: list[int]) -> None:
  if not runio.is_writer():
    return
  fig, ax = plt.subplots(figsize=(7, 3.5))
  freqs = np.arange(1, len(power))
  ax.bar(freqs, power[1:], color=["tab:red" if k in keys else "tab:gray" for k in freqs])
  ax.set(xlabel="frequency k", ylabel="share of embedding power",
         title=f"Fourier spectrum of the embeddings (key frequencies {keys})")
  save_figure(fig, path)


def structure(path: str, emb_ExD: np.ndarray, task, keys: list[int]) -> None:
  """The geometry the papers show, for seed 0's final entity embeddings (module docstring)."""
  if not runio.is_writer():
    return
  emb = np.asarray(emb_ExD, np.float64)
  if task.family == "algebraic":
    keys = keys[:4] or [1]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4), squeeze=False)
    p = task.modulus
    for ax, k in zip(axes[0], keys):
      xy = geometry.frequency_plane(emb, k)
      ax.scatter(xy[:, 0], xy[:, 1], c=(k * np.arange(p)) % p, cmap="hsv", s=16)
      ax.set(title=f"frequency {k}: cos/sin plane", xticks=[], yticks=[], aspect="equal")
    fig.suptitle(f"{task.name}: numbers on each key frequency's plane "
                 "(colour = k*x mod p, the position on the circle)")
    save_figure(fig, path)
    return
  panels = 2 if task.family == "comparison" else 1
  fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.5), squeeze=False)
  xy = geometry.pca(emb, 2)
  ax = axes[0][0]
  for a, b in task.neighbours_Ex2:
    ax.plot(xy[[a, b], 0], xy[[a, b], 1], color="0.6", lw=0.6, zorder=1)
  ax.scatter(xy[:, 0], xy[:, 1], c=np.arange(len(xy)), cmap="viridis", s=14, zorder=2)
  ax.set(title="PCA with the task's neighbour edges", xticks=[], yticks=[])
  if task.family == "comparison":
    coords = task.entity_coordinates
    ax = axes[0][1]
    # Read each attribute off the top principal components only (as many as attributes, plus
    # one): with all d_model directions any labelling of 49 points would fit exactly.
    top = geometry.pca(emb, coords.shape[1] + 1)
    for attr in range(coords.shape[1]):
      target = coords[:, attr] - coords[:, attr].mean()
      direction, *_ = np.linalg.lstsq(top, target, rcond=None)
      ax.scatter(coords[:, attr], top @ direction, s=14, label=f"attribute {attr}")
    ax.set(xlabel="attribute value", ylabel="linear readout (top principal components)",
           title="each attribute along a line")
    ax.legend(fontsize=7)
  fig.suptitle(f"{task.name}: geometry of the entity embeddings")
  save_figure(fig, path)
