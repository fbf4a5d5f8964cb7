"""Union paths: absolute POSIX strings, normalised once at the API boundary.

Inside the engine a path is always ``"/"`` or ``"/a/b"``: no trailing slash, no ``.`` or empty
components, no NUL. ``..`` is resolved lexically at the boundary only where a caller passes it
(the engine never follows a symlink lexically; ``UnionFS`` resolves symlinks itself).
"""

from __future__ import annotations

import os

from .errors import InvalidPath, NameTooLong, NotFound

NAME_MAX = 255
PATH_MAX = 4096


def normalize(path: str | bytes | os.PathLike, *, check_names: bool = True) -> str:
    """Return the canonical absolute form of ``path``.

    Relative paths are taken from the root. ``check_names=False`` leaves the per-name
    ENAMETOOLONG check to the caller (the union checks each name as it walks to it, after
    its parents, in the kernel's order). Raises ``InvalidPath`` (EINVAL) for a NUL byte,
    ``NotFound`` (ENOENT) for an empty path, ``NameTooLong`` (ENAMETOOLONG) for a component
    over 255 bytes or a path over 4096 bytes.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be str, bytes or os.PathLike, not {type(path).__name__}")
    if path == "":
        raise NotFound(path)
    if "\0" in path:
        raise InvalidPath(path, "embedded NUL in path")
    if len(os.fsencode(path)) >= PATH_MAX:
        raise NameTooLong(path)
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        if check_names and len(os.fsencode(part)) > NAME_MAX:
            raise NameTooLong(path)
        parts.append(part)
    return "/" + "/".join(parts)


def split(path: str) -> tuple[str, str]:
    """``"/a/b/c"`` -> ``("/a/b", "c")``; ``"/"`` -> ``("/", "")``."""
    if path == "/":
        return "/", ""
    head, _, tail = path.rpartition("/")
    return (head or "/"), tail


def join(parent: str, name: str) -> str:
    """Join a normalised parent and one name."""
    return parent + name if parent == "/" else parent + "/" + name


def parents(path: str) -> list[str]:
    """Every ancestor of ``path``, root first, excluding ``path`` itself."""
    out = ["/"] if path != "/" else []
    acc = ""
    for part in path.strip("/").split("/")[:-1]:
        if part:
            acc += "/" + part
            out.append(acc)
    return out


def is_within(path: str, ancestor: str) -> bool:
    """True when ``path`` is ``ancestor`` or lies below it."""
    return ancestor == "/" or path == ancestor or path.startswith(ancestor + "/")
