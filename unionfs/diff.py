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
- a directory renamed with ``redirect_dir`` (``overlay.redirect``) and everything below it
  are compared by path with what the lowers hold at the new place (its contents are new
  paths there: ``A``, or ``C`` where a lower object had the same path);
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
            # a renamed directory: every path below it is compared, by path, with what the
            # lowers hold at that place (its contents moved there, so they are new paths)
            _renamed_changes(union, path, lkey, found, parents)
            continue
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


def _renamed_changes(union: Any, path: str, lkey: str | None, found: dict,
                     parents: set) -> None:
    """Changes for a directory that came by rename (``overlay.redirect``) and below it."""
    low_node = union._lower.node(lkey) if lkey is not None else None

    def visit(p: str, low: Any) -> None:
        node = union._walk(p, follow=False)
        if low is None:
            found[p] = ChangeKind.ADDED
            parents.add(_p.split(p)[0])
        else:
            found[p] = ChangeKind.CHANGED
        if not node.is_dir:
            return
        names = union.listdir(p)
        lower_names = union._lower.children(low, lkey_of[p]) if (
            low is not None and low.is_dir) else {}
        for name in lower_names:
            if name not in names:
                found[_p.join(p, name)] = ChangeKind.DELETED
                parents.add(p)
        for name in names:
            child = _p.join(p, name)
            clow = lower_names.get(name) if lower_names else None
            lkey_of[child] = _p.join(lkey_of[p], name) if lkey_of.get(p) else None
            visit(child, clow)

    lkey_of: dict[str, str | None] = {path: lkey if low_node is not None else None}
    visit(path, low_node)


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
