"""`medcite train-retriever` (configs/retriever.yaml) and `medcite train-judges` (configs/judges.yaml): the settings of
the small models' training jobs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config import default_data_dir
from core.errors import ConfigError
from pipeline.verify.config import DEFAULT_JUDGES
from retriever.config import DEFAULT_INDEX
from train.precision import PRECISIONS


@dataclass(frozen=True)
class RetrieverTrainConfig:
    """`medcite train-retriever` (configs/retriever.yaml): the domain-tuned embedder and the reranker."""

    index: str = DEFAULT_INDEX
    """The current index: its embedder is the starting point and its hybrid search mines hard negatives."""
    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    out: str = "artifacts/retriever"
    """Run directory: training pairs, checkpoints, and the finished `embedder/` and `reranker/`."""
    reserved: str = "splits/medquad_reserved_documents.txt"
    """MedQuAD documents never trained on (their questions are the dev and consumer evaluation sets)."""
    dev: str = "splits/medquad_dev.jsonl"
    """Dev questions for the information-retrieval evaluator that picks the checkpoint."""
    sources: tuple[str, ...] = ("medquad:medquad", "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json")
    """Question-answer corpora the (question -> answer passage) pairs come from."""
    max_pairs: int = 4000
    """Training pairs drawn (seeded). Mining 4,000 hard negatives and one epoch took 44 min here (2 cores, shared
    with another job for most of it); dev record recall@1 on the evaluator's corpus was 0.925 after 40 steps."""
    consumer_share: float = 0.3
    """Share of training questions rewritten in the consumer style (patient context, typos, two questions)."""
    epochs: int = 1
    """Passes over the pairs."""
    batch_size: int = 32
    """In-batch negatives per step for MultipleNegativesRankingLoss (plus one mined hard negative per pair)."""
    mini_batch_size: int = 32
    """Below batch_size: CachedMultipleNegativesRankingLoss computes the batch this many at a time (memory of the
    small batch, one extra forward pass). Equal: plain MultipleNegativesRankingLoss (peak 6.2 GB here at 32)."""
    learning_rate: float = 3e-5
    """AdamW learning rate for the embedder (10% warm-up, linear decay)."""
    max_seq_length: int = 160
    """Embedder tokens per text in training (the index's passages are 200 tokens + title; the first 160 carry the
    title and the answer's opening, and cost 0.6x)."""
    eval_steps: int = 40
    """Steps between dev evaluations (and checkpoints: the best by dev record recall@1 is kept)."""
    reranker_queries: int = 2000
    """Queries for the cross-encoder: each with its positive and `reranker_negatives` mined negatives."""
    reranker_negatives: int = 3
    """Mined negatives per query for the cross-encoder."""
    reranker_batch_size: int = 16
    """(query, passage) pairs per cross-encoder step."""
    reranker_learning_rate: float = 1e-4
    """AdamW learning rate for the cross-encoder (its head starts from scratch; on 96 rows, 24 steps at 1.5e-4
    separated positives from negatives about twice as far as at 5e-5)."""
    reranker_base: str = ""
    """Starting weights for the cross-encoder (a new one-logit head is added); empty: the index's embedder."""
    reranker_max_length: int = 320
    """Cross-encoder tokens per (query, passage) pair."""
    reranker_eval_steps: int = 125
    """Cross-encoder steps between dev evaluations (each scores 200 x 20 pairs: about 2 min here)."""
    entailment_pairs: str = "consumer/rqe_amia2016_train.jsonl"
    """Question-entailment pairs ({chq, faq, label}) under data_dir, for the entailment model (train/entailment.py)."""
    entailment_rewrites: int = 3000
    """MedQuAD questions rewritten as people ask them, each with one entailed and two non-entailed questions."""
    entailment_base: str = ""
    """Starting weights of the entailment cross-encoder; empty: the index's embedder."""
    entailment_batch_size: int = 32
    """(question, answered question) rows per step of the entailment cross-encoder."""
    entailment_learning_rate: float = 5e-5
    """The entailment cross-encoder's learning rate (1 epoch, warm-up 10%)."""
    entailment_max_length: int = 128
    """Tokens per (question, answered question) pair: both are short (RQE pairs: 20 and 11 words on average)."""
    entailment_eval_steps: int = 100
    """Steps between held-out evaluations (average precision; the best checkpoint is kept)."""
    seed: int = 0
    """Seeds the draw of pairs, the consumer rewrites and training."""
    threads: int = 0
    """torch threads; 0 = all cores."""

    def __post_init__(self) -> None:
        if self.max_pairs < 8 or self.reranker_queries < 4:
            raise ConfigError("max_pairs must be >= 8 and reranker_queries >= 4")
        if not 0 <= self.consumer_share <= 1:
            raise ConfigError(f"consumer_share must be in [0, 1], got {self.consumer_share}")
        if self.mini_batch_size < 1 or self.batch_size < 2 or self.epochs < 1 or self.reranker_batch_size < 2:
            raise ConfigError("batch sizes must be >= 2 (mini_batch_size >= 1) and epochs >= 1")
        if self.entailment_rewrites < 0 or self.entailment_batch_size < 2 or self.entailment_eval_steps < 1:
            raise ConfigError("entailment_rewrites must be >= 0, entailment_batch_size >= 2, entailment_eval_steps >= 1")
        if self.eval_steps < 1 or self.reranker_eval_steps < 1 or self.reranker_negatives < 1:
            raise ConfigError("eval_steps and reranker_negatives must be >= 1")


@dataclass(frozen=True)
class JudgeTrainConfig:
    """`medcite train-judges` (configs/judges.yaml): the faithfulness judge and the answerhood scorer of the
    verification stage (train/judges.py)."""

    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    out: str = DEFAULT_JUDGES
    """Run directory: rows, checkpoints, and the finished `faithfulness/` and `answerhood/` (with calibration.json);
    serve, ask and eval use it by themselves (verify.judges)."""
    reserved: str = "splits/medquad_reserved_documents.txt"
    """MedQuAD documents never trained on (the dev questions and the benchmarks' probe sets come from them)."""
    sources: tuple[str, ...] = ("medquad:medquad", "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json")
    """Corpora the passages, sentences and questions come from."""
    base: str = ""
    """Starting weights (a one-logit head is added); empty: the packaged MiniLM-L6 embedder."""
    faithfulness_passages: int = 2400
    """Passages for the faithfulness judge, each giving two positives and two negatives."""
    answerhood_questions: int = 1500
    """Questions for the answerhood scorer, each with two own-answer sentences and up to three others."""
    validation_items: int = 250
    """Passages (or questions) of held-out documents for the checkpoint choice and the thresholds."""
    faithfulness_max_length: int = 160
    """Tokens per (title + aligned passage sentences, sentence) pair (pipeline.verify.support.aligned_window)."""
    answerhood_max_length: int = 128
    """Tokens per (question, title + sentence) pair."""
    batch_size: int = 16
    """Pairs per step."""
    learning_rate: float = 1.5e-4
    """AdamW learning rate (the head starts from scratch, as for the reranker)."""
    epochs: int = 1
    """Passes over the rows."""
    eval_steps: int = 125
    """Steps between validation evaluations (the best checkpoint by average precision is kept)."""
    min_kept: float = 0.95
    """The calibrated threshold keeps at least this share of the validation positives."""
    seed: int = 0
    """Seeds the rows and training."""
    threads: int = 0
    """torch threads; 0 = all cores."""
    precision: str = "auto"
    """auto: bf16 mixed precision where the CPU multiplies bf16 natively (train.precision), else fp32; bf16; fp32.
    Flag: --precision."""
    length_grouped: bool = True
    """Batches of pairs of similar length (transformers' group_by_length: shuffled mega-batches of 50 batches,
    each sorted by length), so a batch pads little; off: random batches."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if min(self.faithfulness_passages, self.answerhood_questions, self.validation_items) < 4:
            raise ConfigError("faithfulness_passages, answerhood_questions and validation_items must be >= 4")
        if self.batch_size < 2 or self.epochs < 1 or self.eval_steps < 1:
            raise ConfigError("batch_size must be >= 2, epochs and eval_steps >= 1")
        if not 0.5 <= self.min_kept <= 1:
            raise ConfigError(f"min_kept must be in [0.5, 1], got {self.min_kept}")
