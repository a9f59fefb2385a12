"""The harmony module: key, key-relative Roman numerals, chord-progression distance.

The key is Krumhansl & Kessler's: the major or minor key profile that correlates best with the
duration-weighted pitch classes of all chords. It is an estimate and can name a related key
where a piece dwells (bwv347, in A major, reads as E major); the numerals are then read in that
key. The chord track is read once per beat (the sonority sounding there), named as a Roman
numeral in the key by music21, and repeated numerals merged, so the progression is the same at
any tempo and in any key. Two progressions are compared by edit distance (normalised by the
longer one), by local alignment (the share of A's progression found in order in B) and by
shared trigrams.
"""

import functools

import numpy as np

from llmjax.experiments.music_judge.alignment import local_align
from llmjax.experiments.music_judge.finding import Finding
from llmjax.experiments.music_judge.piece import Piece, describe_passage

MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCH_CLASSES = ("C", "C#", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B")
MATCH, MISMATCH, GAP = 2.0, -1.0, 1.5


def estimate_key(piece: Piece) -> tuple[int, str]:
  """(tonic pitch class, "major" | "minor") of the chord track (the melody when it has none)."""
  weights = np.zeros(12)
  events = [(c.duration, c.pitches) for c in piece.chords] or [
      (n.duration, (n.pitch,)) for n in piece.melody]
  for duration, pitches in events:
    for pitch in pitches:
      weights[pitch % 12] += duration
  best, key = -2.0, (0, "major")
  for tonic in range(12):
    for mode, profile in (("major", MAJOR), ("minor", MINOR)):
      r = np.corrcoef(weights, np.roll(profile, tonic))[0, 1]
      if np.isfinite(r) and r > best + 1e-12:
        best, key = r, (tonic, mode)
  return key


def key_name(key: tuple[int, str]) -> str:
  tonic, mode = key
  name = PITCH_CLASSES[tonic]
  return f"{name if mode == 'major' else name.lower()} {mode}"


@functools.lru_cache(maxsize=None)
def _numeral(relative_pcs: tuple[int, ...], relative_bass: int, mode: str) -> str:
  """The Roman numeral of a sonority given relative to the tonic (in C major or c minor)."""
  from music21 import chord, key, roman
  pitches = [48 + relative_bass] + [60 + pc for pc in relative_pcs if pc != relative_bass]
  numeral = roman.romanNumeralFromChord(chord.Chord(pitches),
                                        key.Key("C" if mode == "major" else "c"))
  return numeral.romanNumeral


def progression(piece: Piece, key: tuple[int, str] | None = None) -> list[str]:
  """The Roman numerals of the beats, repeated ones merged (a tempo- and key-free sequence)."""
  return [numeral for numeral, _ in progression_onsets(piece, key)]


def progression_onsets(piece: Piece, key: tuple[int, str] | None = None
                       ) -> list[tuple[str, float]]:
  """`progression` with the beat each numeral starts on."""
  tonic, mode = key or estimate_key(piece)
  if not piece.chords:
    return []
  step = piece.bar_quarters / max(piece.beats, 1)
  onsets = np.array([c.onset for c in piece.chords])
  end = piece.chords[-1].onset + piece.chords[-1].duration
  numerals: list[tuple[str, float]] = []
  for t in np.arange(piece.pickup % step, end, step):
    k = int(np.searchsorted(onsets, t + 1e-9) - 1)
    c = piece.chords[k]
    if k < 0 or t >= c.onset + c.duration:
      continue  # silence
    relative = tuple(sorted({(p - tonic) % 12 for p in c.pitches}))
    numeral = _numeral(relative, (c.pitches[0] - tonic) % 12, mode)
    if not numerals or numerals[-1][0] != numeral:
      numerals.append((numeral, float(t)))
  return numerals


def edit_distance(a: list[str], b: list[str]) -> int:
  """Levenshtein distance (insert, delete, substitute: 1 each)."""
  previous = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    current = [i]
    for j, y in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
    previous = current
  return previous[-1]


def trigrams(sequence: list[str]) -> set[tuple[str, ...]]:
  return {tuple(sequence[i:i + 3]) for i in range(len(sequence) - 2)}


def compare_harmony(a: Piece, b: Piece) -> Finding:
  """How much of A's chord progression B repeats, relative to each piece's own key."""
  key_a, key_b = estimate_key(a), estimate_key(b)
  events_a, events_b = progression_onsets(a, key_a), progression_onsets(b, key_b)
  pa, pb = [x for x, _ in events_a], [x for x, _ in events_b]
  if not pa or not pb:
    return Finding("harmony", 0.0, {"harmony_share_a": 0.0, "harmony_edit_similarity": 0.0,
                                    "harmony_trigram_share": 0.0, "harmony_same_mode": 0.0},
                   "harmony: a piece without chords; nothing to compare")
  codes = {numeral: k for k, numeral in enumerate(sorted(set(pa) | set(pb)))}
  ca, cb = np.array([codes[x] for x in pa]), np.array([codes[x] for x in pb])
  alignment = local_align(ca, cb, lambda i, j: np.where(ca[i] == cb[j], MATCH, MISMATCH),
                          gap=GAP)
  distance = edit_distance(pa, pb)
  similarity = 1.0 - distance / max(len(pa), len(pb))
  ta, tb = trigrams(pa), trigrams(pb)
  shared = len(ta & tb) / len(ta) if ta else 0.0
  share_a = alignment.matches / len(pa)
  features = {"harmony_share_a": share_a, "harmony_edit_similarity": similarity,
              "harmony_trigram_share": shared,
              "harmony_same_mode": float(key_a[1] == key_b[1])}
  where = ""
  if alignment.pairs:
    (i0, j0), (i1, j1) = alignment.pairs[0], alignment.pairs[-1]
    where = (f", {describe_passage(a, events_a[i0][1], events_a[i1][1])} of A against "
             f"{describe_passage(b, events_b[j0][1], events_b[j1][1])} of B")
  text = (f"harmony: A in {key_name(key_a)}, B in {key_name(key_b)}; {alignment.matches} of "
          f"{len(pa)} chords of A's progression recur in order in B ({share_a:.0%}{where}); edit "
          f"distance {distance} over {max(len(pa), len(pb))} chords; {len(ta & tb)} of "
          f"{len(ta)} chord trigrams shared (A opens {' '.join(pa[:6])})")
  return Finding("harmony", share_a, features, text)
