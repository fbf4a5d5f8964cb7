"""The offline package catalog: deterministic packages, dependency order, and what install and
remove write into an os-shaped filesystem (a host directory here)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from imagesim import packages


class Dir:
    """os-shaped view of a host directory."""

    def __init__(self, root):
        self.root = str(root)

    def _p(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def __getattr__(self, name):
        fn = getattr(os, name)
        return lambda p, *a, **k: fn(self._p(p), *a, **k)

    def open(self, p, mode="rb"):
        return open(self._p(p), mode)


def _digest(pkg):
    h = hashlib.sha256()
    for f in pkg.files:
        h.update(f.path.encode() + b"\0" + f.data + f.mode.to_bytes(2, "big"))
    return h.hexdigest()


def test_catalog_is_deterministic_and_complete():
    for name in ("vim", "curl", "tree", "nano", "git", "net-tools", "iputils-ping", "wget"):
        pkg = packages.get(name)
        paths = [f.path for f in pkg.files]
        assert f"/usr/share/doc/{name}/copyright" in paths
        assert any(p.startswith(("/usr/bin/", "/bin/", "/sbin/")) for p in paths) or \
            name == "vim"
        assert pkg.installed_size_kib >= 1
    # contents come from name and version only: rebuilding gives the same bytes
    rebuilt = {p.name: packages._build(p) for p in packages._RAW}
    assert {n: _digest(p) for n, p in rebuilt.items()} == \
        {n: _digest(p) for n, p in packages.CATALOG.items()}
    for pkg in packages.CATALOG.values():
        for dep in pkg.depends:
            assert dep in packages.CATALOG, (pkg.name, dep)


def test_resolve_puts_dependencies_first_and_skips_installed():
    order = [p.name for p in packages.resolve(["vim"])]
    assert order[-1] == "vim"
    assert set(order) == {"vim", "vim-common", "vim-runtime", "xxd", "libgpm2"}
    assert [p.name for p in packages.resolve(["vim"], installed=["vim-common", "xxd",
                                                                   "vim-runtime", "libgpm2"])] \
        == ["vim"]
    with pytest.raises(packages.PackageError, match="Unable to locate package nope"):
        packages.resolve(["nope"])


def test_install_and_remove_write_files_and_database(tmp_path):
    fs = Dir(tmp_path)
    os.makedirs(tmp_path / "var/lib/dpkg")
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: bash\nStatus: install ok installed\nVersion: 5.1-6ubuntu1\n"
        "Description: GNU Bourne Again SHell\n multi-line\n")
    assert not packages.lists_ready(fs)
    packages.update(fs)
    assert packages.lists_ready(fs)
    text = (tmp_path / packages.PACKAGES_FILE.lstrip("/")).read_text()
    assert "Package: vim\n" in text and "Filename: pool/main/v/vim/vim_8.1.2269" in text
    for pkg in packages.resolve(["tree"]):
        packages.install(fs, pkg)
    tree = tmp_path / "usr/bin/tree"
    assert tree.read_bytes().startswith(b"#!/bin/sh\n") and os.stat(tree).st_mode & 0o111
    have = packages.installed(fs)
    assert set(have) == {"bash", "tree"}
    assert have["bash"]["Description"] == "GNU Bourne Again SHell\n multi-line"
    assert have["tree"]["Version"] == "1.8.0-1"
    assert "/usr/bin/tree" in (tmp_path / "var/lib/dpkg/info/tree.list").read_text().split()
    removed = packages.remove(fs, "tree")
    assert "/usr/bin/tree" in removed and not tree.exists()
    assert not (tmp_path / "usr/share/doc/tree").exists()
    assert (tmp_path / "usr/bin").is_dir()  # shared directories stay
    assert set(packages.installed(fs)) == {"bash"}
    with pytest.raises(packages.PackageError):
        packages.remove(fs, "tree")


def test_apt_get_and_dpkg_words(tmp_path):
    fs = Dir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert packages.apt_get(fs, ["install", "-y", "nano"], out, err) == 100
    assert err.getvalue() == "E: Unable to locate package nano\n"
    assert packages.apt_get(fs, ["update"], out, err) == 0
    out = io.StringIO()
    assert packages.apt_get(fs, ["-y", "install", "nano"], out, err) == 0
    text = out.getvalue()
    assert "The following additional packages will be installed:\n  libncursesw6\n" in text
    assert "0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded." in text
    assert text.index("Unpacking libncursesw6") < text.index("Unpacking nano")
    out = io.StringIO()
    assert packages.apt_get(fs, ["install", "nano"], out, err) == 0
    assert "nano is already the newest version (4.8-1ubuntu1)." in out.getvalue()
    out = io.StringIO()
    assert packages.dpkg(fs, ["-l", "nano"], out, err) == 0
    assert out.getvalue().splitlines()[-1].split()[:3] == ["ii", "nano", "4.8-1ubuntu1"]
    err = io.StringIO()
    assert packages.dpkg(fs, ["-l", "vim"], io.StringIO(), err) == 1
    assert err.getvalue() == "dpkg-query: no packages found matching vim\n"
    assert packages.apt_get(fs, ["frobnicate"], io.StringIO(), err) == 100


def test_apk_add_and_del_on_an_alpine_like_root(tmp_path):
    fs = Dir(tmp_path)
    os.makedirs(tmp_path / "lib/apk/db")
    (tmp_path / "lib/apk/db/installed").write_text("P:busybox\nV:1.36.1-r15\nA:x86_64\n\n")
    out, err = io.StringIO(), io.StringIO()
    assert packages.apk(fs, ["add", "--no-cache", "curl"], out, err) == 0
    lines = out.getvalue().splitlines()
    assert "(3/3) Installing curl (7.68.0-1ubuntu2.22)" in lines
    assert lines[-1].startswith("OK: ") and lines[-1].endswith(" in 4 packages")
    assert (tmp_path / "usr/bin/curl").is_file()
    assert set(packages.apk_installed(fs)) == {"busybox", "curl", "libcurl4",
                                               "ca-certificates"}
    err = io.StringIO()
    assert packages.apk(fs, ["add", "nosuch"], io.StringIO(), err) == 1
    assert "nosuch (no such package)" in err.getvalue()
    assert packages.apk(fs, ["del", "curl"], io.StringIO(), io.StringIO()) == 0
    assert not (tmp_path / "usr/bin/curl").exists()
    assert "curl" not in packages.apk_installed(fs)
