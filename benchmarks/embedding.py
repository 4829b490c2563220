"""Index-build embedding: the served backend (OpenVINO) against a plain sentence-transformers fp32 loop, and the
index each gives, measured on both rulers.

    .venv/bin/python benchmarks/embedding.py --index artifacts/index --fp32-index artifacts/index-fp32
    (artifacts/index-fp32: `medcite index --embed-backend torch --out artifacts/index-fp32`, ~17 min here)

1. Throughput on the same `--passages` passages (a seeded sample of the index's, so lengths are the corpus's),
   side by side, arms interleaved and their order alternated per rep (A B C D, then D C B A):
   - `plain_loop`: `SentenceTransformer.encode` on PyTorch fp32, one call per batch of `batch_size` passages in
     corpus order (the loop an index builder writes first);
   - `st_encode`: one `encode` call over all passages (sentence-transformers sorts them by length itself);
   - `torch_job`: the index build's embedding stage on the torch backend (token-length-sorted shards);
   - `openvino_job`: the index build's embedding stage on the served backend (OpenVINO, throughput mode, at the
     precision the CPU computes natively: bf16 on AMX / AVX512-BF16, else fp32).
   Ratios are medians of per-rep ratios. Target: openvino_job >= 4x plain_loop.
2. Fidelity: cosine of the served backend's vectors to sentence-transformers' fp32 vectors (mean, min).
3. Retrieval: recall@5 (with bootstrap intervals) of dense, hybrid and the served retrieval (the answer pipeline's
   retrieve with the conditional question-type prior, as benchmarks/retrieval.py's `served`; evaluation.rulers: 200
   MedQuAD dev questions, 49 linked consumer dev questions, the 7 linked messages) on `--index` against
   `--fp32-index`, built from the same corpus with `embed_backend: torch`; paired differences with intervals.
   Target: served and hybrid recall@5 within 0.005 of fp32 on both rulers.

Timings here swing 3-8x between runs: only the ratios inside one run are compared. Writes
benchmarks/results/embedding.json.
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

from benchmarks.retrieval import gold_ranks  # noqa: E402
from core.config import default_data_dir  # noqa: E402
from core.files import atomic_write_json  # noqa: E402
from evaluation.rulers import recall_summary, rulers  # noqa: E402
from evaluation.stats import mean_ci  # noqa: E402
from index_build.config import IndexConfig  # noqa: E402
from index_build.shards import embed_in_shards  # noqa: E402
from retriever import index_dir as fmt  # noqa: E402
from retriever.embedder import load_embedder  # noqa: E402
from retriever.index_dir import embed_text  # noqa: E402
from retriever.search import IndexRetriever  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = ("plain_loop", "st_encode", "torch_job", "openvino_job")


def throughput(model_dir: Path, texts: list[str], batch_size: int, reps: int, threads: int) -> dict:
    torch_model = load_embedder(str(model_dir), threads)
    ov_model = load_embedder(str(model_dir), threads, backend="openvino", throughput=True)
    cfg = IndexConfig(batch_size=batch_size, shard_size=4096, threads=threads)

    def plain_loop() -> None:
        for b in range(0, len(texts), batch_size):
            torch_model.encode(texts[b:b + batch_size], batch_size=batch_size, normalize_embeddings=True,
                               show_progress_bar=False)

    def st_encode() -> None:
        torch_model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)

    def job(model) -> None:
        with tempfile.TemporaryDirectory() as work:
            embed_in_shards(model, texts, Path(work), cfg, log=lambda _: None, progress=False)

    fns = {"plain_loop": plain_loop, "st_encode": st_encode, "torch_job": lambda: job(torch_model),
           "openvino_job": lambda: job(ov_model)}
    rates: dict[str, list[float]] = {a: [] for a in ARMS}
    for rep in range(reps):
        for arm in ARMS if rep % 2 == 0 else ARMS[::-1]:
            t = time.perf_counter()
            fns[arm]()
            rates[arm].append(len(texts) / (time.perf_counter() - t))
        print(f"rep {rep}: " + ", ".join(f"{a} {rates[a][-1]:.1f}/s" for a in ARMS), flush=True)
    ratios = {f"{a}_over_plain_loop": round(statistics.median(x / p for x, p in zip(rates[a], rates["plain_loop"],
                                                                                     strict=True)), 3)
              for a in ARMS[1:]}
    ratios["openvino_job_over_st_encode"] = round(statistics.median(
        x / p for x, p in zip(rates["openvino_job"], rates["st_encode"], strict=True)), 3)

    import numpy as np

    ref = torch_model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    got = ov_model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    cos = (np.asarray(ref) * got).sum(1)
    return {"passages": len(texts), "batch_size": batch_size, "threads": threads, "reps": reps,
            "precision": ov_model.precision,
            "passages_per_s": {a: [round(x, 1) for x in v] for a, v in rates.items()}, "ratios": ratios,
            "cosine_to_fp32": {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}}


def paired(a: list[int | None], b: list[int | None], k: int = 5) -> dict:
    """b minus a, question by question (1 = found in the top k), with a bootstrap interval."""
    diff = [float(bool(y and y <= k)) - float(bool(x and x <= k)) for x, y in zip(a, b, strict=True)]
    ci = mean_ci(diff)
    return {"mean": round(ci["mean"], 4), "ci95": [round(ci["ci_low"], 4), round(ci["ci_high"], 4)],
            "questions_changed": sum(1 for d in diff if d)}


def retrieval(index: IndexRetriever, fp32: IndexRetriever, sets: dict[str, list[dict]]) -> dict:
    out: dict = {}
    for ruler, rows in sets.items():
        out[ruler] = {}
        for arm, mode, pipeline in (("dense", "dense", False), ("hybrid", "hybrid", False),
                                    ("served", "hybrid", True)):
            fp32.qtype_prior = index.qtype_prior = pipeline  # served: with the conditional question-type prior
            a = gold_ranks(fp32, rows, mode, pipeline=pipeline)
            b = gold_ranks(index, rows, mode, pipeline=pipeline)
            out[ruler][arm] = {"fp32": recall_summary(a)["recall@5"], "served_backend": recall_summary(b)["recall@5"],
                               "difference": paired(a, b)}
        print(ruler, json.dumps({m: v["difference"]["mean"] for m, v in out[ruler].items()}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default="artifacts/index", help="an index built with the served backend")
    ap.add_argument("--fp32-index", default="artifacts/index-fp32", help="the same corpus, embed_backend torch")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--passages", type=int, default=768)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--parts", default="throughput,retrieval")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    threads = args.threads or os.cpu_count() or 1
    index = IndexRetriever.load(args.index)
    out_file = RESULTS / "embedding.json"
    res = json.loads(out_file.read_text()) if out_file.is_file() else {}
    runs = res.get("runs", {})  # which command measured which part (a later run may redo one part only)
    for part in parts:
        runs[part] = {"command": " ".join(["python benchmarks/embedding.py", *sys.argv[1:]]),
                      "date": time.strftime("%Y-%m-%d")}
    res.update({"runs": runs, "command": " and ".join(sorted({r["command"] for r in runs.values()})),
                "date": max(r["date"] for r in runs.values()), "index": index.fingerprint[:12], "embedder": index.manifest["embedder"]["name"],
                "cpu_flags_bf16": _bf16_flags()})
    if "throughput" in parts:
        rng = random.Random(0)
        sample = sorted(rng.sample(range(len(index.passages)), min(args.passages, len(index.passages))))
        texts = [embed_text(index.passages[i]) for i in sample]  # corpus order, the plain loop's order
        res["throughput"] = throughput(index.root / fmt.EMBEDDER_DIR, texts, index.manifest["config"]["batch_size"],
                                       args.reps, threads)
        print(json.dumps(res["throughput"], indent=1), flush=True)
    if "retrieval" in parts:
        fp32 = IndexRetriever.load(args.fp32_index)
        if fp32.manifest["embedder"].get("backend", "torch") != "torch":
            sys.exit(f"error: {args.fp32_index} was not embedded with the torch backend")
        res["fp32_index"] = fp32.fingerprint[:12]
        res["index_backend"] = {k: index.manifest["embedder"].get(k) for k in ("backend", "precision")}
        res["retrieval"] = retrieval(index, fp32, rulers(args.data_dir))
    t, q = res.get("throughput"), res.get("retrieval")
    res["targets_met"] = {
        **({"openvino_job >= 4x plain_loop": t["ratios"]["openvino_job_over_plain_loop"] >= 4.0} if t else {}),
        **({f"{ruler} {arm} recall@5 within 0.005 of fp32": abs(q[ruler][arm]["difference"]["mean"]) <= 0.005
            for ruler in ("medquad_dev", "consumer") for arm in ("hybrid", "served")} if q else {})}
    print(json.dumps(res["targets_met"], indent=1))
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(out_file, res)
    print(f"wrote {out_file}")


def _bf16_flags() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({f for f in flags if "bf16" in f})


if __name__ == "__main__":
    main()
