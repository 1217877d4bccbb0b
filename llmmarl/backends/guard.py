"""An HTTP transport that bounds each request in time and size, for :class:`~llmmarl.backends.openai.OpenAIBackend`.

httpx's timeouts apply to each network read, so a server that trickles a byte a second never times out, and
nothing bounds how many bytes a response may send. :class:`GuardedTransport` wraps the ordinary transport and
checks, for the request being made on the calling thread:

* a **deadline** (``time.monotonic()`` value) for the whole request, retries included: every read waits at most
  until the deadline, the body is cut off once it passes, and a retry that starts after it fails at once;
* a **cap** on the response bytes.

Either failure raises :class:`ResponseRejected`, an ``openai.OpenAIError``: the openai client passes those
through without retrying (a retry could only be late again, or huge again).

The limits live in a ``threading.local`` set by the caller around each request (:meth:`GuardedTransport.limits`),
because the openai client runs the whole request, retries included, on the calling thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai

try:  # openai >= 3 speaks httpx2; older clients speak httpx, whose transport API is the same
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx  # type: ignore[no-redef]


class ResponseRejected(openai.OpenAIError):
    """The response broke a limit (deadline or size); the message says which."""


class _Limits(threading.local):
    deadline: float | None = None
    max_bytes: int | None = None
    received: int = 0


class _CappedStream(httpx.SyncByteStream):
    """The response body, read chunk by chunk, stopped at the deadline or the byte cap."""

    def __init__(self, inner: httpx.SyncByteStream, limits: _Limits) -> None:
        self._inner = inner
        self._limits = limits

    def __iter__(self) -> Iterator[bytes]:
        lim = self._limits
        for chunk in self._inner:
            lim.received += len(chunk)
            if lim.max_bytes is not None and lim.received > lim.max_bytes:
                raise ResponseRejected(f"response larger than the {lim.max_bytes:,}-byte cap")
            if lim.deadline is not None and time.monotonic() > lim.deadline:
                raise ResponseRejected("response still arriving at the request's deadline (a trickling body)")
            yield chunk

    def close(self) -> None:
        self._inner.close()


class GuardedTransport(httpx.BaseTransport):
    """``httpx.HTTPTransport`` plus a per-request deadline and response-size cap (see the module docstring)."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner or httpx.HTTPTransport()
        self._limits = _Limits()

    @contextmanager
    def limits(self, seconds: float | None, max_bytes: int | None) -> Iterator[None]:
        """Bound the requests made on this thread inside the block: ``seconds`` in all, ``max_bytes`` each."""
        lim = self._limits
        outer = lim.deadline, lim.max_bytes  # restored after: a block may run inside another's (a refresh on error)
        deadline = None if seconds is None else time.monotonic() + seconds
        lim.deadline = deadline if outer[0] is None or deadline is None else min(deadline, outer[0])
        lim.max_bytes = max_bytes
        try:
            yield
        finally:
            lim.deadline, lim.max_bytes = outer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        lim = self._limits
        lim.received = 0
        if lim.deadline is not None:
            left = lim.deadline - time.monotonic()
            if left <= 0:
                raise ResponseRejected("no answer before the request's deadline")
            # Each read waits at most until the deadline (httpx's own timeout is per read).
            timeout = dict(request.extensions.get("timeout") or {})
            for key in ("connect", "read", "write", "pool"):
                given = timeout.get(key)
                timeout[key] = left if given is None else min(given, left)
            request.extensions["timeout"] = timeout
        response = self._inner.handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, lim),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()
