"""A graded music-plagiarism benchmark from music21's public-domain Bach chorales.

Sources are hymn tunes that Bach harmonised more than once (grouped by the chorale's title in
music21's Riemenschneider/BWV list; the melody is the Soprano part). Each pair (A, B) asks
whether B takes A's tune:

  natural        two of Bach's harmonisations of the same tune (label 1)
  <variation>    a graded variation of A (llmjax.music.variations; label 1), levels 1-3
  negative       A against another tune (label 0)
  hard_negative  A against another tune in the same key and metre (label 0)

Splits are by tune: every harmonisation of a tune, and every piece a pair borrows (a
quotation's host, a negative's partner), lies in the tune's split, so no melody is in two
splits.
"""

import dataclasses
import hashlib
import os
from typing import Any, Callable, Iterable

import numpy as np

from llmjax.errors import UserError
from llmjax.music.harmony import estimate_key
from llmjax.music.piece import Piece, load_piece
from llmjax.music.variations import LEVELS, make_variation


@dataclasses.dataclass(frozen=True)
class Pair:
  id: str
  split: str  # train | test
  kind: str  # natural | a variation kind | negative | hard_negative
  level: int  # 1-3 for variations, 0 otherwise
  label: int  # 1: B takes A's tune
  a: Piece
  b: Piece

  def to_json(self) -> dict[str, Any]:
    return {"id": self.id, "split": self.split, "kind": self.kind, "level": self.level,
            "label": self.label, "a": self.a.to_json(), "b": self.b.to_json()}

  @classmethod
  def from_json(cls, row: dict[str, Any]) -> "Pair":
    return cls(row["id"], row["split"], row["kind"], int(row["level"]), int(row["label"]),
               Piece.from_json(row["a"]), Piece.from_json(row["b"]))


def chorale_tunes(max_tunes: int) -> list[tuple[str, list[str]]]:
  """(title, corpus paths) of chorale tunes with two or more settings in music21's corpus, in
  Riemenschneider order; at most `max_tunes` (0: all)."""
  from music21 import corpus
  from music21.corpus import chorales
  available = {os.path.basename(str(p)).rsplit(".", 1)[0] for p in corpus.getComposer("bach")}
  groups: dict[str, list[str]] = {}
  for _, entry in sorted(chorales.ChoraleListRKBWV().byRiemenschneider.items()):
    name = "bwv" + entry["bwv"]
    if name in available and f"bach/{name}" not in groups.get(entry["title"], []):
      groups.setdefault(entry["title"], []).append(f"bach/{name}")
  tunes = [(title, paths) for title, paths in groups.items() if len(paths) > 1]
  if not tunes:
    raise UserError("music21's corpus has no Bach chorale set more than once; is music21 "
                    "installed with its corpus?")
  return tunes[:max_tunes] if max_tunes else tunes


def split_of(title: str, test_share: float, seed: int) -> str:
  """A tune's split, fixed by its title and the seed (not by which other tunes are loaded)."""
  digest = hashlib.sha256(f"{seed}\x00{title}".encode()).digest()
  return "test" if int.from_bytes(digest[:8], "little") / 2**64 < test_share else "train"


def _soprano(path: str) -> Piece:
  """A chorale's Soprano line (the first of four unnamed parts when none is named so)."""
  try:
    return load_piece(path, part="Soprano", name=path)
  except UserError as e:
    if "no part named" not in str(e) or "'None', 'None', 'None', 'None'" not in str(e):
      raise
    return load_piece(path, part=0, name=path)


def load_tunes(tunes: Iterable[tuple[str, list[str]]],
               progress: Callable[[Iterable], Iterable] = lambda x: x
               ) -> tuple[dict[str, list[Piece]], list[str]]:
  """Each tune's settings as Pieces (the Soprano line), and the settings that could not be
  read (with why); a tune left with fewer than two settings is dropped and listed."""
  loaded, skipped = {}, []
  for title, paths in progress(list(tunes)):
    pieces = []
    for path in paths:
      try:
        pieces.append(_soprano(path))
      except UserError as e:
        skipped.append(str(e))
    if len(pieces) > 1:
      loaded[title] = pieces
    else:
      skipped.append(f"{title}: fewer than two readable settings")
  return loaded, skipped


def build_pairs(tunes: dict[str, list[Piece]], test_share: float = 0.4, seed: int = 0,
                natural_per_tune: int = 2, negatives_per_tune: int = 2) -> list[Pair]:
  """Every pair of the benchmark (module docstring), deterministic for a seed."""
  rng = np.random.default_rng(seed)
  splits = {title: split_of(title, test_share, seed) for title in tunes}
  keys = {title: estimate_key(pieces[0]) for title, pieces in tunes.items()}
  pairs = []
  for title, pieces in tunes.items():
    split, source = splits[title], pieces[0]
    others = [t for t in tunes if t != title and splits[t] == split]
    slug = source.name.replace("bach/", "")
    for k, setting in enumerate(pieces[1:natural_per_tune + 1], 1):
      pairs.append(Pair(f"{slug}-natural-{k}", split, "natural", 0, 1, source, setting))
    hosts = [t for t in others
             if abs(tunes[t][0].bar_quarters - source.bar_quarters) < 1e-9]
    for kind in LEVELS:
      for level in (1, 2, 3):
        host = None
        if kind == "quotation":
          if not hosts:
            continue
          host = tunes[hosts[int(rng.integers(len(hosts)))]][0]
        b = make_variation(kind, level, source, rng, host)
        name = f"{kind} {level} of {source.name}" + (f" in {host.name}" if host else "")
        pairs.append(Pair(f"{slug}-{kind}-{level}", split, kind, level, 1, source,
                          dataclasses.replace(b, name=name)))
    if not others:
      continue
    for k in rng.permutation(len(others))[:negatives_per_tune]:
      other = tunes[others[k]][0]
      pairs.append(Pair(f"{slug}-negative-{other.name.replace('bach/', '')}", split,
                        "negative", 0, 0, source, other))
    hard = [t for t in others if keys[t] == keys[title] and
            abs(tunes[t][0].bar_quarters - source.bar_quarters) < 1e-9]
    if len(hard) < negatives_per_tune:  # too few in the same key: the same mode and metre
      hard += [t for t in others if t not in hard and keys[t][1] == keys[title][1] and
               abs(tunes[t][0].bar_quarters - source.bar_quarters) < 1e-9]
    for t in hard[:negatives_per_tune]:
      other = tunes[t][0]
      pairs.append(Pair(f"{slug}-hard_negative-{other.name.replace('bach/', '')}", split,
                        "hard_negative", 0, 0, source, other))
  return pairs
