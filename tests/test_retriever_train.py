"""Record-level results, the reranker stage, and the retriever training job on tiny models built in code:
reserved documents excluded, consumer-style rewrites, resume after a kill, the index manifest naming its run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import ConfigError, MedciteError, ModelLoadError
from index_build.config import IndexConfig
from retriever.config import RerankConfig
from tests.conftest import ROOT, _doc, _qa
from train.config import RetrieverTrainConfig

QTYPES = [("information", "What is (are) {f} ?", "{f} is a condition of the {organ} with {w1} and {w2}."),
          ("symptoms", "What are the symptoms of {f} ?", "People with {f} notice {w1}, {w2} and tiredness."),
          ("treatment", "What are the treatments for {f} ?", "Doctors treat {f} with {w1} therapy and {w2}.")]
WORDS = ["fever", "rash", "cough", "swelling", "pain", "itching", "bleeding", "nausea", "dizziness", "cramps",
         "surgery", "insulin", "steroids", "antibiotics", "rest", "diet", "heart", "lung", "liver", "kidney"]


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory) -> Path:
    """40 self-written MedQuAD-style documents of 3 QA pairs; documents 0-7 reserved, dev from them."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("qa")
    sub = root / "medquad" / "2_GARD_QA"
    sub.mkdir(parents=True)
    dev = []
    for d in range(40):
        f = f"Zorbitis type {d}"
        pairs = []
        for qtype, q, a in QTYPES:
            pairs.append(_qa(qtype, q.format(f=f), a.format(f=f, organ=rng.choice(WORDS[16:]),
                                                             w1=rng.choice(WORDS), w2=rng.choice(WORDS))))
        (sub / f"{d:07d}.xml").write_text(_doc("GARD", f"https://example.org/{d}", f, pairs))
        if d < 8:
            dev.append({"id": f"dev-{d}", "question": QTYPES[d % 3][1].format(f=f),
                        "gold_medquad_id": f"2:{d:07d}:{d % 3 + 1}"})
    (root / "splits").mkdir()
    (root / "splits" / "medquad_reserved_documents.txt").write_text("".join(f"2:{d:07d}\n" for d in range(8)))
    (root / "splits" / "medquad_dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
    return root


@pytest.fixture(scope="module")
def qa_index(qa_data, tiny_embedder, tmp_path_factory) -> Path:
    from index_build.build import build_index

    out = tmp_path_factory.mktemp("qa_index") / "index"
    build_index(IndexConfig(data_dir=str(qa_data), corpora=("medquad:medquad",), out=str(out),
                            embedder=str(tiny_embedder), chunk_tokens=32, chunk_overlap=8, threads=1),
                log=lambda _: None)
    return out


def _cfg(qa_data, qa_index, out, **kw) -> RetrieverTrainConfig:
    base = dict(index=str(qa_index), data_dir=str(qa_data), out=str(out), sources=("medquad:medquad",),
                max_pairs=64, batch_size=4, mini_batch_size=2, eval_steps=2, max_seq_length=64,
                reranker_queries=16, reranker_negatives=2, reranker_batch_size=4, reranker_max_length=64, threads=1)
    base.update(kw)
    return RetrieverTrainConfig(**base)


def test_search_returns_distinct_records_by_default(tiny_index):
    from retriever.search import IndexRetriever

    r = IndexRetriever.load(tiny_index)
    q = "aspirin dosing and bleeding risk in adults"
    passages = r.search(q, k=6, mode="hybrid", per_record=False)
    records = r.search(q, k=6, mode="hybrid")
    assert len({h.passage.record_id for h in passages}) < len(passages)  # the long aspirin record repeats
    ids = [h.passage.record_id for h in records]
    assert len(ids) == len(set(ids)) and [h.rank for h in records] == list(range(1, len(records) + 1))
    assert records[0].passage.id == passages[0].passage.id  # the best passage stands for its record
    for mode in ("dense", "bm25"):
        got = [h.passage.record_id for h in r.search(q, k=4, mode=mode)]
        assert len(got) == len(set(got))


def test_consumer_rewrites_keep_the_focus_and_change_the_shape():
    from train.data import consumerize

    rng = random.Random(3)
    outs = [consumerize("What are the treatments for Gout ?", "Gout", rng, "What causes Gout ?") for _ in range(20)]
    assert all(o != "What are the treatments for Gout ?" for o in outs)
    assert sum("gout" in o.lower() for o in outs) >= 18  # a typo may land on the focus word itself, rarely
    assert any("causes" in o for o in outs) and len({o.split()[0] for o in outs}) >= 3


def test_pairs_exclude_reserved_documents_and_mine_other_records(qa_data, qa_index, tmp_path):
    from core.corpus import read_reserved
    from retriever.search import IndexRetriever
    from train.data import consumer_eval_set, training_pairs

    cfg = _cfg(qa_data, qa_index, tmp_path, max_pairs=200, consumer_share=0.5)
    r = IndexRetriever.load(qa_index)
    pairs = training_pairs(cfg, r, log=lambda _: None)
    reserved = read_reserved(cfg.data_dir, cfg.reserved)
    assert len(pairs) == 32 * 3  # every non-reserved QA pair, none of the 8 reserved documents
    assert not any(":".join(p["record_id"].split(":")[:2]) in reserved for p in pairs)
    assert all(p["positive"] != p["negative"] for p in pairs)
    assert 0.3 < sum(p["consumer"] for p in pairs) / len(pairs) < 0.7
    held = consumer_eval_set(cfg, n=50)
    dev_ids = {json.loads(line)["gold_medquad_id"] for line in (qa_data / "splits" / "medquad_dev.jsonl").open()}
    assert held and all(":".join(h["gold_medquad_id"].split(":")[:2]) in reserved for h in held)
    assert not {h["gold_medquad_id"] for h in held} & dev_ids


def test_embedder_training_resumes_after_a_kill_and_the_index_names_its_run(qa_data, qa_index, tmp_path):
    from index_build.build import build_index
    from retriever.search import IndexRetriever
    from train.retriever import RUN_FILE, train_embedder

    out = tmp_path / "run"
    flags = ["--index", str(qa_index), "--data-dir", str(qa_data), "--out", str(out), "--max-pairs", "64",
             "--set", "sources=medquad:medquad", "--set", "batch_size=4", "--set", "mini_batch_size=2",
             "--set", "eval_steps=2", "--set", "max_seq_length=64", "--set", "threads=1"]
    proc = subprocess.Popen([sys.executable, "-m", "medcite", "train-retriever", "embedder", *flags], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    ckpts = out / "embedder-run" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(ckpts.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]  # still training after its first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "embedder").exists()
    logs: list[str] = []
    cfg = _cfg(qa_data, qa_index, out)
    model_dir = train_embedder(cfg, IndexRetriever.load(qa_index), log=logs.append)
    assert any(m.startswith("resuming from") for m in logs), logs
    card = json.loads((model_dir / RUN_FILE).read_text())
    assert card["pairs"] == 64 and card["dev_after"] and card["peak_rss_mib"] > 0
    with pytest.raises(MedciteError, match="seed"):  # another config in the same run directory is refused
        train_embedder(_cfg(qa_data, qa_index, out, seed=1), IndexRetriever.load(qa_index), log=lambda _: None)
    tuned = tmp_path / "tuned-index"
    build_index(IndexConfig(data_dir=str(qa_data), corpora=("medquad:medquad",), out=str(tuned),
                            embedder=str(model_dir), chunk_tokens=32, chunk_overlap=8, threads=1), log=lambda _: None)
    run = json.loads((tuned / "manifest.json").read_text())["embedder"]["training_run"]
    assert run["stage"] == "embedder" and run["pairs"] == 64 and len(run["sha256"]) == 64
    base = json.loads((qa_index / "manifest.json").read_text())["embedder"]["training_run"]
    assert base is None


def test_reranker_trains_and_reorders_hybrid_results(qa_data, qa_index, tmp_path):
    from retriever.rerank import Reranker
    from retriever.search import IndexRetriever
    from train.retriever import train_reranker

    base = IndexRetriever.load(qa_index)
    out = train_reranker(_cfg(qa_data, qa_index, tmp_path), base, log=lambda _: None)
    reranker = Reranker.load(str(out), top_n=5, fuse=False)  # its own order
    r = IndexRetriever.load(qa_index, reranker=reranker)
    q = "What are the symptoms of Zorbitis type 12 ?"
    plain, reranked = base.search(q, k=5), r.search(q, k=5)
    assert {h.passage.id for h in plain} == {h.passage.id for h in reranked}  # the same top 5, reordered
    scores = reranker.scores(q, [f"{h.passage.title}\n{h.passage.text}" for h in reranked])
    assert scores == sorted(scores, reverse=True) and [h.score for h in reranked] == pytest.approx(scores)
    assert r.search(q, k=5, mode="dense") == base.search(q, k=5, mode="dense")  # dense stays dense
    # fused: reciprocal ranks of the cross-encoder's order and the hybrid order, summed
    fused = IndexRetriever.load(qa_index, reranker=Reranker(reranker.model, top_n=5, fuse=True)).search(q, k=5)
    ce_rank = {h.passage.id: n for n, h in enumerate(reranked, 1)}
    rrf = {h.passage.id: 1 / (60 + ce_rank[h.passage.id]) + 1 / (60 + n) for n, h in enumerate(plain, 1)}
    assert [h.passage.id for h in fused] == sorted(rrf, key=lambda i: (-rrf[i], [h.passage.id for h in plain].index(i)))
    assert [h.score for h in fused] == pytest.approx(sorted(rrf.values(), reverse=True))


def test_mined_negatives_that_are_the_same_question_from_another_source_are_not_negatives():
    from train.data import same_question

    pos = "Essential tremor: treatment\nTreatment may not be necessary unless the tremors interfere."
    q = "What are the treatments for Essential tremor ?"
    assert same_question("essential tremor: treatment\nThese resources address the management.", pos, q)
    assert same_question("What are the treatments for essential tremor?\nBeta blockers are used.", pos, q)
    assert not same_question("Essential tremor: overview\nA nervous system disorder.", pos, q)


def test_a_bi_encoder_base_gets_an_identity_pooler_a_cross_encoder_keeps_its_own(qa_index, tmp_path):
    import torch
    from sentence_transformers import CrossEncoder

    from train.retriever import pooler_to_identity

    ce = CrossEncoder(str(qa_index / "embedder"), num_labels=1, device="cpu", local_files_only=True)
    assert pooler_to_identity(ce)
    dense = ce.model.base_model.pooler.dense
    assert torch.equal(dense.weight, torch.eye(dense.weight.shape[0])) and not dense.bias.any()
    ce.save_pretrained(str(tmp_path / "ce"))  # a cross-encoder now: its pooler was trained with its head
    again = CrossEncoder(str(tmp_path / "ce"), device="cpu", local_files_only=True)
    with torch.no_grad():
        again.model.base_model.pooler.dense.weight.mul_(2)
    assert not pooler_to_identity(again)
    assert torch.equal(again.model.base_model.pooler.dense.weight, 2 * torch.eye(dense.weight.shape[0]))


def test_reranker_refusals(tmp_path):
    from retriever.rerank import Reranker

    with pytest.raises(ModelLoadError, match="reranker"):
        Reranker.load(str(tmp_path))
    with pytest.raises(ModelLoadError, match="reranker_base"):
        from train.retriever import train_reranker
        train_reranker(RetrieverTrainConfig(reranker_base=str(tmp_path / "none")), None, log=lambda _: None)
    with pytest.raises(ConfigError, match="top_n"):
        RerankConfig(top_n=0)
    with pytest.raises(ConfigError, match="consumer_share"):
        RetrieverTrainConfig(consumer_share=2)


def test_the_tuned_index_is_chosen_not_picked_up_and_its_reranker_goes_with_it(tmp_path, monkeypatch):
    """The base index stays the default when `make retriever` has built the tuned one (measured no better on the
    consumer questions); asked for, the tuned index brings its reranker."""
    from retriever.config import DEFAULT_INDEX, TUNED_INDEX, TUNED_RERANKER
    from retriever.loader import resolve_reranker

    monkeypatch.chdir(tmp_path)
    (tmp_path / TUNED_INDEX).mkdir(parents=True)
    (tmp_path / TUNED_INDEX / "manifest.json").write_text("{}")
    (tmp_path / TUNED_RERANKER).mkdir(parents=True)
    assert resolve_reranker(DEFAULT_INDEX, "") == ""
    assert resolve_reranker(TUNED_INDEX, "") == ""  # no reranker trained yet
    (tmp_path / TUNED_RERANKER / "config.json").write_text("{}")
    assert resolve_reranker(TUNED_INDEX, "") == TUNED_RERANKER and resolve_reranker(DEFAULT_INDEX, "") == ""
    assert resolve_reranker(str(tmp_path / TUNED_INDEX), "") == TUNED_RERANKER  # the same directory, spelt out
    assert resolve_reranker(TUNED_INDEX, "off") == ""  # turned off by config
    assert resolve_reranker("elsewhere/index", "") == ""
    assert resolve_reranker("elsewhere/index", "my/ce") == "my/ce"


def test_the_question_list_is_written_once_and_a_stale_one_is_refused(qa_data, qa_index, tmp_path):
    import shutil

    from core.errors import IndexCorruptError
    from index_build.questions import index_questions
    from retriever.entailment import QUESTIONS, Entailment, QuestionIndex

    copy = tmp_path / "index"
    shutil.copytree(qa_index, copy)
    with pytest.raises(IndexCorruptError, match="python -m index_build.questions"):
        Entailment.load(copy)
    logs: list[str] = []
    assert index_questions(copy, qa_data, logs.append) == 120 and len(logs) == 1  # 40 documents x 3 questions
    stamp = (copy / QUESTIONS).stat().st_mtime_ns
    assert index_questions(copy, qa_data, logs.append) == 120 and len(logs) == 1  # current: nothing written
    assert (copy / QUESTIONS).stat().st_mtime_ns == stamp
    e = Entailment.load(copy)
    assert len(e.questions.questions) == 120 and e.model is None
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["fingerprint"] = "another build"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="no question list for this index"):
        Entailment.load(copy)
    # the same question from several sources (one in lower case) is one entry answered by each of their records
    import numpy as np

    rows = [{"record_id": "a", "question": "What are the treatments for Gout ?"},
            {"record_id": "b", "question": "What are the treatments for gout?"},
            {"record_id": "c", "question": "What causes Gout ?"}]
    q = QuestionIndex.grouped(rows, np.eye(3, dtype=np.float32))
    assert q.questions == ["What are the treatments for Gout ?", "What causes Gout ?"]
    assert q.records == [["a", "b"], ["c"]] and q.vectors.shape == (2, 3)


class _FixedProbabilities:
    """Stands in for the entailment cross-encoder where the test is about what is done with its probabilities."""

    def __init__(self, probs: dict[str, float]):
        self.probs = probs

    def predict(self, pairs, **_):
        return [self.probs.get(answered, 0.0) for _, answered in pairs]


def test_entailed_records_are_fused_in_and_a_missed_record_comes_with_its_first_passage(qa_data, qa_index, tmp_path):
    import numpy as np

    from retriever.entailment import Entailment, QuestionIndex
    from retriever.search import IndexRetriever

    r = IndexRetriever.load(qa_index)
    rows = [{"record_id": "2:0000012:2", "question": "What are the symptoms of Zorbitis type 12 ?"},
            {"record_id": "2:0000013:2", "question": "What are the symptoms of Zorbitis type 13 ?"},
            {"record_id": "2:0000014:3", "question": "What are the treatments for Zorbitis type 14 ?"}]
    questions = QuestionIndex.grouped(rows, np.eye(3, dtype=np.float32))
    model = _FixedProbabilities({rows[0]["question"]: 0.9, rows[1]["question"]: 0.4, rows[2]["question"]: 0.7})
    e = Entailment(questions, model, candidates=3, threshold=0.5)
    entailed = e.entailed("zorbitis 12 symptoms", np.ones(3, dtype=np.float32))
    assert [(x[0], x[2]) for x in entailed] == [(rows[0]["question"], ["2:0000012:2"]),
                                              (rows[2]["question"], ["2:0000014:3"])]  # 0.4 is under the threshold
    ranked = [(i, 1.0) for i, p in enumerate(r.passages) if p.record_id == "2:0000013:1"][:1] + \
             [(i, 1.0) for i, p in enumerate(r.passages) if p.record_id == "2:0000014:3"][:1]
    fused = e.fuse("zorbitis 12 symptoms", np.ones(3, dtype=np.float32), ranked, r.passages, r._first_row)
    order = [r.passages[i].record_id for i, _ in fused]
    # 14:3 was ranked 2nd and entailed 2nd: 1/62 + 1/62; 12:2 was not retrieved, entailed 1st: 1/61; 13:1 1/61 alone
    assert order[0] == "2:0000014:3" and set(order[1:]) == {"2:0000012:2", "2:0000013:1"}
    assert dict((r.passages[i].record_id, s) for i, s in fused)["2:0000012:2"] == pytest.approx(1 / 61)
    assert r.passages[r._first_row["2:0000012:2"]].record_id == "2:0000012:2"
    # on the retriever: hybrid fuses it in, dense and BM25 stay plain
    on = IndexRetriever.load(qa_index, entailment=Entailment.load(_with_questions(qa_index, qa_data, tmp_path)))
    q = "What are the symptoms of Zorbitis type 12 ?"
    assert on.search(q, k=1)[0].passage.record_id == "2:0000012:2"
    assert on.search(q, k=5, mode="dense") == r.search(q, k=5, mode="dense")


def _with_questions(qa_index: Path, qa_data: Path, tmp_path: Path) -> Path:
    import shutil

    from index_build.questions import index_questions

    copy = tmp_path / "index-with-questions"
    shutil.copytree(qa_index, copy)
    index_questions(copy, qa_data, lambda _: None)
    return copy


def test_the_entailment_model_trains_without_reserved_questions_and_reads_entailment(qa_data, qa_index, tmp_path):
    from retriever.entailment import Entailment
    from retriever.search import IndexRetriever
    from train.entailment import short_form, train_entailment

    assert short_form("What is (are) Zorbitis type 3 ?") == "what is Zorbitis type 3?"
    pairs = tmp_path / "rqe.jsonl"
    pairs.write_text("".join(json.dumps({"id": str(n), "chq": f"my son has quuxitis {n}, what treats it?",
                                         "faq": f"What are the treatments for quuxitis {n} ?" if n % 2 else
                                         f"What is (are) quuxitis {n + 1} ?", "label": n % 2}) + "\n"
                         for n in range(20)))
    cfg = _cfg(qa_data, qa_index, tmp_path / "out", entailment_pairs=str(pairs), entailment_rewrites=24,
               entailment_batch_size=4, entailment_eval_steps=8, entailment_max_length=48)
    index = _with_questions(qa_index, qa_data, tmp_path)
    out = train_entailment(cfg, IndexRetriever.load(index), log=lambda _: None)
    rows = json.loads((tmp_path / "out" / "entailment-run" / "rows.json").read_text())
    assert rows["rqe"] == 20 and rows["rewrites"] == 24 and rows["held_out"]
    texts = " ".join(f"{x['question']} {x['answered']}" for x in rows["train"] + rows["held_out"])
    assert any(f"Zorbitis type {d} " in texts for d in range(8, 40))  # rewrites of the corpus questions
    assert not any(f"type {d} " in texts or f"type {d}?" in texts for d in range(8))  # reserved documents 0-7
    labels = {x["label"] for x in rows["train"]}
    assert labels == {0.0, 1.0}
    card = json.loads((out / "training_run.json").read_text())
    assert card["stage"] == "entailment" and "eval_dev_average_precision" in card["dev_after"]
    e = Entailment.load(index, str(out), candidates=3, threshold=0.0)
    found = e.entailed("zorbitis 12 symptoms", IndexRetriever.load(index).embed(["zorbitis 12 symptoms"])[0])
    assert len(found) == 3 and all(0.0 <= p <= 1.0 for _, p, _ in found)
    with pytest.raises(ModelLoadError, match="train-retriever entailment"):
        Entailment.load(index, str(tmp_path))
    with pytest.raises(ConfigError, match="entailment_threshold"):
        RerankConfig(entailment_threshold=1.5)
    from retriever.loader import load_retriever

    assert load_retriever(str(index), RerankConfig(entailment="off")).entailment is None  # as the error suggests
    served = load_retriever(str(index), RerankConfig(entailment=str(out), entailment_threshold=0.0))
    assert served.stages()["entailment"] == "model" and served.entailment.threshold == 0.0
