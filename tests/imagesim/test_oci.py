"""OCI documents: built bytes parse back, validation refuses what the spec does not allow."""

from __future__ import annotations

import json

import pytest

from imagesim import oci
from imagesim.digest import Digest
from imagesim.errors import ArchiveInvalid, ManifestInvalid

CFG = b'{"rootfs":{"type":"layers","diff_ids":[]}}'


def test_manifest_round_trip_keeps_descriptors():
    cfg = oci.Descriptor.of(oci.OCI_CONFIG, CFG)
    layer = oci.Descriptor(oci.OCI_LAYER_GZIP, Digest.of(b"x"), 1,
                           annotations=(("a", "b"),))
    data = oci.build_manifest(cfg, [layer], annotations={"k": "v"})
    m = oci.parse_manifest(data)
    assert m.config == cfg
    assert m.layers == (layer,)
    assert m.annotations == (("k", "v"),)
    assert oci.media_type_of(data) == oci.OCI_MANIFEST


def test_dumps_is_compact_ordered_and_escapes_like_go():
    assert oci.dumps({"b": 1, "a": "<&>"}) == b'{"b":1,"a":"\\u003c\\u0026\\u003e"}'


@pytest.mark.parametrize("doc, match", [
    ({"schemaVersion": 1}, "schemaVersion"),
    ({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}, "not an image"),
    ({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:12", "size": 1},
      "layers": []}, "invalid"),
    ({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64,
                                     "size": -1}, "layers": []}, "size"),
    ({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64,
                                     "size": 1}, "layers": {}}, "layers"),
    ({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64,
                                     "size": 1},
      "layers": [{"mediaType": "text/plain", "digest": "sha256:" + "a" * 64, "size": 1}]},
     "unsupported media type"),
])
def test_parse_manifest_refuses_bad_documents(doc, match):
    with pytest.raises(ManifestInvalid, match=match):
        oci.parse_manifest(json.dumps(doc).encode())


def test_not_json_and_not_object_and_too_big():
    with pytest.raises(ManifestInvalid, match="not valid JSON"):
        oci.parse_manifest(b"{")
    with pytest.raises(ManifestInvalid, match="not a JSON object"):
        oci.parse_manifest(b"[]")
    with pytest.raises(ManifestInvalid, match="too large"):
        oci.loads(b" " * (oci.MAX_DOCUMENT + 1))


def test_config_history_invariant():
    d = Digest.of(b"layer")
    data = oci.build_config(created="2024-01-01T00:00:00Z", diff_ids=[d],
                            history=[{"created_by": "a"}, {"created_by": "b",
                                                            "empty_layer": True}])
    cfg = oci.parse_config(data)
    assert cfg["rootfs"]["diff_ids"] == [str(d)]
    with pytest.raises(ManifestInvalid, match="non-empty"):
        oci.build_config(created="x", diff_ids=[d], history=[{"empty_layer": True}])
    bad = json.dumps({"rootfs": {"diff_ids": [str(d)]},
                      "history": [{"empty_layer": True}]}).encode()
    with pytest.raises(ManifestInvalid, match="non-empty"):
        oci.parse_config(bad)


def test_runtime_config_order_and_empty_values_dropped():
    out = oci.order_runtime_config({"Cmd": ["x"], "Env": [], "User": "u", "Extra": 1})
    assert list(out) == ["User", "Cmd", "Extra"]


def test_index_and_platform_choice():
    a = oci.Descriptor(oci.OCI_MANIFEST, Digest.of(b"a"), 1,
                       platform=oci.Platform("arm64", "linux"))
    b = oci.Descriptor(oci.OCI_MANIFEST, Digest.of(b"b"), 1,
                       platform=oci.Platform("amd64", "linux"))
    descs = oci.parse_index(oci.build_index([a, b]))
    assert oci.pick_platform(descs) == b
    assert oci.pick_platform([a]) is None
    with pytest.raises(ArchiveInvalid):
        oci.parse_index(b'{"schemaVersion":2}', ArchiveInvalid)


def test_layout_file():
    oci.parse_layout(oci.OCI_LAYOUT_BYTES)
    with pytest.raises(ArchiveInvalid):
        oci.parse_layout(b'{"imageLayoutVersion":"2.0.0"}')


def test_layer_media_types():
    assert oci.layer_media_type("gzip") == oci.OCI_LAYER_GZIP
    assert oci.layer_media_type("none", docker=True) == oci.DOCKER_LAYER
    with pytest.raises(ManifestInvalid):
        oci.layer_media_type("zstd", docker=True)


def test_a_deeply_nested_document_is_a_clear_error():
    from imagesim.errors import ManifestInvalid
    from imagesim.oci import loads

    with pytest.raises(ManifestInvalid, match="nested too deeply"):
        loads(b"[" * 50_000 + b"]" * 50_000)
