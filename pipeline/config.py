"""The answer's settings. `AnswerConfig`: the answer as served (configs/serve.yaml without its HTTP settings: index,
reranker, generator, decoding, verification, and the pipeline's own settings). `PipelineConfig`: what one `Pipeline`
does with every question (passages shown, search mode, prompt budget, follow-ups, verification), derived from
`AnswerConfig.pipeline()` or, for `medcite eval`, from configs/eval.yaml (`EvalConfig.pipeline(mode)`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.errors import ConfigError
from core.types import SEARCH_MODES
from generator.config import DecodingConfig, GeneratorConfig, check_decoding_parity
from pipeline.verify.config import VerifyConfig
from retriever.config import RerankConfig

FOLLOWUP_MODES = ("focus", "model", "both", "off")


@dataclass(frozen=True)
class PipelineConfig:
    """What one `Pipeline` does with every question it is given (a request may override k and mode)."""

    k: int = 3
    """Passages shown to the generator (a question asking several things shows at least two a part)."""
    mode: str = "hybrid"
    """Retrieval mode: dense, bm25 or hybrid."""
    prompt_tokens: int = 1536
    """Token budget of the prompt (passages and earlier turns), further capped by the model's context window."""
    followup: str = "focus"
    """How a follow-up becomes a standalone question (pipeline/followup.py): focus, model, both or off."""
    verify: VerifyConfig | None = dataclasses.field(default_factory=VerifyConfig)
    """The verification stage's settings; None: the draft is the answer, untriaged (for measuring what
    verification changes, and for a conversation sent to the bare model)."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 20:
            raise ConfigError(f"k must be in [1, 20], got {self.k}")
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")
        if self.followup not in FOLLOWUP_MODES:
            raise ConfigError(f"followup must be one of {', '.join(FOLLOWUP_MODES)}, got {self.followup!r}")


@dataclass(frozen=True)
class AnswerConfig:
    """The answer as served (configs/serve.yaml without its HTTP settings): which index, reranker, generator and
    judges, and how the pipeline uses them. `medcite ask`, `medcite serve` (whose `ServeConfig` adds the HTTP
    settings) and the benchmarks that measure the served default load it; `load_pipeline` (pipeline/loader.py)
    builds the `Pipeline` from it."""

    index: str = "artifacts/index"
    """Index directory built by `medcite index`. `artifacts/index-tuned` (`make retriever`, the domain-tuned
    embedder) is used only when named here or with `--index`, and brings its reranker: as served it did not beat
    the base index on the consumer dev questions by more than noise (docs/retrieval.md)."""
    k: int = 3
    """Passages put into the prompt by default (3 fits SmolLM2's CPU budget; requests may ask up to 20)."""
    mode: str = "hybrid"
    """Default retrieval mode: hybrid, dense or bm25."""
    prompt_tokens: int = 1536
    """Token budget for the prompt (system + passages + question); passages are trimmed to fit."""
    followup: str = "focus"
    """How a follow-up question ("How is it treated?") becomes the standalone question retrieval searches for:
    focus (carry the condition the earlier turns were about), model (the generator rewrites it), both (the
    model's rewrite when it names that condition), off (search it as written). benchmarks/followup.py."""
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    """The language model."""
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    """Default decoding settings."""
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    """The verification stage: attribution, term guard, fallback and abstention."""
    rerank: RerankConfig = dataclasses.field(default_factory=RerankConfig)
    """The optional cross-encoder reranking stage."""


    def pipeline(self) -> PipelineConfig:
        """The answer pipeline's settings these settings name."""
        return PipelineConfig(k=self.k, mode=self.mode, prompt_tokens=self.prompt_tokens, followup=self.followup,
                              verify=self.verify)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 20:
            raise ConfigError(f"k must be in [1, 20], got {self.k}")
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")
        if self.prompt_tokens < 256:
            raise ConfigError(f"prompt_tokens must be >= 256, got {self.prompt_tokens}")
        if self.followup not in FOLLOWUP_MODES:
            raise ConfigError(f"followup must be one of {', '.join(FOLLOWUP_MODES)}, got {self.followup!r}")
        check_decoding_parity(self.generator, self.decoding)
