"""The two rulers (evaluation.rulers) and the conditional question-type prior they chose."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.types import Passage  # noqa: E402


def _write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_rulers_read_both_sets_and_keep_the_messages_apart(tmp_path):
    from evaluation.rulers import consumer_questions, rulers

    (tmp_path / "splits").mkdir()
    (tmp_path / "consumer").mkdir()
    _write(tmp_path / "splits" / "medquad_dev.jsonl",
           [{"id": "dev-1", "question": "What causes gout ?", "gold_medquad_id": "1:a:2"}])
    _write(tmp_path / "consumer" / "mediqa2019_dev.questions.jsonl",
           [{"id": "alexa-1", "question": "What is gout?"}, {"id": "alexa-2", "question": "What is flu?"},
            {"id": "validation-3", "question": "gout. my toe hurts at night, what helps"}])
    _write(tmp_path / "consumer" / "mediqa2019_dev.qrels.jsonl",
           [{"id": "alexa-1", "relevant": ["1:a:1"]}, {"id": "validation-3", "relevant": ["1:a:3", "wikidoc:7"]}])
    sets = rulers(str(tmp_path))
    assert sets["medquad_dev"] == [{"id": "dev-1", "question": "What causes gout ?", "relevant": ["1:a:2"]}]
    assert [r["id"] for r in sets["consumer"]] == ["alexa-1", "validation-3"]  # the linked ones
    assert [r["id"] for r in sets["consumer_messages"]] == ["validation-3"]
    assert len(consumer_questions(str(tmp_path))) == 3  # all of them, for the answer review
    assert consumer_questions(str(tmp_path / "nowhere")) == []


def test_recall_summary_counts_ranks_and_says_its_noise():
    from evaluation.rulers import recall_summary

    s = recall_summary([1, 4, None, 7])
    assert s["n"] == 4 and s["recall@1"] == 0.25 and s["recall@5"] == 0.5 and s["recall@10"] == 0.75
    assert s["mrr@10"] == round((1 + 1 / 4 + 1 / 7) / 4, 4)
    lo, hi = s["recall@5_ci95"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0  # four questions pin down little


def test_first_relevant_rank_resolves_merged_duplicates(tiny_index):
    from evaluation.rulers import first_relevant_rank, retrieval_table
    from retriever.search import IndexRetriever

    r = IndexRetriever.load(tiny_index)
    hit = r.search("treatment", k=1)[0]
    row = {"id": "x", "question": "treatment", "relevant": [hit.passage.record_id]}
    assert first_relevant_rank(r, row) == 1
    assert first_relevant_rank(r, {**row, "relevant": ["no:such:record"]}) is None
    summary, ranks = retrieval_table(r, [row, {**row, "relevant": []}])
    assert ranks == [1, None] and summary["recall@1"] == 0.5


def _passages(*titles: str) -> list[Passage]:
    return [Passage(f"{i}#0", str(i), t, "x", "s") for i, t in enumerate(titles)]


def _focus(text: str) -> set[str]:
    return {w for w in text.lower().replace("?", " ").split() if len(w) > 2 and w not in {"what", "the", "are"}}


def test_the_prior_lifts_only_records_about_what_the_question_names():
    """Unconditional, the prior lifted other diseases' records of the asked type over the right record ("What
    causes Gonorrhea?" -> "Proctitis: causes"); conditional, only records whose subject the question names."""
    from retriever.search import fuse_question_type

    passages = _passages("Gonorrhea: overview", "Proctitis: causes", "Gout: causes", "Gonorrhea: causes")
    ranked = [(0, 0.04), (1, 0.03), (2, 0.02), (3, 0.01)]
    q = "What causes Gonorrhea?"
    old = [i for i, _ in fuse_question_type(q, ranked, passages, 60)]  # the unconditional prior
    assert old.index(1) < old.index(0) and old.index(2) < old.index(0)  # other diseases over the right record
    conditional = [i for i, _ in fuse_question_type(q, ranked, passages, 60, _focus)]
    assert conditional[:2] == [0, 3] or conditional[:2] == [3, 0]
    assert conditional.index(1) > conditional.index(3)  # Proctitis is not lifted
    # nothing names a subject once the type words are out: unchanged
    assert fuse_question_type("What are the causes?", ranked, passages, 60, _focus) == ranked


def test_the_prior_does_not_lift_look_alikes_that_share_one_word_of_the_name():
    """A record is lifted when most of its title's name is in the question: one shared word lifted "Ectopic Kidney:
    symptoms" for ectopic pregnancy and rare subtypes ("Juvenile myoclonic epilepsy: causes") for epilepsy, and
    "non" tells non-small cell lung cancer from small cell lung cancer."""
    from retriever import search

    passages = _passages("Ectopic Pregnancy: overview", "Ectopic Kidney: symptoms", "Juvenile myoclonic epilepsy: "
                         "symptoms", "Ectopic Pregnancy: symptoms", "Non-Small Cell Lung Cancer: symptoms",
                         "Small Cell Lung Cancer: symptoms")
    ranked = [(0, 0.06), (1, 0.05), (2, 0.04), (3, 0.03), (4, 0.02), (5, 0.01)]

    def lifted(q: str) -> set[int]:
        fused = [i for i, _ in search.fuse_question_type(q, ranked, passages, 60,
                                                         lambda t: _focus(t.replace("-", " ")))]
        return {i for i in fused if fused.index(i) < [i for i, _ in ranked].index(i)}

    assert lifted("What are the symptoms of Ectopic Pregnancy?") == {3}
    assert lifted("What are the symptoms of juvenile myoclonic epilepsy?") == {2}
    assert lifted("What are the symptoms of epilepsy?") == set()  # a subtype is not the condition asked
    assert lifted("What are the symptoms of small cell lung cancer?") == {5}
    assert lifted("What are the symptoms of non small cell lung cancer?") == {4}
    search.QTYPE_NAMED_SHARE = False  # the condition before: one shared word
    try:
        assert 1 in lifted("What are the symptoms of Ectopic Pregnancy?")
    finally:
        search.QTYPE_NAMED_SHARE = True


def test_focus_terms_skip_words_every_disease_name_shares(tiny_index):
    from retriever.search import IndexRetriever

    r = IndexRetriever.load(tiny_index)
    assert r.focus_terms("Parkinson's Disease") == r.focus_terms("parkinson")
    assert not r.focus_terms("Chronic kidney disease") & r.focus_terms("Chronic heart disease") - {
        r._stemmer.stemWord("kidney"), r._stemmer.stemWord("heart")}
    assert r.focus_terms("Lung Cancer") & r.focus_terms("cancer of the lung")
    assert not r.focus_terms("Breast Cancer") & r.focus_terms("Lung Cancer")


def test_a_blind_review_round_scores_mixed_in_earlier_answers_apart(tmp_path, monkeypatch):
    from benchmarks import review_answers as ra

    monkeypatch.setattr(ra, "REVIEW", tmp_path)

    def answers(path, text):
        path.write_text("".join(json.dumps({"arm": "lexical", "id": f"alexa-{i}", "question": f"q{i}",
                                            "answer": f"{text}{i}", "mode": "extractive", "cites_relevant": True})
                                + "\n" for i in range(4)))

    answers(tmp_path / "old.jsonl", "old")
    answers(tmp_path / "new.jsonl", "new")
    ra.prepare(tmp_path / "new.jsonl", "lexical")  # round 1 stands in for the earlier review
    (tmp_path / "key-r1.jsonl").write_text((tmp_path / "key.jsonl").read_text())
    (tmp_path / "verdicts-r1.jsonl").write_text("".join(json.dumps({"rid": k["rid"], "verdict": "partial"}) + "\n"
                                                       for k in map(json.loads, (tmp_path / "key.jsonl").open())))
    ra.prepare(tmp_path / "new.jsonl", "lexical", tmp_path / "old.jsonl", tmp_path / "verdicts-r1.jsonl", mix_n=2)
    blind = [json.loads(x) for x in (tmp_path / "blind.jsonl").open()]
    key = {k["rid"]: k for k in map(json.loads, (tmp_path / "key.jsonl").open())}
    assert len(blind) == 6 and all(set(b) == {"rid", "question", "answer"} for b in blind)  # nothing marks them
    assert sum("mixed_in" in k for k in key.values()) == 2
    (tmp_path / "v.jsonl").write_text("".join(json.dumps({"rid": b["rid"], "verdict": "partial" if "mixed_in" in
                                                           key[b["rid"]] else "answers"}) + "\n" for b in blind))
    out = ra.score(tmp_path / "v.jsonl", "test", tmp_path / "review.json")
    assert out["all"]["answers"]["n"] == 4 and out["all"]["answers"]["share"] == 1.0  # the mixed-in ones apart
    assert out["consistency"]["mixed_in"] == 2 and out["consistency"]["same_verdict"] == 2


def test_two_arms_are_reviewed_together_blind_and_scored_apart_and_paired(tmp_path, monkeypatch):
    """The trained judges' answers against the lexical judge's on the same questions, in one blind round: an
    answer both arms gave word for word is shown once and counts for both."""
    from benchmarks import review_answers as ra

    monkeypatch.setattr(ra, "REVIEW", tmp_path)
    rows = [{"arm": arm, "id": f"alexa-{i}", "question": f"q{i}", "mode": "extractive", "cites_relevant": None,
             "answer": "same quote" if i < 2 else f"{arm} answer {i}"} for i in range(5) for arm in ("judges", "lexical")]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ra.prepare(tmp_path / "a.jsonl", "judges,lexical")
    blind = [json.loads(x) for x in (tmp_path / "blind.jsonl").open()]
    key = {k["rid"]: k for k in map(json.loads, (tmp_path / "key.jsonl").open())}
    assert len(blind) == 2 + 3 * 2 and all(set(b) == {"rid", "question", "answer"} for b in blind)
    verdict = {b["rid"]: "answers" if b["answer"].startswith(("judges", "same")) else "no" for b in blind}
    (tmp_path / "v.jsonl").write_text("".join(json.dumps({"rid": r, "verdict": v}) + "\n" for r, v in verdict.items()))
    out = ra.score(tmp_path / "v.jsonl", "test", tmp_path / "review.json")
    assert out["by_arm"]["judges"]["all"]["answers"]["k"] == 5 and out["by_arm"]["lexical"]["all"]["answers"]["k"] == 2
    assert out["paired"]["questions"] == 5 and out["paired"]["answers"]["b"] == 3 and out["paired"]["answers"]["c"] == 0
    assert sorted(len(k["arms"]) for k in key.values()) == [1] * 6 + [2, 2]


def test_the_ways_people_ask_for_a_treatment_ask_for_one():
    from retriever.search import question_types

    for q in ("How do I get rid of these little devils?", "How to Stop Snoring", "how to remove my mouth ulcer",
              "What are the treatments for gout?", "how can I relieve the itching"):
        assert "treatment" in question_types(q), q
    for q in ("when does the pain stop", "What is gout?", "Can older infants get jaundice?"):
        assert "treatment" not in question_types(q), q
