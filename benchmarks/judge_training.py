"""The judges' training budget (issue 37 item 3): how fast they train, and whether the faster training keeps their
quality. Two parts, each writing its half of benchmarks/results/judge-training.json:

    .venv/bin/python benchmarks/judge_training.py --speed          # ~12 min: the training loop, three arms
    .venv/bin/python benchmarks/judge_training.py --quality --before artifacts/judges-fp32 --after artifacts/judges

--speed: both judges trained for one epoch on a slice of their real rows (150 passages / 120 questions, about 36
steps of 16 pairs) in three arms, interleaved (A B C / C B A): fp32 in random batches (how the judges trained
before), bf16 mixed precision in random batches, and bf16 in batches of pairs of similar length (what `make demo`
trains). Pairs per second by the Trainer's own clock (the loop, not the rows or the calibration); the ratio of
each pair of arms from the same round, median over rounds.

--quality: two trained judge directories (before: the fp32 training of configs/judges.yaml; after: the training
`make demo` runs) on the probe sets of benchmarks/judges.py (reserved dev documents, never trained on), side by
side: the faithfulness judge as served (int8, the overlap skip) and fp32, each at its own calibrated threshold:
balanced accuracy with a paired bootstrap interval of the difference (after - before, resampling pairs); the
answerhood scorer's ROC AUC with its paired interval; the training time and settings of each from its card.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.judges import auc, dev_documents, summary  # noqa: E402
from core.config import load_config  # noqa: E402
from core.files import atomic_write_json  # noqa: E402
from train.config import JudgeTrainConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "judge-training.json"
ARMS = {"fp32, random batches": {"precision": "fp32", "length_grouped": False},
        "bf16, random batches": {"precision": "bf16", "length_grouped": False},
        "bf16, length-grouped": {"precision": "bf16", "length_grouped": True}}


def _config(**over) -> JudgeTrainConfig:
    return load_config(JudgeTrainConfig, str(ROOT / "configs" / "judges.yaml"), **over)


def speed(reps: int = 2) -> dict:
    from train.judges import JUDGES, train_judge
    from train.precision import native_bf16

    rates: dict[str, dict[str, list[float]]] = {j: {a: [] for a in ARMS} for j in JUDGES}
    rows_dir = Path(tempfile.mkdtemp(prefix="judge-rows-"))
    try:
        for rep in range(reps):
            for arm in list(ARMS) if rep % 2 == 0 else list(ARMS)[::-1]:
                for judge in JUDGES:
                    with tempfile.TemporaryDirectory() as tmp:
                        cfg = _config(out=tmp, faithfulness_passages=150, answerhood_questions=120,
                                      validation_items=40, eval_steps=10_000, **ARMS[arm])
                        run = Path(tmp) / f"{judge}-run"
                        run.mkdir()
                        for name in ("train.jsonl", "validation.jsonl"):  # the same rows in every arm
                            if (rows_dir / judge / name).is_file():
                                shutil.copy(rows_dir / judge / name, run / name)
                        out = train_judge(cfg, judge, log=lambda _: None)
                        card = json.loads((out / "training_run.json").read_text())
                        (rows_dir / judge).mkdir(exist_ok=True)
                        for name in ("train.jsonl", "validation.jsonl"):
                            shutil.copy(run / name, rows_dir / judge / name)
                        rates[judge][arm].append(card["rows"] / card["train_loop_seconds"])
                print(rep, arm, {j: round(rates[j][arm][-1], 2) for j in JUDGES}, flush=True)
    finally:
        shutil.rmtree(rows_dir, ignore_errors=True)

    return {"command": "python benchmarks/judge_training.py --speed", "date": str(date.today()),
            "native_bf16": native_bf16(), "reps": reps, "arms": ARMS,
            "pairs_per_s": {j: {a: [round(x, 2) for x in v] for a, v in r.items()} for j, r in rates.items()},
            "ratios": ratios(rates),
            "note": "one epoch of ~580 rows per judge and arm; pairs/s by the Trainer's train_runtime"}


def ratios(rates: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Per judge, each arm over the one before it and the last over the first: the median over rounds of the
    ratio within a round (arms of one round ran side by side)."""
    from statistics import median

    names = list(ARMS)

    def ratio(judge: str, a: str, b: str) -> float:
        return round(median(x / y for x, y in zip(rates[judge][a], rates[judge][b], strict=True)), 3)

    return {j: {f"{names[1]} / {names[0]}": ratio(j, names[1], names[0]),
                f"{names[2]} / {names[1]}": ratio(j, names[2], names[1]),
                f"{names[2]} / {names[0]}": ratio(j, names[2], names[0])} for j in rates}


def _balanced_terms(correct: list[bool], labels: list[float]) -> list[float]:
    """Per pair, its share of the balanced accuracy (their mean is the balanced accuracy), so that a paired
    bootstrap over pairs gives its interval."""
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    return [c * len(labels) / (2 * (n_pos if y else n_neg)) for c, y in zip(correct, labels, strict=True)]


def quality(before: str, after: str, passages: int = 300, questions: int = 200) -> dict:
    import numpy as np

    from evaluation.stats import paired_bootstrap
    from pipeline.verify.judges import Judges
    from pipeline.verify.support import SupportJudge, overlap, stems
    from train.judge_data import answerhood_rows, faithfulness_rows, read_records
    from train.judge_data import passages as cut

    cfg = JudgeTrainConfig()
    docs = dev_documents(cfg)
    records = [r for r in read_records(cfg, reserved_only=True) if r.meta.get("document") in docs]
    probe = faithfulness_rows(records, cut(records), passages, seed=7)
    arows = answerhood_rows(records, questions, seed=7)
    labels = [r["label"] for r in probe]
    pairs = [(r["passage"], r["sentence"]) for r in probe]
    skip = [overlap(r["sentence"], stems(r["passage"].partition("\n")[2])) < SupportJudge().min_overlap
            for r in probe]
    out: dict = {"command": "python benchmarks/judge_training.py " + " ".join(sys.argv[1:]),
                 "date": str(date.today()), "probe": {"pairs": len(probe), "answerhood_pairs": len(arows),
                                                      "seed": 7, "source": "reserved dev documents"},
                 "before": {"path": before}, "after": {"path": after}}
    terms: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    a_scores: dict[str, list[float]] = {}
    for side, path in (("before", before), ("after", after)):
        card = {j: json.loads((Path(path) / j / "training_run.json").read_text()) for j in ("faithfulness", "answerhood")}
        out[side]["training"] = {j: {k: c.get(k) for k in ("train_seconds", "train_loop_seconds", "train_precision",
                                                            "rows")} | {"settings": {
            k: c["config"].get(k) for k in ("faithfulness_passages", "answerhood_questions", "batch_size",
                                            "eval_steps", "length_grouped")}} for j, c in card.items()}
        for precision in ("int8", "fp32"):
            judges = Judges.load(path, precision)
            scores = [0.0 if s else x for x, s in zip(judges.faithfulness.score(pairs), skip, strict=True)]
            t = judges.faithfulness.threshold
            out[side][f"faithfulness_{precision}"] = {k: v for k, v in summary(scores, probe, t).items()
                                                      if k != "by_family"}
            terms[side][precision] = _balanced_terms([(s >= t) == bool(y) for s, y in zip(scores, labels,
                                                                                        strict=True)], labels)
        a_scores[side] = judges.answerhood.score([(r["question"], r["sentence"]) for r in arows])
        pos = [s for s, r in zip(a_scores[side], arows, strict=True) if r["label"]]
        neg = [s for s, r in zip(a_scores[side], arows, strict=True) if not r["label"]]
        out[side]["answerhood_auc"] = auc(pos, neg)
    out["difference"] = {f"faithfulness_{p}_balanced_accuracy": paired_bootstrap(terms["after"][p],
                                                                                terms["before"][p])
                         for p in ("int8", "fp32")}
    rng = np.random.default_rng(0)
    y = np.array([r["label"] for r in arows], dtype=bool)
    a, b = np.array(a_scores["after"]), np.array(a_scores["before"])
    diffs = []
    for _ in range(1000):  # paired bootstrap of the AUC difference, resampling pairs
        i = rng.integers(0, len(y), len(y))
        if y[i].all() or not y[i].any():
            continue
        diffs.append(auc(list(a[i][y[i]]), list(a[i][~y[i]])) - auc(list(b[i][y[i]]), list(b[i][~y[i]])))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    out["difference"]["answerhood_auc"] = {"mean_diff": round(out["after"]["answerhood_auc"]
                                                              - out["before"]["answerhood_auc"], 4),
                                           "ci_low": round(float(lo), 4), "ci_high": round(float(hi), 4)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--before", default="artifacts/judges-fp32")
    ap.add_argument("--after", default="artifacts/judges")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    if not (args.speed or args.quality):
        ap.error("name --speed, --quality or both")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.speed:
        results["speed"] = speed(args.reps)
        print(json.dumps(results["speed"]["ratios"], indent=1))
    if args.quality:
        for path in (args.before, args.after):
            if not (Path(path) / "faithfulness" / "calibration.json").is_file():
                ap.error(f"{path} holds no trained judges (medcite train-judges all --out {path})")
        results["quality"] = quality(args.before, args.after)
        print(json.dumps(results["quality"]["difference"], indent=1))
    atomic_write_json(RESULTS, results)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
