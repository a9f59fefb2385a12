"""Music-plagiarism evidence: melody, rhythm and chord-progression modules over scores read with
music21 (llmjax.music.piece), their comparison report and CLI (llmjax.music.compare), graded
variations of real public-domain melodies (llmjax.music.variations) and the benchmark built from
them (llmjax.music.benchmark)."""
