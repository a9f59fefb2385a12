"""A piece as the attribute modules see it: a melody line and a chord track, in quarter notes.

Scores are read with music21 (MIDI, MusicXML, ABC, Humdrum, or a music21 corpus path such as
"bach/bwv66.6"). The melody is the skyline of all parts (at every moment the highest sounding
note, after Uitdenbogerd & Zobel's skyline rule; `_skyline`) or one chosen part; the
chord track is the score's chordify (every vertical sonority of all parts). Times are offsets in
quarter notes from the start of the first bar (the pickup bar when there is one), so a piece
that opens with a rest starts later than 0; bars and beats are recovered from the bar length
and the pickup, so synthetic variations (variations.py) keep them.
"""

import dataclasses
import math
import os
from typing import Any, Sequence

from llmjax.errors import DataError

FORMATS = {".mid": "MIDI", ".midi": "MIDI", ".xml": "MusicXML", ".musicxml": "MusicXML",
           ".mxl": "MusicXML", ".abc": "ABC", ".krn": "Humdrum"}


@dataclasses.dataclass(frozen=True)
class Note:
  onset: float  # quarter notes
  duration: float
  pitch: int  # MIDI number


@dataclasses.dataclass(frozen=True)
class Chord:
  onset: float
  duration: float
  pitches: tuple[int, ...]  # MIDI numbers, ascending


@dataclasses.dataclass(frozen=True)
class Piece:
  """A melody and its harmony. `bar_quarters`: a bar's length in quarter notes; `pickup`: the
  length of an anacrusis before bar 1 (bar 0), 0 when the piece starts on a downbeat."""

  name: str
  melody: tuple[Note, ...]
  chords: tuple[Chord, ...]
  bar_quarters: float = 4.0
  pickup: float = 0.0
  beats: int = 4  # beats in a bar (the time signature's beat count)

  def bar_beat(self, onset: float) -> tuple[int, float]:
    """(bar, beat) of an onset: bars from 1 (0 = the pickup), beats in quarter notes from 1."""
    into = onset - self.pickup
    if into < 0:
      return 0, self.bar_quarters + into + 1
    bar = math.floor(into / self.bar_quarters + 1e-9)
    return bar + 1, into - bar * self.bar_quarters + 1

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "bar_quarters": self.bar_quarters, "pickup": self.pickup,
            "beats": self.beats,
            "melody": [[n.onset, n.duration, n.pitch] for n in self.melody],
            "chords": [[c.onset, c.duration, list(c.pitches)] for c in self.chords]}

  @classmethod
  def from_json(cls, row: dict[str, Any]) -> "Piece":
    return cls(row["name"], tuple(Note(o, d, int(p)) for o, d, p in row["melody"]),
               tuple(Chord(o, d, tuple(int(p) for p in ps)) for o, d, ps in row["chords"]),
               float(row["bar_quarters"]), float(row["pickup"]), int(row["beats"]))


def interval_name(semitones: int) -> str:
  """"up a perfect fourth", "down a major second", "at the same pitch", "up an octave and a
  minor third"."""
  if semitones == 0:
    return "at the same pitch"
  names = ("unison", "minor second", "major second", "minor third", "major third",
           "perfect fourth", "tritone", "perfect fifth", "minor sixth", "major sixth",
           "minor seventh", "major seventh")
  octaves, rest = divmod(abs(semitones), 12)
  direction = "up" if semitones > 0 else "down"
  if not octaves:
    size = f"a {names[rest]}"
  else:
    size = ("an octave" if octaves == 1 else f"{octaves} octaves") + (
        f" and a {names[rest]}" if rest else "")
  return f"{direction} {size}"


def describe_passage(piece: Piece, first_onset: float, last_onset: float) -> str:
  """"bar 3 beat 1 to bar 6 beat 2.5" for the passage from one onset to another (beats in
  quarter notes from 1; bar 0 is the pickup)."""
  (a, beat_a), (b, beat_b) = piece.bar_beat(first_onset), piece.bar_beat(last_onset)
  return f"bar {a} beat {beat_a:g} to bar {b} beat {beat_b:g}"


def _parse_score(source: str, number: int | None):
  """A music21 Score from a file or corpus path; one DataError line naming it when unreadable."""
  import music21
  if os.path.exists(source):
    if os.path.isdir(source):
      raise DataError(f"{source}: is a directory; expected a score file")
    extension = os.path.splitext(source)[1].lower()
    if extension not in FORMATS:
      raise DataError(f"{source}: unknown score format {extension!r}; expected one of "
                      f"{sorted(FORMATS)} or a music21 corpus path")
    try:
      score = music21.converter.parse(source, forceSource=True, number=number)
    except Exception as e:  # music21 raises many kinds for a corrupt file
      why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
      raise DataError(f"{source}: not a readable {FORMATS[extension]} file ({why})") from None
  else:
    try:
      music21.corpus.getWork(source)
    except Exception:
      raise DataError(f"{source}: no such file, and not a music21 corpus path (e.g. "
                      f"'bach/bwv66.6')") from None
    try:
      score = music21.corpus.parse(source, number=number)
    except Exception as e:
      why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
      raise DataError(f"{source}: " + (f"no piece number {number} ({why})" if number
                                       else f"not readable ({why})")) from None
  if isinstance(score, music21.stream.Opus):
    scores = list(score.scores)
    chosen = scores[0] if number is None and scores else (
        score.getScoreByNumber(number) if number is not None else None)
    if chosen is None:
      raise DataError(f"{source}: holds {len(scores)} pieces; none is number {number}")
    score = chosen
  elif score is None or not len(score.flatten().notes):
    raise DataError(f"{source}: no notes" + (f" in piece number {number}" if number else ""))
  return score


def _skyline(notes: Sequence[tuple[float, float, int]]) -> list[Note]:
  """The line on top: at every moment, the highest sounding note. A note struck at the top
  starts a line note; a lower voice moving under a held top note does not break it; when the top
  note ends while a lower, earlier note still sounds, that note joins the line from then on (so
  the line has no holes a listener would not hear)."""
  notes = sorted(notes, key=lambda n: (n[0], -n[2]))
  times = sorted({t for onset, duration, _ in notes for t in (onset, onset + duration)})
  line: list[Note] = []
  current = None  # the (onset, duration, pitch) on top
  for t in times:
    sounding = [n for n in notes if n[0] <= t + 1e-9 < n[0] + n[1] - 1e-9]
    if not sounding:
      current = None
      continue
    top = max(sounding, key=lambda n: (n[2], n[0] == t))
    if top is current or (current in sounding and top[2] == current[2] and top[0] != t):
      continue  # the same note goes on
    current = top
    line.append(Note(t, top[0] + top[1] - t, top[2]))
  return [Note(n.onset, min(n.duration, line[i + 1].onset - n.onset) if i + 1 < len(line)
               else n.duration, n.pitch) for i, n in enumerate(line)]


def _events(stream) -> list[tuple[float, float, int]]:
  """(onset, duration, pitch) of every sounding note in a stream (a chord gives each pitch)."""
  out = []
  for element in stream.flatten().notes:
    onset, duration = float(element.offset), float(element.quarterLength)
    if duration <= 0:
      continue  # grace notes take no time
    for pitch in element.pitches:
      out.append((onset, duration, int(pitch.midi)))
  return out


def load_piece(source: str, part: int | str | None = None, number: int | None = None,
               name: str | None = None) -> Piece:
  """Reads a score into a Piece.

  Args:
    source: a score file (.mid, .midi, .xml, .musicxml, .mxl, .abc, .krn) or a music21 corpus
      path ("bach/bwv66.6").
    part: None for the skyline of all parts; a part's index or name for that part's line.
    number: which piece of a multi-piece file: an ABC tune's X: number, an opus's number.
  """
  score = _parse_score(source, number).stripTies()
  parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
  if part is None:
    line = _skyline(_events(score))
  else:
    names = [str(p.partName) for p in parts]
    if isinstance(part, str) and not part.lstrip("-").isdigit():
      containing = [k for k, n in enumerate(names) if part.lower() in n.lower()]
      if part in names:
        chosen = parts[names.index(part)]
      elif len(containing) == 1:  # "Soprano" finds "Soprano Oboe 1 Violin1"
        chosen = parts[containing[0]]
      else:
        raise DataError(f"{source}: no part named {part!r}; parts: {names}")
    else:
      index = int(part)
      if not 0 <= index < len(parts):
        raise DataError(f"{source}: part {index} out of range; it has {len(parts)} parts")
      chosen = parts[index]
    line = _skyline(_events(chosen))
  if len(line) < 2:
    raise DataError(f"{source}: fewer than two notes in its melody; nothing to compare")
  chords = []
  for c in score.chordify().flatten().getElementsByClass("Chord"):
    if float(c.quarterLength) > 0:
      chords.append(Chord(float(c.offset), float(c.quarterLength),
                          tuple(sorted({int(p.midi) for p in c.pitches}))))
  bar_quarters, pickup, beats = _meter(score)
  return Piece(name or source, tuple(line), tuple(chords), bar_quarters, pickup, beats)


def _meter(score) -> tuple[float, float, int]:
  """(bar length in quarters, pickup length, beats in a bar) from the first time signature and
  bar."""
  signatures = score.recurse().getElementsByClass("TimeSignature")
  bar_quarters = float(signatures[0].barDuration.quarterLength) if signatures else 4.0
  beats = int(signatures[0].beatCount) if signatures else 4
  pickup = 0.0
  measures = (score.parts[0] if len(getattr(score, "parts", [])) else score).getElementsByClass(
      "Measure")
  if measures and len(measures) > 1:
    first = measures[0]
    length = float(first.duration.quarterLength)
    if first.number == 0 or 0 < length < bar_quarters:
      pickup = length % bar_quarters
  return bar_quarters, pickup, beats
