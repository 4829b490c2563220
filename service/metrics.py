"""Prometheus metrics of the API (GET /metrics), kept with prometheus-client in a registry per app.

    m = Metrics()
    m.request("/v1/answer", 200, 1.9)            # the request middleware, for every route
    m.answer(a)                                  # after each answer: stages, mode, removed sentences, triage, tokens
    body, content_type = m.render()

No label holds text from a question or an answer: routes are the app's route templates, reasons and modes
fixed words, triage labels rule names.
"""

from __future__ import annotations

import re

from core.types import Answer

STAGES = ("retrieve", "generate", "verify", "total")
# seconds: a retrieval is milliseconds, a CPU generation up to minutes
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_REASONS = [(re.compile(p), name) for p, name in (
    (r"^removed a sentence with ", "term_guard"),
    (r"^removed a sentence no shown passage supports", "unsupported"),
    (r"^removed a sentence that does not answer", "not_an_answer"),
    (r"^removed a sentence that contradicts", "contradicts_triage"),
    (r"^removed a ", "not_a_claim"),
)]


def removal_reason(warning: str) -> str | None:
    """The fixed reason word for a verification warning that removed a sentence (None: it removed nothing)."""
    return next((name for p, name in _REASONS if p.match(warning)), None)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("medcite_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("medcite_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=_BUCKETS, registry=r)
        self.stages = Histogram("medcite_stage_seconds", "Answer pipeline stage latency", ["stage"],
                                buckets=_BUCKETS, registry=r)
        self.in_flight = Gauge("medcite_generation_queue_depth",
                               "Requests admitted for model work (answer, chat, verify, retrieve) whose work has not ended",
                               registry=r)
        self.overloaded = Counter("medcite_overloaded", "Requests refused with 503 because the queue was full",
                                  registry=r)
        self.modes = Counter("medcite_answers", "Answers by answer mode", ["answer_mode"], registry=r)
        self.removed = Counter("medcite_sentences_removed", "Sentences verification removed, by reason",
                               ["reason"], registry=r)
        self.triage = Counter("medcite_triage_fired", "Questions triage flagged, by rule and layer",
                              ["rule", "layer"], registry=r)
        self.tokens = Counter("medcite_generated_tokens", "Tokens generated", registry=r)
        self.feedback = Counter("medcite_feedback", "Feedback stored, by rating", ["rating"], registry=r)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status == 503:
            self.overloaded.inc()

    def answer(self, a: Answer) -> None:
        for stage in STAGES:
            ms = a.timings.get(f"{stage}_ms")
            if ms is not None:
                self.stages.labels(stage).observe(ms / 1000)
        self.modes.labels(a.answer_mode).inc()
        for w in a.warnings:
            reason = removal_reason(w)
            if reason:
                self.removed.labels(reason).inc()
        if a.triage:
            self.triage.labels(a.triage["rule"], a.triage.get("layer") or "rule").inc()
        self.tokens.inc(a.usage.get("completion_tokens", 0))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
