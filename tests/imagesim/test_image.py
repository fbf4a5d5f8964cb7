"""Immutable images: raw bytes beside parsed views, digests over the raw bytes, functional
edits, chain ids, Dockerfile changes."""

from __future__ import annotations

import hashlib

import pytest

from imagesim import oci
from imagesim.digest import Digest
from imagesim.errors import DigestInvalid, ManifestInvalid
from imagesim.image import Image, chain_ids, parse_time

L1 = Digest.of(b"layer one")
L2 = Digest.of(b"layer two")


def _desc(d: Digest) -> oci.Descriptor:
    return oci.Descriptor(oci.OCI_LAYER_GZIP, d, 10)


def test_new_image_and_digests_are_over_raw_bytes():
    img = Image.new(config={"Cmd": ["/bin/sh"]}, created="2024-01-01T00:00:00Z")
    assert img.digest == Digest.of(img.manifest_bytes)
    assert img.id == Digest.of(img.config_bytes)
    assert img.runtime_config == {"Cmd": ["/bin/sh"]}
    assert img.diff_ids == ()


def test_append_layer_is_functional():
    base = Image.new(created="2024-01-01T00:00:00Z")
    one = base.append_layer(_desc(L1), L1, created_by="ADD x", created="2024-01-02T00:00:00Z")
    two = one.append_layer(_desc(L2), L2, created_by="RUN y", comment="c", author="me",
                           created="2024-01-03T00:00:00Z")
    assert base.diff_ids == ()
    assert one.diff_ids == (L1,)
    assert two.diff_ids == (L1, L2)
    assert [d.digest for d in two.layers] == [L1, L2]
    assert two.history[-1] == {"created": "2024-01-03T00:00:00Z", "created_by": "RUN y",
                               "author": "me", "comment": "c"}
    assert two.config["author"] == "me"
    assert two.created == "2024-01-03T00:00:00Z"
    assert len({base.digest, one.digest, two.digest}) == 3
    # the views are copies: changing them changes nothing
    two.runtime_config["Cmd"] = ["x"]
    assert "Cmd" not in two.runtime_config


def test_with_config_keeps_layers_and_history():
    img = Image.new(created="2024-01-01T00:00:00Z").append_layer(_desc(L1), L1,
                                                                   created_by="a")
    edited = img.with_config(config={"Env": ["A=1"]})
    assert edited.diff_ids == img.diff_ids
    assert edited.history == img.history
    assert edited.runtime_config == {"Env": ["A=1"]}
    assert edited.id != img.id


def test_append_history_empty_layer():
    img = Image.new(created="2024-01-01T00:00:00Z").append_layer(_desc(L1), L1)
    img2 = img.append_history("CMD [\"x\"]", config={"Cmd": ["x"]})
    assert img2.history[-1]["empty_layer"] is True
    assert [(r.get("created_by"), i) for r, i in img2.history_rows()] == \
        [(None, 0), ('CMD ["x"]', None)]


def test_from_bytes_checks_config_and_counts():
    img = Image.new(created="2024-01-01T00:00:00Z").append_layer(_desc(L1), L1)
    with pytest.raises(DigestInvalid):
        Image.from_bytes(img.manifest_bytes, img.config_bytes + b" ")
    bad_manifest = oci.build_manifest(img.config_descriptor, [])
    with pytest.raises(ManifestInvalid, match="0 layers"):
        Image.from_bytes(bad_manifest, img.config_bytes)


def test_media_type_conversion():
    img = Image.new(created="2024-01-01T00:00:00Z").append_layer(_desc(L1), L1)
    docker = img.with_media_type(oci.DOCKER_MANIFEST)
    assert docker.media_type == oci.DOCKER_MANIFEST
    assert docker.layers[0].media_type == oci.DOCKER_LAYER_GZIP
    assert docker.id == img.id
    assert docker.with_media_type(oci.OCI_MANIFEST).digest == img.digest


def test_chain_ids_follow_the_spec():
    assert chain_ids([]) == []
    ids = chain_ids([L1, L2])
    assert ids[0] == L1
    assert ids[1].hex == hashlib.sha256(f"{L1} {L2}".encode()).hexdigest()


def test_parse_time_with_nanoseconds():
    t = parse_time("2023-10-25T10:53:51.123456789Z")
    assert t is not None and t.microsecond == 123456
    assert parse_time("garbage") is None
    assert parse_time(None) is None


