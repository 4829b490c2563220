"""Retrieval benchmark: quality per mode on both rulers (MedQuAD dev and real consumer questions), and two
overhead ratios, in one run.

    .venv/bin/python benchmarks/retrieval.py [--index artifacts/index] [--data-dir ../shared/data]
    .venv/bin/python benchmarks/retrieval.py --parts quality,qtype     # the rulers and the prior only (~10 min)

1. recall@1/3/5/10 and MRR@10, each with a bootstrap interval, for bm25, dense, hybrid and `served` (hybrid with
   the conditional question-type prior, the default) on the two rulers of evaluation.rulers: the 200 MedQuAD dev
   questions and the 49 linked consumer dev questions (../shared/data/consumer), and the 7 linked consumer
   messages among them as their own row. A hit is any passage of a relevant record (ids merged as exact
   duplicates at build time are resolved to the record that kept the text). Targets: hybrid recall@5 >= 1.05 x
   BM25's and dense >= 0.95 x BM25's on dev; served >= plain hybrid and >= 0.80 on consumer questions.
2. index_build embedding throughput / plain `SentenceTransformer.encode` over the same texts, batch size and
   threads, measured A/B/A/B in this run (target >= 0.9).
3. `retrieve()` latency (dense mode) / (bare query encode + bare FAISS search), interleaved per query
   (target <= 1.1). Hybrid latency is reported alongside.

5. `--parts qtype`: hybrid without the question-type prior, with it unconditionally and with it conditional on
   the title naming the question's subject (MedQuAD titles carry the question type: "Gout: treatment"), on both
   rulers and the patient-style rewrites, the conditional prior paired against plain hybrid.

4. With `--tuned-index` (and `--reranker`): the domain-tuned retriever side by side with the base index, on the
   200 dev questions and on the linked consumer dev questions: record-level recall@1/5/10 and MRR@10 of hybrid retrieval for base,
   tuned, tuned + reranker (its order, and its order fused with the hybrid one: rerank.fuse); retrieve latency p50
   of each, interleaved query by query (target: tuned without the reranker <= 1.5x base; the reranker's added
   latency is reported); and the training cards (time, peak memory).
   Targets on dev: hybrid recall@5 >= 0.95 and recall@1 >= 0.70; no loss on the consumer set.

Timings on this machine swing 3-8x, so only ratios of side-by-side measurements are reported.
Writes benchmarks/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import default_data_dir  # noqa: E402
from core.files import atomic_write_json  # noqa: E402
from evaluation.rulers import recall_summary, rulers  # noqa: E402
from index_build.config import IndexConfig  # noqa: E402
from index_build.shards import embed_in_shards  # noqa: E402
from retriever.index_dir import embed_text  # noqa: E402
from retriever.search import IndexRetriever  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def gold_ranks(r: IndexRetriever, rows: list[dict], mode: str, per_record: bool = True,
               pipeline: bool = False) -> list[int | None]:
    """Rank of the first relevant record (evaluation.rulers rows: "relevant" record ids, merged duplicates
    resolved) in the top 10, or None. `pipeline`: retrieved as the answer pipeline retrieves (pipeline.answer.retrieve:
    a question's parts, a consumer message's subject line and asks)."""
    from pipeline.answer import retrieve

    ranks = []
    for row in rows:
        gold = {r.resolve_record(x) for x in row["relevant"]}
        hits = (retrieve(row["question"], r, 10, mode) if pipeline
                else r.search(row["question"], k=10, mode=mode, per_record=per_record))
        ranks.append(next((h.rank for h in hits if h.passage.record_id in gold), None))
    return ranks


def recall(ranks: list[int | None]) -> dict:
    return recall_summary(ranks)


RULERS = ("medquad_dev", "consumer", "consumer_messages")


def quality(r: IndexRetriever, sets: dict[str, list[dict]]) -> dict:
    """Each mode on both rulers (and the consumer messages alone); `hybrid+qtype` adds the conditional
    question-type prior; `served` is what the answer pipeline retrieves with it (pipeline.answer.retrieve: parts,
    a message's subject line and asks), as serve.yaml serves it."""
    out: dict = {}
    for ruler in RULERS:
        rows = sets[ruler]
        out[ruler] = {}
        r.qtype_prior = False
        for mode in ("bm25", "dense", "hybrid"):
            out[ruler][mode] = recall(gold_ranks(r, rows, mode))
        r.qtype_prior = True
        out[ruler]["hybrid+qtype"] = recall(gold_ranks(r, rows, "hybrid"))
        out[ruler]["served"] = recall(gold_ranks(r, rows, "hybrid", pipeline=True))
        r.qtype_prior = False
        print(ruler, json.dumps({m: v["recall@5"] for m, v in out[ruler].items()}), flush=True)
    # before record-level results: the top 10 passages (a record's neighbouring chunks take several places)
    out["medquad_dev"]["hybrid_passage_level"] = recall(gold_ranks(r, sets["medquad_dev"], "hybrid",
                                                                   per_record=False))
    d = out["medquad_dev"]
    out["ratios"] = {"hybrid_over_bm25_recall@5": round(d["hybrid"]["recall@5"] / d["bm25"]["recall@5"], 3),
                     "dense_over_bm25_recall@5": round(d["dense"]["recall@5"] / d["bm25"]["recall@5"], 3)}
    return out


def throughput(r: IndexRetriever, n: int, reps: int) -> dict:
    cfg = IndexConfig(**{**r.manifest["config"], "corpora": tuple(r.manifest["config"]["corpora"])})
    rng = random.Random(0)
    texts = [embed_text(p) for p in rng.sample(r.passages, min(n, len(r.passages)))]
    model = r.embedder
    def run_job() -> float:
        with tempfile.TemporaryDirectory() as work:
            t = time.perf_counter()
            embed_in_shards(model, texts, Path(work), cfg, log=lambda _: None, progress=False)
            return len(texts) / (time.perf_counter() - t)

    def run_plain() -> float:
        t = time.perf_counter()
        model.encode(texts, batch_size=cfg.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
        return len(texts) / (time.perf_counter() - t)

    job, plain = [], []
    for rep in range(reps):  # A B, then B A: neither side always runs first
        for fn, out in ((run_job, job), (run_plain, plain))[:: 1 if rep % 2 == 0 else -1]:
            out.append(fn())
    return {"passages": len(texts), "batch_size": cfg.batch_size, "reps": reps,
            "index_build_passages_per_s": [round(x, 1) for x in job],
            "plain_encode_passages_per_s": [round(x, 1) for x in plain],
            "ratio": round(statistics.median(job) / statistics.median(plain), 3)}


def latency(r: IndexRetriever, questions: list[str]) -> dict:
    bare, dense, hybrid = [], [], []

    def run_bare(q: str) -> None:
        t = time.perf_counter()
        vec = r.embedder.encode([q], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        r.dense.search(vec.astype("float32"), 5)
        bare.append(time.perf_counter() - t)

    def run_search(q: str, mode: str, out: list) -> None:
        t = time.perf_counter()
        r.search(q, k=5, mode=mode)
        out.append(time.perf_counter() - t)

    for i, q in enumerate(questions):  # alternate which side goes first, query by query
        steps = [(run_bare, (q,)), (run_search, (q, "dense", dense)), (run_search, (q, "hybrid", hybrid))]
        for fn, args in steps if i % 2 == 0 else steps[::-1]:
            fn(*args)
    med = {k: statistics.median(v) * 1000 for k, v in (("bare", bare), ("dense", dense), ("hybrid", hybrid))}
    return {"queries": len(questions), "p50_ms": {k: round(v, 2) for k, v in med.items()},
            "ratio_dense_retrieve_over_bare": round(med["dense"] / med["bare"], 3),
            "ratio_hybrid_retrieve_over_bare": round(med["hybrid"] / med["bare"], 3)}


def int8_queries(r: IndexRetriever, dev: list[dict]) -> dict:
    """Issue 14's embedder question: torch's dynamic int8 quantization of the embedder's Linear layers for query
    encoding (the index keeps its fp32 vectors). Adopted only if dev recall stays within 0.5 points."""
    import copy

    import torch

    if r.manifest["embedder"].get("backend", "torch") != "torch":  # its successor: benchmarks/embedding.py
        return {"skipped": f"the index's embed backend is {r.manifest['embedder']['backend']}, not torch"}
    fp32 = r.embedder
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    assert any("quantized" in type(m).__module__ for m in int8.modules()), "no Linear layer was quantized"
    out, times = {}, {"fp32": [], "int8": []}
    for name, model in (("fp32", fp32), ("int8", int8)):
        r.embedder = model
        out[name] = {m: recall(gold_ranks(r, dev, m)) for m in ("dense", "hybrid")}
    qs = [d["question"] for d in dev[:100]]
    for i, q in enumerate(qs):
        for name, model in ((("fp32", fp32), ("int8", int8)) if i % 2 == 0 else (("int8", int8), ("fp32", fp32))):
            t = time.perf_counter()
            model.encode([q], normalize_embeddings=True, show_progress_bar=False)
            times[name].append(time.perf_counter() - t)
    r.embedder = fp32
    p50 = {n: round(statistics.median(v) * 1000, 2) for n, v in times.items()}
    drop = round((out["fp32"]["hybrid"]["recall@5"] - out["int8"]["hybrid"]["recall@5"]) * 100, 2)
    return {"recall": out, "query_encode_p50_ms": p50, "speedup": round(p50["fp32"] / p50["int8"], 3),
            "hybrid_recall@5_drop_points": drop, "adopt": drop <= 0.5 and p50["int8"] < p50["fp32"]}


def reranker_summary(out: dict, top_n: int) -> dict:
    """The reranker's added latency and its gain over the tuned index alone, replacing or fused with its order."""
    p50 = out["latency_p50_ms"]
    return {"top_n": top_n, "added_ms_p50": round(p50["tuned+rerank"] - p50["tuned"], 2),
            **{f"gain_{how}": {f"{split}_{m}": round(out[split][arm][m] - out[split]["tuned"][m], 4)
                               for split in ("dev", "consumer") for m in ("recall@1", "recall@5")}
               for how, arm in (("replace", "tuned+rerank"), ("fused", "tuned+rerank-fused"))}}


def tuned_comparison(base: IndexRetriever, tuned_index: str, reranker_dir: str, dev: list[dict],
                     consumer: list[dict], top_n: int, served_only: bool = False) -> dict:
    from retriever.rerank import Reranker

    tuned = IndexRetriever.load(tuned_index)
    arms = {"base": base, "tuned": tuned}
    if reranker_dir and not served_only:  # the reranker's own arms (each ~0.5 s a question here)
        arms["tuned+rerank"] = IndexRetriever.load(tuned_index, reranker=Reranker.load(reranker_dir, top_n=top_n,
                                                                                      fuse=False))
        arms["base+rerank"] = IndexRetriever.load(base.root, reranker=arms["tuned+rerank"].reranker)
        arms["tuned+rerank-fused"] = IndexRetriever.load(tuned_index, reranker=Reranker(
            arms["tuned+rerank"].reranker.model, top_n=top_n, fuse=True))
    # as served: the conditional question-type prior on both, and on the tuned index the fused reranker that
    # resolve_reranker serves with it (rerank.top_n, rerank.fuse): what `make retriever` changes for a user
    from retriever.config import RerankConfig

    served_cfg = RerankConfig()
    arms["base served"] = IndexRetriever.load(base.root, qtype_prior=True)
    arms["tuned served"] = IndexRetriever.load(tuned_index, qtype_prior=True, reranker=Reranker.load(
        reranker_dir, top_n=served_cfg.top_n, fuse=served_cfg.fuse) if reranker_dir else None)
    out: dict = {"dev": {}, "consumer": {}}
    hits: dict[str, dict[str, list[float]]] = {"dev": {}, "consumer": {}}
    for name, r in arms.items():
        for split, rows in (("dev", dev), ("consumer", consumer)):
            ranks = gold_ranks(r, rows, "hybrid")
            out[split][name] = recall(ranks)
            hits[split][name] = [1.0 if x and x <= 5 else 0.0 for x in ranks]
            hits[split][name + "@1"] = [1.0 if x == 1 else 0.0 for x in ranks]
        print(name, json.dumps({"dev": out["dev"][name], "consumer": out["consumer"][name]}), flush=True)
    from evaluation.stats import paired_bootstrap

    out["served_tuned_minus_base"] = {
        split: {f"recall@{k}": paired_bootstrap(hits[split]["tuned served" + suffix], hits[split]["base served" + suffix])
                for k, suffix in ((1, "@1"), (5, ""))} for split in ("dev", "consumer")}
    print("served, tuned - base:", json.dumps(out["served_tuned_minus_base"]), flush=True)
    times: dict[str, list[float]] = {n: [] for n in arms}
    for i, row in enumerate(dev[:100]):  # query by query, the order alternating
        for name in list(arms)[:: 1 if i % 2 == 0 else -1]:
            t = time.perf_counter()
            arms[name].search(row["question"], k=5, mode="hybrid")
            times[name].append(time.perf_counter() - t)
    p50 = {n: round(statistics.median(v) * 1000, 2) for n, v in times.items()}
    out["latency_p50_ms"] = p50
    out["latency_ratio_tuned_over_base"] = round(p50["tuned"] / p50["base"], 3)
    out["latency_ratio_served_tuned_over_base"] = round(p50["tuned served"] / p50["base served"], 3)
    if reranker_dir and not served_only:
        out["reranker"] = reranker_summary(out, top_n)
    cards = {}
    for name, path in (("embedder", Path(tuned_index) / "embedder" / "training_run.json"),
                       ("reranker", Path(reranker_dir or "-") / "training_run.json")):
        if path.is_file():
            c = json.loads(path.read_text())
            cards[name] = {k: c.get(k) for k in ("pairs", "consumer_pairs", "queries", "rows", "train_seconds",
                                                  "peak_rss_mib", "best_checkpoint")}
    out["training"] = cards
    out["consumer_questions"] = len(consumer)
    return out


def qtype_comparison(r: IndexRetriever, sets: dict[str, list[dict]]) -> dict:
    """Hybrid without the question-type prior, with it unconditionally (every record of the asked type, the old
    default), and conditional (only records whose title names what the question is about: the default), same
    index, same questions, on both rulers and the patient-style rewrites; recall@3 is the share whose relevant
    record is among the 3 passages a default prompt shows. The conditional prior against plain hybrid is paired
    per question (evaluation.stats.paired_bootstrap of recall@5 hits)."""
    from evaluation.stats import paired_bootstrap

    out: dict = {}
    conditional = r.focus_terms
    for split, rows in sets.items():
        hits: dict[str, list[float]] = {}
        for arm in ("hybrid", "hybrid+qtype", "hybrid+qtype_conditional"):
            r.qtype_prior = arm != "hybrid"
            r.focus_terms = None if arm == "hybrid+qtype" else conditional  # None: the prior without its condition
            ranks = gold_ranks(r, rows, "hybrid")
            out.setdefault(split, {})[arm] = recall(ranks)
            hits[arm] = [1.0 if x and x <= 5 else 0.0 for x in ranks]
        out[split]["conditional_minus_plain_recall@5"] = paired_bootstrap(hits["hybrid+qtype_conditional"],
                                                                          hits["hybrid"])
        print(split, json.dumps({a: v["recall@5"] for a, v in out[split].items() if "recall@5" in v}), flush=True)
    r.qtype_prior, r.focus_terms = False, conditional
    return out


def patient_style(data_dir: str) -> list[dict]:
    """Patient-style rewrites of MedQuAD questions from reserved documents (train.data.consumer_eval_set)."""
    from train.config import RetrieverTrainConfig
    from train.data import consumer_eval_set

    return [{"id": str(i), "question": x["question"], "relevant": [x["gold_medquad_id"]]}
            for i, x in enumerate(consumer_eval_set(RetrieverTrainConfig(data_dir=data_dir), n=200))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--passages", type=int, default=512, help="texts for the throughput ratio")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tuned-index", default="", help="an index built with the tuned embedder (part 4)")
    ap.add_argument("--reranker", default="", help="a trained cross-encoder directory (part 4)")
    ap.add_argument("--top-n", type=int, default=20, help="results the reranker rescores (20 is recorded as `tuned`, "
                    "others as `tuned_top<n>`)")
    ap.add_argument("--served-only", action="store_true", help="part 4: with --reranker, only base and tuned as "
                    "served (the reranker's own arms, ~0.5 s a question each, left out)")
    ap.add_argument("--parts", default="quality,latency,throughput,tuned,int8")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    r = IndexRetriever.load(args.index)
    sets = rulers(args.data_dir)
    dev = sets["medquad_dev"]
    out_file = RESULTS / "retrieval.json"
    res = json.loads(out_file.read_text()) if out_file.is_file() else {}
    res.update({"index": r.fingerprint[:12], "passages": len(r.passages), "dev_questions": len(dev),
                "consumer_questions": len(sets["consumer"]), "consumer_messages": len(sets["consumer_messages"]),
                "threads": __import__("torch").get_num_threads()})
    if "quality" in parts:
        res["quality"] = quality(r, sets)
        print(json.dumps(res["quality"], indent=1))
    if "latency" in parts:
        res["latency"] = latency(r, [d["question"] for d in dev[:100]])
        print(json.dumps(res["latency"], indent=1))
    if "throughput" in parts:
        res["throughput"] = throughput(r, args.passages, args.reps)
        print(json.dumps(res["throughput"], indent=1))
    if "int8" in parts:
        res["int8_query_encoder"] = int8_queries(r, dev)
        print("int8", json.dumps(res["int8_query_encoder"]), flush=True)
    if "qtype" in parts:
        res["qtype_prior"] = qtype_comparison(r, {**sets, "patient_style": patient_style(args.data_dir)})
    if "tuned" in parts and args.tuned_index:
        # top_n 20 is the recorded default; other values are kept beside it
        res["tuned" if args.top_n == 20 else f"tuned_top{args.top_n}"] = tuned_comparison(
            r, args.tuned_index, args.reranker, dev, sets["consumer"], args.top_n, args.served_only)
    res["targets_met"] = {
        "hybrid_recall@5 >= 1.05 x bm25": res["quality"]["ratios"]["hybrid_over_bm25_recall@5"] >= 1.05,
        "served recall@5 on consumer questions >= plain hybrid's": (
            res["quality"]["consumer"]["served"]["recall@5"] >= res["quality"]["consumer"]["hybrid"]["recall@5"]),
        "served recall@5 on consumer questions >= 0.80": res["quality"]["consumer"]["served"]["recall@5"] >= 0.80,
        "dense_recall@5 >= 0.95 x bm25": res["quality"]["ratios"]["dense_over_bm25_recall@5"] >= 0.95,
        "index_build throughput >= 0.9 x plain encode": res["throughput"]["ratio"] >= 0.9,
        "retrieve latency <= 1.1 x bare": res["latency"]["ratio_dense_retrieve_over_bare"] <= 1.1,
    }
    if "tuned" in res:
        t = res["tuned"]
        for arm in [a for a in ("tuned", "tuned+rerank-fused") if a in t["dev"]]:  # embedder alone; the default
            res["targets_met"].update({
                f"{arm} dev hybrid recall@5 >= 0.95": t["dev"][arm]["recall@5"] >= 0.95,
                f"{arm} dev hybrid recall@1 >= 0.70": t["dev"][arm]["recall@1"] >= 0.70,
                f"{arm} consumer recall@1 and @5 >= base": all(
                    t["consumer"][arm][m] >= t["consumer"]["base"][m] for m in ("recall@1", "recall@5"))})
        res["targets_met"]["tuned retrieve latency p50 <= 1.5 x base"] = t["latency_ratio_tuned_over_base"] <= 1.5
    print(json.dumps(res["targets_met"], indent=1))
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(out_file, res)
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
