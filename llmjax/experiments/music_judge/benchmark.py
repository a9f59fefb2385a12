"""A graded music-plagiarism benchmark from music21's public-domain chorales and folk tunes.

Sources are hymn tunes that Bach harmonised more than once (grouped by the chorale's title in
music21's Riemenschneider/BWV list; the melody is the Soprano part). Each pair (A, B) asks
whether B takes A's tune:

  natural        two of Bach's harmonisations of the same tune (label 1)
  folk_variant   two printings of a folk tune under the same title in different books of
                 music21's folk collections (Aird's Airs, O'Neill's, Ryan's Mammoth; label 1)
  folk_negative  a folk tune against another folk tune in the same metre (label 0)
  <variation>    a graded variation of A (variations.py; label 1), levels 1-3
  negative       A against another tune (label 0)
  hard_negative  A against another tune in the same key and metre (label 0)

Same-title labels come from the collections: a title printed in two books (or set twice by
Bach) is taken as one tune; a title shared by two different tunes is a wrong label that we do
not filter out (filtering with our own modules would bias the benchmark towards them), and form
names ("A March", "Quick Step") are never paired. Splits are by tune family (`tune_families`:
titles whose settings share 75% of a melody, as when one hymn tune carries several texts; the
rule is generous, so some distinct but alike tunes are grouped too, which only costs negatives):
every
setting of a family, and every piece a pair borrows (a quotation's host, a negative's partner),
lies in its split, and negatives never pair a family with itself, so no melody is in two
splits.
"""

import dataclasses
import hashlib
import os
import re
from typing import Any, Callable, Iterable

import numpy as np

from llmjax.errors import UserError
from llmjax.experiments.music_judge.harmony import estimate_key
from llmjax.experiments.music_judge.melody import shared_share
from llmjax.experiments.music_judge.piece import Piece, load_piece
from llmjax.experiments.music_judge.variations import LEVELS, make_variation


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


FOLK_COLLECTIONS = ("airdsAirs", "oneills1850", "ryansMammoth")


# Titles that name a form, not a tune ("A March", "An Irish Air", "Quick Step"): two of them
# are rarely the same tune, so they are not paired.
GENERIC_WORDS = frozenset(
    "a an the no irish scotch scottish highland english welsh country slow quick step march "
    "air jig reel hornpipe strathspey waltz dance song tune set untitled name another "
    "favourite favorite new old".split())


def _title_key(title: str) -> str:
  words = re.sub(r"[^a-z0-9]+", " ", title.lower()).split()
  if words[:1] == ["the"]:
    words = words[1:]
  if words[-1:] == ["the"]:  # "Bag of Meal, The"
    words = words[:-1]
  return " ".join(words)


def folk_tunes(max_tunes: int) -> list[tuple[str, list[tuple[str, int]]]]:
  """(title, [(corpus path of an ABC book, the tune's X: number)]) of folk titles printed in
  two or more different books, sorted by title; at most `max_tunes` (0: all)."""
  from music21 import corpus
  found: dict[str, list[tuple[str, int]]] = {}
  for path in sorted(str(p) for p in corpus.getCorePaths()):
    relative = path.split(os.sep + "corpus" + os.sep, 1)[-1]
    if not relative.endswith(".abc") or relative.split("/")[0] not in FOLK_COLLECTIONS:
      continue
    with open(path, encoding="latin-1") as f:
      text = f.read()
    for tune in re.split(r"\n(?=X:)", text):
      number, title = re.search(r"^X:\s*(\d+)", tune, re.M), re.search(r"^T:\s*(.+)$", tune, re.M)
      key = _title_key(title.group(1)) if title else ""
      if number and key and not set(key.split()) <= GENERIC_WORDS and not re.search(
          r"\bno \d+|\d+(st|nd|rd|th)\b", key):
        found.setdefault(key, []).append((relative, int(number.group(1))))
  tunes = [(title, versions) for title, versions in sorted(found.items())
           if len({book for book, _ in versions}) > 1]
  return tunes[:max_tunes] if max_tunes else tunes


def load_folk_tunes(tunes, progress: Callable[[Iterable], Iterable] = lambda x: x
                    ) -> tuple[dict[str, list[Piece]], list[str]]:
  """Two printings of each folk title (from different books) as Pieces, and what could not be
  read."""
  loaded, skipped = {}, []
  for title, versions in progress(list(tunes)):
    pieces, books = [], set()
    for book, number in versions:
      if book in books:
        continue
      try:
        pieces.append(load_piece(book, number=number, name=f"{book}#{number}"))
        books.add(book)
      except UserError as e:
        skipped.append(str(e))
      if len(pieces) == 2:
        break
    if len(pieces) == 2:
      loaded[title] = pieces
    else:
      skipped.append(f"folk title {title!r}: fewer than two readable printings")
  return loaded, skipped


FAMILY_THRESHOLD = 0.75


def tune_families(tunes: dict[str, list[Piece]],
                  threshold: float = FAMILY_THRESHOLD) -> dict[str, str]:
  """title -> its family: titles whose settings share a melody (one hymn tune sung to several
  texts, one folk tune under several names) are one family, which the splits keep together
  and which never supplies a negative against itself. Two titles join when any setting of one
  repeats `threshold` of the shorter melody's intervals of any setting of the other."""
  family = {title: title for title in tunes}

  def root(title):
    while family[title] != title:
      family[title] = family[family[title]]
      title = family[title]
    return title

  titles = list(tunes)
  for i, first in enumerate(titles):
    for second in titles[i + 1:]:
      if root(first) == root(second):
        continue
      if any(shared_share(a, b) >= threshold for a in tunes[first] for b in tunes[second]):
        family[root(second)] = root(first)
  roots = {title: root(title) for title in titles}
  # Name each family by its first title in sorted order: independent of the loading order.
  names = {}
  for title in sorted(titles):
    names.setdefault(roots[title], title)
  return {title: names[roots[title]] for title in titles}


def split_of(family: str, test_share: float, seed: int) -> str:
  """A tune family's split, fixed by its name and the seed."""
  digest = hashlib.sha256(f"{seed}\x00{family}".encode()).digest()
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
  families = tune_families(tunes)
  splits = {title: split_of(families[title], test_share, seed) for title in tunes}
  keys = {title: estimate_key(pieces[0]) for title, pieces in tunes.items()}
  pairs = []
  for title, pieces in tunes.items():
    split, source = splits[title], pieces[0]
    others = [t for t in tunes if families[t] != families[title] and splits[t] == split]
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
    drawn = [others[k] for k in rng.permutation(len(others))[:negatives_per_tune]]
    for t in drawn:
      other = tunes[t][0]
      pairs.append(Pair(f"{slug}-negative-{other.name.replace('bach/', '')}", split,
                        "negative", 0, 0, source, other))
    others = [t for t in others if t not in drawn]  # a partner is used once
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


def build_folk_pairs(tunes: dict[str, list[Piece]], test_share: float = 0.4,
                     seed: int = 0) -> list[Pair]:
  """A folk_variant pair per title and a folk_negative against another title of its split in
  the same metre (split by tune family, as the chorales)."""
  rng = np.random.default_rng(seed + 1)
  families = tune_families(tunes)
  splits = {title: split_of("folk:" + families[title], test_share, seed) for title in tunes}
  pairs = []
  for title, (first, second) in tunes.items():
    split, slug = splits[title], "folk-" + "-".join(title.split())
    pairs.append(Pair(f"{slug}-variant", split, "folk_variant", 0, 1, first, second))
    others = [t for t in tunes if families[t] != families[title] and splits[t] == split and
              abs(tunes[t][0].bar_quarters - first.bar_quarters) < 1e-9]
    if others:
      other = others[int(rng.integers(len(others)))]
      pairs.append(Pair(f"{slug}-negative", split, "folk_negative", 0, 0, first,
                        tunes[other][1]))
  return pairs
