"""The built-in library: small simulated images under the names the lesson pulls, generated
deterministically (the same bytes, so the same digests, on every machine), offline.

A reference with no registry host (``ubuntu``, ``library/ubuntu:latest``, ``mysql:5.7``)
resolves here: Docker Hub is not reachable, and this library plays its part. The images share
base layers the way real ones share a distribution base (``tomcat``, ``mysql:5.7``,
``redis:6.0.8`` and ``billygoo/tomcat8-jdk8`` all sit on the three ``ubuntu`` layers;
``registry`` sits on ``alpine``), carry several layers with realistic history rows (including
the 0 B layers real builds leave), and hold what the lesson relies on: ``/bin/bash`` and
``/bin/sh``, a dpkg status file, tomcat's empty ``webapps`` beside ``webapps.dist``, mysql's
``/etc/mysql/conf.d`` and ``/var/lib/mysql`` volume, redis's ``/etc/redis`` and ``/data``
volume, and ``Cmd``/``Entrypoint``/``ExposedPorts``/``WorkingDir`` like the real images.
Programs are small text stubs saying what they stand for: nothing here runs on the host.
Every image says in its labels (``io.imagesim.simulated=true``) and in each history row's
comment that it is a simulation.

Layers are uncompressed tars (``application/vnd.oci.image.layer.v1.tar``), so their digests
do not depend on the zlib the machine has.

The offline package catalog the simulated ``apt-get`` installs from lives in
``imagesim.packages``; ``dpkg_entry`` here writes the base images' dpkg database.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from unionfs.entry import Entry, Kind

from . import oci
from .digest import Digest
from .errors import ImageNotFound, ImageSimError, ManifestUnknown, NameUnknown
from .image import Image
from .layers import TarWriter
from .reference import Reference

SIM_LABEL = "io.imagesim.simulated"
SIM_COMMENT = "simulated by imagesim (not the real image)"

# -- building blocks -----------------------------------------------------------------------

# a node: (kind, mode, uid, gid, payload) where payload is bytes (file), str (symlink target)
Node = tuple[Kind, int, int, int, Any]


def D(mode: int = 0o755, uid: int = 0, gid: int = 0) -> Node:
    return (Kind.DIR, mode, uid, gid, None)


def F(content: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Node:
    data = content.encode() if isinstance(content, str) else content
    return (Kind.FILE, mode, uid, gid, data)


def X(content: str | bytes, uid: int = 0, gid: int = 0) -> Node:
    return F(content, 0o755, uid, gid)


def L(target: str) -> Node:
    return (Kind.SYMLINK, 0o777, 0, 0, target)


WHITEOUT: Node = (Kind.WHITEOUT, 0, 0, 0, None)


def OPAQUE(mode: int = 0o755) -> Node:
    return (Kind.DIR, mode, 0, 0, "opaque")


def noise(seed: str, size: int) -> bytes:
    """Deterministic filler bytes (stands for the body of a library or a JDK)."""
    return hashlib.shake_256(seed.encode()).digest(size)


def stub(path: str, what: str) -> bytes:
    """The text of a simulated program."""
    return (f"#!/bin/sh\n# {path}: {what}\n# This is an imagesim simulation: the file stands "
            "for the real program and is never run on the host.\n").encode()


def _sort_key(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/"))


def _epoch(text: str) -> int:
    from .image import parse_time
    t = parse_time(text)
    assert t is not None
    return int(t.timestamp()) * 1_000_000_000


@dataclass(frozen=True)
class BuiltLayer:
    data: bytes
    diff_id: Digest
    descriptor: oci.Descriptor


def build_layer(files: dict[str, Node], mtime: str) -> BuiltLayer:
    """One uncompressed layer tar from ``files`` (parents added as 0755 root dirs)."""
    mt = _epoch(mtime)
    full: dict[str, Node] = {}
    for path, node in files.items():
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            full.setdefault("/" + "/".join(parts[:i]), D())
        full["/" + "/".join(parts)] = node
    buf = io.BytesIO()
    w = TarWriter(buf, compression="none")
    for path in sorted(full, key=_sort_key):
        kind, mode, uid, gid, payload = full[path]
        if kind is Kind.WHITEOUT:
            w.add(path, Entry(Kind.WHITEOUT, mode=0, mtime_ns=mt))
            continue
        entry = Entry(kind, mode=mode, uid=uid, gid=gid, mtime_ns=mt,
                      size=len(payload) if kind is Kind.FILE else 0,
                      target=payload if kind is Kind.SYMLINK else None,
                      opaque=kind is Kind.DIR and payload == "opaque")
        w.add(path, entry, payload if kind is Kind.FILE else None)
    r = w.close()
    return BuiltLayer(buf.getvalue(), r.diff_id, r.descriptor())


@dataclass(frozen=True)
class Step:
    """One Dockerfile instruction: ``files`` is None for an empty-layer row."""

    created_by: str
    files: dict[str, Node] | None = None


@dataclass(frozen=True)
class Recipe:
    name: str                    # repository path on the Hub: library/ubuntu
    tags: tuple[str, ...]
    created: str
    parent: str | None           # another recipe key ("library/ubuntu:latest")
    steps: tuple[Step, ...]
    config: dict[str, Any]
    description: str
    stars: int
    official: bool = True
    labels: dict[str, str] = field(default_factory=dict)


# -- ubuntu ----------------------------------------------------------------------------------

_UBUNTU_TIME = "2023-10-25T10:53:51.000000000Z"

_BASE_PKGS = [
    ("adduser", "3.118ubuntu2", "all", "add and remove users and groups", 624),
    ("apt", "2.0.10", "amd64", "commandline package manager", 4156),
    ("base-files", "11ubuntu5.8", "amd64", "Debian base system miscellaneous files", 388),
    ("base-passwd", "3.5.47", "amd64", "Debian base system master password and group files",
     228),
    ("bash", "5.0-6ubuntu1.2", "amd64", "GNU Bourne Again SHell", 1664),
    ("bsdutils", "1:2.34-0.1ubuntu9.4", "amd64", "basic utilities from 4.4BSD-Lite", 356),
    ("coreutils", "8.30-3ubuntu2", "amd64", "GNU core utilities", 7196),
    ("dash", "0.5.10.2-6", "amd64", "POSIX-compliant shell", 212),
    ("debianutils", "4.9.1", "amd64", "Miscellaneous utilities specific to Debian", 228),
    ("diffutils", "1:3.7-3", "amd64", "File comparison utilities", 1574),
    ("dpkg", "1.19.7ubuntu3.2", "amd64", "Debian package management system", 6740),
    ("findutils", "4.7.0-1ubuntu1", "amd64", "utilities for finding files", 1888),
    ("grep", "3.4-1", "amd64", "GNU grep, egrep and fgrep", 1124),
    ("gzip", "1.10-0ubuntu4.1", "amd64", "GNU compression utilities", 252),
    ("hostname", "3.23", "amd64", "utility to set/show the host name or domain name", 54),
    ("libc-bin", "2.31-0ubuntu9.14", "amd64", "GNU C Library: Binaries", 3780),
    ("libc6", "2.31-0ubuntu9.14", "amd64", "GNU C Library: Shared libraries", 12987),
    ("login", "1:4.8.1-1ubuntu5.20.04.4", "amd64", "system login tools", 1284),
    ("mount", "2.34-0.1ubuntu9.4", "amd64", "tools for mounting and manipulating filesystems",
     412),
    ("ncurses-base", "6.2-0ubuntu2.1", "all", "basic terminal type definitions", 384),
    ("passwd", "1:4.8.1-1ubuntu5.20.04.4", "amd64", "change and administer password and "
     "group data", 2496),
    ("perl-base", "5.30.0-9ubuntu0.5", "amd64", "minimal Perl system", 7662),
    ("sed", "4.7-1", "amd64", "GNU stream editor for filtering/transforming text", 320),
    ("sensible-utils", "0.0.12+nmu1", "all", "Utilities for sensible alternative selection",
     64),
    ("tar", "1.30+dfsg-7ubuntu0.20.04.4", "amd64", "GNU version of the tar archiving utility",
     860),
    ("util-linux", "2.34-0.1ubuntu9.4", "amd64", "miscellaneous system utilities", 4328),
]


def dpkg_entry(name: str, version: str, arch: str, description: str, size: int,
               depends: str = "") -> str:
    """One paragraph of ``/var/lib/dpkg/status``."""
    lines = [f"Package: {name}", "Status: install ok installed", "Priority: optional",
             "Section: misc", f"Installed-Size: {size}",
             "Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
             f"Architecture: {arch}", f"Version: {version}"]
    if depends:
        lines.append(f"Depends: {depends}")
    lines.append(f"Description: {description}")
    lines.append(" Simulated by imagesim: the files of this package are stubs.")
    return "\n".join(lines) + "\n"


def _dpkg_status(extra: Iterable[tuple[str, str, str, str, int]] = ()) -> str:
    pkgs = sorted([*_BASE_PKGS, *extra])
    return "\n".join(dpkg_entry(*p) for p in pkgs)


_PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
_GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
mail:x:8:
www-data:x:33:
staff:x:50:
users:x:100:
nogroup:x:65534:
"""
_SOURCES = """# See http://help.ubuntu.com/community/UpgradeNotes for how to upgrade to
# newer versions of the distribution.
deb http://archive.ubuntu.com/ubuntu/ focal main restricted
# deb-src http://archive.ubuntu.com/ubuntu/ focal main restricted
deb http://archive.ubuntu.com/ubuntu/ focal-updates main restricted
# deb http://archive.ubuntu.com/ubuntu/ focal universe
deb http://security.ubuntu.com/ubuntu/ focal-security main restricted
"""
_OS_RELEASE = """NAME="Ubuntu"
VERSION="20.04.6 LTS (Focal Fossa)"
ID=ubuntu
ID_LIKE=debian
PRETTY_NAME="Ubuntu 20.04.6 LTS"
VERSION_ID="20.04"
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
VERSION_CODENAME=focal
UBUNTU_CODENAME=focal
"""
_BASHRC = """# ~/.bashrc: executed by bash(1) for non-login shells.
[ -z "$PS1" ] && return
HISTCONTROL=ignoredups:ignorespace
PS1='${debian_chroot:+($debian_chroot)}\\u@\\h:\\w\\$ '
alias ls='ls --color=auto'
"""

_UBUNTU_BINS = {
    "/bin": ["bash", "cat", "chmod", "chown", "cp", "date", "dd", "df", "echo", "false",
             "grep", "gzip", "hostname", "kill", "ln", "ls", "mkdir", "mktemp", "more",
             "mount", "mv", "ps", "pwd", "readlink", "rm", "rmdir", "sed", "sleep", "stty",
             "su", "sync", "tar", "touch", "true", "umount", "uname", "dash", "login"],
    "/usr/bin": ["apt", "apt-get", "apt-cache", "apt-config", "awk", "basename", "clear",
                 "cut", "diff", "dirname", "dpkg", "dpkg-query", "du", "env", "find", "head",
                 "id", "md5sum", "nohup", "perl", "printf", "sha256sum", "sort", "stat",
                 "tail", "tee", "test", "tr", "uniq", "wc", "which", "whoami", "xargs",
                 "yes", "groups", "passwd", "chfn"],
    "/usr/sbin": ["useradd", "userdel", "groupadd", "groupdel", "usermod", "chroot",
                  "nologin", "adduser", "addgroup", "pwconv"],
    "/sbin": ["ldconfig", "mkfs", "fsck", "sulogin", "getty", "halt", "shutdown"],
}


def _ubuntu_rootfs() -> dict[str, Node]:
    fs: dict[str, Node] = {}
    for d in ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt",
              "/opt", "/proc", "/run", "/sbin", "/srv", "/sys", "/usr", "/usr/bin",
              "/usr/games", "/usr/include", "/usr/lib", "/usr/lib/x86_64-linux-gnu",
              "/usr/local", "/usr/local/bin", "/usr/local/etc", "/usr/local/games",
              "/usr/local/include", "/usr/local/lib", "/usr/local/sbin", "/usr/local/share",
              "/usr/local/src", "/usr/sbin", "/usr/share", "/usr/share/doc", "/usr/share/man",
              "/usr/src", "/var", "/var/backups", "/var/cache", "/var/cache/apt",
              "/var/lib", "/var/lib/apt", "/var/lib/apt/lists", "/var/lib/dpkg",
              "/var/lib/dpkg/info", "/var/lib/misc", "/var/local", "/var/log",
              "/var/log/apt", "/var/mail", "/var/opt", "/var/spool", "/etc/apt",
              "/etc/apt/apt.conf.d", "/etc/apt/sources.list.d", "/etc/dpkg",
              "/etc/dpkg/dpkg.cfg.d", "/etc/skel", "/etc/profile.d", "/etc/ssl"):
        fs[d] = D()
    fs["/root"] = D(0o700)
    fs["/tmp"] = D(0o1777)
    fs["/var/tmp"] = D(0o1777)
    fs["/run/lock"] = D(0o1777)
    fs["/var/run"] = L("/run")
    fs["/var/lock"] = L("/run/lock")
    for directory, names in _UBUNTU_BINS.items():
        for n in names:
            fs[f"{directory}/{n}"] = X(stub(f"{directory}/{n}", f"simulated {n}"))
    fs["/bin/bash"] = X(stub("/bin/bash", "GNU bash, version 5.0.17(1)-release "
                                          "(x86_64-pc-linux-gnu)") + noise("bash", 60_000))
    fs["/bin/sh"] = L("dash")
    fs["/bin/rbash"] = L("bash")
    fs["/lib64/ld-linux-x86-64.so.2"] = L("/lib/x86_64-linux-gnu/ld-2.31.so")
    fs["/lib/x86_64-linux-gnu"] = D()
    fs["/lib/x86_64-linux-gnu/ld-2.31.so"] = F(noise("ld-2.31", 180_000), 0o755)
    fs["/lib/x86_64-linux-gnu/libc-2.31.so"] = F(noise("libc-2.31", 1_200_000), 0o755)
    fs["/lib/x86_64-linux-gnu/libc.so.6"] = L("libc-2.31.so")
    fs["/lib/x86_64-linux-gnu/libtinfo.so.6.2"] = F(noise("libtinfo", 190_000))
    fs["/lib/x86_64-linux-gnu/libtinfo.so.6"] = L("libtinfo.so.6.2")
    fs["/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0"] = F(noise("libapt", 400_000))
    fs["/usr/lib/os-release"] = F(_OS_RELEASE)
    fs["/etc/os-release"] = L("../usr/lib/os-release")
    fs["/etc/lsb-release"] = F("DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=20.04\n"
                               "DISTRIB_CODENAME=focal\n"
                               'DISTRIB_DESCRIPTION="Ubuntu 20.04.6 LTS"\n')
    fs["/etc/debian_version"] = F("bullseye/sid\n")
    fs["/etc/issue"] = F("Ubuntu 20.04.6 LTS \\n \\l\n\n")
    fs["/etc/hostname"] = F("")
    fs["/etc/hosts"] = F("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    fs["/etc/resolv.conf"] = F("")
    fs["/etc/passwd"] = F(_PASSWD)
    fs["/etc/group"] = F(_GROUP)
    fs["/etc/shadow"] = F("".join(f"{line.split(':')[0]}:*:19000:0:99999:7:::\n"
                                  for line in _PASSWD.splitlines()), 0o640, 0, 42)
    fs["/etc/shells"] = F("# /etc/shells: valid login shells\n/bin/sh\n/bin/bash\n"
                          "/usr/bin/bash\n/bin/rbash\n/bin/dash\n")
    fs["/etc/profile"] = F('# /etc/profile\nif [ "$PS1" ]; then\n  PS1=\'# \'\nfi\n'
                           "for i in /etc/profile.d/*.sh; do . $i; done\n")
    fs["/etc/bash.bashrc"] = F("# System-wide .bashrc file for interactive bash(1) "
                               "shells.\n[ -z \"$PS1\" ] && return\nshopt -s checkwinsize\n")
    fs["/etc/environment"] = F('PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:'
                               '/sbin:/bin"\n')
    fs["/etc/apt/sources.list"] = F(_SOURCES)
    fs["/etc/skel/.bashrc"] = F(_BASHRC)
    fs["/etc/skel/.profile"] = F("# ~/.profile\nif [ -n \"$BASH_VERSION\" ]; then\n"
                                 "  . \"$HOME/.bashrc\"\nfi\n")
    fs["/root/.bashrc"] = F(_BASHRC)
    fs["/root/.profile"] = F("# ~/.profile: executed by Bourne-compatible login shells.\n"
                             "if [ \"$BASH\" ]; then\n  . ~/.bashrc\nfi\nmesg n 2> /dev/null "
                             "|| true\n")
    fs["/var/lib/dpkg/status"] = F(_dpkg_status())
    for name, _v, _a, _d, _s in _BASE_PKGS:
        fs[f"/var/lib/dpkg/info/{name}.list"] = F(f"/.\n/usr/share/doc/{name}\n")
        fs[f"/usr/share/doc/{name}/copyright"] = F(f"{name}: see the upstream licence.\n"
                                                   "(imagesim simulation)\n")
    fs["/var/log/dpkg.log"] = F("2023-10-25 10:53:40 startup archives install\n")
    fs["/var/log/lastlog"] = F(b"", 0o664, 0, 43)
    return fs


UBUNTU = Recipe(
    name="library/ubuntu", tags=("latest", "20.04", "focal"), created=_UBUNTU_TIME,
    parent=None,
    steps=(
        Step("/bin/sh -c #(nop) ADD file:7d82a0f6ecd4cf91a2cc0d2e9d6c6d7e3f0ba3e0b1e6a1f5"
             "3ed05b8e2a2b9c50 in / ", _ubuntu_rootfs()),
        Step("/bin/sh -c set -xe \t\t&& echo '#!/bin/sh' > /usr/sbin/policy-rc.d \t&& echo "
             "'exit 101' >> /usr/sbin/policy-rc.d \t&& chmod +x /usr/sbin/policy-rc.d \t\t&& "
             "dpkg-divert --local --rename --add /sbin/initctl \t&& cp -a /usr/sbin/"
             "policy-rc.d /sbin/initctl \t&& sed -i 's/^exit.*/exit 0/' /sbin/initctl \t\t"
             "&& echo 'force-unsafe-io' > /etc/dpkg/dpkg.cfg.d/docker-apt-speedup \t\t&& "
             "echo 'APT::AutoRemove::SuggestsImportant \"false\";' > /etc/apt/apt.conf.d/"
             "docker-autoremove-suggests",
             {"/usr/sbin/policy-rc.d": X("#!/bin/sh\nexit 101\n"),
              "/sbin/initctl": X("#!/bin/sh\nexit 0\n"),
              "/etc/dpkg/dpkg.cfg.d/docker-apt-speedup": F("force-unsafe-io\n"),
              "/etc/apt/apt.conf.d/docker-clean": F(
                  'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n'),
              "/etc/apt/apt.conf.d/docker-autoremove-suggests": F(
                  'APT::AutoRemove::SuggestsImportant "false";\n'),
              "/etc/apt/apt.conf.d/docker-no-languages": F('Acquire::Languages "none";\n'),
              "/etc/apt/sources.list": F(_SOURCES.replace("# deb http://archive.ubuntu.com/"
                                                          "ubuntu/ focal universe",
                                                          "deb http://archive.ubuntu.com/"
                                                          "ubuntu/ focal universe")),
              "/var/log/dpkg.log": WHITEOUT}),
        Step("/bin/sh -c mkdir -p /run/systemd && echo 'docker' > /run/systemd/container",
             {"/run/systemd": D(), "/run/systemd/container": F("docker\n")}),
        Step('/bin/sh -c #(nop)  CMD ["/bin/bash"]'),
    ),
    config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/bash"]},
    description="Ubuntu is a Debian-based Linux operating system based on free software.",
    stars=17000,
    labels={"org.opencontainers.image.ref.name": "ubuntu",
            "org.opencontainers.image.version": "20.04"},
)

# -- alpine, hello-world ------------------------------------------------------------------

_ALPINE_TIME = "2023-11-30T23:22:44.000000000Z"


def _alpine_rootfs() -> dict[str, Node]:
    fs: dict[str, Node] = {}
    for d in ("/bin", "/dev", "/etc", "/etc/apk", "/home", "/lib", "/lib/apk",
              "/lib/apk/db", "/media", "/mnt", "/opt", "/proc", "/run", "/sbin", "/srv",
              "/sys", "/usr", "/usr/bin", "/usr/lib", "/usr/local", "/usr/local/bin",
              "/usr/sbin", "/usr/share", "/var", "/var/cache", "/var/lib", "/var/log"):
        fs[d] = D()
    fs["/root"] = D(0o700)
    fs["/tmp"] = D(0o1777)
    fs["/bin/busybox"] = X(stub("/bin/busybox", "BusyBox v1.36.1 multi-call binary")
                           + noise("busybox", 300_000))
    for n in ("sh", "ash", "ls", "cat", "cp", "mv", "rm", "mkdir", "echo", "ln", "chmod",
              "vi", "sed", "grep", "ps", "tar", "gzip", "date", "sleep", "touch", "pwd"):
        fs[f"/bin/{n}"] = L("/bin/busybox")
    fs["/sbin/apk"] = X(stub("/sbin/apk", "apk-tools 2.14.0, the Alpine package manager"))
    fs["/lib/ld-musl-x86_64.so.1"] = F(noise("musl", 200_000), 0o755)
    fs["/lib/libc.musl-x86_64.so.1"] = L("ld-musl-x86_64.so.1")
    fs["/etc/alpine-release"] = F("3.19.0\n")
    fs["/etc/os-release"] = F('NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.0\n'
                              'PRETTY_NAME="Alpine Linux v3.19"\n'
                              'HOME_URL="https://alpinelinux.org/"\n')
    fs["/etc/passwd"] = F("root:x:0:0:root:/root:/bin/ash\nbin:x:1:1:bin:/bin:/sbin/nologin\n"
                          "nobody:x:65534:65534:nobody:/:/sbin/nologin\n")
    fs["/etc/group"] = F("root:x:0:root\nbin:x:1:root,bin,daemon\nnobody:x:65534:\n")
    fs["/etc/hostname"] = F("localhost\n")
    fs["/etc/apk/repositories"] = F("https://dl-cdn.alpinelinux.org/alpine/v3.19/main\n"
                                    "https://dl-cdn.alpinelinux.org/alpine/v3.19/community\n")
    fs["/lib/apk/db/installed"] = F("".join(
        f"P:{p}\nV:{v}\nA:x86_64\nT:{d} (imagesim simulation)\n\n"
        for p, v, d in (("alpine-baselayout", "3.4.3-r2", "Alpine base dir structure"),
                        ("busybox", "1.36.1-r15", "Size optimized toolbox"),
                        ("musl", "1.2.4_git20230717-r4", "the musl c library"),
                        ("apk-tools", "2.14.0-r5", "Alpine Package Keeper"))))
    return fs


ALPINE = Recipe(
    name="library/alpine", tags=("latest", "3.19", "3"), created=_ALPINE_TIME, parent=None,
    steps=(
        Step("/bin/sh -c #(nop) ADD file:1f4eb46669b5b6275af19eb7471a6d7f1b5ce2d2a3f24b5d5e3a"
             "4fb8d6c7e8a1 in / ", _alpine_rootfs()),
        Step('/bin/sh -c #(nop)  CMD ["/bin/sh"]'),
    ),
    config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"]},
    description="A minimal Docker image based on Alpine Linux with a complete package index "
                "and only 5 MB in size!",
    stars=10500,
)

_HELLO_TEXT = """
Hello from Docker!
This message shows that your installation appears to be working correctly.
(imagesim: this is a simulated hello-world image; the text is printed by the simulator.)
"""

HELLO = Recipe(
    name="library/hello-world", tags=("latest",), created="2023-05-02T16:49:27.000000000Z",
    parent=None,
    steps=(
        Step("/bin/sh -c #(nop) COPY file:201f8f1849e89d53be9f6aa76937f5e209d745abfd15a8552fcf"
             "2ba45ab267f9 in / ", {"/hello": X(stub("/hello", "prints a greeting")
                                                  + _HELLO_TEXT.encode())}),
        Step('/bin/sh -c #(nop)  CMD ["/hello"]'),
    ),
    config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/hello"]},
    description="Hello World! (an example of minimal Dockerization)", stars=2200,
)

# -- tomcat -----------------------------------------------------------------------------------

_PATH_UBUNTU = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_WEBAPPS = ("ROOT", "docs", "examples", "host-manager", "manager")


def _webapps(base: str, version: str) -> dict[str, Node]:
    fs: dict[str, Node] = {base: D()}
    for app in _WEBAPPS:
        fs[f"{base}/{app}"] = D()
        fs[f"{base}/{app}/WEB-INF"] = D()
        fs[f"{base}/{app}/WEB-INF/web.xml"] = F(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<web-app version="4.0">\n'
            f"  <display-name>{app} (Apache Tomcat {version}, simulated)</display-name>\n"
            "</web-app>\n")
    fs[f"{base}/ROOT/index.jsp"] = F(
        f"<html><head><title>Apache Tomcat/{version}</title></head>\n<body><h1>Apache "
        f"Tomcat/{version}</h1><p>If you're seeing this, you've successfully installed "
        "Tomcat. Congratulations! (imagesim simulation)</p></body></html>\n")
    fs[f"{base}/ROOT/tomcat.svg"] = F(noise("tomcat.svg", 68_000))
    fs[f"{base}/docs/index.html"] = F(f"<html><body>Tomcat {version} documentation "
                                      "(simulated)</body></html>\n" + "x" * 20_000)
    fs[f"{base}/examples/index.html"] = F("<html><body>Servlet and JSP examples "
                                          "(simulated)</body></html>\n")
    fs[f"{base}/manager/index.jsp"] = F("<% response.sendRedirect(\"html\"); %>\n")
    fs[f"{base}/host-manager/index.jsp"] = F("<% response.sendRedirect(\"html\"); %>\n")
    return fs


def _tomcat_home(version: str, *, webapps_filled: bool) -> dict[str, Node]:
    home = "/usr/local/tomcat"
    fs: dict[str, Node] = {home: D()}
    for d in ("bin", "conf", "lib", "logs", "native-jni-lib", "temp", "work"):
        fs[f"{home}/{d}"] = D()
    fs[f"{home}/logs"] = D(0o1777)
    fs[f"{home}/temp"] = D(0o1777)
    fs[f"{home}/work"] = D(0o1777)
    for script in ("catalina.sh", "startup.sh", "shutdown.sh", "version.sh", "configtest.sh",
                   "setclasspath.sh", "digest.sh"):
        fs[f"{home}/bin/{script}"] = X(stub(f"{home}/bin/{script}",
                                            f"Apache Tomcat {version} {script}"))
    fs[f"{home}/bin/bootstrap.jar"] = F(noise(f"bootstrap-{version}", 36_000))
    fs[f"{home}/bin/tomcat-juli.jar"] = F(noise(f"juli-{version}", 50_000))
    fs[f"{home}/lib/catalina.jar"] = F(noise(f"catalina-{version}", 900_000))
    fs[f"{home}/lib/servlet-api.jar"] = F(noise(f"servlet-{version}", 350_000))
    fs[f"{home}/conf/server.xml"] = F(
        '<?xml version="1.0" encoding="UTF-8"?>\n<Server port="8005" shutdown="SHUTDOWN">\n'
        '  <Service name="Catalina">\n    <Connector port="8080" protocol="HTTP/1.1"\n'
        '               connectionTimeout="20000" redirectPort="8443" />\n'
        '    <Engine name="Catalina" defaultHost="localhost">\n'
        '      <Host name="localhost" appBase="webapps" unpackWARs="true" autoDeploy="true"/>\n'
        "    </Engine>\n  </Service>\n</Server>\n")
    fs[f"{home}/conf/web.xml"] = F("<web-app><!-- default servlet definitions (simulated) -->"
                                   "</web-app>\n")
    fs[f"{home}/conf/tomcat-users.xml"] = F("<tomcat-users>\n<!-- no users: edit to enable "
                                            "the manager app -->\n</tomcat-users>\n")
    fs[f"{home}/conf/context.xml"] = F("<Context>\n  <WatchedResource>WEB-INF/web.xml"
                                       "</WatchedResource>\n</Context>\n")
    fs[f"{home}/conf/logging.properties"] = F("handlers = java.util.logging.ConsoleHandler\n")
    fs[f"{home}/RELEASE-NOTES"] = F(f"Apache Tomcat Version {version}\n(imagesim "
                                    "simulation)\n")
    fs[f"{home}/LICENSE"] = F("Apache License, Version 2.0\n")
    if webapps_filled:
        fs.update(_webapps(f"{home}/webapps", version))
    else:
        fs[f"{home}/webapps"] = D()
        fs.update(_webapps(f"{home}/webapps.dist", version))
    return fs


def _jdk(home: str, version: str, seed: str, size: int) -> dict[str, Node]:
    return {
        home: D(), f"{home}/bin": D(),
        f"{home}/bin/java": X(stub(f"{home}/bin/java", f"OpenJDK {version} java launcher")),
        f"{home}/bin/jshell": X(stub(f"{home}/bin/jshell", f"OpenJDK {version} jshell")),
        f"{home}/bin/keytool": X(stub(f"{home}/bin/keytool", f"OpenJDK {version} keytool")),
        f"{home}/lib": D(),
        f"{home}/lib/modules": F(noise(seed, size)),
        f"{home}/release": F(f'IMPLEMENTOR="Eclipse Adoptium"\nJAVA_VERSION="{version}"\n'
                             'OS_NAME="Linux"\nOS_ARCH="x86_64"\n'),
    }


_TOMCAT_TIME = "2023-11-21T05:05:41.000000000Z"
_TOMCAT_VERSION = "10.1.16"
_TOMCAT_ENV = [
    f"PATH=/usr/local/tomcat/bin:/opt/java/openjdk/bin:{_PATH_UBUNTU}",
    "JAVA_HOME=/opt/java/openjdk", "LANG=en_US.UTF-8", "LANGUAGE=en_US:en",
    "LC_ALL=en_US.UTF-8", "JAVA_VERSION=jdk-17.0.9+9", "CATALINA_HOME=/usr/local/tomcat",
    "TOMCAT_NATIVE_LIBDIR=/usr/local/tomcat/native-jni-lib",
    "LD_LIBRARY_PATH=/usr/local/tomcat/native-jni-lib",
    "GPG_KEYS=48F8E69F6390C9F25CFEDCD268248959359E722B", "TOMCAT_MAJOR=10",
    f"TOMCAT_VERSION={_TOMCAT_VERSION}",
]

_APT_EXTRA = [
    ("ca-certificates", "20230311ubuntu0.20.04.1", "all", "Common CA certificates", 384),
    ("curl", "7.68.0-1ubuntu2.21", "amd64", "command line tool for transferring data with "
     "URL syntax", 411),
    ("fontconfig", "2.13.1-2ubuntu3", "amd64", "generic font configuration library", 568),
    ("locales", "2.31-0ubuntu9.14", "all", "GNU C Library: National Language (locale) data",
     16771),
    ("tzdata", "2023c-0ubuntu0.20.04.2", "all", "time zone and daylight-saving time data",
     3925),
    ("wget", "1.20.3-1ubuntu2", "amd64", "retrieves files from the web", 1008),
]

TOMCAT = Recipe(
    name="library/tomcat", tags=("latest", "10", "10.1", _TOMCAT_VERSION), created=_TOMCAT_TIME,
    parent="library/ubuntu:latest",
    steps=(
        Step("/bin/sh -c #(nop)  ENV JAVA_HOME=/opt/java/openjdk"),
        Step('/bin/sh -c #(nop)  ENV PATH=/opt/java/openjdk/bin:' + _PATH_UBUNTU),
        Step("/bin/sh -c #(nop)  ENV LANG=en_US.UTF-8 LANGUAGE=en_US:en LC_ALL=en_US.UTF-8"),
        Step("/bin/sh -c set -eux;     apt-get update;     DEBIAN_FRONTEND=noninteractive "
             "apt-get install -y --no-install-recommends         tzdata         curl         "
             "wget         ca-certificates         fontconfig         locales     ;     echo "
             "\"en_US.UTF-8 UTF-8\" >> /etc/locale.gen;     locale-gen en_US.UTF-8;     rm -rf "
             "/var/lib/apt/lists/*",
             {"/usr/bin/curl": X(stub("/usr/bin/curl", "curl 7.68.0")),
              "/usr/bin/wget": X(stub("/usr/bin/wget", "GNU Wget 1.20.3")),
              "/etc/ssl/certs": D(),
              "/etc/ssl/certs/ca-certificates.crt": F(noise("ca-certs", 200_000)),
              "/usr/share/zoneinfo": D(),
              "/usr/share/zoneinfo/UTC": F(noise("tz-utc", 118)),
              "/etc/locale.gen": F("en_US.UTF-8 UTF-8\n"),
              "/usr/lib/locale/locale-archive": F(noise("locale-archive", 300_000)),
              "/var/lib/dpkg/status": F(_dpkg_status(_APT_EXTRA))}),
        Step("/bin/sh -c #(nop)  ENV JAVA_VERSION=jdk-17.0.9+9"),
        Step("/bin/sh -c set -eux;     ARCH=\"$(dpkg --print-architecture)\";     case \"${ARCH}"
             "\" in        amd64)          ESUM='7b175dbe0d6e3c9c23b6ed96449b018308d8fc94a5ecd"
             "9c0df8b8bc376c3c18a';          BINARY_URL='https://github.com/adoptium/temurin17"
             "-binaries/releases/download/jdk-17.0.9%2B9/OpenJDK17U-jre_x64_linux_hotspot_17.0"
             ".9_9.tar.gz';          ;;     esac;     curl -LfsSo /tmp/openjdk.tar.gz "
             "${BINARY_URL};     tar --extract --file /tmp/openjdk.tar.gz --directory "
             "\"$JAVA_HOME\" --strip-components 1 --no-same-owner;     rm -f /tmp/openjdk.tar.gz",
             _jdk("/opt/java/openjdk", "17.0.9", "temurin-17", 1_500_000)),
        Step("/bin/sh -c set -eux;     echo \"Verifying install ...\";     echo \"java "
             "--version\"; java --version;     echo \"Complete.\"", {}),
        Step('/bin/sh -c #(nop)  CMD ["jshell"]'),
        Step("/bin/sh -c #(nop)  ENV CATALINA_HOME=/usr/local/tomcat"),
        Step("/bin/sh -c #(nop)  ENV PATH=/usr/local/tomcat/bin:/opt/java/openjdk/bin:"
             + _PATH_UBUNTU),
        Step('/bin/sh -c mkdir -p "$CATALINA_HOME"', {"/usr/local/tomcat": D()}),
        Step("/bin/sh -c #(nop) WORKDIR /usr/local/tomcat"),
        Step("/bin/sh -c #(nop)  ENV TOMCAT_NATIVE_LIBDIR=/usr/local/tomcat/native-jni-lib"),
        Step("/bin/sh -c #(nop)  ENV LD_LIBRARY_PATH=/usr/local/tomcat/native-jni-lib"),
        Step("/bin/sh -c #(nop)  ENV GPG_KEYS=48F8E69F6390C9F25CFEDCD268248959359E722B"),
        Step("/bin/sh -c #(nop)  ENV TOMCAT_MAJOR=10"),
        Step(f"/bin/sh -c #(nop)  ENV TOMCAT_VERSION={_TOMCAT_VERSION}"),
        Step("/bin/sh -c set -eux;         savedAptMark=\"$(apt-mark showmanual)\";     "
             "apt-get update;     apt-get install -y --no-install-recommends         "
             "dirmngr         gnupg     ;         ddist() { ... };         ddist \"$dir/"
             "$filename\" \"tomcat/tomcat-$TOMCAT_MAJOR/v$TOMCAT_VERSION/bin/$filename\";"
             "     tar -xf tomcat.tar.gz --strip-components=1;     rm bin/*.bat;     "
             "rm tomcat.tar.gz*;     mv webapps webapps.dist;     mkdir webapps;     "
             "chmod -R +rX .;     chmod 1777 logs temp work;",
             _tomcat_home(_TOMCAT_VERSION, webapps_filled=False)),
        Step("/bin/sh -c set -eux;     nativeLines=\"$(catalina.sh configtest 2>&1)\";     "
             "nativeLines=\"$(echo \"$nativeLines\" | grep 'Apache Tomcat Native')\";     "
             "nativeLines=\"$(echo \"$nativeLines\" | sort -u)\";     if ! echo "
             "\"$nativeLines\" | grep -E 'INFO: Loaded( APR based)? Apache Tomcat Native "
             "library' >&2; then         echo >&2 \"$nativeLines\";         exit 1;     fi",
             {}),
        Step("/bin/sh -c #(nop)  EXPOSE 8080"),
        Step('/bin/sh -c #(nop)  CMD ["catalina.sh" "run"]'),
    ),
    config={"ExposedPorts": {"8080/tcp": {}}, "Env": _TOMCAT_ENV,
            "Cmd": ["catalina.sh", "run"], "WorkingDir": "/usr/local/tomcat"},
    description="Apache Tomcat is an open source implementation of the Java Servlet and "
                "JavaServer Pages technologies",
    stars=3600,
)

BILLYGOO = Recipe(
    name="billygoo/tomcat8-jdk8", tags=("latest",), created="2020-06-07T06:15:58.000000000Z",
    parent="library/ubuntu:latest",
    steps=(
        Step("/bin/sh -c #(nop)  ENV JAVA_HOME=/usr/lib/jvm/java-8-openjdk-amd64"),
        Step("/bin/sh -c set -ex;   apt-get update;   apt-get install -y --no-install-"
             "recommends openjdk-8-jdk-headless;   rm -rf /var/lib/apt/lists/*",
             _jdk("/usr/lib/jvm/java-8-openjdk-amd64", "1.8.0_252", "openjdk-8", 1_100_000)),
        Step("/bin/sh -c #(nop)  ENV CATALINA_HOME=/usr/local/tomcat"),
        Step("/bin/sh -c #(nop)  ENV PATH=/usr/local/tomcat/bin:/usr/lib/jvm/java-8-openjdk-"
             "amd64/bin:" + _PATH_UBUNTU),
        Step("/bin/sh -c #(nop) WORKDIR /usr/local/tomcat"),
        Step("/bin/sh -c #(nop)  ENV TOMCAT_VERSION=8.5.56"),
        Step("/bin/sh -c set -eux;   wget -O tomcat.tar.gz \"https://archive.apache.org/dist/"
             "tomcat/tomcat-8/v8.5.56/bin/apache-tomcat-8.5.56.tar.gz\";   tar -xf "
             "tomcat.tar.gz --strip-components=1;   rm bin/*.bat tomcat.tar.gz",
             _tomcat_home("8.5.56", webapps_filled=True)),
        Step("/bin/sh -c #(nop)  EXPOSE 8080"),
        Step('/bin/sh -c #(nop)  CMD ["catalina.sh" "run"]'),
    ),
    config={"ExposedPorts": {"8080/tcp": {}},
            "Env": ["PATH=/usr/local/tomcat/bin:/usr/lib/jvm/java-8-openjdk-amd64/bin:"
                    + _PATH_UBUNTU, "JAVA_HOME=/usr/lib/jvm/java-8-openjdk-amd64",
                    "CATALINA_HOME=/usr/local/tomcat", "TOMCAT_VERSION=8.5.56"],
            "Cmd": ["catalina.sh", "run"], "WorkingDir": "/usr/local/tomcat"},
    description="tomcat8 with jdk8, webapps ready to use (no need to move webapps.dist)",
    stars=40, official=False,
)

# -- mysql ------------------------------------------------------------------------------------

_MYSQL_ENTRY = """#!/bin/bash
# docker-entrypoint.sh for mysql 5.7 (imagesim simulation)
# Reads MYSQL_ROOT_PASSWORD, MYSQL_DATABASE, MYSQL_USER, MYSQL_PASSWORD and initialises
# /var/lib/mysql on first start, then runs mysqld. In imagesim nothing is executed.
set -eo pipefail
exec "$@"
"""
_MY_CNF = """# Copyright (c) 2016, 2023, Oracle and/or its affiliates.
#
# The MySQL  Server configuration file.
#
# For explanations see
# http://dev.mysql.com/doc/mysql/en/server-system-variables.html

!includedir /etc/mysql/conf.d/
!includedir /etc/mysql/mysql.conf.d/
"""


def _with_user(passwd: str, group: str, name: str, uid: int, home: str,
               shell: str = "/bin/false") -> dict[str, Node]:
    return {"/etc/passwd": F(passwd + f"{name}:x:{uid}:{uid}::{home}:{shell}\n"),
            "/etc/group": F(group + f"{name}:x:{uid}:\n")}


MYSQL = Recipe(
    name="library/mysql", tags=("5.7", "5.7.44", "5"), created="2023-10-25T22:44:47.000000000Z",
    parent="library/ubuntu:latest",
    steps=(
        Step("/bin/sh -c groupadd -r mysql && useradd -r -g mysql mysql",
             _with_user(_PASSWD, _GROUP, "mysql", 999, "/home/mysql")),
        Step("/bin/sh -c #(nop)  ENV GOSU_VERSION=1.16"),
        Step("/bin/sh -c set -eux;  arch=\"$(dpkg --print-architecture)\";  curl -fL -o "
             "/usr/local/bin/gosu \"https://github.com/tianon/gosu/releases/download/"
             "$GOSU_VERSION/gosu-$arch\";  chmod +x /usr/local/bin/gosu;  gosu --version;  "
             "gosu nobody true",
             {"/usr/local/bin/gosu": X(stub("/usr/local/bin/gosu", "gosu 1.16")
                                       + noise("gosu", 200_000))}),
        Step("/bin/sh -c mkdir /docker-entrypoint-initdb.d", {"/docker-entrypoint-initdb.d": D()}),
        Step("/bin/sh -c #(nop)  ENV MYSQL_MAJOR=5.7"),
        Step("/bin/sh -c #(nop)  ENV MYSQL_VERSION=5.7.44-1.el7"),
        Step("/bin/sh -c set -eu;  . /etc/os-release;  installUrl=\"https://repo.mysql.com/yum/"
             "mysql-$MYSQL_MAJOR-community/docker/el/7/$(uname -m)\";  apt-get install -y "
             "mysql-community-server-minimal-$MYSQL_VERSION mysql-shell;  grep -F 'socket=/"
             "var/lib/mysql/mysql.sock' /etc/my.cnf;  mkdir -p /var/lib/mysql /var/run/mysqld"
             " /var/log/mysql;  chown mysql:mysql /var/lib/mysql /var/run/mysqld "
             "/var/log/mysql;  chmod 1777 /var/lib/mysql /var/run/mysqld;  mkdir /etc/mysql/"
             "conf.d;  mysqld --version;  mysql --version",
             {"/usr/sbin/mysqld": X(stub("/usr/sbin/mysqld", "mysqld  Ver 5.7.44 for Linux "
                                         "on x86_64 (MySQL Community Server (GPL))")
                                    + noise("mysqld", 1_400_000)),
              "/usr/bin/mysql": X(stub("/usr/bin/mysql", "mysql  Ver 14.14 Distrib 5.7.44")),
              "/usr/bin/mysqladmin": X(stub("/usr/bin/mysqladmin", "mysqladmin 5.7.44")),
              "/usr/bin/mysqldump": X(stub("/usr/bin/mysqldump", "mysqldump 5.7.44")),
              "/usr/share/mysql": D(),
              "/usr/share/mysql/english": D(),
              "/usr/share/mysql/english/errmsg.sys": F(noise("errmsg", 50_000)),
              "/etc/mysql": D(),
              "/etc/mysql/my.cnf": F(_MY_CNF),
              "/etc/mysql/conf.d": D(),
              "/etc/mysql/conf.d/docker.cnf": F("[mysqld]\nskip-host-cache\n"
                                                "skip-name-resolve\n"),
              "/etc/mysql/conf.d/mysql.cnf": F("[mysql]\n"),
              "/etc/mysql/mysql.conf.d": D(),
              "/etc/mysql/mysql.conf.d/mysqld.cnf": F(
                  "[mysqld]\npid-file\t= /var/run/mysqld/mysqld.pid\nsocket\t\t= /var/run/"
                  "mysqld/mysqld.sock\ndatadir\t\t= /var/lib/mysql\n#log-error\t= /var/log/"
                  "mysql/error.log\nsymbolic-links=0\n"),
              "/var/lib/mysql": D(0o1777, 999, 999),
              "/var/log/mysql": D(0o755, 999, 999),
              "/run/mysqld": D(0o1777, 999, 999)}),
        Step("/bin/sh -c #(nop)  VOLUME [/var/lib/mysql]"),
        Step("/bin/sh -c #(nop) COPY file:e9c22353a1133b89c5bdf1d5c9e7f4b2c2f5e2e0c2dc7e84"
             "95fa4c2b0b6b8c71 in /usr/local/bin/ ",
             {"/usr/local/bin/docker-entrypoint.sh": X(_MYSQL_ENTRY)}),
        Step("/bin/sh -c ln -s usr/local/bin/docker-entrypoint.sh /entrypoint.sh # backwards "
             "compat", {"/entrypoint.sh": L("usr/local/bin/docker-entrypoint.sh")}),
        Step('/bin/sh -c #(nop)  ENTRYPOINT ["docker-entrypoint.sh"]'),
        Step("/bin/sh -c #(nop)  EXPOSE 3306 33060"),
        Step('/bin/sh -c #(nop)  CMD ["mysqld"]'),
    ),
    config={"ExposedPorts": {"3306/tcp": {}, "33060/tcp": {}},
            "Env": [f"PATH={_PATH_UBUNTU}", "GOSU_VERSION=1.16", "MYSQL_MAJOR=5.7",
                    "MYSQL_VERSION=5.7.44-1.el7", "MYSQL_SHELL_VERSION=8.0.35-1.el7"],
            "Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["mysqld"],
            "Volumes": {"/var/lib/mysql": {}}},
    description="MySQL is a widely used, open-source relational database management system "
                "(RDBMS).",
    stars=14500,
)

# -- redis ------------------------------------------------------------------------------------

_REDIS_ENTRY = """#!/bin/sh
# docker-entrypoint.sh for redis (imagesim simulation)
set -e
# first arg is `-f` or `--some-option`, or a .conf file: run redis-server with it
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
\tset -- redis-server "$@"
fi
exec "$@"
"""

REDIS = Recipe(
    name="library/redis", tags=("6.0.8", "6.0", "6"), created="2020-09-10T23:55:38.000000000Z",
    parent="library/ubuntu:latest",
    steps=(
        Step("/bin/sh -c groupadd -r -g 999 redis && useradd -r -g redis -u 999 redis",
             _with_user(_PASSWD, _GROUP, "redis", 999, "/home/redis")),
        Step("/bin/sh -c #(nop)  ENV GOSU_VERSION=1.12"),
        Step("/bin/sh -c set -eux; \tsavedAptMark=\"$(apt-mark showmanual)\"; \tapt-get "
             "update; \tapt-get install -y --no-install-recommends ca-certificates dirmngr "
             "gnupg wget; \tdpkgArch=\"$(dpkg --print-architecture | awk -F- '{ print $NF }')\""
             "; \twget -O /usr/local/bin/gosu \"https://github.com/tianon/gosu/releases/"
             "download/$GOSU_VERSION/gosu-$dpkgArch\"; \tchmod +x /usr/local/bin/gosu; \tgosu "
             "--version; \tgosu nobody true",
             {"/usr/local/bin/gosu": X(stub("/usr/local/bin/gosu", "gosu 1.12")
                                       + noise("gosu-1.12", 180_000))}),
        Step("/bin/sh -c #(nop)  ENV REDIS_VERSION=6.0.8"),
        Step("/bin/sh -c #(nop)  ENV REDIS_DOWNLOAD_URL=http://download.redis.io/releases/"
             "redis-6.0.8.tar.gz"),
        Step("/bin/sh -c #(nop)  ENV REDIS_DOWNLOAD_SHA=04fa1fddc39bd1aecb6739dd5dd73858a3515"
             "b427acd1e2947a66dadce868d68"),
        Step("/bin/sh -c set -eux; \t\tsavedAptMark=\"$(apt-mark showmanual)\"; \tapt-get "
             "update; \tapt-get install -y --no-install-recommends \t\tca-certificates \t\twget "
             "\t\t\t\tgcc \t\tlibc6-dev \t\tlibssl-dev \t\tmake \t; \t\twget -O redis.tar.gz "
             "\"$REDIS_DOWNLOAD_URL\"; \techo \"$REDIS_DOWNLOAD_SHA *redis.tar.gz\" | sha256sum "
             "-c -; \tmkdir -p /usr/src/redis; \ttar -xzf redis.tar.gz -C /usr/src/redis "
             "--strip-components=1; \trm redis.tar.gz; \tmake -C /usr/src/redis -j \"$(nproc)"
             "\" all; \tmake -C /usr/src/redis install; \trm -r /usr/src/redis; \t\tredis-cli "
             "--version; \tredis-server --version",
             {"/usr/local/bin/redis-server": X(stub("/usr/local/bin/redis-server",
                                                    "Redis server v=6.0.8 sha=00000000:0 "
                                                    "malloc=jemalloc-5.1.0 bits=64")
                                               + noise("redis-server", 900_000)),
              "/usr/local/bin/redis-cli": X(stub("/usr/local/bin/redis-cli",
                                                 "redis-cli 6.0.8") + noise("redis-cli",
                                                                            300_000)),
              "/usr/local/bin/redis-benchmark": X(stub("/usr/local/bin/redis-benchmark",
                                                       "redis-benchmark 6.0.8")),
              "/usr/local/bin/redis-check-aof": L("redis-server"),
              "/usr/local/bin/redis-check-rdb": L("redis-server"),
              "/usr/local/bin/redis-sentinel": L("redis-server"),
              "/etc/redis": D()}),
        Step("/bin/sh -c mkdir /data && chown redis:redis /data", {"/data": D(0o755, 999, 999)}),
        Step("/bin/sh -c #(nop)  VOLUME [/data]"),
        Step("/bin/sh -c #(nop) WORKDIR /data"),
        Step("/bin/sh -c #(nop) COPY file:df205a0ef6e6df8947ce0a7ae9e37b6a5588035647f38a49b8b"
             "07321003a8a3a in /usr/local/bin/ ",
             {"/usr/local/bin/docker-entrypoint.sh": X(_REDIS_ENTRY)}),
        Step('/bin/sh -c #(nop)  ENTRYPOINT ["docker-entrypoint.sh"]'),
        Step("/bin/sh -c #(nop)  EXPOSE 6379"),
        Step('/bin/sh -c #(nop)  CMD ["redis-server"]'),
    ),
    config={"ExposedPorts": {"6379/tcp": {}},
            "Env": [f"PATH={_PATH_UBUNTU}", "GOSU_VERSION=1.12", "REDIS_VERSION=6.0.8",
                    "REDIS_DOWNLOAD_URL=http://download.redis.io/releases/redis-6.0.8.tar.gz",
                    "REDIS_DOWNLOAD_SHA=04fa1fddc39bd1aecb6739dd5dd73858a3515b427acd1e2947a66d"
                    "adce868d68"],
            "Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["redis-server"],
            "Volumes": {"/data": {}}, "WorkingDir": "/data"},
    description="Redis is an open source key-value store that functions as a data structure "
                "server.",
    stars=12300,
)

# -- registry -----------------------------------------------------------------------------------

_REGISTRY_CONFIG = """version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

REGISTRY = Recipe(
    name="library/registry", tags=("latest", "2", "2.8", "2.8.3"),
    created="2023-10-02T18:43:42.000000000Z", parent="library/alpine:latest",
    steps=(
        Step("/bin/sh -c set -ex     && apk add --no-cache ca-certificates",
             {"/etc/ssl": D(), "/etc/ssl/certs": D(),
              "/etc/ssl/certs/ca-certificates.crt": F(noise("alpine-ca", 200_000))}),
        Step("/bin/sh -c #(nop) COPY file:3d5bbd0ce8fd02b1b23e2f8bcd2b8ec1a7a1a4c2f7f8c2a9b6b"
             "0d0d8ba5c8e1d in /bin/registry ",
             {"/bin/registry": X(stub("/bin/registry", "the CNCF distribution registry "
                                                       "v2.8.3; imagesim runs its own OCI "
                                                       "registry server in its place")
                                 + noise("registry-bin", 1_000_000))}),
        Step("/bin/sh -c #(nop) COPY file:4544cc1555469403a46a3f5d8ccbd2d4a5d8a6c7b1f3d4e5c6"
             "b7a8d9e0f1a2b3 in /etc/docker/registry/config.yml ",
             {"/etc/docker": D(), "/etc/docker/registry": D(),
              "/etc/docker/registry/config.yml": F(_REGISTRY_CONFIG)}),
        Step('/bin/sh -c #(nop)  VOLUME [/var/lib/registry]'),
        Step("/bin/sh -c #(nop)  EXPOSE 5000"),
        Step("/bin/sh -c #(nop) COPY file:507caa54f88c1f3862e5876e09a108b2083630ba24c57ad124e3"
             "56a2de861d62 in /entrypoint.sh ",
             {"/entrypoint.sh": X("#!/bin/sh\n\nset -e\n\ncase \"$1\" in\n    *.yaml|*.yml) "
                                  "set -- registry serve \"$@\" ;;\n    serve|garbage-collect|"
                                  "help|-*) set -- registry \"$@\" ;;\nesac\n\nexec \"$@\"\n")}),
        Step('/bin/sh -c #(nop)  ENTRYPOINT ["/entrypoint.sh"]'),
        Step('/bin/sh -c #(nop)  CMD ["/etc/docker/registry/config.yml"]'),
    ),
    config={"ExposedPorts": {"5000/tcp": {}},
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/entrypoint.sh"], "Cmd": ["/etc/docker/registry/config.yml"],
            "Volumes": {"/var/lib/registry": {}}},
    description="Distribution implementation for storing and distributing of container "
                "images and artifacts",
    stars=4000,
)

RECIPES: tuple[Recipe, ...] = (UBUNTU, ALPINE, HELLO, TOMCAT, BILLYGOO, MYSQL, REDIS,
                               REGISTRY)

#: extra tags that point at another tag of the same repository (pulling ``mysql`` or
#: ``redis`` with no tag gives the lesson's version)
ALIASES: dict[str, str] = {"library/mysql:latest": "5.7", "library/redis:latest": "6.0.8"}

# -- building the images --------------------------------------------------------------------


@dataclass(frozen=True)
class LibraryImage:
    """One built library image: the ``Image`` and every blob it needs (config, layers,
    manifest), by digest."""

    repository: str           # library/ubuntu
    tags: tuple[str, ...]
    image: Image
    blobs: dict[Digest, bytes]
    recipe: Recipe

    @property
    def familiar(self) -> str:
        return self.repository.removeprefix("library/")


def _key(name: str, tag: str) -> str:
    return f"{name}:{tag}"


@functools.cache
def _build(key: str) -> LibraryImage:
    recipe = _RECIPE_BY_KEY[key]
    if recipe.parent:
        parent = _build(recipe.parent)
        layers = list(parent.image.layers)
        diff_ids = list(parent.image.diff_ids)
        history = parent.image.history
        blobs = {d: b for d, b in parent.blobs.items()
                 if d in {x.digest for x in parent.image.layers}}
        config = parent.image.runtime_config
    else:
        layers, diff_ids, history, blobs, config = [], [], [], {}, {}
    for step in recipe.steps:
        row: dict[str, Any] = {"created": recipe.created, "created_by": step.created_by,
                               "comment": SIM_COMMENT}
        if step.files is None:
            row["empty_layer"] = True
        else:
            built = build_layer(step.files, recipe.created)
            layers.append(built.descriptor)
            diff_ids.append(built.diff_id)
            blobs[built.descriptor.digest] = built.data
        history.append(row)
    runtime = dict(config)
    runtime.update(recipe.config)
    labels = dict(runtime.get("Labels") or {})
    labels.update(recipe.labels)
    labels[SIM_LABEL] = "true"
    labels["org.opencontainers.image.description"] = \
        f"{recipe.description} (imagesim simulation, not the real image)"
    runtime["Labels"] = dict(sorted(labels.items()))
    config_bytes = oci.build_config(created=recipe.created, config=runtime, diff_ids=diff_ids,
                                    history=history)
    manifest = oci.build_manifest(oci.Descriptor.of(oci.OCI_CONFIG, config_bytes), layers)
    image = Image.from_bytes(manifest, config_bytes)
    blobs[image.id] = config_bytes
    blobs[image.digest] = manifest
    return LibraryImage(recipe.name, recipe.tags, image, blobs, recipe)


_RECIPE_BY_KEY: dict[str, Recipe] = {_key(r.name, r.tags[0]): r for r in RECIPES}
_RECIPE_BY_KEY.update({_key(r.name, "latest"): r for r in RECIPES if "latest" in r.tags})


def _canonical_key(repository: str, tag: str) -> str | None:
    tag = ALIASES.get(_key(repository, tag), tag)
    for r in RECIPES:
        if r.name == repository and tag in r.tags:
            return _key(r.name, r.tags[0]) if _key(r.name, r.tags[0]) in _RECIPE_BY_KEY \
                else None
    return None


def names() -> list[str]:
    """Every ``repository:tag`` the library serves (familiar form), aliases included."""
    out = []
    for r in RECIPES:
        for t in r.tags:
            out.append(f"{r.name.removeprefix('library/')}:{t}")
    for alias in ALIASES:
        out.append(alias.removeprefix("library/"))
    return sorted(out)


def all_images() -> list[LibraryImage]:
    """Every library image (one per recipe), built."""
    return [_build(_key(r.name, r.tags[0])) for r in RECIPES]


def lookup(ref: str | Reference) -> LibraryImage:
    """The library image a Hub reference names (by tag, or by manifest digest).

    Raises ``NameUnknown`` (docker's "pull access denied ... repository does not exist")
    for an unknown repository, ``ManifestUnknown`` for an unknown tag or digest, and
    ``ImageNotFound`` when ``ref`` names another registry."""
    r = ref if isinstance(ref, Reference) else Reference.parse(ref)
    if r.registry_host is not None:
        raise ImageNotFound(f"{r} is not in the built-in library (it names the registry "
                            f"{r.registry_host})")
    if not any(x.name == r.path for x in RECIPES):
        raise NameUnknown(f"pull access denied for {r.familiar_name}, repository does not "
                          "exist or may require 'docker login': denied: requested access to "
                          "the resource is denied")
    if r.digest is not None:
        for x in RECIPES:
            if x.name == r.path:
                li = _build(_key(x.name, x.tags[0]))
                if str(li.image.digest) == r.digest:
                    return li
        raise ManifestUnknown(f"manifest for {r} not found: manifest unknown: manifest "
                              "unknown")
    key = _canonical_key(r.path, r.tag or "latest")
    if key is None:
        raise ManifestUnknown(f"manifest for {r} not found: manifest unknown: manifest unknown")
    return _build(key)


def _short_layer(d: oci.Descriptor) -> str:
    return d.digest.hex[:12]


def pull(store: Any, ref: str | Reference, out: TextIO | None = None, *,
         quiet: bool = False, tty: bool | None = None) -> Image:
    """``imagesim pull`` for a reference with no registry host: put the library image into
    ``store`` and print docker's lines to ``out`` (default stdout):

        Using default tag: latest
        latest: Pulling from library/ubuntu
        7b1a6ab2e44d: Pull complete
        Digest: sha256:...
        Status: Downloaded newer image for ubuntu:latest
        docker.io/library/ubuntu:latest

    Layers the store already has print ``Already exists``; an image already there prints
    ``Status: Image is up to date for ...``. Not on a terminal (``tty`` false) each layer
    also prints the intermediate states docker prints there (``Pulling fs layer``,
    ``Verifying Checksum``, ``Download complete``). ``quiet`` prints only the last line.
    Raises what ``lookup`` raises."""
    out = out if out is not None else sys.stdout
    r = ref if isinstance(ref, Reference) else Reference.parse(ref)
    li = lookup(r)
    tty = (hasattr(out, "isatty") and out.isatty()) if tty is None else tty

    def say(line: str) -> None:
        if not quiet:
            print(line, file=out, flush=True)

    if not r.tag_given and r.digest is None:
        say(f"Using default tag: {r.tag}")
    say(f"{r.reference}: Pulling from {r.path}")
    image = li.image
    tags = [r] if r.digest is None else []
    current = None
    if r.digest is None:
        current = store.tags().get(r.full)
    else:
        with contextlib.suppress(ImageSimError):
            current = store.resolve(f"{r.name}@{r.digest}").digest
    if current == image.digest and all(store.has_layer(d) for d in image.diff_ids):
        store.add_repo_digest(r, image.digest)
        say(f"Digest: {image.digest}")
        say(f"Status: Image is up to date for {r}")
        print(r.full, file=out, flush=True)
        return store.resolve(r.full if r.digest is None else str(image.digest))
    with store.lease(f"pull {r}"):
        present = [store.has_layer(d) for d in image.diff_ids]
        seen: set[Digest] = set()
        if not tty:
            for desc, have in zip(image.layers, present, strict=True):
                if desc.digest in seen:
                    continue
                seen.add(desc.digest)
                if have:
                    say(f"{_short_layer(desc)}: Already exists")
                else:
                    say(f"{_short_layer(desc)}: Pulling fs layer")
            seen.clear()
        for desc, have in zip(image.layers, present, strict=True):
            if have or desc.digest in seen:
                if tty and desc.digest not in seen:
                    say(f"{_short_layer(desc)}: Already exists")
                seen.add(desc.digest)
                continue
            seen.add(desc.digest)
            store.blobs.put(li.blobs[desc.digest], desc.digest)
            if not tty:
                say(f"{_short_layer(desc)}: Verifying Checksum")
                say(f"{_short_layer(desc)}: Download complete")
        store.blobs.put(li.blobs[image.id], image.id)
        store.blobs.put(image.manifest_bytes, image.digest)
        done: set[Digest] = set()

        def on_layer(i: int, diff_id: Digest, what: str) -> None:
            desc = image.layers[i]
            if what == "unpacked" and desc.digest not in done:
                done.add(desc.digest)
                say(f"{_short_layer(desc)}: Pull complete")

        result = store.add_image(image.manifest_bytes, tags, on_layer=on_layer)
        store.add_repo_digest(r, image.digest)
    say(f"Digest: {image.digest}")
    say(f"Status: Downloaded newer image for {r}")
    print(r.full, file=out, flush=True)
    return result


def load_all(store: Any, out: TextIO | None = None,
             on_image: Callable[[LibraryImage], None] | None = None) -> list[Image]:
    """``imagesim samples``: put every library image into ``store`` under its primary tag
    (``ubuntu:latest``, ``mysql:5.7``, ``redis:6.0.8``, ...), printing
    ``Loaded image: NAME:TAG`` for each."""
    out = out if out is not None else sys.stdout
    result = []
    with store.lease("samples"):
        for li in all_images():
            for d, data in li.blobs.items():
                if d not in store.blobs:
                    store.blobs.put(data, d)
            # the primary tag only (ubuntu:latest, mysql:5.7, ...), as pulling each would
            tags = [f"{li.repository}:{li.tags[0]}"]
            img = store.add_image(li.image.manifest_bytes, tags)
            for t in tags:
                print(f"Loaded image: {Reference.parse(t)}", file=out)
            if on_image:
                on_image(li)
            result.append(img)
    return result


@dataclass(frozen=True)
class SearchResult:
    name: str
    description: str
    stars: int
    official: bool


def search(term: str) -> list[SearchResult]:
    """Library repositories whose name or description contains ``term`` (case-insensitive),
    most stars first, as ``docker search`` orders them."""
    t = term.lower()
    out = []
    for r in RECIPES:
        fam = r.name.removeprefix("library/")
        if t in fam.lower() or t in r.description.lower():
            out.append(SearchResult(fam, r.description, r.stars, r.official))
    out.sort(key=lambda x: (-x.stars, x.name))
    return out
