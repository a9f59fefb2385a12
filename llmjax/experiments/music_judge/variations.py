"""Graded variations of a real melody with its harmony: what a copier might do to a tune.

Each function returns a new Piece. The levels of ornamentation, quotation, reharmonisation and
combination (LEVELS) go from a light to a heavy change; those of transposition, tempo and
displacement are three amounts of the same change, which the modules are built to ignore (a
check that they do, not a difficulty scale). Every variation keeps the melody a person would
recognise, so every one is a positive (the tune was taken).

  transposition  all pitches moved by 2, 5 or 7 semitones
  tempo          every time value scaled (x1.5, x2, x0.5): augmentation and diminution
  displacement   the tune shifted against the barline by 0.5, 1 or 1.5 quarter notes
  ornamentation  15%, 30% or 50% of the notes given a passing or neighbour note
  quotation      8, 4 or 2 bars of the tune inside another piece (in that piece's key)
  reharmonisation  1/3, 2/3 or all beats given another diatonic chord under the same melody
  combination    transposition + tempo; + ornamentation; + reharmonisation of half the beats
"""

import dataclasses

import numpy as np

from llmjax.experiments.music_judge.harmony import _numeral, estimate_key
from llmjax.experiments.music_judge.piece import Chord, Note, Piece

LEVELS = {
    "transposition": (2, 5, 7),
    "tempo": (1.5, 2.0, 0.5),
    "displacement": (0.5, 1.0, 1.5),
    "ornamentation": (0.15, 0.3, 0.5),
    "quotation": (8, 4, 2),
    "reharmonisation": (1 / 3, 2 / 3, 1.0),
    "combination": (1, 2, 3),
}
MAJOR_SCALE, MINOR_SCALE = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 11)


def transpose(piece: Piece, semitones: int) -> Piece:
  return dataclasses.replace(
      piece, melody=tuple(dataclasses.replace(n, pitch=n.pitch + semitones)
                          for n in piece.melody),
      chords=tuple(dataclasses.replace(c, pitches=tuple(p + semitones for p in c.pitches))
                   for c in piece.chords))


def change_tempo(piece: Piece, factor: float) -> Piece:
  """Every time value (notes, chords, the bar itself) times `factor`."""
  return dataclasses.replace(
      piece, melody=tuple(Note(n.onset * factor, n.duration * factor, n.pitch)
                          for n in piece.melody),
      chords=tuple(Chord(c.onset * factor, c.duration * factor, c.pitches)
                   for c in piece.chords),
      bar_quarters=piece.bar_quarters * factor, pickup=piece.pickup * factor)


def displace(piece: Piece, quarters: float) -> Piece:
  """The music starts `quarters` later against unchanged barlines."""
  return dataclasses.replace(
      piece, melody=tuple(dataclasses.replace(n, onset=n.onset + quarters)
                          for n in piece.melody),
      chords=tuple(dataclasses.replace(c, onset=c.onset + quarters) for c in piece.chords))


def ornament(piece: Piece, share: float, rng: np.random.Generator) -> Piece:
  """Splits `share` of the notes (an eighth or longer, not the last): a passing note fills a
  third to the next note; otherwise an upper neighbour (a whole tone up) returns to the note."""
  notes = list(piece.melody)
  eligible = [i for i in range(len(notes) - 1) if notes[i].duration >= 0.5]
  chosen = set(rng.choice(eligible, size=min(len(eligible), round(share * len(notes))),
                          replace=False).tolist()) if eligible else set()
  melody = []
  for i, n in enumerate(notes):
    if i not in chosen:
      melody.append(n)
      continue
    step = notes[i + 1].pitch - n.pitch
    half = n.duration / 2
    if abs(step) in (3, 4):
      melody += [Note(n.onset, half, n.pitch),
                 Note(n.onset + half, half, n.pitch + int(np.sign(step)) * 2)]
    else:
      melody += [Note(n.onset, half, n.pitch), Note(n.onset + half, half / 2, n.pitch + 2),
                 Note(n.onset + 1.5 * half, half / 2, n.pitch)]
  return dataclasses.replace(piece, melody=tuple(melody))


def _bars_of(piece: Piece, first_bar: int, bars: int) -> tuple[float, float]:
  """The time span [start, end) of `bars` bars from bar `first_bar` (1-based)."""
  start = piece.pickup + (first_bar - 1) * piece.bar_quarters
  return start, start + bars * piece.bar_quarters


def _bar_count(piece: Piece) -> int:
  end = max(n.onset + n.duration for n in piece.melody)
  return int(np.floor((end - piece.pickup) / piece.bar_quarters + 1e-9))


def quote(source: Piece, host: Piece, bars: int, rng: np.random.Generator) -> Piece:
  """`bars` bars of `source` (from a random bar, moved to the host's tonic; the mode is the
  source's) put in the middle of `host`, whose music after that point moves later to make
  room. Host and source must share their bar length."""
  if abs(source.bar_quarters - host.bar_quarters) > 1e-9:
    raise ValueError("quote: source and host must have the same bar length")
  bars = min(bars, _bar_count(source))
  first = int(rng.integers(1, _bar_count(source) - bars + 2))
  start, end = _bars_of(source, first, bars)
  shift = (estimate_key(host)[0] - estimate_key(source)[0]) % 12
  shift = shift - 12 if shift > 6 else shift
  at, _ = _bars_of(host, _bar_count(host) // 2 + 1, 0)  # after the first half of its bars
  length = end - start

  def clip(items, keep):
    return [x for x in items if keep(x.onset)]

  quoted = [Note(n.onset - start + at, min(n.duration, end - n.onset), n.pitch + shift)
            for n in clip(source.melody, lambda t: start <= t < end)]
  quoted_chords = [Chord(c.onset - start + at, min(c.duration, end - c.onset),
                         tuple(p + shift for p in c.pitches))
                   for c in clip(source.chords, lambda t: start <= t < end)]
  before = [dataclasses.replace(n, duration=min(n.duration, at - n.onset))
            for n in clip(host.melody, lambda t: t < at)]
  after = [dataclasses.replace(n, onset=n.onset + length)
           for n in clip(host.melody, lambda t: t >= at)]
  chords_before = [dataclasses.replace(c, duration=min(c.duration, at - c.onset))
                   for c in clip(host.chords, lambda t: t < at)]
  chords_after = [dataclasses.replace(c, onset=c.onset + length)
                  for c in clip(host.chords, lambda t: t >= at)]
  return dataclasses.replace(host, name=f"{host.name} quoting {source.name}",
                             melody=tuple(before + quoted + after),
                             chords=tuple(chords_before + quoted_chords + chords_after))


def _melody_pitch_at(piece: Piece, t: float) -> int | None:
  sounding = [n for n in piece.melody if n.onset <= t + 1e-9 < n.onset + n.duration]
  return sounding[-1].pitch if sounding else None


def reharmonise(piece: Piece, share: float, rng: np.random.Generator) -> Piece:
  """Gives `share` of the beats another diatonic triad of the piece's key that still holds the
  melody note (root in the bass, under the melody); the other beats keep their chords."""
  tonic, mode = estimate_key(piece)
  scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
  triads = [tuple(scale[(d + k) % 7] for k in (0, 2, 4)) for d in range(7)]
  step = piece.bar_quarters / max(piece.beats, 1)
  end = max(c.onset + c.duration for c in piece.chords)
  beats = np.arange(piece.pickup % step, end, step)
  replace = set(rng.choice(len(beats), size=round(share * len(beats)), replace=False).tolist())
  chords: list[Chord] = []
  for b, t in enumerate(beats):
    here = [c for c in piece.chords if c.onset < t + step and c.onset + c.duration > t]
    melody_pitch = _melody_pitch_at(piece, t)
    current = next((c for c in here if c.onset <= t + 1e-9), here[0] if here else None)
    if b in replace and melody_pitch is not None and current is not None:
      relative = tuple(sorted({(p - tonic) % 12 for p in current.pitches}))
      now = _numeral(relative, (current.pitches[0] - tonic) % 12, mode)
      options = [tr for tr in triads if (melody_pitch - tonic) % 12 in tr and
                 _numeral(tuple(sorted(tr)), tr[0], mode) != now]
      if options:
        triad = options[int(rng.integers(len(options)))]
        bass = 48 + (tonic + triad[0]) % 12
        upper = sorted({melody_pitch - ((melody_pitch - tonic - pc) % 12 or 12)
                        for pc in triad if (tonic + pc) % 12 != melody_pitch % 12})
        chords.append(Chord(t, step, tuple(sorted({bass, *upper, melody_pitch}))))
        continue
    for c in here:  # unchanged: the chords of this beat, cut to it
      onset = max(c.onset, t)
      chords.append(Chord(onset, min(c.onset + c.duration, t + step) - onset, c.pitches))
  return dataclasses.replace(piece, chords=tuple(chords))


def make_variation(kind: str, level: int, source: Piece, rng: np.random.Generator,
                   host: Piece | None = None) -> Piece:
  """The `level` (1-3) variation of `kind` of `source` (`host`: the new material that a
  quotation sits in)."""
  value = LEVELS[kind][level - 1]
  if kind == "transposition":
    return transpose(source, value)
  if kind == "tempo":
    return change_tempo(source, value)
  if kind == "displacement":
    return displace(source, value)
  if kind == "ornamentation":
    return ornament(source, value, rng)
  if kind == "quotation":
    if host is None:
      raise ValueError("quotation needs a host piece")
    return quote(source, host, value, rng)
  if kind == "reharmonisation":
    return reharmonise(source, value, rng)
  if kind == "combination":
    varied = change_tempo(transpose(source, 5), 1.5)
    if level >= 2:
      varied = ornament(varied, 0.15 * (level - 1), rng)
    if level >= 3:
      varied = reharmonise(varied, 0.5, rng)
    return varied
  raise ValueError(f"unknown variation {kind!r}; expected one of {sorted(LEVELS)}")
