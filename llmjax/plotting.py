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
