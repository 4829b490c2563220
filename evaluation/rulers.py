"""The two rulers every retrieval or answer change is measured on, side by side: MedQuAD's dev split (templated
questions, one gold record each) and real consumer questions (../shared/data/consumer: MEDIQA-2019's Alexa
questions and the validation messages people sent the NLM, silver links to the corpus records that answer them).

    from evaluation.rulers import rulers, retrieval_table
    sets = rulers(data_dir)                     # {"medquad_dev": [...], "consumer": [...], "consumer_messages": [...]}
    retrieval_table(retriever, sets["consumer"], mode="hybrid")

A row is {"id", "question", "relevant": [record ids]} (empty where no record is linked). "consumer" is the 49
linked consumer questions; "consumer_messages" the linked validation messages among them (the messy kind: a
subject line, a story, several asks), reported as their own row because they look like the users. Figures carry a
percentile bootstrap interval over questions (evaluation.stats.mean_ci): 49 questions pin down little.
"""

from __future__ import annotations

from pathlib import Path

from core.consumer import consumer_questions
from core.consumer import read_jsonl as _jsonl

__all__ = ["consumer_questions", "first_relevant_rank", "is_message", "medquad_dev", "recall_summary", "retrieval_table",
           "rulers"]


def medquad_dev(data_dir: str) -> list[dict]:
    return [{"id": r.get("id", str(i)), "question": r["question"], "relevant": [r["gold_medquad_id"]]}
            for i, r in enumerate(_jsonl(Path(data_dir) / "splits" / "medquad_dev.jsonl"))]


def is_message(row: dict) -> bool:
    """A validation message (what people write), not a short Alexa question."""
    return row["id"].startswith("validation")


def rulers(data_dir: str) -> dict[str, list[dict]]:
    linked = [q for q in consumer_questions(data_dir) if q["relevant"]]
    return {"medquad_dev": medquad_dev(data_dir), "consumer": linked,
            "consumer_messages": [q for q in linked if is_message(q)]}


def first_relevant_rank(retriever, row: dict, mode: str = "hybrid", k: int = 10, query: str | None = None
                        ) -> int | None:
    """The rank (1-based, records) of the first relevant record in the top k, or None."""
    gold = {retriever.resolve_record(r) for r in row["relevant"]}
    hits = retriever.search(query or row["question"], k=k, mode=mode)
    return next((h.rank for h in hits if h.passage.record_id in gold), None)


def recall_summary(ranks: list[int | None], ks: tuple[int, ...] = (1, 3, 5, 10)) -> dict:
    """recall@k and MRR@10 with bootstrap intervals (`{"recall@5": 0.69, "recall@5_ci95": [0.55, 0.82], ...}`)."""
    from evaluation.stats import mean_ci

    out: dict = {"n": len(ranks)}
    series = {f"recall@{k}": [1.0 if x and x <= k else 0.0 for x in ranks] for k in ks}
    series["mrr@10"] = [1.0 / x if x else 0.0 for x in ranks]
    for name, values in series.items():
        ci = mean_ci(values)
        out[name] = round(ci["mean"], 4)
        out[f"{name}_ci95"] = [round(ci["ci_low"], 4), round(ci["ci_high"], 4)]
    return out


def retrieval_table(retriever, rows: list[dict], mode: str = "hybrid", query=None) -> tuple[dict, list]:
    """The summary and the per-question ranks (for paired comparisons); `query(row)` rewrites what is searched."""
    ranks = [first_relevant_rank(retriever, r, mode, query=query(r) if query else None) for r in rows]
    return recall_summary(ranks), ranks
