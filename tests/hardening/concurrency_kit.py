"""Concurrent readers and writers on one union, and the invariants they must keep.

Shared by ``test_concurrent_engine.py`` (threads on one ``UnionFS``) and
``test_concurrent_mount.py`` (processes on one FUSE mount). Runnable as a script: the mount
test starts each worker as ``python concurrency_kit.py worker ...`` (a real process doing real
system calls below the mount point) and reads its JSON report.

The stack (``make_stack``) gives each worker ``i`` a private subtree ``/wI`` (files, dirs,
symlinks, hard links, FIFOs, whiteouts and opaque dirs in two lower layers, sometimes an
initial upper) and everyone a shared area ``/shared``::

    /shared/replaced/fK   replaced only by rename(2) of a complete temp file over it
    /shared/written/fK    overwritten in place (O_WRONLY, offset 0) with equal-length data
    /shared/dir/nK        created with O_EXCL and unlinked by every worker
    /shared/dir/dK        made and removed (mkdir, rmdir) by every worker

Invariants, and the POSIX text each rests on:

- private subtree: every step gives the value or errno the sequential model
  (``unionfs.testing.model``) gives for that worker's steps alone, and at the end the subtree
  is exactly the model's (no other worker touches it, so any serialisation is this one);
- ``/shared/replaced/fK`` always exists and always reads as one complete version: rename(2)
  "a link named new shall remain visible ... and refer either to the file referred to by new
  or old before the operation began";
- ``/shared/written/fK`` always has its one length, and at the end holds exactly one complete
  version: write(2) is atomic with respect to other writes to a regular file (XSH 2.9.7), and
  every version has the same length and is written at offset 0 (concurrent reads may see a
  mix, which Linux permits, so reads check only the length);
- ``/shared/dir/nK``, at the end, is absent or one complete version (each O_EXCL create is
  followed by its creator's one write); while running a read may also find it empty;
  ``/shared/dir/dK`` (mkdir and rmdir by everyone, over a lower directory and a new name) is
  absent or an empty directory; mkdir gives ok or EEXIST, rmdir ok or ENOENT;
- every version is self-describing (``version(path, who, n)``: a header naming the path,
  writer and step, then bytes derived from that header), so a mix is always detected.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import random
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from unionfs.testing.conformance import (
    Outcome,
    Seen,
    diff_snapshots,
    dir_fingerprint,
    outcome,
    snapshot,
)
from unionfs.testing.model import (
    Dir,
    Fifo,
    File,
    HardLink,
    LayerSpec,
    Node,
    StackSpec,
    Symlink,
    UnionModel,
    UnsupportedStep,
    Whiteout,
    without_stray_whiteouts,
)
from unionfs.testing.strategies import (
    DIR_MODES,
    FILE_MODES,
    NAMES,
    OWNERS,
    XATTR_NAMES,
    Op,
)

SHARED_FILES = 3
REPLACED_SIZE = 20_000   # several pages: a torn replace would show
WRITTEN_SIZE = 5_000     # more than one page, one write(2)
DIR_SIZE = 3_000
DIR_NAMES = tuple(f"n{k}" for k in range(4))
SUBDIR_NAMES = ("d0", "d1")
#: the shared paths whose objects are replaced (rename over, unlink and create)
SHARED_REPLACED = ["/shared/replaced", "/shared/dir"]
SYMLINK_TARGETS = ("missing/a", "../missing/x", "/missing/y")


def version(path: str, who: str, n: int, size: int) -> bytes:
    """The one complete content ``who`` writes to ``path`` at its step ``n``."""
    head = f"{path}|{who}|{n}|".encode()
    return head + hashlib.shake_128(head).digest(size - len(head))


def is_version(path: str, data: bytes, size: int) -> bool:
    """True if ``data`` is exactly one complete ``version`` of ``path`` (any writer/step)."""
    parts = data[:200].split(b"|", 3)
    if len(parts) < 4 or parts[0] != path.encode():
        return False
    try:
        who, n = parts[1].decode(), int(parts[2])
    except (UnicodeDecodeError, ValueError):
        return False
    return data == version(path, who, n, size)


# ---------------------------------------------------------------------------------------------
# the stack


def _subtree(rng: random.Random, top: str, layer: int, entries: dict[str, Node]) -> None:
    """Fill ``entries`` with a random tree below ``top`` (a ``Dir`` already in it)."""
    kinds = ["file", "file", "file", "dir", "dir", "symlink", "hardlink", "fifo"]
    if layer == 0:
        kinds += ["whiteout", "whiteout"]

    def fill(prefix: str, depth: int) -> None:
        for name in rng.sample(NAMES, rng.randint(1, 3)):
            path = f"{prefix}/{name}"
            kind = rng.choice([k for k in kinds if depth < 3 or k != "dir"])
            if kind == "file":
                entries[path] = File(rng.choice([b"", b"lower\n", b"x" * 40,
                                                 rng.randbytes(12)]),
                                     rng.choice(FILE_MODES), rng.choice(OWNERS),
                                     rng.choice(OWNERS),
                                     ((XATTR_NAMES[0], b"v"),) if rng.random() < 0.3 else ())
            elif kind == "dir":
                entries[path] = Dir(rng.choice(DIR_MODES), opaque=layer == 0 and
                                    rng.random() < 0.2)
                fill(path, depth + 1)
            elif kind == "symlink":
                entries[path] = Symlink(rng.choice(SYMLINK_TARGETS))
            elif kind == "fifo":
                entries[path] = Fifo()
            elif kind == "whiteout":
                entries[path] = Whiteout()
            else:
                files = sorted(p for p, n in entries.items() if isinstance(n, File)
                               and p.startswith(top + "/"))
                entries[path] = HardLink(rng.choice(files)) if files else File(b"solo")

    fill(top, 1)


def make_stack(seed: int, workers: int, *, upper: bool | None = None) -> StackSpec:
    """Two lower layers (and, for some seeds, an initial upper) holding ``/w0``..``/wN-1``
    and ``/shared`` (see the module doc)."""
    rng = random.Random(seed)
    layers: list[dict[str, Node]] = [{}, {}]
    for i in range(workers):
        for n, entries in enumerate(layers):
            entries[f"/w{i}"] = Dir()
            _subtree(rng, f"/w{i}", n, entries)
    bottom = layers[1]
    bottom["/shared"] = Dir(0o777)
    for sub in ("replaced", "written", "dir"):
        bottom[f"/shared/{sub}"] = Dir(0o777)
    for k in range(SHARED_FILES):
        for sub, size in (("replaced", REPLACED_SIZE), ("written", WRITTEN_SIZE)):
            path = f"/shared/{sub}/f{k}"
            bottom[path] = File(version(path, "lower", 0, size))
    for name in DIR_NAMES[:2]:
        path = f"/shared/dir/{name}"
        bottom[path] = File(version(path, "lower", 0, DIR_SIZE))
    bottom["/shared/dir/d0"] = Dir(0o755)
    upper_spec = None
    if upper if upper is not None else rng.random() < 0.5:
        entries: dict[str, Node] = {}
        for i in range(workers):
            entries[f"/w{i}"] = Dir()
            _subtree(rng, f"/w{i}", 0, entries)
        upper_spec = LayerSpec.of(entries)
    stack = StackSpec(tuple(LayerSpec.of(e) for e in layers), upper_spec)
    return without_stray_whiteouts(stack)


# ---------------------------------------------------------------------------------------------
# one worker


@dataclass
class Report:
    """What one worker did and saw. ``failures`` empty means every check held."""

    worker: int
    steps: int = 0
    private_steps: int = 0
    shared_steps: int = 0
    errnos: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    #: private paths whose identity this worker changed (created, removed, renamed)
    disturbed: list[str] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    #: failures of a known, reported bug that the caller chose to tolerate (see ``KNOWN``)
    tolerated: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        return cls(**data)


def private_paths(model: UnionModel, top: str) -> tuple[list[str], list[str]]:
    """(existing paths below ``top``, paths that exist or nearly exist there)."""
    existing = [p for p in model.paths() if p.startswith(top + "/")]
    dirs = [top] + [p for p in existing if model.kind_of(p) == "dir"]
    near = set(existing)
    for d in dirs:
        near.update(f"{d}/{n}" for n in NAMES)
    near.update(f"{p}/a" for p in existing if model.kind_of(p) != "dir")
    near.add(f"{top}/nodir/a")
    return existing or [f"{top}/a"], sorted(near)


_WEIGHTS = {"write_file": 4, "read_file": 2, "lstat": 1, "listdir": 1, "mkdir": 2,
            "unlink": 2, "rmdir": 1, "rename": 3, "link": 1, "symlink": 1, "chmod": 1,
            "chown": 1, "truncate": 1, "setxattr": 1, "removexattr": 1, "getxattr": 1,
            "listxattr": 1, "readlink": 1, "utime": 1, "mkfifo": 1}
_CALLS = list(_WEIGHTS)
_CUM = list(_WEIGHTS.values())


def private_op(rng: random.Random, model: UnionModel, top: str) -> Op:
    """One random step on ``top``'s subtree, over names that exist or nearly exist."""
    existing, near = private_paths(model, top)
    call = rng.choices(_CALLS, _CUM)[0]
    pick_existing = rng.random() < 0.6
    p = rng.choice(existing if pick_existing else near)
    if call == "write_file":
        data = rng.choice([b"", b"new\n", rng.randbytes(rng.randint(1, 30)), b"y" * 100])
        return Op(call, (p, data, rng.choice(["w", "x", "a", "r+"]), rng.choice(FILE_MODES)))
    if call == "truncate":
        return Op(call, (p, rng.choice([0, 1, 3, 30])))
    if call in ("mkdir",):
        return Op(call, (p, rng.choice(DIR_MODES)))
    if call == "mkfifo":
        return Op(call, (p, rng.choice(FILE_MODES)))
    if call == "rename":
        dirs = [q for q in existing if model.kind_of(q) == "dir"]
        src = rng.choice(dirs) if dirs and rng.random() < 0.4 else rng.choice(existing)
        return Op(call, (src, rng.choice(near)))
    if call == "link":
        return Op(call, (rng.choice(existing), rng.choice(near)))
    if call == "symlink":
        return Op(call, (rng.choice(SYMLINK_TARGETS), p))
    if call == "chmod":
        return Op(call, (p, rng.choice(FILE_MODES + DIR_MODES)))
    if call == "chown":
        return Op(call, (p, rng.choice(OWNERS), rng.choice(OWNERS)))
    if call == "utime":
        t = rng.randint(0, 2**31 - 2) * 1_000_000_000
        return Op(call, (p, t, t + 1_000_000_000))
    if call == "setxattr":
        return Op(call, (p, rng.choice(XATTR_NAMES), rng.randbytes(rng.randint(0, 8))))
    if call in ("removexattr", "getxattr"):
        return Op(call, (p, rng.choice(XATTR_NAMES)))
    return Op(call, (p,))


def _disturbs(op: Op, result: Outcome) -> list[str]:
    """The paths whose object identity a successful ``op`` changed."""
    if result.errno is not None:
        return []
    if op.call == "rename" or op.call == "link":
        return [op.args[0], op.args[1]] if op.call == "rename" else [op.args[1]]
    if op.call in ("unlink", "rmdir", "mkdir", "symlink", "mkfifo", "write_file"):
        return [op.args[1] if op.call == "symlink" else op.args[0]]
    return []


def _count(report: Report, result: Outcome) -> None:
    key = "ok" if result.errno is None else errno.errorcode.get(result.errno, str(result.errno))
    report.errnos[key] = report.errnos.get(key, 0) + 1


#: known, reported bugs a caller may tolerate while their fix is pending (each has its own
#: strict-xfail test): name -> what it excuses
KNOWN = {
    "REL-1": "FUSE mount: open(2) of a name being replaced by rename(2) fails with "
             "ESTALE (and ENOENT with the threaded daemon)",
}


def shared_step(rng: random.Random, target: Any, who: int, n: int, report: Report,
                tolerate: frozenset[str] = frozenset()) -> None:
    """One step on ``/shared``; appends to ``report.failures`` what breaks an invariant
    (except failures of the known bugs in ``tolerate``, counted in ``report.tolerated``)."""
    k = rng.randrange(SHARED_FILES)
    kind = rng.choice(["replace", "replace", "write", "write", "create", "unlink",
                       "mkdir", "rmdir", "read_replaced", "read_written", "read_dir", "list"])
    fail = report.failures.append
    if kind == "replace":
        path = f"/shared/replaced/f{k}"
        tmp = f"/shared/replaced/.tmp-{who}-{n}"
        data = version(path, f"w{who}", n, REPLACED_SIZE)
        r1 = outcome(target, Op("write_file", (tmp, data, "x", 0o644)))
        r2 = outcome(target, Op("rename", (tmp, path)))
        if r1.errno is not None or r2.errno is not None:
            fail(f"replace {path}: create {r1}, rename {r2}")
    elif kind == "write":
        path = f"/shared/written/f{k}"
        r = outcome(target, Op("write_file", (path, version(path, f"w{who}", n, WRITTEN_SIZE),
                                              "r+", 0o644)))
        if r.errno is not None:
            fail(f"overwrite {path}: {r}")
    elif kind == "create":
        path = f"/shared/dir/{rng.choice(DIR_NAMES)}"
        r = outcome(target, Op("write_file", (path, version(path, f"w{who}", n, DIR_SIZE), "x",
                                              0o644)))
        _count(report, r)
        if r.errno not in (None, errno.EEXIST):
            fail(f"O_EXCL create {path}: {r}")
    elif kind == "unlink":
        path = f"/shared/dir/{rng.choice(DIR_NAMES)}"
        r = outcome(target, Op("unlink", (path,)))
        _count(report, r)
        if r.errno not in (None, errno.ENOENT):
            fail(f"unlink {path}: {r}")
    elif kind in ("mkdir", "rmdir"):
        path = f"/shared/dir/{rng.choice(SUBDIR_NAMES)}"
        r = outcome(target, Op(kind, (path, 0o755) if kind == "mkdir" else (path,)))
        _count(report, r)
        if r.errno not in (None, errno.EEXIST if kind == "mkdir" else errno.ENOENT):
            fail(f"{kind} {path}: {r}")
    elif kind == "read_replaced":
        path = f"/shared/replaced/f{k}"
        r = outcome(target, Op("read_file", (path,)))
        if "REL-1" in tolerate and r.errno in (errno.ENOENT, errno.ESTALE):
            report.tolerated["REL-1"] = report.tolerated.get("REL-1", 0) + 1
        elif r.errno is not None or not is_version(path, r.value, REPLACED_SIZE):
            fail(f"read {path} during replaces: " + (str(r) if r.errno is not None else
                                                     f"not one version ({len(r.value)} bytes,"
                                                     f" starts {r.value[:40]!r})"))
    elif kind == "read_written":
        path = f"/shared/written/f{k}"
        r = outcome(target, Op("lstat", (path,)))
        if r.errno is not None or r.value.size != WRITTEN_SIZE:
            fail(f"lstat {path} during overwrites: {r}")
    elif kind == "read_dir":
        path = f"/shared/dir/{rng.choice(DIR_NAMES)}"
        r = outcome(target, Op("read_file", (path,)))
        if r.errno not in (None, errno.ENOENT) or (
                r.errno is None and r.value != b"" and not is_version(path, r.value, DIR_SIZE)):
            fail(f"read {path} during create/unlink: "
                 + (str(r) if r.errno is not None else f"{len(r.value)} bytes, not a version"))
    else:
        r = outcome(target, Op("listdir", ("/shared/dir",)))
        if r.errno is not None or not set(r.value) <= set(DIR_NAMES + SUBDIR_NAMES):
            fail(f"listdir /shared/dir: {r}")


def run_worker(target: Any, stack: StackSpec, who: int, seed: int, steps: int, *,
               shared: bool = True, shared_share: float = 0.3, keep_script: int = 40,
               options: dict[str, bool] | None = None,
               tolerate: frozenset[str] = frozenset()) -> Report:
    """``steps`` seeded random steps by worker ``who``: on its subtree, each checked against
    the model as it happens; on ``/shared`` (unless ``shared`` is false: a replay), each
    checked against the invariants above. The two kinds of steps draw from separate seeded
    streams, so a replay without the shared steps makes the same private steps. ``options``
    are the overlayfs options the union runs with (the model follows them)."""
    region = random.Random(f"{seed}/{who}/region")
    rng = random.Random(f"{seed}/{who}/private")
    shared_rng = random.Random(f"{seed}/{who}/shared")
    model = UnionModel(stack, **(options or {}))
    top = f"/w{who}"
    report = Report(who)
    disturbed: set[str] = set()
    for n in range(steps):
        report.steps += 1
        if region.random() < shared_share:
            if shared:
                report.shared_steps += 1
                shared_step(shared_rng, target, who, n, report, tolerate)
                if report.failures:
                    break
            continue
        op = private_op(rng, model, top)
        if not model.supports(op.call, *op.args):
            continue
        try:
            expected = outcome(model, op)
        except UnsupportedStep:
            continue
        got = outcome(target, op)
        report.private_steps += 1
        _count(report, got)
        report.script.append(f"fs.{op}  # {expected}")
        del report.script[:-keep_script]
        if got != expected:
            report.failures.append(f"w{who} step {n}: fs.{op}: expected {expected}, got {got}")
            break
        disturbed.update(_disturbs(op, got))
    report.disturbed = sorted(disturbed)
    return report


# ---------------------------------------------------------------------------------------------
# after the run


def subtree(seen: dict[str, Seen], top: str) -> dict[str, Seen]:
    return {p: s for p, s in seen.items() if p == top or p.startswith(top + "/")}


def final_shared_problems(seen: dict[str, Seen]) -> list[str]:
    """What the end state of ``/shared`` breaks (see the module doc)."""
    problems = []
    for k in range(SHARED_FILES):
        for sub, size in (("replaced", REPLACED_SIZE), ("written", WRITTEN_SIZE)):
            path = f"/shared/{sub}/f{k}"
            s = seen.get(path)
            if s is None or s.data is None or not is_version(path, s.data, size):
                problems.append(f"{path} at the end: {'missing' if s is None else 'no version'}")
    names = {p.rsplit("/", 1)[1] for p in seen if p.startswith("/shared/replaced/")}
    if names != {f"f{k}" for k in range(SHARED_FILES)}:
        problems.append(f"/shared/replaced holds {sorted(names)}")
    for p, s in seen.items():
        name = p.rsplit("/", 1)[1]
        if not p.startswith("/shared/dir/"):
            continue
        if name in SUBDIR_NAMES and s.stat.kind == "dir":
            if any(q.startswith(p + "/") for q in seen):
                problems.append(f"{p} at the end: not empty")
        elif name not in DIR_NAMES or s.data is None or not is_version(p, s.data, DIR_SIZE):
            problems.append(f"{p} at the end: not one complete version")
    return problems


def model_end(stack: StackSpec, seed: int, workers: int, steps: int,
              shared_share: float = 0.3, options: dict[str, bool] | None = None
              ) -> dict[int, dict[str, Seen]]:
    """Each worker's subtree as its sequential model ends it (its seeded private steps
    replayed on a second model)."""
    out = {}
    for who in range(workers):
        replay = UnionModel(stack, **(options or {}))
        run_worker(replay, stack, who, seed, steps, shared=False, shared_share=shared_share,
                   options=options)
        out[who] = subtree(snapshot(replay), f"/w{who}")
    return out


def check_reports(reports: list[Report], workers: int, steps: int) -> None:
    """No worker saw a failure, and both kinds of step ran often enough to mean something."""
    failures = [f for r in reports for f in r.failures]
    assert not failures, "\n".join(failures + ["last steps:"] + [
        line for r in reports if r.failures for line in r.script])
    assert sum(r.private_steps for r in reports) > workers * steps // 3
    assert sum(r.shared_steps for r in reports) > workers * steps // 10


def check_end(end: dict[str, Seen], expected: dict[int, dict[str, Seen]],
              lower_prints: dict[str, str], workdir: str) -> None:
    """The end state: each worker's subtree as its own steps make it (``expected``, from
    ``model_end``), ``/shared`` whole, the lower layers unwritten (``lower_prints``:
    ``dir_fingerprint`` of each before the run), nothing left in the work dir."""
    for who, want in expected.items():
        diff = diff_snapshots(want, subtree(end, f"/w{who}"))
        assert not diff, f"w{who}'s subtree is not what its own steps make:\n" + "\n".join(diff)
    assert final_shared_problems(end) == []
    # the lower layers are never written
    assert {d: dir_fingerprint(d) for d in lower_prints} == lower_prints
    # copy-up stages in the work dir; nothing may stay there
    assert stray_work_files(workdir) == []


def ino_map(lstat: Callable[[str], os.stat_result], paths: Iterable[str], *,
            stable_only: bool = False) -> dict[str, int]:
    """``path -> st_ino`` for the paths that exist. ``stable_only`` leaves out lower hard
    links: overlayfs (index=off) breaks them on copy-up and then reports the upper inode,
    "lower hardlinks may be broken on copy up to different upper files, so we cannot use
    the lower origin st_ino" (fs/overlayfs/inode.c, ovl_getattr); the engine does the same."""
    out = {}
    for p in paths:
        try:
            st = lstat(p)
        except OSError:
            continue
        if stable_only and not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            continue
        out[p] = st.st_ino
    return out


def undisturbed(paths: Iterable[str], disturbed: Iterable[str]) -> list[str]:
    """``paths`` neither disturbed themselves nor below a disturbed path."""
    hit = set(disturbed)

    def ok(p: str) -> bool:
        parts = p.split("/")
        return not any("/".join(parts[:i]) in hit for i in range(2, len(parts) + 1))
    return [p for p in paths if ok(p)]


def stray_work_files(workdir: str) -> list[str]:
    """Files left in a work directory: anything but empty directories and the ``index``."""
    out = []
    for dirpath, _dirs, filenames in os.walk(workdir):
        rel = os.path.relpath(dirpath, workdir)
        if rel == "index" or rel.startswith("index/"):
            continue
        out.extend(os.path.join(rel, f) for f in filenames)
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# worker processes (the mount test)


def reads_done(progress: str) -> int:
    """What a ``big_reader`` wrote to its progress file (0 before its first read)."""
    try:
        with open(progress) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


def wait_for_reads(progress_files: list[str], more: int, timeout: float = 60) -> None:
    """Wait until every reader has done ``more`` reads beyond what it has done now."""
    want = [reads_done(p) + more for p in progress_files]
    deadline = time.monotonic() + timeout
    while any(reads_done(p) < w for p, w in zip(progress_files, want, strict=True)):
        if time.monotonic() > deadline:
            raise TimeoutError("the readers made no progress")
        time.sleep(0.01)


def big_reader(path: str, stop: str, digests: list[str], progress: str | None = None
               ) -> dict[str, Any]:
    """Read ``path`` whole, again and again, until ``stop`` exists. ``digests`` are the
    versions it may hold, oldest first: ``bad`` counts reads that match none (a partial
    copy-up, a torn replace), ``regressions`` reads of an older version after a newer one
    was seen (a completed rename(2) is seen by every later open). After each read the count
    is written to the file ``progress``, so the caller can wait for reads to happen."""
    reads = bad = regressions = 0
    newest = -1
    while not os.path.exists(stop):
        with open(path, "rb") as f:
            data = f.read()
        d = hashlib.sha256(data).hexdigest()
        reads += 1
        if d not in digests:
            bad += 1
        else:
            i = digests.index(d)
            if i < newest:
                regressions += 1
            newest = max(newest, i)
        if progress is not None:
            with open(progress + ".tmp", "w") as f:
                f.write(str(reads))
            os.replace(progress + ".tmp", progress)
    return {"reads": reads, "bad": bad, "regressions": regressions, "newest": newest}


def replacer(directory: str, name: str, who: int, stop: str) -> dict[str, Any]:
    """Replace ``directory/name`` by rename(2) of a complete temporary, again and again,
    until ``stop`` exists."""
    n = 0
    path = os.path.join(directory, name)
    while not os.path.exists(stop):
        tmp = os.path.join(directory, f".tmp-{who}-{n}")
        with open(tmp, "wb") as f:
            f.write(version("/" + name, f"w{who}", n, WRITTEN_SIZE))
        os.rename(tmp, path)
        n += 1
    return {"renames": n}


def opener(path: str, stop: str, progress: str | None = None) -> dict[str, Any]:
    """Open and read ``path`` again and again until ``stop`` exists; count the failures by
    errno (a name being replaced by rename(2) must never be missing)."""
    reads = 0
    errors: dict[str, int] = {}
    while not os.path.exists(stop):
        try:
            with open(path, "rb") as f:
                f.read()
            reads += 1
        except OSError as e:
            key = errno.errorcode.get(e.errno or 0, str(e.errno))
            errors[key] = errors.get(key, 0) + 1
        if progress is not None and reads % 50 == 0:
            with open(progress + ".tmp", "w") as f:
                f.write(str(reads))
            os.replace(progress + ".tmp", progress)
    return {"reads": reads, "errors": errors}


def _main(argv: list[str] | None = None) -> int:
    from unionfs.testing.conformance import MountTarget

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--root", required=True)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--workers", type=int, required=True)
    w.add_argument("--who", type=int, required=True)
    w.add_argument("--steps", type=int, required=True)
    w.add_argument("--upper", choices=["yes", "no"], required=True)
    w.add_argument("--go", help="wait until this file exists (a common start)")
    w.add_argument("--tolerate", action="append", default=[], choices=sorted(KNOWN),
                   help="a known bug whose failures are counted, not reported")
    r = sub.add_parser("reader")
    r.add_argument("--path", required=True)
    r.add_argument("--stop", required=True)
    r.add_argument("--digest", action="append", default=[], help="oldest first")
    r.add_argument("--progress", help="write the number of reads done here")
    rp = sub.add_parser("replacer")
    rp.add_argument("--dir", required=True)
    rp.add_argument("--name", required=True)
    rp.add_argument("--who", type=int, required=True)
    rp.add_argument("--stop", required=True)
    o = sub.add_parser("opener")
    o.add_argument("--path", required=True)
    o.add_argument("--stop", required=True)
    o.add_argument("--progress")
    args = ap.parse_args(argv)
    if args.cmd == "replacer":
        print(json.dumps(replacer(args.dir, args.name, args.who, args.stop)))
        return 0
    if args.cmd == "opener":
        print(json.dumps(opener(args.path, args.stop, args.progress)))
        return 0
    if args.cmd == "reader":
        print(json.dumps(big_reader(args.path, args.stop, args.digest, args.progress)))
        return 0
    stack = make_stack(args.seed, args.workers, upper=args.upper == "yes")
    if args.go:
        deadline = time.monotonic() + 30
        while not os.path.exists(args.go) and time.monotonic() < deadline:
            time.sleep(0.002)
    report = run_worker(MountTarget(args.root), stack, args.who, args.seed, args.steps,
                        tolerate=frozenset(args.tolerate))
    print(json.dumps(report.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
