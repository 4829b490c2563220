"""Red-flag triage: an urgent-care notice for questions that describe an emergency, independent of the model.
Two layers: the reviewed rules (pipeline/triage_rules.yaml: precise, explainable), then a learned layer that
generalises to how patients word emergencies (artifacts/triage: the packaged MiniLM fine-tuned as a classifier of
emergency kinds by `medcite train-triage` (`make demo`, `make models`), threshold chosen for recall on development messages;
used by itself once trained, as the trained judges are; see MODEL_ENV). Without it, the rules alone.

    from pipeline.triage import triage
    triage("crushing chest pain and sweating, what do I do")   # -> Triage(rule="chest_pain_cardiac", layer="rule")
    triage("dad's face looks droopy and he talks funny")       # -> Triage(rule="stroke_signs", layer="classifier",
                                                               #           score=0.93)
    triage("What are the treatments for gout?")                # -> None
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

RULES_FILE = Path(__file__).with_name("triage_rules.yaml")
DEFAULT_MODEL_DIR = "artifacts/triage"
SPEC_FILE = "triage.json"
MODEL_ENV = "MEDCITE_TRIAGE_MODEL"
"""`off`: the rules alone; a directory: that learned layer; unset: artifacts/triage when `make demo` wrote it."""


@dataclass(frozen=True)
class Triage:
    rule: str
    """The rule that fired, or the emergency kind the learned layer recognised."""
    notice: str
    layer: str = "rule"
    """rule (a reviewed pattern matched) or classifier (the learned layer's score passed its threshold)."""
    score: float | None = None
    """The learned layer's probability that the message describes an emergency (None: not computed)."""

    def to_dict(self) -> dict:
        return {"rule": self.rule, "notice": self.notice, "layer": self.layer, "score": self.score}


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


class Classifier:
    """The fine-tuned sequence classifier: P(kind | text) over emergency kinds + "none"; the emergency score is
    1 - P(none), the kind the most probable emergency kind."""

    def __init__(self, model, tokenizer, classes: list[str], threshold: float, max_length: int = 128,
                 precision: str = "fp32"):
        self.model, self.tokenizer, self.kinds = model.eval(), tokenizer, list(classes)
        self.threshold, self.max_length, self.precision = float(threshold), max_length, precision

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """The layer at the precision with its own calibrated threshold: int8 (dynamic quantization of the linear
        layers: p50 17 -> 8 ms per question on 2 cores) where torch can and the spec has its threshold, else fp32."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        spec = json.loads((Path(path) / SPEC_FILE).read_text())
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        thresholds = spec.get("thresholds") or {"fp32": spec["threshold"]}
        int8 = quantized(model) if "int8" in thresholds else None
        if int8 is not None:
            return cls(int8, tok, spec["classes"], thresholds["int8"], spec.get("max_length", 128), "int8")
        return cls(model, tok, spec["classes"], thresholds["fp32"], spec.get("max_length", 128))

    def predict(self, text: str) -> tuple[str, float]:
        import torch

        batch = self.tokenizer([text], truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            p = torch.softmax(self.model(**batch).logits[0].float(), -1).tolist()
        none = self.kinds.index("none")
        best = max((i for i in range(len(self.kinds)) if i != none), key=lambda i: p[i])
        return self.kinds[best], round(1.0 - p[none], 4)


def quantized(model):
    """The model with its linear layers dynamically quantized to int8 (None where this torch cannot: the
    torch.ao API is deprecated in favour of torchao, and still works in the pinned torch 2.13)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8).eval()
    except (AttributeError, RuntimeError, NotImplementedError):
        return None


_lock = threading.Lock()
_loaded: dict[str, Classifier | None] = {}


def model_dir() -> str:
    """The learned layer's directory in force ("" = the rules alone): MEDCITE_TRIAGE_MODEL=off for none, a
    directory as given; unset, the one `make demo` writes, when it exists (as the trained judges are picked up)."""
    setting = os.environ.get(MODEL_ENV, "")
    if setting == "off":
        return ""
    path = setting or DEFAULT_MODEL_DIR
    return path if (Path(path) / SPEC_FILE).is_file() else ""


def classifier() -> Classifier | None:
    """The learned layer, loaded once per process (None when switched off or not trained)."""
    path = model_dir()
    if not path:
        return None
    with _lock:
        if path not in _loaded:
            _loaded[path] = Classifier.load(path)
        return _loaded[path]


def describe() -> dict:
    """What triage runs, for /readyz and `medcite serve`: the reviewed rules (always) and the learned layer
    (where it came from, its precision and threshold), or the command that adds it."""
    _, rules = load_rules()
    layer = classifier()
    return {"rules": len(rules),
            "learned": {"path": model_dir(), "precision": layer.precision, "threshold": layer.threshold}
            if layer else None,
            **({} if layer else {"missing": "the learned layer: `make demo` (or `medcite train-triage`) adds it"})}


def rule_for(text: str) -> str | None:
    _, rules = load_rules()
    for rule in rules:
        if rule.fires(text):
            return rule.name
    return None


def triage(question: str, learned: bool = True) -> Triage | None:
    """The first rule that fires on the question; else the learned layer when its score reaches its threshold;
    None for an ordinary question."""
    notice, _ = load_rules()
    text = " ".join(question.split())
    name = rule_for(text)
    if name:
        return Triage(name, notice_for(name, notice))
    model = classifier() if learned else None
    if model is None:
        return None
    kind, score = _predicted(model, text)
    return Triage(kind, notice_for(kind, notice), "classifier", score) if score >= model.threshold else None


@functools.lru_cache(maxsize=512)
def _predicted(model: Classifier, text: str) -> tuple[str, float]:
    """One forward pass per question: a streamed answer is triaged ahead of its draft and again with its answer."""
    return model.predict(text)


_REASSURING = re.compile(r"\b(not (a |an )?(serious|emergency|dangerous|urgent|worrying)|no need to (worry|see|go|call|"
                         r"rush)|nothing to worry|can (safely )?wait|(is|are) (usually |generally )?harmless|"
                         r"don'?t (need to )?worry|wait and see|will (usually )?(go away|pass) on (its|their) own)\b",
                         re.I)


def contradicts(sentence: str) -> bool:
    """A sentence that would talk a person out of the urgent-care notice ("This is usually not serious.")."""
    return bool(_REASSURING.search(sentence))


_SELF_HARM_NOTICE = ("If you are thinking about ending your life or harming yourself, you deserve support right now: "
                     "call or text a crisis line (988 in the US, Samaritans 116 123 in the UK and Ireland) or your "
                     "local emergency number, or go to the nearest emergency department.")


def notice_for(kind: str, notice: str) -> str:
    """The general urgent-care notice; for self-harm a crisis line named in neutral terms first."""
    return f"{_SELF_HARM_NOTICE} {notice}" if kind == "suicide_self_harm" else notice
