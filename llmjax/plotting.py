"""Plots of a run's curves, written atomically under workdir/plots/."""

import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402

from llmjax import runio  # noqa: E402


def save_figure(fig, path: os.PathLike) -> None:
  with runio.atomic_output(path) as tmp:
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
  plt.close(fig)


def plot_curves(path: os.PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                xlabel: str = "step", ylabel: str = "", title: str = "",
                logy: bool = False) -> None:
  """One line per entry of `series` ({label: (xs, ys)}); process 0 only."""
  if not runio.is_writer():
    return
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (xs, ys) in series.items():
    ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  if logy:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend()
  save_figure(fig, path)


def plot_bars(path: os.PathLike, values: Mapping[str, float], ylabel: str = "",
              title: str = "", ylim: tuple[float, float] | None = None) -> None:
  """One bar per entry of `values` ({label: value}; NaN bars are left empty); process 0 only."""
  if not runio.is_writer():
    return
  fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(values) + 1.5), 4))
  labels = list(values)
  ax.bar(range(len(labels)), [values[k] for k in labels])
  ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
  ax.set(ylabel=ylabel, title=title)
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.grid(alpha=0.3, axis="y")
  save_figure(fig, path)


def plot_radar(path: os.PathLike, series: Mapping[str, Mapping[str, float]], title: str = "",
               limit: float = 5.0) -> None:
  """A radar chart: one polygon per entry of `series` ({label: {axis: value}}), the axes of the
  first entry, radius 0..`limit`; process 0 only."""
  import math
  if not runio.is_writer() or not series:
    return
  axes = list(next(iter(series.values())))
  angles = [2 * math.pi * i / len(axes) for i in range(len(axes))] + [0.0]
  fig = plt.figure(figsize=(6, 6))
  ax = fig.add_subplot(polar=True)
  for label, values in series.items():
    radii = [values.get(a, float("nan")) for a in axes]
    ax.plot(angles, radii + radii[:1], label=label)
    ax.fill(angles, radii + radii[:1], alpha=0.15)
  ax.set_xticks(angles[:-1], axes, fontsize=8)
  ax.set_ylim(0, limit)
  ax.set_title(title)
  if len(series) > 1:
    ax.legend(loc="lower right", fontsize=8)
  save_figure(fig, path)
