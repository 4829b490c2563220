"""The `Pipeline` (pipeline/answer.py): one object over (retriever, generator, judges, config) whose `stream()` yields
the triage result first, then the draft, then the verified answer, and whose `answer()` is that stream collected;
triage runs once per question and the question is split into its parts once."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

import pipeline.answer as answer_module  # noqa: E402
import pipeline.verify.stage as stage  # noqa: E402
from core.types import Answer  # noqa: E402
from pipeline.answer import Pipeline, Triaged  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.verify.config import VerifyConfig  # noqa: E402
from tests.fakes import FakeGenerator, FakeRetriever  # noqa: E402

GOUT = [("Gout", "Gout is caused by uric acid crystals in a joint. Gout flares are treated with colchicine or NSAIDs."),
        ("Gout treatment", "Gout is treated with colchicine, NSAIDs or steroids; allopurinol lowers uric acid."),
        ("Chest pain", "Chest pain with sweating can be a heart attack. Call emergency services.")]
DRAFT = "Gout is caused by uric acid crystals [1]. Gout flares are treated with colchicine or NSAIDs [1]."


def _pipeline(draft: str = DRAFT) -> Pipeline:
    return Pipeline(FakeRetriever(docs=GOUT), FakeGenerator(draft), None,
                    PipelineConfig(k=3, verify=VerifyConfig(min_relevance=0.1)))


def _counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_stream_yields_triage_first_then_the_draft_then_the_verified_answer():
    items = list(_pipeline().stream("I have crushing chest pain and sweating right now. What causes gout?"))
    first, *pieces, final = items
    assert isinstance(first, Triaged) and first.triage is not None and first.triage.notice
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == DRAFT
    assert isinstance(final, Answer) and final.draft == DRAFT
    assert final.triage == first.triage.to_dict()  # the answer carries the same triage result the stream opened with


def test_answer_is_the_stream_collected():
    question = "What causes gout and how is it treated?"
    streamed = [e for e in _pipeline().stream(question) if isinstance(e, Answer)][-1]
    answered = _pipeline().answer(question)
    assert answered.text == streamed.text and answered.answer_mode == streamed.answer_mode
    assert [c.marker for c in answered.citations] == [c.marker for c in streamed.citations]
    assert answered.warnings == streamed.warnings and answered.sentences == streamed.sentences


def test_triage_runs_once_per_question(monkeypatch):
    calls = _counting(monkeypatch, answer_module, "triage")
    p = _pipeline()
    a = p.answer("crushing chest pain and sweating right now")
    assert a.triage is not None and calls == ["crushing chest pain and sweating right now"]
    calls.clear()
    list(p.stream("What causes gout?"))
    assert len(calls) == 1


def test_the_question_is_split_into_parts_once(monkeypatch):
    in_answer = _counting(monkeypatch, answer_module, "sub_questions")
    in_verify = _counting(monkeypatch, stage, "sub_questions")
    retriever = FakeRetriever(docs=GOUT)
    p = Pipeline(retriever, FakeGenerator(DRAFT), None, PipelineConfig(k=3, verify=VerifyConfig(min_relevance=0.1)))
    p.answer("What causes gout? Also, how is it treated?")
    assert len(in_answer) + len(in_verify) == 1
    assert len(retriever.calls) == 2  # ... and each part was searched


def test_bad_questions_fail_before_any_work():
    g = FakeGenerator(DRAFT)
    p = Pipeline(FakeRetriever(docs=GOUT), g)
    for bad in ("", "  ", "x" * 2001):
        with pytest.raises(Exception, match="question"):
            next(iter(p.stream(bad)))
    assert g.seen == []


def test_a_request_without_retrieval_is_the_no_retrieval_baseline():
    retriever = FakeRetriever(docs=GOUT)
    a = Pipeline(retriever, FakeGenerator("Gout is treated with colchicine.")).answer("How is gout treated?",
                                                                                       use_retrieval=False)
    assert retriever.calls == [] and a.passages == [] and a.answer_mode == "unsourced" and a.mode is None


def test_a_consumer_message_is_searched_by_its_subject_line_and_what_it_asks():
    """pipeline.reading: the story's words stay out of the search, the whole message goes to the model."""
    from pipeline.answer import Pipeline
    from pipeline.reading import search_text
    from tests.fakes import FakeGenerator, FakeRetriever

    message = ("Jaundice. My grandson is five months old and he was perfectly fine until last week when his eyes "
               "went yellow. Can older infants get jaundice?")
    assert search_text(message) == "Jaundice. Can older infants get jaundice?"
    story = ("achalasia. after surgery for achalasia last spring my doctor said the spasms in the upper chest "
             "area might continue and i want something that ends them for good because they wake me at night "
             "and my wife too")
    assert search_text(story).startswith("achalasia. after surgery") and len(search_text(story).split()) == 31
    for as_written in ("What is (are) Gout ?", "How is gout treated?", "gout. what helps the pain?",
                       "My doctor said I have a condition where my long story has no short subject line at all. "
                       "What should I do about it now?"):
        assert search_text(as_written) == as_written
    retriever = FakeRetriever(docs=[("Jaundice", "Jaundice is yellowing of the skin.")])
    pipeline = Pipeline(retriever, FakeGenerator("Jaundice is yellowing of the skin [1]."), None)
    prepared = pipeline.prepare(message)
    assert [q for q, _, _ in retriever.calls] == ["Jaundice. Can older infants get jaundice?"]
    assert prepared.query == message and message in prepared.messages[-1]["content"]
