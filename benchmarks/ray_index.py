"""index_build on Ray Data against the local engine, side by side in one run (A/B/C/A/B/C): passages/s of the
embedding stage and of the whole build, Ray's start-up and per-build overhead stated separately.

    .venv/bin/python benchmarks/ray_index.py [--records 1500] [--repeats 2]   # -> benchmarks/results/ray_index.json

Arms, on the same MedQuAD records (the first --records of the corpus, the real embedder, shard_size 256):
  local     the local engine, 2 torch threads
  ray-1     Ray, 1 CPU actor with 2 threads
  ray-2     Ray, 2 CPU actors with 1 thread each
Ray is started once (`ray.init(num_cpus=2)`) and its start-up timed on its own. Each build writes a fresh index;
the ray builds are checked to hold the local build's passages. On a GPU host `--gpu` adds ray-gpu (one actor per
GPU, batch 256) and reports passages/s per GPU actor.
"""

from __future__ import annotations

import argparse
import os
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


def build(cfg) -> tuple[float, float, int]:
    """(whole build seconds, embedding-stage seconds, passages) for one fresh build."""
    import index_build.build as b
    from index_build import ray_engine

    spent = [0.0]

    def timed(fn):
        def run(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - t
        return run

    local, ray_embed = b.embed_in_shards, ray_engine.embed
    b.embed_in_shards, ray_engine.embed = timed(local), timed(ray_embed)
    try:
        t = time.perf_counter()
        result = b.build_index(cfg, log=lambda _: None)
        total = time.perf_counter() - t
    finally:
        b.embed_in_shards, ray_engine.embed = local, ray_embed
    return total, spent[0], result.manifest["counts"]["passages"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("MEDCITE_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--records", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_index.json"))
    args = ap.parse_args()

    import ray

    from index_build.config import IndexConfig

    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() if args.gpu else 2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ray_start = time.perf_counter() - t
    arms = {"local": dict(engine="local", threads=2), "ray-1": dict(engine="ray", ray_actors=1, threads=2),
            "ray-2": dict(engine="ray", ray_actors=2, threads=1)}
    if args.gpu:
        arms["ray-gpu"] = dict(engine="ray", batch_size=256)
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    passages_of: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for arm, kw in arms.items():
                out = Path(tmp) / f"{arm}-{rep}"
                cfg = IndexConfig(data_dir=args.data_dir, corpora=("medquad:medquad",), limit=args.records,
                                  out=str(out), shard_size=256, **kw)
                total, embed_s, n = build(cfg)
                passages_of[arm] = (out / "passages.jsonl").read_bytes()
                runs[arm].append({"build_s": round(total, 2), "embed_s": round(embed_s, 2), "passages": n,
                                  "embed_passages_per_s": round(n / embed_s, 1),
                                  "build_passages_per_s": round(n / total, 1)})
                print(f"{arm:8s} rep {rep}: {n} passages, build {total:.1f} s, embedding {n / embed_s:.1f} passages/s",
                      flush=True)
    same = all(p == passages_of["local"] for p in passages_of.values())

    def med(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[arm])

    summary = {arm: {"embed_passages_per_s": med(arm, "embed_passages_per_s"),
                     "build_passages_per_s": med(arm, "build_passages_per_s"), "build_s": round(med(arm, "build_s"), 2)}
               for arm in arms}
    ratios = {arm: {"embed_vs_local": round(summary[arm]["embed_passages_per_s"] /
                                            summary["local"]["embed_passages_per_s"], 3),
                    "build_vs_local": round(summary[arm]["build_passages_per_s"] /
                                            summary["local"]["build_passages_per_s"], 3)}
              for arm in arms if arm != "local"}
    for arm, r in ratios.items():
        print(f"{arm}: embedding {r['embed_vs_local']:.2f}x local, whole build {r['build_vs_local']:.2f}x local")
    print(f"ray.init: {ray_start:.1f} s (once per job); same passages as local: {same}")
    device = "CPU (2 cores)"
    if args.gpu:
        import torch

        device = torch.cuda.get_device_name(0)
    result = {"benchmark": "ray_index", "date": date.today().isoformat(),
              "command": "python benchmarks/ray_index.py " + " ".join(sys.argv[1:]), "device": device,
              "records": args.records, "repeats": args.repeats, "ray_version": ray.__version__,
              "ray_init_seconds": round(ray_start, 2), "same_passages_as_local": same, "arms": summary,
              "ratios": ratios, "runs": runs}
    ray.shutdown()
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
