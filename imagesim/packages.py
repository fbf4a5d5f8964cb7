"""The offline package catalog behind the built-in shell's ``apt-get`` and ``dpkg``.

Nothing is downloaded: each package is a small, deterministic set of files (a program under
``/usr/bin``, its documentation under ``/usr/share/doc/NAME``, sometimes data or config) plus
an entry in the dpkg database, so "install vim, then commit" changes the same places a real
``apt-get -y install vim`` changes and the committed layer shows them:

* ``apt-get update`` writes the index files under ``/var/lib/apt/lists/``; before it, an
  install fails with ``E: Unable to locate package NAME`` exactly as on a fresh ubuntu image;
* ``apt-get install`` writes the files, ``/var/lib/dpkg/info/NAME.list`` and a stanza in
  ``/var/lib/dpkg/status`` (a file of the image layer, so the container copies it up);
* ``apt-get remove`` deletes the files and the entry (in a container: whiteouts).

Every function works on any *os-shaped* filesystem object (``UnionFS``, a container's mount
table, or an adapter over a host directory): it needs ``lstat``, ``stat``, ``listdir``,
``open``, ``mkdir``, ``unlink`` and ``rmdir`` with ``os`` semantics and ``OSError`` failures.

The "programs" are ``#!/bin/sh`` scripts the built-in shell can run: they print what the
program would say and state that they are simulations. Package contents are derived from the
name and version only, so every machine builds byte-identical layers.
"""

from __future__ import annotations

import errno
import hashlib
import posixpath
import stat as _stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

STATUS_PATH = "/var/lib/dpkg/status"
INFO_DIR = "/var/lib/dpkg/info"
LISTS_DIR = "/var/lib/apt/lists"
#: the two index files ``apt-get update`` writes (a suite as an Ubuntu mirror would serve it)
SOURCE = "imagesim.offline"
SUITE = "focal"
RELEASE_FILE = f"{LISTS_DIR}/{SOURCE}_dists_{SUITE}_InRelease"
PACKAGES_FILE = f"{LISTS_DIR}/{SOURCE}_dists_{SUITE}_main_binary-amd64_Packages"
ARCH = "amd64"
MAINTAINER = "Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>"


class OsLike(Protocol):
    """The part of an ``os``-shaped filesystem this module uses."""

    def lstat(self, path: str) -> Any: ...
    def stat(self, path: str) -> Any: ...
    def listdir(self, path: str) -> list[str]: ...
    def open(self, path: str, mode: str = "rb") -> Any: ...
    def mkdir(self, path: str, mode: int = 0o777) -> None: ...
    def unlink(self, path: str) -> None: ...
    def rmdir(self, path: str) -> None: ...


class PackageError(Exception):
    """A package operation that cannot be done (unknown name, not installed)."""


@dataclass(frozen=True)
class PackageFile:
    """One file a package installs: absolute path, content, permission bits."""

    path: str
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Package:
    """One catalog entry. ``files`` are built from the fields, deterministically."""

    name: str
    version: str
    section: str
    summary: str
    depends: tuple[str, ...] = ()
    programs: tuple[tuple[str, str], ...] = ()   # (path, script body after the header)
    extra: tuple[tuple[str, int], ...] = ()       # (path, size in bytes of generated data)
    config: tuple[tuple[str, str], ...] = ()      # (path, text)
    links: tuple[tuple[str, str], ...] = ()       # (path, symlink target): alternatives
    files: tuple[PackageFile, ...] = field(default=(), compare=False)

    @property
    def installed_size_kib(self) -> int:
        """``Installed-Size`` as dpkg reports it (KiB, rounded up per file)."""
        return sum(-(-len(f.data) // 1024) for f in self.files) or 1

    @property
    def deb_name(self) -> str:
        version = self.version.split(":", 1)[-1]
        return f"{self.name}_{version}_{ARCH}.deb"

    @property
    def deb_size(self) -> int:
        """The simulated archive size: roughly a third of the installed bytes."""
        return max(1024, sum(len(f.data) for f in self.files) // 3)


def _noise(seed: str, size: int) -> bytes:
    """``size`` deterministic bytes derived from ``seed`` (stands in for compiled data)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


def _script(pkg_name: str, version: str, program: str, body: str) -> bytes:
    header = (
        "#!/bin/sh\n"
        f"# {program}: simulated by imagesim (package {pkg_name} {version}).\n"
        "# No real program is installed; the built-in shell runs this script instead.\n"
    )
    return (header + body.strip("\n") + "\n").encode()


def _build(pkg: Package) -> Package:
    files: list[PackageFile] = []
    for path, body in pkg.programs:
        files.append(PackageFile(path, _script(pkg.name, pkg.version,
                                               posixpath.basename(path), body), 0o755))
    for path, text in pkg.config:
        files.append(PackageFile(path, text.encode()))
    for path, size in pkg.extra:
        files.append(PackageFile(path, _noise(f"{pkg.name} {pkg.version} {path}", size)))
    doc = f"/usr/share/doc/{pkg.name}"
    files.append(PackageFile(f"{doc}/copyright", (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: {pkg.name}\n\n"
        f"This is a simulated package of the imagesim offline catalog. It stands for\n"
        f"{pkg.name} {pkg.version}: {pkg.summary}.\n").encode()))
    files.append(PackageFile(f"{doc}/changelog.Debian", (
        f"{pkg.name} ({pkg.version}) {SUITE}; urgency=medium\n\n"
        "  * Simulated package for teaching: same paths as the real one, tiny contents.\n\n"
        f" -- {MAINTAINER}  Mon, 01 Jan 2024 00:00:00 +0000\n").encode()))
    files.sort(key=lambda f: f.path)
    return Package(pkg.name, pkg.version, pkg.section, pkg.summary, pkg.depends, pkg.programs,
                   pkg.extra, pkg.config, pkg.links, tuple(files))


def _echo(*lines: str, status: int = 0) -> str:
    body = "\n".join("echo " + _sh_quote(line) for line in lines)
    return body + (f"\nexit {status}" if status else "")


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


_RAW: tuple[Package, ...] = (
    Package("vim", "2:8.1.2269-1ubuntu5.23", "editors", "Vi IMproved - enhanced vi editor",
            ("vim-common", "vim-runtime", "xxd", "libgpm2"),
            (("/usr/bin/vim.basic", _echo(
                "VIM - Vi IMproved 8.1 (2018 May 18) [simulated by imagesim]",
                "No editor runs in this shell. Write files with: echo TEXT > FILE")),),
            (("/usr/lib/vim/vim.bin", 48_000),), (),
            # update-alternatives makes `vim` and `vi` point at vim.basic, as on Ubuntu
            (("/etc/alternatives/vim", "/usr/bin/vim.basic"),
             ("/etc/alternatives/vi", "/usr/bin/vim.basic"),
             ("/usr/bin/vim", "/etc/alternatives/vim"),
             ("/usr/bin/vi", "/etc/alternatives/vi"))),
    Package("vim-common", "2:8.1.2269-1ubuntu5.23", "editors",
            "Vi IMproved - Common files", (),
            (),
            (),
            (("/etc/vim/vimrc", "\" System-wide vimrc (simulated)\nsyntax on\n"),
             ("/usr/share/vim/vimrc", "\" see /etc/vim/vimrc\n"))),
    Package("vim-runtime", "2:8.1.2269-1ubuntu5.23", "editors",
            "Vi IMproved - Runtime files", (),
            (),
            (("/usr/share/vim/vim81/defaults.vim", 6_000),
             ("/usr/share/vim/vim81/syntax/syntax.vim", 3_000),
             ("/usr/share/vim/vim81/doc/help.txt", 9_000))),
    Package("xxd", "2:8.1.2269-1ubuntu5.23", "editors", "tool to make (or reverse) a hex dump",
            (), (("/usr/bin/xxd", _echo("xxd: simulated by imagesim")),)),
    Package("libgpm2", "1.20.7-5", "libs", "General Purpose Mouse - shared library", (),
            (), (("/usr/lib/x86_64-linux-gnu/libgpm.so.2", 26_000),)),
    Package("nano", "4.8-1ubuntu1", "editors",
            "small, friendly text editor inspired by Pico", ("libncursesw6",),
            (("/bin/nano", _echo("GNU nano, version 4.8 [simulated by imagesim]",
                                 "No editor runs in this shell. Write files with: "
                                 "echo TEXT > FILE")),),
            (("/usr/share/nano/sh.nanorc", 2_000),),
            (("/etc/nanorc", "# Sample initialization file for GNU nano (simulated).\n"),)),
    Package("libncursesw6", "6.2-0ubuntu2.1", "libs",
            "shared libraries for terminal handling (wide character support)", (), (),
            (("/usr/lib/x86_64-linux-gnu/libncursesw.so.6", 30_000),)),
    Package("tree", "1.8.0-1", "utils", "displays an indented directory tree, in color", (),
            (("/usr/bin/tree", "__imagesim_tree \"$@\""),)),
    Package("curl", "7.68.0-1ubuntu2.22", "web",
            "command line tool for transferring data with URL syntax",
            ("libcurl4", "ca-certificates"),
            (("/usr/bin/curl", _echo(
                "curl: (6) Could not resolve host: the container is offline "
                "(simulated by imagesim; use curl on the host)", status=6)),)),
    Package("libcurl4", "7.68.0-1ubuntu2.22", "libs",
            "easy-to-use client-side URL transfer library (OpenSSL flavour)", (), (),
            (("/usr/lib/x86_64-linux-gnu/libcurl.so.4.6.0", 40_000),)),
    Package("ca-certificates", "20230311ubuntu0.20.04.1", "misc",
            "Common CA certificates", (), (), (),
            (("/etc/ssl/certs/ca-certificates.crt",
              "# CA bundle placeholder (simulated by imagesim)\n"),)),
    Package("wget", "1.20.3-1ubuntu2.1", "web", "retrieves files from the web",
            ("ca-certificates",),
            (("/usr/bin/wget", _echo(
                "wget: unable to resolve host address: the container is offline "
                "(simulated by imagesim)", status=4)),),
            (), (("/etc/wgetrc", "# wgetrc (simulated)\n"),)),
    Package("git", "1:2.25.1-1ubuntu3.13", "vcs",
            "fast, scalable, distributed revision control system", ("git-man", "less"),
            (("/usr/bin/git", _echo("git version 2.25.1 (simulated by imagesim)")),),
            (("/usr/lib/git-core/git-core.bin", 60_000),)),
    Package("git-man", "1:2.25.1-1ubuntu3.13", "doc",
            "fast, scalable, distributed revision control system (manual pages)", (), (),
            (("/usr/share/man/man1/git.1.gz", 12_000),)),
    Package("less", "551-1ubuntu0.3", "text", "pager program similar to more", (),
            (("/usr/bin/less", _echo("less 551 (simulated by imagesim)")),)),
    Package("net-tools", "1.60+git20180626.aebd88e-1ubuntu1", "net",
            "NET-3 networking toolkit", (),
            (("/sbin/ifconfig", _echo(
                "eth0: flags=4163<UP,BROADCAST,RUNNING,MULTICAST>  mtu 1500",
                "        inet 172.17.0.2  netmask 255.255.0.0  broadcast 172.17.255.255",
                "        (simulated by imagesim: no network inside the container)")),
             ("/bin/netstat", _echo("Active Internet connections (w/o servers)",
                                    "Proto Recv-Q Send-Q Local Address  Foreign Address  State",
                                    "(simulated by imagesim)")),
             ("/sbin/route", _echo("Kernel IP routing table (simulated by imagesim)")))),
    Package("iputils-ping", "3:20190709-3", "net", "Tools to test the reachability of "
            "network hosts", (),
            (("/bin/ping", _echo("ping: connect: Network is unreachable "
                                 "(simulated by imagesim)", status=2)),)),
    Package("procps", "2:3.3.16-1ubuntu2.4", "admin",
            "/proc file system utilities", (),
            (("/bin/ps", _echo("    PID TTY          TIME CMD",
                               "      1 pts/0    00:00:00 bash")),
             ("/usr/bin/top", _echo("top: simulated by imagesim (no processes run here)")))),
    Package("iproute2", "5.5.0-1ubuntu1", "net", "networking and traffic control tools", (),
            (("/bin/ip", _echo("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536",
                               "2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500",
                               "(simulated by imagesim)")),)),
    Package("htop", "2.2.0-2build1", "utils", "interactive processes viewer",
            ("libncursesw6",),
            (("/usr/bin/htop", _echo("htop 2.2.0 (simulated by imagesim)")),)),
)

#: name -> package, the whole offline catalog
CATALOG: Mapping[str, Package] = {p.name: _build(p) for p in _RAW}


def get(name: str) -> Package:
    """The catalog entry for ``name``. Raises ``PackageError`` for an unknown name."""
    try:
        return CATALOG[name]
    except KeyError:
        raise PackageError(f"Unable to locate package {name}") from None


def resolve(names: Iterable[str], installed: Iterable[str] = ()) -> list[Package]:
    """The packages to install for ``names``, dependencies first, skipping ``installed``.

    Raises ``PackageError`` naming the first unknown package."""
    done = set(installed)
    order: list[Package] = []

    def visit(name: str) -> None:
        if name in done:
            return
        pkg = get(name)
        done.add(name)
        for dep in pkg.depends:
            visit(dep)
        order.append(pkg)

    for name in names:
        visit(name)
    return order


# --- small filesystem helpers over an os-shaped object --------------------------------------

def _lexists(fs: OsLike, path: str) -> bool:
    try:
        fs.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    return True


def _makedirs(fs: OsLike, path: str) -> None:
    parts = [p for p in path.split("/") if p]
    cur = ""
    for part in parts:
        cur += "/" + part
        try:
            st = fs.stat(cur)
        except FileNotFoundError:
            fs.mkdir(cur, 0o755)
            continue
        if not _stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", cur)


def _read(fs: OsLike, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return f.read()


def _write(fs: OsLike, path: str, data: bytes, mode: int | None = None) -> None:
    _makedirs(fs, posixpath.dirname(path))
    with fs.open(path, "wb") as f:
        f.write(data)
    if mode is not None and hasattr(fs, "chmod"):
        fs.chmod(path, mode)


# --- the dpkg database ------------------------------------------------------------------------

def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Parse a Debian control file (``status``, ``Packages``) into ordered field dicts;
    continuation lines are kept, joined with newlines."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, last = {}, ""
        elif line[0] in " \t" and last:
            cur[last] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            cur[last] = value.strip()
    if cur:
        out.append(cur)
    return out


def format_stanzas(stanzas: Iterable[Mapping[str, str]]) -> str:
    return "\n".join("".join(f"{k}: {v}\n" for k, v in s.items()) for s in stanzas)


def installed(fs: OsLike) -> dict[str, dict[str, str]]:
    """Package name -> its status stanza, for every package dpkg lists as installed."""
    try:
        text = _read(fs, STATUS_PATH).decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {s["Package"]: s for s in parse_stanzas(text)
            if "Package" in s and s.get("Status", "").endswith(" installed")}


def _stanza(pkg: Package) -> dict[str, str]:
    s = {"Package": pkg.name, "Status": "install ok installed", "Priority": "optional",
         "Section": pkg.section, "Installed-Size": str(pkg.installed_size_kib),
         "Maintainer": MAINTAINER, "Architecture": ARCH, "Version": pkg.version}
    if pkg.depends:
        s["Depends"] = ", ".join(pkg.depends)
    s["Description"] = pkg.summary + "\n (simulated by imagesim: tiny contents, real paths)"
    return s


def lists_ready(fs: OsLike) -> bool:
    """True once ``apt-get update`` has written the package index."""
    return _lexists(fs, PACKAGES_FILE)


def update(fs: OsLike) -> None:
    """Write the package index files (``apt-get update``); deterministic contents."""
    entries = []
    for pkg in CATALOG.values():
        s = {"Package": pkg.name, "Architecture": ARCH, "Version": pkg.version,
             "Priority": "optional", "Section": pkg.section, "Maintainer": MAINTAINER,
             "Installed-Size": str(pkg.installed_size_kib)}
        if pkg.depends:
            s["Depends"] = ", ".join(pkg.depends)
        s["Filename"] = f"pool/main/{pkg.name[0]}/{pkg.name}/{pkg.deb_name}"
        s["Size"] = str(pkg.deb_size)
        s["SHA256"] = hashlib.sha256(pkg.deb_name.encode()).hexdigest()
        s["Description"] = pkg.summary
        entries.append(s)
    packages = format_stanzas(entries).encode()
    release = (f"Origin: imagesim\nLabel: imagesim offline catalog\nSuite: {SUITE}\n"
               f"Codename: {SUITE}\nArchitectures: {ARCH}\nComponents: main\n"
               "Description: simulated, offline package archive (no network used)\n"
               f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} "
               f"main/binary-{ARCH}/Packages\n").encode()
    _makedirs(fs, f"{LISTS_DIR}/partial")
    _write(fs, RELEASE_FILE, release)
    _write(fs, PACKAGES_FILE, packages)


def install(fs: OsLike, pkg: Package) -> None:
    """Unpack ``pkg``: its files, ``info/NAME.list`` and its status stanza."""
    install_files(fs, pkg)
    dirs: set[str] = set()
    for path in [f.path for f in pkg.files] + [p for p, _ in pkg.links]:
        d = posixpath.dirname(path)
        while d != "/":
            dirs.add(d)
            d = posixpath.dirname(d)
    listing = ["/.", *sorted(dirs), *(f.path for f in pkg.files), *(p for p, _ in pkg.links)]
    _write(fs, f"{INFO_DIR}/{pkg.name}.list", ("\n".join(listing) + "\n").encode())
    _set_status(fs, pkg.name, _stanza(pkg))


def remove(fs: OsLike, name: str) -> list[str]:
    """Remove an installed package's files (directories left when not empty) and its
    database entry; return the paths removed. Raises ``PackageError`` when not installed."""
    if name not in installed(fs):
        raise PackageError(f"Package '{name}' is not installed, so not removed")
    list_path = f"{INFO_DIR}/{name}.list"
    try:
        paths = _read(fs, list_path).decode().split()
    except FileNotFoundError:
        pkg = CATALOG.get(name)
        paths = [f.path for f in pkg.files] + [p for p, _ in pkg.links] if pkg else []
    removed = []
    for path in sorted(paths, key=lambda p: (-p.count("/"), p)):
        if path in ("/.", "/") or path.count("/") <= 2 or path in _SHARED_DIRS:
            continue  # system directories stay, as dpkg keeps dirs other packages own
        try:
            st = fs.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            if _stat.S_ISDIR(st.st_mode):
                if fs.listdir(path):
                    continue
                fs.rmdir(path)
            else:
                fs.unlink(path)
            removed.append(path)
        except OSError:
            continue  # a directory another package still uses
    if _lexists(fs, list_path):
        fs.unlink(list_path)
    _set_status(fs, name, None)
    return removed


_SHARED_DIRS = frozenset({"/usr/share/doc", "/usr/share/man", "/usr/share/man/man1",
                          "/usr/lib/x86_64-linux-gnu", "/etc/ssl/certs", "/usr/local/bin"})


def _set_status(fs: OsLike, name: str, stanza: Mapping[str, str] | None) -> None:
    try:
        text = _read(fs, STATUS_PATH).decode("utf-8", "replace")
    except FileNotFoundError:
        text = ""
    stanzas = [s for s in parse_stanzas(text) if s.get("Package") != name]
    if stanza is not None:
        stanzas.append(dict(stanza))
        stanzas.sort(key=lambda s: s.get("Package", ""))
    _write(fs, STATUS_PATH, format_stanzas(stanzas).encode())


# --- apt-get and dpkg, worded like the real tools -------------------------------------------

def _kb(n: int) -> str:
    return f"{n / 1000:,.0f} kB" if n >= 1000 else f"{n} B"


def apt_get(fs: OsLike, args: list[str], out: TextIO, err: TextIO,
            ask: Callable[[str], str | None] | None = None) -> int:
    """``apt-get`` with ``update``, ``install [-y] NAME...`` and ``remove|purge [-y] NAME...``.
    Returns apt's exit status (100 for an error, as apt does)."""
    assume_yes = False
    words: list[str] = []
    for a in args:
        if a in ("-y", "--yes", "--assume-yes", "-qq", "-q", "--no-install-recommends"):
            assume_yes = assume_yes or a in ("-y", "--yes", "--assume-yes")
        elif a.startswith("-") and len(a) > 1:
            if set(a[1:]) <= {"y", "q"}:
                assume_yes = assume_yes or "y" in a
            else:
                err.write(f"E: Command line option '{a}' is not understood in combination "
                          "with the other options\n")
                return 100
        else:
            words.append(a)
    if not words:
        out.write("apt 2.4.11 (amd64)\nUsage: apt-get [options] command\n"
                  "Commands: update, install, remove, purge (simulated, offline)\n")
        return 1
    cmd, names = words[0], words[1:]
    if cmd == "update":
        update(fs)
        out.write(f"Get:1 {SOURCE} {SUITE} InRelease [{len(_read(fs, RELEASE_FILE))} B]\n")
        out.write(f"Get:2 {SOURCE} {SUITE}/main amd64 Packages "
                  f"[{_kb(len(_read(fs, PACKAGES_FILE)))}]\n")
        out.write("Fetched from the imagesim offline catalog (no network used)\n")
        out.write("Reading package lists... Done\n")
        return 0
    if cmd in ("install", "remove", "purge") and not names:
        out.write("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        return 0
    if cmd == "install":
        return _install(fs, names, assume_yes, out, err, ask)
    if cmd in ("remove", "purge", "autoremove"):
        return _remove(fs, names, assume_yes, out, err, ask)
    if cmd in ("upgrade", "dist-upgrade", "clean", "autoclean", "check"):
        out.write("Reading package lists... Done\n")
        if cmd.endswith("upgrade"):
            out.write("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        return 0
    err.write(f"E: Invalid operation {cmd}\n")
    return 100


def _reading(out: TextIO) -> None:
    out.write("Reading package lists... Done\nBuilding dependency tree... Done\n"
              "Reading state information... Done\n")


def _confirm(assume_yes: bool, out: TextIO, ask: Callable[[str], str | None] | None) -> bool:
    if assume_yes:
        return True
    prompt = "Do you want to continue? [Y/n] "
    answer = ask(prompt) if ask is not None else None
    if answer is None:
        out.write(prompt + "\nAbort.\n")
        return False
    if answer.strip().lower() in ("", "y", "yes"):
        return True
    out.write("Abort.\n")
    return False


def _install(fs: OsLike, names: list[str], assume_yes: bool, out: TextIO, err: TextIO,
             ask: Callable[[str], str | None] | None) -> int:
    _reading(out)
    have = installed(fs)
    if not lists_ready(fs):
        err.write(f"E: Unable to locate package {names[0]}\n")
        return 100
    try:
        todo = resolve(names, have)
    except PackageError as e:
        err.write(f"E: {e}\n")
        return 100
    for name in names:
        if name in have:
            out.write(f"{name} is already the newest version ({have[name].get('Version')}).\n")
    if not todo:
        out.write("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        return 0
    extra = [p.name for p in todo if p.name not in names]
    if extra:
        out.write("The following additional packages will be installed:\n  "
                  + " ".join(sorted(extra)) + "\n")
    out.write("The following NEW packages will be installed:\n  "
              + " ".join(sorted(p.name for p in todo)) + "\n")
    out.write(f"0 upgraded, {len(todo)} newly installed, 0 to remove and 0 not upgraded.\n")
    out.write(f"Need to get {_kb(sum(p.deb_size for p in todo))} of archives.\n")
    out.write(f"After this operation, {_kb(1024 * sum(p.installed_size_kib for p in todo))} "
              "of additional disk space will be used.\n")
    if extra and not _confirm(assume_yes, out, ask):
        return 1
    for i, p in enumerate(todo, 1):
        out.write(f"Get:{i} {SOURCE} {SUITE}/main amd64 {p.name} {ARCH} {p.version} "
                  f"[{_kb(p.deb_size)}]\n")
    out.write("debconf: delaying package configuration, since apt-utils is not installed\n")
    for p in todo:
        out.write(f"Selecting previously unselected package {p.name}.\n")
        out.write(f"Preparing to unpack .../{p.deb_name} ...\n")
        install(fs, p)
        out.write(f"Unpacking {p.name} ({p.version}) ...\n")
    for p in todo:
        out.write(f"Setting up {p.name} ({p.version}) ...\n")
    return 0


def _remove(fs: OsLike, names: list[str], assume_yes: bool, out: TextIO, err: TextIO,
            ask: Callable[[str], str | None] | None) -> int:
    _reading(out)
    have = installed(fs)
    for name in names:
        if name not in have and name not in CATALOG:
            err.write(f"E: Unable to locate package {name}\n")
            return 100
    gone = [n for n in names if n in have]
    for n in names:
        if n not in have:
            out.write(f"Package '{n}' is not installed, so not removed\n")
    if not gone:
        out.write("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        return 0
    out.write("The following packages will be REMOVED:\n  " + " ".join(sorted(gone)) + "\n")
    out.write(f"0 upgraded, 0 newly installed, {len(gone)} to remove and 0 not upgraded.\n")
    freed = sum(int(have[n].get("Installed-Size", "0") or 0) for n in gone) * 1024
    out.write(f"After this operation, {_kb(freed)} disk space will be freed.\n")
    if not _confirm(assume_yes, out, ask):
        return 1
    for n in sorted(gone):
        out.write(f"Removing {n} ({have[n].get('Version', '')}) ...\n")
        remove(fs, n)
    return 0


def dpkg(fs: OsLike, args: list[str], out: TextIO, err: TextIO) -> int:
    """``dpkg -l [PATTERN...]``, ``dpkg -L NAME`` and ``dpkg -s NAME`` over the fs's
    database. Returns dpkg's status (1 when a named package is unknown)."""
    import fnmatch

    if not args or args[0] not in ("-l", "--list", "-L", "--listfiles", "-s", "--status"):
        err.write("dpkg: error: need an action option (simulated dpkg knows -l, -L, -s)\n")
        return 2
    action, names = args[0], args[1:]
    have = installed(fs)
    if action in ("-l", "--list"):
        rows = [s for n, s in sorted(have.items())
                if not names or any(fnmatch.fnmatch(n, pat) for pat in names)]
        if names and not rows:
            for pat in names:
                err.write(f"dpkg-query: no packages found matching {pat}\n")
            return 1
        w_name = max([len(s["Package"]) for s in rows] + [14])
        w_ver = max([len(s.get("Version", "")) for s in rows] + [12])
        out.write("Desired=Unknown/Install/Remove/Purge/Hold\n"
                  "| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/"
                  "Trig-pend\n"
                  "|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)\n")
        out.write(f"||/ {'Name':<{w_name}} {'Version':<{w_ver}} {'Architecture':<12} "
                  "Description\n")
        out.write(f"+++-{'=' * w_name}-{'=' * w_ver}-{'=' * 12}-{'=' * 40}\n")
        for s in rows:
            desc = s.get("Description", "").split("\n", 1)[0]
            out.write(f"ii  {s['Package']:<{w_name}} {s.get('Version', ''):<{w_ver}} "
                      f"{s.get('Architecture', ''):<12} {desc}\n")
        return 0
    status = 0
    for name in names:
        if name not in have:
            err.write(f"dpkg-query: package '{name}' is not installed\n")
            status = 1
            continue
        if action in ("-s", "--status"):
            out.write(format_stanzas([have[name]]))
        else:
            try:
                out.write(_read(fs, f"{INFO_DIR}/{name}.list").decode())
            except FileNotFoundError:
                err.write(f"dpkg-query: package '{name}' is not installed\n")
                status = 1
    return status


# --- apk, for images built on Alpine ---------------------------------------------------------

APK_DB = "/lib/apk/db/installed"


def apk_installed(fs: OsLike) -> dict[str, dict[str, str]]:
    """Package name -> its ``P:``/``V:``/... record in the apk database."""
    try:
        text = _read(fs, APK_DB).decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        rec: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                rec.setdefault(line[0], line[2:])
        if "P" in rec:
            out[rec["P"]] = rec
    return out


def _apk_write(fs: OsLike, records: Mapping[str, Mapping[str, str]]) -> None:
    blocks = ["".join(f"{k}:{v}\n" for k, v in rec.items()) for _, rec in
              sorted(records.items())]
    _write(fs, APK_DB, ("\n".join(blocks) + "\n").encode())


def apk(fs: OsLike, args: list[str], out: TextIO, err: TextIO) -> int:
    """``apk add|del|info|update`` of the offline catalog (same packages and files as the
    apt side; the database is Alpine's ``/lib/apk/db/installed``). Returns apk's status."""
    words = [a for a in args if not a.startswith("-")]
    if not words:
        out.write("apk-tools 2.14.0, simulated by imagesim (offline)\n"
                  "usage: apk [<OPTIONS>...] add|del|info|update [<ARGS>...]\n")
        return 1
    cmd, names = words[0], words[1:]
    have = apk_installed(fs)
    if cmd == "update":
        out.write(f"v3.19 [{SOURCE}] (simulated, offline)\n"
                  f"OK: {len(CATALOG)} distinct packages available\n")
        return 0
    if cmd == "info":
        for name in sorted(have):
            out.write(name + "\n")
        return 0
    if cmd == "add":
        try:
            todo = resolve(names, have)
        except PackageError as e:
            missing = str(e).rsplit(" ", 1)[-1]
            err.write(f"ERROR: unable to select packages:\n  {missing} (no such package):\n"
                      f"    required by: world[{missing}]\n")
            return 1
        total = len(todo)
        for i, pkg in enumerate(todo, 1):
            out.write(f"({i}/{total}) Installing {pkg.name} ({pkg.version})\n")
            install_files(fs, pkg)
            have[pkg.name] = {"P": pkg.name, "V": pkg.version, "A": "x86_64",
                              "S": str(pkg.deb_size),
                              "I": str(pkg.installed_size_kib * 1024),
                              "T": f"{pkg.summary} (imagesim simulation)"}
        if todo:
            _apk_write(fs, have)
        size = sum(int(r.get("I", "0") or 0) for r in have.values())
        out.write(f"OK: {size / 1048576:.0f} MiB in {len(have)} packages\n")
        return 0
    if cmd in ("del", "delete"):
        for name in names:
            if name not in have:
                continue  # apk del of a package not installed is silently fine
            pkg = CATALOG.get(name)
            out.write(f"(1/1) Purging {name} ({have[name].get('V', '')})\n")
            if pkg is not None:
                for path in [f.path for f in pkg.files] + [p for p, _ in pkg.links]:
                    if _lexists(fs, path):
                        fs.unlink(path)
            del have[name]
        _apk_write(fs, have)
        size = sum(int(r.get("I", "0") or 0) for r in have.values())
        out.write(f"OK: {size / 1048576:.0f} MiB in {len(have)} packages\n")
        return 0
    err.write(f"apk: unknown command '{cmd}'\n")
    return 1


def install_files(fs: OsLike, pkg: Package) -> None:
    """Write a package's files and links only (no package database entry)."""
    for f in pkg.files:
        _write(fs, f.path, f.data, f.mode)
    for path, target in pkg.links:
        _makedirs(fs, posixpath.dirname(path))
        if _lexists(fs, path):
            fs.unlink(path)
        fs.symlink(target, path)  # type: ignore[attr-defined]
