"""Blocking work off the event loop: a worker thread per request with a deadline (504) and cancellation when the
client goes away, and the server-sent event stream the streaming routes return."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
from litestar import Request
from litestar.exceptions import HTTPException
from litestar.response import ServerSentEvent

from pipeline.answer import Triaged


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set `cancel` when the client goes away (the ASGI server sends http.disconnect once the body is read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


def _timed_out(result: Any) -> bool:
    return result is None or getattr(result, "stop_reason", None) == "timeout"


async def in_thread(fn: Callable[[], Any], timeout_s: float, request: Request | None = None,
                    cancel: threading.Event | None = None) -> Any:
    """Run blocking work in a worker thread; past the deadline the request is a 504. With a request and a cancel
    event, a client that disconnects cancels the work (the generator stops at its next token)."""
    outcome: dict[str, Any] = {}

    async def work() -> None:
        try:
            with anyio.fail_after(timeout_s):
                outcome["result"] = await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except TimeoutError:
            outcome["result"] = None
        except Exception as e:  # re-raised below, outside the task group (which would wrap it in a group)
            outcome["error"] = e

    if request is not None and cancel is not None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_disconnect, request, cancel)
            await work()
            tg.cancel_scope.cancel()
    else:
        await work()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome.get("result")
    if _timed_out(result):  # either side of the deadline
        raise HTTPException(status_code=504, detail=f"no answer within {timeout_s:g}s")
    return result


async def first_then_rest(it: Iterator, timeout_s: float) -> tuple[Triaged | None, Iterator]:
    """Pull a pipeline stream up to its first piece of work (the triage result, then the first draft token or the
    answer) in a worker thread, so queue-full and bad input become HTTP errors, not a broken stream; returns the
    triage result and an iterator over every item after it."""

    def head() -> list:
        items = []
        for item in it:
            items.append(item)
            if not isinstance(item, Triaged):
                break
        return items

    items = await in_thread(head, timeout_s)
    if not items or _timed_out(items[-1]):
        raise HTTPException(status_code=504, detail=f"no answer within {timeout_s:g}s")
    triaged = next((i for i in items if isinstance(i, Triaged)), None)
    return triaged, _chain([i for i in items if not isinstance(i, Triaged)], it)


def _chain(first: Iterable, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


class EventStream(ServerSentEvent):
    """ServerSentEvent whose text/event-stream content type survives handlers that default to JSON (Litestar
    2.25 lets the handler's media type win over a streaming response's own)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = None
        return super().to_asgi_response(*args, **kwargs)
