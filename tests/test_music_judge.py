"""The music-plagiarism modules on hand-made melodies with known answers, score reading, the
benchmark's splits, and the LM-judge stage against a scripted OpenAI-compatible endpoint."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("music21")

from llmjax.experiments.music_judge.alignment import local_align  # noqa: E402
from llmjax.experiments.music_judge.harmony import (compare_harmony, estimate_key,  # noqa: E402
                                                    progression)
from llmjax.experiments.music_judge.melody import compare_melody  # noqa: E402
from llmjax.experiments.music_judge.piece import Chord, Note, Piece, load_piece  # noqa: E402
from llmjax.experiments.music_judge.rhythm import compare_rhythm  # noqa: E402
from llmjax.experiments.music_judge.variations import (change_tempo, displace,  # noqa: E402
                                                       ornament, reharmonise, transpose)

COMPARE = [sys.executable, "-m", "llmjax.experiments.music_judge.compare"]

# A 4-bar tune in C major (16 notes, 16 quarters) over I IV V I vi ii V I, two beats each.
PITCHES = [60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 71, 69, 67, 60]
DURATIONS = [1, 1, 1, 1, 1, 1, 2, 0.5, 0.5, 1, 1, 1, 1, 1, 1, 1]
I, IV, V, VI, II, III = ((48, 64, 67), (53, 65, 69), (55, 62, 71), (57, 64, 69),
                         (50, 65, 69), (52, 67, 71))
CHORDS = [I, IV, V, I, VI, II, V, I]


def _piece(pitches=PITCHES, durations=DURATIONS, chords=CHORDS, name="tune"):
  onsets = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
  return Piece(name, tuple(Note(float(o), float(d), p)
                           for o, d, p in zip(onsets, durations, pitches)),
               tuple(Chord(2.0 * k, 2.0, c) for k, c in enumerate(chords)))


def _brute_force_local_score(a, b, match, mismatch, gap):
  h = np.zeros((len(a) + 1, len(b) + 1))
  for i in range(1, len(a) + 1):
    for j in range(1, len(b) + 1):
      s = match if a[i - 1] == b[j - 1] else mismatch
      h[i, j] = max(0, h[i - 1, j - 1] + s, h[i - 1, j] - gap, h[i, j - 1] - gap)
  return h.max()


def test_vectorised_smith_waterman_equals_the_textbook_recurrence():
  rng = np.random.default_rng(0)
  for _ in range(40):
    a, b = rng.integers(0, 4, rng.integers(1, 18)), rng.integers(0, 4, rng.integers(1, 18))
    found = local_align(a, b, lambda i, j: np.where(a[i] == b[j], 2.0, -1.0), gap=1.5)
    assert found.score == pytest.approx(_brute_force_local_score(a, b, 2.0, -1.0, 1.5))
    # The traceback's pairs and gaps add up to the score.
    steps = sum(2.0 if a[i] == b[j] else -1.0 for i, j in found.pairs)
    gaps = sum(i2 - i1 - 1 + j2 - j1 - 1
               for (i1, j1), (i2, j2) in zip(found.pairs, found.pairs[1:]))
    assert steps - 1.5 * gaps == pytest.approx(found.score)


def test_a_transposed_copy_aligns_fully_with_the_right_interval():
  a = _piece()
  finding = compare_melody(a, transpose(a, 5))
  assert finding.score == 1.0 and finding.features["melody_share_b"] == 1.0
  assert finding.text.startswith(
      "melody: 15 of 15 intervals of A match (100%), bar 1 beat 1 to bar 4 beat 4 of A against "
      "bar 1 beat 1 to bar 4 beat 4 of B, up a perfect fourth")
  assert compare_melody(a, transpose(a, -14)).text.split(", ")[2] == (
      "down an octave and a major second; contour agrees on 15 of 15 steps")
  # Harmony is read relative to each piece's own key: the same progression.
  assert compare_harmony(a, transpose(a, 5)).score == 1.0
  assert estimate_key(transpose(a, 5)) == (5, "major")


def test_a_rhythm_doubled_in_tempo_matches_and_a_displaced_one_loses_the_beat():
  a = _piece()
  doubled = compare_rhythm(a, change_tempo(a, 2.0))
  assert doubled.score == 1.0 and doubled.features["rhythm_metric"] == 1.0
  assert "14 of 14 inter-onset ratios of A match (100%)" in doubled.text
  assert "on the same beats" in doubled.text
  shifted = compare_rhythm(a, displace(a, 1.0))
  assert shifted.score == 1.0 and shifted.features["rhythm_metric"] == 0.0
  assert "B displaced by +1 quarter notes" in shifted.text
  assert "against bar 1 beat 2 to bar 5 beat 1 of B" in shifted.text  # one beat later
  # Even quarters match only A's ratios of 1 (log2 0): 11 of its 14; the 2-beat note and the
  # two eighths (ratios 2, 1/4, 1, 2) are where A's rhythm is its own.
  even = compare_rhythm(a, _piece(durations=[1] * 16))
  assert even.score == pytest.approx(11 / 14)


def test_a_reharmonised_melody_keeps_its_melody_score_and_loses_its_chord_score():
  a = _piece()
  reharmonised = _piece(chords=[VI, II, III, VI, IV, V, III, VI])
  assert progression(a) == ["I", "IV", "V", "I", "vi", "ii", "V", "I"]
  assert compare_melody(a, reharmonised).score == 1.0
  assert compare_rhythm(a, reharmonised).score == 1.0
  assert compare_harmony(a, a).score == 1.0
  assert compare_harmony(a, reharmonised).score <= 0.25
  # The generator does the same: same melody, every beat a different chord holding its note.
  varied = reharmonise(a, 1.0, np.random.default_rng(0))
  assert varied.melody == a.melody
  for chord in varied.chords:
    note = next(n for n in a.melody if n.onset <= chord.onset < n.onset + n.duration)
    assert note.pitch in chord.pitches
  assert compare_melody(a, varied).score == 1.0 and compare_harmony(a, varied).score < 0.5


def test_ornaments_keep_the_tune_findable():
  a = _piece()
  ornamented = ornament(a, 0.5, np.random.default_rng(1))
  assert len(ornamented.melody) > len(a.melody)
  assert {n.onset for n in a.melody} <= {n.onset for n in ornamented.melody}
  assert compare_melody(a, ornamented).score >= 0.5
  assert compare_melody(a, _piece(pitches=list(np.random.default_rng(2).integers(
      55, 80, 16)))).score < 0.3


def test_the_skyline_keeps_the_top_line_and_what_surfaces_when_it_stops():
  from llmjax.experiments.music_judge.piece import _skyline
  # A held A4 under a short C5 surfaces when the C5 ends; a G4 under it stays hidden.
  assert _skyline([(0, 1, 72), (0, 4, 69), (2, 2, 67), (4, 1, 71)]) == [
      Note(0, 1, 72), Note(1, 3, 69), Note(4, 1, 71)]
  # A lower voice moving under a held top note does not break it.
  assert _skyline([(0, 4, 72), (0, 1, 64), (1, 1, 65), (2, 2, 67), (4, 2, 74)]) == [
      Note(0, 4, 72), Note(4, 2, 74)]


def test_a_quotation_sits_in_the_host_in_its_key_and_pushes_the_rest_later():
  from llmjax.experiments.music_judge.variations import quote
  source = _piece()  # C major
  host = transpose(_piece(pitches=[67, 69, 71, 67, 72, 71, 69, 67, 65, 64, 62, 64, 65, 67, 62,
                                   67]), 7)  # G major (its chords), 4 bars
  quoted = quote(source, host, 2, np.random.default_rng(0))
  melody = quoted.melody
  for before, after in zip(melody, melody[1:]):  # one line: no overlaps, nothing empty
    assert before.duration > 0 and before.onset + before.duration <= after.onset + 1e-9
  # The host's first 2 bars (half of its 4), then 2 bars of the source moved to G (the nearer
  # way: down a fourth), then the host's last 2 bars 8 quarters later.
  assert [n for n in melody if n.onset < 8] == [n for n in host.melody if n.onset < 8]
  inserted = [n for n in melody if 8 <= n.onset < 16]
  # They are two whole bars of the source (from some bar line), moved in time and pitch.
  assert any(inserted == [Note(n.onset - start + 8, n.duration, n.pitch - 5)
                          for n in source.melody if start <= n.onset < start + 8]
             for start in (0, 4, 8))
  assert [n for n in melody if n.onset >= 16] == [
      Note(n.onset + 8, n.duration, n.pitch) for n in host.melody if n.onset >= 8]


def test_bars_and_beats_after_a_leading_rest(tmp_path):
  abc = tmp_path / "rest.abc"
  abc.write_text("X:1\nT:t\nM:4/4\nL:1/4\nK:C\nz C D E|F G A B|c4|]\n")
  tune = load_piece(str(abc))
  assert tune.pickup == 0.0 and tune.melody[0].onset == 1.0
  assert tune.bar_beat(tune.melody[0].onset) == (1, 2.0)
  assert tune.bar_beat(tune.melody[-1].onset) == (3, 1.0)
  finding = compare_melody(tune, tune)
  assert "bar 1 beat 2 to bar 3 beat 1 of A" in finding.text


def test_scores_read_from_musicxml_midi_abc_and_humdrum(tmp_path):
  from music21 import meter, note, stream
  upper, lower = stream.Part(), stream.Part()
  upper.partName, lower.partName = "Upper", "Lower"
  upper.append(meter.TimeSignature("4/4"))
  for name, length in (("C5", 4), ("D5", 2), ("E5", 2)):
    upper.append(note.Note(name, quarterLength=length))
  for name, length in (("E4", 1), ("F4", 1), ("G4", 2), ("A4", 4)):
    lower.append(note.Note(name, quarterLength=length))
  score = stream.Score([upper, lower])
  xml = score.write("musicxml", tmp_path / "two.musicxml")
  skyline = load_piece(str(xml))
  # A lower voice moving under a held C5 does not break it (the skyline keeps the upper line).
  assert [(n.pitch, n.duration) for n in skyline.melody] == [(72, 4), (74, 2), (76, 2)]
  assert [n.pitch for n in load_piece(str(xml), part="Lower").melody] == [64, 65, 67, 69]
  assert [n.pitch for n in load_piece(str(xml), part=1).melody] == [64, 65, 67, 69]
  midi = score.write("midi", tmp_path / "two.mid")
  assert [n.pitch for n in load_piece(str(midi)).melody] == [72, 74, 76]
  abc = tmp_path / "tune.abc"
  abc.write_text("X:1\nT:t\nM:3/4\nL:1/4\nK:G\nG A B|d2 B|]\n")
  tune = load_piece(str(abc))
  assert [n.pitch for n in tune.melody] == [67, 69, 71, 74, 71] and tune.bar_quarters == 3.0
  kern = tmp_path / "tune.krn"
  kern.write_text("**kern\n*M4/4\n=1\n4c\n4d\n4e\n4f\n=2\n2g\n2g\n*-\n")
  assert [n.pitch for n in load_piece(str(kern)).melody] == [60, 62, 64, 65, 67, 67]
  chorale = load_piece("bach/bwv66.6", part="Soprano")
  assert chorale.pickup == 1.0 and chorale.bar_beat(chorale.melody[0].onset) == (0, 4.0)
  assert load_piece("bach/bwv66.6").melody == chorale.melody  # the soprano is on top


def test_a_corrupt_midi_file_stops_with_one_line_naming_it(tmp_path):
  bad = tmp_path / "corrupt.mid"
  bad.write_bytes(b"MThd\x00\x00\x00\x06garbage")
  result = subprocess.run([*COMPARE, str(bad),
                           "bach/bwv66.6", "--figure", ""], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: not a readable MIDI file")
  missing = subprocess.run([*COMPARE, "no/such/piece",
                            "bach/bwv66.6", "--figure", ""], capture_output=True, text=True,
                           timeout=120)
  assert missing.returncode == 2 and "no/such/piece: no such file" in missing.stderr


def test_compare_cli_prints_the_findings_and_draws_the_piano_roll(tmp_path):
  figure = tmp_path / "roll.png"
  result = subprocess.run([*COMPARE, "bach/bwv66.6",
                           "bach/bwv66.6", "--part-b", "Soprano", "--figure", str(figure),
                           "--json"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "melody: 35 of 35 intervals of A match (100%)" in result.stdout
  numbers = json.loads(result.stdout.splitlines()[-2])
  assert numbers["harmony"]["score"] == 1.0 and figure.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.trains
def test_music_judge_pipeline_with_a_scripted_lm_judge(tmp_path):
  pytest.importorskip("httpx")
  from conftest import run_cli
  from scripted_endpoint import scripted_server
  prompts = []

  def answer(body):
    prompt = body["messages"][-1]["content"]
    prompts.append(prompt)
    if len(prompts) == 1:
      return "Step 1 - Melody: I cannot tell."  # no verdict: retried
    share = int(prompt.split("intervals of A match (")[1].split("%")[0]) if (
        "intervals of A match (" in prompt) else 0
    return f"Step 4 - Verdict: weighed.\n[RESULT] {5 if share >= 60 else 2}"

  box = []
  server, seen = scripted_server(answer, box)
  args = ["--config", "configs/music_judge.py", "--workdir", str(tmp_path / "w"),
          "--config.benchmark.tunes=6", "--config.benchmark.folk_tunes=6",
          "--config.benchmark.test_share=0.5",
          "--config.progress=False", "--config.judge.backend=openai",
          f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1",
          "--config.judge.model=scripted", "--config.judge.max_retries=2"]
  try:
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    requests = seen["requests"]
    again = run_cli(args)
    assert again.returncode == 0 and seen["requests"] == requests  # nothing judged twice
  finally:
    server.should_exit = True
  w = tmp_path / "w"
  findings = [json.loads(line) for line in (w / "modules" / "findings.jsonl").read_text()
              .splitlines()]
  test = [r for r in findings if r["split"] == "test"]
  assert {r["label"] for r in test} == {0, 1}
  # The full judge and three ablations (each module withheld once); one retry of the first.
  assert requests == 4 * len(test) + 1
  assert sum("melody: not analysed" in p for p in prompts) == len(test)
  # The judge never learns the pieces' names, only the modules' findings.
  assert not any("bach/" in p or "bwv" in p for p in prompts)
  expected = {r["id"]: int(round(100 * r["features"]["melody_share_a"]) >= 60) for r in test}
  report = json.loads((w / "report.json").read_text())
  decided_right = [expected[r["id"]] == r["label"] for r in test]
  assert report["overall"]["lm_judge"]["accuracy"] == pytest.approx(np.mean(decided_right))
  for row in report["levels"]:
    members = [r for r in test if (r["kind"], r["level"]) == (row["kind"], row["level"])]
    assert row["lm_judge"] == pytest.approx(
        np.mean([expected[r["id"]] == r["label"] for r in members]))
  # Without the melody evidence the scripted judge finds no share and calls nothing copied.
  assert report["overall"]["lm_judge - melody"]["accuracy"] == pytest.approx(
      np.mean([r["label"] == 0 for r in test]))
  assert report["overall"]["lm_judge"]["parse_failures"] == 0
  assert (w / "plots" / "roc.png").stat().st_size > 0
  assert "| lm_judge |" in (w / "report.md").read_text()
  # Splits by tune: no chorale or folk printing lies in both.
  pairs = [json.loads(line) for line in (w / "benchmark" / "pairs.jsonl").read_text()
           .splitlines()]
  names = {split: {word for p in pairs if p["split"] == split
                   for word in (p["a"]["name"] + " " + p["b"]["name"]).split()
                   if word.startswith("bach/") or ".abc#" in word}
           for split in ("train", "test")}
  assert any(".abc#" in name for name in names["train"] | names["test"])
  # No melody in both splits: no train setting shares 75% of a test setting's melody.
  from llmjax.experiments.music_judge.benchmark import FAMILY_THRESHOLD
  from llmjax.experiments.music_judge.melody import shared_share
  from llmjax.experiments.music_judge.piece import Piece as P
  settings = {split: {p[side]["name"]: P.from_json(p[side]) for p in pairs
                      if p["split"] == split for side in "ab"
                      if p[side]["name"].startswith("bach/") and " " not in p[side]["name"]}
              for split in ("train", "test")}
  assert not [(x, y) for x, a in settings["train"].items() for y, b in settings["test"].items()
              if shared_share(a, b) >= FAMILY_THRESHOLD]
  negatives = [(p["a"]["name"], p["b"]["name"]) for p in pairs if p["label"] == 0]
  assert len(negatives) == len(set(negatives))  # each partner once
  assert {p["kind"] for p in pairs} >= {"natural", "folk_variant", "folk_negative", "quotation",
                                        "hard_negative"}
  assert names["train"] and names["test"] and not names["train"] & names["test"]


def test_folk_variants_are_one_title_in_two_books_never_a_form_name():
  from llmjax.experiments.music_judge.benchmark import GENERIC_WORDS, _title_key, folk_tunes
  assert _title_key("The Bag of Meal, The") == "bag of meal"
  tunes = folk_tunes(0)
  assert len(tunes) > 100
  for title, versions in tunes:
    assert len({book for book, _ in versions}) >= 2
    assert not set(title.split()) <= GENERIC_WORDS
  assert "march" not in {t for t, _ in tunes} and "soldiers joy" in {t for t, _ in tunes}
