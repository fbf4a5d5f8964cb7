"""What a container changed: ``docker diff`` from the upper layer, and the walk a commit uses.

``upper_changes(upper, lowers)`` walks the upper layer only. For each upper object it asks
the lower layers about that one path (``Layer.lookup`` of each path component, as overlayfs
looks a name up: ``LowerProbe``), so its cost grows with the upper layer and the number of
lower layers, never with the size of a lower layer; no lower file's contents is read and no
lower directory is listed, except the lower directories an opaque or renamed upper directory
hides (their names are the ``D`` lines).

The rules are docker's (overlay2, ``archive.OverlayChanges``):

- a whiteout in the upper is ``D`` (deleted) when the lower view has that path;
- an upper object whose path exists in the lower view is ``C`` (changed), except a directory
  that was only copied up on the way to a child and still has the lower directory's mode,
  owner, mtime and xattrs (docker skips those);
- any other upper object is ``A`` (added);
- the parent directory of every ``A`` and ``D`` is ``C`` (docker adds it even when its own
  metadata is unchanged), the root excepted;
- an opaque directory replacing a lower one is ``C``, and each lower name it hides that is
  not in the upper is ``D`` (docker's own output here depends on the storage driver; this is
  what a comparison of the two trees gives);
- a directory renamed with ``redirect_dir`` (``overlay.redirect``) and everything below it
  are compared by path with what the lowers hold at the new place (its contents are new
  paths there: ``A``, or ``C`` where a lower object had the same path);
- sorted by path (byte order of the UTF-8 names, as docker's ``changesByPath``).

``changes(union)`` is the same for a ``UnionFS`` (its ``upper`` and ``lowers``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from . import path as _p
from .entry import Change, ChangeKind, Entry, Kind
from .errors import InvalidPath, ReadOnly
from .layer import Layer, merge_stack, root_stack

#: one layer's part of a lower-view object: (index in ``lowers``, path in that layer, entry)
StackItem = tuple[int, str, Entry]


class LowerProbe:
    """The read-only union of ``lowers`` (top-most first, as overlayfs ``lowerdir=``),
    resolved one path at a time.

    ``stack("/a/b")`` resolves ``/a`` and then ``/a/b`` by ``Layer.lookup`` in the layers
    whose directories merge at each step (a whiteout hides what is below it, an opaque
    directory stops the merge, a non-directory ends it, ``overlay.redirect`` on a lower
    directory sends the layers below it to the redirect target), as the kernel's lookup does.
    Answers are memoised per path: lower layers never change during a probe's life.
    """

    def __init__(self, lowers: Sequence[Layer]) -> None:
        self.lowers = list(lowers)
        self._stacks: dict[str, tuple[StackItem, ...]] = {"/": tuple(root_stack(self.lowers))}

    def stack(self, path: str) -> tuple[StackItem, ...]:
        """The layers' objects that make up ``path`` in the lower view, top-most first (the
        visible one first; for a directory, every directory merged under it; for a metacopy
        file, the files down to the one holding its data). Empty when
        the lower view has nothing at ``path`` (also when a parent is not a directory)."""
        known = self._stacks.get(path)
        if known is not None:
            return known
        head, name = _p.split(path)
        parent = self.stack(head)
        found: tuple[StackItem, ...] = ()
        if parent and parent[0][2].kind is Kind.DIR:
            items = []
            for i, lpath, _e in parent:
                cpath = _p.join(lpath, name)
                ce = self.lowers[i].lookup(cpath)
                if ce is not None:
                    items.append((i, cpath, ce))
            found = tuple(merge_stack(self.lowers, items))
        self._stacks[path] = found
        return found

    def lookup(self, path: str) -> Entry | None:
        """The lower view's entry at ``path`` (the visible layer's), or ``None``."""
        s = self.stack(path)
        return s[0][2] if s else None

    def names(self, path: str) -> set[str]:
        """The names the lower view shows in the directory ``path`` (empty when ``path`` is
        not a directory there). Lists that one directory in each merged layer."""
        s = self.stack(path)
        if not s or s[0][2].kind is not Kind.DIR:
            return set()
        seen: set[str] = set()
        for i, lpath, _e in s:
            seen.update(self.lowers[i].listdir(lpath))
        return {n for n in seen if self.stack(_p.join(path, n))}


def probe_layer(directory: str | os.PathLike) -> Layer:
    """A lower layer over an unpacked layer directory (overlayfs or OCI whiteout form) that
    answers each ``lookup`` with a few ``lstat`` calls on the host: no index is built or
    loaded, so opening it costs nothing whatever the layer's size
    (``DirLayer(directory, index=False)``, read-only). Raises ``NotFound``/``NotADir`` for a
    bad directory."""
    from .layer import DirLayer

    return DirLayer(directory, index=False)


def _as_layer(layer: Layer | str | os.PathLike) -> Layer:
    return probe_layer(layer) if isinstance(layer, (str, os.PathLike)) else layer


def _lower_source(e: Entry, parent_key: str | None, name: str) -> str | None:
    """Where a directory's lower contents are looked up: an absolute redirect's target
    (followed from the lower layers' root whatever the parent holds, as the kernel's
    ``ovl_lookup`` does), else a relative redirect or its own name under the parent's
    lower-view path (``None``: the parent shows no lower directory)."""
    if e.redirect and e.redirect.startswith("/"):
        return e.redirect
    if parent_key is None:
        return None
    return _p.join(parent_key, e.redirect or name)


def _only_copied_up(e: Entry, low: Entry) -> bool:
    """An upper directory docker does not report: copied up on the way to a child, with
    the lower directory's mode, owner, mtime (to the microsecond) and xattrs."""
    return (e.kind is Kind.DIR and low.kind is Kind.DIR and not e.opaque and not e.redirect
            and e.mode == low.mode and e.uid == low.uid and e.gid == low.gid
            and e.mtime_ns // 1000 == low.mtime_ns // 1000 and e.xattrs == low.xattrs)


def upper_changes(upper: Layer | str | os.PathLike,
                  lowers: Sequence[Layer | str | os.PathLike] | LowerProbe) -> list[Change]:
    """``docker diff``: the ``A``/``C``/``D`` changes of the ``upper`` layer over ``lowers``
    (top-most first), sorted by path, by the rules in this module's docstring.

    ``upper`` and each lower may be a ``Layer`` or a layer directory on disk (read through
    ``probe_layer``). Walks the upper layer; each lower layer is only asked about the paths
    the upper holds (see ``LowerProbe``), never read, never written.
    Raises ``NotFound``/``NotADir`` for a missing layer directory."""
    up = _as_layer(upper)
    probe = lowers if isinstance(lowers, LowerProbe) else LowerProbe(
        [_as_layer(x) for x in lowers])
    found: dict[str, ChangeKind] = {}
    parents: set[str] = set()

    def mark(path: str, kind: ChangeKind) -> None:
        found[path] = kind
        if kind is not ChangeKind.CHANGED:
            parents.add(_p.split(path)[0])

    # (union path, its lower-view path: None below an opaque directory)
    todo: list[tuple[str, str | None]] = [("/", "/")]
    while todo:
        path, lkey = todo.pop()
        e = up.lookup(path)
        if e is None:
            continue
        if path != "/" and e.kind is Kind.DIR and e.redirect:
            # renamed: its contents are new paths at this place
            src = _lower_source(e, _p.split(lkey)[0] if lkey is not None else None,
                                _p.split(path)[1])
            _renamed(up, probe, path, e, src, lkey, mark)
            continue
        low = probe.lookup(lkey) if lkey is not None else None
        if path != "/":
            if e.kind is Kind.WHITEOUT:
                if low is not None:
                    mark(path, ChangeKind.DELETED)
                continue
            if low is None:
                mark(path, ChangeKind.ADDED)
            elif not _only_copied_up(e, low):
                mark(path, ChangeKind.CHANGED)
        if e.kind is not Kind.DIR:
            continue
        names = up.listdir(path)
        if e.opaque:
            if low is not None and low.kind is Kind.DIR:
                present = {n for n in names if not _is_whiteout(up, _p.join(path, n))}
                for name in probe.names(lkey) - present:  # type: ignore[arg-type]
                    mark(_p.join(path, name), ChangeKind.DELETED)
            lkey = None  # nothing below an opaque directory is compared
        for name in sorted(names, reverse=True):
            todo.append((_p.join(path, name), _p.join(lkey, name) if lkey is not None else None))
    for parent in parents:
        if parent != "/" and parent not in found:
            found[parent] = ChangeKind.CHANGED
    # docker sorts by the bytes of the path (Go string order): the same as code points for
    # UTF-8 names, but not for undecodable bytes carried as surrogates
    return [Change(p, found[p]) for p in sorted(found, key=os.fsencode)]


def _is_whiteout(layer: Layer, path: str) -> bool:
    e = layer.lookup(path)
    return e is not None and e.kind is Kind.WHITEOUT


def _renamed(up: Layer, probe: LowerProbe, path: str, e: Entry, src: str | None,
             lkey: str | None, mark: Any) -> None:
    """Changes for a directory that came by rename (``overlay.redirect``) and below it: its
    merged contents (upper objects over the lower directory at ``src``) against what the
    lower view holds at its new place ``lkey``."""

    def visit(p: str, ue: Entry | None, src: str | None, cmp: str | None) -> None:
        low = probe.lookup(cmp) if cmp is not None else None
        mark(p, ChangeKind.ADDED if low is None else ChangeKind.CHANGED)
        lower_e = probe.lookup(src) if src is not None else None
        is_dir = (ue.kind if ue is not None else lower_e.kind) is Kind.DIR  # type: ignore
        if not is_dir:
            return
        # the merged directory: upper names over the lower names at src
        merged: dict[str, tuple[Entry | None, str | None]] = {}
        hidden: set[str] = set()
        if ue is not None:
            for name in up.listdir(p):
                ce = up.lookup(_p.join(p, name))
                if ce is None:
                    continue
                if ce.kind is Kind.WHITEOUT:
                    hidden.add(name)
                elif ce.kind is Kind.DIR and not ce.opaque:
                    csrc = _lower_source(ce, src, name)
                    cl = probe.lookup(csrc) if csrc is not None else None
                    merged[name] = (ce, csrc if cl is not None and cl.kind is Kind.DIR
                                    else None)
                else:
                    merged[name] = (ce, None)
        if src is not None and lower_e is not None and lower_e.kind is Kind.DIR and (
                ue is None or not ue.opaque):
            for name in probe.names(src):
                if name not in merged and name not in hidden:
                    merged[name] = (None, _p.join(src, name))
        if low is not None and low.kind is Kind.DIR:
            for name in probe.names(cmp) - merged.keys():  # type: ignore[arg-type]
                mark(_p.join(p, name), ChangeKind.DELETED)
        for name in sorted(merged):
            cue, csrc = merged[name]
            ccmp = _p.join(cmp, name) if low is not None and low.kind is Kind.DIR else None
            visit(_p.join(p, name), cue, csrc, ccmp)

    lower = probe.lookup(src) if src is not None else None
    visit(path, e, src if lower is not None and lower.kind is Kind.DIR else None, lkey)


def changes(union: Any) -> Iterator[Change]:
    """``docker diff`` of ``union``'s upper layer against its lowers, sorted by path
    (``upper_changes(union.upper, union.lowers)``).
    Raises ``ReadOnly`` (EROFS) for a union without an upper layer."""
    if union.upper is None:
        raise ReadOnly("/", "a read-only union has no changes")
    yield from upper_changes(union.upper, union.lowers)


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


__all__ = ["CommitItem", "LowerProbe", "StackItem", "changes", "commit_walk", "probe_layer",
           "upper_changes"]
