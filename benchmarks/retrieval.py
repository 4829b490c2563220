"""Retrieval benchmark: quality per mode on the MedQuAD dev split, and two overhead ratios, in one run.

    .venv/bin/python benchmarks/retrieval.py [--index artifacts/index] [--data-dir ../shared/data]

1. recall@1/5/10 and MRR@10 for bm25, dense, hybrid on splits/medquad_dev.jsonl. A hit is any passage of the
   gold record (gold ids merged as exact duplicates at build time are resolved to the record that kept the
   text). Targets: hybrid recall@5 >= 1.05 x BM25's; dense >= 0.95 x BM25's.
2. index_build embedding throughput / plain `SentenceTransformer.encode` over the same texts, batch size and
   threads, measured A/B/A/B in this run (target >= 0.9).
3. `retrieve()` latency (dense mode) / (bare query encode + bare FAISS search), interleaved per query
   (target <= 1.1). Hybrid latency is reported alongside.

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

from core.config import IndexConfig, default_data_dir  # noqa: E402
from index_build.build import embed_in_shards  # noqa: E402
from retriever.index_dir import embed_text  # noqa: E402
from retriever.search import IndexRetriever  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def quality(r: IndexRetriever, dev: list[dict]) -> dict:
    out = {}
    for mode in ("bm25", "dense", "hybrid"):
        ranks = []
        for row in dev:
            gold = r.resolve_record(row["gold_medquad_id"])
            hits = r.search(row["question"], k=10, mode=mode)
            ranks.append(next((h.rank for h in hits if h.passage.record_id == gold), None))
        n = len(ranks)
        out[mode] = {f"recall@{k}": round(sum(1 for x in ranks if x and x <= k) / n, 4) for k in (1, 5, 10)}
        out[mode]["mrr@10"] = round(sum(1 / x for x in ranks if x) / n, 4)
    out["ratios"] = {"hybrid_over_bm25_recall@5": round(out["hybrid"]["recall@5"] / out["bm25"]["recall@5"], 3),
                     "dense_over_bm25_recall@5": round(out["dense"]["recall@5"] / out["bm25"]["recall@5"], 3)}
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--passages", type=int, default=512, help="texts for the throughput ratio")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    r = IndexRetriever.load(args.index)
    dev = [json.loads(line) for line in (Path(args.data_dir) / "splits" / "medquad_dev.jsonl").read_text().splitlines()]
    res = {"index": r.fingerprint[:12], "passages": len(r.passages), "dev_questions": len(dev),
           "threads": __import__("torch").get_num_threads()}
    res["quality"] = quality(r, dev)
    print(json.dumps(res["quality"], indent=1))
    res["latency"] = latency(r, [d["question"] for d in dev[:100]])
    print(json.dumps(res["latency"], indent=1))
    res["throughput"] = throughput(r, args.passages, args.reps)
    print(json.dumps(res["throughput"], indent=1))
    res["targets_met"] = {
        "hybrid_recall@5 >= 1.05 x bm25": res["quality"]["ratios"]["hybrid_over_bm25_recall@5"] >= 1.05,
        "dense_recall@5 >= 0.95 x bm25": res["quality"]["ratios"]["dense_over_bm25_recall@5"] >= 0.95,
        "index_build throughput >= 0.9 x plain encode": res["throughput"]["ratio"] >= 0.9,
        "retrieve latency <= 1.1 x bare": res["latency"]["ratio_dense_retrieve_over_bare"] <= 1.1,
    }
    print(json.dumps(res["targets_met"], indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrieval.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {RESULTS / 'retrieval.json'}")


if __name__ == "__main__":
    main()
