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

_ABSOLUTE = [
    re.compile(r"\[(?:RESULT|SCORE)\]\s*[:=\-]?\s*" + _OPEN + r"(?:score\s*)?" + _DIGIT
               + r"(?:\s*(?:/\s*5|out of 5))?" + _CLOSE, re.IGNORECASE),
    re.compile(r"\b(?:final\s+)?(?:score|result|rating|grade)\s*(?:is|of|=|:|-)?\s*[:=\-]?\s*"
               + _OPEN + _DIGIT + r"(?:\s*(?:/\s*5|out of 5))?" + _CLOSE, re.IGNORECASE),
    re.compile(_OPEN + _DIGIT + r"\s*(?:/\s*5|out of 5)" + _CLOSE, re.IGNORECASE),
]
_RELATIVE = [
    re.compile(r"\[(?:RESULT|SCORE)\]\s*[:=\-]?\s*" + _OPEN + r"(?:response\s+)?([AB])\b"
               + _CLOSE, re.IGNORECASE),
    re.compile(r"\b(?:winner|better response|result|verdict)\s*(?:is|:|-)?\s*[:\-]?\s*"
               + _OPEN + r"(?:response\s+)?([AB])\b" + _CLOSE, re.IGNORECASE),
]


def _tail_match(patterns, text: str):
  """The first pattern whose match ends the text (up to trailing markup); its group 1."""
  if not isinstance(text, str):
    return None
  for pattern in patterns:
    for match in reversed(list(pattern.finditer(text))):
      if _TRAILER.match(text, match.end()):
        return match.group(1)
  return None


def parse_absolute(text: str) -> int | None:
  """The 1-5 score ending a judge's output ("... [RESULT] 4"), or None.

  Accepts "[RESULT] 4", "[SCORE] 4", "Score: 4", "score of 4", "4/5", "4 out of 5", with
  brackets or parentheses around the number and trailing markup (".", "**", "</s>"). Rejects
  fractions and other ranges ("Score: 2.5", "10", "7/10"), a score that does not end the
  output, and outputs with none.
  """
  found = _tail_match(_ABSOLUTE, text)
  return int(found) if found is not None else None


def parse_relative(text: str) -> str | None:
  """The "A" or "B" verdict ending a judge's output ("... [RESULT] A"), or None."""
  found = _tail_match(_RELATIVE, text)
  return found.upper() if found is not None else None
