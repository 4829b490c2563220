"""`medcite finetune` (configs/finetune-smollm2.yaml, configs/finetune-llama3.2-3b.yaml): the generator's QLoRA job
and its data preparation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config import default_data_dir
from core.corpus import READERS
from core.errors import ConfigError
from core.quality import DEFAULT_QUALITY_WEIGHTS
from core.types import SEARCH_MODES
from generator.config import DecodingConfig
from pipeline.verify.config import VerifyConfig

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


QUANTIZATIONS = ("none", "nf4")


@dataclass(frozen=True)
class FinetuneDataConfig:
    """How `medcite finetune prepare` builds the training set (the `data:` block of configs/finetune*.yaml)."""

    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets; source paths are relative to it. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    sources: tuple[str, ...] = (
        "chat:chatdoctor/GenMedGPT-5k.json",
        "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json",
        "medquad:medquad",
    )
    """`<reader>:<path>` sources. `chat` reads {instruction, input, output} dialogues (GenMedGPT-5k, ChatDoctor
    HealthCareMagic-100k, iCliniq); `wikidoc` MedAlpaca WikiDoc JSON/JSONL (also the HF WikiDoc sets exported to
    JSON); `medquad` the MedQuAD XML tree (reserved documents are always excluded)."""
    mix: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"chat": 0.60, "wikidoc": 0.25, "medquad": 0.15})
    """Share of examples per reader. Default 85% conversational/narrative (dialogues + WikiDoc patient
    information) and 15% encyclopedic (MedQuAD): the balance the write-ups found fixed the list runaway."""
    size: int = 2000
    """Examples to draw in total (train + eval) before the split; a source with too few gives all it has."""
    eval_share: float = 0.1
    """Share of each (source, question type) stratum held out for evaluation and the probe set."""
    seed: int = 0
    """Seed for sampling, the split, gold-passage placement and the no-retrieval draw."""
    reserved: str = "splits/medquad_reserved_documents.txt"
    """MedQuAD documents (`<subset>:<stem>`) never trained on; relative to data_dir. Must exist."""
    max_answer_tokens: int = 512
    """Drop examples whose answer (completion) is longer than this many tokens of the model's tokenizer."""
    near_duplicate_threshold: float = 0.8
    """Word-5-gram Jaccard similarity at or above which two answers count as near-duplicates (one is dropped)."""
    index: str = "artifacts/index"
    """Index the RAG examples retrieve from (built by `medcite index`), so training sees serving's passages."""
    mode: str = "hybrid"
    """Retrieval mode for the examples' passages."""
    k: int = 3
    """Passages per RAG example (serving's default k)."""
    prompt_tokens: int = 1536
    """Prompt token budget, as in serving (passages are trimmed by the same builder)."""
    gold_probability: float = 0.8
    """Probability that a RAG example with a known source record shows a passage of it (then cited in the
    target); otherwise only other passages are shown and the model must not cite what is not there."""
    no_retrieval_share: float = 0.1
    """Share of examples built with the no-retrieval prompt, so the tuned model also answers without passages."""
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    """The support definition the server verifies answers with (support_threshold, lexical_weight): a target
    sentence is cited [n] when passage n supports it by that same rule (pipeline.verify.support.attribute)."""

    def __post_init__(self) -> None:
        for spec in self.sources:
            reader, _, path = spec.partition(":")
            if reader not in READERS or not path:
                raise ConfigError(f"data source {spec!r} is not `<reader>:<path>` with reader {', '.join(READERS)}")
        readers = {s.partition(":")[0] for s in self.sources}
        if not self.mix or any(v < 0 for v in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ConfigError("data.mix must give each reader a non-negative share, summing above 0")
        if set(self.mix) - readers:
            raise ConfigError(f"data.mix names reader(s) without a source: {', '.join(sorted(set(self.mix) - readers))}")
        for name in ("eval_share", "gold_probability", "no_retrieval_share", "near_duplicate_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.size < 2 or self.max_answer_tokens < 8 or not 1 <= self.k <= 20:
            raise ConfigError("data.size must be >= 2, data.max_answer_tokens >= 8, data.k in [1, 20]")
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"data.mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning job (configs/finetune-smollm2.yaml on CPU, configs/finetune-llama3.2-3b.yaml on a GPU)."""

    run_name: str = "smollm2-medcite"
    """Names the run: checkpoints go to <work_dir>/<run_name>, the adapter to <out>/<run_name>."""
    model: str = ""
    """Base model: local HF directory, hub id (online only), or .gguf file. Empty: the packaged SmolLM2-135M-Instruct."""
    quantization: str = "none"
    """`nf4`: QLoRA, the frozen base in 4-bit NF4 with double quantisation (bitsandbytes; works on CPU too, where it
    saves memory, not time). `none`: plain LoRA on a float base."""
    dtype: str = "float32"
    """Base weight / compute dtype: float32 on CPU (no fast bf16 here), bfloat16 on a GPU. LoRA weights are fp32 on a
    float base and bf16 on an NF4 base (TRL's QLoRA casting)."""
    pad_token: str = ""
    """Padding token; must already be in the vocabulary (never added). Empty: the model's reserved pad token
    (`<|finetune_right_pad_id|>` for Llama 3.x), else its pad token if it is not eos, else an unused special token."""
    lora_r: int = 8
    """LoRA rank. 8 as in the write-ups: on Llama-3.2-3B with all seven targets that is 12.2M parameters. The
    adapter file holds those LoRA tensors only: 23.2 MiB with an NF4 base (TRL keeps QLoRA adapters in bf16, the
    QLoRA paper's recipe; measured on an H200), 4 bytes each with a float base (SmolLM2-135M: 9.4 MB)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (alpha / r = 2, the write-ups' ratio)."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA input (0.1: the QLoRA paper's value for models up to 13B, and the write-ups')."""
    target_modules: tuple[str, ...] = LORA_TARGETS
    """Modules that get LoRA: attention and MLP projections. Never embeddings or lm_head (checked)."""
    learning_rate: float = 2e-4
    """Peak learning rate (AdamW)."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warmup (transformers' names: cosine, linear, constant_with_warmup, ...)."""
    warmup_ratio: float = 0.05
    """Share of steps spent warming up linearly."""
    epochs: float = 1.0
    """Passes over the training set (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Optimizer steps to run; 0 = derived from epochs."""
    batch_size: int = 4
    """Examples per forward pass."""
    gradient_accumulation: int = 4
    """Forward passes per optimizer step (effective batch = batch_size x gradient_accumulation)."""
    max_length: int = 2048
    """Longest training sequence in tokens (prompt + answer). Longer examples are a preflight error, never
    truncated: truncation would cut the end-of-turn token off the labels."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory on a GPU; slows a CPU run)."""
    eval_steps: int = 25
    """Evaluate (loss + probe answers) and save a checkpoint every this many optimizer steps."""
    logging_steps: int = 5
    """Log training loss and token accuracy every this many steps."""
    probe_size: int = 24
    """Held-out prompts answered at every evaluation with the deployment decoding; checkpoints are chosen by them."""
    quality_weights: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_QUALITY_WEIGHTS))
    """The quality score: weights over probe-set metric means (see core/quality.py). The best checkpoint by
    this score is kept, not the one with the lowest loss."""
    allow_worse: bool = False
    """Publish the kept adapter even if it does not beat the base model on the probe set. Off: the job keeps
    the checkpoints, publishes nothing and exits non-zero. Flag: --allow-worse."""
    seed: int = 0
    """Training seed (LoRA init, data order, dropout)."""
    threads: int = 0
    """torch threads; 0 = all cores."""
    work_dir: str = "artifacts/finetune"
    """Prepared data and checkpoints go to <work_dir>/<run_name>/ (kept for resuming)."""
    out: str = "artifacts/adapters"
    """The chosen adapter and its report go to <out>/<run_name>/ (written atomically at the end)."""
    data: FinetuneDataConfig = dataclasses.field(default_factory=FinetuneDataConfig)
    """Training-set preparation."""
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    """Decoding for the probe answers: the deployment settings."""

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization must be none or nf4, got {self.quantization!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        bad = [m for m in self.target_modules if "embed" in m or m == "lm_head"]
        if bad:
            raise ConfigError(f"target_modules must not include embeddings or lm_head: {', '.join(bad)}")
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_r and lora_alpha must be >= 1 and lora_dropout in [0, 1)")
        if min(self.batch_size, self.gradient_accumulation, self.eval_steps, self.logging_steps) < 1:
            raise ConfigError("batch_size, gradient_accumulation, eval_steps and logging_steps must be >= 1")
        if self.max_steps < 0 or self.epochs <= 0 or self.probe_size < 1 or self.max_length < 64:
            raise ConfigError("max_steps must be >= 0, epochs > 0, probe_size >= 1, max_length >= 64")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name must be a plain name, got {self.run_name!r}")
