"""Red-flag triage: an urgent-care notice for questions that describe an emergency, from one reviewed rule file
(service/triage_rules.yaml), independent of the model.

    from service.triage import triage
    triage("crushing chest pain and sweating, what do I do")   # -> Triage(rule="chest_pain_cardiac", notice=...)
    triage("What are the treatments for gout?")                # -> None
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

RULES_FILE = Path(__file__).with_name("triage_rules.yaml")


@dataclass(frozen=True)
class Triage:
    rule: str
    notice: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "notice": self.notice}


@dataclass(frozen=True)
class _Rule:
    name: str
    any: tuple[re.Pattern, ...]
    with_: tuple[re.Pattern, ...]
    unless: tuple[re.Pattern, ...]

    def fires(self, text: str) -> bool:
        return (any(p.search(text) for p in self.any)
                and (not self.with_ or any(p.search(text) for p in self.with_))
                and not any(p.search(text) for p in self.unless))


@cache
def load_rules(path: Path = RULES_FILE) -> tuple[str, tuple[_Rule, ...]]:
    import yaml

    raw = yaml.safe_load(path.read_text())

    def compile_all(key: str, rule: dict) -> tuple[re.Pattern, ...]:
        return tuple(re.compile(p, re.IGNORECASE) for p in rule.get(key) or ())

    rules = tuple(_Rule(r["name"], compile_all("any", r), compile_all("with", r), compile_all("unless", r))
                  for r in raw["rules"])
    return " ".join(raw["notice"].split()), rules


def triage(question: str) -> Triage | None:
    """The first rule that fires on the question, with the notice; None for an ordinary question."""
    notice, rules = load_rules()
    text = " ".join(question.split())
    for rule in rules:
        if rule.fires(text):
            return Triage(rule.name, notice)
    return None
