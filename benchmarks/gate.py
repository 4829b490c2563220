"""The relevance gate per index: how often each question set is refused (`no_answer`) by the gate calibrated for
that index, base and tuned side by side in one run. No generation: the gate reads only the question and the shown
passages, so with the lexical judge this is the pipeline's whole `no_answer` rate (the trained answerhood scorer
can add refusals on top; benchmarks/answers.py measures those).

    .venv/bin/python benchmarks/gate.py [--index artifacts/index,artifacts/index-tuned] [--limit 100]
    # -> benchmarks/results/gate.json

Sets: benchmarks/answers.py's (dev reference questions; patient-style rewrites of other reserved documents'
questions, which calibration never saw; yes/no questions; the 40 out-of-scope questions, which calibration does
use: that row is in-sample). Each question is prepared exactly as served (`pipeline.answer.Pipeline.prepare`: hybrid,
k=3, the question-type prior, the prompt budget), then the served gate decides.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import atomic_write_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="artifacts/index,artifacts/index-tuned")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gate.json"))
    args = ap.parse_args()

    from benchmarks.answers import question_sets
    from generator.prompt import approx_tokens
    from pipeline.answer import Pipeline
    from pipeline.config import AnswerConfig
    from pipeline.verify.config import VerifyConfig
    from pipeline.verify.stage import relevance_gate, verify_embed
    from retriever.loader import load_retriever

    class Budget:  # what _prepare asks of a generator: 3 passages of <= 200 tokens fit the 1536-token budget anyway
        context_window = None
        count_tokens = staticmethod(approx_tokens)

    sets = question_sets(args.limit)
    result: dict = {"command": "python benchmarks/gate.py " + " ".join(sys.argv[1:]), "date": str(date.today()),
                    "indexes": {}}
    for path in [p for p in args.index.split(",") if p]:
        if not Path(path, "manifest.json").is_file():
            print(f"{path}: no index, skipped")
            continue
        cfg = AnswerConfig(index=str(Path(path).resolve()))  # exactly this index: the default would give way to the tuned one
        retriever = load_retriever(cfg.index, cfg.rerank)
        gate, source = relevance_gate(VerifyConfig(), retriever)
        cal = (retriever.calibration or {}).get("relevance") or {}
        row: dict = {"fingerprint": retriever.fingerprint[:12], "gate": gate, "gate_source": source,
                     "verify_embedder": cal.get("embedder", "index"),
                     "embedder": retriever.manifest["embedder"].get("name"),
                     "calibrated_on": {k: cal.get(k) for k in ("dev", "patient_style", "out_of_scope") if k in cal},
                     "sets": {}}
        prepared = Pipeline(retriever, Budget(), None, cfg.pipeline())  # prompts only: nothing is generated
        for name, rows in sets.items():
            refused, scores = [], []
            for q in rows:
                p = prepared.prepare(q["question"])
                texts = [s.text for s in p.shown]
                if texts:
                    vecs = verify_embed(retriever, retriever.embed)([q["question"], *texts])  # as verify scores it
                    rel = float((vecs[1:] @ vecs[0]).max())
                else:
                    rel = -1.0
                scores.append(rel)
                refused.append(float(rel < gate))
            key = "refused" if name == "out_of_scope" else "no_answer"
            row["sets"][name] = {"n": len(rows), key: round(statistics.fmean(refused), 4),
                                 "relevance_p50": round(statistics.median(scores), 4)}
            print(f"{path:24s} gate {gate:.4f} ({source})  {name:13s} n={len(rows):3d}  {key} "
                  f"{statistics.fmean(refused):.3f}", flush=True)
        result["indexes"][path] = row
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
