"""uvicorn's h11 protocol with a header timeout and a send timeout.

uvicorn 0.54 arms its keep-alive timer only after a response, so a connection that sends
nothing, or only part of a request head, is never closed (measured with raw sockets), and a
response whose client stops reading waits for ever with its bytes buffered. Here:

- a whole request head must arrive within ``header_timeout_s`` of the connection or of the
  previous response, else the connection is closed;
- a response whose client reads nothing for ``send_timeout_s`` (the transport stays above its
  high-water mark) is abandoned: the connection is aborted and its buffered bytes freed.

``distill serve`` runs uvicorn with ``http="api.protocol:GuardedH11Protocol"``.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from api.settings import ConnectionLimits

log = logging.getLogger("distill.api")


@lru_cache(maxsize=1)
def _env_limits() -> ConnectionLimits:
    return ConnectionLimits()  # type: ignore[call-arg]


class GuardedH11Protocol(H11Protocol):
    """:class:`H11Protocol` plus the two timeouts; ``limits`` (class attribute) overrides the
    environment, for a server built in code."""

    limits: ClassVar[ConnectionLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lim = type(self).limits or _env_limits()
        self._head_s, self._send_s = lim.header_timeout_s, lim.send_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._send_timer = None
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = None
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self._head_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request head arrived and is being answered
        if not self.transport.is_closing():
            log.info("closing %s: no complete request head within %g s", self.client, self._head_s)
            self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self._send_s, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        log.warning("aborting %s: the client read nothing for %g s", self.client, self._send_s)
        self.transport.abort()
