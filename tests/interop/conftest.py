"""Fixtures shared by the FUSE mount tests in this directory."""

from __future__ import annotations

import pytest

from tests.conftest import need_fuse, need_root
from tests.interop.fuse_helpers import Stack, make_stack


@pytest.fixture
def stack(tmp_path) -> Stack:
    """A layer stack on disk to mount (skips without root or FUSE; fails under CI=true)."""
    need_root()
    need_fuse()
    return make_stack(tmp_path)
