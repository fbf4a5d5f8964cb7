"""An overlayfs upper directory shown three ways side by side (``unionfs diff UPPERDIR``):

1. **overlayfs**: what is on disk, as the kernel reads it: whiteouts as character devices
   0/0 (or the user-xattr / OCI forms when the directory was written that way), opaque and
   redirect marks as ``trusted.overlay.*`` / ``user.overlay.*`` extended attributes;
2. **OCI layer tar**: the entries a layer tar of this directory holds: ``.wh.NAME`` for a
   whiteout, ``DIR/.wh..wh..opq`` for an opaque directory, ``DIR/`` for directories;
3. **docker diff**: ``A``/``C``/``D`` lines. Telling ``A`` (added) from ``C`` (changed) needs
   the lower layers: pass them as ``lowers`` (top-most first); without them such lines are
   marked ``?``.

``upper_view(upper, lowers)`` returns the rows; ``format_side_by_side(view)`` the text.
Raises ``FileNotFoundError``/``NotADirectoryError`` for a missing upper directory.
"""

from __future__ import annotations

import os
import stat as _stat
from collections.abc import Sequence
from dataclasses import dataclass

from .entry import Kind
from .layer import DirLayer, walk_layer
from .whiteout import is_private_xattr

_OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")


@dataclass(frozen=True)
class UpperRow:
    """One union path: its on-disk items, its tar entries, its docker diff line."""

    path: str
    overlay: tuple[str, ...]
    oci: tuple[str, ...]
    diff: str | None


@dataclass(frozen=True)
class UpperView:
    upper: str
    rows: tuple[UpperRow, ...]
    lowers_known: bool


def _xattrs(host: str) -> list[str]:
    try:
        names = os.listxattr(host, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        if not name.startswith(_OVERLAY_PREFIXES) and not is_private_xattr(name):
            continue
        try:
            value = os.getxattr(host, name, follow_symlinks=False)
        except OSError:
            continue
        shown = value.decode("utf-8", "replace") if value.isascii() else value.hex()
        out.append(f"{name}={shown!s}")
    return out


def _raw_item(host: str, rel: str, st: os.stat_result) -> str:
    mode = _stat.filemode(st.st_mode)
    if _stat.S_ISCHR(st.st_mode):
        what = f"{mode} {os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
        if st.st_rdev == 0:
            what += " (whiteout)"
    elif _stat.S_ISDIR(st.st_mode):
        what = f"{mode} dir"
    elif _stat.S_ISLNK(st.st_mode):
        what = f"{mode} -> {os.readlink(host)}"
    else:
        what = f"{mode} {st.st_size} B"
    line = f"{rel}  {what}"
    marks = _xattrs(host)
    if marks:
        line += "  " + " ".join(marks)
    return line


def _union_path(rel: str) -> str:
    """The union path an on-disk name stands for (``a/.wh.b`` -> ``/a/b``; the opaque
    marker ``a/.wh..wh..opq`` -> ``/a``)."""
    head, _, name = rel.rpartition("/")
    if name == ".wh..wh..opq":
        return "/" + head
    if name.startswith(".wh."):
        name = name[4:]
    return "/" + (f"{head}/{name}" if head else name)


def upper_view(upper: str | os.PathLike, lowers: Sequence[str | os.PathLike] = ()
               ) -> UpperView:
    """Read ``upper`` (never written) and describe every path three ways."""
    upper = os.fspath(upper)
    if not os.path.isdir(upper):
        os.listdir(upper)  # raises FileNotFoundError / NotADirectoryError with the path
    raw: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(upper):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            host = os.path.join(dirpath, name)
            rel = os.path.relpath(host, upper)
            st = os.lstat(host)
            raw.setdefault(_union_path(rel), []).append(_raw_item(host, rel, st))
    root_marks = _xattrs(upper)
    if root_marks:
        raw.setdefault("/", []).append("./  " + " ".join(root_marks))
    layer = DirLayer(upper)
    lower_layers = [DirLayer(os.fspath(d)) for d in lowers]

    def in_lowers(p: str) -> bool:
        for lw in lower_layers:
            e = lw.lookup(p)
            if e is not None:
                return e.kind is not Kind.WHITEOUT
        return False

    rows = []
    for path, entry in walk_layer(layer):
        if path == "/":
            if path in raw:
                rows.append(UpperRow("/", tuple(raw["/"]), (), None))
            continue
        rel = path.lstrip("/")
        if entry.kind is Kind.WHITEOUT:
            head, _, name = rel.rpartition("/")
            oci: tuple[str, ...] = ((f"{head}/" if head else "") + ".wh." + name,)
            diff = f"D {path}"
        else:
            oci = (rel + "/",) if entry.is_dir else (rel,)
            if entry.is_dir and entry.opaque:
                oci = (*oci, rel + "/.wh..wh..opq")
            if entry.redirect:
                # a layer tar has no redirects: committing writes the directory's whole
                # merged content at its new path
                origin = entry.redirect
                if not origin.startswith("/"):  # the kernel stores a bare name for renames
                    origin = os.path.join(os.path.dirname(path), origin)   # in one directory
                oci = (*oci, f"(+ every entry merged from {origin})")
            if entry.metacopy:
                oci = (*oci, "(the file's data, copied from the lower layer)")
            if lower_layers:
                diff = f"{'C' if in_lowers(path) else 'A'} {path}"
            else:
                diff = f"? {path}"
        rows.append(UpperRow(path, tuple(raw.get(path, ())), oci, diff))
    return UpperView(upper, tuple(rows), bool(lower_layers))


def format_side_by_side(view: UpperView, width: int = 120) -> list[str]:
    """The three views in columns (each row as many lines as its longest cell)."""
    col = max(20, (width - 6) // 3)

    def cut(text: str) -> str:
        return text if len(text) <= col else text[: col - 1] + "…"

    head = ("overlayfs (on disk)", "OCI layer tar entries", "docker diff")
    lines = [" | ".join(h.ljust(col) for h in head).rstrip(),
             "-+-".join("-" * col for _ in head)]
    for row in view.rows:
        cells = [list(row.overlay) or ["(nothing on disk)"], list(row.oci) or [""],
                 [row.diff] if row.diff else [""]]
        for k in range(max(len(c) for c in cells)):
            parts = [cut(c[k]) if k < len(c) else "" for c in cells]
            lines.append(" | ".join(p.ljust(col) for p in parts).rstrip())
    if not view.lowers_known and any(r.diff and r.diff.startswith("?") for r in view.rows):
        lines.append("")
        lines.append("? = added or changed: give the lower directories (top-most first) to "
                     "tell A from C, as docker diff does")
    return lines
