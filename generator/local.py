"""What every in-process generator shares: the one-at-a-time lock and bounded queue, per-request decoding
settings, deadlines and cancellation, streaming through a worker thread, and the final `Generation`.

A backend subclasses `LocalGenerator` and implements `_run(prompt_ids, settings, stop, on_text)`: decode greedily
under `self._lock` (returning None, without any prefill, when the request died while it waited), call `on_text`
with each new piece of text when streaming, and return the generated token ids. `generator.hf.HFGenerator`
(transformers) and `generator.llamacpp.LlamaCppGenerator` (llama.cpp on GGUF weights) are the two.

    gen.generate(messages, max_new_tokens=64, deadline=time.monotonic() + 30, cancel=threading.Event())
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, NamedTuple

from core.errors import ConfigError, InvalidRequestError, ModelLoadError, OverloadedError
from core.types import Generation
from generator.config import DecodingConfig
from generator.prompt import control_strings, neutralise_messages

OnText = Callable[[str], None]


class Decoded(NamedTuple):
    """What a backend's `_run` returns: the new token ids and the seconds its prefill took."""

    ids: list[int]
    prefill_s: float | None


class StopSignal:
    """A request's deadline (time.monotonic()) and cancel event, as the decoding loop sees them."""

    def __init__(self, deadline: float | None, cancel: threading.Event | None):
        self.deadline, self.cancel = deadline, cancel or threading.Event()

    def reason(self) -> str | None:
        if self.cancel.is_set():
            return "cancelled"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "timeout"
        return None


def stop_token_ids(tokenizer, *declared) -> list[int]:
    """Every id that ends a turn: the model's declared eos / end-of-turn id(s) plus the tokenizer's eos."""
    ids: list[int] = []
    for value in (*declared, tokenizer.eos_token_id):
        for i in value if isinstance(value, list | tuple) else [value]:
            if isinstance(i, int) and i >= 0 and i not in ids:
                ids.append(i)
    if not ids:
        raise ModelLoadError("the model declares no eos / end-of-turn token; cannot know when an answer ends")
    return ids


class LocalGenerator:
    """A model in this process behind the `Generator` protocol. `generate`/`stream` are thread-safe: one
    generation at a time (a lock), at most `queue_size` callers waiting; beyond that OverloadedError (HTTP 503)."""

    name: str
    context_window: int | None

    def __init__(self, tokenizer, name: str, decoding: DecodingConfig, stop_ids: list[int], queue_size: int):
        self.tokenizer, self.name, self.decoding, self.stop_ids = tokenizer, name, decoding, stop_ids
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(queue_size + 1)

    # --- what a backend implements -----------------------------------------------------------------------------

    def _run(self, prompt_ids: list[int], d: DecodingConfig, stop: StopSignal, on_text: OnText | None
             ) -> Decoded | None:
        raise NotImplementedError

    # --- the Generator protocol ------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def health(self) -> None:
        """Loaded means ready: nothing outside this process to check."""

    def generate(self, messages: list[dict[str, str]], **overrides) -> Generation:
        d, stop, ids = self._request(messages, overrides)
        self._acquire()
        try:
            out = self._run(ids, d, stop, None)
        finally:
            self._slots.release()
        return self._finish(out, len(ids), d.max_new_tokens, stop)

    def stream(self, messages: list[dict[str, str]], **overrides) -> Iterator[str | Generation]:
        """Yields text pieces as they are decoded, then the final Generation (same text as generate()). A consumer
        that stops early (a client that disconnected) cancels the decoding at its next token."""
        d, stop, ids = self._request(messages, overrides)
        self._acquire()
        pieces: queue.Queue[str | None] = queue.Queue()
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["out"] = self._run(ids, d, stop, pieces.put)
            except BaseException as e:  # surfaced to the consumer below
                result["error"] = e
            finally:
                self._slots.release()
                pieces.put(None)

        worker = threading.Thread(target=run, name="medcite-generate", daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not None:
                if piece:
                    yield piece
        finally:
            if worker.is_alive():  # the consumer stopped early: nobody reads what follows
                stop.cancel.set()
        worker.join()
        if "error" in result:
            raise result["error"]
        yield self._finish(result.get("out"), len(ids), d.max_new_tokens, stop)

    # --- shared helpers --------------------------------------------------------------------------------------

    def _request(self, messages: list[dict[str, str]], overrides: dict[str, Any]
                 ) -> tuple[DecodingConfig, StopSignal, list[int]]:
        return (self._settings(overrides), StopSignal(overrides.get("deadline"), overrides.get("cancel")),
                self._prompt_ids(messages))

    def _settings(self, overrides: dict[str, Any]) -> DecodingConfig:
        overrides = {k: v for k, v in overrides.items() if k not in ("deadline", "cancel")}
        allowed = {"max_new_tokens", "repetition_penalty", "penalty_scope"}
        bad = set(overrides) - allowed
        if bad:
            raise InvalidRequestError(f"unknown decoding override(s): {', '.join(sorted(bad))}")
        try:
            return replace(self.decoding, **{k: v for k, v in overrides.items() if v is not None})
        except ConfigError as e:
            raise InvalidRequestError(str(e)) from None

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template applied by the model's own tokenizer: both backends see the same prompt tokens. Control-
        token strings in any message's text are neutralised first (generator.prompt.neutralise)."""
        if getattr(self, "_controls", None) is None:
            self._controls = control_strings(self.tokenizer)
        enc = self.tokenizer.apply_chat_template(neutralise_messages(messages, self._controls),
                                                 add_generation_prompt=True, return_dict=True)
        return list(enc["input_ids"])

    def _option_ids(self, options: list[str]) -> list[list[int]]:
        conts = [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
        if any(not c for c in conts):
            raise InvalidRequestError("an option is empty after tokenization")
        return conts

    def _acquire(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise OverloadedError("the generator is busy and its queue is full; retry shortly")

    def _finish(self, out: Decoded | None, prompt_tokens: int, max_new_tokens: int, stop: StopSignal
                ) -> Generation:
        new_ids, prefill_s = out if out is not None else ([], None)
        ended = bool(new_ids) and new_ids[-1] in self.stop_ids
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
        reason = ("end_of_turn" if ended else "length" if len(new_ids) >= max_new_tokens
                  else stop.reason() or "timeout")
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(new_ids), stop_reason=reason,
                          prefill_ms=None if prefill_s is None else round(prefill_s * 1000, 2))


class TextPieces:
    """Incremental detokenization for streaming: the text a growing id list adds, held back while it ends in a
    partial UTF-8 character (the tokenizer's U+FFFD), so pieces always concatenate to the final decode."""

    def __init__(self, tokenizer, on_text: OnText):
        self.tokenizer, self.on_text, self.ids, self.sent = tokenizer, on_text, [], ""

    def add(self, token_id: int) -> None:
        self.ids.append(token_id)
        self._send(final=False)

    def flush(self) -> None:
        """At the end of decoding: send what is held back, a partial character included."""
        self._send(final=True)

    def _send(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.startswith(self.sent) or (text.endswith("\ufffd") and not final):
            return
        piece, self.sent = text[len(self.sent):], text
        if piece:
            self.on_text(piece)
