"""The step-by-step LM judge: it reads the modules' findings, reasons over melody, then rhythm,
then harmony, and ends with a 1-5 likelihood that B takes A's music.

The judge sees only the findings, never the pieces' names (a variation's name would give the
answer away). Its output counts only when it ends with "[RESULT] N", N in 1..5, read by the
judge layer's strict parser (llmjax.evals.parsing.parse_absolute); anything else is retried and
then counted as a failure, never scored.
"""

from typing import Mapping

from llmjax.experiments.music_judge.finding import Finding

SYSTEM = ("You are a musicologist who assesses music plagiarism claims from analytic evidence. "
          "You are fair: shared conventions of a style are not copying, and a copy may be "
          "disguised by transposition, a new tempo, ornaments, new chords or a new setting.")

INSTRUCTIONS = """Below is evidence from three analysis modules comparing piece A (the original) \
with piece B (the piece under suspicion). Decide how likely it is that B takes its music from A.

Evidence:
{evidence}

Think step by step, one short paragraph each:
Step 1 - Melody: how much of A's melody appears in B, whether in order and in how long a \
passage, and whether a transposition explains the differences. People weigh the melody most.
Step 2 - Rhythm: whether B keeps A's rhythm at any tempo, and whether it is shifted against \
the barline. A rhythm alone is weak evidence: many tunes share common rhythms.
Step 3 - Harmony: whether B keeps A's chord progression in its own key. Common progressions \
are weak evidence; a copied melody under new chords is still a copied melody.
Step 4 - Verdict: weigh the three and give the likelihood that B copies A on this scale:
1 = clearly independent, 2 = probably independent, 3 = uncertain, 4 = probably copied, \
5 = clearly copied.
End your answer with the line "[RESULT] N" where N is 1, 2, 3, 4 or 5."""

COPIED_FROM = 4  # a likelihood of 4 or 5 is a "copied" verdict


def judge_messages(findings: Mapping[str, Finding],
                   without: str | None = None) -> tuple[dict[str, str], ...]:
  """The chat messages that ask the judge about one pair; `without`: a module whose evidence
  is withheld (an ablation), which the prompt says was not run."""
  evidence = "\n".join(
      f"- {name}: not analysed (no evidence from this module; judge without it)"
      if name == without else f"- {finding.text}" for name, finding in findings.items())
  return ({"role": "system", "content": SYSTEM},
          {"role": "user", "content": INSTRUCTIONS.format(evidence=evidence)})
