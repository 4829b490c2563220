"""What the handlers work with: the components `medcite serve` loaded once (retriever, generator, judges), the
`Pipeline` built from them, the settings, the feedback store and the metrics, injected into each handler."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from litestar.datastructures import State

from core.errors import IndexNotFoundError
from core.types import Answer, Generator, Retriever
from pipeline.answer import Pipeline
from pipeline.verify.judges import Judges  # light (core only): Litestar resolves the Components annotations
from service.config import ServeConfig
from service.feedback import FeedbackStore  # light (sqlite3): Litestar resolves the Components annotations
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
    """Answer records and feedback (service/feedback.py); None: feedback is off."""
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    pipeline: Pipeline | None = dataclasses.field(init=False, default=None)
    """The answer pipeline over these components (None without a generator)."""

    def __post_init__(self) -> None:
        if self.generator is not None:
            self.pipeline = Pipeline(self.retriever, self.generator, self.judges, self.cfg.pipeline())

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


def provide_components(state: State) -> Components:
    return state.components
