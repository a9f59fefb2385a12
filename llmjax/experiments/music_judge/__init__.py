"""The music-plagiarism judge: melody, rhythm and chord-progression modules over scores read
with music21 (piece), their comparison report and CLI (compare), graded variations of real
public-domain melodies (variations), the benchmark built from them (benchmark), and the
experiment that scores it (experiment). See README.md."""
