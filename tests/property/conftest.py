"""The union model is the oracle for a caller with root's powers (no permission checks, any
owner can be materialised), so the tests that run an implementation next to it need root: they
skip without it (and fail under CI=true, where everything runs as root). The model's own tests
(``test_model.py``) run anywhere."""

from __future__ import annotations

import pytest

from tests.conftest import need_root


@pytest.fixture(autouse=True)
def _root_for_the_oracle(request):
    if request.node.path.name != "test_model.py":
        need_root()
