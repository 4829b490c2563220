"""Question entailment (issue 35 item 3) on both rulers: the served retrieval against the same with the answered
questions the query entails fused in (retriever/entailment.py), in one run.

    .venv/bin/python benchmarks/entailment.py [--index artifacts/index] [--model artifacts/retriever/entailment]

Arms, each retrieved as the answer pipeline retrieves (pipeline.answer.retrieve: a message's subject line and
asks, a question's parts), record recall@1/3/5 with bootstrap intervals:
- `served`: hybrid with the conditional question-type prior (the default);
- `+questions`: the nearest answered questions by cosine fused in (no entailment model: the ablation);
- `+entailment`: the nearest `--candidates` questions read by the entailment model, those it judges entailed
  (P >= each `--thresholds`) fused in.
Rulers: MedQuAD dev (200), whose questions are MedQuAD question strings themselves and so sit verbatim in the
question list (a ceiling, not a measure of entailment), the patient-style rewrites of reserved documents' questions
(200: the template ruler that is not verbatim), the 49 linked consumer dev questions and their 7 messages. Each
arm is paired against `served` (recall@1 and @5 differences, bootstrap intervals), and retrieve latency p50 is
measured interleaved question by question. The held-out metrics of the model's training card are copied in.
Writes benchmarks/results/entailment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.retrieval import gold_ranks, patient_style, recall  # noqa: E402
from core.config import default_data_dir  # noqa: E402
from core.files import atomic_write_json  # noqa: E402
from evaluation.rulers import rulers  # noqa: E402
from evaluation.stats import paired_bootstrap  # noqa: E402
from retriever.entailment import Entailment  # noqa: E402
from retriever.loader import load_retriever  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _hits(ranks: list[int | None], k: int) -> list[float]:
    return [1.0 if x and x <= k else 0.0 for x in ranks]


def compare(r, arms: dict[str, Entailment | None], sets: dict[str, list[dict]]) -> dict:
    out: dict = {}
    for split, rows in sets.items():
        ranks = {}
        for arm, ent in arms.items():
            r.entailment = ent
            ranks[arm] = gold_ranks(r, rows, "hybrid", pipeline=True)
        res = {arm: recall(x) for arm, x in ranks.items()}
        for arm in [a for a in arms if a != "served"]:
            res[f"{arm} - served"] = {f"recall@{k}": paired_bootstrap(_hits(ranks[arm], k), _hits(ranks["served"], k))
                                      for k in (1, 5)}
        out[split] = res
        print(split, len(rows), json.dumps({a: [v["recall@1"], v["recall@5"]] for a, v in res.items()
                                            if "recall@1" in v}), flush=True)
    r.entailment = None
    return out


def latency(r, arms: dict[str, Entailment | None], questions: list[str]) -> dict:
    times: dict[str, list[float]] = {a: [] for a in arms}
    for q in questions:
        for arm, ent in arms.items():
            r.entailment = ent
            t = time.perf_counter()
            r.search(q, k=10)
            times[arm].append((time.perf_counter() - t) * 1000)
    r.entailment = None
    p50 = {a: round(statistics.median(v), 1) for a, v in times.items()}
    return {"p50_ms": p50, **{f"{a} / served": round(p50[a] / p50["served"], 2) for a in arms if a != "served"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--model", default="artifacts/retriever/entailment")
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--thresholds", default="0.5,0.7,0.9", help="comma-separated P(entailed) thresholds, one arm each")
    args = ap.parse_args()
    r = load_retriever(args.index)
    sets = rulers(args.data_dir)
    sets["patient_style"] = patient_style(args.data_dir)
    arms: dict[str, Entailment | None] = {
        "served": None, "+questions": Entailment.load(args.index, "", candidates=args.candidates)}
    model = Entailment.load(args.index, args.model, candidates=args.candidates) if args.model else None
    for t in (float(x) for x in args.thresholds.split(",")):
        if model is not None:
            arms[f"+entailment@{t}"] = Entailment(model.questions, model.model, args.candidates, t)
    res = {"command": "python benchmarks/entailment.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d"), "index": r.fingerprint[:12], "model": args.model,
           "candidates": args.candidates,
           "questions_listed": len(arms["+questions"].questions.questions),  # type: ignore[union-attr]
           "rulers": compare(r, arms, sets),
           "latency": latency(r, arms, [x["question"] for x in sets["consumer"]] +
                              [x["question"] for x in sets["medquad_dev"][:50]])}
    card = Path(args.model) / "training_run.json"
    if card.is_file():
        c = json.loads(card.read_text())
        res["training"] = {k: c.get(k) for k in ("rows", "held_out", "dev_after", "train_seconds", "peak_rss_mib")}
    print(json.dumps(res["latency"]))
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "entailment.json", res)
    print(f"wrote {RESULTS / 'entailment.json'}")


if __name__ == "__main__":
    main()
