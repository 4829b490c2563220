"""The verification stage's trained judges: the perturbation families, the training rows, a tiny judge trained in
code end to end, and the pipeline behaviour they drive (support by meaning, answerhood, no_answer, quotes that
name their subject, lists quoted as lists, /v1/verify, `medcite verify`)."""

import dataclasses
import json
import random

import pytest

from core.errors import ConfigError
from core.types import Hit, Passage
from generator.prompt import PromptPassage
from pipeline.verify.config import VerifyConfig
from pipeline.verify.judges import CrossEncoderJudge, Judges, load_judges
from pipeline.verify.quotable import candidates
from pipeline.verify.stage import extractive, verify
from service.config import ServeConfig
from tests.conftest import FIXTURE_CORPORA
from tests.fakes import FakeGenerator, FakeRetriever
from train import perturb
from train.config import JudgeTrainConfig

GOUT = [("Gout: treatment", "Gout is treated with colchicine and anti-inflammatory drugs. Most people recover "
                            "within a few days."),
        ("Gout: research", "Researchers are studying new drugs for gout. Some trials test diet changes.")]


def test_alterations_change_meaning_and_paraphrases_keep_words():
    rng = random.Random(0)
    s = "Gout usually affects men over 40 and can be treated."
    assert "not" in perturb.negation("Gout can be treated.", rng) or "cannot" in perturb.negation(
        "Gout can be treated.", rng)
    assert perturb.negation("Gout does not spread.", rng) == "Gout does spread."
    assert perturb.number(s, rng) != s and "40" not in perturb.number(s, random.Random(1))
    assert "rarely" in perturb.quantifier(s, rng)
    assert "women" in perturb.condition("Gout affects men.", rng)
    assert perturb.direction("Uric acid levels increase.", rng) == "Uric acid levels decrease."
    assert perturb.number("No numbers here at all.", rng) is None  # a family that does not apply says so
    swapped = perturb.swap_term("It damages the kidneys.", rng, [], {"damages", "kidneys"})
    assert swapped and "kidneys" not in swapped
    para = perturb.paraphrase("It may cause pain (often severe).", random.Random(3), focus="Gout")
    assert "gout" in para.lower() and not para.startswith("It") and "pain" in para


def test_flips_only_where_the_word_means_what_is_flipped():
    rng = random.Random(0)
    # a pair already in the sentence, offspring not age, a noun "cause", a pointer, "how often": no claim to alter
    assert perturb.condition("Gout affects men and women.", rng) is None
    assert perturb.condition("A parent can pass it to his or her children.", rng) is None
    assert perturb.condition("Ask about trials that may be right for you.", rng) is None
    assert perturb.direction("The cause of most brain tumors is not known.", rng) is None
    assert perturb.direction("For more information on treatment, click here.", rng) is None
    assert perturb.quantifier("The table says how often the symptom is seen.", rng) is None
    assert perturb.quantifier("They have no symptoms.", rng) is None  # "every symptoms" is not a sentence
    # and where it does, the result reads as a sentence
    assert perturb.condition("Pain in the left arm is common.", rng) == "Pain in the right arm is common."
    assert perturb.direction("They have an increased risk.", rng) == "They have a decreased risk."
    assert perturb.direction("Smoking causes lung cancer.", rng) == "Smoking prevents lung cancer."
    assert perturb.quantifier("It is the most common cause of goiter.", rng) == "It is the least common cause of goiter."
    assert perturb.quantifier("Most people recover.", rng) == "Few people recover."
    assert perturb.condition("It is inherited in an X-linked pattern.", rng) == "It is inherited in a Y-linked pattern."


class ScriptedJudge:
    """A judge model whose score is 0 for a (text, sentence) pair when the sentence holds a word from `bad`."""

    def __init__(self, bad=("not",), threshold=0.5, gate=0.5, good=()):
        self.bad, self.good, self.calibration = bad, good, {"threshold": threshold, "gate": {"threshold": gate}}
        self.threshold, self.gate, self.path, self.seen = threshold, gate, "scripted", []

    def score(self, pairs):
        self.seen += pairs
        out = []
        for _, b in pairs:
            words = set(b.lower().replace(".", " ").replace("\n", " ").split())
            out.append(0.1 if words & set(self.bad) else 0.9 if not self.good or words & set(self.good) else 0.2)
        return out

    def describe(self):
        return {"path": self.path, "threshold": self.threshold}


def _shown(docs):
    return [PromptPassage(i, Hit(Passage(f"r{i}:1#0", f"r{i}:1", t, x, "fake"), 1.0, i), x)
            for i, (t, x) in enumerate(docs, start=1)]


def test_trained_judge_removes_a_negated_sentence_the_lexical_judge_keeps():
    r = FakeRetriever(docs=GOUT)
    draft = "Gout is treated with colchicine [1]. Gout is not treated with colchicine [1]."
    lexical = verify("How is gout treated?", draft, _shown(GOUT), r,
                     VerifyConfig(min_relevance=0.0, generated_with_lexical_judge=True))
    assert lexical.judge == "lexical" and len(lexical.sentences) == 2  # shares every word: kept (why, by
    # default, the lexical judge alone serves quotes)
    judges = Judges(faithfulness=ScriptedJudge())
    v = verify("How is gout treated?", draft, _shown(GOUT), r,
               VerifyConfig(min_relevance=0.0, generated_with_trained_judge=True), judges)
    assert v.judge == "faithfulness-judge"
    assert [s.text for s in v.sentences] == ["Gout is treated with colchicine [1]."]
    assert any("no shown passage supports" in w for w in v.warnings)
    assert judges.faithfulness.seen[0][0].startswith("Gout: treatment\n")  # the judge reads the title too


def test_with_the_trained_judges_answers_quote_the_passages_unless_the_operator_asks_for_generated_ones():
    """The served default: the model's checked sentences gave consumers what they asked less often than quotes
    (verify.generated_with_trained_judge), so the trained judges choose and gate quotes."""
    r, judges = FakeRetriever(docs=GOUT), Judges(faithfulness=ScriptedJudge(bad=()))
    draft = "Gout is treated with colchicine [1]."
    v = verify("How is gout treated?", draft, _shown(GOUT), r, VerifyConfig(min_relevance=0.0), judges)
    assert v.mode == "extractive" and v.judge == "faithfulness-judge"
    assert any("generated_with_trained_judge is off" in w for w in v.warnings)
    v = verify("How is gout treated?", draft, _shown(GOUT), r,
               VerifyConfig(min_relevance=0.0, generated_with_trained_judge=True), judges)
    assert v.mode == "generated" and v.text == draft
    # the quotes are chosen by the embedder's cosine, as without trained judges, unless the operator asks for the
    # answerhood scorer's choice (measured worse on consumer questions)
    judges = Judges(faithfulness=ScriptedJudge(bad=()), answerhood=ScriptedJudge(bad=(), good=("researchers",)))
    cfg = VerifyConfig(min_relevance=0.0, extractive_sentences=1, section_prior=0.0, subject_prior=0.0)
    plain = verify("How is gout treated?", draft, _shown(GOUT), r, cfg, None)
    assert verify("How is gout treated?", draft, _shown(GOUT), r, cfg, judges).text == plain.text
    by_scorer = verify("How is gout treated?", draft, _shown(GOUT), r,
                       dataclasses.replace(cfg, quotes_by_answerhood=True), judges)
    assert "Researchers" in by_scorer.text and "Researchers" not in plain.text


def test_a_sentence_sourced_only_from_a_look_alike_condition_is_not_an_answer():
    """Supported by its passage, but that passage is about another condition than the one asked, while a shown
    passage is about the one asked: removed (the answer falls back to quoting the asked condition's passage)."""
    docs = [("Adult Non-Hodgkin Lymphoma: symptoms", "Signs of adult non-Hodgkin lymphoma include swollen lymph nodes."),
            ("Adult Hodgkin Lymphoma: symptoms", "Signs of adult Hodgkin lymphoma include fever and night sweats.")]
    r, judges = FakeRetriever(docs=docs), Judges(faithfulness=ScriptedJudge(bad=()))
    question = "What are the symptoms of Adult Non-Hodgkin Lymphoma?"
    draft = "Symptoms include fever and night sweats [2]. Symptoms include swollen lymph nodes [1]."
    cfg = VerifyConfig(min_relevance=0.0, min_kept_share=0.3, generated_with_trained_judge=True)
    v = verify(question, draft, _shown(docs), r, cfg, judges)
    assert "[2]" not in v.text and "swollen lymph nodes [1]" in v.text
    assert any("about another condition than the one asked" in w for w in v.warnings)
    # a question that names no shown passage's subject keeps the sentence its source supports
    v = verify("what are the signs of lymphoma?", draft, _shown(docs), r, cfg, judges)
    assert "night sweats [2]" in v.text and not any("another condition" in w for w in v.warnings)


def test_answerhood_orders_removes_non_answers_and_gates_no_answer():
    r = FakeRetriever(docs=GOUT)
    cfg = VerifyConfig(min_relevance=0.0, min_kept_share=0.3, generated_with_trained_judge=True, answerhood_gate=True)
    draft = "Researchers are studying new drugs for gout [2]. Gout is treated with colchicine [1]."
    judges = Judges(faithfulness=ScriptedJudge(bad=()), answerhood=ScriptedJudge(bad=("researchers",)))
    v = verify("How is gout treated?", draft, _shown(GOUT), r, cfg, judges)
    assert v.text == "Gout is treated with colchicine [1]."
    assert any("does not answer the question" in w for w in v.warnings)
    nothing = Judges(faithfulness=ScriptedJudge(bad=()), answerhood=ScriptedJudge(gate=0.95))
    v = verify("What causes gout?", draft, _shown(GOUT), r, cfg, nothing)
    assert v.mode == "no_answer" and "no sentence of the shown passages answers" in v.warnings[-1]
    # served default: the gate is off (calibrated on templates, it refused consumer questions the corpus answers);
    # the relevance gate alone refuses
    v = verify("What causes gout?", draft, _shown(GOUT), r, VerifyConfig(min_relevance=0.0), nothing)
    assert v.mode == "extractive"
    # the record filed under the question asked ("Gout: treatment") answers it whatever the scorer says
    v = verify("How is gout treated?", draft, _shown(GOUT), r, cfg, nothing)
    assert v.mode == "extractive" and {c for s in v.sentences for c in s.citations} == {1}


def test_quotes_name_their_subject_and_lists_stay_lists():
    docs = [("Pseudogout: treatment", "Pseudogout is treated with anti-inflammatory drugs and rest."),
            ("Gout: symptoms", "The following signs are common:\n- Joint pain\n- Redness\n- Swelling")]
    shown = _shown(docs)
    units = candidates("What are the symptoms of gout?", shown)
    assert (2, "The following signs are common: Joint pain; Redness; Swelling.") in units
    embed = lambda texts: FakeRetriever().embed(texts)  # noqa: E731
    answerhood = Judges(answerhood=ScriptedJudge(bad=(), good=("swelling",)))
    quoted = extractive("What are the symptoms of gout?", shown, embed, 2, answerhood)
    assert quoted[0].text == '"The following signs are common: Joint pain; Redness; Swelling." [2]'  # best first
    assert len(quoted) == 1  # beside the asked condition's own passage, another condition's sentences are noise
    other = extractive("What are the symptoms of gout?", shown[:1], embed, 2, answerhood)
    assert other[0].text.startswith("About Pseudogout: ")  # alone, another condition's passage is named as such


def test_the_section_prior_puts_the_asked_sections_quote_first():
    docs = [("Gout: symptoms", "Gout flares are treated quickly because the joint pain is severe and sudden."),
            ("Gout: treatment", "Doctors prescribe colchicine or anti-inflammatory drugs for gout flares.")]
    shown = _shown(docs)
    embed = lambda texts: FakeRetriever().embed(texts)  # noqa: E731
    # the scorer prefers the symptoms sentence (it says "treated"); the question asks for treatment
    scorer = Judges(answerhood=ScriptedJudge(bad=(), good=("treated",)))
    question = "How is gout treated?"
    assert extractive(question, shown, embed, 1, scorer)[0].citations == [1]
    assert extractive(question, shown, embed, 1, scorer, section_prior=0.8)[0].citations == [2]
    # the floor reads the scorer's own score (the prior orders, it lets no non-answer through), except for the
    # record filed under exactly this question (the condition named, the section asked): it answers by construction
    assert [q.citations for q in extractive(question, shown, embed, 2, scorer, floor=0.5, section_prior=0.8)] == [
        [2], [1]]
    assert [q.citations for q in extractive("What causes gout?", shown, embed, 2, scorer, floor=0.5)] == [[1]]
    # the condition the question names, its most specific form, before a similar or more general one
    docs = [("Myopathy: treatment", "Treatments for the myopathies depend on the disease and its causes."),
            ("Salih myopathy: treatment", "Physical therapy and heart monitoring are part of the care.")]
    scorer = Judges(answerhood=ScriptedJudge(bad=(), good=("treatments",)))
    question = "what are the treatments for Salih myopathy?"
    assert extractive(question, _shown(docs), embed, 1, scorer)[0].citations == [1]
    assert extractive(question, _shown(docs), embed, 1, scorer, subject_prior=0.8)[0].citations == [2]
    with pytest.raises(ConfigError, match="section_prior"):
        VerifyConfig(section_prior=2.0)
    with pytest.raises(ConfigError, match="judge_precision"):
        VerifyConfig(judge_precision="fp16")


def _reserved_data(fixture_data, tmp_path):
    reserved = tmp_path / "reserved.txt"
    reserved.write_text("1:0000002_1\n")  # the aspirin document: never in the judges' rows
    return JudgeTrainConfig(data_dir=str(fixture_data), reserved=str(reserved),
                            sources=tuple(s for s in FIXTURE_CORPORA if not s.startswith("jsonl")),
                            faithfulness_passages=8, answerhood_questions=8, validation_items=4, batch_size=4,
                            eval_steps=2, out=str(tmp_path / "judges"), threads=1)


def test_rows_never_use_reserved_documents_and_hold_both_labels(fixture_data, tmp_path):
    from train import judge_data as D
    from train import judges as J

    cfg = _reserved_data(fixture_data, tmp_path)
    records = D.read_records(cfg)
    assert records and not any(r.meta.get("document") == "1:0000002_1" for r in records)
    rows = D.faithfulness_rows(records, D.passages(records, size=32, overlap=8), 20, 0)
    assert {r["label"] for r in rows} == {0.0, 1.0}
    assert not any("aspirin" in r["passage"].lower() for r in rows)
    arows = D.answerhood_rows(records, 20, 0)
    assert {r["family"] for r in arows} >= {"own", "other_section"}
    assert J.threshold_for([0.9, 0.8, 0.2, 0.7], [1, 1, 0, 0], 0.95)["threshold"] <= 0.8


@pytest.mark.slow
def test_tiny_judge_trains_publishes_with_calibration_and_serves(fixture_data, tmp_path, tiny_embedder,
                                                                 monkeypatch):
    from train import judge_data as D
    from train import judges as J

    cfg = _reserved_data(fixture_data, tmp_path)
    cfg = JudgeTrainConfig(**{**cfg.__dict__, "base": str(tiny_embedder)})
    monkeypatch.setattr(J, "build_rows", lambda c, judge, log: (
        D.faithfulness_rows(D.read_records(c), D.passages(D.read_records(c), 32, 8), 8, 0),) * 2
        if judge == "faithfulness" else (D.answerhood_rows(D.read_records(c), 8, 0),) * 2)
    for judge in J.JUDGES:
        out = J.train_judge(cfg, judge, log=lambda _: None)
        cal = json.loads((out / "calibration.json").read_text())
        assert 0 <= cal["threshold"] <= 1 and cal["positives_kept"] >= 0.95 and "by_family" in cal
    acal = json.loads((tmp_path / "judges" / "answerhood" / "calibration.json").read_text())
    assert "gate" in acal
    judges = load_judges(str(tmp_path / "judges"))
    assert isinstance(judges.faithfulness, CrossEncoderJudge) and judges.answerhood is not None
    # the no-answer gate is fp32's at every precision (a gate on int8's own scores refused consumers more)
    assert judges.answerhood.gate == load_judges(str(tmp_path / "judges"), "fp32").answerhood.gate == acal["gate"]["threshold"]
    pair = [("Gout: treatment\nColchicine treats gout.", "Colchicine treats gout.")]
    p = judges.faithfulness.score(pair)
    assert 0 <= p[0] <= 1
    # serving's default precision: Linear layers int8, scores close to fp32's, and the answer says which ran
    assert judges.faithfulness.precision == "int8" and judges.describe()["faithfulness"]["precision"] == "int8"
    assert any("quantized" in type(m).__module__ for m in judges.faithfulness.model.modules())
    fp32 = load_judges(str(tmp_path / "judges"), "fp32")
    assert not any("quantized" in type(m).__module__ for m in fp32.faithfulness.model.modules())
    assert fp32.faithfulness.score(pair)[0] == pytest.approx(p[0], abs=0.05)
    # each precision runs at the threshold calibrated for it on the same validation rows
    cal = json.loads((tmp_path / "judges" / "faithfulness" / "calibration.json").read_text())
    assert judges.faithfulness.threshold == cal["precisions"]["int8"]["threshold"]
    assert fp32.faithfulness.threshold == cal["threshold"]
    assert judges.describe()["faithfulness"]["positives_kept"] == cal["precisions"]["int8"]["positives_kept"] >= 0.95
    with pytest.raises(Exception, match="make models"):
        CrossEncoderJudge.load(tmp_path / "judges" / "faithfulness-run")  # not a published judge
    # the card says how it was trained; the run's checkpoints are gone once the judge is published
    from train.precision import native_bf16

    card = json.loads((tmp_path / "judges" / "faithfulness" / "training_run.json").read_text())
    assert card["train_precision"] == ("bf16 mixed" if native_bf16() else "fp32") and len(card["inputs_sha256"]) == 64
    assert card["train_loop_seconds"] is not None and not (tmp_path / "judges" / "faithfulness-run" / "checkpoints").exists()
    # a rerun with the same inputs does nothing (make demo runs it every time) and other settings are refused
    published = (tmp_path / "judges" / "faithfulness" / "model.safetensors").stat().st_mtime_ns
    logs: list[str] = []
    J.train_judge(cfg, "faithfulness", log=logs.append)
    assert any("up to date" in m for m in logs)
    assert (tmp_path / "judges" / "faithfulness" / "model.safetensors").stat().st_mtime_ns == published
    with pytest.raises(Exception, match="learning_rate"):
        J.train_judge(JudgeTrainConfig(**{**cfg.__dict__, "learning_rate": 1e-3}), "faithfulness", lambda _: None)


def test_verify_endpoint_checks_any_text_and_rejects_bad_input():
    from litestar.testing import TestClient

    from service.app import create_app

    judges = Judges(faithfulness=ScriptedJudge())
    with TestClient(base_url="http://localhost", app=create_app(FakeRetriever(docs=GOUT), FakeGenerator(), ServeConfig(), judges)) as c:
        body = {"text": "Gout is treated with colchicine. Gout is not treated with colchicine.",
                "passages": [{"id": "a", "title": "Gout: treatment", "text": GOUT[0][1]}],
                "question": "How is gout treated?"}
        r = c.post("/v1/verify", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["judge"] == "faithfulness-judge" and out["threshold"] == 0.5
        assert [s["supported"] for s in out["sentences"]] == [True, False]
        assert out["sentences"][0]["citations"] == [1] and out["sentences"][1]["reason"]
        for bad in ({"text": "x", "passages": []}, {"passages": [{"text": "y"}]},
                    {"text": "x", "passages": [{"text": "y"}], "extra": 1}):
            r = c.post("/v1/verify", json=bad)
            assert r.status_code == 400 and r.json()["detail"], bad
        ready = c.get("/readyz").json()
        assert ready["judge"]["faithfulness"]["path"] == "scripted"
        a = c.post("/v1/answer", json={"question": "How is gout treated?"}).json()
        assert a["judge"] == "faithfulness-judge"


def test_cli_verify_batch_and_its_errors(capsys, tmp_path, tiny_index):
    from medcite.cli import main

    good = {"text": "Ewing sarcoma is a bone tumor.", "passages": [{"title": "Ewing", "text": "Ewing sarcoma is a "
                                                                                              "bone tumor."}]}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good) + "\n")
    assert main(["verify", str(path), "--index", str(tiny_index), "--set", "verify.judges=off"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["judge"] == "lexical" and out["sentences"][0]["supported"]
    path.write_text(json.dumps({"text": "x"}) + "\n")
    assert main(["verify", str(path), "--index", str(tiny_index)]) == 2
    assert "in.jsonl:1" in capsys.readouterr().err


def test_question_type_prior_lifts_the_record_of_the_asked_type():
    from core.types import Passage
    from retriever.search import fuse_question_type, question_types

    assert question_types("How is gout treated?") == {"treatment"}
    assert question_types("my mother has gout. can you tell me what are the symptoms of gout") == {"symptoms"}
    assert question_types("Tell me about gout") == set()
    assert question_types("What is (are) Gout ?") == question_types("what does gout mean") == {"overview"}
    assert question_types("What is the outlook for gout?") == {"outlook"}  # "what is the ..." asks for a section
    passages = [Passage("a#0", "a", "Gout: research", "x", "s"), Passage("b#0", "b", "Gout: treatment", "x", "s"),
                Passage("c#0", "c", "Gout: symptoms", "x", "s")]
    ranked = [(0, 0.03), (1, 0.02), (2, 0.01)]
    assert [i for i, _ in fuse_question_type("What are the treatments for gout?", ranked, passages, 60)] == [1, 0, 2]
    assert fuse_question_type("Tell me about gout", ranked, passages, 60) == ranked  # nothing asked: unchanged


def test_symptom_tables_keep_every_row_and_decimal_frequencies():
    from pipeline.verify.tables import table_items

    text = ("Signs and Symptoms Approximate number of patients (when available) Hernia 7.5% Cleft palate 50% "
            "Albinism - Deafness - The Human Phenotype Ontology (HPO) has collected information")
    assert table_items(text) == ["Hernia (7.5%)", "Cleft palate (50%)", "Albinism", "Deafness"]


def test_a_quote_from_a_similarly_named_condition_names_it():
    from pipeline.verify.stage import names_subject

    assert names_subject("What are the symptoms of Gout?", "Gout: symptoms")
    assert not names_subject("What are the symptoms of Adult Non-Hodgkin Lymphoma ?", "Adult Hodgkin Lymphoma: symptoms")


def test_a_question_asking_two_things_is_split_into_standalone_parts():
    from pipeline.parts import sub_questions

    assert sub_questions("My son has gout. What is gout? Also, how is it treated?") == [
        "My son has gout. What is gout?", "how is gout treated?"]
    assert sub_questions("how to diagnose Koolen de Vries syndrome And what is (are) Koolen de Vries syndrome ?") == [
        "how to diagnose Koolen de Vries syndrome", "what is (are) Koolen de Vries syndrome ?"]
    for one in ("What are the signs and symptoms of gout?", "Is dementia inherited or acquired?",
                "Who is at risk for Gout? ?",  # MedQuAD's doubled question mark
                "Hello! I have had a rash for a year. What could it be? Thanks!",  # thanks ask nothing
                "I have chest pain and what should I do?",  # a story, then one question
                "How do I know if I have diabetes and what should I do?"):  # no focus to carry: one question
        assert sub_questions(one) == [one]
    many = sub_questions("What is gout? What causes it? How is it treated? Can it be prevented?")
    assert len(many) == 3 and many[1] == "What causes gout?" and many[2].endswith("Can it be prevented?")


def test_each_part_is_retrieved_and_answered():
    from pipeline.answer import retrieve

    docs = [("Gout: overview", "Gout is a kind of arthritis caused by uric acid crystals in the joints."),
            ("Gout: treatment", "Doctors prescribe colchicine or anti-inflammatory drugs for gout flares."),
            ("Gout: symptoms", "Gout flares bring sudden joint pain, redness and swelling.")]

    class WordRetriever(FakeRetriever):  # ranks by the title's words the query shares ("treated" ~ "treatment")
        def search(self, query, k=5, mode="hybrid", source=None, per_record=True):
            words = {w[:5] for w in query.lower().replace("?", " ").split()}
            order = sorted(self.passages, key=lambda p: -len(words & {w[:5] for w in p.title.lower().split()}))
            return [Hit(p, 1.0 / n, n) for n, p in enumerate(order[:k], start=1)]

    r = WordRetriever(docs=docs)
    question = "My dad has gout. What is gout? Also, how is it treated?"
    hits = retrieve(question, r, 1, "hybrid")  # one hit asked for, two parts: each part's best, two a part
    assert {h.passage.title for h in hits[:2]} == {"Gout: overview", "Gout: treatment"}
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert [h.passage.id for h in retrieve("How is gout treated?", r, 2, "hybrid")] == [
        h.passage.id for h in r.search("How is gout treated?", k=2, mode="hybrid")]  # one part: the search as is
    shown = _shown(docs[:2])
    cfg = VerifyConfig(min_relevance=0.0, min_kept_share=0.3, generated_with_trained_judge=True, answerhood_gate=True)
    answerhood = ScriptedJudge(bad=(), good=())
    answerhood.score = lambda pairs: [0.9 if ("treat" in q) == ("colchicine" in t) else 0.1 for q, t in pairs]
    judges = Judges(faithfulness=ScriptedJudge(bad=()), answerhood=answerhood)
    # the draft answers the first part only: the second gets its own quote, after it
    v = verify(question, "Gout is a kind of arthritis caused by uric acid crystals in the joints [1].", shown, r,
               cfg, judges)
    assert v.mode == "generated" and [s.citations for s in v.sentences] == [[1], [2]]
    assert "colchicine" in v.sentences[1].text and any("left a part" in w for w in v.warnings)
    # nothing generated survives: quotes for each part, in the order asked
    v = verify(question, "Nothing here.", shown, r, cfg, judges)
    assert v.mode == "extractive" and [s.citations[0] for s in v.sentences][:2] == [1, 2]


def test_cut_ends_and_link_lines_are_not_quoted():
    text = ("MELAS affects the brain and the muscles of the body. More on: MELAS Frequently Asked Questions. "
            "Most people with MELAS have a buildup of lactic acid in")
    assert candidates("What is MELAS?", _shown([("MELAS: overview", text)])) == [
        (1, "MELAS affects the brain and the muscles of the body.")]


def test_length_grouped_batches_cover_every_pair_once_pad_less_and_repeat_by_seed():
    from datasets import Dataset

    from train.batching import LengthGroupedBatches

    rng = random.Random(0)
    texts = ["w " * rng.randint(1, 200) for _ in range(640)]
    data = Dataset.from_dict({"a": texts, "b": ["s"] * len(texts), "label": [1.0] * len(texts)})
    sampler = LengthGroupedBatches(data, batch_size=16, drop_last=False, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 40 and sorted(i for b in batches for i in b) == list(range(640))

    def padded(bs):  # tokens a batch pads to (its longest) over the real ones
        return sum(max(len(texts[i]) for i in b) * len(b) for b in bs) / sum(len(t) for t in texts)

    shuffled = [list(range(640))[k:k + 16] for k in range(0, 640, 16)]
    assert padded(batches) < 1.25 < 1.5 < padded(shuffled)
    assert list(LengthGroupedBatches(data, 16, False, seed=3)) == batches  # the same seed, the same batches
    # ... in random order, not longest first through each mega-batch (the judge stalled on that order)
    longest = [max(len(texts[i]) for i in b) for b in batches]
    descents = sum(x > y for x, y in zip(longest[:-1], longest[1:], strict=True))
    assert 0.25 < descents / (len(longest) - 1) < 0.75
    sampler.set_epoch(1)
    assert list(sampler) != batches  # reshuffled each epoch
