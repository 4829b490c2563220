"""The question-entailment model (retriever/entailment.py): a cross-encoder (consumer question, answered question)
-> P(every answer to the answered question answers the consumer's), after Ben Abacha & Demner-Fushman, "A
question-entailment approach to question answering" (BMC Bioinformatics 2019).

    medcite train-retriever entailment --config configs/retriever.yaml     # ~17 min here (make entailment)

It also writes the index's question list (index_build/questions.py). Serve with it: `rerank.entailment:
artifacts/retriever/entailment` in the serve config (off by default: benchmarks/entailment.py).

Rows: the RQE pairs (../shared/data/consumer/rqe_amia2016_train.jsonl: clinical questions against FAQ-style ones,
labelled), plus consumer-style rewrites of MedQuAD questions (train.data.consumerize, and short "what is X" forms
as people ask them), each paired with its own question (entailed), with the same condition's question of another
type (not: "what causes X" is not answered by "how is X treated") and with the nearest question about another
condition of the same type (not: the look-alike names that pulled in the wrong disease). Never from reserved
MedQuAD documents nor the dev split's records. A seeded tenth of both is held out; the checkpoint kept is the one
with the best held-out average precision (sentence-transformers' CrossEncoderClassificationEvaluator), not loss.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

from core.corpus import read_reserved
from core.errors import DataError, ModelLoadError
from core.files import atomic_write_json
from core.types import Record
from index_build.questions import index_questions
from retriever.index_dir import EMBEDDER_DIR
from retriever.search import IndexRetriever
from train.config import RetrieverTrainConfig
from train.data import _focus, consumerize, qa_records, read_dev

HELD_OUT = 0.1
"""Share of the RQE pairs and of the rewritten questions kept out of training for checkpoint selection."""


def read_rqe(cfg: RetrieverTrainConfig) -> list[dict]:
    path = Path(cfg.data_dir) / cfg.entailment_pairs
    if not path.is_file():
        raise DataError(f"question-entailment pairs {path} do not exist (set entailment_pairs)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not (isinstance(row.get("chq"), str) and isinstance(row.get("faq"), str) and row.get("label") in (0, 1)):
            raise DataError(f"{path}:{n}: each line must be {{chq, faq, label: 0|1}}")
        rows.append({"question": row["chq"], "answered": row["faq"], "label": float(row["label"])})
    return rows


_WHAT_IS = re.compile(r"^what (is|are) \(are\) ", re.I)


def short_form(question: str) -> str:
    """A MedQuAD question as people type it to a speaker: "What is (are) Gout ?" -> "what is gout?"."""
    q = _WHAT_IS.sub(lambda m: f"what {m.group(1)} ", question.strip())
    q = re.sub(r"\s+\?$", "?", q)
    return q[0].lower() + q[1:] if q else q


def rewrite_rows(cfg: RetrieverTrainConfig, retriever: IndexRetriever, log=print) -> list[list[dict]]:
    """Groups of rows, one group per rewritten question (its positive and its negatives), so a held-out question
    takes all its rows with it."""
    import numpy as np

    reserved = read_reserved(cfg.data_dir, cfg.reserved)
    dev = {retriever.resolve_record(d["gold_medquad_id"]) for d in read_dev(cfg)}
    records = [r for r in qa_records(cfg, reserved, want_reserved=False)
               if r.source.startswith("medquad") and r.meta.get("qtype") and retriever.resolve_record(r.id) not in dev]
    if any(r.meta.get("document") in reserved for r in records):  # qa_records drops them; the rule is guarded
        raise DataError("reserved MedQuAD documents in the entailment model's training data")
    rng = random.Random(cfg.seed)
    rng.shuffle(records)
    by_focus: dict[str, list[Record]] = {}
    for r in records:
        by_focus.setdefault(_focus(r).lower(), []).append(r)
    chosen = records[: cfg.entailment_rewrites]
    log(f"  embedding {len(records)} MedQuAD questions for look-alike negatives")
    vectors = retriever.embed([r.question for r in records])
    row_of = {r.id: n for n, r in enumerate(records)}
    groups = []
    for r in chosen:
        focus = _focus(r)
        anchor = consumerize(r.question, focus, rng) if rng.random() < 0.5 else short_form(r.question)
        group = [{"question": anchor, "answered": r.question, "label": 1.0}]
        others = [s for s in by_focus[focus.lower()] if s.meta.get("qtype") != r.meta.get("qtype")]
        if others:
            group.append({"question": anchor, "answered": rng.choice(others).question, "label": 0.0})
        sims = vectors @ vectors[row_of[r.id]]
        for j in np.argsort(-sims)[:50]:
            s = records[int(j)]
            if _focus(s).lower() != focus.lower() and s.meta.get("qtype") == r.meta.get("qtype"):
                group.append({"question": anchor, "answered": s.question, "label": 0.0})
                break
        groups.append(group)
    return groups


def split_rows(rqe: list[dict], groups: list[list[dict]], seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    rqe, groups = rqe[:], groups[:]
    rng.shuffle(rqe)
    rng.shuffle(groups)
    n_rqe, n_groups = int(len(rqe) * HELD_OUT), int(len(groups) * HELD_OUT)
    held = rqe[:n_rqe] + [row for g in groups[:n_groups] for row in g]
    train = rqe[n_rqe:] + [row for g in groups[n_groups:] for row in g]
    rng.shuffle(train)
    return train, held


def train_entailment(cfg: RetrieverTrainConfig, retriever: IndexRetriever, log=print) -> Path:
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderClassificationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from train.retriever import (
        _evals,
        _fit,
        _peak_rss_mib,
        _publish,
        _run_dir,
        _trainer_args,
        pooler_to_identity,
    )

    base = cfg.entailment_base or str(Path(retriever.root) / EMBEDDER_DIR)
    if not (Path(base) / "config.json").is_file():
        raise ModelLoadError(f"entailment_base {base} is not a model directory")
    work = _run_dir(cfg, retriever, "entailment")
    started = time.time()
    rows_file = work / "rows.json"
    if rows_file.is_file():  # built once per run directory and reused on resume
        data = json.loads(rows_file.read_text())
        train, held = data["train"], data["held_out"]
    else:
        rqe = read_rqe(cfg)
        groups = rewrite_rows(cfg, retriever, log)
        train, held = split_rows(rqe, groups, cfg.seed)
        atomic_write_json(rows_file, {"train": train, "held_out": held, "rqe": len(rqe), "rewrites": len(groups)})
    log(f"  entailment rows: {len(train)} to train, {len(held)} held out")
    evaluator = CrossEncoderClassificationEvaluator([(r["question"], r["answered"]) for r in held],
                                                    [int(r["label"]) for r in held], name="dev",
                                                    show_progress_bar=False, write_csv=False)
    model = CrossEncoder(base, num_labels=1, max_length=cfg.entailment_max_length, device="cpu",
                         local_files_only=True)
    if pooler_to_identity(model):
        log("  the base's untrained BERT pooler starts as identity")
    args = _trainer_args(Args, work, cfg, "eval_dev_average_precision", cfg.entailment_batch_size,
                         cfg.entailment_learning_rate, cfg.entailment_eval_steps)
    trainer = CrossEncoderTrainer(model=model, args=args, loss=BinaryCrossEntropyLoss(model),
                                  train_dataset=Dataset.from_list(train), evaluator=evaluator)
    _fit(trainer, work, log)
    evals = _evals(trainer, "eval_dev_average_precision")
    card = {"stage": "entailment", "base": base, "index": retriever.fingerprint, "rows": len(train),
            "held_out": len(held), "dev_evals": evals,
            "dev_after": max(evals, key=lambda e: e["eval_dev_average_precision"]) if evals else {},
            "train_seconds": round(time.time() - started, 1), "peak_rss_mib": _peak_rss_mib(),
            "best_checkpoint": trainer.state.best_model_checkpoint}
    out = Path(cfg.out) / "entailment"
    _publish(trainer.model, out, card)
    index_questions(retriever.root, cfg.data_dir, log)  # what the model reads against, beside the index
    log(f"entailment model written to {out} ({card['train_seconds']:.0f}s)")
    return out
