"""The judge's three tasks in the CoT Encyclopedia and the strict readers of their answers.

1. Criteria identification: from one response, contrasting criteria, one per line inside
   <patterns>...</patterns>, each "Criterion name (Pattern A vs. Pattern B)".
2. Rubric generation: for a representative criterion, per pattern a definition, key
   characteristics and short examples, in labelled sections we can read back.
3. Classification: per response and criterion, a report with evidence for each pattern that
   ends "Final pattern determination: <pattern>", mapped to A or B.

Every reader returns None for an answer it cannot read, so the judge layer retries it and, in the
end, counts it as a failure (the released code split no <patterns> block and parsed no final
label; we read both and count what we cannot).
"""

import dataclasses
import re

_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])?\s*(?P<name>[^()]+?)\s*\(\s*(?P<a>.+?)\s+vs\.?\s+"
                   r"(?P<b>.+?)\s*\)\s*[.;]?\s*$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Criterion:
  name: str
  pattern_a: str
  pattern_b: str

  @property
  def text(self) -> str:
    """What is embedded: the name with both patterns."""
    return f"{self.name} ({self.pattern_a} vs. {self.pattern_b})"


def criteria_messages(question: str, response: str) -> tuple[dict[str, str], ...]:
  return ({"role": "user", "content": (
      "Read the question and the model's response below. Identify the criteria that "
      "distinguish how this response reasons from other ways one could reason about the same "
      "question: for each, give a short name and two contrasting patterns, the one this "
      "response shows and its opposite.\n\n"
      f"Question:\n{question}\n\nResponse:\n{response}\n\n"
      "Write each criterion on its own line as\n"
      "Criterion name (Pattern A vs. Pattern B)\n"
      "and put all of them, and nothing else, between <patterns> and </patterns>.")},)


def parse_criteria(text: str) -> list[Criterion] | None:
  """The criteria of the last <patterns> block; None if there is none, a line inside it does
  not have the form "Name (A vs. B)", or it is empty."""
  if not isinstance(text, str):
    return None
  blocks = re.findall(r"<patterns>(.*?)</patterns>", text, re.DOTALL | re.IGNORECASE)
  if not blocks:
    return None
  found = []
  for line in blocks[-1].splitlines():
    if not line.strip():
      continue
    match = _LINE.match(line)
    if match is None:
      return None
    found.append(Criterion(*(re.sub(r"\s+", " ", match.group(k)).strip("*_: ")
                             for k in ("name", "a", "b"))))
  return found or None


def rubric_messages(criterion: Criterion) -> tuple[dict[str, str], ...]:
  return ({"role": "user", "content": (
      f"Write a rubric for the reasoning criterion \"{criterion.name}: {criterion.pattern_a} "
      f"vs. {criterion.pattern_b}\". For each of the two patterns give a definition (two or "
      "three sentences), three or four key characteristics, and two short examples. Use "
      "exactly this layout:\n"
      f"Pattern A: {criterion.pattern_a}\nDefinition: ...\nCharacteristics:\n- ...\n"
      "Examples:\n- ...\n"
      f"Pattern B: {criterion.pattern_b}\nDefinition: ...\nCharacteristics:\n- ...\n"
      "Examples:\n- ...")},)


def _section(block: str, name: str, next_names: tuple[str, ...]) -> str | None:
  stop = "|".join(next_names)
  match = re.search(rf"^\s*\**{name}\**\s*:\s*(.*?)(?=^\s*\**(?:{stop})\**\s*:|\Z)", block,
                    re.DOTALL | re.MULTILINE | re.IGNORECASE)
  return match.group(1).strip() if match else None


def _items(section: str) -> list[str]:
  return [re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip()
          for line in section.splitlines() if line.strip()]


def parse_rubric(text: str) -> dict | None:
  """{'A': {...}, 'B': {...}} with each pattern's definition, characteristics and examples;
  None unless both patterns have all three, with at least one item each."""
  if not isinstance(text, str):
    return None
  parts = re.split(r"^\s*\**Pattern\s+([AB])\**\s*:", text, flags=re.MULTILINE | re.IGNORECASE)
  if len(parts) < 5:
    return None
  rubric = {}
  letters = [letter.upper() for letter in parts[1::2]]
  if sorted(letters) != ["A", "B"]:  # each pattern exactly once
    return None
  for letter, block in zip(parts[1::2], parts[2::2]):
    name = block.splitlines()[0].strip(" *") if block.strip() else ""
    definition = _section(block, "Definition", ("Characteristics", "Examples"))
    characteristics = _section(block, "Characteristics", ("Examples", "Definition"))
    examples = _section(block, "Examples", ("Definition", "Characteristics"))
    if not (name and definition and characteristics and examples):
      return None
    rubric[letter.upper()] = {"name": name,
                              "definition": " ".join(definition.strip("* ").split()),
                              "characteristics": _items(characteristics),
                              "examples": _items(examples)}
  return rubric if set(rubric) == {"A", "B"} else None


def classification_messages(question: str, response: str, criterion: Criterion,
                            rubric: dict) -> tuple[dict[str, str], ...]:
  def describe(letter):
    r = rubric[letter]
    return (f"Pattern {letter}: {r['name']}\nDefinition: {r['definition']}\n"
            "Characteristics:\n" + "\n".join(f"- {c}" for c in r["characteristics"]) +
            "\nExamples:\n" + "\n".join(f"- {e}" for e in r["examples"]))

  return ({"role": "user", "content": (
      f"Criterion: {criterion.name}\n\n{describe('A')}\n\n{describe('B')}\n\n"
      f"Question:\n{question}\n\nResponse:\n{response}\n\n"
      "Write a short report: initial observations, evidence for Pattern A, evidence for "
      "Pattern B, and your determination. End with the line\n"
      f"Final pattern determination: <{criterion.pattern_a} or {criterion.pattern_b}>")},)


def _normal(text: str) -> str:
  return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


_NEGATION = re.compile(r"\b(?:not|neither|nor|no|never|or)\b")


def parse_determination(text: str, criterion: Criterion) -> str | None:
  """'A' or 'B' from the last "Final pattern determination: X" line.

  X may be "Pattern A|B" or "A|B" (after a qualifier such as "Strongly"), or one pattern's name
  (with or without brackets, bold, quotes or a qualifier). None when there is no such line, or X
  is ambiguous: it names both patterns (a copied template "<A or B>", "A, not B"), negates ("not
  X", "neither"), names no pattern, or gives a letter and the other pattern's name. A name
  inside the other ("Focused" / "Broadly focused") counts as the longer one only when the
  shorter does not also stand alone.
  """
  if not isinstance(text, str):
    return None
  found = re.findall(r"final\s+pattern\s+determination\s*:\s*(.+)", text, re.IGNORECASE)
  if not found:
    return None
  answer = _normal(found[-1])
  if _NEGATION.search(answer):
    return None
  names = {"A": _normal(criterion.pattern_a), "B": _normal(criterion.pattern_b)}
  padded = f" {answer} "

  def named(k):
    if not names[k] or f" {names[k]} " not in padded:
      return False
    other = names["B" if k == "A" else "A"]
    if other and f" {names[k]} " in f" {other} " and f" {other} " in padded:
      # this name only occurs inside the other one's
      return f" {names[k]} " in padded.replace(f" {other} ", " | ")
    return True

  hits = [k for k in ("A", "B") if named(k)]
  letters = set(re.findall(r"\bpattern ([ab])\b", answer))
  if answer in ("a", "b"):
    letters = {answer}
  if len(letters) > 1 or len(hits) > 1:
    return None
  if letters:
    letter = letters.pop().upper()
    return letter if not hits or hits == [letter] else None
  return hits[0] if hits else None


def prediction_messages(question: str, criterion: Criterion,
                        rubric: dict) -> tuple[dict[str, str], ...]:
  """The prompting baseline of strategy prediction: which pattern should solve the question."""
  return ({"role": "user", "content": (
      f"Criterion: {criterion.name}\nPattern A: {rubric['A']['name']}: "
      f"{rubric['A']['definition']}\nPattern B: {rubric['B']['name']}: "
      f"{rubric['B']['definition']}\n\nQuestion:\n{question}\n\n"
      "Which of the two patterns should a solver follow to answer this question correctly? "
      "Explain briefly, then end with the line\n"
      f"Final pattern determination: <{criterion.pattern_a} or {criterion.pattern_b}>")},)


def steering_messages(question: str, patterns: list[dict]) -> tuple[dict[str, str], ...]:
  """Control by prompting: the question with the reasoning patterns to follow (each a rubric
  pattern: name and definition)."""
  strategy = "\n".join(f"- {p['name']}: {p['definition']}" for p in patterns)
  return ({"role": "user", "content": (
      "Solve the question below, reasoning in the way described here:\n"
      f"{strategy}\n\nQuestion:\n{question}\n\nEnd with the line \"The answer is N\".")},)
