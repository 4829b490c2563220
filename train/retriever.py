"""The retriever training job: a domain-tuned embedder and a cross-encoder reranker, on CPU.

    medcite train-retriever embedder --config configs/retriever.yaml     # ~25 min here (pairs, 1 epoch)
    medcite index --embedder artifacts/retriever/embedder --out artifacts/index-tuned
    medcite train-retriever reranker --config configs/retriever.yaml     # ~15 min here
    make retriever                                                       # all three

Embedder: sentence-transformers' own trainer (SentenceTransformerTrainer) with CachedMultipleNegativesRankingLoss
(in-batch negatives plus one mined hard negative per pair; the cache gives a batch of 32 in the memory of 8),
starting from the current index's embedder. The dev split is scored by the library's
InformationRetrievalEvaluator every `eval_steps`; the checkpoint with the best dev recall@5 is the one kept.
Reranker: a sentence-transformers CrossEncoder (CrossEncoderTrainer, BinaryCrossEntropyLoss over each query's
positive and mined negatives) initialised from the same small BERT (MiniLM-L6), checkpoint by the library's
CrossEncoderRerankingEvaluator on dev.

Both are seeded, and a killed job rerun with the same config resumes from its last checkpoint (Trainer state,
optimizer, RNG); the mined pairs are written once (atomically) and reused. A rerun with other settings in the same
run directory is refused, naming the difference. The finished model is published atomically with a
`training_run.json` (config, data counts, dev metrics, time, peak memory) that `medcite index` copies into the
index manifest.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from core.config import config_to_dict
from core.errors import ModelLoadError
from core.files import (
    atomic_write_json,
    atomic_write_jsonl,
    check_run_identity,
    last_complete_checkpoint,
    staging_dir,
)
from retriever.index_dir import EMBEDDER_DIR, embed_text
from retriever.search import IndexRetriever
from train.config import RetrieverTrainConfig
from train.data import read_dev, reranker_negatives, training_pairs

RUN_FILE = "training_run.json"
"""Written into every trained model directory; the index manifest copies it (which run built this embedder)."""


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def load_pairs(cfg: RetrieverTrainConfig, retriever: IndexRetriever, work: Path, log=print) -> list[dict]:
    """Mined once per run directory and reused on resume (same seed, same index: same pairs)."""
    path = work / "pairs.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines()]
    log(f"mining {cfg.max_pairs} training pairs with hard negatives from {cfg.index}")
    pairs = training_pairs(cfg, retriever, log)
    atomic_write_jsonl(path, pairs)
    return pairs


def dev_corpus(retriever: IndexRetriever, dev: list[dict], per_query: int = 10) -> tuple[dict, dict, dict]:
    """The IR evaluator's inputs: dev queries, a corpus of every dev gold record's passages plus each query's top
    hybrid candidates from the current index (the passages a ranker must tell apart), and the relevant passages."""
    queries, corpus, relevant = {}, {}, {}
    for d in dev:
        qid = d["id"]
        gold = retriever.resolve_record(d["gold_medquad_id"])
        queries[qid] = d["question"]
        relevant[qid] = set()
        for p in retriever.passages_of(gold):
            corpus[p.id] = embed_text(p)
            relevant[qid].add(p.id)
        for h in retriever.search(d["question"], k=per_query, mode="hybrid", per_record=False):
            corpus[h.passage.id] = embed_text(h.passage)
    return queries, corpus, relevant


def _identity(cfg: RetrieverTrainConfig, retriever: IndexRetriever, stage: str) -> dict:
    """What a run directory's results depend on, field by field (so a refusal names the field that differs)."""
    c = config_to_dict(cfg)
    for k in ("out", "threads"):  # where and how fast: not what is trained
        c.pop(k, None)
    if stage == "embedder":
        c = {k: v for k, v in c.items() if not k.startswith(("reranker_", "entailment_"))}
    elif stage == "reranker":
        c = {k: v for k, v in c.items() if not k.startswith("entailment_")}
    else:  # entailment: its own rows, not the mined pairs
        c = {k: v for k, v in c.items() if k.startswith("entailment_") or k in ("data_dir", "reserved", "dev",
                                                                                  "seed", "epochs")}
    return {"stage": stage, "index": retriever.fingerprint, **c}


def _trainer_args(cls, work: Path, cfg: RetrieverTrainConfig, metric: str, batch: int, lr: float, every: int,
                  **extra):
    return cls(output_dir=str(work / "checkpoints"), num_train_epochs=cfg.epochs, per_device_train_batch_size=batch,
               learning_rate=lr, warmup_steps=0.1, seed=cfg.seed, data_seed=cfg.seed, eval_strategy="steps",
               eval_steps=every, save_strategy="steps", save_steps=every, save_total_limit=2,
               load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=True,
               logging_steps=max(1, every // 3), report_to="none", use_cpu=True, dataloader_num_workers=0,
               disable_tqdm=True, **extra)


def _evals(trainer, metric: str) -> list[dict]:
    """The dev evaluations the trainer ran (the checkpoint kept is the best of them by `metric`)."""
    return [{"step": e["step"], **{k: round(v, 4) for k, v in e.items() if k.startswith("eval_dev_")}}
            for e in trainer.state.log_history if metric in e]


def _run_dir(cfg: RetrieverTrainConfig, retriever: IndexRetriever, stage: str) -> Path:
    """The stage's run directory, claimed for these settings (a rerun with others is refused)."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.out) / f"{stage}-run"
    work.mkdir(parents=True, exist_ok=True)
    check_run_identity(work / "run.json", _identity(cfg, retriever, stage), "retriever training run")
    return work


def _fit(trainer, work: Path, log) -> None:
    """Train, resuming from the run's last checkpoint when a killed run left one."""
    resume = last_complete_checkpoint(work / "checkpoints")
    if resume:
        log(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)


def _publish(model, out: Path, card: dict) -> None:
    with staging_dir(out) as tmp:
        model.save(str(tmp))  # SentenceTransformer and CrossEncoder alike
        atomic_write_json(tmp / RUN_FILE, card)


def train_embedder(cfg: RetrieverTrainConfig, retriever: IndexRetriever, log=print) -> Path:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    work = _run_dir(cfg, retriever, "embedder")
    started = time.time()
    pairs = load_pairs(cfg, retriever, work, log)
    data = Dataset.from_list([{"anchor": p["anchor"], "positive": p["positive"], "negative": p["negative"]}
                              for p in pairs])
    dev = read_dev(cfg)
    queries, corpus, relevant = dev_corpus(retriever, dev)
    evaluator = InformationRetrievalEvaluator(queries, corpus, relevant, name="dev", accuracy_at_k=[1, 5, 10],
                                              precision_recall_at_k=[1, 5, 10], mrr_at_k=[10], ndcg_at_k=[10],
                                              map_at_k=[10], show_progress_bar=False, batch_size=64,
                                              write_csv=False)
    base = str(Path(retriever.root) / EMBEDDER_DIR)
    model = SentenceTransformer(base, device="cpu", local_files_only=True)
    model.max_seq_length = cfg.max_seq_length
    # The cached variant trades an extra forward pass for memory: only worth it when the batch does not fit.
    loss = (CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size)
            if cfg.mini_batch_size < cfg.batch_size else MultipleNegativesRankingLoss(model))
    # accuracy@k of a dev query = its gold record among the top k passages: record-level recall@k. recall@1 picks:
    # recall@5 is 1.0 on the evaluator's corpus from step 40 on, so it cannot tell checkpoints apart (measured).
    args = _trainer_args(Args, work, cfg, "eval_dev_cosine_accuracy@1", cfg.batch_size, cfg.learning_rate,
                         cfg.eval_steps, batch_sampler=BatchSamplers.NO_DUPLICATES)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss, evaluator=evaluator)
    _fit(trainer, work, log)
    evals = _evals(trainer, "eval_dev_cosine_accuracy@1")
    steps = ", ".join(f"{e['step']}: {e['eval_dev_cosine_accuracy@1']:.3f}" for e in evals)
    log(f"dev record recall@1 by step: {steps}")
    card = {"stage": "embedder", "base": base, "config": config_to_dict(cfg), "index": retriever.fingerprint,
            "pairs": len(pairs), "consumer_pairs": sum(p["consumer"] for p in pairs),
            "sources": sorted({p["record_id"].split(":")[0] for p in pairs}), "dev_evals": evals,
            "dev_after": max(evals, key=lambda e: e["eval_dev_cosine_accuracy@1"]) if evals else {},
            "train_seconds": round(time.time() - started, 1), "peak_rss_mib": _peak_rss_mib(),
            "best_checkpoint": trainer.state.best_model_checkpoint}
    out = Path(cfg.out) / "embedder"
    _publish(trainer.model, out, card)
    log(f"embedder written to {out} ({card['train_seconds']:.0f}s, peak {card['peak_rss_mib']} MiB); next: "
        f"medcite index --embedder {out} --out artifacts/index-tuned")
    return out


def pooler_to_identity(model) -> bool:
    """Starting a cross-encoder from a bi-encoder (mean pooling) whose BERT pooler was never trained: its dense
    layer is small noise (weight std 0.009, bias 0 in MiniLM-L6), and with the new head's 0.02 init the gradient
    barely reaches the encoder: two runs stayed at the label prior for 170 steps, and 96 rows could not be fit in
    24 steps. Set to identity (pooler = tanh(CLS)) the same 24 steps ranked every positive above its negative."""
    import torch

    hf = model.model
    pooler = getattr(hf.base_model, "pooler", None)
    if pooler is None or any(a.endswith("ForSequenceClassification") for a in hf.config.architectures or []):
        return False  # already a cross-encoder: its pooler was trained with its head
    with torch.no_grad():
        pooler.dense.weight.copy_(torch.eye(pooler.dense.weight.shape[0]))
        pooler.dense.bias.zero_()
    return True


def train_reranker(cfg: RetrieverTrainConfig, retriever: IndexRetriever, log=print) -> Path:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    base = cfg.reranker_base or str(Path(retriever.root) / EMBEDDER_DIR)
    if not (Path(base) / "config.json").is_file():
        raise ModelLoadError(f"reranker_base {base} is not a model directory (train the embedder first: "
                             "`medcite train-retriever embedder`)")
    work = _run_dir(cfg, retriever, "reranker")
    started = time.time()
    pairs = load_pairs(cfg, retriever, Path(cfg.out) / "embedder-run", log)[: cfg.reranker_queries]
    rows, dropped = [], 0
    for p in pairs:
        rows.append({"query": p["anchor"], "passage": p["positive"], "label": 1.0})
        negatives, same = reranker_negatives(retriever, p, cfg.reranker_negatives)
        dropped += same
        rows += [{"query": p["anchor"], "passage": t, "label": 0.0} for t in negatives]
    log(f"  reranker rows: {len(rows)} from {len(pairs)} queries; {dropped} mined negatives dropped as the same "
        "question from another source")
    data = Dataset.from_list(rows).shuffle(seed=cfg.seed)
    samples = []
    for d in read_dev(cfg):
        gold = retriever.resolve_record(d["gold_medquad_id"])
        hits = retriever.search(d["question"], k=20, mode="hybrid")
        samples.append({"query": d["question"], "positive": [embed_text(p) for p in retriever.passages_of(gold)[:1]],
                        "documents": [embed_text(h.passage) for h in hits]})
    evaluator = CrossEncoderRerankingEvaluator(samples, at_k=5, name="dev", show_progress_bar=False,
                                               always_rerank_positives=False, write_csv=False)
    model = CrossEncoder(base, num_labels=1, max_length=cfg.reranker_max_length, device="cpu",
                         local_files_only=True)
    if pooler_to_identity(model):
        log("  the base's untrained BERT pooler starts as identity")
    args = _trainer_args(Args, work, cfg, "eval_dev_ndcg@5", cfg.reranker_batch_size, cfg.reranker_learning_rate,
                         cfg.reranker_eval_steps)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(
        # positives are 1 in (1 + negatives) rows: weighting them so keeps the loss off the label prior
        model, pos_weight=torch.tensor(float(cfg.reranker_negatives))),
                                  evaluator=evaluator)
    _fit(trainer, work, log)
    evals = _evals(trainer, "eval_dev_ndcg@5")
    card = {"stage": "reranker", "base": base, "config": config_to_dict(cfg), "index": retriever.fingerprint,
            "queries": len(pairs), "rows": len(rows), "false_negatives_dropped": dropped, "dev_evals": evals,
            "dev_after": max(evals, key=lambda e: e["eval_dev_ndcg@5"]) if evals else {},
            "train_seconds": round(time.time() - started, 1), "peak_rss_mib": _peak_rss_mib(),
            "best_checkpoint": trainer.state.best_model_checkpoint}
    out = Path(cfg.out) / "reranker"
    _publish(trainer.model, out, card)
    log(f"reranker written to {out} ({card['train_seconds']:.0f}s); turn it on with rerank.model: {out}")
    return out
