"""A generator that calls an OpenAI-compatible chat-completions server (vLLM, llama.cpp server, another medcite).

    gen = RemoteGenerator.from_config(GeneratorConfig(backend="remote", remote_url="http://gpu:8000/v1",
                                                      remote_model="meta-llama/Llama-3.2-3B-Instruct"),
                                      DecodingConfig())

Production can run Llama-3.2-3B on a GPU box while this API stays light. Decoding is greedy (temperature 0).
The repetition penalty is sent as `repetition_penalty`; which tokens the server applies it to is
`remote_penalty_scope` (vLLM and llama.cpp: the prompt too; another medcite: generated tokens only), and a
config whose decoding asks for a generated-only penalty from a server that penalises the prompt is refused at
start (that setting measured token F1 0.082 against 0.269). The adapter the server serves is checked for this
prompt version, as the local backend checks the one it loads. At most queue_size + 1 requests are in flight
(more get 503, as locally); connection errors are retried with backoff (stamina) inside the request's deadline;
`health()` (behind /readyz) asks the server for its models. The token budget for prompts uses a conservative
character estimate, since the remote tokenizer is not local.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from core.errors import ConfigError, InvalidRequestError, OverloadedError, UpstreamError
from core.types import Generation
from generator.config import DecodingConfig, GeneratorConfig
from generator.prompt import approx_tokens, check_adapter, neutralise_messages

RETRY_ATTEMPTS = 3


class RemoteGenerator:
    def __init__(self, base_url: str, model: str, decoding: DecodingConfig, api_key: str = "",
                 extra_body: dict[str, Any] | None = None, timeout_s: float = 120.0, queue_size: int = 8):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model, self.decoding, self.extra_body = model, decoding, dict(extra_body or {})
        self.name = f"remote:{model or base_url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self._slots = threading.BoundedSemaphore(queue_size + 1)

    @classmethod
    def from_config(cls, cfg: GeneratorConfig, decoding: DecodingConfig) -> RemoteGenerator:
        if cfg.adapter:  # the adapter the remote server serves (vLLM --lora-modules) must match this prompt
            check_adapter(cfg.adapter)
        return cls(cfg.remote_url, cfg.remote_model, decoding, os.environ.get(cfg.remote_api_key_env, ""),
                   cfg.remote_extra_body, cfg.timeout_s, cfg.queue_size)

    def health(self) -> None:
        """The server answers its model list within 5 s, with this model in it when one is named."""
        import httpx

        try:
            r = self._client.get(self.base_url + "/models", timeout=5.0)
        except httpx.HTTPError as e:
            raise UpstreamError(f"remote generator at {self.base_url} unreachable: {e}") from None
        self._raise_for(r)
        try:
            names = {m.get("id") for m in r.json().get("data", [])}
        except (ValueError, AttributeError):
            raise UpstreamError(f"remote generator at {self.base_url} sent no model list") from None
        if self.model and names and self.model not in names:
            raise UpstreamError(f"remote generator serves {sorted(n for n in names if n)}, not {self.model!r}")

    def _acquire(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise OverloadedError("the generator is busy and its queue is full; retry shortly")

    def _send(self, fn, deadline: float | None):
        """fn() with retries on connection errors (nothing reached the server, so a retry is safe), with
        exponential backoff, within the request's deadline."""
        import httpx
        import stamina

        budget = self.timeout_s if deadline is None else max(0.0, deadline - time.monotonic())
        for attempt in stamina.retry_context(on=(httpx.ConnectError, httpx.ConnectTimeout), attempts=RETRY_ATTEMPTS,
                                             timeout=budget, wait_initial=0.2, wait_max=2.0):
            with attempt:
                return fn()

    context_window: int | None = None  # the remote server enforces its own
    count_tokens = staticmethod(approx_tokens)

    def option_logprobs(self, messages: list[dict[str, str]], options: list[str]) -> list[float]:
        raise InvalidRequestError(f"generator {self.name} cannot score options: chat completions expose no "
                                  "prompt log-probabilities (use the hf backend for multiple choice)")

    def _body(self, messages: list[dict[str, str]], overrides: dict[str, Any], stream: bool) -> dict[str, Any]:
        overrides = {k: v for k, v in overrides.items() if k not in ("deadline", "cancel")}
        bad = set(overrides) - {"max_new_tokens", "repetition_penalty", "penalty_scope"}
        if bad:
            raise InvalidRequestError(f"unknown decoding override(s): {', '.join(sorted(bad))}")
        try:
            d = replace(self.decoding, **{k: v for k, v in overrides.items() if v is not None})
        except ConfigError as e:
            raise InvalidRequestError(str(e)) from None
        body = {"messages": neutralise_messages(messages), "max_tokens": d.max_new_tokens, "temperature": 0,
                "repetition_penalty": d.repetition_penalty, "stream": stream, **self.extra_body}
        if self.model:
            body["model"] = self.model
        return body

    def _timeout(self, deadline: float | None) -> float:
        """The HTTP timeout: the configured one, shortened to the caller's deadline (time.monotonic())."""
        return self.timeout_s if deadline is None else max(0.001, min(self.timeout_s, deadline - time.monotonic()))

    def _raise_for(self, response) -> None:
        if response.status_code == 503:
            raise OverloadedError("the remote generator is busy; retry shortly")
        if response.status_code >= 400:
            raise UpstreamError(f"remote generator answered HTTP {response.status_code}: {response.text[:200]}")

    @staticmethod
    def _generation(text: str, finish: str | None, usage: dict | None, messages) -> Generation:
        usage = usage or {}
        return Generation(text=text.strip(),
                          prompt_tokens=int(usage.get("prompt_tokens") or sum(approx_tokens(m["content"]) for m in messages)),
                          completion_tokens=int(usage.get("completion_tokens") or approx_tokens(text)),
                          stop_reason="length" if finish == "length" else "end_of_turn")

    def generate(self, messages: list[dict[str, str]], **overrides) -> Generation:
        import httpx

        body, deadline = self._body(messages, overrides, stream=False), overrides.get("deadline")
        self._acquire()
        try:
            r = self._send(lambda: self._client.post(self.url, json=body, timeout=self._timeout(deadline)), deadline)
        except httpx.HTTPError as e:
            raise UpstreamError(f"remote generator at {self.url} unreachable: {e}") from None
        finally:
            self._slots.release()
        self._raise_for(r)
        try:
            data = r.json()
            choice = data["choices"][0]
            return self._generation(choice["message"]["content"] or "", choice.get("finish_reason"),
                                    data.get("usage"), messages)
        except (ValueError, KeyError, IndexError, TypeError):
            raise UpstreamError("remote generator sent a response that is not a chat completion") from None

    def stream(self, messages: list[dict[str, str]], **overrides) -> Iterator[str | Generation]:
        import httpx

        parts: list[str] = []
        finish, usage = None, None
        body, deadline = self._body(messages, overrides, stream=True), overrides.get("deadline")
        self._acquire()
        try:
            request = self._client.build_request("POST", self.url, json=body, timeout=self._timeout(deadline))
            r = self._send(lambda: self._client.send(request, stream=True), deadline)
            with contextlib.closing(r):
                if r.status_code >= 400:
                    r.read()
                    self._raise_for(r)
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise UpstreamError(f"remote generator failed mid-stream: {chunk['error']}")
                    choice = (chunk.get("choices") or [{}])[0]
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        parts.append(piece)
                        yield piece
                    finish = choice.get("finish_reason") or finish
                    usage = chunk.get("usage") or usage
        except httpx.HTTPError as e:
            raise UpstreamError(f"remote generator at {self.url} failed: {e}") from None
        except json.JSONDecodeError:
            raise UpstreamError("remote generator sent a malformed stream chunk") from None
        finally:
            self._slots.release()
        yield self._generation("".join(parts), finish, usage, messages)
