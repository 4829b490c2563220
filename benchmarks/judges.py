"""Judges benchmark: the trained faithfulness judge against the lexical judge, and the answerhood scorer against
the embedder's cosine, side by side in one run, on probe sets built from the dev split's documents (reserved
MedQuAD documents: never trained on).

    .venv/bin/python benchmarks/judges.py [--judges artifacts/judges] [--passages 300] [--questions 200]

Faithfulness probe: passages of the dev questions' documents; per passage two faithful sentences (the passage's own,
or a meaning-preserving rewrite) and two altered ones, by family (negation, number, direction, quantifier,
condition, term, entity_swap, merge, other_record), drawn with another seed than training. Each judge at its own
threshold: the trained one at its calibration (chosen on held-out training documents, not on this set), the lexical
one at verify.support_threshold (0.55). Reported: balanced accuracy, share of faithful sentences kept, share of
each family caught. Answerhood probe: the dev documents' questions (templated and patient-style) against their own
answer's sentences and other sections' and conditions' sentences: ROC AUC and accuracy at the threshold.
Timing: judge milliseconds per (passage, sentence) pair on this machine.

Writes benchmarks/results/judges.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import atomic_write_json  # noqa: E402
from pipeline.verify.config import VerifyConfig  # noqa: E402
from train.config import JudgeTrainConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def dev_documents(cfg: JudgeTrainConfig) -> set[str]:
    import json

    path = Path(cfg.data_dir) / "splits" / "medquad_dev.jsonl"
    gold = [json.loads(x)["gold_medquad_id"] for x in path.read_text().splitlines() if x.strip()]
    return {g.rsplit(":", 1)[0] for g in gold}


def summary(scores: list[float], rows: list[dict], threshold: float) -> dict:
    from train.judges import by_family

    pos = [s for s, r in zip(scores, rows, strict=True) if r["label"]]
    neg = [s for s, r in zip(scores, rows, strict=True) if not r["label"]]
    kept = sum(s >= threshold for s in pos) / len(pos)
    caught = sum(s < threshold for s in neg) / len(neg)
    return {"threshold": threshold, "balanced_accuracy": round((kept + caught) / 2, 4),
            "faithful_kept": round(kept, 4), "altered_caught": round(caught, 4), "auc": auc(pos, neg),
            "by_family": by_family(scores, rows, threshold)}


def auc(pos: list[float], neg: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    return round(float(mannwhitneyu(pos, neg).statistic) / (len(pos) * len(neg)), 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judges", default="artifacts/judges")
    ap.add_argument("--passages", type=int, default=300)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--out", default=str(RESULTS / "judges.json"))
    args = ap.parse_args()

    from pipeline.verify.judges import Judges
    from pipeline.verify.support import SupportJudge, overlap, stems
    from retriever.embedder import load_embedder, resolve_embedder
    from train.judge_data import answerhood_rows, faithfulness_rows, passages, read_records

    cfg = JudgeTrainConfig()
    docs = dev_documents(cfg)
    records = [r for r in read_records(cfg, reserved_only=True) if r.meta.get("document") in docs]
    chunks = passages(records)
    probe = faithfulness_rows(records, chunks, args.passages, seed=7)
    print(f"faithfulness probe: {len(probe)} pairs from {args.passages} passages of {len(docs)} dev documents")
    judges = Judges.load(args.judges)
    embedder = load_embedder(resolve_embedder(""))
    lexical = SupportJudge(embed=lambda t: embedder.encode(t, normalize_embeddings=True, batch_size=64,
                                                           show_progress_bar=False),
                           lexical_weight=VerifyConfig().lexical_weight)

    def split(row):  # the probe's passage text is "title\ntext", as the judge reads it
        title, _, text = row["passage"].partition("\n")
        return title, text

    t = time.perf_counter()
    lex_scores = [lexical.scores([r["sentence"]], [split(r)[1]])[0][0] for r in probe]
    lex_ms = (time.perf_counter() - t) * 1000 / len(probe)
    int8 = Judges.load(args.judges, "int8")  # what serving loads by default (verify.judge_precision)
    pairs = [(r["passage"], r["sentence"]) for r in probe]
    model_scores, int8_scores, spent = [], [], {"fp32": 0.0, "int8": 0.0}
    for i, start in enumerate(range(0, len(pairs), 100)):  # A/B/B/A... side by side, in chunks of 100 pairs
        chunk = pairs[start:start + 100]
        for name in (("fp32", "int8") if i % 2 == 0 else ("int8", "fp32")):
            t = time.perf_counter()
            got = (judges if name == "fp32" else int8).faithfulness.score(chunk)
            spent[name] += time.perf_counter() - t
            (model_scores if name == "fp32" else int8_scores).extend(got)
    judge_ms = spent["fp32"] * 1000 / len(probe)
    # as served: SupportJudge skips a pair sharing under min_overlap of the sentence's words (score 0)
    served = SupportJudge(model=judges.faithfulness)
    pstems = [stems(split(r)[1]) for r in probe]
    served_scores = [s if overlap(r["sentence"], ps) >= served.min_overlap else 0.0
                     for s, r, ps in zip(model_scores, probe, pstems, strict=True)]
    results = {"command": "python benchmarks/judges.py " + " ".join(sys.argv[1:]), "date": str(date.today()),
               "probe": {"pairs": len(probe), "passages": args.passages, "documents": len(docs),
                         "source": "dev split documents (reserved; never trained on)", "seed": 7},
               "faithfulness": {
                   "judge": summary(served_scores, probe, judges.faithfulness.threshold),
                   "judge_model_alone": summary(model_scores, probe, judges.faithfulness.threshold),
                   "judge_int8": summary([s if overlap(r["sentence"], ps) >= served.min_overlap else 0.0
                                          for s, r, ps in zip(int8_scores, probe, pstems, strict=True)],
                                         probe, int8.faithfulness.threshold),  # its own calibration
                   "int8_speedup": round(spent["fp32"] / spent["int8"], 3),
                   "pairs_skipped_by_overlap": round(sum(overlap(r["sentence"], ps) < served.min_overlap
                                                         for r, ps in zip(probe, pstems, strict=True)) / len(probe), 4),
                   "lexical": summary(lex_scores, probe, VerifyConfig().support_threshold),
                   "ms_per_pair": {"judge": round(judge_ms, 2), "lexical": round(lex_ms, 2)},
                   "calibration": judges.faithfulness.calibration}}
    arows = answerhood_rows(records, args.questions, seed=7)
    if judges.answerhood is not None:
        a_scores = judges.answerhood.score([(r["question"], r["sentence"]) for r in arows])
        vecs = embedder.encode([r["question"] for r in arows] + [r["sentence"] for r in arows],
                               normalize_embeddings=True, batch_size=64, show_progress_bar=False)
        n = len(arows)
        cos = [float(vecs[i] @ vecs[n + i]) for i in range(n)]
        pos = lambda xs: [x for x, r in zip(xs, arows, strict=True) if r["label"]]  # noqa: E731
        neg = lambda xs: [x for x, r in zip(xs, arows, strict=True) if not r["label"]]  # noqa: E731
        results["answerhood"] = {
            "pairs": n, "questions": args.questions,
            "scorer": {"auc": auc(pos(a_scores), neg(a_scores)),
                       **summary(a_scores, arows, judges.answerhood.threshold)},
            "scorer_int8": summary(int8.answerhood.score([(r["question"], r["sentence"]) for r in arows]), arows,
                                   int8.answerhood.threshold),
            "cosine": {"auc": auc(pos(cos), neg(cos))},
            "calibration": judges.answerhood.calibration}
    atomic_write_json(args.out, results)
    f = results["faithfulness"]
    print(f"faithfulness: balanced accuracy judge {f['judge']['balanced_accuracy']} vs lexical "
          f"{f['lexical']['balanced_accuracy']}; faithful kept {f['judge']['faithful_kept']} vs "
          f"{f['lexical']['faithful_kept']}; ms/pair {f['ms_per_pair']}; int8 {f['judge_int8']['balanced_accuracy']} "
          f"kept {f['judge_int8']['faithful_kept']}, {f['int8_speedup']}x faster")
    for fam in f["judge"]["by_family"]:
        print(f"  {fam:14s} judge {f['judge']['by_family'][fam]['correct']:.3f}  lexical "
              f"{f['lexical']['by_family'][fam]['correct']:.3f}  (n={f['judge']['by_family'][fam]['n']})")
    if "answerhood" in results:
        a = results["answerhood"]
        print(f"answerhood: AUC scorer {a['scorer']['auc']} vs cosine {a['cosine']['auc']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
