"""`medcite eval` (configs/eval.yaml): the offline evaluation's settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config import default_data_dir
from core.errors import ConfigError
from core.types import SEARCH_MODES
from generator.config import DecodingConfig, GeneratorConfig, check_decoding_parity
from pipeline.config import PipelineConfig
from pipeline.verify.config import VerifyConfig

MIRAGE_TASKS = ("mmlu", "medqa", "medmcqa", "pubmedqa", "bioasq")


@dataclass(frozen=True)
class EvalConfig:
    """The offline evaluation (configs/eval.yaml; `medcite eval --quick` for the 15-minute version)."""

    run_name: str = "dev"
    """Names the run: results go to <out>/<run_name>/. A rerun with the same settings resumes there."""
    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    questions: str = "splits/medquad_dev.jsonl"
    """Open-ended questions, JSONL with `id`, `question` and `gold_medquad_id` / `gold_record_id` and/or
    `gold_answer`; relative to data_dir unless absolute. Empty: skip the open-ended part. Flag: --questions."""
    gold_corpora: tuple[str, ...] = ("medquad:medquad", "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json")
    """Corpora that gold answer texts are looked up in when a question gives only a gold record id."""
    index: str = "artifacts/index"
    """Index directory for the retrieval arms."""
    arms: tuple[str, ...] = ("base:none", "base:hybrid")
    """Arms as `<model>:<retrieval>`: model `base` or `tuned` (base + adapter), retrieval none (the
    no-retrieval baseline), bm25, dense or hybrid. The first arm is the baseline every other arm is compared
    with; a tuned arm is also compared with the base arm of the same retrieval. Flag: --arms."""
    adapter: str = ""
    """Adapter directory for `tuned` arms (from `medcite finetune`)."""
    limit: int = 0
    """Open-ended questions to use (0 = all), in file order. Flag: --limit."""
    k: int = 3
    """Passages per retrieval arm (serving's default)."""
    concurrency: int = 1
    """Questions in flight at once. Above 1 only with generator.backend remote (a vLLM or medcite server batches
    them; a local model answers one at a time); results are identical to the sequential run. Flag: --concurrency."""
    prompt_tokens: int = 1536
    """Prompt token budget, as in serving."""
    mirage: str = "mirage/benchmark.json"
    """MIRAGE benchmark file (upstream layout), relative to data_dir. Empty: skip multiple choice."""
    mirage_tasks: tuple[str, ...] = MIRAGE_TASKS
    """MIRAGE tasks to run."""
    mirage_limit: int = 0
    """MIRAGE items in total (0 = all 7,663): a seeded subset, stratified over tasks."""
    seed: int = 0
    """Seed for the MIRAGE subset and the bootstrap."""
    bootstrap_samples: int = 2000
    """Resamples for the paired bootstrap intervals."""
    wrong_f1: float = 0.2
    """An open-ended answer with token F1 below this counts as wrong (for the length plot)."""
    out: str = "artifacts/eval"
    """Results go to <out>/<run_name>/. Flag: --out."""
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    """The base model (the `tuned` arms add `adapter`)."""
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    """Decoding for open-ended answers: the deployment settings."""
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    """The verification stage, as served."""

    def pipeline(self, mode: str = "hybrid") -> PipelineConfig:
        """The answer pipeline's settings of an arm retrieving with `mode` (as served: follow-ups are not asked)."""
        return PipelineConfig(k=self.k, mode=mode, prompt_tokens=self.prompt_tokens, verify=self.verify)

    def __post_init__(self) -> None:
        if not self.arms:
            raise ConfigError("arms must name at least one arm")
        for arm in self.arms:
            model, _, retrieval = arm.partition(":")
            if model not in ("base", "tuned") or retrieval not in ("none", *SEARCH_MODES):
                raise ConfigError(f"arm {arm!r} is not <base|tuned>:<none|bm25|dense|hybrid>")
            if model == "tuned" and not self.adapter:
                raise ConfigError(f"arm {arm!r} needs adapter (a directory from `medcite finetune`)")
        if len(set(self.arms)) != len(self.arms):
            raise ConfigError("arms must not repeat")
        bad = set(self.mirage_tasks) - set(MIRAGE_TASKS)
        if bad:
            raise ConfigError(f"unknown MIRAGE task(s) {', '.join(sorted(bad))}; known: {', '.join(MIRAGE_TASKS)}")
        if self.limit < 0 or self.mirage_limit < 0 or not 1 <= self.k <= 20 or self.bootstrap_samples < 100:
            raise ConfigError("limit and mirage_limit must be >= 0, k in [1, 20], bootstrap_samples >= 100")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name must be a plain name, got {self.run_name!r}")
        if not self.questions and not self.mirage:
            raise ConfigError("nothing to evaluate: questions and mirage are both empty")
        if self.concurrency < 1 or (self.concurrency > 1 and self.generator.backend != "remote"):
            raise ConfigError(f"concurrency {self.concurrency}: must be >= 1, and above 1 only with generator.backend "
                              "remote (a local model answers one question at a time)")
        check_decoding_parity(self.generator, self.decoding)
