"""Interop with real tools (Debian's skopeo and umoci): what we write, they read; what they
write (whiteouts and opaque directories included), we load, and the unpacked tree equals
umoci's."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess

import pytest

from imagesim import archive, library
from imagesim.store import Store
from tests.conftest import need_root, need_tool
from unionfs.union import UnionFS


def sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=120,
                          **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("interop") / "root", fsync=False)
    for ref in ("ubuntu", "tomcat", "mysql:5.7"):
        library.pull(s, ref, io.StringIO())
    return s


def _tree_host(root: str) -> dict[str, tuple]:
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(base, name)
            st = os.lstat(p)
            rel = "/" + os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    payload = f.read()
            elif stat.S_ISLNK(st.st_mode):
                payload = os.readlink(p)
            else:
                payload = None
            out[rel] = (stat.S_IFMT(st.st_mode),
                        0 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode),
                        st.st_uid, st.st_gid, payload)
    return out


def _tree_union(fs: UnionFS) -> dict[str, tuple]:
    out = {}
    for base, dirs, files in fs.walk("/"):
        for name in list(dirs) + list(files):
            p = f"{base.rstrip('/')}/{name}"
            st = fs.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with fs.open(p, "rb") as f:
                    payload = f.read()
            elif stat.S_ISLNK(st.st_mode):
                payload = fs.readlink(p)
            else:
                payload = None
            out[p] = (stat.S_IFMT(st.st_mode),
                      0 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode),
                      st.st_uid, st.st_gid, payload)
    return out


def test_skopeo_reads_our_save_archive_both_ways(store, tmp_path):
    need_tool("skopeo")
    path = tmp_path / "save.tar"
    archive.save_to_file(store, ["ubuntu", "tomcat"], path)
    ubuntu = store.resolve("ubuntu")
    info = json.loads(sh("skopeo", "inspect", f"docker-archive:{path}:ubuntu:latest").stdout)
    assert info["Layers"] == [str(d.digest) for d in ubuntu.layers]
    assert info["Labels"]["io.imagesim.simulated"] == "true"
    raw = sh("skopeo", "inspect", "--raw", f"oci-archive:{path}:latest").stdout
    assert json.loads(raw)["config"]["digest"] in (str(ubuntu.id),
                                                     str(store.resolve("tomcat").id))
    # skopeo copy out of our docker-archive (it converts the config to OCI form, so the
    # IMAGE ID may change), then back in here: same layers, same runtime config
    out_dir = tmp_path / "skopeo-oci"
    sh("skopeo", "copy", f"docker-archive:{path}:tomcat:latest", f"oci:{out_dir}:tomcat")
    other = Store(tmp_path / "other", fsync=False)
    archive.load(other, str(out_dir), io.StringIO())
    loaded = other.images()[0].image
    tomcat = store.resolve("tomcat")
    assert loaded.diff_ids == tomcat.diff_ids
    assert loaded.runtime_config == tomcat.runtime_config
    assert [r.get("created_by") for r in loaded.history] == \
        [r.get("created_by") for r in tomcat.history]


def test_skopeo_copies_our_oci_layout_with_unchanged_digests(store, tmp_path):
    need_tool("skopeo")
    layout = tmp_path / "layout"
    archive.save_oci_dir(store, ["mysql:5.7"], layout)
    info = json.loads(sh("skopeo", "inspect", f"oci:{layout}:5.7").stdout)
    assert info["Digest"] == str(store.resolve("mysql:5.7").digest)
    copy = tmp_path / "copy"
    sh("skopeo", "copy", "--preserve-digests", f"oci:{layout}:5.7", f"oci:{copy}:5.7")
    again = json.loads(sh("skopeo", "inspect", f"oci:{copy}:5.7").stdout)
    assert again["Digest"] == info["Digest"]


def test_umoci_unpacks_our_layout_to_our_merged_view(store, tmp_path):
    need_root()
    need_tool("umoci")
    layout = tmp_path / "layout"
    archive.save_oci_dir(store, ["tomcat"], layout)
    bundle = tmp_path / "bundle"
    sh("umoci", "unpack", "--image", f"{layout}:latest", str(bundle))
    theirs = _tree_host(str(bundle / "rootfs"))
    ours = _tree_union(UnionFS(lowers=store.lower_layers("tomcat")))
    assert theirs == ours
    assert "/var/log/dpkg.log" not in theirs          # the whiteout was honoured


def _umoci_image(tmp_path) -> str:
    """An image built with umoci: files, then a whiteout, then an opaque directory."""
    layout = str(tmp_path / "umoci")
    sh("umoci", "init", "--layout", layout)
    sh("umoci", "new", "--image", f"{layout}:t")
    src = tmp_path / "src"
    (src / "etc" / "conf.d").mkdir(parents=True)
    (src / "etc" / "conf.d" / "a.cnf").write_text("[a]\n")
    (src / "etc" / "conf.d" / "b.cnf").write_text("[b]\n")
    (src / "etc" / "keep").write_text("keep\n")
    (src / "etc" / "gone").write_text("gone\n")
    os.symlink("keep", src / "etc" / "link")
    sh("umoci", "insert", "--image", f"{layout}:t", str(src), "/")
    sh("umoci", "insert", "--image", f"{layout}:t", "--whiteout", "/etc/gone")
    new = tmp_path / "new"
    new.mkdir()
    (new / "c.cnf").write_text("[c]\n")
    sh("umoci", "insert", "--image", f"{layout}:t", "--opaque", str(new), "/etc/conf.d")
    return layout


def test_umoci_and_skopeo_images_load_here_with_whiteouts_and_opaque_dirs(tmp_path):
    need_root()
    need_tool("umoci")
    need_tool("skopeo")
    layout = _umoci_image(tmp_path)
    bundle = tmp_path / "bundle"
    sh("umoci", "unpack", "--image", f"{layout}:t", str(bundle))
    theirs = _tree_host(str(bundle / "rootfs"))
    assert "/etc/gone" not in theirs and "/etc/conf.d/a.cnf" not in theirs
    assert "/etc/conf.d/c.cnf" in theirs
    # the layout directly (umoci writes no containerd name: the image loads untagged)
    s1 = Store(tmp_path / "s1", fsync=False)
    [loaded] = archive.load(s1, layout, io.StringIO())
    assert _tree_union(UnionFS(lowers=s1.lower_layers(loaded.image))) == theirs
    # skopeo's docker-archive and oci-archive of the same image
    dock = tmp_path / "d.tar"
    sh("skopeo", "copy", f"oci:{layout}:t", f"docker-archive:{dock}:made/by-skopeo:1")
    ocia = tmp_path / "o.tar"
    sh("skopeo", "copy", f"oci:{layout}:t", f"oci-archive:{ocia}:made/by-skopeo:2")
    s2 = Store(tmp_path / "s2", fsync=False)
    out = io.StringIO()
    archive.load(s2, str(dock), out)
    archive.load(s2, str(ocia), out)
    assert out.getvalue().splitlines() == ["Loaded image: made/by-skopeo:1",
                                           "Loaded image: made/by-skopeo:2"]
    for tag in ("made/by-skopeo:1", "made/by-skopeo:2"):
        assert _tree_union(UnionFS(lowers=s2.lower_layers(tag))) == theirs
    assert s2.resolve("made/by-skopeo:1").id == s2.resolve("made/by-skopeo:2").id
