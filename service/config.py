"""`medcite serve` (configs/serve.yaml): the HTTP edge's settings on top of the answer as served
(`pipeline.config.AnswerConfig`: index, generator, decoding, verify, rerank and the pipeline's own settings)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from core.errors import ConfigError
from pipeline.config import AnswerConfig


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig(AnswerConfig):
    """The API server (configs/serve.yaml): the answer as served (`AnswerConfig`) and the HTTP edge's settings."""

    host: str = "127.0.0.1"
    """Address to listen on (use 0.0.0.0 inside a container)."""
    port: int = 8000
    """TCP port."""
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
    feedback_db: str = "artifacts/feedback.db"
    """SQLite file for answer records and people's feedback (POST /v1/feedback; `medcite feedback export`). Text
    is stored only with log_text; otherwise keyed hashes and the answer's sources. 0600, with its key beside it
    (`<feedback_db>.key`). "" turns feedback off."""
    feedback_retention_days: float = 90.0
    """Answer records and feedback older than this many days are deleted (at start, then hourly). 0: kept for ever."""
    metrics: str = "open"
    """GET /metrics: open (no key, like the probes: a Prometheus scraper holds no API key and the metrics carry
    no question text), key (behind api_key when one is set), off."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.metrics not in ("open", "key", "off"):
            raise ConfigError(f"metrics must be one of open, key, off, got {self.metrics!r}")
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
