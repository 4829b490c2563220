"""What "a passage supports a sentence" means, in one place: the serving pipeline's verification stage, the
fine-tuning targets' citations and the evaluation's citation support all call `attribute`.

    judge = SupportJudge(embed=retriever.embed)           # content-word overlap + the index's own embedder
    verdicts = attribute(answer_text, [p.text for p in shown], [p.title for p in shown], judge, threshold=0.55)
    for v in verdicts: print(v.text, v.citations, v.supported, v.score)

A sentence's score against a passage is `lexical_weight * overlap + (1 - lexical_weight) * cosine`, where overlap
is the share of the sentence's content words (lower-cased, light suffix stemming, stopwords out) found in the
passage, and cosine the embedder's similarity of sentence and passage (0 where no embedder is given). A citation
stays only where its passage scores at or above the threshold; an uncited or wrongly cited sentence that a shown
passage supports gets that passage's marker (post-hoc attribution). Copied passage headers are not sentences.
A trained faithfulness judge (pipeline.verify.judges, `make demo`) sits behind the same `scores` method. Standard library only; numpy only with an embedder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.markers import markers_in, strip_markers
from core.quality import content_words, split_sentences
from core.types import SentenceVerdict

_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "es", "ed", "ly", "s", "e")
"""Longest first; the final "e" makes diagnose/diagnosing and cause/caused one stem."""


def _stem(word: str) -> str:
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 4:
            return word[: -len(suf)]
    return word


def stems(text: str) -> set[str]:
    """Content words of text, lightly stemmed (treats/treated/treatment... still differ; good enough for overlap)."""
    return {_stem(w) for w in content_words(strip_markers(text))}


def overlap(sentence: str, passage_stems: set[str]) -> float:
    """Share of the sentence's content words that occur in the passage (1.0 for a sentence without any)."""
    words = stems(sentence)
    return len(words & passage_stems) / len(words) if words else 1.0


def aligned_window(passage: str, sentence: str, n: int = 2) -> str:
    """The passage sentences a sentence is most likely drawn from: the `n` with the most content words in common,
    in passage order. The faithfulness judge compares a sentence with these rather than with the whole 200-token
    passage: on whole passages a MiniLM cross-encoder stayed at the label prior for a full epoch (validation
    average precision 0.55), since one changed word is lost in 250 tokens."""
    sents = split_sentences(passage)
    if len(sents) <= n:
        return passage
    words = stems(sentence)
    best = sorted(range(len(sents)), key=lambda i: (-len(stems(sents[i]) & words), i))[:n]
    return " ".join(sents[i] for i in sorted(best))


@dataclass
class SupportJudge:
    """Scores sentences against passages in [0, 1]. With `model` (a trained faithfulness judge: `.score(pairs)` of
    (passage, sentence) -> probability, pipeline.verify.judges.CrossEncoderJudge) the score is the judge's probability that
    the passage states the sentence, reading the passage under its title. Without it, the lexical judge: content-
    word overlap, plus the embedder's cosine when `embed` (texts -> L2-normalised vectors) is given."""

    embed: Callable[[list[str]], object] | None = None
    lexical_weight: float = 0.5
    model: object | None = None
    min_overlap: float = 0.25
    """With a model: a (sentence, passage) pair sharing less than this share of the sentence's content words is
    not sent to it (score 0): a passage cannot state what it shares no words with, and the judge costs ~22 ms a
    pair on 2 cores, 15 pairs for a 5-sentence answer over 3 passages."""

    @property
    def name(self) -> str:
        return "faithfulness-judge" if self.model is not None else "lexical"

    def scores(self, sentences: Sequence[str], passages: Sequence[str],
               titles: Sequence[str] = ()) -> list[list[float]]:
        if self.model is not None:
            named = list(zip(list(titles) or [""] * len(passages), passages, strict=True))
            pstems = [stems(p) for p in passages]
            todo = [(i, j) for i, s in enumerate(sentences) for j in range(len(passages))
                    if overlap(s, pstems[j]) >= self.min_overlap]
            flat = self.model.score([(f"{named[j][0]}\n{aligned_window(named[j][1], strip_markers(sentences[i]))}"
                                      .lstrip("\n"), strip_markers(sentences[i])) for i, j in todo])  # type: ignore[attr-defined]
            out = [[0.0] * len(passages) for _ in sentences]
            for (i, j), score in zip(todo, flat, strict=True):
                out[i][j] = score
            return out
        pstems = [stems(p) for p in passages]
        lex = [[overlap(s, ps) for ps in pstems] for s in sentences]
        if self.embed is None or not sentences or not passages:
            return lex
        vecs = self.embed([strip_markers(s) for s in sentences] + list(passages))
        sv, pv = vecs[: len(sentences)], vecs[len(sentences):]
        cos = (sv @ pv.T).clip(0, 1).tolist()  # type: ignore[attr-defined]
        w = self.lexical_weight
        return [[round(w * lex[i][j] + (1 - w) * cos[i][j], 4) for j in range(len(passages))]
                for i in range(len(sentences))]



LIST_TALK = re.compile(r"(provides the following list|the table below|MedlinePlus Medical Dictionary to look up"
                       r"|The Human Phenotype Ontology \(HPO\) has collected)", re.I)
"""A passage's talk about a list or table (GARD: "The Human Phenotype Ontology provides the following list of
signs and symptoms for X"): alone, without the list, it says nothing."""


def points_at_list(sentence: str) -> bool:
    """"...provides the following list of signs and symptoms for Hodgkin lymphoma [3]." with the list left behind
    in the passage: read in the patient-style answers, where it passed as supported and answering."""
    return bool(LIST_TALK.search(sentence))


def stops_at_colon(sentence: str) -> bool:
    """A generated sentence that ends at its colon, what it announces not given: "The answer to the question of
    what causes a coronary artery spasm is: [3]" passed for "What causes heart attack?" with checked generated
    sentences allowed (docs/finetuning.md). Quotes keep a lead-in only with its list (quotable.candidates)."""
    return strip_markers(sentence).rstrip().endswith(":")


_LABELS = frozenset({"passage", "passages", "source", "sources", "title", "answer", "provided", "given",
                     "following", "here", "below", "above"})


def is_header(sentence: str, titles: Sequence[str]) -> bool:
    """A line that only repeats a passage's title ("[4] Ewing Sarcoma: treatment", "Passage: Gout treatment",
    "The passage you provided is: Lip and Oral Cavity Cancer: susceptibility")."""
    bare = strip_markers(sentence).strip(" :.-*#")
    if not bare:
        return True
    if re.search(r"[.!?]$", sentence.strip()) and len(bare.split()) > 6:
        return False
    words = content_words(bare) - _LABELS
    return any(words and words <= content_words(t) for t in titles)


def is_fragment(sentence: str) -> bool:
    """A piece of a passage copied from where its chunk starts mid-sentence ("uric acid levels.", "with
    patients, NEI is ..."), the tail of a cut line, or too short to say anything: not an answer sentence."""
    bare = strip_markers(sentence).strip()
    # a line that starts with the punctuation that joined it to something cut away (": Leg Injuries, Dislocations &
    # Broken Bones", the tail of "The answer to this question is: [1] ... [2]: ...")
    return len(bare.split()) < 4 or bare[:1].islower() or bare[:1] in ":;,)"


_META = frozenset(_stem(w) for w in _LABELS | set("""question questions asked ask asking answers answered response
text document documents context based information regarding according mentioned mentions says said states stated
listed found refer refers see topic relevant summary summaries about""".split()))  # noqa: SIM905
_VAGUE = frozenset(_stem(w) for w in """condition conditions disease diseases disorder disorders problem problems
issue issues factor factors various certain different several many variety number range thing things type types
kind kinds person people someone""".split())  # noqa: SIM905
"""Words that add no content to a restatement: "Achalasia is caused by the condition of achalasia." says nothing
the question did not ("What causes achalasia?"), and passed with a citation in the consumer answers."""
_YES_NO = frozenset("is are was were can could do does did should will would has have had may might must".split())  # noqa: SIM905


_LEANS_ON_PREVIOUS = re.compile(
    r"^\W*(?:these|this|those|such|they|it|its|their|both|each of them|the (?:condition|disorder|disease|tests?|"
    r"procedures?|treatments?|medications?|drugs?|symptoms?|signs?|findings?|changes?|above|latter|former))\b", re.I)
MAX_QUOTE_WORDS = 70


def leans_on_previous(sentence: str) -> bool:
    """A sentence whose subject lives in the sentence before it ("These tests include ...", "This condition ...",
    "They may ..."): quoted alone it can change subject (the tests that rule out look-alike diseases read as the
    tests for the disease asked about)."""
    return bool(_LEANS_ON_PREVIOUS.match(sentence))


def _flat(text: str) -> str:
    return " ".join(strip_markers(text).lower().split()).rstrip(".!?;: ")


def copied_from(sentence: str, flat_passages: Sequence[str]) -> list[int]:
    """The passages (markers) holding the sentence word for word, when its subject is its own (not "These tests
    ..."): such a copy is supported whatever a judge scores it (the served int8 faithfulness judge rejected 24 of
    179 sentences copied from their own passage, issue 35)."""
    key = _flat(sentence)
    if len(key.split()) < 5 or leans_on_previous(sentence):
        return []
    return [n for n, p in enumerate(flat_passages, start=1) if key in p]


def restates_question(sentence: str, question: str) -> bool:
    """A sentence with no content word beyond the question's and talk about questions, answers and passages
    ("The answer for the question 'What are treatments for gout?' would be [1]."). Its overlap with the question
    lets it pass as supported, and it says nothing. For yes/no questions only a sentence with no content of its
    own counts: "Gout can be cured." answers "Can gout be cured?" with the question's own words."""
    words = stems(sentence) - _META - _VAGUE
    if not words:
        return bool(question)
    asks = question.strip().split(maxsplit=1)
    if not asks or asks[0].lower() in _YES_NO:
        return False
    return words <= stems(question)


def attribute(text: str, passages: Sequence[str], titles: Sequence[str], judge: SupportJudge,
              threshold: float, question: str = "") -> list[SentenceVerdict]:
    """Split text into sentences and attribute each to the shown passages (markers 1..len(passages)). With the
    question, sentences that only restate it are marked as such (not answer sentences)."""
    raw = split_sentences(text)
    kinds = ["header" if is_header(s, titles) else "fragment" if is_fragment(s)
             else "pointer" if points_at_list(s) or stops_at_colon(s)
             else "restatement" if question and restates_question(s, question) else "" for s in raw]
    body = [s for s, k in zip(raw, kinds, strict=True) if not k]
    scores = judge.scores(body, passages, titles) if passages else [[] for _ in body]
    flat = [_flat(p) for p in passages]
    out: list[SentenceVerdict] = []
    it = iter(zip(body, scores, strict=True))
    for s, kind in zip(raw, kinds, strict=True):
        if kind:
            out.append(SentenceVerdict(strip_markers(s), [], False, 0.0, markers_in(s), kind))
            continue
        _, row = next(it)
        cited = markers_in(s)
        clean = strip_markers(s)
        copied = copied_from(clean, flat)
        good = [n for n in cited if (1 <= n <= len(row) and row[n - 1] >= threshold) or n in copied]
        if not good and copied:
            good = copied[:1]
        elif not good and row and max(row) >= threshold:
            good = [row.index(max(row)) + 1]  # post-hoc: the best supporting passage
        best = max(row) if row else 0.0
        if good:
            end = re.search(r"[.!?]$", clean)
            mark = "".join(f"[{n}]" for n in good)
            clean = f"{clean[:-1]} {mark}{clean[-1]}" if end else f"{clean} {mark}"
        out.append(SentenceVerdict(clean, good, bool(good), round(best, 4), cited))
    return out
