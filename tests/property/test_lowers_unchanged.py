"""Property: lower layers are byte-identical before and after any sequence of operations, on
disk (every name, type, mode, owner, time, link count, xattr incl. trusted.*, content) and in
memory (every entry and its data), whatever the options."""

from __future__ import annotations

import hashlib
import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from unionfs.layer import walk_layer
from unionfs.testing.conformance import EngineTarget, dir_fingerprint, outcome
from unionfs.testing.model import UnionModel, UnsupportedStep
from unionfs.testing.strategies import op_sequences, stacks

OPTION_SETS = st.sampled_from([{}, {"redirect_dir": True}, {"index": True},
                               {"redirect_dir": True, "index": True, "metacopy": True}])


def _run(target, model: UnionModel, steps) -> int:
    """Apply the steps the model can answer; how many were applied."""
    done = 0
    for op in steps:
        if not model.supports(op.call, *op.args):
            continue
        try:
            outcome(model, op)
        except UnsupportedStep:
            continue
        outcome(target, op)
        done += 1
    return done


def _memory_fingerprint(layer) -> str:
    h = hashlib.sha256()
    for path, entry in walk_layer(layer):
        h.update(repr((path, entry)).encode())
        if entry.kind.value == "file":
            h.update(layer.read(path, 0, entry.size + 1))
    return h.hexdigest()


@settings(max_examples=settings.default.max_examples)
@given(data=st.data(), stack=stacks(), options=OPTION_SETS)
def test_lower_dirs_never_change(data, stack, options):
    steps = data.draw(op_sequences(stack, max_size=15), label="steps")
    with tempfile.TemporaryDirectory(prefix="unionfs-lowers-") as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        target = EngineTarget.on_disk(stack, base, fmt=fmt, **options)
        lowers = [layer.root for layer in target.fs.lowers]
        before = [dir_fingerprint(d) for d in lowers]
        _run(target, UnionModel(stack, **options), steps)
        assert [dir_fingerprint(d) for d in lowers] == before


@given(data=st.data(), stack=stacks(), options=OPTION_SETS)
def test_memory_lowers_never_change(data, stack, options):
    steps = data.draw(op_sequences(stack, max_size=15), label="steps")
    target = EngineTarget.memory(stack, **options)
    before = [_memory_fingerprint(layer) for layer in target.fs.lowers]
    _run(target, UnionModel(stack, **options), steps)
    assert [_memory_fingerprint(layer) for layer in target.fs.lowers] == before


def test_the_fingerprint_sees_a_change(tmp_path):
    # the property above is only as good as the fingerprint: it must notice each kind of change
    d = tmp_path / "layer"
    d.mkdir()
    (d / "f").write_bytes(b"abc")
    first = dir_fingerprint(d)
    os.chmod(d / "f", 0o600)
    second = dir_fingerprint(d)
    os.setxattr(d / "f", "user.x", b"1")
    third = dir_fingerprint(d)
    (d / "f").write_bytes(b"abd")
    os.utime(d / "f", ns=(0, 0))
    fourth = dir_fingerprint(d)
    assert len({first, second, third, fourth}) == 4
