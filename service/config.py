"""`medcite serve` / `medcite ask` (configs/serve.yaml): the HTTP edge's settings and the blocks of the components it
serves (generator, decoding, verify, rerank)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from core.errors import ConfigError
from core.types import SEARCH_MODES
from generator.config import DecodingConfig, GeneratorConfig, check_decoding_parity
from pipeline.config import PipelineConfig
from pipeline.verify.config import VerifyConfig
from retriever.config import RerankConfig


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """The API server and `medcite ask` (configs/serve.yaml)."""

    index: str = "artifacts/index"
    """Index directory built by `medcite index`. When it is the default and `artifacts/index-tuned` (built by
    `make retriever` with the domain-tuned embedder) exists, that one is used."""
    host: str = "127.0.0.1"
    """Address to listen on (use 0.0.0.0 inside a container)."""
    port: int = 8000
    """TCP port."""
    k: int = 3
    """Passages put into the prompt by default (3 fits SmolLM2's CPU budget; requests may ask up to 20)."""
    mode: str = "hybrid"
    """Default retrieval mode: hybrid, dense or bm25."""
    prompt_tokens: int = 1536
    """Token budget for the prompt (system + passages + question); passages are trimmed to fit."""
    api_key: str = dataclasses.field(default_factory=lambda: os.environ.get("MEDCITE_API_KEY", ""), repr=False)
    """If set, requests must send `Authorization: Bearer <key>`. Env: MEDCITE_API_KEY (keep keys out of YAML)."""
    request_timeout_s: float = 120.0
    """A request still waiting on generation after this long gets 504."""
    max_in_flight: int = 0
    """Requests doing model work at once (answer, chat, verify, retrieve), counted from admission until their work
    really ends (a request that got 504 keeps its place until its thread stops); one more gets 503 + Retry-After
    before any work. 0: the generator's queue_size + 1 (the generating request and those waiting for it)."""
    log_text: bool = False
    """Log question and answer text. Off by default: medical questions are private."""
    allow_raw_chat: bool = False
    """Let /v1/chat/completions with `use_retrieval: false` send a client's conversation to the model as given
    (no retrieval, no verification): only for a medcite serving another medcite. Needs api_key."""
    allow_unsourced: bool = False
    """Let /v1/answer with `use_retrieval: false` return the model's own text, unsourced and unverified. Off: such a
    request gets 403, so nothing the service returns by default is unchecked medical text. Needs api_key."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (no port) the server answers to besides localhost, 127.0.0.1 and [::1] when bound to loopback:
    any other Host header gets 400, so a web page whose name was re-pointed at 127.0.0.1 (DNS rebinding) reaches
    nothing. Bound to another address, the list (if any) is the whole allowlist."""
    allow_unauthenticated: bool = False
    """Start without api_key although host is not a loopback address. Off: such a server refuses to start."""
    followup: str = "focus"
    """How a follow-up question ("How is it treated?") becomes the standalone question retrieval searches for:
    focus (carry the condition the earlier turns were about), model (the generator rewrites it), both (the
    model's rewrite when it names that condition), off (search it as written). benchmarks/followup.py."""
    feedback_db: str = "artifacts/feedback.db"
    """SQLite file for answer records and people's feedback (POST /v1/feedback; `medcite feedback export`). Text
    is stored only with log_text; otherwise keyed hashes and the answer's sources. 0600, with its key beside it
    (`<feedback_db>.key`). "" turns feedback off."""
    feedback_retention_days: float = 90.0
    """Answer records and feedback older than this many days are deleted (at start, then hourly). 0: kept for ever."""
    metrics: str = "open"
    """GET /metrics: open (no key, like the probes: a Prometheus scraper holds no API key and the metrics carry
    no question text), key (behind api_key when one is set), off."""
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    """The language model."""
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    """Default decoding settings."""
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    """The verification stage: attribution, term guard, fallback and abstention."""
    rerank: RerankConfig = dataclasses.field(default_factory=RerankConfig)
    """The optional cross-encoder reranking stage."""

    def pipeline(self) -> PipelineConfig:
        """The answer pipeline's settings these serve settings name."""
        return PipelineConfig(k=self.k, mode=self.mode, prompt_tokens=self.prompt_tokens, followup=self.followup,
                              verify=self.verify)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 20:
            raise ConfigError(f"k must be in [1, 20], got {self.k}")
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.prompt_tokens < 256:
            raise ConfigError(f"prompt_tokens must be >= 256, got {self.prompt_tokens}")
        if self.followup not in ("focus", "model", "both", "off"):
            raise ConfigError(f"followup must be one of focus, model, both, off, got {self.followup!r}")
        if self.metrics not in ("open", "key", "off"):
            raise ConfigError(f"metrics must be one of open, key, off, got {self.metrics!r}")
        check_decoding_parity(self.generator, self.decoding)
        if self.allow_raw_chat and not self.api_key:
            raise ConfigError("allow_raw_chat needs an API key (set MEDCITE_API_KEY): it hands clients the bare model")
        if self.max_in_flight < 0:
            raise ConfigError(f"max_in_flight must be >= 0, got {self.max_in_flight}")
        if self.feedback_retention_days < 0:
            raise ConfigError(f"feedback_retention_days must be >= 0, got {self.feedback_retention_days}")
        if self.allow_unsourced and not self.api_key:
            raise ConfigError("allow_unsourced needs an API key (set MEDCITE_API_KEY): it hands clients unverified "
                              "medical text")
        if not self.api_key and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ConfigError(f"host {self.host} is reachable from other machines and no API key is set; set "
                              "MEDCITE_API_KEY, or allow_unauthenticated: true if a proxy in front authenticates")
