"""Calibration that travels with an index: the relevance gate (verify's abstention when no shown passage is close
enough to the question) chosen for the embedder that built the index, written into its manifest.

    medcite index ...                                   # calibrates the index it built (dev split present)
    python -m train.calibrate artifacts/index # again, for an index built before calibration existed

Why per index: the gate reads the index embedder's cosine, and a tuned embedder puts patient-worded questions lower
on its scale (the tuned index refused 19% of consumer questions at the base MiniLM's 0.45). Questions: the dev
split's reference questions, a patient-style rewrite of each (train.data.consumerize, seeded), the 127 real
consumer dev questions (../shared/data/consumer, as issue 35 asks: a gate set on templates alone refuses what
people write), and 40 questions the corpus cannot answer (OUT_OF_SCOPE). Each is retrieved as served (hybrid, k=3, the question-type
prior) and scored as verify scores it: the best cosine between the question and a shown passage. Rule: the
midpoint of the out-of-scope questions' 95th percentile and the in-scope questions' 2nd percentile. The
patient-style benchmark set is built from other documents, so it stays held out.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core.files import atomic_write_json

OUT_OF_SCOPE = [
    "What is the capital of Australia?", "How do I change a flat bicycle tyre?", "Who won the 1998 football world cup?",
    "How do I bake sourdough bread?", "What is the speed of light in a vacuum?", "How do I reset my router password?",
    "What is the best way to learn the guitar?", "How many moons does Jupiter have?", "How do I file my taxes online?",
    "What is the plot of Hamlet?", "How do I install Python on Windows?", "What time zone is Tokyo in?",
    "How do I grow tomatoes on a balcony?", "What is a black hole?", "How does a jet engine work?",
    "Who painted the Mona Lisa?", "What is the exchange rate of the euro?", "How do I write a cover letter?",
    "What are the rules of chess?", "How do I make cold brew coffee?", "What is the tallest mountain in Africa?",
    "How do I train a puppy to sit?", "What is quantum entanglement?", "How do I knit a scarf?",
    "When was the Eiffel Tower built?", "How do I fix a leaking tap?", "What is the GDP of Brazil?",
    "How does compound interest work?", "What is the best programming language?", "How do I tie a bow tie?",
    "Who wrote Pride and Prejudice?", "How do I clean a cast iron pan?", "What is the population of Canada?",
    "How do solar panels work?", "What is a haiku?", "How do I play poker?", "What causes the northern lights?",
    "How do I change a car tyre?", "What is blockchain?", "How far is the Moon from Earth?",
]
RULE = ("midpoint of the out-of-scope 95th percentile and the in-scope (dev + patient-style + consumer dev) 2nd "
        "percentile")


def relevance(retriever, question: str, k: int = 3, mode: str = "hybrid", embed=None) -> float:
    """What verify's gate reads: the best cosine between the question and the passages shown for it."""
    hits = retriever.search(question, k=k, mode=mode)
    if not hits:
        return 0.0
    vecs = (embed or retriever.embed)([question, *[h.passage.text for h in hits]])
    return float((vecs[1:] @ vecs[0]).max())


def _quantile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype="float64"), q * 100))


def calibrate_relevance(retriever, in_scope: Sequence[str], patient: Sequence[str],
                        out_of_scope: Sequence[str] = OUT_OF_SCOPE, k: int = 3, mode: str = "hybrid",
                        embedder: str = "index", consumer: Sequence[str] = ()) -> dict:
    """The relevance gate for this retriever, scored by its own embedder or the reference one, with the numbers
    that chose it."""
    from pipeline.verify.stage import reference_embed

    embed = reference_embed if embedder == "reference" else None
    dev = [relevance(retriever, q, k, mode, embed) for q in in_scope]
    pat = [relevance(retriever, q, k, mode, embed) for q in patient]
    oos = [relevance(retriever, q, k, mode, embed) for q in out_of_scope]
    con = [relevance(retriever, q, k, mode, embed) for q in consumer]
    inside = dev + pat + con
    threshold = round((_quantile(oos, 0.95) + _quantile(inside, 0.02)) / 2, 4)

    def kept(v):
        return round(sum(x >= threshold for x in v) / max(1, len(v)), 4)

    return {"threshold": threshold, "rule": RULE, "k": k, "mode": mode, "embedder": embedder,
            "dev": {"n": len(dev), "kept": kept(dev), "p1": round(_quantile(dev, 0.01), 4)},
            "patient_style": {"n": len(pat), "kept": kept(pat), "p2": round(_quantile(pat, 0.02), 4)},
            **({"consumer": {"n": len(con), "kept": kept(con), "p2": round(_quantile(con, 0.02), 4)}} if con else {}),
            "out_of_scope": {"n": len(oos), "refused": round(1 - kept(oos), 4),
                             "p95": round(_quantile(oos, 0.95), 4), "max": round(max(oos), 4)}}


def calibration_questions(data_dir: str, seed: int = 0) -> tuple[list[str], list[str]] | None:
    """The dev split's questions and a patient-style rewrite of each; None when the data has no dev split."""
    from core.corpus import read_reserved
    from train.config import RetrieverTrainConfig
    from train.data import consumerize, qa_records

    cfg = RetrieverTrainConfig(data_dir=data_dir)
    path = Path(data_dir) / cfg.dev
    if not path.is_file():
        return None
    dev = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    records = {r.id: r for r in qa_records(cfg, read_reserved(data_dir, cfg.reserved), want_reserved=True)}
    rng = random.Random(seed)
    patient = []
    for d in dev:
        r = records.get(d["gold_medquad_id"])
        focus = (r.meta.get("focus") or r.title.split(":")[0]) if r else ""
        if focus:
            patient.append(consumerize(d["question"], focus, rng))
    return [d["question"] for d in dev], patient


def calibrate_index(index_dir: str | Path, data_dir: str, log: Callable[[str], None] = print,
                    questions: tuple[Sequence[str], Sequence[str]] | None = None) -> dict | None:
    """Calibrate the index at `index_dir` and write the result into its manifest (`calibration`); None (and the
    manifest left as it is) when there are no calibration questions."""
    from retriever import index_dir as fmt
    from retriever.loader import load_retriever

    questions = questions or calibration_questions(data_dir)
    if questions is None:
        log(f"no dev split under {data_dir}: the index carries no calibration (verify uses min_relevance)")
        return None
    started = time.time()
    # as served (the question-type prior too, and the tuned reranker when this is the tuned index)
    retriever = load_retriever(str(Path(index_dir).resolve()))
    from retriever.embedder import dir_checksum, resolve_embedder

    # An index with another embedder than the packaged MiniLM (a domain-tuned one) is gated on the reference
    # MiniLM's scale: pipeline.verify.stage.gate_embed says why, with the numbers.
    reference_sha = dir_checksum(resolve_embedder(""))
    embedder = "index" if retriever.manifest["embedder"]["sha256"] == reference_sha else "reference"
    from core.consumer import consumer_questions

    consumer = [q["question"] for q in consumer_questions(data_dir)] if data_dir else []
    cal = {"relevance": calibrate_relevance(retriever, *questions, embedder=embedder, consumer=consumer) |
                        ({"reference_sha256": reference_sha} if embedder == "reference" else {}),
           "embedder_sha256": retriever.manifest["embedder"]["sha256"],
           "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "seconds": round(time.time() - started, 1)}
    path = Path(index_dir) / fmt.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["calibration"] = cal
    atomic_write_json(path, manifest)
    r = cal["relevance"]
    log(f"relevance gate for {index_dir}: {r['threshold']} (dev kept {r['dev']['kept']}, patient-style kept "
        f"{r['patient_style']['kept']}, " + (f"consumer kept {r['consumer']['kept']}, " if "consumer" in r else "")
        + f"out of scope refused {r['out_of_scope']['refused']})")
    return cal


if __name__ == "__main__":
    import sys

    from core.config import default_data_dir

    calibrate_index(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else default_data_dir())
