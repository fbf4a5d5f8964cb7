"""What a container changed: ``docker diff`` from the upper layer, and the walk a commit uses.

Both read the upper layer and only the *names and metadata* of the lower layers; no lower
file's contents is ever read.

``changes(union)`` follows docker's overlay2 rules:

- a whiteout in the upper is ``D`` (deleted);
- an upper object whose path exists in the lower view is ``C`` (changed), except a directory
  that was only copied up on the way to a child and still has the lower directory's mode,
  owner and mtime (docker skips those);
- any other upper object is ``A`` (added);
- the parent directory of every ``A`` and ``D`` is ``C`` (docker adds it even when its own
  metadata is unchanged);
- an opaque directory replacing a lower one is ``C``, and each lower name it hides that is
  not in the upper is ``D`` (docker's own output here depends on the storage driver; this is
  what a comparison of the two trees gives);
- sorted by path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from . import path as _p
from .entry import Change, ChangeKind, Entry, Kind
from .errors import InvalidPath, ReadOnly
from .layer import Layer


def _upper_walk(upper: Layer, top: str = "/") -> Iterator[tuple[str, Entry]]:
    entry = upper.lookup(top)
    if entry is None:
        return
    yield top, entry
    if entry.kind is Kind.DIR:
        for name in sorted(upper.listdir(top)):
            yield from _upper_walk(upper, _p.join(top, name))


def _lower_entry(union: Any, path: str) -> Entry | None:
    """The lower view's entry at ``path`` (as if the upper were empty), or None."""
    node = union._lower.node(path)
    return None if node is None else node.top


def changes(union: Any) -> Iterator[Change]:
    """``docker diff`` of ``union``'s upper layer against its lowers, sorted by path.
    Raises ``ReadOnly`` (EROFS) for a union without an upper layer."""
    if union.upper is None:
        raise ReadOnly("/", "a read-only union has no changes")
    upper = union.upper
    found: dict[str, ChangeKind] = {}
    parents: set[str] = set()

    # walk the upper with the lower-view path of each object (redirects move it)
    stack: list[tuple[str, str | None]] = [("/", "/")]
    while stack:
        path, lkey = stack.pop()
        e = upper.lookup(path)
        if e is None:
            continue
        if e.kind is Kind.DIR and path != "/" and e.redirect:
            r = e.redirect
            parent_key = _p.split(lkey)[0] if lkey else None
            lkey = r if r.startswith("/") else (_p.join(parent_key, r) if parent_key else None)
        low = _lower_entry(union, lkey) if lkey is not None else None
        if path != "/":
            if e.kind is Kind.WHITEOUT:
                if low is not None:
                    found[path] = ChangeKind.DELETED
                    parents.add(_p.split(path)[0])
                continue
            if low is None:
                found[path] = ChangeKind.ADDED
                parents.add(_p.split(path)[0])
            elif e.kind is Kind.DIR and low.kind is Kind.DIR and not e.opaque and \
                    not e.redirect and e.mode == low.mode and e.uid == low.uid and \
                    e.gid == low.gid and e.mtime_ns // 1000 == low.mtime_ns // 1000 and \
                    e.xattrs == low.xattrs:
                pass  # only copied up on the way to a child
            else:
                found[path] = ChangeKind.CHANGED
        if e.kind is not Kind.DIR:
            continue
        names = upper.listdir(path)
        if e.opaque or (e.redirect and path != "/"):
            lower_node = union._lower.node(lkey) if lkey is not None else None
            if e.opaque and lower_node is not None and lower_node.is_dir:
                present = set(names)
                for name in union._lower.children(lower_node, lkey):
                    if name not in present:
                        found[_p.join(path, name)] = ChangeKind.DELETED
                        parents.add(path)
            if e.opaque:
                lkey = None  # nothing below an opaque directory is compared
        for name in sorted(names, reverse=True):
            stack.append((_p.join(path, name),
                          _p.join(lkey, name) if lkey is not None else None))
    for parent in parents:
        if parent != "/" and parent not in found:
            found[parent] = ChangeKind.CHANGED
    for path in sorted(found):
        yield Change(path, found[path])


@dataclass(frozen=True)
class CommitItem:
    """One object a commit writes, in walk order (parents first, names sorted).

    ``entry.kind is Kind.WHITEOUT`` for a deletion; ``entry.opaque`` for a directory whose
    lower contents are hidden. ``open()`` gives a regular file's bytes (from the lower layer
    for a metacopy file). Redirected directories are already expanded: they come as opaque
    directories followed by their whole union contents, since an OCI layer has no redirect.
    """

    path: str
    entry: Entry
    source: tuple[Layer, str] | None = None

    def open(self) -> BinaryIO:
        if self.source is None:
            raise InvalidPath(self.path, "not a regular file")
        layer, lpath = self.source
        return layer.open_read(lpath)


def commit_walk(union: Any) -> Iterator[CommitItem]:
    """The upper layer's objects for a commit (root excluded): whiteouts, opaque
    directories, and every added or changed object, parents before children, sorted by name.
    Raises ``ReadOnly`` (EROFS) for a union without an upper layer."""
    if union.upper is None:
        raise ReadOnly("/", "a read-only union has nothing to commit")
    upper = union.upper
    yield from _commit_dir(union, upper, "/", top=True)


def _commit_dir(union: Any, upper: Layer, path: str, top: bool = False) -> Iterator[CommitItem]:
    for name in sorted(upper.listdir(path)):
        cpath = _p.join(path, name)
        e = upper.lookup(cpath)
        if e is None:
            continue
        if e.kind is Kind.DIR and e.redirect:
            yield CommitItem(cpath, e.evolve(opaque=True, redirect=None))
            yield from _expand(union, cpath)
            continue
        if e.kind is Kind.FILE:
            node = union._walk(cpath, follow=False)
            layer, lpath = union._data_source(node)
            yield CommitItem(cpath, e.evolve(metacopy=False), (layer, lpath))
            continue
        yield CommitItem(cpath, e)
        if e.kind is Kind.DIR:
            yield from _commit_dir(union, upper, cpath)


def _expand(union: Any, path: str) -> Iterator[CommitItem]:
    """The union's whole contents below ``path`` as plain objects."""
    for name in union.listdir(path):
        cpath = _p.join(path, name)
        node = union._walk(cpath, follow=False)
        e = node.entry
        if e.kind is Kind.FILE:
            yield CommitItem(cpath, e.evolve(metacopy=False), union._data_source(node))
        else:
            yield CommitItem(cpath, e.evolve(redirect=None, opaque=False))
        if e.kind is Kind.DIR:
            yield from _expand(union, cpath)


__all__ = ["CommitItem", "changes", "commit_walk"]
