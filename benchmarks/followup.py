"""Follow-up benchmark: a conversation's second question, searched and answered with each way of making it
standalone (pipeline/followup.py), against the same question with the condition written out.

    .venv/bin/python benchmarks/followup.py [--n 40] [--answers]     # -> benchmarks/results/followup.json

Conversations from dev documents (reserved MedQuAD documents, never trained on): turn 1 another question of the
same document, turn 2 the dev record's own question with the condition replaced by "it" or "this condition"
(alternately): "What are the treatments for Gout ?" -> "What are the treatments for it ?". Arms:
- written_out: turn 2 as the dev split has it (the ceiling);
- as_written: the follow-up searched alone (what /v1/chat/completions did before conversations);
- focus / model / both: pipeline.followup.standalone with that setting.
Per arm: the gold record among the k=3 passages shown (hybrid, the served retriever), and the standalone query's
word overlap with the written-out question; with --answers, the served pipeline's turn-2 answer (llama.cpp,
verification with the trained judges where `make demo` wrote them) cites the gold record, for written_out and
every arm. Turn 1 is checked unchanged: standalone() leaves a question without history as it is.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import atomic_write_json  # noqa: E402
from pipeline.config import AnswerConfig  # noqa: E402
from train.config import RetrieverTrainConfig  # noqa: E402

ARMS = ("as_written", "focus", "model", "both")


def conversations(n: int, seed: int = 0) -> list[dict]:
    from core.corpus import read_reserved
    from train.data import qa_records, read_dev

    cfg = RetrieverTrainConfig()
    records = qa_records(cfg, read_reserved(cfg.data_dir, cfg.reserved), want_reserved=True)
    by_id = {r.id: r for r in records}
    by_doc: dict[str, list] = {}
    for r in records:
        by_doc.setdefault(r.meta.get("document", ""), []).append(r)
    rng = random.Random(seed)
    dev = read_dev(cfg)
    rng.shuffle(dev)
    out = []
    for d in dev:
        gold = by_id.get(d["gold_medquad_id"])
        focus = (gold.meta.get("focus") or "") if gold else ""
        siblings = [r for r in by_doc.get(gold.meta.get("document", ""), []) if r.id != gold.id] if gold else []
        if not focus or not siblings or focus.lower() not in d["question"].lower():
            continue
        pronoun = "it" if len(out) % 2 == 0 else "this condition"
        follow = re.sub(re.escape(focus), pronoun, d["question"], count=1, flags=re.I)
        first = rng.choice(siblings)
        out.append({"turn1": first.question, "turn1_answer": first.text[:400], "turn2": follow,
                    "written_out": d["question"], "gold": gold.id})
        if len(out) == n:
            break
    return out


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--answers", action="store_true", help="also generate and verify turn-2 answers (minutes)")
    ap.add_argument("--answer-arms", default="written_out,as_written,focus,model,both",
                    help="the arms whose turn-2 answers are generated (with --answers)")
    args = ap.parse_args()

    from pipeline.answer import Pipeline
    from pipeline.followup import standalone
    from pipeline.loader import load_pipeline

    cfg = AnswerConfig(index=args.index)
    served = load_pipeline(cfg)  # as served; each arm below differs in how follow-ups become standalone
    retriever, generator, judges = served.retriever, served.generator, served.judges
    convs = conversations(args.n)
    unchanged = all(standalone(c["turn1"], None).query == c["turn1"] for c in convs)

    def shown_gold(query: str, gold: str) -> bool:
        hits = retriever.search(query, k=cfg.k, mode=cfg.mode)
        return retriever.resolve_record(gold) in {retriever.resolve_record(h.passage.record_id) for h in hits}

    rows = []
    for i, c in enumerate(convs, 1):
        history = [{"role": "user", "content": c["turn1"]}, {"role": "assistant", "content": c["turn1_answer"]}]
        row = {**c, "queries": {"written_out": c["written_out"]}, "rewrite_ms": {}}
        for arm in ARMS:
            t = time.perf_counter()
            s = standalone(c["turn2"], history, "off" if arm == "as_written" else arm, generator)
            row["rewrite_ms"][arm] = round((time.perf_counter() - t) * 1000, 1)
            row["queries"][arm] = s.query
        row["shown"] = {arm: shown_gold(q, c["gold"]) for arm, q in row["queries"].items()}
        if args.answers:
            row["cites"] = {}
            for arm in args.answer_arms.split(","):
                how = "off" if arm in ("as_written", "written_out") else arm
                pipeline = Pipeline(retriever, generator, judges, replace(cfg.pipeline(), followup=how))
                a = pipeline.answer(c["written_out"] if arm == "written_out" else c["turn2"],
                                    None if arm == "written_out" else history)
                gold = retriever.resolve_record(c["gold"])
                row["cites"][arm] = gold in {retriever.resolve_record(x.hit.passage.record_id) for x in a.citations}
        rows.append(row)
        print(f"{i}/{len(convs)} {c['turn2']!r} -> focus {row['queries']['focus']!r}, model "
              f"{row['queries']['model']!r}", flush=True)

    arms = ("written_out", *ARMS)
    summary: dict = {}
    for arm in arms:
        s = {"gold_shown": round(statistics.fmean(r["shown"][arm] for r in rows), 4),
             "query_overlap_with_written_out": round(statistics.fmean(
                 len(_words(r["queries"][arm]) & _words(r["written_out"])) / len(_words(r["written_out"]))
                 for r in rows), 4)}
        if args.answers and arm in rows[0]["cites"]:
            s["cites_gold"] = round(statistics.fmean(r["cites"][arm] for r in rows), 4)
        if arm in ARMS:
            s["rewrite_ms_p50"] = round(statistics.median(r["rewrite_ms"][arm] for r in rows), 1)
        summary[arm] = s
    for arm in ARMS:
        for key in ("gold_shown", "cites_gold"):
            if key in summary[arm] and summary["written_out"][key]:
                summary[arm][f"{key}_share_of_written_out"] = round(summary[arm][key] / summary["written_out"][key],
                                                                     4)
    result = {"command": "python benchmarks/followup.py " + " ".join(sys.argv[1:]), "date": str(date.today()),
              "index": retriever.fingerprint, "model": generator.name, "k": cfg.k, "n": len(rows),
              "judges": judges.describe() if judges else "lexical", "turn1_unchanged": unchanged, "arms": summary,
              "rows": [{k: r[k] for k in ("turn1", "turn2", "written_out", "gold", "queries", "shown")}
                       | ({"cites": r["cites"]} if args.answers else {}) for r in rows]}
    atomic_write_json(ROOT / "benchmarks" / "results" / "followup.json", result)
    for arm, s in summary.items():
        print(f"{arm:12s} {s}")
    print("turn 1 unchanged:", unchanged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
