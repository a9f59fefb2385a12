"""Reading a verdict from the end of a judge's output.

A verdict counts only where it ends the output: a judge that stops mid-sentence, or whose text
merely repeats the rubric ("Score 5: the response ...") has given none. The upstream parser's
early bug (matching the "(Score 5)" echoed from the prompt, so that every score came back 5)
is what anchoring at the end rules out.
"""

import re

# What may trail a verdict: whitespace, closing markup, end-of-sequence tokens, a full stop.
_TRAILER = re.compile(r"(?:\s|[.!*_`\"')\]]|</s>|<\|[a-z_]+\|>|<eos>)*\Z", re.IGNORECASE)
# A score digit that is a whole number 1..5: not part of 10, 2.5, 4,5, 45 or -3.
_DIGIT = r"(?<![\d.,\-])([1-5])(?![\d]|[.,]\d)"
_OPEN = r"[\(\[]?\s*"
_CLOSE = r"\s*[\)\]]?"
_OF_FIVE = r"(?:\s*(?:/\s*5|out\s+of\s+5))?"
# Where a bare keyword ("Score: 4", "Result: B") is a verdict and not a word in a sentence
# ("... a grade 3.", "... the final result 2"): at the start of the text or of a line, after
# a sentence's end or a label's colon, or after markup ("**", "- ", "#").
_VERDICT_POSITION = r"(?:^|(?<=[.!?:*#>\-])|(?<=[.!?:]\s)|(?<=\*\*\s))\s*(?:(?:the|my)\s+)?"

_ABSOLUTE = [
    # a tag: "[RESULT] 4", "[SCORE] (3)", "[Result] Score: 2", "[RESULT] score of 1"
    re.compile(r"\[(?:RESULT|SCORE)\]\s*[:=\-]?\s*" + _OPEN
               + r"(?:(?:score|result)\s*(?:of|:|=|-)?\s*)?" + _DIGIT + _OF_FIVE + _CLOSE,
               re.IGNORECASE),
    # a bracketed keyword: "(Score 5)", "[Score 4]", "[Result: 3]"
    re.compile(r"[\(\[]\s*(?:score|result)\s*[:=\-]?\s*" + _DIGIT + _OF_FIVE + r"\s*[\)\]]",
               re.IGNORECASE),
    # a keyword in a verdict's position: "Score: 4", "Final score: 3", "score of 1",
    # "Rating: 4/5", "Result - (1)"
    re.compile(_VERDICT_POSITION + r"(?:final\s+|overall\s+)?(?:score|result|rating|grade)"
               r"\s*(?:is|of|=|:|-)?\s*[:=\-]?\s*" + _OPEN + _DIGIT + _OF_FIVE + _CLOSE,
               re.IGNORECASE | re.MULTILINE),
    # a score out of 5: "4/5", "4 out of 5"
    re.compile(_OPEN + _DIGIT + r"\s*(?:/\s*5|out\s+of\s+5)" + _CLOSE, re.IGNORECASE),
]
# What upstream's parser also accepts anywhere, provided nothing but whitespace follows:
# "... score of 4", "... score: 4", "... result 4" (not "... a score of 4." in a sentence).
_ABSOLUTE_BARE_END = re.compile(r"\b(?:score\s*:?|result\s*:?|score\s+of)\s*" + _OPEN + _DIGIT
                                + _OF_FIVE + _CLOSE, re.IGNORECASE)
_RELATIVE = [
    # a tag: "[RESULT] A", "[RESULT] Response B", "[RESULT: B]", "[Result: B]", "[SCORE] A"
    re.compile(r"\[(?:RESULT|SCORE)\s*(?:\]\s*[:=\-]?|:)\s*" + _OPEN + r"(?:response\s+)?([AB])\b"
               + _CLOSE, re.IGNORECASE),
    # a bracketed response: "[Response B]"
    re.compile(r"\[\s*response\s+([AB])\s*\]", re.IGNORECASE),
    # a keyword in a verdict's position: "Winner: A", "The better response is B",
    # "Verdict: (B)", "Result: B"
    re.compile(_VERDICT_POSITION + r"(?:final\s+)?(?:winner|better response|result|verdict)"
               r"\s*(?:is|:|-)?\s*[:\-]?\s*" + _OPEN + r"(?:response\s+)?([AB])\b" + _CLOSE,
               re.IGNORECASE | re.MULTILINE),
]


def _tail_match(patterns, text: str, bare_end=None):
  """The first pattern whose match ends the text (up to trailing markup), or `bare_end`'s
  match followed by nothing but whitespace; its group 1."""
  if not isinstance(text, str):
    return None
  for pattern in patterns:
    for match in reversed(list(pattern.finditer(text))):
      if _TRAILER.match(text, match.end()):
        return match.group(1)
  if bare_end is not None:
    for match in reversed(list(bare_end.finditer(text))):
      if not text[match.end():].strip():
        return match.group(1)
  return None


def parse_absolute(text: str) -> int | None:
  """The 1-5 score ending a judge's output ("... [RESULT] 4"), or None.

  Accepts "[RESULT] 4", "[SCORE] 4", "(Score 4)", "4/5", "4 out of 5", and "Score: 4",
  "score of 4", "Result: 4" where such a keyword stands as a verdict (starting the text, a
  line or a sentence, or after a label or markup), with brackets or parentheses around the
  number and trailing markup (".", "**", "</s>"). Rejects fractions and other ranges
  ("Score: 2.5", "10", "7/10"), a number in running prose ("... earns a grade 3.", "... the
  final result 2"), a score that does not end the output, and outputs with none.
  """
  found = _tail_match(_ABSOLUTE, text, _ABSOLUTE_BARE_END)
  return int(found) if found is not None else None


def parse_relative(text: str) -> str | None:
  """The "A" or "B" verdict ending a judge's output ("... [RESULT] A", "[Response B]",
  "Winner: A"), or None."""
  found = _tail_match(_RELATIVE, text)
  return found.upper() if found is not None else None
