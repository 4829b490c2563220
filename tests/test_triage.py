"""Red-flag triage: every rule of pipeline/triage_rules.yaml fires on its triggers and stays quiet on near-misses
(informational questions about the same topics, which are most of what a reference service is asked)."""

import pytest

from pipeline.triage import load_rules, triage

TRIGGERS = {
    "chest_pain_cardiac": ["I have crushing chest pain and I am sweating", "chest pressure spreading to my left arm",
                           "My dad has chest tightness and is short of breath right now"],
    "stroke_signs": ["my face is drooping and my speech is slurred", "my mother suddenly went numb on one side of her body",
                     "I think I am having a stroke"],
    "anaphylaxis": ["my throat is swelling after a bee sting", "his tongue is swollen after eating peanuts",
                    "I think my son is having anaphylaxis",
                    "I'm having a reaction to a medication: my skin is itchy and I have difficulty breathing"],
    "breathing": ["my son can't breathe", "her lips are blue"],
    "suicide_self_harm": ["I want to kill myself", "I have been thinking about suicide", "I keep hurting myself"],
    "severe_bleeding": ["the bleeding won't stop after the cut", "I am vomiting blood"],
    "poisoning_overdose": ["I took too many of my sleeping pills", "my toddler swallowed a battery",
                           "my friend overdosed on heroin"],
    "infant_fever": ["my 3 week old baby has a fever of 38.5", "newborn with a fever, what should I do"],
    "seizure_unconscious": ["my husband is having a seizure", "she is unresponsive and won't wake up"],
    "meningitis_signs": ["stiff neck and a high fever with a rash"],
    # the kinds patients word differently (issue: 8 of 15 flagged before)
    "head_injury": ["he hit his head falling off the ladder and has vomited twice and is drowsy",
                    "after a head injury my son is confused"],
}
TRIGGERS["chest_pain_cardiac"] += ["chest pain and he can barely talk",
                                   "crushing chest pain climbing stairs that does not stop when I rest",
                                   "chest tightness and then I passed out"]
TRIGGERS["suicide_self_harm"] += ["I keep thinking about ending it all", "everyone would be better off without me"]
TRIGGERS["severe_bleeding"] += ["blood is spurting from the cut and it does not stop with pressure",
                                "my vomit looks like coffee grounds"]
# issue 36: the emergencies patients write that the rules missed, each with near-misses below
TRIGGERS["suicide_self_harm"] += ["how much of the tylenol in our cupboard would it take to stop someone waking up",
                                  "i took the pills because i wanted it all to stop",
                                  "everyone would be better off if i was gone", "i have decided to end it tonight",
                                  "i just want to go to sleep and never wake up", "i have been saving my pills",
                                  "there is no point in living anymore"]
TRIGGERS["poisoning_overdose"] += ["my 2 year old got into the drain cleaner under the sink",
                                   "my toddler swallowed a button battery from the remote",
                                   "my daughter swallowed two magnets from her brothers toy",
                                   "my son ate some of grandmas blood pressure pills",
                                   "I swallowed a whole bottle of paracetamol", "he took 40 of his tablets"]
TRIGGERS["chest_pain_cardiac"] += ["my dad is 70 his chest hurts and he is having trouble getting his words out"]
TRIGGERS["sepsis"] = ["my son has a high fever and a rash that doesn't fade when i press a glass on it",
                      "dad finished chemo last week and now has a temp of 39 and is shivering"]
TRIGGERS["pregnancy"] = ["i am 32 weeks pregnant and bleeding heavily with cramps",
                         "i gave birth last week and now i am bleeding with big clots and feel dizzy"]
TRIGGERS["stroke_signs"] += ["his mouth is drooping on one side", "she can't lift her arm and her words are coming out wrong"]
NEAR_MISSES = [
    "What are the treatments for gout?", "What is chest pain?", "What are the symptoms of a stroke?",
    "What causes anaphylaxis?", "What is an overdose of vitamin D?", "What are the symptoms of lead poisoning?",
    "When should my baby get vaccines?", "How is epilepsy treated?", "What is the outlook for Ewing sarcoma?",
    "Is suicide risk higher with depression?", "What causes a stiff neck?", "How do I stop a nosebleed?",
    # reviewed false alarms from GenMedGPT (benchmarks/triage.py): symptom lists without a red flag
    "I have been having a headache, coryza, vomiting, chest tightness and nasal congestion",
    "I have sharp abdominal and back pain and pain on one side of my body",
    "What are the symptoms of a head injury?", "I bumped my head last week and I'm fine now",
    # beside the issue 36 rules: a condition, a past event, a relative, normal doses, safety, mild symptoms
    "my son swallowed a magnet when he was 2 does it cause problems later", "how much tylenol can i give my 3 year old",
    "how do i store cleaning products away from kids", "What is the maximum dose of ibuprofen per day?",
    "I want the itching to stop, what cream helps?", "my dad had a stroke last year, what are the risks for me",
    "what causes chest pain in young people", "my grandmother took her blood pressure pills twice by mistake last month",
    "how do batteries in toys get checked for safety", "i feel low since my mum died, how long does grief last",
    "my chest hurts when i cough with this cold", "is it bad to take 2 paracetamol every day for a week",
    "when does an epipen expire", "is a little spotting normal in early pregnancy",
    "what does a sepsis rash look like", "my baby put a battery in his mouth but i took it out straight away",
]


@pytest.mark.parametrize(("rule", "question"), [(r, q) for r, qs in TRIGGERS.items() for q in qs])
def test_triggers(rule, question):
    t = triage(question, learned=False)
    assert t is not None and t.rule == rule and "emergency" in t.notice


@pytest.mark.parametrize("question", NEAR_MISSES)
def test_near_misses_do_not_fire(question):  # the served default: the reviewed rules
    assert triage(question) is None  # the topic named, nobody described in danger


def test_every_rule_has_triggers():
    _, rules = load_rules()
    assert {r.name for r in rules} == set(TRIGGERS)


def _tiny_layer(path, threshold: float, classes=("none", "stroke_signs", "suicide_self_harm"), thresholds=None):
    """A learned layer in the shape `medcite train-triage` writes: a 1-layer BERT classifier (built here, not
    trained) with the packaged MiniLM's tokenizer and a spec carrying the threshold."""
    import json

    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from pipeline.triage import SPEC_FILE
    from retriever.embedder import resolve_embedder

    tok = AutoTokenizer.from_pretrained(resolve_embedder(""))
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     num_labels=len(classes)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    spec = {"classes": list(classes), "threshold": threshold, **({"thresholds": thresholds} if thresholds else {})}
    (path / SPEC_FILE).write_text(json.dumps(spec))
    return path


def test_learned_layer_fires_where_no_rule_does_and_says_so(tmp_path, monkeypatch):
    from pipeline.triage import MODEL_ENV, classifier, model_dir

    monkeypatch.chdir(tmp_path)  # no artifacts/triage here: the rules alone
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert model_dir() == "" and classifier() is None
    message = "my grandad keeps staring at the wall and does not answer when we say his name"
    assert triage(message) is None
    monkeypatch.setenv(MODEL_ENV, str(_tiny_layer(tmp_path / "always", 0.0)))  # threshold 0: any score passes
    t = triage(message)
    assert t is not None and t.layer == "classifier" and 0.0 <= t.score <= 1.0
    assert t.to_dict()["score"] == t.score and t.rule in ("stroke_signs", "suicide_self_harm")  # the tiny layer's two classes
    assert triage(message, learned=False) is None  # the rules alone do not know this wording
    assert triage("I have crushing chest pain and I am sweating").layer == "rule"  # a rule goes first
    monkeypatch.setenv(MODEL_ENV, str(_tiny_layer(tmp_path / "never", 1.01)))
    assert triage(message) is None
    # served int8 (dynamically quantized) with the threshold calibrated for int8, where torch can
    monkeypatch.setenv(MODEL_ENV, str(_tiny_layer(tmp_path / "int8", 1.01, thresholds={"fp32": 1.01, "int8": 0.0})))
    assert classifier().precision == "int8" and classifier().threshold == 0.0 and triage(message).layer == "classifier"
    monkeypatch.setenv(MODEL_ENV, "off")
    assert classifier() is None
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "always").rename(tmp_path / "artifacts" / "triage")
    monkeypatch.delenv(MODEL_ENV)
    assert model_dir() == "artifacts/triage" and triage(message).layer == "classifier"  # picked up by itself


def test_self_harm_notice_names_a_crisis_line_first():
    t = triage("I keep thinking about ending it all", learned=False)
    assert t.notice.startswith("If you are thinking about ending your life") and "988" in t.notice
    assert "emergency number" in t.notice


def test_an_answer_never_contradicts_the_notice():
    from pipeline.answer import Pipeline
    from pipeline.config import PipelineConfig
    from pipeline.verify.config import VerifyConfig
    from tests.fakes import FakeGenerator, FakeRetriever

    docs = [("Chest pain", "Chest pain is not serious in most young people. Chest pain can be a heart attack.")]
    pipeline = Pipeline(FakeRetriever(docs=docs),
                        FakeGenerator("Chest pain is not serious in most young people [1]. Chest pain can be a heart attack [1]."),
                        None, PipelineConfig(k=1, verify=VerifyConfig(min_relevance=0.0)))
    a = pipeline.answer("crushing chest pain and sweating right now")
    assert a.triage and a.triage["layer"] == "rule"
    assert "not serious" not in a.text and "heart attack" in a.text
    assert any("contradicts the urgent-care notice" in w for w in a.warnings)


def test_the_benchmarks_reviewed_messages_are_never_trained_on():
    """The GenMedGPT-5k messages the benchmark's triage review labelled are kept out of training, and the training
    review labels only kinds the layer knows."""
    import json

    from train.triage import BENCHMARK_REVIEW, TRAIN_REVIEW
    from train.triage_data import EMERGENCY

    bench = [json.loads(x) for x in BENCHMARK_REVIEW.read_text().splitlines()]
    train = [json.loads(x) for x in TRAIN_REVIEW.read_text().splitlines()]
    assert len(bench) == 500 and len(train) > 500
    assert not {r["index"] for r in bench} & {r["index"] for r in train}
    assert {r["label"] for r in train} <= {*EMERGENCY, "none"}
    assert {r["label"] for r in bench} == {"emergency", "non_urgent"}


def test_the_measuring_sets_are_never_trained_on_and_the_rows_come_in_one_order():
    """data/triage/probe_blind.jsonl and heldout.jsonl measure both layers (benchmarks/triage.py) and dev.jsonl
    chooses the threshold: none of their messages is a training row of the learned layer. The rows are the same,
    in the same order, from the same seed (the data half of a reproducible training)."""
    import json

    from core.config import default_data_dir
    from train.triage import DATA, training_rows

    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    rows = training_rows(default_data_dir(), log=lambda _: None)
    taught = {norm(r["text"]) for r in rows}
    for name, n in (("probe_blind", 150), ("heldout", 180), ("dev", 216)):
        held = {norm(json.loads(x)["text"]) for x in (DATA / f"{name}.jsonl").read_text().splitlines() if x.strip()}
        assert len(held) == n and not held & taught, name
    rules_dev = {norm(json.loads(x)["text"]) for x in (DATA / "rules_dev.jsonl").read_text().splitlines() if x}
    assert rules_dev <= taught  # the set the rules were written against teaches the layer instead
    assert training_rows(default_data_dir(), log=lambda _: None) == rows
    assert training_rows(default_data_dir(), seed=1, log=lambda _: None) != rows


@pytest.mark.parametrize("bf16", [False, True])
def test_the_layers_training_is_deterministic(tmp_path, bf16):
    """The same inputs give the same weights (train.triage.training_args: seeded, data_seed, full_determinism):
    a tiny classifier trained twice from the same start, in fp32 and in bf16 mixed precision (what `auto` picks
    where the CPU multiplies bf16 natively)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, Trainer

    from retriever.embedder import resolve_embedder
    from train.triage import training_args

    tok = AutoTokenizer.from_pretrained(resolve_embedder(""))
    texts = [f"message {i} about {'chest pain now' if i % 2 else 'a rash last year'}" for i in range(48)]
    data = Dataset.from_list([{"text": t, "label": i % 2} for i, t in enumerate(texts)]).shuffle(0)
    data = data.map(lambda b: tok(b["text"], truncation=True, max_length=16), batched=True, remove_columns=["text"])

    def start():
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16,
                                                        num_hidden_layers=1, num_attention_heads=2,
                                                        intermediate_size=32, num_labels=2))

    def train(run: str) -> dict:
        model = start()
        args = training_args(tmp_path / run, seed=3, epochs=1, batch_size=8, save_steps=100, bf16=bf16)
        Trainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
        return {k: v.clone() for k, v in model.state_dict().items()}

    try:
        a, b = train("a"), train("b")
    finally:
        torch.use_deterministic_algorithms(False)  # full_determinism sets it for the process
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["classifier.weight"], start().state_dict()["classifier.weight"])  # it trained
    # the real layer's new head is drawn from the seed, whatever the process drew before
    from train.triage import new_classifier

    heads = []
    for _ in range(2):
        torch.rand(7)  # another draw before each: the head must not depend on it
        heads.append(new_classifier(resolve_embedder(""), ["none", "stroke_signs"], seed=5).classifier.weight)
    assert torch.equal(*heads)


def test_a_finished_layer_with_the_same_inputs_is_not_trained_again(tmp_path, monkeypatch, fixture_data):
    """`make demo` runs train-triage every time: a rerun with unchanged inputs does nothing (the card's
    inputs_sha256), and the card says which precision trained it."""
    import json

    import train.triage as tt
    from pipeline.triage import SPEC_FILE
    from train.precision import native_bf16

    rows = [{"text": f"message {i}: {'sudden crushing chest pain' if i % 2 else 'a mild rash last year'}",
             "label": "chest_pain" if i % 2 else "none"} for i in range(16)]
    monkeypatch.setattr(tt, "training_rows", lambda data_dir, seed, log: rows)
    logs: list[str] = []
    out = tt.train_triage(str(fixture_data), str(tmp_path / "layer"), 0, max_steps=2, log=logs.append)
    spec = json.loads((out / SPEC_FILE).read_text())
    assert spec["card"]["train_precision"] == ("bf16 mixed" if native_bf16() else "fp32")
    assert len(spec["card"]["inputs_sha256"]) == 64 and spec["card"]["train_loop_seconds"] is not None
    assert not (tmp_path / "layer-run").exists()  # the run's checkpoints are gone once the layer is published
    stamp = (out / SPEC_FILE).stat().st_mtime_ns
    assert tt.train_triage(str(fixture_data), str(out), 0, max_steps=2, log=logs.append) == out
    assert "up to date" in logs[-1] and (out / SPEC_FILE).stat().st_mtime_ns == stamp
