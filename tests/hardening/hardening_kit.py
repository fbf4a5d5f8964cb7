"""Shared pieces of the hardening tests: running the real ``imagesim`` CLI as a subprocess,
building small stores, and judging a store after a crash.

Kept importable without pytest so ``crash_matrix.py`` can run long crash campaigns on
demand (``python tests/hardening/crash_matrix.py --kills 300``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

from imagesim.store import Store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-m", "imagesim"]

#: fsck findings a crash may legitimately leave: incomplete pieces nobody can see, which
#: ``fsck --repair`` removes. Anything else (a corrupt blob, a tag or image whose pieces are
#: missing, a recorded layer without its directory) is a crash-safety bug.
ALLOWED_AFTER_CRASH = (
    re.compile(r"^left-over temporary "),
    re.compile(r"^\d+ unreferenced blobs and \d+ unreferenced layers \(garbage\)$"),
    re.compile(r"^stale lease "),
    re.compile(r"^container directory \S+ has no record"),
    re.compile(r"^pin held by container \S+, which has no record$"),
)


def env_for(root: str, **extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess on ``root`` (no user config, no colour)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAGESIM_", "PYTEST_", "COV_"))}
    env.update({"IMAGESIM_ROOT": root, "NO_COLOR": "1", "PYTHONPATH": REPO,
                "IMAGESIM_CONFIG": os.path.join(root, "..", "client-config.json")})
    env.update(extra)
    return env


def cli(root: str, *args: str, check: bool = True, timeout: float = 60,
        **extra: str) -> subprocess.CompletedProcess:
    """Run ``imagesim ARGS`` on ``root`` as a real subprocess."""
    r = subprocess.run([*CLI, *args], env=env_for(root, **extra), capture_output=True,
                       text=True, timeout=timeout, cwd=REPO)
    if check and r.returncode != 0:
        raise AssertionError(f"imagesim {' '.join(args)} -> {r.returncode}\n{r.stdout}\n"
                             f"{r.stderr}")
    return r


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of regular files (name -> content), parents made as needed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs: set[str] = set()
        for name, data in files.items():
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    tf.addfile(ti)
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sample_files(tag: str, n: int = 12, size: int = 40_000) -> dict[str, bytes]:
    """``n`` files with content unique to ``tag`` (so layers differ between images)."""
    seed = tag.encode()
    out = {}
    for i in range(n):
        block = (seed + b"-%d-" % i) * (size // (len(seed) + 8) + 1)
        out[f"data/{tag}/f{i:02d}.bin"] = block[: size + i]
    out[f"etc/{tag}.conf"] = f"name={tag}\n".encode()
    return out


def copy_tree(src: str, dst: str) -> None:
    """A faithful copy of a store (device nodes, xattrs, modes): ``cp -a``."""
    subprocess.run(["cp", "-a", src, dst], check=True)


@dataclass
class Verdict:
    """What fsck said right after the crash, and after ``--repair``."""

    before: list[str]
    bad: list[str]
    after_repair: list[str]


def judge(root: str, *, deep: bool = True) -> Verdict:
    """fsck a store after a crash: the problems it reports, those outside
    ``ALLOWED_AFTER_CRASH`` (must be none), and what a second fsck finds after ``--repair``
    (must be nothing)."""
    before = Store(root, fsync=False).fsck(deep=deep).problems
    bad = [p for p in before if not any(rx.search(p) for rx in ALLOWED_AFTER_CRASH)]
    Store(root, fsync=False).fsck(repair=True, deep=deep)
    after = Store(root, fsync=False).fsck(deep=deep).problems
    return Verdict(list(before), bad, list(after))


def registry_blobs_ok(reg_root: str) -> list[str]:
    """Every blob file under a registry root that does not hash to its name (must be [])."""
    import hashlib

    bad = []
    for dirpath, _dirs, files in os.walk(reg_root):
        if os.path.basename(dirpath) != "sha256" or "blobs" not in dirpath:
            continue
        for name in files:
            if not re.fullmatch(r"[a-f0-9]{64}", name):
                continue
            h = hashlib.sha256()
            with open(os.path.join(dirpath, name), "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() != name:
                bad.append(os.path.join(dirpath, name))
    return bad


def rm(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def points_hit(trace_file: str) -> list[str]:
    """The crash points a traced run reached, in order."""
    try:
        with open(trace_file) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def kill_choices(trace: Sequence[str]) -> list[tuple[str, int]]:
    """Every (point, n) a traced run passed: killing at each is a distinct crash."""
    seen: dict[str, int] = {}
    out = []
    for name in trace:
        seen[name] = seen.get(name, 0) + 1
        out.append((name, seen[name]))
    return out
