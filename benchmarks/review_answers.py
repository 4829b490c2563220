"""A blind review of served answers to the real consumer questions: the reviewer sees the rubric, the question and
the answer only (not the system, the arm, the sources or what we expect), in a shuffled order under opaque ids.

    .venv/bin/python benchmarks/review_answers.py prepare [--answers artifacts/answers-review/answers-consumer.jsonl]
        # -> artifacts/answers-review/blind.jsonl (give it, with RUBRIC, to a reviewer) and a key kept apart
    .venv/bin/python benchmarks/review_answers.py prepare --mix-in OLD_ANSWERS.jsonl --mix-verdicts OLD_VERDICTS.jsonl
        # a second round: 30 answers of an earlier reviewed run mixed in, unmarked, to check the reviewer agrees
        # with the earlier verdicts (the mixed-in ones are scored apart, as agreement, not in the shares)
    .venv/bin/python benchmarks/review_answers.py score VERDICTS.jsonl
        # VERDICTS: one {"rid", "verdict": "answers"|"partial"|"no", "distorted": bool} per line
        # -> benchmarks/results/review-consumer.json: the shares with Wilson intervals, per question id and kind

The questions and answers stay under artifacts/ (the consumer questions are not ours to commit); the results file
holds ids and verdicts only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import atomic_write_json, atomic_write_jsonl  # noqa: E402
from evaluation.stats import wilson  # noqa: E402

REVIEW = ROOT / "artifacts" / "answers-review"
RUBRIC = """You are reviewing answers a health-information service gave to questions people wrote. For each item you
see the person's question and the answer. Judge only from them; you do not see the sources.

verdict:
- "answers": the answer gives the person what they asked for: it is about what they asked (the same condition,
  drug or procedure, the same kind of information: cause, treatment, symptoms, outlook...), and a reader would
  come away with a useful, relevant answer, even if incomplete.
- "partial": it is on the right subject but misses the main thing asked (gives symptoms when asked about
  treatment, answers one of two questions, is too vague to act on).
- "no": it is off-topic, about another condition, only restates the question, or is a refusal ("the indexed
  sources do not answer this question ...").
distorted: true when the answer states something misleading for this person (a look-alike condition presented as
theirs, a sentence whose meaning changed, advice that contradicts safety), else false.

Return one JSON object per line: {"rid": ..., "verdict": ..., "distorted": ..., "why": "<= 15 words"}."""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def prepare(answers: Path, arm: str, mix_in: Path | None = None, mix_verdicts: Path | None = None,
            mix_n: int = 30) -> None:
    """`arm`: one arm, or several comma-separated (reviewed together, blind to the arm; an answer two arms gave
    word for word is shown once and its verdict counts for both)."""
    arms = arm.split(",")
    merged: dict[tuple[str, str], dict] = {}
    for r in read_jsonl(answers):
        if r["arm"] in arms:
            merged.setdefault((r["id"], r["answer"]), {**r, "arms": []})["arms"].append(r["arm"])
    rows = list(merged.values())
    if mix_in and mix_verdicts:  # earlier answers with their earlier verdicts, for the reviewer's consistency
        old_key = {r["id"]: r for r in read_jsonl(mix_verdicts.with_name(mix_verdicts.name.replace("verdicts",
                                                                                                     "key")))}
        old_verdict = {r["rid"]: r for r in read_jsonl(mix_verdicts)}
        now = {r["id"]: r["answer"] for r in rows}
        # only earlier answers that differ from this run's: an identical one would be a repeat, not a check
        old = [r for r in read_jsonl(mix_in) if r["arm"] == arm and r["id"] in old_key and now.get(r["id"]) != r["answer"]]
        for r in random.Random(1).sample(old, min(mix_n, len(old))):
            earlier = old_verdict[old_key[r["id"]]["rid"]]
            rows.append({**r, "mixed_in": {"verdict": earlier["verdict"], "distorted": bool(earlier.get("distorted"))}})
    random.Random(0).shuffle(rows)
    blind = [{"rid": f"r{i:03d}", "question": r["question"], "answer": r["answer"]} for i, r in enumerate(rows)]
    key = [{"rid": b["rid"], "id": r["id"], "mode": r["mode"], "cites_relevant": r["cites_relevant"],
            **({"mixed_in": r["mixed_in"]} if "mixed_in" in r else {"arms": r["arms"]})}
           for b, r in zip(blind, rows, strict=True)]
    atomic_write_jsonl(REVIEW / "blind.jsonl", blind)
    atomic_write_jsonl(REVIEW / "key.jsonl", key)
    (REVIEW / "RUBRIC.txt").write_text(RUBRIC + "\n")
    print(f"{len(blind)} answers ({arm}) -> {REVIEW / 'blind.jsonl'}; rubric in {REVIEW / 'RUBRIC.txt'}")


def score(verdicts: Path, reviewer: str, out_path: Path = ROOT / "benchmarks" / "results" / "review-consumer.json",
          served: str = "judges") -> dict:
    """Shares with Wilson intervals; with several arms in the round, each arm's and the paired difference, the flat
    shares being the `served` arm's (what `make demo` serves)."""
    key = {r["rid"]: r for r in (json.loads(x) for x in (REVIEW / "key.jsonl").read_text().splitlines() if x)}
    got = {r["rid"]: r for r in (json.loads(x) for x in verdicts.read_text().splitlines() if x.strip())}
    missing = sorted(set(key) - set(got))
    if missing:
        raise SystemExit(f"review_answers: {len(missing)} answers have no verdict (first: {missing[0]})")
    both = [{**key[rid], "verdict": got[rid]["verdict"], "distorted": bool(got[rid].get("distorted"))} for rid in key]
    rows = [r for r in both if "mixed_in" not in r]
    mixed = [r for r in both if "mixed_in" in r]

    def share(subset: list[dict], test) -> dict:
        k = sum(1 for r in subset if test(r))
        return {"share": round(k / max(1, len(subset)), 4), "k": k, "n": len(subset), "ci95": wilson(k, len(subset))}

    out: dict = {"command": "python benchmarks/review_answers.py score", "date": str(date.today()),
                 "reviewer": reviewer, "rubric": RUBRIC}

    def shares(rows: list[dict]) -> dict:
        got = {}
        for name, subset in (("all", rows), ("alexa", [r for r in rows if r["id"].startswith("alexa")]),
                             ("messages", [r for r in rows if r["id"].startswith("validation")]),
                             ("linked", [r for r in rows if r["cites_relevant"] is not None])):
            got[name] = {"answers": share(subset, lambda r: r["verdict"] == "answers"),
                         "answers_or_partial": share(subset, lambda r: r["verdict"] in ("answers", "partial")),
                         "distorted": share(subset, lambda r: r["distorted"]),
                         "no_answer": share(subset, lambda r: r["mode"] == "no_answer")}
        return got

    arms = sorted({a for r in rows for a in r.get("arms", [])})
    if len(arms) > 1:  # several arms reviewed together: each arm's shares, and the paired difference per question
        from evaluation.stats import mcnemar

        per = {a: {r["id"]: r for r in rows if a in r["arms"]} for a in arms}
        out["by_arm"] = {a: shares(list(per[a].values())) for a in arms}
        first, second = arms
        ids = sorted(set(per[first]) & set(per[second]))
        out["paired"] = {"arms": [first, second], "questions": len(ids), "answers": mcnemar(
            [per[first][i]["verdict"] == "answers" for i in ids], [per[second][i]["verdict"] == "answers" for i in ids])}
        out["served_arm"] = served if served in per else arms[0]
        rows = list(per[out["served_arm"]].values())  # the flat shares below: the served arm's
    out.update(shares(rows))
    if mixed:  # the same reviewer rubric on earlier answers: does this reviewer agree with the earlier verdicts?
        agree = sum(1 for r in mixed if r["verdict"] == r["mixed_in"]["verdict"])
        out["consistency"] = {"mixed_in": len(mixed), "same_verdict": agree, "ci95": wilson(agree, len(mixed)),
                              "earlier_answers_share": round(sum(r["mixed_in"]["verdict"] == "answers"
                                                                 for r in mixed) / len(mixed), 4),
                              "now_answers_share": round(sum(r["verdict"] == "answers" for r in mixed) / len(mixed), 4)}
    out["verdicts"] = sorted(({k: r[k] for k in ("id", "mode", "cites_relevant", "verdict", "distorted", "arms")
                               if k in r} for r in both if "mixed_in" not in r), key=lambda r: r["id"])
    atomic_write_json(out_path, out)
    print(json.dumps({k: v for k, v in out.items() if k in ("all", "alexa", "messages", "linked", "consistency",
                                                            "paired")}, indent=1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--answers", default=str(REVIEW / "answers-consumer.jsonl"))
    p.add_argument("--arm", default="judges", help="which verification arm's answers (judges: what make demo serves; "
                                                  "several comma-separated are reviewed together, blind to the arm)")
    p.add_argument("--mix-in", type=Path, help="an earlier run's answers file, some of whose answers are mixed in")
    p.add_argument("--mix-verdicts", type=Path, help="the earlier review's verdicts (its key file beside it, "
                                                      "named with key for verdicts)")
    p.add_argument("--mix-n", type=int, default=30)
    p = sub.add_parser("score")
    p.add_argument("verdicts")
    p.add_argument("--reviewer", default="a blind reviewer (a helper agent given RUBRIC, the question and the answer)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "review-consumer.json")
    p.add_argument("--served", default="judges", help="with several arms in the round: the one make demo serves "
                                                       "(its shares are the flat ones)")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(Path(a.answers), a.arm, a.mix_in, a.mix_verdicts, a.mix_n)
    else:
        score(Path(a.verdicts), a.reviewer, a.out, a.served)
    return 0


if __name__ == "__main__":
    sys.exit(main())
