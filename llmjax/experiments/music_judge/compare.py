"""Compare two scores with the melody, rhythm and harmony modules.

  python -m llmjax.experiments.music_judge.compare A B [--part-a P] [--part-b P]
      [--number-a N] [--number-b N]
      [--figure roll.png] [--json]

A and B are score files (MIDI, MusicXML, ABC, Humdrum) or music21 corpus paths
("bach/bwv66.6"); --part picks one part (index or name) instead of the skyline of all parts,
--number one piece of a multi-piece file. Prints one line per module, and writes a piano roll
of both melodies with the notes each module matched drawn in colour. Unreadable input: one
line naming the file, exit code 2.
"""

import argparse
import json
import os
import sys
from typing import Sequence

from llmjax.errors import UserError
from llmjax.experiments.music_judge.finding import Finding
from llmjax.experiments.music_judge.harmony import compare_harmony
from llmjax.experiments.music_judge.melody import compare_melody
from llmjax.experiments.music_judge.piece import Piece, load_piece
from llmjax.experiments.music_judge.rhythm import compare_rhythm

MODULES = {"melody": compare_melody, "rhythm": compare_rhythm, "harmony": compare_harmony}


def compare(a: Piece, b: Piece) -> dict[str, Finding]:
  """Each module's finding on how much of A is in B, by module name."""
  return {name: module(a, b) for name, module in MODULES.items()}


def features(findings: dict[str, Finding]) -> dict[str, float]:
  """All modules' numbers in one flat dict (the learned baseline's input)."""
  return {k: v for finding in findings.values() for k, v in finding.features.items()}


def report(findings: dict[str, Finding]) -> str:
  return "\n".join(finding.text for finding in findings.values())


def plot_piano_roll(path: str, a: Piece, b: Piece, findings: dict[str, Finding]) -> None:
  """Both melodies as piano rolls (A above, B below); notes the melody module matched in
  orange, those only the rhythm module matched in blue, the rest grey."""
  from llmjax.plotting import plt, save_figure
  fig, axes = plt.subplots(2, 1, figsize=(12, 5), sharex=False)
  melody, rhythm = findings["melody"], findings["rhythm"]
  for ax, piece, side in ((axes[0], a, "a"), (axes[1], b, "b")):
    by_melody = set(getattr(melody, f"matched_{side}"))
    by_rhythm = set(getattr(rhythm, f"matched_{side}"))
    for k, note in enumerate(piece.melody):
      color = ("tab:orange" if k in by_melody else "tab:blue" if k in by_rhythm
               else "0.7")
      ax.broken_barh([(note.onset, note.duration * 0.95)], (note.pitch - 0.4, 0.8),
                     facecolors=color)
    end = max(n.onset + n.duration for n in piece.melody)
    bar = piece.pickup
    while bar <= end:
      ax.axvline(bar, color="0.9", lw=0.8, zorder=0)
      bar += piece.bar_quarters
    pitches = [n.pitch for n in piece.melody]
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlim(0, end)
    ax.set_ylabel(f"{side.upper()}: MIDI pitch")
    ax.set_title(piece.name, fontsize=9, loc="left")
  axes[1].set_xlabel("quarter notes (grey lines: barlines; orange: melody match, blue: "
                     "rhythm match)")
  fig.tight_layout()
  save_figure(fig, path)


def _part(value: str | None):
  return None if value is None else (int(value) if value.lstrip("-").isdigit() else value)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m llmjax.experiments.music_judge.compare",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("a")
  parser.add_argument("b")
  parser.add_argument("--part-a")
  parser.add_argument("--part-b")
  parser.add_argument("--number-a", type=int)
  parser.add_argument("--number-b", type=int)
  parser.add_argument("--figure", default="piano_roll.png",
                      help="where to write the piano roll ('' for none)")
  parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
  args = parser.parse_args(argv)
  try:
    if args.figure:
      _check_figure_path(args.figure)
    a = load_piece(args.a, _part(args.part_a), args.number_a)
    b = load_piece(args.b, _part(args.part_b), args.number_b)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  findings = compare(a, b)
  print(f"A: {a.name}\nB: {b.name}")
  print(report(findings))
  if args.json:
    print(json.dumps({name: {"score": f.score, **f.features} for name, f in findings.items()}))
  if args.figure:
    try:
      os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
      plot_piano_roll(args.figure, a, b, findings)
    except OSError as e:
      print(f"error: --figure {args.figure}: cannot be written ({e.strerror or e})",
            file=sys.stderr)
      return 2
    print(f"piano roll: {args.figure}")
  return 0


FIGURE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "webp", "eps", "tif", "tiff")


def _check_figure_path(path: str) -> None:
  """A figure path matplotlib can write, in a folder that exists or can be made; checked before
  the pieces are read."""
  extension = os.path.splitext(path)[1].lstrip(".").lower()
  if extension not in FIGURE_FORMATS:
    raise UserError(f"--figure {path}: expected a file ending in one of "
                    f".{', .'.join(FIGURE_FORMATS)} ('' for no figure)")
  if os.path.isdir(path):
    raise UserError(f"--figure {path}: is a directory; expected a file path")
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f"--figure {path}: lies under {parent}, which is a file")
  if not os.access(parent, os.W_OK):
    raise UserError(f"--figure {path}: {parent} cannot be written")


if __name__ == "__main__":
  sys.exit(main())
