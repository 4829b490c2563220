"""What kind of answer a passage sentence gives (pipeline/verify/kinds.py, fitted by train/sentence_kinds.py), and
the quotable units the extractive answer chooses from: the kind the question asks for goes first; lists keep their
items and their subject; lines that only send the reader elsewhere are not quoted."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from core.types import Hit, Passage  # noqa: E402
from generator.prompt import PromptPassage  # noqa: E402
from pipeline.verify.kinds import SentenceKinds, load_kinds  # noqa: E402
from pipeline.verify.quotable import candidates, title_like, without_referral  # noqa: E402
from pipeline.verify.stage import extractive  # noqa: E402
from train.sentence_kinds import fit, passage_kind  # noqa: E402

DIM = 256


def bag_embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for the embedder: hashed bag of words, unit length."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z]+", t.lower()):
            out[i, zlib.crc32(w.encode()) % DIM] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


CAUSES = ["{d} is caused by bacteria that spread through contact.", "A virus infection causes most cases of {d}.",
          "{d} results from a gene mutation passed on in families.", "Smoking and bacteria cause {d} in adults."]
TREATS = ["{d} is treated with antibiotics taken for ten days.", "Doctors treat {d} with medicines and surgery.",
          "Treatment of {d} includes rest, fluids and drug therapy.", "Surgery and medicines help treat severe {d}."]
SIGNS = ["Signs of {d} include fever, pain and a rash.", "People with {d} feel tired and have a cough and fever.",
         "Symptoms of {d} include pain, swelling and fever.", "A rash, fever and headache are common signs of {d}."]


def corpus() -> list[tuple[str, str]]:
    out = []
    for d in ("Gout", "Flu", "Acne", "Mumps", "Croup", "Scabies"):
        out.append((f"{d}: causes", " ".join(s.format(d=d) for s in CAUSES)))
        out.append((f"{d}: treatment", " ".join(s.format(d=d) for s in TREATS)))
        out.append((f"What are the symptoms of {d}?", " ".join(s.format(d=d) for s in SIGNS)))
        out.append((f"{d}: research", "Scientists study it."))  # too short to be a sentence: no rows
    return out


def test_passage_kinds_come_from_medquad_sections_and_question_titles():
    assert passage_kind("Gout: treatment") == "treatment"
    assert passage_kind("Gout: genetic changes") == "genetic changes"
    assert passage_kind("What causes Seasonal affective disorder?") == "causes"
    assert passage_kind("Gout") is None and passage_kind("Gout: support groups") is None
    assert passage_kind("What are the symptoms and treatments of gout?") is None  # two kinds: no label


def test_fit_learns_the_kinds_and_the_model_survives_a_round_trip(tmp_path):
    model, card = fit(corpus(), bag_embed, per_kind=50)
    assert set(model.classes) == {"causes", "treatment", "symptoms"}
    assert card["sentences"] == 72 and card["kinds"] == {"causes": 24, "symptoms": 24, "treatment": 24}
    new = bag_embed(["Impetigo is caused by bacteria.", "Impetigo is treated with antibiotics and medicines.",
                     "Signs of impetigo include a rash and fever."])
    p = {k: model.prob(new, {k}) for k in ("causes", "treatment", "symptoms")}
    assert [int(np.argmax([p[k][i] for k in ("causes", "treatment", "symptoms")])) for i in range(3)] == [0, 1, 2]
    assert np.allclose(model.prob(new, {"causes", "treatment", "symptoms"}), 1.0, atol=1e-5)
    assert not model.prob(new, {"outlook"}).any()  # a kind the model does not know: no prior
    model.save(tmp_path / "sentence_kinds.npz")
    again = load_kinds(tmp_path)
    assert again is not None and again.classes == model.classes
    assert np.allclose(again.prob(new, {"causes"}), p["causes"], atol=1e-6)
    assert load_kinds(tmp_path / "none") is None


def _shown(*docs: tuple[str, str]) -> list[PromptPassage]:
    return [PromptPassage(i, Hit(Passage(f"p{i}#0", f"p{i}", title, text, "s"), 1.0, i), text)
            for i, (title, text) in enumerate(docs, start=1)]


class _Embed:
    def __init__(self, kinds: SentenceKinds | None):
        self.kinds = kinds

    def __call__(self, texts: list[str]) -> np.ndarray:
        return bag_embed(texts)


def test_the_kind_asked_for_goes_first_with_the_prior_and_not_without():
    model, _ = fit(corpus(), bag_embed, per_kind=50)
    text = "What gonorrhea feels like in women is pain. Gonorrhea is caused by bacteria that spread through contact."
    shown = _shown(("Gonorrhea: overview", text))
    question = "What causes gonorrhea?"
    plain = extractive(question, shown, _Embed(model), 1, type_prior=0.0)
    typed = extractive(question, shown, _Embed(model), 1, type_prior=0.8)
    assert "in women" in plain[0].text  # the cosine alone: the sentence sharing the question's words
    assert "caused by bacteria" in typed[0].text
    # no classifier for the index, or a question that asks for no kind: the cosine order
    assert extractive(question, shown, _Embed(None), 1, type_prior=0.8)[0].text == plain[0].text
    what = "What is gonorrhea?"
    assert (extractive(what, shown, _Embed(model), 1, type_prior=0.8)[0].text
            == extractive(what, shown, _Embed(model), 1, type_prior=0.0)[0].text)


def test_lists_keep_their_items_and_their_subject():
    # the stroke record's items stand one to a line without bullets; the flu overview's inline list leans on
    # the sentence before it and has the next section's heading glued to its end; SAD's items run together
    stroke = ("The type of symptoms depends on the area of the brain that is affected.\nSigns and symptoms of a "
              "stroke may include:\nSudden weakness\nConfusion\nTrouble speaking or understanding speech\nA transient "
              "ischemic attack has the same signs as a stroke.")
    flu = ("Symptoms of the flu come on suddenly and are worse than those of the common cold. They may include - "
           "Body or muscle aches - Chills - Cough - Fever Is it a cold or the flu? Colds rarely cause a fever.")
    sad = ("Symptoms usually build up slowly in the late autumn.\nSymptoms are usually the same as with depression:"
           "\nIncreased appetite with weight gain Increased sleep and daytime sleepiness Social withdrawal\nLight therapy "
           "helps most people.")
    units = [u for _, u in candidates("What are the symptoms?", _shown(("Stroke: symptoms", stroke),
                                                                       ("Flu: overview", flu), ("SAD", sad)))]
    assert ("Signs and symptoms of a stroke may include: Sudden weakness; Confusion; Trouble speaking or "
            "understanding speech.") in units
    assert ("Symptoms of the flu come on suddenly and are worse than those of the common cold. They may include - "
            "Body or muscle aches - Chills - Cough - Fever") in units
    assert not any("Is it a cold" in u for u in units)
    assert ("Symptoms are usually the same as with depression: Increased appetite with weight gain Increased sleep "
            "and daytime sleepiness Social withdrawal.") in units
    # a list whose lead-in is the cut end of another sentence is not quoted ("lead to an ectopic kidney include:")
    cut = "lead to an ectopic kidney include:\n- poor development of a kidney bud\n- genetic abnormalities"
    assert not any("ectopic kidney" in u for _, u in candidates("What causes it?", _shown(("Ectopic Kidney", cut))))


def test_lines_that_send_the_reader_elsewhere_are_not_quoted():
    assert without_referral("For information on the treatment of lupus, you can read the NIAMS publication "
                            "called Handout on Health.") == ""
    assert without_referral("Podcast: Take Three Actions to Fight Flu") == ""
    assert without_referral("To see studies recruiting participants, visit www.ClinicalTrials.gov today.") == ""
    kept = ("Pneumatic balloon dilation of the esophagus at the location of the narrowing (done during an "
            "endoscopy) You can learn more about these treatment options by clicking on the following links")
    assert without_referral(kept) == ("Pneumatic balloon dilation of the esophagus at the location of the narrowing "
                                      "(done during an endoscopy)")
    assert without_referral("Gout is treated with colchicine and rest.") == "Gout is treated with colchicine and rest."
    assert title_like("Quick Facts for Clinicians on Antiviral Treatments for 2009 H1N1 Nov 4")
    assert title_like("Stage I, Stage II, Stage III, and Stage IV Chronic Lymphocytic Leukemia")
    assert not title_like("Most heart attacks are caused by a blood clot that blocks one of the coronary arteries.")
    text = ("Questions & Answers: Antiviral Drugs, 2009-2010 Flu Season\n(For more information, go to \"How Is "
            "Flu Diagnosed?\")\nQuick Facts for Clinicians on Antiviral Treatments for 2009 H1N1 Nov 4\nAntiviral "
            "drugs such as oseltamivir treat the flu when taken early.")
    assert [u for _, u in candidates("How is flu treated?", _shown(("2009 H1N1 Flu: treatment", text)))] == [
        "Antiviral drugs such as oseltamivir treat the flu when taken early."]


def test_medcite_index_fits_the_kinds_beside_the_index_once(index_config, tmp_path):
    from index_build.build import build_index
    from pipeline.verify.config import VerifyConfig
    from pipeline.verify.kinds import CARD, FILENAME
    from pipeline.verify.stage import calibration_in_force
    from retriever.search import IndexRetriever
    from train.sentence_kinds import fit_index

    out = build_index(index_config(out=str(tmp_path / "index")), log=lambda _: None).out
    assert "missing" in calibration_in_force(VerifyConfig(), IndexRetriever.load(out), None)["sentence_kinds"]["source"]
    logs: list[str] = []
    card = fit_index(out, logs.append)
    assert (out / FILENAME).is_file() and (out / CARD).is_file() and len(logs) == 1
    assert card["scale"] == "index" and len(card["kinds"]) >= 2 and 0.0 <= card["held_out_accuracy"] <= 1.0
    stamp = (out / FILENAME).stat().st_mtime_ns
    assert fit_index(out, logs.append) == card and len(logs) == 1  # up to date: nothing fitted, nothing said
    assert (out / FILENAME).stat().st_mtime_ns == stamp
    r = IndexRetriever.load(out)
    assert calibration_in_force(VerifyConfig(), r, None)["sentence_kinds"]["source"] == f"index {r.fingerprint[:12]}"
