"""save / load / import / export: round trips with identical digests, every archive era,
compressed archives, and hostile archives that must leave the store as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest
import zstandard

from imagesim import archive, layers, library, oci
from imagesim.digest import Digest
from imagesim.errors import ArchiveInvalid, DigestInvalid, ImageSimError, LayerInvalid
from imagesim.store import Store
from unionfs.union import UnionFS


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("src") / "root", fsync=False)
    for ref in ("ubuntu", "tomcat", "redis:6.0.8"):
        library.pull(s, ref, io.StringIO())
    s.tag("ubuntu", "myubuntu:1.3")
    return s


@pytest.fixture
def dst(tmp_path) -> Store:
    return Store(tmp_path / "dst", fsync=False)


def _members(path) -> dict[str, bytes | None]:
    out = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            out[m.name] = tf.extractfile(m).read() if m.isfile() else None
    return out


def _state(store: Store) -> tuple:
    return (sorted(str(d) for d in store.blobs), sorted(os.listdir(store.layers_root)),
            store.tags(), [r.image.digest for r in store.images()])


def test_save_is_an_oci_layout_and_a_docker_archive(src, tmp_path):
    path = tmp_path / "s.tar"
    archive.save_to_file(src, ["ubuntu:latest", "tomcat"], path)
    m = _members(path)
    assert json.loads(m["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(m["index.json"])
    names = {d["annotations"]["io.containerd.image.name"] for d in index["manifests"]}
    assert names == {"docker.io/library/ubuntu:latest", "docker.io/library/tomcat:latest"}
    for d in index["manifests"]:
        blob = m[f"blobs/sha256/{d['digest'].split(':')[1]}"]
        assert hashlib.sha256(blob).hexdigest() == d["digest"].split(":")[1]
        assert d["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    manifest = json.loads(m["manifest.json"])
    assert {tuple(e["RepoTags"]) for e in manifest} == {("ubuntu:latest",), ("tomcat:latest",)}
    for e in manifest:
        assert e["Config"] in m and all(layer in m for layer in e["Layers"])
    repos = json.loads(m["repositories"])
    assert set(repos) == {"ubuntu", "tomcat"}
    # shared blobs are stored once
    assert len([n for n in m if n.startswith("blobs/sha256/")]) == len(set(m)) - 6


def test_save_then_load_gives_identical_digests_and_tags(src, dst, tmp_path):
    path = tmp_path / "s.tar"
    archive.save_to_file(src, ["ubuntu", "tomcat:latest", "redis:6.0.8", "myubuntu"], path)
    out = io.StringIO()
    loaded = archive.load(dst, str(path), out)
    assert sorted(out.getvalue().splitlines()) == sorted([
        "Loaded image: ubuntu:latest", "Loaded image: tomcat:latest",
        "Loaded image: redis:6.0.8", "Loaded image: myubuntu:1.3"])
    for name in ("ubuntu", "tomcat", "redis:6.0.8", "myubuntu:1.3"):
        assert dst.resolve(name).digest == src.resolve(name).digest
    assert len(loaded) == 3
    # and a second save from the new store is byte-identical
    again = tmp_path / "again.tar"
    archive.save_to_file(dst, ["ubuntu", "tomcat:latest", "redis:6.0.8", "myubuntu"], again)
    assert again.read_bytes() == path.read_bytes()


def test_save_by_id_has_no_tags_and_repo_means_every_tag(src, dst, tmp_path):
    img = src.resolve("ubuntu")
    path = tmp_path / "id.tar"
    archive.save_to_file(src, [img.id.short], path)
    out = io.StringIO()
    archive.load(dst, str(path), out)
    assert out.getvalue() == f"Loaded image ID: {img.id}\n"
    res = archive._select(src, ["ubuntu"])
    assert [str(t) for t in res[0].tags] == ["ubuntu:latest"]
    res = archive._select(src, ["myubuntu"])
    assert [str(t) for t in res[0].tags] == ["myubuntu:1.3"]


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_load_compressed_archives_and_stdin_streams(src, dst, tmp_path, compress):
    path = tmp_path / "s.tar"
    archive.save_to_file(src, ["redis:6.0.8"], path)
    data = path.read_bytes()
    packed = gzip.compress(data) if compress == "gzip" else \
        zstandard.ZstdCompressor().compress(data)
    archive.load(dst, io.BytesIO(packed), io.StringIO())
    assert dst.resolve("redis:6.0.8").digest == src.resolve("redis:6.0.8").digest


def test_oci_dir_round_trip(src, dst, tmp_path):
    d = tmp_path / "layout"
    archive.save_oci_dir(src, ["tomcat"], d)
    assert json.loads((d / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    archive.load(dst, str(d), io.StringIO())
    assert dst.resolve("tomcat").digest == src.resolve("tomcat").digest
    # a second image into the same layout keeps the blobs and rewrites the index
    archive.save_oci_dir(src, ["ubuntu"], d)
    assert len(json.loads((d / "index.json").read_text())["manifests"]) == 1


def _legacy_archive(store: Store, ref: str) -> bytes:
    """A docker 1.10–24 style archive: <id>/layer.tar (uncompressed), <config>.json."""
    img = store.resolve(ref)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        names = []
        for i, desc in enumerate(img.layers):
            raw = store.blobs.get(desc.digest)
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            lid = hashlib.sha256(f"{i}{desc.digest}".encode()).hexdigest()
            add(f"{lid}/VERSION", b"1.0")
            add(f"{lid}/json", b"{}")
            add(f"{lid}/layer.tar", raw)
            names.append(f"{lid}/layer.tar")
        add(f"{img.id.hex}.json", img.config_bytes)
        add("manifest.json", json.dumps([{"Config": f"{img.id.hex}.json",
                                          "RepoTags": ["legacy:1"],
                                          "Layers": names}]).encode())
        add("repositories", json.dumps({"legacy": {"1": names[-1].split("/")[0]}}).encode())
    return buf.getvalue()


def test_load_a_docker_1_10_to_24_archive(src, dst):
    archive.load(dst, io.BytesIO(_legacy_archive(src, "redis:6.0.8")), io.StringIO())
    got = dst.resolve("legacy:1")
    assert got.id == src.resolve("redis:6.0.8").id           # same config, same IMAGE ID
    assert got.diff_ids == src.resolve("redis:6.0.8").diff_ids


def test_load_a_pre_1_10_archive(dst):
    layer_a = layers.tar_header("a", kind="0", size=1) + b"A" + b"\0" * 511 + b"\0" * 1024
    layer_b = layers.tar_header("b", kind="0", size=1) + b"B" + b"\0" * 511 + b"\0" * 1024
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        add("1" * 64 + "/json", json.dumps({"id": "1" * 64, "created": "2015-01-01T00:00:00Z",
                                            "container_config": {"Cmd": ["/bin/sh", "-c",
                                                                         "ADD a"]}}).encode())
        add("1" * 64 + "/layer.tar", layer_a)
        add("2" * 64 + "/json", json.dumps({"id": "2" * 64, "parent": "1" * 64,
                                            "created": "2015-01-02T00:00:00Z",
                                            "config": {"Cmd": ["/bin/sh"]}}).encode())
        add("2" * 64 + "/layer.tar", layer_b)
        add("repositories", json.dumps({"old": {"v1": "2" * 64}}).encode())
    archive.load(dst, io.BytesIO(buf.getvalue()), io.StringIO())
    img = dst.resolve("old:v1")
    assert img.diff_ids == (Digest.of(layer_a), Digest.of(layer_b))
    assert img.runtime_config["Cmd"] == ["/bin/sh"]
    fs = UnionFS(lowers=dst.lower_layers(img))
    assert sorted(fs.listdir("/")) == ["a", "b"]


def _tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layout_files(src: Store, ref: str) -> dict[str, bytes]:
    img = src.resolve(ref)
    files = {"oci-layout": oci.OCI_LAYOUT_BYTES,
             "index.json": oci.build_index([img.manifest_descriptor])}
    for d in [img.digest, img.id, *[x.digest for x in img.layers]]:
        files[f"blobs/sha256/{d.hex}"] = src.blobs.get(d)
    return files


def _nested(depth: int) -> dict[str, bytes]:
    files = {"oci-layout": oci.OCI_LAYOUT_BYTES}
    inner = oci.build_index([])
    for _ in range(depth):
        d = Digest.of(inner)
        files[f"blobs/sha256/{d.hex}"] = inner
        inner = oci.build_index([oci.Descriptor(oci.OCI_INDEX, d, len(inner))])
    files["index.json"] = inner
    return files


def _hostile(src: Store) -> dict[str, tuple[bytes, type, str]]:
    img = src.resolve("redis:6.0.8")
    ok = _layout_files(src, "redis:6.0.8")
    missing = dict(ok)
    del missing[f"blobs/sha256/{img.layers[-1].digest.hex}"]
    wrong = dict(ok)
    wrong[f"blobs/sha256/{img.layers[-1].digest.hex}"] = b"not the layer"
    wrong_size = dict(ok)
    bad_desc = oci.Descriptor(img.media_type, img.digest, len(img.manifest_bytes) + 1)
    wrong_size["index.json"] = oci.build_index([bad_desc])
    escape = {"manifest.json": json.dumps([{"Config": "../../etc/passwd", "RepoTags": [],
                                            "Layers": []}]).encode()}
    bad_layer = _legacy_files_with_layer(img, b"garbage that is not a tar" * 30)
    return {
        "missing blob": (_tar_of(missing), ArchiveInvalid, "does not contain"),
        "wrong digest": (_tar_of(wrong), DigestInvalid, "hashes to"),
        "wrong size": (_tar_of(wrong_size), ArchiveInvalid, "bytes"),
        "config outside": (_tar_of(escape), ArchiveInvalid, "does not contain"),
        "nested indexes": (_tar_of(_nested(8)), ArchiveInvalid, "nested"),
        "no metadata": (_tar_of({"hello": b"x"}), ArchiveInvalid, "not an image archive"),
        "not a tar": (os.urandom(4096), ArchiveInvalid, "not a readable"),
        "truncated": (_tar_of(ok)[:3000], ArchiveInvalid, "truncated"),
        "bad json": (_tar_of({"manifest.json": b"[{"}), ArchiveInvalid, "JSON"),
        "layer not a tar": (_tar_of(bad_layer), LayerInvalid, "checksum"),
    }


def _legacy_files_with_layer(img, layer: bytes) -> dict[str, bytes]:
    cfg = oci.build_config(created="2024-01-01T00:00:00Z", diff_ids=[Digest.of(layer)])
    return {"c.json": cfg, "l/layer.tar": layer,
            "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["bad:1"],
                                          "Layers": ["l/layer.tar"]}]).encode()}


def test_hostile_archives_leave_the_store_unchanged(src, tmp_path):
    for name, (data, exc, match) in _hostile(src).items():
        store = Store(tmp_path / name.replace(" ", "-"), fsync=False)
        library.pull(store, "hello-world", io.StringIO())
        before = _state(store)
        with pytest.raises(exc, match=match):
            archive.load(store, io.BytesIO(data), io.StringIO())
        assert _state(store) == before, name
        assert issubclass(exc, ImageSimError)


def test_import_a_tar_with_changes(dst, tmp_path):
    rootfs = _tar_of({"bin/hello": b"#!/bin/sh\necho hi\n", "etc/os-release": b"NAME=x\n"})
    path = tmp_path / "rootfs.tar"
    path.write_bytes(gzip.compress(rootfs))
    img = archive.import_(dst, str(path), "imported:1",
                          changes=['CMD ["/bin/hello"]', "ENV A=1"])
    assert img.diff_ids == (Digest.of(rootfs),)
    assert img.layers[0].media_type == oci.OCI_LAYER_GZIP
    assert img.history == [{"created": img.created,
                            "comment": f"Imported from {path}"}]
    assert img.runtime_config["Cmd"] == ["/bin/hello"]
    assert dst.resolve("imported:1").digest == img.digest
    fs = UnionFS(lowers=dst.lower_layers(img))
    with fs.open("/bin/hello", "rb") as f:
        assert f.read() == b"#!/bin/sh\necho hi\n"
    img2 = archive.import_(dst, io.BytesIO(rootfs), message="my message")
    assert img2.history[0]["comment"] == "my message"
    with pytest.raises(LayerInvalid):
        archive.import_(dst, io.BytesIO(b"not a tar at all" * 100), "bad:1")
    with pytest.raises(ImageSimError):
        dst.resolve("bad:1")


def test_import_a_directory(dst, tmp_path):
    d = tmp_path / "tree"
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "motd").write_text("hello\n")
    img = archive.import_(dst, str(d), "fromdir")
    fs = UnionFS(lowers=dst.lower_layers(img))
    with fs.open("/etc/motd", "rb") as f:
        assert f.read() == b"hello\n"


def test_export_view_flattens_the_union(src, tmp_path):
    fs = UnionFS(lowers=src.lower_layers("tomcat"))
    buf = io.BytesIO()
    r = layers_result = archive.export_view(fs, buf, exclude=lambda p: p == "/usr/local/tomcat")
    assert r.compression == "none" and layers_result.entries > 100
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        names = tf.getnames()
    assert "bin/bash" in names and "var/lib/dpkg/status" in names
    assert not any(n.startswith("usr/local/tomcat") for n in names)
    assert not any(".wh." in n for n in names)
    assert "var/log/dpkg.log" not in names                      # whited out below


def test_load_keeps_no_stray_blobs(src, dst, tmp_path):
    path = tmp_path / "s.tar"
    archive.save_to_file(src, ["redis:6.0.8"], path)
    archive.load(dst, str(path), io.StringIO())
    img = dst.resolve("redis:6.0.8")
    assert sorted(dst.blobs) == sorted({img.digest, img.id, *(d.digest for d in img.layers)})
    assert dst.gc().blobs == ()
