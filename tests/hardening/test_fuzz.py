"""Short fuzz runs (hypothesis profile ``dev``/``ci``) of the tar reader, the reference
parser and the registry's request handlers. ``python benchmarks/fuzz.py`` runs the same
targets for longer, with atheris where it is installed."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzz_targets as ft
import strategies_fuzz as sf


@given(sf.tars())
def test_fuzz_structured_tars(data):
    ft.tar_target(data)


@given(st.binary(max_size=4096))
def test_fuzz_raw_bytes_as_a_layer(data):
    ft.tar_target(data)


@given(sf.reference_text)
def test_fuzz_reference_parser(text):
    ft.reference_target(text)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    t = ft.RegistryTarget(str(tmp_path_factory.mktemp("fuzz-reg") / "reg"))
    yield t
    t.close()


@given(sf.requests())
def test_fuzz_registry_requests(registry, req):
    registry(*req)
    registry.check_storage()


def test_reference_round_trip_of_a_nested_library_path():
    # found by atheris: docker.io/library/dry/d once printed as dry/d, another repository
    ft.reference_target("library/dry/d:3S")
