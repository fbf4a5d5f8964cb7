"""The local store: resolving, sharing unpacked layers, tags, pins, gc, the state file and
its lock across processes."""

from __future__ import annotations

import io
import multiprocessing
import os

import msgpack
import pytest

from imagesim import layers, library, oci
from imagesim.digest import Digest
from imagesim.errors import (
    BlobUnknown,
    Conflict,
    DigestInvalid,
    ImageNotFound,
    LayerInvalid,
    ReferenceInvalid,
    StoreCorrupt,
)
from imagesim.image import Image
from imagesim.store import Store
from unionfs.entry import Entry, Kind
from unionfs.layer import DirLayer


def _image(store: Store, files: dict[str, bytes], base: Image | None = None,
           created_by: str = "test") -> Image:
    """An image with one more layer holding ``files``, its blobs in the store."""
    with store.blobs.writer() as w:
        tw = layers.TarWriter(w)
        for path, data in sorted(files.items()):
            tw.add(path, Entry(Kind.FILE, size=len(data)), data)
        r = tw.close()
        w.commit()
    img = base or Image.new(created="2024-01-01T00:00:00Z")
    return img.append_layer(r.descriptor(), r.diff_id, created_by=created_by,
                            created="2024-01-02T00:00:00Z")


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "root", fsync=False)


def test_put_and_resolve_every_way(store):
    img = store.put_image(_image(store, {"/a": b"1"}), ["ubuntu"])
    for text in ("ubuntu", "ubuntu:latest", "docker.io/library/ubuntu:latest",
                 img.id.short, img.id.hex, str(img.id), img.id.hex[:4],
                 str(img.digest), f"ubuntu@{img.digest}"):
        assert store.resolve(text).digest == img.digest, text
    with pytest.raises(ImageNotFound, match="No such image: nope"):
        store.resolve("nope")
    with pytest.raises(ImageNotFound):
        store.resolve("ubuntu:other")


def test_ambiguous_short_id_is_a_conflict(store):
    by_first: dict[str, list[Image]] = {}
    n = 0
    while True:
        img = store.put_image(_image(store, {"/f": str(n).encode()}))
        by_first.setdefault(img.id.hex[0], []).append(img)
        n += 1
        if len(by_first[img.id.hex[0]]) == 2:
            break
    prefix = img.id.hex[0]
    with pytest.raises(Conflict, match="ambiguous"):
        store.resolve(prefix)


def test_layers_are_unpacked_once_and_shared(store):
    base = store.put_image(_image(store, {"/etc/os-release": b"base"}), ["base"])
    a = store.put_image(_image(store, {"/a": b"a"}, base), ["a"])
    b = store.put_image(_image(store, {"/b": b"b"}, base), ["b"])
    assert a.diff_ids[0] == b.diff_ids[0] == base.diff_ids[0]
    assert len(os.listdir(store.layers_root)) == 3
    lowers = store.lower_layers("a")
    assert all(isinstance(x, DirLayer) for x in lowers)
    assert [x.root for x in lowers] == [store.layer_dir(d) for d in reversed(a.diff_ids)]
    assert lowers[1].lookup("/etc/os-release") is not None
    assert store.layer_size(base.diff_ids[0]) == 4
    assert store.diff_id_for_blob(a.layers[0].digest) == a.diff_ids[0]
    assert store.lower_dirs(b)[-1] == store.layer_dir(base.diff_ids[0])


def test_add_image_needs_every_blob_and_changes_nothing_otherwise(store, tmp_path):
    other = Store(tmp_path / "other", fsync=False)
    img = _image(other, {"/a": b"1"})
    before = sorted(os.listdir(store.root))
    with pytest.raises(BlobUnknown):
        store.add_image(img.manifest_bytes, ["x"])
    store.blobs.put(img.config_bytes)
    with pytest.raises(BlobUnknown, match="layer blob"):
        store.add_image(img.manifest_bytes, ["x"])
    assert store.images() == []
    assert sorted(os.listdir(store.root)) == before
    assert os.listdir(store.layers_root) == []


def test_a_layer_that_lies_about_its_diff_id_is_refused(store):
    img = _image(store, {"/a": b"1"})
    wrong = Digest.of(b"not the tar")
    liar = img.with_config(diff_ids=[wrong])
    store.blobs.put(liar.config_bytes)
    with pytest.raises(DigestInvalid, match="diff id"):
        store.add_image(liar.manifest_bytes, ["liar"])
    assert store.images() == []
    assert os.listdir(store.layers_root) == []
    assert os.listdir(store.tmp_dir) == []


def test_tags_untag_and_digest_tags_refused(store):
    img = store.put_image(_image(store, {"/a": b"1"}), ["ubuntu"])
    ref = store.tag("ubuntu", "127.0.0.1:5000/zzyyubuntu:1.2")
    assert str(ref) == "127.0.0.1:5000/zzyyubuntu:1.2"
    assert [str(t) for t in store.tags_of(img)] == ["127.0.0.1:5000/zzyyubuntu:1.2",
                                                    "ubuntu:latest"]
    with pytest.raises(ReferenceInvalid, match="digest"):
        store.tag("ubuntu", f"x@{img.digest}")
    with pytest.raises(ImageNotFound):
        store.tag("missing", "y")
    assert store.untag("ubuntu") is True
    assert store.untag("ubuntu") is False


def test_remove_untags_then_deletes_and_prunes_layers(store):
    base = store.put_image(_image(store, {"/base": b"b"}), ["base"])
    child = store.put_image(_image(store, {"/c": b"c"}, base), ["child", "child:2"])
    r = store.remove("child")
    assert r.untagged == ("child:latest",) and r.deleted == ()
    r = store.remove("child:2")
    assert r.untagged == ("child:2",)
    assert r.deleted[0] == str(child.id)
    assert str(child.chain_ids[1]) in r.deleted         # its own layer went
    assert store.has_layer(base.diff_ids[0])             # the shared base stayed
    assert child.digest not in store.blobs
    with pytest.raises(ImageNotFound):
        store.resolve("child:2")


def test_remove_by_id_with_several_tags_needs_force(store):
    img = store.put_image(_image(store, {"/a": b"1"}), ["a", "b"])
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        store.remove(img.id.short)
    r = store.remove(img.id.short, force=True)
    assert sorted(r.untagged) == ["a:latest", "b:latest"]
    assert r.deleted[0] == str(img.id)


def test_repo_digests_are_recorded_listed_and_untagged_with_the_last_tag(store):
    img = store.put_image(_image(store, {"/a": b"1"}), ["ubuntu", "ubuntu:22.04"])
    with pytest.raises(ImageNotFound, match="No such image"):
        store.add_repo_digest("ubuntu", Digest.of(b"nothing"))
    with pytest.raises(ReferenceInvalid):
        store.add_repo_digest("ubuntu")                    # no digest anywhere
    r = store.add_repo_digest("ubuntu:22.04", img.digest)
    assert str(r) == f"ubuntu@{img.digest}"
    assert store.add_repo_digest(f"ubuntu@{img.digest}") == r     # idempotent
    store.add_repo_digest("127.0.0.1:5000/u:1", img.digest)
    assert [str(x) for x in store.repo_digests(img)] == [
        f"127.0.0.1:5000/u@{img.digest}", f"ubuntu@{img.digest}"]
    # another tag of the repository is left: only the tag goes
    assert store.remove("ubuntu").untagged == ("ubuntu:latest",)
    assert len(store.repo_digests(img)) == 2
    # its last tag: the repository's digest goes too; the other repository's keeps the image
    r2 = store.remove("ubuntu:22.04")
    assert r2 == type(r2)(("ubuntu:22.04", f"ubuntu@{img.digest}"), ())
    assert [str(x) for x in store.repo_digests(img)] == [f"127.0.0.1:5000/u@{img.digest}"]
    # the last reference: the image goes
    r3 = store.remove(f"127.0.0.1:5000/u@{img.digest}")
    assert r3.untagged == (f"127.0.0.1:5000/u@{img.digest}",)
    assert r3.deleted == (str(img.id), str(img.chain_ids[0]))
    assert store.state_get(Store.REPO_DIGESTS_NS) == {}


def test_remove_names_a_missing_reference_with_its_tag(store):
    with pytest.raises(ImageNotFound, match=r"^No such image: nosuch:latest$"):
        store.remove("nosuch")
    with pytest.raises(ImageNotFound, match=r"^No such image: x/y:2$"):
        store.remove("docker.io/x/y:2")


def test_pins_protect_images_from_rmi_prune_and_gc(store):
    img = store.put_image(_image(store, {"/a": b"1"}), ["ubuntu"])
    cid = "c" * 64
    store.pin(cid, "ubuntu")
    with pytest.raises(Conflict, match=f"container {'c' * 12} is using"):
        store.remove("ubuntu")
    r = store.remove("ubuntu", force=True)
    assert r.untagged == ("ubuntu:latest",) and r.deleted == ()
    deleted, _ = store.prune(all_images=True)
    assert deleted == []
    assert store.resolve(img.id.short).digest == img.digest      # dangling, kept
    assert store.has_layer(img.diff_ids[0])
    store.unpin(cid)
    deleted, gc = store.prune()
    assert deleted == [str(img.id)]
    assert not store.has_layer(img.diff_ids[0])
    assert gc.reclaimed > 0


def test_gc_removes_unreferenced_blobs_but_respects_leases(store):
    store.put_image(_image(store, {"/keep": b"k"}), ["keep"])
    stray = store.blobs.put(b"nobody uses me")
    with store.lease("test"):
        fresh = store.blobs.put(b"about to be used")
        gone = store.gc()
        assert fresh in store.blobs and fresh not in gone.blobs
    gone = store.gc()
    assert stray in gone.blobs and fresh in gone.blobs
    assert stray not in store.blobs
    assert store.resolve("keep")


def test_rmi_respects_another_writers_lease(store):
    # a pull in another process holds a lease while its blobs are not yet in any image;
    # rmi's prune must leave them alone exactly as gc does (found by a concurrency test)
    store.put_image(_image(store, {"/junk": b"j"}), ["junk"])
    with store.lease("pull elsewhere"):
        fresh = store.blobs.put(b"downloaded, not yet recorded")
        store.remove("junk")
        assert fresh in store.blobs
    store.gc()
    assert fresh not in store.blobs


def test_state_namespaces(store):
    assert store.state_get("containers") is None
    assert store.state_update("containers", lambda old: {"n": 1}) == {"n": 1}
    assert store.state_update("containers", lambda old: {"n": old["n"] + 1}) == {"n": 2}

    def boom(old):
        raise ValueError("abort")

    with pytest.raises(ValueError):
        store.state_update("containers", boom)
    assert store.state_get("containers") == {"n": 2}
    assert Store(store.root).state_get("containers") == {"n": 2}   # persisted
    store.state_update("containers", lambda old: None)
    assert store.state_get("containers", "gone") == "gone"


def test_state_file_versions_and_corruption(store):
    store.state_update("x", lambda old: 1)
    with open(store.state_path, "wb") as f:
        f.write(msgpack.packb({"v": 99}))
    with pytest.raises(StoreCorrupt, match="version 99"):
        store.state_get("x")
    with open(store.state_path, "wb") as f:
        f.write(b"\xc1garbage")
    with pytest.raises(StoreCorrupt, match="does not parse"):
        store.images()


def _bump(root: str, n: int) -> None:
    s = Store(root, fsync=False)
    for _ in range(n):
        s.state_update("counter", lambda old: (old or 0) + 1)


def test_concurrent_processes_lose_no_update(store):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_bump, args=(store.root, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert store.state_get("counter") == 160


def test_images_listing_sizes_and_order(store):
    a = store.put_image(_image(store, {"/a": b"12345"}), ["a"])
    b = store.put_image(_image(store, {"/b": b"1"}, a), ["b"])
    recs = {str(r.tags[0]): r for r in store.images()}
    assert recs["a:latest"].size == 5
    assert recs["b:latest"].size == 6
    assert recs["b:latest"].image.digest == b.digest
    store.untag("a")
    assert [r.dangling for r in store.images() if r.image.digest == a.digest] == [True]
    assert all(not r.dangling for r in store.images(include_dangling=False))


def test_library_images_go_in_and_share_the_ubuntu_base(store):
    library.pull(store, "tomcat", io.StringIO())
    library.pull(store, "mysql:5.7", io.StringIO())
    tomcat, mysql = store.resolve("tomcat"), store.resolve("mysql:5.7")
    shared = set(tomcat.diff_ids) & set(mysql.diff_ids)
    assert len(shared) == 3
    base_dir = store.layer_dir(tomcat.diff_ids[0])
    assert base_dir in store.lower_dirs(tomcat) and base_dir in store.lower_dirs(mysql)
    assert tomcat.layers[0].media_type == oci.OCI_LAYER


def test_commit_layer_unpacks_from_the_same_bytes_and_add_image_reuses_it(store, tmp_path):
    from unionfs import whiteout as wh
    base = store.put_image(_image(store, {"/etc/old": b"old", "/etc/keep": b"k"}), ["base"])
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "new").write_bytes(b"new file")
    wh.write_whiteout(str(upper / "etc"), "old", wh.default_format(str(upper)))
    with store.lease("test commit"):
        result = store.commit_layer(str(upper))
        assert store.has_layer(result.diff_id)
        img = base.append_layer(result.descriptor(), result.diff_id, created_by="commit")
        seen = []
        store.blobs.put(img.config_bytes)
        store.add_image(img.manifest_bytes, ["committed"],
                        on_layer=lambda i, d, what: seen.append(what))
    assert seen == ["exists", "exists"]
    from unionfs.union import UnionFS
    fs = UnionFS(lowers=store.lower_layers("committed"))
    assert sorted(fs.listdir("/etc")) == ["keep", "new"]
    assert store.lower_layers("committed")[0].name == f"layer 2 ({result.diff_id.hex[:12]})"
    # the blob really is the tar the directory came from
    with store.blobs.open(result.digest) as f:
        _, diff_id, _ = layers.digests_of(f)
    assert diff_id == result.diff_id
    assert os.listdir(store.tmp_dir) == []


def test_fsck_finds_and_repairs(store):
    base = store.put_image(_image(store, {"/etc/os-release": b"base"}), ["base"])
    child = store.put_image(_image(store, {"/c": b"child"}, base), ["child"])
    assert store.fsck(deep=True).problems == []
    # damage: a missing layer dir, a tag to nowhere, a stray temporary, garbage, an edited
    # layer file, a corrupt blob
    import shutil
    shutil.rmtree(os.path.dirname(store.layer_dir(child.diff_ids[1])))
    with store.transaction() as state:
        state["tags"]["docker.io/library/ghost:latest"] = "sha256:" + "0" * 64
    open(os.path.join(store.tmp_dir, "blob-left"), "wb").close()
    store.blobs.put(b"garbage")
    with open(os.path.join(store.layer_dir(base.diff_ids[0]), "etc", "os-release"), "wb") as f:
        f.write(b"edited")
    report = store.fsck(deep=True)
    text = "\n".join(report.problems)
    assert "is not unpacked" in text and "ghost" in text and "blob-left" in text
    assert "unreferenced blobs" in text and "differs from its blob" in text
    assert not report.clean
    fixed = store.fsck(repair=True, deep=True)
    assert fixed.clean and len(fixed.repaired) == len(fixed.problems)
    assert store.fsck(deep=True).problems == []
    from unionfs.union import UnionFS
    fs = UnionFS(lowers=store.lower_layers("child"))
    with fs.open("/etc/os-release", "rb") as f:
        assert f.read() == b"base"
    # a corrupt blob: the image that needs it is dropped on repair
    path = store.blobs.path(child.layers[1].digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"X")
    report = store.fsck(repair=True)
    assert any("corrupt" in p for p in report.problems)
    with pytest.raises(ImageNotFound):
        store.resolve("child")
    assert store.resolve("base")


@pytest.mark.parametrize("case", ["dot-dot", "symlinked parent", "truncated gzip",
                                  "overlay xattr forgery", "hard link outside"])
def test_a_hostile_layer_leaves_the_store_as_it_was(store, case):
    from tests.imagesim.test_layers import HOSTILE
    library.pull(store, "hello-world", io.StringIO())
    data = HOSTILE[case][0]()
    d, n = store.blobs.put_stream(io.BytesIO(data))
    diff_id = Digest.of(data)
    img = Image.new(created="2024-01-01T00:00:00Z").append_layer(
        oci.Descriptor(oci.OCI_LAYER, d, n), diff_id)
    store.blobs.put(img.config_bytes)
    before = (sorted(os.listdir(store.layers_root)), store.tags(),
              [r.image.digest for r in store.images()], sorted(store.blobs))
    with pytest.raises((LayerInvalid, DigestInvalid)):
        store.add_image(img.manifest_bytes, ["hostile"])
    assert (sorted(os.listdir(store.layers_root)), store.tags(),
            [r.image.digest for r in store.images()], sorted(store.blobs)) == before
    assert os.listdir(store.tmp_dir) == []


def _writer(root: str, n: int, seed: int) -> None:
    s = Store(root, fsync=False)
    for i in range(n):
        with s.lease("writer"):
            img = _image(s, {f"/f{seed}-{i}": os.urandom(64)})
            s.put_image(img, [f"w{seed}:{i}"])


def _collector(root: str, stop_after: float) -> None:
    import time
    s = Store(root, fsync=False)
    end = time.time() + stop_after
    while time.time() < end:
        s.gc()


def test_gc_running_beside_writers_never_breaks_an_image(store):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(store.root, 15, k)) for k in range(2)]
    procs.append(ctx.Process(target=_collector, args=(store.root, 3.0)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    fresh = Store(store.root)
    for k in range(2):
        for i in range(15):
            img = fresh.resolve(f"w{k}:{i}")
            assert img.digest in fresh.blobs and img.id in fresh.blobs
            assert all(d.digest in fresh.blobs for d in img.layers)
            assert all(fresh.has_layer(d) for d in img.diff_ids)
    assert fresh.fsck().problems == []
