"""Plain data types shared by every package, and the two protocols the pipeline is written against.

Standard library only: importing this module never pulls in torch, faiss or litestar.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

SearchMode = Literal["dense", "bm25", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
MAX_QUESTION_CHARS = 2000
"""Longest question (or query) accepted, in characters: the API schema, the pipeline and the CLI use it."""


NOT_ANSWER = {
    "header": "copied passage header",  # a passage's title line
    "fragment": "sentence fragment",  # copied from a passage's cut start, or under four words
    "restatement": "sentence that only restates the question",  # restates_question: nothing a passage supports
    "pointer": "sentence that points at a list it does not give",  # points_at_list
}


@dataclass
class SentenceVerdict:
    """One answer sentence after attribution."""

    text: str
    """The sentence with its verified markers (the original markers removed)."""
    citations: list[int]
    """Markers (1-based, of the passages shown) whose passage supports the sentence."""
    supported: bool
    score: float
    """The best passage's score."""
    cited_before: list[int] = field(default_factory=list)
    """The markers the model wrote (for reports: kept, moved or dropped)."""
    kind: str = ""
    """Why this is not an answer sentence ("" for an answer sentence): one of NOT_ANSWER's keys."""

    @property
    def not_answer(self) -> str:
        """What this sentence is when it is not an answer sentence (for the removal warning), else ""."""
        return NOT_ANSWER.get(self.kind, "")


@dataclass
class Record:
    """One question-answer (or title-text) document read from a corpus, after cleaning."""

    id: str
    """Stable id: MedQuAD `<subset>:<file stem>:<k>`, WikiDoc `wikidoc:<index>`, or the JSONL `id`."""
    title: str
    """Human-readable title shown with citations (MedQuAD: focus + readable qtype)."""
    text: str
    """The answer / document text that gets chunked and indexed."""
    source: str
    """Corpus name, e.g. `medquad/CancerGov` or `wikidoc`; usable as a search filter."""
    url: str = ""
    """Source document URL, if the corpus has one."""
    question: str = ""
    """The original question (MedQuAD/WikiDoc). Kept for training and evaluation; never indexed."""
    meta: dict[str, str] = field(default_factory=dict)
    """Corpus-specific extras (MedQuAD focus, qtype, document id)."""
    duplicate_ids: list[str] = field(default_factory=list)
    """Ids of records whose text was an exact duplicate of this one and were dropped in its favour."""


@dataclass
class Passage:
    """A chunk of one record: the unit that is embedded, retrieved and cited."""

    id: str
    """`<record id>#<n>`, n counting from 0 within the record."""
    record_id: str
    title: str
    text: str
    source: str
    url: str = ""


@dataclass
class Hit:
    """A passage returned by a search, with its score under the mode that produced it."""

    passage: Passage
    score: float
    """Cosine similarity (dense), BM25 score (bm25) or reciprocal-rank-fusion score (hybrid)."""
    rank: int
    """1-based rank in the result list."""

    def to_dict(self, with_text: bool = False) -> dict:
        d = {
            "passage_id": self.passage.id,
            "record_id": self.passage.record_id,
            "title": self.passage.title,
            "source": self.passage.source,
            "url": self.passage.url,
            "score": round(float(self.score), 6),
        }
        if with_text:
            d["text"] = self.passage.text
        return d


@dataclass
class Citation:
    """A passage the answer cites: its [n] marker and where it came from."""

    marker: int
    hit: Hit

    def to_dict(self) -> dict:
        return {"marker": self.marker, **self.hit.to_dict(with_text=True)}


@dataclass
class Answer:
    """What `Pipeline.answer` (pipeline/answer.py) returns; the API, `medcite ask` and the evaluation all read this."""

    question: str
    text: str
    citations: list[Citation]
    """Passages cited in the text, in order of first citation."""
    passages: list[Hit]
    """Every passage the model saw, numbered from 1 in this order (empty without retrieval)."""
    invalid_markers: list[int]
    """[n] markers in the text that point at no passage shown (flagged, not mapped)."""
    usage: dict[str, int]
    """prompt_tokens, completion_tokens, total_tokens."""
    timings: dict[str, float]
    """retrieve_ms, generate_ms, total_ms."""
    stop_reason: str
    """end_of_turn (the model finished) or length (cut at max_new_tokens)."""
    model: str
    index: str | None
    """Fingerprint of the index used; None without retrieval."""
    prompt_version: str
    mode: str | None
    answer_mode: str = "generated"
    """generated (verified model answer), extractive (quoted passage sentences: too little of the model's answer
    was supported), no_answer (the sources do not answer the question), unsourced (no retrieval: unchecked),
    unverified (verification off, or the bare-model chat of a medcite behind medcite)."""
    sentences: list[SentenceVerdict] = field(default_factory=list)
    """Per sentence of `text`: its citations, whether a shown passage supports it, and the score."""
    warnings: list[str] = field(default_factory=list)
    """What verification removed or changed, in words."""
    disclaimer: str = ""
    triage: dict[str, Any] | None = None
    """{rule, notice, layer, score} when the question describes an emergency (the notice goes ahead of the
    answer)."""
    draft: str = ""
    """What the model generated, before verification (evaluation and logs; not sent to API clients)."""
    judge: str = ""
    """Which faithfulness judge verified the answer: faithfulness-judge (trained), lexical, or none."""
    retrieval_query: str = ""
    """What retrieval searched for: the question, or for a follow-up the standalone question built from the
    conversation (pipeline/followup.py)."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """Which calibration each verification threshold came from ({relevance: {threshold, source}, ...})."""
    id: str = field(default_factory=lambda: "ans-" + uuid.uuid4().hex[:20])
    """The answer's id, which feedback refers to (POST /v1/feedback)."""

    def to_dict(self) -> dict:
        """The answer as JSON-ready data: the API's AnswerResponse and `medcite ask --json` both print this."""
        return {"id": self.id, "answer": self.text, "answer_mode": self.answer_mode,
                "sentences": [{"text": v.text, "citations": v.citations, "supported": v.supported, "score": v.score}
                              for v in self.sentences],
                "citations": [c.to_dict() for c in self.citations],
                "passages": [h.to_dict(with_text=True) for h in self.passages],
                "warnings": self.warnings, "disclaimer": self.disclaimer, "triage": self.triage,
                "invalid_markers": self.invalid_markers, "usage": self.usage, "timings": self.timings,
                "stop_reason": self.stop_reason, "model": self.model, "index": self.index,
                "prompt_version": self.prompt_version, "judge": self.judge,
                "retrieval_query": self.retrieval_query or self.question, "calibration": self.calibration}


FINISH_REASONS: dict[str, str] = {"end_of_turn": "stop", "length": "length", "timeout": "length", "cancelled": "length"}
"""Generation.stop_reason -> the OpenAI `finish_reason` (the chat endpoint and the remote backend's inverse)."""


class Retriever(Protocol):
    """What the pipeline needs from retrieval. `retriever.search.IndexRetriever` is the real one."""

    fingerprint: str
    """Identifies the index (manifest fingerprint) in responses and evaluation reports."""

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid", source: str | None = None,
               per_record: bool = True) -> list[Hit]:
        """Top-k hits: k distinct records by their best passage, or (per_record=False) the top-k passages."""
        ...

    def resolve_record(self, record_id: str) -> str:
        """The id under which a record's text is indexed (exact duplicates were merged at build time)."""
        ...

    def passages_of(self, record_id: str) -> list[Passage]:
        """Every passage of a record, in text order."""
        ...

    def embed(self, texts: list[str]) -> Any:
        """L2-normalised vectors (a numpy array, one row per text) from the index's own embedder."""
        ...

    def knows(self, word: str) -> bool:
        """Whether a word occurs anywhere in the indexed corpus (its BM25 vocabulary, stemmed as indexed;
        stopwords count as known)."""
        ...


@dataclass
class Generation:
    """What a generator returns for one prompt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    stop_reason: Literal["end_of_turn", "length", "timeout", "cancelled"]
    """end_of_turn: the model finished; length: max_new_tokens reached; timeout: the caller's deadline passed;
    cancelled: the caller went away (a client that disconnected)."""
    prefill_ms: float | None = field(default=None, compare=False)
    """Time from the start of decoding to the first new token (the prompt's forward pass), where the backend
    can tell; decode speed is (completion_tokens - 1) / (generate time - prefill)."""


class Generator(Protocol):
    """What the pipeline needs from a language model. `generator.hf.HFGenerator` is the local one,
    `generator.remote.RemoteGenerator` a remote OpenAI-compatible server."""

    name: str
    context_window: int | None
    """Tokens the model attends to (prompt + answer); None when the backend cannot say (remote servers)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the model's tokenizer (an estimate where the tokenizer is not local)."""
        ...

    def health(self) -> None:
        """Raise UpstreamError when the model cannot answer now (a remote server down); /readyz calls it."""
        ...

    def generate(self, messages: list[dict[str, str]], **overrides) -> Generation: ...

    def stream(self, messages: list[dict[str, str]], **overrides) -> Iterator[str | Generation]: ...

    def option_logprobs(self, messages: list[dict[str, str]], options: list[str]) -> list[float]:
        """Log-likelihood of each option as the start of the answer. Backends that cannot score raise
        InvalidRequestError (the remote backend: chat completions expose no prompt log-probabilities)."""
        ...
