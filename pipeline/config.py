"""The answer pipeline's settings: how many passages it shows, how it searches, how large a prompt it builds, how a
follow-up becomes standalone, and how the draft is verified. Not a YAML file of its own: `medcite serve` takes
them from configs/serve.yaml (`ServeConfig.pipeline()`), `medcite eval` from configs/eval.yaml."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.errors import ConfigError
from core.types import SEARCH_MODES
from pipeline.verify.config import VerifyConfig

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
