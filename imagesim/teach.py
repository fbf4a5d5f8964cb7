"""The library behind the teaching views: "where does this file come from", the merged tree
marked by layer, what each layer adds, changes, removes and wastes, and the graph of images,
layers and containers.

Every view is computed from the real store and the real union engine (``UnionFS.which`` and
the layers' own entries); the CLI in ``imagesim.cli.teach`` only formats what these return.

* ``open_subject(store, "u1" | "ubuntu")`` -> ``Subject``: a container or an image with its
  union view and its layers numbered from the bottom (1 = base) and lettered ``a``, ``b``...;
  a container's writable layer is ``+``.
* ``explain(subject, path)`` -> ``Explanation``: the supplying layer, what it shadows, what
  hides lower versions, and the reasons in words (``which``).
* ``tree(subject, path)`` -> ``TreeRow`` list: the merged tree with each entry's layer letter,
  every layer that holds it, and a container's ``A``/``C``/``D`` marks (deleted entries too).
* ``layer_files(store, image)`` -> ``LayerFilesReport``: per layer added/changed/removed
  paths and wasted bytes, and the image's efficiency, as dive reports them.
* ``build_graph(store)`` -> ``Graph`` with ``to_text()``, ``to_dot()``; ``render_svg(dot)``.

Errors: ``ImageSimError`` subclasses (``ImageNotFound``; ``TeachError`` when a name is
neither a container nor an image) and ``OSError`` from the engine (ENOENT for a path that is
not in the view).
"""

from __future__ import annotations

import errno
import shutil
import stat as _stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from unionfs.entry import Entry, Kind
from unionfs.layer import walk_layer

from .errors import ImageSimError
from .units import human_size

CONTAINER_LETTER = "+"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class TeachError(ImageSimError):
    """The name is neither a container nor an image, or a view cannot be produced."""

    code = "NAME_UNKNOWN"
    status = 404


def layer_letter(index: int) -> str:
    """The mark of image layer ``index`` (1 = bottom): ``a``..``z``, then ``a1``, ``b1``..."""
    i = index - 1
    return _LETTERS[i % 26] + (str(i // 26) if i >= 26 else "")


def short_digest(d: Any, n: int = 12) -> str:
    text = str(d)
    return text.split(":", 1)[-1][:n]


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a subject. ``index`` counts from the bottom (1 = base); ``lower_index``
    is the engine's position (0 = top-most lower); the container layer has neither a diff id
    nor a lower index."""

    index: int
    letter: str
    diff_id: str | None
    size: int
    created_by: str
    lower_index: int | None
    is_container: bool = False

    @property
    def title(self) -> str:
        if self.is_container:
            return "the container's writable layer"
        return f"layer {self.index} ({short_digest(self.diff_id)})"


@dataclass
class Subject:
    """A container or an image, opened for the teaching views."""

    kind: str                   # "image" | "container"
    name: str
    image: Any
    fs: Any                     # the UnionFS (an image's is read-only: no upper)
    layers: list[LayerInfo]     # bottom first; a container's writable layer last
    container: Any = None
    changes: dict[str, str] = field(default_factory=dict)   # container: path -> A/C/D

    def layer_at(self, lower_index: int | None) -> LayerInfo:
        """The layer the engine calls ``lower_index`` (``None`` = the upper)."""
        if lower_index is None:
            return self.layers[-1]
        n = len(self.image.diff_ids)
        return self.layers[n - 1 - lower_index]

    @property
    def describe(self) -> str:
        if self.kind == "container":
            return f"container {self.name} ({self.container.short_id})"
        return f"image {self.name}"


def _layer_infos(store: Any, image: Any) -> list[LayerInfo]:
    rows = image.history_rows()
    created_by: dict[int, str] = {}
    for row, idx in rows:
        if idx is not None:
            created_by[idx] = str(row.get("created_by", "") or "")
    n = len(image.diff_ids)
    out = []
    for i, d in enumerate(image.diff_ids):
        out.append(LayerInfo(i + 1, layer_letter(i + 1), str(d), store.layer_size(d),
                             created_by.get(i, ""), n - 1 - i))
    return out


def open_subject(store: Any, text: str, *, prefer: str | None = None) -> Subject:
    """The container named ``text`` (name, id or unique prefix), else the image ``text``.
    ``prefer="image"`` looks for an image first. Raises ``TeachError`` when neither
    exists."""
    from unionfs.union import UnionFS

    from .container import ContainerStore

    def as_container() -> Subject | None:
        try:
            c = ContainerStore(store).get(text)
        except ImageSimError:
            return None
        image = store.get_image(c.image_digest)
        layers = _layer_infos(store, image)
        layers.append(LayerInfo(len(layers) + 1, CONTAINER_LETTER, None, c.size_rw(),
                                f"container {c.name}", None, True))
        changes = {ch.path: ch.kind.value for ch in c.diff()}
        return Subject("container", c.name, image, c.fs, layers, c, changes)

    def as_image() -> Subject | None:
        try:
            image = store.resolve(text)
        except ImageSimError:
            return None
        fs = UnionFS(lowers=store.lower_layers(image), upper=None)
        return Subject("image", text, image, fs, _layer_infos(store, image))

    order = (as_image, as_container) if prefer == "image" else (as_container, as_image)
    for fn in order:
        found = fn()
        if found is not None:
            return found
    raise TeachError(f"No such container or image: {text}")


# --------------------------------------------------------------------------- which

def kind_words(entry: Entry) -> str:
    """``regular file, 12 B`` / ``directory`` / ``symbolic link -> x``."""
    if entry.kind is Kind.FILE:
        return f"regular file, {entry.size} B" if entry.size else "regular empty file"
    if entry.kind is Kind.SYMLINK:
        return f"symbolic link -> {entry.target}" if entry.target else "symbolic link"
    if entry.kind is Kind.DIR:
        return "opaque directory" if entry.opaque else "directory"
    if entry.kind is Kind.WHITEOUT:
        return "whiteout"
    return entry.kind.value


@dataclass(frozen=True)
class Explanation:
    """The answer to "where does PATH come from" for one subject."""

    path: str
    subject: str
    supplier: LayerInfo | None        # None: the path is served by a volume
    entry: Entry | None
    merged: tuple[LayerInfo, ...]     # a directory: every layer whose directory is merged
    shadows: tuple[tuple[LayerInfo, Entry], ...]
    hidden_by: tuple[LayerInfo, str, Entry] | None   # (layer, path of the marker, entry)
    change: str | None                # a container's A/C/D for this path
    volume: Any = None                # a container mount serving the path
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The explanation as plain data (``imagesim which --json``)."""
        def layer(li: LayerInfo | None) -> dict[str, Any] | None:
            if li is None:
                return None
            return {"index": li.index, "letter": li.letter, "diff_id": li.diff_id,
                    "container": li.is_container, "created_by": li.created_by}

        def entry(e: Entry | None) -> dict[str, Any] | None:
            if e is None:
                return None
            return {"kind": e.kind.value, "mode": f"{e.mode:04o}", "size": e.size,
                    "target": e.target, "opaque": e.opaque}

        return {
            "path": self.path, "subject": self.subject, "supplier": layer(self.supplier),
            "entry": entry(self.entry), "merged": [layer(m) for m in self.merged],
            "shadows": [{"layer": layer(li), "entry": entry(e)} for li, e in self.shadows],
            "hidden_by": None if self.hidden_by is None else {
                "layer": layer(self.hidden_by[0]), "path": self.hidden_by[1],
                "entry": entry(self.hidden_by[2])},
            "change": self.change,
            "volume": None if self.volume is None else {
                "type": self.volume.type, "source": self.volume.source,
                "destination": self.volume.destination, "rw": self.volume.rw},
            "reasons": list(self.reasons),
        }

    def lines(self) -> list[str]:
        """The explanation as text lines."""
        out = [f"{self.path}  ({self.subject})"]
        out.extend("  " + r for r in self.reasons)
        return out


def _mount_for(container: Any, path: str) -> Any:
    best = None
    for m in getattr(container, "mounts", []) or []:
        dest = m.destination.rstrip("/") or "/"
        if (path == dest or path.startswith(dest + "/")) and \
                (best is None or len(dest) > len(best.destination)):
            best = m
    return best


def explain(subject: Subject, path: str) -> Explanation:
    """Where ``path`` comes from in ``subject``, with the reasons in words.

    Raises ``FileNotFoundError`` (ENOENT) when the path is not in the view; its message
    names the whiteout or opaque directory that hides it when one does."""
    from unionfs.path import normalize

    p = normalize(path)
    if subject.container is not None:
        m = _mount_for(subject.container, p)
        if m is not None:
            kind = f"volume {m.name}" if m.type == "volume" else "bind mount"
            rw = "read-write" if m.rw else "read-only (writes fail with EROFS)"
            reasons = (f"{p} is inside {m.destination}, where a {kind} of the host "
                       f"directory {m.source} is mounted, {rw}.",
                       "Volume contents bypass the layers: they are not in the container's "
                       "writable layer, `imagesim diff` does not list them and `commit` does "
                       "not keep them; they survive `rm` of the container.")
            return Explanation(p, subject.describe, None, None, (), (), None, None, m,
                               reasons)
    try:
        prov = subject.fs.which(p)
    except FileNotFoundError:
        hidden = _find_hider(subject, p)
        if hidden is not None:
            layer, where, entry = hidden
            what = "a whiteout" if entry.kind is Kind.WHITEOUT else \
                "an opaque directory" if entry.opaque else f"a {kind_words(entry)}"
            raise FileNotFoundError(
                errno.ENOENT, f"No such file or directory: {what} at {where} in "
                f"{layer.title} hides it", p) from None
        raise
    supplier = subject.layer_at(prov.layer_index)
    merged = tuple(subject.layer_at(s.layer_index) for s in prov.merged)
    shadows = tuple((subject.layer_at(s.layer_index), s.entry) for s in prov.shadows)
    hidden_by = None
    if prov.hidden_by is not None:
        hb = prov.hidden_by
        hidden_by = (subject.layer_at(hb.layer_index), hb.path, hb.entry)
    change = subject.changes.get(p)
    reasons = _reasons(subject, p, supplier, prov.entry, merged, shadows, hidden_by, change)
    return Explanation(p, subject.describe, supplier, prov.entry, merged, shadows, hidden_by,
                       change, None, tuple(reasons))


def _find_hider(subject: Subject, p: str) -> tuple[LayerInfo, str, Entry] | None:
    """For a path absent from the view: the top-most marker that hides a lower version."""
    from unionfs.path import parents

    stack = []
    if subject.container is not None and subject.fs.upper is not None:
        stack.append((None, subject.fs.upper))
    stack.extend(enumerate(subject.fs.lowers))
    for idx, layer in stack:
        for q in [*parents(p)[1:], p]:
            e = layer.lookup(q)
            if e is None:
                continue
            if e.kind is Kind.WHITEOUT or (e.is_dir and e.opaque and q != p) or \
                    (not e.is_dir and q != p):
                # something below must have had the path for this to hide anything
                if any(lw.lookup(p) is not None for lw in subject.fs.lowers[
                        (idx + 1 if idx is not None else 0):]):
                    return subject.layer_at(idx), q, e
                return None
    return None


def _reasons(subject: Subject, p: str, supplier: LayerInfo, entry: Entry,
             merged: tuple[LayerInfo, ...], shadows: tuple[tuple[LayerInfo, Entry], ...],
             hidden_by: tuple[LayerInfo, str, Entry] | None, change: str | None) -> list[str]:
    out = []
    made = " ".join(supplier.created_by.replace("/bin/sh -c #(nop) ", "").split())
    if len(made) > 60:
        made = made[:59] + "…"
    cmd = f" (made by: {made})" if made and not supplier.is_container else ""
    out.append(f"supplied by: [{supplier.letter}] {supplier.title}{cmd}: {kind_words(entry)}")
    if entry.is_dir and len(merged) > 1:
        out.append("merged:      a directory present in several layers is merged: its names "
                   "are the union of " + ", ".join(f"[{m.letter}] {m.title}" for m in merged)
                   + "; its own metadata comes from the top-most")
    for layer, e in shadows:
        out.append(f"shadows:     [{layer.letter}] {layer.title}: {kind_words(e)} -- hidden, "
                   "still stored in that layer, but no longer visible")
    if hidden_by is not None:
        layer, where, e = hidden_by
        if e.kind is Kind.WHITEOUT:
            out.append(f"hidden by:   a whiteout at {where} in [{layer.letter}] {layer.title} "
                       "hides every lower version")
        else:
            out.append(f"hidden by:   {where} in [{layer.letter}] {layer.title} is an opaque "
                       "directory: nothing below it in lower layers shows through")
    if supplier.is_container and entry.is_dir:
        if change == "A":
            out.append("why:         the container created this directory: it exists only in "
                       "its writable layer (docker diff: A)")
        else:
            out.append("why:         something inside changed, so the directory itself was "
                       "copied up (its metadata only, not its contents) to hold the new "
                       "entries and whiteouts; its names still merge with the image's "
                       "(docker diff: C)")
    elif supplier.is_container:
        if change == "A":
            out.append("why:         the container created it: it exists only in its writable "
                       "layer (docker diff: A)")
        elif shadows or change == "C":
            out.append("why:         the container changed it: the first write copied the "
                       "whole file up from the image into the writable layer, and the copy "
                       "now hides the image's version (docker diff: C)")
        else:
            out.append("why:         it lives in the container's writable layer")
    elif subject.kind == "container":
        out.append("why:         the container has not changed it: reads go straight to the "
                   "read-only image layer, shared with every container of this image")
    elif entry.is_dir:
        if len(merged) <= 1:
            out.append("why:         only this layer holds the directory")
    else:
        out.append("why:         the top-most layer that holds a path supplies it; a file "
                   "hides every lower version")
    if not entry.is_dir and not shadows and not supplier.is_container:
        out.append("only copy:   no other layer holds this path")
    return out


# --------------------------------------------------------------------------- tree

@dataclass(frozen=True)
class TreeRow:
    """One line of the merged tree. ``depth`` 0 is the starting path. ``letters`` are every
    layer holding the path, top-most (supplying) first; ``mark`` is ``A``/``C``/``D`` or
    empty; ``is_last`` drives the connector."""

    path: str
    name: str
    depth: int
    kind: str
    letters: tuple[str, ...]
    mark: str
    size: int
    is_last: bool
    target: str | None = None
    ancestors_last: tuple[bool, ...] = ()
    mount: str | None = None      # a container's volume or bind mount at this path


def tree(subject: Subject, path: str = "/", *, max_depth: int | None = None,
         show_deleted: bool = True) -> list[TreeRow]:
    """The merged tree below ``path``, marked by layer. Raises ENOENT/ENOTDIR for ``path``."""
    from unionfs.path import normalize

    top = normalize(path)
    fs = subject.fs
    st = fs.lstat(top)
    rows: list[TreeRow] = []
    deleted: dict[str, list[str]] = {}
    if show_deleted:
        for p, mark in subject.changes.items():
            if mark == "D":
                parent, _, name = p.rpartition("/")
                deleted.setdefault(parent or "/", []).append(name)

    mounts: dict[str, str] = {}
    for m in getattr(subject.container, "mounts", None) or []:
        kind = f"volume {m.name}" if m.type == "volume" else f"bind mount of {m.source}"
        mounts[m.destination.rstrip("/") or "/"] = kind + ("" if m.rw else ", read-only")

    def letters_of(p: str) -> tuple[str, ...]:
        try:
            prov = fs.which(p)
        except OSError:
            return ()
        out = [subject.layer_at(prov.layer_index).letter]
        for s in (prov.merged[1:] if prov.entry.is_dir else prov.shadows):
            letter = subject.layer_at(s.layer_index).letter
            if letter not in out:
                out.append(letter)
        return tuple(out)

    def row(p: str, name: str, depth: int, last: bool, anc: tuple[bool, ...]) -> TreeRow:
        try:
            s = fs.lstat(p)
        except OSError:
            return TreeRow(p, name, depth, "deleted", (), "D", 0, last, None, anc)
        kind = "dir" if _stat.S_ISDIR(s.st_mode) else "link" if _stat.S_ISLNK(s.st_mode) \
            else "file"
        target = fs.readlink(p) if kind == "link" else None
        return TreeRow(p, name, depth, kind, letters_of(p), subject.changes.get(p, ""),
                       s.st_size if kind == "file" else 0, last, target, anc,
                       mounts.get(p))

    def walk(p: str, depth: int, anc: tuple[bool, ...]) -> None:
        if max_depth is not None and depth > max_depth:
            return
        names = sorted(set(fs.listdir(p)) | set(deleted.get(p, [])))
        for k, name in enumerate(names):
            child = p.rstrip("/") + "/" + name
            last = k == len(names) - 1
            r = row(child, name, depth, last, anc)
            rows.append(r)
            if r.kind == "dir":
                walk(child, depth + 1, (*anc, last))

    rows.append(row(top, top, 0, True, ()))
    if _stat.S_ISDIR(st.st_mode):
        walk(top, 1, ())
    return rows


def format_tree(subject: Subject, rows: list[TreeRow], *, all_layers: bool = False,
                color: bool = False) -> Iterator[Any]:
    """The tree as lines: plain strings, or ``rich.text.Text`` when ``color`` (one colour per
    layer). A legend of the layers comes first."""
    palette = ["cyan", "green", "yellow", "magenta", "blue", "bright_cyan", "bright_green",
               "bright_yellow", "bright_magenta", "bright_blue"]
    colors = {li.letter: ("bold red" if li.is_container else palette[(li.index - 1) %
                                                                      len(palette)])
              for li in subject.layers}
    text_cls = None
    if color:
        from rich.text import Text as text_cls
    yield f"{subject.describe}: layers, bottom first"
    for li in subject.layers:
        what = " ".join(li.created_by.replace("/bin/sh -c #(nop) ", "").split())[:60]
        line = f"  [{li.letter}] {li.title:<32} {human_size(li.size):>8}  {what}"
        yield text_cls(line, style=colors[li.letter]) if text_cls else line
    if subject.kind == "container":
        yield "  A added, C changed, D deleted in the container (as `imagesim diff`)"
    yield ""
    width = max((len(",".join(r.letters)) for r in rows), default=1) if all_layers else \
        max((len(r.letters[0]) for r in rows if r.letters), default=1)
    for r in rows:
        prefix = "".join("    " if last else "│   " for last in r.ancestors_last)
        conn = "" if r.depth == 0 else prefix + ("└── " if r.is_last else "├── ")
        name = r.name + ("/" if r.kind == "dir" and r.depth else "")
        if r.target is not None:
            name += f" -> {r.target}"
        if r.kind == "deleted":
            name += "  (deleted: a whiteout in the container layer hides it)"
        if r.mount:
            name += f"  ({r.mount} covers this path inside the container)"
        letters = (",".join(r.letters) if all_layers else r.letters[0]) if r.letters else " "
        mark = r.mark or " "
        if text_cls is None:
            yield f"{mark} [{letters}]{' ' * (width - len(letters))} {conn}{name}"
            continue
        t = text_cls()
        t.append(mark, style="bold " + {"A": "green", "C": "yellow", "D": "red"}.get(
            r.mark, "white"))
        t.append(" [")
        for k, letter in enumerate(r.letters if all_layers else r.letters[:1]):
            if k:
                t.append(",")
            t.append(letter, style=colors.get(letter, ""))
        t.append("]" + " " * (width - len(letters)) + " " + conn)
        style = colors.get(r.letters[0], "") if r.letters else "red strike"
        t.append(name, style=style)
        yield t


# --------------------------------------------------------------------------- layers --files

@dataclass(frozen=True)
class LayerFiles:
    """What one image layer does to the tree below it."""

    layer: LayerInfo
    added: tuple[tuple[str, int], ...]      # (path, bytes) new paths
    changed: tuple[tuple[str, int], ...]    # (path, bytes) replacing a lower version
    removed: tuple[str, ...]                # whiteouts (and opaque dirs) deleting lower paths
    bytes: int                              # regular-file bytes this layer stores
    wasted: int                             # of those, bytes later overwritten or deleted


@dataclass(frozen=True)
class LayerFilesReport:
    image: Any
    layers: tuple[LayerFiles, ...]
    total_bytes: int
    wasted_bytes: int

    @property
    def efficiency(self) -> float:
        """dive's score: the share of stored bytes still visible in the final image."""
        if self.total_bytes == 0:
            return 1.0
        return (self.total_bytes - self.wasted_bytes) / self.total_bytes

    @property
    def wasted_paths(self) -> list[tuple[str, int, int]]:
        """(path, how many layers held a version, wasted bytes), largest waste first."""
        return list(self._wasted_paths)

    _wasted_paths: tuple[tuple[str, int, int], ...] = ()


def layer_files(store: Any, image: Any) -> LayerFilesReport:
    """Per layer, what it added, changed and removed and the bytes it wastes; the image's
    efficiency. Reads only the layers' own entries (``walk_layer``), bottom first."""
    if isinstance(image, str):
        image = store.resolve(image)
    infos = _layer_infos(store, image)
    lowers = list(reversed(store.lower_layers(image)))   # bottom first
    # visible state: path -> (layer position, kind, size)
    state: dict[str, tuple[int, Kind, int]] = {}
    wasted = [0] * len(lowers)
    stored = [0] * len(lowers)
    versions: dict[str, int] = {}
    waste_by_path: dict[str, int] = {}
    results: list[tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]] = []

    def drop(prefix: str, include_self: bool) -> bool:
        hit = False
        for q in [k for k in state if (include_self and k == prefix) or
                  k.startswith(prefix.rstrip("/") + "/")]:
            pos, kind, size = state.pop(q)
            hit = True
            if kind is Kind.FILE:
                wasted[pos] += size
                waste_by_path[q] = waste_by_path.get(q, 0) + size
        return hit

    for pos, layer in enumerate(lowers):
        added: list[tuple[str, int]] = []
        changed: list[tuple[str, int]] = []
        removed: list[str] = []
        for p, e in walk_layer(layer):
            if p == "/":
                continue
            if e.kind is Kind.WHITEOUT:
                if drop(p, True):
                    removed.append(p)
                continue
            size = e.size if e.kind is Kind.FILE else 0
            if e.kind is Kind.FILE:
                stored[pos] += size
                versions[p] = versions.get(p, 0) + 1
            prev = state.get(p)
            if e.is_dir and e.opaque and drop(p, False):
                removed.append(p + "/*")
            if prev is None:
                added.append((p, size))
            elif not (e.is_dir and prev[1] is Kind.DIR):
                changed.append((p, size))
                if prev[1] is Kind.DIR:
                    drop(p, False)
                elif prev[1] is Kind.FILE:
                    wasted[prev[0]] += prev[2]
                    waste_by_path[p] = waste_by_path.get(p, 0) + prev[2]
            state[p] = (pos, e.kind, size)
        results.append((added, changed, removed))
    out = []
    for pos, (added, changed, removed) in enumerate(results):
        out.append(LayerFiles(infos[pos], tuple(added), tuple(changed), tuple(removed),
                              stored[pos], wasted[pos]))
    wasted_paths = sorted(((p, versions.get(p, 1), b) for p, b in waste_by_path.items()),
                          key=lambda t: (-t[2], t[0]))
    return LayerFilesReport(image, tuple(out), sum(stored), sum(wasted), tuple(wasted_paths))


def format_layer_files(report: LayerFilesReport, *, limit: int = 20) -> list[str]:
    """The report as dive-like text lines (at most ``limit`` paths per list per layer)."""
    lines = []
    for lf in report.layers:
        li = lf.layer
        made = " ".join(li.created_by.replace("/bin/sh -c #(nop) ", "").split())[:70]
        lines.append(f"[{li.letter}] layer {li.index}  {short_digest(li.diff_id)}  "
                     f"{human_size(lf.bytes)}  {made}")
        lines.append(f"    {len(lf.added)} added, {len(lf.changed)} changed, "
                     f"{len(lf.removed)} removed; wastes {human_size(lf.wasted)}"
                     + (" (content later overwritten or deleted)" if lf.wasted else ""))
        for label, items in (("A", [(p, s) for p, s in lf.added]),
                             ("C", [(p, s) for p, s in lf.changed]),
                             ("D", [(p, 0) for p in lf.removed])):
            for p, s in items[:limit]:
                lines.append(f"    {label} {p}" + (f"  ({human_size(s)})" if s else ""))
            if len(items) > limit:
                lines.append(f"    {label} ... {len(items) - limit} more")
    lines.append("")
    lines.append(f"Image efficiency score: {report.efficiency * 100:.2f} %")
    lines.append(f"Potential wasted space: {human_size(report.wasted_bytes)} "
                 f"of {human_size(report.total_bytes)} stored")
    if report.wasted_paths:
        lines.append("Inefficient files (count = layers holding a version):")
        lines.append(f"    {'Count':>5}  {'Wasted':>9}  Path")
        for p, count, b in report.wasted_paths[:limit]:
            lines.append(f"    {count:>5}  {human_size(b):>9}  {p}")
    return lines


# --------------------------------------------------------------------------- graph

@dataclass
class GraphNode:
    id: str
    kind: str                      # "layer" | "image" | "container" | "root"
    label: str
    size: int = 0
    users: int = 0                 # layers: how many images use it
    children: list[str] = field(default_factory=list)


@dataclass
class Graph:
    """Images, their layers and containers. Layers are keyed by chain id, so a layer shared
    by several images (same content on the same base) is one node, drawn once."""

    nodes: dict[str, GraphNode]
    root: str = "scratch"

    def to_text(self) -> list[str]:
        lines = ["<scratch>  (empty: the base layer's parent)"]

        def walk(nid: str, prefix: str) -> None:
            kids = self.nodes[nid].children
            for k, cid in enumerate(kids):
                last = k == len(kids) - 1
                lines.append(prefix + ("└── " if last else "├── ") + self.nodes[cid].label)
                walk(cid, prefix + ("    " if last else "│   "))

        walk(self.root, "")
        return lines

    def to_dot(self) -> str:
        shapes = {"layer": 'shape=box, style="rounded,filled", fillcolor="#e8f0fe"',
                  "image": 'shape=ellipse, style=filled, fillcolor="#d9f2d9"',
                  "container": 'shape=note, style=filled, fillcolor="#fde2cf"',
                  "root": 'shape=point'}
        out = ["digraph imagesim {", '  rankdir=TB;', '  node [fontname="Helvetica"];',
               '  edge [color="#555555"];']
        for node in self.nodes.values():
            label = node.label.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'  "{node.id}" [label="{label}", {shapes[node.kind]}];')
        for node in self.nodes.values():
            for cid in node.children:
                out.append(f'  "{node.id}" -> "{cid}";')
        out.append("}")
        return "\n".join(out) + "\n"


def build_graph(store: Any) -> Graph:
    """The graph of every image in the store, its layers and its containers."""
    from .container import ContainerStore

    nodes: dict[str, GraphNode] = {"scratch": GraphNode("scratch", "root", "scratch")}
    users: dict[str, set[str]] = {}
    records = store.images()
    for rec in records:
        for c in rec.image.chain_ids:
            users.setdefault(str(c), set()).add(str(rec.image.digest))
    try:
        containers = ContainerStore(store).list(all=True)
    except Exception:  # a store with no container state yet
        containers = []
    for rec in records:
        img = rec.image
        parent = "scratch"
        for chain, diff in zip(img.chain_ids, img.diff_ids, strict=True):
            cid = str(chain)
            if cid not in nodes:
                size = store.layer_size(diff)
                n = len(users.get(cid, ()))
                shared = f", shared by {n} images" if n > 1 else ""
                nodes[cid] = GraphNode(cid, "layer", f"layer {short_digest(diff)} "
                                       f"({human_size(size)}{shared})", size, n)
                nodes[parent].children.append(cid)
            parent = cid
        tags = ", ".join(str(t) for t in rec.tags) or "<none>"
        iid = "image:" + str(img.digest)
        nodes[iid] = GraphNode(iid, "image", f"image {tags} [{short_digest(img.id)}]")
        nodes[parent].children.append(iid)
    for c in containers:
        iid = "image:" + str(c.image_digest)
        if iid not in nodes:
            continue
        nid = "container:" + c.id
        state = "running" if c.running else "stopped"
        nodes[nid] = GraphNode(nid, "container", f"container {c.name} ({c.short_id}, "
                               f"{state}, {human_size(c.size_rw())} written)", c.size_rw())
        nodes[iid].children.append(nid)
    for node in nodes.values():
        node.children.sort(key=lambda k: (nodes[k].kind != "layer", nodes[k].label))
    return Graph(nodes)


def render_svg(dot_text: str, *, dot: str | None = None, timeout: float = 60) -> bytes:
    """Render DOT text to SVG with Graphviz ``dot``. Raises ``TeachError`` when ``dot`` is not
    installed or fails."""
    exe = dot or shutil.which("dot")
    if exe is None:
        raise TeachError("Graphviz `dot` is not installed: use --format dot and render it "
                         "elsewhere, or install graphviz")
    proc = subprocess.run([exe, "-Tsvg"], input=dot_text.encode(), capture_output=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise TeachError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout
