"""Answer-quality metrics: what "a better model" means here, since a lower loss does not.

    from core.quality import answer_metrics, summarize, quality_score
    m = answer_metrics(text, reference, stop_reason="end_of_turn")   # one answer
    s = summarize([m1, m2, ...])                                      # means over a probe set
    quality_score(s, {"token_f1": 1.0, "repeated_4gram_rate": -1.0})  # one number to pick checkpoints by

Shared by the fine-tuning job (checkpoint selection on a probe set) and the offline evaluation, so both judge
answers the same way. Pure Python, no model needed. The degeneration metrics guard the failures the write-ups
saw: runaway lists, repeated n-grams, answers that never reach the end-of-turn token.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence

_WORD = re.compile(r"[a-z0-9]+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s")

# A score that rewards overlap with the reference and punishes the degenerate shapes seen in the write-ups.
DEFAULT_QUALITY_WEIGHTS: dict[str, float] = {
    "token_f1": 1.0,
    "end_of_turn": 0.2,
    "repeated_4gram_rate": -1.0,
    "runaway_list": -0.5,
}


# not after a title or a Latin abbreviation: "as described by Dr. Fowler" was cut into a sentence that ended at
# "Dr" and passed verification on its own (found reading the consumer answers)
_ABBREVIATIONS = ("Dr", "Mr", "Mrs", "Ms", "Prof", "St", "vs", "e.g", "i.e", "approx")
_SENTENCE_END = re.compile("".join(rf"(?<!\b{re.escape(a)}\.)" for a in _ABBREVIATIONS)
                           + r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_STOP = frozenset("""a an and are as at be been being but by can could did do does for from had has have he her his
how i if in into is it its may might more most no not of on or our she should so some such than that the their them
then there these they this those to was we were what when where which while who why will with would you your also
other any each many much very""".split())  # noqa: SIM905


def split_sentences(text: str) -> list[str]:
    """Sentences, split after . ! ? before a capital, digit, quote or bracket; newlines split too."""
    out: list[str] = []
    for line in text.splitlines():
        out.extend(s for s in _SENTENCE_END.split(line.strip()) if s)
    return out


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in _STOP}


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens (the unit of token F1 and the n-gram metrics)."""
    return _WORD.findall(text.lower())


def token_f1(pred: str, gold: str) -> float:
    """SQuAD-style bag-of-words F1 between an answer and a reference."""
    p, g = words(pred), words(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one (0 = no repetition; loops push it towards 1)."""
    toks = words(text)
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams (1 = every bigram new)."""
    toks = words(text)
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def longest_list_run(text: str) -> int:
    """The longest run of consecutive list-like lines, or of comma-separated items within one sentence."""
    best = run = 0
    for line in text.splitlines():
        if not line.strip():
            continue  # blank lines between items do not end a list
        run = run + 1 if _LIST_ITEM.match(line) else 0
        best = max(best, run)
    inline = max((s.count(",") + 1 for s in re.split(r"[.!?](?:\s|$)", text) if s.count(",") >= 2), default=0)
    return max(best, inline)


def runaway_list(text: str, threshold: int = 8) -> bool:
    """A list that keeps going: `threshold` or more items in one run (the list runaway of the write-ups)."""
    return longest_list_run(text) >= threshold


def answer_metrics(text: str, reference: str | None, stop_reason: str, completion_tokens: int | None = None
                   ) -> dict[str, float]:
    """Every per-answer metric; token_f1 only when there is a reference."""
    m: dict[str, float] = {
        "repeated_4gram_rate": repeated_ngram_rate(text, 4),
        "distinct_2": distinct_n(text, 2),
        "longest_list_run": float(longest_list_run(text)),
        "runaway_list": float(runaway_list(text)),
        "end_of_turn": float(stop_reason == "end_of_turn"),
        "length_cap": float(stop_reason == "length"),
        "answer_words": float(len(words(text))),
    }
    if completion_tokens is not None:
        m["answer_tokens"] = float(completion_tokens)
    if reference is not None:
        m["token_f1"] = token_f1(text, reference)
    return m


def summarize(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of every metric over rows (keys present in every row)."""
    if not rows:
        return {}
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: round(statistics.fmean(float(r[k]) for r in rows), 6) for k in keys}


def quality_score(summary: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """Weighted sum of summary means: the number checkpoints are chosen by."""
    weights = DEFAULT_QUALITY_WEIGHTS if weights is None else weights
    missing = [k for k in weights if k not in summary]
    if missing:
        raise KeyError(f"quality weights name metric(s) not measured: {', '.join(missing)}")
    return round(sum(w * float(summary[k]) for k, w in weights.items()), 6)
