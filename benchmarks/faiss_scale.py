"""Compressed FAISS indexes: recall@10 against flat, memory per vector and query latency on the real corpus, the
nprobe each needs, the same codes with a refine store, hybrid recall on dev with the chosen ones, and on synthetic
vectors how build time, memory and latency grow with N.

    .venv/bin/python benchmarks/faiss_scale.py [--index $PWD/artifacts/index] [--sizes 100000,1000000,5000000]
                                                # -> benchmarks/results/faiss_scale.json (~40 min here)

1. Real corpus: the flat index's vectors (reconstructed, no re-embedding); queries are the 200 dev questions
   embedded by the index's embedder; ground truth the flat top-10. Each factory string is trained on a seeded
   sample and filled shard by shard (index_build.build.build_factory); nprobe rises until recall@10 >= 0.95
   (FAISS ParameterSpace). Memory per vector = serialized index bytes / N (the index is memory-mapped at load).
2. Refined: the PQ codes' top k_factor x 10 re-ranked by exact inner product against the floats (faiss
   IndexRefine over a memory-mapped IndexFlatIP: `faiss_refine` of `medcite index`). The codes are what must
   sit in memory; the floats are a disk store of which a query reads k_factor x 10 rows.
3. Hybrid R@5 on dev with the chosen indexes in place of flat (a copy of the index directory, loaded as served).
4. Synthetic: clustered random vectors (384-d) at each size, the chosen factory string: train + add CPU
   seconds (process time, all threads: other jobs on the box do not inflate it), bytes per vector, p50
   single-query CPU ms at the chosen nprobe, recall@10 against exact search with and without the refine store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import atomic_write_json  # noqa: E402

# Measured here too and left out (slower to train, no better at this size): IVF_HNSW32,PQ48 (recall@10 0.71),
# OPQ48,IVF_HNSW32,PQ48 (0.79), OPQ32,IVF_HNSW32,PQ32 (0.72), IVF_HNSW32,PQ128 (0.87); a flat refine (RFlat) keeps
# every float, so it is no compression.
CANDIDATES = ["IVF{nlist},SQ8", "IVF{nlist},PQ48", "IVF{nlist},PQ96", "IVF{nlist},PQ128"]
REFINE_BASES = ["IVF{nlist},PQ48", "IVF{nlist},PQ128"]
K_FACTORS = (2, 4, 8)
# the refine store is written through an in-memory IndexFlatIP (a second copy of the floats): at 5M x 384 that is
# 15.4 GB at its peak, which fits this 24 GB box only with nothing else large running; after it is written the
# vectors are dropped and the exact search reads the memory-mapped store (7.7 GB in page cache)
REFINE_SYNTHETIC_MAX = 5_000_000
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)


def recall_at(found, truth, k: int = 10) -> float:
    return statistics.fmean(len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True))


def bytes_of(index) -> int:
    import faiss

    with tempfile.NamedTemporaryFile() as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


def tune(index, queries, truth) -> tuple[int, float]:
    """The smallest nprobe reaching recall@10 >= 0.95 (or the best there is)."""
    import faiss

    ps, best = faiss.ParameterSpace(), (NPROBES[-1], 0.0)
    for nprobe in NPROBES:
        ps.set_index_parameters(index, f"nprobe={nprobe}")
        r = recall_at(index.search(queries, 10)[1].tolist(), truth)
        if r >= 0.95:
            return nprobe, round(r, 4)
        best = (nprobe, round(r, 4))
    return best


def synthetic(n: int, dim: int = 384, centers: int = 2000, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype("float32")
    out = np.empty((n, dim), dtype="float32")
    for start in range(0, n, 200_000):
        m = min(200_000, n - start)
        out[start:start + m] = c[rng.integers(0, centers, m)] + 0.6 * rng.standard_normal((m, dim), dtype="float32")
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def cpu_s(fn):
    """fn's result and the CPU seconds this process spent on it (all threads): robust to other jobs on the box,
    where wall time swings 3-8x."""
    t = time.process_time()
    out = fn()
    return out, round(time.process_time() - t, 2)


def p50_cpu_ms(index, queries) -> float:
    times = []
    for q in queries:
        t = time.process_time()
        index.search(q[None, :], 10)
        times.append((time.process_time() - t) * 1000)
    return round(statistics.median(times), 4)


def refined(index, flat, k_factor: int):
    """index's candidates (k_factor x k of them) re-ranked by exact inner product against the flat floats: what
    retriever.search assembles for an index built with faiss_refine."""
    import faiss

    out = faiss.IndexRefine(index, flat)
    out.k_factor = float(k_factor)
    return out


def r_at_5(r, dev: list[dict]) -> float:
    hits = [r.search(d["question"], k=5, mode="hybrid") for d in dev]
    return statistics.fmean(r.resolve_record(d["gold_medquad_id"]) in {r.resolve_record(h.passage.record_id)
                                                                          for h in hs}
                            for d, hs in zip(dev, hits, strict=True))


def table(result: dict) -> str:
    """The docs' table of this benchmark, rendered from its results file (tests check they agree)."""
    real, hybrid = result["real_corpus"], result["hybrid_dev"]
    lines = [f"Measured by `{result['command']}` ({result['date']}, FAISS {result['faiss']}, "
             f"{real['n']:,} passages x {real['dim']}, 200 dev questions, recall@10 against flat; size = the codes "
             "that sit in memory; with refine, the floats stay on disk, memory-mapped, and only candidates' rows "
             "are read):", "",
             "| index | nprobe | recall@10 | bytes / vector | size / flat | disk / flat | p50 CPU ms / query |",
             "|---|---|---|---|---|---|---|",
             f"| flat | | 1.000 | {real['flat']['bytes_per_vector']} | 1.000 | 1.000 | {real['flat'].get('p50_cpu_ms', real['flat'].get('p50_ms'))} |"]
    for name, c in {**real["candidates"], **real.get("refined", {})}.items():
        lines.append(f"| `{name}` | {c['nprobe']} | {c['recall_at_10']:.3f} | {c['bytes_per_vector']} | "
                     f"{c['size_over_flat']:.3f} | {c.get('disk_over_flat', c['size_over_flat']):.3f} | "
                     f"{c.get('p50_cpu_ms', c.get('p50_ms'))} |")
    lines += ["", f"Codes alone, best recall at <= 1/8 of flat: `{real['chosen']}`; recall@10 >= 0.95 "
              f"{'met' if real['chosen_meets_recall_target'] else 'not met'}. With the refine store: "
              f"`{real.get('chosen_refined')}`. Hybrid R@5 on dev: flat {hybrid.get('flat_r_at_5')}, codes alone "
              f"{hybrid.get('compressed_r_at_5')} ({hybrid.get('compressed_difference_points')} points), refined "
              f"{hybrid.get('refined_r_at_5')} ({hybrid.get('refined_difference_points')} points)."]
    if result.get("note"):
        lines += ["", f"Note: {result['note']}"]
    if result["synthetic_growth"]:
        lines += ["", "Synthetic clustered vectors (CPU seconds, robust to other jobs on the box; recall against "
                  "exact search on 100 queries):", "",
                  "| synthetic N | factory | build CPU s | bytes / vector (flat 1536) | p50 CPU ms | recall@10 | "
                  "refined p50 CPU ms | refined recall@10 |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {g['n']:,} | `{g['factory']}` | {g.get('build_cpu_s', g.get('build_s'))} | "
                  f"{g['bytes_per_vector']} | {g.get('p50_cpu_ms', g.get('p50_ms'))} | {g.get('recall_at_10', '')} | {g.get('p50_cpu_ms_refined', '')} | "
                  f"{g.get('recall_at_10_refined', '')} |" for g in result["synthetic_growth"]]
    return "\n".join(lines)


def real_corpus(root: Path, retriever, candidates: list[str]) -> tuple[dict, dict]:
    """Parts 1-3: the compressed candidates, their refined forms and hybrid R@5 on the real corpus."""
    import faiss
    import numpy as np

    from index_build.writers import build_factory, ivf_lists, write_refine
    from retriever import index_dir as fmt
    from retriever.search import IndexRetriever
    from train.config import RetrieverTrainConfig
    from train.data import read_dev

    flat = faiss.read_index(str(root / fmt.DENSE))
    vectors = flat.reconstruct_n(0, flat.ntotal)
    n, dim = vectors.shape
    dev = read_dev(RetrieverTrainConfig())
    queries = np.asarray(retriever.embed([d["question"] for d in dev]), dtype="float32")
    truth = flat.search(queries, 10)[1].tolist()
    flat_bytes = bytes_of(flat)
    real = {"n": n, "dim": dim, "nlist": ivf_lists(n), "flat": {"bytes_per_vector": round(flat_bytes / n, 1),
                                                                 "p50_cpu_ms": p50_cpu_ms(flat, queries)},
            "candidates": {}, "refined": {}}
    built = {}
    for factory in candidates:
        index, build_cpu = cpu_s(lambda f=factory: build_factory(vectors, f, "", 100_000, 4096))
        nprobe, recall = tune(index, queries, truth)
        size = bytes_of(index)
        built[factory] = index
        real["candidates"][factory] = {"nprobe": nprobe, "recall_at_10": recall, "build_cpu_s": build_cpu,
                                       "bytes_per_vector": round(size / n, 1),
                                       "size_over_flat": round(size / flat_bytes, 4), "p50_cpu_ms": p50_cpu_ms(index, queries)}
        print(factory, real["candidates"][factory], flush=True)
    # PQ codes plus a re-rank of their candidates against the floats (faiss_refine): the codes are what must sit
    # in memory; the floats are read row by row from a memory-mapped file, candidates only
    for factory in [f for f in built if f in REFINE_BASES or f not in CANDIDATES]:  # and any asked for
        index = built[factory]
        faiss.ParameterSpace().set_index_parameters(index, f"nprobe={real['candidates'][factory]['nprobe']}")
        size = bytes_of(index)
        for k_factor in K_FACTORS:
            both = refined(index, flat, k_factor)
            r = recall_at(both.search(queries, 10)[1].tolist(), truth)
            real["refined"][f"{factory} + refine x{k_factor}"] = {
                "factory": factory, "k_factor": k_factor, "nprobe": real["candidates"][factory]["nprobe"],
                "recall_at_10": round(r, 4), "bytes_per_vector": round(size / n, 1),
                "size_over_flat": round(size / flat_bytes, 4),
                "disk_over_flat": round((size + flat_bytes) / flat_bytes, 4), "p50_cpu_ms": p50_cpu_ms(both, queries)}
            print(f"{factory} + refine x{k_factor}", real["refined"][f"{factory} + refine x{k_factor}"], flush=True)
    # the best recall among the indexes at most 1/8 of flat (the size target), codes alone
    small = {f: c for f, c in real["candidates"].items() if c["size_over_flat"] <= 0.125}
    chosen = max(small, key=lambda f: (small[f]["recall_at_10"], -small[f]["bytes_per_vector"])) if small else None
    real["chosen"] = chosen
    real["chosen_meets_recall_target"] = bool(chosen and small[chosen]["recall_at_10"] >= 0.95)
    # with the refine store: the smallest codes, then the fewest candidates, reaching recall@10 >= 0.95
    ok = {name: c for name, c in real["refined"].items() if c["recall_at_10"] >= 0.95 and c["size_over_flat"] <= 0.125}
    chosen_refined = min(ok, key=lambda f: (ok[f]["bytes_per_vector"], ok[f]["k_factor"])) if ok else None
    real["chosen_refined"] = chosen_refined

    hybrid = {"flat_r_at_5": round(r_at_5(retriever, dev), 4)}
    for key, name in (("compressed", chosen), ("refined", chosen_refined)):
        if not name:
            continue
        c = real["candidates"].get(name) or real["refined"][name]
        factory = c.get("factory", name)
        with tempfile.TemporaryDirectory() as tmp:  # an index directory as `medcite index` writes it, loaded the
            copy = Path(tmp) / "index"             # served way (memory-mapped, the refine store wrapped)
            shutil.copytree(root, copy)
            faiss.ParameterSpace().set_index_parameters(built[factory], f"nprobe={c['nprobe']}")
            faiss.write_index(built[factory], str(copy / fmt.DENSE))
            manifest = json.loads((copy / fmt.MANIFEST).read_text())
            manifest["faiss"] = {"type": "factory", "ntotal": n}
            if "k_factor" in c:
                write_refine(vectors, copy / fmt.DENSE_REFINE)
                manifest["faiss"]["refine"] = c["k_factor"]
            manifest["files"] = fmt.file_sizes(copy)
            (copy / fmt.MANIFEST).write_text(json.dumps(manifest))
            hybrid[f"{key}_r_at_5"] = round(r_at_5(IndexRetriever.load(copy), dev), 4)
            hybrid[f"{key}_difference_points"] = round(100 * (hybrid[f"{key}_r_at_5"] - hybrid["flat_r_at_5"]), 2)
    print("hybrid", hybrid, flush=True)
    del built
    return real, hybrid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--sizes", default="100000,1000000,5000000", help="synthetic sizes")
    ap.add_argument("--candidates", default=";".join(CANDIDATES), help="factory strings to measure (';'-separated)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faiss_scale.json"))
    ap.add_argument("--resume", action="store_true",
                    help="keep the real-corpus part and the synthetic sizes already in --out (same index and "
                         "candidates) and measure only the rest: the 5M stage alone is most of an hour here")
    args = ap.parse_args()
    candidates = args.candidates.split(";")

    import faiss
    import numpy as np

    from index_build.writers import build_factory, ivf_lists, write_refine
    from retriever import index_dir as fmt
    from retriever.search import IndexRetriever

    faiss.cvar.distance_compute_blas_threshold = 20  # (default) batch searches use BLAS
    root = Path(args.index).resolve()
    retriever = IndexRetriever.load(root)
    previous = json.loads(Path(args.out).read_text()) if args.resume and Path(args.out).exists() else {}
    if (previous.get("index") == retriever.fingerprint
            and list(previous.get("real_corpus", {}).get("candidates", {})) == candidates):
        real, hybrid, growth = previous["real_corpus"], previous["hybrid_dev"], previous["synthetic_growth"]
        print("resumed: real corpus and synthetic", [g["n"] for g in growth], "from", args.out, flush=True)
    else:
        (real, hybrid), growth = real_corpus(root, retriever, candidates), []
    dim = real["dim"]
    chosen, chosen_refined = real["chosen"], real["chosen_refined"]
    result = {"command": "python benchmarks/faiss_scale.py " + " ".join(sys.argv[1:]), "date": str(date.today()),
              "faiss": faiss.__version__, "index": retriever.fingerprint, "real_corpus": real, "hybrid_dev": hybrid,
              "synthetic_growth": growth, "cpu_threads": faiss.omp_get_max_threads()}
    if growth and previous.get("note"):  # what the resumed rows came from stays with them
        result["note"] = previous["note"]
    atomic_write_json(args.out, result)
    name = chosen_refined or chosen or candidates[-1]
    c = real["candidates"].get(name) or real["refined"][name]
    factory, k_factor = c.get("factory", name), c.get("k_factor", 0)
    for size in [int(s) for s in args.sizes.split(",") if s and int(s) not in {g["n"] for g in growth}]:
        x = synthetic(size, dim)
        q = x[np.random.default_rng(1).permutation(size)[:200]] + 0.01
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        print(f"synthetic {size} x {dim}: {factory}" + (f" + refine x{k_factor}" if k_factor else ""), flush=True)
        wall = time.perf_counter()
        index, build_cpu = cpu_s(lambda x=x: build_factory(x, factory, f"nprobe={c['nprobe']}", 100_000, 65_536))
        row = {"n": size, "factory": factory.format(nlist=ivf_lists(size)), "build_cpu_s": build_cpu,
               "build_wall_s": round(time.perf_counter() - wall, 1), "bytes_per_vector": round(bytes_of(index) / size, 1),
               "flat_bytes_per_vector": dim * 4, "p50_cpu_ms": p50_cpu_ms(index, q[:100])}
        if k_factor and size <= REFINE_SYNTHETIC_MAX:
            with tempfile.TemporaryDirectory() as tmp:  # the refine store on disk, mapped as served
                write_refine(x, Path(tmp) / fmt.DENSE_REFINE, 65_536)
                del x  # from here the memory-mapped store is the only copy of the floats
                mapped = faiss.read_index(str(Path(tmp) / fmt.DENSE_REFINE),
                                          faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
                truth_q = mapped.search(q[:100], 10)[1].tolist()  # exact: a flat index
                both = refined(index, mapped, k_factor)
                row.update({"refine": k_factor, "p50_cpu_ms_refined": p50_cpu_ms(both, q[:100]),
                            "recall_at_10": round(recall_at(index.search(q[:100], 10)[1].tolist(), truth_q), 4),
                            "recall_at_10_refined": round(recall_at(both.search(q[:100], 10)[1].tolist(), truth_q), 4)})
                del both, mapped
        growth.append(row)
        print(row, flush=True)
        # written after every size: the 5M stage runs for most of an hour here, and a stop keeps what was measured
        atomic_write_json(args.out, result)
        del index
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
