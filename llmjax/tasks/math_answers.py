"""Answers and calculator annotations of step-by-step math rationales (GSM8K style).

A rationale is lines of reasoning, some holding calculator annotations `<<48/2=24>>`, ending in
`The answer is N`. GSM8K's gold rationales end in `#### N` instead; `gsm8k_rationale` rewrites
them. Every comparison of answers goes through `normalise_number` on *both* sides: comparing
raw text in one place and normalised text in another (as the Self-Explore reference code does)
turns "1,000" against "1000" into a false mistake.
"""

import ast
import math
import operator
import re

# The answer statement; `$` before the number is accepted too (models copy the question's
# currency), which the reference pattern `The answer is:?\s*(-?[0-9.,]+)` would miss.
ANSWER_RE = re.compile(r"The answer is:?\s*\$?\s*(-?[0-9.,]+)")
ANNOTATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_NUMBER_RE = re.compile(r"-?([0-9]+(\.[0-9]+)?|\.[0-9]+)")
CALCULATOR_TOLERANCE = 1e-3


def normalise_number(text: str) -> str | None:
  """'1,000.' -> '1000', '-3.50' -> '-3.5', '2.0' -> '2', '007' -> '7', '-0' -> '0';
  None if not a number."""
  text = text.strip().replace(",", "").rstrip(".")
  if not _NUMBER_RE.fullmatch(text):
    return None
  sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
  whole, _, fraction = text.partition(".")
  fraction = fraction.rstrip("0")
  text = str(int(whole or "0")) + ("." + fraction if fraction else "")
  return "0" if text == "0" else sign + text


def extract_answer(rationale: str) -> str | None:
  """The normalised number of the first `The answer is N` in `rationale`, or None (invalid).

  The first statement counts: text a model generates after its answer is not read.
  """
  match = ANSWER_RE.search(rationale)
  return normalise_number(match.group(1)) if match else None


def is_correct(rationale: str, gold: str) -> bool:
  """Whether the rationale states the gold answer (both normalised); no answer is wrong."""
  answer, gold_answer = extract_answer(rationale), normalise_number(gold)
  return answer is not None and answer == gold_answer


def gsm8k_rationale(answer_field: str) -> tuple[str, str]:
  """GSM8K's `answer` field -> (rationale ending in 'The answer is N', normalised N).

  Raises ValueError when the field has no `#### N` line or N is not a number.
  """
  body, sep, final = answer_field.rpartition("####")
  gold = normalise_number(final) if sep else None
  if gold is None:
    raise ValueError(f"expected a final '#### N' line with a number, got {answer_field[-40:]!r}")
  return body.rstrip() + f"\nThe answer is {gold}", gold


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod,
              ast.FloorDiv: operator.floordiv}


def _evaluate(node):
  if isinstance(node, ast.Expression):
    return _evaluate(node.body)
  if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
    return float(node.value)
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    value = _evaluate(node.operand)
    return -value if isinstance(node.op, ast.USub) else value
  if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
    left, right = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Pow) and abs(right) > 64:
      raise ValueError("exponent too large")
    return _OPERATORS[type(node.op)](left, right)
  raise ValueError(f"not arithmetic: {ast.dump(node)[:40]}")


def evaluate_expression(expression: str) -> float | None:
  """The value of a calculator expression ('48/2', '0.2*50', '(3+4)*2'), or None if it is not
  plain arithmetic (names, calls, division by zero). Commas in numbers are ignored; 'x' is
  read as multiplication, as GSM8K's annotations sometimes write it."""
  text = expression.replace(",", "").replace("x", "*").replace("×", "*").strip()
  try:
    value = _evaluate(ast.parse(text, mode="eval"))
  except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
    return None
  return value if math.isfinite(value) else None


def annotations(rationale: str) -> list[tuple[str, str]]:
  """Every `<<expression=result>>` of the rationale, in order."""
  return ANNOTATION_RE.findall(rationale)


def annotations_check(rationale: str) -> bool:
  """Whether every calculator annotation's expression evaluates to its stated result (within
  1e-3); a rationale without annotations checks trivially."""
  for expression, result in annotations(rationale):
    value, stated = evaluate_expression(expression), normalise_number(result)
    if value is None or stated is None or abs(value - float(stated)) > CALCULATOR_TOLERANCE:
      return False
  return True


def equation_signature(rationale: str) -> str:
  """The rationale's equations joined, spaces removed: two rationales with the same signature
  compute the same things and count once in the RFT data."""
  return "|".join(f"{e}={r}" for e, r in annotations(rationale)).replace(" ", "")

