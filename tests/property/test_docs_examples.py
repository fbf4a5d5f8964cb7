"""The runnable examples of docs/testing.md run as written (each ```python block that opens
with a ``# test_*.py`` comment is executed and its tests called)."""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import settings

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def _examples() -> list[tuple[str, str]]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return [(b.splitlines()[0][2:].strip(), b) for b in blocks if b.startswith("# test_")]


def test_the_doc_has_examples():
    assert [name for name, _ in _examples()] == ["test_my_union.py", "test_my_property.py"]


@pytest.mark.parametrize(("name", "code"), _examples(), ids=[n for n, _ in _examples()])
def test_doc_example_runs(name, code):
    namespace: dict = {"__name__": name[:-3]}
    exec(compile(code, name, "exec"), namespace)
    ran = 0
    for key, value in namespace.items():
        if key.startswith("Test") and isinstance(value, type):
            value.settings = settings(max_examples=5, stateful_step_count=8)  # a smoke run
            value("runTest").runTest()
            ran += 1
        elif key.startswith("test_") and callable(value):
            value()
            ran += 1
    assert ran == 1
