"""HTTP request/response DTOs (msgspec Structs). Requests reject unknown fields and out-of-range values, so bad
input is a 400 with a message before any handler code runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from core.types import MAX_QUESTION_CHARS, SearchMode

Mode = SearchMode
Question = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_QUESTION_CHARS)]
K = Annotated[int, msgspec.Meta(ge=1, le=20)]
NewTokens = Annotated[int, msgspec.Meta(ge=1, le=1024)]
Penalty = Annotated[float, msgspec.Meta(ge=1.0, le=2.0)]


class HistoryTurn(msgspec.Struct, forbid_unknown_fields=True):
    """An earlier turn of the conversation (oldest first): what the user asked or what the assistant answered."""

    role: Literal["user", "assistant"]
    content: Annotated[str, msgspec.Meta(max_length=20000)]


class AnswerRequest(msgspec.Struct, forbid_unknown_fields=True):
    question: Question
    history: Annotated[list[HistoryTurn], msgspec.Meta(max_length=64)] | None = None
    """Earlier turns, oldest first: a follow-up ("How is it treated?") is searched as a standalone question
    built from them, and the prompt keeps them within its token budget (oldest dropped first)."""
    k: K | None = None
    mode: Mode | None = None
    use_retrieval: bool = True
    max_new_tokens: NewTokens | None = None
    repetition_penalty: Penalty | None = None
    stream: bool = False


class RetrieveRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: Question
    k: K | None = None
    mode: Mode | None = None
    source: str | None = None
    per_record: bool = True
    """k distinct records, each by its best passage (default); false: the top-k passages themselves."""


class PassageOut(msgspec.Struct):
    passage_id: str
    record_id: str
    title: str
    source: str
    url: str
    score: float
    text: str


class CitationOut(PassageOut):
    """A cited passage: a PassageOut plus the [n] marker the answer used for it."""

    marker: int


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(msgspec.Struct):
    retrieve_ms: float
    generate_ms: float
    verify_ms: float
    total_ms: float
    prefill_ms: float | None = None
    """Prompt forward pass (time to the first new token), where the generator reports it."""


AnswerMode = Literal["generated", "extractive", "no_answer", "unsourced", "unverified"]


class SentenceOut(msgspec.Struct):
    """One sentence of the verified answer."""

    text: str
    citations: list[int]
    """Markers of the shown passages that support the sentence (see `passages`)."""
    supported: bool
    score: float
    """Support score of the best passage, in [0, 1]."""


class TriageOut(msgspec.Struct):
    """An urgent-care notice: the question describes a possible emergency. Show it before the answer."""

    rule: str
    """The reviewed rule that fired, or the emergency kind the learned layer recognised."""
    notice: str
    layer: Literal["rule", "classifier"] = "rule"
    """Which layer fired: a reviewed rule, or the learned classifier (its score passed its threshold)."""
    score: float | None = None
    """The learned layer's emergency probability (null when a rule fired first)."""


class AnswerResponse(msgspec.Struct):
    id: str
    """The answer's id: what POST /v1/feedback refers to."""
    answer: str
    """The verified answer: only sentences a shown passage supports, each cited with its marker."""
    answer_mode: AnswerMode
    """generated: the model's answer, verified; extractive: quoted passage sentences (too little of the model's
    answer was supported); no_answer: the indexed sources do not answer the question (closest passages in
    `passages`); unsourced: answered without retrieval, nothing checked; unverified: verification is off."""
    sentences: list[SentenceOut]
    citations: list[CitationOut]
    passages: list[PassageOut]
    warnings: list[str]
    """What verification removed or changed (invented terms, unsupported sentences, copied headers, ...)."""
    disclaimer: str
    triage: TriageOut | None
    invalid_markers: list[int]
    usage: Usage
    timings: Timings
    stop_reason: str
    model: str
    index: str | None
    prompt_version: str
    judge: str = ""
    """Which faithfulness judge verified the answer: faithfulness-judge (trained, `make demo`), lexical (content
    words + embedder cosine), or none (not verified)."""
    retrieval_query: str = ""
    """What retrieval searched for: the question, or for a follow-up the standalone question built from
    `history`."""
    calibration: dict[str, Any] = {}
    """Which calibration each verification threshold came from: {relevance: {threshold, source: index <fp> |
    config | default}, faithfulness or support, answerhood}."""


class VerifyPassage(msgspec.Struct, forbid_unknown_fields=True):
    """A source to check against; its marker is its position in `passages`, from 1."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]
    id: str = ""
    title: str = ""


class VerifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Any generator's text (a remote vLLM, a clinician's draft) checked against sources by the pipeline's own
    verification stage (faithfulness judge + term guard)."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]
    passages: Annotated[list[VerifyPassage], msgspec.Meta(min_length=1, max_length=20)]
    question: Annotated[str, msgspec.Meta(max_length=MAX_QUESTION_CHARS)] | None = None


class VerifiedSentence(msgspec.Struct):
    text: str
    """The sentence, its markers replaced by those of the passages that support it."""
    supported: bool
    score: float
    """The judge's score for the best passage."""
    citations: list[int]
    """Markers (positions in `passages`, from 1) of the passages that support it."""
    reason: str
    """Why it is not supported or not an answer sentence ("" when supported): unsupported, an invented term, a
    copied header, a fragment, a restatement of the question."""


class VerifyResponse(msgspec.Struct):
    sentences: list[VerifiedSentence]
    judge: str
    """faithfulness-judge (trained) or lexical."""
    threshold: float
    """The score a sentence must reach to be supported, under that judge."""


class RetrieveResponse(msgspec.Struct):
    hits: list[PassageOut]
    index: str
    timings: dict[str, float]


class ErrorResponse(msgspec.Struct):
    error: str
    detail: str


# --- OpenAI-compatible chat completions ---------------------------------------------------------------------

class ContentPart(msgspec.Struct):
    type: str
    text: str = ""


class ChatMessage(msgspec.Struct):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class ChatRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The OpenAI fields a client may send, plus medcite's extensions (k, mode, use_retrieval,
    repetition_penalty). Decoding is always greedy: temperature/top_p/seed are accepted and ignored."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=64)]
    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: NewTokens | None = None
    max_completion_tokens: NewTokens | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: Penalty | None = None
    k: K | None = None
    mode: Mode | None = None
    use_retrieval: bool = True


class ChatChoiceMessage(msgspec.Struct):
    role: str
    content: str


class ChatChoice(msgspec.Struct):
    index: int
    message: ChatChoiceMessage
    finish_reason: str


class ChatResponse(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[CitationOut]
    answer_id: str = ""
    """medcite's answer id (what POST /v1/feedback refers to)."""
    retrieval_query: str | None = None
    """What retrieval searched for (the standalone question of a follow-up)."""


class FeedbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A person's rating of one answer, by the `id` the answer carried."""

    answer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    rating: Literal["up", "down"]
    comment: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    sentence: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    """Which sentence of the answer (from 1) the feedback is about, if one."""


class FeedbackResponse(msgspec.Struct):
    id: int
    answer_id: str
    stored: bool
    comment_kept: bool = False
    """Whether the written comment was kept: only on a server that keeps text (`log_text`); the rating always is."""


class ModelCard(msgspec.Struct):
    """An OpenAI model object plus medcite's own fields."""

    id: str
    object: str
    created: int
    owned_by: str
    index: str | None = None
    """Fingerprint of the index answers are retrieved from."""
    judge: dict[str, str] | None = None
    triage: str = "rules"
    """The triage layers in force: rules, or the learned layer's directory after them."""
    prompt_version: str = ""
    medcite_version: str = ""


class ModelList(msgspec.Struct):
    object: str
    data: list[ModelCard]
