"""The strategies' writers: one generated spec, materialised as a MemoryLayer, as overlayfs-
and OCI-form directories and as an OCI tar, reads back as the same layer, and a union of them
shows the model's tree."""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unionfs.entry import Kind
from unionfs.layer import DirLayer, walk_layer
from unionfs.testing.conformance import EngineTarget, snapshot
from unionfs.testing.model import (
    Dir,
    Fifo,
    File,
    HardLink,
    LayerSpec,
    StackSpec,
    Symlink,
    UnionModel,
    Whiteout,
)
from unionfs.testing.strategies import (
    LONG_NAME,
    layer_specs,
    memory_layer,
    near_paths,
    oci_layer_tar,
    op_sequences,
    stacks,
    write_layer_dir,
)

KIND = {File: Kind.FILE, HardLink: Kind.FILE, Dir: Kind.DIR, Symlink: Kind.SYMLINK,
        Fifo: Kind.FIFO, Whiteout: Kind.WHITEOUT}
FORMATS = ["overlay", "oci"] if os.geteuid() == 0 else ["oci"]


def _as_layer(spec: LayerSpec) -> dict[str, tuple]:
    """What a layer reading ``spec`` must report, per path (root left out)."""
    out = {}
    for path, node in spec.entries:
        real = spec.resolve(node)
        mode = getattr(real, "mode", None) if not isinstance(real, Symlink) else None
        out[path] = (KIND[type(node)], mode, getattr(real, "uid", None),
                     getattr(real, "data", None), getattr(node, "target", None),
                     tuple(getattr(real, "xattrs", ())),
                     bool(getattr(node, "opaque", False)))
    return out


def _read_layer(layer) -> dict[str, tuple]:
    out = {}
    for path, e in walk_layer(layer):
        if path == "/":
            continue
        data = layer.read(path, 0, e.size + 1) if e.kind is Kind.FILE else None
        mode = None if e.kind in (Kind.SYMLINK, Kind.WHITEOUT) else e.mode
        uid = None if e.kind is Kind.WHITEOUT else e.uid
        target = layer.readlink(path) if e.kind is Kind.SYMLINK else None
        out[path] = (e.kind, mode, uid, data, target, e.xattrs, e.opaque)
    return out


@given(spec=layer_specs())
def test_memory_layer_holds_the_spec(spec):
    assert _read_layer(memory_layer(spec)) == _as_layer(spec)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=max(5, settings.default.max_examples // 2))
@given(spec=layer_specs())
def test_layer_dirs_hold_the_spec(fmt, spec):
    with tempfile.TemporaryDirectory() as base:
        assert _read_layer(DirLayer(write_layer_dir(spec, f"{base}/l", fmt),
                                    cache=False)) == _as_layer(spec)


@given(spec=layer_specs(hard_links=False, fifos=False))
def test_oci_tar_matches_the_oci_dir(spec):
    with tarfile.open(fileobj=io.BytesIO(oci_layer_tar(spec))) as tar:
        members = {"/" + m.name.rstrip("/"): m for m in tar.getmembers()}
        for path, node in spec.entries:
            head, _, name = path.rpartition("/")
            if isinstance(node, Whiteout):
                assert members[f"{head}/.wh.{name}"].isfile()
                continue
            m = members[path]
            if isinstance(node, File):
                assert tar.extractfile(m).read() == node.data
                assert stat.S_IMODE(m.mode) == node.mode
                assert {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                        for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")
                        } == dict(node.xattrs)
            elif isinstance(node, Dir):
                assert m.isdir() and (f"{path}/.wh..wh..opq" in members) == node.opaque
            elif isinstance(node, Symlink):
                assert m.issym() and m.linkname == node.target


def test_oci_tar_hard_links_and_fifos():
    spec = LayerSpec.of({"/a": File(b"1"), "/b": HardLink("/a"), "/p": Fifo(0o600)})
    with tarfile.open(fileobj=io.BytesIO(oci_layer_tar(spec))) as tar:
        by_name = {m.name: m for m in tar.getmembers()}
    assert by_name["b"].islnk() and by_name["b"].linkname == "a"
    assert by_name["p"].isfifo() and stat.S_IMODE(by_name["p"].mode) == 0o600


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=max(5, settings.default.max_examples // 2))
@given(stack=stacks())
def test_a_union_of_written_layers_shows_the_models_tree(fmt, stack):
    with tempfile.TemporaryDirectory() as base:
        assert snapshot(EngineTarget.on_disk(stack, base, fmt=fmt)) == snapshot(
            UnionModel(stack))


def test_near_paths_cover_the_errno_shapes():
    paths = near_paths(["/d", "/d/f", "/g"], ["/d"], names=("a",))
    assert paths == sorted(["/d", "/d/f", "/g", "/a", "/d/a", "/d/f/a", "/g/a", "/nodir/a",
                            "/" + LONG_NAME])
    model = UnionModel(StackSpec((LayerSpec.of({"/d": Dir(), "/d/f": File(), "/g": File()}),)))
    errnos = set()
    for path in paths:
        try:
            model.lstat(path)
        except OSError as e:
            errnos.add(e.errno)
    assert errnos == {errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG}


@given(data=st.data(), stack=stacks())
def test_op_sequences_use_the_stacks_names(data, stack):
    named = {p for layer in stack.layers() for p, _ in layer.entries}
    for op in data.draw(op_sequences(stack, max_size=8)):
        for arg in op.args:
            if isinstance(arg, str) and arg.startswith("/") and op.call != "symlink":
                parent = arg.rsplit("/", 1)[0] or "/"
                assert arg in named or parent in named | {"/", "/nodir"}, op


def test_stacks_never_hold_stray_whiteouts():
    stack = StackSpec((LayerSpec.of({"/o": Dir(opaque=True), "/o/w": Whiteout()}),))
    from unionfs.testing.strategies import without_stray_whiteouts
    assert without_stray_whiteouts(stack).lowers[0].entries == (("/o", Dir(opaque=True)),)
