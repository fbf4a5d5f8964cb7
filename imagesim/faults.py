"""Deterministic crash points for the crash-safety tests (``tests/hardening``).

Production code calls ``point("name")`` at the places where a crash matters most: just
before and just after a commit (a rename that publishes a blob, the state document, an
unpacked layer), between the entries of a layer being unpacked, between the deletions of a
gc. Normally that is one dictionary look-up and nothing else.

With ``IMAGESIM_KILL_AT=<name>:<n>`` in the environment, the process sends itself
``SIGKILL`` the ``n``-th time (1-based) it reaches the point ``name``: no ``finally`` block,
no ``atexit``, no flush runs, exactly as when the power goes or the OOM killer strikes. The
tests pick ``name`` and ``n`` from a seed, then check with ``fsck`` that nothing is corrupt
or half-visible and that a retry succeeds. ``name`` may end in ``*`` to match a prefix
(``unpack.*:3`` dies at the third point whose name starts with ``unpack.``).
``IMAGESIM_FAULT_TRACE=<file>`` appends the name of every point reached to ``file`` (one a
line), so a test can first learn which points an operation passes and then kill at each.
"""

from __future__ import annotations

import os
import signal
import threading

#: every point production code calls, for the tests to choose from (kept in sync by a test)
POINTS = (
    "blob.publish",      # a blob's temporary file is complete and fsynced, not yet renamed
    "blob.installed",    # a blob was renamed into place, its directory not yet fsynced
    "state.write",       # the new state document is in its temporary file, not yet renamed
    "state.written",     # the state document was replaced
    "unpack.entry",      # a layer is half unpacked (after each entry)
    "unpack.rename",     # a layer is unpacked and verified, not yet renamed into place
    "gc.delete",         # gc is about to delete one blob or layer
    "save.entry",        # save has written part of the archive
    "upload.chunk",      # the registry appended one chunk to an upload session
    "upload.commit",     # the registry verified an upload, not yet published the blob
    "push.blob",         # push has uploaded one blob (of several)
)

_ENV = "IMAGESIM_KILL_AT"
_TRACE = "IMAGESIM_FAULT_TRACE"
_trace: str | None = None
_lock = threading.Lock()
_counts: dict[str, int] = {}
_target: tuple[str, int] | bool | None = False  # False: not parsed yet


def _parse() -> tuple[str, int] | None:
    spec = os.environ.get(_ENV, "")
    if not spec:
        return None
    name, _, count = spec.rpartition(":")
    if not name or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{_ENV}={spec!r}: expected <point>:<n> with n >= 1")
    return name, int(count)


def point(name: str) -> None:
    """Mark a crash point; ``SIGKILL`` this process if ``IMAGESIM_KILL_AT`` selects it.

    Never raises (a malformed ``IMAGESIM_KILL_AT`` raises ``ValueError`` once, at the first
    point reached, so a typo in a test fails loudly instead of testing nothing)."""
    global _target, _trace
    if _target is False:
        _target = _parse()
        _trace = os.environ.get(_TRACE) or None
    if _trace is not None:
        with _lock, open(_trace, "a") as f:
            f.write(name + "\n")
    if _target is None:
        return
    want, n = _target  # type: ignore[misc]
    if not (name == want or (want.endswith("*") and name.startswith(want[:-1]))):
        return
    with _lock:
        _counts[want] = _counts.get(want, 0) + 1
        hit = _counts[want] == n
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)
