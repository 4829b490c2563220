"""What the handlers work with: the components `medcite serve` loaded once (retriever, generator, judges), the
`Pipeline` built from them, the settings, the feedback store and the metrics, injected into each handler."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State

from core.errors import IndexNotFoundError, OverloadedError
from core.feedback import FeedbackStore  # light (sqlite3): Litestar resolves the Components annotations
from core.types import Answer, Generator, Retriever
from pipeline.answer import Pipeline
from pipeline.verify.judges import Judges  # light (core only): Litestar resolves the Components annotations
from service.config import ServeConfig
from service.metrics import Metrics


@dataclass
class Components:
    """Built once by `create_app` around components the caller loaded."""

    retriever: Retriever | None
    generator: Generator | None
    cfg: ServeConfig
    judges: Judges | None = None
    """The trained faithfulness and answerhood judges (pipeline.verify.judges); None: the lexical judge."""
    feedback: FeedbackStore | None = None
    """Answer records and feedback (core/feedback.py); None: feedback is off."""
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    pipeline: Pipeline | None = dataclasses.field(init=False, default=None)
    """The answer pipeline over these components (None without a generator)."""

    admission: threading.BoundedSemaphore = dataclasses.field(init=False)
    """The places for requests doing model work (`ServeConfig.max_in_flight`)."""

    def __post_init__(self) -> None:
        if self.generator is not None:
            self.pipeline = Pipeline(self.retriever, self.generator, self.judges, self.cfg.pipeline())
        self.places = self.cfg.max_in_flight or self.cfg.generator.queue_size + 1
        self.admission = threading.BoundedSemaphore(self.places)

    def admit(self) -> Slot:
        """A place for one request's model work, or 503 + Retry-After at once: before triage, retrieval or
        tokenisation, so a refused request costs nothing."""
        if not self.admission.acquire(blocking=False):
            raise OverloadedError(f"the server is doing the work of {self.places} requests already; retry shortly")
        self.metrics.in_flight.inc()
        return Slot(self)

    def answered(self, a: Answer) -> None:
        """What every answer leaves behind: its metrics, and its record for feedback (in the worker thread)."""
        if self.cfg.metrics != "off":
            self.metrics.answer(a)
        if self.feedback is not None:
            self.feedback.record(a)

    def judge_info(self) -> dict:
        return self.judges.describe() if self.judges is not None else {"faithfulness": "lexical",
                                                                       "answerhood": "embedder cosine"}

    def need_retriever(self) -> Retriever:
        if self.retriever is None:
            raise IndexNotFoundError("the server was started without an index")
        return self.retriever

    def need_generator(self) -> Generator:
        if self.generator is None:
            raise IndexNotFoundError("the server was started without a generator")
        return self.generator

    def need_pipeline(self, use_retrieval: bool = True) -> Pipeline:
        """The pipeline, once the parts a request needs are there (503 otherwise)."""
        if use_retrieval:
            self.need_retriever()
        self.need_generator()
        assert self.pipeline is not None
        return self.pipeline


class Slot:
    """One admitted request's place, given back exactly once: when its work ends (in the worker thread, even after
    the request got 504), or by the handler when no work was started."""

    def __init__(self, c: Components):
        self._c, self._lock, self._held, self.handed_over = c, threading.Lock(), True, False

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._c.admission.release()
                self._c.metrics.in_flight.dec()

    def around(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` giving the place back when it returns or raises, wherever it runs."""
        self.handed_over = True

        def work(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self.release()

        return work

    def over(self, items: Iterator) -> Iterator:
        """A stream giving the place back when it ends, fails or is closed (a client that went away)."""
        self.handed_over = True
        return self._drain(items)

    def _drain(self, items: Iterator) -> Iterator:
        try:
            yield from items
        finally:
            self.release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_: object) -> None:
        if not self.handed_over:  # refused or failed before any work started
            self.release()


def provide_components(state: State) -> Components:
    return state.components
