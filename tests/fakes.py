"""Fakes behind the real protocols (core.types.Retriever / Generator), for pipeline and API tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from core.types import Generation, Hit, Passage


class FakeRetriever:
    fingerprint = "fake-index-0001"

    def __init__(self, n: int = 5, docs: list[tuple[str, str]] | None = None):
        """n generic passages, or `docs` as (title, text) pairs, in rank order."""
        docs = docs or [(f"Topic {i}", f"Passage {i} text about topic {i}.") for i in range(n)]
        self.passages = [Passage(f"r{i}:1#0", f"r{i}:1", title, text, "fake", f"https://example.org/{i}")
                         for i, (title, text) in enumerate(docs)]
        self.calls: list[tuple[str, int, str]] = []

    def search(self, query: str, k: int = 5, mode: str = "hybrid", source: str | None = None,
               per_record: bool = True) -> list[Hit]:
        self.calls.append((query, k, mode))
        return [Hit(p, 1.0 / (i + 1), i + 1) for i, p in enumerate(self.passages[:k])]

    def resolve_record(self, record_id: str) -> str:
        return record_id

    def passages_of(self, record_id: str) -> list[Passage]:
        return [p for p in self.passages if p.record_id == record_id]

    def embed(self, texts: list[str]):
        """Hashed bag of words, L2-normalised: texts sharing words are close, as with a real embedder."""
        import zlib

        import numpy as np

        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").split():
                out[i, zlib.crc32(w.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def knows(self, word: str) -> bool:
        corpus = " ".join(p.title + " " + p.text for p in self.passages).lower()
        return word.lower() in corpus or word.lower() in {"the", "and", "with", "for", "treat", "treated"}


class FakeGenerator:
    """Returns a scripted answer; records the messages it saw. `block` makes generate wait (queue tests)."""

    name = "fake-llm"
    context_window = 4096

    def __init__(self, text: str = "Topic 1 is covered [1] and [2]; see also [9].", block: threading.Event | None = None):
        self.text, self.block = text, block
        self.seen: list[list[dict[str, str]]] = []
        self.overrides: list[dict] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def health(self) -> None:
        return None

    def generate(self, messages, **overrides) -> Generation:
        self.seen.append(messages)
        self.overrides.append(overrides)
        if self.block is not None:
            self.block.wait(10)
        return Generation(self.text, prompt_tokens=sum(len(m["content"].split()) for m in messages),
                          completion_tokens=len(self.text.split()), stop_reason="end_of_turn")

    def stream(self, messages, **overrides) -> Iterator[str | Generation]:
        final = self.generate(messages, **overrides)
        for word in final.text.split(" "):
            yield word + " "
        yield final

    def option_logprobs(self, messages, options: list[str]) -> list[float]:
        """Prefers the option whose letter appears latest in the alphabet: deterministic, easy to assert."""
        self.seen.append(messages)
        return [-float(len(options) - i) for i in range(len(options))]
