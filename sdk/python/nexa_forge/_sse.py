"""A parser for ``text/event-stream`` (the HTML Living Standard's server-sent events).

Fed one line at a time (without or with its line ending), it returns a
:class:`ServerSentEvent` when a blank line completes one. Comments (``:...``) are
skipped, ``data:`` lines are joined with newlines, ``id:`` is remembered across events
(``last_event_id``, for reconnecting with ``Last-Event-ID``) and ``retry:`` sets the
reconnection delay. An event without data is not dispatched, as the standard says.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, List, Optional

__all__ = ["ServerSentEvent", "SSEDecoder", "iter_sse_lines"]


class ServerSentEvent:
    """One dispatched event: ``event`` (type, default ``message``), ``data`` (text),
    ``id`` (the last event id at dispatch, or None) and ``retry`` (ms, or None)."""

    __slots__ = ("event", "data", "id", "retry")

    def __init__(self, event: str = "message", data: str = "", id: Optional[str] = None,
                 retry: Optional[int] = None) -> None:
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def json(self) -> Any:
        """The data parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return (self.event, self.data, self.id, self.retry) == (
            other.event, other.data, other.id, other.retry)

    def __repr__(self) -> str:
        return (f"ServerSentEvent(event={self.event!r}, data={self.data!r}, id={self.id!r}, "
                f"retry={self.retry!r})")


class SSEDecoder:
    """Incremental decoder; keeps ``last_event_id`` and ``retry`` between events."""

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []
        self.last_event_id: Optional[str] = None
        self.retry: Optional[int] = None
        self._first = True

    def decode(self, line: str) -> Optional[ServerSentEvent]:
        """Processes one line; returns the event a blank line completed, else None."""
        if self._first:
            self._first = False
            if line.startswith("\ufeff"):
                line = line[1:]
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            if value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> Optional[ServerSentEvent]:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data),
                                self.last_event_id, self.retry)
        self._event = ""
        self._data = []
        return event


def iter_sse_lines(lines: Iterable[str], decoder: Optional[SSEDecoder] = None
                   ) -> Iterator[ServerSentEvent]:
    """The events in an iterable of lines. A line holding bare CRs is split on them (the
    standard allows CR, LF and CRLF as line endings). An unfinished event at the end of
    the input is dropped."""
    dec = decoder or SSEDecoder()
    for raw in lines:
        stripped = raw[:-2] if raw.endswith("\r\n") else raw.rstrip("\n")
        parts = stripped.split("\r") if "\r" in stripped else [stripped]
        if stripped.endswith("\r"):  # "abc\r" alone: the CR ended the line
            parts = parts[:-1]
        for part in parts:
            event = dec.decode(part)
            if event is not None:
                yield event
