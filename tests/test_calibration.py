"""Thresholds that follow the index in use: the relevance gate is calibrated for the embedder that built an index
and written into its manifest; an index built with another embedder brings its own (no silent reuse), and every
answer and /readyz say which calibration is in force."""

import json

from index_build.build import build_index
from pipeline.verify.config import DEFAULT_MIN_RELEVANCE, VerifyConfig
from pipeline.verify.stage import calibration_in_force, relevance_gate
from retriever import index_dir as fmt
from retriever.search import IndexRetriever
from train.calibrate import OUT_OF_SCOPE, calibrate_index

IN_SCOPE = ["What are the treatments for Ewing Sarcoma ?", "What is (are) Ewing Sarcoma ?",
            "What causes ABCD syndrome ?", "What are the symptoms of ABCD syndrome ?", "What causes migraine?",
            "What are the symptoms of Allergy?"]
PATIENT = ["my son has ewing sarcoma, how do they treat it", "what causes abcd syndrome in kids",
           "why do i get migraines", "allergy symptoms what are they"]


def test_each_index_carries_the_calibration_of_its_own_embedder(index_config, minilm_dir, tmp_path):
    tiny = build_index(index_config(out=str(tmp_path / "tiny")), log=lambda _: None).out
    other = build_index(index_config(out=str(tmp_path / "minilm"), embedder=str(minilm_dir)), log=lambda _: None).out
    assert IndexRetriever.load(tiny).calibration == {}  # built, not yet calibrated: the built-in default
    assert relevance_gate(VerifyConfig(), IndexRetriever.load(tiny)) == (DEFAULT_MIN_RELEVANCE, "default")
    cals = {name: calibrate_index(path, "", lambda _: None, (IN_SCOPE, PATIENT))
            for name, path in (("tiny", tiny), ("minilm", other))}
    assert cals["tiny"]["relevance"]["threshold"] != cals["minilm"]["relevance"]["threshold"]
    # another embedder than the packaged MiniLM (a tuned one) is gated on the reference MiniLM's scale, and says so
    assert cals["tiny"]["relevance"]["embedder"] == "reference" and cals["minilm"]["relevance"]["embedder"] == "index"
    assert calibration_in_force(VerifyConfig(), IndexRetriever.load(tiny), None)["relevance"]["embedder"] == "reference"
    assert calibration_in_force(VerifyConfig(), IndexRetriever.load(other), None)["relevance"]["embedder"] == "index"
    for name, path in (("tiny", tiny), ("minilm", other)):
        r = IndexRetriever.load(path)
        manifest = json.loads((path / fmt.MANIFEST).read_text())
        assert manifest["calibration"]["embedder_sha256"] == manifest["embedder"]["sha256"]
        gate, source = relevance_gate(VerifyConfig(), r)
        assert gate == cals[name]["relevance"]["threshold"] and source == f"index {r.fingerprint[:12]}"
        assert cals[name]["relevance"]["out_of_scope"]["n"] == len(OUT_OF_SCOPE)
        assert relevance_gate(VerifyConfig(min_relevance=0.3), r) == (0.3, "config")  # set explicitly: it wins
    # another index's calibration copied in is not this index's: refused, the default applies and says so
    donor = json.loads((tiny / fmt.MANIFEST).read_text())["calibration"]
    path = other / fmt.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["calibration"] = donor
    path.write_text(json.dumps(manifest))
    r = IndexRetriever.load(other)
    assert r.calibration == {} and relevance_gate(VerifyConfig(), r)[1] == "default"
    assert calibration_in_force(VerifyConfig(), r, None)["relevance"]["source"] == "default"


def test_answers_and_readyz_say_which_calibration_is_in_force(tiny_index, tiny_generator):
    from litestar.testing import TestClient

    from generator.config import DecodingConfig
    from service.app import create_app
    from service.config import ServeConfig

    r = IndexRetriever.load(tiny_index)
    app = create_app(r, tiny_generator, ServeConfig(k=2, decoding=DecodingConfig(max_new_tokens=4)))
    with TestClient(base_url="http://localhost", app=app) as c:
        ready = c.get("/readyz").json()
        a = c.post("/v1/answer", json={"question": "What is (are) Ewing Sarcoma ?"}).json()
    assert ready["calibration"]["relevance"]["source"] in ("default", f"index {r.fingerprint[:12]}")
    assert a["calibration"] == ready["calibration"] and "support" in a["calibration"]


def test_real_consumer_questions_count_among_the_questions_the_gate_must_keep(tiny_index):
    """Issue 35: the gate is calibrated on what people write too, not on MedQuAD's templates alone."""
    from train.calibrate import calibrate_relevance

    r = IndexRetriever.load(tiny_index)
    without = calibrate_relevance(r, IN_SCOPE, PATIENT)
    consumer = ["ewing sarcoma in my daughter's leg, what now", "migraine every morning why", "my allergy is worse"]
    with_consumer = calibrate_relevance(r, IN_SCOPE, PATIENT, consumer=consumer)
    assert "consumer" not in without and with_consumer["consumer"]["n"] == 3
    assert 0.0 <= with_consumer["consumer"]["kept"] <= 1.0 and "consumer dev" in with_consumer["rule"]
    # the same out-of-scope side of the rule; the in-scope side now holds the consumer questions too
    assert with_consumer["out_of_scope"]["p95"] == without["out_of_scope"]["p95"]
