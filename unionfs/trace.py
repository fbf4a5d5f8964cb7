"""Trace events: what the engine did to the upper layer and why (the live teaching view).

``UnionFS.subscribe(callback)`` registers a callable that receives every ``Event``; the
engine calls subscribers synchronously, after the change is made, outside nothing but its own
lock, so a callback must be quick and must not call back into the same ``UnionFS``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass


class EventKind(enum.Enum):
    COPY_UP = "copy_up"      # an object was copied from a lower layer into the upper
    WHITEOUT = "whiteout"    # a whiteout was placed to hide lower entries
    OPAQUE = "opaque"        # a directory was made opaque
    REDIRECT = "redirect"    # a renamed directory records where its lower part lives
    EXDEV = "exdev"          # a rename was refused with EXDEV (redirect_dir is off)


@dataclass(frozen=True, slots=True)
class Event:
    """One engine action: ``kind`` (a string: ``copy_up``, ``whiteout``, ``opaque``,
    ``redirect``, ``exdev``), the union ``path``, the ``layer`` it concerns (the upper's name,
    or the lower a copy-up came from) and a plain-words ``reason``."""

    kind: str
    path: str
    layer: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind:<8} {self.path}  [{self.layer}] {self.reason}"


Subscriber = Callable[[Event], None]


class Tracer:
    """A list of subscribers; ``emit`` calls each of them in order. Thread-safe."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> None:
        with self._lock:
            self._subs.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Remove ``callback``; unknown callbacks are ignored."""
        with self._lock:
            if callback in self._subs:
                self._subs.remove(callback)

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def emit(self, kind: EventKind | str, path: str, layer: str, reason: str) -> None:
        if not self._subs:
            return
        event = Event(kind.value if isinstance(kind, EventKind) else kind, path, layer, reason)
        with self._lock:
            subs = list(self._subs)
        for callback in subs:
            callback(event)
